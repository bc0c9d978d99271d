//! CPU f64 reference for the embedding ops.

/// diffusers' `get_timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift, scale=1,
/// max_period)` in f64: `[B, dim]` flattened.
pub fn timestep_embedding(
    t: &[f64],
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
    max_period: f64,
) -> Vec<f64> {
    let half = dim / 2;
    let mut out = Vec::with_capacity(t.len() * dim);
    for &tb in t {
        let args: Vec<f64> = (0..half)
            .map(|j| tb * (-max_period.ln() * j as f64 / (half as f64 - downscale_freq_shift)).exp())
            .collect();
        let sin = args.iter().map(|a| a.sin());
        let cos = args.iter().map(|a| a.cos());
        if flip_sin_to_cos {
            out.extend(cos.chain(sin));
        } else {
            out.extend(sin.chain(cos));
        }
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}

fn class_of(label: f64, k: usize) -> Option<usize> {
    let r = label.round();
    (r >= 0.0 && r < k as f64).then_some(r as usize)
}

/// table `[k, d]` rows picked by `labels` → `[B, d]`; out-of-range labels give zero rows.
pub fn embedding_lookup(table: &[f64], labels: &[f64], k: usize, d: usize) -> Vec<f64> {
    let mut out = vec![0.0; labels.len() * d];
    for (b, &l) in labels.iter().enumerate() {
        if let Some(c) = class_of(l, k) {
            out[b * d..(b + 1) * d].copy_from_slice(&table[c * d..(c + 1) * d]);
        }
    }
    out
}

/// Gradient of [`embedding_lookup`] for the table: dtable `[k, d]`.
pub fn embedding_backward(labels: &[f64], dy: &[f64], k: usize, d: usize) -> Vec<f64> {
    let mut dt = vec![0.0; k * d];
    for (b, &l) in labels.iter().enumerate() {
        if let Some(c) = class_of(l, k) {
            for j in 0..d {
                dt[c * d + j] += dy[b * d + j];
            }
        }
    }
    dt
}
