//! The noise-aware classifier of guided diffusion (Dhariwal & Nichol 2021): p_φ(y | x_t, t), the
//! U-Net's encoder (conv_in, timestep embedding, down path, mid block) with a pooled head, trained
//! on images noised by the forward process. Its input gradient ∇ₓ log p_φ(y | x_t, t), computed by
//! the engine's own backward pass, steers sampling (classifier guidance).
//!
//! ```text
//! x_t [B, C, S, S], t → encoder (UNet2DModel's down path + mid block) → [B, C_last, s, s]
//!   → GroupNorm + SiLU (head.norm) → mean over s×s → linear (head.linear) → logits [B, K]
//! ```
//!
//! Stored as a folder: `config.json` ([`NoisyClassifierConfig`]) and `model.safetensors`, the
//! encoder's parameters under diffusers' names, the head's as `head.norm.*`, `head.linear.*`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, TensorFile};
use crate::diffusion::schedule::{BetaSchedule, Schedule};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::nn::classifier::{adam_and_read_loss, fit_epochs};
use crate::nn::config::UNetConfig;
use crate::nn::encoder::{Encoder, EncoderOut, EncoderTape};
use crate::nn::layers::{GroupNorm, Linear, Mode};
use crate::nn::params::{Grads, Params};
use crate::nn::InitRng;
use crate::ops::{ddpm, elementwise as ew, loss};
use crate::tensor::Tensor;

const CONFIG_FILE: &str = "config.json";
const WEIGHTS_FILE: &str = "model.safetensors";
const CLASS_NAME: &str = "NoisyClassifier";

/// The forward process the classifier was trained on (the diffusion model's β schedule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseSchedule {
    /// T.
    pub num_train_timesteps: usize,
    /// diffusers' name of the β schedule (`linear`, `squaredcos_cap_v2`, ...).
    pub beta_schedule: String,
    /// β_1.
    pub beta_start: f64,
    /// β_T.
    pub beta_end: f64,
}

impl NoiseSchedule {
    /// Ho et al.'s: T = 1000, linear β from 1e-4 to 0.02.
    pub fn ddpm() -> Self {
        NoiseSchedule {
            num_train_timesteps: 1000,
            beta_schedule: "linear".into(),
            beta_start: 1e-4,
            beta_end: 0.02,
        }
    }

    /// The β table.
    pub fn schedule(&self) -> Result<Schedule> {
        let kind = BetaSchedule::parse(&self.beta_schedule)?;
        Schedule::new(kind, self.num_train_timesteps, self.beta_start, self.beta_end)
    }
}

/// Shape of a [`NoisyClassifier`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoisyClassifierConfig {
    /// The U-Net whose encoder this is. Its `up_block_types` and `out_channels` are unused;
    /// `num_class_embeds` must be null (the classifier is not told the class).
    pub encoder: UNetConfig,
    /// Output classes.
    pub num_classes: usize,
    /// The forward process of the training images.
    pub noise: NoiseSchedule,
}

impl NoisyClassifierConfig {
    /// The encoder of the `small` U-Net preset (32, 64, 64 channels, attention at 8×8 and in the
    /// mid block) for `in_channels`-channel 32×32 images, no dropout.
    pub fn small(in_channels: usize, num_classes: usize) -> Self {
        let mut encoder = UNetConfig::small(in_channels, None);
        encoder.dropout = 0.0;
        NoisyClassifierConfig {
            encoder,
            num_classes,
            noise: NoiseSchedule::ddpm(),
        }
    }

    /// [`NoisyClassifierConfig::small`] at half the width (16, 32, 32 channels): about a
    /// quarter of the compute, for short runs on a software adapter.
    pub fn tiny(in_channels: usize, num_classes: usize) -> Self {
        let mut c = Self::small(in_channels, num_classes);
        c.encoder.block_out_channels = vec![16, 32, 32];
        c
    }

    fn validate(&self) -> Result<()> {
        self.encoder.validate()?;
        if self.encoder.num_class_embeds.is_some() {
            return Err(Error::Config {
                field: "encoder.num_class_embeds".into(),
                msg: "must be null: the noise-aware classifier is not given the class".into(),
            });
        }
        if self.num_classes < 2 {
            return Err(Error::Config {
                field: "num_classes".into(),
                msg: format!("{}: a classifier needs at least 2 classes", self.num_classes),
            });
        }
        self.noise.schedule().map(drop)
    }
}

/// What [`NoisyClassifier::backward`] needs from [`NoisyClassifier::forward_tape`].
pub struct NoisyClassifierTape {
    encoder: EncoderTape,
    skips: usize,
    h: Tensor,
    stats: Tensor,
    pooled: Tensor,
}

/// p_φ(y | x_t, t): configuration, parameters, layers.
pub struct NoisyClassifier {
    config: NoisyClassifierConfig,
    /// Parameters, by name.
    pub params: Params,
    encoder: Encoder,
    norm: GroupNorm,
    linear: Linear,
}

impl std::fmt::Debug for NoisyClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoisyClassifier")
            .field("config", self.config())
            .finish()
    }
}

impl NoisyClassifier {
    /// Declare the layers of `config` (no storage: initialise or load).
    pub fn new(config: NoisyClassifierConfig) -> Result<Self> {
        config.validate()?;
        let c = &config.encoder;
        let mut params = Params::default();
        let mut stream = 0u32;
        let encoder = Encoder::new(c, &mut params, &mut || {
            stream += 1;
            stream
        });
        let last = *c.block_out_channels.last().expect("validated non-empty");
        let norm = GroupNorm::new(&mut params, "head.norm", last, c.norm_num_groups, c.norm_eps);
        let linear = Linear::new(&mut params, "head.linear", last, config.num_classes);
        Ok(NoisyClassifier {
            config,
            params,
            encoder,
            norm,
            linear,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NoisyClassifierConfig {
        &self.config
    }

    /// PyTorch's default initialisation (as [`crate::UNet::init_random`]; no class embedding).
    pub fn init_random(&mut self, ctx: &Context, seed: u64) -> Result<()> {
        let mut rng = InitRng(seed ^ 0x0057_c1a5);
        for id in 0..self.params.len() {
            let name = self.params.names()[id].clone();
            let shape = self.params.shape(id).to_vec();
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.contains("norm") {
                vec![if name.ends_with(".weight") { 1.0 } else { 0.0 }; n]
            } else {
                let bound = crate::nn::torch_default_bound(&self.params, id);
                (0..n).map(|_| rng.uniform(bound)).collect()
            };
            self.params.set(id, ctx.upload(&shape, &data)?)?;
        }
        Ok(())
    }

    fn check_inputs(&self, x: &Tensor, t: &Tensor) -> Result<usize> {
        let (b, c, h, w) = x.dims4("noisy classifier")?;
        let e = &self.config.encoder;
        let f = 1usize << (e.block_out_channels.len() - 1);
        if c != e.in_channels || h % f != 0 || w % f != 0 {
            return Err(Error::shape(
                "noisy classifier",
                format!(
                    "input {:?}; expected [B, {}, H, W] with H and W multiples of {f}",
                    x.shape(),
                    e.in_channels
                ),
            ));
        }
        t.expect_shape("noisy classifier", "timestep", &[b])?;
        Ok(b)
    }

    /// Logits `[B, K]` of x_t at timesteps `t` `[B]`, and the tape for the backward pass.
    pub fn forward_tape(
        &self,
        ctx: &Context,
        x: &Tensor,
        t: &Tensor,
        mode: Mode,
    ) -> Result<(Tensor, NoisyClassifierTape)> {
        let b = self.check_inputs(x, t)?;
        let ps = &self.params;
        let EncoderOut { h, skips, tape } = self.encoder.forward(ctx, ps, x, t, None, mode)?;
        let (_, c, hh, ww) = h.dims4("encoder output")?;
        let (act, stats) = self.norm.forward(ctx, ps, &h, true)?;
        // Global mean pool: the row sums of [B·C, H·W], scaled by 1/HW.
        let pooled = ew::sum_rows(ctx, &act, b * c, hh * ww, 1.0 / (hh * ww) as f32)?.reshape(&[b, c])?;
        let logits = self.linear.forward(ctx, ps, &pooled)?;
        let tape = NoisyClassifierTape {
            encoder: tape,
            skips: skips.len(),
            h,
            stats,
            pooled,
        };
        Ok((logits, tape))
    }

    /// Logits without a tape.
    pub fn forward(&self, ctx: &Context, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        Ok(self.forward_tape(ctx, x, t, Mode::EVAL)?.0)
    }

    /// Hand-written backward for the logits' gradient `dlogits`: accumulates (`+=`) every
    /// parameter's gradient into `grads`; returns the input gradient when `need_dx`.
    pub fn backward(
        &self,
        ctx: &Context,
        tape: NoisyClassifierTape,
        dlogits: &Tensor,
        grads: &mut Grads,
        need_dx: bool,
    ) -> Result<Option<Tensor>> {
        let ps = &self.params;
        let (_, _, hh, ww) = tape.h.dims4("encoder output")?;
        let dpooled = self
            .linear
            .backward(ctx, ps, grads, &tape.pooled, dlogits, true)?
            .expect("dx requested");
        // d act = d pooled / HW, broadcast over the pixels.
        let zeros = ctx.empty(tape.h.shape(), "noisy_classifier.pool_backward")?;
        ew::fill(ctx, &zeros, 0.0)?;
        let dact = ew::add_channel_bias(ctx, &zeros, &ew::scale(ctx, &dpooled, 1.0 / (hh * ww) as f32)?)?;
        let dh = self.norm.backward(ctx, ps, grads, &tape.h, &tape.stats, &dact, true)?;
        self.encoder
            .backward(ctx, ps, grads, tape.encoder, dh, vec![None; tape.skips], None, need_dx)
    }

    /// ∇ₓ log p_φ(y | x_t, t) for each sample, `[B, C, H, W]` (samples are independent, so
    /// the gradient of Σ_b log p(y_b | x_b) is each sample's own). `labels` `[B]` holds class
    /// indices as f32. Stays on the GPU (no readback).
    pub fn grad_log_prob(&self, ctx: &Context, x: &Tensor, t: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let (logits, tape) = self.forward_tape(ctx, x, t, Mode::EVAL)?;
        let b = x.shape()[0];
        // The cross-entropy kernel gives (softmax − onehot)·scale/B, and ∂ log p_y/∂z = onehot −
        // softmax: scale −B.
        let xent = loss::softmax_cross_entropy(ctx, &logits, labels, -(b as f32))?;
        let mut grads = Grads::new(self.params.len());
        let dx = self.backward(ctx, tape, &xent.dlogits, &mut grads, true)?;
        Ok(dx.expect("input gradient requested"))
    }

    /// Load a classifier folder written by [`NoisyClassifier::save`].
    pub fn load(ctx: &Context, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::Checkpoint {
            path: cfg_path.clone(),
            msg: format!("cannot read it ({e}); expected a noise-aware classifier folder written by `ddpm train-classifier --noisy`"),
        })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path: cfg_path.clone(),
            msg: format!("not valid JSON: {e}"),
        })?;
        if v.get("_class_name").and_then(|c| c.as_str()) != Some(CLASS_NAME) {
            return Err(Error::Checkpoint {
                path: cfg_path,
                msg: format!(
                    "_class_name is not \"{CLASS_NAME}\": not a noise-aware classifier (train one with \
                     `ddpm train-classifier --noisy`)"
                ),
            });
        }
        let bad = |msg: String| Error::Checkpoint {
            path: cfg_path.clone(),
            msg,
        };
        // The encoder is a diffusers UNet2DModel config: read with the same checks and defaults.
        let encoder = v
            .get("encoder")
            .ok_or_else(|| bad("no \"encoder\" (the UNet2DModel config of the encoder)".into()))
            .and_then(|e| UNetConfig::from_json(&e.to_string()).map_err(|e| bad(format!("encoder: {e}"))))?;
        let num_classes = v
            .get("num_classes")
            .and_then(|k| k.as_u64())
            .ok_or_else(|| bad("no \"num_classes\" (a positive integer)".into()))? as usize;
        let noise: NoiseSchedule = v
            .get("noise")
            .cloned()
            .ok_or_else(|| bad("no \"noise\" (the training β schedule)".into()))
            .and_then(|n| serde_json::from_value(n).map_err(|e| bad(format!("noise: {e}"))))?;
        let config = NoisyClassifierConfig {
            encoder,
            num_classes,
            noise,
        };
        let mut model = NoisyClassifier::new(config).map_err(|e| Error::Checkpoint {
            path: cfg_path,
            msg: e.to_string(),
        })?;
        let file = TensorFile::read(&dir.join(WEIGHTS_FILE))?;
        checkpoint::load_params(ctx, &mut model.params, &file, "")?;
        Ok(model)
    }

    /// Write the folder (each file atomically).
    pub fn save(&self, ctx: &Context, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let host = checkpoint::params_to_host(ctx, &self.params)?;
        let bytes = checkpoint::serialize_f32(&host, None)?;
        checkpoint::write_atomic(&dir.join(WEIGHTS_FILE), &bytes)?;
        let encoder: serde_json::Value = serde_json::from_str(&self.config.encoder.to_json()).expect("config JSON");
        let v = serde_json::json!({
            "_class_name": CLASS_NAME,
            "num_classes": self.config.num_classes,
            "noise": self.config.noise,
            "encoder": encoder,
        });
        let json = serde_json::to_string_pretty(&v).expect("plain value");
        checkpoint::write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())
    }
}

/// Adam on the noise-aware classifier: each step draws t ~ U{0..T−1} per image and
/// x_t ~ q(x_t | x_0) (noise drawn in the kernel), and minimises the cross-entropy of the label.
pub struct NoisyClassifierTrainer {
    /// The model being trained.
    pub model: NoisyClassifier,
    schedule: Schedule,
    sqrt_ab: Tensor,
    sqrt_1mab: Tensor,
    seed: u64,
    batch_size: usize,
    lr: f32,
    m: Params,
    v: Params,
    step: u32,
}

impl NoisyClassifierTrainer {
    /// A freshly initialised model, batches of `batch_size`, peak learning rate `lr` (decays
    /// linearly to 0 over [`NoisyClassifierTrainer::fit`]).
    pub fn new(ctx: &Context, config: NoisyClassifierConfig, batch_size: usize, lr: f32, seed: u64) -> Result<Self> {
        let schedule = config.noise.schedule()?;
        let mut model = NoisyClassifier::new(config)?;
        model.init_random(ctx, seed)?;
        let t = schedule.len();
        let sqrt_ab = ctx.upload(&[t], &schedule.sqrt_alphas_cumprod())?;
        let sqrt_1mab = ctx.upload(&[t], &schedule.sqrt_one_minus_alphas_cumprod())?;
        let m = model.params.zeros_like(ctx)?;
        let v = model.params.zeros_like(ctx)?;
        Ok(NoisyClassifierTrainer {
            model,
            schedule,
            sqrt_ab,
            sqrt_1mab,
            seed,
            batch_size,
            lr,
            m,
            v,
            step: 0,
        })
    }

    /// One Adam step on clean host images `x0` (`[b, C, S, S]` flattened, in [−1, 1]) with
    /// labels `y`: returns the batch's mean cross-entropy (read back, so a NaN stops at once).
    pub fn step(&mut self, ctx: &Context, x0: &[f32], y: &[u32], lr: f32) -> Result<f32> {
        let c = &self.model.config;
        let (k, e) = (c.num_classes, &c.encoder);
        let b = y.len();
        if let Some(&bad) = y.iter().find(|&&l| l as usize >= k) {
            return Err(Error::arg(
                "labels",
                format!("label {bad} is outside the classifier's {k} classes"),
            ));
        }
        let s = e.sample_size;
        let x0 = ctx.upload(&[b, e.in_channels, s, s], x0)?;
        // Timesteps keyed by (seed, step, item): the same run draws the same t on any adapter.
        let mut rng = InitRng(crate::diffusion::train::key(self.seed, self.step as u64, 0, 0, 7));
        let tt = self.schedule.len();
        let ts: Vec<f32> = (0..b)
            .map(|_| ((rng.next_f64() * tt as f64) as usize).min(tt - 1) as f32)
            .collect();
        let t = ctx.upload(&[b], &ts)?;
        let (x_t, _noise) = ddpm::q_sample(ctx, &x0, &t, &self.sqrt_ab, &self.sqrt_1mab, self.seed, 1 + self.step)?;
        let yf: Vec<f32> = y.iter().map(|&l| l as f32).collect();
        let yt = ctx.upload(&[b], &yf)?;
        let (logits, tape) = self.model.forward_tape(ctx, &x_t, &t, Mode::EVAL)?;
        let xent = loss::softmax_cross_entropy(ctx, &logits, &yt, 1.0)?;
        let mut grads = Grads::new(self.model.params.len());
        self.model.backward(ctx, tape, &xent.dlogits, &mut grads, false)?;
        self.step += 1;
        adam_and_read_loss(
            ctx,
            &self.model.params,
            &grads,
            [&self.m, &self.v],
            lr,
            self.step,
            &xent.loss,
        )
    }

    /// Train for `epochs` passes over `images`/`labels` (shuffled each epoch), calling
    /// `progress(step, total_steps, loss)` after each step.
    pub fn fit(
        &mut self,
        ctx: &Context,
        images: &[f32],
        labels: &[u32],
        epochs: f64,
        progress: impl FnMut(u32, u32, f32),
    ) -> Result<()> {
        let (b, lr, seed) = (self.batch_size, self.lr, self.seed);
        fit_epochs(images, labels, b, epochs, seed, progress, |xb, yb, step, total| {
            let lr = lr * (1.0 - step as f32 / total as f32);
            self.step(ctx, xb, yb, lr)
        })
    }

    /// Accuracy of the classifier on host images noised to timestep `t` (seeded): the share
    /// of `images` whose label is the arg-max, in batches of `batch`.
    pub fn accuracy_at(&self, ctx: &Context, images: &[f32], labels: &[u32], t: usize, batch: usize) -> Result<f64> {
        accuracy_at(ctx, &self.model, images, labels, t, batch, self.seed)
    }
}

/// Accuracy of `model` on host images noised to timestep `t` with noise from `seed`.
pub fn accuracy_at(
    ctx: &Context,
    model: &NoisyClassifier,
    images: &[f32],
    labels: &[u32],
    t: usize,
    batch: usize,
    seed: u64,
) -> Result<f64> {
    let c = model.config();
    let e = &c.encoder;
    let per = e.in_channels * e.sample_size * e.sample_size;
    let n = labels.len();
    if n == 0 || images.len() != n * per || batch == 0 {
        return Err(Error::shape(
            "noisy classifier accuracy",
            format!("{} values for {n} labels of {per}-value images", images.len()),
        ));
    }
    let schedule = c.noise.schedule()?;
    if t >= schedule.len() {
        return Err(Error::arg("t", format!("{t}: expected 0..{}", schedule.len())));
    }
    let sqrt_ab = ctx.upload(&[schedule.len()], &schedule.sqrt_alphas_cumprod())?;
    let sqrt_1mab = ctx.upload(&[schedule.len()], &schedule.sqrt_one_minus_alphas_cumprod())?;
    let mut correct = 0usize;
    for (i, lo) in (0..n).step_by(batch).enumerate() {
        let hi = (lo + batch).min(n);
        let x0 = ctx.upload(
            &[hi - lo, e.in_channels, e.sample_size, e.sample_size],
            &images[lo * per..hi * per],
        )?;
        let tt = ctx.upload(&[hi - lo], &vec![t as f32; hi - lo])?;
        let (x_t, _) = ddpm::q_sample(ctx, &x0, &tt, &sqrt_ab, &sqrt_1mab, seed ^ 0xacc, i as u32)?;
        let z = ctx.read(&model.forward(ctx, &x_t, &tt)?)?;
        correct += z
            .chunks_exact(c.num_classes)
            .zip(&labels[lo..hi])
            .filter(|(row, &l)| crate::nn::argmax(row) == l)
            .count();
    }
    Ok(correct as f64 / n as f64)
}
