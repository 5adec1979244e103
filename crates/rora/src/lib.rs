//! # rora — regularized LoRA for burn
//!
//! Low-rank adapters for [burn](https://burn.dev) models that can *forget a backdoor*.
//! A pretrained model may carry a backdoor (a trigger word flips its prediction); ordinary
//! LoRA fine-tuning on clean data leaves it in place. RoRA — clean-strengthened dropout, a
//! trigger-insensitive constraint and post-training spectral rescaling — removes it.
//!
//! This facade re-exports:
//! - [`core`] (`rora-core`): the [`LoraLinear`] layer, RoRA ([`Rora`], [`RoraConfig`]),
//!   adapter targeting and HuggingFace PEFT adapter files;
//! - [`spectral`] (`rora-spectral`): spectral analysis of adapters on nalgebra.
//!
//! The most used items are also at the top level. See the workspace README for a
//! quickstart and `examples/` for the backdoor benchmark.
//!
//! ```
//! use rora::{LoraConfig, RoraConfig};
//! let lora = LoraConfig::new(8, 16.0);
//! let rora = RoraConfig::new(); // the paper's Cl + Tr + Pt
//! assert_eq!(lora.scale(), 2.0);
//! assert_eq!(rora.base_dropout, 0.1);
//! ```
#![warn(missing_docs)]

pub use rora_core as core;
pub use rora_spectral as spectral;

pub use rora_core::rora::{RescaleLayers, RescaleTarget};
pub use rora_core::{
    AdaptedLayer, AdapterError, AdapterKind, AdapterOptions, LoraConfig, LoraInit, LoraLinear,
    LoraModel, ParamSummary, PeftAdapter, Rora, RoraConfig, RoraError, Targets, adapted_layers,
    attach_adapter, burn, inject_lora, join_path, load_adapter, save_adapter,
};
