//! Moving adapters between burn models and HuggingFace PEFT adapter files.
//!
//! - [`save_adapter`] writes every adapted layer of any burn module (both
//!   [`LoraLinear`](crate::LoraLinear) and burn-native adapters) as a PEFT adapter folder.
//! - [`load_adapter`] writes a PEFT adapter's factors into a model whose layers already carry
//!   adapters at the same paths (both kinds).
//! - [`attach_adapter`] creates adapters from a file on the [`LoraLinear`](crate::LoraLinear) layers of a
//!   [`LoraModel`] it names, whether or not they had one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Module;
use burn::tensor::Tensor;

use crate::adapted::{AdaptedLayer, AdapterKind, adapted_layers};
use crate::convert::{host_to_tensor, tensor_to_host};
use crate::lora_model::LoraModel;
use crate::peft::{
    AdapterError, Factor, HostMatrix, LayerFactors, PeftAdapter, PeftLoraConfig, factor_key,
};
use crate::replace::{ReplaceError, replace_params};

/// Settings for moving adapters in and out of models.
#[derive(Debug, Clone, Default)]
pub struct AdapterOptions {
    /// The scale of burn-native adapters (`alpha / rank` of the `burn::module::Lora` that was
    /// applied); burn does not expose it to module visitors. Needed only when the model has
    /// burn-native adapters.
    pub native_scale: Option<f64>,
}

impl AdapterOptions {
    /// Options for a model adapted with `model.apply_lora(lora)`.
    pub fn native(lora: &burn::module::Lora) -> Self {
        AdapterOptions {
            native_scale: Some(lora.alpha / lora.rank as f64),
        }
    }
}

fn layer_scale(layer: &AdaptedLayer, options: &AdapterOptions) -> Result<f64, AdapterError> {
    layer
        .scale_or(options.native_scale)
        .map_err(|e| AdapterError::UnsupportedSetting {
            setting: e.to_string(),
        })
}

/// The adapted layers of `model` as an in-memory PEFT adapter.
///
/// The config records each layer's rank and `lora_alpha = s·r` (so PEFT computes the same
/// scale `s` with `use_rslora = false`); layers that differ from the first get
/// `rank_pattern` / `alpha_pattern` entries. `target_modules` lists the full module paths.
pub fn adapter_from_model<M: Module>(
    model: &M,
    options: &AdapterOptions,
) -> Result<PeftAdapter, AdapterError> {
    let layers = adapted_layers(model);
    let mut out = BTreeMap::new();
    let mut config: Option<PeftLoraConfig> = None;
    let mut targets = Vec::new();
    let mut ranks = BTreeMap::new();
    let mut alphas = BTreeMap::new();
    for layer in &layers {
        let s = layer_scale(layer, options)?;
        let r = layer.rank();
        let alpha = s * r as f64;
        let c = config.get_or_insert_with(|| PeftLoraConfig::new(r, alpha, Vec::new()));
        if r != c.r {
            ranks.insert(layer.path.clone(), r);
        }
        if (alpha - c.lora_alpha).abs() > 1e-9 * alpha.abs().max(1.0) {
            alphas.insert(layer.path.clone(), alpha);
        }
        targets.push(layer.path.clone());
        out.insert(
            layer.path.clone(),
            LayerFactors {
                a: tensor_to_host(layer.a.clone()),
                b: tensor_to_host(layer.b.clone()),
            },
        );
    }
    let mut config = config.unwrap_or_else(|| PeftLoraConfig::new(1, 1.0, Vec::new()));
    config.target_modules = crate::peft::TargetModules::List(targets);
    config.rank_pattern = ranks;
    config.alpha_pattern = alphas;
    Ok(PeftAdapter {
        config,
        layers: out,
    })
}

/// Save the adapters of `model` to `dir` in PEFT's format. Nothing is written unless every
/// factor is finite and fits its layer, and the files are replaced atomically: a failed save
/// leaves the previous files intact. Returns what was written.
pub fn save_adapter<M: Module>(
    model: &M,
    dir: &Path,
    options: &AdapterOptions,
) -> Result<PeftAdapter, AdapterError> {
    let adapter = adapter_from_model(model, options)?;
    adapter.write(dir)?;
    Ok(adapter)
}

/// Read a PEFT adapter folder and write its factors into `model`, whose adapted layers must
/// be exactly the adapter's layers (same paths, same shapes). See [`apply_adapter`].
pub fn load_adapter<M: Module>(
    model: M,
    dir: &Path,
    options: &AdapterOptions,
) -> Result<M, AdapterError> {
    let adapter = PeftAdapter::read(dir)?;
    apply_adapter(model, &adapter, options)
}

/// Write an adapter's factors and scales into the adapted layers of `model`.
///
/// The adapter is validated first ([`PeftAdapter::validate`]: shapes against its rank,
/// finite values), then matched against the model; on any error the model is not changed.
///
/// Every adapter layer must exist in the model with the same `in`, `out` and rank, and
/// every adapted layer of the model must be in the adapter; otherwise a typed error names
/// the layer or key. [`LoraLinear`](crate::LoraLinear) layers take the file's scale; for
/// burn-native adapters, whose scale is fixed, the ratio of the two scales is folded into
/// `A` so that `ΔW` is the file's.
pub fn apply_adapter<M: Module>(
    model: M,
    adapter: &PeftAdapter,
    options: &AdapterOptions,
) -> Result<M, AdapterError> {
    adapter.validate()?;
    let layers = adapted_layers(&model);
    let by_path: HashMap<&str, &AdaptedLayer> =
        layers.iter().map(|l| (l.path.as_str(), l)).collect();
    for path in adapter.layers.keys() {
        if !by_path.contains_key(path.as_str()) {
            return Err(AdapterError::UnknownLayer {
                path: path.clone(),
                hint: hint(path, layers.iter().map(|l| l.path.as_str())),
            });
        }
    }
    let mut values = HashMap::new();
    for layer in &layers {
        let factors =
            adapter
                .layers
                .get(&layer.path)
                .ok_or_else(|| AdapterError::MissingLayer {
                    path: layer.path.clone(),
                })?;
        check_shape(
            &layer.path,
            Factor::A,
            &factors.a,
            [layer.rank(), layer.d_in()],
        )?;
        check_shape(
            &layer.path,
            Factor::B,
            &factors.b,
            [layer.d_out(), layer.rank()],
        )?;
        let device = layer.base.device();
        let file_scale = adapter.scale_for(&layer.path);
        let a = host_to_tensor(&factors.a, &device);
        let b = host_to_tensor(&factors.b, &device);
        match layer.kind {
            AdapterKind::LoraLinear => {
                values.insert(layer.a_path.clone(), a);
                values.insert(layer.b_path.clone(), b);
                let scale_path = format!("{}.lora.scale", layer.path);
                values.insert(
                    scale_path,
                    Tensor::<2>::from_floats([[file_scale as f32]], &device),
                );
            }
            AdapterKind::BurnNative => {
                let native = layer_scale(layer, options)?;
                values.insert(
                    layer.a_path.clone(),
                    a.transpose().mul_scalar(file_scale / native),
                );
                values.insert(layer.b_path.clone(), b.transpose());
            }
        }
    }
    replace_params(model, values).map_err(model_mismatch)
}

/// A parameter `adapted_layers` reported that the model then lacked: named, never silent.
fn model_mismatch(e: ReplaceError) -> AdapterError {
    match e {
        ReplaceError::UnknownParam { path, hint } => AdapterError::UnknownLayer { path, hint },
        ReplaceError::ShapeMismatch {
            path,
            expected,
            found,
        } => AdapterError::ShapeMismatch {
            key: path,
            expected,
            found,
        },
    }
}

/// Create adapters from a PEFT file on the [`LoraLinear`](crate::LoraLinear) layers of
/// `model` that the file names (replacing any adapter they had; their base is frozen).
/// A layer named in the file that the model lacks, or a factor whose shape does not fit the
/// layer, is an error naming it.
pub fn attach_adapter<M: LoraModel>(model: M, adapter: &PeftAdapter) -> Result<M, AdapterError> {
    adapter.validate()?;
    let mut seen = Vec::new();
    let mut error = None;
    let model = model.map_lora_linears("", &mut |path, layer| {
        seen.push(path.to_string());
        let Some(f) = adapter.layers.get(path) else {
            return layer;
        };
        if error.is_some() {
            return layer;
        }
        let (d_in, d_out) = (layer.d_input(), layer.d_output());
        let r = f.rank();
        if let Err(e) = check_shape(path, Factor::A, &f.a, [r, d_in])
            .and_then(|_| check_shape(path, Factor::B, &f.b, [d_out, r]))
        {
            error = Some(e);
            return layer;
        }
        let device = layer.device();
        layer.with_factors(
            host_to_tensor(&f.a, &device),
            host_to_tensor(&f.b, &device),
            adapter.scale_for(path),
        )
    });
    if let Some(e) = error {
        return Err(e);
    }
    if let Some(path) = adapter.layers.keys().find(|p| !seen.contains(p)) {
        return Err(AdapterError::UnknownLayer {
            path: path.clone(),
            hint: hint(path, seen.iter().map(String::as_str)),
        });
    }
    Ok(model)
}

fn check_shape(
    path: &str,
    factor: Factor,
    m: &HostMatrix,
    expected: [usize; 2],
) -> Result<(), AdapterError> {
    if m.shape() != expected {
        return Err(AdapterError::ShapeMismatch {
            key: factor_key(path, factor),
            expected: expected.to_vec(),
            found: m.shape().to_vec(),
        });
    }
    Ok(())
}

fn hint<'a>(path: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let last = path.rsplit('.').next().unwrap_or(path);
    let similar: Vec<&str> = candidates.filter(|c| c.ends_with(last)).take(5).collect();
    if similar.is_empty() {
        String::new()
    } else {
        format!(" (model layers with the same name: {})", similar.join(", "))
    }
}
