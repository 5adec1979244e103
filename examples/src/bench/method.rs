//! The cleaning methods compared, and how each one cleans the poisoned model.

use std::fmt;
use std::time::Instant;

use rora::{LayerSelection, LoraConfig, RescaleTarget, Rora, RoraConfig, Targets};
use serde::{Deserialize, Serialize};

use super::{BenchConfig, BenchError};
use crate::models::SequenceClassifier;
use crate::train::{Encoded, TrainSettings, train};

/// A way to clean the poisoned model with the defender's clean data. Serialized (in
/// `results.json`) as its [`name`](Method::name).
///
/// The RoRA variants are LoRA plus some of RoRA's three mechanisms: **Cl**, dropout on
/// the frozen base branch's output while training; **Tr**, the trigger-insensitive
/// penalty added to the loss; **Pt**, the spectral rescaling of the trained update.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Full fine-tuning: every weight trained, no adapters.
    Full,
    /// Plain LoRA on the targeted projections (the classification head trained too).
    Lora,
    /// RoRA: LoRA with Cl, Tr and Pt.
    Rora,
    /// LoRA with Cl alone: base-branch dropout (`LoraConfig::with_base_dropout`).
    RoraCl,
    /// LoRA with Tr alone: `Rora::penalty` added to the training loss.
    RoraTr,
    /// LoRA with Pt alone: the trained LoRA model rescaled (`Rora::rescale`).
    RoraPt,
    /// DoRA (`LoraConfig::with_use_dora`) in place of LoRA, nothing else (`--adapter dora`).
    Dora,
    /// DoRA with Cl, Tr and Pt: RoRA on DoRA adapters, the paper's Table 5 (`--adapter dora`).
    DoraRora,
}

/// Which adapters the benchmark trains besides full fine-tuning: `lora` (the default), or
/// `dora`, which adds the DoRA and DoRA + RoRA rows to LoRA's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AdapterChoice {
    /// LoRA and RoRA rows.
    #[default]
    Lora,
    /// LoRA and RoRA rows, plus DoRA and DoRA + RoRA.
    Dora,
}

impl Method {
    /// Every method, in table order.
    pub const ALL: [Method; 8] = [
        Method::Full,
        Method::Lora,
        Method::Rora,
        Method::RoraCl,
        Method::RoraTr,
        Method::RoraPt,
        Method::Dora,
        Method::DoraRora,
    ];

    /// The order in which the models of one learning rate are made. `RoraPt` follows
    /// `Lora` because it rescales LoRA's model instead of training its own. Every training
    /// reseeds the device, but a method's adapters are initialised before that, from the
    /// random state the previous training left; so this order is part of what makes a run
    /// reproducible: changing it changes the numbers.
    const CLEANING_ORDER: [Method; 6] = [
        Method::Full,
        Method::Lora,
        Method::RoraPt,
        Method::RoraCl,
        Method::RoraTr,
        Method::Rora,
    ];

    /// The methods a run with `adapter` cleans with, in table order: every method but the
    /// DoRA ones for `lora`, every method for `dora`.
    pub fn run_with(adapter: AdapterChoice) -> Vec<Method> {
        Method::ALL
            .into_iter()
            .filter(|m| adapter == AdapterChoice::Dora || !m.uses_dora())
            .collect()
    }

    /// The cleaning order for `adapter`: the LoRA methods, then (with DoRA) the DoRA ones,
    /// after them so that the LoRA rows are the same numbers as without DoRA.
    fn cleaning_order(adapter: AdapterChoice) -> Vec<Method> {
        let mut order = Method::CLEANING_ORDER.to_vec();
        if adapter == AdapterChoice::Dora {
            order.extend([Method::Dora, Method::DoraRora]);
        }
        order
    }

    /// The name used in tables, charts and `results.json`: `full`, `lora`, `rora`,
    /// `rora-cl`, `rora-tr`, `rora-pt`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Full => "full",
            Method::Lora => "lora",
            Method::Rora => "rora",
            Method::RoraCl => "rora-cl",
            Method::RoraTr => "rora-tr",
            Method::RoraPt => "rora-pt",
            Method::Dora => "dora",
            Method::DoraRora => "dora-rora",
        }
    }

    /// Whether the method trains DoRA adapters.
    pub fn uses_dora(self) -> bool {
        matches!(self, Method::Dora | Method::DoraRora)
    }

    /// Whether the method trains with Cl (base-branch dropout).
    pub fn uses_cl(self) -> bool {
        matches!(self, Method::Rora | Method::RoraCl | Method::DoraRora)
    }

    /// Whether the method trains with Tr (the penalty).
    pub fn uses_tr(self) -> bool {
        matches!(self, Method::Rora | Method::RoraTr | Method::DoraRora)
    }

    /// Whether the method rescales its trained update (Pt).
    pub fn uses_pt(self) -> bool {
        matches!(self, Method::Rora | Method::RoraPt | Method::DoraRora)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A cleaned model and the seconds its training took.
#[derive(Clone)]
pub(super) struct Cleaned<M> {
    pub model: M,
    pub secs: f64,
}

/// What cleaning shares across methods, seeds and learning rates: the poisoned model,
/// where the adapters go (`M::default_targets`, the head trained too) and their LoRA
/// settings, the prepared RoRA (the poisoned `W0`'s cached top-k subspaces, for Tr's
/// penalty, Pt's rescaling and the spectral reports) and the clean training data.
pub(super) struct Cleaner<'a, M> {
    poisoned: M,
    targets: Targets,
    lora: LoraConfig,
    rora: Rora,
    data: &'a Encoded,
    cfg: &'a BenchConfig,
    label: &'a str,
}

impl<'a, M: SequenceClassifier> Cleaner<'a, M> {
    /// The cleaner of `poisoned`, fine-tuning on `data` with the settings of `cfg`;
    /// `label` prefixes progress messages.
    pub fn new(
        poisoned: M,
        data: &'a Encoded,
        cfg: &'a BenchConfig,
        label: &'a str,
    ) -> Result<Self, BenchError> {
        let targets = Targets::parse(&M::default_targets())
            .and_then(|t| t.with_modules_to_save(&[M::head()]))
            .map_err(|e| BenchError::Settings(e.to_string()))?;
        let lora = LoraConfig::new(cfg.rank, cfg.alpha);
        // The paper's Pt choice for BERT and LLaMA: the targeted projections of the last
        // `rescale_blocks` blocks.
        let rora_config = RoraConfig::new()
            .with_lambda(cfg.lambda)
            .with_top_k(cfg.top_k)
            .with_rescale(RescaleTarget::Ratio(cfg.rescale_ratio))
            .with_rescale_layers(
                LayerSelection::patterns(M::default_targets()).with_last_blocks(cfg.rescale_blocks),
            );
        let rora = Rora::prepare(&adapt(&poisoned, &targets, &lora, 0.0)?, rora_config)?;
        Ok(Cleaner {
            poisoned,
            targets,
            lora,
            rora,
            data,
            cfg,
            label,
        })
    }

    /// The prepared RoRA (its spectral reports describe any cleaned adapted model).
    pub fn rora(&self) -> &Rora {
        &self.rora
    }

    /// Clean the poisoned model with `method` at learning rate `lr`, fine-tuning seed
    /// `seed`.
    ///
    /// `RoraPt` trains nothing when given `lora`, which must be [`Method::Lora`]'s model
    /// of the same seed and rate: it rescales that model (and reports LoRA's training
    /// seconds), which saves one training run; without `lora` it trains LoRA first. The
    /// other methods ignore `lora`.
    pub fn clean(
        &self,
        method: Method,
        lr: f64,
        seed: u64,
        lora: Option<&Cleaned<M>>,
    ) -> Result<Cleaned<M>, BenchError> {
        let trained = match (method, lora) {
            (Method::Full, _) => self.train(self.poisoned.clone(), method, lr, seed),
            (Method::RoraPt, Some(lora)) => lora.clone(),
            _ => {
                let base_dropout = if method.uses_cl() {
                    self.cfg.base_dropout
                } else {
                    0.0
                };
                let lora = self.lora.clone().with_use_dora(method.uses_dora());
                let adapted = adapt(&self.poisoned, &self.targets, &lora, base_dropout)?;
                self.train(adapted, method, lr, seed)
            }
        };
        if method.uses_pt() {
            let (model, _) = self.rora.rescale(trained.model)?;
            Ok(Cleaned {
                model,
                secs: trained.secs,
            })
        } else {
            Ok(trained)
        }
    }

    /// Clean with every method of the run (`BenchConfig::methods_to_run`) at position `i`
    /// of the learning-rate grid (full fine-tuning at `BenchConfig::full_lr(i)`, the
    /// adapters at `lr_grid[i]`), fine-tuning seed `seed`, in cleaning order; hands each
    /// cleaned model to `each` with its method and learning rate.
    ///
    /// One (seed, position) is the unit a run resumes from, so its numbers must not depend
    /// on the ones before it: the device is seeded with `2000 + seed` first. (Full
    /// fine-tuning, first in the order, draws nothing before its training reseeds the
    /// device; so with it in the run this seed changes no number.)
    pub fn clean_block(
        &self,
        i: usize,
        seed: u64,
        mut each: impl FnMut(Method, f64, Cleaned<M>) -> Result<(), BenchError>,
    ) -> Result<(), BenchError> {
        let methods = self.cfg.methods_to_run();
        self.cfg.device().seed(2000 + seed);
        let mut lora = None;
        for method in Method::cleaning_order(AdapterChoice::Dora) {
            if !methods.contains(&method) {
                continue;
            }
            let lr = if method == Method::Full {
                self.cfg.full_lr(i)
            } else {
                self.cfg.lr_grid[i]
            };
            let cleaned = self.clean(method, lr, seed, lora.as_ref())?;
            if method == Method::Lora {
                lora = Some(cleaned.clone());
            }
            each(method, lr, cleaned)?;
        }
        Ok(())
    }

    /// Fine-tune `model` on the clean data at `lr` (with Tr's penalty if `method` uses
    /// it), the device seeded with `1000 + seed` first; the result in inference mode.
    fn train(&self, model: M, method: Method, lr: f64, seed: u64) -> Cleaned<M> {
        let cfg = self.cfg;
        let settings = TrainSettings {
            steps: cfg.finetune_steps,
            batch_size: cfg.batch_size,
            lr,
            weight_decay: cfg.weight_decay,
            seed: 100 + seed,
            bucket: cfg.bucket,
        };
        cfg.device().seed(1000 + seed);
        let start = Instant::now();
        let model = train(
            model,
            self.data,
            &settings,
            method.uses_tr().then_some(&self.rora),
            &format!("{} {method} {lr:.0e}", self.label),
            cfg.quiet,
        );
        Cleaned {
            model: model.valid(),
            secs: start.elapsed().as_secs_f64(),
        }
    }
}

/// A copy of `poisoned` with LoRA adapters on `targets` (base-branch dropout
/// `base_dropout`), frozen but for the adapters and the head.
fn adapt<M: SequenceClassifier>(
    poisoned: &M,
    targets: &Targets,
    lora: &LoraConfig,
    base_dropout: f64,
) -> Result<M, BenchError> {
    Ok(rora::inject_lora(
        poisoned.clone(),
        targets,
        &lora.clone().with_base_dropout(base_dropout),
    )?)
}

#[cfg(test)]
mod tests {
    use super::Method;

    #[test]
    fn methods_serialize_as_their_names() {
        for method in Method::ALL {
            let json = serde_json::to_string(&method).unwrap();
            assert_eq!(json, format!("\"{}\"", method.name()));
            assert_eq!(serde_json::from_str::<Method>(&json).unwrap(), method);
            assert_eq!(method.to_string(), method.name());
        }
        let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "full",
                "lora",
                "rora",
                "rora-cl",
                "rora-tr",
                "rora-pt",
                "dora",
                "dora-rora"
            ]
        );
        // BTreeMap<Method, _> iterates in table order.
        let mut sorted = Method::ALL;
        sorted.sort();
        assert_eq!(sorted, Method::ALL);
    }

    #[test]
    fn cleaning_order_has_every_method_once_with_pt_after_lora() {
        let mut order = Method::cleaning_order(super::AdapterChoice::Dora);
        order.sort();
        assert_eq!(order, Method::ALL);
        // Without DoRA, the LoRA methods only, as before DoRA existed.
        assert_eq!(
            Method::cleaning_order(super::AdapterChoice::Lora),
            Method::CLEANING_ORDER
        );
        for adapter in [super::AdapterChoice::Lora, super::AdapterChoice::Dora] {
            let mut order = Method::cleaning_order(adapter);
            order.sort();
            assert_eq!(order, Method::run_with(adapter));
        }
        let at = |m| Method::CLEANING_ORDER.iter().position(|&x| x == m).unwrap();
        assert!(at(Method::Lora) < at(Method::RoraPt));
    }
}
