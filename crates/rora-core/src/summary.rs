//! Parameter counts in PEFT's `print_trainable_parameters` format.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// Trainable and total parameter counts of a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParamSummary {
    /// Parameters that receive gradients (on an autodiff device; 0 on a plain one, where
    /// nothing is trainable).
    pub trainable: usize,
    /// All float parameters.
    pub total: usize,
}

impl ParamSummary {
    /// Count the float parameters of `module`.
    pub fn of<M: Module>(module: &M) -> Self {
        let mut counter = Counter {
            summary: ParamSummary {
                trainable: 0,
                total: 0,
            },
        };
        module.visit(&mut counter);
        counter.summary
    }

    /// Trainable share in percent.
    pub fn trainable_percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.trainable as f64 / self.total as f64
        }
    }
}

impl std::fmt::Display for ParamSummary {
    /// `trainable params: 1,024 || all params: 10,240 || trainable%: 10.0000`, as PEFT prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            thousands(self.trainable),
            thousands(self.total),
            self.trainable_percent()
        )
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

struct Counter {
    summary: ParamSummary,
}

impl ModuleVisitor for Counter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let n = param.shape().num_elements();
        self.summary.total += n;
        if param.is_require_grad() {
            self.summary.trainable += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_peft() {
        let s = ParamSummary {
            trainable: 1_234_567,
            total: 100_000_000,
        };
        assert_eq!(
            s.to_string(),
            "trainable params: 1,234,567 || all params: 100,000,000 || trainable%: 1.2346"
        );
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }
}
