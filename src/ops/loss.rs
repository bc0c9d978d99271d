//! Losses and full reductions (`shaders/loss.wgsl`).
//!
//! # Contracts
//! - `mse_loss(pred, target)`: pred, target same shape → out (= new) `[1]` = Σ(pred - target)²/n.
//! - `mse_loss_backward(pred, target, grad_scale)`: pred, target same shape → dpred (= new,
//!   shape of pred) = 2·(pred - target)/n · grad_scale.
//! - `sum(x)`: x any shape → out (= new) `[1]` = Σx.
//! - `softmax_cross_entropy(logits, labels, grad_scale)`: logits `[rows, k]`, labels `[rows]`
//!   (class indices as f32) → [`CrossEntropy`] (all new): `loss` `[1]` = mean over rows of
//!   logsumexp(z) − z\[y\], `per_row` `[rows]`, `dlogits` `[rows, k]` = (softmax − onehot)/rows ·
//!   grad_scale. A label outside 0..k makes its row's loss NaN.
//!
//! Sums are multi-stage tree reductions in f32 (any length; fixed order, so deterministic).

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
use crate::ops::elementwise::{reduce_wg, sum_rows, REDUCE_ITERS};
use crate::tensor::Tensor;

static SHADER: Shader = crate::shader!("loss");
static XENT: Shader = crate::shader!("xent");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    chunk: u32,
    scale: f32,
    _pad: u32,
}

fn check(op: &'static str, pred: &Tensor, target: &Tensor) -> Result<u32> {
    if pred.shape() != target.shape() {
        return Err(Error::shape(
            op,
            format!("pred {:?} and target {:?} differ", pred.shape(), target.shape()),
        ));
    }
    u32::try_from(pred.numel()).map_err(|_| Error::shape(op, format!("{:?} has 2^32 or more elements", pred.shape())))
}

/// Mean squared error over all elements → `[1]`.
pub fn mse_loss(ctx: &Context, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    let n = check("mse_loss", pred, target)?;
    let wg = reduce_wg(ctx);
    let chunk = (wg * REDUCE_ITERS) as u32;
    let chunks = n.div_ceil(chunk);
    let inv_n = 1.0 / n as f32;
    let partial = ctx.empty(&[chunks as usize], "mse_loss.partial")?;
    let params = Params {
        n,
        chunk,
        scale: if chunks == 1 { inv_n } else { 1.0 },
        _pad: 0,
    };
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "sq_diff_sum",
        constants: &[("WG", wg as f64)],
        params: bytemuck::bytes_of(&params),
        buffers: &[pred.buffer(), target.buffer(), partial.buffer()],
        workgroups: ctx.grid(chunks),
    })?;
    if chunks == 1 {
        return Ok(partial);
    }
    sum_rows(ctx, &partial, 1, chunks as usize, inv_n)
}

/// Gradient of [`mse_loss`] with respect to pred, times `grad_scale`.
pub fn mse_loss_backward(ctx: &Context, pred: &Tensor, target: &Tensor, grad_scale: f32) -> Result<Tensor> {
    let n = check("mse_loss_backward", pred, target)?;
    let out = ctx.empty(pred.shape(), "mse_loss_backward.dpred")?;
    let params = Params {
        n,
        chunk: 0,
        scale: 2.0 * grad_scale / n as f32,
        _pad: 0,
    };
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry: "mse_grad",
        constants: &[],
        params: bytemuck::bytes_of(&params),
        buffers: &[pred.buffer(), target.buffer(), out.buffer()],
        workgroups: ctx.grid(n.div_ceil(256)),
    })?;
    Ok(out)
}

/// Σ of all elements → `[1]`.
pub fn sum(ctx: &Context, x: &Tensor) -> Result<Tensor> {
    u32::try_from(x.numel()).map_err(|_| Error::shape("sum", format!("{:?} has 2^32 or more elements", x.shape())))?;
    sum_rows(ctx, x, 1, x.numel(), 1.0)
}

/// Result of [`softmax_cross_entropy`].
pub struct CrossEntropy {
    /// Mean loss over the rows, `[1]`.
    pub loss: Tensor,
    /// Loss of each row, `[rows]`.
    pub per_row: Tensor,
    /// Gradient of the mean loss with respect to the logits, times `grad_scale`, `[rows, k]`.
    pub dlogits: Tensor,
}

/// Softmax cross-entropy of `logits` `[rows, k]` against class indices `labels` `[rows]`: the
/// mean loss, each row's loss and the logits' gradient, in one pass over the logits.
pub fn softmax_cross_entropy(ctx: &Context, logits: &Tensor, labels: &Tensor, grad_scale: f32) -> Result<CrossEntropy> {
    const OP: &str = "softmax_cross_entropy";
    let (rows, k) = logits.dims2(OP)?;
    if rows == 0 || k == 0 {
        return Err(Error::shape(OP, format!("logits {:?} are empty", logits.shape())));
    }
    labels.expect_shape(OP, "labels", &[rows])?;
    u32::try_from(rows * k).map_err(|_| Error::shape(OP, format!("{:?} has 2^32 or more elements", logits.shape())))?;
    let per_row = ctx.empty(&[rows], "xent.per_row")?;
    let dlogits = ctx.empty(&[rows, k], "xent.dlogits")?;
    let params = XentParams {
        rows: rows as u32,
        k: k as u32,
        scale: grad_scale / rows as f32,
        _pad: 0,
    };
    ctx.dispatch(Dispatch {
        shader: &XENT,
        entry: "xent_rows",
        constants: &[],
        params: bytemuck::bytes_of(&params),
        buffers: &[logits.buffer(), labels.buffer(), per_row.buffer(), dlogits.buffer()],
        workgroups: ctx.grid((rows as u32).div_ceil(64)),
    })?;
    let loss = sum_rows(ctx, &per_row, 1, rows, 1.0 / rows as f32)?;
    Ok(CrossEntropy { loss, per_row, dlogits })
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct XentParams {
    rows: u32,
    k: u32,
    scale: f32,
    _pad: u32,
}
