//! Importance sampling of the timestep for the L_vlb objective (Nichol & Dhariwal 2021, §3.3;
//! improved-diffusion's `LossSecondMomentResampler`): keep the last 10 values of L_t for every t;
//! until each t has 10, sample t uniformly; then p_t ∝ √E\[L_t²\] (mixed with a small uniform
//! share so no t is starved), and weight the sampled term by 1/(T·p_t) so that
//! E_p[L_t/(T p_t)] = (1/T) Σ_t L_t, the uniform average.

use crate::error::{Error, Result};

/// Loss values kept per timestep.
pub const HISTORY_PER_TERM: usize = 10;

/// The loss history and the sampling distribution it implies.
#[derive(Clone, Debug)]
pub struct LossSecondMoment {
    /// history[t]: the last `counts[t]` (≤ 10) values of L_t, oldest first.
    history: Vec<Vec<f64>>,
    /// Share of the uniform distribution mixed in (improved-diffusion: 0.001).
    pub uniform_prob: f64,
}

impl LossSecondMoment {
    /// An empty history over `t` timesteps, with improved-diffusion's uniform share 0.001.
    pub fn new(t: usize) -> Result<Self> {
        if t == 0 {
            return Err(Error::arg("num_train_timesteps", "must be at least 1"));
        }
        Ok(LossSecondMoment {
            history: vec![Vec::with_capacity(HISTORY_PER_TERM); t],
            uniform_prob: 0.001,
        })
    }

    /// Number of timesteps T.
    pub fn len(&self) -> usize {
        self.history.len()
    }

    /// Always false (T ≥ 1).
    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }

    /// Record L_t for timestep `t`; past 10 values the oldest is dropped.
    pub fn update(&mut self, t: usize, loss: f64) -> Result<()> {
        let n = self.history.len();
        let h = self
            .history
            .get_mut(t)
            .ok_or_else(|| Error::arg("t", format!("{t} is outside 0..{n}")))?;
        if !loss.is_finite() {
            return Err(Error::arg("loss", format!("L_{t} = {loss} is not finite")));
        }
        if h.len() == HISTORY_PER_TERM {
            h.remove(0);
        }
        h.push(loss);
        Ok(())
    }

    /// The values kept for timestep `t`, oldest first.
    pub fn history(&self, t: usize) -> &[f64] {
        &self.history[t]
    }

    /// Whether every timestep has its 10 values (before that, sampling is uniform).
    pub fn warmed_up(&self) -> bool {
        self.history.iter().all(|h| h.len() == HISTORY_PER_TERM)
    }

    /// p_t: uniform during warm-up, else (1 − u)·√E\[L_t²\]/Σ_s √E\[L_s²\] + u/T with u =
    /// `uniform_prob` (uniform as well if every history is all zeros).
    pub fn probabilities(&self) -> Vec<f64> {
        let t = self.history.len() as f64;
        if !self.warmed_up() {
            return vec![1.0 / t; self.history.len()];
        }
        let w: Vec<f64> = self
            .history
            .iter()
            .map(|h| (h.iter().map(|l| l * l).sum::<f64>() / h.len() as f64).sqrt())
            .collect();
        let total: f64 = w.iter().sum();
        if total <= 0.0 {
            return vec![1.0 / t; self.history.len()];
        }
        w.iter()
            .map(|&w| w / total * (1.0 - self.uniform_prob) + self.uniform_prob / t)
            .collect()
    }

    /// Draw a timestep from `u` uniform in [0, 1) by the inverse CDF of [`Self::probabilities`];
    /// returns (t, 1/(T·p_t)), the weight that keeps the loss an unbiased estimate of the uniform
    /// average.
    pub fn sample(&self, u: f64) -> (usize, f64) {
        let p = self.probabilities();
        let mut acc = 0.0;
        let mut t = p.len() - 1;
        for (i, &pi) in p.iter().enumerate() {
            acc += pi;
            if u < acc {
                t = i;
                break;
            }
        }
        (t, 1.0 / (p.len() as f64 * p[t]))
    }
}

impl LossSecondMoment {
    /// The history as two tensors for a checkpoint: values `[T, 10]` (zero-padded, oldest
    /// first) and counts `[T]`. The values are f32 (the losses come from the GPU as f32), so a
    /// round trip is exact.
    pub fn to_host(&self) -> (Vec<f32>, Vec<f32>) {
        let mut values = vec![0.0f32; self.history.len() * HISTORY_PER_TERM];
        let mut counts = Vec::with_capacity(self.history.len());
        for (t, h) in self.history.iter().enumerate() {
            for (i, &v) in h.iter().enumerate() {
                values[t * HISTORY_PER_TERM + i] = v as f32;
            }
            counts.push(h.len() as f32);
        }
        (values, counts)
    }

    /// Rebuild from [`LossSecondMoment::to_host`]'s tensors.
    pub fn from_host(values: &[f32], counts: &[f32]) -> Result<Self> {
        let t = counts.len();
        if values.len() != t * HISTORY_PER_TERM {
            return Err(Error::arg(
                "importance history",
                format!(
                    "{} values for {t} timesteps; expected {}",
                    values.len(),
                    t * HISTORY_PER_TERM
                ),
            ));
        }
        let mut s = Self::new(t)?;
        for (ti, &c) in counts.iter().enumerate() {
            if !(0.0..=HISTORY_PER_TERM as f32).contains(&c) || c.fract() != 0.0 {
                return Err(Error::arg("importance history", format!("count {c} at t = {ti}")));
            }
            for i in 0..c as usize {
                s.update(ti, values[ti * HISTORY_PER_TERM + i] as f64)?;
            }
        }
        Ok(s)
    }
}
