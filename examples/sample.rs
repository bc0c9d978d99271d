//! Load a diffusers `UNet2DModel` folder and write a PNG grid of samples.
//!
//! ```text
//! cargo run --release --example sample -- [MODEL_DIR] [OUT.png] [STEPS]
//! ```
//!
//! MODEL_DIR defaults to the tiny test fixture `tests/fixtures/unet_a_basic` (untrained weights:
//! the grid is noise-like, but the whole path runs in a second), OUT to `samples.png` in the
//! system temp folder, STEPS (DDIM) to 10.

use std::path::PathBuf;

use ddpm_wgpu::diffusion::generate::{self, Format};
use ddpm_wgpu::{Context, Error, SampleRequest};

fn main() -> ddpm_wgpu::Result<()> {
    let mut args = std::env::args().skip(1);
    let model_dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet_a_basic"));
    let out = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("samples.png"));
    let steps = match args.next() {
        Some(s) => s
            .parse()
            .map_err(|_| Error::arg("STEPS", format!("'{s}' is not a number")))?,
        None => 10,
    };

    let ctx = Context::new()?;
    // The model folder's scheduler_config.json (if any) sets the noise schedule.
    let model = generate::load_model(&ctx, &model_dir)?;
    println!(
        "{}: {} parameters, {}×{} images, on {}",
        model.dir.display(),
        model.unet.params.count(),
        model.unet.config().sample_size,
        model.unet.config().sample_size,
        ctx.adapter_name()
    );
    let request = SampleRequest {
        sampler: "ddim".into(),
        steps: Some(steps),
        n: 8,
        seed: 0,
        ..SampleRequest::default()
    };
    // Nothing is read back from the GPU until the end; the callback only sees step counts.
    let samples = generate::sample_model(&ctx, &model, &request, |done, total| {
        if done == total || done % 5 == 0 {
            println!("  step {done}/{total}");
        }
    })?;
    samples.save(&out, Format::Png)?;
    let [n, c, h, w] = samples.shape;
    println!("wrote {} ({n} samples of {c}×{h}×{w})", out.display());
    Ok(())
}
