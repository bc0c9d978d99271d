//! 2-D convolution (`shaders/conv2d.wgsl`), forward and backward, as implicit GEMM.
//!
//! # Contracts
//! - `conv2d(x, w, bias, p)`: x [N,Cin,H,W], w [Cout,Cin,kh,kw], bias [Cout] or None →
//!   y [N,Cout,Ho,Wo] = conv(x, w) + bias (new tensor, written =), with (Ho, Wo) =
//!   `p.out_hw(H, W, kh, kw)`.
//! - `conv2d_backward(x, w, dy, p, need_dx)`: x, w as in the forward, dy [N,Cout,Ho,Wo] →
//!   new tensors dx [N,Cin,H,W] (only if `need_dx`), dw [Cout,Cin,kh,kw], db [Cout], each
//!   written = (not accumulated).
//!
//! Any kernel size up to 22×22 (kh·kw ≤ 512), any stride ≥ 1 and any (asymmetric) zero padding
//! are supported. No im2col matrix is materialised: besides x, w, y and the gradients, the only
//! scratch memory is the weight grad's partial sums, ⌈N·Ho·Wo / 4096⌉ · Cout · (Cin·kh·kw + 1)
//! floats. On llvmpipe, which ends any loop after 65,535 iterations per invocation, one
//! invocation runs about Cin·kh·kw (forward) or Cout·kh·kw/stride² (input grad) steps, so those
//! must stay below ~60,000 (a 3×3 conv with up to ~6,500 channels).

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
use crate::tensor::Tensor;

static SHADER: Shader = crate::shader!("conv2d");
/// Invocations per workgroup (override `WG` in the shader).
const WG: u32 = 64;
/// Channels per workgroup (4·V in the shader).
const CH_TILE: usize = 8;
/// vec4 slots of staged operand per round (`TILE` in the shader).
const TILE_VEC4: usize = 1024;
/// Output pixels reduced by one workgroup of the weight grad before its partial sums are
/// written (bounds the loop length of one invocation: llvmpipe ends loops after 65,535
/// iterations).
const SLICE_PIXELS: usize = 4096;

/// Stride and padding; pad = [top, bottom, left, right] (asymmetric padding is needed for
/// diffusers' Downsample2D with downsample_padding=0, which pads (0,1,0,1) then convolves with
/// padding 0, stride 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between output positions, in input pixels (both directions).
    pub stride: usize,
    /// Zero padding [top, bottom, left, right].
    pub pad: [usize; 4],
}

impl Conv2dParams {
    /// Stride `stride` with the same padding `pad` on all four sides.
    pub fn new(stride: usize, pad: usize) -> Self {
        Self { stride, pad: [pad; 4] }
    }

    /// Stride `stride` with padding [top, bottom, left, right].
    pub fn asymmetric(stride: usize, pad: [usize; 4]) -> Self {
        Self { stride, pad }
    }

    /// Output (Ho, Wo) for an H×W input and a kh×kw kernel: (H + top + bottom − kh) / stride + 1,
    /// likewise for W; (0, 0) when the kernel does not fit in the padded input or stride is 0.
    pub fn out_hw(&self, h: usize, w: usize, kh: usize, kw: usize) -> (usize, usize) {
        let [t, b, l, r] = self.pad;
        match ((h + t + b).checked_sub(kh), (w + l + r).checked_sub(kw), self.stride) {
            (Some(dh), Some(dw), s) if s > 0 && kh > 0 && kw > 0 => (dh / s + 1, dw / s + 1),
            _ => (0, 0),
        }
    }
}

/// Gradients of [`conv2d`].
#[derive(Debug)]
pub struct Conv2dGrads {
    /// dL/dx [N,Cin,H,W]; None when not requested.
    pub dx: Option<Tensor>,
    /// dL/dw [Cout,Cin,kh,kw].
    pub dw: Tensor,
    /// dL/dbias [Cout].
    pub db: Tensor,
}

/// Mirrors `Params` in shaders/conv2d.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    ho: u32,
    wo: u32,
    chunk: u32,
    has_bias: u32,
    split: u32,
    _pad: u32,
}

/// Validated sizes of one convolution.
struct Geometry {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    p: Conv2dParams,
}

impl Geometry {
    fn new(op: &'static str, x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Self> {
        let (n, cin, h, wd) = x.dims4(op)?;
        let (cout, wcin, kh, kw) = w.dims4(op)?;
        if wcin != cin {
            return Err(Error::shape(
                op,
                format!(
                    "w {:?} expects {wcin} input channels but x {:?} has {cin}",
                    w.shape(),
                    x.shape()
                ),
            ));
        }
        if p.stride == 0 {
            return Err(Error::arg("stride", "must be at least 1"));
        }
        if kh * kw > TILE_VEC4 / (CH_TILE / 4) {
            return Err(Error::shape(
                op,
                format!(
                    "kernel {kh}x{kw} of w {:?} is larger than the supported kh·kw ≤ {}",
                    w.shape(),
                    TILE_VEC4 / (CH_TILE / 4)
                ),
            ));
        }
        let (ho, wo) = p.out_hw(h, wd, kh, kw);
        if ho == 0 || wo == 0 {
            return Err(Error::shape(
                op,
                format!(
                    "kernel {kh}x{kw} of w {:?} does not fit x {:?} padded by {:?}",
                    w.shape(),
                    x.shape(),
                    p.pad
                ),
            ));
        }
        let g = Geometry {
            n,
            cin,
            h,
            w: wd,
            cout,
            kh,
            kw,
            ho,
            wo,
            p,
        };
        // Flat indices in the shader are u32.
        let biggest = [n * cin * h * wd, n * cout * ho * wo, cout * cin * kh * kw]
            .into_iter()
            .max()
            .unwrap_or(0);
        if biggest > u32::MAX as usize || p.pad.iter().chain([&p.stride]).any(|&v| v > 1 << 16) {
            return Err(Error::shape(
                op,
                format!(
                    "x {:?} with w {:?} and {p:?} is too large to index with 32 bits",
                    x.shape(),
                    w.shape()
                ),
            ));
        }
        Ok(g)
    }

    fn params(&self, chunk: usize, has_bias: bool, split: usize) -> Params {
        Params {
            n: self.n as u32,
            cin: self.cin as u32,
            h: self.h as u32,
            w: self.w as u32,
            cout: self.cout as u32,
            kh: self.kh as u32,
            kw: self.kw as u32,
            stride: self.p.stride as u32,
            pad_top: self.p.pad[0] as u32,
            pad_left: self.p.pad[2] as u32,
            ho: self.ho as u32,
            wo: self.wo as u32,
            chunk: chunk as u32,
            has_bias: has_bias as u32,
            split: split as u32,
            _pad: 0,
        }
    }

    /// Channels of the K axis staged per round when the staged tile holds kh·kw taps of
    /// CH_TILE channels each.
    fn channel_chunk(&self) -> usize {
        TILE_VEC4 / (self.kh * self.kw * CH_TILE / 4).max(1)
    }
}

/// One grid dimension of `n` workgroups, checked against the per-dimension limit.
fn groups_1d(ctx: &Context, op: &'static str, n: usize) -> Result<u32> {
    let max = ctx.limits().max_compute_workgroups_per_dimension as usize;
    if n > max {
        return Err(Error::shape(
            op,
            format!("{n} workgroups exceed the adapter's {max} per grid dimension"),
        ));
    }
    Ok(n as u32)
}

/// Grid for `columns` GEMM columns (one per invocation) and `z` channel tiles.
fn grid(ctx: &Context, op: &'static str, columns: usize, z: usize) -> Result<[u32; 3]> {
    let tiles = columns.div_ceil(WG as usize);
    if tiles > u32::MAX as usize {
        return Err(Error::shape(op, format!("{columns} columns are too many")));
    }
    let [x, y, _] = ctx.grid(tiles as u32);
    Ok([x, y, groups_1d(ctx, op, z)?])
}

/// x [N,Cin,H,W], w [Cout,Cin,kh,kw], bias [Cout] -> y [N,Cout,Ho,Wo]
pub fn conv2d(ctx: &Context, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: Conv2dParams) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let g = Geometry::new(OP, x, w, p)?;
    if let Some(b) = bias {
        b.expect_shape(OP, "bias", &[g.cout])?;
    }
    let y = ctx.empty(&[g.n, g.cout, g.ho, g.wo], "conv2d.y")?;
    let params = g.params(g.channel_chunk(), bias.is_some(), 0);
    // Without a bias the kernel never reads binding 4; w stands in for it.
    let b = bias.map_or(w.buffer(), |b| b.buffer());
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "conv2d_forward",
        constants: &[("WG", WG as f64)],
        params: bytemuck::bytes_of(&params),
        buffers: &[x.buffer(), w.buffer(), y.buffer(), b],
        workgroups: grid(ctx, OP, g.n * g.ho * g.wo, g.cout.div_ceil(CH_TILE))?,
    })?;
    Ok(y)
}

/// gradients for dy [N,Cout,Ho,Wo]; dx computed only if need_dx (the first conv of a net needs none)
pub fn conv2d_backward(
    ctx: &Context,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    p: Conv2dParams,
    need_dx: bool,
) -> Result<Conv2dGrads> {
    const OP: &str = "conv2d_backward";
    let g = Geometry::new(OP, x, w, p)?;
    dy.expect_shape(OP, "dy", &[g.n, g.cout, g.ho, g.wo])?;

    let dx = if need_dx {
        let dx = ctx.empty(x.shape(), "conv2d.dx")?;
        let params = g.params(g.channel_chunk(), false, 0);
        let s = g.p.stride;
        ctx.dispatch(Dispatch {
            shader: &SHADER,
            entry: "conv2d_backward_input",
            constants: &[("WG", WG as f64)],
            params: bytemuck::bytes_of(&params),
            buffers: &[dy.buffer(), w.buffer(), dx.buffer()],
            workgroups: grid(
                ctx,
                OP,
                g.n * g.h.div_ceil(s) * g.w.div_ceil(s),
                g.cin.div_ceil(CH_TILE) * s * s,
            )?,
        })?;
        Some(dx)
    } else {
        None
    };

    // Weight and bias grad: partial sums over slices of the output pixels, then a reduction.
    let taps = g.cin * g.kh * g.kw;
    let pixels = g.n * g.ho * g.wo;
    let part_floats = |split: usize| pixels.div_ceil(split) * g.cout * (taps + 1);
    let max_floats = (ctx.max_binding_bytes() / 4) as usize;
    let mut split = SLICE_PIXELS;
    while part_floats(split) > max_floats {
        split *= 2;
    }
    let slices = pixels.div_ceil(split);
    let part = ctx.empty(&[slices, g.cout, taps + 1], "conv2d.dw_partial")?;
    let params = g.params(TILE_VEC4 / (CH_TILE / 4), false, split);
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "conv2d_backward_weight",
        constants: &[("WG", WG as f64)],
        params: bytemuck::bytes_of(&params),
        buffers: &[x.buffer(), dy.buffer(), part.buffer()],
        workgroups: [
            groups_1d(ctx, OP, (taps + 1).div_ceil(WG as usize))?,
            groups_1d(ctx, OP, slices)?,
            groups_1d(ctx, OP, g.cout.div_ceil(CH_TILE))?,
        ],
    })?;

    let dw = ctx.empty(w.shape(), "conv2d.dw")?;
    let db = ctx.empty(&[g.cout], "conv2d.db")?;
    let params = g.params(0, false, slices);
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "conv2d_backward_reduce",
        constants: &[("WG", WG as f64)],
        params: bytemuck::bytes_of(&params),
        buffers: &[part.buffer(), dw.buffer(), db.buffer()],
        workgroups: grid(ctx, OP, g.cout * (taps + 1), 1)?,
    })?;
    Ok(Conv2dGrads { dx, dw, db })
}
