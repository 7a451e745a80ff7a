use super::*;

/// The same conversion, written out independently, minimised over a fine grid of real α.
fn gaussian_eps_fine_grid(sigma: f64, steps: f64, delta: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, 0.0);
    let mut a = 1.0005;
    while a < 1024.0 {
        let rdp = steps * a / (2.0 * sigma * sigma);
        let eps = rdp + (1.0 - 1.0 / a).ln() + ((1.0 / delta).ln() - a.ln()) / (a - 1.0);
        if eps < best.0 {
            best = (eps, a);
        }
        a += if a < 4.0 { 0.0005 } else { 0.01 };
    }
    best
}

/// erfc with fractional error < 1.2e-7 (Numerical Recipes `erfcc`, Chebyshev fit).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let ans = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

fn phi(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// The exact (optimal) ε of the Gaussian mechanism with sensitivity 1 and noise `s`
/// (Balle & Wang 2018): δ(ε) = Φ(1/(2s) − εs) − e^ε·Φ(−1/(2s) − εs), solved for ε.
fn gaussian_exact_eps(s: f64, delta: f64) -> f64 {
    let dlt = |e: f64| phi(0.5 / s - e * s) - e.exp() * phi(-0.5 / s - e * s);
    let (mut lo, mut hi) = (0.0, 200.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if dlt(mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

#[test]
fn gaussian_rdp_matches_the_closed_form_used_by_opacus_and_tf_privacy() {
    // Opacus / TF-Privacy `compute_rdp(q=1, noise_multiplier=σ, steps=T, orders)` is
    // T·α/(2σ²) at every order.
    let mut acc = RdpAccountant::new();
    acc.compose_gaussian(1.3, 250).unwrap();
    for (&a, &r) in acc.orders().iter().zip(acc.rdp()) {
        assert!((r - 250.0 * a / (2.0 * 1.3 * 1.3)).abs() < 1e-9 * r);
    }
    assert_eq!(acc.steps(), 250);
}

#[test]
fn gaussian_epsilon_published_values() {
    // σ = 1, T = 1, δ = 1e-5, over the standard orders. rdp(α) = α/2.
    // Classical conversion ε = rdp + ln(1/δ)/(α−1): α = 5 → 2.5 + 11.5129/4 = 5.3782;
    // α = 6 → 3 + 11.5129/5 = 5.3026 (the minimum, the value TF-Privacy's old
    // `get_privacy_spent` reports for these orders).
    let ln_inv_delta = (1e5f64).ln();
    let classical = DEFAULT_ORDERS
        .iter()
        .map(|&a| (a / 2.0 + ln_inv_delta / (a - 1.0), a))
        .fold((f64::INFINITY, 0.0), |b, x| if x.0 < b.0 { x } else { b });
    assert_eq!(classical.1, 6.0);
    assert!((classical.0 - 5.3026).abs() < 1e-3, "{classical:?}");
    // Improved conversion (what the accountant uses, as Opacus ≥ 1.0):
    // α = 5: 2.5 + ln(4/5) + (ln 1e5 − ln 5)/4 = 2.5 − 0.22314 + 2.47587 = 4.75273;
    // α = 6: 3 + ln(5/6) + (ln 1e5 − ln 6)/5 = 3 − 0.18232 + 1.94423 = 4.76191.
    let mut acc = RdpAccountant::new();
    acc.compose_gaussian(1.0, 1).unwrap();
    let (eps, order) = acc.epsilon(1e-5).unwrap();
    assert_eq!(order, 5.0);
    assert!((eps - 4.75273).abs() < 0.01 * 4.75273, "{eps}");
    // Sound: never below the exact ε of the Gaussian mechanism (Balle & Wang 2018),
    // ≈ 4.377 here, and not much above it.
    let exact = gaussian_exact_eps(1.0, 1e-5);
    assert!((exact - 4.377).abs() < 0.01, "exact {exact}");
    assert!(eps >= exact && eps < 1.2 * exact);
}

#[test]
fn gaussian_epsilon_matches_fine_grid_optimum_within_one_percent() {
    // (σ, T, δ): the optimal real α of these lies inside the order list's span.
    for &(sigma, steps, delta) in &[
        (1.0, 1u64, 1e-5),
        (2.0, 10, 1e-5),
        (10.0, 1000, 1e-5),
        (4.0, 50, 1e-6),
        (0.7, 3, 1e-3),
    ] {
        let mut acc = RdpAccountant::new();
        acc.compose_gaussian(sigma, steps).unwrap();
        let (eps, _) = acc.epsilon(delta).unwrap();
        let (grid, a_star) = gaussian_eps_fine_grid(sigma, steps as f64, delta);
        assert!(
            eps >= grid - 1e-9,
            "σ={sigma} T={steps}: {eps} < grid {grid}"
        );
        assert!(
            eps <= 1.01 * grid,
            "σ={sigma} T={steps}: {eps} vs grid {grid} (α*={a_star})"
        );
        // Composition of T Gaussians is a Gaussian with noise σ/√T: never below exact.
        let exact = gaussian_exact_eps(sigma / (steps as f64).sqrt(), delta);
        assert!(eps >= exact, "σ={sigma} T={steps}: {eps} < exact {exact}");
    }
    // σ = 1, T = 1000: ε ≈ 649 with the optimum at α ≈ 1.15, below the smallest tracked
    // order 1.25, so the accountant is a few percent conservative — never optimistic.
    let mut acc = RdpAccountant::new();
    acc.compose_gaussian(1.0, 1000).unwrap();
    let (eps, order) = acc.epsilon(1e-5).unwrap();
    let (grid, a_star) = gaussian_eps_fine_grid(1.0, 1000.0, 1e-5);
    assert_eq!(order, 1.25);
    assert!(
        a_star < 1.25 && (grid - 649.0).abs() < 2.0,
        "{grid} {a_star}"
    );
    assert!(eps >= grid && eps <= 1.04 * grid, "{eps} vs {grid}");
}

#[test]
fn skellam_rdp_bound_and_gaussian_limit() {
    let m = Mechanism::Skellam {
        mu: 100.0,
        l1_sensitivity: 4.0,
        l2_sensitivity: 2.0,
    };
    // α = 3: 3·4/200 + min((5·4 + 24)/(4·10⁴), 6/100) = 0.06 + 0.0011 = 0.0611
    assert!((m.rdp(3.0).unwrap() - 0.0611).abs() < 1e-12);
    // fractional order uses ⌈α⌉
    assert_eq!(m.rdp(2.5).unwrap(), m.rdp(3.0).unwrap());
    // large μ: Skellam ≈ Gaussian with σ² = μ (noise multiplier √μ/Δ₂), at integer orders
    let orders: Vec<f64> = vec![2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 16.0, 32.0, 64.0];
    let mut sk = RdpAccountant::with_orders(orders.clone()).unwrap();
    sk.compose_skellam(1e6, 1000.0, 1000.0, 100).unwrap();
    let mut g = RdpAccountant::with_orders(orders).unwrap();
    g.compose_gaussian(1.0, 100).unwrap();
    let (es, _) = sk.epsilon(1e-5).unwrap();
    let (eg, _) = g.epsilon(1e-5).unwrap();
    assert!(es >= eg && es < 1.02 * eg, "{es} vs {eg}");
    // at fractional orders the bound of ⌈α⌉ is used, so the default-order accountant is
    // never below the integer-order one
    let mut sk_default = RdpAccountant::new();
    sk_default
        .compose_skellam(1e6, 1000.0, 1000.0, 100)
        .unwrap();
    assert!(sk_default.epsilon(1e-5).unwrap().0 >= eg);
    // invalid parameters are refused
    assert!(matches!(
        sk.compose_skellam(0.0, 1.0, 1.0, 1),
        Err(DpError::InvalidParameter { name: "mu", .. })
    ));
    assert!(matches!(
        sk.epsilon(0.0),
        Err(DpError::InvalidParameter { name: "delta", .. })
    ));
    assert!(RdpAccountant::with_orders(vec![1.0, 2.0]).is_err());
}

#[test]
fn distributed_discrete_gaussian_approaches_gaussian_with_enough_local_noise() {
    // 10 participants, local σ = 5 (integer domain): τ ≈ 10·9·e^{−2π²·25/2} ≈ 0.
    let ddg = Mechanism::DistributedDiscreteGaussian {
        local_sigma: 5.0,
        n_participants: 10,
        l1_sensitivity: 100.0,
        l2_sensitivity: 15.0,
        dim: 100,
    };
    let g = Mechanism::Gaussian {
        noise_multiplier: 10f64.sqrt() * 5.0 / 15.0,
    };
    for &a in &DEFAULT_ORDERS {
        let (x, y) = (ddg.rdp(a).unwrap(), g.rdp(a).unwrap());
        assert!((x - y).abs() <= 1e-12 * y, "{x} vs {y}");
    }
    // tiny local noise: τ is large and the bound much worse than the Gaussian's
    let weak = Mechanism::DistributedDiscreteGaussian {
        local_sigma: 0.1,
        n_participants: 10,
        l1_sensitivity: 100.0,
        l2_sensitivity: 15.0,
        dim: 100,
    };
    let g = Mechanism::Gaussian {
        noise_multiplier: 10f64.sqrt() * 0.1 / 15.0,
    };
    assert!(weak.rdp(2.0).unwrap() > g.rdp(2.0).unwrap());
}

#[test]
fn would_exceed_stops_before_the_budget() {
    let mech = Mechanism::Gaussian {
        noise_multiplier: 5.0,
    };
    let (budget, delta) = (3.0, 1e-5);
    let mut acc = RdpAccountant::new();
    let allowed = acc.steps_within_budget(budget, delta, &mech).unwrap();
    assert!(allowed > 10, "{allowed}");
    let mut rounds = 0u64;
    while !acc.would_exceed(budget, delta, &mech, 1).unwrap() {
        acc.compose(&mech, 1).unwrap();
        rounds += 1;
        assert!(rounds < 100_000);
    }
    assert_eq!(rounds, allowed);
    assert!(acc.epsilon(delta).unwrap().0 <= budget);
    let mut over = acc.clone();
    over.compose(&mech, 1).unwrap();
    assert!(over.epsilon(delta).unwrap().0 > budget);
    assert_eq!(acc.steps_within_budget(budget, delta, &mech).unwrap(), 0);
    // nothing spent → ε = 0
    assert_eq!(RdpAccountant::new().epsilon(delta).unwrap().0, 0.0);
    // the accountant round-trips through serde (it is part of a checkpoint)
    let s = serde_json::to_string(&acc).unwrap();
    let back: RdpAccountant = serde_json::from_str(&s).unwrap();
    assert_eq!(back, acc);
}

#[test]
fn sampled_gaussian_is_amplified_and_reduces_to_the_gaussian() {
    let rdp = |q: f64, a: f64| {
        Mechanism::SampledGaussian {
            sampling_rate: q,
            noise_multiplier: 1.1,
        }
        .rdp(a)
        .unwrap()
    };
    let full = Mechanism::Gaussian {
        noise_multiplier: 1.1,
    };
    for &a in &SAMPLED_ORDERS {
        assert_eq!(rdp(1.0, a), full.rdp(a).unwrap());
        assert_eq!(rdp(0.0, a), 0.0);
        // more sampling, more privacy loss; always below the unsampled mechanism
        let (r1, r2, r3) = (rdp(0.001, a), rdp(0.01, a), rdp(0.3, a));
        assert!(0.0 < r1 && r1 < r2 && r2 < r3 && r3 < rdp(1.0, a), "α={a}");
    }
    // α = 2 in closed form: ln(1 + q²(e^{1/σ²} − 1)), ≈ q²/σ² for large σ
    let r = rdp(0.001, 2.0);
    let exact = (1e-6 * ((1.0 / (1.1f64 * 1.1)).exp() - 1.0)).ln_1p();
    assert!((r - exact).abs() < 1e-12 * exact, "{r} vs {exact}");
    // the finer list is Opacus's and composes like any other
    assert_eq!(SAMPLED_ORDERS.len(), 151);
    assert_eq!(SAMPLED_ORDERS[0], 1.1);
    assert_eq!(SAMPLED_ORDERS[98], 1.0 + 99.0 / 10.0);
    assert_eq!(SAMPLED_ORDERS[99], 12.0);
    assert_eq!(SAMPLED_ORDERS[150], 63.0);
    let mut acc = RdpAccountant::with_sampled_orders();
    acc.compose_sampled_gaussian(0.01, 1.1, 100).unwrap();
    assert_eq!(acc.orders(), &SAMPLED_ORDERS[..]);
    assert!((acc.rdp()[0] - 100.0 * rdp(0.01, 1.1)).abs() < 1e-12);
}

#[test]
fn sampled_mechanisms_refuse_bad_parameters_without_panicking() {
    let sg = |q: f64, s: f64| Mechanism::SampledGaussian {
        sampling_rate: q,
        noise_multiplier: s,
    };
    for &q in &[f64::NAN, -0.1, 1.0 + 1e-12, f64::INFINITY] {
        assert!(matches!(
            sg(q, 1.0).rdp(2.0),
            Err(DpError::InvalidParameter {
                name: "sampling_rate",
                ..
            })
        ));
    }
    for &s in &[f64::NAN, 0.0, -1.0, f64::INFINITY] {
        assert!(matches!(
            sg(0.1, s).rdp(2.0),
            Err(DpError::InvalidParameter {
                name: "noise_multiplier",
                ..
            })
        ));
    }
    assert!(sg(0.1, 1.0).rdp(f64::NAN).is_err());
    assert!(sg(0.1, 1.0).rdp(1.0).is_err());
    let mut acc = RdpAccountant::with_sampled_orders();
    assert!(acc.compose_sampled_gaussian(f64::NAN, 1.0, 1).is_err());
    assert_eq!(acc.steps(), 0);
    // extreme but valid parameters stay finite or are refused, never panic
    for &(q, s) in &[
        (1e-300, 1e-3),
        (1.0 - 1e-16, 1e-3),
        (0.5, 1e6),
        (1e-12, 1e-150),
    ] {
        for &a in &[1.0 + 1e-9, 1.5, 2.0, 63.0, 1e5 + 0.5, 1e9] {
            let r = sg(q, s).rdp(a).unwrap();
            assert!(r >= 0.0 && !r.is_nan(), "q={q} σ={s} α={a}: {r}");
        }
    }
    let d = Mechanism::SampledDistributedDiscreteGaussian {
        sampling_rate: 0.5,
        local_sigma: f64::NAN,
        n_participants: 3,
        l1_sensitivity: 1.0,
        l2_sensitivity: 1.0,
        dim: 1,
    };
    assert!(d.validate().is_err());
    // the serde tag names the variant
    let m = sg(0.01, 1.1);
    let json = serde_json::to_string(&m).unwrap();
    assert!(json.contains("\"kind\":\"sampled_gaussian\""), "{json}");
    assert_eq!(serde_json::from_str::<Mechanism>(&json).unwrap(), m);
}

#[test]
fn sampled_distributed_discrete_gaussian_correction_vanishes_or_matters() {
    let (n, d1, d2, dim) = (10usize, 10.0, 1.0, 100usize);
    let mech = |q: f64, local_sigma: f64| Mechanism::SampledDistributedDiscreteGaussian {
        sampling_rate: q,
        local_sigma,
        n_participants: n,
        l1_sensitivity: d1,
        l2_sensitivity: d2,
        dim,
    };
    let sampled = |q: f64, local_sigma: f64| Mechanism::SampledGaussian {
        sampling_rate: q,
        noise_multiplier: (n as f64).sqrt() * local_sigma / d2,
    };
    let unsampled = |local_sigma: f64| Mechanism::DistributedDiscreteGaussian {
        local_sigma,
        n_participants: n,
        l1_sensitivity: d1,
        l2_sensitivity: d2,
        dim,
    };
    // integer-domain local σ = 5: τ ≈ 90·e^{−2π²·25/2} ≈ 1e-105, the correction vanishes
    for &a in &SAMPLED_ORDERS {
        let (x, y) = (
            mech(0.01, 5.0).rdp(a).unwrap(),
            sampled(0.01, 5.0).rdp(a).unwrap(),
        );
        assert!(y > 0.0 && (x - y).abs() <= 1e-12 * y, "α={a}: {x} vs {y}");
    }
    // local σ = 0.8: τ ≈ 0.03, τ·d ≈ 3 — far above the sampled Gaussian's RDP
    for &a in &[1.5, 2.0, 8.0, 32.0] {
        let (x, y) = (
            mech(0.01, 0.8).rdp(a).unwrap(),
            sampled(0.01, 0.8).rdp(a).unwrap(),
        );
        assert!(x > 1.5 * y && x - y > 0.1, "α={a}: {x} vs {y}");
    }
    // at q = 1 it is KLS Thm 1 term for term, in both regimes
    for &s in &[5.0, 0.8, 0.3] {
        for &a in &DEFAULT_ORDERS {
            let (x, y) = (mech(1.0, s).rdp(a).unwrap(), unsampled(s).rdp(a).unwrap());
            assert!((x - y).abs() <= 1e-12 * y, "σ={s} α={a}: {x} vs {y}");
        }
    }
    // zero sensitivity: only the sensitivity-free τ-terms remain, as in the unsampled bound
    let zero = Mechanism::SampledDistributedDiscreteGaussian {
        sampling_rate: 0.5,
        local_sigma: 1.0,
        n_participants: 2,
        l1_sensitivity: 0.0,
        l2_sensitivity: 0.0,
        dim: 4,
    };
    let zero_unsampled = Mechanism::DistributedDiscreteGaussian {
        local_sigma: 1.0,
        n_participants: 2,
        l1_sensitivity: 0.0,
        l2_sensitivity: 0.0,
        dim: 4,
    };
    let z = zero.rdp(2.0).unwrap();
    assert!(z.is_finite() && z < 1e-3, "{z}");
    assert!((z - zero_unsampled.rdp(2.0).unwrap()).abs() <= 1e-12 * z);
}

#[test]
fn calibration_meets_the_target_and_no_less_noise_does() {
    let (q, steps, delta) = (256.0 / 60000.0, 14062u64, 1e-5);
    let eps_of = |sigma: f64, fixed: &[(Mechanism, u64)]| {
        let mut acc = RdpAccountant::with_sampled_orders();
        for (m, c) in fixed {
            acc.compose(m, *c).unwrap();
        }
        acc.compose_sampled_gaussian(q, sigma, steps).unwrap();
        acc.epsilon(delta).unwrap().0
    };
    // the MNIST setting: σ = 1.1 gives ε ≈ 2.5966, so that target calibrates back to ≈ 1.1
    let target = eps_of(1.1, &[]);
    let sigma = calibrate_noise_multiplier(q, steps, target, delta, &[]).unwrap();
    assert!((sigma - 1.1).abs() < 0.002 * 1.1, "{sigma}");
    // monotone in the target, meets it, and 0.1 % less noise overspends
    let mut last = f64::INFINITY;
    for &eps in &[0.5, 1.0, 2.0, 4.0, 8.0] {
        let s = calibrate_noise_multiplier(q, steps, eps, delta, &[]).unwrap();
        assert!(s < last, "ε={eps}: {s} not below {last}");
        last = s;
        assert!(eps_of(s, &[]) <= eps, "ε={eps}: σ={s}");
        assert!(
            eps_of(0.999 * s, &[]) > eps,
            "ε={eps}: 0.999·σ={s} still fits"
        );
    }
    // fixed releases (an unsampled Gaussian prelude) leave less room: more noise
    let prelude = [(
        Mechanism::Gaussian {
            noise_multiplier: 20.0,
        },
        10u64,
    )];
    let s0 = calibrate_noise_multiplier(q, steps, 2.0, delta, &[]).unwrap();
    let s1 = calibrate_noise_multiplier(q, steps, 2.0, delta, &prelude).unwrap();
    assert!(s1 > s0, "{s1} vs {s0}");
    assert!(eps_of(s1, &prelude) <= 2.0 && eps_of(0.999 * s1, &prelude) > 2.0);
    // the fixed releases alone exceed the target: refused
    let heavy = [(
        Mechanism::Gaussian {
            noise_multiplier: 0.5,
        },
        100u64,
    )];
    assert!(matches!(
        calibrate_noise_multiplier(q, steps, 1.0, delta, &heavy),
        Err(DpError::BudgetUnreachable { epsilon: 1.0, .. })
    ));
    // a target even the least noise meets: the lower end of the search
    assert_eq!(
        calibrate_noise_multiplier(1e-6, 1, 1e4, delta, &[]).unwrap(),
        CALIBRATION_SIGMA_RANGE.0
    );
    // bad inputs are errors
    assert!(calibrate_noise_multiplier(f64::NAN, 1, 1.0, delta, &[]).is_err());
    assert!(calibrate_noise_multiplier(q, 1, f64::NAN, delta, &[]).is_err());
    assert!(calibrate_noise_multiplier(q, 1, 1.0, 0.0, &[]).is_err());
}
