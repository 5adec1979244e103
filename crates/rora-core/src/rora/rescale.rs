//! Pt, post-training spectral rescaling, and the calibrated variant.

use std::collections::HashMap;

use burn::module::Module;
use rora_spectral::{QuadraticThreshold, factored_svd, quadratic_threshold};
use serde::{Deserialize, Serialize};

use super::{RescaleTarget, Rora, RoraError};
use crate::adapted::{AdaptedLayer, AdapterKind, adapted_layers};
use crate::convert::host_to_tensor;
use crate::peft::HostMatrix;
use crate::replace::replace_params;

/// How close (relative) the strength ratio of the rescaled float32 factors must come to
/// the target for [`Rora::rescale`] to accept them.
pub const RATIO_TOLERANCE: f64 = 1e-3;

/// What rescaling did to one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RescaledLayer {
    /// Module path.
    pub path: String,
    /// The adapter's scale `s` (unchanged: the change is written into the factors).
    pub scale: f64,
    /// Effective scale after rescaling, `s' = factor·s`.
    pub new_scale: f64,
    /// The multiplier applied to the update, `s'/s`.
    pub factor: f64,
    /// `σ1(W0)`.
    pub sigma1_base: f64,
    /// `σ1(s·B·A)` before.
    pub sigma1_before: f64,
    /// `σ1` of the update after.
    pub sigma1_after: f64,
    /// Why the layer was left unchanged, if it was.
    pub note: Option<String>,
}

impl RescaledLayer {
    /// Strength ratio `σ1(ΔW)/σ1(W0)` before.
    pub fn ratio_before(&self) -> f64 {
        self.sigma1_before / self.sigma1_base
    }
    /// Strength ratio after.
    pub fn ratio_after(&self) -> f64 {
        self.sigma1_after / self.sigma1_base
    }
}

/// The per-layer outcome of [`Rora::rescale`]; unselected layers are not listed (they are
/// left bit-identical).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RescaleReport {
    /// One entry per selected layer.
    pub layers: Vec<RescaledLayer>,
}

impl std::fmt::Display for RescaleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<48} {:>10} {:>10} {:>10} {:>10}",
            "layer", "factor", "ratio", "→ ratio", "σ1(W0)"
        )?;
        for l in &self.layers {
            writeln!(
                f,
                "{:<48} {:>10.4} {:>10.4} {:>10.4} {:>10.4}{}",
                l.path,
                l.factor,
                l.ratio_before(),
                l.ratio_after(),
                l.sigma1_base,
                l.note
                    .as_ref()
                    .map(|n| format!("  ({n})"))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

impl Rora {
    /// The adapted layers of `model` that rescaling selects (`config.rescale_layers`; every
    /// adapted layer by default).
    pub fn rescale_selection<M: Module>(&self, model: &M) -> Result<Vec<String>, RoraError> {
        self.select(&adapted_layers(model))
    }

    fn select(&self, layers: &[AdaptedLayer]) -> Result<Vec<String>, RoraError> {
        Ok(self
            .config
            .rescale_layers
            .select(layers.iter().map(|l| l.path.as_str()))?)
    }

    /// Pt: rescale the update of every selected layer as `config.rescale` says, writing the
    /// result back as factors of the same rank (`A ← √f·A`, `B ← √f·B`, so
    /// `s·B'·A' = f·s·B·A`: same singular vectors, singular values times `f`). `σ1` comes
    /// from the factored SVD; no dense `ΔW` is formed. Unselected layers stay bit-identical.
    ///
    /// Each new pair of factors is checked before anything is written: finite in float32,
    /// and (for [`RescaleTarget::Ratio`]) reaching the target strength ratio to a relative
    /// 1e-3 ([`RATIO_TOLERANCE`]). Otherwise the error names the layer and nothing is
    /// written (the model passed in is dropped: burn modules are cheap to clone, keep a
    /// clone if you need it after an error).
    pub fn rescale<M: Module>(&self, model: M) -> Result<(M, RescaleReport), RoraError> {
        self.rescale_with(model, self.config.rescale)
    }

    /// [`rescale`](Self::rescale) with another target than the config's.
    pub fn rescale_with<M: Module>(
        &self,
        model: M,
        target: RescaleTarget,
    ) -> Result<(M, RescaleReport), RoraError> {
        target
            .validate()
            .map_err(|e| RoraError::InvalidSetting(e.to_string()))?;
        if target == RescaleTarget::Off {
            return Ok((model, RescaleReport::default()));
        }
        let layers = adapted_layers(&model);
        let selected = self.select(&layers)?;
        let mut values = HashMap::new();
        let mut report = RescaleReport::default();
        for layer in layers.iter().filter(|l| selected.contains(&l.path)) {
            if layer.merged {
                return Err(RoraError::Merged {
                    path: layer.path.clone(),
                });
            }
            let (entry, factors) = self.rescale_layer(layer, target)?;
            if let Some((a, b)) = factors {
                let device = layer.base.device();
                let (a, b) = (host_to_tensor(&a, &device), host_to_tensor(&b, &device));
                let (a, b) = match layer.kind {
                    AdapterKind::LoraLinear | AdapterKind::LoraEmbedding => (a, b),
                    AdapterKind::BurnNative => (a.transpose(), b.transpose()),
                };
                values.insert(layer.a_path.clone(), a);
                values.insert(layer.b_path.clone(), b);
            }
            report.layers.push(entry);
        }
        let model = replace_params(model, values)?;
        Ok((model, report))
    }

    /// The report entry of one layer and, when it changes, its new factors `(A', B')` in
    /// PEFT layout, checked.
    fn rescale_layer(
        &self,
        layer: &AdaptedLayer,
        target: RescaleTarget,
    ) -> Result<(RescaledLayer, Option<(HostMatrix, HostMatrix)>), RoraError> {
        let cache = self.cache(&layer.path)?;
        let s = layer.scale_or(self.config.native_lora_scale)?;
        let spectral = |source| RoraError::Spectral {
            path: layer.path.clone(),
            source,
        };
        let (a, b) = (layer.a_matrix(), layer.b_matrix());
        let sigma1_before = factored_svd(&b, &a, s).map_err(spectral)?.sigma1();
        let sigma1_base = cache.spectrum.sigma1;
        let mut note = None;
        let factor = if sigma1_before == 0.0 {
            // A freshly initialised adapter (B = 0): there is nothing to rescale.
            note = Some("zero update".to_string());
            1.0
        } else {
            match target {
                RescaleTarget::ExactThreshold(eta) => {
                    let (Some(vt), Some(w0_vt)) = (&cache.trigger_subspace, &cache.trigger_base)
                    else {
                        return Err(RoraError::NoCleanSubspace {
                            path: layer.path.clone(),
                            mechanism: "exact-threshold rescaling",
                        });
                    };
                    let dw_vt = (&b * (&a * vt)) * s;
                    let qa = w0_vt.norm_squared();
                    let qb = w0_vt.dot(&dw_vt);
                    let qc = dw_vt.norm_squared();
                    match quadratic_threshold(qa, qb, qc, eta) {
                        QuadraticThreshold::Root { kappa, .. } => kappa,
                        QuadraticThreshold::Minimizer { kappa_min, .. } => {
                            note = Some("threshold not reachable: minimizer used".into());
                            kappa_min
                        }
                        other => {
                            note = Some(format!("left unchanged: {other:?}"));
                            1.0
                        }
                    }
                }
                other => other.factor(sigma1_base, sigma1_before).map_err(spectral)?,
            }
        };
        let mut entry = RescaledLayer {
            path: layer.path.clone(),
            scale: s,
            new_scale: s * factor,
            factor,
            sigma1_base,
            sigma1_before,
            sigma1_after: sigma1_before,
            note,
        };
        if factor == 1.0 {
            return Ok((entry, None));
        }
        // The factors as they will be stored (float32), and what they really give.
        let root = factor.abs().sqrt();
        let sign = factor.signum();
        let new_a = HostMatrix::from_dmatrix(&(&a * (root * sign)));
        let new_b = HostMatrix::from_dmatrix(&(&b * root));
        let sigma1_after = if new_a.is_finite() && new_b.is_finite() {
            factored_svd(&new_b.to_dmatrix(), &new_a.to_dmatrix(), s)
                .map_err(spectral)?
                .sigma1()
        } else {
            f64::NAN
        };
        let wanted = sigma1_before * factor.abs() / sigma1_base;
        let got = sigma1_after / sigma1_base;
        // NaN (non-finite factors) fails this test too.
        let reached = (got - wanted).abs() <= RATIO_TOLERANCE * wanted;
        if !reached {
            return Err(RoraError::RescaleMissed {
                path: layer.path.clone(),
                target,
                wanted,
                got,
            });
        }
        entry.sigma1_after = sigma1_after;
        Ok((entry, Some((new_a, new_b))))
    }

    /// Calibrated rescaling (extension): try the target ratios in `ratios` from the largest
    /// down and keep the first whose clean validation accuracy, as `evaluate` measures it,
    /// stays within `tolerance` of the unscaled model's. Returns the model (unchanged if no
    /// ratio qualifies), the report and the chosen ratio.
    ///
    /// `evaluate` must use a validation split, never the test split.
    pub fn rescale_calibrated<M: Module, F: FnMut(&M) -> f64>(
        &self,
        model: M,
        ratios: &[f64],
        tolerance: f64,
        mut evaluate: F,
    ) -> Result<(M, RescaleReport, Option<f64>), RoraError> {
        let reference = evaluate(&model);
        let mut sorted: Vec<f64> = ratios
            .iter()
            .copied()
            .filter(|r| r.is_finite() && *r > 0.0)
            .collect();
        sorted.sort_by(|a, b| b.total_cmp(a));
        for ratio in sorted {
            let (candidate, report) =
                self.rescale_with(model.clone(), RescaleTarget::Ratio(ratio))?;
            if evaluate(&candidate) >= reference - tolerance {
                return Ok((candidate, report, Some(ratio)));
            }
        }
        Ok((model, RescaleReport::default(), None))
    }
}
