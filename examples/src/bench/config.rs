//! Settings of the backdoor benchmark, with the defaults the main command runs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

/// Every setting of a benchmark run (written to `results.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchConfig {
    /// Model families to run.
    pub models: Vec<ModelKind>,
    /// Attacks to run.
    pub attacks: Vec<AttackKind>,
    /// Fine-tuning seeds per (model, attack).
    pub seeds: usize,
    /// Real data folder (`train`, `dev`, `test`); `None` = the built-in synthetic corpus.
    pub data: Option<PathBuf>,
    /// HF BERT checkpoint folder for `minilm`.
    pub checkpoint: Option<PathBuf>,
    /// Output folder.
    pub out: PathBuf,
    /// Also write the results document here (e.g. `docs/RESULTS.md`).
    pub doc: Option<PathBuf>,
    /// Tiny sizes (tests).
    pub quick: bool,
    /// Hidden size of the small models.
    pub d_model: usize,
    /// Blocks of the small models.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Feed-forward size.
    pub d_ff: usize,
    /// Longest input in tokens.
    pub max_len: usize,
    /// Vocabulary limit of the word tokenizer.
    pub vocab_limit: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Steps of clean pretraining (0: none).
    pub pretrain_steps: usize,
    /// Learning rate of pretraining.
    pub pretrain_lr: f64,
    /// Share of pretraining sentences that contain the trigger as a label-neutral word
    /// (so the trigger tokens have trained embeddings, as rare words in a real pretrained
    /// model do); 0: none.
    pub pretrain_trigger_rate: f64,
    /// Steps of poisoning (full training on poisoned data).
    pub poison_steps: usize,
    /// Learning rate of poisoning.
    pub poison_lr: f64,
    /// Freeze the embeddings while poisoning, so the backdoor lives in the layers.
    pub poison_freeze_embeddings: bool,
    /// Share of the poisoning set that is poisoned.
    pub poison_rate: f64,
    /// The attacker's target label.
    pub target_label: usize,
    /// Steps of clean fine-tuning (every method).
    pub finetune_steps: usize,
    /// Learning rates tried for every method; the best clean dev accuracy wins.
    pub lr_grid: Vec<f64>,
    /// AdamW weight decay of fine-tuning.
    pub weight_decay: f64,
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha.
    pub alpha: f64,
    /// RoRA Cl: base-branch dropout.
    pub base_dropout: f64,
    /// RoRA Tr: λ.
    pub lambda: f64,
    /// RoRA Tr: k.
    pub top_k: usize,
    /// RoRA Pt: target ratio σ1(ΔW)/σ1(W0).
    pub rescale_ratio: f64,
    /// RoRA Pt: rescale the query/value layers of this many last blocks.
    pub rescale_blocks: usize,
    /// Synthetic corpus: examples for pretraining and poisoning (source domain).
    pub source_examples: usize,
    /// Synthetic corpus: clean fine-tuning examples (target domain).
    pub clean_examples: usize,
    /// Synthetic corpus: dev and test examples (target domain).
    pub eval_examples: usize,
    /// Hide progress bars.
    pub quiet: bool,
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
        }
    }
}

impl BenchConfig {
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
