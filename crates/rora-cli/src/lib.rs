//! The `rora` command-line tool as a library: each command is a function that tests (and
//! other tools) can call directly; `src/main.rs` only parses arguments and prints errors.
//!
//! * [`inspect::inspect`]: the spectral report of every adapted layer.
//! * [`merge::merge`]: fold a PEFT adapter into a safetensors checkpoint.
//! * [`rescale::rescale`]: RoRA's post-training spectral rescaling of a PEFT adapter.
//!
//! The JSON schema of `rora inspect --json` is documented in this crate's README.
#![warn(missing_docs)]

pub mod cli;
pub mod error;
pub mod guard;
pub mod inspect;
pub mod merge;
pub mod pairing;
mod progress;
pub mod rescale;

pub use error::CliError;

use std::io::{ErrorKind, Write};
use std::path::Path;

use rora_peft::{Overwrite, PeftAdapter, ReadOptions};

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
    }
}
