// The learned-variance bound term and its gradient vs the f64 reference, and the reference's
// gradient vs finite differences.
use crate::common::{assert_close, ctx, rand_vec, to_f64};
use ddpm_wgpu::diffusion::{BetaSchedule, Prediction, Schedule};
use ddpm_wgpu::ops::vlb;
use ddpm_wgpu::reference::vlb as rf;
use ddpm_wgpu::Error;

/// Inputs for `b` samples of `d` elements at timesteps `ts` (cycled): x0 on the 8-bit grid with
/// exact ±1 pixels, x_t from noise, the model output near the truth.
#[allow(clippy::type_complexity)]
fn case(
    b: usize,
    d: usize,
    ts: &[usize],
    seed: u64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<[f64; 8]>, Vec<f64>, Vec<f64>) {
    let s = Schedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap();
    let r = to_f64(&rand_vec(b * d * 4, seed));
    let mut x0 = Vec::new();
    let mut xt = Vec::new();
    let mut out = vec![0.0; b * 2 * d];
    let mut coefs = Vec::new();
    for i in 0..b {
        let t = ts[i % ts.len()];
        coefs.push(vlb::vlb_coefs(&s, Prediction::Epsilon, t));
        let ab = s.alphas_cumprod[t];
        for j in 0..d {
            let k = i * d + j;
            let px = match j % 5 {
                0 => -1.0,
                1 => 1.0,
                _ => ((r[k] + 1.0) * 127.5).round() / 127.5 - 1.0,
            };
            let eps = r[b * d + k] * 1.7;
            x0.push(px);
            xt.push(ab.sqrt() * px + (1.0 - ab).sqrt() * eps);
            out[i * 2 * d + j] = eps + 0.3 * r[2 * b * d + k];
            out[i * 2 * d + d + j] = 1.1 * r[3 * b * d + k];
        }
    }
    let weights: Vec<f64> = (0..b).map(|i| 0.5 + 0.25 * i as f64).collect();
    let gin: Vec<f64> = (0..b * d).map(|k| 0.01 * r[k]).collect();
    (out, x0, xt, coefs, weights, gin)
}

#[test]
fn vlb_reference_gradient_matches_finite_differences() {
    for grad_mean in [false, true] {
        let (out, x0, xt, coefs, w, gin) = case(4, 7, &[0, 1, 30, 999], 3);
        let (_, g) = rf::vlb_terms(&out, &x0, &xt, &coefs, &w, &gin, grad_mean);
        let objective = |o: &[f64]| {
            let (vb, _) = rf::vlb_terms(o, &x0, &xt, &coefs, &w, &gin, grad_mean);
            vb.iter().zip(&w).map(|(v, w)| v * w).sum::<f64>()
        };
        let mut o = out.clone();
        let d = 7;
        for k in 0..out.len() {
            let is_mean = (k % (2 * d)) < d;
            let h = 1e-6;
            o[k] = out[k] + h;
            let hi = objective(&o);
            o[k] = out[k] - h;
            let lo = objective(&o);
            o[k] = out[k];
            let num = (hi - lo) / (2.0 * h);
            // the ε half carries gin (not part of the objective) and, without grad_mean, nothing else
            let want = if is_mean {
                let s = k / (2 * d);
                gin[s * d + k % (2 * d)] + if grad_mean { num } else { 0.0 }
            } else {
                num
            };
            assert!(
                (g[k] - want).abs() <= 1e-7 * (1.0 + want.abs()),
                "grad_mean {grad_mean} [{k}]: analytic {} vs {want}",
                g[k]
            );
        }
    }
}

#[test]
fn vlb_gpu_matches_reference_on_awkward_shapes() {
    let ctx = ctx();
    // (B, C, H, W): one element, odd sizes, more elements than a workgroup, many samples
    for (i, &(b, c, h, w)) in [(1, 1, 1, 1), (3, 2, 3, 5), (2, 3, 9, 7), (70, 1, 2, 3)]
        .iter()
        .enumerate()
    {
        let d = c * h * w;
        let (out, x0, xt, coefs, wts, gin) = case(b, d, &[0, 1, 17, 500, 999], 10 + i as u64);
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let t_out = ctx.upload(&[b, 2 * c, h, w], &f(&out)).unwrap();
        let t_x0 = ctx.upload(&[b, c, h, w], &f(&x0)).unwrap();
        let t_xt = ctx.upload(&[b, c, h, w], &f(&xt)).unwrap();
        let flat: Vec<f64> = coefs.iter().flatten().copied().collect();
        let t_coefs = ctx.upload(&[b, 8], &f(&flat)).unwrap();
        let t_w = ctx.upload(&[b], &f(&wts)).unwrap();
        let t_gin = ctx.upload(&[b, c, h, w], &f(&gin)).unwrap();
        for grad_mean in [false, true] {
            let (vb, dout) = vlb::vlb_terms(ctx, &t_out, &t_x0, &t_xt, &t_coefs, &t_w, &t_gin, grad_mean).unwrap();
            // the reference sees the f32-rounded inputs the GPU sees
            let r = |v: &[f64]| to_f64(&f(v));
            let c32: Vec<[f64; 8]> = coefs.iter().map(|c| c.map(|v| v as f32 as f64)).collect();
            let (want_vb, want_d) = rf::vlb_terms(&r(&out), &r(&x0), &r(&xt), &c32, &r(&wts), &r(&gin), grad_mean);
            // f32 exp/log/tanh of O(1)–O(10) arguments, sums over ≤ 189 elements
            assert_close(
                &format!("vb {b}x{c}x{h}x{w}"),
                &ctx.read(&vb).unwrap(),
                &want_vb,
                1e-4,
                1e-4,
            );
            assert_close(
                &format!("dout {b}x{c}x{h}x{w} grad_mean {grad_mean}"),
                &ctx.read(&dout).unwrap(),
                &want_d,
                1e-5,
                2e-3,
            );
        }
    }
}

#[test]
fn vlb_shape_errors() {
    let ctx = ctx();
    let z = |s: &[usize]| ctx.zeros(s, "z").unwrap();
    let (o, x, cf, w) = (z(&[2, 3, 2, 2]), z(&[2, 1, 2, 2]), z(&[2, 8]), z(&[2]));
    let err = vlb::vlb_terms(ctx, &o, &x, &x, &cf, &w, &x, false).err().unwrap();
    assert!(
        matches!(err, Error::Shape { .. }) && err.to_string().contains("2·C"),
        "{err}"
    );
    let o = z(&[2, 2, 2, 2]);
    assert!(vlb::vlb_terms(ctx, &o, &x, &x, &z(&[2, 7]), &w, &x, false).is_err());
    assert!(vlb::vlb_terms(ctx, &o, &x, &x, &cf, &z(&[3]), &x, false).is_err());
    assert!(vlb::vlb_terms(ctx, &o, &z(&[2, 1, 2, 3]), &x, &cf, &w, &x, false).is_err());
}
