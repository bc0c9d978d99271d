// Score-SDE and Langevin sampler updates (src/diffusion/sde.rs) that are not a plain linear
// combination of x and one model output (those run as the fused `sampler_update` of
// random.wgsl): Heun's second stage of the probability-flow ODE, and the Langevin corrector with
// its per-sample step size.
//
// The model output m is ε̂, x̂₀ or v; the score is linear in (x, m) at one timestep,
//   s = −ε̂/√(1−ᾱ_t) = a_x·x + a_m·m,
// with (a_x, a_m) computed on the host from the prediction type. A model with a learned
// variance has 2·C output channels per item (m, then v): `split` = 1 and only the first C are
// read (per_sample = C·H·W, the elements of x per item).
//
// heun_update:     out = c_x·x + c_s·s(x, m1) + c_xt·x̃ + c_s2·s₂(x̃, m2)
//                  (s₂ = b_x·x̃ + b_m·m2, the score at the next time)
// score_norms:     norms[2b] = Σ_{i∈b} s_i², norms[2b+1] = Σ_{i∈b} z_i² (one workgroup per item,
//                  a fixed-order tree: deterministic; WG, a power of two ≤ 256, is picked by
//                  the launcher: 8 on CPU adapters, where every barrier switches SIMD-8 slices)
// langevin_correct: step_b = two_alpha_r2·norms[2b+1]/norms[2b] (0 where Σs² = 0), i.e.
//                  2α(r‖z_b‖/‖s_b‖)²; out = x + step_b·s + √(2·step_b)·z

struct Params {
    n: u32,            // elements of x
    per_sample: u32,   // elements of x per batch item
    split: u32,        // 1: m has 2·C channels per item (m, then a variance channel)
    batch: u32,
    a_x: f32,          // score at x: s = a_x·x + a_m·m
    a_m: f32,
    b_x: f32,          // heun_update: score at x̃: s₂ = b_x·x̃ + b_m·m2
    b_m: f32,
    c_x: f32,          // heun_update weights
    c_s: f32,
    c_xt: f32,
    c_s2: f32,
    two_alpha_r2: f32, // langevin_correct: 2·α·r²
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// Bindings differ per entry point (listed above each); a slot may hold different variables in
// different entry points.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> m: array<f32>;
@group(0) @binding(3) var<storage, read> x_tilde: array<f32>;
@group(0) @binding(3) var<storage, read> z: array<f32>;
@group(0) @binding(4) var<storage, read> m2: array<f32>;
@group(0) @binding(4) var<storage, read_write> norms_out: array<f32>;
@group(0) @binding(4) var<storage, read> norms: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

override WG: u32 = 256u;

var<workgroup> red: array<vec2<f32>, 256>;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

// Index of element i's model output: the first C channels of each item of a split output.
fn m_index(i: u32) -> u32 {
    if (p.split == 0u) {
        return i;
    }
    return i + (i / p.per_sample) * p.per_sample;
}

fn score(i: u32) -> f32 {
    return p.a_x * x[i] + p.a_m * m[m_index(i)];
}

// Heun's second stage: x1, m1 at t_k and x̃ = the Euler predictor, m2 = the model at (x̃, t_{k+1}).
// Bindings: 1 x, 2 m (m1), 3 x_tilde, 4 m2, 5 out.
@compute @workgroup_size(256)
fn heun_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let xt = x_tilde[i];
    let s2 = p.b_x * xt + p.b_m * m2[m_index(i)];
    out[i] = p.c_x * x[i] + p.c_s * score(i) + p.c_xt * xt + p.c_s2 * s2;
}

// Per-item Σs² and Σz². Bindings: 1 x, 2 m, 3 z, 4 norms_out [batch, 2].
@compute @workgroup_size(WG)
fn score_norms(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let b = wg.x + wg.y * nwg.x;
    // uniform per workgroup, so the barriers below stay in uniform control flow
    if (b >= p.batch) { return; }
    let start = b * p.per_sample;
    var acc = vec2<f32>(0.0, 0.0);
    for (var j = lid; j < p.per_sample; j += WG) {
        let s = score(start + j);
        let zz = z[start + j];
        acc += vec2<f32>(s * s, zz * zz);
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w >>= 1u) {
        if (lid < w) {
            red[lid] += red[lid + w];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        norms_out[2u * b] = red[0].x;
        norms_out[2u * b + 1u] = red[0].y;
    }
}

// One Langevin corrector step with the per-item step size (Song et al. 2021, Algorithm 5 with
// score_sde's LangevinCorrector). Bindings: 1 x, 2 m, 3 z, 4 norms [batch, 2], 5 out.
@compute @workgroup_size(256)
fn langevin_correct(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let b = i / p.per_sample;
    let ss = norms[2u * b];
    var step = 0.0;
    if (ss > 0.0) {
        step = p.two_alpha_r2 * norms[2u * b + 1u] / ss;
    }
    out[i] = x[i] + step * score(i) + sqrt(2.0 * step) * z[i];
}
