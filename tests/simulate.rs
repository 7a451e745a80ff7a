//! `fedsilo simulate`: the README's quick start, transport parity, and the regulator's
//! question "does the federation beat going it alone?" on credit_data in income bands.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use fedsilo_simulations::report::Report;

#[test]
fn quickstart_readme_command_writes_both_report_files() {
    let out = tempfile::tempdir().unwrap();
    let scenario = repo().join("simulations/scenarios/quickstart.toml");
    let stdout = run_ok(&[
        "simulate",
        scenario.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(stdout.contains("report"), "{stdout}");
    let json = std::fs::read_to_string(out.path().join("report.json")).unwrap();
    let report: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(report.scenario.institutions.len(), 5);
    assert_eq!(report.models.len(), 2);
    for m in &report.models {
        assert!(
            m.final_metrics.auc > 0.6,
            "{}: AUC {}",
            m.name,
            m.final_metrics.auc
        );
        assert!(!m.roc.is_empty() && !m.curve.is_empty());
    }
    // Bank C's dropout is visible, and the round survived it.
    let dropped: Vec<_> = report
        .rounds
        .iter()
        .filter(|r| !r.dropped.is_empty())
        .collect();
    assert!(
        !dropped.is_empty(),
        "the scripted dropout is not in the report"
    );
    assert!(
        dropped.iter().all(|r| r.outcome == "ok"),
        "a round did not survive its dropout"
    );
    assert_eq!(report.audit_head.len(), 64);
    // The empirical privacy audit: both attacks on the federated, pooled and every local
    // model of both jobs, with finite figures, and the coordinator's view of the rounds.
    let audit = report
        .audit
        .as_ref()
        .expect("the quick start audits its models");
    let institutions: Vec<&str> = report
        .scenario
        .institutions
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    for job in ["credit-risk", "caravan-propensity"] {
        let mut kinds: Vec<String> = vec!["federated".into(), "pooled".into()];
        kinds.extend(institutions.iter().map(|i| format!("local:{i}")));
        for kind in &kinds {
            let m = audit
                .models
                .iter()
                .find(|m| m.job == job && &m.kind == kind)
                .unwrap_or_else(|| panic!("{job}: no audit of the {kind} model"));
            assert!(m.members > 0 && m.members == m.non_members, "{m:?}");
            assert!(m.shadows > 0 && m.note.is_none(), "{m:?}");
            for v in [
                m.loss_auc,
                m.loss_tpr_at_0_1pct,
                m.loss_tpr_at_1pct,
                m.lira_auc,
                m.lira_tpr_at_0_1pct,
                m.lira_tpr_at_1pct,
            ] {
                assert!((0.0..=1.0).contains(&v), "{job} {kind}: {v} in {m:?}");
            }
            assert!(m.dp.is_none(), "the quick start has no DP: {m:?}");
        }
    }
    // Logistic regressions on thousands of rows barely memorise: the federated models'
    // attacks stay near guessing.
    for m in audit.models.iter().filter(|m| m.kind == "federated") {
        assert!((m.loss_auc - 0.5).abs() < 0.1, "{m:?}");
        assert!((m.lira_auc - 0.5).abs() < 0.1, "{m:?}");
    }
    // Bank C's dropout: one credit-risk training sum covered 4 institutions, still ≥ t.
    let train = audit
        .coordinator_view
        .iter()
        .find(|c| c.job == "credit-risk" && c.purpose == fedsilo_task::Purpose::Train)
        .expect("credit-risk's training rounds in the coordinator's view");
    assert_eq!(
        (train.sums, train.min_institutions, train.max_institutions),
        (30, 4, 5)
    );
    assert!(train.min_institutions >= train.threshold && train.threshold == 3);
    assert!(audit.coordinator_view.iter().all(|c| c.noised == 0));
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("credit-risk"));
    assert!(html.contains("5. What an attacker achieved</h2>"));
    assert!(html.contains("local-only (Insurer D)"));
    // The audit chain the report names verifies.
    let verified = run_ok(&[
        "audit",
        "verify",
        out.path().join("audit.jsonl").to_str().unwrap(),
    ]);
    assert!(verified.contains(&report.audit_head), "{verified}");
}

fn small_scenario(dir: &Path) -> PathBuf {
    small_scenario_with(dir, "")
}

/// The parity scenario with `extra` lines appended to its job.
fn small_scenario_with(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"
name = "parity"
seed = 21
audit = false
[institutions]
count = 3
[[datasets]]
name = "credit"
csv = "{csv}"
schema = "{schema}"
partition = {{ kind = "sorted_bands", column = "Income" }}
[[jobs]]
name = "risk"
dataset = "credit"
rounds = 6
eval_every = 3
{extra}
"#,
        csv = repo().join("data/credit_data.csv").display(),
        schema = repo().join("data/credit_data.schema.toml").display()
    );
    let p = dir.join("parity.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn memory_and_grpc_transports_give_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let s = small_scenario(dir.path());
    let mem = simulate(&s, &dir.path().join("mem"), &[]);
    let grpc = simulate(&s, &dir.path().join("grpc"), &["--transport", "grpc"]);
    let read =
        |sub: &str| std::fs::read_to_string(dir.path().join(sub).join("model-risk.json")).unwrap();
    // Sums under secure aggregation are exact and local training is seeded, so the two
    // transports must agree to the bit.
    assert_eq!(read("mem"), read("grpc"));
    assert_eq!(mem.models[0].final_metrics, grpc.models[0].final_metrics);
    assert_eq!(grpc.scenario.transport, "grpc");
    // The scenario turned the privacy audit off (it does not depend on the transport).
    assert!(mem.audit.is_none() && grpc.audit.is_none());
    let html = std::fs::read_to_string(dir.path().join("mem/report.html")).unwrap();
    assert!(html.contains("No empirical privacy audit was run"));
}

/// With differential privacy every participant draws its noise (and, at record level, its
/// row sample) from its own per-round stream: the two transports still agree to the bit, and
/// the noise is really there (the model differs from the noise-free one).
#[test]
fn memory_and_grpc_transports_give_the_same_model_with_dp() {
    let dir = tempfile::tempdir().unwrap();
    let plain = simulate(&small_scenario(dir.path()), &dir.path().join("plain"), &[]);
    let read =
        |sub: &str| std::fs::read_to_string(dir.path().join(sub).join("model-risk.json")).unwrap();
    let gbdt = r#"model = { kind = "gbdt", n_trees = 3, max_depth = 2, max_bins = 8, fine_bins = 64, lambda = 20.0 }"#;
    let plain_gbdt = {
        let sub = dir.path().join("plain-gbdt");
        std::fs::create_dir_all(&sub).unwrap();
        simulate(&small_scenario_with(&sub, gbdt), &sub.join("out"), &[]);
        "plain-gbdt/out"
    };
    for (name, level, extra, noise_free) in [
        (
            "institution",
            "institution",
            r#"dp = { clip = 1.0, noise_multiplier = 1.0, delta = 1e-5 }"#.to_string(),
            "plain",
        ),
        (
            "record",
            "record",
            r#"dp = { level = "record", clip = 1.0, sampling_rate = 0.1, delta = 1e-5, epsilon_budget = 4.0 }"#.to_string(),
            "plain",
        ),
        (
            "gbdt-record",
            "record",
            format!("{gbdt}\n{}", r#"dp = { level = "record", clip = 1.0, sampling_rate = 0.5, delta = 1e-5, epsilon_budget = 4.0 }"#),
            plain_gbdt,
        ),
    ] {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let s = small_scenario_with(&sub, &extra);
        let mem = simulate(&s, &sub.join("mem"), &[]);
        let grpc = simulate(&s, &sub.join("grpc"), &["--transport", "grpc"]);
        let (m, g) = (read(&format!("{name}/mem")), read(&format!("{name}/grpc")));
        assert_eq!(m, g, "{name} DP: the transports disagree");
        assert_ne!(m, read(noise_free), "{name} DP: no noise in the model");
        let (dm, dg) = (
            mem.privacy.dp.as_ref().expect("dp report"),
            grpc.privacy.dp.as_ref().expect("dp report"),
        );
        assert_eq!(dm.epsilon, dg.epsilon);
        assert_eq!(dm.level.name(), level);
        assert!(
            dm.epsilon > 0.0 && dm.epsilon.is_finite(),
            "{name}: ε {}",
            dm.epsilon
        );
    }
    assert!(plain.privacy.dp.is_none());
}

#[test]
fn credit_income_bands_federated_near_pooled_and_beats_local_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = repo().join("simulations/scenarios/credit_income_bands.toml");
    let report = simulate(&s, dir.path(), &[]);
    let m = &report.models[0];
    let pooled = m.pooled_metrics.as_ref().unwrap().auc;
    eprintln!("federated {:.4} pooled {:.4}", m.final_metrics.auc, pooled);
    assert!(
        (m.final_metrics.auc - pooled).abs() <= 0.01,
        "federated {} vs pooled {pooled}",
        m.final_metrics.auc
    );
    let valid: Vec<_> = m
        .comparison
        .iter()
        .filter(|c| c.local_only_auc.is_finite())
        .collect();
    let mean_local = valid.iter().map(|c| c.local_only_auc).sum::<f64>() / valid.len() as f64;
    let mean_fed = valid.iter().map(|c| c.federated_auc).sum::<f64>() / valid.len() as f64;
    eprintln!("mean local-only {mean_local:.4}, mean federated {mean_fed:.4}");
    assert!(
        mean_fed > mean_local,
        "federated {mean_fed} does not beat local-only {mean_local}"
    );
}

#[test]
fn simulate_reports_bad_scenarios_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "name = \"x\"\n[institutions]\ncount = 1\n").unwrap();
    let err = run_err(&[
        "simulate",
        p.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(err.contains("bad.toml"), "{err}");
    let missing = run_err(&["simulate", "no/such/file.toml"]);
    assert!(missing.contains("no/such/file.toml"), "{missing}");
}

/// Issue 13's acceptance scenarios: five institutions, record-level ε ≤ 3 at δ = 1e-5, and
/// the federated logistic regression (and boosted trees) within 0.02 AUC of the non-private
/// pooled model of the same spec.
#[test]
fn record_level_dp_scenarios_stay_within_budget_and_near_pooled() {
    for name in [
        "credit_dp_record",
        "churn_dp_record",
        "churn_gbdt_dp_record",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = repo().join(format!("simulations/scenarios/{name}.toml"));
        let report = simulate(&s, dir.path(), &[]);
        let dp = report.privacy.dp.as_ref().expect("dp report");
        assert_eq!(dp.level.name(), "record", "{name}");
        assert!(
            dp.epsilon <= 3.0 && dp.epsilon > 2.9,
            "{name}: ε {}",
            dp.epsilon
        );
        assert_eq!(dp.epsilon_record, dp.epsilon);
        // ∞ (null in report.json): nothing promised for a whole institution.
        assert!(!dp.epsilon_institution.is_finite(), "{name}");
        assert_eq!(report.scenario.institutions.len(), 5);
        let m = &report.models[0];
        let pooled = m.pooled_metrics.as_ref().expect("pooled baseline").auc;
        assert!(
            pooled - m.final_metrics.auc <= 0.02,
            "{name}: federated {} vs pooled {pooled}",
            m.final_metrics.auc
        );
        // The model file says what its release promises.
        let model =
            std::fs::read_to_string(dir.path().join(format!("model-{}.json", m.name))).unwrap();
        let model: serde_json::Value = serde_json::from_str(&model).unwrap();
        assert_eq!(model["privacy"]["level"], "record", "{name}");
        assert!(model["privacy"]["epsilon_record"].as_f64().unwrap() <= 3.0);
        assert!(model["privacy"]["epsilon_institution"].is_null());
    }
}

/// Participants that cannot compute a step decline it with their reason; when the step then
/// fails for good, the job's failure (and the command's exit) names those reasons, not only
/// the secure-aggregation error they led to.
#[test]
fn a_diverging_job_fails_naming_the_participants_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let s = small_scenario_with(
        dir.path(),
        "model = { kind = \"mlp\", hidden = [8] }\n[jobs.learning]\nlearning_rate = 1e200\nlocal_epochs = 3",
    );
    let out = dir.path().join("out");
    let stderr = run_err(&[
        "simulate",
        s.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stderr.contains("did not finish"), "{stderr}");
    assert!(
        stderr.contains("declined: local training diverged")
            && stderr.contains("learning.learning_rate"),
        "{stderr}"
    );
}

/// A record-level job with a fixed σ and a budget its rounds would overspend stops cleanly
/// before the round that would cross it: ε at or below the budget, fewer rounds than asked,
/// the model file complete for what it holds.
#[test]
fn record_level_budget_stops_the_job_before_it_is_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let s = small_scenario_with(
        dir.path(),
        "dp = { level = \"record\", clip = 1.0, sampling_rate = 0.2, noise_multiplier = 1.0, delta = 1e-5, epsilon_budget = 1.5 }",
    );
    let report = simulate(&s, &dir.path().join("out"), &[]);
    let dp = report.privacy.dp.as_ref().expect("dp report");
    // At least the noised prelude was spent (it counts before the first training round).
    assert!(dp.epsilon <= 1.5 && dp.epsilon > 0.0, "ε {}", dp.epsilon);
    let model = std::fs::read_to_string(dir.path().join("out/model-risk.json")).unwrap();
    let model: serde_json::Value = serde_json::from_str(&model).unwrap();
    let rounds = model["rounds"].as_u64().unwrap();
    assert!(
        rounds < 6,
        "the budget should have stopped the job early: {rounds} rounds"
    );
    assert_eq!(model["privacy"]["dp_rounds"].as_u64(), Some(rounds));
}

/// Boosted trees under a fixed σ and a budget their trees would overspend: the job stops
/// before the tree level that would cross it and keeps (and evaluates) the trees finished
/// so far; the level and leaf-sum releases spent are in the model file.
#[test]
fn record_level_budget_stops_boosting_with_the_finished_trees() {
    let dir = tempfile::tempdir().unwrap();
    let s = small_scenario_with(
        dir.path(),
        "model = { kind = \"gbdt\", n_trees = 20, max_depth = 2, max_bins = 8, fine_bins = 64, lambda = 20.0 }\n\
         dp = { level = \"record\", clip = 1.0, sampling_rate = 0.5, noise_multiplier = 6.0, delta = 1e-5, epsilon_budget = 2.0 }",
    );
    let report = simulate(&s, &dir.path().join("out"), &[]);
    let dp = report.privacy.dp.as_ref().expect("dp report");
    assert!(dp.epsilon <= 2.0 && dp.epsilon > 1.0, "ε {}", dp.epsilon);
    let model = std::fs::read_to_string(dir.path().join("out/model-risk.json")).unwrap();
    let model: serde_json::Value = serde_json::from_str(&model).unwrap();
    let trees = model["model"]["params"]["model"]["trees"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(
        (1..20).contains(&trees),
        "the budget should have stopped boosting early with trees kept: {trees} trees"
    );
    let releases = model["privacy"]["dp_rounds"].as_u64().unwrap();
    assert!(
        releases >= 3 * trees as u64 && releases < 60,
        "{releases} releases for {trees} trees"
    );
    assert!(report.models[0].final_metrics.auc > 0.6);
}

/// The seed use case (issue 11): a churn model for high-value customers. Each bank keeps the
/// cohort MAA > 200,000 and derives total assets on its own rows; the report says how many
/// customers each kept, shows the derived column, and the federated model beats every bank
/// alone and matches the pooled cohort.
#[test]
fn high_value_churn_scenario_reports_its_cohort_and_derived_column() {
    let dir = tempfile::tempdir().unwrap();
    let s = repo().join("simulations/scenarios/high_value_churn.toml");
    let report = simulate(&s, dir.path(), &[]);
    let [d] = report.scenario.datasets.as_slice() else {
        panic!("one shaped dataset: {:?}", report.scenario.datasets);
    };
    assert_eq!(d.cohort.as_deref(), Some("maa > 200000"));
    assert_eq!(d.derived.len(), 1);
    assert_eq!(d.derived[0].name, "assets");
    assert_eq!(d.rows_read, [60000; 4]);
    // The cohort is a small share (high-value customers), and every bank's rows are exactly
    // its cohort (training + hold-out).
    for (i, inst) in report.scenario.institutions.iter().enumerate() {
        let kept = d.rows_kept[i];
        assert!(kept > 200 && kept < 6000, "{}: {kept}", inst.name);
        assert_eq!(inst.rows_train + inst.rows_holdout, kept, "{}", inst.name);
    }
    let m = &report.models[0];
    let pooled = m.pooled_metrics.as_ref().expect("pooled").auc;
    assert!(
        (pooled - m.final_metrics.auc).abs() < 0.01,
        "{} vs {pooled}",
        m.final_metrics.auc
    );
    for c in &m.comparison {
        assert!(
            c.federated_auc > c.local_only_auc,
            "{}: federated {} vs alone {}",
            c.institution,
            c.federated_auc,
            c.local_only_auc
        );
    }
    // The model was trained on the derived column too.
    let model = std::fs::read_to_string(dir.path().join(format!("model-{}.json", m.name))).unwrap();
    assert!(
        model.contains("\"assets\""),
        "the model's features include assets"
    );
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(
        html.contains("Cohort <code class=\"expr\">maa &gt; 200000</code>"),
        "cohort in the report"
    );
    assert!(html.contains("<li><code>assets</code> = <code class=\"expr\">current_balance + fixed_deposit_balance + wealth_balance</code></li>"));
}
