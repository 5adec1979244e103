//! RoRA's mechanisms: the constraint's value and gradient, rescaling, base-branch dropout,
//! both adapter kinds, and "everything off" = plain LoRA.

use burn::module::{Lora, Module};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor, Tolerance};
use nalgebra::DMatrix;
use rora_core::rora::{LayerSelection, RescaleTarget, Rora, RoraConfig, omega};
use rora_core::{
    AdapterOptions, LoraConfig, LoraLinear, LoraModel, RoraError, Targets, adapted_layers,
    adapter_from_model, apply_adapter, apply_lora_targets, convert,
};

#[derive(Module, LoraModel, Debug)]
struct Block {
    query: LoraLinear,
    value: LoraLinear,
    ffn: LoraLinear,
}

#[derive(Module, LoraModel, Debug)]
struct Net {
    blocks: Vec<Block>,
}

impl Net {
    fn new(blocks: usize, d: usize, device: &Device) -> Self {
        let lin = || LoraLinear::from(LinearConfig::new(d, d).init(device));
        Net {
            blocks: (0..blocks)
                .map(|_| Block {
                    query: lin(),
                    value: lin(),
                    ffn: lin(),
                })
                .collect(),
        }
    }

    fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        for b in &self.blocks {
            x = b
                .ffn
                .forward(b.query.forward(x.clone()).tanh() + b.value.forward(x));
        }
        x
    }
}

/// An adapted net whose B factors are random (not the zero init), so updates are non-zero.
fn trained_net(blocks: usize, d: usize, r: usize, device: &Device) -> Net {
    let net = Net::new(blocks, d, device);
    let targets = Targets::parse(&["query", "value"]).unwrap();
    let net = rora_core::inject_lora(net, &targets, &LoraConfig::new(r, 2.0 * r as f64)).unwrap();
    net.map_lora_linears("", &mut |_, l| match l.lora.is_some() {
        true => {
            let (a, b) = {
                let f = l.lora.as_ref().unwrap();
                (
                    f.a.val().inner(),
                    Tensor::random(
                        f.b.shape().dims::<2>(),
                        Distribution::Normal(0.0, 0.3),
                        device,
                    ),
                )
            };
            let s = l.scale().unwrap();
            l.with_factors(a, b, s)
        }
        false => l,
    })
}

fn orthonormal(rows: usize, cols: usize, seed: u64) -> DMatrix<f64> {
    let m = DMatrix::<f64>::from_fn(rows, cols, |i, j| {
        ((i * 31 + j * 17 + seed as usize * 7) as f64 * 0.7).sin()
    });
    m.qr().q().columns(0, cols).into_owned()
}

fn to_tensor(m: &DMatrix<f64>, device: &Device) -> Tensor<2> {
    convert::dmatrix_to_tensor(m, device)
}

fn scalar(t: Tensor<1>) -> f64 {
    t.inner().into_scalar::<f64>()
}

#[test]
fn omega_gradient_matches_central_differences() {
    let plain = Device::default();
    let device = plain.clone().autodiff();
    let (d_in, d_out, r, k) = (7, 5, 3, 2);
    let uk = orthonormal(d_out, k, 1);
    let vk = orthonormal(d_in, k, 2);
    let a0 = DMatrix::<f64>::from_fn(r, d_in, |i, j| ((i + 2 * j) as f64).cos());
    let b0 = DMatrix::<f64>::from_fn(d_out, r, |i, j| ((3 * i + j) as f64).sin());

    let a = to_tensor(&a0, &device).require_grad();
    let b = to_tensor(&b0, &device).require_grad();
    let value = omega(
        to_tensor(&uk, &device),
        to_tensor(&vk, &device),
        a.clone(),
        b.clone(),
    );
    let grads = value.backward();
    let ga = convert::tensor_to_dmatrix(a.grad(&grads).unwrap());
    let gb = convert::tensor_to_dmatrix(b.grad(&grads).unwrap());

    let f = |a: &DMatrix<f64>, b: &DMatrix<f64>| {
        scalar(omega(
            to_tensor(&uk, &plain),
            to_tensor(&vk, &plain),
            to_tensor(a, &plain),
            to_tensor(b, &plain),
        ))
    };
    let eps = 1e-2;
    for i in 0..r {
        for j in 0..d_in {
            let (mut p, mut m) = (a0.clone(), a0.clone());
            p[(i, j)] += eps;
            m[(i, j)] -= eps;
            let fd = (f(&p, &b0) - f(&m, &b0)) / (2.0 * eps);
            approx::assert_abs_diff_eq!(ga[(i, j)], fd, epsilon = 2e-3);
        }
    }
    for i in 0..d_out {
        for j in 0..r {
            let (mut p, mut m) = (b0.clone(), b0.clone());
            p[(i, j)] += eps;
            m[(i, j)] -= eps;
            let fd = (f(&a0, &p) - f(&a0, &m)) / (2.0 * eps);
            approx::assert_abs_diff_eq!(gb[(i, j)], fd, epsilon = 2e-3);
        }
    }
}

#[test]
fn omega_vanishes_off_the_top_subspaces_and_is_weight_decay_at_full_rank() {
    let device = Device::default();
    let (d, r, k) = (9, 3, 4);
    let uk = orthonormal(d, k, 3);
    let vk = orthonormal(d, k, 4);
    let a = DMatrix::<f64>::from_fn(r, d, |i, j| ((i * 5 + j) as f64).sin());
    let b = DMatrix::<f64>::from_fn(d, r, |i, j| ((i + 7 * j) as f64).cos());
    // Project A's rows and B's columns onto the orthogonal complements.
    let eye = DMatrix::<f64>::identity(d, d);
    let a_perp = &a * (&eye - &vk * vk.transpose());
    let b_perp = (&eye - &uk * uk.transpose()) * &b;
    let zero = scalar(omega(
        to_tensor(&uk, &device),
        to_tensor(&vk, &device),
        to_tensor(&a_perp, &device),
        to_tensor(&b_perp, &device),
    ));
    approx::assert_abs_diff_eq!(zero, 0.0, epsilon = 1e-5);

    // k = full rank on a square layer: Ω = ‖B‖F² + ‖A‖F².
    let full_u = orthonormal(d, d, 5);
    let full_v = orthonormal(d, d, 6);
    let decay = scalar(omega(
        to_tensor(&full_u, &device),
        to_tensor(&full_v, &device),
        to_tensor(&a, &device),
        to_tensor(&b, &device),
    ));
    approx::assert_relative_eq!(
        decay,
        b.norm_squared() + a.norm_squared(),
        max_relative = 1e-5
    );
}

#[test]
fn prepare_rejects_full_rank_k_and_merged_layers_and_takes_native_adapters() {
    let device = Device::default();
    let net = trained_net(1, 6, 2, &device);
    assert!(matches!(
        Rora::prepare(&net, RoraConfig::new().with_top_k(6)),
        Err(RoraError::TopKTooLarge { k: 6, max: 6, .. })
    ));
    let mut merged = net.clone();
    merged.blocks[0].value = merged.blocks[0].value.clone().merge();
    assert!(matches!(
        Rora::prepare(&merged, RoraConfig::new().with_top_k(2)),
        Err(RoraError::Merged { ref path }) if path == "blocks.0.value"
    ));

    let native = LinearConfig::new(6, 6).init(&device);
    #[derive(Module, Debug)]
    struct One {
        query: Linear,
    }
    let one = apply_lora_targets(
        One { query: native },
        &Targets::parse(&["query"]).unwrap(),
        Lora::new(2, 4.0),
    )
    .unwrap();
    // RoRA's defaults work on a burn-native model (Cl is a layer setting, not RoRA's).
    assert!(Rora::prepare(&one, RoraConfig::new().with_top_k(2)).is_ok());
}

#[test]
fn rescaling_hits_the_target_and_keeps_subspaces_and_other_layers() {
    let device = Device::default();
    device.seed(11);
    let net = trained_net(4, 12, 3, &device);
    // The default selection is every adapted layer: query and value of four blocks.
    let all = Rora::prepare(&net, RoraConfig::new().with_top_k(4)).unwrap();
    assert_eq!(all.rescale_selection(&net).unwrap().len(), 8);
    // The paper's BERT choice: query and value of the last three blocks.
    let last3 = LayerSelection::patterns(["query", "value"]).with_last_blocks(3);
    let rora = Rora::prepare(
        &net,
        RoraConfig::new().with_top_k(4).with_rescale_layers(last3),
    )
    .unwrap();
    let before = adapted_layers(&net);
    let (rescaled, report) = rora.rescale(net.clone()).unwrap();
    let after = adapted_layers(&rescaled);
    let selected: Vec<&str> = report.layers.iter().map(|l| l.path.as_str()).collect();
    assert_eq!(selected.len(), 6);
    assert!(selected.iter().all(|p| !p.starts_with("blocks.0.")));

    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.path, a.path);
        let s = b.scale.unwrap();
        let dense = |l: &rora_core::AdaptedLayer| (l.b_matrix() * l.a_matrix()) * s;
        let (d0, d1) = (dense(b), dense(a));
        if selected.contains(&b.path.as_str()) {
            let w0 = b.base_matrix();
            let ratio = d1.clone().svd(false, false).singular_values[0]
                / w0.svd(false, false).singular_values[0];
            approx::assert_abs_diff_eq!(ratio, 1.0, epsilon = 1e-4);
            assert_eq!(a.rank(), b.rank());
            // Same singular subspaces: ΔW' is a positive multiple of ΔW.
            let c = d1.norm() / d0.norm();
            assert!((&d1 - &d0 * c).norm() <= 1e-4 * d1.norm(), "{}", b.path);
        } else {
            assert_eq!(
                a.a.clone().into_data(),
                b.a.clone().into_data(),
                "{} A bit-identical",
                b.path
            );
            assert_eq!(
                a.b.clone().into_data(),
                b.b.clone().into_data(),
                "{} B bit-identical",
                b.path
            );
        }
    }
    // Other targets.
    let (_, r2) = rora
        .rescale_with(net.clone(), RescaleTarget::Ratio(0.5))
        .unwrap();
    // The reported ratio is that of the float32 factors as written.
    assert!(
        r2.layers
            .iter()
            .all(|l| (l.ratio_after() - 0.5).abs() < 1e-5),
        "{r2}"
    );
    let (_, r3) = rora.rescale_with(net, RescaleTarget::Factor(3.0)).unwrap();
    assert!(r3.layers.iter().all(|l| (l.factor - 3.0).abs() < 1e-12));
}

#[test]
fn base_dropout_is_off_in_evaluation_and_unbiased_in_training() {
    let device = Device::default().autodiff();
    device.seed(5);
    let base = LinearConfig::new(4, 3).init(&device);
    let layer =
        LoraLinear::from_linear(base, &LoraConfig::new(2, 4.0).with_base_dropout(0.25)).unwrap();
    let row = Tensor::<2>::from_floats([[0.5, -1.0, 2.0, 0.25]], &device);
    let x = row.clone().repeat_dim(0, 20_000);
    let expected = layer.valid().forward(row.inner());

    // Evaluation (no autodiff): deterministic, equal to the base layer (B = 0).
    let eval = layer.valid();
    let x_eval = x.clone().inner();
    assert_eq!(
        eval.forward(x_eval.clone()).into_data(),
        eval.forward(x_eval).into_data()
    );

    // Training: a quarter of the base outputs are dropped, the rest scaled by 1/0.75;
    // the mean over many rows is the undropped output.
    let y = layer.forward(x).inner();
    let zeros =
        y.clone().equal_elem(0.0).int().sum().into_scalar::<i64>() as f64 / (20_000.0 * 3.0);
    approx::assert_abs_diff_eq!(zeros, 0.25, epsilon = 0.01);
    let mean = y.mean_dim(0);
    let rel = (mean - expected.clone()).abs().max().into_scalar::<f32>()
        / expected.abs().max().into_scalar::<f32>();
    assert!(rel < 0.03, "mean off by {rel}");
}

#[derive(Module, Debug)]
struct NativeNet {
    query: Linear,
    value: Linear,
}

#[derive(Module, LoraModel, Debug)]
struct OwnNet {
    query: LoraLinear,
    value: LoraLinear,
}

#[test]
fn the_same_rora_works_on_lora_linear_and_apply_lora_models() {
    let device = Device::default();
    device.seed(9);
    let (d, r) = (10, 2);
    let q = LinearConfig::new(d, d).init(&device);
    let v = LinearConfig::new(d, d).init(&device);
    let own = OwnNet {
        query: LoraLinear::from(q.clone()),
        value: LoraLinear::from(v.clone()),
    };
    let own = trained_own(own, r, &device);
    let lora = Lora::new(r, 2.0 * r as f64);
    let native = apply_lora_targets(
        NativeNet { query: q, value: v },
        &Targets::parse(&["query", "value"]).unwrap(),
        lora.clone(),
    )
    .unwrap();
    // Same factors in both.
    let options = AdapterOptions::native(&lora);
    let adapter = adapter_from_model(&own, &AdapterOptions::default()).unwrap();
    let native = apply_adapter(native, &adapter, &options).unwrap();

    let config = RoraConfig::new()
        .with_top_k(3)
        .with_native_lora_scale(Some(lora.alpha / lora.rank as f64));
    let rora_own = Rora::prepare(&own, config.clone()).unwrap();
    let rora_native = Rora::prepare(&native, config).unwrap();
    approx::assert_relative_eq!(
        scalar(rora_own.penalty(&own)),
        scalar(rora_native.penalty(&native)),
        max_relative = 1e-5
    );
    // One prepared value serves both models (the caches depend only on W0 and paths).
    approx::assert_relative_eq!(
        scalar(rora_own.penalty(&native)),
        scalar(rora_own.penalty(&own)),
        max_relative = 1e-5
    );

    let (own2, rep_own) = rora_own.rescale(own).unwrap();
    let (native2, rep_native) = rora_own.rescale(native).unwrap();
    for (a, b) in rep_own.layers.iter().zip(&rep_native.layers) {
        approx::assert_relative_eq!(a.factor, b.factor, max_relative = 1e-4);
    }
    let x = Tensor::<2>::random([4, d], Distribution::Normal(0.0, 1.0), &device);
    let y_own = own2.value.forward(own2.query.forward(x.clone()));
    let y_native = native2.value.forward(native2.query.forward(x));
    let diff = (y_own.clone() - y_native).abs().max().into_scalar::<f32>();
    assert!(
        diff <= 1e-4 * (1.0 + y_own.abs().max().into_scalar::<f32>()),
        "{diff}"
    );
    let reports = rora_own.report(&own2).unwrap();
    assert_eq!(reports.len(), 2);
    assert!(
        reports
            .iter()
            .all(|r| (r.strength_ratio - 1.0).abs() < 1e-4)
    );
}

fn trained_own(net: OwnNet, r: usize, device: &Device) -> OwnNet {
    net.map_lora_linears("", &mut |_, l| {
        let (d_in, d_out) = (l.d_input(), l.d_output());
        l.with_factors(
            Tensor::random([r, d_in], Distribution::Normal(0.0, 0.5), device),
            Tensor::random([d_out, r], Distribution::Normal(0.0, 0.5), device),
            2.0,
        )
    })
}

/// One layer of the hand-written reference: `W0` (burn layout), bias, and `(A, B, s)` when
/// adapted.
type RefLayer = (
    Tensor<2>,
    Option<Tensor<1>>,
    Option<(Tensor<2>, Tensor<2>, f64)>,
);

/// Plain LoRA written out by hand with raw tensors, independent of `LoraLinear` and of
/// RoRA: `y = x·W0 + b + s·(x·Aᵀ)·Bᵀ`, the same net as `Net::forward`.
fn plain_lora_forward(x: Tensor<2>, layers: &[RefLayer]) -> Tensor<2> {
    let lin = |x: Tensor<2>, i: usize| {
        let (w, b, ab) = &layers[i];
        let mut y = x.clone().matmul(w.clone());
        if let Some(b) = b {
            y = y + b.clone().unsqueeze_dim(0);
        }
        if let Some((a, bb, s)) = ab {
            y = y + x
                .matmul(a.clone().transpose())
                .mul_scalar(*s)
                .matmul(bb.clone().transpose());
        }
        y
    };
    let mut x = x;
    for block in 0..layers.len() / 3 {
        let (q, v, f) = (3 * block, 3 * block + 1, 3 * block + 2);
        x = lin(lin(x.clone(), q).tanh() + lin(x, v), f);
    }
    x
}

#[test]
fn all_off_reproduces_an_independent_plain_lora() {
    let device = Device::default().autodiff();
    device.seed(21);
    let net = trained_net(2, 8, 2, &device);
    let rora = Rora::prepare(&net, RoraConfig::plain_lora().with_top_k(3)).unwrap();
    let x = Tensor::<2>::random([6, 8], Distribution::Normal(0.0, 1.0), &device);

    // The reference: fresh leaves with the same values, the formula written out.
    let leaf = |t: Tensor<2>| Tensor::<2>::from_data(t.into_data(), &device).require_grad();
    let mut reference = Vec::new();
    let _ = net.clone().map_lora_linears("", &mut |_, l| {
        let w = Tensor::<2>::from_data(l.weight.val().into_data(), &device);
        let b = l
            .bias
            .as_ref()
            .map(|b| Tensor::<1>::from_data(b.val().into_data(), &device));
        let ab = l
            .lora
            .as_ref()
            .map(|f| (leaf(f.a.val()), leaf(f.b.val()), f.scale_value()));
        reference.push((w, b, ab));
        l
    });
    let ref_out = plain_lora_forward(x.clone(), &reference);
    let rora_out = net.forward(x);
    let tol = Tolerance::rel_abs(1e-6, 1e-6);
    rora_out
        .clone()
        .into_data()
        .assert_approx_eq::<f32>(&ref_out.clone().into_data(), tol);

    let g_ref = ref_out.powf_scalar(2.0).mean().backward();
    let g_rora = (rora_out.powf_scalar(2.0).mean() + rora.penalty(&net)).backward();
    let layers = adapted_layers(&net);
    let with_adapter: Vec<_> = reference
        .iter()
        .filter_map(|(_, _, ab)| ab.as_ref())
        .collect();
    assert_eq!(layers.len(), with_adapter.len());
    for (layer, (a, b, _)) in layers.iter().zip(with_adapter) {
        for (got, want) in [(&layer.a, a), (&layer.b, b)] {
            got.grad(&g_rora)
                .unwrap()
                .into_data()
                .assert_approx_eq::<f32>(&want.grad(&g_ref).unwrap().into_data(), tol);
        }
    }
    // And no rescaling: the factors come back bit-identical.
    let (unchanged, report) = rora.rescale(net.clone()).unwrap();
    assert!(report.layers.is_empty());
    for (a, b) in adapted_layers(&unchanged).iter().zip(&layers) {
        assert_eq!(a.a.clone().into_data(), b.a.clone().into_data());
        assert_eq!(a.b.clone().into_data(), b.b.clone().into_data());
    }
}

#[test]
fn cache_round_trips_and_bad_settings_are_errors() {
    let device = Device::default();
    let net = trained_net(1, 6, 2, &device);
    let rora = Rora::prepare(&net, RoraConfig::new().with_top_k(2)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rora-cache.json");
    rora.save_cache(&path).unwrap();
    let back = Rora::load_cache(&path, &device).unwrap();
    approx::assert_relative_eq!(
        scalar(back.penalty(&net)),
        scalar(rora.penalty(&net)),
        max_relative = 1e-6
    );
    std::fs::write(&path, b"{not json").unwrap();
    assert!(matches!(
        Rora::load_cache(&path, &device),
        Err(RoraError::Cache { path: ref p, .. }) if p == &path
    ));
    assert!(matches!(
        Rora::prepare(&net, RoraConfig::new().with_top_k(2).with_lambda(-1.0)),
        Err(RoraError::InvalidSetting(_))
    ));
    for bad in [f64::NAN, 0.0, -1.0] {
        assert!(matches!(
            Rora::prepare(
                &net,
                RoraConfig::new()
                    .with_top_k(2)
                    .with_rescale(RescaleTarget::Ratio(bad))
            ),
            Err(RoraError::InvalidSetting(_))
        ));
    }
    let plain = Net::new(1, 6, &device);
    assert!(matches!(
        Rora::prepare(&plain, RoraConfig::new()),
        Err(rora_core::RoraError::NoAdaptedLayers)
    ));
}

#[test]
fn extensions_need_and_use_a_clean_subspace() {
    let device = Device::default().autodiff();
    device.seed(2);
    let net = trained_net(1, 8, 2, &device);
    let config = RoraConfig::plain_lora()
        .with_top_k(2)
        .with_clean_strength(Some(rora_core::rora::CleanStrengthConfig::new(2.0)))
        .with_trigger_cancellation(Some(rora_core::rora::TriggerCancellationConfig::new()));
    let mut rora = Rora::prepare(&net, config).unwrap();
    assert!(
        matches!(
            rora.try_penalty(&net),
            Err(RoraError::NoCleanSubspace { .. })
        ),
        "no clean subspace yet"
    );
    for layer in adapted_layers(&net) {
        rora.set_clean_subspace(&net, &layer.path, orthonormal(8, 3, 7))
            .unwrap();
    }
    let p = rora.try_penalty(&net).unwrap();
    let value = scalar(p.clone());
    assert!(value.is_finite() && value > 0.0);
    let grads = p.backward();
    let layer = &adapted_layers(&net)[0];
    assert!(layer.a.grad(&grads).is_some() && layer.b.grad(&grads).is_some());
}
