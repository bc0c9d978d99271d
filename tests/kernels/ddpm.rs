// GPU fused DDPM kernels vs the CPU reference (which draws the same Philox normals).
use crate::common::{assert_close, ctx, rand_vec, to_f64};
use ddpm_wgpu::{
    ops::ddpm::{self as ops, DdpmStep},
    reference::{ddpm as rf, random},
};

/// Linear-β schedule (Ho et al.): (√ᾱ_t, √(1−ᾱ_t)) for t = 0..steps.
fn schedule(steps: usize) -> (Vec<f32>, Vec<f32>) {
    let mut abar = 1.0f64;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for t in 0..steps {
        let beta = 1e-4 + (0.02 - 1e-4) * t as f64 / (steps - 1).max(1) as f64;
        abar *= 1.0 - beta;
        a.push(abar.sqrt() as f32);
        b.push((1.0 - abar).sqrt() as f32);
    }
    (a, b)
}

#[test]
fn ddpm_q_sample_matches_reference() {
    let ctx = ctx();
    let (sab, somab) = schedule(1000);
    let tsab = ctx.upload(&[1000], &sab).unwrap();
    let tsomab = ctx.upload(&[1000], &somab).unwrap();
    // batch 1, odd per-sample sizes, channels not divisible by 4, t at both ends and out of range
    for (shape, ts) in [
        (vec![1usize, 3, 5, 7], vec![0.0f32]),
        (vec![3, 1, 17], vec![999.0, 1.0, 500.0]),
        (vec![4, 3, 9, 11], vec![0.0, 999.0, 1234.0, -3.0]),
    ] {
        let n: usize = shape.iter().product();
        let x0 = rand_vec(n, n as u64);
        let tx0 = ctx.upload(&shape, &x0).unwrap();
        let tt = ctx.upload(&[ts.len()], &ts).unwrap();
        let (xt, eps) = ops::q_sample(ctx, &tx0, &tt, &tsab, &tsomab, 42, 7).unwrap();
        let (xt, eps) = (ctx.read(&xt).unwrap(), ctx.read(&eps).unwrap());
        let (want_xt, want_eps) = rf::q_sample(&to_f64(&x0), &to_f64(&ts), &to_f64(&sab), &to_f64(&somab), 42, 7);
        // eps is the generator's output: bit-identical.
        assert_eq!(eps, want_eps.iter().map(|&e| e as f32).collect::<Vec<_>>());
        // Two products and a sum in f32 (possibly fused): a few ulps of |x_t| <= ~6.
        assert_close(&format!("q_sample {shape:?}"), &xt, &want_xt, 2e-6, 1e-6);
    }
}

#[test]
fn ddpm_q_sample_in_pieces_equals_whole_batch() {
    // Gradient accumulation draws a batch in micro-batches: with `first` = the elements before
    // each piece, the pieces get exactly the whole batch's noise and x_t.
    let ctx = ctx();
    let (sab, somab) = schedule(50);
    let tsab = ctx.upload(&[50], &sab).unwrap();
    let tsomab = ctx.upload(&[50], &somab).unwrap();
    let (b, per) = (5usize, 3 * 7 * 5);
    let x0 = rand_vec(b * per, 3);
    let ts = [4.0f32, 49.0, 0.0, 17.0, 30.0];
    let whole = ops::q_sample(
        ctx,
        &ctx.upload(&[b, 3, 7, 5], &x0).unwrap(),
        &ctx.upload(&[b], &ts).unwrap(),
        &tsab,
        &tsomab,
        9,
        2,
    )
    .unwrap();
    let (want_xt, want_eps) = (ctx.read(&whole.0).unwrap(), ctx.read(&whole.1).unwrap());
    let (mut got_xt, mut got_eps) = (Vec::new(), Vec::new());
    for (lo, hi) in [(0usize, 2usize), (2, 3), (3, 5)] {
        let (xt, eps) = ops::q_sample_at(
            ctx,
            &ctx.upload(&[hi - lo, 3, 7, 5], &x0[lo * per..hi * per]).unwrap(),
            &ctx.upload(&[hi - lo], &ts[lo..hi]).unwrap(),
            &tsab,
            &tsomab,
            9,
            2,
            (lo * per) as u64,
        )
        .unwrap();
        got_xt.extend(ctx.read(&xt).unwrap());
        got_eps.extend(ctx.read(&eps).unwrap());
    }
    assert_eq!(got_eps, want_eps);
    assert_eq!(got_xt, want_xt);
    // and a different offset gives different noise
    let (_, other) = ops::q_sample_at(
        ctx,
        &ctx.upload(&[1, 3, 7, 5], &x0[..per]).unwrap(),
        &ctx.upload(&[1], &ts[..1]).unwrap(),
        &tsab,
        &tsomab,
        9,
        2,
        1,
    )
    .unwrap();
    assert_ne!(ctx.read(&other).unwrap(), want_eps[..per]);
    // counter index first + i follows the reference generator
    assert_eq!(ctx.read(&other).unwrap()[0], random::normal(9, 2, 1));
}

#[test]
fn ddpm_step_and_axpbz_match_reference() {
    let ctx = ctx();
    for (n, sigma) in [(1usize, 0.3f32), (7, 0.0), (3 * 17 * 19, 0.05), (65_539, 1.0)] {
        let x = rand_vec(n, 1 + n as u64);
        let e = rand_vec(n, 2 + n as u64);
        let tx = ctx.upload(&[n], &x).unwrap();
        let te = ctx.upload(&[n], &e).unwrap();
        let step = DdpmStep {
            coef_x: 1.0101,
            coef_eps: 0.0204,
            sigma,
        };
        let got = ctx.read(&ops::ddpm_step(ctx, &tx, &te, &step, 3, 11).unwrap()).unwrap();
        let want = rf::ddpm_step(
            &to_f64(&x),
            &to_f64(&e),
            step.coef_x as f64,
            step.coef_eps as f64,
            sigma as f64,
            3,
            11,
        );
        // Three products and two sums in f32, possibly fused: a few ulps of values <= ~6.
        assert_close(&format!("ddpm_step n={n} sigma={sigma}"), &got, &want, 2e-6, 1e-6);
        let got = ctx
            .read(&ops::axpbz(ctx, &tx, &te, -0.5, 2.0, sigma, 8, 0).unwrap())
            .unwrap();
        let want = rf::axpbz(&to_f64(&x), &to_f64(&e), -0.5, 2.0, sigma as f64, 8, 0);
        // as above
        assert_close(&format!("axpbz n={n} sigma={sigma}"), &got, &want, 2e-6, 1e-6);
    }
}

#[test]
fn ddpm_step_noise_is_the_random_stream() {
    // With coef_x = coef_eps = 0 the update is σ·z exactly: z is randn(seed, stream).
    let ctx = ctx();
    let x = ctx.upload(&[300], &rand_vec(300, 5)).unwrap();
    let step = DdpmStep {
        coef_x: 0.0,
        coef_eps: 0.0,
        sigma: 1.0,
    };
    let got = ctx.read(&ops::ddpm_step(ctx, &x, &x, &step, 17, 4).unwrap()).unwrap();
    let want: Vec<f32> = (0..300).map(|i| random::normal(17, 4, i)).collect();
    assert_eq!(got, want);
}

#[test]
fn ddpm_shape_errors() {
    let ctx = ctx();
    let x = ctx.upload(&[2, 3], &[0.0; 6]).unwrap();
    let e = ctx.upload(&[3, 2], &[0.0; 6]).unwrap();
    let err = ops::axpbz(ctx, &x, &e, 1.0, 1.0, 0.0, 0, 0).unwrap_err().to_string();
    assert!(err.contains("[2, 3]") && err.contains("[3, 2]"), "{err}");
    let t = ctx.upload(&[3], &[0.0; 3]).unwrap();
    let sched = ctx.upload(&[10], &[0.5; 10]).unwrap();
    let err = ops::q_sample(ctx, &x, &t, &sched, &sched, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[2]") && err.contains("[3]"), "{err}");
}

#[test]
fn ddpm_sampler_update_matches_reference() {
    let ctx = ctx();
    // odd sizes; with and without clipping, multistep term and noise
    for (case, &n) in [1usize, 7, 3 * 5 * 11, 1031].iter().enumerate() {
        let x = rand_vec(n, 70 + case as u64)
            .iter()
            .map(|v| v * 3.0)
            .collect::<Vec<_>>();
        let e = rand_vec(n, 80 + case as u64);
        let prev = rand_vec(n, 90 + case as u64);
        let (tx, te, tp) = (
            ctx.upload(&[n], &x).unwrap(),
            ctx.upload(&[n], &e).unwrap(),
            ctx.upload(&[n], &prev).unwrap(),
        );
        for (clip, use_prev, sigma) in [
            (false, false, 0.0f32),
            (true, false, 0.3),
            (false, true, 0.0),
            (true, true, 0.7),
        ] {
            let c = ops::SamplerCoefs {
                s_x: 1.3,
                s_e: 0.8,
                clip,
                c_x: 0.9,
                c_x0: 0.4,
                c_e: -0.2,
                c_prev: if use_prev { -0.15 } else { 0.0 },
                sigma,
                sigma_v: 0.0,
            };
            let (out, x0) = ops::sampler_update(ctx, &tx, &te, use_prev.then_some(&tp), &c, 11, 3).unwrap();
            let (want, want_x0) = rf::sampler_update(
                &to_f64(&x),
                &to_f64(&e),
                use_prev.then_some(&to_f64(&prev)[..]),
                (1.3f32 as f64, 0.8f32 as f64, clip),
                (0.9f32 as f64, 0.4f32 as f64, -0.2f32 as f64, c.c_prev as f64),
                sigma as f64,
                11,
                3,
            );
            // a handful of f32 roundings of O(1)–O(4) values
            assert_close("sampler_update out", &ctx.read(&out).unwrap(), &want, 2e-6, 2e-6);
            assert_close("sampler_update x0", &ctx.read(&x0).unwrap(), &want_x0, 2e-6, 2e-6);
            // the same step with the noise given instead of drawn
            let z = rand_vec(n, 100 + case as u64);
            let tz = ctx.upload(&[n], &z).unwrap();
            let (out, x0) = ops::sampler_update_with_noise(ctx, &tx, &te, use_prev.then_some(&tp), &c, &tz).unwrap();
            let (want, want_x0) = rf::sampler_update_with_noise(
                &to_f64(&x),
                &to_f64(&e),
                use_prev.then_some(&to_f64(&prev)[..]),
                (1.3f32 as f64, 0.8f32 as f64, clip),
                (0.9f32 as f64, 0.4f32 as f64, -0.2f32 as f64, c.c_prev as f64),
                sigma as f64,
                &to_f64(&z),
            );
            assert_close(
                "sampler_update_with_noise out",
                &ctx.read(&out).unwrap(),
                &want,
                2e-6,
                2e-6,
            );
            assert_close(
                "sampler_update_with_noise x0",
                &ctx.read(&x0).unwrap(),
                &want_x0,
                2e-6,
                2e-6,
            );
        }
    }
}

#[test]
fn ddpm_sampler_update_needs_previous_x0_for_multistep() {
    let ctx = ctx();
    let x = ctx.zeros(&[4], "x").unwrap();
    let c = ops::SamplerCoefs {
        c_prev: 0.5,
        ..Default::default()
    };
    assert!(ops::sampler_update(ctx, &x, &x, None, &c, 0, 0).is_err());
    let bad = ctx.zeros(&[5], "bad").unwrap();
    let err = ops::sampler_update(ctx, &x, &bad, None, &ops::SamplerCoefs::default(), 0, 0).unwrap_err();
    assert!(err.to_string().contains("[5]"), "{err}");
    let err = ops::sampler_update_with_noise(ctx, &x, &x, None, &ops::SamplerCoefs::default(), &bad).unwrap_err();
    assert!(err.to_string().contains("noise"), "{err}");
}

#[test]
fn ddpm_q_sample_targets_match_reference() {
    // x₀ and v targets: the same x_t as q_sample (bit for bit), the target from q_sample_v's
    // reference; the reference's v is the definition √ᾱ ε − √(1−ᾱ) x₀ with q_sample's ε, and
    // Prediction::target computes the same numbers.
    use ddpm_wgpu::diffusion::Prediction;
    let ctx = ctx();
    let (sab, somab) = schedule(1000);
    let tsab = ctx.upload(&[1000], &sab).unwrap();
    let tsomab = ctx.upload(&[1000], &somab).unwrap();
    let (sab64, somab64) = (to_f64(&sab), to_f64(&somab));
    for (shape, ts, first) in [
        (vec![1usize, 3, 5, 7], vec![0.0f32], 0u64),
        (vec![3, 1, 17], vec![999.0, 1.0, 500.0], 0),
        (vec![4, 3, 9, 11], vec![0.0, 999.0, 1234.0, -3.0], 0),
        (vec![2, 2, 3, 3], vec![7.0, 640.0], 36),
    ] {
        let n: usize = shape.iter().product();
        let x0 = rand_vec(n, 5 + n as u64);
        let tx0 = ctx.upload(&shape, &x0).unwrap();
        let tt = ctx.upload(&[ts.len()], &ts).unwrap();
        let (xt_eps, eps) = ops::q_sample_at(ctx, &tx0, &tt, &tsab, &tsomab, 42, 7, first).unwrap();
        let xt_eps = ctx.read(&xt_eps).unwrap();
        let eps = ctx.read(&eps).unwrap();
        for prediction in [Prediction::Epsilon, Prediction::Sample, Prediction::V] {
            let (xt, target) =
                ops::q_sample_target_at(ctx, &tx0, &tt, &tsab, &tsomab, 42, 7, first, prediction).unwrap();
            let (xt, target) = (ctx.read(&xt).unwrap(), ctx.read(&target).unwrap());
            assert_eq!(
                xt, xt_eps,
                "{prediction:?} {shape:?}: x_t must not depend on the target"
            );
            match prediction {
                Prediction::Epsilon => assert_eq!(target, eps),
                Prediction::Sample => assert_eq!(target, x0),
                Prediction::V => {
                    // The reference with first = 0 (its stream starts at index 0): compare only
                    // the unshifted launches; the shifted one against the definition.
                    let per = n / ts.len();
                    let want: Vec<f64> = (0..n)
                        .map(|i| {
                            let t = (ts[i / per] as f64).clamp(0.0, 999.0) as usize;
                            let abar = sab64[t] * sab64[t];
                            // Prediction::target takes ᾱ; the tables hold f32 √ᾱ, √(1−ᾱ).
                            let v = Prediction::V.target(abar, x0[i] as f64, eps[i] as f64);
                            let direct = sab64[t] * eps[i] as f64 - somab64[t] * x0[i] as f64;
                            assert!((v - direct).abs() < 1e-6, "Prediction::target vs definition");
                            direct
                        })
                        .collect();
                    // two f32 products and a difference of values ≤ ~5: a few ulps
                    assert_close(&format!("v target {shape:?}"), &target, &want, 2e-6, 1e-6);
                    if first == 0 {
                        let (want_xt, want_v) = rf::q_sample_v(&to_f64(&x0), &to_f64(&ts), &sab64, &somab64, 42, 7);
                        assert_close(&format!("q_sample_v x_t {shape:?}"), &xt, &want_xt, 2e-6, 1e-6);
                        assert_close(&format!("q_sample_v v {shape:?}"), &target, &want_v, 2e-6, 1e-6);
                    }
                }
            }
        }
    }
}

#[test]
fn ddpm_sampler_update_learned_variance_matches_reference() {
    // Model output [B, 2·C, H, W]: the kernel reads the first C channels of each item as the
    // prediction and the last C as v, σ_i = σ·exp(σ_v·v_i). Odd sizes, batch 1 and 3.
    let ctx = ctx();
    for (case, shape) in [vec![1usize, 3, 5, 7], vec![3, 2, 3, 5]].into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let mut out_shape = shape.clone();
        out_shape[1] *= 2;
        let x = rand_vec(n, 21 + case as u64);
        let out: Vec<f32> = rand_vec(2 * n, 31 + case as u64).iter().map(|v| 1.2 * v).collect();
        let (e, v) = rf::split_channels(&to_f64(&out), shape[0]);
        let tx = ctx.upload(&shape, &x).unwrap();
        let tout = ctx.upload(&out_shape, &out).unwrap();
        for (sigma, sigma_v, clip) in [(0.12f32, 0.9f32, true), (0.0, 0.0, false), (0.3, 0.0, false)] {
            let c = ops::SamplerCoefs {
                s_x: 1.3,
                s_e: 0.8,
                clip,
                c_x: 0.9,
                c_x0: 0.4,
                c_e: -0.2,
                c_prev: 0.0,
                sigma,
                sigma_v,
            };
            let s = (1.3f32 as f64, 0.8f32 as f64, clip);
            let cs = (0.9f32 as f64, 0.4f32 as f64, -0.2f32 as f64, 0.0);
            let sv = (sigma as f64, sigma_v as f64);
            let (got, got_x0) = ops::sampler_update(ctx, &tx, &tout, None, &c, 5, 9).unwrap();
            let (want, want_x0) = rf::sampler_update_learned(&to_f64(&x), &e, &v, None, s, cs, sv, 5, 9);
            // as the plain kernel, plus exp() of |σ_v·v| ≤ 1.1 in f32 (a few ulps)
            assert_close(
                &format!("learned {shape:?} σ {sigma}"),
                &ctx.read(&got).unwrap(),
                &want,
                3e-6,
                3e-6,
            );
            assert_close(
                &format!("learned x0 {shape:?}"),
                &ctx.read(&got_x0).unwrap(),
                &want_x0,
                2e-6,
                2e-6,
            );
            let z = rand_vec(n, 41 + case as u64);
            let tz = ctx.upload(&shape, &z).unwrap();
            let (got, _) = ops::sampler_update_with_noise(ctx, &tx, &tout, None, &c, &tz).unwrap();
            let (want, _) = rf::sampler_update_learned_with_noise(&to_f64(&x), &e, &v, None, s, cs, sv, &to_f64(&z));
            assert_close(
                &format!("learned given noise {shape:?}"),
                &ctx.read(&got).unwrap(),
                &want,
                3e-6,
                3e-6,
            );
            if sigma_v == 0.0 {
                // a fixed variance with a 2·C output ignores v: the plain step on the first C
                let e32: Vec<f32> = e.iter().map(|&v| v as f32).collect();
                let te = ctx.upload(&shape, &e32).unwrap();
                let (plain, _) = ops::sampler_update(ctx, &tx, &te, None, &c, 5, 9).unwrap();
                let (split, _) = ops::sampler_update(ctx, &tx, &tout, None, &c, 5, 9).unwrap();
                assert_eq!(ctx.read(&plain).unwrap(), ctx.read(&split).unwrap());
            }
        }
        // σ_v ≠ 0 without the variance channels is refused
        let c = ops::SamplerCoefs {
            sigma: 0.1,
            sigma_v: 0.5,
            ..Default::default()
        };
        let err = ops::sampler_update(ctx, &tx, &tx, None, &c, 0, 0).unwrap_err();
        assert!(err.to_string().contains("2·C"), "{err}");
    }
}
