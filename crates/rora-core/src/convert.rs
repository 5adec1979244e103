//! Conversions between burn tensors, host matrices and nalgebra, and in-place parameter
//! updates that keep a parameter's identity.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use nalgebra::DMatrix;

use crate::peft::HostMatrix;

/// Copy a 2-D tensor to the host (detached from any autodiff graph), as float32.
pub fn tensor_to_host(t: Tensor<2>) -> HostMatrix {
    let [rows, cols] = t.dims();
    let data = t
        .inner()
        .try_into_vec_as::<f32>()
        .expect("reading a float tensor back to the host");
    HostMatrix::new(rows, cols, data)
}

/// A tensor on `device` with the values of a host matrix.
pub fn host_to_tensor(m: &HostMatrix, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(m.data.clone(), [m.rows, m.cols]), device)
}

/// Copy a 2-D tensor to an nalgebra matrix in float64 (same orientation).
pub fn tensor_to_dmatrix(t: Tensor<2>) -> DMatrix<f64> {
    tensor_to_host(t).to_dmatrix()
}

/// A tensor on `device` from an nalgebra matrix (rounded to float32, same orientation).
pub fn dmatrix_to_tensor(m: &DMatrix<f64>, device: &Device) -> Tensor<2> {
    host_to_tensor(&HostMatrix::from_dmatrix(m), device)
}

/// Replace a parameter's value, keeping its [`ParamId`](burn::module::ParamId) (so optimizer
/// state stays attached), its `require_grad` setting and its autodiff association.
pub fn replace_param<const D: usize>(
    param: Param<Tensor<D>>,
    value: Tensor<D>,
) -> Param<Tensor<D>> {
    let require_grad = param.is_require_grad();
    param.map(move |old| {
        let value = value.inner();
        let value = if old.is_autodiff() {
            value.autodiff()
        } else {
            value
        };
        value.set_require_grad(require_grad)
    })
}
