//! A vertical model file a scoring job loads: every way it can be wrong is refused by name
//! (missing, unreadable, not a model file, another job's, another party's or peer's,
//! incomplete, a scoring job's, trained on other columns), and a right one is accepted.

use std::path::Path;

use fedsilo_participant::vertical::score::ModelFileError;
use fedsilo_participant::vertical::VerticalModelFile;
use fedsilo_task::vertical::VerticalKind;
use fedsilo_task::Standardizer;

/// The partner's half of a trained vertical LR model of job `j`.
fn partner_lr() -> VerticalModelFile {
    VerticalModelFile {
        job_id: "j".into(),
        kind: VerticalKind::VerticalLogistic,
        role: "passive".into(),
        peer: "bank".into(),
        psi_job: "align".into(),
        psi_hash: "00".repeat(32),
        columns: vec!["z1".into(), "z2".into()],
        label: None,
        standardizer: Some(Standardizer {
            mean: vec![0.0, 1.0],
            std: vec![1.0, 2.0],
            missing_rate: vec![0.0, 0.0],
        }),
        lr: None,
        lr_coef: Some(vec![0.5, -0.25]),
        gbdt: None,
        passive_splits: None,
        rows: 10,
        train_rows: 8,
        holdout_rows: 2,
        holdout_scores: None,
        holdout_auc: None,
    }
}

fn check(m: &VerticalModelFile, job: &str, role: &str, peer: &str, columns: &[&str]) -> String {
    let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    match m.check_for(Path::new("m.json"), job, role, peer, "customers", &columns) {
        Ok(()) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_model_file_that_is_missing_unreadable_or_not_a_model_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    match VerticalModelFile::load(state, "nojob") {
        Err(ModelFileError::Missing { job, path }) => {
            assert_eq!(job, "nojob");
            assert_eq!(path, VerticalModelFile::path(state, "nojob"));
        }
        other => panic!("{other:?}"),
    }
    let path = VerticalModelFile::path(state, "j");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // not JSON, and JSON with a key a model file does not have
    for text in ["{not json".to_string(), {
        let mut v = serde_json::to_value(partner_lr()).unwrap();
        v["extra"] = serde_json::json!(1);
        v.to_string()
    }] {
        std::fs::write(&path, text).unwrap();
        match VerticalModelFile::load(state, "j") {
            Err(e @ ModelFileError::Parse { .. }) => {
                assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
    // a directory where the file should be
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    assert!(matches!(
        VerticalModelFile::load(state, "j"),
        Err(ModelFileError::Read { .. })
    ));
    std::fs::remove_dir(&path).unwrap();
    // and the real one round-trips
    std::fs::write(&path, serde_json::to_vec(&partner_lr()).unwrap()).unwrap();
    assert_eq!(VerticalModelFile::load(state, "j").unwrap(), partner_lr());
}

#[test]
fn a_model_file_of_another_job_party_peer_kind_or_schema_is_refused_by_name() {
    let m = partner_lr();
    assert_eq!(check(&m, "j", "passive", "bank", &["z1", "z2"]), "ok");
    let refused = [
        (
            check(&m, "k", "passive", "bank", &["z1", "z2"]),
            "of job 'j'",
        ),
        (
            check(&m, "j", "active", "bank", &["z1", "z2"]),
            "the passive party of that job, not the active one",
        ),
        (
            check(&m, "j", "passive", "insurer", &["z1", "z2"]),
            "trained with 'bank', this job scores with 'insurer'",
        ),
        (
            check(&m, "j", "passive", "bank", &["z2", "z1"]),
            "feature columns (z2, z1) are not the columns the model of 'j' was trained on (z1, z2)",
        ),
    ];
    for (got, want) in refused {
        assert!(got.contains(want), "{got:?} should say {want:?}");
    }
    let mut incomplete = partner_lr();
    incomplete.lr_coef = None;
    assert!(check(&incomplete, "j", "passive", "bank", &["z1", "z2"])
        .contains("lacks this party's part of a vertical_logistic model"));
    let mut scoring = partner_lr();
    scoring.kind = VerticalKind::VerticalScore;
    assert!(check(&scoring, "j", "passive", "bank", &["z1", "z2"])
        .contains("it is of a vertical_score job"));
}
