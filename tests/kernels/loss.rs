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

// Rows × classes: one row, one class, a row count across workgroups, and a wide row.
const XENT_SHAPES: [(usize, usize); 5] = [(1, 1), (1, 10), (7, 10), (130, 3), (5, 257)];

#[test]
fn loss_softmax_cross_entropy_awkward_shapes() {
    let ctx = ctx();
    for (i, &(rows, k)) in XENT_SHAPES.iter().enumerate() {
        // logits up to ±40: exp without the max shift would overflow f32 at ±89
        let z: Vec<f32> = rand_vec(rows * k, 10 + i as u64).iter().map(|v| 40.0 * v).collect();
        let y: Vec<usize> = (0..rows).map(|r| (r * 7 + i) % k).collect();
        let yf: Vec<f32> = y.iter().map(|&v| v as f32).collect();
        let tz = ctx.upload(&[rows, k], &z).unwrap();
        let ty = ctx.upload(&[rows], &yf).unwrap();
        let out = loss::softmax_cross_entropy(ctx, &tz, &ty, 2.0).unwrap();
        let (want_loss, want_grad) = rf::softmax_cross_entropy(&to_f64(&z), &y, k, 2.0);
        assert_eq!(out.loss.shape(), &[1]);
        assert_eq!(out.dlogits.shape(), &[rows, k]);
        // f32 exp/log of shifted logits: ~1e-6 relative to the logit scale (40)
        assert_close(
            &format!("xent loss {rows}x{k}"),
            &ctx.read(&out.loss).unwrap(),
            &[want_loss],
            1e-4,
            1e-5,
        );
        assert_close(
            &format!("xent grad {rows}x{k}"),
            &ctx.read(&out.dlogits).unwrap(),
            &want_grad,
            1e-6,
            1e-4,
        );
        let per_row = ctx.read(&out.per_row).unwrap();
        let mean = per_row.iter().map(|&v| v as f64).sum::<f64>() / rows as f64;
        assert!(
            (mean - want_loss).abs() <= 1e-4 * (1.0 + want_loss.abs()),
            "{mean} vs {want_loss}"
        );
    }
}

#[test]
fn loss_softmax_cross_entropy_bad_label_is_nan_and_shapes_are_checked() {
    let ctx = ctx();
    let z = ctx.upload(&[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    for bad in [3.0, -1.0, 0.5] {
        let y = ctx.upload(&[2], &[0.0, bad]).unwrap();
        let out = loss::softmax_cross_entropy(ctx, &z, &y, 1.0).unwrap();
        let rows = ctx.read(&out.per_row).unwrap();
        assert!(rows[0].is_finite() && rows[1].is_nan(), "label {bad}: {rows:?}");
        assert!(ctx.read(&out.loss).unwrap()[0].is_nan());
    }
    let y3 = ctx.upload(&[3], &[0.0; 3]).unwrap();
    let err = loss::softmax_cross_entropy(ctx, &z, &y3, 1.0).err().unwrap();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let flat = ctx.upload(&[6], &[0.0; 6]).unwrap();
    assert!(matches!(
        loss::softmax_cross_entropy(ctx, &flat, &y3, 1.0),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn loss_softmax_cross_entropy_reference_matches_finite_differences() {
    let (rows, k) = (3, 5);
    let z = to_f64(&rand_vec(rows * k, 3))
        .iter()
        .map(|v| 3.0 * v)
        .collect::<Vec<_>>();
    let y = [4usize, 0, 2];
    let (_, g) = rf::softmax_cross_entropy(&z, &y, k, 0.5);
    let mut q = z.clone();
    for i in 0..z.len() {
        q[i] = z[i] + 1e-6;
        let hi = rf::softmax_cross_entropy(&q, &y, k, 0.5).0;
        q[i] = z[i] - 1e-6;
        let lo = rf::softmax_cross_entropy(&q, &y, k, 0.5).0;
        q[i] = z[i];
        let num = 0.5 * (hi - lo) / 2e-6;
        assert!((g[i] - num).abs() <= 1e-8, "[{i}] analytic {} vs numeric {num}", g[i]);
    }
}
