// Group normalisation (Wu & He 2018) of NCHW tensors (H·W may be any flattened length), optionally
// fused with SiLU. A group is the cpg = C/G consecutive channels of one sample: m = cpg·HW
// contiguous floats starting at (n·G + g)·m. A row is one (n, c): HW contiguous floats.
//   mean = Σx/m,  var = Σ(x - mean)²/m,  rstd = 1/sqrt(var + eps),  xhat = (x - mean)·rstd
//   pre = xhat·γ[c] + β[c],  y = pre  or  y = silu(pre) = pre·σ(pre)
// Backward, with g = ∂L/∂pre (= dy, or dy·σ(pre)·(1 + pre·(1 - σ(pre))) when fused with SiLU):
//   dβ[c] = Σ_{n,hw} g,  dγ[c] = Σ_{n,hw} g·xhat
//   dx = rstd·(γ[c]·g - mean_group(γ·g) - xhat·mean_group(γ·g·xhat))
//
// Every workgroup handles at most `chunk` or `rchunk` elements (WG·512), so no invocation loops more than
// ~1k times (lavapipe stops a shader after 65,535 loop iterations) and large groups spread over
// many workgroups: groups are split into `gchunks` chunks, rows into `rchunks` chunks.
// Statistics combine per-chunk (count, mean, M2) with Chan's parallel formula; within a chunk
// each invocation runs Welford's update and the workgroup merges them the same way, so there is
// no cancellation of E[x²] - E[x]² and x is read once.
// Partial sums are combined by later kernels in a fixed order: deterministic, no float atomics.
// Workgroups are spread over a 2-D grid (Context::grid): linear index wg.x + wg.y·nwg.x.
// WG (a power of two <= 256) is picked by the launcher, per kernel: group kernels from the
// group size, row kernels from the row length; gn_bwd_reduce uses the row kernels' WG.

override WG: u32 = 256u;

struct Params {
    n: u32,        // batch
    c: u32,        // channels
    hw: u32,       // row length H·W
    groups: u32,   // G
    cpg: u32,      // channels per group C/G
    silu: u32,     // 1: fused SiLU
    eps: f32,
    chunk: u32,    // elements per workgroup in the per-group kernels
    gchunks: u32,  // chunks per group: ceil(cpg·hw / chunk)
    rchunk: u32,   // elements per workgroup in the per-row kernels
    rchunks: u32,  // chunks per row: ceil(hw / rchunk)
    dx_add: u32,   // gn_bwd_dx: 1 adds dx_addend (a residual branch's gradient) to dx
    // gn_bwd_partials4 / gn_bwd_dx4: dy is the gradient of dropout(y) and goes through its mask
    // (ops::dropout's for y's shape, shaders/lib/philox.wgsl) as it is read, when drop.on.
    drop: DropParams,
}

@group(0) @binding(0) var<uniform> p: Params;
// Bindings differ per entry point (each is listed above its entry point); a slot may hold
// different variables in different entry points.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> parts: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> chunk_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats_out: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> coef_out: array<f32>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(6) var<storage, read_write> parts_out: array<f32>;
@group(0) @binding(6) var<storage, read> coef: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;
@group(0) @binding(8) var<storage, read> dx_addend: array<f32>;

var<workgroup> red: array<vec3<f32>, 256>;

fn wg_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

// Tree sum over the workgroup; every invocation gets the total. The trailing barrier lets the
// caller reuse `red` at once.
fn wg_sum(v: vec2<f32>, lid: u32) -> vec2<f32> {
    red[lid] = vec3<f32>(v, 0.0);
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let t = red[0].xy;
    workgroupBarrier();
    return t;
}

// Chan et al.: merge (count, mean, M2) of two disjoint sets.
fn merge(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    let n = a.x + b.x;
    if (b.x == 0.0) {
        return a;
    }
    let d = b.y - a.y;
    let f = b.x / n;
    return vec3<f32>(n, a.y + d * f, a.z + b.z + d * d * a.x * f);
}

fn wg_merge(v: vec3<f32>, lid: u32) -> vec3<f32> {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = merge(red[lid], red[lid + s]);
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

// Forward 1 — bindings: x, chunk_stats [N·G·gchunks, 2].
// One workgroup per (group, chunk): (mean, M2) of the chunk; when a group is one chunk
// (gchunks == 1) the final (mean, rstd) instead, and gn_group_stats is not run.
@compute @workgroup_size(WG)
fn gn_chunk_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let id = wg_index(wg, nwg);
    if (id >= p.n * p.groups * p.gchunks) {
        return;
    }
    let m = p.cpg * p.hw;
    let k = id % p.gchunks;
    let start = (id / p.gchunks) * m + k * p.chunk;
    let len = min(p.chunk, m - k * p.chunk);
    // One pass: Welford's update per invocation, then Chan's merge across the workgroup. (A
    // two-pass version read x twice; on llvmpipe every load is a loop over the lanes.)
    var acc = vec3<f32>(0.0);
    for (var i = lid; i < len; i += WG) {
        let v = x[start + i];
        acc.x += 1.0;
        let d = v - acc.y;
        acc.y += d / acc.x;
        acc.z += d * (v - acc.y);
    }
    let t = wg_merge(acc, lid);
    if (lid == 0u) {
        chunk_stats[2u * id] = t.y;
        if (p.gchunks == 1u) {
            chunk_stats[2u * id + 1u] = inverseSqrt(t.z / f32(m) + p.eps);
        } else {
            chunk_stats[2u * id + 1u] = t.z;
        }
    }
}

// Forward 2 — bindings: parts (chunk stats), stats_out [N, G, 2].
// One workgroup per group: merge its chunks into (mean, rstd).
@compute @workgroup_size(WG)
fn gn_group_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let grp = wg_index(wg, nwg);
    if (grp >= p.n * p.groups) {
        return;
    }
    let m = p.cpg * p.hw;
    var acc = vec3<f32>(0.0);
    for (var k = lid; k < p.gchunks; k += WG) {
        let e = grp * p.gchunks + k;
        let cnt = f32(min(p.chunk, m - k * p.chunk));
        acc = merge(acc, vec3<f32>(cnt, parts[2u * e], parts[2u * e + 1u]));
    }
    let t = wg_merge(acc, lid);
    if (lid == 0u) {
        stats_out[2u * grp] = t.y;
        stats_out[2u * grp + 1u] = inverseSqrt(t.z / f32(m) + p.eps);
    }
}

struct RowChunk {
    base: u32,  // first element
    len: u32,
    c: u32,
    n: u32,
    grp: u32,   // n·G + c / cpg
}

fn row_chunk(id: u32) -> RowChunk {
    let row = id / p.rchunks;
    let r = id % p.rchunks;
    let c = row % p.c;
    let n = row / p.c;
    return RowChunk(row * p.hw + r * p.rchunk, min(p.rchunk, p.hw - r * p.rchunk), c, n,
                    n * p.groups + c / p.cpg);
}

// Forward 3 — bindings: x, gamma, beta, stats, y.
// One workgroup per (row, chunk): y = (silu of) xhat·γ + β.
@compute @workgroup_size(WG)
fn gn_normalize(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let id = wg_index(wg, nwg);
    if (id >= p.n * p.c * p.rchunks) {
        return;
    }
    let rc = row_chunk(id);
    let mean = stats[2u * rc.grp];
    let rstd = stats[2u * rc.grp + 1u];
    let a = rstd * gamma[rc.c];
    let b = beta[rc.c];
    for (var j = lid; j < rc.len; j += WG) {
        var o = (x[rc.base + j] - mean) * a + b;
        if (p.silu != 0u) {
            o = o * sigmoid(o);
        }
        y[rc.base + j] = o;
    }
}

// Backward 1 — bindings: x, gamma, beta, stats, dy, parts_out [N·C·rchunks, 2].
// One workgroup per (row, chunk): (Σg, Σg·xhat) over the chunk.
@compute @workgroup_size(WG)
fn gn_bwd_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let id = wg_index(wg, nwg);
    if (id >= p.n * p.c * p.rchunks) {
        return;
    }
    let rc = row_chunk(id);
    let mean = stats[2u * rc.grp];
    let rstd = stats[2u * rc.grp + 1u];
    let ga = gamma[rc.c];
    let be = beta[rc.c];
    var acc = vec2<f32>(0.0);
    for (var j = lid; j < rc.len; j += WG) {
        let xh = (x[rc.base + j] - mean) * rstd;
        let g = pre_grad(dy[rc.base + j], xh * ga + be);
        acc += vec2<f32>(g, g * xh);
    }
    let t = wg_sum(acc, lid);
    if (lid == 0u) {
        parts_out[2u * id] = t.x;
        parts_out[2u * id + 1u] = t.y;
    }
}

// Backward 2 — bindings: parts, gamma, coef_out [N, G, 2], dgamma [C], dbeta [C].
// Workgroups 0 .. N·G-1: coef_out[grp] = (mean_group(γ·g), mean_group(γ·g·xhat)), from the
// cpg·rchunks partials of the group (contiguous). Workgroups N·G .. N·G+C-1: dβ[c], dγ[c] from
// the N·rchunks partials of channel c.
@compute @workgroup_size(WG)
fn gn_bwd_reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let id = wg_index(wg, nwg);
    let ngroups = p.n * p.groups;
    if (id >= ngroups + p.c) {
        return;
    }
    var acc = vec2<f32>(0.0);
    if (id < ngroups) {
        let per = p.cpg * p.rchunks;
        let first = (id / p.groups) * p.c + (id % p.groups) * p.cpg; // first row of the group
        for (var e = lid; e < per; e += WG) {
            let i = first * p.rchunks + e;
            let c = (first + e / p.rchunks) % p.c;
            acc += gamma[c] * vec2<f32>(parts[2u * i], parts[2u * i + 1u]);
        }
    } else {
        let c = id - ngroups;
        for (var e = lid; e < p.n * p.rchunks; e += WG) {
            let i = ((e / p.rchunks) * p.c + c) * p.rchunks + e % p.rchunks;
            acc += vec2<f32>(parts[2u * i], parts[2u * i + 1u]);
        }
    }
    let t = wg_sum(acc, lid);
    if (lid == 0u) {
        if (id < ngroups) {
            let inv_m = 1.0 / f32(p.cpg * p.hw);
            coef_out[2u * id] = t.x * inv_m;
            coef_out[2u * id + 1u] = t.y * inv_m;
        } else {
            dbeta[id - ngroups] = t.x;
            dgamma[id - ngroups] = t.y;
        }
    }
}

// Backward 3 — bindings: x, gamma, beta, stats, dy, coef, dx, dx_addend.
// One workgroup per (row, chunk): dx = rstd·(γ·g - coef.x - xhat·coef.y) (+ dx_addend when
// p.dx_add: the gradient reaching x by another path, e.g. a ResNet block's shortcut).
@compute @workgroup_size(WG)
fn gn_bwd_dx(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let id = wg_index(wg, nwg);
    if (id >= p.n * p.c * p.rchunks) {
        return;
    }
    let rc = row_chunk(id);
    let mean = stats[2u * rc.grp];
    let rstd = stats[2u * rc.grp + 1u];
    let ga = gamma[rc.c];
    let be = beta[rc.c];
    let cm = vec2<f32>(coef[2u * rc.grp], coef[2u * rc.grp + 1u]);
    for (var j = lid; j < rc.len; j += WG) {
        let xh = (x[rc.base + j] - mean) * rstd;
        let g = pre_grad(dy[rc.base + j], xh * ga + be);
        var d = rstd * (ga * g - cm.x - xh * cm.y);
        if (p.dx_add != 0u) {
            d += dx_addend[rc.base + j];
        }
        dx[rc.base + j] = d;
    }
}

// ---- vec4 variants -------------------------------------------------------------------------
// When H·W and the chunk sizes are multiples of 4, every row and chunk starts on a vec4, and the
// entry points below move x, y, dy and dx as vec4s: on llvmpipe a vec4 load costs about 2.5
// scalar ones (measured 2026-12-02, Mesa 25.0). Same arithmetic, per component, as above.

@group(0) @binding(1) var<storage, read> x4: array<W4>;
@group(0) @binding(5) var<storage, read_write> y4: array<W4>;
@group(0) @binding(5) var<storage, read> dy4: array<W4>;
@group(0) @binding(7) var<storage, read_write> dx4: array<W4>;
@group(0) @binding(8) var<storage, read> dx_addend4: array<W4>;

fn welford(acc: vec3<f32>, v: f32) -> vec3<f32> {
    let cnt = acc.x + 1.0;
    let d = v - acc.y;
    let mean = acc.y + d / cnt;
    return vec3<f32>(cnt, mean, acc.z + d * (v - mean));
}

fn pre_grad4(g: vec4<f32>, pre: vec4<f32>) -> vec4<f32> {
    if (p.silu == 0u) {
        return g;
    }
    let s = 1.0 / (1.0 + exp(-pre));
    return g * s * (1.0 + pre * (1.0 - s));
}

// gn_chunk_stats over vec4s.
@compute @workgroup_size(WG)
fn gn_chunk_stats4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let id = wg_index(wg, nwg);
    if (id >= p.n * p.groups * p.gchunks) {
        return;
    }
    let m = p.cpg * p.hw;
    let k = id % p.gchunks;
    let start = ((id / p.gchunks) * m + k * p.chunk) / 4u;
    let len = min(p.chunk, m - k * p.chunk) / 4u;
    var acc = vec3<f32>(0.0);
    for (var i = lid; i < len; i += WG) {
        let v = ld4(x4[start + i]);
        acc = welford(welford(welford(welford(acc, v.x), v.y), v.z), v.w);
    }
    let t = wg_merge(acc, lid);
    if (lid == 0u) {
        chunk_stats[2u * id] = t.y;
        if (p.gchunks == 1u) {
            chunk_stats[2u * id + 1u] = inverseSqrt(t.z / f32(m) + p.eps);
        } else {
            chunk_stats[2u * id + 1u] = t.z;
        }
    }
}

// gn_normalize over vec4s.
@compute @workgroup_size(WG)
fn gn_normalize4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let id = wg_index(wg, nwg);
    if (id >= p.n * p.c * p.rchunks) {
        return;
    }
    let rc = row_chunk(id);
    let mean = stats[2u * rc.grp];
    let rstd = stats[2u * rc.grp + 1u];
    let a = rstd * gamma[rc.c];
    let b = beta[rc.c];
    let base = rc.base / 4u;
    for (var j = lid; j < rc.len / 4u; j += WG) {
        var o = (ld4(x4[base + j]) - mean) * a + b;
        if (p.silu != 0u) {
            o = o / (1.0 + exp(-o));
        }
        y4[base + j] = st4(o);
    }
}

// gn_bwd_partials over vec4s.
@compute @workgroup_size(WG)
fn gn_bwd_partials4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let id = wg_index(wg, nwg);
    if (id >= p.n * p.c * p.rchunks) {
        return;
    }
    let rc = row_chunk(id);
    let mean = stats[2u * rc.grp];
    let rstd = stats[2u * rc.grp + 1u];
    let ga = gamma[rc.c];
    let be = beta[rc.c];
    let base = rc.base / 4u;
    var acc = vec2<f32>(0.0);
    for (var j = lid; j < rc.len / 4u; j += WG) {
        let xh = (ld4(x4[base + j]) - mean) * rstd;
        let g = pre_grad4(dropout_apply4(ld4(dy4[base + j]), base + j, p.drop), xh * ga + be);
        acc += vec2<f32>(dot(g, vec4(1.0)), dot(g, xh));
    }
    let t = wg_sum(acc, lid);
    if (lid == 0u) {
        parts_out[2u * id] = t.x;
        parts_out[2u * id + 1u] = t.y;
    }
}

// gn_bwd_dx over vec4s.
@compute @workgroup_size(WG)
fn gn_bwd_dx4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let id = wg_index(wg, nwg);
    if (id >= p.n * p.c * p.rchunks) {
        return;
    }
    let rc = row_chunk(id);
    let mean = stats[2u * rc.grp];
    let rstd = stats[2u * rc.grp + 1u];
    let ga = gamma[rc.c];
    let be = beta[rc.c];
    let cm = vec2<f32>(coef[2u * rc.grp], coef[2u * rc.grp + 1u]);
    let base = rc.base / 4u;
    for (var j = lid; j < rc.len / 4u; j += WG) {
        let xh = (ld4(x4[base + j]) - mean) * rstd;
        let g = pre_grad4(dropout_apply4(ld4(dy4[base + j]), base + j, p.drop), xh * ga + be);
        var d = rstd * (ga * g - cm.x - xh * cm.y);
        if (p.dx_add != 0u) {
            d += ld4(dx_addend4[base + j]);
        }
        dx4[base + j] = st4(d);
    }
}
