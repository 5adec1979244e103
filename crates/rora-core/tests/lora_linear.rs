//! Properties of `LoraLinear`: the factored forward equals the dense formula, merge and
//! unmerge invert each other, a zero `B` changes nothing, and training touches only the
//! adapter.

use burn::module::{Module, Param};
use burn::nn::LinearConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::module::linear;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use proptest::prelude::*;
use rora_core::{LoraConfig, LoraInit, LoraLinear};

fn random(shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn max_abs_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

fn max_abs(a: Tensor<2>) -> f32 {
    a.abs().max().into_scalar::<f32>()
}

/// A layer with random non-zero factors.
fn adapted(d_in: usize, d_out: usize, r: usize, alpha: f64, seed: u64) -> LoraLinear {
    let device = Device::default();
    device.seed(seed);
    let base = LinearConfig::new(d_in, d_out).init(&device);
    LoraLinear::plain(base).with_factors(
        random([r, d_in], &device),
        random([d_out, r], &device),
        alpha / r as f64,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn factored_forward_equals_dense(d_in in 1usize..24, d_out in 1usize..24, r_frac in 0.0f64..1.0, batch in 1usize..6, seed in 0u64..1000) {
        let r = 1 + ((d_in.min(d_out) - 1) as f64 * r_frac) as usize;
        let layer = adapted(d_in, d_out, r, 2.0 * r as f64, seed);
        let device = layer.device();
        let x = random([batch, d_in], &device);
        // x·(W0 + s·Aᵀ·Bᵀ) + bias, with the dense update formed explicitly.
        let w = layer.weight.val() + layer.delta_weight().unwrap();
        let dense = linear(x.clone(), w, layer.bias.as_ref().map(|b| b.val()));
        let got = layer.forward(x);
        let tol = 1e-5 * (1.0 + max_abs(dense.clone()));
        prop_assert!(max_abs_diff(got, dense) <= tol);
    }

    #[test]
    fn merge_then_unmerge_restores_the_weight(d_in in 1usize..32, d_out in 1usize..32, seed in 0u64..1000) {
        let r = 1 + seed as usize % d_in.min(d_out);
        let layer = adapted(d_in, d_out, r, 8.0, seed);
        let w0 = layer.weight.val();
        let delta = layer.delta_weight().unwrap();
        let back = layer.merge().unmerge();
        // float32 round-off of one add and one subtract, relative to |W0| + |ΔW|.
        let tol = 4.0 * f32::EPSILON * (max_abs(w0.clone()) + max_abs(delta));
        prop_assert!(max_abs_diff(back.weight.val(), w0) <= tol);
    }

    #[test]
    fn fresh_adapter_leaves_outputs_unchanged(d_in in 1usize..24, d_out in 1usize..24, seed in 0u64..1000, gaussian in any::<bool>()) {
        let device = Device::default();
        device.seed(seed);
        let base = LinearConfig::new(d_in, d_out).init(&device);
        let x = random([3, d_in], &device);
        let before = base.forward(x.clone());
        let init = if gaussian { LoraInit::Gaussian } else { LoraInit::KaimingUniform };
        let layer = LoraLinear::from_linear(base, &LoraConfig::new(1, 4.0).with_init(init)).unwrap();
        let after = layer.forward(x);
        prop_assert_eq!(after.into_data(), before.into_data());
    }
}

#[test]
fn one_adamw_step_changes_only_the_adapter() {
    let device = Device::default().autodiff();
    device.seed(1);
    let base = LinearConfig::new(8, 6).init(&device);
    let layer = LoraLinear::from_linear(base, &LoraConfig::new(2, 4.0)).unwrap();
    let w0: TensorData = layer.weight.val().into_data();
    let bias: TensorData = layer.bias.as_ref().unwrap().val().into_data();
    let a0 = layer.lora.as_ref().unwrap().a.val().into_data();
    let b0 = layer.lora.as_ref().unwrap().b.val().into_data();

    let x = random([5, 8], &device);
    let loss = layer.forward(x).powf_scalar(2.0).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &layer);
    assert_eq!(grads.len(), 2, "only A and B get gradients");
    let mut optim = AdamWConfig::new().init();
    let layer = optim.step(1e-2, layer, grads);

    assert_eq!(layer.weight.val().into_data(), w0, "W0 bit-identical");
    assert_eq!(
        layer.bias.as_ref().unwrap().val().into_data(),
        bias,
        "bias bit-identical"
    );
    assert_ne!(
        layer.lora.as_ref().unwrap().a.val().into_data(),
        a0,
        "A changed"
    );
    assert_ne!(
        layer.lora.as_ref().unwrap().b.val().into_data(),
        b0,
        "B changed"
    );
}

#[test]
fn plain_layer_matches_burn_linear_and_stays_trainable() {
    let device = Device::default().autodiff();
    let base = LinearConfig::new(5, 3).init(&device);
    let x = random([2, 5], &device);
    let want = base.forward(x.clone());
    let layer = LoraLinear::from(base);
    assert!(layer.weight.is_require_grad());
    assert_eq!(layer.forward(x).into_data(), want.into_data());
    assert_eq!(layer.trainable_params(), 0);
}

#[test]
fn summary_counts_trainable_adapter_params() {
    // require_grad is only meaningful on an autodiff device.
    let device = Device::default().autodiff();
    let layer = LoraLinear::from_linear(
        LinearConfig::new(16, 8).init(&device),
        &LoraConfig::new(4, 8.0),
    )
    .unwrap();
    let s = rora_core::ParamSummary::of(&layer);
    assert_eq!(s.trainable, 4 * (16 + 8));
    // weight, bias, A, B and the one-element scale and merged flag.
    assert_eq!(s.total, 16 * 8 + 8 + 4 * 24 + 2);
    assert!(
        s.to_string()
            .starts_with("trainable params: 96 || all params: 234")
    );
}

#[test]
fn from_weights_takes_burn_layout() {
    let device = Device::default();
    let w = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &device); // [in=2, out=3]
    let layer = LoraLinear::from_weights(w, None);
    assert_eq!((layer.d_input(), layer.d_output()), (2, 3));
    let y = layer.forward(Tensor::<2>::from_floats([[1.0, 1.0]], &device));
    assert_eq!(y.into_data(), TensorData::from([[5.0f32, 7.0, 9.0]]));
    let _ = Param::from_tensor(Tensor::<1>::zeros([1], &device));
}

#[test]
fn merged_state_survives_a_record_round_trip() {
    // W0 is kept from this very layer: `device.seed` is global, so a second `adapted(.., 3)`
    // raced with other tests drawing random numbers in parallel.
    let original = adapted(6, 5, 2, 4.0, 3);
    let w0 = original.weight.val();
    let merged = original.merge();
    let device = merged.device();
    let x = random([4, 6], &device);
    let want = merged.forward(x.clone());
    // A freshly adapted layer of the same shape (not merged) takes the merged record.
    let fresh = adapted(6, 5, 2, 4.0, 99);
    assert!(!fresh.is_merged());
    let loaded = fresh.load_record(merged.clone().into_record());
    assert!(
        loaded.is_merged(),
        "the merged flag is saved with the weight"
    );
    let got = loaded.forward(x.clone());
    let tol = 1e-6 * (1.0 + max_abs(want.clone()));
    assert!(
        max_abs_diff(got, want) <= tol,
        "ΔW added twice after loading"
    );
    // And it unmerges back to the original W0.
    let back = loaded.unmerge();
    assert!(!back.is_merged());
    assert!(max_abs_diff(back.weight.val(), w0.clone()) <= 1e-5 * (1.0 + max_abs(w0)));
}

#[test]
fn merge_and_unload_leaves_a_plain_layer_with_the_same_output() {
    let layer = adapted(6, 5, 2, 4.0, 8);
    let x = random([3, 6], &layer.device());
    let want = layer.forward(x.clone());
    let plain = layer.merge_and_unload();
    assert!(plain.lora.is_none() && !plain.is_merged());
    let got = plain.forward(x);
    assert!(max_abs_diff(got, want.clone()) <= 1e-5 * (1.0 + max_abs(want)));
}
