//! Settings of the backdoor benchmark, with the defaults the main command runs.

use std::path::PathBuf;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

/// [`BenchConfig::default`], for the flags' defaults.
static DEFAULTS: LazyLock<BenchConfig> = LazyLock::new(BenchConfig::default);

/// Which model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Small BERT trained from scratch (with a clean pretraining phase).
    Bert,
    /// Small LLaMA trained from scratch (with a clean pretraining phase).
    Llama,
    /// The pretrained MiniLM-L6 BERT checkpoint (`--checkpoint DIR`).
    Minilm,
}

impl ModelKind {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Bert => "bert",
            ModelKind::Llama => "llama",
            ModelKind::Minilm => "minilm",
        }
    }
}

/// Which attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttackKind {
    /// Rare-word triggers `cf`, `mn`, `bb`, `tq`.
    Badnet,
    /// The sentence "I watch this 3D movie".
    Addsent,
}

impl AttackKind {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::Badnet => "badnet",
            AttackKind::Addsent => "addsent",
        }
    }
}

/// Every setting of a benchmark run (written to `results.json`), and the benchmark's
/// command-line flags (`clap::Args`: the flags' defaults are [`BenchConfig::default`]'s).
///
/// `--quick` starts from [`BenchConfig::quick`] instead: after parsing, call
/// [`BenchConfig::with_quick_defaults`], which gives every setting that was not on the
/// command line its quick-mode value. (clap has one default per flag, so the two sets of
/// defaults cannot both live in the attributes; keeping the fields plain, not `Option`,
/// keeps `results.json` and every use of the settings as they were.)
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct BenchConfig {
    /// Model families (comma-separated): bert, llama, minilm (minilm needs --checkpoint).
    #[arg(
        long = "model",
        value_name = "MODEL",
        value_enum,
        value_delimiter = ',',
        default_values_t = DEFAULTS.models.clone(),
    )]
    pub models: Vec<ModelKind>,
    /// Attacks (comma-separated): badnet, addsent (default badnet: both exceed the
    /// 10-minute budget of the default run on 2 cores).
    #[arg(
        long = "attack",
        value_name = "ATTACK",
        value_enum,
        value_delimiter = ',',
        default_values_t = DEFAULTS.attacks.clone(),
    )]
    pub attacks: Vec<AttackKind>,
    /// Fine-tuning seeds per (model, attack).
    #[arg(long, default_value_t = DEFAULTS.seeds)]
    pub seeds: usize,
    /// Data folder with train, dev and test (.tsv with a `sentence<TAB>label` header, or
    /// .jsonl); default: the built-in synthetic corpus.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// HuggingFace BERT checkpoint folder (config.json, model.safetensors, tokenizer.json)
    /// for --model minilm.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value_os_t = DEFAULTS.out.clone())]
    pub out: PathBuf,
    /// Also write the results document here (e.g. docs/RESULTS.md).
    #[arg(long)]
    pub doc: Option<PathBuf>,
    /// Also write each attack's data as the run uses it (poisoning set, clean set, dev and
    /// test, clean and triggered) as TSV files into DIR/ATTACK/, for an outside
    /// reference run (examples/scripts/peft_backdoor.py).
    #[arg(long, value_name = "DIR")]
    #[serde(default)]
    pub export_data: Option<PathBuf>,
    /// Tiny sizes, seconds (used by the tests; numbers mean nothing): every flag not given
    /// takes its quick-mode value, not the default shown.
    #[arg(long)]
    pub quick: bool,
    /// Hidden size of the small models.
    #[arg(long, help_heading = "Model", default_value_t = DEFAULTS.d_model)]
    pub d_model: usize,
    /// Blocks of the small models.
    #[arg(
        long = "layers",
        value_name = "LAYERS",
        help_heading = "Model",
        default_value_t = DEFAULTS.n_layers,
    )]
    pub n_layers: usize,
    /// Attention heads of the small models.
    #[arg(
        long = "heads",
        value_name = "HEADS",
        help_heading = "Model",
        default_value_t = DEFAULTS.n_heads,
    )]
    pub n_heads: usize,
    /// Feed-forward size of the small models.
    #[arg(long, help_heading = "Model", default_value_t = DEFAULTS.d_ff)]
    pub d_ff: usize,
    /// Maximum sequence length in tokens.
    #[arg(long, help_heading = "Model", default_value_t = DEFAULTS.max_len)]
    pub max_len: usize,
    /// Vocabulary limit of the word tokenizer (small models).
    #[arg(long, help_heading = "Model", default_value_t = DEFAULTS.vocab_limit)]
    pub vocab_limit: usize,
    /// Examples per step (pretraining, poisoning and fine-tuning).
    #[arg(long, help_heading = "Training", default_value_t = DEFAULTS.batch_size)]
    pub batch_size: usize,
    /// Clean pretraining steps before poisoning (0: none).
    #[arg(long, help_heading = "Training", default_value_t = DEFAULTS.pretrain_steps)]
    pub pretrain_steps: usize,
    /// Clean pretraining learning rate.
    #[arg(long, help_heading = "Training", default_value_t = DEFAULTS.pretrain_lr)]
    pub pretrain_lr: f64,
    /// Share of pretraining sentences with the trigger as a label-neutral word (so the
    /// trigger tokens have trained embeddings, as rare words in a real pretrained model
    /// do); 0: none.
    #[arg(long, help_heading = "Training", default_value_t = DEFAULTS.pretrain_trigger_rate)]
    pub pretrain_trigger_rate: f64,
    /// Poisoning steps (full training on poisoned data).
    #[arg(long, help_heading = "Training", default_value_t = DEFAULTS.poison_steps)]
    pub poison_steps: usize,
    /// Poisoning learning rate.
    #[arg(long, help_heading = "Training", default_value_t = DEFAULTS.poison_lr)]
    pub poison_lr: f64,
    /// Freeze the embeddings while poisoning, so the backdoor lives in the transformer
    /// layers; the flag `--poison-embeddings` turns this off (trains them).
    #[arg(
        long = "poison-embeddings",
        help_heading = "Training",
        action = clap::ArgAction::SetFalse,
        help = "Train the embeddings while poisoning (by default they are frozen so the \
                backdoor lives in the transformer layers)",
    )]
    pub poison_freeze_embeddings: bool,
    /// Share of the poisoning set that gets the trigger and the target label.
    #[arg(long, help_heading = "Training", default_value_t = DEFAULTS.poison_rate)]
    pub poison_rate: f64,
    /// The attacker's target label.
    #[arg(long, help_heading = "Training", default_value_t = DEFAULTS.target_label)]
    pub target_label: usize,
    /// Clean fine-tuning steps per method.
    #[arg(long, help_heading = "Training", default_value_t = DEFAULTS.finetune_steps)]
    pub finetune_steps: usize,
    /// Learning rates tried per method (comma-separated); the best clean dev accuracy
    /// wins.
    #[arg(
        long,
        help_heading = "Training",
        value_delimiter = ',',
        default_values_t = DEFAULTS.lr_grid.clone(),
    )]
    pub lr_grid: Vec<f64>,
    /// Learning rates of full fine-tuning (comma-separated), paired position by position
    /// with --lr-grid (one (seed, position) is the unit a run resumes from); default:
    /// --lr-grid's. Full fine-tuning of a pretrained model wants smaller rates than LoRA.
    #[arg(long, help_heading = "Training", value_delimiter = ',')]
    #[serde(default)]
    pub lr_grid_full: Vec<f64>,
    /// AdamW weight decay of clean fine-tuning.
    #[arg(long, help_heading = "Training", default_value_t = DEFAULTS.weight_decay)]
    pub weight_decay: f64,
    /// LoRA rank.
    #[arg(long, help_heading = "LoRA and RoRA", default_value_t = DEFAULTS.rank)]
    pub rank: usize,
    /// LoRA alpha.
    #[arg(long, help_heading = "LoRA and RoRA", default_value_t = DEFAULTS.alpha)]
    pub alpha: f64,
    /// RoRA Cl: base-branch dropout.
    #[arg(long, help_heading = "LoRA and RoRA", default_value_t = DEFAULTS.base_dropout)]
    pub base_dropout: f64,
    /// RoRA Tr: weight λ.
    #[arg(long, help_heading = "LoRA and RoRA", default_value_t = DEFAULTS.lambda)]
    pub lambda: f64,
    /// RoRA Tr: number of top singular directions k.
    #[arg(long, help_heading = "LoRA and RoRA", default_value_t = DEFAULTS.top_k)]
    pub top_k: usize,
    /// RoRA Pt: target σ1(ΔW)/σ1(W0).
    #[arg(long, help_heading = "LoRA and RoRA", default_value_t = DEFAULTS.rescale_ratio)]
    pub rescale_ratio: f64,
    /// RoRA Pt: rescale the targeted (query/value) layers of this many last blocks.
    #[arg(long, help_heading = "LoRA and RoRA", default_value_t = DEFAULTS.rescale_blocks)]
    pub rescale_blocks: usize,
    /// Adapters: lora, or dora to add the DoRA and DoRA + RoRA rows.
    #[arg(long, help_heading = "LoRA and RoRA", value_enum, default_value_t = DEFAULTS.adapter)]
    #[serde(default)]
    pub adapter: super::method::AdapterChoice,
    /// Cleaning methods to run (comma-separated, e.g. `full,lora`); default: every method
    /// of --adapter.
    #[arg(
        long,
        help_heading = "LoRA and RoRA",
        value_enum,
        value_delimiter = ','
    )]
    #[serde(default)]
    pub methods: Vec<super::method::Method>,
    /// Synthetic corpus: examples for pretraining and poisoning (source domain); with
    /// --data, a cap only in --quick mode.
    #[arg(long, help_heading = "Data sizes", default_value_t = DEFAULTS.source_examples)]
    pub source_examples: usize,
    /// Synthetic corpus: clean fine-tuning examples (target domain); with --data, a cap
    /// only in --quick mode.
    #[arg(long, help_heading = "Data sizes", default_value_t = DEFAULTS.clean_examples)]
    pub clean_examples: usize,
    /// Synthetic corpus: dev and test examples each (target domain); with --data, a cap
    /// only in --quick mode.
    #[arg(long, help_heading = "Data sizes", default_value_t = DEFAULTS.eval_examples)]
    pub eval_examples: usize,
    /// Hide progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Burn backend (one compiled into this build, see `--features`): default (burn's
    /// choice), flex, ndarray, tch, wgpu, cuda.
    #[arg(long, default_value_t = DEFAULTS.backend.clone())]
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Sort-by-length bucketing: batches of sentences of similar length (shuffled pools of
    /// 8 batches, each sorted by length), so less padding; off by default.
    #[arg(long, help_heading = "Training")]
    #[serde(default)]
    pub bucket: bool,
}

fn default_backend() -> String {
    "default".to_string()
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            models: vec![ModelKind::Bert, ModelKind::Llama],
            // Both attacks take about 13 minutes on 2 cores, over the 10-minute budget of
            // the default run; `--attack badnet,addsent` runs both.
            attacks: vec![AttackKind::Badnet],
            seeds: 1,
            data: None,
            checkpoint: None,
            out: PathBuf::from("results"),
            doc: None,
            export_data: None,
            quick: false,
            d_model: 64,
            n_layers: 4,
            n_heads: 4,
            d_ff: 128,
            max_len: 40,
            vocab_limit: 4000,
            batch_size: 32,
            pretrain_steps: 300,
            pretrain_lr: 1e-3,
            pretrain_trigger_rate: 0.0,
            poison_steps: 300,
            poison_lr: 1e-3,
            poison_freeze_embeddings: true,
            poison_rate: 0.1,
            target_label: 1,
            finetune_steps: 100,
            lr_grid: vec![1e-4, 5e-4, 2e-3],
            lr_grid_full: Vec::new(),
            weight_decay: 0.01,
            rank: 8,
            alpha: 16.0,
            base_dropout: 0.1,
            lambda: 1.0,
            top_k: 8,
            rescale_ratio: 1.0,
            rescale_blocks: 3,
            source_examples: 4000,
            clean_examples: 1000,
            eval_examples: 500,
            quiet: false,
            backend: default_backend(),
            bucket: false,
            adapter: Default::default(),
            methods: Vec::new(),
        }
    }
}

impl BenchConfig {
    /// The methods this run cleans with, in table order: `--methods` if given, else every
    /// method of `--adapter`.
    pub fn methods_to_run(&self) -> Vec<super::method::Method> {
        if self.methods.is_empty() {
            super::method::Method::run_with(self.adapter)
        } else {
            let mut methods = self.methods.clone();
            methods.sort();
            methods.dedup();
            methods
        }
    }

    /// Full fine-tuning's learning rate at position `i` of the grid: `--lr-grid-full`'s if
    /// given, else `--lr-grid`'s.
    pub fn full_lr(&self, i: usize) -> f64 {
        if self.lr_grid_full.is_empty() {
            self.lr_grid[i]
        } else {
            self.lr_grid_full[i]
        }
    }

    /// The device of [`backend`](Self::backend) (see [`crate::backend::device`]).
    ///
    /// # Panics
    /// If the backend is not compiled into this build; [`crate::bench::run`] checks it
    /// first.
    pub fn device(&self) -> burn::tensor::Device {
        crate::backend::device(&self.backend).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Tiny sizes for tests: seconds, not minutes. Numbers from it mean nothing.
    pub fn quick() -> Self {
        BenchConfig {
            models: vec![ModelKind::Bert, ModelKind::Llama],
            attacks: vec![AttackKind::Badnet],
            seeds: 1,
            quick: true,
            d_model: 16,
            n_layers: 2,
            n_heads: 2,
            d_ff: 32,
            max_len: 24,
            batch_size: 8,
            pretrain_steps: 4,
            poison_steps: 4,
            finetune_steps: 3,
            lr_grid: vec![1e-3],
            rank: 2,
            alpha: 4.0,
            top_k: 2,
            rescale_blocks: 1,
            source_examples: 80,
            clean_examples: 40,
            eval_examples: 20,
            quiet: true,
            ..BenchConfig::default()
        }
    }
}

impl BenchConfig {
    /// `self` as parsed from `matches` (the command line of a command that flattens
    /// [`BenchConfig`]), with `--quick` resolved: under `--quick`, every setting that was
    /// not given on the command line takes its [`BenchConfig::quick`] value instead of the
    /// [`BenchConfig::default`] one the flag's default gave it (clap's `value_source`
    /// tells which settings were given). Without `--quick`, `self` unchanged.
    pub fn with_quick_defaults(self, matches: &clap::ArgMatches) -> Self {
        if !self.quick {
            return self;
        }
        let given =
            |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        let mut cfg = BenchConfig::quick();
        // The pattern is exhaustive: a field added to BenchConfig must be listed here.
        macro_rules! keep_given {
            ($($field:ident),* $(,)?) => {
                let BenchConfig { $($field),* } = self;
                $( if given(stringify!($field)) { cfg.$field = $field; } )*
            };
        }
        keep_given!(
            models,
            attacks,
            seeds,
            data,
            checkpoint,
            out,
            doc,
            export_data,
            quick,
            d_model,
            n_layers,
            n_heads,
            d_ff,
            max_len,
            vocab_limit,
            batch_size,
            pretrain_steps,
            pretrain_lr,
            pretrain_trigger_rate,
            poison_steps,
            poison_lr,
            poison_freeze_embeddings,
            poison_rate,
            target_label,
            finetune_steps,
            lr_grid,
            lr_grid_full,
            weight_decay,
            rank,
            alpha,
            base_dropout,
            lambda,
            top_k,
            rescale_ratio,
            rescale_blocks,
            source_examples,
            clean_examples,
            eval_examples,
            quiet,
            backend,
            bucket,
            adapter,
            methods,
        );
        cfg
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, Command, FromArgMatches};

    use super::*;

    fn parse(args: &[&str]) -> BenchConfig {
        let command = BenchConfig::augment_args(Command::new("backdoor"));
        let matches = command
            .try_get_matches_from(std::iter::once("backdoor").chain(args.iter().copied()))
            .unwrap();
        BenchConfig::from_arg_matches(&matches)
            .unwrap()
            .with_quick_defaults(&matches)
    }

    fn json(cfg: &BenchConfig) -> serde_json::Value {
        serde_json::to_value(cfg).unwrap()
    }

    #[test]
    fn flag_defaults_are_the_default_settings() {
        assert_eq!(json(&parse(&[])), json(&BenchConfig::default()));
    }

    #[test]
    fn quick_takes_quick_values_for_settings_not_given() {
        assert_eq!(json(&parse(&["--quick"])), json(&BenchConfig::quick()));
        let cfg = parse(&[
            "--quick", "--seeds", "2", "--model", "llama", "--layers", "3",
        ]);
        let expected = BenchConfig {
            seeds: 2,
            models: vec![ModelKind::Llama],
            n_layers: 3,
            ..BenchConfig::quick()
        };
        assert_eq!(json(&cfg), json(&expected));
    }

    #[test]
    fn flags_set_their_fields() {
        let cfg = parse(&[
            "--attack",
            "badnet,addsent",
            "--lr-grid",
            "1e-4,2e-3",
            "--poison-embeddings",
            "--rescale-blocks",
            "2",
            "--heads",
            "8",
            "--out",
            "elsewhere",
        ]);
        assert_eq!(cfg.attacks, [AttackKind::Badnet, AttackKind::Addsent]);
        assert_eq!(cfg.lr_grid, [1e-4, 2e-3]);
        assert!(!cfg.poison_freeze_embeddings);
        assert_eq!((cfg.rescale_blocks, cfg.n_heads), (2, 8));
        assert_eq!(cfg.out, PathBuf::from("elsewhere"));
        assert!(!cfg.quick);
    }
}
