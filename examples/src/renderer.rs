//! A quiet burn-train renderer: a progress bar per split and one line of metrics at its end.
//!
//! burn-train's own renderers are a terminal dashboard (feature `tui`, on a terminal only)
//! and, otherwise, a line per batch. [`EpochRenderer`] sits between: what the examples'
//! hand-written loops print, for the Learner. Hand it to `SupervisedTraining::renderer`.

use std::collections::HashMap;

use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Prints `<label> epoch e/n <split>: <metric> <value> · …` at the end of each split, with
/// an `indicatif` bar while it runs (hidden when stderr is not a terminal).
pub struct EpochRenderer {
    label: String,
    names: HashMap<MetricId, String>,
    /// The latest value of each metric in the current split, in registration order.
    values: Vec<(MetricId, String)>,
    split: String,
    epoch: usize,
    epochs: usize,
    bar: Option<ProgressBar>,
}

impl EpochRenderer {
    /// A renderer whose lines start with `label`.
    pub fn new(label: &str) -> Self {
        EpochRenderer {
            label: label.to_string(),
            names: HashMap::new(),
            values: Vec::new(),
            split: String::new(),
            epoch: 1,
            epochs: 0,
            bar: None,
        }
    }

    fn record(&mut self, state: MetricState) {
        let entry = match state {
            MetricState::Generic(entry) | MetricState::Numeric(entry, _) => entry,
        };
        let value = entry.serialized_entry.formatted;
        match self
            .values
            .iter_mut()
            .find(|(id, _)| *id == entry.metric_id)
        {
            Some((_, v)) => *v = value,
            None => self.values.push((entry.metric_id, value)),
        }
    }

    fn begin_split(&mut self, split: &str, total_items: usize) {
        self.split = split.to_string();
        self.values.clear();
        let bar = ProgressBar::new(total_items as u64);
        if let Ok(style) = ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} {eta}") {
            bar.set_style(style);
        }
        bar.set_message(format!("{} epoch {} {split}", self.label, self.epoch));
        self.bar = Some(bar);
    }

    fn update(&mut self, items_processed: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(items_processed as u64);
        }
    }

    fn finish_split(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let metrics: Vec<String> = self
            .values
            .iter()
            .map(|(id, v)| {
                let name = self.names.get(id).map(String::as_str).unwrap_or("?");
                format!("{name} {v}")
            })
            .collect();
        println!(
            "{} epoch {}/{} {}: {}",
            self.label,
            self.epoch,
            self.epochs,
            self.split,
            metrics.join(" · ")
        );
    }
}

impl MetricsRendererTraining for EpochRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state);
    }
}

impl MetricsRendererEvaluation for EpochRenderer {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.record(state);
    }
}

impl MetricsRenderer for EpochRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id, definition.name.to_string());
    }
}

impl TrainingProgressLogger for EpochRenderer {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _total_items: Option<usize>,
        _label: Option<&str>,
    ) {
        self.epochs = total_epochs;
        self.epoch = starting_epoch.max(1);
    }

    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, total_items: usize) {
        self.begin_split(split, total_items);
    }

    fn update_split(&mut self, items_processed: usize) {
        self.update(items_processed);
    }

    fn end_split(&mut self) {
        self.finish_split();
    }

    fn end(&mut self) {}

    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for EpochRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}

    fn start_test(&mut self, name: &str, total_items: usize) {
        self.begin_split(name, total_items);
    }

    fn update_test_progress(&mut self, items_processed: usize) {
        self.update(items_processed);
    }

    fn end_test(&mut self) {
        self.finish_split();
    }

    fn end_global_progress(&mut self) {}

    fn log_event_evaluation(&mut self, _event: String) {}
}
