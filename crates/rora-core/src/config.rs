//! [`LoraConfig`]: the settings of a LoRA adapter, validated before a layer is built.

use burn::config::Config;

/// How the factors `A` and `B` of a new adapter are initialised.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum LoraInit {
    /// `A` Kaiming-uniform with `a = √5` (bound `1/√in`), `B = 0`, as PEFT does by default.
    /// The adapted layer starts out equal to the base layer.
    KaimingUniform,
    /// `A ~ N(0, (1/r)²)` (standard deviation `1/r`, as PEFT's `"gaussian"`), `B = 0`.
    Gaussian,
    /// PiSSA: `B = U_r·√(Σ_r/s)`, `A = √(Σ_r/s)·V_rᵀ` from the top-`r` singular triplets of
    /// `W0`, and `W0` replaced by the residual `W0 − s·B·A`. The adapted layer starts out
    /// equal to the base layer, with the adapter holding its principal directions.
    Pissa,
}

/// Settings of a LoRA adapter on one linear layer.
///
/// `ΔW = s·B·A` with `B: [out, r]`, `A: [r, in]`, `s = alpha / r` (or `alpha / √r` with
/// [`use_rslora`](Self::use_rslora)).
///
/// ```
/// use rora_core::{LoraConfig, LoraInit};
/// let config = LoraConfig::new(8, 16.0).with_dropout(0.1).with_init(LoraInit::Gaussian);
/// assert_eq!(config.scale(), 2.0);
/// config.validate(768, 768).unwrap();
/// assert!(LoraConfig::new(0, 16.0).validate(768, 768).is_err());
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of the update (at least 1, at most `min(in, out)`).
    pub rank: usize,
    /// `lora_alpha`: the update is scaled by `alpha / r`.
    pub alpha: f64,
    /// Dropout probability on the adapter's input, training only (PEFT's `lora_dropout`).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Dropout probability on the frozen branch's output `x·W0 + bias`, training only:
    /// RoRA's clean-strengthened regularization (Cl). 0 (off) by default; the paper uses 0.1.
    #[config(default = 0.0)]
    pub base_dropout: f64,
    /// rsLoRA: scale by `alpha / √r` instead of `alpha / r`.
    #[config(default = false)]
    pub use_rslora: bool,
    /// Initialisation of the factors.
    #[config(default = "LoraInit::KaimingUniform")]
    pub init: LoraInit,
    /// DoRA (PEFT's `use_dora`): a trainable magnitude vector `m: [out]`, initialised to the
    /// row norms of `W0 + s·B·A`, rescales every output of the adapted weight
    /// (`W = diag(m/n)·(W0 + s·B·A)`); see [`crate::dora`].
    #[config(default = false)]
    pub use_dora: bool,
}

/// A [`LoraConfig`] that cannot be used, with the offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoraConfigError {
    /// `rank` is 0.
    #[error("LoRA rank must be at least 1")]
    ZeroRank,
    /// `rank` exceeds `min(in, out)` of the layer.
    #[error("LoRA rank {rank} is larger than min(in, out) = {max} of a {d_in}→{d_out} layer")]
    RankTooLarge {
        /// The rank asked for.
        rank: usize,
        /// `min(d_in, d_out)`.
        max: usize,
        /// Input features of the layer.
        d_in: usize,
        /// Output features of the layer.
        d_out: usize,
    },
    /// `alpha` is NaN, infinite, zero or negative.
    #[error("LoRA alpha must be finite and positive, got {0}")]
    InvalidAlpha(f64),
    /// A dropout probability is outside `[0, 1)`.
    #[error("{which} must be in [0, 1), got {value}")]
    InvalidDropout {
        /// `"dropout"` or `"base_dropout"`.
        which: &'static str,
        /// The value given.
        value: f64,
    },
}

impl LoraConfig {
    /// The scale `s`: `alpha / r`, or `alpha / √r` with rsLoRA.
    pub fn scale(&self) -> f64 {
        crate::peft::lora_scale(self.alpha, self.rank, self.use_rslora)
    }

    /// Check the settings that do not depend on the layer: rank ≥ 1, alpha finite and
    /// positive, both dropouts in `[0, 1)`.
    pub fn validate_settings(&self) -> Result<(), LoraConfigError> {
        if self.rank == 0 {
            return Err(LoraConfigError::ZeroRank);
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(LoraConfigError::InvalidAlpha(self.alpha));
        }
        for (which, value) in [
            ("dropout", self.dropout),
            ("base_dropout", self.base_dropout),
        ] {
            if !value.is_finite() || !(0.0..1.0).contains(&value) {
                return Err(LoraConfigError::InvalidDropout { which, value });
            }
        }
        Ok(())
    }

    /// Check the settings for a `d_in → d_out` layer: as
    /// [`validate_settings`](Self::validate_settings), and `rank ≤ min(d_in, d_out)`.
    pub fn validate(&self, d_in: usize, d_out: usize) -> Result<(), LoraConfigError> {
        self.validate_settings()?;
        let max = d_in.min(d_out);
        if self.rank > max {
            return Err(LoraConfigError::RankTooLarge {
                rank: self.rank,
                max,
                d_in,
                d_out,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_setting_has_its_error() {
        let ok = LoraConfig::new(4, 8.0);
        assert_eq!(ok.validate(16, 8), Ok(()));
        assert_eq!(
            LoraConfig::new(0, 8.0).validate(16, 8),
            Err(LoraConfigError::ZeroRank)
        );
        assert!(matches!(
            LoraConfig::new(9, 8.0).validate(16, 8),
            Err(LoraConfigError::RankTooLarge {
                rank: 9,
                max: 8,
                ..
            })
        ));
        for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                LoraConfig::new(4, alpha).validate(16, 8),
                Err(LoraConfigError::InvalidAlpha(_))
            ));
        }
        for p in [-0.1, 1.0, f64::NAN] {
            assert!(matches!(
                ok.clone().with_dropout(p).validate(16, 8),
                Err(LoraConfigError::InvalidDropout {
                    which: "dropout",
                    ..
                })
            ));
            assert!(matches!(
                ok.clone().with_base_dropout(p).validate(16, 8),
                Err(LoraConfigError::InvalidDropout {
                    which: "base_dropout",
                    ..
                })
            ));
        }
    }

    #[test]
    fn rslora_scale() {
        let c = LoraConfig::new(16, 32.0).with_use_rslora(true);
        assert!((c.scale() - 8.0).abs() < 1e-12);
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = LoraConfig::new(8, 16.0)
            .with_init(LoraInit::Pissa)
            .with_base_dropout(0.1);
        let json = serde_json::to_string(&c).unwrap();
        let back: LoraConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(c, back);
    }
}
