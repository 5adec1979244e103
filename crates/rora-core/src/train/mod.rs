//! Training with burn-train's `Learner` (feature `train`).
//!
//! burn-train trains a model that implements `TrainStep` and `InferenceStep`. RoRA adds
//! one term to the training loss ([`Rora::penalty`]) and one step after training
//! ([`Rora::rescale`], Pt); base-branch dropout (Cl) is a setting of the adapted layers and
//! needs nothing here. [`RoraLearner`] does both around a model of yours:
//!
//! 1. implement [`RoraTask`] on your model: the forward pass returning the task loss and
//!    the step's output (e.g. burn's `ClassificationOutput`), and burn's `InferenceStep`
//!    for validation, as for any burn-train model;
//! 2. wrap it, `RoraLearner::new(model, rora)`, and hand the wrapper to burn's `Learner`;
//!    its `TrainStep` adds the penalty and reports Ω and the strength ratio, which
//!    [`OmegaMetric`] and [`StrengthRatioMetric`] show next to burn's own metrics
//!    (loss and accuracy are forwarded from your output);
//! 3. after `launch`, [`RoraLearner::finish`] runs Pt once and returns your model.
//!
//! Checkpoints: [`AdapterCheckpointer`] saves each epoch as a PEFT adapter folder (plus the
//! other trainable parameters, e.g. a `modules_to_save` head), instead of the whole model.
//!
//! Data parallel: burn's `ExecutionStrategy::MultiDevice` forks the wrapper to every
//! device; the cached subspaces are computed once (at [`Rora::prepare`]) and copied to each
//! replica's device on first use, so every replica computes the same penalty. burn sums
//! the replicas' gradients, so with `n` replicas the gradient is `n` times that of one
//! device on the whole batch (Adam's update is unaffected, up to its `ε`).
//!
//! If you write `TrainStep` yourself, [`rora_train_output`] is the step's last line.
//!
//! # Example
//!
//! A two-layer classifier, LoRA on `body`, the head trained in full, one epoch:
//!
//! ```
//! use burn::data::dataloader::DataLoaderBuilder;
//! use burn::data::dataloader::batcher::Batcher;
//! use burn::data::dataset::InMemDataset;
//! use burn::module::Module;
//! use burn::nn::LinearConfig;
//! use burn::nn::loss::CrossEntropyLossConfig;
//! use burn::optim::SgdConfig;
//! use burn::optim::lr_scheduler::constant::ConstantLr;
//! use burn::tensor::{Device, Int, Tensor, TensorData};
//! use burn::train::checkpoint::FileCheckpointer;
//! use burn::train::metric::LossMetric;
//! use burn::train::{
//!     ClassificationOutput, ExecutionStrategy, InferenceStep, Learner, SupervisedTraining,
//! };
//! use rora_core::train::{
//!     AdapterCheckpointer, OmegaMetric, RoraLearner, RoraTask, StrengthRatioMetric,
//! };
//! use rora_core::{LoraConfig, LoraLinear, LoraModel, Rora, RoraConfig, Targets, inject_lora};
//!
//! #[derive(Module, LoraModel, Debug)]
//! struct Net {
//!     body: LoraLinear,
//!     head: LoraLinear,
//! }
//!
//! #[derive(Clone, Debug)]
//! struct Batch {
//!     x: Tensor<2>,
//!     y: Tensor<1, Int>,
//! }
//!
//! #[derive(Clone)]
//! struct ToBatch;
//!
//! impl Batcher<([f32; 4], i64), Batch> for ToBatch {
//!     fn batch(&self, items: Vec<([f32; 4], i64)>, device: &Device) -> Batch {
//!         let n = items.len();
//!         let x: Vec<f32> = items.iter().flat_map(|(x, _)| *x).collect();
//!         let y: Vec<i64> = items.iter().map(|(_, y)| *y).collect();
//!         Batch {
//!             x: Tensor::from_data(TensorData::new(x, [n, 4]), device),
//!             y: Tensor::from_data(TensorData::new(y, [n]), device),
//!         }
//!     }
//! }
//!
//! impl Net {
//!     fn classify(&self, batch: Batch) -> ClassificationOutput {
//!         let logits = self.head.forward(self.body.forward(batch.x).tanh());
//!         let loss = CrossEntropyLossConfig::new()
//!             .init(&logits.device())
//!             .forward(logits.clone(), batch.y.clone());
//!         ClassificationOutput::new(loss, logits, batch.y)
//!     }
//! }
//!
//! // 1. The training forward pass (task loss and output), and validation.
//! impl RoraTask for Net {
//!     type Input = Batch;
//!     type Output = ClassificationOutput;
//!     fn forward_task(&self, batch: Batch) -> (Tensor<1>, ClassificationOutput) {
//!         let out = self.classify(batch);
//!         (out.loss.clone(), out)
//!     }
//! }
//!
//! impl InferenceStep for Net {
//!     type Input = Batch;
//!     type Output = ClassificationOutput;
//!     fn step(&self, batch: Batch) -> ClassificationOutput {
//!         self.classify(batch)
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Device::default().autodiff();
//! let net = Net {
//!     body: LinearConfig::new(4, 8).init(&device).into(),
//!     head: LinearConfig::new(8, 2).init(&device).into(),
//! };
//! let targets = Targets::parse(&["body"])?.with_modules_to_save(&["head"])?;
//! let net = inject_lora(net, &targets, &LoraConfig::new(2, 4.0).with_base_dropout(0.1))?;
//! let rora = Rora::prepare(&net, RoraConfig::new().with_top_k(2))?;
//!
//! // 2. Wrap the model and train it with burn's Learner.
//! let items: Vec<([f32; 4], i64)> = (0..8)
//!     .map(|i| ([i as f32 / 8.0, 1.0, -1.0, 0.5], (i % 2) as i64))
//!     .collect();
//! let loader = |items| {
//!     DataLoaderBuilder::new(ToBatch)
//!         .batch_size(4)
//!         .set_device(device.clone())
//!         .build(InMemDataset::new(items))
//! };
//! let dir = tempfile::tempdir()?;
//! let model = RoraLearner::new(net, rora);
//! // Adapter-only checkpoints: <dir>/adapter/epoch-<n>/ is a PEFT adapter folder.
//! let checkpoints = AdapterCheckpointer::new(dir.path().join("adapter"), &model);
//! let learner = Learner::new(model, SgdConfig::new().init(), ConstantLr::from(0.1));
//! let result = SupervisedTraining::new(dir.path(), loader(items.clone()), loader(items))
//!     .metric_train_numeric(LossMetric::new())
//!     .metric_train_numeric(OmegaMetric::new())
//!     .metric_train_numeric(StrengthRatioMetric::new())
//!     .with_custom_checkpointers(
//!         checkpoints,
//!         FileCheckpointer::new(dir.path().join("checkpoint"), "optim"),
//!         FileCheckpointer::new(dir.path().join("checkpoint"), "scheduler"),
//!     )
//!     .with_training_strategy(ExecutionStrategy::single(device.clone()).into())
//!     .with_application_logger(None)
//!     .num_epochs(1)
//!     .launch(learner);
//! assert!(result.error.is_none());
//! let epoch = dir.path().join("adapter").join("epoch-1");
//! assert!(epoch.join("adapter_model.safetensors").exists());
//! assert!(epoch.join("trainable.bpk").exists()); // the head
//!
//! // 3. Pt, once, on the trained model.
//! let (net, report) = result.model.finish()?;
//! assert_eq!(report.layers.len(), 1);
//! # let _ = net;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use burn::module::{Module, ModuleDisplay};
use burn::tensor::Tensor;
use burn::train::metric::{AccuracyInput, Adaptor, ItemLazy, LossInput};
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use crate::convert::tensor_to_dmatrix;
use crate::rora::{RescaleReport, Rora, RoraError, Scale, omega};

mod checkpoint;
mod metrics;

pub use checkpoint::AdapterCheckpointer;
pub use metrics::{OmegaMetric, StrengthRatioMetric};

/// The task side of a model trained with [`RoraLearner`]: its forward pass in training.
pub trait RoraTask {
    /// A training batch.
    type Input: Send + 'static;
    /// What a step reports to the Learner's metrics (e.g. `ClassificationOutput`).
    type Output: ItemLazy + 'static;
    /// Forward pass on `input`: the task loss (`[1]`, on the autodiff graph) and the
    /// output for metrics.
    fn forward_task(&self, input: Self::Input) -> (Tensor<1>, Self::Output);
}

/// A model wrapped for burn-train: its `TrainStep` is the model's [`RoraTask`] plus
/// RoRA's penalty, its `InferenceStep` the model's own.
///
/// Module paths get a `model.` prefix in burn's records of the wrapper; save the adapter
/// of the inner model (`save_adapter(&learner.model, ..)`) for PEFT's file format.
#[derive(Module, Debug)]
pub struct RoraLearner<M: Module> {
    /// The model being trained.
    pub model: M,
    #[module(skip)]
    rora: Arc<Rora>,
}

impl<M: Module> RoraLearner<M> {
    /// Wrap `model` with RoRA prepared on it.
    pub fn new(model: M, rora: Rora) -> Self {
        RoraLearner {
            model,
            rora: Arc::new(rora),
        }
    }

    /// The RoRA state (config, cached subspaces).
    pub fn rora(&self) -> &Rora {
        &self.rora
    }

    /// End of training: Pt ([`Rora::rescale`], with the config's target) on the trained
    /// model, once. Returns the model and the rescale report.
    pub fn finish(self) -> Result<(M, RescaleReport), RoraError> {
        self.rora.rescale(self.model)
    }
}

impl<M: Module + ModuleDisplay + RoraTask> TrainStep for RoraLearner<M> {
    type Input = M::Input;
    type Output = RoraOutput<M::Output>;

    fn step(&self, input: Self::Input) -> TrainOutput<Self::Output> {
        let (loss, output) = self.model.forward_task(input);
        rora_train_output(&self.rora, self, &self.model, loss, output)
    }
}

impl<M: Module + ModuleDisplay + InferenceStep> InferenceStep for RoraLearner<M> {
    type Input = M::Input;
    type Output = M::Output;

    fn step(&self, input: Self::Input) -> Self::Output {
        InferenceStep::step(&self.model, input)
    }
}

/// The last line of a hand-written `TrainStep` with RoRA: adds `rora.penalty(model)` to
/// `loss`, backpropagates, and returns burn's `TrainOutput` for `module` (the module the
/// Learner trains: `model` itself or a wrapper of it) with the RoRA statistics attached.
pub fn rora_train_output<W: Module, M: Module, O>(
    rora: &Rora,
    module: &W,
    model: &M,
    loss: Tensor<1>,
    output: O,
) -> TrainOutput<RoraOutput<O>> {
    let total = loss + rora.penalty(model);
    let grads = total.backward();
    let stats = RoraStats::of(rora, model);
    TrainOutput::new(
        module,
        grads,
        RoraOutput {
            task: output,
            stats,
        },
    )
}

/// A training step's output: the task's output and the RoRA statistics.
pub struct RoraOutput<O> {
    /// The task's output (loss, logits, targets…).
    pub task: O,
    /// Ω and the factors for the strength ratio.
    pub stats: RoraStats,
}

/// Ω and the strength-ratio inputs of one step (detached tensors: reading them back
/// happens in the metrics, off the training thread).
#[derive(Clone, Debug)]
pub struct RoraStats {
    /// `Σℓ Ωℓ`, unweighted by λ (`[1]`).
    pub omega: Option<Tensor<1>>,
    /// The prepared layers whose scale is known.
    pub layers: Vec<LayerStats>,
}

/// One prepared layer's factors in a step, for its strength ratio.
#[derive(Clone, Debug)]
pub struct LayerStats {
    /// `A: [r, in]`.
    pub a: Tensor<2>,
    /// `B: [out, r]`.
    pub b: Tensor<2>,
    /// The scale `s` (`[1]`).
    pub scale: Tensor<1>,
    /// `σ1(W0)`, from [`Rora::prepare`].
    pub sigma1_base: f64,
}

impl RoraStats {
    /// The statistics of `model`'s prepared layers. Reads nothing back from the device:
    /// the layers are found as [`Rora::penalty`] finds them (by parameter id).
    pub fn of<M: Module>(rora: &Rora, model: &M) -> Self {
        let factors = rora.layer_factors(model);
        let Some(device) = factors.iter().flatten().next().map(|f| f.a.device()) else {
            return RoraStats {
                omega: None,
                layers: Vec::new(),
            };
        };
        let tensors = rora.tensors_on(&device);
        let mut omega_sum: Option<Tensor<1>> = None;
        let mut layers = Vec::new();
        for (i, f) in factors.into_iter().enumerate() {
            let Some(f) = f else { continue };
            let t = &tensors[i];
            let (a, b) = (f.a.detach(), f.b.detach());
            let o = omega(t.uk.clone(), t.vk.clone(), a.clone(), b.clone());
            omega_sum = Some(match omega_sum {
                Some(s) => s + o,
                None => o,
            });
            let scale = match f.scale {
                Scale::Tensor(s) => (*s).detach(),
                Scale::Constant(s) => Tensor::from_floats([s as f32], &device),
                Scale::Unknown => continue,
            };
            layers.push(LayerStats {
                a,
                b,
                scale,
                sigma1_base: rora.caches()[i].spectrum.sigma1,
            });
        }
        RoraStats {
            omega: omega_sum,
            layers,
        }
    }

    fn sync(self) -> Self {
        RoraStats {
            omega: self.omega.map(|o| o.without_autodiff()),
            layers: self
                .layers
                .into_iter()
                .map(|l| LayerStats {
                    a: l.a.without_autodiff(),
                    b: l.b.without_autodiff(),
                    scale: l.scale.without_autodiff(),
                    sigma1_base: l.sigma1_base,
                })
                .collect(),
        }
    }

    /// `σ1(s·B·A)/σ1(W0)` per layer (host, factored SVD).
    pub fn strength_ratios(&self) -> Vec<f64> {
        self.layers
            .iter()
            .filter_map(|l| {
                let a = tensor_to_dmatrix(l.a.clone());
                let b = tensor_to_dmatrix(l.b.clone());
                let s = l.scale.clone().try_into_scalar::<f64>().ok()?;
                let svd = rora_spectral::factored_svd(&b, &a, s).ok()?;
                let s1 = svd.singular_values.iter().copied().fold(0.0, f64::max);
                Some(s1 / l.sigma1_base.max(f64::MIN_POSITIVE))
            })
            .collect()
    }
}

impl<O: ItemLazy> ItemLazy for RoraOutput<O> {
    fn sync(self) -> Result<Self, burn::tensor::ExecutionError> {
        Ok(RoraOutput {
            task: self.task.sync()?,
            stats: self.stats.sync(),
        })
    }
}

impl<O: Adaptor<LossInput>> Adaptor<LossInput> for RoraOutput<O> {
    fn adapt(&self) -> LossInput {
        self.task.adapt()
    }
}

impl<O: Adaptor<AccuracyInput>> Adaptor<AccuracyInput> for RoraOutput<O> {
    fn adapt(&self) -> AccuracyInput {
        self.task.adapt()
    }
}

impl<O> Adaptor<RoraStats> for RoraOutput<O> {
    fn adapt(&self) -> RoraStats {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::LinearConfig;
    use burn::tensor::{Device, Distribution};

    use super::*;
    use crate::{LoraConfig, LoraLinear, LoraModel, RoraConfig, Targets, inject_lora};

    #[derive(Module, LoraModel, Debug)]
    struct Net {
        q: LoraLinear,
        v: LoraLinear,
    }

    /// The statistics the metrics read agree with RoRA's own report and Ω per layer.
    #[test]
    fn stats_match_the_spectral_report() {
        let device = Device::default();
        let net = Net {
            q: LinearConfig::new(12, 10).init(&device).into(),
            v: LinearConfig::new(12, 12).init(&device).into(),
        };
        let net = inject_lora(
            net,
            &Targets::parse(&["q", "v"]).unwrap(),
            &LoraConfig::new(3, 6.0),
        )
        .unwrap();
        // Non-zero B, so that the update has a strength.
        let b = |out| Tensor::<2>::random([out, 3], Distribution::Normal(0.0, 0.1), &device);
        let (qa, va) = (
            net.q.lora.as_ref().unwrap().a.val(),
            net.v.lora.as_ref().unwrap().a.val(),
        );
        let net = Net {
            q: net.q.with_factors(qa, b(10), 2.0),
            v: net.v.with_factors(va, b(12), 2.0),
        };
        let rora = Rora::prepare(&net, RoraConfig::new().with_top_k(2)).unwrap();
        let stats = RoraStats::of(&rora, &net);
        let report = rora.report(&net).unwrap();
        let ratios = stats.strength_ratios();
        assert_eq!(ratios.len(), 2);
        for (r, layer) in ratios.iter().zip(&report) {
            approx::assert_relative_eq!(*r, layer.strength_ratio, max_relative = 1e-4);
            assert!(*r > 0.0);
        }
        let omega: f64 = rora.omega_per_layer(&net).iter().map(|(_, o)| o).sum();
        let got = stats.omega.unwrap().try_into_scalar::<f64>().unwrap();
        approx::assert_relative_eq!(got, omega, max_relative = 1e-5);
        assert!(omega > 0.0);
    }
}
