//! CPU f64 reference for the learned-variance bound term (`ops::vlb`): the forward from the
//! same KL and discretized-Gaussian functions as `diffusion::bpd` (checked there against
//! improved-diffusion), the gradient written out by hand.

use crate::diffusion::bpd::{approx_standard_normal_cdf, discretized_gaussian_log_likelihood, normal_kl};

/// d/dx of improved-diffusion's tanh approximation of Φ.
fn cdf_grad(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let th = (k * (x + 0.044715 * x.powi(3))).tanh();
    0.5 * (1.0 - th * th) * k * (1.0 + 3.0 * 0.044715 * x * x)
}

/// (−log P(x), ∂/∂mean, ∂/∂log_scale) of the discretized Gaussian decoder.
pub fn decoder_nll_and_grad(x: f64, mean: f64, log_scale: f64) -> (f64, f64, f64) {
    let inv = (-log_scale).exp();
    let (up, lo) = (inv * (x - mean + 1.0 / 255.0), inv * (x - mean - 1.0 / 255.0));
    let (p, dp_up, dp_lo) = if x < -0.999 {
        (approx_standard_normal_cdf(up), cdf_grad(up), 0.0)
    } else if x > 0.999 {
        (1.0 - approx_standard_normal_cdf(lo), 0.0, -cdf_grad(lo))
    } else {
        (
            approx_standard_normal_cdf(up) - approx_standard_normal_cdf(lo),
            cdf_grad(up),
            -cdf_grad(lo),
        )
    };
    let nll = -discretized_gaussian_log_likelihood(x, mean, log_scale);
    if p <= 1e-12 {
        return (nll, 0.0, 0.0);
    }
    let g = -1.0 / p;
    (nll, g * (dp_up + dp_lo) * -inv, g * (dp_up * -up + dp_lo * -lo))
}

/// The op's contract in f64: (vb per sample in bits/dim, dout). `out` is `[B, 2D]` per sample
/// (ε_θ then v), `x0`, `x_t`, `gin` `[B, D]`, `coefs[b]` as `ops::vlb::vlb_coefs`.
pub fn vlb_terms(
    out: &[f64],
    x0: &[f64],
    x_t: &[f64],
    coefs: &[[f64; 8]],
    weights: &[f64],
    gin: &[f64],
    grad_mean: bool,
) -> (Vec<f64>, Vec<f64>) {
    let b = coefs.len();
    let d = x0.len() / b;
    let ln2 = std::f64::consts::LN_2;
    let mut vb = vec![0.0; b];
    let mut dout = vec![0.0; out.len()];
    for s in 0..b {
        let [c0, ct, lv_min, lv_max, x0_x, x0_m, dec, _] = coefs[s];
        let scale = weights[s] / (d as f64 * ln2);
        let mut acc = 0.0;
        for i in 0..d {
            let (e_idx, v_idx) = (s * 2 * d + i, s * 2 * d + d + i);
            let (xt, x0v, m, v) = (x_t[s * d + i], x0[s * d + i], out[e_idx], out[v_idx]);
            let mu_th = c0 * (x0_x * xt - x0_m * m) + ct * xt;
            let frac = (v + 1.0) / 2.0;
            let lv = frac * lv_max + (1.0 - frac) * lv_min;
            let (term, d_mu, d_lv) = if dec != 0.0 {
                let (nll, dm, dls) = decoder_nll_and_grad(x0v, mu_th, 0.5 * lv);
                (nll, dm, 0.5 * dls)
            } else {
                let mu = c0 * x0v + ct * xt;
                let e = (-lv).exp();
                (
                    normal_kl(mu, lv_min, mu_th, lv),
                    -(mu - mu_th) * e,
                    0.5 * (1.0 - (lv_min - lv).exp() - (mu - mu_th).powi(2) * e),
                )
            };
            acc += term;
            dout[e_idx] = gin[s * d + i] + if grad_mean { scale * d_mu * c0 * -x0_m } else { 0.0 };
            dout[v_idx] = scale * d_lv * 0.5 * (lv_max - lv_min);
        }
        vb[s] = acc / (d as f64 * ln2);
    }
    (vb, dout)
}
