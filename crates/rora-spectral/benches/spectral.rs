//! Criterion benchmarks of the decompositions (see `docs/PERFORMANCE.md`).
//!
//! `cargo bench -p rora-spectral --bench spectral` (about 4 minutes on 2 cores; the
//! two dense 1024² SVDs dominate). Filter with a name, e.g. `-- factored`.

use criterion::{Criterion, criterion_group, criterion_main};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use rora_spectral::{RandomizedSvdConfig, factored_svd, randomized_top_k, svd, top_k};
use std::hint::black_box;
use std::time::Duration;

fn gaussian(rows: usize, cols: usize, seed: u64) -> DMatrix<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    DMatrix::from_fn(rows, cols, |_, _| rng.sample::<f32, _>(StandardNormal))
}

/// `U·diag(σ)·Vᵀ`, `σᵢ = (i+1)^-0.5` for the first `p` values, random orthonormal
/// `U`, `V` (`n×p`).
fn decaying(n: usize, p: usize, seed: u64) -> DMatrix<f32> {
    let mut u = nalgebra::linalg::QR::new(gaussian(n, p, seed)).q();
    let v = nalgebra::linalg::QR::new(gaussian(n, p, seed + 1)).q();
    for j in 0..p {
        u.column_mut(j).scale_mut(((j + 1) as f32).powf(-0.5));
    }
    u * v.transpose()
}

fn factored(c: &mut Criterion) {
    let mut g = c.benchmark_group("factored");
    for (n, r) in [(4096usize, 16usize), (4096, 64)] {
        let b = gaussian(n, r, 1);
        let a = gaussian(r, n, 2);
        g.bench_function(format!("factored_svd_{n}x{n}_r{r}_f32"), |bench| {
            bench.iter(|| factored_svd(black_box(&b), black_box(&a), 0.5f32).unwrap())
        });
    }
    let b = gaussian(1024, 16, 1);
    let a = gaussian(16, 1024, 2);
    g.bench_function("factored_svd_1024x1024_r16_f32", |bench| {
        bench.iter(|| factored_svd(black_box(&b), black_box(&a), 0.5f32).unwrap())
    });
    g.bench_function("form_product_and_dense_svd_1024x1024_r16_f32", |bench| {
        bench.iter(|| svd(&((black_box(&b) * black_box(&a)) * 0.5f32)).unwrap())
    });
    g.finish();
}

fn dense(c: &mut Criterion) {
    let mut g = c.benchmark_group("dense");
    let m = gaussian(1024, 1024, 3);
    g.bench_function("svd_1024x1024_gaussian_f32", |bench| {
        bench.iter(|| svd(black_box(&m)).unwrap())
    });
    g.finish();
}

fn randomized(c: &mut Criterion) {
    let mut g = c.benchmark_group("randomized");
    let m = gaussian(4096, 4096, 4);
    let cfg = RandomizedSvdConfig {
        oversampling: 10,
        power_iterations: 2,
        seed: 5,
    };
    g.bench_function("top32_q2_4096x4096_f32", |bench| {
        bench.iter(|| randomized_top_k(black_box(&m), 32, &cfg).unwrap())
    });
    let md = m.map(f64::from);
    g.bench_function("top32_q2_4096x4096_f64", |bench| {
        bench.iter(|| randomized_top_k(black_box(&md), 32, &cfg).unwrap())
    });
    drop(md);
    let d = decaying(4096, 512, 6);
    g.bench_function("top_k_adaptive_32_4096x4096_decaying_f32", |bench| {
        bench.iter(|| top_k(black_box(&d), 32).unwrap())
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = factored, randomized, dense
}
criterion_main!(benches);
