//! Plain against wide loads (`Context::wide_loads`), alternated in one process so that both see
//! the same machine: training steps of the small preset at batch 32 on synthetic data, then
//! 4-step DDIM runs of the shipped model (one image per class, 10). Prints the minimum and
//! median of each; on a shared machine compare those, never a single step.
//! `cargo run --release --example wide_ab -- 16` (16 rounds of each).
use std::path::Path;
use std::time::Instant;

use ddpm_wgpu::data::Dataset;
use ddpm_wgpu::diffusion::generate::{load_model, sample_model, SampleRequest};
use ddpm_wgpu::diffusion::{TrainConfig, Trainer};
use ddpm_wgpu::{Context, UNet, UNetConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(8), |s| s.parse())?;
    let ctxs = [
        Context::new()?.with_wide_loads(false)?,
        Context::new()?.with_wide_loads(true)?,
    ];
    println!("adapter: {}", ctxs[0].adapter_name());

    let mut cfg = UNetConfig::preset("small")?;
    cfg.in_channels = 1;
    cfg.out_channels = 1;
    cfg.num_class_embeds = None;
    let (n, size) = (64, 32 * 32);
    let data = Dataset {
        images: (0..n * size)
            .map(|i| ((i % size) as f32 * 0.05 + (i / size) as f32).sin())
            .collect(),
        labels: Vec::new(),
        num_classes: 0,
        channels: 1,
        height: 32,
        width: 32,
        class_names: Vec::new(),
    };
    let mut trainers = Vec::new();
    for ctx in &ctxs {
        let mut unet = UNet::new(cfg.clone())?;
        unet.init_random(ctx, 0)?;
        let config = TrainConfig {
            batch_size: 32,
            warmup_steps: 10,
            ..TrainConfig::default()
        };
        let mut t = Trainer::new(ctx, unet, config)?;
        t.train_step(ctx, &data)?;
        ctx.sync()?;
        trainers.push(t);
    }
    let mut train = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, ctx) in ctxs.iter().enumerate() {
            let start = Instant::now();
            trainers[i].train_step(ctx, &data)?;
            ctx.sync()?;
            train[i].push(start.elapsed().as_secs_f64());
        }
    }
    drop(trainers);

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/default-model");
    let models = ctxs
        .iter()
        .map(|c| load_model(c, &dir))
        .collect::<Result<Vec<_>, _>>()?;
    let req = SampleRequest {
        sampler: "ddim".into(),
        steps: Some(4),
        n: 16,
        ..SampleRequest::default()
    };
    let mut images = Vec::new();
    for (ctx, model) in ctxs.iter().zip(&models) {
        images.push(sample_model(ctx, model, &req, |_, _| {})?.images);
    }
    let same = images[0]
        .iter()
        .zip(&images[1])
        .all(|(a, b)| a.to_bits() == b.to_bits());
    let mut sample = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, ctx) in ctxs.iter().enumerate() {
            let start = Instant::now();
            sample_model(ctx, &models[i], &req, |_, _| {})?;
            sample[i].push(start.elapsed().as_secs_f64() / 4.0);
        }
    }
    for (what, runs) in [
        ("train step small b32", &mut train),
        ("DDIM step, shipped model, 10 images", &mut sample),
    ] {
        for (i, t) in runs.iter_mut().enumerate() {
            t.sort_by(|a, b| a.total_cmp(b));
            println!(
                "{what}, {} loads: min {:.3} s, median {:.3} s",
                ["plain", "wide"][i],
                t[0],
                t[t.len() / 2]
            );
        }
        println!(
            "{what}: wide / plain = {:.3} (min), {:.3} (median)",
            runs[1][0] / runs[0][0],
            runs[1][rounds / 2] / runs[0][rounds / 2]
        );
    }
    println!("sampled images bit-identical: {same}");
    Ok(())
}
