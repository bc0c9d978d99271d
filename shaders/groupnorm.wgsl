// Group normalisation (Wu & He 2018) of NCHW tensors (H·W may be any flattened length L),
// optionally fused with SiLU. A group is the cpg = C/G consecutive channels of one sample, i.e.
// m = cpg·HW contiguous floats starting at (n·G + g)·m.
//   mean = Σx/m,  var = Σ(x - mean)²/m  (two passes: subtracting the mean before squaring avoids
//   the cancellation of E[x²] - E[x]²),  rstd = 1/sqrt(var + eps),  xhat = (x - mean)·rstd
//   pre = xhat·γ[c] + β[c],  y = pre  or  y = silu(pre) = pre·σ(pre)
// Backward, with g = ∂L/∂pre (= dy, or dy·σ(pre)·(1 + pre·(1 - σ(pre))) when fused with SiLU):
//   dβ[c] = Σ_{n,hw} g,  dγ[c] = Σ_{n,hw} g·xhat
//   dx = rstd·(γ[c]·g - mean_group(γ·g) - xhat·mean_group(γ·g·xhat))
// Workgroups are spread over a 2-D grid (Context::grid): linear index wg.x + wg.y·nwg.x.
// WG (a power of two, 32..256) is picked by the launcher from the work per workgroup.

override WG: u32 = 256u;

struct Params {
    n: u32,       // batch
    c: u32,       // channels
    hw: u32,      // spatial length H·W
    groups: u32,  // G
    cpg: u32,     // channels per group C/G
    silu: u32,    // 1: fused SiLU
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
// forward outputs
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats_out: array<f32>;   // [N, G, 2] (mean, rstd)
// backward inputs / outputs
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> partial_out: array<f32>; // [N, C, 2] (Σg, Σg·xhat)
@group(0) @binding(6) var<storage, read> partial: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;
@group(0) @binding(8) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(9) var<storage, read_write> dbeta: array<f32>;

var<workgroup> red: array<vec2<f32>, 256>;

// Tree reduction of one vec2 per invocation over the first WG invocations; every invocation
// gets the total. Ends with a barrier so `red` can be reused at once.
fn wg_sum2(v: vec2<f32>, lid: u32) -> vec2<f32> {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let t = red[0];
    workgroupBarrier();
    return t;
}

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

// ∂L/∂pre from ∂L/∂y.
fn pre_grad(g: f32, pre: f32) -> f32 {
    if (p.silu == 0u) {
        return g;
    }
    let s = sigmoid(pre);
    return g * s * (1.0 + pre * (1.0 - s));
}

// One workgroup per (n, g): statistics, then y over the group.
@compute @workgroup_size(WG)
fn gn_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let grp = wg.x + wg.y * nwg.x;
    if (grp >= p.n * p.groups) {
        return;
    }
    let m = p.cpg * p.hw;
    let base = grp * m;
    var s = 0.0;
    for (var i = lid; i < m; i += WG) {
        s += x[base + i];
    }
    let mean = wg_sum2(vec2<f32>(s, 0.0), lid).x / f32(m);
    var v = 0.0;
    for (var i = lid; i < m; i += WG) {
        let d = x[base + i] - mean;
        v += d * d;
    }
    let rstd = inverseSqrt(wg_sum2(vec2<f32>(v, 0.0), lid).x / f32(m) + p.eps);
    if (lid == 0u) {
        stats_out[2u * grp] = mean;
        stats_out[2u * grp + 1u] = rstd;
    }
    // Element i of the group is in channel g·cpg + i / hw; step that channel along with i
    // (i += WG moves WG / hw channels and WG % hw positions) instead of dividing per element.
    var c = (grp % p.groups) * p.cpg + lid / p.hw;
    var j = lid % p.hw;
    let dc = WG / p.hw;
    let dj = WG % p.hw;
    for (var i = lid; i < m; i += WG) {
        var o = (x[base + i] - mean) * rstd * gamma[c] + beta[c];
        if (p.silu != 0u) {
            o = o * sigmoid(o);
        }
        y[base + i] = o;
        c += dc;
        j += dj;
        if (j >= p.hw) {
            j -= p.hw;
            c += 1u;
        }
    }
}

// One workgroup per row (n, c): partial_out[row] = (Σ_hw g, Σ_hw g·xhat).
@compute @workgroup_size(WG)
fn gn_bwd_reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.n * p.c) {
        return;
    }
    let c = row % p.c;
    let grp = (row / p.c) * p.groups + c / p.cpg;
    let mean = stats[2u * grp];
    let rstd = stats[2u * grp + 1u];
    let ga = gamma[c];
    let be = beta[c];
    let base = row * p.hw;
    var acc = vec2<f32>(0.0);
    for (var j = lid; j < p.hw; j += WG) {
        let xh = (x[base + j] - mean) * rstd;
        let g = pre_grad(dy[base + j], xh * ga + be);
        acc += vec2<f32>(g, g * xh);
    }
    let t = wg_sum2(acc, lid);
    if (lid == 0u) {
        partial_out[2u * row] = t.x;
        partial_out[2u * row + 1u] = t.y;
    }
}

// One workgroup per row (n, c): dx over the row; the rows of sample 0 also sum dγ[c], dβ[c]
// over the batch (a fixed-order loop: deterministic, no float atomics).
@compute @workgroup_size(WG)
fn gn_bwd_dx(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.n * p.c) {
        return;
    }
    let c = row % p.c;
    let n = row / p.c;
    let g0 = (c / p.cpg) * p.cpg;
    let grp = n * p.groups + c / p.cpg;
    let mean = stats[2u * grp];
    let rstd = stats[2u * grp + 1u];
    let ga = gamma[c];
    let be = beta[c];
    // Group means of γ·g and γ·g·xhat from the per-channel partial sums.
    var s = vec2<f32>(0.0);
    for (var k = 0u; k < p.cpg; k++) {
        let r = n * p.c + g0 + k;
        s += gamma[g0 + k] * vec2<f32>(partial[2u * r], partial[2u * r + 1u]);
    }
    let cm = s / f32(p.cpg * p.hw);
    let base = row * p.hw;
    for (var j = lid; j < p.hw; j += WG) {
        let xh = (x[base + j] - mean) * rstd;
        let g = pre_grad(dy[base + j], xh * ga + be);
        dx[base + j] = rstd * (ga * g - cm.x - xh * cm.y);
    }
    if (n == 0u && lid == 0u) {
        var t = vec2<f32>(0.0);
        for (var k = 0u; k < p.n; k++) {
            let r = k * p.c + c;
            t += vec2<f32>(partial[2u * r], partial[2u * r + 1u]);
        }
        dbeta[c] = t.x;
        dgamma[c] = t.y;
    }
}
