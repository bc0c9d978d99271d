//! CPU f64 reference for the groupnorm ops. Tensors are NCHW flattened, `hw` = H·W (or L).

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// Per (sample, group) (mean, rstd) = (Σx/m, 1/sqrt(Σ(x-mean)²/m + eps)), flattened `[N, G, 2]`.
pub fn group_norm_stats(x: &[f64], n: usize, c: usize, hw: usize, groups: usize, eps: f64) -> Vec<f64> {
    let m = c / groups * hw;
    let mut stats = Vec::with_capacity(n * groups * 2);
    for grp in 0..n * groups {
        let xs = &x[grp * m..(grp + 1) * m];
        let mean = xs.iter().sum::<f64>() / m as f64;
        let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m as f64;
        stats.push(mean);
        stats.push(1.0 / (var + eps).sqrt());
    }
    stats
}

/// y = GroupNorm(x)·γ + β, or SiLU of that when `silu`; returns (y, stats `[N, G, 2]`).
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    groups: usize,
    eps: f64,
    silu: bool,
) -> (Vec<f64>, Vec<f64>) {
    let stats = group_norm_stats(x, n, c, hw, groups, eps);
    let cpg = c / groups;
    let mut y = vec![0.0; x.len()];
    for ni in 0..n {
        for ci in 0..c {
            let grp = ni * groups + ci / cpg;
            let (mean, rstd) = (stats[2 * grp], stats[2 * grp + 1]);
            for s in 0..hw {
                let i = (ni * c + ci) * hw + s;
                let pre = (x[i] - mean) * rstd * gamma[ci] + beta[ci];
                y[i] = if silu { pre * sigmoid(pre) } else { pre };
            }
        }
    }
    (y, stats)
}

/// Gradients of [`group_norm`] for upstream gradient `dy`: (dx, dγ `[C]`, dβ `[C]`).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    dy: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    groups: usize,
    eps: f64,
    silu: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let stats = group_norm_stats(x, n, c, hw, groups, eps);
    let cpg = c / groups;
    let m = (cpg * hw) as f64;
    let mut dx = vec![0.0; x.len()];
    let mut dgamma = vec![0.0; c];
    let mut dbeta = vec![0.0; c];
    // g = ∂L/∂pre and xhat, per element
    let mut g = vec![0.0; x.len()];
    let mut xhat = vec![0.0; x.len()];
    for ni in 0..n {
        for ci in 0..c {
            let grp = ni * groups + ci / cpg;
            for s in 0..hw {
                let i = (ni * c + ci) * hw + s;
                xhat[i] = (x[i] - stats[2 * grp]) * stats[2 * grp + 1];
                let pre = xhat[i] * gamma[ci] + beta[ci];
                g[i] = if silu {
                    let sg = sigmoid(pre);
                    dy[i] * sg * (1.0 + pre * (1.0 - sg))
                } else {
                    dy[i]
                };
                dgamma[ci] += g[i] * xhat[i];
                dbeta[ci] += g[i];
            }
        }
    }
    for ni in 0..n {
        for gi in 0..groups {
            let rstd = stats[2 * (ni * groups + gi) + 1];
            let range = (ni * c + gi * cpg) * hw..(ni * c + (gi + 1) * cpg) * hw;
            let (mut s1, mut s2) = (0.0, 0.0);
            for i in range.clone() {
                let ci = (i / hw) % c;
                s1 += gamma[ci] * g[i];
                s2 += gamma[ci] * g[i] * xhat[i];
            }
            for i in range {
                let ci = (i / hw) % c;
                dx[i] = rstd * (gamma[ci] * g[i] - s1 / m - xhat[i] * s2 / m);
            }
        }
    }
    (dx, dgamma, dbeta)
}
