//! Timestep and class embeddings (`shaders/embedding.wgsl`).
//!
//! # Contracts
//! - `timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift, max_period)`: t `[B]`
//!   (float timesteps) → emb (= new) `[B, dim]`, exactly diffusers' `get_timestep_embedding`
//!   with scale 1: half = dim/2, freq_j = exp(-ln(max_period)·j/(half - shift)),
//!   emb = [sin(t·freq), cos(t·freq)] (or [cos, sin] when flipped), a zero column when dim is odd.
//!   Computed in f32 like diffusers; arguments are range-reduced before sin/cos.
//! - `embedding_lookup(table, labels)`: table `[K, D]`, labels `[B]` (f32 holding class indices,
//!   rounded to the nearest integer) → out (= new) `[B, D]` = table\[label\]; a label outside
//!   0..K-1 (or NaN) gives a zero row.
//! - `embedding_backward(labels, dy, num_classes)`: labels `[B]`, dy `[B, D]` → dtable (= new)
//!   `[K, D]` = Σ over the rows b with label b = k of dy\[b\] (out-of-range labels contribute
//!   nothing). Deterministic: no atomics.

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Shader};
use crate::tensor::Tensor;

static SHADER: Shader = crate::shader!("embedding");

/// Label rows summed per backward pass: bounds per-invocation loops (lavapipe stops a shader
/// after 65,535 loop iterations).
const ROWS_PER_PASS: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    dim: u32,
    half: u32,
    flip: u32,
    neg_ln_period: f32,
    denom: f32,
    b0: u32,
    b1: u32,
    accumulate: u32,
    _pad: [u32; 3],
}

impl Params {
    fn new(n: usize, dim: usize, half: usize) -> Self {
        Params {
            n: n as u32,
            dim: dim as u32,
            half: half as u32,
            flip: 0,
            neg_ln_period: 0.0,
            denom: 0.0,
            b0: 0,
            b1: 0,
            accumulate: 0,
            _pad: [0; 3],
        }
    }
}

fn launch(ctx: &Context, entry: &'static str, p: &Params, buffers: &[&wgpu::Buffer]) -> Result<()> {
    ctx.dispatch(Dispatch {
        shader: &SHADER,
        entry,
        constants: &[],
        params: bytemuck::bytes_of(p),
        buffers,
        workgroups: ctx.grid(p.n.div_ceil(256)),
    })
}

fn vector_len(op: &'static str, name: &str, x: &Tensor) -> Result<usize> {
    match x.shape()[..] {
        [b] => Ok(b),
        _ => Err(Error::shape(
            op,
            format!("{name}: expected a 1-D tensor [B], got {:?}", x.shape()),
        )),
    }
}

fn out_elements(op: &'static str, rows: usize, dim: usize) -> Result<usize> {
    rows.checked_mul(dim)
        .filter(|&n| n <= u32::MAX as usize)
        .ok_or_else(|| Error::shape(op, format!("output [{rows}, {dim}] has 2^32 or more elements")))
}

/// Sinusoidal embedding of float timesteps t `[B]` → `[B, dim]` (diffusers'
/// `get_timestep_embedding` with scale 1).
pub fn timestep_embedding(
    ctx: &Context,
    t: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f32,
    max_period: f32,
) -> Result<Tensor> {
    const OP: &str = "timestep_embedding";
    let b = vector_len(OP, "t", t)?;
    if dim == 0 {
        return Err(Error::arg("dim", format!("{OP}: embedding dim must be at least 1")));
    }
    let half = dim / 2;
    let denom = half as f32 - downscale_freq_shift;
    if half > 0 && denom == 0.0 {
        return Err(Error::arg(
            "downscale_freq_shift",
            format!("{OP}: {downscale_freq_shift} equals dim/2 = {half}, dividing by zero"),
        ));
    }
    if max_period.is_nan() || max_period <= 0.0 {
        return Err(Error::arg(
            "max_period",
            format!("{OP}: must be positive, got {max_period}"),
        ));
    }
    let n = out_elements(OP, b, dim)?;
    let emb = ctx.empty(&[b, dim], "timestep_embedding.out")?;
    let mut p = Params::new(n, dim, half);
    p.flip = flip_sin_to_cos as u32;
    p.neg_ln_period = -(max_period as f64).ln() as f32;
    p.denom = denom;
    launch(ctx, OP, &p, &[t.buffer(), emb.buffer()])?;
    Ok(emb)
}

/// Rows of table `[K, D]` picked by labels `[B]` → `[B, D]`.
pub fn embedding_lookup(ctx: &Context, table: &Tensor, labels: &Tensor) -> Result<Tensor> {
    const OP: &str = "embedding_lookup";
    let (k, d) = table.dims2(OP)?;
    let b = vector_len(OP, "labels", labels)?;
    let n = out_elements(OP, b, d)?;
    let out = ctx.empty(&[b, d], "embedding_lookup.out")?;
    let p = Params::new(n, d, k);
    launch(ctx, OP, &p, &[table.buffer(), labels.buffer(), out.buffer()])?;
    Ok(out)
}

/// Gradient of [`embedding_lookup`] for the table: dy `[B, D]` summed into the labelled rows of a
/// new `[num_classes, D]` tensor.
pub fn embedding_backward(ctx: &Context, labels: &Tensor, dy: &Tensor, num_classes: usize) -> Result<Tensor> {
    const OP: &str = "embedding_backward";
    let b = vector_len(OP, "labels", labels)?;
    let (by, d) = dy.dims2(OP)?;
    if by != b {
        return Err(Error::shape(
            OP,
            format!(
                "dy {:?} has {by} rows but labels {:?} has {b}",
                dy.shape(),
                labels.shape()
            ),
        ));
    }
    if num_classes == 0 {
        return Err(Error::arg("num_classes", format!("{OP}: must be at least 1")));
    }
    let n = out_elements(OP, num_classes, d)?;
    let dtable = ctx.empty(&[num_classes, d], "embedding_backward.dtable")?;
    let mut p = Params::new(n, d, num_classes);
    for (pass, b0) in (0..b).step_by(ROWS_PER_PASS).enumerate() {
        p.b0 = b0 as u32;
        p.b1 = (b0 + ROWS_PER_PASS).min(b) as u32;
        p.accumulate = (pass > 0) as u32;
        launch(ctx, OP, &p, &[labels.buffer(), dy.buffer(), dtable.buffer()])?;
    }
    Ok(dtable)
}
