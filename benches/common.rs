//! Shared bench helpers: one context, synchronised timing, throughput printing.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use ddpm_wgpu::Context;

pub fn ctx() -> Context {
    ddpm_wgpu::tune_software_threads();
    let ctx = Context::new().expect("benchmarks need an adapter (apt-get install mesa-vulkan-drivers)");
    println!("adapter: {}", adapter(&ctx));
    ctx
}

/// Time `iters` runs of `f` (which records GPU work), waiting for the GPU inside the timed region.
pub fn timed(ctx: &Context, iters: u64, mut f: impl FnMut()) -> Duration {
    // warm-up: builds pipelines and fills the buffer pool
    f();
    ctx.sync().unwrap();
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    ctx.sync().unwrap();
    start.elapsed()
}

/// Print a throughput line, e.g. `matmul 1024^3: 12.3 ms  87.1 GFLOP/s  [adapter]`.
pub fn report(ctx: &Context, name: &str, per_iter: Duration, flops: f64, bytes: f64) {
    let s = per_iter.as_secs_f64();
    let mut line = format!("{name}: {:.3} ms", s * 1e3);
    if flops > 0.0 {
        line += &format!("  {:.2} GFLOP/s", flops / s / 1e9);
    }
    if bytes > 0.0 {
        line += &format!("  {:.2} GB/s", bytes / s / 1e9);
    }
    println!("{line}  [{}]", adapter(ctx));
}

/// The adapter and its driver version (llvmpipe's speed depends on the Mesa release).
pub fn adapter(ctx: &Context) -> String {
    let info = ctx.adapter_info();
    format!("{}, {}", ctx.adapter_name(), info.driver_info)
        .trim_end_matches(", ")
        .to_string()
}
