//! The `ddpm` command-line tool: a thin client of the library.

use clap::{Parser, Subcommand};
use ddpm_wgpu::gpu::adapter;
use ddpm_wgpu::{Context, ContextOptions};

#[derive(Parser)]
#[command(
    name = "ddpm",
    version,
    about = "Train and sample DDPMs on any GPU wgpu reaches"
)]
struct Cli {
    /// Backend(s) to search: vulkan, metal, dx12, gl (comma-separated). Env: DDPM_BACKEND.
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Adapter index (see `ddpm info`) or part of its name. Env: DDPM_ADAPTER.
    #[arg(long, global = true)]
    adapter: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List every adapter seen, the chosen one, its limits and features.
    Info,
}

fn main() {
    let cli = Cli::parse();
    let opts = ContextOptions::from_env().merged(cli.backend.clone(), cli.adapter.clone());
    let res = match cli.cmd {
        Cmd::Info => info(&opts),
    };
    if let Err(e) = res {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn info(opts: &ContextOptions) -> ddpm_wgpu::Result<()> {
    let all = adapter::list(opts)?;
    println!("adapters seen ({}):", all.len());
    for a in &all {
        println!(
            "  [{}] {} | backend {:?} | {:?} | driver {}",
            a.index, a.name, a.backend, a.device_type, a.driver
        );
    }
    let ctx = Context::with_options(opts)?;
    let l = ctx.limits();
    println!("chosen: {}", ctx.adapter_name());
    println!(
        "  max_storage_buffer_binding_size: {} MiB",
        l.max_storage_buffer_binding_size >> 20
    );
    println!("  max_buffer_size: {} MiB", l.max_buffer_size >> 20);
    println!(
        "  max_compute_workgroup_storage_size: {} KiB",
        l.max_compute_workgroup_storage_size >> 10
    );
    println!(
        "  max_compute_invocations_per_workgroup: {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroups_per_dimension: {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "  max_storage_buffers_per_shader_stage: {}",
        l.max_storage_buffers_per_shader_stage
    );
    let i = ctx.adapter_info();
    println!(
        "  subgroup size: {}..{}",
        i.subgroup_min_size, i.subgroup_max_size
    );
    println!(
        "  features: f16={} subgroups={} timestamps={}",
        ctx.has_f16(),
        ctx.has_subgroups(),
        ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY)
    );
    Ok(())
}
