// Multi-head scaled dot-product self-attention. The flash kernels never write the T×T score
// matrix to global memory, neither in the forward nor in the backward; the row kernels at the
// end serve the GEMM path (one head, src/ops/attention.rs), which does.
//
// Layout: q, k, v, o, dout are [B, T, C] with C = heads·d; head h owns channels h·d..(h+1)·d, so
// the row of token t for head h starts at (b·T + t)·C + h·d. lse and delta are [B, heads, T].
//
// Mapping (chosen for llvmpipe, which runs 8 invocations as one SIMD vector and turns
// per-lane-different loads into scalar gathers): every invocation owns ONE row (a query in the
// forward and dq kernels, a key in the dk/dv kernel) and keeps that row and its accumulators in
// private vec4 arrays. The other side is staged tile by tile in workgroup memory and read at
// addresses that are the same for every invocation (broadcast loads). Rows are zero-padded to
// D4 vec4s, so any d works; loops over c < D4 have a pipeline-constant trip count, so the
// compiler can unroll them and keep the rows in registers. Tile rows are consumed four at a
// time (a "quad"), so the online-softmax rescale of the accumulator happens once per 4 keys.

struct Params {
    t: u32,         // tokens
    c: u32,         // channels = heads·d
    heads: u32,
    d: u32,         // head dim
    scale: f32,     // 1/√d
    blocks: u32,    // row blocks per (batch, head) = ceil(T / WG)
    groups: u32,    // batch·heads·blocks = workgroups that do work
    _pad: u32,
}

override WG: u32 = 64u;  // invocations per workgroup = rows per workgroup
override D4: u32 = 16u;  // ceil(d / 4)
override BK: u32 = 32u;  // rows per staged tile; multiple of 4, BK·D4 <= TILE, BK <= MAXBK

const MAXD4: u32 = 128u; // d <= 512
const TILE: u32 = 512u;  // vec4s per staged tile (8 KiB)
const MAXBK: u32 = 128u;
const NEG: f32 = -1e30;  // finite "minus infinity": exp(NEG - m) = 0 and NEG - NEG is not NaN

@group(0) @binding(0) var<uniform> p: Params;
// Every entry point reads q, k, v at bindings 1..3; the rest differ per entry point.
@group(0) @binding(1) var<storage, read> gq: array<f32>;
@group(0) @binding(2) var<storage, read> gk: array<f32>;
@group(0) @binding(3) var<storage, read> gv: array<f32>;

var<workgroup> tile_a: array<vec4<f32>, TILE>;     // K (forward, dq) or Q (dk/dv)
var<workgroup> tile_b: array<vec4<f32>, TILE>;     // V (forward, dq) or dout (dk/dv)
var<workgroup> tile_r: array<vec2<f32>, MAXBK>;    // (lse, delta) of the staged queries (dk/dv)

// One (batch, head, block of WG rows). `valid` is false for the padding workgroups of a 2-D
// grid; they return before any barrier, uniformly for the whole workgroup.
struct Job {
    valid: bool,
    bh: u32,   // b·heads + h
    row0: u32, // first token of this workgroup
    base: u32, // offset of element (b, 0, h·d) in the [B, T, C] tensors
}

fn job(wg: vec3<u32>, nwg: vec3<u32>) -> Job {
    let g = wg.x + wg.y * nwg.x;
    let bh = g / p.blocks;
    let b = bh / p.heads;
    let h = bh % p.heads;
    return Job(g < p.groups, bh, (g % p.blocks) * WG, b * p.t * p.c + h * p.d);
}

// Whether channel 4c+i of token r exists (rows past T and channels past d read as zero).
fn inside(r: u32, c: u32, i: u32) -> bool {
    return r < p.t && 4u * c + i < p.d;
}

// Channels 4c..4c+3 of token r of q (which = 0), k (1) or v (2).
fn ld_qkv(which: u32, base: u32, r: u32, c: u32) -> vec4<f32> {
    var out = vec4<f32>(0.0);
    let off = base + r * p.c + 4u * c;
    for (var i = 0u; i < 4u; i++) {
        if (inside(r, c, i)) {
            switch which {
                case 0u: { out[i] = gq[off + i]; }
                case 1u: { out[i] = gk[off + i]; }
                default: { out[i] = gv[off + i]; }
            }
        }
    }
    return out;
}

// Stage k and v rows s0..s0+BK (forward, dq) into the tiles.
fn stage_kv(base: u32, s0: u32, lid: u32) {
    for (var i = lid; i < BK * D4; i += WG) {
        tile_a[i] = ld_qkv(1u, base, s0 + i / D4, i % D4);
        tile_b[i] = ld_qkv(2u, base, s0 + i / D4, i % D4);
    }
}

// vec4(dot(x, tile[r + j·D4 ..]) for j = 0..3): one row against four staged rows.
fn dot_quad_a(x: ptr<function, array<vec4<f32>, MAXD4>>, r: u32) -> vec4<f32> {
    var s = vec4<f32>(0.0);
    for (var c = 0u; c < D4; c++) {
        let xv = (*x)[c];
        s += vec4<f32>(dot(xv, tile_a[r + c]), dot(xv, tile_a[r + D4 + c]),
                       dot(xv, tile_a[r + 2u * D4 + c]), dot(xv, tile_a[r + 3u * D4 + c]));
    }
    return s;
}

fn dot_quad_b(x: ptr<function, array<vec4<f32>, MAXD4>>, r: u32) -> vec4<f32> {
    var s = vec4<f32>(0.0);
    for (var c = 0u; c < D4; c++) {
        let xv = (*x)[c];
        s += vec4<f32>(dot(xv, tile_b[r + c]), dot(xv, tile_b[r + D4 + c]),
                       dot(xv, tile_b[r + 2u * D4 + c]), dot(xv, tile_b[r + 3u * D4 + c]));
    }
    return s;
}

// acc = acc·alpha + Σ_j w[j]·tile[r + j·D4 ..]
fn axpy_quad_a(acc: ptr<function, array<vec4<f32>, MAXD4>>, alpha: f32, w: vec4<f32>, r: u32) {
    for (var c = 0u; c < D4; c++) {
        (*acc)[c] = (*acc)[c] * alpha + w.x * tile_a[r + c] + w.y * tile_a[r + D4 + c]
                  + w.z * tile_a[r + 2u * D4 + c] + w.w * tile_a[r + 3u * D4 + c];
    }
}

fn axpy_quad_b(acc: ptr<function, array<vec4<f32>, MAXD4>>, alpha: f32, w: vec4<f32>, r: u32) {
    for (var c = 0u; c < D4; c++) {
        (*acc)[c] = (*acc)[c] * alpha + w.x * tile_b[r + c] + w.y * tile_b[r + D4 + c]
                  + w.z * tile_b[r + 2u * D4 + c] + w.w * tile_b[r + 3u * D4 + c];
    }
}

// Indices of the four rows of the quad starting at tile row kk of the tile at s0.
fn quad_rows(s0: u32, kk: u32) -> vec4<u32> {
    return s0 + kk + vec4<u32>(0u, 1u, 2u, 3u);
}

// ---------------------------------------------------------------- forward
@group(0) @binding(4) var<storage, read_write> fo: array<f32>;
@group(0) @binding(5) var<storage, read_write> flse: array<f32>;

// o_t = Σ_s softmax_s(q_t·k_s·scale) v_s with the online softmax: running max m, running sum
// l = Σ exp(score - m), running acc = Σ exp(score - m) v_s; when m grows to m', l and acc are
// multiplied by exp(m - m'). Finally o_t = acc / l and lse_t = m + ln l.
@compute @workgroup_size(WG)
fn attention_fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let jb = job(wg, nwg);
    if (!jb.valid) { return; }
    let t = jb.row0 + lid;
    var qr: array<vec4<f32>, MAXD4>;
    var acc: array<vec4<f32>, MAXD4>;
    for (var c = 0u; c < D4; c++) {
        qr[c] = ld_qkv(0u, jb.base, t, c) * p.scale;
        acc[c] = vec4<f32>(0.0);
    }
    var m = NEG;
    var l = 0.0;
    for (var s0 = 0u; s0 < p.t; s0 += BK) {
        workgroupBarrier();
        stage_kv(jb.base, s0, lid);
        workgroupBarrier();
        let n = min(BK, p.t - s0);
        for (var kk = 0u; kk < n; kk += 4u) {
            let r = kk * D4;
            let sc = select(dot_quad_a(&qr, r), vec4<f32>(NEG), quad_rows(s0, kk) >= vec4<u32>(p.t));
            let m_new = max(m, max(max(sc.x, sc.y), max(sc.z, sc.w)));
            let alpha = exp(m - m_new);
            let e = exp(sc - m_new);
            l = l * alpha + (e.x + e.y) + (e.z + e.w);
            m = m_new;
            axpy_quad_b(&acc, alpha, e, r);
        }
    }
    if (t >= p.t) { return; }
    let inv = 1.0 / l;
    let off = jb.base + t * p.c;
    for (var c = 0u; c < D4; c++) {
        let a = acc[c] * inv;
        for (var i = 0u; i < 4u; i++) {
            if (4u * c + i < p.d) { fo[off + 4u * c + i] = a[i]; }
        }
    }
    flse[jb.bh * p.t + t] = m + log(l);
}

// ---------------------------------------------------------------- backward
// With P_ts = exp(q_t·k_s·scale - lse_t), dP_ts = dout_t·v_s, delta_t = Σ_j dout_tj o_tj and
// dS_ts = P_ts (dP_ts - delta_t):  dq_t = scale Σ_s dS_ts k_s,  dk_s = scale Σ_t dS_ts q_t,
// dv_s = Σ_t P_ts dout_t. The dq kernel (one invocation per query) runs first and also writes
// delta; the dk/dv kernel (one invocation per key) reads it.
@group(0) @binding(4) var<storage, read> bdout: array<f32>;
@group(0) @binding(5) var<storage, read> blse: array<f32>;
@group(0) @binding(6) var<storage, read> bo: array<f32>;
@group(0) @binding(7) var<storage, read_write> wdelta: array<f32>;
@group(0) @binding(8) var<storage, read_write> wdq: array<f32>;

@group(0) @binding(6) var<storage, read> rdelta: array<f32>;
@group(0) @binding(7) var<storage, read_write> wdk: array<f32>;
@group(0) @binding(8) var<storage, read_write> wdv: array<f32>;

fn ld_dout(base: u32, r: u32, c: u32) -> vec4<f32> {
    var out = vec4<f32>(0.0);
    let off = base + r * p.c + 4u * c;
    for (var i = 0u; i < 4u; i++) {
        if (inside(r, c, i)) { out[i] = bdout[off + i]; }
    }
    return out;
}

fn ld_o(base: u32, r: u32, c: u32) -> vec4<f32> {
    var out = vec4<f32>(0.0);
    let off = base + r * p.c + 4u * c;
    for (var i = 0u; i < 4u; i++) {
        if (inside(r, c, i)) { out[i] = bo[off + i]; }
    }
    return out;
}

@compute @workgroup_size(WG)
fn attention_bwd_dq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let jb = job(wg, nwg);
    if (!jb.valid) { return; }
    let t = jb.row0 + lid;
    var qr: array<vec4<f32>, MAXD4>;
    var dor: array<vec4<f32>, MAXD4>;
    var dq: array<vec4<f32>, MAXD4>;
    var delta = 0.0;
    for (var c = 0u; c < D4; c++) {
        qr[c] = ld_qkv(0u, jb.base, t, c) * p.scale;
        dor[c] = ld_dout(jb.base, t, c);
        delta += dot(dor[c], ld_o(jb.base, t, c));
        dq[c] = vec4<f32>(0.0);
    }
    var lse = 0.0;
    if (t < p.t) { lse = blse[jb.bh * p.t + t]; }
    for (var s0 = 0u; s0 < p.t; s0 += BK) {
        workgroupBarrier();
        stage_kv(jb.base, s0, lid);
        workgroupBarrier();
        let n = min(BK, p.t - s0);
        for (var kk = 0u; kk < n; kk += 4u) {
            let r = kk * D4;
            let pr = select(exp(dot_quad_a(&qr, r) - lse), vec4<f32>(0.0),
                            quad_rows(s0, kk) >= vec4<u32>(p.t));
            let ds = pr * (dot_quad_b(&dor, r) - delta);
            axpy_quad_a(&dq, 1.0, ds, r);
        }
    }
    if (t >= p.t) { return; }
    let off = jb.base + t * p.c;
    for (var c = 0u; c < D4; c++) {
        let g = dq[c] * p.scale;
        for (var i = 0u; i < 4u; i++) {
            if (4u * c + i < p.d) { wdq[off + 4u * c + i] = g[i]; }
        }
    }
    wdelta[jb.bh * p.t + t] = delta;
}

// Stage q, dout, lse and delta of queries t0..t0+BK (dk/dv) into the tiles.
fn stage_q(base: u32, bh: u32, t0: u32, lid: u32) {
    for (var i = lid; i < BK * D4; i += WG) {
        tile_a[i] = ld_qkv(0u, base, t0 + i / D4, i % D4);
        tile_b[i] = ld_dout(base, t0 + i / D4, i % D4);
    }
    for (var i = lid; i < BK; i += WG) {
        var r = vec2<f32>(0.0);
        if (t0 + i < p.t) { r = vec2<f32>(blse[bh * p.t + t0 + i], rdelta[bh * p.t + t0 + i]); }
        tile_r[i] = r;
    }
}

@compute @workgroup_size(WG)
fn attention_bwd_dkdv(@builtin(workgroup_id) wg: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let jb = job(wg, nwg);
    if (!jb.valid) { return; }
    let s = jb.row0 + lid;
    var kr: array<vec4<f32>, MAXD4>;
    var vr: array<vec4<f32>, MAXD4>;
    var dk: array<vec4<f32>, MAXD4>;
    var dv: array<vec4<f32>, MAXD4>;
    for (var c = 0u; c < D4; c++) {
        kr[c] = ld_qkv(1u, jb.base, s, c) * p.scale;
        vr[c] = ld_qkv(2u, jb.base, s, c);
        dk[c] = vec4<f32>(0.0);
        dv[c] = vec4<f32>(0.0);
    }
    for (var t0 = 0u; t0 < p.t; t0 += BK) {
        workgroupBarrier();
        stage_q(jb.base, jb.bh, t0, lid);
        workgroupBarrier();
        let n = min(BK, p.t - t0);
        for (var kk = 0u; kk < n; kk += 4u) {
            let r = kk * D4;
            let lse = vec4<f32>(tile_r[kk].x, tile_r[kk + 1u].x, tile_r[kk + 2u].x, tile_r[kk + 3u].x);
            let dl = vec4<f32>(tile_r[kk].y, tile_r[kk + 1u].y, tile_r[kk + 2u].y, tile_r[kk + 3u].y);
            let pr = select(exp(dot_quad_a(&kr, r) - lse), vec4<f32>(0.0),
                            quad_rows(t0, kk) >= vec4<u32>(p.t));
            axpy_quad_b(&dv, 1.0, pr, r);
            let ds = pr * (dot_quad_b(&vr, r) - dl);
            axpy_quad_a(&dk, 1.0, ds, r);
        }
    }
    if (s >= p.t) { return; }
    let off = jb.base + s * p.c;
    for (var c = 0u; c < D4; c++) {
        let gdk = dk[c] * p.scale;
        let gdv = dv[c];
        for (var i = 0u; i < 4u; i++) {
            if (4u * c + i < p.d) {
                wdk[off + 4u * c + i] = gdk[i];
                wdv[off + 4u * c + i] = gdv[i];
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Row kernels of the GEMM path (one head, CPU adapters with 8-wide subgroups): the scores
// S = scale·Q·Kᵀ and the products with P come from the subgroup GEMM (matmul_subgroup.wgsl),
// which moves far fewer values per multiply-add on llvmpipe than the staged tiles above. These
// kernels work on the [B·T, T] rows of S: `groups` = rows, `t` = row length.

@group(0) @binding(1) var<storage, read_write> rows_s: array<f32>;
@group(0) @binding(2) var<storage, read_write> rows_lse: array<f32>;
@group(0) @binding(2) var<storage, read_write> rows_dp: array<f32>;
@group(0) @binding(3) var<storage, read> rows_lse_in: array<f32>;

// S → P = softmax(S) in place, lse = logsumexp(S) per row.
@compute @workgroup_size(64)
fn softmax_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let r = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (r >= p.groups) {
        return;
    }
    let base = r * p.t;
    var m = NEG;
    for (var s = 0u; s < p.t; s++) {
        m = max(m, rows_s[base + s]);
    }
    var l = 0.0;
    for (var s = 0u; s < p.t; s++) {
        l += exp(rows_s[base + s] - m);
    }
    let lse = m + log(l);
    for (var s = 0u; s < p.t; s++) {
        rows_s[base + s] = exp(rows_s[base + s] - lse);
    }
    rows_lse[r] = lse;
}

// Softmax backward: S → P = exp(S − lse), dP → dS = scale·P·(dP − Σ_s P·dP) in place, so that
// dQ = dS·K and dK = dSᵀ·Q are gradients with respect to the unscaled q and k.
@compute @workgroup_size(64)
fn softmax_rows_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let r = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (r >= p.groups) {
        return;
    }
    let base = r * p.t;
    let lse = rows_lse_in[r];
    var delta = 0.0;
    for (var s = 0u; s < p.t; s++) {
        let pv = exp(rows_s[base + s] - lse);
        rows_s[base + s] = pv;
        delta += pv * rows_dp[base + s];
    }
    for (var s = 0u; s < p.t; s++) {
        rows_dp[base + s] = p.scale * rows_s[base + s] * (rows_dp[base + s] - delta);
    }
}
