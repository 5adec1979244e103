//! Scaling thresholds: the paper's critical scale `s*` and this project's exact
//! quadratic threshold on a trigger subspace.

use nalgebra::DMatrix;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{SpectralError, check_dim, check_factors, check_matrix, check_scalar};

/// The paper's critical scale `s*`, explicit when it is not defined (never NaN).
///
/// Serialized as `{"value": 12.5}` or `{"value": null, "reason": "zero update"}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CriticalScale {
    /// A finite, non-negative critical scale.
    Finite(f64),
    /// `s*` is undefined; `reason` says why (one of the `UNDEFINED_*` constants).
    Undefined {
        /// Why the threshold does not exist.
        reason: &'static str,
    },
}

impl CriticalScale {
    /// The finite value, if any.
    pub fn value(&self) -> Option<f64> {
        match self {
            CriticalScale::Finite(v) => Some(*v),
            CriticalScale::Undefined { .. } => None,
        }
    }
}

/// Reason: `σ1(B·A) = 0`.
pub const UNDEFINED_ZERO_UPDATE: &str = "zero update";
/// Reason: the clean alignment is `0`.
pub const UNDEFINED_ZERO_CLEAN_ALIGNMENT: &str = "zero clean alignment";
/// Reason: an input is NaN or infinite.
pub const UNDEFINED_NON_FINITE: &str = "non-finite input";
/// Reason: an input is negative.
pub const UNDEFINED_NEGATIVE: &str = "negative input";
/// Reason read back from a serialized value this version does not know.
pub const UNDEFINED_OTHER: &str = "undefined";

const REASONS: [&str; 4] = [
    UNDEFINED_ZERO_UPDATE,
    UNDEFINED_ZERO_CLEAN_ALIGNMENT,
    UNDEFINED_NON_FINITE,
    UNDEFINED_NEGATIVE,
];

#[derive(Serialize, Deserialize)]
struct CriticalScaleRepr {
    value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl Serialize for CriticalScale {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let repr = match self {
            CriticalScale::Finite(v) => CriticalScaleRepr {
                value: Some(*v),
                reason: None,
            },
            CriticalScale::Undefined { reason } => CriticalScaleRepr {
                value: None,
                reason: Some((*reason).to_string()),
            },
        };
        repr.serialize(s)
    }
}

/// Maps a serialized reason back to its `&'static str` constant.
fn static_reason(text: &str) -> &'static str {
    REASONS
        .iter()
        .find(|r| **r == text)
        .copied()
        .unwrap_or(UNDEFINED_OTHER)
}

/// Owned mirror of [`QuadraticThreshold`] for deserialization (a `&'static str`
/// reason cannot be borrowed from the input).
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum QuadraticThresholdRepr {
    Unfavourable,
    ZeroUpdate,
    Minimizer {
        kappa_min: f64,
        f_min: f64,
    },
    Root {
        kappa: f64,
        kappa_min: f64,
        f_min: f64,
    },
    Invalid {
        reason: String,
    },
}

impl<'de> Deserialize<'de> for QuadraticThreshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        QuadraticThresholdRepr::deserialize(d).map(Self::from)
    }
}

impl From<QuadraticThresholdRepr> for QuadraticThreshold {
    fn from(r: QuadraticThresholdRepr) -> Self {
        match r {
            QuadraticThresholdRepr::Unfavourable => QuadraticThreshold::Unfavourable,
            QuadraticThresholdRepr::ZeroUpdate => QuadraticThreshold::ZeroUpdate,
            QuadraticThresholdRepr::Minimizer { kappa_min, f_min } => {
                QuadraticThreshold::Minimizer { kappa_min, f_min }
            }
            QuadraticThresholdRepr::Root {
                kappa,
                kappa_min,
                f_min,
            } => QuadraticThreshold::Root {
                kappa,
                kappa_min,
                f_min,
            },
            QuadraticThresholdRepr::Invalid { reason } => QuadraticThreshold::Invalid {
                reason: static_reason(&reason),
            },
        }
    }
}

impl<'de> Deserialize<'de> for CriticalScale {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let repr = CriticalScaleRepr::deserialize(d)?;
        Ok(match repr.value {
            Some(v) => CriticalScale::Finite(v),
            None => {
                let text = repr.reason.unwrap_or_default();
                CriticalScale::Undefined {
                    reason: static_reason(&text),
                }
            }
        })
    }
}

/// The paper's critical scaling threshold (Luong & Chen, 2026)
///
/// ```text
/// s* = (a_t / a_c) · σ1(W0) / σ1(B·A)
/// ```
///
/// above which the trigger response is suppressed; compare it with the scale `s`
/// actually used. `sigma1_unscaled_update` is `σ1(B·A)` **without** the scale.
///
/// This project reads the alignments as follows (the paper gives no formula):
/// * trigger alignment `a_t = ‖Ukᵀ·ΔW‖F/‖ΔW‖F`, the share of the update in `W0`'s
///   dominant left subspace `Uk`, where a planted trigger pathway lives
///   ([`crate::subspace_share`]);
/// * clean alignment `a_c = √clean_share` (`‖ΔW·Vc‖F/‖ΔW‖F`, [`crate::clean_share`])
///   when a clean input subspace `Vc` is known, else `√(1 − a_t²)`.
///
/// Returns [`CriticalScale::Undefined`] for a zero update, a zero clean alignment,
/// or a negative or non-finite input.
pub fn critical_scale(
    trigger_alignment: f64,
    clean_alignment: f64,
    sigma1_base: f64,
    sigma1_unscaled_update: f64,
) -> CriticalScale {
    let inputs = [
        trigger_alignment,
        clean_alignment,
        sigma1_base,
        sigma1_unscaled_update,
    ];
    if inputs.iter().any(|x| !x.is_finite()) {
        return CriticalScale::Undefined {
            reason: UNDEFINED_NON_FINITE,
        };
    }
    if inputs.iter().any(|&x| x < 0.0) {
        return CriticalScale::Undefined {
            reason: UNDEFINED_NEGATIVE,
        };
    }
    if sigma1_unscaled_update == 0.0 {
        return CriticalScale::Undefined {
            reason: UNDEFINED_ZERO_UPDATE,
        };
    }
    if clean_alignment == 0.0 {
        return CriticalScale::Undefined {
            reason: UNDEFINED_ZERO_CLEAN_ALIGNMENT,
        };
    }
    let s = (trigger_alignment / clean_alignment) * (sigma1_base / sigma1_unscaled_update);
    if s.is_finite() {
        CriticalScale::Finite(s)
    } else {
        CriticalScale::Undefined {
            reason: UNDEFINED_NON_FINITE,
        }
    }
}

/// Outcome of [`quadratic_threshold`] for `f(κ) = a + 2bκ + cκ²`, the trigger
/// response `‖(W0 + κ·ΔW)·Vt‖F²` of a scaled update on a trigger subspace `Vt`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QuadraticThreshold {
    /// `b ≥ 0`: no positive scale lowers the response (unfavourable alignment).
    Unfavourable,
    /// `c = 0`: the update does not act on the subspace at all.
    ZeroUpdate,
    /// `b < 0` but even the minimum does not reach `η²·a`.
    Minimizer {
        /// Minimizing scale `κ = −b/c`.
        kappa_min: f64,
        /// Minimum response `a − b²/c`.
        f_min: f64,
    },
    /// The smallest `κ ≥ 0` with `f(κ) ≤ η²·a`: the smaller root of
    /// `cκ² + 2bκ + (1 − η²)a = 0` (or `0` when `η ≥ 1`).
    Root {
        /// The threshold scale.
        kappa: f64,
        /// Minimizing scale `−b/c`.
        kappa_min: f64,
        /// Minimum response `a − b²/c`.
        f_min: f64,
    },
    /// An input was negative (`a`, `c`, `η`) or non-finite.
    Invalid {
        /// What was wrong.
        reason: &'static str,
    },
}

/// Exact rescaling threshold on a subspace (DESIGN.md): for
/// `f(κ) = a + 2bκ + cκ²` (`a = ‖W0·Vt‖F²`, `b = ⟨W0·Vt, ΔW·Vt⟩`, `c = ‖ΔW·Vt‖F²`,
/// see [`quadratic_coefficients`]) and a target ratio `η ∈ [0, 1)`, the smallest
/// scale `κ ≥ 0` such that `f(κ) ≤ η²·a`.
///
/// Order of the checks: invalid input, `c = 0` ([`QuadraticThreshold::ZeroUpdate`];
/// then `b = 0` too), `b ≥ 0` ([`QuadraticThreshold::Unfavourable`]), no real root
/// ([`QuadraticThreshold::Minimizer`]), else [`QuadraticThreshold::Root`]. The root
/// is computed in the cancellation-free form `(1 − η²)a/(−b + √(b² − c(1 − η²)a))`.
pub fn quadratic_threshold(a: f64, b: f64, c: f64, eta: f64) -> QuadraticThreshold {
    if ![a, b, c, eta].iter().all(|x| x.is_finite()) {
        return QuadraticThreshold::Invalid {
            reason: UNDEFINED_NON_FINITE,
        };
    }
    if a < 0.0 || c < 0.0 || eta < 0.0 {
        return QuadraticThreshold::Invalid {
            reason: UNDEFINED_NEGATIVE,
        };
    }
    if c == 0.0 {
        return QuadraticThreshold::ZeroUpdate;
    }
    if b >= 0.0 {
        return QuadraticThreshold::Unfavourable;
    }
    let kappa_min = -b / c;
    let f_min = (a - b * b / c).max(0.0);
    let k0 = (1.0 - eta * eta) * a;
    if k0 <= 0.0 {
        return QuadraticThreshold::Root {
            kappa: 0.0,
            kappa_min,
            f_min,
        };
    }
    let disc = b * b - c * k0;
    if disc < 0.0 {
        return QuadraticThreshold::Minimizer { kappa_min, f_min };
    }
    let kappa = k0 / (-b + disc.sqrt());
    QuadraticThreshold::Root {
        kappa,
        kappa_min,
        f_min,
    }
}

/// Coefficients `(a, b, c)` of `f(κ) = ‖(W0 + κ·ΔW)·Vt‖F² = a + 2bκ + cκ²` with
/// `ΔW = scale·B·A` (so `κ = 1` is the adapter as trained): `a = ‖W0·Vt‖F²`,
/// `b = ⟨W0·Vt, ΔW·Vt⟩`, `c = ‖ΔW·Vt‖F²`.
///
/// Shapes: `w0: out×in`, `b: out×r`, `a: r×in`, `vt: in×kt`. `W0·Vt` is a dense
/// product; `ΔW·Vt = scale·B·(A·Vt)` is factored.
///
/// # Errors
/// Empty/non-finite inputs, [`SpectralError::ShapeMismatch`] for inconsistent shapes.
pub fn quadratic_coefficients(
    w0: &DMatrix<f64>,
    b: &DMatrix<f64>,
    a: &DMatrix<f64>,
    scale: f64,
    vt: &DMatrix<f64>,
) -> Result<(f64, f64, f64), SpectralError> {
    check_matrix(w0, "W0")?;
    check_factors(b, a)?;
    check_scalar(scale, "scale")?;
    check_matrix(vt, "Vt")?;
    check_dim("B rows vs W0 rows (out)", w0.nrows(), b.nrows())?;
    check_dim("A columns vs W0 columns (in)", w0.ncols(), a.ncols())?;
    check_dim("Vt rows vs W0 columns (in)", w0.ncols(), vt.nrows())?;
    let base = w0 * vt;
    let upd = (b * (a * vt)) * scale;
    Ok((base.norm_squared(), base.dot(&upd), upd.norm_squared()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn critical_scale_cases() {
        assert_eq!(
            critical_scale(0.5, 0.25, 4.0, 2.0),
            CriticalScale::Finite(4.0)
        );
        assert_eq!(
            critical_scale(0.5, 0.25, 4.0, 0.0),
            CriticalScale::Undefined {
                reason: UNDEFINED_ZERO_UPDATE
            }
        );
        assert_eq!(critical_scale(0.5, 0.0, 4.0, 1.0).value(), None,);
        assert!(matches!(
            critical_scale(f64::NAN, 1.0, 1.0, 1.0),
            CriticalScale::Undefined { .. }
        ));
        for cs in [
            CriticalScale::Finite(2.5),
            critical_scale(1.0, 0.0, 1.0, 1.0),
        ] {
            let json = serde_json::to_string(&cs).unwrap();
            assert_eq!(serde_json::from_str::<CriticalScale>(&json).unwrap(), cs);
        }
        assert_eq!(
            serde_json::to_string(&CriticalScale::Undefined {
                reason: UNDEFINED_ZERO_UPDATE
            })
            .unwrap(),
            r#"{"value":null,"reason":"zero update"}"#
        );
    }

    #[test]
    fn quadratic_cases() {
        assert_eq!(
            quadratic_threshold(1.0, 0.5, 1.0, 0.5),
            QuadraticThreshold::Unfavourable
        );
        assert_eq!(
            quadratic_threshold(1.0, 0.0, 0.0, 0.5),
            QuadraticThreshold::ZeroUpdate
        );
        // f = 1 − 2κ·0.1 + κ²: minimum 0.99 at 0.1, never reaches 0.25.
        assert!(matches!(
            quadratic_threshold(1.0, -0.1, 1.0, 0.5),
            QuadraticThreshold::Minimizer { .. }
        ));
        // f = (1 − κ)²: f ≤ 0.25 from κ = 0.5.
        match quadratic_threshold(1.0, -1.0, 1.0, 0.5) {
            QuadraticThreshold::Root {
                kappa,
                kappa_min,
                f_min,
            } => {
                assert_relative_eq!(kappa, 0.5, epsilon = 1e-12);
                assert_relative_eq!(kappa_min, 1.0);
                assert_relative_eq!(f_min, 0.0);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            quadratic_threshold(1.0, -1.0, 1.0, 1.5),
            QuadraticThreshold::Root { kappa: 0.0, .. }
        ));
        assert!(matches!(
            quadratic_threshold(-1.0, -1.0, 1.0, 0.5),
            QuadraticThreshold::Invalid { .. }
        ));
        for q in [
            QuadraticThreshold::Unfavourable,
            quadratic_threshold(1.0, -1.0, 1.0, 0.5),
            quadratic_threshold(f64::NAN, 0.0, 0.0, 0.5),
        ] {
            let json = serde_json::to_string(&q).unwrap();
            assert_eq!(
                serde_json::from_str::<QuadraticThreshold>(&json).unwrap(),
                q
            );
        }
    }

    #[test]
    fn coefficients_match_dense() {
        let w0 = DMatrix::from_fn(4, 5, |i, j| ((i * 5 + j) as f64).sin());
        let b = DMatrix::from_fn(4, 2, |i, j| ((i + j) as f64).cos());
        let a = DMatrix::from_fn(2, 5, |i, j| (i as f64) - (j as f64) * 0.3);
        let vt = DMatrix::from_fn(5, 2, |i, j| if i == j + 1 { 1.0 } else { 0.0 });
        let (qa, qb, qc) = quadratic_coefficients(&w0, &b, &a, 0.7, &vt).unwrap();
        let dw = (&b * &a) * 0.7;
        for kappa in [0.0, 0.5, 2.0] {
            let f = ((&w0 + &dw * kappa) * &vt).norm_squared();
            assert_relative_eq!(
                f,
                qa + 2.0 * qb * kappa + qc * kappa * kappa,
                epsilon = 1e-10
            );
        }
        assert!(quadratic_coefficients(&w0, &b, &a, 0.7, &vt.transpose()).is_err());
    }
}
