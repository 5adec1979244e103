//! `rora`: inspect, merge and rescale HuggingFace PEFT LoRA adapters.
//!
//! Parses the command line (clap: usage errors exit with 2), dispatches to the command, and
//! prints any error as one line `error: ...` on stderr with exit status 1.

use std::process::ExitCode;

use clap::Parser;
use rora_cli::cli::Cli;

fn main() -> ExitCode {
    // A bug must still end as one line on stderr, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error{at}: {}",
            rora_cli::error::one_line(&msg)
        );
    }));
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match rora_cli::run(&cli.command, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.one_line());
            ExitCode::from(1)
        }
    }
}
