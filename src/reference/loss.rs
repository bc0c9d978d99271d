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

/// Mean softmax cross-entropy of `logits` [rows, k] against `labels` (class indices), and its
/// gradient with respect to the logits times `grad_scale`: (softmax − onehot)/rows · grad_scale.
pub fn softmax_cross_entropy(logits: &[f64], labels: &[usize], k: usize, grad_scale: f64) -> (f64, Vec<f64>) {
    let rows = labels.len();
    assert_eq!(logits.len(), rows * k);
    let mut total = 0.0;
    let mut grad = vec![0.0; rows * k];
    for (r, &y) in labels.iter().enumerate() {
        let z = &logits[r * k..(r + 1) * k];
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        total += s.ln() + m - z[y];
        for j in 0..k {
            let sm = (z[j] - m).exp() / s;
            grad[r * k + j] = grad_scale * (sm - if j == y { 1.0 } else { 0.0 }) / rows as f64;
        }
    }
    (total / rows as f64, grad)
}
