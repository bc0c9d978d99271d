//! Train a tiny DDPM on a folder of PNGs with the library's training loop, drawing progress
//! with our own callback instead of the CLI's progress bar.
//!
//! ```text
//! cargo run --release --example train_folder -- [PNG_FOLDER] [STEPS]
//! ```
//!
//! Without a folder, a few 8×8 gradient images are written to a temporary folder first.
//! Subfolders of the PNG folder are classes (the model is then class-conditional). The
//! checkpoint (resumable with `Trainer::resume` or `ddpm train --resume`) and a sample grid go
//! to `ddpm_train_folder/` in the system temp folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ddpm_wgpu::diffusion::train::preset_for;
use ddpm_wgpu::{Context, Control, Dataset, Error, FitEnd, FitOptions, Progress, TrainConfig, Trainer, UNet};

fn main() -> ddpm_wgpu::Result<()> {
    let mut args = std::env::args().skip(1);
    let (folder, made_here) = match args.next() {
        Some(dir) => (PathBuf::from(dir), false),
        None => (write_tiny_dataset()?, true),
    };
    let steps: u64 = match args.next() {
        Some(s) => s
            .parse()
            .map_err(|_| Error::arg("STEPS", format!("'{s}' is not a number")))?,
        None => 6,
    };

    let ctx = Context::new()?;
    let data = Dataset::open(&folder, None, 3)?;
    println!(
        "{}: {} images of {}×{}×{}, {} classes",
        folder.display(),
        data.len(),
        data.channels,
        data.height,
        data.width,
        data.num_classes
    );

    let config = TrainConfig {
        batch_size: 4,
        lr: 1e-3,
        warmup_steps: 0,
        ema_decay: 0.9,
        label_dropout: if data.num_classes > 0 { 0.1 } else { 0.0 },
        seed: 1,
        ..TrainConfig::default()
    };
    // The "small" preset sized for this dataset, then shrunk to two levels of 8 and 16 channels
    // so that a step takes a fraction of a second even on a CPU adapter.
    let mut model_config = preset_for("small", &data, config.label_dropout)?;
    model_config.block_out_channels = vec![8, 16];
    model_config.down_block_types = vec!["DownBlock2D".into(), "AttnDownBlock2D".into()];
    model_config.up_block_types = vec!["AttnUpBlock2D".into(), "UpBlock2D".into()];
    model_config.norm_num_groups = 4;
    model_config.dropout = 0.0;
    model_config.validate()?;
    let mut unet = UNet::new(model_config)?;
    unet.init_random(&ctx, config.seed)?;
    println!("model: {} parameters on {}", unet.params.count(), ctx.adapter_name());

    let out = std::env::temp_dir().join("ddpm_train_folder");
    let mut trainer = Trainer::new(&ctx, unet, config)?;
    let opts = FitOptions {
        steps,
        out: Some(out.clone()),
        save_every: 0, // only at the end (and if stopped)
        sample_every: steps,
        sample_n: 4,
        sample_steps: 5,
    };
    let budget = Duration::from_secs(120);
    let end = trainer.fit(&ctx, &data, &opts, |p| match p {
        Progress::Step {
            stats,
            images_per_s,
            elapsed,
        } => {
            println!(
                "[{:>3}/{steps}] loss {:.4}  |g| {:.3}  lr {:.1e}  {images_per_s:.1} img/s",
                stats.step, stats.loss, stats.grad_norm, stats.lr
            );
            // The callback may end the run; fit then saves a checkpoint before returning.
            if *elapsed > budget {
                Control::Stop
            } else {
                Control::Continue
            }
        }
        Progress::Saved { dir, step } => {
            println!("      checkpoint at step {step} in {}", dir.display());
            Control::Continue
        }
        Progress::SampleGrid { path, step } => {
            println!("      EMA samples at step {step}: {}", path.display());
            Control::Continue
        }
        _ => Control::Continue,
    })?;
    if end == FitEnd::Stopped {
        println!("stopped early (time budget); resume from {}", out.display());
    }

    // The checkpoint's model/ folder is a diffusers UNet2DModel folder holding the EMA weights.
    let reloaded = UNet::from_pretrained(&ctx, out.join("model"))?;
    assert_eq!(reloaded.params.count(), trainer.unet.params.count());
    println!(
        "reloaded {} ({} parameters)",
        out.join("model").display(),
        reloaded.params.count()
    );
    if made_here {
        std::fs::remove_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
    }
    Ok(())
}

/// Write eight 8×8 RGB gradient PNGs into a fresh temporary folder.
fn write_tiny_dataset() -> ddpm_wgpu::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ddpm_tiny_pngs_{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for k in 0..8u32 {
        let mut rgb = Vec::with_capacity(8 * 8 * 3);
        for y in 0..8u32 {
            for x in 0..8u32 {
                rgb.extend([(x * 32 + k * 8) as u8, (y * 32) as u8, (255 - k * 30) as u8]);
            }
        }
        write_png(&dir.join(format!("{k}.png")), 8, 8, &rgb)?;
    }
    Ok(dir)
}

fn write_png(path: &Path, w: u32, h: u32, rgb: &[u8]) -> ddpm_wgpu::Result<()> {
    let bad = |e: png::EncodingError| Error::Data {
        path: path.into(),
        msg: e.to_string(),
    };
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(bad)?;
    writer.write_image_data(rgb).map_err(bad)
}
