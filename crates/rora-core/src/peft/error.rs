//! Errors of the adapter-file layer.

use std::path::PathBuf;

/// Everything that can go wrong reading, writing or applying a PEFT adapter.
///
/// Each variant names the file, tensor key or module path concerned, so the message alone
/// tells a user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// `adapter_config.json` is not valid JSON or lacks a required key.
    #[error("{path}: invalid adapter config: {message}")]
    InvalidConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The config's `peft_type` is not `LORA`.
    #[error("unsupported peft_type {found:?}: only \"LORA\" adapters are supported")]
    UnsupportedPeftType {
        /// The `peft_type` found in the config.
        found: String,
    },
    /// The config asks for a LoRA variant this crate does not implement.
    #[error("unsupported adapter setting: {setting}")]
    UnsupportedSetting {
        /// The setting, e.g. `use_dora = true`.
        setting: String,
    },
    /// A safetensors file is truncated, malformed or not safetensors at all.
    #[error("{path}: invalid safetensors file: {message}")]
    InvalidSafetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A tensor uses a dtype this crate cannot convert to float32.
    #[error("tensor {key:?} has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The tensor key.
        key: String,
        /// The dtype found.
        dtype: String,
    },
    /// A tensor the adapter needs is absent.
    #[error("missing tensor {key:?}")]
    MissingTensor {
        /// The expected tensor key.
        key: String,
    },
    /// The adapter file holds a tensor that belongs to no LoRA factor.
    #[error(
        "unexpected tensor {key:?} in adapter file (expected only <module>.lora_A.weight / <module>.lora_B.weight)"
    )]
    UnexpectedTensor {
        /// The unexpected key.
        key: String,
    },
    /// A tensor has the wrong shape.
    #[error("tensor {key:?} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor key.
        key: String,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A tensor holds NaN or infinity.
    #[error("tensor {key:?} contains non-finite values")]
    NonFinite {
        /// The tensor key.
        key: String,
    },
    /// The adapter names a module that the model (or base checkpoint) does not have.
    #[error("adapter layer {path:?} has no matching layer in the model{hint}")]
    UnknownLayer {
        /// The module path from the adapter file.
        path: String,
        /// Extra context (closest names, base file), may be empty.
        hint: String,
    },
    /// The model has an adapted layer the adapter file does not provide.
    #[error("model layer {path:?} is adapted but the adapter file has no factors for it")]
    MissingLayer {
        /// The module path in the model.
        path: String,
    },
}

impl AdapterError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AdapterError::Io {
            path: path.into(),
            source,
        }
    }
}
