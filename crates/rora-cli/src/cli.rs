//! Command-line definitions (clap derive). `rora --help` and `rora <command> --help` are
//! generated from the doc comments here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use regex::Regex;

/// Inspect, merge and rescale HuggingFace PEFT LoRA adapters, natively.
///
/// Base weights are read from a safetensors checkpoint in PyTorch layout (`<module>.weight`
/// is `[out, in]`); adapters from a PEFT folder (`adapter_config.json` +
/// `adapter_model.safetensors`). Adapter module paths (without PEFT's `base_model.model.`
/// prefix) name the base weight `<path>.weight`.
///
/// Errors are one line on stderr (`error: ...`) with exit status 1; usage errors exit with 2.
#[derive(Debug, Parser)]
#[command(name = "rora", version, about, long_about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The `rora` commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Spectral report of every adapted layer: strength, alignment, critical scale.
    ///
    /// For each layer: module path, shapes, rank, scale (alpha/r or alpha/sqrt(r) with
    /// rsLoRA), sigma1 of W0 and of the scaled update s·B·A, strength ratio
    /// sigma1(s·B·A)/sigma1(W0), Frobenius ratio, effective rank, alignments ‖Ukᵀ·B‖F and
    /// ‖A·Vk‖F with W0's top-k singular vectors, the paper's critical scale next to the
    /// scale in use, and intruder dimensions. A table by default; `--json` prints one
    /// document `{"layers": [...]}` (schema: crates/rora-cli/README.md).
    Inspect(InspectArgs),
    /// Fold the adapter into the base weights: W = W0 + s·B·A.
    ///
    /// Writes a safetensors file with the base file's tensor names, shapes, layout and
    /// dtypes; unadapted tensors (biases, embeddings, ...) are copied byte for byte. The
    /// file is written atomically: a failure never leaves a partial output.
    Merge(MergeArgs),
    /// RoRA's post-training spectral rescaling, written as a new PEFT adapter.
    ///
    /// Each selected layer's update is rescaled so that sigma1(s'·B·A) = R·sigma1(W0)
    /// (`--target-ratio R`, default 1.0) or s' = F·s (`--factor F`). The rescaling goes
    /// into the factors (B·√(s'/s), A·√(s'/s)); `r`, `lora_alpha` and every other config
    /// key are kept, so PEFT loads the result as before. Unselected layers are copied
    /// unchanged. Prints old and new strength ratio per layer.
    Rescale(RescaleArgs),
}

/// Arguments of `rora inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Base model weights: a safetensors file in PyTorch layout.
    #[arg(long, value_name = "FILE")]
    pub base: PathBuf,
    /// PEFT adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Print one JSON document `{"layers": [...]}` instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Number of W0's top singular directions used for the alignments and intruder
    /// dimensions (clamped to each layer's min(out, in) - 1, since the whole spectrum
    /// carries no alignment information).
    #[arg(long, value_name = "K", default_value_t = 8, value_parser = parse_positive)]
    pub top_k: usize,
}

/// Arguments of `rora merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Base model weights: a safetensors file in PyTorch layout.
    #[arg(long, value_name = "FILE")]
    pub base: PathBuf,
    /// PEFT adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Output safetensors file (written atomically; its folder must exist).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Arguments of `rora rescale`.
#[derive(Debug, Args)]
pub struct RescaleArgs {
    /// PEFT adapter folder to rescale.
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Base model weights (for sigma1(W0)): a safetensors file in PyTorch layout.
    #[arg(long, value_name = "FILE")]
    pub base: PathBuf,
    /// Output adapter folder (created if missing; files written atomically).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Regex selecting the module paths to rescale, matched anywhere in the path
    /// (anchor with ^...$); default: all layers. Example: 'layers\.(21|22|23)\.'.
    #[arg(long, value_name = "PATTERN", value_parser = parse_regex)]
    pub layers: Option<Regex>,
    /// Target strength ratio sigma1(s'·B·A)/sigma1(W0) for the selected layers
    /// [default: 1.0].
    #[arg(long, value_name = "R", value_parser = parse_non_negative, conflicts_with = "factor")]
    pub target_ratio: Option<f64>,
    /// Multiply the selected updates by F instead (s' = F·s).
    #[arg(long, value_name = "F", value_parser = parse_non_negative)]
    pub factor: Option<f64>,
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(k) => Ok(k),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_non_negative(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|e: std::num::ParseFloatError| e.to_string())?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err("must be a finite number >= 0".into())
    }
}

fn parse_regex(s: &str) -> Result<Regex, String> {
    Regex::new(s).map_err(|e| crate::error::one_line(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn factor_and_ratio_conflict() {
        let r = Cli::try_parse_from([
            "rora",
            "rescale",
            "--adapter",
            "a",
            "--base",
            "b",
            "--out",
            "c",
            "--factor",
            "2",
            "--target-ratio",
            "1",
        ]);
        assert!(r.is_err());
        let r = Cli::try_parse_from([
            "rora",
            "rescale",
            "--adapter",
            "a",
            "--base",
            "b",
            "--out",
            "c",
            "--factor",
            "-1",
        ]);
        assert!(r.is_err());
        let r = Cli::try_parse_from([
            "rora",
            "rescale",
            "--adapter",
            "a",
            "--base",
            "b",
            "--out",
            "c",
            "--layers",
            "fc(",
        ]);
        assert!(r.is_err());
    }
}
