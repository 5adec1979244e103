//! Attaching adapters to the layers of a model selected by [`Targets`].

use burn::module::{Lora, Module, ParamGroup};

use crate::adapted::adapted_layers;
use crate::config::{LoraConfig, LoraConfigError};
use crate::linear::LoraLinear;
use crate::target::{TargetError, Targets};

/// A model whose adaptable layers are [`LoraLinear`]s.
///
/// Implement it by passing each `LoraLinear` field through `f` with its module path — the
/// field names joined by `.`, exactly as burn's module visitor names them (so that adapter
/// files and reports use the same paths). Nested modules forward with their own prefix.
///
/// ```
/// use burn::module::Module;
/// use rora_core::{LoraLinear, LoraModel, join_path};
///
/// #[derive(Module, Debug)]
/// struct Block { query: LoraLinear, value: LoraLinear }
///
/// impl LoraModel for Block {
///     fn map_lora_linears(self, prefix: &str, f: &mut dyn FnMut(&str, LoraLinear) -> LoraLinear) -> Self {
///         Block {
///             query: f(&join_path(prefix, "query"), self.query),
///             value: f(&join_path(prefix, "value"), self.value),
///         }
///     }
/// }
/// ```
pub trait LoraModel: Module + Sized {
    /// Return the model with every `LoraLinear` replaced by `f(path, layer)`, where `path` is
    /// `prefix` joined with the layer's field path.
    fn map_lora_linears(
        self,
        prefix: &str,
        f: &mut dyn FnMut(&str, LoraLinear) -> LoraLinear,
    ) -> Self;
}

/// `prefix.name`, or `name` when `prefix` is empty.
pub fn join_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Why adapters could not be attached.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InjectError {
    /// A target pattern is invalid or selects no layer.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The config does not fit a selected layer.
    #[error("layer {path:?}: {source}")]
    Config {
        /// The layer.
        path: String,
        /// What is wrong.
        source: LoraConfigError,
    },
}

/// Attach a fresh adapter (`config`) to every [`LoraLinear`] of `model` whose path `targets`
/// selects; the other layers are left as they are. Strict targets fail on a pattern that
/// selects nothing, naming it.
///
/// This does not freeze the rest of the model: call `model.no_grad()` first for classic LoRA
/// fine-tuning (only the adapters train), then re-enable what should also train (e.g. a
/// classification head).
pub fn inject_lora<M: LoraModel>(
    model: M,
    targets: &Targets,
    config: &LoraConfig,
) -> Result<M, InjectError> {
    config
        .validate_settings()
        .map_err(|source| InjectError::Config {
            path: String::new(),
            source,
        })?;
    let mut paths = Vec::new();
    let mut error = None;
    let model = model.map_lora_linears("", &mut |path, layer| {
        paths.push(path.to_string());
        if error.is_some() || !targets.matches(path) {
            return layer;
        }
        match layer.clone().with_lora(config) {
            Ok(adapted) => adapted,
            Err(source) => {
                error = Some(InjectError::Config {
                    path: path.to_string(),
                    source,
                });
                layer
            }
        }
    });
    if let Some(e) = error {
        return Err(e);
    }
    targets.check_all_used(paths.iter().map(String::as_str))?;
    Ok(model)
}

/// The module paths of every [`LoraLinear`] of a model (adapted or not).
pub fn lora_linear_paths<M: LoraModel>(model: M) -> Vec<String> {
    let mut paths = Vec::new();
    let _ = model.map_lora_linears("", &mut |path, layer| {
        paths.push(path.to_string());
        layer
    });
    paths
}

/// burn's own LoRA (`Module::apply_lora`) on the layers `targets` selects: their `.weight`
/// parameters get a [`LoraAdapter`](burn::module::LoraAdapter) of `lora.rank` and
/// `lora.alpha` (its param group is replaced by the targets). burn freezes every base
/// parameter. Strict targets fail on a pattern that selects no weight.
pub fn apply_lora_targets<M: Module>(
    model: M,
    targets: &Targets,
    lora: Lora,
) -> Result<M, TargetError> {
    let group = ParamGroup::from_regex(targets.weight_param_regex()).map_err(|e| {
        TargetError::InvalidRegex {
            pattern: targets.weight_param_regex(),
            message: format!("{e:?}"),
        }
    })?;
    let model = model.apply_lora(lora.set_param_group(group));
    let layers = adapted_layers(&model);
    targets.check_all_used(layers.iter().map(|l| l.path.as_str()))?;
    Ok(model)
}
