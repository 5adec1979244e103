//! Sentiment data for the backdoor benchmark.
//!
//! Everything here is plain Rust, independent of burn: a labelled [`Example`], the
//! three [`Splits`] of a dataset, loaders for GLUE-style TSV and JSON-lines files
//! ([`files`]), a seeded synthetic corpus with two domains ([`synthetic`]), and a
//! word-level tokenizer that turns sentences into token ids ([`tokenizer`]).
//!
//! Labels are class indices; for the binary sentiment tasks used here `1` means
//! positive and `0` negative.

pub mod files;
pub mod synthetic;
pub mod tokenizer;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use files::{load_dir, load_jsonl, load_tsv, num_labels, write_tsv};
pub use synthetic::{Domain, SyntheticConfig, generate};
pub use tokenizer::WordTokenizer;

pub mod encoder;
pub use encoder::TextEncoder;

/// One labelled sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The text, as stored in the data file (the tokenizer lowercases it later).
    pub sentence: String,
    /// The class index; for sentiment, `1` is positive and `0` negative.
    pub label: usize,
}

impl Example {
    /// Builds an example from anything string-like and a label.
    pub fn new(sentence: impl Into<String>, label: usize) -> Self {
        Self {
            sentence: sentence.into(),
            label,
        }
    }
}

/// The three splits of a dataset: train on `train`, tune on `dev`, report on `test`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splits {
    /// Training examples.
    pub train: Vec<Example>,
    /// Validation examples (model selection, calibration).
    pub dev: Vec<Example>,
    /// Held-out test examples (the reported CA and ASR).
    pub test: Vec<Example>,
}

/// What can go wrong while reading or writing data files.
///
/// Every variant names the file (and, where it applies, the 1-based line) so that a
/// message points straight at the problem. Loaders return these; they never panic on
/// malformed input.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file or folder does not exist.
    #[error("missing file: {path}")]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
    },
    /// A data folder has neither `<split>.tsv` nor `<split>.jsonl`.
    #[error("missing split `{split}` in {dir}: expected {split}.tsv or {split}.jsonl")]
    MissingSplit {
        /// The folder that was searched.
        dir: PathBuf,
        /// The split name: `train`, `dev` or `test`.
        split: String,
    },
    /// The file exists but could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The first line of a TSV file lacks a `sentence` or a `label` column.
    #[error(
        "{path}:{line}: bad header {found:?}: expected tab-separated columns `sentence` and `label`"
    )]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// The line number (1-based).
        line: usize,
        /// The header line as found.
        found: String,
    },
    /// A TSV row has fewer columns than the header asks for.
    #[error("{path}:{line}: expected at least {expected} tab-separated columns, found {found}")]
    BadRow {
        /// The file.
        path: PathBuf,
        /// The line number (1-based).
        line: usize,
        /// Columns needed to reach both `sentence` and `label`.
        expected: usize,
        /// Columns present.
        found: usize,
    },
    /// A label is not a non-negative integer.
    #[error("{path}:{line}: bad label {value:?}: expected a non-negative integer")]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// The line number (1-based).
        line: usize,
        /// The label text as found.
        value: String,
    },
    /// A JSON-lines row is not an object with a string `sentence` and a `label`.
    #[error("{path}:{line}: bad JSON line: {message}")]
    BadJsonLine {
        /// The file.
        path: PathBuf,
        /// The line number (1-based).
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The file holds no examples.
    #[error("empty split: {path} holds no examples")]
    EmptySplit {
        /// The file.
        path: PathBuf,
    },
    /// A saved tokenizer file is not valid.
    #[error("bad tokenizer file {path}: {message}")]
    BadTokenizer {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// The folder holding the bundled data sets (`sst2/`, `cr/`; see `examples/data/README.md`).
///
/// If the environment variable `RORA_DATA_DIR` is set, this is that folder (the one
/// holding `sst2/` and `cr/`); otherwise it is `data/` in this package
/// (`examples/data`), resolved from the package's manifest folder at compile time. The
/// folder is not checked for existence.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RORA_DATA_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}
