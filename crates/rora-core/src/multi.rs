//! Several named adapters for one model, one active at a time: PEFT's `add_adapter`,
//! `set_adapter`, `disable_adapter`, `delete_adapter` and `add_weighted_adapter`, and its
//! multi-adapter folder layout.
//!
//! [`NamedAdapters`] keeps every adapter by name (as host [`PeftAdapter`]s) and puts one of
//! them on the model's [`LoraLinear`] and [`LoraEmbedding`] layers at a time. Switching
//! first reads the active adapter's current values back from the model, so training,
//! rescaling (RoRA's Pt) or loading done on the model while it was active is kept.
//! [`NamedAdapters::save`] writes PEFT's layout (`default` in the folder, every other adapter
//! in `<folder>/<name>/`), which `PeftModel.from_pretrained` + `load_adapter` read.
//!
//! Attaching an adapter creates fresh parameters (new ids): after
//! [`set_active`](NamedAdapters::set_active), prepare RoRA and the optimizer again.
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::LinearConfig;
//! use burn::tensor::{Device, Tensor};
//! use rora_core::multi::NamedAdapters;
//! use rora_core::peft::Combination;
//! use rora_core::{LoraConfig, LoraLinear, LoraModel, Targets, inject_lora};
//!
//! #[derive(Module, LoraModel, Debug)]
//! struct Net { fc: LoraLinear }
//!
//! let device = Device::default();
//! let net = Net { fc: LinearConfig::new(8, 4).init(&device).into() };
//! let targets = Targets::parse(&["fc"])?;
//! let mut adapters = NamedAdapters::new();
//! // Two adapters, e.g. trained on two tasks: capture each from the model.
//! let net = inject_lora(net, &targets, &LoraConfig::new(2, 4.0))?;
//! adapters.add_from_model("task_a", &net)?;
//! let net = inject_lora(net, &targets, &LoraConfig::new(2, 4.0))?;
//! adapters.add_from_model("task_b", &net)?;
//! // Their weighted combination (PEFT's add_weighted_adapter, `cat`), then switch to it.
//! adapters.add_weighted(&net, "mix", &[("task_a", 0.5), ("task_b", 0.5)], Combination::Cat)?;
//! let net = adapters.set_active(net, "mix")?;
//! assert_eq!(net.fc.rank(), Some(4));
//! let net = adapters.disable(net); // base model only
//! let y = net.fc.forward(Tensor::<2>::ones([1, 8], &device));
//! let dir = tempfile::tempdir()?;
//! adapters.save(&net, dir.path())?; // <dir>/task_a/, <dir>/task_b/, <dir>/mix/
//! # let _ = y;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use burn::module::Module;

use crate::adapter_io::{AdapterOptions, adapter_from_model, attach_adapter};
use crate::embedding::LoraEmbedding;
use crate::linear::LoraLinear;
use crate::lora_model::{LoraLayerMapper, LoraModel};
use crate::peft::{
    AdapterError, AdapterSet, Combination, PeftAdapter, ReadOptions, weighted_adapter,
};

/// Named adapters for one model, at most one of them on the model (active).
#[derive(Debug, Clone, Default)]
pub struct NamedAdapters {
    set: AdapterSet,
    active: Option<String>,
}

impl NamedAdapters {
    /// No adapters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The adapters of a PEFT multi-adapter folder ([`AdapterSet::read`]); none is active.
    pub fn read(dir: &Path) -> Result<Self, AdapterError> {
        Ok(Self::from_set(AdapterSet::read(dir)?))
    }

    /// Adapters from a set; none is active.
    pub fn from_set(set: AdapterSet) -> Self {
        NamedAdapters { set, active: None }
    }

    /// The stored adapters (the active one as of the last switch or capture; see
    /// [`snapshot`](Self::snapshot) for current values).
    pub fn set(&self) -> &AdapterSet {
        &self.set
    }

    /// The adapter names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.set.names()
    }

    /// The name of the adapter on the model, if any.
    pub fn active(&self) -> Option<&str> {
        self.active.as_deref()
    }

    /// Add an adapter under a new name (PEFT's `add_adapter`/`load_adapter`); it is not put
    /// on the model. A name in use is [`AdapterError::DuplicateAdapter`].
    pub fn add(&mut self, name: &str, adapter: PeftAdapter) -> Result<(), AdapterError> {
        if self.set.get(name).is_ok() {
            return Err(AdapterError::DuplicateAdapter {
                name: name.to_string(),
            });
        }
        adapter.validate()?;
        self.set.insert(name, adapter)
    }

    /// Add the adapters the model carries now (its [`LoraLinear`] and [`LoraEmbedding`]
    /// layers) under a new name, and make it the active one.
    pub fn add_from_model<M: Module>(&mut self, name: &str, model: &M) -> Result<(), AdapterError> {
        let adapter = adapter_from_model(model, &AdapterOptions::default())?;
        self.add(name, adapter)?;
        self.active = Some(name.to_string());
        Ok(())
    }

    /// Read the active adapter's current values back from `model` into the store. No-op
    /// without an active adapter.
    pub fn sync<M: Module>(&mut self, model: &M) -> Result<(), AdapterError> {
        let Some(name) = self.active.clone() else {
            return Ok(());
        };
        let current = adapter_from_model(model, &AdapterOptions::default())?;
        let mut stored = self.set.get(&name)?.clone();
        // Keep the stored config (its target_modules, dropout, every key PEFT wrote): the
        // factors and magnitudes are the model's, the rank and scale unchanged.
        stored.layers = current.layers;
        stored.config.use_dora = current.config.use_dora;
        self.set.insert(&name, stored)
    }

    /// Every adapter, the active one with the model's current values.
    pub fn snapshot<M: Module>(&self, model: &M) -> Result<AdapterSet, AdapterError> {
        let mut copy = self.clone();
        copy.sync(model)?;
        Ok(copy.set)
    }

    /// Put adapter `name` on the model (PEFT's `set_adapter`): the active adapter's values
    /// are read back first, every adapter is removed from the model, `name`'s are attached
    /// ([`attach_adapter`]) and enabled. An unknown name is [`AdapterError::UnknownAdapter`]
    /// listing the names there are. On an error the store is unchanged (the model is
    /// consumed: keep a clone if you need it after an error).
    pub fn set_active<M: LoraModel + Module>(
        &mut self,
        model: M,
        name: &str,
    ) -> Result<M, AdapterError> {
        let adapter = self.set.get(name)?.clone();
        let mut store = self.clone();
        store.sync(&model)?;
        let model = model.map_lora_layers("", &mut Strip);
        let model = attach_adapter(model, &adapter)?;
        *self = store;
        self.active = Some(name.to_string());
        Ok(model)
    }

    /// Switch the active adapter's contribution off (PEFT's `disable_adapter`): the model
    /// computes its base. The adapter stays on the model; [`enable`](Self::enable) switches
    /// it on again.
    pub fn disable<M: LoraModel>(&self, model: M) -> M {
        model.map_lora_layers("", &mut Enable(false))
    }

    /// Switch the active adapter's contribution on again.
    pub fn enable<M: LoraModel>(&self, model: M) -> M {
        model.map_lora_layers("", &mut Enable(true))
    }

    /// Delete adapter `name` (PEFT's `delete_adapter`); if it is the active one, the model's
    /// adapters are removed and none is active. An unknown name is
    /// [`AdapterError::UnknownAdapter`].
    pub fn delete<M: LoraModel>(&mut self, model: M, name: &str) -> Result<M, AdapterError> {
        self.set.get(name)?;
        self.set.remove(name);
        if self.active.as_deref() == Some(name) {
            self.active = None;
            return Ok(model.map_lora_layers("", &mut Strip));
        }
        Ok(model)
    }

    /// Add the weighted combination of stored adapters as a new adapter `name` (PEFT's
    /// `add_weighted_adapter`; see [`weighted_adapter`]), reading the active adapter's values
    /// back from `model` first. It is not put on the model.
    pub fn add_weighted<M: Module>(
        &mut self,
        model: &M,
        name: &str,
        weights: &[(&str, f64)],
        combination: Combination,
    ) -> Result<(), AdapterError> {
        self.sync(model)?;
        let parts = weights
            .iter()
            .map(|(n, w)| Ok((self.set.get(n)?, *w)))
            .collect::<Result<Vec<_>, AdapterError>>()?;
        let combined = weighted_adapter(&parts, combination)?;
        self.add(name, combined)
    }

    /// Write every adapter (the active one with the model's current values) in PEFT's
    /// multi-adapter layout: `default` in `dir`, every other adapter in `dir/<name>/`.
    pub fn save<M: Module>(&self, model: &M, dir: &Path) -> Result<(), AdapterError> {
        self.snapshot(model)?.write(dir)
    }

    /// Read one named adapter of a PEFT multi-adapter folder and add it under the same name.
    pub fn load_one(&mut self, dir: &Path, name: &str) -> Result<(), AdapterError> {
        let adapter = AdapterSet::read_one(dir, name, &ReadOptions::default())?;
        self.add(name, adapter)
    }
}

/// Removes every adapter.
struct Strip;

impl LoraLayerMapper for Strip {
    fn map_linear(&mut self, _: &str, layer: LoraLinear) -> LoraLinear {
        layer.without_lora().set_enabled(true)
    }
    fn map_embedding(&mut self, _: &str, layer: LoraEmbedding) -> LoraEmbedding {
        layer.without_lora().set_enabled(true)
    }
}

/// Switches every adapter on or off.
struct Enable(bool);

impl LoraLayerMapper for Enable {
    fn map_linear(&mut self, _: &str, layer: LoraLinear) -> LoraLinear {
        layer.set_enabled(self.0)
    }
    fn map_embedding(&mut self, _: &str, layer: LoraEmbedding) -> LoraEmbedding {
        layer.set_enabled(self.0)
    }
}
