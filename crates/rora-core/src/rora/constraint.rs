//! Tr, the trigger-insensitive constraint, and the loss-side extensions.

use burn::module::Module;
use burn::tensor::Tensor;

use super::{Rora, RoraError};
use crate::adapted::{AdaptedLayer, adapted_layers};

fn sum_squares(t: Tensor<2>) -> Tensor<1> {
    t.clone().mul(t).sum()
}

/// The trigger-insensitive constraint of one layer, `Ω = ‖Ukᵀ·B‖F² + ‖A·Vk‖F²`.
///
/// `uk: [out, k]`, `vk: [in, k]` (constants), `a: [r, in]`, `b: [out, r]` (PEFT layout).
/// Returns a `[1]` tensor that backpropagates into `a` and `b`. With `k = min(in, out)` on a
/// square layer it equals `‖B‖F² + ‖A‖F²` (plain weight decay), which is why RoRA requires
/// `k < min(in, out)`.
pub fn omega(uk: Tensor<2>, vk: Tensor<2>, a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    sum_squares(uk.transpose().matmul(b)) + sum_squares(a.matmul(vk))
}

impl Rora {
    /// The regularization term to add to the task loss, a `[1]` tensor that backpropagates
    /// into every adapter's `A` and `B`:
    ///
    /// `λ·Σℓ (‖Ukᵀ·B‖F² + ‖A·Vk‖F²)` plus the enabled loss-side extensions (clean-strength
    /// target, trigger cancellation) for layers with a clean subspace.
    ///
    /// Layers the model has but RoRA was not prepared on contribute nothing; use
    /// [`try_penalty`](Self::try_penalty) to have that reported as an error. With `λ = 0`
    /// and no extensions the result is a constant zero (plain LoRA gradients, exactly).
    pub fn penalty<M: Module>(&self, model: &M) -> Tensor<1> {
        self.penalty_inner(model, false)
            .expect("lenient penalty does not fail")
    }

    /// As [`penalty`](Self::penalty), but a layer RoRA was not prepared on, or a burn-native
    /// adapter whose scale is needed and unknown, is an error.
    pub fn try_penalty<M: Module>(&self, model: &M) -> Result<Tensor<1>, RoraError> {
        self.penalty_inner(model, true)
    }

    fn penalty_inner<M: Module>(&self, model: &M, strict: bool) -> Result<Tensor<1>, RoraError> {
        let layers = adapted_layers(model);
        let device = match layers.first() {
            Some(l) => l.a.device(),
            None => return Err(RoraError::NoAdaptedLayers),
        };
        let mut total: Option<Tensor<1>> = None;
        let mut add = |t: Tensor<1>| {
            total = Some(match total.take() {
                Some(acc) => acc + t,
                None => t,
            })
        };
        for layer in &layers {
            let Some(&i) = self.index.get(&layer.path) else {
                if strict {
                    return Err(RoraError::LayerNotPrepared {
                        path: layer.path.clone(),
                    });
                }
                continue;
            };
            if self.config.lambda > 0.0 {
                add(self.omega(i, layer).mul_scalar(self.config.lambda));
            }
            if let Some(term) = self.extension_terms(i, layer, strict)? {
                add(term);
            }
        }
        Ok(total.unwrap_or_else(|| Tensor::zeros([1], &device)))
    }

    /// `Ω = ‖Ukᵀ·B‖F² + ‖A·Vk‖F²` of one prepared layer.
    fn omega(&self, i: usize, layer: &AdaptedLayer) -> Tensor<1> {
        let t = &self.tensors[i];
        omega(t.uk.clone(), t.vk.clone(), layer.a.clone(), layer.b.clone())
    }

    /// `Ω` of every adapted layer of `model`, by path (for monitoring; detached values).
    pub fn omega_per_layer<M: Module>(&self, model: &M) -> Vec<(String, f64)> {
        adapted_layers(model)
            .iter()
            .filter_map(|l| {
                let i = *self.index.get(&l.path)?;
                let v = self
                    .omega(i, l)
                    .inner()
                    .try_into_vec_as::<f64>()
                    .ok()?
                    .first()
                    .copied()?;
                Some((l.path.clone(), v))
            })
            .collect()
    }

    fn extension_terms(
        &self,
        i: usize,
        layer: &AdaptedLayer,
        strict: bool,
    ) -> Result<Option<Tensor<1>>, RoraError> {
        let cs = self.config.clean_strength.as_ref();
        let tc = self.config.trigger_cancellation.as_ref();
        if cs.is_none() && tc.is_none() {
            return Ok(None);
        }
        let t = &self.tensors[i];
        let cache = &self.caches[i];
        let Some(vc) = &t.vc else {
            if strict {
                return Err(RoraError::NoCleanSubspace {
                    path: layer.path.clone(),
                    mechanism: if cs.is_some() {
                        "the clean-strength target"
                    } else {
                        "trigger cancellation"
                    },
                });
            }
            return Ok(None);
        };
        let s = match layer.scale_or(self.config.native_lora_scale) {
            Ok(s) => s,
            Err(e) if strict => return Err(e.into()),
            Err(_) => return Ok(None),
        };
        let mut out: Option<Tensor<1>> = None;
        if let (Some(cs), Some(base_norm)) = (cs, cache.clean_base_norm) {
            // max(0, τ − ‖ΔW·Vc‖F / ‖W0·Vc‖F)², with ΔW·Vc = s·B·(A·Vc).
            let dw_vc = layer
                .b
                .clone()
                .matmul(layer.a.clone().matmul(vc.clone()))
                .mul_scalar(s);
            let norm = sum_squares(dw_vc).add_scalar(1e-12).sqrt();
            let gap = norm
                .div_scalar(base_norm.max(1e-12))
                .neg()
                .add_scalar(cs.tau);
            let term = burn::tensor::activation::relu(gap)
                .powf_scalar(2.0)
                .mul_scalar(cs.weight);
            out = Some(term);
        }
        if let (Some(tc), Some(vt), Some(w0_vt)) = (tc, &t.vt, &t.w0_vt) {
            // ‖(W0 + ΔW)·Vt‖F² / ‖W0·Vt‖F².
            let base_sq = cache
                .trigger_base
                .as_ref()
                .map_or(1.0, |m| m.norm_squared())
                .max(1e-12);
            let dw_vt = layer
                .b
                .clone()
                .matmul(layer.a.clone().matmul(vt.clone()))
                .mul_scalar(s);
            let term = sum_squares(w0_vt.clone() + dw_vt)
                .div_scalar(base_sq)
                .mul_scalar(tc.weight);
            out = Some(match out {
                Some(o) => o + term,
                None => term,
            });
        }
        Ok(out)
    }
}
