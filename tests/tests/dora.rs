//! DoRA: adapters PEFT saved with `use_dora=True` (`tests/fixtures/peft-mlp-dora`) load into
//! rora and give PEFT's outputs; adapters rora saves have PEFT's keys and shapes; RoRA's
//! Cl, Tr and Pt act on DoRA layers as on LoRA layers.

use burn::module::Module;
use burn::tensor::{Device, Tolerance};
use rora::core::peft::{PeftAdapter, TensorFile, WEIGHTS_FILE};
use rora::core::rora::{Rora, RoraConfig, omega};
use rora::core::{AdapterOptions, adapted_layers, apply_adapter};
use rora::{LoraConfig, Targets, attach_adapter, inject_lora, save_adapter};
use rora_tests::{Mlp, fixture_dir, load_mlp, read_matrix, rel_error};

const FIXTURE: &str = "peft-mlp-dora";
const TOL: f64 = 1e-5;

fn io() -> TensorFile {
    TensorFile::open(&fixture_dir(FIXTURE).join("io.safetensors")).unwrap()
}

fn peft_adapter() -> PeftAdapter {
    PeftAdapter::read(&fixture_dir(FIXTURE).join("adapter")).unwrap()
}

#[test]
fn peft_dora_adapter_reproduces_y_adapted_and_y_merged() {
    let device = Device::default();
    let io = io();
    let adapter = peft_adapter();
    assert!(adapter.config.use_dora);
    assert!(adapter.layers.values().all(|f| f.is_dora()));
    let mlp = attach_adapter(load_mlp(FIXTURE, &device), &adapter).unwrap();
    assert!(mlp.fc1.is_dora() && mlp.fc2.is_dora());
    let x = read_matrix(&io, "x", &device);
    let err = rel_error(
        mlp.forward(x.clone()),
        read_matrix(&io, "y_adapted", &device),
    );
    assert!(err < TOL, "y_adapted rel error {err}");
    // Without the magnitudes (plain LoRA on the same factors) the outputs are PEFT's no more:
    // the fixture's magnitudes matter.
    let mut lora = adapter.clone();
    lora.config.use_dora = false;
    lora.layers.values_mut().for_each(|f| f.magnitude = None);
    let plain = attach_adapter(load_mlp(FIXTURE, &device), &lora).unwrap();
    let err = rel_error(
        plain.forward(x.clone()),
        read_matrix(&io, "y_adapted", &device),
    );
    assert!(
        err > 1e-2,
        "the magnitudes should change the outputs ({err})"
    );

    let merged = Mlp {
        fc1: mlp.fc1.merge(),
        fc2: mlp.fc2.merge(),
    };
    let err = rel_error(merged.forward(x), read_matrix(&io, "y_merged", &device));
    assert!(err < TOL, "y_merged rel error {err}");
    for (layer, got) in [("fc1", &merged.fc1), ("fc2", &merged.fc2)] {
        let want = read_matrix(&io, &format!("merged.{layer}.weight"), &device);
        let err = rel_error(got.weight.val().transpose(), want);
        assert!(err < TOL, "merged.{layer}.weight rel error {err}");
    }
    // Unmerging gives the base weights back (float32 round-off only).
    let base = load_mlp(FIXTURE, &device);
    for (got, want) in [
        (merged.fc1.unmerge(), &base.fc1),
        (merged.fc2.unmerge(), &base.fc2),
    ] {
        assert!(!got.is_merged());
        got.weight.val().into_data().assert_approx_eq::<f32>(
            &want.weight.val().into_data(),
            Tolerance::rel_abs(1e-5, 1e-6),
        );
    }
}

#[test]
fn saved_dora_adapter_has_peft_keys_shapes_and_values() {
    let device = Device::default();
    let fixture = fixture_dir(FIXTURE).join("adapter");
    let original = peft_adapter();
    let mlp = attach_adapter(load_mlp(FIXTURE, &device), &original).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let saved = save_adapter(&mlp, dir.path(), &AdapterOptions::default()).unwrap();
    assert!(saved.config.use_dora);

    let ours = TensorFile::open(&dir.path().join(WEIGHTS_FILE)).unwrap();
    let theirs = TensorFile::open(&fixture.join(WEIGHTS_FILE)).unwrap();
    assert_eq!(ours.names(), theirs.names());
    for key in theirs.names() {
        assert_eq!(ours.info(key).unwrap(), theirs.info(key).unwrap(), "{key}");
    }
    assert!(
        theirs
            .names()
            .contains(&"base_model.model.fc1.lora_magnitude_vector".to_string())
    );
    let again = PeftAdapter::read(dir.path()).unwrap();
    assert_eq!(again.layers, original.layers);
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["use_dora"], true);
}

#[test]
fn load_adapter_writes_magnitudes_into_dora_layers_and_refuses_a_mismatch() {
    let device = Device::default();
    let adapter = peft_adapter();
    let io = io();
    let x = read_matrix(&io, "x", &device);
    // A model already adapted with DoRA (fresh values) takes the file's values.
    let targets = Targets::parse(&["fc1", "fc2"]).unwrap();
    let dora = LoraConfig::new(4, 8.0).with_use_dora(true);
    let model = inject_lora(load_mlp(FIXTURE, &device), &targets, &dora).unwrap();
    let model = apply_adapter(model, &adapter, &AdapterOptions::default()).unwrap();
    let err = rel_error(model.forward(x), read_matrix(&io, "y_adapted", &device));
    assert!(err < TOL, "apply_adapter y_adapted rel error {err}");
    // A plain-LoRA model cannot take a DoRA file, nor a DoRA model a LoRA file.
    let lora = LoraConfig::new(4, 8.0);
    let plain = inject_lora(load_mlp(FIXTURE, &device), &targets, &lora).unwrap();
    let e = apply_adapter(plain, &adapter, &AdapterOptions::default()).unwrap_err();
    assert!(
        matches!(&e, rora::AdapterError::InconsistentLayer { layer, .. } if layer == "fc1"),
        "{e}"
    );
    let mut lora_file = adapter.clone();
    lora_file.config.use_dora = false;
    lora_file
        .layers
        .values_mut()
        .for_each(|f| f.magnitude = None);
    let model = inject_lora(load_mlp(FIXTURE, &device), &targets, &dora).unwrap();
    let e = apply_adapter(model, &lora_file, &AdapterOptions::default()).unwrap_err();
    assert!(e.to_string().contains("DoRA layer"), "{e}");
    // A magnitude of the wrong length names the key.
    let mut short = adapter;
    short.layers.get_mut("fc2").unwrap().magnitude = Some(vec![1.0; 7]);
    let e = attach_adapter(load_mlp(FIXTURE, &device), &short).unwrap_err();
    assert!(
        matches!(&e, rora::AdapterError::FactorShape { key, .. } if key.ends_with("fc2.lora_magnitude_vector")),
        "{e}"
    );
}

#[test]
fn mixed_dora_and_lora_layers_cannot_be_saved_as_one_peft_adapter() {
    let device = Device::default();
    let model = inject_lora(
        load_mlp(FIXTURE, &device),
        &Targets::parse(&["fc1"]).unwrap(),
        &LoraConfig::new(2, 4.0).with_use_dora(true),
    )
    .unwrap();
    let model = Mlp {
        fc2: model.fc2.with_lora(&LoraConfig::new(2, 4.0)).expect("fits"),
        ..model
    };
    let dir = tempfile::tempdir().unwrap();
    let e = save_adapter(&model, dir.path(), &AdapterOptions::default()).unwrap_err();
    assert!(
        matches!(&e, rora::AdapterError::UnsupportedSetting { setting } if setting.contains("use_dora")),
        "{e}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

/// The fixture model with its DoRA adapter, on an autodiff device.
fn dora_model(device: &Device) -> Mlp {
    let adapter = peft_adapter();
    attach_adapter(load_mlp(FIXTURE, device), &adapter).unwrap()
}

#[test]
fn tr_on_dora_is_the_constraint_on_its_factors_and_trains_them() {
    let device = Device::default().autodiff();
    let model = dora_model(&device);
    let rora = Rora::prepare(&model, RoraConfig::new().with_top_k(3).with_lambda(2.0)).unwrap();
    let penalty = rora.try_penalty(&model).unwrap();
    // λ·Σ Ω over the layers, Ω from the layers' own factors and W0's cached subspaces.
    let mut want = 0.0;
    for (layer, cache) in adapted_layers(&model).iter().zip(rora.caches()) {
        assert!(layer.is_dora(), "{}", layer.path);
        let uk = rora::core::convert::dmatrix_to_tensor(&cache.spectrum.u, &device);
        let vk = rora::core::convert::dmatrix_to_tensor(&cache.spectrum.v, &device);
        let o = omega(uk, vk, layer.a.clone(), layer.b.clone());
        want += 2.0 * o.into_scalar::<f64>();
    }
    let got = penalty.clone().into_scalar::<f64>();
    assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
    // The penalty reaches A and B, not the magnitude (it is not part of Ω).
    let grads = penalty.backward();
    let lora = model.fc1.lora.as_ref().unwrap();
    assert!(lora.a.val().grad(&grads).is_some());
    assert!(lora.b.val().grad(&grads).is_some());
    let m = &lora.dora.as_ref().unwrap().magnitude;
    assert!(m.val().grad(&grads).is_none());
}

#[test]
fn pt_on_dora_rescales_the_direction_and_keeps_the_magnitude() {
    let device = Device::default();
    let model = dora_model(&device);
    let rora = Rora::prepare(&model, RoraConfig::new().with_top_k(3)).unwrap();
    let before = adapted_layers(&model);
    let (rescaled, report) = rora.rescale(model).unwrap();
    assert_eq!(report.layers.len(), 2);
    for (b, a) in before.iter().zip(adapted_layers(&rescaled)) {
        let s = b.scale.unwrap();
        let update = (a.b_matrix() * a.a_matrix()) * s;
        let sigma1 = update.svd(false, false).singular_values[0];
        let sigma1_w0 = b.base_matrix().svd(false, false).singular_values[0];
        assert!((sigma1 / sigma1_w0 - 1.0).abs() < 1e-4, "{}", b.path);
        // The magnitude is left as trained, bit for bit.
        assert_eq!(
            a.magnitude.unwrap().into_data(),
            b.magnitude.clone().unwrap().into_data(),
            "{}",
            b.path
        );
    }
    // So every output row of the rescaled layer's weight has the trained length m_j.
    let w = rescaled.fc1.adapted_weight().unwrap(); // [in, out]
    let lengths = w.square().sum_dim(0).sqrt().reshape([32]);
    let m = rescaled.fc1.lora.as_ref().unwrap().dora.as_ref().unwrap();
    lengths.into_data().assert_approx_eq::<f32>(
        &m.magnitude.val().into_data(),
        Tolerance::rel_abs(1e-5, 1e-6),
    );
    // The report (on the directional update s·B·A) works on DoRA layers.
    assert_eq!(rora.report(&rescaled).unwrap().len(), 2);
}

#[test]
fn cl_on_dora_drops_the_frozen_branch_in_training_only() {
    let device = Device::default().autodiff();
    device.seed(3);
    let adapter = peft_adapter();
    let targets = Targets::parse(&["fc1", "fc2"]).unwrap();
    let config = LoraConfig::new(4, 8.0)
        .with_use_dora(true)
        .with_base_dropout(0.5);
    let model = inject_lora(load_mlp(FIXTURE, &device), &targets, &config).unwrap();
    let model = apply_adapter(model, &adapter, &AdapterOptions::default()).unwrap();
    let io = io();
    let x = read_matrix(&io, "x", &device.clone().inner());
    // Evaluation: exactly the DoRA output.
    let eval = model.valid();
    let err = rel_error(
        eval.forward(x.clone()),
        read_matrix(&io, "y_adapted", &device.clone().inner()),
    );
    assert!(err < TOL, "eval rel error {err}");
    // Training: about half of fc1's frozen-branch outputs are dropped, so fc1's output is
    // its DoRA output minus the dropped x·W0 + b entries (scaled survivors).
    let train = model.fc1.forward(x.clone().autodiff()).inner();
    let clean = eval.fc1.forward(x.clone());
    let diff = (train - clean).abs().max().into_scalar::<f32>();
    assert!(
        diff > 1e-3,
        "base dropout changes the training output ({diff})"
    );
}

#[test]
fn dora_paths_are_burns_paths() {
    let device = Device::default();
    let model = dora_model(&device);
    let layers = adapted_layers(&model);
    assert_eq!(
        layers
            .iter()
            .map(|l| l.magnitude_path.clone().unwrap())
            .collect::<Vec<_>>(),
        ["fc1.lora.dora.magnitude", "fc2.lora.dora.magnitude"]
    );
    // The traversal still sees the layers by their paths.
    assert_eq!(rora::lora_linear_paths(model), ["fc1", "fc2"]);
}

/// Not a test: the cost of DoRA's row norms, factored ([`rora::core::dora::weight_norm`])
/// against PEFT's dense way ([`rora::core::dora::weight_norm_dense`]). Prints the median of
/// repeated runs per size; run with
/// `cargo test --workspace --test dora -- --ignored --nocapture dora_norm_cost`.
#[test]
#[ignore = "measurement, prints timings"]
fn dora_norm_cost() {
    use burn::tensor::{Distribution, Tensor};
    use rora::core::dora::{weight_norm, weight_norm_dense};
    use std::time::Instant;
    let device = Device::default();
    for (d_in, d_out, r) in [
        (768, 768, 8),
        (768, 3072, 16),
        (2048, 2048, 16),
        (4096, 4096, 16),
    ] {
        let w = Tensor::<2>::random([d_in, d_out], Distribution::Normal(0.0, 0.02), &device);
        let a = Tensor::<2>::random([r, d_in], Distribution::Normal(0.0, 0.02), &device);
        let b = Tensor::<2>::random([d_out, r], Distribution::Normal(0.0, 0.02), &device);
        let time = |f: &dyn Fn() -> Tensor<1>| {
            let _ = f().into_data(); // warm up
            let mut t: Vec<f64> = (0..9)
                .map(|_| {
                    let start = Instant::now();
                    let _ = f().into_data();
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        };
        let factored = time(&|| weight_norm(w.clone(), a.clone(), b.clone(), 2.0));
        let dense = time(&|| weight_norm_dense(w.clone(), a.clone(), b.clone(), 2.0));
        let agree = rel_error(
            weight_norm(w.clone(), a.clone(), b.clone(), 2.0).reshape([1, d_out]),
            weight_norm_dense(w.clone(), a.clone(), b.clone(), 2.0).reshape([1, d_out]),
        );
        println!(
            "in {d_in:>5} out {d_out:>5} r {r:>3}: factored {factored:8.3} ms, dense {dense:8.3} ms, \
             temporaries [out, r] = {} floats vs [in, out] = {} floats, rel diff {agree:.1e}",
            d_out * r,
            d_in * d_out
        );
    }
}

#[test]
fn merge_then_unmerge_is_bit_for_bit_where_the_math_allows() {
    // A fresh adapter's update is zero (B = 0 for a linear layer, A = 0 for an embedding)
    // and DoRA's fresh magnitude is the norm itself (m/n = 1 exactly): merging adds 0 and
    // multiplies by 1, unmerging divides by 1 and subtracts 0, so W0 comes back bit for bit.
    // (With a non-zero update both steps round, see the tolerance-based tests.)
    use burn::nn::{EmbeddingConfig, LinearConfig};
    use rora::{LoraEmbedding, LoraLinear};
    let device = Device::default();
    for dora in [false, true] {
        let config = LoraConfig::new(2, 4.0).with_use_dora(dora);
        let lin = LoraLinear::from_linear(LinearConfig::new(6, 5).init(&device), &config).unwrap();
        let w0 = lin.weight.val().into_data();
        let back = lin.merge().unmerge();
        assert_eq!(back.weight.val().into_data(), w0, "linear, dora {dora}");
        let emb = LoraEmbedding::from_embedding(EmbeddingConfig::new(9, 4).init(&device), &config)
            .unwrap();
        let e0 = emb.weight.val().into_data();
        let merged = emb.merge();
        assert_eq!(
            merged.weight.val().into_data(),
            e0,
            "embedding merged, dora {dora}"
        );
        assert_eq!(
            merged.unmerge().weight.val().into_data(),
            e0,
            "embedding, dora {dora}"
        );
    }
}
