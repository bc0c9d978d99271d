//! The whole U-Net against diffusers/PyTorch: forward, every parameter gradient, three Adam
//! steps. Fixtures come from `tests/fixtures/make_fixtures.py` (see tests/fixtures/README.md).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ddpm_wgpu::checkpoint::TensorFile;
use ddpm_wgpu::nn::{Grads, Mode};
use ddpm_wgpu::ops::{loss, optim};
use ddpm_wgpu::{Context, Error, UNet, UNetConfig};

fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| Context::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}")))
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("unet_")))
        .collect();
    v.sort();
    assert!(v.len() >= 5, "expected the five U-Net fixtures in {}", dir.display());
    v
}

struct Case {
    name: String,
    unet: UNet,
    io: TensorFile,
}

fn load(dir: &Path) -> Case {
    let ctx = ctx();
    Case {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        unet: UNet::from_pretrained(ctx, dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())),
        io: TensorFile::read(&dir.join("io.safetensors")).unwrap(),
    }
}

fn inputs(c: &Case) -> (ddpm_wgpu::Tensor, ddpm_wgpu::Tensor, Option<ddpm_wgpu::Tensor>) {
    let ctx = ctx();
    let x = c.io.upload(ctx, "sample").unwrap();
    let t = c.io.upload(ctx, "timestep").unwrap();
    let y =
        c.io.contains("class_labels")
            .then(|| c.io.upload(ctx, "class_labels").unwrap());
    (x, t, y)
}

fn rms(v: &[f32]) -> f64 {
    (v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> (f64, usize) {
    a.iter().zip(b).enumerate().fold((0.0, 0), |(m, at), (i, (&x, &y))| {
        let d = (x as f64 - y as f64).abs();
        if d > m || d.is_nan() {
            (if d.is_nan() { f64::INFINITY } else { d }, i)
        } else {
            (m, at)
        }
    })
}

#[test]
fn forward_matches_diffusers() {
    let ctx = ctx();
    for dir in fixtures() {
        let c = load(&dir);
        let (x, t, y) = inputs(&c);
        let out = ctx.read(&c.unet.forward(ctx, &x, &t, y.as_ref()).unwrap()).unwrap();
        let (_, want) = c.io.get("out").unwrap();
        let (err, at) = max_abs_diff(&out, want);
        // f32 through ~20 layers with differently ordered reductions: the float64 re-run of
        // diffusers differs from its own float32 output by 1.3e-6 abs (fixtures README); allow
        // 1e-4 × RMS(out), the bound.
        let tol = 1e-4 * rms(want);
        eprintln!("{}: forward max abs error {err:.3e} (tol {tol:.3e})", c.name);
        assert!(
            err <= tol,
            "{}: forward max abs error {err:.3e} at {at} > {tol:.3e}",
            c.name
        );
    }
}

#[test]
fn input_gradient_matches_pytorch() {
    // The vector–Jacobian product through the whole network (conv_in's input gradient included,
    // and center_input_sample's factor 2 in unet_c): what classifier guidance and the
    // probability-flow likelihood use.
    let ctx = ctx();
    for dir in fixtures() {
        let c = load(&dir);
        let (x, t, y) = inputs(&c);
        let noise = c.io.upload(ctx, "noise").unwrap();
        let (pred, tape) = c.unet.forward_tape(ctx, &x, &t, y.as_ref(), Mode::EVAL).unwrap();
        let dpred = loss::mse_loss_backward(ctx, &pred, &noise, 1.0).unwrap();
        let mut grads = Grads::new(c.unet.params.len());
        let dx = c.unet.backward_input(ctx, tape, &dpred, &mut grads).unwrap();
        assert_eq!(dx.shape(), x.shape(), "{}: input gradient shape", c.name);
        let got = ctx.read(&dx).unwrap();
        let (_, want) = c.io.get("grad_input.sample").unwrap();
        let (err, at) = max_abs_diff(&got, want);
        let scale = want.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
        eprintln!("{}: input gradient max error {err:.3e} of max {scale:.3e}", c.name);
        // Same bound as the parameter gradients: 1e-3 of the tensor's largest entry.
        assert!(
            err <= 1e-3 * scale,
            "{}: input gradient max error {err:.3e} at {at} > 1e-3 × {scale:.3e}",
            c.name
        );
    }
}

#[test]
fn loss_and_every_gradient_match_pytorch() {
    let ctx = ctx();
    for dir in fixtures() {
        let c = load(&dir);
        let (x, t, y) = inputs(&c);
        let noise = c.io.upload(ctx, "noise").unwrap();
        let (pred, tape) = c.unet.forward_tape(ctx, &x, &t, y.as_ref(), Mode::EVAL).unwrap();
        let l = ctx.read(&loss::mse_loss(ctx, &pred, &noise).unwrap()).unwrap()[0];
        let want_l = c.io.get("loss").unwrap().1[0];
        assert!(
            (l - want_l).abs() <= 1e-5 * want_l.abs(),
            "{}: loss {l} vs {want_l}",
            c.name
        );
        let dpred = loss::mse_loss_backward(ctx, &pred, &noise, 1.0).unwrap();
        let mut grads = Grads::new(c.unet.params.len());
        c.unet.backward(ctx, tape, &dpred, &mut grads).unwrap();
        let mut worst = (0.0f64, String::new());
        for (i, name) in c.unet.params.names().iter().enumerate() {
            let g = ctx
                .read(
                    grads
                        .get(i)
                        .unwrap_or_else(|| panic!("{}: no gradient for {name}", c.name)),
                )
                .unwrap();
            let (_, want) = c.io.get(&format!("grad.{name}")).unwrap();
            let (err, at) = max_abs_diff(&g, want);
            if name.contains("to_k.bias") {
                // Exactly zero in exact arithmetic (softmax shift invariance): both sides hold
                // round-off only.
                assert!(err <= 1e-6, "{}: {name} gradient should be ~0, error {err:.3e}", c.name);
                continue;
            }
            let scale = want.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
            let rel = err / scale.max(1e-12);
            if rel > worst.0 {
                worst = (rel, name.clone());
            }
            // Relative to the tensor's largest gradient: 1e-3 (the bound per tensor).
            assert!(
                rel <= 1e-3,
                "{}: grad {name}: max error {err:.3e} at {at}, {rel:.3e} of max |grad| {scale:.3e}",
                c.name
            );
        }
        eprintln!(
            "{}: worst gradient relative error {:.3e} ({})",
            c.name, worst.0, worst.1
        );
    }
}

#[test]
fn three_adam_steps_match_pytorch() {
    let ctx = ctx();
    for dir in fixtures() {
        let c = load(&dir);
        let (x, t, y) = inputs(&c);
        let noise = c.io.upload(ctx, "noise").unwrap();
        let n = c.unet.params.len();
        let m = c.unet.params.zeros_like(ctx).unwrap();
        let v = c.unet.params.zeros_like(ctx).unwrap();
        let initial: Vec<Vec<f32>> = (0..n).map(|i| ctx.read(c.unet.params.get(i)).unwrap()).collect();
        let (_, losses) = c.io.get("adam_losses").unwrap();
        for step in 1..=3u32 {
            let (pred, tape) = c.unet.forward_tape(ctx, &x, &t, y.as_ref(), Mode::EVAL).unwrap();
            let l = ctx.read(&loss::mse_loss(ctx, &pred, &noise).unwrap()).unwrap()[0];
            let want = losses[step as usize - 1];
            assert!(
                (l - want).abs() <= 1e-4 * want.abs(),
                "{}: loss before step {step}: {l} vs {want}",
                c.name
            );
            let dpred = loss::mse_loss_backward(ctx, &pred, &noise, 1.0).unwrap();
            let mut grads = Grads::new(n);
            c.unet.backward(ctx, tape, &dpred, &mut grads).unwrap();
            let p = optim::AdamParams {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
                step,
            };
            for i in 0..n {
                optim::adam_step(
                    ctx,
                    c.unet.params.get(i),
                    grads.get(i).unwrap(),
                    m.get(i),
                    v.get(i),
                    &p,
                    None,
                )
                .unwrap();
            }
        }
        for (i, name) in c.unet.params.names().iter().enumerate() {
            let got = ctx.read(c.unet.params.get(i)).unwrap();
            let (_, want) = c.io.get(&format!("adam3.{name}")).unwrap();
            let (_, g0) = c.io.get(&format!("grad.{name}")).unwrap();
            for (j, (&a, &b)) in got.iter().zip(want).enumerate() {
                if name.contains("to_k.bias") {
                    // Adam amplifies round-off noise in an exactly-zero gradient (README): only
                    // check the step stays within 3·lr of the start.
                    assert!(
                        (a - initial[i][j]).abs() <= 3e-3 + 1e-6,
                        "{}: {name}[{j}] moved too far",
                        c.name
                    );
                    continue;
                }
                // A first Adam step is ≈ lr·sign(g): elements with |g| < 1e-6 may flip sign under
                // round-off, so they are exempt (README).
                let ok = (a - b).abs() < 1e-4 || g0[j].abs() < 1e-6;
                assert!(ok, "{}: adam3.{name}[{j}] = {a}, PyTorch {b}", c.name);
            }
        }
    }
}

#[test]
fn save_and_reload_round_trips() {
    let ctx = ctx();
    let c = load(&fixtures()[2]);
    let dir = std::env::temp_dir().join(format!("ddpm-wgpu-roundtrip-{}", std::process::id()));
    c.unet.save_pretrained(ctx, &dir).unwrap();
    let again = UNet::from_pretrained(ctx, &dir).unwrap();
    assert_eq!(again.config(), c.unet.config());
    for i in 0..c.unet.params.len() {
        assert_eq!(
            ctx.read(again.params.get(i)).unwrap(),
            ctx.read(c.unet.params.get(i)).unwrap()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn copy_fixture(name: &str) -> PathBuf {
    let src = fixtures().into_iter().find(|p| p.ends_with(name)).unwrap();
    let dst = std::env::temp_dir().join(format!(
        "ddpm-wgpu-bad-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

#[test]
fn truncated_checkpoint_is_refused_with_the_file_named() {
    let dir = copy_fixture("unet_a_basic");
    let w = dir.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let err = UNet::from_pretrained(ctx(), &dir).err().expect("must fail").to_string();
    assert!(
        err.contains("diffusion_pytorch_model.safetensors") && err.contains("truncated"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_that_does_not_fit_the_weights_names_the_tensor() {
    let dir = copy_fixture("unet_a_basic");
    let cfg = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"in_channels\": 3", "\"in_channels\": 4");
    std::fs::write(&cfg, text).unwrap();
    let err = UNet::from_pretrained(ctx(), &dir).err().expect("must fail").to_string();
    assert!(err.contains("conv_in.weight") && err.contains("[8, 4, 3, 3]"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unsupported_config_values_are_refused_naming_the_field() {
    let base = std::fs::read_to_string(fixtures()[0].join("config.json")).unwrap();
    for (from, to, field) in [
        ("\"act_fn\": \"silu\"", "\"act_fn\": \"gelu\"", "act_fn"),
        (
            "\"resnet_time_scale_shift\": \"default\"",
            "\"resnet_time_scale_shift\": \"scale_shift\"",
            "resnet_time_scale_shift",
        ),
        (
            "\"time_embedding_type\": \"positional\"",
            "\"time_embedding_type\": \"fourier\"",
            "time_embedding_type",
        ),
        ("\"norm_num_groups\": 4", "\"norm_num_groups\": 3", "norm_num_groups"),
    ] {
        assert!(base.contains(from), "fixture config lacks {from}");
        let err = UNetConfig::from_json(&base.replace(from, to)).unwrap_err();
        assert!(
            matches!(&err, Error::Config { field: f, .. } if f == field),
            "{field}: {err}"
        );
    }
}

#[test]
fn wrong_input_shape_is_a_typed_error() {
    let ctx = ctx();
    let c = load(&fixtures()[0]);
    let x = ctx.zeros(&[2, 5, 8, 8], "x").unwrap();
    let t = ctx.zeros(&[2], "t").unwrap();
    let err = c.unet.forward(ctx, &x, &t, None).unwrap_err().to_string();
    assert!(err.contains("5 channels"), "{err}");
}
