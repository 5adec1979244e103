//! A LLaMA-style decoder for sequence classification: RMSNorm, rotary position embeddings,
//! causal multi-head attention, SwiGLU feed-forward, classification from the last token.
//!
//! Module paths: `layers.{i}.self_attn.{q_proj,k_proj,v_proj,o_proj}`,
//! `layers.{i}.mlp.{gate_proj,up_proj,down_proj}`, `score` (as in HuggingFace's LLaMA).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{
    Embedding, EmbeddingConfig, LinearConfig, RmsNorm, RmsNormConfig, RotaryEncoding,
    RotaryEncodingConfig,
};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor};
use rora::{LoraLinear, LoraModel};

use super::{SequenceClassifier, merge_heads, padding_bias, split_heads};

/// Sizes of a [`Llama`].
#[derive(Config, Debug)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    #[config(default = 64)]
    pub d_model: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Decoder blocks.
    #[config(default = 4)]
    pub n_layers: usize,
    /// SwiGLU hidden size.
    #[config(default = 128)]
    pub d_ff: usize,
    /// Longest sequence (rotary table).
    #[config(default = 64)]
    pub max_len: usize,
    /// Number of labels.
    #[config(default = 2)]
    pub num_labels: usize,
    /// RMSNorm epsilon.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

/// Causal self-attention with rotary embeddings.
#[derive(Module, LoraModel, Debug)]
pub struct LlamaAttention {
    /// Query projection.
    pub q_proj: LoraLinear,
    /// Key projection.
    pub k_proj: LoraLinear,
    /// Value projection.
    pub v_proj: LoraLinear,
    /// Output projection.
    pub o_proj: LoraLinear,
    n_heads: usize,
}

/// SwiGLU feed-forward: `down(silu(gate(x)) · up(x))`.
#[derive(Module, LoraModel, Debug)]
pub struct LlamaMlp {
    /// Gate projection.
    pub gate_proj: LoraLinear,
    /// Up projection.
    pub up_proj: LoraLinear,
    /// Down projection.
    pub down_proj: LoraLinear,
}

/// One pre-norm decoder block.
#[derive(Module, LoraModel, Debug)]
pub struct LlamaLayer {
    /// Norm before attention.
    pub input_norm: RmsNorm,
    /// Attention.
    pub self_attn: LlamaAttention,
    /// Norm before the MLP.
    pub post_attention_norm: RmsNorm,
    /// MLP.
    pub mlp: LlamaMlp,
}

/// LLaMA for sequence classification.
#[derive(Module, LoraModel, Debug)]
pub struct Llama {
    /// Token embeddings.
    pub embed_tokens: Embedding,
    /// Decoder blocks.
    pub layers: Vec<LlamaLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Classification head on the last token.
    pub score: LoraLinear,
    rope: RotaryEncoding,
}

fn lin(i: usize, o: usize, device: &Device) -> LoraLinear {
    LinearConfig::new(i, o).with_bias(false).init(device).into()
}

impl LlamaConfig {
    /// A randomly initialised model on `device`.
    pub fn init(&self, device: &Device) -> Llama {
        assert!(
            self.d_model.is_multiple_of(self.n_heads),
            "d_model must be divisible by n_heads"
        );
        let d = self.d_model;
        let norm = || {
            RmsNormConfig::new(d)
                .with_epsilon(self.norm_eps)
                .init(device)
        };
        Llama {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, d)
                .with_initializer(burn::nn::Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            layers: (0..self.n_layers)
                .map(|_| LlamaLayer {
                    input_norm: norm(),
                    self_attn: LlamaAttention {
                        q_proj: lin(d, d, device),
                        k_proj: lin(d, d, device),
                        v_proj: lin(d, d, device),
                        o_proj: lin(d, d, device),
                        n_heads: self.n_heads,
                    },
                    post_attention_norm: norm(),
                    mlp: LlamaMlp {
                        gate_proj: lin(d, self.d_ff, device),
                        up_proj: lin(d, self.d_ff, device),
                        down_proj: lin(self.d_ff, d, device),
                    },
                })
                .collect(),
            norm: norm(),
            score: lin(d, self.num_labels, device),
            rope: RotaryEncodingConfig::new(self.max_len, d / self.n_heads).init(device),
        }
    }
}

impl LlamaAttention {
    fn forward(&self, h: Tensor<3>, bias: Tensor<4>, rope: &RotaryEncoding) -> Tensor<3> {
        let [_, _, d] = h.dims();
        let q = rope.forward(split_heads(self.q_proj.forward(h.clone()), self.n_heads));
        let k = rope.forward(split_heads(self.k_proj.forward(h.clone()), self.n_heads));
        let v = split_heads(self.v_proj.forward(h), self.n_heads);
        let d_head = d / self.n_heads;
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .div_scalar((d_head as f64).sqrt())
            + bias;
        self.o_proj
            .forward(merge_heads(softmax(scores, 3).matmul(v)))
    }
}

impl Llama {
    /// Final hidden states `[batch, len, d]`.
    pub fn encode(&self, tokens: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let [_, t] = tokens.dims();
        let device = tokens.device();
        // Causal (−1e4 above the diagonal) plus padding bias.
        let rows = Tensor::<1, Int>::arange(0..t as i64, &device).reshape([t, 1]);
        let cols = Tensor::<1, Int>::arange(0..t as i64, &device).reshape([1, t]);
        let causal = cols
            .greater(rows)
            .float()
            .mul_scalar(-1e4)
            .reshape([1, 1, t, t]);
        let bias = padding_bias(mask) + causal;
        let mut h = self.embed_tokens.forward(tokens);
        for layer in &self.layers {
            let a = layer.self_attn.forward(
                layer.input_norm.forward(h.clone()),
                bias.clone(),
                &self.rope,
            );
            h = h + a;
            let x = layer.post_attention_norm.forward(h.clone());
            let m = layer.mlp.down_proj.forward(
                silu(layer.mlp.gate_proj.forward(x.clone())) * layer.mlp.up_proj.forward(x),
            );
            h = h + m;
        }
        self.norm.forward(h)
    }
}

impl SequenceClassifier for Llama {
    fn logits(&self, tokens: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2> {
        let h = self.encode(tokens, mask.clone());
        let [b, t, d] = h.dims();
        // One-hot of the last real position, from the mask: position = Σ mask − 1.
        let last = mask.clone().sum_dim(1).sub_scalar(1.0).int(); // [b, 1]
        let positions = Tensor::<1, Int>::arange(0..t as i64, &h.device()).reshape([1, t]);
        let pick = positions.equal(last).float().reshape([b, t, 1]);
        let state = (h * pick).sum_dim(1).reshape([b, d]);
        self.score.forward(state)
    }

    fn head() -> &'static str {
        "score"
    }

    fn freeze_embeddings(mut self) -> Self {
        self.embed_tokens = self.embed_tokens.no_grad();
        self
    }

    fn default_targets() -> Vec<String> {
        vec!["q_proj".into(), "v_proj".into()]
    }
}
