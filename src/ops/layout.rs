//! Layout ops (`shaders/layout.wgsl`; the channel concatenation and split are buffer copies).
//!
//! # Contracts
//! - `concat_channels(a, b)`: a `[N, Ca, H, W]`, b `[N, Cb, H, W]` → out (= new)
//!   `[N, Ca + Cb, H, W]` (3-D `[N, C, L]` also accepted).
//! - `split_channels(x, ca)`: x `[N, C, H, W]`, 0 < ca < C → (x[:, :ca], x[:, ca:]) (= new);
//!   the inverse of `concat_channels`, and its backward.
//! - `upsample_nearest2x(x)`: x `[N, C, H, W]` → out (= new) `[N, C, 2H, 2W]`,
//!   out[n, c, y, x] = x[n, c, y/2, x/2].
//! - `upsample_nearest2x_backward(dy)`: dy `[N, C, 2H, 2W]` → dx (= new) `[N, C, H, W]` = sum of
//!   each 2x2 block.
//! - `nchw_to_nlc(x)`: x `[N, C, H, W]` → out (= new) `[N, H·W, C]`.
//! - `nlc_to_nchw(x, h, w)`: x `[N, L, C]` with L = h·w → out (= new) `[N, C, h, w]`.

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
use crate::tensor::Tensor;

static SHADER: Shader = crate::shader!("layout");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    p0: u32,
    p1: u32,
    p2: u32,
}

fn launch(
    ctx: &Context,
    entry: &'static str,
    params: Params,
    workgroups: u32,
    buffers: &[&wgpu::Buffer],
) -> Result<()> {
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry,
        constants: &[],
        params: bytemuck::bytes_of(&params),
        buffers,
        workgroups: ctx.grid(workgroups),
    })
}

fn elements(op: &'static str, x: &Tensor) -> Result<u32> {
    u32::try_from(x.numel()).map_err(|_| Error::shape(op, format!("{:?} has 2^32 or more elements", x.shape())))
}

/// (N, C, spatial dims) of a 3-D or 4-D tensor.
fn split_dims<'a>(op: &'static str, name: &str, x: &'a Tensor) -> Result<(usize, usize, &'a [usize])> {
    if x.dtype() != crate::tensor::DType::F32 {
        return Err(Error::shape(op, format!("{name}: expected f32, got {:?}", x.dtype())));
    }
    match x.shape() {
        [n, c, rest @ ..] if (1..=2).contains(&rest.len()) => Ok((*n, *c, rest)),
        s => Err(Error::shape(
            op,
            format!("{name}: expected [N, C, H, W] or [N, C, L], got {s:?}"),
        )),
    }
}

/// cat(a, b) along channels.
pub fn concat_channels(ctx: &Context, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "concat_channels";
    let (n, ca, sa) = split_dims(OP, "a", a)?;
    let (nb, cb, sb) = split_dims(OP, "b", b)?;
    if n != nb || sa != sb {
        return Err(Error::shape(
            OP,
            format!(
                "a {:?} and b {:?} differ outside the channel dimension",
                a.shape(),
                b.shape()
            ),
        ));
    }
    let hw: usize = sa.iter().product();
    let mut shape = a.shape().to_vec();
    shape[1] = ca + cb;
    let out = ctx.empty(&shape, "concat_channels.out")?;
    elements(OP, &out)?;
    // Per sample, a's Ca·HW floats then b's Cb·HW: 2N buffer copies, which run at memcpy speed
    // where a kernel would move the floats lane by lane.
    let (pa, pb) = ((ca * hw * 4) as u64, (cb * hw * 4) as u64);
    for i in 0..n as u64 {
        ctx.copy_buffer(a.buffer(), i * pa, out.buffer(), i * (pa + pb), pa);
        ctx.copy_buffer(b.buffer(), i * pb, out.buffer(), i * (pa + pb) + pa, pb);
    }
    Ok(out)
}

/// (x[:, :ca], x[:, ca:]) along channels.
pub fn split_channels(ctx: &Context, x: &Tensor, ca: usize) -> Result<(Tensor, Tensor)> {
    const OP: &str = "split_channels";
    let (_, c, s) = split_dims(OP, "x", x)?;
    if ca == 0 || ca >= c {
        return Err(Error::arg(
            "ca",
            format!("{OP}: need 0 < ca < C, got ca = {ca} for x {:?}", x.shape()),
        ));
    }
    let hw: usize = s.iter().product();
    elements(OP, x)?;
    let mut shape_a = x.shape().to_vec();
    shape_a[1] = ca;
    let mut shape_b = x.shape().to_vec();
    shape_b[1] = c - ca;
    let xa = ctx.empty(&shape_a, "split_channels.a")?;
    let xb = ctx.empty(&shape_b, "split_channels.b")?;
    // The inverse of concat_channels' copies.
    let (pa, pb) = ((ca * hw * 4) as u64, ((c - ca) * hw * 4) as u64);
    for i in 0..x.shape()[0] as u64 {
        ctx.copy_buffer(x.buffer(), i * (pa + pb), xa.buffer(), i * pa, pa);
        ctx.copy_buffer(x.buffer(), i * (pa + pb) + pa, xb.buffer(), i * pb, pb);
    }
    Ok((xa, xb))
}

/// Nearest-neighbour 2x upsampling: `[N, C, H, W]` → `[N, C, 2H, 2W]`.
pub fn upsample_nearest2x(ctx: &Context, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "upsample_nearest2x";
    let (n, c, h, w) = x.dims4(OP)?;
    let out = ctx.empty(&[n, c, 2 * h, 2 * w], "upsample_nearest2x.out")?;
    elements(OP, &out)?;
    let total = x.numel() as u32;
    let params = Params {
        n: total,
        p0: w as u32,
        p1: 0,
        p2: 0,
    };
    if w.is_multiple_of(4) {
        launch(
            ctx,
            "upsample_nearest2x4",
            params,
            (total / 4).div_ceil(256),
            &[x.buffer(), out.buffer()],
        )?;
    } else {
        launch(ctx, OP, params, total.div_ceil(256), &[x.buffer(), out.buffer()])?;
    }
    Ok(out)
}

/// Adjoint of [`upsample_nearest2x`]: `[N, C, 2H, 2W]` → `[N, C, H, W]`, summing 2x2 blocks.
pub fn upsample_nearest2x_backward(ctx: &Context, dy: &Tensor) -> Result<Tensor> {
    const OP: &str = "upsample_nearest2x_backward";
    let (n, c, h2, w2) = dy.dims4(OP)?;
    if h2 % 2 != 0 || w2 % 2 != 0 {
        return Err(Error::shape(
            OP,
            format!("dy: height and width must be even, got {:?}", dy.shape()),
        ));
    }
    elements(OP, dy)?;
    let (h, w) = (h2 / 2, w2 / 2);
    let dx = ctx.empty(&[n, c, h, w], "upsample_nearest2x_backward.dx")?;
    let total = dx.numel() as u32;
    let params = Params {
        n: total,
        p0: w as u32,
        p1: 0,
        p2: 0,
    };
    if w.is_multiple_of(4) {
        let entry = "upsample_nearest2x_backward4";
        launch(
            ctx,
            entry,
            params,
            (total / 4).div_ceil(256),
            &[dy.buffer(), dx.buffer()],
        )?;
    } else {
        launch(ctx, OP, params, total.div_ceil(256), &[dy.buffer(), dx.buffer()])?;
    }
    Ok(dx)
}

/// Batched transpose `[batch, rows, cols]` → `[batch, cols, rows]` into a tensor of `shape`.
fn transpose(
    ctx: &Context,
    op: &'static str,
    x: &Tensor,
    batch: usize,
    rows: usize,
    cols: usize,
    shape: &[usize],
) -> Result<Tensor> {
    elements(op, x)?;
    let out = ctx.empty(shape, "transpose.out")?;
    // On CPU adapters 4×4 blocks in registers where both sides allow (transpose4 in
    // shaders/layout.wgsl, 64 per workgroup); elsewhere 16×16 tiles through workgroup memory.
    let blocked =
        ctx.adapter_info().device_type == wgpu::DeviceType::Cpu && rows.is_multiple_of(4) && cols.is_multiple_of(4);
    let (entry, per_matrix, per_workgroup) = if blocked {
        ("transpose4", (rows / 4) * (cols / 4), 64)
    } else {
        ("transpose", rows.div_ceil(16) * cols.div_ceil(16), 1)
    };
    let params = Params {
        n: batch as u32,
        p0: rows as u32,
        p1: cols as u32,
        p2: per_matrix as u32,
    };
    let units =
        u32::try_from(batch * per_matrix).map_err(|_| Error::shape(op, format!("{:?} is too large", x.shape())))?;
    launch(
        ctx,
        entry,
        params,
        units.div_ceil(per_workgroup),
        &[x.buffer(), out.buffer()],
    )?;
    Ok(out)
}

/// `[N, C, H, W]` → `[N, H·W, C]` (tokens for attention).
pub fn nchw_to_nlc(ctx: &Context, x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4("nchw_to_nlc")?;
    transpose(ctx, "nchw_to_nlc", x, n, c, h * w, &[n, h * w, c])
}

/// `[N, L, C]` with L = h·w → `[N, C, h, w]`.
pub fn nlc_to_nchw(ctx: &Context, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    const OP: &str = "nlc_to_nchw";
    let (n, l, c) = match x.shape()[..] {
        [n, l, c] => (n, l, c),
        _ => return Err(Error::shape(OP, format!("x: expected [N, L, C], got {:?}", x.shape()))),
    };
    if l != h * w {
        return Err(Error::shape(
            OP,
            format!("x {:?}: L = {l} is not h·w = {h}·{w}", x.shape()),
        ));
    }
    transpose(ctx, OP, x, n, l, c, &[n, c, h, w])
}
