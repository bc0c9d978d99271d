//! Matrix products (`shaders/matmul.wgsl`, `shaders/matmul_subgroup.wgsl`).
//!
//! # Contracts
//! `op(x)` is `x` or, when the matching `trans_*` flag is set, its transpose (read by indexing,
//! never copied). All tensors are contiguous row-major f32.
//! - `matmul(a, b, trans_a, trans_b)`: a [M,K] (or [K,M] if trans_a), b [K,N] (or [N,K] if
//!   trans_b) → out = op(a)·op(b) [M,N] (new tensor). Batched: a [B,M,K], b [B,K,N] (same
//!   transposes per batch, same B on both) → out [B,M,N].
//! - `gemm_into(a, b, out, trans_a, trans_b, alpha, beta)`: shapes as `matmul`, out [M,N] (or
//!   [B,M,N]) → out = alpha·op(a)·op(b) + beta·out (in place). beta = 0 ignores out's old
//!   contents (even NaN).
//! - `linear(x, w, bias)`: x [M,K], w [N,K] (PyTorch nn.Linear layout), bias [N] → y = x·wᵀ +
//!   bias [M,N] (new tensor).
//! - `linear_backward(x, w, dy, need_dx)`: x [M,K], w [N,K], dy [M,N] → (dx = dy·w [M,K] if
//!   need_dx, dw = dyᵀ·x [N,K], db = column sums of dy [N]), all new tensors.
//! - `sum_rows(x)`: x [M,N] → y[n] = Σ_m x[m,n], [N] (new tensor).
//!
//! # Kernels
//! [`Kernel::Tiled`] works on every adapter and shape. [`Kernel::Subgroup`] is written for 8-wide
//! SIMD CPU adapters (lavapipe) and needs K % 4 == 0, N % 4 == 0 and, with trans_a, M % 4 == 0.
//! [`kernel_for`] picks per adapter and shape; [`gemm_with`] runs a chosen kernel (benches, tests).

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader, Work};
use crate::tensor::Tensor;

static SHADER: Shader = crate::shader!("matmul");
static SHADER_SG: Shader = crate::shader!("matmul_subgroup");

/// Output tile edge of `gemm_tiled`.
const TILED_TILE: u32 = 64;
/// Output tile of one subgroup in `gemm_sg`: rows x columns.
const SG_ROWS: u32 = 32;
/// Rows of a subgroup's tile when M is at most this (the shader's `SHORT`).
const SG_SHORT_ROWS: u32 = 8;
const SG_COLS: u32 = 32;

/// A matmul kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Workgroup-memory tiles of 64x64 outputs, 4x4 per invocation. Any adapter, any shape.
    Tiled,
    /// Subgroup-broadcast kernel for 8-wide SIMD CPU adapters, `wg` invocations per workgroup
    /// (a multiple of 8). Needs subgroups of size 8 and the vec4 alignment described above.
    Subgroup {
        /// Workgroup size: `wg / 8` subgroups of 32 rows each (8 when M <= 8) are stacked
        /// along M.
        wg: u32,
    },
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    trans_a: u32,
    trans_b: u32,
    tiles_m: u32,
    tiles_n: u32,
    alpha: f32,
    beta: f32,
    // Only read by gemm_sg (the tiled kernel's struct ends before them).
    a_shared: u32,
    a_off: u32,
    b_off: u32,
    out_off: u32,
    has_bias: u32,
    _pad1: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RowParams {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

/// Problem size of one (batched) product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dims {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
}

/// Check operand shapes and return the problem size.
fn dims(op: &'static str, a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Dims> {
    let split = |t: &Tensor| -> Option<(usize, usize, usize)> {
        match t.shape()[..] {
            [r, c] => Some((1, r, c)),
            [bt, r, c] => Some((bt, r, c)),
            _ => None,
        }
    };
    let mismatch = || {
        Error::shape(
            op,
            format!(
                "cannot multiply a {:?}{} by b {:?}{} (want a [M,K] or [B,M,K] and b [K,N] or \
                 [B,K,N], same rank and batch)",
                a.shape(),
                if trans_a { "ᵀ" } else { "" },
                b.shape(),
                if trans_b { "ᵀ" } else { "" },
            ),
        )
    };
    let (Some((ba, ar, ac)), Some((bb, br, bc))) = (split(a), split(b)) else {
        return Err(mismatch());
    };
    if a.shape().len() != b.shape().len() || ba != bb {
        return Err(mismatch());
    }
    let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if trans_b { (bc, br) } else { (br, bc) };
    if k != k2 {
        return Err(mismatch());
    }
    Ok(Dims { batch: ba, m, k, n })
}

fn out_shape(a: &Tensor, d: Dims) -> Vec<usize> {
    if a.shape().len() == 3 {
        vec![d.batch, d.m, d.n]
    } else {
        vec![d.m, d.n]
    }
}

/// Whether `kernel` can run a product of size `(m, k, n)` with these transposes on `ctx`.
pub fn supports(ctx: &Context, kernel: Kernel, m: usize, k: usize, n: usize, trans_a: bool) -> bool {
    match kernel {
        Kernel::Tiled => true,
        Kernel::Subgroup { wg } => {
            let info = ctx.adapter_info();
            ctx.has_subgroups()
                && info.subgroup_min_size == 8
                && info.subgroup_max_size == 8
                && wg % 8 == 0
                && wg > 0
                && wg <= ctx.limits().max_compute_invocations_per_workgroup
                && k.is_multiple_of(4)
                && n.is_multiple_of(4)
                && (!trans_a || m.is_multiple_of(4))
        }
    }
}

/// The kernel used for a product of size `(m, k, n)` on `ctx`: the subgroup kernel where it
/// applies (CPU adapters with 8-wide subgroups; it beats the tiled kernel there, see
/// `benches/matmul.rs`), the tiled kernel otherwise.
pub fn kernel_for(ctx: &Context, m: usize, k: usize, n: usize, trans_a: bool) -> Kernel {
    let sg = Kernel::Subgroup { wg: sg_wg_for(m) };
    if ctx.adapter_info().device_type == wgpu::DeviceType::Cpu && supports(ctx, sg, m, k, n, trans_a) {
        sg
    } else {
        Kernel::Tiled
    }
}

/// out = alpha·op(a)·op(b) + beta·out with a chosen kernel (see [`gemm_into`] for shapes).
/// Errors if `kernel` cannot run this problem on `ctx` (see [`supports`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    ctx: &Context,
    kernel: Kernel,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    let d = dims("gemm", a, b, trans_a, trans_b)?;
    out.expect_shape("gemm", "out", &out_shape(a, d))?;
    if !supports(ctx, kernel, d.m, d.k, d.n, trans_a) {
        return Err(Error::arg(
            "kernel",
            format!(
                "{kernel:?} cannot run M={} K={} N={} (trans_a={trans_a}) on {}",
                d.m,
                d.k,
                d.n,
                ctx.adapter_name()
            ),
        ));
    }
    let g = SgGemm {
        alpha,
        beta,
        ..SgGemm::new(d.m, d.k, d.n, d.batch, trans_a, trans_b)
    };
    launch(ctx, kernel, g, a.buffer(), b.buffer(), out.buffer(), None)
}

/// A bias the subgroup GEMM adds to its output after alpha and beta.
#[derive(Clone, Copy)]
pub(crate) enum Bias<'a> {
    /// `x[r]` ([M]) added to every element of output row r (a pointwise convolution's bias).
    Rows(&'a wgpu::Buffer),
    /// `x[c]` ([N]) added to every element of output column c (nn.Linear's bias).
    Columns(&'a wgpu::Buffer),
}

/// Build the uniform block of `g` for `kernel` and record the dispatch (sizes already checked).
fn launch(
    ctx: &Context,
    kernel: Kernel,
    g: SgGemm,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    out: &wgpu::Buffer,
    bias: Option<Bias>,
) -> Result<()> {
    // Output tile of one workgroup (rows, columns).
    let (rows, cols, entry, shader, constants): (u32, u32, _, _, Vec<(&'static str, f64)>) = match kernel {
        Kernel::Tiled => {
            debug_assert!(
                !g.a_shared && g.a_off == 0 && g.b_off == 0 && g.out_off == 0,
                "gemm_tiled has no offsets"
            );
            (TILED_TILE, TILED_TILE, "gemm_tiled", &SHADER, vec![])
        }
        Kernel::Subgroup { wg } => {
            // 8-row subgroup tiles where M fits one (SG_SHORT_ROWS): no work for rows never stored.
            let short = g.m <= SG_SHORT_ROWS as usize;
            (
                if short { SG_SHORT_ROWS } else { SG_ROWS } * (wg / 8),
                SG_COLS,
                "gemm_sg",
                &SHADER_SG,
                vec![
                    ("WG", wg as f64),
                    ("TA", g.trans_a as u8 as f64),
                    ("TB", g.trans_b as u8 as f64),
                    ("SHORT", short as u8 as f64),
                ],
            )
        }
    };
    let tiles_m = (g.m as u32).div_ceil(rows);
    let tiles_n = (g.n as u32).div_ceil(cols);
    let total = tiles_m as u64 * tiles_n as u64 * g.batch as u64;
    let total = u32::try_from(total).map_err(|_| {
        Error::shape(
            "gemm",
            format!("{total} output tiles is more than one dispatch can address"),
        )
    })?;
    let params = Params {
        m: g.m as u32,
        n: g.n as u32,
        k: g.k as u32,
        batch: g.batch as u32,
        trans_a: g.trans_a as u32,
        trans_b: g.trans_b as u32,
        tiles_m,
        tiles_n,
        alpha: g.alpha,
        beta: g.beta,
        a_shared: g.a_shared as u32,
        a_off: (g.a_off / 4) as u32,
        b_off: (g.b_off / 4) as u32,
        out_off: (g.out_off / 4) as u32,
        has_bias: match bias {
            None => 0,
            Some(Bias::Rows(_)) => 1,
            Some(Bias::Columns(_)) => 2,
        },
        _pad1: 0,
    };
    let shape = || {
        let t = |on: bool| if on { "ᵀ" } else { "" };
        format!(
            "[{}×] {}×{}{} · {}×{}{}",
            g.batch,
            g.m,
            g.k,
            t(g.trans_a),
            g.k,
            g.n,
            t(g.trans_b)
        )
    };
    let work = Work {
        shape: &shape,
        flops: 2.0 * g.batch as f64 * g.m as f64 * g.k as f64 * g.n as f64,
    };
    // gemm_sg binds the bias at 4 (a stands in when there is none); gemm_tiled has none.
    let bias_buffer = match bias {
        Some(Bias::Rows(x) | Bias::Columns(x)) => x,
        None => a,
    };
    let with_bias = [a, b, out, bias_buffer];
    let buffers: &[&wgpu::Buffer] = match kernel {
        Kernel::Tiled => {
            debug_assert!(bias.is_none(), "gemm_tiled adds no bias");
            &with_bias[..3]
        }
        Kernel::Subgroup { .. } => &with_bias,
    };
    ctx.dispatch_work(
        Dispatch {
            shader,
            entry,
            constants: &constants,
            params: bytemuck::bytes_of(&params),
            buffers,
            workgroups: ctx.grid(total),
        },
        Some(work),
    )
}

/// out = alpha·op(a)·op(b) + beta·out, in place on `out` (beta = 0 ignores out's old contents).
#[allow(clippy::too_many_arguments)]
pub fn gemm_into(
    ctx: &Context,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    let d = dims("gemm_into", a, b, trans_a, trans_b)?;
    let kernel = kernel_for(ctx, d.m, d.k, d.n, trans_a);
    gemm_with(ctx, kernel, a, b, out, trans_a, trans_b, alpha, beta)
}

/// out = op(a)·op(b): a [M,K] (or [K,M] if trans_a), b [K,N] (or [N,K] if trans_b); also
/// batched 3-D [B,..] with the same batch on both.
pub fn matmul(ctx: &Context, a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    let d = dims("matmul", a, b, trans_a, trans_b)?;
    let out = ctx.empty(&out_shape(a, d), "matmul.out")?;
    gemm_into(ctx, a, b, &out, trans_a, trans_b, 1.0, 0.0)?;
    Ok(out)
}

/// y = x·wᵀ + bias, PyTorch nn.Linear layout: x [M,K], w [N,K], bias [N] → [M,N].
pub fn linear(ctx: &Context, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (m, k) = x.dims2("linear")?;
    let (n, _) = w.dims2("linear")?;
    dims("linear", x, w, false, true)?;
    let y = ctx.empty(&[m, n], "linear.out")?;
    match bias {
        Some(bias) => {
            bias.expect_shape("linear", "bias", &[n])?;
            let kernel = kernel_for(ctx, m, k, n, false);
            if let Kernel::Subgroup { .. } = kernel {
                // The subgroup GEMM adds the bias in its epilogue: no broadcast pass.
                let g = SgGemm::new(m, k, n, 1, false, true);
                launch(
                    ctx,
                    kernel,
                    g,
                    x.buffer(),
                    w.buffer(),
                    y.buffer(),
                    Some(Bias::Columns(bias.buffer())),
                )?;
                return Ok(y);
            }
            broadcast_rows(ctx, bias, &y, m, n)?;
            gemm_into(ctx, x, w, &y, false, true, 1.0, 1.0)?;
        }
        None => gemm_into(ctx, x, w, &y, false, true, 1.0, 0.0)?,
    }
    Ok(y)
}

/// Gradients of [`linear`]: dx = dy·w (only if `need_dx`), dw = dyᵀ·x, db = column sums of dy.
pub fn linear_backward(
    ctx: &Context,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    need_dx: bool,
) -> Result<(Option<Tensor>, Tensor, Tensor)> {
    let (m, k) = x.dims2("linear_backward")?;
    let (n, kw) = w.dims2("linear_backward")?;
    if k != kw {
        return Err(Error::shape(
            "linear_backward",
            format!("x {:?} and w {:?} differ in input features", x.shape(), w.shape()),
        ));
    }
    dy.expect_shape("linear_backward", "dy", &[m, n])?;
    let dx = if need_dx {
        Some(matmul(ctx, dy, w, false, false)?)
    } else {
        None
    };
    let dw = matmul(ctx, dy, x, true, false)?;
    let db = sum_rows(ctx, dy)?;
    Ok((dx, dw, db))
}

/// Column sums: x [M,N] → y [N], y[n] = Σ_m x[m,n].
pub fn sum_rows(ctx: &Context, x: &Tensor) -> Result<Tensor> {
    let (m, n) = x.dims2("sum_rows")?;
    let y = ctx.empty(&[n], "sum_rows.out")?;
    let params = RowParams {
        rows: m as u32,
        cols: n as u32,
        _pad0: 0,
        _pad1: 0,
    };
    // On CPU adapters one invocation per 4 columns (sum_rows4) where the columns allow and the
    // per-invocation loop stays well under lavapipe's 65,535 iterations.
    let vec4 = ctx.adapter_info().device_type == wgpu::DeviceType::Cpu && n.is_multiple_of(4) && m <= 16_384;
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: if vec4 { "sum_rows4" } else { "sum_rows" },
        constants: &[],
        params: bytemuck::bytes_of(&params),
        buffers: &[x.buffer(), y.buffer()],
        workgroups: ctx.grid((if vec4 { n / 4 } else { n } as u32).div_ceil(64)),
    })?;
    Ok(y)
}

/// y[r, c] = x[c] for y [rows, cols].
pub(crate) fn broadcast_rows(ctx: &Context, x: &Tensor, y: &Tensor, rows: usize, cols: usize) -> Result<()> {
    let params = RowParams {
        rows: rows as u32,
        cols: cols as u32,
        _pad0: 0,
        _pad1: 0,
    };
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "broadcast_rows",
        constants: &[],
        params: bytemuck::bytes_of(&params),
        buffers: &[x.buffer(), y.buffer()],
        workgroups: ctx.grid(((rows * cols) as u32).div_ceil(256)),
    })
}

/// One GEMM launch (also what [`gemm_with`] builds): raw buffers, for ops that run a GEMM over windows of their own
/// tensors (the im2col convolution). Offsets are in f32 elements and must be multiples of 4;
/// `a_shared` gives every batch the same A. Sizes must satisfy [`supports`] for the subgroup
/// kernel (the caller checks).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SgGemm {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub batch: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
    pub a_shared: bool,
    pub a_off: usize,
    pub b_off: usize,
    pub out_off: usize,
}

impl SgGemm {
    /// out = op(A)·op(B) over `batch` products of M×K by K×N: alpha 1, beta 0, A per batch, no
    /// offsets (set the other fields with `..SgGemm::new(..)`).
    pub(crate) fn new(m: usize, k: usize, n: usize, batch: usize, trans_a: bool, trans_b: bool) -> Self {
        SgGemm {
            m,
            k,
            n,
            batch,
            trans_a,
            trans_b,
            alpha: 1.0,
            beta: 0.0,
            a_shared: false,
            a_off: 0,
            b_off: 0,
            out_off: 0,
        }
    }
}

/// Largest workgroup size of the subgroup kernel when ops call it directly.
pub(crate) const SG_WG: u32 = 32;

/// Workgroup size for M rows: WG / 8 subgroups of 32 rows each, no more than M needs (a
/// workgroup taller than M computes clamped rows it never stores), at most [`SG_WG`].
pub(crate) fn sg_wg_for(m: usize) -> u32 {
    8 * (m.div_ceil(SG_ROWS as usize) as u32).clamp(1, SG_WG / 8)
}

pub(crate) fn gemm_sg_raw(
    ctx: &Context,
    g: SgGemm,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<()> {
    gemm_sg_raw_bias(ctx, g, a, b, out, None)
}

/// [`gemm_sg_raw`] plus `row_bias[r]` ([M]) added to every element of output row r, after
/// alpha and beta (a pointwise convolution's bias, without a pass of its own).
pub(crate) fn gemm_sg_raw_bias(
    ctx: &Context,
    g: SgGemm,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    out: &wgpu::Buffer,
    row_bias: Option<&wgpu::Buffer>,
) -> Result<()> {
    debug_assert!(g.a_off.is_multiple_of(4) && g.b_off.is_multiple_of(4) && g.out_off.is_multiple_of(4));
    launch(
        ctx,
        Kernel::Subgroup { wg: sg_wg_for(g.m) },
        g,
        a,
        b,
        out,
        row_bias.map(Bias::Rows),
    )
}
