//! Group normalisation (`shaders/groupnorm.wgsl`), optionally fused with SiLU.
//!
//! # Contracts
//! - `group_norm(x, gamma, beta, groups, eps, silu)`: x `[N, C, H, W]` or `[N, C, L]`, gamma and
//!   beta `[C]`, `C % groups == 0` → y (= new, shape of x) = gn(x)·γ + β, or silu of that when
//!   `silu`; stats (= new) `[N, G, 2]` holding (mean, 1/sqrt(var + eps)) per (sample, group),
//!   biased variance as in PyTorch. Keep stats for the backward.
//! - `group_norm_backward(x, gamma, beta, stats, dy, groups, silu)`: the forward's inputs and
//!   stats, dy shaped like x → dx (= new, shape of x), dgamma (= new, `[C]`), dbeta (= new,
//!   `[C]`). With `silu` the pre-activation is recomputed from x, stats, gamma and beta.

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
use crate::tensor::Tensor;

static SHADER: Shader = crate::shader!("groupnorm");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    hw: u32,
    groups: u32,
    cpg: u32,
    silu: u32,
    eps: f32,
    _pad: u32,
}

/// Workgroup size for `work` elements per workgroup: the smallest power of two ≥ work in 32..=256,
/// so that small groups and rows do not leave most invocations idle.
fn wg_size(work: usize) -> u32 {
    work.next_power_of_two().clamp(32, 256) as u32
}

/// (N, C, spatial length) of a 3-D or 4-D tensor.
fn dims(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize)> {
    match x.shape()[..] {
        [n, c, h, w] => Ok((n, c, h * w)),
        [n, c, l] => Ok((n, c, l)),
        _ => Err(Error::shape(
            op,
            format!("x: expected [N, C, H, W] or [N, C, L], got {:?}", x.shape()),
        )),
    }
}

fn params(
    op: &'static str,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f32,
    silu: bool,
) -> Result<Params> {
    let (n, c, hw) = dims(op, x)?;
    if groups == 0 || c % groups != 0 {
        return Err(Error::arg(
            "groups",
            format!(
                "{op}: {groups} groups do not divide {c} channels (x {:?})",
                x.shape()
            ),
        ));
    }
    gamma.expect_shape(op, "gamma", &[c])?;
    beta.expect_shape(op, "beta", &[c])?;
    if x.numel() > u32::MAX as usize {
        return Err(Error::shape(
            op,
            format!("x {:?} has more than 2^32 elements", x.shape()),
        ));
    }
    Ok(Params {
        n: n as u32,
        c: c as u32,
        hw: hw as u32,
        groups: groups as u32,
        cpg: (c / groups) as u32,
        silu: silu as u32,
        eps,
        _pad: 0,
    })
}

/// y = GroupNorm(x)·γ + β (then SiLU when `silu`), and the per-(sample, group) stats `[N, G, 2]`
/// = (mean, rstd) for the backward.
pub fn group_norm(
    ctx: &Context,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f32,
    silu: bool,
) -> Result<(Tensor, Tensor)> {
    let p = params("group_norm", x, gamma, beta, groups, eps, silu)?;
    let y = ctx.empty(x.shape(), "group_norm.y")?;
    let stats = ctx.empty(&[p.n as usize, groups, 2], "group_norm.stats")?;
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "gn_forward",
        constants: &[("WG", wg_size((p.cpg * p.hw) as usize) as f64)],
        params: bytemuck::bytes_of(&p),
        buffers: &[
            x.buffer(),
            gamma.buffer(),
            beta.buffer(),
            y.buffer(),
            stats.buffer(),
        ],
        workgroups: ctx.grid(p.n * p.groups),
    })?;
    Ok((y, stats))
}

/// Gradients of [`group_norm`] (with the same `groups` and `silu`): (dx, dgamma, dbeta).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    ctx: &Context,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &Tensor,
    dy: &Tensor,
    groups: usize,
    silu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "group_norm_backward";
    let p = params(OP, x, gamma, beta, groups, 0.0, silu)?;
    stats.expect_shape(OP, "stats", &[p.n as usize, groups, 2])?;
    dy.expect_shape(OP, "dy", x.shape())?;
    let c = p.c as usize;
    let partial = ctx.empty(&[p.n as usize, c, 2], "group_norm_backward.partial")?;
    let dx = ctx.empty(x.shape(), "group_norm_backward.dx")?;
    let dgamma = ctx.empty(&[c], "group_norm_backward.dgamma")?;
    let dbeta = ctx.empty(&[c], "group_norm_backward.dbeta")?;
    let constants = [("WG", wg_size(p.hw as usize) as f64)];
    let rows = ctx.grid(p.n * p.c);
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "gn_bwd_reduce",
        constants: &constants,
        params: bytemuck::bytes_of(&p),
        buffers: &[
            x.buffer(),
            gamma.buffer(),
            beta.buffer(),
            stats.buffer(),
            dy.buffer(),
            partial.buffer(),
        ],
        workgroups: rows,
    })?;
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "gn_bwd_dx",
        constants: &constants,
        params: bytemuck::bytes_of(&p),
        buffers: &[
            x.buffer(),
            gamma.buffer(),
            beta.buffer(),
            stats.buffer(),
            dy.buffer(),
            partial.buffer(),
            dx.buffer(),
            dgamma.buffer(),
            dbeta.buffer(),
        ],
        workgroups: rows,
    })?;
    Ok((dx, dgamma, dbeta))
}
