//! CPU f64 references for the elementwise ops.

/// out = alpha·a + beta·b.
pub fn axpby(a: &[f64], b: &[f64], alpha: f64, beta: f64) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| alpha * x + beta * y).collect()
}
