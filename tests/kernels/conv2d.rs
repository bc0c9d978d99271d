// GPU conv2d kernels vs the CPU reference.

use ddpm_wgpu::ops::conv2d::{conv2d, conv2d_backward, conv2d_backward_with, conv2d_with, Algo, Conv2dParams};
use ddpm_wgpu::reference::conv2d as cref;
use ddpm_wgpu::reference::conv2d::Conv2dDims;
use ddpm_wgpu::Error;

use crate::common::{assert_close, ctx, rand_vec, to_f64};

fn dims(n: usize, cin: usize, hw: (usize, usize), cout: usize, k: (usize, usize), p: Conv2dParams) -> Conv2dDims {
    Conv2dDims {
        n,
        cin,
        h: hw.0,
        w: hw.1,
        cout,
        kh: k.0,
        kw: k.1,
        stride: p.stride,
        pad: p.pad,
    }
}

/// Forward and full backward of one case on the GPU against the f64 reference.
/// Forward and backward of one case with every algorithm: the implicit GEMM, and the im2col
/// path where its shape condition (Ho·Wo % 4 == 0) holds; where it does not, asking for it must
/// be a typed error.
fn check_case(name: &str, d: Conv2dDims, with_bias: bool, seed: u64) {
    check_algo(name, d, with_bias, seed, Algo::Direct);
    let winograd = d.kh == 3 && d.kw == 3 && d.stride == 1 && d.pad == [1; 4] && d.cin.is_multiple_of(4);
    if winograd {
        check_algo(name, d, with_bias, seed, Algo::Winograd { window: 0 });
        check_algo(name, d, with_bias, seed, Algo::Winograd { window: 1 });
    }
    let pointwise = d.kh == 1
        && d.kw == 1
        && d.stride == 1
        && d.pad == [0; 4]
        && d.cin.is_multiple_of(4)
        && d.cout.is_multiple_of(4)
        && (d.h * d.w).is_multiple_of(4);
    if pointwise {
        check_algo(name, d, with_bias, seed, Algo::Pointwise);
        check_algo(name, d, with_bias, seed, Algo::Auto);
    } else {
        let ctx = ctx();
        let x = ctx.zeros(&[d.n, d.cin, d.h, d.w], "x").unwrap();
        let w = ctx.zeros(&[d.cout, d.cin, d.kh, d.kw], "w").unwrap();
        let p = Conv2dParams::asymmetric(d.stride, d.pad);
        let err = conv2d_with(ctx, Algo::Pointwise, &x, &w, None, p).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("1×1 kernel"),
            "{name}: {err}"
        );
        let dy = ctx.zeros(&[d.n, d.cout, d.out_hw().0, d.out_hw().1], "dy").unwrap();
        assert!(conv2d_backward_with(ctx, Algo::Pointwise, &x, &w, &dy, p, true).is_err());
    }
    let (ho, wo) = d.out_hw();
    if (ho * wo) % 4 == 0 {
        check_algo(name, d, with_bias, seed, Algo::Im2col { window: 0 });
        // Windows of one image, so that batches are split and dw accumulates across windows.
        check_algo(name, d, with_bias, seed, Algo::Im2col { window: 1 });
        if d.n >= 3 {
            // Windows of two images: the weight grad's batched per-image products are summed
            // and added across windows (the last one partial).
            check_algo(name, d, with_bias, seed, Algo::Im2col { window: 2 });
        }
    } else {
        let ctx = ctx();
        let x = ctx.zeros(&[d.n, d.cin, d.h, d.w], "x").unwrap();
        let w = ctx.zeros(&[d.cout, d.cin, d.kh, d.kw], "w").unwrap();
        let p = Conv2dParams::asymmetric(d.stride, d.pad);
        let err = conv2d_with(ctx, Algo::Im2col { window: 0 }, &x, &w, None, p).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("multiple of 4"),
            "{name}: {err}"
        );
    }
}

fn check_algo(name: &str, d: Conv2dDims, with_bias: bool, seed: u64, algo: Algo) {
    let name = &format!("{name} {algo:?}");
    let ctx = ctx();
    // Fresh buffers: a pooled buffer of the same size may still hold the previous algorithm's
    // (correct) result and hide a kernel that leaves part of its output unwritten.
    ctx.trim_pool();
    let p = Conv2dParams::asymmetric(d.stride, d.pad);
    let (ho, wo) = d.out_hw();
    assert_eq!(p.out_hw(d.h, d.w, d.kh, d.kw), (ho, wo), "{name}: out_hw");
    let xs = [d.n, d.cin, d.h, d.w];
    let ws = [d.cout, d.cin, d.kh, d.kw];
    let ys = [d.n, d.cout, ho, wo];
    let xh = rand_vec(xs.iter().product(), seed);
    let wh = rand_vec(ws.iter().product(), seed + 1);
    let bh = rand_vec(d.cout, seed + 2);
    let dyh = rand_vec(ys.iter().product(), seed + 3);
    let x = ctx.upload(&xs, &xh).unwrap();
    let w = ctx.upload(&ws, &wh).unwrap();
    let b = ctx.upload(&[d.cout], &bh).unwrap();
    let dy = ctx.upload(&ys, &dyh).unwrap();
    let (x64, w64, b64, dy64) = (to_f64(&xh), to_f64(&wh), to_f64(&bh), to_f64(&dyh));

    let y = conv2d_with(ctx, algo, &x, &w, with_bias.then_some(&b), p).unwrap();
    assert_eq!(y.shape(), &ys, "{name}: y shape");
    let want = cref::conv2d(&x64, &w64, with_bias.then_some(&b64[..]), &d);
    // f32 sums of at most a few hundred products of values in [-1, 1]: rounding stays < 1e-4.
    assert_close(&format!("{name} forward"), &ctx.read(&y).unwrap(), &want, 1e-4, 1e-4);

    let g = conv2d_backward_with(ctx, algo, &x, &w, &dy, p, true).unwrap();
    let dx = g.dx.expect("need_dx = true returns dx");
    assert_eq!(dx.shape(), &xs, "{name}: dx shape");
    assert_eq!(g.dw.shape(), &ws, "{name}: dw shape");
    assert_eq!(g.db.shape(), &[d.cout], "{name}: db shape");
    // Same reasoning as the forward: short f32 sums of products bounded by 1.
    let (atol, rtol) = (1e-4, 1e-4);
    assert_close(
        &format!("{name} dx"),
        &ctx.read(&dx).unwrap(),
        &cref::conv2d_backward_input(&dy64, &w64, &d),
        atol,
        rtol,
    );
    assert_close(
        &format!("{name} dw"),
        &ctx.read(&g.dw).unwrap(),
        &cref::conv2d_backward_weight(&x64, &dy64, &d),
        atol,
        rtol,
    );
    assert_close(
        &format!("{name} db"),
        &ctx.read(&g.db).unwrap(),
        &cref::conv2d_backward_bias(&dy64, &d),
        atol,
        rtol,
    );

    let g = conv2d_backward_with(ctx, algo, &x, &w, &dy, p, false).unwrap();
    assert!(g.dx.is_none(), "{name}: need_dx = false must not compute dx");
    assert_close(
        &format!("{name} dw without dx"),
        &ctx.read(&g.dw).unwrap(),
        &cref::conv2d_backward_weight(&x64, &dy64, &d),
        atol,
        rtol,
    );
}

#[test]
fn conv2d_3x3_same_batch1_cin3_cout5() {
    let d = dims(1, 3, (7, 7), 5, (3, 3), Conv2dParams::new(1, 1));
    check_case("1x3x7x7 k3 s1 p1", d, true, 10);
}

#[test]
fn conv2d_3x3_nonsquare_no_bias() {
    let d = dims(2, 3, (9, 5), 5, (3, 3), Conv2dParams::new(1, 1));
    check_case("2x3x9x5 k3 s1 p1", d, false, 20);
}

#[test]
fn conv2d_primes_stride2_odd_sizes() {
    let d = dims(3, 7, (13, 11), 11, (3, 3), Conv2dParams::new(2, 1));
    check_case("3x7x13x11 k3 s2 p1", d, true, 30);
    let d = dims(1, 5, (9, 7), 13, (3, 3), Conv2dParams::new(2, 0));
    check_case("1x5x9x7 k3 s2 p0", d, true, 31);
}

/// Shapes the im2col path takes (Ho·Wo % 4 == 0) with awkward channel counts: K = Cin·9 + 1
/// not a multiple of 4, Cout not a multiple of 4 (input grad on the implicit GEMM) and a
/// multiple of 4 (input grad on the subgroup GEMM), more rows than one GEMM tile, stride 2 with
/// diffusers' asymmetric padding.
#[test]
fn conv2d_im2col_shapes() {
    let d = dims(3, 1, (8, 6), 5, (3, 3), Conv2dParams::new(1, 1));
    check_case("3x1x8x6 -> 5 k3", d, true, 80);
    let d = dims(2, 7, (4, 4), 12, (3, 3), Conv2dParams::new(1, 1));
    check_case("2x7x4x4 -> 12 k3", d, true, 81);
    let d = dims(5, 6, (8, 8), 70, (3, 3), Conv2dParams::asymmetric(2, [0, 1, 0, 1]));
    check_case("5x6x8x8 -> 70 k3 s2 pad(0,1,0,1)", d, false, 82);
    let d = dims(2, 9, (6, 2), 8, (1, 1), Conv2dParams::new(1, 0));
    check_case("2x9x6x2 -> 8 k1", d, true, 83);
    // conv_out and conv_in of a small U-Net
    let d = dims(2, 8, (8, 8), 3, (3, 3), Conv2dParams::new(1, 1));
    check_case("2x8x8x8 -> 3 k3", d, true, 84);
    let d = dims(2, 3, (8, 8), 8, (3, 3), Conv2dParams::new(1, 1));
    check_case("2x3x8x8 -> 8 k3", d, true, 85);
    let d = dims(2, 16, (4, 4), 16, (3, 3), Conv2dParams::new(1, 1));
    check_case("2x16x4x4 -> 16 k3", d, true, 86);
    let d = dims(2, 8, (8, 8), 8, (3, 3), Conv2dParams::new(1, 1));
    check_case("2x8x8x8 -> 8 k3", d, true, 87);
    let d = dims(2, 16, (8, 8), 8, (3, 3), Conv2dParams::new(1, 1));
    check_case("2x16x8x8 -> 8 k3", d, true, 88);
}

/// Winograd F(4×4, 3×3) (3×3, stride 1, padding 1, Cin % 4 == 0): images with
/// odd sides (partial tiles at the right and bottom edges), one tile row, Cout not a multiple of
/// 4, more output channels than one GEMM tile, input grads through Winograd (Cout % 4 == 0) and
/// through the forward's adjoint; and the typed error where it cannot run.
#[test]
fn conv2d_winograd_shapes() {
    let p = Conv2dParams::new(1, 1);
    check_case("2x8x8x8 -> 12 k3 winograd", dims(2, 8, (8, 8), 12, (3, 3), p), true, 90);
    // 2×3 tiles per image: the GEMM's columns are padded to a multiple of 4 (and zeroed for the
    // weight grad, which sums over them), per window of one image and over all three.
    check_case("3x4x7x9 -> 5 k3 winograd", dims(3, 4, (7, 9), 5, (3, 3), p), true, 91);
    check_case(
        "1x12x2x15 -> 70 k3 winograd",
        dims(1, 12, (2, 15), 70, (3, 3), p),
        false,
        92,
    );
    check_case("2x16x4x4 -> 3 k3 winograd", dims(2, 16, (4, 4), 3, (3, 3), p), true, 93);
    // Cout = 1 (a network's last convolution on grey images): the input grad runs Winograd on
    // dy and w padded with zero channels to 4 (also for Cout = 3 and 5 above).
    check_case("3x8x8x8 -> 1 k3 winograd", dims(3, 8, (8, 8), 1, (3, 3), p), true, 102);
    // More than 8 tile columns / rows: several workgroups per image in x and in y.
    check_case("1x4x8x20 -> 4 k3 winograd", dims(1, 4, (8, 20), 4, (3, 3), p), true, 96);
    check_case("2x4x20x4 -> 8 k3 winograd", dims(2, 4, (20, 4), 8, (3, 3), p), true, 97);
    // Widths that are multiples of 8 (as every level of the shipped model's), with an odd
    // height (a partial tile at the bottom), and rows of 2 to 16 tiles, in and out Winograd.
    check_case(
        "2x4x7x16 -> 8 k3 winograd x4",
        dims(2, 4, (7, 16), 8, (3, 3), p),
        true,
        98,
    );
    check_case(
        "3x8x9x8 -> 4 k3 winograd x4",
        dims(3, 8, (9, 8), 4, (3, 3), p),
        true,
        99,
    );
    check_case(
        "1x4x5x24 -> 4 k3 winograd x4",
        dims(1, 4, (5, 24), 4, (3, 3), p),
        true,
        100,
    );
    check_case(
        "1x4x3x64 -> 8 k3 winograd x4",
        dims(1, 4, (3, 64), 8, (3, 3), p),
        false,
        101,
    );
    // Cout % 4 == 0: the input grad runs Winograd too (rotated, transposed weights).
    check_case(
        "3x4x7x9 -> 8 k3 winograd dx",
        dims(3, 4, (7, 9), 8, (3, 3), p),
        true,
        94,
    );
    check_case(
        "2x8x6x6 -> 12 k3 winograd dx",
        dims(2, 8, (6, 6), 12, (3, 3), p),
        false,
        95,
    );
    // W % 16 == 0 and H % 4 == 0 (or W = 8 and H % 8 == 0, below), Cin and Cout multiples of 4:
    // with the batch in one window the input grad is the adjoint of the forward (dV = Uᵀ·dM,
    // then B·dV·Bᵀ per tile with the overlapping windows summed; windows of one image take the
    // path above). One group of four tiles per tile row (no neighbours left or right), two and
    // three groups (neighbours on one and both sides), one tile row (no neighbours above or
    // below), one image.
    check_case(
        "2x8x16x16 -> 12 k3 winograd adjoint",
        dims(2, 8, (16, 16), 12, (3, 3), p),
        true,
        103,
    );
    check_case(
        "1x4x8x32 -> 8 k3 winograd adjoint",
        dims(1, 4, (8, 32), 8, (3, 3), p),
        true,
        104,
    );
    check_case(
        "2x4x12x48 -> 36 k3 winograd adjoint",
        dims(2, 4, (12, 48), 36, (3, 3), p),
        false,
        105,
    );
    check_case(
        "3x12x4x16 -> 4 k3 winograd adjoint",
        dims(3, 12, (4, 16), 4, (3, 3), p),
        true,
        106,
    );
    // Images two tiles wide (W = 8, H % 8 == 0): a vec4 of dV is a 2×2 block of tiles; one
    // block per image, two (neighbours across blocks) and three.
    check_case(
        "2x8x8x8 -> 12 k3 winograd adjoint2",
        dims(2, 8, (8, 8), 12, (3, 3), p),
        true,
        107,
    );
    check_case(
        "2x4x16x8 -> 8 k3 winograd adjoint2",
        dims(2, 4, (16, 8), 8, (3, 3), p),
        true,
        108,
    );
    check_case(
        "1x4x24x8 -> 4 k3 winograd adjoint2",
        dims(1, 4, (24, 8), 4, (3, 3), p),
        false,
        109,
    );
    let ctx = ctx();
    let x = ctx.zeros(&[1, 6, 8, 8], "x").unwrap();
    let w = ctx.zeros(&[4, 6, 3, 3], "w").unwrap();
    let err = conv2d_with(ctx, Algo::Winograd { window: 0 }, &x, &w, None, p).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("Cin = 6"),
        "{err}"
    );
}

#[test]
fn conv2d_1x1() {
    let d = dims(3, 5, (5, 7), 13, (1, 1), Conv2dParams::new(1, 0));
    check_case("3x5x5x7 k1", d, true, 40);
    let d = dims(2, 6, (7, 5), 3, (1, 1), Conv2dParams::new(2, 0));
    check_case("2x6x7x5 k1 s2", d, false, 41);
    // The pointwise GEMM path (Cin, Cout, H·W multiples of 4): more channels than one GEMM
    // tile, a rectangular image, one image, with and without a bias.
    let d = dims(3, 12, (4, 6), 8, (1, 1), Conv2dParams::new(1, 0));
    check_case("3x12x4x6 -> 8 k1", d, true, 42);
    let d = dims(1, 36, (2, 2), 20, (1, 1), Conv2dParams::new(1, 0));
    check_case("1x36x2x2 -> 20 k1", d, false, 43);
    let d = dims(2, 96, (8, 8), 64, (1, 1), Conv2dParams::new(1, 0));
    check_case("2x96x8x8 -> 64 k1", d, true, 44);
    // 4 pixels (one of a subgroup's 8 lanes holds columns) and 40 output channels with a bias:
    // the GEMM's row biases of rows 4..31 are loaded by lanes past N and shuffled to lane 0.
    let d = dims(2, 8, (2, 2), 40, (1, 1), Conv2dParams::new(1, 0));
    check_case("2x8x2x2 -> 40 k1", d, true, 45);
}

#[test]
fn conv2d_even_and_rectangular_kernels() {
    let d = dims(1, 4, (6, 7), 3, (2, 2), Conv2dParams::new(2, 0));
    check_case("1x4x6x7 k2 s2", d, true, 50);
    let d = dims(2, 3, (5, 6), 9, (3, 1), Conv2dParams::asymmetric(1, [1, 1, 0, 0]));
    check_case("2x3x5x6 k3x1", d, true, 51);
    let d = dims(1, 2, (6, 5), 4, (4, 4), Conv2dParams::new(1, 2));
    check_case("1x2x6x5 k4 p2", d, true, 52);
}

/// diffusers' Downsample2D with downsample_padding=0: pad (0,1,0,1), then 3x3 stride 2.
#[test]
fn conv2d_asymmetric_pad_downsample() {
    let p = Conv2dParams::asymmetric(2, [0, 1, 0, 1]);
    let d = dims(2, 5, (7, 9), 9, (3, 3), p);
    check_case("2x5x7x9 k3 s2 pad(0,1,0,1)", d, true, 60);
    let d = dims(1, 3, (8, 8), 4, (3, 3), p);
    check_case("1x3x8x8 k3 s2 pad(0,1,0,1)", d, false, 61);
}

/// More input channels than one staged weight round holds (56 for 3x3) and more output channels
/// than one workgroup's tile (8), with tails in both.
#[test]
fn conv2d_channels_cross_tiles() {
    let d = dims(1, 61, (5, 6), 17, (3, 3), Conv2dParams::new(1, 1));
    check_case("1x61x5x6 -> 17 k3", d, true, 70);
    let d = dims(2, 17, (6, 5), 61, (3, 3), Conv2dParams::new(2, 1));
    check_case("2x17x6x5 -> 61 k3 s2", d, true, 71);
}

/// More output pixels (2·47·49 = 4606) than one weight-grad slice reduces (4096), so the partial
/// sums of two slices, one partly filled, must be added.
#[test]
fn conv2d_weight_grad_over_pixel_slices() {
    let d = dims(2, 3, (47, 49), 5, (3, 3), Conv2dParams::new(1, 1));
    check_case("2x3x47x49 k3", d, true, 75);
}

/// Central-difference check of the reference backward (dx, dw, db) on L = Σ y·r.
#[test]
fn conv2d_reference_backward_matches_finite_differences() {
    for (seed, p) in [
        (80, Conv2dParams::new(1, 1)),
        (81, Conv2dParams::asymmetric(2, [0, 1, 0, 1])),
    ] {
        let d = dims(2, 3, (5, 4), 2, (3, 3), p);
        let (ho, wo) = d.out_hw();
        let x = to_f64(&rand_vec(d.n * d.cin * d.h * d.w, seed));
        let w = to_f64(&rand_vec(d.cout * d.cin * d.kh * d.kw, seed + 1));
        let b = to_f64(&rand_vec(d.cout, seed + 2));
        let r = to_f64(&rand_vec(d.n * d.cout * ho * wo, seed + 3));
        let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
            cref::conv2d(x, w, Some(b), &d).iter().zip(&r).map(|(y, r)| y * r).sum()
        };
        let eps = 1e-6;
        let numeric = |v: &[f64], f: &dyn Fn(&[f64]) -> f64| -> Vec<f64> {
            (0..v.len())
                .map(|i| {
                    let (mut hi, mut lo) = (v.to_vec(), v.to_vec());
                    hi[i] += eps;
                    lo[i] -= eps;
                    (f(&hi) - f(&lo)) / (2.0 * eps)
                })
                .collect()
        };
        let checks = [
            (
                "dx",
                cref::conv2d_backward_input(&r, &w, &d),
                numeric(&x, &|v| loss(v, &w, &b)),
            ),
            (
                "dw",
                cref::conv2d_backward_weight(&x, &r, &d),
                numeric(&w, &|v| loss(&x, v, &b)),
            ),
            (
                "db",
                cref::conv2d_backward_bias(&r, &d),
                numeric(&b, &|v| loss(&x, &w, v)),
            ),
        ];
        for (name, analytic, numeric) in checks {
            let got: Vec<f32> = analytic.iter().map(|&v| v as f32).collect();
            // L is linear in each argument, so central differences are exact up to f64
            // cancellation (~1e-16 / 1e-6); the f32 cast of the analytic value adds ~1e-7.
            assert_close(&format!("fd {name} {p:?}"), &got, &numeric, 1e-6, 1e-6);
        }
    }
}

#[test]
fn conv2d_shape_errors_are_typed() {
    let ctx = ctx();
    let p = Conv2dParams::new(1, 1);
    let x = ctx.zeros(&[1, 3, 8, 8], "x").unwrap();
    let w_bad_cin = ctx.zeros(&[4, 2, 3, 3], "w").unwrap();
    let w = ctx.zeros(&[4, 3, 3, 3], "w").unwrap();
    let b_bad = ctx.zeros(&[5], "b").unwrap();
    let dy_bad = ctx.zeros(&[1, 4, 7, 8], "dy").unwrap();
    let w_big = ctx.zeros(&[4, 3, 11, 11], "w").unwrap();
    let x3 = ctx.zeros(&[3, 8, 8], "x3").unwrap();
    assert!(matches!(conv2d(ctx, &x, &w_bad_cin, None, p), Err(Error::Shape { .. })));
    assert!(matches!(conv2d(ctx, &x, &w, Some(&b_bad), p), Err(Error::Shape { .. })));
    assert!(matches!(conv2d(ctx, &x3, &w, None, p), Err(Error::Shape { .. })));
    assert!(matches!(conv2d(ctx, &x, &w_big, None, p), Err(Error::Shape { .. })));
    assert!(matches!(
        conv2d(ctx, &x, &w, None, Conv2dParams::new(0, 1)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        conv2d_backward(ctx, &x, &w, &dy_bad, p, true),
        Err(Error::Shape { .. })
    ));
    assert_eq!(p.out_hw(8, 8, 11, 11), (0, 0));
}

/// A conv whose im2col matrix (N·Ho·Wo × Cin·9 floats = 144 MiB) would exceed the 128 MiB
/// binding limit while x (16 MiB) fits; a sample of outputs is checked against the reference.
#[test]
fn conv2d_im2col_view_over_binding_limit() {
    let ctx = ctx();
    let d = dims(1, 64, (256, 256), 4, (3, 3), Conv2dParams::new(1, 1));
    let (ho, wo) = d.out_hw();
    let im2col_bytes = d.n * ho * wo * d.cin * d.kh * d.kw * 4;
    assert!(im2col_bytes as u64 > 128 << 20);
    let xh = rand_vec(d.n * d.cin * d.h * d.w, 90);
    let wh = rand_vec(d.cout * d.cin * 9, 91);
    let bh = rand_vec(d.cout, 92);
    let x = ctx.upload(&[d.n, d.cin, d.h, d.w], &xh).unwrap();
    let w = ctx.upload(&[d.cout, d.cin, 3, 3], &wh).unwrap();
    let b = ctx.upload(&[d.cout], &bh).unwrap();
    let y = ctx
        .read(&conv2d(ctx, &x, &w, Some(&b), Conv2dParams::new(1, 1)).unwrap())
        .unwrap();
    let (x64, w64, b64) = (to_f64(&xh), to_f64(&wh), to_f64(&bh));
    let mut got = Vec::new();
    let mut want = Vec::new();
    // Corners, edges and a spread of interior points in every channel.
    for co in 0..d.cout {
        for (oh, ow) in [(0, 0), (0, 255), (255, 0), (255, 255), (0, 77), (131, 255)]
            .into_iter()
            .chain((0..40).map(|i| ((i * 37 + co * 11) % 256, (i * 101 + 5) % 256)))
        {
            got.push(y[(co * ho + oh) * wo + ow]);
            want.push(cref::conv2d_at(&x64, &w64, Some(&b64), &d, [0, co, oh, ow]));
        }
    }
    // 576-term f32 dot products of values in [-1, 1].
    assert_close("im2col > 128 MiB sample", &got, &want, 2e-4, 1e-4);
}

/// More than 65,535 workgroups of output pixels (4.2 M pixels / 64 per workgroup): the grid
/// must be split in 2-D, in the forward and in the input grad. Checked in full against the
/// reference (a 1x1 conv is cheap).
#[test]
fn conv2d_grid_over_workgroup_limit() {
    let ctx = ctx();
    let d = dims(1, 1, (2048, 2056), 2, (1, 1), Conv2dParams::new(1, 0));
    assert!(d.h * d.w / 64 > 65_535);
    let xh = rand_vec(d.h * d.w, 95);
    let wh = rand_vec(2, 96);
    let dyh = rand_vec(2 * d.h * d.w, 97);
    let x = ctx.upload(&[1, 1, d.h, d.w], &xh).unwrap();
    let w = ctx.upload(&[2, 1, 1, 1], &wh).unwrap();
    let dy = ctx.upload(&[1, 2, d.h, d.w], &dyh).unwrap();
    let p = Conv2dParams::new(1, 0);
    let y = conv2d(ctx, &x, &w, None, p).unwrap();
    let (x64, w64, dy64) = (to_f64(&xh), to_f64(&wh), to_f64(&dyh));
    // One product per output: exact up to one f32 rounding.
    assert_close(
        "grid forward",
        &ctx.read(&y).unwrap(),
        &cref::conv2d(&x64, &w64, None, &d),
        1e-6,
        1e-6,
    );
    let g = conv2d_backward(ctx, &x, &w, &dy, p, true).unwrap();
    // Two products per input pixel.
    assert_close(
        "grid dx",
        &ctx.read(&g.dx.unwrap()).unwrap(),
        &cref::conv2d_backward_input(&dy64, &w64, &d),
        1e-6,
        1e-6,
    );
    // dw and db are 4.2 M-term sequential f32 sums (magnitude ~1e3): rounding walks ~1e-4
    // relative.
    assert_close(
        "grid dw",
        &ctx.read(&g.dw).unwrap(),
        &cref::conv2d_backward_weight(&x64, &dy64, &d),
        0.5,
        1e-3,
    );
    assert_close(
        "grid db",
        &ctx.read(&g.db).unwrap(),
        &cref::conv2d_backward_bias(&dy64, &d),
        0.5,
        1e-3,
    );
}

/// conv2d_fused: y = s·(conv + bias + image_bias[n, c] + r) against the reference, through the
/// Winograd output transform (whole batch and windows of one image, so the per-image bias rows
/// start at n0) and through the other algorithms' separate passes; with and without each part.
#[test]
fn conv2d_fused_epilogue() {
    use ddpm_wgpu::ops::conv2d::{conv2d_fused_with, winograd_weight_transform, Fused};
    let ctx = ctx();
    let cases = [
        (
            "3x8x9x8 -> 12 k3",
            dims(3, 8, (9, 8), 12, (3, 3), Conv2dParams::new(1, 1)),
            Algo::Winograd { window: 0 },
        ),
        (
            "3x8x9x8 -> 12 k3 x1",
            dims(3, 8, (9, 8), 12, (3, 3), Conv2dParams::new(1, 1)),
            Algo::Winograd { window: 1 },
        ),
        (
            "2x5x7x6 -> 4 k3 s2",
            dims(2, 5, (7, 6), 4, (3, 3), Conv2dParams::new(2, 1)),
            Algo::Auto,
        ),
        (
            "2x8x4x4 -> 8 k1",
            dims(2, 8, (4, 4), 8, (1, 1), Conv2dParams::new(1, 0)),
            Algo::Auto,
        ),
    ];
    for (i, (name, d, algo)) in cases.into_iter().enumerate() {
        let p = Conv2dParams::asymmetric(d.stride, d.pad);
        let (ho, wo) = d.out_hw();
        let seed = 200 + 10 * i as u64;
        let xh = rand_vec(d.n * d.cin * d.h * d.w, seed);
        let wh = rand_vec(d.cout * d.cin * d.kh * d.kw, seed + 1);
        let bh = rand_vec(d.cout, seed + 2);
        let ibh = rand_vec(d.n * d.cout, seed + 3);
        let rh = rand_vec(d.n * d.cout * ho * wo, seed + 4);
        let x = ctx.upload(&[d.n, d.cin, d.h, d.w], &xh).unwrap();
        let w = ctx.upload(&[d.cout, d.cin, d.kh, d.kw], &wh).unwrap();
        let b = ctx.upload(&[d.cout], &bh).unwrap();
        let ib = ctx.upload(&[d.n, d.cout], &ibh).unwrap();
        let r = ctx.upload(&[d.n, d.cout, ho, wo], &rh).unwrap();
        let conv = cref::conv2d(&to_f64(&xh), &to_f64(&wh), Some(&to_f64(&bh)[..]), &d);
        for (with_ib, with_r) in [(true, false), (false, true), (true, true)] {
            let scale = 0.7f32;
            let epi = Fused {
                input_norm: None,
                image_bias: with_ib.then_some(&ib),
                residual: with_r.then_some((&r, scale)),
                weight_transform: None,
            };
            let y = conv2d_fused_with(ctx, algo, &x, &w, Some(&b), p, epi).unwrap();
            if (d.kh, d.kw) == (3, 3) {
                // A precomputed weight transform gives the same output bit for bit (Winograd
                // uses it; the other algorithms ignore it) ...
                let u = winograd_weight_transform(ctx, &w).unwrap();
                let with_u = |u| Fused {
                    weight_transform: Some(u),
                    ..epi
                };
                let y_u = conv2d_fused_with(ctx, algo, &x, &w, Some(&b), p, with_u(&u)).unwrap();
                assert_eq!(
                    ctx.read(&y).unwrap(),
                    ctx.read(&y_u).unwrap(),
                    "{name} {algo:?}: with weight_transform"
                );
                // ... and Winograd really reads it: the transform of other weights changes y.
                if matches!(algo, Algo::Winograd { .. }) {
                    let w2 = ctx.upload(w.shape(), &rand_vec(w.numel(), seed + 9)).unwrap();
                    let u2 = winograd_weight_transform(ctx, &w2).unwrap();
                    let y2 = conv2d_fused_with(ctx, algo, &x, &w, Some(&b), p, with_u(&u2)).unwrap();
                    assert_ne!(
                        ctx.read(&y).unwrap(),
                        ctx.read(&y2).unwrap(),
                        "{name}: weight_transform unused"
                    );
                }
            }
            let plane = ho * wo;
            let want: Vec<f64> = conv
                .iter()
                .enumerate()
                .map(|(j, &c)| {
                    let nc = j / plane;
                    let v = c + if with_ib { ibh[nc] as f64 } else { 0.0 };
                    if with_r {
                        scale as f64 * (v + rh[j] as f64)
                    } else {
                        v
                    }
                })
                .collect();
            let label = format!("{name} {algo:?} image_bias={with_ib} residual={with_r}");
            assert_close(&label, &ctx.read(&y).unwrap(), &want, 1e-4, 1e-4);
        }
    }
}

/// conv2d_fused_saving keeps the Winograd input transform and conv2d_backward_saved uses it for
/// the weight grad (and the weight transform for the input grad as the forward's adjoint): the
/// grads equal the reference's, with padded columns (2×3 tiles per image) and without, and where
/// nothing is kept (not Winograd) the backward recomputes.
#[test]
fn conv2d_saved_input_transform_serves_the_backward() {
    use ddpm_wgpu::ops::conv2d::{conv2d_backward_saved, conv2d_fused_saving, Fused};
    let ctx = ctx();
    let winograd_here = ctx.has_subgroups() && ctx.adapter_info().subgroup_min_size == 8;
    let cases = [
        (
            "3x4x7x9 -> 8 k3",
            dims(3, 4, (7, 9), 8, (3, 3), Conv2dParams::new(1, 1)),
            true,
        ),
        (
            "2x8x8x8 -> 12 k3",
            dims(2, 8, (8, 8), 12, (3, 3), Conv2dParams::new(1, 1)),
            true,
        ),
        (
            // W % 16 == 0: the input grad is the adjoint, with the kept weight transform.
            "2x8x8x32 -> 12 k3",
            dims(2, 8, (8, 32), 12, (3, 3), Conv2dParams::new(1, 1)),
            true,
        ),
        (
            "2x5x7x6 -> 4 k3 s2",
            dims(2, 5, (7, 6), 4, (3, 3), Conv2dParams::new(2, 1)),
            false,
        ),
    ];
    for (i, (name, d, winograd)) in cases.into_iter().enumerate() {
        let p = Conv2dParams::asymmetric(d.stride, d.pad);
        let (ho, wo) = d.out_hw();
        let seed = 300 + 10 * i as u64;
        let xh = rand_vec(d.n * d.cin * d.h * d.w, seed);
        let wh = rand_vec(d.cout * d.cin * d.kh * d.kw, seed + 1);
        let bh = rand_vec(d.cout, seed + 2);
        let dyh = rand_vec(d.n * d.cout * ho * wo, seed + 3);
        // A pooled buffer of V's exact size full of NaN (the pool recycles by size): its pad
        // columns must be zeroed, not left to the weight grad's GEMM.
        ctx.trim_pool();
        let v_len = 36 * d.cin * (d.n * d.h.div_ceil(4) * d.w.div_ceil(4)).next_multiple_of(4);
        drop(ctx.upload(&[v_len], &vec![f32::NAN; v_len]).unwrap());
        let x = ctx.upload(&[d.n, d.cin, d.h, d.w], &xh).unwrap();
        let w = ctx.upload(&[d.cout, d.cin, d.kh, d.kw], &wh).unwrap();
        let b = ctx.upload(&[d.cout], &bh).unwrap();
        let dy = ctx.upload(&[d.n, d.cout, ho, wo], &dyh).unwrap();
        let (y, saved) = conv2d_fused_saving(ctx, &x, &w, Some(&b), p, Fused::default()).unwrap();
        assert_eq!(
            saved.bytes() > 0,
            winograd && winograd_here,
            "{name}: kept {} bytes",
            saved.bytes()
        );
        let (x64, w64, dy64) = (to_f64(&xh), to_f64(&wh), to_f64(&dyh));
        let want_y = cref::conv2d(&x64, &w64, Some(&to_f64(&bh)[..]), &d);
        assert_close(&format!("{name} y"), &ctx.read(&y).unwrap(), &want_y, 1e-4, 1e-4);
        let g = conv2d_backward_saved(ctx, &x, &w, &dy, p, true, &saved).unwrap();
        let want_dw = cref::conv2d_backward_weight(&x64, &dy64, &d);
        assert_close(&format!("{name} dw"), &ctx.read(&g.dw).unwrap(), &want_dw, 1e-4, 1e-4);
        let want_dx = cref::conv2d_backward_input(&dy64, &w64, &d);
        let dx = g.dx.expect("need_dx = true returns dx");
        assert_close(&format!("{name} dx"), &ctx.read(&dx).unwrap(), &want_dx, 1e-4, 1e-4);
    }
}

/// conv2d_backward_norm: the backward of conv(dropout(silu(GroupNorm(x)))) through the norm,
/// against the f64 reference (the convolution's input grad, the dropout's and the norm's
/// backward), with and without dropout and a dx addend: where the adjoint kernel runs the norm's
/// first pass (W % 16 == 0: one, two and three four-tile groups per tile row, several groups
/// per image) and where it cannot (W = 8, a stride-2 convolution, Winograd not kept); and the
/// per-image bias grad where the Winograd weight grad gives it.
#[test]
fn conv2d_backward_through_norm() {
    use ddpm_wgpu::ops::conv2d::{conv2d_backward_norm, conv2d_fused_saving, Fused, InputNorm, NormGrad};
    use ddpm_wgpu::ops::dropout::Dropout;
    use ddpm_wgpu::ops::groupnorm::group_norm_stats;
    use ddpm_wgpu::reference::dropout as dref;
    use ddpm_wgpu::reference::groupnorm as gref;
    let ctx = ctx();
    let cases = [
        (
            "2x8x8x16 -> 12 k3",
            dims(2, 8, (8, 16), 12, (3, 3), Conv2dParams::new(1, 1)),
            4,
        ),
        (
            "1x12x4x32 -> 8 k3",
            dims(1, 12, (4, 32), 8, (3, 3), Conv2dParams::new(1, 1)),
            3,
        ),
        (
            "2x4x12x48 -> 4 k3",
            dims(2, 4, (12, 48), 4, (3, 3), Conv2dParams::new(1, 1)),
            1,
        ),
        (
            "2x8x8x8 -> 4 k3",
            dims(2, 8, (8, 8), 4, (3, 3), Conv2dParams::new(1, 1)),
            2,
        ),
        (
            "2x6x7x6 -> 4 k3 s2",
            dims(2, 6, (7, 6), 4, (3, 3), Conv2dParams::new(2, 1)),
            3,
        ),
    ];
    for (i, (name, d, groups)) in cases.into_iter().enumerate() {
        let p = Conv2dParams::asymmetric(d.stride, d.pad);
        let (ho, wo) = d.out_hw();
        let hw = d.h * d.w;
        let seed = 700 + 10 * i as u64;
        let xh: Vec<f32> = rand_vec(d.n * d.cin * hw, seed).iter().map(|v| 2.0 * v + 0.5).collect();
        let wh = rand_vec(d.cout * d.cin * d.kh * d.kw, seed + 1);
        let gh = rand_vec(d.cin, seed + 2);
        let beh = rand_vec(d.cin, seed + 3);
        let dyh = rand_vec(d.n * d.cout * ho * wo, seed + 4);
        let addh = rand_vec(d.n * d.cin * hw, seed + 5);
        let x = ctx.upload(&[d.n, d.cin, d.h, d.w], &xh).unwrap();
        let w = ctx.upload(&[d.cout, d.cin, d.kh, d.kw], &wh).unwrap();
        let gamma = ctx.upload(&[d.cin], &gh).unwrap();
        let beta = ctx.upload(&[d.cin], &beh).unwrap();
        let dy = ctx.upload(&[d.n, d.cout, ho, wo], &dyh).unwrap();
        let add = ctx.upload(&[d.n, d.cin, d.h, d.w], &addh).unwrap();
        let eps = 1e-5;
        let stats = group_norm_stats(ctx, &x, &gamma, &beta, groups, eps).unwrap();
        let (x64, g64, b64) = (to_f64(&xh), to_f64(&gh), to_f64(&beh));
        let (normed, _) = gref::group_norm(&x64, &g64, &b64, d.n, d.cin, hw, groups, eps as f64, true);
        let drop = Dropout {
            p: 0.25,
            seed: 950 + i as u64,
            stream: 3,
        };
        for (dropout, with_add) in [(None, false), (Some(drop), true), (Some(drop), false)] {
            let input = match dropout {
                Some(dr) => dref::dropout(&normed, dr.p as f64, dr.seed, dr.stream),
                None => normed.clone(),
            };
            let epi = Fused {
                input_norm: Some(InputNorm {
                    stats: &stats,
                    gamma: &gamma,
                    beta: &beta,
                    groups,
                    silu: true,
                    dropout,
                }),
                ..Fused::default()
            };
            let (_, saved) = conv2d_fused_saving(ctx, &x, &w, None, p, epi).unwrap();
            // Where the input transform was kept x stands in for the convolution's input (its
            // shape is what is read); otherwise the input is computed as the forward saw it.
            let conv_in = if saved.keeps_input_transform() {
                x.clone()
            } else {
                ctx.upload(
                    &[d.n, d.cin, d.h, d.w],
                    &input.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                )
                .unwrap()
            };
            let nm = NormGrad {
                x: &x,
                gamma: &gamma,
                beta: &beta,
                stats: &stats,
                groups,
                silu: true,
                dropout,
            };
            let r = conv2d_backward_norm(ctx, &conv_in, &w, &dy, p, &saved, nm, with_add.then_some(&add)).unwrap();
            let dy64 = to_f64(&dyh);
            let d_in = cref::conv2d_backward_input(&dy64, &to_f64(&wh), &d);
            let d_act = match dropout {
                Some(dr) => dref::dropout_backward(&d_in, dr.p as f64, dr.seed, dr.stream),
                None => d_in,
            };
            let (mut want_dx, want_dg, want_db) =
                gref::group_norm_backward(&x64, &g64, &b64, &d_act, d.n, d.cin, hw, groups, eps as f64, true);
            if with_add {
                for (v, a) in want_dx.iter_mut().zip(&addh) {
                    *v += *a as f64;
                }
            }
            let label = format!("{name} groups={groups} dropout={} addend={with_add}", dropout.is_some());
            assert_close(&format!("{label} dx"), &ctx.read(&r.dx).unwrap(), &want_dx, 1e-4, 1e-4);
            assert_close(
                &format!("{label} dgamma"),
                &ctx.read(&r.dgamma).unwrap(),
                &want_dg,
                1e-4,
                1e-4,
            );
            assert_close(
                &format!("{label} dbeta"),
                &ctx.read(&r.dbeta).unwrap(),
                &want_db,
                1e-4,
                1e-4,
            );
            let want_dw = cref::conv2d_backward_weight(&input, &dy64, &d);
            assert_close(&format!("{label} dw"), &ctx.read(&r.dw).unwrap(), &want_dw, 1e-4, 1e-4);
            let want_bias = cref::conv2d_backward_bias(&dy64, &d);
            assert_close(
                &format!("{label} db"),
                &ctx.read(&r.db).unwrap(),
                &want_bias,
                1e-4,
                1e-4,
            );
            // The per-image bias grad [Cout, N], where the Winograd weight grad gives it (every
            // stride-1 case here on an adapter with 8-wide subgroups).
            let winograd_here = ctx.has_subgroups() && ctx.adapter_info().subgroup_min_size == 8;
            assert_eq!(r.db_images.is_some(), winograd_here && d.stride == 1, "{label}");
            if let Some(s) = &r.db_images {
                let plane = ho * wo;
                let want: Vec<f64> = (0..d.cout * d.n)
                    .map(|i| {
                        let (c, n) = (i / d.n, i % d.n);
                        dy64[(n * d.cout + c) * plane..][..plane].iter().sum()
                    })
                    .collect();
                assert_close(
                    &format!("{label} db per image"),
                    &ctx.read(s).unwrap(),
                    &want,
                    1e-4,
                    1e-4,
                );
            }
        }
    }
}

/// conv2d_fused with an input norm: y = conv(silu(GroupNorm(x)), w) + bias against the f64
/// reference (norm, then zero padding), through the Winograd input transform (one window and
/// windows of one image, with and without SiLU, with a residual, with and without dropout after
/// the norm; widths that take the four-column transforms and one that does not) and the
/// separate-pass fallback.
#[test]
fn conv2d_fused_input_norm() {
    use ddpm_wgpu::ops::conv2d::{conv2d_fused_with, Fused, InputNorm};
    use ddpm_wgpu::ops::dropout::Dropout;
    use ddpm_wgpu::ops::groupnorm::group_norm_stats;
    use ddpm_wgpu::reference::dropout as dref;
    use ddpm_wgpu::reference::groupnorm as gref;
    let ctx = ctx();
    let cases = [
        (
            "3x8x9x8 -> 12 k3",
            dims(3, 8, (9, 8), 12, (3, 3), Conv2dParams::new(1, 1)),
            Algo::Winograd { window: 0 },
            4,
            true,
        ),
        (
            "3x8x9x8 -> 12 k3 x1",
            dims(3, 8, (9, 8), 12, (3, 3), Conv2dParams::new(1, 1)),
            Algo::Winograd { window: 1 },
            2,
            false,
        ),
        (
            // 4 tiles per tile row: the four-column input transform shares the row loads.
            "2x8x6x16 -> 8 k3",
            dims(2, 8, (6, 16), 8, (3, 3), Conv2dParams::new(1, 1)),
            Algo::Winograd { window: 0 },
            2,
            true,
        ),
        (
            "2x12x5x7 -> 4 k3",
            dims(2, 12, (5, 7), 4, (3, 3), Conv2dParams::new(1, 1)),
            Algo::Winograd { window: 0 },
            3,
            true,
        ),
        (
            "2x6x7x6 -> 4 k3 s2",
            dims(2, 6, (7, 6), 4, (3, 3), Conv2dParams::new(2, 1)),
            Algo::Auto,
            3,
            true,
        ),
    ];
    for (i, (name, d, algo, groups, silu)) in cases.into_iter().enumerate() {
        let p = Conv2dParams::asymmetric(d.stride, d.pad);
        let (ho, wo) = d.out_hw();
        let seed = 400 + 10 * i as u64;
        // An offset and scale so that the norm matters.
        let xh: Vec<f32> = rand_vec(d.n * d.cin * d.h * d.w, seed)
            .iter()
            .map(|v| 2.0 * v + 0.5)
            .collect();
        let wh = rand_vec(d.cout * d.cin * d.kh * d.kw, seed + 1);
        let bh = rand_vec(d.cout, seed + 2);
        let gh = rand_vec(d.cin, seed + 3);
        let beh = rand_vec(d.cin, seed + 4);
        let rh = rand_vec(d.n * d.cout * ho * wo, seed + 5);
        let x = ctx.upload(&[d.n, d.cin, d.h, d.w], &xh).unwrap();
        let w = ctx.upload(&[d.cout, d.cin, d.kh, d.kw], &wh).unwrap();
        let b = ctx.upload(&[d.cout], &bh).unwrap();
        let gamma = ctx.upload(&[d.cin], &gh).unwrap();
        let beta = ctx.upload(&[d.cin], &beh).unwrap();
        let r = ctx.upload(&[d.n, d.cout, ho, wo], &rh).unwrap();
        let eps = 1e-5;
        let stats = group_norm_stats(ctx, &x, &gamma, &beta, groups, eps).unwrap();
        let (normed, _) = gref::group_norm(
            &to_f64(&xh),
            &to_f64(&gh),
            &to_f64(&beh),
            d.n,
            d.cin,
            d.h * d.w,
            groups,
            eps as f64,
            silu,
        );
        // Without and with dropout after the norm (the vec4 Winograd input transform draws the
        // mask itself; the other paths run ops::dropout).
        let drop = Dropout {
            p: 0.3,
            seed: 900 + i as u64,
            stream: 7,
        };
        for (dropout, with_r) in [(None, false), (None, true), (Some(drop), false), (Some(drop), true)] {
            let input = match dropout {
                Some(dr) => dref::dropout(&normed, dr.p as f64, dr.seed, dr.stream),
                None => normed.clone(),
            };
            let conv = cref::conv2d(&input, &to_f64(&wh), Some(&to_f64(&bh)[..]), &d);
            let epi = Fused {
                input_norm: Some(InputNorm {
                    stats: &stats,
                    gamma: &gamma,
                    beta: &beta,
                    groups,
                    silu,
                    dropout,
                }),
                image_bias: None,
                residual: with_r.then_some((&r, 0.5)),
                weight_transform: None,
            };
            let y = conv2d_fused_with(ctx, algo, &x, &w, Some(&b), p, epi).unwrap();
            let want: Vec<f64> = conv
                .iter()
                .zip(&rh)
                .map(|(&c, &rv)| if with_r { 0.5 * (c + rv as f64) } else { c })
                .collect();
            // Normalized inputs are O(1) (|γ|, |β| < 1; kept ones scaled by 1/0.7): the same
            // sums as the plain tests.
            let label = format!("{name} {algo:?} groups={groups} silu={silu} residual={with_r} dropout={dropout:?}");
            assert_close(&label, &ctx.read(&y).unwrap(), &want, 1e-4, 1e-4);
        }
    }
    // Groups must divide Cin, and the stats must fit.
    let x = ctx.zeros(&[1, 8, 4, 4], "x").unwrap();
    let w = ctx.zeros(&[4, 8, 3, 3], "w").unwrap();
    let g8 = ctx.zeros(&[8], "g").unwrap();
    let stats = ctx.zeros(&[1, 3, 2], "stats").unwrap();
    let bad = Fused {
        input_norm: Some(InputNorm {
            stats: &stats,
            gamma: &g8,
            beta: &g8,
            groups: 3,
            silu: true,
            dropout: None,
        }),
        ..Fused::default()
    };
    let err = conv2d_fused_with(ctx, Algo::Auto, &x, &w, None, Conv2dParams::new(1, 1), bad).unwrap_err();
    assert!(
        err.to_string().contains("3 groups do not divide the 8 input channels"),
        "{err}"
    );
}
