//! The engine-trained classifier (feature extractor of `ddpm eval --fd`): gradients against
//! finite differences of an f64 CPU forward built from the reference ops, a learnable toy
//! problem, and save/load.
use std::sync::OnceLock;

use ddpm_wgpu::checkpoint;
use ddpm_wgpu::nn::{Classifier, ClassifierConfig, ClassifierTrainOptions, ClassifierTrainer, Grads};
use ddpm_wgpu::ops::loss;
use ddpm_wgpu::reference::conv2d::{conv2d, Conv2dDims};
use ddpm_wgpu::reference::elementwise::silu;
use ddpm_wgpu::reference::loss::softmax_cross_entropy;
use ddpm_wgpu::reference::matmul::linear;
use ddpm_wgpu::{Context, Error};

fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| Context::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}")))
}

fn tiny() -> ClassifierConfig {
    ClassifierConfig {
        in_channels: 2,
        image_size: 8,
        num_classes: 3,
        channels: [2, 3, 3, 4],
        features: 5,
    }
}

/// f64 forward of the classifier from host parameters (in declaration order): the logits.
fn cpu_logits(cfg: &ClassifierConfig, p: &[Vec<f64>], x: &[f64], b: usize) -> Vec<f64> {
    let (mut cur, mut cin, mut s) = (x.to_vec(), cfg.in_channels, cfg.image_size);
    for (i, &c) in cfg.channels.iter().enumerate() {
        let stride = if i == 0 { 1 } else { 2 };
        let d = Conv2dDims {
            n: b,
            cin,
            h: s,
            w: s,
            cout: c,
            kh: 3,
            kw: 3,
            stride,
            pad: [1; 4],
        };
        cur = silu(&conv2d(&cur, &p[2 * i], Some(&p[2 * i + 1]), &d));
        cin = c;
        s = d.out_hw().0;
    }
    let flat = cin * s * s;
    let f = silu(&linear(&cur, &p[8], Some(&p[9]), b, flat, cfg.features));
    linear(&f, &p[10], Some(&p[11]), b, cfg.features, cfg.num_classes)
}

fn data(b: usize, per: usize) -> Vec<f32> {
    (0..b * per)
        .map(|i| (((i * 7919) % 97) as f32 / 48.0 - 1.0) * 0.9)
        .collect()
}

#[test]
fn classifier_gradients_match_finite_differences_of_the_f64_reference() {
    let ctx = ctx();
    let cfg = tiny();
    let mut model = Classifier::new(cfg.clone()).unwrap();
    model.init_random(ctx, 3).unwrap();
    let b = 3;
    let per = cfg.in_channels * cfg.image_size * cfg.image_size;
    let x = data(b, per);
    let y = [2usize, 0, 1];
    let xt = ctx.upload(&[b, cfg.in_channels, 8, 8], &x).unwrap();
    let yt = ctx.upload(&[b], &y.map(|v| v as f32)).unwrap();
    let tape = model.forward_tape(ctx, &xt).unwrap();
    let gpu_logits = ctx.read(&tape.logits).unwrap();
    let xent = loss::softmax_cross_entropy(ctx, &tape.logits, &yt, 1.0).unwrap();
    let mut grads = Grads::new(model.params.len());
    model.backward(ctx, tape, &xent.dlogits, &mut grads).unwrap();

    let host = checkpoint::params_to_host(ctx, &model.params).unwrap();
    let mut p: Vec<Vec<f64>> = host
        .iter()
        .map(|(_, _, d)| d.iter().map(|&v| v as f64).collect())
        .collect();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let want_logits = cpu_logits(&cfg, &p, &x64, b);
    for (g, w) in gpu_logits.iter().zip(&want_logits) {
        assert!((*g as f64 - w).abs() < 1e-5, "logits {gpu_logits:?} vs {want_logits:?}");
    }
    let loss_at = |p: &[Vec<f64>]| softmax_cross_entropy(&cpu_logits(&cfg, p, &x64, b), &y, 3, 1.0).0;
    let mut checked = 0;
    for (id, (name, _, _)) in host.iter().enumerate() {
        let g = ctx.read(grads.get(id).expect("gradient")).unwrap();
        for j in 0..p[id].len() {
            let v = p[id][j];
            p[id][j] = v + 1e-6;
            let hi = loss_at(&p);
            p[id][j] = v - 1e-6;
            let lo = loss_at(&p);
            p[id][j] = v;
            let num = (hi - lo) / 2e-6;
            // GPU f32 gradient vs f64 central difference: f32 rounding dominates
            assert!(
                (g[j] as f64 - num).abs() <= 2e-5 + 1e-3 * num.abs(),
                "{name}[{j}]: analytic {} vs numeric {num}",
                g[j]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, model.params.count());
}

#[test]
fn classifier_learns_a_toy_problem_and_round_trips_through_disk() {
    let ctx = ctx();
    let cfg = ClassifierConfig {
        in_channels: 1,
        image_size: 8,
        num_classes: 3,
        channels: [4, 8, 8, 8],
        features: 16,
    };
    // class 0: bright top half, 1: bright bottom half, 2: bright left half; plus noise
    let n = 96;
    let noise = data(n, 64);
    let mut images = Vec::new();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    for (i, &l) in labels.iter().enumerate() {
        for r in 0..8 {
            for c in 0..8 {
                let on = match l {
                    0 => r < 4,
                    1 => r >= 4,
                    _ => c < 4,
                };
                images.push(if on { 0.8 } else { -0.8 } + 0.3 * noise[i * 64 + r * 8 + c]);
            }
        }
    }
    let opts = ClassifierTrainOptions {
        batch_size: 16,
        lr: 1e-2,
        seed: 1,
    };
    let mut tr = ClassifierTrainer::new(ctx, cfg.clone(), opts).unwrap();
    let mut losses = Vec::new();
    tr.fit(ctx, &images, &labels, 20.0, |_, _, l| losses.push(l)).unwrap();
    assert_eq!(losses.len(), 20 * (96 / 16));
    let first = losses[..6].iter().sum::<f32>() / 6.0;
    let last = losses[losses.len() - 6..].iter().sum::<f32>() / 6.0;
    assert!(last < 0.5 * first, "loss {first} → {last}");
    let (feats, preds) = tr.model.embed(ctx, &images, 40).unwrap();
    assert_eq!(feats.len(), n * 16);
    let correct = preds.iter().zip(&labels).filter(|(p, l)| p == l).count();
    assert!(correct as f64 > 0.9 * n as f64, "{correct}/{n} correct");

    let dir = std::env::temp_dir().join(format!("ddpm_classifier_{}", std::process::id()));
    tr.model.save(ctx, &dir).unwrap();
    let back = Classifier::load(ctx, &dir).unwrap();
    assert_eq!(back.config(), &cfg);
    let (feats2, preds2) = back.embed(ctx, &images, 7).unwrap();
    assert_eq!(preds, preds2);
    assert_eq!(feats, feats2, "same weights, same kernels: identical features");

    // a truncated weights file is refused with its path named
    let w = dir.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let err = Classifier::load(ctx, &dir).err().unwrap();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    let err = Classifier::load(ctx, &dir).err().unwrap();
    assert!(
        matches!(err, Error::Checkpoint { .. }) && err.to_string().contains("config.json"),
        "{err}"
    );
    // wrong input shape
    let x = ctx.upload(&[1, 1, 16, 16], &[0.0; 256]).unwrap();
    assert!(matches!(back.forward(ctx, &x), Err(Error::Shape { .. })));
}
