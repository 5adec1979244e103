//! Streaming second-moment (covariance) of a layer's inputs, and its top
//! eigenvectors (the clean subspace `Vc`).

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use serde::{Deserialize, Serialize};

use crate::error::{SpectralError, check_dim, check_matrix};

/// Accumulates `Σ x·xᵀ` (and `Σ x`) over batches of `dim`-dimensional samples, in
/// `f64`, so the statistics of a whole dataset can be gathered batch by batch.
///
/// [`covariance`](Self::covariance) returns the **uncentered** second moment
/// `E[x·xᵀ]` by default (what the input energy a weight sees is made of); an
/// accumulator built with [`new_centered`](Self::new_centered) returns the centered
/// covariance `E[x·xᵀ] − μ·μᵀ` instead. Serializable, so a long accumulation can be
/// saved and resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CovarianceAccumulator {
    dim: usize,
    count: u64,
    centered: bool,
    sum_xxt: DMatrix<f64>,
    sum_x: DVector<f64>,
}

impl CovarianceAccumulator {
    /// An empty accumulator for `dim`-dimensional samples (uncentered moment).
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            count: 0,
            centered: false,
            sum_xxt: DMatrix::zeros(dim, dim),
            sum_x: DVector::zeros(dim),
        }
    }

    /// An empty accumulator whose [`covariance`](Self::covariance) is centered.
    pub fn new_centered(dim: usize) -> Self {
        Self {
            centered: true,
            ..Self::new(dim)
        }
    }

    /// Sample dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether [`covariance`](Self::covariance) subtracts the mean.
    pub fn is_centered(&self) -> bool {
        self.centered
    }

    /// Adds a batch `x: n×dim` whose rows are samples (`n = 0` is a no-op).
    ///
    /// # Errors
    /// [`SpectralError::ShapeMismatch`] when `x.ncols() != dim`,
    /// [`SpectralError::NonFinite`] for NaN/∞ entries (nothing is added then).
    pub fn push_batch(&mut self, x: &DMatrix<f64>) -> Result<(), SpectralError> {
        check_dim(
            "covariance batch columns (sample dimension)",
            self.dim,
            x.ncols(),
        )?;
        if x.nrows() == 0 {
            return Ok(());
        }
        check_matrix(x, "covariance batch")?;
        self.sum_xxt += x.transpose() * x;
        for row in x.row_iter() {
            self.sum_x += row.transpose();
        }
        self.count += x.nrows() as u64;
        Ok(())
    }

    /// Adds a row-major `n×dim` batch of `f32` samples (`data.len() == n·dim`).
    ///
    /// # Errors
    /// [`SpectralError::ShapeMismatch`] when `data.len() != n·dim`, and the errors of
    /// [`push_batch`](Self::push_batch).
    pub fn push_batch_f32(&mut self, data: &[f32], n: usize) -> Result<(), SpectralError> {
        let expected = n
            .checked_mul(self.dim)
            .ok_or_else(|| SpectralError::InvalidArgument("n·dim overflows usize".to_string()))?;
        check_dim("f32 batch length (n·dim)", expected, data.len())?;
        let x = DMatrix::from_row_iterator(n, self.dim, data.iter().map(|&v| v as f64));
        self.push_batch(&x)
    }

    /// Merges another accumulator of the same dimension and centering (e.g. from a
    /// parallel worker).
    ///
    /// # Errors
    /// [`SpectralError::ShapeMismatch`] for a different `dim`,
    /// [`SpectralError::InvalidArgument`] for a different centering.
    pub fn merge(&mut self, other: &CovarianceAccumulator) -> Result<(), SpectralError> {
        check_dim("covariance dimension", self.dim, other.dim)?;
        if self.centered != other.centered {
            return Err(SpectralError::InvalidArgument(
                "cannot merge a centered and an uncentered accumulator".to_string(),
            ));
        }
        self.sum_xxt += &other.sum_xxt;
        self.sum_x += &other.sum_x;
        self.count += other.count;
        Ok(())
    }

    /// Number of samples seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sample mean `μ = E[x]` (zeros before any sample).
    pub fn mean(&self) -> DVector<f64> {
        if self.count == 0 {
            return DVector::zeros(self.dim);
        }
        &self.sum_x / self.count as f64
    }

    /// The `dim×dim` symmetric matrix `E[x·xᵀ]` (or `E[x·xᵀ] − μ·μᵀ` when
    /// centered), normalised by the sample count; all zeros before any sample.
    pub fn covariance(&self) -> DMatrix<f64> {
        if self.count == 0 {
            return DMatrix::zeros(self.dim, self.dim);
        }
        let mut c = &self.sum_xxt / self.count as f64;
        if self.centered {
            let mu = self.mean();
            c -= &mu * mu.transpose();
        }
        // Exact symmetry for the eigen solver.
        (&c + c.transpose()) * 0.5
    }

    /// The top-`k` eigenpairs of [`covariance`](Self::covariance): eigenvalues
    /// (length `k`, descending) and eigenvectors as orthonormal columns (`dim×k`).
    ///
    /// Uses nalgebra's `SymmetricEigen` up to `dim = 256` and the adaptive
    /// randomized [`crate::top_k`] above (the matrix is positive semi-definite, so its
    /// singular pairs are its eigenpairs).
    ///
    /// # Errors
    /// [`SpectralError::Empty`] before any sample, [`SpectralError::InvalidArgument`]
    /// unless `1 ≤ k ≤ dim`.
    pub fn top_k_eigenvectors(
        &self,
        k: usize,
    ) -> Result<(DVector<f64>, DMatrix<f64>), SpectralError> {
        if self.count == 0 || self.dim == 0 {
            return Err(SpectralError::Empty {
                what: "covariance accumulator",
            });
        }
        if k == 0 || k > self.dim {
            return Err(SpectralError::InvalidArgument(format!(
                "k must be in 1..={} (the sample dimension), got {k}",
                self.dim
            )));
        }
        let c = self.covariance();
        if self.dim > crate::randomized::TOP_K_DENSE_LIMIT {
            let t = crate::randomized::top_k(&c, k)?;
            return Ok((t.singular_values, t.u));
        }
        let eig = SymmetricEigen::new(c);
        let mut order: Vec<usize> = (0..self.dim).collect();
        order.sort_by(|&i, &j| {
            eig.eigenvalues[j]
                .partial_cmp(&eig.eigenvalues[i])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut vals = DVector::zeros(k);
        let mut vecs = DMatrix::zeros(self.dim, k);
        for (dst, &src) in order.iter().take(k).enumerate() {
            vals[dst] = eig.eigenvalues[src];
            vecs.column_mut(dst)
                .copy_from(&eig.eigenvectors.column(src));
        }
        Ok((vals, vecs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn second_moment_of_known_samples() {
        let mut acc = CovarianceAccumulator::new(2);
        acc.push_batch(&DMatrix::from_row_slice(2, 2, &[1.0, 0.0, 3.0, 0.0]))
            .unwrap();
        acc.push_batch_f32(&[0.0, 2.0], 1).unwrap();
        assert_eq!(acc.count(), 3);
        let c = acc.covariance();
        assert_relative_eq!(
            c,
            DMatrix::from_row_slice(2, 2, &[10.0 / 3.0, 0.0, 0.0, 4.0 / 3.0])
        );
        let (vals, vecs) = acc.top_k_eigenvectors(1).unwrap();
        assert_relative_eq!(vals[0], 10.0 / 3.0, epsilon = 1e-12);
        assert_relative_eq!(vecs[(0, 0)].abs(), 1.0, epsilon = 1e-12);
    }

    #[test]
    fn centered_and_merge_and_resume() {
        let x = DMatrix::from_row_slice(3, 2, &[1.0, 2.0, 3.0, 2.0, 5.0, 2.0]);
        let mut all = CovarianceAccumulator::new_centered(2);
        all.push_batch(&x).unwrap();
        let mut first = CovarianceAccumulator::new_centered(2);
        first.push_batch(&x.rows(0, 1).into_owned()).unwrap();
        let json = serde_json::to_string(&first).unwrap();
        let mut resumed: CovarianceAccumulator = serde_json::from_str(&json).unwrap();
        let mut second = CovarianceAccumulator::new_centered(2);
        second.push_batch(&x.rows(1, 2).into_owned()).unwrap();
        resumed.merge(&second).unwrap();
        assert_relative_eq!(resumed.covariance(), all.covariance(), epsilon = 1e-12);
        // Column 1 is constant, so its centered variance is 0; column 0 has variance 8/3.
        let c = all.covariance();
        assert_relative_eq!(c[(0, 0)], 8.0 / 3.0, epsilon = 1e-12);
        assert_relative_eq!(c[(1, 1)], 0.0, epsilon = 1e-12);
        assert!(resumed.merge(&CovarianceAccumulator::new(2)).is_err());
    }

    #[test]
    fn errors() {
        let mut acc = CovarianceAccumulator::new(3);
        assert!(acc.top_k_eigenvectors(1).is_err());
        assert!(acc.push_batch(&DMatrix::zeros(2, 4)).is_err());
        assert!(acc.push_batch_f32(&[1.0; 5], 2).is_err());
        assert!(acc.push_batch_f32(&[f32::NAN, 0.0, 0.0], 1).is_err());
        assert_eq!(acc.count(), 0);
        acc.push_batch_f32(&[1.0, 2.0, 3.0], 1).unwrap();
        assert!(acc.top_k_eigenvectors(0).is_err());
        assert!(acc.top_k_eigenvectors(4).is_err());
        assert!(acc.top_k_eigenvectors(3).is_ok());
    }
}
