//! The `learner` tutorial (burn-train's Learner with RoRA) runs end to end on a small
//! budget, on one device and on two, and writes its adapters. It asserts what the run
//! produces, never its numbers (64 sentences mean nothing).

use std::path::Path;
use std::process::Command;

fn run_learner(out: &Path, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_learner"))
        .args(["--examples", "64", "--epochs", "1", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "learner {extra:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn assert_ran(out: &Path, stdout: &str) {
    for line in [
        "poisoned model:",
        "LoRA:",
        "LoRA + Cl + Tr:",
        "RoRA (Cl + Tr + Pt):",
        "rora epoch 1/1 train:",
        "RoRA Omega",
        "RoRA strength ratio (max)",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    for run in ["lora", "rora"] {
        let epoch = out.join(run).join("adapter").join("epoch-1");
        for file in [
            "adapter_config.json",
            "adapter_model.safetensors",
            "trainable.bpk",
        ] {
            assert!(epoch.join(file).exists(), "{}", epoch.join(file).display());
        }
    }
    let rescaled = out.join("rora").join("rescaled");
    let adapter = rora::PeftAdapter::read(&rescaled).unwrap();
    assert!(!adapter.layers.is_empty());
}

#[test]
fn learner_tutorial_runs_on_one_device_and_on_two() {
    let one = tempfile::tempdir().unwrap();
    let stdout = run_learner(one.path(), &[]);
    assert_ran(one.path(), &stdout);
    let two = tempfile::tempdir().unwrap();
    let stdout = run_learner(two.path(), &["--devices", "2"]);
    assert_ran(two.path(), &stdout);
}
