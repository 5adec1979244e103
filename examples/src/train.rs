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
    /// Sort-by-length bucketing ([`epoch_batches`]): batches of similar lengths, so less
    /// padding. Off by default.
    #[serde(default)]
    pub bucket: bool,
}

/// Examples per bucketing pool, in batches: a shuffled epoch is cut into pools of this many
/// batches, each sorted by length ([`epoch_batches`]).
pub const BUCKET_POOL_BATCHES: usize = 8;

/// One epoch of batches (indices into a set whose examples have `lengths` tokens).
///
/// `order` is the previous epoch's order (`0..n` before the first); it is shuffled in place
/// with `rng`, so successive epochs shuffle one permutation again and again, as the
/// training loop always has (the published results depend on it). The shuffled order is
/// cut into full batches of `batch_size` (an incomplete last batch is dropped; a set smaller
/// than one batch is one batch).
///
/// With `bucket`, each pool of [`BUCKET_POOL_BATCHES`] batches of the shuffled order is
/// sorted by length before it is cut, and the batches' order is shuffled again: a batch
/// then holds sentences of similar length, so padding to its longest wastes little (the
/// "sortish" sampler). `order` itself stays the plain shuffled order.
///
/// # Panics
/// If `order` and `lengths` differ in length.
pub fn epoch_batches(
    order: &mut [usize],
    lengths: &[usize],
    batch_size: usize,
    bucket: bool,
    rng: &mut StdRng,
) -> Vec<Vec<usize>> {
    assert_eq!(order.len(), lengths.len(), "one order entry per example");
    let batch_size = batch_size.max(1);
    order.shuffle(rng);
    if order.len() < batch_size {
        return vec![order.to_vec()];
    }
    let mut epoch = order.to_vec();
    if bucket {
        for pool in epoch.chunks_mut(batch_size * BUCKET_POOL_BATCHES) {
            pool.sort_by_key(|&i| lengths[i]);
        }
    }
    let mut batches: Vec<Vec<usize>> = epoch
        .chunks_exact(batch_size)
        .map(<[usize]>::to_vec)
        .collect();
    if bucket {
        batches.shuffle(rng);
    }
    batches
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
    let lengths: Vec<usize> = data.ids.iter().map(Vec::len).collect();
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    let mut batches: Vec<Vec<usize>> = Vec::new();
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
        if batches.is_empty() {
            batches = epoch_batches(
                &mut order,
                &lengths,
                settings.batch_size,
                settings.bucket,
                &mut rng,
            );
            batches.reverse(); // taken from the back, in epoch order
        }
        let idx = batches.pop().expect("an epoch has at least one batch");
        let (tokens, mask, labels) = data.batch(&idx, &device);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_epochs_reshuffle_one_permutation_in_full_batches() {
        let lengths: Vec<usize> = (0..70).map(|i| i % 13 + 1).collect();
        let mut rng = StdRng::seed_from_u64(5);
        let mut order: Vec<usize> = (0..70).collect();
        let first = epoch_batches(&mut order, &lengths, 32, false, &mut rng);
        let second = epoch_batches(&mut order, &lengths, 32, false, &mut rng);
        // The loop as it was: one permutation, shuffled again every epoch.
        let mut reference_rng = StdRng::seed_from_u64(5);
        let mut reference: Vec<usize> = (0..70).collect();
        reference.shuffle(&mut reference_rng);
        assert_eq!(
            first,
            vec![reference[..32].to_vec(), reference[32..64].to_vec()]
        );
        reference.shuffle(&mut reference_rng);
        assert_eq!(
            second,
            vec![reference[..32].to_vec(), reference[32..64].to_vec()]
        );
        assert_eq!(order, reference);
        let mut small_order: Vec<usize> = (0..5).collect();
        let small = epoch_batches(&mut small_order, &lengths[..5], 32, true, &mut rng);
        assert_eq!(small.len(), 1);
        assert_eq!(small[0].len(), 5);
    }

    #[test]
    fn bucketed_batches_hold_similar_lengths_and_each_example_once() {
        let lengths: Vec<usize> = (0..512).map(|i| (i * 37) % 60 + 1).collect();
        let spread = |b: &[usize]| {
            let l: Vec<usize> = b.iter().map(|&i| lengths[i]).collect();
            l.iter().max().unwrap() - l.iter().min().unwrap()
        };
        let mut order: Vec<usize> = (0..512).collect();
        let plain = epoch_batches(
            &mut order,
            &lengths,
            16,
            false,
            &mut StdRng::seed_from_u64(1),
        );
        let mut order: Vec<usize> = (0..512).collect();
        let bucketed = epoch_batches(
            &mut order,
            &lengths,
            16,
            true,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(bucketed.len(), 32);
        let mut seen: Vec<usize> = bucketed.concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..512).collect::<Vec<_>>());
        let total = |bs: &[Vec<usize>]| bs.iter().map(|b| spread(b)).sum::<usize>();
        assert!(total(&bucketed) * 3 < total(&plain));
    }
}
