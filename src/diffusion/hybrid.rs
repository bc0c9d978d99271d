//! Objectives of a learned-variance model (improved DDPM, Nichol & Dhariwal 2021 §3.1): the
//! model outputs 2·C channels, the prediction m (ε, x₀ or v) and the variance interpolation v,
//! with Σ_θ = exp(frac·log β_t + (1 − frac)·log β̃_t), frac = (v + 1)/2.
//!
//! - `hybrid`: L_simple + λ·L_vlb, the L_vlb term with a stop-gradient on the mean, so it trains
//!   only Σ_θ (λ = 0.001). Per sample, L_vlb is estimated by T·L_t (t uniform, or importance-
//!   sampled with weight 1/(T p_t)), so the sample's loss is mse + λ·T·w·L_t.
//! - `vlb`: T·w·L_t alone, gradient through mean and variance.
//!
//! L_t is in bits per dimension, as improved-diffusion's `_vb_terms_bpd`; with T = 1000 and
//! λ = 0.001 the hybrid loss is improved-diffusion's `RESCALED_MSE` objective.

use crate::diffusion::schedule::{Prediction, Schedule};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::ops::{layout, loss, vlb};
use crate::tensor::Tensor;

/// The training objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossType {
    /// L_simple = ‖target − m‖² (Ho et al.); a model with C output channels.
    Simple,
    /// L_simple + λ·L_vlb with the stop-gradient on the mean (2·C output channels).
    Hybrid,
    /// L_vlb alone (2·C output channels).
    Vlb,
}

impl LossType {
    /// Parse `simple`, `hybrid` or `vlb`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "simple" => Ok(LossType::Simple),
            "hybrid" => Ok(LossType::Hybrid),
            "vlb" => Ok(LossType::Vlb),
            other => Err(Error::arg(
                "--loss",
                format!("unknown loss '{other}'; expected simple, hybrid or vlb"),
            )),
        }
    }

    /// The name [`LossType::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            LossType::Simple => "simple",
            LossType::Hybrid => "hybrid",
            LossType::Vlb => "vlb",
        }
    }

    /// Whether the model must output a variance (2·C channels).
    pub fn learned_variance(self) -> bool {
        self != LossType::Simple
    }
}

/// One micro-batch of a learned-variance objective.
pub struct LearnedVarianceLoss {
    /// Mean L_simple over the micro-batch, `[1]` (zero for [`LossType::Vlb`]).
    pub mse: Tensor,
    /// L_t of each sample in bits/dim, `[B]`.
    pub vb: Tensor,
    /// Gradient of `grad_scale` × the micro-batch's mean loss with respect to the model output.
    pub dout: Tensor,
    /// The weight of each sample's L_t in the loss: loss = mse + Σ_b vb_weight\[b\]·vb\[b\].
    pub vb_weight: Vec<f64>,
}

impl LearnedVarianceLoss {
    /// The loss value from the read-back parts.
    pub fn value(&self, ctx: &Context) -> Result<f64> {
        let mse = ctx.read(&self.mse)?[0] as f64;
        let vb = ctx.read(&self.vb)?;
        Ok(mse + vb.iter().zip(&self.vb_weight).map(|(&v, w)| v as f64 * w).sum::<f64>())
    }
}

/// The objective and its gradient for model output `out` `[B, 2C, H, W]` at timestep indices
/// `t` (one per sample), with `target` the L_simple target of the first half, `x0` and `x_t`
/// the clean and noised images, `weights` the importance weights 1/(T p_t) (1 for uniform t),
/// `lambda` the hybrid loss's λ; the gradient is scaled by `grad_scale` (1/micro-batches).
#[allow(clippy::too_many_arguments)]
pub fn learned_variance_loss(
    ctx: &Context,
    schedule: &Schedule,
    prediction: Prediction,
    loss_type: LossType,
    lambda: f64,
    out: &Tensor,
    target: &Tensor,
    x0: &Tensor,
    x_t: &Tensor,
    t: &[usize],
    weights: &[f64],
    grad_scale: f64,
) -> Result<LearnedVarianceLoss> {
    const OP: &str = "learned_variance_loss";
    let (b, c2, _, _) = out.dims4(OP)?;
    if !loss_type.learned_variance() {
        return Err(Error::arg("--loss", "simple has no variance term; use mse_loss"));
    }
    if t.len() != b || weights.len() != b {
        return Err(Error::shape(
            OP,
            format!("{} timesteps and {} weights for a batch of {b}", t.len(), weights.len()),
        ));
    }
    if let Some(&bad) = t.iter().find(|&&t| t >= schedule.len()) {
        return Err(Error::arg("t", format!("{bad} is outside 0..{}", schedule.len())));
    }
    let (m, _) = layout::split_channels(ctx, out, c2 / 2)?;
    let big_t = schedule.len() as f64;
    let per_sample = match loss_type {
        LossType::Hybrid => lambda * big_t,
        _ => big_t,
    };
    let (mse, gin) = if loss_type == LossType::Hybrid {
        (
            loss::mse_loss(ctx, &m, target)?,
            loss::mse_loss_backward(ctx, &m, target, grad_scale as f32)?,
        )
    } else {
        (ctx.zeros(&[1], "vlb.mse")?, ctx.zeros(m.shape(), "vlb.gin")?)
    };
    let coefs: Vec<f32> = t
        .iter()
        .flat_map(|&t| vlb::vlb_coefs(schedule, prediction, t).map(|v| v as f32))
        .collect();
    let vb_weight: Vec<f64> = weights.iter().map(|w| per_sample * w / b as f64).collect();
    let grad_w: Vec<f32> = vb_weight.iter().map(|w| (w * grad_scale) as f32).collect();
    let (vb, dout) = vlb::vlb_terms(
        ctx,
        out,
        x0,
        x_t,
        &ctx.upload(&[b, 8], &coefs)?,
        &ctx.upload(&[b], &grad_w)?,
        &gin,
        loss_type == LossType::Vlb,
    )?;
    Ok(LearnedVarianceLoss {
        mse,
        vb,
        dout,
        vb_weight,
    })
}
