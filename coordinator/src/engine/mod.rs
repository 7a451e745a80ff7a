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
//! and never reaches the model. `Plan::absorb` leaves the plan unchanged when it refuses an
//! aggregate, so a refused aggregate leaves the job's state exactly as it was.
//!
//! # Per round, once
//!
//! A round's `RoundStart` is built once and shared (`Arc`) by the message to each
//! participant; its typed instruction is the plan's step, not serialised here. Its size on
//! the wire (`fedsilo_proto::convert::encoded_len`, computed once) is what each participant
//! is counted as receiving for it in [`RoundSummary::bytes_received`]. When the round closes the plan is serialised once: those bytes are hashed
//! ([`RoundSummary::model_hash`]) and are the plan inside the checkpoint that follows. The
//! decoded sum is hashed value by value ([`RoundSummary::aggregate_hash`]).
//!
//! [`Server`]: fedsilo_crypto::server::Server

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsilo_crypto::msg::{ParticipantId, Roster};
use fedsilo_task::job::{JobState as WireJobState, ToCoordinator, ToParticipant};
use fedsilo_task::{JobSpec, Plan};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

mod liveness;
mod psi;
#[cfg(test)]
mod psi_tests;
mod round;
mod status;
#[cfg(test)]
mod tests;
mod vertical;

pub use liveness::ParticipantLiveness;
use liveness::{patience_deadline, Liveness};
pub use psi::{PairOutcome, PsiRecord, PsiSummary};
use round::ActiveRound;
pub use round::{RoundOutcome, RoundSummary};
pub use status::{ActiveRoundView, JobState, JobStatus};
pub use vertical::{VerticalRecord, VerticalSummary};

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
    /// The job's id cannot be one: too long, or with control characters.
    #[error("invalid job: job_id: at most 128 printable characters")]
    InvalidJobId,
    /// The job's spec or columns do not make a plan.
    #[error("invalid job")]
    InvalidJob(#[source] fedsilo_task::FedError),
    #[error("job '{0}' already exists")]
    DuplicateJob(String),
    #[error(transparent)]
    Protocol(#[from] fedsilo_crypto::error::ProtocolError),
    #[error("checkpoint for job '{job}' is unreadable")]
    BadCheckpoint {
        job: String,
        #[source]
        source: serde_json::Error,
    },
    /// A PSI job spec that cannot run (field named).
    #[error("invalid PSI job")]
    InvalidPsiJob(#[source] fedsilo_task::psi::PsiSpecError),
    #[error("participant {participant} is not a party of session {session} of PSI job '{job}'")]
    NotInSession {
        job: String,
        session: u64,
        participant: ParticipantId,
    },
    #[error("PSI job '{job}': a message claims the {claimed} role from the {holds} party")]
    WrongPsiRole {
        job: String,
        claimed: &'static str,
        holds: &'static str,
    },
    /// A vertical session's passive party addressed another party than the active one.
    #[error("vertical job '{job}': {from} (a passive party) addressed {to}; a passive party talks to the active party only")]
    PassiveAddressed {
        job: String,
        from: String,
        to: String,
    },
    /// The active party addressed a passive party the session does not have.
    #[error("vertical job '{job}': the active party addressed passive party {index}; the session has {count}")]
    NoSuchPassive {
        job: String,
        index: u32,
        count: usize,
    },
    /// With several passive parties, a message of the active party must name its recipient.
    #[error("vertical job '{job}' session {session}: a message of the active party names no passive party (the session has several)")]
    NoRecipient { job: String, session: u64 },
    /// A message that does not belong to this kind of job.
    #[error("job '{job}' takes no {what}")]
    WrongMessage { job: String, what: &'static str },
    /// A vertical job spec that cannot run (field named).
    #[error("invalid vertical job")]
    InvalidVerticalJob(#[source] fedsilo_task::vertical::VerticalSpecError),
    /// An operator command that does not apply to the job's current state.
    #[error("job '{job}' is {state}: only {applies} jobs can be {action}")]
    WrongState {
        job: String,
        state: WireJobState,
        action: &'static str,
        applies: &'static str,
    },
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
    /// A PSI session closed (both parties agreed) or failed.
    Psi(Box<PsiSummary>),
    /// A vertical session completed an iteration or tree, or ended.
    Vertical(Box<VerticalSummary>),
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

/// A [`JobRecord`] as it serialises, with the plan given already serialised: the same fields
/// in the same order, so the bytes are those of `serde_json::to_vec(&record)`.
#[derive(Serialize)]
struct RecordWithPlan<'a> {
    plan: &'a RawValue,
    state: &'a JobState,
    secagg_rounds: u64,
    epsilon: f64,
}

impl JobRecord {
    /// The checkpoint's bytes (`serde_json` of the record). With `plan` (this record's plan,
    /// serialised by `serde_json::value::to_raw_value`) the plan is embedded as it is.
    fn to_checkpoint(&self, plan: Option<&RawValue>) -> Result<Vec<u8>, serde_json::Error> {
        // Exhaustive: a field added to the record must be added to `RecordWithPlan` too.
        let JobRecord {
            plan: _,
            state,
            secagg_rounds,
            epsilon,
        } = self;
        match plan {
            None => serde_json::to_vec(self),
            Some(plan) => serde_json::to_vec(&RecordWithPlan {
                plan,
                state,
                secagg_rounds: *secagg_rounds,
                epsilon: *epsilon,
            }),
        }
    }
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
    /// Participants known to hold the state the plan's last absorbed step left them (the
    /// survivors of the job's last completed round, less any that joined again or declined
    /// since): a step with a delta form (a boosting level sent as its new splits) is sent as
    /// the delta only when every participant invited is one of them. Not checkpointed: a
    /// launched, restored or resumed job sends its first such step whole.
    in_sync: BTreeSet<ParticipantId>,
}

/// The sans-IO coordinator. See the module docs for the calling order.
pub struct Coordinator {
    roster: Arc<Roster>,
    names: BTreeMap<ParticipantId, String>,
    jobs: BTreeMap<String, Job>,
    psi_jobs: BTreeMap<String, psi::PsiJob>,
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

impl Coordinator {
    /// `roster`: participant id → Ed25519 identity key; `names`: id → institution name.
    /// `seed` drives graph seeds and job ids (from the OS in production, fixed in simulations).
    pub fn new(roster: Roster, names: BTreeMap<ParticipantId, String>, seed: [u8; 32]) -> Self {
        Coordinator {
            roster: Arc::new(roster),
            names,
            jobs: BTreeMap::new(),
            psi_jobs: BTreeMap::new(),
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
            return Err(EngineError::InvalidJobId);
        }
        if self.jobs.contains_key(&spec.job_id) || self.psi_jobs.contains_key(&spec.job_id) {
            return Err(EngineError::DuplicateJob(spec.job_id));
        }
        let id = spec.job_id.clone();
        let plan = Plan::new(spec, features, labels).map_err(EngineError::InvalidJob)?;
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
        if let Some(record) = Self::psi_record_of(state) {
            self.insert_psi(now, record);
            return Ok(());
        }
        let mut record: JobRecord =
            serde_json::from_slice(state).map_err(|e| EngineError::BadCheckpoint {
                job: job_id.to_string(),
                source: e,
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
                in_sync: BTreeSet::new(),
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
        if let Some(job) = self.psi_jobs.get(job_id) {
            if job.record.state.is_terminal() {
                return Err(EngineError::WrongState {
                    job: job_id.to_string(),
                    state: job.record.state.kind(),
                    action: "cancelled",
                    applies: "waiting or running",
                });
            }
            tracing::warn!(job = job_id, %reason, "PSI job cancelled");
            self.cancel_psi(now, job_id, reason);
            return Ok(());
        }
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
            summary.model_hash = self
                .jobs
                .get(job_id)
                .and_then(|j| serde_json::to_vec(&j.record.plan).ok())
                .map(|b| round::hash_hex(&b))
                .unwrap_or_default();
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
        if let Some(job) = self.psi_jobs.get_mut(job_id) {
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
            tracing::info!(job = job_id, from = %job.record.state.label(), "PSI job resumed");
            job.record.state = JobState::Waiting;
            job.lost_restarts = 0;
            self.psi_checkpoint(job_id);
            self.maybe_start_psi(now, job_id);
            return Ok(());
        }
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
        // A cancelled or failed job's participants dropped its state (`JobEnd`).
        job.in_sync.clear();
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
                .chain(
                    self.psi_jobs
                        .iter()
                        .filter(|(_, j)| !j.record.state.is_terminal())
                        .map(|(id, _)| id.clone()),
                )
                .collect()
        } else {
            for id in job_ids {
                if !self.jobs.contains_key(id) && !self.psi_jobs.contains_key(id) {
                    return Err(EngineError::UnknownJob(id.clone()));
                }
            }
            job_ids.to_vec()
        };
        for id in &wanted {
            if let Some(job) = self.jobs.get_mut(id) {
                job.joined.insert(from);
                // A participant joining (again) may have restarted and lost the job's state:
                // its next step is sent whole.
                job.in_sync.remove(&from);
                self.maybe_start(now, id);
            } else if let Some(job) = self.psi_jobs.get_mut(id) {
                job.joined.insert(from);
                self.maybe_start_psi(now, id);
            }
        }
        Ok(wanted)
    }

    /// The transport lost a participant (connection closed). It stays in the round in
    /// progress (the phase timeout decides) but is not invited to the next one.
    pub fn handle_leave(&mut self, from: ParticipantId) {
        for job in self.jobs.values_mut() {
            job.joined.remove(&from);
        }
        for job in self.psi_jobs.values_mut() {
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
        if psi::is_psi(&msg) {
            return self.handle_psi(now, from, msg);
        }
        let ctx = match &msg {
            ToCoordinator::SecAgg(m) => m.ctx().clone(),
            ToCoordinator::Decline { ctx, .. } => ctx.clone(),
            ToCoordinator::Psi(_)
            | ToCoordinator::VerticalRelay { .. }
            | ToCoordinator::PsiDone(_)
            | ToCoordinator::PsiFailed { .. }
            | ToCoordinator::PsiLost { .. }
            | ToCoordinator::VerticalProgress(_)
            | ToCoordinator::VerticalDone(_) => return Ok(()),
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
            ToCoordinator::Psi(_)
            | ToCoordinator::VerticalRelay { .. }
            | ToCoordinator::PsiDone(_)
            | ToCoordinator::PsiFailed { .. }
            | ToCoordinator::PsiLost { .. }
            | ToCoordinator::VerticalProgress(_)
            | ToCoordinator::VerticalDone(_) => Ok(()),
        };
        self.pump(now, &ctx.job_id);
        result
    }

    /// Drives phase deadlines and the absence patience of waiting jobs; call when
    /// `poll_timeout` has passed (calling it earlier only advances the engine's clock).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        self.pause_vertical_if_away(now);
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
            .chain(self.vertical_deadline())
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

    fn checkpoint(&mut self, job_id: &str) {
        self.checkpoint_with(job_id, None);
    }

    /// [`Coordinator::checkpoint`] with the plan already serialised (`plan`, the bytes the
    /// round's model hash was computed over), so it is not serialised again.
    fn checkpoint_with(&mut self, job_id: &str, plan: Option<&RawValue>) {
        if let Some(job) = self.jobs.get(job_id) {
            match job.record.to_checkpoint(plan) {
                Ok(state) => self.events.push_back(Event::Checkpoint {
                    job_id: job_id.to_string(),
                    step: job.record.plan.step_index(),
                    state,
                }),
                Err(e) => tracing::error!(job = job_id, error = %e, "cannot serialise checkpoint"),
            }
        }
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
}
