// Layout ops: nearest 2x upsampling (and its adjoint) and the batched transpose between NCHW
// and NLC (L = H·W); the channel concat/split are buffer copies (src/ops/layout.rs).
// Elementwise entry points use 256 invocations per workgroup over a 2-D grid of workgroups
// (Context::grid): linear index wg.x + wg.y·nwg.x.

struct Params {
    n: u32,   // elements handled (one per invocation), or batch for the transpose
    p0: u32,  // upsample: W; transpose: rows R
    p1: u32,  // transpose: columns K
    p2: u32,  // transpose: tiles per matrix
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

// Nearest 2x: input element (row, x) of rows of width W (row = (n·C + c)·H + h) fills the 2x2
// block at output rows 2·row, 2·row + 1 (width 2W), columns 2x, 2x + 1. One invocation per
// input element. Bindings: src, dst.
@compute @workgroup_size(256)
fn upsample_nearest2x(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let row = i / p.p0;
    let o = 2u * row * (2u * p.p0) + 2u * (i - row * p.p0);
    let v = src[i];
    dst[o] = v;
    dst[o + 1u] = v;
    dst[o + 2u * p.p0] = v;
    dst[o + 2u * p.p0 + 1u] = v;
}

// Adjoint of upsample_nearest2x: dx(row, x) = sum of the 2x2 block of dy. Bindings: src (dy), dst.
@compute @workgroup_size(256)
fn upsample_nearest2x_backward(@builtin(workgroup_id) wg: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let row = i / p.p0;
    let o = 2u * row * (2u * p.p0) + 2u * (i - row * p.p0);
    dst[i] = (src[o] + src[o + 1u]) + (src[o + 2u * p.p0] + src[o + 2u * p.p0 + 1u]);
}

// Batched transpose src [B, R, K] -> dst [B, K, R] through a 16x16 tile in workgroup memory, so
// that both the reads and the writes of a workgroup are row-contiguous. One workgroup per tile;
// p2 = tiles per matrix = ceil(R/16)·ceil(K/16). Bindings: src, dst.
var<workgroup> tile: array<array<f32, 17>, 16>;   // 17: no bank conflicts on the column read

@compute @workgroup_size(16, 16)
fn transpose(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) l: vec3<u32>) {
    let id = wg.x + wg.y * nwg.x;
    if (id >= p.n * p.p2) {
        return;
    }
    let rows = p.p0;
    let cols = p.p1;
    let tiles_k = (cols + 15u) / 16u;
    let bt = id / p.p2;
    let t = id - bt * p.p2;
    let r0 = (t / tiles_k) * 16u;
    let k0 = (t % tiles_k) * 16u;
    let base = bt * rows * cols;
    if (r0 + l.y < rows && k0 + l.x < cols) {
        tile[l.y][l.x] = src[base + (r0 + l.y) * cols + k0 + l.x];
    }
    workgroupBarrier();
    if (k0 + l.y < cols && r0 + l.x < rows) {
        dst[base + (k0 + l.y) * rows + r0 + l.x] = tile[l.x][l.y];
    }
}

// The same transpose for CPU adapters when R % 4 == 0 and K % 4 == 0: one invocation per 4×4
// block (4 vec4 loads, a register transpose, 4 vec4 stores), 64 invocations per workgroup and no
// workgroup memory (llvmpipe runs a 16×16 workgroup as 32 SIMD slices that switch at the
// barrier, and a vec4 access costs about 2.5 scalar ones). p2 = blocks per matrix =
// (R/4)·(K/4), numbered row-major.
@group(0) @binding(1) var<storage, read> src4: array<W4>;
@group(0) @binding(2) var<storage, read_write> dst4: array<W4>;

@compute @workgroup_size(64)
fn transpose4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let id = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (id >= p.n * p.p2) {
        return;
    }
    let rows4 = p.p0 / 4u;
    let cols4 = p.p1 / 4u;
    let bt = id / p.p2;
    let t = id - bt * p.p2;
    let rb = t / cols4;
    let kb = t - rb * cols4;
    // In vec4s: src row r holds cols4 of them, dst row k holds rows4.
    let s0 = bt * p.p0 * cols4 + 4u * rb * cols4 + kb;
    let a0 = ld4(src4[s0]);
    let a1 = ld4(src4[s0 + cols4]);
    let a2 = ld4(src4[s0 + 2u * cols4]);
    let a3 = ld4(src4[s0 + 3u * cols4]);
    let d0 = bt * p.p1 * rows4 + 4u * kb * rows4 + rb;
    dst4[d0] = st4(vec4(a0.x, a1.x, a2.x, a3.x));
    dst4[d0 + rows4] = st4(vec4(a0.y, a1.y, a2.y, a3.y));
    dst4[d0 + 2u * rows4] = st4(vec4(a0.z, a1.z, a2.z, a3.z));
    dst4[d0 + 3u * rows4] = st4(vec4(a0.w, a1.w, a2.w, a3.w));
}

// upsample_nearest2x and its adjoint for W % 4 == 0, one invocation per 4 input elements of a
// row: one vec4 load and four vec4 stores (the adjoint: four loads, one store) instead of 4 + 16
// scalar accesses (transpose4's src4 / dst4 bindings).
// Input vec4 i (rows of w4 vec4s) covers output vec4s o, o + 1 of output row 2·row and the
// same two of row 2·row + 1 (rows of 2·w4 vec4s); returns o.
fn up_block4(i: u32, w4: u32) -> u32 {
    let row = i / w4;
    return 2u * row * (2u * w4) + 2u * (i - row * w4);
}

@compute @workgroup_size(256)
fn upsample_nearest2x4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n / 4u) { return; }
    let w4 = p.p0 / 4u;
    let o = up_block4(i, w4);
    let v = ld4(src4[i]);
    let lo = vec4(v.x, v.x, v.y, v.y);
    let hi = vec4(v.z, v.z, v.w, v.w);
    dst4[o] = st4(lo);
    dst4[o + 1u] = st4(hi);
    dst4[o + 2u * w4] = st4(lo);
    dst4[o + 2u * w4 + 1u] = st4(hi);
}

@compute @workgroup_size(256)
fn upsample_nearest2x_backward4(@builtin(workgroup_id) wg: vec3<u32>,
                                @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.n / 4u) { return; }
    let w4 = p.p0 / 4u;
    let o = up_block4(i, w4);
    let a = ld4(src4[o]) + ld4(src4[o + 2u * w4]);
    let b = ld4(src4[o + 1u]) + ld4(src4[o + 2u * w4 + 1u]);
    dst4[i] = st4(vec4(a.x + a.y, a.z + a.w, b.x + b.y, b.z + b.w));
}
