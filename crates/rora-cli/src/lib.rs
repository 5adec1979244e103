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
pub mod inspect;
pub mod merge;
pub mod pairing;
mod progress;
pub mod rescale;

pub use error::CliError;

use std::io::{ErrorKind, Write};

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
