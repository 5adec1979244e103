//! One view of "an adapted layer", whichever way the adapter was attached.
//!
//! A model may carry adapters in two ways: this crate's [`LoraLinear`](crate::LoraLinear)
//! layers, or burn's own `Module::apply_lora`, which attaches a
//! [`LoraAdapter`](burn::module::LoraAdapter) to any 2-D weight parameter. RoRA's constraint,
//! rescaler, reports and the adapter files are written once against [`AdaptedLayer`], which
//! [`adapted_layers`] collects from any burn module by visiting its parameters.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use nalgebra::DMatrix;

use crate::convert::tensor_to_dmatrix;

/// How an adapted layer's adapter is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AdapterKind {
    /// A [`LoraLinear`](crate::LoraLinear) layer (factored forward; supports base dropout).
    LoraLinear,
    /// A [`LoraEmbedding`](crate::LoraEmbedding) table, seen as the linear map
    /// `num_embeddings → embedding_dim` (`base` is the table `[num_embeddings,
    /// embedding_dim]`, which is burn's `[in, out]` layout).
    LoraEmbedding,
    /// burn's own adapter from `Module::apply_lora` (dense composition every forward).
    BurnNative,
}

/// An adapted linear layer: frozen `W0`, factors `A`, `B` and scale `s`, with
/// `ΔW = s·B·A` in PEFT's layout.
///
/// The factor tensors are the model's own parameter values (on an autodiff device they are
/// the graph leaves the optimizer updates), so a loss built from them backpropagates into
/// the model; see [`crate::rora::Rora::penalty`].
#[derive(Debug, Clone)]
pub struct AdaptedLayer {
    /// Module path of the layer, e.g. `encoder.layers.0.attention.query` (for burn-native
    /// adapters, the weight's path without `.weight`). This is the path used in adapter
    /// files and target patterns.
    pub path: String,
    /// Which way the adapter is attached.
    pub kind: AdapterKind,
    /// Parameter path of `W0` (e.g. `...query.weight`).
    pub weight_path: String,
    /// Parameter path of `A` (`...lora.a`, or `...weight.lora.a` for burn-native).
    pub a_path: String,
    /// Parameter path of `B`.
    pub b_path: String,
    /// Parameter id of `A`.
    pub a_id: ParamId,
    /// Parameter id of `B`.
    pub b_id: ParamId,
    /// Parameter id of the scale (`lora.scale` of a [`LoraLinear`](crate::LoraLinear);
    /// `None` for burn-native adapters, whose scale is not a parameter).
    pub scale_id: Option<ParamId>,
    /// `W0` in burn's layout `[in, out]` (detached).
    pub base: Tensor<2>,
    /// `A: [r, in]` (PEFT layout; for burn-native adapters the transpose of burn's `a`).
    pub a: Tensor<2>,
    /// `B: [out, r]` (PEFT layout; for burn-native adapters the transpose of burn's `b`).
    pub b: Tensor<2>,
    /// The scale `s`. `None` for burn-native adapters: burn keeps `LoraAdapter::scale` out of
    /// reach of module visitors, so it must be supplied (it is `alpha / rank` of the
    /// `burn::module::Lora` that was applied); see [`AdaptedLayer::scale_or`].
    pub scale: Option<f64>,
    /// Whether the update is folded into the weight ([`LoraLinear::merge`]); `base` then
    /// holds `W0 + ΔW`, not `W0`, and analysis of the layer is refused. Always `false` for
    /// burn-native adapters.
    ///
    /// [`LoraLinear::merge`]: crate::LoraLinear::merge
    pub merged: bool,
    /// DoRA's magnitude vector `m: [out]` (the model's own parameter value), `None` for
    /// plain LoRA and burn-native adapters.
    pub magnitude: Option<Tensor<1>>,
    /// Parameter path of the magnitude (`...lora.dora.magnitude`), with DoRA.
    pub magnitude_path: Option<String>,
}

/// A burn-native adapter's scale was needed but not given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "layer {path:?} carries burn's own LoRA adapter, whose scale is not visible to module \
     visitors: pass it (alpha / rank of the burn::module::Lora you applied)"
)]
pub struct NativeScaleUnknown {
    /// The layer.
    pub path: String,
}

impl AdaptedLayer {
    /// Input features.
    pub fn d_in(&self) -> usize {
        self.base.dims()[0]
    }
    /// Output features.
    pub fn d_out(&self) -> usize {
        self.base.dims()[1]
    }
    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.a.dims()[0]
    }
    /// The layer kind of PEFT's file format: an embedding for
    /// [`AdapterKind::LoraEmbedding`], a linear layer otherwise.
    pub fn layer_kind(&self) -> crate::peft::LayerKind {
        match self.kind {
            AdapterKind::LoraEmbedding => crate::peft::LayerKind::Embedding,
            _ => crate::peft::LayerKind::Linear,
        }
    }

    /// The scale: the layer's own, or `native_scale` for a burn-native adapter.
    pub fn scale_or(&self, native_scale: Option<f64>) -> Result<f64, NativeScaleUnknown> {
        self.scale
            .or(native_scale)
            .ok_or_else(|| NativeScaleUnknown {
                path: self.path.clone(),
            })
    }

    /// `W0` as `[out, in]` (PEFT layout) in float64.
    pub fn base_matrix(&self) -> DMatrix<f64> {
        tensor_to_dmatrix(self.base.clone().transpose())
    }
    /// `A: [r, in]` in float64 (detached).
    pub fn a_matrix(&self) -> DMatrix<f64> {
        tensor_to_dmatrix(self.a.clone())
    }
    /// `B: [out, r]` in float64 (detached).
    pub fn b_matrix(&self) -> DMatrix<f64> {
        tensor_to_dmatrix(self.b.clone())
    }
    /// `true` for a DoRA layer.
    pub fn is_dora(&self) -> bool {
        self.magnitude.is_some()
    }
    /// DoRA's magnitude `m: [out]` on the host (float32), `None` for plain LoRA.
    pub fn magnitude_values(&self) -> Option<Vec<f32>> {
        self.magnitude.as_ref().map(|m| {
            m.clone()
                .inner()
                .try_into_vec_as::<f32>()
                .expect("reading a float tensor back to the host")
        })
    }
}

/// Collect every adapted layer of `model`, in visiting order, with its module path.
///
/// Finds [`LoraLinear`](crate::LoraLinear) layers that carry an adapter and 2-D parameters
/// with a burn-native LoRA adapter. Works on any burn module without code changes. The layer
/// must not be merged (analysis reads `W0` from the weight).
pub fn adapted_layers<M: Module>(model: &M) -> Vec<AdaptedLayer> {
    let mut collector = Collector::default();
    model.visit(&mut collector);
    collector.finish()
}

#[derive(Default)]
struct Collector {
    path: Vec<String>,
    containers: Vec<String>,
    matrices: Vec<(String, ParamId, Tensor<2>)>,
    scales: Vec<(String, ParamId, f64)>,
    vectors: Vec<(String, Tensor<1>)>,
    layers: Vec<(String, AdapterKind)>,
}

impl Collector {
    fn find(&self, path: &str) -> Option<&(String, ParamId, Tensor<2>)> {
        self.matrices.iter().rev().find(|(p, _, _)| p == path)
    }

    fn finish(self) -> Vec<AdaptedLayer> {
        let mut out = Vec::new();
        for (prefix, kind) in &self.layers {
            let (path, weight_path, a_path, b_path) = match kind {
                AdapterKind::LoraLinear | AdapterKind::LoraEmbedding => (
                    prefix.clone(),
                    join(prefix, "weight"),
                    join(prefix, "lora.a"),
                    join(prefix, "lora.b"),
                ),
                AdapterKind::BurnNative => (
                    prefix.strip_suffix(".weight").unwrap_or(prefix).to_string(),
                    prefix.clone(),
                    join(prefix, "lora.a"),
                    join(prefix, "lora.b"),
                ),
            };
            let (Some(w), Some(a), Some(b)) = (
                self.find(&weight_path),
                self.find(&a_path),
                self.find(&b_path),
            ) else {
                continue;
            };
            let value = |name: &str| {
                let path = join(prefix, name);
                self.scales
                    .iter()
                    .rev()
                    .find(|(p, _, _)| *p == path)
                    .map(|(_, id, s)| (*id, *s))
            };
            let (a_t, b_t, scale, merged) = match kind {
                AdapterKind::LoraLinear | AdapterKind::LoraEmbedding => (
                    a.2.clone(),
                    b.2.clone(),
                    value("lora.scale"),
                    value("lora.merged").is_some_and(|(_, m)| m != 0.0),
                ),
                AdapterKind::BurnNative => (
                    a.2.clone().transpose(),
                    b.2.clone().transpose(),
                    None,
                    false,
                ),
            };
            let magnitude_path = join(prefix, "lora.dora.magnitude");
            let magnitude = match kind {
                AdapterKind::BurnNative => None,
                _ => self
                    .vectors
                    .iter()
                    .rev()
                    .find(|(p, _)| *p == magnitude_path)
                    .map(|(_, t)| t.clone()),
            };
            out.push(AdaptedLayer {
                path,
                kind: *kind,
                weight_path,
                a_path,
                b_path,
                a_id: a.1,
                b_id: b.1,
                scale_id: scale.map(|(id, _)| id),
                base: w.2.clone().inner(),
                a: a_t,
                b: b_t,
                scale: scale.map(|(_, s)| s),
                merged,
                magnitude_path: magnitude.is_some().then_some(magnitude_path),
                magnitude,
            });
        }
        out
    }
}

use crate::peft::join_path as join;

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        // Entering field `lora` of a LoraLinear, or the reparameterization of a native weight.
        if name == "lora" && container_type == "Struct:LoraLinear" {
            self.layers
                .push((self.path.join("."), AdapterKind::LoraLinear));
        }
        if name == "lora" && container_type == "Struct:LoraEmbedding" {
            self.layers
                .push((self.path.join("."), AdapterKind::LoraEmbedding));
        }
        if container_type == "Reparameterization" && name == "lora" {
            self.layers
                .push((self.path.join("."), AdapterKind::BurnNative));
        }
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.join(".");
        match D {
            2 => {
                // The parameter's own tensor (same autodiff node, so gradients of anything
                // built from it reach the parameter and `grad` finds them): D is 2 here, so the
                // downcast cannot fail.
                let any: Box<dyn std::any::Any> = Box::new(param.val());
                let t = *any.downcast::<Tensor<2>>().expect("a rank-2 parameter");
                self.matrices.push((path, param.id, t));
            }
            1 if self
                .containers
                .last()
                .is_some_and(|c| c == "Struct:DoraMagnitude") =>
            {
                let any: Box<dyn std::any::Any> = Box::new(param.val());
                let t = *any.downcast::<Tensor<1>>().expect("a rank-1 parameter");
                self.vectors.push((path, t));
            }
            1 if self
                .containers
                .last()
                .is_some_and(|c| c == "Struct:LoraFactors") =>
            {
                let v = param
                    .val()
                    .inner()
                    .try_into_vec_as::<f64>()
                    .expect("reading the LoRA scale");
                if let Some(&s) = v.first() {
                    self.scales.push((path, param.id, s));
                }
            }
            _ => {}
        }
    }
}
