//! Samplers against diffusers (tests/fixtures/schedulers.{json,safetensors}, see
//! tests/fixtures/README.md): for every recorded step of `DDPMScheduler`, `DDIMScheduler` and
//! `DPMSolverMultistepScheduler`, our timesteps, our coefficient plan ([`sample::plan`]) applied
//! by the CPU f64 reference, and the GPU kernel ([`ddpm::sampler_update_with_noise`]) fed the
//! same sample, model output and recorded noise, against diffusers' `prev_sample` and
//! `pred_original_sample`; the same for x₀ and v prediction and the learned variance
//! (tests/fixtures/predictions.{json,safetensors}). Then the whole sampling loop on a fixture
//! U-Net.

#[path = "kernels/common.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{assert_close, ctx, to_f64};
use ddpm_wgpu::checkpoint::TensorFile;
use ddpm_wgpu::diffusion::sample::{
    self, dpm_timesteps, plan, timesteps, Guidance, SampleOptions, Sampler, Spacing, Variance,
};
use ddpm_wgpu::diffusion::{BetaSchedule, Prediction, Schedule};
use ddpm_wgpu::ops::ddpm::{self, SamplerCoefs};
use ddpm_wgpu::reference::{ddpm as rf, random};
use ddpm_wgpu::{UNet, UNetConfig};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Our sampler, spacing, number of inference steps and prediction type for a fixture case.
fn case_sampler(case: &Value) -> (Sampler, Spacing, usize, Prediction) {
    let cfg = &case["config"];
    let spacing = Spacing::parse(cfg["timestep_spacing"].as_str().unwrap()).unwrap();
    // DDPM without set_timesteps runs the full chain: T steps.
    let steps = case["num_inference_steps"]
        .as_u64()
        .unwrap_or(cfg["num_train_timesteps"].as_u64().unwrap()) as usize;
    let sampler = match case["class"].as_str().unwrap() {
        "DDPMScheduler" => Sampler::Ddpm {
            variance: match cfg["variance_type"].as_str().unwrap() {
                "fixed_small" => Variance::FixedSmall,
                "fixed_large" => Variance::FixedLarge,
                "learned_range" => Variance::LearnedRange,
                v => panic!("variance_type {v}"),
            },
            clip: cfg["clip_sample"].as_bool().unwrap(),
        },
        "DDIMScheduler" => {
            assert_eq!(case["use_clipped_model_output"], Value::Bool(false));
            assert_eq!(cfg["set_alpha_to_one"], Value::Bool(true));
            Sampler::Ddim {
                eta: case["eta"].as_f64().unwrap(),
                clip: cfg["clip_sample"].as_bool().unwrap(),
            }
        }
        "DPMSolverMultistepScheduler" => {
            assert_eq!(cfg["algorithm_type"], "dpmsolver++");
            assert_eq!(cfg["solver_order"], 2);
            assert_eq!(cfg["solver_type"], "midpoint");
            assert_eq!(cfg["final_sigmas_type"], "zero");
            Sampler::DpmSolverPP
        }
        c => panic!("scheduler class {c}"),
    };
    assert_eq!(cfg["beta_schedule"], "linear");
    assert_eq!(cfg["steps_offset"], 0);
    let prediction = Prediction::parse(cfg["prediction_type"].as_str().unwrap()).unwrap();
    (sampler, spacing, steps, prediction)
}

fn max_err(got: &[f64], want: &[f64]) -> f64 {
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max)
}

/// Tolerance for a case (see tests/fixtures/README.md, "Things to know"): diffusers steps in
/// float32 from float32 ᾱ; near t = 0, 1 − ᾱ_t ≈ 1e-4 loses ~3 digits there, so the `.tail`
/// cases differ from an f64 step by up to 3e-4. Elsewhere f64 and the fixtures agree to ≤ 3e-6
/// relative to values up to ~|x_t|·√(1/ᾱ_t) (x̂₀ at t = 999 unclipped is ~100): 2e-5 abs + 2e-6 rel.
fn tolerance(name: &str) -> (f64, f64) {
    if name.ends_with(".tail") {
        (1e-3, 0.0)
    } else {
        (2e-5, 2e-6)
    }
}

#[test]
fn sampler_steps_match_diffusers() {
    let report = check_fixture_steps("schedulers", 16, tolerance);
    eprintln!("max |ours − diffusers|:\n{}", report.join("\n"));
}

/// x₀ and v prediction (DDPM, DDIM, DPM-Solver++) and the learned variance (DDPM, ε and v),
/// with [`tolerance`]'s bounds. Measured (f64 plan vs diffusers' f32 steps): v ≤ 3.4e-6; x₀ under
/// DDIM ≤ 6.1e-6 (ε̂ = (x_t − √ᾱ_t x̂₀)/√(1−ᾱ_t) divides diffusers' f32 round-off of x_t by
/// √(1−ᾱ_t) ≥ 0.35); learned σ = exp(¼(ln β + ln β̃) + ¼(ln β − ln β̃)·v) ≤ 7.7e-6 over 10 steps,
/// and 2.3e-4 in the full chain's tail (the f32 ᾱ near t = 0, as the fixed-variance tails).
#[test]
fn prediction_and_learned_variance_steps_match_diffusers() {
    let report = check_fixture_steps("predictions", 14, tolerance);
    eprintln!("max |ours − diffusers|:\n{}", report.join("\n"));
}

/// Every recorded step of `<stem>.{json,safetensors}`: our timesteps, the plan applied by the
/// reference, and the GPU kernel, against diffusers. Returns one line of maximum errors per case.
fn check_fixture_steps(stem: &str, n_cases: usize, tolerance: fn(&str) -> (f64, f64)) -> Vec<String> {
    let ctx = ctx();
    let dir = fixtures();
    // Python's json writes lambda_min_clipped = -inf as the non-JSON token -Infinity.
    let text = std::fs::read_to_string(dir.join(format!("{stem}.json"))).unwrap();
    let json: Value = serde_json::from_str(&text.replace("-Infinity", "\"-inf\"")).unwrap();
    let file = TensorFile::read(&dir.join(format!("{stem}.safetensors"))).unwrap();
    let schedule = Schedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap();
    let cases = json["cases"].as_object().unwrap();
    assert_eq!(
        cases.len(),
        n_cases,
        "expected the {n_cases} cases of tests/fixtures/README.md"
    );
    let mut report = Vec::new();
    for (name, case) in cases {
        let (sampler, spacing, steps, prediction) = case_sampler(case);
        let (atol, rtol) = tolerance(name);
        let the_plan = sample::plan_with(&schedule, sampler, spacing, steps, prediction).unwrap();
        // Timesteps: the whole list (DDPM without set_timesteps: 999…0).
        let want_ts: Vec<usize> = file
            .get(case["timesteps_key"].as_str().unwrap())
            .unwrap()
            .1
            .iter()
            .map(|&t| t as usize)
            .collect();
        let got_ts: Vec<usize> = the_plan.iter().map(|s| s.t).collect();
        assert_eq!(got_ts, want_ts, "{name}: timesteps");
        let listed = match sampler {
            Sampler::DpmSolverPP => dpm_timesteps(spacing, 1000, steps).unwrap(),
            _ => timesteps(spacing, 1000, steps).unwrap(),
        };
        assert_eq!(listed, want_ts, "{name}: timesteps()");

        let mut x0_prev: Option<Vec<f64>> = None;
        let mut x0_prev_gpu: Option<ddpm_wgpu::Tensor> = None;
        let (mut err_prev, mut err_x0, mut err_gpu) = (0.0f64, 0.0f64, 0.0f64);
        for (k, rec) in case["steps"].as_array().unwrap().iter().enumerate() {
            let key = |w: &str| format!("{name}.step{k}.{w}");
            let t = rec["timestep"].as_u64().unwrap() as usize;
            assert_eq!(file.get(&key("timestep")).unwrap().1, &[t as f32]);
            let idx = the_plan.iter().position(|s| s.t == t).expect("timestep in plan");
            if matches!(sampler, Sampler::DpmSolverPP) {
                assert_eq!(idx, k, "{name}: multistep cases run in order");
            }
            let c: SamplerCoefs = the_plan[idx].coefs;
            let (shape, x) = file.get(&key("sample")).unwrap();
            let shape = shape.to_vec();
            let (out_shape, out) = file.get(&key("model_output")).unwrap();
            let out_shape = out_shape.to_vec();
            // A learned-variance output has 2·C channels: the prediction, then v.
            let learned = out_shape[1] == 2 * shape[1];
            assert_eq!(
                learned,
                case["learned_variance"] == Value::Bool(true),
                "{name}: output shape"
            );
            let (e, v) = if learned {
                let (e, v) = rf::split_channels(&to_f64(out), shape[0]);
                (e, Some(v))
            } else {
                (to_f64(out), None)
            };
            assert_eq!(c.sigma_v != 0.0, learned && c.sigma != 0.0, "{name} step {k}: σ_v");
            let drew = rec["noise"].as_bool().unwrap();
            assert_eq!(drew, file.contains(&key("noise")), "{name} step {k}: noise key");
            // Where diffusers adds no noise, neither may we (σ may still be 0 where it drew,
            // e.g. DDIM's last step: σ = η·0).
            if !drew {
                assert_eq!(c.sigma, 0.0, "{name} step {k} (t = {t}): σ must be 0");
            }
            let noise: Vec<f32> = if drew {
                file.get(&key("noise")).unwrap().1.to_vec()
            } else {
                vec![0.0; x.len()]
            };
            let want_prev = to_f64(file.get(&key("prev_sample")).unwrap().1);

            // 1. the plan, applied in f64 by the reference
            let s = (c.s_x as f64, c.s_e as f64, c.clip);
            let cs = (c.c_x as f64, c.c_x0 as f64, c.c_e as f64, c.c_prev as f64);
            let (got, x0) = match &v {
                Some(v) => rf::sampler_update_learned_with_noise(
                    &to_f64(x),
                    &e,
                    v,
                    x0_prev.as_deref(),
                    s,
                    cs,
                    (c.sigma as f64, c.sigma_v as f64),
                    &to_f64(&noise),
                ),
                None => rf::sampler_update_with_noise(
                    &to_f64(x),
                    &e,
                    x0_prev.as_deref(),
                    s,
                    cs,
                    c.sigma as f64,
                    &to_f64(&noise),
                ),
            };
            let got32: Vec<f32> = got.iter().map(|&v| v as f32).collect();
            assert_close(
                &format!("{name} step {k} t={t} prev_sample (plan)"),
                &got32,
                &want_prev,
                atol,
                rtol,
            );
            err_prev = err_prev.max(max_err(&got, &want_prev));
            if file.contains(&key("pred_original_sample")) {
                let want_x0 = to_f64(file.get(&key("pred_original_sample")).unwrap().1);
                let x0_32: Vec<f32> = x0.iter().map(|&v| v as f32).collect();
                assert_close(
                    &format!("{name} step {k} t={t} pred_original_sample"),
                    &x0_32,
                    &want_x0,
                    atol,
                    rtol,
                );
                err_x0 = err_x0.max(max_err(&x0, &want_x0));
            }

            // 2. the GPU kernel with the same noise
            let tx = ctx.upload(&shape, x).unwrap();
            let te = ctx.upload(&out_shape, out).unwrap();
            let tz = ctx.upload(&shape, &noise).unwrap();
            let (g_prev, g_x0) = ddpm::sampler_update_with_noise(ctx, &tx, &te, x0_prev_gpu.as_ref(), &c, &tz).unwrap();
            let g_prev = ctx.read(&g_prev).unwrap();
            assert_close(
                &format!("{name} step {k} t={t} prev_sample (GPU)"),
                &g_prev,
                &want_prev,
                atol,
                rtol,
            );
            // ... and the kernel against the reference of the same coefficients (f32 vs f64 of
            // the same formula: a few f32 ulps of the largest term).
            assert_close(&format!("{name} step {k} GPU vs reference"), &g_prev, &got, 1e-5, 1e-6);
            err_gpu = err_gpu.max(max_err(&to_f64(&g_prev), &want_prev));
            x0_prev = Some(x0);
            x0_prev_gpu = Some(g_x0);
        }
        report.push(format!(
            "{name:34} prev_sample {err_prev:.2e} x0 {err_x0:.2e} GPU {err_gpu:.2e} (atol {atol:e})"
        ));
    }
    report
}

#[test]
fn dpm_sigmas_match_diffusers() {
    // diffusers' σ_t = √((1 − ᾱ_t)/ᾱ_t) at the inference timesteps, then 0; ours is implied by
    // the plan's c_x = σ_next/σ_t.
    let file = TensorFile::read(&fixtures().join("schedulers.safetensors")).unwrap();
    let sigmas = file.get("dpmpp2m_n10.sigmas").unwrap().1;
    let schedule = Schedule::ddpm();
    let p = plan(&schedule, Sampler::DpmSolverPP, Spacing::Linspace, 10).unwrap();
    let ab = &schedule.alphas_cumprod;
    // diffusers' x_t coefficient is σ_t/σ_s after _sigma_to_alpha_sigma_t: σ ↦ σ/√(1 + σ²).
    let scaled = |s: f32| s as f64 / (1.0 + s as f64 * s as f64).sqrt();
    for (i, st) in p.iter().enumerate() {
        let s = ((1.0 - ab[st.t]) / ab[st.t]).sqrt();
        // diffusers' σ comes from the float32 cumprod (ᾱ off by ≤ 3.3e-7): dσ/σ = dᾱ/(2ᾱ(1−ᾱ))
        // ≤ 2e-6 at these t.
        assert!((s - sigmas[i] as f64).abs() <= 5e-6 * s, "σ[{i}] {s} vs {}", sigmas[i]);
        let ratio = scaled(sigmas[i + 1]) / scaled(sigmas[i]);
        assert!((st.coefs.c_x as f64 - ratio).abs() < 1e-6, "c_x[{i}]");
    }
    assert_eq!(sigmas[10], 0.0);
}

#[test]
fn timestep_spacings_round_like_numpy() {
    // np.round rounds half to even: trailing with 16 steps has r = 62.5, so 1000 − 62.5 = 937.5
    // → 938 but 1000 − 3·62.5 = 812.5 → 812 (then − 1).
    let ts = timesteps(Spacing::Trailing, 1000, 16).unwrap();
    assert_eq!(&ts[..4], &[999, 937, 874, 811]);
    assert_eq!(ts.len(), 16);
    assert_eq!(timesteps(Spacing::Leading, 1000, 3).unwrap(), vec![666, 333, 0]);
    assert_eq!(timesteps(Spacing::Linspace, 1000, 1).unwrap(), vec![0]);
    assert_eq!(timesteps(Spacing::Leading, 1000, 1000).unwrap()[..3], [999, 998, 997]);
    for bad in [0, 1001] {
        let e = timesteps(Spacing::Leading, 1000, bad).unwrap_err().to_string();
        assert!(e.contains("--steps") && e.contains("1000"), "{e}");
    }
}

fn fixture_unet(name: &str) -> UNet {
    UNet::from_pretrained(ctx(), fixtures().join(name)).unwrap()
}

fn opts(seed: u64, sampler: Sampler, steps: usize) -> SampleOptions {
    SampleOptions {
        n: 2,
        size: 8,
        sampler,
        spacing: Spacing::Leading,
        steps,
        seed,
        guidance: None,
        keep: vec![],
    }
}

#[test]
fn sampling_loop_is_deterministic_and_never_reads_back() {
    // A context of its own: the shared one's readback counter moves with the other tests.
    let own = ddpm_wgpu::Context::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let ctx = &own;
    let unet = UNet::from_pretrained(ctx, fixtures().join("unet_a_basic")).unwrap();
    let schedule = Schedule::ddpm();
    let ddpm = Sampler::Ddpm {
        variance: Variance::FixedSmall,
        clip: true,
    };
    let run = |seed: u64, keep: Vec<usize>| {
        let before = ctx.readback_count();
        let mut calls = 0;
        let out = sample::sample(
            ctx,
            &unet,
            &schedule,
            &SampleOptions {
                keep,
                ..opts(seed, ddpm, 4)
            },
            |i, n| {
                calls += 1;
                assert_eq!((i, n), (calls, 4));
                assert_eq!(ctx.readback_count(), before, "read back during step {i}");
            },
        )
        .unwrap();
        assert_eq!(ctx.readback_count(), before, "read back inside sample()");
        let images = ctx.read(&out.images).unwrap();
        assert_eq!(ctx.readback_count(), before + 1);
        assert_eq!(calls, 4);
        (images, out.trajectory)
    };
    let (a, traj) = run(7, vec![0, 3]);
    let (b, _) = run(7, vec![]);
    let (c, _) = run(8, vec![]);
    assert_eq!(a.len(), 2 * 3 * 8 * 8);
    assert!(a.iter().all(|v| v.is_finite()));
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "same seed, different images"
    );
    let differ = a.iter().zip(&c).filter(|(x, y)| x != y).count();
    assert!(
        differ > a.len() / 2,
        "seeds 7 and 8 agree on {} of {}",
        a.len() - differ,
        a.len()
    );
    // The trajectory keeps (x_t, x̂₀) after steps 0 and 3; after the last step x_t is the output.
    assert_eq!(traj.iter().map(|t| t.0).collect::<Vec<_>>(), vec![0, 3]);
    assert_eq!(ctx.read(&traj[1].1).unwrap(), a);
    // The last DDPM step (t = 0) adds no noise: x_{-1} = x̂₀ (clipped) exactly up to the mean
    // coefficients c_x0 = 1, c_x = 0.
    let x0 = ctx.read(&traj[1].2).unwrap();
    assert_close("last step x = x̂₀", &a, &to_f64(&x0), 1e-6, 0.0);
}

#[test]
fn guided_sampling_matches_a_host_side_step() {
    // Classifier-free guidance: ε = ε_∅ + w (ε_c − ε_∅), the unconditional half evaluated with
    // the null class. One DDIM (η = 0) step from the initial noise, checked against two plain
    // forward passes combined on the host and the plan's coefficients applied by the reference.
    let ctx = ctx();
    let text = std::fs::read_to_string(fixtures().join("unet_c_class_cond/config.json")).unwrap();
    let mut cfg = UNetConfig::from_json(&text).unwrap();
    cfg.in_channels = 3; // sampling needs in = out
    let mut unet = UNet::new(cfg).unwrap();
    unet.init_random(ctx, 3).unwrap();
    let schedule = Schedule::ddpm();
    let sampler = Sampler::Ddim { eta: 0.0, clip: false };
    let (n, seed, w) = (3usize, 11u64, 2.5f32);
    let labels = vec![1u32, 0, 1];
    let o = SampleOptions {
        n,
        spacing: Spacing::Trailing,
        guidance: Some(Guidance {
            labels: labels.clone(),
            null_class: 2,
            weight: w,
        }),
        ..opts(seed, sampler, 1)
    };
    let got = ctx
        .read(&sample::sample(ctx, &unet, &schedule, &o, |_, _| {}).unwrap().images)
        .unwrap();

    let shape = [n, 3, 8, 8];
    let x: Vec<f32> = (0..n * 3 * 64)
        .map(|i| random::normal(seed, u32::MAX, i as u64))
        .collect();
    let step = plan(&schedule, sampler, Spacing::Trailing, 1).unwrap()[0];
    assert_eq!(step.t, 999);
    let tx = ctx.upload(&shape, &x).unwrap();
    let tt = ctx.upload(&[n], &vec![step.t as f32; n]).unwrap();
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
    let c = step.coefs;
    let (want, _) = rf::sampler_update_with_noise(
        &to_f64(&x),
        &e,
        None,
        (c.s_x as f64, c.s_e as f64, c.clip),
        (c.c_x as f64, c.c_x0 as f64, c.c_e as f64, c.c_prev as f64),
        c.sigma as f64,
        &vec![0.0; x.len()],
    );
    // x̂₀ at t = 999 amplifies ε by √((1−ᾱ)/ᾱ) ≈ 156 before c_x0 = 1 (η = 0, ᾱ_prev = 1):
    // f32 round-off of ~1e-7·|ε|·156·w.
    assert_close("guided DDIM step", &got, &want, 2e-4, 1e-5);
    // w = 1 is plain conditional sampling (no unconditional half).
    let plain = SampleOptions {
        guidance: Some(Guidance {
            labels: labels.clone(),
            null_class: 2,
            weight: 1.0,
        }),
        ..o.clone()
    };
    let got1 = ctx
        .read(&sample::sample(ctx, &unet, &schedule, &plain, |_, _| {}).unwrap().images)
        .unwrap();
    let (want1, _) = rf::sampler_update_with_noise(
        &to_f64(&x),
        &to_f64(&e_c),
        None,
        (c.s_x as f64, c.s_e as f64, c.clip),
        (c.c_x as f64, c.c_x0 as f64, c.c_e as f64, c.c_prev as f64),
        0.0,
        &vec![0.0; x.len()],
    );
    assert_close("conditional DDIM step", &got1, &want1, 2e-4, 1e-5);
}

#[test]
fn sample_refuses_bad_requests() {
    let ctx = ctx();
    let schedule = Schedule::ddpm();
    let unet = fixture_unet("unet_a_basic");
    let ddim = Sampler::Ddim { eta: 0.0, clip: true };
    let err = |o: SampleOptions, u: &UNet| match sample::sample(ctx, u, &schedule, &o, |_, _| {}) {
        Ok(_) => panic!("{o:?} was accepted"),
        Err(e) => e.to_string(),
    };
    let e = err(opts(0, ddim, 1001), &unet);
    assert!(e.contains("--steps") && e.contains("1000"), "{e}");
    let e = err(
        SampleOptions {
            guidance: Some(Guidance {
                labels: vec![0, 0],
                null_class: 0,
                weight: 1.0,
            }),
            ..opts(0, ddim, 2)
        },
        &unet,
    );
    assert!(e.contains("no class embedding"), "{e}");
    // class-conditional fixture: in_channels 2 ≠ out_channels 3 cannot be sampled
    let cond = fixture_unet("unet_c_class_cond");
    let g = |labels: Vec<u32>| Guidance {
        labels,
        null_class: 2,
        weight: 2.0,
    };
    let e = err(
        SampleOptions {
            guidance: Some(g(vec![0, 1])),
            ..opts(0, ddim, 2)
        },
        &cond,
    );
    assert!(e.contains("in_channels") && e.contains("out_channels"), "{e}");
    let text = std::fs::read_to_string(fixtures().join("unet_c_class_cond/config.json")).unwrap();
    let mut cfg = UNetConfig::from_json(&text).unwrap();
    cfg.in_channels = 3;
    let mut u3 = UNet::new(cfg).unwrap();
    u3.init_random(ctx, 1).unwrap();
    let e = err(
        SampleOptions {
            guidance: Some(g(vec![0, 3])),
            ..opts(0, ddim, 2)
        },
        &u3,
    );
    assert!(e.contains("class 3") && e.contains("0..2"), "{e}");
    let e = err(opts(0, ddim, 2), &u3);
    assert!(e.contains("class-conditional"), "{e}");
}

#[test]
fn learned_variance_v_model_loads_and_samples() {
    // A 3 → 6 channel U-Net (ε-slot holding v, then the variance channel) saved as a diffusers
    // folder with scheduler_config.json {variance_type learned_range, prediction_type
    // v_prediction}: `generate` loads it and samples 2 DDPM steps (t = 500 with noise, then
    // t = 0). Checked against the same loop on the host: the GPU forward, then the plan's
    // coefficients applied by the reference with the split output and the same Philox noise.
    use ddpm_wgpu::diffusion::generate::{self, SampleRequest};
    let ctx = ctx();
    let text = std::fs::read_to_string(fixtures().join("unet_a_basic/config.json")).unwrap();
    let mut cfg = UNetConfig::from_json(&text).unwrap();
    cfg.out_channels = 6;
    let mut unet = UNet::new(cfg.clone()).unwrap();
    unet.init_random(ctx, 9).unwrap();
    let dir = std::env::temp_dir().join(format!("ddpm-learned-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ddpm_wgpu::checkpoint::save_folder(ctx, &dir, &cfg, &unet.params).unwrap();
    std::fs::write(
        dir.join("scheduler_config.json"),
        r#"{"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "linear",
            "variance_type": "learned_range", "prediction_type": "v_prediction", "clip_sample": true}"#,
    )
    .unwrap();
    let model = generate::load_model(ctx, &dir).unwrap();
    assert_eq!(model.scheduler.variance, Variance::LearnedRange);
    assert_eq!(model.scheduler.prediction, Prediction::V);
    let (n, seed) = (2usize, 13u64);
    let req = SampleRequest {
        sampler: "ddpm".into(),
        steps: Some(2),
        n,
        seed,
        ..SampleRequest::default()
    };
    let got = generate::sample_model(ctx, &model, &req, |_, _| {}).unwrap();

    let schedule = Schedule::ddpm();
    let sampler = Sampler::Ddpm {
        variance: Variance::LearnedRange,
        clip: true,
    };
    let steps = sample::plan_with(&schedule, sampler, Spacing::Leading, 2, Prediction::V).unwrap();
    assert_eq!(steps.iter().map(|s| s.t).collect::<Vec<_>>(), vec![500, 0]);
    assert!(steps[0].coefs.sigma_v > 0.0 && steps[1].coefs.sigma == 0.0);
    let shape = [n, 3, 8, 8];
    let mut x: Vec<f64> = (0..n * 3 * 64)
        .map(|i| random::normal(seed, u32::MAX, i as u64) as f64)
        .collect();
    for (i, st) in steps.iter().enumerate() {
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let tx = ctx.upload(&shape, &x32).unwrap();
        let tt = ctx.upload(&[n], &vec![st.t as f32; n]).unwrap();
        let out = to_f64(&ctx.read(&model.unet.forward(ctx, &tx, &tt, None).unwrap()).unwrap());
        let (e, v) = rf::split_channels(&out, n);
        let c = st.coefs;
        x = rf::sampler_update_learned(
            &x,
            &e,
            &v,
            None,
            (c.s_x as f64, c.s_e as f64, c.clip),
            (c.c_x as f64, c.c_x0 as f64, c.c_e as f64, c.c_prev as f64),
            (c.sigma as f64, c.sigma_v as f64),
            seed,
            i as u32,
        )
        .0;
    }
    // two steps of f32 round-off in the U-Net (≤ ~1e-6 of outputs ~1) and the update; the last
    // step returns the clipped x̂₀ = √ᾱ x − √(1−ᾱ) v at t = 0
    assert_close("learned-range v-model DDPM, 2 steps", &got.images, &x, 2e-5, 2e-5);
    // a 3 → 3 model with learned_range is refused before sampling
    let plain_dir = fixtures().join("unet_a_basic");
    let mut plain = generate::load_model(ctx, &plain_dir).unwrap();
    plain.scheduler.variance = Variance::LearnedRange;
    let e = generate::sample_model(ctx, &plain, &req, |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("learned_range") && e.contains("out_channels 3"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sampling run transforms the weights of its Winograd convolutions once and reuses them for
/// every step; a later run must see weights changed in place in between (the same buffers, new
/// values), exactly as a model loaded with those weights does.
#[test]
fn sampling_sees_weights_changed_in_place_between_runs() {
    let ctx = ctx();
    let schedule = Schedule::ddpm();
    let ddim = Sampler::Ddim { eta: 0.0, clip: true };
    let run = |unet: &UNet| {
        let out = sample::sample(ctx, unet, &schedule, &opts(5, ddim, 3), |_, _| {}).unwrap();
        ctx.read(&out.images).unwrap()
    };
    let unet = fixture_unet("unet_a_basic");
    let before = run(&unet);
    // A ResNet convolution (fused forward) and conv_out (plain forward), both Winograd on CPU
    // adapters: new values written into their existing buffers.
    let names = ["mid_block.resnets.0.conv2.weight", "conv_out.weight"];
    let mut changed = Vec::new();
    for name in names {
        let id = unet.params.id(name).unwrap();
        let w: Vec<f32> = ctx
            .read(unet.params.get(id))
            .unwrap()
            .iter()
            .map(|v| 1.5 * v - 0.01)
            .collect();
        ctx.write(unet.params.get(id), &w).unwrap();
        changed.push((id, w));
    }
    let after = run(&unet);
    let mut fresh = fixture_unet("unet_a_basic");
    for (id, w) in &changed {
        let shape = fresh.params.shape(*id).to_vec();
        fresh.params.set(*id, ctx.upload(&shape, w).unwrap()).unwrap();
    }
    assert_eq!(
        after,
        run(&fresh),
        "a run after an in-place weight change differs from a fresh model with those weights"
    );
    assert_ne!(before, after, "the weight change did not change the samples");
}
