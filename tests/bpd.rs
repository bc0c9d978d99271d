//! The variational bound in bits/dim: the host terms against a plain-Python transcription of
//! improved-diffusion (tests/fixtures/make_bpd_fixture.py → bpd.json), then the GPU evaluation
//! loop on a fixture U-Net.

#[path = "kernels/common.rs"]
mod common;

use std::path::Path;

use common::ctx;
use ddpm_wgpu::diffusion::bpd::{self, eval_bpd, prior_bpd, vb_term_bpd};
use ddpm_wgpu::diffusion::sample::Variance;
use ddpm_wgpu::diffusion::{BetaSchedule, Prediction, Schedule};
use ddpm_wgpu::{UNet, UNetConfig};
use serde_json::Value;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Same f64 formulas in the same order up to a few operations: relative 1e-12.
fn close(name: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12 * w.abs().max(1.0),
            "{name}[{i}]: got {g}, want {w}"
        );
    }
}

#[test]
fn bound_terms_match_improved_diffusion() {
    let text = std::fs::read_to_string(fixtures().join("bpd.json")).unwrap();
    let f: Value = serde_json::from_str(&text).unwrap();
    let t_max = f["T"].as_u64().unwrap() as usize;
    let n = f["n"].as_u64().unwrap() as usize;
    let s = Schedule::new(
        BetaSchedule::Linear,
        t_max,
        f["beta_start"].as_f64().unwrap(),
        f["beta_end"].as_f64().unwrap(),
    )
    .unwrap();
    let x0 = floats(&f["x0"]);
    let mut seen = 0;
    for (name, case) in f["cases"].as_object().unwrap() {
        let variance = if name.starts_with("fixed_small") {
            Variance::FixedSmall
        } else {
            Variance::FixedLarge
        };
        let clip = name.ends_with("clip1");
        let mut total = prior_bpd(&s, &x0, n);
        close(&format!("{name} prior"), &total, &floats(&case["prior"]));
        for t in 0..t_max {
            let got = vb_term_bpd(
                &s,
                variance,
                Prediction::Epsilon,
                clip,
                t,
                &x0,
                &floats(&f["x_t"][t]),
                &floats(&f["eps"][t]),
                n,
            );
            close(&format!("{name} L_{t}"), &got, &floats(&case["terms"][t]));
            assert!(got.iter().all(|&v| v >= 0.0), "{name} t={t}: a KL or NLL below 0");
            for (tot, v) in total.iter_mut().zip(&got) {
                *tot += v;
            }
        }
        close(&format!("{name} total"), &total, &floats(&case["total"]));
        seen += 1;
    }
    assert_eq!(seen, 4);
}

#[test]
fn helper_functions() {
    // KL of a distribution with itself is 0; KL(N(1, 1) ‖ N(0, 1)) = 1/2.
    assert!(bpd::normal_kl(0.3, -1.2, 0.3, -1.2).abs() < 1e-15);
    assert!((bpd::normal_kl(1.0, 0.0, 0.0, 0.0) - 0.5).abs() < 1e-15);
    assert!((bpd::approx_standard_normal_cdf(0.0) - 0.5).abs() < 1e-15);
    // A narrow decoder centred on the pixel puts ~all mass in its bin; edges use open bins.
    assert!(bpd::discretized_gaussian_log_likelihood(0.2, 0.2, -8.0).abs() < 1e-9);
    assert!(bpd::discretized_gaussian_log_likelihood(1.0, 3.0, 0.0) > -0.05);
    assert!(bpd::discretized_gaussian_log_likelihood(-1.0, 1.0, -8.0) == (1e-12f64).ln());
}

#[test]
fn gpu_bound_is_deterministic_and_adds_up() {
    let ctx = ctx();
    let unet = UNet::from_pretrained(ctx, fixtures().join("unet_a_basic")).unwrap();
    let s = Schedule::new(BetaSchedule::Linear, 12, 1e-4, 0.2).unwrap();
    let n = 2;
    // 8-bit levels in [−1, 1]
    let images: Vec<f32> = (0..n * 3 * 64).map(|i| ((i * 37) % 256) as f32 / 127.5 - 1.0).collect();
    let run = |seed| {
        let mut calls = 0;
        let r = eval_bpd(
            ctx,
            &unet,
            &s,
            Variance::FixedSmall,
            Prediction::Epsilon,
            true,
            &images,
            None,
            n,
            seed,
            |i, t| {
                calls += 1;
                assert_eq!((i, t), (calls, 12));
            },
        )
        .unwrap();
        assert_eq!(calls, 12);
        r
    };
    let a = run(5);
    let b = run(5);
    let c = run(6);
    assert_eq!(a.total, b.total);
    assert_ne!(a.total, c.total);
    let x0: Vec<f64> = images.iter().map(|&v| v as f64).collect();
    assert_eq!(a.prior, prior_bpd(&s, &x0, n));
    let mean_total = a.total.iter().sum::<f64>() / n as f64;
    let mean_prior = a.prior.iter().sum::<f64>() / n as f64;
    let sum_terms: f64 = a.terms.iter().sum();
    assert!((mean_total - mean_prior - sum_terms).abs() < 1e-9 * mean_total);
    assert!(a.terms.iter().all(|&v| v.is_finite() && v >= 0.0), "{:?}", a.terms);
    // wrong image count / shape
    assert!(eval_bpd(
        ctx,
        &unet,
        &s,
        Variance::FixedSmall,
        Prediction::Epsilon,
        true,
        &images[1..],
        None,
        n,
        0,
        |_, _| {}
    )
    .is_err());
}

#[test]
fn cli_eval_bpd() {
    let dir = std::env::temp_dir().join(format!("ddpm-bpd-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (data, model) = (dir.join("data"), dir.join("model"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&model).unwrap();
    for k in 0..3u8 {
        let px: Vec<u8> = (0..8 * 8 * 3)
            .map(|i| (i as u8).wrapping_mul(29).wrapping_add(k * 50))
            .collect();
        let file = std::fs::File::create(data.join(format!("{k}.png"))).unwrap();
        let mut enc = png::Encoder::new(file, 8, 8);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&px).unwrap();
    }
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(fixtures().join("unet_a_basic").join(f), model.join(f)).unwrap();
    }
    std::fs::write(model.join("scheduler_config.json"), r#"{"num_train_timesteps": 8}"#).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args([
            "eval",
            "--bpd",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
        .args(["--n", "3", "--batch-size", "2"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let bpd: f64 = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no bits/dim in {stdout:?}"));
    assert!(
        stdout.starts_with("bits/dim:") && stdout.contains("3 images, T = 8"),
        "{stdout}"
    );
    assert!(bpd.is_finite() && bpd > 0.0, "{stdout}");
}

/// The fixture's inputs: (schedule, x0, n, x_t[t], eps[t]).
#[allow(clippy::type_complexity)]
fn bpd_fixture() -> (Value, Schedule, Vec<f64>, usize) {
    let text = std::fs::read_to_string(fixtures().join("bpd.json")).unwrap();
    let f: Value = serde_json::from_str(&text).unwrap();
    let s = Schedule::new(
        BetaSchedule::Linear,
        f["T"].as_u64().unwrap() as usize,
        f["beta_start"].as_f64().unwrap(),
        f["beta_end"].as_f64().unwrap(),
    )
    .unwrap();
    let x0 = floats(&f["x0"]);
    let n = f["n"].as_u64().unwrap() as usize;
    (f, s, x0, n)
}

#[test]
fn bound_terms_for_x0_and_v_models() {
    // An x₀ or v model whose output means the same x̂₀ as the fixture's ε̂ has the same bound:
    // m_x0 = x̂₀ = (x_t − √(1−ᾱ) ε̂)/√ᾱ, m_v = √ᾱ ε̂ − √(1−ᾱ) x̂₀. Only the conversions' f64
    // round-off differs (1/√ᾱ ≤ 2 here): 1e-9 relative.
    let (f, s, x0, n) = bpd_fixture();
    for (name, case) in f["cases"].as_object().unwrap() {
        let variance = if name.starts_with("fixed_small") {
            Variance::FixedSmall
        } else {
            Variance::FixedLarge
        };
        let clip = name.ends_with("clip1");
        for t in 0..s.len() {
            let (a, sd) = (s.alphas_cumprod[t].sqrt(), (1.0 - s.alphas_cumprod[t]).sqrt());
            let x_t = floats(&f["x_t"][t]);
            let eps = floats(&f["eps"][t]);
            let x0_hat: Vec<f64> = x_t.iter().zip(&eps).map(|(x, e)| (x - sd * e) / a).collect();
            let v_hat: Vec<f64> = eps.iter().zip(&x0_hat).map(|(e, x)| a * e - sd * x).collect();
            let want = floats(&case["terms"][t]);
            for (prediction, out) in [(Prediction::Sample, &x0_hat), (Prediction::V, &v_hat)] {
                let got = vb_term_bpd(&s, variance, prediction, clip, t, &x0, &x_t, out, n);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                        "{name} {prediction:?} L_{t}: {g} vs {w}"
                    );
                }
            }
        }
    }
}

#[test]
fn learned_range_bound_at_the_ends_of_the_range() {
    // v = −1 is β̃ (fixed_small, with improved-diffusion's clipped log at t = 0); v = +1 is β_t,
    // fixed_large for t ≥ 1 (at t = 0 learned_range uses β_0 itself, fixed_large β̃_1: checked
    // against the decoder likelihood directly). The output has 2·C channels: ε̂, then v.
    let (f, s, x0, n) = bpd_fixture();
    let per = x0.len() / n;
    let with_v = |eps: &[f64], v: f64| -> Vec<f64> {
        eps.chunks_exact(per)
            .flat_map(|item| item.iter().copied().chain(std::iter::repeat_n(v, per)))
            .collect()
    };
    for clip in [0, 1] {
        let small = &f["cases"][format!("fixed_small_clip{clip}")];
        let large = &f["cases"][format!("fixed_large_clip{clip}")];
        for t in 0..s.len() {
            let x_t = floats(&f["x_t"][t]);
            let eps = floats(&f["eps"][t]);
            let term = |v: f64| {
                vb_term_bpd(
                    &s,
                    Variance::LearnedRange,
                    Prediction::Epsilon,
                    clip == 1,
                    t,
                    &x0,
                    &x_t,
                    &with_v(&eps, v),
                    n,
                )
            };
            close(&format!("learned v=-1 L_{t}"), &term(-1.0), &floats(&small["terms"][t]));
            if t > 0 {
                close(&format!("learned v=+1 L_{t}"), &term(1.0), &floats(&large["terms"][t]));
            } else {
                // L_0 = −log p(x₀ | x₁) with log σ = ½ log β_0, in bits/dim
                let ab = s.alphas_cumprod[0];
                let want: Vec<f64> = (0..n)
                    .map(|b| {
                        let nll: f64 = (b * per..(b + 1) * per)
                            .map(|i| {
                                let mut x0_hat = (x_t[i] - (1.0 - ab).sqrt() * eps[i]) / ab.sqrt();
                                if clip == 1 {
                                    x0_hat = x0_hat.clamp(-1.0, 1.0);
                                }
                                // posterior mean at t = 0: ᾱ_prev = 1, so μ̃ = x̂₀
                                -bpd::discretized_gaussian_log_likelihood(x0[i], x0_hat, 0.5 * s.betas[0].ln())
                            })
                            .sum();
                        nll / per as f64 / std::f64::consts::LN_2
                    })
                    .collect();
                close("learned v=+1 L_0", &term(1.0), &want);
            }
        }
    }
}

#[test]
fn gpu_bound_for_a_learned_variance_model() {
    // A model with 2·C outputs evaluates under learned_range (finite, non-negative terms; the
    // same seed, the same numbers) and is refused under a fixed variance, as a C-output model
    // is under learned_range.
    let ctx = ctx();
    let text = std::fs::read_to_string(fixtures().join("unet_a_basic/config.json")).unwrap();
    let mut cfg = UNetConfig::from_json(&text).unwrap();
    cfg.out_channels = 6;
    let mut unet = UNet::new(cfg).unwrap();
    unet.init_random(ctx, 4).unwrap();
    let s = Schedule::new(BetaSchedule::Linear, 6, 1e-4, 0.2).unwrap();
    let n = 2;
    let images: Vec<f32> = (0..n * 3 * 64).map(|i| ((i * 53) % 256) as f32 / 127.5 - 1.0).collect();
    let run = |u: &UNet, variance| {
        eval_bpd(
            ctx,
            u,
            &s,
            variance,
            Prediction::V,
            true,
            &images,
            None,
            n,
            3,
            |_, _| {},
        )
    };
    let a = run(&unet, Variance::LearnedRange).unwrap();
    let b = run(&unet, Variance::LearnedRange).unwrap();
    assert_eq!(a.total, b.total);
    assert!(a.terms.iter().all(|&v| v.is_finite() && v >= 0.0), "{:?}", a.terms);
    let e = run(&unet, Variance::FixedSmall).unwrap_err().to_string();
    assert!(e.contains("out_channels 6"), "{e}");
    let plain = UNet::from_pretrained(ctx, fixtures().join("unet_a_basic")).unwrap();
    let e = run(&plain, Variance::LearnedRange).unwrap_err().to_string();
    assert!(e.contains("learned_range"), "{e}");
}

#[test]
fn sampled_bound_with_every_timestep_is_the_exact_bound() {
    let ctx = ctx();
    let unet = UNet::from_pretrained(ctx, fixtures().join("unet_a_basic")).unwrap();
    let s = Schedule::new(BetaSchedule::Linear, 12, 1e-4, 0.2).unwrap();
    let n = 2;
    let images: Vec<f32> = (0..n * 3 * 64).map(|i| ((i * 37) % 256) as f32 / 127.5 - 1.0).collect();
    let args = (Variance::FixedSmall, Prediction::Epsilon, true);
    let full = eval_bpd(ctx, &unet, &s, args.0, args.1, args.2, &images, None, n, 5, |_, _| {}).unwrap();
    for k in [11, 50] {
        let mut calls = 0;
        let r = bpd::eval_bpd_sampled(
            ctx,
            &unet,
            &s,
            args.0,
            args.1,
            args.2,
            &images,
            None,
            n,
            k,
            5,
            |_, t| {
                calls += 1;
                assert_eq!(t, 12);
            },
        )
        .unwrap();
        assert_eq!(calls, 12);
        assert_eq!(
            r.total, full.total,
            "k = {k} ≥ T − 1 evaluates every index with weight 1"
        );
    }
    // k = 3: 4 model calls; the decoder term and the prior are exact, the rest is weighted
    let mut calls = 0;
    let r = bpd::eval_bpd_sampled(
        ctx,
        &unet,
        &s,
        args.0,
        args.1,
        args.2,
        &images,
        None,
        n,
        3,
        5,
        |_, _| calls += 1,
    )
    .unwrap();
    assert_eq!(calls, 4);
    assert_eq!(r.prior, full.prior);
    assert_eq!(r.terms[0], full.terms[0]);
    assert_eq!(r.terms.iter().filter(|&&v| v != 0.0).count(), 4);
}

#[test]
fn stratified_timesteps_are_an_unbiased_plan() {
    // one index per stratum, weights = stratum sizes adding up to T − 1, index 0 always first
    for (steps, k) in [(1000, 100), (1000, 7), (13, 5), (2, 3), (1, 4)] {
        let plan = bpd::stratified_timesteps(steps, k, 9);
        assert_eq!(plan[0], (0, 1.0));
        let w: f64 = plan[1..].iter().map(|p| p.1).sum();
        assert_eq!(w, (steps - 1) as f64, "T = {steps}, k = {k}");
        assert_eq!(plan.len(), 1 + k.min(steps - 1));
        assert!(plan[1..].windows(2).all(|p| p[0].0 < p[1].0));
    }
    // E over the draw of Σ weight·L_t = Σ L_t, for an arbitrary L (here L_t = 1/t + t mod 3)
    let steps = 100;
    let l = |t: usize| 1.0 / t as f64 + (t % 3) as f64;
    let exact: f64 = (1..steps).map(l).sum();
    let draws = 4000;
    let mean = (0..draws)
        .map(|seed| {
            bpd::stratified_timesteps(steps, 6, seed)[1..]
                .iter()
                .map(|&(t, w)| w * l(t))
                .sum::<f64>()
        })
        .sum::<f64>()
        / draws as f64;
    // the estimator's standard deviation is ~10 here; 4000 draws → standard error ~0.16
    assert!((mean - exact).abs() < 1.0, "mean {mean} vs exact {exact}");
}
