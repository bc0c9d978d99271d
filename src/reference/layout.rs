//! CPU f64 reference for the layout ops. Tensors are flattened row-major; `hw` = H·W (or L).

/// cat(a `[n, ca, hw]`, b `[n, cb, hw]`) along channels → `[n, ca + cb, hw]`.
pub fn concat_channels(a: &[f64], b: &[f64], n: usize, ca: usize, cb: usize, hw: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    for i in 0..n {
        out.extend_from_slice(&a[i * ca * hw..(i + 1) * ca * hw]);
        out.extend_from_slice(&b[i * cb * hw..(i + 1) * cb * hw]);
    }
    out
}

/// (x[:, :ca], x[:, ca:]) of x `[n, c, hw]`: the adjoint (and inverse) of [`concat_channels`].
pub fn split_channels(x: &[f64], n: usize, c: usize, ca: usize, hw: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..n {
        let s = &x[i * c * hw..(i + 1) * c * hw];
        a.extend_from_slice(&s[..ca * hw]);
        b.extend_from_slice(&s[ca * hw..]);
    }
    (a, b)
}

/// Nearest 2x: x `[n, c, h, w]` → `[n, c, 2h, 2w]`, out[.., y, x] = x[.., y/2, x/2].
pub fn upsample_nearest2x(x: &[f64], n: usize, c: usize, h: usize, w: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * c * 4 * h * w];
    for p in 0..n * c {
        for y in 0..2 * h {
            for xx in 0..2 * w {
                out[(p * 2 * h + y) * 2 * w + xx] = x[(p * h + y / 2) * w + xx / 2];
            }
        }
    }
    out
}

/// Adjoint of [`upsample_nearest2x`]: dy `[n, c, 2h, 2w]` → dx `[n, c, h, w]`.
pub fn upsample_nearest2x_backward(dy: &[f64], n: usize, c: usize, h: usize, w: usize) -> Vec<f64> {
    let mut dx = vec![0.0; n * c * h * w];
    for p in 0..n * c {
        for y in 0..2 * h {
            for xx in 0..2 * w {
                dx[(p * h + y / 2) * w + xx / 2] += dy[(p * 2 * h + y) * 2 * w + xx];
            }
        }
    }
    dx
}

/// `[n, c, hw]` → `[n, hw, c]`.
pub fn nchw_to_nlc(x: &[f64], n: usize, c: usize, hw: usize) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for i in 0..n {
        for ci in 0..c {
            for s in 0..hw {
                out[(i * hw + s) * c + ci] = x[(i * c + ci) * hw + s];
            }
        }
    }
    out
}

/// `[n, l, c]` → `[n, c, l]`.
pub fn nlc_to_nchw(x: &[f64], n: usize, l: usize, c: usize) -> Vec<f64> {
    nchw_to_nlc(x, n, l, c)
}
