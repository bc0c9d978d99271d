//! CPU f64 references for the matmul ops. Plain loops; all matrices row-major.

/// op(x)[i, j] of a row-major matrix stored as [rows, cols], where op transposes if `trans`.
fn at(x: &[f64], cols: usize, trans: bool, i: usize, j: usize) -> f64 {
    if trans {
        x[j * cols + i]
    } else {
        x[i * cols + j]
    }
}

/// out\[b\] = op(a\[b\])·op(b\[b\]) for `batch` products: a \[M,K\] (or \[K,M\] if trans_a), b \[K,N\]
/// (or \[N,K\] if trans_b) per batch → [batch, M, N].
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f64],
    b: &[f64],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
) -> Vec<f64> {
    let mut out = vec![0.0; batch * m * n];
    let a_cols = if trans_a { m } else { k };
    let b_cols = if trans_b { k } else { n };
    for bt in 0..batch {
        let ab = &a[bt * m * k..(bt + 1) * m * k];
        let bb = &b[bt * k * n..(bt + 1) * k * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for l in 0..k {
                    s += at(ab, a_cols, trans_a, i, l) * at(bb, b_cols, trans_b, l, j);
                }
                out[(bt * m + i) * n + j] = s;
            }
        }
    }
    out
}

/// alpha·op(a)·op(b) + beta·out_old (beta = 0 ignores out_old, even NaN); shapes as [`matmul`].
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    a: &[f64],
    b: &[f64],
    out_old: &[f64],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    alpha: f64,
    beta: f64,
) -> Vec<f64> {
    let prod = matmul(a, b, batch, m, k, n, trans_a, trans_b);
    prod.iter()
        .zip(out_old)
        .map(|(p, o)| if beta == 0.0 { alpha * p } else { alpha * p + beta * o })
        .collect()
}

/// y = x·wᵀ + bias: x \[M,K\], w \[N,K\], bias \[N\] → \[M,N\].
pub fn linear(x: &[f64], w: &[f64], bias: Option<&[f64]>, m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut y = matmul(x, w, 1, m, k, n, false, true);
    if let Some(bias) = bias {
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] += bias[j];
            }
        }
    }
    y
}

/// Gradients of [`linear`] given dy \[M,N\]: (dx = dy·w \[M,K\], dw = dyᵀ·x \[N,K\], db = Σ_m dy \[N\]).
pub fn linear_backward(
    x: &[f64],
    w: &[f64],
    dy: &[f64],
    m: usize,
    k: usize,
    n: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; m * k];
    let mut dw = vec![0.0; n * k];
    for i in 0..m {
        for j in 0..n {
            let g = dy[i * n + j];
            for l in 0..k {
                dx[i * k + l] += g * w[j * k + l];
                dw[j * k + l] += g * x[i * k + l];
            }
        }
    }
    (dx, dw, sum_rows(dy, m, n))
}

/// Column sums: x \[M,N\] → \[N\].
pub fn sum_rows(x: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut y = vec![0.0; n];
    for i in 0..m {
        for j in 0..n {
            y[j] += x[i * n + j];
        }
    }
    y
}
