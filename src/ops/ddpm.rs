//! Fused DDPM kernels that draw their Gaussian noise in-line (`shaders/random.wgsl`, entries
//! `q_sample` and `axpbz`; the noise is [`crate::reference::random::normal`] at the element
//! index, bit-identical on every adapter).
//!
//! # Contracts
//! - `q_sample(x0 [B, ...], t [B], sqrt_alpha_bar [T], sqrt_one_minus_alpha_bar [T], seed,
//!   stream)` → `(x_t, eps)`, both new tensors of x0's shape (=):
//!   eps\[i\] = normal(seed, stream, i); x_t\[i\] = sab\[t_b\]·x0\[i\] + somab\[t_b\]·eps\[i\], with b the
//!   batch item of element i and t_b = t\[b\] read on the GPU (f32 holding an integer timestep;
//!   values outside [0, T−1] are clamped to it, fractions truncated).
//! - `q_sample_at(…, seed, stream, first)`: the same with eps\[i\] = normal(seed, stream, first + i),
//!   so a batch drawn in pieces (gradient accumulation) gets the noise of the whole batch.
//! - `q_sample_target_at(…, first, prediction)` → `(x_t, target)`: x_t as `q_sample_at`; the
//!   target (=) is eps, x0 itself (the same tensor, no copy) or v\[i\] = sab\[t_b\]·eps\[i\] −
//!   somab\[t_b\]·x0\[i\] (entry `q_sample_v`, eps is not kept).
//! - `axpbz(x, e, a, b, sigma, seed, stream)`: x, e equal shapes → out (=) = a·x + b·e + σ·z with
//!   z\[i\] = normal(seed, stream, i); no noise is drawn when σ = 0.
//! - `sampler_update(x, e, x0_prev, coefs, seed, stream)`: x [B, C, ...] (and x0_prev if given)
//!   equal shapes, e the model output, [B, C, ...] or [B, 2·C, ...] (learned variance: the first
//!   C channels of each item are used as e, the last C as v) → (out, x0), both new, x's shape
//!   (=): x0 = s_x·x − s_e·e, clamped to [−1, 1] if `clip`;
//!   out = c_x·x + c_x0·x0 + c_e·e + c_prev·x0_prev + σ·exp(σ_v·v)·z (σ_v ≠ 0 needs the 2·C
//!   output). One step of DDPM, DDIM or DPM-Solver++ for any prediction type (coefficients from
//!   `diffusion::sample::plan`).
//! - `sampler_update_with_noise(x, e, x0_prev, coefs, noise)`: the same with z = noise\[i\] given
//!   (noise shaped like x), for parity with diffusers' recorded noise.
//! - `ddpm_step(x_t, eps_pred, step, seed, stream)`: x_t, eps_pred equal shapes → x_{t−1} (=) =
//!   coef_x·x_t − coef_eps·eps_pred + σ·z (Ho et al. 2020, Algorithm 2), via `axpbz`.

use crate::diffusion::schedule::Prediction;
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
    q_sample_at(ctx, x0, t, sqrt_alpha_bar, sqrt_one_minus_alpha_bar, seed, stream, 0)
}

/// [`q_sample`] with the noise of element i at counter index `first + i`.
#[allow(clippy::too_many_arguments)]
pub fn q_sample_at(
    ctx: &Context,
    x0: &Tensor,
    t: &Tensor,
    sqrt_alpha_bar: &Tensor,
    sqrt_one_minus_alpha_bar: &Tensor,
    seed: u64,
    stream: u32,
    first: u64,
) -> Result<(Tensor, Tensor)> {
    q_sample_launch(
        ctx,
        "q_sample",
        x0,
        t,
        sqrt_alpha_bar,
        sqrt_one_minus_alpha_bar,
        seed,
        stream,
        first,
    )
}

/// The forward-process sample x_t and the training target of a model predicting `prediction`
/// (ε, x₀ or v), with the noise of [`q_sample_at`]: x_t is bit-identical for every prediction.
#[allow(clippy::too_many_arguments)]
pub fn q_sample_target_at(
    ctx: &Context,
    x0: &Tensor,
    t: &Tensor,
    sqrt_alpha_bar: &Tensor,
    sqrt_one_minus_alpha_bar: &Tensor,
    seed: u64,
    stream: u32,
    first: u64,
    prediction: Prediction,
) -> Result<(Tensor, Tensor)> {
    let entry = match prediction {
        Prediction::V => "q_sample_v",
        Prediction::Epsilon | Prediction::Sample => "q_sample",
    };
    let (x_t, target) = q_sample_launch(
        ctx,
        entry,
        x0,
        t,
        sqrt_alpha_bar,
        sqrt_one_minus_alpha_bar,
        seed,
        stream,
        first,
    )?;
    Ok(match prediction {
        Prediction::Sample => (x_t, x0.clone()),
        Prediction::Epsilon | Prediction::V => (x_t, target),
    })
}

#[allow(clippy::too_many_arguments)]
fn q_sample_launch(
    ctx: &Context,
    entry: &'static str,
    x0: &Tensor,
    t: &Tensor,
    sqrt_alpha_bar: &Tensor,
    sqrt_one_minus_alpha_bar: &Tensor,
    seed: u64,
    stream: u32,
    first: u64,
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
            format!("sqrt_alpha_bar must be [T], got {:?}", sqrt_alpha_bar.shape()),
        ));
    }
    sqrt_one_minus_alpha_bar.expect_shape(OP, "sqrt_one_minus_alpha_bar", &[steps])?;
    let xt = ctx.empty(x0.shape(), "q_sample.x_t")?;
    let eps = ctx.empty(x0.shape(), "q_sample.eps")?;
    RngLaunch {
        entry,
        n: x0.numel(),
        seed,
        stream,
        first,
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
        per_invocation: 1,
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
        per_invocation: 1,
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

/// Coefficients of one fused sampler step (see the contract above).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SamplerCoefs {
    /// x̂₀ = s_x·x − s_e·ε: s_x = 1/√ᾱ_t.
    pub s_x: f32,
    /// s_e = √(1−ᾱ_t)/√ᾱ_t.
    pub s_e: f32,
    /// Clamp x̂₀ to [−1, 1].
    pub clip: bool,
    /// Weight of x_t.
    pub c_x: f32,
    /// Weight of x̂₀.
    pub c_x0: f32,
    /// Weight of ε.
    pub c_e: f32,
    /// Weight of the previous step's x̂₀ (multistep solvers).
    pub c_prev: f32,
    /// Noise scale σ.
    pub sigma: f32,
    /// Learned variance: the noise scale of element i is σ·exp(σ_v·v_i), v the model's variance
    /// channel (needs the 2·C-channel model output); 0 for a fixed variance.
    pub sigma_v: f32,
}

/// One sampler step; returns (x_next, x̂₀). The noise z is drawn in the kernel from
/// (seed, stream).
pub fn sampler_update(
    ctx: &Context,
    x: &Tensor,
    e: &Tensor,
    x0_prev: Option<&Tensor>,
    c: &SamplerCoefs,
    seed: u64,
    stream: u32,
) -> Result<(Tensor, Tensor)> {
    sampler_launch(ctx, x, e, x0_prev, c, Noise::Drawn { seed, stream })
}

/// One sampler step with the noise z given (same shape as x; ignored when σ = 0): for parity
/// with another implementation's random stream. Returns (x_next, x̂₀).
pub fn sampler_update_with_noise(
    ctx: &Context,
    x: &Tensor,
    e: &Tensor,
    x0_prev: Option<&Tensor>,
    c: &SamplerCoefs,
    noise: &Tensor,
) -> Result<(Tensor, Tensor)> {
    noise.expect_shape("sampler_update", "noise", x.shape())?;
    sampler_launch(ctx, x, e, x0_prev, c, Noise::Given(noise))
}

enum Noise<'a> {
    Drawn { seed: u64, stream: u32 },
    Given(&'a Tensor),
}

fn sampler_launch(
    ctx: &Context,
    x: &Tensor,
    e: &Tensor,
    x0_prev: Option<&Tensor>,
    c: &SamplerCoefs,
    noise: Noise<'_>,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "sampler_update";
    let per = x.numel() / x.shape().first().copied().unwrap_or(1).max(1);
    // A learned-variance output: the channel dimension (1) doubled.
    let split = x.shape().len() >= 2 && {
        let mut doubled = x.shape().to_vec();
        doubled[1] *= 2;
        e.shape() == doubled.as_slice()
    };
    if !split {
        e.expect_shape(OP, "eps", x.shape())?;
    }
    if c.sigma_v != 0.0 && !split {
        return Err(Error::arg(
            "sigma_v",
            format!(
                "a learned variance needs the model output with 2·C channels, got {:?} for x {:?}",
                e.shape(),
                x.shape()
            ),
        ));
    }
    if let Some(p) = x0_prev {
        p.expect_shape(OP, "x0_prev", x.shape())?;
    }
    if c.c_prev != 0.0 && x0_prev.is_none() {
        return Err(Error::arg("c_prev", "a multistep coefficient needs the previous x0"));
    }
    let out = ctx.empty(x.shape(), "sampler.x_next")?;
    let x0 = ctx.empty(x.shape(), "sampler.x0")?;
    // Without a previous x̂₀ the kernel never reads binding 3; x stands in for it.
    let mut buffers = vec![
        x.buffer(),
        e.buffer(),
        x0_prev.unwrap_or(x).buffer(),
        out.buffer(),
        x0.buffer(),
    ];
    let (entry, seed, stream) = match noise {
        Noise::Drawn { seed, stream } => ("sampler_update", seed, stream),
        Noise::Given(z) => {
            buffers.push(z.buffer());
            ("sampler_update_noise", 0, 0)
        }
    };
    RngLaunch {
        entry,
        n: x.numel(),
        seed,
        stream,
        first: 0,
        extra: RngParams {
            sigma: c.sigma,
            s_x: c.s_x,
            s_e: c.s_e,
            clip: u32::from(c.clip),
            c_x: c.c_x,
            c_x0: c.c_x0,
            c_e: c.c_e,
            c_prev: if x0_prev.is_some() { c.c_prev } else { 0.0 },
            split: u32::from(split),
            sigma_v: c.sigma_v,
            per_sample: per as u32,
            ..Default::default()
        },
        buffers: &buffers,
        per_invocation: 1,
    }
    .run(ctx)?;
    Ok((out, x0))
}
