//! Command-line definitions (clap derive). `rora --help` and `rora <command> --help` are
//! generated from the doc comments here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use rora_peft::TargetPattern;

/// Inspect, merge and rescale HuggingFace PEFT LoRA adapters, natively.
///
/// Base weights are read from a safetensors checkpoint in PyTorch layout (`<module>.weight`
/// is `[out, in]`); adapters from a PEFT folder (`adapter_config.json` +
/// `adapter_model.safetensors`). Adapter module paths (without PEFT's `base_model.model.`
/// prefix) name the base weight `<path>.weight`.
///
/// Errors are one line on stderr (`error: ...`) with exit status 1; usage errors exit with 2.
/// A failed command writes nothing: outputs are written to a temporary file and renamed
/// into place only when complete and checked (no NaN or infinity), an output never
/// replaces an input, and only a regular file is replaced unless `--force` is given.
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
    /// unchanged. Prints old and new strength ratio per layer. A DoRA adapter's magnitude
    /// vectors are kept: the rescaling acts on the direction s·B·A.
    Rescale(RescaleArgs),
    /// Combine several adapters with weights into one (PEFT's add_weighted_adapter).
    ///
    /// `--combination cat` (default) stacks the factors, rank Σ rᵢ, so the update is exactly
    /// Σ wᵢ·ΔWᵢ; `svd` is its best rank-k approximation (factored SVD, k = --svd-rank or the
    /// largest input rank); `linear` sums √(wᵢ·sᵢ)-weighted factors of equal-rank adapters
    /// (PEFT's rough approximation). The result has r = lora_alpha = the new rank (scale 1).
    /// DoRA adapters cannot be combined (an error). Fold the result into a base with
    /// `rora merge`.
    Combine(CombineArgs),
}

/// How strictly the adapter's config is held to its tensors (shared by every command).
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct StrictArgs {
    /// Accept an adapter whose `target_modules` name modules that have no tensors in the
    /// weights file (printed as a warning on stderr instead of an error). By default the
    /// mismatch is an error: it usually means the wrong config or a truncated adapter.
    #[arg(long)]
    pub lenient: bool,
}

/// What may be replaced at `--out` (merge and rescale).
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct ForceArgs {
    /// Write through what stands at an output path even if it is not a regular file: a
    /// symbolic link is followed and the file it points to is replaced (the link is kept);
    /// a device or FIFO is written to directly (not atomically). Without it, such an output
    /// is refused and left untouched. An output that is one of the inputs is refused even
    /// with --force.
    #[arg(long)]
    pub force: bool,
}

impl ForceArgs {
    /// The writers' [`Overwrite`](rora_peft::Overwrite) policy.
    pub fn overwrite(&self) -> rora_peft::Overwrite {
        if self.force {
            rora_peft::Overwrite::Force
        } else {
            rora_peft::Overwrite::RegularFile
        }
    }
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
    /// The named adapter of a multi-adapter folder (PEFT's save_pretrained with several
    /// adapters: `default` in DIR, NAME in DIR/NAME/).
    #[arg(long, value_name = "NAME")]
    pub adapter_name: Option<String>,
    /// Print one JSON document `{"layers": [...]}` instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Number of W0's top singular directions used for the alignments and intruder
    /// dimensions (clamped to each layer's min(out, in) - 1, since the whole spectrum
    /// carries no alignment information).
    #[arg(long, value_name = "K", default_value_t = 8, value_parser = parse_positive)]
    pub top_k: usize,
    /// Strictness.
    #[command(flatten)]
    pub strict: StrictArgs,
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
    /// The named adapter of a multi-adapter folder (`default` in DIR, NAME in DIR/NAME/).
    #[arg(long, value_name = "NAME")]
    pub adapter_name: Option<String>,
    /// Output safetensors file (written atomically; its folder must exist). Must not be
    /// the base file or a file of the adapter.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Strictness.
    #[command(flatten)]
    pub strict: StrictArgs,
    /// Overwriting.
    #[command(flatten)]
    pub force: ForceArgs,
}

/// Arguments of `rora rescale`.
#[derive(Debug, Args)]
pub struct RescaleArgs {
    /// PEFT adapter folder to rescale.
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// The named adapter of a multi-adapter folder (`default` in DIR, NAME in DIR/NAME/).
    #[arg(long, value_name = "NAME")]
    pub adapter_name: Option<String>,
    /// Base model weights (for sigma1(W0)): a safetensors file in PyTorch layout.
    #[arg(long, value_name = "FILE")]
    pub base: PathBuf,
    /// Output adapter folder (created if missing; files written atomically). Must not be
    /// the input adapter folder.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Rescale only the layers matching PATTERN (repeatable; default: all layers). The
    /// library's target syntax: a name matches a trailing run of path components
    /// ('q_proj', 'self_attn.q_proj'), 're:REGEX' a whole-path regex
    /// ('re:.*layers\.(21|22|23)\..*'), '=PATH' one exact path. A pattern that selects no
    /// layer is an error.
    #[arg(long = "layers", value_name = "PATTERN", value_parser = parse_pattern, action = clap::ArgAction::Append)]
    pub layers: Vec<String>,
    /// Keep only the selected layers of the last N blocks (a block is the last number in a
    /// path, as in 'model.layers.31.self_attn.q_proj'; layers without one are kept).
    #[arg(long, value_name = "N")]
    pub last_blocks: Option<usize>,
    /// Target strength ratio sigma1(s'·B·A)/sigma1(W0) for the selected layers, > 0
    /// [default: 1.0].
    #[arg(long, value_name = "R", value_parser = parse_positive_real, conflicts_with = "factor")]
    pub target_ratio: Option<f64>,
    /// Multiply the selected updates by F instead (s' = F·s), > 0.
    #[arg(long, value_name = "F", value_parser = parse_positive_real)]
    pub factor: Option<f64>,
    /// Strictness.
    #[command(flatten)]
    pub strict: StrictArgs,
    /// Overwriting.
    #[command(flatten)]
    pub force: ForceArgs,
}

/// Arguments of `rora combine`.
#[derive(Debug, Args)]
pub struct CombineArgs {
    /// An input adapter folder and its weight, `DIR=WEIGHT` (repeatable, at least one; the
    /// weight may be negative). A named adapter of a multi-adapter folder is its subfolder
    /// (`DIR/NAME=WEIGHT`; `default` is DIR itself).
    #[arg(long = "adapter", value_name = "DIR=WEIGHT", required = true, value_parser = parse_weighted, action = clap::ArgAction::Append)]
    pub adapters: Vec<(PathBuf, f64)>,
    /// How to combine: cat, svd or linear.
    #[arg(long, value_enum, default_value_t = CombinationArg::Cat)]
    pub combination: CombinationArg,
    /// The rank of an `svd` combination (default: the largest input rank).
    #[arg(long, value_name = "K", value_parser = parse_positive)]
    pub svd_rank: Option<usize>,
    /// Output adapter folder (created if missing; files written atomically). Must not be an
    /// input folder.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Strictness.
    #[command(flatten)]
    pub strict: StrictArgs,
    /// Overwriting.
    #[command(flatten)]
    pub force: ForceArgs,
}

/// `--combination` of `rora combine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CombinationArg {
    /// Stack the factors: exactly Σ wᵢ·ΔWᵢ, rank Σ rᵢ.
    Cat,
    /// Best rank-k approximation of Σ wᵢ·ΔWᵢ.
    Svd,
    /// √-weighted sum of equal-rank factors (PEFT's rough approximation).
    Linear,
}

fn parse_weighted(s: &str) -> Result<(PathBuf, f64), String> {
    let (dir, weight) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected DIR=WEIGHT, got {s:?}"))?;
    if dir.is_empty() {
        return Err(format!("expected DIR=WEIGHT, got {s:?} (no folder)"));
    }
    let w: f64 = weight
        .parse()
        .map_err(|e: std::num::ParseFloatError| format!("weight {weight:?}: {e}"))?;
    if !w.is_finite() {
        return Err(format!("weight {weight:?} must be a finite number"));
    }
    Ok((PathBuf::from(dir), w))
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(k) => Ok(k),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_positive_real(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|e: std::num::ParseFloatError| e.to_string())?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        // Zero would erase the update (an adapter rescale cannot process again), a negative
        // value would flip it.
        Err("must be a finite number > 0".into())
    }
}

fn parse_pattern(s: &str) -> Result<String, String> {
    TargetPattern::parse(s)
        .map(|_| s.to_string())
        .map_err(|e| crate::error::one_line(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `rora rescale --adapter a --base b --out c` plus `extra`.
    fn rescale(extra: &[&str]) -> Result<Cli, clap::Error> {
        let mut args = vec![
            "rora",
            "rescale",
            "--adapter",
            "a",
            "--base",
            "b",
            "--out",
            "c",
        ];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args)
    }

    #[test]
    fn factor_and_ratio_conflict() {
        assert!(rescale(&["--factor", "2", "--target-ratio", "1"]).is_err());
        assert!(rescale(&["--factor", "-1"]).is_err());
        for flag in ["--factor", "--target-ratio"] {
            for bad in ["0", "0.0", "-0", "-2", "1e-400", "inf", "NaN"] {
                let arg = format!("{flag}={bad}");
                let e = rescale(&[&arg]).expect_err(bad);
                assert!(e.to_string().contains("> 0"), "{flag} {bad}: {e}");
            }
        }
        assert!(rescale(&["--layers", "re:fc("]).is_err());
        assert!(rescale(&["--layers", "q_proj", "--layers", "re:.*v_proj"]).is_ok());
    }

    #[test]
    fn combine_takes_weighted_folders() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["rora", "combine", "--out", "o"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
        };
        let Command::Combine(c) = parse(&["--adapter", "a=0.5", "--adapter", "x/b=c=-2"])
            .unwrap()
            .command
        else {
            panic!("combine")
        };
        assert_eq!(
            c.adapters,
            [(PathBuf::from("a"), 0.5), (PathBuf::from("x/b=c"), -2.0)]
        );
        assert_eq!(c.combination, CombinationArg::Cat);
        for bad in ["a", "=1", "a=x", "a=nan", "a=inf"] {
            assert!(parse(&["--adapter", bad]).is_err(), "{bad}");
        }
        assert!(parse(&[]).is_err(), "at least one adapter");
        assert!(parse(&["--adapter", "a=1", "--combination", "ties"]).is_err());
    }
}
