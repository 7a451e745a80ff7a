//! Admission of `Poll`s per participant (rate of empty polls, polls waiting at once) and of
//! `Heartbeat`s (at most one per participant per spacing).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Admission of `Heartbeat`s: one per participant per `spacing` (an eighth of the liveness
/// window; an honest node sends one per quarter), so a certificate sending them in a loop
/// costs the engine one command per spacing.
pub(super) struct HeartbeatGate {
    spacing: Duration,
    last: std::sync::Mutex<HashMap<ParticipantId, Instant>>,
}

impl HeartbeatGate {
    pub(super) fn new(liveness_window: Duration) -> Self {
        HeartbeatGate {
            spacing: liveness_window / 8,
            last: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Admits `p`'s heartbeat at `now`, or refuses it (`RESOURCE_EXHAUSTED`) when its last
    /// admitted one is more recent than the spacing.
    pub(super) fn enter(&self, p: ParticipantId, now: Instant) -> Result<(), Status> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(&t) = last.get(&p) {
            let since = now.saturating_duration_since(t);
            if since < self.spacing {
                return Err(Status::resource_exhausted(format!(
                    "heartbeat {} ms after the last one: at most one per {} ms",
                    since.as_millis(),
                    self.spacing.as_millis()
                )));
            }
        }
        last.insert(p, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_admitted_once_per_spacing_per_participant() {
        let gate = HeartbeatGate::new(Duration::from_secs(8));
        let t0 = Instant::now();
        assert!(gate.enter(0, t0).is_ok());
        let refused = gate.enter(0, t0 + Duration::from_millis(999)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("at most one per 1000 ms"),
            "{refused}"
        );
        // Another participant is not held back by the first.
        assert!(gate.enter(1, t0 + Duration::from_millis(999)).is_ok());
        assert!(gate.enter(0, t0 + Duration::from_secs(1)).is_ok());
    }
}
