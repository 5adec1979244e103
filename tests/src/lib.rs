//! Shared helpers for rora's cross-crate integration tests: the two-layer MLP of the PEFT
//! fixtures (as a [`LoraModel`] and with burn's own `Linear`s), fixture loading and the
//! relative-error measure of the contract.
//!
//! The workspace README's Rust code is compiled and run here as a doctest
//! (`ReadmeDoctests`, compiled only under `cfg(doctest)`), so the README cannot drift from the API.

use std::path::PathBuf;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rora::core::peft::{HostMatrix, TensorFile};
use rora::{LoraEmbedding, LoraLinear, LoraModel};

/// The folder of fixture `name` (`peft-mlp` or `peft-mlp-rslora`): `fixtures/<name>` in
/// this crate, made by `fixtures/make_fixtures.py`.
pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The fixtures' model: `y = fc2(tanh(fc1(x)))`.
#[derive(Module, LoraModel, Debug)]
pub struct Mlp {
    /// First layer.
    pub fc1: LoraLinear,
    /// Second layer.
    pub fc2: LoraLinear,
}

impl Mlp {
    /// `[batch, in] → [batch, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.fc2.forward(self.fc1.forward(x).tanh())
    }
}

/// The same MLP with burn's plain `Linear` (for `apply_lora`).
#[derive(Module, Debug)]
pub struct NativeMlp {
    /// First layer.
    pub fc1: Linear,
    /// Second layer.
    pub fc2: Linear,
}

impl NativeMlp {
    /// `[batch, in] → [batch, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.fc2.forward(self.fc1.forward(x).tanh())
    }
}

/// A host matrix as a tensor.
pub fn tensor(m: &HostMatrix, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(m.data.clone(), [m.rows, m.cols]), device)
}

/// Read `name` from a safetensors file as a tensor of any rank ≤ 2.
pub fn read_matrix(file: &TensorFile, name: &str, device: &Device) -> Tensor<2> {
    let t = file.tensor(name).unwrap();
    let shape = match t.shape.as_slice() {
        [n] => [1, *n],
        [r, c] => [*r, *c],
        other => panic!("{name}: unexpected shape {other:?}"),
    };
    Tensor::from_data(TensorData::new(t.data, shape), device)
}

fn linear_from(file: &TensorFile, name: &str, device: &Device) -> Linear {
    // PyTorch stores weight [out, in]; burn's Linear wants [in, out].
    let w = read_matrix(file, &format!("{name}.weight"), device).transpose();
    let b = read_matrix(file, &format!("{name}.bias"), device);
    let [_, out] = b.dims();
    Linear {
        weight: Param::from_tensor(w),
        bias: Some(Param::from_tensor(b.reshape([out]))),
    }
}

/// The fixture's base model as an [`Mlp`] of plain (adapter-less) `LoraLinear`s.
pub fn load_mlp(fixture: &str, device: &Device) -> Mlp {
    let file = TensorFile::open(&fixture_dir(fixture).join("model.safetensors")).unwrap();
    Mlp {
        fc1: linear_from(&file, "fc1", device).into(),
        fc2: linear_from(&file, "fc2", device).into(),
    }
}

/// The embedding fixtures' model (`peft-embedding`, `peft-embedding-dora`):
/// `y = fc2(tanh(fc1(emb(ids))))`.
#[derive(Module, LoraModel, Debug)]
pub struct EmbMlp {
    /// Token embedding.
    pub emb: LoraEmbedding,
    /// First layer.
    pub fc1: LoraLinear,
    /// Second layer.
    pub fc2: LoraLinear,
}

impl EmbMlp {
    /// `[batch, seq]` token ids → `[batch, seq, out]`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.fc2
            .forward(self.fc1.forward(self.emb.forward(ids)).tanh())
    }
}

/// An embedding fixture's base model, without adapters.
pub fn load_emb_mlp(fixture: &str, device: &Device) -> EmbMlp {
    let file = TensorFile::open(&fixture_dir(fixture).join("model.safetensors")).unwrap();
    EmbMlp {
        emb: LoraEmbedding::from_weights(read_matrix(&file, "emb.weight", device)),
        fc1: linear_from(&file, "fc1", device).into(),
        fc2: linear_from(&file, "fc2", device).into(),
    }
}

/// The token ids `[batch, seq]` an embedding fixture stores as float32 `ids`.
pub fn read_ids(file: &TensorFile, device: &Device) -> Tensor<2, Int> {
    let t = file.tensor("ids").unwrap();
    let ids: Vec<i64> = t.data.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(ids, [t.shape[0], t.shape[1]]), device)
}

/// Read a `[batch, seq, out]` tensor as `[batch·seq, out]`.
pub fn read_rows(file: &TensorFile, name: &str, device: &Device) -> Tensor<2> {
    let t = file.tensor(name).unwrap();
    let out = *t.shape.last().unwrap();
    let rows = t.data.len() / out;
    Tensor::from_data(TensorData::new(t.data, [rows, out]), device)
}

/// The fixture's base model with burn's `Linear`s.
pub fn load_native_mlp(fixture: &str, device: &Device) -> NativeMlp {
    let file = TensorFile::open(&fixture_dir(fixture).join("model.safetensors")).unwrap();
    NativeMlp {
        fc1: linear_from(&file, "fc1", device),
        fc2: linear_from(&file, "fc2", device),
    }
}

/// The contract's error measure: `max |got − want| / max |want|`.
pub fn rel_error(got: Tensor<2>, want: Tensor<2>) -> f64 {
    let got: Vec<f32> = got.inner().try_into_vec_as::<f32>().unwrap();
    let want: Vec<f32> = want.inner().try_into_vec_as::<f32>().unwrap();
    assert_eq!(got.len(), want.len(), "sizes differ");
    let max_abs = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let max_err = got
        .iter()
        .zip(&want)
        .fold(0f64, |m, (g, w)| m.max((g - w).abs() as f64));
    max_err / max_abs.max(f64::MIN_POSITIVE)
}

/// The paths of a model's `LoraLinear` modules as burn's own `ModuleVisitor` reports them
/// (the path at which a field of a `Struct:LoraLinear` container is entered), in visiting
/// order: the oracle the `LoraModel` derive is checked against.
pub fn burn_lora_linear_paths<M: Module>(model: &M) -> Vec<String> {
    #[derive(Default)]
    struct V {
        path: Vec<String>,
        out: Vec<String>,
    }
    impl burn::module::ModuleVisitor for V {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            let here = self.path.join(".");
            if container_type == "Struct:LoraLinear" && self.out.last() != Some(&here) {
                self.out.push(here);
            }
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
    }
    let mut v = V::default();
    model.visit(&mut v);
    v.out
}

/// The paths of a model's adaptable layers (`LoraLinear` and `LoraEmbedding` modules) as
/// burn's own `ModuleVisitor` reports them, in visiting order, with the container type:
/// the oracle for `lora_layer_paths`.
pub fn burn_lora_layer_paths<M: Module>(model: &M) -> Vec<(String, String)> {
    #[derive(Default)]
    struct V {
        path: Vec<String>,
        out: Vec<(String, String)>,
    }
    impl burn::module::ModuleVisitor for V {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            let here = self.path.join(".");
            if matches!(container_type, "Struct:LoraLinear" | "Struct:LoraEmbedding")
                && self.out.last().map(|(p, _)| p) != Some(&here)
            {
                self.out.push((here, container_type.to_string()));
            }
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
    }
    let mut v = V::default();
    model.visit(&mut v);
    v.out
}

/// The workspace README: its Rust code blocks run as doctests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
