//! `merge`, `inspect --json` and `rescale` on the PEFT reference fixtures, checked against
//! PEFT's own merged weights and against dense computations done here with nalgebra.

mod common;

use common::*;
use rora_peft::PeftAdapter;
use std::ffi::OsStr;

#[test]
fn merge_reproduces_peft_merged_weights() {
    for name in ALL {
        let dir = fixture(name);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("merged.safetensors");
        let o = rora_os([
            OsStr::new("merge"),
            OsStr::new("--base"),
            dir.join("model.safetensors").as_os_str(),
            OsStr::new("--adapter"),
            dir.join("adapter").as_os_str(),
            OsStr::new("--out"),
            out.as_os_str(),
        ]);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );

        let io = dir.join("io.safetensors");
        let adapter = PeftAdapter::read(&dir.join("adapter")).unwrap();
        for path in adapter.layers.keys() {
            let w = format!("{path}.weight");
            let got = matrix(&out, &w);
            let want = matrix(&io, &format!("merged.{w}"));
            let err = rel_err(&got, &want);
            assert!(err < 1e-5, "{name} {w}: relative error {err}");
        }
        // Biases (unadapted) are byte-identical to the base file's, and so is every
        // unadapted weight (fc1 in the rsLoRA fixture).
        let base_bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let out_bytes = std::fs::read(&out).unwrap();
        let base = safetensors::SafeTensors::deserialize(&base_bytes).unwrap();
        let merged = safetensors::SafeTensors::deserialize(&out_bytes).unwrap();
        let mut names: Vec<&str> = base.names();
        names.sort();
        let mut out_names: Vec<&str> = merged.names();
        out_names.sort();
        assert_eq!(names, out_names, "{name}: same tensor names");
        for key in names {
            let (b, m) = (base.tensor(key).unwrap(), merged.tensor(key).unwrap());
            assert_eq!(b.shape(), m.shape(), "{name} {key}");
            assert_eq!(b.dtype(), m.dtype(), "{name} {key}");
            let adapted = adapter.layers.keys().any(|p| format!("{p}.weight") == key);
            if !adapted {
                assert_eq!(
                    b.data(),
                    m.data(),
                    "{name} {key} must be copied byte for byte"
                );
            }
        }
        // No temporary file left beside the output.
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{name}: {left:?}");
    }
}

#[test]
fn inspect_json_singular_values_match_dense_svd() {
    for name in ALL {
        let dir = fixture(name);
        let base = dir.join("model.safetensors");
        let o = rora_os([
            OsStr::new("inspect"),
            OsStr::new("--base"),
            base.as_os_str(),
            OsStr::new("--adapter"),
            dir.join("adapter").as_os_str(),
            OsStr::new("--json"),
        ]);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
        let layers = doc["layers"].as_array().expect("layers array");
        let adapter = PeftAdapter::read(&dir.join("adapter")).unwrap();
        assert_eq!(layers.len(), adapter.layers.len(), "{name}");
        for layer in layers {
            for key in [
                "path",
                "in",
                "out",
                "rank",
                "scale",
                "sigma1_base",
                "sigma1_update",
                "strength_ratio",
                "effective_rank",
                "critical_scale",
                "singular_values",
            ] {
                assert!(layer.get(key).is_some(), "{name}: missing {key} in {layer}");
            }
            let path = layer["path"].as_str().unwrap();
            let f = &adapter.layers[path];
            let s = adapter.scale_for(path);
            assert!(
                (layer["scale"].as_f64().unwrap() - s).abs() < 1e-12,
                "{name} {path}"
            );
            assert_eq!(layer["rank"].as_u64().unwrap() as usize, f.rank());
            assert_eq!(layer["in"].as_u64().unwrap() as usize, f.d_in());
            assert_eq!(layer["out"].as_u64().unwrap() as usize, f.d_out());

            let delta = f.b.to_dmatrix() * f.a.to_dmatrix() * s;
            let want = singular_values(&delta);
            let got: Vec<f64> = layer["singular_values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert!(
                !got.is_empty() && got.len() <= f.rank(),
                "{name} {path}: {got:?}"
            );
            for (i, g) in got.iter().enumerate() {
                assert!(
                    (g - want[i]).abs() <= 1e-9 * want[0],
                    "{name} {path} σ{i}: {g} vs {}",
                    want[i]
                );
            }
            let sigma1_base = singular_values(&matrix(&base, &format!("{path}.weight")))[0];
            let sb = layer["sigma1_base"].as_f64().unwrap();
            assert!(
                (sb - sigma1_base).abs() <= 1e-9 * sigma1_base,
                "{name} {path}"
            );
            let su = layer["sigma1_update"].as_f64().unwrap();
            assert!((su - want[0]).abs() <= 1e-9 * want[0], "{name} {path}");
            let ratio = layer["strength_ratio"].as_f64().unwrap();
            assert!(
                (ratio - want[0] / sigma1_base).abs() <= 1e-9 * ratio,
                "{name} {path}"
            );
        }
    }
}

#[test]
fn inspect_table_names_every_layer() {
    let dir = fixture("peft-mlp");
    let o = rora_os([
        OsStr::new("inspect"),
        OsStr::new("--base"),
        dir.join("model.safetensors").as_os_str(),
        OsStr::new("--adapter"),
        dir.join("adapter").as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("fc1") && text.contains("fc2"), "{text}");
}

fn strength_ratio(adapter: &PeftAdapter, path: &str, base: &std::path::Path) -> f64 {
    let f = &adapter.layers[path];
    let delta = f.b.to_dmatrix() * f.a.to_dmatrix() * adapter.scale_for(path);
    singular_values(&delta)[0] / singular_values(&matrix(base, &format!("{path}.weight")))[0]
}

fn run_rescale(name: &str, extra: &[&str]) -> (PeftAdapter, PeftAdapter, String) {
    let dir = fixture(name);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rescaled");
    let mut args: Vec<std::ffi::OsString> = vec![
        "rescale".into(),
        "--adapter".into(),
        dir.join("adapter").into(),
        "--base".into(),
        dir.join("model.safetensors").into(),
        "--out".into(),
        out.clone().into(),
    ];
    args.extend(extra.iter().map(|s| std::ffi::OsString::from(*s)));
    let o = rora_os(&args);
    assert!(
        o.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let new = PeftAdapter::read(&out).expect("rescaled adapter reloads");
    let old = PeftAdapter::read(&dir.join("adapter")).unwrap();
    (old, new, String::from_utf8(o.stdout).unwrap())
}

#[test]
fn rescale_reaches_the_target_ratio_and_keeps_the_format() {
    for name in ALL {
        let base = fixture(name).join("model.safetensors");
        for (extra, target) in [(&[][..], 1.0), (&["--target-ratio", "0.5"][..], 0.5)] {
            let (old, new, report) = run_rescale(name, extra);
            assert_eq!(new.config, old.config, "{name}: config unchanged");
            assert_eq!(
                new.layers.keys().collect::<Vec<_>>(),
                old.layers.keys().collect::<Vec<_>>()
            );
            for (path, f) in &new.layers {
                assert_eq!(f.a.shape(), old.layers[path].a.shape());
                assert_eq!(f.b.shape(), old.layers[path].b.shape());
                assert_eq!(f.kind, old.layers[path].kind, "{name} {path}");
                // Pt rescales the direction; a DoRA magnitude is kept bit for bit.
                assert_eq!(f.magnitude, old.layers[path].magnitude, "{name} {path}");
                let ratio = strength_ratio(&new, path, &base);
                assert!(
                    (ratio - target).abs() < 1e-4 * target,
                    "{name} {path}: {ratio} vs {target}"
                );
                assert!(report.contains(path.as_str()), "{report}");
            }
        }
    }
}

#[test]
fn rescale_by_factor_and_unselected_layers_are_bit_identical() {
    let name = "peft-mlp";
    let base = fixture(name).join("model.safetensors");
    let (old, new, report) = run_rescale(name, &["--layers", "=fc2", "--factor", "3"]);
    assert_eq!(
        new.layers["fc1"], old.layers["fc1"],
        "unselected layer changed"
    );
    let want = 3.0 * strength_ratio(&old, "fc2", &base);
    let got = strength_ratio(&new, "fc2", &base);
    assert!((got - want).abs() < 1e-4 * want, "{got} vs {want}");
    assert!(report.contains("kept"), "{report}");

    let (old, new, _) = run_rescale(name, &["--layers", "fc1"]);
    assert_eq!(new.layers["fc2"], old.layers["fc2"]);
    assert!((strength_ratio(&new, "fc1", &base) - 1.0).abs() < 1e-4);
}

#[test]
fn library_functions_agree_with_the_binary() {
    let dir = fixture("peft-mlp");
    let reports = rora_cli::inspect::inspect(
        &dir.join("model.safetensors"),
        &dir.join("adapter"),
        4,
        &rora_cli::RunOptions::default(),
    )
    .unwrap();
    assert_eq!(reports.len(), 2);
    let tmp = tempfile::tempdir().unwrap();
    let rows = rora_cli::rescale::rescale(
        &dir.join("adapter"),
        &dir.join("model.safetensors"),
        tmp.path(),
        &rora_peft::LayerSelection::all(),
        rora_cli::rescale::RescaleTarget::Ratio(2.0),
        &rora_cli::RunOptions::default(),
    )
    .unwrap();
    for r in rows {
        assert!(r.selected);
        assert!((r.new_ratio.unwrap() - 2.0).abs() < 1e-4, "{r:?}");
    }
}

fn run_ok(args: &[std::ffi::OsString]) -> String {
    let o = rora_os(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `W0 + Σ cᵢ·ΔWᵢ` of the two-adapter fixture, layer `path`, `[out, in]`.
fn weighted_dense(
    dir: &std::path::Path,
    path: &str,
    parts: &[(&str, f64)],
) -> nalgebra::DMatrix<f64> {
    let mut w = matrix(&dir.join("model.safetensors"), &format!("{path}.weight"));
    for (name, c) in parts {
        let a = PeftAdapter::read(&rora_peft::adapter_dir(&dir.join("adapter"), name)).unwrap();
        if let Some(f) = a.layers.get(path) {
            w += f.b.to_dmatrix() * f.a.to_dmatrix() * (a.scale_for(path) * c);
        }
    }
    w
}

#[test]
fn a_named_adapter_is_picked_with_adapter_name() {
    let dir = fixture("peft-mlp-two-adapters");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged.safetensors");
    let args: Vec<std::ffi::OsString> = vec![
        "merge".into(),
        "--base".into(),
        dir.join("model.safetensors").into(),
        "--adapter".into(),
        dir.join("adapter").into(),
        "--adapter-name".into(),
        "other".into(),
        "--out".into(),
        out.clone().into(),
    ];
    let summary = run_ok(&args);
    assert!(
        summary.contains("fc1") && !summary.contains("fc2"),
        "{summary}"
    );
    let want = weighted_dense(&dir, "fc1", &[("other", 1.0)]);
    assert!(rel_err(&matrix(&out, "fc1.weight"), &want) < 1e-6);
    // fc2 is not adapted by `other`: copied.
    assert_eq!(
        matrix(&out, "fc2.weight"),
        matrix(&dir.join("model.safetensors"), "fc2.weight")
    );
    // `default` is the folder itself.
    let mut args = args;
    args[6] = "default".into();
    let summary = run_ok(&args);
    assert!(summary.contains("fc1, fc2"), "{summary}");
}

#[test]
fn combine_cat_of_two_adapters_merges_to_the_sum_of_both() {
    let dir = fixture("peft-mlp-two-adapters");
    let adapter = dir.join("adapter");
    let tmp = tempfile::tempdir().unwrap();
    let mixed = tmp.path().join("mix");
    let spec = |p: &std::path::Path, w: &str| {
        let mut s = std::ffi::OsString::from(p.as_os_str());
        s.push(format!("={w}"));
        s
    };
    for (combination, peft) in [
        ("cat", "mix_cat"),
        ("linear", "mix_linear"),
        ("svd", "mix_svd"),
    ] {
        let report = run_ok(&[
            "combine".into(),
            "--adapter".into(),
            spec(&adapter, "0.7"),
            "--adapter".into(),
            spec(&adapter.join("other"), "-0.4"),
            "--combination".into(),
            combination.into(),
            "--out".into(),
            mixed.clone().into(),
        ]);
        assert!(report.contains(combination), "{report}");
        // The same update as PEFT's add_weighted_adapter wrote.
        let ours = PeftAdapter::read(&mixed).unwrap();
        let theirs = PeftAdapter::read(&adapter.join(peft)).unwrap();
        assert_eq!(ours.config.r, theirs.config.r);
        for (path, f) in &ours.layers {
            let g = &theirs.layers[path];
            let (u, v) = (
                f.b.to_dmatrix() * f.a.to_dmatrix(),
                g.b.to_dmatrix() * g.a.to_dmatrix(),
            );
            assert!(rel_err(&u, &v) < 1e-5, "{combination} {path}");
        }
    }
    // cat, merged: W0 + 0.7·ΔW_default − 0.4·ΔW_other.
    run_ok(&[
        "combine".into(),
        "--adapter".into(),
        spec(&adapter, "0.7"),
        "--adapter".into(),
        spec(&adapter.join("other"), "-0.4"),
        "--out".into(),
        mixed.clone().into(),
    ]);
    let out = tmp.path().join("merged.safetensors");
    run_ok(&[
        "merge".into(),
        "--base".into(),
        dir.join("model.safetensors").into(),
        "--adapter".into(),
        mixed.into(),
        "--out".into(),
        out.clone().into(),
    ]);
    for path in ["fc1", "fc2"] {
        let want = weighted_dense(&dir, path, &[("default", 0.7), ("other", -0.4)]);
        let err = rel_err(&matrix(&out, &format!("{path}.weight")), &want);
        assert!(err < 1e-6, "{path}: {err}");
    }
}
