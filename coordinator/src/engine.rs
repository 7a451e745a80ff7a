//! The coordinator's job engine, sans-IO.
//!
//! [`Coordinator`] owns every job's [`Plan`] and the secure-aggregation [`Server`] of the step
//! in flight. Like the SecAgg state machines it drives, it performs no I/O and reads no
//! clock: the gRPC service and the in-memory simulator feed it the same inputs and drain the
//! same outputs.
//!
//! * getters: [`Coordinator::job_status`], [`Coordinator::list_jobs`], [`Coordinator::plan`]
//! * commands: [`Coordinator::launch`], [`Coordinator::restore`]
//! * inputs: [`Coordinator::handle_join`], [`Coordinator::handle_message`],
//!   [`Coordinator::handle_timeout`]
//! * outputs: [`Coordinator::poll_transmit`], [`Coordinator::poll_event`],
//!   [`Coordinator::poll_timeout`]
//!
//! After every input, drain `poll_transmit` (messages to participants), then `poll_event`
//! (checkpoints to persist, audit records, round summaries), then re-arm the timer from
//! `poll_timeout`. A [`Event::Checkpoint`] must be persisted before the messages that follow
//! it matter: the plan inside it is the whole job state, so a coordinator restarted from it
//! resumes at the next step with no model lost.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsilo_crypto::encoding::FixedPoint;
use fedsilo_crypto::graph::recommended_degree;
use fedsilo_crypto::msg::{ParticipantId, Phase, Roster, RoundConfig, RoundContext};
use fedsilo_crypto::server::{Server, ServerEvent};
use fedsilo_ml::dp::RdpAccountant;
use fedsilo_ml::fed::{JobSpec, Plan, Step};
use fedsilo_proto::job::{RoundStart, ToCoordinator, ToParticipant};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A failed step is retried with the participants still present this many times.
const MAX_ATTEMPTS: u32 = 3;

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
}

/// Lifecycle of a job, as reported to operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for `min_participants` to join.
    Waiting,
    Running,
    Finished,
    Failed(String),
}

impl JobState {
    pub fn label(&self) -> String {
        match self {
            JobState::Waiting => "waiting".into(),
            JobState::Running => "running".into(),
            JobState::Finished => "finished".into(),
            JobState::Failed(why) => format!("failed: {why}"),
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
    pub purpose: String,
    pub participants: Vec<String>,
    pub survivors: Vec<String>,
    pub dropped: Vec<(String, String)>,
    pub phase_ms: Vec<(String, f64)>,
    pub bytes_sent: BTreeMap<String, u64>,
    pub bytes_received: BTreeMap<String, u64>,
    pub outcome: String,
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
}

struct Job {
    record: JobRecord,
    joined: BTreeSet<ParticipantId>,
    round: Option<ActiveRound>,
    attempts: u32,
}

/// The sans-IO coordinator. See the module docs for the calling order.
pub struct Coordinator {
    roster: Arc<Roster>,
    names: BTreeMap<ParticipantId, String>,
    jobs: BTreeMap<String, Job>,
    outbox: VecDeque<(ParticipantId, ToParticipant)>,
    events: VecDeque<Event>,
    rng: rand_chacha::ChaCha20Rng,
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

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::AdvertiseKeys => "advertise_keys",
        Phase::ShareKeys => "share_keys",
        Phase::MaskedInput => "masked_input",
        Phase::ConsistencyCheck => "consistency_check",
        Phase::Unmask => "unmask",
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
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            rng: rand_chacha::ChaCha20Rng::from_seed(seed),
        }
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
        let id = record.plan.spec.job_id.clone();
        self.jobs.insert(
            id.clone(),
            Job {
                record,
                joined: BTreeSet::new(),
                round: None,
                attempts: 0,
            },
        );
        self.maybe_start(now, &id);
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
        let wanted: Vec<String> = if job_ids.is_empty() {
            self.jobs
                .iter()
                .filter(|(_, j)| matches!(j.record.state, JobState::Waiting | JobState::Running))
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

    /// Drives phase deadlines; call when `poll_timeout` has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<String> = self.jobs.keys().cloned().collect();
        for id in ids {
            if let Some(r) = self.jobs.get_mut(&id).and_then(|j| j.round.as_mut()) {
                if r.server.poll_timeout().is_some_and(|t| t <= now) {
                    r.server.handle_timeout(now);
                }
            }
            self.pump(now, &id);
        }
    }

    /// The earliest deadline of any round in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.jobs
            .values()
            .filter_map(|j| j.round.as_ref().and_then(|r| r.server.poll_timeout()))
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

    pub fn job_status(&self, job_id: &str) -> Option<JobStatus> {
        let job = self.jobs.get(job_id)?;
        let plan = &job.record.plan;
        let metrics_json = plan
            .last_eval
            .as_ref()
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
            total_rounds: plan.spec.rounds,
            participants: job.joined.iter().map(|&p| self.name(p)).collect(),
            metrics_json,
            epsilon: job.record.epsilon,
            epsilon_budget: plan
                .spec
                .dp
                .as_ref()
                .and_then(|d| d.epsilon_budget)
                .unwrap_or(0.0),
            detail: plan.stopped_early.clone().unwrap_or_default(),
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
        if job.round.is_some()
            || matches!(job.record.state, JobState::Finished | JobState::Failed(_))
        {
            return;
        }
        // Differential privacy: stop cleanly before the budget would be exceeded.
        if let Some(dp) = job.record.plan.spec.dp.clone() {
            if let (Some(budget), Some(step)) = (dp.epsilon_budget, job.record.plan.next_step()) {
                if step.instruction.purpose() == "train" {
                    let next = epsilon_after(&dp, job.record.plan.dp_rounds + 1);
                    if next > budget {
                        job.record.plan.stop(format!(
                            "privacy budget: another round would spend ε = {next:.3} > budget {budget}"
                        ));
                    }
                }
            }
        }
        let Some(step) = job.record.plan.next_step() else {
            job.record.state = JobState::Finished;
            let state = job.record.state.clone();
            for &p in &job.joined {
                self.outbox.push_back((
                    p,
                    ToParticipant::JobEnd {
                        job_id: job_id.to_string(),
                        state: state.label(),
                        detail: job.record.plan.stopped_early.clone().unwrap_or_default(),
                    },
                ));
            }
            self.events.push_back(Event::JobFinished {
                job_id: job_id.to_string(),
                state,
            });
            self.checkpoint(job_id);
            return;
        };
        let spec = &job.record.plan.spec;
        if job.joined.len() < spec.min_participants {
            job.record.state = JobState::Waiting;
            return;
        }
        let participants: Vec<ParticipantId> = job.joined.iter().copied().collect();
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
        job.record.secagg_rounds += 1;
        let timeout = Duration::from_millis(job.record.plan.spec.phase_timeout_ms);
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
        };
        for &p in &participants {
            *round.bytes_received.entry(p).or_default() += start.instruction.len() as u64 + 128;
            self.outbox
                .push_back((p, ToParticipant::RoundStart(start.clone())));
        }
        job.record.state = JobState::Running;
        job.round = Some(round);
        self.pump(now, job_id);
    }

    fn fail(&mut self, job_id: &str, why: String) {
        tracing::error!(job = job_id, reason = %why, "job failed");
        if let Some(job) = self.jobs.get_mut(job_id) {
            job.record.state = JobState::Failed(why.clone());
            job.round = None;
            for &p in &job.joined {
                self.outbox.push_back((
                    p,
                    ToParticipant::JobEnd {
                        job_id: job_id.to_string(),
                        state: "failed".into(),
                        detail: why.clone(),
                    },
                ));
            }
        }
        self.events.push_back(Event::JobFinished {
            job_id: job_id.to_string(),
            state: JobState::Failed(why),
        });
        self.checkpoint(job_id);
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
                ServerEvent::PhaseClosed { phase, .. } => {
                    let ms = now
                        .saturating_duration_since(round.phase_started)
                        .as_secs_f64()
                        * 1e3;
                    round.phase_ms.push((phase_name(phase).to_string(), ms));
                    round.phase_started = now;
                    round.phase = round.server.phase();
                }
                ServerEvent::Refused { from, error } => {
                    tracing::warn!(job = job_id, participant = from, %error, "message refused");
                    self.events.push_back(Event::Refused {
                        from,
                        reason: error.to_string(),
                    });
                }
                ServerEvent::Finished(out) => finished = Some(Ok(out)),
                ServerEvent::Failed(err) => finished = Some(Err(err.to_string())),
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
        result: Result<fedsilo_crypto::server::RoundOutput, String>,
    ) {
        let names = self.names.clone();
        let name = |id: &ParticipantId| {
            names
                .get(id)
                .cloned()
                .unwrap_or_else(|| format!("participant-{id}"))
        };
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        let Some(round) = job.round.take() else {
            return;
        };
        let mut summary = RoundSummary {
            job_id: job_id.to_string(),
            step: round.step.index,
            secagg_round: round.config.ctx.round,
            purpose: round.step.instruction.purpose().to_string(),
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
            aggregate_hash: String::new(),
            model_hash: String::new(),
            encoding: round.encoding.describe(),
            neighbours: round.config.neighbours,
            threshold: round.config.threshold,
            epsilon: None,
        };
        let absorbed = result.and_then(|out| {
            summary.survivors = out.survivors.iter().map(name).collect();
            summary.dropped = out
                .dropped
                .iter()
                .map(|(p, ph)| {
                    let why = round
                        .declined
                        .get(p)
                        .map(|r| format!("{} (declined: {r})", phase_name(*ph)))
                        .unwrap_or_else(|| phase_name(*ph).to_string());
                    (name(p), why)
                })
                .collect();
            let sum = round
                .encoding
                .decode_sum(&out.sum, out.survivors.len())
                .map_err(|e| format!("decoding the aggregate: {e}"))?;
            let bytes: Vec<u8> = sum.iter().flat_map(|v| v.to_le_bytes()).collect();
            summary.aggregate_hash = hash_hex(&bytes);
            job.record
                .plan
                .absorb(&sum, out.survivors.len())
                .map_err(|e| format!("absorbing the aggregate: {e}"))
        });
        let ok = match absorbed {
            Ok(()) => {
                job.attempts = 0;
                if let Some(dp) = &job.record.plan.spec.dp {
                    if summary.purpose == "train" {
                        job.record.epsilon = epsilon_after(dp, job.record.plan.dp_rounds);
                        summary.epsilon = Some(job.record.epsilon);
                    }
                }
                summary.outcome = "ok".into();
                true
            }
            Err(why) => {
                job.attempts += 1;
                summary.outcome = why;
                false
            }
        };
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

/// ε spent after `rounds` noisy rounds at the spec's noise multiplier (RDP accountant).
pub fn epsilon_after(dp: &fedsilo_ml::fed::DpSpec, rounds: u64) -> f64 {
    let mut acc = RdpAccountant::new();
    if acc.compose_gaussian(dp.noise_multiplier, rounds).is_err() {
        return f64::INFINITY;
    }
    acc.epsilon(dp.delta)
        .map(|(eps, _)| eps)
        .unwrap_or(f64::INFINITY)
}
