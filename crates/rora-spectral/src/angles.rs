//! Principal angles between subspaces and intruder dimensions (singular vectors of
//! an adapted weight that are nearly orthogonal to the pretrained ones).

use nalgebra::{DMatrix, DVector, RealField, linalg::QR};

use crate::error::{SpectralError, check_dim, check_matrix, check_scalar};
use crate::svd::singular_values;

/// Threshold on the largest |cosine| below which an adapted singular vector is an
/// intruder dimension. Shuttleworth et al., *LoRA vs Full Fine-tuning: An Illusion
/// of Equivalence* (2024), sweep the threshold ε; `0.5` is a middle value of their
/// sweep, used here as the default.
pub const DEFAULT_INTRUDER_THRESHOLD: f64 = 0.5;

/// Principal angles (radians, ascending, in `[0, π/2]`) between the column spaces
/// of `q1: m×k1` and `q2: m×k2`; `min(k1, k2)` angles.
///
/// The columns are orthonormalized by a thin QR internally (precondition: full
/// column rank, otherwise the QR completes the basis arbitrarily). Cosines are the
/// singular values of `Q1ᵀQ2`, sines those of `Q2 − Q1(Q1ᵀQ2)` (with `Q2` the
/// smaller basis); each angle is `atan2(sin, cos)`, which stays accurate for small
/// and for nearly right angles (Knyazev & Argentati, 2002).
///
/// # Errors
/// Empty/non-finite inputs, [`SpectralError::ShapeMismatch`] when the row counts
/// differ.
pub fn principal_angles<T: RealField + Copy>(
    q1: &DMatrix<T>,
    q2: &DMatrix<T>,
) -> Result<DVector<T>, SpectralError> {
    check_matrix(q1, "first basis")?;
    check_matrix(q2, "second basis")?;
    check_dim("basis rows (ambient dimension)", q1.nrows(), q2.nrows())?;
    // Let x be the larger basis and y the smaller: min(k1, k2) angles.
    let (x, y) = if q1.ncols() >= q2.ncols() {
        (q1, q2)
    } else {
        (q2, q1)
    };
    let qx = QR::new(x.clone()).q();
    let qy = QR::new(y.clone()).q();
    let k = qy.ncols().min(qx.ncols());
    let cross = qx.transpose() * &qy;
    let cos = singular_values(&cross)?; // descending
    let resid = &qy - &qx * &cross;
    let sin = singular_values(&resid)?; // descending; ascending when reversed
    let one = T::one();
    let mut angles: Vec<T> = (0..k)
        .map(|i| {
            let c = cos[i].min(one).max(T::zero());
            // `resid` has min(m, ky) values; pair the i-th largest cosine with the
            // i-th smallest sine.
            let s = if sin.len() > i {
                sin[sin.len() - 1 - i].min(one).max(T::zero())
            } else {
                (one - c * c).max(T::zero()).sqrt()
            };
            s.atan2(c)
        })
        .collect();
    angles.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    Ok(DVector::from_vec(angles))
}

/// Intruder dimensions: indices `j < min(top_n, adapted_u.ncols())` of the columns
/// of `adapted_u: m×p` (top singular vectors of the adapted weight `W0 + ΔW`,
/// descending) whose largest absolute cosine with every column of `base_u: m×q`
/// (singular vectors of `W0`) is below `threshold` (Shuttleworth et al., 2024; see
/// [`DEFAULT_INTRUDER_THRESHOLD`]).
///
/// Preconditions: unit-norm columns in both. With only the top-`k` base vectors the
/// test reads "not aligned with any dominant pretrained direction"; pass all base
/// singular vectors for the paper's definition.
///
/// # Errors
/// Empty/non-finite inputs, [`SpectralError::ShapeMismatch`] when the row counts
/// differ.
pub fn intruder_dimensions<T: RealField + Copy>(
    adapted_u: &DMatrix<T>,
    base_u: &DMatrix<T>,
    top_n: usize,
    threshold: T,
) -> Result<Vec<usize>, SpectralError> {
    check_matrix(adapted_u, "adapted singular vectors")?;
    check_matrix(base_u, "base singular vectors")?;
    check_scalar(threshold, "intruder threshold")?;
    check_dim("singular vector length", base_u.nrows(), adapted_u.nrows())?;
    let n = top_n.min(adapted_u.ncols());
    let cos = base_u.transpose() * adapted_u.columns(0, n); // q×n
    Ok((0..n)
        .filter(|&j| cos.column(j).amax() < threshold)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use std::f64::consts::FRAC_PI_2;

    #[test]
    fn coordinate_planes() {
        let e = DMatrix::<f64>::identity(4, 4);
        let a = e.columns(0, 2).into_owned();
        let b = e.columns(1, 2).into_owned(); // shares e1 with a
        let ang = principal_angles(&a, &b).unwrap();
        assert_relative_eq!(ang[0], 0.0, epsilon = 1e-12);
        assert_relative_eq!(ang[1], FRAC_PI_2, epsilon = 1e-12);
        let c = e.columns(2, 2).into_owned();
        let ang = principal_angles(&a, &c).unwrap();
        assert!(ang.iter().all(|&x| (x - FRAC_PI_2).abs() < 1e-12));
        // Different dimensions: one angle.
        let ang = principal_angles(&a, &e.columns(0, 1).into_owned()).unwrap();
        assert_eq!(ang.len(), 1);
        assert_relative_eq!(ang[0], 0.0, epsilon = 1e-12);
    }

    #[test]
    fn small_angle_is_accurate() {
        let t = 1e-9f64;
        let a = DMatrix::from_column_slice(2, 1, &[1.0, 0.0]);
        let b = DMatrix::from_column_slice(2, 1, &[t.cos(), t.sin()]);
        let ang = principal_angles(&a, &b).unwrap();
        assert_relative_eq!(ang[0], t, max_relative = 1e-6);
    }

    #[test]
    fn intruders() {
        let e = DMatrix::<f32>::identity(3, 3);
        let base = e.columns(0, 1).into_owned();
        let adapted = e.clone();
        assert_eq!(
            intruder_dimensions(&adapted, &base, 3, 0.5).unwrap(),
            vec![1, 2]
        );
        assert_eq!(
            intruder_dimensions(&adapted, &base, 1, 0.5).unwrap(),
            Vec::<usize>::new()
        );
        assert!(intruder_dimensions(&adapted, &DMatrix::identity(4, 1), 3, 0.5).is_err());
        assert!(principal_angles(&adapted, &DMatrix::identity(4, 1)).is_err());
    }
}
