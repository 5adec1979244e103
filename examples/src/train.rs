//! Training and evaluation loops shared by every method of the benchmark.

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rora::Rora;

use crate::data::{Example, TextEncoder};
use crate::models::SequenceClassifier;

/// A split encoded to token ids.
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    /// Token ids per example (`[CLS]` first, no padding).
    pub ids: Vec<Vec<u32>>,
    /// Labels.
    pub labels: Vec<usize>,
}

impl Encoded {
    /// Encode `examples`, truncating to `max_len` tokens.
    pub fn new(examples: &[Example], encoder: &TextEncoder, max_len: usize) -> Self {
        Encoded {
            ids: examples
                .iter()
                .map(|e| encoder.encode(&e.sentence, max_len))
                .collect(),
            labels: examples.iter().map(|e| e.label).collect(),
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// `true` when empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Tokens `[b, t]`, padding mask `[b, t]` and labels `[b]` for the examples `idx`,
    /// padded to the longest of them.
    pub fn batch(
        &self,
        idx: &[usize],
        device: &Device,
    ) -> (Tensor<2, Int>, Tensor<2>, Tensor<1, Int>) {
        let t = idx
            .iter()
            .map(|&i| self.ids[i].len().max(1))
            .max()
            .unwrap_or(1);
        let mut tokens = vec![0i64; idx.len() * t];
        let mut mask = vec![0f32; idx.len() * t];
        for (row, &i) in idx.iter().enumerate() {
            for (col, &id) in self.ids[i].iter().enumerate() {
                tokens[row * t + col] = id as i64;
                mask[row * t + col] = 1.0;
            }
            mask[row * t] = 1.0;
        }
        let labels: Vec<i64> = idx.iter().map(|&i| self.labels[i] as i64).collect();
        (
            Tensor::from_data(TensorData::new(tokens, [idx.len(), t]), device),
            Tensor::from_data(TensorData::new(mask, [idx.len(), t]), device),
            Tensor::from_data(TensorData::new(labels, [idx.len()]), device),
        )
    }
}

/// Optimisation settings of one training run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainSettings {
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Peak learning rate (linear decay to 0 after a 10% warm-up).
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Seed of the batch order.
    pub seed: u64,
}

/// The learning rate at `step` of `steps`: linear warm-up over the first 10%, then linear
/// decay to zero.
pub fn lr_at(step: usize, steps: usize, peak: f64) -> f64 {
    let warmup = (steps / 10).max(1);
    if step < warmup {
        peak * (step + 1) as f64 / warmup as f64
    } else {
        peak * (steps - step) as f64 / (steps - warmup).max(1) as f64
    }
}

/// Train `model` (on an autodiff device) for `settings.steps` steps of cross-entropy, plus
/// RoRA's penalty when `rora` is given. Shows a progress bar named `label` with the loss
/// and step rate (hidden when `quiet`).
pub fn train<M>(
    model: M,
    data: &Encoded,
    settings: &TrainSettings,
    rora: Option<&Rora>,
    label: &str,
    quiet: bool,
) -> M
where
    M: SequenceClassifier,
{
    let mut model = model.train();
    let device = model.devices()[0].clone();
    let mut optim = AdamWConfig::new()
        .with_weight_decay(settings.weight_decay as f32)
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut cursor = order.len();
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(settings.steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    let start = Instant::now();
    for step in 0..settings.steps {
        if cursor + settings.batch_size > order.len() {
            order.shuffle(&mut rng);
            cursor = 0;
        }
        let idx = &order[cursor..(cursor + settings.batch_size).min(order.len())];
        cursor += settings.batch_size;
        let (tokens, mask, labels) = data.batch(idx, &device);
        let logits = model.logits(tokens, mask);
        let mut loss = loss_fn.forward(logits, labels);
        if let Some(rora) = rora {
            loss = loss + rora.penalty(&model);
        }
        if step % 10 == 0 || step + 1 == settings.steps {
            let value = loss.clone().inner().into_scalar::<f32>();
            let rate = (step + 1) as f64 / start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {value:.4}  {rate:.1} steps/s"));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr_at(step, settings.steps, settings.lr), model, grads);
        bar.inc(1);
    }
    bar.finish_and_clear();
    model
}

/// Predicted labels for every example (evaluation mode, no dropout).
pub fn predict<M: SequenceClassifier>(model: &M, data: &Encoded, batch_size: usize) -> Vec<usize> {
    let model = model.valid();
    let device = model.devices()[0].clone();
    let mut out = Vec::with_capacity(data.len());
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let (tokens, mask, _) = data.batch(chunk, &device);
        let pred = model.logits(tokens, mask).argmax(1);
        let values: Vec<i64> = pred
            .into_data()
            .convert::<i64>()
            .try_into_vec()
            .expect("argmax ids");
        out.extend(values.into_iter().map(|v| v as usize));
    }
    out
}
