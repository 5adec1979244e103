//! The spectral norm `‖M‖₂ = σ1(M)` of a dense matrix to near machine precision.

use std::any::Any;

use nalgebra::{DMatrix, DVector, RealField};

use crate::error::{SpectralError, check_matrix};
use crate::randomized::{TOP_K_DENSE_LIMIT, gaussian};

/// Largest number of power-iteration steps [`refine_sigma1`] takes.
pub const SIGMA1_MAX_ITERATIONS: usize = 500;

/// Relative residual at which [`spectral_norm`]'s Lanczos iteration stops:
/// `‖Mᵀx − θ·y‖ ≤ SIGMA1_RESIDUAL_TOLERANCE·θ` for the Ritz triplet `(θ, x, y)`. The error
/// of `θ` itself is of the order of the residual squared over the relative gap
/// `(σ1 − σ2)/σ1`: about `1e-9` even for a gap of `1e-3` (measured: `5e-13` on 4096×4096
/// Gaussian matrices).
pub const SIGMA1_RESIDUAL_TOLERANCE: f64 = 1e-6;

/// Most Lanczos steps [`spectral_norm`] takes (each one product with `M` and one with `Mᵀ`)
/// before returning its best lower bound.
pub const SIGMA1_MAX_LANCZOS_STEPS: usize = 400;

/// `σ1(m) = ‖m‖₂` to near machine precision.
///
/// * `min(m, n) ≤ 256`: the exact dense SVD's largest singular value.
/// * otherwise: Golub–Kahan–Lanczos bidiagonalization with full reorthogonalization, from
///   a seeded Gaussian start (deterministic), stopped once the top Ritz triplet's residual
///   is below [`SIGMA1_RESIDUAL_TOLERANCE`] (relative) or after
///   [`SIGMA1_MAX_LANCZOS_STEPS`] steps. The result is the largest Ritz value `θ = ‖M·y‖`
///   for a unit `y`, so it is never above `σ1`. Each step is one pass over `m` for `m·v`
///   and one for `mᵀ·u`; even a flat top of the spectrum (a Gaussian matrix, whose `σ1`
///   and `σ2` differ by well under 1 %) converges in about a hundred steps, where power
///   iteration needs thousands.
///
/// The vectors and every sum are `f64`. An `f32` matrix is used as it is (each product
/// reads it once, converting on the fly: half the memory traffic of an `f64` copy); other
/// scalar types are converted to `f64` once. Since `σ1(Mᵀ) = σ1(M)`, a row-major `f32`
/// buffer can be passed without a copy as the column-major transpose
/// (`DMatrix::from_vec(cols, rows, data)`).
///
/// # Errors
/// [`SpectralError::Empty`] or [`SpectralError::NonFinite`] for bad input.
pub fn spectral_norm<T: RealField + Copy>(m: &DMatrix<T>) -> Result<T, SpectralError> {
    spectral_norm_f64(m).map(nalgebra::convert::<f64, T>)
}

/// [`spectral_norm`] returned in `f64` whatever the matrix's scalar type (for an `f32`
/// matrix, `σ1` is then not rounded to `f32`).
///
/// # Errors
/// As [`spectral_norm`].
pub fn spectral_norm_f64<T: RealField + Copy>(m: &DMatrix<T>) -> Result<f64, SpectralError> {
    check_matrix(m, "matrix")?;
    let any = m as &dyn Any;
    Ok(if let Some(m64) = any.downcast_ref::<DMatrix<f64>>() {
        sigma1_of(m64)
    } else if let Some(m32) = any.downcast_ref::<DMatrix<f32>>() {
        sigma1_of(m32)
    } else {
        sigma1_of(&m.map(|x| nalgebra::try_convert::<T, f64>(x).unwrap_or(f64::NAN)))
    })
}

/// Matrix entries the Lanczos products read, converted to `f64` on the fly.
pub(crate) trait Entry: nalgebra::Scalar + Copy + Into<f64> {}
impl Entry for f32 {}
impl Entry for f64 {}

/// The core of [`spectral_norm`], instantiated only here (so always optimized with this
/// crate, whatever the caller's profile).
fn sigma1_of<S: Entry>(m: &DMatrix<S>) -> f64 {
    let (rows, cols) = m.shape();
    if rows.min(cols) <= TOP_K_DENSE_LIMIT {
        let s = m.map(|x| x.into()).svd(false, false).singular_values;
        return s.iter().copied().fold(0.0, f64::max);
    }
    lanczos_sigma1(m, SIGMA1_RESIDUAL_TOLERANCE, SIGMA1_MAX_LANCZOS_STEPS).0
}

/// `m·v` in `f64`, one pass over the column-major `m` (an axpy per column).
fn mul<S: Entry>(m: &DMatrix<S>, v: &DVector<f64>) -> DVector<f64> {
    let rows = m.nrows();
    let mut y = vec![0.0f64; rows];
    if rows == 0 {
        return DVector::from_vec(y);
    }
    for (col, &vj) in m.as_slice().chunks_exact(rows).zip(v.iter()) {
        if vj != 0.0 {
            for (yi, &c) in y.iter_mut().zip(col) {
                *yi += vj * c.into();
            }
        }
    }
    DVector::from_vec(y)
}

/// `mᵀ·u` in `f64`, one pass over the column-major `m` (a dot product per column, with
/// four partial sums so that it pipelines).
fn tr_mul<S: Entry>(m: &DMatrix<S>, u: &DVector<f64>) -> DVector<f64> {
    let rows = m.nrows();
    let u = u.as_slice();
    let out: Vec<f64> = if rows == 0 {
        vec![0.0; m.ncols()]
    } else {
        m.as_slice()
            .chunks_exact(rows)
            .map(|col| {
                let mut acc = [0.0f64; 4];
                let (c4, ct) = col.split_at(rows - rows % 4);
                let (u4, ut) = u.split_at(rows - rows % 4);
                for (c, x) in c4.chunks_exact(4).zip(u4.chunks_exact(4)) {
                    for k in 0..4 {
                        acc[k] += c[k].into() * x[k];
                    }
                }
                let tail: f64 = ct.iter().zip(ut).map(|(&c, &x)| c.into() * x).sum();
                (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
            })
            .collect()
    };
    DVector::from_vec(out)
}

/// Golub–Kahan–Lanczos for the top singular value: `(θ, relative residual, steps)`.
///
/// After `j` steps `M·V_j = U_j·B_j` and `Mᵀ·U_j = V_j·B_jᵀ + β_j·v_{j+1}·e_jᵀ` with `B_j`
/// upper bidiagonal; for the top singular triplet `(θ, p, q)` of `B_j`, `y = V_j·q` has
/// `‖M·y‖ = θ` and the residual `‖Mᵀ·U_j·p − θ·y‖ = β_j·|p_j|`.
pub(crate) fn lanczos_sigma1<S: Entry>(
    m: &DMatrix<S>,
    tol: f64,
    max_steps: usize,
) -> (f64, f64, usize) {
    let (rows, cols) = m.shape();
    let max_steps = max_steps.min(rows.min(cols)).max(1);
    let mut v: DVector<f64> = gaussian::<f64>(cols, 1, 0x5eed_51a1).column(0).into_owned();
    v /= v.norm();
    let mut vs: Vec<DVector<f64>> = Vec::with_capacity(max_steps + 1);
    let mut us: Vec<DVector<f64>> = Vec::with_capacity(max_steps);
    let mut alphas: Vec<f64> = Vec::with_capacity(max_steps);
    let mut betas: Vec<f64> = Vec::with_capacity(max_steps);
    // Largest α or β so far (a lower bound of σ1): the scale for "numerically zero".
    let mut scale = 0.0f64;
    let mut best = (0.0f64, f64::INFINITY);
    let mut u: DVector<f64> = mul(m, &v);
    vs.push(v);
    for step in 1..=max_steps {
        // u_j = M·v_j − β_{j−1}·u_{j−1}, orthogonalized against every earlier u.
        reorthogonalize(&mut u, &us);
        let alpha = u.norm();
        scale = scale.max(alpha);
        if scale == 0.0 {
            return (0.0, 0.0, step); // M·v = 0 for a generic v: M = 0.
        }
        if alpha <= 1e-14 * scale {
            // M·v_j lies in span(u_1..u_{j−1}): the Krylov space is invariant, B is exact.
            let (theta, _) = top_ritz(&alphas, &betas);
            return (theta.max(best.0), 0.0, step);
        }
        alphas.push(alpha);
        u /= alpha;
        // v_{j+1} = Mᵀ·u_j − α_j·v_j, orthogonalized against every earlier v.
        let mut w: DVector<f64> = tr_mul(m, &u);
        us.push(u);
        reorthogonalize(&mut w, &vs);
        let beta = w.norm();
        let invariant = beta <= 1e-14 * scale.max(alpha);
        if invariant || step <= 8 || step % 4 == 0 || step == max_steps {
            let (theta, p_last) = top_ritz(&alphas, &betas);
            let rel = if invariant {
                0.0
            } else {
                beta * p_last.abs() / theta
            };
            if theta >= best.0 {
                best = (theta, rel);
            }
            if rel <= tol {
                return (best.0, rel, step);
            }
        }
        if step == max_steps {
            break;
        }
        scale = scale.max(beta);
        betas.push(beta);
        w /= beta;
        let mut next: DVector<f64> = mul(m, &w);
        next.axpy(-beta, us.last().expect("pushed above"), 1.0);
        vs.push(w);
        u = next;
    }
    (best.0, best.1, max_steps)
}

/// Classical Gram–Schmidt twice against `basis` (orthonormal vectors): keeps the Lanczos
/// vectors orthogonal to working precision.
fn reorthogonalize(x: &mut DVector<f64>, basis: &[DVector<f64>]) {
    for _ in 0..2 {
        for b in basis {
            let c = b.dot(x);
            x.axpy(-c, b, 1.0);
        }
    }
}

/// Largest singular value of the `k×k` upper bidiagonal matrix with diagonal `alphas` and
/// superdiagonal `betas` (`k − 1` of them), and the last entry of its left singular vector.
fn top_ritz(alphas: &[f64], betas: &[f64]) -> (f64, f64) {
    let k = alphas.len();
    if k == 0 {
        return (0.0, 1.0);
    }
    let mut b = DMatrix::<f64>::zeros(k, k);
    for i in 0..k {
        b[(i, i)] = alphas[i];
        if i + 1 < k {
            b[(i, i + 1)] = betas[i];
        }
    }
    let svd = b.svd(true, false);
    let (mut at, mut top) = (0, f64::NEG_INFINITY);
    for (i, &s) in svd.singular_values.iter().enumerate() {
        if s > top {
            top = s;
            at = i;
        }
    }
    let p_last = svd.u.as_ref().map_or(1.0, |u| u[(k - 1, at)]);
    (top, p_last)
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
    use crate::randomized::gaussian;
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
    fn lanczos_reaches_the_dense_sigma1_of_a_gaussian_matrix() {
        // A flat top of the spectrum (σ1 and σ2 within about 1 %): power iteration's worst
        // case.
        let m = gaussian::<f64>(400, 300, 11);
        let exact = m.clone().svd(false, false).singular_values.max();
        let (theta, rel, steps) = lanczos_sigma1(&m, SIGMA1_RESIDUAL_TOLERANCE, 300);
        assert!(theta <= exact * (1.0 + 1e-14), "{theta} > {exact}");
        assert_relative_eq!(theta, exact, max_relative = 1e-12);
        assert!(
            rel <= SIGMA1_RESIDUAL_TOLERANCE,
            "{rel} after {steps} steps"
        );
        assert_relative_eq!(spectral_norm(&m).unwrap(), exact, max_relative = 1e-12);
        // An f32 matrix is read as it is, with f64 sums: σ1 of the rounded matrix exactly.
        let m32 = m.map(|x| x as f32);
        let exact32 = m32.map(f64::from).svd(false, false).singular_values.max();
        assert_relative_eq!(
            spectral_norm_f64(&m32).unwrap(),
            exact32,
            max_relative = 1e-12
        );
        assert_relative_eq!(
            spectral_norm(&m32).unwrap(),
            exact32 as f32,
            max_relative = 1e-6
        );
        // σ1(Mᵀ) = σ1(M): a row-major buffer passed as the column-major transpose.
        let t = DMatrix::from_vec(300, 400, m.transpose().as_slice().to_vec());
        assert_relative_eq!(spectral_norm(&t).unwrap(), exact, max_relative = 1e-12);
    }

    #[test]
    fn lanczos_handles_low_rank_and_zero_matrices() {
        let m = with_spectrum(300, 280, &[2.0, 1.0]);
        assert_relative_eq!(lanczos_sigma1(&m, 1e-9, 50).0, 2.0, max_relative = 1e-12);
        assert_eq!(
            lanczos_sigma1(&DMatrix::<f64>::zeros(300, 280), 1e-9, 50).0,
            0.0
        );
        assert_eq!(
            spectral_norm(&DMatrix::<f64>::zeros(300, 280)).unwrap(),
            0.0
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(spectral_norm(&DMatrix::<f64>::zeros(0, 3)).is_err());
        assert!(spectral_norm(&DMatrix::from_element(2, 2, f64::NAN)).is_err());
    }
}
