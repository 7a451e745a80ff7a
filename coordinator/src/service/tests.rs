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
