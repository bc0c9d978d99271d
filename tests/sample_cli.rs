//! `ddpm sample` and the library call behind it ([`generate`]): scheduler configs, class
//! layout, the files written, and the errors a user can run into.

#[path = "kernels/common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::ctx;
use ddpm_wgpu::checkpoint::TensorFile;
use ddpm_wgpu::diffusion::generate::{self, Format, SampleRequest, SchedulerConfig};
use ddpm_wgpu::diffusion::sample::{Sampler, Spacing, Variance};
use ddpm_wgpu::diffusion::{BetaSchedule, Prediction};
use ddpm_wgpu::{UNet, UNetConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A fresh, empty scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ddpm-sample-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn png_size(path: &Path) -> (u32, u32) {
    let d = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&d[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    let be = |o: usize| u32::from_be_bytes(d[o..o + 4].try_into().unwrap());
    (be(16), be(20))
}

/// A class-conditional model that can be sampled (the c_class_cond fixture has in 2 ≠ out 3):
/// 3 class embeddings, the last the null class.
fn conditional_model(dir: &Path, scheduler: Option<&str>) {
    let text = std::fs::read_to_string(fixture("unet_c_class_cond/config.json")).unwrap();
    let mut cfg = UNetConfig::from_json(&text).unwrap();
    cfg.in_channels = 3;
    let mut unet = UNet::new(cfg).unwrap();
    unet.init_random(ctx(), 5).unwrap();
    unet.save_pretrained(ctx(), dir).unwrap();
    if let Some(s) = scheduler {
        std::fs::write(dir.join("scheduler_config.json"), s).unwrap();
    }
}

#[test]
fn scheduler_config_parsing() {
    assert_eq!(SchedulerConfig::from_json("{}").unwrap(), SchedulerConfig::default());
    // google/ddpm-cifar10-32's scheduler_config.json
    let c = SchedulerConfig::from_json(
        r#"{"_class_name": "DDPMScheduler", "_diffusers_version": "0.1.1", "beta_end": 0.02,
            "beta_schedule": "linear", "beta_start": 0.0001, "clip_sample": true,
            "num_train_timesteps": 1000, "trained_betas": null, "variance_type": "fixed_small"}"#,
    )
    .unwrap();
    assert_eq!(c, SchedulerConfig::default());
    let c = SchedulerConfig::from_json(
        r#"{"num_train_timesteps": 37, "beta_schedule": "squaredcos_cap_v2", "variance_type": "fixed_large",
            "clip_sample": false, "null_class": 9}"#,
    )
    .unwrap();
    assert_eq!(
        (
            c.num_train_timesteps,
            c.beta_schedule,
            c.variance,
            c.clip_sample,
            c.null_class
        ),
        (37, BetaSchedule::Cosine, Variance::FixedLarge, false, Some(Some(9)))
    );
    assert_eq!(c.schedule().unwrap().len(), 37);
    assert_eq!(
        SchedulerConfig::from_json(r#"{"null_class": null}"#)
            .unwrap()
            .null_class,
        Some(None)
    );
    let c =
        SchedulerConfig::from_json(r#"{"variance_type": "learned_range", "prediction_type": "v_prediction"}"#).unwrap();
    assert_eq!((c.variance, c.prediction), (Variance::LearnedRange, Prediction::V));
    let c = SchedulerConfig::from_json(r#"{"prediction_type": "sample"}"#).unwrap();
    assert_eq!((c.variance, c.prediction), (Variance::FixedSmall, Prediction::Sample));
    assert_eq!(SchedulerConfig::default().prediction, Prediction::Epsilon);
    for (bad, field) in [
        (r#"{"variance_type": "learned"}"#, "variance_type"),
        (r#"{"variance_type": "fixed_small_log"}"#, "variance_type"),
        (r#"{"prediction_type": "v"}"#, "prediction_type"),
        (r#"{"beta_schedule": "quadratic"}"#, "beta_schedule"),
        (r#"{"trained_betas": [0.1, 0.2]}"#, "trained_betas"),
        (r#"{"num_train_timesteps": 0}"#, "num_train_timesteps"),
        ("[1]", "scheduler_config.json"),
    ] {
        let e = SchedulerConfig::from_json(bad).unwrap_err().to_string();
        assert!(e.contains(field), "{bad}: {e}");
    }
}

#[test]
fn sampler_names_and_steps() {
    let s = SchedulerConfig::default();
    assert_eq!(
        generate::parse_sampler("ddpm", None, &s).unwrap(),
        Sampler::Ddpm {
            variance: Variance::FixedSmall,
            clip: true
        }
    );
    assert_eq!(
        generate::parse_sampler("DDIM", Some(0.5), &s).unwrap(),
        Sampler::Ddim { eta: 0.5, clip: true }
    );
    for name in ["dpm++", "dpmpp", "dpm-solver++"] {
        assert_eq!(generate::parse_sampler(name, None, &s).unwrap(), Sampler::DpmSolverPP);
    }
    let e = generate::parse_sampler("euler", None, &s).unwrap_err().to_string();
    assert!(
        e.contains("--sampler") && e.contains("euler") && e.contains("dpm++"),
        "{e}"
    );
    let e = generate::parse_sampler("ddpm", Some(0.5), &s).unwrap_err().to_string();
    assert!(e.contains("--eta") && e.contains("ddim"), "{e}");
    assert!(generate::parse_sampler("ddim", Some(1.5), &s).is_err());
    assert_eq!(
        Format::parse(None, Path::new("a.safetensors")).unwrap(),
        Format::Safetensors
    );
    assert_eq!(Format::parse(None, Path::new("a.png")).unwrap(), Format::Png);
    assert!(Format::parse(Some("jpeg"), Path::new("a.png")).is_err());
}

#[test]
fn load_model_errors_name_the_path() {
    let ctx = ctx();
    let missing = Path::new("/nonexistent/ddpm-model");
    let e = generate::load_model(ctx, missing).err().unwrap().to_string();
    assert!(e.contains("/nonexistent/ddpm-model") && e.contains("--model"), "{e}");
    let empty = scratch("empty");
    let e = generate::load_model(ctx, &empty).err().unwrap().to_string();
    assert!(e.contains("config.json") && e.contains("UNet2DModel"), "{e}");
    let cond = scratch("cond2d");
    std::fs::write(cond.join("config.json"), r#"{"_class_name": "UNet2DConditionModel"}"#).unwrap();
    let e = generate::load_model(ctx, &cond).err().unwrap().to_string();
    assert!(
        e.contains("UNet2DConditionModel") && e.contains("not a UNet2DModel"),
        "{e}"
    );
    // a pipeline folder: unet/ + scheduler/
    let pipe = scratch("pipeline");
    let unet = UNet::from_pretrained(ctx, fixture("unet_a_basic")).unwrap();
    unet.save_pretrained(ctx, pipe.join("unet")).unwrap();
    std::fs::create_dir_all(pipe.join("scheduler")).unwrap();
    std::fs::write(
        pipe.join("scheduler/scheduler_config.json"),
        r#"{"num_train_timesteps": 50, "beta_schedule": "scaled_linear"}"#,
    )
    .unwrap();
    let m = generate::load_model(ctx, &pipe).unwrap();
    assert_eq!(m.dir, pipe.join("unet"));
    assert_eq!(m.scheduler.num_train_timesteps, 50);
    assert_eq!(m.scheduler.beta_schedule, BetaSchedule::ScaledLinear);
    let req = SampleRequest {
        steps: Some(51),
        n: 1,
        ..Default::default()
    };
    let e = generate::sample_model(ctx, &m, &req, |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--steps") && e.contains("1..=50"), "{e}");
    // defaults: ddpm runs all T steps, dpm++ uses linspace
    assert_eq!(
        generate::resolve(&m, &SampleRequest::default()).unwrap(),
        (
            Sampler::Ddpm {
                variance: Variance::FixedSmall,
                clip: true
            },
            Spacing::Leading,
            50
        )
    );
    let dpm = SampleRequest {
        sampler: "dpm++".into(),
        ..Default::default()
    };
    assert_eq!(generate::resolve(&m, &dpm).unwrap().1, Spacing::Linspace);
    let e = generate::sample_model(
        ctx,
        &m,
        &SampleRequest {
            class: Some(0),
            n: 1,
            ..Default::default()
        },
        |_, _| {},
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("unconditional"), "{e}");
}

#[test]
fn class_conditional_rows_and_guidance() {
    let ctx = ctx();
    let dir = scratch("conditional");
    conditional_model(&dir, None);
    let m = generate::load_model(ctx, &dir).unwrap();
    let req = SampleRequest {
        sampler: "ddim".into(),
        steps: Some(2),
        n: 4,
        seed: 3,
        guidance: 3.0,
        strip: true,
        ..Default::default()
    };
    // no --class: one row per real class (rows 0 and 1; row 2 is the null class)
    let out = generate::sample_model(ctx, &m, &req, |_, _| {}).unwrap();
    assert_eq!(out.labels, Some(vec![0, 0, 1, 1]));
    assert_eq!((out.shape, out.cols), ([4, 3, 8, 8], 2));
    assert!(out.images.iter().all(|v| v.is_finite()));
    // strips: both steps (fewer than 10), x_t after the last step is the output
    assert_eq!(out.strip_steps, vec![0, 1]);
    assert_eq!(out.strip_x[1], out.images);
    assert_eq!(out.strip(2).len(), 2 * 2 * 3 * 64);
    let written = out.save(&dir.join("grid.png"), Format::Png).unwrap();
    assert_eq!(written.len(), 5);
    assert_eq!(png_size(&dir.join("grid.png")), (2 * 10 + 2, 2 * 10 + 2));
    assert_eq!(png_size(&dir.join("grid_strip_3.png")), (2 * 10 + 2, 2 * 10 + 2));
    // --class K: all samples K; --per-class
    let one = generate::sample_model(
        ctx,
        &m,
        &SampleRequest {
            class: Some(1),
            n: 3,
            strip: false,
            ..req.clone()
        },
        |_, _| {},
    )
    .unwrap();
    assert_eq!((one.labels, one.cols), (Some(vec![1, 1, 1]), 2));
    let per = generate::sample_model(
        ctx,
        &m,
        &SampleRequest {
            per_class: Some(3),
            strip: false,
            ..req.clone()
        },
        |_, _| {},
    )
    .unwrap();
    assert_eq!((per.labels, per.cols), (Some(vec![0, 0, 0, 1, 1, 1]), 3));
    for class in [2u32, 7] {
        let e = generate::sample_model(
            ctx,
            &m,
            &SampleRequest {
                class: Some(class),
                ..req.clone()
            },
            |_, _| {},
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains(&format!("class {class}")) && e.contains("0..=1"), "{e}");
    }
    // a model trained without label dropout: every row is a class, no guidance
    conditional_model(&dir, Some(r#"{"null_class": null}"#));
    let m = generate::load_model(ctx, &dir).unwrap();
    let e = generate::sample_model(ctx, &m, &req, |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--guidance") && e.contains("null class"), "{e}");
    let all = generate::sample_model(
        ctx,
        &m,
        &SampleRequest {
            guidance: 1.0,
            n: 3,
            strip: false,
            ..req.clone()
        },
        |_, _| {},
    )
    .unwrap();
    assert_eq!(all.labels, Some(vec![0, 1, 2]));
    // safetensors output
    all.save(&dir.join("s.safetensors"), Format::Safetensors).unwrap();
    let f = TensorFile::read(&dir.join("s.safetensors")).unwrap();
    assert_eq!(f.get("images").unwrap().0, &[3, 3, 8, 8]);
    assert_eq!(f.get("labels").unwrap().1, &[0.0, 1.0, 2.0]);
    assert_eq!(f.get("images").unwrap().1, &all.images[..]);
}

fn ddpm(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args(args)
        .current_dir(cwd)
        .env(
            "XDG_RUNTIME_DIR",
            std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp".into()),
        )
        .output()
        .expect("runs the ddpm binary");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn cli_sample_writes_grids_and_explains_errors() {
    let dir = scratch("cli");
    let model = fixture("unet_a_basic");
    let model = model.to_str().unwrap();
    let (ok, err) = ddpm(
        &[
            "sample",
            "--model",
            model,
            "--sampler",
            "dpm++",
            "--steps",
            "3",
            "--n",
            "5",
            "--seed",
            "2",
            "--out",
            "g.png",
            "--strip",
        ],
        &dir,
    );
    assert!(ok, "{err}");
    // 5 samples: ⌈√5⌉ = 3 columns, 2 rows of 8×8 with 2-pixel borders
    assert_eq!(png_size(&dir.join("g.png")), (3 * 10 + 2, 2 * 10 + 2));
    // strips: 3 frames (every step) × 2 rows
    assert_eq!(png_size(&dir.join("g_strip_4.png")), (3 * 10 + 2, 2 * 10 + 2));
    assert!(!dir.join("g_strip_5.png").exists());
    let (ok, err) = ddpm(
        &[
            "sample",
            "--model",
            model,
            "--sampler",
            "ddim",
            "--eta",
            "0.3",
            "--spacing",
            "trailing",
            "--steps",
            "2",
            "--n",
            "2",
            "--format",
            "safetensors",
            "--out",
            "s.bin",
        ],
        &dir,
    );
    assert!(ok, "{err}");
    assert_eq!(
        TensorFile::read(&dir.join("s.bin")).unwrap().get("images").unwrap().0,
        &[2, 3, 8, 8]
    );

    for (args, want) in [
        (
            vec!["sample", "--model", model, "--sampler", "heun"],
            vec!["unknown sampler 'heun'", "ddim"],
        ),
        (
            vec!["sample", "--model", model, "--steps", "1001"],
            vec!["--steps", "1..=1000"],
        ),
        (
            vec!["sample", "--model", model, "--class", "1"],
            vec!["--class", "unconditional"],
        ),
        (
            vec!["sample", "--model", model, "--spacing", "cosine"],
            vec!["--spacing", "trailing"],
        ),
        (vec!["sample"], vec!["assets/default-model", "--model"]),
        (vec!["sample", "--model", "nowhere"], vec!["nowhere", "--model"]),
    ] {
        let (ok, err) = ddpm(&args, &dir);
        assert!(!ok, "{args:?} succeeded");
        for w in want {
            assert!(err.contains(w), "{args:?}: {err:?} lacks {w:?}");
        }
    }
}

#[test]
fn cli_sample_uses_the_model_folders_sample_defaults() {
    let dir = scratch("defaults");
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(fixture("unet_a_basic").join(f), model.join(f)).unwrap();
    }
    // the folder's recommendation: 3 images, DDIM with 2 steps (the flags' defaults would be
    // 64 images of 1000 ancestral steps)
    std::fs::write(
        model.join("sample_defaults.json"),
        r#"{"sampler": "ddim", "steps": 2, "n": 3}"#,
    )
    .unwrap();
    let m = model.to_str().unwrap();
    let (ok, err) = ddpm(&["sample", "--model", m, "--out", "d.png"], &dir);
    assert!(ok, "{err}");
    assert!(
        err.contains("Ddim") && err.contains("2 steps") && err.contains("3 samples"),
        "{err}"
    );
    // a flag beats the file
    let (ok, err) = ddpm(&["sample", "--model", m, "--n", "1", "--out", "e.png"], &dir);
    assert!(ok && err.contains("1 samples"), "{err}");
    // a broken file is named, with what it may contain
    std::fs::write(model.join("sample_defaults.json"), r#"{"sampler": "ddim", "stepz": 2}"#).unwrap();
    let (ok, err) = ddpm(&["sample", "--model", m], &dir);
    assert!(
        !ok && err.contains("sample_defaults.json") && err.contains("stepz"),
        "{err}"
    );
}
