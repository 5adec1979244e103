//! Tr, the trigger-insensitive constraint, and the loss-side extensions.

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

use super::{LayerIds, Rora, RoraError};
use crate::adapted::{AdapterKind, NativeScaleUnknown, adapted_layers};

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

/// The factors of one prepared layer as the penalty needs them, PEFT layout, on the
/// model's graph.
pub(crate) struct Factors {
    pub(crate) a: Tensor<2>,
    pub(crate) b: Tensor<2>,
    /// The scale as a `[1]` tensor (a `LoraLinear`'s own parameter), or a constant.
    pub(crate) scale: Scale,
}

pub(crate) enum Scale {
    Tensor(Box<Tensor<1>>),
    Constant(f64),
    Unknown,
}

impl Scale {
    fn apply(&self, t: Tensor<2>) -> Option<Tensor<2>> {
        match self {
            Scale::Tensor(s) => Some(t.mul((**s).clone().reshape([1, 1]))),
            Scale::Constant(s) => Some(t.mul_scalar(*s)),
            Scale::Unknown => None,
        }
    }
}

/// Finds the factor tensors of the prepared layers by parameter id: no path strings, no
/// type names, no reads from the device.
struct IdFinder<'a> {
    wanted: HashMap<ParamId, (usize, Slot)>,
    found: &'a mut [[Option<Box<dyn std::any::Any>>; 3]],
}

#[derive(Clone, Copy)]
enum Slot {
    A = 0,
    B = 1,
    Scale = 2,
}

impl ModuleVisitor for IdFinder<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(&(i, slot)) = self.wanted.get(&param.id) {
            self.found[i][slot as usize] = Some(Box::new(param.val()));
        }
    }
}

impl Rora {
    /// The regularization term to add to the task loss, a `[1]` tensor that backpropagates
    /// into every adapter's `A` and `B`:
    ///
    /// `λ·Σℓ (‖Ukᵀ·B‖F² + ‖A·Vk‖F²)` plus the enabled loss-side extensions (clean-strength
    /// target, trigger cancellation) for layers with a clean subspace.
    ///
    /// Cheap to call every step: the factors are found by the parameter ids `prepare` saw,
    /// and nothing is read back from the device. A model whose ids changed (loaded from a
    /// record, or another model with the same layer paths) is matched by path instead, and
    /// its ids are remembered.
    ///
    /// Layers the model has but RoRA was not prepared on contribute nothing; use
    /// [`try_penalty`](Self::try_penalty) to have that reported as an error. With `λ = 0`
    /// and no extensions the result is a constant zero (plain LoRA gradients, exactly).
    pub fn penalty<M: Module>(&self, model: &M) -> Tensor<1> {
        self.penalty_inner(model, false)
            .expect("lenient penalty does not fail")
    }

    /// As [`penalty`](Self::penalty), but strict: a layer of the model that RoRA was not
    /// prepared on, a prepared layer the model lacks, or a burn-native adapter whose scale
    /// is needed and unknown, is an error. It visits every layer by path (and reads the
    /// scales back to the host), so it costs more than `penalty`: use it to check a setup,
    /// not in every step.
    pub fn try_penalty<M: Module>(&self, model: &M) -> Result<Tensor<1>, RoraError> {
        self.penalty_inner(model, true)
    }

    fn penalty_inner<M: Module>(&self, model: &M, strict: bool) -> Result<Tensor<1>, RoraError> {
        let factors = if strict {
            None
        } else {
            self.factors_by_id(model)
        };
        let factors = match factors {
            Some(f) => f,
            None => self.factors_by_path(model, strict)?,
        };
        let mut total: Option<Tensor<1>> = None;
        let mut add = |t: Tensor<1>| {
            total = Some(match total.take() {
                Some(acc) => acc + t,
                None => t,
            })
        };
        let device = factors.iter().flatten().next().map(|f| f.a.device());
        let tensors = device.as_ref().map(|d| self.tensors_on(d));
        for (i, f) in factors.iter().enumerate() {
            let (Some(f), Some(tensors)) = (f, &tensors) else {
                continue;
            };
            if self.config.lambda > 0.0 {
                let t = &tensors[i];
                add(omega(t.uk.clone(), t.vk.clone(), f.a.clone(), f.b.clone())
                    .mul_scalar(self.config.lambda));
            }
            if let Some(term) = self.extension_terms(i, &tensors[i], f, strict)? {
                add(term);
            }
        }
        match (total, device) {
            (Some(t), _) => Ok(t),
            (None, Some(d)) => Ok(Tensor::zeros([1], &d)),
            (None, None) => Err(RoraError::NoAdaptedLayers),
        }
    }

    /// Every prepared layer's factors (`None` for a layer the model lacks), in
    /// [`caches`](Self::caches) order: found by parameter id, reading nothing back from the
    /// device, or by path (once) when the ids are unknown or changed.
    pub(crate) fn layer_factors<M: Module>(&self, model: &M) -> Vec<Option<Factors>> {
        self.factors_by_id(model).unwrap_or_else(|| {
            self.factors_by_path(model, false)
                .unwrap_or_else(|_| (0..self.caches.len()).map(|_| None).collect())
        })
    }

    /// Every prepared layer's factors by parameter id; `None` when some layer is not found
    /// (ids unknown or changed).
    fn factors_by_id<M: Module>(&self, model: &M) -> Option<Vec<Option<Factors>>> {
        let ids = self.ids_snapshot();
        let mut wanted = HashMap::with_capacity(3 * ids.len());
        for (i, id) in ids.iter().enumerate() {
            let id = id.as_ref()?;
            wanted.insert(id.a, (i, Slot::A));
            wanted.insert(id.b, (i, Slot::B));
            if let Some(s) = id.scale {
                wanted.insert(s, (i, Slot::Scale));
            }
        }
        let mut found: Vec<[Option<Box<dyn std::any::Any>>; 3]> =
            (0..ids.len()).map(|_| [None, None, None]).collect();
        model.visit(&mut IdFinder {
            wanted,
            found: &mut found,
        });
        let mut out = Vec::with_capacity(ids.len());
        for (id, slots) in ids.iter().zip(found) {
            let id = id.as_ref()?;
            let [a, b, scale] = slots;
            let a = *a?.downcast::<Tensor<2>>().ok()?;
            let b = *b?.downcast::<Tensor<2>>().ok()?;
            let scale = match (id.scale, scale) {
                (Some(_), Some(s)) => Scale::Tensor(s.downcast::<Tensor<1>>().ok()?),
                (Some(_), None) => return None,
                (None, _) => self
                    .config
                    .native_lora_scale
                    .map_or(Scale::Unknown, Scale::Constant),
            };
            let (a, b) = match id.kind {
                AdapterKind::LoraLinear | AdapterKind::LoraEmbedding => (a, b),
                AdapterKind::BurnNative => (a.transpose(), b.transpose()),
            };
            out.push(Some(Factors { a, b, scale }));
        }
        Some(out)
    }

    /// Every prepared layer's factors by layer path (any model with the same layer paths),
    /// remembering the ids found.
    fn factors_by_path<M: Module>(
        &self,
        model: &M,
        strict: bool,
    ) -> Result<Vec<Option<Factors>>, RoraError> {
        let layers = adapted_layers(model);
        if layers.is_empty() {
            return Err(RoraError::NoAdaptedLayers);
        }
        let mut out: Vec<Option<Factors>> = (0..self.caches.len()).map(|_| None).collect();
        let mut ids = vec![None; self.caches.len()];
        for layer in layers {
            let Some(&i) = self.index.get(&layer.path) else {
                if strict {
                    return Err(RoraError::LayerNotPrepared { path: layer.path });
                }
                continue;
            };
            ids[i] = Some(LayerIds::of(&layer));
            let scale = match layer.scale_or(self.config.native_lora_scale) {
                Ok(s) => Scale::Constant(s),
                Err(_) => Scale::Unknown,
            };
            out[i] = Some(Factors {
                a: layer.a,
                b: layer.b,
                scale,
            });
        }
        if strict && let Some(i) = out.iter().position(Option::is_none) {
            return Err(RoraError::LayerMissing {
                path: self.caches[i].path.clone(),
            });
        }
        self.set_ids(ids);
        Ok(out)
    }

    /// `Ω` of every adapted layer of `model`, by path (for monitoring; detached values).
    pub fn omega_per_layer<M: Module>(&self, model: &M) -> Vec<(String, f64)> {
        adapted_layers(model)
            .iter()
            .filter_map(|l| {
                let i = *self.index.get(&l.path)?;
                let t = &self.tensors_on(&l.a.device())[i];
                let v = omega(t.uk.clone(), t.vk.clone(), l.a.clone(), l.b.clone())
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
        t: &super::LayerTensors,
        layer: &Factors,
        strict: bool,
    ) -> Result<Option<Tensor<1>>, RoraError> {
        let cs = self.config.clean_strength.as_ref();
        let tc = self.config.trigger_cancellation.as_ref();
        if cs.is_none() && tc.is_none() {
            return Ok(None);
        }
        let cache = &self.caches[i];
        let path = &cache.path;
        let Some(vc) = &t.vc else {
            if strict {
                return Err(RoraError::NoCleanSubspace {
                    path: path.clone(),
                    mechanism: if cs.is_some() {
                        "the clean-strength target"
                    } else {
                        "trigger cancellation"
                    },
                });
            }
            return Ok(None);
        };
        if matches!(layer.scale, Scale::Unknown) {
            if strict {
                return Err(NativeScaleUnknown { path: path.clone() }.into());
            }
            return Ok(None);
        }
        let mut out: Option<Tensor<1>> = None;
        if let (Some(cs), Some(base_norm)) = (cs, cache.clean_base_norm) {
            // max(0, τ − ‖ΔW·Vc‖F / ‖W0·Vc‖F)², with ΔW·Vc = s·B·(A·Vc).
            let dw_vc = layer
                .scale
                .apply(layer.b.clone().matmul(layer.a.clone().matmul(vc.clone())))
                .expect("scale known");
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
                .scale
                .apply(layer.b.clone().matmul(layer.a.clone().matmul(vt.clone())))
                .expect("scale known");
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
