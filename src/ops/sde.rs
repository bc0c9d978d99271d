//! Score-SDE sampler kernels (`shaders/sde.wgsl`) beyond the fused linear update: Heun's second
//! stage of the probability-flow ODE and the Langevin corrector (a per-item reduction, then the
//! update; nothing is read back). The linear steps (Euler–Maruyama, the predictors, annealed
//! Langevin, Euler) run as [`crate::ops::ddpm::sampler_update`].
//!
//! The score is linear in (x, m) at one timestep, s = a_x·x + a_m·m with m the model output
//! (ε̂, x̂₀ or v; `diffusion::sde` computes a_x, a_m). m is shaped like x, or has 2·C channels
//! per item (a learned variance: only the first C are read).
//!
//! # Contracts
//! - `heun_update(x, m1, x_tilde, m2, c)`: x, x_tilde `[B, C, ...]`; m1, m2 `[B, C, ...]` or
//!   `[B, 2·C, ...]` (the same) → out (= new, x's shape) = c_x·x + c_s·s(x, m1) + c_xt·x̃ +
//!   c_s2·s₂(x̃, m2), s = a_x·x + a_m·m1, s₂ = b_x·x̃ + b_m·m2.
//! - `score_norms(x, m, z, a_x, a_m)`: x, z `[B, C, ...]`, m as above → norms (= new) `[B, 2]`:
//!   (Σ s², Σ z²) over each item, f32 sums in a fixed order (bit-reproducible).
//! - `langevin_correct(x, m, z, norms, c)`: norms `[B, 2]` from `score_norms` → out (= new) =
//!   x + ε_b·s + √(2ε_b)·z with ε_b = two_alpha_r2·Σz²/Σs² = 2α(r‖z_b‖/‖s_b‖)² (0 where Σs² = 0).

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
use crate::tensor::Tensor;

static SHADER: Shader = crate::shader!("sde");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    per_sample: u32,
    split: u32,
    batch: u32,
    a_x: f32,
    a_m: f32,
    b_x: f32,
    b_m: f32,
    c_x: f32,
    c_s: f32,
    c_xt: f32,
    c_s2: f32,
    two_alpha_r2: f32,
    _pad: [u32; 3],
}

/// Weights of Heun's second stage (see the contract).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HeunCoefs {
    /// Score at (x, t_k): s = a_x·x + a_m·m1.
    pub a_x: f32,
    /// See `a_x`.
    pub a_m: f32,
    /// Score at (x̃, t_{k+1}): s₂ = b_x·x̃ + b_m·m2.
    pub b_x: f32,
    /// See `b_x`.
    pub b_m: f32,
    /// Weight of x.
    pub c_x: f32,
    /// Weight of s.
    pub c_s: f32,
    /// Weight of x̃.
    pub c_xt: f32,
    /// Weight of s₂.
    pub c_s2: f32,
}

/// One Langevin corrector step (see the contract).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CorrectorCoefs {
    /// Score: s = a_x·x + a_m·m.
    pub a_x: f32,
    /// See `a_x`.
    pub a_m: f32,
    /// 2·α·r²: the step of item b is this times Σz²/Σs².
    pub two_alpha_r2: f32,
}

/// (batch, per-item elements, split) after checking that m is x's shape or doubles its
/// channels, and that every `same` tensor is x's shape.
fn check(op: &'static str, x: &Tensor, m: &Tensor, same: &[(&str, &Tensor)]) -> Result<(u32, u32, bool)> {
    let shape = x.shape();
    if shape.len() < 2 {
        return Err(Error::shape(op, format!("x must be [B, C, ...], got {shape:?}")));
    }
    let mut doubled = shape.to_vec();
    doubled[1] *= 2;
    let split = m.shape() == doubled.as_slice();
    if !split && m.shape() != shape {
        return Err(Error::shape(
            op,
            format!(
                "model output {:?} must be x's shape {shape:?} or have 2·C channels {doubled:?}",
                m.shape()
            ),
        ));
    }
    for (name, t) in same {
        t.expect_shape(op, name, shape)?;
    }
    let too_big = || Error::shape(op, format!("{shape:?} has 2^32 or more elements"));
    let n = u32::try_from(x.numel()).map_err(|_| too_big())?;
    // numel of m (2n when split) must fit too: indices into m reach it
    u32::try_from(m.numel()).map_err(|_| too_big())?;
    let batch = shape[0];
    if batch == 0 || n == 0 {
        return Err(Error::shape(op, format!("x {shape:?} is empty")));
    }
    Ok((batch as u32, n / batch as u32, split))
}

/// Workgroup size of `score_norms` (one workgroup per item): on GPUs the smallest power of two
/// ≥ the item's elements in 32..=256; on CPU adapters (lavapipe), where a workgroup runs as SIMD-8
/// slices that switch at every barrier, 8 — or more where an invocation would otherwise loop
/// past lavapipe's 65,535-iteration limit.
fn norms_wg(ctx: &Context, per: u32) -> u32 {
    if ctx.adapter_info().device_type == wgpu::DeviceType::Cpu {
        per.div_ceil(60_000).next_power_of_two().clamp(8, 256)
    } else {
        per.next_power_of_two().clamp(32, 256)
    }
}

fn launch(
    ctx: &Context,
    entry: &'static str,
    wg: Option<u32>,
    p: Params,
    buffers: &[&wgpu::Buffer],
    groups: u32,
) -> Result<()> {
    let constants = wg.map(|wg| [("WG", wg as f64)]);
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry,
        constants: constants.as_ref().map_or(&[], |c| &c[..]),
        params: bytemuck::bytes_of(&p),
        buffers,
        workgroups: ctx.grid(groups),
    })
}

/// Heun's second stage of the probability-flow ODE (see the contract).
pub fn heun_update(
    ctx: &Context,
    x: &Tensor,
    m1: &Tensor,
    x_tilde: &Tensor,
    m2: &Tensor,
    c: &HeunCoefs,
) -> Result<Tensor> {
    const OP: &str = "heun_update";
    let (batch, per, split) = check(OP, x, m1, &[("x_tilde", x_tilde)])?;
    m2.expect_shape(OP, "m2", m1.shape())?;
    let out = ctx.empty(x.shape(), "sde.heun_out")?;
    let n = x.numel() as u32;
    let p = Params {
        n,
        per_sample: per,
        split: u32::from(split),
        batch,
        a_x: c.a_x,
        a_m: c.a_m,
        b_x: c.b_x,
        b_m: c.b_m,
        c_x: c.c_x,
        c_s: c.c_s,
        c_xt: c.c_xt,
        c_s2: c.c_s2,
        ..Default::default()
    };
    launch(
        ctx,
        "heun_update",
        None,
        p,
        &[x.buffer(), m1.buffer(), x_tilde.buffer(), m2.buffer(), out.buffer()],
        n.div_ceil(WG),
    )?;
    Ok(out)
}

/// Per-item (Σ s², Σ z²) with s = a_x·x + a_m·m (see the contract).
pub fn score_norms(ctx: &Context, x: &Tensor, m: &Tensor, z: &Tensor, a_x: f32, a_m: f32) -> Result<Tensor> {
    const OP: &str = "score_norms";
    let (batch, per, split) = check(OP, x, m, &[("z", z)])?;
    let norms = ctx.empty(&[batch as usize, 2], "sde.norms")?;
    let p = Params {
        n: x.numel() as u32,
        per_sample: per,
        split: u32::from(split),
        batch,
        a_x,
        a_m,
        ..Default::default()
    };
    launch(
        ctx,
        "score_norms",
        Some(norms_wg(ctx, per)),
        p,
        &[x.buffer(), m.buffer(), z.buffer(), norms.buffer()],
        batch,
    )?;
    Ok(norms)
}

/// One Langevin corrector step with the per-item step size from `norms` (see the contract).
pub fn langevin_correct(
    ctx: &Context,
    x: &Tensor,
    m: &Tensor,
    z: &Tensor,
    norms: &Tensor,
    c: &CorrectorCoefs,
) -> Result<Tensor> {
    const OP: &str = "langevin_correct";
    let (batch, per, split) = check(OP, x, m, &[("z", z)])?;
    norms.expect_shape(OP, "norms", &[batch as usize, 2])?;
    let out = ctx.empty(x.shape(), "sde.corrected")?;
    let n = x.numel() as u32;
    let p = Params {
        n,
        per_sample: per,
        split: u32::from(split),
        batch,
        a_x: c.a_x,
        a_m: c.a_m,
        two_alpha_r2: c.two_alpha_r2,
        ..Default::default()
    };
    launch(
        ctx,
        "langevin_correct",
        None,
        p,
        &[x.buffer(), m.buffer(), z.buffer(), norms.buffer(), out.buffer()],
        n.div_ceil(WG),
    )?;
    Ok(out)
}
