//! Module paths: field names joined by `.`, exactly as burn's module visitor names them
//! (`encoder.layers.3.attention.query`; a `Vec` or array element is its index).

/// `prefix.name`, or `name` when `prefix` is empty.
///
/// ```
/// use rora_peft::join_path;
/// assert_eq!(join_path("", "fc1"), "fc1");
/// assert_eq!(join_path("layers.0", "query"), "layers.0.query");
/// ```
pub fn join_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The block a layer belongs to: the last all-digit component of its path
/// (`layers.11.attention.query` → 11), `None` when the path has none.
///
/// ```
/// use rora_peft::block_index;
/// assert_eq!(block_index("encoder.layers.11.attention.query"), Some(11));
/// assert_eq!(block_index("classifier"), None);
/// ```
pub fn block_index(path: &str) -> Option<usize> {
    path.split('.').rev().find_map(|c| c.parse().ok())
}
