//! Accuracy of the randomized top-32 SVD against exact singular values at 1024² and
//! 2048², for a Gaussian matrix (flat spectrum) and a decaying spectrum
//! `σᵢ = (i+1)^-0.5`. The Gaussian reference is nalgebra's full dense SVD (values
//! only; ~1 minute at 2048²), the decaying one is known by construction.
//!
//! `cargo run --release -p rora-spectral --example accuracy [sizes...]`

use nalgebra::{DMatrix, DVector};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use rora_spectral::{RandomizedSvdConfig, randomized_top_k, singular_values, top_k};
use std::time::Instant;

fn gaussian(rows: usize, cols: usize, seed: u64) -> DMatrix<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    DMatrix::from_fn(rows, cols, |_, _| rng.sample::<f64, _>(StandardNormal))
}

fn decaying(n: usize, seed: u64) -> (DMatrix<f64>, Vec<f64>) {
    let p = n;
    let sigma: Vec<f64> = (0..p).map(|i| ((i + 1) as f64).powf(-0.5)).collect();
    let mut u = nalgebra::linalg::QR::new(gaussian(n, p, seed)).q();
    let v = nalgebra::linalg::QR::new(gaussian(n, p, seed + 1)).q();
    for (j, s) in sigma.iter().enumerate() {
        u.column_mut(j).scale_mut(*s);
    }
    (u * v.transpose(), sigma)
}

fn max_rel(approx: &DVector<f64>, exact: &[f64]) -> f64 {
    approx
        .iter()
        .zip(exact)
        .map(|(a, e)| (a - e).abs() / e)
        .fold(0.0, f64::max)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1024, 2048]
    } else {
        sizes
    };
    let k = 32;
    for n in sizes {
        let g = gaussian(n, n, 11);
        let t = Instant::now();
        let exact = singular_values(&g).unwrap();
        let dense_s = t.elapsed().as_secs_f64();
        let (d, dsig) = decaying(n, 12);
        for (name, m, exact) in [
            ("gaussian", &g, exact.as_slice().to_vec()),
            ("decaying", &d, dsig),
        ] {
            for q in [2usize, 6, 12] {
                let cfg = RandomizedSvdConfig {
                    oversampling: 10,
                    power_iterations: q,
                    seed: 1,
                };
                let t = Instant::now();
                let r = randomized_top_k(m, k, &cfg).unwrap();
                let secs = t.elapsed().as_secs_f64();
                println!(
                    "{{\"n\":{n},\"matrix\":\"{name}\",\"method\":\"randomized p=10 q={q}\",\"max_rel_err_top{k}\":{:.3e},\"rel_err_sigma1\":{:.3e},\"seconds\":{secs:.3}}}",
                    max_rel(&r.singular_values, &exact),
                    (r.singular_values[0] - exact[0]).abs() / exact[0],
                );
            }
            let t = Instant::now();
            let r = top_k(m, k).unwrap();
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{{\"n\":{n},\"matrix\":\"{name}\",\"method\":\"top_k adaptive\",\"max_rel_err_top{k}\":{:.3e},\"rel_err_sigma1\":{:.3e},\"seconds\":{secs:.3}}}",
                max_rel(&r.singular_values, &exact),
                (r.singular_values[0] - exact[0]).abs() / exact[0],
            );
        }
        println!("{{\"n\":{n},\"dense_singular_values_f64_seconds\":{dense_s:.2}}}");
    }
}
