//! Criterion group "matmul": 1024³ (and a conv-shaped batched product) with every kernel this
//! adapter can run — the portable tiled kernel and the subgroup kernel for 8-wide SIMD CPU
//! adapters — side by side, printing GFLOP/s and the adapter. The CPU's own BLAS for the
//! ratio: `python3 benches/peers/numpy_matmul.py`.
mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ddpm_wgpu::ops::matmul::{gemm_with, supports, Kernel};

fn bench(c: &mut Criterion) {
    let ctx = common::ctx();
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(200));
    g.measurement_time(Duration::from_secs(3));
    // (batch, M, K, N): the 1024³, and a 3×3 conv's forward GEMM at 32×32 with 64
    // channels for 8 images (M = Cout, K = Cin·9 + 4, N = H·W).
    for (batch, m, k, n) in [(1usize, 1024usize, 1024usize, 1024usize), (8, 64, 580, 1024)] {
        let a = ctx.upload(&[batch, m, k], &vec![0.5; batch * m * k]).unwrap();
        let b = ctx.upload(&[batch, k, n], &vec![0.25; batch * k * n]).unwrap();
        let out = ctx.zeros(&[batch, m, n], "out").unwrap();
        let flops = 2.0 * (batch * m * k * n) as f64;
        for kernel in [Kernel::Tiled, Kernel::Subgroup { wg: 16 }, Kernel::Subgroup { wg: 32 }] {
            if !supports(&ctx, kernel, m, k, n, false) {
                println!("matmul {kernel:?}: not supported on {}", ctx.adapter_name());
                continue;
            }
            let run = || gemm_with(&ctx, kernel, &a, &b, &out, false, false, 1.0, 0.0).unwrap();
            let name = format!("{kernel:?} {batch}x{m}x{k}x{n}");
            let t = common::timed(&ctx, 3, run);
            common::report(&ctx, &format!("matmul {name}"), t / 3, flops, 0.0);
            g.bench_function(name, |bch| bch.iter_custom(|iters| common::timed(&ctx, iters, run)));
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
