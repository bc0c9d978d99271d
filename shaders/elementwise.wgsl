// Elementwise ops on flat f32 arrays, the channel broadcast of a per-(n, c) bias, and row sums.
// Every elementwise entry point handles any length: the launcher spreads ceil(n / 256)
// workgroups over a 2-D grid (see Context::grid) and each invocation bounds-checks.

struct Params {
    n: u32,      // elements
    alpha: f32,
    beta: f32,
    hw: u32,     // add_channel_bias: elements per (n, c) row
}

@group(0) @binding(0) var<uniform> p: Params;
// Bindings per entry point: binary ops (a, b, out), unary ops (a, res), in place (acc, b) or
// (acc). A slot may hold different variables in different entry points.
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> acc: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> res: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

// out = alpha * a + beta * b
@compute @workgroup_size(256)
fn axpby(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    out[i] = p.alpha * a[i] + p.beta * b[i];
}

// out = a * b
@compute @workgroup_size(256)
fn mul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    out[i] = a[i] * b[i];
}

// res = a·σ(a)   (a / (1 + exp(-a)) would give NaN = inf/inf for a < -88)
@compute @workgroup_size(256)
fn silu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    res[i] = a[i] * sigmoid(a[i]);
}

// out = dy·silu'(x) = dy·σ(x)·(1 + x·(1 - σ(x))), with x = a, dy = b
@compute @workgroup_size(256)
fn silu_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let s = sigmoid(a[i]);
    out[i] = b[i] * s * (1.0 + a[i] * (1.0 - s));
}

// res = alpha * a
@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    res[i] = p.alpha * a[i];
}

// acc += alpha * b
@compute @workgroup_size(256)
fn add_scaled_inplace(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    acc[i] += p.alpha * b[i];
}

// acc = alpha
@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    acc[i] = p.alpha;
}

// out[i] = a[i] + b[i / hw]: x [N, C, H, W] plus bias [N, C] broadcast over H, W
@compute @workgroup_size(256)
fn add_channel_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    out[i] = a[i] + b[i / p.hw];
}

// ---- vec4 variants (n % 4 == 0; add_channel_bias4 also hw % 4 == 0) ------------------------
// One invocation per 4 elements, loads and stores as vec4s: on llvmpipe a vec4 access costs
// about 2.5 scalar ones (measured 2026-12-02, Mesa 25.0). Same arithmetic per component.
@group(0) @binding(1) var<storage, read> a4: array<W4>;
@group(0) @binding(1) var<storage, read_write> acc4: array<W4>;
@group(0) @binding(2) var<storage, read> b4: array<W4>;
@group(0) @binding(2) var<storage, read_write> res4: array<W4>;
@group(0) @binding(3) var<storage, read_write> out4: array<W4>;

@compute @workgroup_size(256)
fn axpby4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n / 4u) { return; }
    out4[i] = st4(p.alpha * ld4(a4[i]) + p.beta * ld4(b4[i]));
}

@compute @workgroup_size(256)
fn mul4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n / 4u) { return; }
    out4[i] = st4(ld4(a4[i]) * ld4(b4[i]));
}

@compute @workgroup_size(256)
fn silu4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n / 4u) { return; }
    let v = ld4(a4[i]);
    res4[i] = st4(v * (1.0 / (1.0 + exp(-v))));
}

@compute @workgroup_size(256)
fn silu_backward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n / 4u) { return; }
    let v = ld4(a4[i]);
    let s = 1.0 / (1.0 + exp(-v));
    out4[i] = st4(ld4(b4[i]) * s * (1.0 + v * (1.0 - s)));
}

@compute @workgroup_size(256)
fn scale4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n / 4u) { return; }
    res4[i] = st4(p.alpha * ld4(a4[i]));
}

@compute @workgroup_size(256)
fn add_scaled_inplace4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n / 4u) { return; }
    acc4[i] = st4(ld4(acc4[i]) + (p.alpha * ld4(b4[i])));
}

@compute @workgroup_size(256)
fn fill4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n / 4u) { return; }
    acc4[i] = st4(vec4(p.alpha));
}

@compute @workgroup_size(256)
fn add_channel_bias4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n / 4u) { return; }
    out4[i] = st4(ld4(a4[i]) + b[(4u * i) / p.hw]);
}

// Row sums, one stage: x [rows, len] -> sums [rows, ceil(len / chunk)], each workgroup summing
// one chunk (chunk = WG·iterations: bounded per-invocation loops) of one row; the launcher
// repeats the stage until one value per row is left, scaling that last stage's output.
override WG: u32 = 256u;

struct RowParams {
    rows: u32,
    len: u32,
    chunk: u32,
    chunks: u32,   // ceil(len / chunk)
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> rp: RowParams;
var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(WG)
fn row_sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let id = wg.x + wg.y * nwg.x;
    if (id >= rp.rows * rp.chunks) {
        return;
    }
    let k = id % rp.chunks;
    let start = (id / rp.chunks) * rp.len + k * rp.chunk;
    let len = min(rp.chunk, rp.len - k * rp.chunk);
    var s = 0.0;
    for (var i = lid; i < len; i += WG) {
        s += a[start + i];
    }
    row_sum_store(id, s, lid);
}

// res[id] = scale · the workgroup's sum of the invocations' partial sums `s`.
fn row_sum_store(id: u32, s: f32, lid: u32) {
    red[lid] = s;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (lid < h) {
            red[lid] += red[lid + h];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        res[id] = rp.scale * red[0];
    }
}

// row_sum for rows and chunks that are multiples of 4: vec4 loads (a4), the same partial sums
// (each lane's four components added before the workgroup's tree).
@compute @workgroup_size(WG)
fn row_sum4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let id = wg.x + wg.y * nwg.x;
    if (id >= rp.rows * rp.chunks) {
        return;
    }
    let k = id % rp.chunks;
    let start = ((id / rp.chunks) * rp.len + k * rp.chunk) / 4u;
    let len = min(rp.chunk, rp.len - k * rp.chunk) / 4u;
    var s = vec4(0.0);
    for (var i = lid; i < len; i += WG) {
        s += ld4(a4[start + i]);
    }
    row_sum_store(id, (s.x + s.y) + (s.z + s.w), lid);
}
