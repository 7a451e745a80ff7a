//! Issue 9, finding 1: a typo never switches anything off. Every file the product reads
//! refuses unknown keys with the file, the place and the nearest valid key, through the
//! real binary; the coordinator refuses the same typos from a foreign client's JSON.

mod common;

use common::{run_err, TestFed};
use fedsilo_proto::pb;
use fedsilo_proto::pb::operator_client::OperatorClient;

const GOOD: &str = "dataset = \"data\"\nrounds = 3\nmin_participants = 2\n";

/// (spec text, unknown key, suggested key or "" for none)
fn typo_specs() -> Vec<(String, &'static str, &'static str)> {
    vec![
        (
            format!("{GOOD}DP = {{ clip = 1.0, noise_multiplier = 1.0, delta = 1e-5 }}\n"),
            "DP",
            "dp",
        ),
        (
            format!("{GOOD}dp = {{ clip = 1.0, noise_multiplier = 1.0, delta = 1e-5, epsilon = 2.0 }}\n"),
            "epsilon",
            "epsilon_budget",
        ),
        (
            "dataset = \"data\"\nrounds = 3\nmin_particpants = 3\n".to_string(),
            "min_particpants",
            "min_participants",
        ),
        (
            format!("{GOOD}[learning]\nlearning_rte = 0.1\n"),
            "learning_rte",
            "learning_rate",
        ),
        (
            format!("{GOOD}model = {{ kind = \"gbdt\", n_estimators = 200 }}\n"),
            "n_estimators",
            "",
        ),
        (
            format!("{GOOD}model = {{ kind = \"gbdt\", num_leaves = 31 }}\n"),
            "num_leaves",
            "",
        ),
        (
            format!("{GOOD}model = {{ kind = \"logistic_regression\", l1 = 0.5 }}\n"),
            "l1",
            "",
        ),
        (
            format!("{GOOD}[learning]\nserver_optimizer = {{ kind = \"fed_adam\", lr = 0.1, beta1 = 0.9, beta2 = 0.99, epsilon = 0.001 }}\n"),
            "epsilon",
            "eps",
        ),
    ]
}

#[test]
fn typo_job_specs_are_refused_by_name_and_no_job_is_created() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b"]);
    let _coord = fed.coordinator("coordinator.log");
    let operator = fed.path("operator.toml");
    let schema = fed.path("schema.toml");
    for (i, (text, key, suggestion)) in typo_specs().into_iter().enumerate() {
        let spec = fed.path(&format!("typo-{i}.toml"));
        std::fs::write(&spec, &text).unwrap();
        let err = run_err(&[
            "job",
            "launch",
            "--config",
            operator.to_str().unwrap(),
            "--spec",
            spec.to_str().unwrap(),
            "--schema",
            schema.to_str().unwrap(),
        ]);
        assert!(
            err.contains(&format!("unknown field `{key}`")),
            "spec {i} ({key}): {err}"
        );
        assert!(
            err.contains(spec.to_str().unwrap()),
            "file not named: {err}"
        );
        if !suggestion.is_empty() {
            assert!(
                err.contains(&format!("did you mean `{suggestion}`?")),
                "spec {i}: {err}"
            );
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    // Unknown feature names are refused at launch, listing the raw names that exist.
    let spec = fed.path("features.toml");
    std::fs::write(
        &spec,
        format!("{GOOD}features = [\"Income\", \"Hom\", \"annual_income\"]\n"),
    )
    .unwrap();
    let err = run_err(&[
        "job",
        "launch",
        "--config",
        operator.to_str().unwrap(),
        "--spec",
        spec.to_str().unwrap(),
        "--schema",
        schema.to_str().unwrap(),
    ]);
    assert!(
        err.contains("'Hom', 'annual_income' not in the data"),
        "{err}"
    );
    assert!(err.contains("valid names: Seniority, Home, Time"), "{err}");

    // Nothing was launched.
    let list = fed.op(&["list"]);
    assert!(!list.contains("job-"), "a typo spec created a job:\n{list}");
}

#[test]
fn the_coordinator_refuses_unknown_keys_from_a_foreign_client() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b"]);
    let _coord = fed.coordinator("coordinator.log");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = fed.channel("operator").await;
        let mut c = OperatorClient::new(ch);
        let spec = r#"{"dataset":"data","rounds":3,"features":["Income"],"labels":["Default"],
            "dp":{"clip":1.0,"noise_multiplier":1.0,"delta":1e-5,"epsilon":2.0}}"#;
        let e = c
            .launch_job(pb::LaunchJobRequest {
                body: Some(pb::launch_job_request::Body::SpecJson(spec.into())),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("unknown field `epsilon`"),
            "{}",
            e.message()
        );
        assert!(
            e.message().contains("did you mean `epsilon_budget`?"),
            "{}",
            e.message()
        );
        assert!(e.message().contains("in `dp`"), "{}", e.message());
        let jobs = c
            .list_jobs(pb::ListJobsRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(jobs.jobs.is_empty(), "{jobs:?}");
    });
}

#[test]
fn typos_in_the_other_files_are_refused_with_file_line_and_suggestion() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b"]);
    // Coordinator config.
    let coord = fed.path("coordinator.toml");
    let text = std::fs::read_to_string(&coord).unwrap();
    let bad = fed.path("coordinator-typo.toml");
    std::fs::write(&bad, format!("state_dri = \"x\"\n{text}")).unwrap();
    let err = run_err(&["coordinator", "serve", "--config", bad.to_str().unwrap()]);
    assert!(err.contains("unknown field `state_dri`"), "{err}");
    assert!(err.contains("did you mean `state_dir`?"), "{err}");
    assert!(err.contains(&format!("{}:1:1", bad.display())), "{err}");

    // Participant config: a typo in a nested table.
    let p = fed.path("participant-bank-a.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    let bad = fed.path("participant-typo.toml");
    std::fs::write(&bad, text.replace("schema = ", "shema = ")).unwrap();
    let err = run_err(&["participant", "join", "--config", bad.to_str().unwrap()]);
    assert!(err.contains("unknown field `shema`"), "{err}");
    assert!(err.contains("did you mean `schema`?"), "{err}");
    assert!(err.contains("in `datasets[0]`"), "{err}");

    // Schema file used by `score`: the line of the typo is named.
    let schema = fed.path("schema.toml");
    let text = std::fs::read_to_string(&schema).unwrap();
    let bad = fed.path("schema-typo.toml");
    std::fs::write(&bad, format!("{text}\nlabell = \"x\"\n")).unwrap();
    let line = text.lines().count() + 2;
    let err = run_err(&[
        "job",
        "launch",
        "--config",
        fed.path("operator.toml").to_str().unwrap(),
        "--spec",
        {
            let s = fed.path("ok.toml");
            std::fs::write(&s, GOOD).unwrap();
            s
        }
        .to_str()
        .unwrap(),
        "--schema",
        bad.to_str().unwrap(),
    ]);
    assert!(err.contains("unknown field `labell`"), "{err}");
    assert!(
        err.contains(&format!("{}:{line}:1", bad.display())),
        "{err}"
    );

    // A feature entry (read flat and strict, not through serde's flatten).
    let bad2 = fed.path("schema-typo2.toml");
    std::fs::write(
        &bad2,
        text.replacen("categories = [\"ignore\"", "categorie = [\"ignore\"", 1),
    )
    .unwrap();
    let err = run_err(&[
        "job",
        "launch",
        "--config",
        fed.path("operator.toml").to_str().unwrap(),
        "--spec",
        fed.path("ok.toml").to_str().unwrap(),
        "--schema",
        bad2.to_str().unwrap(),
    ]);
    assert!(err.contains("unknown field `categorie`"), "{err}");
    assert!(err.contains("did you mean `categories`?"), "{err}");

    // Roster: the coordinator reads it at start.
    let roster = fed.path("roster.toml");
    let text = std::fs::read_to_string(&roster).unwrap();
    std::fs::write(&roster, text.replacen("cert_name", "cert_nam", 1)).unwrap();
    let err = run_err(&["coordinator", "serve", "--config", coord.to_str().unwrap()]);
    assert!(err.contains("unknown field `cert_nam`"), "{err}");
    assert!(err.contains("did you mean `cert_name`?"), "{err}");

    // Scenario: a typo inside a job's table.
    let scen = fed.path("scenario.toml");
    let q = std::fs::read_to_string(common::repo().join("simulations/scenarios/quickstart.toml"))
        .unwrap()
        .replace(
            "../../data/",
            &format!("{}/data/", common::repo().display()),
        )
        .replace(
            "[jobs.learning]\nlocal_epochs = 2",
            "[jobs.learning]\nlocal_epoch = 2",
        );
    std::fs::write(&scen, q).unwrap();
    let err = run_err(&[
        "simulate",
        scen.to_str().unwrap(),
        "--out",
        fed.path("out").to_str().unwrap(),
    ]);
    assert!(err.contains("unknown field `local_epoch`"), "{err}");
    assert!(err.contains("did you mean `local_epochs`?"), "{err}");
    assert!(err.contains("in `jobs[0].learning`"), "{err}");

    // Scenario: a typo among a job's own keys (the job table is a name plus a job spec).
    let q = std::fs::read_to_string(&scen)
        .unwrap()
        .replace(
            "[jobs.learning]\nlocal_epoch = 2",
            "[jobs.learning]\nlocal_epochs = 2",
        )
        .replacen(
            "eval_every = 5\n",
            "eval_every = 5\nphase_timout_ms = 5000\n",
            1,
        );
    std::fs::write(&scen, &q).unwrap();
    let line = q
        .lines()
        .position(|l| l.starts_with("phase_timout_ms"))
        .unwrap()
        + 1;
    let err = run_err(&[
        "simulate",
        scen.to_str().unwrap(),
        "--out",
        fed.path("out").to_str().unwrap(),
    ]);
    assert!(
        err.contains(&format!(
            "scenario.toml:{line}:1: unknown field `phase_timout_ms`"
        )),
        "{err}"
    );
    assert!(err.contains("did you mean `phase_timeout_ms`?"), "{err}");
    assert!(err.contains("in `jobs[0]`"), "{err}");
}
