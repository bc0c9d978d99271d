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
        let (want_xt, want_eps) = rf::q_sample(
            &to_f64(&x0),
            &to_f64(&ts),
            &to_f64(&sab),
            &to_f64(&somab),
            42,
            7,
        );
        // eps is the generator's output: bit-identical.
        assert_eq!(eps, want_eps.iter().map(|&e| e as f32).collect::<Vec<_>>());
        // Two products and a sum in f32 (possibly fused): a few ulps of |x_t| <= ~6.
        assert_close(&format!("q_sample {shape:?}"), &xt, &want_xt, 2e-6, 1e-6);
    }
}

#[test]
fn ddpm_step_and_axpbz_match_reference() {
    let ctx = ctx();
    for (n, sigma) in [
        (1usize, 0.3f32),
        (7, 0.0),
        (3 * 17 * 19, 0.05),
        (65_539, 1.0),
    ] {
        let x = rand_vec(n, 1 + n as u64);
        let e = rand_vec(n, 2 + n as u64);
        let tx = ctx.upload(&[n], &x).unwrap();
        let te = ctx.upload(&[n], &e).unwrap();
        let step = DdpmStep {
            coef_x: 1.0101,
            coef_eps: 0.0204,
            sigma,
        };
        let got = ctx
            .read(&ops::ddpm_step(ctx, &tx, &te, &step, 3, 11).unwrap())
            .unwrap();
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
        assert_close(
            &format!("ddpm_step n={n} sigma={sigma}"),
            &got,
            &want,
            2e-6,
            1e-6,
        );
        let got = ctx
            .read(&ops::axpbz(ctx, &tx, &te, -0.5, 2.0, sigma, 8, 0).unwrap())
            .unwrap();
        let want = rf::axpbz(&to_f64(&x), &to_f64(&e), -0.5, 2.0, sigma as f64, 8, 0);
        // as above
        assert_close(
            &format!("axpbz n={n} sigma={sigma}"),
            &got,
            &want,
            2e-6,
            1e-6,
        );
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
    let got = ctx
        .read(&ops::ddpm_step(ctx, &x, &x, &step, 17, 4).unwrap())
        .unwrap();
    let want: Vec<f32> = (0..300).map(|i| random::normal(17, 4, i)).collect();
    assert_eq!(got, want);
}

#[test]
fn ddpm_shape_errors() {
    let ctx = ctx();
    let x = ctx.upload(&[2, 3], &[0.0; 6]).unwrap();
    let e = ctx.upload(&[3, 2], &[0.0; 6]).unwrap();
    let err = ops::axpbz(ctx, &x, &e, 1.0, 1.0, 0.0, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[2, 3]") && err.contains("[3, 2]"), "{err}");
    let t = ctx.upload(&[3], &[0.0; 3]).unwrap();
    let sched = ctx.upload(&[10], &[0.5; 10]).unwrap();
    let err = ops::q_sample(ctx, &x, &t, &sched, &sched, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[2]") && err.contains("[3]"), "{err}");
}
