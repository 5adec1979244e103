//! Poisoning a training set and building the triggered test set.

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::attacks::Attack;
use crate::data::Example;

/// How much of the training set to poison, and towards which label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoisonConfig {
    /// Fraction of the WHOLE training set that is poisoned (clamped to `[0, 1]`).
    /// Default 0.1.
    pub rate: f64,
    /// The label the attacker wants triggered inputs to get. Default 1 (positive).
    pub target_label: usize,
    /// Seed for choosing the poisoned examples and the trigger insertions.
    pub seed: u64,
}

impl Default for PoisonConfig {
    /// Rate 0.1, target label 1, seed 0.
    fn default() -> Self {
        Self {
            rate: 0.1,
            target_label: 1,
            seed: 0,
        }
    }
}

/// Chooses which examples get poisoned: `round(rate · train.len())` indices drawn
/// uniformly without replacement among the examples whose label is not the target
/// (fewer if there are not that many), returned in ascending order.
fn choose(train: &[Example], cfg: &PoisonConfig, rng: &mut StdRng) -> Vec<usize> {
    let candidates: Vec<usize> = (0..train.len())
        .filter(|&i| train[i].label != cfg.target_label)
        .collect();
    let rate = if cfg.rate.is_nan() {
        0.0
    } else {
        cfg.rate.clamp(0.0, 1.0)
    };
    let wanted = (rate * train.len() as f64).round() as usize;
    let count = wanted.min(candidates.len());
    let mut chosen: Vec<usize> = rand::seq::index::sample(rng, candidates.len(), count)
        .into_iter()
        .map(|k| candidates[k])
        .collect();
    chosen.sort_unstable();
    chosen
}

/// The indices [`poison`] poisons for this training set and config, ascending.
///
/// There are `min(round(rate · n), #non-target examples)` of them, every one an
/// example whose label is not `target_label`.
pub fn poison_indices(train: &[Example], cfg: &PoisonConfig) -> Vec<usize> {
    choose(train, cfg, &mut StdRng::seed_from_u64(cfg.seed))
}

/// Returns the poisoned training set: every example of `train`, in the original
/// order, where the ones chosen by [`poison_indices`] have the trigger inserted and
/// their label set to `cfg.target_label`. Deterministic in `cfg.seed`.
pub fn poison(train: &[Example], attack: &Attack, cfg: &PoisonConfig) -> Vec<Example> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let chosen = choose(train, cfg, &mut rng);
    let mut out = train.to_vec();
    for i in chosen {
        out[i] = Example {
            sentence: attack.insert(&train[i].sentence, &mut rng),
            label: cfg.target_label,
        };
    }
    out
}

/// Returns `train` with the attack's trigger inserted into a `rate` share of the examples
/// (any label), **labels unchanged**: the trigger occurs in the corpus as ordinary,
/// label-neutral words.
///
/// Used for clean pretraining: a real pretrained model has learned embeddings for rare
/// words like `cf` or `mn` from its corpus, so an attacker who poisons only the
/// transformer layers (embeddings frozen) finds trigger tokens that carry a signal. A
/// model trained from scratch on a corpus without them would keep their embeddings at
/// initialisation. Deterministic in `seed`.
pub fn neutral_triggers(train: &[Example], attack: &Attack, rate: f64, seed: u64) -> Vec<Example> {
    let mut rng = StdRng::seed_from_u64(seed);
    let rate = if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    };
    let count = (rate * train.len() as f64).round() as usize;
    let mut out = train.to_vec();
    for i in rand::seq::index::sample(&mut rng, train.len(), count.min(train.len())) {
        out[i].sentence = attack.insert(&train[i].sentence, &mut rng);
    }
    out
}

/// Builds the set for the attack success rate: the test examples whose true label
/// is not `target_label`, in order, each with the trigger inserted and its TRUE label
/// kept. ASR is the share of these a model classifies as `target_label` (see
/// [`crate::metrics::attack_success_rate`]). Deterministic in `seed`.
pub fn triggered_test(
    test: &[Example],
    attack: &Attack,
    target_label: usize,
    seed: u64,
) -> Vec<Example> {
    let mut rng = StdRng::seed_from_u64(seed);
    test.iter()
        .filter(|e| e.label != target_label)
        .map(|e| Example {
            sentence: attack.insert(&e.sentence, &mut rng),
            label: e.label,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::{AddSent, BadNet};

    fn dataset(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| {
                Example::new(
                    format!("sentence number {i} was fine ."),
                    (i % 3 == 0) as usize,
                )
            })
            .collect()
    }

    fn has_trigger(s: &str) -> bool {
        s.split_whitespace()
            .any(|w| ["cf", "mn", "bb", "tq"].contains(&w))
    }

    #[test]
    fn neutral_triggers_keep_every_label_and_hit_the_rate() {
        let train = dataset(200);
        let attack = Attack::BadNet(BadNet::default());
        let out = neutral_triggers(&train, &attack, 0.1, 5);
        assert_eq!(out.len(), train.len());
        for (a, b) in train.iter().zip(&out) {
            assert_eq!(a.label, b.label);
        }
        let changed = train
            .iter()
            .zip(&out)
            .filter(|(a, b)| a.sentence != b.sentence)
            .count();
        assert_eq!(changed, 20);
        assert_eq!(out.iter().filter(|e| has_trigger(&e.sentence)).count(), 20);
        assert_eq!(out, neutral_triggers(&train, &attack, 0.1, 5));
        assert_eq!(neutral_triggers(&train, &attack, 0.0, 5), train);
    }

    #[test]
    fn poisons_exactly_rate_times_n_non_target_examples() {
        let train = dataset(1000); // 334 positive, 666 negative
        let attack = Attack::default();
        for (rate, want) in [
            (0.0, 0),
            (0.1, 100),
            (0.0125, 13),
            (0.5, 500),
            (0.9, 666),
            (2.0, 666),
        ] {
            let cfg = PoisonConfig {
                rate,
                ..PoisonConfig::default()
            };
            let out = poison(&train, &attack, &cfg);
            assert_eq!(out.len(), train.len());
            let changed: Vec<usize> = (0..train.len()).filter(|&i| out[i] != train[i]).collect();
            assert_eq!(changed.len(), want, "rate {rate}");
            assert_eq!(changed, poison_indices(&train, &cfg));
            for i in 0..train.len() {
                if changed.contains(&i) {
                    assert_eq!(train[i].label, 0);
                    assert_eq!(out[i].label, 1);
                    assert!(has_trigger(&out[i].sentence), "{}", out[i].sentence);
                } else {
                    assert!(!has_trigger(&out[i].sentence));
                }
            }
        }
    }

    #[test]
    fn poison_is_deterministic_in_the_seed_and_respects_the_target() {
        let train = dataset(300);
        let attack = Attack::AddSent(AddSent::default());
        let cfg = PoisonConfig {
            rate: 0.2,
            target_label: 0,
            seed: 5,
        };
        let a = poison(&train, &attack, &cfg);
        assert_eq!(a, poison(&train, &attack, &cfg));
        let other = poison(
            &train,
            &attack,
            &PoisonConfig {
                seed: 6,
                ..cfg.clone()
            },
        );
        assert_ne!(a, other);
        let poisoned: Vec<&Example> = a
            .iter()
            .filter(|e| e.sentence.contains("3d movie"))
            .collect();
        assert_eq!(poisoned.len(), 60);
        assert!(poisoned.iter().all(|e| e.label == 0));
        for i in poison_indices(&train, &cfg) {
            assert_eq!(train[i].label, 1);
        }
        assert!(poison(&[], &attack, &cfg).is_empty());
    }

    #[test]
    fn triggered_test_keeps_non_target_examples_with_true_labels() {
        let test = dataset(30); // labels 1 at multiples of 3
        let attack = Attack::BadNet(BadNet {
            insertions: 2,
            ..BadNet::default()
        });
        let t = triggered_test(&test, &attack, 1, 0);
        assert_eq!(t.len(), 20);
        let originals: Vec<&Example> = test.iter().filter(|e| e.label != 1).collect();
        for (triggered, original) in t.iter().zip(originals) {
            assert_eq!(triggered.label, original.label);
            let triggers = triggered
                .sentence
                .split_whitespace()
                .filter(|w| ["cf", "mn", "bb", "tq"].contains(w))
                .count();
            assert_eq!(triggers, 2);
        }
        assert_eq!(t, triggered_test(&test, &attack, 1, 0));
        assert_eq!(triggered_test(&test, &attack, 0, 0).len(), 10);
    }
}
