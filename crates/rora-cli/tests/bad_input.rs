//! Bad input: each case is one `error: ...` line on stderr, exit status 1, no panic, and no
//! output file or folder created.

mod common;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use common::*;
use rora_core::peft::{RawTensor, write_safetensors_atomic};

/// A scratch copy of a fixture (base + adapter) that a test may damage.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = fixture(name);
        std::fs::create_dir(dir.path().join("adapter")).unwrap();
        for f in [
            "model.safetensors",
            "adapter/adapter_config.json",
            "adapter/adapter_model.safetensors",
        ] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        std::fs::create_dir(dir.path().join("out")).unwrap();
        Scratch { dir }
    }
    fn base(&self) -> PathBuf {
        self.dir.path().join("model.safetensors")
    }
    fn adapter(&self) -> PathBuf {
        self.dir.path().join("adapter")
    }
    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
}

/// Run all three commands on the scratch inputs; each must fail cleanly with a message
/// containing every string of `expect`, and leave `out/` empty.
fn all_commands_fail(s: &Scratch, expect: &[&str]) {
    let merged = s.out().join("merged.safetensors");
    let rescaled = s.out().join("rescaled");
    let runs: Vec<Vec<OsString>> = vec![
        vec![
            "inspect".into(),
            "--base".into(),
            s.base().into(),
            "--adapter".into(),
            s.adapter().into(),
        ],
        vec![
            "inspect".into(),
            "--json".into(),
            "--base".into(),
            s.base().into(),
            "--adapter".into(),
            s.adapter().into(),
        ],
        vec![
            "merge".into(),
            "--base".into(),
            s.base().into(),
            "--adapter".into(),
            s.adapter().into(),
            "--out".into(),
            merged.into(),
        ],
        vec![
            "rescale".into(),
            "--base".into(),
            s.base().into(),
            "--adapter".into(),
            s.adapter().into(),
            "--out".into(),
            rescaled.into(),
        ],
    ];
    for args in runs {
        let o = rora_os(&args);
        let line = assert_one_line_error(&o);
        assert!(
            o.stdout.is_empty(),
            "{args:?}: stdout {:?}",
            String::from_utf8_lossy(&o.stdout)
        );
        for e in expect {
            assert!(line.contains(e), "{args:?}: {line:?} should mention {e:?}");
        }
        let left: Vec<_> = std::fs::read_dir(s.out()).unwrap().collect();
        assert!(left.is_empty(), "{args:?}: output left behind: {left:?}");
    }
}

#[test]
fn missing_files() {
    let s = Scratch::new("peft-mlp");
    std::fs::remove_file(s.base()).unwrap();
    all_commands_fail(&s, &["model.safetensors"]);

    let s = Scratch::new("peft-mlp");
    std::fs::remove_file(s.adapter().join("adapter_model.safetensors")).unwrap();
    all_commands_fail(&s, &["adapter_model.safetensors"]);

    let s = Scratch::new("peft-mlp");
    std::fs::remove_file(s.adapter().join("adapter_config.json")).unwrap();
    all_commands_fail(&s, &["adapter_config.json"]);
}

#[test]
fn truncated_safetensors() {
    for victim in ["model.safetensors", "adapter/adapter_model.safetensors"] {
        let s = Scratch::new("peft-mlp");
        let p = s.dir.path().join(victim);
        let bytes = std::fs::read(&p).unwrap();
        for cut in [0, 5, 20, bytes.len() / 2, bytes.len() - 3] {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            all_commands_fail(
                &s,
                &[Path::new(victim).file_name().unwrap().to_str().unwrap()],
            );
        }
    }
}

#[test]
fn unknown_peft_type() {
    let s = Scratch::new("peft-mlp");
    let p = s.adapter().join("adapter_config.json");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("\"LORA\"", "\"IA3\"")).unwrap();
    all_commands_fail(&s, &["IA3"]);
}

#[test]
fn mismatched_shapes_name_both_sides() {
    let s = Scratch::new("peft-mlp");
    let mut tensors = BTreeMap::new();
    tensors.insert(
        "fc1.weight".to_string(),
        RawTensor::f32(vec![31, 16], &[0.5; 31 * 16]),
    );
    tensors.insert("fc1.bias".to_string(), RawTensor::f32(vec![32], &[0.0; 32]));
    tensors.insert(
        "fc2.weight".to_string(),
        RawTensor::f32(vec![8, 32], &[0.1; 8 * 32]),
    );
    tensors.insert("fc2.bias".to_string(), RawTensor::f32(vec![8], &[0.0; 8]));
    write_safetensors_atomic(&s.base(), &tensors, None).unwrap();
    all_commands_fail(&s, &["\"fc1\"", "\"fc1.weight\"", "[31, 16]"]);
}

#[test]
fn layer_missing_from_base_names_both_sides() {
    let s = Scratch::new("peft-mlp");
    let mut tensors = BTreeMap::new();
    tensors.insert(
        "fc1.weight".to_string(),
        RawTensor::f32(vec![32, 16], &[0.5; 32 * 16]),
    );
    write_safetensors_atomic(&s.base(), &tensors, None).unwrap();
    all_commands_fail(&s, &["\"fc2\"", "\"fc2.weight\""]);
}

#[test]
fn output_folder_missing_and_empty_selection() {
    let dir = fixture("peft-mlp");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("no/such/dir/merged.safetensors");
    let o = rora_os([
        OsStr::new("merge"),
        OsStr::new("--base"),
        dir.join("model.safetensors").as_os_str(),
        OsStr::new("--adapter"),
        dir.join("adapter").as_os_str(),
        OsStr::new("--out"),
        out.as_os_str(),
    ]);
    assert_one_line_error(&o);
    assert!(!out.exists());

    let out = tmp.path().join("rescaled");
    let o = rora_os([
        OsStr::new("rescale"),
        OsStr::new("--base"),
        dir.join("model.safetensors").as_os_str(),
        OsStr::new("--adapter"),
        dir.join("adapter").as_os_str(),
        OsStr::new("--out"),
        out.as_os_str(),
        OsStr::new("--layers"),
        OsStr::new("attention"),
    ]);
    let line = assert_one_line_error(&o);
    assert!(line.contains("attention") && line.contains("fc1"), "{line}");
    assert!(!out.exists());
}

#[test]
fn usage_errors_exit_with_2() {
    for args in [
        &["merge", "--base", "x"][..],
        &[
            "rescale",
            "--adapter",
            "a",
            "--base",
            "b",
            "--out",
            "c",
            "--factor",
            "nan",
        ][..],
        &[
            "rescale",
            "--adapter",
            "a",
            "--base",
            "b",
            "--out",
            "c",
            "--layers",
            "((",
        ][..],
        &["inspect", "--adapter", "a", "--base", "b", "--top-k", "0"][..],
        &["frobnicate"][..],
    ] {
        let o = rora(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    }
}
