//! CPU f64 reference of the score-SDE and Langevin samplers ([`crate::diffusion::sde`]): the
//! kernels of `shaders/sde.wgsl`, each sampler's update written as the paper's equation (not as
//! the fused coefficients the GPU path uses), and whole sampling loops over a model given as a
//! closure. The noise is the GPU's Philox stream ([`crate::reference::random::normal`]).

use crate::diffusion::sample::{timesteps, Spacing};
use crate::diffusion::schedule::{Prediction, Schedule};
use crate::reference::random::normal;

// ---- kernels --------------------------------------------------------------------------------

/// Heun's second stage: c_x·x + c_s·s + c_xt·x̃ + c_s2·s₂ with s = a_x·x + a_m·m1,
/// s₂ = b_x·x̃ + b_m·m2 (m1, m2 shaped like x: split a learned-variance output first).
/// `c` = (a_x, a_m, b_x, b_m, c_x, c_s, c_xt, c_s2).
pub fn heun_update(x: &[f64], m1: &[f64], x_tilde: &[f64], m2: &[f64], c: [f64; 8]) -> Vec<f64> {
    let [a_x, a_m, b_x, b_m, c_x, c_s, c_xt, c_s2] = c;
    (0..x.len())
        .map(|i| {
            let s = a_x * x[i] + a_m * m1[i];
            let s2 = b_x * x_tilde[i] + b_m * m2[i];
            c_x * x[i] + c_s * s + c_xt * x_tilde[i] + c_s2 * s2
        })
        .collect()
}

/// Per item b of `batch`: [Σ s², Σ z²] with s = a_x·x + a_m·m, flattened `[batch, 2]`.
pub fn score_norms(x: &[f64], m: &[f64], z: &[f64], a_x: f64, a_m: f64, batch: usize) -> Vec<f64> {
    let per = x.len() / batch;
    let mut out = vec![0.0; 2 * batch];
    for i in 0..x.len() {
        let s = a_x * x[i] + a_m * m[i];
        out[2 * (i / per)] += s * s;
        out[2 * (i / per) + 1] += z[i] * z[i];
    }
    out
}

/// x + ε_b·s + √(2ε_b)·z with ε_b = two_alpha_r2·Σz²/Σs² from `norms` (0 where Σs² = 0).
pub fn langevin_correct(
    x: &[f64],
    m: &[f64],
    z: &[f64],
    norms: &[f64],
    a_x: f64,
    a_m: f64,
    two_alpha_r2: f64,
) -> Vec<f64> {
    let per = x.len() / (norms.len() / 2);
    (0..x.len())
        .map(|i| {
            let b = i / per;
            let step = if norms[2 * b] > 0.0 {
                two_alpha_r2 * norms[2 * b + 1] / norms[2 * b]
            } else {
                0.0
            };
            x[i] + step * (a_x * x[i] + a_m * m[i]) + (2.0 * step).sqrt() * z[i]
        })
        .collect()
}

// ---- the equations --------------------------------------------------------------------------

/// The score s = −ε̂/√(1 − ᾱ) at ᾱ = `alpha_bar` from the model output m: ε̂ = m (ε),
/// (x − √ᾱ·m)/√(1−ᾱ) (x₀) or √ᾱ·m + √(1−ᾱ)·x (v).
pub fn score(x: &[f64], m: &[f64], prediction: Prediction, alpha_bar: f64) -> Vec<f64> {
    let (a, s) = (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt());
    x.iter()
        .zip(m)
        .map(|(&x, &m)| {
            let eps = match prediction {
                Prediction::Epsilon => m,
                Prediction::Sample => (x - a * m) / s,
                Prediction::V => a * m + s * x,
            };
            -eps / s
        })
        .collect()
}

/// β(t) = T·β_{t(T−1)} of the VP SDE (the discrete β interpolated linearly).
pub fn vp_beta(schedule: &Schedule, t: f64) -> f64 {
    let n = schedule.len();
    if n == 1 {
        return schedule.betas[0];
    }
    let u = t * (n - 1) as f64;
    let lo = (u.floor() as usize).min(n - 2);
    let (b0, b1) = (schedule.betas[lo], schedule.betas[lo + 1]);
    n as f64 * (b0 + (u - lo as f64) * (b1 - b0))
}

/// Reverse-SDE Euler–Maruyama step back by dt > 0: the reverse drift of the VP SDE is
/// f − g²s = −½βx − βs, so x_mean = x − (−½βx − βs)·dt; returns x_mean + √β·√dt·z (x_mean
/// without z).
pub fn euler_maruyama_step(x: &[f64], s: &[f64], beta: f64, dt: f64, z: Option<&[f64]>) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let drift = -0.5 * beta * x[i] - beta * s[i];
            let mean = x[i] - drift * dt;
            mean + z.map_or(0.0, |z| beta.sqrt() * dt.sqrt() * z[i])
        })
        .collect()
}

/// Ancestral predictor (score_sde `AncestralSamplingPredictor`, VP): x_mean = (x + βs)/√(1 − β);
/// returns x_mean + √β·z.
pub fn ancestral_step(x: &[f64], s: &[f64], beta: f64, z: Option<&[f64]>) -> Vec<f64> {
    (0..x.len())
        .map(|i| (x[i] + beta * s[i]) / (1.0 - beta).sqrt() + z.map_or(0.0, |z| beta.sqrt() * z[i]))
        .collect()
}

/// Reverse-diffusion predictor (score_sde `ReverseDiffusionPredictor`, VP): the forward step
/// discretised as f = √(1−β)·x − x, G = √β; x_mean = x − (f − G²s); returns x_mean + G·z.
pub fn reverse_diffusion_step(x: &[f64], s: &[f64], beta: f64, z: Option<&[f64]>) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let f = (1.0 - beta).sqrt() * x[i] - x[i];
            let mean = x[i] - (f - beta * s[i]);
            mean + z.map_or(0.0, |z| beta.sqrt() * z[i])
        })
        .collect()
}

/// Langevin corrector (score_sde `LangevinCorrector`, VP) with per-sample norms: for item b,
/// ε_b = 2α(r‖z_b‖/‖s_b‖)², x + ε_b·s + √(2ε_b)·z.
pub fn langevin_corrector_step(x: &[f64], s: &[f64], z: &[f64], alpha: f64, snr: f64, batch: usize) -> Vec<f64> {
    let per = x.len() / batch;
    let mut out = Vec::with_capacity(x.len());
    for b in 0..batch {
        let r = b * per..(b + 1) * per;
        let s_norm = s[r.clone()].iter().map(|v| v * v).sum::<f64>().sqrt();
        let z_norm = z[r.clone()].iter().map(|v| v * v).sum::<f64>().sqrt();
        let step = 2.0 * alpha * (snr * z_norm / s_norm).powi(2);
        for i in r {
            out.push(x[i] + step * s[i] + (2.0 * step).sqrt() * z[i]);
        }
    }
    out
}

/// One step of Langevin dynamics: x + (α/2)·s + √α·z.
pub fn langevin_step(x: &[f64], s: &[f64], alpha: f64, z: &[f64]) -> Vec<f64> {
    (0..x.len())
        .map(|i| x[i] + 0.5 * alpha * s[i] + alpha.sqrt() * z[i])
        .collect()
}

/// The probability-flow ODE's dx/dt = f − ½g²s = −½β(x + s).
pub fn probability_flow(x: &[f64], s: &[f64], beta: f64) -> Vec<f64> {
    x.iter().zip(s).map(|(&x, &s)| -0.5 * beta * (x + s)).collect()
}

/// Tweedie's denoiser for x = √ᾱ·x₀ + √(1−ᾱ)·ε: E[x₀ | x] = (x + (1 − ᾱ)·s)/√ᾱ.
pub fn tweedie(x: &[f64], s: &[f64], alpha_bar: f64) -> Vec<f64> {
    x.iter()
        .zip(s)
        .map(|(&x, &s)| (x + (1.0 - alpha_bar) * s) / alpha_bar.sqrt())
        .collect()
}

// ---- whole samplers -------------------------------------------------------------------------

/// Which sampler [`sample`] runs (the options of `diffusion::sde::SdeSampler`, spelled out here
/// so the reference does not take the GPU path's types).
#[derive(Clone, Copy, Debug)]
pub enum Method {
    /// Reverse-SDE Euler–Maruyama.
    EulerMaruyama,
    /// Predictor–corrector; `ancestral` false = reverse diffusion.
    Pc {
        /// Ancestral predictor (else reverse diffusion).
        ancestral: bool,
        /// r.
        snr: f64,
        /// Corrector steps per predictor step.
        corrector_steps: usize,
    },
    /// Probability-flow ODE, Heun.
    OdeHeun,
    /// Annealed Langevin dynamics.
    Langevin {
        /// Steps per level.
        steps_per_level: usize,
        /// ε.
        eps: f64,
    },
}

/// Run a sampler from x_T = `x` (`batch` items) with `model(x, t)` returning the model output
/// (C channels) at timestep index t. Noise: action a (one model call) draws
/// normal(seed, a, i) for element i. `levels` are annealed Langevin's timestep indices.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    method: Method,
    schedule: &Schedule,
    prediction: Prediction,
    steps: usize,
    levels: &[usize],
    mut x: Vec<f64>,
    batch: usize,
    seed: u64,
    model: &mut dyn FnMut(&[f64], usize) -> Vec<f64>,
) -> Vec<f64> {
    let t_train = schedule.len();
    let ab = &schedule.alphas_cumprod;
    let n = x.len();
    let mut action = 0u32;
    let mut noise = move || {
        let z: Vec<f64> = (0..n).map(|i| normal(seed, action, i as u64) as f64).collect();
        action += 1;
        z
    };
    let mut s_at = |x: &[f64], t: usize| score(x, &model(x, t), prediction, ab[t]);
    let eps_s = 1e-3;
    let dt = (1.0 - eps_s) / steps as f64;
    let index = |t: f64| (t * (t_train - 1) as f64).round() as usize;
    match method {
        Method::EulerMaruyama => {
            for k in 0..steps {
                let t = 1.0 - k as f64 * dt;
                let s = s_at(&x, index(t));
                let z = noise();
                let z = (k + 1 < steps).then_some(z);
                x = euler_maruyama_step(&x, &s, vp_beta(schedule, t), dt, z.as_deref());
            }
        }
        Method::OdeHeun => {
            for k in 0..steps {
                let (t, t_next) = (1.0 - k as f64 * dt, 1.0 - (k + 1) as f64 * dt);
                let d = probability_flow(&x, &s_at(&x, index(t)), vp_beta(schedule, t));
                // integrating from t down to t − dt
                let x_tilde: Vec<f64> = (0..n).map(|i| x[i] - dt * d[i]).collect();
                if k + 1 == steps {
                    x = x_tilde;
                    break;
                }
                let d2 = probability_flow(&x_tilde, &s_at(&x_tilde, index(t_next)), vp_beta(schedule, t_next));
                x = (0..n).map(|i| x[i] - 0.5 * dt * (d[i] + d2[i])).collect();
            }
        }
        Method::Pc {
            ancestral,
            snr,
            corrector_steps,
        } => {
            let ts = timesteps(Spacing::Linspace, t_train, steps).expect("valid steps");
            for (k, &t) in ts.iter().enumerate() {
                for _ in 0..corrector_steps {
                    let s = s_at(&x, t);
                    let z = noise();
                    x = langevin_corrector_step(&x, &s, &z, schedule.alphas[t], snr, batch);
                }
                let ab_next = ts.get(k + 1).map_or(1.0, |&j| ab[j]);
                let beta = 1.0 - ab[t] / ab_next;
                let s = s_at(&x, t);
                let z = noise();
                let z = (k + 1 < ts.len()).then_some(z);
                x = if ancestral {
                    ancestral_step(&x, &s, beta, z.as_deref())
                } else {
                    reverse_diffusion_step(&x, &s, beta, z.as_deref())
                };
            }
        }
        Method::Langevin { steps_per_level, eps } => {
            let last = *levels.last().expect("levels");
            for &t in levels {
                let alpha = eps * (1.0 - ab[t]) / (1.0 - ab[last]);
                for _ in 0..steps_per_level {
                    let s = s_at(&x, t);
                    let z = noise();
                    x = langevin_step(&x, &s, alpha, &z);
                }
            }
            x = tweedie(&x, &s_at(&x, last), ab[last]);
        }
    }
    x
}
