//! [`LoraModel`]: how rora finds the adaptable layers of a model ([`LoraLinear`],
//! [`LoraEmbedding`]), and their paths.

use burn::module::{Param, ParameterValue};
use burn::tensor::Tensor;
use burn::tensor::kind::Basic;

use crate::embedding::LoraEmbedding;
use crate::linear::LoraLinear;
use crate::peft::{LayerKind, join_path};

/// What [`LoraModel::map_lora_layers`] does with each adaptable layer: one method per layer
/// type, each passing the layer through unchanged unless overridden.
///
/// ```
/// use rora_core::{LoraEmbedding, LoraLayerMapper, LoraLinear};
///
/// /// Switches every adapter of a model off.
/// struct Disable;
/// impl LoraLayerMapper for Disable {
///     fn map_linear(&mut self, _path: &str, layer: LoraLinear) -> LoraLinear {
///         layer.set_enabled(false)
///     }
///     fn map_embedding(&mut self, _path: &str, layer: LoraEmbedding) -> LoraEmbedding {
///         layer.set_enabled(false)
///     }
/// }
/// ```
pub trait LoraLayerMapper {
    /// A [`LoraLinear`] at `path`.
    fn map_linear(&mut self, path: &str, layer: LoraLinear) -> LoraLinear {
        let _ = path;
        layer
    }
    /// A [`LoraEmbedding`] at `path`.
    fn map_embedding(&mut self, path: &str, layer: LoraEmbedding) -> LoraEmbedding {
        let _ = path;
        layer
    }
}

/// A model whose adaptable layers are [`LoraLinear`]s (and [`LoraEmbedding`]s), with the
/// module path of each.
///
/// Derive it next to burn's `Module` — the derive visits every field with the same names
/// burn's module visitor uses, so adapter files, target patterns and reports all speak of
/// the same paths (`layers.3.attention.query`):
///
/// ```
/// use burn::module::Module;
/// use burn::nn::{LayerNorm, LayerNormConfig, LinearConfig};
/// use burn::tensor::Device;
/// use rora_core::{LoraLinear, LoraModel, lora_linear_paths};
///
/// #[derive(Module, LoraModel, Debug)]
/// struct Block { query: LoraLinear, value: LoraLinear, norm: LayerNorm }
///
/// #[derive(Module, LoraModel, Debug)]
/// struct Encoder { layers: Vec<Block>, head: Option<LoraLinear>, d_model: usize }
///
/// let device = Device::default();
/// let block = || Block {
///     query: LinearConfig::new(8, 8).init(&device).into(),
///     value: LinearConfig::new(8, 8).init(&device).into(),
///     norm: LayerNormConfig::new(8).init(&device),
/// };
/// let enc = Encoder { layers: vec![block(), block()], head: None, d_model: 8 };
/// assert_eq!(
///     lora_linear_paths(enc),
///     ["layers.0.query", "layers.0.value", "layers.1.query", "layers.1.value"]
/// );
/// ```
///
/// What the derive does with each field:
/// - `LoraLinear`: handed to the callback with its path (and to
///   [`LoraLayerMapper::map_linear`]);
/// - `LoraEmbedding`: handed to [`LoraLayerMapper::map_embedding`] by
///   [`map_lora_layers`](Self::map_lora_layers) (`map_lora_linears` passes it through);
/// - `Vec<T>`, `[T; N]` (elements named `0`, `1`, …) and `Option<T>` (no path component) of
///   a `LoraModel`: recursed into, as burn does;
/// - another type deriving `LoraModel`: recursed into;
/// - burn's own layers (`Linear`, `LayerNorm`, `Embedding`, `Dropout`, activations,
///   attention, convolutions, …), `Param`s and tensors: passed through unchanged;
/// - primitive fields (`usize`, `f64`, `String`, …), `#[module(skip)]` and `#[lora(skip)]`
///   fields: passed through, no bound needed.
///
/// A field of any other type needs `LoraModel` (derive it, or mark the field
/// `#[lora(skip)]`); the compiler names the type. Only `LoraLinear` and `LoraEmbedding`
/// layers can carry this crate's adapters; burn's `Linear` layers get burn's own adapters
/// through [`apply_lora_targets`](crate::apply_lora_targets), which needs no trait.
///
/// Implementing it by hand is possible (pass each field to its own `map_lora_layers` with
/// [`join_path`]`(prefix, field_name)`), but the derive is the supported way: it cannot
/// disagree with burn's paths.
pub trait LoraModel: Sized {
    /// Return the model with every adaptable layer passed through `mapper` (a `LoraLinear`
    /// through [`LoraLayerMapper::map_linear`], a `LoraEmbedding` through
    /// [`LoraLayerMapper::map_embedding`]), with its path (`prefix` joined with the layer's
    /// module path), in visiting order. The one method the derive implements.
    fn map_lora_layers(self, prefix: &str, mapper: &mut dyn LoraLayerMapper) -> Self;

    /// Return the model with every `LoraLinear` replaced by `f(path, layer)`, where `path` is
    /// `prefix` joined with the layer's module path; [`LoraEmbedding`]s pass through.
    /// Provided: [`map_lora_layers`](Self::map_lora_layers) with a mapper that calls `f`.
    fn map_lora_linears(
        self,
        prefix: &str,
        f: &mut dyn FnMut(&str, LoraLinear) -> LoraLinear,
    ) -> Self {
        /// Hands every `LoraLinear` to the closure, leaves embeddings alone.
        struct Linears<'a>(&'a mut dyn FnMut(&str, LoraLinear) -> LoraLinear);
        impl LoraLayerMapper for Linears<'_> {
            fn map_linear(&mut self, path: &str, layer: LoraLinear) -> LoraLinear {
                (self.0)(path, layer)
            }
        }
        self.map_lora_layers(prefix, &mut Linears(f))
    }
}

pub use rora_derive::LoraModel;

impl LoraModel for LoraLinear {
    fn map_lora_layers(self, prefix: &str, mapper: &mut dyn LoraLayerMapper) -> Self {
        mapper.map_linear(prefix, self)
    }
}

impl LoraModel for LoraEmbedding {
    fn map_lora_layers(self, prefix: &str, mapper: &mut dyn LoraLayerMapper) -> Self {
        mapper.map_embedding(prefix, self)
    }
}

impl<T: LoraModel> LoraModel for Option<T> {
    fn map_lora_layers(self, prefix: &str, mapper: &mut dyn LoraLayerMapper) -> Self {
        self.map(|m| m.map_lora_layers(prefix, mapper))
    }
}

impl<T: LoraModel> LoraModel for Vec<T> {
    fn map_lora_layers(self, prefix: &str, mapper: &mut dyn LoraLayerMapper) -> Self {
        self.into_iter()
            .enumerate()
            .map(|(i, m)| m.map_lora_layers(&join_path(prefix, &i.to_string()), mapper))
            .collect()
    }
}

impl<T: LoraModel, const N: usize> LoraModel for [T; N] {
    fn map_lora_layers(self, prefix: &str, mapper: &mut dyn LoraLayerMapper) -> Self {
        let mut i = 0;
        self.map(|m| {
            let out = m.map_lora_layers(&join_path(prefix, &i.to_string()), mapper);
            i += 1;
            out
        })
    }
}

impl<T: ParameterValue> LoraModel for Param<T> {
    fn map_lora_layers(self, _: &str, _: &mut dyn LoraLayerMapper) -> Self {
        self
    }
}

impl<const D: usize, K: Basic> LoraModel for Tensor<D, K> {
    fn map_lora_layers(self, _: &str, _: &mut dyn LoraLayerMapper) -> Self {
        self
    }
}

/// Types that hold no [`LoraLinear`]: the traversal passes them through.
macro_rules! pass_through {
    ($($ty:ty),* $(,)?) => {
        $(
            impl LoraModel for $ty {
                fn map_lora_layers(self, _: &str, _: &mut dyn LoraLayerMapper) -> Self {
                    self
                }
            }
        )*
    };
}

pass_through!(
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    usize,
    i8,
    i16,
    i32,
    i64,
    isize,
    f32,
    f64,
    String,
    burn::nn::Linear,
    burn::nn::LayerNorm,
    burn::nn::RmsNorm,
    burn::nn::BatchNorm,
    burn::nn::GroupNorm,
    burn::nn::InstanceNorm,
    burn::nn::Embedding,
    burn::nn::Dropout,
    burn::nn::PositionalEncoding,
    burn::nn::RotaryEncoding,
    burn::nn::Gelu,
    burn::nn::Relu,
    burn::nn::LeakyRelu,
    burn::nn::PRelu,
    burn::nn::Sigmoid,
    burn::nn::Tanh,
    burn::nn::SwiGlu,
    burn::nn::Lstm,
    burn::nn::Gru,
    burn::nn::conv::Conv1d,
    burn::nn::conv::Conv2d,
    burn::nn::attention::MultiHeadAttention,
    burn::nn::transformer::PositionWiseFeedForward,
    burn::nn::transformer::TransformerEncoder,
    burn::nn::transformer::TransformerDecoder,
);

/// The module paths of every [`LoraLinear`] of a model (adapted or not), in visiting order.
pub fn lora_linear_paths<M: LoraModel>(model: M) -> Vec<String> {
    let mut paths = Vec::new();
    let _ = model.map_lora_linears("", &mut |path, layer| {
        paths.push(path.to_string());
        layer
    });
    paths
}

/// The module paths and kinds of every adaptable layer of a model ([`LoraLinear`] and
/// [`LoraEmbedding`], adapted or not), in visiting order.
pub fn lora_layer_paths<M: LoraModel>(model: M) -> Vec<(String, LayerKind)> {
    struct Paths(Vec<(String, LayerKind)>);
    impl LoraLayerMapper for Paths {
        fn map_linear(&mut self, path: &str, layer: LoraLinear) -> LoraLinear {
            self.0.push((path.to_string(), LayerKind::Linear));
            layer
        }
        fn map_embedding(&mut self, path: &str, layer: LoraEmbedding) -> LoraEmbedding {
            self.0.push((path.to_string(), LayerKind::Embedding));
            layer
        }
    }
    let mut paths = Paths(Vec::new());
    let _ = model.map_lora_layers("", &mut paths);
    paths.0
}
