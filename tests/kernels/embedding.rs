// GPU embedding kernels vs the CPU reference.
use crate::common::{assert_close, ctx, rand_vec, to_f64};
use ddpm_wgpu::{ops::embedding as em, reference::embedding as rf, Error};

#[test]
fn embedding_timestep_matches_reference() {
    let ctx = ctx();
    let t = [0.0f32, 0.5, 1.0, 17.0, 250.0, 999.0, 1000.0];
    let tt = ctx.upload(&[t.len()], &t).unwrap();
    // (dim, flip, shift, max_period): DDPM's (flip, shift 1), odd dims (zero pad), dim 1 (pad
    // only), dim 2, and another period.
    let cases = [
        (128, true, 1.0, 10_000.0),
        (128, false, 0.0, 10_000.0),
        (33, true, 1.0, 10_000.0),
        (1, false, 0.0, 10_000.0),
        (2, false, 0.0, 10_000.0),
        (64, false, 0.5, 100.0),
    ];
    for (dim, flip, shift, period) in cases {
        let got = ctx
            .read(&em::timestep_embedding(ctx, &tt, dim, flip, shift, period).unwrap())
            .unwrap();
        let want = rf::timestep_embedding(&to_f64(&t), dim, flip, shift as f64, period as f64);
        assert_eq!(got.len(), t.len() * dim);
        for (b, &tb) in t.iter().enumerate() {
            // f32 like diffusers: exponent, exp and t·freq each round (relative ~1e-6 of an
            // argument up to t), so the error grows with t.
            let tol = 2e-6 * (1.0 + tb as f64);
            let row = b * dim..(b + 1) * dim;
            assert_close(
                &format!("dim={dim} flip={flip} shift={shift} t={tb}"),
                &got[row.clone()],
                &want[row],
                tol,
                0.0,
            );
        }
    }
}

#[test]
fn embedding_timestep_large_batch_uses_the_2d_grid() {
    let ctx = ctx();
    // 70,001 · 256 outputs = 70,001 workgroups (> 65,535)
    let b = 70_001;
    let t: Vec<f32> = (0..b).map(|i| (i % 1000) as f32).collect();
    let tt = ctx.upload(&[b], &t).unwrap();
    let got = ctx
        .read(&em::timestep_embedding(ctx, &tt, 256, true, 1.0, 10_000.0).unwrap())
        .unwrap();
    let want = rf::timestep_embedding(&to_f64(&t), 256, true, 1.0, 10_000.0);
    // arguments up to 999: see embedding_timestep_matches_reference
    assert_close("timestep 2-D grid", &got, &want, 2e-3, 0.0);
}

#[test]
fn embedding_reference_backward_matches_finite_differences() {
    let (k, d) = (4, 3);
    let table = to_f64(&rand_vec(k * d, 1));
    let labels = [2.0, 0.0, 2.0, 3.0, 7.0]; // repeated and out-of-range labels
    let r = to_f64(&rand_vec(labels.len() * d, 2));
    let loss = |tb: &[f64]| -> f64 {
        rf::embedding_lookup(tb, &labels, k, d)
            .iter()
            .zip(&r)
            .map(|(a, b)| a * b)
            .sum()
    };
    let grad = rf::embedding_backward(&labels, &r, k, d);
    let mut tp = table.clone();
    for i in 0..table.len() {
        tp[i] = table[i] + 1e-6;
        let hi = loss(&tp);
        tp[i] = table[i] - 1e-6;
        let lo = loss(&tp);
        tp[i] = table[i];
        let num = (hi - lo) / 2e-6;
        // central differences of a linear function in f64: cancellation ~1e-10
        assert!(
            (grad[i] - num).abs() <= 1e-8,
            "[{i}] analytic {} vs numeric {num}",
            grad[i]
        );
    }
}

#[test]
fn embedding_lookup_and_backward_awkward_shapes() {
    let ctx = ctx();
    // (classes, width, batch): one class, width 1, primes, and a batch over one backward pass
    // (4,096 rows) with a width that is not a multiple of the workgroup.
    for (i, &(k, d, b)) in [(1, 1, 1), (10, 7, 13), (3, 1, 5), (17, 257, 3), (11, 5, 9001)]
        .iter()
        .enumerate()
    {
        let table = rand_vec(k * d, 100 + i as u64);
        // labels include out-of-range (k, -1) and non-integer (rounded) values
        let labels: Vec<f32> = (0..b)
            .map(|j| match j % 7 {
                5 => k as f32,
                6 => -1.0,
                _ => ((j * 31 + i) % k) as f32 + if j % 3 == 0 { 0.2 } else { 0.0 },
            })
            .collect();
        let dy = rand_vec(b * d, 200 + i as u64);
        let tt = ctx.upload(&[k, d], &table).unwrap();
        let tl = ctx.upload(&[b], &labels).unwrap();
        let tdy = ctx.upload(&[b, d], &dy).unwrap();
        let out = em::embedding_lookup(ctx, &tt, &tl).unwrap();
        assert_eq!(out.shape(), &[b, d]);
        let want = rf::embedding_lookup(&to_f64(&table), &to_f64(&labels), k, d);
        assert_close(
            &format!("lookup k={k} d={d} b={b}"),
            &ctx.read(&out).unwrap(),
            &want,
            0.0,
            0.0,
        ); // a copy
        let dt = em::embedding_backward(ctx, &tl, &tdy, k).unwrap();
        assert_eq!(dt.shape(), &[k, d]);
        let want = rf::embedding_backward(&to_f64(&labels), &to_f64(&dy), k, d);
        // f32 sums of up to b/k values in [-1, 1)
        let tol = 1e-6 * (b as f64 / k as f64).max(1.0);
        assert_close(
            &format!("backward k={k} d={d} b={b}"),
            &ctx.read(&dt).unwrap(),
            &want,
            tol,
            1e-6,
        );
    }
}

#[test]
fn embedding_shape_errors() {
    let ctx = ctx();
    let table = ctx.upload(&[4, 3], &[0.0; 12]).unwrap();
    let labels2d = ctx.upload(&[2, 1], &[0.0; 2]).unwrap();
    let err = em::embedding_lookup(ctx, &table, &labels2d).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(err.to_string().contains("[2, 1]"), "{err}");
    let labels = ctx.upload(&[2], &[0.0; 2]).unwrap();
    let dy = ctx.upload(&[3, 3], &[0.0; 9]).unwrap();
    assert!(matches!(
        em::embedding_backward(ctx, &labels, &dy, 4),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        em::timestep_embedding(ctx, &labels, 8, true, 4.0, 10_000.0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        em::timestep_embedding(ctx, &labels2d, 8, true, 1.0, 10_000.0),
        Err(Error::Shape { .. })
    ));
}
