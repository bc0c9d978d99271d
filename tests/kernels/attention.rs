// GPU attention kernels vs the CPU reference, and a finite-difference check of the reference
// backward.
use crate::common::{assert_close, ctx, rand_vec, to_f64};
use ddpm_wgpu::{ops::attention as at, reference::attention as rf, Context, Error};

/// The kernels that can run a problem of this size here: flash attention always, the GEMM
/// path where it applies.
fn kernels(ctx: &Context, b: usize, t: usize, c: usize, heads: usize) -> Vec<at::Kernel> {
    [at::Kernel::Flash, at::Kernel::Gemm]
        .into_iter()
        .filter(|&k| at::supports(ctx, k, b, t, c, heads))
        .collect()
}

/// Whether this adapter runs the GEMM kernel at all (lavapipe does): then the tests must have
/// run it.
fn gemm_expected(ctx: &Context) -> bool {
    at::supports(ctx, at::Kernel::Gemm, 1, 64, 64, 1)
}

/// (B, T, heads, d, input scale): T = 1, primes, one full and several partial workgroups
/// (64 rows) and key tiles, d not divisible by 4, one and several heads, batch 1 and 3. The
/// larger scale gives peaked softmaxes (scores up to ~±20) that exercise the running max.
/// The one-head shapes with T and d multiples of 4 also run the GEMM kernel (lavapipe): one
/// and several GEMM tiles (32 rows, 32 columns) and a partial one.
const SHAPES: &[(usize, usize, usize, usize, f32)] = &[
    (3, 12, 1, 8, 3.0),
    (2, 36, 1, 20, 1.0),
    (1, 256, 1, 64, 2.0),
    (1, 1, 1, 5, 1.0),
    (3, 7, 2, 8, 1.0),
    (1, 17, 3, 16, 1.0),
    (3, 17, 3, 5, 3.0),
    (1, 64, 1, 64, 1.0),
    (2, 64, 2, 16, 3.0),
    (1, 130, 1, 24, 2.0),
    (1, 9, 1, 512, 1.0),
    (1, 9, 2, 100, 1.0),
];

fn inputs(b: usize, t: usize, c: usize, scale: f32, seed: u64) -> [Vec<f32>; 3] {
    let n = b * t * c;
    let s = |x: Vec<f32>| x.into_iter().map(|v| v * scale).collect::<Vec<_>>();
    [s(rand_vec(n, seed)), s(rand_vec(n, seed + 1)), rand_vec(n, seed + 2)]
}

#[test]
fn attention_forward_matches_reference() {
    let ctx = ctx();
    let mut gemm_runs = 0;
    for (i, &(b, t, heads, d, scale)) in SHAPES.iter().enumerate() {
        let c = heads * d;
        let [q, k, v] = inputs(b, t, c, scale, 10 * i as u64);
        let up = |x: &[f32]| ctx.upload(&[b, t, c], x).unwrap();
        let (want_o, want_lse) = rf::attention(&to_f64(&q), &to_f64(&k), &to_f64(&v), b, t, c, heads);
        for kernel in kernels(ctx, b, t, c, heads) {
            gemm_runs += (kernel == at::Kernel::Gemm) as usize;
            let (o, lse) = at::attention_with(ctx, kernel, &up(&q), &up(&k), &up(&v), heads).unwrap();
            let name = format!("{kernel:?} B={b} T={t} heads={heads} d={d}");
            // o is a convex combination of |v| < 1 values: f32 dot products of length d
            // (scores) and sums of T weights, each with relative error ~(d + T)·6e-8 ≤ 4e-5.
            assert_close(&format!("o {name}"), &ctx.read(&o).unwrap(), &want_o, 2e-5, 1e-4);
            // lse = m + ln l: absolute error of the scores (|score| ≤ ~20, d-term dot) + ln l.
            assert_close(&format!("lse {name}"), &ctx.read(&lse).unwrap(), &want_lse, 2e-5, 1e-5);
        }
    }
    assert!(
        !gemm_expected(ctx) || gemm_runs >= 3,
        "the GEMM kernel ran {gemm_runs} shapes"
    );
}

/// [B, R, S] → [B, S, R] per batch entry.
fn transpose(x: &[f32], b: usize, r: usize, s: usize) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for i in 0..b {
        for p in 0..r {
            for q in 0..s {
                y[(i * s + q) * r + p] = x[(i * r + p) * s + q];
            }
        }
    }
    y
}

#[test]
fn attention_channels_first_matches_reference() {
    let ctx = ctx();
    let mut runs = 0;
    for (i, &(b, t, heads, d, scale)) in SHAPES.iter().enumerate() {
        let c = heads * d;
        if at::kernel_for(ctx, b, t, c, heads) != at::Kernel::Gemm {
            continue;
        }
        runs += 1;
        let [q, k, v] = inputs(b, t, c, scale, 10 * i as u64 + 5);
        let (want_o, _) = rf::attention(&to_f64(&q), &to_f64(&k), &to_f64(&v), b, t, c, heads);
        // The same problem, channel-major: Qᵀ, Kᵀ, Vᵀ [B, C, T] in, Oᵀ out.
        let up = |x: &[f32]| ctx.upload(&[b, c, t], &transpose(x, b, t, c)).unwrap();
        let ot = at::attention_channels_first(ctx, &up(&q), &up(&k), &up(&v)).unwrap();
        assert_eq!(ot.shape(), &[b, c, t]);
        let o = transpose(&ctx.read(&ot).unwrap(), b, c, t);
        assert_close(&format!("channels-first o B={b} T={t} d={d}"), &o, &want_o, 2e-5, 1e-4);
    }
    assert!(
        !gemm_expected(ctx) || runs >= 3,
        "channels-first attention ran {runs} shapes"
    );
    // Where the GEMM kernel cannot run (T not a multiple of 4), a typed error.
    let x = ctx.zeros(&[1, 8, 6], "x").unwrap();
    let err = at::attention_channels_first(ctx, &x, &x, &x).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

#[test]
fn attention_backward_matches_reference() {
    let ctx = ctx();
    let mut gemm_runs = 0;
    for (i, &(b, t, heads, d, scale)) in SHAPES.iter().enumerate() {
        let c = heads * d;
        let [q, k, v] = inputs(b, t, c, scale, 10 * i as u64 + 3);
        let dout = rand_vec(b * t * c, 10 * i as u64 + 7);
        let up = |x: &[f32]| ctx.upload(&[b, t, c], x).unwrap();
        let (tq, tk, tv, tdout) = (up(&q), up(&k), up(&v), up(&dout));
        let (wq, wk, wv) =
            rf::attention_backward(&to_f64(&q), &to_f64(&k), &to_f64(&v), &to_f64(&dout), b, t, c, heads);
        // Every backward kernel after every forward kernel: both leave the same lse.
        for fwd in kernels(ctx, b, t, c, heads) {
            let (o, lse) = at::attention_with(ctx, fwd, &tq, &tk, &tv, heads).unwrap();
            for bwd in kernels(ctx, b, t, c, heads) {
                gemm_runs += (bwd == at::Kernel::Gemm) as usize;
                let (dq, dk, dv) =
                    at::attention_backward_with(ctx, bwd, &tq, &tk, &tv, &o, &lse, &tdout, heads).unwrap();
                let name = format!("{fwd:?}/{bwd:?} B={b} T={t} heads={heads} d={d}");
                // Sums of T terms P·(dP - delta)·k with dP a d-term dot of values < 1 and the
                // inputs scaled by up to 3: f32 error ~(d + T)·6e-8 relative to terms of size up
                // to ~3·d^0.5, plus the forward's o and lse errors propagated through delta, P.
                let tol = 5e-5 * (scale as f64) * (scale as f64);
                assert_close(&format!("dq {name}"), &ctx.read(&dq).unwrap(), &wq, tol, 1e-3);
                assert_close(&format!("dk {name}"), &ctx.read(&dk).unwrap(), &wk, tol, 1e-3);
                // dv = Pᵀ dout: sums of T products of probabilities with |dout| < 1.
                assert_close(&format!("dv {name}"), &ctx.read(&dv).unwrap(), &wv, 2e-5, 1e-4);
            }
        }
    }
    assert!(
        !gemm_expected(ctx) || gemm_runs >= 6,
        "the GEMM kernel ran {gemm_runs} backward passes"
    );
}

#[test]
fn attention_long_sequence() {
    // T = 1024 (a 32×32 feature map): 16 query workgroups, many key tiles; two heads (flash)
    // and one (the GEMM kernel where it runs, with 64 row tiles).
    long_sequence(2, 4);
    long_sequence(1, 8);
}

fn long_sequence(heads: usize, d: usize) {
    let ctx = ctx();
    let b = 1;
    let t = 1024;
    let c = heads * d;
    let [q, k, v] = inputs(b, t, c, 2.0, 99);
    let dout = rand_vec(b * t * c, 98);
    let up = |x: &[f32]| ctx.upload(&[b, t, c], x).unwrap();
    let (tq, tk, tv, tdout) = (up(&q), up(&k), up(&v), up(&dout));
    let (o, lse) = at::attention(ctx, &tq, &tk, &tv, heads).unwrap();
    let (want_o, want_lse) = rf::attention(&to_f64(&q), &to_f64(&k), &to_f64(&v), b, t, c, heads);
    // As in attention_forward_matches_reference, with T = 1024 terms per softmax sum.
    assert_close("o T=1024", &ctx.read(&o).unwrap(), &want_o, 2e-5, 1e-4);
    assert_close("lse T=1024", &ctx.read(&lse).unwrap(), &want_lse, 2e-5, 1e-5);
    let (dq, dk, dv) = at::attention_backward(ctx, &tq, &tk, &tv, &o, &lse, &tdout, heads).unwrap();
    let (wq, wk, wv) = rf::attention_backward(&to_f64(&q), &to_f64(&k), &to_f64(&v), &to_f64(&dout), b, t, c, heads);
    // Sums of 1024 terms of size ≤ ~4 with f32 rounding: ~1024·6e-8·4 ≈ 2.5e-4 worst case.
    assert_close("dq T=1024", &ctx.read(&dq).unwrap(), &wq, 2e-4, 1e-3);
    assert_close("dk T=1024", &ctx.read(&dk).unwrap(), &wk, 2e-4, 1e-3);
    assert_close("dv T=1024", &ctx.read(&dv).unwrap(), &wv, 2e-5, 1e-4);
}

#[test]
fn attention_reference_backward_matches_finite_differences() {
    let (b, t, heads, d) = (2, 5, 2, 3);
    let c = heads * d;
    let n = b * t * c;
    let q = to_f64(&rand_vec(n, 1));
    let k = to_f64(&rand_vec(n, 2));
    let v = to_f64(&rand_vec(n, 3));
    let r = to_f64(&rand_vec(n, 4));
    // L = Σ o·r, so dL/do = r.
    let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
        let (o, _) = rf::attention(q, k, v, b, t, c, heads);
        o.iter().zip(&r).map(|(a, b)| a * b).sum()
    };
    let (dq, dk, dv) = rf::attention_backward(&q, &k, &v, &r, b, t, c, heads);
    let eps = 1e-6;
    for (which, grad) in [(0, &dq), (1, &dk), (2, &dv)] {
        for i in 0..n {
            let mut args = [q.clone(), k.clone(), v.clone()];
            args[which][i] += eps;
            let up = loss(&args[0], &args[1], &args[2]);
            args[which][i] -= 2.0 * eps;
            let down = loss(&args[0], &args[1], &args[2]);
            let fd = (up - down) / (2.0 * eps);
            // Central differences: O(eps²) truncation plus ~1e-16/eps cancellation ≈ 1e-10.
            assert!(
                (fd - grad[i]).abs() < 1e-7,
                "input {which} [{i}]: analytic {} vs finite difference {fd}",
                grad[i]
            );
        }
    }
}

#[test]
fn attention_reference_lse_is_logsumexp() {
    // One query, two keys with scores 0 and ln(3)·... checked by hand: q = [1], k = [0, 2],
    // d = 1 so scores are 0 and 2; lse = ln(1 + e²), o = (v0 + e² v1) / (1 + e²).
    let (o, lse) = rf::attention(&[1.0, 1.0], &[0.0, 2.0], &[1.0, -1.0], 1, 2, 1, 1);
    let e2 = 2f64.exp();
    assert!((lse[0] - (1.0 + e2).ln()).abs() < 1e-12);
    assert!((o[0] - (1.0 - e2) / (1.0 + e2)).abs() < 1e-12);
}

#[test]
fn attention_shape_errors() {
    let ctx = ctx();
    let a = ctx.upload(&[1, 4, 6], &[0.0; 24]).unwrap();
    let b = ctx.upload(&[1, 6, 4], &[0.0; 24]).unwrap();
    let err = at::attention(ctx, &a, &b, &a, 1).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("[1, 4, 6]") && msg.contains("[1, 6, 4]"), "{msg}");
    // 4 heads do not divide 6 channels.
    let err = at::attention(ctx, &a, &a, &a, 4).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let flat = ctx.upload(&[24], &[0.0; 24]).unwrap();
    assert!(matches!(
        at::attention(ctx, &flat, &flat, &flat, 1).unwrap_err(),
        Error::Shape { .. }
    ));
    let (o, lse) = at::attention(ctx, &a, &a, &a, 2).unwrap();
    let bad_lse = ctx.upload(&[1, 1, 4], &[0.0; 4]).unwrap();
    assert!(matches!(
        at::attention_backward(ctx, &a, &a, &a, &o, &bad_lse, &a, 2).unwrap_err(),
        Error::Shape { .. }
    ));
    assert!(at::attention_backward(ctx, &a, &a, &a, &o, &lse, &a, 2).is_ok());
    // The GEMM kernel takes one head only, and says so.
    let err = at::attention_with(ctx, at::Kernel::Gemm, &a, &a, &a, 2).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("one head (got 2)"),
        "{err}"
    );
}
