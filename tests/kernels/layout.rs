// GPU layout kernels vs the CPU reference. Layout ops only move data: results must be exact.
use crate::common::{assert_close, ctx, rand_vec, to_f64};
use ddpm_wgpu::{ops::layout as ly, reference::layout as rf, Error};

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

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

fn assert_grad(name: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}");
    // Central differences in f64 with eps 1e-6 of a linear map: cancellation ~1e-10.
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
            "{name}[{i}]: analytic {g} vs numeric {w}"
        );
    }
}

#[test]
fn layout_reference_backward_matches_finite_differences() {
    let (n, c, h, w) = (2, 3, 2, 3);
    let x = to_f64(&rand_vec(n * c * h * w, 1));
    let r = to_f64(&rand_vec(n * c * 4 * h * w, 2));
    let num = numeric_grad(&x, |v| dot(&rf::upsample_nearest2x(v, n, c, h, w), &r));
    assert_grad("upsample", &rf::upsample_nearest2x_backward(&r, n, c, h, w), &num);
    // concat's backward is split: dL/da, dL/db = split(r)
    let (ca, cb, hw) = (2, 3, 5);
    let a = to_f64(&rand_vec(n * ca * hw, 3));
    let b = to_f64(&rand_vec(n * cb * hw, 4));
    let r = to_f64(&rand_vec(n * (ca + cb) * hw, 5));
    let (ra, rb) = rf::split_channels(&r, n, ca + cb, ca, hw);
    assert_grad(
        "concat a",
        &ra,
        &numeric_grad(&a, |v| dot(&rf::concat_channels(v, &b, n, ca, cb, hw), &r)),
    );
    assert_grad(
        "concat b",
        &rb,
        &numeric_grad(&b, |v| dot(&rf::concat_channels(&a, v, n, ca, cb, hw), &r)),
    );
    // nchw_to_nlc's backward is nlc_to_nchw
    let x = to_f64(&rand_vec(n * c * hw, 6));
    let r = to_f64(&rand_vec(n * c * hw, 7));
    let num = numeric_grad(&x, |v| dot(&rf::nchw_to_nlc(v, n, c, hw), &r));
    assert_grad("nchw_to_nlc", &rf::nlc_to_nchw(&r, n, hw, c), &num);
}

#[test]
fn layout_concat_split_awkward_shapes() {
    let ctx = ctx();
    // (n, ca, cb, spatial): batch 1, one channel, H·W = 1, primes, 3-D, > 65,535·256 elements
    let cases: [(usize, usize, usize, &[usize]); 6] = [
        (1, 1, 1, &[1, 1]),
        (2, 3, 5, &[7, 11]),
        (3, 1, 6, &[1, 1]),
        (1, 13, 2, &[37]),
        (5, 4, 3, &[17, 19]),
        (1, 2, 1, &[2049, 2731]),
    ];
    for (i, &(n, ca, cb, s)) in cases.iter().enumerate() {
        let hw: usize = s.iter().product();
        let sh = |c: usize| [&[n, c][..], s].concat();
        let a = rand_vec(n * ca * hw, 10 + i as u64);
        let b = rand_vec(n * cb * hw, 20 + i as u64);
        let ta = ctx.upload(&sh(ca), &a).unwrap();
        let tb = ctx.upload(&sh(cb), &b).unwrap();
        let cat = ly::concat_channels(ctx, &ta, &tb).unwrap();
        assert_eq!(cat.shape(), sh(ca + cb));
        let want = rf::concat_channels(&to_f64(&a), &to_f64(&b), n, ca, cb, hw);
        assert_close(
            &format!("concat {:?}", sh(ca + cb)),
            &ctx.read(&cat).unwrap(),
            &want,
            0.0,
            0.0,
        );
        let (xa, xb) = ly::split_channels(ctx, &cat, ca).unwrap();
        assert_eq!((xa.shape(), xb.shape()), (&sh(ca)[..], &sh(cb)[..]));
        let (wa, wb) = rf::split_channels(&want, n, ca + cb, ca, hw);
        assert_close("split a", &ctx.read(&xa).unwrap(), &wa, 0.0, 0.0);
        assert_close("split b", &ctx.read(&xb).unwrap(), &wb, 0.0, 0.0);
    }
}

#[test]
fn layout_upsample_awkward_shapes() {
    let ctx = ctx();
    // W % 4 == 0 in the last three: the vec4 kernels (rows of one and of three vec4s, one row)
    let shapes: [[usize; 4]; 8] = [
        [1, 1, 1, 1],
        [2, 3, 5, 7],
        [1, 6, 1, 13],
        [3, 2, 11, 1],
        [1, 4, 1031, 1031],
        [2, 3, 5, 4],
        [1, 2, 3, 12],
        [3, 1, 1, 8],
    ];
    for (i, &[n, c, h, w]) in shapes.iter().enumerate() {
        let x = rand_vec(n * c * h * w, 30 + i as u64);
        let tx = ctx.upload(&[n, c, h, w], &x).unwrap();
        let up = ly::upsample_nearest2x(ctx, &tx).unwrap();
        assert_eq!(up.shape(), &[n, c, 2 * h, 2 * w]);
        let want = rf::upsample_nearest2x(&to_f64(&x), n, c, h, w);
        assert_close(
            &format!("upsample {:?}", [n, c, h, w]),
            &ctx.read(&up).unwrap(),
            &want,
            0.0,
            0.0,
        );
        let dy = rand_vec(n * c * 4 * h * w, 40 + i as u64);
        let tdy = ctx.upload(up.shape(), &dy).unwrap();
        let dx = ly::upsample_nearest2x_backward(ctx, &tdy).unwrap();
        assert_eq!(dx.shape(), &[n, c, h, w]);
        // four-term f32 sums of values in [-1, 1): one or two roundings
        assert_close(
            "upsample backward",
            &ctx.read(&dx).unwrap(),
            &rf::upsample_nearest2x_backward(&to_f64(&dy), n, c, h, w),
            5e-7,
            0.0,
        );
    }
}

#[test]
fn layout_transposes_awkward_shapes() {
    let ctx = ctx();
    // sizes below, at and not a multiple of the 16x16 tile; C = 1; L = 1; C and L multiples of
    // 4 (the 4×4-block kernel on CPU adapters: square, C ≠ L, one block, over a 64-block
    // workgroup)
    let shapes: [[usize; 4]; 9] = [
        [1, 1, 1, 1],
        [2, 3, 5, 7],
        [1, 16, 4, 4],
        [3, 17, 1, 33],
        [1, 1, 9, 9],
        [2, 70, 1, 1],
        [3, 8, 2, 6],
        [1, 4, 2, 2],
        [2, 64, 8, 10],
    ];
    for (i, &[n, c, h, w]) in shapes.iter().enumerate() {
        let x = rand_vec(n * c * h * w, 50 + i as u64);
        let tx = ctx.upload(&[n, c, h, w], &x).unwrap();
        let t = ly::nchw_to_nlc(ctx, &tx).unwrap();
        assert_eq!(t.shape(), &[n, h * w, c]);
        let want = rf::nchw_to_nlc(&to_f64(&x), n, c, h * w);
        assert_close(
            &format!("nchw_to_nlc {:?}", [n, c, h, w]),
            &ctx.read(&t).unwrap(),
            &want,
            0.0,
            0.0,
        );
        let back = ly::nlc_to_nchw(ctx, &t, h, w).unwrap();
        assert_eq!(back.shape(), &[n, c, h, w]);
        assert_close("nlc_to_nchw", &ctx.read(&back).unwrap(), &to_f64(&x), 0.0, 0.0);
    }
    // 65,536 tiles (> 65,535): needs the 2-D grid
    let (n, c, hw) = (1, 1, 1025 * 1023);
    let x = rand_vec(n * c * hw, 60);
    let tx = ctx.upload(&[n, c, 1025, 1023], &x).unwrap();
    let t = ly::nchw_to_nlc(ctx, &tx).unwrap();
    assert_close(
        "nchw_to_nlc 2-D grid",
        &ctx.read(&t).unwrap(),
        &rf::nchw_to_nlc(&to_f64(&x), n, c, hw),
        0.0,
        0.0,
    );
}

#[test]
fn layout_shape_errors() {
    let ctx = ctx();
    let a = ctx.upload(&[2, 3, 4, 4], &[0.0; 96]).unwrap();
    let b = ctx.upload(&[2, 3, 4, 5], &[0.0; 120]).unwrap();
    let err = ly::concat_channels(ctx, &a, &b).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(
        err.to_string().contains("[2, 3, 4, 4]") && err.to_string().contains("[2, 3, 4, 5]"),
        "{err}"
    );
    assert!(matches!(
        ly::split_channels(ctx, &a, 3),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        ly::upsample_nearest2x_backward(ctx, &b),
        Err(Error::Shape { .. })
    ));
    let flat = ctx.upload(&[2, 48], &[0.0; 96]).unwrap();
    assert!(matches!(ly::upsample_nearest2x(ctx, &flat), Err(Error::Shape { .. })));
    let nlc = ctx.upload(&[2, 16, 3], &[0.0; 96]).unwrap();
    assert!(matches!(ly::nlc_to_nchw(ctx, &nlc, 4, 5), Err(Error::Shape { .. })));
}
