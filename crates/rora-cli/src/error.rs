//! The CLI's error type: every failure a user can cause, with enough context to fix it.

use std::path::PathBuf;

use rora_core::peft::AdapterError;
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
    /// `--layers` selected none of the adapter's layers.
    #[error("--layers {pattern:?} matches none of the adapter's layers ({available})")]
    NoLayerSelected {
        /// The regex given.
        pattern: String,
        /// The adapter's module paths, comma-separated (possibly shortened).
        available: String,
    },
    /// Serializing the JSON report failed.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Details of [`CliError::ShapeMismatch`]: both sides of a layer whose factors do not fit
/// the base weight.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "adapter layer {path:?} (lora_A {a_shape:?}, lora_B {b_shape:?}: update [{out}, {inp}]) does not fit base weight {key:?} with shape {base_shape:?} in {base}",
    out = b_shape[0],
    inp = a_shape[1],
    base = base.display()
)]
pub struct LayerShapeMismatch {
    /// The module path in the adapter.
    pub path: String,
    /// `lora_A`'s shape `[r, in]`.
    pub a_shape: [usize; 2],
    /// `lora_B`'s shape `[out, r]`.
    pub b_shape: [usize; 2],
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
        let context = match source {
            AdapterError::Io { .. }
            | AdapterError::InvalidSafetensors { .. }
            | AdapterError::InvalidConfig { .. } => kind.to_string(),
            _ => format!("{kind} {}", path.display()),
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
