//! L_simple and the global gradient norm of a model on one fixed batch, in eval mode and over
//! 12 dropout seeds in train mode: the engine's side of `scripts/grad_norm_batch.py`, which
//! writes the batch and prints PyTorch's figures for the same model.
//!
//! ```text
//! cargo run --release --example grad_norm -- MODEL_DIR BATCH.safetensors
//! ```
use std::path::PathBuf;

use ddpm_wgpu::checkpoint::TensorFile;
use ddpm_wgpu::nn::{Grads, Mode};
use ddpm_wgpu::ops::{loss, optim};
use ddpm_wgpu::{Context, Result, UNet};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(batch)) = (args.next(), args.next()) else {
        eprintln!("usage: grad_norm MODEL_DIR BATCH.safetensors (from scripts/grad_norm_batch.py)");
        std::process::exit(2);
    };
    let ctx = Context::new()?;
    let unet = UNet::from_pretrained(&ctx, PathBuf::from(model))?;
    let io = TensorFile::read(&PathBuf::from(batch))?;
    let (x, t, noise) = (
        io.upload(&ctx, "sample")?,
        io.upload(&ctx, "timestep")?,
        io.upload(&ctx, "noise")?,
    );
    let y = io.upload(&ctx, "class_labels")?;
    let run = |mode: Mode| -> Result<(f64, f64)> {
        let (pred, tape) = unet.forward_tape(&ctx, &x, &t, Some(&y), mode)?;
        let l = ctx.read(&loss::mse_loss(&ctx, &pred, &noise)?)?[0] as f64;
        let dpred = loss::mse_loss_backward(&ctx, &pred, &noise, 1.0)?;
        let mut grads = Grads::new(unet.params.len());
        unet.backward(&ctx, tape, &dpred, &mut grads)?;
        // The trainer's own measure: Σ g² over every parameter's gradient, one readback.
        let list: Vec<&ddpm_wgpu::Tensor> = (0..unet.params.len()).filter_map(|i| grads.get(i)).collect();
        let sq = ctx.read(&optim::grad_norm_sq(&ctx, &list)?)?[0] as f64;
        Ok((l, sq.sqrt()))
    };
    let (l, g) = run(Mode::EVAL)?;
    println!("ddpm-wgpu eval: loss {l:.6}  gradient norm {g:.5}");
    let v = (0..12u64)
        .map(|s| {
            run(Mode {
                train: true,
                seed: 1000 + s,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let stats = |f: fn(&(f64, f64)) -> f64| {
        let m = v.iter().map(f).sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|p| (f(p) - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt();
        (m, sd)
    };
    let ((lm, ls), (gm, gs)) = (stats(|p| p.0), stats(|p| p.1));
    println!("ddpm-wgpu train, 12 dropout seeds: loss {lm:.5} ± {ls:.5}  gradient norm {gm:.5} ± {gs:.5} (mean ± sd)");
    Ok(())
}
