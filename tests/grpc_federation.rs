//! End to end over real gRPC with mutual TLS on loopback: the `fedsilo` binary as coordinator,
//! three participant processes each holding one income band of a public dataset, and the
//! operator commands. The federated model must match the pooled model's test AUC.

mod common;

use std::time::Duration;

use common::*;
use fedsilo_ml::table::Table;
use fedsilo_participant::data::{load_csv, Schema};
use fedsilo_simulations::baselines::{auc_on, stack};
use fedsilo_task::{JobSpec, LocalData, TrainedModel};

/// Each participant's (train, hold-out), exactly as its node splits them.
fn local_data(fed: &TestFed) -> Vec<LocalData> {
    let schema = Schema::from_toml_file(&fed.path("schema.toml")).unwrap();
    fed.csv_paths()
        .iter()
        .map(|p| {
            let t = load_csv(p, &schema).unwrap();
            let (train, holdout) = t.split_holdout(0.2, 5);
            LocalData { train, holdout }
        })
        .collect()
}

/// (federated AUC, pooled AUC) on the union of the participants' hold-out sets; the pooled
/// model is the job spec `spec` (TOML) fitted centrally on the pooled training rows.
fn compare_with_pooled(fed: &TestFed, model: &TrainedModel, spec: &str) -> (f64, f64) {
    let locals = local_data(fed);
    let trains: Vec<&Table> = locals.iter().map(|l| &l.train).collect();
    let holds: Vec<&Table> = locals.iter().map(|l| &l.holdout).collect();
    let pooled_train = stack(&trains).unwrap();
    let pooled_hold = stack(&holds).unwrap();
    let mut spec: JobSpec = fedsilo_config::from_toml_str(spec, "spec").unwrap();
    spec.features = model.features.clone();
    spec.labels = model.labels.clone();
    let pooled = fedsilo_task::fit_pooled(&spec, &pooled_train).unwrap();
    (
        auc_on(model, &pooled_hold, 0),
        auc_on(&pooled, &pooled_hold, 0),
    )
}

fn train_three_banks(
    dataset_csv: &str,
    schema: &str,
    sort_by: &str,
    spec: &str,
) -> (TestFed, TrainedModel, String, String) {
    let fed = TestFed::new(
        &["bank-a", "bank-b", "bank-c"],
        "data",
        &repo().join(schema),
    );
    split_sorted(&repo().join(dataset_csv), sort_by, 3, &fed.csv_paths());
    let _coord = fed.coordinator("coordinator.log");
    let job = fed.launch(spec);
    let mut parts: Vec<Proc> = fed.names.iter().map(|n| fed.participant(n)).collect();
    let status = fed.wait_finished(&job, Duration::from_secs(600));
    let artifact = fed.model(&job);
    for p in parts.iter_mut() {
        let s = p.wait_exit(Duration::from_secs(60));
        assert!(s.success(), "participant failed: {}", p.log_text());
    }
    assert!(artifact.complete);
    assert_eq!(
        artifact.round_sha256.len(),
        64,
        "model names the round that produced it"
    );
    (fed, artifact.model, status, job)
}

const CREDIT_SPEC: &str = r#"
dataset = "data"
task = "risk"
rounds = 30
min_participants = 3
eval_every = 10
[learning]
local_epochs = 2
learning_rate = 0.05
batch_size = 32
l2 = 0.0003
"#;

#[test]
fn credit_risk_over_grpc_matches_pooled_auc() {
    let (fed, model, status, _) = train_three_banks(
        "data/credit_data.csv",
        "data/credit_data.schema.toml",
        "Income",
        CREDIT_SPEC,
    );
    let (fed_auc, pooled_auc) = compare_with_pooled(&fed, &model, CREDIT_SPEC);
    eprintln!(
        "credit_data: federated AUC {fed_auc:.4}, pooled AUC {pooled_auc:.4}; status {status}"
    );
    assert!(pooled_auc > 0.80, "pooled reference is off: {pooled_auc}");
    assert!(
        (fed_auc - pooled_auc).abs() <= 0.01,
        "federated {fed_auc:.4} vs pooled {pooled_auc:.4}"
    );
    // The issue's public reference: scikit-learn's LogisticRegression (C = 1) on pooled data.
    assert!(
        fed_auc >= 0.834 - 0.01,
        "below the reference 0.834: {fed_auc}"
    );
    // The coordinator's own (histogram) AUC is reported in the job status, one line per
    // label, from the typed `JobStatus.metrics`.
    assert!(
        status.contains("Status (round 30): AUC 0."),
        "status lacks metrics: {status}"
    );
}

// Caravan (85 features, 6 % positives) overfits easily: an under-trained federated model can
// beat the converged pooled optimum by 0.02 (measured: 30 rounds at l2 = 0.001 gave 0.720 vs
// 0.699), which says nothing about the federation. The job therefore trains long enough to
// reach the same regularised optimum the pooled Newton fit finds (measured 2026-11-23:
// federated 0.7097, pooled 0.7066; scikit-learn's C = 1 reference is 0.710).
const CARAVAN_SPEC: &str = r#"
dataset = "data"
task = "propensity"
rounds = 60
min_participants = 3
eval_every = 10
[learning]
local_epochs = 1
learning_rate = 0.02
batch_size = 64
l2 = 0.02
server_optimizer = { kind = "fed_adam", lr = 0.05, beta1 = 0.9, beta2 = 0.99, eps = 0.001 }
"#;

#[test]
fn caravan_propensity_over_grpc_matches_pooled_auc() {
    let (fed, model, _, job) = train_three_banks(
        "data/caravan.csv",
        "data/caravan.schema.toml",
        "MINKGEM",
        CARAVAN_SPEC,
    );
    let (fed_auc, pooled_auc) = compare_with_pooled(&fed, &model, CARAVAN_SPEC);
    eprintln!("caravan: federated AUC {fed_auc:.4}, pooled AUC {pooled_auc:.4}");
    assert!(pooled_auc > 0.68, "pooled reference is off: {pooled_auc}");
    assert!(
        (fed_auc - pooled_auc).abs() <= 0.01,
        "federated {fed_auc:.4} vs pooled {pooled_auc:.4}"
    );
    assert!(
        fed_auc >= 0.710 - 0.01,
        "below the reference 0.710: {fed_auc}"
    );
    // Score locally with the model file the coordinator exported: a ranked whitelist.
    let model_path = fed.path(&format!("{job}.model.json"));
    let out = fed.path("ranked.csv");
    run_ok(&[
        "score",
        "--model",
        model_path.to_str().unwrap(),
        "--data",
        fed.csv_paths()[0].to_str().unwrap(),
        "--schema",
        fed.path("schema.toml").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--top",
        "100",
    ]);
    let ranked = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = ranked.lines().collect();
    // No id column in this schema: data-row numbers; the file's label is kept (0/1).
    assert_eq!(lines[0], "rank,row,score,decile,Purchase");
    assert_eq!(lines.len(), 101);
    let scores: Vec<f64> = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "ranked best first");
}

const CREDIT_DP_SPEC: &str = r#"
dataset = "data"
task = "risk"
rounds = 60
min_participants = 3
eval_every = 60
dp = { level = "record", clip = 1.0, sampling_rate = 0.1, delta = 1e-5, epsilon_budget = 3.0 }
[learning]
learning_rate = 0.5
"#;

/// Record-level DP over real gRPC: the coordinator calibrates σ for the budget, `job status`
/// states what each level promises, and the exported model file carries the same.
#[test]
fn record_level_dp_over_grpc_reports_both_levels() {
    let (fed, model, status, job) = train_three_banks(
        "data/credit_data.csv",
        "data/credit_data.schema.toml",
        "Income",
        CREDIT_DP_SPEC,
    );
    assert!(
        status.contains("privacy (record-level DP")
            && status.contains("one customer's record: ε = 2.9")
            && status.contains("one institution: not protected"),
        "{status}"
    );
    let text = std::fs::read_to_string(fed.path(&format!("{job}.model.json"))).unwrap();
    let artifact = fedsilo_task::ModelArtifact::from_json(&text).unwrap();
    let p = artifact.privacy.expect("the model file states its privacy");
    assert_eq!(p.level, fedsilo_task::DpLevel::Record);
    assert!(
        p.epsilon_record.is_some_and(|e| e <= 3.0 && e > 2.9),
        "{p:?}"
    );
    assert_eq!(p.epsilon_institution, None);
    assert_eq!(p.dp_rounds, 60);
    // A real coordinator seeds from the OS, so the noise differs run to run; 60 DP-SGD
    // rounds on three banks land between about 0.72 and 0.80. Accuracy under DP is held to
    // the pooled model by the seeded simulations (tests/simulate.rs); here: clearly learned.
    let (fed_auc, _) = compare_with_pooled(&fed, &model, CREDIT_DP_SPEC);
    assert!(fed_auc > 0.65, "federated AUC under DP {fed_auc}");
}
