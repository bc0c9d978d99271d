//! CPU f64 reference for the loss ops.

/// Σ(pred - target)²/n.
pub fn mse_loss(pred: &[f64], target: &[f64]) -> f64 {
    let s: f64 = pred.iter().zip(target).map(|(p, t)| (p - t) * (p - t)).sum();
    s / pred.len() as f64
}

/// ∂mse/∂pred · grad_scale = 2·(pred - target)/n · grad_scale.
pub fn mse_loss_backward(pred: &[f64], target: &[f64], grad_scale: f64) -> Vec<f64> {
    let k = 2.0 * grad_scale / pred.len() as f64;
    pred.iter().zip(target).map(|(p, t)| k * (p - t)).collect()
}

/// Σx.
pub fn sum(x: &[f64]) -> f64 {
    x.iter().sum()
}
