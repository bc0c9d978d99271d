//! Multi-head scaled dot-product self-attention (`shaders/attention.wgsl`), flash style.
//!
//! # Contracts
//! Shapes: `q`, `k`, `v`, `o`, `dout`: `[B, T, C]` with `C = heads·d`, `d <= 512`; head `h` uses
//! channels `h·d..(h+1)·d` (diffusers' `head_to_batch_dim` layout). `lse`: `[B, heads, T]`.
//! - `attention(q, k, v, heads) -> (o, lse)`: o = Σ_s softmax_s(q_t·k_s/√d) v_s per head and
//!   lse = logsumexp_s(q_t·k_s/√d); both new tensors (=).
//! - `attention_backward(q, k, v, o, lse, dout, heads) -> (dq, dk, dv)`: gradients of
//!   Σ dout·o with respect to q, k, v; three new tensors (=). The probabilities are recomputed
//!   from q, k and lse (tile by tile, with no `[T, T]` matrix stored, by the flash kernel).
//!
//! # Kernels
//! [`Kernel::Flash`] runs on every adapter and head count and never stores a `[T, T]` matrix.
//! [`Kernel::Gemm`] is for one head on CPU adapters with 8-wide subgroups (lavapipe): the scores
//! and the products with the probabilities are subgroup GEMMs (`ops::matmul`) around row-wise
//! softmax kernels, with the `[B, T, T]` scores in memory (at most [`GEMM_BUDGET_BYTES`]).
//! [`kernel_for`] picks; both give the same `lse`, so either backward fits either forward.

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
use crate::ops::matmul;
use crate::tensor::Tensor;

static SHADER: Shader = crate::shader!("attention");

/// Rows (queries or keys) per workgroup: one invocation each.
const WG: u32 = 64;
/// vec4s per staged workgroup tile (`TILE` in the shader).
const TILE: u32 = 512;
/// Largest staged tile in rows (`MAXBK` in the shader).
const MAXBK: u32 = 128;
/// Largest head dimension (`MAXD4`·4 in the shader).
const MAX_D: usize = 512;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t: u32,
    c: u32,
    heads: u32,
    d: u32,
    scale: f32,
    blocks: u32,
    groups: u32,
    _pad: u32,
}

/// Validated problem size.
struct Dims {
    b: usize,
    t: usize,
    c: usize,
    heads: usize,
    d: usize,
}

impl Dims {
    fn check(op: &'static str, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Self> {
        let (b, t, c) = match q.shape()[..] {
            [b, t, c] => (b, t, c),
            _ => return Err(Error::shape(op, format!("q: expected [B, T, C], got {:?}", q.shape()))),
        };
        k.expect_shape(op, "k (must match q)", q.shape())?;
        v.expect_shape(op, "v (must match q)", q.shape())?;
        if heads == 0 || c % heads != 0 {
            return Err(Error::arg(
                "heads",
                format!("{heads} heads do not divide the {c} channels of q {:?}", q.shape()),
            ));
        }
        let d = c / heads;
        if d > MAX_D {
            return Err(Error::arg(
                "heads",
                format!("head dim {c}/{heads} = {d} exceeds the supported maximum {MAX_D}"),
            ));
        }
        Ok(Dims { b, t, c, heads, d })
    }

    fn params(&self) -> Params {
        let blocks = self.t.div_ceil(WG as usize);
        Params {
            t: self.t as u32,
            c: self.c as u32,
            heads: self.heads as u32,
            d: self.d as u32,
            scale: 1.0 / (self.d as f32).sqrt(),
            blocks: blocks as u32,
            groups: (self.b * self.heads * blocks) as u32,
            _pad: 0,
        }
    }

    fn expect_kernel(&self, ctx: &Context, kernel: Kernel) -> Result<()> {
        if supports(ctx, kernel, self.b, self.t, self.c, self.heads) {
            return Ok(());
        }
        Err(Error::arg(
            "kernel",
            format!(
                "{kernel:?} attention needs one head (got {}), T = {} and C = {} multiples of 4, \
                 8-wide subgroups and B·T·T·4 = {} bytes within {} (adapter {})",
                self.heads,
                self.t,
                self.c,
                self.b * self.t * self.t * 4,
                GEMM_BUDGET_BYTES.min(ctx.max_binding_bytes()),
                ctx.adapter_name()
            ),
        ))
    }

    /// Params of the row kernels: `t` = row length T, `groups` = rows B·T.
    fn row_params(&self) -> Params {
        Params {
            groups: (self.b * self.t) as u32,
            ..self.params()
        }
    }

    /// Pipeline constants: `D4` = vec4s per head row, `BK` = staged rows per tile (a multiple
    /// of 4 that fits `TILE`).
    fn constants(&self) -> [(&'static str, f64); 3] {
        let d4 = self.d.div_ceil(4) as u32;
        let bk = (TILE / d4 / 4 * 4).min(MAXBK);
        [("WG", WG as f64), ("D4", d4 as f64), ("BK", bk as f64)]
    }
}

/// An attention algorithm (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Flash style: tiles staged in workgroup memory, nothing of size T×T stored. Any adapter.
    Flash,
    /// One head: subgroup GEMMs for Q·Kᵀ and the products with P, row kernels for the softmax,
    /// the `[B, T, T]` scores in memory. CPU adapters with 8-wide subgroups, T and C multiples
    /// of 4.
    Gemm,
}

/// Largest `[B, T, T]` score matrix the GEMM path allocates (the backward holds two).
pub const GEMM_BUDGET_BYTES: u64 = 32 << 20;

/// Whether `kernel` can run attention over q `[b, t, c]` with `heads` heads on `ctx`.
pub fn supports(ctx: &Context, kernel: Kernel, b: usize, t: usize, c: usize, heads: usize) -> bool {
    match kernel {
        Kernel::Flash => true,
        Kernel::Gemm => {
            let sg = matmul::Kernel::Subgroup { wg: matmul::SG_WG };
            let bytes = (b * t * t * 4) as u64;
            heads == 1
                && matmul::supports(ctx, sg, t, c, t, true)
                && matmul::supports(ctx, sg, t, t, c, true)
                && bytes <= GEMM_BUDGET_BYTES.min(ctx.max_binding_bytes())
        }
    }
}

/// The kernel [`attention`] and [`attention_backward`] use for q `[b, t, c]`: the GEMM path
/// where it runs and the adapter is a CPU (measured faster there, `benches/attention.rs`),
/// flash attention otherwise.
pub fn kernel_for(ctx: &Context, b: usize, t: usize, c: usize, heads: usize) -> Kernel {
    if ctx.adapter_info().device_type == wgpu::DeviceType::Cpu && supports(ctx, Kernel::Gemm, b, t, c, heads) {
        Kernel::Gemm
    } else {
        Kernel::Flash
    }
}

/// Multi-head scaled dot-product self-attention over tokens. q, k, v: [B, T, C] with
/// C = heads·d; head h uses channels h·d..(h+1)·d (diffusers' head_to_batch_dim layout).
/// o[b,t,h·d+j] = Σ_s softmax_s(q_t·k_s / √d) v[s, h·d+j]. Also returns lse [B, heads, T] =
/// logsumexp of the scaled scores (for backward).
pub fn attention(ctx: &Context, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<(Tensor, Tensor)> {
    let dims = Dims::check("attention", q, k, v, heads)?;
    attention_with(ctx, kernel_for(ctx, dims.b, dims.t, dims.c, heads), q, k, v, heads)
}

/// [`attention`] with a chosen kernel (tests, benches). Errors if `kernel` cannot run it here.
pub fn attention_with(
    ctx: &Context,
    kernel: Kernel,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
) -> Result<(Tensor, Tensor)> {
    let dims = Dims::check("attention", q, k, v, heads)?;
    dims.expect_kernel(ctx, kernel)?;
    if kernel == Kernel::Gemm {
        return gemm_forward(ctx, &dims, q, k, v);
    }
    let params = dims.params();
    let o = ctx.empty(q.shape(), "attention.o")?;
    let lse = ctx.empty(&[dims.b, heads, dims.t], "attention.lse")?;
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "attention_fwd",
        constants: &dims.constants(),
        params: bytemuck::bytes_of(&params),
        buffers: &[q.buffer(), k.buffer(), v.buffer(), o.buffer(), lse.buffer()],
        workgroups: ctx.grid(params.groups),
    })?;
    Ok((o, lse))
}

/// dq, dk, dv given dout \[B,T,C\], recomputing the probabilities from q, k and lse (the flash
/// kernel stores nothing of size T×T; the GEMM kernel holds the `[B, T, T]` scores and their
/// gradient). `o` and `lse` are the outputs of [`attention`] on the same q, k, v.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    heads: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dims = Dims::check("attention_backward", q, k, v, heads)?;
    let kernel = kernel_for(ctx, dims.b, dims.t, dims.c, heads);
    attention_backward_with(ctx, kernel, q, k, v, o, lse, dout, heads)
}

/// [`attention_backward`] with a chosen kernel (tests, benches). Errors if `kernel` cannot run
/// it here.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_with(
    ctx: &Context,
    kernel: Kernel,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    heads: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = "attention_backward";
    let dims = Dims::check(op, q, k, v, heads)?;
    o.expect_shape(op, "o (must match q)", q.shape())?;
    dout.expect_shape(op, "dout (must match q)", q.shape())?;
    lse.expect_shape(op, "lse ([B, heads, T])", &[dims.b, heads, dims.t])?;
    dims.expect_kernel(ctx, kernel)?;
    if kernel == Kernel::Gemm {
        return gemm_backward(ctx, &dims, q, k, v, lse, dout);
    }
    let params = dims.params();
    let constants = dims.constants();
    let delta = ctx.empty(&[dims.b, heads, dims.t], "attention.delta")?;
    let dq = ctx.empty(q.shape(), "attention.dq")?;
    let dk = ctx.empty(q.shape(), "attention.dk")?;
    let dv = ctx.empty(q.shape(), "attention.dv")?;
    let (qb, kb, vb) = (q.buffer(), k.buffer(), v.buffer());
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "attention_bwd_dq",
        constants: &constants,
        params: bytemuck::bytes_of(&params),
        buffers: &[
            qb,
            kb,
            vb,
            dout.buffer(),
            lse.buffer(),
            o.buffer(),
            delta.buffer(),
            dq.buffer(),
        ],
        workgroups: ctx.grid(params.groups),
    })?;
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "attention_bwd_dkdv",
        constants: &constants,
        params: bytemuck::bytes_of(&params),
        buffers: &[
            qb,
            kb,
            vb,
            dout.buffer(),
            lse.buffer(),
            delta.buffer(),
            dk.buffer(),
            dv.buffer(),
        ],
        workgroups: ctx.grid(params.groups),
    })?;
    Ok((dq, dk, dv))
}

/// out[b] = alpha · op(a[b]) · op(b[b]) for the `batch` items, by the subgroup GEMM.
#[allow(clippy::too_many_arguments)]
fn batched(
    ctx: &Context,
    (m, k, n): (usize, usize, usize),
    batch: usize,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let g = matmul::SgGemm {
        alpha,
        ..matmul::SgGemm::new(m, k, n, batch, trans_a, trans_b)
    };
    matmul::gemm_sg_raw(ctx, g, a.buffer(), b.buffer(), out.buffer())
}

/// One row kernel over the B·T rows of the scores.
fn rows(ctx: &Context, dims: &Dims, entry: &'static str, buffers: &[&wgpu::Buffer]) -> Result<()> {
    let params = dims.row_params();
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry,
        constants: &[],
        params: bytemuck::bytes_of(&params),
        buffers,
        workgroups: ctx.grid(params.groups.div_ceil(64)),
    })
}

/// [`Kernel::Gemm`] forward: S = scale·Q·Kᵀ, P = softmax(S) (and lse), O = P·V.
fn gemm_forward(ctx: &Context, dims: &Dims, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, t, c) = (dims.b, dims.t, dims.c);
    let scale = 1.0 / (dims.d as f32).sqrt();
    let s = ctx.empty(&[b, t, t], "attention.scores")?;
    batched(ctx, (t, c, t), b, false, true, scale, q, k, &s)?;
    let lse = ctx.empty(&[b, 1, t], "attention.lse")?;
    rows(ctx, dims, "softmax_rows", &[s.buffer(), lse.buffer()])?;
    let o = ctx.empty(q.shape(), "attention.o")?;
    batched(ctx, (t, t, c), b, false, false, 1.0, &s, v, &o)?;
    Ok((o, lse))
}

/// Single-head attention on channel-major tensors, for inference: qt, kt, vt `[B, C, T]` (Qᵀ,
/// Kᵀ, Vᵀ per image: the layout of NCHW activations and of a pointwise convolution's output) →
/// oᵀ `[B, C, T]`, the transpose per image of [`attention`]'s o on the transposed inputs, with
/// no transposes: S = scale·(Qᵀ)ᵀ·Kᵀ, P = softmax(S) by rows, Oᵀ = Vᵀ·Pᵀ, all on the GEMM
/// kernel. Errors where [`kernel_for`] does not pick [`Kernel::Gemm`] for one head.
pub fn attention_channels_first(ctx: &Context, qt: &Tensor, kt: &Tensor, vt: &Tensor) -> Result<Tensor> {
    const OP: &str = "attention_channels_first";
    let (b, c, t) = match qt.shape()[..] {
        [b, c, t] => (b, c, t),
        _ => {
            return Err(Error::shape(
                OP,
                format!("qt: expected [B, C, T], got {:?}", qt.shape()),
            ))
        }
    };
    kt.expect_shape(OP, "kt (must match qt)", qt.shape())?;
    vt.expect_shape(OP, "vt (must match qt)", qt.shape())?;
    if kernel_for(ctx, b, t, c, 1) != Kernel::Gemm {
        return Err(Error::arg(
            "kernel",
            format!(
                "{OP}: the GEMM kernel cannot run B={b} T={t} C={c} on {}",
                ctx.adapter_name()
            ),
        ));
    }
    let dims = Dims {
        b,
        t,
        c,
        heads: 1,
        d: c,
    };
    let scale = 1.0 / (c as f32).sqrt();
    let s = ctx.empty(&[b, t, t], "attention.scores")?;
    batched(ctx, (t, c, t), b, true, false, scale, qt, kt, &s)?;
    let lse = ctx.empty(&[b, 1, t], "attention.lse")?;
    rows(ctx, &dims, "softmax_rows", &[s.buffer(), lse.buffer()])?;
    let ot = ctx.empty(qt.shape(), "attention.ot")?;
    batched(ctx, (c, t, t), b, false, true, 1.0, vt, &s, &ot)?;
    Ok(ot)
}

/// [`Kernel::Gemm`] backward: S = scale·Q·Kᵀ again, dP = dO·Vᵀ, then P = exp(S − lse) and
/// dS = scale·P·(dP − Σ P·dP) per row; dV = Pᵀ·dO, dQ = dS·K, dK = dSᵀ·Q.
fn gemm_backward(
    ctx: &Context,
    dims: &Dims,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, t, c) = (dims.b, dims.t, dims.c);
    let scale = 1.0 / (dims.d as f32).sqrt();
    let s = ctx.empty(&[b, t, t], "attention.scores")?;
    batched(ctx, (t, c, t), b, false, true, scale, q, k, &s)?;
    let dp = ctx.empty(&[b, t, t], "attention.dscores")?;
    batched(ctx, (t, c, t), b, false, true, 1.0, dout, v, &dp)?;
    rows(ctx, dims, "softmax_rows_bwd", &[s.buffer(), dp.buffer(), lse.buffer()])?;
    let dv = ctx.empty(q.shape(), "attention.dv")?;
    batched(ctx, (t, t, c), b, true, false, 1.0, &s, dout, &dv)?;
    let dq = ctx.empty(q.shape(), "attention.dq")?;
    batched(ctx, (t, t, c), b, false, false, 1.0, &dp, k, &dq)?;
    let dk = ctx.empty(q.shape(), "attention.dk")?;
    batched(ctx, (t, t, c), b, true, false, 1.0, &dp, q, &dk)?;
    Ok((dq, dk, dv))
}
