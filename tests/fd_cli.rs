//! `ddpm train-classifier` and `ddpm eval --fd` end to end on a tiny PNG dataset: a
//! class-conditional model trained for one step by `ddpm train`, a classifier trained by the
//! engine, then the Fréchet distance, its floor and the per-class accuracy, from fresh samples
//! and from saved ones.
use std::path::{Path, PathBuf};

fn ddpm(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args(args)
        .current_dir(cwd)
        .env(
            "XDG_RUNTIME_DIR",
            std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp".into()),
        )
        .output()
        .expect("runs the ddpm binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 8×8 RGB PNGs in two class folders: class a bright on the left, class b on the right.
fn dataset(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    for (class, left) in [("a", true), ("b", false)] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..12u8 {
            let mut px = Vec::new();
            for _y in 0..8 {
                for x in 0..8 {
                    let on = (x < 4) == left;
                    let v = if on { 200 } else { 40 } + (i * 3 + x as u8) % 17;
                    px.extend([v, v / 2, 255 - v]);
                }
            }
            let f = std::fs::File::create(data.join(class).join(format!("{i}.png"))).unwrap();
            let mut enc = png::Encoder::new(std::io::BufWriter::new(f), 8, 8);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header().unwrap().write_image_data(&px).unwrap();
        }
    }
    data
}

#[test]
fn cli_train_classifier_and_eval_fd() {
    let dir = std::env::temp_dir().join(format!("ddpm-fd-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dataset(&dir);
    let d = data.to_str().unwrap();
    // a conditional model (2 classes + the null class), one training step
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet_c_class_cond/config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    cfg["in_channels"] = 3.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let train_one_step = |out: &str, seed: &str| {
        let (ok, _, err) = ddpm(
            &[
                "train",
                "--data",
                d,
                "--config",
                "config.json",
                "--steps",
                "1",
                "--batch-size",
                "2",
                "--sample-every",
                "0",
                "--seed",
                seed,
                "--out",
                out,
            ],
            &dir,
        );
        assert!(ok, "{err}");
    };
    train_one_step("run", "0");
    // the classifier: 8×8 RGB, 2 classes
    let (ok, out, err) = ddpm(
        &[
            "train-classifier",
            "--data",
            d,
            "--test-data",
            d,
            "--channels",
            "3",
            "--image-size",
            "8",
            "--epochs",
            "6",
            "--batch-size",
            "8",
            "--lr",
            "0.01",
            "--out",
            "clf",
        ],
        &dir,
    );
    assert!(ok, "{err}");
    assert!(out.contains("test accuracy"), "{out}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("clf/metrics.json")).unwrap()).unwrap();
    assert!(metrics["test_accuracy"].as_f64().unwrap() > 0.9, "{metrics}");
    // FD of 6 samples vs 6 images (the folder's first 6, all of class a; the floor compares
    // them with the next 6)
    let fd_args = [
        "eval",
        "--fd",
        "--model",
        "run/model",
        "--classifier",
        "clf",
        "--data",
        d,
        "--n",
        "6",
        "--steps",
        "2",
        "--batch-size",
        "4",
    ];
    let (ok, out, err) = ddpm(&[&fd_args[..], &["--save-samples", "s.safetensors"]].concat(), &dir);
    assert!(ok, "{err}");
    for want in [
        "Fréchet distance:",
        "floor at this n",
        "accuracy on the data: 100.00%",
        "requested class",
        "per class: 0:",
    ] {
        assert!(out.contains(want), "{out:?} lacks {want:?}");
    }
    let fd = |out: &str| -> f64 {
        let line = out.lines().find(|l| l.starts_with("Fréchet distance:")).unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    assert!(fd(&out).is_finite() && fd(&out) >= -1e-6, "{out}");
    // the saved samples give the same numbers without sampling again
    let (ok, out2, err) = ddpm(&[&fd_args[..], &["--samples", "s.safetensors"]].concat(), &dir);
    assert!(ok, "{err}");
    assert_eq!(fd(&out), fd(&out2));
    // a classifier for other images is refused with both shapes named
    let (ok, _, err) = ddpm(
        &[
            "train-classifier",
            "--data",
            d,
            "--channels",
            "1",
            "--image-size",
            "16",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--out",
            "clf1",
        ],
        &dir,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = ddpm(
        &[
            "eval",
            "--fd",
            "--model",
            "run/model",
            "--classifier",
            "clf1",
            "--data",
            d,
            "--n",
            "4",
        ],
        &dir,
    );
    assert!(
        !ok && err.contains("--classifier") && err.contains("1×16×16") && err.contains("3×8×8"),
        "{err}"
    );
    // The probability-flow ODE likelihood of the same model.
    let (ok, out, err) = ddpm(
        &[
            "eval",
            "--ode-bpd",
            "--ode-steps",
            "2",
            "--model",
            "run/model",
            "--data",
            d,
            "--n",
            "3",
            "--batch-size",
            "2",
        ],
        &dir,
    );
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("ODE bits/dim:"))
        .unwrap_or_else(|| panic!("{out}"));
    let bpd: f64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(bpd.is_finite() && line.contains("3 images"), "{line}");
    // The adaptive solver reports its steps and model calls; an unknown solver is refused.
    let rk45 = |solver: &str| {
        ddpm(
            &[
                "eval",
                "--ode-bpd",
                "--ode-solver",
                solver,
                "--ode-tol",
                "1e-2",
                "--model",
                "run/model",
                "--data",
                d,
                "--n",
                "2",
            ],
            &dir,
        )
    };
    let (ok, out, err) = rk45("rk45");
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("ODE bits/dim:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("RK45, rtol = atol = 1e-2") && line.contains("model calls per batch"),
        "{line}"
    );
    let (ok, _, err) = rk45("euler");
    assert!(
        !ok && err.contains("--ode-solver") && err.contains("heun or rk45"),
        "{err}"
    );
    // Paired bits/dim (--vs-model): a second model, trained from another seed, on the same
    // images, timesteps and noise. Against itself the difference is exactly zero; against the
    // other it is that model's own bound minus this one's, and that bound equals a separate run
    // of the other model with the same seed (the same draws).
    train_one_step("run2", "7");
    let bpd_run = |model: &str, vs: Option<&str>| {
        let mut a = vec![
            "eval",
            "--bpd",
            "--bpd-timesteps",
            "3",
            "--model",
            model,
            "--data",
            d,
            "--n",
            "4",
            "--batch-size",
            "2",
            "--seed",
            "5",
        ];
        if let Some(v) = vs {
            a.extend(["--vs-model", v]);
        }
        let (ok, out, err) = ddpm(&a, &dir);
        assert!(ok, "{err}");
        out
    };
    let first_num = |out: &str, prefix: &str, skip: usize| -> f64 {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' in {out}"));
        line.split_whitespace()
            .filter_map(|w| w.trim_start_matches('+').parse::<f64>().ok())
            .nth(skip)
            .unwrap_or_else(|| panic!("{line}"))
    };
    let same = bpd_run("run/model", Some("run/model"));
    assert_eq!(
        first_num(&same, "bits/dim:", 0),
        first_num(&same, "--vs-model", 0),
        "{same}"
    );
    assert!(
        same.contains("paired difference") && same.contains("+0.0000 ± 0.0000"),
        "{same}"
    );
    let paired = bpd_run("run/model", Some("run2/model"));
    let alone = bpd_run("run2/model", None);
    let (this, other) = (first_num(&paired, "bits/dim:", 0), first_num(&paired, "--vs-model", 0));
    assert_eq!(other, first_num(&alone, "bits/dim:", 0), "{paired}\n{alone}");
    let line = paired.lines().find(|l| l.contains("paired difference")).unwrap();
    let diff: f64 = line
        .split(": ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        diff != 0.0 && (diff - (other - this)).abs() <= 2e-4,
        "{line}: {other} − {this}"
    );
    let (ok, _, err) = ddpm(
        &[
            "eval",
            "--loss-buckets",
            "2",
            "--vs-model",
            "run2/model",
            "--data",
            d,
            "--model",
            "run/model",
        ],
        &dir,
    );
    assert!(!ok && err.contains("--vs-model") && err.contains("--bpd"), "{err}");
    // Classifier guidance: a noise-aware classifier trained by `train-classifier --noisy`
    // steers `sample` and `eval --fd`.
    let (ok, out, err) = ddpm(
        &[
            "train-classifier",
            "--noisy",
            "tiny",
            "--data",
            d,
            "--test-data",
            d,
            "--channels",
            "3",
            "--image-size",
            "8",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--out",
            "nclf",
        ],
        &dir,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("test accuracy at t = 0:") && out.contains("t = 999"),
        "{out}"
    );
    let cfg = std::fs::read_to_string(dir.join("nclf/config.json")).unwrap();
    assert!(cfg.contains("\"NoisyClassifier\""), "{cfg}");
    let guided = [
        "sample",
        "--model",
        "run/model",
        "--noisy-classifier",
        "nclf",
        "--classifier-scale",
        "2",
        "--sampler",
        "ddim",
        "--steps",
        "2",
        "--n",
        "2",
        "--class",
        "1",
        "--out",
        "guided.png",
    ];
    let (ok, _, err) = ddpm(&guided, &dir);
    assert!(ok, "{err}");
    assert!(dir.join("guided.png").is_file());
    let (ok, out, err) = ddpm(
        &[&fd_args[..], &["--noisy-classifier", "nclf", "--classifier-scale", "2"]].concat(),
        &dir,
    );
    assert!(ok, "{err}");
    assert!(out.contains("requested class"), "{out}");
    assert!(err.contains("classifier guidance 2 with nclf"), "{err}");
    // The plain classifier is not a noise-aware one: refused, naming its config.
    let plain: Vec<&str> = guided.iter().map(|&a| if a == "nclf" { "clf" } else { a }).collect();
    let (ok, _, err) = ddpm(&plain, &dir);
    assert!(
        !ok && err.contains("clf/config.json") && err.contains("NoisyClassifier"),
        "{err}"
    );
    let (ok, _, err) = ddpm(
        &[
            "train-classifier",
            "--noisy",
            "huge",
            "--data",
            d,
            "--channels",
            "3",
            "--image-size",
            "8",
        ],
        &dir,
    );
    assert!(!ok && err.contains("--noisy") && err.contains("small or tiny"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
