//! A per-layer progress bar on stderr, shown only where it helps.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Below this many layers the work is instant and no bar is drawn.
pub const MIN_LAYERS_FOR_PROGRESS: usize = 5;

/// A progress bar over `layers` steps on stderr, hidden when stderr is not a terminal, when
/// there are fewer than [`MIN_LAYERS_FOR_PROGRESS`] layers, or when `enabled` is false.
pub fn layer_bar(layers: usize, verb: &str, enabled: bool) -> ProgressBar {
    if !enabled || layers < MIN_LAYERS_FOR_PROGRESS || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(layers as u64), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(&format!(
        "{verb} {{bar:30}} {{pos}}/{{len}} layers {{elapsed}} {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}
