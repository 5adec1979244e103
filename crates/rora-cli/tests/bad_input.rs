//! The bad-input suite: every hostile case of `common::hostile` is run against the built
//! `rora` binary. Each run must end with the documented exit status (1 for errors, 2 for
//! usage errors), no panic, one `error: ...` line naming the problem (file, key, shape), no
//! output on stdout, and every file of the scratch folder — inputs and previous outputs —
//! byte for byte and mode for mode as before (no file written, removed, or left behind).
//!
//! `RORA_BAD_INPUT_TRACE=1 cargo test -p rora-cli --test bad_input -- --nocapture` prints
//! every case's exit status and message.

mod common;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::hostile::{Scratch, cases, snapshot, with};
use common::*;

#[test]
fn every_hostile_input_fails_cleanly_and_changes_nothing() {
    let mut failures = Vec::new();
    let mut runs = 0;
    let all = cases();
    assert!(all.len() >= 60, "{} cases", all.len());
    for case in &all {
        let s = Scratch::new();
        let expect = (case.setup)(&s);
        let before = snapshot(s.dir.path());
        let devices: Vec<bool> = ["/dev/null", "/dev/full"]
            .iter()
            .map(|d| is_char_device(Path::new(d)))
            .collect();
        for args in &expect.runs {
            runs += 1;
            let o = rora_os(args);
            let stderr = String::from_utf8_lossy(&o.stderr).to_string();
            let mut problems = Vec::new();
            if std::env::var_os("RORA_BAD_INPUT_TRACE").is_some() {
                eprintln!("{}: [{:?}] {}", case.name, o.status.code(), stderr.trim());
            }
            if o.status.code() != Some(expect.code) {
                problems.push(format!(
                    "exit status {:?}, expected {}",
                    o.status.code(),
                    expect.code
                ));
            }
            if stderr.contains("panicked") || stderr.contains("internal error") {
                problems.push("panicked".into());
            }
            if !o.stdout.is_empty() {
                problems.push(format!("stdout: {:?}", String::from_utf8_lossy(&o.stdout)));
            }
            if expect.code == 1 {
                let lines: Vec<&str> = stderr.lines().collect();
                if lines.len() != 1 || !lines[0].starts_with("error: ") {
                    problems.push("not one `error: ` line".into());
                }
            }
            for name in &expect.names {
                if !stderr.contains(name.as_str()) {
                    problems.push(format!("message does not name {name:?}"));
                }
            }
            if snapshot(s.dir.path()) != before {
                problems.push("files under the scratch folder changed".into());
            }
            let now: Vec<bool> = ["/dev/null", "/dev/full"]
                .iter()
                .map(|d| is_char_device(Path::new(d)))
                .collect();
            if now != devices {
                problems.push("a device was replaced".into());
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "{}: rora {}\n    {}\n    stderr: {}",
                    case.name,
                    args.iter()
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(" "),
                    problems.join("; "),
                    stderr.trim()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} runs misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn is_char_device(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device())
}

fn run_ok(args: &[OsString]) -> (String, String) {
    let o = rora_os(args);
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{args:?}: {stderr}");
    (String::from_utf8_lossy(&o.stdout).to_string(), stderr)
}

#[test]
fn lenient_accepts_unmatched_target_modules_with_a_warning() {
    let s = Scratch::new();
    s.set_config(
        "target_modules",
        Some(serde_json::json!(["fc1", "fc2", "fc3"])),
    );
    let out = s.p("other/merged.safetensors");
    let merge = s.merge_with(&s.base(), &s.adapter(), &out);
    let o = rora_os(&merge);
    assert_eq!(o.status.code(), Some(1));
    assert!(!out.exists());
    let (_, stderr) = run_ok(&with(vec![merge], &["--lenient"])[0]);
    assert!(
        stderr.starts_with("warning: ") && stderr.contains("fc3"),
        "{stderr}"
    );
    assert!(out.is_file());
    for args in with(s.inspect(), &["--lenient"]) {
        run_ok(&args);
    }
}

#[test]
fn force_writes_through_a_symlink_and_keeps_it() {
    let s = Scratch::new();
    let target = s.p("other/real.safetensors");
    std::fs::write(&target, b"old").unwrap();
    let link = s.p("out/link.safetensors");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let args = with(
        vec![s.merge_with(&s.base(), &s.adapter(), &link)],
        &["--force"],
    );
    run_ok(&args[0]);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let merged = matrix(&target, "fc1.weight");
    let want = matrix(
        &fixture("peft-mlp").join("io.safetensors"),
        "merged.fc1.weight",
    );
    assert!(rel_err(&merged, &want) < 1e-5);
    // Nothing left beside the target.
    let names: Vec<_> = std::fs::read_dir(s.p("other"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["real.safetensors"], "{names:?}");
}

#[test]
fn outputs_get_the_mode_a_new_file_gets() {
    let s = Scratch::new();
    let plain = s.p("other/plain");
    std::fs::File::create(&plain).unwrap();
    let want = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777;
    let merged = s.p("other/merged.safetensors");
    run_ok(&s.merge_with(&s.base(), &s.adapter(), &merged));
    let rescaled = s.p("other/rescaled");
    run_ok(&s.rescale_with(&s.base(), &s.adapter(), &rescaled));
    for f in [
        merged,
        rescaled.join("adapter_config.json"),
        rescaled.join("adapter_model.safetensors"),
    ] {
        let got = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            got,
            want,
            "{}: {got:o}, a new file gets {want:o}",
            f.display()
        );
    }
}

#[test]
fn a_successful_run_replaces_the_previous_output_and_leaves_no_temporary_file() {
    let s = Scratch::new();
    run_ok(&s.merge());
    run_ok(&s.rescale());
    assert_ne!(
        std::fs::read(s.p("out/merged.safetensors")).unwrap(),
        common::hostile::PREVIOUS_MERGE
    );
    for dir in ["out", "out/rescaled"] {
        for e in std::fs::read_dir(s.p(dir)).unwrap() {
            let name = e.unwrap().file_name();
            assert!(!name.to_string_lossy().starts_with(".rora-"), "{name:?}");
        }
    }
}
