//! The node's heartbeat: "still here, busy computing".
//!
//! While the node's loop handles a batch of messages (a PSI or vertical protocol step, a
//! training step, submitting the answers) it does not poll, and a step can take minutes: a
//! bank encrypting 100,000 residuals with Paillier, a large key generation. The coordinator
//! would count the node away once its liveness window passed and pause the vertical session,
//! whose next session would repeat the same work. So while the loop holds a [`Busy`] guard,
//! a task of its own sends `Heartbeat` every quarter of the coordinator's window (told in
//! `JoinReply` and every `HeartbeatReply`).
//!
//! Honest by construction: the task sends only while the loop is inside a step (a guard is
//! held), it is a task of the node's own process (a process that died or froze, or lost the
//! network, sends nothing and is away once the window passes), and the coordinator counts a
//! heartbeat as *alive* for vertical sessions only, never as *present* for a
//! secure-aggregation round, which the node could not answer until its step is done. What it
//! does not catch: a loop that hangs forever inside a step keeps its node alive (the
//! coordinator cannot tell a hang from a long step; an operator sees the step count stop in
//! `job status`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fedsilo_proto::pb;
use fedsilo_proto::pb::federation_client::FederationClient;
use tonic::transport::Channel;

/// Heartbeat interval when the coordinator has not said its window (an older one): a
/// quarter of its default window of 60 s.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// Bounds of the interval (a quarter of the window, which the coordinator keeps ≥ 1 s).
const MIN_INTERVAL: Duration = Duration::from_millis(250);
const MAX_INTERVAL: Duration = DEFAULT_INTERVAL;

/// The interval for a coordinator liveness window of `window_ms`.
pub fn interval_for(window_ms: u32) -> Duration {
    (Duration::from_millis(u64::from(window_ms)) / 4).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

struct Shared {
    /// Guards held: the loop is busy while it is above 0.
    busy: AtomicUsize,
    interval_ms: AtomicU64,
    /// The coordinator answered `UNIMPLEMENTED`: no heartbeats until the next join.
    unsupported: AtomicBool,
    /// Heartbeats the coordinator took, ever.
    sent: AtomicU64,
    wake: tokio::sync::Notify,
}

/// The heartbeat task; stopped when dropped.
pub struct Heartbeat {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// The loop is busy while this is held.
pub struct Busy {
    shared: Arc<Shared>,
    since: std::time::Instant,
    /// `Shared::sent` when the guard was taken.
    sent: u64,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.shared.busy.fetch_sub(1, Ordering::SeqCst);
        let sent = self
            .shared
            .sent
            .load(Ordering::SeqCst)
            .saturating_sub(self.sent);
        if sent > 0 {
            tracing::info!(
                busy_s = self.since.elapsed().as_secs_f64(),
                heartbeats = sent,
                "long step done: heartbeats kept this node alive while it did not poll"
            );
        }
    }
}

impl Heartbeat {
    /// Spawns the task on the current runtime; it sends on `client` (a clone of the node's).
    pub fn spawn(client: FederationClient<Channel>) -> Heartbeat {
        let shared = Arc::new(Shared {
            busy: AtomicUsize::new(0),
            interval_ms: AtomicU64::new(DEFAULT_INTERVAL.as_millis() as u64),
            unsupported: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
        });
        let task = tokio::spawn(run(client, shared.clone()));
        Heartbeat { shared, task }
    }

    /// Marks the loop busy until the guard is dropped.
    pub fn busy(&self) -> Busy {
        self.shared.busy.fetch_add(1, Ordering::SeqCst);
        self.shared.wake.notify_one();
        Busy {
            shared: self.shared.clone(),
            since: std::time::Instant::now(),
            sent: self.shared.sent.load(Ordering::SeqCst),
        }
    }

    /// The node joined: the coordinator's window (absent from older coordinators), and
    /// heartbeats are tried again if an earlier coordinator did not take them.
    pub fn joined(&self, liveness_window_ms: Option<u32>) {
        self.shared.unsupported.store(false, Ordering::SeqCst);
        let interval = liveness_window_ms.map_or(DEFAULT_INTERVAL, interval_for);
        self.shared
            .interval_ms
            .store(interval.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(mut client: FederationClient<Channel>, shared: Arc<Shared>) {
    loop {
        // Sleep until the loop is busy.
        let notified = shared.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if shared.busy.load(Ordering::SeqCst) == 0 {
            notified.await;
            continue;
        }
        let interval = Duration::from_millis(shared.interval_ms.load(Ordering::SeqCst));
        tokio::time::sleep(interval).await;
        if shared.busy.load(Ordering::SeqCst) == 0 || shared.unsupported.load(Ordering::SeqCst) {
            continue;
        }
        let sent = tokio::time::timeout(
            interval.max(Duration::from_secs(1)),
            client.heartbeat(pb::HeartbeatRequest {}),
        )
        .await;
        match sent {
            Ok(Ok(reply)) => {
                shared.sent.fetch_add(1, Ordering::SeqCst);
                let ms = reply.into_inner().liveness_window_ms;
                shared
                    .interval_ms
                    .store(interval_for(ms).as_millis() as u64, Ordering::SeqCst);
                tracing::debug!(
                    interval_ms = interval.as_millis() as u64,
                    "heartbeat sent (busy)"
                );
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                tracing::warn!(error = %status,
                    "the coordinator takes no heartbeats (an older version): a step longer than its liveness window pauses a vertical job");
                shared.unsupported.store(true, Ordering::SeqCst);
            }
            Ok(Err(status)) => {
                tracing::warn!(error = %status, "heartbeat refused");
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = interval.max(Duration::from_secs(1)).as_millis() as u64,
                    "heartbeat not answered in time"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_a_quarter_of_the_window_within_bounds() {
        assert_eq!(interval_for(60_000), Duration::from_secs(15));
        assert_eq!(interval_for(4_000), Duration::from_secs(1));
        assert_eq!(interval_for(1_000), Duration::from_millis(250));
        assert_eq!(interval_for(0), Duration::from_millis(250));
        assert_eq!(interval_for(u32::MAX), Duration::from_secs(15));
    }
}
