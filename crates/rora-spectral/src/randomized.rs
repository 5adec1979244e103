//! Top-`k` singular triplets of a large dense matrix: the Halko–Martinsson–Tropp
//! randomized range finder with power (subspace) iterations, and [`top_k`], which
//! picks an exact or an adaptive randomized method from the size.

use nalgebra::{DMatrix, RealField, linalg::QR};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::error::{SpectralError, check_matrix};
use crate::svd::{Svd, sorted, svd};

/// Settings of [`randomized_top_k`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RandomizedSvdConfig {
    /// Extra columns `p` of the sketch beyond `k` (default 10). The sketch has
    /// `min(k + p, min(m, n))` columns.
    pub oversampling: usize,
    /// Number of power iterations `q` (default 2). Each costs two products with the
    /// matrix and two thin QRs; flat spectra need many more than decaying ones.
    pub power_iterations: usize,
    /// Seed of the Gaussian test matrix: the result is deterministic for a seed.
    pub seed: u64,
}

impl Default for RandomizedSvdConfig {
    fn default() -> Self {
        Self {
            oversampling: 10,
            power_iterations: 2,
            seed: 0x5eed_0f10,
        }
    }
}

/// Size up to which [`top_k`] uses the exact dense SVD (`min(m, n) ≤ 256`).
pub const TOP_K_DENSE_LIMIT: usize = 256;

/// Relative tolerance [`top_k`] aims at for the top-`k` singular values.
pub const TOP_K_TOLERANCE: f64 = 1e-3;

/// Most subspace iterations [`top_k`] runs before returning its best estimate.
pub const TOP_K_MAX_ITERATIONS: usize = 60;

fn check_k(m: &DMatrix<impl nalgebra::Scalar>, k: usize) -> Result<(), SpectralError> {
    let bound = m.nrows().min(m.ncols());
    if k == 0 || k > bound {
        return Err(SpectralError::InvalidArgument(format!(
            "k must be in 1..={bound} (min(rows, cols)), got {k}"
        )));
    }
    Ok(())
}

pub(crate) fn gaussian<T: RealField + Copy>(rows: usize, cols: usize, seed: u64) -> DMatrix<T> {
    let mut rng = StdRng::seed_from_u64(seed);
    DMatrix::from_fn(rows, cols, |_, _| {
        let x: f64 = rng.sample(StandardNormal);
        nalgebra::convert::<f64, T>(x)
    })
}

/// Thin orthonormal basis of the columns of `y` (`Q` of a Householder QR).
fn orth<T: RealField + Copy>(y: DMatrix<T>) -> DMatrix<T> {
    QR::new(y).q()
}

/// Stopping rule of the adaptive iteration.
struct Adaptive {
    tol: f64,
    min_iterations: usize,
}

/// Subspace iteration shared by [`randomized_top_k`] (fixed count, `adaptive =
/// None`) and [`top_k`] (stops once the estimated relative error of the top-`k`
/// Ritz values is below the tolerance).
fn subspace_iteration<T: RealField + Copy>(
    m: &DMatrix<T>,
    k: usize,
    oversampling: usize,
    iterations: usize,
    seed: u64,
    adaptive: Option<Adaptive>,
) -> Result<Svd<T>, SpectralError> {
    let (rows, cols) = m.shape();
    let l = (k + oversampling).min(rows.min(cols));
    let omega = gaussian::<T>(cols, l, seed);
    let mut q = orth(m * omega); // rows×l
    let mut prev: Option<Vec<f64>> = None;
    let mut prev_change: Option<f64> = None;
    let mut it = 0;
    loop {
        // Bᵀ = Aᵀ·Q computed as (Qᵀ·A)ᵀ so that the product runs through gemm.
        let bt = (q.transpose() * m).transpose(); // cols×l
        let qr = QR::new(bt);
        let (qz, r) = (qr.q(), qr.r()); // Bᵀ = Qz·R, so B = Rᵀ·Qzᵀ
        let done = match &adaptive {
            None => it >= iterations,
            Some(ad) => {
                let mut stop = it >= iterations;
                if it >= ad.min_iterations && !stop {
                    let ritz = crate::svd::singular_values(&r)?;
                    let cur: Vec<f64> = ritz
                        .iter()
                        .take(k)
                        .map(|x| nalgebra::try_convert::<T, f64>(*x).unwrap_or(0.0))
                        .collect();
                    if let Some(p) = &prev {
                        let floor = cur[0].abs() * 1e-12 + f64::MIN_POSITIVE;
                        let change = cur
                            .iter()
                            .zip(p)
                            .map(|(c, o)| (c - o).abs() / c.abs().max(floor))
                            .fold(0.0, f64::max);
                        // Ritz values converge roughly geometrically: the remaining
                        // error is about change·ρ/(1−ρ) with ρ the observed rate.
                        let rate = prev_change
                            .map(|pc| {
                                if pc > 0.0 {
                                    (change / pc).min(0.99)
                                } else {
                                    0.0
                                }
                            })
                            .unwrap_or(0.9);
                        let est = change * rate / (1.0 - rate);
                        if change <= ad.tol * 1e-2 || est <= ad.tol {
                            stop = true;
                        }
                        prev_change = Some(change);
                    }
                    prev = Some(cur);
                }
                stop
            }
        };
        if done {
            // SVD of the small l×l factor Rᵀ = U1·S·V1ᵀ, so A ≈ Q·U1·S·(Qz·V1)ᵀ.
            let small = svd(&r.transpose())?;
            let u = &q * small.u;
            let v_t = small.v_t * qz.transpose();
            let full = sorted(u, small.singular_values, v_t);
            return Ok(full.rank_k(k));
        }
        q = orth(m * qz);
        it += 1;
    }
}

/// Approximate top-`k` SVD of a dense `m×n` matrix by the randomized range finder
/// of Halko, Martinsson & Tropp (2011, Alg. 4.4 with QR re-orthonormalization
/// between power iterations), with a seeded Gaussian test matrix (deterministic).
///
/// Returns `k` triplets (`u: m×k`, `v_t: k×n`), singular values descending. Cost:
/// `2·(q+1)` products of the matrix with an `n×l` or `m×l` block (`l = k + p`),
/// plus thin QRs. Accuracy depends on the spectrum: fast decay converges in a
/// couple of iterations, flat spectra (Gaussian matrices) need many; see [`top_k`]
/// for an adaptive variant.
///
/// # Errors
/// [`SpectralError::Empty`], [`SpectralError::NonFinite`] for bad input,
/// [`SpectralError::InvalidArgument`] unless `1 ≤ k ≤ min(m, n)`.
pub fn randomized_top_k<T: RealField + Copy>(
    m: &DMatrix<T>,
    k: usize,
    cfg: &RandomizedSvdConfig,
) -> Result<Svd<T>, SpectralError> {
    check_matrix(m, "matrix")?;
    check_k(m, k)?;
    subspace_iteration(m, k, cfg.oversampling, cfg.power_iterations, cfg.seed, None)
}

/// Top-`k` SVD of a dense `m×n` matrix, choosing the method from the size.
///
/// * `min(m, n) ≤ 256` ([`TOP_K_DENSE_LIMIT`]): exact dense [`crate::svd()`], truncated.
/// * otherwise: randomized subspace iteration with oversampling `max(10, k)` that
///   runs until the estimated relative error of the top-`k` singular values is
///   below [`TOP_K_TOLERANCE`] (`1e-3`), at least 2 and at most
///   [`TOP_K_MAX_ITERATIONS`] iterations. Decaying spectra (trained weights) stop
///   after a few iterations; flat spectra take more (see `docs/PERFORMANCE.md`).
///
/// Returns `k` triplets, descending.
///
/// # Errors
/// As [`randomized_top_k`].
pub fn top_k<T: RealField + Copy>(m: &DMatrix<T>, k: usize) -> Result<Svd<T>, SpectralError> {
    check_matrix(m, "matrix")?;
    check_k(m, k)?;
    if m.nrows().min(m.ncols()) <= TOP_K_DENSE_LIMIT {
        return Ok(svd(m)?.rank_k(k));
    }
    subspace_iteration(
        m,
        k,
        k.max(10),
        TOP_K_MAX_ITERATIONS,
        RandomizedSvdConfig::default().seed,
        Some(Adaptive {
            tol: TOP_K_TOLERANCE * 0.1,
            min_iterations: 2,
        }),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `U·diag(σ)·Vᵀ` with random orthonormal `U: m×p`, `V: n×p`.
    pub(crate) fn with_spectrum(m: usize, n: usize, sigma: &[f64], seed: u64) -> DMatrix<f64> {
        let p = sigma.len();
        let u = orth(gaussian::<f64>(m, p, seed));
        let v = orth(gaussian::<f64>(n, p, seed + 1));
        let mut us = u;
        for (j, s) in sigma.iter().enumerate() {
            us.column_mut(j).scale_mut(*s);
        }
        us * v.transpose()
    }

    fn max_rel_err(approx: &Svd<f64>, exact: &[f64]) -> f64 {
        approx
            .singular_values
            .iter()
            .zip(exact)
            .map(|(a, e)| (a - e).abs() / e)
            .fold(0.0, f64::max)
    }

    #[test]
    fn decaying_spectrum_is_accurate() {
        let sigma: Vec<f64> = (0..150).map(|i| ((i + 1) as f64).powf(-0.5)).collect();
        let m = with_spectrum(200, 150, &sigma, 7);
        let cfg = RandomizedSvdConfig {
            oversampling: 10,
            power_iterations: 6,
            seed: 1,
        };
        let r = randomized_top_k(&m, 10, &cfg).unwrap();
        assert_eq!((r.u.shape(), r.v_t.shape()), ((200, 10), (10, 150)));
        let err = max_rel_err(&r, &sigma);
        assert!(err < 1e-3, "relative error {err}");
        // Deterministic for a seed.
        assert_eq!(randomized_top_k(&m, 10, &cfg).unwrap(), r);
    }

    #[test]
    fn gaussian_matrix_is_accurate() {
        let m = gaussian::<f64>(200, 150, 3);
        let exact = crate::svd::singular_values(&m).unwrap();
        let cfg = RandomizedSvdConfig {
            oversampling: 20,
            power_iterations: 12,
            seed: 2,
        };
        let r = randomized_top_k(&m, 5, &cfg).unwrap();
        let err = max_rel_err(&r, exact.as_slice());
        assert!(err < 1e-3, "relative error {err}");
    }

    #[test]
    fn adaptive_subspace_iteration_on_flat_spectrum() {
        let m = gaussian::<f64>(200, 150, 5);
        let exact = crate::svd::singular_values(&m).unwrap();
        let r = subspace_iteration(
            &m,
            5,
            10,
            TOP_K_MAX_ITERATIONS,
            9,
            Some(Adaptive {
                tol: TOP_K_TOLERANCE * 0.1,
                min_iterations: 2,
            }),
        )
        .unwrap();
        let err = max_rel_err(&r, exact.as_slice());
        assert!(err < 1e-3, "relative error {err}");
    }

    #[test]
    fn top_k_small_is_exact_and_f32_works() {
        let m = DMatrix::<f32>::from_fn(30, 20, |i, j| ((i * 20 + j) as f32 * 0.37).sin());
        let t = top_k(&m, 3).unwrap();
        let d = svd(&m).unwrap();
        assert_eq!(t.singular_values, d.singular_values.rows(0, 3).into_owned());
        let r = randomized_top_k(&m, 3, &RandomizedSvdConfig::default()).unwrap();
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn bad_k_is_an_error() {
        let m = DMatrix::<f64>::zeros(4, 3);
        assert!(top_k(&m, 0).is_err());
        assert!(top_k(&m, 4).is_err());
        assert!(randomized_top_k(&m, 0, &RandomizedSvdConfig::default()).is_err());
        assert!(top_k(&DMatrix::<f64>::zeros(0, 3), 1).is_err());
    }
}
