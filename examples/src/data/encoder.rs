//! Turning sentences into token ids: the word-level tokenizer built from the training split,
//! or a HuggingFace `tokenizer.json` (through the `tokenizers` crate).

use std::path::Path;

use super::{DataError, WordTokenizer};

/// A sentence encoder: `[CLS] tokens…` ids, truncated to a maximum length.
#[derive(Debug, Clone)]
pub enum TextEncoder {
    /// Lowercased words, vocabulary from the training split.
    Word(WordTokenizer),
    /// A HuggingFace tokenizer (`tokenizer.json`), e.g. MiniLM's WordPiece.
    Hf(Box<tokenizers::Tokenizer>),
}

impl TextEncoder {
    /// Load a `tokenizer.json`.
    ///
    /// The file's own padding and truncation settings are switched off (all-MiniLM-L6-v2's
    /// pads every sentence to 128 tokens): [`encode`](Self::encode) returns a sentence's
    /// real tokens only, so batches pad to their longest sentence and the attention mask
    /// covers no padding.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self, DataError> {
        let bad = |message: String| DataError::BadTokenizer {
            path: path.to_path_buf(),
            message,
        };
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(path).map_err(|e| bad(e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| bad(e.to_string()))?;
        Ok(TextEncoder::Hf(Box::new(tokenizer)))
    }

    /// Vocabulary size (embedding rows needed).
    pub fn vocab_size(&self) -> usize {
        match self {
            TextEncoder::Word(t) => t.vocab_size(),
            TextEncoder::Hf(t) => t.get_vocab_size(true),
        }
    }

    /// Ids of `sentence`, starting with the classification token, at most `max_len` long.
    /// (The HF tokenizer adds `[CLS]` … `[SEP]` itself; the sequence is cut at `max_len`.)
    pub fn encode(&self, sentence: &str, max_len: usize) -> Vec<u32> {
        match self {
            TextEncoder::Word(t) => t.encode(sentence, max_len),
            TextEncoder::Hf(t) => {
                let mut ids = t
                    .encode(sentence, true)
                    .map(|e| e.get_ids().to_vec())
                    .unwrap_or_default();
                ids.truncate(max_len.max(1));
                if ids.is_empty() {
                    ids.push(0);
                }
                ids
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level `tokenizer.json` that, like all-MiniLM-L6-v2's, pads to a fixed length.
    const PADDING_TOKENIZER: &str = r#"{
      "version": "1.0",
      "truncation": {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0},
      "padding": {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": null,
                  "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
      "added_tokens": [],
      "normalizer": null,
      "pre_tokenizer": {"type": "Whitespace"},
      "post_processor": null,
      "decoder": null,
      "model": {"type": "WordLevel", "vocab": {"[PAD]": 0, "[UNK]": 1, "good": 2, "movie": 3},
                "unk_token": "[UNK]"}
    }"#;

    #[test]
    fn tokenizer_json_padding_and_truncation_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, PADDING_TOKENIZER).unwrap();
        let encoder = TextEncoder::from_tokenizer_json(&path).unwrap();
        assert_eq!(encoder.encode("good movie", 64), vec![2, 3]);
        // Our max_len cuts, not the file's truncation (8).
        let long = ["good"; 12].join(" ");
        assert_eq!(encoder.encode(&long, 64).len(), 12);
        assert_eq!(encoder.encode(&long, 5).len(), 5);
    }
}
