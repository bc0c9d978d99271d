//! CPU f64 reference for multi-head self-attention. Tensors are `[B, T, C]` row-major with
//! `C = heads·d`; head h uses channels h·d..(h+1)·d; lse is `[B, heads, T]`.

/// Index of element (b, t, h·d + j) of a `[B, T, C]` tensor.
fn at(b: usize, t: usize, tt: usize, c: usize, h: usize, d: usize, j: usize) -> usize {
    (b * tt + t) * c + h * d + j
}

/// Scaled scores s[t][u] = q_t·k_u / √d of one (batch, head).
#[allow(clippy::too_many_arguments)]
fn scores(q: &[f64], k: &[f64], b: usize, h: usize, t: usize, c: usize, d: usize) -> Vec<f64> {
    let scale = 1.0 / (d as f64).sqrt();
    let mut s = vec![0.0; t * t];
    for i in 0..t {
        for u in 0..t {
            let mut acc = 0.0;
            for j in 0..d {
                acc += q[at(b, i, t, c, h, d, j)] * k[at(b, u, t, c, h, d, j)];
            }
            s[i * t + u] = acc * scale;
        }
    }
    s
}

/// Forward: returns (o \[B,T,C\], lse \[B,heads,T\]) with
/// o[b,t,h·d+j] = Σ_s softmax_s(q_t·k_s/√d) v[b,s,h·d+j] and lse = logsumexp_s(q_t·k_s/√d).
pub fn attention(q: &[f64], k: &[f64], v: &[f64], b: usize, t: usize, c: usize, heads: usize) -> (Vec<f64>, Vec<f64>) {
    let d = c / heads;
    let mut o = vec![0.0; b * t * c];
    let mut lse = vec![0.0; b * heads * t];
    for bi in 0..b {
        for h in 0..heads {
            let s = scores(q, k, bi, h, t, c, d);
            for i in 0..t {
                let row = &s[i * t..(i + 1) * t];
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let l: f64 = row.iter().map(|x| (x - m).exp()).sum();
                lse[(bi * heads + h) * t + i] = m + l.ln();
                for u in 0..t {
                    let p = (row[u] - m).exp() / l;
                    for j in 0..d {
                        o[at(bi, i, t, c, h, d, j)] += p * v[at(bi, u, t, c, h, d, j)];
                    }
                }
            }
        }
    }
    (o, lse)
}

/// Backward of [`attention`]: returns (dq, dk, dv), each \[B,T,C\], for upstream gradient dout.
/// With P = softmax(S), dV = Pᵀ dout, dP = dout Vᵀ, dS = P ∘ (dP - rowsum(dP ∘ P)),
/// dQ = dS K / √d, dK = dSᵀ Q / √d.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    dout: &[f64],
    b: usize,
    t: usize,
    c: usize,
    heads: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let d = c / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let n = b * t * c;
    let (mut dq, mut dk, mut dv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    for bi in 0..b {
        for h in 0..heads {
            let s = scores(q, k, bi, h, t, c, d);
            for i in 0..t {
                let row = &s[i * t..(i + 1) * t];
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let l: f64 = row.iter().map(|x| (x - m).exp()).sum();
                let p: Vec<f64> = row.iter().map(|x| (x - m).exp() / l).collect();
                let dp: Vec<f64> = (0..t)
                    .map(|u| {
                        (0..d)
                            .map(|j| dout[at(bi, i, t, c, h, d, j)] * v[at(bi, u, t, c, h, d, j)])
                            .sum()
                    })
                    .collect();
                let pdp: f64 = (0..t).map(|u| p[u] * dp[u]).sum();
                for u in 0..t {
                    let ds = p[u] * (dp[u] - pdp);
                    for j in 0..d {
                        let (iq, iu) = (at(bi, i, t, c, h, d, j), at(bi, u, t, c, h, d, j));
                        dv[iu] += p[u] * dout[iq];
                        dq[iq] += ds * k[iu] * scale;
                        dk[iu] += ds * q[iq] * scale;
                    }
                }
            }
        }
    }
    (dq, dk, dv)
}
