//! DoRA (weight-decomposed low-rank adaptation, Liu et al. 2024) as PEFT computes it: the
//! magnitude vector a DoRA adapter carries, and the row norms it divides by.
//!
//! A DoRA layer adapts `W0` (PEFT layout `[out, in]`) to
//!
//! ```text
//! W = diag(m / n)·(W0 + s·B·A),     n_j = ‖(W0 + s·B·A)_j‖₂  (row j, PEFT's dim=1)
//! ```
//!
//! with a trainable magnitude `m: [out]` next to the LoRA factors. PEFT initialises `m` to
//! `n` (so a fresh adapter computes `W0 + s·B·A`), treats `n` as a constant in the backward
//! pass (DoRA paper, section 4.3: `weight_norm.detach()`), and saves `m` as
//! `base_model.model.<module>.lora_magnitude_vector` (`[out]`, no `.weight` suffix).
//!
//! **Why a variant of [`LoraLinear`](crate::LoraLinear), not its own layer.** A DoRA layer
//! is a LoRA layer plus one vector: same frozen base, same factors and scale, same dropouts
//! (Cl included), same place in the model. Keeping it inside `LoraLinear` (its
//! [`LoraFactors::dora`](crate::LoraFactors::dora)) means `#[derive(LoraModel)]`,
//! [`inject_lora`](crate::inject_lora) (`LoraConfig::with_use_dora(true)`), the adapter files,
//! RoRA's constraint and rescaling and the spectral reports all work on DoRA layers with no
//! second code path, and a model written with `LoraLinear` can switch between LoRA and DoRA
//! by configuration. [`LoraEmbedding`](crate::LoraEmbedding) carries it the same way. This
//! file holds the DoRA-specific state and arithmetic.
//!
//! **The norm, factored.** `n_j² = ‖w0_j‖² + 2s·⟨w0_j, (B·A)_j⟩ + s²·‖(B·A)_j‖²` with
//! `⟨w0_j, (B·A)_j⟩ = Σ_k B_jk·(W0·Aᵀ)_jk` and `‖(B·A)_j‖² = (B·(A·Aᵀ))_j·B_jᵀ`:
//! [`weight_norm`] computes it from `W0·Aᵀ` (`[out, r]`) and `A·Aᵀ` (`[r, r]`) without
//! forming the `[out, in]` update, which [`weight_norm_dense`] (PEFT's way) does. Both cost
//! `O(out·in·r)` multiply-adds (the product `W0·Aᵀ` cannot be cached: `A` trains); the
//! factored one allocates `[out, r]` instead of `[out, in]`.
//!
//! **RoRA on DoRA.** Cl (base-branch dropout) and Tr (`‖Ukᵀ·B‖F² + ‖A·Vk‖F²`) act on the
//! factors exactly as for LoRA. Pt rescales the low-rank directional update `s·B·A` so that
//! `σ1(s'·B·A) = σ1(W0)` and leaves the magnitude `m` as trained: the norm `n` follows the
//! new direction, so every output row of the adapted weight keeps its trained length `m_j`
//! while its direction moves toward the rescaled update.
//!
//! ```
//! use burn::nn::LinearConfig;
//! use burn::tensor::{Device, Distribution, Tensor, Tolerance};
//! use rora_core::{LoraConfig, LoraLinear};
//!
//! let device = Device::default();
//! let base = LinearConfig::new(16, 8).init(&device);
//! let layer = LoraLinear::from_linear(base, &LoraConfig::new(4, 8.0).with_use_dora(true))?;
//! let dora = layer.lora.as_ref().unwrap().dora.as_ref().unwrap();
//! assert_eq!(dora.magnitude.dims(), [8]); // m: [out], initialised to ‖W0 + s·B·A‖ per row
//! let x = Tensor::<2>::random([3, 16], Distribution::Normal(0.0, 1.0), &device);
//! let y = layer.forward(x.clone());
//! // Merged, the layer computes the same: W = diag(m/n)·(W0 + s·B·A).
//! let merged = layer.merge();
//! merged.forward(x).into_data().assert_approx_eq::<f32>(&y.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use crate::convert::replace_param;

/// The smallest row norm DoRA divides by. PEFT divides by the exact norm (a zero row gives
/// infinity or NaN); this floor keeps a degenerate all-zero row finite and does not change
/// any other row.
pub const NORM_FLOOR: f64 = 1e-12;

/// DoRA's state on an adapted layer: the trainable magnitude and, while merged, the norms
/// the merge divided by.
///
/// Both are parameters, so they are saved and loaded with the model (paths
/// `<layer>.lora.dora.magnitude` and `<layer>.lora.dora.merge_norm`).
#[derive(Module, Debug)]
pub struct DoraMagnitude {
    /// `m: [out]`, trainable (PEFT's `lora_magnitude_vector`).
    pub magnitude: Param<Tensor<1>>,
    /// `[out]`, frozen: the row norms `‖W0 + s·B·A‖` used by the last merge (zeros while
    /// unmerged), so that `unmerge` divides by exactly what `merge` multiplied by, after a
    /// save and load too.
    pub merge_norm: Param<Tensor<1>>,
}

impl DoraMagnitude {
    /// A magnitude vector `m: [out]` (trainable), not merged.
    pub fn new(magnitude: Tensor<1>) -> Self {
        let device = magnitude.device();
        let [out] = magnitude.dims();
        let magnitude = if device.is_autodiff() {
            magnitude.inner().autodiff()
        } else {
            magnitude.inner()
        };
        DoraMagnitude {
            magnitude: Param::from_tensor(magnitude),
            merge_norm: Param::from_tensor(Tensor::<1>::zeros([out], &device))
                .set_require_grad(false),
        }
    }

    /// Output features.
    pub fn d_out(&self) -> usize {
        self.magnitude.shape().dims::<1>()[0]
    }

    pub(crate) fn with_merge_norm(mut self, norm: Tensor<1>) -> Self {
        self.merge_norm = replace_param(self.merge_norm, norm);
        self
    }
}

/// The row norms `n_j = ‖(W0 + s·B·A)_j‖` of a DoRA layer, factored (see the module docs),
/// detached from any graph.
///
/// `weight`: `W0` in burn's layout `[in, out]` (a `LoraLinear`'s weight, or a
/// `LoraEmbedding`'s `[num_embeddings, embedding_dim]` table); `a: [r, in]`, `b: [out, r]`.
/// Returns `[out]` on the inner (non-autodiff) backend.
pub fn weight_norm(weight: Tensor<2>, a: Tensor<2>, b: Tensor<2>, scale: f64) -> Tensor<1> {
    let device = weight.device();
    let scale = Tensor::<1>::from_floats([scale as f32], &device).inner();
    weight_norm_scaled(weight, a, b, scale)
}

/// [`weight_norm`] with the scale as a `[1]` tensor (a layer's own `lora.scale`), so the
/// forward pass reads nothing back from the device.
pub(crate) fn weight_norm_scaled(
    weight: Tensor<2>,
    a: Tensor<2>,
    b: Tensor<2>,
    scale: Tensor<1>,
) -> Tensor<1> {
    let (w, a, b, s) = (weight.inner(), a.inner(), b.inner(), scale.inner());
    let [_, out] = w.dims();
    // ‖w0_j‖²: column sums of W0² in burn's layout.
    let c0 = w.clone().square().sum_dim(0).reshape([out]);
    // ⟨w0_j, (B·A)_j⟩ = Σ_k B_jk·(A·W0)_kj.
    let aw = a.clone().matmul(w); // [r, out]
    let cross = aw.mul(b.clone().transpose()).sum_dim(0).reshape([out]);
    // ‖(B·A)_j‖² = Σ_k (B·G)_jk·B_jk with G = A·Aᵀ.
    let gram = a.clone().matmul(a.transpose()); // [r, r]
    let quad = b.clone().matmul(gram).mul(b).sum_dim(1).reshape([out]);
    let two_s = s.clone().mul_scalar(2.0);
    let s2 = s.clone().mul(s);
    (c0 + cross.mul(two_s) + quad.mul(s2)).clamp_min(0.0).sqrt()
}

/// The row norms as PEFT computes them: form `W0 + s·B·A` densely and take the norm of
/// every output row. Same arguments and result as [`weight_norm`]; for tests and
/// comparisons.
pub fn weight_norm_dense(weight: Tensor<2>, a: Tensor<2>, b: Tensor<2>, scale: f64) -> Tensor<1> {
    let (w, a, b) = (weight.inner(), a.inner(), b.inner());
    let [_, out] = w.dims();
    let dense = w + a.transpose().matmul(b.transpose()).mul_scalar(scale); // [in, out]
    dense.square().sum_dim(0).reshape([out]).sqrt()
}

/// `m / max(n, NORM_FLOOR)`, the per-output factor DoRA applies, with `n` a constant (no
/// gradient flows into it) on the device kind of `magnitude`.
pub(crate) fn magnitude_over_norm(magnitude: Tensor<1>, norm: Tensor<1>) -> Tensor<1> {
    let norm = norm.clamp_min(NORM_FLOOR);
    let norm = if magnitude.is_autodiff() {
        norm.autodiff()
    } else {
        norm
    };
    magnitude.div(norm)
}
