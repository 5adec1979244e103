//! The benchmark's `--quick` mode runs end to end and writes outputs that parse. It asserts
//! the shape of the results, never their values (tiny models mean nothing).

use std::sync::Mutex;

use rora_examples::bench::{self, AdapterChoice, BenchConfig, Method};

/// burn's device seed is global: benchmark runs in parallel test threads would draw from
/// one random stream in an order that changes from run to run. Every test that runs the
/// benchmark holds this lock.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn quick_benchmark_with_dora_adds_the_dora_rows() {
    let _one = lock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = BenchConfig::quick();
    cfg.out = dir.path().to_path_buf();
    cfg.models.truncate(1);
    cfg.adapter = AdapterChoice::Dora;
    let results = bench::run(&cfg).unwrap();
    assert_eq!(results.runs.len(), Method::ALL.len());
    let md = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
    assert!(
        md.contains("| dora |") && md.contains("| dora-rora |"),
        "{md}"
    );
}

#[test]
fn quick_benchmark_writes_parseable_results() {
    let _one = lock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = BenchConfig::quick();
    cfg.out = dir.path().to_path_buf();
    cfg.doc = Some(dir.path().join("RESULTS.md"));
    let results = bench::run(&cfg).unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap())
            .unwrap();
    let poisoned = json["poisoned"].as_array().unwrap();
    assert_eq!(poisoned.len(), cfg.models.len() * cfg.attacks.len());
    for p in poisoned {
        for key in ["model", "attack", "seed", "ca", "asr"] {
            assert!(!p[key].is_null(), "poisoned entry lacks {key}");
        }
    }
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(
        runs.len(),
        cfg.models.len() * cfg.attacks.len() * cfg.seeds * Method::run_with(cfg.adapter).len()
    );
    for r in runs {
        let method = r["method"].as_str().unwrap();
        assert!(Method::ALL.iter().any(|m| m.name() == method), "{method}");
        for key in ["ca", "asr"] {
            let v = r[key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{key} = {v} is not a fraction");
        }
        for key in ["model", "attack", "seed"] {
            assert!(!r[key].is_null());
        }
    }
    assert_eq!(runs.len(), results.runs.len());
    for file in [
        "results.md",
        "RESULTS.md",
        "spectra.svg",
        "spectra.png",
        "ca_asr.svg",
        "ca_asr.png",
    ] {
        let meta =
            std::fs::metadata(dir.path().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(meta.len() > 0, "{file} is empty");
    }
    let md = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
    assert!(md.contains("| lora |") && md.contains("| rora |"));

    // --replot redraws the same tables from results.json, without training.
    let again = dir.path().join("replot");
    bench::replot(&dir.path().join("results.json"), &again, None).unwrap();
    assert_eq!(
        std::fs::read_to_string(again.join("results.md")).unwrap(),
        md
    );
    for file in ["spectra.svg", "spectra.png", "ca_asr.svg", "ca_asr.png"] {
        assert!(again.join(file).exists(), "replot did not write {file}");
    }
    assert!(bench::replot(&dir.path().join("missing.json"), &again, None).is_err());
}

#[test]
fn backdoor_binary_prints_help_and_rejects_bad_flags() {
    let bin = env!("CARGO_BIN_EXE_backdoor");
    let help = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--model",
        "--attack",
        "--data",
        "--seeds",
        "--out",
        "--quick",
        "--checkpoint",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    let bad = std::process::Command::new(bin)
        .args(["--model", "gpt"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

/// The runs of `results` without their timings (which differ from run to run).
fn runs_without_seconds(results: &bench::Results) -> serde_json::Value {
    let mut runs = serde_json::to_value(&results.runs).unwrap();
    for r in runs.as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("train_seconds");
    }
    runs
}

/// `a` and `b` are the same JSON, numbers equal up to the last bit or two: cached blocks
/// are JSON, and serde_json (without its `float_roundtrip` feature) may read a float back
/// one unit in the last place off.
fn assert_same(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs()),
                "{at}: {x} vs {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_same(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}: keys"
            );
            for (k, v) in x {
                assert_same(v, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

#[test]
fn an_interrupted_run_resumes_from_its_cache_with_the_same_numbers() {
    let _one = lock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = BenchConfig::quick();
    cfg.out = dir.path().to_path_buf();
    cfg.models.truncate(1);
    cfg.seeds = 2;
    cfg.lr_grid = vec![1e-3, 3e-3];
    let blocks = |dir: &std::path::Path| {
        std::fs::read_dir(dir.join("cache"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("-clean-"))
            .collect::<Vec<_>>()
    };
    let whole = bench::run(&cfg).unwrap();
    // One file per (seed, learning rate).
    let mut files = blocks(dir.path());
    assert_eq!(files.len(), 4);
    // "Interrupt" the run: lose two of the finished blocks; the run cleans them again and
    // takes the others from the cache. A block's numbers do not depend on the blocks
    // before it, so the results are the same as the uninterrupted run's.
    files.sort();
    for f in &files[..2] {
        std::fs::remove_file(f).unwrap();
    }
    let resumed = bench::run(&cfg).unwrap();
    assert_same(
        &runs_without_seconds(&resumed),
        &runs_without_seconds(&whole),
        "runs",
    );
    assert_eq!(blocks(dir.path()).len(), 4);
    // A cached block is used only for the settings it was made with.
    cfg.finetune_steps += 1;
    bench::run(&cfg).unwrap();
    assert_eq!(blocks(dir.path()).len(), 8);
}

#[test]
fn methods_selects_the_rows_and_export_data_writes_the_splits() {
    let _one = lock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = BenchConfig::quick();
    cfg.out = dir.path().join("out");
    cfg.models.truncate(1);
    cfg.methods = vec![Method::RoraPt, Method::Full];
    cfg.lr_grid = vec![1e-3, 2e-3];
    cfg.lr_grid_full = vec![1e-4, 2e-4];
    cfg.export_data = Some(dir.path().join("data"));
    let results = bench::run(&cfg).unwrap();
    let methods: Vec<Method> = results.runs.iter().map(|r| r.method).collect();
    assert_eq!(methods, [Method::Full, Method::RoraPt]);
    assert!(
        [1e-4, 2e-4].contains(&results.runs[0].lr),
        "full takes --lr-grid-full"
    );
    assert!([1e-3, 2e-3].contains(&results.runs[1].lr));
    for r in &results.runs {
        let floor = r.floor.expect("floor measured");
        assert!((0.0..=1.0).contains(&floor));
    }
    let data = dir.path().join("data").join("badnet");
    for name in [
        "poison",
        "clean",
        "dev",
        "test",
        "dev_triggered",
        "test_triggered",
    ] {
        let rows = rora_examples::data::load_tsv(data.join(format!("{name}.tsv"))).unwrap();
        assert!(!rows.is_empty(), "{name}.tsv");
    }
    // Triggered sets hold the non-target sentences only, with their true labels.
    let triggered = rora_examples::data::load_tsv(data.join("test_triggered.tsv")).unwrap();
    assert!(triggered.iter().all(|e| e.label != cfg.target_label));

    cfg.lr_grid_full = vec![1e-4];
    let err = bench::run(&cfg).unwrap_err().to_string();
    assert!(err.contains("--lr-grid-full"), "{err}");
}
