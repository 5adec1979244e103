//! Adapter-only burn-train checkpoints in HuggingFace PEFT's format.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::module::{Module, ModuleDisplay, ModuleVisitor, Param, ParamGroup};
use burn::store::ModuleRecord;
use burn::tensor::Tensor;
use burn::train::checkpoint::{Checkpointer, CheckpointerError};

use super::RoraLearner;
use crate::adapted::adapted_layers;
use crate::adapter_io::{AdapterOptions, load_adapter, save_adapter};

/// The file of an epoch folder that holds the trainable parameters outside the adapters.
const OTHERS_FILE: &str = "trainable.bpk";

/// A burn-train model checkpointer for a [`RoraLearner`] that writes only what training
/// changes: one PEFT adapter folder per epoch, `<dir>/epoch-<n>/` with
/// `adapter_config.json` and `adapter_model.safetensors` (what PEFT's `save_pretrained`
/// writes, loadable by `PeftModel.from_pretrained` and by [`load_adapter`]), plus
/// `trainable.bpk`, a burnpack of the other trainable parameters (a classification head in
/// `modules_to_save`, say) when there are any. The frozen base weights are not saved:
/// restoring starts from the model the checkpointer was made with.
///
/// Register it with `SupervisedTraining::with_custom_checkpointers`, next to burn's own
/// `FileCheckpointer`s for the optimizer and the learning-rate scheduler, as the
/// [module example](super#example) does.
///
/// Each epoch's files go to a new folder and the adapter files are replaced atomically, so a
/// failed save leaves the earlier checkpoints intact. Paths in the adapter are those of the
/// inner model (`learner.model`), as PEFT's are of the model it wraps.
pub struct AdapterCheckpointer<M: Module + ModuleDisplay> {
    dir: PathBuf,
    template: Mutex<RoraLearner<M>>,
    /// Parameter paths (in the wrapper) of the trainable parameters outside the adapters.
    others: Vec<String>,
    options: AdapterOptions,
}

impl<M: Module + ModuleDisplay> AdapterCheckpointer<M> {
    /// Checkpoints under `dir` of the model `template` (the wrapper handed to the Learner,
    /// before training: its frozen weights are what a restored checkpoint starts from, and
    /// its trainable parameters say what a checkpoint holds). The template must be on the
    /// autodiff device it trains on: on a plain device no parameter is trainable, and a
    /// `modules_to_save` head would be left out of the checkpoints.
    pub fn new(dir: impl Into<PathBuf>, template: &RoraLearner<M>) -> Self {
        // What the PEFT file holds: A, B and the DoRA magnitude of each adapted layer.
        let factors: Vec<String> = adapted_layers(template)
            .into_iter()
            .flat_map(|l| [Some(l.a_path), Some(l.b_path), l.magnitude_path])
            .flatten()
            .collect();
        let mut collector = Trainable::default();
        template.visit(&mut collector);
        let others = collector
            .paths
            .into_iter()
            .filter(|p| !factors.contains(p))
            .collect();
        AdapterCheckpointer {
            dir: dir.into(),
            template: Mutex::new(template.clone()),
            others,
            options: AdapterOptions::default(),
        }
    }

    /// Settings for the adapter files (the scale of burn-native adapters).
    pub fn with_options(mut self, options: AdapterOptions) -> Self {
        self.options = options;
        self
    }

    /// The folder of epoch `epoch`'s checkpoint.
    pub fn epoch_dir(&self, epoch: usize) -> PathBuf {
        self.dir.join(format!("epoch-{epoch}"))
    }

    /// The paths (in the wrapper, `model.…`) of the trainable parameters outside the
    /// adapters, which go to `trainable.bpk`.
    pub fn other_trainable(&self) -> &[String] {
        &self.others
    }

    fn template(&self) -> RoraLearner<M> {
        self.template
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl<M: Module + ModuleDisplay> Checkpointer<ModuleRecord> for AdapterCheckpointer<M> {
    fn save(&self, epoch: usize, record: ModuleRecord) -> Result<(), CheckpointerError> {
        let model = self
            .template()
            .try_load_record(record)
            .map_err(CheckpointerError::Record)?;
        let dir = self.epoch_dir(epoch);
        save_adapter(&model.model, &dir, &self.options)
            .map_err(|e| CheckpointerError::Unknown(format!("{}: {e}", dir.display())))?;
        if !self.others.is_empty() {
            let tmp = dir.join(format!("{OTHERS_FILE}.tmp"));
            model
                .into_record_group(ParamGroup::from_paths(self.others.clone()))
                .save(&tmp)
                .map_err(CheckpointerError::Record)?;
            std::fs::rename(&tmp, dir.join(OTHERS_FILE)).map_err(CheckpointerError::IOError)?;
        }
        Ok(())
    }

    fn delete(&self, epoch: usize) -> Result<(), CheckpointerError> {
        let dir = self.epoch_dir(epoch);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(CheckpointerError::IOError)?;
        }
        Ok(())
    }

    fn restore(&self, epoch: usize) -> Result<ModuleRecord, CheckpointerError> {
        let dir = self.epoch_dir(epoch);
        let mut model = self.template();
        if !self.others.is_empty() {
            let others = load_others(&dir.join(OTHERS_FILE))?;
            model = model
                .try_load_record(others.allow_partial(true))
                .map_err(CheckpointerError::Record)?;
        }
        let RoraLearner { model: inner, rora } = model;
        let inner = load_adapter(inner, &dir, &self.options)
            .map_err(|e| CheckpointerError::Unknown(format!("{}: {e}", dir.display())))?;
        Ok(RoraLearner { model: inner, rora }.into_record())
    }
}

fn load_others(path: &Path) -> Result<ModuleRecord, CheckpointerError> {
    if !path.exists() {
        return Err(CheckpointerError::IOError(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{}: the checkpoint has no trainable parameters besides the adapters, but the \
                 model has some",
                path.display()
            ),
        )));
    }
    ModuleRecord::load(path).map_err(CheckpointerError::Record)
}

/// Collects the paths of the parameters that receive gradients.
#[derive(Default)]
struct Trainable {
    path: Vec<String>,
    paths: Vec<String>,
}

impl ModuleVisitor for Trainable {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if param.is_require_grad() {
            self.paths.push(self.path.join("."));
        }
    }
}
