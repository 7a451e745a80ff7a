//! The coordinator's job engine, sans-IO.
//!
//! [`Coordinator`] owns every job's [`Plan`] and the secure-aggregation [`Server`] of the step
//! in flight. Like the SecAgg state machines it drives, it performs no I/O and reads no
//! clock: the gRPC service and the in-memory simulator feed it the same inputs and drain the
//! same outputs.
//!
//! * getters: [`Coordinator::job_status`], [`Coordinator::list_jobs`], [`Coordinator::plan`]
//! * commands: [`Coordinator::launch`], [`Coordinator::restore`], [`Coordinator::cancel`],
//!   [`Coordinator::resume`]
//! * inputs: [`Coordinator::handle_join`], [`Coordinator::handle_message`],
//!   [`Coordinator::handle_seen`], [`Coordinator::handle_timeout`]
//! * outputs: [`Coordinator::poll_transmit`], [`Coordinator::poll_event`],
//!   [`Coordinator::poll_timeout`]
//!
//! After every input, drain `poll_transmit` (messages to participants), then `poll_event`
//! (checkpoints to persist, audit records, round summaries), then re-arm the timer from
//! `poll_timeout`. A [`Event::Checkpoint`] must be persisted before the messages that follow
//! it matter: the plan inside it is the whole job state, so a coordinator restarted from it
//! resumes at the next step with no model lost.
//!
//! # Liveness and absence
//!
//! The engine knows when each participant was last seen (every join, message and
//! [`Coordinator::handle_seen`], which the transport calls on every poll). A participant is
//! *present* when it was seen within the liveness window and, if it failed to answer in a
//! round, seen again since. Each round is started with the job's present participants (k and
//! t chosen for that set) as soon as at least `min_participants` are present. When fewer are
//! present, away participants are invited to make up `min_participants` only if the round
//! can complete without them (the threshold holds among the present ones on the round's
//! graph); otherwise the job waits. A round that fails because participants did not answer
//! (below the threshold, missing shares) does not use the job's failure budget
//! ([`MAX_ATTEMPTS`] counts the other failures): the job waits for them, and fails only when
//! it has been held up longer than its `absence_patience_ms` (counted once it has run a round
//! since it was launched, restored or resumed; before that it waits for its participants as
//! long as it takes). Ages in [`JobStatus::detail`] are relative to the engine's clock, the
//! latest `now` given to any input.
//!
//! # Plausibility
//!
//! A decoded sum is checked ([`Plan::check_sum`]: every element within survivors × the
//! step's declared range, counts non-negative integers that agree as the layout implies)
//! before it is absorbed; an implausible sum fails the round with [`RoundOutcome::Implausible`]
//! and never reaches the model. The plan absorbs into a copy, so a refused aggregate leaves
//! the job's state exactly as it was.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsilo_crypto::encoding::FixedPoint;
use fedsilo_crypto::error::RoundError;
use fedsilo_crypto::graph::recommended_degree;
use fedsilo_crypto::msg::{ParticipantId, Phase, Roster, RoundConfig, RoundContext};
use fedsilo_crypto::server::{Server, ServerEvent};
use fedsilo_ml::dp::RdpAccountant;
use fedsilo_task::job::{JobState as WireJobState, RoundStart, ToCoordinator, ToParticipant};
use fedsilo_task::Implausible;
use fedsilo_task::{JobSpec, Plan, Purpose, Step};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A failed step is retried with the participants still present this many times. Rounds that
/// fail only because participants did not answer are not counted (the job's
/// `absence_patience_ms` bounds those).
pub const MAX_ATTEMPTS: u32 = 3;

/// A participant not seen for this long is away (not invited to the next round) until it is
/// seen again. Participant nodes poll every few seconds; a long poll lasts at most 25 s.
pub const DEFAULT_LIVENESS_WINDOW: Duration = Duration::from_secs(60);

/// Errors returned to the caller of an input; none of them stops other jobs.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown job '{0}'")]
    UnknownJob(String),
    #[error("participant {0} is not in the roster")]
    UnknownParticipant(ParticipantId),
    #[error("job '{job}' has no round in progress for round {round}")]
    NoSuchRound { job: String, round: u64 },
    #[error("invalid job: {0}")]
    InvalidJob(String),
    #[error("job '{0}' already exists")]
    DuplicateJob(String),
    #[error(transparent)]
    Protocol(#[from] fedsilo_crypto::error::ProtocolError),
    #[error("checkpoint for job '{job}' is unreadable: {reason}")]
    BadCheckpoint { job: String, reason: String },
    /// An operator command that does not apply to the job's current state.
    #[error("job '{job}' is {state}: only {applies} jobs can be {action}")]
    WrongState {
        job: String,
        state: WireJobState,
        action: &'static str,
        applies: &'static str,
    },
}

/// Lifecycle of a job, as reported to operators (and checkpointed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Fewer than `min_participants` present to start the next round.
    Waiting,
    Running,
    Finished,
    Failed(String),
    /// Stopped by an operator (who and why); [`Coordinator::resume`] brings it back.
    Cancelled(String),
}

impl JobState {
    /// The state and its reason in one line, for logs.
    pub fn label(&self) -> String {
        match self.reason() {
            Some(why) => format!("{}: {why}", self.kind()),
            None => self.kind().to_string(),
        }
    }

    /// The state as the wire carries it (its reason goes in `detail`).
    pub fn kind(&self) -> WireJobState {
        match self {
            JobState::Waiting => WireJobState::Waiting,
            JobState::Running => WireJobState::Running,
            JobState::Finished => WireJobState::Finished,
            JobState::Failed(_) => WireJobState::Failed,
            JobState::Cancelled(_) => WireJobState::Cancelled,
        }
    }

    /// Why the job failed or was cancelled.
    pub fn reason(&self) -> Option<&str> {
        match self {
            JobState::Failed(why) | JobState::Cancelled(why) => Some(why),
            _ => None,
        }
    }

    /// Finished, failed or cancelled: no round starts unless the job is resumed.
    pub fn is_terminal(&self) -> bool {
        self.kind().is_terminal()
    }
}

/// How a round ended, typed (its text, [`RoundSummary::outcome`], is what the audit log
/// records: `"ok"` or the reason).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundOutcome {
    /// The aggregate passed the plausibility check and was absorbed.
    Ok,
    /// Secure aggregation could not complete because `absent` did not answer. The job
    /// waits for them; no attempt of its failure budget is used.
    Absent { absent: Vec<String>, error: String },
    /// Secure aggregation failed for another reason.
    SecAgg { error: String },
    /// The aggregate could not be decoded.
    Decode { error: String },
    /// The decoded aggregate cannot be an honest sum; it was not applied.
    Implausible(Implausible),
    /// The plan refused the aggregate; nothing was applied.
    Absorb { error: String },
    /// The job was cancelled while the round was in flight.
    Cancelled { reason: String },
}

impl RoundOutcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, RoundOutcome::Ok)
    }

    /// A failure caused by absent participants (does not use the failure budget).
    pub fn is_absence(&self) -> bool {
        matches!(self, RoundOutcome::Absent { .. })
    }
}

impl std::fmt::Display for RoundOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoundOutcome::Ok => f.write_str("ok"),
            RoundOutcome::Absent { absent, error } => {
                write!(f, "{error} (no answer from {})", absent.join(", "))
            }
            RoundOutcome::SecAgg { error } => f.write_str(error),
            RoundOutcome::Decode { error } => write!(f, "decoding the aggregate: {error}"),
            RoundOutcome::Implausible(why) => {
                write!(f, "implausible aggregate, not applied: {why}")
            }
            RoundOutcome::Absorb { error } => write!(f, "absorbing the aggregate: {error}"),
            RoundOutcome::Cancelled { reason } => write!(f, "abandoned: {reason}"),
        }
    }
}

/// What an operator sees of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job_id: String,
    pub state: JobState,
    pub step: u64,
    pub rounds_done: u64,
    pub total_rounds: u64,
    pub participants: Vec<String>,
    /// Latest hold-out metrics per label (AUC, KS, log-loss, lift), as JSON.
    pub metrics_json: String,
    pub epsilon: f64,
    pub epsilon_budget: f64,
    pub detail: String,
}

/// One finished (or failed) secure-aggregation round, for reports and the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    pub job_id: String,
    pub step: u64,
    pub secagg_round: u64,
    pub purpose: Purpose,
    pub participants: Vec<String>,
    pub survivors: Vec<String>,
    pub dropped: Vec<(String, String)>,
    pub phase_ms: Vec<(String, f64)>,
    pub bytes_sent: BTreeMap<String, u64>,
    pub bytes_received: BTreeMap<String, u64>,
    /// `"ok"` or why the round failed: the text of [`RoundSummary::result`].
    pub outcome: String,
    pub result: RoundOutcome,
    /// SHA-256 of the decoded aggregate (hex), empty on failure.
    pub aggregate_hash: String,
    /// SHA-256 of the plan (model) after absorbing the aggregate (hex).
    pub model_hash: String,
    pub encoding: String,
    pub neighbours: usize,
    pub threshold: usize,
    pub epsilon: Option<f64>,
}

/// Outputs besides messages.
#[derive(Clone, Debug)]
pub enum Event {
    /// Persist before going on: the whole job state after `step` completed.
    Checkpoint {
        job_id: String,
        step: u64,
        state: Vec<u8>,
    },
    Round(Box<RoundSummary>),
    JobFinished {
        job_id: String,
        state: JobState,
    },
    /// A message was refused; the round goes on where the threshold allows.
    Refused {
        from: ParticipantId,
        reason: String,
    },
}

/// The durable part of a job: what a checkpoint holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    pub plan: Plan,
    pub state: JobState,
    pub secagg_rounds: u64,
    pub epsilon: f64,
}

struct ActiveRound {
    server: Server,
    step: Step,
    encoding: FixedPoint,
    config: RoundConfig,
    phase: Option<Phase>,
    phase_started: Instant,
    phase_ms: Vec<(String, f64)>,
    bytes_sent: BTreeMap<ParticipantId, u64>,
    bytes_received: BTreeMap<ParticipantId, u64>,
    declined: BTreeMap<ParticipantId, String>,
    /// Every (sender, phase) of a message received in this round, accepted or not.
    answered: BTreeSet<(ParticipantId, Phase)>,
    /// Senders of messages the server refused (misbehaviour, not absence).
    refused: BTreeSet<ParticipantId>,
    /// Asked and never answered (not declined, not refused), with the phase.
    absent: BTreeMap<ParticipantId, Phase>,
    /// The first phase in which anyone was dropped.
    first_drop: Option<Phase>,
}

struct Job {
    record: JobRecord,
    joined: BTreeSet<ParticipantId>,
    round: Option<ActiveRound>,
    /// Consecutive failed rounds that count against [`MAX_ATTEMPTS`].
    attempts: u32,
    /// Since when the job has been held up by absent participants (waiting, or rounds
    /// failing for absence); `None` while it makes progress or has not started.
    held_up_since: Option<Instant>,
    /// A round was started since the job was launched, restored or resumed: from then on a
    /// wait for absent participants is bounded by the job's patience.
    started: bool,
}

/// What the engine knows of a participant's liveness.
#[derive(Clone, Copy, Debug, Default)]
struct Liveness {
    last_seen: Option<Instant>,
    /// When it last failed to answer in a round it was asked in.
    dropped_at: Option<Instant>,
}

impl Liveness {
    /// Seen within `window` of `now`, and seen again since it last failed to answer.
    fn present(&self, now: Instant, window: Duration) -> bool {
        match self.last_seen {
            Some(seen) => {
                now.saturating_duration_since(seen) <= window
                    && self.dropped_at.is_none_or(|d| seen > d)
            }
            None => false,
        }
    }
}

fn is_present(
    liveness: &BTreeMap<ParticipantId, Liveness>,
    window: Duration,
    p: ParticipantId,
    now: Instant,
) -> bool {
    liveness.get(&p).is_some_and(|l| l.present(now, window))
}

/// "45 s", "2 min", "3 h".
fn ago(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 2 * 3600 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3600)
    }
}

/// The sans-IO coordinator. See the module docs for the calling order.
pub struct Coordinator {
    roster: Arc<Roster>,
    names: BTreeMap<ParticipantId, String>,
    jobs: BTreeMap<String, Job>,
    outbox: VecDeque<(ParticipantId, ToParticipant)>,
    events: VecDeque<Event>,
    rng: rand_chacha::ChaCha20Rng,
    liveness: BTreeMap<ParticipantId, Liveness>,
    liveness_window: Duration,
    /// The latest `now` given to any input (status ages are relative to it).
    clock: Option<Instant>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("participants", &self.names.len())
            .field("jobs", &self.jobs.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn hash_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Coordinator {
    /// `roster`: participant id → Ed25519 identity key; `names`: id → institution name.
    /// `seed` drives graph seeds and job ids (from the OS in production, fixed in simulations).
    pub fn new(roster: Roster, names: BTreeMap<ParticipantId, String>, seed: [u8; 32]) -> Self {
        Coordinator {
            roster: Arc::new(roster),
            names,
            jobs: BTreeMap::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            rng: rand_chacha::ChaCha20Rng::from_seed(seed),
            liveness: BTreeMap::new(),
            liveness_window: DEFAULT_LIVENESS_WINDOW,
            clock: None,
        }
    }

    /// How long a participant may go unseen before it counts as away
    /// ([`DEFAULT_LIVENESS_WINDOW`] unless set).
    pub fn set_liveness_window(&mut self, window: Duration) {
        self.liveness_window = window;
    }

    fn tick(&mut self, now: Instant) {
        self.clock = Some(self.clock.map_or(now, |c| c.max(now)));
    }

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
    fn seen(&mut self, now: Instant, from: ParticipantId) {
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
    }

    /// The transport saw `from` (authenticated), e.g. a poll: it is alive. Call it on
    /// every poll; joins and messages count by themselves.
    pub fn handle_seen(&mut self, now: Instant, from: ParticipantId) {
        if self.roster.contains(from) {
            self.seen(now, from);
        }
    }

    /// Joined participants of `job` that are not present, with how long ago each was seen.
    fn away(&self, job: &Job, now: Instant) -> Vec<(ParticipantId, Option<Duration>)> {
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
    fn away_text(&self, away: &[(ParticipantId, Option<Duration>)]) -> String {
        away.iter()
            .map(|(p, seen)| match seen {
                Some(d) => format!("{} (last seen {} ago)", self.name(*p), ago(*d)),
                None => format!("{} (never seen)", self.name(*p)),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What a waiting job waits for (and, with `patience`, when it gives up).
    fn waiting_text(&self, job: &Job, now: Instant, patience: bool) -> String {
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

    fn name(&self, id: ParticipantId) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("participant-{id}"))
    }

    /// Launches a job; `features` and `labels` are the resolved column lists.
    pub fn launch(
        &mut self,
        now: Instant,
        mut spec: JobSpec,
        features: Vec<String>,
        labels: Vec<String>,
    ) -> Result<String, EngineError> {
        self.tick(now);
        if spec.job_id.is_empty() {
            spec.job_id = format!("job-{:08x}", self.rng.random::<u32>());
        }
        if spec.job_id.len() > 128 || spec.job_id.chars().any(|c| c.is_control()) {
            return Err(EngineError::InvalidJob(
                "job_id: at most 128 printable characters".into(),
            ));
        }
        if self.jobs.contains_key(&spec.job_id) {
            return Err(EngineError::DuplicateJob(spec.job_id));
        }
        let id = spec.job_id.clone();
        let plan = Plan::new(spec, features, labels)
            .map_err(|e| EngineError::InvalidJob(e.to_string()))?;
        let record = JobRecord {
            plan,
            state: JobState::Waiting,
            secagg_rounds: 0,
            epsilon: 0.0,
        };
        self.insert_job(now, record);
        self.checkpoint(&id);
        Ok(id)
    }

    /// Re-creates a job from its last checkpoint (after a restart).
    pub fn restore(&mut self, now: Instant, job_id: &str, state: &[u8]) -> Result<(), EngineError> {
        self.tick(now);
        let mut record: JobRecord =
            serde_json::from_slice(state).map_err(|e| EngineError::BadCheckpoint {
                job: job_id.to_string(),
                reason: e.to_string(),
            })?;
        if record.state == JobState::Running {
            record.state = JobState::Waiting;
        }
        // The round that was in flight when the coordinator stopped may have used the next
        // round number; never reuse it, so no message of that round can be mistaken for one
        // of the resumed round.
        record.secagg_rounds += 1;
        self.insert_job(now, record);
        Ok(())
    }

    fn insert_job(&mut self, now: Instant, record: JobRecord) {
        let id = record.plan.spec().job_id.clone();
        self.jobs.insert(
            id.clone(),
            Job {
                record,
                joined: BTreeSet::new(),
                round: None,
                attempts: 0,
                held_up_since: None,
                started: false,
            },
        );
        self.maybe_start(now, &id);
    }

    /// Stops a job that has not ended: its round in flight is abandoned, every participant
    /// gets `JobEnd` (cancelled), and the state is checkpointed. `reason` (who and why) is
    /// the job's detail.
    pub fn cancel(
        &mut self,
        now: Instant,
        job_id: &str,
        reason: String,
    ) -> Result<(), EngineError> {
        self.tick(now);
        let job = self
            .jobs
            .get(job_id)
            .ok_or_else(|| EngineError::UnknownJob(job_id.to_string()))?;
        if job.record.state.is_terminal() {
            return Err(EngineError::WrongState {
                job: job_id.to_string(),
                state: job.record.state.kind(),
                action: "cancelled",
                applies: "waiting or running",
            });
        }
        let abandoned = self.jobs.get_mut(job_id).and_then(|j| j.round.take());
        if let Some(round) = &abandoned {
            let mut summary = self.summary_of(job_id, round);
            summary.result = RoundOutcome::Cancelled {
                reason: reason.clone(),
            };
            summary.outcome = summary.result.to_string();
            self.events.push_back(Event::Round(Box::new(summary)));
        }
        tracing::warn!(job = job_id, %reason, "job cancelled");
        let state = JobState::Cancelled(reason.clone());
        self.end_job(job_id, state, reason, abandoned.as_ref());
        Ok(())
    }

    /// A failed or cancelled job goes back to waiting from its last checkpoint (the plan is
    /// only ever changed by a completed round, so the job's state is that checkpoint), with
    /// its failure budget and absence patience reset; the change is checkpointed.
    pub fn resume(&mut self, now: Instant, job_id: &str) -> Result<(), EngineError> {
        self.tick(now);
        let job = self
            .jobs
            .get_mut(job_id)
            .ok_or_else(|| EngineError::UnknownJob(job_id.to_string()))?;
        if !matches!(
            job.record.state,
            JobState::Failed(_) | JobState::Cancelled(_)
        ) {
            return Err(EngineError::WrongState {
                job: job_id.to_string(),
                state: job.record.state.kind(),
                action: "resumed",
                applies: "failed or cancelled",
            });
        }
        tracing::info!(job = job_id, from = %job.record.state.label(), "job resumed");
        job.record.state = JobState::Waiting;
        job.attempts = 0;
        job.held_up_since = None;
        job.started = false;
        self.checkpoint(job_id);
        self.maybe_start(now, job_id);
        Ok(())
    }

    /// A participant (authenticated by the transport) joins jobs; empty = every open job.
    /// Returns the jobs it is now part of.
    pub fn handle_join(
        &mut self,
        now: Instant,
        from: ParticipantId,
        job_ids: &[String],
    ) -> Result<Vec<String>, EngineError> {
        if !self.roster.contains(from) {
            return Err(EngineError::UnknownParticipant(from));
        }
        self.seen(now, from);
        let wanted: Vec<String> = if job_ids.is_empty() {
            self.jobs
                .iter()
                .filter(|(_, j)| !j.record.state.is_terminal())
                .map(|(id, _)| id.clone())
                .collect()
        } else {
            for id in job_ids {
                if !self.jobs.contains_key(id) {
                    return Err(EngineError::UnknownJob(id.clone()));
                }
            }
            job_ids.to_vec()
        };
        for id in &wanted {
            if let Some(job) = self.jobs.get_mut(id) {
                job.joined.insert(from);
            }
            self.maybe_start(now, id);
        }
        Ok(wanted)
    }

    /// The transport lost a participant (connection closed). It stays in the round in
    /// progress (the phase timeout decides) but is not invited to the next one.
    pub fn handle_leave(&mut self, from: ParticipantId) {
        for job in self.jobs.values_mut() {
            job.joined.remove(&from);
        }
    }

    /// A message from an authenticated participant.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: ParticipantId,
        msg: ToCoordinator,
    ) -> Result<(), EngineError> {
        if !self.roster.contains(from) {
            return Err(EngineError::UnknownParticipant(from));
        }
        self.seen(now, from);
        let ctx = match &msg {
            ToCoordinator::SecAgg(m) => m.ctx().clone(),
            ToCoordinator::Decline { ctx, .. } => ctx.clone(),
        };
        let job = self
            .jobs
            .get_mut(&ctx.job_id)
            .ok_or_else(|| EngineError::UnknownJob(ctx.job_id.clone()))?;
        let round = match job.round.as_mut() {
            Some(r) if r.config.ctx.round == ctx.round => r,
            _ => {
                return Err(EngineError::NoSuchRound {
                    job: ctx.job_id.clone(),
                    round: ctx.round,
                })
            }
        };
        let result = match msg {
            ToCoordinator::SecAgg(m) => {
                *round.bytes_sent.entry(from).or_default() += m.wire_size() as u64;
                round.answered.insert((from, m.phase()));
                round
                    .server
                    .handle_message(now, from, m)
                    .map_err(EngineError::from)
            }
            ToCoordinator::Decline { reason, .. } => {
                tracing::warn!(job = %ctx.job_id, participant = from, %reason, "participant declined the step");
                round.declined.insert(from, reason);
                Ok(())
            }
        };
        self.pump(now, &ctx.job_id);
        result
    }

    /// Drives phase deadlines and the absence patience of waiting jobs; call when
    /// `poll_timeout` has passed (calling it earlier only advances the engine's clock).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        let ids: Vec<String> = self.jobs.keys().cloned().collect();
        for id in ids {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            match job.round.as_mut() {
                Some(r) => {
                    if r.server.poll_timeout().is_some_and(|t| t <= now) {
                        r.server.handle_timeout(now);
                    }
                    self.pump(now, &id);
                }
                None => {
                    if patience_deadline(job).is_some_and(|t| t <= now) {
                        self.maybe_start(now, &id);
                    }
                }
            }
        }
    }

    /// The earliest deadline: of a round in flight, or of a waiting job's patience.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.jobs
            .values()
            .filter_map(|j| match &j.round {
                Some(r) => r.server.poll_timeout(),
                None => patience_deadline(j),
            })
            .min()
    }

    pub fn poll_transmit(&mut self) -> Option<(ParticipantId, ToParticipant)> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn plan(&self, job_id: &str) -> Option<&Plan> {
        self.jobs.get(job_id).map(|j| &j.record.plan)
    }

    pub fn list_jobs(&self) -> Vec<JobStatus> {
        self.jobs
            .keys()
            .filter_map(|id| self.job_status(id))
            .collect()
    }

    /// Ages in `detail` ("last seen 2 min ago") are relative to the engine's clock.
    pub fn job_status(&self, job_id: &str) -> Option<JobStatus> {
        let job = self.jobs.get(job_id)?;
        let plan = &job.record.plan;
        let now = self.clock;
        let metrics_json = plan
            .last_eval()
            .map(|e| {
                let per: Vec<_> = plan
                    .data()
                    .labels
                    .iter()
                    .zip(&e.per_label)
                    .map(|(l, (m, _))| serde_json::json!({ "label": l, "round": e.round, "metrics": m }))
                    .collect();
                serde_json::Value::Array(per).to_string()
            })
            .unwrap_or_else(|| "[]".into());
        Some(JobStatus {
            job_id: job_id.to_string(),
            state: job.record.state.clone(),
            step: plan.step_index(),
            rounds_done: plan.rounds_done(),
            total_rounds: plan.spec().rounds,
            participants: job.joined.iter().map(|&p| self.name(p)).collect(),
            metrics_json,
            epsilon: job.record.epsilon,
            epsilon_budget: plan
                .spec()
                .dp
                .as_ref()
                .and_then(|d| d.epsilon_budget)
                .unwrap_or(0.0),
            detail: match (&job.record.state, now) {
                (JobState::Failed(why) | JobState::Cancelled(why), _) => why.clone(),
                (JobState::Waiting, Some(now)) => self.waiting_text(job, now, true),
                (JobState::Running, Some(now)) => {
                    let away = self.away(job, now);
                    if away.is_empty() {
                        String::new()
                    } else {
                        format!("running without {}", self.away_text(&away))
                    }
                }
                _ => plan.stopped_early().unwrap_or_default().to_string(),
            },
        })
    }

    fn checkpoint(&mut self, job_id: &str) {
        if let Some(job) = self.jobs.get(job_id) {
            match serde_json::to_vec(&job.record) {
                Ok(state) => self.events.push_back(Event::Checkpoint {
                    job_id: job_id.to_string(),
                    step: job.record.plan.step_index(),
                    state,
                }),
                Err(e) => tracing::error!(job = job_id, error = %e, "cannot serialise checkpoint"),
            }
        }
    }

    /// Starts the job's next step if it is idle and enough participants are present.
    fn maybe_start(&mut self, now: Instant, job_id: &str) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        if job.round.is_some() || job.record.state.is_terminal() {
            return;
        }
        // Differential privacy: stop cleanly before the budget would be exceeded.
        if let Some(dp) = job.record.plan.spec().dp.clone() {
            if let (Some(budget), Some(step)) = (dp.epsilon_budget, job.record.plan.next_step()) {
                if step.instruction.purpose() == Purpose::Train {
                    let next = epsilon_after(&dp, job.record.plan.dp_rounds() + 1);
                    if next > budget {
                        job.record.plan.stop(format!(
                            "privacy budget: another round would spend ε = {next:.3} > budget {budget}"
                        ));
                    }
                }
            }
        }
        let Some(step) = job.record.plan.next_step() else {
            let detail = job
                .record
                .plan
                .stopped_early()
                .unwrap_or_default()
                .to_string();
            self.end_job(job_id, JobState::Finished, detail, None);
            return;
        };
        if patience_deadline(job).is_some_and(|t| t <= now) {
            let patience = Duration::from_millis(job.record.plan.spec().absence_patience_ms);
            let waiting = self
                .jobs
                .get(job_id)
                .map(|j| self.waiting_text(j, now, false))
                .unwrap_or_default();
            let why = format!("absence patience of {} exhausted, {waiting}", ago(patience));
            self.fail(job_id, why);
            return;
        }
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        let spec = &job.record.plan.spec();
        // Participants present now are invited; the others are awaited. When fewer than
        // `min_participants` are present, away ones (most recently seen first) fill the round
        // up to it, but only if it can complete without them (checked below, on its graph).
        let (mut participants, mut away): (Vec<ParticipantId>, Vec<ParticipantId>) = job
            .joined
            .iter()
            .partition(|&&p| is_present(&self.liveness, self.liveness_window, p, now));
        let fill: Vec<ParticipantId> = if participants.len() < spec.min_participants {
            let last_seen = |p: &ParticipantId| self.liveness.get(p).and_then(|l| l.last_seen);
            away.sort_by_key(|p| std::cmp::Reverse(last_seen(p)));
            away.truncate(spec.min_participants - participants.len());
            away
        } else {
            Vec::new()
        };
        if participants.is_empty() || participants.len() + fill.len() < spec.min_participants {
            wait_for_participants(job_id, job, now);
            return;
        }
        participants.extend(&fill);
        participants.sort_unstable();
        let n = participants.len();
        let k = spec
            .neighbours
            .unwrap_or_else(|| recommended_degree(n))
            .min(n - 1);
        let t = spec.threshold.unwrap_or(k / 2 + 1).min(k.max(1));
        let encoding = FixedPoint::choose(step.max_abs, spec.max_participants).and_then(|e| {
            // With DP noise, keep the integer noise scale moderate (σ ≈ 2^16 units): finer
            // resolution buys nothing under the noise and the exact sampler needs σ ≤ 2^24.
            match step.instruction.noise() {
                Some(ns) if ns.stddev > 0.0 => {
                    let share = ns.share(n);
                    let frac = (65536.0 / share).log2().floor().clamp(0.0, 52.0) as u32;
                    FixedPoint::new(
                        e.modulus,
                        frac.min(e.frac_bits),
                        e.max_abs,
                        e.max_participants,
                    )
                }
                _ => Ok(e),
            }
        });
        let encoding = match encoding {
            Ok(e) => e,
            Err(e) => {
                let why = format!(
                    "step {} cannot be encoded without wrapping: {e}",
                    step.index
                );
                self.fail(job_id, why);
                return;
            }
        };
        let mut graph_seed = [0u8; 32];
        self.rng.fill(&mut graph_seed);
        let job = match self.jobs.get_mut(job_id) {
            Some(j) => j,
            None => return,
        };
        let config = RoundConfig {
            ctx: RoundContext {
                job_id: job_id.to_string(),
                round: job.record.secagg_rounds,
            },
            participants: participants.clone(),
            neighbours: k,
            threshold: t,
            vector_len: step.len,
            modulus: encoding.modulus,
            graph_seed,
        };
        if !fill.is_empty() && !completes_without(&config, &fill) {
            wait_for_participants(job_id, job, now);
            return;
        }
        job.record.secagg_rounds += 1;
        let timeout = Duration::from_millis(job.record.plan.spec().phase_timeout_ms);
        let server = match Server::new(now, config.clone(), self.roster.clone(), timeout) {
            Ok(s) => s,
            Err(e) => {
                let why = format!("round configuration refused: {e}");
                self.fail(job_id, why);
                return;
            }
        };
        let instruction = match serde_json::to_string(&step.instruction) {
            Ok(s) => s,
            Err(e) => {
                self.fail(job_id, format!("cannot serialise instruction: {e}"));
                return;
            }
        };
        let start = RoundStart {
            config: config.clone(),
            encoding,
            instruction,
            phase_timeout_ms: timeout.as_millis() as u64,
        };
        let mut round = ActiveRound {
            server,
            step,
            encoding,
            config,
            phase: Some(Phase::AdvertiseKeys),
            phase_started: now,
            phase_ms: Vec::new(),
            bytes_sent: BTreeMap::new(),
            bytes_received: BTreeMap::new(),
            declined: BTreeMap::new(),
            answered: BTreeSet::new(),
            refused: BTreeSet::new(),
            absent: BTreeMap::new(),
            first_drop: None,
        };
        for &p in &participants {
            *round.bytes_received.entry(p).or_default() += start.instruction.len() as u64 + 128;
            self.outbox
                .push_back((p, ToParticipant::RoundStart(start.clone())));
        }
        job.record.state = JobState::Running;
        job.started = true;
        job.round = Some(round);
        self.pump(now, job_id);
    }

    fn fail(&mut self, job_id: &str, why: String) {
        tracing::error!(job = job_id, reason = %why, "job failed");
        let abandoned = self.jobs.get_mut(job_id).and_then(|j| j.round.take());
        self.end_job(
            job_id,
            JobState::Failed(why.clone()),
            why,
            abandoned.as_ref(),
        );
    }

    /// Puts the job in a terminal `state`, tells every participant (joined, and those of
    /// `round` if one was abandoned) with `JobEnd`, and checkpoints.
    fn end_job(
        &mut self,
        job_id: &str,
        state: JobState,
        detail: String,
        round: Option<&ActiveRound>,
    ) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        job.record.state = state.clone();
        job.attempts = 0;
        job.held_up_since = None;
        let mut to: BTreeSet<ParticipantId> = job.joined.clone();
        if let Some(r) = round {
            to.extend(r.config.participants.iter().copied());
        }
        for p in to {
            self.outbox.push_back((
                p,
                ToParticipant::JobEnd {
                    job_id: job_id.to_string(),
                    state: state.kind(),
                    detail: detail.clone(),
                },
            ));
        }
        self.events.push_back(Event::JobFinished {
            job_id: job_id.to_string(),
            state,
        });
        self.checkpoint(job_id);
    }

    /// The summary of `round` of `job_id` before its result is known.
    fn summary_of(&self, job_id: &str, round: &ActiveRound) -> RoundSummary {
        let name = |id: &ParticipantId| self.name(*id);
        RoundSummary {
            job_id: job_id.to_string(),
            step: round.step.index,
            secagg_round: round.config.ctx.round,
            purpose: round.step.instruction.purpose(),
            participants: round.config.participants.iter().map(name).collect(),
            survivors: Vec::new(),
            dropped: Vec::new(),
            phase_ms: round.phase_ms.clone(),
            bytes_sent: round
                .bytes_sent
                .iter()
                .map(|(k, v)| (name(k), *v))
                .collect(),
            bytes_received: round
                .bytes_received
                .iter()
                .map(|(k, v)| (name(k), *v))
                .collect(),
            outcome: String::new(),
            result: RoundOutcome::Ok,
            aggregate_hash: String::new(),
            model_hash: self
                .jobs
                .get(job_id)
                .and_then(|j| serde_json::to_vec(&j.record.plan).ok())
                .map(|b| hash_hex(&b))
                .unwrap_or_default(),
            encoding: round.encoding.describe(),
            neighbours: round.config.neighbours,
            threshold: round.config.threshold,
            epsilon: None,
        }
    }

    /// Moves the round's server output into the outbox and reacts to its events.
    fn pump(&mut self, now: Instant, job_id: &str) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        let Some(round) = job.round.as_mut() else {
            return;
        };
        while let Some((to, m)) = round.server.poll_transmit() {
            *round.bytes_received.entry(to).or_default() += m.wire_size() as u64;
            self.outbox.push_back((to, ToParticipant::SecAgg(m)));
        }
        let mut finished = None;
        while let Some(ev) = round.server.poll_event() {
            match ev {
                ServerEvent::PhaseClosed { phase, dropped, .. } => {
                    let ms = now
                        .saturating_duration_since(round.phase_started)
                        .as_secs_f64()
                        * 1e3;
                    round.phase_ms.push((phase.name().to_string(), ms));
                    round.phase_started = now;
                    round.phase = round.server.phase();
                    // Dropped for not answering (not for declining, misbehaving, or having
                    // too few partners left): away until seen again. Only in the first phase
                    // anyone was dropped in: later, an honest client leaves the round silently
                    // when too few of its neighbours are left, and that is not an absence.
                    if dropped.is_empty() || *round.first_drop.get_or_insert(phase) != phase {
                        continue;
                    }
                    for p in dropped {
                        if round.answered.contains(&(p, phase))
                            || round.declined.contains_key(&p)
                            || round.refused.contains(&p)
                        {
                            continue;
                        }
                        round.absent.entry(p).or_insert(phase);
                        self.liveness.entry(p).or_default().dropped_at = Some(now);
                        tracing::info!(
                            job = job_id,
                            participant = p,
                            phase = phase.name(),
                            "no answer before the deadline; not invited again until seen"
                        );
                    }
                }
                ServerEvent::Refused { from, error } => {
                    round.refused.insert(from);
                    tracing::warn!(job = job_id, participant = from, %error, "message refused");
                    self.events.push_back(Event::Refused {
                        from,
                        reason: error.to_string(),
                    });
                }
                ServerEvent::Finished(out) => finished = Some(Ok(out)),
                ServerEvent::Failed(err) => finished = Some(Err(err)),
            }
        }
        if let Some(result) = finished {
            self.finish_round(now, job_id, result);
        }
    }

    fn finish_round(
        &mut self,
        now: Instant,
        job_id: &str,
        result: Result<fedsilo_crypto::server::RoundOutput, RoundError>,
    ) {
        let Some(round) = self.jobs.get_mut(job_id).and_then(|j| j.round.take()) else {
            return;
        };
        let mut summary = self.summary_of(job_id, &round);
        let names = &self.names;
        let name = |id: &ParticipantId| {
            names
                .get(id)
                .cloned()
                .unwrap_or_else(|| format!("participant-{id}"))
        };
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        let outcome = match result {
            Err(err) => {
                let absent: Vec<String> = round.absent.keys().map(name).collect();
                let for_absence = matches!(
                    err,
                    RoundError::BelowThreshold { .. }
                        | RoundError::ReconstructionBelowThreshold { .. }
                ) && !absent.is_empty();
                if for_absence {
                    RoundOutcome::Absent {
                        absent,
                        error: err.to_string(),
                    }
                } else {
                    RoundOutcome::SecAgg {
                        error: err.to_string(),
                    }
                }
            }
            Ok(out) => {
                summary.survivors = out.survivors.iter().map(name).collect();
                summary.dropped = out
                    .dropped
                    .iter()
                    .map(|(p, ph)| {
                        let why = round
                            .declined
                            .get(p)
                            .map(|r| format!("{} (declined: {r})", ph.name()))
                            .unwrap_or_else(|| ph.name().to_string());
                        (name(p), why)
                    })
                    .collect();
                let n = out.survivors.len();
                match round.encoding.decode_sum(&out.sum, n) {
                    Err(e) => RoundOutcome::Decode {
                        error: e.to_string(),
                    },
                    Ok(sum) => {
                        let bytes: Vec<u8> = sum.iter().flat_map(|v| v.to_le_bytes()).collect();
                        summary.aggregate_hash = hash_hex(&bytes);
                        let quantum = (-f64::from(round.encoding.frac_bits)).exp2();
                        match job.record.plan.check_sum(&round.step, &sum, n, quantum) {
                            Err(why) => {
                                tracing::error!(job = job_id, round = round.config.ctx.round,
                                    reason = %why, "implausible aggregate refused");
                                RoundOutcome::Implausible(why)
                            }
                            // A refused aggregate leaves the plan exactly as it was
                            // (`Plan::absorb` hands the stage back on error).
                            Ok(()) => match job.record.plan.absorb(&sum, n) {
                                Ok(()) => RoundOutcome::Ok,
                                Err(e) => RoundOutcome::Absorb {
                                    error: e.to_string(),
                                },
                            },
                        }
                    }
                }
            }
        };
        match &outcome {
            RoundOutcome::Ok => {
                job.attempts = 0;
                job.held_up_since = None;
                if let Some(dp) = &job.record.plan.spec().dp {
                    if summary.purpose == Purpose::Train {
                        job.record.epsilon = epsilon_after(dp, job.record.plan.dp_rounds());
                        summary.epsilon = Some(job.record.epsilon);
                    }
                }
            }
            RoundOutcome::Absent { .. } => {
                tracing::warn!(job = job_id, outcome = %outcome,
                    "round failed for absence; the job waits (no attempt used)");
                job.held_up_since.get_or_insert(now);
            }
            _ => job.attempts += 1,
        }
        let ok = outcome.is_ok();
        summary.outcome = outcome.to_string();
        summary.result = outcome;
        summary.model_hash = serde_json::to_vec(&job.record.plan)
            .map(|b| hash_hex(&b))
            .unwrap_or_default();
        for p in &round.config.participants {
            self.outbox.push_back((
                *p,
                ToParticipant::RoundEnd {
                    ctx: round.config.ctx.clone(),
                    ok,
                    detail: summary.outcome.clone(),
                },
            ));
        }
        let attempts = job.attempts;
        let outcome = summary.outcome.clone();
        self.events.push_back(Event::Round(Box::new(summary)));
        if ok {
            self.checkpoint(job_id);
        } else if attempts >= MAX_ATTEMPTS {
            self.fail(
                job_id,
                format!("step failed {attempts} times in a row; last: {outcome}"),
            );
            return;
        }
        self.maybe_start(now, job_id);
    }
}

/// Too few participants present for the job's next round: it waits (and, once it has run,
/// its absence patience runs).
fn wait_for_participants(job_id: &str, job: &mut Job, now: Instant) {
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

/// Whether a round of `config` can reach its result with `away` never answering: the
/// server keeps a participant only while at least t of its neighbours are kept, and needs
/// at least t participants left (the same pruning as `Server`'s share-keys phase).
fn completes_without(config: &RoundConfig, away: &[ParticipantId]) -> bool {
    let Ok(graph) = config.graph() else {
        return false;
    };
    let t = config.threshold;
    let mut kept: BTreeSet<ParticipantId> = config
        .participants
        .iter()
        .copied()
        .filter(|p| !away.contains(p))
        .collect();
    loop {
        let weak: Vec<ParticipantId> = kept
            .iter()
            .copied()
            .filter(|&u| {
                graph
                    .neighbours(u)
                    .map_or(0, |ns| ns.iter().filter(|v| kept.contains(v)).count())
                    < t
            })
            .collect();
        if weak.is_empty() {
            break;
        }
        for u in weak {
            kept.remove(&u);
        }
    }
    kept.len() >= t
}

/// When a held-up job that has no round in flight gives up.
fn patience_deadline(job: &Job) -> Option<Instant> {
    if job.round.is_some() || job.record.state.is_terminal() {
        return None;
    }
    let since = job.held_up_since?;
    since.checked_add(Duration::from_millis(
        job.record.plan.spec().absence_patience_ms,
    ))
}

/// ε spent after `rounds` noisy rounds at the spec's noise multiplier (RDP accountant).
pub fn epsilon_after(dp: &fedsilo_task::DpSpec, rounds: u64) -> f64 {
    let mut acc = RdpAccountant::new();
    if acc.compose_gaussian(dp.noise_multiplier, rounds).is_err() {
        return f64::INFINITY;
    }
    acc.epsilon(dp.delta)
        .map(|(eps, _)| eps)
        .unwrap_or(f64::INFINITY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsilo_crypto::client::Client;
    use fedsilo_crypto::encoding::RingVec;
    use fedsilo_crypto::keys::IdentityKey;
    use fedsilo_task::Instruction;

    /// What a test bank does with a round.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Mode {
        Honest,
        /// Polls (is seen) but never answers.
        Mute,
        /// Neither polls nor answers.
        Dead,
        /// Encodes its first value 5 × the declared range (never clipped).
        Oversized,
        /// Adds one row to a magnitude bin without counting it (in range, inconsistent).
        Miscount,
    }

    struct Bank {
        key: Arc<IdentityKey>,
        mode: Mode,
        client: Option<Client>,
        ended: Vec<(WireJobState, String)>,
    }

    struct Fed {
        coord: Coordinator,
        banks: Vec<Bank>,
        roster: Arc<Roster>,
        now: Instant,
        rng: rand_chacha::ChaCha20Rng,
        rounds: Vec<RoundSummary>,
        checkpoints: Vec<Vec<u8>>,
    }

    /// An honest participant's vector for `instr` (10 rows, 3 positives per bank).
    fn honest(instr: &Instruction, len: usize) -> Vec<f64> {
        let mut v = vec![0.0; len];
        match instr {
            Instruction::Scale { data } => {
                let (f, l) = (data.features.len(), data.labels.len());
                let width = (len - 1 - l) / f;
                v[0] = 10.0;
                for i in 0..l {
                    v[1 + i] = 3.0;
                }
                for j in 0..f {
                    let o = 1 + l + j * width;
                    v[o] = 10.0;
                    v[o + 1 + 7] = 10.0;
                }
            }
            Instruction::Moments { .. } => {
                for (i, x) in v.iter_mut().enumerate() {
                    *x = if i % 2 == 0 { 1.0 } else { 2.0 };
                }
            }
            Instruction::Train { .. } => {
                v[len - 2] = 10.0;
                v[len - 1] = 5.0;
            }
            Instruction::Evaluate { bins, .. } => {
                let per = 2 * bins + 2;
                for o in (0..len).step_by(per) {
                    v[o] = 3.0;
                    v[o + bins] = 7.0;
                    v[o + 2 * bins] = 5.0;
                    v[o + 2 * bins + 1] = 10.0;
                }
            }
            _ => {}
        }
        v
    }

    fn input(start: &RoundStart, mode: Mode) -> RingVec {
        let instr: Instruction = serde_json::from_str(&start.instruction).unwrap();
        let mut v = honest(&instr, start.config.vector_len);
        if mode == Mode::Miscount {
            v[1 + 1 + 1 + 8] += 1.0;
        }
        let mut ring = start.encoding.encode(&v).unwrap();
        if mode == Mode::Oversized {
            let scaled = 5.0 * start.encoding.max_abs * f64::from(start.encoding.frac_bits).exp2();
            match &mut ring {
                RingVec::U64(xs) => xs[0] = scaled as i64 as u64,
                RingVec::U32(xs) => xs[0] = scaled as i64 as u32,
            }
        }
        ring
    }

    fn spec(min: usize, patience_ms: u64) -> JobSpec {
        serde_json::from_value(serde_json::json!({
            "job_id": "j",
            "dataset": "d",
            "rounds": 2,
            "eval_every": 1,
            "hist_bins": 10,
            "min_participants": min,
            "phase_timeout_ms": 1000,
            "absence_patience_ms": patience_ms,
        }))
        .unwrap()
    }

    impl Fed {
        fn new(modes: &[Mode]) -> Fed {
            let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
            let mut roster = Roster::new();
            let mut names = BTreeMap::new();
            let mut banks = Vec::new();
            for (i, &mode) in modes.iter().enumerate() {
                let key = Arc::new(IdentityKey::generate(&mut rng));
                roster.insert(i as ParticipantId, key.public_key());
                names.insert(
                    i as ParticipantId,
                    format!("bank-{}", (b'a' + i as u8) as char),
                );
                banks.push(Bank {
                    key,
                    mode,
                    client: None,
                    ended: Vec::new(),
                });
            }
            Fed {
                coord: Coordinator::new(roster.clone(), names, [1; 32]),
                banks,
                roster: Arc::new(roster),
                now: Instant::now(),
                rng,
                rounds: Vec::new(),
                checkpoints: Vec::new(),
            }
        }

        fn launch(&mut self, spec: JobSpec) {
            self.coord
                .launch(self.now, spec, vec!["x".into()], vec!["y".into()])
                .unwrap();
            for p in 0..self.banks.len() as ParticipantId {
                self.coord.handle_join(self.now, p, &[]).unwrap();
            }
            self.drain();
        }

        fn drain(&mut self) {
            while let Some(ev) = self.coord.poll_event() {
                match ev {
                    Event::Round(r) => self.rounds.push(*r),
                    Event::Checkpoint { state, .. } => self.checkpoints.push(state),
                    _ => {}
                }
            }
        }

        /// Delivers messages until nothing moves; then lets the next deadline pass (living
        /// banks poll first). Returns false when nothing is left to do.
        fn step(&mut self) -> bool {
            self.deliver(usize::MAX);
            let Some(deadline) = self.coord.poll_timeout() else {
                return false;
            };
            self.now = self.now.max(deadline);
            for (p, bank) in self.banks.iter().enumerate() {
                if bank.mode != Mode::Dead {
                    self.coord.handle_seen(self.now, p as ParticipantId);
                }
            }
            self.coord.handle_timeout(self.now);
            self.drain();
            true
        }

        /// Delivers messages until nothing moves or `rounds` rounds have closed.
        fn deliver(&mut self, rounds: usize) {
            loop {
                self.drain();
                if self.rounds.len() >= rounds {
                    return;
                }
                let mut out = Vec::new();
                while let Some((to, m)) = self.coord.poll_transmit() {
                    let bank = &mut self.banks[to as usize];
                    if matches!(bank.mode, Mode::Mute | Mode::Dead) {
                        continue;
                    }
                    match m {
                        ToParticipant::RoundStart(start) => {
                            let c = Client::new(
                                start.config.clone(),
                                to,
                                bank.key.clone(),
                                self.roster.clone(),
                                input(&start, bank.mode),
                                &mut self.rng,
                            )
                            .unwrap();
                            bank.client = Some(c);
                        }
                        ToParticipant::SecAgg(m) => {
                            if let Some(c) = bank.client.as_mut() {
                                let _ = c.handle_message(m, &mut self.rng);
                            }
                        }
                        ToParticipant::RoundEnd { .. } => bank.client = None,
                        ToParticipant::JobEnd { state, detail, .. } => {
                            bank.client = None;
                            bank.ended.push((state, detail));
                        }
                    }
                    if let Some(c) = bank.client.as_mut() {
                        while let Some(m) = c.poll_transmit() {
                            out.push((to, m));
                        }
                    }
                }
                if out.is_empty() {
                    break;
                }
                for (from, m) in out {
                    let _ = self
                        .coord
                        .handle_message(self.now, from, ToCoordinator::SecAgg(m));
                }
            }
            self.drain();
        }

        fn state(&self) -> JobState {
            self.coord.job_status("j").unwrap().state
        }

        fn plan_bytes(&self) -> Vec<u8> {
            serde_json::to_vec(self.coord.plan("j").unwrap()).unwrap()
        }
    }

    #[test]
    fn an_honest_federation_finishes() {
        let mut fed = Fed::new(&[Mode::Honest; 3]);
        fed.launch(spec(3, 60_000));
        while fed.step() {}
        assert_eq!(fed.state(), JobState::Finished, "{:#?}", fed.rounds);
        assert!(
            fed.rounds.iter().all(|r| r.result.is_ok()),
            "{:#?}",
            fed.rounds
        );
        assert!(fed.banks.iter().all(|b| b.ended.len() == 1));
    }

    #[test]
    fn a_sum_outside_survivors_times_the_range_fails_the_round_and_leaves_the_plan() {
        let mut fed = Fed::new(&[Mode::Honest, Mode::Honest, Mode::Oversized]);
        fed.launch(spec(3, 60_000));
        let before = fed.plan_bytes();
        while fed.step() {}
        // Refused every time it is retried, never absorbed; the budget runs out.
        assert_eq!(fed.rounds.len(), MAX_ATTEMPTS as usize, "{:#?}", fed.rounds);
        for r in &fed.rounds {
            match &r.result {
                RoundOutcome::Implausible(Implausible::OutOfRange {
                    index: 0,
                    survivors: 3,
                    ..
                }) => {}
                other => panic!("{other:?}"),
            }
            assert!(r.outcome.contains("implausible aggregate"), "{}", r.outcome);
            assert_eq!(r.survivors.len(), 3);
        }
        assert_eq!(
            fed.plan_bytes(),
            before,
            "an implausible sum changed the plan"
        );
        assert_eq!(fed.coord.plan("j").unwrap().step_index(), 0);
        match fed.state() {
            JobState::Failed(why) => {
                assert!(
                    why.contains("3 times") && why.contains("implausible"),
                    "{why}"
                )
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn inconsistent_counts_in_range_are_named() {
        let mut fed = Fed::new(&[Mode::Honest, Mode::Miscount, Mode::Honest]);
        fed.launch(spec(3, 60_000));
        let before = fed.plan_bytes();
        fed.step();
        let r = fed.rounds.first().expect("a round");
        match &r.result {
            RoundOutcome::Implausible(Implausible::Inconsistent { what, .. }) => {
                assert!(what.contains("magnitude bins of 'x'"), "{what}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fed.plan_bytes(), before);
    }

    #[test]
    fn rounds_failing_for_absence_use_no_attempts_and_the_job_goes_on() {
        // bank-c polls (so it is invited every time) but never answers: with three in the
        // round (k = 2, t = 2) no round can complete.
        let mut fed = Fed::new(&[Mode::Honest, Mode::Honest, Mode::Mute]);
        fed.launch(spec(3, 3_600_000));
        for _ in 0..(4 * MAX_ATTEMPTS) {
            fed.step();
        }
        assert!(
            fed.rounds.len() > MAX_ATTEMPTS as usize,
            "{:#?}",
            fed.rounds
        );
        for r in &fed.rounds {
            match &r.result {
                RoundOutcome::Absent { absent, .. } => assert_eq!(absent, &["bank-c"]),
                other => panic!("{other:?}"),
            }
        }
        assert!(!fed.state().is_terminal(), "{:?}", fed.state());
        // bank-c answers again: the job completes.
        fed.banks[2].mode = Mode::Honest;
        while fed.step() {}
        assert_eq!(fed.state(), JobState::Finished);
    }

    #[test]
    fn two_present_of_three_run_valid_rounds_and_the_away_one_is_reported() {
        let mut fed = Fed::new(&[Mode::Honest; 3]);
        fed.launch(spec(2, 3_600_000));
        // The first round started as soon as two had joined; the second has all three.
        fed.deliver(1);
        fed.banks[2].mode = Mode::Dead;
        while fed.rounds.len() < 2 {
            assert!(fed.step(), "{:#?}", fed.rounds);
        }
        let failed = &fed.rounds[1];
        assert_eq!(failed.participants, ["bank-a", "bank-b", "bank-c"]);
        match &failed.result {
            RoundOutcome::Absent { absent, .. } => assert_eq!(absent, &["bank-c"]),
            other => panic!("{other:?}"),
        }
        let s = fed.coord.job_status("j").unwrap();
        assert_eq!(s.state, JobState::Running);
        assert!(
            s.detail.starts_with("running without bank-c (last seen"),
            "{}",
            s.detail
        );
        while fed.step() {}
        assert_eq!(fed.state(), JobState::Finished, "{:#?}", fed.rounds);
        // Every later round ran with the two present (k = 1, t = 1) and completed.
        for r in &fed.rounds[2..] {
            assert!(r.result.is_ok(), "{r:?}");
            assert_eq!(r.participants, ["bank-a", "bank-b"]);
            assert_eq!((r.neighbours, r.threshold), (1, 1));
        }
    }

    #[test]
    fn an_away_participant_fills_min_participants_only_when_the_round_completes_without_it() {
        // Four with min_participants = 4 (k = 3, t = 2): three present can complete a round
        // of four, so bank-d is still invited and the job goes on with three survivors.
        let mut fed = Fed::new(&[Mode::Honest; 4]);
        fed.launch(spec(4, 3_600_000));
        fed.deliver(1);
        fed.banks[3].mode = Mode::Dead;
        while fed.step() {}
        assert_eq!(fed.state(), JobState::Finished, "{:#?}", fed.rounds);
        for r in &fed.rounds[1..] {
            assert!(r.result.is_ok(), "{r:?}");
            assert_eq!(r.participants.len(), 4);
            assert_eq!(r.survivors, ["bank-a", "bank-b", "bank-c"]);
        }
        // Three with min_participants = 3 (k = 2, t = 2): two present cannot, so the job
        // waits for bank-c instead of running rounds bound to fail.
        let mut fed = Fed::new(&[Mode::Honest; 3]);
        fed.launch(spec(3, 3_600_000));
        fed.deliver(1);
        fed.banks[2].mode = Mode::Dead;
        while fed.rounds.len() < 2 {
            assert!(fed.step());
        }
        assert!(fed.rounds[1].result.is_absence(), "{:?}", fed.rounds[1]);
        let s = fed.coord.job_status("j").unwrap();
        assert_eq!(s.state, JobState::Waiting);
        assert!(
            s.detail.starts_with("waiting for bank-c (last seen"),
            "{}",
            s.detail
        );
        assert!(
            s.detail.contains("2 of the 3 needed present"),
            "{}",
            s.detail
        );
        assert_eq!(
            fed.rounds.len(),
            2,
            "a round was started that could not complete"
        );
        // bank-c comes back: the job resumes with all three.
        fed.banks[2].mode = Mode::Honest;
        fed.coord.handle_seen(fed.now, 2);
        while fed.step() {}
        assert_eq!(fed.state(), JobState::Finished);
        assert!(fed.rounds[2..].iter().all(|r| r.survivors.len() == 3));
    }

    #[test]
    fn patience_ends_the_wait_with_a_failed_state_and_its_reason() {
        let mut fed = Fed::new(&[Mode::Honest, Mode::Honest]);
        fed.launch(spec(2, 5_000));
        fed.deliver(1);
        assert!(fed.rounds[0].result.is_ok());
        fed.banks[1].mode = Mode::Dead;
        while fed.rounds.len() < 2 {
            assert!(fed.step());
        }
        // The round after it died failed for its absence; the job waits for it.
        assert!(fed.rounds[1].result.is_absence(), "{:?}", fed.rounds[1]);
        let s = fed.coord.job_status("j").unwrap();
        assert_eq!(s.state, JobState::Waiting);
        assert!(
            s.detail.contains("waiting for bank-b (last seen") && s.detail.contains("gives up in"),
            "{}",
            s.detail
        );
        while fed.step() {}
        let s = fed.coord.job_status("j").unwrap();
        assert_eq!(s.state.kind(), WireJobState::Failed);
        assert!(
            s.detail.contains("absence patience") && s.detail.contains("bank-b"),
            "{}",
            s.detail
        );
        assert_eq!(
            fed.banks[0].ended,
            [(WireJobState::Failed, s.detail.clone())]
        );
        // Absence never used an attempt.
        assert!(!s.detail.contains("times in a row"), "{}", s.detail);
    }

    #[test]
    fn cancel_and_resume_are_checkpointed_and_the_resumed_job_finishes() {
        let mut fed = Fed::new(&[Mode::Honest; 2]);
        fed.launch(spec(2, 60_000));
        fed.deliver(2);
        // Cancel with a round in flight.
        assert!(fed.coord.job_status("j").unwrap().state == JobState::Running);
        fed.coord
            .cancel(fed.now, "j", "cancelled by op: test".into())
            .unwrap();
        fed.drain();
        assert_eq!(
            fed.state(),
            JobState::Cancelled("cancelled by op: test".into())
        );
        let abandoned = fed.rounds.last().unwrap();
        assert!(matches!(abandoned.result, RoundOutcome::Cancelled { .. }));
        let cancelled: JobRecord = serde_json::from_slice(fed.checkpoints.last().unwrap()).unwrap();
        assert!(matches!(cancelled.state, JobState::Cancelled(_)));
        let step = fed.coord.plan("j").unwrap().step_index();
        while fed.step() {}
        for b in &fed.banks {
            assert_eq!(b.ended[0].0, WireJobState::Cancelled);
        }
        assert!(matches!(
            fed.coord.cancel(fed.now, "j", "again".into()),
            Err(EngineError::WrongState { .. })
        ));
        // A restart keeps it cancelled.
        let mut restarted = Fed::new(&[Mode::Honest; 2]);
        restarted
            .coord
            .restore(restarted.now, "j", fed.checkpoints.last().unwrap())
            .unwrap();
        assert!(matches!(restarted.state(), JobState::Cancelled(_)));
        // Resume: waiting, checkpointed, then it runs on from where it was.
        fed.coord.resume(fed.now, "j").unwrap();
        fed.drain();
        let resumed: JobRecord = serde_json::from_slice(fed.checkpoints.last().unwrap()).unwrap();
        assert_eq!(resumed.state, JobState::Waiting);
        assert_eq!(fed.coord.plan("j").unwrap().step_index(), step);
        assert!(matches!(
            fed.coord.resume(fed.now, "j"),
            Err(EngineError::WrongState { .. })
        ));
        for p in 0..2 {
            fed.coord.handle_join(fed.now, p, &[]).unwrap();
        }
        while fed.step() {}
        assert_eq!(fed.state(), JobState::Finished, "{:#?}", fed.rounds);
    }

    #[test]
    fn old_checkpoints_still_read() {
        let mut fed = Fed::new(&[Mode::Honest; 2]);
        fed.launch(spec(2, 60_000));
        let mut rec: serde_json::Value = serde_json::from_slice(&fed.checkpoints[0]).unwrap();
        rec["state"] = serde_json::json!({ "failed": "step failed 3 times in a row" });
        rec["plan"]["job"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("absence_patience_ms");
        let mut other = Fed::new(&[Mode::Honest; 2]);
        other
            .coord
            .restore(other.now, "j", &serde_json::to_vec(&rec).unwrap())
            .unwrap();
        assert_eq!(
            other.state(),
            JobState::Failed("step failed 3 times in a row".into())
        );
        assert_eq!(
            other.coord.plan("j").unwrap().spec().absence_patience_ms,
            fedsilo_task::DEFAULT_ABSENCE_PATIENCE_MS
        );
    }
}
