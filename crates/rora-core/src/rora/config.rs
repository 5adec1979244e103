//! [`RoraConfig`]: which RoRA mechanisms are on, and how strong.

use burn::config::Config;

pub use crate::peft::LayerSelection;
pub use rora_spectral::RescaleTarget;

/// Extension (off by default): keep the update's strength on the clean subspace above a
/// target, `weight · max(0, τ − ‖ΔW·Vc‖F/‖W0·Vc‖F)²` per layer with a clean subspace.
#[derive(Config, Debug, PartialEq)]
pub struct CleanStrengthConfig {
    /// Target ratio `τ`.
    pub tau: f64,
    /// Weight of the term in the loss.
    #[config(default = 1.0)]
    pub weight: f64,
}

/// Extension (off by default): cancel the strong directions clean data does not visit,
/// `weight · ‖(W0 + ΔW)·Vt‖F² / ‖W0·Vt‖F²`, with `Vt` the top right singular vectors of
/// `W0·(I − Vc·Vcᵀ)`.
#[derive(Config, Debug, PartialEq)]
pub struct TriggerCancellationConfig {
    /// Number of trigger directions `kt`.
    #[config(default = 8)]
    pub k: usize,
    /// Weight of the term in the loss.
    #[config(default = 1.0)]
    pub weight: f64,
}

/// Settings of RoRA's training-time constraint and post-training rescaling. The defaults
/// are the paper's; the project's extensions are off.
///
/// - **Tr** — `lambda`, `top_k`: `λ·Σ‖Ukᵀ·B‖F² + ‖A·Vk‖F²` added to the loss.
/// - **Pt** — `rescale`, `rescale_layers`: after training, rescale the selected updates
///   (every adapted layer unless told otherwise).
///
/// RoRA's third mechanism, **Cl** (clean-strengthened dropout on the frozen branch), is a
/// property of the adapted layer and lives in [`LoraConfig::base_dropout`](crate::LoraConfig)
/// (the paper uses 0.1).
///
/// [`RoraConfig::plain_lora`] switches everything off and reproduces plain LoRA exactly.
///
/// ```
/// use rora_core::rora::{LayerSelection, RescaleTarget, RoraConfig};
/// let paper = RoraConfig::new();
/// assert_eq!(paper.lambda, 1.0);
/// assert_eq!(paper.rescale, RescaleTarget::Ratio(1.0));
/// assert_eq!(paper.rescale_layers, LayerSelection::all());
/// // The paper's BERT choice: query and value of the last three blocks.
/// let bert = RoraConfig::new()
///     .with_rescale_layers(LayerSelection::patterns(["query", "value"]).with_last_blocks(3));
/// let tr_only = RoraConfig::plain_lora().with_lambda(5.0);
/// assert_eq!(tr_only.rescale, RescaleTarget::Off);
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct RoraConfig {
    /// Tr: weight `λ` of the trigger-insensitive constraint (paper grid: 1, 5, 10, 15, 20).
    #[config(default = 1.0)]
    pub lambda: f64,
    /// Tr: number `k` of top singular directions of `W0` the update must avoid
    /// (`k < min(in, out)`).
    #[config(default = 8)]
    pub top_k: usize,
    /// Pt: how selected layers are rescaled after training.
    #[config(default = "RescaleTarget::Ratio(1.0)")]
    pub rescale: RescaleTarget,
    /// Pt: which adapted layers are rescaled (default: all of them).
    #[config(default = "LayerSelection::all()")]
    pub rescale_layers: LayerSelection,
    /// The scale `alpha/rank` of burn-native adapters (`Module::apply_lora`), which burn does
    /// not expose to module visitors; needed for Pt and reports on such models.
    pub native_lora_scale: Option<f64>,
    /// Extension: clean-subspace strength target (needs clean subspaces).
    pub clean_strength: Option<CleanStrengthConfig>,
    /// Extension: trigger-subspace cancellation (needs clean subspaces).
    pub trigger_cancellation: Option<TriggerCancellationConfig>,
    /// Extension: weight of the insertion-invariance loss (symmetric KL between predictions
    /// on clean and randomly perturbed inputs); the training loop computes it with
    /// [`insertion_invariance`](crate::rora::insertion_invariance). 0 = off.
    #[config(default = 0.0)]
    pub insertion_invariance: f64,
}

impl RoraConfig {
    /// Everything off: `λ = 0`, no rescaling. Training with it (and adapters without base
    /// dropout) is plain LoRA, exactly (same outputs, same gradients).
    pub fn plain_lora() -> Self {
        RoraConfig::new()
            .with_lambda(0.0)
            .with_rescale(RescaleTarget::Off)
    }

    /// Only the trigger-insensitive constraint (Tr) with the given `λ`.
    pub fn tr_only(lambda: f64) -> Self {
        RoraConfig::plain_lora().with_lambda(lambda)
    }

    /// Only post-training rescaling (Pt) to `σ1(ΔW) = σ1(W0)`.
    pub fn pt_only() -> Self {
        RoraConfig::plain_lora().with_rescale(RescaleTarget::Ratio(1.0))
    }
}
