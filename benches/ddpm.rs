//! Criterion group "ddpm": the fused reverse-step update and q_sample on a 16×3×32×32 batch, and
//! randn of 1M elements. Prints GB/s (bytes each kernel must move) and the adapter name.
mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use ddpm_wgpu::ops::{
    ddpm::{ddpm_step, q_sample, DdpmStep},
    random::randn,
};

fn bench(c: &mut Criterion) {
    let ctx = common::ctx();
    let shape = [16usize, 3, 32, 32];
    let n: usize = shape.iter().product();
    let x = randn(&ctx, &shape, 1, 0).unwrap();
    let e = randn(&ctx, &shape, 1, 1).unwrap();
    let t = ctx
        .upload(&[16], &(0..16).map(|i| (i * 61) as f32).collect::<Vec<_>>())
        .unwrap();
    let sab: Vec<f32> = (0..1000).map(|i| 1.0 - i as f32 / 1000.0).collect();
    let somab: Vec<f32> = sab.iter().map(|a| (1.0 - a * a).sqrt()).collect();
    let sab = ctx.upload(&[1000], &sab).unwrap();
    let somab = ctx.upload(&[1000], &somab).unwrap();
    let step = DdpmStep {
        coef_x: 1.01,
        coef_eps: 0.02,
        sigma: 0.1,
    };
    let mut g = c.benchmark_group("ddpm");
    g.sample_size(10);
    g.bench_function("ddpm_step 16x3x32x32", |b| {
        b.iter_custom(|iters| {
            let d = common::timed(&ctx, iters, || {
                ddpm_step(&ctx, &x, &e, &step, 7, 3).unwrap();
            });
            // reads x_t and eps_pred, writes x_{t-1}
            common::report(&ctx, "ddpm_step 16x3x32x32", d / iters as u32, 0.0, 12.0 * n as f64);
            d
        })
    });
    g.bench_function("q_sample 16x3x32x32", |b| {
        b.iter_custom(|iters| {
            let d = common::timed(&ctx, iters, || {
                q_sample(&ctx, &x, &t, &sab, &somab, 7, 3).unwrap();
            });
            // reads x0, writes x_t and eps
            common::report(&ctx, "q_sample 16x3x32x32", d / iters as u32, 0.0, 12.0 * n as f64);
            d
        })
    });
    g.bench_function("randn 1M", |b| {
        b.iter_custom(|iters| {
            let d = common::timed(&ctx, iters, || {
                randn(&ctx, &[1 << 20], 7, 3).unwrap();
            });
            common::report(&ctx, "randn 1M", d / iters as u32, 0.0, 4.0 * (1 << 20) as f64);
            d
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
