//! HuggingFace PEFT adapter files, both directions.
//!
//! The file format is a contract: `adapter_config.json` with PEFT's keys and
//! `adapter_model.safetensors` with `base_model.model.<module>.lora_A.weight` (`[r, in]`) and
//! `.lora_B.weight` (`[out, r]`). This module reads and writes that format on the host
//! ([`PeftAdapter`]); [`crate::adapter_io`] moves adapters between files and burn models.

mod adapter_file;
mod config;
mod error;
mod tensor_file;

pub use adapter_file::{
    Factor, KEY_PREFIX, LayerFactors, PeftAdapter, WEIGHTS_FILE, factor_key, parse_factor_key,
};
pub use config::{CONFIG_FILE, PeftLoraConfig, TargetModules, lora_scale};
pub use error::AdapterError;
pub use tensor_file::{
    HostMatrix, HostTensor, RawTensor, TensorFile, encode_f32, write_atomic,
    write_safetensors_atomic,
};
