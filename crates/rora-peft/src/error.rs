//! Errors of the adapter-file layer.

use std::path::{Path, PathBuf};

/// Everything that can go wrong reading, writing or applying a PEFT adapter.
///
/// Each variant names the file, tensor key or module path concerned, so the message alone
/// tells a user what to fix. Variants about one tensor of a file carry the file's `path`
/// (empty when the tensor did not come from a file, e.g. [`HostTensor::into_matrix`]).
///
/// [`HostTensor::into_matrix`]: crate::HostTensor::into_matrix
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// An adapter folder argument is not a folder.
    #[error(
        "{path}: not a folder (a PEFT adapter is a folder holding adapter_config.json and adapter_model.safetensors)",
        path = path.display()
    )]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// A file argument is not a regular file (a folder, a device, a FIFO, ...).
    #[error("{path}: is {kind}, not a regular file", path = path.display())]
    NotAFile {
        /// The path given.
        path: PathBuf,
        /// What it is, e.g. `"a folder"`.
        kind: &'static str,
    },
    /// `adapter_config.json` is not valid JSON or lacks a required key.
    #[error("{path}: invalid adapter config: {message}", path = path.display())]
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
    #[error("{path}: invalid safetensors file: {message}", path = path.display())]
    InvalidSafetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message (naming the tensor whose header entry is wrong, when one is).
        message: String,
    },
    /// A tensor uses a dtype this crate cannot convert to float32.
    #[error(
        "{}tensor {key:?} has unsupported dtype {dtype} (only F32, F64, F16 and BF16 are read)",
        in_file(path)
    )]
    UnsupportedDtype {
        /// The file (empty if none).
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// The dtype found.
        dtype: String,
    },
    /// A tensor the adapter needs is absent.
    #[error("{}missing tensor {key:?}", in_file(path))]
    MissingTensor {
        /// The file (empty if none).
        path: PathBuf,
        /// The expected tensor key.
        key: String,
    },
    /// The adapter file holds a tensor that belongs to no LoRA factor.
    #[error(
        "{}unexpected tensor {key:?} in adapter file (expected only <module>.lora_A.weight / .lora_B.weight, .lora_embedding_A / .lora_embedding_B, .lora_magnitude_vector)",
        in_file(path)
    )]
    UnexpectedTensor {
        /// The adapter weights file.
        path: PathBuf,
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
    /// A tensor read as a matrix is not 2-D.
    #[error(
        "{}tensor {key:?} has shape {shape:?}: expected a 2-D matrix",
        in_file(path)
    )]
    NotAMatrix {
        /// The file (empty if none).
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// The shape found.
        shape: Vec<usize>,
    },
    /// A LoRA factor's shape does not fit PEFT's layout or the config's rank.
    #[error(
        "{}tensor {key:?} has shape {found:?}, expected {expected}",
        in_file(path)
    )]
    FactorShape {
        /// The adapter weights file (empty for an adapter in memory).
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// The shape found.
        found: Vec<usize>,
        /// The shape required, described (e.g. `[r = 4, in] (lora_A is [r, in]) ...`).
        expected: String,
    },
    /// The tensors of one layer do not go together (linear and embedding names mixed), or
    /// disagree with the config (a DoRA magnitude vector without `use_dora`, or `use_dora`
    /// without one).
    #[error("{}layer {layer:?}: {message}", in_file(path))]
    InconsistentLayer {
        /// The adapter weights file (empty for an adapter in memory).
        path: PathBuf,
        /// The module path.
        layer: String,
        /// What is wrong, naming the tensor keys.
        message: String,
    },
    /// A tensor read from a file holds NaN or infinity.
    #[error(
        "{}tensor {key:?} contains {count} non-finite value(s) (NaN or infinity)",
        in_file(path)
    )]
    NonFinite {
        /// The file (empty if none).
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// How many values are not finite.
        count: usize,
    },
    /// A tensor about to be written holds NaN or infinity (after conversion to the dtype
    /// written): the file was not written.
    #[error(
        "{path}: tensor {key:?} would hold {count} non-finite value(s) (NaN or infinity); nothing written",
        path = path.display()
    )]
    NonFiniteOutput {
        /// The file that was to be written.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// How many values are not finite.
        count: usize,
    },
    /// The adapter file holds no tensor at all.
    #[error(
        "{}the adapter holds no tensors (no lora_A / lora_B factors)",
        in_file(path)
    )]
    EmptyAdapter {
        /// The adapter weights file (or folder, when writing).
        path: PathBuf,
    },
    /// Names of the config's `target_modules` that select none of the adapter's layers.
    #[error(
        "{path}: target_modules {targets:?} match(es) no layer of the adapter file, whose layers are: {}",
        layers.join(", "),
        path = path.display()
    )]
    UnmatchedTargets {
        /// The config file.
        path: PathBuf,
        /// The entries (or regex) of `target_modules` that match nothing.
        targets: Vec<String>,
        /// The adapter's layer paths (up to 20).
        layers: Vec<String>,
    },
    /// An output path is something other than a regular file (or absent), and the write was
    /// not forced: nothing was written.
    #[error("refusing to replace {path}: it is {kind}", path = path.display())]
    UnsafeOutput {
        /// The output path.
        path: PathBuf,
        /// What stands there, e.g. `"a symbolic link to model.safetensors"`.
        kind: String,
    },
    /// The adapter names a module that the model (or base checkpoint) does not have.
    #[error("adapter layer {path:?} has no matching layer in the model{hint}")]
    UnknownLayer {
        /// The module path from the adapter file.
        path: String,
        /// Extra context (closest names, base file), may be empty.
        hint: String,
    },
    /// A multi-adapter folder (or set) has no adapter of this name.
    #[error(
        "{}no adapter named {name:?}{}",
        in_file(dir),
        if available.is_empty() {
            " (no adapter_config.json in the folder or any subfolder)".to_string()
        } else {
            format!(" (adapters there: {})", available.join(", "))
        }
    )]
    UnknownAdapter {
        /// The multi-adapter folder (empty for a set in memory).
        dir: PathBuf,
        /// The name asked for.
        name: String,
        /// The names there are.
        available: Vec<String>,
    },
    /// An adapter of this name exists already.
    #[error("an adapter named {name:?} exists already (delete it first, or choose another name)")]
    DuplicateAdapter {
        /// The name.
        name: String,
    },
    /// An adapter name that cannot be a folder name in PEFT's multi-adapter layout.
    #[error(
        "invalid adapter name {name:?}: it names a subfolder, so it must not be empty, \".\" or \"..\", nor hold / or \\"
    )]
    InvalidAdapterName {
        /// The name given.
        name: String,
    },
    /// Adapters that cannot be combined by [`weighted_adapter`](crate::weighted_adapter).
    #[error("cannot combine adapters: {message}")]
    Combination {
        /// What is wrong, naming the adapter or layer.
        message: String,
    },
    /// The model has an adapted layer the adapter file does not provide.
    #[error("model layer {path:?} is adapted but the adapter file has no factors for it")]
    MissingLayer {
        /// The module path in the model.
        path: String,
    },
}

/// `"<file>: "` for a non-empty path, `""` otherwise.
fn in_file(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        String::new()
    } else {
        format!("{}: ", path.display())
    }
}

impl AdapterError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AdapterError::Io {
            path: path.into(),
            source,
        }
    }
}
