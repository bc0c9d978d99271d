//! Evaluation beside the bound of [`super::bpd`]: L_simple per timestep bucket (where in the
//! diffusion the model is good or bad), and which class labels a class-conditional model is
//! evaluated with.
//!
//! Bucket b of K covers the 0-based timesteps [⌊bT/K⌋, ⌊(b+1)T/K⌋). Each image i gets one
//! timestep t uniform in its bucket (a keyed hash of (seed, b, i)) and the noise
//! ε\[j\] = Philox normal(seed, stream b, i·(C·H·W) + j); the bucket's value is the mean over
//! images of ‖ε − ε_θ(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t)‖² / (C·H·W), the training loss of Ho et al.
//! (2020, eq. 14) restricted to the bucket; for an x₀ or v model the target is x₀ or
//! v = √ᾱ_t ε − √(1−ᾱ_t) x₀ instead of ε (the loss it was trained with). The same seed gives the
//! same numbers whatever the batch size.

use crate::diffusion::generate::SchedulerConfig;
use crate::diffusion::schedule::{Prediction, Schedule};
use crate::diffusion::train::key;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::nn::UNet;
use crate::ops::{ddpm, loss};

/// L_simple per timestep bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct LossBuckets {
    /// Per bucket: the 0-based timesteps [lo, hi) it covers.
    pub ranges: Vec<(usize, usize)>,
    /// Per bucket: the mean L_simple over the images.
    pub mean: Vec<f64>,
    /// Per bucket, per image: the timestep drawn.
    pub timesteps: Vec<Vec<usize>>,
}

/// The 0-based timesteps [lo, hi) of each of `k` equal buckets of `t` (sizes differ by at
/// most one when k does not divide t).
pub fn bucket_ranges(t: usize, k: usize) -> Result<Vec<(usize, usize)>> {
    if k == 0 || k > t {
        return Err(Error::arg(
            "--loss-buckets",
            format!("{k}: expected 1..={t} (the model's num_train_timesteps)"),
        ));
    }
    Ok((0..k).map(|b| (b * t / k, (b + 1) * t / k)).collect())
}

/// The timestep image `i` gets in bucket `b` = [lo, hi), uniform in it.
pub fn bucket_timestep(seed: u64, b: usize, i: usize, (lo, hi): (usize, usize)) -> usize {
    lo + (key(seed, b as u64, 0, i as u64, 7) % (hi - lo) as u64) as usize
}

/// L_simple per bucket for `images` ([n, C, H, W] in [−1, 1]) with `k` buckets, `batch_size`
/// images per model call, for a model predicting `prediction`; `labels` (one per image) for a
/// class-conditional model. `progress(done, total)` after each model call.
#[allow(clippy::too_many_arguments)]
pub fn loss_buckets(
    ctx: &Context,
    unet: &UNet,
    schedule: &Schedule,
    prediction: Prediction,
    images: &[f32],
    labels: Option<&[u32]>,
    n: usize,
    k: usize,
    batch_size: usize,
    seed: u64,
    mut progress: impl FnMut(usize, usize),
) -> Result<LossBuckets> {
    let cfg = unet.config();
    let s = cfg.sample_size;
    let per = cfg.in_channels * s * s;
    if n == 0 || images.len() != n * per {
        return Err(Error::arg(
            "--data",
            format!(
                "{} values are not {n} images of {}×{s}×{s} (the model's in_channels × sample_size²)",
                images.len(),
                cfg.in_channels
            ),
        ));
    }
    if cfg.out_channels != cfg.in_channels {
        return Err(Error::arg(
            "--model",
            format!(
                "in_channels {} ≠ out_channels {}: ε_θ must be shaped like x_t",
                cfg.in_channels, cfg.out_channels
            ),
        ));
    }
    check_labels(unet, labels, n)?;
    if batch_size == 0 {
        return Err(Error::arg("--batch-size", "must be at least 1"));
    }
    let ranges = bucket_ranges(schedule.len(), k)?;
    let sab = ctx.upload(&[schedule.len()], &schedule.sqrt_alphas_cumprod())?;
    let somab = ctx.upload(&[schedule.len()], &schedule.sqrt_one_minus_alphas_cumprod())?;
    let batches = n.div_ceil(batch_size);
    let (mut mean, mut timesteps) = (Vec::with_capacity(k), Vec::with_capacity(k));
    for (b, &range) in ranges.iter().enumerate() {
        let ts: Vec<usize> = (0..n).map(|i| bucket_timestep(seed, b, i, range)).collect();
        let mut sum = 0.0f64;
        for j in 0..batches {
            let (lo, hi) = (j * batch_size, ((j + 1) * batch_size).min(n));
            let m = hi - lo;
            let x0 = ctx.upload(&[m, cfg.in_channels, s, s], &images[lo * per..hi * per])?;
            let t: Vec<f32> = ts[lo..hi].iter().map(|&t| t as f32).collect();
            let t = ctx.upload(&[m], &t)?;
            let y = match labels {
                Some(l) => Some(ctx.upload(&[m], &l[lo..hi].iter().map(|&c| c as f32).collect::<Vec<_>>())?),
                None => None,
            };
            let (x_t, target) = ddpm::q_sample_target_at(
                ctx,
                &x0,
                &t,
                &sab,
                &somab,
                seed,
                b as u32,
                (lo * per) as u64,
                prediction,
            )?;
            let pred = unet.forward(ctx, &x_t, &t, y.as_ref())?;
            // The batch mean of the per-image means, weighted by the batch's share of images.
            sum += ctx.read(&loss::mse_loss(ctx, &pred, &target)?)?[0] as f64 * m as f64;
            progress(b * batches + j + 1, k * batches);
        }
        mean.push(sum / n as f64);
        timesteps.push(ts);
    }
    Ok(LossBuckets {
        ranges,
        mean,
        timesteps,
    })
}

/// Labels must be given exactly for a class-conditional model, one per image, each a row of
/// the class embedding.
pub(crate) fn check_labels(unet: &UNet, labels: Option<&[u32]>, n: usize) -> Result<()> {
    match (unet.config().num_class_embeds, labels) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(Error::arg(
            "labels",
            "the model is unconditional (num_class_embeds is null)",
        )),
        (Some(_), None) => Err(Error::arg(
            "labels",
            "the model is class-conditional: give one label per image",
        )),
        (Some(k), Some(l)) => {
            if l.len() != n {
                return Err(Error::arg("labels", format!("{} labels for {n} images", l.len())));
            }
            match l.iter().find(|&&c| c as usize >= k) {
                Some(c) => Err(Error::arg(
                    "labels",
                    format!("class {c} is outside the model's {k} class embeddings"),
                )),
                None => Ok(()),
            }
        }
    }
}

/// The class labels to evaluate the first `n` images with: `None` for an unconditional model;
/// for a class-conditional one the dataset's labels (the bound of log p(x | y), what
/// class-conditional models are reported with), or with `null` the null class of label dropout
/// for every image (the unconditional model that classifier-free guidance trains alongside).
/// An unlabelled dataset needs `null`; a dataset label that is not a real class of the model
/// (past its embeddings, or the null row) is refused.
pub fn eval_labels(
    unet: &UNet,
    scheduler: &SchedulerConfig,
    data_labels: &[u32],
    n: usize,
    null: bool,
) -> Result<Option<Vec<u32>>> {
    let Some(k) = unet.config().num_class_embeds else {
        if null {
            return Err(Error::arg(
                "--null-class",
                "the model is unconditional (num_class_embeds is null)",
            ));
        }
        return Ok(None);
    };
    // As `ddpm sample`: stated in scheduler_config.json, else the last row.
    let null_class = match scheduler.null_class {
        Some(explicit) => explicit,
        None => Some(k as u32 - 1),
    };
    if null {
        let nc = null_class.filter(|&c| (c as usize) < k).ok_or_else(|| {
            Error::arg(
                "--null-class",
                "the model has no null class (trained without label dropout)",
            )
        })?;
        return Ok(Some(vec![nc; n]));
    }
    if data_labels.len() < n {
        return Err(Error::arg(
            "--data",
            format!(
                "the model is class-conditional but the dataset has no labels; pass --null-class to \
                 evaluate it unconditionally{}",
                if null_class.is_some() {
                    ""
                } else {
                    " (it has no null class, though)"
                }
            ),
        ));
    }
    let labels = data_labels[..n].to_vec();
    if let Some(c) = labels.iter().find(|&&c| c as usize >= k || Some(c) == null_class) {
        return Err(Error::arg(
            "--data",
            format!(
                "label {c} is not one of the model's classes ({} class embeddings{})",
                k,
                null_class.map_or(String::new(), |nc| format!(", {nc} the null class"))
            ),
        ));
    }
    Ok(Some(labels))
}
