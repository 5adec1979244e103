//! Runs the built binary as a user would: help, version, then inspect → rescale → inspect →
//! merge on a fixture.

mod common;

use std::process::Command;

use common::*;

fn run(args: &[&str], cwd: &std::path::Path) -> (String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_rora"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run rora");
    let stdout = String::from_utf8(o.stdout).unwrap();
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(o.status.success(), "rora {args:?} failed: {stderr}");
    (stdout, stderr)
}

#[test]
fn a_user_session() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let fx = fixture("peft-mlp-rslora");
    let base = fx.join("model.safetensors");
    let adapter = fx.join("adapter");
    let (base, adapter) = (base.to_str().unwrap(), adapter.to_str().unwrap());

    let (help, _) = run(&["--help"], cwd);
    for cmd in ["inspect", "merge", "rescale"] {
        assert!(help.contains(cmd), "{help}");
    }
    let (help, _) = run(&["rescale", "--help"], cwd);
    for flag in [
        "--adapter",
        "--base",
        "--out",
        "--layers",
        "--target-ratio",
        "--factor",
    ] {
        assert!(help.contains(flag), "{help}");
    }
    let (version, _) = run(&["--version"], cwd);
    assert!(version.starts_with("rora "), "{version}");

    let (table, _) = run(&["inspect", "--base", base, "--adapter", adapter], cwd);
    assert!(table.contains("fc2"), "{table}");

    let (report, _) = run(
        &[
            "rescale",
            "--base",
            base,
            "--adapter",
            adapter,
            "--out",
            "rescaled",
        ],
        cwd,
    );
    assert!(report.contains("fc2"), "{report}");
    assert!(cwd.join("rescaled/adapter_config.json").is_file());
    assert!(cwd.join("rescaled/adapter_model.safetensors").is_file());

    let (json, _) = run(
        &["inspect", "--json", "--base", base, "--adapter", "rescaled"],
        cwd,
    );
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ratio = doc["layers"][0]["strength_ratio"].as_f64().unwrap();
    assert!((ratio - 1.0).abs() < 1e-4, "{ratio}");

    let (summary, _) = run(
        &[
            "merge",
            "--base",
            base,
            "--adapter",
            "rescaled",
            "--out",
            "merged.safetensors",
        ],
        cwd,
    );
    assert!(summary.contains("merged"), "{summary}");
    assert!(cwd.join("merged.safetensors").is_file());
}
