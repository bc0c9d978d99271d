//! Exact likelihood through the probability-flow ODE (Song et al. 2021, "Score-Based Generative
//! Modeling through Stochastic Differential Equations", §4.3 and Appendix D.2), with the
//! divergence from Hutchinson's trace estimator.
//!
//! The VP SDE of the model's schedule ([`crate::diffusion::sde`]): β(t) = T·β_{t·(T−1)}
//! interpolated linearly, mean coefficient m(t) = exp(−½∫₀ᵗβ) (integrated exactly for the
//! piecewise-linear β) and std σ(t) = √(1 − m(t)²). The model at time t is queried at the
//! fractional timestep label t·(T−1) (as score_sde queries DDPM checkpoints), and its score is
//! s = −ε̂/σ(t). The ODE
//!
//! ```text
//! dx/dt = F(x, t) = −½β(t)(x + s(x, t)) = −½β(t)·x + ½β(t)/σ(t)·ε̂(x, t)
//! ∇·F = −½β(t)·D + ½β(t)/σ(t)·∇·ε̂,    ∇·ε̂ ≈ zᵀ (∂ε̂/∂x) z,  z Rademacher (one per sample)
//! log p₀(x) = log N(x(1); 0, I) + ∫_{t_min}^{1} ∇·F(x(t), t) dt
//! ```
//!
//! is integrated from the data at t_min = [`LIKELIHOOD_EPS`] to t = 1, the state and the
//! divergence integral together, each model call a forward and a vector–Jacobian product through
//! the engine's backward pass. Two solvers ([`OdeSolver`]):
//! - fixed-step Heun (2N model calls), steps uniform in √t, t_k = (√t_min + (1 − √t_min)·k/N)²:
//!   short near the data, where the score changes fastest, and long near the prior. Everything
//!   stays on the GPU until the per-sample totals are read at the end.
//! - adaptive Dormand–Prince 5(4) with error control as scipy's `solve_ivp(method="RK45")`, which
//!   score_sde uses (rtol = atol = 1e-5 there): the RMS over every component of the state (x
//!   and the divergence integral) of the embedded error scaled by atol + rtol·max(|y|, |y_new|)
//!   must be ≤ 1, and the step grows or shrinks by 0.9·err^(−1/5) within [0.2, 10]. The error is
//!   read back once per step to choose the next one; the model calls number 6 per accepted or
//!   rejected step (the last stage is the next step's first) plus 2 to pick the first step.
//!
//! zᵀJz with Rademacher z is exact for any multiple of the identity, and unbiased in general.
//!
//! Bits/dim of 8-bit data: with x = 2(k + u)/256 − 1 (uniform dequantisation u ~ U[0, 1)), the
//! density of k + u is p(x)·(2/256)^D, so bpd = −log₂ p(x)/D + 7: an upper bound on the discrete
//! model's negative log-likelihood (score_sde's `bpd` with offset 7).

use crate::diffusion::schedule::Schedule;
use crate::diffusion::sde::vp_beta;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::nn::{Grads, InitRng, Mode, UNet};
use crate::ops::elementwise as ew;
use crate::tensor::Tensor;

/// t_min of the likelihood ODE (score_sde's `eps` for likelihoods, 1e-5).
pub const LIKELIHOOD_EPS: f64 = 1e-5;
/// Default Heun steps.
pub const DEFAULT_LIKELIHOOD_STEPS: usize = 100;

/// An ε-prediction model as the likelihood ODE calls it: ε̂(x, t) and the vector–Jacobian
/// product vᵀ ∂ε̂/∂x, both on the GPU.
pub trait EpsVjp {
    /// (ε̂(x, label), vᵀ ∂ε̂/∂x) for x `[B, C, H, W]`, the timestep label (t·(T−1), fractional)
    /// and v shaped like x.
    fn eps_vjp(&self, ctx: &Context, x: &Tensor, label: f32, v: &Tensor) -> Result<(Tensor, Tensor)>;
}

/// A U-Net predicting ε, with fixed class labels for a class-conditional model (log p(x | y)).
pub struct UNetEps<'a> {
    /// The model.
    pub unet: &'a UNet,
    /// Class of each sample (f32), for a class-conditional model.
    pub labels: Option<&'a Tensor>,
}

impl EpsVjp for UNetEps<'_> {
    fn eps_vjp(&self, ctx: &Context, x: &Tensor, label: f32, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let b = x.shape()[0];
        let t = ctx.upload(&[b], &vec![label; b])?;
        let (eps, tape) = self.unet.forward_tape(ctx, x, &t, self.labels, Mode::EVAL)?;
        // The parameter gradients are computed too and dropped: the backward pass is shared.
        let mut grads = Grads::new(self.unet.params.len());
        let vjp = self.unet.backward_input(ctx, tape, v, &mut grads)?;
        Ok((eps, vjp))
    }
}

/// ∫₀ᵗ β(s) ds for the piecewise-linear β(s) of [`vp_beta`], exactly.
pub fn vp_beta_integral(schedule: &Schedule, t: f64) -> f64 {
    let b = &schedule.betas;
    let n = b.len();
    if n == 1 {
        return b[0] * t.clamp(0.0, 1.0);
    }
    // β(s) = n·b(u), u = s·(n − 1): ∫₀ᵗ β ds = n/(n − 1) ∫₀^{t(n−1)} b(u) du, b piecewise linear.
    let u = t.clamp(0.0, 1.0) * (n - 1) as f64;
    let whole = (u.floor() as usize).min(n - 2);
    let mut acc: f64 = (0..whole).map(|i| 0.5 * (b[i] + b[i + 1])).sum();
    let f = u - whole as f64;
    acc += f * b[whole] + 0.5 * f * f * (b[whole + 1] - b[whole]);
    n as f64 / (n - 1) as f64 * acc
}

/// σ(t) = √(1 − exp(−∫₀ᵗβ)) of the VP SDE.
pub fn vp_std(schedule: &Schedule, t: f64) -> f64 {
    (-(-vp_beta_integral(schedule, t)).exp_m1()).sqrt()
}

/// The integrator of [`ode_log_likelihood`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OdeSolver {
    /// Fixed-step Heun with [`LikelihoodOptions::steps`] steps uniform in √t.
    Heun,
    /// Adaptive Dormand–Prince 5(4) (scipy's RK45) with these tolerances;
    /// [`LikelihoodOptions::steps`] caps the accepted plus rejected steps.
    Rk45 {
        /// Relative tolerance.
        rtol: f64,
        /// Absolute tolerance.
        atol: f64,
    },
}

/// Options of [`ode_log_likelihood`].
#[derive(Clone, Copy, Debug)]
pub struct LikelihoodOptions {
    /// Heun: the steps N (2N model calls). RK45: the most steps (accepted and rejected) before
    /// giving up with an error.
    pub steps: usize,
    /// Integrator.
    pub solver: OdeSolver,
    /// t_min.
    pub t_min: f64,
    /// Seed of the Rademacher probe vectors.
    pub seed: u64,
}

impl Default for LikelihoodOptions {
    fn default() -> Self {
        LikelihoodOptions {
            steps: DEFAULT_LIKELIHOOD_STEPS,
            solver: OdeSolver::Heun,
            t_min: LIKELIHOOD_EPS,
            seed: 0,
        }
    }
}

/// What [`ode_log_likelihood`] returns, per sample, in nats.
#[derive(Clone, Debug)]
pub struct Likelihood {
    /// log p(x) = prior + delta.
    pub log_p: Vec<f64>,
    /// log N(x(1); 0, I).
    pub prior: Vec<f64>,
    /// ∫ ∇·F dt.
    pub delta: Vec<f64>,
    /// Model calls (each a forward and a vector–Jacobian product).
    pub evals: usize,
    /// Solver steps taken (RK45: accepted ones; rejected ones are in `evals`).
    pub steps: usize,
}

/// Rademacher vectors (±1), drawn once per call on the host.
fn rademacher(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = InitRng(seed ^ 0x7ade_3ac3);
    (0..n).map(|_| if rng.next_f64() < 0.5 { 1.0 } else { -1.0 }).collect()
}

/// Uniform dequantisation of 8-bit images scaled to [−1, 1]: each value v = 2k/255 − 1 becomes
/// x = 2(k + u)/256 − 1 with u ~ U[0, 1) from `seed`, the continuous data whose density
/// [`bits_per_dim`] turns into a bound on the discrete likelihood.
pub fn dequantize(images: &[f32], seed: u64) -> Vec<f32> {
    let mut rng = InitRng(seed ^ 0xde_9a47);
    images
        .iter()
        .map(|&v| {
            let k = ((v as f64 + 1.0) * 127.5).round().clamp(0.0, 255.0);
            (2.0 * (k + rng.next_f64()) / 256.0 - 1.0) as f32
        })
        .collect()
}

/// log p(x) of each sample of x `[B, C, H, W]` (data scaled to [−1, 1]) under the probability-flow
/// ODE of `model` with `schedule`'s VP SDE.
pub fn ode_log_likelihood(
    ctx: &Context,
    model: &dyn EpsVjp,
    schedule: &Schedule,
    x: &Tensor,
    opts: &LikelihoodOptions,
) -> Result<Likelihood> {
    let (b, c, h, w) = x.dims4("likelihood x")?;
    let d = c * h * w;
    if opts.steps == 0 {
        return Err(Error::arg("--ode-steps", "must be at least 1"));
    }
    if !(opts.t_min > 0.0 && opts.t_min < 1.0) {
        return Err(Error::arg("t_min", format!("{}: expected 0 < t_min < 1", opts.t_min)));
    }
    let label_scale = (schedule.len() - 1) as f64;
    let z = ctx.upload(x.shape(), &rademacher(b * d, opts.seed))?;
    let evals = std::cell::Cell::new(0usize);
    // (F(x, t), ∇·F) with F = a·x + k·ε̂, ∇·F = a·D + k·zᵀJz; the constant a·D is integrated
    // exactly on the host below, so the state's second part carries k·zᵀJz only.
    let drift = |x: &Tensor, t: f64| -> Result<(Tensor, Tensor)> {
        evals.set(evals.get() + 1);
        let beta = vp_beta(schedule, t);
        let (a, k) = (-0.5 * beta, 0.5 * beta / vp_std(schedule, t));
        let (eps, vjp) = model.eps_vjp(ctx, x, (t * label_scale) as f32, &z)?;
        let f = ew::axpby(ctx, x, &eps, a as f32, k as f32)?;
        // k·zᵀJz per sample: the row sums of vjp ⊙ z viewed as [B, D].
        let div = ew::sum_rows(ctx, &ew::mul(ctx, &vjp, &z)?, b, d, k as f32)?;
        Ok((f, div))
    };
    let (cur, delta, steps) = match opts.solver {
        OdeSolver::Heun => heun(ctx, &drift, x, b, opts)?,
        OdeSolver::Rk45 { rtol, atol } => {
            if !(rtol > 0.0 && atol > 0.0) {
                return Err(Error::arg(
                    "--ode-tol",
                    format!("rtol {rtol}, atol {atol}: expected tolerances > 0"),
                ));
            }
            rk45(ctx, &drift, x, b, opts, rtol, atol)?
        }
    };
    let x1 = ctx.read(&cur)?;
    let delta_zjz = ctx.read(&delta)?;
    // ∫ −½β(t)·D dt = −½D ∫β, exactly.
    let beta_part = -0.5 * d as f64 * (vp_beta_integral(schedule, 1.0) - vp_beta_integral(schedule, opts.t_min));
    let ln_2pi = (2.0 * std::f64::consts::PI).ln();
    let mut out = Likelihood {
        log_p: Vec::with_capacity(b),
        prior: Vec::with_capacity(b),
        delta: Vec::with_capacity(b),
        evals: evals.get(),
        steps,
    };
    for (i, row) in x1.chunks_exact(d).enumerate() {
        let sq: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let prior = -0.5 * (d as f64 * ln_2pi + sq);
        let delta = delta_zjz[i] as f64 + beta_part;
        out.prior.push(prior);
        out.delta.push(delta);
        out.log_p.push(prior + delta);
    }
    Ok(out)
}

/// The drift of the joint state (x, ∫ k·zᵀJz dt): (F(x, t), k·zᵀJz) per sample.
type Drift<'a> = dyn Fn(&Tensor, f64) -> Result<(Tensor, Tensor)> + 'a;

/// Fixed-step Heun from t_min to 1, steps uniform in √t: (x(1), ∫ k·zᵀJz dt, steps).
fn heun(
    ctx: &Context,
    drift: &Drift<'_>,
    x: &Tensor,
    b: usize,
    opts: &LikelihoodOptions,
) -> Result<(Tensor, Tensor, usize)> {
    let r0 = opts.t_min.sqrt();
    let grid = |k: usize| (r0 + (1.0 - r0) * k as f64 / opts.steps as f64).powi(2);
    let mut cur = x.clone();
    let delta = ctx.empty(&[b], "likelihood.delta")?;
    ew::fill(ctx, &delta, 0.0)?;
    let mut pending: Option<(Tensor, Tensor)> = None;
    for k in 0..opts.steps {
        let (t0, t1) = (grid(k), grid(k + 1));
        let dt = t1 - t0;
        let (f1, div1) = match pending.take() {
            Some(p) => p,
            None => drift(&cur, t0)?,
        };
        // Heun: Euler predictor, then the trapezoid of the two slopes.
        let x_pred = ew::axpby(ctx, &cur, &f1, 1.0, dt as f32)?;
        let (f2, div2) = drift(&x_pred, t1)?;
        let next = ew::axpby(ctx, &f1, &f2, 0.5 * dt as f32, 0.5 * dt as f32)?;
        ew::add_inplace(ctx, &next, &cur)?;
        ew::add_scaled_inplace(ctx, &delta, &div1, 0.5 * dt as f32)?;
        ew::add_scaled_inplace(ctx, &delta, &div2, 0.5 * dt as f32)?;
        cur = next;
        if k + 1 < opts.steps {
            pending = Some(drift(&cur, t1)?);
        }
    }
    Ok((cur, delta, opts.steps))
}

// Dormand–Prince 5(4): nodes, stage coefficients, and the 5th-order weights minus the 4th's.
const DP_C: [f64; 6] = [0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0];
const DP_A: [&[f64]; 6] = [
    &[],
    &[1.0 / 5.0],
    &[3.0 / 40.0, 9.0 / 40.0],
    &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
    &[19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0],
    &[
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
    ],
];
const DP_B: [f64; 6] = [
    35.0 / 384.0,
    0.0,
    500.0 / 1113.0,
    125.0 / 192.0,
    -2187.0 / 6784.0,
    11.0 / 84.0,
];
const DP_E: [f64; 7] = [
    71.0 / 57600.0,
    0.0,
    -71.0 / 16695.0,
    71.0 / 1920.0,
    -17253.0 / 339200.0,
    22.0 / 525.0,
    -1.0 / 40.0,
];

/// base + Σ cᵢ·kᵢ (terms with cᵢ = 0 skipped), as a new tensor.
fn combine(ctx: &Context, base: Option<&Tensor>, terms: &[(f64, &Tensor)]) -> Result<Tensor> {
    let mut live = terms.iter().filter(|(c, _)| *c != 0.0);
    let (c0, k0) = live.next().ok_or_else(|| Error::arg("combine", "no terms"))?;
    let out = match base {
        Some(base) => ew::axpby(ctx, base, k0, 1.0, *c0 as f32)?,
        None => ew::scale(ctx, k0, *c0 as f32)?,
    };
    for (c, k) in live {
        ew::add_scaled_inplace(ctx, &out, k, *c as f32)?;
    }
    Ok(out)
}

/// Σᵢ (eᵢ/sᵢ)² over both parts of the state with sᵢ = atol + rtol·max(|yᵢ|, |y_newᵢ|).
fn scaled_sq(err: &[f32], y: &[f32], y_new: &[f32], rtol: f64, atol: f64) -> f64 {
    err.iter()
        .zip(y.iter().zip(y_new))
        .map(|(&e, (&a, &b))| {
            let s = atol + rtol * (a.abs().max(b.abs()) as f64);
            (e as f64 / s).powi(2)
        })
        .sum()
}

/// Adaptive Dormand–Prince 5(4) from t_min to 1 with scipy's error control and first step:
/// (x(1), ∫ k·zᵀJz dt, accepted steps).
fn rk45(
    ctx: &Context,
    drift: &Drift<'_>,
    x: &Tensor,
    b: usize,
    opts: &LikelihoodOptions,
    rtol: f64,
    atol: f64,
) -> Result<(Tensor, Tensor, usize)> {
    let n = (x.numel() + b) as f64;
    let (t_end, mut t) = (1.0, opts.t_min);
    let mut y = x.clone();
    let mut dl = ctx.empty(&[b], "likelihood.delta")?;
    ew::fill(ctx, &dl, 0.0)?;
    let (mut y_host, mut dl_host) = (ctx.read(&y)?, vec![0.0f32; b]);
    let mut k1 = drift(&y, t)?;
    // scipy's select_initial_step: from the sizes of y and f, then of f's change over h0.
    let rms = |v: &[f32], w: &[f32]| -> f64 {
        let sq = |v: &[f32], y: &[f32]| -> f64 {
            v.iter()
                .zip(y)
                .map(|(&a, &y)| (a as f64 / (atol + rtol * y.abs() as f64)).powi(2))
                .sum()
        };
        ((sq(v, &y_host) + sq(w, &dl_host)) / n).sqrt()
    };
    let (f0_x, f0_d) = (ctx.read(&k1.0)?, ctx.read(&k1.1)?);
    let d0 = rms(&y_host, &dl_host);
    let d1 = rms(&f0_x, &f0_d);
    let h0 = if d0 < 1e-5 || d1 < 1e-5 { 1e-6 } else { 0.01 * d0 / d1 }.min(t_end - t);
    let y1 = ew::axpby(ctx, &y, &k1.0, 1.0, h0 as f32)?;
    let f1 = drift(&y1, t + h0)?;
    let (f1_x, f1_d) = (ctx.read(&f1.0)?, ctx.read(&f1.1)?);
    let diff_x: Vec<f32> = f1_x.iter().zip(&f0_x).map(|(a, b)| a - b).collect();
    let diff_d: Vec<f32> = f1_d.iter().zip(&f0_d).map(|(a, b)| a - b).collect();
    let d2 = rms(&diff_x, &diff_d) / h0;
    let h1 = if d1.max(d2) <= 1e-15 {
        (h0 * 1e-3).max(1e-6)
    } else {
        (0.01 / d1.max(d2)).powf(0.2)
    };
    let mut h = (100.0 * h0).min(h1).min(t_end - t);
    let (mut tries, mut accepted) = (0usize, 0usize);
    let mut rejected_last = false;
    while t < t_end {
        if tries == opts.steps {
            return Err(Error::arg(
                "--ode-steps",
                format!(
                    "RK45 took {tries} steps (rtol {rtol}, atol {atol}) and reached t = {t:.4e} of 1: \
                     raise --ode-steps or loosen --ode-tol"
                ),
            ));
        }
        tries += 1;
        h = h.min(t_end - t);
        // Stages 2..6, then the 5th-order solution and its slope (stage 7, reused as the next k1).
        let mut ks = vec![k1.clone()];
        for i in 1..6 {
            let xs: Vec<(f64, &Tensor)> = DP_A[i].iter().zip(&ks).map(|(a, k)| (h * a, &k.0)).collect();
            let yi = combine(ctx, Some(&y), &xs)?;
            ks.push(drift(&yi, t + DP_C[i] * h)?);
        }
        let bx: Vec<(f64, &Tensor)> = DP_B.iter().zip(&ks).map(|(w, k)| (h * w, &k.0)).collect();
        let bd: Vec<(f64, &Tensor)> = DP_B.iter().zip(&ks).map(|(w, k)| (h * w, &k.1)).collect();
        let y_new = combine(ctx, Some(&y), &bx)?;
        let dl_new = combine(ctx, Some(&dl), &bd)?;
        let k7 = drift(&y_new, t + h)?;
        ks.push(k7);
        let ex: Vec<(f64, &Tensor)> = DP_E.iter().zip(&ks).map(|(w, k)| (h * w, &k.0)).collect();
        let ed: Vec<(f64, &Tensor)> = DP_E.iter().zip(&ks).map(|(w, k)| (h * w, &k.1)).collect();
        let (err_x, err_d) = (combine(ctx, None, &ex)?, combine(ctx, None, &ed)?);
        let (yn_host, dn_host) = (ctx.read(&y_new)?, ctx.read(&dl_new)?);
        let sq = scaled_sq(&ctx.read(&err_x)?, &y_host, &yn_host, rtol, atol)
            + scaled_sq(&ctx.read(&err_d)?, &dl_host, &dn_host, rtol, atol);
        let err = (sq / n).sqrt();
        if !err.is_finite() {
            return Err(Error::Gpu(format!(
                "RK45 error estimate is {err} at t = {t:.4e}: the model returned NaN or inf"
            )));
        }
        if err <= 1.0 {
            let grow = if err == 0.0 {
                10.0
            } else {
                (0.9 * err.powf(-0.2)).min(10.0)
            };
            t += h;
            h *= if rejected_last { grow.min(1.0) } else { grow };
            y = y_new;
            dl = dl_new;
            (y_host, dl_host) = (yn_host, dn_host);
            k1 = ks.pop().expect("stage 7");
            accepted += 1;
            rejected_last = false;
        } else {
            h *= (0.9 * err.powf(-0.2)).max(0.2);
            rejected_last = true;
        }
    }
    Ok((y, dl, accepted))
}

/// Bits/dim of 8-bit data from log p(x) of its uniformly dequantised, [−1, 1]-scaled version
/// with D dimensions: −log₂ p(x)/D + 7.
pub fn bits_per_dim(log_p: f64, dims: usize) -> f64 {
    -log_p / (dims as f64 * std::f64::consts::LN_2) + 7.0
}
