//! Fine-tune with RoRA through burn-train's `Learner`, on one device or several.
//!
//! A small BERT is first trained on a BadNet-poisoned half of SST-2 (the attacker's
//! model), then fine-tuned on the clean other half by burn's `Learner`, twice: with plain
//! LoRA (the baseline), and with LoRA + RoRA (Cl in the adapters, Tr in the step, Ω and the
//! strength ratio among the metrics), then rescaled (Pt). It prints clean accuracy (CA) and
//! attack success rate (ASR) of each.
//!
//! Run: `cargo run --release -p rora-examples --bin learner`
//! (`--devices 2` trains data parallel with burn's `ExecutionStrategy::MultiDevice`;
//! `--devices 2 --ddp` with `ExecutionStrategy::ddp`, which needs the `cuda` backend).
use std::path::PathBuf;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::AdamWConfig;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::tensor::distributed::{DistributedConfig, ReduceOperation};
use burn::tensor::{Device, Int, Tensor};
use burn::train::checkpoint::FileCheckpointer;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{
    ClassificationOutput, ExecutionStrategy, InferenceStep, Learner, MultiDeviceOptim,
    SupervisedTraining,
};
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rora::core::train::{
    AdapterCheckpointer, OmegaMetric, RoraLearner, RoraTask, StrengthRatioMetric,
};
use rora::{LayerSelection, LoraConfig, Rora, RoraConfig, Targets};
use rora_examples::attacks::{Attack, BadNet, PoisonConfig, poison, triggered_test};
use rora_examples::data::{TextEncoder, WordTokenizer, data_dir, load_dir};
use rora_examples::metrics::{accuracy, attack_success_rate};
use rora_examples::models::{Bert, BertConfig, SequenceClassifier};
use rora_examples::renderer::EpochRenderer;
use rora_examples::train::{Encoded, TrainSettings, predict, train};

#[derive(Parser, Debug)]
#[command(about = "LoRA + RoRA fine-tuning with burn-train's Learner")]
struct Args {
    /// Sentences in each half of the training set (the attacker's: pretraining and
    /// poisoning; the defender's: clean fine-tuning).
    #[arg(long, default_value_t = 3000)]
    examples: usize,
    /// Clean fine-tuning epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Devices for data parallel training: replicas on copies of the default device (on a
    /// machine with several GPUs, list one device per GPU instead, e.g. `Device::cuda(i)`).
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// With `--devices`: burn's distributed data parallel (`ExecutionStrategy::ddp`, an
    /// all-reduce of the gradients) instead of `MultiDevice`. Needs the `cuda` backend:
    /// burn 0.22 has collective operations on no other.
    #[arg(long)]
    ddp: bool,
    /// Where the Learner writes its logs.
    #[arg(long, default_value = "target/learner")]
    out: PathBuf,
}

/// A batch of token ids `[b, t]`, padding mask `[b, t]` and labels `[b]`.
#[derive(Clone, Debug)]
struct Batch {
    tokens: Tensor<2, Int>,
    mask: Tensor<2>,
    labels: Tensor<1, Int>,
}

/// Batches (token ids, label) pairs, padded to the longest.
#[derive(Clone)]
struct SentenceBatcher;

impl Batcher<(Vec<u32>, usize), Batch> for SentenceBatcher {
    fn batch(&self, items: Vec<(Vec<u32>, usize)>, device: &Device) -> Batch {
        let (ids, labels): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        let set = Encoded { ids, labels };
        let idx: Vec<usize> = (0..set.len()).collect();
        let (tokens, mask, labels) = set.batch(&idx, device);
        Batch {
            tokens,
            mask,
            labels,
        }
    }
}

/// The classifier the Learner trains: BERT plus its loss.
#[derive(Module, Debug)]
struct Classifier {
    bert: Bert,
}

impl Classifier {
    fn classify(&self, batch: Batch) -> ClassificationOutput {
        let logits = self.bert.logits(batch.tokens, batch.mask);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.labels.clone());
        ClassificationOutput::new(loss, logits, batch.labels)
    }
}

// 1. The training forward pass (RoraLearner adds RoRA's penalty to the loss) ...
impl RoraTask for Classifier {
    type Input = Batch;
    type Output = ClassificationOutput;
    fn forward_task(&self, batch: Batch) -> (Tensor<1>, ClassificationOutput) {
        let out = self.classify(batch);
        (out.loss.clone(), out)
    }
}

// ... and validation, as for any burn-train model.
impl InferenceStep for Classifier {
    type Input = Batch;
    type Output = ClassificationOutput;
    fn step(&self, batch: Batch) -> ClassificationOutput {
        self.classify(batch)
    }
}

fn scores(model: &Bert, test: &Encoded, triggered: &Encoded, target: usize) -> (f64, f64) {
    let ca = accuracy(&predict(model, test, 64), &test.labels);
    let asr = attack_success_rate(&predict(model, triggered, 64), target);
    (100.0 * ca, 100.0 * asr)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = Device::default().autodiff();

    // The data: SST-2's training split in two halves, one poisoned by the attacker.
    let mut splits = load_dir(data_dir().join("sst2"))?;
    splits.train.shuffle(&mut StdRng::seed_from_u64(0));
    let n = args.examples.min(splits.train.len() / 2);
    let clean = splits.train.split_off(splits.train.len() - n);
    splits.train.truncate(n);
    let attack = Attack::BadNet(BadNet::default());
    let target = PoisonConfig::default().target_label;
    let poisoned = poison(&splits.train, &attack, &PoisonConfig::default());
    let triggers = attack.trigger_tokens();
    let extra: Vec<&str> = triggers.iter().map(String::as_str).collect();
    let words = WordTokenizer::build(
        poisoned.iter().chain(&clean).map(|e| e.sentence.as_str()),
        8000,
        &extra,
    );
    let encoder = TextEncoder::Word(words);
    let max_len = 64;
    let encode = |e: &[rora_examples::data::Example]| Encoded::new(e, &encoder, max_len);
    let test = encode(&splits.test);
    let triggered = encode(&triggered_test(&splits.test, &attack, target, 8));

    // The attacker's model, as the benchmark makes it (hand-written loops): a small BERT
    // trained on the attacker's half clean, then on the same half poisoned with the
    // embeddings frozen (the backdoor lives in the layers LoRA adapts, as in a real
    // pretrained model; see docs/BENCHMARK.md).
    device.seed(0);
    let bert = BertConfig::new(encoder.vocab_size()).init(&device);
    let settings = |seed| TrainSettings {
        steps: 3 * n / 32,
        batch_size: 32,
        lr: 1e-3,
        weight_decay: 0.01,
        seed,
        bucket: true,
    };
    let bert = train(
        bert,
        &encode(&splits.train),
        &settings(1),
        None,
        "pretraining",
        false,
    );
    let bert = train(
        bert.freeze_embeddings(),
        &encode(&poisoned),
        &settings(3),
        None,
        "poisoning",
        false,
    );
    let (ca, asr) = scores(&bert, &test, &triggered, target);
    println!("poisoned model:        CA {ca:5.1}  ASR {asr:5.1}");

    let clean = encode(&clean);
    let dev = encode(&splits.dev);

    // The baseline: plain LoRA through the same Learner (no Cl, λ = 0, no Pt).
    let lora = LoraConfig::new(8, 16.0);
    let baseline = fine_tune(
        bert.clone(),
        &lora,
        RoraConfig::plain_lora(),
        &clean,
        &dev,
        &args,
        "lora",
    )?;
    let (ca, asr) = scores(&baseline.model.bert, &test, &triggered, target);
    println!("LoRA:                  CA {ca:5.1}  ASR {asr:5.1}");

    // RoRA: base-branch dropout (Cl) in the adapters, the constraint (Tr) in the step, and
    // Pt on query and value of the last three blocks (the paper's choice for BERT).
    let selection = LayerSelection::patterns(["query", "value"]).with_last_blocks(3);
    let config = RoraConfig::new().with_rescale_layers(selection);
    let trained = fine_tune(
        bert,
        &lora.with_base_dropout(0.1),
        config,
        &clean,
        &dev,
        &args,
        "rora",
    )?;
    let (ca, asr) = scores(&trained.model.bert, &test, &triggered, target);
    println!("LoRA + Cl + Tr:        CA {ca:5.1}  ASR {asr:5.1}");

    // 4. Pt, once, after training.
    let (classifier, report) = trained.finish()?;
    print!("{report}");
    let (ca, asr) = scores(&classifier.bert, &test, &triggered, target);
    println!("RoRA (Cl + Tr + Pt):   CA {ca:5.1}  ASR {asr:5.1}");
    // The rescaled adapter, for PEFT or `rora merge` (the trained head is in the epoch
    // checkpoints' trainable.bpk: PEFT files here hold the adapters only).
    let out = args.out.join("rora").join("rescaled");
    rora::save_adapter(&classifier.bert, &out, &Default::default())?;
    println!("rescaled adapter (PEFT format): {}", out.display());
    Ok(())
}

/// Fine-tune `bert` on `clean` with burn-train's Learner: LoRA (`lora`) on the default
/// targets with the head trainable, RoRA (`config`) prepared on the frozen weights. Logs and
/// adapter checkpoints go to `<out>/<name>`.
fn fine_tune(
    bert: Bert,
    lora: &LoraConfig,
    config: RoraConfig,
    clean: &Encoded,
    dev: &Encoded,
    args: &Args,
    name: &str,
) -> Result<RoraLearner<Classifier>, Box<dyn std::error::Error>> {
    let device = Device::default().autodiff();
    let dir = args.out.join(name);
    // 2. LoRA on query/value (base-branch dropout Cl is a setting of `lora`), the head
    //    trainable; RoRA's subspaces (for Tr and Pt) computed on the frozen weights.
    let targets =
        Targets::parse(&Bert::default_targets())?.with_modules_to_save(&[Bert::head()])?;
    let bert = rora::inject_lora(bert.freeze_embeddings(), &targets, lora)?;
    let classifier = Classifier { bert };
    let rora = Rora::prepare(&classifier, config)?;

    // 3. burn-train: the wrapper, data loaders, the Learner, RoRA's metrics.
    let items = |set: &Encoded| {
        InMemDataset::new(
            set.ids
                .iter()
                .cloned()
                .zip(set.labels.iter().copied())
                .collect(),
        )
    };
    let loader_train = DataLoaderBuilder::new(SentenceBatcher)
        .batch_size(32)
        .shuffle(0)
        .build(items(clean));
    let loader_valid = DataLoaderBuilder::new(SentenceBatcher)
        .batch_size(64)
        .build(items(dev));
    let model = RoraLearner::new(classifier, rora);
    // Checkpoints hold the adapters in PEFT's format (and the head), not the whole model.
    let checkpointer = AdapterCheckpointer::new(dir.join("adapter"), &model);
    let learner = Learner::new(
        model,
        AdamWConfig::new().with_weight_decay(0.01).init(),
        ConstantLr::from(1e-3),
    );
    let devices = vec![device.clone(); args.devices.max(1)];
    let strategy = if args.ddp {
        let config = DistributedConfig {
            all_reduce_op: ReduceOperation::Mean,
        };
        ExecutionStrategy::ddp(devices, config)
    } else if args.devices > 1 {
        ExecutionStrategy::multi(devices, MultiDeviceOptim::OptimMainDevice)
    } else {
        ExecutionStrategy::single(device)
    };
    let result = SupervisedTraining::new(&dir, loader_train, loader_valid)
        .metrics((LossMetric::new(), AccuracyMetric::new()))
        .metric_train_numeric(OmegaMetric::new())
        .metric_train_numeric(StrengthRatioMetric::new())
        .with_custom_checkpointers(
            checkpointer,
            FileCheckpointer::new(dir.join("checkpoint"), "optim"),
            FileCheckpointer::new(dir.join("checkpoint"), "scheduler"),
        )
        .renderer(Box::new(EpochRenderer::new(name)))
        .with_training_strategy(strategy.into())
        .num_epochs(args.epochs)
        .launch(learner);
    match result.error {
        Some(e) => Err(format!("training ({name}) failed: {e}").into()),
        None => Ok(result.model),
    }
}
