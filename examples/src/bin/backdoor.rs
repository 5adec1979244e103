//! The backdoor benchmark: poison a model, clean it with full fine-tuning, LoRA, RoRA and
//! RoRA's ablations, and report clean accuracy (CA) and attack success rate (ASR).
//!
//! `cargo run --release -p rora-examples --bin backdoor` runs the built-in defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rora_examples::bench::{self, AttackKind, BenchConfig, ModelKind};

/// Does LoRA fine-tuning on clean data remove a backdoor? Does RoRA?
///
/// Trains a model, poisons it (BadNet or AddSent), then fine-tunes copies on clean data with
/// full fine-tuning, LoRA, RoRA (Cl + Tr + Pt) and each RoRA component alone. Learning rates
/// are chosen per method on clean dev accuracy. Writes results.json, results.md and charts
/// to --out, prints the table.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Model families (comma-separated): bert, llama, minilm (minilm needs --checkpoint).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [ModelKind::Bert, ModelKind::Llama])]
    model: Vec<ModelKind>,
    /// Attacks (comma-separated): badnet, addsent (default badnet: both exceed the
    /// 10-minute budget of the default run on 2 cores).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [AttackKind::Badnet])]
    attack: Vec<AttackKind>,
    /// Data folder with train, dev and test (.tsv with a `sentence<TAB>label` header, or
    /// .jsonl); default: the built-in synthetic corpus.
    #[arg(long)]
    data: Option<PathBuf>,
    /// HuggingFace BERT checkpoint folder (config.json, model.safetensors, tokenizer.json)
    /// for --model minilm.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Fine-tuning seeds per (model, attack).
    #[arg(long)]
    seeds: Option<usize>,
    /// Output folder.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Also write the results document here (e.g. docs/RESULTS.md).
    #[arg(long)]
    doc: Option<PathBuf>,
    /// Tiny sizes, seconds (used by the tests; numbers mean nothing).
    #[arg(long)]
    quick: bool,
    /// Clean fine-tuning steps per method.
    #[arg(long)]
    finetune_steps: Option<usize>,
    /// Learning rates tried per method (comma-separated); chosen on clean dev accuracy.
    #[arg(long, value_delimiter = ',')]
    lr_grid: Option<Vec<f64>>,
    /// Poisoning steps.
    #[arg(long)]
    poison_steps: Option<usize>,
    /// Share of the poisoning set that gets the trigger and the target label.
    #[arg(long)]
    poison_rate: Option<f64>,
    /// Poisoning learning rate.
    #[arg(long)]
    poison_lr: Option<f64>,
    /// Clean pretraining steps before poisoning (0: none).
    #[arg(long)]
    pretrain_steps: Option<usize>,
    /// Clean pretraining learning rate.
    #[arg(long)]
    pretrain_lr: Option<f64>,
    /// Share of pretraining sentences with the trigger as a label-neutral word.
    #[arg(long)]
    pretrain_trigger_rate: Option<f64>,
    /// Train the embeddings while poisoning (by default they are frozen so the backdoor
    /// lives in the transformer layers).
    #[arg(long)]
    poison_embeddings: bool,
    /// LoRA rank.
    #[arg(long)]
    rank: Option<usize>,
    /// LoRA alpha.
    #[arg(long)]
    alpha: Option<f64>,
    /// RoRA Tr weight λ.
    #[arg(long)]
    lambda: Option<f64>,
    /// RoRA Tr: number of top singular directions k.
    #[arg(long)]
    top_k: Option<usize>,
    /// RoRA Cl: base-branch dropout.
    #[arg(long)]
    base_dropout: Option<f64>,
    /// RoRA Pt: target σ1(ΔW)/σ1(W0).
    #[arg(long)]
    rescale_ratio: Option<f64>,
    /// Hidden size of the small models.
    #[arg(long)]
    d_model: Option<usize>,
    /// Blocks of the small models.
    #[arg(long)]
    layers: Option<usize>,
    /// Maximum sequence length in tokens.
    #[arg(long)]
    max_len: Option<usize>,
    /// Re-render results.md, the charts (and --doc) into --out from a results.json, without
    /// training.
    #[arg(long, value_name = "RESULTS_JSON")]
    replot: Option<PathBuf>,
    /// Print the settings as JSON and exit.
    #[arg(long)]
    print_settings: bool,
    /// Hide progress bars.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut cfg = if args.quick {
        BenchConfig::quick()
    } else {
        BenchConfig::default()
    };
    if args.quick {
        // Quick mode keeps its own small model/attack lists unless given explicitly.
        if std::env::args().any(|a| a.starts_with("--model")) {
            cfg.models = args.model.clone();
        }
        if std::env::args().any(|a| a.starts_with("--attack")) {
            cfg.attacks = args.attack.clone();
        }
    } else {
        cfg.models = args.model.clone();
        cfg.attacks = args.attack.clone();
    }
    cfg.data = args.data;
    cfg.checkpoint = args.checkpoint;
    cfg.out = args.out;
    cfg.doc = args.doc;
    cfg.quiet |= args.quiet;
    cfg.poison_freeze_embeddings = !args.poison_embeddings;
    macro_rules! set {
        ($($field:ident <- $arg:expr),* $(,)?) => { $( if let Some(v) = $arg { cfg.$field = v; } )* };
    }
    set!(seeds <- args.seeds, finetune_steps <- args.finetune_steps, lr_grid <- args.lr_grid,
         poison_steps <- args.poison_steps, poison_lr <- args.poison_lr, poison_rate <- args.poison_rate, pretrain_steps <- args.pretrain_steps, pretrain_lr <- args.pretrain_lr, pretrain_trigger_rate <- args.pretrain_trigger_rate,
         rank <- args.rank, alpha <- args.alpha, lambda <- args.lambda, top_k <- args.top_k,
         base_dropout <- args.base_dropout, rescale_ratio <- args.rescale_ratio, d_model <- args.d_model,
         n_layers <- args.layers, max_len <- args.max_len);
    if args.print_settings {
        println!(
            "{}",
            serde_json::to_string_pretty(&cfg).expect("settings serialize")
        );
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &args.replot {
        return match bench::replot(path, &cfg.out, cfg.doc.as_deref()) {
            Ok(()) => {
                println!("wrote {}/results.md and charts", cfg.out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match bench::run(&cfg) {
        Ok(results) => {
            println!("{}", bench::report::markdown(&results));
            println!(
                "wrote {}/results.json, results.md, spectra.{{svg,png}}, ca_asr.{{svg,png}} in {:.0} s",
                cfg.out.display(),
                results.seconds
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
