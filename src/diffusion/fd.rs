//! Fréchet distance between two sets of feature vectors (the FID formula, in the feature space
//! of whatever network produced them; `ddpm eval --fd` uses the engine-trained classifier):
//!
//! FD = ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a^½ Σ_b Σ_a^½)^½
//!
//! In f64 on the host; the symmetric square roots come from eigendecompositions (nalgebra), with
//! eigenvalues below zero (round-off of a singular covariance) clamped to zero.

use nalgebra::{DMatrix, DVector, SymmetricEigen};

use crate::error::{Error, Result};

/// Mean and covariance (unbiased, n − 1) of `n` feature vectors of dimension `dim`.
#[derive(Clone, Debug)]
pub struct FeatureStats {
    /// Number of vectors.
    pub n: usize,
    /// μ, `dim` values.
    pub mean: DVector<f64>,
    /// Σ, `dim × dim`.
    pub cov: DMatrix<f64>,
}

impl FeatureStats {
    /// Statistics of `features` (row-major `n × dim`). Needs at least two vectors.
    pub fn new(features: &[f32], dim: usize) -> Result<Self> {
        if dim == 0 || !features.len().is_multiple_of(dim) || features.len() / dim < 2 {
            return Err(Error::arg(
                "features",
                format!(
                    "{} values are not at least two vectors of dimension {dim}",
                    features.len()
                ),
            ));
        }
        let n = features.len() / dim;
        let x = DMatrix::from_row_iterator(n, dim, features.iter().map(|&v| v as f64));
        let mean = x.row_mean().transpose();
        let mut centred = x;
        for mut row in centred.row_iter_mut() {
            row -= mean.transpose();
        }
        let cov = centred.transpose() * &centred / (n - 1) as f64;
        Ok(FeatureStats { n, mean, cov })
    }
}

/// Symmetric square root of a symmetric positive semi-definite matrix.
fn sqrtm_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (m + m.transpose()) * 0.5;
    let e = SymmetricEigen::new(sym);
    let s = DMatrix::from_diagonal(&e.eigenvalues.map(|l| l.max(0.0).sqrt()));
    &e.eigenvectors * s * e.eigenvectors.transpose()
}

/// The Fréchet distance between the Gaussians fitted to two feature sets.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.mean.len() != b.mean.len() {
        return Err(Error::arg(
            "features",
            format!("dimensions differ: {} vs {}", a.mean.len(), b.mean.len()),
        ));
    }
    let d = &a.mean - &b.mean;
    let sa = sqrtm_psd(&a.cov);
    let m = &sa * &b.cov * &sa;
    let m = (&m + m.transpose()) * 0.5;
    let tr_sqrt: f64 = SymmetricEigen::new(m)
        .eigenvalues
        .iter()
        .map(|l| l.max(0.0).sqrt())
        .sum();
    Ok(d.norm_squared() + a.cov.trace() + b.cov.trace() - 2.0 * tr_sqrt)
}
