//! What a run keeps in `OUT/cache` so that an interrupted run resumes: besides the poisoned
//! model (`poisoned_model` in the parent module), the results of every finished (seed,
//! learning rate) of cleaning, one JSON file each.

use std::path::{Path, PathBuf};

use super::{BenchConfig, BenchError, RunResult, report::write_atomic};

/// Bump when a change to cleaning or testing changes what a cached block would hold.
const BLOCK_VERSION: u32 = 1;

/// 64-bit FNV-1a hash of `text` (stable across builds and platforms, unlike std's hasher).
pub(super) fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        hash = (hash ^ b as u64).wrapping_mul(0x100000001b3);
    }
    hash
}

/// The cache file of fine-tuning seed `seed` at position `i` of the learning-rate grid,
/// cleaning the poisoned model named `poison_key`: its name hashes every setting that
/// shapes cleaning and testing, so a changed setting misses the cache instead of reusing
/// stale numbers.
pub(super) fn block_path(
    out: &Path,
    poison_key: &str,
    cfg: &BenchConfig,
    seed: u64,
    i: usize,
) -> PathBuf {
    let key = serde_json::json!({
        "poisoned": poison_key, "seed": seed, "lr": cfg.lr_grid[i], "full_lr": cfg.full_lr(i),
        "steps": cfg.finetune_steps, "batch": cfg.batch_size, "wd": cfg.weight_decay,
        "lora": [cfg.rank as f64, cfg.alpha], "cl": cfg.base_dropout,
        "tr": [cfg.lambda, cfg.top_k as f64], "pt": [cfg.rescale_ratio, cfg.rescale_blocks as f64],
        "bucket": cfg.bucket, "methods": cfg.methods_to_run(), "version": BLOCK_VERSION,
    });
    out.join("cache").join(format!(
        "{poison_key}-clean-{:016x}.json",
        fnv1a(&key.to_string())
    ))
}

/// The results cached at `path`, or `None` when there are none (or they cannot be read:
/// then the block is cleaned again and the file rewritten).
pub(super) fn load_block(path: &Path) -> Option<Vec<RunResult>> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Save a finished block's results to `path` (atomically: an interrupted write leaves no
/// half file behind).
pub(super) fn save_block(path: &Path, block: &[RunResult]) -> Result<(), BenchError> {
    let json = serde_json::to_string(block).map_err(|e| BenchError::Output(e.to_string()))?;
    write_atomic(path, json.as_bytes())
        .map_err(|e| BenchError::Output(format!("{}: {e}", path.display())))
}
