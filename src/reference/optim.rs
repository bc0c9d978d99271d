//! CPU f64 reference for the optimizer kernels (torch.optim.Adam / AdamW semantics).

/// One Adam/AdamW step in place: g = grad·scale; param ·= 1 − lr·wd; m = β1·m + (1−β1)·g;
/// v = β2·v + (1−β2)·g²; param −= lr·m̂/(√v̂ + eps) with m̂ = m/(1−β1^step), v̂ = v/(1−β2^step).
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    param: &mut [f64],
    grad: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    step: u32,
    scale: f64,
) {
    let bc1 = 1.0 - beta1.powi(step as i32);
    let bc2 = 1.0 - beta2.powi(step as i32);
    for i in 0..param.len() {
        let g = grad[i] * scale;
        param[i] *= 1.0 - lr * weight_decay;
        m[i] = beta1 * m[i] + (1.0 - beta1) * g;
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
        param[i] -= lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
    }
}

/// Σ g² over all tensors.
pub fn grad_norm_sq(grads: &[&[f64]]) -> f64 {
    grads.iter().flat_map(|g| g.iter()).map(|x| x * x).sum()
}

/// min(1, max_norm/(√norm_sq + 1e-6)).
pub fn clip_scale(norm_sq: f64, max_norm: f64) -> f64 {
    (max_norm / (norm_sq.sqrt() + 1e-6)).min(1.0)
}

/// decay·ema + (1 − decay)·param.
pub fn ema_update(ema: &[f64], param: &[f64], decay: f64) -> Vec<f64> {
    ema.iter()
        .zip(param)
        .map(|(e, p)| decay * e + (1.0 - decay) * p)
        .collect()
}
