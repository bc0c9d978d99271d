//! Use a wgpu device that the host application created (a game engine, a UI toolkit): build the
//! Instance, Adapter, Device and Queue by hand, hand them to [`Context::from_device`], then run
//! an op and a U-Net forward pass on them.
//!
//! ```text
//! cargo run --release --example shared_device
//! ```

use ddpm_wgpu::{ops, Context, Error, UNet};

fn main() -> ddpm_wgpu::Result<()> {
    // What the host application does for itself.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .map_err(|e| Error::Gpu(format!("no adapter: {e}")))?;
    let info = adapter.get_info();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("host application device"),
        // No optional features: the engine falls back to kernels without subgroups or f16.
        required_features: wgpu::Features::empty(),
        // The adapter's own limits; wgpu's defaults are too small for larger models.
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .map_err(|e| Error::Gpu(format!("request_device on {}: {e}", info.name)))?;

    // The engine borrows clones of the handles; the host keeps using its own.
    let ctx = Context::from_device(device.clone(), queue.clone());
    println!("engine on the host's device: {}", ctx.adapter_name());

    let a = ctx.upload(&[4], &[1.0, 2.0, 3.0, 4.0])?;
    let b = ctx.upload(&[4], &[0.5, 0.5, 0.5, 0.5])?;
    let sum = ctx.read(&ops::elementwise::add(&ctx, &a, &b)?)?;
    assert_eq!(sum, vec![1.5, 2.5, 3.5, 4.5]);
    println!("add: {sum:?}");

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet_a_basic");
    let unet = UNet::from_pretrained(&ctx, &dir)?;
    let cfg = unet.config();
    let (c, s) = (cfg.in_channels, cfg.sample_size);
    let x: Vec<f32> = (0..2 * c * s * s).map(|i| ((i as f32) * 0.37).sin()).collect();
    let x = ctx.upload(&[2, c, s, s], &x)?;
    let t = ctx.upload(&[2], &[10.0, 900.0])?;
    let eps = unet.forward(&ctx, &x, &t, None)?;
    let eps = ctx.read(&eps)?;
    assert!(eps.iter().all(|v| v.is_finite()));
    let rms = (eps.iter().map(|v| v * v).sum::<f32>() / eps.len() as f32).sqrt();
    println!("U-Net forward on [2, {c}, {s}, {s}]: rms(ε_θ) = {rms:.4}");

    // The host's handles still work alongside the engine.
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(e.to_string()))?;
    drop(queue);
    Ok(())
}
