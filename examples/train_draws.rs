//! The random draws of a training run, for replaying it in PyTorch
//! (`benches/peers/torch_train_fmnist.py --draws OUT/draws.safetensors --init OUT/init`).
//!
//! Resumes the trainer of a run (its options: seed, batch, label dropout, flips, schedule; and
//! its model config), writes the initial weights that `ddpm train` starts from
//! (`init_random(seed)`) as a diffusers folder `OUT/init`, and, for steps 0..STEPS, the images,
//! timesteps, labels and noise ε the trainer draws, stacked per step into
//! `OUT/draws.safetensors` (`x0` [S, B, C, H, W], `t` [S, B], `eps` like `x0`, and `y` [S, B]
//! for a labelled dataset).
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
use ddpm_wgpu::{Context, Dataset, Error, Result, Trainer};

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
    let ctx = Context::new()?;
    // The run's trainer (its options and model config), its weights put back to where
    // `ddpm train` started them: the draws depend only on the options and the step.
    let mut trainer = Trainer::resume(&ctx, &run)?;
    let seed = trainer.config.seed;
    trainer.unet.init_random(&ctx, seed)?;
    let cfg = trainer.unet.config().clone();
    let mut data = Dataset::open(images.as_ref(), Some(labels.as_ref()), cfg.in_channels)?;
    data.pad_to(cfg.sample_size)?;
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
