//! Scalar metrics of an update `ΔW = s·B·A` relative to the frozen weight `W0`:
//! strength, effective rank, alignment with the dominant pretrained subspaces and
//! with a clean input subspace. Everything is computed from the factors.

use nalgebra::{DMatrix, DVector, RealField};

use crate::error::{SpectralError, check_dim, check_factors, check_matrix, check_scalar};
use crate::factored::factored_frobenius_sq;

/// Ratio of two non-negative magnitudes with the policy shared by the strength
/// metrics: `0` when the numerator is `0` (including `0/0`), `+∞` when only the
/// denominator is `0`.
fn ratio<T: RealField + Copy>(num: T, den: T) -> T {
    if num == T::zero() {
        T::zero()
    } else if den == T::zero() {
        T::one() / T::zero()
    } else {
        num / den
    }
}

/// Strength ratio `ρ = σ1(ΔW)/σ1(W0)`.
///
/// Policy: `0` when `sigma1_update = 0` (even if the base is also `0`); `+∞` when
/// only `sigma1_base = 0`. Inputs are magnitudes (`≥ 0`).
pub fn strength_ratio<T: RealField + Copy>(sigma1_update: T, sigma1_base: T) -> T {
    ratio(sigma1_update, sigma1_base)
}

/// Frobenius ratio `‖ΔW‖F/‖W0‖F`, with the policy of [`strength_ratio`].
pub fn frobenius_ratio<T: RealField + Copy>(update_fro: T, base_fro: T) -> T {
    ratio(update_fro, base_fro)
}

/// Effective rank `exp(H(p))` with `pᵢ = σᵢ/Σσ` and `H` the Shannon entropy
/// (Roy & Vetterli, 2007). Between 1 and the number of non-zero values; `0` for an
/// empty or all-zero vector. Precondition: `σᵢ ≥ 0` (absolute values are used).
pub fn effective_rank<T: RealField + Copy>(singular_values: &DVector<T>) -> T {
    let total = singular_values
        .iter()
        .fold(T::zero(), |acc, s| acc + s.abs());
    if total == T::zero() || !total.is_finite() {
        return T::zero();
    }
    let h = singular_values.iter().fold(T::zero(), |acc, s| {
        let p = s.abs() / total;
        if p > T::zero() { acc - p * p.ln() } else { acc }
    });
    h.exp()
}

/// Left alignment `‖Ukᵀ·B‖F` of the factor `B: out×r` with the top-`k` left
/// singular vectors `Uk: out×k` of `W0` (first term of the paper's constraint Ω).
///
/// # Errors
/// Empty/non-finite inputs, [`SpectralError::ShapeMismatch`] when
/// `uk.nrows() != b.nrows()`.
pub fn left_alignment<T: RealField + Copy>(
    uk: &DMatrix<T>,
    b: &DMatrix<T>,
) -> Result<T, SpectralError> {
    check_matrix(uk, "Uk")?;
    check_matrix(b, "factor B")?;
    check_dim("Uk rows vs B rows (out)", b.nrows(), uk.nrows())?;
    Ok((uk.transpose() * b).norm())
}

/// Right alignment `‖A·Vk‖F` of the factor `A: r×in` with the top-`k` right
/// singular vectors `Vk: in×k` of `W0` (second term of Ω).
///
/// # Errors
/// Empty/non-finite inputs, [`SpectralError::ShapeMismatch`] when
/// `vk.nrows() != a.ncols()`.
pub fn right_alignment<T: RealField + Copy>(
    a: &DMatrix<T>,
    vk: &DMatrix<T>,
) -> Result<T, SpectralError> {
    check_matrix(a, "factor A")?;
    check_matrix(vk, "Vk")?;
    check_dim("Vk rows vs A columns (in)", a.ncols(), vk.nrows())?;
    Ok((a * vk).norm())
}

/// Frobenius norm `‖s·B·A‖F` from the factors (see
/// [`crate::factored_frobenius_sq`]).
///
/// # Errors
/// As [`crate::factored_svd`].
pub fn update_frobenius<T: RealField + Copy>(
    b: &DMatrix<T>,
    a: &DMatrix<T>,
    scale: T,
) -> Result<T, SpectralError> {
    Ok(factored_frobenius_sq(b, a, scale)?.sqrt())
}

/// Clean share `a_c = ‖ΔW·Vc‖F²/‖ΔW‖F²` of the update's energy that acts on the
/// clean input subspace `Vc: in×kc`, with `ΔW = scale·B·A` (`B: out×r`,
/// `A: r×in`), computed as `‖B·(A·Vc)‖F²/trace((BᵀB)(AAᵀ))` — `ΔW` is never
/// formed and the scale cancels.
///
/// Precondition: `Vc` has orthonormal columns (then the share is in `[0, 1]`).
/// Returns `0` for a zero update (or `scale = 0`).
///
/// # Errors
/// Empty/non-finite inputs, [`SpectralError::ShapeMismatch`] when
/// `b.ncols() != a.nrows()` or `vc.nrows() != a.ncols()`.
pub fn clean_share<T: RealField + Copy>(
    b: &DMatrix<T>,
    a: &DMatrix<T>,
    scale: T,
    vc: &DMatrix<T>,
) -> Result<T, SpectralError> {
    check_factors(b, a)?;
    check_scalar(scale, "scale")?;
    check_matrix(vc, "Vc")?;
    check_dim("Vc rows vs A columns (in)", a.ncols(), vc.nrows())?;
    let total = factored_frobenius_sq(b, a, T::one())?;
    if total == T::zero() || scale == T::zero() {
        return Ok(T::zero());
    }
    let part = (b * (a * vc)).norm_squared();
    Ok((part / total).min(T::one()))
}

/// Subspace share `‖Ukᵀ·ΔW‖F/‖ΔW‖F` of the update in the dominant left subspace
/// `Uk: out×k` of `W0`, with `ΔW = scale·B·A`, computed as
/// `‖(UkᵀB)·A‖F/√trace((BᵀB)(AAᵀ))` (the scale cancels). This is the project's
/// trigger alignment `a_t` (see [`crate::critical_scale`]).
///
/// Precondition: `Uk` has orthonormal columns (then the share is in `[0, 1]`).
/// Returns `0` for a zero update.
///
/// # Errors
/// Empty/non-finite inputs, [`SpectralError::ShapeMismatch`] when
/// `b.ncols() != a.nrows()` or `uk.nrows() != b.nrows()`.
pub fn subspace_share<T: RealField + Copy>(
    uk: &DMatrix<T>,
    b: &DMatrix<T>,
    a: &DMatrix<T>,
    scale: T,
) -> Result<T, SpectralError> {
    check_factors(b, a)?;
    check_scalar(scale, "scale")?;
    check_matrix(uk, "Uk")?;
    check_dim("Uk rows vs B rows (out)", b.nrows(), uk.nrows())?;
    let total = factored_frobenius_sq(b, a, T::one())?;
    if total == T::zero() || scale == T::zero() {
        return Ok(T::zero());
    }
    let part = ((uk.transpose() * b) * a).norm_squared();
    Ok((part / total).min(T::one()).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn ratio_policy() {
        assert_eq!(strength_ratio(0.0f64, 0.0), 0.0);
        assert_eq!(strength_ratio(1.0f32, 0.0), f32::INFINITY);
        assert_eq!(strength_ratio(1.0f64, 4.0), 0.25);
        assert_eq!(frobenius_ratio(3.0f64, 6.0), 0.5);
    }

    #[test]
    fn effective_rank_bounds() {
        assert_eq!(effective_rank(&DVector::<f64>::zeros(3)), 0.0);
        assert_eq!(effective_rank(&DVector::<f64>::zeros(0)), 0.0);
        assert_relative_eq!(effective_rank(&DVector::from_vec(vec![2.0f64, 0.0])), 1.0);
        assert_relative_eq!(
            effective_rank(&DVector::from_vec(vec![1.0f32; 4])),
            4.0,
            epsilon = 1e-5
        );
    }

    #[test]
    fn shares_match_dense() {
        let b = DMatrix::from_fn(5, 2, |i, j| ((i + 2 * j) as f64).cos());
        let a = DMatrix::from_fn(2, 4, |i, j| ((3 * i + j) as f64).sin());
        let dw = (&b * &a) * 0.3;
        let vc = DMatrix::from_fn(4, 2, |i, j| if i == j { 1.0 } else { 0.0 });
        let share = clean_share(&b, &a, 0.3, &vc).unwrap();
        assert_relative_eq!(
            share,
            (&dw * &vc).norm_squared() / dw.norm_squared(),
            epsilon = 1e-12
        );
        let uk = DMatrix::from_fn(5, 1, |i, _| if i == 4 { 1.0 } else { 0.0 });
        let s = subspace_share(&uk, &b, &a, 0.3).unwrap();
        assert_relative_eq!(
            s,
            (uk.transpose() * &dw).norm() / dw.norm(),
            epsilon = 1e-12
        );
        assert_relative_eq!(
            left_alignment(&uk, &b).unwrap(),
            (uk.transpose() * &b).norm()
        );
        assert_relative_eq!(right_alignment(&a, &vc).unwrap(), (&a * &vc).norm());
        assert_relative_eq!(
            update_frobenius(&b, &a, 0.3).unwrap(),
            dw.norm(),
            epsilon = 1e-12
        );
    }

    #[test]
    fn zero_update_and_errors() {
        let b = DMatrix::<f64>::zeros(3, 2);
        let a = DMatrix::<f64>::zeros(2, 3);
        let v = DMatrix::<f64>::identity(3, 1);
        assert_eq!(clean_share(&b, &a, 1.0, &v).unwrap(), 0.0);
        assert_eq!(subspace_share(&v, &b, &a, 1.0).unwrap(), 0.0);
        assert!(clean_share(&b, &a, 1.0, &DMatrix::identity(4, 1)).is_err());
        assert!(left_alignment(&DMatrix::identity(4, 1), &b).is_err());
        assert!(right_alignment(&a, &DMatrix::identity(2, 1)).is_err());
    }
}
