//! Multi-head scaled dot-product self-attention (`shaders/attention.wgsl`), flash style.
//!
//! # Contracts
//! Shapes: `q`, `k`, `v`, `o`, `dout`: `[B, T, C]` with `C = heads·d`, `d <= 512`; head `h` uses
//! channels `h·d..(h+1)·d` (diffusers' `head_to_batch_dim` layout). `lse`: `[B, heads, T]`.
//! - `attention(q, k, v, heads) -> (o, lse)`: o = Σ_s softmax_s(q_t·k_s/√d) v_s per head and
//!   lse = logsumexp_s(q_t·k_s/√d); both new tensors (=).
//! - `attention_backward(q, k, v, o, lse, dout, heads) -> (dq, dk, dv)`: gradients of
//!   Σ dout·o with respect to q, k, v; three new tensors (=). The probabilities are recomputed
//!   from q, k and lse tile by tile; no `[T, T]` matrix is stored.

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
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

    /// Pipeline constants: `D4` = vec4s per head row, `BK` = staged rows per tile (a multiple
    /// of 4 that fits `TILE`).
    fn constants(&self) -> [(&'static str, f64); 3] {
        let d4 = self.d.div_ceil(4) as u32;
        let bk = (TILE / d4 / 4 * 4).min(MAXBK);
        [("WG", WG as f64), ("D4", d4 as f64), ("BK", bk as f64)]
    }
}

/// Multi-head scaled dot-product self-attention over tokens. q, k, v: [B, T, C] with
/// C = heads·d; head h uses channels h·d..(h+1)·d (diffusers' head_to_batch_dim layout).
/// o[b,t,h·d+j] = Σ_s softmax_s(q_t·k_s / √d) v[s, h·d+j]. Also returns lse [B, heads, T] =
/// logsumexp of the scaled scores (for backward).
pub fn attention(ctx: &Context, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<(Tensor, Tensor)> {
    let dims = Dims::check("attention", q, k, v, heads)?;
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

/// dq, dk, dv given dout \[B,T,C\], recomputing the probabilities from q, k and lse (flash
/// attention style backward: nothing of size T×T is stored). `o` and `lse` are the outputs of
/// [`attention`] on the same q, k, v.
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
    let op = "attention_backward";
    let dims = Dims::check(op, q, k, v, heads)?;
    o.expect_shape(op, "o (must match q)", q.shape())?;
    dout.expect_shape(op, "dout (must match q)", q.shape())?;
    lse.expect_shape(op, "lse ([B, heads, T])", &[dims.b, heads, dims.t])?;
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
