//! Score-SDE and Langevin samplers (`diffusion::sde`): every sampler against the CPU f64
//! reference of its equations (`reference::sde`, written from the papers, not from the fused
//! coefficients) on an analytic model, for ε, x₀ and v prediction; sample statistics on
//! Gaussian data, where the exact score is known; then the tiny fixture U-Nets: runs to
//! completion, same seed → same bytes, no readback inside the loop, classifier-free guidance,
//! and the `ddpm sample` request path.

#[path = "kernels/common.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{assert_close, ctx, to_f64};
use ddpm_wgpu::diffusion::sample::{self, Guidance, SampleOptions, Sampler, Spacing};
use ddpm_wgpu::diffusion::sde::{self, Denoiser, Predictor, SdeOptions, SdeSampler};
use ddpm_wgpu::diffusion::{BetaSchedule, Prediction, Schedule};
use ddpm_wgpu::ops::{elementwise as ew, layout};
use ddpm_wgpu::reference::{random, sde as rf};
use ddpm_wgpu::{Context, Tensor, UNet, UNetConfig};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// T = 100 with β from 1e-3 to 0.2: the same VP SDE (β_min = 0.1, β_max = 20) as Ho et al.'s
/// T = 1000 schedule, a tenth of the table.
fn small_schedule() -> Schedule {
    Schedule::new(BetaSchedule::Linear, 100, 1e-3, 0.2).unwrap()
}

/// Data x₀ ~ N(μ, v) per element: the exact model output E[· | x_t] is affine in x_t,
/// m = A_t·x + B_t, for every prediction type (so all three imply the same score). A split
/// model appends C channels of junk (a learned variance the samplers must ignore).
struct Gaussian {
    mu: f64,
    var: f64,
    prediction: Prediction,
    alphas_cumprod: Vec<f64>,
    ones: Tensor,
    junk: Option<Tensor>,
}

impl Gaussian {
    fn new(ctx: &Context, schedule: &Schedule, prediction: Prediction, shape: &[usize], split: bool) -> Self {
        let n: usize = shape.iter().product();
        Gaussian {
            mu: 0.3,
            var: 0.25,
            prediction,
            alphas_cumprod: schedule.alphas_cumprod.clone(),
            ones: ctx.upload(shape, &vec![1.0; n]).unwrap(),
            junk: split.then(|| ctx.upload(shape, &common::rand_vec(n, 99)).unwrap()),
        }
    }

    /// (A_t, B_t) in f32, as the GPU uses them.
    fn coefs(&self, t: usize) -> (f32, f32) {
        let ab = self.alphas_cumprod[t];
        let (a, s) = (ab.sqrt(), (1.0 - ab).sqrt());
        let d = ab * self.var + s * s;
        // ε̂ = s(x − aμ)/d, x̂₀ = μ + a·v(x − aμ)/d, v = a·ε̂ − s·x̂₀
        let eps = (s / d, -s * a * self.mu / d);
        let x0 = (a * self.var / d, self.mu * s * s / d);
        let (ca, cb) = match self.prediction {
            Prediction::Epsilon => eps,
            Prediction::Sample => x0,
            Prediction::V => (a * eps.0 - s * x0.0, a * eps.1 - s * x0.1),
        };
        (ca as f32, cb as f32)
    }

    fn host(&self, x: &[f64], t: usize) -> Vec<f64> {
        let (a, b) = self.coefs(t);
        x.iter().map(|&x| a as f64 * x + b as f64).collect()
    }
}

impl Denoiser for Gaussian {
    fn output(&self, ctx: &Context, x: &Tensor, t: usize) -> ddpm_wgpu::Result<Tensor> {
        let (a, b) = self.coefs(t);
        let m = ew::axpby(ctx, x, &self.ones, a, b)?;
        match &self.junk {
            Some(j) => layout::concat_channels(ctx, &m, j),
            None => Ok(m),
        }
    }
}

fn method(s: SdeSampler) -> rf::Method {
    match s {
        SdeSampler::EulerMaruyama => rf::Method::EulerMaruyama,
        SdeSampler::Pc {
            predictor,
            snr,
            corrector_steps,
        } => rf::Method::Pc {
            ancestral: predictor == Predictor::Ancestral,
            snr,
            corrector_steps,
        },
        SdeSampler::OdeHeun => rf::Method::OdeHeun,
        SdeSampler::Langevin { steps_per_level, eps } => rf::Method::Langevin { steps_per_level, eps },
    }
}

fn pc(predictor: Predictor, corrector_steps: usize) -> SdeSampler {
    SdeSampler::Pc {
        predictor,
        snr: 0.16,
        corrector_steps,
    }
}

fn langevin(steps_per_level: usize, eps: f64) -> SdeSampler {
    SdeSampler::Langevin { steps_per_level, eps }
}

/// GPU samples of `model` and the reference loop's, from the same x_T and noise.
fn run_both(
    schedule: &Schedule,
    model: &Gaussian,
    sampler: SdeSampler,
    steps: usize,
    shape: [usize; 4],
    seed: u64,
) -> (Vec<f32>, Vec<f64>) {
    let ctx = ctx();
    let opts = SdeOptions {
        n: shape[0],
        channels: shape[1],
        size: shape[2],
        sampler,
        steps,
        seed,
        keep: vec![],
    };
    let got = sde::sample(ctx, model, schedule, model.prediction, &opts, |_, _| {}).unwrap();
    let got = ctx.read(&got.images).unwrap();
    let n: usize = shape.iter().product();
    let x_t: Vec<f64> = (0..n)
        .map(|i| random::normal(seed, u32::MAX, i as u64) as f64)
        .collect();
    let levels = sde::langevin_levels(schedule, steps);
    let want = rf::sample(
        method(sampler),
        schedule,
        model.prediction,
        steps,
        &levels,
        x_t,
        shape[0],
        seed,
        &mut |x, t| model.host(x, t),
    );
    (got, want)
}

#[test]
fn every_sampler_matches_the_reference_equations() {
    // One step (and a few) of each sampler on the GPU — the fused coefficients, in-line noise,
    // the corrector's reduction — against the reference loop of the papers' equations with the
    // same Philox noise, for each prediction type and a learned-variance (2·C) output.
    let ctx = ctx();
    let schedule = small_schedule();
    let shape = [3usize, 2, 5, 5];
    let cases: Vec<(SdeSampler, usize)> = vec![
        (SdeSampler::EulerMaruyama, 1),
        (SdeSampler::EulerMaruyama, 3),
        (pc(Predictor::Ancestral, 0), 1),
        (pc(Predictor::Ancestral, 2), 2),
        (pc(Predictor::ReverseDiffusion, 1), 3),
        (SdeSampler::OdeHeun, 1),
        (SdeSampler::OdeHeun, 3),
        (langevin(1, 0.01), 1),
        (langevin(2, 0.01), 3),
    ];
    let mut report = Vec::new();
    for (prediction, split) in [
        (Prediction::Epsilon, false),
        (Prediction::Sample, false),
        (Prediction::V, false),
        (Prediction::Epsilon, true),
    ] {
        let model = Gaussian::new(ctx, &schedule, prediction, &shape, split);
        for &(sampler, steps) in &cases {
            let (got, want) = run_both(&schedule, &model, sampler, steps, shape, 5);
            assert!(got.iter().all(|v| v.is_finite()));
            let err = got
                .iter()
                .zip(&want)
                .map(|(&g, &w)| (g as f64 - w).abs())
                .fold(0.0, f64::max);
            report.push(format!("{prediction:?} split {split} {sampler:?} × {steps}: {err:.2e}"));
            // f32 steps of values ≤ ~4; an x₀ model's ε̂ = (x − √ᾱ·m)/√(1−ᾱ) divides its f32
            // round-off by √(1−ᾱ) ≥ 0.03 at t = 0.
            assert_close(
                &format!("{prediction:?} split {split} {sampler:?} × {steps}"),
                &got,
                &want,
                1e-4,
                1e-4,
            );
        }
    }
    eprintln!("max |GPU − reference|:\n{}", report.join("\n"));
}

#[test]
fn plans_follow_the_vp_sde() {
    // β(t) of the linear schedule is score_sde's β_min + t(β_max − β_min) with β_min = T·β_start.
    let s = Schedule::ddpm();
    for t in [0.0, 1e-3, 0.25, 0.5, 0.999, 1.0] {
        let want = 0.1 + t * (20.0 - 0.1);
        assert!((sde::vp_beta(&s, t) - want).abs() < 1e-9, "β({t})");
        assert!((rf::vp_beta(&s, t) - want).abs() < 1e-9, "reference β({t})");
    }
    assert_eq!(sde::time_index(1000, 1.0), 999);
    assert_eq!(sde::time_index(1000, 1e-3), 1);
    // Langevin levels: σ geometric from σ(999) ≈ 1 to σ(0) = 0.01, NCSN's range.
    let levels = sde::langevin_levels(&s, 10);
    assert_eq!(levels.len(), 10);
    assert_eq!((levels[0], levels[9]), (999, 0));
    assert!(levels.windows(2).all(|w| w[0] > w[1]));
    let sigma = |i: usize| (1.0 - s.alphas_cumprod[i]).sqrt();
    for w in levels.windows(2) {
        let ratio = sigma(w[1]) / sigma(w[0]);
        // 100^(−1/9) = 0.60, up to the nearest-timestep rounding (coarsest at the bottom)
        assert!((0.45..0.75).contains(&ratio), "σ ratio {ratio} between {w:?}");
    }
    // Many levels run into repeated timesteps at the bottom: dropped.
    let many = sde::langevin_levels(&s, 1000);
    assert!(many.len() < 1000 && many.windows(2).all(|w| w[0] > w[1]));
    // Model calls per sampler: N, N(c + 1), 2N − 1, L·M + 1; steps per progress unit.
    let count = |sampler, steps| sde::plan(&s, sampler, steps, Prediction::Epsilon).unwrap().len();
    assert_eq!(count(SdeSampler::EulerMaruyama, 7), 7);
    assert_eq!(count(pc(Predictor::Ancestral, 2), 7), 21);
    assert_eq!(count(SdeSampler::OdeHeun, 7), 13);
    assert_eq!(count(langevin(5, 2e-5), 7), 36);
    // PC with N = T visits T−1, …, 0 (score_sde's grid) and its predictor is DDPM's step.
    let ts = sde::timesteps(&s, pc(Predictor::Ancestral, 1), 1000).unwrap();
    assert_eq!(ts, (0..1000).rev().collect::<Vec<_>>());
    for bad in [0, 1001] {
        let e = sde::plan(&s, SdeSampler::OdeHeun, bad, Prediction::Epsilon)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--steps") && e.contains("1000"), "{e}");
    }
}

#[test]
fn samplers_recover_gaussian_data() {
    // With the exact score of x₀ ~ N(0.3, 0.25) (Ho et al.'s T = 1000 schedule), each sampler's
    // 16,384 outputs have that mean and variance up to the sampling error (s.e. 0.004 of the
    // mean, 1.1% of the variance) and the discretisation's own bias, measured here and by an
    // exact variance recursion: Euler–Maruyama at 100 steps +0.8%, the ancestral predictor
    // (σ² = β) at 100 of 1000 steps +3.5% and the r = 0.16 corrector another ~+3% (Langevin with
    // a finite step overshoots the target variance), the ODE at 50 steps ~0%, annealed Langevin
    // with 20 steps per level +7%. A wrong sign, scale or missing noise term moves these by far
    // more.
    let ctx = ctx();
    let schedule = Schedule::ddpm();
    let shape = [256usize, 1, 8, 8];
    let model = Gaussian::new(ctx, &schedule, Prediction::Epsilon, &shape, false);
    let mut report = Vec::new();
    for (sampler, steps) in [
        (SdeSampler::EulerMaruyama, 100),
        (pc(Predictor::Ancestral, 1), 100),
        (SdeSampler::OdeHeun, 50),
        (langevin(20, 1e-4), 10),
    ] {
        let opts = SdeOptions {
            n: shape[0],
            channels: 1,
            size: 8,
            sampler,
            steps,
            seed: 3,
            keep: vec![],
        };
        let x = ctx
            .read(
                &sde::sample(ctx, &model, &schedule, Prediction::Epsilon, &opts, |_, _| {})
                    .unwrap()
                    .images,
            )
            .unwrap();
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        report.push(format!("{sampler:?} × {steps}: mean {mean:.4} var {var:.4}"));
        assert!((mean - 0.3).abs() < 0.02, "{sampler:?}: mean {mean}");
        assert!((var / 0.25 - 1.0).abs() < 0.12, "{sampler:?}: variance {var}");
    }
    eprintln!("{}", report.join("\n"));
}

fn opts(sampler: SdeSampler, steps: usize, seed: u64) -> SampleOptions {
    SampleOptions {
        n: 2,
        size: 8,
        sampler: Sampler::Sde(sampler),
        spacing: Spacing::Leading,
        steps,
        seed,
        guidance: None,
        keep: vec![],
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn fixture_unet_samples_are_finite_reproducible_and_never_read_back() {
    // A context of its own: the shared one's readback counter moves with the other tests.
    let own = Context::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let ctx = &own;
    let unet = UNet::from_pretrained(ctx, fixtures().join("unet_a_basic")).unwrap();
    let schedule = Schedule::ddpm();
    let run = |sampler: SdeSampler, steps: usize, seed: u64| {
        let before = ctx.readback_count();
        let mut calls = 0;
        let o = SampleOptions {
            keep: vec![0, steps - 1],
            ..opts(sampler, steps, seed)
        };
        let out = sample::sample(ctx, &unet, &schedule, &o, |i, n| {
            calls += 1;
            assert_eq!((i, n), (calls, steps));
            assert_eq!(ctx.readback_count(), before, "{sampler:?}: read back during step {i}");
        })
        .unwrap();
        assert_eq!(ctx.readback_count(), before, "{sampler:?}: read back inside sample()");
        assert_eq!(calls, steps);
        assert_eq!(out.trajectory.len(), 2);
        let images = ctx.read(&out.images).unwrap();
        assert_eq!(images.len(), 2 * 3 * 64);
        assert!(images.iter().all(|v| v.is_finite()), "{sampler:?}: {images:?}");
        images
    };
    for (sampler, steps, other_seed) in [
        (SdeSampler::EulerMaruyama, 3, true),
        (pc(Predictor::Ancestral, 1), 2, true),
        (SdeSampler::OdeHeun, 2, false),
        (langevin(2, 2e-5), 2, false),
    ] {
        let a = run(sampler, steps, 7);
        let b = run(sampler, steps, 7);
        assert_eq!(bits(&a), bits(&b), "{sampler:?}: same seed, different bytes");
        if !other_seed {
            continue;
        }
        let c = run(sampler, steps, 8);
        let differ = a.iter().zip(&c).filter(|(x, y)| x != y).count();
        assert!(
            differ > a.len() / 2,
            "{sampler:?}: seeds 7 and 8 agree on {} values",
            a.len() - differ
        );
    }
}

#[test]
fn probability_flow_is_deterministic_and_em_is_not() {
    // From one x_T (the analytic model, the same seed for x_T), the ODE gives the same bytes
    // whatever the steps' noise streams would be — it draws none — while Euler–Maruyama's
    // result moves with the seed of its noise. Checked through the plan: the ODE's fused
    // updates all have σ = 0; EM's do until the last step.
    let s = Schedule::ddpm();
    for a in sde::plan(&s, SdeSampler::OdeHeun, 10, Prediction::V).unwrap() {
        if let sde::Update::Linear(c) | sde::Update::HeunPredict(c) = a.update {
            assert_eq!(c.sigma, 0.0);
        }
    }
    let em = sde::plan(&s, SdeSampler::EulerMaruyama, 10, Prediction::Epsilon).unwrap();
    let sigmas: Vec<f32> = em
        .iter()
        .map(|a| match a.update {
            sde::Update::Linear(c) => c.sigma,
            u => panic!("{u:?}"),
        })
        .collect();
    assert!(sigmas[..9].iter().all(|&v| v > 0.0) && sigmas[9] == 0.0, "{sigmas:?}");
    // On the GPU: two ODE runs agree to the bit; EM runs from the same x_T but another seed
    // for the steps cannot be asked for, so compare seeds: the ODE's map x_T ↦ x_0 is smooth
    // (nearby outputs for one x_T), EM's outputs from two seeds differ everywhere.
    let ctx = ctx();
    let schedule = small_schedule();
    let shape = [4usize, 1, 4, 4];
    let model = Gaussian::new(ctx, &schedule, Prediction::Epsilon, &shape, false);
    let go = |sampler, seed| {
        let o = SdeOptions {
            n: 4,
            channels: 1,
            size: 4,
            sampler,
            steps: 10,
            seed,
            keep: vec![],
        };
        ctx.read(
            &sde::sample(ctx, &model, &schedule, Prediction::Epsilon, &o, |_, _| {})
                .unwrap()
                .images,
        )
        .unwrap()
    };
    assert_eq!(bits(&go(SdeSampler::OdeHeun, 1)), bits(&go(SdeSampler::OdeHeun, 1)));
    assert_eq!(
        bits(&go(SdeSampler::EulerMaruyama, 1)),
        bits(&go(SdeSampler::EulerMaruyama, 1))
    );
    // For Gaussian data the probability-flow map is affine per element: x_0 = μ + k·(x_T − ...)
    // with one k for every element, so the ODE's output is an exact affine image of x_T.
    let x_t: Vec<f64> = (0..64).map(|i| random::normal(1, u32::MAX, i) as f64).collect();
    let ode = to_f64(&go(SdeSampler::OdeHeun, 1));
    // least-squares line through (x_T, x_0)
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (mx, my) = (mean(&x_t), mean(&ode));
    let cov: f64 = x_t.iter().zip(&ode).map(|(x, y)| (x - mx) * (y - my)).sum();
    let k = cov / x_t.iter().map(|x| (x - mx).powi(2)).sum::<f64>();
    let c = my - k * mx;
    let affine: Vec<f64> = x_t.iter().map(|&x| k * x + c).collect();
    assert_close(
        "ODE output is an affine map of x_T",
        &go(SdeSampler::OdeHeun, 1),
        &affine,
        1e-5,
        1e-5,
    );
    let em = to_f64(&go(SdeSampler::EulerMaruyama, 1));
    let off = em
        .iter()
        .zip(&x_t)
        .filter(|(&e, &x)| (e - (k * x + c)).abs() > 1e-3)
        .count();
    assert!(off > 60, "EM follows the ODE's deterministic map on {} of 64", 64 - off);
}

#[test]
fn guided_sde_step_matches_a_host_side_step() {
    // Classifier-free guidance through the score-SDE path: one Euler–Maruyama step (t = 1,
    // index 999, the last step so no noise) from x_T, against two plain forward passes combined
    // on the host, ε = ε_∅ + w(ε_c − ε_∅), and the reference step x + (½βx + βs)Δt.
    let ctx = ctx();
    let text = std::fs::read_to_string(fixtures().join("unet_c_class_cond/config.json")).unwrap();
    let mut cfg = UNetConfig::from_json(&text).unwrap();
    cfg.in_channels = 3; // sampling needs in = out
    let mut unet = UNet::new(cfg).unwrap();
    unet.init_random(ctx, 3).unwrap();
    let schedule = Schedule::ddpm();
    let (n, seed, w) = (3usize, 11u64, 2.5f32);
    let labels = vec![1u32, 0, 1];
    let o = SampleOptions {
        n,
        guidance: Some(Guidance {
            labels: labels.clone(),
            null_class: 2,
            weight: w,
        }),
        ..opts(SdeSampler::EulerMaruyama, 1, seed)
    };
    let got = ctx
        .read(&sample::sample(ctx, &unet, &schedule, &o, |_, _| {}).unwrap().images)
        .unwrap();
    let shape = [n, 3, 8, 8];
    let x: Vec<f32> = (0..n * 192).map(|i| random::normal(seed, u32::MAX, i as u64)).collect();
    let tx = ctx.upload(&shape, &x).unwrap();
    let tt = ctx.upload(&[n], &vec![999.0; n]).unwrap();
    let eps = |l: Vec<f32>| {
        let tl = ctx.upload(&[n], &l).unwrap();
        ctx.read(&unet.forward(ctx, &tx, &tt, Some(&tl)).unwrap()).unwrap()
    };
    let e_c = eps(labels.iter().map(|&l| l as f32).collect());
    let e_u = eps(vec![2.0; n]);
    let e: Vec<f64> = e_c
        .iter()
        .zip(&e_u)
        .map(|(&c, &u)| u as f64 + w as f64 * (c as f64 - u as f64))
        .collect();
    let s = rf::score(&to_f64(&x), &e, Prediction::Epsilon, schedule.alphas_cumprod[999]);
    let want = rf::euler_maruyama_step(&to_f64(&x), &s, rf::vp_beta(&schedule, 1.0), 1.0 - 1e-3, None);
    // β·Δt ≈ 20 amplifies the U-Net's f32 round-off (~1e-6 of ε ~ 1) twentyfold
    assert_close("guided EM step", &got, &want, 1e-4, 1e-5);
}

#[test]
fn sample_requests_name_the_sde_samplers_and_check_their_options() {
    use ddpm_wgpu::diffusion::generate::{self, SampleRequest, SchedulerConfig};
    use ddpm_wgpu::diffusion::sde::SdeParams;
    let s = SchedulerConfig::default();
    let parse = |name: &str| generate::parse_sampler(name, None, &s).unwrap();
    assert_eq!(parse("sde-em"), Sampler::Sde(SdeSampler::EulerMaruyama));
    assert_eq!(parse("PC"), Sampler::Sde(pc(Predictor::Ancestral, 1)));
    assert_eq!(parse("ode-heun"), Sampler::Sde(SdeSampler::OdeHeun));
    assert_eq!(parse("langevin"), Sampler::Sde(langevin(100, 2e-5)));
    let e = generate::parse_sampler("euler", None, &s).unwrap_err().to_string();
    assert!(
        e.contains("--sampler") && e.contains("ode-heun") && e.contains("dpm++"),
        "{e}"
    );
    let e = generate::parse_sampler("pc", Some(0.5), &s).unwrap_err().to_string();
    assert!(e.contains("--eta"), "{e}");

    let ctx = ctx();
    let model = generate::load_model(ctx, &fixtures().join("unet_a_basic")).unwrap();
    let req = |sampler: &str, sde: SdeParams| SampleRequest {
        sampler: sampler.into(),
        n: 2,
        seed: 4,
        sde,
        ..SampleRequest::default()
    };
    // defaults: T steps for sde-em and pc, 100 for the ODE, 10 Langevin levels
    for (name, steps) in [("sde-em", 1000), ("pc", 1000), ("ode-heun", 100), ("langevin", 10)] {
        assert_eq!(
            generate::resolve(&model, &req(name, SdeParams::default())).unwrap().2,
            steps
        );
    }
    let opts = SdeParams {
        predictor: Some(Predictor::ReverseDiffusion),
        snr: Some(0.2),
        corrector_steps: Some(2),
        ..SdeParams::default()
    };
    assert_eq!(
        generate::resolve(&model, &req("pc", opts)).unwrap().0,
        Sampler::Sde(SdeSampler::Pc {
            predictor: Predictor::ReverseDiffusion,
            snr: 0.2,
            corrector_steps: 2
        })
    );
    let lv = SdeParams {
        langevin_steps: Some(3),
        langevin_eps: Some(1e-4),
        ..SdeParams::default()
    };
    assert_eq!(
        generate::resolve(&model, &req("langevin", lv)).unwrap().0,
        Sampler::Sde(langevin(3, 1e-4))
    );
    // options of another sampler, or out of range, are refused before sampling
    for (sampler, p, flag) in [
        ("ddim", opts, "--predictor"),
        ("langevin", opts, "--predictor"),
        ("pc", lv, "--langevin-steps"),
        (
            "pc",
            SdeParams {
                snr: Some(0.0),
                ..SdeParams::default()
            },
            "--snr",
        ),
        (
            "langevin",
            SdeParams {
                langevin_eps: Some(-1.0),
                ..SdeParams::default()
            },
            "--langevin-eps",
        ),
        (
            "langevin",
            SdeParams {
                langevin_steps: Some(0),
                ..SdeParams::default()
            },
            "--langevin-steps",
        ),
    ] {
        let e = generate::resolve(&model, &req(sampler, p)).unwrap_err().to_string();
        assert!(e.contains(flag), "{sampler} {p:?}: {e}");
    }
    // the whole request path, with strips labelled by the timestep of each step
    let out = generate::sample_model(
        ctx,
        &model,
        &SampleRequest {
            steps: Some(3),
            strip: true,
            ..req("pc", opts)
        },
        |_, _| {},
    )
    .unwrap();
    assert!(out.images.iter().all(|v| v.is_finite()));
    assert_eq!(out.strip_steps, vec![0, 1, 2]);
    assert_eq!(out.strip_t, vec![999, 500, 0]);
    let out = generate::sample_model(
        ctx,
        &model,
        &SampleRequest {
            steps: Some(2),
            strip: true,
            ..req("langevin", lv)
        },
        |_, _| {},
    )
    .unwrap();
    assert!(out.images.iter().all(|v| v.is_finite()));
    assert_eq!(out.strip_t, vec![999, 0]);
    // the last frame is the denoised output
    assert_eq!(out.strip_x.last().unwrap(), &out.images);
}

#[test]
fn cli_samples_with_sde_flags() {
    let dir = std::env::temp_dir().join(format!("ddpm-sde-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = fixtures().join("unet_a_basic");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddpm"))
            .arg("sample")
            .arg("--model")
            .arg(&model)
            .args(args)
            .current_dir(&dir)
            .env(
                "XDG_RUNTIME_DIR",
                std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp".into()),
            )
            .output()
            .expect("runs the ddpm binary");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run(&[
        "--sampler",
        "pc",
        "--steps",
        "2",
        "--snr",
        "0.2",
        "--corrector-steps",
        "2",
        "--predictor",
        "reverse-diffusion",
        "--n",
        "2",
        "--out",
        "pc.png",
    ]);
    assert!(ok, "{err}");
    assert!(dir.join("pc.png").exists());
    let (ok, err) = run(&["--sampler", "ddim", "--snr", "0.2", "--steps", "2", "--n", "1"]);
    assert!(!ok && err.contains("--snr") && err.contains("pc"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
