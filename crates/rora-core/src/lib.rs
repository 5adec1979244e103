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
//! - [`adapted_layers`] — one view ([`AdaptedLayer`]) of every adapted layer of any burn
//!   module, whether it uses [`LoraLinear`] or burn's own `Module::apply_lora`.
//! - [`Targets`] / [`inject_lora`] / [`apply_lora_targets`] — choose layers by module path.
//! - [`peft`] and [`adapter_io`] — HuggingFace PEFT adapter files, both directions.
//!
//! # Quickstart
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::LinearConfig;
//! use burn::tensor::{Device, Tensor};
//! use rora_core::{LoraConfig, LoraLinear, LoraModel, Targets, inject_lora, join_path, ParamSummary};
//!
//! #[derive(Module, Debug)]
//! struct Mlp { fc1: LoraLinear, fc2: LoraLinear }
//!
//! impl LoraModel for Mlp {
//!     fn map_lora_linears(self, prefix: &str, f: &mut dyn FnMut(&str, LoraLinear) -> LoraLinear) -> Self {
//!         Mlp { fc1: f(&join_path(prefix, "fc1"), self.fc1), fc2: f(&join_path(prefix, "fc2"), self.fc2) }
//!     }
//! }
//!
//! let device = Device::default();
//! let mlp = Mlp {
//!     fc1: LinearConfig::new(16, 32).init(&device).into(),
//!     fc2: LinearConfig::new(32, 4).init(&device).into(),
//! };
//! let targets = Targets::parse(&["fc1"]).unwrap();
//! let mlp = inject_lora(mlp.no_grad(), &targets, &LoraConfig::new(4, 8.0)).unwrap();
//! println!("{}", ParamSummary::of(&mlp)); // trainable params: 192 || all params: 868 || ...
//! let y = mlp.fc2.forward(mlp.fc1.forward(Tensor::<2>::ones([2, 16], &device)).tanh());
//! assert_eq!(y.dims(), [2, 4]);
//! ```
#![warn(missing_docs)]

pub mod adapted;
pub mod adapter_io;
pub mod config;
pub mod convert;
pub mod inject;
pub mod linear;
pub mod peft;
pub mod replace;
pub mod rora;
pub mod summary;
pub mod target;

pub use adapted::{AdaptedLayer, AdapterKind, NativeScaleUnknown, adapted_layers};
pub use adapter_io::{
    AdapterOptions, adapter_from_model, apply_adapter, attach_adapter, load_adapter, save_adapter,
};
pub use config::{LoraConfig, LoraConfigError, LoraInit};
pub use inject::{
    InjectError, LoraModel, apply_lora_targets, inject_lora, join_path, lora_linear_paths,
};
pub use linear::{LoraFactors, LoraLinear};
pub use peft::{AdapterError, PeftAdapter};
pub use replace::replace_params;
pub use rora::{Rora, RoraConfig, RoraError};
pub use summary::ParamSummary;
pub use target::{TargetError, TargetPattern, Targets};

/// burn, re-exported so users get the exact version this crate is built against.
pub use burn;
/// The numerics crate, re-exported.
pub use rora_spectral as spectral;
