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
    /// A layer's update is merged into its weight, so `W0` cannot be read from it.
    #[error(
        "layer {path:?} is merged (its weight holds W0 + ΔW): unmerge it before preparing, \
         reporting or rescaling"
    )]
    Merged {
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
    /// RoRA was prepared on a layer the model no longer has an adapter for.
    #[error(
        "layer {path:?} was prepared but the model has no adapter there (prepare again on this model)"
    )]
    LayerMissing {
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
    /// Rescaling did not reach its target for a layer (float32 factors could not hold it),
    /// or produced non-finite factors; nothing was written.
    #[error(
        "layer {path:?}: rescaling to {target} gave strength ratio {got} (wanted {wanted}); \
         the model is unchanged"
    )]
    RescaleMissed {
        /// The layer.
        path: String,
        /// The target.
        target: rora_spectral::RescaleTarget,
        /// `σ1(ΔW')/σ1(W0)` wanted.
        wanted: f64,
        /// `σ1(ΔW')/σ1(W0)` of the factors as they would be written (NaN if non-finite).
        got: f64,
    },
    /// Writing rescaled factors into the model failed (the model lacks a parameter RoRA
    /// found when it read the layer).
    #[error(transparent)]
    Replace(#[from] crate::replace::ReplaceError),
    /// A target pattern is invalid, or a selection keeps no layer.
    #[error(transparent)]
    Target(#[from] crate::peft::TargetError),
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
