#!/usr/bin/env python3
"""numpy/scipy reference timings for the rora-spectral benchmarks.

Prints one JSON object with medians (seconds):
  * np.linalg.svd of a 1024x1024 f32 Gaussian (numpy runs f32 input in f64);
  * scipy.linalg.svd(lapack_driver="gesdd") on the same f32 matrix (sgesdd);
  * the same randomized range finder as rora-spectral's `randomized_top_k`
    (Gaussian test matrix, oversampling 10, 2 power iterations with QR
    re-orthonormalization, SVD of the small factor), 4096x4096 f32, k = 32;
  * factored SVD of a rank-16 update on 4096x4096 (thin QRs + 16x16 SVD).

Usage: python3 crates/rora-spectral/benches/numpy_reference.py [--repeats N]
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import scipy
import scipy.linalg


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def randomized_top_k(m, k, oversampling=10, power_iterations=2, seed=5):
    rng = np.random.default_rng(seed)
    rows, cols = m.shape
    l = min(k + oversampling, rows, cols)
    omega = rng.standard_normal((cols, l)).astype(m.dtype)
    q, _ = np.linalg.qr(m @ omega)
    for _ in range(power_iterations):
        z, _ = np.linalg.qr(m.T @ q)
        q, _ = np.linalg.qr(m @ z)
    qz, r = np.linalg.qr((q.T @ m).T)
    u1, s, v1t = np.linalg.svd(r.T)
    return (q @ u1)[:, :k], s[:k], (v1t @ qz.T)[:k]


def factored_svd(b, a, scale):
    qb, rb = np.linalg.qr(b)
    qa, ra = np.linalg.qr(a.T)
    u, s, vt = np.linalg.svd(scale * (rb @ ra.T))
    return qb @ u, s, vt @ qa.T


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    m1024 = rng.standard_normal((1024, 1024)).astype(np.float32)
    m4096 = rng.standard_normal((4096, 4096)).astype(np.float32)
    m4096_f64 = m4096.astype(np.float64)
    b = rng.standard_normal((4096, 16)).astype(np.float32)
    a = rng.standard_normal((16, 4096)).astype(np.float32)
    out = {
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "repeats": args.repeats,
        "np_linalg_svd_1024_f32_input_runs_f64_s": median_time(
            lambda: np.linalg.svd(m1024), args.repeats
        ),
        "scipy_sgesdd_1024_f32_s": median_time(
            lambda: scipy.linalg.svd(m1024, lapack_driver="gesdd"), args.repeats
        ),
        "randomized_top32_q2_4096_f32_s": median_time(
            lambda: randomized_top_k(m4096, 32), args.repeats
        ),
        "randomized_top32_q2_4096_f64_s": median_time(
            lambda: randomized_top_k(m4096_f64, 32), args.repeats
        ),
        "factored_svd_4096_r16_f32_s": median_time(
            lambda: factored_svd(b, a, 0.5), max(args.repeats, 20)
        ),
    }
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = [
            {k: i.get(k) for k in ("internal_api", "num_threads", "architecture")}
            for i in threadpool_info()
        ]
    except ImportError:
        cfg = np.show_config(mode="dicts") if hasattr(np, "show_config") else None
        if isinstance(cfg, dict):
            out["blas"] = cfg.get("Build Dependencies", {}).get("blas", {}).get("name")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
