//! [`LoraEmbedding`]: an embedding table with a frozen base and a factored low-rank adapter,
//! PEFT's `lora_embedding_A` / `lora_embedding_B`.
//!
//! A backdoor's trigger word is a token, and its embedding row is one place the backdoor
//! lives; LoRA on the embedding reaches it. The table `E: [num_embeddings, embedding_dim]`
//! is the linear map `in = num_embeddings → out = embedding_dim` of a one-hot token, so its
//! `[out, in]` weight is `Eᵀ` and the adapter is the usual `ΔW = s·B·A` with
//! `A: [r, num_embeddings]`, `B: [embedding_dim, r]`: the row of token `t` moves by
//! `s·(B·A[:, t])ᵀ`. RoRA's constraint, rescaling (Pt) and the spectral reports see the
//! layer in that view, like any adapted linear layer.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding};
use burn::tensor::module::{embedding, linear};
use burn::tensor::{Device, Distribution, Int, Tensor};

use crate::config::{LoraConfig, LoraConfigError, LoraInit};
use crate::convert::replace_param;
use crate::linear::{LoraFactors, merged_weight, pissa_factors, unmerged_weight};

/// An embedding `y = E[ids]` with an optional LoRA (or DoRA) adapter, computed factored:
///
/// `y = drop_b(E[ids]) + s·(Aᵀ[ids])·Bᵀ`
///
/// - `E` (`weight`, burn's layout `[num_embeddings, embedding_dim]`) is frozen once an adapter
///   is attached; `A: [r, num_embeddings]` and `B: [embedding_dim, r]` (PEFT's
///   `lora_embedding_A` / `lora_embedding_B`) are trainable. The dense update is never formed
///   in the forward pass.
/// - As in PEFT, there is no dropout on the adapter's input ([`LoraConfig::dropout`] is not
///   used); `drop_b` is RoRA's Cl on the frozen branch ([`LoraConfig::base_dropout`], training
///   only).
/// - Initialisation as PEFT's for embeddings: `A = 0`, `B ~ N(0, 1)` (both
///   [`LoraInit::KaimingUniform`] and [`LoraInit::Gaussian`]); [`LoraInit::Pissa`] takes the
///   top singular triplets of `Eᵀ`.
/// - DoRA ([`LoraConfig::use_dora`]): `y = diag(m/n)·(E[ids] + s·(Aᵀ[ids])·Bᵀ)` per output
///   feature, `n` the norms of the columns of `E + s·(B·A)ᵀ` (PEFT's DoRA embedding), see
///   [`crate::dora`].
///
/// Without an adapter it computes what burn's [`Embedding`] does. Input `[batch, seq]` token
/// ids, output `[batch, seq, embedding_dim]`.
///
/// ```
/// use burn::nn::EmbeddingConfig;
/// use burn::tensor::{Device, Int, Tensor};
/// use rora_core::{LoraConfig, LoraEmbedding};
///
/// let device = Device::default();
/// let table = EmbeddingConfig::new(100, 16).init(&device);
/// let layer = LoraEmbedding::from_embedding(table, &LoraConfig::new(4, 8.0))?;
/// assert_eq!(layer.trainable_params(), 4 * (100 + 16));
/// let ids = Tensor::<2, Int>::from_ints([[1, 5, 7], [2, 2, 99]], &device);
/// assert_eq!(layer.forward(ids).dims(), [2, 3, 16]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Module, Debug)]
pub struct LoraEmbedding {
    /// Frozen table `E: [num_embeddings, embedding_dim]`.
    pub weight: Param<Tensor<2>>,
    /// The adapter, if attached (`A: [r, num_embeddings]`, `B: [embedding_dim, r]`).
    pub lora: Option<LoraFactors>,
    /// Dropout on the frozen branch's output (RoRA's Cl).
    pub base_dropout: Dropout,
    enabled: bool,
}

impl From<Embedding> for LoraEmbedding {
    fn from(table: Embedding) -> Self {
        LoraEmbedding::plain(table)
    }
}

impl LoraEmbedding {
    /// Wrap a burn [`Embedding`] without an adapter.
    pub fn plain(table: Embedding) -> Self {
        LoraEmbedding::from_param(table.weight)
    }

    /// A layer from a raw table `[num_embeddings, embedding_dim]`, no adapter.
    pub fn from_weights(weight: Tensor<2>) -> Self {
        LoraEmbedding::from_param(Param::from_tensor(weight))
    }

    fn from_param(weight: Param<Tensor<2>>) -> Self {
        LoraEmbedding {
            weight,
            lora: None,
            base_dropout: DropoutConfig::new(0.0).init(),
            enabled: true,
        }
    }

    /// Wrap `table` and attach a new adapter (see [`with_lora`](Self::with_lora)).
    pub fn from_embedding(table: Embedding, config: &LoraConfig) -> Result<Self, LoraConfigError> {
        LoraEmbedding::plain(table).with_lora(config)
    }

    /// Attach a new adapter initialised as `config.init` says (see the type's docs), freeze
    /// the table and set the base-branch dropout. Replaces an existing adapter.
    pub fn with_lora(self, config: &LoraConfig) -> Result<Self, LoraConfigError> {
        let [n, d] = self.weight.shape().dims::<2>();
        config.validate(n, d)?;
        let mut layer = self.unmerge();
        let device = layer.weight.device();
        let (r, s) = (config.rank, config.scale());
        let (a, b) = match config.init {
            LoraInit::KaimingUniform | LoraInit::Gaussian => (
                Tensor::<2>::zeros([r, n], &device),
                Tensor::<2>::random([d, r], Distribution::Normal(0.0, 1.0), &device),
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
        layer.base_dropout = DropoutConfig::new(config.base_dropout).init();
        layer.enabled = true;
        Ok(layer)
    }

    /// Attach given factors `a: [r, num_embeddings]`, `b: [embedding_dim, r]` with scale `s`,
    /// freezing the table.
    ///
    /// # Panics
    /// If the shapes do not fit; callers that read user files check first (see
    /// [`crate::adapter_io`]).
    pub fn with_factors(mut self, a: Tensor<2>, b: Tensor<2>, scale: f64) -> Self {
        let [n, d] = self.weight.shape().dims::<2>();
        let [r, a_n] = a.dims();
        let [b_d, b_r] = b.dims();
        assert!(
            a_n == n && b_d == d && b_r == r,
            "LoRA embedding factor shapes"
        );
        self = self.unmerge();
        let device = self.weight.device();
        self.weight = self.weight.set_require_grad(false);
        self.lora = Some(LoraFactors::fresh(a, b, scale, &device));
        self
    }

    /// Make the attached adapter a DoRA adapter with magnitude `m: [embedding_dim]`.
    ///
    /// # Panics
    /// Without an adapter, or if `m` is not `[embedding_dim]`.
    pub fn with_dora_magnitude(self, magnitude: Tensor<1>) -> Self {
        assert_eq!(
            magnitude.dims(),
            [self.embedding_dim()],
            "DoRA magnitude shape"
        );
        let mut layer = self.unmerge();
        let lora = layer
            .lora
            .as_mut()
            .expect("with_dora_magnitude needs an adapter");
        lora.dora = Some(crate::dora::DoraMagnitude::new(magnitude));
        layer
    }

    /// Make the attached adapter a DoRA adapter initialised as PEFT does (`m = n`, the
    /// output does not change). No-op without an adapter.
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

    /// Remove the adapter (unmerging it first). The table stays frozen.
    pub fn without_lora(self) -> Self {
        let mut layer = self.unmerge();
        layer.lora = None;
        layer
    }

    /// Number of rows (tokens), the `in` of the `[out, in]` view.
    pub fn num_embeddings(&self) -> usize {
        self.weight.shape().dims::<2>()[0]
    }

    /// Width of a row, the `out` of the `[out, in]` view.
    pub fn embedding_dim(&self) -> usize {
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

    /// `true` when the update has been folded into the table by [`merge`](Self::merge).
    pub fn is_merged(&self) -> bool {
        self.lora.as_ref().is_some_and(LoraFactors::is_merged)
    }

    /// `true` when the adapter is a DoRA adapter.
    pub fn is_dora(&self) -> bool {
        self.lora.as_ref().is_some_and(LoraFactors::is_dora)
    }

    /// `true` when the adapter contributes to the output (the default).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Switch the adapter's contribution (and the base-branch dropout) on or off. Disabled,
    /// the layer computes `E[ids]` only. Has no effect on a merged layer.
    pub fn set_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Number of trainable adapter parameters, `r·(num_embeddings + embedding_dim)`, plus
    /// `embedding_dim` for DoRA (0 without an adapter).
    pub fn trainable_params(&self) -> usize {
        let dora = if self.is_dora() {
            self.embedding_dim()
        } else {
            0
        };
        self.rank().map_or(0, |r| {
            r * (self.num_embeddings() + self.embedding_dim()) + dora
        })
    }

    /// The dense update of the table, `(s·B·A)ᵀ: [num_embeddings, embedding_dim]`, detached;
    /// `None` without an adapter. For merging and tests.
    pub fn delta_weight(&self) -> Option<Tensor<2>> {
        self.lora.as_ref().map(|l| {
            l.a.val()
                .inner()
                .transpose()
                .matmul(l.b.val().inner().transpose())
                .mul_scalar(l.scale_value())
        })
    }

    /// The table the adapted layer looks rows up in, detached: `E + (s·B·A)ᵀ` (DoRA: each
    /// column scaled by `m/n`). `None` without an adapter; the table itself once merged.
    pub fn adapted_weight(&self) -> Option<Tensor<2>> {
        let lora = self.lora.as_ref()?;
        if self.is_merged() {
            return Some(self.weight.val().inner());
        }
        Some(merged_weight(lora, self.weight.val().inner()).0)
    }

    /// Fold the update into the table (PEFT's `merge`), keeping the factors so that
    /// [`unmerge`](Self::unmerge) can undo it; see [`LoraLinear::merge`](crate::LoraLinear::merge).
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

    /// Undo [`merge`](Self::merge), exact up to float32 round-off.
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

    /// Merge the update into the table and drop the adapter (PEFT's `merge_and_unload`).
    pub fn merge_and_unload(self) -> Self {
        let mut layer = self.merge();
        layer.lora = None;
        layer
    }

    /// The rows of `ids: [batch, seq]`: `[batch, seq, embedding_dim]`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let plain = embedding(self.weight.val(), ids.clone());
        match &self.lora {
            Some(lora) if self.enabled => {
                let base = self.base_dropout.forward(plain.clone());
                let h = embedding(lora.a.val().transpose(), ids);
                let h = h.mul(lora.branch_scale().reshape([1, 1, 1]));
                let update = linear(h, lora.b.val().transpose(), None);
                match lora.dora_factor(self.weight.val()) {
                    None => base + update,
                    // DoRA, as PEFT: y = drop_b(E[ids]) + (g − 1)·E[ids] + g·s·(Aᵀ[ids])·Bᵀ.
                    Some(g) => {
                        let g = g.reshape([1, 1, self.embedding_dim()]);
                        base + plain.mul(g.clone().sub_scalar(1.0)) + update.mul(g)
                    }
                }
            }
            _ => plain,
        }
    }

    /// The device of the table.
    pub fn device(&self) -> Device {
        self.weight.device()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::EmbeddingConfig;
    use burn::tensor::{TensorData, Tolerance};

    fn ids(device: &Device) -> Tensor<2, Int> {
        Tensor::from_data(TensorData::new(vec![0i64, 3, 9, 3, 1, 5], [2, 3]), device)
    }

    /// An adapted table 10×4 with random A and B (not the zero init).
    fn layer(dora: bool) -> LoraEmbedding {
        let device = Device::default();
        device.seed(4);
        let table = EmbeddingConfig::new(10, 4).init(&device);
        let l = LoraEmbedding::plain(table).with_factors(
            Tensor::random([2, 10], Distribution::Normal(0.0, 1.0), &device),
            Tensor::random([4, 2], Distribution::Normal(0.0, 1.0), &device),
            1.5,
        );
        if dora {
            let l = l.with_dora_init();
            let m = l
                .lora
                .as_ref()
                .unwrap()
                .dora
                .as_ref()
                .unwrap()
                .magnitude
                .val();
            let m = m.mul(Tensor::random(
                [4],
                Distribution::Uniform(0.5, 1.5),
                &device,
            ));
            l.with_dora_magnitude(m)
        } else {
            l
        }
    }

    fn lookup(table: Tensor<2>, ids: Tensor<2, Int>) -> Tensor<3> {
        embedding(table, ids)
    }

    #[test]
    fn forward_is_a_lookup_in_the_adapted_table_and_merge_equals_forward() {
        for dora in [false, true] {
            let l = layer(dora);
            let device = l.device();
            let y = l.forward(ids(&device));
            let dense = lookup(l.adapted_weight().unwrap(), ids(&device));
            y.clone()
                .into_data()
                .assert_approx_eq::<f32>(&dense.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
            let table = l.weight.val();
            let merged = l.merge();
            assert!(merged.is_merged());
            merged
                .forward(ids(&device))
                .into_data()
                .assert_approx_eq::<f32>(&y.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
            merged
                .unmerge()
                .weight
                .val()
                .into_data()
                .assert_approx_eq::<f32>(&table.into_data(), Tolerance::rel_abs(1e-6, 1e-6));
        }
    }

    #[test]
    fn a_fresh_adapter_keeps_the_table_and_disabled_gives_the_base() {
        let device = Device::default();
        let table = EmbeddingConfig::new(10, 4).init(&device);
        let want = lookup(table.weight.val(), ids(&device));
        for dora in [false, true] {
            let config = LoraConfig::new(2, 4.0).with_use_dora(dora);
            let l = LoraEmbedding::from_embedding(table.clone(), &config).unwrap();
            // PEFT's embedding init: A = 0, B random.
            assert_eq!(
                l.lora
                    .as_ref()
                    .unwrap()
                    .a
                    .val()
                    .abs()
                    .max()
                    .into_scalar::<f32>(),
                0.0
            );
            assert_eq!(l.trainable_params(), 2 * 14 + if dora { 4 } else { 0 });
            l.forward(ids(&device))
                .into_data()
                .assert_approx_eq::<f32>(&want.clone().into_data(), Tolerance::rel_abs(1e-5, 1e-6));
        }
        let l = layer(false);
        let base = lookup(l.weight.val(), ids(&l.device()));
        l.set_enabled(false)
            .forward(ids(&base.device()))
            .into_data()
            .assert_eq(&base.into_data(), true);
    }

    #[test]
    fn rank_above_the_table_is_rejected() {
        let device = Device::default();
        let table = EmbeddingConfig::new(3, 8).init(&device);
        assert!(matches!(
            LoraEmbedding::from_embedding(table, &LoraConfig::new(4, 8.0)),
            Err(LoraConfigError::RankTooLarge { max: 3, .. })
        ));
    }
}
