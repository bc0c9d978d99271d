// Portable matmul kernels (no subgroups, no f16: runs on every backend, GL included).
//
// gemm_tiled: out[b] = alpha * op(A[b]) * op(B[b]) + beta * out[b], op = optional transpose.
//   A is [M,K] (or [K,M] when trans_a), B is [K,N] (or [N,K] when trans_b), out is [M,N], all
//   row-major and contiguous per batch. Each workgroup owns a 64x64 output tile; the 16x16
//   invocations each accumulate a 4x4 block in registers. K is walked in slices of 16: the
//   A slice (64 rows x 16) and B slice (16 x 64 columns) are staged in workgroup memory as vec4s
//   so that each inner step is two vec4 loads feeding 16 FMAs. Out-of-range elements are staged
//   as 0, so any M, N, K works. Transposes only change the global indexing of the staging loads.
//   Tiles are numbered linearly (batch, tile row, tile column) over a 2-D grid (Context::grid).

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
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const TILE: u32 = 64u;
const BK: u32 = 16u;

// a_s[kk * 16 + i] holds A rows 4i..4i+3 of the tile at k-slice row kk; b_s likewise columns.
var<workgroup> a_s: array<vec4<f32>, 256>;
var<workgroup> b_s: array<vec4<f32>, 256>;

// op(A)[row, kk] of batch `bat`, 0 outside the matrix.
fn load_a(base: u32, row: u32, kk: u32) -> f32 {
    if (row >= p.m || kk >= p.k) {
        return 0.0;
    }
    if (p.trans_a != 0u) {
        return a[base + kk * p.m + row];
    }
    return a[base + row * p.k + kk];
}

// op(B)[kk, col] of batch `bat`, 0 outside the matrix.
fn load_b(base: u32, kk: u32, col: u32) -> f32 {
    if (kk >= p.k || col >= p.n) {
        return 0.0;
    }
    if (p.trans_b != 0u) {
        return b[base + col * p.k + kk];
    }
    return b[base + kk * p.n + col];
}

@compute @workgroup_size(16, 16)
fn gemm_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let per_batch = p.tiles_m * p.tiles_n;
    let tile = wg.x + wg.y * nwg.x;
    if (tile >= per_batch * p.batch) {
        return;
    }
    let bat = tile / per_batch;
    let t = tile % per_batch;
    let row0 = (t / p.tiles_n) * TILE;
    let col0 = (t % p.tiles_n) * TILE;
    let a_base = bat * p.m * p.k;
    let b_base = bat * p.k * p.n;
    let tx = lid % 16u;
    let ty = lid / 16u;

    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // 256 invocations stage 1024 elements of each operand, 4 each. Consecutive invocations
        // walk the operand's contiguous dimension so that global reads are coalesced.
        for (var e = 0u; e < 4u; e++) {
            let idx = lid + e * 256u;
            var i: u32;
            var kk: u32;
            if (p.trans_a != 0u) {
                i = idx % TILE;
                kk = idx / TILE;
            } else {
                kk = idx % BK;
                i = idx / BK;
            }
            a_s[kk * 16u + i / 4u][i % 4u] = load_a(a_base, row0 + i, k0 + kk);
            if (p.trans_b != 0u) {
                kk = idx % BK;
                i = idx / BK;
            } else {
                i = idx % TILE;
                kk = idx / TILE;
            }
            b_s[kk * 16u + i / 4u][i % 4u] = load_b(b_base, k0 + kk, col0 + i);
        }
        workgroupBarrier();
        // acc[r][c] += A[4ty + r, kk] * B[kk, 4tx + c]
        for (var kk = 0u; kk < BK; kk++) {
            let av = a_s[kk * 16u + ty];
            let bv = b_s[kk * 16u + tx];
            acc[0] = fma(vec4(av.x), bv, acc[0]);
            acc[1] = fma(vec4(av.y), bv, acc[1]);
            acc[2] = fma(vec4(av.z), bv, acc[2]);
            acc[3] = fma(vec4(av.w), bv, acc[3]);
        }
        workgroupBarrier();
    }

    let o_base = bat * p.m * p.n;
    for (var r = 0u; r < 4u; r++) {
        let row = row0 + ty * 4u + r;
        if (row >= p.m) {
            break;
        }
        for (var c = 0u; c < 4u; c++) {
            let col = col0 + tx * 4u + c;
            if (col < p.n) {
                let o = o_base + row * p.n + col;
                var v = p.alpha * acc[r][c];
                // beta == 0 must not read out: its old contents may be NaN.
                if (p.beta != 0.0) {
                    v += p.beta * out[o];
                }
                out[o] = v;
            }
        }
    }
}

struct RowParams {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> q: RowParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// y[r, c] = x[c] for y [rows, cols], x [cols] (the bias, before linear accumulates x·Wᵀ).
@compute @workgroup_size(256)
fn broadcast_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= q.rows * q.cols) {
        return;
    }
    y[i] = x[i % q.cols];
}

// sum_rows for CPU adapters and cols % 4 == 0: one invocation per 4 columns summing every row
// with vec4 loads, no workgroup memory (llvmpipe runs a 256-invocation workgroup as 32 SIMD
// slices that switch at the barrier).
@group(0) @binding(1) var<storage, read> x4: array<W4>;
@group(0) @binding(2) var<storage, read_write> y4: array<W4>;

@compute @workgroup_size(64)
fn sum_rows4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let c = (wg.x + wg.y * nwg.x) * 64u + lid;
    let cols4 = q.cols / 4u;
    if (c >= cols4) {
        return;
    }
    var s = vec4(0.0);
    for (var r = 0u; r < q.rows; r++) {
        s += ld4(x4[r * cols4 + c]);
    }
    y4[c] = st4(s);
}

var<workgroup> partial: array<f32, 256>;

// y[c] = sum_r x[r, c] for x [rows, cols]. A workgroup owns 64 columns; its 4 groups of 64
// invocations sum every 4th row (reads stay coalesced along a row), then the 4 partial sums
// are added in workgroup memory.
@compute @workgroup_size(256)
fn sum_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let c = (wg.x + wg.y * nwg.x) * 64u + lid % 64u;
    let g = lid / 64u;
    var s = 0.0;
    if (c < q.cols) {
        for (var r = g; r < q.rows; r += 4u) {
            s += x[r * q.cols + c];
        }
    }
    partial[lid] = s;
    workgroupBarrier();
    if (g == 0u && c < q.cols) {
        y[c] = partial[lid] + partial[lid + 64u] + partial[lid + 128u] + partial[lid + 192u];
    }
}
