//! Extension: insertion invariance, a loss that makes predictions insensitive to inserted
//! rare tokens.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, softmax};

/// Symmetric KL divergence between the predictions on clean inputs and on the same inputs
/// with random rare tokens inserted, averaged over the batch:
/// `mean_i [KL(p_i‖q_i) + KL(q_i‖p_i)] = mean_i Σ_c (p − q)(log p − log q)`.
///
/// `clean_logits`, `perturbed_logits`: `[batch, classes]`. Returns a `[1]` tensor (0 when
/// the predictions agree). Weight it with
/// [`RoraConfig::insertion_invariance`](super::RoraConfig::insertion_invariance).
pub fn insertion_invariance(clean_logits: Tensor<2>, perturbed_logits: Tensor<2>) -> Tensor<1> {
    let p = softmax(clean_logits.clone(), 1);
    let q = softmax(perturbed_logits.clone(), 1);
    let log_p = log_softmax(clean_logits, 1);
    let log_q = log_softmax(perturbed_logits, 1);
    let [batch, _] = p.dims();
    (p - q)
        .mul(log_p - log_q)
        .sum()
        .div_scalar(batch.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn zero_for_equal_and_positive_otherwise() {
        let device = Device::default();
        let a = Tensor::<2>::random([4, 3], Distribution::Normal(0.0, 1.0), &device);
        let same = insertion_invariance(a.clone(), a.clone()).into_scalar::<f32>();
        assert!(same.abs() < 1e-6);
        let b = Tensor::<2>::random([4, 3], Distribution::Normal(0.0, 1.0), &device);
        let ab = insertion_invariance(a.clone(), b.clone()).into_scalar::<f32>();
        let ba = insertion_invariance(b, a).into_scalar::<f32>();
        assert!(ab > 0.0 && (ab - ba).abs() < 1e-5);
    }
}
