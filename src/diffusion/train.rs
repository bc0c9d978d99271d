//! Training (Algorithm 1 of Ho et al. 2020): t ~ U{1..T}, ε ~ N(0, I),
//! loss ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖², Adam with warmup, gradient clipping and an EMA of
//! the weights. Every random choice is a pure function of (seed, step), so a resumed run
//! continues exactly where an uninterrupted one would be. A model may instead learn x₀ or
//! v = √ᾱ_t ε − √(1−ᾱ_t) x₀ (`prediction_type`, diffusers' names): the same x_t, that target in
//! place of ε.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::checkpoint::{self, TensorFile};
use crate::data::Dataset;
use crate::diffusion::generate::{self, Format, Model, SampleRequest, SchedulerConfig};
use crate::diffusion::hybrid::{self, LossType};
use crate::diffusion::importance::LossSecondMoment;
use crate::diffusion::schedule::{BetaSchedule, Prediction, Schedule};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::nn::{Grads, Mode, Params, UNet, UNetConfig};
use crate::ops::{ddpm, loss, optim};
use crate::tensor::Tensor;

/// Every training option, with the paper's defaults.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Images per optimizer step (split into `grad_accum` micro-batches).
    pub batch_size: usize,
    /// Micro-batches per step (gradient accumulation for batches that do not fit).
    pub grad_accum: usize,
    /// Peak learning rate (2e-4).
    pub lr: f32,
    /// Linear warmup steps (5000).
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this (1.0); `None` disables.
    pub clip_grad_norm: Option<f32>,
    /// Adam β₁.
    pub beta1: f32,
    /// Adam β₂.
    pub beta2: f32,
    /// Adam ε.
    pub adam_eps: f32,
    /// Decoupled weight decay (AdamW); 0 = Adam.
    pub weight_decay: f32,
    /// EMA decay (0.9999).
    pub ema_decay: f32,
    /// Use decay min(ema_decay, (1+step)/(10+step)) early on.
    pub ema_warmup: bool,
    /// Random horizontal flips.
    pub hflip: bool,
    /// Probability of replacing a class label by the null class (classifier-free guidance).
    pub label_dropout: f32,
    /// Seed of every random choice.
    pub seed: u64,
    /// β schedule.
    pub beta_schedule: String,
    /// T.
    pub num_train_timesteps: usize,
    /// β₁ of linear-type schedules.
    pub beta_start: f64,
    /// β_T of linear-type schedules.
    pub beta_end: f64,
    /// What the model learns to predict: "epsilon" (ε), "sample" (x₀) or "v_prediction" (v).
    #[serde(default = "default_prediction_type")]
    pub prediction_type: String,
    /// Objective: "simple" (L_simple), "hybrid" (L_simple + λ·L_vlb, stop-gradient on the mean)
    /// or "vlb"; the last two need a learned-variance model (out_channels = 2·in_channels).
    #[serde(default = "default_loss_type")]
    pub loss_type: String,
    /// λ of the hybrid loss (0.001, improved DDPM).
    #[serde(default = "default_vlb_weight")]
    pub vlb_weight: f32,
    /// How t is drawn: "uniform", or "importance" (p_t ∝ √E\[L_t²\] over the last 10 values of
    /// L_t, uniform until every t has 10; the L_vlb term is weighted by 1/(T·p_t)).
    #[serde(default = "default_timestep_sampler")]
    pub timestep_sampler: String,
}

fn default_loss_type() -> String {
    "simple".into()
}

fn default_vlb_weight() -> f32 {
    0.001
}

fn default_timestep_sampler() -> String {
    "uniform".into()
}

fn default_prediction_type() -> String {
    Prediction::Epsilon.diffusers_name().into()
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 128,
            grad_accum: 1,
            lr: 2e-4,
            warmup_steps: 5000,
            clip_grad_norm: Some(1.0),
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            weight_decay: 0.0,
            ema_decay: 0.9999,
            ema_warmup: true,
            hflip: true,
            label_dropout: 0.1,
            seed: 0,
            beta_schedule: "linear".into(),
            num_train_timesteps: 1000,
            beta_start: 1e-4,
            beta_end: 0.02,
            prediction_type: default_prediction_type(),
            loss_type: default_loss_type(),
            vlb_weight: default_vlb_weight(),
            timestep_sampler: default_timestep_sampler(),
        }
    }
}

/// One step's random draws for the whole batch ([`Trainer::step_draws`]).
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct StepDraws {
    /// `[B, C, H, W]` of `x0` and `eps`.
    pub shape: [usize; 4],
    /// Images `[B, C, H, W]`, flipped where the step flips them.
    pub x0: Vec<f32>,
    /// Timestep index of each image `[B]`.
    pub t: Vec<f32>,
    /// Class labels after label dropout `[B]` (empty for an unlabelled dataset).
    pub y: Vec<f32>,
    /// The noise ε `[B, C, H, W]`.
    pub eps: Vec<f32>,
}

impl StepDraws {
    /// Check the draws against the trainer's batch size, its number of timesteps and the
    /// model; returns (C, H, W).
    fn check(&self, batch_size: usize, timesteps: usize, cfg: &UNetConfig) -> Result<(usize, usize, usize)> {
        let [b, c, h, w] = self.shape;
        let n = b * c * h * w;
        let bad = |what: &str, msg: String| Err(Error::shape("step draws", format!("{what}: {msg}")));
        if b != batch_size {
            return bad("batch", format!("{b} items, the trainer's batch size is {batch_size}"));
        }
        if c != cfg.in_channels || h != cfg.sample_size || w != cfg.sample_size {
            return bad(
                "x0",
                format!(
                    "{:?}, the model takes [B, {}, {s}, {s}]",
                    self.shape,
                    cfg.in_channels,
                    s = cfg.sample_size
                ),
            );
        }
        if self.x0.len() != n || self.eps.len() != n {
            return bad(
                "x0/eps",
                format!(
                    "{} and {} values for shape {:?}",
                    self.x0.len(),
                    self.eps.len(),
                    self.shape
                ),
            );
        }
        if self.t.len() != b {
            return bad("t", format!("{} timesteps for {b} items", self.t.len()));
        }
        if let Some(v) = self
            .t
            .iter()
            .find(|&&v| !(v >= 0.0 && v < timesteps as f32 && v.fract() == 0.0))
        {
            return bad("t", format!("{v} is not a timestep index in 0..{timesteps}"));
        }
        if let Some(k) = cfg.num_class_embeds {
            if let Some(v) = self
                .y
                .iter()
                .find(|&&v| !(v >= 0.0 && v < k as f32 && v.fract() == 0.0))
            {
                return bad("y", format!("{v} is not a class in 0..{k}"));
            }
        }
        let conditional = cfg.num_class_embeds.is_some();
        if self.y.len() != if conditional { b } else { 0 } {
            return bad(
                "y",
                format!(
                    "{} labels for {b} items (class-conditional: {conditional})",
                    self.y.len()
                ),
            );
        }
        Ok((c, h, w))
    }

    /// Items `first..first + n` as a micro-batch, with x_t and the training target formed on
    /// the host in f32 from the schedule's f32 tables (as the GPU kernel forms them).
    fn micro_batch(
        &self,
        schedule: &Schedule,
        prediction: Prediction,
        first: usize,
        n: usize,
    ) -> (MicroBatch, Vec<f32>, Vec<f32>) {
        let per = self.shape[1] * self.shape[2] * self.shape[3];
        let (sab, s1m) = (schedule.sqrt_alphas_cumprod(), schedule.sqrt_one_minus_alphas_cumprod());
        let range = first * per..(first + n) * per;
        let (x0, eps) = (&self.x0[range.clone()], &self.eps[range]);
        let t = self.t[first..first + n].to_vec();
        let (mut x_t, mut target) = (Vec::with_capacity(n * per), Vec::with_capacity(n * per));
        for (i, &ti) in t.iter().enumerate() {
            let k = ti as usize; // checked: an index in 0..T
            for j in i * per..(i + 1) * per {
                x_t.push(sab[k] * x0[j] + s1m[k] * eps[j]);
                target.push(match prediction {
                    Prediction::Epsilon => eps[j],
                    Prediction::Sample => x0[j],
                    Prediction::V => sab[k] * eps[j] - s1m[k] * x0[j],
                });
            }
        }
        let y = if self.y.is_empty() {
            Vec::new()
        } else {
            self.y[first..first + n].to_vec()
        };
        let mb = MicroBatch {
            x: x0.to_vec(),
            t,
            y,
            weights: vec![1.0; n],
        };
        (mb, x_t, target)
    }
}

/// Where a step's batch comes from.
#[derive(Clone, Copy)]
enum Batch<'a> {
    /// The trainer's own draws from a dataset.
    Data(&'a Dataset),
    /// Given draws ([`Trainer::train_step_with`]).
    Given(&'a StepDraws),
}

/// The host-side draws of one micro-batch.
struct MicroBatch {
    /// Images `[n, C, H, W]`.
    x: Vec<f32>,
    /// Timestep index of each image.
    t: Vec<f32>,
    /// Class labels (empty for an unlabelled dataset).
    y: Vec<f32>,
    /// Importance weight 1/(T·p_t) of each image (1 for uniform t).
    weights: Vec<f64>,
}

/// Result of one optimizer step.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Step number after this step (1-based).
    pub step: u64,
    /// Mean L_simple over the batch.
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Learning rate used.
    pub lr: f32,
}

/// What [`Trainer::fit`] does besides taking steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitOptions {
    /// Step count to reach: a resumed trainer continues to this total.
    pub steps: u64,
    /// Checkpoint folder ([`Trainer::save`]); `None` writes nothing.
    pub out: Option<PathBuf>,
    /// Save every N steps; 0 saves only at the end and when stopped.
    pub save_every: u64,
    /// Write an EMA sample grid `<out>/samples_<step>.png` every N steps; 0 disables.
    pub sample_every: u64,
    /// Images per sample grid (per class for a class-conditional model).
    pub sample_n: usize,
    /// DDIM steps of each sample grid.
    pub sample_steps: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            steps: 1000,
            out: None,
            save_every: 500,
            sample_every: 0,
            sample_n: 8,
            sample_steps: 20,
        }
    }
}

/// What happened during [`Trainer::fit`], for the caller's progress display.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Progress<'a> {
    /// An optimizer step finished.
    Step {
        /// Loss, gradient norm and learning rate of the step.
        stats: StepStats,
        /// Training throughput since `fit` started.
        images_per_s: f64,
        /// Wall time since `fit` started.
        elapsed: Duration,
    },
    /// A checkpoint was written to `dir` at `step`.
    Saved {
        /// The checkpoint folder.
        dir: &'a Path,
        /// The step it holds.
        step: u64,
    },
    /// A sample grid of the EMA model was written.
    SampleGrid {
        /// The PNG file.
        path: &'a Path,
        /// The step it shows.
        step: u64,
    },
}

/// The progress callback's answer: go on, or stop (after saving a checkpoint when
/// [`FitOptions::out`] is set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Keep training.
    Continue,
    /// Stop now.
    Stop,
}

/// How [`Trainer::fit`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitEnd {
    /// [`FitOptions::steps`] was reached.
    Finished,
    /// The callback answered [`Control::Stop`].
    Stopped,
}

/// SplitMix64 finaliser: a keyed hash used for every host-side random choice.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn key(seed: u64, step: u64, micro: u64, item: u64, what: u64) -> u64 {
    mix(mix(mix(mix(seed ^ what) ^ step) ^ micro) ^ item)
}

/// Every tensor of `p`, in parameter order (the lists `FlatAdam` takes).
fn list(p: &Params) -> Vec<&Tensor> {
    p.tensors().collect()
}

/// The training state: raw weights (in the U-Net), Adam moments, EMA weights and the step.
pub struct Trainer {
    /// The model being trained (raw, non-EMA weights).
    pub unet: UNet,
    /// EMA of the weights (what is shipped and sampled from; [`Trainer::ema_unet`]). Its short
    /// tensors are stale while `flat` holds them, as are those of `m` and `v`.
    ema: Params,
    m: Params,
    v: Params,
    /// The optimizer's flat state, from the first step on (`FlatAdam::write_back` updates
    /// `m`, `v` and `ema` from it).
    flat: Option<optim::FlatAdam>,
    /// Optimizer steps taken.
    pub step: u64,
    /// Options.
    pub config: TrainConfig,
    /// The noise schedule.
    pub schedule: Schedule,
    sqrt_ab: Tensor,
    sqrt_1m_ab: Tensor,
    null_class: Option<u32>,
    prediction: Prediction,
    loss_type: LossType,
    /// The L_t history of importance sampling (`timestep_sampler` "importance").
    pub importance: Option<LossSecondMoment>,
}

impl Trainer {
    /// Start training `unet` (already initialised or loaded).
    pub fn new(ctx: &Context, unet: UNet, config: TrainConfig) -> Result<Self> {
        if config.batch_size == 0 || config.grad_accum == 0 || !config.batch_size.is_multiple_of(config.grad_accum) {
            return Err(Error::arg(
                "--batch-size",
                format!(
                    "{} must be a positive multiple of --grad-accum {}",
                    config.batch_size, config.grad_accum
                ),
            ));
        }
        let schedule = Schedule::new(
            BetaSchedule::parse(&config.beta_schedule)?,
            config.num_train_timesteps,
            config.beta_start,
            config.beta_end,
        )?;
        let prediction = Prediction::parse(&config.prediction_type)?;
        let loss_type = LossType::parse(&config.loss_type)?;
        let ucfg = unet.config();
        let learned = ucfg.out_channels == 2 * ucfg.in_channels;
        if loss_type.learned_variance() != learned {
            return Err(Error::arg(
                "--loss",
                format!(
                    "loss {} needs a model with out_channels = {} (in_channels {}); this one has {}{}",
                    loss_type.name(),
                    if loss_type.learned_variance() {
                        2 * ucfg.in_channels
                    } else {
                        ucfg.in_channels
                    },
                    ucfg.in_channels,
                    ucfg.out_channels,
                    if learned {
                        " (a learned variance: use --loss hybrid or vlb)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let importance = match config.timestep_sampler.as_str() {
            "uniform" => None,
            "importance" if loss_type.learned_variance() => Some(LossSecondMoment::new(config.num_train_timesteps)?),
            "importance" => {
                return Err(Error::arg(
                    "--timestep-sampler",
                    "importance sampling weighs the L_vlb term: it needs --loss hybrid or vlb",
                ))
            }
            other => {
                return Err(Error::arg(
                    "--timestep-sampler",
                    format!("unknown sampler '{other}'; expected uniform or importance"),
                ))
            }
        };
        let sqrt_ab = ctx.upload(&[schedule.len()], &schedule.sqrt_alphas_cumprod())?;
        let sqrt_1m_ab = ctx.upload(&[schedule.len()], &schedule.sqrt_one_minus_alphas_cumprod())?;
        let ema = unet.params.duplicate(ctx)?;
        let m = unet.params.zeros_like(ctx)?;
        let v = unet.params.zeros_like(ctx)?;
        // A class-conditional model trained with label dropout has one extra embedding row,
        // the last, that stands for "no class".
        let null_class = unet
            .config()
            .num_class_embeds
            .filter(|_| config.label_dropout > 0.0)
            .map(|k| k as u32 - 1);
        Ok(Trainer {
            unet,
            ema,
            m,
            v,
            flat: None,
            step: 0,
            config,
            schedule,
            sqrt_ab,
            sqrt_1m_ab,
            null_class,
            prediction,
            loss_type,
            importance,
        })
    }

    /// Build the host-side images (flipped), timesteps and labels of batch items
    /// `first..first + n` of the current step, each drawn from (seed, step, item): a batch split
    /// into micro-batches draws exactly what the whole batch would.
    fn micro_batch(&self, data: &Dataset, first: u64, n: usize) -> MicroBatch {
        let (c, h, w) = (data.channels, data.height, data.width);
        let mut x = Vec::with_capacity(n * c * h * w);
        let mut t = Vec::with_capacity(n);
        let mut y = Vec::with_capacity(n);
        let mut weights = Vec::with_capacity(n);
        let s = self.config.seed;
        for i in first..first + n as u64 {
            let idx = (key(s, self.step, 0, i, 1) % data.len() as u64) as usize;
            let img = data.image(idx);
            let flip = self.config.hflip && key(s, self.step, 0, i, 2) & 1 == 1;
            for row in img.chunks_exact(w) {
                if flip {
                    x.extend(row.iter().rev());
                } else {
                    x.extend_from_slice(row);
                }
            }
            let tk = key(s, self.step, 0, i, 3);
            match &self.importance {
                Some(imp) => {
                    let (ti, w) = imp.sample((tk >> 11) as f64 / (1u64 << 53) as f64);
                    t.push(ti as f32);
                    weights.push(w);
                }
                None => {
                    t.push((tk % self.schedule.len() as u64) as f32);
                    weights.push(1.0);
                }
            }
            if !data.labels.is_empty() {
                let drop_u = (key(s, self.step, 0, i, 4) >> 11) as f64 / (1u64 << 53) as f64;
                let label = match self.null_class {
                    Some(null) if drop_u < self.config.label_dropout as f64 => null,
                    _ => data.labels[idx],
                };
                y.push(label as f32);
            }
        }
        MicroBatch { x, t, y, weights }
    }

    /// Refuse a dataset that does not fit the model (channels, labels, classes).
    fn check_dataset(&self, data: &Dataset, cfg: &UNetConfig) -> Result<()> {
        if data.channels != cfg.in_channels {
            return Err(Error::arg(
                "dataset",
                format!("{} channels, the model expects {}", data.channels, cfg.in_channels),
            ));
        }
        if cfg.num_class_embeds.is_some() && data.labels.is_empty() {
            return Err(Error::arg(
                "dataset",
                "the model is class-conditional but the dataset has no labels",
            ));
        }
        if let Some(k) = cfg.num_class_embeds {
            let needed = data.num_classes + usize::from(self.null_class.is_some());
            if needed > k {
                return Err(Error::arg(
                    "dataset",
                    format!(
                        "{} classes (plus a null class for label dropout) do not fit num_class_embeds = {k}",
                        data.num_classes
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What the next step (`self.step`) draws for the whole batch, as host arrays: the images
    /// x₀ `[B, C, H, W]` after flipping, the timestep of each item `[B]`, the class labels
    /// after label dropout `[B]` (empty for an unlabelled dataset) and the noise ε `[B, C, H, W]`
    /// that [`Trainer::train_step`] mixes into x_t. For parity tests and peer runs that replay
    /// the engine's draws (`benches/peers/torch_train_fmnist.py --draws`); dropout masks are
    /// not included.
    #[doc(hidden)]
    pub fn step_draws(&self, ctx: &Context, data: &Dataset) -> Result<StepDraws> {
        let n = self.config.batch_size;
        let (mb, _, _, _, eps) = self.own_micro_batch(ctx, data, 0, n, Prediction::Epsilon)?;
        Ok(StepDraws {
            shape: [n, data.channels, data.height, data.width],
            x0: mb.x,
            t: mb.t,
            y: mb.y,
            eps: ctx.read(&eps)?,
        })
    }

    /// Items `first..first + n` of the current step as the trainer draws them: the host-side
    /// draws, x₀ and t uploaded, and x_t with the training target (ε, x₀ or v) from the noise
    /// of the whole batch (this micro-batch's elements of it).
    fn own_micro_batch(
        &self,
        ctx: &Context,
        data: &Dataset,
        first: u64,
        n: usize,
        prediction: Prediction,
    ) -> Result<(MicroBatch, Tensor, Tensor, Tensor, Tensor)> {
        let mb = self.micro_batch(data, first, n);
        let x0 = ctx.upload(&[n, data.channels, data.height, data.width], &mb.x)?;
        let t = ctx.upload(&[n], &mb.t)?;
        let noise_seed = key(self.config.seed, self.step, 0, 0, 5);
        let (x_t, target) = ddpm::q_sample_target_at(
            ctx,
            &x0,
            &t,
            &self.sqrt_ab,
            &self.sqrt_1m_ab,
            noise_seed,
            0,
            first * data.image_size() as u64,
            prediction,
        )?;
        Ok((mb, x0, t, x_t, target))
    }

    /// One optimizer step on `data`. Returns the loss and gradient norm; a non-finite loss is
    /// an error and leaves the weights untouched.
    pub fn train_step(&mut self, ctx: &Context, data: &Dataset) -> Result<StepStats> {
        self.step_from(ctx, Batch::Data(data))
    }

    /// [`Trainer::train_step`] on given draws instead of the trainer's own (what
    /// [`Trainer::step_draws`] returns, or a peer framework's): the images, timesteps, labels
    /// and noise of the whole batch, split into micro-batches as the trainer splits its own.
    /// x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε is formed on the host in f32. Dropout masks are still drawn
    /// from the trainer's seed and step; every item has weight 1 (given timesteps carry no
    /// importance weights). For parity tests against PyTorch
    /// (`tests/train.rs`).
    #[doc(hidden)]
    pub fn train_step_with(&mut self, ctx: &Context, draws: &StepDraws) -> Result<StepStats> {
        self.step_from(ctx, Batch::Given(draws))
    }

    fn step_from(&mut self, ctx: &Context, batch: Batch) -> Result<StepStats> {
        let cfg = self.unet.config().clone();
        let conditional = cfg.num_class_embeds.is_some();
        let (c, h, w) = match batch {
            Batch::Data(data) => {
                self.check_dataset(data, &cfg)?;
                (data.channels, data.height, data.width)
            }
            Batch::Given(d) => d.check(self.config.batch_size, self.schedule.len(), &cfg)?,
        };
        let micro_n = self.config.batch_size / self.config.grad_accum;
        let mut grads = Grads::new(self.unet.params.len());
        let mut losses = Vec::new();
        let mut learned = Vec::new();
        for micro in 0..self.config.grad_accum as u64 {
            let first = micro * micro_n as u64;
            let (mb, x0, t, x_t, target) = match batch {
                Batch::Data(data) => self.own_micro_batch(ctx, data, first, micro_n, self.prediction)?,
                Batch::Given(d) => {
                    let (mb, x_t, target) = d.micro_batch(&self.schedule, self.prediction, first as usize, micro_n);
                    let shape = [micro_n, c, h, w];
                    let x0 = ctx.upload(&shape, &mb.x)?;
                    let t = ctx.upload(&[micro_n], &mb.t)?;
                    (mb, x0, t, ctx.upload(&shape, &x_t)?, ctx.upload(&shape, &target)?)
                }
            };
            let (t_host, y, weights) = (mb.t, mb.y, mb.weights);
            let y = if conditional {
                Some(ctx.upload(&[micro_n], &y)?)
            } else {
                None
            };
            // Dropout masks are drawn per micro-batch (they are indexed by tensor element, and
            // the activations' layout depends on the micro-batch size).
            let mode = Mode {
                train: true,
                seed: key(self.config.seed, self.step, micro, 0, 6),
            };
            let (pred, tape) = self.unet.forward_tape(ctx, &x_t, &t, y.as_ref(), mode)?;
            // Submit the forward, so that the adapter runs it while the backward is recorded.
            ctx.flush();
            if self.loss_type.learned_variance() {
                let ts: Vec<usize> = t_host.iter().map(|&v| v as usize).collect();
                let l = hybrid::learned_variance_loss(
                    ctx,
                    &self.schedule,
                    self.prediction,
                    self.loss_type,
                    self.config.vlb_weight as f64,
                    &pred,
                    &target,
                    &x0,
                    &x_t,
                    &ts,
                    &weights,
                    1.0 / self.config.grad_accum as f64,
                )?;
                self.unet.backward(ctx, tape, &l.dout, &mut grads)?;
                learned.push((ts, l));
            } else {
                losses.push(loss::mse_loss(ctx, &pred, &target)?);
                let dpred = loss::mse_loss_backward(ctx, &pred, &target, 1.0 / self.config.grad_accum as f32)?;
                self.unet.backward(ctx, tape, &dpred, &mut grads)?;
            }
        }
        let grad_list: Vec<&Tensor> = (0..grads.len())
            .map(|i| {
                grads
                    .get(i)
                    .ok_or_else(|| Error::Gpu(format!("no gradient for {} (engine bug)", self.unet.params.names()[i])))
            })
            .collect::<Result<_>>()?;
        if self.flat.is_none() {
            self.flat = Some(optim::FlatAdam::new(
                ctx,
                &list(&self.m),
                &list(&self.v),
                &list(&self.ema),
            )?);
        }
        let flat = self.flat.as_ref().expect("set above");
        let norm_sq = flat.gather_grads_norm_sq(ctx, &grad_list)?;
        let mut loss_sum = 0.0f32;
        for l in &losses {
            loss_sum += ctx.read(l)?[0];
        }
        let mut vb_values = Vec::new();
        for (ts, l) in &learned {
            loss_sum += l.value(ctx)? as f32;
            vb_values.extend(ts.iter().copied().zip(ctx.read(&l.vb)?));
        }
        let loss = loss_sum / (losses.len() + learned.len()) as f32;
        let grad_norm = ctx.read(&norm_sq)?[0].sqrt();
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Err(Error::NonFinite {
                step: self.step + 1,
                value: if loss.is_finite() { grad_norm } else { loss },
            });
        }
        let scale = match self.config.clip_grad_norm {
            Some(max) => Some(optim::clip_scale(ctx, &norm_sq, max)?),
            None => None,
        };
        let lr = if self.config.warmup_steps == 0 {
            self.config.lr
        } else {
            self.config.lr * ((self.step + 1) as f32 / self.config.warmup_steps as f32).min(1.0)
        };
        let p = optim::AdamParams {
            lr,
            beta1: self.config.beta1,
            beta2: self.config.beta2,
            eps: self.config.adam_eps,
            weight_decay: self.config.weight_decay,
            step: (self.step + 1) as u32,
        };
        let decay = if self.config.ema_warmup {
            self.config
                .ema_decay
                .min((1.0 + self.step as f32) / (10.0 + self.step as f32))
        } else {
            self.config.ema_decay
        };
        flat.step(
            ctx,
            &list(&self.unet.params),
            &grad_list,
            &list(&self.m),
            &list(&self.v),
            &list(&self.ema),
            &p,
            scale.as_ref(),
            decay,
        )?;
        ctx.flush();
        if let Some(imp) = &mut self.importance {
            for &(t, vb) in &vb_values {
                imp.update(t, vb as f64)?;
            }
        }
        self.step += 1;
        Ok(StepStats {
            step: self.step,
            loss,
            grad_norm,
            lr,
        })
    }

    /// Train until [`FitOptions::steps`], saving and sampling as `opts` asks, and call
    /// `on_progress` after every step, save and sample grid; the callback draws the caller's
    /// own progress display and may stop the run ([`Control::Stop`]). A step that fails (a
    /// non-finite loss, out of memory) returns its error without saving: the last checkpoint
    /// stays the last good one.
    ///
    /// ```no_run
    /// use ddpm_wgpu::{Context, Control, Dataset, FitOptions, Progress, TrainConfig, Trainer, UNet};
    /// # fn main() -> ddpm_wgpu::Result<()> {
    /// let ctx = Context::new()?;
    /// let data = Dataset::open("my_pngs/".as_ref(), None, 3)?;
    /// let mut unet = UNet::new(ddpm_wgpu::diffusion::train::preset_for("small", &data, 0.0)?)?;
    /// unet.init_random(&ctx, 0)?;
    /// let mut trainer = Trainer::new(&ctx, unet, TrainConfig::default())?;
    /// let opts = FitOptions { steps: 100, out: Some("run".into()), ..FitOptions::default() };
    /// trainer.fit(&ctx, &data, &opts, |p| {
    ///     if let Progress::Step { stats, .. } = p {
    ///         println!("step {} loss {:.4}", stats.step, stats.loss);
    ///     }
    ///     Control::Continue
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn fit(
        &mut self,
        ctx: &Context,
        data: &Dataset,
        opts: &FitOptions,
        mut on_progress: impl FnMut(&Progress<'_>) -> Control,
    ) -> Result<FitEnd> {
        if opts.sample_every > 0 && (opts.out.is_none() || opts.sample_n == 0) {
            return Err(Error::arg(
                "sample_every",
                "sample grids need an output folder and sample_n ≥ 1",
            ));
        }
        let started = Instant::now();
        let first_step = self.step;
        while self.step < opts.steps {
            let stats = self.train_step(ctx, data)?;
            let elapsed = started.elapsed();
            let images_per_s =
                (stats.step - first_step) as f64 * self.config.batch_size as f64 / elapsed.as_secs_f64().max(1e-9);
            let mut stop = on_progress(&Progress::Step {
                stats,
                images_per_s,
                elapsed,
            }) == Control::Stop;
            if let Some(out) = &opts.out {
                let step = stats.step;
                let mut saved = false;
                if stop || step == opts.steps || (opts.save_every > 0 && step % opts.save_every == 0) {
                    self.save(ctx, out)?;
                    saved = true;
                    stop |= on_progress(&Progress::Saved { dir: out, step }) == Control::Stop;
                }
                if !stop && opts.sample_every > 0 && step % opts.sample_every == 0 {
                    let path = out.join(format!("samples_{step:06}.png"));
                    self.write_sample_grid(ctx, &path, opts.sample_n, opts.sample_steps, self.config.seed)?;
                    stop |= on_progress(&Progress::SampleGrid { path: &path, step }) == Control::Stop;
                    if stop && !saved {
                        self.save(ctx, out)?;
                        on_progress(&Progress::Saved { dir: out, step });
                    }
                }
            }
            if stop {
                return Ok(FitEnd::Stopped);
            }
        }
        Ok(FitEnd::Finished)
    }

    /// Bring `m`, `v` and `ema` up to date with the optimizer's flat state.
    fn write_back(&self, ctx: &Context) -> Result<()> {
        match &self.flat {
            Some(f) => f.write_back(ctx, &list(&self.m), &list(&self.v), &list(&self.ema)),
            None => Ok(()),
        }
    }

    /// Write a resumable checkpoint into `dir`: `model/` (diffusers folder with the EMA weights
    /// and scheduler_config.json) and `training_state.safetensors` (raw weights, Adam moments,
    /// step and options). Each file is written atomically; the state file last.
    pub fn save(&self, ctx: &Context, dir: &Path) -> Result<()> {
        self.write_back(ctx)?;
        let model_dir = dir.join("model");
        checkpoint::save_folder(ctx, &model_dir, self.unet.config(), &self.ema)?;
        checkpoint::write_atomic(
            &model_dir.join("scheduler_config.json"),
            self.scheduler_config().as_bytes(),
        )?;
        let mut tensors = Vec::new();
        for (prefix, ps) in [
            ("param.", &self.unet.params),
            ("adam_m.", &self.m),
            ("adam_v.", &self.v),
        ] {
            for (name, shape, data) in checkpoint::params_to_host(ctx, ps)? {
                tensors.push((format!("{prefix}{name}"), shape, data));
            }
        }
        if let Some(imp) = &self.importance {
            let (values, counts) = imp.to_host();
            let t = counts.len();
            tensors.push(("importance.values".into(), vec![t, values.len() / t], values));
            tensors.push(("importance.counts".into(), vec![t], counts));
        }
        let mut meta = HashMap::new();
        meta.insert("step".to_string(), self.step.to_string());
        meta.insert(
            "train_config".to_string(),
            serde_json::to_string(&self.config).expect("serialises"),
        );
        let bytes = checkpoint::serialize_f32(&tensors, Some(meta))?;
        checkpoint::write_atomic(&dir.join("training_state.safetensors"), &bytes)
    }

    /// diffusers' DDPMScheduler config for this schedule.
    pub fn scheduler_config(&self) -> String {
        serde_json::to_string_pretty(&serde_json::json!({
            "_class_name": "DDPMScheduler",
            "num_train_timesteps": self.config.num_train_timesteps,
            "beta_start": self.config.beta_start,
            "beta_end": self.config.beta_end,
            "beta_schedule": BetaSchedule::parse(&self.config.beta_schedule).map(|b| b.diffusers_name()).unwrap_or("linear"),
            "variance_type": if self.loss_type.learned_variance() { "learned_range" } else { "fixed_small" },
            "clip_sample": true,
            "prediction_type": self.prediction.diffusers_name(),
            // Not a diffusers field (diffusers ignores it): the class-embedding row trained as
            // "no class" for classifier-free guidance, null without label dropout.
            "null_class": self.null_class,
        }))
        .expect("serialises")
    }

    /// Resume from a checkpoint folder written by [`Trainer::save`], with the stored options:
    /// the next [`Trainer::train_step`] is the one an uninterrupted run would have taken.
    pub fn resume(ctx: &Context, dir: &Path) -> Result<Self> {
        let state_path: PathBuf = dir.join("training_state.safetensors");
        let bytes = std::fs::read(&state_path).map_err(|e| Error::io(&state_path, e))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| Error::Checkpoint {
            path: state_path.clone(),
            msg: format!("not a valid safetensors file ({e}); it may be truncated: resume from an earlier checkpoint"),
        })?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let bad = |msg: &str| Error::Checkpoint {
            path: state_path.clone(),
            msg: msg.into(),
        };
        let step: u64 = meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("metadata 'step' is missing"))?;
        let config: TrainConfig = meta
            .get("train_config")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| bad("metadata 'train_config' is missing or invalid"))?;
        let file = TensorFile::parse(&state_path, &bytes)?;
        let model_dir = dir.join("model");
        let ema_unet = UNet::from_pretrained(ctx, &model_dir)?;
        let mut unet = UNet::new(ema_unet.config().clone())?;
        checkpoint::load_params(ctx, &mut unet.params, &file, "param.")?;
        let mut t = Trainer::new(ctx, unet, config)?;
        t.ema = ema_unet.params;
        checkpoint::load_params(ctx, &mut t.m, &file, "adam_m.")?;
        checkpoint::load_params(ctx, &mut t.v, &file, "adam_v.")?;
        if t.importance.is_some() {
            let (_, values) = file.get("importance.values")?;
            let (_, counts) = file.get("importance.counts")?;
            t.importance = Some(LossSecondMoment::from_host(values, counts).map_err(|e| bad(&e.to_string()))?);
        }
        t.step = step;
        Ok(t)
    }

    /// The EMA model with this run's scheduler, as [`generate::load_model`] would load it from
    /// the checkpoint's `model/` folder (`dir` is only used in messages).
    pub fn ema_model(&self, ctx: &Context, dir: &Path) -> Result<Model> {
        Ok(Model {
            dir: dir.to_path_buf(),
            unet: self.ema_unet(ctx)?,
            scheduler: SchedulerConfig::from_json(&self.scheduler_config())?,
            scheduler_path: None,
        })
    }

    /// Sample the EMA model with DDIM (η = 0, `steps` steps, at most T) from a fixed `seed`, and
    /// write a PNG grid to `path`: for a class-conditional model one row of `n` per class, else
    /// `n` images. With the same seed every grid of a run starts from the same noise, so grids
    /// from successive steps show the model's progress on equal terms.
    pub fn write_sample_grid(&self, ctx: &Context, path: &Path, n: usize, steps: usize, seed: u64) -> Result<()> {
        let model = self.ema_model(ctx, path)?;
        let conditional = self.unet.config().num_class_embeds.is_some();
        let req = SampleRequest {
            sampler: "ddim".into(),
            steps: Some(steps.clamp(1, self.schedule.len())),
            n,
            seed,
            per_class: conditional.then_some(n),
            ..SampleRequest::default()
        };
        let out = generate::sample_model(ctx, &model, &req, |_, _| {})?;
        out.save(path, Format::Png)?;
        Ok(())
    }

    /// The EMA model (what gets sampled from and shipped).
    pub fn ema_unet(&self, ctx: &Context) -> Result<UNet> {
        self.write_back(ctx)?;
        let mut u = UNet::new(self.unet.config().clone())?;
        for i in 0..u.params.len() {
            u.params.set(i, ctx.duplicate(self.ema.get(i), &self.ema.names()[i])?)?;
        }
        Ok(u)
    }
}

/// A model config for training on `data` from a preset name.
pub fn preset_for(preset: &str, data: &Dataset, label_dropout: f32) -> Result<UNetConfig> {
    let mut cfg = UNetConfig::preset(preset)?;
    cfg.in_channels = data.channels;
    cfg.out_channels = data.channels;
    cfg.sample_size = data.height;
    cfg.num_class_embeds = (data.num_classes > 0).then_some(data.num_classes + usize::from(label_dropout > 0.0));
    cfg.validate()?;
    Ok(cfg)
}
