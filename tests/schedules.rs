//! β schedules against diffusers' `DDPMScheduler` (tests/fixtures/schedules.safetensors, see
//! tests/fixtures/README.md): every schedule diffusers has, at T = 1000 and T = 37, in float64
//! (same formulas, numpy) and as diffusers' own float32 tables. Plus the alias names and the
//! `sqrt` schedule, which diffusers lacks.

use std::path::Path;

use ddpm_wgpu::diffusion::{BetaSchedule, Schedule};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

fn fixture_bytes() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedules.safetensors");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A tensor of the fixture as f64, whatever its stored dtype (F32 or F64).
fn get(st: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    let v = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let d = v.data();
    match v.dtype() {
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    }
}

/// max |got − want| after checking lengths; panics with the worst index when above `tol`.
fn check(name: &str, got: &[f64], want: &[f64], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs();
        assert!(e.is_finite(), "{name}[{i}]: got {g}, want {w}");
        if e > worst {
            (worst, at) = (e, i);
        }
    }
    assert!(
        worst <= tol,
        "{name}: max error {worst:.3e} at [{at}] (got {}, want {}; tol {tol:e})",
        got[at],
        want[at]
    );
    eprintln!("{name}: max error {worst:.3e}");
    worst
}

#[test]
fn beta_tables_match_diffusers() {
    let bytes = fixture_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for name in ["linear", "scaled_linear", "squaredcos_cap_v2"] {
        for t in [1000usize, 37] {
            let s = Schedule::new(BetaSchedule::parse(name).unwrap(), t, 1e-4, 0.02).unwrap();
            let key = format!("{name}.T{t}");
            // Same formulas in f64: only the order of operations differs.
            check(
                &format!("{key}.betas_f64"),
                &s.betas,
                &get(&st, &format!("{key}.betas_f64")),
                1e-15,
            );
            check(
                &format!("{key}.alphas_cumprod_f64"),
                &s.alphas_cumprod,
                &get(&st, &format!("{key}.alphas_cumprod_f64")),
                1e-13,
            );
            // diffusers' float32 tables: betas rounded to f32 (half an ulp below 1 is 3e-8; measured
            // 2.2e-8 for the cosine, 4e-9 for the others) and a f32
            // cumprod that drifts by up to 3.3e-7 over 1000 steps.
            check(
                &format!("{key}.betas"),
                &s.betas,
                &get(&st, &format!("{key}.betas")),
                3e-8,
            );
            check(
                &format!("{key}.alphas_cumprod"),
                &s.alphas_cumprod,
                &get(&st, &format!("{key}.alphas_cumprod")),
                5e-7,
            );
            assert_eq!(s.len(), t);
            assert_eq!(s.kind.diffusers_name(), name);
        }
    }
}

#[test]
fn schedule_names_and_aliases() {
    // diffusers' names, latent-diffusion's names, and our own.
    for (name, kind) in [
        ("linear", BetaSchedule::Linear),
        ("sqrt_linear", BetaSchedule::Linear),
        ("scaled_linear", BetaSchedule::ScaledLinear),
        ("ldm_linear", BetaSchedule::ScaledLinear),
        ("sqrt", BetaSchedule::Sqrt),
        ("cosine", BetaSchedule::Cosine),
        ("squaredcos_cap_v2", BetaSchedule::Cosine),
    ] {
        assert_eq!(BetaSchedule::parse(name).unwrap(), kind, "{name}");
        // diffusers_name round-trips.
        assert_eq!(BetaSchedule::parse(kind.diffusers_name()).unwrap(), kind);
    }
    let err = BetaSchedule::parse("quadratic").unwrap_err().to_string();
    assert!(err.contains("quadratic") && err.contains("cosine"), "{err}");
}

#[test]
fn sqrt_schedule_is_square_root_of_linspace() {
    // latent-diffusion: betas = linspace(β_start, β_end, T) ** 0.5
    let t = 37;
    let s = Schedule::new(BetaSchedule::Sqrt, t, 1e-4, 0.02).unwrap();
    let want: Vec<f64> = (0..t)
        .map(|i| (1e-4 + (0.02 - 1e-4) * i as f64 / (t - 1) as f64).sqrt())
        .collect();
    check("sqrt.betas", &s.betas, &want, 1e-15);
    assert!((s.betas[0] - 0.01).abs() < 1e-15 && (s.betas[t - 1] - 0.02f64.sqrt()).abs() < 1e-15);
    let mut acc = 1.0;
    for i in 0..t {
        acc *= 1.0 - s.betas[i];
        assert!((s.alphas_cumprod[i] - acc).abs() < 1e-15);
    }
}

#[test]
fn cosine_is_capped_and_monotone() {
    // Nichol & Dhariwal: β ≤ 0.999; ᾱ strictly decreasing from ≈1.
    let s = Schedule::new(BetaSchedule::Cosine, 1000, 1e-4, 0.02).unwrap();
    assert!(s.betas.iter().all(|&b| b > 0.0 && b <= 0.999));
    assert_eq!(s.betas[999], 0.999);
    assert!(s.alphas_cumprod.windows(2).all(|w| w[1] < w[0]));
    assert!(Schedule::new(BetaSchedule::Linear, 0, 1e-4, 0.02).is_err());
}
