//! The spectral norm `‖M‖₂ = σ1(M)` of a dense matrix to near machine precision.

use nalgebra::{DMatrix, DVector, RealField};

use crate::error::{SpectralError, check_matrix};
use crate::randomized::top_k;

/// Largest number of power-iteration steps [`refine_sigma1`] takes.
pub const SIGMA1_MAX_ITERATIONS: usize = 500;

/// `σ1(m) = ‖m‖₂`: [`top_k`]'s estimate (exact up to `min(m, n) = 256`, randomized above,
/// relative error below about `1e-4`) polished by [`refine_sigma1`].
///
/// # Errors
/// [`SpectralError::Empty`] or [`SpectralError::NonFinite`] for bad input.
pub fn spectral_norm<T: RealField + Copy>(m: &DMatrix<T>) -> Result<T, SpectralError> {
    check_matrix(m, "matrix")?;
    let top = top_k(m, 1)?;
    let v: DVector<T> = top.v_t.row(0).transpose();
    Ok(refine_sigma1(m, &v, top.sigma1()))
}

/// Polish an estimate `sigma1` of `σ1(m)` by power iteration on `mᵀm`, started from the
/// right vector `v` (unit norm, the estimate's top right singular vector).
///
/// Every iterate `‖mᵀ(m v)/‖m v‖‖` is a lower bound of `σ1` that increases towards it, so
/// the result is never below `sigma1` and stops when a step gains less than
/// `1e-13·σ1` (or after [`SIGMA1_MAX_ITERATIONS`] steps). Preconditions: `m` finite,
/// `sigma1 ≤ σ1(m)` (any lower bound, e.g. a randomized estimate), and `v` close to the top
/// right singular vector — from a start (nearly) orthogonal to it, the iteration stalls at
/// a smaller singular value.
pub fn refine_sigma1<T: RealField + Copy>(m: &DMatrix<T>, v: &DVector<T>, sigma1: T) -> T {
    let tol = T::from_f64(1e-13).unwrap_or_else(T::default_epsilon);
    let mut best = sigma1;
    let mut v = v.clone();
    for _ in 0..SIGMA1_MAX_ITERATIONS {
        let u = m * &v;
        let nu = u.norm();
        if nu == T::zero() || !nu.is_finite() {
            break;
        }
        let w = m.tr_mul(&(u / nu));
        let sigma = w.norm();
        if sigma == T::zero() || !sigma.is_finite() {
            break;
        }
        v = w / sigma;
        let gain = sigma - best;
        if sigma > best {
            best = sigma;
        }
        if gain <= tol * best {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    /// `U·diag(s)·Vᵀ` with orthonormal `U`, `V` from QR of fixed pseudo-random matrices:
    /// its singular values are `s` by construction.
    fn with_spectrum(m: usize, n: usize, s: &[f64]) -> DMatrix<f64> {
        let k = s.len();
        let q = |r: usize, seed: f64| {
            DMatrix::from_fn(r, k, |i, j| ((i * 31 + j * 17) as f64 * seed).sin())
                .qr()
                .q()
        };
        q(m, 0.913)
            * DMatrix::from_diagonal(&DVector::from_column_slice(s))
            * q(n, 0.377).transpose()
    }

    #[test]
    fn small_matrix_matches_dense_svd() {
        let m = DMatrix::from_fn(7, 5, |i, j| ((i * 5 + j) as f64 * 0.37).sin());
        let exact = m.clone().svd(false, false).singular_values.max();
        assert_relative_eq!(spectral_norm(&m).unwrap(), exact, max_relative = 1e-12);
    }

    #[test]
    fn randomized_path_reaches_the_constructed_sigma1() {
        // min(m, n) > 256: top_k is randomized; a flat top (5.0 vs 4.99) is its hard case.
        let s: Vec<f64> = (0..40)
            .map(|i| {
                if i == 0 {
                    5.0
                } else {
                    4.99 / (1.0 + i as f64 * 0.05)
                }
            })
            .collect();
        let m = with_spectrum(300, 280, &s);
        assert_relative_eq!(spectral_norm(&m).unwrap(), 5.0, max_relative = 1e-9);
    }

    #[test]
    fn refinement_never_lowers_a_lower_bound() {
        let m = with_spectrum(20, 12, &[3.0, 2.0, 1.0]);
        // A generic start (not orthogonal to the top right singular vector).
        let v = DVector::from_element(12, 1.0 / 12f64.sqrt());
        let got = refine_sigma1(&m, &v, 0.5);
        assert!((0.5..=3.0 + 1e-12).contains(&got));
        assert_relative_eq!(got, 3.0, max_relative = 1e-6);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(spectral_norm(&DMatrix::<f64>::zeros(0, 3)).is_err());
        assert!(spectral_norm(&DMatrix::from_element(2, 2, f64::NAN)).is_err());
    }
}
