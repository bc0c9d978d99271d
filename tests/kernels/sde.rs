// GPU score-SDE kernels (Heun's second stage, the Langevin corrector's per-item norms and
// update) vs the CPU reference, on awkward shapes and with learned-variance (2·C) outputs.
use crate::common::{assert_close, ctx, rand_vec, to_f64};
use ddpm_wgpu::{
    ops::sde::{self as ops, CorrectorCoefs, HeunCoefs},
    reference::{ddpm::split_channels, sde as rf},
};

/// (x shape, whether the model output has 2·C channels): batch 1, a single element, a per-item
/// size above one workgroup (256) and not a multiple of it, an odd batch.
fn shapes() -> Vec<(Vec<usize>, bool)> {
    vec![
        (vec![1, 1, 1, 1], false),
        (vec![3, 2, 5, 7], false),
        (vec![2, 3, 13, 11], true),
        (vec![5, 1, 17], false),
        (vec![1, 3, 16, 16], true),
    ]
}

fn out_shape(shape: &[usize], split: bool) -> Vec<usize> {
    let mut s = shape.to_vec();
    if split {
        s[1] *= 2;
    }
    s
}

/// The first C channels of a model output (what the kernels read).
fn first_half(m: &[f32], batch: usize, split: bool) -> Vec<f64> {
    if split {
        split_channels(&to_f64(m), batch).0
    } else {
        to_f64(m)
    }
}

#[test]
fn sde_heun_update_matches_reference() {
    let ctx = ctx();
    for (k, (shape, split)) in shapes().into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let ms = out_shape(&shape, split);
        let nm: usize = ms.iter().product();
        let (x, xt) = (rand_vec(n, 10 + k as u64), rand_vec(n, 20 + k as u64));
        let (m1, m2) = (rand_vec(nm, 30 + k as u64), rand_vec(nm, 40 + k as u64));
        let c = HeunCoefs {
            a_x: -0.3,
            a_m: -1.7,
            b_x: 0.2,
            b_m: -2.1,
            c_x: 1.05,
            c_s: 0.05,
            c_xt: 0.07,
            c_s2: 0.07,
        };
        let got = ops::heun_update(
            ctx,
            &ctx.upload(&shape, &x).unwrap(),
            &ctx.upload(&ms, &m1).unwrap(),
            &ctx.upload(&shape, &xt).unwrap(),
            &ctx.upload(&ms, &m2).unwrap(),
            &c,
        )
        .unwrap();
        let want = rf::heun_update(
            &to_f64(&x),
            &first_half(&m1, shape[0], split),
            &to_f64(&xt),
            &first_half(&m2, shape[0], split),
            [c.a_x, c.a_m, c.b_x, c.b_m, c.c_x, c.c_s, c.c_xt, c.c_s2].map(|v| v as f64),
        );
        // five products and a sum of terms ≤ ~3 in f32
        assert_close(
            &format!("heun_update {shape:?} split {split}"),
            &ctx.read(&got).unwrap(),
            &want,
            2e-6,
            1e-6,
        );
    }
}

#[test]
fn sde_langevin_corrector_matches_reference() {
    let ctx = ctx();
    for (k, (shape, split)) in shapes().into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let b = shape[0];
        let ms = out_shape(&shape, split);
        let nm: usize = ms.iter().product();
        let x = rand_vec(n, 50 + k as u64);
        let m = rand_vec(nm, 60 + k as u64);
        let z = rand_vec(n, 70 + k as u64);
        let (tx, tm, tz) = (
            ctx.upload(&shape, &x).unwrap(),
            ctx.upload(&ms, &m).unwrap(),
            ctx.upload(&shape, &z).unwrap(),
        );
        let c = CorrectorCoefs {
            a_x: -0.4,
            a_m: -3.0,
            two_alpha_r2: 2.0 * 0.99 * 0.16 * 0.16,
        };
        let norms = ops::score_norms(ctx, &tx, &tm, &tz, c.a_x, c.a_m).unwrap();
        assert_eq!(norms.shape(), &[b, 2]);
        let mh = first_half(&m, b, split);
        let want_norms = rf::score_norms(&to_f64(&x), &mh, &to_f64(&z), c.a_x as f64, c.a_m as f64, b);
        let got_norms = ctx.read(&norms).unwrap();
        // f32 sums of up to 507 squares in a tree: relative error ~ log2(n)·ulp
        assert_close(&format!("score_norms {shape:?}"), &got_norms, &want_norms, 1e-6, 2e-6);
        let out = ops::langevin_correct(ctx, &tx, &tm, &tz, &norms, &c).unwrap();
        let want = rf::langevin_correct(
            &to_f64(&x),
            &mh,
            &to_f64(&z),
            // the GPU's norms: the update is checked for its own inputs (the norms are above;
            // a one-element item with a tiny score makes the step ~1e3 and any norm error
            // visible)
            &to_f64(&got_norms),
            c.a_x as f64,
            c.a_m as f64,
            c.two_alpha_r2 as f64,
        );
        // f32 ratio, square root and three terms; the step term is ∝ Σz²·s/Σs², so where
        // s = a_x·x + a_m·m cancels (the one-element item: out ≈ −766) its f32 relative error
        // comes through whole
        assert_close(
            &format!("langevin_correct {shape:?} split {split}"),
            &ctx.read(&out).unwrap(),
            &want,
            3e-6,
            2e-5,
        );
        // the same reduction twice: the same bits (fixed-order tree)
        let again = ops::score_norms(ctx, &tx, &tm, &tz, c.a_x, c.a_m).unwrap();
        assert_eq!(ctx.read(&again).unwrap(), got_norms);
    }
}

#[test]
fn sde_corrector_with_zero_score_leaves_x_alone() {
    // Σs² = 0: the step is 0 (not NaN), so x comes back unchanged.
    let ctx = ctx();
    let shape = [2usize, 1, 3, 3];
    let x = rand_vec(18, 1);
    let tx = ctx.upload(&shape, &x).unwrap();
    let tm = ctx.upload(&shape, &rand_vec(18, 2)).unwrap();
    let tz = ctx.upload(&shape, &rand_vec(18, 3)).unwrap();
    let c = CorrectorCoefs {
        a_x: 0.0,
        a_m: 0.0,
        two_alpha_r2: 0.05,
    };
    let norms = ops::score_norms(ctx, &tx, &tm, &tz, 0.0, 0.0).unwrap();
    let out = ops::langevin_correct(ctx, &tx, &tm, &tz, &norms, &c).unwrap();
    assert_eq!(ctx.read(&out).unwrap(), x);
}

#[test]
fn sde_kernels_refuse_bad_shapes() {
    let ctx = ctx();
    let x = ctx.upload(&[2, 3, 4, 4], &[0.0; 96]).unwrap();
    let m_bad = ctx.upload(&[2, 4, 4, 4], &[0.0; 128]).unwrap();
    let z_bad = ctx.upload(&[2, 3, 4, 5], &[0.0; 120]).unwrap();
    let e = ops::score_norms(ctx, &x, &m_bad, &x, 1.0, 1.0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("score_norms") && e.contains("2·C"), "{e}");
    let e = ops::score_norms(ctx, &x, &x, &z_bad, 1.0, 1.0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("z") && e.contains("[2, 3, 4, 5]"), "{e}");
    let norms_bad = ctx.upload(&[3, 2], &[1.0; 6]).unwrap();
    let e = ops::langevin_correct(ctx, &x, &x, &x, &norms_bad, &CorrectorCoefs::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("norms"), "{e}");
    let m6 = ctx.upload(&[2, 6, 4, 4], &[0.0; 192]).unwrap();
    let e = ops::heun_update(ctx, &x, &m6, &x, &x, &HeunCoefs::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("m2"), "{e}");
}
