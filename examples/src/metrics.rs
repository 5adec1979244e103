//! The benchmark's two numbers: clean accuracy (CA) and attack success rate (ASR).
//!
//! Both are fractions in `[0, 1]` (multiply by 100 for the percentages papers print).

use serde::{Deserialize, Serialize};

/// Fraction of `predictions` equal to the matching entry of `labels`, in `[0, 1]`.
///
/// Returns `0.0` for empty input (no evidence of any correct prediction).
///
/// # Panics
///
/// If the two slices have different lengths (a bug in the caller).
pub fn accuracy(predictions: &[usize], labels: &[usize]) -> f64 {
    assert_eq!(
        predictions.len(),
        labels.len(),
        "accuracy: {} predictions for {} labels",
        predictions.len(),
        labels.len()
    );
    if predictions.is_empty() {
        return 0.0;
    }
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    correct as f64 / predictions.len() as f64
}

/// Attack success rate: the fraction of predictions equal to `target_label`, in
/// `[0, 1]`.
///
/// `predictions_on_triggered` must be the model's predictions on the triggered test
/// set, i.e. test inputs whose TRUE label is not the target, with the trigger
/// inserted (see [`crate::attacks::triggered_test`]). Returns `0.0` for empty input.
pub fn attack_success_rate(predictions_on_triggered: &[usize], target_label: usize) -> f64 {
    if predictions_on_triggered.is_empty() {
        return 0.0;
    }
    let hits = predictions_on_triggered
        .iter()
        .filter(|&&p| p == target_label)
        .count();
    hits as f64 / predictions_on_triggered.len() as f64
}

/// CA and ASR of one model, both fractions in `[0, 1]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Clean accuracy on the clean test set (higher is better).
    pub ca: f64,
    /// Attack success rate on the triggered test set (lower is better for a defence).
    pub asr: f64,
}

impl Metrics {
    /// Computes both numbers: [`accuracy`] of `clean_predictions` against
    /// `clean_labels`, and [`attack_success_rate`] of `triggered_predictions`
    /// towards `target_label`.
    ///
    /// # Panics
    ///
    /// If `clean_predictions` and `clean_labels` differ in length.
    pub fn compute(
        clean_predictions: &[usize],
        clean_labels: &[usize],
        triggered_predictions: &[usize],
        target_label: usize,
    ) -> Self {
        Self {
            ca: accuracy(clean_predictions, clean_labels),
            asr: attack_success_rate(triggered_predictions, target_label),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_on_hand_computed_cases() {
        assert_eq!(accuracy(&[1, 0, 1, 1], &[1, 0, 0, 1]), 0.75);
        assert_eq!(accuracy(&[0, 0], &[0, 0]), 1.0);
        assert_eq!(accuracy(&[1, 1, 1], &[0, 0, 0]), 0.0);
        assert_eq!(accuracy(&[2, 1, 0], &[2, 0, 0]), 2.0 / 3.0);
        assert_eq!(accuracy(&[], &[]), 0.0);
    }

    #[test]
    #[should_panic(expected = "2 predictions for 3 labels")]
    fn accuracy_rejects_mismatched_lengths() {
        accuracy(&[0, 1], &[0, 1, 1]);
    }

    #[test]
    fn asr_on_hand_computed_cases() {
        assert_eq!(attack_success_rate(&[1, 1, 0, 1, 0], 1), 0.6);
        assert_eq!(attack_success_rate(&[1, 1, 0, 1, 0], 0), 0.4);
        assert_eq!(attack_success_rate(&[0, 0], 1), 0.0);
        assert_eq!(attack_success_rate(&[], 1), 0.0);
    }

    #[test]
    fn metrics_compute_and_serialize() {
        let m = Metrics::compute(&[1, 0, 1, 0], &[1, 0, 0, 0], &[1, 0, 1, 1], 1);
        assert_eq!(
            m,
            Metrics {
                ca: 0.75,
                asr: 0.75
            }
        );
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "{\"ca\":0.75,\"asr\":0.75}");
        assert_eq!(serde_json::from_str::<Metrics>(&json).unwrap(), m);
    }
}
