//! Criterion group "sampling": one DDIM step (U-Net forward + fused update) and a full 50-step
//! DDIM run of the `small` preset at batch 16, printing images/s and how many GPU→CPU
//! readbacks the loop issued (the whole loop must issue none before the final read).
//! `ddpm-cifar10` at batch 4 is timed for one step and extrapolated to 50 (a full run takes
//! minutes on a software adapter); set DDPM_BENCH_CIFAR_FULL=1 to time the whole run.
//! Peer: benches/peers/diffusers_sampling.py.
mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ddpm_wgpu::diffusion::sample::{sample, SampleOptions, Sampler, Spacing};
use ddpm_wgpu::diffusion::Schedule;
use ddpm_wgpu::{Context, UNet, UNetConfig};

fn model(ctx: &Context, mut cfg: UNetConfig) -> UNet {
    cfg.num_class_embeds = None;
    let mut unet = UNet::new(cfg).unwrap();
    unet.init_random(ctx, 0).unwrap();
    unet
}

fn opts(n: usize, steps: usize) -> SampleOptions {
    SampleOptions {
        n,
        size: 32,
        sampler: Sampler::Ddim { eta: 0.0, clip: true },
        spacing: Spacing::Leading,
        steps,
        seed: 0,
        guidance: None,
        keep: Vec::new(),
    }
}

/// Time one sampling run of `steps` steps and print images/s and the readbacks it issued.
fn run(ctx: &Context, name: &str, unet: &UNet, n: usize, steps: usize) -> Duration {
    let schedule = Schedule::ddpm();
    let reads = ctx.readback_count();
    let start = Instant::now();
    let out = sample(ctx, unet, &schedule, &opts(n, steps), |_, _| {}).unwrap();
    let inside = ctx.readback_count() - reads;
    let _ = ctx.read(&out.images).unwrap();
    let t = start.elapsed();
    println!(
        "{name}: {:.2} s  {:.3} images/s  {:.1} ms/step  readbacks inside the loop: {inside}  [{}]",
        t.as_secs_f64(),
        n as f64 / t.as_secs_f64(),
        t.as_secs_f64() * 1e3 / steps as f64,
        common::adapter(ctx)
    );
    t
}

fn bench(c: &mut Criterion) {
    let ctx = common::ctx();
    let small = model(&ctx, UNetConfig::small(1, None));
    run(&ctx, "sampling small b16 ddim 1 step", &small, 16, 1);
    run(&ctx, "sampling small b16 ddim 50 steps", &small, 16, 50);

    let cifar = model(&ctx, UNetConfig::ddpm_cifar10());
    let one = run(&ctx, "sampling ddpm-cifar10 b4 ddim 1 step", &cifar, 4, 1);
    if std::env::var_os("DDPM_BENCH_CIFAR_FULL").is_some() {
        run(&ctx, "sampling ddpm-cifar10 b4 ddim 50 steps", &cifar, 4, 50);
    } else {
        println!(
            "sampling ddpm-cifar10 b4 ddim 50 steps (50 × one step): {:.1} s  {:.3} images/s",
            one.as_secs_f64() * 50.0,
            4.0 / (one.as_secs_f64() * 50.0)
        );
    }
    drop(cifar);

    let mut g = c.benchmark_group("sampling");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(1));
    let schedule = Schedule::ddpm();
    g.bench_function("small b16 ddim step", |b| {
        b.iter_custom(|iters| {
            common::timed(&ctx, iters, || {
                sample(&ctx, &small, &schedule, &opts(16, 1), |_, _| {}).unwrap();
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
