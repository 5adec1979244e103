//! SVD of a low-rank update `s·B·A` from its factors, and refactoring it into new
//! factors (balanced, or with prescribed singular values).
//!
//! Shapes follow PyTorch/PEFT: `B: out×r`, `A: r×in`, `ΔW = s·B·A: out×in`. Nothing
//! here forms `ΔW`: the SVD comes from thin QRs of `B` and `Aᵀ` and an `r×r` SVD, in
//! `O((out + in)·r²)`.

use nalgebra::{DMatrix, DVector, RealField, linalg::QR};

use crate::error::{SpectralError, check_factors, check_scalar, check_vector};
use crate::svd::{Svd, svd};

/// SVD of `scale·B·A` without forming the product.
///
/// `B: out×r`, `A: r×in`, `scale` any finite number (a negative scale flips the left
/// vectors' signs, singular values stay `≥ 0`). Thin QRs `B = Q_B·R_B` and
/// `Aᵀ = Q_A·R_A`, an SVD of the core `scale·R_B·R_Aᵀ`, then `U = Q_B·U_core`,
/// `V = Q_A·V_core`.
///
/// Returns `p = min(r, out, in)` triplets: `u: out×p`, `v_t: p×in`. When `r` exceeds
/// a side the QR yields `min` dimensions; rank-deficient factors (zero or dependent
/// columns) give singular values that are exactly or numerically zero.
///
/// # Errors
/// [`SpectralError::Empty`] / [`SpectralError::NonFinite`] for empty or non-finite
/// factors or scale, [`SpectralError::ShapeMismatch`] when `b.ncols() != a.nrows()`.
pub fn factored_svd<T: RealField + Copy>(
    b: &DMatrix<T>,
    a: &DMatrix<T>,
    scale: T,
) -> Result<Svd<T>, SpectralError> {
    check_factors(b, a)?;
    check_scalar(scale, "scale")?;
    let qr_b = QR::new(b.clone());
    let qr_a = QR::new(a.transpose());
    let (q_b, r_b) = (qr_b.q(), qr_b.r());
    let (q_a, r_a) = (qr_a.q(), qr_a.r());
    let core = (r_b * r_a.transpose()) * scale;
    let c = svd(&core)?;
    let u = q_b * c.u;
    let v_t = c.v_t * q_a.transpose();
    Ok(Svd {
        u,
        singular_values: c.singular_values,
        v_t,
    })
}

/// Squared Frobenius norm of `scale·B·A`, computed from the factors as
/// `scale²·Σᵢⱼ (BᵀB)ᵢⱼ·(AAᵀ)ᵢⱼ = scale²·trace((BᵀB)(AAᵀ))` in `O((out+in)·r²)`.
///
/// # Errors
/// As [`factored_svd`].
pub fn factored_frobenius_sq<T: RealField + Copy>(
    b: &DMatrix<T>,
    a: &DMatrix<T>,
    scale: T,
) -> Result<T, SpectralError> {
    check_factors(b, a)?;
    check_scalar(scale, "scale")?;
    let btb = b.transpose() * b;
    let aat = a * a.transpose();
    let tr = btb.component_mul(&aat).sum();
    // Rounding can make a tiny trace negative; the true value is ≥ 0.
    Ok((tr * scale * scale).max(T::zero()))
}

/// Balanced factors of a decomposition: `B' = U·√Σ` (`m×p`) and `A' = √Σ·Vᵀ`
/// (`p×n`), so that `B'·A' = U·Σ·Vᵀ` and both factors carry the same energy.
///
/// Precondition: `svd` satisfies the [`Svd`] invariants (non-negative values).
pub fn balanced_factors<T: RealField + Copy>(svd: &Svd<T>) -> (DMatrix<T>, DMatrix<T>) {
    let mut b = svd.u.clone();
    let mut a = svd.v_t.clone();
    for (j, s) in svd.singular_values.iter().enumerate() {
        let r = s.max(T::zero()).sqrt();
        b.column_mut(j).scale_mut(r);
        a.row_mut(j).scale_mut(r);
    }
    (b, a)
}

/// New factors of the same rank `r` whose product has the singular subspaces of
/// `scale·B·A` and exactly the requested singular values.
///
/// With `scale·B·A = U·diag(σ)·Vᵀ` (`p = min(r, out, in)` triplets, `σ`
/// descending), returns `B' = U·diag(√σ')` padded with zero columns to `out×r` and
/// `A' = diag(√σ')·Vᵀ` padded with zero rows to `r×in`, so that
///
/// ```text
/// B'·A' = U·diag(σ')·Vᵀ        (the scale is NOT applied again)
/// ```
///
/// The caller stores the new adapter with scale `1` (or divides one factor by the
/// scale it keeps). `new_singular_values[i]` replaces the `i`-th largest singular
/// value of `scale·B·A`; if the new values are not descending, the product's
/// singular values are their sorted permutation. A direction whose old singular
/// value was zero has an arbitrary (but orthonormal) vector, so give it a zero new
/// value unless that is intended.
///
/// # Errors
/// As [`factored_svd`], plus [`SpectralError::ShapeMismatch`] when
/// `new_singular_values.len() != p` and [`SpectralError::InvalidArgument`] for a
/// negative value.
pub fn rescaled_factors<T: RealField + Copy>(
    b: &DMatrix<T>,
    a: &DMatrix<T>,
    scale: T,
    new_singular_values: &DVector<T>,
) -> Result<(DMatrix<T>, DMatrix<T>), SpectralError> {
    let dec = factored_svd(b, a, scale)?;
    check_vector(new_singular_values, "new singular values")?;
    let p = dec.len();
    if new_singular_values.len() != p {
        return Err(SpectralError::ShapeMismatch {
            what: "number of new singular values (min(r, out, in))".to_string(),
            expected: p.to_string(),
            found: new_singular_values.len().to_string(),
        });
    }
    if new_singular_values.iter().any(|&s| s < T::zero()) {
        return Err(SpectralError::InvalidArgument(
            "new singular values must be non-negative".to_string(),
        ));
    }
    let r = b.ncols();
    let (out, inp) = (b.nrows(), a.ncols());
    let mut b2 = DMatrix::zeros(out, r);
    let mut a2 = DMatrix::zeros(r, inp);
    for j in 0..p {
        let root = new_singular_values[j].sqrt();
        b2.column_mut(j).copy_from(&(dec.u.column(j) * root));
        a2.row_mut(j).copy_from(&(dec.v_t.row(j) * root));
    }
    Ok((b2, a2))
}

/// The scale `s'` such that `σ1(s'·B·A) = target_sigma1`, i.e.
/// `s' = sign(scale)·target_sigma1/σ1(B·A)` (the paper's post-training rescaling
/// uses `target_sigma1 = σ1(W0)`). The sign of `scale` is kept so the update's
/// direction is preserved (`scale = 0` counts as positive).
///
/// # Errors
/// [`SpectralError::ZeroUpdate`] when `B·A = 0` (no scale reaches a positive
/// target), [`SpectralError::InvalidArgument`] for a negative target, and the errors
/// of [`factored_svd`].
pub fn scale_to_sigma1<T: RealField + Copy>(
    b: &DMatrix<T>,
    a: &DMatrix<T>,
    scale: T,
    target_sigma1: T,
) -> Result<T, SpectralError> {
    check_scalar(scale, "scale")?;
    check_scalar(target_sigma1, "target sigma1")?;
    if target_sigma1 < T::zero() {
        return Err(SpectralError::InvalidArgument(
            "target sigma1 must be non-negative".to_string(),
        ));
    }
    let sigma1 = factored_svd(b, a, T::one())?.sigma1();
    if sigma1 <= T::zero() {
        return Err(SpectralError::ZeroUpdate);
    }
    let s = target_sigma1 / sigma1;
    Ok(if scale < T::zero() { -s } else { s })
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn example() -> (DMatrix<f64>, DMatrix<f64>) {
        let b = DMatrix::from_fn(6, 2, |i, j| ((i + 3 * j) as f64 * 0.7).cos());
        let a = DMatrix::from_fn(2, 5, |i, j| ((2 * i + j) as f64 * 0.3).sin() + 0.1);
        (b, a)
    }

    #[test]
    fn matches_dense_product() {
        let (b, a) = example();
        let f = factored_svd(&b, &a, 0.5).unwrap();
        let dense = crate::svd::singular_values(&((&b * &a) * 0.5)).unwrap();
        assert_eq!(f.len(), 2);
        assert_relative_eq!(
            f.singular_values,
            dense.rows(0, 2).into_owned(),
            epsilon = 1e-12
        );
        assert_relative_eq!(f.reconstruct(), (&b * &a) * 0.5, epsilon = 1e-12);
        let fro2 = factored_frobenius_sq(&b, &a, 0.5).unwrap();
        assert_relative_eq!(fro2, ((&b * &a) * 0.5).norm_squared(), epsilon = 1e-12);
    }

    #[test]
    fn negative_scale_keeps_values_non_negative() {
        let (b, a) = example();
        let f = factored_svd(&b, &a, -2.0).unwrap();
        assert!(f.singular_values.iter().all(|&s| s >= 0.0));
        assert_relative_eq!(f.reconstruct(), (&b * &a) * -2.0, epsilon = 1e-12);
    }

    #[test]
    fn rank_larger_than_sides_and_zero_columns() {
        // r = 5 > out = 3 and > in = 2; B has a zero column.
        let mut b = DMatrix::from_fn(3, 5, |i, j| (i as f64 + 1.0) * (j as f64 - 1.5));
        b.column_mut(2).fill(0.0);
        let a = DMatrix::from_fn(5, 2, |i, j| ((i * 2 + j) as f64).sin());
        let f = factored_svd(&b, &a, 1.0).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f.u.shape(), (3, 2));
        assert_eq!(f.v_t.shape(), (2, 2));
        assert_relative_eq!(f.reconstruct(), &b * &a, epsilon = 1e-10);
        // All-zero factor: every singular value is 0.
        let z = factored_svd(&DMatrix::<f64>::zeros(4, 3), &DMatrix::zeros(3, 6), 1.0).unwrap();
        assert!(z.singular_values.iter().all(|&s| s == 0.0));
        assert!(matches!(
            scale_to_sigma1(
                &DMatrix::<f64>::zeros(4, 3),
                &DMatrix::zeros(3, 6),
                1.0,
                2.0
            ),
            Err(SpectralError::ZeroUpdate)
        ));
    }

    #[test]
    fn rescale_and_balance() {
        let (b, a) = example();
        let new = DVector::from_vec(vec![3.0, 1.0]);
        let (b2, a2) = rescaled_factors(&b, &a, 0.5, &new).unwrap();
        assert_eq!((b2.shape(), a2.shape()), ((6, 2), (2, 5)));
        let vals = crate::svd::singular_values(&(&b2 * &a2)).unwrap();
        assert_relative_eq!(vals[0], 3.0, epsilon = 1e-12);
        assert_relative_eq!(vals[1], 1.0, epsilon = 1e-12);
        let (bb, ab) = balanced_factors(&factored_svd(&b, &a, 0.5).unwrap());
        assert_relative_eq!(&bb * &ab, (&b * &a) * 0.5, epsilon = 1e-12);
        let s = scale_to_sigma1(&b, &a, -0.5, 7.0).unwrap();
        assert!(s < 0.0);
        assert_relative_eq!(
            factored_svd(&b, &a, s).unwrap().sigma1(),
            7.0,
            epsilon = 1e-12
        );
    }

    #[test]
    fn f32_works() {
        let b = DMatrix::<f32>::from_fn(5, 2, |i, j| (i + j) as f32 * 0.25 - 0.5);
        let a = DMatrix::<f32>::from_fn(2, 4, |i, j| (i * 4 + j) as f32 * 0.1);
        let f = factored_svd(&b, &a, 2.0f32).unwrap();
        assert_relative_eq!(f.reconstruct(), (&b * &a) * 2.0, epsilon = 1e-4);
        let (b2, a2) =
            rescaled_factors(&b, &a, 2.0, &DVector::from_vec(vec![1.0f32, 0.5])).unwrap();
        assert_relative_eq!(
            crate::svd::singular_values(&(&b2 * &a2)).unwrap()[0],
            1.0,
            epsilon = 1e-5
        );
    }

    #[test]
    fn errors() {
        let (b, a) = example();
        assert!(matches!(
            factored_svd(&b, &a.transpose(), 1.0),
            Err(SpectralError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            factored_svd(&b, &a, f64::NAN),
            Err(SpectralError::NonFinite { .. })
        ));
        assert!(matches!(
            rescaled_factors(&b, &a, 1.0, &DVector::from_vec(vec![1.0])),
            Err(SpectralError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            rescaled_factors(&b, &a, 1.0, &DVector::from_vec(vec![1.0, -1.0])),
            Err(SpectralError::InvalidArgument(_))
        ));
        assert!(scale_to_sigma1(&b, &a, 1.0, -1.0).is_err());
    }
}
