//! # ddpm-wgpu
//!
//! A hand-written WGSL compute engine for denoising diffusion probabilistic models (Ho, Jain,
//! Abbeel 2020) that runs on any adapter wgpu reaches: Vulkan, Metal, DX12, GL, and Mesa's
//! software Vulkan driver (lavapipe) on machines with no GPU.
//!
//! ## The five-minute tour
//!
//! Everything starts from a [`Context`]: one adapter, its device and queue, the pipeline cache
//! and the buffer pool. [`Context::new`] picks an adapter (`DDPM_BACKEND`, `DDPM_ADAPTER`
//! choose); [`Context::from_device`] shares a `wgpu::Device` the host application already owns.
//!
//! Raw ops work on [`Tensor`]s (f32, row-major, on the GPU); reading one back waits for the GPU:
//!
//! ```
//! use ddpm_wgpu::{Context, ops};
//! # fn main() -> ddpm_wgpu::Result<()> {
//! let ctx = Context::new()?;
//! let a = ctx.upload(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
//! let b = ctx.upload(&[2, 3], &[6.0, 5.0, 4.0, 3.0, 2.0, 1.0])?;
//! let c = ops::elementwise::add(&ctx, &a, &b)?;
//! assert_eq!(ctx.read(&c)?, vec![7.0; 6]);
//! # Ok(()) }
//! ```
//!
//! A [`UNet`] loads from (and saves to) a diffusers `UNet2DModel` folder; its forward is
//! ε_θ(x_t, t):
//!
//! ```
//! use ddpm_wgpu::{Context, UNet};
//! # fn main() -> ddpm_wgpu::Result<()> {
//! let ctx = Context::new()?;
//! let unet = UNet::from_pretrained(&ctx, concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/unet_a_basic"))?;
//! let s = unet.config().sample_size;
//! let x = ctx.upload(&[1, 3, s, s], &vec![0.1; 3 * s * s])?;
//! let t = ctx.upload(&[1], &[500.0])?;
//! let eps = unet.forward(&ctx, &x, &t, None)?;
//! assert_eq!(eps.shape(), &[1, 3, s, s]);
//! assert!(ctx.read(&eps)?.iter().all(|v| v.is_finite()));
//! # Ok(()) }
//! ```
//!
//! Sampling a model folder is one call ([`diffusion::generate::sample_model`], what `ddpm
//! sample` runs); [`diffusion::sample::sample`] is the lower-level loop over a [`UNet`] and a
//! [`Schedule`]:
//!
//! ```
//! use ddpm_wgpu::{diffusion::generate, Context, SampleRequest};
//! # fn main() -> ddpm_wgpu::Result<()> {
//! let ctx = Context::new()?;
//! let model = generate::load_model(&ctx, concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/unet_a_basic").as_ref())?;
//! let req = SampleRequest { sampler: "ddim".into(), steps: Some(3), n: 2, seed: 7, ..SampleRequest::default() };
//! let out = generate::sample_model(&ctx, &model, &req, |done, total| eprintln!("step {done}/{total}"))?;
//! assert_eq!(out.shape, [2, 3, 8, 8]);
//! // out.save("grid.png".as_ref(), generate::Format::Png)?;
//! # Ok(()) }
//! ```
//!
//! Training is a [`Trainer`] (every option in [`TrainConfig`]) stepping on a [`Dataset`]:
//! [`Trainer::train_step`] one step at a time, or [`Trainer::fit`] with checkpoints, sample grids
//! and a progress callback that draws the caller's own display and may stop the run. The `ddpm`
//! command-line tool is a thin client of exactly these calls; `examples/` has a complete program
//! for each path (`sample`, `train_folder`, `shared_device`, `custom_op`).
//!
//! The successors of the DDPM paper sit on the same pieces: [`diffusion::hybrid`] (improved
//! DDPM's learned variance and hybrid loss), [`diffusion::sde`] (score-SDE and Langevin
//! samplers), [`nn::NoisyClassifier`] with [`diffusion::sample::sample_guided`] (guided
//! diffusion's classifier guidance, the classifier's input gradient taken by its own backward
//! pass inside the sampling loop) and [`diffusion::likelihood`] (exact log-likelihood through the
//! probability-flow ODE, the divergence by Hutchinson's estimator over [`UNet::backward_input`]).
//!
//! ## Architecture
//!
//! **How a tensor becomes a dispatch.** A [`Tensor`] is a pooled `wgpu::Buffer` plus a shape.
//! An op (say [`ops::groupnorm`]) checks its arguments' shapes and returns a typed [`Error`] if
//! they are wrong, takes its output buffer from the context's buffer pool (buffers come back to
//! the pool when the last `Tensor` holding them drops), packs the shapes into a small uniform
//! `Params` struct, and calls the crate-internal `Context::dispatch` with the shader, the entry
//! point, the override constants (workgroup and tile sizes only), the uniform bytes, the storage
//! buffers and the workgroup grid. `dispatch` fetches the compute pipeline from the pipeline
//! cache — built once per (shader, entry point, constants), its layout derived from the entry
//! point: binding 0 is the uniform, bindings 1.. the buffers in order — builds the bind group
//! and records one compute pass into the context's single pending command encoder. Nothing is
//! submitted until something is read back ([`Context::read`]), [`Context::flush`] or
//! [`Context::sync`] is called, or 4096 dispatches have piled up, so a whole training step or
//! sampling step is one or a few submits. A readback copies into a staging buffer, submits,
//! waits, and reports any GPU error as an [`Error`]. [`Context::run_wgsl`] is the same path,
//! open to kernels written outside the crate.
//!
//! **Where each kernel lives.** One op family, four files side by side:
//! `shaders/<family>.wgsl` (forward and backward entry points, embedded with `include_str!`),
//! `src/ops/<family>.rs` (the launchers, with the shape contract at the top: which outputs are
//! written `=` and which accumulated `+=`), `src/reference/<family>.rs` (the CPU f64 forward and
//! backward as plain loops, the ground truth of the tests), `tests/kernels/<family>.rs` (GPU
//! against reference, awkward shapes, finite-difference gradient checks), plus a criterion group
//! in `benches/`. Layers and the U-Net ([`nn`]) compose ops and record a tape for their
//! hand-written backward; [`diffusion`] holds schedules, training and the samplers.
//!
//! **How to add an op.** (1) Write the entry points in `shaders/<family>.wgsl`: `@group(0)
//! @binding(0)` a uniform params struct, then the storage buffers; shapes in the uniform, only
//! workgroup sizes as `override` constants; bounds-check every index (grids are padded, and large
//! ones split over y by [`Context::grid`]). (2) Add `src/ops/<family>.rs` with a `#[repr(C)]`
//! `Pod` params struct and a launcher that checks shapes and calls `ctx.dispatch`; declare it in
//! `src/ops/mod.rs`. (3) Add the f64 reference in `src/reference/<family>.rs`. (4) Test GPU
//! against reference in `tests/kernels/<family>.rs` (register it in `tests/kernels/main.rs`),
//! and the reference backward against finite differences. (5) Add a bench group in `benches/`.
//! Outside the crate, `examples/custom_op.rs` does the same with [`Context::run_wgsl`].
//!
//! **In the browser.** With the `web` feature the crate builds for `wasm32-unknown-unknown` over
//! wgpu's WebGPU backend, and the `web` module exports a small wasm-bindgen API (`web/build.sh`
//! builds it, `web/index.html` uses it). The page's one thread must never block, so every wait
//! has an async form that both targets share — [`Context::new_async`], [`Context::read_async`],
//! [`diffusion::generate::sample_model_async`] — and the blocking calls are those futures run
//! to completion natively, [`Error::WouldBlock`] in the browser.
#![warn(missing_docs)]
// On wasm32 wgpu's handles are neither Send nor Sync (the page has one thread) and std::fs::File
// holds nothing to drop: the Arcs and the explicit file drop are there for native targets.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync, clippy::drop_non_drop))]

pub mod checkpoint;
pub mod data;
pub mod diffusion;
pub mod error;
pub mod gpu;
pub mod image;
pub mod nn;
pub mod ops;
pub mod reference;
pub mod tensor;
#[cfg(all(feature = "web", target_arch = "wasm32"))]
pub mod web;

pub use data::Dataset;
pub use diffusion::generate::{Model, SampleOutput, SampleRequest, SchedulerConfig};
pub use diffusion::train::{Control, FitEnd, FitOptions, Progress, StepStats, TrainConfig, Trainer};
pub use diffusion::{BetaSchedule, Schedule};
pub use error::{Error, Result};
pub use gpu::{tune_software_threads, AdapterSummary, Context, ContextOptions, KernelProfile, MemoryStats, WgslKernel};
pub use nn::{UNet, UNetConfig};
pub use tensor::{DType, Tensor};
