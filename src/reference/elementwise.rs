//! CPU f64 references for the elementwise ops.

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// out = alpha·a + beta·b.
pub fn axpby(a: &[f64], b: &[f64], alpha: f64, beta: f64) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| alpha * x + beta * y).collect()
}

/// out = a·b.
pub fn mul(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x * y).collect()
}

/// out = s·x.
pub fn scale(x: &[f64], s: f64) -> Vec<f64> {
    x.iter().map(|v| s * v).collect()
}

/// out = x·σ(x).
pub fn silu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v * sigmoid(v)).collect()
}

/// dx = dy·σ(x)·(1 + x·(1 - σ(x))).
pub fn silu_backward(x: &[f64], dy: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| {
            let s = sigmoid(v);
            g * s * (1.0 + v * (1.0 - s))
        })
        .collect()
}

/// out[r·hw + s] = x[r·hw + s] + b\[r\] for each of the N·C rows r of length hw.
pub fn add_channel_bias(x: &[f64], b: &[f64], hw: usize) -> Vec<f64> {
    x.iter().enumerate().map(|(i, v)| v + b[i / hw]).collect()
}

/// out\[r\] = Σ_s dy[r·hw + s]: the gradient of [`add_channel_bias`] with respect to b.
pub fn channel_sum(dy: &[f64], hw: usize) -> Vec<f64> {
    dy.chunks(hw).map(|row| row.iter().sum()).collect()
}
