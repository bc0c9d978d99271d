// The variational-bound term L_t of a learned-variance model (improved DDPM, Nichol & Dhariwal
// 2021) per sample, fused with its gradient. One workgroup per sample b; D = C·H·W elements.
//
// out [B, 2C, H, W]: ε_θ (first C channels) and v (last C). Per sample, coefs[b] holds
//   c0, ct    posterior-mean coefficients of x̂₀ and x_t,
//   lv_min    log β̃_t (clipped: β̃_1 at t = 0), also the true posterior's log variance,
//   lv_max    log β_t,
//   x0_x, x0_m  x̂₀ = x0_x · x_t − x0_m · m (m = the first half of out),
//   dec       1 at t = 0 (decoder NLL), 0 otherwise (Gaussian KL),
//   _         unused.
// Model: μ_θ = c0 x̂₀ + ct x_t, log Σ_θ = frac lv_max + (1 − frac) lv_min, frac = (v + 1)/2.
//   t > 0: term = KL(N(μ, e^{lv_min}) ‖ N(μ_θ, e^{log Σ_θ})), μ = c0 x₀ + ct x_t
//   t = 0: term = −log P(x₀) under N(μ_θ, Σ_θ) discretized to 256 bins on [−1, 1] (edge bins
//          open), with improved-diffusion's tanh approximation of the normal CDF.
// vb[b] = Σ term / (D ln 2) (bits/dim). dout = ∂(Σ_b weights[b] · vb[b]) / ∂out plus, on the ε
// half, gin (the caller's gradient of its other loss terms, e.g. L_simple); the ε half gets the
// vb gradient only when grad_mean = 1 (pure L_vlb; the hybrid loss stops it).

const WG: u32 = 64u;

struct Params {
    d: u32,
    grad_mean: u32,
    batch: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> out: array<f32>;
@group(0) @binding(2) var<storage, read> x0: array<f32>;
@group(0) @binding(3) var<storage, read> xt: array<f32>;
@group(0) @binding(4) var<storage, read> coefs: array<f32>;
@group(0) @binding(5) var<storage, read> weights: array<f32>;
@group(0) @binding(6) var<storage, read> gin: array<f32>;
@group(0) @binding(7) var<storage, read_write> vb: array<f32>;
@group(0) @binding(8) var<storage, read_write> dout: array<f32>;

var<workgroup> red: array<f32, WG>;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const LN2: f32 = 0.6931471805599453;

// improved-diffusion's Φ(x) ≈ ½(1 + tanh(√(2/π)(x + 0.044715 x³))) and its derivative.
fn cdf(x: f32) -> f32 {
    return 0.5 * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));
}
fn cdf_grad(x: f32) -> f32 {
    let th = tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x));
    return 0.5 * (1.0 - th * th) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
}

@compute @workgroup_size(WG)
fn vlb_terms(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let b = wg.x + wg.y * nwg.x;
    if (b >= p.batch) {
        return;
    }
    let c = b * 8u;
    let c0 = coefs[c];
    let ct = coefs[c + 1u];
    let lv_min = coefs[c + 2u];
    let lv_max = coefs[c + 3u];
    let x0_x = coefs[c + 4u];
    let x0_m = coefs[c + 5u];
    let dec = coefs[c + 6u] != 0.0;
    let d = p.d;
    let s = weights[b] / (f32(d) * LN2);
    var acc = 0.0;
    for (var i = lid; i < d; i += WG) {
        let e_idx = b * 2u * d + i;
        let v_idx = e_idx + d;
        let x_t = xt[b * d + i];
        let x_0 = x0[b * d + i];
        let m = out[e_idx];
        let v = out[v_idx];
        let mu_th = c0 * (x0_x * x_t - x0_m * m) + ct * x_t;
        let lv = 0.5 * (v + 1.0) * lv_max + (1.0 - 0.5 * (v + 1.0)) * lv_min;
        var term: f32;
        var d_mu: f32;   // ∂term/∂μ_θ
        var d_lv: f32;   // ∂term/∂log Σ_θ
        if (dec) {
            // log-scale ls = lv/2; inv = e^{−ls}
            let inv = exp(-0.5 * lv);
            let cen = x_0 - mu_th;
            let up = inv * (cen + 1.0 / 255.0);
            let lo = inv * (cen - 1.0 / 255.0);
            var prob: f32;
            var dp_dup = 0.0;
            var dp_dlo = 0.0;
            if (x_0 < -0.999) {
                prob = cdf(up);
                dp_dup = cdf_grad(up);
            } else if (x_0 > 0.999) {
                prob = 1.0 - cdf(lo);
                dp_dlo = -cdf_grad(lo);
            } else {
                prob = cdf(up) - cdf(lo);
                dp_dup = cdf_grad(up);
                dp_dlo = -cdf_grad(lo);
            }
            if (prob > 1e-12) {
                term = -log(prob);
                // ∂up/∂μ_θ = −inv, ∂up/∂ls = −up (likewise lo); ls = lv/2
                let g = -1.0 / prob;
                d_mu = g * (dp_dup * -inv + dp_dlo * -inv);
                d_lv = g * 0.5 * (dp_dup * -up + dp_dlo * -lo);
            } else {
                term = -log(1e-12);
                d_mu = 0.0;
                d_lv = 0.0;
            }
        } else {
            let mu = c0 * x_0 + ct * x_t;
            let dm = mu - mu_th;
            let e = exp(-lv);
            term = 0.5 * (-1.0 + lv - lv_min + exp(lv_min - lv) + dm * dm * e);
            d_mu = -dm * e;
            d_lv = 0.5 * (1.0 - exp(lv_min - lv) - dm * dm * e);
        }
        acc += term;
        let g_mean = select(0.0, s * d_mu * c0 * -x0_m, p.grad_mean != 0u);
        dout[e_idx] = gin[b * d + i] + g_mean;
        dout[v_idx] = s * d_lv * 0.5 * (lv_max - lv_min);
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (lid < h) {
            red[lid] += red[lid + h];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        vb[b] = red[0] / (f32(d) * LN2);
    }
}
