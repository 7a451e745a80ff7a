//! Per-participant message queues, drained by `Poll`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use fedsilo_crypto::msg::ParticipantId;
use fedsilo_proto::pb::{self, EncodedToParticipant};
use fedsilo_task::job::{RoundStart, ToParticipant};
use tokio::sync::{Mutex, Notify};

/// Most messages one `Poll` returns.
const MAX_POLL_MESSAGES: usize = 64;

/// One message waiting in a participant's queue, already encoded.
pub(super) struct Queued {
    job_id: String,
    /// `RoundStart` or a secure-aggregation request: meaningless once its round is over.
    round_scoped: bool,
    /// `RoundStart` or `JobEnd`: every earlier round of the job is over.
    supersedes: bool,
    /// `JobEnd`: stale once the job is resumed.
    ends_job: bool,
    msg: EncodedToParticipant,
}

impl Queued {
    /// `m`, encoded on its own (see [`Encoder`] for a batch).
    #[cfg(test)]
    pub(super) fn new(m: ToParticipant) -> Self {
        Encoder::default().queued(m)
    }
}

/// Encodes the engine's messages for the queues. The engine gives every participant of a
/// round the same `Arc<RoundStart>`; it is converted and encoded once, and each queue holds
/// a clone of those bytes.
#[derive(Default)]
pub(super) struct Encoder {
    start: Option<(Arc<RoundStart>, EncodedToParticipant)>,
}

impl Encoder {
    pub(super) fn queued(&mut self, m: ToParticipant) -> Queued {
        use ToParticipant as T;
        let (job_id, round_scoped, supersedes) = match &m {
            T::RoundStart(s) => (s.config.ctx.job_id.clone(), true, true),
            T::SecAgg(m) => (m.ctx().job_id.clone(), true, false),
            T::RoundEnd { ctx, .. } => (ctx.job_id.clone(), false, false),
            T::JobEnd { job_id, .. } => (job_id.clone(), false, true),
            // A new session supersedes the job's earlier ones; its messages belong to it.
            T::PsiStart(s) => (s.job_id.clone(), true, true),
            T::Psi(m) => (m.ctx().job_id.clone(), true, false),
        };
        let ends_job = matches!(m, T::JobEnd { .. });
        let msg = match m {
            T::RoundStart(start) => match &self.start {
                Some((last, encoded)) if Arc::ptr_eq(last, &start) => encoded.clone(),
                _ => {
                    let wire = pb::ToParticipant {
                        body: Some(pb::to_participant::Body::RoundStart(pb::RoundStart::from(
                            &*start,
                        ))),
                    };
                    let encoded = EncodedToParticipant::new(&wire);
                    self.start = Some((start, encoded.clone()));
                    encoded
                }
            },
            m => EncodedToParticipant::from(m),
        };
        Queued {
            job_id,
            round_scoped,
            supersedes,
            ends_job,
            msg,
        }
    }
}

/// Messages waiting for each participant's next `Poll`.
#[derive(Default)]
pub(super) struct Mailboxes {
    queues: Mutex<HashMap<ParticipantId, VecDeque<Queued>>>,
    notify: Mutex<HashMap<ParticipantId, Arc<Notify>>>,
}

impl Mailboxes {
    pub(super) async fn notifier(&self, p: ParticipantId) -> Arc<Notify> {
        self.notify.lock().await.entry(p).or_default().clone()
    }
    pub(super) async fn push(&self, p: ParticipantId, m: Queued) {
        {
            let mut queues = self.queues.lock().await;
            let queue = queues.entry(p).or_default();
            if m.supersedes {
                let before = queue.len();
                queue.retain(|q| !(q.round_scoped && q.job_id == m.job_id));
                let stale = before - queue.len();
                if stale > 0 {
                    tracing::debug!(participant = p, job = %m.job_id, stale,
                        "dropped undelivered messages of earlier rounds");
                }
            }
            queue.push_back(m);
        }
        self.notifier(p).await.notify_one();
    }
    /// A resumed job has not ended: drops its undelivered `JobEnd`s (a participant that was
    /// away would otherwise read one when it comes back and leave the job).
    pub(super) async fn drop_job_ends(&self, job_id: &str) {
        let mut queues = self.queues.lock().await;
        for queue in queues.values_mut() {
            queue.retain(|q| !(q.ends_job && q.job_id == job_id));
        }
    }

    pub(super) async fn has_mail(&self, p: ParticipantId) -> bool {
        self.queues
            .lock()
            .await
            .get(&p)
            .is_some_and(|q| !q.is_empty())
    }
    pub(super) async fn take(&self, p: ParticipantId) -> Vec<EncodedToParticipant> {
        let mut q = self.queues.lock().await;
        let Some(queue) = q.get_mut(&p) else {
            return Vec::new();
        };
        let n = queue.len().min(MAX_POLL_MESSAGES);
        queue.drain(..n).map(|q| q.msg).collect()
    }
}
