//! `adapter_config.json`: HuggingFace PEFT's LoRA configuration, read and written as PEFT does.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::AdapterError;

/// The name PEFT gives the adapter configuration file.
pub const CONFIG_FILE: &str = "adapter_config.json";

/// `target_modules` as PEFT stores it: a list of module-name suffixes or one regex string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module names; PEFT matches a module whose path equals a name or ends with `.name`.
    List(Vec<String>),
    /// A regular expression that must match the whole module path.
    Regex(String),
}

impl Default for TargetModules {
    fn default() -> Self {
        TargetModules::List(Vec::new())
    }
}

/// The LoRA settings of a PEFT adapter (`adapter_config.json`).
///
/// The keys this crate understands are fields; every other key PEFT wrote is kept in
/// [`extra`](Self::extra) and written back unchanged, so reading and re-saving an adapter
/// loses nothing PEFT needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftLoraConfig {
    /// Always `"LORA"` for the adapters this crate handles.
    pub peft_type: String,
    /// Default rank `r`.
    pub r: usize,
    /// Default `lora_alpha`.
    pub lora_alpha: f64,
    /// Dropout on the adapter's input (training only).
    #[serde(default)]
    pub lora_dropout: f64,
    /// Which modules carry adapters.
    #[serde(default)]
    pub target_modules: TargetModules,
    /// `alpha / sqrt(r)` scaling instead of `alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Which biases are trained: `"none"` is the only value this crate writes.
    #[serde(default = "default_bias")]
    pub bias: String,
    /// `true` for GPT-2 style `Conv1D` weights stored `[in, out]`.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Per-module rank overrides (key: module-name pattern).
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides (key: module-name pattern).
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
    /// DoRA (weight-decomposed LoRA): every layer then carries a magnitude vector
    /// (`lora_magnitude_vector`, `[out]`), and the adapted weight is
    /// `m·(W0 + s·B·A)/‖W0 + s·B·A‖` row by row.
    #[serde(default)]
    pub use_dora: bool,
    /// Every other key of the file, kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn default_bias() -> String {
    "none".to_string()
}

impl PeftLoraConfig {
    /// A config for `r`, `lora_alpha` and the given module names, with PEFT's defaults for
    /// everything else (`bias = "none"`, `fan_in_fan_out = false`, `inference_mode = true`).
    pub fn new(r: usize, lora_alpha: f64, target_modules: Vec<String>) -> Self {
        let mut extra = BTreeMap::new();
        extra.insert("inference_mode".into(), Value::Bool(true));
        extra.insert("init_lora_weights".into(), Value::Bool(true));
        extra.insert("modules_to_save".into(), Value::Null);
        extra.insert("task_type".into(), Value::Null);
        extra.insert("base_model_name_or_path".into(), Value::Null);
        extra.insert("layers_to_transform".into(), Value::Null);
        extra.insert("layers_pattern".into(), Value::Null);
        extra.insert("lora_bias".into(), Value::Bool(false));
        extra.insert("revision".into(), Value::Null);
        extra.insert(
            "peft_version".into(),
            Value::String(format!("rora-{}", env!("CARGO_PKG_VERSION"))),
        );
        PeftLoraConfig {
            peft_type: "LORA".into(),
            r,
            lora_alpha,
            lora_dropout: 0.0,
            target_modules: TargetModules::List(target_modules),
            use_rslora: false,
            bias: default_bias(),
            fan_in_fan_out: false,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            use_dora: false,
            extra,
        }
    }

    /// Parse a config from JSON text; `path` only names the source in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, AdapterError> {
        // Check peft_type before the full parse so a non-LoRA adapter gets the precise error.
        let value: Value = serde_json::from_str(text).map_err(|e| AdapterError::InvalidConfig {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        match value.get("peft_type") {
            Some(Value::String(t)) if t == "LORA" => {}
            Some(Value::String(t)) => {
                return Err(AdapterError::UnsupportedPeftType { found: t.clone() });
            }
            _ => {
                return Err(AdapterError::InvalidConfig {
                    path: path.to_path_buf(),
                    message: "missing string key \"peft_type\"".into(),
                });
            }
        }
        let config: PeftLoraConfig =
            serde_json::from_value(value).map_err(|e| AdapterError::InvalidConfig {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        config.check_supported(path)?;
        Ok(config)
    }

    /// Read `dir/adapter_config.json`.
    pub fn read(dir: &Path) -> Result<Self, AdapterError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| AdapterError::io(&path, e))?;
        Self::from_json(&text, &path)
    }

    /// The config as pretty JSON, keys sorted as PEFT writes them.
    pub fn to_json(&self) -> String {
        // Serialize through a Value so fields and `extra` merge into one sorted map.
        let value = serde_json::to_value(self).expect("config serializes");
        serde_json::to_string_pretty(&value).expect("value serializes")
    }

    fn check_supported(&self, path: &Path) -> Result<(), AdapterError> {
        if self.fan_in_fan_out {
            return Err(AdapterError::UnsupportedSetting {
                setting: "fan_in_fan_out = true (Conv1D weights)".into(),
            });
        }
        if self.r == 0 {
            return Err(AdapterError::InvalidConfig {
                path: path.to_path_buf(),
                message: "r must be at least 1".into(),
            });
        }
        if !self.lora_alpha.is_finite() {
            return Err(AdapterError::InvalidConfig {
                path: path.to_path_buf(),
                message: format!("lora_alpha must be finite, got {}", self.lora_alpha),
            });
        }
        Ok(())
    }

    /// Rank and alpha used for the module at `path`, honouring `rank_pattern` and
    /// `alpha_pattern` (a key matches when the path equals it or ends with `.key`; the
    /// longest matching key wins).
    pub fn rank_alpha_for(&self, path: &str) -> (usize, f64) {
        let r = pattern_lookup(&self.rank_pattern, path).unwrap_or(self.r);
        let alpha = pattern_lookup(&self.alpha_pattern, path).unwrap_or(self.lora_alpha);
        (r, alpha)
    }

    /// The scale `s` of `ΔW = s·B·A` for the module at `path`: `alpha / r`, or
    /// `alpha / sqrt(r)` with rsLoRA.
    pub fn scale_for(&self, path: &str) -> f64 {
        let (r, alpha) = self.rank_alpha_for(path);
        lora_scale(alpha, r, self.use_rslora)
    }
}

/// LoRA's scale: `alpha / r`, or `alpha / sqrt(r)` for rsLoRA.
pub fn lora_scale(alpha: f64, rank: usize, use_rslora: bool) -> f64 {
    if use_rslora {
        alpha / (rank as f64).sqrt()
    } else {
        alpha / rank as f64
    }
}

fn pattern_lookup<T: Copy>(patterns: &BTreeMap<String, T>, path: &str) -> Option<T> {
    patterns
        .iter()
        .filter(|(key, _)| path == key.as_str() || path.ends_with(&format!(".{key}")))
        .max_by_key(|(key, _)| key.len())
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_survive_a_round_trip() {
        let text = r#"{"peft_type":"LORA","r":4,"lora_alpha":8.0,"target_modules":["fc1"],"eva_config":null,"some_new_key":{"x":1}}"#;
        let c = PeftLoraConfig::from_json(text, Path::new("x.json")).unwrap();
        let again = PeftLoraConfig::from_json(&c.to_json(), Path::new("x.json")).unwrap();
        assert_eq!(c, again);
        assert_eq!(again.extra["some_new_key"]["x"], 1);
    }

    #[test]
    fn non_lora_peft_type_is_rejected_by_name() {
        let text = r#"{"peft_type":"IA3","r":4,"lora_alpha":8.0}"#;
        let err = PeftLoraConfig::from_json(text, Path::new("x.json")).unwrap_err();
        assert!(matches!(err, AdapterError::UnsupportedPeftType { ref found } if found == "IA3"));
    }

    #[test]
    fn patterns_override_rank_and_alpha() {
        let mut c = PeftLoraConfig::new(8, 16.0, vec!["q".into()]);
        c.rank_pattern.insert("layers.1.q".into(), 4);
        c.alpha_pattern.insert("q".into(), 4.0);
        assert_eq!(c.rank_alpha_for("model.layers.1.q"), (4, 4.0));
        assert_eq!(c.rank_alpha_for("model.layers.0.q"), (8, 4.0));
        assert_eq!(c.rank_alpha_for("model.layers.0.v"), (8, 16.0));
        c.use_rslora = true;
        assert!((c.scale_for("model.layers.0.v") - 16.0 / 8f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in [
            "",
            "{",
            "[1,2]",
            r#"{"peft_type":"LORA"}"#,
            r#"{"peft_type":"LORA","r":0,"lora_alpha":1}"#,
        ] {
            assert!(
                PeftLoraConfig::from_json(text, Path::new("x.json")).is_err(),
                "{text}"
            );
        }
    }
}
