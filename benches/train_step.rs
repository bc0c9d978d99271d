//! Criterion group "train_step": one full training step (forward, backward, Adam, EMA) of the
//! `small` preset at batch 32 on synthetic 1×32×32 data, printing images/s (the mean of 10 timed
//! steps after 3 warm-up steps, as the peer times) and the peak GPU memory the engine allocated.
//! `ddpm-cifar10` at batch 8 is timed over 3 steps (as the peer; one step takes seconds on a
//! software adapter) and printed the same way. Peer: benches/peers/torch_train_step.py.
mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ddpm_wgpu::data::Dataset;
use ddpm_wgpu::diffusion::{TrainConfig, Trainer};
use ddpm_wgpu::{Context, UNet, UNetConfig};

fn dataset(channels: usize, n: usize) -> Dataset {
    let size = channels * 32 * 32;
    // Deterministic images in [−1, 1]: smooth stripes, one phase per image.
    let images = (0..n * size)
        .map(|i| ((i % size) as f32 * 0.05 + (i / size) as f32).sin())
        .collect();
    Dataset {
        images,
        labels: Vec::new(),
        num_classes: 0,
        channels,
        height: 32,
        width: 32,
        class_names: Vec::new(),
    }
}

fn trainer(ctx: &Context, mut cfg: UNetConfig, channels: usize, batch: usize) -> Trainer {
    cfg.in_channels = channels;
    cfg.out_channels = channels;
    cfg.num_class_embeds = None;
    let mut unet = UNet::new(cfg).unwrap();
    unet.init_random(ctx, 0).unwrap();
    let config = TrainConfig {
        batch_size: batch,
        warmup_steps: 10,
        ..TrainConfig::default()
    };
    Trainer::new(ctx, unet, config).unwrap()
}

/// Time `steps` training steps after `warmup` untimed ones and print images/s and peak memory.
fn report(ctx: &Context, name: &str, t: &mut Trainer, data: &Dataset, warmup: u64, steps: u64) -> Duration {
    for _ in 0..warmup {
        t.train_step(ctx, data).unwrap();
    }
    ctx.sync().unwrap();
    ctx.reset_peak_memory();
    let start = Instant::now();
    for _ in 0..steps {
        t.train_step(ctx, data).unwrap();
    }
    ctx.sync().unwrap();
    let per = start.elapsed() / steps as u32;
    let ips = t.config.batch_size as f64 / per.as_secs_f64();
    println!(
        "{name}: {:.2} s/step  {ips:.2} images/s  peak GPU memory {:.1} MiB  [{}]",
        per.as_secs_f64(),
        ctx.memory().peak_bytes as f64 / (1 << 20) as f64,
        common::adapter(ctx)
    );
    per
}

fn bench(c: &mut Criterion) {
    let ctx = common::ctx();
    let data = dataset(1, 64);
    let mut small = trainer(&ctx, UNetConfig::small(1, None), 1, 32);
    // Warm-up and timed steps as the PyTorch peer's (3 + 10; 1 + 3 for ddpm-cifar10): the first
    // steps after the first run slower here too (`step_time small 32 12`: 1.29, 1.29, 1.13 s,
    // then 0.83–1.16 s).
    report(&ctx, "train_step small b32", &mut small, &data, 3, 10);

    let cifar_data = dataset(3, 16);
    let mut cifar = trainer(&ctx, UNetConfig::ddpm_cifar10(), 3, 8);
    report(&ctx, "train_step ddpm-cifar10 b8", &mut cifar, &cifar_data, 1, 3);
    drop(cifar);

    let mut g = c.benchmark_group("train_step");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(1));
    g.bench_function("small b32", |b| {
        b.iter_custom(|iters| {
            common::timed(&ctx, iters, || {
                small.train_step(&ctx, &data).unwrap();
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
