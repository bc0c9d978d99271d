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
//! - `group_norm_backward_add(…, dx_addend)`: the same, with dx (= new) = the gradient above +
//!   dx_addend (shaped like x).
//! - `group_norm_backward_dropout(…, dropout, dx_addend)`: the same for dropout(y) (dy is the
//!   dropout output's gradient; the mask of `ops::dropout` for x's shape is applied to dy).

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
use crate::ops::dropout::{DropParams, Dropout};
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
    chunk: u32,
    gchunks: u32,
    rchunk: u32,
    rchunks: u32,
    dx_add: u32,
    drop: DropParams,
}

/// Largest number of loop iterations per invocation in one pass over a chunk: bounds the work
/// of one workgroup (lavapipe also aborts shaders after 65,535 loop iterations).
const ITERS: usize = 512;

/// Workgroup size. On GPUs: the smallest power of two ≥ `work` elements in 32..=256, so small
/// groups and rows do not leave most invocations idle. On CPU adapters (lavapipe) a workgroup
/// runs as SIMD-8 slices that switch at every barrier, so a single slice of 8 is several times
/// faster.
fn wg_size(ctx: &Context, work: usize) -> usize {
    if ctx.adapter_info().device_type == wgpu::DeviceType::Cpu {
        8
    } else {
        work.next_power_of_two().clamp(32, 256)
    }
}

/// Pipeline constants: the workgroup size.
type Constants = [(&'static str, f64); 1];

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

/// Checked shapes, launch parameters and the pipeline constants of the per-group and the
/// per-row kernels.
#[allow(clippy::too_many_arguments)]
fn setup(
    ctx: &Context,
    op: &'static str,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f32,
    silu: bool,
) -> Result<(Params, Constants, Constants)> {
    let (n, c, hw) = dims(op, x)?;
    if groups == 0 || c % groups != 0 {
        return Err(Error::arg(
            "groups",
            format!("{op}: {groups} groups do not divide {c} channels (x {:?})", x.shape()),
        ));
    }
    gamma.expect_shape(op, "gamma", &[c])?;
    beta.expect_shape(op, "beta", &[c])?;
    if x.numel() > u32::MAX as usize / 2 {
        return Err(Error::shape(
            op,
            format!("x {:?} has more than 2^31 elements", x.shape()),
        ));
    }
    let cpg = c / groups;
    let wg = wg_size(ctx, cpg * hw);
    let chunk = wg * ITERS;
    let row_wg = wg_size(ctx, hw);
    let rchunk = row_wg * ITERS;
    let p = Params {
        n: n as u32,
        c: c as u32,
        hw: hw as u32,
        groups: groups as u32,
        cpg: cpg as u32,
        silu: silu as u32,
        eps,
        chunk: chunk as u32,
        gchunks: (cpg * hw).div_ceil(chunk) as u32,
        rchunk: rchunk as u32,
        rchunks: hw.div_ceil(rchunk) as u32,
        dx_add: 0,
        drop: DropParams::OFF,
    };
    Ok((p, [("WG", wg as f64)], [("WG", row_wg as f64)]))
}

/// `name`, or its vec4 variant (`name` + "4") when every row and chunk starts on a vec4.
fn entry(p: &Params, name: &'static str) -> &'static str {
    let vec4 = p.hw.is_multiple_of(4) && p.chunk.is_multiple_of(4) && p.rchunk.is_multiple_of(4);
    match (vec4, name) {
        (false, _) => name,
        (true, "gn_chunk_stats") => "gn_chunk_stats4",
        (true, "gn_normalize") => "gn_normalize4",
        (true, "gn_bwd_partials") => "gn_bwd_partials4",
        (true, "gn_bwd_dx") => "gn_bwd_dx4",
        _ => name,
    }
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
    let stats = group_norm_stats(ctx, x, gamma, beta, groups, eps)?;
    let y = group_norm_apply(ctx, x, gamma, beta, &stats, groups, silu)?;
    Ok((y, stats))
}

/// The per-(sample, group) stats `[N, G, 2]` = (mean, rstd) of [`group_norm`], without y (for a
/// consumer that normalizes as it reads, `ops::conv2d::InputNorm`).
pub fn group_norm_stats(
    ctx: &Context,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f32,
) -> Result<Tensor> {
    let (p, group_wg, _) = setup(ctx, "group_norm", x, gamma, beta, groups, eps, false)?;
    let n = p.n as usize;
    let stats = ctx.empty(&[n, groups, 2], "group_norm.stats")?;
    let params = bytemuck::bytes_of(&p);
    if p.gchunks == 1 {
        // A group is one workgroup's chunk: that workgroup writes the final stats itself.
        ctx.dispatch(Dispatch {
            shader: &SHADER,
            entry: entry(&p, "gn_chunk_stats"),
            constants: &group_wg,
            params,
            buffers: &[x.buffer(), stats.buffer()],
            workgroups: ctx.grid(p.n * p.groups),
        })?;
        return Ok(stats);
    }
    let chunks = ctx.empty(&[n * groups * p.gchunks as usize, 2], "group_norm.chunk_stats")?;
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: entry(&p, "gn_chunk_stats"),
        constants: &group_wg,
        params,
        buffers: &[x.buffer(), chunks.buffer()],
        workgroups: ctx.grid(p.n * p.groups * p.gchunks),
    })?;
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "gn_group_stats",
        constants: &group_wg,
        params,
        buffers: &[chunks.buffer(), stats.buffer()],
        workgroups: ctx.grid(p.n * p.groups),
    })?;
    Ok(stats)
}

/// y of [`group_norm`] from stats that [`group_norm_stats`] computed for the same x.
pub fn group_norm_apply(
    ctx: &Context,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &Tensor,
    groups: usize,
    silu: bool,
) -> Result<Tensor> {
    let (p, _, row_wg) = setup(ctx, "group_norm", x, gamma, beta, groups, 0.0, silu)?;
    stats.expect_shape("group_norm", "stats", &[p.n as usize, groups, 2])?;
    let y = ctx.empty(x.shape(), "group_norm.y")?;
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: entry(&p, "gn_normalize"),
        constants: &row_wg,
        params: bytemuck::bytes_of(&p),
        buffers: &[x.buffer(), gamma.buffer(), beta.buffer(), stats.buffer(), y.buffer()],
        workgroups: ctx.grid(p.n * p.c * p.rchunks),
    })?;
    Ok(y)
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
    group_norm_backward_add(ctx, x, gamma, beta, stats, dy, groups, silu, None)
}

/// [`group_norm_backward`] whose dx also holds `dx_addend` (shaped like x): the gradient that
/// reaches x by another path (a ResNet block's shortcut), added as dx is written instead of in
/// a pass of its own.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward_add(
    ctx: &Context,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &Tensor,
    dy: &Tensor,
    groups: usize,
    silu: bool,
    dx_addend: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    group_norm_backward_dropout(ctx, x, gamma, beta, stats, dy, groups, silu, None, dx_addend)
}

/// The rest of a group norm's backward when its first pass ran elsewhere (in
/// `wino_input_adjoint4_norm`, [`crate::ops::conv2d::conv2d_backward_norm`]): `g` [x's shape] is
/// the grad of the norm's output γ·x̂ + β (after the SiLU's and the dropout's backward), `parts`
/// [N·C·chunks, 2] the sums (Σ g, Σ g·x̂) over `chunks` equal slices of each (image, channel)
/// row. Returns (dx (+ dx_addend), dγ, dβ) as [`group_norm_backward_add`] without the SiLU.
#[allow(clippy::too_many_arguments)]
pub(crate) fn group_norm_backward_parts(
    ctx: &Context,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &Tensor,
    g: &Tensor,
    parts: &Tensor,
    chunks: usize,
    groups: usize,
    dx_addend: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (p, row_wg) = backward_setup(ctx, [x, gamma, beta, stats, g], groups, false, dx_addend)?;
    parts.expect_shape(
        "group_norm_backward",
        "parts",
        &[p.n as usize * p.c as usize * chunks, 2],
    )?;
    backward_finish(ctx, &p, &row_wg, chunks, [x, gamma, beta, stats, g, parts], dx_addend)
}

/// Checked shapes of the backward's x, γ, β, stats and dy, its launch parameters (dx_add set
/// when there is an addend) and the per-row kernels' constants.
fn backward_setup(
    ctx: &Context,
    [x, gamma, beta, stats, dy]: [&Tensor; 5],
    groups: usize,
    silu: bool,
    dx_addend: Option<&Tensor>,
) -> Result<(Params, Constants)> {
    const OP: &str = "group_norm_backward";
    let (mut p, _, row_wg) = setup(ctx, OP, x, gamma, beta, groups, 0.0, silu)?;
    stats.expect_shape(OP, "stats", &[p.n as usize, groups, 2])?;
    dy.expect_shape(OP, "dy", x.shape())?;
    if let Some(a) = dx_addend {
        a.expect_shape(OP, "dx_addend", x.shape())?;
        p.dx_add = 1;
    }
    Ok((p, row_wg))
}

/// The backward's reduction (dγ, dβ and the per-group coefficients from `parts`, `chunks` per
/// row) and dx pass (reading dy through p's SiLU and dropout), for tensors x, γ, β, stats, dy
/// and parts. Returns (dx, dγ, dβ).
fn backward_finish(
    ctx: &Context,
    p: &Params,
    row_wg: &Constants,
    chunks: usize,
    [x, gamma, beta, stats, dy, parts]: [&Tensor; 6],
    dx_addend: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, groups) = (p.n as usize, p.c as usize, p.groups as usize);
    let coef = ctx.empty(&[n, groups, 2], "group_norm_backward.coef")?;
    let dx = ctx.empty(x.shape(), "group_norm_backward.dx")?;
    let dgamma = ctx.empty(&[c], "group_norm_backward.dgamma")?;
    let dbeta = ctx.empty(&[c], "group_norm_backward.dbeta")?;
    // The reduction reads the partials by p.rchunks; the dx pass keeps its own row chunks.
    let reduce = Params {
        rchunks: chunks as u32,
        ..*p
    };
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "gn_bwd_reduce",
        constants: row_wg,
        params: bytemuck::bytes_of(&reduce),
        buffers: &[
            parts.buffer(),
            gamma.buffer(),
            coef.buffer(),
            dgamma.buffer(),
            dbeta.buffer(),
        ],
        workgroups: ctx.grid(p.n * p.groups + p.c),
    })?;
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: entry(p, "gn_bwd_dx"),
        constants: row_wg,
        params: bytemuck::bytes_of(p),
        buffers: &[
            x.buffer(),
            gamma.buffer(),
            beta.buffer(),
            stats.buffer(),
            dy.buffer(),
            coef.buffer(),
            dx.buffer(),
            // dy stands in when there is no addend (the kernel does not read it then).
            dx_addend.unwrap_or(dy).buffer(),
        ],
        workgroups: ctx.grid(p.n * p.c * p.rchunks),
    })?;
    Ok((dx, dgamma, dbeta))
}

/// [`group_norm_backward_add`] of dropout(GroupNorm(x)) (after the SiLU when `silu`): `dy` is
/// the gradient of the dropout's output, and the mask `dropout` (as
/// [`crate::ops::dropout::dropout`] draws it for x's shape) is applied as dy is read: the
/// backward of a [`crate::ops::conv2d::InputNorm`] with dropout, with no pass of its own.
/// `None` is [`group_norm_backward_add`].
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward_dropout(
    ctx: &Context,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &Tensor,
    dy: &Tensor,
    groups: usize,
    silu: bool,
    dropout: Option<Dropout>,
    dx_addend: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (mut p, row_wg) = backward_setup(ctx, [x, gamma, beta, stats, dy], groups, silu, dx_addend)?;
    let (n, c) = (p.n as usize, p.c as usize);
    let masked;
    let dy = match dropout {
        // The vec4 kernels apply the mask as they read dy; the scalar ones get it applied first.
        Some(d) if entry(&p, "gn_bwd_dx") == "gn_bwd_dx4" => {
            p.drop = DropParams::new(d)?;
            dy
        }
        Some(d) => {
            masked = crate::ops::dropout::dropout_backward(ctx, dy, d.p, d.seed, d.stream)?;
            &masked
        }
        None => dy,
    };
    let parts = ctx.empty(&[n * c * p.rchunks as usize, 2], "group_norm_backward.parts")?;
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: entry(&p, "gn_bwd_partials"),
        constants: &row_wg,
        params: bytemuck::bytes_of(&p),
        buffers: &[
            x.buffer(),
            gamma.buffer(),
            beta.buffer(),
            stats.buffer(),
            dy.buffer(),
            parts.buffer(),
        ],
        workgroups: ctx.grid(p.n * p.c * p.rchunks),
    })?;
    let chunks = p.rchunks as usize;
    backward_finish(ctx, &p, &row_wg, chunks, [x, gamma, beta, stats, dy, &parts], dx_addend)
}
