//! Dense thin singular value decomposition with descending singular values.

use nalgebra::{DMatrix, DVector, RealField, linalg::SVD};
use serde::{Deserialize, Serialize};

use crate::error::{SpectralError, check_matrix};

/// A thin singular value decomposition `M = U·diag(σ)·Vᵀ` of an `m×n` matrix.
///
/// Invariants (upheld by every constructor in this crate): with `p` the number of
/// singular triplets, `u` is `m×p` with orthonormal columns, `singular_values` has
/// length `p`, is sorted in descending order and is non-negative, and `v_t` is `p×n`
/// with orthonormal rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "T: nalgebra::Scalar + Serialize",
    deserialize = "T: nalgebra::Scalar + Deserialize<'de>"
))]
pub struct Svd<T: nalgebra::Scalar> {
    /// Left singular vectors, `m×p`, orthonormal columns.
    pub u: DMatrix<T>,
    /// Singular values, length `p`, descending, `≥ 0`.
    pub singular_values: DVector<T>,
    /// Right singular vectors transposed, `p×n`, orthonormal rows.
    pub v_t: DMatrix<T>,
}

impl<T: RealField + Copy> Svd<T> {
    /// Number of singular triplets `p`.
    pub fn len(&self) -> usize {
        self.singular_values.len()
    }

    /// `true` when the decomposition holds no triplet.
    pub fn is_empty(&self) -> bool {
        self.singular_values.is_empty()
    }

    /// The best rank-`k` truncation: the first `min(k, p)` triplets (`u: m×k`,
    /// `σ: k`, `v_t: k×n`). `k = 0` gives an empty decomposition.
    pub fn rank_k(&self, k: usize) -> Svd<T> {
        let k = k.min(self.len());
        Svd {
            u: self.u.columns(0, k).into_owned(),
            singular_values: self.singular_values.rows(0, k).into_owned(),
            v_t: self.v_t.rows(0, k).into_owned(),
        }
    }

    /// Rebuilds the `m×n` matrix `U·diag(σ)·Vᵀ`.
    pub fn reconstruct(&self) -> DMatrix<T> {
        let mut us = self.u.clone();
        for (j, s) in self.singular_values.iter().enumerate() {
            us.column_mut(j).scale_mut(*s);
        }
        us * &self.v_t
    }

    /// The largest singular value `σ1` (the spectral norm), `0` when empty.
    pub fn sigma1(&self) -> T {
        self.singular_values.get(0).copied().unwrap_or_else(T::zero)
    }

    /// The right singular vectors as columns, `n×p` (that is, `v_t` transposed).
    pub fn v(&self) -> DMatrix<T> {
        self.v_t.transpose()
    }
}

/// The iteration budget handed to nalgebra so a pathological input fails instead of
/// looping forever.
fn max_iterations(m: &DMatrix<impl nalgebra::Scalar>) -> usize {
    1000 + 100 * m.nrows().min(m.ncols())
}

/// Sorts triplets by descending singular value and flips the sign of any negative
/// value (and of its left vector) so that `σ ≥ 0`.
pub(crate) fn sorted<T: RealField + Copy>(u: DMatrix<T>, s: DVector<T>, v_t: DMatrix<T>) -> Svd<T> {
    let p = s.len();
    let mut order: Vec<usize> = (0..p).collect();
    order.sort_by(|&i, &j| {
        s[j].abs()
            .partial_cmp(&s[i].abs())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut u2 = DMatrix::zeros(u.nrows(), p);
    let mut v2 = DMatrix::zeros(p, v_t.ncols());
    let mut s2 = DVector::zeros(p);
    for (dst, &src) in order.iter().enumerate() {
        let sign = if s[src] < T::zero() {
            -T::one()
        } else {
            T::one()
        };
        s2[dst] = s[src].abs();
        u2.column_mut(dst).copy_from(&(u.column(src) * sign));
        v2.row_mut(dst).copy_from(&v_t.row(src));
    }
    Svd {
        u: u2,
        singular_values: s2,
        v_t: v2,
    }
}

/// Thin SVD of a dense `m×n` matrix, `p = min(m, n)` triplets, singular values in
/// descending order.
///
/// Uses nalgebra's implicit-shift bidiagonal SVD, which costs `O(m·n·p)` but runs
/// about 20× slower than LAPACK at `1024×1024` (see `docs/PERFORMANCE.md`); prefer
/// [`crate::top_k`] or [`crate::factored_svd`] for large or low-rank inputs.
///
/// # Errors
/// [`SpectralError::Empty`] for a matrix with a zero dimension,
/// [`SpectralError::NonFinite`] for NaN/∞ entries, [`SpectralError::NoConvergence`]
/// if the iteration budget runs out.
pub fn svd<T: RealField + Copy>(m: &DMatrix<T>) -> Result<Svd<T>, SpectralError> {
    check_matrix(m, "matrix")?;
    let eps = T::default_epsilon() * nalgebra::convert(5.0);
    let dec = SVD::try_new_unordered(m.clone(), true, true, eps, max_iterations(m));
    let fast = match dec {
        Some(SVD {
            u: Some(u),
            v_t: Some(v_t),
            singular_values,
        }) => Some(sorted(u, singular_values, v_t)),
        _ => None,
    };
    // nalgebra's SVD can lose accuracy when some singular values are tiny but
    // non-zero (dimforge/nalgebra#1172, unfixed in 0.35): check the residual and
    // fall back to one-sided Jacobi, which is accurate but slower.
    let out = match fast {
        Some(d) if residual_ok(m, &d) => d,
        _ => jacobi_svd(m).ok_or(SpectralError::NoConvergence { what: "dense SVD" })?,
    };
    if out.singular_values.iter().any(|x| !x.is_finite()) {
        return Err(SpectralError::NonFinite { what: "SVD result" });
    }
    Ok(out)
}

/// `‖M − U·Σ·Vᵀ‖F ≤ 100·ε·(m + n)·‖M‖F`.
fn residual_ok<T: RealField + Copy>(m: &DMatrix<T>, d: &Svd<T>) -> bool {
    if d.singular_values.iter().any(|x| !x.is_finite()) {
        return false;
    }
    let norm = m.norm();
    let tol = T::default_epsilon()
        * nalgebra::convert::<f64, T>(100.0 * (m.nrows() + m.ncols()) as f64)
        * norm;
    (m - d.reconstruct()).norm() <= tol
}

/// One-sided (Hestenes) Jacobi SVD: orthogonalizes the columns of `M` (or `Mᵀ`
/// when wide) by plane rotations. Accurate to high relative precision; used as the
/// fallback of [`svd()`]. `None` if it does not converge in 80 sweeps.
pub(crate) fn jacobi_svd<T: RealField + Copy>(m: &DMatrix<T>) -> Option<Svd<T>> {
    if m.nrows() < m.ncols() {
        let t = jacobi_svd(&m.transpose())?;
        return Some(Svd {
            u: t.v_t.transpose(),
            singular_values: t.singular_values,
            v_t: t.u.transpose(),
        });
    }
    let (rows, n) = m.shape();
    let mut u = m.clone();
    let mut v = DMatrix::<T>::identity(n, n);
    let eps = T::default_epsilon();
    let two: T = nalgebra::convert(2.0);
    let mut converged = false;
    for _ in 0..80 {
        let mut rotated = false;
        for p in 0..n {
            for q in (p + 1)..n {
                let alpha = u.column(p).norm_squared();
                let beta = u.column(q).norm_squared();
                let gamma = u.column(p).dot(&u.column(q));
                if gamma == T::zero() || gamma.abs() <= eps * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (two * gamma);
                let t = zeta.signum() / (zeta.abs() + (T::one() + zeta * zeta).sqrt());
                let t = if zeta == T::zero() { T::one() } else { t };
                let c = T::one() / (T::one() + t * t).sqrt();
                let s = c * t;
                for i in 0..rows {
                    let (x, y) = (u[(i, p)], u[(i, q)]);
                    u[(i, p)] = c * x - s * y;
                    u[(i, q)] = s * x + c * y;
                }
                for i in 0..n {
                    let (x, y) = (v[(i, p)], v[(i, q)]);
                    v[(i, p)] = c * x - s * y;
                    v[(i, q)] = s * x + c * y;
                }
            }
        }
        if !rotated {
            converged = true;
            break;
        }
    }
    if !converged {
        return None;
    }
    let sigma = DVector::from_fn(n, |j, _| u.column(j).norm());
    let smax = sigma.iter().fold(T::zero(), |a, &b| a.max(b));
    let tiny = smax * eps * nalgebra::convert::<f64, T>(n as f64);
    // Normalize the columns; complete those of (numerically) zero norm with an
    // orthonormal complement so that U keeps orthonormal columns.
    let mut good = vec![false; n];
    for j in 0..n {
        if sigma[j] > tiny && sigma[j] > T::zero() {
            let inv = T::one() / sigma[j];
            u.column_mut(j).scale_mut(inv);
            good[j] = true;
        }
    }
    let mut candidate = 0;
    for j in 0..n {
        if good[j] {
            continue;
        }
        loop {
            let mut e = DVector::<T>::zeros(rows);
            e[candidate % rows] = T::one();
            candidate += 1;
            for _ in 0..2 {
                for (k, _) in good.iter().enumerate().filter(|(_, g)| **g) {
                    let proj = u.column(k).dot(&e);
                    e -= u.column(k) * proj;
                }
            }
            let norm = e.norm();
            if norm > nalgebra::convert(0.5) {
                u.column_mut(j).copy_from(&(e / norm));
                good[j] = true;
                break;
            }
            if candidate > 2 * rows + n {
                return None;
            }
        }
    }
    Some(sorted(u, sigma, v.transpose()))
}

/// The singular values of a dense `m×n` matrix, length `min(m, n)`, descending.
///
/// Up to `min(m, n) = 256` this is [`svd()`]'s values (residual-checked); above, it
/// uses nalgebra's values-only SVD (no singular vectors accumulated, no residual
/// check possible).
///
/// # Errors
/// As [`svd()`].
pub fn singular_values<T: RealField + Copy>(m: &DMatrix<T>) -> Result<DVector<T>, SpectralError> {
    check_matrix(m, "matrix")?;
    if m.nrows().min(m.ncols()) <= crate::randomized::TOP_K_DENSE_LIMIT {
        // Small: use the residual-checked decomposition (see `svd`).
        return Ok(svd(m)?.singular_values);
    }
    let eps = T::default_epsilon() * nalgebra::convert(5.0);
    let dec = SVD::try_new_unordered(m.clone(), false, false, eps, max_iterations(m))
        .ok_or(SpectralError::NoConvergence { what: "dense SVD" })?;
    let mut s: Vec<T> = dec.singular_values.iter().map(|x| x.abs()).collect();
    s.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
    if s.iter().any(|x| !x.is_finite()) {
        return Err(SpectralError::NonFinite { what: "SVD result" });
    }
    Ok(DVector::from_vec(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn diagonal_matrix_is_sorted() {
        let m = DMatrix::from_row_slice(3, 3, &[1.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, -2.0]);
        let d = svd(&m).unwrap();
        assert_relative_eq!(d.singular_values[0], 3.0, epsilon = 1e-12);
        assert_relative_eq!(d.singular_values[1], 2.0, epsilon = 1e-12);
        assert_relative_eq!(d.singular_values[2], 1.0, epsilon = 1e-12);
        assert_relative_eq!(d.reconstruct(), m, epsilon = 1e-12);
        assert_relative_eq!(d.sigma1(), 3.0);
        let t = d.rank_k(1);
        assert_eq!((t.u.shape(), t.v_t.shape()), ((3, 1), (1, 3)));
        assert_eq!(d.rank_k(10).len(), 3);
        let vals = singular_values(&m).unwrap();
        assert_relative_eq!(vals, d.singular_values, epsilon = 1e-12);
    }

    #[test]
    fn wide_and_tall_f32() {
        let m = DMatrix::<f32>::from_fn(3, 7, |i, j| ((i * 7 + j) as f32).sin());
        let d = svd(&m).unwrap();
        assert_eq!(d.u.shape(), (3, 3));
        assert_eq!(d.v_t.shape(), (3, 7));
        assert_relative_eq!(d.reconstruct(), m, epsilon = 1e-5);
        let d = svd(&m.transpose()).unwrap();
        assert_eq!(d.u.shape(), (7, 3));
        assert_relative_eq!(d.reconstruct(), m.transpose(), epsilon = 1e-5);
    }

    #[test]
    fn empty_and_nan_are_errors() {
        assert!(matches!(
            svd(&DMatrix::<f64>::zeros(0, 2)),
            Err(SpectralError::Empty { .. })
        ));
        let mut m = DMatrix::<f64>::zeros(2, 2);
        m[(0, 1)] = f64::NAN;
        assert!(matches!(svd(&m), Err(SpectralError::NonFinite { .. })));
        assert!(singular_values(&m).is_err());
    }

    #[test]
    fn zero_matrix_and_empty_svd_sigma1() {
        let d = svd(&DMatrix::<f64>::zeros(4, 3)).unwrap();
        assert!(d.singular_values.iter().all(|&s| s == 0.0));
        assert_eq!(d.rank_k(0).sigma1(), 0.0);
        assert!(d.rank_k(0).is_empty());
    }

    #[test]
    fn jacobi_matches_and_handles_rank_deficiency() {
        // Rank-2 4×5 matrix: Jacobi must give orthonormal U, V and reconstruct.
        let b = DMatrix::from_fn(4, 2, |i, j| ((i + 2 * j) as f64).sin());
        let a = DMatrix::from_fn(2, 5, |i, j| ((3 * i + j) as f64).cos());
        let m = &b * &a;
        for target in [m.clone(), m.transpose()] {
            let d = jacobi_svd(&target).unwrap();
            let p = d.len();
            assert_relative_eq!(d.reconstruct(), target, epsilon = 1e-12);
            assert_relative_eq!(
                d.u.transpose() * &d.u,
                DMatrix::identity(p, p),
                epsilon = 1e-12
            );
            assert_relative_eq!(
                &d.v_t * d.v_t.transpose(),
                DMatrix::identity(p, p),
                epsilon = 1e-12
            );
            let fast = svd(&target).unwrap();
            assert_relative_eq!(d.singular_values, fast.singular_values, epsilon = 1e-12);
        }
    }

    #[test]
    fn serde_round_trip() {
        let m = DMatrix::<f32>::from_fn(3, 2, |i, j| (i + 2 * j) as f32);
        let d = svd(&m).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        let back: Svd<f32> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
    }
}
