//! Writing the benchmark's outputs: `results.json`, `results.md` (also `--doc`), charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{BenchConfig, BenchError, Method, Results};

/// Mean and sample standard deviation.
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

fn pct(mean: f64, sd: f64, n: usize) -> String {
    if n > 1 {
        format!("{:.1} ± {:.1}", 100.0 * mean, 100.0 * sd)
    } else {
        format!("{:.1}", 100.0 * mean)
    }
}

/// The results as Markdown tables: per (model, attack), the poisoned model and each
/// method's CA / ASR (mean ± sd over seeds), chosen learning rates and strength ratios.
pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let mut groups: BTreeMap<(String, String), ()> = BTreeMap::new();
    for p in &results.poisoned {
        groups.insert((p.model.clone(), p.attack.clone()), ());
    }
    for (model, attack) in groups.keys() {
        let _ = writeln!(out, "### {model} / {attack}\n");
        // The natural floor (clean non-target sentences classified as the target), in
        // results that measured it.
        let floor = results.poisoned.iter().any(|p| p.floor.is_some());
        let floor_col = |f: Option<String>| match (floor, f) {
            (false, _) => String::new(),
            (true, f) => format!(" {} |", f.unwrap_or_else(|| "–".into())),
        };
        let _ = writeln!(
            out,
            "| method | CA % | ASR % |{} dev CA % | dev ASR % | lr (chosen on dev CA) | σ1(ΔW)/σ1(W0) |",
            if floor { " floor % |" } else { "" }
        );
        let _ = writeln!(
            out,
            "|---|---|---|{}---|---|---|---|",
            if floor { "---|" } else { "" }
        );
        if let Some(p) = results
            .poisoned
            .iter()
            .find(|p| &p.model == model && &p.attack == attack)
        {
            let _ = writeln!(
                out,
                "| poisoned | {:.1} | {:.1} |{} {:.1} | {:.1} | – | – |",
                100.0 * p.ca,
                100.0 * p.asr,
                floor_col(p.floor.map(|f| format!("{:.1}", 100.0 * f))),
                100.0 * p.dev_ca,
                100.0 * p.dev_asr
            );
        }
        for method in Method::ALL {
            let runs: Vec<_> = results
                .runs
                .iter()
                .filter(|r| &r.model == model && &r.attack == attack && r.method == method)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let col = |f: &dyn Fn(&super::RunResult) -> f64| {
                runs.iter().map(|r| f(r)).collect::<Vec<_>>()
            };
            let n = runs.len();
            let (ca, ca_sd) = mean_sd(&col(&|r| r.ca));
            let (asr, asr_sd) = mean_sd(&col(&|r| r.asr));
            let (dca, dca_sd) = mean_sd(&col(&|r| r.dev_ca));
            let (dasr, dasr_sd) = mean_sd(&col(&|r| r.dev_asr));
            let (sr, _) = mean_sd(&col(&|r| r.strength_ratio));
            let lrs: Vec<String> = runs.iter().map(|r| format!("{:.0e}", r.lr)).collect();
            let floors: Vec<f64> = runs.iter().filter_map(|r| r.floor).collect();
            let floor_cell = (floors.len() == n).then(|| {
                let (m, sd) = mean_sd(&floors);
                pct(m, sd, n)
            });
            let _ = writeln!(
                out,
                "| {method} | {} | {} |{} {} | {} | {} | {:.3} |",
                pct(ca, ca_sd, n),
                pct(asr, asr_sd, n),
                floor_col(floor_cell),
                pct(dca, dca_sd, n),
                pct(dasr, dasr_sd, n),
                lrs.join(", "),
                sr
            );
        }
        let _ = writeln!(out);
        // Spectral evidence: per adapted layer of the last seed, LoRA vs RoRA.
        let last = |method: Method| {
            results
                .runs
                .iter()
                .rev()
                .find(|r| &r.model == model && &r.attack == attack && r.method == method)
        };
        if let (Some(l), Some(r)) = (last(Method::Lora), last(Method::Rora)) {
            let _ = writeln!(
                out,
                "Spectral report (seed {}): per adapted layer, strength ratio σ1(ΔW)/σ1(W0), \
                 alignment with W0's top-{} subspaces (‖UkᵀB‖F, ‖AVk‖F) and the paper's critical scale s* next to the scale in use.\n",
                l.seed,
                l.layers.first().map_or(0, |x| x.top_k)
            );
            let _ = writeln!(
                out,
                "| layer | LoRA ratio | LoRA ‖UkᵀB‖ | LoRA ‖AVk‖ | LoRA s / s* | RoRA ratio | RoRA ‖UkᵀB‖ | RoRA ‖AVk‖ | RoRA s / s* |"
            );
            let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
            for (a, b) in l.layers.iter().zip(&r.layers) {
                let star = |x: &rora::core::spectral::LayerReport| match x.critical_scale.value() {
                    Some(v) => format!("{:.3} / {:.3}", x.scale, v),
                    None => format!("{:.3} / –", x.scale),
                };
                let _ = writeln!(
                    out,
                    "| {} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {:.3} | {:.3} | {} |",
                    a.path,
                    a.strength_ratio,
                    a.left_alignment,
                    a.right_alignment,
                    star(a),
                    b.strength_ratio,
                    b.left_alignment,
                    b.right_alignment,
                    star(b)
                );
            }
            let _ = writeln!(out);
        }
    }
    out
}

/// Write `results.json`, `results.md`, the charts, and `--doc` if set.
pub fn write_all(results: &Results, cfg: &BenchConfig) -> Result<(), BenchError> {
    let io = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        BenchError::Output(format!("{}: {e}", what.display()))
    };
    let json =
        serde_json::to_string_pretty(results).map_err(|e| BenchError::Output(e.to_string()))?;
    let path = cfg.out.join("results.json");
    write_atomic(&path, json.as_bytes()).map_err(|e| io(&path, &e))?;
    let tables = markdown(results);
    let path = cfg.out.join("results.md");
    write_atomic(
        &path,
        format!("# Backdoor benchmark results\n\n{tables}").as_bytes(),
    )
    .map_err(|e| io(&path, &e))?;
    super::chart::write_charts(results, &cfg.out)
        .map_err(|e| BenchError::Output(format!("chart: {e}")))?;
    if let Some(doc) = &cfg.doc {
        let text = super::report::document(results, &tables);
        write_atomic(doc, text.as_bytes()).map_err(|e| io(doc, &e))?;
    }
    Ok(())
}

/// Write `bytes` to a temporary file beside `path`, then rename it over `path`: a failed
/// write leaves the previous file as it was.
pub(super) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// The generated `docs/RESULTS.md`: settings, how they were chosen, tables.
pub fn document(results: &Results, tables: &str) -> String {
    let s = &results.settings;
    let mut out = String::new();
    let _ = writeln!(out, "# Results of the backdoor benchmark\n");
    let models: Vec<&str> = s.models.iter().map(|m| m.name()).collect();
    let attacks: Vec<&str> = s.attacks.iter().map(|a| a.name()).collect();
    let _ = writeln!(
        out,
        "_Generated by the `backdoor` binary (`--model {} --attack {} --seeds {}`, plus `--doc`) in {:.0} s on a \
         2-core machine. Do not edit by hand; the analysis is in `docs/BENCHMARK.md`._\n",
        models.join(","),
        attacks.join(","),
        s.seeds,
        results.seconds
    );
    let _ = writeln!(out, "## Settings\n");
    let _ = writeln!(out, "- data: {}", s.data.as_ref().map_or("built-in synthetic corpus: pretraining and poisoning on a general corpus (half `movies`, half `products` sentences); clean fine-tuning, dev and test on fresh `products` sentences".to_string(), |d| format!("`{}` (first half of train: pretraining and poisoning; second half: clean fine-tuning)", d.display())));
    let small: Vec<&str> = models.iter().copied().filter(|m| *m != "minilm").collect();
    if !small.is_empty() {
        let _ = writeln!(
            out,
            "- models: {} (d_model {}, {} blocks, {} heads, d_ff {}), max length {}",
            small.join(", "),
            s.d_model,
            s.n_layers,
            s.n_heads,
            s.d_ff,
            s.max_len
        );
    }
    if let Some(ckpt) = s.checkpoint.as_ref().filter(|_| models.contains(&"minilm")) {
        let _ = writeln!(
            out,
            "- model: the pretrained MiniLM-L6 checkpoint `{}` (6 blocks, d_model 384, 12 heads), a fresh 2-way head; max length {}",
            ckpt.display(),
            s.max_len
        );
    }
    let _ = writeln!(
        out,
        "- attacks: {}; poison rate {}, target label {}",
        attacks.join(", "),
        s.poison_rate,
        s.target_label
    );
    let _ = writeln!(
        out,
        "- pretraining: {} steps at lr {}; poisoning: {} steps at lr {}, embeddings frozen: {}",
        s.pretrain_steps, s.pretrain_lr, s.poison_steps, s.poison_lr, s.poison_freeze_embeddings
    );
    let full_grid = if s.lr_grid_full.is_empty() {
        String::new()
    } else {
        format!(" (full fine-tuning: from {:?})", s.lr_grid_full)
    };
    let _ = writeln!(
        out,
        "- clean fine-tuning: {} steps, batch {}, AdamW (weight decay {}), learning rate from {:?}{full_grid} chosen per method and seed on **clean dev accuracy** (never the test split, never ASR){}",
        s.finetune_steps,
        s.batch_size,
        s.weight_decay,
        s.lr_grid,
        if s.bucket {
            "; sort-by-length bucketing"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "- LoRA: rank {}, alpha {}, targets query and value of every block; classification head trained too",
        s.rank, s.alpha
    );
    let _ = writeln!(
        out,
        "- RoRA: Cl base dropout {}, Tr λ = {} with k = {}, Pt ratio {} on the last {} blocks' query and value",
        s.base_dropout, s.lambda, s.top_k, s.rescale_ratio, s.rescale_blocks
    );
    let _ = writeln!(
        out,
        "- seeds: {} fine-tuning seeds per (model, attack); the poisoned model is trained once and cached\n",
        s.seeds
    );
    let _ = writeln!(
        out,
        "CA = clean test accuracy; ASR = share of non-target test sentences classified as the target once the trigger is inserted{}.\n",
        if results.poisoned.iter().any(|p| p.floor.is_some()) {
            "; floor = share of the same sentences, without the trigger, classified as the target (the ASR of a model without a backdoor)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "## Tables\n\n{tables}");
    out
}
