//! Fused DDPM kernels that draw their Gaussian noise in-line (`shaders/random.wgsl`, entries
//! `q_sample` and `axpbz`; the noise is [`crate::reference::random::normal`] at the element
//! index, bit-identical on every adapter).
//!
//! # Contracts
//! - `q_sample(x0 [B, ...], t [B], sqrt_alpha_bar [T], sqrt_one_minus_alpha_bar [T], seed,
//!   stream)` → `(x_t, eps)`, both new tensors of x0's shape (=):
//!   eps[i] = normal(seed, stream, i); x_t[i] = sab[t_b]·x0[i] + somab[t_b]·eps[i], with b the
//!   batch item of element i and t_b = t[b] read on the GPU (f32 holding an integer timestep;
//!   values outside [0, T−1] are clamped to it, fractions truncated).
//! - `axpbz(x, e, a, b, sigma, seed, stream)`: x, e equal shapes → out (=) = a·x + b·e + σ·z with
//!   z[i] = normal(seed, stream, i); no noise is drawn when σ = 0.
//! - `ddpm_step(x_t, eps_pred, step, seed, stream)`: x_t, eps_pred equal shapes → x_{t−1} (=) =
//!   coef_x·x_t − coef_eps·eps_pred + σ·z (Ho et al. 2020, Algorithm 2), via `axpbz`.

use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::ops::random::{RngLaunch, RngParams};
use crate::tensor::Tensor;

/// Coefficients of one reverse (ancestral) DDPM step at timestep t.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdpmStep {
    /// 1/√α_t.
    pub coef_x: f32,
    /// β_t/(√(1−ᾱ_t)·√α_t).
    pub coef_eps: f32,
    /// σ_t; 0 means no noise (t = 1 in the paper's 1-based indexing).
    pub sigma: f32,
}

/// Forward-process sample x_t ~ q(x_t | x_0) and the noise that produced it.
pub fn q_sample(
    ctx: &Context,
    x0: &Tensor,
    t: &Tensor,
    sqrt_alpha_bar: &Tensor,
    sqrt_one_minus_alpha_bar: &Tensor,
    seed: u64,
    stream: u32,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "q_sample";
    let batch = *x0
        .shape()
        .first()
        .ok_or_else(|| Error::shape(OP, "x0 must have a batch dimension"))?;
    t.expect_shape(OP, "t", &[batch])?;
    let steps = sqrt_alpha_bar.numel();
    if sqrt_alpha_bar.shape().len() != 1 {
        return Err(Error::shape(
            OP,
            format!(
                "sqrt_alpha_bar must be [T], got {:?}",
                sqrt_alpha_bar.shape()
            ),
        ));
    }
    sqrt_one_minus_alpha_bar.expect_shape(OP, "sqrt_one_minus_alpha_bar", &[steps])?;
    let xt = ctx.empty(x0.shape(), "q_sample.x_t")?;
    let eps = ctx.empty(x0.shape(), "q_sample.eps")?;
    RngLaunch {
        entry: "q_sample",
        n: x0.numel(),
        seed,
        stream,
        first: 0,
        extra: RngParams {
            per_sample: (x0.numel() / batch) as u32,
            steps: steps as u32,
            ..Default::default()
        },
        buffers: &[
            x0.buffer(),
            t.buffer(),
            sqrt_alpha_bar.buffer(),
            sqrt_one_minus_alpha_bar.buffer(),
            xt.buffer(),
            eps.buffer(),
        ],
    }
    .run(ctx)?;
    Ok((xt, eps))
}

/// out = a·x + b·e + σ·z, z standard normal drawn in the kernel (skipped when σ = 0).
#[allow(clippy::too_many_arguments)]
pub fn axpbz(
    ctx: &Context,
    x: &Tensor,
    e: &Tensor,
    a: f32,
    b: f32,
    sigma: f32,
    seed: u64,
    stream: u32,
) -> Result<Tensor> {
    if x.shape() != e.shape() {
        return Err(Error::shape(
            "axpbz",
            format!("x {:?} and e {:?} differ", x.shape(), e.shape()),
        ));
    }
    let out = ctx.empty(x.shape(), "axpbz.out")?;
    RngLaunch {
        entry: "axpbz",
        n: x.numel(),
        seed,
        stream,
        first: 0,
        extra: RngParams {
            a,
            b,
            sigma,
            ..Default::default()
        },
        buffers: &[x.buffer(), e.buffer(), out.buffer()],
    }
    .run(ctx)?;
    Ok(out)
}

/// One ancestral sampling step x_t → x_{t−1}.
pub fn ddpm_step(
    ctx: &Context,
    x_t: &Tensor,
    eps_pred: &Tensor,
    step: &DdpmStep,
    seed: u64,
    stream: u32,
) -> Result<Tensor> {
    axpbz(
        ctx,
        x_t,
        eps_pred,
        step.coef_x,
        -step.coef_eps,
        step.sigma,
        seed,
        stream,
    )
}
