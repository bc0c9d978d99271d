//! Fréchet distance against closed forms.
use ddpm_wgpu::diffusion::fd::{frechet_distance, FeatureStats};
use nalgebra::{DMatrix, DVector};

fn stats(mean: &[f64], cov: &[f64]) -> FeatureStats {
    let d = mean.len();
    FeatureStats {
        n: 100,
        mean: DVector::from_column_slice(mean),
        cov: DMatrix::from_row_slice(d, d, cov),
    }
}

#[test]
fn fd_one_dimension_is_mean_gap_plus_sd_gap() {
    // 1-D Gaussians: FD = (μ1 − μ2)² + (σ1 − σ2)²
    let fd = frechet_distance(&stats(&[1.0], &[4.0]), &stats(&[-2.0], &[9.0])).unwrap();
    assert!((fd - (9.0 + 1.0)).abs() < 1e-12, "{fd}");
}

#[test]
fn fd_non_commuting_2x2_matches_closed_form() {
    // tr √M for a 2×2 PSD M is √(tr M + 2√det M); with Σ_a = I, M = Σ_b.
    let b = [2.0, 0.7, 0.7, 1.0];
    let fd = frechet_distance(&stats(&[0.0, 0.0], &[1.0, 0.0, 0.0, 1.0]), &stats(&[0.5, 0.0], &b)).unwrap();
    let det: f64 = 2.0 * 1.0 - 0.49;
    let want = 0.25 + 2.0 + 3.0 - 2.0 * (3.0 + 2.0 * det.sqrt()).sqrt();
    assert!((fd - want).abs() < 1e-12, "{fd} vs {want}");
    // Σ_a not the identity and not commuting with Σ_b: FD is symmetric in its arguments.
    let a = [1.5, -0.4, -0.4, 0.5];
    let ab = frechet_distance(&stats(&[0.1, 0.2], &a), &stats(&[0.0, 0.0], &b)).unwrap();
    let ba = frechet_distance(&stats(&[0.0, 0.0], &b), &stats(&[0.1, 0.2], &a)).unwrap();
    assert!((ab - ba).abs() < 1e-10 && ab > 0.0, "{ab} vs {ba}");
}

#[test]
fn fd_of_a_set_with_itself_is_zero_and_shifts_add_the_squared_gap() {
    let dim = 6;
    let feats: Vec<f32> = (0..50 * dim)
        .map(|i| ((i * 7919 % 101) as f32 / 50.0 - 1.0) * (1 + i % dim) as f32)
        .collect();
    let a = FeatureStats::new(&feats, dim).unwrap();
    assert!(frechet_distance(&a, &a).unwrap().abs() < 1e-9);
    let shifted: Vec<f32> = feats
        .iter()
        .enumerate()
        .map(|(i, v)| v + if i % dim == 2 { 3.0 } else { 0.0 })
        .collect();
    let b = FeatureStats::new(&shifted, dim).unwrap();
    assert!((frechet_distance(&a, &b).unwrap() - 9.0).abs() < 1e-6);
}

#[test]
fn fd_rejects_bad_input() {
    assert!(FeatureStats::new(&[1.0, 2.0, 3.0], 2).is_err());
    assert!(
        FeatureStats::new(&[1.0, 2.0], 2).is_err(),
        "one vector has no covariance"
    );
    let a = stats(&[0.0], &[1.0]);
    let b = stats(&[0.0, 0.0], &[1.0, 0.0, 0.0, 1.0]);
    assert!(frechet_distance(&a, &b).is_err());
}
