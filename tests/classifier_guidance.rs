//! Classifier guidance in the sampling loop: one step of each form against the equation on
//! fixed inputs (the classifier's gradient itself is checked against PyTorch in
//! tests/noisy_classifier.rs), that guidance raises the classifier's log-probability of the
//! asked-for class, determinism, and the refusals.
use std::path::Path;
use std::sync::OnceLock;

use ddpm_wgpu::diffusion::sample::{plan, sample_guided, ClassifierGuide, SampleOptions, Sampler, Spacing, Variance};
use ddpm_wgpu::diffusion::{Prediction, Schedule};
use ddpm_wgpu::nn::NoisyClassifier;
use ddpm_wgpu::ops::random;
use ddpm_wgpu::{Context, Error, UNet};

fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| Context::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}")))
}

/// The PyTorch-checked fixture classifier (2 channels, 8×8, 3 classes, T = 1000 linear).
fn classifier() -> NoisyClassifier {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/noisy_classifier");
    NoisyClassifier::load(ctx(), &dir).unwrap()
}

/// A random unconditional ε-model for the classifier's images.
fn unet(seed: u64) -> UNet {
    let clf = classifier();
    let mut cfg = clf.config().encoder.clone();
    cfg.center_input_sample = false;
    let mut u = UNet::new(cfg).unwrap();
    u.init_random(ctx(), seed).unwrap();
    u
}

const LABELS: [u32; 3] = [2, 0, 1];

fn opts(sampler: Sampler, steps: usize, keep: Vec<usize>) -> SampleOptions {
    SampleOptions {
        n: 3,
        size: 8,
        sampler,
        spacing: Spacing::Leading,
        steps,
        seed: 11,
        guidance: None,
        keep,
    }
}

/// (x after step 0 with guidance, the same without, s·∇ log p at the initial x_T, t of step 0).
fn first_step(sampler: Sampler, steps: usize, scale: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>, usize) {
    let ctx = ctx();
    let (u, clf, sched) = (unet(5), classifier(), Schedule::ddpm());
    let o = opts(sampler, steps, vec![0]);
    let guide = ClassifierGuide {
        classifier: &clf,
        labels: &LABELS,
        scale,
    };
    let g = sample_guided(ctx, &u, &sched, Prediction::Epsilon, &o, Some(&guide), |_, _| {}).unwrap();
    let p = sample_guided(ctx, &u, &sched, Prediction::Epsilon, &o, None, |_, _| {}).unwrap();
    let t0 = plan(&sched, sampler, Spacing::Leading, steps).unwrap()[0].t;
    // The loop's x_T: the same draw as sample_guided's.
    let x_t = random::randn(ctx, &[3, 2, 8, 8], o.seed, u32::MAX).unwrap();
    let tt = ctx.upload(&[3], &[t0 as f32; 3]).unwrap();
    let y = ctx.upload(&[3], &LABELS.map(|l| l as f32)).unwrap();
    let grad = ctx.read(&clf.grad_log_prob(ctx, &x_t, &tt, &y).unwrap()).unwrap();
    let s_grad: Vec<f32> = grad.iter().map(|v| v * scale).collect();
    let read = |s: &ddpm_wgpu::diffusion::sample::Samples| ctx.read(&s.trajectory[0].1).unwrap();
    (read(&g), read(&p), s_grad, t0)
}

fn check_shift(name: &str, guided: &[f32], plain: &[f32], s_grad: &[f32], k: f64) {
    let mut worst = 0.0f64;
    let scale = s_grad.iter().fold(0.0f64, |m, &v| m.max((v as f64 * k).abs()));
    assert!(scale > 1e-4, "{name}: the shift is too small to test ({scale:e})");
    for i in 0..guided.len() {
        let got = guided[i] as f64 - plain[i] as f64;
        let want = k * s_grad[i] as f64;
        worst = worst.max((got - want).abs());
    }
    eprintln!("{name}: shift max |error| {worst:.3e} (largest shift {scale:.3e})");
    // Differences of two f32 updates of magnitude ~1: a few ulps of x, far below the shift.
    assert!(
        worst <= 2e-5 + 1e-3 * scale,
        "{name}: max error {worst:.3e} of {scale:.3e}"
    );
}

#[test]
fn ddpm_step_shifts_the_mean_by_s_sigma2_grad() {
    // x_{t−1} = μ + s σ_t² ∇ log p(y|x_t) + σ_t z: same z and μ with and without guidance.
    let sampler = Sampler::Ddpm {
        variance: Variance::FixedSmall,
        clip: true,
    };
    let (g, p, sg, t0) = first_step(sampler, 4, 3.0);
    let sched = Schedule::ddpm();
    let st = plan(&sched, sampler, Spacing::Leading, 4).unwrap()[0];
    assert_eq!(st.t, t0);
    // σ² of the step (β̃ between the spaced timesteps), in f64 from the schedule.
    let (ab_t, ab_prev) = (sched.alphas_cumprod[t0], sched.alphas_cumprod[t0 - 250]);
    let var = (1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev);
    assert!((st.coefs.sigma as f64 - var.sqrt()).abs() < 1e-6);
    check_shift("ddpm", &g, &p, &sg, var);
}

#[test]
fn ddim_step_shifts_eps_by_s_sqrt_one_minus_alpha_bar_grad() {
    // ε̂ ← ε̂ − s √(1−ᾱ_t) ∇ log p(y|x_t); with η = 0 and no clipping x_prev is linear in ε̂:
    // ∂x_prev/∂ε̂ = √(1−ᾱ_prev) − √ᾱ_prev √(1−ᾱ_t)/√ᾱ_t.
    let sampler = Sampler::Ddim { eta: 0.0, clip: false };
    let (g, p, sg, t0) = first_step(sampler, 4, 3.0);
    let sched = Schedule::ddpm();
    let (ab_t, ab_prev) = (sched.alphas_cumprod[t0], sched.alphas_cumprod[t0 - 250]);
    let d_eps = (1.0 - ab_prev).sqrt() - ab_prev.sqrt() * (1.0 - ab_t).sqrt() / ab_t.sqrt();
    check_shift("ddim", &g, &p, &sg, d_eps * -(1.0 - ab_t).sqrt());
}

/// Mean log p_φ(y | x_0, t = 0) of the final images under the classifier.
fn mean_log_prob(clf: &NoisyClassifier, images: &ddpm_wgpu::Tensor) -> f64 {
    let ctx = ctx();
    let t = ctx.upload(&[3], &[0.0; 3]).unwrap();
    let z = ctx.read(&clf.forward(ctx, images, &t).unwrap()).unwrap();
    let mut total = 0.0;
    for (row, &y) in z.chunks_exact(3).zip(&LABELS) {
        let m = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        total += row[y as usize] as f64 - lse;
    }
    total / 3.0
}

#[test]
fn guidance_raises_the_log_probability_of_the_class_and_is_deterministic() {
    let ctx = ctx();
    let (u, clf, sched) = (unet(6), classifier(), Schedule::ddpm());
    let o = opts(Sampler::DpmSolverPP, 10, vec![]);
    let run = |scale: f32| {
        let guide = ClassifierGuide {
            classifier: &clf,
            labels: &LABELS,
            scale,
        };
        sample_guided(ctx, &u, &sched, Prediction::Epsilon, &o, Some(&guide), |_, _| {}).unwrap()
    };
    let plain = mean_log_prob(&clf, &run(0.0).images);
    let a = run(30.0);
    let guided = mean_log_prob(&clf, &a.images);
    eprintln!("mean log p(y|x_0): scale 0 {plain:.4}, scale 30 {guided:.4}");
    assert!(
        guided > plain + 0.05,
        "guidance did not raise log p: {plain} → {guided}"
    );
    let b = run(30.0);
    assert_eq!(
        ctx.read(&a.images).unwrap(),
        ctx.read(&b.images).unwrap(),
        "same seed, other bytes"
    );
}

#[test]
fn mismatched_classifiers_and_labels_are_refused() {
    let ctx = ctx();
    let (clf, sched) = (classifier(), Schedule::ddpm());
    let o = opts(Sampler::DpmSolverPP, 2, vec![]);
    // A model of 3-channel images.
    let mut cfg = clf.config().encoder.clone();
    cfg.in_channels = 3;
    cfg.out_channels = 3;
    let mut u3 = UNet::new(cfg).unwrap();
    u3.init_random(ctx, 0).unwrap();
    let guide = ClassifierGuide {
        classifier: &clf,
        labels: &LABELS,
        scale: 1.0,
    };
    let e = sample_guided(ctx, &u3, &sched, Prediction::Epsilon, &o, Some(&guide), |_, _| {})
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::InvalidArgument { arg, .. } if arg == "--classifier"),
        "{e}"
    );
    // Another forward process.
    let u = unet(1);
    let cosine = Schedule::new(ddpm_wgpu::BetaSchedule::Cosine, 1000, 1e-4, 0.02).unwrap();
    let e = sample_guided(ctx, &u, &cosine, Prediction::Epsilon, &o, Some(&guide), |_, _| {})
        .err()
        .unwrap();
    assert!(e.to_string().contains("forward process"), "{e}");
    // A class the classifier does not have, and the wrong number of labels.
    let bad = ClassifierGuide {
        labels: &[0, 1, 7],
        ..guide
    };
    let e = sample_guided(ctx, &u, &sched, Prediction::Epsilon, &o, Some(&bad), |_, _| {})
        .err()
        .unwrap();
    assert!(e.to_string().contains("class 7"), "{e}");
    let short = ClassifierGuide { labels: &[0], ..guide };
    assert!(sample_guided(ctx, &u, &sched, Prediction::Epsilon, &o, Some(&short), |_, _| {}).is_err());
    // x₀-prediction models are not steered (the shift is defined on ε).
    let e = sample_guided(ctx, &u, &sched, Prediction::Sample, &o, Some(&guide), |_, _| {})
        .err()
        .unwrap();
    assert!(e.to_string().contains("ε-prediction"), "{e}");
}
