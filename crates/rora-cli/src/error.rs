//! The CLI's error type: every failure a user can cause, with enough context to fix it.

use std::path::PathBuf;

use rora_peft::AdapterError;
use rora_spectral::SpectralError;

/// Everything that can make a `rora` command fail (usage errors are clap's and never get
/// here).
///
/// Each message is meant to be printed on one line after `error: ` and names the file,
/// tensor or module path concerned.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Reading or writing an adapter or a safetensors file failed.
    #[error("{context}: {source}")]
    Adapter {
        /// What was being done, e.g. `adapter` or `base model.safetensors`.
        context: String,
        /// The underlying error.
        #[source]
        source: AdapterError,
    },
    /// A spectral computation failed for one layer.
    #[error("layer {path:?}: {source}")]
    Spectral {
        /// The module path.
        path: String,
        /// The underlying error.
        #[source]
        source: SpectralError,
    },
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `--adapter-name` names no adapter of the folder, or the folder holds only named
    /// adapters and none was chosen.
    #[error(
        "{dir}: {}; it holds the adapter(s) {}: choose one with --adapter-name NAME",
        match name {
            Some(n) => format!("no adapter named {n:?}"),
            None => "no adapter_config.json of its own (a multi-adapter folder)".to_string(),
        },
        available.join(", "),
        dir = dir.display()
    )]
    AdapterName {
        /// The `--adapter` folder.
        dir: PathBuf,
        /// The `--adapter-name` given, if any.
        name: Option<String>,
        /// The adapter names the folder holds.
        available: Vec<String>,
    },
    /// The adapter names a layer whose weight the base checkpoint does not have.
    #[error(
        "adapter layer {path:?} has no base weight {key:?} in {base}{hint}",
        base = base.display()
    )]
    MissingBaseWeight {
        /// The module path in the adapter.
        path: String,
        /// The base tensor key that was looked for (`<path>.weight`).
        key: String,
        /// The base checkpoint.
        base: PathBuf,
        /// Closest base keys, or empty.
        hint: String,
    },
    /// The adapter's factors do not fit the base weight.
    #[error("{0}")]
    ShapeMismatch(Box<LayerShapeMismatch>),
    /// A base weight has a dtype that cannot be read as floating point.
    #[error("base weight {key:?} in {base} has dtype {dtype}; only F32, F64, F16 and BF16 weights can be adapted", base = base.display())]
    UnsupportedBaseDtype {
        /// The base tensor key.
        key: String,
        /// The dtype found.
        dtype: String,
        /// The base checkpoint.
        base: PathBuf,
    },
    /// `--layers` / `--last-blocks` selected none of the adapter's layers, or a pattern
    /// matched nothing.
    #[error("--layers: {0}")]
    NoLayerSelected(rora_peft::TargetError),
    /// Serializing the JSON report failed.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// An output path is (or resolves to) one of the command's inputs.
    #[error(
        "--out {out} is the {what} {input} (same file): refusing to overwrite an input; choose another output",
        out = out.display(),
        input = input.display()
    )]
    OutputIsInput {
        /// The `--out` argument.
        out: PathBuf,
        /// The input argument it aliases.
        input: PathBuf,
        /// Which input, e.g. `"base checkpoint (--base)"`.
        what: &'static str,
    },
    /// What stands at an output path is not a regular file (a symbolic link, a device, ...)
    /// and `--force` was not given.
    #[error("output: {0}{hint}", hint = force_hint(.0))]
    UnsafeOutput(AdapterError),
    /// A tensor of the base checkpoint that would be read or copied holds NaN or infinity.
    #[error(
        "base tensor {key:?} in {base} holds {count} non-finite value(s) (NaN or infinity){context}",
        base = base.display()
    )]
    NonFiniteBase {
        /// The base tensor key.
        key: String,
        /// The base checkpoint.
        base: PathBuf,
        /// How many values are not finite.
        count: usize,
        /// What follows for the command, e.g. `"; nothing written"`.
        context: &'static str,
    },
    /// Folding the adapter into a base weight gives NaN or infinity (e.g. a huge
    /// `lora_alpha` or `lora_B`, or a value beyond the dtype's range).
    #[error(
        "layer {path:?}: the merged weight {key:?} ({formula}, s = {scale:e}) would hold {count} of {total} value(s) that are not finite in {dtype}; nothing written"
    )]
    NonFiniteMerge {
        /// The module path.
        path: String,
        /// The base tensor key.
        key: String,
        /// How many merged values are not finite.
        count: usize,
        /// How many values the weight has.
        total: usize,
        /// The adapter's scale `s`.
        scale: f64,
        /// The dtype written.
        dtype: String,
        /// What was merged: `"W0 + s·B·A"`, or DoRA's normalised form.
        formula: &'static str,
    },
    /// The spectral analysis of a layer overflows float64 (finite inputs, e.g. a huge
    /// `lora_alpha`).
    #[error(
        "layer {path:?}: the analysis of s·B·A overflows with s = {scale:e} (lora_alpha / r, or / sqrt(r) with rsLoRA): {source}"
    )]
    Overflow {
        /// The module path.
        path: String,
        /// The adapter's scale `s`.
        scale: f64,
        /// The underlying error.
        #[source]
        source: SpectralError,
    },
    /// A selected layer's base weight is zero, so no strength ratio is defined.
    #[error(
        "layer {path:?}: base weight {key:?} in {base} is all zeros (sigma1(W0) = 0): the strength ratio is undefined, nothing to rescale against",
        base = base.display()
    )]
    ZeroBase {
        /// The module path.
        path: String,
        /// The base tensor key.
        key: String,
        /// The base checkpoint.
        base: PathBuf,
    },
    /// A selected layer's update `s·B·A` is zero (e.g. an untrained adapter, `lora_B = 0`).
    #[error(
        "layer {path:?}: the update s·B·A is zero (an untrained adapter has lora_B = 0): there is nothing to rescale; leave the layer out with --layers"
    )]
    ZeroUpdate {
        /// The module path.
        path: String,
    },
    /// The rescaled factors, as written (float32), miss the requested strength.
    #[error(
        "layer {path:?}: the rescaled factors give {what} {achieved:e}, target {target:e} (relative tolerance {tolerance:e}){hint}; nothing written",
        hint = if *achieved == 0.0 { ", they underflow float32 to zero" } else { "" }
    )]
    RescaleMissed {
        /// The module path.
        path: String,
        /// What was measured: `"strength ratio"` or `"update factor"`.
        what: &'static str,
        /// The value reached.
        achieved: f64,
        /// The value asked for.
        target: f64,
        /// The relative tolerance.
        tolerance: f64,
    },
}

fn force_hint(e: &AdapterError) -> &'static str {
    match e {
        AdapterError::UnsafeOutput { kind, .. } if kind.ends_with("it is kept as it is") => {
            " (pass --force to write through it)"
        }
        _ => "",
    }
}

/// Details of [`CliError::ShapeMismatch`]: both sides of a layer whose factors do not fit
/// the base weight.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "adapter layer {path:?} ({kind} layer: A {a_shape:?}, B {b_shape:?}: update [{out}, {inp}], base weight {expected:?}) does not fit base weight {key:?} with shape {base_shape:?} in {base}",
    kind = kind.name(),
    out = b_shape[0],
    inp = a_shape[1],
    expected = kind.base_shape(b_shape[0], a_shape[1]),
    base = base.display()
)]
pub struct LayerShapeMismatch {
    /// The module path in the adapter.
    pub path: String,
    /// `lora_A`'s shape `[r, in]`.
    pub a_shape: [usize; 2],
    /// `lora_B`'s shape `[out, r]`.
    pub b_shape: [usize; 2],
    /// Linear layer or embedding (an embedding's base weight is `[in, out]`).
    pub kind: rora_peft::LayerKind,
    /// The base tensor key.
    pub key: String,
    /// The base weight's shape.
    pub base_shape: Vec<usize>,
    /// The base checkpoint.
    pub base: PathBuf,
}

impl CliError {
    /// Wrap an [`AdapterError`] with what was being done.
    pub fn adapter(context: impl Into<String>, source: AdapterError) -> Self {
        CliError::Adapter {
            context: context.into(),
            source,
        }
    }

    /// Wrap an [`AdapterError`] met while reading or writing the `kind` file or folder
    /// (`"base"`, `"adapter"`, `"output"`) at `path`; the path is added only when the error
    /// does not name a file itself.
    pub fn file(kind: &str, path: &std::path::Path, source: AdapterError) -> Self {
        let names_a_file = match &source {
            AdapterError::Io { .. }
            | AdapterError::InvalidSafetensors { .. }
            | AdapterError::InvalidConfig { .. }
            | AdapterError::NotADirectory { .. }
            | AdapterError::NotAFile { .. }
            | AdapterError::NonFiniteOutput { .. }
            | AdapterError::EmptyAdapter { .. }
            | AdapterError::UnmatchedTargets { .. }
            | AdapterError::UnsafeOutput { .. } => true,
            AdapterError::UnsupportedDtype { path, .. }
            | AdapterError::MissingTensor { path, .. }
            | AdapterError::UnexpectedTensor { path, .. }
            | AdapterError::NotAMatrix { path, .. }
            | AdapterError::FactorShape { path, .. }
            | AdapterError::InconsistentLayer { path, .. }
            | AdapterError::NonFinite { path, .. } => !path.as_os_str().is_empty(),
            _ => false,
        };
        let context = if names_a_file || path.as_os_str().is_empty() {
            kind.to_string()
        } else {
            format!("{kind} {}", path.display())
        };
        CliError::Adapter { context, source }
    }

    /// Wrap a [`SpectralError`] with the layer it concerns.
    pub fn spectral(path: impl Into<String>, source: SpectralError) -> Self {
        CliError::Spectral {
            path: path.into(),
            source,
        }
    }

    /// Wrap an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Io {
            path: path.into(),
            source,
        }
    }

    /// The message on one line: newlines (regex and parser messages can hold some) become
    /// spaces and runs of spaces collapse.
    pub fn one_line(&self) -> String {
        one_line(&self.to_string())
    }
}

/// Collapse any whitespace run (including newlines) into one space and trim.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_name_both_sides() {
        let e = CliError::ShapeMismatch(Box::new(LayerShapeMismatch {
            path: "fc1".into(),
            a_shape: [4, 16],
            b_shape: [32, 4],
            kind: rora_peft::LayerKind::Linear,
            key: "fc1.weight".into(),
            base_shape: vec![31, 16],
            base: "model.safetensors".into(),
        }));
        let m = e.one_line();
        assert!(
            m.contains("\"fc1\"") && m.contains("\"fc1.weight\"") && m.contains("[31, 16]"),
            "{m}"
        );
        assert!(m.contains("update [32, 16]"), "{m}");
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
