//! A BERT encoder for sequence classification: token + position embeddings, post-LayerNorm
//! blocks with multi-head self-attention and a GELU feed-forward, `[CLS]` pooler and head.
//!
//! Module paths (used by targets and adapter files): `layers.{i}.attention.{query,key,value,output}`,
//! `layers.{i}.ffn.{intermediate,output}`, `pooler`, `classifier`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, LinearConfig,
};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Int, Tensor};
use rora::{LoraLinear, LoraModel};

use super::{SequenceClassifier, merge_heads, padding_bias, split_heads};

/// Sizes of a [`Bert`].
#[derive(Config, Debug)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    #[config(default = 64)]
    pub d_model: usize,
    /// Attention heads (`d_model` must be divisible by it).
    #[config(default = 4)]
    pub n_heads: usize,
    /// Encoder blocks.
    #[config(default = 4)]
    pub n_layers: usize,
    /// Feed-forward size.
    #[config(default = 128)]
    pub d_ff: usize,
    /// Longest sequence (position embeddings).
    #[config(default = 64)]
    pub max_len: usize,
    /// Dropout in embeddings, attention and residual branches.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Number of labels.
    #[config(default = 2)]
    pub num_labels: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
}

/// Multi-head self-attention with its output projection and post-LayerNorm.
#[derive(Module, LoraModel, Debug)]
pub struct BertAttention {
    /// Query projection.
    pub query: LoraLinear,
    /// Key projection.
    pub key: LoraLinear,
    /// Value projection.
    pub value: LoraLinear,
    /// Output projection.
    pub output: LoraLinear,
    /// LayerNorm after the residual.
    pub norm: LayerNorm,
    dropout: Dropout,
    n_heads: usize,
}

/// The GELU feed-forward with post-LayerNorm.
#[derive(Module, LoraModel, Debug)]
pub struct BertFfn {
    /// `d_model → d_ff`.
    pub intermediate: LoraLinear,
    /// `d_ff → d_model`.
    pub output: LoraLinear,
    /// LayerNorm after the residual.
    pub norm: LayerNorm,
    dropout: Dropout,
}

/// One encoder block.
#[derive(Module, LoraModel, Debug)]
pub struct BertLayer {
    /// Self-attention.
    pub attention: BertAttention,
    /// Feed-forward.
    pub ffn: BertFfn,
}

/// Token, position (and token-type, for checkpoints) embeddings with LayerNorm.
#[derive(Module, LoraModel, Debug)]
pub struct BertEmbeddings {
    /// Word embeddings `[vocab, d]`.
    pub word: Embedding,
    /// Position embeddings `[max_len, d]`.
    pub position: Embedding,
    /// Token-type embeddings `[types, d]` (all inputs use type 0).
    pub token_type: Embedding,
    /// LayerNorm.
    pub norm: LayerNorm,
    dropout: Dropout,
}

/// BERT for sequence classification.
#[derive(Module, LoraModel, Debug)]
pub struct Bert {
    /// Embeddings.
    pub embeddings: BertEmbeddings,
    /// Encoder blocks.
    pub layers: Vec<BertLayer>,
    /// Pooler: dense + tanh on the `[CLS]` state.
    pub pooler: LoraLinear,
    /// Classification head.
    pub classifier: LoraLinear,
    dropout: Dropout,
}

fn lin(i: usize, o: usize, device: &Device) -> LoraLinear {
    LinearConfig::new(i, o).init(device).into()
}

impl BertConfig {
    /// A randomly initialised model on `device`.
    pub fn init(&self, device: &Device) -> Bert {
        assert!(
            self.d_model.is_multiple_of(self.n_heads),
            "d_model must be divisible by n_heads"
        );
        let d = self.d_model;
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let drop = || DropoutConfig::new(self.dropout).init();
        let emb = |n| {
            EmbeddingConfig::new(n, d)
                .with_initializer(burn::nn::Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device)
        };
        Bert {
            embeddings: BertEmbeddings {
                word: emb(self.vocab_size),
                position: emb(self.max_len),
                token_type: emb(2),
                norm: norm(),
                dropout: drop(),
            },
            layers: (0..self.n_layers)
                .map(|_| BertLayer {
                    attention: BertAttention {
                        query: lin(d, d, device),
                        key: lin(d, d, device),
                        value: lin(d, d, device),
                        output: lin(d, d, device),
                        norm: norm(),
                        dropout: drop(),
                        n_heads: self.n_heads,
                    },
                    ffn: BertFfn {
                        intermediate: lin(d, self.d_ff, device),
                        output: lin(self.d_ff, d, device),
                        norm: norm(),
                        dropout: drop(),
                    },
                })
                .collect(),
            pooler: lin(d, d, device),
            classifier: lin(d, self.num_labels, device),
            dropout: drop(),
        }
    }
}

impl BertAttention {
    fn forward(&self, h: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let [_, _, d] = h.dims();
        let q = split_heads(self.query.forward(h.clone()), self.n_heads);
        let k = split_heads(self.key.forward(h.clone()), self.n_heads);
        let v = split_heads(self.value.forward(h.clone()), self.n_heads);
        let d_head = d / self.n_heads;
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .div_scalar((d_head as f64).sqrt())
            + bias;
        let probs = self.dropout.forward(softmax(scores, 3));
        let ctx = merge_heads(probs.matmul(v));
        let out = self.dropout.forward(self.output.forward(ctx));
        self.norm.forward(h + out)
    }
}

impl BertFfn {
    fn forward(&self, h: Tensor<3>) -> Tensor<3> {
        let x = self
            .output
            .forward(gelu(self.intermediate.forward(h.clone())));
        self.norm.forward(h + self.dropout.forward(x))
    }
}

impl Bert {
    /// Final hidden states `[batch, len, d]`.
    pub fn encode(&self, tokens: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(0..t as i64, &device)
            .reshape([1, t])
            .repeat_dim(0, b);
        let types = Tensor::<2, Int>::zeros([b, t], &device);
        let e = &self.embeddings;
        let h =
            e.word.forward(tokens) + e.position.forward(positions) + e.token_type.forward(types);
        let mut h = e.dropout.forward(e.norm.forward(h));
        let bias = padding_bias(mask);
        for layer in &self.layers {
            h = layer.attention.forward(h, bias.clone());
            h = layer.ffn.forward(h);
        }
        h
    }
}

impl SequenceClassifier for Bert {
    fn logits(&self, tokens: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2> {
        let h = self.encode(tokens, mask);
        let [b, _, d] = h.dims();
        let cls = h.narrow(1, 0, 1).reshape([b, d]);
        let pooled = self.pooler.forward(cls).tanh();
        self.classifier.forward(self.dropout.forward(pooled))
    }

    fn head() -> &'static str {
        "classifier"
    }

    fn freeze_embeddings(mut self) -> Self {
        self.embeddings.word = self.embeddings.word.no_grad();
        self.embeddings.position = self.embeddings.position.no_grad();
        self.embeddings.token_type = self.embeddings.token_type.no_grad();
        self
    }

    fn default_targets() -> Vec<String> {
        vec!["attention.query".into(), "attention.value".into()]
    }
}
