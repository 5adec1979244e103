//! The crate's error type and the input checks shared by every public function.

use nalgebra::{DMatrix, DVector, RealField};
use thiserror::Error;

/// Everything that can go wrong in `rora-spectral`.
///
/// Every public fallible function returns `Result<_, SpectralError>`; no public
/// function panics on user input (empty matrices, NaN, mismatched shapes, `k = 0`,
/// `k` too large).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SpectralError {
    /// An input matrix or vector has no entries (a zero dimension).
    #[error("{what} is empty")]
    Empty {
        /// Which input was empty.
        what: &'static str,
    },
    /// An input (or an intermediate result) contains NaN or ±∞.
    #[error("{what} contains a non-finite value (NaN or infinity)")]
    NonFinite {
        /// Which input was non-finite.
        what: &'static str,
    },
    /// Two inputs have shapes that do not fit together.
    #[error("shape mismatch for {what}: expected {expected}, found {found}")]
    ShapeMismatch {
        /// What was being checked, e.g. `"B·A inner dimension"`.
        what: String,
        /// The expected shape or size.
        expected: String,
        /// The shape or size that was given.
        found: String,
    },
    /// An argument is outside its domain (`k = 0`, `k` above the rank bound, a
    /// negative target, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The update `B·A` is exactly zero, so it cannot be rescaled to a target.
    #[error("the update B·A is zero: it has no singular direction to rescale")]
    ZeroUpdate,
    /// An iterative decomposition did not converge within its iteration budget.
    #[error("{what} did not converge")]
    NoConvergence {
        /// Which decomposition failed.
        what: &'static str,
    },
}

/// Checks that a matrix is non-empty and finite.
pub(crate) fn check_matrix<T: RealField + Copy>(
    m: &DMatrix<T>,
    what: &'static str,
) -> Result<(), SpectralError> {
    if m.is_empty() {
        return Err(SpectralError::Empty { what });
    }
    if m.iter().any(|x| !x.is_finite()) {
        return Err(SpectralError::NonFinite { what });
    }
    Ok(())
}

/// Checks that a vector is finite (it may be empty).
pub(crate) fn check_vector<T: RealField + Copy>(
    v: &DVector<T>,
    what: &'static str,
) -> Result<(), SpectralError> {
    if v.iter().any(|x| !x.is_finite()) {
        return Err(SpectralError::NonFinite { what });
    }
    Ok(())
}

/// Checks that a scalar is finite.
pub(crate) fn check_scalar<T: RealField + Copy>(
    x: T,
    what: &'static str,
) -> Result<(), SpectralError> {
    if !x.is_finite() {
        return Err(SpectralError::NonFinite { what });
    }
    Ok(())
}

/// Checks that `found == expected` for one dimension.
pub(crate) fn check_dim(what: &str, expected: usize, found: usize) -> Result<(), SpectralError> {
    if expected != found {
        return Err(SpectralError::ShapeMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            found: found.to_string(),
        });
    }
    Ok(())
}

/// Checks the factor pair of `ΔW = s·B·A`: both non-empty and finite, `B: out×r`,
/// `A: r×in`.
pub(crate) fn check_factors<T: RealField + Copy>(
    b: &DMatrix<T>,
    a: &DMatrix<T>,
) -> Result<(), SpectralError> {
    check_matrix(b, "factor B")?;
    check_matrix(a, "factor A")?;
    if b.ncols() != a.nrows() {
        return Err(SpectralError::ShapeMismatch {
            what: "B·A inner dimension (B.ncols must equal A.nrows)".to_string(),
            expected: format!("A with {} rows", b.ncols()),
            found: format!("A of shape {}×{}", a.nrows(), a.ncols()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_problem() {
        let e = SpectralError::Empty { what: "factor B" };
        assert_eq!(e.to_string(), "factor B is empty");
        let e = check_dim("rows", 3, 4).unwrap_err();
        assert!(e.to_string().contains("expected 3, found 4"));
    }

    #[test]
    fn checks_reject_bad_inputs() {
        let empty = DMatrix::<f64>::zeros(0, 3);
        assert!(matches!(
            check_matrix(&empty, "m"),
            Err(SpectralError::Empty { .. })
        ));
        let nan = DMatrix::from_element(2, 2, f64::NAN);
        assert!(matches!(
            check_matrix(&nan, "m"),
            Err(SpectralError::NonFinite { .. })
        ));
        let b = DMatrix::<f32>::zeros(3, 2);
        let a = DMatrix::<f32>::zeros(3, 4);
        assert!(matches!(
            check_factors(&b, &a),
            Err(SpectralError::ShapeMismatch { .. })
        ));
    }
}
