//! CPU f64 reference for dropout: the mask comes from the same Philox uniforms as the GPU.

use crate::reference::random::{block, uniform_from_bits};

/// The uniform deciding element i: word i mod 4 of Philox block ⌊i/4⌋.
fn uniform_of(seed: u64, stream: u32, i: u64) -> f32 {
    uniform_from_bits(block(seed, stream, i / 4)[(i % 4) as usize])
}

fn mask(n: usize, p: f64, seed: u64, stream: u32) -> impl Iterator<Item = f64> {
    let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    (0..n as u64).map(move |i| {
        if uniform_of(seed, stream, i) as f64 >= p {
            scale
        } else {
            0.0
        }
    })
}

/// out\[i\] = x\[i\]/(1 − p) if the uniform of word i mod 4 of Philox block ⌊i/4⌋ is ≥ p, else 0.
pub fn dropout(x: &[f64], p: f64, seed: u64, stream: u32) -> Vec<f64> {
    mask(x.len(), p, seed, stream).zip(x).map(|(m, &v)| m * v).collect()
}

/// dx\[i\] = dy\[i\]/(1 − p) where the forward kept element i, else 0.
pub fn dropout_backward(dy: &[f64], p: f64, seed: u64, stream: u32) -> Vec<f64> {
    mask(dy.len(), p, seed, stream).zip(dy).map(|(m, &g)| m * g).collect()
}
