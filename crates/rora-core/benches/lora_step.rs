//! One training step (forward + backward) of a linear layer at BERT-base shapes
//! (768→768 and 768→3072, 4,096 tokens, rank 8): frozen `Linear` alone, `LoraLinear`
//! (factored), and burn's own `apply_lora` (dense composition every step).
//!
//! `cargo bench -p rora-core --bench lora_step`

use burn::module::{Lora, Module};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use rora_core::{LoraConfig, LoraLinear};

const TOKENS: usize = 4096;
const RANK: usize = 8;

#[derive(Module, Debug)]
struct Native {
    linear: Linear,
}

fn step(c: &mut Criterion) {
    let device = Device::default().autodiff();
    let mut group = c.benchmark_group("lora_step");
    group.sample_size(20);
    for (d_in, d_out) in [(768, 768), (768, 3072)] {
        let x = Tensor::<2>::random([TOKENS, d_in], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let frozen = LinearConfig::new(d_in, d_out).init(&device).no_grad();
        group.bench_function(format!("frozen_linear/{d_in}x{d_out}"), |b| {
            b.iter(|| {
                let y = frozen.forward(x.clone());
                let g = y.mean().backward();
                std::hint::black_box(x.grad(&g));
            })
        });
        let lora = LoraLinear::from_linear(
            LinearConfig::new(d_in, d_out).init(&device),
            &LoraConfig::new(RANK, 16.0),
        )
        .unwrap();
        group.bench_function(format!("lora_linear/{d_in}x{d_out}"), |b| {
            b.iter(|| {
                let y = lora.forward(x.clone());
                let g = y.mean().backward();
                std::hint::black_box(x.grad(&g));
            })
        });
        let native = Native {
            linear: LinearConfig::new(d_in, d_out).init(&device),
        }
        .apply_lora(Lora::new(RANK, 16.0));
        group.bench_function(format!("burn_apply_lora/{d_in}x{d_out}"), |b| {
            b.iter(|| {
                let y = native.linear.forward(x.clone());
                let g = y.mean().backward();
                std::hint::black_box(x.grad(&g));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, step);
criterion_main!(benches);
