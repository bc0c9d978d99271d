//! Criterion group "groupnorm": GroupNorm(32) forward + backward at [8, 64, 32, 32], with and
//! without the fused SiLU. Prints ms per step, effective GB/s and the adapter.
//! Run: `cargo bench --bench groupnorm`.
mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ddpm_wgpu::ops::groupnorm as gn;

fn bench(c: &mut Criterion) {
    let ctx = common::ctx();
    let shape = [8usize, 64, 32, 32];
    let (groups, ch) = (32, shape[1]);
    let numel: usize = shape.iter().product();
    let x = ctx.upload(&shape, &vec![0.5; numel]).unwrap();
    let x = ctx.duplicate(&x, "x").unwrap();
    let gamma = ctx.upload(&[ch], &vec![1.0; ch]).unwrap();
    let beta = ctx.upload(&[ch], &vec![0.0; ch]).unwrap();
    let dy = ctx.upload(&shape, &vec![0.25; numel]).unwrap();
    // Minimum traffic: forward reads x and writes y; backward reads x, dy twice and writes dx.
    let bytes = (numel * 4 * 7) as f64;
    let mut group = c.benchmark_group("groupnorm");
    group.sample_size(20).measurement_time(Duration::from_secs(4));
    for silu in [false, true] {
        let step = || {
            let (_y, stats) = gn::group_norm(&ctx, &x, &gamma, &beta, groups, 1e-5, silu).unwrap();
            let _ = gn::group_norm_backward(&ctx, &x, &gamma, &beta, &stats, &dy, groups, silu).unwrap();
        };
        let fwd = || {
            let _ = gn::group_norm(&ctx, &x, &gamma, &beta, groups, 1e-5, silu).unwrap();
        };
        let per = common::timed(&ctx, 20, fwd) / 20;
        common::report(
            &ctx,
            &format!("groupnorm fwd {shape:?} G={groups} silu={silu}"),
            per,
            0.0,
            (numel * 8) as f64,
        );
        let per = common::timed(&ctx, 20, step) / 20;
        common::report(
            &ctx,
            &format!("groupnorm fwd+bwd {shape:?} G={groups} silu={silu}"),
            per,
            0.0,
            bytes,
        );
        group.bench_function(format!("fwd+bwd silu={silu}"), |b| {
            b.iter_custom(|iters| common::timed(&ctx, iters, step))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
