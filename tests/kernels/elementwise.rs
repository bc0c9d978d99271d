use crate::common::{assert_close, ctx, rand_vec, to_f64};
use ddpm_wgpu::{ops::elementwise as ew, reference::elementwise as rf, Error};

/// Central-difference gradient of `f` at `x` (eps 1e-6, f64).
fn numeric_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let v = x[i];
            xp[i] = v + 1e-6;
            let hi = f(&xp);
            xp[i] = v - 1e-6;
            let lo = f(&xp);
            xp[i] = v;
            (hi - lo) / 2e-6
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn assert_grad(name: &str, got: &[f64], want: &[f64]) {
    // Central differences in f64 with eps 1e-6: truncation ~1e-12, cancellation ~1e-10.
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
            "{name}[{i}]: analytic {g} vs numeric {w}"
        );
    }
}

// 1, a prime, not a multiple of 256, and one that needs a 2-D grid (> 65,535 workgroups).
const LENGTHS: [usize; 5] = [1, 7, 257, 1000, 65_535 * 256 + 3];

#[test]
fn elementwise_axpby_awkward_lengths() {
    let ctx = ctx();
    for (i, &n) in LENGTHS.iter().enumerate() {
        let a = rand_vec(n, i as u64);
        let b = rand_vec(n, 100 + i as u64);
        let ta = ctx.upload(&[n], &a).unwrap();
        let tb = ctx.upload(&[n], &b).unwrap();
        let got = ctx.read(&ew::axpby(ctx, &ta, &tb, 0.5, -2.0).unwrap()).unwrap();
        // One rounding of each product and of the sum: a few ulps of values <= 2.5.
        assert_close(
            &format!("axpby n={n}"),
            &got,
            &rf::axpby(&to_f64(&a), &to_f64(&b), 0.5, -2.0),
            1e-6,
            1e-6,
        );
    }
}

#[test]
fn elementwise_axpby_shape_mismatch_is_an_error() {
    let ctx = ctx();
    let a = ctx.upload(&[2, 3], &[0.0; 6]).unwrap();
    let b = ctx.upload(&[3, 2], &[0.0; 6]).unwrap();
    let err = ew::axpby(ctx, &a, &b, 1.0, 1.0).unwrap_err().to_string();
    assert!(err.contains("[2, 3]") && err.contains("[3, 2]"), "{err}");
}

#[test]
fn elementwise_unary_and_binary_ops() {
    let ctx = ctx();
    // The 2-D grid index (shared by every entry point) is covered by the axpby test.
    for (i, &n) in LENGTHS[..4].iter().enumerate() {
        let seed = 10 * i as u64;
        // inputs in [-12, 12): covers σ's saturated tails
        let x: Vec<f32> = rand_vec(n, seed).iter().map(|v| 12.0 * v).collect();
        let y = rand_vec(n, seed + 1);
        let (x64, y64) = (to_f64(&x), to_f64(&y));
        let tx = ctx.upload(&[n], &x).unwrap();
        let ty = ctx.upload(&[n], &y).unwrap();
        let read = |t: ddpm_wgpu::Tensor| ctx.read(&t).unwrap();
        // one f32 rounding of values up to 12
        assert_close(
            "mul",
            &read(ew::mul(ctx, &tx, &ty).unwrap()),
            &rf::mul(&x64, &y64),
            1e-6,
            1e-6,
        );
        assert_close(
            "scale",
            &read(ew::scale(ctx, &tx, -0.3).unwrap()),
            &rf::scale(&x64, -0.3),
            1e-6,
            1e-6,
        );
        // exp and division: a few ulps relative
        assert_close("silu", &read(ew::silu(ctx, &tx).unwrap()), &rf::silu(&x64), 1e-6, 1e-5);
        assert_close(
            "silu_backward",
            &read(ew::silu_backward(ctx, &tx, &ty).unwrap()),
            &rf::silu_backward(&x64, &y64),
            1e-6,
            1e-5,
        );
        // acc += s·x, then acc += x: two roundings of values up to ~13
        let acc = ctx.duplicate(&ty, "acc").unwrap();
        ew::add_scaled_inplace(ctx, &acc, &tx, 0.25).unwrap();
        ew::add_inplace(ctx, &acc, &tx).unwrap();
        assert_close(
            "add_scaled_inplace+add_inplace",
            &read(acc),
            &rf::axpby(&y64, &x64, 1.0, 1.25),
            2e-6,
            1e-6,
        );
        ew::fill(ctx, &tx, 0.75).unwrap();
        assert_close("fill", &read(tx), &vec![0.75; n], 0.0, 0.0); // exact
    }
}

#[test]
fn elementwise_silu_extremes_are_finite() {
    let ctx = ctx();
    // 8 values: the vec4 kernels (the scalar ones run the 1000-free lengths of the tests above)
    let x = [-1000.0f32, -100.0, -88.5, 0.0, 88.5, 1000.0, -1e30, 1e30];
    let tx = ctx.upload(&[8], &x).unwrap();
    let got = ctx.read(&ew::silu(ctx, &tx).unwrap()).unwrap();
    // silu(-large) underflows to -0; silu(large) = x
    assert_close("silu extremes", &got, &rf::silu(&to_f64(&x)), 1e-30, 1e-6);
    let dy = ctx.upload(&[8], &[1.0; 8]).unwrap();
    let got = ctx.read(&ew::silu_backward(ctx, &tx, &dy).unwrap()).unwrap();
    assert_close(
        "silu' extremes",
        &got,
        &rf::silu_backward(&to_f64(&x), &[1.0; 8]),
        1e-30,
        1e-6,
    );
}

#[test]
fn elementwise_reference_backward_matches_finite_differences() {
    let x = to_f64(&rand_vec(13, 1)).iter().map(|v| 4.0 * v).collect::<Vec<_>>();
    let r = to_f64(&rand_vec(13, 2));
    let num = numeric_grad(&x, |v| dot(&rf::silu(v), &r));
    assert_grad("silu", &rf::silu_backward(&x, &r), &num);
    // add_channel_bias: x [2, 3, 5], b [2, 3]; dL/db = channel_sum(r), dL/dx = r
    let (hw, xs, b) = (5, to_f64(&rand_vec(30, 3)), to_f64(&rand_vec(6, 4)));
    let r = to_f64(&rand_vec(30, 5));
    let num_b = numeric_grad(&b, |v| dot(&rf::add_channel_bias(&xs, v, hw), &r));
    assert_grad("channel bias db", &rf::channel_sum(&r, hw), &num_b);
    let num_x = numeric_grad(&xs, |v| dot(&rf::add_channel_bias(v, &b, hw), &r));
    assert_grad("channel bias dx", &r, &num_x);
}

#[test]
fn elementwise_channel_bias_and_sum_awkward_shapes() {
    let ctx = ctx();
    // batch 1, H·W = 1, primes, C not divisible by 4, 3-D, rows longer than one workgroup
    // chunk, and > 65,535 rows (2-D grid).
    let shapes: [&[usize]; 10] = [
        &[1, 1, 1, 1],
        &[1, 5, 1, 1],
        &[2, 3, 7, 11],
        &[3, 6, 37],
        &[1, 2, 257, 263],
        &[1, 1, 2049, 2053],
        &[66_000, 1, 3],
        // H·W % 4 == 0: the vec4 kernel (rows of 4 and of 12); [2, 2, 2]: n % 4 == 0 but rows
        // of 2 (scalar kernel)
        &[3, 5, 2, 2],
        &[2, 3, 12],
        &[2, 2, 2],
    ];
    for (i, shape) in shapes.iter().enumerate() {
        let (n, c) = (shape[0], shape[1]);
        let hw: usize = shape[2..].iter().product();
        let x = rand_vec(n * c * hw, 20 + i as u64);
        let b = rand_vec(n * c, 30 + i as u64);
        let tx = ctx.upload(shape, &x).unwrap();
        let tb = ctx.upload(&[n, c], &b).unwrap();
        let out = ew::add_channel_bias(ctx, &tx, &tb).unwrap();
        assert_eq!(out.shape(), *shape);
        // one rounding of a sum of values < 2
        assert_close(
            &format!("add_channel_bias {shape:?}"),
            &ctx.read(&out).unwrap(),
            &rf::add_channel_bias(&to_f64(&x), &to_f64(&b), hw),
            2e-7,
            1e-7,
        );
        let s = ew::channel_sum(ctx, &tx).unwrap();
        assert_eq!(s.shape(), &[n, c]);
        // f32 tree sums of hw values in [-1, 1): error ~ eps·sqrt(hw)·log(hw)
        assert_close(
            &format!("channel_sum {shape:?}"),
            &ctx.read(&s).unwrap(),
            &rf::channel_sum(&to_f64(&x), hw),
            1e-6 * (hw as f64).sqrt().max(1.0),
            1e-6,
        );
    }
}

#[test]
fn elementwise_shape_errors() {
    let ctx = ctx();
    let x = ctx.upload(&[2, 3, 2, 2], &[0.0; 24]).unwrap();
    let b = ctx.upload(&[3, 2], &[0.0; 6]).unwrap();
    let err = ew::add_channel_bias(ctx, &x, &b).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(
        err.to_string().contains("[2, 3]") && err.to_string().contains("[3, 2]"),
        "{err}"
    );
    assert!(matches!(ew::channel_sum(ctx, &b), Err(Error::Shape { .. })));
    assert!(matches!(ew::mul(ctx, &x, &b), Err(Error::Shape { .. })));
    assert!(matches!(ew::add_inplace(ctx, &x, &b), Err(Error::Shape { .. })));
    assert!(matches!(ew::silu_backward(ctx, &x, &b), Err(Error::Shape { .. })));
    assert!(matches!(
        ew::add_inplace(ctx, &x, &x),
        Err(Error::InvalidArgument { .. })
    ));
}
