//! Tests of the synthetic-data generator.

use super::*;
use fedsilo_participant::data::load_csv_reader;

fn customers(profile: &InstitutionProfile, seed: u64) -> Vec<Customer> {
    SynthGenerator::new(SynthConfig::default(), profile.clone(), seed)
        .unwrap()
        .collect()
}

fn rate(cs: &[&Customer], f: impl Fn(&Customer) -> bool) -> f64 {
    cs.iter().filter(|c| f(c)).count() as f64 / cs.len().max(1) as f64
}

/// Customers split into quintiles of `key` (lowest first).
fn quintiles(cs: &[Customer], key: impl Fn(&Customer) -> f64) -> Vec<Vec<&Customer>> {
    let mut sorted: Vec<&Customer> = cs.iter().collect();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted
        .chunks(sorted.len().div_ceil(5))
        .map(<[_]>::to_vec)
        .collect()
}

#[test]
#[ignore = "prints the population summary; run with --ignored --nocapture when retuning"]
fn print_summary() {
    let cs = customers(&InstitutionProfile::new("Typical Bank", 200_000), 1);
    let all: Vec<&Customer> = cs.iter().collect();
    let n = cs.len() as f64;
    let mean = |f: &dyn Fn(&Customer) -> f64| cs.iter().map(f).sum::<f64>() / n;
    let ei = mean(&|c| c.latent.engagement_index);
    let sd = (mean(&|c| (c.latent.engagement_index - ei).powi(2))).sqrt();
    println!("engagement index mean {ei:.3} sd {sd:.3}");
    for (i, l) in LABELS.iter().enumerate() {
        println!("{l}: {:.2} %", 100.0 * rate(&all, |c| c.labels()[i]));
    }
    println!(
        "high value: {:.1} %",
        100.0 * rate(&all, |c| c.maa >= 20_000.0)
    );
    for s in Segment::ALL {
        println!(
            "{}: {:.1} %",
            s.as_str(),
            100.0 * rate(&all, |c| c.segment == s)
        );
    }
    for (k, name) in NUMERIC_FEATURES.iter().enumerate() {
        println!("{name}: mean {:.3}", mean(&|c| f64::from(c.numeric()[k])));
    }
}

#[test]
fn prevalences_match_the_documented_targets() {
    let cs = customers(&InstitutionProfile::new("Typical Bank", 50_000), 7);
    let all: Vec<&Customer> = cs.iter().collect();
    let targets = [
        ("churn", 7.0, 5.0, 10.0),
        ("default", 3.5, 2.0, 5.0),
        ("propensity_wealth", 10.0, 5.0, 15.0),
        ("propensity_insurance", 10.0, 5.0, 15.0),
    ];
    for (i, (name, target, lo, hi)) in targets.into_iter().enumerate() {
        assert_eq!(LABELS[i], name);
        let r = 100.0 * rate(&all, |c| c.labels()[i]);
        assert!(
            (r - target).abs() <= 3.0 && (lo..=hi).contains(&r),
            "{name}: {r:.2} %, target {target} % ({lo}–{hi})"
        );
    }
    // The latent probabilities are what the labels are drawn from.
    let pd = cs.iter().map(|c| c.latent.default_probability).sum::<f64>() / cs.len() as f64;
    let dr = rate(&all, |c| c.default);
    assert!((pd - dr).abs() < 0.005, "{pd} vs {dr}");
}

#[test]
fn documented_effects_have_the_documented_sign() {
    let cs = customers(&InstitutionProfile::new("Typical Bank", 50_000), 11);
    let high_value: Vec<Customer> = cs.iter().filter(|c| c.maa >= 20_000.0).cloned().collect();
    let all: Vec<&Customer> = cs.iter().collect();

    // Churn: low engagement, falling balances, rate shopping and maturing deposits raise it.
    let q = quintiles(&high_value, |c| c.latent.engagement_index);
    let (lo, hi) = (rate(&q[0], |c| c.churn), rate(&q[4], |c| c.churn));
    assert!(
        lo > 1.5 * hi,
        "churn by engagement quintile: lowest {lo:.3}, highest {hi:.3}"
    );
    let q = quintiles(&high_value, |c| f64::from(c.balance_trend_3m));
    assert!(
        rate(&q[0], |c| c.churn) > rate(&q[4], |c| c.churn),
        "falling balances"
    );
    let q = quintiles(&high_value, |c| {
        f64::from(c.rate_enquiries_3m) + 1e-3 * c.latent.rate_sensitivity
    });
    assert!(
        rate(&q[4], |c| c.churn) > rate(&q[0], |c| c.churn),
        "rate shopping"
    );
    let hv: Vec<&Customer> = high_value.iter().collect();
    let maturing: Vec<&Customer> = hv
        .iter()
        .copied()
        .filter(|c| c.fd_maturing_next_month)
        .collect();
    let not: Vec<&Customer> = hv
        .iter()
        .copied()
        .filter(|c| c.has_fixed_deposit && !c.fd_maturing_next_month)
        .collect();
    assert!(
        rate(&maturing, |c| c.churn) > rate(&not, |c| c.churn),
        "maturing deposit"
    );
    // Only high-value customers can churn.
    assert!(cs.iter().filter(|c| c.churn).all(|c| c.maa >= 20_000.0));

    // Default: debt-to-income and missed payments raise it, tenure lowers it.
    let q = quintiles(&cs, |c| f64::from(c.debt_to_income));
    assert!(
        rate(&q[4], |c| c.default) > 2.0 * rate(&q[0], |c| c.default),
        "default by dti quintile: lowest {:.4}, highest {:.4}",
        rate(&q[0], |c| c.default),
        rate(&q[4], |c| c.default)
    );
    let missed: Vec<&Customer> = all
        .iter()
        .copied()
        .filter(|c| c.missed_payments_12m > 0.0)
        .collect();
    let clean: Vec<&Customer> = all
        .iter()
        .copied()
        .filter(|c| c.missed_payments_12m == 0.0)
        .collect();
    assert!(
        rate(&missed, |c| c.default) > 2.0 * rate(&clean, |c| c.default),
        "missed payments"
    );
    let q = quintiles(&cs, |c| f64::from(c.tenure_months));
    assert!(
        rate(&q[0], |c| c.default) > rate(&q[4], |c| c.default),
        "tenure"
    );

    // Wealth propensity rises with MAA; insurance propensity is higher with a mortgage.
    let q = quintiles(&cs, |c| f64::from(c.maa));
    assert!(
        rate(&q[4], |c| c.propensity_wealth) > 2.0 * rate(&q[0], |c| c.propensity_wealth),
        "maa"
    );
    let mortgaged: Vec<&Customer> = all.iter().copied().filter(|c| c.has_mortgage).collect();
    let renters: Vec<&Customer> = all.iter().copied().filter(|c| !c.has_mortgage).collect();
    assert!(
        rate(&mortgaged, |c| c.propensity_insurance) > rate(&renters, |c| c.propensity_insurance)
    );
    // Digital-first customers log in more and visit branches less.
    let digital: Vec<&Customer> = all
        .iter()
        .copied()
        .filter(|c| c.latent.digital_first)
        .collect();
    let branch: Vec<&Customer> = all
        .iter()
        .copied()
        .filter(|c| !c.latent.digital_first)
        .collect();
    let mean = |v: &[&Customer], f: fn(&Customer) -> f32| {
        v.iter().map(|c| f64::from(f(c))).sum::<f64>() / v.len() as f64
    };
    assert!(
        mean(&digital, |c| c.mobile_logins_per_month)
            > 5.0 * mean(&branch, |c| c.mobile_logins_per_month)
    );
    assert!(
        mean(&digital, |c| c.branch_visits_per_month)
            < mean(&branch, |c| c.branch_visits_per_month)
    );
}

#[test]
fn institutions_differ_in_the_direction_of_their_profile() {
    let mut old = InstitutionProfile::new("Old Town Savings", 20_000);
    old.age_shift = 10.0;
    old.wealth_tilt = 0.5;
    old.digital_share = 0.2;
    let mut young = InstitutionProfile::new("Neo Bank", 20_000);
    young.age_shift = -10.0;
    young.digital_share = 0.9;
    young.income_scale = 0.8;
    let (o, y) = (customers(&old, 3), customers(&young, 3));
    let mean = |v: &[Customer], f: fn(&Customer) -> f32| {
        v.iter().map(|c| f64::from(f(c))).sum::<f64>() / v.len() as f64
    };
    assert!(mean(&o, |c| c.age) > mean(&y, |c| c.age) + 15.0);
    assert!(mean(&o, |c| c.maa) > 1.5 * mean(&y, |c| c.maa));
    assert!(
        mean(&y, |c| c.mobile_logins_per_month) > 2.0 * mean(&o, |c| c.mobile_logins_per_month)
    );
    assert!(mean(&o, |c| c.income) > mean(&y, |c| c.income));
}

#[test]
fn deterministic_for_seed_and_institution_name() {
    let cfg = SynthConfig::default();
    let a = InstitutionProfile::new("Bank A", 2_000);
    let bytes = |p: &InstitutionProfile, seed| {
        let mut out = Vec::new();
        assert_eq!(write_csv(&mut out, &cfg, p, seed).unwrap(), p.rows);
        out
    };
    let first = bytes(&a, 5);
    assert_eq!(first, bytes(&a, 5));
    assert_ne!(first, bytes(&a, 6));
    let mut b = a.clone();
    b.name = "Bank B".into();
    assert_ne!(first[200..], bytes(&b, 5)[200..]);
    // A longer run starts with the shorter one.
    let mut long = a.clone();
    long.rows = 3_000;
    let long = bytes(&long, 5);
    assert_eq!(long[..first.len()], first[..]);
}

#[test]
fn csv_loads_back_into_the_same_table() {
    let cfg = SynthConfig::default();
    let p = InstitutionProfile::spread("Bank C", 2, 5, 3_000, 1.0, 9).unwrap();
    let mut out = Vec::new();
    write_csv(&mut out, &cfg, &p, 9).unwrap();
    let loaded = load_csv_reader(&out[..], "bank-c.csv", &synth_schema()).unwrap();
    let direct = to_table(&cfg, &p, 9).unwrap();
    assert_eq!(loaded, direct);
    assert_eq!(
        direct.feature_names.len(),
        NUMERIC_FEATURES.len() + Segment::ALL.len()
    );
    assert_eq!(direct.label_names, LABELS);
    assert_eq!(direct.ids[0], "Bank C-0000001");
}

#[test]
fn streaming_write_of_200k_rows() {
    let mut file = tempfile::tempfile().unwrap();
    let p = InstitutionProfile::new("Big Bank", 200_000);
    let rows = write_csv(
        std::io::BufWriter::new(&mut file),
        &SynthConfig::default(),
        &p,
        1,
    )
    .unwrap();
    assert_eq!(rows, 200_000);
    use std::io::{BufRead, Seek};
    file.rewind().unwrap();
    assert_eq!(std::io::BufReader::new(file).lines().count(), 200_001);
}

#[test]
fn spread_profiles_cover_each_axis_evenly() {
    let n = 7;
    let ps: Vec<InstitutionProfile> = (0..n)
        .map(|i| InstitutionProfile::spread(format!("B{i}"), i, n, 100, 1.0, 3).unwrap())
        .collect();
    let mut ages: Vec<f64> = ps.iter().map(|p| p.age_shift).collect();
    ages.sort_by(f64::total_cmp);
    for (k, a) in ages.iter().enumerate() {
        let want = 10.0 * ((k as f64 + 0.5) / n as f64 * 2.0 - 1.0);
        assert!((a - want).abs() < 1e-9, "{ages:?}");
    }
    assert_ne!(
        ps.iter().map(|p| p.age_shift).collect::<Vec<_>>(),
        ps.iter().map(|p| p.wealth_tilt / 0.06).collect::<Vec<_>>(),
        "axes use different orders"
    );
    let flat = InstitutionProfile::spread("B0", 0, n, 100, 0.0, 3).unwrap();
    assert_eq!(flat, InstitutionProfile::new("B0", 100));
    assert!(InstitutionProfile::spread("B9", 9, n, 100, 1.0, 3).is_err());
    assert!(InstitutionProfile::spread("B0", 0, n, 100, -1.0, 3).is_err());

    let t = institution_table("Bank A", 0, 3, 500, 0.5, 7).unwrap();
    assert_eq!(t.n_rows(), 500);
    assert_eq!(t, institution_table("Bank A", 0, 3, 500, 0.5, 7).unwrap());
}

#[test]
fn config_is_tunable_from_toml_and_validated() {
    let cfg: SynthConfig = toml::from_str("[churn]\nhigh_value_maa = 50000.0\n").unwrap();
    assert_eq!(cfg.churn.high_value_maa, 50_000.0);
    assert_eq!(cfg.default, DefaultModel::default());
    let round: SynthConfig =
        toml::from_str(&toml::to_string(&SynthConfig::default()).unwrap()).unwrap();
    assert_eq!(round, SynthConfig::default());
    assert!(toml::from_str::<SynthConfig>("[churn]\nhigh_value = 1.0\n").is_err());

    let mut bad = SynthConfig::default();
    bad.churn.drop_fraction = 1.5;
    let e = SynthGenerator::new(bad, InstitutionProfile::new("X", 1), 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "synthetic data config: churn.drop_fraction: must be in (0, 1)"
    );
    let mut bad = SynthConfig::default();
    bad.population.age_sd = f64::NAN;
    assert!(SynthGenerator::new(bad, InstitutionProfile::new("X", 1), 0).is_err());
    let mut p = InstitutionProfile::new("X", 1);
    p.digital_share = 2.0;
    let e = SynthGenerator::new(SynthConfig::default(), p, 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "institution 'X': digital_share must be in [0, 1]"
    );

    // Raising the high-value threshold lowers churn.
    let p = InstitutionProfile::new("T", 20_000);
    let churn = |cfg: SynthConfig| {
        SynthGenerator::new(cfg, p.clone(), 1)
            .unwrap()
            .filter(|c| c.churn)
            .count()
    };
    assert!(churn(cfg) < churn(SynthConfig::default()));
}
