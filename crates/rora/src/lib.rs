//! # rora — regularized LoRA for burn
//!
//! Low-rank adapters for [burn](https://burn.dev) models that can *forget a backdoor*.
//! A pretrained model may carry a backdoor (a trigger word flips its prediction); ordinary
//! LoRA fine-tuning on clean data leaves it in place. RoRA — clean-strengthened dropout, a
//! trigger-insensitive constraint and post-training spectral rescaling — removes it.
//!
//! This facade re-exports:
//! - [`core`] (`rora-core`): the [`LoraLinear`] and [`LoraEmbedding`] layers (LoRA or DoRA),
//!   RoRA ([`Rora`], [`RoraConfig`]), adapter targeting, several named adapters per model and
//!   HuggingFace PEFT adapter files;
//! - [`spectral`] (`rora-spectral`): spectral analysis of adapters on nalgebra.
//!
//! The most used items are also at the top level:
//!
//! ```
//! use rora::burn::{self, module::Module, nn::LinearConfig, tensor::Device};
//! use rora::{LoraConfig, LoraLinear, LoraModel, Rora, RoraConfig, Targets};
//!
//! #[derive(Module, LoraModel, Debug)]
//! struct Net { body: LoraLinear, head: LoraLinear }
//!
//! let device = Device::default().autodiff();
//! let net = Net {
//!     body: LinearConfig::new(32, 32).init(&device).into(),
//!     head: LinearConfig::new(32, 2).init(&device).into(),
//! };
//! let targets = Targets::parse(&["body"])?.with_modules_to_save(&["head"])?;
//! let net = rora::inject_lora(net, &targets, &LoraConfig::new(8, 16.0).with_base_dropout(0.1))?;
//! let rora = Rora::prepare(&net, RoraConfig::new())?; // Tr and Pt with the paper's defaults
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The workspace README has the whole quickstart (it runs as a test), and `examples/` the
//! backdoor benchmark.
#![warn(missing_docs)]

pub use rora_core as core;
/// burn-train integration (feature `train`): see [`core::train`].
#[cfg(feature = "train")]
pub use rora_core::train;
pub use rora_spectral as spectral;

pub use rora_core::rora::{LayerSelection, RescaleReport, RescaleTarget};
pub use rora_core::{
    AdaptedLayer, AdapterError, AdapterKind, AdapterOptions, InjectError, LayerKind, LoraConfig,
    LoraEmbedding, LoraInit, LoraLayerMapper, LoraLinear, LoraModel, ParamSummary, PeftAdapter,
    Rora, RoraConfig, RoraError, TargetError, Targets, adapted_layers, apply_adapter,
    apply_lora_targets, attach_adapter, burn, inject_lora, join_path, load_adapter,
    lora_layer_paths, lora_linear_paths, save_adapter,
};
