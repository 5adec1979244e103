//! `rora inspect`: the spectral report of every adapted layer.

use std::io::Write;
use std::path::Path;

use rora_peft::TensorFile;
use rora_spectral::{BaseSpectrum, LayerReport, SpectralError, render_table};
use serde::Serialize;

use crate::cli::InspectArgs;
use crate::error::CliError;
use crate::pairing::pair_layers;
use crate::progress::layer_bar;
use crate::{RunOptions, read_adapter};

/// The JSON document `rora inspect --json` prints: `{"layers": [...]}`, one
/// [`LayerReport`] per adapted layer in module-path order.
#[derive(Debug, Clone, Serialize)]
pub struct InspectDocument {
    /// One report per adapted layer.
    pub layers: Vec<LayerReport>,
}

/// Compute the report of every layer of the adapter at `adapter_dir` against the base
/// checkpoint `base`, using the top `top_k` singular directions of each `W0` for the
/// alignments (clamped to each layer's [`max_k`]).
///
/// Base weights are read one at a time from the memory-mapped checkpoint; each `W0` is
/// dropped once its top-k spectrum is known.
pub fn inspect(
    base: &Path,
    adapter_dir: &Path,
    top_k: usize,
    options: &RunOptions,
) -> Result<Vec<LayerReport>, CliError> {
    let adapter = read_adapter(adapter_dir, options)?;
    let base_file = TensorFile::open(base).map_err(|e| CliError::file("base", base, e))?;
    let pairs = pair_layers(&adapter, &base_file, base)?;
    let bar = layer_bar(pairs.len(), "inspect", options.progress);
    let mut reports = Vec::with_capacity(pairs.len());
    for pair in &pairs {
        bar.set_message(pair.path.clone());
        let factors = &adapter.layers[&pair.path];
        let spectrum = {
            let w0 = crate::pairing::base_matrix(&base_file, pair, base, "")?.to_dmatrix();
            let k = top_k.clamp(1, max_k(pair.out, pair.inp));
            BaseSpectrum::compute(&w0, k).map_err(|e| CliError::spectral(&pair.path, e))?
        };
        let b = factors.b.to_dmatrix();
        let a = factors.a.to_dmatrix();
        let report = LayerReport::compute(&pair.path, &spectrum, &b, &a, pair.scale, None)
            .map_err(|e| match e {
                // Finite inputs, non-finite intermediate: the scaled update overflows.
                SpectralError::NonFinite { .. } => CliError::Overflow {
                    path: pair.path.clone(),
                    scale: pair.scale,
                    source: e,
                },
                e => CliError::spectral(&pair.path, e),
            })?;
        reports.push(report);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(reports)
}

/// The largest useful `k` for a layer: `min(out, in) − 1` (at least 1). With the whole
/// spectrum (`k = min(out, in)`) every update lies in `W0`'s span, so the alignments and the
/// critical scale carry no information.
pub fn max_k(out: usize, inp: usize) -> usize {
    out.min(inp).saturating_sub(1).max(1)
}

/// Run `rora inspect`: the table (or, with `--json`, the [`InspectDocument`]) on `out`.
pub fn run(args: &InspectArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let options = RunOptions::from_flags(args.strict, crate::cli::ForceArgs::default());
    let adapter = crate::resolve_adapter(&args.adapter, args.adapter_name.as_deref())?;
    let layers = inspect(&args.base, &adapter, args.top_k, &options)?;
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&InspectDocument { layers })?;
        s.push('\n');
        s
    } else {
        let mut s = render_table(&layers);
        if !s.ends_with('\n') {
            s.push('\n');
        }
        s
    };
    crate::write_stdout(out, text.as_bytes())
}
