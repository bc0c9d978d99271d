//! The variational bound in bits per dimension (Ho et al. 2020 eq. 5; Nichol & Dhariwal 2021,
//! `improved-diffusion`'s `calc_bpd_loop`):
//!
//! L = L_T + Σ_{t>1} L_{t−1} + L_0, with
//! - L_T = KL(q(x_T | x_0) ‖ N(0, I)) (the prior term),
//! - L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)), both Gaussians,
//! - L_0 = −log p_θ(x_0 | x_1) under the discretized Gaussian decoder (256 bins on [−1, 1]),
//!
//! each averaged over dimensions and divided by ln 2. p_θ's mean is the posterior mean at the
//! model's x̂₀ (from ε̂, x̂₀ or v̂ by the model's [`Prediction`]; clipped to [−1, 1] when
//! `clip`), its variance fixed (β̃_t or β_t, with improved-diffusion's convention of using β̃_1
//! at t = 1 for both) or learned (improved DDPM's `learned_range`: log σ² = frac·log β_t +
//! (1 − frac)·log β̃_t, frac = (v + 1)/2, β̃ clipped as above, from the model's second C
//! channels). The model runs on the GPU; the terms are computed on the host in f64 from the
//! read-back output.

use crate::diffusion::sample::Variance;
use crate::diffusion::schedule::{Prediction, Schedule};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::nn::UNet;
use crate::ops::ddpm;

/// KL(N(μ₁, e^{lv₁}) ‖ N(μ₂, e^{lv₂})) per element.
pub fn normal_kl(mean1: f64, logvar1: f64, mean2: f64, logvar2: f64) -> f64 {
    0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2).powi(2) * (-logvar2).exp())
}

/// improved-diffusion's tanh approximation of the standard normal CDF.
pub fn approx_standard_normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
}

/// log-probability of the 8-bit pixel `x` ∈ [−1, 1] under a Gaussian of `mean` and
/// log-std `log_scale` discretized to bins of width 2/255 (edge bins extend to ±∞).
pub fn discretized_gaussian_log_likelihood(x: f64, mean: f64, log_scale: f64) -> f64 {
    let centered = x - mean;
    let inv_stdv = (-log_scale).exp();
    let cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0));
    let cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0));
    if x < -0.999 {
        cdf_plus.max(1e-12).ln()
    } else if x > 0.999 {
        (1.0 - cdf_min).max(1e-12).ln()
    } else {
        (cdf_plus - cdf_min).max(1e-12).ln()
    }
}

/// Posterior q(x_{t−1} | x_t, x_0) mean coefficients (of x₀, of x_t) and clipped log-variance
/// at index t (β̃ at t = 0 is 0; its log uses β̃ at index 1, as improved-diffusion).
pub(crate) fn posterior(schedule: &Schedule, t: usize) -> (f64, f64, f64) {
    let ab = schedule.alphas_cumprod[t];
    let ab_prev = schedule.alpha_cumprod_prev(t);
    let beta = schedule.betas[t];
    let c0 = beta * ab_prev.sqrt() / (1.0 - ab);
    let ct = (1.0 - ab_prev) * schedule.alphas[t].sqrt() / (1.0 - ab);
    let var_idx = if t == 0 && schedule.len() > 1 { 1 } else { t };
    (c0, ct, schedule.posterior_variance(var_idx).ln())
}

/// The model's log-variance at index t: β̃ (fixed_small, clipped at t = 0 as the posterior),
/// β (fixed_large, with β̃_1 at t = 0), or for learned_range frac·log β_t + (1 − frac)·log β̃_t
/// (clipped β̃, β_t itself at t = 0, as improved-diffusion) at the model's v.
fn model_log_variance(schedule: &Schedule, variance: Variance, t: usize, v: f64) -> f64 {
    match variance {
        Variance::FixedSmall => posterior(schedule, t).2,
        Variance::FixedLarge if t == 0 && schedule.len() > 1 => schedule.posterior_variance(1).ln(),
        Variance::FixedLarge => schedule.betas[t].ln(),
        Variance::LearnedRange => {
            let frac = (v + 1.0) / 2.0;
            frac * schedule.betas[t].ln() + (1.0 - frac) * posterior(schedule, t).2
        }
    }
}

/// L_{t} in bits/dim for each of the `n` images (`x0`, `x_t` hold n equal-sized images,
/// `model_out` the model's output for them: C channels, or 2·C for a learned variance, whose
/// second half is v): the decoder NLL at t = 0, the Gaussian KL otherwise.
#[allow(clippy::too_many_arguments)]
pub fn vb_term_bpd(
    schedule: &Schedule,
    variance: Variance,
    prediction: Prediction,
    clip: bool,
    t: usize,
    x0: &[f64],
    x_t: &[f64],
    model_out: &[f64],
    n: usize,
) -> Vec<f64> {
    let per = x0.len() / n;
    let split = model_out.len() == 2 * x0.len();
    let out_per = if split { 2 * per } else { per };
    let pc = prediction.coefs(schedule.alphas_cumprod[t]);
    let (c0, ct, true_logvar) = posterior(schedule, t);
    (0..n)
        .map(|b| {
            let mut acc = 0.0;
            for i in b * per..(b + 1) * per {
                let j = b * out_per + (i - b * per);
                let m = model_out[j];
                let v = if split { model_out[j + per] } else { 0.0 };
                let model_logvar = model_log_variance(schedule, variance, t, v);
                let mut x0_pred = pc.x0_x * x_t[i] - pc.x0_m * m;
                if clip {
                    x0_pred = x0_pred.clamp(-1.0, 1.0);
                }
                let model_mean = c0 * x0_pred + ct * x_t[i];
                acc += if t == 0 {
                    -discretized_gaussian_log_likelihood(x0[i], model_mean, 0.5 * model_logvar)
                } else {
                    normal_kl(c0 * x0[i] + ct * x_t[i], true_logvar, model_mean, model_logvar)
                };
            }
            acc / per as f64 / std::f64::consts::LN_2
        })
        .collect()
}

/// L_T = KL(q(x_T | x_0) ‖ N(0, I)) in bits/dim for each of the `n` images.
pub fn prior_bpd(schedule: &Schedule, x0: &[f64], n: usize) -> Vec<f64> {
    let per = x0.len() / n;
    let ab = schedule.alphas_cumprod[schedule.len() - 1];
    (0..n)
        .map(|b| {
            let kl: f64 = x0[b * per..(b + 1) * per]
                .iter()
                .map(|&x| normal_kl(ab.sqrt() * x, (1.0 - ab).ln(), 0.0, 0.0))
                .sum();
            kl / per as f64 / std::f64::consts::LN_2
        })
        .collect()
}

/// The bound for a batch of images.
#[derive(Clone, Debug)]
pub struct Bpd {
    /// Total bits/dim of each image.
    pub total: Vec<f64>,
    /// L_T of each image.
    pub prior: Vec<f64>,
    /// Per timestep index t (0 = the decoder term), the mean over images of that index's
    /// contribution to the total: L_t itself for the full bound, weight · L_t at a sampled index
    /// and 0 elsewhere for [`eval_bpd_sampled`].
    pub terms: Vec<f64>,
}

/// Evaluate the bound for `images` ([n, C, H, W] in [−1, 1], 8-bit levels) with one model call
/// per timestep, for a model predicting `prediction` (with [`Variance::LearnedRange`], a model
/// with 2·C output channels); `labels` (one per image) for a class-conditional model, which gives the bound
/// of log p(x | y) (see [`crate::diffusion::eval::eval_labels`] for which labels to pass).
/// The noise of x_t is Philox stream t of `seed`. `progress(done, T)` after each t.
#[allow(clippy::too_many_arguments)]
pub fn eval_bpd(
    ctx: &Context,
    unet: &UNet,
    schedule: &Schedule,
    variance: Variance,
    prediction: Prediction,
    clip: bool,
    images: &[f32],
    labels: Option<&[u32]>,
    n: usize,
    seed: u64,
    progress: impl FnMut(usize, usize),
) -> Result<Bpd> {
    let plan: Vec<(usize, f64)> = (0..schedule.len()).map(|t| (t, 1.0)).collect();
    bound(
        ctx, unet, schedule, variance, prediction, clip, images, labels, n, seed, &plan, progress,
    )
}

/// Which timestep indices [`eval_bpd_sampled`] evaluates, with their weights: index 0 (the
/// decoder term) with weight 1, then one index drawn uniformly from each of `k` equal strata of
/// 1..T, weighted by its stratum's size, so that Σ weight · L_t is an unbiased estimate of
/// Σ_{t≥1} L_t. `k ≥ T − 1` gives every index with weight 1 (the exact bound).
pub fn stratified_timesteps(steps: usize, k: usize, seed: u64) -> Vec<(usize, f64)> {
    let mut plan = vec![(0, 1.0)];
    let rest = steps.saturating_sub(1);
    if k == 0 || rest == 0 {
        return plan;
    }
    let k = k.min(rest);
    let mut state = seed ^ 0x0b9d_57a7_ed00_0001;
    for j in 0..k {
        let (lo, hi) = (1 + j * rest / k, 1 + (j + 1) * rest / k);
        // SplitMix64 draw inside the stratum
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        plan.push((lo + (z % (hi - lo) as u64) as usize, (hi - lo) as f64));
    }
    plan
}

/// The bound estimated from `k` + 1 model calls per batch instead of T: the decoder term L_0
/// and the prior L_T exactly, Σ_{t≥1} L_t by [`stratified_timesteps`] (unbiased; its spread
/// over seeds is the price of the speed-up). Arguments as [`eval_bpd`]; `seed` also draws the
/// timesteps. `progress(done, k + 1)`.
#[allow(clippy::too_many_arguments)]
pub fn eval_bpd_sampled(
    ctx: &Context,
    unet: &UNet,
    schedule: &Schedule,
    variance: Variance,
    prediction: Prediction,
    clip: bool,
    images: &[f32],
    labels: Option<&[u32]>,
    n: usize,
    k: usize,
    seed: u64,
    progress: impl FnMut(usize, usize),
) -> Result<Bpd> {
    let plan = stratified_timesteps(schedule.len(), k, seed);
    bound(
        ctx, unet, schedule, variance, prediction, clip, images, labels, n, seed, &plan, progress,
    )
}

/// The bound over `plan`: (timestep index, weight) pairs.
#[allow(clippy::too_many_arguments)]
fn bound(
    ctx: &Context,
    unet: &UNet,
    schedule: &Schedule,
    variance: Variance,
    prediction: Prediction,
    clip: bool,
    images: &[f32],
    labels: Option<&[u32]>,
    n: usize,
    seed: u64,
    plan: &[(usize, f64)],
    mut progress: impl FnMut(usize, usize),
) -> Result<Bpd> {
    let cfg = unet.config();
    let s = cfg.sample_size;
    let shape = [n, cfg.in_channels, s, s];
    if n == 0 || images.len() != shape.iter().product::<usize>() {
        return Err(Error::arg(
            "--data",
            format!(
                "{} values are not {n} images of {}×{s}×{s} (the model's in_channels × sample_size²)",
                images.len(),
                cfg.in_channels
            ),
        ));
    }
    let learned = variance == Variance::LearnedRange;
    if cfg.out_channels != cfg.in_channels * if learned { 2 } else { 1 } {
        return Err(Error::arg(
            "--model",
            format!(
                "out_channels {} for in_channels {}: the bound needs {} output channels{}",
                cfg.out_channels,
                cfg.in_channels,
                if learned { 2 * cfg.in_channels } else { cfg.in_channels },
                if learned { " (variance_type learned_range)" } else { "" }
            ),
        ));
    }
    crate::diffusion::eval::check_labels(unet, labels, n)?;
    let labels = match labels {
        Some(l) => Some(ctx.upload(&[n], &l.iter().map(|&c| c as f32).collect::<Vec<_>>())?),
        None => None,
    };
    let steps = schedule.len();
    let x0 = ctx.upload(&shape, images)?;
    let x0_host: Vec<f64> = images.iter().map(|&v| v as f64).collect();
    let sab = ctx.upload(&[steps], &schedule.sqrt_alphas_cumprod())?;
    let somab = ctx.upload(&[steps], &schedule.sqrt_one_minus_alphas_cumprod())?;
    let prior = prior_bpd(schedule, &x0_host, n);
    let mut total = prior.clone();
    let mut terms = vec![0.0; steps];
    for (done, &(t, weight)) in plan.iter().enumerate() {
        let tt = ctx.upload(&[n], &vec![t as f32; n])?;
        let (x_t, _) = ddpm::q_sample(ctx, &x0, &tt, &sab, &somab, seed, t as u32)?;
        let out = unet.forward(ctx, &x_t, &tt, labels.as_ref())?;
        let to64 = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
        let (x_t, out) = (to64(ctx.read(&x_t)?), to64(ctx.read(&out)?));
        let vb = vb_term_bpd(schedule, variance, prediction, clip, t, &x0_host, &x_t, &out, n);
        for (tot, v) in total.iter_mut().zip(&vb) {
            *tot += weight * v;
        }
        terms[t] += weight * vb.iter().sum::<f64>() / n as f64;
        progress(done + 1, plan.len());
    }
    Ok(Bpd { total, prior, terms })
}
