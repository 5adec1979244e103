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
//! - [`LoraEmbedding`] — the same on a token table (PEFT's `lora_embedding_A`/`_B`),
//!   `y = drop_b(E[ids]) + s·(Aᵀ[ids])·Bᵀ`.
//! - [`dora`] — DoRA ([`LoraConfig::use_dora`]) on either layer: a trainable magnitude `m`
//!   per output row, `W = diag(m/n)·(W0 + s·B·A)`, as PEFT computes it.
//! - [`multi`] — several named adapters on one model ([`NamedAdapters`]): switch, disable,
//!   delete, combine (PEFT's `add_weighted_adapter`), save PEFT's multi-adapter folders.
//! - [`adapted_layers`] — one view ([`AdaptedLayer`]) of every adapted layer of any burn
//!   module, whether it uses [`LoraLinear`] or burn's own `Module::apply_lora`
//!   ([`apply_lora_targets`]).
//! - [`peft`] and [`adapter_io`] — HuggingFace PEFT adapter files, both directions.
//! - `train` (feature `train`) — burn-train's `Learner` with RoRA: the penalty in the
//!   training step, Ω and the strength ratio as metrics, Pt at the end, adapter-only
//!   checkpoints in PEFT's format.
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
//!
//! # DoRA, embeddings and named adapters
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::{EmbeddingConfig, LinearConfig};
//! use burn::tensor::{Device, Int, Tensor};
//! use rora_core::{LoraConfig, LoraEmbedding, LoraLinear, LoraModel, NamedAdapters, Targets, inject_lora};
//!
//! #[derive(Module, LoraModel, Debug)]
//! struct Net { emb: LoraEmbedding, fc: LoraLinear }
//!
//! let device = Device::default();
//! let net = Net {
//!     emb: EmbeddingConfig::new(50, 8).init(&device).into(),
//!     fc: LinearConfig::new(8, 4).init(&device).into(),
//! };
//! let targets = Targets::parse(&["emb", "fc"])?;
//! let net = inject_lora(net, &targets, &LoraConfig::new(2, 4.0).with_use_dora(true))?;
//! assert!(net.emb.is_dora() && net.fc.is_dora());
//! let ids = Tensor::<2, Int>::from_ints([[3, 7, 7]], &device);
//! assert_eq!(net.fc.forward(net.emb.forward(ids)).dims(), [1, 3, 4]);
//! let mut adapters = NamedAdapters::new();
//! adapters.add_from_model("dora", &net)?; // the adapter on the model, by name
//! assert_eq!(adapters.active(), Some("dora"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

// The `LoraModel` derive names this crate `::rora_core`, also inside it.
extern crate self as rora_core;

pub mod adapted;
pub mod adapter_io;
pub mod config;
pub mod convert;
pub mod dora;
pub mod embedding;
pub mod inject;
pub mod linear;
pub mod lora_model;
pub mod multi;
pub mod replace;
pub mod rora;
pub mod summary;
#[cfg(feature = "train")]
pub mod train;

/// HuggingFace PEFT adapter files and module-path targeting (the `rora-peft` crate).
pub use rora_peft as peft;

pub use adapted::{AdaptedLayer, AdapterKind, NativeScaleUnknown, adapted_layers};
pub use adapter_io::{
    AdapterOptions, adapter_from_model, apply_adapter, attach_adapter, load_adapter, save_adapter,
};
pub use config::{LoraConfig, LoraConfigError, LoraInit};
pub use dora::DoraMagnitude;
pub use embedding::LoraEmbedding;
pub use inject::{InjectError, apply_lora_targets, inject_lora};
pub use linear::{LoraFactors, LoraLinear};
pub use lora_model::{LoraLayerMapper, LoraModel, lora_layer_paths, lora_linear_paths};
pub use multi::NamedAdapters;
pub use peft::{
    AdapterError, LayerKind, LayerSelection, PeftAdapter, TargetError, TargetPattern, Targets,
    join_path,
};
pub use replace::{ReplaceError, replace_params};
pub use rora::{Rora, RoraConfig, RoraError};
pub use summary::ParamSummary;

/// burn, re-exported so users get the exact version this crate is built against.
pub use burn;
/// The numerics crate, re-exported.
pub use rora_spectral as spectral;
