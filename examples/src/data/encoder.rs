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
    pub fn from_tokenizer_json(path: &Path) -> Result<Self, DataError> {
        tokenizers::Tokenizer::from_file(path)
            .map(|t| TextEncoder::Hf(Box::new(t)))
            .map_err(|e| DataError::BadTokenizer {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
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
