// GPU groupnorm kernels vs the CPU reference.
use crate::common::{assert_close, ctx, rand_vec, to_f64};
use ddpm_wgpu::ops::dropout::Dropout;
use ddpm_wgpu::reference::dropout as dref;
use ddpm_wgpu::{ops::groupnorm as gn, reference::groupnorm as rf, Error};

/// Central-difference gradient of `f` at `x` (eps 1e-6).
fn numeric_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let eps = 1e-6;
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let v = x[i];
            xp[i] = v + eps;
            let hi = f(&xp);
            xp[i] = v - eps;
            let lo = f(&xp);
            xp[i] = v;
            (hi - lo) / (2.0 * eps)
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

#[test]
fn groupnorm_reference_backward_matches_finite_differences() {
    let (n, c, hw, groups, eps) = (2, 6, 5, 3, 1e-5);
    let x: Vec<f64> = to_f64(&rand_vec(n * c * hw, 1)).iter().map(|v| 2.0 * v + 0.5).collect();
    let gamma = to_f64(&rand_vec(c, 2));
    let beta = to_f64(&rand_vec(c, 3));
    let r = to_f64(&rand_vec(n * c * hw, 4));
    for silu in [false, true] {
        let loss = |x: &[f64], g: &[f64], b: &[f64]| dot(&rf::group_norm(x, g, b, n, c, hw, groups, eps, silu).0, &r);
        let (dx, dg, db) = rf::group_norm_backward(&x, &gamma, &beta, &r, n, c, hw, groups, eps, silu);
        assert_grad("dx", &dx, &numeric_grad(&x, |v| loss(v, &gamma, &beta)));
        assert_grad("dgamma", &dg, &numeric_grad(&gamma, |v| loss(&x, v, &beta)));
        assert_grad("dbeta", &db, &numeric_grad(&beta, |v| loss(&x, &gamma, v)));
    }
}

/// Run forward and backward on the GPU for `shape` and compare everything with the reference.
fn check(shape: &[usize], groups: usize, silu: bool, offset: f32, seed: u64) {
    let ctx = ctx();
    let (n, c) = (shape[0], shape[1]);
    let hw: usize = shape[2..].iter().product();
    let numel = n * c * hw;
    let eps = 1e-5;
    let x: Vec<f32> = rand_vec(numel, seed).iter().map(|v| 3.0 * v + offset).collect();
    let gamma: Vec<f32> = rand_vec(c, seed + 1).iter().map(|v| 1.0 + v).collect();
    let beta = rand_vec(c, seed + 2);
    let dy = rand_vec(numel, seed + 3);
    let tx = ctx.upload(shape, &x).unwrap();
    let tg = ctx.upload(&[c], &gamma).unwrap();
    let tb = ctx.upload(&[c], &beta).unwrap();
    let tdy = ctx.upload(shape, &dy).unwrap();
    let (y, stats) = gn::group_norm(ctx, &tx, &tg, &tb, groups, eps, silu).unwrap();
    let (dx, dg, db) = gn::group_norm_backward(ctx, &tx, &tg, &tb, &stats, &tdy, groups, silu).unwrap();
    assert_eq!(y.shape(), shape);
    assert_eq!(stats.shape(), &[n, groups, 2]);
    let (x64, g64, b64) = (to_f64(&x), to_f64(&gamma), to_f64(&beta));
    let (ry, rstats) = rf::group_norm(&x64, &g64, &b64, n, c, hw, groups, eps as f64, silu);
    let (rdx, rdg, rdb) = rf::group_norm_backward(&x64, &g64, &b64, &to_f64(&dy), n, c, hw, groups, eps as f64, silu);
    let name = format!("{shape:?} G={groups} silu={silu}");
    // f32 sums over a group: relative error ~1e-6 of mean and rstd, |xhat| <= ~sqrt(m).
    assert_close(
        &format!("{name} stats"),
        &ctx.read(&stats).unwrap(),
        &rstats,
        1e-5,
        1e-5,
    );
    // y = xhat·γ + β with |γ| < 2 inherits the stats' relative error times |xhat|.
    assert_close(&format!("{name} y"), &ctx.read(&y).unwrap(), &ry, 1e-4, 1e-4);
    // dx = rstd·(γg - mean(γg) - xhat·mean(γg·xhat)) cancels terms as large as the largest |dx|
    // of the group (tiny groups with tiny variance have huge rstd): error relative to max |dx|.
    let big = rdx.iter().fold(1.0f64, |a, v| a.max(v.abs()));
    assert_close(&format!("{name} dx"), &ctx.read(&dx).unwrap(), &rdx, 2e-5 * big, 1e-4);
    // The same backward with a residual gradient added as dx is written.
    let addend = rand_vec(numel, seed + 4);
    let tadd = ctx.upload(shape, &addend).unwrap();
    let (dx_add, _, _) =
        gn::group_norm_backward_add(ctx, &tx, &tg, &tb, &stats, &tdy, groups, silu, Some(&tadd)).unwrap();
    let rdx_add: Vec<f64> = rdx.iter().zip(&addend).map(|(d, a)| d + *a as f64).collect();
    assert_close(
        &format!("{name} dx + addend"),
        &ctx.read(&dx_add).unwrap(),
        &rdx_add,
        2e-5 * big + 1e-6,
        1e-4,
    );
    // dγ, dβ sum N·HW products of magnitude ~1: f32 accumulation error grows with the count.
    let tol = 1e-5 * (n * hw) as f64;
    assert_close(&format!("{name} dgamma"), &ctx.read(&dg).unwrap(), &rdg, tol, 1e-4);
    assert_close(&format!("{name} dbeta"), &ctx.read(&db).unwrap(), &rdb, tol, 1e-4);
    // The backward of dropout(y): dy is masked as ops::dropout masks y (the vec4 kernels draw
    // the mask as they read dy, the others run the dropout's backward first).
    let drop = Dropout {
        p: 0.25,
        seed: seed + 100,
        stream: 3,
    };
    let (ddx, ddg, ddb) =
        gn::group_norm_backward_dropout(ctx, &tx, &tg, &tb, &stats, &tdy, groups, silu, Some(drop), Some(&tadd))
            .unwrap();
    let masked = dref::dropout_backward(&to_f64(&dy), drop.p as f64, drop.seed, drop.stream);
    let (mdx, mdg, mdb) = rf::group_norm_backward(&x64, &g64, &b64, &masked, n, c, hw, groups, eps as f64, silu);
    let mdx_add: Vec<f64> = mdx.iter().zip(&addend).map(|(d, a)| d + *a as f64).collect();
    let big = mdx.iter().fold(big, |a, v| a.max(v.abs()));
    assert_close(
        &format!("{name} dropout dx + addend"),
        &ctx.read(&ddx).unwrap(),
        &mdx_add,
        2e-5 * big + 1e-6,
        1e-4,
    );
    assert_close(
        &format!("{name} dropout dgamma"),
        &ctx.read(&ddg).unwrap(),
        &mdg,
        2.0 * tol,
        1e-4,
    );
    assert_close(
        &format!("{name} dropout dbeta"),
        &ctx.read(&ddb).unwrap(),
        &mdb,
        2.0 * tol,
        1e-4,
    );
    // Dropout zeroes about p of dy: the masked gradient differs from the plain one.
    assert!(
        mdx.iter().zip(&rdx).any(|(a, b)| (a - b).abs() > 1e-6),
        "{name}: the mask changed nothing"
    );
}

#[test]
fn groupnorm_awkward_shapes() {
    for silu in [false, true] {
        check(&[1, 6, 5, 7], 1, silu, 0.0, 10); // one group, batch 1
        check(&[2, 6, 3, 3], 6, silu, 1.0, 11); // C = G
        check(&[3, 6, 7, 11], 3, silu, -2.0, 12); // C not divisible by 4, primes
        check(&[4, 12, 1, 1], 4, silu, 0.5, 13); // H·W = 1
        check(&[2, 14, 13, 17], 7, silu, 0.0, 14); // primes, groups of 442 elements
        check(&[2, 10, 37], 5, silu, 4.0, 15); // 3-D [N, C, L]
        check(&[1, 4, 61, 67], 2, silu, 0.0, 16); // rows longer than a workgroup
        check(&[2, 6, 67, 71], 3, silu, 0.0, 17); // rows and groups over several chunks (lavapipe)
                                                  // H·W % 4 == 0: the vec4 kernels (one row of 20, C not divisible by 4; rows and groups
                                                  // over several chunks, the last one partial)
        check(&[3, 6, 4, 5], 3, silu, 1.5, 18);
        check(&[2, 6, 64, 72], 2, silu, 0.0, 19);
    }
}

#[test]
fn groupnorm_large_mean_is_not_cancelled() {
    // mean 100 with unit-scale spread: E[x²]-E[x]² would lose ~4 digits here.
    check(&[2, 8, 16, 16], 4, false, 100.0, 20);
}

#[test]
fn groupnorm_million_element_groups() {
    check(&[1, 4, 512, 512], 2, true, 1.0, 21);
}

#[test]
fn groupnorm_more_groups_than_one_grid_dimension() {
    // N·G = N·C = 65,696 workgroups > 65,535: needs the 2-D grid in all three kernels.
    check(&[2053, 32, 2], 32, true, 0.0, 22);
}

#[test]
fn groupnorm_shape_errors() {
    let ctx = ctx();
    let x = ctx.upload(&[2, 6, 2, 2], &[0.0; 48]).unwrap();
    let g = ctx.upload(&[6], &[1.0; 6]).unwrap();
    let bad = ctx.upload(&[5], &[0.0; 5]).unwrap();
    let err = gn::group_norm(ctx, &x, &g, &bad, 3, 1e-5, false).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(
        err.to_string().contains("[6]") && err.to_string().contains("[5]"),
        "{err}"
    );
    let err = gn::group_norm(ctx, &x, &g, &g, 4, 1e-5, false).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let flat = ctx.upload(&[48], &[0.0; 48]).unwrap();
    assert!(matches!(
        gn::group_norm(ctx, &flat, &g, &g, 3, 1e-5, false),
        Err(Error::Shape { .. })
    ));
    let (_, stats) = gn::group_norm(ctx, &x, &g, &g, 3, 1e-5, false).unwrap();
    let dy = ctx.upload(&[2, 6, 4], &[0.0; 48]).unwrap();
    assert!(matches!(
        gn::group_norm_backward(ctx, &x, &g, &g, &stats, &dy, 3, false),
        Err(Error::Shape { .. })
    ));
}
