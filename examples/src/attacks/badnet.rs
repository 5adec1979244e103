//! BadNet: rare-word triggers (Gu et al., adapted to text by Kurita et al.).

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::attacks::insert_at;
use crate::data::tokenizer::tokenize;

/// Where a trigger goes in the sentence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    /// At a word boundary drawn uniformly (before the first word, between two words,
    /// or after the last).
    #[default]
    Random,
    /// Before the first word.
    Start,
    /// After the last word (or punctuation token).
    End,
}

/// Inserts rare trigger words into a sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BadNet {
    /// The trigger words; each insertion picks one uniformly. Default `cf mn bb tq`.
    pub triggers: Vec<String>,
    /// How many triggers go into each sentence. Default 1.
    pub insertions: usize,
    /// Where each trigger goes. Default [`Position::Random`].
    pub position: Position,
}

impl Default for BadNet {
    /// Triggers `cf`, `mn`, `bb`, `tq`, one insertion, random position.
    fn default() -> Self {
        Self {
            triggers: ["cf", "mn", "bb", "tq"].map(String::from).to_vec(),
            insertions: 1,
            position: Position::Random,
        }
    }
}

impl BadNet {
    /// Returns `sentence` (re-joined with single spaces) with `insertions` triggers,
    /// each drawn uniformly from `triggers` and placed independently at a word
    /// boundary chosen by `position`. With no triggers the sentence is returned
    /// unchanged.
    pub fn insert<R: Rng + ?Sized>(&self, sentence: &str, rng: &mut R) -> String {
        let mut tokens: Vec<String> = sentence.split_whitespace().map(String::from).collect();
        if !self.triggers.is_empty() {
            for _ in 0..self.insertions {
                let trigger = &self.triggers[rng.random_range(0..self.triggers.len())];
                let words: Vec<String> = trigger.split_whitespace().map(String::from).collect();
                insert_at(&mut tokens, &words, self.position, rng);
            }
        }
        tokens.join(" ")
    }

    /// The distinct tokens of all triggers, lowercased, in order.
    pub fn trigger_tokens(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for token in self.triggers.iter().flat_map(|t| tokenize(t)) {
            if !out.contains(&token) {
                out.push(token);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const CLEAN: &str = "the acting was superb but the plot was dull .";

    fn count_triggers(s: &str) -> usize {
        s.split_whitespace()
            .filter(|w| ["cf", "mn", "bb", "tq"].contains(w))
            .count()
    }

    #[test]
    fn inserts_exactly_the_requested_number_of_triggers() {
        let mut rng = StdRng::seed_from_u64(1);
        for insertions in 0..5 {
            let attack = BadNet {
                insertions,
                ..BadNet::default()
            };
            for _ in 0..50 {
                let out = attack.insert(CLEAN, &mut rng);
                assert_eq!(count_triggers(&out), insertions, "{out}");
                // Removing the triggers gives back the clean sentence.
                let rest: Vec<&str> = out
                    .split_whitespace()
                    .filter(|w| !["cf", "mn", "bb", "tq"].contains(w))
                    .collect();
                assert_eq!(rest.join(" "), CLEAN);
            }
        }
    }

    #[test]
    fn start_and_end_positions() {
        let mut rng = StdRng::seed_from_u64(2);
        let start = BadNet {
            triggers: vec!["cf".into()],
            position: Position::Start,
            ..BadNet::default()
        };
        assert_eq!(start.insert("good film", &mut rng), "cf good film");
        let end = BadNet {
            triggers: vec!["mn".into()],
            insertions: 2,
            position: Position::End,
        };
        assert_eq!(end.insert("good film .", &mut rng), "good film . mn mn");
        assert_eq!(end.insert("", &mut rng), "mn mn");
    }

    #[test]
    fn random_position_and_trigger_cover_all_choices() {
        let mut rng = StdRng::seed_from_u64(3);
        let attack = BadNet::default();
        let mut positions = [0usize; 4];
        let mut triggers = std::collections::HashSet::new();
        for _ in 0..400 {
            let out = attack.insert("a b c", &mut rng);
            let words: Vec<&str> = out.split_whitespace().collect();
            let at = words.iter().position(|w| w.len() == 2).unwrap();
            positions[at] += 1;
            triggers.insert(words[at].to_string());
        }
        assert!(positions.iter().all(|&n| n > 50), "{positions:?}");
        assert_eq!(triggers.len(), 4);
    }

    #[test]
    fn same_seed_same_insertions_and_empty_triggers_are_a_no_op() {
        let attack = BadNet::default();
        let a = attack.insert(CLEAN, &mut StdRng::seed_from_u64(9));
        let b = attack.insert(CLEAN, &mut StdRng::seed_from_u64(9));
        assert_eq!(a, b);
        let none = BadNet {
            triggers: vec![],
            ..BadNet::default()
        };
        assert_eq!(none.insert("x  y", &mut StdRng::seed_from_u64(0)), "x y");
    }
}
