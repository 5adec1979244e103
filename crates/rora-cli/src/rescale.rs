//! `rora rescale`: RoRA's post-training spectral rescaling, written back as a PEFT adapter.
//!
//! A selected layer's update `s·B·A` becomes `s'·B·A` with `s' = s·F` (`--factor F`) or
//! `σ1(s'·B·A) = R·σ1(W0)` (`--target-ratio R`, default `1`). The new scale is folded into
//! the factors, `B'' = B·√(s'/s)`, `A'' = A·√(s'/s)`, so `lora_alpha` and `r` (and hence
//! PEFT's own scale `s`) stay unchanged, the rank and singular subspaces are kept, and
//! `s·B''·A'' = s'·B·A` exactly (up to float32 rounding).

use std::io::Write;
use std::path::Path;

use nalgebra::DMatrix;
use rora_peft::{HostMatrix, LayerFactors, LayerSelection, TensorFile};
pub use rora_spectral::RescaleTarget;
use rora_spectral::{SpectralError, factored_svd, spectral_norm_f64};
use serde::Serialize;

use crate::cli::RescaleArgs;
use crate::error::CliError;
use crate::guard::{check_output_dir, inputs, unsafe_output};
use crate::pairing::{base_matrix, pair_layers};
use crate::progress::layer_bar;
use crate::{RunOptions, read_adapter};

/// Relative tolerance within which the rescaled factors, as written (float32), must reach
/// their target: the strength ratio `σ1(s·B''·A'')/σ1(W0)` for `--target-ratio`, the update
/// factor `σ1(s·B''·A'')/σ1(s·B·A)` for `--factor`. Float32 rounding of the factors moves
/// either by about `1e-7`.
pub const RESCALE_TOLERANCE: f64 = 1e-5;

/// The outcome for one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RescaleRow {
    /// Module path.
    pub path: String,
    /// Whether `--layers` selected it (unselected layers are copied unchanged).
    pub selected: bool,
    /// The adapter's scale `s` (unchanged in the written config).
    pub scale: f64,
    /// `σ1(W0)` (selected layers only: unselected ones are not read from the base).
    pub sigma1_base: Option<f64>,
    /// `σ1(s·B·A)/σ1(W0)` before (selected layers only).
    pub old_ratio: Option<f64>,
    /// `σ1(s·B''·A'')/σ1(W0)` after, from the factors as written (float32; selected layers
    /// only).
    pub new_ratio: Option<f64>,
    /// The factor `s'/s` applied to the update (`1` for unselected layers).
    pub factor: f64,
}

/// Rescale the adapter at `adapter_dir` against the base checkpoint `base` and write the new
/// adapter to `out_dir` (created if missing; both files written atomically).
///
/// `layers` selects module paths with the library's rule ([`LayerSelection`]: every layer
/// by default); a pattern that selects nothing is an error and writes nothing. Unselected
/// layers are written with exactly the factors read (their base weights are not read).
///
/// Each selected layer must have a finite, non-zero base weight and a non-zero update; its
/// rescaled factors must be finite and, as written, reach the target within
/// [`RESCALE_TOLERANCE`]. `out_dir` must not be the adapter folder, and its two files must
/// not alias an input or (without [`Overwrite::Force`](rora_peft::Overwrite::Force)) be
/// anything but regular files. Any failure writes nothing.
pub fn rescale(
    adapter_dir: &Path,
    base: &Path,
    out_dir: &Path,
    layers: &LayerSelection,
    target: RescaleTarget,
    options: &RunOptions,
) -> Result<Vec<RescaleRow>, CliError> {
    target
        .validate()
        .map_err(|e| CliError::spectral("--target-ratio/--factor", e))?;
    check_output_dir(out_dir, &inputs(base, adapter_dir), options.overwrite)?;
    let adapter = read_adapter(adapter_dir, options)?;
    let base_file = TensorFile::open(base).map_err(|e| CliError::file("base", base, e))?;
    let pairs = pair_layers(&adapter, &base_file, base)?;
    let chosen = layers
        .select(pairs.iter().map(|p| p.path.as_str()))
        .map_err(CliError::NoLayerSelected)?;
    let selected = |path: &str| chosen.iter().any(|c| c == path);

    let bar = layer_bar(chosen.len(), "rescale", options.progress);
    let mut out = adapter.clone();
    let mut rows = Vec::with_capacity(pairs.len());
    for pair in &pairs {
        let path = &pair.path;
        let s = pair.scale;
        if !selected(path) {
            rows.push(RescaleRow {
                path: path.clone(),
                selected: false,
                scale: s,
                sigma1_base: None,
                old_ratio: None,
                new_ratio: None,
                factor: 1.0,
            });
            continue;
        }
        bar.set_message(path.clone());
        let spectral = |e| CliError::spectral(path, e);
        let sigma1_base = {
            let w0 = base_matrix(&base_file, pair, base, "; nothing written")?;
            // The row-major [out, in] buffer read as a column-major [in, out] matrix is W0ᵀ,
            // which has the same σ1: no copy, and float32 halves the memory traffic of
            // each Lanczos product (its sums are float64).
            let w0t = DMatrix::from_vec(w0.cols, w0.rows, w0.data);
            spectral_norm_f64(&w0t).map_err(spectral)?
        };
        if sigma1_base == 0.0 {
            return Err(CliError::ZeroBase {
                path: path.clone(),
                key: pair.weight_key.clone(),
                base: base.to_path_buf(),
            });
        }
        if s == 0.0 {
            return Err(spectral(SpectralError::InvalidArgument(
                "the adapter's scale is zero (lora_alpha = 0): no factor rescales it".into(),
            )));
        }
        let factors = &adapter.layers[path];
        let (b, a) = (factors.b.to_dmatrix(), factors.a.to_dmatrix());
        let sigma1_update = factored_svd(&b, &a, s).map_err(spectral)?.sigma1();
        if sigma1_update == 0.0 {
            return Err(CliError::ZeroUpdate { path: path.clone() });
        }
        let old_ratio = sigma1_update / sigma1_base;
        let factor = target
            .factor(sigma1_base, sigma1_update)
            .map_err(spectral)?;
        let root = factor.sqrt();
        // Pt rescales the (directional) low-rank update only: a DoRA magnitude is kept as
        // trained, so every output row of the adapted weight keeps its length.
        let new = LayerFactors {
            a: HostMatrix::from_dmatrix(&(&a * root)),
            b: HostMatrix::from_dmatrix(&(&b * root)),
            magnitude: factors.magnitude.clone(),
            kind: factors.kind,
        };
        if !new.a.is_finite() || !new.b.is_finite() {
            return Err(spectral(SpectralError::NonFinite {
                what: "rescaled factors (float32 overflow)",
            }));
        }
        let new_update = factored_svd(&new.b.to_dmatrix(), &new.a.to_dmatrix(), s)
            .map_err(spectral)?
            .sigma1();
        let new_ratio = new_update / sigma1_base;
        let (what, achieved, wanted) = match target {
            RescaleTarget::Ratio(rho) => ("strength ratio", new_ratio, rho),
            _ => ("update factor", new_update / sigma1_update, factor),
        };
        let within = (achieved - wanted).abs() <= RESCALE_TOLERANCE * wanted;
        if !within {
            return Err(CliError::RescaleMissed {
                path: path.clone(),
                what,
                achieved,
                target: wanted,
                tolerance: RESCALE_TOLERANCE,
            });
        }
        out.layers.insert(path.clone(), new);
        rows.push(RescaleRow {
            path: path.clone(),
            selected: true,
            scale: s,
            sigma1_base: Some(sigma1_base),
            old_ratio: Some(old_ratio),
            new_ratio: Some(new_ratio),
            factor,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.write_with(out_dir, options.overwrite)
        .map_err(unsafe_output)?;
    Ok(rows)
}

/// The per-layer report as a table.
pub fn render_rows(rows: &[RescaleRow]) -> String {
    let width = rows.iter().map(|r| r.path.len()).max().unwrap_or(5).max(5);
    let mut s = format!(
        "{:<width$}  {:>10}  {:>12}  {:>10}  {:>10}  {:>10}\n",
        "layer", "scale", "sigma1(W0)", "old ratio", "new ratio", "factor"
    );
    let num = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    for r in rows {
        let factor = if r.selected {
            format!("{:.6}", r.factor)
        } else {
            "kept".to_string()
        };
        s.push_str(&format!(
            "{:<width$}  {:>10.4}  {:>12}  {:>10}  {:>10}  {:>10}\n",
            r.path,
            r.scale,
            num(r.sigma1_base, 6),
            num(r.old_ratio, 6),
            num(r.new_ratio, 6),
            factor
        ));
    }
    s
}

/// Run `rora rescale` and print the per-layer report on `out`.
pub fn run(args: &RescaleArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let target = match (args.target_ratio, args.factor) {
        (_, Some(f)) => RescaleTarget::Factor(f),
        (Some(r), None) => RescaleTarget::Ratio(r),
        (None, None) => RescaleTarget::default(),
    };
    let layers = LayerSelection {
        patterns: args.layers.clone(),
        last_blocks: args.last_blocks,
    };
    let options = RunOptions::from_flags(args.strict, args.force);
    let adapter = crate::resolve_adapter(&args.adapter, args.adapter_name.as_deref())?;
    let rows = rescale(&adapter, &args.base, &args.out, &layers, target, &options)?;
    let mut text = render_rows(&rows);
    text.push_str(&format!("wrote {}\n", args.out.display()));
    crate::write_stdout(out, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_marks_unselected_layers() {
        let rows = vec![RescaleRow {
            path: "fc1".into(),
            selected: false,
            scale: 2.0,
            sigma1_base: None,
            old_ratio: None,
            new_ratio: None,
            factor: 1.0,
        }];
        let t = render_rows(&rows);
        assert!(t.contains("kept") && t.contains("fc1"), "{t}");
    }
}
