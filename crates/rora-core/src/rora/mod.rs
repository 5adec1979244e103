//! RoRA: regularized LoRA that forgets backdoors.
//!
//! Three mechanisms on top of any adapted model (see `DESIGN.md`):
//!
//! - **Cl** — dropout on the frozen branch's output during training, a setting of the
//!   adapted layers ([`LoraConfig::base_dropout`](crate::LoraConfig));
//! - **Tr** — the trigger-insensitive constraint `λ·Σ‖Ukᵀ·B‖F² + ‖A·Vk‖F²`
//!   ([`Rora::penalty`]), with `Uk`, `Vk` the top-`k` singular vectors of each frozen `W0`,
//!   computed once by [`Rora::prepare`] and cached;
//! - **Pt** — post-training spectral rescaling ([`Rora::rescale`]).
//!
//! ```
//! use burn::nn::LinearConfig;
//! use burn::module::{Module, ParamId};
//! use burn::tensor::{Device, Tensor};
//! use rora_core::rora::{Rora, RoraConfig};
//! use rora_core::{LoraConfig, LoraLinear, LoraModel, Targets, inject_lora};
//!
//! #[derive(Module, LoraModel, Debug)]
//! struct Net { query: LoraLinear }
//!
//! let device = Device::default().autodiff();
//! let net = Net { query: LinearConfig::new(32, 32).init(&device).into() };
//! let lora = LoraConfig::new(4, 8.0).with_base_dropout(0.1); // Cl
//! let net = inject_lora(net, &Targets::parse(&["query"])?, &lora)?;
//! let rora = Rora::prepare(&net, RoraConfig::new().with_top_k(4))?;
//! let x = Tensor::<2>::ones([8, 32], &device);
//! let loss = net.query.forward(x).powf_scalar(2.0).mean() + rora.penalty(&net); // Tr
//! let _grads = loss.backward();
//! // ... after training:
//! let (net, report) = rora.rescale(net)?; // Pt
//! println!("{report}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod constraint;
mod error;
mod invariance;
mod rescale;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use burn::module::{Module, ParamId};
use burn::tensor::{Device, Tensor};
use nalgebra::DMatrix;
use rora_spectral::{BaseSpectrum, LayerReport};
use serde::{Deserialize, Serialize};

pub use config::{
    CleanStrengthConfig, LayerSelection, RescaleTarget, RoraConfig, TriggerCancellationConfig,
};
pub(crate) use constraint::Scale;
pub use constraint::omega;
pub use error::RoraError;
pub use invariance::insertion_invariance;
pub use rescale::{RATIO_TOLERANCE, RescaleReport, RescaledLayer};

use crate::adapted::{AdaptedLayer, AdapterKind, adapted_layers};
use crate::convert::dmatrix_to_tensor;

/// What RoRA caches per adapted layer (serializable, so a long run can resume without
/// recomputing SVDs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerCache {
    /// Module path of the layer.
    pub path: String,
    /// How its adapter is attached.
    pub kind: AdapterKind,
    /// Top-`k` spectrum of `W0` (`Uk`, `Σk`, `Vk`, `σ1`, `‖W0‖F`).
    pub spectrum: BaseSpectrum,
    /// Clean input subspace `Vc: [in, kc]`, if given.
    pub clean_subspace: Option<DMatrix<f64>>,
    /// `‖W0·Vc‖F`, with the clean subspace.
    pub clean_base_norm: Option<f64>,
    /// Trigger subspace `Vt: [in, kt]` (top right singular vectors of `W0·(I − Vc·Vcᵀ)`),
    /// with the clean subspace and trigger cancellation on.
    pub trigger_subspace: Option<DMatrix<f64>>,
    /// `W0·Vt: [out, kt]`.
    pub trigger_base: Option<DMatrix<f64>>,
}

/// Device tensors derived from a [`LayerCache`].
#[derive(Debug, Clone)]
pub(crate) struct LayerTensors {
    pub(crate) uk: Tensor<2>,
    pub(crate) vk: Tensor<2>,
    pub(crate) vc: Option<Tensor<2>>,
    pub(crate) vt: Option<Tensor<2>>,
    pub(crate) w0_vt: Option<Tensor<2>>,
}

impl LayerTensors {
    fn to_device(&self, device: &Device) -> Self {
        let opt = |t: &Option<Tensor<2>>| t.as_ref().map(|t| t.clone().to_device(device));
        LayerTensors {
            uk: self.uk.clone().to_device(device),
            vk: self.vk.clone().to_device(device),
            vc: opt(&self.vc),
            vt: opt(&self.vt),
            w0_vt: opt(&self.w0_vt),
        }
    }

    fn new(cache: &LayerCache, device: &Device) -> Self {
        let opt = |m: &Option<DMatrix<f64>>| m.as_ref().map(|m| dmatrix_to_tensor(m, device));
        LayerTensors {
            uk: dmatrix_to_tensor(&cache.spectrum.u, device),
            vk: dmatrix_to_tensor(&cache.spectrum.v, device),
            vc: opt(&cache.clean_subspace),
            vt: opt(&cache.trigger_subspace),
            w0_vt: opt(&cache.trigger_base),
        }
    }
}

/// RoRA prepared for one model: the config and, per adapted layer, the cached top-`k`
/// subspaces of `W0`. Prepare once, then call [`penalty`](Self::penalty) in every training
/// step and [`rescale`](Self::rescale) after training.
#[derive(Debug)]
pub struct Rora {
    config: RoraConfig,
    caches: Vec<LayerCache>,
    /// The cached subspaces as tensors on the device the model was on at `prepare`.
    tensors: Arc<Vec<LayerTensors>>,
    /// Copies of `tensors` on other devices (data-parallel replicas), made on first use.
    replicas: Mutex<Vec<(Device, Arc<Vec<LayerTensors>>)>>,
    index: HashMap<String, usize>,
    /// The parameter ids of each layer's factors, as last seen: the per-step penalty finds
    /// the factors by id, reading nothing back from the device. Ids survive training steps;
    /// after a model is loaded from a record they change, the penalty then finds the layers
    /// by path once and learns the new ids.
    ids: Mutex<Vec<Option<LayerIds>>>,
}

impl Clone for Rora {
    fn clone(&self) -> Self {
        Rora {
            config: self.config.clone(),
            caches: self.caches.clone(),
            tensors: self.tensors.clone(),
            replicas: Mutex::new(self.replicas_snapshot()),
            index: self.index.clone(),
            ids: Mutex::new(self.ids_snapshot()),
        }
    }
}

/// Where one prepared layer's factors live in the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LayerIds {
    pub(crate) kind: AdapterKind,
    pub(crate) a: ParamId,
    pub(crate) b: ParamId,
    pub(crate) scale: Option<ParamId>,
}

impl LayerIds {
    pub(crate) fn of(layer: &AdaptedLayer) -> Self {
        LayerIds {
            kind: layer.kind,
            a: layer.a_id,
            b: layer.b_id,
            scale: layer.scale_id,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    config: RoraConfig,
    layers: Vec<LayerCache>,
}

impl Rora {
    /// Prepare RoRA for `model`: collect its adapted layers and compute the top-`k` singular
    /// subspaces of each frozen `W0` (exact SVD up to 256 on the short side, randomized
    /// above).
    ///
    /// Errors: no adapted layer; a merged layer; `top_k ≥ min(in, out)` for a layer;
    /// invalid settings.
    pub fn prepare<M: Module>(model: &M, config: RoraConfig) -> Result<Self, RoraError> {
        validate(&config)?;
        let layers = adapted_layers(model);
        if layers.is_empty() {
            return Err(RoraError::NoAdaptedLayers);
        }
        let mut caches = Vec::with_capacity(layers.len());
        for layer in &layers {
            if layer.merged {
                return Err(RoraError::Merged {
                    path: layer.path.clone(),
                });
            }
            let max = layer.d_in().min(layer.d_out());
            if config.top_k == 0 || config.top_k >= max {
                return Err(RoraError::TopKTooLarge {
                    path: layer.path.clone(),
                    k: config.top_k,
                    max,
                });
            }
            let spectrum =
                BaseSpectrum::compute(&layer.base_matrix(), config.top_k).map_err(|source| {
                    RoraError::Spectral {
                        path: layer.path.clone(),
                        source,
                    }
                })?;
            caches.push(LayerCache {
                path: layer.path.clone(),
                kind: layer.kind,
                spectrum,
                clean_subspace: None,
                clean_base_norm: None,
                trigger_subspace: None,
                trigger_base: None,
            });
        }
        let device = layers[0].base.device();
        let rora = Self::from_caches(config, caches, &device);
        rora.set_ids(layers.iter().map(|l| Some(LayerIds::of(l))).collect());
        Ok(rora)
    }

    fn from_caches(config: RoraConfig, caches: Vec<LayerCache>, device: &Device) -> Self {
        let tensors = Arc::new(
            caches
                .iter()
                .map(|c| LayerTensors::new(c, device))
                .collect(),
        );
        let index = caches
            .iter()
            .enumerate()
            .map(|(i, c)| (c.path.clone(), i))
            .collect();
        let ids = Mutex::new(vec![None; caches.len()]);
        Rora {
            config,
            caches,
            tensors,
            replicas: Mutex::new(Vec::new()),
            index,
            ids,
        }
    }

    fn replicas_snapshot(&self) -> Vec<(Device, Arc<Vec<LayerTensors>>)> {
        self.replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The cached subspaces on `device`: the tensors made by `prepare`, or, for a model
    /// replica on another device (data parallel), copies moved there once and reused.
    pub(crate) fn tensors_on(&self, device: &Device) -> Arc<Vec<LayerTensors>> {
        let home = self.tensors.first().map(|t| t.uk.device());
        if home.as_ref().is_none_or(|h| h == device) {
            return self.tensors.clone();
        }
        let mut replicas = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = replicas.iter().find(|(d, _)| d == device) {
            return t.clone();
        }
        let moved = Arc::new(
            self.tensors
                .iter()
                .map(|t| t.to_device(device))
                .collect::<Vec<_>>(),
        );
        replicas.push((device.clone(), moved.clone()));
        moved
    }

    pub(crate) fn ids_snapshot(&self) -> Vec<Option<LayerIds>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_ids(&self, ids: Vec<Option<LayerIds>>) {
        *self.ids.lock().unwrap_or_else(|e| e.into_inner()) = ids;
    }

    /// The settings.
    pub fn config(&self) -> &RoraConfig {
        &self.config
    }

    /// The per-layer caches, in the model's visiting order.
    pub fn caches(&self) -> &[LayerCache] {
        &self.caches
    }

    /// Write the config and caches to `path` (JSON, atomically).
    pub fn save_cache(&self, path: &Path) -> Result<(), RoraError> {
        let file = CacheFile {
            config: self.config.clone(),
            layers: self.caches.clone(),
        };
        let json = serde_json::to_vec(&file).map_err(|e| RoraError::Cache {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        crate::peft::write_atomic(path, &json).map_err(|e| RoraError::Cache {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Read a cache written by [`save_cache`](Self::save_cache); tensors go to `device`.
    pub fn load_cache(path: &Path, device: &Device) -> Result<Self, RoraError> {
        let err = |message: String| RoraError::Cache {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let file: CacheFile = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
        validate(&file.config)?;
        Ok(Self::from_caches(file.config, file.layers, device))
    }

    /// Give layer `path` a clean input subspace `vc: [in, kc]` (orthonormal columns, e.g.
    /// the top eigenvectors of a [`CovarianceAccumulator`](rora_spectral::CovarianceAccumulator)
    /// of the layer's inputs on clean data). Needed by the clean-strength and
    /// trigger-cancellation extensions, the exact-threshold rescaling and the clean
    /// alignment of reports. `model` supplies `W0`.
    pub fn set_clean_subspace<M: Module>(
        &mut self,
        model: &M,
        path: &str,
        vc: DMatrix<f64>,
    ) -> Result<(), RoraError> {
        let i = *self
            .index
            .get(path)
            .ok_or_else(|| RoraError::LayerNotPrepared {
                path: path.to_string(),
            })?;
        let layer = find_layer(model, path)?;
        let w0 = layer.base_matrix();
        if vc.nrows() != w0.ncols() || vc.ncols() == 0 {
            return Err(RoraError::InvalidSetting(format!(
                "clean subspace of {path:?} must be [in = {}, kc ≥ 1], got [{}, {}]",
                w0.ncols(),
                vc.nrows(),
                vc.ncols()
            )));
        }
        let spectral = |source| RoraError::Spectral {
            path: path.to_string(),
            source,
        };
        let cache = &mut self.caches[i];
        cache.clean_base_norm = Some((&w0 * &vc).norm());
        // Strong directions that clean inputs do not visit: the top right singular vectors
        // of W0·(I − Vc·Vcᵀ), for trigger cancellation and the exact threshold.
        let trigger_k = match (&self.config.trigger_cancellation, self.config.rescale) {
            (Some(tc), _) => Some(tc.k),
            (None, RescaleTarget::ExactThreshold(_)) => Some(self.config.top_k),
            _ => None,
        };
        if let Some(k) = trigger_k {
            let projected = &w0 - (&w0 * &vc) * vc.transpose();
            let k = k.min(projected.nrows().min(projected.ncols()));
            let svd = rora_spectral::top_k(&projected, k).map_err(spectral)?;
            let vt = svd.v_t.transpose();
            cache.trigger_base = Some(&w0 * &vt);
            cache.trigger_subspace = Some(vt);
        }
        cache.clean_subspace = Some(vc);
        let device = layer.base.device();
        Arc::make_mut(&mut self.tensors)[i] = LayerTensors::new(&self.caches[i], &device);
        self.replicas
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }

    /// The spectral report of every adapted layer of `model`: strength ratio, alignments,
    /// the paper's critical scale next to the scale in use, singular values of `s·B·A`,
    /// intruder dimensions (see [`LayerReport`]).
    pub fn report<M: Module>(&self, model: &M) -> Result<Vec<LayerReport>, RoraError> {
        let mut out = Vec::new();
        for layer in adapted_layers(model) {
            if layer.merged {
                return Err(RoraError::Merged { path: layer.path });
            }
            let cache = self.cache(&layer.path)?;
            let s = layer.scale_or(self.config.native_lora_scale)?;
            let report = LayerReport::compute(
                &layer.path,
                &cache.spectrum,
                &layer.b_matrix(),
                &layer.a_matrix(),
                s,
                cache.clean_subspace.as_ref(),
            )
            .map_err(|source| RoraError::Spectral {
                path: layer.path.clone(),
                source,
            })?;
            out.push(report);
        }
        Ok(out)
    }

    fn cache(&self, path: &str) -> Result<&LayerCache, RoraError> {
        self.index
            .get(path)
            .map(|&i| &self.caches[i])
            .ok_or_else(|| RoraError::LayerNotPrepared {
                path: path.to_string(),
            })
    }
}

fn find_layer<M: Module>(model: &M, path: &str) -> Result<AdaptedLayer, RoraError> {
    adapted_layers(model)
        .into_iter()
        .find(|l| l.path == path)
        .ok_or_else(|| RoraError::LayerNotPrepared {
            path: path.to_string(),
        })
}

fn validate(config: &RoraConfig) -> Result<(), RoraError> {
    let bad = |what: String| Err(RoraError::InvalidSetting(what));
    if !config.lambda.is_finite() || config.lambda < 0.0 {
        return bad(format!(
            "lambda must be finite and ≥ 0, got {}",
            config.lambda
        ));
    }
    if let Err(e) = config.rescale.validate() {
        return bad(e.to_string());
    }
    if !config.insertion_invariance.is_finite() || config.insertion_invariance < 0.0 {
        return bad("insertion_invariance weight must be finite and ≥ 0".into());
    }
    Ok(())
}
