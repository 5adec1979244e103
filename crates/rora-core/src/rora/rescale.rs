//! Pt, post-training spectral rescaling, and the calibrated variant.

use std::collections::HashMap;

use burn::module::Module;
use rora_spectral::{QuadraticThreshold, factored_svd, quadratic_threshold};
use serde::{Deserialize, Serialize};

use super::{RescaleTarget, Rora, RoraError};
use crate::adapted::{AdaptedLayer, AdapterKind, adapted_layers};
use crate::replace::replace_params;
use crate::target::TargetPattern;

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
    /// The adapted layers of `model` that rescaling selects: those matching
    /// `rescale_layers.patterns`, restricted to the last `last_blocks` blocks (a block is the
    /// last number in the path).
    pub fn rescale_selection<M: Module>(&self, model: &M) -> Result<Vec<String>, RoraError> {
        self.select(&adapted_layers(model))
    }

    fn select(&self, layers: &[AdaptedLayer]) -> Result<Vec<String>, RoraError> {
        let sel = &self.config.rescale_layers;
        let patterns: Vec<TargetPattern> = sel
            .patterns
            .iter()
            .map(|p| TargetPattern::parse(p))
            .collect::<Result<_, _>>()?;
        let matching: Vec<String> = layers
            .iter()
            .map(|l| l.path.clone())
            .filter(|p| patterns.iter().any(|pat| pat.matches(p)))
            .collect();
        let selected = match sel.last_blocks {
            None => matching,
            Some(n) => {
                let mut blocks: Vec<usize> =
                    matching.iter().filter_map(|p| block_index(p)).collect();
                blocks.sort_unstable();
                blocks.dedup();
                let keep: Vec<usize> = blocks.iter().rev().take(n).copied().collect();
                matching
                    .into_iter()
                    .filter(|p| block_index(p).is_none_or(|b| keep.contains(&b)))
                    .collect()
            }
        };
        if selected.is_empty() {
            return Err(RoraError::NothingToRescale {
                patterns: sel.patterns.clone(),
            });
        }
        Ok(selected)
    }

    /// Pt: rescale the update of every selected layer as `config.rescale` says, writing the
    /// result back as factors of the same rank (`A ← √f·A`, `B ← √f·B`, so
    /// `s·B'·A' = f·s·B·A`: same singular vectors, singular values times `f`). `σ1` comes
    /// from the factored SVD; no dense `ΔW` is formed. Unselected layers stay bit-identical.
    pub fn rescale<M: Module>(&self, model: M) -> Result<(M, RescaleReport), RoraError> {
        self.rescale_with(model, self.config.rescale)
    }

    /// [`rescale`](Self::rescale) with another target than the config's.
    pub fn rescale_with<M: Module>(
        &self,
        model: M,
        target: RescaleTarget,
    ) -> Result<(M, RescaleReport), RoraError> {
        if target == RescaleTarget::Off {
            return Ok((model, RescaleReport::default()));
        }
        let layers = adapted_layers(&model);
        let selected = self.select(&layers)?;
        let mut values = HashMap::new();
        let mut report = RescaleReport::default();
        for layer in layers.iter().filter(|l| selected.contains(&l.path)) {
            let entry = self.rescale_layer(layer, target)?;
            if entry.factor != 1.0 {
                let root = entry.factor.sqrt();
                let (a, b) = match layer.kind {
                    AdapterKind::LoraLinear => (layer.a.clone(), layer.b.clone()),
                    AdapterKind::BurnNative => {
                        (layer.a.clone().transpose(), layer.b.clone().transpose())
                    }
                };
                values.insert(layer.a_path.clone(), a.inner().mul_scalar(root));
                values.insert(layer.b_path.clone(), b.inner().mul_scalar(root));
            }
            report.layers.push(entry);
        }
        let (model, _) = replace_params(model, values);
        Ok((model, report))
    }

    fn rescale_layer(
        &self,
        layer: &AdaptedLayer,
        target: RescaleTarget,
    ) -> Result<RescaledLayer, RoraError> {
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
            note = Some("zero update".to_string());
            1.0
        } else {
            match target {
                RescaleTarget::Off => 1.0,
                RescaleTarget::Ratio(rho) => rho * sigma1_base / sigma1_before,
                RescaleTarget::Factor(f) => f,
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
            }
        };
        Ok(RescaledLayer {
            path: layer.path.clone(),
            scale: s,
            new_scale: s * factor,
            factor,
            sigma1_base,
            sigma1_before,
            sigma1_after: sigma1_before * factor.abs(),
            note,
        })
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

/// The last all-digit component of a module path (`layers.11.attention.query` → 11).
fn block_index(path: &str) -> Option<usize> {
    path.split('.').rev().find_map(|c| c.parse().ok())
}
