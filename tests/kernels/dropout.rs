// GPU dropout vs the CPU reference (same Philox mask), and a gradient check of the reference.
use crate::common::{assert_close, ctx, rand_vec, to_f64};
use ddpm_wgpu::{ops::dropout as ops, reference::dropout as rf};

#[test]
fn dropout_forward_backward_match_reference() {
    let ctx = ctx();
    for (n, p, seed, stream) in [
        (1usize, 0.5f32, 1u64, 0u32),
        (7, 0.1, 2, 3),
        (1000, 0.5, u64::MAX, 9),
        (65_537, 0.9, 0x1234_5678_9abc, 1),
        (4099, 1.0, 5, 5),
        // n % 4 == 0: the vec4 kernel (1000 above too).
        (8192, 0.3, 7, 2),
    ] {
        let x = rand_vec(n, n as u64);
        let tx = ctx.upload(&[n], &x).unwrap();
        let y = ctx.read(&ops::dropout(ctx, &tx, p, seed, stream).unwrap()).unwrap();
        let dx = ctx
            .read(&ops::dropout_backward(ctx, &tx, p, seed, stream).unwrap())
            .unwrap();
        let want = rf::dropout(&to_f64(&x), p as f64, seed, stream);
        // The mask is exact; kept values are x·f32(1/(1-p)): two roundings.
        assert_close(&format!("dropout n={n} p={p}"), &y, &want, 0.0, 3e-7);
        let want_dx = rf::dropout_backward(&to_f64(&x), p as f64, seed, stream);
        assert_close(&format!("dropout_backward n={n} p={p}"), &dx, &want_dx, 0.0, 3e-7);
        if n >= 1000 {
            // The kept fraction is 1 - p within 5 binomial standard errors.
            let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
            let sd = ((p * (1.0 - p)) as f64 / n as f64).sqrt();
            assert!((kept - (1.0 - p as f64)).abs() <= 5.0 * sd + 1e-12, "kept {kept}");
        }
    }
}

#[test]
fn dropout_p0_is_identity() {
    let ctx = ctx();
    let x = rand_vec(513, 3);
    let tx = ctx.upload(&[513], &x).unwrap();
    let y = ctx.read(&ops::dropout(ctx, &tx, 0.0, 9, 9).unwrap()).unwrap();
    assert_eq!(y, x);
}

#[test]
fn dropout_reference_gradient_check() {
    let (n, p, seed, stream) = (37, 0.3, 11u64, 2u32);
    let x = to_f64(&rand_vec(n, 1));
    let r = to_f64(&rand_vec(n, 2));
    let loss = |x: &[f64]| -> f64 { rf::dropout(x, p, seed, stream).iter().zip(&r).map(|(a, b)| a * b).sum() };
    let analytic = rf::dropout_backward(&r, p, seed, stream);
    let eps = 1e-6;
    for i in 0..n {
        let mut xp = x.clone();
        xp[i] += eps;
        let mut xm = x.clone();
        xm[i] -= eps;
        let fd = (loss(&xp) - loss(&xm)) / (2.0 * eps);
        // Central differences of a linear function: only f64 cancellation error remains.
        assert!((fd - analytic[i]).abs() < 1e-8, "[{i}] fd {fd} vs {}", analytic[i]);
    }
}

#[test]
fn dropout_bad_probability_is_an_error() {
    let ctx = ctx();
    let x = ctx.upload(&[2], &[1.0, 2.0]).unwrap();
    for p in [-0.1f32, 1.5, f32::NAN] {
        let err = ops::dropout(ctx, &x, p, 0, 0).unwrap_err().to_string();
        assert!(err.contains("probability"), "{err}");
    }
}
