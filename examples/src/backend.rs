//! Choosing among the burn backends compiled into this build (the `--backend` flag).
//!
//! Each backend is a cargo feature of `rora-examples` that forwards to `rora`'s (and so
//! `rora-core`'s): `flex` (the default, pure Rust), `ndarray`, `openblas` (ndarray with
//! the system OpenBLAS), `tch` (LibTorch), `wgpu`, `cuda`. Several can be compiled in at
//! once; [`device`] picks one by name. `default` is burn's own choice,
//! `Device::default()` (which prefers tch over flex when both are compiled in, and
//! honours the `BURN_DEVICE` variable).

use burn::tensor::Device;

/// The backend names [`device`] accepts in this build, `default` first.
pub fn compiled() -> Vec<&'static str> {
    let mut names = vec!["default"];
    if cfg!(feature = "flex") {
        names.push("flex");
    }
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    if cfg!(feature = "tch") {
        names.push("tch");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    names
}

/// A longer name for reports: what the backend is and how this build configured it.
pub fn describe(name: &str) -> String {
    match name {
        "flex" => "burn-flex (pure Rust, gemm)".to_string(),
        "ndarray" if cfg!(feature = "openblas") => "burn-ndarray + system OpenBLAS".to_string(),
        "ndarray" => "burn-ndarray (matrixmultiply)".to_string(),
        "tch" => "burn-tch (LibTorch)".to_string(),
        other => other.to_string(),
    }
}

/// The device of backend `name` (one of [`compiled`]), not autodiff.
///
/// # Errors
/// A message naming the backends of this build when `name` is not one of them.
#[allow(deprecated, unreachable_code)] // ndarray and tch devices are deprecated upstream
pub fn device(name: &str) -> Result<Device, String> {
    match name {
        "default" => return Ok(Device::default()),
        #[cfg(feature = "flex")]
        "flex" => return Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        "ndarray" | "openblas" => return Ok(Device::ndarray()),
        #[cfg(feature = "tch")]
        "tch" => return Ok(Device::libtorch()),
        #[cfg(feature = "wgpu")]
        "wgpu" => return Ok(Device::wgpu(Default::default())),
        #[cfg(feature = "cuda")]
        "cuda" => return Ok(Device::cuda(0)),
        _ => {}
    }
    Err(format!(
        "backend {name:?} is not compiled into this build (available: {}); \
         enable it with `--features <name>` (see README.md, Backends)",
        compiled().join(", ")
    ))
}
