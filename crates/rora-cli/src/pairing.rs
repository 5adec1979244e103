//! Matching the adapter's layers to the base checkpoint's weights.
//!
//! PEFT stores factors under `base_model.model.<path>.lora_A.weight` (an embedding's under
//! `.lora_embedding_A`); the module path `<path>` (prefix stripped by
//! [`rora_peft::parse_tensor_key`]) names the base weight `<path>.weight`, stored
//! PyTorch-style as `[out, in]` for a linear layer and `[num_embeddings, embedding_dim]`
//! (`[in, out]`) for an embedding.

use std::path::Path;

use rora_peft::{LayerFactors, LayerKind, PeftAdapter, TensorFile};
use safetensors::Dtype;

use crate::error::{CliError, LayerShapeMismatch};

/// One adapted layer matched to its base weight.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerPair {
    /// The module path, e.g. `model.layers.0.self_attn.q_proj`.
    pub path: String,
    /// The base tensor key, `<path>.weight`.
    pub weight_key: String,
    /// Output features (rows of `W0`).
    pub out: usize,
    /// Input features (columns of `W0`).
    pub inp: usize,
    /// The base weight's dtype.
    pub dtype: Dtype,
    /// The adapter's scale `s` for this layer (`alpha/r` or `alpha/sqrt(r)`).
    pub scale: f64,
    /// Linear layer or embedding: how the base weight is stored.
    pub kind: LayerKind,
}

/// The base tensor key of a module path.
pub fn weight_key(path: &str) -> String {
    format!("{path}.weight")
}

/// Match every layer of `adapter` to its weight in `base` (opened from `base_path`, which
/// only names the file in errors).
///
/// A layer whose `<path>.weight` is absent from the base, or whose factors do not fit the
/// weight's `[out, in]` shape, is an error naming both the adapter layer and the base key.
/// Pairs come out in the adapter's (sorted) layer order.
pub fn pair_layers(
    adapter: &PeftAdapter,
    base: &TensorFile,
    base_path: &Path,
) -> Result<Vec<LayerPair>, CliError> {
    adapter
        .layers
        .iter()
        .map(|(path, factors)| pair_one(adapter, path, factors, base, base_path))
        .collect()
}

fn pair_one(
    adapter: &PeftAdapter,
    path: &str,
    factors: &LayerFactors,
    base: &TensorFile,
    base_path: &Path,
) -> Result<LayerPair, CliError> {
    let key = weight_key(path);
    let Ok((shape, dtype)) = base.info(&key) else {
        return Err(CliError::MissingBaseWeight {
            path: path.to_string(),
            hint: hint(&key, base.names()),
            key,
            base: base_path.to_path_buf(),
        });
    };
    let (out, inp) = (factors.d_out(), factors.d_in());
    if shape.as_slice() != factors.kind.base_shape(out, inp) {
        return Err(CliError::ShapeMismatch(Box::new(LayerShapeMismatch {
            path: path.to_string(),
            a_shape: factors.a.shape(),
            b_shape: factors.b.shape(),
            kind: factors.kind,
            key,
            base_shape: shape,
            base: base_path.to_path_buf(),
        })));
    }
    if !matches!(dtype, Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16) {
        return Err(CliError::UnsupportedBaseDtype {
            key,
            dtype: format!("{dtype:?}"),
            base: base_path.to_path_buf(),
        });
    }
    Ok(LayerPair {
        path: path.to_string(),
        weight_key: key,
        out,
        inp,
        dtype,
        scale: adapter.scale_for(path),
        kind: factors.kind,
    })
}

/// Read the base weight of `pair` from `base` (opened from `base_path`) in the `[out, in]`
/// view of the update (an embedding's `[num_embeddings, embedding_dim]` table transposed),
/// refusing NaN or infinity ([`CliError::NonFiniteBase`], with `context` appended to the
/// message).
pub fn base_matrix(
    base: &TensorFile,
    pair: &LayerPair,
    base_path: &Path,
    context: &'static str,
) -> Result<rora_peft::HostMatrix, CliError> {
    let w0 = base
        .matrix(&pair.weight_key)
        .map_err(|e| CliError::file("base", base_path, e))?;
    let count = w0.non_finite_count();
    if count > 0 {
        return Err(CliError::NonFiniteBase {
            key: pair.weight_key.clone(),
            base: base_path.to_path_buf(),
            count,
            context,
        });
    }
    Ok(match pair.kind {
        LayerKind::Linear => w0,
        LayerKind::Embedding => w0.transpose(),
    })
}

/// Suggest base keys that end like the missing one (same last two path components), e.g.
/// when the base checkpoint carries an extra `model.` prefix.
fn hint(key: &str, names: &[String]) -> String {
    let parts: Vec<&str> = key.rsplitn(3, '.').collect();
    let tail = match parts.as_slice() {
        [w, m, _] => format!(".{m}.{w}"),
        _ => format!(".{key}"),
    };
    let close: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(&tail) || n.ends_with(&format!(".{key}")))
        .take(3)
        .collect();
    if close.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = close.iter().map(|n| format!("{n:?}")).collect();
        format!(" (similar base keys: {})", list.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_finds_prefixed_keys() {
        let names = vec![
            "model.encoder.fc1.weight".to_string(),
            "model.encoder.fc2.weight".to_string(),
        ];
        let h = hint("encoder.fc1.weight", &names);
        assert!(h.contains("model.encoder.fc1.weight"), "{h}");
        assert!(!h.contains("fc2"), "{h}");
        assert_eq!(hint("zzz.weight", &names), "");
    }
}
