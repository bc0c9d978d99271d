//! Samplers: DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), DDIM (Song et al. 2021) and
//! DPM-Solver++(2M) (Lu et al. 2022), step-for-step as diffusers' `DDPMScheduler`,
//! `DDIMScheduler` and `DPMSolverMultistepScheduler` compute them. Coefficients are computed in
//! f64 on the host; each step is one fused kernel ([`crate::ops::ddpm::sampler_update`]) and
//! nothing is read back until the images are done.
//!
//! Every sampler takes any prediction type (ε, x₀ or v, [`Prediction`]): x̂₀ and ε̂ are linear in
//! (x_t, model output), so the conversion is folded into the fused kernel's coefficients. DDPM
//! also takes improved DDPM's learned variance (`variance_type` "learned_range": a model with
//! 2·C output channels, ε then v; Σθ = exp(frac·log β_t + (1 − frac)·log β̃_t), frac = (v + 1)/2).
//!
//! [`Sampler::Sde`] holds the score-SDE and Langevin samplers of [`crate::diffusion::sde`]:
//! [`sample_with`] runs them through the same model call ([`GuidedUNet`]).

use crate::diffusion::schedule::{Prediction, Schedule};
use crate::diffusion::sde::{self, Denoiser, SdeOptions, SdeSampler};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::nn::{NoisyClassifier, UNet};
use crate::ops::ddpm::{self, SamplerCoefs};
use crate::ops::{elementwise as ew, random};
use crate::tensor::Tensor;

/// Variance of the DDPM reverse step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variance {
    /// σ²_t = β̃_t, the posterior variance (diffusers' "fixed_small").
    FixedSmall,
    /// σ²_t = β_t (diffusers' "fixed_large").
    FixedLarge,
    /// log σ²_t = frac·log β_t + (1 − frac)·log β̃_t, frac = (v + 1)/2 with v the model's second
    /// C output channels (Nichol & Dhariwal 2021, eq. 15; diffusers' "learned_range").
    LearnedRange,
}

/// How inference timesteps are picked from 0..T (diffusers' `timestep_spacing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// (0, r, 2r, ...) with r = T / steps, reversed.
    Leading,
    /// round(T, T − r, ...) − 1.
    Trailing,
    /// round(linspace(0, T − 1, steps)), reversed.
    Linspace,
}

impl Spacing {
    /// Parse diffusers' name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            "linspace" => Ok(Spacing::Linspace),
            other => Err(Error::arg(
                "--spacing",
                format!("'{other}': expected leading, trailing or linspace"),
            )),
        }
    }
}

/// A sampler and its options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    /// Ancestral sampling.
    Ddpm {
        /// σ_t choice.
        variance: Variance,
        /// Clip the predicted x₀ to [−1, 1].
        clip: bool,
    },
    /// DDIM with stochasticity η (0 = deterministic).
    Ddim {
        /// η.
        eta: f64,
        /// Clip the predicted x₀ to [−1, 1].
        clip: bool,
    },
    /// DPM-Solver++ (2M), multistep second order, first order at the first and last step.
    DpmSolverPP,
    /// A score-SDE or Langevin sampler ([`crate::diffusion::sde`]); it has no [`plan`] of this
    /// module (see [`sde::plan`]).
    Sde(SdeSampler),
}

fn check_steps(t_train: usize, steps: usize) -> Result<()> {
    if steps == 0 || steps > t_train {
        return Err(Error::arg(
            "--steps",
            format!("{steps}: expected 1..={t_train} (the model's T)"),
        ));
    }
    Ok(())
}

/// numpy's `linspace(0, stop, num)[i]`: `i · (stop / (num − 1))`, the last value exactly `stop`.
fn np_linspace(stop: f64, num: usize, i: usize) -> f64 {
    if num == 1 {
        0.0
    } else if i == num - 1 {
        stop
    } else {
        i as f64 * (stop / (num - 1) as f64)
    }
}

/// diffusers' inference timesteps for `steps` of `t_train` (`DDPMScheduler` / `DDIMScheduler`
/// `set_timesteps`, steps_offset 0), largest first. numpy rounds half to even, and so do we.
pub fn timesteps(spacing: Spacing, t_train: usize, steps: usize) -> Result<Vec<usize>> {
    check_steps(t_train, steps)?;
    Ok(match spacing {
        // (arange(steps) · (T // steps))[::-1]
        Spacing::Leading => {
            let r = t_train / steps;
            (0..steps).rev().map(|i| i * r).collect()
        }
        // round(arange(T, 0, −T/steps)) − 1
        Spacing::Trailing => {
            let r = t_train as f64 / steps as f64;
            (0..steps)
                .map(|i| ((t_train as f64 - i as f64 * r).round_ties_even() as usize).saturating_sub(1))
                .collect()
        }
        // round(linspace(0, T − 1, steps))[::-1]
        Spacing::Linspace => (0..steps)
            .rev()
            .map(|i| np_linspace((t_train - 1) as f64, steps, i).round_ties_even() as usize)
            .collect(),
    })
}

/// `DPMSolverMultistepScheduler.set_timesteps`: the spacings are taken over `steps + 1` points
/// and the last (0 for linspace/leading) dropped; repeated values (only when steps ≈ T) are
/// removed as diffusers does.
pub fn dpm_timesteps(spacing: Spacing, t_train: usize, steps: usize) -> Result<Vec<usize>> {
    check_steps(t_train, steps)?;
    let mut ts: Vec<usize> = match spacing {
        // round(linspace(0, T − 1, steps + 1))[::-1][:-1]
        Spacing::Linspace => (1..=steps)
            .rev()
            .map(|i| np_linspace((t_train - 1) as f64, steps + 1, i).round_ties_even() as usize)
            .collect(),
        // (arange(steps + 1) · (T // (steps + 1)))[::-1][:-1]
        Spacing::Leading => {
            let r = t_train / (steps + 1);
            (1..=steps).rev().map(|i| i * r).collect()
        }
        Spacing::Trailing => timesteps(Spacing::Trailing, t_train, steps)?,
    };
    ts.dedup();
    Ok(ts)
}

/// One step's fused-update coefficients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// The model is evaluated at this timestep.
    pub t: usize,
    /// The update.
    pub coefs: SamplerCoefs,
}

/// The fused coefficients of one step from its f64 weights of x_t, x̂₀ and ε̂: x̂₀ and ε̂ follow
/// from (x_t, m) by `prediction` at ᾱ_t, and ε̂'s share of x_t moves into c_x.
#[allow(clippy::too_many_arguments)]
fn coefs(
    prediction: Prediction,
    abar: f64,
    clip: bool,
    c_x: f64,
    c_x0: f64,
    c_eps: f64,
    c_prev: f64,
    sigma: f64,
    sigma_v: f64,
) -> SamplerCoefs {
    let p = prediction.coefs(abar);
    SamplerCoefs {
        s_x: p.x0_x as f32,
        s_e: p.x0_m as f32,
        clip,
        c_x: (c_x + c_eps * p.eps_x) as f32,
        c_x0: c_x0 as f32,
        c_e: (c_eps * p.eps_m) as f32,
        c_prev: c_prev as f32,
        sigma: sigma as f32,
        sigma_v: sigma_v as f32,
    }
}

/// The whole plan of updates for `sampler` over `steps` inference steps, for an ε-prediction
/// model.
pub fn plan(schedule: &Schedule, sampler: Sampler, spacing: Spacing, steps: usize) -> Result<Vec<Step>> {
    plan_with(schedule, sampler, spacing, steps, Prediction::Epsilon)
}

/// [`plan`] for a model that predicts `prediction`.
pub fn plan_with(
    schedule: &Schedule,
    sampler: Sampler,
    spacing: Spacing,
    steps: usize,
    prediction: Prediction,
) -> Result<Vec<Step>> {
    let t_train = schedule.len();
    let ab = &schedule.alphas_cumprod;
    let mut out = Vec::new();
    match sampler {
        Sampler::Ddpm { variance, clip } => {
            let ts = timesteps(spacing, t_train, steps)?;
            for (i, &t) in ts.iter().enumerate() {
                // DDPMScheduler.previous_timestep: the next entry of the list (t − 1 for the
                // full chain), ᾱ_prev = 1 after the last.
                let ab_t = ab[t];
                let ab_prev = ts.get(i + 1).map_or(1.0, |&p| ab[p]);
                let alpha_t = ab_t / ab_prev;
                let beta_t = 1.0 - alpha_t;
                // posterior mean μ̃ = c₀ x̂₀ + c_x x_t (Ho et al. eq. 7)
                let c0 = ab_prev.sqrt() * beta_t / (1.0 - ab_t);
                let cx = alpha_t.sqrt() * (1.0 - ab_prev) / (1.0 - ab_t);
                // β̃ clamped as diffusers does (it takes its log).
                let beta_tilde = ((1.0 - ab_prev) / (1.0 - ab_t) * beta_t).max(1e-20);
                let (sigma, sigma_v) = if t == 0 {
                    (0.0, 0.0)
                } else {
                    match variance {
                        Variance::FixedSmall => (beta_tilde.sqrt(), 0.0),
                        Variance::FixedLarge => (beta_t.sqrt(), 0.0),
                        // σ = exp(½(frac ln β + (1 − frac) ln β̃)), frac = (v + 1)/2
                        //   = exp(¼(ln β + ln β̃)) · exp(¼(ln β − ln β̃)·v)
                        Variance::LearnedRange => (
                            (0.25 * (beta_t.ln() + beta_tilde.ln())).exp(),
                            0.25 * (beta_t.ln() - beta_tilde.ln()),
                        ),
                    }
                };
                out.push(Step {
                    t,
                    coefs: coefs(prediction, ab_t, clip, cx, c0, 0.0, 0.0, sigma, sigma_v),
                });
            }
        }
        Sampler::Ddim { eta, clip } => {
            let ts = timesteps(spacing, t_train, steps)?;
            let stride = t_train / steps;
            for &t in &ts {
                // DDIMScheduler: prev = t − T // steps whatever the spacing (so linspace's
                // 999 → 888 step uses ᾱ(899)).
                let prev = t as i64 - stride as i64;
                let ab_t = ab[t];
                // set_alpha_to_one = True
                let ab_prev = if prev >= 0 { ab[prev as usize] } else { 1.0 };
                let var = (1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev);
                let std = eta * var.sqrt();
                // x_{t−1} = √ᾱ_{t−1} x̂₀ + √(1 − ᾱ_{t−1} − σ²) ε + σ z (Song et al. eq. 12)
                // (ε̂ from the unclipped output, as diffusers with use_clipped_model_output False)
                let c_e = (1.0 - ab_prev - std * std).max(0.0).sqrt();
                out.push(Step {
                    t,
                    coefs: coefs(prediction, ab_t, clip, 0.0, ab_prev.sqrt(), c_e, 0.0, std, 0.0),
                });
            }
        }
        Sampler::DpmSolverPP => {
            let ts = dpm_timesteps(spacing, t_train, steps)?;
            // σ-parametrisation: α = 1/√(1+s²), σ = s α with s = √((1−ᾱ)/ᾱ); final σ = 0.
            let sig = |t: Option<usize>| -> (f64, f64) {
                match t {
                    Some(t) => {
                        let s = ((1.0 - ab[t]) / ab[t]).sqrt();
                        let a = 1.0 / (1.0 + s * s).sqrt();
                        (a, s * a)
                    }
                    None => (1.0, 0.0),
                }
            };
            for (i, &t) in ts.iter().enumerate() {
                let next = ts.get(i + 1).copied();
                let (a_s, s_s) = sig(Some(t));
                let (a_t, s_t) = sig(next);
                // e^{−h} = (σ_t/α_t)/(σ_s/α_s), h = λ_t − λ_s, λ = log(α/σ)
                let emh = (s_t / a_t) / (s_s / a_s);
                let a_coef = -a_t * (emh - 1.0);
                let first_order = i == 0 || next.is_none();
                let (c0, cp) = if first_order {
                    (a_coef, 0.0)
                } else {
                    // midpoint 2M: D = x̂₀ + (1/(2r))(x̂₀ − x̂₀_prev), r = h_prev / h
                    let (a_p, s_p) = sig(Some(ts[i - 1]));
                    let lam = |a: f64, s: f64| (a / s).ln();
                    let h = lam(a_t, s_t) - lam(a_s, s_s);
                    let h0 = lam(a_s, s_s) - lam(a_p, s_p);
                    let r = h0 / h;
                    (a_coef * (1.0 + 0.5 / r), -a_coef * 0.5 / r)
                };
                out.push(Step {
                    t,
                    coefs: coefs(prediction, ab[t], false, s_t / s_s, c0, 0.0, cp, 0.0, 0.0),
                });
            }
        }
        Sampler::Sde(_) => {
            return Err(Error::arg(
                "--sampler",
                "a score-SDE sampler has no DDPM-style plan: see diffusion::sde::plan",
            ))
        }
    }
    Ok(out)
}

/// The timestep the model sees at each of the `steps` steps of `sampler` (for a score-SDE
/// sampler: at the start of each step).
pub fn plan_timesteps(
    schedule: &Schedule,
    sampler: Sampler,
    spacing: Spacing,
    steps: usize,
    prediction: Prediction,
) -> Result<Vec<usize>> {
    match sampler {
        Sampler::Sde(s) => sde::timesteps(schedule, s, steps),
        _ => Ok(plan_with(schedule, sampler, spacing, steps, prediction)?
            .iter()
            .map(|s| s.t)
            .collect()),
    }
}

/// Classifier-free guidance: per-sample labels and the guidance weight w
/// (ε = ε_∅ + w (ε_c − ε_∅)).
#[derive(Clone, Debug)]
pub struct Guidance {
    /// Class of each sample.
    pub labels: Vec<u32>,
    /// The "no class" label the model was trained with (label dropout).
    pub null_class: u32,
    /// w; 1 = plain conditional sampling.
    pub weight: f32,
}

/// What [`sample`] produces.
pub struct Samples {
    /// The final images x₀, [n, C, H, W].
    pub images: Tensor,
    /// (step index, x_t after the step, predicted x̂₀) at the requested steps.
    pub trajectory: Vec<(usize, Tensor, Tensor)>,
}

/// Options of [`sample`].
#[derive(Clone, Debug)]
pub struct SampleOptions {
    /// Number of images.
    pub n: usize,
    /// Image height and width.
    pub size: usize,
    /// The sampler.
    pub sampler: Sampler,
    /// Timestep spacing (DDPM and DDIM).
    pub spacing: Spacing,
    /// Inference steps.
    pub steps: usize,
    /// Seed of the initial noise and every step's noise.
    pub seed: u64,
    /// Class-conditional sampling with guidance.
    pub guidance: Option<Guidance>,
    /// Keep x_t and x̂₀ after these step indices (for denoising strips).
    pub keep: Vec<usize>,
}

/// Draw samples from `unet`, an ε-prediction model. `progress(i, steps)` is called after each
/// recorded step (nothing is read back from the GPU until the end).
pub fn sample(
    ctx: &Context,
    unet: &UNet,
    schedule: &Schedule,
    opts: &SampleOptions,
    progress: impl FnMut(usize, usize),
) -> Result<Samples> {
    sample_with(ctx, unet, schedule, Prediction::Epsilon, opts, progress)
}

/// Whether a model's outputs suit `sampler`: C channels (the prediction), or 2·C (the
/// prediction, then the variance channel v; needed by a learned variance, ignored by the other
/// samplers). Returns whether the output is split.
pub fn check_out_channels(in_channels: usize, out_channels: usize, sampler: Sampler) -> Result<bool> {
    let learned = matches!(
        sampler,
        Sampler::Ddpm {
            variance: Variance::LearnedRange,
            ..
        }
    );
    if out_channels == 2 * in_channels {
        Ok(true)
    } else if out_channels == in_channels && !learned {
        Ok(false)
    } else {
        Err(Error::arg(
            "--model",
            format!(
                "in_channels {in_channels}, out_channels {out_channels}: sampling needs {} output channels",
                if learned {
                    format!("2·{in_channels} (the prediction, then the variance v) for variance_type learned_range")
                } else {
                    format!("{in_channels} (shaped like x_t) or 2·{in_channels} (with a learned variance)")
                }
            ),
        ))
    }
}

/// The U-Net as every sampler calls it: one forward pass of the batch per step. With
/// classifier-free guidance (w ≠ 1) the conditional and unconditional halves are batched into
/// one pass and combined, ε = ε_∅ + w (ε_c − ε_∅); a learned variance keeps the conditional
/// half's variance channels.
pub struct GuidedUNet<'a> {
    unet: &'a UNet,
    n: usize,
    labels: Option<Tensor>,
    /// w, when guided (w ≠ 1).
    weight: Option<f32>,
    classifier: Option<ClassifierState<'a>>,
    /// The model's weights hold still while it samples: their Winograd transforms are computed
    /// at the first step and reused by the rest (dropped with this value).
    _frozen: crate::nn::FrozenGuard<'a>,
}

/// Classifier guidance (Dhariwal & Nichol 2021): a noise-aware classifier p_φ(y | x_t, t), the
/// class each sample is steered to, and the scale s.
#[derive(Clone, Copy, Debug)]
pub struct ClassifierGuide<'a> {
    /// The classifier (trained on the model's forward process).
    pub classifier: &'a NoisyClassifier,
    /// Class of each sample.
    pub labels: &'a [u32],
    /// s: 0 turns guidance off; guided diffusion uses 1–10.
    pub scale: f32,
}

struct ClassifierState<'a> {
    classifier: &'a NoisyClassifier,
    labels: Tensor,
    scale: f32,
    /// √(1 − ᾱ_t) per training timestep.
    sqrt_one_minus_ab: Vec<f64>,
    /// Shift ε̂ (every sampler but DDPM ancestral, which shifts the mean instead).
    eps_form: bool,
}

impl<'a> GuidedUNet<'a> {
    /// The model for batches of `n` samples with `guidance`'s labels, checked against the
    /// model: a class-conditional model needs them, an unconditional one refuses them.
    pub fn new(ctx: &Context, unet: &'a UNet, n: usize, guidance: Option<&Guidance>) -> Result<Self> {
        let cfg = unet.config();
        let conditional = cfg.num_class_embeds.is_some();
        let g = guidance;
        match (conditional, g) {
            (true, None) => {
                return Err(Error::arg(
                    "--class",
                    "the model is class-conditional: give a class (or --guidance with labels)",
                ))
            }
            (false, Some(_)) => {
                return Err(Error::arg(
                    "--class",
                    "the model has no class embedding (num_class_embeds is null)",
                ))
            }
            _ => {}
        }
        if let (Some(k), Some(g)) = (cfg.num_class_embeds, g) {
            if g.labels.len() != n {
                return Err(Error::arg(
                    "--class",
                    format!("{} labels for {n} samples", g.labels.len()),
                ));
            }
            if let Some(bad) = g.labels.iter().chain([&g.null_class]).find(|&&l| l as usize >= k) {
                return Err(Error::arg(
                    "--class",
                    format!("class {bad} is outside the model's range 0..{}", k - 1),
                ));
            }
        }
        // Conditional and unconditional halves are batched into one forward pass.
        let guided = g.filter(|g| g.weight != 1.0);
        let labels = match g {
            Some(g) => {
                let mut l: Vec<f32> = g.labels.iter().map(|&v| v as f32).collect();
                if guided.is_some() {
                    l.extend(std::iter::repeat_n(g.null_class as f32, n));
                }
                Some(ctx.upload(&[l.len()], &l)?)
            }
            None => None,
        };
        Ok(GuidedUNet {
            unet,
            n,
            labels,
            weight: guided.map(|g| g.weight),
            classifier: None,
            _frozen: unet.params.freeze(),
        })
    }

    /// Add classifier guidance. With `eps_form` every model output is shifted,
    /// ε̂ ← ε̂ − s √(1−ᾱ_t) ∇ₓ log p_φ(y | x_t, t) (Dhariwal & Nichol's Algorithm 2: the score of
    /// p(x_t | y) ∝ p(x_t) p(y | x_t)^s); otherwise the caller shifts the DDPM mean with
    /// [`GuidedUNet::add_classifier_guidance`] (their Algorithm 1). Refused for models that do not
    /// predict ε or have a learned variance, and for a classifier of another forward process.
    pub fn with_classifier(
        mut self,
        ctx: &Context,
        guide: &ClassifierGuide<'a>,
        schedule: &Schedule,
        prediction: Prediction,
        eps_form: bool,
    ) -> Result<Self> {
        let cfg = self.unet.config();
        let ccfg = guide.classifier.config();
        let arg = "--classifier";
        if prediction != Prediction::Epsilon || cfg.out_channels != cfg.in_channels {
            return Err(Error::arg(
                arg,
                "classifier guidance needs an ε-prediction model with a fixed variance (out_channels = in_channels)",
            ));
        }
        if ccfg.encoder.in_channels != cfg.in_channels {
            return Err(Error::arg(
                arg,
                format!(
                    "the classifier takes {}-channel images, the model makes {}-channel ones",
                    ccfg.encoder.in_channels, cfg.in_channels
                ),
            ));
        }
        let theirs = ccfg.noise.schedule()?;
        let same = theirs.len() == schedule.len()
            && theirs
                .alphas_cumprod
                .iter()
                .zip(&schedule.alphas_cumprod)
                .all(|(a, b)| (a - b).abs() <= 1e-9);
        if !same {
            return Err(Error::arg(
                arg,
                format!(
                    "the classifier was trained on another forward process ({} steps of '{}') than the model's ({} steps of '{}')",
                    ccfg.noise.num_train_timesteps,
                    ccfg.noise.beta_schedule,
                    schedule.len(),
                    schedule.kind.diffusers_name()
                ),
            ));
        }
        if guide.labels.len() != self.n {
            return Err(Error::arg(
                arg,
                format!("{} classifier labels for {} samples", guide.labels.len(), self.n),
            ));
        }
        if let Some(bad) = guide.labels.iter().find(|&&l| l as usize >= ccfg.num_classes) {
            return Err(Error::arg(
                "--class",
                format!("class {bad} is outside the classifier's {} classes", ccfg.num_classes),
            ));
        }
        if !guide.scale.is_finite() {
            return Err(Error::arg(
                "--classifier-scale",
                format!("{}: expected a finite scale", guide.scale),
            ));
        }
        let l: Vec<f32> = guide.labels.iter().map(|&v| v as f32).collect();
        self.classifier = Some(ClassifierState {
            classifier: guide.classifier,
            labels: ctx.upload(&[l.len()], &l)?,
            scale: guide.scale,
            sqrt_one_minus_ab: schedule.alphas_cumprod.iter().map(|a| (1.0 - a).sqrt()).collect(),
            eps_form,
        });
        Ok(self)
    }

    /// acc += coef·s·∇ₓ log p_φ(y | x_t, t) for the batch x at timestep t, on the GPU, when
    /// classifier guidance is on (a no-op otherwise).
    pub fn add_classifier_guidance(&self, ctx: &Context, acc: &Tensor, x: &Tensor, t: usize, coef: f32) -> Result<()> {
        let Some(cg) = &self.classifier else {
            return Ok(());
        };
        let tt = ctx.upload(&[self.n], &vec![t as f32; self.n])?;
        let g = cg.classifier.grad_log_prob(ctx, x, &tt, &cg.labels)?;
        ew::add_scaled_inplace(ctx, acc, &g, coef * cg.scale)
    }

    /// [`GuidedUNet::forward`] with the ε̂ shift of classifier guidance (when it is on, in the
    /// ε form).
    fn output_at(&self, ctx: &Context, x: &Tensor, t: usize) -> Result<Tensor> {
        let e = self.forward(ctx, x, t as f32)?;
        if let Some(cg) = self.classifier.as_ref().filter(|cg| cg.eps_form) {
            let k = cg.sqrt_one_minus_ab[t.min(cg.sqrt_one_minus_ab.len() - 1)] as f32;
            self.add_classifier_guidance(ctx, &e, x, t, -k)?;
        }
        Ok(e)
    }

    /// The model output at timestep t for x `[n, C, H, W]`: `[n, out_channels, H, W]`.
    pub fn forward(&self, ctx: &Context, x: &Tensor, t: f32) -> Result<Tensor> {
        let n = self.n;
        let (b, c, h, w) = x.dims4("sample")?;
        if b != n {
            return Err(Error::shape(
                "sample",
                format!("x {:?}: the model was set up for batches of {n}", x.shape()),
            ));
        }
        let nb = if self.weight.is_some() { 2 * n } else { n };
        let tt = ctx.upload(&[nb], &vec![t; nb])?;
        let Some(weight) = self.weight else {
            return self.unet.forward(ctx, x, &tt, self.labels.as_ref());
        };
        let co = self.unet.config().out_channels;
        let per = c * h * w;
        let xx = ctx.empty(&[nb, c, h, w], "cfg.x")?;
        let bytes = (n * per * 4) as u64;
        ctx.copy_buffer(x.buffer(), 0, xx.buffer(), 0, bytes);
        ctx.copy_buffer(x.buffer(), 0, xx.buffer(), bytes, bytes);
        let e = self.unet.forward(ctx, &xx, &tt, self.labels.as_ref())?;
        let out_bytes = (n * co * h * w * 4) as u64;
        let e_c = ctx.empty(&[n, co, h, w], "cfg.eps_c")?;
        let e_u = ctx.empty(&[n, co, h, w], "cfg.eps_u")?;
        ctx.copy_buffer(e.buffer(), 0, e_c.buffer(), 0, out_bytes);
        ctx.copy_buffer(e.buffer(), out_bytes, e_u.buffer(), 0, out_bytes);
        let guided = ew::axpby(ctx, &e_c, &e_u, weight, 1.0 - weight)?;
        if co == 2 * c {
            // Guidance moves the prediction only; the variance is the conditional model's (as
            // GLIDE and guided diffusion sample).
            let item = (per * 4) as u64;
            for b in 0..n as u64 {
                let v = (2 * b + 1) * item;
                ctx.copy_buffer(e_c.buffer(), v, guided.buffer(), v, item);
            }
        }
        Ok(guided)
    }
}

impl Denoiser for GuidedUNet<'_> {
    fn output(&self, ctx: &Context, x: &Tensor, t: usize) -> Result<Tensor> {
        self.output_at(ctx, x, t)
    }
}

/// [`sample`] for a model that predicts `prediction`; with [`Variance::LearnedRange`] the
/// model has 2·C output channels. A [`Sampler::Sde`] runs [`sde::sample`] (`spacing` unused).
pub fn sample_with(
    ctx: &Context,
    unet: &UNet,
    schedule: &Schedule,
    prediction: Prediction,
    opts: &SampleOptions,
    progress: impl FnMut(usize, usize),
) -> Result<Samples> {
    sample_guided(ctx, unet, schedule, prediction, opts, None, progress)
}

/// [`sample_with`] with optional classifier guidance. DDPM ancestral sampling shifts the mean,
/// x_{t−1} = μ + s σ_t² ∇ₓ log p_φ(y | x_t, t) + σ_t z (Dhariwal & Nichol's Algorithm 1; σ_t = 0
/// at the last step, as diffusers' DDPMScheduler has it, so the last step is unguided); every
/// other sampler shifts ε̂ (their Algorithm 2, the conditional score). The classifier's gradient
/// comes from its backward pass on the GPU inside the loop: still no readback until the end.
pub fn sample_guided(
    ctx: &Context,
    unet: &UNet,
    schedule: &Schedule,
    prediction: Prediction,
    opts: &SampleOptions,
    classifier: Option<&ClassifierGuide<'_>>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Samples> {
    let cfg = unet.config();
    let (n, c, s) = (opts.n, cfg.in_channels, opts.size);
    if n == 0 {
        return Err(Error::arg("--n", "must be at least 1"));
    }
    check_out_channels(cfg.in_channels, cfg.out_channels, opts.sampler)?;
    let mut model = GuidedUNet::new(ctx, unet, n, opts.guidance.as_ref())?;
    let mean_form = matches!(opts.sampler, Sampler::Ddpm { .. });
    if let Some(guide) = classifier {
        model = model.with_classifier(ctx, guide, schedule, prediction, !mean_form)?;
    }
    if let Sampler::Sde(sampler) = opts.sampler {
        let o = SdeOptions {
            n,
            channels: c,
            size: s,
            sampler,
            steps: opts.steps,
            seed: opts.seed,
            keep: opts.keep.clone(),
        };
        return sde::sample(ctx, &model, schedule, prediction, &o, progress);
    }
    let steps = plan_with(schedule, opts.sampler, opts.spacing, opts.steps, prediction)?;
    let mut x = random::randn(ctx, &[n, c, s, s], opts.seed, u32::MAX)?;
    let mut x0_prev: Option<Tensor> = None;
    let mut trajectory = Vec::new();
    for (i, st) in steps.iter().enumerate() {
        let eps = model.output_at(ctx, &x, st.t)?;
        let (x_next, x0) = ddpm::sampler_update(ctx, &x, &eps, x0_prev.as_ref(), &st.coefs, opts.seed, i as u32)?;
        if mean_form && st.coefs.sigma > 0.0 {
            // The mean form: x_{t−1} += s σ_t² ∇ log p(y | x_t), the gradient at x_t.
            model.add_classifier_guidance(ctx, &x_next, &x, st.t, st.coefs.sigma * st.coefs.sigma)?;
        }
        if opts.keep.contains(&i) {
            trajectory.push((i, x_next.clone(), x0.clone()));
        }
        x = x_next;
        x0_prev = Some(x0);
        progress(i + 1, steps.len());
    }
    Ok(Samples { images: x, trajectory })
}
