use super::*;
use fedsilo_ml::gbdt::{GbdtInstruction, GbdtParams};
use fedsilo_ml::scorecard::{scorecard_counts, woe_iv, ScorecardSpec};
use fedsilo_ml::table::Table;
use ndarray::{Array2, Axis};
use rand::{Rng, SeedableRng};

/// Synthetic participants: x0 informative, x1 large-scale noise, x2 tiny-scale informative,
/// a few missing values.
fn participant(seed: u64, n: usize, shift: f32) -> LocalData {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut x = Array2::<f32>::zeros((n, 3));
    let mut y = Array2::<f32>::zeros((n, 1));
    for r in 0..n {
        let a: f32 = rng.random_range(-2.0..2.0) + shift;
        let b: f32 = rng.random_range(0.0..1e5);
        let c: f32 = rng.random_range(0.0..1e-3);
        let z = 1.5 * a + 2000.0 * (c - 5e-4) - 0.5;
        let p = 1.0 / (1.0 + (-z).exp());
        x[[r, 0]] = a;
        x[[r, 1]] = if r % 50 == 0 { f32::NAN } else { b };
        x[[r, 2]] = c;
        y[[r, 0]] = if rng.random::<f32>() < p { 1.0 } else { 0.0 };
    }
    let t = Table {
        feature_names: vec!["a".into(), "b".into(), "c".into()],
        x,
        label_names: vec!["y".into()],
        labels: y,
        ids: (0..n).map(|i| i.to_string()).collect(),
    };
    let (train, holdout) = t.split_holdout(0.2, seed);
    LocalData { train, holdout }
}

/// Three non-IID participants (shifted x0) of different sizes.
fn three_participants() -> Vec<LocalData> {
    vec![
        participant(1, 1500, -0.5),
        participant(2, 1200, 0.0),
        participant(3, 900, 0.7),
    ]
}

fn spec() -> JobSpec {
    JobSpec {
        job_id: "t".into(),
        dataset: "d".into(),
        task: Task::Risk,
        model: ModelSpec::LogisticRegression,
        features: vec![],
        labels: vec![],
        rounds: 12,
        min_participants: 2,
        threshold: None,
        neighbours: None,
        learning: Learning::default(),
        dp: None,
        eval_every: 4,
        hist_bins: 1000,
        seed: 1,
        phase_timeout_ms: 1000,
        max_participants: 100,
        absence_patience_ms: DEFAULT_ABSENCE_PATIENCE_MS,
    }
}

/// Runs a plan with plain (unmasked) sums: the arithmetic secure aggregation reproduces.
fn run(plan: &mut Plan, parts: &[LocalData]) {
    let mut caches: Vec<LocalCache> = parts.iter().map(|_| LocalCache::default()).collect();
    while let Some(step) = plan.next_step() {
        let mut sum = vec![0.0; step.len];
        for (p, c) in parts.iter().zip(caches.iter_mut()) {
            let v = compute(&step.instruction, p, c, &mut private_rng()).unwrap();
            assert_eq!(v.len(), step.len);
            for (s, x) in sum.iter_mut().zip(&v) {
                assert!(
                    x.abs() <= step.max_abs,
                    "{x} exceeds the step's bound {}",
                    step.max_abs
                );
                *s += x;
            }
        }
        plan.absorb(&sum, parts.len()).unwrap();
    }
}

#[test]
fn plan_standardises_with_global_moments_and_learns() {
    let parts = vec![
        participant(1, 2000, -0.5),
        participant(2, 1500, 0.0),
        participant(3, 1000, 0.7),
    ];
    let mut plan = Plan::new(
        spec(),
        vec!["a".into(), "b".into(), "c".into()],
        vec!["y".into()],
    )
    .unwrap();
    run(&mut plan, &parts);
    assert!(plan.is_done());
    let model = plan.model().unwrap();
    // Global moments equal the pooled ones (observed values only).
    for j in 0..3 {
        let vals: Vec<f64> = parts
            .iter()
            .flat_map(|p| p.train.x.column(j).to_vec())
            .filter(|v| !v.is_nan())
            .map(|v| v as f64)
            .collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let sd = (vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / vals.len() as f64).sqrt();
        let (gm, gs) = (model.standardizer.mean[j], model.standardizer.std[j]);
        assert!(
            (gm - m).abs() <= 1e-6 * sd.max(1e-9) + 1e-9 * m.abs(),
            "mean {j}: {gm} vs {m}"
        );
        assert!((gs - sd).abs() <= 1e-4 * sd, "sd {j}: {gs} vs {sd}");
    }
    let eval = plan.last_eval().unwrap();
    assert!(
        eval.per_label[0].0.auc > 0.75,
        "AUC {}",
        eval.per_label[0].0.auc
    );
    assert_eq!(
        plan.curve().iter().filter(|c| c.holdout.is_some()).count(),
        3
    );
    // The checkpoint is the plan: a round trip changes nothing.
    let back: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn gbdt_plan_grows_trees_from_sums_and_matches_pooled_boosting() {
    let parts = three_participants();
    let params = GbdtParams {
        n_trees: 8,
        max_depth: 3,
        ..GbdtParams::default()
    };
    let mut s = spec();
    s.model = ModelSpec::Gbdt(params.clone());
    let mut plan = Plan::new(
        s,
        vec!["a".into(), "b".into(), "c".into()],
        vec!["y".into()],
    )
    .unwrap();
    run(&mut plan, &parts);
    assert!(plan.is_done());
    assert_eq!(plan.rounds_done(), 8);
    let auc = plan.last_eval().unwrap().per_label[0].0.auc;
    assert!(auc > 0.8, "gbdt AUC {auc}");
    let model = plan.model().unwrap();
    assert!(model.uses_raw_features());
    // The trees predict the same on a participant's rows through the public API.
    let p = model.predict(&parts[0].holdout).unwrap();
    assert_eq!(p.nrows(), parts[0].holdout.n_rows());
    // The pooled reference: the same boosting on all rows in one place. The federation
    // summed exactly the histograms the pooled fit computes, so both grow the same trees up
    // to the order of floating-point additions.
    let pool = |f: fn(&LocalData) -> &Table| {
        let tables: Vec<&Table> = parts.iter().map(f).collect();
        let x = ndarray::concatenate(
            Axis(0),
            &tables.iter().map(|t| t.x.view()).collect::<Vec<_>>(),
        )
        .unwrap();
        let y = ndarray::concatenate(
            Axis(0),
            &tables.iter().map(|t| t.labels.view()).collect::<Vec<_>>(),
        )
        .unwrap();
        (x, y)
    };
    let (xt, yt) = pool(|p| &p.train);
    let (xh, yh) = pool(|p| &p.holdout);
    let pooled = fedsilo_ml::gbdt::fit_pooled(xt.view(), yt.column(0), &params).unwrap();
    assert_eq!(pooled.trees.len(), 8);
    let ModelParams::Gbdt { model: fed } = &model.params else {
        panic!("not a gbdt model: {:?}", model.params)
    };
    let pf = fed.predict_proba(xh.view()).unwrap();
    let pp = pooled.predict_proba(xh.view()).unwrap();
    let yh: Vec<f32> = yh.column(0).to_vec();
    let (auc_fed, auc_pooled) = (
        fedsilo_ml::metrics::auc(&pf, &yh),
        fedsilo_ml::metrics::auc(&pp, &yh),
    );
    assert!(
        (auc_fed - auc_pooled).abs() < 0.005,
        "federated AUC {auc_fed} vs pooled {auc_pooled}"
    );
    let max_gap = pf
        .iter()
        .zip(&pp)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        max_gap < 0.02,
        "federated and pooled probabilities differ by {max_gap}"
    );
    let back: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn scorecard_plan_bins_and_counts_from_sums_and_approaches_the_pooled_fit() {
    let parts = three_participants();
    // 8 bins over ~2,900 rows give a pure-noise feature an IV of about 0.03 by chance,
    // so this test drops below 0.05.
    let sc = ScorecardSpec {
        bins: 8,
        min_iv: 0.05,
        ..ScorecardSpec::default()
    };
    let mut s = spec();
    s.model = ModelSpec::Scorecard(sc.clone());
    s.rounds = 40;
    s.learning.learning_rate = 0.2;
    let names: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
    let mut plan = Plan::new(s.clone(), names.clone(), vec!["y".into()]).unwrap();
    run(&mut plan, &parts);
    assert!(plan.is_done());
    let model = plan.model().unwrap().clone();
    let ModelParams::Scorecard { card } = &model.params else {
        panic!("not a scorecard: {:?}", model.params)
    };
    // The WOE table is exactly the one the pooled rows give with the same bins: the
    // counts were summed, not estimated.
    let trains: Vec<&Table> = parts.iter().map(|p| &p.train).collect();
    let x = ndarray::concatenate(
        Axis(0),
        &trains.iter().map(|t| t.x.view()).collect::<Vec<_>>(),
    )
    .unwrap();
    let y = ndarray::concatenate(
        Axis(0),
        &trains.iter().map(|t| t.labels.view()).collect::<Vec<_>>(),
    )
    .unwrap();
    let pooled_counts = scorecard_counts(x.view(), y.column(0), &card.woe.bins).unwrap();
    let pooled_woe = woe_iv(&pooled_counts, &card.woe.bins)
        .unwrap()
        .with_min_iv(sc.min_iv);
    assert_eq!(card.woe, pooled_woe);
    // x0 and x2 carry the signal, x1 is noise: the IV rule keeps the first and last.
    let kept: Vec<&str> = card
        .woe
        .selected()
        .iter()
        .map(|&j| names[j].as_str())
        .collect();
    assert_eq!(kept, ["a", "c"], "IVs {:?}", card.woe.features);
    // The pooled reference (same pipeline, Newton fit) ranks the hold-out alike.
    let pooled = fedsilo_ml::scorecard::fit_pooled(
        names.clone(),
        x.view(),
        y.column(0),
        &sc,
        s.learning.l2,
        1.0,
    )
    .unwrap();
    let hold: Vec<&Table> = parts.iter().map(|p| &p.holdout).collect();
    let xh = ndarray::concatenate(
        Axis(0),
        &hold.iter().map(|t| t.x.view()).collect::<Vec<_>>(),
    )
    .unwrap();
    let yh: Vec<f32> = hold
        .iter()
        .flat_map(|t| t.labels.column(0).to_vec())
        .collect();
    let auc_of =
        |pts: Vec<f64>| fedsilo_ml::metrics::auc(&pts.iter().map(|p| -p).collect::<Vec<_>>(), &yh);
    let fed_auc = auc_of(card.score_points(xh.view()).unwrap());
    let pooled_auc = auc_of(pooled.score_points(xh.view()).unwrap());
    assert!(fed_auc > 0.75, "{fed_auc}");
    assert!(
        (fed_auc - pooled_auc).abs() < 0.005,
        "federated {fed_auc} vs pooled {pooled_auc}"
    );
    // Points and probability agree through the public API, and the export has the table.
    let p = model.predict(&parts[0].holdout).unwrap();
    let pts = model.points(&parts[0].holdout).unwrap().unwrap();
    for (pr, pt) in p.column(0).iter().zip(&pts) {
        assert!((card.probability_of_bad(*pt) - pr).abs() < 1e-6);
    }
    let artifact = ModelArtifact::new(&plan, &model, "00".repeat(32));
    assert_eq!(artifact.model_kind, "scorecard");
    assert_eq!(
        artifact.scorecard.len(),
        card.points.iter().map(Vec::len).sum::<usize>()
    );
    let back: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
    assert_eq!(back, plan);
    // Scorecards refuse what they cannot do.
    let mut bad = s.clone();
    bad.labels = vec!["y".into(), "z".into()];
    assert!(bad.validate().unwrap_err().to_string().contains("labels"));
    let mut bad = s;
    bad.model = ModelSpec::Scorecard(ScorecardSpec {
        bins: 1,
        ..ScorecardSpec::default()
    });
    assert!(bad.validate().unwrap_err().to_string().contains("bins"));
}

#[test]
fn one_class_federation_and_bad_sums_are_refused() {
    let mut parts = vec![participant(1, 300, 0.0), participant(2, 300, 0.0)];
    for p in parts.iter_mut() {
        p.train.labels.fill(0.0);
    }
    let mut plan = Plan::new(spec(), vec!["a".into()], vec!["y".into()]).unwrap();
    let step = plan.next_step().unwrap();
    assert!(matches!(
        plan.absorb(&[0.0], 2),
        Err(FedError::SumLength { .. })
    ));
    let mut sum = vec![0.0; step.len];
    for p in &parts {
        let v = compute(
            &step.instruction,
            p,
            &mut LocalCache::default(),
            &mut private_rng(),
        )
        .unwrap();
        sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
    }
    let err = plan.absorb(&sum, 2).unwrap_err().to_string();
    assert!(err.contains("only one class"), "{err}");
    let missing = Instruction::Scale {
        data: JobData {
            dataset: "d".into(),
            features: vec!["nope".into()],
            labels: vec!["y".into()],
        },
        noise: None,
    };
    let e = compute(
        &missing,
        &parts[0],
        &mut LocalCache::default(),
        &mut private_rng(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("'nope'"), "{e}");
}

#[test]
fn spec_validation_names_the_field() {
    let mut s = spec();
    s.rounds = 0;
    assert!(s.validate().unwrap_err().to_string().contains("rounds"));
    let mut s = spec();
    s.min_participants = 1;
    assert!(s
        .validate()
        .unwrap_err()
        .to_string()
        .contains("min_participants"));
    let mut s = spec();
    s.learning.learning_rate = -1.0;
    assert!(s
        .validate()
        .unwrap_err()
        .to_string()
        .contains("learning_rate"));
}

/// The old flat checkpoint form (before plan/ had a module per family), written by hand from
/// a current plan the way `ml::fed::Plan` serialised it.
fn as_v0(plan: &Plan) -> serde_json::Value {
    let v = serde_json::to_value(plan).unwrap();
    let job = &v["job"];
    let stage = &v["stage"];
    let mut old = serde_json::json!({
        "spec": job["spec"], "data": job["data"], "step": job["step"],
        "total_rows": job["totals"]["rows"], "positives": job["totals"]["positives"],
        "observed": job["totals"]["observed"], "curve": job["curve"],
        "last_eval": job["last_eval"], "dp_rounds": job["dp_rounds"],
        "stopped_early": job["stopped_early"], "model": null, "optimizer": null,
    });
    let (name, body) = stage.as_object().unwrap().iter().next().unwrap();
    old["stage"] = match name.as_str() {
        "Linear" => {
            old["model"] = body["model"].clone();
            old["optimizer"] = body["optimizer"].clone();
            body["phase"].clone()
        }
        "Gbdt" => match body.as_object().unwrap().iter().next().unwrap() {
            (g, b) if g == "Grow" => {
                old["gbdt_standardizer"] = b["standardizer"].clone();
                serde_json::json!({ "Gbdt": { "server": b["server"] } })
            }
            (_, b) => {
                old["model"] = b["model"].clone();
                old["rounds_override"] = b["trees"].clone();
                serde_json::json!({ "Evaluate": { "after_round": b["trees"] } })
            }
        },
        "Done" => {
            old["model"] = body["model"].clone();
            serde_json::json!("Done")
        }
        other => panic!("no old form written for stage {other}"),
    };
    old
}

#[test]
fn old_flat_checkpoints_resume_as_the_same_plan() {
    let parts = three_participants();
    // Logistic regression in the middle of training, and boosting in the middle of a tree.
    let mut lr = Plan::new(
        spec(),
        vec!["a".into(), "b".into(), "c".into()],
        vec!["y".into()],
    )
    .unwrap();
    let mut gb_spec = spec();
    gb_spec.model = ModelSpec::Gbdt(GbdtParams {
        n_trees: 3,
        max_depth: 2,
        ..GbdtParams::default()
    });
    let mut gb = Plan::new(gb_spec, lr.data().features.clone(), vec!["y".into()]).unwrap();
    for (plan, steps) in [(&mut lr, 5), (&mut gb, 6)] {
        let mut caches: Vec<LocalCache> = parts.iter().map(|_| LocalCache::default()).collect();
        for _ in 0..steps {
            let step = plan.next_step().unwrap();
            let sum = plain_sum(&step, &parts, &mut caches);
            plan.absorb(&sum, parts.len()).unwrap();
        }
        let back: Plan = serde_json::from_value(as_v0(plan)).unwrap();
        assert_eq!(&back, &*plan);
        // ... and it goes on to the same model.
        let (mut a, mut b) = (back, plan.clone());
        run(&mut a, &parts);
        run(&mut b, &parts);
        assert_eq!(a, b);
        assert!(a.is_done() && a.model().is_some());
    }
    // An old checkpoint that lacks what its stage needs is refused by name.
    let mut broken = as_v0(&lr);
    broken["model"] = serde_json::Value::Null;
    let e = serde_json::from_value::<Plan>(broken)
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no model"), "{e}");
}

/// The participant's private randomness (record-level DP steps read it; these do not).
fn private_rng() -> rand_chacha::ChaCha20Rng {
    use rand::SeedableRng;
    rand_chacha::ChaCha20Rng::seed_from_u64(7)
}

/// The plain (unmasked, noise-free) sum of `step` over `parts`, each drawing from the same
/// fixed private stream.
fn plain_sum(step: &Step, parts: &[LocalData], caches: &mut [LocalCache]) -> Vec<f64> {
    let mut sum = vec![0.0; step.len];
    for (p, c) in parts.iter().zip(caches.iter_mut()) {
        for (s, x) in sum
            .iter_mut()
            .zip(compute(&step.instruction, p, c, &mut private_rng()).unwrap())
        {
            *s += x;
        }
    }
    sum
}

fn record_dp(budget: Option<f64>, sigma: Option<f64>) -> DpSpec {
    DpSpec {
        level: DpLevel::Record,
        clip: 1.0,
        noise_multiplier: sigma,
        delta: 1e-5,
        epsilon_budget: budget,
        sampling_rate: Some(0.1),
        count_noise_multiplier: None,
    }
}

#[test]
fn dp_spec_refusals_name_the_key() {
    let refused = |dp: DpSpec| {
        let mut s = spec();
        s.dp = Some(dp);
        s.validate().unwrap_err().to_string()
    };
    let e = refused(DpSpec {
        sampling_rate: None,
        ..record_dp(Some(3.0), None)
    });
    assert!(e.contains("dp.sampling_rate: required"), "{e}");
    let e = refused(record_dp(None, None));
    assert!(e.contains("noise_multiplier or epsilon_budget"), "{e}");
    let e = refused(DpSpec {
        sampling_rate: Some(1.5),
        ..record_dp(Some(3.0), None)
    });
    assert!(e.contains("dp.sampling_rate: 1.5"), "{e}");
    let e = refused(DpSpec {
        level: DpLevel::Institution,
        ..record_dp(Some(3.0), None)
    });
    assert!(e.contains("dp.noise_multiplier: required"), "{e}");
    let e = refused(DpSpec {
        level: DpLevel::Institution,
        ..record_dp(Some(3.0), Some(1.0))
    });
    assert!(e.contains("record-level setting"), "{e}");
    let e = refused(DpSpec {
        clip: 0.0,
        ..record_dp(Some(3.0), None)
    });
    assert!(e.contains("dp.clip"), "{e}");
    let mut s = spec();
    s.model = ModelSpec::Gbdt(GbdtParams::default());
    s.dp = Some(DpSpec {
        level: DpLevel::Institution,
        sampling_rate: None,
        ..record_dp(Some(3.0), Some(1.0))
    });
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("boosted trees take record-level DP"), "{e}");
    s.dp = Some(record_dp(Some(3.0), None));
    s.validate().expect("record-level boosting is allowed");
}

/// A record-level GBDT job: σ is calibrated for its `n_trees × max_depth` tree levels; the
/// bin agreement's fine histogram is a noised count release and every tree level a
/// Poisson-sampled, clipped, noised release that the accountant counts; with the noise the
/// participants would add (drawn here in the clear) the trees still learn, and ε stays within
/// the budget.
#[test]
fn record_level_gbdt_samples_clips_and_noises_every_level() {
    let mut s = spec();
    let params = GbdtParams {
        n_trees: 8,
        max_depth: 3,
        max_leaves: 8,
        learning_rate: 0.3,
        max_bins: 16,
        fine_bins: 64,
        lambda: 5.0,
        min_child_weight: 5.0,
        ..GbdtParams::default()
    };
    s.model = ModelSpec::Gbdt(params);
    s.dp = Some(DpSpec {
        sampling_rate: Some(0.5),
        ..record_dp(Some(4.0), None)
    });
    // 8 trees × (3 levels + the leaf sums).
    assert_eq!(privacy::training_releases(&s), 32);
    let names: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
    let mut plan = Plan::new(s, names, vec!["y".into()]).unwrap();
    let job = plan.spec().clone();
    let sigma = job.dp.as_ref().and_then(|d| d.noise_multiplier).unwrap();
    let eps = privacy::spent(&job, 32).unwrap().record;
    assert!(eps <= 4.0 && eps > 3.99, "ε {eps} for σ {sigma}");

    let parts = three_participants();
    let rows: usize = parts.iter().map(|p| p.train.x.nrows()).sum();
    let mut caches: Vec<LocalCache> = parts.iter().map(|_| LocalCache::default()).collect();
    let mut rngs: Vec<_> = (0..parts.len() as u64)
        .map(rand_chacha::ChaCha20Rng::seed_from_u64)
        .collect();
    let mut noise_rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
    let mut noised = std::collections::BTreeSet::new();
    let (mut levels, mut leaf_steps) = (0, 0);
    while let Some(step) = plan.next_step() {
        let noise = step.instruction.noise().cloned();
        if let Some(n) = &noise {
            noised.insert(step.instruction.purpose().name());
            assert!(n.stddev > 0.0);
        }
        let level = step.instruction.purpose() == Purpose::TreeLevel;
        if level {
            let n = noise.as_ref().expect("a record-level tree level is noised");
            assert_eq!(n.sampling_rate, Some(0.5));
            // A level: one bin per feature; a tree's leaf sums: one leaf.
            let sensitivity = match &step.instruction {
                Instruction::Gbdt {
                    step: GbdtInstruction::Leaves { .. },
                    ..
                } => {
                    leaf_steps += 1;
                    fedsilo_ml::gbdt::LevelSample::pair_bound(1.0)
                }
                _ => privacy::level_sensitivity(3, 1.0),
            };
            assert_eq!(n.stddev, sigma * sensitivity);
            levels += 1;
        }
        let mut sum = vec![0.0; step.len];
        for ((p, c), r) in parts.iter().zip(caches.iter_mut()).zip(rngs.iter_mut()) {
            let v = compute(&step.instruction, p, c, r).unwrap();
            for (s, x) in sum.iter_mut().zip(&v) {
                *s += x;
            }
        }
        if level && levels == 1 {
            // The root's hessians over feature a's bins: about half the rows (the sample),
            // each ≤ ¼ — far below all rows × ¼.
            let nb = step.len / 3 / 2;
            let h: f64 = (0..nb).map(|b| sum[2 * b + 1]).sum();
            assert!(
                h > 0.0 && h < 0.7 * 0.25 * rows as f64,
                "root hessian {h} of {rows} rows"
            );
        }
        if let Some(n) = &noise {
            // The discrete Gaussian the participants' shares sum to, at 2^-10 resolution.
            let draws = fedsilo_ml::dp::discrete_gaussian_noise(
                n.stddev * 1024.0,
                sum.len(),
                &mut noise_rng,
            )
            .unwrap();
            for (v, d) in sum.iter_mut().zip(draws) {
                *v += d as f64 / 1024.0;
            }
        }
        plan.absorb(&sum, parts.len()).unwrap();
    }
    let got: Vec<_> = noised.into_iter().collect();
    assert_eq!(got, ["bins", "stats", "tree-level"]);
    assert_eq!(plan.dp_rounds(), levels);
    assert!((16..=32).contains(&levels), "{levels} levels");
    let trees = plan.model().map(|m| match &m.params {
        ModelParams::Gbdt { model } => model.trees.len(),
        _ => 0,
    });
    assert_eq!(Some(leaf_steps), trees, "one leaf-sum step per tree");
    let (_, spent) = plan.privacy().unwrap();
    assert!(spent.record <= 4.0, "{spent:?}");
    let auc = plan.last_eval().unwrap().per_label[0].0.auc;
    assert!(auc > 0.7, "AUC {auc}");
}

/// A record-level job given only a budget calibrates σ at launch: the plan carries it, the
/// accountant then spends just under the budget over the job's rounds, and the training
/// steps ask each participant for Poisson-sampled, per-row clipped gradients with that σ.
#[test]
fn record_level_plan_calibrates_sigma_and_trains_on_clipped_sampled_gradients() {
    let mut s = spec();
    s.rounds = 60;
    s.eval_every = 60;
    s.learning.learning_rate = 0.5;
    s.dp = Some(record_dp(Some(3.0), None));
    let mut plan = Plan::new(
        s,
        vec!["a".into(), "b".into(), "c".into()],
        vec!["y".into()],
    )
    .unwrap();
    let dp = plan.spec().dp.clone().unwrap();
    let sigma = dp.noise_multiplier.expect("calibrated");
    let job = plan.spec().clone();
    let eps = privacy::spent(&job, 60).unwrap().record;
    assert!(eps <= 3.0 && eps > 2.99, "ε {eps} for σ {sigma}");
    assert!(privacy::next_round_exceeds(&job, 60));
    assert!(!privacy::next_round_exceeds(&job, 59));
    // 0.2 % less noise would overspend.
    let less = DpSpec {
        noise_multiplier: Some(sigma * 0.998),
        ..dp.clone()
    };
    let less = JobSpec {
        dp: Some(less),
        ..job.clone()
    };
    assert!(privacy::spent(&less, 60).unwrap().record > 3.0);
    assert_eq!(privacy::spent(&job, 60).unwrap().institution, f64::INFINITY);

    let parts = three_participants();
    let mut caches: Vec<LocalCache> = parts.iter().map(|_| LocalCache::default()).collect();
    let mut rngs: Vec<_> = (0..parts.len() as u64)
        .map(rand_chacha::ChaCha20Rng::seed_from_u64)
        .collect();
    let mut train_steps = 0;
    while let Some(step) = plan.next_step() {
        let noise = step.instruction.noise().cloned();
        match &step.instruction {
            Instruction::Scale { .. } | Instruction::Moments { .. } => {
                let n = noise.expect("the record-level prelude is noised");
                assert!(n.stddev > 0.0 && n.sampling_rate.is_none());
            }
            Instruction::Train { .. } => {
                let n = noise.expect("noised training");
                assert_eq!(n.sampling_rate, Some(0.1));
                assert_eq!(n.stddev, sigma * 1.0);
                train_steps += 1;
            }
            _ => assert!(noise.is_none()),
        }
        let mut sum = vec![0.0; step.len];
        for ((p, c), r) in parts.iter().zip(caches.iter_mut()).zip(rngs.iter_mut()) {
            let v = compute(&step.instruction, p, c, r).unwrap();
            if let Instruction::Train { .. } = step.instruction {
                // At most the sampled rows' clipped gradients: far below all rows × clip.
                let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                assert!(norm <= 0.2 * p.train.x.nrows() as f64, "norm {norm}");
            }
            for (s, x) in sum.iter_mut().zip(&v) {
                *s += x;
            }
        }
        plan.absorb(&sum, parts.len()).unwrap();
    }
    assert_eq!(train_steps, 60);
    assert_eq!(plan.dp_rounds(), 60);
    let auc = plan.last_eval().unwrap().per_label[0].0.auc;
    assert!(auc > 0.75, "AUC {auc}");
}

/// A record-level scorecard: its binning's fine histogram and good/bad counts are noised
/// count releases the accountant charges for (two more than a regression job's), and its
/// WOE regression is DP-SGD. An institution-level scorecard is refused.
#[test]
fn record_level_scorecard_noises_its_counts_and_accounts_for_them() {
    let mut s = spec();
    s.model = ModelSpec::Scorecard(ScorecardSpec {
        bins: 6,
        min_iv: 0.0,
        ..ScorecardSpec::default()
    });
    s.rounds = 40;
    s.eval_every = 40;
    s.learning.learning_rate = 0.5;
    s.dp = Some(DpSpec {
        noise_multiplier: Some(1.5),
        ..record_dp(None, None)
    });
    let mut lr = s.clone();
    lr.model = ModelSpec::LogisticRegression;
    let (card_eps, lr_eps) = (
        privacy::spent(&s, 40).unwrap().record,
        privacy::spent(&lr, 40).unwrap().record,
    );
    assert!(card_eps > lr_eps, "{card_eps} vs {lr_eps}");

    let names: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
    let mut plan = Plan::new(s.clone(), names, vec!["y".into()]).unwrap();
    let parts = three_participants();
    let mut caches: Vec<LocalCache> = parts.iter().map(|_| LocalCache::default()).collect();
    let mut noised = std::collections::BTreeSet::new();
    while let Some(step) = plan.next_step() {
        if let Some(n) = step.instruction.noise() {
            noised.insert(step.instruction.purpose().name());
            assert!(n.stddev > 0.0);
        }
        let sum = plain_sum(&step, &parts, &mut caches);
        plan.absorb(&sum, parts.len()).unwrap();
    }
    let got: Vec<_> = noised.into_iter().collect();
    assert_eq!(got, ["bins", "stats", "train", "woe-counts"]);
    let auc = plan.last_eval().unwrap().per_label[0].0.auc;
    assert!(auc > 0.7, "AUC {auc}");

    s.dp = Some(DpSpec {
        level: DpLevel::Institution,
        sampling_rate: None,
        ..s.dp.clone().unwrap()
    });
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("scorecard takes record-level DP"), "{e}");
}

/// A participant refuses a DP step whose noise it cannot honour, naming it: a sampling rate
/// outside (0, 1] or a non-finite noise stddev from the coordinator.
#[test]
fn a_dp_step_with_impossible_noise_is_refused_by_name() {
    let mut s = spec();
    s.dp = Some(record_dp(None, Some(1.0)));
    let mut plan = Plan::new(
        s,
        vec!["a".into(), "b".into(), "c".into()],
        vec!["y".into()],
    )
    .unwrap();
    let parts = three_participants();
    let mut caches: Vec<LocalCache> = parts.iter().map(|_| LocalCache::default()).collect();
    let train = loop {
        let step = plan.next_step().unwrap();
        if let Instruction::Train { .. } = step.instruction {
            break step.instruction;
        }
        let sum = plain_sum(&step, &parts, &mut caches);
        plan.absorb(&sum, parts.len()).unwrap();
    };
    let mut with_noise = |f: &dyn Fn(&mut NoiseSpec)| {
        let mut i = train.clone();
        if let Instruction::Train { noise: Some(n), .. } = &mut i {
            f(n);
        }
        compute(&i, &parts[0], &mut caches[0], &mut private_rng())
            .unwrap_err()
            .to_string()
    };
    let e = with_noise(&|n| n.sampling_rate = Some(1.5));
    assert!(e.contains("noise sampling rate"), "{e}");
    let e = with_noise(&|n| n.sampling_rate = Some(0.0));
    assert!(e.contains("noise sampling rate"), "{e}");
    let e = with_noise(&|n| n.stddev = f64::NAN);
    assert!(e.contains("noise stddev"), "{e}");
}

/// `dp.count_noise_multiplier` splits a record-level budget between the count releases and
/// training: less count noise makes the counts' noise smaller and leaves less budget, so a
/// budget-only job calibrates a larger training σ; it is refused at institution level.
#[test]
fn count_noise_multiplier_splits_the_budget_between_counts_and_training() {
    let mut s = spec();
    s.model = ModelSpec::Scorecard(ScorecardSpec::default());
    s.rounds = 40;
    s.dp = Some(record_dp(Some(3.0), None));
    let names = || vec!["a".to_string(), "b".to_string(), "c".to_string()];
    let default = Plan::new(s.clone(), names(), vec!["y".into()]).unwrap();
    let mut low = s.clone();
    low.dp.as_mut().unwrap().count_noise_multiplier = Some(4.0);
    let low = Plan::new(low, names(), vec!["y".into()]).unwrap();
    let sigma = |p: &Plan| p.spec().dp.as_ref().unwrap().sigma();
    assert!(
        sigma(&low) > sigma(&default),
        "{} vs {}",
        sigma(&low),
        sigma(&default)
    );
    let count_stddev = |p: &Plan| p.next_step().unwrap().instruction.noise().unwrap().stddev;
    assert!((count_stddev(&default) / count_stddev(&low) - 2.0).abs() < 1e-12);
    for p in [&default, &low] {
        let eps = privacy::spent(p.spec(), 40).unwrap().record;
        assert!(eps <= 3.0 && eps > 2.99, "{eps}");
    }
    let mut inst = s.clone();
    inst.model = ModelSpec::LogisticRegression;
    inst.dp = Some(DpSpec {
        level: DpLevel::Institution,
        sampling_rate: None,
        noise_multiplier: Some(1.0),
        count_noise_multiplier: Some(2.0),
        ..record_dp(None, None)
    });
    let e = inst.validate().unwrap_err().to_string();
    assert!(
        e.contains("dp.count_noise_multiplier: 2 is a record-level setting"),
        "{e}"
    );
}

/// A noised sum the coordinator unmasked but did not use is charged: a refused training sum
/// counts as a training round, a refused count release as one more count release; a step
/// without noise charges nothing.
#[test]
fn a_refused_noised_sum_is_charged() {
    let mut s = spec();
    s.rounds = 20;
    s.dp = Some(record_dp(None, Some(1.0)));
    let mut plan = Plan::new(
        s,
        vec!["a".into(), "b".into(), "c".into()],
        vec!["y".into()],
    )
    .unwrap();
    let before = plan.privacy().unwrap().1.record;
    let scale = plan.next_step().unwrap();
    assert_eq!(scale.instruction.purpose(), Purpose::Stats);
    plan.charge_unused_release(&scale);
    let after_count = plan.privacy().unwrap().1.record;
    assert!(after_count > before, "{after_count} vs {before}");
    assert_eq!(plan.dp_rounds(), 0);
    // Run the prelude, then charge a refused training sum.
    let parts = three_participants();
    let mut caches: Vec<LocalCache> = parts.iter().map(|_| LocalCache::default()).collect();
    while let Some(step) = plan.next_step() {
        if step.instruction.purpose() == Purpose::Train {
            let next = plan.spent_after_next_training().unwrap();
            plan.charge_unused_release(&step);
            assert_eq!(plan.dp_rounds(), 1);
            assert_eq!(plan.privacy().unwrap().1.record, next);
            break;
        }
        let sum = plain_sum(&step, &parts, &mut caches);
        plan.absorb(&sum, parts.len()).unwrap();
    }
    // Without DP nothing is charged.
    let mut plain = Plan::new(spec(), vec!["a".into()], vec!["y".into()]).unwrap();
    let step = plain.next_step().unwrap();
    plain.charge_unused_release(&step);
    assert!(plain.privacy().is_none());
    assert_eq!(plain.dp_rounds(), 0);
}
