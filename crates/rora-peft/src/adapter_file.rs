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

/// What kind of module an adapted layer is, which decides its tensor names in PEFT's file.
///
/// Both kinds are held in the same `[out, in]` view, so the spectral analysis, the
/// rescaling and the weighted combinations treat them alike:
///
/// | kind | PEFT keys | `A` | `B` | base weight `<path>.weight` |
/// | --- | --- | --- | --- | --- |
/// | [`Linear`](Self::Linear) | `lora_A.weight`, `lora_B.weight` | `[r, in]` | `[out, r]` | `[out, in]` |
/// | [`Embedding`](Self::Embedding) | `lora_embedding_A`, `lora_embedding_B` | `[r, num_embeddings]` | `[embedding_dim, r]` | `[num_embeddings, embedding_dim]` |
///
/// An embedding is the linear map `in = num_embeddings → out = embedding_dim` applied to a
/// one-hot input: its `[out, in]` weight is the transpose of the stored table, and PEFT's
/// update of the table is `(s·B·A)ᵀ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum LayerKind {
    /// A linear layer (`nn.Linear`).
    #[default]
    Linear,
    /// An embedding table (`nn.Embedding`).
    Embedding,
}

impl LayerKind {
    /// `"linear"` or `"embedding"`, for messages and reports.
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Linear => "linear",
            LayerKind::Embedding => "embedding",
        }
    }

    /// The shape of the base weight `<path>.weight` in a PyTorch checkpoint for an update
    /// `[out, in]`: `[out, in]` for a linear layer, `[in, out]` (`[num_embeddings,
    /// embedding_dim]`) for an embedding.
    pub fn base_shape(self, out: usize, inp: usize) -> [usize; 2] {
        match self {
            LayerKind::Linear => [out, inp],
            LayerKind::Embedding => [inp, out],
        }
    }
}

/// The tensors of one adapted layer, in PEFT's layout: the two LoRA factors and, for DoRA,
/// the magnitude vector.
///
/// `ΔW = s·B·A: [out, in]` (for an embedding, `in = num_embeddings` and
/// `out = embedding_dim`, see [`LayerKind`]). With DoRA (`use_dora`), the adapted weight is
/// `W = diag(m / ‖W0 + s·B·A‖_row)·(W0 + s·B·A)`, with `m = magnitude` (`[out]`) and the
/// norm of every output row (PEFT's `dim=1` of the `[out, in]` weight).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerFactors {
    /// `A: [r, in]`.
    pub a: HostMatrix,
    /// `B: [out, r]`.
    pub b: HostMatrix,
    /// DoRA's magnitude vector `m: [out]` (`lora_magnitude_vector`); `None` for plain LoRA.
    pub magnitude: Option<Vec<f32>>,
    /// The kind of module, which names the tensors in the file.
    pub kind: LayerKind,
}

impl LayerFactors {
    /// The factors of a plain LoRA linear layer.
    pub fn new(a: HostMatrix, b: HostMatrix) -> Self {
        LayerFactors {
            a,
            b,
            magnitude: None,
            kind: LayerKind::Linear,
        }
    }

    /// The factors of a LoRA embedding (`A: [r, num_embeddings]`, `B: [embedding_dim, r]`).
    pub fn embedding(a: HostMatrix, b: HostMatrix) -> Self {
        LayerFactors {
            kind: LayerKind::Embedding,
            ..LayerFactors::new(a, b)
        }
    }

    /// The same factors with DoRA's magnitude vector `m: [out]`.
    pub fn with_magnitude(mut self, magnitude: Vec<f32>) -> Self {
        self.magnitude = Some(magnitude);
        self
    }

    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.a.rows
    }
    /// Input features (`num_embeddings` for an embedding).
    pub fn d_in(&self) -> usize {
        self.a.cols
    }
    /// Output features (`embedding_dim` for an embedding).
    pub fn d_out(&self) -> usize {
        self.b.rows
    }
    /// `true` for a DoRA layer (it has a magnitude vector).
    pub fn is_dora(&self) -> bool {
        self.magnitude.is_some()
    }
    /// The safetensors key of one of this layer's tensors.
    pub fn key(&self, path: &str, factor: Factor) -> String {
        tensor_key(path, self.kind, factor)
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

/// The safetensors key of a linear layer's tensor: `base_model.model.<path>.lora_A.weight`
/// (`lora_B.weight`, `lora_magnitude_vector`). See [`tensor_key`] for embeddings.
pub fn factor_key(path: &str, factor: Factor) -> String {
    tensor_key(path, LayerKind::Linear, factor)
}

/// The safetensors key PEFT's `save_pretrained` gives a tensor of layer `path`:
///
/// | | linear | embedding |
/// | --- | --- | --- |
/// | [`Factor::A`] | `<path>.lora_A.weight` | `<path>.lora_embedding_A` |
/// | [`Factor::B`] | `<path>.lora_B.weight` | `<path>.lora_embedding_B` |
/// | [`Factor::Magnitude`] | `<path>.lora_magnitude_vector` | `<path>.lora_magnitude_vector` |
///
/// each prefixed with [`KEY_PREFIX`]. PEFT strips the adapter name (`.default`) and, for the
/// magnitude, the `.weight` of its `DoraLinearLayer`.
pub fn tensor_key(path: &str, kind: LayerKind, factor: Factor) -> String {
    let name = match (kind, factor) {
        (LayerKind::Linear, Factor::A) => "lora_A.weight",
        (LayerKind::Linear, Factor::B) => "lora_B.weight",
        (LayerKind::Embedding, Factor::A) => "lora_embedding_A",
        (LayerKind::Embedding, Factor::B) => "lora_embedding_B",
        (_, Factor::Magnitude) => "lora_magnitude_vector",
    };
    format!("{KEY_PREFIX}{path}.{name}")
}

/// Which tensor of an adapted layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// `lora_A` (`lora_embedding_A`), `[r, in]`.
    A,
    /// `lora_B` (`lora_embedding_B`), `[out, r]`.
    B,
    /// DoRA's `lora_magnitude_vector`, `[out]`.
    Magnitude,
}

impl Factor {
    /// PEFT's name for a linear layer: `lora_A`, `lora_B` or `lora_magnitude_vector`.
    pub fn name(self) -> &'static str {
        match self {
            Factor::A => "lora_A",
            Factor::B => "lora_B",
            Factor::Magnitude => "lora_magnitude_vector",
        }
    }
}

/// A parsed adapter tensor key: the module path, the tensor, and the layer kind its name
/// implies (`None` for the magnitude vector, whose name is the same for both kinds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorKey {
    /// The module path, without [`KEY_PREFIX`].
    pub path: String,
    /// Which tensor.
    pub factor: Factor,
    /// The kind the name implies.
    pub kind: Option<LayerKind>,
}

/// Split a key into module path and tensor; `None` for keys that are not adapter tensors.
/// Accepts what `save_pretrained` writes and the in-memory `state_dict` names that carry
/// the adapter name (`lora_A.default.weight`, `lora_embedding_A.default`,
/// `lora_magnitude_vector.default.weight`).
pub fn parse_tensor_key(key: &str) -> Option<TensorKey> {
    let rest = key.strip_prefix(KEY_PREFIX).unwrap_or(key);
    let found = |path: &str, factor, kind| {
        (!path.is_empty()).then(|| TensorKey {
            path: path.to_string(),
            factor,
            kind,
        })
    };
    for (name, factor) in [
        ("lora_embedding_A", Factor::A),
        ("lora_embedding_B", Factor::B),
    ] {
        for suffix in [format!(".{name}"), format!(".{name}.default")] {
            if let Some(path) = rest.strip_suffix(&suffix) {
                return found(path, factor, Some(LayerKind::Embedding));
            }
        }
    }
    for suffix in [
        ".lora_magnitude_vector",
        ".lora_magnitude_vector.weight",
        ".lora_magnitude_vector.default",
        ".lora_magnitude_vector.default.weight",
    ] {
        if let Some(path) = rest.strip_suffix(suffix) {
            return found(path, Factor::Magnitude, None);
        }
    }
    let rest = rest.strip_suffix(".weight")?;
    // PEFT strips the adapter name when saving; accept `lora_A.default` too.
    let rest = rest.strip_suffix(".default").unwrap_or(rest);
    if let Some(path) = rest.strip_suffix(".lora_A") {
        found(path, Factor::A, Some(LayerKind::Linear))
    } else {
        rest.strip_suffix(".lora_B")
            .and_then(|path| found(path, Factor::B, Some(LayerKind::Linear)))
    }
}

/// Split a linear layer's key into module path and factor (`lora_A` / `lora_B`); `None`
/// for other keys. See [`parse_tensor_key`] for embeddings and DoRA magnitudes.
pub fn parse_factor_key(key: &str) -> Option<(String, Factor)> {
    match parse_tensor_key(key)? {
        TensorKey {
            path,
            factor: factor @ (Factor::A | Factor::B),
            kind: Some(LayerKind::Linear),
        } => Some((path, factor)),
        _ => None,
    }
}

/// The tensors of one layer found so far while reading a file.
#[derive(Default)]
struct Parts {
    a: Option<HostMatrix>,
    b: Option<HostMatrix>,
    magnitude: Option<Vec<f32>>,
    /// The kind the first A/B key implied, and that key.
    kind: Option<(LayerKind, String)>,
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
        let mut parts: BTreeMap<String, Parts> = BTreeMap::new();
        for key in weights.names() {
            let parsed = parse_tensor_key(key).ok_or_else(|| AdapterError::UnexpectedTensor {
                path: weights_path.clone(),
                key: key.clone(),
            })?;
            let (shape, _) = weights.info(key)?;
            let want_rank = if parsed.factor == Factor::Magnitude {
                1
            } else {
                2
            };
            if shape.len() != want_rank {
                return Err(AdapterError::FactorShape {
                    path: weights_path.clone(),
                    key: key.clone(),
                    found: shape,
                    expected: match parsed.factor {
                        Factor::Magnitude => {
                            "a 1-D vector (lora_magnitude_vector is [out])".to_string()
                        }
                        f => format!("a 2-D matrix {}", factor_layout(f)),
                    },
                });
            }
            let t = weights.tensor(key)?;
            let count = t.non_finite_count();
            if count > 0 {
                return Err(AdapterError::NonFinite {
                    path: weights_path.clone(),
                    key: key.clone(),
                    count,
                });
            }
            let entry = parts.entry(parsed.path.clone()).or_default();
            if let Some(kind) = parsed.kind {
                match entry.kind {
                    Some((other, ref other_key)) if other != kind => {
                        return Err(AdapterError::InconsistentLayer {
                            path: weights_path.clone(),
                            layer: parsed.path,
                            message: format!(
                                "mixes {} and {} tensors ({other_key:?}, {key:?})",
                                other.name(),
                                kind.name()
                            ),
                        });
                    }
                    _ => entry.kind = Some((kind, key.clone())),
                }
            }
            match parsed.factor {
                Factor::A => entry.a = Some(t.into_matrix(key)?),
                Factor::B => entry.b = Some(t.into_matrix(key)?),
                Factor::Magnitude => entry.magnitude = Some(t.data),
            }
        }
        let mut layers = BTreeMap::new();
        for (path, parts) in parts {
            let kind = parts.kind.map_or(LayerKind::Linear, |(k, _)| k);
            let missing = |factor| AdapterError::MissingTensor {
                path: weights_path.clone(),
                key: tensor_key(&path, kind, factor),
            };
            let a = parts.a.ok_or_else(|| missing(Factor::A))?;
            let b = parts.b.ok_or_else(|| missing(Factor::B))?;
            let (r, _) = config.rank_alpha_for(&path);
            let factors = LayerFactors {
                a,
                b,
                magnitude: parts.magnitude,
                kind,
            };
            check_layer(&path, &factors, r, config.use_dora, &weights_path)?;
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
                    f.key(path, factor),
                    RawTensor::f32(m.shape().to_vec(), &m.data),
                );
            }
            if let Some(m) = &f.magnitude {
                tensors.insert(
                    f.key(path, Factor::Magnitude),
                    RawTensor::f32(vec![m.len()], m),
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
            check_layer(path, f, r, self.config.use_dora, Path::new(""))?;
            let magnitude = f.magnitude.as_deref().unwrap_or_default();
            for (factor, values) in [
                (Factor::A, f.a.data.as_slice()),
                (Factor::B, f.b.data.as_slice()),
                (Factor::Magnitude, magnitude),
            ] {
                let count = crate::tensor_file::count_non_finite(values);
                if count > 0 {
                    let key = f.key(path, factor);
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
        Factor::Magnitude => "(lora_magnitude_vector is [out])",
    }
}

/// The tensors of layer `path` fit PEFT's layout with rank `r`: `A: [r, in]`, `B: [out, r]`,
/// no zero dimension, and a DoRA magnitude `[out]` exactly when the config says `use_dora`.
/// `file` names the weights file in errors (empty in memory).
fn check_layer(
    path: &str,
    f: &LayerFactors,
    r: usize,
    use_dora: bool,
    file: &Path,
) -> Result<(), AdapterError> {
    let err = |factor, found: Vec<usize>, expected: String| AdapterError::FactorShape {
        path: file.to_path_buf(),
        key: f.key(path, factor),
        found,
        expected,
    };
    let (a, b) = (f.a.shape(), f.b.shape());
    let (an, bn) = match f.kind {
        LayerKind::Linear => ("lora_A is [r, in]", "lora_B is [out, r]"),
        LayerKind::Embedding => (
            "lora_embedding_A is [r, num_embeddings]",
            "lora_embedding_B is [embedding_dim, r]",
        ),
    };
    if a[0] != r {
        let hint = if a[1] == r {
            "; [in, r] would be the transpose"
        } else {
            ""
        };
        return Err(err(
            Factor::A,
            a.to_vec(),
            format!("[r = {r}, in] ({an}, r from adapter_config.json){hint}"),
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
            b.to_vec(),
            format!("[out, r = {r}] ({bn}, r from adapter_config.json){hint}"),
        ));
    }
    if a[1] == 0 {
        return Err(err(Factor::A, a.to_vec(), format!("[{r}, in] with in ≥ 1")));
    }
    if b[0] == 0 {
        return Err(err(
            Factor::B,
            b.to_vec(),
            format!("[out, {r}] with out ≥ 1"),
        ));
    }
    match (&f.magnitude, use_dora) {
        (Some(m), true) if m.len() != b[0] => Err(err(
            Factor::Magnitude,
            vec![m.len()],
            format!(
                "[out = {}] (lora_magnitude_vector is [out], out = rows of {})",
                b[0],
                f.key(path, Factor::B)
            ),
        )),
        (Some(_), false) => Err(AdapterError::InconsistentLayer {
            path: file.to_path_buf(),
            layer: path.to_string(),
            message: format!(
                "tensor {:?} is a DoRA magnitude vector, but adapter_config.json has use_dora = false",
                f.key(path, Factor::Magnitude)
            ),
        }),
        (None, true) => Err(AdapterError::InconsistentLayer {
            path: file.to_path_buf(),
            layer: path.to_string(),
            message: format!(
                "adapter_config.json has use_dora = true (DoRA), but the DoRA magnitude vector {:?} is missing",
                f.key(path, Factor::Magnitude)
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter() -> PeftAdapter {
        let mut layers = BTreeMap::new();
        layers.insert(
            "fc1".to_string(),
            LayerFactors::new(
                HostMatrix::new(2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                HostMatrix::new(4, 2, (0..8).map(|v| v as f32).collect()),
            ),
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
    fn dora_and_embedding_layers_round_trip_with_peft_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = adapter();
        a.config.use_dora = true;
        let fc1 = a.layers.remove("fc1").unwrap();
        a.layers
            .insert("fc1".into(), fc1.with_magnitude(vec![1.0, 2.0, 3.0, 4.0]));
        a.layers.insert(
            "emb".into(),
            LayerFactors::embedding(
                HostMatrix::new(2, 5, (0..10).map(|v| v as f32).collect()),
                HostMatrix::new(3, 2, vec![0.5; 6]),
            )
            .with_magnitude(vec![1.0; 3]),
        );
        a.write(dir.path()).unwrap();
        let file = TensorFile::open(&dir.path().join(WEIGHTS_FILE)).unwrap();
        assert_eq!(
            file.names(),
            [
                "base_model.model.emb.lora_embedding_A",
                "base_model.model.emb.lora_embedding_B",
                "base_model.model.emb.lora_magnitude_vector",
                "base_model.model.fc1.lora_A.weight",
                "base_model.model.fc1.lora_B.weight",
                "base_model.model.fc1.lora_magnitude_vector",
            ]
        );
        assert_eq!(
            file.info("base_model.model.fc1.lora_magnitude_vector")
                .unwrap()
                .0,
            [4]
        );
        let back = PeftAdapter::read(dir.path()).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.layers["emb"].kind, LayerKind::Embedding);

        // A magnitude of the wrong length, and DoRA on one side only, are named.
        let mut bad = a.clone();
        bad.layers.get_mut("fc1").unwrap().magnitude = Some(vec![1.0; 3]);
        let err = bad.validate().unwrap_err();
        assert!(
            matches!(&err, AdapterError::FactorShape { key, found, .. }
                if key.ends_with("fc1.lora_magnitude_vector") && found == &[3]),
            "{err}"
        );
        let mut bad = a.clone();
        bad.config.use_dora = false;
        let err = bad.validate().unwrap_err();
        assert!(
            matches!(&err, AdapterError::InconsistentLayer { .. })
                && err.to_string().contains("use_dora = false"),
            "{err}"
        );
        let mut bad = a.clone();
        bad.layers.get_mut("emb").unwrap().magnitude = None;
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("use_dora = true") && err.contains("emb.lora_magnitude_vector"),
            "{err}"
        );
    }

    #[test]
    fn tensor_keys_parse_every_peft_spelling() {
        for (key, path, factor, kind) in [
            (
                "base_model.model.m.lora_A.weight",
                "m",
                Factor::A,
                Some(LayerKind::Linear),
            ),
            (
                "base_model.model.m.lora_B.default.weight",
                "m",
                Factor::B,
                Some(LayerKind::Linear),
            ),
            (
                "base_model.model.e.lora_embedding_A",
                "e",
                Factor::A,
                Some(LayerKind::Embedding),
            ),
            (
                "base_model.model.e.lora_embedding_B.default",
                "e",
                Factor::B,
                Some(LayerKind::Embedding),
            ),
            (
                "base_model.model.m.lora_magnitude_vector",
                "m",
                Factor::Magnitude,
                None,
            ),
            (
                "base_model.model.m.lora_magnitude_vector.default.weight",
                "m",
                Factor::Magnitude,
                None,
            ),
        ] {
            let parsed = parse_tensor_key(key).unwrap();
            assert_eq!(
                parsed,
                TensorKey {
                    path: path.into(),
                    factor,
                    kind
                },
                "{key}"
            );
            if let Some(kind) = kind {
                assert_eq!(
                    parse_tensor_key(&tensor_key(path, kind, factor))
                        .unwrap()
                        .path,
                    path
                );
            }
        }
        assert_eq!(parse_tensor_key("base_model.model.lora_embedding_A"), None);
        assert_eq!(
            parse_factor_key("base_model.model.e.lora_embedding_A"),
            None
        );
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
