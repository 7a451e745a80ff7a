//! Nothing stored is lost silently, driven through the real `fedsilo` binary:
//! * a deleted, emptied or half-truncated store, or an uninitialised state directory: `coordinator
//!   serve` refuses to start, exit ≠ 0, the file named, no panic;
//! * an audit log with its tail cut, or deleted: refused at start, and reported by
//!   `audit verify LOG --store STORE` (the chain alone still verifies);
//! * SIGTERM stops a coordinator and a participant gracefully (exit 0, logged) and a restarted
//!   coordinator resumes the job;
//! * a closed standard output (`| head -0`) ends a printing command quietly;
//! * `simulate` of a scenario whose job fails exits ≠ 0 naming the job, and prints no metric.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SPEC: &str = r#"
dataset = "data"
task = "risk"
rounds = 4
min_participants = 3
eval_every = 2
seed = 5
phase_timeout_ms = 5000
[learning]
local_epochs = 1
learning_rate = 0.05
batch_size = 32
"#;

fn sigterm(p: &Proc) {
    let ok = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
}

/// Stops the coordinator with SIGTERM; it must exit 0 and log why.
fn stop(mut coord: Proc) -> String {
    sigterm(&coord);
    let status = coord.wait_exit(Duration::from_secs(30));
    let log = coord.log_text();
    assert!(
        status.success(),
        "coordinator exit {status} on SIGTERM:\n{log}"
    );
    assert!(log.contains("shutting down on SIGTERM"), "{log}");
    log
}

/// A federation that trained one short job to the end, coordinator stopped: a store with a job
/// and an audit log with entries.
fn trained() -> (TestFed, String) {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b", "bank-c"]);
    let coord = fed.coordinator("coordinator-1.log");
    let job = fed.launch(SPEC);
    let mut parts: Vec<Proc> = fed.names.iter().map(|n| fed.participant(n)).collect();
    fed.wait_finished(&job, Duration::from_secs(120));
    for p in parts.iter_mut() {
        assert!(
            p.wait_exit(Duration::from_secs(60)).success(),
            "{}",
            p.log_text()
        );
    }
    stop(coord);
    (fed, job)
}

fn serve_args(fed: &TestFed) -> Vec<String> {
    vec![
        "coordinator".into(),
        "serve".into(),
        "--config".into(),
        fed.path("coordinator.toml").display().to_string(),
    ]
}

/// `coordinator serve` must refuse by itself within seconds; returns its stderr.
fn serve_refused(fed: &TestFed) -> String {
    let args = serve_args(fed);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = run_err_within(&args, Duration::from_secs(20));
    assert!(
        !err.contains("panicked"),
        "the coordinator panicked:\n{err}"
    );
    assert!(err.contains("error:"), "{err}");
    err
}

/// Rewrites a redb file's page size and pads it to the length its header then implies: it
/// passes every check before redb, and redb panics on it.
fn damage_page_size(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[12..16].copy_from_slice(&8192u32.to_le_bytes());
    let u = |o: usize| u64::from(u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()));
    let (page, hdr, max, full, trailing) = (u(12), u(16), u(20), u(24), u(28));
    let trailing = if trailing > 0 {
        (hdr + trailing) * page
    } else {
        0
    };
    bytes.resize((page + full * (hdr + max) * page + trailing) as usize, 0);
    std::fs::write(path, &bytes).unwrap();
}

fn state_file(fed: &TestFed, name: &str) -> PathBuf {
    fed.path(&format!("coordinator-state/{name}"))
}

#[test]
fn a_deleted_emptied_or_truncated_store_is_refused_at_start() {
    let (fed, job) = trained();
    let store = state_file(&fed, "coordinator.redb");
    let saved = std::fs::read(&store).unwrap();
    let store_name = store.display().to_string();

    // Deleted: the marker and the audit log say the jobs existed.
    std::fs::remove_file(&store).unwrap();
    let err = serve_refused(&fed);
    assert!(
        err.contains(&store_name) && err.contains("missing") && err.contains("FEDSILO-STATE"),
        "{err}"
    );
    assert!(!store.exists(), "serve created an empty store");

    // Emptied (0 bytes).
    std::fs::write(&store, b"").unwrap();
    let err = serve_refused(&fed);
    assert!(
        err.contains(&store_name) && err.contains("empty (0 bytes)"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&store).unwrap().len(), 0);

    // Truncated to half (redb itself would panic on it).
    std::fs::write(&store, &saved[..saved.len() / 2]).unwrap();
    let err = serve_refused(&fed);
    assert!(
        err.contains(&store_name) && err.contains("truncated"),
        "{err}"
    );

    // Damaged so that redb itself asserts (its header names another page size).
    std::fs::write(&store, &saved).unwrap();
    damage_page_size(&store);
    let err = serve_refused(&fed);
    assert!(
        err.contains(&store_name) && err.contains("corrupt"),
        "{err}"
    );

    // Put back, it serves the finished job again.
    std::fs::write(&store, &saved).unwrap();
    let coord = fed.coordinator("coordinator-2.log");
    assert!(fed.status(&job).contains("finished"));
    stop(coord);
}

#[test]
fn an_uninitialised_state_directory_is_refused_and_init_is_explicit() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b"]);
    let state = fed.path("coordinator-state");
    // TestFed ran `coordinator init`; start over from a bare directory.
    std::fs::remove_dir_all(&state).unwrap();
    let err = serve_refused(&fed);
    assert!(
        err.contains("not an initialised") && err.contains("coordinator init"),
        "{err}"
    );
    assert!(!state.join("coordinator.redb").exists());

    let cfg = fed.path("coordinator.toml");
    let cfg = cfg.to_str().unwrap();
    run_ok(&["coordinator", "init", "--config", cfg]);
    assert!(state.join("FEDSILO-STATE").exists());
    // A second init is refused: it would hide whatever the first created.
    let again = run_err(&["coordinator", "init", "--config", cfg]);
    assert!(again.contains("already initialised"), "{again}");
    let again = run_err(&["coordinator", "serve", "--init", "--config", cfg]);
    assert!(again.contains("already initialised"), "{again}");

    // `serve --init` on a bare directory creates the state and serves.
    std::fs::remove_dir_all(&state).unwrap();
    let coord = spawn(
        &["coordinator", "serve", "--init", "--config", cfg],
        fed.path("coordinator-init.log"),
    );
    fed.wait_listening();
    assert!(fed.op(&["list"]).contains("no jobs"));
    stop(coord);
}

#[test]
fn a_cut_or_deleted_audit_log_is_refused_at_start_and_reported_by_audit_verify() {
    let (fed, _job) = trained();
    let log = state_file(&fed, "audit.jsonl");
    let store = state_file(&fed, "coordinator.redb");
    let (log_s, store_s) = (log.to_str().unwrap(), store.to_str().unwrap());
    let saved = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = saved.lines().collect();
    let n = lines.len();
    assert!(n >= 4, "the job wrote {n} audit entries");
    let ok = run_ok(&["audit", "verify", log_s, "--store", store_s]);
    assert!(ok.contains("consistent"), "{ok}");

    // Cut the last two entries: still a valid chain, so `verify` without the store cannot tell...
    let mut cut = lines[..n - 2].join("\n");
    cut.push('\n');
    std::fs::write(&log, &cut).unwrap();
    let alone = run_ok(&["audit", "verify", log_s]);
    assert!(alone.contains("chain intact"), "{alone}");
    // ...but with the store's record it can, and so can the coordinator.
    let err = run_err(&["audit", "verify", log_s, "--store", store_s]);
    let want = [
        "truncated".to_string(),
        format!("{} entries (last seq {}", n - 2, n - 3),
        format!("{n} entries (last seq {}", n - 1),
    ];
    for w in &want {
        assert!(err.contains(w), "missing '{w}' in:\n{err}");
    }
    let err = serve_refused(&fed);
    for w in &want {
        assert!(err.contains(w), "missing '{w}' in:\n{err}");
    }
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        cut,
        "the refused coordinator wrote to the log"
    );

    // Deleted.
    std::fs::remove_file(&log).unwrap();
    let err = run_err(&["audit", "verify", log_s, "--store", store_s]);
    assert!(err.contains("missing"), "{err}");
    let err = serve_refused(&fed);
    assert!(err.contains(log_s) && err.contains("missing"), "{err}");
    assert!(!log.exists(), "serve started a new log");

    // Restored: consistent again.
    std::fs::write(&log, &saved).unwrap();
    let ok = run_ok(&["audit", "verify", log_s, "--store", store_s]);
    assert!(ok.contains("consistent"), "{ok}");
}

#[test]
fn sigterm_stops_the_coordinator_cleanly_and_a_restart_resumes_the_job() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b", "bank-c"]);
    let coord = fed.coordinator("coordinator-1.log");
    let job = fed.launch(&SPEC.replace("rounds = 4", "rounds = 14"));
    let mut parts: Vec<Proc> = fed.names.iter().map(|n| fed.participant(n)).collect();
    let start = Instant::now();
    while fed.rounds_done(&job) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "job does not progress"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(coord);
    // What was written before the signal is whole: the store and log agree.
    let log = state_file(&fed, "audit.jsonl");
    let store = state_file(&fed, "coordinator.redb");
    run_ok(&[
        "audit",
        "verify",
        log.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);

    let coord2 = fed.coordinator("coordinator-2.log");
    fed.wait_finished(&job, Duration::from_secs(180));
    for p in parts.iter_mut() {
        assert!(
            p.wait_exit(Duration::from_secs(60)).success(),
            "{}",
            p.log_text()
        );
    }
    let log2 = coord2.log_text();
    let step: u64 = log2
        .lines()
        .find(|l| l.contains("restored job from checkpoint"))
        .and_then(|l| l.split("step=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the restart did not restore the job:\n{log2}"));
    assert!(step > 0, "the job had made progress before SIGTERM");
    stop(coord2);
}

#[test]
fn sigterm_stops_a_waiting_participant_cleanly() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b"]);
    let coord = fed.coordinator("coordinator.log");
    // No job: the node polls forever (exit_when_done needs a job to end).
    let mut p = fed.participant("bank-a");
    let start = Instant::now();
    while !p.log_text().contains("joining") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm(&p);
    let status = p.wait_exit(Duration::from_secs(30));
    let log = p.log_text();
    assert!(
        status.success(),
        "participant exit {status} on SIGTERM:\n{log}"
    );
    assert!(log.contains("shutting down on SIGTERM"), "{log}");
    stop(coord);
}

/// Runs `fedsilo args…` with its standard output closed before it writes; returns (status, stderr).
fn with_stdout_closed(args: &[&str]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone, as after `| head -0`
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("fedsilo {args:?} kept running with its output closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&err_path).unwrap())
}

#[test]
fn a_closed_stdout_ends_printing_commands_quietly() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b", "bank-c"]);
    let coord = fed.coordinator("coordinator.log");
    // A job that waits for participants that never come: `status --follow` would print forever.
    let job = fed.launch(SPEC);
    let op = fed.path("operator.toml");
    let op = op.to_str().unwrap();
    let log = state_file(&fed, "audit.jsonl");
    let cases: Vec<Vec<&str>> = vec![
        vec!["job", "list", "--config", op],
        vec!["job", "status", "--config", op, "--job", &job],
        vec!["job", "status", "--config", op, "--job", &job, "--follow"],
        vec!["audit", "verify", log.to_str().unwrap()],
    ];
    for args in &cases {
        let (status, err) = with_stdout_closed(args);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "fedsilo {args:?}:\n{err}"
        );
        assert!(status.success(), "fedsilo {args:?}: {status}\n{err}");
    }
    stop(coord);
}

fn write_scenario(dir: &Path, job: &str, features: &str) -> PathBuf {
    let repo = repo();
    let text = format!(
        r#"
name = "fails"
seed = 3
baselines = false
[institutions]
count = 3
[[datasets]]
name = "credit"
csv = "{csv}"
schema = "{schema}"
partition = {{ kind = "iid" }}
[[jobs]]
name = "{job}"
dataset = "credit"
rounds = 2
eval_every = 1
phase_timeout_ms = 1000
{features}
"#,
        csv = repo.join("data/credit_data.csv").display(),
        schema = repo.join("data/credit_data.schema.toml").display(),
    );
    let path = dir.join("scenario.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn simulate_exits_nonzero_naming_the_failed_job_and_prints_no_metric() {
    let dir = tempfile::tempdir().unwrap();
    // Every institution declines a step over a label none of them has: the job fails.
    let scenario = write_scenario(dir.path(), "doomed-risk", r#"labels = ["no_such_label"]"#);
    let out = Command::new(bin())
        .args([
            "simulate",
            scenario.to_str().unwrap(),
            "--out",
            dir.path().join("out").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "simulate exited 0:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("'doomed-risk'") && stderr.contains("failed"),
        "{stderr}"
    );
    assert!(!stdout.contains("NaN"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The report is still written, and says the job failed.
    let report: fedsilo_simulations::report::Report =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/report.json")).unwrap())
            .unwrap();
    assert_eq!(report.jobs.len(), 1);
    assert!(!report.jobs[0].finished, "{:?}", report.jobs);
    assert!(
        report.jobs[0].state.starts_with("failed"),
        "{:?}",
        report.jobs
    );
}
