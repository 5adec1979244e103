//! Examples and the backdoor benchmark for rora.
//!
//! - [`models`](mod@models): small BERT and LLaMA classifiers in burn with `LoraLinear` projections,
//!   and a loader for HuggingFace BERT checkpoints (MiniLM-L6).
//! - [`data`](mod@data): the built-in synthetic sentiment corpus, TSV/JSONL loaders, tokenizers.
//! - [`attacks`](mod@attacks): BadNet and AddSent poisoning.
//! - [`train`](mod@train): training and evaluation loops; [`bench`](mod@bench): the benchmark protocol.
//! - [`metrics`](mod@metrics): CA and ASR; [`renderer`](mod@renderer): a quiet burn-train renderer.

pub mod attacks;
pub mod backend;
pub mod bench;
pub mod data;
pub mod metrics;
pub mod models;
pub mod renderer;
pub mod train;
