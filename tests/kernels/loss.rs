// GPU loss kernels vs the CPU reference.
use crate::common::{assert_close, ctx, rand_vec, to_f64};
use ddpm_wgpu::{ops::loss, reference::loss as rf, Error};

// 1, primes, around one reduction chunk, and more than 65,535·256 elements (2-D grid stages).
const LENGTHS: [usize; 7] = [1, 2, 13, 509, 16_411, 100_003, 65_535 * 256 + 7];

#[test]
fn loss_sum_and_mse_awkward_lengths() {
    let ctx = ctx();
    for (i, &n) in LENGTHS.iter().enumerate() {
        // offset data: a naive running f32 sum would drift visibly at 16M elements
        let x: Vec<f32> = rand_vec(n, i as u64).iter().map(|v| v + 0.25).collect();
        let t = rand_vec(n, 50 + i as u64);
        let (x64, t64) = (to_f64(&x), to_f64(&t));
        let tx = ctx.upload(&[n], &x).unwrap();
        let tt = ctx.upload(&[n], &t).unwrap();
        let s = loss::sum(ctx, &tx).unwrap();
        assert_eq!(s.shape(), &[1]);
        // tree sum in f32: relative error ~ eps·log2(n) of Σ|x| (<= 1.25·n)
        let tol = 1e-6 * 1.25 * n as f64;
        assert_close(
            &format!("sum n={n}"),
            &ctx.read(&s).unwrap(),
            &[rf::sum(&x64)],
            tol,
            1e-6,
        );
        let m = loss::mse_loss(ctx, &tx, &tt).unwrap();
        assert_eq!(m.shape(), &[1]);
        // mean of non-negative terms: relative error ~ eps·log2(n)
        assert_close(
            &format!("mse n={n}"),
            &ctx.read(&m).unwrap(),
            &[rf::mse_loss(&x64, &t64)],
            0.0,
            1e-5,
        );
        if n < 1_000_000 {
            let g = loss::mse_loss_backward(ctx, &tx, &tt, 3.0).unwrap();
            // one subtraction and one product: a few ulps
            assert_close(
                &format!("mse grad n={n}"),
                &ctx.read(&g).unwrap(),
                &rf::mse_loss_backward(&x64, &t64, 3.0),
                1e-12,
                1e-6,
            );
        }
    }
}

#[test]
fn loss_mse_grad_uses_the_2d_grid() {
    let ctx = ctx();
    let n = 65_535 * 256 + 7;
    let p = rand_vec(n, 7);
    let tp = ctx.upload(&[n], &p).unwrap();
    let tt = ctx.zeros(&[n], "zeros").unwrap();
    let g = ctx.read(&loss::mse_loss_backward(ctx, &tp, &tt, 1.0).unwrap()).unwrap();
    // one product of an exact scale: a few ulps
    assert_close(
        "mse grad 2-D grid",
        &g,
        &rf::mse_loss_backward(&to_f64(&p), &vec![0.0; n], 1.0),
        1e-15,
        1e-6,
    );
}

#[test]
fn loss_reference_backward_matches_finite_differences() {
    let p = to_f64(&rand_vec(11, 1));
    let t = to_f64(&rand_vec(11, 2));
    let g = rf::mse_loss_backward(&p, &t, 0.5);
    let mut q = p.clone();
    for i in 0..p.len() {
        q[i] = p[i] + 1e-6;
        let hi = rf::mse_loss(&q, &t);
        q[i] = p[i] - 1e-6;
        let lo = rf::mse_loss(&q, &t);
        q[i] = p[i];
        let num = 0.5 * (hi - lo) / 2e-6;
        // central differences in f64: truncation ~1e-12, cancellation ~1e-10
        assert!((g[i] - num).abs() <= 1e-8, "[{i}] analytic {} vs numeric {num}", g[i]);
    }
}

#[test]
fn loss_shape_errors() {
    let ctx = ctx();
    let a = ctx.upload(&[2, 3], &[0.0; 6]).unwrap();
    let b = ctx.upload(&[6], &[0.0; 6]).unwrap();
    let err = loss::mse_loss(ctx, &a, &b).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(
        err.to_string().contains("[2, 3]") && err.to_string().contains("[6]"),
        "{err}"
    );
    assert!(matches!(
        loss::mse_loss_backward(ctx, &a, &b, 1.0),
        Err(Error::Shape { .. })
    ));
}
