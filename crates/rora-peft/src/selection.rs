//! [`LayerSelection`]: which adapted layers an operation (post-training rescaling, a report)
//! touches — one rule for the library and the `rora` command line.

use serde::{Deserialize, Serialize};

use crate::path::block_index;
use crate::target::{TargetError, Targets};

/// A choice of layers by module path: those matching any of `patterns` (all layers when
/// there are none), restricted to the last `last_blocks` blocks (a block is the last number
/// in the path, see [`block_index`](crate::block_index); layers outside any block, such as
/// a classification head, are kept).
///
/// The default selects every layer. Patterns use [`TargetPattern::parse`]'s syntax (a name
/// matches a trailing run of path components, `re:` is a whole-path regex, `=` an exact
/// path) and are strict: a pattern that selects no layer is an error.
///
/// [`TargetPattern::parse`]: crate::TargetPattern::parse
///
/// ```
/// use rora_peft::LayerSelection;
/// let paths = ["layers.0.query", "layers.0.value", "layers.1.query", "layers.1.value", "head"];
/// assert_eq!(LayerSelection::all().select(paths).unwrap().len(), 5);
/// let last_q = LayerSelection::patterns(["query"]).with_last_blocks(1);
/// assert_eq!(last_q.select(paths).unwrap(), ["layers.1.query"]);
/// assert!(LayerSelection::patterns(["qeury"]).select(paths).is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSelection {
    /// Target patterns; empty selects every layer.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Keep only layers in the last `n` blocks; `None` keeps every matching layer.
    #[serde(default)]
    pub last_blocks: Option<usize>,
}

impl LayerSelection {
    /// Every layer.
    pub fn all() -> Self {
        LayerSelection::default()
    }

    /// The layers matching any of `patterns`.
    pub fn patterns<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Self {
        LayerSelection {
            patterns: patterns.into_iter().map(Into::into).collect(),
            last_blocks: None,
        }
    }

    /// Restrict to the last `n` blocks.
    pub fn with_last_blocks(mut self, n: usize) -> Self {
        self.last_blocks = Some(n);
        self
    }

    /// The selected paths among `paths`, in their order.
    ///
    /// Errors: a pattern is malformed or matches none of `paths`
    /// ([`TargetError::Unmatched`]), or the selection is empty
    /// ([`TargetError::NothingSelected`], e.g. `last_blocks = 0` or no paths at all).
    pub fn select<'a, I>(&self, paths: I) -> Result<Vec<String>, TargetError>
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: Clone,
    {
        let paths = paths.into_iter();
        let matching: Vec<&str> = if self.patterns.is_empty() {
            paths.clone().collect()
        } else {
            let targets = Targets::parse(&self.patterns)?;
            targets.check_all_used(paths.clone())?;
            paths.clone().filter(|p| targets.matches(p)).collect()
        };
        let selected: Vec<String> = match self.last_blocks {
            None => matching.into_iter().map(str::to_string).collect(),
            Some(n) => {
                let mut blocks: Vec<usize> =
                    matching.iter().filter_map(|p| block_index(p)).collect();
                blocks.sort_unstable();
                blocks.dedup();
                let keep = &blocks[blocks.len().saturating_sub(n)..];
                matching
                    .into_iter()
                    .filter(|p| block_index(p).is_none_or(|b| keep.contains(&b)))
                    .map(str::to_string)
                    .collect()
            }
        };
        if selected.is_empty() {
            return Err(TargetError::NothingSelected {
                selection: self.to_string(),
                candidates: paths.take(20).map(str::to_string).collect(),
            });
        }
        Ok(selected)
    }
}

impl std::fmt::Display for LayerSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.patterns.is_empty() {
            write!(f, "all layers")?;
        } else {
            write!(f, "layers matching {}", self.patterns.join(", "))?;
        }
        if let Some(n) = self.last_blocks {
            write!(f, " in the last {n} blocks")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATHS: [&str; 7] = [
        "layers.0.attention.query",
        "layers.0.attention.value",
        "layers.1.attention.query",
        "layers.1.attention.value",
        "layers.2.attention.query",
        "layers.2.attention.value",
        "classifier",
    ];

    #[test]
    fn default_selects_everything_in_order() {
        assert_eq!(LayerSelection::all().select(PATHS).unwrap(), PATHS);
    }

    #[test]
    fn last_blocks_keep_the_highest_block_numbers_and_blockless_layers() {
        let sel = LayerSelection::all().with_last_blocks(2);
        assert_eq!(
            sel.select(PATHS).unwrap(),
            [
                "layers.1.attention.query",
                "layers.1.attention.value",
                "layers.2.attention.query",
                "layers.2.attention.value",
                "classifier"
            ]
        );
        let q = LayerSelection::patterns(["query"]).with_last_blocks(5);
        assert_eq!(q.select(PATHS).unwrap().len(), 3);
    }

    #[test]
    fn unmatched_pattern_and_empty_selection_are_errors() {
        assert!(matches!(
            LayerSelection::patterns(["query", "q_proj"]).select(PATHS),
            Err(TargetError::Unmatched { ref pattern, .. }) if pattern == "q_proj"
        ));
        assert!(matches!(
            LayerSelection::patterns(["query"])
                .with_last_blocks(0)
                .select(PATHS),
            Err(TargetError::NothingSelected { .. })
        ));
        assert!(matches!(
            LayerSelection::all().select([]),
            Err(TargetError::NothingSelected { .. })
        ));
    }
}
