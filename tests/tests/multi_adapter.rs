//! Several named adapters per model: PEFT's multi-adapter folder
//! (`tests/fixtures/peft-mlp-two-adapters`: `default` at the root, `other`, `mix_linear`,
//! `mix_cat`, `mix_svd` in subfolders) loads, every adapter switched on gives PEFT's outputs,
//! rora's weighted combinations equal PEFT's `add_weighted_adapter`, and `cat` of two
//! adapters is exactly the weighted sum of both.

use burn::tensor::{Device, Tolerance};
use rora::core::multi::NamedAdapters;
use rora::core::peft::{
    AdapterSet, Combination, TensorFile, WEIGHTS_FILE, adapter_dir, weighted_adapter,
};
use rora::core::rora::{Rora, RoraConfig};
use rora_tests::{Mlp, fixture_dir, load_mlp, read_matrix, rel_error};

const FIXTURE: &str = "peft-mlp-two-adapters";
const WEIGHTS: [f64; 2] = [0.7, -0.4];
const TOL: f64 = 1e-5;

fn io() -> TensorFile {
    TensorFile::open(&fixture_dir(FIXTURE).join("io.safetensors")).unwrap()
}

fn set() -> AdapterSet {
    AdapterSet::read(&fixture_dir(FIXTURE).join("adapter")).unwrap()
}

#[test]
fn every_named_adapter_of_the_peft_folder_gives_peft_outputs() {
    let device = Device::default();
    let io = io();
    let x = read_matrix(&io, "x", &device);
    let mut adapters = NamedAdapters::from_set(set());
    assert_eq!(
        adapters.names(),
        ["default", "mix_cat", "mix_linear", "mix_svd", "other"]
    );
    let mut model = load_mlp(FIXTURE, &device);
    for name in [
        "default",
        "other",
        "mix_linear",
        "mix_cat",
        "mix_svd",
        "default",
    ] {
        model = adapters.set_active(model, name).unwrap();
        assert_eq!(adapters.active(), Some(name));
        let err = rel_error(
            model.forward(x.clone()),
            read_matrix(&io, &format!("y_{name}"), &device),
        );
        assert!(err < TOL, "{name}: rel error {err}");
    }
    // `other` adapts fc1 only: switching to it removed default's fc2 adapter.
    let model = adapters.set_active(model, "other").unwrap();
    assert!(model.fc1.lora.is_some() && model.fc2.lora.is_none());
    // Disabled: the base model; enabled again: the adapter.
    let model = adapters.disable(model);
    let err = rel_error(
        model.forward(x.clone()),
        read_matrix(&io, "y_base", &device),
    );
    assert!(err < TOL, "disabled: rel error {err}");
    let model = adapters.enable(model);
    let err = rel_error(
        model.forward(x.clone()),
        read_matrix(&io, "y_other", &device),
    );
    assert!(err < TOL, "enabled again: rel error {err}");
    // Deleting the active adapter removes it from the model.
    let model = adapters.delete(model, "other").unwrap();
    assert_eq!(adapters.active(), None);
    assert!(model.fc1.lora.is_none());
    let err = rel_error(model.forward(x), read_matrix(&io, "y_base", &device));
    assert!(err < TOL, "deleted: rel error {err}");
    assert!(!adapters.names().contains(&"other".to_string()));
}

#[test]
fn an_unknown_adapter_name_is_an_error_listing_the_names() {
    let device = Device::default();
    let mut adapters = NamedAdapters::from_set(set());
    let e = adapters
        .set_active(load_mlp(FIXTURE, &device), "nope")
        .unwrap_err();
    assert!(
        matches!(&e, rora::AdapterError::UnknownAdapter { name, available, .. }
            if name == "nope" && available.contains(&"mix_cat".to_string())),
        "{e}"
    );
    let e = adapters
        .delete(load_mlp(FIXTURE, &device), "nope")
        .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let e = AdapterSet::read_one(
        &fixture_dir(FIXTURE).join("adapter"),
        "nope",
        &Default::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("default, mix_cat"), "{e}");
    let e = adapters
        .add("other", set().get("other").unwrap().clone())
        .unwrap_err();
    assert!(
        matches!(e, rora::AdapterError::DuplicateAdapter { .. }),
        "{e}"
    );
}

#[test]
fn weighted_combinations_equal_peft_add_weighted_adapter() {
    let set = set();
    let parts = [(&set["default"], WEIGHTS[0]), (&set["other"], WEIGHTS[1])];
    for (name, combination) in [
        ("mix_linear", Combination::Linear),
        ("mix_cat", Combination::Cat),
        ("mix_svd", Combination::Svd { rank: None }),
    ] {
        let ours = weighted_adapter(&parts, combination).unwrap();
        let theirs = &set[name];
        assert_eq!(ours.config.r, theirs.config.r, "{name}");
        assert_eq!(ours.config.lora_alpha, theirs.config.lora_alpha, "{name}");
        assert_eq!(
            ours.config.target_modules, theirs.config.target_modules,
            "{name}"
        );
        assert_eq!(
            ours.layers.keys().collect::<Vec<_>>(),
            theirs.layers.keys().collect::<Vec<_>>()
        );
        for (path, f) in &ours.layers {
            let g = &theirs.layers[path];
            assert_eq!(
                (f.a.shape(), f.b.shape()),
                (g.a.shape(), g.b.shape()),
                "{name} {path}"
            );
            let update = |f: &rora::core::peft::LayerFactors| f.b.to_dmatrix() * f.a.to_dmatrix();
            let (u, v) = (update(f), update(g));
            let err = (&u - &v).abs().max() / v.abs().max();
            assert!(err < TOL, "{name} {path}: update rel error {err}");
            if combination != (Combination::Svd { rank: None }) {
                // linear and cat are defined factor by factor: the same factors as PEFT's.
                for (x, y) in [(&f.a, &g.a), (&f.b, &g.b)] {
                    let err = (x.to_dmatrix() - y.to_dmatrix()).abs().max();
                    assert!(err < 1e-6, "{name} {path}: factor error {err}");
                }
            }
        }
    }
}

#[test]
fn cat_of_two_adapters_is_the_sum_of_both() {
    // Merged, the `cat` combination is W0 + 0.7·ΔW_default − 0.4·ΔW_other exactly (float32
    // round-off), layer by layer, and so are its outputs.
    let device = Device::default();
    let set = set();
    let mix = weighted_adapter(
        &[(&set["default"], WEIGHTS[0]), (&set["other"], WEIGHTS[1])],
        Combination::Cat,
    )
    .unwrap();
    let mut adapters = NamedAdapters::from_set(set.clone());
    adapters.add("ours", mix).unwrap();
    let model = adapters
        .set_active(load_mlp(FIXTURE, &device), "ours")
        .unwrap();
    let base = load_mlp(FIXTURE, &device);
    for (path, layer, w0) in [
        ("fc1", &model.fc1, &base.fc1),
        ("fc2", &model.fc2, &base.fc2),
    ] {
        let mut want = w0.weight.val();
        for (name, w) in [("default", WEIGHTS[0]), ("other", WEIGHTS[1])] {
            if let Some(f) = set[name].layers.get(path) {
                let s = set[name].scale_for(path);
                let d = f.b.to_dmatrix() * f.a.to_dmatrix() * (s * w);
                want = want + rora::core::convert::dmatrix_to_tensor(&d.transpose(), &device);
            }
        }
        layer
            .adapted_weight()
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::rel_abs(1e-5, 1e-6));
    }
    let io = io();
    let x = read_matrix(&io, "x", &device);
    let err = rel_error(model.forward(x), read_matrix(&io, "y_mix_cat", &device));
    assert!(err < TOL, "rel error {err}");
}

#[test]
fn saved_sets_have_peft_layout_keys_and_shapes_and_keep_changes_made_while_active() {
    let device = Device::default();
    let fixture = fixture_dir(FIXTURE).join("adapter");
    let mut adapters = NamedAdapters::from_set(set());
    // Rescale `default` (RoRA's Pt) while it is active, then switch away and back.
    let model = adapters
        .set_active(load_mlp(FIXTURE, &device), "default")
        .unwrap();
    let rora = Rora::prepare(&model, RoraConfig::new().with_top_k(3)).unwrap();
    let (model, _) = rora.rescale(model).unwrap();
    let rescaled_a = model.fc1.lora.as_ref().unwrap().a.val();
    let model = adapters.set_active(model, "other").unwrap();
    let model: Mlp = adapters.set_active(model, "default").unwrap();
    model
        .fc1
        .lora
        .as_ref()
        .unwrap()
        .a
        .val()
        .into_data()
        .assert_approx_eq::<f32>(&rescaled_a.into_data(), Tolerance::rel_abs(0.0, 0.0));

    let dir = tempfile::tempdir().unwrap();
    adapters.save(&model, dir.path()).unwrap();
    let back = AdapterSet::read(dir.path()).unwrap();
    assert_eq!(back.names(), set().names());
    for name in back.names() {
        let ours = TensorFile::open(&adapter_dir(dir.path(), &name).join(WEIGHTS_FILE)).unwrap();
        let theirs = TensorFile::open(&adapter_dir(&fixture, &name).join(WEIGHTS_FILE)).unwrap();
        assert_eq!(ours.names(), theirs.names(), "{name}");
        for key in theirs.names() {
            assert_eq!(
                ours.info(key).unwrap(),
                theirs.info(key).unwrap(),
                "{name}: {key}"
            );
        }
    }
    // Only `default` changed (its Pt), every other adapter is as PEFT wrote it.
    let original = set();
    for name in back.names() {
        let same = back[&name as &str] == original[&name as &str];
        assert_eq!(same, name != "default", "{name}");
    }
}
