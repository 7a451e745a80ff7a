//! A participant killed with SIGKILL mid-job and restarted with the same configuration
//! rejoins: the rounds run without it while it is away (the others carry on), it is a
//! survivor again from the round after it joined, and the job finishes with all four.
//!
//! Four banks in the main test: with three, each neighbourhood has k = 2 and the threshold
//! t = 2, so no round can complete without one of them (secure aggregation refuses below t);
//! a round is retried while the job's attempts last. The three-bank test shows that a bank
//! restarted within that budget brings the job back: the failed attempt is in the audit log
//! and the job finishes with all three.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use fedsilo_coordinator::audit::AuditRecord;

const SPEC: &str = r#"
dataset = "data"
task = "risk"
rounds = 100
min_participants = 4
eval_every = 10
seed = 11
phase_timeout_ms = 5000
[learning]
local_epochs = 1
learning_rate = 0.05
batch_size = 32
"#;

fn survived(r: &AuditRecord, name: &str) -> bool {
    r.survivors.iter().any(|s| s == name)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn participant_killed_mid_job_rejoins_and_contributes_again() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b", "bank-c", "bank-d"]);
    let _coord = fed.coordinator("coordinator.log");
    let job = fed.launch(SPEC);
    let mut a = fed.participant("bank-a");
    let mut b = fed.participant("bank-b");
    let mut c = fed.participant("bank-c");
    let mut d = fed.participant("bank-d");

    // A few rounds with bank-c, then SIGKILL.
    let long = Duration::from_secs(300);
    fed.wait_audit(&job, long, "three rounds with bank-c", |rs| {
        rs.iter().filter(|r| survived(r, "bank-c")).count() >= 3
    });
    c.kill9();
    let before_kill = fed.audit_rounds(&job).len();

    // The job goes on without it: a round that had bank-c in it closes without it.
    let away = fed.wait_audit(&job, long, "a round closed without bank-c", |rs| {
        rs[before_kill..]
            .iter()
            .any(|r| r.outcome == "ok" && !survived(r, "bank-c"))
    });
    let missed = &away[before_kill..]
        .iter()
        .find(|r| !survived(r, "bank-c"))
        .unwrap();
    assert!(
        missed.participants.iter().any(|p| p == "bank-c"),
        "{missed:?}"
    );
    assert_eq!(
        missed.survivors,
        ["bank-a", "bank-b", "bank-d"],
        "{missed:?}"
    );
    assert!(
        fed.rounds_done(&job) < 100,
        "the job must still be running for the restart to mean anything"
    );

    // Restart with the same configuration; wait until it has joined.
    let mut c2 = fed.participant_logged("bank-c", "bank-c-restarted.log");
    let start = std::time::Instant::now();
    while !c2.log_text().contains("joined job") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "restarted bank-c did not join:\n{}",
            c2.log_text()
        );
        assert!(
            c2.child.try_wait().unwrap().is_none(),
            "restarted bank-c exited:\n{}",
            c2.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let joined_at = now_ms();

    let status = fed.wait_finished(&job, Duration::from_secs(600));
    assert!(status.contains("finished"), "{status}");
    for p in [&mut a, &mut b, &mut c2, &mut d] {
        assert!(
            p.wait_exit(Duration::from_secs(60)).success(),
            "{}",
            p.log_text()
        );
    }
    let log = c2.log_text();
    assert!(log.contains("round started"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    // After it joined, the round in flight may have gone on without it; every later round
    // has it among the survivors again.
    let rounds = fed.audit_rounds(&job);
    let timeline: Vec<String> = rounds
        .iter()
        .map(|r| {
            let mark = if survived(r, "bank-c") { "c" } else { "-" };
            let when = if r.time_unix_ms > joined_at { "'" } else { "" };
            format!("{}{mark}{when}", r.round)
        })
        .collect();
    eprintln!("rounds (c: bank-c survived, ': closed after it rejoined): {timeline:?}");
    let after: Vec<&AuditRecord> = rounds
        .iter()
        .filter(|r| r.time_unix_ms > joined_at)
        .collect();
    assert!(
        after.len() >= 2,
        "the job ended too soon after the restart: {after:#?}"
    );
    for r in &after[1..] {
        assert_eq!(r.outcome, "ok", "{r:?}");
        assert!(
            survived(r, "bank-c"),
            "restarted bank-c did not contribute to round {}: {r:?}",
            r.round
        );
    }
    let model = fed.model(&job);
    assert!(model.complete);
    assert_eq!(model.round_sha256, rounds.last().unwrap().aggregate_hash);
}

#[test]
fn three_banks_one_restarted_the_failed_round_is_retried_with_it() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b", "bank-c"]);
    let _coord = fed.coordinator("coordinator.log");
    let job = fed.launch(
        &SPEC
            .replace("min_participants = 4", "min_participants = 3")
            .replace("phase_timeout_ms = 5000", "phase_timeout_ms = 10000"),
    );
    let mut a = fed.participant("bank-a");
    let mut b = fed.participant("bank-b");
    let mut c = fed.participant("bank-c");

    let long = Duration::from_secs(300);
    fed.wait_audit(&job, long, "three rounds with bank-c", |rs| {
        rs.iter().filter(|r| survived(r, "bank-c")).count() >= 3
    });
    c.kill9();
    let before_kill = fed.audit_rounds(&job).len();
    // Without bank-c the round in flight fails (below the threshold); restart it then.
    let away = fed.wait_audit(&job, long, "a round failed without bank-c", |rs| {
        rs[before_kill..].iter().any(|r| r.outcome != "ok")
    });
    let failed = away[before_kill..]
        .iter()
        .find(|r| r.outcome != "ok")
        .unwrap();
    // Depending on the phase bank-c died in, the round fails below the threshold (it never
    // sent its masked input) or cannot rebuild its self mask from one share (it had).
    assert!(
        failed.outcome.contains("threshold") || failed.outcome.contains("are needed"),
        "{failed:?}"
    );
    assert!(failed.aggregate_hash.is_empty(), "{failed:?}");
    let mut c2 = fed.participant_logged("bank-c", "bank-c-restarted.log");

    let status = fed.wait_finished(&job, Duration::from_secs(600));
    assert!(status.contains("finished"), "{status}");
    for p in [&mut a, &mut b, &mut c2] {
        assert!(
            p.wait_exit(Duration::from_secs(60)).success(),
            "{}",
            p.log_text()
        );
    }
    // The failed step was retried with bank-c back, and every later round had all three.
    let rounds = fed.audit_rounds(&job);
    let failed_at = rounds.iter().position(|r| r.round == failed.round).unwrap();
    let back = rounds[failed_at..]
        .iter()
        .position(|r| r.outcome == "ok")
        .map(|i| failed_at + i)
        .expect("no round succeeded after the failure");
    for r in &rounds[back..] {
        assert_eq!(r.outcome, "ok", "{r:?}");
        assert_eq!(r.survivors, ["bank-a", "bank-b", "bank-c"], "{r:?}");
    }
    assert!(
        rounds.len() > back + 1,
        "the job went on after bank-c came back"
    );
    let model = fed.model(&job);
    assert!(model.complete);
    assert_eq!(model.round_sha256, rounds.last().unwrap().aggregate_hash);
}
