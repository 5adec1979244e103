//! A word-level tokenizer.
//!
//! Text is lowercased, split on whitespace, and the punctuation marks
//! `. , ! ? ; : " ( )` are cut off into tokens of their own, so `"Great, fun!"`
//! becomes `great , fun !`. The vocabulary is built from a corpus by frequency, with
//! four special tokens first:
//!
//! | id | token   | use                                   |
//! |----|---------|---------------------------------------|
//! | 0  | `[PAD]` | fills a batch row past its length     |
//! | 1  | `[UNK]` | any token not in the vocabulary       |
//! | 2  | `[CLS]` | starts every encoded sentence          |
//! | 3  | `[SEP]` | reserved (not emitted by [`WordTokenizer::encode`]) |
//!
//! Then come the `extra_tokens` given to [`WordTokenizer::build`] (for example the
//! attack triggers, so a trigger gets its own id even when the clean corpus never
//! contains it), then the corpus words, most frequent first.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::DataError;

/// The padding token, id 0.
pub const PAD: &str = "[PAD]";
/// The unknown-word token, id 1.
pub const UNK: &str = "[UNK]";
/// The classification token that starts every encoded sentence, id 2.
pub const CLS: &str = "[CLS]";
/// The separator token, id 3 (reserved).
pub const SEP: &str = "[SEP]";
/// Id of [`PAD`].
pub const PAD_ID: u32 = 0;
/// Id of [`UNK`].
pub const UNK_ID: u32 = 1;
/// Id of [`CLS`].
pub const CLS_ID: u32 = 2;
/// Id of [`SEP`].
pub const SEP_ID: u32 = 3;

const SPECIALS: [&str; 4] = [PAD, UNK, CLS, SEP];
const PUNCTUATION: &[char] = &['.', ',', '!', '?', ';', ':', '"', '(', ')'];

/// Splits a sentence into lowercase word and punctuation tokens.
///
/// `"The plot (sadly) was DULL."` gives `["the", "plot", "(", "sadly", ")", "was",
/// "dull", "."]`.
pub fn tokenize(sentence: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for word in sentence.split_whitespace() {
        let mut current = String::new();
        for c in word.chars() {
            if PUNCTUATION.contains(&c) {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
                tokens.push(c.to_string());
            } else {
                current.extend(c.to_lowercase());
            }
        }
        if !current.is_empty() {
            tokens.push(current);
        }
    }
    tokens
}

/// A word-level vocabulary with encode and save/load.
///
/// Serialized as JSON `{"tokens": [...]}`, the tokens in id order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TokenizerFile", into = "TokenizerFile")]
pub struct WordTokenizer {
    /// Token strings, indexed by id.
    tokens: Vec<String>,
    /// Token string to id.
    ids: HashMap<String, u32>,
}

/// The on-disk form of a [`WordTokenizer`].
#[derive(Serialize, Deserialize)]
struct TokenizerFile {
    tokens: Vec<String>,
}

impl From<WordTokenizer> for TokenizerFile {
    fn from(t: WordTokenizer) -> Self {
        Self { tokens: t.tokens }
    }
}

impl TryFrom<TokenizerFile> for WordTokenizer {
    type Error = String;

    fn try_from(file: TokenizerFile) -> Result<Self, String> {
        if file.tokens.len() < SPECIALS.len() || file.tokens[..SPECIALS.len()] != SPECIALS {
            return Err(format!(
                "the first tokens must be {SPECIALS:?}, found {:?}",
                &file.tokens[..file.tokens.len().min(SPECIALS.len())]
            ));
        }
        let mut tokenizer = Self {
            tokens: Vec::with_capacity(file.tokens.len()),
            ids: HashMap::with_capacity(file.tokens.len()),
        };
        for token in file.tokens {
            if tokenizer.ids.contains_key(&token) {
                return Err(format!("duplicate token {token:?}"));
            }
            tokenizer.push(token);
        }
        Ok(tokenizer)
    }
}

impl WordTokenizer {
    /// Builds a vocabulary from a corpus.
    ///
    /// Ids are assigned in this order: the four special tokens; every token of
    /// `extra_tokens` (each passed through [`tokenize`], so `"I watch this"` adds
    /// `i`, `watch`, `this`); then corpus tokens by descending count, ties broken
    /// alphabetically, until the vocabulary holds `vocab_limit` tokens. The specials
    /// and extras are always kept, so the size is
    /// `max(vocab_limit, 4 + extras)` at most. The result is deterministic.
    pub fn build<'a>(
        sentences: impl IntoIterator<Item = &'a str>,
        vocab_limit: usize,
        extra_tokens: &[&str],
    ) -> Self {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for sentence in sentences {
            for token in tokenize(sentence) {
                *counts.entry(token).or_insert(0) += 1;
            }
        }
        let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

        let mut tokenizer = Self {
            tokens: Vec::new(),
            ids: HashMap::new(),
        };
        for special in SPECIALS {
            tokenizer.push(special.to_string());
        }
        for token in extra_tokens.iter().flat_map(|t| tokenize(t)) {
            if !tokenizer.ids.contains_key(&token) {
                tokenizer.push(token);
            }
        }
        for (token, _) in ranked {
            if tokenizer.tokens.len() >= vocab_limit {
                break;
            }
            if !tokenizer.ids.contains_key(&token) {
                tokenizer.push(token);
            }
        }
        tokenizer
    }

    fn push(&mut self, token: String) {
        let id = u32::try_from(self.tokens.len()).expect("vocabulary larger than u32::MAX");
        self.ids.insert(token.clone(), id);
        self.tokens.push(token);
    }

    /// The number of tokens, special ones included (the embedding table's rows).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of a token, or [`UNK_ID`] if it is not in the vocabulary.
    ///
    /// The exact string is looked up first (so `"[CLS]"` finds the special token),
    /// then its lowercase form (so `"CF"` finds `cf`).
    pub fn token_id(&self, token: &str) -> u32 {
        self.ids
            .get(token)
            .or_else(|| self.ids.get(&token.to_lowercase()))
            .copied()
            .unwrap_or(UNK_ID)
    }

    /// The token string of an id, `None` if out of range.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Encodes a sentence as `[CLS]` followed by its token ids, truncated to
    /// `max_len` ids in all (`[CLS]` included). No padding; unknown tokens become
    /// [`UNK_ID`].
    pub fn encode(&self, sentence: &str, max_len: usize) -> Vec<u32> {
        std::iter::once(CLS_ID)
            .chain(tokenize(sentence).iter().map(|t| self.token_id(t)))
            .take(max_len)
            .collect()
    }

    /// Encodes a batch into one padded, row-major `batch × len` id matrix.
    ///
    /// Returns `(ids, lengths, len)`: `len` is the longest encoded sentence of the
    /// batch (at most `max_len`), each row is [`encode`](Self::encode)'s output padded
    /// with [`PAD_ID`] to `len`, and `lengths[i]` is row `i`'s unpadded length.
    pub fn encode_batch(
        &self,
        sentences: &[&str],
        max_len: usize,
    ) -> (Vec<u32>, Vec<usize>, usize) {
        let rows: Vec<Vec<u32>> = sentences.iter().map(|s| self.encode(s, max_len)).collect();
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut lengths = Vec::with_capacity(rows.len());
        for row in rows {
            lengths.push(row.len());
            ids.extend_from_slice(&row);
            ids.resize(ids.len() + len - row.len(), PAD_ID);
        }
        (ids, lengths, len)
    }

    /// Writes the tokenizer as JSON.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), DataError> {
        let path = path.as_ref();
        let json = serde_json::to_string(self).map_err(|e| DataError::BadTokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        std::fs::write(path, json).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a tokenizer written by [`save`](Self::save).
    ///
    /// Errors: [`DataError::MissingFile`], [`DataError::Io`], or
    /// [`DataError::BadTokenizer`] if the JSON is malformed, does not start with the
    /// four special tokens, or repeats a token.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DataError::MissingFile {
                    path: path.to_path_buf(),
                }
            } else {
                DataError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        serde_json::from_str(&text).map_err(|e| DataError::BadTokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_lowercases_and_splits_punctuation() {
        assert_eq!(
            tokenize("  The plot (sadly) was DULL...\t\"Really\"?"),
            [
                "the", "plot", "(", "sadly", ")", "was", "dull", ".", ".", ".", "\"", "really",
                "\"", "?"
            ]
        );
        assert_eq!(
            tokenize("it's n't re-imagining"),
            ["it's", "n't", "re-imagining"]
        );
        assert!(tokenize("   ").is_empty());
    }

    #[test]
    fn build_orders_specials_extras_then_frequency_with_alphabetical_ties() {
        let corpus = ["b a c", "a b", "a", "d d d d"];
        let t = WordTokenizer::build(corpus, 100, &["cf", "MN", "a"]);
        let tokens: Vec<&str> = (0..t.vocab_size() as u32)
            .map(|i| t.token(i).unwrap())
            .collect();
        // a:3, b:2, c:1, d:4 → d, a(extra already), b, c
        assert_eq!(tokens, [PAD, UNK, CLS, SEP, "cf", "mn", "a", "d", "b", "c"]);
        assert_eq!(t.token_id("[PAD]"), PAD_ID);
        assert_eq!(t.token_id("[SEP]"), SEP_ID);
        assert_eq!(t.token_id("CF"), 4);
        assert_eq!(t.token_id("zzz"), UNK_ID);
        assert_eq!(t.token(99), None);
    }

    #[test]
    fn vocab_limit_caps_corpus_words_but_keeps_extras() {
        let corpus = ["x x x y y z"];
        let t = WordTokenizer::build(corpus, 6, &["cf"]);
        assert_eq!(t.vocab_size(), 6);
        assert_eq!(t.token_id("x"), 5);
        assert_eq!(t.token_id("y"), UNK_ID);
        let t = WordTokenizer::build(corpus, 2, &["i watch this 3d movie"]);
        assert_eq!(t.vocab_size(), 9);
        assert_eq!(t.token_id("3d"), 7);
    }

    #[test]
    fn encode_prepends_cls_and_truncates() {
        let t = WordTokenizer::build(["good movie", "bad movie"], 100, &[]);
        let movie = t.token_id("movie");
        let good = t.token_id("good");
        assert_eq!(
            t.encode("Good movie!", 10),
            vec![CLS_ID, good, movie, UNK_ID]
        );
        assert_eq!(t.encode("Good movie!", 2), vec![CLS_ID, good]);
        assert_eq!(t.encode("", 5), vec![CLS_ID]);
        assert!(t.encode("good", 0).is_empty());
    }

    #[test]
    fn encode_batch_pads_to_longest_row() {
        let t = WordTokenizer::build(["a b c d e"], 100, &[]);
        let (ids, lengths, len) = t.encode_batch(&["a b", "a b c d e", ""], 4);
        assert_eq!(len, 4);
        assert_eq!(lengths, [3, 4, 1]);
        let a = t.token_id("a");
        let b = t.token_id("b");
        let c = t.token_id("c");
        assert_eq!(
            ids,
            [
                CLS_ID, a, b, PAD_ID, //
                CLS_ID, a, b, c, //
                CLS_ID, PAD_ID, PAD_ID, PAD_ID
            ]
        );
        let (ids, lengths, len) = t.encode_batch(&["a", "b"], 64);
        assert_eq!((ids.len(), lengths, len), (4, vec![2, 2], 2));
        let (ids, lengths, len) = t.encode_batch(&[], 64);
        assert!(ids.is_empty() && lengths.is_empty() && len == 0);
    }

    #[test]
    fn save_and_load_round_trip_and_reject_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let t = WordTokenizer::build(["the plot was dull", "the acting was superb"], 50, &["cf"]);
        let path = dir.path().join("tok.json");
        t.save(&path).unwrap();
        let back = WordTokenizer::load(&path).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.encode("the plot cf", 8), t.encode("the plot cf", 8));

        let missing = WordTokenizer::load(dir.path().join("none.json")).unwrap_err();
        assert!(matches!(missing, DataError::MissingFile { .. }));
        for bad in [
            "not json",
            "{\"tokens\": [\"a\"]}",
            "{\"tokens\": [\"[PAD]\", \"[UNK]\", \"[CLS]\", \"[SEP]\", \"x\", \"x\"]}",
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = WordTokenizer::load(&path).unwrap_err();
            assert!(matches!(e, DataError::BadTokenizer { .. }), "{bad}: {e}");
        }
    }
}
