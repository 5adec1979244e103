//! [`RoraConfig`]: which RoRA mechanisms are on, and how strong.

use burn::config::Config;

/// How post-training spectral rescaling (Pt) sets the new scale of a selected layer.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum RescaleTarget {
    /// No rescaling.
    Off,
    /// The paper's rule with a target ratio `ρ`: choose `s'` so that
    /// `σ1(s'·B·A) = ρ·σ1(W0)` (the paper uses `ρ = 1`).
    Ratio(f64),
    /// Multiply the scale by a fixed factor: `s' = f·s`.
    Factor(f64),
    /// Extension: the exact quadratic threshold on the trigger subspace `Vt` (needs a clean
    /// subspace): the smallest `κ` with `‖(W0 + κ·ΔW)·Vt‖F² ≤ η²·‖W0·Vt‖F²`, or the
    /// minimizer `κ = −b/c` when no `κ` reaches it; layers with unfavourable alignment are
    /// left unchanged (and reported).
    ExactThreshold(f64),
}

/// Which adapted layers post-training rescaling touches.
#[derive(Config, Debug, PartialEq)]
pub struct RescaleLayers {
    /// Target patterns (see [`TargetPattern::parse`](crate::TargetPattern::parse)) naming the
    /// layers; patterns that match nothing are ignored as long as something matches.
    #[config(
        default = "vec![\"query\".into(), \"value\".into(), \"q_proj\".into(), \"v_proj\".into()]"
    )]
    pub patterns: Vec<String>,
    /// Keep only layers in the last `n` blocks (a block is the last number in the path,
    /// e.g. `layers.11.attention.query` is block 11). `None`: every matching layer.
    #[config(default = "Some(3)")]
    pub last_blocks: Option<usize>,
}

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

/// Settings of RoRA (regularized LoRA). The defaults are the paper's variants; the
/// project's extensions are off.
///
/// - **Cl** — `base_dropout`: dropout on the frozen branch's output while training
///   (needs [`LoraLinear`](crate::LoraLinear)).
/// - **Tr** — `lambda`, `top_k`: `λ·Σ‖Ukᵀ·B‖F² + ‖A·Vk‖F²` added to the loss.
/// - **Pt** — `rescale`, `rescale_layers`: after training, rescale selected updates.
///
/// [`RoraConfig::plain_lora`] switches everything off and reproduces plain LoRA exactly.
///
/// ```
/// use rora_core::rora::{RoraConfig, RescaleTarget};
/// let paper = RoraConfig::new();
/// assert_eq!(paper.base_dropout, 0.1);
/// assert_eq!(paper.rescale, RescaleTarget::Ratio(1.0));
/// let tr_only = RoraConfig::plain_lora().with_lambda(5.0);
/// assert_eq!(tr_only.base_dropout, 0.0);
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct RoraConfig {
    /// Cl: dropout probability on the frozen branch's output (paper: 0.1; searched 0.05–0.3).
    #[config(default = 0.1)]
    pub base_dropout: f64,
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
    /// Pt: which layers are rescaled (default: query and value of the last three blocks).
    #[config(default = "RescaleLayersConfig::default_layers()")]
    pub rescale_layers: RescaleLayers,
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

/// Helper for the `RescaleLayers` default (burn's `Config` defaults are expressions).
pub struct RescaleLayersConfig;

impl RescaleLayersConfig {
    /// Query and value projections (BERT and LLaMA names) of the last three blocks.
    pub fn default_layers() -> RescaleLayers {
        RescaleLayers::new()
    }
}

impl RoraConfig {
    /// Everything off: `base_dropout = 0`, `λ = 0`, no rescaling. Training with it is plain
    /// LoRA, exactly (same outputs, same gradients).
    pub fn plain_lora() -> Self {
        RoraConfig::new()
            .with_base_dropout(0.0)
            .with_lambda(0.0)
            .with_rescale(RescaleTarget::Off)
    }

    /// Only clean-strengthened dropout (Cl), at the paper's 0.1.
    pub fn cl_only() -> Self {
        RoraConfig::plain_lora().with_base_dropout(0.1)
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
