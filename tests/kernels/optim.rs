// GPU optimizer kernels vs the CPU f64 reference.
use crate::common::{assert_close, ctx, rand_vec, to_f64};
use ddpm_wgpu::{
    ops::optim::{self as ops, AdamParams},
    reference::optim as rf,
};

#[test]
fn optim_adam_steps_match_reference() {
    let ctx = ctx();
    // (length, weight decay, clip to this norm): 1, primes, not a multiple of 256; Adam, AdamW and
    // AdamW with a grad_scale from clip_scale (one that clips and one that does not).
    for (n, wd, clip) in [
        (1usize, 0.0f32, None),
        (7, 0.01, None),
        (257, 0.0, Some(1.0f32)),
        (10_007, 0.1, Some(1e3)),
        // n % 4 == 0: the vec4 kernels, with and without a grad scale.
        (1_000, 0.0, None),
        (4_096, 0.01, Some(1.0)),
    ] {
        let p0 = rand_vec(n, n as u64);
        let param = ctx.upload(&[n], &p0).unwrap();
        let m = ctx.zeros(&[n], "m").unwrap();
        let v = ctx.zeros(&[n], "v").unwrap();
        let (mut rp, mut rm, mut rv) = (to_f64(&p0), vec![0.0; n], vec![0.0; n]);
        for step in 1..=5u32 {
            let g = rand_vec(n, 1000 * step as u64 + n as u64);
            let grad = ctx.upload(&[n], &g).unwrap();
            let hp = AdamParams {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: wd,
                step,
            };
            let mut scale = 1.0;
            let scale_t = clip.map(|max_norm| {
                let ns = ops::grad_norm_sq(ctx, &[&grad]).unwrap();
                scale = rf::clip_scale(rf::grad_norm_sq(&[&to_f64(&g)]), max_norm as f64);
                ops::clip_scale(ctx, &ns, max_norm).unwrap()
            });
            ops::adam_step(ctx, &param, &grad, &m, &v, &hp, scale_t.as_ref()).unwrap();
            rf::adam_step(
                &mut rp,
                &to_f64(&g),
                &mut rm,
                &mut rv,
                hp.lr as f64,
                hp.beta1 as f64,
                hp.beta2 as f64,
                hp.eps as f64,
                wd as f64,
                step,
                scale,
            );
        }
        // f32 state over 5 steps; the update lr·m̂/(√v̂+eps) <= ~lr is where the rounding sits,
        // so the error is a few ulps of lr on top of a few ulps of |param| <= 1.
        let name = format!("adam n={n} wd={wd} clip={clip:?}");
        assert_close(&format!("{name} param"), &ctx.read(&param).unwrap(), &rp, 2e-6, 1e-5);
        assert_close(&format!("{name} m"), &ctx.read(&m).unwrap(), &rm, 1e-6, 1e-5);
        assert_close(&format!("{name} v"), &ctx.read(&v).unwrap(), &rv, 1e-8, 1e-5);
    }
}

#[test]
fn optim_grad_norm_over_many_tensors() {
    let ctx = ctx();
    // Prime lengths; the last makes the total exceed 65,535·256 elements (2-D grid in stage 1
    // and three reduction stages).
    let lens = [1usize, 13, 2_053, 65_537, 16_777_259];
    let data: Vec<Vec<f32>> = lens.iter().map(|&n| rand_vec(n, n as u64)).collect();
    let tensors: Vec<_> = data.iter().map(|d| ctx.upload(&[d.len()], d).unwrap()).collect();
    let refs: Vec<&_> = tensors.iter().collect();
    let got = ctx.read(&ops::grad_norm_sq(ctx, &refs).unwrap()).unwrap();
    let d64: Vec<Vec<f64>> = data.iter().map(|d| to_f64(d)).collect();
    let slices: Vec<&[f64]> = d64.iter().map(|d| d.as_slice()).collect();
    let want = rf::grad_norm_sq(&slices);
    // Tree sums of ~5.6e6 positive f32 terms: relative error ~log2(n)·2^-24.
    assert_close("grad_norm_sq", &got, &[want], 0.0, 1e-5);
    // Just the small ones (a single stage).
    let got = ctx.read(&ops::grad_norm_sq(ctx, &refs[..3]).unwrap()).unwrap();
    assert_close("grad_norm_sq small", &got, &[rf::grad_norm_sq(&slices[..3])], 0.0, 1e-6);
    // Lengths that are multiples of 4 (so is their flat copy): the vec4 reduction, over one
    // chunk, several chunks and a partial last chunk.
    for lens in [&[4usize, 2_048, 8_196][..], &[4_100], &[8]] {
        let data: Vec<Vec<f32>> = lens.iter().map(|&n| rand_vec(n, 3 + n as u64)).collect();
        let tensors: Vec<_> = data.iter().map(|d| ctx.upload(&[d.len()], d).unwrap()).collect();
        let refs: Vec<&_> = tensors.iter().collect();
        let got = ctx.read(&ops::grad_norm_sq(ctx, &refs).unwrap()).unwrap();
        let d64: Vec<Vec<f64>> = data.iter().map(|d| to_f64(d)).collect();
        let slices: Vec<&[f64]> = d64.iter().map(|d| d.as_slice()).collect();
        assert_close(
            &format!("grad_norm_sq {lens:?}"),
            &got,
            &[rf::grad_norm_sq(&slices)],
            0.0,
            1e-6,
        );
    }
}

#[test]
fn optim_clip_scale_matches_reference() {
    let ctx = ctx();
    for (ns, max_norm) in [(4.0f32, 1.0f32), (0.25, 1.0), (0.0, 0.5), (1e6, 10.0)] {
        let t = ctx.upload(&[1], &[ns]).unwrap();
        let got = ctx.read(&ops::clip_scale(ctx, &t, max_norm).unwrap()).unwrap();
        // one sqrt, add and divide in f32
        assert_close(
            &format!("clip_scale {ns} {max_norm}"),
            &got,
            &[rf::clip_scale(ns as f64, max_norm as f64)],
            0.0,
            1e-6,
        );
    }
}

#[test]
fn optim_ema_matches_reference() {
    let ctx = ctx();
    for n in [1usize, 255, 257, 65_537] {
        let e = rand_vec(n, 1);
        let p = rand_vec(n, 2);
        let te = ctx.upload(&[n], &e).unwrap();
        let tp = ctx.upload(&[n], &p).unwrap();
        ops::ema_update(ctx, &te, &tp, 0.999).unwrap();
        ops::ema_update(ctx, &te, &tp, 0.999).unwrap();
        let want = rf::ema_update(&rf::ema_update(&to_f64(&e), &to_f64(&p), 0.999), &to_f64(&p), 0.999);
        // two products and a sum per step in f32, values <= 1
        assert_close(&format!("ema n={n}"), &ctx.read(&te).unwrap(), &want, 1e-6, 1e-6);
    }
}

#[test]
fn optim_fused_adam_ema_equals_adam_then_ema() {
    let ctx = ctx();
    // Without and with a grad scale; lengths 1, prime, past one workgroup.
    for (n, clip) in [
        (1usize, None),
        (257, Some(0.5f32)),
        (10_007, None),
        (1_024, None),
        (2_052, Some(0.5)),
    ] {
        let p0 = rand_vec(n, 7 + n as u64);
        let e0 = rand_vec(n, 8 + n as u64);
        let upload = |d: &[f32]| ctx.upload(&[n], d).unwrap();
        // Two copies of the whole state: one stepped by the fused kernel, one by adam + ema.
        let (pa, ma, va, ea) = (
            upload(&p0),
            ctx.zeros(&[n], "m").unwrap(),
            ctx.zeros(&[n], "v").unwrap(),
            upload(&e0),
        );
        let (pb, mb, vb, eb) = (
            upload(&p0),
            ctx.zeros(&[n], "m").unwrap(),
            ctx.zeros(&[n], "v").unwrap(),
            upload(&e0),
        );
        let mut rp = to_f64(&p0);
        let (mut rm, mut rv, mut re) = (vec![0.0; n], vec![0.0; n], to_f64(&e0));
        for step in 1..=3u32 {
            let g = rand_vec(n, 500 * step as u64 + n as u64);
            let grad = upload(&g);
            let hp = hp_wd(step);
            let decay = 0.99 - 0.1 * step as f32;
            let mut scale = 1.0;
            let scale_t = clip.map(|max_norm| {
                let ns = ops::grad_norm_sq(ctx, &[&grad]).unwrap();
                scale = rf::clip_scale(rf::grad_norm_sq(&[&to_f64(&g)]), max_norm as f64);
                ops::clip_scale(ctx, &ns, max_norm).unwrap()
            });
            ops::adam_ema_step(ctx, &pa, &grad, &ma, &va, &hp, scale_t.as_ref(), &ea, decay).unwrap();
            ops::adam_step(ctx, &pb, &grad, &mb, &vb, &hp, scale_t.as_ref()).unwrap();
            ops::ema_update(ctx, &eb, &pb, decay).unwrap();
            rf::adam_step(
                &mut rp,
                &to_f64(&g),
                &mut rm,
                &mut rv,
                hp.lr as f64,
                hp.beta1 as f64,
                hp.beta2 as f64,
                hp.eps as f64,
                hp.weight_decay as f64,
                step,
                scale,
            );
            re = rf::ema_update(&re, &rp, decay as f64);
        }
        let name = format!("adam+ema n={n} clip={clip:?}");
        // The same f32 arithmetic in one pass as in two: equal bit for bit.
        for (what, a, b) in [("param", &pa, &pb), ("m", &ma, &mb), ("v", &va, &vb), ("ema", &ea, &eb)] {
            assert_eq!(
                ctx.read(a).unwrap(),
                ctx.read(b).unwrap(),
                "{name}: fused {what} differs from adam + ema"
            );
        }
        assert_close(&format!("{name} ema"), &ctx.read(&ea).unwrap(), &re, 2e-6, 1e-5);
    }
    // A wrong ema shape is refused.
    let a = ctx.zeros(&[4], "a").unwrap();
    let e = ctx.zeros(&[5], "e").unwrap();
    let hp = AdamParams {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
    };
    assert!(ops::adam_ema_step(ctx, &a, &a.clone(), &a, &a, &hp, None, &e, 0.9).is_err());
}

#[test]
fn optim_adam_ema_many_equals_one_by_one() {
    let ctx = ctx();
    // Short tensors (stepped together from flat copies) around one longer than the batching
    // limit (stepped alone); without and with a grad scale.
    let lens = [1usize, 7, 256, 70_000, 3, 1_025];
    for clip in [None, Some(0.5f32)] {
        // Two identical copies of every state tensor; grads shared (read only).
        let [pa, ma, va, ea] = adam_states(&lens);
        let [pb, mb, vb, eb] = adam_states(&lens);
        let grads = rand_tensors(&lens, 50);
        let hp = hp_wd(3);
        let scale = clip.map(|max_norm| {
            let refs: Vec<&_> = grads.iter().collect();
            let ns = ops::grad_norm_sq(ctx, &refs).unwrap();
            ops::clip_scale(ctx, &ns, max_norm).unwrap()
        });
        let slots: Vec<ops::AdamSlot<'_>> = (0..lens.len())
            .map(|i| (&pa[i], &grads[i], &ma[i], &va[i], &ea[i]))
            .collect();
        ops::adam_ema_many(ctx, &slots, &hp, scale.as_ref(), 0.95).unwrap();
        one_by_one([&pb, &grads, &mb, &vb, &eb], &hp, scale.as_ref(), 0.95);
        for i in 0..lens.len() {
            for (what, a, b) in [
                ("param", &pa[i], &pb[i]),
                ("m", &ma[i], &mb[i]),
                ("v", &va[i], &vb[i]),
                ("ema", &ea[i], &eb[i]),
            ] {
                assert_eq!(
                    ctx.read(a).unwrap(),
                    ctx.read(b).unwrap(),
                    "adam_ema_many {what} of tensor {i} (len {}) clip={clip:?}",
                    lens[i]
                );
            }
        }
        // The grads are untouched.
        for (i, g) in grads.iter().enumerate() {
            assert_eq!(
                ctx.read(g).unwrap(),
                rand_vec(lens[i], 50 + i as u64),
                "grad {i} changed"
            );
        }
    }
    // A mismatched shape names the tensor.
    let a = ctx.zeros(&[4], "a").unwrap();
    let e = ctx.zeros(&[5], "e").unwrap();
    let hp = AdamParams {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
    };
    let err = ops::adam_ema_many(ctx, &[(&a, &a, &a, &a, &e)], &hp, None, 0.9).unwrap_err();
    assert!(err.to_string().contains("ema"), "{err}");
}

fn refs(v: &[ddpm_wgpu::Tensor]) -> Vec<&ddpm_wgpu::Tensor> {
    v.iter().collect()
}

/// AdamW hyper-parameters of the equality tests (lr 1e-2, weight decay 0.01) at `step`.
fn hp_wd(step: u32) -> AdamParams {
    AdamParams {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
        step,
    }
}

/// One random tensor per length, seeded `seed`, `seed + 1`, ...
fn rand_tensors(lens: &[usize], seed: u64) -> Vec<ddpm_wgpu::Tensor> {
    let ctx = ctx();
    lens.iter()
        .enumerate()
        .map(|(i, &n)| ctx.upload(&[n], &rand_vec(n, seed + i as u64)).unwrap())
        .collect()
}

/// Random Adam state (param, m, v, ema) per length, the same on every call; v squared (Adam
/// needs v ≥ 0).
fn adam_states(lens: &[usize]) -> [Vec<ddpm_wgpu::Tensor>; 4] {
    let ctx = ctx();
    let v = rand_tensors(lens, 30);
    for t in &v {
        let sq: Vec<f32> = ctx.read(t).unwrap().iter().map(|x| x * x).collect();
        ctx.write(t, &sq).unwrap();
    }
    [
        rand_tensors(lens, 10),
        rand_tensors(lens, 20),
        v,
        rand_tensors(lens, 40),
    ]
}

/// `adam_ema_step` on every (param, grad, m, v, ema) of the lists, one tensor at a time.
fn one_by_one(
    [p, g, m, v, e]: [&[ddpm_wgpu::Tensor]; 5],
    hp: &AdamParams,
    scale: Option<&ddpm_wgpu::Tensor>,
    decay: f32,
) {
    let ctx = ctx();
    for i in 0..p.len() {
        ops::adam_ema_step(ctx, &p[i], &g[i], &m[i], &v[i], hp, scale, &e[i], decay).unwrap();
    }
}

#[test]
fn optim_flat_adam_equals_one_by_one() {
    let ctx = ctx();
    // Short tensors (held flat between steps) around one longer than the batching limit
    // (stepped in place); two steps, without and with a grad scale, then write_back.
    let lens = [3usize, 70_000, 1, 256, 1_025, 7];
    let [pa, ma, va, ea] = adam_states(&lens);
    let [pb, mb, vb, eb] = adam_states(&lens);
    let flat = ops::FlatAdam::new(ctx, &refs(&ma), &refs(&va), &refs(&ea)).unwrap();
    for (step, clip) in [(1u32, None), (2, Some(0.5f32))] {
        let grads = rand_tensors(&lens, 50 + 10 * step as u64);
        let hp = hp_wd(step);
        let ns = flat.gather_grads_norm_sq(ctx, &refs(&grads)).unwrap();
        let host: Vec<Vec<f64>> = grads.iter().map(|g| to_f64(&ctx.read(g).unwrap())).collect();
        let slices: Vec<&[f64]> = host.iter().map(|v| v.as_slice()).collect();
        assert_close(
            "FlatAdam grad norm",
            &ctx.read(&ns).unwrap(),
            &[rf::grad_norm_sq(&slices)],
            0.0,
            1e-5,
        );
        let scale = clip.map(|max_norm| ops::clip_scale(ctx, &ns, max_norm).unwrap());
        flat.step(
            ctx,
            &refs(&pa),
            &refs(&grads),
            &refs(&ma),
            &refs(&va),
            &refs(&ea),
            &hp,
            scale.as_ref(),
            0.95,
        )
        .unwrap();
        one_by_one([&pb, &grads, &mb, &vb, &eb], &hp, scale.as_ref(), 0.95);
        for i in 0..lens.len() {
            assert_eq!(
                ctx.read(&pa[i]).unwrap(),
                ctx.read(&pb[i]).unwrap(),
                "param {i} at step {step}"
            );
        }
    }
    // The long tensor's state is stepped in place; the short ones' only after write_back.
    assert_eq!(
        ctx.read(&ma[1]).unwrap(),
        ctx.read(&mb[1]).unwrap(),
        "m of the long tensor"
    );
    assert_ne!(
        ctx.read(&ma[0]).unwrap(),
        ctx.read(&mb[0]).unwrap(),
        "short m before write_back"
    );
    flat.write_back(ctx, &refs(&ma), &refs(&va), &refs(&ea)).unwrap();
    for i in 0..lens.len() {
        for (what, a, b) in [("m", &ma[i], &mb[i]), ("v", &va[i], &vb[i]), ("ema", &ea[i], &eb[i])] {
            assert_eq!(
                ctx.read(a).unwrap(),
                ctx.read(b).unwrap(),
                "FlatAdam {what} of tensor {i}"
            );
        }
    }
    // A list that does not match the one it was built for is refused.
    let err = flat.gather_grads_norm_sq(ctx, &refs(&ma[..3])).unwrap_err();
    assert!(err.to_string().contains("grad"), "{err}");
    let err = flat
        .write_back(ctx, &refs(&ma), &refs(&va), &refs(&pa[..5]))
        .unwrap_err();
    assert!(err.to_string().contains("ema"), "{err}");
}

#[test]
fn optim_shape_errors() {
    let ctx = ctx();
    let a = ctx.upload(&[2, 3], &[0.0; 6]).unwrap();
    let b = ctx.upload(&[3, 2], &[0.0; 6]).unwrap();
    let hp = AdamParams {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
    };
    let err = ops::adam_step(ctx, &a, &b, &a, &a, &hp, None).unwrap_err().to_string();
    assert!(err.contains("[2, 3]") && err.contains("[3, 2]"), "{err}");
    let err = ops::ema_update(ctx, &a, &b, 0.9).unwrap_err().to_string();
    assert!(err.contains("[2, 3]") && err.contains("[3, 2]"), "{err}");
    assert!(ops::grad_norm_sq(ctx, &[]).is_err());
    assert!(ops::clip_scale(ctx, &a, 1.0).is_err());
}
