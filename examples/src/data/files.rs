//! Loading labelled sentences from disk.
//!
//! Two formats are read:
//!
//! - **TSV**, as in GLUE's SST-2: a header line naming the columns, tab-separated,
//!   which must include `sentence` and `label` (in any order, other columns are
//!   ignored), then one example per line. No quoting: a sentence cannot hold a tab.
//! - **JSON lines**: one object per line, `{"sentence": "...", "label": 1}`. The label
//!   may also be a string of digits (`"1"`).
//!
//! Blank lines are skipped in both formats, and Windows line endings are accepted.
//! A file with no examples is an error ([`DataError::EmptySplit`]).

use std::path::{Path, PathBuf};

use crate::data::{DataError, Example, Splits};

/// Reads a whole file, mapping "not found" to [`DataError::MissingFile`].
fn read_file(path: &Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|source| {
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
    })
}

/// Parses a label: a non-negative integer, surrounding spaces allowed.
fn parse_label(value: &str, path: &Path, line: usize) -> Result<usize, DataError> {
    value
        .trim()
        .parse::<usize>()
        .map_err(|_| DataError::BadLabel {
            path: path.to_path_buf(),
            line,
            value: value.to_string(),
        })
}

/// Loads a GLUE-style TSV file (header with `sentence` and `label` columns).
///
/// Errors: [`DataError::MissingFile`] if the file does not exist,
/// [`DataError::BadHeader`] if the header lacks either column, [`DataError::BadRow`]
/// for a row with too few columns, [`DataError::BadLabel`] for a label that is not a
/// non-negative integer, [`DataError::EmptySplit`] if there are no rows.
pub fn load_tsv(path: impl AsRef<Path>) -> Result<Vec<Example>, DataError> {
    let path = path.as_ref();
    let text = read_file(path)?;
    let mut lines = text.lines().enumerate();

    let header = lines.next().map(|(_, l)| l).unwrap_or("");
    let header = header.strip_prefix('\u{feff}').unwrap_or(header);
    let columns: Vec<&str> = header.split('\t').map(str::trim).collect();
    let find = |name: &str| columns.iter().position(|c| c.eq_ignore_ascii_case(name));
    let (Some(sentence_col), Some(label_col)) = (find("sentence"), find("label")) else {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            line: 1,
            found: header.to_string(),
        });
    };
    let needed = sentence_col.max(label_col) + 1;

    let mut examples = Vec::new();
    for (index, line) in lines {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() < needed {
            return Err(DataError::BadRow {
                path: path.to_path_buf(),
                line: line_no,
                expected: needed,
                found: fields.len(),
            });
        }
        let label = parse_label(fields[label_col], path, line_no)?;
        examples.push(Example::new(fields[sentence_col].trim(), label));
    }
    if examples.is_empty() {
        return Err(DataError::EmptySplit {
            path: path.to_path_buf(),
        });
    }
    Ok(examples)
}

/// Writes `examples` as a TSV file [`load_tsv`] reads back: a `sentence<TAB>label` header,
/// one row per example. A tab or line break inside a sentence becomes a space (the
/// tokenizers split on both alike).
///
/// Errors: [`DataError::Io`] if the file cannot be written.
pub fn write_tsv(path: impl AsRef<Path>, examples: &[Example]) -> Result<(), DataError> {
    let path = path.as_ref();
    let mut text = String::from("sentence\tlabel\n");
    for e in examples {
        let sentence = e.sentence.replace(['\t', '\n', '\r'], " ");
        text.push_str(&format!("{sentence}\t{}\n", e.label));
    }
    std::fs::write(path, text).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a JSON-lines file: one `{"sentence": ..., "label": ...}` object per line.
///
/// Errors: [`DataError::MissingFile`], [`DataError::BadJsonLine`] for a line that is
/// not JSON, not an object, or lacks a string `sentence` or a `label`,
/// [`DataError::BadLabel`] for a label that is not a non-negative integer (or a
/// string of digits), [`DataError::EmptySplit`] if there are no rows.
pub fn load_jsonl(path: impl AsRef<Path>) -> Result<Vec<Example>, DataError> {
    let path = path.as_ref();
    let text = read_file(path)?;
    let bad = |line: usize, message: String| DataError::BadJsonLine {
        path: path.to_path_buf(),
        line,
        message,
    };

    let mut examples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = if index == 0 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        };
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(line_no, e.to_string()))?;
        let object = value
            .as_object()
            .ok_or_else(|| bad(line_no, "expected a JSON object".to_string()))?;
        let sentence = object
            .get("sentence")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| bad(line_no, "missing string field `sentence`".to_string()))?;
        let label = match object.get("label") {
            None => return Err(bad(line_no, "missing field `label`".to_string())),
            Some(serde_json::Value::String(s)) => parse_label(s, path, line_no)?,
            Some(v) => match v.as_u64().and_then(|l| usize::try_from(l).ok()) {
                Some(l) => l,
                None => {
                    return Err(DataError::BadLabel {
                        path: path.to_path_buf(),
                        line: line_no,
                        value: v.to_string(),
                    });
                }
            },
        };
        examples.push(Example::new(sentence, label));
    }
    if examples.is_empty() {
        return Err(DataError::EmptySplit {
            path: path.to_path_buf(),
        });
    }
    Ok(examples)
}

/// Loads one split file, choosing the parser by extension (`.jsonl` or else TSV).
fn load_file(path: &Path) -> Result<Vec<Example>, DataError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl") => load_jsonl(path),
        _ => load_tsv(path),
    }
}

/// Finds `<dir>/<split>.tsv`, else `<dir>/<split>.jsonl`.
fn split_path(dir: &Path, split: &str) -> Result<PathBuf, DataError> {
    ["tsv", "jsonl"]
        .iter()
        .map(|ext| dir.join(format!("{split}.{ext}")))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::MissingSplit {
            dir: dir.to_path_buf(),
            split: split.to_string(),
        })
}

/// Loads a data folder holding `train`, `dev` and `test`, each as `.tsv` or `.jsonl`
/// (`.tsv` wins when both exist).
///
/// Errors: [`DataError::MissingFile`] if the folder does not exist,
/// [`DataError::MissingSplit`] naming the first split with no file, and any error of
/// [`load_tsv`] or [`load_jsonl`].
pub fn load_dir(dir: impl AsRef<Path>) -> Result<Splits, DataError> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(DataError::MissingFile {
            path: dir.to_path_buf(),
        });
    }
    let train = split_path(dir, "train")?;
    let dev = split_path(dir, "dev")?;
    let test = split_path(dir, "test")?;
    Ok(Splits {
        train: load_file(&train)?,
        dev: load_file(&dev)?,
        test: load_file(&test)?,
    })
}

/// The number of classes: one more than the largest label, `0` for no examples.
pub fn num_labels(examples: &[Example]) -> usize {
    examples.iter().map(|e| e.label + 1).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::data_dir;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn write_tsv_round_trips_through_load_tsv() {
        let dir = tempfile::tempdir().unwrap();
        let examples = vec![
            Example::new("a fine film , really", 1),
            Example::new("not \"good\" at all", 0),
            Example::new("tab\there", 2),
        ];
        let path = dir.path().join("x.tsv");
        write_tsv(&path, &examples).unwrap();
        let back = load_tsv(&path).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[..2], examples[..2]);
        assert_eq!(back[2], Example::new("tab here", 2));
    }

    #[test]
    fn loads_the_bundled_sst2_and_cr_sets() {
        for (name, train_len, dev_len, test_len) in
            [("sst2", 6920, 872, 1821), ("cr", 2500, 500, 775)]
        {
            let dir = data_dir().join(name);
            let splits = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(splits.train.len(), train_len, "{name}");
            assert_eq!(splits.dev.len(), dev_len, "{name}");
            assert_eq!(splits.test.len(), test_len, "{name}");
            assert_eq!(num_labels(&splits.train), 2);
            // CR's train split really holds 4 rows with an empty sentence; they load
            // as empty sentences rather than being dropped.
            let empty = splits
                .train
                .iter()
                .filter(|e| e.sentence.is_empty())
                .count();
            assert!(empty <= 4, "{name}: {empty} empty sentences");
        }
        let sst2 = load_tsv(data_dir().join("sst2/train.tsv")).unwrap();
        assert!(sst2[0].sentence.starts_with("a stirring , funny"));
        assert_eq!(sst2[0].label, 1);
        assert_eq!(sst2[1].label, 0);
    }

    #[test]
    fn header_columns_may_come_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "x.tsv",
            "id\tlabel\tsentence\r\n7\t0\tbad film\r\n\n8\t1\tgood film\r\n",
        );
        let ex = load_tsv(&path).unwrap();
        assert_eq!(
            ex,
            vec![Example::new("bad film", 0), Example::new("good film", 1)]
        );
    }

    #[test]
    fn malformed_tsv_gives_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();

        let missing = load_tsv(d.join("nope.tsv")).unwrap_err();
        assert!(
            matches!(missing, DataError::MissingFile { .. }),
            "{missing}"
        );

        let p = write(d, "h.tsv", "text\tlabel\nfoo\t1\n");
        let e = load_tsv(&p).unwrap_err();
        assert!(matches!(e, DataError::BadHeader { line: 1, .. }), "{e}");

        let p = write(d, "empty.tsv", "");
        assert!(matches!(
            load_tsv(&p).unwrap_err(),
            DataError::BadHeader { .. }
        ));

        let p = write(d, "l.tsv", "sentence\tlabel\nfine\t1\nbroken\tpos\n");
        let e = load_tsv(&p).unwrap_err();
        assert!(matches!(&e, DataError::BadLabel { line: 3, value, .. } if value == "pos"));
        assert!(e.to_string().contains("l.tsv:3"), "{e}");

        let p = write(d, "neg.tsv", "sentence\tlabel\nfine\t-1\n");
        assert!(matches!(
            load_tsv(&p).unwrap_err(),
            DataError::BadLabel { line: 2, .. }
        ));

        let p = write(d, "r.tsv", "sentence\tlabel\nno tab here\n");
        let e = load_tsv(&p).unwrap_err();
        assert!(matches!(
            e,
            DataError::BadRow {
                line: 2,
                expected: 2,
                found: 1,
                ..
            }
        ));

        let p = write(d, "e.tsv", "sentence\tlabel\n\n");
        assert!(matches!(
            load_tsv(&p).unwrap_err(),
            DataError::EmptySplit { .. }
        ));
    }

    #[test]
    fn jsonl_loads_and_rejects_malformed_lines() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let p = write(
            d,
            "ok.jsonl",
            "{\"sentence\": \"great\", \"label\": 1}\n\n{\"label\": \"0\", \"sentence\": \"awful\"}\n",
        );
        assert_eq!(
            load_jsonl(&p).unwrap(),
            vec![Example::new("great", 1), Example::new("awful", 0)]
        );

        let cases = [
            (
                "a.jsonl",
                "{\"sentence\": \"x\", \"label\": 1}\nnot json\n",
                2,
                "json",
            ),
            ("b.jsonl", "[1, 2]\n", 1, "json"),
            ("c.jsonl", "{\"label\": 1}\n", 1, "json"),
            ("d.jsonl", "{\"sentence\": \"x\"}\n", 1, "json"),
            (
                "e.jsonl",
                "{\"sentence\": \"x\", \"label\": -1}\n",
                1,
                "label",
            ),
            (
                "f.jsonl",
                "{\"sentence\": \"x\", \"label\": 0.5}\n",
                1,
                "label",
            ),
            (
                "g.jsonl",
                "{\"sentence\": \"x\", \"label\": \"pos\"}\n",
                1,
                "label",
            ),
        ];
        for (name, text, want_line, kind) in cases {
            let e = load_jsonl(write(d, name, text)).unwrap_err();
            match (&e, kind) {
                (DataError::BadJsonLine { line, .. }, "json") => assert_eq!(*line, want_line),
                (DataError::BadLabel { line, .. }, "label") => assert_eq!(*line, want_line),
                _ => panic!("{name}: unexpected error {e}"),
            }
        }
        let p = write(d, "empty.jsonl", "\n\n");
        assert!(matches!(
            load_jsonl(&p).unwrap_err(),
            DataError::EmptySplit { .. }
        ));
    }

    #[test]
    fn load_dir_mixes_formats_and_names_the_missing_split() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "train.tsv", "sentence\tlabel\ngood\t1\nbad\t0\n");
        write(d, "test.jsonl", "{\"sentence\": \"fine\", \"label\": 1}\n");
        let e = load_dir(d).unwrap_err();
        assert!(
            matches!(&e, DataError::MissingSplit { split, .. } if split == "dev"),
            "{e}"
        );
        assert!(e.to_string().contains("dev"));

        write(d, "dev.jsonl", "{\"sentence\": \"meh\", \"label\": 0}\n");
        let splits = load_dir(d).unwrap();
        assert_eq!(splits.train.len(), 2);
        assert_eq!(splits.dev, vec![Example::new("meh", 0)]);
        assert_eq!(splits.test, vec![Example::new("fine", 1)]);

        let e = load_dir(d.join("absent")).unwrap_err();
        assert!(matches!(e, DataError::MissingFile { .. }));
    }

    #[test]
    fn num_labels_is_max_plus_one() {
        assert_eq!(num_labels(&[]), 0);
        assert_eq!(num_labels(&[Example::new("a", 0)]), 1);
        assert_eq!(num_labels(&[Example::new("a", 0), Example::new("b", 2)]), 3);
    }
}
