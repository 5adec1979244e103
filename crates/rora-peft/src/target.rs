//! Choosing layers by module path: exact path, suffix, or regular expression.

use regex::Regex;

/// A pattern selecting layers by module path.
#[derive(Debug, Clone)]
pub enum TargetPattern {
    /// The whole path, e.g. `encoder.layers.0.attention.query`.
    Exact(String),
    /// A trailing run of path components, e.g. `query` or `attention.query`: matches a path
    /// equal to it or ending with `.` + it (PEFT's rule for `target_modules` names).
    Suffix(String),
    /// A regular expression that must match the whole path (PEFT's rule for a regex
    /// `target_modules` string).
    Regex(Regex),
}

/// A target pattern that is malformed or selects nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TargetError {
    /// A regular expression does not compile.
    #[error("invalid target regex {pattern:?}: {message}")]
    InvalidRegex {
        /// The pattern.
        pattern: String,
        /// The regex engine's message.
        message: String,
    },
    /// No pattern was given.
    #[error("no target patterns given")]
    NoPatterns,
    /// A selection ([`LayerSelection`](crate::LayerSelection)) keeps no layer.
    #[error("{selection} selects no layer; candidates are: {}", candidates.join(", "))]
    NothingSelected {
        /// The selection, described.
        selection: String,
        /// Paths that could have been selected (up to 20).
        candidates: Vec<String>,
    },
    /// A pattern matches no layer of the model (strict targeting).
    #[error("target pattern {pattern:?} matches no layer; candidates are: {}", candidates.join(", "))]
    Unmatched {
        /// The pattern, as written.
        pattern: String,
        /// Paths that could have been targeted (up to 20).
        candidates: Vec<String>,
    },
}

impl TargetPattern {
    /// Parse a pattern: `re:<regex>` is a regex, `=<path>` an exact path, anything else a
    /// suffix.
    ///
    /// ```
    /// use rora_peft::TargetPattern;
    /// let q = TargetPattern::parse("query").unwrap();
    /// assert!(q.matches("encoder.layers.3.attention.query"));
    /// assert!(!q.matches("encoder.layers.3.attention.query_norm"));
    /// let re = TargetPattern::parse(r"re:.*\.(query|value)").unwrap();
    /// assert!(re.matches("layers.0.value"));
    /// ```
    pub fn parse(s: &str) -> Result<Self, TargetError> {
        if let Some(re) = s.strip_prefix("re:") {
            Self::regex(re)
        } else if let Some(path) = s.strip_prefix('=') {
            Ok(TargetPattern::Exact(path.to_string()))
        } else {
            Ok(TargetPattern::Suffix(s.to_string()))
        }
    }

    /// A regex pattern (anchored: it must match the whole path).
    pub fn regex(re: &str) -> Result<Self, TargetError> {
        Regex::new(&format!("^(?:{re})$"))
            .map(TargetPattern::Regex)
            .map_err(|e| TargetError::InvalidRegex {
                pattern: re.to_string(),
                message: e.to_string(),
            })
    }

    /// Whether `path` is selected.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            TargetPattern::Exact(p) => path == p,
            TargetPattern::Suffix(s) => {
                path == s
                    || (path.len() > s.len()
                        && path.ends_with(s.as_str())
                        && path.as_bytes()[path.len() - s.len() - 1] == b'.')
            }
            TargetPattern::Regex(re) => re.is_match(path),
        }
    }

    /// The pattern as it would be written to [`parse`](Self::parse).
    pub fn as_written(&self) -> String {
        match self {
            TargetPattern::Exact(p) => format!("={p}"),
            TargetPattern::Suffix(s) => s.clone(),
            TargetPattern::Regex(re) => {
                let s = re.as_str();
                format!("re:{}", &s[4..s.len() - 2])
            }
        }
    }
}

/// Which layers get adapters (PEFT's `target_modules`) and which other modules stay
/// trainable beside them (PEFT's `modules_to_save`, e.g. a classification head).
///
/// A path is targeted when any pattern matches it. Strict by default:
/// [`check_all_used`](Self::check_all_used) reports a pattern that matched nothing (PEFT
/// silently ignores a misspelt name next to valid ones; we do not).
///
/// ```
/// use rora_peft::Targets;
/// let t = Targets::parse(&["query", "value"])?.with_modules_to_save(&["classifier"])?;
/// assert!(t.matches("layers.0.attention.value") && !t.matches("classifier"));
/// assert!(t.saves("classifier") && !t.saves("layers.0.attention.value"));
/// # Ok::<(), rora_peft::TargetError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Targets {
    patterns: Vec<TargetPattern>,
    modules_to_save: Vec<TargetPattern>,
    strict: bool,
}

impl Targets {
    /// Targets from patterns.
    pub fn new(patterns: Vec<TargetPattern>) -> Result<Self, TargetError> {
        if patterns.is_empty() {
            return Err(TargetError::NoPatterns);
        }
        Ok(Targets {
            patterns,
            modules_to_save: Vec::new(),
            strict: true,
        })
    }

    /// Targets from pattern strings (see [`TargetPattern::parse`]).
    ///
    /// ```
    /// use rora_peft::Targets;
    /// let t = Targets::parse(&["query", "value"]).unwrap();
    /// assert!(t.matches("layers.0.attention.value"));
    /// let paths = ["layers.0.attention.query", "layers.0.attention.value"];
    /// assert!(t.check_all_used(paths.iter().copied()).is_ok());
    /// let typo = Targets::parse(&["query", "valeu"]).unwrap();
    /// assert!(typo.check_all_used(paths.iter().copied()).is_err());
    /// ```
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, TargetError> {
        Self::new(
            patterns
                .iter()
                .map(|p| TargetPattern::parse(p.as_ref()))
                .collect::<Result<_, _>>()?,
        )
    }

    /// Also keep the modules matching `patterns` trainable (PEFT's `modules_to_save`): every
    /// parameter of a matching module (a path prefix of the parameter's path) stays
    /// trainable when the rest of the model is frozen. Same syntax as the targets.
    pub fn with_modules_to_save<S: AsRef<str>>(
        mut self,
        patterns: &[S],
    ) -> Result<Self, TargetError> {
        self.modules_to_save = patterns
            .iter()
            .map(|p| TargetPattern::parse(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// The `modules_to_save` patterns.
    pub fn modules_to_save(&self) -> &[TargetPattern] {
        &self.modules_to_save
    }

    /// Whether the module at `path` is to stay trainable.
    pub fn saves(&self, path: &str) -> bool {
        self.modules_to_save.iter().any(|p| p.matches(path))
    }

    /// With strict targeting, an error for the first `modules_to_save` pattern that selects
    /// none of the module paths `paths`.
    pub fn check_modules_to_save_used<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(), TargetError> {
        self.check_used(&self.modules_to_save, paths)
    }

    /// Do not report patterns that match nothing.
    pub fn lenient(mut self) -> Self {
        self.strict = false;
        self
    }

    /// The patterns.
    pub fn patterns(&self) -> &[TargetPattern] {
        &self.patterns
    }

    /// Whether any pattern selects `path`.
    pub fn matches(&self, path: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(path))
    }

    /// With strict targeting, an error for the first pattern that selects none of `paths`.
    pub fn check_all_used<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(), TargetError> {
        self.check_used(&self.patterns, paths)
    }

    fn check_used<'a>(
        &self,
        patterns: &[TargetPattern],
        paths: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(), TargetError> {
        if !self.strict {
            return Ok(());
        }
        for p in patterns {
            if !paths.clone().into_iter().any(|path| p.matches(path)) {
                return Err(TargetError::Unmatched {
                    pattern: p.as_written(),
                    candidates: paths.into_iter().take(20).map(str::to_string).collect(),
                });
            }
        }
        Ok(())
    }

    /// A regex over *parameter* paths selecting the `.weight` of every targeted layer, for
    /// burn's `ParamGroup::from_regex` (used with `Module::apply_lora`).
    pub fn weight_param_regex(&self) -> String {
        let alternatives: Vec<String> = self
            .patterns
            .iter()
            .map(|p| match p {
                TargetPattern::Exact(path) => format!("^{}\\.weight$", regex::escape(path)),
                TargetPattern::Suffix(s) => format!("(?:^|\\.){}\\.weight$", regex::escape(s)),
                TargetPattern::Regex(re) => {
                    let s = re.as_str();
                    format!("^(?:{})\\.weight$", &s[4..s.len() - 2])
                }
            })
            .collect();
        alternatives.join("|")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_respects_component_boundaries() {
        let p = TargetPattern::parse("attention.value").unwrap();
        assert!(p.matches("layers.1.attention.value"));
        assert!(p.matches("attention.value"));
        assert!(!p.matches("layers.1.self_attention.value"));
        assert!(!p.matches("layers.1.attention.value.x"));
    }

    #[test]
    fn exact_and_regex() {
        let e = TargetPattern::parse("=layers.0.q").unwrap();
        assert!(e.matches("layers.0.q") && !e.matches("x.layers.0.q"));
        let r = TargetPattern::parse(r"re:layers\.[12]\.(q|v)").unwrap();
        assert!(r.matches("layers.2.v") && !r.matches("layers.3.v") && !r.matches("xlayers.2.v"));
        assert_eq!(r.as_written(), r"re:layers\.[12]\.(q|v)");
        assert!(matches!(
            TargetPattern::parse("re:(unclosed"),
            Err(TargetError::InvalidRegex { .. })
        ));
    }

    #[test]
    fn unmatched_pattern_is_named() {
        let t = Targets::parse(&["q", "vv"]).unwrap();
        let err = t.check_all_used(["a.q", "a.v"]).unwrap_err();
        assert!(matches!(err, TargetError::Unmatched { ref pattern, .. } if pattern == "vv"));
        assert!(t.lenient().check_all_used(["a.q", "a.v"]).is_ok());
    }

    #[test]
    fn weight_regex_selects_the_same_layers() {
        let t = Targets::parse(&["query", r"re:.*\.out", "=a.b"]).unwrap();
        let re = Regex::new(&t.weight_param_regex()).unwrap();
        for path in [
            "x.query",
            "query",
            "layers.0.out",
            "a.b",
            "a.bb",
            "x.query2",
            "c.a.b",
        ] {
            assert_eq!(
                re.is_match(&format!("{path}.weight")),
                t.matches(path),
                "{path}"
            );
        }
    }
}
