//! Elementwise ops (`shaders/elementwise.wgsl`).
//!
//! # Contracts
//! All tensors may have any shape unless stated; "same shape" operands must match exactly.
//! - `axpby(a, b, alpha, beta)`: a, b same shape → out (= new) = alpha·a + beta·b.
//! - `add(a, b)`: out (= new) = a + b.
//! - `mul(a, b)`: a, b same shape → out (= new) = a·b.
//! - `scale(x, s)`: out (= new) = s·x.
//! - `silu(x)`: out (= new) = x·σ(x).
//! - `silu_backward(x, dy)`: x, dy same shape → dx (= new) = dy·σ(x)·(1 + x·(1 - σ(x))).
//! - `add_inplace(acc, x)`: acc, x same shape → acc += x.
//! - `add_scaled_inplace(acc, x, s)`: acc, x same shape → acc += s·x.
//! - `fill(x, value)`: x = value (every element).
//! - `add_channel_bias(x, b)`: x `[N, C, H, W]` (or `[N, C, L]`), b `[N, C]` → out (= new)
//!   `[n, c, h, w]` = x + b`[n, c]` (the time-embedding broadcast).
//! - `channel_sum(dy)`: dy `[N, C, H, W]` (or `[N, C, L]`) → out (= new) `[N, C]` = Σ over H, W
//!   (the backward of `add_channel_bias` for b; the gradient for x is dy itself).

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
use crate::tensor::Tensor;

static SHADER: Shader = crate::shader!("elementwise");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    alpha: f32,
    beta: f32,
    hw: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RowParams {
    rows: u32,
    len: u32,
    chunk: u32,
    chunks: u32,
    scale: f32,
    _pad: [u32; 3],
}

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            op,
            format!("operands differ: {:?} vs {:?}", a.shape(), b.shape()),
        ));
    }
    Ok(())
}

fn elements(op: &'static str, x: &Tensor) -> Result<u32> {
    u32::try_from(x.numel()).map_err(|_| Error::shape(op, format!("{:?} has 2^32 or more elements", x.shape())))
}

/// Record one elementwise dispatch over `n` elements.
fn launch(
    ctx: &Context,
    entry: &'static str,
    n: u32,
    alpha: f32,
    beta: f32,
    hw: u32,
    buffers: &[&wgpu::Buffer],
) -> Result<()> {
    let params = Params { n, alpha, beta, hw };
    // The vec4 variant where every element is in a whole vec4 (and, broadcasting a per-row
    // bias, every vec4 in one row).
    let vec4 = n.is_multiple_of(4) && (entry != "add_channel_bias" || hw.is_multiple_of(4));
    let (entry, invocations) = match (vec4, entry) {
        (true, "axpby") => ("axpby4", n / 4),
        (true, "mul") => ("mul4", n / 4),
        (true, "silu") => ("silu4", n / 4),
        (true, "silu_backward") => ("silu_backward4", n / 4),
        (true, "scale") => ("scale4", n / 4),
        (true, "add_scaled_inplace") => ("add_scaled_inplace4", n / 4),
        (true, "fill") => ("fill4", n / 4),
        (true, "add_channel_bias") => ("add_channel_bias4", n / 4),
        _ => (entry, n),
    };
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry,
        constants: &[],
        params: bytemuck::bytes_of(&params),
        buffers,
        workgroups: ctx.grid(invocations.div_ceil(WG)),
    })
}

/// out = alpha·a + beta·b.
pub fn axpby(ctx: &Context, a: &Tensor, b: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    same_shape("axpby", a, b)?;
    let n = elements("axpby", a)?;
    let out = ctx.empty(a.shape(), "axpby.out")?;
    launch(ctx, "axpby", n, alpha, beta, 0, &[a.buffer(), b.buffer(), out.buffer()])?;
    Ok(out)
}

/// a + b.
pub fn add(ctx: &Context, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    axpby(ctx, a, b, 1.0, 1.0)
}

/// a·b, elementwise.
pub fn mul(ctx: &Context, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape("mul", a, b)?;
    let n = elements("mul", a)?;
    let out = ctx.empty(a.shape(), "mul.out")?;
    launch(ctx, "mul", n, 0.0, 0.0, 0, &[a.buffer(), b.buffer(), out.buffer()])?;
    Ok(out)
}

/// s·x.
pub fn scale(ctx: &Context, x: &Tensor, s: f32) -> Result<Tensor> {
    let n = elements("scale", x)?;
    let out = ctx.empty(x.shape(), "scale.out")?;
    launch(ctx, "scale", n, s, 0.0, 0, &[x.buffer(), out.buffer()])?;
    Ok(out)
}

/// silu(x) = x·σ(x).
pub fn silu(ctx: &Context, x: &Tensor) -> Result<Tensor> {
    let n = elements("silu", x)?;
    let out = ctx.empty(x.shape(), "silu.out")?;
    launch(ctx, "silu", n, 0.0, 0.0, 0, &[x.buffer(), out.buffer()])?;
    Ok(out)
}

/// Gradient of [`silu`] at x for upstream gradient dy.
pub fn silu_backward(ctx: &Context, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    same_shape("silu_backward", x, dy)?;
    let n = elements("silu_backward", x)?;
    let out = ctx.empty(x.shape(), "silu_backward.dx")?;
    launch(
        ctx,
        "silu_backward",
        n,
        0.0,
        0.0,
        0,
        &[x.buffer(), dy.buffer(), out.buffer()],
    )?;
    Ok(out)
}

/// acc += x, in place.
pub fn add_inplace(ctx: &Context, acc: &Tensor, x: &Tensor) -> Result<()> {
    add_scaled_inplace(ctx, acc, x, 1.0)
}

/// acc += s·x, in place.
pub fn add_scaled_inplace(ctx: &Context, acc: &Tensor, x: &Tensor, s: f32) -> Result<()> {
    same_shape("add_scaled_inplace", acc, x)?;
    if acc.same_storage(x) {
        return Err(Error::arg(
            "x",
            "add_scaled_inplace: x shares its buffer with acc (a buffer cannot be bound read-only and read-write at once; use scale)",
        ));
    }
    let n = elements("add_scaled_inplace", acc)?;
    launch(ctx, "add_scaled_inplace", n, s, 0.0, 0, &[acc.buffer(), x.buffer()])
}

/// Set every element of x to `value`, in place.
pub fn fill(ctx: &Context, x: &Tensor, value: f32) -> Result<()> {
    let n = elements("fill", x)?;
    launch(ctx, "fill", n, value, 0.0, 0, &[x.buffer()])
}

/// (N·C, spatial length) of a `[N, C, H, W]` or `[N, C, L]` tensor.
fn rows(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize)> {
    match x.shape()[..] {
        [n, c, h, w] => Ok((n, c, h * w)),
        [n, c, l] => Ok((n, c, l)),
        _ => Err(Error::shape(
            op,
            format!("expected [N, C, H, W] or [N, C, L], got {:?}", x.shape()),
        )),
    }
}

/// x + b broadcast over H, W: x `[N, C, H, W]`, b `[N, C]`.
pub fn add_channel_bias(ctx: &Context, x: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "add_channel_bias";
    let (n, c, hw) = rows(OP, x)?;
    b.expect_shape(OP, "b", &[n, c])?;
    let numel = elements(OP, x)?;
    let out = ctx.empty(x.shape(), "add_channel_bias.out")?;
    launch(
        ctx,
        OP,
        numel,
        0.0,
        0.0,
        hw as u32,
        &[x.buffer(), b.buffer(), out.buffer()],
    )?;
    Ok(out)
}

/// Σ over H, W: dy `[N, C, H, W]` → `[N, C]`.
pub fn channel_sum(ctx: &Context, dy: &Tensor) -> Result<Tensor> {
    let (n, c, hw) = rows("channel_sum", dy)?;
    elements("channel_sum", dy)?;
    sum_rows(ctx, dy, n * c, hw, 1.0)?.reshape(&[n, c])
}

/// Workgroup size of the reduction kernels. On CPU adapters (lavapipe) a workgroup runs as
/// SIMD-8 slices that switch at every barrier, so one slice per workgroup is fastest.
pub(crate) fn reduce_wg(ctx: &Context) -> usize {
    if ctx.adapter_info().device_type == wgpu::DeviceType::Cpu {
        8
    } else {
        256
    }
}

/// Elements each invocation of a reduction stage loops over: a workgroup sums
/// `reduce_wg · REDUCE_ITERS` elements.
pub(crate) const REDUCE_ITERS: usize = 64;

/// Row sums of x viewed as `[rows, len]`, times `scale` → a new `[rows]` tensor. Multi-stage:
/// each stage sums chunks of a bounded size per workgroup, until one value per row is left.
pub(crate) fn sum_rows(ctx: &Context, x: &Tensor, rows: usize, len: usize, scale: f32) -> Result<Tensor> {
    let wg = reduce_wg(ctx);
    let chunk = wg * REDUCE_ITERS;
    let mut cur = x.clone();
    let mut len = len;
    loop {
        let chunks = len.div_ceil(chunk);
        let out = ctx.empty(&[rows * chunks], "sum_rows.partial")?;
        let params = RowParams {
            rows: rows as u32,
            len: len as u32,
            chunk: chunk as u32,
            chunks: chunks as u32,
            scale: if chunks == 1 { scale } else { 1.0 },
            _pad: [0; 3],
        };
        // vec4 loads where every row and chunk starts on a vec4.
        let vec4 = len.is_multiple_of(4) && chunk.is_multiple_of(4);
        ctx.dispatch(Dispatch {
            shader: &SHADER,
            entry: if vec4 { "row_sum4" } else { "row_sum" },
            constants: &[("WG", wg as f64)],
            params: bytemuck::bytes_of(&params),
            buffers: &[cur.buffer(), out.buffer()],
            workgroups: ctx.grid((rows * chunks) as u32),
        })?;
        if chunks == 1 {
            return Ok(out);
        }
        cur = out;
        len = chunks;
    }
}
