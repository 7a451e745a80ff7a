//! The `Federation` service: participants join, poll and submit.

use std::time::{Duration, Instant};

use fedsilo_crypto::msg::RoundContext;
use fedsilo_proto::pb;
use fedsilo_proto::pb::federation_server::Federation;
use tonic::{Request, Response, Status};

use super::actor::Command;
use super::{check_job_id, engine_status, Handle, RpcResult, MAX_DECLINE_REASON_BYTES};
use crate::engine::EngineError;

/// Most job ids one `Join` may name.
const MAX_JOIN_JOBS: usize = 1024;

/// How long a `Submit` of a PSI message waits for room in the relay (see
/// [`super::mailbox::MAX_RELAYED_PSI`]) before it is refused and the sender told to retry.
const PSI_RELAY_WAIT: Duration = Duration::from_secs(1);

#[tonic::async_trait]
impl Federation for Handle {
    async fn join(&self, req: Request<pb::JoinRequest>) -> RpcResult<pb::JoinReply> {
        let from = self.participant(&req)?;
        let jobs = req.into_inner().job_ids;
        if jobs.len() > MAX_JOIN_JOBS {
            return Err(Status::invalid_argument(format!(
                "job_ids: {} jobs named, at most {MAX_JOIN_JOBS}",
                jobs.len()
            )));
        }
        for (i, job) in jobs.iter().enumerate() {
            check_job_id(&format!("job_ids[{i}]"), job)?;
        }
        let joined = self
            .ask(|reply| Command::Join { from, jobs, reply })
            .await?
            .map_err(engine_status)?;
        Ok(Response::new(pb::JoinReply {
            participant_id: Some(from),
            job_ids: joined,
            liveness_window_ms: Some(self.window_ms()),
        }))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> RpcResult<pb::HeartbeatReply> {
        let from = self.participant(&req)?;
        self.heartbeats.enter(from, Instant::now())?;
        // Alive, busy: counts for vertical sessions, not for rounds (engine::liveness).
        self.tx
            .send(Command::Heartbeat { from })
            .await
            .map_err(|_| Status::unavailable("coordinator is shutting down"))?;
        Ok(Response::new(pb::HeartbeatReply {
            liveness_window_ms: self.window_ms(),
        }))
    }

    async fn poll(&self, req: Request<pb::PollRequest>) -> RpcResult<pb::PollReply> {
        let from = self.participant(&req)?;
        let wait =
            Duration::from_millis(req.into_inner().max_wait_ms as u64).min(self.max_poll_wait);
        let has_mail = self.mail.has_mail(from).await;
        let _ticket = self.polls.enter(from, Instant::now(), has_mail)?;
        // Liveness: a participant that polls is present for the next round.
        let _ = self.tx.send(Command::Seen { from }).await;
        let notify = self.mail.notifier(from).await;
        let deadline = tokio::time::Instant::now() + wait;
        let mut messages = self.mail.take(from).await;
        // A wake-up can find nothing (a permit left by a push an earlier poll already
        // served): keep waiting until the deadline, so an empty reply means "nothing for
        // `wait`" and an honest node's empty polls stay rare.
        while messages.is_empty() {
            if tokio::time::timeout_at(deadline, notify.notified())
                .await
                .is_err()
            {
                break;
            }
            messages = self.mail.take(from).await;
        }
        if messages.is_empty() {
            self.polls.charge(from, Instant::now());
        }
        Ok(Response::new(pb::PollReply { messages }))
    }

    async fn submit(&self, req: Request<pb::ToCoordinator>) -> RpcResult<pb::SubmitReply> {
        let from = self.participant(&req)?;
        let mut msg =
            fedsilo_task::job::ToCoordinator::try_from(req.into_inner()).map_err(|e| {
                let detail = fedsilo_config::display_chain(&e);
                Status::invalid_argument(format!("malformed message: {detail}"))
            })?;
        use fedsilo_task::job::ToCoordinator as C;
        let ctx = match &mut msg {
            C::Psi(m) | C::VerticalRelay { msg: m, .. } => RoundContext {
                job_id: m.ctx().job_id.clone(),
                round: m.ctx().session,
            },
            C::PsiDone(r) => RoundContext {
                job_id: r.job_id.clone(),
                round: r.session,
            },
            C::PsiFailed {
                job_id,
                session,
                reason,
            } => {
                cut_reason(reason);
                RoundContext {
                    job_id: job_id.clone(),
                    round: *session,
                }
            }
            C::PsiLost { job_id, session } => RoundContext {
                job_id: job_id.clone(),
                round: *session,
            },
            C::VerticalProgress(p) => RoundContext {
                job_id: p.job_id.clone(),
                round: p.session,
            },
            C::VerticalDone(r) => RoundContext {
                job_id: r.job_id.clone(),
                round: r.session,
            },
            fedsilo_task::job::ToCoordinator::SecAgg(m) => m.ctx().clone(),
            fedsilo_task::job::ToCoordinator::Decline { ctx, reason } => {
                cut_reason(reason);
                ctx.clone()
            }
        };
        check_job_id("ctx.job_id", &ctx.job_id)?;
        // Back-pressure: a bounded number of one sender's relayed PSI messages wait
        // undelivered; the next one waits for the recipient to poll, or is refused.
        if let C::Psi(m) | C::VerticalRelay { msg: m, .. } = &msg {
            let key = super::mailbox::relay_key(m);
            if let Err(waiting) = self.mail.room_for_relay(&key, from, PSI_RELAY_WAIT).await {
                return Err(Status::resource_exhausted(format!(
                    "job '{}' session {}: {waiting} PSI messages of yours wait for the other \
                     party (at most {}); poll, then submit this one again",
                    ctx.job_id,
                    ctx.round,
                    super::mailbox::MAX_RELAYED_PSI
                )));
            }
        }
        self.ask(|reply| Command::Message { from, msg, reply })
            .await?
            .map_err(|e| match e {
                // The engine's own errors name the job and round; a protocol refusal does not.
                EngineError::Protocol(_) => {
                    let s = engine_status(e);
                    Status::new(
                        s.code(),
                        format!("job '{}' round {}: {}", ctx.job_id, ctx.round, s.message()),
                    )
                }
                e => engine_status(e),
            })?;
        Ok(Response::new(pb::SubmitReply {}))
    }
}

impl Handle {
    /// The liveness window in milliseconds (validated to fit: at most 24 h).
    fn window_ms(&self) -> u32 {
        u32::try_from(self.liveness_window.as_millis()).unwrap_or(u32::MAX)
    }
}

/// A participant's free-text reason, cut to [`MAX_DECLINE_REASON_BYTES`].
fn cut_reason(reason: &mut String) {
    if reason.len() > MAX_DECLINE_REASON_BYTES {
        let total = reason.len();
        let mut cut = MAX_DECLINE_REASON_BYTES;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push_str(&format!("… (cut from {total} bytes)"));
    }
}
