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
use regex::Regex;
use rora_core::peft::{HostMatrix, LayerFactors, PeftAdapter, TensorFile};
use rora_spectral::{SpectralError, factored_svd, scale_to_sigma1, spectral_norm};
use serde::Serialize;

use crate::cli::RescaleArgs;
use crate::error::CliError;
use crate::pairing::pair_layers;
use crate::progress::layer_bar;

/// How selected layers are rescaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RescaleTarget {
    /// Make `σ1(s'·B·A) / σ1(W0)` equal this ratio (the paper uses `1`).
    Ratio(f64),
    /// Multiply the update by this factor: `s' = s·F`.
    Factor(f64),
}

impl Default for RescaleTarget {
    fn default() -> Self {
        RescaleTarget::Ratio(1.0)
    }
}

/// The outcome for one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RescaleRow {
    /// Module path.
    pub path: String,
    /// Whether `--layers` selected it (unselected layers are copied unchanged).
    pub selected: bool,
    /// The adapter's scale `s` (unchanged in the written config).
    pub scale: f64,
    /// `σ1(W0)`.
    pub sigma1_base: f64,
    /// `σ1(s·B·A)/σ1(W0)` before.
    pub old_ratio: f64,
    /// `σ1(s·B''·A'')/σ1(W0)` after, from the factors as written (float32).
    pub new_ratio: f64,
    /// The factor `s'/s` applied to the update (`1` for unselected layers).
    pub factor: f64,
}

/// Rescale the adapter at `adapter_dir` against the base checkpoint `base` and write the new
/// adapter to `out_dir` (created if missing; both files written atomically).
///
/// `layers` selects module paths (regex, matched anywhere in the path; `None` selects all);
/// a pattern that selects nothing is an error and writes nothing. Unselected layers are
/// written with exactly the factors read.
pub fn rescale(
    adapter_dir: &Path,
    base: &Path,
    out_dir: &Path,
    layers: Option<&Regex>,
    target: RescaleTarget,
    progress: bool,
) -> Result<Vec<RescaleRow>, CliError> {
    let adapter =
        PeftAdapter::read(adapter_dir).map_err(|e| CliError::file("adapter", adapter_dir, e))?;
    let base_file = TensorFile::open(base).map_err(|e| CliError::file("base", base, e))?;
    let pairs = pair_layers(&adapter, &base_file, base)?;
    let selected = |path: &str| layers.is_none_or(|re| re.is_match(path));
    if let Some(re) = layers
        && !pairs.iter().any(|p| selected(&p.path))
    {
        let mut names: Vec<&str> = pairs.iter().map(|p| p.path.as_str()).take(8).collect();
        if pairs.len() > 8 {
            names.push("...");
        }
        return Err(CliError::NoLayerSelected {
            pattern: re.as_str().to_string(),
            available: names.join(", "),
        });
    }

    let bar = layer_bar(pairs.len(), "rescale", progress);
    let mut out = adapter.clone();
    let mut rows = Vec::with_capacity(pairs.len());
    for pair in &pairs {
        bar.set_message(pair.path.clone());
        let path = &pair.path;
        let spectral = |e| CliError::spectral(path, e);
        let sigma1_base = {
            let w0 = base_file
                .matrix(&pair.weight_key)
                .map_err(|e| CliError::file("base", base, e))?
                .to_dmatrix();
            spectral_norm(&w0).map_err(spectral)?
        };
        let factors = &adapter.layers[path];
        let (b, a) = (factors.b.to_dmatrix(), factors.a.to_dmatrix());
        let s = pair.scale;
        let old_ratio = ratio(&b, &a, s, sigma1_base).map_err(spectral)?;
        let is_selected = selected(path);
        let (factor, new_ratio) = if is_selected {
            let factor = match target {
                RescaleTarget::Factor(f) => f,
                RescaleTarget::Ratio(r) => {
                    if s == 0.0 {
                        return Err(spectral(SpectralError::InvalidArgument(
                            "the adapter's scale is zero (lora_alpha = 0): no factor rescales it"
                                .into(),
                        )));
                    }
                    scale_to_sigma1(&b, &a, s, r * sigma1_base).map_err(spectral)? / s
                }
            };
            let root = factor.sqrt();
            let new = LayerFactors {
                a: HostMatrix::from_dmatrix(&(&a * root)),
                b: HostMatrix::from_dmatrix(&(&b * root)),
            };
            if !new.a.is_finite() || !new.b.is_finite() {
                return Err(spectral(SpectralError::NonFinite {
                    what: "rescaled factors (float32 overflow)",
                }));
            }
            let new_ratio = ratio(&new.b.to_dmatrix(), &new.a.to_dmatrix(), s, sigma1_base)
                .map_err(spectral)?;
            out.layers.insert(path.clone(), new);
            (factor, new_ratio)
        } else {
            (1.0, old_ratio)
        };
        rows.push(RescaleRow {
            path: path.clone(),
            selected: is_selected,
            scale: s,
            sigma1_base,
            old_ratio,
            new_ratio,
            factor,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.write(out_dir)
        .map_err(|e| CliError::file("output", out_dir, e))?;
    Ok(rows)
}

/// `σ1(s·B·A)/σ1(W0)`, from the factors.
fn ratio(
    b: &DMatrix<f64>,
    a: &DMatrix<f64>,
    s: f64,
    sigma1_base: f64,
) -> Result<f64, SpectralError> {
    let sigma1_update = factored_svd(b, a, s)?.sigma1();
    Ok(sigma1_update / sigma1_base)
}

/// The per-layer report as a table.
pub fn render_rows(rows: &[RescaleRow]) -> String {
    let width = rows.iter().map(|r| r.path.len()).max().unwrap_or(5).max(5);
    let mut s = format!(
        "{:<width$}  {:>10}  {:>12}  {:>10}  {:>10}  {:>10}\n",
        "layer", "scale", "sigma1(W0)", "old ratio", "new ratio", "factor"
    );
    for r in rows {
        let factor = if r.selected {
            format!("{:.6}", r.factor)
        } else {
            "kept".to_string()
        };
        s.push_str(&format!(
            "{:<width$}  {:>10.4}  {:>12.6}  {:>10.6}  {:>10.6}  {:>10}\n",
            r.path, r.scale, r.sigma1_base, r.old_ratio, r.new_ratio, factor
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
    let rows = rescale(
        &args.adapter,
        &args.base,
        &args.out,
        args.layers.as_ref(),
        target,
        true,
    )?;
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
            sigma1_base: 3.0,
            old_ratio: 0.1,
            new_ratio: 0.1,
            factor: 1.0,
        }];
        let t = render_rows(&rows);
        assert!(t.contains("kept") && t.contains("fc1"), "{t}");
    }
}
