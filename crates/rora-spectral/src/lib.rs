//! Spectral analysis of low-rank (LoRA) adapters, on nalgebra.
//!
//! An adapted linear layer is `W = W0 + ΔW` with a frozen weight `W0: out×in` and
//! an update `ΔW = s·B·A`, `B: out×r`, `A: r×in` (PyTorch/PEFT layout). This crate
//! computes, without ever forming `ΔW` when `r ≪ min(out, in)`:
//!
//! * the SVD of `s·B·A` from its factors ([`factored_svd`]) and new factors with
//!   prescribed singular values ([`rescaled_factors`], [`scale_to_sigma1`]);
//! * exact ([`svd()`]) and randomized ([`randomized_top_k`], [`top_k`]) top-`k`
//!   spectra of dense weights, and their spectral norm ([`spectral_norm`]);
//! * the streaming input covariance and its top eigenvectors
//!   ([`CovarianceAccumulator`]);
//! * strength and alignment metrics ([`strength_ratio`], [`effective_rank`],
//!   [`left_alignment`], [`clean_share`], [`subspace_share`], …), principal angles
//!   and intruder dimensions ([`principal_angles`], [`intruder_dimensions`]);
//! * the factor of post-training rescaling ([`RescaleTarget`]);
//! * the paper's critical scale and an exact quadratic threshold
//!   ([`critical_scale`], [`quadratic_threshold`]);
//! * a per-layer report ([`LayerReport`], [`render_table`]).
//!
//! Every public fallible function returns `Result<_, SpectralError>` and never
//! panics on user input. The decompositions are generic over
//! `T: nalgebra::RealField + Copy` (`f32` and `f64`).
//!
//! # Example
//!
//! ```
//! use nalgebra::{DMatrix, DVector};
//! use rora_spectral::{factored_svd, rescaled_factors, scale_to_sigma1, BaseSpectrum, LayerReport};
//!
//! # fn main() -> Result<(), rora_spectral::SpectralError> {
//! // A frozen 8×6 weight and a rank-2 update ΔW = 0.5·B·A.
//! let w0 = DMatrix::<f64>::from_fn(8, 6, |i, j| if i == j { 4.0 - i as f64 * 0.5 } else { 0.0 });
//! let b = DMatrix::<f64>::from_fn(8, 2, |i, j| ((i + 3 * j) as f64).sin());
//! let a = DMatrix::<f64>::from_fn(2, 6, |i, j| ((2 * i + j) as f64).cos());
//!
//! // SVD of the update from its factors: 2 triplets, U: 8×2, Vᵀ: 2×6.
//! let upd = factored_svd(&b, &a, 0.5)?;
//! assert_eq!(upd.len(), 2);
//! assert!((upd.reconstruct() - (&b * &a) * 0.5).norm() < 1e-12);
//!
//! // The paper's post-training rescaling: σ1(s'·B·A) = σ1(W0).
//! let s_new = scale_to_sigma1(&b, &a, 0.5, 4.0)?;
//! assert!((factored_svd(&b, &a, s_new)?.sigma1() - 4.0).abs() < 1e-12);
//!
//! // Same subspaces, new singular values, same rank.
//! let (b2, a2) = rescaled_factors(&b, &a, 0.5, &DVector::from_vec(vec![2.0, 1.0]))?;
//! assert_eq!((b2.ncols(), a2.nrows()), (2, 2));
//!
//! // A per-layer report against the top-3 spectrum of W0.
//! let base = BaseSpectrum::compute(&w0, 3)?;
//! let report = LayerReport::compute("layer.0", &base, &b, &a, 0.5, None)?;
//! assert!(report.strength_ratio > 0.0);
//! println!("{}", rora_spectral::render_table(&[report]));
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod angles;
pub mod covariance;
pub mod error;
pub mod factored;
pub mod metrics;
pub mod norm;
pub mod randomized;
pub mod report;
pub mod rescale;
pub mod svd;
pub mod threshold;

pub use angles::{DEFAULT_INTRUDER_THRESHOLD, intruder_dimensions, principal_angles};
pub use covariance::CovarianceAccumulator;
pub use error::SpectralError;
pub use factored::{
    balanced_factors, factored_frobenius_sq, factored_svd, rescaled_factors, scale_to_sigma1,
};
pub use metrics::{
    clean_share, effective_rank, frobenius_ratio, left_alignment, right_alignment, strength_ratio,
    subspace_share, update_frobenius,
};
pub use norm::{
    SIGMA1_MAX_ITERATIONS, SIGMA1_MAX_LANCZOS_STEPS, SIGMA1_RESIDUAL_TOLERANCE, refine_sigma1,
    spectral_norm, spectral_norm_f64,
};
pub use randomized::{
    RandomizedSvdConfig, TOP_K_DENSE_LIMIT, TOP_K_MAX_ITERATIONS, TOP_K_TOLERANCE,
    randomized_top_k, top_k,
};
pub use report::{BaseSpectrum, LayerReport, render_table};
pub use rescale::RescaleTarget;
pub use svd::{Svd, singular_values, svd};
pub use threshold::{
    CriticalScale, QuadraticThreshold, critical_scale, quadratic_coefficients, quadratic_threshold,
};
