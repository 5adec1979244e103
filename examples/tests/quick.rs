//! The benchmark's `--quick` mode runs end to end and writes outputs that parse. It asserts
//! the shape of the results, never their values (tiny models mean nothing).

use rora_examples::bench::{self, AdapterChoice, BenchConfig, Method};

#[test]
fn quick_benchmark_with_dora_adds_the_dora_rows() {
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
