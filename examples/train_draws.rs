//! The random draws of a training run, for replaying it in PyTorch
//! (`benches/peers/torch_train_fmnist.py --draws OUT/draws.safetensors --init OUT/init`).
//!
//! Rebuilds the trainer of a run from its `training_state.safetensors` options (seed, batch,
//! label dropout, flips, schedule) and its `model/config.json`, writes the initial weights that
//! `ddpm train` starts from (`init_random(seed)`) as a diffusers folder `OUT/init`, and, for
//! steps 0..STEPS, the images, timesteps, labels and noise ε the trainer draws, stacked per step
//! into `OUT/draws.safetensors` (`x0` [S, B, C, H, W], `t` [S, B], `eps` like `x0`, and `y` [S, B] for a labelled dataset).
//! The dataset is padded to the model's `sample_size`, as `ddpm train --image-size` does.
//!
//! ```text
//! cargo run --release --example train_draws -- assets/training/fmnist-small \
//!     /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \
//!     /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz 500 runs/draws
//! ```
use std::collections::HashMap;
use std::path::PathBuf;

use ddpm_wgpu::checkpoint::{serialize_f32, write_atomic};
use ddpm_wgpu::{Context, Dataset, Error, Result, TrainConfig, Trainer, UNet, UNetConfig};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [run, images, labels, steps, out] = args.as_slice() else {
        eprintln!("usage: train_draws RUN_DIR IMAGES.idx LABELS.idx STEPS OUT_DIR");
        std::process::exit(2);
    };
    let steps: u64 = steps
        .parse()
        .map_err(|_| Error::arg("STEPS", format!("'{steps}' is not a step count")))?;
    let (run, out) = (PathBuf::from(run), PathBuf::from(out));
    let state = run.join("training_state.safetensors");
    let bytes = std::fs::read(&state).map_err(|e| Error::io(&state, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| Error::Checkpoint {
        path: state.clone(),
        msg: e.to_string(),
    })?;
    let config: TrainConfig = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("train_config"))
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| Error::Checkpoint {
            path: state.clone(),
            msg: "metadata 'train_config' is missing or invalid".into(),
        })?;
    let cfg_path = run.join("model").join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let cfg = UNetConfig::from_json(&text)?;

    let ctx = Context::new()?;
    let mut data = Dataset::open(images.as_ref(), Some(labels.as_ref()), cfg.in_channels)?;
    data.pad_to(cfg.sample_size)?;
    let mut unet = UNet::new(cfg)?;
    unet.init_random(&ctx, config.seed)?;
    let mut trainer = Trainer::new(&ctx, unet, config)?;
    trainer.unet.save_pretrained(&ctx, out.join("init"))?;

    let (b, c, h, w) = (trainer.config.batch_size, data.channels, data.height, data.width);
    let (mut x0, mut t, mut y, mut eps) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in 0..steps {
        trainer.step = s;
        let d = trainer.step_draws(&ctx, &data)?;
        x0.extend(d.x0);
        t.extend(d.t);
        y.extend(d.y);
        eps.extend(d.eps);
    }
    let s = steps as usize;
    let mut meta = HashMap::new();
    meta.insert("seed".to_string(), trainer.config.seed.to_string());
    let mut tensors = vec![
        ("x0".to_string(), vec![s, b, c, h, w], x0),
        ("t".to_string(), vec![s, b], t),
        ("eps".to_string(), vec![s, b, c, h, w], eps),
    ];
    if !y.is_empty() {
        tensors.push(("y".to_string(), vec![s, b], y));
    }
    let bytes = serialize_f32(&tensors, Some(meta))?;
    let path = out.join("draws.safetensors");
    write_atomic(&path, &bytes)?;
    eprintln!(
        "wrote {} (steps 0..{steps}, batch {b}) and the initial weights {}",
        path.display(),
        out.join("init").display()
    );
    Ok(())
}
