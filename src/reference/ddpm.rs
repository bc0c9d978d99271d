//! CPU f64 reference for the fused DDPM kernels; the noise is the same Philox normal stream as
//! on the GPU ([`crate::reference::random::normal`]).

use crate::reference::random::normal;

/// (x_t, eps): eps\[i\] = normal(seed, stream, i), x_t\[i\] = sab\[t_b\]·x0\[i\] + somab\[t_b\]·eps\[i\] with
/// b = i / per_sample and t_b = t\[b\] clamped to [0, T−1] and truncated.
pub fn q_sample(
    x0: &[f64],
    t: &[f64],
    sqrt_alpha_bar: &[f64],
    sqrt_one_minus_alpha_bar: &[f64],
    seed: u64,
    stream: u32,
) -> (Vec<f64>, Vec<f64>) {
    let per_sample = x0.len() / t.len();
    let last = (sqrt_alpha_bar.len() - 1) as f64;
    let mut xt = vec![0.0; x0.len()];
    let mut eps = vec![0.0; x0.len()];
    for i in 0..x0.len() {
        let tb = t[i / per_sample].clamp(0.0, last) as usize;
        eps[i] = normal(seed, stream, i as u64) as f64;
        xt[i] = sqrt_alpha_bar[tb] * x0[i] + sqrt_one_minus_alpha_bar[tb] * eps[i];
    }
    (xt, eps)
}

/// (x_t, v): x_t as [`q_sample`] (same noise) and v\[i\] = sab\[t_b\]·eps\[i\] − somab\[t_b\]·x0\[i\].
pub fn q_sample_v(
    x0: &[f64],
    t: &[f64],
    sqrt_alpha_bar: &[f64],
    sqrt_one_minus_alpha_bar: &[f64],
    seed: u64,
    stream: u32,
) -> (Vec<f64>, Vec<f64>) {
    let (xt, eps) = q_sample(x0, t, sqrt_alpha_bar, sqrt_one_minus_alpha_bar, seed, stream);
    let per_sample = x0.len() / t.len();
    let last = (sqrt_alpha_bar.len() - 1) as f64;
    let v = (0..x0.len())
        .map(|i| {
            let tb = t[i / per_sample].clamp(0.0, last) as usize;
            sqrt_alpha_bar[tb] * eps[i] - sqrt_one_minus_alpha_bar[tb] * x0[i]
        })
        .collect();
    (xt, v)
}

/// Split a learned-variance model output [B, 2·C, ...] into (e, v), each [B, C, ...].
pub fn split_channels(out: &[f64], batch: usize) -> (Vec<f64>, Vec<f64>) {
    let per = out.len() / batch / 2;
    let (mut e, mut v) = (Vec::with_capacity(per * batch), Vec::with_capacity(per * batch));
    for item in out.chunks_exact(2 * per) {
        e.extend_from_slice(&item[..per]);
        v.extend_from_slice(&item[per..]);
    }
    (e, v)
}

/// a·x + b·e + σ·z, z\[i\] = normal(seed, stream, i).
pub fn axpbz(x: &[f64], e: &[f64], a: f64, b: f64, sigma: f64, seed: u64, stream: u32) -> Vec<f64> {
    (0..x.len())
        .map(|i| a * x[i] + b * e[i] + sigma * normal(seed, stream, i as u64) as f64)
        .collect()
}

/// x_{t−1} = coef_x·x_t − coef_eps·eps + σ·z.
pub fn ddpm_step(x_t: &[f64], eps: &[f64], coef_x: f64, coef_eps: f64, sigma: f64, seed: u64, stream: u32) -> Vec<f64> {
    axpbz(x_t, eps, coef_x, -coef_eps, sigma, seed, stream)
}

/// One fused sampler step: x0 = s_x·x − s_e·e (clamped if `clip`); returns
/// (c_x·x + c_x0·x0 + c_e·e + c_prev·x0_prev + σ·z, x0).
#[allow(clippy::too_many_arguments)]
pub fn sampler_update(
    x: &[f64],
    e: &[f64],
    x0_prev: Option<&[f64]>,
    s: (f64, f64, bool),
    c: (f64, f64, f64, f64),
    sigma: f64,
    seed: u64,
    stream: u32,
) -> (Vec<f64>, Vec<f64>) {
    sampler_step(
        x,
        e,
        x0_prev,
        s,
        c,
        |_| sigma,
        |i| normal(seed, stream, i as u64) as f64,
    )
}

/// [`sampler_update`] with the noise z given (z\[i\] = noise\[i\]).
pub fn sampler_update_with_noise(
    x: &[f64],
    e: &[f64],
    x0_prev: Option<&[f64]>,
    s: (f64, f64, bool),
    c: (f64, f64, f64, f64),
    sigma: f64,
    noise: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    sampler_step(x, e, x0_prev, s, c, |_| sigma, |i| noise[i])
}

/// [`sampler_update_with_noise`] with a learned variance: the noise scale of element i is
/// σ·exp(σ_v·v\[i\]) (`v` the model's variance channel, split off by [`split_channels`]).
#[allow(clippy::too_many_arguments)]
pub fn sampler_update_learned_with_noise(
    x: &[f64],
    e: &[f64],
    v: &[f64],
    x0_prev: Option<&[f64]>,
    s: (f64, f64, bool),
    c: (f64, f64, f64, f64),
    (sigma, sigma_v): (f64, f64),
    noise: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    sampler_step(x, e, x0_prev, s, c, |i| sigma * (sigma_v * v[i]).exp(), |i| noise[i])
}

/// [`sampler_update_learned_with_noise`] with z\[i\] = normal(seed, stream, i).
#[allow(clippy::too_many_arguments)]
pub fn sampler_update_learned(
    x: &[f64],
    e: &[f64],
    v: &[f64],
    x0_prev: Option<&[f64]>,
    s: (f64, f64, bool),
    c: (f64, f64, f64, f64),
    (sigma, sigma_v): (f64, f64),
    seed: u64,
    stream: u32,
) -> (Vec<f64>, Vec<f64>) {
    sampler_step(
        x,
        e,
        x0_prev,
        s,
        c,
        |i| sigma * (sigma_v * v[i]).exp(),
        |i| normal(seed, stream, i as u64) as f64,
    )
}

fn sampler_step(
    x: &[f64],
    e: &[f64],
    x0_prev: Option<&[f64]>,
    (s_x, s_e, clip): (f64, f64, bool),
    (c_x, c_x0, c_e, c_prev): (f64, f64, f64, f64),
    sigma: impl Fn(usize) -> f64,
    z: impl Fn(usize) -> f64,
) -> (Vec<f64>, Vec<f64>) {
    let mut out = Vec::with_capacity(x.len());
    let mut x0s = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        let mut x0 = s_x * x[i] - s_e * e[i];
        if clip {
            x0 = x0.clamp(-1.0, 1.0);
        }
        let mut y = c_x * x[i] + c_x0 * x0 + c_e * e[i];
        if let Some(p) = x0_prev {
            y += c_prev * p[i];
        }
        let sigma = sigma(i);
        if sigma != 0.0 {
            y += sigma * z(i);
        }
        out.push(y);
        x0s.push(x0);
    }
    (out, x0s)
}
