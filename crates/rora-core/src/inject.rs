//! Turning a plain model into a trainable adapted one, in one call: [`inject_lora`] for
//! [`LoraLinear`] layers, [`apply_lora_targets`] for burn's own `Module::apply_lora`.

use std::collections::BTreeSet;

use burn::module::{Lora, Module, ModuleMapper, Param, ParamGroup};
use burn::tensor::Tensor;

use crate::adapted::adapted_layers;
use crate::config::{LoraConfig, LoraConfigError};
use crate::embedding::LoraEmbedding;
use crate::linear::LoraLinear;
use crate::lora_model::{LoraLayerMapper, LoraModel};
use crate::peft::{TargetError, Targets};

/// Why adapters could not be attached.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InjectError {
    /// A target pattern is invalid or selects no layer, or a `modules_to_save` pattern
    /// selects no module.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The config does not fit a selected layer (an empty `path`: it fits no layer).
    #[error("layer {path:?}: {source}")]
    Config {
        /// The layer.
        path: String,
        /// What is wrong.
        source: LoraConfigError,
    },
}

/// LoRA fine-tuning set up in one call, as PEFT's `get_peft_model`: freeze every parameter
/// of `model`, attach a fresh adapter (`config`; DoRA with [`LoraConfig::use_dora`]) to
/// every [`LoraLinear`] and [`LoraEmbedding`] whose path `targets` selects, and keep the modules of
/// [`Targets::with_modules_to_save`] trainable (e.g. a classification head).
///
/// Afterwards exactly the adapters' `A` and `B` and the saved modules' parameters are
/// trainable. Strict targets fail on a pattern that selects nothing, naming it and the
/// candidates; a config that does not fit a layer (rank above `min(in, out)`) names the
/// layer.
///
/// ```
/// use burn::module::Module;
/// use burn::nn::LinearConfig;
/// use burn::tensor::Device;
/// use rora_core::{LoraConfig, LoraLinear, LoraModel, ParamSummary, Targets, inject_lora};
///
/// #[derive(Module, LoraModel, Debug)]
/// struct Net { body: LoraLinear, head: LoraLinear }
///
/// let device = Device::default().autodiff();
/// let net = Net {
///     body: LinearConfig::new(16, 16).init(&device).into(),
///     head: LinearConfig::new(16, 2).init(&device).into(),
/// };
/// let targets = Targets::parse(&["body"])?.with_modules_to_save(&["head"])?;
/// let net = inject_lora(net, &targets, &LoraConfig::new(4, 8.0))?;
/// // A and B of `body` (4·16 + 16·4) and the head's weight and bias (16·2 + 2).
/// assert_eq!(ParamSummary::of(&net).trainable, 128 + 34);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn inject_lora<M: LoraModel + Module>(
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
    let model = model.no_grad();
    let mut injector = Injector {
        targets,
        config,
        paths: Vec::new(),
        error: None,
    };
    let model = model.map_lora_layers("", &mut injector);
    if let Some(e) = injector.error {
        return Err(e);
    }
    let paths = injector.paths;
    targets.check_all_used(paths.iter().map(String::as_str))?;
    Ok(keep_modules_trainable(model, targets)?)
}

/// The [`LoraLayerMapper`] of [`inject_lora`]: records every path, adapts the targeted
/// layers, and keeps the first error.
struct Injector<'a> {
    targets: &'a Targets,
    config: &'a LoraConfig,
    paths: Vec<String>,
    error: Option<InjectError>,
}

impl Injector<'_> {
    fn adapt<L: Clone>(
        &mut self,
        path: &str,
        layer: L,
        with_lora: impl FnOnce(L, &LoraConfig) -> Result<L, LoraConfigError>,
    ) -> L {
        self.paths.push(path.to_string());
        if self.error.is_some() || !self.targets.matches(path) {
            return layer;
        }
        match with_lora(layer.clone(), self.config) {
            Ok(adapted) => adapted,
            Err(source) => {
                self.error = Some(InjectError::Config {
                    path: path.to_string(),
                    source,
                });
                layer
            }
        }
    }
}

impl LoraLayerMapper for Injector<'_> {
    fn map_linear(&mut self, path: &str, layer: LoraLinear) -> LoraLinear {
        self.adapt(path, layer, |l, c| l.with_lora(c))
    }

    fn map_embedding(&mut self, path: &str, layer: LoraEmbedding) -> LoraEmbedding {
        self.adapt(path, layer, |l, c| l.with_lora(c))
    }
}

/// burn's own LoRA (`Module::apply_lora`) on the layers `targets` selects, in one call:
/// their `.weight` parameters get a [`LoraAdapter`](burn::module::LoraAdapter) of
/// `lora.rank` and `lora.alpha` (its param group is replaced by the targets), burn freezes
/// every base parameter, and the modules of [`Targets::with_modules_to_save`] are made
/// trainable again. Strict targets fail on a pattern that selects no weight.
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
    keep_modules_trainable(model, targets)
}

/// Make every parameter of the modules `targets.modules_to_save()` selects trainable; a
/// pattern that selects no module is an error (strict targets).
fn keep_modules_trainable<M: Module>(model: M, targets: &Targets) -> Result<M, TargetError> {
    if targets.modules_to_save().is_empty() {
        return Ok(model);
    }
    let mut mapper = Unfreezer {
        targets,
        path: Vec::new(),
        modules: BTreeSet::new(),
    };
    let model = model.map(&mut mapper);
    targets.check_modules_to_save_used(mapper.modules.iter().map(String::as_str))?;
    Ok(model)
}

/// Sets `require_grad` on the parameters below a `modules_to_save` module, and records every
/// module path it passes (the candidates of the strictness check).
struct Unfreezer<'a> {
    targets: &'a Targets,
    path: Vec<String>,
    modules: BTreeSet<String>,
}

impl Unfreezer<'_> {
    /// Whether a module on the current path (a proper prefix of the parameter's path) is
    /// saved.
    fn saved(&mut self) -> bool {
        let mut saved = false;
        let mut prefix = String::new();
        for name in &self.path {
            if !prefix.is_empty() {
                prefix.push('.');
            }
            prefix.push_str(name);
            saved |= self.targets.saves(&prefix);
            self.modules.insert(prefix.clone());
        }
        saved
    }
}

impl ModuleMapper for Unfreezer<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // The parameter's own name is the last path component: only its parents are modules.
        let name = self.path.pop();
        let saved = self.saved();
        if let Some(name) = name {
            self.path.push(name);
        }
        if saved {
            param.set_require_grad(true)
        } else {
            param
        }
    }
}
