//! Property tests: identities that every decomposition and threshold must satisfy.

use approx::assert_relative_eq;
use nalgebra::{DMatrix, DVector};
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use rora_spectral::*;

fn gaussian(rows: usize, cols: usize, seed: u64) -> DMatrix<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    DMatrix::from_fn(rows, cols, |_, _| rng.sample::<f64, _>(StandardNormal))
}

/// `Q·Qᵀ` for the first `k` columns of `q`.
fn projector(q: &DMatrix<f64>, k: usize) -> DMatrix<f64> {
    let c = q.columns(0, k);
    c * c.transpose()
}

fn assert_orthonormal_columns(q: &DMatrix<f64>, tol: f64) {
    let g = q.transpose() * q;
    let eye = DMatrix::<f64>::identity(q.ncols(), q.ncols());
    assert!((g - eye).amax() < tol, "columns are not orthonormal");
}

fn assert_descending_non_negative(s: &DVector<f64>) {
    assert!(s.iter().all(|&x| x >= 0.0));
    assert!(s.as_slice().windows(2).all(|w| w[0] >= w[1]));
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn dense_svd_identities(m in 1usize..64, n in 1usize..64, seed in any::<u64>()) {
        let a = gaussian(m, n, seed);
        let d = svd(&a).unwrap();
        let p = m.min(n);
        prop_assert_eq!(d.u.shape(), (m, p));
        prop_assert_eq!(d.v_t.shape(), (p, n));
        assert_orthonormal_columns(&d.u, 1e-10);
        assert_orthonormal_columns(&d.v(), 1e-10);
        assert_descending_non_negative(&d.singular_values);
        assert_relative_eq!(d.reconstruct(), a, epsilon = 1e-10 * (1.0 + d.sigma1()));
    }

    #[test]
    fn factored_svd_equals_dense(
        out in 1usize..64, inp in 1usize..64, r in 1usize..72,
        zero_col in proptest::option::of(0usize..72), scale in -3.0f64..3.0,
        seed in any::<u64>(),
    ) {
        let mut b = gaussian(out, r, seed);
        let mut a = gaussian(r, inp, seed ^ 0xabcdef);
        if let Some(c) = zero_col {
            // Rank-deficient factors: a zero column of B and a zero row of A.
            b.column_mut(c % r).fill(0.0);
            a.row_mut((c + 1) % r).fill(0.0);
        }
        let f = factored_svd(&b, &a, scale).unwrap();
        let p = r.min(out).min(inp);
        prop_assert_eq!(f.len(), p);
        assert_orthonormal_columns(&f.u, 1e-10);
        assert_orthonormal_columns(&f.v(), 1e-10);
        assert_descending_non_negative(&f.singular_values);
        let dw = (&b * &a) * scale;
        let tol = 1e-9 * (1.0 + f.sigma1());
        assert_relative_eq!(f.reconstruct(), dw.clone(), epsilon = tol);
        let dense = svd(&dw).unwrap();
        for i in 0..p {
            prop_assert!((f.singular_values[i] - dense.singular_values[i]).abs() < tol);
        }
        for i in p..dense.len() {
            prop_assert!(dense.singular_values[i] < tol);
        }
        // Singular subspaces: projectors onto the numerical range agree when the
        // range is well separated from the null space.
        let rank = f.singular_values.iter().filter(|&&s| s > 1e-8 * (1.0 + f.sigma1())).count();
        if rank > 0 && f.singular_values[rank - 1] > 1e-4 * f.sigma1() {
            let tol_p = 1e-6;
            prop_assert!((projector(&f.u, rank) - projector(&dense.u, rank)).amax() < tol_p);
            prop_assert!((projector(&f.v(), rank) - projector(&dense.v(), rank)).amax() < tol_p);
        }
        let fro2 = factored_frobenius_sq(&b, &a, scale).unwrap();
        assert_relative_eq!(fro2, dw.norm_squared(), epsilon = 1e-9 * (1.0 + fro2));
    }

    #[test]
    fn rescaled_factors_have_requested_values(
        out in 1usize..64, inp in 1usize..64, r in 1usize..72,
        scale in 0.1f64..3.0, seed in any::<u64>(),
    ) {
        let b = gaussian(out, r, seed);
        let a = gaussian(r, inp, seed.wrapping_add(17));
        let f = factored_svd(&b, &a, scale).unwrap();
        let p = f.len();
        // Distinct, descending, positive targets.
        let target = DVector::from_fn(p, |i, _| 1.0 + (p - i) as f64);
        let (b2, a2) = rescaled_factors(&b, &a, scale, &target).unwrap();
        prop_assert_eq!(b2.shape(), (out, r));
        prop_assert_eq!(a2.shape(), (r, inp));
        let prod = &b2 * &a2;
        let vals = singular_values(&prod).unwrap();
        for i in 0..p {
            prop_assert!((vals[i] - target[i]).abs() < 1e-9 * (1.0 + target[i]));
        }
        // Same singular subspaces as scale·B·A: B'A' = U·diag(target)·Vᵀ exactly.
        let mut expected = f.clone();
        expected.singular_values = target.clone();
        assert_relative_eq!(prod.clone(), expected.reconstruct(), epsilon = 1e-9 * (1.0 + target[0]));
        let d = svd(&prod).unwrap();
        let rank = f.singular_values.iter().filter(|&&s| s > 1e-8 * (1.0 + f.sigma1())).count();
        if rank > 0 && f.singular_values[rank - 1] > 1e-4 * f.sigma1() && rank == p {
            prop_assert!((projector(&d.u, p) - projector(&f.u, p)).amax() < 1e-8);
            prop_assert!((projector(&d.v(), p) - projector(&f.v(), p)).amax() < 1e-8);
        }
        // σ1 rescaling.
        let s = scale_to_sigma1(&b, &a, scale, 5.0).unwrap();
        assert_relative_eq!(factored_svd(&b, &a, s).unwrap().sigma1(), 5.0, epsilon = 1e-9);
    }

    #[test]
    fn principal_angles_of_subspace_and_complement(
        m in 2usize..64, k_frac in 0.0f64..1.0, seed in any::<u64>(),
    ) {
        let k = 1 + ((m - 1) as f64 * k_frac) as usize; // 1..m-1
        let k = k.min(m - 1);
        let q = nalgebra::linalg::QR::new(gaussian(m, m, seed)).q();
        let sub = q.columns(0, k).into_owned();
        let comp = q.columns(k, m - k).into_owned();
        // Non-orthonormal basis of the same subspace: angles are still 0.
        let mixed = &sub * gaussian(k, k, seed ^ 1) + &sub * 3.0;
        let same = principal_angles(&sub, &mixed).unwrap();
        prop_assert_eq!(same.len(), k);
        prop_assert!(same.iter().all(|&x| x.abs() < 1e-6));
        let orth = principal_angles(&sub, &comp).unwrap();
        prop_assert_eq!(orth.len(), k.min(m - k));
        prop_assert!(orth.iter().all(|&x| (x - std::f64::consts::FRAC_PI_2).abs() < 1e-8));
        prop_assert!(orth.as_slice().windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn quadratic_root_solves_its_equation(
        a in 0.01f64..10.0, b in -10.0f64..0.0, c in 0.01f64..10.0, eta in 0.0f64..0.99,
    ) {
        match quadratic_threshold(a, b, c, eta) {
            QuadraticThreshold::Root { kappa, kappa_min, f_min } => {
                let f = a + 2.0 * b * kappa + c * kappa * kappa;
                prop_assert!((f - eta * eta * a).abs() < 1e-9 * (1.0 + a));
                prop_assert!(kappa >= 0.0 && kappa <= kappa_min + 1e-12);
                prop_assert!(f_min <= eta * eta * a + 1e-9);
                // Smaller root: everything below κ stays above the target.
                let before = kappa * 0.999;
                let fb = a + 2.0 * b * before + c * before * before;
                prop_assert!(fb >= eta * eta * a - 1e-9 * (1.0 + a));
            }
            QuadraticThreshold::Minimizer { kappa_min, f_min } => {
                prop_assert!(f_min > eta * eta * a - 1e-9);
                assert_relative_eq!(kappa_min, -b / c);
            }
            QuadraticThreshold::Unfavourable => prop_assert!(b == 0.0),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn f32_decompositions(m in 1usize..32, n in 1usize..32, r in 1usize..8, seed in any::<u64>()) {
        let a = gaussian(m, n, seed).map(|x| x as f32);
        let d = svd(&a).unwrap();
        prop_assert!((d.reconstruct() - &a).amax() < 1e-4 * (1.0 + d.sigma1()));
        let bf = gaussian(m, r, seed ^ 3).map(|x| x as f32);
        let af = gaussian(r, n, seed ^ 5).map(|x| x as f32);
        let f = factored_svd(&bf, &af, 0.5f32).unwrap();
        prop_assert!((f.reconstruct() - (&bf * &af) * 0.5).amax() < 1e-4 * (1.0 + f.sigma1()));
        let k = m.min(n).min(3);
        let t = randomized_top_k(&a, k, &RandomizedSvdConfig::default()).unwrap();
        prop_assert_eq!(t.len(), k);
    }
}

#[test]
fn all_zero_update() {
    let b = DMatrix::<f64>::zeros(5, 3);
    let a = DMatrix::<f64>::zeros(3, 4);
    let f = factored_svd(&b, &a, 2.0).unwrap();
    assert!(f.singular_values.iter().all(|&s| s == 0.0));
    assert_eq!(strength_ratio(f.sigma1(), 3.0), 0.0);
    assert_eq!(effective_rank(&f.singular_values), 0.0);
    assert!(matches!(
        critical_scale(0.0, 0.0, 3.0, f.sigma1()),
        CriticalScale::Undefined { .. }
    ));
    assert!(matches!(
        scale_to_sigma1(&b, &a, 1.0, 1.0),
        Err(SpectralError::ZeroUpdate)
    ));
    let (b2, a2) = rescaled_factors(&b, &a, 1.0, &DVector::zeros(3)).unwrap();
    assert_eq!((&b2 * &a2).norm(), 0.0);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let e = DMatrix::<f64>::zeros(0, 4);
    let nan = DMatrix::from_element(3, 3, f64::NAN);
    let ok = DMatrix::<f64>::identity(3, 3);
    assert!(matches!(svd(&e), Err(SpectralError::Empty { .. })));
    assert!(matches!(svd(&nan), Err(SpectralError::NonFinite { .. })));
    assert!(matches!(
        factored_svd(&e, &ok, 1.0),
        Err(SpectralError::Empty { .. })
    ));
    assert!(matches!(
        factored_svd(&ok, &nan, 1.0),
        Err(SpectralError::NonFinite { .. })
    ));
    assert!(matches!(
        factored_svd(&ok, &DMatrix::zeros(2, 3), 1.0),
        Err(SpectralError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        top_k(&ok, 0),
        Err(SpectralError::InvalidArgument(_))
    ));
    assert!(matches!(
        top_k(&ok, 4),
        Err(SpectralError::InvalidArgument(_))
    ));
    assert!(randomized_top_k(&nan, 1, &RandomizedSvdConfig::default()).is_err());
    assert!(principal_angles(&ok, &e).is_err());
    assert!(intruder_dimensions(&ok, &nan, 1, 0.5).is_err());
    assert!(left_alignment(&ok, &DMatrix::zeros(4, 1)).is_err());
    assert!(clean_share(&ok, &ok, 1.0, &nan).is_err());
    assert!(subspace_share(&DMatrix::zeros(4, 1), &ok, &ok, 1.0).is_err());
    assert!(rescaled_factors(&ok, &ok, 1.0, &DVector::from_element(3, f64::NAN)).is_err());
    assert!(quadratic_coefficients(&ok, &ok, &ok, 1.0, &DMatrix::zeros(2, 1)).is_err());
    let mut acc = CovarianceAccumulator::new(3);
    assert!(acc.push_batch(&nan).is_err());
    assert!(acc.top_k_eigenvectors(1).is_err());
    assert!(BaseSpectrum::compute(&nan, 1).is_err());
}

/// Inputs on which nalgebra's SVD alone lost accuracy (dimforge/nalgebra#1172):
/// the residual check must route them to the Jacobi fallback.
#[test]
fn regression_nalgebra_svd_accuracy() {
    let seed = 2978027389622731013u64;
    let b = gaussian(50, 5, seed);
    let a = gaussian(5, 39, seed ^ 0xabcdef);
    let dw = (&b * &a) * -2.2668282494631735;
    let d = svd(&dw).unwrap();
    assert!((d.reconstruct() - &dw).amax() < 1e-10 * d.sigma1());
    let f = factored_svd(&b, &a, -2.2668282494631735).unwrap();
    for i in 0..5 {
        assert_relative_eq!(
            f.singular_values[i],
            d.singular_values[i],
            max_relative = 1e-12
        );
    }
    let seed = 5888087137004401322u64;
    let bf = gaussian(10, 6, seed ^ 3).map(|x| x as f32);
    let af = gaussian(6, 13, seed ^ 5).map(|x| x as f32);
    let f = factored_svd(&bf, &af, 0.5f32).unwrap();
    assert!((f.reconstruct() - (&bf * &af) * 0.5).amax() < 1e-4 * f.sigma1());
}
