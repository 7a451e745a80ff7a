//! Per-participant message queues, drained by `Poll`, and the bound on relayed PSI
//! messages waiting in them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use fedsilo_crypto::msg::ParticipantId;
use fedsilo_crypto::psi::{PsiMsg, Role};
use fedsilo_proto::pb::{self, EncodedToParticipant};
use fedsilo_task::job::{RoundStart, ToParticipant};
use tokio::sync::{Mutex, Notify};

/// Most messages one `Poll` returns.
const MAX_POLL_MESSAGES: usize = 64;
/// The most bytes of messages one poll reply carries when it carries more than one (the
/// gRPC message limit less room for the reply's own framing).
const POLL_REPLY_BYTES: usize = fedsilo_proto::MAX_MESSAGE_BYTES - (64 << 10);

/// Most relayed PSI messages of one sender in one session that wait undelivered in the
/// recipient's queue. A `Submit` of one more waits for the recipient to poll (or is refused
/// at once, `RESOURCE_EXHAUSTED`, when the sender itself has mail waiting: it must poll
/// first, or the two parties would each wait for the other), and the sender submits it
/// again after polling. A chunk holds at most [`fedsilo_crypto::psi::MAX_CHUNK_LEN`]
/// entries, so the relay holds at most this many chunks per direction and session.
pub const MAX_RELAYED_PSI: usize = 16;

/// A relayed PSI message's (job, session, sender's role): what the bound counts by. In a
/// vertical session with several passive parties the messages of one direction are counted
/// together over the passive parties (the active party's to all of them; theirs to it).
pub(super) type RelayKey = (String, u64, Role);

pub(super) fn relay_key(m: &PsiMsg) -> RelayKey {
    (m.ctx().job_id.clone(), m.ctx().session, m.from())
}

/// One message waiting in a participant's queue, already encoded.
pub(super) struct Queued {
    job_id: String,
    /// `RoundStart` or a secure-aggregation request: meaningless once its round is over.
    round_scoped: bool,
    /// `RoundStart` or `JobEnd`: every earlier round of the job is over.
    supersedes: bool,
    /// `JobEnd`: stale once the job is resumed.
    ends_job: bool,
    /// A relayed PSI message: counted against [`MAX_RELAYED_PSI`] until taken or dropped.
    relay: Option<RelayKey>,
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
            T::VerticalStart(s) => (s.spec.job_id.clone(), true, true),
            T::Psi(m) | T::VerticalRelay { msg: m, .. } => (m.ctx().job_id.clone(), true, false),
        };
        let ends_job = matches!(m, T::JobEnd { .. });
        let relay = match &m {
            T::Psi(p) | T::VerticalRelay { msg: p, .. } => Some(relay_key(p)),
            _ => None,
        };
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
            relay,
            msg,
        }
    }
}

/// The queues and the count of relayed PSI messages in them, under one lock.
#[derive(Default)]
struct Queues {
    by: HashMap<ParticipantId, VecDeque<Queued>>,
    relayed: HashMap<RelayKey, usize>,
}

impl Queues {
    /// Uncounts messages leaving the queues (taken or dropped).
    fn uncount<'a>(&mut self, gone: impl Iterator<Item = &'a Queued>) {
        for q in gone {
            if let Some(key) = &q.relay {
                if let Some(n) = self.relayed.get_mut(key) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.relayed.remove(key);
                    }
                }
            }
        }
    }

    /// Keeps the messages of `p`'s queue for which `keep` holds; the others are uncounted.
    fn retain(&mut self, p: ParticipantId, keep: impl Fn(&Queued) -> bool) -> usize {
        let Some(queue) = self.by.get_mut(&p) else {
            return 0;
        };
        let (kept, gone): (VecDeque<Queued>, VecDeque<Queued>) =
            std::mem::take(queue).into_iter().partition(|q| keep(q));
        *queue = kept;
        self.uncount(gone.iter());
        gone.len()
    }
}

/// Messages waiting for each participant's next `Poll`.
#[derive(Default)]
pub(super) struct Mailboxes {
    queues: Mutex<Queues>,
    notify: Mutex<HashMap<ParticipantId, Arc<Notify>>>,
    /// Woken whenever messages leave a queue (room for relayed PSI messages).
    drained: Notify,
}

impl Mailboxes {
    pub(super) async fn notifier(&self, p: ParticipantId) -> Arc<Notify> {
        self.notify.lock().await.entry(p).or_default().clone()
    }
    pub(super) async fn push(&self, p: ParticipantId, m: Queued) {
        {
            let mut queues = self.queues.lock().await;
            if m.supersedes {
                let job = m.job_id.clone();
                let stale = queues.retain(p, |q| !(q.round_scoped && q.job_id == job));
                if stale > 0 {
                    tracing::debug!(participant = p, job = %m.job_id, stale,
                        "dropped undelivered messages of earlier rounds");
                    self.drained.notify_waiters();
                }
            }
            if let Some(key) = &m.relay {
                *queues.relayed.entry(key.clone()).or_default() += 1;
            }
            queues.by.entry(p).or_default().push_back(m);
        }
        self.notifier(p).await.notify_one();
    }
    /// A resumed job has not ended: drops its undelivered `JobEnd`s (a participant that was
    /// away would otherwise read one when it comes back and leave the job).
    pub(super) async fn drop_job_ends(&self, job_id: &str) {
        let mut queues = self.queues.lock().await;
        let ps: Vec<ParticipantId> = queues.by.keys().copied().collect();
        for p in ps {
            queues.retain(p, |q| !(q.ends_job && q.job_id == job_id));
        }
    }

    pub(super) async fn has_mail(&self, p: ParticipantId) -> bool {
        self.queues
            .lock()
            .await
            .by
            .get(&p)
            .is_some_and(|q| !q.is_empty())
    }
    pub(super) async fn take(&self, p: ParticipantId) -> Vec<EncodedToParticipant> {
        let mut queues = self.queues.lock().await;
        let Some(queue) = queues.by.get_mut(&p) else {
            return Vec::new();
        };
        // As many as fit one reply: at most MAX_POLL_MESSAGES, and (after the first) within
        // the gRPC message limit, so that a reply of several large relayed messages is not
        // refused by the transport after they left the queue.
        let mut n = 0;
        let mut bytes = 0usize;
        for q in queue.iter().take(MAX_POLL_MESSAGES) {
            // Each message's field tag and length prefix: at most 6 bytes.
            bytes = bytes.saturating_add(q.msg.len() + 6);
            if n > 0 && bytes > POLL_REPLY_BYTES {
                break;
            }
            n += 1;
        }
        let taken: Vec<Queued> = queue.drain(..n).collect();
        queues.uncount(taken.iter());
        drop(queues);
        if !taken.is_empty() {
            self.drained.notify_waiters();
        }
        taken.into_iter().map(|q| q.msg).collect()
    }

    /// Relayed PSI messages of `key` waiting undelivered.
    pub(super) async fn relayed(&self, key: &RelayKey) -> usize {
        self.queues
            .lock()
            .await
            .relayed
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until fewer than [`MAX_RELAYED_PSI`] messages of `key` wait undelivered, for
    /// at most `wait`, and not at all while `sender` has mail of its own waiting. Returns
    /// how many wait if there is still no room.
    pub(super) async fn room_for_relay(
        &self,
        key: &RelayKey,
        sender: ParticipantId,
        wait: std::time::Duration,
    ) -> Result<(), usize> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            let waiting = self.relayed(key).await;
            if waiting < MAX_RELAYED_PSI {
                return Ok(());
            }
            if self.has_mail(sender).await
                || tokio::time::timeout_at(deadline, drained).await.is_err()
            {
                return Err(waiting);
            }
        }
    }
}
