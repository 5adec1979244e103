//! `rora merge`: fold every adapter into its base weight, `W = W0 + s·B·A`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::Path;

use memmap2::Mmap;
use rora_peft::{
    AdapterError, LayerFactors, LayerKind, RawTensor, TensorFile, encode_f32, non_finite_count,
    write_safetensors_atomic_with,
};
use safetensors::SafeTensors;

use crate::cli::MergeArgs;
use crate::error::CliError;
use crate::guard::{check_output_file, inputs, unsafe_output};
use crate::pairing::{LayerPair, pair_layers};
use crate::progress::layer_bar;
use crate::{RunOptions, read_adapter};

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeSummary {
    /// Base tensors that received an adapter (module paths).
    pub merged: Vec<String>,
    /// Base tensors copied unchanged.
    pub copied: usize,
}

/// A base checkpoint mapped read-only, for copying tensors byte for byte.
struct RawFile {
    mmap: Mmap,
}

impl RawFile {
    fn open(path: &Path) -> Result<Self, CliError> {
        let file = File::open(path).map_err(|e| CliError::io(path, e))?;
        // SAFETY: a read-only map; the file is not modified by this process while mapped.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| CliError::io(path, e))?;
        Ok(RawFile { mmap })
    }

    fn parse(&self, path: &Path) -> Result<SafeTensors<'_>, CliError> {
        SafeTensors::deserialize(&self.mmap).map_err(|e| {
            CliError::file(
                "base",
                path,
                AdapterError::InvalidSafetensors {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                },
            )
        })
    }

    fn metadata(&self) -> Option<HashMap<String, String>> {
        SafeTensors::read_metadata(&self.mmap)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
    }
}

/// Merge the adapter at `adapter_dir` into the base checkpoint `base` and write the result to
/// `out` atomically.
///
/// Every base tensor keeps its name, shape and dtype; adapted weights become
/// `W0 + s·B·A` (accumulated in float64, rounded once to the base dtype); every other tensor
/// is copied byte for byte, and the base file's `__metadata__` is kept. Base weights are read
/// one at a time from the memory map; the output is assembled in memory and written with a
/// temporary file in `out`'s folder renamed over `out`, so a failure leaves no partial file.
///
/// Refused before anything is written: `out` aliasing an input or (without
/// [`Overwrite::Force`](rora_peft::Overwrite::Force)) not a regular file; a base tensor to
/// be read or copied, or a merged weight (in its dtype), holding NaN or infinity.
pub fn merge(
    base: &Path,
    adapter_dir: &Path,
    out: &Path,
    options: &RunOptions,
) -> Result<MergeSummary, CliError> {
    check_output_file(out, out, &inputs(base, adapter_dir), options.overwrite)?;
    let adapter = read_adapter(adapter_dir, options)?;
    let base_file = TensorFile::open(base).map_err(|e| CliError::file("base", base, e))?;
    let pairs = pair_layers(&adapter, &base_file, base)?;
    let by_key: BTreeMap<&str, &LayerPair> =
        pairs.iter().map(|p| (p.weight_key.as_str(), p)).collect();

    let raw = RawFile::open(base)?;
    let parsed = raw.parse(base)?;
    let bar = layer_bar(pairs.len(), "merge", options.progress);
    let mut tensors: BTreeMap<String, RawTensor> = BTreeMap::new();
    let mut copied = 0;
    // In name order, so that the first layer to fail is always the same one.
    let mut views = parsed.iter().collect::<Vec<_>>();
    views.sort_by(|a, b| a.0.cmp(b.0));
    for (name, view) in views {
        let tensor = match by_key.get(name) {
            Some(pair) => {
                bar.set_message(pair.path.clone());
                let w0 = base_file
                    .tensor(name)
                    .map_err(|e| CliError::file("base", base, e))?;
                let count = w0.data.iter().filter(|v| !v.is_finite()).count();
                if count > 0 {
                    return Err(CliError::NonFiniteBase {
                        key: name.to_string(),
                        base: base.to_path_buf(),
                        count,
                        context: "; nothing written",
                    });
                }
                let merged = merged_weight(&w0.data, &adapter.layers[&pair.path], pair.scale);
                let bytes = encode_f32(&merged, view.dtype(), name)
                    .map_err(|e| CliError::adapter("merging", e))?;
                let count = non_finite_count(view.dtype(), &bytes);
                if count > 0 {
                    return Err(CliError::NonFiniteMerge {
                        path: pair.path.clone(),
                        key: name.to_string(),
                        count,
                        total: merged.len(),
                        scale: pair.scale,
                        dtype: format!("{:?}", view.dtype()),
                        formula: if adapter.layers[&pair.path].is_dora() {
                            "DoRA: m·(W0 + s·B·A)/‖W0 + s·B·A‖ per row, a zero row has no direction"
                        } else {
                            "W0 + s·B·A"
                        },
                    });
                }
                bar.inc(1);
                RawTensor {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    bytes,
                }
            }
            None => {
                let count = non_finite_count(view.dtype(), view.data());
                if count > 0 {
                    return Err(CliError::NonFiniteBase {
                        key: name.to_string(),
                        base: base.to_path_buf(),
                        count,
                        context: " and would be copied into the output; nothing written",
                    });
                }
                copied += 1;
                RawTensor {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    bytes: view.data().to_vec(),
                }
            }
        };
        tensors.insert(name.to_string(), tensor);
    }
    bar.finish_and_clear();
    write_safetensors_atomic_with(out, &tensors, raw.metadata(), options.overwrite)
        .map_err(unsafe_output)?;
    Ok(MergeSummary {
        merged: pairs.into_iter().map(|p| p.path).collect(),
        copied,
    })
}

/// The merged base weight, in the base file's layout, accumulated in float64 row by row of
/// the `[out, in]` update (no dense float64 copy of the update is formed):
///
/// * LoRA: `W0 + scale·B·A`;
/// * DoRA (`factors.magnitude` is `m`): `diag(m/n)·(W0 + scale·B·A)` with `n` the norm of
///   each row of `W0 + scale·B·A`, as PEFT merges it (a zero row gives NaN, which the caller
///   refuses);
/// * an embedding (`[num_embeddings, embedding_dim]` table, the `[out, in]` view
///   transposed): the table plus `(scale·B·A)ᵀ`, with DoRA's factor on each column.
///
/// `w0` is row-major in the file's layout (`[out, in]` for a linear layer).
pub fn merged_weight(w0: &[f32], factors: &LayerFactors, scale: f64) -> Vec<f32> {
    let (out, inp, r) = (factors.d_out(), factors.d_in(), factors.rank());
    debug_assert_eq!(w0.len(), out * inp);
    let a = &factors.a.data;
    let b = &factors.b.data;
    let embedding = factors.kind == LayerKind::Embedding;
    // Element (i, j) of the [out, in] view, in the file's row-major layout.
    let at = |i: usize, j: usize| if embedding { j * out + i } else { i * inp + j };
    let mut merged = vec![0f32; w0.len()];
    let mut row = vec![0f64; inp];
    for i in 0..out {
        row.iter_mut().for_each(|v| *v = 0.0);
        for k in 0..r {
            let bik = f64::from(b[i * r + k]);
            if bik == 0.0 {
                continue;
            }
            let a_row = &a[k * inp..(k + 1) * inp];
            for (acc, &akj) in row.iter_mut().zip(a_row) {
                *acc += bik * f64::from(akj);
            }
        }
        for (j, v) in row.iter_mut().enumerate() {
            *v = f64::from(w0[at(i, j)]) + scale * *v;
        }
        let gain = match &factors.magnitude {
            Some(m) => f64::from(m[i]) / row.iter().map(|v| v * v).sum::<f64>().sqrt(),
            None => 1.0,
        };
        for (j, v) in row.iter().enumerate() {
            merged[at(i, j)] = (gain * v) as f32;
        }
    }
    merged
}

/// Run `rora merge` and print a one-line summary on `out`.
pub fn run(args: &MergeArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let options = RunOptions::from_flags(args.strict, args.force);
    let adapter = crate::resolve_adapter(&args.adapter, args.adapter_name.as_deref())?;
    let summary = merge(&args.base, &adapter, &args.out, &options)?;
    let text = format!(
        "merged {} adapted layer(s) ({}), copied {} tensor(s) unchanged -> {}\n",
        summary.merged.len(),
        summary.merged.join(", "),
        summary.copied,
        args.out.display()
    );
    crate::write_stdout(out, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rora_peft::HostMatrix;

    fn factors() -> LayerFactors {
        LayerFactors::new(
            HostMatrix::new(2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            HostMatrix::new(2, 2, vec![1.0, 0.0, 0.5, -1.0]),
        )
    }

    const W0: [f32; 6] = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];

    /// `W0 + 2·B·A` in float64, `[out = 2, in = 3]`.
    fn dense() -> nalgebra::DMatrix<f64> {
        let f = factors();
        nalgebra::DMatrix::from_row_slice(2, 3, &W0.map(f64::from))
            + f.b.to_dmatrix() * f.a.to_dmatrix() * 2.0
    }

    #[test]
    fn merged_weight_matches_dense_product() {
        let m = merged_weight(&W0, &factors(), 2.0);
        let want = dense();
        for i in 0..2 {
            for j in 0..3 {
                assert!((f64::from(m[i * 3 + j]) - want[(i, j)]).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn dora_rows_have_the_magnitude_as_length_in_the_updated_direction() {
        let mag = [3.0f32, 0.5];
        let merged = merged_weight(&W0, &factors().with_magnitude(mag.to_vec()), 2.0);
        let want = dense();
        for i in 0..2 {
            let n = want.row(i).norm();
            for j in 0..3 {
                let w = f64::from(mag[i]) * want[(i, j)] / n;
                assert!(
                    (f64::from(merged[i * 3 + j]) - w).abs() < 1e-6,
                    "({i}, {j})"
                );
            }
        }
    }

    #[test]
    fn an_embedding_table_is_the_transposed_view() {
        // The table [in = 3, out = 2] holds W0ᵀ.
        let table: Vec<f32> = (0..3)
            .flat_map(|j| (0..2).map(move |i| W0[i * 3 + j]))
            .collect();
        let f = factors();
        let emb = LayerFactors::embedding(f.a.clone(), f.b.clone());
        let merged = merged_weight(&table, &emb, 2.0);
        let want = dense();
        for i in 0..2 {
            for j in 0..3 {
                assert!((f64::from(merged[j * 2 + i]) - want[(i, j)]).abs() < 1e-6);
            }
        }
    }
}
