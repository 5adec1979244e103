//! The `rora` command-line tool as a library: each command is a function that tests (and
//! other tools) can call directly; `src/main.rs` only parses arguments and prints errors.
//!
//! * [`inspect::inspect`]: the spectral report of every adapted layer.
//! * [`merge::merge`]: fold a PEFT adapter into a safetensors checkpoint.
//! * [`rescale::rescale`]: RoRA's post-training spectral rescaling of a PEFT adapter.
//! * [`combine::combine`]: the weighted combination of several adapters (PEFT's
//!   `add_weighted_adapter`: `cat`, `svd`, `linear`).
//!
//! Adapters may be LoRA, rsLoRA or DoRA (`use_dora`, with `lora_magnitude_vector`), on
//! linear layers or embeddings (`lora_embedding_A` / `lora_embedding_B`); a named adapter
//! of a multi-adapter folder is chosen with `--adapter-name` ([`resolve_adapter`]).
//!
//! The JSON schema of `rora inspect --json` is documented in this crate's README.
#![warn(missing_docs)]

pub mod cli;
pub mod combine;
pub mod error;
pub mod guard;
pub mod inspect;
pub mod merge;
pub mod pairing;
mod progress;
pub mod rescale;

pub use error::CliError;

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use rora_peft::{CONFIG_FILE, Overwrite, PeftAdapter, ReadOptions, adapter_dir, adapter_names};

/// Settings every command function shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Draw a progress bar on stderr (only when it is a terminal and there are enough
    /// layers).
    pub progress: bool,
    /// How strictly the adapter's config is held to its tensors; with
    /// `strict_targets = false`, unmatched `target_modules` are printed as a warning on
    /// stderr.
    pub read: ReadOptions,
    /// What an output may replace.
    pub overwrite: Overwrite,
}

impl Default for RunOptions {
    /// No progress bar, strict reading, only regular files replaced.
    fn default() -> Self {
        RunOptions {
            progress: false,
            read: ReadOptions::default(),
            overwrite: Overwrite::default(),
        }
    }
}

impl RunOptions {
    /// The options of a command line: progress on, `--lenient` and `--force` as given.
    pub fn from_flags(strict: cli::StrictArgs, force: cli::ForceArgs) -> Self {
        RunOptions {
            progress: true,
            read: ReadOptions {
                strict_targets: !strict.lenient,
            },
            overwrite: force.overwrite(),
        }
    }
}

/// Read the adapter folder `dir` under `options`; in lenient mode a `target_modules` entry
/// that matches no layer is printed as `warning: ...` on stderr.
pub(crate) fn read_adapter(dir: &Path, options: &RunOptions) -> Result<PeftAdapter, CliError> {
    let adapter = PeftAdapter::read_with(dir, &options.read)
        .map_err(|e| CliError::file("adapter", dir, e))?;
    if !options.read.strict_targets {
        let unmatched = adapter.unmatched_targets();
        if !unmatched.is_empty() {
            eprintln!(
                "warning: {}: target_modules {unmatched:?} match(es) no layer of the adapter (--lenient)",
                dir.join(rora_peft::CONFIG_FILE).display()
            );
        }
    }
    Ok(adapter)
}

/// The folder of the adapter `--adapter DIR [--adapter-name NAME]` names, in PEFT's
/// multi-adapter layout (`default` is `DIR`, any other name `DIR/NAME`).
///
/// A name the folder does not hold, or no name for a folder that holds only named adapters
/// (no `adapter_config.json` of its own), is [`CliError::AdapterName`] listing the names it
/// holds.
pub fn resolve_adapter(dir: &Path, name: Option<&str>) -> Result<PathBuf, CliError> {
    match name {
        None => {
            if dir.is_dir()
                && !dir.join(CONFIG_FILE).exists()
                && let Ok(names) = adapter_names(dir)
                && !names.is_empty()
            {
                return Err(CliError::AdapterName {
                    dir: dir.to_path_buf(),
                    name: None,
                    available: names,
                });
            }
            Ok(dir.to_path_buf())
        }
        Some(name) => {
            let names = adapter_names(dir).map_err(|e| CliError::file("adapter", dir, e))?;
            if !names.iter().any(|n| n == name) {
                return Err(CliError::AdapterName {
                    dir: dir.to_path_buf(),
                    name: Some(name.to_string()),
                    available: names,
                });
            }
            Ok(adapter_dir(dir, name))
        }
    }
}

/// Write a command's output; a closed pipe (`rora inspect | head`) is not an error.
pub(crate) fn write_stdout(out: &mut dyn Write, bytes: &[u8]) -> Result<(), CliError> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(CliError::io("<stdout>", e)),
        _ => Ok(()),
    }
}

/// Run a parsed command, writing its report to `out`.
pub fn run(command: &cli::Command, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        cli::Command::Inspect(args) => inspect::run(args, out),
        cli::Command::Merge(args) => merge::run(args, out),
        cli::Command::Rescale(args) => rescale::run(args, out),
        cli::Command::Combine(args) => combine::run(args, out),
    }
}
