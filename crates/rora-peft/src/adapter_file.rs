//! A PEFT LoRA adapter on disk: `adapter_config.json` + `adapter_model.safetensors`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{CONFIG_FILE, PeftLoraConfig, TargetModules};
use crate::error::AdapterError;
use crate::target::TargetPattern;
use crate::tensor_file::{HostMatrix, RawTensor, TensorFile};
use crate::write::{Overwrite, Staged, check_output, staged_safetensors};
#[cfg(test)]
use crate::write::{write_atomic, write_safetensors_atomic};

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

/// How strictly [`PeftAdapter::read_with`] holds the config to the tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Every name of the config's `target_modules` (or its regex) must select at least one
    /// layer of the weights file ([`AdapterError::UnmatchedTargets`] otherwise). Default
    /// `true`; with `false` the mismatch is only reported by
    /// [`PeftAdapter::unmatched_targets`].
    pub strict_targets: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            strict_targets: true,
        }
    }
}

impl PeftAdapter {
    /// Read an adapter folder as HuggingFace PEFT's `save_pretrained` writes it, strictly
    /// ([`ReadOptions::default`]); see [`read_with`](Self::read_with).
    pub fn read(dir: &Path) -> Result<Self, AdapterError> {
        Self::read_with(dir, &ReadOptions::default())
    }

    /// Read an adapter folder as HuggingFace PEFT's `save_pretrained` writes it.
    ///
    /// Checks, each an error naming the file and the key:
    ///
    /// * `dir` is a folder, its weights file a regular file with a valid header;
    /// * the weights file holds at least one tensor ([`AdapterError::EmptyAdapter`]), and
    ///   every tensor is a LoRA factor ([`AdapterError::UnexpectedTensor`]);
    /// * each layer has both factors, 2-D, with PEFT's layout and the config's rank for that
    ///   module: `A: [r, in]`, `B: [out, r]`, no zero dimension
    ///   ([`AdapterError::FactorShape`], which also says when a factor looks transposed);
    /// * every value is finite ([`AdapterError::NonFinite`]);
    /// * with [`ReadOptions::strict_targets`], every `target_modules` name selects a layer
    ///   ([`AdapterError::UnmatchedTargets`]).
    pub fn read_with(dir: &Path, options: &ReadOptions) -> Result<Self, AdapterError> {
        match std::fs::metadata(dir) {
            Err(e) => return Err(AdapterError::io(dir, e)),
            Ok(m) if !m.is_dir() => {
                return Err(AdapterError::NotADirectory {
                    path: dir.to_path_buf(),
                });
            }
            Ok(_) => {}
        }
        let config = PeftLoraConfig::read(dir)?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let weights = TensorFile::open(&weights_path)?;
        if weights.names().is_empty() {
            return Err(AdapterError::EmptyAdapter { path: weights_path });
        }
        let mut halves: BTreeMap<String, (Option<HostMatrix>, Option<HostMatrix>)> =
            BTreeMap::new();
        for key in weights.names() {
            let (path, factor) =
                parse_factor_key(key).ok_or_else(|| AdapterError::UnexpectedTensor {
                    path: weights_path.clone(),
                    key: key.clone(),
                })?;
            let (shape, _) = weights.info(key)?;
            if shape.len() != 2 {
                return Err(AdapterError::FactorShape {
                    path: weights_path.clone(),
                    key: key.clone(),
                    found: shape,
                    expected: format!("a 2-D matrix {}", factor_layout(factor)),
                });
            }
            let m = weights.matrix(key)?;
            let count = m.non_finite_count();
            if count > 0 {
                return Err(AdapterError::NonFinite {
                    path: weights_path.clone(),
                    key: key.clone(),
                    count,
                });
            }
            let entry = halves.entry(path).or_default();
            match factor {
                Factor::A => entry.0 = Some(m),
                Factor::B => entry.1 = Some(m),
            }
        }
        let mut layers = BTreeMap::new();
        for (path, (a, b)) in halves {
            let missing = |factor| AdapterError::MissingTensor {
                path: weights_path.clone(),
                key: factor_key(&path, factor),
            };
            let a = a.ok_or_else(|| missing(Factor::A))?;
            let b = b.ok_or_else(|| missing(Factor::B))?;
            let (r, _) = config.rank_alpha_for(&path);
            let factors = LayerFactors { a, b };
            check_factors(&path, &factors, r, &weights_path)?;
            layers.insert(path, factors);
        }
        let adapter = PeftAdapter { config, layers };
        if options.strict_targets {
            let unmatched = adapter.unmatched_targets();
            if !unmatched.is_empty() {
                return Err(AdapterError::UnmatchedTargets {
                    path: dir.join(CONFIG_FILE),
                    targets: unmatched,
                    layers: adapter.layers.keys().take(20).cloned().collect(),
                });
            }
        }
        Ok(adapter)
    }

    /// The entries of the config's `target_modules` that select none of the adapter's layers
    /// (PEFT's rules: a name matches a module path equal to it or ending with `.name`; a
    /// string is a regex that must match a whole path). Empty when every entry selects a
    /// layer, when `target_modules` is empty or `"all-linear"`, or when the regex uses a
    /// syntax the `regex` crate does not support (it cannot be checked).
    pub fn unmatched_targets(&self) -> Vec<String> {
        let paths = || self.layers.keys().map(String::as_str);
        match &self.config.target_modules {
            TargetModules::List(names) => names
                .iter()
                .filter(|n| n.as_str() != ALL_LINEAR)
                .filter(|n| {
                    let p = TargetPattern::Suffix((*n).clone());
                    !paths().any(|path| p.matches(path))
                })
                .cloned()
                .collect(),
            TargetModules::Regex(re) if re == ALL_LINEAR => Vec::new(),
            TargetModules::Regex(re) => match TargetPattern::regex(re) {
                Ok(p) if !paths().any(|path| p.matches(path)) => vec![re.clone()],
                _ => Vec::new(),
            },
        }
    }

    /// Write the adapter to `dir` (created if missing) as PEFT's `from_pretrained` reads it,
    /// replacing only regular files; see [`write_with`](Self::write_with).
    pub fn write(&self, dir: &Path) -> Result<(), AdapterError> {
        self.write_with(dir, Overwrite::default())
    }

    /// Write the adapter to `dir` (created if missing) as PEFT's `from_pretrained` reads it.
    ///
    /// Nothing is written unless the adapter is one [`read`](Self::read) accepts: at least
    /// one layer ([`AdapterError::EmptyAdapter`]), factors of consistent shapes with the
    /// config's rank ([`AdapterError::FactorShape`]), all values finite
    /// ([`AdapterError::NonFiniteOutput`]). Both files are then written to temporary files
    /// in `dir` and renamed into place only once both are complete (see [`Overwrite`] for
    /// what may be replaced), so a save that fails leaves the previous adapter intact.
    pub fn write_with(&self, dir: &Path, overwrite: Overwrite) -> Result<(), AdapterError> {
        let weights_path = dir.join(WEIGHTS_FILE);
        self.check(Some(&weights_path))?;
        let mut tensors = BTreeMap::new();
        for (path, f) in &self.layers {
            for (factor, m) in [(Factor::A, &f.a), (Factor::B, &f.b)] {
                tensors.insert(
                    factor_key(path, factor),
                    RawTensor::f32(m.shape().to_vec(), &m.data),
                );
            }
        }
        if let Ok(m) = std::fs::metadata(dir)
            && !m.is_dir()
        {
            return Err(AdapterError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|e| AdapterError::io(dir, e))?;
        let config_path = dir.join(CONFIG_FILE);
        let stage = || {
            // Check both destinations before writing either.
            check_output(&config_path, overwrite)?;
            let metadata = [("format".to_string(), "pt".to_string())].into();
            let weights = staged_safetensors(&weights_path, &tensors, Some(metadata), overwrite)?;
            let json = self.config.to_json();
            let config = Staged::new(&config_path, overwrite, |w| w.write_all(json.as_bytes()))?;
            Ok::<_, AdapterError>((weights, config))
        };
        let (weights, config) = match stage() {
            Ok(staged) => staged,
            Err(e) => {
                if created {
                    // Leave no empty folder behind (only an empty one can be removed).
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(e);
            }
        };
        weights.commit()?;
        config.commit()?;
        Ok(())
    }

    /// Check an adapter built in memory as [`read`](Self::read) checks a file (except
    /// `target_modules`): at least one layer ([`AdapterError::EmptyAdapter`]), factors of
    /// PEFT's layout with the config's rank and no zero dimension
    /// ([`AdapterError::FactorShape`]), every value finite ([`AdapterError::NonFinite`]).
    /// [`write`](Self::write) runs the same checks; call this before applying an adapter
    /// that did not come from [`read`](Self::read).
    pub fn validate(&self) -> Result<(), AdapterError> {
        self.check(None)
    }

    /// [`validate`](Self::validate); with `weights` (the file about to be written), a
    /// non-finite value is [`AdapterError::NonFiniteOutput`] naming it.
    fn check(&self, weights: Option<&Path>) -> Result<(), AdapterError> {
        if self.layers.is_empty() {
            return Err(AdapterError::EmptyAdapter {
                path: weights
                    .and_then(Path::parent)
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            });
        }
        for (path, f) in &self.layers {
            let (r, _) = self.config.rank_alpha_for(path);
            check_factors(path, f, r, Path::new(""))?;
            for (factor, m) in [(Factor::A, &f.a), (Factor::B, &f.b)] {
                let count = m.non_finite_count();
                if count > 0 {
                    let key = factor_key(path, factor);
                    return Err(match weights {
                        Some(file) => AdapterError::NonFiniteOutput {
                            path: file.to_path_buf(),
                            key,
                            count,
                        },
                        None => AdapterError::NonFinite {
                            path: PathBuf::new(),
                            key,
                            count,
                        },
                    });
                }
            }
        }
        Ok(())
    }

    /// The scale `s` of the layer at `path` (from the config's alpha, rank and rsLoRA).
    pub fn scale_for(&self, path: &str) -> f64 {
        self.config.scale_for(path)
    }
}

/// PEFT's `target_modules` shorthand for every linear layer (resolved by PEFT when the
/// adapter is created, so it rarely reaches a saved config).
const ALL_LINEAR: &str = "all-linear";

fn factor_layout(factor: Factor) -> &'static str {
    match factor {
        Factor::A => "(lora_A is [r, in])",
        Factor::B => "(lora_B is [out, r])",
    }
}

/// The factors of layer `path` fit PEFT's layout with rank `r`: `A: [r, in]`, `B: [out, r]`,
/// no zero dimension. `file` names the weights file in errors (empty in memory).
fn check_factors(path: &str, f: &LayerFactors, r: usize, file: &Path) -> Result<(), AdapterError> {
    let err = |factor, found: [usize; 2], expected: String| AdapterError::FactorShape {
        path: file.to_path_buf(),
        key: factor_key(path, factor),
        found: found.to_vec(),
        expected,
    };
    let (a, b) = (f.a.shape(), f.b.shape());
    if a[0] != r {
        let hint = if a[1] == r {
            "; [in, r] would be the transpose"
        } else {
            ""
        };
        return Err(err(
            Factor::A,
            a,
            format!("[r = {r}, in] (lora_A is [r, in], r from adapter_config.json){hint}"),
        ));
    }
    if b[1] != r {
        let hint = if b[0] == r {
            "; [r, out] would be the transpose"
        } else {
            ""
        };
        return Err(err(
            Factor::B,
            b,
            format!("[out, r = {r}] (lora_B is [out, r], r from adapter_config.json){hint}"),
        ));
    }
    if a[1] == 0 {
        return Err(err(Factor::A, a, format!("[{r}, in] with in ≥ 1")));
    }
    if b[0] == 0 {
        return Err(err(Factor::B, b, format!("[out, {r}] with out ≥ 1")));
    }
    Ok(())
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
            Err(AdapterError::NonFiniteOutput { .. })
        ));
        assert_eq!(PeftAdapter::read(dir.path()).unwrap(), good);
        assert!(matches!(
            bad.validate(),
            Err(AdapterError::NonFinite { ref key, count: 1, .. }) if key.ends_with("fc1.lora_A.weight")
        ));
        assert!(good.validate().is_ok());
    }

    #[test]
    fn an_empty_adapter_is_neither_written_nor_read() {
        let dir = tempfile::tempdir().unwrap();
        let good = adapter();
        good.write(dir.path()).unwrap();
        let empty = PeftAdapter {
            config: good.config.clone(),
            layers: BTreeMap::new(),
        };
        assert!(matches!(
            empty.write(dir.path()),
            Err(AdapterError::EmptyAdapter { .. })
        ));
        assert_eq!(PeftAdapter::read(dir.path()).unwrap(), good);
        write_safetensors_atomic(&dir.path().join(WEIGHTS_FILE), &BTreeMap::new(), None).unwrap();
        let err = PeftAdapter::read(dir.path()).unwrap_err();
        assert!(
            matches!(err, AdapterError::EmptyAdapter { ref path } if path.ends_with(WEIGHTS_FILE)),
            "{err}"
        );
    }

    #[test]
    fn target_modules_must_match_a_layer_unless_lenient() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = adapter();
        a.config.target_modules = TargetModules::List(vec!["fc1".into(), "fc9".into()]);
        a.write(dir.path()).unwrap();
        let err = PeftAdapter::read(dir.path()).unwrap_err();
        assert!(
            matches!(&err, AdapterError::UnmatchedTargets { targets, .. } if targets == &["fc9"]),
            "{err}"
        );
        let lenient = ReadOptions {
            strict_targets: false,
        };
        let back = PeftAdapter::read_with(dir.path(), &lenient).unwrap();
        assert_eq!(back.unmatched_targets(), ["fc9"]);
        for (targets, unmatched) in [
            (TargetModules::Regex("f.1".into()), vec![]),
            (TargetModules::Regex("fc".into()), vec!["fc".to_string()]),
            (TargetModules::Regex("all-linear".into()), vec![]),
            (TargetModules::Regex("(?<=x)fc1".into()), vec![]), // Python-only syntax
            (TargetModules::List(vec![]), vec![]),
        ] {
            a.config.target_modules = targets;
            assert_eq!(
                a.unmatched_targets(),
                unmatched,
                "{:?}",
                a.config.target_modules
            );
        }
    }

    #[test]
    fn an_adapter_path_that_is_not_a_folder_says_so() {
        let dir = tempfile::tempdir().unwrap();
        adapter().write(dir.path()).unwrap();
        let err = PeftAdapter::read(&dir.path().join(WEIGHTS_FILE)).unwrap_err();
        assert!(matches!(err, AdapterError::NotADirectory { .. }), "{err}");
        assert!(err.to_string().contains("not a folder"), "{err}");
        let err = adapter().write(&dir.path().join(WEIGHTS_FILE)).unwrap_err();
        assert!(matches!(err, AdapterError::NotADirectory { .. }), "{err}");
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
        let good = adapter();
        good.write(dir.path()).unwrap();
        let mut a = good.clone();
        a.config.r = 3;
        // `write` refuses factors that do not fit the config's rank...
        let err = a.write(dir.path()).unwrap_err();
        assert!(matches!(err, AdapterError::FactorShape { .. }), "{err}");
        assert_eq!(PeftAdapter::read(dir.path()).unwrap(), good);
        // ... and `read` names the factor of such a file, and the file.
        write_atomic(&dir.path().join(CONFIG_FILE), a.config.to_json().as_bytes()).unwrap();
        let err = PeftAdapter::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("base_model.model.fc1.lora_A.weight"), "{err}");
        assert!(err.contains(WEIGHTS_FILE) && err.contains("r = 3"), "{err}");

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
            matches!(&err, AdapterError::MissingTensor { key, .. } if key.ends_with("fc1.lora_B.weight")),
            "{err}"
        );
    }
}
