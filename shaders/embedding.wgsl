// Sinusoidal timestep embeddings (diffusers' get_timestep_embedding) and class-label embedding
// lookup with its backward. One invocation per output element, 256 per workgroup, over a 2-D
// grid of workgroups (Context::grid): linear index wg.x + wg.y·nwg.x.

struct Params {
    n: u32,          // output elements
    dim: u32,        // embedding width (D)
    half: u32,       // timestep: dim / 2; lookup/backward: number of classes K
    flip: u32,       // timestep: 1 = (cos, sin) order
    neg_ln_period: f32, // timestep: -ln(max_period)
    denom: f32,      // timestep: half - downscale_freq_shift
    b0: u32,         // backward: first label row of this pass
    b1: u32,         // backward: one past the last label row of this pass
    accumulate: u32, // backward: 1 = add to dtable (later passes), 0 = overwrite
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(1) var<storage, read> labels_bwd: array<f32>;
@group(0) @binding(2) var<storage, read_write> emb: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> dtable: array<f32>;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

// (sin a, cos a) to a few f32 ulps on every adapter, for |a| up to ~1e5 (t·freq reaches ~1000
// rad for t ~ 1000). The builtins are only specified to 2^-11 absolute error on [-π, π]
// (SwiftShader, the browser's software adapter, is 2e-4 off), enough to move the model's output
// away from another adapter's. Cody–Waite reduction by π/2 (1.5703125 has 8 significant bits, so
// k·1.5703125 is exact for |k| < 2^16) to y in [-π/4, π/4], Cephes' sinf/cosf polynomials on y,
// then the quadrant k mod 4.
fn sin_cos(a: f32) -> vec2<f32> {
    let k = round(a * 0.6366197723675814);
    let y = fma(-k, 4.8382679489661923e-4, fma(-k, 1.5703125, a));
    let z = y * y;
    let s = y + y * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
    let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
    switch (i32(k) & 3) {
        case 0: { return vec2<f32>(s, c); }
        case 1: { return vec2<f32>(c, -s); }
        case 2: { return vec2<f32>(-s, -c); }
        default: { return vec2<f32>(-c, s); }
    }
}

// emb[b, k] (bindings t, emb): with j = k mod half and freq_j = exp(-ln(max_period)·j /
// (half - shift)) computed in f32 as diffusers does, the first half is sin(t·freq_j) and the
// second cos(t·freq_j) (swapped when flip); a last odd column is zero padding.
@compute @workgroup_size(256)
fn timestep_embedding(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let b = i / p.dim;
    let k = i - b * p.dim;
    if (k >= 2u * p.half) {
        emb[i] = 0.0;
        return;
    }
    let second = k >= p.half;
    let j = select(k, k - p.half, second);
    let freq = exp(p.neg_ln_period * f32(j) / p.denom);
    let sc = sin_cos(t[b] * freq);
    // first half sin unless flipped
    emb[i] = select(sc.x, sc.y, second != (p.flip != 0u));
}

// Class index of a label stored as f32 (rounded), or -1 when outside 0..K-1 (or NaN).
fn class_of(l: f32) -> i32 {
    let r = round(l);
    if (r >= 0.0 && r < f32(p.half)) {
        return i32(r);
    }
    return -1;
}

// out[b, d] = table[label[b], d], zero for labels outside 0..K-1. Bindings: table, labels, out.
@compute @workgroup_size(256)
fn embedding_lookup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let b = i / p.dim;
    let k = class_of(labels[b]);
    if (k < 0) {
        out[i] = 0.0;
    } else {
        out[i] = table[u32(k) * p.dim + i - b * p.dim];
    }
}

// dtable[k, d] (=, or += when accumulate) Σ_{b in [b0, b1), label[b] = k} dy[b, d]: each
// invocation owns one element of dtable (no atomics, fixed order). The launcher splits the
// batch into passes of bounded length. Bindings: labels_bwd, dy, dtable.
@compute @workgroup_size(256)
fn embedding_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let k = i32(i / p.dim);
    let d = i % p.dim;
    var s = 0.0;
    for (var b = p.b0; b < p.b1; b++) {
        if (class_of(labels_bwd[b]) == k) {
            s += dy[b * p.dim + d];
        }
    }
    if (p.accumulate != 0u) {
        s += dtable[i];
    }
    dtable[i] = s;
}
