//! β schedules and the quantities of the forward process q(x_t | x_0), computed in f64.

use crate::error::{Error, Result};

/// How β_t is spread over t = 1..T.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    /// β evenly spaced from β_start to β_end (Ho et al. 2020; diffusers' "linear";
    /// latent-diffusion's "sqrt_linear").
    Linear,
    /// √β evenly spaced, then squared (diffusers' "scaled_linear"; latent-diffusion's "linear").
    ScaledLinear,
    /// Square roots of evenly spaced values (latent-diffusion's "sqrt").
    Sqrt,
    /// ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2), s = 0.008, β clipped at 0.999 (Nichol & Dhariwal;
    /// diffusers' "squaredcos_cap_v2").
    Cosine,
}

impl BetaSchedule {
    /// Parse a schedule name. diffusers' names are canonical; latent-diffusion's are aliases:
    /// `sqrt_linear` = `linear`, `ldm_linear` = `scaled_linear`, `squaredcos_cap_v2` = `cosine`.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "linear" | "sqrt_linear" => BetaSchedule::Linear,
            "scaled_linear" | "ldm_linear" => BetaSchedule::ScaledLinear,
            "sqrt" => BetaSchedule::Sqrt,
            "cosine" | "squaredcos_cap_v2" => BetaSchedule::Cosine,
            other => {
                return Err(Error::arg(
                    "beta_schedule",
                    format!("unknown schedule '{other}'; expected linear, scaled_linear, sqrt or cosine (aliases: sqrt_linear, ldm_linear, squaredcos_cap_v2)"),
                ))
            }
        })
    }

    /// diffusers' name (for scheduler_config.json).
    pub fn diffusers_name(self) -> &'static str {
        match self {
            BetaSchedule::Linear => "linear",
            BetaSchedule::ScaledLinear => "scaled_linear",
            BetaSchedule::Sqrt => "sqrt",
            BetaSchedule::Cosine => "squaredcos_cap_v2",
        }
    }
}

/// A noise schedule with every derived table of Ho et al. (2020), indexed by t = 0..T−1
/// (index i is the paper's t = i + 1).
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The schedule kind.
    pub kind: BetaSchedule,
    /// β_t.
    pub betas: Vec<f64>,
    /// α_t = 1 − β_t.
    pub alphas: Vec<f64>,
    /// ᾱ_t = Π_{s≤t} α_s.
    pub alphas_cumprod: Vec<f64>,
}

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    (0..n).map(|i| a + (b - a) * i as f64 / (n - 1) as f64).collect()
}

impl Schedule {
    /// Build a schedule of `t` steps. β_start/β_end are ignored by `Cosine`.
    pub fn new(kind: BetaSchedule, t: usize, beta_start: f64, beta_end: f64) -> Result<Self> {
        if t == 0 {
            return Err(Error::arg("num_train_timesteps", "must be at least 1"));
        }
        let betas = match kind {
            BetaSchedule::Linear => linspace(beta_start, beta_end, t),
            BetaSchedule::ScaledLinear => linspace(beta_start.sqrt(), beta_end.sqrt(), t)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            BetaSchedule::Sqrt => linspace(beta_start, beta_end, t).into_iter().map(f64::sqrt).collect(),
            BetaSchedule::Cosine => {
                let s = 0.008;
                let abar = |x: f64| {
                    ((x / t as f64 + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..t)
                    .map(|i| (1.0 - abar(i as f64 + 1.0) / abar(i as f64)).min(0.999))
                    .collect()
            }
        };
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alphas_cumprod = Vec::with_capacity(t);
        let mut acc = 1.0;
        for a in &alphas {
            acc *= a;
            alphas_cumprod.push(acc);
        }
        Ok(Schedule {
            kind,
            betas,
            alphas,
            alphas_cumprod,
        })
    }

    /// Ho et al.'s schedule: linear β from 1e-4 to 0.02 over 1000 steps.
    pub fn ddpm() -> Self {
        Self::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).expect("valid schedule")
    }

    /// Number of diffusion steps T.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false (a schedule has at least one step).
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// √ᾱ_t as f32 (for q_sample).
    pub fn sqrt_alphas_cumprod(&self) -> Vec<f32> {
        self.alphas_cumprod.iter().map(|a| a.sqrt() as f32).collect()
    }

    /// √(1 − ᾱ_t) as f32 (for q_sample).
    pub fn sqrt_one_minus_alphas_cumprod(&self) -> Vec<f32> {
        self.alphas_cumprod.iter().map(|a| (1.0 - a).sqrt() as f32).collect()
    }

    /// ᾱ_{t−1}, with ᾱ_{−1} = 1.
    pub fn alpha_cumprod_prev(&self, i: usize) -> f64 {
        if i == 0 {
            1.0
        } else {
            self.alphas_cumprod[i - 1]
        }
    }

    /// Posterior variance β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t.
    pub fn posterior_variance(&self, i: usize) -> f64 {
        (1.0 - self.alpha_cumprod_prev(i)) / (1.0 - self.alphas_cumprod[i]) * self.betas[i]
    }
}

/// What the network predicts from x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε (diffusers' `prediction_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prediction {
    /// The noise ε (Ho et al. 2020; diffusers' "epsilon").
    #[default]
    Epsilon,
    /// The clean image x₀ (diffusers' "sample").
    Sample,
    /// v = √ᾱ_t ε − √(1−ᾱ_t) x₀ (Salimans & Ho 2022; diffusers' "v_prediction").
    V,
}

/// How x̂₀ and ε̂ follow from x_t and the model output m at one timestep, both linear:
/// x̂₀ = x0_x·x_t − x0_m·m and ε̂ = eps_x·x_t + eps_m·m.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PredictionCoefs {
    /// Weight of x_t in x̂₀.
    pub x0_x: f64,
    /// Minus the weight of m in x̂₀.
    pub x0_m: f64,
    /// Weight of x_t in ε̂.
    pub eps_x: f64,
    /// Weight of m in ε̂.
    pub eps_m: f64,
}

impl Prediction {
    /// Parse diffusers' name.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "epsilon" => Ok(Prediction::Epsilon),
            "sample" => Ok(Prediction::Sample),
            "v_prediction" => Ok(Prediction::V),
            other => Err(Error::arg(
                "prediction_type",
                format!("'{other}': expected epsilon, sample or v_prediction"),
            )),
        }
    }

    /// diffusers' name (for scheduler_config.json).
    pub fn diffusers_name(self) -> &'static str {
        match self {
            Prediction::Epsilon => "epsilon",
            Prediction::Sample => "sample",
            Prediction::V => "v_prediction",
        }
    }

    /// x̂₀ and ε̂ in terms of (x_t, m) at ᾱ_t = `alpha_bar`, as diffusers' schedulers compute
    /// them. With a = √ᾱ, s = √(1−ᾱ) (a² + s² = 1):
    /// ε: x̂₀ = (x − s m)/a, ε̂ = m; x₀: x̂₀ = m, ε̂ = (x − a m)/s; v: x̂₀ = a x − s m, ε̂ = a m + s x.
    pub fn coefs(self, alpha_bar: f64) -> PredictionCoefs {
        let (a, s) = (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt());
        let (x0_x, x0_m, eps_x, eps_m) = match self {
            Prediction::Epsilon => (1.0 / a, s / a, 0.0, 1.0),
            Prediction::Sample => (0.0, -1.0, 1.0 / s, -a / s),
            Prediction::V => (a, s, s, a),
        };
        PredictionCoefs {
            x0_x,
            x0_m,
            eps_x,
            eps_m,
        }
    }

    /// The training target at ᾱ_t for the clean value `x0` and the noise `eps`.
    pub fn target(self, alpha_bar: f64, x0: f64, eps: f64) -> f64 {
        match self {
            Prediction::Epsilon => eps,
            Prediction::Sample => x0,
            Prediction::V => alpha_bar.sqrt() * eps - (1.0 - alpha_bar).sqrt() * x0,
        }
    }
}
