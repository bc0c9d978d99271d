// Mean squared error and its gradient.
//   mse = Σ(pred - target)² / n,   ∂mse/∂pred = 2·(pred - target)/n
// The loss is reduced in stages: sq_diff_sum sums (pred - target)² over chunks of `chunk`
// elements (one workgroup per chunk, bounded per-invocation loops), then the row-sum stages of
// elementwise.wgsl finish the sum. `scale` multiplies this stage's output (1/n when it is last).

override WG: u32 = 256u;

struct Params {
    n: u32,
    chunk: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pred: array<f32>;
@group(0) @binding(2) var<storage, read> target_: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, 256>;

// out[k] = scale · Σ_{i in chunk k} (pred[i] - target[i])²
@compute @workgroup_size(WG)
fn sq_diff_sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let k = wg.x + wg.y * nwg.x;
    if (k * p.chunk >= p.n) {
        return;
    }
    let start = k * p.chunk;
    let len = min(p.chunk, p.n - start);
    var s = 0.0;
    for (var i = lid; i < len; i += WG) {
        let d = pred[start + i] - target_[start + i];
        s += d * d;
    }
    red[lid] = s;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (lid < h) {
            red[lid] += red[lid + h];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        out[k] = p.scale * red[0];
    }
}

// out = scale · (pred - target), scale = 2·grad_scale/n; 256 invocations per workgroup.
@compute @workgroup_size(256)
fn mse_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    out[i] = p.scale * (pred[i] - target_[i]);
}
