use proptest::prelude::*;

use super::*;

fn segment(sample_rate: f64, noise_multiplier: f64, steps: u64) -> Segment {
    Segment { sample_rate, noise_multiplier, steps }
}

fn eps(sample_rate: f64, noise_multiplier: f64, steps: u64) -> f64 {
    epsilon(&[segment(sample_rate, noise_multiplier, steps)], 1e-5).unwrap().epsilon
}

#[test]
fn default_orders_are_opacus_orders() {
    assert_eq!(DEFAULT_ORDERS.len(), 99 + 52);
    for (x, order) in (1..100).zip(&DEFAULT_ORDERS) {
        assert_eq!(*order, 1.0 + f64::from(x) / 10.0);
    }
    assert_eq!(&DEFAULT_ORDERS[99..], &(12..64).map(f64::from).collect::<Vec<_>>()[..]);
}

#[test]
fn full_sampling_is_the_gaussian_mechanism() {
    let (sigma, steps) = (2.0, 300);
    let accountant = Accountant::from_history(&[segment(1.0, sigma, steps)]).unwrap();
    for (&order, &rdp) in accountant.orders().iter().zip(accountant.rdp()) {
        assert_eq!(rdp, steps as f64 * order / (2.0 * sigma * sigma));
    }
    // The improved conversion is below the classic one, ρ + 2√(ρ ln(1/δ)) with ρ = steps/2σ², at
    // its best (here interior) order, and the orders are dense enough to lose little to it.
    let rho = steps as f64 / (2.0 * sigma * sigma);
    let classic = rho + 2.0 * (rho * 1e5f64.ln()).sqrt();
    let spent = accountant.epsilon(1e-5).unwrap();
    assert!(spent.epsilon < classic && spent.epsilon > 0.9 * classic, "{spent:?} vs classic {classic}");
}

#[test]
fn no_noise_is_no_privacy_and_no_steps_cost_nothing() {
    assert_eq!(eps(0.1, 0.0, 10), f64::INFINITY);
    assert_eq!(eps(0.0, 0.0, 10), 0.0);
    assert_eq!(eps(0.1, 1.0, 0), 0.0);
    assert_eq!(Accountant::default().epsilon(1e-5).unwrap().epsilon, 0.0);
}

#[test]
fn segments_compose_by_adding_their_rdp() {
    let (a, b) = (segment(0.01, 1.1, 500), segment(0.02, 0.8, 70));
    let mut both = Accountant::default();
    both.compose(a).unwrap();
    both.compose(b).unwrap();
    let (only_a, only_b) = (Accountant::from_history(&[a]).unwrap(), Accountant::from_history(&[b]).unwrap());
    for k in 0..DEFAULT_ORDERS.len() {
        let sum = only_a.rdp()[k] + only_b.rdp()[k];
        assert!((both.rdp()[k] - sum).abs() <= 1e-12 * sum);
    }
    let reversed = Accountant::from_history(&[b, a]).unwrap().epsilon(1e-5).unwrap().epsilon;
    let forward = both.epsilon(1e-5).unwrap().epsilon;
    assert!((forward - reversed).abs() <= 1e-12 * forward);
    assert!(forward > only_a.epsilon(1e-5).unwrap().epsilon && forward > only_b.epsilon(1e-5).unwrap().epsilon);
}

#[test]
fn history_merges_runs_of_one_setting() {
    let mut accountant = Accountant::default();
    for s in [segment(0.01, 1.0, 5), segment(0.01, 1.0, 7), segment(0.01, 2.0, 1), segment(0.01, 1.0, 2)] {
        accountant.compose(s).unwrap();
    }
    assert_eq!(accountant.history(), &[segment(0.01, 1.0, 12), segment(0.01, 2.0, 1), segment(0.01, 1.0, 2)]);
    let split = Accountant::from_history(&[segment(0.01, 1.0, 14), segment(0.01, 2.0, 1)]).unwrap();
    let (e1, e2) = (accountant.epsilon(1e-5).unwrap().epsilon, split.epsilon(1e-5).unwrap().epsilon);
    assert!((e1 - e2).abs() <= 1e-12 * e1);
}

#[test]
fn bad_inputs_are_named() {
    let mut accountant = Accountant::default();
    for (bad, want) in [
        (segment(1.5, 1.0, 1), PrivacyError::SampleRate(1.5)),
        (segment(-0.1, 1.0, 1), PrivacyError::SampleRate(-0.1)),
        (segment(0.1, -1.0, 1), PrivacyError::NoiseMultiplier(-1.0)),
        (segment(0.1, f64::INFINITY, 1), PrivacyError::NoiseMultiplier(f64::INFINITY)),
    ] {
        assert_eq!(accountant.compose(bad), Err(want));
    }
    assert!(matches!(accountant.compose(segment(f64::NAN, 1.0, 1)), Err(PrivacyError::SampleRate(_))));
    assert!(accountant.history().is_empty(), "a refused segment is not recorded");
    for delta in [0.0, 1.0, -1e-5, f64::NAN] {
        assert!(matches!(accountant.epsilon(delta), Err(PrivacyError::Delta(_))), "delta {delta}");
    }
    assert_eq!(Accountant::with_orders(vec![]), Err(PrivacyError::NoOrders));
    assert_eq!(Accountant::with_orders(vec![2.0, 1.0]), Err(PrivacyError::Order(1.0)));
    for epsilon in [0.0, -1.0, f64::INFINITY] {
        assert_eq!(calibrate(epsilon, 1e-5, 0.01, 100), Err(PrivacyError::Epsilon(epsilon)));
    }
    assert_eq!(calibrate(1.0, 2.0, 0.01, 100), Err(PrivacyError::Delta(2.0)));
    assert_eq!(calibrate(1.0, 1e-5, 2.0, 100), Err(PrivacyError::SampleRate(2.0)));
}

#[test]
fn calibration_is_the_least_noise_that_meets_the_target() {
    for (target, q, steps) in [(1.0, 0.01, 1000), (4.0, 0.05, 2000), (8.0, 1.0, 10), (0.5, 0.001, 100)] {
        let c = calibrate(target, 1e-5, q, steps).unwrap();
        let at = eps(q, c.noise_multiplier, steps);
        assert!(at <= target, "ε({}) = {at} > {target}", c.noise_multiplier);
        assert_eq!(at, c.spent.epsilon);
        let below = eps(q, c.noise_multiplier * (1.0 - 1e-5), steps);
        assert!(below > target, "a little less noise still meets {target}: σ = {}", c.noise_multiplier);
    }
}

#[test]
fn calibration_accounts_for_what_is_spent() {
    let fresh = calibrate(3.0, 1e-5, 0.02, 500).unwrap();
    let spent = Accountant::from_history(&[segment(0.02, 2.0, 500)]).unwrap();
    assert!(spent.epsilon(1e-5).unwrap().epsilon < 3.0);
    let after = spent.calibrate(3.0, 1e-5, 0.02, 500).unwrap();
    assert!(after.noise_multiplier > fresh.noise_multiplier);
    assert!(after.spent.epsilon <= 3.0);
    // Planned steps that cost nothing need no noise while the target holds.
    assert_eq!(spent.calibrate(3.0, 1e-5, 0.0, 500).unwrap().noise_multiplier, 0.0);
    assert_eq!(spent.calibrate(3.0, 1e-5, 0.02, 0).unwrap().noise_multiplier, 0.0);
}

#[test]
fn unreachable_targets_are_refused() {
    // At δ = 10⁻⁵ the orders up to 63 give no ε between 0 and about 0.1; ε = 0 (the whole run's
    // RDP under δ²) would take far more noise than the bound at this sampling rate.
    match calibrate(0.01, 1e-5, 0.5, 100) {
        Err(PrivacyError::Unreachable { max_noise, least, .. }) => {
            assert_eq!(max_noise, MAX_NOISE_MULTIPLIER);
            assert!(least > 0.01);
        }
        other => panic!("{other:?}"),
    }
    // A budget already spent cannot be met by any noise on the next steps.
    let spent = Accountant::from_history(&[segment(0.1, 0.8, 1000)]).unwrap();
    assert!(spent.epsilon(1e-5).unwrap().epsilon > 2.0);
    assert!(matches!(spent.calibrate(2.0, 1e-5, 0.1, 10), Err(PrivacyError::Unreachable { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn epsilon_falls_with_noise_and_rises_with_steps_and_rate(
        q in 0.001f64..0.5,
        sigma in 0.6f64..6.0,
        steps in 1u64..5000,
        more in 1.01f64..2.0,
    ) {
        let base = eps(q, sigma, steps);
        prop_assert!(base.is_finite() && base >= 0.0);
        prop_assert!(eps(q, sigma * more, steps) <= base);
        prop_assert!(eps(q, sigma, steps + 1 + steps / 2) >= base);
        prop_assert!(eps((q * more).min(1.0), sigma, steps) >= base);
    }

    #[test]
    fn calibrate_inverts_epsilon(q in 0.005f64..0.3, sigma in 0.7f64..4.0, steps in 10u64..3000) {
        let target = eps(q, sigma, steps);
        let c = calibrate(target, 1e-5, q, steps).unwrap();
        prop_assert!(c.spent.epsilon <= target);
        // ε is flat between two orders' crossings only on sets of measure zero: σ comes back.
        prop_assert!((c.noise_multiplier - sigma).abs() <= 1e-5 * sigma, "σ = {sigma}, calibrated {}", c.noise_multiplier);
    }
}

#[test]
fn a_target_below_what_the_orders_express_takes_noise_enough_for_zero_epsilon() {
    // With q = 0.01 and 100 steps, noise in the thousands puts the whole run's RDP under δ²:
    // (0, δ)-DP. Calibration finds that edge rather than refusing, and no less noise meets 0.01.
    let c = calibrate(0.01, 1e-5, 0.01, 100).unwrap();
    assert_eq!(c.spent.epsilon, 0.0);
    assert!(c.noise_multiplier > 1000.0 && c.noise_multiplier < MAX_NOISE_MULTIPLIER);
    assert!(eps(0.01, c.noise_multiplier * (1.0 - 1e-5), 100) > 0.01);
}
