//! 2-D convolution (`shaders/conv2d.wgsl`), forward and backward: as implicit GEMM on any
//! adapter, and on CPU adapters with 8-wide subgroups as Winograd, pointwise or im2col GEMMs
//! ([`Algo`]).
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
//! are supported. The implicit GEMM materialises no im2col matrix: besides x, w, y and the
//! gradients, its only scratch memory is the weight grad's partial sums, ⌈N·Ho·Wo / 4096⌉ · Cout · (Cin·kh·kw + 1)
//! floats. On llvmpipe, which ends any loop after 65,535 iterations per invocation, one
//! invocation runs about Cin·kh·kw (forward) or Cout·kh·kw/stride² (input grad) steps, so those
//! must stay below ~60,000 (a 3×3 conv with up to ~6,500 channels).

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
use crate::ops::dropout::Dropout;
use crate::ops::matmul;
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

/// x [N,Cin,H,W], w [Cout,Cin,kh,kw], bias [Cout] -> y [N,Cout,Ho,Wo], with the algorithm
/// [`Algo::Auto`] picks for this adapter and shape.
pub fn conv2d(ctx: &Context, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: Conv2dParams) -> Result<Tensor> {
    conv2d_with(ctx, Algo::Auto, x, w, bias, p)
}

/// A group norm (then SiLU when `silu`) that [`conv2d_fused`] applies to x as it reads it:
/// the convolution sees (x − mean)·rstd·γ + β per (image, group, channel), zero-padded after.
#[derive(Clone, Copy)]
pub struct InputNorm<'a> {
    /// `[N, G, 2]` = (mean, rstd), from `ops::groupnorm::group_norm_stats`.
    pub stats: &'a Tensor,
    /// `[Cin]`.
    pub gamma: &'a Tensor,
    /// `[Cin]`.
    pub beta: &'a Tensor,
    /// Groups of the norm (dividing Cin).
    pub groups: usize,
    /// SiLU after the norm.
    pub silu: bool,
    /// Dropout after the norm (and SiLU), as [`crate::ops::dropout::dropout`] draws it for x's
    /// shape: a ResNet block's dropout between its second norm and convolution, with no
    /// stored activation. The matching backward is
    /// [`crate::ops::groupnorm::group_norm_backward_dropout`].
    pub dropout: Option<crate::ops::dropout::Dropout>,
}

/// What [`conv2d_fused`] does around the convolution: a group norm of its input, and additions
/// to its output before it is stored.
#[derive(Clone, Copy, Default)]
pub struct Fused<'a> {
    /// Normalize x as it is read (ResNet blocks: norm → SiLU → conv with no stored activation).
    pub input_norm: Option<InputNorm<'a>>,
    /// `[N, Cout]`, added to every pixel of its image and channel (a ResNet block's time
    /// embedding projection).
    pub image_bias: Option<&'a Tensor>,
    /// (`r` `[N, Cout, Ho, Wo]`, `s`): the output becomes s·(conv + biases + r) (a ResNet
    /// block's shortcut and output scale).
    pub residual: Option<(&'a Tensor, f32)>,
    /// The weights' Winograd transform from [`winograd_weight_transform`] of the same w, used
    /// instead of computing it when the forward runs Winograd (ignored otherwise): weights that
    /// do not change between calls, e.g. over a sampling loop, are transformed once.
    pub weight_transform: Option<&'a Tensor>,
}

/// Whether the forward of this convolution runs Winograd on `ctx` ([`Algo::Auto`]'s choice), so
/// that a [`Fused::weight_transform`] would serve it.
pub fn forward_runs_winograd(ctx: &Context, x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<bool> {
    let g = Geometry::new("conv2d", x, w, p)?;
    Ok(matches!(
        resolve_forward(ctx, Algo::Auto, &g),
        Ok(Algo::Winograd { .. })
    ))
}

/// The Winograd F(4×4, 3×3) weight transform U `[36, Cout, Cin]` of w `[Cout, Cin, 3, 3]`, for
/// [`Fused::weight_transform`]. It is only valid while w holds the same values.
pub fn winograd_weight_transform(ctx: &Context, w: &Tensor) -> Result<Tensor> {
    const OP: &str = "winograd_weight_transform";
    let (cout, cin, kh, kw) = w.dims4(OP)?;
    if (kh, kw) != (3, 3) {
        return Err(Error::shape(OP, format!("w {:?}: expected a 3×3 kernel", w.shape())));
    }
    weight_transform(ctx, w, cout, cin, false)
}

/// U `[36, cout, cin]` of w by the `wino_weight` kernel (which reads only cin, cout and flip of
/// its parameters); with `flip`, of the input grad's rotated, transposed weights.
fn weight_transform(ctx: &Context, w: &Tensor, cout: usize, cin: usize, flip: bool) -> Result<Tensor> {
    let u = ctx.empty(&[WINO_POINTS, cout, cin], "conv2d.wino_u")?;
    let params = WinoParams {
        cin: cin as u32,
        cout: cout as u32,
        flip: flip as u32,
        ..bytemuck::Zeroable::zeroed()
    };
    flat_dispatch(ctx, "wino_weight", &params, cout * cin, &[w.buffer(), u.buffer()])?;
    Ok(u)
}

/// The shapes of an input norm for x of geometry `g`.
fn check_norm(g: &Geometry, nm: InputNorm<'_>) -> Result<()> {
    const OP: &str = "conv2d_fused";
    if nm.groups == 0 || !g.cin.is_multiple_of(nm.groups) {
        return Err(Error::arg(
            "input_norm.groups",
            format!("{} groups do not divide the {} input channels", nm.groups, g.cin),
        ));
    }
    nm.stats.expect_shape(OP, "input_norm.stats", &[g.n, nm.groups, 2])?;
    nm.gamma.expect_shape(OP, "input_norm.gamma", &[g.cin])?;
    nm.beta.expect_shape(OP, "input_norm.beta", &[g.cin])
}

/// [`conv2d`] with `epi`: y = s·(conv(norm(x), w) + bias[c] + image_bias[n, c] + r) with the
/// parts of `epi` that are present (norm = identity without `input_norm`, s = 1 without a
/// residual). The Winograd path applies them in its input and output transforms, so they cost
/// no pass over x or y of their own; other algorithms run them as separate passes.
pub fn conv2d_fused(
    ctx: &Context,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    p: Conv2dParams,
    epi: Fused<'_>,
) -> Result<Tensor> {
    conv2d_fused_with(ctx, Algo::Auto, x, w, bias, p, epi)
}

/// [`conv2d_fused`] with a chosen algorithm; errors if `algo` cannot run this problem on `ctx`.
pub fn conv2d_fused_with(
    ctx: &Context,
    algo: Algo,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    p: Conv2dParams,
    epi: Fused<'_>,
) -> Result<Tensor> {
    Ok(fused_impl(ctx, algo, x, w, bias, p, epi, false)?.0)
}

/// [`conv2d_fused_with`], also returning the Winograd input transform when `save` and the
/// whole batch ran in one Winograd window.
#[allow(clippy::too_many_arguments)]
fn fused_impl(
    ctx: &Context,
    algo: Algo,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    p: Conv2dParams,
    epi: Fused<'_>,
    save: bool,
) -> Result<(Tensor, ConvSaved)> {
    const OP: &str = "conv2d_fused";
    let g = Geometry::new(OP, x, w, p)?;
    if let Some(b) = bias {
        b.expect_shape(OP, "bias", &[g.cout])?;
    }
    if let Some(ib) = epi.image_bias {
        ib.expect_shape(OP, "image_bias", &[g.n, g.cout])?;
    }
    if let Some((r, _)) = epi.residual {
        r.expect_shape(OP, "residual", &[g.n, g.cout, g.ho, g.wo])?;
    }
    if let Some(nm) = epi.input_norm {
        check_norm(&g, nm)?;
    }
    let resolved = resolve_forward(ctx, algo, &g)?;
    if let Some(nm) = epi.input_norm.filter(|nm| nm.dropout.is_some()) {
        // Only the vec4 input transform draws the dropout mask; elsewhere the norm and the
        // dropout run as passes of their own.
        if !(matches!(resolved, Algo::Winograd { .. }) && g.wino_vec4()) {
            let d = nm.dropout.expect("filtered");
            let normed =
                crate::ops::groupnorm::group_norm_apply(ctx, x, nm.gamma, nm.beta, nm.stats, nm.groups, nm.silu)?;
            let dropped = crate::ops::dropout::dropout(ctx, &normed, d.p, d.seed, d.stream)?;
            let rest = Fused {
                input_norm: None,
                ..epi
            };
            return fused_impl(ctx, algo, &dropped, w, bias, p, rest, save);
        }
    }
    if let Algo::Winograd { window } = resolved {
        return winograd_forward_fused(ctx, &g, x, w, bias, window, false, epi, save);
    }
    let normed = epi
        .input_norm
        .map(|nm| crate::ops::groupnorm::group_norm_apply(ctx, x, nm.gamma, nm.beta, nm.stats, nm.groups, nm.silu))
        .transpose()?;
    let mut y = conv2d_with(ctx, algo, normed.as_ref().unwrap_or(x), w, bias, p)?;
    if let Some(ib) = epi.image_bias {
        y = crate::ops::elementwise::add_channel_bias(ctx, &y, ib)?;
    }
    if let Some((r, scale)) = epi.residual {
        y = crate::ops::elementwise::axpby(ctx, r, &y, scale, scale)?;
    }
    Ok((y, ConvSaved::default()))
}

/// What a convolution's forward keeps for its backward ([`conv2d_fused_saving`],
/// [`conv2d_backward_saved`]): the Winograd input transform of x and the weight transform, when
/// the forward ran Winograd over the whole batch in one window. Empty otherwise; the backward
/// then recomputes.
#[derive(Clone, Default)]
pub struct ConvSaved {
    v: Option<Tensor>,
    // The forward's weight transform U, for the input grad as the forward's adjoint.
    u: Option<Tensor>,
}

impl ConvSaved {
    /// Whether the Winograd input transform was kept: then [`conv2d_backward_saved`] reads x
    /// for its shape only (x may be any tensor of that shape, e.g. the un-normalized input of a
    /// forward that normalized inside its input transform).
    pub fn keeps_input_transform(&self) -> bool {
        self.v.is_some()
    }

    /// Bytes held (0 when nothing was kept).
    pub fn bytes(&self) -> u64 {
        self.v.as_ref().map_or(0, |v| v.bytes()) + self.u.as_ref().map_or(0, |u| u.bytes())
    }
}

/// [`conv2d_fused`] (algorithm [`Algo::Auto`]) that also keeps what the backward would
/// otherwise recompute: with Winograd, the input transform V (2.25× the size of x), which
/// saves the weight grad one input transform.
pub fn conv2d_fused_saving(
    ctx: &Context,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    p: Conv2dParams,
    epi: Fused<'_>,
) -> Result<(Tensor, ConvSaved)> {
    fused_impl(ctx, Algo::Auto, x, w, bias, p, epi, true)
}

/// [`conv2d_backward`] using what [`conv2d_fused_saving`] kept from the forward on the same x
/// and w.
pub fn conv2d_backward_saved(
    ctx: &Context,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    p: Conv2dParams,
    need_dx: bool,
    saved: &ConvSaved,
) -> Result<Conv2dGrads> {
    backward_impl(ctx, Algo::Auto, x, w, dy, p, need_dx, Some(saved), None).map(plain_grads)
}

/// The group norm (then SiLU when `silu`, then `dropout`) whose output a convolution read, for
/// [`conv2d_backward_norm`]: `x` is the norm's input, `stats` [N, G, 2] its (mean, rstd) as
/// [`crate::ops::groupnorm::group_norm_stats`] returns them.
#[derive(Clone, Copy)]
pub struct NormGrad<'a> {
    /// The norm's input [N, C, H, W].
    pub x: &'a Tensor,
    /// γ [C].
    pub gamma: &'a Tensor,
    /// β [C].
    pub beta: &'a Tensor,
    /// [N, G, 2]: (mean, rstd) per group.
    pub stats: &'a Tensor,
    /// G, dividing C.
    pub groups: usize,
    /// SiLU after the norm.
    pub silu: bool,
    /// Dropout after the norm (and the SiLU), as [`crate::ops::dropout::dropout`] draws it.
    pub dropout: Option<Dropout>,
}

impl NormGrad<'_> {
    /// Whether the adjoint kernel can run this norm's first backward pass for `g`'s input.
    fn fits(&self, g: &Geometry) -> bool {
        self.x.shape() == [g.n, g.cin, g.h, g.w]
            && self.groups > 0
            && g.cin.is_multiple_of(self.groups)
            && self.stats.shape() == [g.n, self.groups, 2]
    }
}

/// The backward of a convolution whose input was `norm`'s output, through the norm: the
/// convolution's weight and bias grads and the norm's (dx of the norm's input, plus `dx_addend`
/// when given; dγ, dβ), as [`conv2d_backward_saved`] followed by
/// [`crate::ops::groupnorm::group_norm_backward_dropout`] would give them. Where the input grad
/// runs as the adjoint of a Winograd forward four tiles wide, its kernel also runs the norm's
/// first backward pass (the grad of the norm's output and its partial sums), so the norm's
/// input grad reads the convolution's output grad once instead of twice and recomputes no SiLU
/// or dropout mask. `x` is the convolution's input (any tensor of its shape where `saved` keeps
/// the input transform).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_norm(
    ctx: &Context,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    p: Conv2dParams,
    saved: &ConvSaved,
    norm: NormGrad<'_>,
    dx_addend: Option<&Tensor>,
) -> Result<NormConvGrads> {
    use crate::ops::groupnorm;
    let BackwardGrads {
        dx: input,
        dw,
        db,
        db_images,
    } = backward_impl(ctx, Algo::Auto, x, w, dy, p, true, Some(saved), Some(&norm))?;
    let (dx, dgamma, dbeta) = match input {
        InputGrad::Norm { g, parts, chunks } => groupnorm::group_norm_backward_parts(
            ctx,
            norm.x,
            norm.gamma,
            norm.beta,
            norm.stats,
            &g,
            &parts,
            chunks,
            norm.groups,
            dx_addend,
        )?,
        InputGrad::Dx(da) => groupnorm::group_norm_backward_dropout(
            ctx,
            norm.x,
            norm.gamma,
            norm.beta,
            norm.stats,
            &da,
            norm.groups,
            norm.silu,
            norm.dropout,
            dx_addend,
        )?,
        InputGrad::None => unreachable!("dx was requested"),
    };
    Ok(NormConvGrads {
        dx,
        dw,
        db,
        db_images,
        dgamma,
        dbeta,
    })
}

/// What [`conv2d_backward_norm`] returns.
pub struct NormConvGrads {
    /// dL/d(the norm's input), dx_addend included.
    pub dx: Tensor,
    /// dL/dw of the convolution.
    pub dw: Tensor,
    /// dL/dbias of the convolution.
    pub db: Tensor,
    /// The bias grad per image [Cout, N] (Σ over each image's pixels of dy), where the Winograd
    /// weight grad had it at hand: the grad of a per-image bias added to the output (a ResNet
    /// block's time embedding) without a pass over dy.
    pub db_images: Option<Tensor>,
    /// dL/dγ of the norm.
    pub dgamma: Tensor,
    /// dL/dβ of the norm.
    pub dbeta: Tensor,
}

/// [`conv2d`] with a chosen algorithm; errors if `algo` cannot run this problem on `ctx`.
pub fn conv2d_with(
    ctx: &Context,
    algo: Algo,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    p: Conv2dParams,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let g = Geometry::new(OP, x, w, p)?;
    if let Some(b) = bias {
        b.expect_shape(OP, "bias", &[g.cout])?;
    }
    match resolve_forward(ctx, algo, &g)? {
        Algo::Im2col { window } => return im2col_forward(ctx, &g, x, w, bias, window),
        Algo::Winograd { window } => return winograd_forward(ctx, &g, x, w, bias, window, false),
        Algo::Pointwise => return pointwise_forward(ctx, &g, x, w, bias),
        _ => {}
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

/// gradients for dy [N,Cout,Ho,Wo]; dx computed only if need_dx (the first conv of a net needs
/// none), with the algorithm [`Algo::Auto`] picks.
pub fn conv2d_backward(
    ctx: &Context,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    p: Conv2dParams,
    need_dx: bool,
) -> Result<Conv2dGrads> {
    conv2d_backward_with(ctx, Algo::Auto, x, w, dy, p, need_dx)
}

/// [`conv2d_backward`] with a chosen algorithm; errors if `algo` cannot run this problem.
pub fn conv2d_backward_with(
    ctx: &Context,
    algo: Algo,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    p: Conv2dParams,
    need_dx: bool,
) -> Result<Conv2dGrads> {
    backward_impl(ctx, algo, x, w, dy, p, need_dx, None, None).map(plain_grads)
}

/// The input grad of a 3×3 / stride 1 / padding 1 convolution whose Cout is not a multiple of 4
/// (a network's last convolution: 1 or 3 channels), which Winograd cannot run as it is (its
/// GEMMs have K = Cout): Winograd on dy and w zero-padded to a multiple of 4 output channels,
/// whose zero channels add nothing. None where Winograd cannot run the padded problem either.
fn winograd_input_grad_padded(ctx: &Context, g: &Geometry, w: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
    let cp = g.cout.next_multiple_of(4);
    let padded = Geometry {
        cin: cp,
        cout: g.cin,
        ..*g
    };
    if cp == g.cout || !matches!(resolve_forward(ctx, Algo::Auto, &padded), Ok(Algo::Winograd { .. })) {
        return Ok(None);
    }
    // dy [N, Cout, H, W] → [N, cp, H, W]: one clear and one copy per image.
    let plane = (g.ho * g.wo * 4) as u64;
    let dyp = ctx.empty(&[g.n, cp, g.ho, g.wo], "conv2d.dy_padded")?;
    ctx.clear_buffer(dyp.buffer());
    for i in 0..g.n as u64 {
        let bytes = g.cout as u64 * plane;
        ctx.copy_buffer(dy.buffer(), i * bytes, dyp.buffer(), i * cp as u64 * plane, bytes);
    }
    // w [Cout, Cin, 3, 3] → [cp, Cin, 3, 3]: the added output channels are zero rows.
    let wp = ctx.empty(&[cp, g.cin, g.kh, g.kw], "conv2d.w_padded")?;
    ctx.clear_buffer(wp.buffer());
    ctx.copy_buffer(w.buffer(), 0, wp.buffer(), 0, w.bytes());
    Ok(Some(winograd_forward(ctx, &padded, &dyp, &wp, None, 0, true)?))
}

/// The input side of [`backward_impl`]: dx, or (given a norm, where the adjoint kernel could
/// run its first pass) the grad g of the norm's output with its partial sums.
enum InputGrad {
    None,
    Dx(Tensor),
    Norm { g: Tensor, parts: Tensor, chunks: usize },
}

/// What [`backward_impl`] returns: [`Conv2dGrads`] with the input side as [`InputGrad`], and
/// the bias grad per image [Cout, N] where the Winograd weight grad gave it.
struct BackwardGrads {
    dx: InputGrad,
    dw: Tensor,
    db: Tensor,
    db_images: Option<Tensor>,
}

/// Grads of a backward given no norm (which returns no [`InputGrad::Norm`]).
fn plain_grads(BackwardGrads { dx, dw, db, .. }: BackwardGrads) -> Conv2dGrads {
    let dx = match dx {
        InputGrad::Dx(dx) => Some(dx),
        InputGrad::None => None,
        InputGrad::Norm { .. } => unreachable!("no norm was given"),
    };
    Conv2dGrads { dx, dw, db }
}

/// [`conv2d_backward_with`], with the forward's Winograd input transform when it was kept;
/// with `norm`, the input grad of a convolution whose input was that norm's output may come
/// back as [`InputGrad::Norm`].
#[allow(clippy::too_many_arguments)]
fn backward_impl(
    ctx: &Context,
    algo: Algo,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    p: Conv2dParams,
    need_dx: bool,
    saved: Option<&ConvSaved>,
    norm: Option<&NormGrad<'_>>,
) -> Result<BackwardGrads> {
    let wrap = |g: Conv2dGrads| BackwardGrads {
        dx: g.dx.map_or(InputGrad::None, InputGrad::Dx),
        dw: g.dw,
        db: g.db,
        db_images: None,
    };
    let saved_v = saved.and_then(|s| s.v.as_ref());
    let saved_u = saved.and_then(|s| s.u.as_ref());
    const OP: &str = "conv2d_backward";
    let g = Geometry::new(OP, x, w, p)?;
    dy.expect_shape(OP, "dy", &[g.n, g.cout, g.ho, g.wo])?;
    if matches!(algo, Algo::Auto | Algo::Pointwise) && resolve(ctx, algo, &g, false)? == Algo::Pointwise {
        return pointwise_backward(ctx, &g, x, w, dy, need_dx).map(wrap);
    }
    // For a 3×3, stride 1, padding 1 convolution the input grad is the same kind of
    // convolution of dy with the transposed, rotated weights: Winograd runs it where it can
    // (Auto, or Winograd asked for); the weight grad runs what Auto picks.
    let dx_geometry = Geometry {
        cin: g.cout,
        cout: g.cin,
        ..g
    };
    let dx_winograd = need_dx
        && matches!(algo, Algo::Auto | Algo::Winograd { .. })
        && matches!(
            resolve_forward(ctx, Algo::Auto, &dx_geometry),
            Ok(Algo::Winograd { .. })
        );
    let weight_winograd = matches!(algo, Algo::Auto | Algo::Winograd { .. })
        && matches!(resolve_forward(ctx, Algo::Auto, &g), Ok(Algo::Winograd { .. }));
    if weight_winograd {
        let window = match algo {
            Algo::Winograd { window } => window,
            _ => 0,
        };
        let WinoWeightGrads { dw, db, db_images, dm } = winograd_backward_weight(ctx, &g, x, dy, window, saved_v)?;
        let dx = match (need_dx, dx_winograd, dm, adjoint_input_grad_kernel(&g)) {
            (false, ..) => InputGrad::None,
            (true, true, Some(dm), Some("wino_input_adjoint4")) if norm.is_some_and(|nm| nm.fits(&g)) => {
                let (g_norm, parts, chunks) =
                    winograd_input_grad_adjoint_norm(ctx, &g, w, &dm, saved_u, norm.expect("checked"))?;
                InputGrad::Norm {
                    g: g_norm,
                    parts,
                    chunks,
                }
            }
            (true, true, Some(dm), Some(entry)) => {
                InputGrad::Dx(winograd_input_grad_adjoint(ctx, &g, entry, w, &dm, saved_u)?)
            }
            (true, true, ..) => InputGrad::Dx(winograd_forward(ctx, &dx_geometry, dy, w, None, window, true)?),
            (true, false, ..) => InputGrad::Dx(match winograd_input_grad_padded(ctx, &g, w, dy)? {
                Some(dx) => dx,
                None => direct_backward_input(ctx, &g, w, dy)?,
            }),
        };
        return Ok(BackwardGrads { dx, dw, db, db_images });
    }
    let algo = match algo {
        Algo::Winograd { .. } => Algo::Auto,
        other => other,
    };
    if let Algo::Im2col { window } = resolve(ctx, algo, &g, false)? {
        // The input grad's GEMM has K = Cout, which the subgroup kernel needs in multiples of 4;
        // otherwise that half runs on the implicit-GEMM kernel.
        let dx_im2col = need_dx && !dx_winograd && resolve(ctx, Algo::Auto, &g, true)? != Algo::Direct;
        let (dx, dw, db) = im2col_backward(ctx, &g, x, w, dy, dx_im2col, window)?;
        let dx = match dx_winograd {
            true => Some(winograd_forward(ctx, &dx_geometry, dy, w, None, 0, true)?),
            false => dx,
        };
        let dx = match (need_dx, dx) {
            (true, None) => Some(match winograd_input_grad_padded(ctx, &g, w, dy)? {
                Some(dx) => dx,
                None => direct_backward_input(ctx, &g, w, dy)?,
            }),
            (_, dx) => dx,
        };
        return Ok(wrap(Conv2dGrads { dx, dw, db }));
    }

    let dx = if need_dx {
        Some(direct_backward_input(ctx, &g, w, dy)?)
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
    Ok(wrap(Conv2dGrads { dx, dw, db }))
}

/// Input gradient with the implicit-GEMM kernel.
fn direct_backward_input(ctx: &Context, g: &Geometry, w: &Tensor, dy: &Tensor) -> Result<Tensor> {
    const OP: &str = "conv2d_backward";
    let dx = ctx.empty(&[g.n, g.cin, g.h, g.w], "conv2d.dx")?;
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
    Ok(dx)
}

/// How a convolution is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algo {
    /// On CPU adapters with 8-wide subgroups, where they apply: [`Algo::Pointwise`] for 1×1
    /// kernels, [`Algo::Winograd`] forwards for 3×3 ones, [`Algo::Im2col`] for the rest;
    /// [`Algo::Direct`] otherwise.
    Auto,
    /// Implicit GEMM with no column matrix in memory: any adapter, any shape.
    Direct,
    /// Column matrix of a batch window (at most [`IM2COL_BUDGET_BYTES`]) multiplied by the
    /// subgroup GEMM of `shaders/matmul_subgroup.wgsl`. Needs 8-wide subgroups and Ho·Wo a
    /// multiple of 4.
    Im2col {
        /// Images per column-matrix window; 0 = as many as fit in [`IM2COL_BUDGET_BYTES`].
        window: usize,
    },
    /// 1×1 kernels with stride 1 and no padding: the convolution is a matrix product per image
    /// (y = W·x, dx = Wᵀ·dy, dW = Σ dy·xᵀ), run by the subgroup GEMM straight on the tensors
    /// with no column matrix. Needs 8-wide subgroups and Cin, Cout and H·W multiples of 4.
    Pointwise,
    /// Forward only: Winograd F(4×4, 3×3) (36 products per 16 outputs instead of 144) for 3×3
    /// kernels with stride 1 and padding 1, input and output transforms around 36 subgroup
    /// GEMMs. Needs 8-wide subgroups and Cin % 4 == 0; the backward runs what [`Algo::Auto`]
    /// picks.
    Winograd {
        /// Images per window; 0 = as many as fit in [`IM2COL_BUDGET_BYTES`].
        window: usize,
    },
}

/// The im2col algorithm with automatic windows.
pub const IM2COL: Algo = Algo::Im2col { window: 0 };

/// Winograd F(4×4, 3×3) forward with automatic windows (the backward of this algorithm runs
/// what [`Algo::Auto`] picks).
pub const WINOGRAD: Algo = Algo::Winograd { window: 0 };

/// Largest column matrix the im2col path materialises at once; batches are split to fit.
pub const IM2COL_BUDGET_BYTES: u64 = 32 << 20;

/// Whether Winograd F(4×4, 3×3) can run the forward of `g` on `ctx`.
fn winograd_possible(ctx: &Context, g: &Geometry) -> bool {
    g.kh == 3
        && g.kw == 3
        && g.p.stride == 1
        && g.p.pad == [1; 4]
        && matmul::supports(
            ctx,
            matmul::Kernel::Subgroup { wg: matmul::SG_WG },
            g.cout,
            g.cin,
            4,
            false,
        )
        && g.wino_bytes_per_image() <= IM2COL_BUDGET_BYTES.min(ctx.max_binding_bytes())
}

/// Whether [`Algo::Pointwise`] can run `g` on `ctx` (forward, input grad and weight grad).
fn pointwise_possible(ctx: &Context, g: &Geometry) -> bool {
    let sg = matmul::Kernel::Subgroup { wg: matmul::SG_WG };
    let hw = g.h * g.w;
    g.kh == 1
        && g.kw == 1
        && g.p.stride == 1
        && g.p.pad == [0; 4]
        && matmul::supports(ctx, sg, g.cout, g.cin, hw, false)
        && matmul::supports(ctx, sg, g.cin, g.cout, hw, true)
        && matmul::supports(ctx, sg, g.cout, hw, g.cin, false)
}

/// The forward's algorithm: [`resolve`], plus Winograd where asked for or (Auto) possible.
fn resolve_forward(ctx: &Context, algo: Algo, g: &Geometry) -> Result<Algo> {
    match algo {
        Algo::Winograd { .. } if winograd_possible(ctx, g) => Ok(algo),
        Algo::Winograd { .. } => Err(Error::arg(
            "algo",
            format!(
                "Winograd needs a 3×3 kernel with stride 1 and padding 1, Cin = {} a multiple of 4 \
                 and 8-wide subgroups (adapter {})",
                g.cin,
                ctx.adapter_name()
            ),
        )),
        // On CPU adapters Winograd replaces im2col, and the implicit GEMM where im2col cannot run
        // (Ho·Wo not a multiple of 4), unless DDPM_CONV=direct or DDPM_NO_WINOGRAD asks otherwise.
        Algo::Auto => match resolve(ctx, algo, g, false)? {
            Algo::Im2col { .. } | Algo::Direct
                if ctx.adapter_info().device_type == wgpu::DeviceType::Cpu
                    && winograd_possible(ctx, g)
                    && std::env::var_os("DDPM_NO_WINOGRAD").is_none()
                    && !std::env::var("DDPM_CONV").is_ok_and(|v| v == "direct") =>
            {
                Ok(WINOGRAD)
            }
            other => Ok(other),
        },
        other => resolve(ctx, other, g, false),
    }
}

/// Which algorithm runs `g` (for the input grad when `input_grad`, whose GEMM also needs
/// Cout % 4 == 0).
fn resolve(ctx: &Context, algo: Algo, g: &Geometry, input_grad: bool) -> Result<Algo> {
    let kp = (g.cin * g.kh * g.kw + 1).next_multiple_of(4);
    let pix = g.ho * g.wo;
    let k_ok = !input_grad || g.cout.is_multiple_of(4);
    let possible = matmul::supports(ctx, matmul::Kernel::Subgroup { wg: matmul::SG_WG }, kp, 4, pix, true)
        && k_ok
        && (kp * pix * 4) as u64 <= IM2COL_BUDGET_BYTES.min(ctx.max_binding_bytes());
    match algo {
        Algo::Direct => Ok(Algo::Direct),
        Algo::Pointwise if pointwise_possible(ctx, g) => Ok(algo),
        Algo::Pointwise => Err(Error::arg(
            "algo",
            format!(
                "the pointwise convolution needs a 1×1 kernel with stride 1 and no padding, Cin = {}, \
                 Cout = {} and H·W = {} multiples of 4, and 8-wide subgroups (adapter {})",
                g.cin,
                g.cout,
                g.h * g.w,
                ctx.adapter_name()
            ),
        )),
        Algo::Winograd { window } => resolve(ctx, Algo::Im2col { window }, g, input_grad),
        Algo::Im2col { .. } if possible => Ok(algo),
        Algo::Im2col { .. } => Err(Error::arg(
            "algo",
            format!(
                "the im2col convolution needs 8-wide subgroups and Ho·Wo = {pix} a multiple of 4{} (adapter {})",
                if input_grad {
                    format!(", and Cout = {} a multiple of 4 for the input grad", g.cout)
                } else {
                    String::new()
                },
                ctx.adapter_name()
            ),
        )),
        Algo::Auto if std::env::var("DDPM_CONV").is_ok_and(|v| v == "direct") => Ok(Algo::Direct),
        Algo::Auto if pointwise_possible(ctx, g) && ctx.adapter_info().device_type == wgpu::DeviceType::Cpu => {
            Ok(Algo::Pointwise)
        }
        Algo::Auto if possible && ctx.adapter_info().device_type == wgpu::DeviceType::Cpu => Ok(IM2COL),
        Algo::Auto => Ok(Algo::Direct),
    }
}

/// Mirrors `ColParams` in shaders/conv2d.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ColParams {
    n0: u32,
    nb: u32,
    cin: u32,
    h: u32,
    w: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    ho: u32,
    wo: u32,
    k: u32,
    kp: u32,
    cout: u32,
    has_bias: u32,
}

impl Geometry {
    fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }
    /// K padded with the bias row to a multiple of 4.
    fn kp(&self) -> usize {
        (self.k() + 1).next_multiple_of(4)
    }
    fn col_params(&self, n0: usize, nb: usize, has_bias: bool) -> ColParams {
        ColParams {
            n0: n0 as u32,
            nb: nb as u32,
            cin: self.cin as u32,
            h: self.h as u32,
            w: self.w as u32,
            kh: self.kh as u32,
            kw: self.kw as u32,
            stride: self.p.stride as u32,
            pad_top: self.p.pad[0] as u32,
            pad_left: self.p.pad[2] as u32,
            ho: self.ho as u32,
            wo: self.wo as u32,
            k: self.k() as u32,
            kp: self.kp() as u32,
            cout: self.cout as u32,
            has_bias: has_bias as u32,
        }
    }
    /// Images per column-matrix window (`requested`, or as many as fit when 0).
    fn window(&self, ctx: &Context, requested: usize) -> usize {
        if requested > 0 {
            return requested.min(self.n);
        }
        let per_image = (self.kp() * self.ho * self.wo * 4) as u64;
        let budget = IM2COL_BUDGET_BYTES.min(ctx.max_binding_bytes());
        ((budget / per_image.max(1)) as usize).clamp(1, self.n)
    }
}

/// One invocation per element of a flat range of `total`, 256 per workgroup (the im2col and
/// Winograd helper kernels), with `params` as the uniform block.
fn flat_dispatch<P: bytemuck::Pod>(
    ctx: &Context,
    entry: &'static str,
    params: &P,
    total: usize,
    buffers: &[&wgpu::Buffer],
) -> Result<()> {
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry,
        constants: &[],
        params: bytemuck::bytes_of(params),
        buffers,
        workgroups: ctx.grid((total as u32).div_ceil(256)),
    })
}

/// col [nb, Kp, Ho·Wo] of x's window `params` (rows written as vec4s where Wo % 4 == 0).
fn im2col(ctx: &Context, g: &Geometry, params: &ColParams, x: &Tensor, col: &Tensor) -> Result<()> {
    let entry = if g.wo.is_multiple_of(4) { "im2col4" } else { "im2col" };
    let rows = params.nb as usize * g.kp() * g.ho;
    flat_dispatch(ctx, entry, params, rows, &[x.buffer(), col.buffer()])
}

/// w [Cout, Cin, kh, kw] (+ bias) → [Cout, Kp] with the bias in column K.
fn pack_weight(ctx: &Context, g: &Geometry, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let wp = ctx.empty(&[g.cout, g.kp()], "conv2d.w_packed")?;
    let params = g.col_params(0, 0, bias.is_some());
    // Without a bias the kernel never reads binding 2; the packed output cannot stand in (it
    // is bound writable), so w does.
    let b = bias.map_or(w.buffer(), |b| b.buffer());
    flat_dispatch(
        ctx,
        "pack_weight",
        &params,
        g.cout * g.kp(),
        &[w.buffer(), b, wp.buffer()],
    )?;
    Ok(wp)
}

fn im2col_forward(
    ctx: &Context,
    g: &Geometry,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    window: usize,
) -> Result<Tensor> {
    let y = ctx.empty(&[g.n, g.cout, g.ho, g.wo], "conv2d.y")?;
    let wp = pack_weight(ctx, g, w, bias)?;
    let (kp, pix) = (g.kp(), g.ho * g.wo);
    let window = g.window(ctx, window);
    let col = ctx.empty(&[window, kp, pix], "conv2d.col")?;
    for n0 in (0..g.n).step_by(window) {
        let nb = window.min(g.n - n0);
        let params = g.col_params(n0, nb, bias.is_some());
        im2col(ctx, g, &params, x, &col)?;
        // y[n0 + b] = Wp · col[b]
        let gemm = matmul::SgGemm {
            m: g.cout,
            k: kp,
            n: pix,
            batch: nb,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
            a_shared: true,
            a_off: 0,
            b_off: 0,
            out_off: n0 * g.cout * pix,
        };
        matmul::gemm_sg_raw(ctx, gemm, wp.buffer(), col.buffer(), y.buffer())?;
    }
    Ok(y)
}

/// (dx if `need_dx`, dw, db) on the im2col path.
fn im2col_backward(
    ctx: &Context,
    g: &Geometry,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    need_dx: bool,
    window: usize,
) -> Result<(Option<Tensor>, Tensor, Tensor)> {
    let (kp, pix) = (g.kp(), g.ho * g.wo);
    let window = g.window(ctx, window);
    let col = ctx.empty(&[window, kp, pix], "conv2d.col")?;
    let dwp = ctx.empty(&[g.cout, kp], "conv2d.dw_packed")?;
    let (wp, dcol, dx) = if need_dx {
        (
            Some(pack_weight(ctx, g, w, None)?),
            Some(ctx.empty(&[window, kp, pix], "conv2d.dcol")?),
            Some(ctx.empty(&[g.n, g.cin, g.h, g.w], "conv2d.dx")?),
        )
    } else {
        (None, None, None)
    };
    for n0 in (0..g.n).step_by(window) {
        let nb = window.min(g.n - n0);
        let params = g.col_params(n0, nb, false);
        im2col(ctx, g, &params, x, &col)?;
        // dWp (+)= Σ_b dy[n0 + b] · col[b]ᵀ: per-image products from one batched GEMM, then
        // their sum (two dispatches; each costs ~0.1 ms on lavapipe, and a lone image's
        // GEMM has too few tiles for the threads); one image at a time where the products
        // would not fit the budget.
        let parts_bytes = (nb * g.cout * kp * 4) as u64;
        if nb > 1 && parts_bytes <= IM2COL_BUDGET_BYTES.min(ctx.max_binding_bytes()) {
            let parts = ctx.empty(&[nb, g.cout * kp], "conv2d.dw_per_image")?;
            let gemm = matmul::SgGemm {
                a_off: n0 * g.cout * pix,
                ..matmul::SgGemm::new(g.cout, pix, kp, nb, false, true)
            };
            matmul::gemm_sg_raw(ctx, gemm, dy.buffer(), col.buffer(), parts.buffer())?;
            let sum = matmul::sum_rows(ctx, &parts)?.reshape(&[g.cout, kp])?;
            if n0 == 0 {
                ctx.copy(&sum, &dwp)?;
            } else {
                crate::ops::elementwise::add_inplace(ctx, &dwp, &sum)?;
            }
        } else {
            for b in 0..nb {
                let gemm = matmul::SgGemm {
                    m: g.cout,
                    k: pix,
                    n: kp,
                    batch: 1,
                    trans_a: false,
                    trans_b: true,
                    alpha: 1.0,
                    beta: if n0 + b == 0 { 0.0 } else { 1.0 },
                    a_shared: false,
                    a_off: (n0 + b) * g.cout * pix,
                    b_off: b * kp * pix,
                    out_off: 0,
                };
                matmul::gemm_sg_raw(ctx, gemm, dy.buffer(), col.buffer(), dwp.buffer())?;
            }
        }
        if let (Some(wp), Some(dcol), Some(dx)) = (&wp, &dcol, &dx) {
            // dcol[b] = Wpᵀ · dy[n0 + b]
            let gemm = matmul::SgGemm {
                m: kp,
                k: g.cout,
                n: pix,
                batch: nb,
                trans_a: true,
                trans_b: false,
                alpha: 1.0,
                beta: 0.0,
                a_shared: true,
                a_off: 0,
                b_off: n0 * g.cout * pix,
                out_off: 0,
            };
            matmul::gemm_sg_raw(ctx, gemm, wp.buffer(), dy.buffer(), dcol.buffer())?;
            flat_dispatch(
                ctx,
                "col2im",
                &params,
                // One invocation per row of dx.
                nb * g.cin * g.h,
                &[dcol.buffer(), dx.buffer()],
            )?;
        }
    }
    let dw = ctx.empty(&[g.cout, g.cin, g.kh, g.kw], "conv2d.dw")?;
    let db = ctx.empty(&[g.cout], "conv2d.db")?;
    let params = g.col_params(0, 0, false);
    flat_dispatch(
        ctx,
        "unpack_weight_grad",
        &params,
        g.cout * kp,
        &[dwp.buffer(), dw.buffer(), db.buffer()],
    )?;
    Ok((dx, dw, db))
}

/// Mirrors `WinoParams` in shaders/conv2d.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct WinoParams {
    n0: u32,
    nb: u32,
    cin: u32,
    cout: u32,
    h: u32,
    w: u32,
    th: u32,
    tw: u32,
    has_bias: u32,
    flip: u32,
    cols: u32,
    has_image_bias: u32,
    has_residual: u32,
    res_scale: f32,
    norm_cpg: u32,
    norm_silu: u32,
    drop: crate::ops::dropout::DropParams,
}

/// Points of Winograd F(4×4, 3×3): the 6×6 transformed tile, one GEMM each.
const WINO_POINTS: usize = 36;

impl Geometry {
    /// 4×4 output tiles per image.
    fn wino_tiles_per_image(&self) -> usize {
        self.h.div_ceil(4) * self.w.div_ceil(4)
    }
    /// Whether the Winograd transforms move image rows as vec4s (W % 4 == 0).
    fn wino_vec4(&self) -> bool {
        self.w.is_multiple_of(4)
    }
    /// Columns of V, M and dM for `nb` images: one per tile, padded to a multiple of 4.
    fn wino_cols(&self, nb: usize) -> usize {
        (nb * self.wino_tiles_per_image()).next_multiple_of(4)
    }
    /// Bytes of the transformed input or product (the larger) per image.
    fn wino_bytes_per_image(&self) -> u64 {
        (WINO_POINTS * self.cin.max(self.cout) * self.wino_tiles_per_image() * 4) as u64
    }
    fn wino_params(&self, n0: usize, nb: usize, has_bias: bool) -> WinoParams {
        WinoParams {
            n0: n0 as u32,
            nb: nb as u32,
            cin: self.cin as u32,
            cout: self.cout as u32,
            h: self.h as u32,
            w: self.w as u32,
            th: self.h.div_ceil(4) as u32,
            tw: self.w.div_ceil(4) as u32,
            has_bias: has_bias as u32,
            flip: 0,
            cols: self.wino_cols(nb) as u32,
            has_image_bias: 0,
            has_residual: 0,
            res_scale: 1.0,
            norm_cpg: 0,
            norm_silu: 0,
            drop: crate::ops::dropout::DropParams::OFF,
        }
    }
}

/// A per-tile transform: one invocation per (channel, image, tile) of the window, for
/// `channels` channels.
fn wino_tiles(
    ctx: &Context,
    entry: &'static str,
    params: &WinoParams,
    g: &Geometry,
    channels: usize,
    buffers: &[&wgpu::Buffer],
) -> Result<()> {
    if g.wino_vec4() {
        // Image rows as vec4s; the input transform four columns per invocation.
        let (entry, total) = match entry {
            "wino_input" => ("wino_input4", channels * params.cols as usize / 4),
            "wino_dy" if ctx.wide_loads() && params.tw.is_multiple_of(2) => (
                "wino_dy_v2",
                channels * params.nb as usize * g.wino_tiles_per_image() / 2,
            ),
            "wino_dy" => ("wino_dy_v", channels * params.nb as usize * g.wino_tiles_per_image()),
            // Two tiles per invocation where M's loads are u64 pairs (see wino_output_v2).
            "wino_output" if ctx.wide_loads() && params.tw.is_multiple_of(2) => (
                "wino_output_v2",
                channels * params.nb as usize * g.wino_tiles_per_image() / 2,
            ),
            "wino_output" => (
                "wino_output_v",
                channels * params.nb as usize * g.wino_tiles_per_image(),
            ),
            _ => unreachable!("no four-column variant of {entry}"),
        };
        return flat_dispatch(ctx, entry, params, total, buffers);
    }
    let total = channels * params.nb as usize * g.wino_tiles_per_image();
    flat_dispatch(ctx, entry, params, total, buffers)
}

/// The Winograd input transform of x's window into V, normalizing x as it reads it when `norm`
/// is given (`params.norm_cpg` set to match). Bindings 3–5 (stats, γ, β) are x without a norm.
fn input_transform(
    ctx: &Context,
    params: &WinoParams,
    g: &Geometry,
    x: &Tensor,
    v: &Tensor,
    norm: Option<InputNorm<'_>>,
) -> Result<()> {
    let (stats, gamma, beta) = norm.map_or((x, x, x), |nm| (nm.stats, nm.gamma, nm.beta));
    let buffers = [
        x.buffer(),
        v.buffer(),
        stats.buffer(),
        gamma.buffer(),
        beta.buffer(),
        x.buffer(),
    ];
    // wino_input4 reads x at binding 6 too (as scalars); the one-tile kernel has no binding 6.
    let used = if g.wino_vec4() { 6 } else { 5 };
    wino_tiles(ctx, "wino_input", params, g, g.cin, &buffers[..used])
}

/// One GEMM of a pointwise convolution over the whole batch: `batch` products, `a` the weights
/// shared by all of them or (the weight grad) per image.
fn pointwise_gemm(
    m: usize,
    k: usize,
    n: usize,
    batch: usize,
    trans_a: bool,
    trans_b: bool,
    a_shared: bool,
) -> matmul::SgGemm {
    matmul::SgGemm {
        a_shared,
        ..matmul::SgGemm::new(m, k, n, batch, trans_a, trans_b)
    }
}

/// [`Algo::Pointwise`] forward: y[n] = W·x[n] (+ bias per channel).
fn pointwise_forward(ctx: &Context, g: &Geometry, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let hw = g.h * g.w;
    let y = ctx.empty(&[g.n, g.cout, g.h, g.w], "conv2d.y")?;
    let gemm = pointwise_gemm(g.cout, g.cin, hw, g.n, false, false, true);
    // The bias is added per output row (channel) by the GEMM itself.
    matmul::gemm_sg_raw_bias(ctx, gemm, w.buffer(), x.buffer(), y.buffer(), bias.map(|b| b.buffer()))?;
    Ok(y)
}

/// [`Algo::Pointwise`] backward: dx[n] = Wᵀ·dy[n], dW = Σ_n dy[n]·x[n]ᵀ (one batched GEMM of
/// per-image products, then their sum), db = Σ dy.
fn pointwise_backward(
    ctx: &Context,
    g: &Geometry,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    need_dx: bool,
) -> Result<Conv2dGrads> {
    let hw = g.h * g.w;
    let dx = if need_dx {
        let dx = ctx.empty(&[g.n, g.cin, g.h, g.w], "conv2d.dx")?;
        let gemm = pointwise_gemm(g.cin, g.cout, hw, g.n, true, false, true);
        matmul::gemm_sg_raw(ctx, gemm, w.buffer(), dy.buffer(), dx.buffer())?;
        Some(dx)
    } else {
        None
    };
    let parts = ctx.empty(&[g.n, g.cout * g.cin], "conv2d.dw_per_image")?;
    let gemm = pointwise_gemm(g.cout, hw, g.cin, g.n, false, true, false);
    matmul::gemm_sg_raw(ctx, gemm, dy.buffer(), x.buffer(), parts.buffer())?;
    let dw = matmul::sum_rows(ctx, &parts)?.reshape(&[g.cout, g.cin, 1, 1])?;
    let db = matmul::sum_rows(ctx, &crate::ops::elementwise::channel_sum(ctx, dy)?)?;
    Ok(Conv2dGrads { dx, dw, db })
}

/// Images per Winograd window: `requested`, or as many as fit the budget.
fn wino_window(ctx: &Context, g: &Geometry, requested: usize) -> usize {
    let window = if requested > 0 {
        requested
    } else {
        let budget = IM2COL_BUDGET_BYTES.min(ctx.max_binding_bytes());
        (budget / g.wino_bytes_per_image()) as usize
    };
    window.clamp(1, g.n)
}

/// Winograd F(4×4, 3×3) forward (see `shaders/conv2d.wgsl`); with `flip`, `w` is the weight
/// of the convolution whose input grad this is ([Cin, Cout, 3, 3] in `g`'s terms) and is
/// transposed and rotated on the fly.
fn winograd_forward(
    ctx: &Context,
    g: &Geometry,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    window: usize,
    flip: bool,
) -> Result<Tensor> {
    Ok(winograd_forward_fused(ctx, g, x, w, bias, window, flip, Fused::default(), false)?.0)
}

/// [`winograd_forward`] with `epi` applied by the input and output transforms. With `save`
/// and the whole batch in one window, also returns the input transform V for the weight grad
/// (pad columns zeroed, as that grad's GEMM sums over them).
#[allow(clippy::too_many_arguments)]
fn winograd_forward_fused(
    ctx: &Context,
    g: &Geometry,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    window: usize,
    flip: bool,
    epi: Fused<'_>,
    save: bool,
) -> Result<(Tensor, ConvSaved)> {
    let window = wino_window(ctx, g, window);
    let u = match epi.weight_transform {
        Some(u) if !flip => {
            u.expect_shape("conv2d_fused", "weight_transform", &[WINO_POINTS, g.cout, g.cin])?;
            u.clone()
        }
        _ => weight_transform(ctx, w, g.cout, g.cin, flip)?,
    };
    let y = ctx.empty(&[g.n, g.cout, g.h, g.w], "conv2d.y")?;
    let v = ctx.empty(&[WINO_POINTS, g.cin, g.wino_cols(window)], "conv2d.wino_v")?;
    let m = ctx.empty(&[WINO_POINTS, g.cout, g.wino_cols(window)], "conv2d.wino_m")?;
    let save = save && window >= g.n;
    if save && g.wino_cols(g.n) != g.n * g.wino_tiles_per_image() {
        ctx.clear_buffer(v.buffer());
    }
    let drop = match epi.input_norm.and_then(|nm| nm.dropout) {
        Some(d) => crate::ops::dropout::DropParams::new(d)?,
        None => crate::ops::dropout::DropParams::OFF,
    };
    for n0 in (0..g.n).step_by(window) {
        let nb = window.min(g.n - n0);
        let params = WinoParams {
            has_image_bias: epi.image_bias.is_some() as u32,
            has_residual: epi.residual.is_some() as u32,
            res_scale: epi.residual.map_or(1.0, |(_, s)| s),
            norm_cpg: epi.input_norm.map_or(0, |nm| (g.cin / nm.groups) as u32),
            norm_silu: epi.input_norm.is_some_and(|nm| nm.silu) as u32,
            ..g.wino_params(n0, nb, bias.is_some())
        };
        let params = WinoParams { drop, ..params };
        input_transform(ctx, &params, g, x, &v, epi.input_norm)?;
        // M[ξ] = U[ξ] · V[ξ] for the 36 points ξ (pad columns of V give pad columns of M,
        // which the output transform never reads).
        let gemm = matmul::SgGemm::new(g.cout, g.cin, params.cols as usize, WINO_POINTS, false, false);
        matmul::gemm_sg_raw(ctx, gemm, u.buffer(), v.buffer(), m.buffer())?;
        // Without a bias (residual, image bias) the kernel never reads binding 2 (4, 5); M
        // stands in for it.
        let b = bias.map_or(m.buffer(), |b| b.buffer());
        let r = epi.residual.map_or(m.buffer(), |(r, _)| r.buffer());
        let ib = epi.image_bias.map_or(m.buffer(), |ib| ib.buffer());
        let buffers = [m.buffer(), b, y.buffer(), r, ib];
        wino_tiles(ctx, "wino_output", &params, g, g.cout, &buffers)?;
    }
    let saved = match save {
        true => ConvSaved { v: Some(v), u: Some(u) },
        false => ConvSaved::default(),
    };
    Ok((y, saved))
}

/// Weight and bias grads of the Winograd forward: dM = A dy Aᵀ per tile, 36 GEMMs
/// dU[ξ] = Σ_n dM[ξ]·V[ξ]ᵀ accumulated over windows, dw = Gᵀ dU G; db = Σ dy.
fn winograd_backward_weight(
    ctx: &Context,
    g: &Geometry,
    x: &Tensor,
    dy: &Tensor,
    window: usize,
    saved_v: Option<&Tensor>,
) -> Result<WinoWeightGrads> {
    let window = wino_window(ctx, g, window);
    // The forward's V serves when it covers this window layout: one window, same columns.
    let saved_v = saved_v.filter(|v| window >= g.n && v.shape() == [WINO_POINTS, g.cin, g.wino_cols(g.n)]);
    let v = match saved_v {
        Some(v) => v.clone(),
        None => ctx.empty(&[WINO_POINTS, g.cin, g.wino_cols(window)], "conv2d.wino_v")?,
    };
    let dm = ctx.empty(&[WINO_POINTS, g.cout, g.wino_cols(window)], "conv2d.wino_dm")?;
    let du = ctx.empty(&[WINO_POINTS, g.cout, g.cin], "conv2d.wino_du")?;
    for n0 in (0..g.n).step_by(window) {
        let nb = window.min(g.n - n0);
        let params = g.wino_params(n0, nb, false);
        if params.cols as usize != nb * g.wino_tiles_per_image() {
            // The GEMM below sums over the pad columns too: they must hold zeros, not what a
            // pooled buffer or an earlier window left there (a saved V has them zeroed).
            if saved_v.is_none() {
                ctx.clear_buffer(v.buffer());
            }
            ctx.clear_buffer(dm.buffer());
        }
        if saved_v.is_none() {
            input_transform(ctx, &params, g, x, &v, None)?;
        }
        wino_tiles(ctx, "wino_dy", &params, g, g.cout, &[dy.buffer(), dm.buffer()])?;
        // dU[ξ] (+)= dM[ξ] · V[ξ]ᵀ: V is stored [Cin, columns], i.e. transposed.
        let gemm = matmul::SgGemm {
            beta: if n0 == 0 { 0.0 } else { 1.0 },
            ..matmul::SgGemm::new(g.cout, params.cols as usize, g.cin, WINO_POINTS, false, true)
        };
        matmul::gemm_sg_raw(ctx, gemm, dm.buffer(), v.buffer(), du.buffer())?;
    }
    let dw = ctx.empty(&[g.cout, g.cin, 3, 3], "conv2d.dw")?;
    let (db, db_images) = if window >= g.n {
        // Point ξ = 7 of dM = A·dy·Aᵀ is (row 1 of A = [1, 1, 1, 1]) each tile's sum of dy: the
        // bias grad is the row sums of that plane [Cout, cols], a ninth of dy's size at 4×4
        // tiles, summed per image first ([Cout, N], kept where there are no pad columns) by
        // Cout more invocations of the weight grad's dispatch.
        let mut params = g.wino_params(0, g.n, false);
        let per_image = params.cols as usize == g.n * g.wino_tiles_per_image();
        params.has_image_bias = per_image as u32;
        let db = ctx.empty(&[g.cout], "conv2d.db")?;
        let db_images = ctx.empty(&[g.cout, g.n], "conv2d.db_images")?;
        flat_dispatch(
            ctx,
            "wino_weight_grad_bias",
            &params,
            g.cout * g.cin + g.cout,
            &[du.buffer(), dw.buffer(), db.buffer(), dm.buffer(), db_images.buffer()],
        )?;
        (db, per_image.then_some(db_images))
    } else {
        let params = g.wino_params(0, 0, false);
        flat_dispatch(
            ctx,
            "wino_weight_grad",
            &params,
            g.cout * g.cin,
            &[du.buffer(), dw.buffer()],
        )?;
        (
            matmul::sum_rows(ctx, &crate::ops::elementwise::channel_sum(ctx, dy)?)?,
            None,
        )
    };
    // dM of the whole batch, for the input grad (winograd_input_grad_adjoint).
    let dm = (window >= g.n).then_some(dm);
    Ok(WinoWeightGrads { dw, db, db_images, dm })
}

/// What [`winograd_backward_weight`] returns: dw, db, the bias grad per image [Cout, N] where
/// dM's plane gave it (one window, no pad columns), and dM of the whole batch where it ran in
/// one window.
struct WinoWeightGrads {
    dw: Tensor,
    db: Tensor,
    db_images: Option<Tensor>,
    dm: Option<Tensor>,
}

/// The kernel of [`winograd_input_grad_adjoint`] for `g`, if one can run its input grad (the
/// caller also needs the batch in one window, for dM of the whole batch): whole tiles, as
/// vec4 groups of four tiles of a tile row (`wino_input_adjoint4`: W % 16 == 0, H % 4 == 0) or
/// of a 2×2 block in images two tiles wide (`wino_input_adjoint2`: W = 8, H % 8 == 0), and
/// channel counts the transposed GEMM takes (multiples of 4). `DDPM_WINO_ADJOINT=0` turns it off
/// (the input grad then runs as a Winograd convolution of dy, as before).
fn adjoint_input_grad_kernel(g: &Geometry) -> Option<&'static str> {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("DDPM_WINO_ADJOINT").is_ok_and(|v| v == "0"));
    if off || !g.cin.is_multiple_of(4) || !g.cout.is_multiple_of(4) {
        return None;
    }
    if g.w.is_multiple_of(16) && g.h.is_multiple_of(4) {
        Some("wino_input_adjoint4")
    } else if g.w == 8 && g.h.is_multiple_of(8) {
        Some("wino_input_adjoint2")
    } else {
        None
    }
}

/// The input grad of a 3×3 / stride 1 / padding 1 convolution as the adjoint of its Winograd
/// forward, from the weight grad's dM = A·dy·Aᵀ: dV[ξ] = U[ξ]ᵀ·dM[ξ] (36 GEMMs with the forward's
/// weight transform U, the one the forward kept when given), then dx = the input transform's adjoint of dV
/// (`entry` of [`adjoint_input_grad_kernel`]:
/// B·dV·Bᵀ per tile, overlapping windows summed). The same arithmetic as a Winograd convolution
/// of dy with the rotated weights, without transforming dy a second time.
fn winograd_input_grad_adjoint(
    ctx: &Context,
    g: &Geometry,
    entry: &'static str,
    w: &Tensor,
    dm: &Tensor,
    saved_u: Option<&Tensor>,
) -> Result<Tensor> {
    let dv = adjoint_dv(ctx, g, w, dm, saved_u)?;
    let cols = dm.shape()[2];
    let dx = ctx.empty(&[g.n, g.cin, g.h, g.w], "conv2d.dx")?;
    let params = g.wino_params(0, g.n, false);
    let four = [dv.buffer(), dv.buffer(), dx.buffer()];
    let two = [dv.buffer(), dx.buffer()];
    // wino_input_adjoint4 reads dV as vec4s and as scalars; wino_input_adjoint2 as vec4s.
    let buffers: &[&wgpu::Buffer] = if entry == "wino_input_adjoint4" { &four } else { &two };
    flat_dispatch(ctx, entry, &params, g.cin * cols / 4, buffers)?;
    Ok(dx)
}

/// [`winograd_input_grad_adjoint`] with `wino_input_adjoint4_norm`: the grad g of `norm`'s
/// output [N, Cin, H, W] and the partial sums (Σ g, Σ g·x̂) per (image, channel, group of four
/// tiles) [N·Cin·chunks, 2], with chunks.
fn winograd_input_grad_adjoint_norm(
    ctx: &Context,
    g: &Geometry,
    w: &Tensor,
    dm: &Tensor,
    saved_u: Option<&Tensor>,
    norm: &NormGrad<'_>,
) -> Result<(Tensor, Tensor, usize)> {
    let dv = adjoint_dv(ctx, g, w, dm, saved_u)?;
    let cols = dm.shape()[2];
    let out = ctx.empty(&[g.n, g.cin, g.h, g.w], "conv2d.norm_grad")?;
    let chunks = g.wino_tiles_per_image() / 4;
    let parts = ctx.empty(&[g.n * g.cin * chunks, 2], "conv2d.norm_grad_parts")?;
    let mut params = g.wino_params(0, g.n, false);
    params.norm_cpg = (g.cin / norm.groups) as u32;
    params.norm_silu = norm.silu as u32;
    if let Some(d) = norm.dropout {
        params.drop = crate::ops::dropout::DropParams::new(d)?;
    }
    let buffers = [
        dv.buffer(),
        dv.buffer(),
        out.buffer(),
        norm.stats.buffer(),
        norm.gamma.buffer(),
        norm.beta.buffer(),
        norm.x.buffer(),
        parts.buffer(),
    ];
    flat_dispatch(ctx, "wino_input_adjoint4_norm", &params, g.cin * cols / 4, &buffers)?;
    Ok((out, parts, chunks))
}

/// dV[ξ] = U[ξ]ᵀ·dM[ξ] [36, Cin, cols] for the adjoint input grads, with the forward's U when
/// it was kept.
fn adjoint_dv(ctx: &Context, g: &Geometry, w: &Tensor, dm: &Tensor, saved_u: Option<&Tensor>) -> Result<Tensor> {
    let cols = dm.shape()[2];
    let u = match saved_u.filter(|u| u.shape() == [WINO_POINTS, g.cout, g.cin]) {
        Some(u) => u.clone(),
        None => weight_transform(ctx, w, g.cout, g.cin, false)?,
    };
    let dv = ctx.empty(&[WINO_POINTS, g.cin, cols], "conv2d.wino_dv")?;
    let gemm = matmul::SgGemm::new(g.cin, g.cout, cols, WINO_POINTS, true, false);
    matmul::gemm_sg_raw(ctx, gemm, u.buffer(), dm.buffer(), dv.buffer())?;
    Ok(dv)
}
