//! Messages bound to their round, end to end (issue 9, finding 2).
//!
//! Three banks train one job twice on the same coordinator, with the same spec and seed:
//! once cleanly (three `fedsilo participant join`s), once with bank-c driven by hand over its
//! real mTLS connection. In every round after the first, bank-c first submits its previous
//! round's ShareKeys, MaskedInput and UnmaskShares relabelled as the current round — exactly
//! what the old coordinator accepted in place of the genuine message — and only then the
//! genuine one. Each replay is refused with INVALID_ARGUMENT naming bank-c and the bad
//! signature; each genuine message is accepted; every round is logged "ok" with bank-c
//! among the survivors, and the exported model equals the clean run's bit for bit.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fedsilo_crypto::msg::{ClientMsg, ParticipantId, Phase, RoundContext};
use fedsilo_participant::data::{load_csv, Schema};
use fedsilo_participant::worker::{Worker, WorkerEvent};
use fedsilo_proto::pb;
use fedsilo_proto::pb::federation_client::FederationClient;
use fedsilo_proto::roster::Roster;
use fedsilo_task::job::{ToCoordinator, ToParticipant};
use fedsilo_task::LocalData;

/// Logistic regression: Scale, Moments, then three Train rounds of the same vector length
/// (so a relabelled masked input has the very shape of the genuine one), then Evaluate.
const SPEC: &str = r#"
dataset = "data"
task = "risk"
rounds = 3
min_participants = 3
eval_every = 3
seed = 11
phase_timeout_ms = 10000
[learning]
local_epochs = 1
learning_rate = 0.05
batch_size = 64
"#;

const BANKS: [&str; 3] = ["bank-a", "bank-b", "bank-c"];

fn worker(fed: &TestFed, name: &str) -> Worker {
    let roster = Roster::load(&fed.path("roster.toml")).unwrap();
    let me = roster.participant_id(name).unwrap();
    let identity =
        fedsilo_proto::pki::load_identity(&fed.path(&format!("{name}.identity"))).unwrap();
    let schema = Schema::from_toml_file(&fed.path("schema.toml")).unwrap();
    let t = load_csv(&fed.path(&format!("{name}.csv")), &schema).unwrap();
    // As `participant join` does with holdout_fraction = 0.2, holdout_seed = 5.
    let (train, holdout) = t.split_holdout(0.2, 5);
    let datasets = [("data".to_string(), LocalData { train, holdout })]
        .into_iter()
        .collect();
    Worker::new(
        me,
        Arc::new(identity),
        Arc::new(roster.to_crypto_roster()),
        datasets,
        [3; 32],
    )
}

fn relabelled(m: &ClientMsg, to: &RoundContext) -> ClientMsg {
    let mut m = m.clone();
    match &mut m {
        ClientMsg::AdvertiseKeys(x) => x.ctx = to.clone(),
        ClientMsg::ShareKeys(x) => x.ctx = to.clone(),
        ClientMsg::MaskedInput(x) => x.ctx = to.clone(),
        ClientMsg::ConsistencySignature(x) => x.ctx = to.clone(),
        ClientMsg::UnmaskShares(x) => x.ctx = to.clone(),
    }
    m
}

/// What bank-c's replays met.
#[derive(Debug, Default)]
struct Replays {
    /// Refused, by phase.
    refused: BTreeMap<&'static str, usize>,
    /// Masked-input replays of exactly the genuine message's size.
    same_shape: usize,
    /// One refusal's status message, for the log check.
    example: String,
}

/// bank-c: joins `job`, takes part honestly, but ahead of each ShareKeys, MaskedInput and
/// UnmaskShares of a round after the first submits its previous round's relabelled.
async fn replaying_bank_c(fed: &TestFed, job: &str) -> Replays {
    let ch = fed.channel("bank-c").await;
    let mut c = FederationClient::new(ch);
    c.join(pb::JoinRequest {
        job_ids: vec![job.into()],
    })
    .await
    .unwrap();
    let mut w = worker(fed, "bank-c");
    let me: ParticipantId = w.id();
    let mut previous: BTreeMap<Phase, ClientMsg> = BTreeMap::new();
    let mut seen = Replays::default();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        assert!(Instant::now() < deadline, "job {job} did not end: {seen:?}");
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
            if let ToCoordinator::SecAgg(m) = &out {
                let phase = m.phase();
                let replayable =
                    matches!(phase, Phase::ShareKeys | Phase::MaskedInput | Phase::Unmask);
                if let Some(old) = previous.get(&phase).filter(|_| replayable) {
                    assert!(old.ctx().round < m.ctx().round);
                    let replay = relabelled(old, m.ctx());
                    if phase == Phase::MaskedInput && replay.wire_size() == m.wire_size() {
                        seen.same_shape += 1;
                    }
                    let status = c
                        .submit(pb::ToCoordinator::from(ToCoordinator::SecAgg(replay)))
                        .await
                        .expect_err("a relabelled replay was accepted");
                    let want = format!("participant {me} misbehaved");
                    let sig = format!("the {} message's signature does not verify", phase.name());
                    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
                    for needle in [&format!("job '{job}' round {}", m.ctx().round), &want, &sig] {
                        assert!(
                            status.message().contains(needle.as_str()),
                            "'{}' does not say '{needle}'",
                            status.message()
                        );
                    }
                    *seen.refused.entry(phase.name()).or_default() += 1;
                    seen.example = status.message().to_string();
                }
                previous.insert(phase, m.clone());
            }
            // The genuine message, after the replay: accepted.
            c.submit(pb::ToCoordinator::from(out))
                .await
                .unwrap_or_else(|s| panic!("bank-c's genuine message was refused: {s}"));
        }
        while let Some(ev) = w.poll_event() {
            if let WorkerEvent::JobEnded { job_id, .. } = &ev {
                if job_id == job {
                    return seen;
                }
            }
        }
    }
}

#[test]
fn relabelled_replays_are_refused_naming_the_sender_and_the_model_is_the_clean_one() {
    let fed = TestFed::credit_by_income(&BANKS);
    let mut coord = fed.coordinator("coordinator.log");

    // The clean run.
    let clean = fed.launch(SPEC);
    let mut parts: Vec<Proc> = BANKS.iter().map(|n| fed.participant(n)).collect();
    fed.wait_finished(&clean, Duration::from_secs(300));
    for p in parts.iter_mut() {
        assert!(
            p.wait_exit(Duration::from_secs(60)).success(),
            "{}",
            p.log_text()
        );
    }
    let clean_model = fed.model(&clean);

    // The same job again, bank-c replaying.
    let replayed = fed.launch(SPEC);
    let mut parts: Vec<Proc> = BANKS[..2].iter().map(|n| fed.participant(n)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = rt.block_on(replaying_bank_c(&fed, &replayed));
    drop(rt);
    fed.wait_finished(&replayed, Duration::from_secs(300));
    for p in parts.iter_mut() {
        assert!(
            p.wait_exit(Duration::from_secs(60)).success(),
            "{}",
            p.log_text()
        );
    }
    eprintln!("replays: {seen:?}");

    // A replay in every round after the first, in each of the three phases; the masked
    // inputs of the training rounds had the genuine message's very shape.
    let rounds = fed.audit_rounds(&replayed);
    let later = rounds.len() - 1;
    assert!(later >= 4, "{rounds:?}");
    for phase in ["share_keys", "masked_input", "unmask"] {
        assert_eq!(seen.refused.get(phase), Some(&later), "{phase}: {seen:?}");
    }
    assert!(seen.same_shape >= 2, "{seen:?}");

    // Every round went on with bank-c's genuine messages.
    for r in &rounds {
        assert_eq!(r.outcome, "ok", "{r:?}");
        let mut s = r.survivors.clone();
        s.sort();
        assert_eq!(s, BANKS, "{r:?}");
    }

    // The coordinator logged each refusal with the sender.
    let log = coord.log_text();
    assert!(!log.contains("panicked"), "{log}");
    let me = Roster::load(&fed.path("roster.toml"))
        .unwrap()
        .participant_id("bank-c")
        .unwrap();
    let logged = log
        .lines()
        .filter(|l| {
            l.contains("message refused")
                && l.contains(&format!("participant {me} misbehaved"))
                && l.contains("signature does not verify")
        })
        .count();
    assert!(logged >= 3 * later, "{logged} refusals logged:\n{log}");
    assert!(!seen.example.is_empty());

    // The model is the clean run's: same aggregate in the last round, same parameters.
    let model = fed.model(&replayed);
    assert!(model.complete && clean_model.complete);
    assert_eq!(model.round_sha256, clean_model.round_sha256);
    assert_eq!(model.model_sha256, clean_model.model_sha256);
    assert_eq!(model.model, clean_model.model);
    assert_eq!(model.coefficients, clean_model.coefficients);
    assert_eq!(
        rounds.iter().map(|r| &r.aggregate_hash).collect::<Vec<_>>(),
        fed.audit_rounds(&clean)
            .iter()
            .map(|r| &r.aggregate_hash)
            .collect::<Vec<_>>(),
        "every round's aggregate equals the clean run's"
    );
    coord.kill9();
}
