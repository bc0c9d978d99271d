//! Counter-based random tensors (`shaders/random.wgsl`, Philox-4x32-10).
//!
//! # Contracts
//! - `rand_uniform(shape, seed, stream)` → out (= new tensor of `shape`): element i is the
//!   uniform in [0, 1) (2⁻²⁴ grid) of Philox block (seed, stream, index i).
//! - `randn(shape, seed, stream)` → out (=): element i is the standard normal of block
//!   (seed, stream, i).
//! - `rand_uniform_at` / `randn_at(shape, seed, stream, first)`: the same with element i at index
//!   `first + i` (64-bit), so a long stream can be drawn in pieces.
//!
//! Values are bit-identical to [`crate::reference::random::uniform`] /
//! [`crate::reference::random::normal`] on every adapter (integer arithmetic only; the reference
//! module documents the layout and the normal transform). The same shader also holds the dropout
//! and DDPM kernels, which draw these values in-line through `RngLaunch` (crate-internal).

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
use crate::tensor::Tensor;

pub(crate) static SHADER: Shader = crate::shader!("random");
const WG: u32 = 256;

/// Uniform block shared by every entry point of `shaders/random.wgsl` (field meanings there).
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct RngParams {
    pub n: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub stream: u32,
    pub off_lo: u32,
    pub off_hi: u32,
    pub thresh: u32,
    pub per_sample: u32,
    pub a: f32,
    pub b: f32,
    pub sigma: f32,
    pub steps: u32,
    pub s_x: f32,
    pub s_e: f32,
    pub clip: u32,
    pub c_x: f32,
    pub c_x0: f32,
    pub c_e: f32,
    pub c_prev: f32,
    pub split: u32,
    pub sigma_v: f32,
    pub _pad: [u32; 3],
}

/// One element-per-invocation launch of a kernel in `shaders/random.wgsl`.
pub(crate) struct RngLaunch<'a> {
    pub entry: &'static str,
    pub n: usize,
    pub seed: u64,
    pub stream: u32,
    pub first: u64,
    /// Kernel-specific fields (`thresh`, `per_sample`, `a`, `b`, `sigma`, `steps`); the launcher
    /// fills in `n`, seed, stream and offset.
    pub extra: RngParams,
    pub buffers: &'a [&'a wgpu::Buffer],
    /// Elements per invocation: 1, or 4 for kernels that use all four words of a Philox block.
    pub per_invocation: u32,
}

impl RngLaunch<'_> {
    pub(crate) fn run(self, ctx: &Context) -> Result<()> {
        let n = u32::try_from(self.n).map_err(|_| Error::arg("shape", format!("{} elements exceed 2^32", self.n)))?;
        let params = RngParams {
            n,
            seed_lo: self.seed as u32,
            seed_hi: (self.seed >> 32) as u32,
            stream: self.stream,
            off_lo: self.first as u32,
            off_hi: (self.first >> 32) as u32,
            ..self.extra
        };
        ctx.dispatch(Dispatch {
            shader: &SHADER,
            entry: self.entry,
            constants: &[],
            params: bytemuck::bytes_of(&params),
            buffers: self.buffers,
            workgroups: ctx.grid(n.div_ceil(self.per_invocation).div_ceil(WG)),
        })
    }
}

fn fill(ctx: &Context, entry: &'static str, shape: &[usize], seed: u64, stream: u32, first: u64) -> Result<Tensor> {
    let out = ctx.empty(shape, entry)?;
    RngLaunch {
        entry,
        n: out.numel(),
        seed,
        stream,
        first,
        extra: RngParams::default(),
        buffers: &[out.buffer()],
        per_invocation: 1,
    }
    .run(ctx)?;
    Ok(out)
}

/// Uniform [0, 1) tensor; element i uses counter index i.
pub fn rand_uniform(ctx: &Context, shape: &[usize], seed: u64, stream: u32) -> Result<Tensor> {
    fill(ctx, "uniform_fill", shape, seed, stream, 0)
}

/// Standard normal tensor; element i uses counter index i.
pub fn randn(ctx: &Context, shape: &[usize], seed: u64, stream: u32) -> Result<Tensor> {
    fill(ctx, "normal_fill", shape, seed, stream, 0)
}

/// Uniform [0, 1) tensor whose element i uses counter index `first + i`.
pub fn rand_uniform_at(ctx: &Context, shape: &[usize], seed: u64, stream: u32, first: u64) -> Result<Tensor> {
    fill(ctx, "uniform_fill", shape, seed, stream, first)
}

/// Standard normal tensor whose element i uses counter index `first + i`.
pub fn randn_at(ctx: &Context, shape: &[usize], seed: u64, stream: u32, first: u64) -> Result<Tensor> {
    fill(ctx, "normal_fill", shape, seed, stream, first)
}
