//! Criterion group for the conv2d kernels: x [8,64,32,32] × w [64,64,3,3], stride 1, pad 1
//! (a mid-resolution UNet block conv), forward and forward + backward (dx, dw, db).
mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ddpm_wgpu::ops::conv2d::{conv2d_backward_with, conv2d_with, Algo, Conv2dParams};

fn bench(c: &mut Criterion) {
    let ctx = common::ctx();
    let (n, cin, h, w, cout, k) = (8, 64, 32, 32, 64, 3);
    let p = Conv2dParams::new(1, 1);
    let x = ctx.upload(&[n, cin, h, w], &vec![0.5; n * cin * h * w]).unwrap();
    let wt = ctx.upload(&[cout, cin, k, k], &vec![0.01; cout * cin * k * k]).unwrap();
    let b = ctx.upload(&[cout], &vec![0.1; cout]).unwrap();
    let dy = ctx.upload(&[n, cout, h, w], &vec![0.2; n * cout * h * w]).unwrap();
    // One GEMM of 2·M·N·K flops; the backward runs two more (dx and dw).
    let gemm = 2.0 * (cout * n * h * w * cin * k * k) as f64;

    let mut g = c.benchmark_group("conv2d");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(5));

    // The implicit GEMM (every adapter), im2col + subgroup GEMM, and what Auto picks here
    // (Winograd F(4×4, 3×3) forward and backward on CPU adapters with 8-wide subgroups),
    // side by side in one run. GFLOP/s count the direct convolution's FLOPs for all three.
    for (tag, algo) in [
        ("direct", Algo::Direct),
        ("im2col", Algo::Im2col { window: 0 }),
        ("auto", Algo::Auto),
    ] {
        let forward = || {
            conv2d_with(&ctx, algo, &x, &wt, Some(&b), p).unwrap();
        };
        let t = common::timed(&ctx, 3, forward);
        common::report(&ctx, &format!("conv2d {tag} forward 8x64x32x32 k3"), t / 3, gemm, 0.0);
        g.bench_function(format!("{tag} forward 8x64x32x32 k3"), |bch| {
            bch.iter_custom(|iters| common::timed(&ctx, iters, forward))
        });

        let train = || {
            let _y = conv2d_with(&ctx, algo, &x, &wt, Some(&b), p).unwrap();
            conv2d_backward_with(&ctx, algo, &x, &wt, &dy, p, true).unwrap();
        };
        let t = common::timed(&ctx, 3, train);
        common::report(
            &ctx,
            &format!("conv2d {tag} forward+backward 8x64x32x32 k3"),
            t / 3,
            3.0 * gemm,
            0.0,
        );
        g.bench_function(format!("{tag} forward+backward 8x64x32x32 k3"), |bch| {
            bch.iter_custom(|iters| common::timed(&ctx, iters, train))
        });

        // The backward's parts, for the record: dw + db alone, then with dx.
        let t = common::timed(&ctx, 3, || {
            conv2d_backward_with(&ctx, algo, &x, &wt, &dy, p, false).unwrap();
        });
        common::report(&ctx, &format!("conv2d {tag} backward dw+db"), t / 3, gemm, 0.0);
        let t = common::timed(&ctx, 3, || {
            conv2d_backward_with(&ctx, algo, &x, &wt, &dy, p, true).unwrap();
        });
        common::report(&ctx, &format!("conv2d {tag} backward dx+dw+db"), t / 3, 2.0 * gemm, 0.0);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
