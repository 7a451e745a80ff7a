//! Durability and admission over real gRPC:
//! * the coordinator is killed with SIGKILL mid-job, restarted, and the job completes with
//!   exactly the model an uninterrupted run from the restored checkpoint produces;
//! * a client whose certificate is not from the federation's CA is refused at the TLS layer;
//! * a client with a valid certificate but a forged identity signature is refused, and the
//!   round goes on with the others.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fedsilo_coordinator::engine::Coordinator;
use fedsilo_coordinator::store::Store;
use fedsilo_crypto::keys::IdentityKey;
use fedsilo_crypto::msg::ParticipantId;
use fedsilo_participant::data::{load_csv, Schema};
use fedsilo_participant::worker::Worker;
use fedsilo_proto::pb;
use fedsilo_proto::pb::federation_client::FederationClient;
use fedsilo_proto::roster::Roster;
use fedsilo_proto::tls::{client_tls_config, TlsFiles};
use fedsilo_simulations::memory::MemoryFederation;
use fedsilo_task::LocalData;

const SPEC: &str = r#"
dataset = "data"
task = "risk"
rounds = 150
min_participants = 3
eval_every = 10
seed = 99
[learning]
local_epochs = 2
learning_rate = 0.05
batch_size = 32
"#;

fn workers_for(fed: &TestFed) -> Vec<Worker> {
    let roster = Roster::load(&fed.path("roster.toml")).unwrap();
    let crypto_roster = Arc::new(roster.to_crypto_roster());
    let schema = Schema::from_toml_file(&fed.path("schema.toml")).unwrap();
    let mut by_id: BTreeMap<ParticipantId, Worker> = BTreeMap::new();
    for name in &fed.names {
        let id = roster.participant_id(name).unwrap();
        let identity =
            fedsilo_proto::pki::load_identity(&fed.path(&format!("{name}.identity"))).unwrap();
        let t = load_csv(&fed.path(&format!("{name}.csv")), &schema).unwrap();
        let (train, holdout) = t.split_holdout(0.2, 5);
        let datasets = [("data".to_string(), LocalData { train, holdout })]
            .into_iter()
            .collect();
        by_id.insert(
            id,
            Worker::new(
                id,
                Arc::new(identity),
                crypto_roster.clone(),
                datasets,
                [id as u8; 32],
            ),
        );
    }
    by_id.into_values().collect()
}

#[test]
fn sigkill_mid_job_resumes_from_checkpoint_with_the_same_model() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b", "bank-c"]);
    let mut coord = fed.coordinator("coordinator-1.log");
    let job = fed.launch(SPEC);
    let mut parts: Vec<Proc> = fed.names.iter().map(|n| fed.participant(n)).collect();

    // Let it train a while, then kill -9 in the middle of the job.
    let start = Instant::now();
    while fed.rounds_done(&job) < 8 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "job does not progress"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    coord.kill9();
    assert!(fed.rounds_done_offline_is_unavailable());

    // Restart: the job resumes from its last checkpoint; participants reconnect and rejoin.
    let coord2 = fed.coordinator("coordinator-2.log");
    fed.wait_finished(&job, Duration::from_secs(600));
    let resumed = fed.model(&job);
    for p in parts.iter_mut() {
        assert!(
            p.wait_exit(Duration::from_secs(60)).success(),
            "{}",
            p.log_text()
        );
    }
    let log = coord2.log_text();
    let step: u64 = log
        .lines()
        .find(|l| l.contains("restored job from checkpoint"))
        .and_then(|l| l.split("step=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("restart did not restore the job:\n{log}"));
    assert!(step > 0, "the job had made progress before the kill");

    // The exported model names the round that produced it: the job's last round in the audit
    // log. That must hold after yet another SIGKILL and restart, before any new round runs.
    let rounds = fed.audit_rounds(&job);
    let last = rounds
        .last()
        .expect("the job's rounds are in the audit log");
    assert_eq!(last.outcome, "ok", "{last:?}");
    let is_sha256 = |h: &str| {
        h.len() == 64
            && h.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    };
    assert!(
        is_sha256(&resumed.round_sha256),
        "{:?}",
        resumed.round_sha256
    );
    assert_eq!(resumed.round_sha256, last.aggregate_hash);
    let mut coord2 = coord2;
    coord2.kill9();
    let coord3 = fed.coordinator("coordinator-3.log");
    assert!(fed.status(&job).contains("finished"));
    let again = fed.model(&job);
    assert!(
        is_sha256(&again.round_sha256),
        "model exported after a restart lost its round hash: {:?}",
        again.round_sha256
    );
    assert_eq!(again.round_sha256, last.aggregate_hash);
    assert_eq!(again.model, resumed.model);
    assert_eq!(
        fed.audit_rounds(&job).len(),
        rounds.len(),
        "no round ran since"
    );
    drop(coord3);

    // Reference: the same checkpoint driven to the end without interruption, in memory.
    std::thread::sleep(Duration::from_millis(300));
    let store = Store::open(&fed.path("coordinator-state/coordinator.redb")).unwrap();
    let checkpoint = store
        .checkpoint(&job, step)
        .unwrap()
        .expect("checkpoint at the restored step");
    drop(store);
    let roster = Roster::load(&fed.path("roster.toml")).unwrap();
    let names = fed
        .names
        .iter()
        .map(|n| (roster.participant_id(n).unwrap(), n.clone()))
        .collect();
    let mut engine = Coordinator::new(roster.to_crypto_roster(), names, [1; 32]);
    engine.restore(Instant::now(), &job, &checkpoint).unwrap();
    let mut sim = MemoryFederation::new(engine, workers_for(&fed), vec![]);
    sim.join_all(&job);
    sim.run(&mut |_| {}).unwrap();
    let reference = sim.coordinator.plan(&job).unwrap().model().unwrap().clone();
    assert_eq!(
        resumed.model, reference,
        "resumed run differs from an uninterrupted run from step {step}"
    );
}

trait Offline {
    fn rounds_done_offline_is_unavailable(&self) -> bool;
}

impl Offline for TestFed {
    /// With the coordinator dead, operator commands fail with a clear error.
    fn rounds_done_offline_is_unavailable(&self) -> bool {
        let err = run_err(&[
            "job",
            "list",
            "--config",
            self.path("operator.toml").to_str().unwrap(),
        ]);
        err.contains("error")
    }
}

fn client(
    fed: &TestFed,
    dir: &std::path::Path,
    name: &str,
) -> tokio::task::JoinHandle<Result<FederationClient<tonic::transport::Channel>, String>> {
    let tls = client_tls_config(
        &TlsFiles {
            ca_cert: fed.path("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        },
        "localhost",
    )
    .unwrap();
    let url = format!("https://localhost:{}", fed.port);
    tokio::spawn(async move {
        let ch = tonic::transport::Endpoint::from_shared(url)
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(FederationClient::new(ch))
    })
}

#[test]
fn foreign_certificate_and_forged_identity_are_refused() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b", "bank-c", "bank-d"]);
    // A second federation: same names, different CA.
    let other = tempfile::tempdir().unwrap();
    run_ok(&[
        "keygen",
        "--out",
        other.path().to_str().unwrap(),
        "--institutions",
        "bank-a",
    ]);

    let _coord = fed.coordinator("coordinator.log");
    let job = fed.launch(
        &SPEC
            .replace("min_participants = 3", "min_participants = 4")
            .replace("rounds = 150", "rounds = 3")
            .replace("seed = 99", "seed = 99\nphase_timeout_ms = 2000"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // 1. A certificate from another CA: the TLS handshake fails, no RPC reaches the service.
    let refused = rt.block_on(async {
        match client(&fed, other.path(), "bank-a").await.unwrap() {
            Err(e) => e,
            Ok(mut c) => match c.join(pb::JoinRequest { job_ids: vec![] }).await {
                Err(s) => s.to_string(),
                Ok(_) => "joined".into(),
            },
        }
    });
    assert_ne!(refused, "joined", "a foreign certificate was admitted");

    // 2. bank-a's real certificate, but its advertised keys are signed with a forged identity key.
    let _b = fed.participant("bank-b");
    let _c = fed.participant("bank-c");
    let _d = fed.participant("bank-d");
    let status = rt.block_on(async {
        let mut c = client(&fed, fed.dir.path(), "bank-a")
            .await
            .unwrap()
            .unwrap();
        c.join(pb::JoinRequest {
            job_ids: vec![job.clone()],
        })
        .await
        .unwrap();
        let roster = Roster::load(&fed.path("roster.toml")).unwrap();
        let me = roster.participant_id("bank-a").unwrap();
        let forged = IdentityKey::from_seed([42; 32]).unwrap();
        let schema = Schema::from_toml_file(&fed.path("schema.toml")).unwrap();
        let t = load_csv(&fed.path("bank-a.csv"), &schema).unwrap();
        let (train, holdout) = t.split_holdout(0.2, 5);
        let datasets = [("data".to_string(), LocalData { train, holdout })]
            .into_iter()
            .collect();
        // The forger's own copy of the roster carries the forged key, so its client signs
        // happily; the coordinator checks against the real roster.
        let mut forged_roster = roster.to_crypto_roster();
        forged_roster.insert(me, forged.public_key());
        let mut w = Worker::new(
            me,
            Arc::new(forged),
            Arc::new(forged_roster),
            datasets,
            [9; 32],
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "no round started");
            let reply = c
                .poll(pb::PollRequest { max_wait_ms: 1000 })
                .await
                .unwrap()
                .into_inner();
            for m in reply.messages {
                w.handle_message(
                    fedsilo_task::job::ToParticipant::try_from(m.decode().unwrap()).unwrap(),
                )
                .unwrap();
            }
            if let Some(out) = w.poll_transmit() {
                return c.submit(pb::ToCoordinator::from(out)).await;
            }
        }
    });
    let err = status.expect_err("a forged identity signature was accepted");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(
        err.message().to_lowercase().contains("signature"),
        "{}",
        err.message()
    );
    // The three honest banks finish the job without bank-a.
    let s = fed.wait_finished(&job, Duration::from_secs(300));
    assert!(s.contains("finished"));
}
