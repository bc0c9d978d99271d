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

// g_a = dcol [nb, Kp, Ho·Wo], g_o2 = dx (images n0..n0+nb written). One invocation per row
// (b, ci, y) of dx, walking the row: only the taps that reach a pixel are visited: r ≡ ih
// (mod stride), with oh = (ih − r) / stride falling by one per step of r (likewise s and ow), so
// a stride-2 3×3 layer reads at most 4 of the 9 columns. The row's indices are divided out once
// and the column's tap phase and ow advance by counting, not dividing: u32 division runs lane by
// lane on SIMD CPU adapters (a version with one invocation per pixel divided ten times per pixel
// and spent most of its time there).
@compute @workgroup_size(256)
fn col2im(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let row = col_index(wg, nwg, lid);
    if (row >= cp.nb * cp.cin * cp.h) {
        return;
    }
    let bc = row / cp.h;
    let y = row - bc * cp.h;
    let b = bc / cp.cin;
    let ci = bc - b * cp.cin;
    let pix = cp.ho * cp.wo;
    let base = (b * cp.kp + ci * cp.kh * cp.kw) * pix;
    // Padded row coordinate and its first tap.
    let ih = y + cp.pad_top;
    let r0 = ih % cp.stride;
    let oh0 = i32(ih / cp.stride);
    let dst = ((cp.n0 + b) * cp.cin + ci) * cp.h * cp.w + y * cp.w;
    // Padded column coordinate iw = x + pad_left = ow0·stride + s0.
    var s0 = cp.pad_left % cp.stride;
    var ow0 = i32(cp.pad_left / cp.stride);
    for (var x = 0u; x < cp.w; x++) {
        var acc = 0.0;
        var oh = oh0;
        for (var r = r0; r < cp.kh && oh >= 0; r += cp.stride) {
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
        g_o2[dst + x] = acc;
        s0 += 1u;
        if (s0 == cp.stride) {
            s0 = 0u;
            ow0 += 1;
        }
    }
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
// Winograd F(4×4, 3×3) for 3×3, stride 1, padding 1 (Lavin & Gray 2016), the correlation form:
//   Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A
// for each 4×4 output tile, with d the 6×6 input tile starting one pixel above-left of it.
// Interpolation points 0, 1, −1, 2, −½ and ∞ (Toom-Cook: Aᵀ[i][j] = p_j^i, G[j] = p_j^k / Π(p_j − p_l),
// Bᵀ[j] = the coefficients of Π_{l≠j}(x − p_l)):
//   Bᵀ = [1 3/2 −2 −3/2 1 0; 0 −1 −5/2 −½ 1 0; 0 1 ½ −5/2 1 0; 0 −½ −1 ½ 1 0; 0 2 −1 −2 1 0;
//         0 1 3/2 −2 −3/2 1]
//   G  = [1 0 0; −⅓ −⅓ −⅓; ⅓ −⅓ ⅓; 1/15 2/15 4/15; −16/15 8/15 −4/15; 0 0 1]
//   Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −½ 0; 0 1 1 4 ¼ 0; 0 1 −1 8 −⅛ 1]
// The usual points 0, ±1, ±2 give errors 1.8× larger in float32 (max error over 64-channel
// sums, as a fraction of the output's RMS: 2.8e-6 against 4.9e-6; F(2×2, 3×3): 4.0e-7;
// scripts/winograd_points.py), enough to move Adam's second moments in tests/train.rs by 1e-3.
// U[ξ, co, ci] = (G g Gᵀ)[ξ], V[ξ, ci, n] = (Bᵀ d B)[ξ] for column n = b·T + tile, then 36
// GEMMs M[ξ] = U[ξ]·V[ξ] (the subgroup GEMM, batch 36) and the output transform: 36 products
// per 16 outputs instead of 144. On llvmpipe every value loaded or stored costs a loop over the
// lanes, and per output this moves 2.25 values of V and of M where F(2×2, 3×3) moved 4.
// Against F(2×2, 3×3) (2026-12-02, lavapipe, 2 shared cores, the fastest of 4 steps per run,
// runs interleaved, examples/step_time.rs): a training step of the small preset at batch 32
// took 0.72× as long (median of 4 paired runs), a 50-step DDIM run of it at batch 16 0.79-0.89×.
//
// Columns: a window of nb images has nb·T tile columns, padded to `cols` (a multiple of 4, as
// the GEMM needs). Pad columns are never read by the output transform; the weight grad's GEMM
// sums over them, so the launcher zeroes V and dM when there are any.

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
    // Columns per plane of V, M and dM: nb·th·tw rounded up to a multiple of 4.
    cols: u32,
    // Output transform: y + bias[co] (has_bias) + image_bias[b, co] (has_image_bias), then
    // res_scale·(y + r) when has_residual.
    has_image_bias: u32,
    has_residual: u32,
    res_scale: f32,
    // Input transform: when norm_cpg > 0, x is group-normalized as it is read (norm_cpg channels
    // per group; stats [N, G, 2] = (mean, rstd), γ, β [Cin]), then SiLU when norm_silu.
    norm_cpg: u32,
    norm_silu: u32,
    // Input transform (wino_input4 only): dropout after the norm, as ops::dropout draws it for
    // x's shape (shaders/lib/philox.wgsl).
    drop: DropParams,
}

// The input norm of wino_input (bindings 3..5 of that entry point only).
@group(0) @binding(3) var<storage, read> g_nstats: array<f32>;
@group(0) @binding(4) var<storage, read> g_ngamma: array<f32>;
@group(0) @binding(5) var<storage, read> g_nbeta: array<f32>;

// The residual and per-image bias [N, Cout] added by the output transform (bindings 4 and 5 of
// wino_output only).
@group(0) @binding(4) var<storage, read> g_r: array<f32>;
@group(0) @binding(5) var<storage, read> g_ib: array<f32>;

@group(0) @binding(0) var<uniform> wq: WinoParams;

// G z for the 3 taps z of one kernel row or column.
fn wino_g(z0: f32, z1: f32, z2: f32) -> array<f32, 6> {
    return array<f32, 6>(
        z0,
        -(z0 + z1 + z2) / 3.0,
        (z0 - z1 + z2) / 3.0,
        (z0 + 2.0 * z1 + 4.0 * z2) / 15.0,
        (8.0 * z1 - 16.0 * z0 - 4.0 * z2) / 15.0,
        z2);
}

// Gᵀ z for 6 transformed values z (the adjoint of wino_g).
fn wino_gt(z: array<f32, 6>) -> array<f32, 3> {
    return array<f32, 3>(
        z[0] + (z[2] - z[1]) / 3.0 + (z[3] - 16.0 * z[4]) / 15.0,
        (2.0 * z[3] + 8.0 * z[4]) / 15.0 - (z[1] + z[2]) / 3.0,
        (z[2] - z[1]) / 3.0 + (4.0 * z[3] - 4.0 * z[4]) / 15.0 + z[5]);
}

// Bᵀ z for 6 input values z.
fn wino_bt(z: array<f32, 6>) -> array<f32, 6> {
    return array<f32, 6>(
        z[0] + 1.5 * (z[1] - z[3]) - 2.0 * z[2] + z[4],
        z[4] - z[1] - 2.5 * z[2] - 0.5 * z[3],
        z[1] + 0.5 * z[2] - 2.5 * z[3] + z[4],
        0.5 * (z[3] - z[1]) - z[2] + z[4],
        2.0 * (z[1] - z[3]) - z[2] + z[4],
        z[1] + 1.5 * (z[2] - z[4]) - 2.0 * z[3] + z[5]);
}

// Aᵀ z for 6 products z.
fn wino_at(z: array<f32, 6>) -> vec4<f32> {
    let p1 = z[1] + z[2];
    let m1 = z[1] - z[2];
    return vec4<f32>(
        p1 + z[0] + z[3] + z[4],
        m1 + 2.0 * z[3] - 0.5 * z[4],
        p1 + 4.0 * z[3] + 0.25 * z[4],
        m1 + 8.0 * z[3] - 0.125 * z[4] + z[5]);
}

// A z for 4 output grads z (the adjoint of wino_at).
fn wino_a(z0: f32, z1: f32, z2: f32, z3: f32) -> array<f32, 6> {
    let e = z0 + z2;
    let o = z1 + z3;
    return array<f32, 6>(
        z0,
        e + o,
        e - o,
        z0 + 2.0 * z1 + 4.0 * z2 + 8.0 * z3,
        z0 - 0.5 * z1 + 0.25 * z2 - 0.125 * z3,
        z3);
}

// g_a = w [Cout, Cin, 3, 3], g_o2 = U [36, Cout, Cin].
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
    // t = G g (6×3) column by column, then u = t Gᵀ row by row (unrolled: llvmpipe keeps
    // private arrays in registers only when every index is a constant).
    let t0 = wino_g(g[0], g[3], g[6]);
    let t1 = wino_g(g[1], g[4], g[7]);
    let t2 = wino_g(g[2], g[5], g[8]);
    let u0 = wino_g(t0[0], t1[0], t2[0]);
    let u1 = wino_g(t0[1], t1[1], t2[1]);
    let u2 = wino_g(t0[2], t1[2], t2[2]);
    let u3 = wino_g(t0[3], t1[3], t2[3]);
    let u4 = wino_g(t0[4], t1[4], t2[4]);
    let u5 = wino_g(t0[5], t1[5], t2[5]);
    g_o2[0u * pairs + i] = u0[0];
    g_o2[1u * pairs + i] = u0[1];
    g_o2[2u * pairs + i] = u0[2];
    g_o2[3u * pairs + i] = u0[3];
    g_o2[4u * pairs + i] = u0[4];
    g_o2[5u * pairs + i] = u0[5];
    g_o2[6u * pairs + i] = u1[0];
    g_o2[7u * pairs + i] = u1[1];
    g_o2[8u * pairs + i] = u1[2];
    g_o2[9u * pairs + i] = u1[3];
    g_o2[10u * pairs + i] = u1[4];
    g_o2[11u * pairs + i] = u1[5];
    g_o2[12u * pairs + i] = u2[0];
    g_o2[13u * pairs + i] = u2[1];
    g_o2[14u * pairs + i] = u2[2];
    g_o2[15u * pairs + i] = u2[3];
    g_o2[16u * pairs + i] = u2[4];
    g_o2[17u * pairs + i] = u2[5];
    g_o2[18u * pairs + i] = u3[0];
    g_o2[19u * pairs + i] = u3[1];
    g_o2[20u * pairs + i] = u3[2];
    g_o2[21u * pairs + i] = u3[3];
    g_o2[22u * pairs + i] = u3[4];
    g_o2[23u * pairs + i] = u3[5];
    g_o2[24u * pairs + i] = u4[0];
    g_o2[25u * pairs + i] = u4[1];
    g_o2[26u * pairs + i] = u4[2];
    g_o2[27u * pairs + i] = u4[3];
    g_o2[28u * pairs + i] = u4[4];
    g_o2[29u * pairs + i] = u4[5];
    g_o2[30u * pairs + i] = u5[0];
    g_o2[31u * pairs + i] = u5[1];
    g_o2[32u * pairs + i] = u5[2];
    g_o2[33u * pairs + i] = u5[3];
    g_o2[34u * pairs + i] = u5[4];
    g_o2[35u * pairs + i] = u5[5];
}

// The per-tile transforms run one invocation per (channel, column) over a flat grid, column
// fastest, so that every lane has work however small the image (an 8 × 8 image has 4 tiles).
// Returns (channel, b, ty, tx) of flat index i < channels·nb·T.
fn wino_tile(i: u32, tiles: u32) -> vec4<u32> {
    let per_channel = wq.nb * tiles;
    let ch = i / per_channel;
    let col = i - ch * per_channel;
    let b = col / tiles;
    let t = col - b * tiles;
    let ty = t / wq.tw;
    return vec4<u32>(ch, b, ty, t - ty * wq.tw);
}

// One input value as the transform sees it: normalized (x·ns + nb, then SiLU) when the input
// norm is on, and 0 outside the image (the padding comes after the norm).
fn wino_in(x: f32, ok: bool, ns: f32, nb: f32) -> f32 {
    var v = x;
    if (wq.norm_cpg != 0u) {
        v = x * ns + nb;
        if (wq.norm_silu != 0u) {
            v = v / (1.0 + exp(-v));
        }
    }
    return select(0.0, v, ok);
}

// g_a = x, g_o2 = V [36, Cin, cols] for images n0..n0+nb; bindings 3..5: the input norm.
@compute @workgroup_size(256)
fn wino_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    let tiles = wq.th * wq.tw;
    if (i >= wq.cin * wq.nb * tiles) {
        return;
    }
    let c = wino_tile(i, tiles);
    let ci = c.x;
    let y0 = i32(c.z * 4u) - 1;
    let x0 = i32(c.w * 4u) - 1;
    let base = ((wq.n0 + c.y) * wq.cin + ci) * wq.h * wq.w;
    // The input norm as x·ns + nb (then SiLU), the same for the whole invocation.
    var ns = 1.0;
    var nb = 0.0;
    if (wq.norm_cpg != 0u) {
        let grp = ((wq.n0 + c.y) * (wq.cin / wq.norm_cpg) + ci / wq.norm_cpg) * 2u;
        ns = g_nstats[grp + 1u] * g_ngamma[ci];
        nb = g_nbeta[ci] - g_nstats[grp] * ns;
    }
    // d = the 6×6 input tile (0 past the image); t = Bᵀ d column by column, v = t B row by row
    // (unrolled: llvmpipe keeps private arrays in registers only when every index is a constant).
    var ok_r: array<bool, 6>;
    var off_r: array<u32, 6>;
    var ok_c: array<bool, 6>;
    var off_c: array<u32, 6>;
    for (var k = 0; k < 6; k++) {
        ok_r[k] = y0 + k >= 0 && y0 + k < i32(wq.h);
        off_r[k] = select(0u, u32(y0 + k) * wq.w, ok_r[k]);
        ok_c[k] = x0 + k >= 0 && x0 + k < i32(wq.w);
        off_c[k] = select(0u, u32(x0 + k), ok_c[k]);
    }
    let t0 = wino_bt(array<f32, 6>(
        wino_in(g_a[base + off_r[0] + off_c[0]], ok_r[0] && ok_c[0], ns, nb),
        wino_in(g_a[base + off_r[1] + off_c[0]], ok_r[1] && ok_c[0], ns, nb),
        wino_in(g_a[base + off_r[2] + off_c[0]], ok_r[2] && ok_c[0], ns, nb),
        wino_in(g_a[base + off_r[3] + off_c[0]], ok_r[3] && ok_c[0], ns, nb),
        wino_in(g_a[base + off_r[4] + off_c[0]], ok_r[4] && ok_c[0], ns, nb),
        wino_in(g_a[base + off_r[5] + off_c[0]], ok_r[5] && ok_c[0], ns, nb)));
    let t1 = wino_bt(array<f32, 6>(
        wino_in(g_a[base + off_r[0] + off_c[1]], ok_r[0] && ok_c[1], ns, nb),
        wino_in(g_a[base + off_r[1] + off_c[1]], ok_r[1] && ok_c[1], ns, nb),
        wino_in(g_a[base + off_r[2] + off_c[1]], ok_r[2] && ok_c[1], ns, nb),
        wino_in(g_a[base + off_r[3] + off_c[1]], ok_r[3] && ok_c[1], ns, nb),
        wino_in(g_a[base + off_r[4] + off_c[1]], ok_r[4] && ok_c[1], ns, nb),
        wino_in(g_a[base + off_r[5] + off_c[1]], ok_r[5] && ok_c[1], ns, nb)));
    let t2 = wino_bt(array<f32, 6>(
        wino_in(g_a[base + off_r[0] + off_c[2]], ok_r[0] && ok_c[2], ns, nb),
        wino_in(g_a[base + off_r[1] + off_c[2]], ok_r[1] && ok_c[2], ns, nb),
        wino_in(g_a[base + off_r[2] + off_c[2]], ok_r[2] && ok_c[2], ns, nb),
        wino_in(g_a[base + off_r[3] + off_c[2]], ok_r[3] && ok_c[2], ns, nb),
        wino_in(g_a[base + off_r[4] + off_c[2]], ok_r[4] && ok_c[2], ns, nb),
        wino_in(g_a[base + off_r[5] + off_c[2]], ok_r[5] && ok_c[2], ns, nb)));
    let t3 = wino_bt(array<f32, 6>(
        wino_in(g_a[base + off_r[0] + off_c[3]], ok_r[0] && ok_c[3], ns, nb),
        wino_in(g_a[base + off_r[1] + off_c[3]], ok_r[1] && ok_c[3], ns, nb),
        wino_in(g_a[base + off_r[2] + off_c[3]], ok_r[2] && ok_c[3], ns, nb),
        wino_in(g_a[base + off_r[3] + off_c[3]], ok_r[3] && ok_c[3], ns, nb),
        wino_in(g_a[base + off_r[4] + off_c[3]], ok_r[4] && ok_c[3], ns, nb),
        wino_in(g_a[base + off_r[5] + off_c[3]], ok_r[5] && ok_c[3], ns, nb)));
    let t4 = wino_bt(array<f32, 6>(
        wino_in(g_a[base + off_r[0] + off_c[4]], ok_r[0] && ok_c[4], ns, nb),
        wino_in(g_a[base + off_r[1] + off_c[4]], ok_r[1] && ok_c[4], ns, nb),
        wino_in(g_a[base + off_r[2] + off_c[4]], ok_r[2] && ok_c[4], ns, nb),
        wino_in(g_a[base + off_r[3] + off_c[4]], ok_r[3] && ok_c[4], ns, nb),
        wino_in(g_a[base + off_r[4] + off_c[4]], ok_r[4] && ok_c[4], ns, nb),
        wino_in(g_a[base + off_r[5] + off_c[4]], ok_r[5] && ok_c[4], ns, nb)));
    let t5 = wino_bt(array<f32, 6>(
        wino_in(g_a[base + off_r[0] + off_c[5]], ok_r[0] && ok_c[5], ns, nb),
        wino_in(g_a[base + off_r[1] + off_c[5]], ok_r[1] && ok_c[5], ns, nb),
        wino_in(g_a[base + off_r[2] + off_c[5]], ok_r[2] && ok_c[5], ns, nb),
        wino_in(g_a[base + off_r[3] + off_c[5]], ok_r[3] && ok_c[5], ns, nb),
        wino_in(g_a[base + off_r[4] + off_c[5]], ok_r[4] && ok_c[5], ns, nb),
        wino_in(g_a[base + off_r[5] + off_c[5]], ok_r[5] && ok_c[5], ns, nb)));
    let plane = wq.cin * wq.cols;
    let o = ci * wq.cols + c.y * tiles + c.z * wq.tw + c.w;
    let v0 = wino_bt(array<f32, 6>(t0[0], t1[0], t2[0], t3[0], t4[0], t5[0]));
    let v1 = wino_bt(array<f32, 6>(t0[1], t1[1], t2[1], t3[1], t4[1], t5[1]));
    let v2 = wino_bt(array<f32, 6>(t0[2], t1[2], t2[2], t3[2], t4[2], t5[2]));
    let v3 = wino_bt(array<f32, 6>(t0[3], t1[3], t2[3], t3[3], t4[3], t5[3]));
    let v4 = wino_bt(array<f32, 6>(t0[4], t1[4], t2[4], t3[4], t4[4], t5[4]));
    let v5 = wino_bt(array<f32, 6>(t0[5], t1[5], t2[5], t3[5], t4[5], t5[5]));
    g_o2[0u * plane + o] = v0[0];
    g_o2[1u * plane + o] = v0[1];
    g_o2[2u * plane + o] = v0[2];
    g_o2[3u * plane + o] = v0[3];
    g_o2[4u * plane + o] = v0[4];
    g_o2[5u * plane + o] = v0[5];
    g_o2[6u * plane + o] = v1[0];
    g_o2[7u * plane + o] = v1[1];
    g_o2[8u * plane + o] = v1[2];
    g_o2[9u * plane + o] = v1[3];
    g_o2[10u * plane + o] = v1[4];
    g_o2[11u * plane + o] = v1[5];
    g_o2[12u * plane + o] = v2[0];
    g_o2[13u * plane + o] = v2[1];
    g_o2[14u * plane + o] = v2[2];
    g_o2[15u * plane + o] = v2[3];
    g_o2[16u * plane + o] = v2[4];
    g_o2[17u * plane + o] = v2[5];
    g_o2[18u * plane + o] = v3[0];
    g_o2[19u * plane + o] = v3[1];
    g_o2[20u * plane + o] = v3[2];
    g_o2[21u * plane + o] = v3[3];
    g_o2[22u * plane + o] = v3[4];
    g_o2[23u * plane + o] = v3[5];
    g_o2[24u * plane + o] = v4[0];
    g_o2[25u * plane + o] = v4[1];
    g_o2[26u * plane + o] = v4[2];
    g_o2[27u * plane + o] = v4[3];
    g_o2[28u * plane + o] = v4[4];
    g_o2[29u * plane + o] = v4[5];
    g_o2[30u * plane + o] = v5[0];
    g_o2[31u * plane + o] = v5[1];
    g_o2[32u * plane + o] = v5[2];
    g_o2[33u * plane + o] = v5[3];
    g_o2[34u * plane + o] = v5[4];
    g_o2[35u * plane + o] = v5[5];
}

// Column k of Aᵀ m for the tile at column src of M (m = its 36 products, point a·6 + k in
// plane a·6 + k): the 4 output rows of that column.
fn wino_mcol(src: u32, plane: u32, k: u32) -> vec4<f32> {
    return wino_at(array<f32, 6>(
        g_a[k * plane + src], g_a[(6u + k) * plane + src], g_a[(12u + k) * plane + src],
        g_a[(18u + k) * plane + src], g_a[(24u + k) * plane + src], g_a[(30u + k) * plane + src]));
}

// What the output transform adds to channel co of image b of the window: bias[co] and
// image_bias[b, co], each where enabled.
fn wino_bias(co: u32, b: u32) -> f32 {
    var v = 0.0;
    if (wq.has_bias != 0u) {
        v = g_b[co];
    }
    if (wq.has_image_bias != 0u) {
        v += g_ib[(wq.n0 + b) * wq.cout + co];
    }
    return v;
}

// The tile's 4 output rows (Aᵀ M A, t = Aᵀ m column by column, then row by row; unrolled, see
// wino_input), each plus what wino_bias adds for channel co of image b.
fn wino_out_rows(src: u32, plane: u32, co: u32, b: u32) -> array<vec4<f32>, 4> {
    let t0 = wino_mcol(src, plane, 0u);
    let t1 = wino_mcol(src, plane, 1u);
    let t2 = wino_mcol(src, plane, 2u);
    let t3 = wino_mcol(src, plane, 3u);
    let t4 = wino_mcol(src, plane, 4u);
    let t5 = wino_mcol(src, plane, 5u);
    let bv = vec4(wino_bias(co, b));
    return array<vec4<f32>, 4>(
        wino_at(array<f32, 6>(t0[0], t1[0], t2[0], t3[0], t4[0], t5[0])) + bv,
        wino_at(array<f32, 6>(t0[1], t1[1], t2[1], t3[1], t4[1], t5[1])) + bv,
        wino_at(array<f32, 6>(t0[2], t1[2], t2[2], t3[2], t4[2], t5[2])) + bv,
        wino_at(array<f32, 6>(t0[3], t1[3], t2[3], t3[3], t4[3], t5[3])) + bv);
}

// y[o] = v, or res_scale·(v + r[o]) with a residual.
fn wino_store(o: u32, v: f32) {
    if (wq.has_residual != 0u) {
        g_o3[o] = wq.res_scale * (v + g_r[o]);
    } else {
        g_o3[o] = v;
    }
}

// g_a = M [36, Cout, cols], g_b = bias (read when has_bias), g_o3 = y (images n0..n0+nb),
// g_r = residual (read when has_residual), g_ib = image bias (read when has_image_bias).
@compute @workgroup_size(256)
fn wino_output(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    let tiles = wq.th * wq.tw;
    if (i >= wq.cout * wq.nb * tiles) {
        return;
    }
    let c = wino_tile(i, tiles);
    let co = c.x;
    let plane = wq.cout * wq.cols;
    let src = co * wq.cols + c.y * tiles + c.z * wq.tw + c.w;
    let oy = c.z * 4u;
    let ox = c.w * 4u;
    let base = ((wq.n0 + c.y) * wq.cout + co) * wq.h * wq.w;
    let y = wino_out_rows(src, plane, co, c.y);
    let y0 = y[0];
    let y1 = y[1];
    let y2 = y[2];
    let y3 = y[3];
    // Every tile starts inside the image; rows and columns past it are not stored.
    let c1 = ox + 1u < wq.w;
    let c2 = ox + 2u < wq.w;
    let c3 = ox + 3u < wq.w;
    if (oy + 0u < wq.h) {
        let row = base + (oy + 0u) * wq.w + ox;
        wino_store(row, y0.x);
        if (c1) {
            wino_store(row + 1u, y0.y);
        }
        if (c2) {
            wino_store(row + 2u, y0.z);
        }
        if (c3) {
            wino_store(row + 3u, y0.w);
        }
    }
    if (oy + 1u < wq.h) {
        let row = base + (oy + 1u) * wq.w + ox;
        wino_store(row, y1.x);
        if (c1) {
            wino_store(row + 1u, y1.y);
        }
        if (c2) {
            wino_store(row + 2u, y1.z);
        }
        if (c3) {
            wino_store(row + 3u, y1.w);
        }
    }
    if (oy + 2u < wq.h) {
        let row = base + (oy + 2u) * wq.w + ox;
        wino_store(row, y2.x);
        if (c1) {
            wino_store(row + 1u, y2.y);
        }
        if (c2) {
            wino_store(row + 2u, y2.z);
        }
        if (c3) {
            wino_store(row + 3u, y2.w);
        }
    }
    if (oy + 3u < wq.h) {
        let row = base + (oy + 3u) * wq.w + ox;
        wino_store(row, y3.x);
        if (c1) {
            wino_store(row + 1u, y3.y);
        }
        if (c2) {
            wino_store(row + 2u, y3.z);
        }
        if (c3) {
            wino_store(row + 3u, y3.w);
        }
    }
}

// Weight grad of the Winograd forward (its adjoint): with M = U ⊙ V per tile and y = Aᵀ M A,
//   dM = A dy Aᵀ,   dU[ξ, co, ci] = Σ_n dM[ξ, co, n] · V[ξ, ci, n],   dw = Gᵀ dU G.
// g_a = dy, g_o2 = dM [36, Cout, cols] for images n0..n0+nb (one invocation per (co, tile)).
@compute @workgroup_size(256)
fn wino_dy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    let tiles = wq.th * wq.tw;
    if (i >= wq.cout * wq.nb * tiles) {
        return;
    }
    let c = wino_tile(i, tiles);
    let co = c.x;
    let oy = c.z * 4u;
    let ox = c.w * 4u;
    let base = ((wq.n0 + c.y) * wq.cout + co) * wq.h * wq.w;
    // The 4×4 output-grad tile e row by row (0 past the image), then dM = A e Aᵀ.
    let d = wino_dm(wino_dy_row(base, oy, ox, true),
                    wino_dy_row(base, oy + 1u, ox, oy + 1u < wq.h),
                    wino_dy_row(base, oy + 2u, ox, oy + 2u < wq.h),
                    wino_dy_row(base, oy + 3u, ox, oy + 3u < wq.h));
    let plane = wq.cout * wq.cols;
    let o = co * wq.cols + c.y * tiles + c.z * wq.tw + c.w;
    wino_store_dm(o, plane, 0u, d);
    wino_store_dm(o, plane, 6u, d);
    wino_store_dm(o, plane, 12u, d);
    wino_store_dm(o, plane, 18u, d);
    wino_store_dm(o, plane, 24u, d);
    wino_store_dm(o, plane, 30u, d);
}

// Row y of dy's plane at base, columns x..x+3 (0 past the image or where `ok` is false).
fn wino_dy_row(base: u32, y: u32, x: u32, ok: bool) -> vec4<f32> {
    let c0 = ok && x < wq.w;
    let c1 = ok && x + 1u < wq.w;
    let c2 = ok && x + 2u < wq.w;
    let c3 = ok && x + 3u < wq.w;
    let row = base + y * wq.w + x;
    return vec4<f32>(select(0.0, g_a[select(base, row, c0)], c0),
                     select(0.0, g_a[select(base, row + 1u, c1)], c1),
                     select(0.0, g_a[select(base, row + 2u, c2)], c2),
                     select(0.0, g_a[select(base, row + 3u, c3)], c3));
}

// dM = A e Aᵀ of a 4×4 output-grad tile given by its rows, row-major 6×6: t_c = A (column c
// of e), then row a of dM = A (t_0[a], .., t_3[a]) (unrolled, see wino_input).
fn wino_dm(e0: vec4<f32>, e1: vec4<f32>, e2: vec4<f32>, e3: vec4<f32>) -> array<f32, 36> {
    let s0 = wino_a(e0.x, e1.x, e2.x, e3.x);
    let s1 = wino_a(e0.y, e1.y, e2.y, e3.y);
    let s2 = wino_a(e0.z, e1.z, e2.z, e3.z);
    let s3 = wino_a(e0.w, e1.w, e2.w, e3.w);
    let d0 = wino_a(s0[0], s1[0], s2[0], s3[0]);
    let d1 = wino_a(s0[1], s1[1], s2[1], s3[1]);
    let d2 = wino_a(s0[2], s1[2], s2[2], s3[2]);
    let d3 = wino_a(s0[3], s1[3], s2[3], s3[3]);
    let d4 = wino_a(s0[4], s1[4], s2[4], s3[4]);
    let d5 = wino_a(s0[5], s1[5], s2[5], s3[5]);
    return array<f32, 36>(d0[0], d0[1], d0[2], d0[3], d0[4], d0[5],
                          d1[0], d1[1], d1[2], d1[3], d1[4], d1[5],
                          d2[0], d2[1], d2[2], d2[3], d2[4], d2[5],
                          d3[0], d3[1], d3[2], d3[3], d3[4], d3[5],
                          d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
                          d5[0], d5[1], d5[2], d5[3], d5[4], d5[5]);
}

// dM[ξ] for the 6 points ξ = k..k+5 of one tile.
fn wino_store_dm(o: u32, plane: u32, k: u32, d: array<f32, 36>) {
    g_o2[(k + 0u) * plane + o] = d[k + 0u];
    g_o2[(k + 1u) * plane + o] = d[k + 1u];
    g_o2[(k + 2u) * plane + o] = d[k + 2u];
    g_o2[(k + 3u) * plane + o] = d[k + 3u];
    g_o2[(k + 4u) * plane + o] = d[k + 4u];
    g_o2[(k + 5u) * plane + o] = d[k + 5u];
}

// g_a = dU [36, Cout, Cin], g_o2 = dw [Cout, Cin, 3, 3] = Gᵀ dU G.
@compute @workgroup_size(256)
fn wino_weight_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    let pairs = wq.cout * wq.cin;
    if (i >= pairs) {
        return;
    }
    wino_dw_of(i);
}

// dw of (co, ci) pair i from dU.
fn wino_dw_of(i: u32) {
    let pairs = wq.cout * wq.cin;
    // t = Gᵀ u column by column (3×6), then dw = t G row by row (unrolled, see wino_input).
    let t0 = wino_gt(array<f32, 6>(
        g_a[0u * pairs + i], g_a[6u * pairs + i], g_a[12u * pairs + i], g_a[18u * pairs + i],
        g_a[24u * pairs + i], g_a[30u * pairs + i]));
    let t1 = wino_gt(array<f32, 6>(
        g_a[1u * pairs + i], g_a[7u * pairs + i], g_a[13u * pairs + i], g_a[19u * pairs + i],
        g_a[25u * pairs + i], g_a[31u * pairs + i]));
    let t2 = wino_gt(array<f32, 6>(
        g_a[2u * pairs + i], g_a[8u * pairs + i], g_a[14u * pairs + i], g_a[20u * pairs + i],
        g_a[26u * pairs + i], g_a[32u * pairs + i]));
    let t3 = wino_gt(array<f32, 6>(
        g_a[3u * pairs + i], g_a[9u * pairs + i], g_a[15u * pairs + i], g_a[21u * pairs + i],
        g_a[27u * pairs + i], g_a[33u * pairs + i]));
    let t4 = wino_gt(array<f32, 6>(
        g_a[4u * pairs + i], g_a[10u * pairs + i], g_a[16u * pairs + i], g_a[22u * pairs + i],
        g_a[28u * pairs + i], g_a[34u * pairs + i]));
    let t5 = wino_gt(array<f32, 6>(
        g_a[5u * pairs + i], g_a[11u * pairs + i], g_a[17u * pairs + i], g_a[23u * pairs + i],
        g_a[29u * pairs + i], g_a[35u * pairs + i]));
    let w0 = wino_gt(array<f32, 6>(t0[0], t1[0], t2[0], t3[0], t4[0], t5[0]));
    let w1 = wino_gt(array<f32, 6>(t0[1], t1[1], t2[1], t3[1], t4[1], t5[1]));
    let w2 = wino_gt(array<f32, 6>(t0[2], t1[2], t2[2], t3[2], t4[2], t5[2]));
    g_o2[i * 9u + 0u] = w0[0];
    g_o2[i * 9u + 1u] = w0[1];
    g_o2[i * 9u + 2u] = w0[2];
    g_o2[i * 9u + 3u] = w1[0];
    g_o2[i * 9u + 4u] = w1[1];
    g_o2[i * 9u + 5u] = w1[2];
    g_o2[i * 9u + 6u] = w2[0];
    g_o2[i * 9u + 7u] = w2[1];
    g_o2[i * 9u + 8u] = w2[2];
}

// The bias grads, in wino_weight_grad's dispatch (wino_weight_grad_bias): invocation
// Cout·Cin + co sums row co of dM's point 7 (g_r = dM [36, Cout, cols]; row 1 of A is
// [1, 1, 1, 1], so each of those values is one tile's sum of dy): g_o5 = the sums per image
// [Cout, nb] (written when has_image_bias: no pad columns), g_o3 = db [Cout] = their sum (pad
// columns hold zeros). Each lane walks its own row; the loop bounds are uniform.
@group(0) @binding(5) var<storage, read_write> g_o5: array<f32>;

fn wino_bias_rows(co: u32) {
    let tiles = wq.th * wq.tw;
    let base = (7u * wq.cout + co) * wq.cols;
    var total = 0.0;
    for (var b = 0u; b < wq.nb; b++) {
        var s = 0.0;
        for (var t = 0u; t < tiles; t++) {
            s += g_r[base + b * tiles + t];
        }
        if (wq.has_image_bias != 0u) {
            g_o5[co * wq.nb + b] = s;
        }
        total += s;
    }
    g_o3[co] = total;
}

// wino_weight_grad plus wino_bias_rows; bindings 3 = db, 4 = dM, 5 = db per image.
@compute @workgroup_size(256)
fn wino_weight_grad_bias(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    let pairs = wq.cout * wq.cin;
    if (i >= pairs) {
        if (i < pairs + wq.cout) {
            wino_bias_rows(i - pairs);
        }
        return;
    }
    wino_dw_of(i);
}

// ---------------------------------------------------------------------------------------------
// Vectorized transforms (W % 4 == 0). wino_input4: one invocation per (channel, 4 consecutive
// columns of V), so that every plane of the transformed tensor is read or written as one vec4 per
// invocation and image rows as vec4s. On llvmpipe (Mesa 25.0, 2 cores) a vec4 storage load costs
// about 2.5 scalar ones (5.1 against 2.1 ns per 8-lane load, measured 2026-12-02), so moving
// vec4s saves a third of the memory work. Per 4 tiles the input transform loads 6 rows of 4
// vec4s + 2 scalars when the 4 tiles share a tile row (tw % 4 == 0), else 6·4 of 1 vec4 + 2
// scalars, and stores 36 vec4s, against 144 + 144 scalars one tile per invocation. The output
// and dy transforms stay one tile per invocation and only move image rows as vec4s (see
// wino_output_v, wino_dy_v). Same arithmetic as the entry points above, which serve images with
// W % 4 != 0.

@group(0) @binding(1) var<storage, read> g_a4: array<W4>;
@group(0) @binding(2) var<storage, read_write> g_o2v: array<W4>;
@group(0) @binding(3) var<storage, read_write> g_o3v: array<W4>;
@group(0) @binding(4) var<storage, read> g_r4: array<W4>;
// wino_input4: x again, as scalars, for the columns either side of a row's vec4s (a scalar
// load costs 2/5 of a vec4 one on llvmpipe).
@group(0) @binding(6) var<storage, read> g_x1: array<f32>;

// Tile column `col` (< cols) of channel `ch` in a tensor with `nch` channels: the base of its
// image plane in vec4s, its tile row and column, its image, and whether it is a real tile
// (pad columns are not).
struct WTile {
    base4: u32,
    ty: u32,
    tx: u32,
    b: u32,
    live: bool,
}

fn wino_tile4(ch: u32, col: u32, nch: u32) -> WTile {
    let tiles = wq.th * wq.tw;
    let live = col < wq.nb * tiles;
    let c = select(0u, col, live);
    let b = c / tiles;
    let t = c - b * tiles;
    let ty = t / wq.tw;
    return WTile(((wq.n0 + b) * nch + ch) * (wq.h * wq.w / 4u), ty, t - ty * wq.tw, b, live);
}

// (scale, shift) of the input norm of channel ci of image b of the window: x·ns + nb.
fn wino_norm(ci: u32, b: u32) -> vec2<f32> {
    if (wq.norm_cpg == 0u) {
        return vec2(1.0, 0.0);
    }
    let grp = ((wq.n0 + b) * (wq.cin / wq.norm_cpg) + ci / wq.norm_cpg) * 2u;
    let ns = g_nstats[grp + 1u] * g_ngamma[ci];
    return vec2(ns, g_nbeta[ci] - g_nstats[grp] * ns);
}

fn wino_in4(x: vec4<f32>, ok: bool, n: vec2<f32>) -> vec4<f32> {
    var v = x;
    if (wq.norm_cpg != 0u) {
        v = x * n.x + n.y;
        if (wq.norm_silu != 0u) {
            v = v / (1.0 + exp(-v));
        }
    }
    return select(vec4(0.0), v, ok);
}

// The input dropout of the 4 elements of x's vec4 q.
fn wino_drop4(v: vec4<f32>, q: u32) -> vec4<f32> {
    return dropout_apply4(v, q, wq.drop);
}

// The input dropout of x's element e (component e % 4 of vec4 e / 4; wrapped indices of
// elements outside the image give values that are zero already).
fn wino_drop1(v: f32, e: u32) -> f32 {
    if (wq.drop.on == 0u) {
        return v;
    }
    return dropout_apply4(vec4(v), e / 4u, wq.drop)[e % 4u];
}

// Row r of tile t's 6×6 input window, normalized (and dropped out), 0 outside the image,
// transformed along the row (d B): a vec4 load of the 4 inner columns and scalar loads of the
// outer two.
fn wino_row1(t: WTile, n: vec2<f32>, r: u32) -> array<f32, 6> {
    let y = i32(t.ty * 4u + r) - 1;
    let ok = t.live && y >= 0 && y < i32(wq.h);
    let q = t.base4 + select(0u, u32(y) * (wq.w / 4u), ok) + t.tx;
    let okl = ok && t.tx > 0u;
    let okr = ok && t.tx + 1u < wq.tw;
    let m = wino_drop4(wino_in4(ld4(g_a4[q]), ok, n), q);
    let l = wino_drop1(wino_in(g_x1[select(4u * q, 4u * q - 1u, okl)], okl, n.x, n.y), 4u * q - 1u);
    let rr = wino_drop1(wino_in(g_x1[select(4u * q, 4u * q + 4u, okr)], okr, n.x, n.y), 4u * q + 4u);
    return wino_bt(array<f32, 6>(l, m.x, m.y, m.z, m.w, rr));
}

// wino_row1 for 4 tiles, each on its own.
fn wino_row_each(t0: WTile, t1: WTile, t2: WTile, t3: WTile, n0: vec2<f32>, n1: vec2<f32>,
                 n2: vec2<f32>, n3: vec2<f32>, r: u32) -> array<f32, 24> {
    let h0 = wino_row1(t0, n0, r);
    let h1 = wino_row1(t1, n1, r);
    let h2 = wino_row1(t2, n2, r);
    let h3 = wino_row1(t3, n3, r);
    return array<f32, 24>(h0[0], h0[1], h0[2], h0[3], h0[4], h0[5],
                          h1[0], h1[1], h1[2], h1[3], h1[4], h1[5],
                          h2[0], h2[1], h2[2], h2[3], h2[4], h2[5],
                          h3[0], h3[1], h3[2], h3[3], h3[4], h3[5]);
}

// wino_row1 for tiles t0.tx .. t0.tx + 3 of one tile row (tw % 4 == 0): the windows overlap by
// two columns, so the row is 4 inner vec4s and the two columns either side (6 loads).
fn wino_row_strip(t: WTile, n: vec2<f32>, r: u32) -> array<f32, 24> {
    let y = i32(t.ty * 4u + r) - 1;
    let ok = t.live && y >= 0 && y < i32(wq.h);
    let q = t.base4 + select(0u, u32(y) * (wq.w / 4u), ok) + t.tx;
    let okl = ok && t.tx > 0u;
    let okr = ok && t.tx + 4u < wq.tw;
    let m0 = wino_drop4(wino_in4(ld4(g_a4[q]), ok, n), q);
    let m1 = wino_drop4(wino_in4(ld4(g_a4[q + 1u]), ok, n), q + 1u);
    let m2 = wino_drop4(wino_in4(ld4(g_a4[q + 2u]), ok, n), q + 2u);
    let m3 = wino_drop4(wino_in4(ld4(g_a4[q + 3u]), ok, n), q + 3u);
    let l = wino_drop1(wino_in(g_x1[select(4u * q, 4u * q - 1u, okl)], okl, n.x, n.y), 4u * q - 1u);
    let rr = wino_drop1(wino_in(g_x1[select(4u * q, 4u * q + 16u, okr)], okr, n.x, n.y), 4u * q + 16u);
    let h0 = wino_bt(array<f32, 6>(l, m0.x, m0.y, m0.z, m0.w, m1.x));
    let h1 = wino_bt(array<f32, 6>(m0.w, m1.x, m1.y, m1.z, m1.w, m2.x));
    let h2 = wino_bt(array<f32, 6>(m1.w, m2.x, m2.y, m2.z, m2.w, m3.x));
    let h3 = wino_bt(array<f32, 6>(m2.w, m3.x, m3.y, m3.z, m3.w, rr));
    return array<f32, 24>(h0[0], h0[1], h0[2], h0[3], h0[4], h0[5],
                          h1[0], h1[1], h1[2], h1[3], h1[4], h1[5],
                          h2[0], h2[1], h2[2], h2[3], h2[4], h2[5],
                          h3[0], h3[1], h3[2], h3[3], h3[4], h3[5]);
}

// Bᵀ of column k of the row transforms (k = 6·tile + column).
fn wino_vcol(h0: array<f32, 24>, h1: array<f32, 24>, h2: array<f32, 24>, h3: array<f32, 24>,
             h4: array<f32, 24>, h5: array<f32, 24>, k: u32) -> array<f32, 6> {
    return wino_bt(array<f32, 6>(h0[k], h1[k], h2[k], h3[k], h4[k], h5[k]));
}

// V[a·6 + c] for a = 0..5 of the 4 tiles (v_j = column c of tile j's Bᵀ d B).
fn wino_store_v(o: u32, plane: u32, c: u32, v0: array<f32, 6>, v1: array<f32, 6>,
                v2: array<f32, 6>, v3: array<f32, 6>) {
    g_o2v[(0u + c) * plane + o] = st4(vec4(v0[0], v1[0], v2[0], v3[0]));
    g_o2v[(6u + c) * plane + o] = st4(vec4(v0[1], v1[1], v2[1], v3[1]));
    g_o2v[(12u + c) * plane + o] = st4(vec4(v0[2], v1[2], v2[2], v3[2]));
    g_o2v[(18u + c) * plane + o] = st4(vec4(v0[3], v1[3], v2[3], v3[3]));
    g_o2v[(24u + c) * plane + o] = st4(vec4(v0[4], v1[4], v2[4], v3[4]));
    g_o2v[(30u + c) * plane + o] = st4(vec4(v0[5], v1[5], v2[5], v3[5]));
}

// wino_input over 4 columns per invocation (pad columns get zeros); g_a4 = g_x1 = x, g_o2v = V,
// bindings 3..5: the input norm.
@compute @workgroup_size(256)
fn wino_input4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    let groups = wq.cols / 4u;
    if (i >= wq.cin * groups) {
        return;
    }
    let ci = i / groups;
    let g = i - ci * groups;
    let t0 = wino_tile4(ci, 4u * g, wq.cin);
    var h0: array<f32, 24>;
    var h1: array<f32, 24>;
    var h2: array<f32, 24>;
    var h3: array<f32, 24>;
    var h4: array<f32, 24>;
    var h5: array<f32, 24>;
    if (wq.tw % 4u == 0u) {
        // The 4 columns are 4 tiles of one tile row of one image.
        let n = wino_norm(ci, t0.b);
        h0 = wino_row_strip(t0, n, 0u);
        h1 = wino_row_strip(t0, n, 1u);
        h2 = wino_row_strip(t0, n, 2u);
        h3 = wino_row_strip(t0, n, 3u);
        h4 = wino_row_strip(t0, n, 4u);
        h5 = wino_row_strip(t0, n, 5u);
    } else {
        let t1 = wino_tile4(ci, 4u * g + 1u, wq.cin);
        let t2 = wino_tile4(ci, 4u * g + 2u, wq.cin);
        let t3 = wino_tile4(ci, 4u * g + 3u, wq.cin);
        let n0 = wino_norm(ci, t0.b);
        let n1 = wino_norm(ci, t1.b);
        let n2 = wino_norm(ci, t2.b);
        let n3 = wino_norm(ci, t3.b);
        h0 = wino_row_each(t0, t1, t2, t3, n0, n1, n2, n3, 0u);
        h1 = wino_row_each(t0, t1, t2, t3, n0, n1, n2, n3, 1u);
        h2 = wino_row_each(t0, t1, t2, t3, n0, n1, n2, n3, 2u);
        h3 = wino_row_each(t0, t1, t2, t3, n0, n1, n2, n3, 3u);
        h4 = wino_row_each(t0, t1, t2, t3, n0, n1, n2, n3, 4u);
        h5 = wino_row_each(t0, t1, t2, t3, n0, n1, n2, n3, 5u);
    }
    let plane = wq.cin * groups;
    let o = ci * groups + g;
    wino_store_v(o, plane, 0u, wino_vcol(h0, h1, h2, h3, h4, h5, 0u),
                 wino_vcol(h0, h1, h2, h3, h4, h5, 6u), wino_vcol(h0, h1, h2, h3, h4, h5, 12u),
                 wino_vcol(h0, h1, h2, h3, h4, h5, 18u));
    wino_store_v(o, plane, 1u, wino_vcol(h0, h1, h2, h3, h4, h5, 1u),
                 wino_vcol(h0, h1, h2, h3, h4, h5, 7u), wino_vcol(h0, h1, h2, h3, h4, h5, 13u),
                 wino_vcol(h0, h1, h2, h3, h4, h5, 19u));
    wino_store_v(o, plane, 2u, wino_vcol(h0, h1, h2, h3, h4, h5, 2u),
                 wino_vcol(h0, h1, h2, h3, h4, h5, 8u), wino_vcol(h0, h1, h2, h3, h4, h5, 14u),
                 wino_vcol(h0, h1, h2, h3, h4, h5, 20u));
    wino_store_v(o, plane, 3u, wino_vcol(h0, h1, h2, h3, h4, h5, 3u),
                 wino_vcol(h0, h1, h2, h3, h4, h5, 9u), wino_vcol(h0, h1, h2, h3, h4, h5, 15u),
                 wino_vcol(h0, h1, h2, h3, h4, h5, 21u));
    wino_store_v(o, plane, 4u, wino_vcol(h0, h1, h2, h3, h4, h5, 4u),
                 wino_vcol(h0, h1, h2, h3, h4, h5, 10u), wino_vcol(h0, h1, h2, h3, h4, h5, 16u),
                 wino_vcol(h0, h1, h2, h3, h4, h5, 22u));
    wino_store_v(o, plane, 5u, wino_vcol(h0, h1, h2, h3, h4, h5, 5u),
                 wino_vcol(h0, h1, h2, h3, h4, h5, 11u), wino_vcol(h0, h1, h2, h3, h4, h5, 17u),
                 wino_vcol(h0, h1, h2, h3, h4, h5, 23u));
}

// B u for 6 values u: the adjoint of wino_bt ((B u)[i] = Σ_a Bᵀ[a][i]·u[a]), on 4 tiles at once.
fn wino_badj4(u: array<vec4<f32>, 6>) -> array<vec4<f32>, 6> {
    return array<vec4<f32>, 6>(
        u[0],
        1.5 * u[0] - u[1] + u[2] - 0.5 * u[3] + 2.0 * u[4] + u[5],
        -2.0 * u[0] - 2.5 * u[1] + 0.5 * u[2] - u[3] - u[4] + 1.5 * u[5],
        -1.5 * u[0] - 0.5 * u[1] - 2.5 * u[2] + 0.5 * u[3] - 2.0 * u[4] - 2.0 * u[5],
        u[0] + u[1] + u[2] + u[3] + u[4] - 1.5 * u[5],
        u[5]);
}

// wino_badj4 for one tile.
fn wino_badj(u: array<f32, 6>) -> array<f32, 6> {
    let v = wino_badj4(array<vec4<f32>, 6>(vec4(u[0]), vec4(u[1]), vec4(u[2]), vec4(u[3]),
                                            vec4(u[4]), vec4(u[5])));
    return array<f32, 6>(v[0].x, v[1].x, v[2].x, v[3].x, v[4].x, v[5].x);
}

// Column b (points 6a + b, a = 0..5) of the 4 tiles' dV at vec4 o, transformed (B ·).
fn wino_adj_col(o: u32, plane4: u32, b: u32) -> array<vec4<f32>, 6> {
    return wino_badj4(array<vec4<f32>, 6>(
        ld4(g_a4[b * plane4 + o]), ld4(g_a4[(6u + b) * plane4 + o]),
        ld4(g_a4[(12u + b) * plane4 + o]), ld4(g_a4[(18u + b) * plane4 + o]),
        ld4(g_a4[(24u + b) * plane4 + o]), ld4(g_a4[(30u + b) * plane4 + o])));
}

// Points k..k+5 (one row of the 6×6) of the 4 tiles at vec4 o; zeros when !ok.
fn wino_adj_row(o: u32, plane4: u32, k: u32, ok: bool) -> array<vec4<f32>, 6> {
    if (!ok) {
        return array<vec4<f32>, 6>();
    }
    return array<vec4<f32>, 6>(
        ld4(g_a4[k * plane4 + o]), ld4(g_a4[(k + 1u) * plane4 + o]),
        ld4(g_a4[(k + 2u) * plane4 + o]), ld4(g_a4[(k + 3u) * plane4 + o]),
        ld4(g_a4[(k + 4u) * plane4 + o]), ld4(g_a4[(k + 5u) * plane4 + o]));
}

// One point of dV for tile column c (scalar), 0 when !ok.
fn wino_adj_at(xi: u32, plane: u32, c: u32, ok: bool) -> f32 {
    return select(0.0, g_b[select(0u, xi * plane + c, ok)], ok);
}

// What a horizontal neighbour (tile column c, its column `b` of dV: 5 for the tile on the left, 0
// for the one on the right) adds to block row r, r = 0..3: (B dV_c Bᵀ)[r + 1][5 − b... ] plus the
// corner points of the tiles above and below it (rows 0 and 3 of the block).
fn wino_adj_side(plane: u32, c: u32, b: u32, ok: bool, up: bool, down: bool, tw: u32) -> vec4<f32> {
    let t = wino_badj(array<f32, 6>(
        wino_adj_at(b, plane, c, ok), wino_adj_at(6u + b, plane, c, ok),
        wino_adj_at(12u + b, plane, c, ok), wino_adj_at(18u + b, plane, c, ok),
        wino_adj_at(24u + b, plane, c, ok), wino_adj_at(30u + b, plane, c, ok)));
    // The tile above contributes its point (5, b), the one below its point (0, b).
    let above = wino_adj_at(30u + b, plane, c - tw, ok && up);
    let below = wino_adj_at(b, plane, c + tw, ok && down);
    return vec4(t[1] + above, t[2], t[3], t[4] + below);
}

// One output row of the 4 tiles: z = B applied along the row to the row's 6 values (per tile),
// plus the horizontal neighbours' columns (left: column 0 of each tile; right: column 3), as
// the row's 4 vec4s.
fn wino_adj_row_out(r: array<vec4<f32>, 6>, left: vec4<f32>, right: vec4<f32>) -> array<vec4<f32>, 4> {
    let z = wino_badj4(r);
    return array<vec4<f32>, 4>(vec4(z[1].x + left.x, z[2].x, z[3].x, z[4].x + right.x),
                               vec4(z[1].y + left.y, z[2].y, z[3].y, z[4].y + right.y),
                               vec4(z[1].z + left.z, z[2].z, z[3].z, z[4].z + right.z),
                               vec4(z[1].w + left.w, z[2].w, z[3].w, z[4].w + right.w));
}

fn wino_adj_store(q: u32, v: array<vec4<f32>, 4>) {
    g_o3v[q] = st4(v[0]);
    g_o3v[q + 1u] = st4(v[1]);
    g_o3v[q + 2u] = st4(v[2]);
    g_o3v[q + 3u] = st4(v[3]);
}

// The group of four tiles (one vec4 of dV) of invocation i of an adjoint kernel: its channel,
// first tile, vec4 index o in a point's plane and that plane's size in vec4s.
struct WAdj {
    ci: u32,
    g: u32,
    t: WTile,
    o: u32,
    plane4: u32,
}

fn wino_adj_group(i: u32) -> WAdj {
    let groups = wq.cols / 4u;
    let ci = i / groups;
    let g = i - ci * groups;
    return WAdj(ci, g, wino_tile4(ci, 4u * g, wq.cin), ci * groups + g, wq.cin * groups);
}

// B applied down each of the 6 columns of the group's dV: k[b][i] = (B dV[., b])[i].
fn wino_adj_cols(a: WAdj) -> array<array<vec4<f32>, 6>, 6> {
    return array<array<vec4<f32>, 6>, 6>(
        wino_adj_col(a.o, a.plane4, 0u), wino_adj_col(a.o, a.plane4, 1u),
        wino_adj_col(a.o, a.plane4, 2u), wino_adj_col(a.o, a.plane4, 3u),
        wino_adj_col(a.o, a.plane4, 4u), wino_adj_col(a.o, a.plane4, 5u));
}

// The 4 block rows (window rows 1..4 of each tile) as rows over b, with `top` (what the tiles
// above give: their window row 5) added to the first and `bottom` (their window row 0, from
// the tiles below) to the last.
fn wino_adj_block(k: array<array<vec4<f32>, 6>, 6>, top: array<vec4<f32>, 6>,
                  bottom: array<vec4<f32>, 6>) -> array<array<vec4<f32>, 6>, 4> {
    return array<array<vec4<f32>, 6>, 4>(
        array<vec4<f32>, 6>(k[0][1] + top[0], k[1][1] + top[1], k[2][1] + top[2], k[3][1] + top[3],
                            k[4][1] + top[4], k[5][1] + top[5]),
        array<vec4<f32>, 6>(k[0][2], k[1][2], k[2][2], k[3][2], k[4][2], k[5][2]),
        array<vec4<f32>, 6>(k[0][3], k[1][3], k[2][3], k[3][3], k[4][3], k[5][3]),
        array<vec4<f32>, 6>(k[0][4] + bottom[0], k[1][4] + bottom[1], k[2][4] + bottom[2],
                            k[3][4] + bottom[3], k[4][4] + bottom[4], k[5][4] + bottom[5]));
}

// The adjoint of the input transform, for the input grad of a convolution: dx = Σ over the
// tiles whose 6×6 windows cover a pixel of B dV Bᵀ at its place in the window (the windows
// overlap by two rows and columns; positions outside the image are dropped), where dV [36, Cin,
// cols] = Uᵀ dM is the grad of V. Four tiles of one tile row per invocation (tw % 4 == 0, h % 4
// == 0): their dV as vec4s (g_a4), the neighbours' boundary points as scalars (g_b = the same
// dV); B dV Bᵀ's boundary rows and columns need only dV's (Bᵀ's first and last columns are unit
// vectors). g_o3v = dx [N, Cin, H, W].
// What invocation i of wino_input_adjoint4 writes: image rows 4ty..4ty+3 of its four tiles
// (4 vec4s each; row r at vec4 q + r·W/4), channel ci of image t.b.
struct WAdjOut {
    q: u32,
    ci: u32,
    t: WTile,
    rows: array<array<vec4<f32>, 4>, 4>,
}

fn wino_adj4_out(i: u32) -> WAdjOut {
    let a = wino_adj_group(i);
    let t = a.t;
    let plane = a.plane4 * 4u;
    let c0 = a.ci * wq.cols + 4u * a.g;
    let up = t.ty > 0u;
    let down = t.ty + 1u < wq.th;
    // The tiles above give their window's last row (their dV row 5), those below their first
    // (dV row 0): Bᵀ's first and last columns are unit vectors.
    let ua = wino_adj_row(a.o - select(0u, wq.tw / 4u, up), a.plane4, 30u, up);
    let db = wino_adj_row(a.o + select(0u, wq.tw / 4u, down), a.plane4, 0u, down);
    let r = wino_adj_block(wino_adj_cols(a), ua, db);
    // Column 5 of each tile's rows goes to the first pixel of the tile on its right, column 0
    // to the last pixel of the tile on its left; the group's outer neighbours are loaded.
    let lx = wino_adj_side(plane, c0 - 1u, 5u, t.tx > 0u, up, down, wq.tw);
    let rx = wino_adj_side(plane, c0 + 4u, 0u, t.tx + 4u < wq.tw, up, down, wq.tw);
    return WAdjOut(t.base4 + t.ty * wq.w + t.tx, a.ci, t, array<array<vec4<f32>, 4>, 4>(
        wino_adj_row_out(r[0], vec4(lx.x, r[0][5].x, r[0][5].y, r[0][5].z),
                         vec4(r[0][0].y, r[0][0].z, r[0][0].w, rx.x)),
        wino_adj_row_out(r[1], vec4(lx.y, r[1][5].x, r[1][5].y, r[1][5].z),
                         vec4(r[1][0].y, r[1][0].z, r[1][0].w, rx.y)),
        wino_adj_row_out(r[2], vec4(lx.z, r[2][5].x, r[2][5].y, r[2][5].z),
                         vec4(r[2][0].y, r[2][0].z, r[2][0].w, rx.z)),
        wino_adj_row_out(r[3], vec4(lx.w, r[3][5].x, r[3][5].y, r[3][5].z),
                         vec4(r[3][0].y, r[3][0].z, r[3][0].w, rx.w))));
}

@compute @workgroup_size(256)
fn wino_input_adjoint4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    if (i >= wq.cin * (wq.cols / 4u)) {
        return;
    }
    let o = wino_adj4_out(i);
    let w4 = wq.w / 4u;
    wino_adj_store(o.q, o.rows[0]);
    wino_adj_store(o.q + w4, o.rows[1]);
    wino_adj_store(o.q + 2u * w4, o.rows[2]);
    wino_adj_store(o.q + 3u * w4, o.rows[3]);
}

// wino_input_adjoint4 that also runs the first pass of the backward of the group norm (then
// SiLU when norm_silu, then dropout when drop.on) whose output the convolution read: for each
// element it writes g, the grad of the norm's output γ·x̂ + β (dx masked and scaled by the
// dropout, times SiLU' of the pre-activation recomputed from x), instead of dx, and per
// invocation the partial sums (Σ g, Σ g·x̂) over its 64 elements into parts [N, Cin, th·tw/4,
// 2] (one chunk per group of four tiles, in row-major tile order): what gn_bwd_partials would
// compute, for gn_bwd_reduce and gn_bwd_dx (groupnorm.wgsl) to finish. Bindings as
// wino_input_adjoint4, then stats [N, G, 2] = (mean, rstd), γ, β [Cin], x, parts.
@group(0) @binding(4) var<storage, read> g_an_stats: array<f32>;
@group(0) @binding(5) var<storage, read> g_an_gamma: array<f32>;
@group(0) @binding(6) var<storage, read> g_an_beta: array<f32>;
@group(0) @binding(7) var<storage, read> g_an_x4: array<W4>;
@group(0) @binding(8) var<storage, read_write> g_an_parts: array<f32>;

// The norm of one channel of one image: mean, rstd, γ, β.
struct WAdjNorm {
    mean: f32,
    rstd: f32,
    gamma: f32,
    beta: f32,
}

// One vec4 (at q) of an invocation's output through the norm's backward: g stored,
// (Σ g, Σ g·x̂) returned.
fn wino_adj_norm4(q: u32, v: vec4<f32>, nm: WAdjNorm) -> vec2<f32> {
    let xh = (ld4(g_an_x4[q]) - nm.mean) * nm.rstd;
    var g = dropout_apply4(v, q, wq.drop);
    if (wq.norm_silu != 0u) {
        let pre = xh * nm.gamma + nm.beta;
        let s = 1.0 / (1.0 + exp(-pre));
        g *= s * (1.0 + pre * (1.0 - s));
    }
    g_o3v[q] = st4(g);
    return vec2(dot(g, vec4(1.0)), dot(g, xh));
}

// A row of 4 vec4s at q through wino_adj_norm4 (written out: an array indexed by a loop
// counter leaves the registers on llvmpipe).
fn wino_adj_store_norm(q: u32, v: array<vec4<f32>, 4>, nm: WAdjNorm) -> vec2<f32> {
    return wino_adj_norm4(q, v[0], nm) + wino_adj_norm4(q + 1u, v[1], nm)
        + wino_adj_norm4(q + 2u, v[2], nm) + wino_adj_norm4(q + 3u, v[3], nm);
}

@compute @workgroup_size(256)
fn wino_input_adjoint4_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    if (i >= wq.cin * (wq.cols / 4u)) {
        return;
    }
    let o = wino_adj4_out(i);
    let n = wq.n0 + o.t.b;
    let grp = (n * (wq.cin / wq.norm_cpg) + o.ci / wq.norm_cpg) * 2u;
    let nm = WAdjNorm(g_an_stats[grp], g_an_stats[grp + 1u], g_an_gamma[o.ci], g_an_beta[o.ci]);
    let w4 = wq.w / 4u;
    let acc = wino_adj_store_norm(o.q, o.rows[0], nm) + wino_adj_store_norm(o.q + w4, o.rows[1], nm)
        + wino_adj_store_norm(o.q + 2u * w4, o.rows[2], nm)
        + wino_adj_store_norm(o.q + 3u * w4, o.rows[3], nm);
    let chunks = wq.th * wq.tw / 4u;
    let part = ((n * wq.cin + o.ci) * chunks + (o.t.ty * wq.tw + o.t.tx) / 4u) * 2u;
    g_an_parts[part] = acc.x;
    g_an_parts[part + 1u] = acc.y;
}

// wino_input_adjoint4 for images two tiles wide (tw == 2, th even: W = 8): a vec4 of dV holds
// a 2×2 block of tiles, (ty, 0), (ty, 1), (ty + 1, 0), (ty + 1, 1), so the left and right
// neighbours are inside it, and the tiles above and below are the last two / first two of the
// groups before / after it. No scalar loads: g_a4 = dV, g_o2v = dx.
@compute @workgroup_size(256)
fn wino_input_adjoint2(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    if (i >= wq.cin * (wq.cols / 4u)) {
        return;
    }
    let a = wino_adj_group(i);
    let up = a.t.ty > 0u;
    let down = a.t.ty + 2u < wq.th;
    let k = wino_adj_cols(a);
    // Window row 5 of the tiles above each tile (the previous group's lower pair for the upper
    // pair, the upper pair's own for the lower pair), window row 0 of the tiles below.
    let ua = wino_adj_row(a.o - select(0u, 1u, up), a.plane4, 30u, up);
    let db = wino_adj_row(a.o + select(0u, 1u, down), a.plane4, 0u, down);
    // Written out: an array indexed by a loop counter leaves the registers on llvmpipe.
    let top = array<vec4<f32>, 6>(
        vec4(ua[0].z, ua[0].w, k[0][5].x, k[0][5].y), vec4(ua[1].z, ua[1].w, k[1][5].x, k[1][5].y),
        vec4(ua[2].z, ua[2].w, k[2][5].x, k[2][5].y), vec4(ua[3].z, ua[3].w, k[3][5].x, k[3][5].y),
        vec4(ua[4].z, ua[4].w, k[4][5].x, k[4][5].y), vec4(ua[5].z, ua[5].w, k[5][5].x, k[5][5].y));
    let bottom = array<vec4<f32>, 6>(
        vec4(k[0][0].z, k[0][0].w, db[0].x, db[0].y), vec4(k[1][0].z, k[1][0].w, db[1].x, db[1].y),
        vec4(k[2][0].z, k[2][0].w, db[2].x, db[2].y), vec4(k[3][0].z, k[3][0].w, db[3].x, db[3].y),
        vec4(k[4][0].z, k[4][0].w, db[4].x, db[4].y), vec4(k[5][0].z, k[5][0].w, db[5].x, db[5].y));
    let r = wino_adj_block(k, top, bottom);
    // Tiles x = 1 take column 5 of their left neighbour, tiles x = 0 column 0 of their right.
    let q = a.t.base4 + a.t.ty * 4u * 2u;
    wino_adj_store2(q, r[0], vec4(0.0, r[0][5].x, 0.0, r[0][5].z), vec4(r[0][0].y, 0.0, r[0][0].w, 0.0));
    wino_adj_store2(q + 2u, r[1], vec4(0.0, r[1][5].x, 0.0, r[1][5].z), vec4(r[1][0].y, 0.0, r[1][0].w, 0.0));
    wino_adj_store2(q + 4u, r[2], vec4(0.0, r[2][5].x, 0.0, r[2][5].z), vec4(r[2][0].y, 0.0, r[2][0].w, 0.0));
    wino_adj_store2(q + 6u, r[3], vec4(0.0, r[3][5].x, 0.0, r[3][5].z), vec4(r[3][0].y, 0.0, r[3][0].w, 0.0));
}

// wino_adj_store for a 2×2 block of tiles in an image two vec4s wide, into g_o2v: block row r
// of the upper pair at q, q + 1, of the lower pair four image rows (8 vec4s) further.
fn wino_adj_store2(q: u32, r: array<vec4<f32>, 6>, left: vec4<f32>, right: vec4<f32>) {
    let z = wino_badj4(r);
    g_o2v[q] = st4(vec4(z[1].x + left.x, z[2].x, z[3].x, z[4].x + right.x));
    g_o2v[q + 1u] = st4(vec4(z[1].y + left.y, z[2].y, z[3].y, z[4].y + right.y));
    g_o2v[q + 8u] = st4(vec4(z[1].z + left.z, z[2].z, z[3].z, z[4].z + right.z));
    g_o2v[q + 9u] = st4(vec4(z[1].w + left.w, z[2].w, z[3].w, z[4].w + right.w));
}

// Output row r of tile t (y: Aᵀ M A's row plus the biases): the residual added, stored as a
// vec4 unless the row lies past the image.
fn wino_out_row(t: WTile, r: u32, y: vec4<f32>) {
    if (t.ty * 4u + r >= wq.h) {
        return;
    }
    let w4 = wq.w / 4u;
    let o = t.base4 + (t.ty * 4u + r) * w4 + t.tx;
    if (wq.has_residual != 0u) {
        g_o3v[o] = st4(wq.res_scale * (y + ld4(g_r4[o])));
    } else {
        g_o3v[o] = st4(y);
    }
}

// wino_output with each output row stored as one vec4 (W % 4 == 0), still one tile per
// invocation: four tiles per invocation (vec4 loads of M) hold 4·24 intermediates at once, and
// that variant measured 1.2-1.3x slower than the scalar kernel in training steps (spills); two
// tiles per invocation (vec2 loads of M) 1.1-1.3x slower than this one in sampling runs.
// g_a = M, g_b = bias, g_o3v = y, g_r4 = residual, g_ib = image bias.
@compute @workgroup_size(256)
fn wino_output_v(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    let tiles = wq.th * wq.tw;
    if (i >= wq.cout * wq.nb * tiles) {
        return;
    }
    let c = wino_tile(i, tiles);
    let co = c.x;
    let plane = wq.cout * wq.cols;
    let src = co * wq.cols + c.y * tiles + c.z * wq.tw + c.w;
    let y = wino_out_rows(src, plane, co, c.y);
    let t = WTile(((wq.n0 + c.y) * wq.cout + co) * (wq.h * wq.w / 4u), c.z, c.w, c.y, true);
    wino_out_row(t, 0u, y[0]);
    wino_out_row(t, 1u, y[1]);
    wino_out_row(t, 2u, y[2]);
    wino_out_row(t, 3u, y[3]);
}

// Tile pair i of the two-tile transforms (tw even): its channel (Cout or more past the last
// pair), image, tile row and column of its first tile, the image plane's base in vec4s, and
// the first tile's column in M (even: cols, a multiple of 4, tiles and tx are).
struct WPair {
    co: u32,
    b: u32,
    ty: u32,
    tx: u32,
    base4: u32,
    col: u32,
}

fn wino_pair(i: u32) -> WPair {
    let tiles = wq.th * wq.tw;
    let per_channel = wq.nb * tiles / 2u;
    let co = i / per_channel;
    let rest = i - co * per_channel;
    let b = rest / (tiles / 2u);
    let t = 2u * (rest - b * (tiles / 2u));
    let ty = t / wq.tw;
    return WPair(co, b, ty, t - ty * wq.tw, ((wq.n0 + b) * wq.cout + co) * (wq.h * wq.w / 4u),
                 co * wq.cols + b * tiles + t);
}

// M read two tiles at a time: a W2 holds the products of tiles t and t + 1 at one point.
@group(0) @binding(1) var<storage, read> g_m2: array<W2>;

// Column k of Aᵀ m for the tile pair at column 2·src2 of M (see wino_mcol), tile t then t + 1.
fn wino_mcol2(src2: u32, plane2: u32, k: u32) -> array<vec4<f32>, 2> {
    let z0 = ld2(g_m2[k * plane2 + src2]);
    let z1 = ld2(g_m2[(6u + k) * plane2 + src2]);
    let z2 = ld2(g_m2[(12u + k) * plane2 + src2]);
    let z3 = ld2(g_m2[(18u + k) * plane2 + src2]);
    let z4 = ld2(g_m2[(24u + k) * plane2 + src2]);
    let z5 = ld2(g_m2[(30u + k) * plane2 + src2]);
    return array<vec4<f32>, 2>(wino_at(array<f32, 6>(z0.x, z1.x, z2.x, z3.x, z4.x, z5.x)),
                               wino_at(array<f32, 6>(z0.y, z1.y, z2.y, z3.y, z4.y, z5.y)));
}

// Output row r of a tile from its 6 columns of Aᵀ m, plus the bias.
fn wino_row_of(t0: vec4<f32>, t1: vec4<f32>, t2: vec4<f32>, t3: vec4<f32>, t4: vec4<f32>,
               t5: vec4<f32>, r: u32, bv: vec4<f32>) -> vec4<f32> {
    return wino_at(array<f32, 6>(t0[r], t1[r], t2[r], t3[r], t4[r], t5[r])) + bv;
}

// wino_output_v for two horizontally adjacent tiles per invocation (tw even), M read as W2:
// with wide loads (a W2 is one u64) that is half the load components of wino_output_v for
// 2·24 intermediates instead of 24. Used only with wide loads: as vec2<f32> loads (the same
// components as two scalar ones) two tiles per invocation measured 1.1-1.3x slower.
@compute @workgroup_size(256)
fn wino_output_v2(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let c = wino_pair(col_index(wg, nwg, lid));
    if (c.co >= wq.cout) {
        return;
    }
    let plane = wq.cout * wq.cols;
    let m0 = wino_mcol2(c.col / 2u, plane / 2u, 0u);
    let m1 = wino_mcol2(c.col / 2u, plane / 2u, 1u);
    let m2 = wino_mcol2(c.col / 2u, plane / 2u, 2u);
    let m3 = wino_mcol2(c.col / 2u, plane / 2u, 3u);
    let m4 = wino_mcol2(c.col / 2u, plane / 2u, 4u);
    let m5 = wino_mcol2(c.col / 2u, plane / 2u, 5u);
    let bv = vec4(wino_bias(c.co, c.b));
    let ta = WTile(c.base4, c.ty, c.tx, c.b, true);
    wino_out_row(ta, 0u, wino_row_of(m0[0], m1[0], m2[0], m3[0], m4[0], m5[0], 0u, bv));
    wino_out_row(ta, 1u, wino_row_of(m0[0], m1[0], m2[0], m3[0], m4[0], m5[0], 1u, bv));
    wino_out_row(ta, 2u, wino_row_of(m0[0], m1[0], m2[0], m3[0], m4[0], m5[0], 2u, bv));
    wino_out_row(ta, 3u, wino_row_of(m0[0], m1[0], m2[0], m3[0], m4[0], m5[0], 3u, bv));
    let tb = WTile(c.base4, c.ty, c.tx + 1u, c.b, true);
    wino_out_row(tb, 0u, wino_row_of(m0[1], m1[1], m2[1], m3[1], m4[1], m5[1], 0u, bv));
    wino_out_row(tb, 1u, wino_row_of(m0[1], m1[1], m2[1], m3[1], m4[1], m5[1], 1u, bv));
    wino_out_row(tb, 2u, wino_row_of(m0[1], m1[1], m2[1], m3[1], m4[1], m5[1], 2u, bv));
    wino_out_row(tb, 3u, wino_row_of(m0[1], m1[1], m2[1], m3[1], m4[1], m5[1], 3u, bv));
}

// dM = A e Aᵀ of tile t's 4×4 output grad e (0 past the image), row-major 6×6.
fn wino_dy_tile(t: WTile) -> array<f32, 36> {
    let w4 = wq.w / 4u;
    let q = t.base4 + t.ty * 4u * w4 + t.tx;
    let ok0 = t.live;
    let ok1 = t.live && t.ty * 4u + 1u < wq.h;
    let ok2 = t.live && t.ty * 4u + 2u < wq.h;
    let ok3 = t.live && t.ty * 4u + 3u < wq.h;
    let e0 = select(vec4(0.0), ld4(g_a4[select(t.base4, q, ok0)]), ok0);
    let e1 = select(vec4(0.0), ld4(g_a4[select(t.base4, q + w4, ok1)]), ok1);
    let e2 = select(vec4(0.0), ld4(g_a4[select(t.base4, q + 2u * w4, ok2)]), ok2);
    let e3 = select(vec4(0.0), ld4(g_a4[select(t.base4, q + 3u * w4, ok3)]), ok3);
    return wino_dm(e0, e1, e2, e3);
}

// wino_dy reading each row of the output-grad tile as one vec4 (W % 4 == 0), one tile per
// invocation: four tiles per invocation (vec4 stores of dM) measured 1.25-1.3x slower than the
// scalar kernel in training steps. g_a4 = dy, g_o2 = dM.
@compute @workgroup_size(256)
fn wino_dy_v(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    let tiles = wq.th * wq.tw;
    if (i >= wq.cout * wq.nb * tiles) {
        return;
    }
    let c = wino_tile(i, tiles);
    let d = wino_dy_tile(WTile(((wq.n0 + c.y) * wq.cout + c.x) * (wq.h * wq.w / 4u), c.z, c.w, c.y,
                               true));
    let plane = wq.cout * wq.cols;
    let o = c.x * wq.cols + c.y * tiles + c.z * wq.tw + c.w;
    wino_store_dm(o, plane, 0u, d);
    wino_store_dm(o, plane, 6u, d);
    wino_store_dm(o, plane, 12u, d);
    wino_store_dm(o, plane, 18u, d);
    wino_store_dm(o, plane, 24u, d);
    wino_store_dm(o, plane, 30u, d);
}

// dM written two tiles at a time: a W2 holds the points of tiles t and t + 1.
@group(0) @binding(2) var<storage, read_write> g_o2w: array<W2>;

// dM[ξ] for the 6 points ξ = k..k+5 of two tiles (da: tile t, db: tile t + 1).
fn wino_store_dm2(o2: u32, plane2: u32, k: u32, da: array<f32, 36>, db: array<f32, 36>) {
    g_o2w[(k + 0u) * plane2 + o2] = st2(vec2(da[k + 0u], db[k + 0u]));
    g_o2w[(k + 1u) * plane2 + o2] = st2(vec2(da[k + 1u], db[k + 1u]));
    g_o2w[(k + 2u) * plane2 + o2] = st2(vec2(da[k + 2u], db[k + 2u]));
    g_o2w[(k + 3u) * plane2 + o2] = st2(vec2(da[k + 3u], db[k + 3u]));
    g_o2w[(k + 4u) * plane2 + o2] = st2(vec2(da[k + 4u], db[k + 4u]));
    g_o2w[(k + 5u) * plane2 + o2] = st2(vec2(da[k + 5u], db[k + 5u]));
}

// wino_dy_v for two horizontally adjacent tiles per invocation (tw even), dM stored as W2 (one
// u64 per point and tile pair where wide loads are on, half the store components). Same
// tile pairs as wino_output_v2 (wino_pair).
@compute @workgroup_size(256)
fn wino_dy_v2(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let c = wino_pair(col_index(wg, nwg, lid));
    if (c.co >= wq.cout) {
        return;
    }
    let da = wino_dy_tile(WTile(c.base4, c.ty, c.tx, c.b, true));
    let db = wino_dy_tile(WTile(c.base4, c.ty, c.tx + 1u, c.b, true));
    let plane2 = wq.cout * wq.cols / 2u;
    let o2 = c.col / 2u;
    wino_store_dm2(o2, plane2, 0u, da, db);
    wino_store_dm2(o2, plane2, 6u, da, db);
    wino_store_dm2(o2, plane2, 12u, da, db);
    wino_store_dm2(o2, plane2, 18u, da, db);
    wino_store_dm2(o2, plane2, 24u, da, db);
    wino_store_dm2(o2, plane2, 30u, da, db);
}

// im2col for Wo % 4 == 0: the same rows, each written as vec4s (g_o2v), 4 gathered loads per
// store.
@compute @workgroup_size(256)
fn im2col4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = col_index(wg, nwg, lid);
    if (i >= cp.nb * cp.kp * cp.ho) {
        return;
    }
    let row = i / cp.ho;
    let oh = i % cp.ho;
    let b = row / cp.kp;
    let kk = row % cp.kp;
    let wo4 = cp.wo / 4u;
    let dst = (row * cp.ho + oh) * wo4;
    if (kk >= cp.k) {
        let v = vec4(select(0.0, 1.0, kk == cp.k));
        for (var q = 0u; q < wo4; q++) {
            g_o2v[dst + q] = st4(v);
        }
        return;
    }
    let taps = cp.kh * cp.kw;
    let ci = kk / taps;
    let r = (kk % taps) / cp.kw;
    let s = kk % cp.kw;
    let ih = oh * cp.stride + r;
    let row_ok = ih >= cp.pad_top && ih < cp.pad_top + cp.h;
    let src_row = (((cp.n0 + b) * cp.cin + ci) * cp.h + select(0u, ih - cp.pad_top, row_ok)) * cp.w;
    var iw = s;
    let st = cp.stride;
    for (var q = 0u; q < wo4; q++) {
        g_o2v[dst + q] = st4(vec4(im2col_at(src_row, iw, row_ok), im2col_at(src_row, iw + st, row_ok),
                              im2col_at(src_row, iw + 2u * st, row_ok),
                              im2col_at(src_row, iw + 3u * st, row_ok)));
        iw += 4u * st;
    }
}

// x at padded column iw of the image row starting at src_row (0 in the padding).
fn im2col_at(src_row: u32, iw: u32, row_ok: bool) -> f32 {
    let inside = row_ok && iw >= cp.pad_left && iw < cp.pad_left + cp.w;
    return select(0.0, g_a[src_row + select(0u, iw - cp.pad_left, inside)], inside);
}
