//! Admission of `Poll`s per participant (rate of empty polls, polls waiting at once).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use fedsilo_crypto::msg::ParticipantId;
use tonic::Status;

use crate::net::Limits;

/// Admission of `Poll`s, per participant: a token bucket charged by polls that return no
/// message (capacity `poll_burst`, refilled at `poll_rate_per_sec`), and a cap on polls
/// waiting at once. A poll that finds messages waiting is always admitted.
pub(super) struct PollGate {
    rate: f64,
    burst: f64,
    max_waiting: u32,
    buckets: std::sync::Mutex<HashMap<ParticipantId, Bucket>>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    waiting: u32,
}

/// One admitted `Poll`; counts as waiting until dropped (also when the call is cancelled).
pub(super) struct PollTicket {
    gate: Arc<PollGate>,
    participant: ParticipantId,
}

impl PollGate {
    pub(super) fn new(limits: &Limits) -> Self {
        PollGate {
            rate: limits.poll_rate_per_sec,
            burst: f64::from(limits.poll_burst),
            max_waiting: limits.max_concurrent_polls,
            buckets: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn with_bucket<T>(
        &self,
        p: ParticipantId,
        now: Instant,
        f: impl FnOnce(&mut Bucket) -> T,
    ) -> T {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let b = buckets.entry(p).or_insert(Bucket {
            tokens: self.burst,
            refilled: now,
            waiting: 0,
        });
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.refilled = now;
        f(b)
    }

    pub(super) fn enter(
        self: &Arc<Self>,
        p: ParticipantId,
        now: Instant,
        has_mail: bool,
    ) -> Result<PollTicket, Status> {
        let (max, burst, rate) = (self.max_waiting, self.burst, self.rate);
        self.with_bucket(p, now, |b| {
            if b.waiting >= max {
                return Err(Status::resource_exhausted(format!(
                    "{} polls of this participant are already waiting (at most {max})",
                    b.waiting
                )));
            }
            if !has_mail && b.tokens < 1.0 {
                return Err(Status::resource_exhausted(format!(
                    "polling too fast: {burst} empty polls in a burst, then {rate} per second; \
                     wait for messages with max_wait_ms instead"
                )));
            }
            b.waiting += 1;
            Ok(())
        })?;
        Ok(PollTicket {
            gate: self.clone(),
            participant: p,
        })
    }

    /// A poll came back empty.
    pub(super) fn charge(&self, p: ParticipantId, now: Instant) {
        self.with_bucket(p, now, |b| b.tokens = (b.tokens - 1.0).max(0.0));
    }
}

impl Drop for PollTicket {
    fn drop(&mut self) {
        let mut buckets = self
            .gate
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(b) = buckets.get_mut(&self.participant) {
            b.waiting = b.waiting.saturating_sub(1);
        }
    }
}
