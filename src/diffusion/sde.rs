//! Score-based samplers of a trained DDPM: the VP SDE view (Song et al. 2021, "Score-Based
//! Generative Modeling through Stochastic Differential Equations") — reverse-SDE
//! Euler–Maruyama, predictor–corrector and the probability-flow ODE — and annealed Langevin
//! dynamics on the model's noise levels (Song & Ermon 2019). Any prediction type (ε, x₀, v) and
//! a learned-variance output (its variance channels are ignored) work; classifier-free guidance
//! and classifier guidance (the score shifted by s·∇ₓ log p(y | x_t), i.e. ε̂ − s√(1−ᾱ_t)∇)
//! come with the model ([`crate::diffusion::sample::GuidedUNet`]).
//!
//! # The VP SDE of a discrete DDPM
//! Forward: dx = −½β(t)·x dt + √β(t) dw for t ∈ [0, 1], with β(t) = T·β_{t·(T−1)}, the T
//! discrete β_i of the schedule interpolated linearly ([`vp_beta`]). For the linear schedule
//! this is exactly score_sde's `VPSDE` with β_min = T·β_start, β_max = T·β_end (0.1 and 20 for
//! Ho et al.'s 1e-4, 0.02, T = 1000); other schedules get the same construction (the cosine
//! schedule's β_T is clipped at 0.999, so β(t) reaches ~T near t = 1: prefer `pc` there, or
//! many steps).
//!
//! The score comes from the model as score_sde does for discrete-time models: at time t the
//! model is queried at the timestep index i = round(t·(T−1)) ([`time_index`]) and
//! s(x, t) = −ε̂/√(1 − ᾱ_i), with ε̂ = m, (x − √ᾱ m)/√(1−ᾱ) or √ᾱ m + √(1−ᾱ) x for an ε, x₀ or v
//! model output m. s is linear in (x, m), so every step folds it into its coefficients.
//!
//! # The samplers (N = `steps`)
//! Continuous time runs from t = 1 down to ε_s = [`SAMPLING_EPS`] (score_sde's VP default) on
//! the uniform grid t_k = 1 − k·Δt, Δt = (1 − ε_s)/N (score_sde evaluates on
//! linspace(1, ε_s, N) but steps by 1/N; the two agree as N grows).
//! - **`sde-em`** (score_sde `EulerMaruyamaPredictor`), N model calls: reverse drift
//!   f − g²s = −½βx − βs, so x_mean = x + (½βx + βs)·Δt and x = x_mean + √(βΔt)·z; the last step
//!   returns x_mean (score_sde's `denoise`).
//! - **`pc`** (Algorithm 2 of Song et al.), N·(c + 1) model calls: at each of the N timestep
//!   indices i_k = round(linspace(0, T−1, N)) (T−1, …, 0 when N = T, where it is score_sde's
//!   grid), first c Langevin corrector steps (score_sde `LangevinCorrector`): ε_b =
//!   2α_{i_k}(r‖z_b‖/‖s_b‖)², x = x + ε_b·s + √(2ε_b)·z, with α_i = 1 − β_i and the norms taken
//!   per sample b (score_sde averages them over the batch; per sample, a sample does not depend on
//!   its batch companions); then the predictor from i_k to i_{k+1} (ᾱ = 1 after the last), with
//!   α = ᾱ_{i_k}/ᾱ_{i_{k+1}}, β = 1 − α (α_{i_k} of the schedule when N = T): ancestral
//!   (`AncestralSamplingPredictor`, DDPM's step with σ² = β) x_mean = (x + βs)/√α, or reverse
//!   diffusion (`ReverseDiffusionPredictor`) x_mean = (2 − √α)x + βs; x = x_mean + √β·z, the last
//!   step returns x_mean. Defaults: r = [`DEFAULT_SNR`], c = [`DEFAULT_CORRECTOR_STEPS`],
//!   ancestral; c = 0 is the predictor alone.
//! - **`ode-heun`**, 2N − 1 model calls: the probability-flow ODE dx/dt = F(x, t) =
//!   −½β(t)(x + s(x, t)), no noise after x_T. Heun (2nd order): x̃ = x − Δt·F(x, t_k),
//!   x' = x − ½Δt(F(x, t_k) + F(x̃, t_{k+1})); Euler (x̃ itself) on the last step.
//! - **`langevin`** (Song & Ermon 2019, Algorithm 1), L·M + 1 model calls: L = N noise levels
//!   σ_i² = 1 − ᾱ_{t_i}, geometric in σ from σ(T−1) down to σ(0) (each the nearest timestep in
//!   log σ; repeats dropped, so a large L may give fewer levels), M Langevin steps per level
//!   x = x + (α_i/2)s + √α_i·z with α_i = ε·σ_i²/σ_L², then one denoising step x̂₀ = (x +
//!   σ_L²s)/√ᾱ_{t_L} (Tweedie; NCSNv2's final denoising). Defaults: L = [`DEFAULT_LANGEVIN_LEVELS`],
//!   M = [`DEFAULT_LANGEVIN_STEPS`], ε = [`DEFAULT_LANGEVIN_EPS`] — NCSN's CIFAR-10 settings, whose
//!   σ range 1 … 0.01 is the linear schedule's √(1−ᾱ) range.
//!
//! Every update is one fused kernel: the linear ones (Euler–Maruyama, the predictors,
//! annealed Langevin, the Euler stage of Heun) are [`ddpm::sampler_update`] with the noise drawn
//! in-line; Heun's second stage is [`kernels::heun_update`]; the corrector draws z, reduces the
//! per-sample norms ([`kernels::score_norms`]) and updates ([`kernels::langevin_correct`]). No
//! readback happens inside the loop.
//!
//! Randomness: x_T is Philox stream u32::MAX of the seed (as the DDPM samplers), and action a of
//! the [`plan`] (one model call and its update) draws its noise from stream a. The same seed
//! gives the same bytes on an adapter.

use crate::diffusion::sample::{self, Sampler, Samples, Spacing};
use crate::diffusion::schedule::{Prediction, Schedule};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::ops::ddpm::{self, SamplerCoefs};
use crate::ops::random;
use crate::ops::sde::{self as kernels, CorrectorCoefs, HeunCoefs};
use crate::tensor::Tensor;

/// The smallest time reached, ε_s (score_sde's `sampling.eps` for the VP SDE).
pub const SAMPLING_EPS: f64 = 1e-3;
/// Signal-to-noise ratio r of the Langevin corrector (score_sde's CIFAR-10 VP setting).
pub const DEFAULT_SNR: f64 = 0.16;
/// Corrector steps per predictor step.
pub const DEFAULT_CORRECTOR_STEPS: usize = 1;
/// Steps of the probability-flow ODE (2N − 1 model calls).
pub const DEFAULT_ODE_STEPS: usize = 100;
/// Noise levels L of annealed Langevin dynamics.
pub const DEFAULT_LANGEVIN_LEVELS: usize = 10;
/// Langevin steps M per noise level.
pub const DEFAULT_LANGEVIN_STEPS: usize = 100;
/// Step scale ε of annealed Langevin dynamics: α_i = ε·σ_i²/σ_L².
pub const DEFAULT_LANGEVIN_EPS: f64 = 2e-5;

/// The predictor of the predictor–corrector sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Predictor {
    /// x_mean = (x + βs)/√α (DDPM's ancestral step with σ² = β).
    Ancestral,
    /// x_mean = (2 − √α)x + βs (the reverse of the discretised forward SDE).
    ReverseDiffusion,
}

impl Predictor {
    /// Parse `ancestral` or `reverse-diffusion`.
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "ancestral" => Ok(Predictor::Ancestral),
            "reverse-diffusion" | "reverse_diffusion" | "rd" => Ok(Predictor::ReverseDiffusion),
            other => Err(Error::arg(
                "--predictor",
                format!("'{other}': expected ancestral or reverse-diffusion"),
            )),
        }
    }
}

/// A score-SDE or Langevin sampler and its options (the module docs give the equations).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SdeSampler {
    /// Reverse-SDE Euler–Maruyama (`sde-em`).
    EulerMaruyama,
    /// Predictor–corrector (`pc`).
    Pc {
        /// The predictor.
        predictor: Predictor,
        /// Signal-to-noise ratio r of the Langevin corrector.
        snr: f64,
        /// Corrector steps before each predictor step (0: the predictor alone).
        corrector_steps: usize,
    },
    /// Probability-flow ODE, fixed-step Heun (`ode-heun`).
    OdeHeun,
    /// Annealed Langevin dynamics (`langevin`); `steps` is the number of noise levels.
    Langevin {
        /// Langevin steps M per level.
        steps_per_level: usize,
        /// Step scale ε.
        eps: f64,
    },
}

/// The sampler names [`SdeSampler::parse`] accepts, for messages.
pub const NAMES: &str = "sde-em, pc, ode-heun or langevin";

impl SdeSampler {
    /// The sampler of a name (case-insensitive) with default options; `None` for other names.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "sde-em" | "em" | "euler-maruyama" => SdeSampler::EulerMaruyama,
            "pc" | "predictor-corrector" => SdeSampler::Pc {
                predictor: Predictor::Ancestral,
                snr: DEFAULT_SNR,
                corrector_steps: DEFAULT_CORRECTOR_STEPS,
            },
            "ode-heun" | "ode" | "pf-ode" => SdeSampler::OdeHeun,
            "langevin" | "ald" => SdeSampler::Langevin {
                steps_per_level: DEFAULT_LANGEVIN_STEPS,
                eps: DEFAULT_LANGEVIN_EPS,
            },
            _ => return None,
        })
    }

    /// Default `steps` for a model of T timesteps: T for sde-em and pc (score_sde's N = 1000),
    /// [`DEFAULT_ODE_STEPS`] for ode-heun, [`DEFAULT_LANGEVIN_LEVELS`] levels for langevin.
    pub fn default_steps(self, t_train: usize) -> usize {
        match self {
            SdeSampler::EulerMaruyama | SdeSampler::Pc { .. } => t_train,
            SdeSampler::OdeHeun => DEFAULT_ODE_STEPS.min(t_train),
            SdeSampler::Langevin { .. } => DEFAULT_LANGEVIN_LEVELS.min(t_train),
        }
    }

    /// These options with the ones `p` sets; a parameter of another sampler is refused.
    pub fn with_params(self, p: &SdeParams) -> Result<Self> {
        let mut s = self;
        if let SdeSampler::Pc {
            predictor,
            snr,
            corrector_steps,
        } = &mut s
        {
            if let Some(v) = p.predictor {
                *predictor = v;
            }
            if let Some(v) = p.snr {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::arg(
                        "--snr",
                        format!("{v}: expected a positive number (--corrector-steps 0 turns the corrector off)"),
                    ));
                }
                *snr = v;
            }
            if let Some(v) = p.corrector_steps {
                if v > 1000 {
                    return Err(Error::arg("--corrector-steps", format!("{v}: expected 0..=1000")));
                }
                *corrector_steps = v;
            }
        } else if let Some(flag) = p.pc_flag() {
            return Err(Error::arg(flag, "only applies to --sampler pc"));
        }
        if let SdeSampler::Langevin { steps_per_level, eps } = &mut s {
            if let Some(v) = p.langevin_steps {
                if !(1..=100_000).contains(&v) {
                    return Err(Error::arg("--langevin-steps", format!("{v}: expected 1..=100000")));
                }
                *steps_per_level = v;
            }
            if let Some(v) = p.langevin_eps {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::arg("--langevin-eps", format!("{v}: expected a positive number")));
                }
                *eps = v;
            }
        } else if let Some(flag) = p.langevin_flag() {
            return Err(Error::arg(flag, "only applies to --sampler langevin"));
        }
        Ok(s)
    }
}

/// Options of the score-SDE samplers as a request carries them (`ddpm sample` flags); `None`
/// keeps the default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SdeParams {
    /// pc: the predictor (default ancestral).
    pub predictor: Option<Predictor>,
    /// pc: the corrector's signal-to-noise ratio r (default [`DEFAULT_SNR`]).
    pub snr: Option<f64>,
    /// pc: corrector steps per predictor step (default [`DEFAULT_CORRECTOR_STEPS`]).
    pub corrector_steps: Option<usize>,
    /// langevin: steps per noise level (default [`DEFAULT_LANGEVIN_STEPS`]).
    pub langevin_steps: Option<usize>,
    /// langevin: step scale ε (default [`DEFAULT_LANGEVIN_EPS`]).
    pub langevin_eps: Option<f64>,
}

impl SdeParams {
    fn pc_flag(&self) -> Option<&'static str> {
        if self.predictor.is_some() {
            Some("--predictor")
        } else if self.snr.is_some() {
            Some("--snr")
        } else if self.corrector_steps.is_some() {
            Some("--corrector-steps")
        } else {
            None
        }
    }

    fn langevin_flag(&self) -> Option<&'static str> {
        if self.langevin_steps.is_some() {
            Some("--langevin-steps")
        } else if self.langevin_eps.is_some() {
            Some("--langevin-eps")
        } else {
            None
        }
    }
}

/// `sampler` with the score-SDE options of `p` applied; any of them set for a sampler that is
/// not a score-SDE one is refused.
pub fn apply_params(sampler: Sampler, p: &SdeParams) -> Result<Sampler> {
    match sampler {
        Sampler::Sde(s) => Ok(Sampler::Sde(s.with_params(p)?)),
        _ => match p.pc_flag().or(p.langevin_flag()) {
            Some(flag) => Err(Error::arg(
                flag,
                format!("only applies to the score-SDE samplers ({NAMES})"),
            )),
            None => Ok(sampler),
        },
    }
}

/// β(t) of the VP SDE: T·β_{t·(T−1)}, the discrete β linearly interpolated (t clamped to
/// [0, 1]). For the linear schedule, β_min + t·(β_max − β_min) with β_min = T·β_start,
/// β_max = T·β_end.
pub fn vp_beta(schedule: &Schedule, t: f64) -> f64 {
    let b = &schedule.betas;
    let n = b.len();
    if n == 1 {
        return b[0];
    }
    let u = t.clamp(0.0, 1.0) * (n - 1) as f64;
    let i = (u.floor() as usize).min(n - 2);
    let f = u - i as f64;
    n as f64 * (b[i] + f * (b[i + 1] - b[i]))
}

/// The timestep index the model is queried at for time t: round(t·(T−1)) (t clamped to [0, 1]).
pub fn time_index(t_train: usize, t: f64) -> usize {
    (t.clamp(0.0, 1.0) * (t_train - 1) as f64).round() as usize
}

/// The timestep indices of annealed Langevin's noise levels, largest first: σ geometric from
/// σ(T−1) to σ(0) (σ(i) = √(1 − ᾱ_i)) over `levels` points, each the nearest index in log σ,
/// repeats dropped. One level is the largest.
pub fn langevin_levels(schedule: &Schedule, levels: usize) -> Vec<usize> {
    let t_train = schedule.len();
    let log_sigma = |i: usize| 0.5 * (1.0 - schedule.alphas_cumprod[i]).ln();
    let (hi, lo) = (log_sigma(t_train - 1), log_sigma(0));
    let mut out: Vec<usize> = Vec::with_capacity(levels);
    for k in 0..levels {
        let target = if levels == 1 {
            hi
        } else {
            hi + (lo - hi) * k as f64 / (levels - 1) as f64
        };
        let mut best = (t_train - 1, f64::INFINITY);
        for i in (0..t_train).rev() {
            let d = (log_sigma(i) - target).abs();
            if d < best.1 {
                best = (i, d);
            }
        }
        if out.last() != Some(&best.0) {
            out.push(best.0);
        }
    }
    out
}

/// The update of one [`Action`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Update {
    /// x ← c_x·x + c_e·m + σ·z (the score folded in), x̂₀ = s_x·x − s_e·m for strips: one
    /// [`ddpm::sampler_update`].
    Linear(SamplerCoefs),
    /// Heun's Euler stage x̃ (as `Linear`, σ = 0); x and m are kept for the next action.
    HeunPredict(SamplerCoefs),
    /// Heun's second stage from the kept (x, m1), x̃ and this action's model output.
    HeunCorrect(HeunCoefs),
    /// One Langevin corrector step.
    Corrector(CorrectorCoefs),
}

/// One model call and the update that uses it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Action {
    /// The sampler step (0..steps, what progress and strips count) this belongs to.
    pub step: usize,
    /// The timestep index the model is queried at.
    pub t: usize,
    /// The update.
    pub update: Update,
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

/// The score at timestep index t as s = a_x·x + a_m·m: s = −ε̂/√(1−ᾱ_t), ε̂ = eps_x·x + eps_m·m.
pub fn score_coefs(schedule: &Schedule, prediction: Prediction, t: usize) -> (f64, f64) {
    let ab = schedule.alphas_cumprod[t];
    let p = prediction.coefs(ab);
    let sigma = (1.0 - ab).sqrt();
    (-p.eps_x / sigma, -p.eps_m / sigma)
}

/// x ← c_x·x + c_s·s + σ·z at timestep index t as fused-kernel coefficients.
fn linear(schedule: &Schedule, prediction: Prediction, t: usize, c_x: f64, c_s: f64, sigma: f64) -> SamplerCoefs {
    let (a_x, a_m) = score_coefs(schedule, prediction, t);
    let p = prediction.coefs(schedule.alphas_cumprod[t]);
    SamplerCoefs {
        s_x: p.x0_x as f32,
        s_e: p.x0_m as f32,
        clip: false,
        c_x: (c_x + c_s * a_x) as f32,
        c_x0: 0.0,
        c_e: (c_s * a_m) as f32,
        c_prev: 0.0,
        sigma: sigma as f32,
        sigma_v: 0.0,
    }
}

/// Every model call of `sampler` over `steps` steps, in order, with its update (the module docs
/// give the equations).
pub fn plan(schedule: &Schedule, sampler: SdeSampler, steps: usize, prediction: Prediction) -> Result<Vec<Action>> {
    let t_train = schedule.len();
    check_steps(t_train, steps)?;
    let ab = &schedule.alphas_cumprod;
    if let Some(i) = ab.iter().position(|&a| a >= 1.0) {
        return Err(Error::Config {
            field: "beta_schedule".into(),
            msg: format!("ᾱ = 1 at timestep {i}: the score −ε̂/√(1 − ᾱ) is undefined there"),
        });
    }
    let lin = |t: usize, c_x: f64, c_s: f64, sigma: f64| linear(schedule, prediction, t, c_x, c_s, sigma);
    let dt = (1.0 - SAMPLING_EPS) / steps as f64;
    let time = |k: usize| 1.0 - k as f64 * dt;
    let mut out = Vec::new();
    match sampler {
        SdeSampler::EulerMaruyama => {
            for k in 0..steps {
                let (t, last) = (time(k), k + 1 == steps);
                let (i, beta) = (time_index(t_train, t), vp_beta(schedule, t));
                // x_mean = x + (½βx + βs)·Δt; x = x_mean + √(βΔt)·z
                let sigma = if last { 0.0 } else { (beta * dt).sqrt() };
                out.push(Action {
                    step: k,
                    t: i,
                    update: Update::Linear(lin(i, 1.0 + 0.5 * beta * dt, beta * dt, sigma)),
                });
            }
        }
        SdeSampler::OdeHeun => {
            for k in 0..steps {
                let (t, t_next) = (time(k), time(k + 1));
                let (i, j) = (time_index(t_train, t), time_index(t_train, t_next));
                let (beta, beta_next) = (vp_beta(schedule, t), vp_beta(schedule, t_next));
                // x̃ = x − Δt·F(x, t), F = −½β(x + s)
                let euler = lin(i, 1.0 + 0.5 * beta * dt, 0.5 * beta * dt, 0.0);
                if k + 1 == steps {
                    out.push(Action {
                        step: k,
                        t: i,
                        update: Update::Linear(euler),
                    });
                    continue;
                }
                out.push(Action {
                    step: k,
                    t: i,
                    update: Update::HeunPredict(euler),
                });
                // x' = x − ½Δt(F(x, t) + F(x̃, t')) = x + ¼Δtβ(x + s) + ¼Δtβ'(x̃ + s')
                let (a_x, a_m) = score_coefs(schedule, prediction, i);
                let (b_x, b_m) = score_coefs(schedule, prediction, j);
                let (q, q_next) = (0.25 * dt * beta, 0.25 * dt * beta_next);
                out.push(Action {
                    step: k,
                    t: j,
                    update: Update::HeunCorrect(HeunCoefs {
                        a_x: a_x as f32,
                        a_m: a_m as f32,
                        b_x: b_x as f32,
                        b_m: b_m as f32,
                        c_x: (1.0 + q) as f32,
                        c_s: q as f32,
                        c_xt: q_next as f32,
                        c_s2: q_next as f32,
                    }),
                });
            }
        }
        SdeSampler::Pc {
            predictor,
            snr,
            corrector_steps,
        } => {
            let ts = sample::timesteps(Spacing::Linspace, t_train, steps)?;
            for (k, &i) in ts.iter().enumerate() {
                let (a_x, a_m) = score_coefs(schedule, prediction, i);
                for _ in 0..corrector_steps {
                    out.push(Action {
                        step: k,
                        t: i,
                        update: Update::Corrector(CorrectorCoefs {
                            a_x: a_x as f32,
                            a_m: a_m as f32,
                            two_alpha_r2: (2.0 * schedule.alphas[i] * snr * snr) as f32,
                        }),
                    });
                }
                let next = ts.get(k + 1);
                let alpha = ab[i] / next.map_or(1.0, |&j| ab[j]);
                let beta = 1.0 - alpha;
                let (c_x, c_s) = match predictor {
                    Predictor::Ancestral => (1.0 / alpha.sqrt(), beta / alpha.sqrt()),
                    Predictor::ReverseDiffusion => (2.0 - alpha.sqrt(), beta),
                };
                let sigma = if next.is_none() { 0.0 } else { beta.sqrt() };
                out.push(Action {
                    step: k,
                    t: i,
                    update: Update::Linear(lin(i, c_x, c_s, sigma)),
                });
            }
        }
        SdeSampler::Langevin { steps_per_level, eps } => {
            let levels = langevin_levels(schedule, steps);
            let var = |i: usize| 1.0 - ab[i];
            let last = *levels.last().expect("at least one level");
            for (k, &i) in levels.iter().enumerate() {
                let alpha = eps * var(i) / var(last);
                for _ in 0..steps_per_level {
                    out.push(Action {
                        step: k,
                        t: i,
                        update: Update::Linear(lin(i, 1.0, 0.5 * alpha, alpha.sqrt())),
                    });
                }
            }
            // x̂₀ = (x + σ_L²·s)/√ᾱ_L
            let a = ab[last].sqrt();
            out.push(Action {
                step: levels.len() - 1,
                t: last,
                update: Update::Linear(lin(last, 1.0 / a, var(last) / a, 0.0)),
            });
        }
    }
    Ok(out)
}

/// The timestep index at the start of each sampler step (what strips label frames with).
pub fn timesteps(schedule: &Schedule, sampler: SdeSampler, steps: usize) -> Result<Vec<usize>> {
    let mut ts = Vec::new();
    for a in plan(schedule, sampler, steps, Prediction::Epsilon)? {
        if ts.len() == a.step {
            ts.push(a.t);
        }
    }
    Ok(ts)
}

/// A model as the samplers call it.
pub trait Denoiser {
    /// The model output at timestep index t for the batch x `[B, C, H, W]`: ε̂, x̂₀ or v (what
    /// the schedule's prediction type says), `[B, C, H, W]` or `[B, 2·C, H, W]` (a learned
    /// variance, whose second half is ignored). Recorded on the GPU, not read back.
    fn output(&self, ctx: &Context, x: &Tensor, t: usize) -> Result<Tensor>;
}

/// Options of [`sample()`].
#[derive(Clone, Debug)]
pub struct SdeOptions {
    /// Number of images.
    pub n: usize,
    /// Image channels.
    pub channels: usize,
    /// Image height and width.
    pub size: usize,
    /// The sampler.
    pub sampler: SdeSampler,
    /// Sampler steps (noise levels for langevin).
    pub steps: usize,
    /// Seed of x_T and of every step's noise.
    pub seed: u64,
    /// Keep x and x̂₀ after these steps (for denoising strips).
    pub keep: Vec<usize>,
}

/// Draw samples with a score-SDE or Langevin sampler. `progress(i, steps)` is called after each
/// sampler step is recorded; nothing is read back from the GPU.
pub fn sample<M: Denoiser + ?Sized>(
    ctx: &Context,
    model: &M,
    schedule: &Schedule,
    prediction: Prediction,
    opts: &SdeOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Samples> {
    if opts.n == 0 {
        return Err(Error::arg("--n", "must be at least 1"));
    }
    let actions = plan(schedule, opts.sampler, opts.steps, prediction)?;
    let total = actions.last().map_or(0, |a| a.step + 1);
    let shape = [opts.n, opts.channels, opts.size, opts.size];
    let mut x = random::randn(ctx, &shape, opts.seed, u32::MAX)?;
    let mut x0_last: Option<Tensor> = None;
    // Heun: (x_k, the model output at it) while its second stage is pending
    let mut heun: Option<(Tensor, Tensor)> = None;
    let mut trajectory = Vec::new();
    for (a, act) in actions.iter().enumerate() {
        let stream = a as u32;
        let m = model.output(ctx, &x, act.t)?;
        x = match act.update {
            Update::Linear(c) => {
                let (next, x0) = ddpm::sampler_update(ctx, &x, &m, None, &c, opts.seed, stream)?;
                x0_last = Some(x0);
                next
            }
            Update::HeunPredict(c) => {
                let (x_tilde, x0) = ddpm::sampler_update(ctx, &x, &m, None, &c, opts.seed, stream)?;
                x0_last = Some(x0);
                heun = Some((x, m));
                x_tilde
            }
            Update::HeunCorrect(c) => {
                let (x_k, m1) = heun
                    .take()
                    .ok_or_else(|| Error::arg("plan", "a Heun correction without its Euler stage"))?;
                kernels::heun_update(ctx, &x_k, &m1, &x, &m, &c)?
            }
            Update::Corrector(c) => {
                let z = random::randn(ctx, &shape, opts.seed, stream)?;
                let norms = kernels::score_norms(ctx, &x, &m, &z, c.a_x, c.a_m)?;
                kernels::langevin_correct(ctx, &x, &m, &z, &norms, &c)?
            }
        };
        let step_done = actions.get(a + 1).is_none_or(|n| n.step != act.step);
        if step_done {
            if opts.keep.contains(&act.step) {
                let x0 = x0_last.clone().unwrap_or_else(|| x.clone());
                trajectory.push((act.step, x.clone(), x0));
            }
            progress(act.step + 1, total);
        }
    }
    Ok(Samples { images: x, trajectory })
}
