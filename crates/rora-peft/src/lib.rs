//! HuggingFace PEFT LoRA adapter files, and choosing layers by module path — with no
//! deep-learning framework.
//!
//! The file format is a contract: `adapter_config.json` with PEFT's keys and
//! `adapter_model.safetensors` with `base_model.model.<module>.lora_A.weight` (`[r, in]`) and
//! `.lora_B.weight` (`[out, r]`). [`PeftAdapter`] reads and writes that format on the host
//! (float32 [`HostMatrix`] factors; f16, bf16 and f64 files are converted on reading), and
//! [`TensorFile`] reads any safetensors checkpoint through a memory map.
//!
//! Embedding adapters (`lora_embedding_A` `[r, num_embeddings]`, `lora_embedding_B`
//! `[embedding_dim, r]`, [`LayerKind::Embedding`]) and DoRA magnitudes
//! (`lora_magnitude_vector`, `[out]`, with `use_dora`) are read and written under PEFT's
//! names; [`AdapterSet`] holds several named adapters in PEFT's multi-adapter layout, and
//! [`weighted_adapter`] combines adapters as PEFT's `add_weighted_adapter` does.
//!
//! [`Targets`] and [`LayerSelection`] choose layers by module path (`encoder.layers.3.query`)
//! with PEFT's rules: a name matches as a trailing run of path components, `re:` makes a
//! regex that must match the whole path.
//!
//! This crate is what the `rora` command line and `rora-core`'s burn integration share;
//! burn users get it re-exported as `rora::core::peft`.
//!
//! ```
//! use rora_peft::{HostMatrix, LayerFactors, PeftAdapter, PeftLoraConfig};
//!
//! let mut adapter = PeftAdapter {
//!     config: PeftLoraConfig::new(2, 4.0, vec!["query".into()]),
//!     layers: Default::default(),
//! };
//! adapter.layers.insert(
//!     "encoder.layers.0.query".into(),
//!     LayerFactors::new(
//!         HostMatrix::new(2, 3, vec![0.1; 6]), // A: [r, in]
//!         HostMatrix::new(4, 2, vec![0.2; 8]), // B: [out, r]
//!     ),
//! );
//! let dir = tempfile::tempdir()?;
//! adapter.write(dir.path())?; // adapter_config.json + adapter_model.safetensors, atomically
//! let back = PeftAdapter::read(dir.path())?;
//! assert_eq!(back.layers, adapter.layers);
//! assert_eq!(back.scale_for("encoder.layers.0.query"), 2.0); // alpha / r
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod adapter_file;
mod config;
mod error;
mod header;
mod multi;
mod path;
mod selection;
mod target;
mod tensor_file;
mod write;

pub use adapter_file::{
    Factor, KEY_PREFIX, LayerFactors, LayerKind, PeftAdapter, ReadOptions, TensorKey, WEIGHTS_FILE,
    factor_key, parse_factor_key, parse_tensor_key, tensor_key,
};
pub use config::{CONFIG_FILE, PeftLoraConfig, TargetModules, lora_scale};
pub use error::AdapterError;
pub use multi::{
    AdapterSet, Combination, DEFAULT_ADAPTER, adapter_dir, adapter_names, weighted_adapter,
};
pub use path::{block_index, join_path};
pub use selection::LayerSelection;
pub use target::{TargetError, TargetPattern, Targets};
pub use tensor_file::{
    HostMatrix, HostTensor, RawTensor, TensorFile, encode_f32, non_finite_count,
};
pub use write::{
    Overwrite, check_output, write_atomic, write_atomic_with, write_safetensors_atomic,
    write_safetensors_atomic_with,
};
