//! Bad input, end to end against the real binary:
//! * CSV problems (missing column, non-numeric value, empty file, one-class label, …) stop
//!   `fedsilo participant join` at start-up with an error naming the file, the line and the
//!   column — no panic, non-zero exit;
//! * a fourth admitted participant sends malformed, oversized, wrong-length, wrong-job and
//!   wrong-round messages over its real mTLS connection while three honest banks train: every
//!   one is refused with a status naming the problem, the round goes on with the three, the
//!   job finishes, and the coordinator's earlier state (another job, its model, the audit
//!   log, every checkpoint) is intact.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fedsilo_coordinator::engine::{JobRecord, JobState};
use fedsilo_coordinator::store::Store;
use fedsilo_crypto::encoding::RingVec;
use fedsilo_crypto::msg::{ClientMsg, MaskedInput, RoundContext};
use fedsilo_participant::data::{load_csv, Schema};
use fedsilo_participant::worker::Worker;
use fedsilo_proto::pb;
use fedsilo_proto::pb::federation_client::FederationClient;
use fedsilo_proto::roster::Roster;
use fedsilo_task::job::{ToCoordinator, ToParticipant};
use fedsilo_task::LocalData;

const SCHEMA: &str = "data/credit_data.schema.toml";

// ---------------------------------------------------------------------------------------------
// CSV problems at `participant join`
// ---------------------------------------------------------------------------------------------

/// The first rows of the shipped credit data: (header fields, rows of fields).
fn base_rows(n: usize) -> (Vec<String>, Vec<Vec<String>>) {
    let (header, rows) = read_csv(&repo().join("data/credit_data.csv"));
    let split = |l: &str| l.split(',').map(str::to_string).collect::<Vec<_>>();
    (
        split(&header),
        rows.iter().take(n).map(|r| split(r)).collect(),
    )
}

fn write_rows(path: &Path, header: &[String], rows: &[Vec<String>]) {
    let mut text = header.join(",");
    text.push('\n');
    for r in rows {
        text.push_str(&r.join(","));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Writes `bank-a.csv`, runs `participant join` on it and returns its stderr; it must fail
/// by itself (the data is checked before the coordinator is contacted; none is running).
fn join_fails(fed: &TestFed, csv: &dyn Fn(&Path)) -> String {
    let path = fed.path("bank-a.csv");
    csv(&path);
    let cfg = fed.path("participant-bank-a.toml");
    let err = run_err_within(
        &["participant", "join", "--config", cfg.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(path.to_str().unwrap()),
        "the error does not name the file {}:\n{err}",
        path.display()
    );
    assert!(err.contains("dataset 'data'"), "{err}");
    err
}

/// An error names each of its causes once: the command line prints the chain of causes,
/// and an error that embeds its cause's text (here the config file's I/O error) does not
/// get it printed a second time.
#[test]
fn an_error_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("participant.toml");
    let err = run_err_within(
        &["participant", "join", "--config", missing.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn csv_problems_stop_participant_join_naming_file_line_and_column() {
    let fed = TestFed::new(&["bank-a"], "data", &repo().join(SCHEMA));
    let (header, rows) = base_rows(200);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();

    // The unmodified rows load: every failure below is the one defect put in.
    write_rows(&fed.path("bank-a.csv"), &header, &rows);
    let schema = Schema::from_toml_file(&fed.path("schema.toml")).unwrap();
    load_csv(&fed.path("bank-a.csv"), &schema).expect("the base rows are valid");

    // A schema column missing from the file.
    let err = join_fails(&fed, &|p| {
        let income = col("Income");
        let drop = |r: &Vec<String>| {
            let mut r = r.clone();
            r.remove(income);
            r
        };
        write_rows(
            p,
            &drop(&header),
            &rows.iter().map(drop).collect::<Vec<_>>(),
        );
    });
    assert!(
        err.contains(":1: feature column 'Income' is not in the header"),
        "{err}"
    );

    // A non-numeric value: data row 7 is line 8 of the file.
    let err = join_fails(&fed, &|p| {
        let mut rows = rows.clone();
        rows[6][col("Income")] = "12k".into();
        write_rows(p, &header, &rows);
    });
    assert!(
        err.contains("bank-a.csv:8: column 'Income': '12k' is not a number"),
        "{err}"
    );

    // An empty file, and a header without rows.
    let err = join_fails(&fed, &|p| std::fs::write(p, "").unwrap());
    assert!(err.contains("empty file"), "{err}");
    let err = join_fails(&fed, &|p| write_rows(p, &header, &[]));
    assert!(
        err.contains("bank-a.csv:1: header only, no data rows"),
        "{err}"
    );

    // A label with one class only.
    let err = join_fails(&fed, &|p| {
        let mut rows = rows.clone();
        for r in rows.iter_mut() {
            r[col("Status")] = "good".into();
        }
        write_rows(p, &header, &rows);
    });
    assert!(
        err.contains("label 'Status' has only negatives in"),
        "{err}"
    );

    // A missing label and a category outside the agreed list.
    let err = join_fails(&fed, &|p| {
        let mut rows = rows.clone();
        rows[2][col("Status")] = String::new();
        write_rows(p, &header, &rows);
    });
    assert!(
        err.contains("bank-a.csv:4: column 'Status': label is missing"),
        "{err}"
    );
    let err = join_fails(&fed, &|p| {
        let mut rows = rows.clone();
        rows[9][col("Home")] = "castle".into();
        write_rows(p, &header, &rows);
    });
    assert!(
        err.contains("bank-a.csv:11: column 'Home': unknown category 'castle'"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad messages from an admitted participant
// ---------------------------------------------------------------------------------------------

const SPEC_A: &str = r#"
dataset = "data"
task = "risk"
rounds = 2
min_participants = 3
eval_every = 2
seed = 7
phase_timeout_ms = 10000
[learning]
local_epochs = 1
learning_rate = 0.05
batch_size = 32
"#;

/// Job B waits for all four banks, so the misbehaving one is in its rounds.
fn spec_b() -> String {
    SPEC_A
        .replace("min_participants = 3", "min_participants = 4")
        .replace("seed = 7", "seed = 8")
}

fn bank_d_worker(fed: &TestFed) -> Worker {
    let roster = Roster::load(&fed.path("roster.toml")).unwrap();
    let me = roster.participant_id("bank-d").unwrap();
    let identity = fedsilo_proto::pki::load_identity(&fed.path("bank-d.identity")).unwrap();
    let schema = Schema::from_toml_file(&fed.path("schema.toml")).unwrap();
    let t = load_csv(&fed.path("bank-d.csv"), &schema).unwrap();
    let (train, holdout) = t.split_holdout(0.2, 5);
    let datasets = [("data".to_string(), LocalData { train, holdout })]
        .into_iter()
        .collect();
    Worker::new(
        me,
        Arc::new(identity),
        Arc::new(roster.to_crypto_roster()),
        datasets,
        [4; 32],
    )
}

fn masked(m: &MaskedInput) -> pb::ToCoordinator {
    ToCoordinator::SecAgg(ClientMsg::MaskedInput(m.clone())).into()
}

/// `m` re-signed by bank-d itself: a participant that sends a bad vector signs it, so the
/// coordinator's refusal is the one under test, not the signature check.
fn signed_by_d(fed: &TestFed, m: MaskedInput) -> MaskedInput {
    let identity = fedsilo_proto::pki::load_identity(&fed.path("bank-d.identity")).unwrap();
    let mut msg = ClientMsg::MaskedInput(m);
    msg.sign(&identity);
    match msg {
        ClientMsg::MaskedInput(m) => m,
        other => panic!("not a masked input: {other:?}"),
    }
}

fn resized(v: &RingVec, len: usize) -> RingVec {
    match v {
        RingVec::U32(x) => {
            let mut x = x.clone();
            x.resize(len, 7);
            RingVec::U32(x)
        }
        RingVec::U64(x) => {
            let mut x = x.clone();
            x.resize(len, 7);
            RingVec::U64(x)
        }
    }
}

fn other_modulus(v: &RingVec) -> RingVec {
    match v {
        RingVec::U32(x) => RingVec::U64(x.iter().map(|&e| e as u64).collect()),
        RingVec::U64(x) => RingVec::U32(x.iter().map(|&e| e as u32).collect()),
    }
}

fn masked_pb(m: &mut pb::ToCoordinator) -> &mut pb::MaskedInput {
    match m.body.as_mut() {
        Some(pb::to_coordinator::Body::Secagg(pb::ClientMsg {
            body: Some(pb::client_msg::Body::MaskedInput(mi)),
        })) => mi,
        other => panic!("not a masked input: {other:?}"),
    }
}

/// Submits `m`, which must be refused with `code` and a message containing every one of
/// `needles`.
async fn refused(
    c: &mut FederationClient<tonic::transport::Channel>,
    what: &str,
    m: pb::ToCoordinator,
    code: tonic::Code,
    needles: &[&str],
) {
    let status = match c.submit(m).await {
        Ok(_) => panic!("{what}: accepted"),
        Err(s) => s,
    };
    assert_eq!(status.code(), code, "{what}: {status}");
    for n in needles {
        assert!(
            status.message().contains(n),
            "{what}: '{}' does not say '{n}'",
            status.message()
        );
    }
    eprintln!("{what}: refused, {:?}: {}", status.code(), status.message());
}

/// bank-d: joins job B, takes part honestly in its first round, then in the second round
/// sends bad messages instead of its masked input and goes away. Returns that round.
async fn misbehave(fed: &TestFed, job_a: &str, job_b: &str) -> u64 {
    let ch = fed.channel("bank-d").await;
    let mut c = FederationClient::new(ch);
    let roster = Roster::load(&fed.path("roster.toml")).unwrap();
    let bank_a = roster.participant_id("bank-a").unwrap();

    // Joining jobs that do not exist, or with an id no job can have.
    let s = c
        .join(pb::JoinRequest {
            job_ids: vec!["no-such-job".into()],
        })
        .await
        .expect_err("joined a job that does not exist");
    assert_eq!(s.code(), tonic::Code::NotFound, "{s}");
    assert!(s.message().contains("unknown job 'no-such-job'"), "{s}");
    let s = c
        .join(pb::JoinRequest {
            job_ids: vec![job_b.into(), "j".repeat(1 << 20)],
        })
        .await
        .expect_err("joined with a 1 MiB job id");
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s}");
    assert!(s.message().contains("job_ids[1]: 1048576 bytes"), "{s}");
    assert!(s.message().len() < 200, "the id is not echoed back");

    c.join(pb::JoinRequest {
        job_ids: vec![job_b.into()],
    })
    .await
    .unwrap();
    let mut w = bank_d_worker(fed);
    let deadline = Instant::now() + Duration::from_secs(240);
    let m = 'rounds: loop {
        assert!(
            Instant::now() < deadline,
            "job B's second round never asked for input"
        );
        let reply = c
            .poll(pb::PollRequest { max_wait_ms: 1000 })
            .await
            .unwrap()
            .into_inner();
        for m in reply.messages {
            w.handle_message(ToParticipant::try_from(m.decode().unwrap()).unwrap())
                .unwrap();
        }
        while let Some(out) = w.poll_transmit() {
            match out {
                ToCoordinator::SecAgg(ClientMsg::MaskedInput(m)) if m.ctx.round >= 1 => {
                    break 'rounds m;
                }
                out => {
                    c.submit(pb::ToCoordinator::from(out)).await.unwrap();
                }
            }
        }
    };
    let round = m.ctx.round;
    let len = m.masked.len();
    let ctx = |job: &str, round: u64| RoundContext {
        job_id: job.to_string(),
        round,
    };
    let here = format!("job '{job_b}' round {round}");

    // Refused by the round itself (the coordinator is collecting masked inputs now).
    let short = signed_by_d(
        fed,
        MaskedInput {
            masked: resized(&m.masked, len - 1),
            ..m.clone()
        },
    );
    let expected = format!("wrong length: expected {len}, got {}", len - 1);
    refused(
        &mut c,
        "vector one element short",
        masked(&short),
        tonic::Code::InvalidArgument,
        &[&here, &expected],
    )
    .await;
    let long = signed_by_d(
        fed,
        MaskedInput {
            masked: resized(&m.masked, len + 1_000_000),
            ..m.clone()
        },
    );
    let expected = format!("wrong length: expected {len}, got {}", len + 1_000_000);
    refused(
        &mut c,
        "vector a million elements long",
        masked(&long),
        tonic::Code::InvalidArgument,
        &[&here, &expected],
    )
    .await;
    let wrong_ring = signed_by_d(
        fed,
        MaskedInput {
            masked: other_modulus(&m.masked),
            ..m.clone()
        },
    );
    refused(
        &mut c,
        "vector in the other ring",
        masked(&wrong_ring),
        tonic::Code::InvalidArgument,
        &[&here, "wrong modulus"],
    )
    .await;
    let spoofed = MaskedInput {
        from: bank_a,
        ..m.clone()
    };
    refused(
        &mut c,
        "sender field naming another bank",
        masked(&spoofed),
        tonic::Code::InvalidArgument,
        &[&here, &format!("claims to come from {bank_a}")],
    )
    .await;

    // For another job, or another round of this one.
    let other = MaskedInput {
        ctx: ctx("no-such-job", round),
        ..m.clone()
    };
    refused(
        &mut c,
        "unknown job",
        masked(&other),
        tonic::Code::NotFound,
        &["unknown job 'no-such-job'"],
    )
    .await;
    let finished = MaskedInput {
        ctx: ctx(job_a, round),
        ..m.clone()
    };
    refused(
        &mut c,
        "finished job",
        masked(&finished),
        tonic::Code::NotFound,
        &[&format!(
            "job '{job_a}' has no round in progress for round {round}"
        )],
    )
    .await;
    let stale = MaskedInput {
        ctx: ctx(job_b, round - 1),
        ..m.clone()
    };
    refused(
        &mut c,
        "stale round",
        masked(&stale),
        tonic::Code::NotFound,
        &[&format!(
            "job '{job_b}' has no round in progress for round {}",
            round - 1
        )],
    )
    .await;
    let future = MaskedInput {
        ctx: ctx(job_b, round + 1000),
        ..m.clone()
    };
    refused(
        &mut c,
        "future round",
        masked(&future),
        tonic::Code::NotFound,
        &[&format!(
            "job '{job_b}' has no round in progress for round {}",
            round + 1000
        )],
    )
    .await;
    let huge_id = MaskedInput {
        ctx: ctx(&"j".repeat(1 << 20), round),
        ..m.clone()
    };
    refused(
        &mut c,
        "1 MiB job id",
        masked(&huge_id),
        tonic::Code::InvalidArgument,
        &["ctx.job_id: 1048576 bytes is not a job id"],
    )
    .await;

    // Malformed: what the wire layer cannot turn into a message, named by field.
    refused(
        &mut c,
        "empty envelope",
        pb::ToCoordinator { body: None },
        tonic::Code::InvalidArgument,
        &["malformed message", "missing oneof body"],
    )
    .await;
    let mut ragged = masked(&m);
    masked_pb(&mut ragged).data.push(1);
    refused(
        &mut c,
        "ring data not whole elements",
        ragged,
        tonic::Code::InvalidArgument,
        &[
            "malformed message",
            "secagg.masked_input.data",
            "is not a multiple of",
        ],
    )
    .await;
    let mut bad_enum = masked(&m);
    masked_pb(&mut bad_enum).modulus = 77;
    refused(
        &mut c,
        "unknown modulus",
        bad_enum,
        tonic::Code::InvalidArgument,
        &["secagg.masked_input.modulus", "unknown enum value 77"],
    )
    .await;
    let mut no_ctx = masked(&m);
    masked_pb(&mut no_ctx).ctx = None;
    refused(
        &mut c,
        "no round context",
        no_ctx,
        tonic::Code::InvalidArgument,
        &["secagg.masked_input.ctx: missing"],
    )
    .await;

    // A decline with a 1 MiB reason is taken, cut short (while the round still runs).
    let decline = ToCoordinator::Decline {
        ctx: m.ctx.clone(),
        reason: "no ".repeat(350_000),
    };
    c.submit(pb::ToCoordinator::from(decline)).await.unwrap();

    // Oversized: above the 64 MiB message limit, refused before it is decoded.
    let mut big = masked(&m);
    masked_pb(&mut big).data = vec![0; fedsilo_proto::MAX_MESSAGE_BYTES + 8];
    refused(
        &mut c,
        "message over the size limit",
        big,
        tonic::Code::OutOfRange,
        &["too large", &fedsilo_proto::MAX_MESSAGE_BYTES.to_string()],
    )
    .await;

    round
}

#[test]
fn bad_messages_are_refused_and_the_honest_banks_finish() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b", "bank-c", "bank-d"]);
    let honest = ["bank-a", "bank-b", "bank-c"];
    let mut coord = fed.coordinator("coordinator.log");

    // Earlier state: job A, trained by the three honest banks.
    let job_a = fed.launch(SPEC_A);
    let mut parts: Vec<Proc> = honest.iter().map(|n| fed.participant(n)).collect();
    fed.wait_finished(&job_a, Duration::from_secs(300));
    for p in parts.iter_mut() {
        assert!(
            p.wait_exit(Duration::from_secs(60)).success(),
            "{}",
            p.log_text()
        );
    }
    let model_a = fed.model(&job_a);
    let audit_a = fed.audit_rounds(&job_a);
    assert!(!audit_a.is_empty());

    // Job B: the honest three and bank-d, which misbehaves in the second round.
    let job_b = fed.launch(&spec_b());
    let mut parts: Vec<Proc> = honest.iter().map(|n| fed.participant(n)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let bad_round = rt.block_on(misbehave(&fed, &job_a, &job_b));
    drop(rt);

    fed.wait_finished(&job_b, Duration::from_secs(600));
    for p in parts.iter_mut() {
        assert!(
            p.wait_exit(Duration::from_secs(60)).success(),
            "{}",
            p.log_text()
        );
    }
    let model_b = fed.model(&job_b);
    assert!(model_b.complete);

    // Every round of job B closed; the one bank-d spoiled went on without it.
    let rounds_b = fed.audit_rounds(&job_b);
    let honest_names: Vec<String> = honest.iter().map(|s| s.to_string()).collect();
    for r in &rounds_b {
        assert_eq!(r.outcome, "ok", "{r:?}");
        assert!(r.participants.contains(&"bank-d".to_string()), "{r:?}");
    }
    assert!(rounds_b[0].survivors.contains(&"bank-d".to_string()));
    let bad = rounds_b
        .iter()
        .find(|r| r.round == bad_round)
        .expect("the spoiled round is in the audit log");
    let mut survivors = bad.survivors.clone();
    survivors.sort();
    assert_eq!(survivors, honest_names, "{bad:?}");
    assert_eq!(
        rounds_b.last().unwrap().aggregate_hash,
        model_b.round_sha256
    );

    // Earlier state intact: job A, its model and its audit entries.
    let list = fed.op(&["list"]);
    assert!(list.contains(&job_a) && list.contains(&job_b), "{list}");
    assert!(fed.status(&job_a).contains("finished"));
    let again = fed.model(&job_a);
    assert_eq!(again.model, model_a.model);
    assert_eq!(again.round_sha256, model_a.round_sha256);
    assert_eq!(fed.audit_rounds(&job_a), audit_a);

    // The coordinator neither panicked nor logged the 1 MiB decline reason whole.
    let log = coord.log_text();
    assert!(!log.contains("panicked"), "{log}");
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 64 * 1024, "a {longest}-byte log line");
    assert!(
        log.contains("cut from 1050000 bytes"),
        "the decline was not logged"
    );

    // Every checkpoint is on disk.
    coord.kill9();
    let store = Store::open(&fed.path("coordinator-state/coordinator.redb")).unwrap();
    let jobs: Vec<String> = store
        .list_jobs()
        .unwrap()
        .into_iter()
        .map(|(j, _)| j)
        .collect();
    assert!(jobs.contains(&job_a) && jobs.contains(&job_b), "{jobs:?}");
    for (job, model) in [(&job_a, &model_a), (&job_b, &model_b)] {
        let (last, state) = store.latest_checkpoint(job).unwrap().unwrap();
        let rec: JobRecord = serde_json::from_slice(&state).unwrap();
        assert_eq!(rec.state, JobState::Finished);
        assert_eq!(rec.plan.model(), Some(&model.model));
        for step in 0..=last {
            let c = store.checkpoint(job, step).unwrap();
            assert!(
                c.is_some(),
                "job {job}: checkpoint of step {step} is missing"
            );
        }
    }
}
