//! Dropout with a regenerated mask (`shaders/random.wgsl`, entry `dropout`).
//!
//! # Contracts
//! - `dropout(x, p, seed, stream)`: x any shape → out (= new tensor, shape of x):
//!   out\[i\] = x\[i\] / (1 − p) if u_i ≥ p, else 0, with u_i the uniform of word i mod 4 of
//!   Philox block ⌊i/4⌋ (seed, stream): one block serves four elements.
//! - `dropout_backward(dy, p, seed, stream)`: dy (shape of the forward output) → dx (= new
//!   tensor): dx\[i\] = dy\[i\] / (1 − p) where the forward kept element i, else 0. The mask is
//!   recomputed from the counter-based generator, so nothing is stored between the passes.
//!
//! u_i is `uniform_from_bits(block(seed, stream, i / 4)[i % 4])` of [`crate::reference::random`]:
//! P(keep) = 1 − ⌈p·2²⁴⌉·2⁻²⁴. p = 0 is the identity; p = 1 gives zeros. p outside [0, 1] is an
//! argument error.

use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::ops::random::{RngLaunch, RngParams};
use crate::tensor::Tensor;

/// The parameters of a dropout mask: probability `p`, `seed` and `stream` (what [`dropout`]
/// takes), for kernels that draw it in-line (`ops::conv2d::InputNorm::dropout`,
/// `ops::groupnorm::group_norm_backward_dropout`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Probability of zeroing an element, in [0, 1].
    pub p: f32,
    /// Seed of the Philox generator.
    pub seed: u64,
    /// Stream (one per dropout site, so that sites draw independent masks).
    pub stream: u32,
}

/// A [`Dropout`] as a member of a kernel's uniform params (`DropParams` of
/// shaders/lib/philox.wgsl; 16-byte aligned there, so it follows a multiple of 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct DropParams {
    on: u32,
    thresh: u32,
    scale: f32,
    seed_lo: u32,
    seed_hi: u32,
    stream: u32,
    _pad: [u32; 2],
}

impl DropParams {
    /// No dropout.
    pub(crate) const OFF: DropParams = DropParams {
        on: 0,
        thresh: 0,
        scale: 1.0,
        seed_lo: 0,
        seed_hi: 0,
        stream: 0,
        _pad: [0; 2],
    };

    /// `d` as the kernels read it (an argument error for p outside [0, 1]).
    pub(crate) fn new(d: Dropout) -> Result<Self> {
        let (thresh, scale) = mask_params(d.p)?;
        Ok(DropParams {
            on: 1,
            thresh,
            scale,
            seed_lo: d.seed as u32,
            seed_hi: (d.seed >> 32) as u32,
            stream: d.stream,
            _pad: [0; 2],
        })
    }
}

/// (threshold on the top 24 bits of the Philox word, scale of kept elements).
fn mask_params(p: f32) -> Result<(u32, f32)> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::arg("p", format!("dropout probability {p} is not in [0, 1]")));
    }
    // uniform ≥ p ⇔ (w >> 8) ≥ ⌈p·2²⁴⌉ (p·2²⁴ is exact in f64)
    let thresh = (p as f64 * (1u64 << 24) as f64).ceil() as u32;
    let scale = if p < 1.0 { (1.0 / (1.0 - p as f64)) as f32 } else { 0.0 };
    Ok((thresh, scale))
}

fn apply(ctx: &Context, x: &Tensor, p: f32, seed: u64, stream: u32, label: &str) -> Result<Tensor> {
    let (thresh, scale) = mask_params(p)?;
    let out = ctx.empty(x.shape(), label)?;
    RngLaunch {
        entry: if x.numel().is_multiple_of(4) {
            "dropout4"
        } else {
            "dropout"
        },
        n: x.numel(),
        seed,
        stream,
        first: 0,
        extra: RngParams {
            thresh,
            a: scale,
            ..Default::default()
        },
        buffers: &[x.buffer(), out.buffer()],
        per_invocation: 4,
    }
    .run(ctx)?;
    Ok(out)
}

/// Inverted dropout: zero each element with probability `p`, scale the rest by 1/(1 − p).
pub fn dropout(ctx: &Context, x: &Tensor, p: f32, seed: u64, stream: u32) -> Result<Tensor> {
    apply(ctx, x, p, seed, stream, "dropout.out")
}

/// Gradient of [`dropout`] with the same `p`, `seed` and `stream`.
pub fn dropout_backward(ctx: &Context, dy: &Tensor, p: f32, seed: u64, stream: u32) -> Result<Tensor> {
    apply(ctx, dy, p, seed, stream, "dropout.dx")
}
