//! `ddpm eval` beyond the bound: L_simple per timestep bucket against a CPU computation of the
//! same quantity, its determinism, the labels a class-conditional model is evaluated with, and
//! the command line.

#[path = "kernels/common.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{ctx, rand_vec};
use ddpm_wgpu::diffusion::bpd::eval_bpd;
use ddpm_wgpu::diffusion::eval::{bucket_ranges, bucket_timestep, eval_labels, loss_buckets};
use ddpm_wgpu::diffusion::generate::SchedulerConfig;
use ddpm_wgpu::diffusion::sample::Variance;
use ddpm_wgpu::diffusion::{BetaSchedule, Prediction, Schedule};
use ddpm_wgpu::reference::random;
use ddpm_wgpu::{UNet, UNetConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The c_class_cond fixture made samplable (3 → 3 channels): 8×8, 3 class embeddings (two
/// classes and the null row), randomly initialised.
fn conditional_unet() -> UNet {
    let text = std::fs::read_to_string(fixture("unet_c_class_cond/config.json")).unwrap();
    let mut cfg = UNetConfig::from_json(&text).unwrap();
    cfg.in_channels = 3;
    let mut unet = UNet::new(cfg).unwrap();
    unet.init_random(ctx(), 6).unwrap();
    unet
}

#[test]
fn bucket_ranges_and_timesteps() {
    assert_eq!(bucket_ranges(20, 4).unwrap(), vec![(0, 5), (5, 10), (10, 15), (15, 20)]);
    // uneven: sizes differ by at most one and cover 0..T exactly
    let r = bucket_ranges(1000, 7).unwrap();
    assert_eq!((r[0].0, r[6].1), (0, 1000));
    assert!(r.windows(2).all(|w| w[0].1 == w[1].0));
    assert!(r.iter().all(|(lo, hi)| (142..=143).contains(&(hi - lo))));
    assert_eq!(bucket_ranges(5, 5).unwrap().len(), 5);
    for k in [0, 6] {
        let e = bucket_ranges(5, k).unwrap_err().to_string();
        assert!(e.contains("--loss-buckets") && e.contains("1..=5"), "{e}");
    }
    // uniform inside the bucket: 5000 draws over 5 timesteps, each seen 1000 ± 100 times (±3.2σ)
    let mut counts = [0usize; 5];
    for i in 0..5000 {
        let t = bucket_timestep(3, 2, i, (10, 15));
        assert!((10..15).contains(&t));
        counts[t - 10] += 1;
    }
    assert!(counts.iter().all(|&c| (900..=1100).contains(&c)), "{counts:?}");
    // the seed and the bucket change the draws
    let draws = |seed, b| {
        (0..64)
            .map(|i| bucket_timestep(seed, b, i, (0, 100)))
            .collect::<Vec<_>>()
    };
    assert_ne!(draws(3, 0), draws(4, 0));
    assert_ne!(draws(3, 0), draws(3, 1));
}

#[test]
fn loss_buckets_match_a_cpu_computation() {
    let ctx = ctx();
    let unet = conditional_unet();
    let schedule = Schedule::new(BetaSchedule::Linear, 20, 1e-4, 0.2).unwrap();
    let (n, per, k, seed) = (3usize, 3 * 8 * 8, 4usize, 77u64);
    let images = rand_vec(n * per, 12);
    let labels = [0u32, 1, 0];
    // batch 2: a full batch and a partial one
    let r = loss_buckets(
        ctx,
        &unet,
        &schedule,
        Prediction::Epsilon,
        &images,
        Some(&labels),
        n,
        k,
        2,
        seed,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(r.ranges, bucket_ranges(20, k).unwrap());
    // The same quantity with only ε_θ on the GPU: noise from the reference generator at
    // (seed, stream b, i·per + j), x_t in f64, the squared error and the means in f64.
    for (b, &(lo, hi)) in r.ranges.iter().enumerate() {
        let ts = &r.timesteps[b];
        assert_eq!(ts.len(), n);
        assert!(ts.iter().all(|t| (lo..hi).contains(t)), "bucket {b}: {ts:?}");
        assert_eq!(
            ts,
            &(0..n)
                .map(|i| bucket_timestep(seed, b, i, (lo, hi)))
                .collect::<Vec<_>>()
        );
        let mut x_t = Vec::with_capacity(n * per);
        let mut eps = Vec::with_capacity(n * per);
        for (i, &t) in ts.iter().enumerate() {
            let ab = schedule.alphas_cumprod[t];
            for j in 0..per {
                let e = random::normal(seed, b as u32, (i * per + j) as u64) as f64;
                eps.push(e);
                x_t.push((ab.sqrt() * images[i * per + j] as f64 + (1.0 - ab).sqrt() * e) as f32);
            }
        }
        let pred = unet
            .forward(
                ctx,
                &ctx.upload(&[n, 3, 8, 8], &x_t).unwrap(),
                &ctx.upload(&[n], &ts.iter().map(|&t| t as f32).collect::<Vec<_>>())
                    .unwrap(),
                Some(&ctx.upload(&[n], &labels.map(|c| c as f32)).unwrap()),
            )
            .unwrap();
        let pred = ctx.read(&pred).unwrap();
        let want = (0..n)
            .map(|i| {
                (0..per)
                    .map(|j| (pred[i * per + j] as f64 - eps[i * per + j]).powi(2))
                    .sum::<f64>()
                    / per as f64
            })
            .sum::<f64>()
            / n as f64;
        // x_t rounded once from f64 here, from f32 products on the GPU (an ulp or two), and an
        // f32 reduction of 192 squares per image: measured ≤ 6e-8 relative on lavapipe.
        let rel = (r.mean[b] - want).abs() / want;
        eprintln!("bucket {b} t {lo}..{hi}: {} vs CPU {want} (rel {rel:.1e})", r.mean[b]);
        assert!(rel < 2e-6, "bucket {b}: {} vs {want}", r.mean[b]);
    }
    // the buckets' values differ (t really changes)
    assert!(r.mean.windows(2).any(|w| w[0] != w[1]), "{:?}", r.mean);
}

#[test]
fn loss_buckets_are_deterministic_for_a_seed() {
    let ctx = ctx();
    let unet = UNet::from_pretrained(ctx, fixture("unet_a_basic")).unwrap();
    let schedule = Schedule::new(BetaSchedule::Linear, 30, 1e-4, 0.1).unwrap();
    let n = 5;
    let images = rand_vec(n * 3 * 64, 4);
    let run = |batch, seed| {
        let mut calls = Vec::new();
        let r = loss_buckets(
            ctx,
            &unet,
            &schedule,
            Prediction::Epsilon,
            &images,
            None,
            n,
            3,
            batch,
            seed,
            |i, total| calls.push((i, total)),
        )
        .unwrap();
        let batches = n.div_ceil(batch);
        assert_eq!(calls, (1..=3 * batches).map(|i| (i, 3 * batches)).collect::<Vec<_>>());
        r
    };
    let a = run(2, 9);
    assert_eq!(a, run(2, 9));
    // Another batch size draws the same timesteps and noise: equal up to the f32 reduction.
    let b = run(5, 9);
    assert_eq!(a.timesteps, b.timesteps);
    for (x, y) in a.mean.iter().zip(&b.mean) {
        assert!((x - y).abs() <= 1e-6 * x, "{:?} vs {:?}", a.mean, b.mean);
    }
    let c = run(2, 10);
    assert!(
        a.mean.iter().zip(&c.mean).all(|(x, y)| x != y),
        "{:?} vs {:?}",
        a.mean,
        c.mean
    );
    // argument errors
    let e = loss_buckets(
        ctx,
        &unet,
        &schedule,
        Prediction::Epsilon,
        &images,
        Some(&[0; 5]),
        n,
        3,
        2,
        0,
        |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unconditional"), "{e}");
    let e = loss_buckets(
        ctx,
        &unet,
        &schedule,
        Prediction::Epsilon,
        &images[1..],
        None,
        n,
        3,
        2,
        0,
        |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--data"), "{e}");
    let e = loss_buckets(
        ctx,
        &unet,
        &schedule,
        Prediction::Epsilon,
        &images,
        None,
        n,
        31,
        2,
        0,
        |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--loss-buckets"), "{e}");
}

#[test]
fn class_conditional_evaluation_uses_labels() {
    let ctx = ctx();
    let unet = conditional_unet();
    let sched = SchedulerConfig::default();
    // the dataset's labels, or the null class (the last row unless the scheduler says)
    assert_eq!(
        eval_labels(&unet, &sched, &[1, 0, 1], 2, false).unwrap(),
        Some(vec![1, 0])
    );
    assert_eq!(
        eval_labels(&unet, &sched, &[1, 0, 1], 2, true).unwrap(),
        Some(vec![2, 2])
    );
    let e = eval_labels(&unet, &sched, &[], 2, false).unwrap_err().to_string();
    assert!(e.contains("no labels") && e.contains("--null-class"), "{e}");
    // a label the model does not have as a class (the null row, or past the embeddings)
    for bad in [2u32, 5] {
        let e = eval_labels(&unet, &sched, &[0, bad], 2, false).unwrap_err().to_string();
        assert!(e.contains(&format!("label {bad}")), "{e}");
    }
    let no_null = SchedulerConfig {
        null_class: Some(None),
        ..SchedulerConfig::default()
    };
    assert_eq!(
        eval_labels(&unet, &no_null, &[2, 0], 2, false).unwrap(),
        Some(vec![2, 0])
    );
    let e = eval_labels(&unet, &no_null, &[0, 1], 2, true).unwrap_err().to_string();
    assert!(e.contains("no null class"), "{e}");
    let plain = UNet::from_pretrained(ctx, fixture("unet_a_basic")).unwrap();
    assert_eq!(eval_labels(&plain, &sched, &[0, 1], 2, false).unwrap(), None);
    assert!(eval_labels(&plain, &sched, &[0, 1], 2, true).is_err());

    // bits/dim of a class-conditional model: the labels reach the model
    let s = Schedule::new(BetaSchedule::Linear, 6, 1e-4, 0.2).unwrap();
    let images: Vec<f32> = (0..2 * 3 * 64).map(|i| ((i * 53) % 256) as f32 / 127.5 - 1.0).collect();
    let bpd = |labels: Option<&[u32]>| {
        eval_bpd(
            ctx,
            &unet,
            &s,
            Variance::FixedSmall,
            Prediction::Epsilon,
            true,
            &images,
            labels,
            2,
            1,
            |_, _| {},
        )
    };
    let a = bpd(Some(&[0, 0])).unwrap();
    let b = bpd(Some(&[1, 1])).unwrap();
    assert!(a.total.iter().all(|v| v.is_finite() && *v > 0.0), "{:?}", a.total);
    assert_ne!(a.total, b.total);
    assert_eq!(a.total, bpd(Some(&[0, 0])).unwrap().total);
    let e = bpd(None).unwrap_err().to_string();
    assert!(e.contains("class-conditional"), "{e}");
    let e = bpd(Some(&[0, 3])).unwrap_err().to_string();
    assert!(e.contains("class 3"), "{e}");
}

fn write_png(path: &Path, seed: u64) {
    let px: Vec<u8> = rand_vec(8 * 8 * 3, seed)
        .iter()
        .map(|v| ((v + 1.0) * 127.5) as u8)
        .collect();
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 8, 8);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(&px).unwrap();
}

#[test]
fn cli_eval_loss_buckets_and_conditional_bpd() {
    let dir = std::env::temp_dir().join(format!("ddpm-eval-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (k, class) in ["a", "b"].iter().enumerate() {
        std::fs::create_dir_all(dir.join("data").join(class)).unwrap();
        for i in 0..2 {
            write_png(
                &dir.join("data").join(class).join(format!("{i}.png")),
                (7 * k + i) as u64,
            );
        }
    }
    conditional_unet().save_pretrained(ctx(), dir.join("model")).unwrap();
    std::fs::write(dir.join("model/scheduler_config.json"), r#"{"num_train_timesteps": 8}"#).unwrap();
    let eval = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddpm"))
            .args([
                "eval",
                "--model",
                "model",
                "--data",
                "data",
                "--n",
                "3",
                "--batch-size",
                "2",
            ])
            .args(extra)
            .current_dir(&dir)
            .env(
                "XDG_RUNTIME_DIR",
                std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp".into()),
            )
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = eval(&["--bpd", "--loss-buckets", "4", "--seed", "3"]);
    assert!(ok, "{err}");
    assert!(out.contains("3 images, T = 8, the dataset's labels)"), "{out}");
    assert!(
        out.contains("L_simple per timestep bucket (3 images, T = 8, seed 3"),
        "{out}"
    );
    let rows: Vec<(String, f64)> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("t "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[1].to_string(), w[2].parse().unwrap())
        })
        .collect();
    let ranges: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ranges, ["0..1", "2..3", "4..5", "6..7"], "{out}");
    assert!(rows.iter().all(|r| r.1.is_finite() && r.1 > 0.0), "{out}");
    // the same seed prints the same numbers
    let (ok, again, err) = eval(&["--loss-buckets", "4", "--seed", "3"]);
    assert!(ok, "{err}");
    assert!(out.ends_with(&again), "{out}\n---\n{again}");
    let (ok, out, err) = eval(&["--bpd", "--null-class"]);
    assert!(ok, "{err}");
    assert!(out.contains("null class)"), "{out}");
    let (ok, _, err) = eval(&[]);
    assert!(!ok && err.contains("--loss-buckets"), "{err}");
    let (ok, _, err) = eval(&["--loss-buckets", "9"]);
    assert!(!ok && err.contains("1..=8"), "{err}");
}
