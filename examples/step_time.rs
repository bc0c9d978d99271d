//! Times single training steps of a preset on synthetic data and prints each one, for A/B runs
//! of two builds on a shared machine (compare the minimum, which noise only ever raises; the CPU
//! time of the process, adapter threads included, is less sensitive to other tenants):
//! `cargo run --release --example step_time -- small 32 6`.
//!
//! `step_time small 32 serve` sets up, runs one step, prints `ready` and then, for each line
//! `N` read from stdin, runs N steps and prints one JSON line (mean and fastest step, images/s,
//! CPU seconds per step): benches/peers/paired.py alternates it with the PyTorch step.
use std::io::BufRead;
use std::time::Instant;

use ddpm_wgpu::data::Dataset;
use ddpm_wgpu::diffusion::{TrainConfig, Trainer};
use ddpm_wgpu::{Context, UNet, UNetConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map_or("small", |s| s.as_str());
    let batch: usize = args.get(2).map_or(Ok(32), |s| s.parse())?;
    let serve = args.get(3).is_some_and(|s| s == "serve");
    let steps: usize = if serve {
        0
    } else {
        args.get(3).map_or(Ok(5), |s| s.parse())?
    };
    ddpm_wgpu::tune_software_threads();
    let ctx = Context::new()?;
    let mut cfg = UNetConfig::preset(preset)?;
    // As benches/train_step.rs and benches/peers/_presets.py: 1 channel for small, 3 otherwise.
    let channels = if preset == "small" { 1 } else { 3 };
    cfg.in_channels = channels;
    cfg.out_channels = channels;
    cfg.num_class_embeds = None;
    let size = channels * 32 * 32;
    let n = 64;
    let data = Dataset {
        images: (0..n * size)
            .map(|i| ((i % size) as f32 * 0.05 + (i / size) as f32).sin())
            .collect(),
        labels: Vec::new(),
        num_classes: 0,
        channels,
        height: 32,
        width: 32,
        class_names: Vec::new(),
    };
    let mut unet = UNet::new(cfg)?;
    unet.init_random(&ctx, 0)?;
    let config = TrainConfig {
        batch_size: batch,
        warmup_steps: 10,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(&ctx, unet, config)?;
    t.train_step(&ctx, &data)?;
    ctx.sync()?;
    if serve {
        println!("ready");
        for line in std::io::stdin().lock().lines() {
            let n: usize = line?.trim().parse()?;
            let (times, cpu) = timed_steps(&ctx, &mut t, &data, n)?;
            let mean = times.iter().sum::<f64>() / n as f64;
            let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
            println!(
                "{{\"steps\": {n}, \"sec_per_step_mean\": {mean:.6}, \"sec_per_step_min\": {min:.6}, \"images_per_s\": {:.4}, \"cpu_s_per_step\": {:.4}}}",
                batch as f64 / mean,
                cpu.iter().sum::<f64>() / n as f64
            );
        }
        return Ok(());
    }
    let (times, cpu) = timed_steps(&ctx, &mut t, &data, steps)?;
    let cpu_min = cpu.iter().cloned().fold(f64::INFINITY, f64::min);
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    let shown: Vec<String> = times.iter().map(|s| format!("{s:.3}")).collect();
    let shown_cpu: Vec<String> = cpu.iter().map(|s| format!("{s:.2}")).collect();
    println!(
        "{preset} b{batch}: min {min:.3} s/step ({:.2} images/s); steps {}; CPU time min {cpu_min:.3} s/step ({})",
        batch as f64 / min,
        shown.join(" "),
        shown_cpu.join(" ")
    );
    Ok(())
}

/// Wall and CPU seconds of each of `steps` training steps.
fn timed_steps(
    ctx: &Context,
    t: &mut Trainer,
    data: &Dataset,
    steps: usize,
) -> Result<(Vec<f64>, Vec<f64>), Box<dyn std::error::Error>> {
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..steps {
        let start = Instant::now();
        let c0 = cpu_seconds();
        t.train_step(ctx, data)?;
        ctx.sync()?;
        times.push(start.elapsed().as_secs_f64());
        cpu.push(cpu_seconds() - c0);
    }
    Ok((times, cpu))
}

/// User + system CPU seconds of this process (all threads, the adapter's included), from
/// /proc/self/stat; 0 where that file does not exist.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}
