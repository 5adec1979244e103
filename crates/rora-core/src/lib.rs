//! LoRA and RoRA (regularized LoRA) for [burn](https://burn.dev).
//!
//! A backdoored pretrained model keeps its backdoor through ordinary LoRA fine-tuning on
//! clean data: the update is too weak next to the frozen weight and points the wrong way.
//! RoRA adds three mechanisms that make the fine-tuned model forget — clean-strengthened
//! dropout, a trigger-insensitive constraint and post-training spectral rescaling — see
//! [`rora`].
//!
//! - [`LoraLinear`] — a linear layer with a frozen base and a factored LoRA adapter
//!   (`y = drop_b(x·W0 + bias) + s·(drop(x)·Aᵀ)·Bᵀ`), configured by [`LoraConfig`].
//! - [`LoraModel`] — `#[derive(LoraModel)]` next to burn's `Module` lets [`inject_lora`]
//!   find a model's `LoraLinear`s by module path; [`inject_lora`] turns a plain model into
//!   a trainable adapted one in one call.
//! - [`adapted_layers`] — one view ([`AdaptedLayer`]) of every adapted layer of any burn
//!   module, whether it uses [`LoraLinear`] or burn's own `Module::apply_lora`
//!   ([`apply_lora_targets`]).
//! - [`peft`] and [`adapter_io`] — HuggingFace PEFT adapter files, both directions.
//!
//! # Quickstart
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::LinearConfig;
//! use burn::tensor::{Device, Tensor};
//! use rora_core::{LoraConfig, LoraLinear, LoraModel, ParamSummary, Targets, inject_lora};
//!
//! #[derive(Module, LoraModel, Debug)]
//! struct Mlp { fc1: LoraLinear, fc2: LoraLinear }
//!
//! let device = Device::default();
//! let mlp = Mlp {
//!     fc1: LinearConfig::new(16, 32).init(&device).into(),
//!     fc2: LinearConfig::new(32, 4).init(&device).into(),
//! };
//! let mlp = inject_lora(mlp, &Targets::parse(&["fc1"])?, &LoraConfig::new(4, 8.0))?;
//! println!("{}", ParamSummary::of(&mlp)); // trainable params: 192 || all params: 870 || ...
//! let y = mlp.fc2.forward(mlp.fc1.forward(Tensor::<2>::ones([2, 16], &device)).tanh());
//! assert_eq!(y.dims(), [2, 4]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

// The `LoraModel` derive names this crate `::rora_core`, also inside it.
extern crate self as rora_core;

pub mod adapted;
pub mod adapter_io;
pub mod config;
pub mod convert;
pub mod inject;
pub mod linear;
pub mod lora_model;
pub mod replace;
pub mod rora;
pub mod summary;

/// HuggingFace PEFT adapter files and module-path targeting (the `rora-peft` crate).
pub use rora_peft as peft;

pub use adapted::{AdaptedLayer, AdapterKind, NativeScaleUnknown, adapted_layers};
pub use adapter_io::{
    AdapterOptions, adapter_from_model, apply_adapter, attach_adapter, load_adapter, save_adapter,
};
pub use config::{LoraConfig, LoraConfigError, LoraInit};
pub use inject::{InjectError, apply_lora_targets, inject_lora};
pub use linear::{LoraFactors, LoraLinear};
pub use lora_model::{LoraModel, lora_linear_paths};
pub use peft::{
    AdapterError, LayerSelection, PeftAdapter, TargetError, TargetPattern, Targets, join_path,
};
pub use replace::{ReplaceError, replace_params};
pub use rora::{Rora, RoraConfig, RoraError};
pub use summary::ParamSummary;

/// burn, re-exported so users get the exact version this crate is built against.
pub use burn;
/// The numerics crate, re-exported.
pub use rora_spectral as spectral;
