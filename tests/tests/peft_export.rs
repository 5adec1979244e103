//! Adapters rora writes, for PEFT to load: the Python side of the round trip is
//! `tests/fixtures/check_rora_adapters.py`, which loads every adapter exported here into
//! PEFT (`PeftModel.from_pretrained`, `load_adapter`) and compares PEFT's outputs with the
//! outputs rora recorded.
//!
//! The adapters are changed by rora before saving (RoRA's Pt rescales the factors; new
//! weighted combinations), so PEFT must compute with values only rora produced. The test
//! always writes the export into a temporary folder and reads it back; with
//! `RORA_EXPORT_DIR=<dir>` it writes it there for the Python check:
//!
//! ```sh
//! RORA_EXPORT_DIR=/tmp/rora-export cargo test --workspace --test peft_export
//! python3 tests/fixtures/check_rora_adapters.py /tmp/rora-export
//! ```

use std::path::Path;

use burn::tensor::{Device, Tensor};
use rora::core::multi::NamedAdapters;
use rora::core::peft::{AdapterSet, Combination, PeftAdapter, RawTensor, write_safetensors_atomic};
use rora::core::rora::{Rora, RoraConfig};
use rora::core::{AdapterOptions, convert::tensor_to_host};
use rora::{attach_adapter, save_adapter};
use rora_tests::{fixture_dir, load_emb_mlp, load_mlp, read_ids, read_matrix};

fn write_io(path: &Path, tensors: Vec<(&str, Tensor<2>)>) {
    let tensors = tensors
        .into_iter()
        .map(|(k, t)| {
            let h = tensor_to_host(t);
            (k.to_string(), RawTensor::f32(vec![h.rows, h.cols], &h.data))
        })
        .collect();
    write_safetensors_atomic(path, &tensors, None).unwrap();
}

fn rows(y: Tensor<3>) -> Tensor<2> {
    let [b, s, d] = y.dims();
    y.reshape([b * s, d])
}

/// Pt on every layer, with the paper's target ratio 1.
fn rescaled<M: burn::module::Module>(model: M) -> M {
    let rora = Rora::prepare(&model, RoraConfig::new().with_top_k(2)).unwrap();
    rora.rescale(model).unwrap().0
}

#[test]
fn export_rora_written_adapters_for_peft() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::env::var_os("RORA_EXPORT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let device = Device::default();
    let mut manifest = Vec::new();

    // DoRA on the MLP: PEFT's adapter, rescaled by Pt (magnitudes kept).
    {
        let name = "peft-mlp-dora";
        let adapter = PeftAdapter::read(&fixture_dir(name).join("adapter")).unwrap();
        let model = rescaled(attach_adapter(load_mlp(name, &device), &adapter).unwrap());
        let out = root.join("dora");
        save_adapter(&model, &out.join("adapter"), &AdapterOptions::default()).unwrap();
        let io =
            rora::core::peft::TensorFile::open(&fixture_dir(name).join("io.safetensors")).unwrap();
        let x = read_matrix(&io, "x", &device);
        write_io(
            &out.join("io.safetensors"),
            vec![("x", x.clone()), ("y_default", model.forward(x))],
        );
        manifest.push(serde_json::json!({"folder": "dora", "fixture": name, "model": "mlp", "adapters": ["default"]}));
    }
    // LoRA and DoRA on an embedding, rescaled.
    for (folder, name) in [
        ("embedding", "peft-embedding"),
        ("embedding-dora", "peft-embedding-dora"),
    ] {
        let adapter = PeftAdapter::read(&fixture_dir(name).join("adapter")).unwrap();
        let model = rescaled(attach_adapter(load_emb_mlp(name, &device), &adapter).unwrap());
        let out = root.join(folder);
        save_adapter(&model, &out.join("adapter"), &AdapterOptions::default()).unwrap();
        let io =
            rora::core::peft::TensorFile::open(&fixture_dir(name).join("io.safetensors")).unwrap();
        let ids = read_ids(&io, &device);
        let ids_f = read_matrix(&io, "ids", &device);
        write_io(
            &out.join("io.safetensors"),
            vec![("ids", ids_f), ("y_default", rows(model.forward(ids)))],
        );
        manifest.push(serde_json::json!({"folder": folder, "fixture": name, "model": "emb", "adapters": ["default"]}));
    }
    // Several named adapters: PEFT's two, `default` rescaled while active, and rora's own
    // weighted combinations.
    {
        let name = "peft-mlp-two-adapters";
        let set = AdapterSet::read(&fixture_dir(name).join("adapter")).unwrap();
        let mut adapters = NamedAdapters::new();
        for n in ["default", "other"] {
            adapters.add(n, set[n].clone()).unwrap();
        }
        let model = adapters
            .set_active(load_mlp(name, &device), "default")
            .unwrap();
        let model = rescaled(model);
        adapters
            .add_weighted(
                &model,
                "ours_cat",
                &[("default", 0.5), ("other", 1.5)],
                Combination::Cat,
            )
            .unwrap();
        adapters
            .add_weighted(
                &model,
                "ours_svd",
                &[("default", 0.5), ("other", 1.5)],
                Combination::Svd { rank: Some(3) },
            )
            .unwrap();
        let out = root.join("two-adapters");
        adapters.save(&model, &out.join("adapter")).unwrap();
        let io =
            rora::core::peft::TensorFile::open(&fixture_dir(name).join("io.safetensors")).unwrap();
        let x = read_matrix(&io, "x", &device);
        let mut tensors = vec![("x".to_string(), x.clone())];
        let mut model = model;
        let names = adapters.names();
        for n in &names {
            model = adapters.set_active(model, n).unwrap();
            tensors.push((format!("y_{n}"), model.forward(x.clone())));
        }
        write_io(
            &out.join("io.safetensors"),
            tensors
                .iter()
                .map(|(k, t)| (k.as_str(), t.clone()))
                .collect(),
        );
        manifest.push(serde_json::json!({"folder": "two-adapters", "fixture": name, "model": "mlp", "adapters": names}));
        // Read back as PEFT's layout.
        assert_eq!(
            AdapterSet::read(&out.join("adapter")).unwrap().names(),
            names
        );
    }
    std::fs::write(
        root.join("export.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    for entry in &manifest {
        let folder = root.join(entry["folder"].as_str().unwrap()).join("adapter");
        AdapterSet::read(&folder).unwrap();
    }
}
