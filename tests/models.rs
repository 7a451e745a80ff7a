//! Banking models on the federation (issue 5), run through the production engines in memory:
//! federated GBDT against the same algorithm on pooled data, differential privacy on
//! default.csv with the spent ε, multi-product propensity, and an MLP.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use fedsilo_simulations::report::Report;

fn scenario(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("s.toml");
    let text = body.replace("{DATA}", &repo().join("data").display().to_string());
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs the scenario `body` through the real `fedsilo simulate`.
fn run(dir: &Path, body: &str) -> Report {
    let s = scenario(dir, body);
    simulate(&s, &dir.join("out"), &[])
}

#[test]
fn federated_gbdt_on_churn_equals_pooled_boosting() {
    let dir = tempfile::tempdir().unwrap();
    let s = repo().join("simulations/scenarios/churn_gbdt.toml");
    let r = simulate(&s, &dir.path().join("out"), &[]);
    let m = &r.models[0];
    let pooled = m.pooled_metrics.as_ref().unwrap().auc;
    eprintln!(
        "churn GBDT: federated {:.4}, pooled {:.4}",
        m.final_metrics.auc, pooled
    );
    // Histogram sums are exact under secure aggregation, so the federated trees are the
    // pooled trees; the only difference is histogram-binned vs exact AUC.
    assert!(
        (m.final_metrics.auc - pooled).abs() <= 0.01,
        "{} vs {pooled}",
        m.final_metrics.auc
    );
    assert!(m.final_metrics.auc > 0.80);
    // Bin edges come from the masked moments rather than exact pooled statistics, so the
    // trees can differ in a cut point or two: per institution the two stay close.
    for c in &m.comparison {
        assert!((c.federated_auc - c.pooled_auc).abs() < 0.02, "{c:?}");
    }
}

#[test]
fn differential_privacy_on_default_keeps_auc_and_reports_epsilon() {
    let dir = tempfile::tempdir().unwrap();
    let s = repo().join("simulations/scenarios/default_dp.toml");
    let r = simulate(&s, &dir.path().join("out"), &[]);
    let m = &r.models[0];
    let dp = r
        .privacy
        .dp
        .as_ref()
        .expect("the report states the DP budget");
    eprintln!(
        "default.csv with DP: AUC {:.4}, ε = {:.3} at δ = {}",
        m.final_metrics.auc, dp.epsilon, dp.delta
    );
    // Stated in the scenario: AUC above 0.90 at ε ≈ 6.4 (δ = 1e-5) over 15 rounds.
    assert!(
        m.final_metrics.auc > 0.90,
        "AUC under DP {}",
        m.final_metrics.auc
    );
    assert!(dp.epsilon > 0.0 && dp.epsilon < 7.0, "ε = {}", dp.epsilon);
    assert!(dp.epsilon <= dp.budget.unwrap());
    assert_eq!(dp.epsilon_per_round.len(), 15);
    assert!(
        dp.epsilon_per_round.windows(2).all(|w| w[0] < w[1]),
        "ε grows with rounds"
    );
}

#[test]
fn dp_budget_stops_the_job_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario_copy(
        dir.path(),
        "default_dp.toml",
        &[("epsilon_budget = 8.0", "epsilon_budget = 4.0")],
    );
    let r = simulate(&s, &dir.path().join("out"), &[]);
    let dp = r.privacy.dp.as_ref().unwrap();
    assert!(dp.epsilon <= 4.0, "spent {}", dp.epsilon);
    assert!(
        dp.epsilon_per_round.len() < 15,
        "the budget did not stop training"
    );
    assert!(
        r.models[0]
            .notes
            .iter()
            .any(|n| n.contains("privacy budget")),
        "{:?}",
        r.models[0].notes
    );
    assert!(r.models[0].final_metrics.auc > 0.8);
}

#[test]
fn multi_product_propensity_and_mlp() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        dir.path(),
        r#"
name = "products"
seed = 4
[institutions]
count = 4
[[datasets]]
name = "retail"
synthetic = { rows_per_institution = 3000 }
[[jobs]]
name = "products"
dataset = "retail"
task = "propensity"
labels = ["propensity_wealth", "propensity_insurance"]
rounds = 15
[jobs.learning]
learning_rate = 0.05
batch_size = 64
[[jobs]]
name = "churn-mlp"
dataset = "retail"
task = "churn"
labels = ["churn"]
rounds = 60
model = { kind = "mlp", hidden = [16] }
[jobs.learning]
local_epochs = 4
learning_rate = 0.1
batch_size = 64
"#,
    );
    let names: Vec<&str> = r.models.iter().map(|m| m.name.as_str()).collect();
    assert!(names.contains(&"products: propensity_wealth"), "{names:?}");
    assert!(
        names.contains(&"products: propensity_insurance"),
        "{names:?}"
    );
    for m in &r.models {
        let pooled = m.pooled_metrics.as_ref().unwrap().auc;
        eprintln!(
            "{}: AUC {:.4} (pooled {pooled:.4})",
            m.name, m.final_metrics.auc
        );
        assert!(
            m.final_metrics.auc > 0.65,
            "{}: {}",
            m.name,
            m.final_metrics.auc
        );
        // The same model trained centrally on the pooled rows by the project's own code
        // (logistic: Newton optimum; MLP: the same SGD settings for rounds × local epochs).
        // Measured 2026-11-23: wealth 0.6914 vs 0.6892, insurance 0.7211 vs 0.7238,
        // MLP 0.8796 vs 0.8857.
        assert!(
            (m.final_metrics.auc - pooled).abs() <= 0.01,
            "{}: federated {} vs pooled {pooled}",
            m.name,
            m.final_metrics.auc
        );
    }
    // One model file ranks customers for both products.
    let model = dir.path().join("out/model-products.json");
    let artifact: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    assert_eq!(artifact["model"]["labels"].as_array().unwrap().len(), 2);
    // Asking for a scorecard table from a logistic model is refused, naming the file.
    let err = run_err(&[
        "model",
        "show",
        "--model",
        model.to_str().unwrap(),
        "--csv",
        dir.path().join("card.csv").to_str().unwrap(),
    ]);
    assert!(
        err.contains("model-products.json") && err.contains("scorecard table"),
        "{err}"
    );
    assert!(!dir.path().join("card.csv").exists());
}

/// scikit-learn's LogisticRegression (C = 1) on the pooled raw features of credit_data.csv
/// reaches test AUC 0.834 (the issue's reference figure). A 10-bin WOE scorecard is held to
/// that figure within 0.02.
const CREDIT_LR_REFERENCE_AUC: f64 = 0.834;

#[test]
fn federated_scorecard_matches_pooled_scorecard_and_scores_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let s = repo().join("simulations/scenarios/credit_scorecard.toml");
    let out = dir.path().join("out");
    let r = simulate(&s, &out, &[]);
    let m = &r.models[0];
    let pooled = m.pooled_metrics.as_ref().unwrap().auc;
    eprintln!(
        "credit scorecard: federated {:.4}, pooled {pooled:.4}, reference LR {CREDIT_LR_REFERENCE_AUC}",
        m.final_metrics.auc
    );
    assert!(m.model_kind.starts_with("scorecard"), "{}", m.model_kind);
    // Same pipeline on pooled rows (bins, WOE, Newton-fitted regression): tight tolerance.
    assert!(
        (m.final_metrics.auc - pooled).abs() <= 0.005,
        "federated {} vs pooled {pooled}",
        m.final_metrics.auc
    );
    assert!(
        m.final_metrics.auc >= CREDIT_LR_REFERENCE_AUC - 0.02,
        "{}",
        m.final_metrics.auc
    );

    // The exported model scores a CSV with `fedsilo score`: ranked by probability of default,
    // with the scorecard points beside it (points fall as the probability rises).
    let model = out.join("model-scorecard.json");
    let ranked = dir.path().join("ranked.csv");
    run_ok(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--data",
        repo().join("data/credit_data.csv").to_str().unwrap(),
        "--schema",
        repo()
            .join("data/credit_data.schema.toml")
            .to_str()
            .unwrap(),
        "--out",
        ranked.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&ranked).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("rank,row,score,decile,points,Status"));
    let rows: Vec<(f64, f64)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[2].parse().unwrap(), f[4].parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), 4454);
    assert!(rows.windows(2).all(|w| w[0].0 >= w[1].0));
    // Points are rounded to 0.1 in the file; allow that much.
    assert!(rows.windows(2).all(|w| w[0].1 <= w[1].1 + 0.1));
    // Scaling: 600 points at 50:1 good:bad odds, 20 points to double the odds.
    for &(p, pts) in rows.iter().step_by(97) {
        let odds_good = 50.0 * 2f64.powf((pts - 600.0) / 20.0);
        let p_from_points = 1.0 / (1.0 + odds_good);
        assert!((p - p_from_points).abs() < 0.003, "p {p} vs points {pts}");
    }

    // The readable table: printed, and as CSV (feature, bin, woe, points).
    let shown = run_ok(&[
        "model",
        "show",
        "--model",
        model.to_str().unwrap(),
        "--csv",
        dir.path().join("card.csv").to_str().unwrap(),
    ]);
    assert!(shown.contains("Information value"), "{shown}");
    assert!(shown.contains("20 points to double the odds"), "{shown}");
    let card = std::fs::read_to_string(dir.path().join("card.csv")).unwrap();
    assert!(card.starts_with("feature,bin,woe,points\n"));
    assert!(card.contains("Seniority,\"(-inf,"), "{card}");
    assert!(out.join("scorecard-scorecard.txt").exists());
    // The simulation report carries the same table for a regulator.
    let sc = m.scorecard.as_ref().expect("report has the scorecard");
    assert_eq!(sc.rows.len(), card.lines().count() - 1);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<h4>Scorecard</h4>"));
}
