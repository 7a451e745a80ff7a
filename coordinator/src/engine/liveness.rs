//! Participant liveness: who is present, who is away and for how long, and what a job
//! held up by absent participants waits for (see the module docs of [`super`]).
//!
//! Two kinds of sighting. A poll, join or message makes a participant *present*: it answers
//! promptly, so secure-aggregation rounds invite it. A heartbeat
//! ([`Coordinator::handle_heartbeat`]), which a node sends on a task of its own while it
//! computes a long step and does not poll, makes it only *alive*: a vertical session, whose
//! parties wait for each other anyway, goes on (a bank encrypting 100,000 residuals for
//! minutes is not away), but no round is started on a participant that cannot answer it
//! until its step is done. A process that died, froze or lost the network sends neither,
//! and is away once the window passes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fedsilo_crypto::msg::ParticipantId;

use super::{Coordinator, Job, JobState};

/// What the engine knows of a participant's liveness.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Liveness {
    pub(super) last_seen: Option<Instant>,
    /// Its last heartbeat ("busy computing", not polling).
    pub(super) heard: Option<Instant>,
    /// When it last failed to answer in a round it was asked in.
    pub(super) dropped_at: Option<Instant>,
}

impl Liveness {
    /// Seen within `window` of `now`, and seen again since it last failed to answer.
    pub(super) fn present(&self, now: Instant, window: Duration) -> bool {
        match self.last_seen {
            Some(seen) => {
                now.saturating_duration_since(seen) <= window
                    && self.dropped_at.is_none_or(|d| seen > d)
            }
            None => false,
        }
    }

    /// Present, or heard (a heartbeat) within `window` of `now` and since it last failed to
    /// answer: alive, though perhaps too busy to answer a round.
    pub(super) fn alive(&self, now: Instant, window: Duration) -> bool {
        self.present(now, window)
            || self.heard.is_some_and(|h| {
                now.saturating_duration_since(h) <= window && self.dropped_at.is_none_or(|d| h > d)
            })
    }

    /// The latest sighting of either kind.
    pub(super) fn last_alive(&self) -> Option<Instant> {
        self.last_seen.max(self.heard)
    }
}

/// Alive ([`Liveness::alive`]): what a vertical session needs of its parties.
pub(super) fn is_alive(
    liveness: &BTreeMap<ParticipantId, Liveness>,
    window: Duration,
    p: ParticipantId,
    now: Instant,
) -> bool {
    liveness.get(&p).is_some_and(|l| l.alive(now, window))
}

pub(super) fn is_present(
    liveness: &BTreeMap<ParticipantId, Liveness>,
    window: Duration,
    p: ParticipantId,
    now: Instant,
) -> bool {
    liveness.get(&p).is_some_and(|l| l.present(now, window))
}

/// What an operator's dashboard shows of one roster participant.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ParticipantLiveness {
    pub name: String,
    /// Seen within the liveness window (and since it last failed to answer).
    pub present: bool,
    /// Not present, but heartbeating within the window: alive and computing a long step.
    pub busy: bool,
    /// Seconds since the coordinator last saw it (a poll, join, message or heartbeat);
    /// `None`: never seen by this process.
    pub last_seen_s: Option<f64>,
    /// Unfinished jobs it has joined that wait for it (it is away).
    pub awaited_by: Vec<String>,
}

/// "45 s", "2 min", "3 h".
pub(super) fn ago(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 2 * 3600 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3600)
    }
}

impl Coordinator {
    /// Records that `from` was seen; true when it was away and is present now.
    fn note_seen(&mut self, now: Instant, from: ParticipantId) -> bool {
        let window = self.liveness_window;
        let l = self.liveness.entry(from).or_default();
        let was = l.present(now, window);
        l.last_seen = Some(l.last_seen.map_or(now, |s| s.max(now)));
        !was && l.present(now, window)
    }

    /// `from` was seen; if it comes back from an absence, the idle jobs it belongs to are
    /// tried again.
    pub(super) fn seen(&mut self, now: Instant, from: ParticipantId) {
        self.tick(now);
        if !self.note_seen(now, from) {
            return;
        }
        let idle: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| {
                j.round.is_none() && !j.record.state.is_terminal() && j.joined.contains(&from)
            })
            .map(|(id, _)| id.clone())
            .collect();
        if !idle.is_empty() {
            tracing::info!(participant = %self.name(from), jobs = idle.len(), "participant is back");
        }
        for id in idle {
            self.maybe_start(now, &id);
        }
        self.restart_paused_vertical(now, from);
    }

    /// A vertical job paused while `from` was away starts a fresh session (if its other
    /// party is alive too).
    fn restart_paused_vertical(&mut self, now: Instant, from: ParticipantId) {
        let paused: Vec<String> = self
            .psi_jobs
            .iter()
            .filter(|(_, j)| !j.record.state.is_terminal() && j.joined.contains(&from))
            .map(|(id, _)| id.clone())
            .collect();
        for id in paused {
            self.maybe_start_psi(now, &id);
        }
    }

    /// The transport saw `from` (authenticated), e.g. a poll: it is alive. Call it on
    /// every poll; joins and messages count by themselves.
    pub fn handle_seen(&mut self, now: Instant, from: ParticipantId) {
        if self.roster.contains(from) {
            self.seen(now, from);
        }
    }

    /// `from` (authenticated) sent a heartbeat: it is alive and busy with a long step, so a
    /// vertical session it is in goes on; it is *not* made present for rounds (see the
    /// module docs). A vertical job paused while it was away starts a fresh session.
    pub fn handle_heartbeat(&mut self, now: Instant, from: ParticipantId) {
        if !self.roster.contains(from) {
            return;
        }
        self.tick(now);
        let window = self.liveness_window;
        let l = self.liveness.entry(from).or_default();
        let was = l.alive(now, window);
        l.heard = Some(l.heard.map_or(now, |h| h.max(now)));
        if !was && l.alive(now, window) {
            tracing::info!(participant = %self.name(from), "participant heard (busy) after an absence");
            self.restart_paused_vertical(now, from);
        }
    }

    /// How long a participant may go unseen before it is away.
    pub fn liveness_window(&self) -> Duration {
        self.liveness_window
    }

    /// Every roster participant's liveness as of `now`, in roster-name order.
    pub fn participants_liveness(&self, now: Instant) -> Vec<ParticipantLiveness> {
        let mut out: Vec<ParticipantLiveness> = self
            .names
            .iter()
            .map(|(&p, name)| {
                let present = is_present(&self.liveness, self.liveness_window, p, now);
                let busy = !present && is_alive(&self.liveness, self.liveness_window, p, now);
                let last_seen_s = self
                    .liveness
                    .get(&p)
                    .and_then(Liveness::last_alive)
                    .map(|s| now.saturating_duration_since(s).as_secs_f64());
                let awaited_by = if present {
                    Vec::new()
                } else {
                    self.jobs
                        .iter()
                        .filter(|(_, j)| !j.record.state.is_terminal() && j.joined.contains(&p))
                        .map(|(id, _)| id.clone())
                        .collect()
                };
                ParticipantLiveness {
                    name: name.clone(),
                    present,
                    busy,
                    last_seen_s,
                    awaited_by,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Joined participants of `job` that are not present, with how long ago each was seen.
    pub(super) fn away(&self, job: &Job, now: Instant) -> Vec<(ParticipantId, Option<Duration>)> {
        job.joined
            .iter()
            .filter(|&&p| !is_present(&self.liveness, self.liveness_window, p, now))
            .map(|&p| {
                let seen = self
                    .liveness
                    .get(&p)
                    .and_then(|l| l.last_seen)
                    .map(|s| now.saturating_duration_since(s));
                (p, seen)
            })
            .collect()
    }

    /// "bank-b (last seen 2 min ago), bank-c (never seen)".
    pub(super) fn away_text(&self, away: &[(ParticipantId, Option<Duration>)]) -> String {
        away.iter()
            .map(|(p, seen)| match seen {
                Some(d) => format!("{} (last seen {} ago)", self.name(*p), ago(*d)),
                None => format!("{} (never seen)", self.name(*p)),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What a waiting job waits for (and, with `patience`, when it gives up).
    pub(super) fn waiting_text(&self, job: &Job, now: Instant, patience: bool) -> String {
        let spec = &job.record.plan.spec();
        let away = self.away(job, now);
        let present = job.joined.len() - away.len();
        let mut text = if away.is_empty() {
            format!(
                "waiting for participants to join: {present} of the {} needed present",
                spec.min_participants
            )
        } else {
            format!(
                "waiting for {}: {present} of the {} needed present",
                self.away_text(&away),
                spec.min_participants
            )
        };
        if let Some(since) = job.held_up_since.filter(|_| patience) {
            let patience = Duration::from_millis(spec.absence_patience_ms);
            let left = patience.saturating_sub(now.saturating_duration_since(since));
            text.push_str(&format!("; gives up in {}", ago(left)));
        }
        text
    }
}

/// Too few participants present for the job's next round: it waits (and, once it has run,
/// its absence patience runs).
pub(super) fn wait_for_participants(job_id: &str, job: &mut Job, now: Instant) {
    if job.record.state != JobState::Waiting {
        tracing::info!(
            job = job_id,
            needed = job.record.plan.spec().min_participants,
            "waiting for participants"
        );
    }
    job.record.state = JobState::Waiting;
    // A job that has started is held up by absence from now on; one that has not run since
    // it was launched, restored or resumed waits for its participants as long as it takes.
    if job.started {
        job.held_up_since.get_or_insert(now);
    }
}

/// When a held-up job that has no round in flight gives up.
pub(super) fn patience_deadline(job: &Job) -> Option<Instant> {
    if job.round.is_some() || job.record.state.is_terminal() {
        return None;
    }
    let since = job.held_up_since?;
    since.checked_add(Duration::from_millis(
        job.record.plan.spec().absence_patience_ms,
    ))
}
