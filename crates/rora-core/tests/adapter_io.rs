//! Adapters in and out of models: nothing non-finite is saved or applied, a failed save
//! keeps the previous files, and a save/load round trip reproduces the outputs.

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::{Device, Distribution, Tensor};
use rora_core::peft::{CONFIG_FILE, WEIGHTS_FILE};
use rora_core::{
    AdapterError, AdapterOptions, LoraConfig, LoraLinear, LoraModel, Targets, adapter_from_model,
    apply_adapter, inject_lora, load_adapter, save_adapter,
};

#[derive(Module, LoraModel, Debug)]
struct Net {
    fc1: LoraLinear,
    fc2: LoraLinear,
}

fn net(device: &Device) -> Net {
    device.seed(4);
    let n = Net {
        fc1: LinearConfig::new(6, 5).init(device).into(),
        fc2: LinearConfig::new(5, 3).init(device).into(),
    };
    let n = inject_lora(
        n,
        &Targets::parse(&["fc1", "fc2"]).unwrap(),
        &LoraConfig::new(2, 4.0),
    )
    .unwrap();
    // Non-zero B, so the adapter changes the output.
    let b = |l: LoraLinear| {
        let f = l.lora.as_ref().unwrap();
        let (a, s) = (f.a.val(), f.scale_value());
        let shape = f.b.shape().dims::<2>();
        l.with_factors(
            a,
            Tensor::random(shape, Distribution::Normal(0.0, 1.0), device),
            s,
        )
    };
    Net {
        fc1: b(n.fc1),
        fc2: b(n.fc2),
    }
}

fn forward(n: &Net, x: Tensor<2>) -> Tensor<2> {
    n.fc2.forward(n.fc1.forward(x).tanh())
}

#[test]
fn save_then_load_reproduces_the_outputs() {
    let device = Device::default();
    let trained = net(&device);
    let dir = tempfile::tempdir().unwrap();
    save_adapter(&trained, dir.path(), &AdapterOptions::default()).unwrap();
    // The same base with other adapters (zero, scale 1): loading must bring back the saved
    // factors and scales.
    let zero = |l: LoraLinear| {
        let (d_in, d_out) = (l.d_input(), l.d_output());
        l.with_factors(
            Tensor::zeros([2, d_in], &device),
            Tensor::zeros([d_out, 2], &device),
            1.0,
        )
    };
    let fresh = Net {
        fc1: zero(trained.fc1.clone()),
        fc2: zero(trained.fc2.clone()),
    };
    let loaded = load_adapter(fresh, dir.path(), &AdapterOptions::default()).unwrap();
    let x = Tensor::<2>::random([4, 6], Distribution::Normal(0.0, 1.0), &device);
    let diff = (forward(&loaded, x.clone()) - forward(&trained, x))
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(diff < 1e-6, "{diff}");
}

#[test]
fn a_non_finite_factor_is_neither_saved_nor_applied() {
    let device = Device::default();
    let good = net(&device);
    let dir = tempfile::tempdir().unwrap();
    save_adapter(&good, dir.path(), &AdapterOptions::default()).unwrap();
    let files = || [CONFIG_FILE, WEIGHTS_FILE].map(|f| std::fs::read(dir.path().join(f)).unwrap());
    let before = files();

    let mut bad = net(&device);
    let f = bad.fc2.lora.as_ref().unwrap();
    let (b, s) = (f.b.val(), f.scale_value());
    let nan_a = Tensor::<2>::full([2, 5], f32::NAN, &device);
    bad.fc2 = bad.fc2.with_factors(nan_a, b, s);
    let err = save_adapter(&bad, dir.path(), &AdapterOptions::default()).unwrap_err();
    assert!(
        matches!(err, AdapterError::NonFiniteOutput { ref key, .. } | AdapterError::NonFinite { ref key, .. }
            if key == "base_model.model.fc2.lora_A.weight"),
        "{err}"
    );
    assert!(before == files(), "the previous adapter files were changed");

    // The same adapter, built in memory, is refused by apply_adapter.
    let mut adapter = adapter_from_model(&good, &AdapterOptions::default()).unwrap();
    adapter.layers.get_mut("fc1").unwrap().a.data[3] = f32::INFINITY;
    let err = apply_adapter(net(&device), &adapter, &AdapterOptions::default()).unwrap_err();
    assert!(
        matches!(err, AdapterError::NonFinite { ref key, .. } if key == "base_model.model.fc1.lora_A.weight"),
        "{err}"
    );
}
