//! [`LoraLinear`]: a linear layer with a frozen base and a factored low-rank adapter.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::module::linear;
use burn::tensor::{Device, Distribution, Tensor};

use crate::config::{LoraConfig, LoraConfigError, LoraInit};
use crate::convert::{dmatrix_to_tensor, replace_param, tensor_to_dmatrix};
use crate::dora::{DoraMagnitude, magnitude_over_norm, weight_norm_scaled};

/// The trainable factors of a [`LoraLinear`] (or [`LoraEmbedding`](crate::LoraEmbedding))
/// and their scale, in PEFT's layout; with DoRA, the magnitude vector too.
#[derive(Module, Debug)]
pub struct LoraFactors {
    /// `A: [r, in]`, trainable.
    pub a: Param<Tensor<2>>,
    /// `B: [out, r]`, trainable.
    pub b: Param<Tensor<2>>,
    /// The scale `s` as a one-element frozen parameter, so that it is saved with the model
    /// and visible to module visitors (RoRA's analysis reads it there).
    pub scale: Param<Tensor<1>>,
    /// `[1]` frozen, 1 when the update has been folded into the base weight by
    /// [`LoraLinear::merge`], 0 otherwise. A parameter, not a host flag, so that it is saved
    /// and loaded with the weight it describes: loading a merged model into a freshly adapted
    /// one cannot add `ΔW` twice.
    pub merged: Param<Tensor<1>>,
    /// DoRA's magnitude (`m: [out]`, trainable), `None` for plain LoRA; see [`crate::dora`].
    pub dora: Option<DoraMagnitude>,
}

impl LoraFactors {
    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.a.shape().dims::<2>()[0]
    }

    /// The scale `s`, read back to the host.
    pub fn scale_value(&self) -> f64 {
        first_value(&self.scale)
    }

    /// Whether the update is folded into the base weight, read back to the host.
    pub fn is_merged(&self) -> bool {
        first_value(&self.merged) != 0.0
    }

    /// `true` for a DoRA adapter (it has a magnitude vector).
    pub fn is_dora(&self) -> bool {
        self.dora.is_some()
    }

    /// `[1]`: 1 while the update is not merged, 0 once it is (on the device, no host read).
    fn active(&self) -> Tensor<1> {
        self.merged.val().neg().add_scalar(1.0)
    }

    /// The scale the adapter branch of the forward pass uses: `s`, or 0 when merged.
    pub(crate) fn branch_scale(&self) -> Tensor<1> {
        self.scale.val().mul(self.active())
    }

    /// The DoRA row norms `‖W0 + s·B·A‖` for the base `weight` (`[in, out]`), detached.
    pub(crate) fn dora_norm(&self, weight: Tensor<2>) -> Tensor<1> {
        weight_norm_scaled(weight, self.a.val(), self.b.val(), self.scale.val())
    }

    /// The per-output DoRA factor `m/n` of the forward pass for base `weight`, and 1 once
    /// merged (the merged weight holds it); `None` for plain LoRA.
    pub(crate) fn dora_factor(&self, weight: Tensor<2>) -> Option<Tensor<1>> {
        let dora = self.dora.as_ref()?;
        let g = magnitude_over_norm(dora.magnitude.val(), self.dora_norm(weight));
        Some(g.sub_scalar(1.0).mul(self.active()).add_scalar(1.0))
    }

    /// New (unmerged, plain LoRA) factors on `device`: `a: [r, in]` and `b: [out, r]`
    /// trainable (following `device` onto or off the autodiff backend), `scale` frozen.
    pub(crate) fn fresh(a: Tensor<2>, b: Tensor<2>, scale: f64, device: &Device) -> Self {
        // Factors follow the layer onto (or off) the autodiff device, so they train.
        let align = |t: Tensor<2>| {
            if device.is_autodiff() {
                t.inner().autodiff()
            } else {
                t.inner()
            }
        };
        LoraFactors {
            a: Param::from_tensor(align(a)),
            b: Param::from_tensor(align(b)),
            scale: Param::from_tensor(Tensor::<1>::from_floats([scale as f32], device))
                .set_require_grad(false),
            merged: Param::from_tensor(Tensor::<1>::zeros([1], device)).set_require_grad(false),
            dora: None,
        }
    }

    pub(crate) fn with_merged(mut self, merged: bool) -> Self {
        let device = self.merged.device();
        let flag = Tensor::<1>::from_floats([if merged { 1.0 } else { 0.0 }], &device);
        self.merged = replace_param(self.merged, flag);
        self
    }
}

fn first_value(p: &Param<Tensor<1>>) -> f64 {
    p.val()
        .inner()
        .try_into_vec_as::<f64>()
        .expect("reading a one-element parameter")[0]
}

/// A linear layer `y = x·W0 + bias` with an optional LoRA adapter, computed factored:
///
/// `y = drop_b(x·W0 + bias) + s·(drop(x)·Aᵀ)·Bᵀ`
///
/// - `W0` (`weight`, burn's layout `[in, out]`) and `bias` (`[out]`) are frozen once an
///   adapter is attached; `A: [r, in]` and `B: [out, r]` (PEFT's layout) are trainable.
/// - The dense update `s·B·A` is never formed in the forward pass.
/// - `drop` is dropout on the adapter's input ([`LoraConfig::dropout`]); `drop_b` is dropout on
///   the frozen branch's output ([`LoraConfig::base_dropout`]), RoRA's clean-strengthened
///   regularization. Both are active only when training (autodiff device).
///
/// Without an adapter the layer behaves exactly like burn's [`Linear`] (and its weights keep
/// whatever `require_grad` they had), so a model can use `LoraLinear` everywhere and attach
/// adapters only where wanted.
///
/// Input `[..., in]`, output `[..., out]`.
///
/// ```
/// use burn::nn::LinearConfig;
/// use burn::tensor::{Device, Tensor};
/// use rora_core::{LoraConfig, LoraLinear};
///
/// let device = Device::default();
/// let base = LinearConfig::new(16, 8).init(&device);
/// let layer = LoraLinear::from_linear(base, &LoraConfig::new(4, 8.0)).unwrap();
/// assert_eq!(layer.trainable_params(), 4 * (16 + 8));
/// let y = layer.forward(Tensor::<2>::ones([3, 16], &device));
/// assert_eq!(y.dims(), [3, 8]);
/// ```
#[derive(Module, Debug)]
pub struct LoraLinear {
    /// Frozen base weight `W0`, burn layout `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// Frozen base bias `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// The adapter, if attached.
    pub lora: Option<LoraFactors>,
    /// Dropout on the adapter's input.
    pub dropout: Dropout,
    /// Dropout on the frozen branch's output (RoRA's Cl).
    pub base_dropout: Dropout,
    enabled: bool,
}

impl From<Linear> for LoraLinear {
    fn from(linear: Linear) -> Self {
        LoraLinear::plain(linear)
    }
}

impl LoraLinear {
    /// Wrap a burn [`Linear`] without an adapter; it computes exactly what the `Linear` did.
    pub fn plain(linear: Linear) -> Self {
        LoraLinear {
            weight: linear.weight,
            bias: linear.bias,
            lora: None,
            dropout: DropoutConfig::new(0.0).init(),
            base_dropout: DropoutConfig::new(0.0).init(),
            enabled: true,
        }
    }

    /// A layer from raw weights: `weight` in burn's layout `[in, out]` (the transpose of
    /// PyTorch's `[out, in]`), `bias` `[out]`. No adapter; the weights are trainable until an
    /// adapter is attached.
    pub fn from_weights(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        LoraLinear::plain(Linear {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
        })
    }

    /// Wrap `linear` and attach a new adapter (see [`with_lora`](Self::with_lora)).
    pub fn from_linear(linear: Linear, config: &LoraConfig) -> Result<Self, LoraConfigError> {
        LoraLinear::plain(linear).with_lora(config)
    }

    /// Attach a new adapter initialised as `config.init` says, freeze the base weight and
    /// bias, and set both dropouts. Replaces an existing adapter (unmerging it first).
    pub fn with_lora(self, config: &LoraConfig) -> Result<Self, LoraConfigError> {
        let [d_in, d_out] = self.weight.shape().dims::<2>();
        config.validate(d_in, d_out)?;
        let mut layer = self.unmerge();
        let device = layer.weight.device();
        let r = config.rank;
        let s = config.scale();
        let (a, b) = match config.init {
            LoraInit::KaimingUniform => {
                // PyTorch's kaiming_uniform_(a=√5) on A [r, in]: bound = 1/√in.
                let bound = 1.0 / (d_in as f64).sqrt();
                (
                    Tensor::<2>::random([r, d_in], Distribution::Uniform(-bound, bound), &device),
                    Tensor::<2>::zeros([d_out, r], &device),
                )
            }
            LoraInit::Gaussian => (
                Tensor::<2>::random(
                    [r, d_in],
                    Distribution::Normal(0.0, 1.0 / r as f64),
                    &device,
                ),
                Tensor::<2>::zeros([d_out, r], &device),
            ),
            LoraInit::Pissa => {
                let (a, b, w) = pissa_factors(layer.weight.val(), r, s);
                layer.weight = replace_param(layer.weight, w);
                (a, b)
            }
        };
        let mut layer = layer.with_factors(a, b, s);
        if config.use_dora {
            layer = layer.with_dora_init();
        }
        layer.dropout = DropoutConfig::new(config.dropout).init();
        layer.base_dropout = DropoutConfig::new(config.base_dropout).init();
        layer.enabled = true;
        Ok(layer)
    }

    /// Attach given factors `a: [r, in]`, `b: [out, r]` with scale `s` (e.g. loaded from a
    /// PEFT file), freezing the base. Dropouts are left as they are.
    ///
    /// # Panics
    /// If the shapes do not fit the layer; callers that read user files check shapes first
    /// and report typed errors (see [`crate::adapter_io`]).
    pub fn with_factors(mut self, a: Tensor<2>, b: Tensor<2>, scale: f64) -> Self {
        let [d_in, d_out] = self.weight.shape().dims::<2>();
        let [r, a_in] = a.dims();
        let [b_out, b_r] = b.dims();
        assert!(
            a_in == d_in && b_out == d_out && b_r == r,
            "LoRA factor shapes"
        );
        self = self.unmerge();
        let device = self.weight.device();
        self.weight = self.weight.set_require_grad(false);
        self.bias = self.bias.map(|b| b.set_require_grad(false));
        self.lora = Some(LoraFactors::fresh(a, b, scale, &device));
        self
    }

    /// Make the attached adapter a DoRA adapter with magnitude `m: [out]` (e.g. loaded from
    /// a PEFT file's `lora_magnitude_vector`), unmerging first.
    ///
    /// # Panics
    /// Without an adapter, or if `m` is not `[out]`; callers that read user files check
    /// first and report typed errors (see [`crate::adapter_io`]).
    pub fn with_dora_magnitude(self, magnitude: Tensor<1>) -> Self {
        assert_eq!(magnitude.dims(), [self.d_output()], "DoRA magnitude shape");
        let mut layer = self.unmerge();
        let lora = layer
            .lora
            .as_mut()
            .expect("with_dora_magnitude needs an adapter");
        lora.dora = Some(DoraMagnitude::new(magnitude));
        layer
    }

    /// Make the attached adapter a DoRA adapter initialised as PEFT does: `m = ‖W0 + s·B·A‖`
    /// per output row, so the layer's output does not change. No-op without an adapter.
    pub fn with_dora_init(self) -> Self {
        let layer = self.unmerge();
        let Some(lora) = &layer.lora else {
            return layer;
        };
        let norm = lora.dora_norm(layer.weight.val());
        layer.with_dora_magnitude(norm)
    }

    /// Set the dropout probability on the frozen branch's output (RoRA's Cl).
    ///
    /// # Panics
    /// If `p` is not in `[0, 1)`.
    pub fn with_base_dropout(mut self, p: f64) -> Self {
        self.base_dropout = DropoutConfig::new(p).init();
        self
    }

    /// Remove the adapter (unmerging it first). The base stays frozen.
    pub fn without_lora(self) -> Self {
        let mut layer = self.unmerge();
        layer.lora = None;
        layer
    }

    /// Input features.
    pub fn d_input(&self) -> usize {
        self.weight.shape().dims::<2>()[0]
    }

    /// Output features.
    pub fn d_output(&self) -> usize {
        self.weight.shape().dims::<2>()[1]
    }

    /// Rank of the adapter, `None` without one.
    pub fn rank(&self) -> Option<usize> {
        self.lora.as_ref().map(LoraFactors::rank)
    }

    /// Scale `s` of the adapter, `None` without one.
    pub fn scale(&self) -> Option<f64> {
        self.lora.as_ref().map(LoraFactors::scale_value)
    }

    /// `true` when the update has been folded into `weight` by [`merge`](Self::merge)
    /// (read from the saved `lora.merged` parameter).
    pub fn is_merged(&self) -> bool {
        self.lora.as_ref().is_some_and(LoraFactors::is_merged)
    }

    /// `true` when the adapter contributes to the output (the default).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Switch the adapter's contribution (and the base-branch dropout) on or off. Disabled,
    /// the layer computes its base `x·W0 + bias` only. Has no effect on a merged layer.
    pub fn set_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// `true` when the adapter is a DoRA adapter.
    pub fn is_dora(&self) -> bool {
        self.lora.as_ref().is_some_and(LoraFactors::is_dora)
    }

    /// Number of trainable adapter parameters, `r·(in + out)`, plus `out` for DoRA's
    /// magnitude (0 without an adapter).
    pub fn trainable_params(&self) -> usize {
        let dora = if self.is_dora() { self.d_output() } else { 0 };
        self.rank()
            .map_or(0, |r| r * (self.d_input() + self.d_output()) + dora)
    }

    /// The dense update in burn's layout, `s·Aᵀ·Bᵀ: [in, out]`, detached. `None` without an
    /// adapter. Forms the dense matrix: for merging and tests, not for training. For DoRA it
    /// is the low-rank directional update; the adapted weight is
    /// [`adapted_weight`](Self::adapted_weight).
    pub fn delta_weight(&self) -> Option<Tensor<2>> {
        self.lora.as_ref().map(|l| {
            let s = l.scale_value();
            l.a.val()
                .inner()
                .transpose()
                .matmul(l.b.val().inner().transpose())
                .mul_scalar(s)
        })
    }

    /// The weight the adapted layer computes with, burn's layout `[in, out]`, detached:
    /// `W0 + s·Aᵀ·Bᵀ`, or for DoRA `(W0 + s·Aᵀ·Bᵀ)·diag(m/n)` (each output column scaled).
    /// `None` without an adapter; the weight itself once merged.
    pub fn adapted_weight(&self) -> Option<Tensor<2>> {
        let lora = self.lora.as_ref()?;
        if self.is_merged() {
            return Some(self.weight.val().inner());
        }
        Some(merged_weight(lora, self.weight.val().inner()).0)
    }

    /// Fold the update into the base weight for inference: `W0 ← W0 + s·Aᵀ·Bᵀ`, or for DoRA
    /// `W0 ← (W0 + s·Aᵀ·Bᵀ)·diag(m/n)` with the norms `n` saved (`lora.dora.merge_norm`).
    /// The factors are kept, so [`unmerge`](Self::unmerge) can undo it, and the merged state
    /// is saved with the model. No-op without an adapter or when already merged.
    pub fn merge(mut self) -> Self {
        if self.is_merged() {
            return self;
        }
        if let Some(lora) = self.lora.take() {
            let (w, norm) = merged_weight(&lora, self.weight.val().inner());
            self.weight = replace_param(self.weight, w);
            let mut lora = lora.with_merged(true);
            if let (Some(dora), Some(norm)) = (lora.dora.take(), norm) {
                lora.dora = Some(dora.with_merge_norm(norm));
            }
            self.lora = Some(lora);
        }
        self
    }

    /// Undo [`merge`](Self::merge): `W0 ← W − s·Aᵀ·Bᵀ` (DoRA: `W0 ← W·diag(n/m) − s·Aᵀ·Bᵀ`
    /// with the norms saved by the merge), exact up to float32 round-off (DoRA: a zero
    /// magnitude cannot be undone, as in PEFT).
    pub fn unmerge(mut self) -> Self {
        if !self.is_merged() {
            return self;
        }
        if let Some(lora) = self.lora.take() {
            let w = unmerged_weight(&lora, self.weight.val().inner());
            self.weight = replace_param(self.weight, w);
            let mut lora = lora.with_merged(false);
            if let Some(dora) = lora.dora.take() {
                let [out] = dora.merge_norm.shape().dims::<1>();
                let zeros = Tensor::<1>::zeros([out], &dora.merge_norm.device());
                lora.dora = Some(dora.with_merge_norm(zeros));
            }
            self.lora = Some(lora);
        }
        self
    }

    /// Merge the update into the weight and drop the adapter (PEFT's `merge_and_unload`):
    /// a plain layer computing `x·(W0 + s·Aᵀ·Bᵀ) + bias` with no adapter branch left.
    pub fn merge_and_unload(self) -> Self {
        let mut layer = self.merge();
        layer.lora = None;
        layer
    }

    /// The layer's output for `input: [..., in]`: `[..., out]`.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        match &self.lora {
            // A merged layer's weight already holds ΔW: its branch scale is 0 (read from the
            // saved `merged` parameter on the device, so no host round-trip).
            Some(lora) if self.enabled => {
                let plain = linear(input.clone(), self.weight.val(), bias.clone());
                let base = self.base_dropout.forward(plain.clone());
                let dropped = dropout_active(&self.dropout, &input);
                let x = self.dropout.forward(input);
                let h = linear(x.clone(), lora.a.val().transpose(), None);
                let h = h.mul(lora.branch_scale().reshape([1; D]));
                let update = linear(h, lora.b.val().transpose(), None);
                match lora.dora_factor(self.weight.val()) {
                    None => base + update,
                    // DoRA, as PEFT: y = drop_b(x·W0 + b) + (g − 1)·(x'·W0) + g·s·(x'·Aᵀ)·Bᵀ
                    // with g = m/n and x' the adapter's (dropped-out) input.
                    Some(g) => {
                        let without_bias = if dropped {
                            linear(x, self.weight.val(), None)
                        } else {
                            match bias {
                                Some(b) => plain - b.unsqueeze(),
                                None => plain,
                            }
                        };
                        let mut shape = [1; D];
                        shape[D - 1] = self.d_output();
                        let g = g.reshape(shape);
                        base + without_bias.mul(g.clone().sub_scalar(1.0)) + update.mul(g)
                    }
                }
            }
            _ => linear(input, self.weight.val(), bias),
        }
    }

    /// The device of the weights.
    pub fn device(&self) -> Device {
        self.weight.device()
    }
}

/// PiSSA's factors for a base weight `w` in burn's layout `[in, out]`: `B = U_r·√(Σ_r/s)`,
/// `A = √(Σ_r/s)·V_rᵀ` from the top-`r` singular triplets of `W0` (`[out, in]`), and the
/// residual weight `W0 − s·B·A` in burn's layout.
pub(crate) fn pissa_factors(w: Tensor<2>, r: usize, s: f64) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let device = w.device();
    // W0 in PyTorch layout [out, in].
    let w0 = tensor_to_dmatrix(w.transpose());
    let svd =
        rora_spectral::top_k(&w0, r).expect("top-r SVD of a finite weight with r <= min(in, out)");
    let root = svd.singular_values.map(|v| (v / s).sqrt());
    let b = &svd.u * nalgebra::DMatrix::from_diagonal(&root);
    let a = nalgebra::DMatrix::from_diagonal(&root) * &svd.v_t;
    let residual = &w0 - (&b * &a) * s;
    (
        dmatrix_to_tensor(&a, &device),
        dmatrix_to_tensor(&b, &device),
        dmatrix_to_tensor(&residual.transpose(), &device),
    )
}

/// Whether `dropout` changes its input (training, on an autodiff device, `p > 0`).
pub(crate) fn dropout_active<const D: usize>(dropout: &Dropout, input: &Tensor<D>) -> bool {
    dropout.prob > 0.0 && dropout.training.is_enabled() && input.device().is_autodiff()
}

/// The merged weight for base `w0` (`[in, out]`, detached) and, for DoRA, the norms used.
pub(crate) fn merged_weight(lora: &LoraFactors, w0: Tensor<2>) -> (Tensor<2>, Option<Tensor<1>>) {
    let s = lora.scale_value();
    let delta = lora
        .a
        .val()
        .inner()
        .transpose()
        .matmul(lora.b.val().inner().transpose())
        .mul_scalar(s);
    match &lora.dora {
        None => (w0 + delta, None),
        Some(dora) => {
            let norm = lora.dora_norm(w0.clone());
            let g = magnitude_over_norm(dora.magnitude.val().inner(), norm.clone());
            let [out] = g.dims();
            ((w0 + delta).mul(g.reshape([1, out])), Some(norm))
        }
    }
}

/// The base weight back from a merged `w` (`[in, out]`, detached).
pub(crate) fn unmerged_weight(lora: &LoraFactors, w: Tensor<2>) -> Tensor<2> {
    let s = lora.scale_value();
    let delta = lora
        .a
        .val()
        .inner()
        .transpose()
        .matmul(lora.b.val().inner().transpose())
        .mul_scalar(s);
    match &lora.dora {
        None => w - delta,
        Some(dora) => {
            let g =
                magnitude_over_norm(dora.magnitude.val().inner(), dora.merge_norm.val().inner());
            let [out] = g.dims();
            w.div(g.reshape([1, out])) - delta
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::Tolerance;

    fn layer(init: LoraInit) -> LoraLinear {
        let device = Device::default();
        device.seed(7);
        let base = LinearConfig::new(12, 6).init(&device);
        let mut l =
            LoraLinear::from_linear(base, &LoraConfig::new(3, 6.0).with_init(init)).unwrap();
        // Give B non-zero values so the update is not trivially zero.
        if let Some(lora) = l.lora.take() {
            let b = Tensor::<2>::random([6, 3], Distribution::Normal(0.0, 1.0), &device);
            l.lora = Some(LoraFactors {
                b: replace_param(lora.b, b),
                ..lora
            });
        }
        l
    }

    #[test]
    fn forward_equals_dense_formula() {
        let l = layer(LoraInit::Gaussian);
        let device = l.device();
        let x = Tensor::<2>::random([5, 12], Distribution::Normal(0.0, 1.0), &device);
        let w = l.weight.val() + l.delta_weight().unwrap();
        let dense = linear(x.clone(), w, l.bias.as_ref().map(|b| b.val()));
        l.forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&dense.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
    }

    #[test]
    fn merge_unmerge_round_trip_and_merged_forward() {
        let l = layer(LoraInit::KaimingUniform);
        let device = l.device();
        let w0 = l.weight.val();
        let x = Tensor::<2>::random([4, 12], Distribution::Normal(0.0, 1.0), &device);
        let y = l.forward(x.clone());
        let merged = l.merge();
        assert!(merged.is_merged());
        merged
            .forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&y.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
        let back = merged.unmerge();
        back.weight
            .val()
            .into_data()
            .assert_approx_eq::<f32>(&w0.into_data(), Tolerance::rel_abs(1e-6, 1e-6));
    }

    #[test]
    fn pissa_keeps_outputs_and_holds_principal_directions() {
        let device = Device::default();
        device.seed(3);
        let base = LinearConfig::new(10, 8).init(&device);
        let x = Tensor::<2>::random([4, 10], Distribution::Normal(0.0, 1.0), &device);
        let y0 = base.forward(x.clone());
        // W0 in PyTorch layout [out, in], and its top-2 singular triplets (exact SVD).
        let w0 = tensor_to_dmatrix(base.weight.val().transpose());
        let svd = rora_spectral::svd(&w0).unwrap().rank_k(2);
        let l = LoraLinear::from_linear(base, &LoraConfig::new(2, 4.0).with_init(LoraInit::Pissa))
            .unwrap();
        l.forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&y0.into_data(), Tolerance::rel_abs(1e-4, 1e-5));
        // The adapter holds the principal part: s·B·A = U_r·Σ_r·V_rᵀ ...
        let lora = l.lora.as_ref().unwrap();
        let s = lora.scale_value();
        let update = tensor_to_dmatrix(lora.b.val()) * tensor_to_dmatrix(lora.a.val()) * s;
        let principal = svd.reconstruct();
        let err = (&update - &principal).norm() / principal.norm();
        assert!(err < 1e-5, "s·B·A vs U_r Σ_r V_rᵀ: relative error {err}");
        // ... and the frozen weight the residual, W0 − U_r·Σ_r·V_rᵀ.
        let residual = tensor_to_dmatrix(l.weight.val().transpose());
        let err = (&residual - (&w0 - &principal)).norm() / w0.norm();
        assert!(err < 1e-5, "residual weight: relative error {err}");
    }

    #[test]
    fn disabled_adapter_gives_base_output() {
        let l = layer(LoraInit::Gaussian);
        let device = l.device();
        let x = Tensor::<2>::random([4, 12], Distribution::Normal(0.0, 1.0), &device);
        let base = linear(x.clone(), l.weight.val(), l.bias.as_ref().map(|b| b.val()));
        l.set_enabled(false)
            .forward(x)
            .into_data()
            .assert_eq(&base.into_data(), true);
    }

    /// A DoRA layer with non-trivial `B` and magnitude, and a bias.
    fn dora_layer() -> LoraLinear {
        let l = layer(LoraInit::Gaussian).with_dora_init();
        let device = l.device();
        let m = l
            .lora
            .as_ref()
            .unwrap()
            .dora
            .as_ref()
            .unwrap()
            .magnitude
            .val();
        let m = m.mul(Tensor::<1>::random(
            [6],
            Distribution::Uniform(0.5, 1.5),
            &device,
        ));
        l.with_dora_magnitude(m)
    }

    /// `diag(m/n)·(W0 + s·B·A)` in burn's layout, densely, as PEFT defines it.
    fn dora_dense_weight(l: &LoraLinear) -> Tensor<2> {
        let lora = l.lora.as_ref().unwrap();
        let w = l.weight.val() + l.delta_weight().unwrap();
        let n = w.clone().square().sum_dim(0).sqrt(); // [1, out]
        let m = lora.dora.as_ref().unwrap().magnitude.val().reshape([1, 6]);
        w.mul(m.div(n))
    }

    #[test]
    fn dora_factored_norm_equals_the_dense_norm() {
        let l = dora_layer();
        let lora = l.lora.as_ref().unwrap();
        let s = lora.scale_value();
        let (w, a, b) = (l.weight.val(), lora.a.val(), lora.b.val());
        let factored = crate::dora::weight_norm(w.clone(), a.clone(), b.clone(), s);
        let dense = crate::dora::weight_norm_dense(w, a, b, s);
        factored
            .into_data()
            .assert_approx_eq::<f32>(&dense.into_data(), Tolerance::rel_abs(1e-5, 1e-6));
    }

    #[test]
    fn dora_init_keeps_the_lora_output() {
        let l = layer(LoraInit::Gaussian);
        let x = Tensor::<2>::random([4, 12], Distribution::Normal(0.0, 1.0), &l.device());
        let y = l.forward(x.clone());
        let dora = l.with_dora_init();
        assert!(dora.is_dora());
        assert_eq!(dora.trainable_params(), 3 * (12 + 6) + 6);
        dora.forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&y.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
    }

    #[test]
    fn dora_forward_equals_peft_formula_and_merge_equals_forward() {
        let l = dora_layer();
        let device = l.device();
        let x = Tensor::<2>::random([5, 12], Distribution::Normal(0.0, 1.0), &device);
        let bias = l.bias.as_ref().map(|b| b.val());
        let dense = linear(x.clone(), dora_dense_weight(&l), bias);
        let y = l.forward(x.clone());
        y.clone()
            .into_data()
            .assert_approx_eq::<f32>(&dense.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
        l.adapted_weight()
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(
                &dora_dense_weight(&l).into_data(),
                Tolerance::rel_abs(1e-5, 1e-6),
            );

        let w0 = l.weight.val();
        let merged = l.merge();
        assert!(merged.is_merged());
        merged
            .forward(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&y.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
        let back = merged.unmerge();
        assert!(!back.is_merged());
        back.weight
            .val()
            .into_data()
            .assert_approx_eq::<f32>(&w0.into_data(), Tolerance::rel_abs(1e-6, 1e-6));
        // The merge norms are cleared again, so a second merge starts from scratch.
        let norm = back.lora.as_ref().unwrap().dora.as_ref().unwrap();
        assert_eq!(norm.merge_norm.val().abs().max().into_scalar::<f32>(), 0.0);
    }

    #[test]
    fn dora_gradients_treat_the_norm_as_a_constant() {
        // Loss Σ y. With n detached (PEFT, DoRA §4.3): ∂L/∂m_j = Σ_b (x·W0 + s·x·Aᵀ·Bᵀ)_bj / n_j
        // and ∂L/∂B_jk = (m_j/n_j)·s·Σ_b (x·Aᵀ)_bk.
        let device = Device::default().autodiff();
        let l = dora_layer();
        let lora = l.lora.as_ref().unwrap();
        let (w, a, b) = (l.weight.val(), lora.a.val(), lora.b.val());
        let m = lora.dora.as_ref().unwrap().magnitude.val();
        let s = lora.scale_value();
        let l = LoraLinear::from_weights(
            w.clone().autodiff(),
            l.bias.as_ref().map(|b| b.val().autodiff()),
        )
        .with_factors(a.clone().autodiff(), b.clone().autodiff(), s)
        .with_dora_magnitude(m.clone().autodiff());
        assert!(l.device().is_autodiff() && device.is_autodiff());
        let x = Tensor::<2>::random([5, 12], Distribution::Normal(0.0, 1.0), &Device::default());
        let grads = l.forward(x.clone().autodiff()).sum().backward();
        let lora = l.lora.as_ref().unwrap();
        let gm = lora
            .dora
            .as_ref()
            .unwrap()
            .magnitude
            .val()
            .grad(&grads)
            .unwrap();
        let gb = lora.b.val().grad(&grads).unwrap();
        assert!(l.weight.val().grad(&grads).is_none(), "W0 is frozen");

        let n = crate::dora::weight_norm_dense(w.clone(), a.clone(), b.clone(), s);
        let pre = x
            .clone()
            .matmul(w + a.clone().transpose().matmul(b.transpose()).mul_scalar(s));
        let want_gm = pre.sum_dim(0).reshape([6]).div(n.clone());
        gm.into_data()
            .assert_approx_eq::<f32>(&want_gm.into_data(), Tolerance::rel_abs(1e-4, 1e-5));
        let xa = x.matmul(a.transpose()).sum_dim(0); // [1, r]
        let g = m.div(n).reshape([6, 1]);
        let want_gb = g.matmul(xa).mul_scalar(s);
        gb.into_data()
            .assert_approx_eq::<f32>(&want_gb.into_data(), Tolerance::rel_abs(1e-4, 1e-5));
    }

    #[test]
    fn bad_config_is_rejected() {
        let device = Device::default();
        let base = LinearConfig::new(4, 3).init(&device);
        assert!(matches!(
            LoraLinear::from_linear(base, &LoraConfig::new(4, 8.0)),
            Err(LoraConfigError::RankTooLarge { .. })
        ));
    }
}
