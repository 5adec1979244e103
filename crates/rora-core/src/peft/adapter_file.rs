//! A PEFT LoRA adapter on disk: `adapter_config.json` + `adapter_model.safetensors`.

use std::collections::BTreeMap;
use std::path::Path;

use super::AdapterError;
use super::config::{CONFIG_FILE, PeftLoraConfig};
use super::tensor_file::{
    HostMatrix, RawTensor, TensorFile, write_atomic, write_safetensors_atomic,
};

/// The name PEFT gives the adapter weights file.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The key prefix PEFT writes before module paths.
pub const KEY_PREFIX: &str = "base_model.model.";

/// The two LoRA factors of one layer, in PEFT's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerFactors {
    /// `A: [r, in]`.
    pub a: HostMatrix,
    /// `B: [out, r]`.
    pub b: HostMatrix,
}

impl LayerFactors {
    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.a.rows
    }
    /// Input features.
    pub fn d_in(&self) -> usize {
        self.a.cols
    }
    /// Output features.
    pub fn d_out(&self) -> usize {
        self.b.rows
    }
}

/// A whole PEFT LoRA adapter in memory: its config and the factors of every adapted layer,
/// keyed by module path (without PEFT's `base_model.model.` prefix).
#[derive(Debug, Clone, PartialEq)]
pub struct PeftAdapter {
    /// The parsed `adapter_config.json`.
    pub config: PeftLoraConfig,
    /// Factors per module path, e.g. `"encoder.layer.0.attention.self.query"`.
    pub layers: BTreeMap<String, LayerFactors>,
}

/// The safetensors key of a factor: `base_model.model.<path>.lora_A.weight`.
pub fn factor_key(path: &str, factor: Factor) -> String {
    format!("{KEY_PREFIX}{path}.{}.weight", factor.name())
}

/// Which LoRA factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// `lora_A`, `[r, in]`.
    A,
    /// `lora_B`, `[out, r]`.
    B,
}

impl Factor {
    /// PEFT's name: `lora_A` or `lora_B`.
    pub fn name(self) -> &'static str {
        match self {
            Factor::A => "lora_A",
            Factor::B => "lora_B",
        }
    }
}

/// Split a key into module path and factor; `None` for keys that are not LoRA factors.
pub fn parse_factor_key(key: &str) -> Option<(String, Factor)> {
    let rest = key.strip_prefix(KEY_PREFIX).unwrap_or(key);
    let rest = rest.strip_suffix(".weight")?;
    // PEFT strips the adapter name when saving; accept `lora_A.default` too.
    let rest = rest.strip_suffix(".default").unwrap_or(rest);
    if let Some(path) = rest.strip_suffix(".lora_A") {
        Some((path.to_string(), Factor::A))
    } else {
        rest.strip_suffix(".lora_B")
            .map(|path| (path.to_string(), Factor::B))
    }
}

impl PeftAdapter {
    /// Read an adapter folder as HuggingFace PEFT's `save_pretrained` writes it.
    ///
    /// Every tensor must be a LoRA factor; each layer needs both factors with consistent
    /// shapes (`A: [r, in]`, `B: [out, r]`, `r` as the config says for that module) and
    /// finite values. Any violation is an error naming the key.
    pub fn read(dir: &Path) -> Result<Self, AdapterError> {
        let config = PeftLoraConfig::read(dir)?;
        let weights = TensorFile::open(&dir.join(WEIGHTS_FILE))?;
        let mut halves: BTreeMap<String, (Option<HostMatrix>, Option<HostMatrix>)> =
            BTreeMap::new();
        for key in weights.names() {
            let (path, factor) = parse_factor_key(key)
                .ok_or_else(|| AdapterError::UnexpectedTensor { key: key.clone() })?;
            let m = weights.matrix(key)?;
            if !m.is_finite() {
                return Err(AdapterError::NonFinite { key: key.clone() });
            }
            let entry = halves.entry(path).or_default();
            match factor {
                Factor::A => entry.0 = Some(m),
                Factor::B => entry.1 = Some(m),
            }
        }
        let mut layers = BTreeMap::new();
        for (path, (a, b)) in halves {
            let a = a.ok_or_else(|| AdapterError::MissingTensor {
                key: factor_key(&path, Factor::A),
            })?;
            let b = b.ok_or_else(|| AdapterError::MissingTensor {
                key: factor_key(&path, Factor::B),
            })?;
            let (r, _) = config.rank_alpha_for(&path);
            if a.rows != r {
                return Err(AdapterError::ShapeMismatch {
                    key: factor_key(&path, Factor::A),
                    expected: vec![r, a.cols],
                    found: a.shape().to_vec(),
                });
            }
            if b.cols != r {
                return Err(AdapterError::ShapeMismatch {
                    key: factor_key(&path, Factor::B),
                    expected: vec![b.rows, r],
                    found: b.shape().to_vec(),
                });
            }
            layers.insert(path, LayerFactors { a, b });
        }
        Ok(PeftAdapter { config, layers })
    }

    /// Write the adapter to `dir` (created if missing) as PEFT's `from_pretrained` reads it.
    ///
    /// Both files are written atomically (temporary file in `dir`, then rename): a save that
    /// fails halfway leaves the previous adapter files intact.
    pub fn write(&self, dir: &Path) -> Result<(), AdapterError> {
        std::fs::create_dir_all(dir).map_err(|e| AdapterError::io(dir, e))?;
        let mut tensors = BTreeMap::new();
        for (path, f) in &self.layers {
            if !f.a.is_finite() {
                return Err(AdapterError::NonFinite {
                    key: factor_key(path, Factor::A),
                });
            }
            if !f.b.is_finite() {
                return Err(AdapterError::NonFinite {
                    key: factor_key(path, Factor::B),
                });
            }
            tensors.insert(
                factor_key(path, Factor::A),
                RawTensor::f32(f.a.shape().to_vec(), &f.a.data),
            );
            tensors.insert(
                factor_key(path, Factor::B),
                RawTensor::f32(f.b.shape().to_vec(), &f.b.data),
            );
        }
        let metadata = [("format".to_string(), "pt".to_string())].into();
        write_safetensors_atomic(&dir.join(WEIGHTS_FILE), &tensors, Some(metadata))?;
        write_atomic(&dir.join(CONFIG_FILE), self.config.to_json().as_bytes())?;
        Ok(())
    }

    /// The scale `s` of the layer at `path` (from the config's alpha, rank and rsLoRA).
    pub fn scale_for(&self, path: &str) -> f64 {
        self.config.scale_for(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter() -> PeftAdapter {
        let mut layers = BTreeMap::new();
        layers.insert(
            "fc1".to_string(),
            LayerFactors {
                a: HostMatrix::new(2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                b: HostMatrix::new(4, 2, (0..8).map(|v| v as f32).collect()),
            },
        );
        PeftAdapter {
            config: PeftLoraConfig::new(2, 4.0, vec!["fc1".into()]),
            layers,
        }
    }

    #[test]
    fn write_then_read_gives_back_the_same_adapter() {
        let dir = tempfile::tempdir().unwrap();
        let a = adapter();
        a.write(dir.path()).unwrap();
        assert_eq!(PeftAdapter::read(dir.path()).unwrap(), a);
    }

    #[test]
    fn factor_keys_parse_both_ways() {
        let key = factor_key("encoder.layer.0.q", Factor::B);
        assert_eq!(key, "base_model.model.encoder.layer.0.q.lora_B.weight");
        assert_eq!(
            parse_factor_key(&key),
            Some(("encoder.layer.0.q".to_string(), Factor::B))
        );
        assert_eq!(parse_factor_key("base_model.model.fc1.weight"), None);
    }

    #[test]
    fn failed_save_keeps_the_previous_adapter() {
        let dir = tempfile::tempdir().unwrap();
        let good = adapter();
        good.write(dir.path()).unwrap();
        let mut bad = good.clone();
        bad.layers.get_mut("fc1").unwrap().a.data[0] = f32::NAN;
        assert!(matches!(
            bad.write(dir.path()),
            Err(AdapterError::NonFinite { .. })
        ));
        assert_eq!(PeftAdapter::read(dir.path()).unwrap(), good);
    }

    #[test]
    fn truncated_weights_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        adapter().write(dir.path()).unwrap();
        let p = dir.path().join(WEIGHTS_FILE);
        let bytes = std::fs::read(&p).unwrap();
        for cut in [0, 4, 9, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let err = PeftAdapter::read(dir.path()).unwrap_err();
            assert!(
                matches!(err, AdapterError::InvalidSafetensors { .. }),
                "{cut}: {err}"
            );
        }
    }

    #[test]
    fn missing_half_and_wrong_rank_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = adapter();
        a.config.r = 3;
        a.write(dir.path()).unwrap();
        let err = PeftAdapter::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("base_model.model.fc1.lora_A.weight"), "{err}");

        let mut tensors = BTreeMap::new();
        tensors.insert(
            factor_key("fc1", Factor::A),
            RawTensor::f32(vec![2, 3], &[0.0; 6]),
        );
        write_safetensors_atomic(&dir.path().join(WEIGHTS_FILE), &tensors, None).unwrap();
        let mut cfg = adapter().config;
        cfg.r = 2;
        write_atomic(&dir.path().join(CONFIG_FILE), cfg.to_json().as_bytes()).unwrap();
        let err = PeftAdapter::read(dir.path()).unwrap_err();
        assert!(
            matches!(&err, AdapterError::MissingTensor { key } if key.ends_with("fc1.lora_B.weight")),
            "{err}"
        );
    }
}
