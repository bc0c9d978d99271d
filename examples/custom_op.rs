//! Add an op from outside the crate: a WGSL kernel (forward and backward entry points side by
//! side), run with [`Context::run_wgsl`]; a CPU f64 reference of both as plain loops; a
//! finite-difference check of the reference backward; and the GPU against the reference.
//!
//! ```text
//! cargo run --release --example custom_op
//! ```
//!
//! The op is softplus(x) = ln(1 + eˣ), with d softplus/dx = σ(x) = 1 / (1 + e⁻ˣ).
//!
//! Contract:
//! - `softplus_forward(x [n])` → y [n] (=).
//! - `softplus_backward(x [n], dy [n])` → dx [n] (=) = dy · σ(x).

use ddpm_wgpu::{Context, Error, Tensor, WgslKernel};

const SOFTPLUS_WGSL: &str = r#"
struct Params { n: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

// Context::grid splits long grids over y; recover the linear index and bounds-check it.
fn index(wg: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 64u + li;
}

// ln(1 + eˣ) = max(x, 0) + ln(1 + e^−|x|): no overflow for large x, no lost digits for small.
@compute @workgroup_size(64)
fn softplus_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let i = index(wg, nwg, li);
    if i >= p.n { return; }
    let v = x[i];
    y[i] = max(v, 0.0) + log(1.0 + exp(-abs(v)));
}

// σ(x) written so that exp never overflows.
@compute @workgroup_size(64)
fn softplus_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let i = index(wg, nwg, li);
    if i >= p.n { return; }
    let v = x[i];
    let e = exp(-abs(v));
    let s = select(e / (1.0 + e), 1.0 / (1.0 + e), v >= 0.0);
    dx[i] = dy[i] * s;
}
"#;

const FORWARD: WgslKernel<'static> = WgslKernel {
    name: "example_softplus",
    source: SOFTPLUS_WGSL,
    entry: "softplus_forward",
};
const BACKWARD: WgslKernel<'static> = WgslKernel {
    entry: "softplus_backward",
    ..FORWARD
};

/// Launcher: y = softplus(x), any shape.
fn softplus(ctx: &Context, x: &Tensor) -> ddpm_wgpu::Result<Tensor> {
    let y = ctx.empty(x.shape(), "softplus.y")?;
    let n = x.numel() as u32;
    ctx.run_wgsl(&FORWARD, &n.to_le_bytes(), &[x, &y], ctx.grid(n.div_ceil(64)))?;
    Ok(y)
}

/// Launcher: dx = dy · σ(x); dy must be shaped like x.
fn softplus_backward(ctx: &Context, x: &Tensor, dy: &Tensor) -> ddpm_wgpu::Result<Tensor> {
    dy.expect_shape("softplus_backward", "dy", x.shape())?;
    let dx = ctx.empty(x.shape(), "softplus.dx")?;
    let n = x.numel() as u32;
    ctx.run_wgsl(&BACKWARD, &n.to_le_bytes(), &[x, dy, &dx], ctx.grid(n.div_ceil(64)))?;
    Ok(dx)
}

/// CPU f64 reference, forward: the definition.
fn softplus_ref(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| (1.0 + v.exp()).ln()).collect()
}

/// CPU f64 reference, backward.
fn softplus_backward_ref(x: &[f64], dy: &[f64]) -> Vec<f64> {
    x.iter().zip(dy).map(|(&v, &g)| g / (1.0 + (-v).exp())).collect()
}

/// Fail with the largest error, where it is and the first few mismatches.
fn assert_close(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let mut worst = (0.0f64, 0usize);
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        if err > worst.0 {
            worst = (err, i);
        }
        if err > atol + rtol * w.abs() && bad.len() < 5 {
            bad.push(format!("[{i}] got {g} want {w}"));
        }
    }
    println!("{name}: max |error| {:.2e} at [{}]", worst.0, worst.1);
    assert!(bad.is_empty(), "{name}: mismatches {}", bad.join(", "));
}

fn main() -> ddpm_wgpu::Result<()> {
    // 1. The reference backward against central finite differences of the reference forward,
    //    through L = Σ wᵢ softplus(xᵢ) so every element gets its own weight.
    let n = 1000; // not a multiple of the workgroup size on purpose
    let x: Vec<f64> = (0..n)
        .map(|i| ((i * 7919 % n) as f64 / n as f64 - 0.5) * 60.0)
        .collect();
    let w: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.61).sin()).collect();
    let grad = softplus_backward_ref(&x, &w);
    let h = 1e-5;
    let mut worst_fd = 0.0f64;
    for i in 0..n {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += h;
        xm[i] -= h;
        let fd = w[i] * (softplus_ref(&xp)[i] - softplus_ref(&xm)[i]) / (2.0 * h);
        worst_fd = worst_fd.max((fd - grad[i]).abs());
    }
    println!("reference backward vs finite differences: max |error| {worst_fd:.2e}");
    // Central differences in f64 with h = 1e-5 are good to ~1e-9 here.
    assert!(worst_fd < 1e-7, "reference gradient is wrong");

    // 2. The GPU kernels against the reference.
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter_name());
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let xs: Vec<f64> = x32.iter().map(|&v| v as f64).collect(); // the f32 inputs, exactly
    let ws: Vec<f64> = w32.iter().map(|&v| v as f64).collect();
    let x_gpu = ctx.upload(&[n], &x32)?;
    let dy_gpu = ctx.upload(&[n], &w32)?;
    let y = softplus(&ctx, &x_gpu)?;
    let dx = softplus_backward(&ctx, &x_gpu, &dy_gpu)?;
    // f32 exp/log: a few ulps relative, and y reaches 30 at the ends.
    assert_close("softplus forward", &ctx.read(&y)?, &softplus_ref(&xs), 1e-6, 1e-5);
    assert_close(
        "softplus backward",
        &ctx.read(&dx)?,
        &softplus_backward_ref(&xs, &ws),
        1e-6,
        1e-5,
    );

    // 3. Mistakes come back as errors and leave the context usable.
    let wrong = ctx.run_wgsl(&FORWARD, &[], &[&x_gpu, &y], [1, 1, 1]);
    println!(
        "without params: {}",
        wrong.as_ref().map_or_else(Error::to_string, |_| "ok?".into())
    );
    assert!(wrong.is_err());
    assert_close(
        "forward again",
        &ctx.read(&softplus(&ctx, &x_gpu)?)?,
        &softplus_ref(&xs),
        1e-6,
        1e-5,
    );
    Ok(())
}
