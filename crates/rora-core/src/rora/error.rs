//! Errors of the RoRA engine.

use rora_spectral::SpectralError;

/// What can go wrong preparing or applying RoRA.
#[derive(Debug, thiserror::Error)]
pub enum RoraError {
    /// The model has no adapted layer to regularize.
    #[error("the model has no adapted layers (attach adapters before preparing RoRA)")]
    NoAdaptedLayers,
    /// `top_k` is not smaller than `min(in, out)` of a layer.
    #[error(
        "layer {path:?}: top_k = {k} must be smaller than min(in, out) = {max} (with k = min(in, out), the \
         constraint collapses to plain weight decay)"
    )]
    TopKTooLarge {
        /// The layer.
        path: String,
        /// The requested `k`.
        k: usize,
        /// `min(in, out)`.
        max: usize,
    },
    /// Clean-strengthened dropout was asked for on a burn-native adapter.
    #[error(
        "layer {path:?}: clean-strengthened regularization (base_dropout > 0) needs the base and adapter \
         branches computed separately, which only LoraLinear does; burn's apply_lora composes one dense \
         weight per forward. Use LoraLinear for this layer or set base_dropout = 0"
    )]
    BaseDropoutOnNative {
        /// The layer.
        path: String,
    },
    /// A burn-native adapter's scale was needed but `native_lora_scale` is not set.
    #[error(transparent)]
    NativeScale(#[from] crate::adapted::NativeScaleUnknown),
    /// The model's adapted layers differ from those RoRA was prepared on.
    #[error("layer {path:?} was not adapted when RoRA was prepared (prepare again on this model)")]
    LayerNotPrepared {
        /// The layer.
        path: String,
    },
    /// A mechanism needs a clean subspace that was not given for this layer.
    #[error("layer {path:?}: {mechanism} needs a clean subspace (Rora::set_clean_subspace)")]
    NoCleanSubspace {
        /// The layer.
        path: String,
        /// The mechanism.
        mechanism: &'static str,
    },
    /// Rescaling selected no layer.
    #[error("no adapted layer matches the rescale selection {patterns:?}")]
    NothingToRescale {
        /// The selection's patterns.
        patterns: Vec<String>,
    },
    /// A target pattern is invalid.
    #[error(transparent)]
    Target(#[from] crate::target::TargetError),
    /// A numerical routine failed for a layer.
    #[error("layer {path:?}: {source}")]
    Spectral {
        /// The layer.
        path: String,
        /// The numerical error.
        source: SpectralError,
    },
    /// An invalid setting.
    #[error("invalid RoRA setting: {0}")]
    InvalidSetting(String),
    /// Reading or writing the cache failed.
    #[error("{path}: {message}")]
    Cache {
        /// The cache file.
        path: std::path::PathBuf,
        /// What failed.
        message: String,
    },
}
