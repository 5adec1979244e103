//! The backdoor benchmark: poison a model, clean it with full fine-tuning, LoRA, RoRA and
//! RoRA's ablations, and report clean accuracy (CA) and attack success rate (ASR).
//!
//! `cargo run --release -p rora-examples --bin backdoor` runs the built-in defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use rora_examples::bench::{self, BenchConfig};

/// Does LoRA fine-tuning on clean data remove a backdoor? Does RoRA?
///
/// Trains a model, poisons it (BadNet or AddSent), then fine-tunes copies on clean data with
/// full fine-tuning, LoRA, RoRA (Cl + Tr + Pt) and each RoRA component alone. Learning rates
/// are chosen per method on clean dev accuracy. Writes results.json, results.md and charts
/// to --out, prints the table. The defaults shown are those of the full run; with --quick,
/// every flag not given takes its quick-mode value instead.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    bench: BenchConfig,
    /// Re-render results.md, the charts (and --doc) into --out from a results.json, without
    /// training.
    #[arg(long, value_name = "RESULTS_JSON")]
    replot: Option<PathBuf>,
    /// Print the settings as JSON and exit.
    #[arg(long)]
    print_settings: bool,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let cfg = cli.bench.with_quick_defaults(&matches);
    if cli.print_settings {
        println!(
            "{}",
            serde_json::to_string_pretty(&cfg).expect("settings serialize")
        );
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &cli.replot {
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
