//! RoRA's costs, measured:
//! - one training step (forward + backward) of a 768→768 `LoraLinear` over 4,096 tokens with
//!   Cl + Tr against the same step with plain LoRA;
//! - post-training rescaling (Pt) of LLaMA-7B-shaped adapters (q, k, v, o 4096×4096; gate,
//!   up 4096→11008; down 11008→4096; rank 16), excluding the one-time top-k SVD of `W0`:
//!   `one_block` rescales a real 7-layer block through `Rora::rescale` (W0 held as random
//!   tensors); `stack_factors` runs the same per-layer work — factored SVD of `s·B·A` and the
//!   factor update — for all 32 × 7 layers, which a 26 GB stack of dense `W0` would not fit
//!   in this machine's memory to do through the model.
//!
//! `cargo bench -p rora-core --bench rora`

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use nalgebra::DMatrix;
use rora_core::rora::{Rora, RoraConfig};
use rora_core::{LoraConfig, LoraLinear};

#[derive(Module, Debug)]
struct One {
    query: LoraLinear,
}

fn train_step(c: &mut Criterion) {
    let device = Device::default().autodiff();
    let mut group = c.benchmark_group("rora_step");
    group.sample_size(20);
    let x =
        Tensor::<2>::random([4096, 768], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let base = LinearConfig::new(768, 768).init(&device);
    let plain = One {
        query: LoraLinear::from_linear(base.clone(), &LoraConfig::new(8, 16.0)).unwrap(),
    };
    let cl = One {
        query: LoraLinear::from_linear(base, &LoraConfig::new(8, 16.0).with_base_dropout(0.1))
            .unwrap(),
    };
    let rora = Rora::prepare(&cl, RoraConfig::new().with_top_k(8).with_lambda(1.0)).unwrap();
    group.bench_function("plain_lora/768x768", |b| {
        b.iter(|| {
            let loss = plain.query.forward(x.clone()).mean();
            std::hint::black_box(loss.backward());
        })
    });
    group.bench_function("rora_cl_tr/768x768", |b| {
        b.iter(|| {
            let loss = cl.query.forward(x.clone()).mean() + rora.penalty(&cl);
            std::hint::black_box(loss.backward());
        })
    });
    group.finish();
}

#[derive(Module, Debug)]
struct Block {
    q_proj: LoraLinear,
    k_proj: LoraLinear,
    v_proj: LoraLinear,
    o_proj: LoraLinear,
    gate_proj: LoraLinear,
    up_proj: LoraLinear,
    down_proj: LoraLinear,
}

const D: usize = 4096;
const FF: usize = 11008;
const R: usize = 16;
const SHAPES: [(usize, usize); 7] = [(D, D), (D, D), (D, D), (D, D), (D, FF), (D, FF), (FF, D)];

fn adapted(d_in: usize, d_out: usize, device: &Device) -> LoraLinear {
    let w = Tensor::<2>::random([d_in, d_out], Distribution::Normal(0.0, 0.02), device);
    LoraLinear::from_weights(w, None).with_factors(
        Tensor::random([R, d_in], Distribution::Normal(0.0, 0.01), device),
        Tensor::random([d_out, R], Distribution::Normal(0.0, 0.01), device),
        2.0,
    )
}

fn rescale(c: &mut Criterion) {
    let device = Device::default();
    let mut group = c.benchmark_group("rescale_llama7b");
    group.sample_size(10);
    let block = Block {
        q_proj: adapted(D, D, &device),
        k_proj: adapted(D, D, &device),
        v_proj: adapted(D, D, &device),
        o_proj: adapted(D, D, &device),
        gate_proj: adapted(D, FF, &device),
        up_proj: adapted(D, FF, &device),
        down_proj: adapted(FF, D, &device),
    };
    // One-time top-k SVD of every W0 (not measured).
    let config = RoraConfig::new().with_top_k(8);
    let rora = Rora::prepare(&block, config).unwrap();
    group.bench_function("one_block_7_layers", |b| {
        b.iter(|| std::hint::black_box(rora.rescale(block.clone()).unwrap()))
    });
    // All 32 blocks at the factor level (host math of Pt for 224 layers).
    let factors: Vec<(DMatrix<f64>, DMatrix<f64>)> = (0..32)
        .flat_map(|blk| {
            SHAPES
                .iter()
                .enumerate()
                .map(move |(i, &(d_in, d_out))| (blk, i, d_in, d_out))
        })
        .map(|(blk, i, d_in, d_out)| {
            let seed = (blk * 7 + i) as f64;
            (
                DMatrix::from_fn(d_out, R, |r, c| {
                    ((r * 13 + c * 7) as f64 + seed).sin() * 0.01
                }),
                DMatrix::from_fn(R, d_in, |r, c| ((r * 5 + c * 3) as f64 + seed).cos() * 0.01),
            )
        })
        .collect();
    group.bench_function("stack_factors_32x7_layers", |b| {
        b.iter(|| {
            for (bm, am) in &factors {
                let svd = rora_core::spectral::factored_svd(bm, am, 2.0).unwrap();
                let f = (1.0 / svd.sigma1()).sqrt();
                std::hint::black_box((bm * f, am * f));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, train_step, rescale);
criterion_main!(benches);
