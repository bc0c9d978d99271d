// Subgroup matmul for 8-wide SIMD CPU adapters (llvmpipe/lavapipe). Uses subgroup builtins (naga 30
// rejects `enable subgroups;` and takes them without it), so only adapters with SUBGROUP load it.
//
// gemm_sg: out[b] = alpha * op(A[b]) * op(B[b]) + beta * out[b], shapes as in matmul.wgsl.
// llvmpipe runs a subgroup of 8 invocations as one SIMD vector and turns every storage or
// workgroup-memory load into a loop over the 8 lanes, while arithmetic on registers and
// subgroupBroadcast (an extract plus a splat) are single instructions. So this kernel has no
// workgroup memory and makes each load count: every load is a vec4, and operands that all lanes
// need are loaded once per subgroup and shared with subgroupBroadcast.
//
// A subgroup owns a 32-row x 32-column output tile: lane l holds columns 4l..4l+3 of the tile
// for all 32 rows (32 vec4 accumulators). Per step of 4 along K, lane l loads its 4x4 block of
// op(B) (4 vec4 loads) and 1/8 of the 32x4 block of op(A) (4 vec4 loads); each A value is then
// broadcast to all lanes. That is 8 loads per 512 FMAs per lane.
//
// Why loads cost so much there (lp_bld_nir_soa.c, emit_load_mem, Mesa 22.3 and 25.0 alike): a
// storage load whose address is not "always uniform" (built from constants and push constants
// only; workgroup_id and loop counters do not count) becomes a loop over the 8 lanes with a
// bounds-check branch and a scalar load per component. Read from the JIT's code with gdb
// (2026-12-03, Mesa 25.0.7, LLVM 15, a Xeon with AVX-512): about 8 instructions per lane and
// component, against 2 per 8-lane FMA (llvmpipe lowers fma to a multiply and an add), so the
// loads are most of the loop. Hence the tile: 16 x 32 (6 loads per 256 FMAs, the layout until
// then) spent about 3 load instructions per arithmetic one, and 32 x 32 ran 1.2-1.3x faster
// there, back to back; 32 x 64 (a lane holds 8 columns, 64 accumulators) was slower again,
// and so was any loop over the rows instead of the written-out updates (4x: NIR does not
// unroll it and acc leaves the registers). Measured on an earlier machine (2026-12-02) and not
// kept: rows loaded at per-row uniform addresses (one subgroup per workgroup) 0.5-0.9x; B read
// through an rgba32float texture (textureLoad), level (texel fetches are per-lane loads too);
// llvmpipe at 512 bits (LP_NATIVE_VECTOR_WIDTH=512, subgroups of 16) with a 16-lane variant,
// 0.6-0.9x.
//
// Requirements (checked by the launcher): K % 4 == 0, N % 4 == 0, and M % 4 == 0 when trans_a,
// so that every vec4 lies inside one row. Rows past M and columns past N load clamped (valid)
// addresses and are not stored. The workgroup stacks WG / 8 subgroups along M, and tiles are
// numbered linearly (batch, tile row, tile column) over a 2-D grid (Context::grid), columns
// fastest so that consecutive workgroups reuse the same rows of A from cache.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    trans_a: u32,
    trans_b: u32,
    tiles_m: u32,
    tiles_n: u32,
    alpha: f32,
    beta: f32,
    // 1: every batch uses the same A (batch stride 0), e.g. the weights of a convolution.
    a_shared: u32,
    // Offsets, in vec4s, of the first element of A, B and out in their buffers (a batch of
    // convolution images is a window of a larger tensor).
    a_off: u32,
    b_off: u32,
    out_off: u32,
    // 1: add row_bias[row] to every element of output row `row`; 2: add row_bias[col] to every
    // element of output column `col` (after alpha and beta).
    has_bias: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// W4 / ld4 / st4: shaders/wide/ (vec4<f32>, or two u64s where that moves fewer components).
@group(0) @binding(1) var<storage, read> a: array<W4>;
@group(0) @binding(2) var<storage, read> b: array<W4>;
@group(0) @binding(3) var<storage, read_write> out: array<W4>;
@group(0) @binding(4) var<storage, read> row_bias: array<f32>;  // [M] or [N], per has_bias

// Invocations per workgroup (a multiple of the subgroup size 8).
override WG: u32 = 32u;
// A is stored [K,M] (pipeline constant, so the branches below fold away).
override TA: bool = false;
// B is stored [N,K].
override TB: bool = false;

const ROWS: u32 = 32u;
// 8-row tiles, for M <= 8 (a convolution with 1 or 3 output channels): one A row group instead
// of four, so no loads or multiply-adds for rows that are never stored. Folded at pipeline
// creation, so the 32-row kernel is the code it was.
override SHORT: bool = false;

// Lane l's vec4 `v` seen by every lane, for l = 0..7.
fn bcast8(v: vec4<f32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u),
        subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u),
        subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u),
        subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

// acc + sum_i a[i] * b_i: one output row's 4 columns over 4 steps of K.
fn step4(acc: vec4<f32>, av: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>,
         b3: vec4<f32>) -> vec4<f32> {
    return fma(vec4(av.w), b3, fma(vec4(av.z), b2, fma(vec4(av.y), b1, fma(vec4(av.x), b0, acc))));
}

// Row h*4+q of an 8-row group (h = 0, 1; q = 0..3) when A is stored [K,M]: lane 4h+i loaded
// A rows 4h..4h+3 at k + i, so the row's 4 K values are component q of lanes 4h..4h+3.
fn col_ta(s: array<vec4<f32>, 8>, h: u32, q: u32) -> vec4<f32> {
    return vec4(s[4u * h][q], s[4u * h + 1u][q], s[4u * h + 2u][q], s[4u * h + 3u][q]);
}

@compute @workgroup_size(WG)
fn gemm_sg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32,
           @builtin(subgroup_invocation_id) lane: u32) {
    let per_batch = p.tiles_m * p.tiles_n;
    let tile = wg.x + wg.y * nwg.x;
    if (tile >= per_batch * p.batch) {
        return;
    }
    let bat = tile / per_batch;
    let t = tile % per_batch;
    let rows = select(ROWS, 8u, SHORT);
    let r0 = (t / p.tiles_n) * (WG / 8u) * rows + (lid / 8u) * rows;
    let col = (t % p.tiles_n) * 32u + lane * 4u;
    let k4 = p.k / 4u;
    let m4 = p.m / 4u;
    let n4 = p.n / 4u;
    // Base offsets in vec4s (every per-batch size is a multiple of 4 by the requirements).
    let a_base = p.a_off + select(bat * p.m * k4, 0u, p.a_shared != 0u);
    let b_base = p.b_off + bat * p.k * n4;
    let cl = min(col, p.n - 4u);
    // A rows this lane loads for row group i (rows r0 + 8i .. r0 + 8i + 7): !TA: row
    // r0 + 8i + l (all of K's 4 values); TA: A stored [K,M], lane l loads rows
    // r0 + 8i + 4(l / 4) .. +3 at k + l % 4 (see col_ta).
    var ra: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        if (TA) {
            ra[i] = min(r0 + 8u * i + (lane / 4u) * 4u, p.m - 4u) / 4u;
        } else {
            ra[i] = min(r0 + 8u * i + lane, p.m - 1u);
        }
    }
    // Written out in full below: llvmpipe keeps acc in registers only when every index is a
    // constant, and NIR does not unroll loops over the rows here (a loop over r measured 4x
    // slower).
    var acc: array<vec4<f32>, 32>;
    for (var k = 0u; k < p.k; k += 4u) {
        // b_i = op(B)[k + i, col..col+3]
        var b0: vec4<f32>;
        var b1: vec4<f32>;
        var b2: vec4<f32>;
        var b3: vec4<f32>;
        if (TB) {
            let t0 = ld4(b[b_base + cl * k4 + k / 4u]);
            let t1 = ld4(b[b_base + (cl + 1u) * k4 + k / 4u]);
            let t2 = ld4(b[b_base + (cl + 2u) * k4 + k / 4u]);
            let t3 = ld4(b[b_base + (cl + 3u) * k4 + k / 4u]);
            b0 = vec4(t0.x, t1.x, t2.x, t3.x);
            b1 = vec4(t0.y, t1.y, t2.y, t3.y);
            b2 = vec4(t0.z, t1.z, t2.z, t3.z);
            b3 = vec4(t0.w, t1.w, t2.w, t3.w);
        } else {
            b0 = ld4(b[b_base + k * n4 + cl / 4u]);
            b1 = ld4(b[b_base + (k + 1u) * n4 + cl / 4u]);
            b2 = ld4(b[b_base + (k + 2u) * n4 + cl / 4u]);
            b3 = ld4(b[b_base + (k + 3u) * n4 + cl / 4u]);
        }
        if (TA) {
            let kl = k + lane % 4u;
            let s0 = bcast8(ld4(a[a_base + kl * m4 + ra[0]]));
            var s1: array<vec4<f32>, 8>;
            var s2: array<vec4<f32>, 8>;
            var s3: array<vec4<f32>, 8>;
            if (!SHORT) {
                s1 = bcast8(ld4(a[a_base + kl * m4 + ra[1]]));
                s2 = bcast8(ld4(a[a_base + kl * m4 + ra[2]]));
                s3 = bcast8(ld4(a[a_base + kl * m4 + ra[3]]));
            }
            acc[0] = step4(acc[0], col_ta(s0, 0u, 0u), b0, b1, b2, b3);
            acc[1] = step4(acc[1], col_ta(s0, 0u, 1u), b0, b1, b2, b3);
            acc[2] = step4(acc[2], col_ta(s0, 0u, 2u), b0, b1, b2, b3);
            acc[3] = step4(acc[3], col_ta(s0, 0u, 3u), b0, b1, b2, b3);
            acc[4] = step4(acc[4], col_ta(s0, 1u, 0u), b0, b1, b2, b3);
            acc[5] = step4(acc[5], col_ta(s0, 1u, 1u), b0, b1, b2, b3);
            acc[6] = step4(acc[6], col_ta(s0, 1u, 2u), b0, b1, b2, b3);
            acc[7] = step4(acc[7], col_ta(s0, 1u, 3u), b0, b1, b2, b3);
            if (!SHORT) {
                acc[8] = step4(acc[8], col_ta(s1, 0u, 0u), b0, b1, b2, b3);
                acc[9] = step4(acc[9], col_ta(s1, 0u, 1u), b0, b1, b2, b3);
                acc[10] = step4(acc[10], col_ta(s1, 0u, 2u), b0, b1, b2, b3);
                acc[11] = step4(acc[11], col_ta(s1, 0u, 3u), b0, b1, b2, b3);
                acc[12] = step4(acc[12], col_ta(s1, 1u, 0u), b0, b1, b2, b3);
                acc[13] = step4(acc[13], col_ta(s1, 1u, 1u), b0, b1, b2, b3);
                acc[14] = step4(acc[14], col_ta(s1, 1u, 2u), b0, b1, b2, b3);
                acc[15] = step4(acc[15], col_ta(s1, 1u, 3u), b0, b1, b2, b3);
                acc[16] = step4(acc[16], col_ta(s2, 0u, 0u), b0, b1, b2, b3);
                acc[17] = step4(acc[17], col_ta(s2, 0u, 1u), b0, b1, b2, b3);
                acc[18] = step4(acc[18], col_ta(s2, 0u, 2u), b0, b1, b2, b3);
                acc[19] = step4(acc[19], col_ta(s2, 0u, 3u), b0, b1, b2, b3);
                acc[20] = step4(acc[20], col_ta(s2, 1u, 0u), b0, b1, b2, b3);
                acc[21] = step4(acc[21], col_ta(s2, 1u, 1u), b0, b1, b2, b3);
                acc[22] = step4(acc[22], col_ta(s2, 1u, 2u), b0, b1, b2, b3);
                acc[23] = step4(acc[23], col_ta(s2, 1u, 3u), b0, b1, b2, b3);
                acc[24] = step4(acc[24], col_ta(s3, 0u, 0u), b0, b1, b2, b3);
                acc[25] = step4(acc[25], col_ta(s3, 0u, 1u), b0, b1, b2, b3);
                acc[26] = step4(acc[26], col_ta(s3, 0u, 2u), b0, b1, b2, b3);
                acc[27] = step4(acc[27], col_ta(s3, 0u, 3u), b0, b1, b2, b3);
                acc[28] = step4(acc[28], col_ta(s3, 1u, 0u), b0, b1, b2, b3);
                acc[29] = step4(acc[29], col_ta(s3, 1u, 1u), b0, b1, b2, b3);
                acc[30] = step4(acc[30], col_ta(s3, 1u, 2u), b0, b1, b2, b3);
                acc[31] = step4(acc[31], col_ta(s3, 1u, 3u), b0, b1, b2, b3);
            }
        } else {
            let s0 = bcast8(ld4(a[a_base + ra[0] * k4 + k / 4u]));
            var s1: array<vec4<f32>, 8>;
            var s2: array<vec4<f32>, 8>;
            var s3: array<vec4<f32>, 8>;
            if (!SHORT) {
                s1 = bcast8(ld4(a[a_base + ra[1] * k4 + k / 4u]));
                s2 = bcast8(ld4(a[a_base + ra[2] * k4 + k / 4u]));
                s3 = bcast8(ld4(a[a_base + ra[3] * k4 + k / 4u]));
            }
            acc[0] = step4(acc[0], s0[0], b0, b1, b2, b3);
            acc[1] = step4(acc[1], s0[1], b0, b1, b2, b3);
            acc[2] = step4(acc[2], s0[2], b0, b1, b2, b3);
            acc[3] = step4(acc[3], s0[3], b0, b1, b2, b3);
            acc[4] = step4(acc[4], s0[4], b0, b1, b2, b3);
            acc[5] = step4(acc[5], s0[5], b0, b1, b2, b3);
            acc[6] = step4(acc[6], s0[6], b0, b1, b2, b3);
            acc[7] = step4(acc[7], s0[7], b0, b1, b2, b3);
            if (!SHORT) {
                acc[8] = step4(acc[8], s1[0], b0, b1, b2, b3);
                acc[9] = step4(acc[9], s1[1], b0, b1, b2, b3);
                acc[10] = step4(acc[10], s1[2], b0, b1, b2, b3);
                acc[11] = step4(acc[11], s1[3], b0, b1, b2, b3);
                acc[12] = step4(acc[12], s1[4], b0, b1, b2, b3);
                acc[13] = step4(acc[13], s1[5], b0, b1, b2, b3);
                acc[14] = step4(acc[14], s1[6], b0, b1, b2, b3);
                acc[15] = step4(acc[15], s1[7], b0, b1, b2, b3);
                acc[16] = step4(acc[16], s2[0], b0, b1, b2, b3);
                acc[17] = step4(acc[17], s2[1], b0, b1, b2, b3);
                acc[18] = step4(acc[18], s2[2], b0, b1, b2, b3);
                acc[19] = step4(acc[19], s2[3], b0, b1, b2, b3);
                acc[20] = step4(acc[20], s2[4], b0, b1, b2, b3);
                acc[21] = step4(acc[21], s2[5], b0, b1, b2, b3);
                acc[22] = step4(acc[22], s2[6], b0, b1, b2, b3);
                acc[23] = step4(acc[23], s2[7], b0, b1, b2, b3);
                acc[24] = step4(acc[24], s3[0], b0, b1, b2, b3);
                acc[25] = step4(acc[25], s3[1], b0, b1, b2, b3);
                acc[26] = step4(acc[26], s3[2], b0, b1, b2, b3);
                acc[27] = step4(acc[27], s3[3], b0, b1, b2, b3);
                acc[28] = step4(acc[28], s3[4], b0, b1, b2, b3);
                acc[29] = step4(acc[29], s3[5], b0, b1, b2, b3);
                acc[30] = step4(acc[30], s3[6], b0, b1, b2, b3);
                acc[31] = step4(acc[31], s3[7], b0, b1, b2, b3);
            }
        }
    }

    // The biases, loaded once per tile rather than once per row (the compiler cannot hoist
    // them past the stores to out): the column bias of this lane's 4 columns, or 4 of the
    // tile's 32 row biases per lane (rows r0 + 4l .. r0 + 4l + 3), shared below by shuffle.
    var bias = vec4(0.0);
    if (p.has_bias == 1u) {
        let rb = r0 + 4u * lane;
        bias = vec4(row_bias[min(rb, p.m - 1u)], row_bias[min(rb + 1u, p.m - 1u)],
                    row_bias[min(rb + 2u, p.m - 1u)], row_bias[min(rb + 3u, p.m - 1u)]);
    } else if (p.has_bias == 2u) {
        bias = vec4(row_bias[cl], row_bias[cl + 1u], row_bias[cl + 2u], row_bias[cl + 3u]);
    }
    // Lanes past N store nothing but stay for the shuffles.
    let live = col < p.n;
    let o_base = p.out_off + bat * p.m * n4 + cl / 4u;
    for (var r = 0u; r < rows; r++) {
        let row = r0 + r;
        if (row >= p.m) {
            break;
        }
        let o = o_base + row * n4;
        var v = p.alpha * acc[r];
        // beta == 0 must not read out: its old contents may be NaN.
        if (p.beta != 0.0) {
            v += p.beta * ld4(out[o]);
        }
        if (p.has_bias == 1u) {
            v += vec4(subgroupShuffle(bias, r / 4u)[r % 4u]);
        } else if (p.has_bias == 2u) {
            v += bias;
        }
        if (live) {
            out[o] = st4(v);
        }
    }
}
