//! The interop contract: adapters saved by HuggingFace PEFT (`tests/fixtures`, made by
//! `tests/fixtures/make_fixtures.py`) load into rora and reproduce PEFT's outputs;
//! adapters rora saves have PEFT's keys and shapes.

use burn::module::Lora;
use burn::tensor::Device;
use rora::core::peft::{CONFIG_FILE, PeftAdapter, TensorFile, WEIGHTS_FILE};
use rora::core::{AdapterOptions, Targets, apply_lora_targets};
use rora::{attach_adapter, load_adapter, save_adapter};
use rora_tests::{fixture_dir, load_mlp, load_native_mlp, read_matrix, rel_error};

const FIXTURES: [&str; 2] = ["peft-mlp", "peft-mlp-rslora"];
const TOL: f64 = 1e-5;

fn io(name: &str) -> TensorFile {
    TensorFile::open(&fixture_dir(name).join("io.safetensors")).unwrap()
}

#[test]
fn base_model_reproduces_y_base() {
    let device = Device::default();
    for name in FIXTURES {
        let io = io(name);
        let mlp = load_mlp(name, &device);
        let x = read_matrix(&io, "x", &device);
        let err = rel_error(mlp.forward(x), read_matrix(&io, "y_base", &device));
        assert!(err < TOL, "{name}: y_base rel error {err}");
    }
}

#[test]
fn loaded_adapter_reproduces_y_adapted_and_y_merged() {
    let device = Device::default();
    for name in FIXTURES {
        let io = io(name);
        let adapter = PeftAdapter::read(&fixture_dir(name).join("adapter")).unwrap();
        let mlp = attach_adapter(load_mlp(name, &device), &adapter).unwrap();
        let x = read_matrix(&io, "x", &device);
        let err = rel_error(
            mlp.forward(x.clone()),
            read_matrix(&io, "y_adapted", &device),
        );
        assert!(err < TOL, "{name}: y_adapted rel error {err}");

        let merged = rora_tests::Mlp {
            fc1: mlp.fc1.merge(),
            fc2: mlp.fc2.merge(),
        };
        let err = rel_error(merged.forward(x), read_matrix(&io, "y_merged", &device));
        assert!(err < TOL, "{name}: y_merged rel error {err}");
        for (layer, got) in [("fc1", &merged.fc1), ("fc2", &merged.fc2)] {
            let want = read_matrix(&io, &format!("merged.{layer}.weight"), &device);
            let err = rel_error(got.weight.val().transpose(), want);
            assert!(err < TOL, "{name}: merged.{layer}.weight rel error {err}");
        }
    }
}

#[test]
fn rslora_fixture_scales_by_alpha_over_sqrt_r() {
    let adapter = PeftAdapter::read(&fixture_dir("peft-mlp-rslora").join("adapter")).unwrap();
    assert!(adapter.config.use_rslora);
    let expected = adapter.config.lora_alpha / (adapter.config.r as f64).sqrt();
    assert!((adapter.scale_for("fc2") - expected).abs() < 1e-12);
    assert_eq!(adapter.layers.keys().collect::<Vec<_>>(), ["fc2"]);
}

#[test]
fn burn_native_apply_lora_loads_peft_adapters() {
    let device = Device::default();
    for name in FIXTURES {
        let io = io(name);
        let adapter = PeftAdapter::read(&fixture_dir(name).join("adapter")).unwrap();
        let paths: Vec<&str> = adapter.layers.keys().map(String::as_str).collect();
        let targets = Targets::parse(&paths).unwrap();
        // burn's own adapter uses scale alpha/r; the rsLoRA fixture's differs, which
        // loading folds into the factors.
        let lora = Lora::new(adapter.config.r, adapter.config.lora_alpha);
        let options = AdapterOptions::native(&lora);
        let model = apply_lora_targets(load_native_mlp(name, &device), &targets, lora).unwrap();
        let model = load_adapter(model, &fixture_dir(name).join("adapter"), &options).unwrap();
        let x = read_matrix(&io, "x", &device);
        let err = rel_error(model.forward(x), read_matrix(&io, "y_adapted", &device));
        assert!(err < TOL, "{name}: native y_adapted rel error {err}");
    }
}

#[test]
fn saved_adapter_has_peft_keys_shapes_and_values() {
    let device = Device::default();
    for name in FIXTURES {
        let fixture = fixture_dir(name).join("adapter");
        let original = PeftAdapter::read(&fixture).unwrap();
        let mlp = attach_adapter(load_mlp(name, &device), &original).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_adapter(&mlp, dir.path(), &AdapterOptions::default()).unwrap();

        // Same tensor keys, shapes and dtype as PEFT's own file.
        let ours = TensorFile::open(&dir.path().join(WEIGHTS_FILE)).unwrap();
        let theirs = TensorFile::open(&fixture.join(WEIGHTS_FILE)).unwrap();
        assert_eq!(ours.names(), theirs.names(), "{name}");
        for key in theirs.names() {
            assert_eq!(
                ours.info(key).unwrap(),
                theirs.info(key).unwrap(),
                "{name}: {key}"
            );
        }
        // Same values, and the same scale per layer.
        let again = PeftAdapter::read(dir.path()).unwrap();
        assert_eq!(again.layers, original.layers, "{name}");
        for path in original.layers.keys() {
            let (a, b) = (again.scale_for(path), original.scale_for(path));
            assert!((a - b).abs() < 1e-6 * b, "{name}: {path} scale {a} vs {b}");
        }
        // A config PEFT accepts: every key PEFT's LoraConfig needs is present with the
        // right JSON type.
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap())
                .unwrap();
        assert_eq!(cfg["peft_type"], "LORA");
        assert!(cfg["r"].is_u64());
        assert!(cfg["lora_alpha"].is_number());
        assert!(cfg["lora_dropout"].is_number());
        assert!(cfg["target_modules"].is_array());
        assert!(cfg["use_rslora"].is_boolean());
        assert_eq!(cfg["bias"], "none");
        assert_eq!(cfg["fan_in_fan_out"], false);
        assert!(cfg["rank_pattern"].is_object() && cfg["alpha_pattern"].is_object());
    }
}

#[test]
fn adapter_for_missing_layer_is_named() {
    let device = Device::default();
    let mut adapter = PeftAdapter::read(&fixture_dir("peft-mlp").join("adapter")).unwrap();
    let f = adapter.layers.remove("fc2").unwrap();
    adapter.layers.insert("fc3".into(), f);
    let err = attach_adapter(load_mlp("peft-mlp", &device), &adapter).unwrap_err();
    assert!(
        matches!(err, rora::AdapterError::UnknownLayer { ref path, .. } if path == "fc3"),
        "{err}"
    );
}

#[test]
fn adapter_with_wrong_shape_is_named() {
    let device = Device::default();
    // peft-mlp-rslora's fc2 factors ([8,20], [6,8]) do not fit peft-mlp's fc2 (32→8).
    let adapter = PeftAdapter::read(&fixture_dir("peft-mlp-rslora").join("adapter")).unwrap();
    let err = attach_adapter(load_mlp("peft-mlp", &device), &adapter).unwrap_err();
    assert!(
        matches!(
            err,
            rora::AdapterError::ShapeMismatch { ref key, ref expected, ref found }
                if key == "base_model.model.fc2.lora_A.weight"
                    && expected == &[8, 32]
                    && found == &[8, 20]
        ),
        "{err}"
    );
}
