//! A small convolutional image classifier, trained and run by the engine's own kernels: the
//! feature extractor behind `ddpm eval --fd` (Fréchet distance) and the judge of guided samples.
//!
//! ```text
//! x [B, C, S, S] → conv0 3×3 s1 → SiLU → conv1 3×3 s2 → SiLU → conv2 3×3 s2 → SiLU
//!   → conv3 3×3 s2 → SiLU → flatten [B, c3·(S/8)²] → fc1 → SiLU = features [B, F] → fc2 = logits
//! ```
//!
//! Stored as a folder: `config.json` ([`ClassifierConfig`]) and `model.safetensors` (parameters
//! named `conv0.weight`, …, `fc2.bias`, PyTorch layouts).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, TensorFile};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::nn::layers::{Conv, Linear};
use crate::nn::params::{Grads, Params};
use crate::nn::InitRng;
use crate::ops::conv2d::Conv2dParams;
use crate::ops::{elementwise as ew, loss, optim};
use crate::tensor::Tensor;

const CONFIG_FILE: &str = "config.json";
const WEIGHTS_FILE: &str = "model.safetensors";

/// Shape of a [`Classifier`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Image height and width (a multiple of 8).
    pub image_size: usize,
    /// Output classes.
    pub num_classes: usize,
    /// Output channels of conv0..conv3.
    pub channels: [usize; 4],
    /// Width of the feature layer (fc1).
    pub features: usize,
}

impl ClassifierConfig {
    /// The Fashion-MNIST classifier: 32×32 grey images (28×28 padded), 10 classes.
    pub fn fashion_mnist() -> Self {
        ClassifierConfig {
            in_channels: 1,
            image_size: 32,
            num_classes: 10,
            channels: [32, 32, 64, 64],
            features: 128,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::Config {
                field: "classifier".into(),
                msg,
            })
        };
        if self.image_size == 0 || !self.image_size.is_multiple_of(8) {
            return bad(format!(
                "image_size {} must be a positive multiple of 8",
                self.image_size
            ));
        }
        if self.in_channels == 0 || self.num_classes == 0 || self.features == 0 || self.channels.contains(&0) {
            return bad(format!("every size must be at least 1: {self:?}"));
        }
        Ok(())
    }
}

/// What [`Classifier::forward_tape`] keeps for the backward pass.
pub struct ClassifierTape {
    x: Tensor,
    pre: Vec<Tensor>,
    act: Vec<Tensor>,
    flat: Tensor,
    h: Tensor,
    /// Features (SiLU of fc1), `[B, features]`.
    pub features: Tensor,
    /// Logits, `[B, num_classes]`.
    pub logits: Tensor,
}

/// The classifier: configuration, parameters and layers.
pub struct Classifier {
    config: ClassifierConfig,
    /// Parameters, by name.
    pub params: Params,
    convs: Vec<Conv>,
    fc1: Linear,
    fc2: Linear,
}

impl Classifier {
    /// Declare the layers of `config` (no storage: call [`Classifier::init_random`] or load).
    pub fn new(config: ClassifierConfig) -> Result<Self> {
        config.validate()?;
        let mut params = Params::default();
        let mut convs = Vec::new();
        let mut cin = config.in_channels;
        for (i, &c) in config.channels.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            convs.push(Conv::new(
                &mut params,
                &format!("conv{i}"),
                cin,
                c,
                3,
                Conv2dParams::new(stride, 1),
            ));
            cin = c;
        }
        let side = config.image_size / 8;
        let fc1 = Linear::new(&mut params, "fc1", cin * side * side, config.features);
        let fc2 = Linear::new(&mut params, "fc2", config.features, config.num_classes);
        Ok(Classifier {
            config,
            params,
            convs,
            fc1,
            fc2,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    /// PyTorch's default initialisation: weights and biases U(−1/√fan_in, 1/√fan_in).
    pub fn init_random(&mut self, ctx: &Context, seed: u64) -> Result<()> {
        let mut rng = InitRng(seed ^ 0x0c1a_551f);
        for id in 0..self.params.len() {
            let shape = self.params.shape(id).to_vec();
            let bound = crate::nn::torch_default_bound(&self.params, id);
            let data: Vec<f32> = (0..shape.iter().product()).map(|_| rng.uniform(bound)).collect();
            self.params.set(id, ctx.upload(&shape, &data)?)?;
        }
        Ok(())
    }

    fn check_input(&self, x: &Tensor) -> Result<usize> {
        let (b, c, h, w) = x.dims4("classifier")?;
        let s = self.config.image_size;
        if c != self.config.in_channels || h != s || w != s {
            return Err(Error::shape(
                "classifier",
                format!(
                    "input {:?}; the classifier takes [B, {}, {s}, {s}]",
                    x.shape(),
                    self.config.in_channels
                ),
            ));
        }
        Ok(b)
    }

    /// Forward pass keeping what the backward needs.
    pub fn forward_tape(&self, ctx: &Context, x: &Tensor) -> Result<ClassifierTape> {
        let b = self.check_input(x)?;
        let (mut pre, mut act) = (Vec::new(), Vec::new());
        let mut cur = x.clone();
        for conv in &self.convs {
            let y = conv.forward(ctx, &self.params, &cur)?;
            let a = ew::silu(ctx, &y)?;
            pre.push(y);
            act.push(a.clone());
            cur = a;
        }
        let flat = cur.reshape(&[b, cur.numel() / b])?;
        let h = self.fc1.forward(ctx, &self.params, &flat)?;
        let features = ew::silu(ctx, &h)?;
        let logits = self.fc2.forward(ctx, &self.params, &features)?;
        Ok(ClassifierTape {
            x: x.clone(),
            pre,
            act,
            flat,
            h,
            features,
            logits,
        })
    }

    /// Hand-written backward: accumulates every parameter gradient into `grads`.
    pub fn backward(&self, ctx: &Context, tape: ClassifierTape, dlogits: &Tensor, grads: &mut Grads) -> Result<()> {
        let dfeat = self
            .fc2
            .backward(ctx, &self.params, grads, &tape.features, dlogits, true)?
            .expect("dx requested");
        let dh = ew::silu_backward(ctx, &tape.h, &dfeat)?;
        let dflat = self
            .fc1
            .backward(ctx, &self.params, grads, &tape.flat, &dh, true)?
            .expect("dx requested");
        let mut da = dflat.reshape(tape.act.last().expect("four convs").shape())?;
        for i in (0..self.convs.len()).rev() {
            let dy = ew::silu_backward(ctx, &tape.pre[i], &da)?;
            let input = if i == 0 { &tape.x } else { &tape.act[i - 1] };
            match self.convs[i].backward(ctx, &self.params, grads, input, &dy, i > 0)? {
                Some(dx) => da = dx,
                None => break,
            }
        }
        Ok(())
    }

    /// Logits and features of a batch (no tape kept).
    pub fn forward(&self, ctx: &Context, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = self.forward_tape(ctx, x)?;
        Ok((t.logits, t.features))
    }

    /// Run host images `[n, C, S, S]` through the classifier in batches: (features `n × F`,
    /// predicted class of each image).
    pub fn embed(&self, ctx: &Context, images: &[f32], batch: usize) -> Result<(Vec<f32>, Vec<u32>)> {
        let c = &self.config;
        let per = c.in_channels * c.image_size * c.image_size;
        if per == 0 || !images.len().is_multiple_of(per) || batch == 0 {
            return Err(Error::shape(
                "classifier.embed",
                format!("{} values are not a whole number of {per}-value images", images.len()),
            ));
        }
        let n = images.len() / per;
        let (mut feats, mut preds) = (Vec::with_capacity(n * c.features), Vec::with_capacity(n));
        for lo in (0..n).step_by(batch) {
            let hi = (lo + batch).min(n);
            let x = ctx.upload(
                &[hi - lo, c.in_channels, c.image_size, c.image_size],
                &images[lo * per..hi * per],
            )?;
            let (logits, f) = self.forward(ctx, &x)?;
            feats.extend(ctx.read(&f)?);
            let z = ctx.read(&logits)?;
            preds.extend(z.chunks_exact(c.num_classes).map(argmax));
        }
        Ok((feats, preds))
    }

    /// Load a classifier folder (config.json + model.safetensors).
    pub fn load(ctx: &Context, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        if !cfg_path.is_file() {
            return Err(Error::Checkpoint {
                path: dir.into(),
                msg: format!(
                    "no {CONFIG_FILE} here; expected a classifier folder written by `ddpm train-classifier` \
                     (the shipped one is assets/fmnist-classifier)"
                ),
            });
        }
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let config: ClassifierConfig = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path: cfg_path.clone(),
            msg: format!("not a classifier config: {e}"),
        })?;
        let mut model = Classifier::new(config).map_err(|e| Error::Checkpoint {
            path: cfg_path,
            msg: e.to_string(),
        })?;
        let file = TensorFile::read(&dir.join(WEIGHTS_FILE))?;
        checkpoint::load_params(ctx, &mut model.params, &file, "")?;
        Ok(model)
    }

    /// Write the classifier folder (each file atomically).
    pub fn save(&self, ctx: &Context, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let host = checkpoint::params_to_host(ctx, &self.params)?;
        let bytes = checkpoint::serialize_f32(&host, None)?;
        checkpoint::write_atomic(&dir.join(WEIGHTS_FILE), &bytes)?;
        let json = serde_json::to_string_pretty(&self.config).expect("plain struct");
        checkpoint::write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(z: &[f32]) -> u32 {
    let mut best = 0;
    for (j, &v) in z.iter().enumerate() {
        if v > z[best] {
            best = j;
        }
    }
    best as u32
}

/// Options of [`ClassifierTrainer`].
#[derive(Clone, Debug)]
pub struct ClassifierTrainOptions {
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate (Adam); decays linearly to 0 at the last step.
    pub lr: f32,
    /// Seed of the initialisation and of the shuffling.
    pub seed: u64,
}

/// Adam on the classifier with softmax cross-entropy: one [`ClassifierTrainer::step`] per batch.
pub struct ClassifierTrainer {
    /// The model being trained.
    pub model: Classifier,
    opts: ClassifierTrainOptions,
    m: Params,
    v: Params,
    step: u32,
}

impl ClassifierTrainer {
    /// A freshly initialised model.
    pub fn new(ctx: &Context, config: ClassifierConfig, opts: ClassifierTrainOptions) -> Result<Self> {
        let mut model = Classifier::new(config)?;
        model.init_random(ctx, opts.seed)?;
        let m = model.params.zeros_like(ctx)?;
        let v = model.params.zeros_like(ctx)?;
        Ok(ClassifierTrainer {
            model,
            opts,
            m,
            v,
            step: 0,
        })
    }

    /// One Adam step on host images `x` (`[b, C, S, S]` flattened) with labels `y`, learning
    /// rate `lr`; returns the batch's mean loss (read back, so a NaN stops the caller at once).
    pub fn step(&mut self, ctx: &Context, x: &[f32], y: &[u32], lr: f32) -> Result<f32> {
        let c = self.model.config().clone();
        let b = y.len();
        if let Some(&bad) = y.iter().find(|&&l| l as usize >= c.num_classes) {
            return Err(Error::arg(
                "labels",
                format!("label {bad} is outside the classifier's {} classes", c.num_classes),
            ));
        }
        let xt = ctx.upload(&[b, c.in_channels, c.image_size, c.image_size], x)?;
        let yf: Vec<f32> = y.iter().map(|&l| l as f32).collect();
        let yt = ctx.upload(&[b], &yf)?;
        let tape = self.model.forward_tape(ctx, &xt)?;
        let xent = loss::softmax_cross_entropy(ctx, &tape.logits, &yt, 1.0)?;
        let mut grads = Grads::new(self.model.params.len());
        self.model.backward(ctx, tape, &xent.dlogits, &mut grads)?;
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

    /// Train for `epochs` passes over `images`/`labels` (shuffled each epoch with the seed; a
    /// fraction cuts the last pass short), calling `progress(step, total_steps, loss)` after
    /// each step.
    pub fn fit(
        &mut self,
        ctx: &Context,
        images: &[f32],
        labels: &[u32],
        epochs: f64,
        progress: impl FnMut(u32, u32, f32),
    ) -> Result<()> {
        let (b, lr0, seed) = (self.opts.batch_size, self.opts.lr, self.opts.seed);
        fit_epochs(images, labels, b, epochs, seed, progress, |xb, yb, step, total| {
            let lr = lr0 * (1.0 - step as f32 / total as f32);
            self.step(ctx, xb, yb, lr)
        })
    }
}

/// The end of a classifier training step: Adam (β 0.9, 0.999, ε 1e-8, no weight decay) on every
/// parameter with moments `mv`, then the batch's mean `loss` read back, so that a NaN stops the
/// caller at once.
pub(crate) fn adam_and_read_loss(
    ctx: &Context,
    params: &Params,
    grads: &Grads,
    mv: [&Params; 2],
    lr: f32,
    step: u32,
    loss: &Tensor,
) -> Result<f32> {
    let p = optim::AdamParams {
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step,
    };
    for i in 0..params.len() {
        let g = grads.get(i).expect("every parameter gets a gradient");
        optim::adam_step(ctx, params.get(i), g, mv[0].get(i), mv[1].get(i), &p, None)?;
    }
    ctx.flush();
    let loss = ctx.read(loss)?[0];
    if !loss.is_finite() {
        return Err(Error::NonFinite {
            step: step as u64,
            value: loss,
        });
    }
    Ok(loss)
}

/// The epoch loop shared by the classifiers' trainers: `epochs` (fractional: the last epoch is
/// cut short) passes over `images`/`labels` in batches of `batch`, shuffled each epoch from
/// `seed`; `step(x, y, step_index, total_steps)` trains on one batch and returns its loss, then
/// `progress(step_index + 1, total_steps, loss)` is called.
pub(crate) fn fit_epochs(
    images: &[f32],
    labels: &[u32],
    batch: usize,
    epochs: f64,
    seed: u64,
    mut progress: impl FnMut(u32, u32, f32),
    mut step: impl FnMut(&[f32], &[u32], u32, u32) -> Result<f32>,
) -> Result<()> {
    let n = labels.len();
    let per = images.len() / n.max(1);
    let b = batch.max(1);
    let steps_per_epoch = n / b;
    if steps_per_epoch == 0 {
        return Err(Error::arg(
            "--batch-size",
            format!("{b} is larger than the {n} training images"),
        ));
    }
    if !(epochs > 0.0 && epochs.is_finite()) {
        return Err(Error::arg("--epochs", format!("{epochs}: expected a positive number")));
    }
    let total = ((steps_per_epoch as f64 * epochs).round() as u32).max(1);
    let mut rng = InitRng(seed ^ 0x5eed_0f0d);
    let (mut xb, mut yb) = (Vec::with_capacity(b * per), Vec::with_capacity(b));
    let mut done = 0u32;
    while done < total {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, (rng.next_f64() * (i + 1) as f64) as usize % (i + 1));
        }
        for chunk in order.chunks_exact(b) {
            if done == total {
                break;
            }
            xb.clear();
            yb.clear();
            for &i in chunk {
                xb.extend_from_slice(&images[i * per..(i + 1) * per]);
                yb.push(labels[i]);
            }
            let loss = step(&xb, &yb, done, total)?;
            done += 1;
            progress(done, total, loss);
        }
    }
    Ok(())
}
