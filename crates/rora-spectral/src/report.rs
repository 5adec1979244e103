//! Per-layer spectral report of an adapter: strength, alignment, thresholds.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use crate::angles::{DEFAULT_INTRUDER_THRESHOLD, intruder_dimensions};
use crate::error::{SpectralError, check_dim, check_factors, check_matrix, check_scalar};
use crate::factored::factored_svd;
use crate::metrics::{
    clean_share, effective_rank, frobenius_ratio, left_alignment, right_alignment, strength_ratio,
    subspace_share, update_frobenius,
};
use crate::randomized::top_k;
use crate::threshold::{CriticalScale, critical_scale};

/// Top-`k` spectrum of a frozen weight `W0: out×in`, computed once per layer and
/// reusable for every adapter of that layer (serializable, so it can be cached).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseSpectrum {
    /// Rows of `W0`.
    pub out: usize,
    /// Columns of `W0`.
    #[serde(rename = "in")]
    pub in_: usize,
    /// Top-`k` left singular vectors `Uk`, `out×k`.
    pub u: DMatrix<f64>,
    /// Top-`k` singular values, descending.
    pub singular_values: DVector<f64>,
    /// Top-`k` right singular vectors `Vk`, `in×k`.
    pub v: DMatrix<f64>,
    /// `σ1(W0)`.
    pub sigma1: f64,
    /// `‖W0‖F`.
    pub frobenius: f64,
}

impl BaseSpectrum {
    /// Top-`k` SVD of `w0: out×in` via [`crate::top_k`] (exact up to
    /// `min(out, in) = 256`, adaptive randomized above, where `sigma1` has a relative error
    /// below about `1e-4`; [`crate::spectral_norm`] polishes it to machine precision at the
    /// cost of power iterations, which flat spectra make long).
    ///
    /// # Errors
    /// Empty/non-finite `w0`, [`SpectralError::InvalidArgument`] unless
    /// `1 ≤ k ≤ min(out, in)`.
    pub fn compute(w0: &DMatrix<f64>, k: usize) -> Result<BaseSpectrum, SpectralError> {
        let t = top_k(w0, k)?;
        Ok(BaseSpectrum {
            out: w0.nrows(),
            in_: w0.ncols(),
            sigma1: t.sigma1(),
            frobenius: w0.norm(),
            v: t.v(),
            u: t.u,
            singular_values: t.singular_values,
        })
    }

    /// `k`, the number of stored triplets.
    pub fn k(&self) -> usize {
        self.singular_values.len()
    }
}

/// Spectral report of one adapted layer `W = W0 + ΔW`, `ΔW = scale·B·A`.
///
/// All alignments use the base spectrum's top-`k` subspaces (`Uk`, `Vk`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    /// Module path of the layer (e.g. `encoder.layer.11.attention.self.query`).
    pub path: String,
    /// Output dimension (rows of `W0`).
    pub out: usize,
    /// Input dimension (columns of `W0`).
    #[serde(rename = "in")]
    pub in_: usize,
    /// Adapter rank `r` (columns of `B`).
    pub rank: usize,
    /// Scale `s` of the update.
    pub scale: f64,
    /// `σ1(W0)`.
    pub sigma1_base: f64,
    /// `σ1(s·B·A)`.
    pub sigma1_update: f64,
    /// `σ1(ΔW)/σ1(W0)` (see [`crate::strength_ratio`]).
    pub strength_ratio: f64,
    /// `‖ΔW‖F/‖W0‖F`.
    pub frobenius_ratio: f64,
    /// Effective rank of `ΔW` (see [`crate::effective_rank`]).
    pub effective_rank: f64,
    /// `‖Ukᵀ·B‖F` (unscaled factor, as in the constraint Ω).
    pub left_alignment: f64,
    /// `‖A·Vk‖F` (unscaled factor, as in Ω).
    pub right_alignment: f64,
    /// `a_t = ‖Ukᵀ·ΔW‖F/‖ΔW‖F` (see [`crate::critical_scale`]).
    pub trigger_alignment: f64,
    /// `a_c = √clean_share` with a clean subspace, else `√(1 − a_t²)`.
    pub clean_alignment: f64,
    /// The paper's critical scale `s*` (compare with `scale`).
    pub critical_scale: CriticalScale,
    /// Singular values of `s·B·A`, descending (`min(r, out, in)` values).
    pub singular_values: Vec<f64>,
    /// Intruder dimensions among the top-`k` left singular vectors of the adapted
    /// weight (see [`LayerReport::compute`]).
    pub intruder_dimensions: Vec<usize>,
    /// `k` of the base spectrum used for the alignments.
    pub top_k: usize,
}

impl LayerReport {
    /// Computes the report of `ΔW = scale·B·A` (`b: out×r`, `a: r×in`) against the
    /// base spectrum of `W0`, optionally with a clean input subspace
    /// `Vc: in×kc` (orthonormal columns) for the clean alignment.
    ///
    /// Intruder dimensions are found among the top-`k` left singular vectors of
    /// `Uk·Σk·Vkᵀ + ΔW` — the base's rank-`k` approximation plus the update,
    /// decomposed exactly in factored form (`O((out + in)·(k + r)²)`), compared with
    /// `Uk` at threshold [`DEFAULT_INTRUDER_THRESHOLD`]. This ignores the tail
    /// `W0 − W0,k` (norm `σ_{k+1}(W0)`), so it flags directions the update makes
    /// dominant that lie outside `W0`'s top-`k` subspace.
    ///
    /// # Errors
    /// Empty/non-finite inputs, [`SpectralError::ShapeMismatch`] when the factors do
    /// not fit `out×in` or `Vc` does not have `in` rows,
    /// [`SpectralError::InvalidArgument`] when `σ1(W0) = 0`.
    pub fn compute(
        path: &str,
        base: &BaseSpectrum,
        b: &DMatrix<f64>,
        a: &DMatrix<f64>,
        scale: f64,
        clean_subspace: Option<&DMatrix<f64>>,
    ) -> Result<LayerReport, SpectralError> {
        check_factors(b, a)?;
        check_scalar(scale, "scale")?;
        check_dim("B rows vs W0 rows (out)", base.out, b.nrows())?;
        check_dim("A columns vs W0 columns (in)", base.in_, a.ncols())?;
        check_matrix(&base.u, "base Uk")?;
        if base.sigma1 <= 0.0 || !base.sigma1.is_finite() {
            return Err(SpectralError::InvalidArgument(
                "the base weight has σ1 = 0 (or a non-finite σ1)".to_string(),
            ));
        }
        let unscaled = factored_svd(b, a, 1.0)?;
        let sigma1_unscaled = unscaled.sigma1();
        let svals: DVector<f64> = &unscaled.singular_values * scale.abs();
        let sigma1_update = sigma1_unscaled * scale.abs();
        let fro = update_frobenius(b, a, scale)?;
        let trigger_alignment = subspace_share(&base.u, b, a, scale)?;
        let clean_alignment = match clean_subspace {
            Some(vc) => clean_share(b, a, scale, vc)?.sqrt(),
            None if sigma1_update == 0.0 => 0.0,
            None => (1.0 - trigger_alignment * trigger_alignment)
                .max(0.0)
                .sqrt(),
        };
        let intruders = if sigma1_update == 0.0 {
            Vec::new()
        } else {
            let k = base.k();
            let r = b.ncols();
            let mut bb = DMatrix::zeros(base.out, k + r);
            let mut aa = DMatrix::zeros(k + r, base.in_);
            for j in 0..k {
                bb.column_mut(j)
                    .copy_from(&(base.u.column(j) * base.singular_values[j]));
                aa.row_mut(j).copy_from(&base.v.column(j).transpose());
            }
            bb.columns_mut(k, r).copy_from(&(b * scale));
            aa.rows_mut(k, r).copy_from(a);
            let adapted = factored_svd(&bb, &aa, 1.0)?;
            intruder_dimensions(&adapted.u, &base.u, k, DEFAULT_INTRUDER_THRESHOLD)?
        };
        Ok(LayerReport {
            path: path.to_string(),
            out: base.out,
            in_: base.in_,
            rank: b.ncols(),
            scale,
            sigma1_base: base.sigma1,
            sigma1_update,
            strength_ratio: strength_ratio(sigma1_update, base.sigma1),
            frobenius_ratio: frobenius_ratio(fro, base.frobenius),
            effective_rank: effective_rank(&svals),
            left_alignment: left_alignment(&base.u, b)?,
            right_alignment: right_alignment(a, &base.v)?,
            trigger_alignment,
            clean_alignment,
            critical_scale: critical_scale(
                trigger_alignment,
                clean_alignment,
                base.sigma1,
                sigma1_unscaled,
            ),
            singular_values: svals.iter().copied().collect(),
            intruder_dimensions: intruders,
            top_k: base.k(),
        })
    }
}

fn fmt_num(x: f64) -> String {
    if x == 0.0 {
        "0".to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_string()
    } else if x.abs() >= 1e4 || x.abs() < 1e-3 {
        format!("{x:.3e}")
    } else {
        format!("{x:.4}")
    }
}

/// An aligned plain-text table of reports, one line per layer, for people.
///
/// Columns: path, shape, rank, scale, `σ1(W0)`, `σ1(ΔW)`, strength ratio,
/// Frobenius ratio, effective rank, `‖UkᵀB‖F`, `‖A·Vk‖F`, `a_t`, `a_c`, `s*`
/// (`-` when undefined) and the number of intruder dimensions.
pub fn render_table(reports: &[LayerReport]) -> String {
    let header: Vec<String> = [
        "layer",
        "out×in",
        "r",
        "scale",
        "σ1(W0)",
        "σ1(ΔW)",
        "ρ",
        "fro",
        "erank",
        "‖UkᵀB‖",
        "‖AVk‖",
        "a_t",
        "a_c",
        "s*",
        "intr",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut rows = vec![header];
    for r in reports {
        rows.push(vec![
            r.path.clone(),
            format!("{}×{}", r.out, r.in_),
            r.rank.to_string(),
            fmt_num(r.scale),
            fmt_num(r.sigma1_base),
            fmt_num(r.sigma1_update),
            fmt_num(r.strength_ratio),
            fmt_num(r.frobenius_ratio),
            fmt_num(r.effective_rank),
            fmt_num(r.left_alignment),
            fmt_num(r.right_alignment),
            fmt_num(r.trigger_alignment),
            fmt_num(r.clean_alignment),
            r.critical_scale
                .value()
                .map(fmt_num)
                .unwrap_or_else(|| "-".to_string()),
            r.intruder_dimensions.len().to_string(),
        ]);
    }
    let ncols = rows[0].len();
    let widths: Vec<usize> = (0..ncols)
        .map(|c| {
            rows.iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                let pad = widths[c] - cell.chars().count();
                if c == 0 {
                    format!("{cell}{}", " ".repeat(pad))
                } else {
                    format!("{}{cell}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let total = widths.iter().sum::<usize>() + 2 * (ncols - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn w0() -> DMatrix<f64> {
        DMatrix::from_fn(12, 10, |i, j| {
            if i == j {
                10.0 / (i + 1) as f64
            } else {
                0.01 * ((i * 10 + j) as f64).sin()
            }
        })
    }

    #[test]
    fn report_fields_are_consistent() {
        let w0 = w0();
        let base = BaseSpectrum::compute(&w0, 3).unwrap();
        assert_eq!((base.u.shape(), base.v.shape()), ((12, 3), (10, 3)));
        let b = DMatrix::from_fn(12, 2, |i, j| ((i + 5 * j) as f64 * 0.3).cos());
        let a = DMatrix::from_fn(2, 10, |i, j| ((i * 10 + j) as f64 * 0.2).sin());
        let rep = LayerReport::compute("layer.0", &base, &b, &a, 0.5, None).unwrap();
        let dw = (&b * &a) * 0.5;
        let dense = crate::svd::svd(&dw).unwrap();
        assert_relative_eq!(rep.sigma1_update, dense.sigma1(), epsilon = 1e-10);
        assert_relative_eq!(
            rep.strength_ratio,
            dense.sigma1() / base.sigma1,
            epsilon = 1e-10
        );
        assert_relative_eq!(
            rep.trigger_alignment.powi(2) + rep.clean_alignment.powi(2),
            1.0,
            epsilon = 1e-12
        );
        let expected =
            (rep.trigger_alignment / rep.clean_alignment) * base.sigma1 / (rep.sigma1_update / 0.5);
        assert_relative_eq!(
            rep.critical_scale.value().unwrap(),
            expected,
            epsilon = 1e-10
        );
        let json = serde_json::to_string(&rep).unwrap();
        assert!(json.contains("\"in\":10"));
        let back: LayerReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rep);
        let vc = DMatrix::<f64>::identity(10, 4);
        let rep2 = LayerReport::compute("layer.0", &base, &b, &a, 0.5, Some(&vc)).unwrap();
        assert_relative_eq!(
            rep2.clean_alignment,
            ((&dw * &vc).norm() / dw.norm()),
            epsilon = 1e-12
        );
        let table = render_table(&[rep, rep2]);
        assert_eq!(table.lines().count(), 4);
        assert!(table.contains("layer.0"));
    }

    #[test]
    fn zero_update_report_is_explicit() {
        let base = BaseSpectrum::compute(&w0(), 2).unwrap();
        let rep = LayerReport::compute(
            "z",
            &base,
            &DMatrix::zeros(12, 4),
            &DMatrix::zeros(4, 10),
            2.0,
            None,
        )
        .unwrap();
        assert_eq!(rep.strength_ratio, 0.0);
        assert!(matches!(
            rep.critical_scale,
            CriticalScale::Undefined { .. }
        ));
        assert!(rep.singular_values.iter().all(|&s| s == 0.0));
        assert!(!serde_json::to_string(&rep).unwrap().contains("NaN"));
    }

    #[test]
    fn report_errors() {
        let base = BaseSpectrum::compute(&w0(), 2).unwrap();
        let b = DMatrix::zeros(11, 2);
        let a = DMatrix::zeros(2, 10);
        assert!(LayerReport::compute("x", &base, &b, &a, 1.0, None).is_err());
        assert!(BaseSpectrum::compute(&w0(), 0).is_err());
        assert!(BaseSpectrum::compute(&DMatrix::zeros(0, 0), 1).is_err());
        let zero = BaseSpectrum::compute(&DMatrix::zeros(3, 3), 1).unwrap();
        assert!(
            LayerReport::compute(
                "x",
                &zero,
                &DMatrix::zeros(3, 1),
                &DMatrix::zeros(1, 3),
                1.0,
                None
            )
            .is_err()
        );
    }
}
