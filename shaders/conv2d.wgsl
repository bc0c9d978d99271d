// 2-D convolution as implicit GEMM: no im2col matrix is ever written to global memory.
//
// Layouts: x [N,Cin,H,W], w [Cout,Cin,kh,kw], y [N,Cout,Ho,Wo], row-major f32.
// Forward:  y[n,co,oh,ow] = bias[co] + Σ_{ci,r,s} w[co,ci,r,s] · x[n,ci,oh·st−pt+r, ow·st−pl+s]
//           (GEMM with M = Cout, N = N·Ho·Wo, K = Cin·kh·kw; x reads outside the image are 0).
// Input grad: dx[n,ci,ih,iw] = Σ_{co,r,s : oh·st = ih+pt−r, ow·st = iw+pl−s} w[co,ci,r,s] · dy[n,co,oh,ow]
//           (GEMM with M = Cin, N = N·H·W, K = Cout·kh·kw over the transposed, flipped kernel).
// Weight grad: dw[co,ci,r,s] = Σ_{n,oh,ow} dy[n,co,oh,ow] · x[n,ci,oh·st−pt+r, ow·st−pl+s]
//           (GEMM with M = Cout, N = Cin·kh·kw, K = N·Ho·Wo).
// Bias grad: db[co] = Σ_{n,oh,ow} dy[n,co,oh,ow] (computed with the weight grad).
//
// Work split (the same for the three GEMMs): one invocation per column of the GEMM (an output
// pixel, an input pixel, or a (ci,r,s) tap) and 4·V rows (channels) per workgroup, held as V vec4
// accumulators in registers. The row operand (weights, or dy for the weight grad) is staged in
// workgroup memory as vec4s and read at an index that is the same for every invocation, so a
// SIMD-style implementation (llvmpipe) issues one broadcast load per vec4 instead of a gather;
// the column operand is the implicit im2col element, one load per invocation per K step, reused
// for 4·V multiply-adds. Every loop bound is workgroup-uniform and every per-invocation bounds
// test is a select, so no load sits in divergent control flow.
//
// Grids: forward and input grad spread their columns over (x, y) with Context::grid (linear
// tile = wg.x + wg.y·nwg.x, bounds-checked) and use z for the channel tile (and, for the input
// grad, the stride phase); the weight grad uses x = column tile, y = pixel slice, z = channel
// tile.

struct Params {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    ho: u32,
    wo: u32,
    // K elements staged per round: input channels (forward), output channels (input grad) or
    // pixels (weight grad), chosen by the launcher so that a round fits in `tile`.
    chunk: u32,
    has_bias: u32,
    // Weight grad: output pixels per slice (first pass) or number of slices (reduce).
    split: u32,
    _pad: u32,
}

// vec4 accumulators per invocation: each workgroup computes 4·V = 8 channels.
const V: u32 = 2u;
// vec4 slots of staged row operand (16 KiB of the 32 KiB workgroup memory).
const TILE: u32 = 1024u;
override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
// Per-invocation (column) operand: x (forward, weight grad) or dy (input grad, bias grad).
@group(0) @binding(1) var<storage, read> col: array<f32>;
// Uniform (row) operand: w (forward, input grad) or dy (weight grad).
@group(0) @binding(2) var<storage, read> row: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
// dw, written by the weight-grad reduction (which binds partial sums, dw, db).
@group(0) @binding(2) var<storage, read_write> dw_out: array<f32>;

var<workgroup> tile: array<vec4<f32>, TILE>;

// Store the 4 channels c..c+3 of one column: dst[base + ch·plane] for ch < nch.
fn store4(base: u32, plane: u32, c: u32, nch: u32, v: vec4<f32>) {
    for (var j = 0u; j < 4u; j++) {
        if (c + j < nch) {
            dst[base + (c + j) * plane] = v[j];
        }
    }
}

// Stage the weights of channel rows ch0..ch0+4V−1 for K-slice [k0, k0+kn) of the "other"
// channel axis, as tile[(rs·kn + k)·V + v] = w[.., .., rs] with the row channel ch0+4v+j in
// component j. `transposed` = false: rows are output channels (w[ch, k0+k, rs], forward);
// true: rows are input channels (w[k0+k, ch, rs], input grad). Rows past the end are clamped
// (their results are never stored).
fn stage_weights(lid: u32, ch0: u32, nch: u32, nk: u32, k0: u32, kn: u32, transposed: bool) {
    let kk = p.kh * p.kw;
    for (var e = lid; e < kk * kn * V; e += WG) {
        let v = e % V;
        let k = (e / V) % kn;
        let rs = e / (V * kn);
        var q: vec4<f32>;
        for (var j = 0u; j < 4u; j++) {
            let ch = min(ch0 + 4u * v + j, nch - 1u);
            let pair = select(ch * nk + k0 + k, (k0 + k) * nch + ch, transposed);
            q[j] = row[pair * kk + rs];
        }
        tile[e] = q;
    }
}

@compute @workgroup_size(WG)
fn conv2d_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let co0 = wg.z * 4u * V;
    let plane = p.ho * p.wo;
    let npix = p.n * plane;
    let pix = (wg.x + wg.y * nwg.x) * WG + lid;
    let live = pix < npix;
    let q = min(pix, npix - 1u);
    let ow = q % p.wo;
    let oh = (q / p.wo) % p.ho;
    let b = q / plane;
    let ih0 = i32(oh * p.stride) - i32(p.pad_top);
    let iw0 = i32(ow * p.stride) - i32(p.pad_left);
    let hw = p.h * p.w;

    var acc0 = vec4(0.0);
    var acc1 = vec4(0.0);
    if (p.has_bias != 0u) {
        for (var j = 0u; j < 4u; j++) {
            acc0[j] = bias[min(co0 + j, p.cout - 1u)];
            acc1[j] = bias[min(co0 + 4u + j, p.cout - 1u)];
        }
    }
    for (var c0 = 0u; c0 < p.cin; c0 += p.chunk) {
        let cn = min(p.chunk, p.cin - c0);
        workgroupBarrier();
        stage_weights(lid, co0, p.cout, p.cin, c0, cn, false);
        workgroupBarrier();
        var wi = 0u;
        for (var r = 0u; r < p.kh; r++) {
            let ih = ih0 + i32(r);
            for (var s = 0u; s < p.kw; s++) {
                let iw = iw0 + i32(s);
                let ok = live && ih >= 0 && ih < i32(p.h) && iw >= 0 && iw < i32(p.w);
                // x[b, c0, ih, iw], stepping one channel plane per K step; 0 when padded.
                var xi = select(0u, (b * p.cin + c0) * hw + u32(ih) * p.w + u32(iw), ok);
                for (var c = 0u; c < cn; c++) {
                    let xv = vec4(select(0.0, col[xi], ok));
                    acc0 = fma(tile[wi], xv, acc0);
                    acc1 = fma(tile[wi + 1u], xv, acc1);
                    xi += hw;
                    wi += V;
                }
            }
        }
    }
    if (live) {
        let base = b * p.cout * plane + oh * p.wo + ow;
        store4(base, plane, co0, p.cout, acc0);
        store4(base, plane, co0 + 4u, p.cout, acc1);
    }
}

// Input grad. With stride st, input pixel (ih, iw) receives from tap r only when
// ih + pt − r ≡ 0 (mod st). Invocations are grouped by stride phase (ih mod st, iw mod st)
// (wg.z = channel tile · st² + phase), so the valid taps r ≡ (phase + pt) mod st are the same
// for the whole workgroup and no multiply-add is spent on taps that do not hit.
@compute @workgroup_size(WG)
fn conv2d_backward_input(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let st = p.stride;
    let phases = st * st;
    let ph = (wg.z % phases) / st;
    let pw = wg.z % st;
    let ci0 = (wg.z / phases) * 4u * V;
    // Pixels of this phase: ih = qh·st + ph, iw = qw·st + pw.
    let hq = (p.h + st - 1u) / st;
    let wq = (p.w + st - 1u) / st;
    let npix = p.n * hq * wq;
    let pix = (wg.x + wg.y * nwg.x) * WG + lid;
    let q = min(pix, npix - 1u);
    let iw = (q % wq) * st + pw;
    let ih = ((q / wq) % hq) * st + ph;
    let b = q / (wq * hq);
    let live = pix < npix && ih < p.h && iw < p.w;
    let plane = p.ho * p.wo;
    let r0 = (ph + p.pad_top) % st;
    let s0 = (pw + p.pad_left) % st;

    var acc0 = vec4(0.0);
    var acc1 = vec4(0.0);
    for (var c0 = 0u; c0 < p.cout; c0 += p.chunk) {
        let cn = min(p.chunk, p.cout - c0);
        workgroupBarrier();
        stage_weights(lid, ci0, p.cin, p.cout, c0, cn, true);
        workgroupBarrier();
        for (var r = r0; r < p.kh; r += st) {
            // oh·st = ih + pt − r, exact by the phase choice.
            let ohs = i32(ih + p.pad_top) - i32(r);
            let oh = ohs / i32(st);
            for (var s = s0; s < p.kw; s += st) {
                let ows = i32(iw + p.pad_left) - i32(s);
                let ow = ows / i32(st);
                let ok = live && ohs >= 0 && oh < i32(p.ho) && ows >= 0 && ow < i32(p.wo);
                var gi = select(0u, (b * p.cout + c0) * plane + u32(oh) * p.wo + u32(ow), ok);
                var wi = (r * p.kw + s) * cn * V;
                for (var c = 0u; c < cn; c++) {
                    let g = vec4(select(0.0, col[gi], ok));
                    acc0 = fma(tile[wi], g, acc0);
                    acc1 = fma(tile[wi + 1u], g, acc1);
                    gi += plane;
                    wi += V;
                }
            }
        }
    }
    if (live) {
        let hw = p.h * p.w;
        let base = b * p.cin * hw + ih * p.w + iw;
        store4(base, hw, ci0, p.cin, acc0);
        store4(base, hw, ci0 + 4u, p.cin, acc1);
    }
}

// Weight and bias grad, first pass: one invocation per GEMM column j, where j < Cin·kh·kw is the
// tap (ci, r, s) and j = Cin·kh·kw is the bias, whose im2col element is the constant 1
// (db[co] = Σ dy[co] · 1); 4·V output channels per workgroup. The reduction over the N·Ho·Wo
// output pixels is split into slices of `split` pixels (wg.y), each written to
// part[slice, co, j] and summed by conv2d_backward_reduce: this bounds the work of one
// invocation (llvmpipe stops any invocation after 65,535 loop iterations) and gives parallelism.
// dy for the workgroup's channels is staged `chunk` pixels at a time as tile[pixel·V + v].
@compute @workgroup_size(WG)
fn conv2d_backward_weight(@builtin(workgroup_id) wg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let co0 = wg.z * 4u * V;
    let kk = p.kh * p.kw;
    let taps = p.cin * kk;
    let j = wg.x * WG + lid;
    let live = j <= taps;
    let is_bias = j == taps;
    let jq = min(j, taps - 1u);
    let ci = jq / kk;
    let r = (jq % kk) / p.kw;
    let s = jq % p.kw;
    let plane = p.ho * p.wo;
    let hw = p.h * p.w;
    let first = wg.y * p.split;
    let last = min(first + p.split, p.n * plane);
    // x[b, ci, ih, iw] = col[top_left + lane_off − pt·W − pl], where top_left is the
    // workgroup-uniform part for the current pixel and lane_off the fixed per-invocation part.
    let lane_off = ci * hw + r * p.w + s;

    var acc0 = vec4(0.0);
    var acc1 = vec4(0.0);
    // Uniform (b, oh, ow) of the pixel being reduced, advanced in row-major order.
    var b = first / plane;
    var oh = (first % plane) / p.wo;
    var ow = first % p.wo;
    for (var p0 = first; p0 < last; p0 += p.chunk) {
        let pn = min(p.chunk, last - p0);
        workgroupBarrier();
        for (var e = lid; e < pn * V; e += WG) {
            let px = p0 + e / V;
            let c = co0 + 4u * (e % V);
            let base = (px / plane) * p.cout * plane + px % plane;
            var q: vec4<f32>;
            for (var k = 0u; k < 4u; k++) {
                q[k] = row[base + min(c + k, p.cout - 1u) * plane];
            }
            tile[e] = q;
        }
        workgroupBarrier();
        for (var pp = 0u; pp < pn; pp++) {
            let ih = i32(oh * p.stride + r) - i32(p.pad_top);
            let iw = i32(ow * p.stride + s) - i32(p.pad_left);
            let ok = ih >= 0 && ih < i32(p.h) && iw >= 0 && iw < i32(p.w);
            let top_left = b * p.cin * hw + (oh * p.stride) * p.w + ow * p.stride;
            // Unsigned wrap-around cancels the padding offset when ok; 0 otherwise.
            let xi = select(0u, top_left + lane_off - p.pad_top * p.w - p.pad_left, ok);
            let xv = vec4(select(select(0.0, col[xi], ok), 1.0, is_bias));
            acc0 = fma(tile[pp * V], xv, acc0);
            acc1 = fma(tile[pp * V + 1u], xv, acc1);
            ow += 1u;
            let next_row = ow == p.wo;
            ow = select(ow, 0u, next_row);
            oh = select(oh, oh + 1u, next_row);
            let next_image = oh == p.ho;
            oh = select(oh, 0u, next_image);
            b = select(b, b + 1u, next_image);
        }
    }
    if (live) {
        let cols = taps + 1u;
        let base = wg.y * p.cout * cols + j;
        store4(base, cols, co0, p.cout, acc0);
        store4(base, cols, co0 + 4u, p.cout, acc1);
    }
}

// Weight and bias grad, second pass: dw[co, j] = Σ_slice part[slice, co, j] for the taps and
// db[co] = Σ_slice part[slice, co, Cin·kh·kw]; one invocation per (co, j), linear index over a
// 2-D grid. `split` holds the number of slices here.
@compute @workgroup_size(WG)
fn conv2d_backward_reduce(@builtin(workgroup_id) wg: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let taps = p.cin * p.kh * p.kw;
    let cols = taps + 1u;
    let total = p.cout * cols;
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    if (i >= total) {
        return;
    }
    var sum = 0.0;
    for (var sl = 0u; sl < p.split; sl++) {
        sum += col[sl * total + i];
    }
    let co = i / cols;
    let j = i % cols;
    if (j == taps) {
        dst[co] = sum;
    } else {
        dw_out[co * taps + j] = sum;
    }
}

// ---------------------------------------------------------------------------------------------
// im2col path (CPU adapters with 8-wide subgroups, where the subgroup GEMM of
// matmul_subgroup.wgsl is several times faster than the implicit GEMM above).
//
// The K axis of the GEMM is (ci, r, s) flattened (K = Cin·kh·kw), padded to Kp = ⌈(K+1)/4⌉·4:
// row K of the column matrix is all ones and column K of the packed weights holds the bias, so
// the bias is added by the GEMM itself and its gradient falls out of the weight-grad GEMM as
// column K. Rows past K+1 are zero.
//   col[b, kk, oh·Wo+ow] = x[n0+b, ci, oh·st−pt+r, ow·st−pl+s]   (0 outside the image)
//   dx[n0+b, ci, ih, iw] = Σ_{r,s: ih+pt−r = oh·st, iw+pl−s = ow·st} dcol[b, (ci,r,s), oh·Wo+ow]

struct ColParams {
    n0: u32,
    nb: u32,
    cin: u32,
    h: u32,
    w: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    ho: u32,
    wo: u32,
    k: u32,
    kp: u32,
    cout: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> cp: ColParams;
@group(0) @binding(1) var<storage, read> g_a: array<f32>;
@group(0) @binding(2) var<storage, read> g_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> g_o2: array<f32>;
@group(0) @binding(3) var<storage, read_write> g_o3: array<f32>;

fn col_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

// g_a = x, g_o2 = col [nb, Kp, Ho·Wo]. One invocation per (b, kk, oh) writes one output row, so
// the index arithmetic is done once per row (measured faster on llvmpipe than one invocation
// per element with consecutive lanes on consecutive addresses).
@compute @workgroup_size(256)
fn im2col(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    if (i >= cp.nb * cp.kp * cp.ho) {
        return;
    }
    let row = i / cp.ho;
    let oh = i % cp.ho;
    let b = row / cp.kp;
    let kk = row % cp.kp;
    let dst = (row * cp.ho + oh) * cp.wo;
    if (kk >= cp.k) {
        let v = select(0.0, 1.0, kk == cp.k);
        for (var ow = 0u; ow < cp.wo; ow++) {
            g_o2[dst + ow] = v;
        }
        return;
    }
    let taps = cp.kh * cp.kw;
    let ci = kk / taps;
    let r = (kk % taps) / cp.kw;
    let s = kk % cp.kw;
    // Padded coordinates; a pixel is inside when pad ≤ coordinate < pad + size.
    let ih = oh * cp.stride + r;
    let row_ok = ih >= cp.pad_top && ih < cp.pad_top + cp.h;
    let src_row = ((cp.n0 + b) * cp.cin + ci) * cp.h + select(0u, ih - cp.pad_top, row_ok);
    var iw = s;
    for (var ow = 0u; ow < cp.wo; ow++) {
        let inside = row_ok && iw >= cp.pad_left && iw < cp.pad_left + cp.w;
        let src = src_row * cp.w + select(0u, iw - cp.pad_left, inside);
        g_o2[dst + ow] = select(0.0, g_a[src], inside);
        iw += cp.stride;
    }
}

// g_a = dcol [nb, Kp, Ho·Wo], g_o2 = dx (images n0..n0+nb written). A workgroup covers 256
// consecutive pixels of one (b, ci) plane of dx. Only the taps that reach the pixel are visited:
// r ≡ ih (mod stride), with oh = (ih − r) / stride falling by one per step of r (likewise s and
// ow), so a stride-2 3×3 layer reads at most 4 of the 9 columns and divides 4 times, not 24
// (u32 division runs lane by lane on SIMD CPU adapters, and so do storage loads).
@compute @workgroup_size(256)
fn col2im(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let plane = cp.h * cp.w;
    let chunks = (plane + 255u) / 256u;
    let t = wg.x + wg.y * nwg.x;
    let bc = t / chunks;
    if (bc >= cp.nb * cp.cin) {
        return;
    }
    let q = (t % chunks) * 256u + lid;
    if (q >= plane) {
        return;
    }
    let b = bc / cp.cin;
    let ci = bc % cp.cin;
    // Padded coordinates of the pixel.
    let ih = q / cp.w + cp.pad_top;
    let iw = q % cp.w + cp.pad_left;
    let pix = cp.ho * cp.wo;
    let base = (b * cp.kp + ci * cp.kh * cp.kw) * pix;
    let s0 = iw % cp.stride;
    let ow0 = i32(iw / cp.stride);
    var acc = 0.0;
    var oh = i32(ih / cp.stride);
    for (var r = ih % cp.stride; r < cp.kh && oh >= 0; r += cp.stride) {
        if (u32(oh) < cp.ho) {
            var ow = ow0;
            for (var s = s0; s < cp.kw && ow >= 0; s += cp.stride) {
                if (u32(ow) < cp.wo) {
                    acc += g_a[base + (r * cp.kw + s) * pix + u32(oh) * cp.wo + u32(ow)];
                }
                ow -= 1;
            }
        }
        oh -= 1;
    }
    g_o2[(cp.n0 + b) * cp.cin * plane + ci * plane + q] = acc;
}

// g_a = w [Cout, K], g_b = bias [Cout] (ignored unless has_bias), g_o3 = packed [Cout, Kp].
@compute @workgroup_size(256)
fn pack_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    if (i >= cp.cout * cp.kp) {
        return;
    }
    let co = i / cp.kp;
    let kk = i % cp.kp;
    var v = 0.0;
    if (kk < cp.k) {
        v = g_a[co * cp.k + kk];
    } else if (kk == cp.k && cp.has_bias != 0u) {
        v = g_b[co];
    }
    g_o3[i] = v;
}

// g_a = packed grad [Cout, Kp], g_o2 = dw [Cout, K], g_o3 = db [Cout].
@compute @workgroup_size(256)
fn unpack_weight_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    if (i >= cp.cout * cp.kp) {
        return;
    }
    let co = i / cp.kp;
    let kk = i % cp.kp;
    if (kk < cp.k) {
        g_o2[co * cp.k + kk] = g_a[i];
    } else if (kk == cp.k) {
        g_o3[co] = g_a[i];
    }
}

// ---------------------------------------------------------------------------------------------
// Winograd F(2×2, 3×3) for 3×3, stride 1, padding 1 (Lavin & Gray 2016), the correlation form:
//   Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A
// for each 2×2 output tile, with d the 4×4 input tile starting one pixel above-left of it.
// U[ξ, co, ci] = (G g Gᵀ)[ξ], V[ξ, ci, n] = (Bᵀ d B)[ξ] for column n = b·T + tile, then 16
// GEMMs M[ξ] = U[ξ]·V[ξ] (the subgroup GEMM, batch 16) and the output transform. 16 products per
// 4 outputs instead of 36.

struct WinoParams {
    n0: u32,
    nb: u32,
    cin: u32,
    cout: u32,
    h: u32,
    w: u32,
    // Tiles per image: th × tw.
    th: u32,
    tw: u32,
    has_bias: u32,
    // 1: the weights are those of the input grad, w[ci', co', 2−r, 2−s] read from the forward's
    // w [Cout', Cin', 3, 3] with Cout' = cin and Cin' = cout here (dx = conv(dy, rotated wᵀ)).
    flip: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> wq: WinoParams;

// g_a = w [Cout, Cin, 3, 3], g_o2 = U [16, Cout, Cin].
@compute @workgroup_size(256)
fn wino_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    let pairs = wq.cout * wq.cin;
    if (i >= pairs) {
        return;
    }
    var g: array<f32, 9>;
    if (wq.flip != 0u) {
        let o = i / wq.cin;
        let c = i % wq.cin;
        for (var j = 0u; j < 9u; j++) {
            g[j] = g_a[(c * wq.cout + o) * 9u + 8u - j];
        }
    } else {
        for (var j = 0u; j < 9u; j++) {
            g[j] = g_a[i * 9u + j];
        }
    }
    // t = G g (4×3), then u = t Gᵀ (4×4); G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1].
    var t: array<f32, 12>;
    for (var c = 0u; c < 3u; c++) {
        let g0 = g[c];
        let g1 = g[3u + c];
        let g2 = g[6u + c];
        t[c] = g0;
        t[3u + c] = 0.5 * (g0 + g1 + g2);
        t[6u + c] = 0.5 * (g0 - g1 + g2);
        t[9u + c] = g2;
    }
    for (var r = 0u; r < 4u; r++) {
        let a = t[r * 3u];
        let b = t[r * 3u + 1u];
        let c = t[r * 3u + 2u];
        g_o2[(r * 4u) * pairs + i] = a;
        g_o2[(r * 4u + 1u) * pairs + i] = 0.5 * (a + b + c);
        g_o2[(r * 4u + 2u) * pairs + i] = 0.5 * (a - b + c);
        g_o2[(r * 4u + 3u) * pairs + i] = c;
    }
}

// The three per-tile transforms run on a 3-D grid: (x, y) = the tile's column and row in
// 8 × 8 blocks, z = (image, channel), so that no invocation divides (u32 division is done lane
// by lane on SIMD CPU adapters).
const WT: u32 = 8u;
// Not kept (2026-12-02, back to back on 2 shared cores, two training steps of the small preset
// under DDPM_PROFILE): four tiles per invocation with vec4 loads and stores and the transforms
// on vec4s across the tiles (W % 8 == 0, so rows and the planes of V and M are whole vec4s)
// made wino_input 1.8x and wino_output 1.7x slower than these one-tile kernels, with or without
// private arrays. llvmpipe's storage access is a loop over the lanes with a bounds check per
// component, so a vec4 access costs what four scalar ones do, and there were 4x fewer
// invocations to spread it over.

// g_a = x, g_o2 = V [16, Cin, nb·T] for images n0..n0+nb.
@compute @workgroup_size(8, 8)
fn wino_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let tx = wg.x * WT + l.x;
    let ty = wg.y * WT + l.y;
    if (tx >= wq.tw || ty >= wq.th) {
        return;
    }
    let b = wg.z / wq.cin;
    let ci = wg.z % wq.cin;
    let tiles = wq.th * wq.tw;
    let cols = wq.nb * tiles;
    let i = ci * cols + b * tiles + ty * wq.tw + tx;
    let y0 = i32(ty * 2u) - 1;
    let x0 = i32(tx * 2u) - 1;
    let base = ((wq.n0 + b) * wq.cin + ci) * wq.h * wq.w;
    var d: array<f32, 16>;
    for (var r = 0; r < 4; r++) {
        let yy = y0 + r;
        let row_ok = yy >= 0 && yy < i32(wq.h);
        for (var c = 0; c < 4; c++) {
            let xx = x0 + c;
            let ok = row_ok && xx >= 0 && xx < i32(wq.w);
            let src = base + select(0u, u32(yy) * wq.w + u32(xx), ok);
            d[r * 4 + c] = select(0.0, g_a[src], ok);
        }
    }
    // t = Bᵀ d, then v = t B; Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1].
    var t: array<f32, 16>;
    for (var c = 0; c < 4; c++) {
        t[c] = d[c] - d[8 + c];
        t[4 + c] = d[4 + c] + d[8 + c];
        t[8 + c] = d[8 + c] - d[4 + c];
        t[12 + c] = d[4 + c] - d[12 + c];
    }
    let plane = wq.cin * cols;
    for (var r = 0u; r < 4u; r++) {
        let a = t[r * 4u];
        let b1 = t[r * 4u + 1u];
        let c = t[r * 4u + 2u];
        let e = t[r * 4u + 3u];
        g_o2[(r * 4u) * plane + i] = a - c;
        g_o2[(r * 4u + 1u) * plane + i] = b1 + c;
        g_o2[(r * 4u + 2u) * plane + i] = c - b1;
        g_o2[(r * 4u + 3u) * plane + i] = b1 - e;
    }
}

// g_a = M [16, Cout, nb·T], g_b = bias (read when has_bias), g_o3 = y (images n0..n0+nb).
@compute @workgroup_size(8, 8)
fn wino_output(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let tx = wg.x * WT + l.x;
    let ty = wg.y * WT + l.y;
    if (tx >= wq.tw || ty >= wq.th) {
        return;
    }
    let b = wg.z / wq.cout;
    let co = wg.z % wq.cout;
    let tiles = wq.th * wq.tw;
    let cols = wq.nb * tiles;
    let i = co * cols + b * tiles + ty * wq.tw + tx;
    let plane = wq.cout * cols;
    var m: array<f32, 16>;
    for (var j = 0u; j < 16u; j++) {
        m[j] = g_a[j * plane + i];
    }
    // t = Aᵀ m (2×4), y = t A (2×2); Aᵀ = [1 1 1 0; 0 1 −1 −1].
    var t: array<f32, 8>;
    for (var c = 0u; c < 4u; c++) {
        t[c] = m[c] + m[4u + c] + m[8u + c];
        t[4u + c] = m[4u + c] - m[8u + c] - m[12u + c];
    }
    var bias_v = 0.0;
    if (wq.has_bias != 0u) {
        bias_v = g_b[co];
    }
    let oy = ty * 2u;
    let ox = tx * 2u;
    let base = ((wq.n0 + b) * wq.cout + co) * wq.h * wq.w;
    for (var r = 0u; r < 2u; r++) {
        let y = t[r * 4u] + t[r * 4u + 1u] + t[r * 4u + 2u] + bias_v;
        let z = t[r * 4u + 1u] - t[r * 4u + 2u] - t[r * 4u + 3u] + bias_v;
        if (oy + r < wq.h) {
            g_o3[base + (oy + r) * wq.w + ox] = y;
            if (ox + 1u < wq.w) {
                g_o3[base + (oy + r) * wq.w + ox + 1u] = z;
            }
        }
    }
}

// Weight grad of the Winograd forward (its adjoint): with M = U ⊙ V per tile and y = Aᵀ M A,
//   dM = A dy Aᵀ,   dU[ξ, co, ci] = Σ_n dM[ξ, co, n] · V[ξ, ci, n],   dw = Gᵀ dU G.
// g_a = dy, g_o2 = dM [16, Cout, nb·T] for images n0..n0+nb (one invocation per (co, tile)).
@compute @workgroup_size(8, 8)
fn wino_dy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let tx = wg.x * WT + l.x;
    let ty = wg.y * WT + l.y;
    if (tx >= wq.tw || ty >= wq.th) {
        return;
    }
    let b = wg.z / wq.cout;
    let co = wg.z % wq.cout;
    let tiles = wq.th * wq.tw;
    let cols = wq.nb * tiles;
    let i = co * cols + b * tiles + ty * wq.tw + tx;
    let oy = ty * 2u;
    let ox = tx * 2u;
    let base = ((wq.n0 + b) * wq.cout + co) * wq.h * wq.w;
    // The 2×2 output-grad tile, zero past the image.
    var e: array<f32, 4>;
    for (var r = 0u; r < 2u; r++) {
        for (var c = 0u; c < 2u; c++) {
            let ok = oy + r < wq.h && ox + c < wq.w;
            e[r * 2u + c] = select(0.0, g_a[base + select(0u, (oy + r) * wq.w + ox + c, ok)], ok);
        }
    }
    // t = A e (4×2), dM = t Aᵀ (4×4); A = [1 0; 1 1; 1 −1; 0 −1].
    let t = array<f32, 8>(e[0], e[1], e[0] + e[2], e[1] + e[3], e[0] - e[2], e[1] - e[3], -e[2], -e[3]);
    let plane = wq.cout * cols;
    for (var r = 0u; r < 4u; r++) {
        let p0 = t[r * 2u];
        let p1 = t[r * 2u + 1u];
        g_o2[(r * 4u) * plane + i] = p0;
        g_o2[(r * 4u + 1u) * plane + i] = p0 + p1;
        g_o2[(r * 4u + 2u) * plane + i] = p0 - p1;
        g_o2[(r * 4u + 3u) * plane + i] = -p1;
    }
}

// g_a = dU [16, Cout, Cin], g_o2 = dw [Cout, Cin, 3, 3] = Gᵀ dU G.
@compute @workgroup_size(256)
fn wino_weight_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    let pairs = wq.cout * wq.cin;
    if (i >= pairs) {
        return;
    }
    var u: array<f32, 16>;
    for (var j = 0u; j < 16u; j++) {
        u[j] = g_a[j * pairs + i];
    }
    // t = Gᵀ u (3×4), dw = t G (3×3); Gᵀ = [1 ½ ½ 0; 0 ½ −½ 0; 0 ½ ½ 1].
    var t: array<f32, 12>;
    for (var c = 0u; c < 4u; c++) {
        let u0 = u[c];
        let u1 = u[4u + c];
        let u2 = u[8u + c];
        let u3 = u[12u + c];
        t[c] = u0 + 0.5 * (u1 + u2);
        t[4u + c] = 0.5 * (u1 - u2);
        t[8u + c] = 0.5 * (u1 + u2) + u3;
    }
    for (var r = 0u; r < 3u; r++) {
        let a = t[r * 4u];
        let b = t[r * 4u + 1u];
        let c = t[r * 4u + 2u];
        let d = t[r * 4u + 3u];
        g_o2[i * 9u + r * 3u] = a + 0.5 * (b + c);
        g_o2[i * 9u + r * 3u + 1u] = 0.5 * (b - c);
        g_o2[i * 9u + r * 3u + 2u] = 0.5 * (b + c) + d;
    }
}
