//! [`RescaleTarget`]: how RoRA's post-training spectral rescaling (Pt) chooses the factor
//! `f` that multiplies a layer's update, `s·B·A → f·s·B·A`. One rule for the library and
//! the `rora` command line.

use serde::{Deserialize, Serialize};

use crate::error::SpectralError;

/// How post-training spectral rescaling sets the new scale `s' = f·s` of a layer.
///
/// ```
/// use rora_spectral::RescaleTarget;
/// // The paper's rule: σ1(f·ΔW) = 1.0·σ1(W0).
/// let f = RescaleTarget::Ratio(1.0).factor(4.0, 0.5).unwrap();
/// assert_eq!(f, 8.0);
/// assert_eq!(RescaleTarget::Factor(2.0).factor(4.0, 0.5).unwrap(), 2.0);
/// assert!(RescaleTarget::Ratio(1.0).factor(0.0, 0.5).is_err()); // σ1(W0) = 0
/// assert!(RescaleTarget::Factor(0.0).validate().is_err()); // would erase the update
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum RescaleTarget {
    /// No rescaling (`f = 1`).
    Off,
    /// The paper's rule with a target ratio `ρ`: `f` such that `σ1(f·s·B·A) = ρ·σ1(W0)`
    /// (the paper uses `ρ = 1`).
    Ratio(f64),
    /// A fixed factor: `f` as given.
    Factor(f64),
    /// Extension: the exact quadratic threshold `η` on a trigger subspace `Vt` (see
    /// [`quadratic_threshold`](crate::quadratic_threshold)): the smallest `κ` with
    /// `‖(W0 + κ·ΔW)·Vt‖F² ≤ η²·‖W0·Vt‖F²`. Needs a clean subspace, which only a training
    /// run provides; [`factor`](Self::factor) does not compute it.
    ExactThreshold(f64),
}

impl Default for RescaleTarget {
    /// The paper's `Ratio(1.0)`.
    fn default() -> Self {
        RescaleTarget::Ratio(1.0)
    }
}

impl std::fmt::Display for RescaleTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RescaleTarget::Off => write!(f, "no rescaling"),
            RescaleTarget::Ratio(r) => write!(f, "target ratio {r}"),
            RescaleTarget::Factor(x) => write!(f, "factor {x}"),
            RescaleTarget::ExactThreshold(eta) => write!(f, "exact threshold η = {eta}"),
        }
    }
}

impl RescaleTarget {
    /// Check the target's own value: a ratio or factor must be finite and `> 0` (zero
    /// would erase the update, a negative value flip it), `η` finite and `≥ 0`.
    pub fn validate(&self) -> Result<(), SpectralError> {
        match *self {
            RescaleTarget::Ratio(v) | RescaleTarget::Factor(v) if !(v.is_finite() && v > 0.0) => {
                Err(SpectralError::InvalidArgument(format!(
                    "rescale {self}: must be finite and > 0"
                )))
            }
            RescaleTarget::ExactThreshold(eta) if !(eta.is_finite() && eta >= 0.0) => Err(
                SpectralError::InvalidArgument(format!("rescale {self}: must be finite and ≥ 0")),
            ),
            _ => Ok(()),
        }
    }

    /// The factor `f` for a layer with `σ1(W0) = sigma1_base` and `σ1(s·B·A) =
    /// sigma1_update`.
    ///
    /// # Errors
    /// An invalid target ([`validate`](Self::validate)); non-finite or negative inputs;
    /// for [`Ratio`](Self::Ratio), `σ1(W0) = 0` (no strength to match) or a zero update
    /// ([`SpectralError::ZeroUpdate`]); a factor that is not finite and positive (overflow);
    /// [`ExactThreshold`](Self::ExactThreshold), which needs a trigger subspace.
    pub fn factor(&self, sigma1_base: f64, sigma1_update: f64) -> Result<f64, SpectralError> {
        self.validate()?;
        for (v, what) in [
            (sigma1_base, "sigma1(W0)"),
            (sigma1_update, "sigma1(s·B·A)"),
        ] {
            if !v.is_finite() {
                return Err(SpectralError::NonFinite { what });
            }
            if v < 0.0 {
                return Err(SpectralError::InvalidArgument(format!(
                    "{what} = {v} is negative"
                )));
            }
        }
        let f = match *self {
            RescaleTarget::Off => 1.0,
            RescaleTarget::Factor(f) => f,
            RescaleTarget::Ratio(rho) => {
                if sigma1_base == 0.0 {
                    return Err(SpectralError::InvalidArgument(
                        "sigma1(W0) is zero: there is no base strength to match".into(),
                    ));
                }
                if sigma1_update == 0.0 {
                    return Err(SpectralError::ZeroUpdate);
                }
                rho * sigma1_base / sigma1_update
            }
            RescaleTarget::ExactThreshold(_) => {
                return Err(SpectralError::InvalidArgument(
                    "the exact threshold needs a trigger subspace (a clean subspace from \
                     training data); use rora-core's Rora::rescale"
                        .into(),
                ));
            }
        };
        if !(f.is_finite() && f > 0.0) {
            return Err(SpectralError::InvalidArgument(format!(
                "rescale factor {f} is not finite and positive ({self}, sigma1(W0) = \
                 {sigma1_base}, sigma1(s·B·A) = {sigma1_update})"
            )));
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_reaches_its_target() {
        for (base, upd, rho) in [(4.0, 0.5, 1.0), (1e-3, 7.0, 0.25), (10.0, 10.0, 2.0)] {
            let f = RescaleTarget::Ratio(rho).factor(base, upd).unwrap();
            assert!((f * upd / base - rho).abs() < 1e-12);
        }
    }

    #[test]
    fn degenerate_inputs_are_errors() {
        let r = RescaleTarget::Ratio(1.0);
        assert_eq!(r.factor(1.0, 0.0), Err(SpectralError::ZeroUpdate));
        assert!(r.factor(0.0, 1.0).is_err());
        assert!(r.factor(f64::NAN, 1.0).is_err());
        assert!(r.factor(1e300, 1e-300).is_err()); // overflow
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(RescaleTarget::Ratio(bad).validate().is_err());
            assert!(RescaleTarget::Factor(bad).validate().is_err());
        }
        assert!(RescaleTarget::ExactThreshold(-1.0).validate().is_err());
        assert!(RescaleTarget::ExactThreshold(0.5).factor(1.0, 1.0).is_err());
        assert_eq!(RescaleTarget::Off.factor(0.0, 0.0), Ok(1.0));
    }

    #[test]
    fn round_trips_through_json() {
        for t in [
            RescaleTarget::Off,
            RescaleTarget::Ratio(1.0),
            RescaleTarget::Factor(0.5),
            RescaleTarget::ExactThreshold(0.1),
        ] {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<RescaleTarget>(&json).unwrap(), t);
        }
    }
}
