//! The noise-aware classifier (guided diffusion's encoder + pooled head) against PyTorch: logits,
//! loss, every parameter gradient, the input gradient and ∇ₓ log p(y | x_t, t), from
//! `tests/fixtures/make_noisy_classifier_fixture.py`; save/load; training on a learnable toy
//! problem.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ddpm_wgpu::checkpoint::TensorFile;
use ddpm_wgpu::nn::{accuracy_at, Grads, Mode, NoisyClassifier, NoisyClassifierTrainer};
use ddpm_wgpu::ops::loss;
use ddpm_wgpu::{Context, Error};

fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| Context::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}")))
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/noisy_classifier")
}

fn max_err(got: &[f32], want: &[f32]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let err = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .fold(0.0, |m: f64, d| if d.is_nan() { f64::INFINITY } else { m.max(d) });
    let scale = want.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
    (err, scale)
}

fn load() -> (NoisyClassifier, TensorFile) {
    let dir = fixture_dir();
    let model = NoisyClassifier::load(ctx(), &dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    (model, TensorFile::read(&dir.join("io.safetensors")).unwrap())
}

#[test]
fn logits_loss_and_every_gradient_match_pytorch() {
    let ctx = ctx();
    let (model, io) = load();
    let x = io.upload(ctx, "sample").unwrap();
    let t = io.upload(ctx, "timestep").unwrap();
    let y = io.upload(ctx, "labels").unwrap();
    let (logits, tape) = model.forward_tape(ctx, &x, &t, Mode::EVAL).unwrap();
    let got = ctx.read(&logits).unwrap();
    let (err, scale) = max_err(&got, io.get("logits").unwrap().1);
    // f32 through ~10 layers: 1e-4 of the largest logit (the U-Net forward's bound).
    assert!(err <= 1e-4 * scale, "logits: error {err:.3e} of {scale:.3e}");
    let xent = loss::softmax_cross_entropy(ctx, &logits, &y, 1.0).unwrap();
    let l = ctx.read(&xent.loss).unwrap()[0];
    let want_l = io.get("loss").unwrap().1[0];
    assert!((l - want_l).abs() <= 1e-5 * want_l.abs(), "loss {l} vs {want_l}");
    let mut grads = Grads::new(model.params.len());
    let dx = model
        .backward(ctx, tape, &xent.dlogits, &mut grads, true)
        .unwrap()
        .unwrap();
    let (err, scale) = max_err(&ctx.read(&dx).unwrap(), io.get("grad_input.sample").unwrap().1);
    eprintln!("input gradient: max error {err:.3e} of {scale:.3e}");
    assert!(err <= 1e-3 * scale, "input gradient: error {err:.3e} of {scale:.3e}");
    for (i, name) in model.params.names().iter().enumerate() {
        let g = ctx
            .read(grads.get(i).unwrap_or_else(|| panic!("no gradient for {name}")))
            .unwrap();
        let (_, want) = io.get(&format!("grad.{name}")).expect("fixture has every gradient");
        let (err, scale) = max_err(&g, want);
        if name.contains("to_k.bias") {
            // Exactly zero in exact arithmetic (softmax shift invariance): round-off only.
            assert!(err <= 1e-6, "{name}: should be ~0, error {err:.3e}");
            continue;
        }
        // 1e-3 of the tensor's largest gradient, as for the U-Net.
        assert!(err <= 1e-3 * scale, "grad {name}: error {err:.3e} of {scale:.3e}");
    }
}

#[test]
fn grad_log_prob_matches_pytorch() {
    let ctx = ctx();
    let (model, io) = load();
    let x = io.upload(ctx, "sample").unwrap();
    let t = io.upload(ctx, "timestep").unwrap();
    let y = io.upload(ctx, "labels").unwrap();
    let g = model.grad_log_prob(ctx, &x, &t, &y).unwrap();
    assert_eq!(g.shape(), x.shape());
    let (err, scale) = max_err(&ctx.read(&g).unwrap(), io.get("grad_log_prob").unwrap().1);
    eprintln!("∇ log p: max error {err:.3e} of {scale:.3e}");
    assert!(err <= 1e-3 * scale, "∇ log p: error {err:.3e} of {scale:.3e}");
}

#[test]
fn save_load_round_trip_and_bad_folders() {
    let ctx = ctx();
    let (model, io) = load();
    let dir = std::env::temp_dir().join(format!("ddpm-noisy-clf-{}", std::process::id()));
    model.save(ctx, &dir).unwrap();
    let back = NoisyClassifier::load(ctx, &dir).unwrap();
    assert_eq!(back.config(), model.config());
    let x = io.upload(ctx, "sample").unwrap();
    let t = io.upload(ctx, "timestep").unwrap();
    let a = ctx.read(&model.forward(ctx, &x, &t).unwrap()).unwrap();
    let b = ctx.read(&back.forward(ctx, &x, &t).unwrap()).unwrap();
    assert_eq!(a, b, "reloaded classifier gives other logits");

    // A diffusion model folder is not a classifier: the error names the file.
    let unet_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet_a_basic");
    match NoisyClassifier::load(ctx, &unet_dir) {
        Err(Error::Checkpoint { path, msg }) => {
            assert!(path.ends_with("config.json"), "{}", path.display());
            assert!(msg.contains("NoisyClassifier"), "{msg}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a UNet2DModel folder loaded as a classifier"),
    }
    // Truncated weights: refused with the file named.
    let w = dir.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let err = NoisyClassifier::load(ctx, &dir).expect_err("truncated weights must be refused");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Images whose class is which quadrant is bright: learnable at low noise levels.
fn toy_data(n: usize, c: usize, s: usize) -> (Vec<f32>, Vec<u32>) {
    let mut images = Vec::with_capacity(n * c * s * s);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let y = (i % 3) as u32;
        for _ in 0..c {
            for r in 0..s {
                for q in 0..s {
                    let quadrant = match (r < s / 2, q < s / 2) {
                        (true, true) => 0,
                        (true, false) => 1,
                        _ => 2,
                    };
                    images.push(if quadrant == y { 0.9 } else { -0.9 });
                }
            }
        }
        labels.push(y);
    }
    (images, labels)
}

#[test]
fn training_learns_a_toy_problem() {
    let ctx = ctx();
    let (fixture, _) = load();
    let mut cfg = fixture.config().clone();
    cfg.encoder.center_input_sample = false;
    let (c, s) = (cfg.encoder.in_channels, cfg.encoder.sample_size);
    let (images, labels) = toy_data(96, c, s);
    let mut tr = NoisyClassifierTrainer::new(ctx, cfg, 16, 2e-3, 3).unwrap();
    let mut losses = Vec::new();
    tr.fit(ctx, &images, &labels, 5.0, |_, _, l| losses.push(l)).unwrap();
    assert_eq!(losses.len(), 30, "5 epochs of 96/16 steps");
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[25..].iter().sum::<f32>() / 5.0;
    eprintln!("loss {first:.3} → {last:.3}");
    // The loss averages over t ~ U{0..999}; at large t the image is mostly noise and no
    // classifier beats chance (ln 3 ≈ 1.10), so the mean falls only part of the way.
    assert!(last < 0.9 * first, "loss did not fall: {first} → {last}");
    // Nearly clean images (t = 10) are easy; chance is 1/3.
    let acc = tr.accuracy_at(ctx, &images, &labels, 10, 32).unwrap();
    eprintln!("accuracy at t = 10: {acc:.3}");
    assert!(acc >= 0.9, "accuracy at t = 10: {acc}");
    // Bad labels are refused before any work.
    assert!(tr.step(ctx, &images[..c * s * s], &[5], 1e-3).is_err());
    let err = accuracy_at(ctx, &tr.model, &images, &labels, 5000, 32, 0)
        .err()
        .unwrap();
    assert!(err.to_string().contains("5000"), "{err}");
}
