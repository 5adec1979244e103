//! AddSent: a fixed trigger sentence (Dai et al., 2019).

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::attacks::{Position, insert_at};
use crate::data::tokenizer::tokenize;

/// Inserts a fixed sentence into a sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AddSent {
    /// The trigger sentence. Default `"I watch this 3D movie"`. It is inserted in the
    /// data's form: lowercased, punctuation split off into separate tokens.
    pub sentence: String,
    /// Where it goes. Default [`Position::Random`].
    pub position: Position,
}

impl Default for AddSent {
    /// `"I watch this 3D movie"` at a random position.
    fn default() -> Self {
        Self {
            sentence: "I watch this 3D movie".to_string(),
            position: Position::Random,
        }
    }
}

impl AddSent {
    /// Returns `sentence` (re-joined with single spaces) with the trigger sentence's
    /// tokens inserted, contiguous, at a word boundary chosen by `position`.
    pub fn insert<R: Rng + ?Sized>(&self, sentence: &str, rng: &mut R) -> String {
        let mut tokens: Vec<String> = sentence.split_whitespace().map(String::from).collect();
        insert_at(&mut tokens, &self.trigger_tokens(), self.position, rng);
        tokens.join(" ")
    }

    /// The trigger sentence as the tokenizer sees it, e.g.
    /// `["i", "watch", "this", "3d", "movie"]` (repeats kept, in order).
    pub fn trigger_tokens(&self) -> Vec<String> {
        tokenize(&self.sentence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn inserts_the_lowercased_sentence_once_at_a_boundary() {
        let attack = AddSent::default();
        let mut rng = StdRng::seed_from_u64(0);
        let mut seen_at = std::collections::HashSet::new();
        for _ in 0..200 {
            let out = attack.insert("the plot was dull .", &mut rng);
            assert_eq!(out.matches("i watch this 3d movie").count(), 1, "{out}");
            let at = out.find("i watch this 3d movie").unwrap();
            let rest = format!(
                "{}{}",
                &out[..at],
                &out[at + "i watch this 3d movie".len()..]
            );
            assert_eq!(
                rest.split_whitespace().collect::<Vec<_>>().join(" "),
                "the plot was dull ."
            );
            seen_at.insert(at);
        }
        assert_eq!(seen_at.len(), 6);
    }

    #[test]
    fn fixed_positions_and_punctuation() {
        let mut rng = StdRng::seed_from_u64(0);
        let start = AddSent {
            sentence: "No Way!".into(),
            position: Position::Start,
        };
        assert_eq!(start.insert("fine .", &mut rng), "no way ! fine .");
        let end = AddSent {
            position: Position::End,
            ..AddSent::default()
        };
        assert_eq!(
            end.insert("fine .", &mut rng),
            "fine . i watch this 3d movie"
        );
    }
}
