//! Moving adapters between burn models and HuggingFace PEFT adapter files.
//!
//! - [`save_adapter`] writes every adapted layer of any burn module (both
//!   [`LoraLinear`] and burn-native adapters) as a PEFT adapter folder.
//! - [`load_adapter`] writes a PEFT adapter's factors into a model whose layers already carry
//!   adapters at the same paths (both kinds).
//! - [`attach_adapter`] creates adapters from a file on the [`LoraLinear`] and
//!   [`LoraEmbedding`] layers of a [`LoraModel`] it names, whether or not they had one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};

use crate::adapted::{AdaptedLayer, AdapterKind, adapted_layers};
use crate::convert::{host_to_tensor, tensor_to_host};
use crate::embedding::LoraEmbedding;
use crate::linear::LoraLinear;
use crate::lora_model::{LoraLayerMapper, LoraModel};
use crate::peft::{
    AdapterError, Factor, HostMatrix, LayerFactors, LayerKind, PeftAdapter, PeftLoraConfig,
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
    // PEFT's `use_dora` is one switch for the whole adapter.
    if let (Some(dora), Some(lora)) = (
        layers.iter().find(|l| l.is_dora()),
        layers.iter().find(|l| !l.is_dora()),
    ) {
        return Err(AdapterError::UnsupportedSetting {
            setting: format!(
                "DoRA layer {:?} next to plain LoRA layer {:?}: PEFT's use_dora applies to \
                 every layer of an adapter, so they cannot be saved as one",
                dora.path, lora.path
            ),
        });
    }
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
        let mut factors = LayerFactors::new(
            tensor_to_host(layer.a.clone()),
            tensor_to_host(layer.b.clone()),
        );
        factors.kind = layer.layer_kind();
        factors.magnitude = layer.magnitude_values();
        out.insert(layer.path.clone(), factors);
    }
    let mut config = config.unwrap_or_else(|| PeftLoraConfig::new(1, 1.0, Vec::new()));
    config.use_dora = layers.iter().any(AdaptedLayer::is_dora);
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
/// the layer or key. [`LoraLinear`] layers take the file's scale; for
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
        check_fits(
            &layer.path,
            factors,
            layer.layer_kind(),
            layer.rank(),
            layer.d_in(),
            layer.d_out(),
        )?;
        let device = layer.base.device();
        match (&factors.magnitude, &layer.magnitude_path) {
            (Some(m), Some(path)) => {
                values.insert(
                    path.clone(),
                    Tensor::<2>::from_data(TensorData::new(m.clone(), [1, m.len()]), &device),
                );
            }
            (None, None) => {}
            (file, _) => {
                return Err(AdapterError::InconsistentLayer {
                    path: Default::default(),
                    layer: layer.path.clone(),
                    message: if file.is_some() {
                        "the adapter is DoRA (it has a magnitude vector) but the model's layer \
                         is a plain LoRA layer: attach it with attach_adapter, or make the \
                         model's adapters DoRA (LoraConfig::with_use_dora)"
                            .into()
                    } else {
                        "the model's layer is a DoRA layer but the adapter has no magnitude \
                         vector (use_dora = false)"
                            .into()
                    },
                });
            }
        }
        let file_scale = adapter.scale_for(&layer.path);
        let a = host_to_tensor(&factors.a, &device);
        let b = host_to_tensor(&factors.b, &device);
        match layer.kind {
            AdapterKind::LoraLinear | AdapterKind::LoraEmbedding => {
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

/// Create adapters from a PEFT file on the adaptable layers of `model` that the file names
/// ([`LoraLinear`] for `lora_A`/`lora_B`,
/// [`LoraEmbedding`] for `lora_embedding_A`/`lora_embedding_B`; DoRA
/// layers when the file has magnitudes), replacing any adapter they had and freezing their
/// base. A layer named in the file that the model lacks, a layer of the other kind, or a
/// tensor whose shape does not fit the layer, is an error naming it.
pub fn attach_adapter<M: LoraModel>(model: M, adapter: &PeftAdapter) -> Result<M, AdapterError> {
    adapter.validate()?;
    let mut attacher = Attacher {
        adapter,
        seen: Vec::new(),
        error: None,
    };
    let model = model.map_lora_layers("", &mut attacher);
    if let Some(e) = attacher.error {
        return Err(e);
    }
    let seen = attacher.seen;
    if let Some(path) = adapter.layers.keys().find(|p| !seen.contains(p)) {
        return Err(AdapterError::UnknownLayer {
            path: path.clone(),
            hint: hint(path, seen.iter().map(String::as_str)),
        });
    }
    Ok(model)
}

/// The [`LoraLayerMapper`] of [`attach_adapter`]: the first error stops all changes.
struct Attacher<'a> {
    adapter: &'a PeftAdapter,
    seen: Vec<String>,
    error: Option<AdapterError>,
}

impl Attacher<'_> {
    /// The file's tensors for the layer at `path` of `kind` with `[out, in]` = `dims`, if
    /// the file has the layer and they fit; `None` otherwise (recording the error).
    fn factors(
        &mut self,
        path: &str,
        kind: LayerKind,
        d_in: usize,
        d_out: usize,
    ) -> Option<(&LayerFactors, f64)> {
        self.seen.push(path.to_string());
        let f = self.adapter.layers.get(path)?;
        if self.error.is_some() {
            return None;
        }
        if let Err(e) = check_fits(path, f, kind, f.rank(), d_in, d_out) {
            self.error = Some(e);
            return None;
        }
        Some((f, self.adapter.scale_for(path)))
    }
}

impl LoraLayerMapper for Attacher<'_> {
    fn map_linear(&mut self, path: &str, layer: LoraLinear) -> LoraLinear {
        let Some((f, scale)) =
            self.factors(path, LayerKind::Linear, layer.d_input(), layer.d_output())
        else {
            return layer;
        };
        let device = layer.device();
        let layer = layer.with_factors(
            host_to_tensor(&f.a, &device),
            host_to_tensor(&f.b, &device),
            scale,
        );
        match &f.magnitude {
            Some(m) => layer.with_dora_magnitude(Tensor::<1>::from_floats(m.as_slice(), &device)),
            None => layer,
        }
    }

    fn map_embedding(&mut self, path: &str, layer: LoraEmbedding) -> LoraEmbedding {
        let Some((f, scale)) = self.factors(
            path,
            LayerKind::Embedding,
            layer.num_embeddings(),
            layer.embedding_dim(),
        ) else {
            return layer;
        };
        let device = layer.device();
        let layer = layer.with_factors(
            host_to_tensor(&f.a, &device),
            host_to_tensor(&f.b, &device),
            scale,
        );
        match &f.magnitude {
            Some(m) => layer.with_dora_magnitude(Tensor::<1>::from_floats(m.as_slice(), &device)),
            None => layer,
        }
    }
}

/// The file's tensors of layer `path` fit a model layer of `kind`, rank `r` and `[out, in]`
/// = `[d_out, d_in]`: same kind, `A: [r, in]`, `B: [out, r]`, a magnitude `[out]`.
fn check_fits(
    path: &str,
    f: &LayerFactors,
    kind: LayerKind,
    r: usize,
    d_in: usize,
    d_out: usize,
) -> Result<(), AdapterError> {
    if f.kind != kind {
        return Err(AdapterError::InconsistentLayer {
            path: Default::default(),
            layer: path.to_string(),
            message: format!(
                "the adapter's layer is a{} {} layer ({:?}) but the model's is a{} {} layer",
                article(f.kind),
                f.kind.name(),
                f.key(path, Factor::A),
                article(kind),
                kind.name()
            ),
        });
    }
    check_shape(path, f, Factor::A, &f.a, [r, d_in])?;
    check_shape(path, f, Factor::B, &f.b, [d_out, r])?;
    match &f.magnitude {
        Some(m) => check_magnitude(path, f, m, d_out),
        None => Ok(()),
    }
}

fn article(kind: LayerKind) -> &'static str {
    match kind {
        LayerKind::Embedding => "n",
        LayerKind::Linear => "",
    }
}

fn check_shape(
    path: &str,
    f: &LayerFactors,
    factor: Factor,
    m: &HostMatrix,
    expected: [usize; 2],
) -> Result<(), AdapterError> {
    if m.shape() != expected {
        return Err(AdapterError::ShapeMismatch {
            key: f.key(path, factor),
            expected: expected.to_vec(),
            found: m.shape().to_vec(),
        });
    }
    Ok(())
}

fn check_magnitude(
    path: &str,
    f: &LayerFactors,
    m: &[f32],
    d_out: usize,
) -> Result<(), AdapterError> {
    if m.len() != d_out {
        return Err(AdapterError::ShapeMismatch {
            key: f.key(path, Factor::Magnitude),
            expected: vec![d_out],
            found: vec![m.len()],
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
