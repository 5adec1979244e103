//! LoRA and DoRA on embeddings: adapters PEFT saved for an `nn.Embedding`
//! (`tests/fixtures/peft-embedding`, `peft-embedding-dora`: `lora_embedding_A`
//! `[r, num_embeddings]`, `lora_embedding_B` `[embedding_dim, r]`) load into rora's
//! [`LoraEmbedding`] and give PEFT's outputs; rora saves them under PEFT's keys; RoRA's Pt
//! and the spectral report reach the embedding adapter.

use burn::tensor::{Device, Tensor, Tolerance};
use rora::core::peft::{LayerKind, PeftAdapter, TensorFile, WEIGHTS_FILE};
use rora::core::rora::{Rora, RoraConfig};
use rora::{AdapterKind, AdapterOptions, adapted_layers, attach_adapter, save_adapter};
use rora_tests::{EmbMlp, fixture_dir, load_emb_mlp, read_ids, read_matrix, read_rows, rel_error};

const FIXTURES: [&str; 2] = ["peft-embedding", "peft-embedding-dora"];
const TOL: f64 = 1e-5;

fn io(name: &str) -> TensorFile {
    TensorFile::open(&fixture_dir(name).join("io.safetensors")).unwrap()
}

fn rows(y: Tensor<3>) -> Tensor<2> {
    let [b, s, d] = y.dims();
    y.reshape([b * s, d])
}

fn adapted(name: &str, device: &Device) -> EmbMlp {
    let adapter = PeftAdapter::read(&fixture_dir(name).join("adapter")).unwrap();
    attach_adapter(load_emb_mlp(name, device), &adapter).unwrap()
}

#[test]
fn peft_embedding_adapters_reproduce_y_base_adapted_and_merged() {
    let device = Device::default();
    for name in FIXTURES {
        let io = io(name);
        let ids = read_ids(&io, &device);
        let base = load_emb_mlp(name, &device);
        let err = rel_error(
            rows(base.forward(ids.clone())),
            read_rows(&io, "y_base", &device),
        );
        assert!(err < TOL, "{name}: y_base rel error {err}");

        let adapter = PeftAdapter::read(&fixture_dir(name).join("adapter")).unwrap();
        assert_eq!(adapter.layers["emb"].kind, LayerKind::Embedding);
        assert_eq!(adapter.layers["fc1"].kind, LayerKind::Linear);
        let model = adapted(name, &device);
        assert_eq!(model.emb.rank(), Some(2));
        assert_eq!(model.emb.is_dora(), name.ends_with("dora"));
        let y = model.forward(ids.clone());
        let err = rel_error(rows(y), read_rows(&io, "y_adapted", &device));
        assert!(err < TOL, "{name}: y_adapted rel error {err}");

        let merged = EmbMlp {
            emb: model.emb.merge(),
            fc1: model.fc1.merge(),
            fc2: model.fc2,
        };
        let err = rel_error(
            rows(merged.forward(ids)),
            read_rows(&io, "y_merged", &device),
        );
        assert!(err < TOL, "{name}: y_merged rel error {err}");
        let table = read_matrix(&io, "merged.emb.weight", &device);
        let err = rel_error(merged.emb.weight.val(), table);
        assert!(err < TOL, "{name}: merged.emb.weight rel error {err}");
        // Unmerging gives the table back.
        let back = merged.emb.unmerge();
        back.weight.val().into_data().assert_approx_eq::<f32>(
            &base.emb.weight.val().into_data(),
            Tolerance::rel_abs(1e-5, 1e-6),
        );
    }
}

#[test]
fn saved_embedding_adapters_have_peft_keys_shapes_and_values() {
    let device = Device::default();
    for name in FIXTURES {
        let fixture = fixture_dir(name).join("adapter");
        let original = PeftAdapter::read(&fixture).unwrap();
        let model = adapted(name, &device);
        let dir = tempfile::tempdir().unwrap();
        save_adapter(&model, dir.path(), &AdapterOptions::default()).unwrap();
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
        assert!(
            theirs
                .names()
                .contains(&"base_model.model.emb.lora_embedding_A".to_string())
        );
        let again = PeftAdapter::read(dir.path()).unwrap();
        assert_eq!(again.layers, original.layers, "{name}");
    }
}

#[test]
fn an_embedding_adapter_does_not_load_into_a_linear_layer() {
    let device = Device::default();
    let mut adapter = PeftAdapter::read(&fixture_dir("peft-embedding").join("adapter")).unwrap();
    // Rename the embedding's layer to `fc2`, a linear layer of the model.
    let mut emb = adapter.layers.remove("emb").unwrap();
    emb.a = rora::core::peft::HostMatrix::new(2, 10, vec![0.1; 20]);
    emb.b = rora::core::peft::HostMatrix::new(3, 2, vec![0.1; 6]);
    adapter.layers.insert("fc2".into(), emb);
    adapter.config.target_modules =
        rora::core::peft::TargetModules::List(vec!["fc1".into(), "fc2".into()]);
    let err = attach_adapter(load_emb_mlp("peft-embedding", &device), &adapter).unwrap_err();
    assert!(
        matches!(&err, rora::AdapterError::InconsistentLayer { layer, message, .. }
            if layer == "fc2" && message.contains("embedding") && message.contains("lora_embedding_A")),
        "{err}"
    );
}

#[test]
fn pt_and_the_report_reach_the_embedding_adapter() {
    let device = Device::default();
    for name in FIXTURES {
        let model = adapted(name, &device);
        let layers = adapted_layers(&model);
        let emb = layers.iter().find(|l| l.path == "emb").unwrap();
        assert_eq!(emb.kind, AdapterKind::LoraEmbedding);
        // The [out, in] view: in = num_embeddings, out = embedding_dim.
        assert_eq!((emb.d_in(), emb.d_out()), (12, 6));
        let rora = Rora::prepare(&model, RoraConfig::new().with_top_k(2)).unwrap();
        let report = rora.report(&model).unwrap();
        assert!(report.iter().any(|r| r.path == "emb"), "{name}");
        let (rescaled, done) = rora.rescale(model).unwrap();
        assert!(done.layers.iter().any(|l| l.path == "emb"), "{name}");
        let after = adapted_layers(&rescaled);
        let emb = after.iter().find(|l| l.path == "emb").unwrap();
        let s = emb.scale.unwrap();
        let sigma1 = ((emb.b_matrix() * emb.a_matrix()) * s)
            .svd(false, false)
            .singular_values[0];
        let sigma1_w0 = emb.base_matrix().svd(false, false).singular_values[0];
        assert!(
            (sigma1 / sigma1_w0 - 1.0).abs() < 1e-4,
            "{name}: {sigma1} / {sigma1_w0}"
        );
    }
}

#[test]
fn a_token_row_moves_by_the_column_of_the_update() {
    // The row of token t in the adapted table is E[t] + s·(B·A[:, t])ᵀ: LoRA on the
    // embedding changes exactly the rows of the tokens A gives weight to.
    let device = Device::default();
    let model = adapted("peft-embedding", &device);
    let e = &model.emb;
    let lora = e.lora.as_ref().unwrap();
    let s = lora.scale_value();
    let t = 7;
    let col = lora.a.val().narrow(1, t, 1); // [r, 1]
    let want = e.weight.val().narrow(0, t, 1) + lora.b.val().matmul(col).transpose().mul_scalar(s);
    let got = e.adapted_weight().unwrap().narrow(0, t, 1);
    got.into_data()
        .assert_approx_eq::<f32>(&want.into_data(), Tolerance::rel_abs(1e-5, 1e-6));
}
