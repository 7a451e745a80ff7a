//! Queues and poll admission.

use super::mailbox::Queued;
use super::poll_gate::PollTicket;
use super::*;
use fedsilo_crypto::encoding::{FixedPoint, Modulus};
use fedsilo_crypto::msg::{ConsistencyRequest, RoundConfig, RoundContext, ServerMsg};
use fedsilo_task::job::{RoundStart, ToParticipant};

fn ctx(job: &str, round: u64) -> RoundContext {
    RoundContext {
        job_id: job.into(),
        round,
    }
}

fn start(job: &str, round: u64) -> ToParticipant {
    ToParticipant::RoundStart(Arc::new(RoundStart {
        config: RoundConfig {
            ctx: ctx(job, round),
            participants: vec![0, 1, 2],
            neighbours: 2,
            threshold: 2,
            vector_len: 3,
            modulus: Modulus::Pow64,
            graph_seed: [0; 32],
        },
        encoding: FixedPoint::choose(10.0, 3).unwrap(),
        instruction: fedsilo_task::Instruction::Scale {
            data: fedsilo_task::JobData {
                dataset: "d".into(),
                features: vec!["x".into()],
                labels: vec!["y".into()],
            },
            noise: None,
        },
        phase_timeout_ms: 1000,
    }))
}

fn request(job: &str, round: u64) -> ToParticipant {
    ToParticipant::SecAgg(ServerMsg::ConsistencyCheck(ConsistencyRequest {
        ctx: ctx(job, round),
        survivors: vec![0, 1],
    }))
}

fn end(job: &str, round: u64) -> ToParticipant {
    ToParticipant::RoundEnd {
        ctx: ctx(job, round),
        ok: true,
        detail: "ok".into(),
    }
}

/// (job, round, kind) of what a poll returns.
fn seen(msgs: Vec<pb::EncodedToParticipant>) -> Vec<(String, u64, &'static str)> {
    msgs.into_iter()
        .map(
            |m| match ToParticipant::try_from(m.decode().unwrap()).unwrap() {
                ToParticipant::RoundStart(s) => {
                    (s.config.ctx.job_id.clone(), s.config.ctx.round, "start")
                }
                ToParticipant::SecAgg(m) => (m.ctx().job_id.clone(), m.ctx().round, "request"),
                ToParticipant::RoundEnd { ctx, .. } => (ctx.job_id, ctx.round, "end"),
                ToParticipant::JobEnd { job_id, .. } => (job_id, 0, "job end"),
                ToParticipant::PsiStart(s) => (s.job_id, s.session, "psi start"),
                ToParticipant::Psi(m) => (m.ctx().job_id.clone(), m.ctx().session, "psi"),
                ToParticipant::VerticalRelay { msg, .. } => (
                    msg.ctx().job_id.clone(),
                    msg.ctx().session,
                    "vertical relay",
                ),
                ToParticipant::VerticalStart(s) => (s.spec.job_id, s.session, "vertical start"),
            },
        )
        .collect()
}

#[test]
fn empty_polls_are_rate_limited_and_waiting_polls_capped() {
    let limits = Limits {
        poll_burst: 3,
        poll_rate_per_sec: 2.0,
        max_concurrent_polls: 2,
        ..Limits::default()
    };
    let gate = Arc::new(PollGate::new(&limits));
    let t0 = Instant::now();
    let exhausted = |r: Result<PollTicket, Status>| match r {
        Err(s) => s.code() == tonic::Code::ResourceExhausted,
        Ok(_) => false,
    };
    // A burst of three empty polls, then refused...
    for _ in 0..3 {
        let t = gate.enter(1, t0, false).unwrap_or_else(|s| panic!("{s:?}"));
        gate.charge(1, t0);
        drop(t);
    }
    assert!(exhausted(gate.enter(1, t0, false)));
    // ...unless messages are waiting for it.
    assert!(gate.enter(1, t0, true).is_ok());
    // Another participant has a bucket of its own.
    assert!(gate.enter(2, t0, false).is_ok());
    // Two polls per second come back.
    assert!(exhausted(gate.enter(
        1,
        t0 + Duration::from_millis(200),
        false
    )));
    assert!(gate
        .enter(1, t0 + Duration::from_millis(500), false)
        .is_ok());
    // At most two polls of one participant wait at once; a finished one frees a place.
    let a = gate.enter(3, t0, false).unwrap_or_else(|s| panic!("{s:?}"));
    let _b = gate.enter(3, t0, false).unwrap_or_else(|s| panic!("{s:?}"));
    assert!(exhausted(gate.enter(3, t0, true)));
    drop(a);
    assert!(gate.enter(3, t0, false).is_ok());
}

#[tokio::test]
async fn a_queue_never_holds_two_rounds_of_one_job() {
    let mail = Mailboxes::default();
    for m in [
        start("j", 0),
        request("j", 0),
        start("k", 4),
        end("j", 0),
        start("j", 1),
        request("j", 1),
    ] {
        mail.push(7, Queued::new(m)).await;
    }
    // Round 0 of "j" is over: its start and request are gone; "k" is untouched.
    assert_eq!(
        seen(mail.take(7).await),
        [
            ("k".into(), 4, "start"),
            ("j".into(), 0, "end"),
            ("j".into(), 1, "start"),
            ("j".into(), 1, "request"),
        ]
    );
    mail.push(7, Queued::new(start("j", 2))).await;
    mail.push(7, Queued::new(request("j", 2))).await;
    mail.push(
        7,
        Queued::new(ToParticipant::JobEnd {
            job_id: "j".into(),
            state: fedsilo_task::job::JobState::Finished,
            detail: String::new(),
        }),
    )
    .await;
    assert_eq!(seen(mail.take(7).await), [("j".into(), 0, "job end")]);
    assert!(mail.take(8).await.is_empty());
}

#[tokio::test]
async fn a_resumed_job_drops_its_undelivered_job_end() {
    let mail = Mailboxes::default();
    let job_end = |job: &str| {
        Queued::new(ToParticipant::JobEnd {
            job_id: job.into(),
            state: fedsilo_task::job::JobState::Cancelled,
            detail: String::new(),
        })
    };
    mail.push(7, job_end("j")).await;
    mail.push(7, job_end("k")).await;
    mail.push(8, job_end("j")).await;
    mail.drop_job_ends("j").await;
    assert_eq!(seen(mail.take(7).await), [("k".into(), 0, "job end")]);
    assert!(mail.take(8).await.is_empty());
}

fn psi_chunk(job: &str, session: u64, from: fedsilo_crypto::psi::Role, seq: u64) -> ToParticipant {
    use fedsilo_crypto::psi::{Kind, PsiContext, PsiMsg, Sealed};
    ToParticipant::Psi(PsiMsg::Sealed(Sealed {
        ctx: PsiContext {
            job_id: job.into(),
            session,
        },
        from,
        seq,
        kind: Kind::Encodings,
        ciphertext: vec![0; 64],
    }))
}

#[tokio::test]
async fn the_psi_relay_holds_a_bounded_number_of_chunks_per_sender() {
    use super::mailbox::{relay_key, MAX_RELAYED_PSI};
    use fedsilo_crypto::psi::Role;
    let mail = Mailboxes::default();
    let key = |session, from| ("j".to_string(), session, from);
    let wait = Duration::from_millis(50);
    // The active party (7) streams to the passive party (8), which does not poll.
    for seq in 0..MAX_RELAYED_PSI as u64 {
        assert_eq!(
            mail.room_for_relay(&key(0, Role::Active), 7, wait).await,
            Ok(())
        );
        mail.push(8, Queued::new(psi_chunk("j", 0, Role::Active, seq)))
            .await;
    }
    // Full: the next one waits, then is refused with the count.
    assert_eq!(
        mail.room_for_relay(&key(0, Role::Active), 7, wait).await,
        Err(MAX_RELAYED_PSI)
    );
    // The other direction and other sessions have room of their own.
    assert_eq!(
        mail.room_for_relay(&key(0, Role::Passive), 8, wait).await,
        Ok(())
    );
    assert_eq!(
        mail.room_for_relay(&key(1, Role::Active), 7, wait).await,
        Ok(())
    );
    // A sender with mail of its own is refused at once (it must poll: no mutual wait),
    // however long it would be allowed to wait.
    mail.push(7, Queued::new(psi_chunk("j", 0, Role::Passive, 0)))
        .await;
    assert_eq!(
        mail.room_for_relay(&key(0, Role::Active), 7, Duration::from_secs(3600))
            .await,
        Err(MAX_RELAYED_PSI)
    );
    // A waiting sender gets room as soon as the recipient polls.
    let mail = Arc::new(mail);
    let waiter = {
        let mail = mail.clone();
        tokio::spawn(async move {
            // Its own mail taken first, so it waits instead of being sent to poll.
            mail.take(7).await;
            mail.room_for_relay(&key(0, Role::Active), 7, Duration::from_secs(30))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = seen(mail.take(8).await);
    assert_eq!(taken.len(), MAX_RELAYED_PSI);
    assert_eq!(waiter.await.unwrap(), Ok(()));
    assert_eq!(mail.relayed(&key(0, Role::Active)).await, 0);
    // A new session drops the old one's undelivered chunks, and they stop counting.
    for seq in 0..3 {
        mail.push(8, Queued::new(psi_chunk("j", 0, Role::Active, seq)))
            .await;
    }
    let m = psi_chunk("j", 0, Role::Active, 9);
    let ToParticipant::Psi(p) = &m else {
        unreachable!()
    };
    assert_eq!(mail.relayed(&relay_key(p)).await, 3);
    mail.push(
        8,
        Queued::new(ToParticipant::PsiStart(fedsilo_task::psi::PsiStart {
            job_id: "j".into(),
            session: 1,
            role: Role::Passive,
            peer: "bank".into(),
            dataset: "d".into(),
            id_column: String::new(),
            id_format: Default::default(),
            delivery: Default::default(),
            duplicates: Default::default(),
            chunk_len: 1000,
        })),
    )
    .await;
    assert_eq!(mail.relayed(&key(0, Role::Active)).await, 0);
    assert_eq!(seen(mail.take(8).await), [("j".into(), 1, "psi start")]);
}

/// A poll reply carries as many queued messages as fit one gRPC message (and always the
/// first): three 25 MB messages leave in two replies, nothing lost.
#[tokio::test]
async fn a_poll_reply_stays_within_the_message_limit() {
    let mail = Mailboxes::default();
    let big = |job: &str| {
        Queued::new(ToParticipant::JobEnd {
            job_id: job.into(),
            state: fedsilo_task::job::JobState::Finished,
            detail: "x".repeat(25 << 20),
        })
    };
    for job in ["a", "b", "c"] {
        mail.push(7, big(job)).await;
    }
    let first = mail.take(7).await;
    let size: usize = first.iter().map(|m| m.len()).sum();
    assert_eq!(first.len(), 2);
    assert!(size < fedsilo_proto::MAX_MESSAGE_BYTES, "{size}");
    assert_eq!(mail.take(7).await.len(), 1);
    assert!(mail.take(7).await.is_empty());
}
