// Optimizer kernels: fused Adam/AdamW, the global gradient norm (multi-stage reduction),
// clip_grad_norm_'s scale, and the EMA of weights. Every elementwise entry point handles any
// length: ceil(n / 256) workgroups on a 2-D grid (Context::grid), each invocation bounds-checked.

fn linear_wg(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

// ---- Adam / AdamW ---------------------------------------------------------------------------

struct AdamParams {
    n: u32,
    // lr / (1 - beta1^step)
    step_size: f32,
    // 1 / sqrt(1 - beta2^step)
    inv_sqrt_bc2: f32,
    eps: f32,
    beta1: f32,
    beta2: f32,
    // 1 - lr·weight_decay (decoupled decay, applied before the Adam update as torch.optim.AdamW)
    decay: f32,
    // adam_ema / adam_scaled_ema: then ema = ema_decay·ema + ema_rest·param (as `ema` below)
    ema_decay: f32,
    ema_rest: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> ap: AdamParams;
@group(0) @binding(1) var<storage, read_write> adam_p: array<f32>;
@group(0) @binding(2) var<storage, read> adam_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> adam_m: array<f32>;
@group(0) @binding(4) var<storage, read_write> adam_v: array<f32>;
@group(0) @binding(5) var<storage, read> adam_scale: array<f32>;
// The EMA of adam_ema (which has no scale) and of adam_scaled_ema: bindings stay consecutive.
@group(0) @binding(5) var<storage, read_write> adam_ema_avg5: array<f32>;
@group(0) @binding(6) var<storage, read_write> adam_ema_avg: array<f32>;

// m = b1·m + (1-b1)·g;  v = b2·v + (1-b2)·g²;
// p = p·decay - step_size·m / (sqrt(v)·inv_sqrt_bc2 + eps)   (= lr·m̂/(√v̂ + eps))
// Returns the new p.
fn adam_update(i: u32, g: f32) -> f32 {
    let m = ap.beta1 * adam_m[i] + (1.0 - ap.beta1) * g;
    let v = ap.beta2 * adam_v[i] + (1.0 - ap.beta2) * g * g;
    adam_m[i] = m;
    adam_v[i] = v;
    let p = adam_p[i] * ap.decay - ap.step_size * m / (sqrt(v) * ap.inv_sqrt_bc2 + ap.eps);
    adam_p[i] = p;
    return p;
}

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_wg(wg, nwg) * 256u + lid;
    if (i >= ap.n) { return; }
    adam_update(i, adam_g[i]);
}

// The gradient is first multiplied by scale[0] (e.g. the clip_grad_norm_ coefficient).
@compute @workgroup_size(256)
fn adam_scaled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_wg(wg, nwg) * 256u + lid;
    if (i >= ap.n) { return; }
    adam_update(i, adam_g[i] * adam_scale[0]);
}

// Adam, then the EMA of the updated weights in the same pass (one dispatch per tensor instead
// of two; the same arithmetic as `adam` followed by `ema`).
@compute @workgroup_size(256)
fn adam_ema(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_wg(wg, nwg) * 256u + lid;
    if (i >= ap.n) { return; }
    let p = adam_update(i, adam_g[i]);
    adam_ema_avg5[i] = ap.ema_decay * adam_ema_avg5[i] + ap.ema_rest * p;
}

@compute @workgroup_size(256)
fn adam_scaled_ema(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_wg(wg, nwg) * 256u + lid;
    if (i >= ap.n) { return; }
    let p = adam_update(i, adam_g[i] * adam_scale[0]);
    adam_ema_avg[i] = ap.ema_decay * adam_ema_avg[i] + ap.ema_rest * p;
}

// ---- Adam over vec4s (n % 4 == 0) -----------------------------------------------------------
// The same update per component, every array moved as vec4s (on llvmpipe a vec4 access costs
// about 2.5 scalar ones; measured 2026-12-02, Mesa 25.0).
@group(0) @binding(1) var<storage, read_write> adam_p4: array<W4>;
@group(0) @binding(2) var<storage, read> adam_g4: array<W4>;
@group(0) @binding(3) var<storage, read_write> adam_m4: array<W4>;
@group(0) @binding(4) var<storage, read_write> adam_v4: array<W4>;
@group(0) @binding(5) var<storage, read_write> adam_ema_avg5_4: array<W4>;
@group(0) @binding(6) var<storage, read_write> adam_ema_avg4: array<W4>;

fn adam_update4(i: u32, g: vec4<f32>) -> vec4<f32> {
    let m = ap.beta1 * ld4(adam_m4[i]) + (1.0 - ap.beta1) * g;
    let v = ap.beta2 * ld4(adam_v4[i]) + (1.0 - ap.beta2) * g * g;
    adam_m4[i] = st4(m);
    adam_v4[i] = st4(v);
    let p = ld4(adam_p4[i]) * ap.decay - ap.step_size * m / (sqrt(v) * ap.inv_sqrt_bc2 + ap.eps);
    adam_p4[i] = st4(p);
    return p;
}

@compute @workgroup_size(256)
fn adam4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_wg(wg, nwg) * 256u + lid;
    if (i >= ap.n / 4u) { return; }
    adam_update4(i, ld4(adam_g4[i]));
}

@compute @workgroup_size(256)
fn adam_scaled4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_wg(wg, nwg) * 256u + lid;
    if (i >= ap.n / 4u) { return; }
    adam_update4(i, ld4(adam_g4[i]) * adam_scale[0]);
}

@compute @workgroup_size(256)
fn adam_ema4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = linear_wg(wg, nwg) * 256u + lid;
    if (i >= ap.n / 4u) { return; }
    let p = adam_update4(i, ld4(adam_g4[i]));
    adam_ema_avg5_4[i] = st4(ap.ema_decay * ld4(adam_ema_avg5_4[i]) + ap.ema_rest * p);
}

@compute @workgroup_size(256)
fn adam_scaled_ema4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_wg(wg, nwg) * 256u + lid;
    if (i >= ap.n / 4u) { return; }
    let p = adam_update4(i, ld4(adam_g4[i]) * adam_scale[0]);
    adam_ema_avg4[i] = st4(ap.ema_decay * ld4(adam_ema_avg4[i]) + ap.ema_rest * p);
}

// ---- sum of squares -------------------------------------------------------------------------

struct ReduceParams {
    n: u32,
    // where this launch's partial sums start in `red_out`
    out_offset: u32,
    // 1: sum x², 0: sum x (later stages add up partial sums)
    square: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> rp: ReduceParams;
@group(0) @binding(1) var<storage, read> red_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> red_out: array<f32>;

// Elements per invocation; one workgroup reduces 256·ITEMS elements to one partial sum.
const ITEMS: u32 = 8u;
var<workgroup> red_tile: array<f32, 256>;

// red_out[out_offset + w] = sum over the workgroup's 2048-element chunk of x² (or x); strided
// loads keep a workgroup's reads contiguous, then a shared-memory tree halves 256 sums to one.
@compute @workgroup_size(256)
fn sum_chunks(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let w = linear_wg(wg, nwg);
    let base = w * 256u * ITEMS;
    var acc = 0.0;
    for (var k = 0u; k < ITEMS; k++) {
        let i = base + k * 256u + lid;
        if (i < rp.n) {
            let x = red_in[i];
            acc += select(x, x * x, rp.square == 1u);
        }
    }
    red_tile[lid] = acc;
    workgroupBarrier();
    for (var half = 128u; half > 0u; half >>= 1u) {
        if (lid < half) {
            red_tile[lid] += red_tile[lid + half];
        }
        workgroupBarrier();
    }
    // Workgroups past the end (2-D grid padding) have nothing to write.
    if (lid == 0u && base < rp.n) {
        red_out[rp.out_offset + w] = red_tile[0];
    }
}

// sum_chunks for CPU adapters, n % 4 == 0: the same 2048-element chunks, one 8-lane workgroup
// (a single SIMD slice on llvmpipe, which switches slices at every barrier) each, vec4 loads.
@group(0) @binding(1) var<storage, read> red_in4: array<W4>;
var<workgroup> red_tile8: array<f32, 8>;

@compute @workgroup_size(8)
fn sum_chunks8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let w = linear_wg(wg, nwg);
    let base = w * 512u;
    let n4 = rp.n / 4u;
    var acc = vec4(0.0);
    for (var k = 0u; k < 64u; k++) {
        let i = base + k * 8u + lid;
        if (i < n4) {
            let x = ld4(red_in4[i]);
            acc += select(x, x * x, rp.square == 1u);
        }
    }
    red_tile8[lid] = (acc.x + acc.y) + (acc.z + acc.w);
    workgroupBarrier();
    if (lid == 0u && base < n4) {
        red_out[rp.out_offset + w] = ((red_tile8[0] + red_tile8[1]) + (red_tile8[2] + red_tile8[3]))
            + ((red_tile8[4] + red_tile8[5]) + (red_tile8[6] + red_tile8[7]));
    }
}

// ---- clip coefficient -----------------------------------------------------------------------

struct ClipParams {
    max_norm: f32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> cp: ClipParams;
@group(0) @binding(1) var<storage, read> clip_norm_sq: array<f32>;
@group(0) @binding(2) var<storage, read_write> clip_out: array<f32>;

// torch.nn.utils.clip_grad_norm_: min(1, max_norm / (||g|| + 1e-6))
@compute @workgroup_size(1)
fn clip_scale() {
    clip_out[0] = min(1.0, cp.max_norm / (sqrt(clip_norm_sq[0]) + 1e-6));
}

// ---- EMA of weights -------------------------------------------------------------------------

struct EmaParams {
    n: u32,
    decay: f32,
    // 1 - decay, rounded once on the host
    rest: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> ep: EmaParams;
@group(0) @binding(1) var<storage, read_write> ema_avg: array<f32>;
@group(0) @binding(2) var<storage, read> ema_param: array<f32>;

// ema = decay·ema + (1 - decay)·param
@compute @workgroup_size(256)
fn ema(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = linear_wg(wg, nwg) * 256u + lid;
    if (i >= ep.n) { return; }
    ema_avg[i] = ep.decay * ema_avg[i] + ep.rest * ema_param[i];
}
