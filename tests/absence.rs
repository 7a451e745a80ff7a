//! Absence is not failure: a small federation keeps training while a bank is away, an
//! operator can cancel and resume a job, and a job that waits longer than its patience fails
//! with the reason in `detail` — all through the real binary.
//!
//! Three banks with `min_participants = 2`: while one is away (SIGKILL), every round is
//! started with the two present ones (k = 1, t = 1) and completes; the round it was killed in
//! fails or completes without it, and no such round uses the job's failure budget. Before
//! this, every round with three (k = 2, t = 2) failed until the job was failed for good.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fedsilo_coordinator::audit::AuditRecord;
use fedsilo_proto::pb;

const SPEC: &str = r#"
dataset = "data"
task = "risk"
rounds = 400
min_participants = 2
eval_every = 50
seed = 11
phase_timeout_ms = 2000
[learning]
local_epochs = 1
learning_rate = 0.05
batch_size = 256
"#;

fn survived(r: &AuditRecord, name: &str) -> bool {
    r.survivors.iter().any(|s| s == name)
}

/// Polls `job status` until `pred` holds (panics after `timeout`); returns the line.
fn wait_status(fed: &TestFed, job: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let s = fed.status(job);
        if pred(&s) {
            return s;
        }
        assert!(
            start.elapsed() < timeout,
            "status not reached in {timeout:?}: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `GetJob` over mutual TLS with the operator's certificate: the wire fields themselves.
fn get_job(fed: &TestFed, job: &str) -> pb::JobStatus {
    use fedsilo_proto::pb::operator_client::OperatorClient;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = fed.channel("operator").await;
        OperatorClient::new(channel)
            .get_job(pb::JobRef {
                job_id: job.to_string(),
            })
            .await
            .unwrap()
            .into_inner()
    })
}

#[test]
fn three_banks_one_away_rounds_go_on_with_two_and_it_comes_back() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b", "bank-c"]);
    let _coord = fed.coordinator("coordinator.log");
    let job = fed.launch(SPEC);
    let mut a = fed.participant("bank-a");
    let mut b = fed.participant("bank-b");
    let mut c = fed.participant("bank-c");

    let long = Duration::from_secs(120);
    fed.wait_audit(&job, long, "two rounds with bank-c", |rs| {
        rs.iter().filter(|r| survived(r, "bank-c")).count() >= 2
    });
    c.kill9();
    let killed_at = fed.audit_rounds(&job).len();

    // While it is away, rounds are started with the two present banks and complete.
    let rounds = fed.wait_audit(&job, long, "three rounds of the two present banks", |rs| {
        rs[killed_at..]
            .iter()
            .filter(|r| r.outcome == "ok" && r.participants == ["bank-a", "bank-b"])
            .count()
            >= 3
    });
    for r in &rounds[killed_at..] {
        if r.outcome != "ok" {
            // Only the round it was killed in (or the first one it was invited to after)
            // may fail, and for its absence.
            assert!(r.participants.iter().any(|p| p == "bank-c"), "{r:?}");
            assert!(r.outcome.contains("no answer from bank-c"), "{r:?}");
        }
    }
    let status = fed.status(&job);
    assert!(status.contains("running"), "{status}");
    assert!(
        status.contains("running without bank-c (last seen"),
        "{status}"
    );
    let wire = get_job(&fed, &job);
    assert_eq!(wire.state, pb::JobState::Running as i32);
    assert!(wire.detail.contains("bank-c"), "{wire:?}");

    // It comes back and takes part again; the job finishes, never failed.
    let back_from = fed.audit_rounds(&job).len();
    let mut c2 = fed.participant_logged("bank-c", "bank-c-restarted.log");
    fed.wait_audit(&job, long, "a round with bank-c back", |rs| {
        rs[back_from..]
            .iter()
            .any(|r| r.outcome == "ok" && survived(r, "bank-c"))
    });
    let status = fed.wait_finished(&job, Duration::from_secs(300));
    assert!(!status.contains("failed"), "{status}");
    for p in [&mut a, &mut b, &mut c2] {
        assert!(
            p.wait_exit(Duration::from_secs(60)).success(),
            "{}",
            p.log_text()
        );
    }
    let rounds = fed.audit_rounds(&job);
    let failed = rounds.iter().filter(|r| r.outcome != "ok").count();
    eprintln!(
        "{} rounds, {failed} failed for bank-c's absence",
        rounds.len()
    );
    let last = rounds.last().unwrap();
    assert_eq!(last.survivors, ["bank-a", "bank-b", "bank-c"], "{last:?}");
    let model = fed.model(&job);
    assert!(model.complete);
    assert_eq!(model.round_sha256, last.aggregate_hash);
}

#[test]
fn cancel_then_resume_survives_restarts_and_the_resumed_job_finishes() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b"]);
    let mut coord = fed.coordinator("coordinator.log");
    let job = fed.launch(&SPEC.replace("rounds = 400", "rounds = 30"));
    let mut a = fed.participant("bank-a");
    let mut b = fed.participant("bank-b");
    fed.wait_audit(&job, Duration::from_secs(120), "two rounds", |rs| {
        rs.iter().filter(|r| r.outcome == "ok").count() >= 2
    });

    let out = fed.op(&["cancel", "--job", &job, "--reason", "model review"]);
    assert!(out.contains("cancelled"), "{out}");
    assert!(out.contains("cancelled by operator: model review"), "{out}");
    // The participants are told and (exit_when_done) stop.
    for p in [&mut a, &mut b] {
        assert!(
            p.wait_exit(Duration::from_secs(30)).success(),
            "{}",
            p.log_text()
        );
        assert!(p.log_text().contains("cancelled"), "{}", p.log_text());
    }
    let done = fed.rounds_done(&job);
    assert!(done < 30, "cancelled too late to mean anything");
    // The round in flight was abandoned, and the audit log says so.
    let rounds = fed.audit_rounds(&job);
    let last = rounds.last().unwrap();
    assert!(
        last.outcome.starts_with("abandoned: cancelled by operator"),
        "{last:?}"
    );
    let again = run_err(&[
        "job",
        "cancel",
        "--config",
        fed.path("operator.toml").to_str().unwrap(),
        "--job",
        &job,
    ]);
    assert!(again.contains("is cancelled"), "{again}");

    // Cancelled survives a coordinator crash.
    coord.kill9();
    coord = fed.coordinator("coordinator-2.log");
    let s = fed.status(&job);
    assert!(s.contains("cancelled") && s.contains("model review"), "{s}");

    let out = fed.op(&["resume", "--job", &job]);
    assert!(out.contains("waiting"), "{out}");
    let wire = get_job(&fed, &job);
    assert_eq!(wire.state, pb::JobState::Waiting as i32);
    assert!(
        wire.detail.starts_with("waiting for participants to join"),
        "{wire:?}"
    );
    // So does the resumed state.
    coord.kill9();
    let _coord = fed.coordinator("coordinator-3.log");
    let s = fed.status(&job);
    assert!(s.contains("waiting"), "{s}");
    assert_eq!(fed.rounds_done(&job), done);

    let mut a = fed.participant_logged("bank-a", "bank-a-2.log");
    let mut b = fed.participant_logged("bank-b", "bank-b-2.log");
    fed.wait_finished(&job, Duration::from_secs(120));
    for p in [&mut a, &mut b] {
        assert!(
            p.wait_exit(Duration::from_secs(30)).success(),
            "{}",
            p.log_text()
        );
    }
    let model = fed.model(&job);
    assert!(model.complete);
    assert_eq!(model.rounds, 30);
}

#[test]
fn patience_expiry_fails_the_job_with_the_reason_in_detail_and_resume_recovers() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b"]);
    let _coord = fed.coordinator("coordinator.log");
    let job = fed.launch(&SPEC.replace("rounds = 400", "rounds = 20\nabsence_patience_ms = 6000"));
    let mut a = fed.participant("bank-a");
    let mut b = fed.participant("bank-b");
    fed.wait_audit(&job, Duration::from_secs(120), "two rounds", |rs| {
        rs.iter().filter(|r| r.outcome == "ok").count() >= 2
    });
    b.kill9();

    // It waits for bank-b, saying so…
    let waiting = wait_status(&fed, &job, Duration::from_secs(30), |s| {
        s.contains("waiting for bank-b (last seen") || s.contains("failed")
    });
    assert!(waiting.contains("  waiting  "), "{waiting}");
    assert!(waiting.contains("gives up in"), "{waiting}");
    // …then gives up with a clear state and the reason in `detail`.
    let failed = wait_status(&fed, &job, Duration::from_secs(30), |s| {
        s.contains("failed")
    });
    let wire = get_job(&fed, &job);
    assert_eq!(wire.state, pb::JobState::Failed as i32, "{wire:?}");
    assert!(
        wire.detail
            .starts_with("absence patience of 6 s exhausted, waiting for bank-b (last seen"),
        "{wire:?}"
    );
    assert!(failed.contains(&wire.detail), "{failed}");
    // Never for the failure budget: absence used no attempt.
    assert!(!wire.detail.contains("times in a row"), "{wire:?}");
    assert!(
        a.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        a.log_text()
    );
    let listed = fed.op(&["list"]);
    assert!(listed.contains(&format!("{job}  failed")), "{listed}");

    // Resumed from its last checkpoint, it waits (with no time limit until it runs again)
    // for both and finishes. bank-b's undelivered end of the job from before is not read as
    // the end of the resumed one.
    let out = fed.op(&["resume", "--job", &job]);
    assert!(out.contains("  waiting  "), "{out}");
    assert!(!out.contains("gives up"), "{out}");
    let mut a = fed.participant_logged("bank-a", "bank-a-2.log");
    let mut b = fed.participant_logged("bank-b", "bank-b-2.log");
    fed.wait_finished(&job, Duration::from_secs(120));
    for p in [&mut a, &mut b] {
        assert!(
            p.wait_exit(Duration::from_secs(30)).success(),
            "{}",
            p.log_text()
        );
    }
    assert!(fed.model(&job).complete);
}
