//! Shared test helpers: one context per test binary and `assert_close`.
#![allow(dead_code)]

use std::sync::OnceLock;

use ddpm_wgpu::Context;

/// The test context. Never skips: with no adapter the test fails with the install hint.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| match Context::new() {
        Ok(c) => {
            eprintln!("test adapter: {}", c.adapter_name());
            c
        }
        Err(e) => panic!("GPU tests need an adapter: {e}"),
    })
}

/// Deterministic pseudo-random data in [-1, 1) (SplitMix64), so tests need no rand crate.
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Compare `got` against `want` elementwise with |got - want| <= atol + rtol·|want|. On failure
/// prints the max error, where it is, and the first few mismatches, then panics.
pub fn assert_close(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{name}: length {} vs expected {}",
        got.len(),
        want.len()
    );
    let mut worst = (0usize, 0.0f64);
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        let ok = err <= atol + rtol * w.abs(); // false for NaN
        if !ok {
            if bad.len() < 8 {
                bad.push(format!("  [{i}] got {g} want {w} (err {err:.3e})"));
            }
            if err.is_nan() || err > worst.1 {
                worst = (i, if err.is_nan() { f64::INFINITY } else { err });
            }
        } else if err > worst.1 && bad.is_empty() {
            worst = (i, err);
        }
    }
    if !bad.is_empty() {
        panic!(
            "{name}: mismatch (atol {atol:e}, rtol {rtol:e}); max error {:.3e} at [{}]\n{}",
            worst.1,
            worst.0,
            bad.join("\n")
        );
    }
}
