//! burn-train's Learner with RoRA, on one device and data parallel on two.
#![cfg(feature = "train")]

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::LinearConfig;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::SgdConfig;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn::train::checkpoint::{Checkpointer, FileCheckpointer};
use burn::train::metric::LossMetric;
use burn::train::{
    ClassificationOutput, ExecutionStrategy, InferenceStep, Learner, MultiDeviceOptim,
    SupervisedTraining,
};
use rora_core::peft::PeftAdapter;
use rora_core::train::{
    AdapterCheckpointer, OmegaMetric, RoraLearner, RoraTask, StrengthRatioMetric,
};
use rora_core::{
    LoraConfig, LoraLinear, LoraModel, Rora, RoraConfig, Targets, inject_lora, load_adapter,
};

#[derive(Module, LoraModel, Debug)]
struct Net {
    body: LoraLinear,
    head: LoraLinear,
}

#[derive(Clone, Debug)]
struct Batch {
    x: Tensor<2>,
    y: Tensor<1, Int>,
}

#[derive(Clone)]
struct ToBatch;

impl Batcher<(Vec<f32>, i64), Batch> for ToBatch {
    fn batch(&self, items: Vec<(Vec<f32>, i64)>, device: &Device) -> Batch {
        let d = items[0].0.len();
        let n = items.len();
        let x: Vec<f32> = items.iter().flat_map(|(x, _)| x.clone()).collect();
        let y: Vec<i64> = items.iter().map(|(_, y)| *y).collect();
        Batch {
            x: Tensor::from_data(TensorData::new(x, [n, d]), device),
            y: Tensor::from_data(TensorData::new(y, [n]), device),
        }
    }
}

impl Net {
    fn classify(&self, batch: Batch) -> ClassificationOutput {
        let logits = self.head.forward(self.body.forward(batch.x).tanh());
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.y.clone());
        ClassificationOutput::new(loss, logits, batch.y)
    }
}

impl RoraTask for Net {
    type Input = Batch;
    type Output = ClassificationOutput;
    fn forward_task(&self, batch: Batch) -> (Tensor<1>, ClassificationOutput) {
        let out = self.classify(batch);
        (out.loss.clone(), out)
    }
}

impl InferenceStep for Net {
    type Input = Batch;
    type Output = ClassificationOutput;
    fn step(&self, batch: Batch) -> ClassificationOutput {
        self.classify(batch)
    }
}

fn items(n: usize, d: usize) -> Vec<(Vec<f32>, i64)> {
    (0..n)
        .map(|i| {
            let x: Vec<f32> = (0..d)
                .map(|j| (((i * 7 + j * 3) % 11) as f32 - 5.0) / 5.0)
                .collect();
            (x, (i % 2) as i64)
        })
        .collect()
}

fn model(device: &Device) -> (Net, Rora) {
    let net = Net {
        body: LinearConfig::new(16, 16).init(device).into(),
        head: LinearConfig::new(16, 2).init(device).into(),
    };
    let targets = Targets::parse(&["body"])
        .unwrap()
        .with_modules_to_save(&["head"])
        .unwrap();
    // No dropout: the two runs must see the same forward pass.
    let net = inject_lora(net, &targets, &LoraConfig::new(4, 8.0)).unwrap();
    let rora = Rora::prepare(&net, RoraConfig::new().with_top_k(4).with_lambda(0.5)).unwrap();
    (net, rora)
}

/// How [`train_in`] trains.
struct Run {
    batch_size: usize,
    lr: f64,
    epochs: usize,
    /// Checkpoint with [`AdapterCheckpointer`] (and burn's `FileCheckpointer`s).
    checkpoints: bool,
    /// Resume from this epoch's checkpoint.
    resume: Option<usize>,
}

impl Run {
    fn epoch(batch_size: usize, lr: f64) -> Self {
        Run {
            batch_size,
            lr,
            epochs: 1,
            checkpoints: false,
            resume: None,
        }
    }
}

/// Train one epoch of 8 items with burn's Learner; the trained wrapper.
fn train(
    strategy: ExecutionStrategy,
    batch_size: usize,
    lr: f64,
    net: Net,
    rora: Rora,
) -> RoraLearner<Net> {
    let dir = tempfile::tempdir().unwrap();
    train_in(dir.path(), strategy, &Run::epoch(batch_size, lr), net, rora)
}

/// Train on 8 items with burn's Learner as `run` says, logging (and checkpointing) under
/// `dir`; the trained wrapper.
fn train_in(
    dir: &std::path::Path,
    strategy: ExecutionStrategy,
    run: &Run,
    net: Net,
    rora: Rora,
) -> RoraLearner<Net> {
    let device = strategy.main_device().clone();
    let train = DataLoaderBuilder::new(ToBatch)
        .batch_size(run.batch_size)
        .set_device(device.clone())
        .build(InMemDataset::new(items(8, 16)));
    let valid = DataLoaderBuilder::new(ToBatch)
        .batch_size(8)
        .set_device(device.clone())
        .build(InMemDataset::new(items(8, 16)));
    let model = RoraLearner::new(net, rora);
    let mut training = SupervisedTraining::new(dir, train, valid)
        .metric_train_numeric(LossMetric::new())
        .metric_train_numeric(OmegaMetric::new())
        .metric_train_numeric(StrengthRatioMetric::new())
        .with_application_logger(None)
        .with_training_strategy(strategy.into())
        .num_epochs(run.epochs);
    if run.checkpoints {
        training = training.with_custom_checkpointers(
            AdapterCheckpointer::new(dir.join("adapter"), &model),
            FileCheckpointer::new(dir.join("checkpoint"), "optim"),
            FileCheckpointer::new(dir.join("checkpoint"), "scheduler"),
        );
    }
    if let Some(epoch) = run.resume {
        training = training.checkpoint(epoch);
    }
    let learner = Learner::new(model, SgdConfig::new().init(), ConstantLr::from(run.lr));
    let result = training.launch(learner);
    assert!(result.error.is_none(), "{:?}", result.error);
    result.model
}

/// `A`, `B` of the adapted layer and the head's weight, flattened.
fn trained(net: &Net) -> Vec<f32> {
    let f = net.body.lora.as_ref().expect("body is adapted");
    let mut v = Vec::new();
    for t in [f.a.val(), f.b.val(), net.head.weight.val()] {
        v.extend(t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
    }
    v
}

#[test]
fn one_step_on_two_devices_equals_one_step_on_one() {
    let device = Device::default().autodiff();
    let (net, rora) = model(&device);
    let before = trained(&net);
    // One device, the whole batch of 8: one SGD step with the mean gradient.
    let one = train(
        ExecutionStrategy::single(device.clone()),
        8,
        0.1,
        net.clone(),
        rora.clone(),
    );
    // Two replicas, 4 items each: burn sums their gradients (twice the mean), so half the
    // learning rate gives the same step.
    let two = train(
        ExecutionStrategy::multi(
            vec![device.clone(), device.clone()],
            MultiDeviceOptim::OptimMainDevice,
        ),
        4,
        0.05,
        net,
        rora,
    );
    let (one_v, two_v) = (trained(&one.model), trained(&two.model));
    let moved = one_v
        .iter()
        .zip(&before)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(moved > 1e-4, "the step changed the factors ({moved})");
    for (i, (a, b)) in one_v.iter().zip(&two_v).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 + 1e-4 * a.abs(),
            "param {i}: {a} vs {b}"
        );
    }
    // Pt, once, on the main device's model: both give the same rescaled factors.
    let (one_pt, one_report) = one.finish().unwrap();
    let (two_pt, two_report) = two.finish().unwrap();
    assert_eq!(one_report.layers.len(), two_report.layers.len());
    for (a, b) in trained(&one_pt).iter().zip(&trained(&two_pt)) {
        assert!((a - b).abs() <= 1e-5 + 1e-4 * a.abs());
    }
}

/// The Learner's checkpoints with [`AdapterCheckpointer`]: a PEFT adapter folder holding the
/// trained factors (and nothing of the frozen weights), the head beside it, and a restore
/// that gives back the trained model from a fresh one.
#[test]
fn adapter_checkpoints_hold_the_trained_factors_and_head() {
    let device = Device::default().autodiff();
    let (net, rora) = model(&device);
    let dir = tempfile::tempdir().unwrap();
    let template = RoraLearner::new(net.clone(), rora.clone());
    let run = Run {
        checkpoints: true,
        ..Run::epoch(8, 0.1)
    };
    let trained_model = train_in(
        dir.path(),
        ExecutionStrategy::single(device.clone()),
        &run,
        net.clone(),
        rora,
    );
    let epoch = dir.path().join("adapter").join("epoch-1");
    // The PEFT folder: only the adapted layer's factors, at the inner model's paths.
    let adapter = PeftAdapter::read(&epoch).unwrap();
    assert_eq!(adapter.layers.keys().collect::<Vec<_>>(), vec!["body"]);
    assert!(epoch.join("trainable.bpk").exists());
    // Loading the PEFT file alone into the untrained model gives the trained factors
    // (the head stays untrained: it is not part of the adapter).
    let loaded = load_adapter(net.clone(), &epoch, &Default::default()).unwrap();
    let want = trained(&trained_model.model);
    let got = trained(&loaded);
    let n_factors = 4 * 16 + 16 * 4;
    assert_eq!(&got[..n_factors], &want[..n_factors]);
    assert_ne!(&trained(&net)[..n_factors], &want[..n_factors]);
    // restore: the factors from the PEFT file and the head from trainable.bpk.
    let checkpointer = AdapterCheckpointer::new(dir.path().join("adapter"), &template);
    assert_eq!(
        checkpointer.other_trainable(),
        ["model.head.weight", "model.head.bias"]
    );
    let restored = template
        .clone()
        .load_record(checkpointer.restore(1).unwrap());
    assert_eq!(trained(&restored.model), want);
    assert_ne!(trained(&net)[n_factors..], want[n_factors..]);
    // A missing epoch is an error, and delete removes the folder.
    assert!(checkpointer.restore(2).is_err());
    checkpointer.delete(1).unwrap();
    assert!(!epoch.exists());
}

/// burn's resume goes through [`AdapterCheckpointer::restore`]: two epochs in one run give
/// the factors and head of one epoch, a checkpoint, and a second run resumed from it
/// (which starts from the untrained model and must restore the trained state).
#[test]
fn resuming_from_an_adapter_checkpoint_continues_the_run() {
    let device = Device::default().autodiff();
    let (net, rora) = model(&device);
    let single = || ExecutionStrategy::single(device.clone());
    let straight = tempfile::tempdir().unwrap();
    let two = Run {
        epochs: 2,
        ..Run::epoch(4, 0.1)
    };
    let want = trained(&train_in(straight.path(), single(), &two, net.clone(), rora.clone()).model);

    let dir = tempfile::tempdir().unwrap();
    let first = Run {
        checkpoints: true,
        ..Run::epoch(4, 0.1)
    };
    let after_one =
        trained(&train_in(dir.path(), single(), &first, net.clone(), rora.clone()).model);
    let resumed = Run {
        epochs: 2,
        checkpoints: true,
        resume: Some(1),
        ..Run::epoch(4, 0.1)
    };
    let got = trained(&train_in(dir.path(), single(), &resumed, net, rora).model);
    let differs = |x: &[f32], y: &[f32]| x.iter().zip(y).any(|(a, b)| (a - b).abs() > 1e-4);
    assert!(
        differs(&after_one, &want),
        "the second epoch moved the parameters"
    );
    for (i, (a, b)) in want.iter().zip(&got).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 + 1e-4 * a.abs(),
            "param {i}: {a} (straight) vs {b} (resumed)"
        );
    }
}
