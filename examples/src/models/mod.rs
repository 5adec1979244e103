//! Small transformer classifiers written with burn, with [`LoraLinear`](rora::LoraLinear)
//! projections so that any of them can carry a LoRA/RoRA adapter.

pub mod bert;
pub mod llama;
pub mod minilm;

use burn::module::Module;
use burn::tensor::{Int, Tensor};
use rora::LoraModel;

pub use bert::{Bert, BertConfig};
pub use llama::{Llama, LlamaConfig};

/// A sequence classifier the benchmark can train and evaluate.
pub trait SequenceClassifier: LoraModel + Module {
    /// Logits `[batch, labels]` for token ids `[batch, len]` with a padding mask
    /// `[batch, len]` (1 for real tokens, 0 for padding; every row has at least one token).
    fn logits(&self, tokens: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2>;

    /// The classification head's module path: trained with the adapters in LoRA
    /// fine-tuning (PEFT's `modules_to_save` for sequence classification).
    fn head() -> &'static str;

    /// Freeze the token (and position) embeddings, so that training changes only the
    /// transformer layers and the head.
    fn freeze_embeddings(self) -> Self;

    /// Default LoRA targets (the paper's: query and value projections).
    fn default_targets() -> Vec<String>;
}

/// `[batch, len]` padding mask → additive attention bias `[batch, 1, 1, len]`
/// (0 for real tokens, −1e4 for padding).
pub(crate) fn padding_bias(mask: Tensor<2>) -> Tensor<4> {
    let [b, t] = mask.dims();
    mask.neg()
        .add_scalar(1.0)
        .mul_scalar(-1e4)
        .reshape([b, 1, 1, t])
}

/// `[batch, len, heads·d_head]` → `[batch, heads, len, d_head]`.
pub(crate) fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, t, d] = x.dims();
    x.reshape([b, t, heads, d / heads]).swap_dims(1, 2)
}

/// `[batch, heads, len, d_head]` → `[batch, len, heads·d_head]`.
pub(crate) fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, t, dh] = x.dims();
    x.swap_dims(1, 2).reshape([b, t, h * dh])
}
