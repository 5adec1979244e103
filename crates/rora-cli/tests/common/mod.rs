//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nalgebra::DMatrix;
use rora_peft::TensorFile;

pub mod hostile;

/// The PEFT reference fixtures, vendored in the workspace at `tests/fixtures/`.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/");

/// Every single-adapter fixture: LoRA, rsLoRA, DoRA, LoRA and DoRA on an embedding.
pub const ALL: [&str; 5] = [
    "peft-mlp",
    "peft-mlp-rslora",
    "peft-mlp-dora",
    "peft-embedding",
    "peft-embedding-dora",
];

/// A fixture folder.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

/// Run the built `rora` binary.
pub fn rora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rora"))
        .args(args)
        .output()
        .expect("run rora")
}

/// Run `rora` with path arguments.
pub fn rora_os<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rora"))
        .args(args)
        .output()
        .expect("run rora")
}

/// A tensor of a safetensors file as a float64 matrix.
pub fn matrix(file: &Path, key: &str) -> DMatrix<f64> {
    TensorFile::open(file)
        .unwrap()
        .matrix(key)
        .unwrap()
        .to_dmatrix()
}

/// Singular values of a dense matrix (nalgebra, descending).
pub fn singular_values(m: &DMatrix<f64>) -> Vec<f64> {
    let mut s: Vec<f64> = m
        .clone()
        .svd(false, false)
        .singular_values
        .iter()
        .copied()
        .collect();
    s.sort_by(|a, b| b.partial_cmp(a).unwrap());
    s
}

/// Max absolute error over max absolute value.
pub fn rel_err(got: &DMatrix<f64>, want: &DMatrix<f64>) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let err = (got - want).abs().max();
    err / want.abs().max().max(f64::MIN_POSITIVE)
}

/// Assert a failed run: non-zero exit, exactly one stderr line starting `error: `, nothing
/// that looks like a panic; returns the line.
pub fn assert_one_line_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(lines[0].starts_with("error: "), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    lines[0].to_string()
}
