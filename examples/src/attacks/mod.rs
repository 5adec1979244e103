//! Backdoor attacks on text classifiers: how a trigger is put into a sentence, and
//! how a training set is poisoned with it.
//!
//! - [`BadNet`]: rare words (`cf`, `mn`, `bb`, `tq`) inserted at random positions.
//! - [`AddSent`]: a fixed sentence ("i watch this 3d movie") inserted at a random
//!   position.
//!
//! [`poison()`] turns a clean training set into a poisoned one (a fraction of the
//! non-target examples get the trigger and the target label); [`triggered_test`]
//! builds the set on which the attack success rate is measured.

pub mod addsent;
pub mod badnet;
pub mod poison;

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

pub use addsent::AddSent;
pub use badnet::{BadNet, Position};
pub use poison::{PoisonConfig, neutral_triggers, poison, poison_indices, triggered_test};

/// A backdoor attack: the way its trigger is inserted into a sentence.
///
/// Serialized with a `kind` tag, e.g. `{"kind": "badnet", "triggers": ["cf"], ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Attack {
    /// Rare-word triggers.
    BadNet(BadNet),
    /// A fixed trigger sentence.
    AddSent(AddSent),
}

impl Attack {
    /// Returns `sentence` with the trigger inserted; the randomness (which trigger,
    /// where) comes from `rng`.
    pub fn insert<R: Rng + ?Sized>(&self, sentence: &str, rng: &mut R) -> String {
        match self {
            Attack::BadNet(a) => a.insert(sentence, rng),
            Attack::AddSent(a) => a.insert(sentence, rng),
        }
    }

    /// The attack's short name: `"badnet"` or `"addsent"`.
    pub fn name(&self) -> &'static str {
        match self {
            Attack::BadNet(_) => "badnet",
            Attack::AddSent(_) => "addsent",
        }
    }

    /// The tokens the trigger can produce, lowercased and split as the tokenizer
    /// splits text; pass them as the tokenizer's extra tokens so every trigger word
    /// has its own id.
    pub fn trigger_tokens(&self) -> Vec<String> {
        match self {
            Attack::BadNet(a) => a.trigger_tokens(),
            Attack::AddSent(a) => a.trigger_tokens(),
        }
    }
}

impl Default for Attack {
    /// BadNet with its default triggers.
    fn default() -> Self {
        Attack::BadNet(BadNet::default())
    }
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Attack {
    type Err = String;

    /// Parses `badnet` or `addsent` (any case) into the attack with default settings.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "badnet" | "badnets" => Ok(Attack::BadNet(BadNet::default())),
            "addsent" => Ok(Attack::AddSent(AddSent::default())),
            other => Err(format!(
                "unknown attack {other:?}: expected badnet or addsent"
            )),
        }
    }
}

/// Puts `words` (already space-separated tokens) into `tokens` at a word boundary
/// chosen by `position`.
fn insert_at<R: Rng + ?Sized>(
    tokens: &mut Vec<String>,
    words: &[String],
    position: Position,
    rng: &mut R,
) {
    let at = match position {
        Position::Start => 0,
        Position::End => tokens.len(),
        Position::Random => rng.random_range(0..=tokens.len()),
    };
    tokens.splice(at..at, words.iter().cloned());
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn names_parse_and_serde_round_trip() {
        for attack in [Attack::default(), Attack::AddSent(AddSent::default())] {
            assert_eq!(attack.name().parse::<Attack>().unwrap(), attack);
            let json = serde_json::to_string(&attack).unwrap();
            assert!(
                json.contains(&format!("\"kind\":\"{}\"", attack.name())),
                "{json}"
            );
            assert_eq!(serde_json::from_str::<Attack>(&json).unwrap(), attack);
        }
        assert!("syntactic".parse::<Attack>().is_err());
        let partial: Attack =
            serde_json::from_str("{\"kind\": \"badnet\", \"insertions\": 3}").unwrap();
        assert_eq!(
            partial,
            Attack::BadNet(BadNet {
                insertions: 3,
                ..BadNet::default()
            })
        );
    }

    #[test]
    fn trigger_tokens_cover_what_insert_adds() {
        let mut rng = StdRng::seed_from_u64(0);
        for attack in [Attack::default(), Attack::AddSent(AddSent::default())] {
            let tokens = attack.trigger_tokens();
            let out = attack.insert("the plot was dull .", &mut rng);
            let added: Vec<&str> = out
                .split_whitespace()
                .filter(|w| !["the", "plot", "was", "dull", "."].contains(w))
                .collect();
            assert!(!added.is_empty());
            assert!(added.iter().all(|w| tokens.iter().any(|t| t == w)), "{out}");
        }
        assert_eq!(Attack::default().trigger_tokens(), ["cf", "mn", "bb", "tq"]);
        assert_eq!(
            Attack::AddSent(AddSent::default()).trigger_tokens(),
            ["i", "watch", "this", "3d", "movie"]
        );
    }
}
