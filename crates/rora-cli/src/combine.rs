//! `rora combine`: several adapters with weights into one, as PEFT's
//! `add_weighted_adapter` (`cat`, `svd`, `linear`; see [`rora_peft::weighted_adapter`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use rora_peft::{CONFIG_FILE, Combination, PeftAdapter, WEIGHTS_FILE, weighted_adapter};

use crate::cli::{CombinationArg, CombineArgs};
use crate::error::CliError;
use crate::guard::{Input, check_output_dir, unsafe_output};
use crate::{RunOptions, read_adapter};

/// Combine the adapters at `inputs` (folder, weight) and write the result to `out_dir`
/// (created if missing; both files written atomically). Returns the combined adapter.
///
/// Every input is read as the other commands read an adapter; `out_dir` must not be one of
/// the input folders, and its files must not alias an input file. What cannot be combined
/// (a DoRA adapter, `linear` with different ranks, a layer of different shapes in two
/// adapters, ...) is an error naming it, and nothing is written.
pub fn combine(
    inputs: &[(PathBuf, f64)],
    combination: Combination,
    out_dir: &Path,
    options: &RunOptions,
) -> Result<PeftAdapter, CliError> {
    let mut guarded = Vec::new();
    for (dir, _) in inputs {
        if let (Ok(o), Ok(i)) = (std::fs::canonicalize(out_dir), std::fs::canonicalize(dir))
            && o == i
        {
            return Err(CliError::OutputIsInput {
                out: out_dir.to_path_buf(),
                input: dir.clone(),
                what: "adapter folder (--adapter)",
            });
        }
        for (what, file) in [
            ("adapter weights (--adapter)", WEIGHTS_FILE),
            ("adapter config (--adapter)", CONFIG_FILE),
        ] {
            guarded.push((Input { what, path: dir }, dir.join(file)));
        }
    }
    check_output_dir(out_dir, &guarded, options.overwrite)?;
    let adapters = inputs
        .iter()
        .map(|(dir, _)| read_adapter(dir, options))
        .collect::<Result<Vec<_>, _>>()?;
    let parts: Vec<(&PeftAdapter, f64)> = adapters
        .iter()
        .zip(inputs)
        .map(|(a, (_, w))| (a, *w))
        .collect();
    let combined =
        weighted_adapter(&parts, combination).map_err(|e| CliError::adapter("combine", e))?;
    combined
        .write_with(out_dir, options.overwrite)
        .map_err(unsafe_output)?;
    Ok(combined)
}

/// Run `rora combine` and print the combined layers on `out`.
pub fn run(args: &CombineArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let combination = match args.combination {
        CombinationArg::Cat => Combination::Cat,
        CombinationArg::Linear => Combination::Linear,
        CombinationArg::Svd => Combination::Svd {
            rank: args.svd_rank,
        },
    };
    let options = RunOptions::from_flags(args.strict, args.force);
    let combined = combine(&args.adapters, combination, &args.out, &options)?;
    let mut text = format!(
        "combined {} adapter(s) with {} into rank {} (lora_alpha {}):\n",
        args.adapters.len(),
        combination.name(),
        combined.config.r,
        combined.config.lora_alpha
    );
    for (path, f) in &combined.layers {
        text.push_str(&format!(
            "  {path} ({}, A {:?}, B {:?})\n",
            f.kind.name(),
            f.a.shape(),
            f.b.shape()
        ));
    }
    text.push_str(&format!("wrote {}\n", args.out.display()));
    crate::write_stdout(out, text.as_bytes())
}
