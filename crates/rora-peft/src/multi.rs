//! Several named adapters, in PEFT's multi-adapter layout, and their weighted combinations
//! (PEFT's `add_weighted_adapter`).
//!
//! `PeftModel.save_pretrained(dir)` with several adapters writes the adapter named
//! `default` in `dir` itself and every other adapter `name` in `dir/<name>/`, each folder
//! an ordinary adapter (`adapter_config.json` + `adapter_model.safetensors`). PEFT loads
//! them back with `PeftModel.from_pretrained(model, dir)` and
//! `model.load_adapter(dir/<name>, adapter_name=name)`. [`AdapterSet`] reads and writes that
//! layout; [`weighted_adapter`] combines adapters as `add_weighted_adapter` does with
//! `combination_type` `linear`, `cat` or `svd`.
//!
//! ```
//! use rora_peft::{AdapterSet, Combination, HostMatrix, LayerFactors, PeftAdapter, PeftLoraConfig, weighted_adapter};
//!
//! let adapter = |v: f32| {
//!     let mut a = PeftAdapter { config: PeftLoraConfig::new(2, 4.0, vec!["fc".into()]), layers: Default::default() };
//!     a.layers.insert("fc".into(), LayerFactors::new(HostMatrix::new(2, 3, vec![v; 6]), HostMatrix::new(4, 2, vec![v; 8])));
//!     a
//! };
//! let mut set = AdapterSet::default();
//! set.insert("default", adapter(0.1))?;
//! set.insert("sst2", adapter(0.2))?;
//! // `cat`: the update is exactly 0.7·ΔW_default − 0.4·ΔW_sst2, at rank 2 + 2.
//! let mix = weighted_adapter(&[(&set["default"], 0.7), (&set["sst2"], -0.4)], Combination::Cat)?;
//! assert_eq!(mix.layers["fc"].rank(), 4);
//! set.insert("mix", mix)?;
//! let dir = tempfile::tempdir()?;
//! set.write(dir.path())?; // dir/ (default), dir/sst2/, dir/mix/
//! assert_eq!(AdapterSet::read(dir.path())?.names(), ["default", "mix", "sst2"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nalgebra::DMatrix;

use crate::adapter_file::{LayerFactors, PeftAdapter, ReadOptions};
use crate::config::{CONFIG_FILE, TargetModules};
use crate::error::AdapterError;
use crate::tensor_file::HostMatrix;
use crate::write::Overwrite;

/// The name PEFT gives the adapter saved at the root of a multi-adapter folder.
pub const DEFAULT_ADAPTER: &str = "default";

/// Named adapters for one model, as PEFT's `save_pretrained` lays them out: `default` in the
/// folder itself, every other adapter in a subfolder of its name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdapterSet {
    adapters: BTreeMap<String, PeftAdapter>,
}

impl std::ops::Index<&str> for AdapterSet {
    type Output = PeftAdapter;

    /// The adapter `name`.
    ///
    /// # Panics
    /// If there is none; use [`get`](AdapterSet::get) for a typed error.
    fn index(&self, name: &str) -> &PeftAdapter {
        &self.adapters[name]
    }
}

impl AdapterSet {
    /// Read every adapter of a multi-adapter folder strictly ([`ReadOptions::default`]).
    pub fn read(dir: &Path) -> Result<Self, AdapterError> {
        Self::read_with(dir, &ReadOptions::default())
    }

    /// Read every adapter of a multi-adapter folder: `default` from `dir` when it holds an
    /// `adapter_config.json`, and each subfolder of `dir` that holds one under the
    /// subfolder's name. A folder with no adapter at all is
    /// [`AdapterError::UnknownAdapter`]; any adapter that fails to read is that adapter's
    /// error (every adapter is read as [`PeftAdapter::read_with`] reads one).
    pub fn read_with(dir: &Path, options: &ReadOptions) -> Result<Self, AdapterError> {
        let mut set = AdapterSet::default();
        for name in adapter_names(dir)? {
            let adapter = PeftAdapter::read_with(&adapter_dir(dir, &name), options)?;
            set.adapters.insert(name, adapter);
        }
        if set.adapters.is_empty() {
            return Err(AdapterError::UnknownAdapter {
                dir: dir.to_path_buf(),
                name: DEFAULT_ADAPTER.into(),
                available: Vec::new(),
            });
        }
        Ok(set)
    }

    /// Read one named adapter of a multi-adapter folder: `default` is `dir` itself, any other
    /// name `dir/<name>`. A name that is not there is [`AdapterError::UnknownAdapter`],
    /// listing the names that are.
    pub fn read_one(
        dir: &Path,
        name: &str,
        options: &ReadOptions,
    ) -> Result<PeftAdapter, AdapterError> {
        check_name(name)?;
        let names = adapter_names(dir)?;
        if !names.iter().any(|n| n == name) {
            return Err(AdapterError::UnknownAdapter {
                dir: dir.to_path_buf(),
                name: name.to_string(),
                available: names,
            });
        }
        PeftAdapter::read_with(&adapter_dir(dir, name), options)
    }

    /// Add (or replace) the adapter `name`. The name must be usable as a folder name: not
    /// empty, not `.` or `..`, no `/` or `\` ([`AdapterError::InvalidAdapterName`]).
    pub fn insert(&mut self, name: &str, adapter: PeftAdapter) -> Result<(), AdapterError> {
        check_name(name)?;
        self.adapters.insert(name.to_string(), adapter);
        Ok(())
    }

    /// Remove the adapter `name`, returning it.
    pub fn remove(&mut self, name: &str) -> Option<PeftAdapter> {
        self.adapters.remove(name)
    }

    /// The adapter `name`, or [`AdapterError::UnknownAdapter`] listing the names there are.
    pub fn get(&self, name: &str) -> Result<&PeftAdapter, AdapterError> {
        self.adapters
            .get(name)
            .ok_or_else(|| AdapterError::UnknownAdapter {
                dir: PathBuf::new(),
                name: name.to_string(),
                available: self.names(),
            })
    }

    /// The adapter names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.adapters.keys().cloned().collect()
    }

    /// Every adapter with its name, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PeftAdapter)> {
        self.adapters.iter().map(|(n, a)| (n.as_str(), a))
    }

    /// The number of adapters.
    pub fn len(&self) -> usize {
        self.adapters.len()
    }

    /// `true` without adapters.
    pub fn is_empty(&self) -> bool {
        self.adapters.is_empty()
    }

    /// Write every adapter in PEFT's layout (see [`write_with`](Self::write_with)).
    pub fn write(&self, dir: &Path) -> Result<(), AdapterError> {
        self.write_with(dir, Overwrite::default())
    }

    /// Write every adapter in PEFT's layout: `default` into `dir`, every other adapter into
    /// `dir/<name>/` (folders created as needed). Every adapter is checked
    /// ([`PeftAdapter::validate`]) before anything is written, and each folder's two files
    /// are replaced atomically as [`PeftAdapter::write_with`] does; a failure while writing
    /// one adapter leaves those already written in place.
    pub fn write_with(&self, dir: &Path, overwrite: Overwrite) -> Result<(), AdapterError> {
        if self.adapters.is_empty() {
            return Err(AdapterError::EmptyAdapter {
                path: dir.to_path_buf(),
            });
        }
        for adapter in self.adapters.values() {
            adapter.validate()?;
        }
        // The root first, so that `dir` exists as a folder before subfolders are made in it.
        let mut order: Vec<&String> = self.adapters.keys().collect();
        order.sort_by_key(|n| (n.as_str() != DEFAULT_ADAPTER, n.as_str()));
        for name in order {
            let sub = adapter_dir(dir, name);
            if name != DEFAULT_ADAPTER {
                if let Ok(m) = std::fs::metadata(dir)
                    && !m.is_dir()
                {
                    return Err(AdapterError::NotADirectory {
                        path: dir.to_path_buf(),
                    });
                }
                std::fs::create_dir_all(dir).map_err(|e| AdapterError::io(dir, e))?;
            }
            self.adapters[name].write_with(&sub, overwrite)?;
        }
        Ok(())
    }
}

/// The folder of adapter `name` in a multi-adapter folder `dir`.
pub fn adapter_dir(dir: &Path, name: &str) -> PathBuf {
    if name == DEFAULT_ADAPTER {
        dir.to_path_buf()
    } else {
        dir.join(name)
    }
}

/// The adapter names present in `dir`, sorted: `default` if `dir` holds a config, and every
/// subfolder that holds one.
pub fn adapter_names(dir: &Path) -> Result<Vec<String>, AdapterError> {
    match std::fs::metadata(dir) {
        Err(e) => return Err(AdapterError::io(dir, e)),
        Ok(m) if !m.is_dir() => {
            return Err(AdapterError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        Ok(_) => {}
    }
    let mut names = BTreeSet::new();
    if dir.join(CONFIG_FILE).exists() {
        names.insert(DEFAULT_ADAPTER.to_string());
    }
    for entry in std::fs::read_dir(dir).map_err(|e| AdapterError::io(dir, e))? {
        let entry = entry.map_err(|e| AdapterError::io(dir, e))?;
        let path = entry.path();
        if path.is_dir()
            && path.join(CONFIG_FILE).exists()
            && let Some(name) = entry.file_name().to_str()
            && name != DEFAULT_ADAPTER
        {
            names.insert(name.to_string());
        }
    }
    Ok(names.into_iter().collect())
}

fn check_name(name: &str) -> Result<(), AdapterError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
        return Err(AdapterError::InvalidAdapterName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// How [`weighted_adapter`] combines adapters (PEFT's `combination_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combination {
    /// `linear`: `A = Σ sign(wᵢsᵢ)·√|wᵢsᵢ|·Aᵢ`, `B = Σ √|wᵢsᵢ|·Bᵢ`. Every adapter must have
    /// the same rank; the result's update is **not** `Σ wᵢ·ΔWᵢ` (cross terms), PEFT calls
    /// it "a very rough approximation".
    Linear,
    /// `cat`: `A = [w₁s₁·A₁; w₂s₂·A₂; …]`, `B = [B₁ B₂ …]`, rank `Σ rᵢ`: the update is
    /// exactly `Σ wᵢ·ΔWᵢ`.
    Cat,
    /// `svd`: the best rank-`k` approximation of `Σ wᵢ·ΔWᵢ` (`k` = `rank`, or the largest
    /// rank of the adapters), `B = U_k·Σ_k`, `A = V_kᵀ`, from rora-spectral's factored SVD
    /// of the concatenated factors: no dense SVD of the `[out, in]` update.
    Svd {
        /// The rank `k` of the result; `None`: the largest rank of the adapters.
        rank: Option<usize>,
    },
}

impl Combination {
    /// PEFT's name: `linear`, `cat` or `svd`.
    pub fn name(self) -> &'static str {
        match self {
            Combination::Linear => "linear",
            Combination::Cat => "cat",
            Combination::Svd { .. } => "svd",
        }
    }

    /// Parse PEFT's name (`svd` with the default rank); any other combination type of PEFT
    /// (`ties`, `dare_linear`, ...) is [`AdapterError::Combination`].
    pub fn parse(name: &str) -> Result<Self, AdapterError> {
        match name {
            "linear" => Ok(Combination::Linear),
            "cat" => Ok(Combination::Cat),
            "svd" => Ok(Combination::Svd { rank: None }),
            other => Err(AdapterError::Combination {
                message: format!(
                    "combination type {other:?} is not supported (supported: linear, cat, svd)"
                ),
            }),
        }
    }
}

/// Combine adapters with weights into one new adapter, as PEFT's
/// `add_weighted_adapter(adapters, weights, name, combination_type)` does for `linear`,
/// `cat` and `svd`.
///
/// The result has PEFT's config for it: the first adapter's config with `r = lora_alpha =`
/// the new rank (scale 1), no `rank_pattern` / `alpha_pattern`, and the union of the
/// `target_modules` (lists merged and sorted; regexes joined as `(re1)|(re2)`). Unlike
/// PEFT, `use_rslora` is cleared, so that the stored scale is 1 as the factors assume
/// (PEFT keeps the first adapter's `use_rslora`, whose scale `√r` then multiplies the
/// combination). Layers present in only some adapters combine those.
///
/// Errors ([`AdapterError::Combination`], naming the adapter index or layer): no adapter,
/// a non-finite weight, a DoRA adapter (its magnitude cannot be combined), a layer whose
/// kind or `[out, in]` differs between adapters, `linear` with different ranks, `svd` with
/// rank 0, mixed list and regex `target_modules`.
pub fn weighted_adapter(
    adapters: &[(&PeftAdapter, f64)],
    combination: Combination,
) -> Result<PeftAdapter, AdapterError> {
    let bad = |message: String| AdapterError::Combination { message };
    let Some(&(first, _)) = adapters.first() else {
        return Err(bad("no adapter to combine".into()));
    };
    for (i, (adapter, weight)) in adapters.iter().enumerate() {
        adapter.validate()?;
        if !weight.is_finite() {
            return Err(bad(format!("weight {i} is {weight}, not a finite number")));
        }
        if adapter.config.use_dora {
            return Err(bad(format!(
                "adapter {i} is a DoRA adapter (use_dora = true): its magnitude vectors cannot \
                 be combined by linear, cat or svd"
            )));
        }
    }
    // PEFT: a single adapter can only be combined linearly.
    let combination = if adapters.len() == 1 {
        Combination::Linear
    } else {
        combination
    };
    let ranks: Vec<usize> = adapters
        .iter()
        .map(|(a, _)| {
            let c = &a.config;
            c.rank_pattern
                .values()
                .copied()
                .chain([c.r])
                .max()
                .unwrap_or(c.r)
        })
        .collect();
    let new_rank = match combination {
        Combination::Linear => {
            if ranks.iter().any(|&r| r != ranks[0]) {
                return Err(bad(format!(
                    "linear combination needs adapters of the same rank, got ranks {ranks:?} \
                     (use cat or svd)"
                )));
            }
            ranks[0]
        }
        Combination::Cat => ranks.iter().sum(),
        Combination::Svd { rank: Some(0) } => {
            return Err(bad("svd rank must be at least 1".into()));
        }
        Combination::Svd { rank } => {
            rank.unwrap_or_else(|| ranks.iter().copied().max().unwrap_or(1))
        }
    };

    let mut paths: BTreeSet<&str> = BTreeSet::new();
    for (a, _) in adapters {
        paths.extend(a.layers.keys().map(String::as_str));
    }
    let mut layers = BTreeMap::new();
    for path in paths {
        // (factors, weight·scale) of every adapter that has this layer.
        let parts: Vec<(&LayerFactors, f64)> = adapters
            .iter()
            .filter_map(|(a, w)| a.layers.get(path).map(|f| (f, w * a.scale_for(path))))
            .collect();
        let (f0, _) = parts[0];
        for (f, _) in &parts {
            if f.kind != f0.kind || f.d_in() != f0.d_in() || f.d_out() != f0.d_out() {
                return Err(bad(format!(
                    "layer {path:?} is a {} layer [{}, {}] in one adapter and a {} layer [{}, {}] in another",
                    f0.kind.name(),
                    f0.d_out(),
                    f0.d_in(),
                    f.kind.name(),
                    f.d_out(),
                    f.d_in()
                )));
            }
        }
        let (a, b) = match combination {
            Combination::Linear => linear(&parts),
            Combination::Cat => cat(&parts, new_rank),
            Combination::Svd { .. } => {
                svd(&parts, new_rank).map_err(|e| bad(format!("layer {path:?}: {e}")))?
            }
        };
        let mut factors = LayerFactors::new(a, b);
        factors.kind = f0.kind;
        layers.insert(path.to_string(), factors);
    }

    let mut config = first.config.clone();
    config.r = new_rank;
    config.lora_alpha = new_rank as f64;
    config.use_rslora = false;
    config.rank_pattern.clear();
    config.alpha_pattern.clear();
    config.target_modules = union_targets(adapters)?;
    let out = PeftAdapter { config, layers };
    out.validate()?;
    Ok(out)
}

/// `A = Σ sign(c)·√|c|·Aᵢ`, `B = Σ √|c|·Bᵢ` with `c = wᵢ·sᵢ`.
fn linear(parts: &[(&LayerFactors, f64)]) -> (HostMatrix, HostMatrix) {
    let (f0, _) = parts[0];
    let mut a = DMatrix::<f64>::zeros(f0.a.rows, f0.a.cols);
    let mut b = DMatrix::<f64>::zeros(f0.b.rows, f0.b.cols);
    for (f, c) in parts {
        let root = c.abs().sqrt();
        a += f.a.to_dmatrix() * (root * c.signum());
        b += f.b.to_dmatrix() * root;
    }
    (HostMatrix::from_dmatrix(&a), HostMatrix::from_dmatrix(&b))
}

/// `A = [c₁·A₁; c₂·A₂; …]`, `B = [B₁ B₂ …]`, zero-padded to `rank`.
fn cat(parts: &[(&LayerFactors, f64)], rank: usize) -> (HostMatrix, HostMatrix) {
    let (f0, _) = parts[0];
    let (inp, out) = (f0.d_in(), f0.d_out());
    let mut a = vec![0f32; rank * inp];
    let mut b = vec![0f32; out * rank];
    let mut at = 0;
    for (f, c) in parts {
        let r = f.rank();
        for k in 0..r {
            for j in 0..inp {
                a[(at + k) * inp + j] = (f64::from(f.a.data[k * inp + j]) * c) as f32;
            }
            for i in 0..out {
                b[i * rank + at + k] = f.b.data[i * r + k];
            }
        }
        at += r;
    }
    (HostMatrix::new(rank, inp, a), HostMatrix::new(out, rank, b))
}

/// The top-`rank` triplets of `Σ cᵢ·Bᵢ·Aᵢ` from the factored SVD of `[c₁B₁ c₂B₂ …]·[A₁; A₂; …]`:
/// `B = U·Σ`, `A = Vᵀ`, zero-padded to `rank` when the update has fewer triplets.
fn svd(
    parts: &[(&LayerFactors, f64)],
    rank: usize,
) -> Result<(HostMatrix, HostMatrix), rora_spectral::SpectralError> {
    let (f0, _) = parts[0];
    let (inp, out) = (f0.d_in(), f0.d_out());
    let total: usize = parts.iter().map(|(f, _)| f.rank()).sum();
    let mut bc = DMatrix::<f64>::zeros(out, total);
    let mut ac = DMatrix::<f64>::zeros(total, inp);
    let mut at = 0;
    for (f, c) in parts {
        let r = f.rank();
        bc.columns_mut(at, r).copy_from(&(f.b.to_dmatrix() * *c));
        ac.rows_mut(at, r).copy_from(&f.a.to_dmatrix());
        at += r;
    }
    let dec = rora_spectral::factored_svd(&bc, &ac, 1.0)?;
    let k = rank.min(dec.len());
    let mut b = DMatrix::<f64>::zeros(out, rank);
    let mut a = DMatrix::<f64>::zeros(rank, inp);
    for j in 0..k {
        let sigma = dec.singular_values[j];
        b.column_mut(j).copy_from(&(dec.u.column(j) * sigma));
        a.row_mut(j).copy_from(&dec.v_t.row(j));
    }
    Ok((HostMatrix::from_dmatrix(&a), HostMatrix::from_dmatrix(&b)))
}

/// PEFT's union of `target_modules`: sorted union of lists, `(re1)|(re2)` of regexes.
fn union_targets(adapters: &[(&PeftAdapter, f64)]) -> Result<TargetModules, AdapterError> {
    let lists: Vec<&Vec<String>> = adapters
        .iter()
        .filter_map(|(a, _)| match &a.config.target_modules {
            TargetModules::List(l) => Some(l),
            TargetModules::Regex(_) => None,
        })
        .collect();
    if lists.len() == adapters.len() {
        let union: BTreeSet<&String> = lists.into_iter().flatten().collect();
        return Ok(TargetModules::List(union.into_iter().cloned().collect()));
    }
    if lists.is_empty() {
        let res: Vec<String> = adapters
            .iter()
            .filter_map(|(a, _)| match &a.config.target_modules {
                TargetModules::Regex(r) => Some(format!("({r})")),
                TargetModules::List(_) => None,
            })
            .collect();
        return Ok(TargetModules::Regex(res.join("|")));
    }
    Err(AdapterError::Combination {
        message: "the adapters' target_modules mix lists and regexes, which PEFT cannot combine"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PeftLoraConfig;

    fn adapter(seed: f32, r: usize, alpha: f64, layers: &[&str]) -> PeftAdapter {
        let mut a = PeftAdapter {
            config: PeftLoraConfig::new(r, alpha, layers.iter().map(|s| s.to_string()).collect()),
            layers: BTreeMap::new(),
        };
        for (n, l) in layers.iter().enumerate() {
            let v = |len: usize, k: f32| -> Vec<f32> {
                (0..len)
                    .map(|i| ((i as f32 + k) * (seed + n as f32)).sin())
                    .collect()
            };
            a.layers.insert(
                l.to_string(),
                LayerFactors::new(
                    HostMatrix::new(r, 5, v(r * 5, 0.3)),
                    HostMatrix::new(6, r, v(6 * r, 1.7)),
                ),
            );
        }
        a
    }

    fn update(a: &PeftAdapter, path: &str) -> DMatrix<f64> {
        let f = &a.layers[path];
        f.b.to_dmatrix() * f.a.to_dmatrix() * a.scale_for(path)
    }

    #[test]
    fn cat_of_two_adapters_is_the_weighted_sum_of_both() {
        let (x, y) = (
            adapter(1.0, 2, 4.0, &["p", "q"]),
            adapter(2.0, 3, 3.0, &["p"]),
        );
        let mix = weighted_adapter(&[(&x, 0.7), (&y, -0.4)], Combination::Cat).unwrap();
        assert_eq!((mix.config.r, mix.config.lora_alpha), (5, 5.0));
        assert_eq!(mix.scale_for("p"), 1.0);
        let want = update(&x, "p") * 0.7 - update(&y, "p") * 0.4;
        assert!((update(&mix, "p") - &want).norm() < 1e-5 * want.norm());
        // A layer only one adapter has: its weighted update, zero-padded to the new rank.
        let want = update(&x, "q") * 0.7;
        assert!((update(&mix, "q") - &want).norm() < 1e-5 * want.norm());
        assert_eq!(mix.layers["q"].rank(), 5);
    }

    #[test]
    fn svd_is_the_best_rank_k_approximation_of_the_weighted_sum() {
        let (x, y) = (adapter(1.0, 2, 4.0, &["p"]), adapter(2.0, 3, 3.0, &["p"]));
        let sum = update(&x, "p") * 0.7 - update(&y, "p") * 0.4;
        let dense = sum.clone().svd(true, true);
        for rank in [1, 3, 5, 7] {
            let mix = weighted_adapter(
                &[(&x, 0.7), (&y, -0.4)],
                Combination::Svd { rank: Some(rank) },
            )
            .unwrap();
            assert_eq!(mix.layers["p"].rank(), rank);
            let k = rank.min(5);
            let mut best = DMatrix::<f64>::zeros(6, 5);
            for j in 0..k {
                best += dense.u.as_ref().unwrap().column(j)
                    * dense.singular_values[j]
                    * dense.v_t.as_ref().unwrap().row(j);
            }
            assert!(
                (update(&mix, "p") - &best).norm() < 1e-5 * sum.norm(),
                "rank {rank}"
            );
        }
        // Default rank: the largest of the adapters'.
        let mix =
            weighted_adapter(&[(&x, 0.7), (&y, -0.4)], Combination::Svd { rank: None }).unwrap();
        assert_eq!(mix.config.r, 3);
    }

    #[test]
    fn linear_follows_peft_and_needs_equal_ranks() {
        let (x, y) = (adapter(1.0, 2, 4.0, &["p"]), adapter(2.0, 2, 1.0, &["p"]));
        let mix = weighted_adapter(&[(&x, 0.7), (&y, -0.4)], Combination::Linear).unwrap();
        let (cx, cy) = (0.7 * x.scale_for("p"), -0.4 * y.scale_for("p"));
        let fx = &x.layers["p"];
        let fy = &y.layers["p"];
        let a = fx.a.to_dmatrix() * cx.sqrt() - fy.a.to_dmatrix() * cy.abs().sqrt();
        let b = fx.b.to_dmatrix() * cx.sqrt() + fy.b.to_dmatrix() * cy.abs().sqrt();
        assert!((mix.layers["p"].a.to_dmatrix() - a).norm() < 1e-6);
        assert!((mix.layers["p"].b.to_dmatrix() - b).norm() < 1e-6);
        let z = adapter(3.0, 3, 1.0, &["p"]);
        let e = weighted_adapter(&[(&x, 1.0), (&z, 1.0)], Combination::Linear).unwrap_err();
        assert!(
            matches!(e, AdapterError::Combination { .. }) && e.to_string().contains("same rank"),
            "{e}"
        );
    }

    #[test]
    fn what_cannot_be_combined_is_named() {
        let x = adapter(1.0, 2, 4.0, &["p"]);
        let mut d = x.clone();
        d.config.use_dora = true;
        d.layers.get_mut("p").unwrap().magnitude = Some(vec![1.0; 6]);
        let e = weighted_adapter(&[(&x, 1.0), (&d, 1.0)], Combination::Cat).unwrap_err();
        assert!(e.to_string().contains("DoRA"), "{e}");
        let e = weighted_adapter(&[(&x, f64::NAN)], Combination::Cat).unwrap_err();
        assert!(e.to_string().contains("weight 0"), "{e}");
        let e = weighted_adapter(&[], Combination::Cat).unwrap_err();
        assert!(e.to_string().contains("no adapter"), "{e}");
        let e = Combination::parse("ties").unwrap_err();
        assert!(e.to_string().contains("ties"), "{e}");
    }

    #[test]
    fn sets_round_trip_in_peft_layout_and_unknown_names_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = AdapterSet::default();
        set.insert("default", adapter(1.0, 2, 4.0, &["p"])).unwrap();
        set.insert("other", adapter(2.0, 3, 3.0, &["p", "q"]))
            .unwrap();
        set.write(dir.path()).unwrap();
        assert!(dir.path().join("adapter_config.json").is_file());
        assert!(dir.path().join("other/adapter_model.safetensors").is_file());
        assert_eq!(AdapterSet::read(dir.path()).unwrap(), set);
        let one = AdapterSet::read_one(dir.path(), "other", &ReadOptions::default()).unwrap();
        assert_eq!(&one, &set["other"]);
        let e = AdapterSet::read_one(dir.path(), "nope", &ReadOptions::default()).unwrap_err();
        assert!(
            matches!(&e, AdapterError::UnknownAdapter { available, .. } if available == &["default", "other"]),
            "{e}"
        );
        assert!(
            e.to_string().contains("nope") && e.to_string().contains("other"),
            "{e}"
        );
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(
                set.insert(bad, adapter(1.0, 2, 4.0, &["p"])),
                Err(AdapterError::InvalidAdapterName { .. })
            ));
        }
        // Without a default adapter: only subfolders.
        let dir = tempfile::tempdir().unwrap();
        set.remove("default");
        set.write(dir.path()).unwrap();
        assert!(!dir.path().join("adapter_config.json").exists());
        assert_eq!(AdapterSet::read(dir.path()).unwrap().names(), ["other"]);
    }
}
