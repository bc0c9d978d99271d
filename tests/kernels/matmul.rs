// GPU matmul kernels vs the CPU reference.
use crate::common::{assert_close, ctx, rand_vec, to_f64};
use ddpm_wgpu::{
    ops::matmul::{self as mm, Kernel},
    reference::matmul as rf,
    Error,
};

/// f32 products summed over K terms of size <= 1: the error grows ~ sqrt(K)·ulp; this bound
/// leaves a wide margin for any summation order.
fn tol(k: usize) -> f64 {
    1e-6 * (k as f64 + 8.0)
}

/// Stored shapes of a and b for one (batched) product.
fn operand_shapes(batch: Option<usize>, m: usize, k: usize, n: usize, ta: bool, tb: bool) -> (Vec<usize>, Vec<usize>) {
    let a = if ta { vec![k, m] } else { vec![m, k] };
    let b = if tb { vec![n, k] } else { vec![k, n] };
    match batch {
        Some(bt) => ([vec![bt], a].concat(), [vec![bt], b].concat()),
        None => (a, b),
    }
}

/// Run `matmul` (or `gemm_with(kernel)`) on random data and compare with the reference.
fn check(kernel: Option<Kernel>, batch: Option<usize>, m: usize, k: usize, n: usize, ta: bool, tb: bool) {
    let ctx = ctx();
    let bt = batch.unwrap_or(1);
    let (sa, sb) = operand_shapes(batch, m, k, n, ta, tb);
    let seed = (m * 1000 + k * 10 + n) as u64;
    let a = rand_vec(bt * m * k, seed);
    let b = rand_vec(bt * k * n, seed + 1);
    let ga = ctx.upload(&sa, &a).unwrap();
    let gb = ctx.upload(&sb, &b).unwrap();
    let got = match kernel {
        None => mm::matmul(ctx, &ga, &gb, ta, tb).unwrap(),
        Some(kernel) => {
            let shape = match batch {
                Some(bt) => vec![bt, m, n],
                None => vec![m, n],
            };
            let out = ctx.empty(&shape, "test.out").unwrap();
            mm::gemm_with(ctx, kernel, &ga, &gb, &out, ta, tb, 1.0, 0.0).unwrap();
            out
        }
    };
    let want = rf::matmul(&to_f64(&a), &to_f64(&b), bt, m, k, n, ta, tb);
    assert_close(
        &format!("{kernel:?} batch {batch:?} {m}x{k}x{n} ta={ta} tb={tb}"),
        &ctx.read(&got).unwrap(),
        &want,
        tol(k),
        tol(k),
    );
}

const TRANS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

#[test]
fn matmul_awkward_shapes_all_transposes() {
    for (ta, tb) in TRANS {
        for (m, k, n) in [(1, 1, 1), (7, 13, 5), (65, 129, 33), (3, 64, 1), (1, 17, 70)] {
            check(None, None, m, k, n, ta, tb);
        }
    }
}

#[test]
fn matmul_batched_all_transposes() {
    for (ta, tb) in TRANS {
        check(None, Some(3), 9, 20, 12, ta, tb);
        check(None, Some(1), 5, 3, 7, ta, tb);
    }
}

/// Every kernel on shapes that are not multiples of its tiles (the subgroup kernel needs
/// K, N (and M with trans_a) multiples of 4, so these are).
#[test]
fn matmul_each_kernel_on_tile_edges() {
    let ctx = ctx();
    let kernels = [Kernel::Tiled, Kernel::Subgroup { wg: 8 }, Kernel::Subgroup { wg: 32 }];
    for kernel in kernels {
        for (ta, tb) in TRANS {
            // M <= 8 runs the subgroup kernel's 8-row tiles (SHORT): M = 4, 5 and 8.
            for (batch, m, k, n) in [
                (None, 36, 20, 44),
                (None, 4, 4, 4),
                (Some(2), 68, 132, 36),
                (None, 8, 12, 40),
                (Some(3), 5, 8, 68),
            ] {
                if mm::supports(ctx, kernel, m, k, n, ta) {
                    check(Some(kernel), batch, m, k, n, ta, tb);
                }
            }
        }
    }
    // Whatever the adapter, the tiled kernel must always have run.
    assert!(mm::supports(ctx, Kernel::Tiled, 7, 13, 5, true));
}

#[test]
fn matmul_more_than_65535_workgroups() {
    // 70,000 batches of one tile each: the launcher must spread them over a 2-D grid.
    check(None, Some(70_000), 1, 4, 4, false, false);
    check(Some(Kernel::Tiled), Some(70_000), 1, 1, 1, false, false);
}

#[test]
fn gemm_into_beta_zero_ignores_nan_and_beta_one_accumulates() {
    let ctx = ctx();
    let (m, k, n) = (19, 24, 28);
    let a = rand_vec(m * k, 1);
    let b = rand_vec(k * n, 2);
    let ga = ctx.upload(&[m, k], &a).unwrap();
    let gb = ctx.upload(&[k, n], &b).unwrap();
    let prod = rf::matmul(&to_f64(&a), &to_f64(&b), 1, m, k, n, false, false);
    let mut kernels = vec![None, Some(Kernel::Tiled)];
    if mm::supports(ctx, Kernel::Subgroup { wg: 32 }, m, k, n, false) {
        kernels.push(Some(Kernel::Subgroup { wg: 32 }));
    }
    for kernel in kernels {
        let run = |out: &ddpm_wgpu::Tensor, alpha: f32, beta: f32| match kernel {
            None => mm::gemm_into(ctx, &ga, &gb, out, false, false, alpha, beta).unwrap(),
            Some(kn) => mm::gemm_with(ctx, kn, &ga, &gb, out, false, false, alpha, beta).unwrap(),
        };
        let out = ctx.upload(&[m, n], &vec![f32::NAN; m * n]).unwrap();
        run(&out, 2.0, 0.0);
        let first = ctx.read(&out).unwrap();
        let want: Vec<f64> = prod.iter().map(|p| 2.0 * p).collect();
        // As `tol`, doubled by alpha = 2.
        assert_close(
            &format!("{kernel:?} beta=0 over NaN"),
            &first,
            &want,
            2.0 * tol(k),
            tol(k),
        );
        run(&out, -0.5, 1.0);
        let want: Vec<f64> = prod.iter().map(|p| 1.5 * p).collect();
        // Two GEMM roundings plus one for the accumulation.
        assert_close(
            &format!("{kernel:?} beta=1"),
            &ctx.read(&out).unwrap(),
            &want,
            3.0 * tol(k),
            tol(k),
        );
    }
}

#[test]
fn linear_with_and_without_bias() {
    let ctx = ctx();
    // The last three run the subgroup GEMM on 8-wide CPU adapters (K, N multiples of 4), which
    // adds the bias in its epilogue: partial row tiles, a partial second column tile (N = 44),
    // and several of each.
    for (m, k, n) in [(1, 1, 1), (5, 7, 3), (33, 16, 24), (70, 36, 44), (129, 64, 96)] {
        let x = rand_vec(m * k, 10);
        let w = rand_vec(n * k, 11);
        let bias = rand_vec(n, 12);
        let gx = ctx.upload(&[m, k], &x).unwrap();
        let gw = ctx.upload(&[n, k], &w).unwrap();
        let gbias = ctx.upload(&[n], &bias).unwrap();
        let (x64, w64, b64) = (to_f64(&x), to_f64(&w), to_f64(&bias));
        let got = ctx.read(&mm::linear(ctx, &gx, &gw, Some(&gbias)).unwrap()).unwrap();
        // GEMM rounding plus one rounding of the bias add.
        assert_close(
            &format!("linear+bias {m}x{k}x{n}"),
            &got,
            &rf::linear(&x64, &w64, Some(&b64), m, k, n),
            tol(k) + 1e-6,
            tol(k),
        );
        let got = ctx.read(&mm::linear(ctx, &gx, &gw, None).unwrap()).unwrap();
        // GEMM rounding only.
        assert_close(
            &format!("linear {m}x{k}x{n}"),
            &got,
            &rf::linear(&x64, &w64, None, m, k, n),
            tol(k),
            tol(k),
        );
    }
}

#[test]
fn linear_backward_matches_reference() {
    let ctx = ctx();
    for (m, k, n) in [(1, 1, 1), (6, 5, 7), (40, 12, 20)] {
        let x = rand_vec(m * k, 20);
        let w = rand_vec(n * k, 21);
        let dy = rand_vec(m * n, 22);
        let gx = ctx.upload(&[m, k], &x).unwrap();
        let gw = ctx.upload(&[n, k], &w).unwrap();
        let gdy = ctx.upload(&[m, n], &dy).unwrap();
        let (dx, dw, db) = rf::linear_backward(&to_f64(&x), &to_f64(&w), &to_f64(&dy), m, k, n);
        for need_dx in [true, false] {
            let (gdx, gdw, gdb) = mm::linear_backward(ctx, &gx, &gw, &gdy, need_dx).unwrap();
            assert_eq!(gdx.is_some(), need_dx);
            // Sums over N (dx), M (dw, db) terms of size <= 1.
            if let Some(gdx) = gdx {
                assert_close("dx", &ctx.read(&gdx).unwrap(), &dx, tol(n), tol(n));
            }
            assert_close("dw", &ctx.read(&gdw).unwrap(), &dw, tol(m), tol(m));
            assert_close("db", &ctx.read(&gdb).unwrap(), &db, tol(m), tol(m));
        }
    }
}

#[test]
fn sum_rows_awkward_shapes() {
    let ctx = ctx();
    // The last three have N % 4 == 0 (the vec4 kernel on CPU adapters): one row, more columns
    // than one workgroup of 64 invocations covers (4·64), and over 16,384 rows (the other kernel).
    for (m, n) in [(1, 1), (300, 7), (5, 131), (1, 65), (1, 8), (37, 260), (16_385, 4)] {
        let x = rand_vec(m * n, (m + n) as u64);
        let got = mm::sum_rows(ctx, &ctx.upload(&[m, n], &x).unwrap()).unwrap();
        // A sum of M values of size <= 1.
        assert_close(
            &format!("sum_rows {m}x{n}"),
            &ctx.read(&got).unwrap(),
            &rf::sum_rows(&to_f64(&x), m, n),
            tol(m),
            tol(m),
        );
    }
}

#[test]
fn linear_backward_reference_matches_finite_differences() {
    let (m, k, n) = (3, 4, 2);
    let x = to_f64(&rand_vec(m * k, 30));
    let w = to_f64(&rand_vec(n * k, 31));
    let bias = to_f64(&rand_vec(n, 32));
    let r = to_f64(&rand_vec(m * n, 33));
    // L = Σ linear(x, w, bias) · r, so dL/dy = r.
    let loss = |x: &[f64], w: &[f64], bias: &[f64]| -> f64 {
        rf::linear(x, w, Some(bias), m, k, n)
            .iter()
            .zip(&r)
            .map(|(y, r)| y * r)
            .sum()
    };
    let (dx, dw, db) = rf::linear_backward(&x, &w, &r, m, k, n);
    let eps = 1e-6;
    let numeric = |which: usize, i: usize| -> f64 {
        let mut args = [x.clone(), w.clone(), bias.clone()];
        args[which][i] += eps;
        let up = loss(&args[0], &args[1], &args[2]);
        args[which][i] -= 2.0 * eps;
        let down = loss(&args[0], &args[1], &args[2]);
        (up - down) / (2.0 * eps)
    };
    for (which, grad) in [(0, &dx), (1, &dw), (2, &db)] {
        for (i, &g) in grad.iter().enumerate() {
            let num = numeric(which, i);
            // L is bilinear, so central differences are exact up to f64 cancellation (~1e-10).
            assert!(
                (num - g).abs() < 1e-7,
                "arg {which} [{i}]: analytic {g} vs numeric {num}"
            );
        }
    }
}

#[test]
fn shape_errors_are_typed() {
    let ctx = ctx();
    let a = ctx.upload(&[2, 3], &[0.0; 6]).unwrap();
    let b = ctx.upload(&[4, 5], &[0.0; 20]).unwrap();
    let err = mm::matmul(ctx, &a, &b, false, false).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("[2, 3]") && msg.contains("[4, 5]"), "{msg}");
    // Batch mismatch.
    let a3 = ctx.upload(&[2, 2, 3], &[0.0; 12]).unwrap();
    let b3 = ctx.upload(&[3, 3, 2], &[0.0; 18]).unwrap();
    assert!(matches!(
        mm::matmul(ctx, &a3, &b3, false, false),
        Err(Error::Shape { .. })
    ));
    // Wrong output shape for gemm_into, wrong bias for linear, wrong dy for linear_backward.
    let a = ctx.upload(&[2, 3], &[0.0; 6]).unwrap();
    let b = ctx.upload(&[3, 4], &[0.0; 12]).unwrap();
    let out = ctx.upload(&[4, 2], &[0.0; 8]).unwrap();
    assert!(matches!(
        mm::gemm_into(ctx, &a, &b, &out, false, false, 1.0, 0.0),
        Err(Error::Shape { .. })
    ));
    let w = ctx.upload(&[4, 3], &[0.0; 12]).unwrap();
    let bias = ctx.upload(&[3], &[0.0; 3]).unwrap();
    assert!(matches!(mm::linear(ctx, &a, &w, Some(&bias)), Err(Error::Shape { .. })));
    let dy = ctx.upload(&[2, 3], &[0.0; 6]).unwrap();
    assert!(matches!(
        mm::linear_backward(ctx, &a, &w, &dy, true),
        Err(Error::Shape { .. })
    ));
}

/// `DDPM_PROFILE=shapes` (here `enable_profile(true)`): each product is listed under its problem
/// size with the FLOPs it did, other kernels under their name with none; a take empties it.
#[test]
fn profile_by_shape_counts_flops() {
    let mut ctx = ddpm_wgpu::Context::new().unwrap();
    ctx.enable_profile(true);
    let a = ctx.upload(&[2, 12, 8], &rand_vec(2 * 12 * 8, 1)).unwrap();
    let b = ctx.upload(&[2, 12, 16], &rand_vec(2 * 12 * 16, 2)).unwrap();
    for _ in 0..3 {
        mm::matmul(&ctx, &a, &b, true, false).unwrap();
    }
    let c = mm::matmul(&ctx, &b, &a, true, false).unwrap();
    ddpm_wgpu::ops::elementwise::scale(&ctx, &c, 2.0).unwrap();
    let prof = ctx.take_profile();
    let find = |name: &str| {
        prof.iter()
            .find(|p| p.name.ends_with(name))
            .unwrap_or_else(|| panic!("no {name} in {prof:?}"))
    };
    let ab = find("[2×] 8×12ᵀ · 12×16");
    assert_eq!((ab.calls, ab.flops), (3, 3.0 * 2.0 * 2.0 * 8.0 * 12.0 * 16.0));
    assert!(ab.secs > 0.0 && ab.gflops().unwrap() > 0.0);
    assert_eq!(find("[2×] 16×12ᵀ · 12×8").calls, 1);
    let other: Vec<_> = prof.iter().filter(|p| !p.name.contains('×')).collect();
    assert!(!other.is_empty() && other.iter().all(|p| p.flops == 0.0 && p.gflops().is_none()));
    assert_eq!(prof.iter().map(|p| p.calls).sum::<u64>(), 5);
    assert!(ctx.take_profile().is_empty());
}
