//! Learner metrics of RoRA: Ω and the strength ratio, read from [`RoraStats`].

use std::sync::Arc;

use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};

use super::RoraStats;

/// A numeric metric over [`RoraStats`], averaged per step.
#[derive(Clone)]
struct StatMetric {
    name: MetricName,
    state: NumericMetricState,
}

impl StatMetric {
    fn new(name: &str) -> Self {
        StatMetric {
            name: Arc::new(name.to_string()),
            state: NumericMetricState::default(),
        }
    }

    fn record(&mut self, value: Option<f64>) -> SerializedEntry {
        let format = FormatOptions::new(self.name.clone()).precision(4);
        match value {
            Some(v) => {
                self.state.update(v, 1);
                self.state.compute_update(format)
            }
            None => SerializedEntry::not_available(None),
        }
    }
}

macro_rules! stat_metric {
    ($(#[$doc:meta])* $name:ident, $label:expr, |$stats:ident| $value:expr) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(StatMetric);

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $name {
            /// A new metric.
            pub fn new() -> Self {
                $name(StatMetric::new($label))
            }
        }

        impl Metric for $name {
            type Input = RoraStats;

            fn name(&self) -> MetricName {
                self.0.name.clone()
            }

            fn attributes(&self) -> MetricAttributes {
                NumericAttributes {
                    unit: None,
                    higher_is_better: false,
                }
                .into()
            }

            fn update(
                &mut self,
                $stats: &RoraStats,
                _metadata: &MetricMetadata,
            ) -> Result<SerializedEntry, burn::tensor::TensorReadError> {
                let value: Option<f64> = $value;
                Ok(self.0.record(value))
            }

            fn compute(&mut self) -> Result<SerializedEntry, burn::tensor::TensorReadError> {
                Ok(self
                    .0
                    .state
                    .compute_final(FormatOptions::new(self.0.name.clone()).precision(4)))
            }

            fn clear(&mut self) {
                self.0.state.reset()
            }
        }

        impl Numeric for $name {
            fn value(&self) -> Option<NumericEntry> {
                Some(self.0.state.current_value())
            }

            fn running_value(&self) -> Option<NumericEntry> {
                Some(self.0.state.running_value())
            }

            fn final_value(&self) -> NumericEntry {
                self.0.state.final_value()
            }
        }
    };
}

stat_metric!(
    /// `Ω = Σℓ ‖Ukᵀ·B‖F² + ‖A·Vk‖F²` over the prepared layers (without λ): how much of the
    /// adapters lies in the frozen weights' top-`k` subspaces.
    OmegaMetric,
    "RoRA Omega",
    |stats| stats
        .omega
        .as_ref()
        .and_then(|o| o.clone().try_into_scalar::<f64>().ok())
);

stat_metric!(
    /// The largest strength ratio `σ1(s·B·A)/σ1(W0)` over the prepared layers, the
    /// quantity Pt rescales.
    StrengthRatioMetric,
    "RoRA strength ratio (max)",
    |stats| stats.strength_ratios().into_iter().reduce(f64::max)
);
