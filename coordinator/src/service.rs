//! The coordinator's gRPC services: thin handlers around one engine actor.
//!
//! One task (the *actor*) owns the sans-IO [`Coordinator`], the durable [`Store`] and the
//! [`AuditLog`]. Handlers authenticate the caller from its TLS client certificate, convert the
//! protobuf message into core types, send a command to the actor and map its answer to a
//! gRPC status; they contain no protocol logic. After every command the actor drains the
//! engine: checkpoints are committed to the store and round summaries appended to the audit
//! log *first*, then messages go to per-participant queues (served by long-polling `Poll`),
//! so no message of a step leaves before the step before it is durable; finally the phase
//! timer is re-armed from `poll_timeout`.
//!
//! A queue never holds two rounds of one job: when a round starts (or the job ends), the
//! queued messages of that job's earlier rounds are dropped. A participant that was away
//! (killed, disconnected) therefore finds only the round in flight when it comes back, and
//! its queue does not grow while it is away.
//!
//! The hash of the round that produced each job's current model (exported as the model's
//! `round_sha256`) is committed with every checkpoint and reloaded on restart.
//!
//! Messages go only to the certificate they belong to: a queue is keyed by the participant
//! id the roster gives the *verified client certificate* of the caller, the engine addresses
//! every message (each participant gets its own copy of a `RoundStart`), and `Poll` drains
//! only the caller's own queue. Polls are admitted per participant ([`PollGate`]): a
//! participant whose polls keep coming back empty is held to [`Limits::poll_rate_per_sec`]
//! (`RESOURCE_EXHAUSTED` beyond it) and may have at most [`Limits::max_concurrent_polls`]
//! waiting at once, so one certificate polling in a loop costs the coordinator little and
//! takes nothing from anyone else.
//!
//! The listener ([`crate::net`]) bounds TLS handshakes, connections and idle time; the
//! tonic server bounds each request's duration and the requests in flight per connection.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsilo_crypto::msg::ParticipantId;
use fedsilo_proto::pb;
use fedsilo_proto::pb::federation_server::{Federation, FederationServer};
use fedsilo_proto::pb::operator_server::{Operator, OperatorServer};
use fedsilo_proto::roster::Roster as RosterFile;
use fedsilo_proto::tls::{peer_name, server_rustls_config, TlsFiles};
use fedsilo_task::JobSpec;
use rand::RngCore;
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tonic::{Request, Response, Status};

use crate::audit::{AuditError, AuditHead, AuditLog, AuditRecord};
use crate::engine::{Coordinator, EngineError, Event, JobRecord, JobStatus};
use crate::net::{Limits, LimitsError};
use crate::state::StateError;
use crate::store::{Store, StoreError};

type RpcResult<T> = Result<Response<T>, Status>;

/// Most messages one `Poll` returns.
const MAX_POLL_MESSAGES: usize = 64;
/// Longest a `Poll` may wait.
const MAX_POLL_WAIT: Duration = Duration::from_secs(25);
/// Longest job id accepted in a request (the engine launches no longer ids).
const MAX_JOB_ID_BYTES: usize = 128;
/// Most job ids one `Join` may name.
const MAX_JOIN_JOBS: usize = 1024;
/// A participant's reason for declining a step is cut to this many bytes before it is
/// logged and reported.
const MAX_DECLINE_REASON_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("roster {}", path.display())]
    Roster {
        path: PathBuf,
        #[source]
        source: fedsilo_proto::roster::RosterError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The state directory could not be opened (missing, lost or inconsistent state).
    #[error(transparent)]
    State(#[from] StateError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("restoring job '{job}': {message}")]
    Restore { job: String, message: String },
    #[error("gRPC server: {0}")]
    Transport(String),
    #[error("coordinator.toml [limits]: {0}")]
    Limits(#[from] LimitsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Where the coordinator keeps its files and how it is reached.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub listen: std::net::SocketAddr,
    pub state_dir: PathBuf,
    pub roster: PathBuf,
    pub tls: TlsFiles,
    /// Connection, request and poll limits.
    pub limits: Limits,
    /// Receives every round summary (simulations build their report from it).
    pub observer: Option<mpsc::UnboundedSender<crate::engine::RoundSummary>>,
}

enum Command {
    Join {
        from: ParticipantId,
        jobs: Vec<String>,
        reply: oneshot::Sender<Result<Vec<String>, EngineError>>,
    },
    Message {
        from: ParticipantId,
        msg: fedsilo_task::job::ToCoordinator,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Launch {
        spec: Box<JobSpec>,
        reply: oneshot::Sender<Result<JobStatus, EngineError>>,
    },
    Status {
        job: Option<String>,
        reply: oneshot::Sender<Vec<JobStatus>>,
    },
    Model {
        job: String,
        reply: oneshot::Sender<Option<String>>,
    },
    /// A participant polled: it is alive (no reply).
    Seen { from: ParticipantId },
    Cancel {
        job: String,
        reason: String,
        reply: oneshot::Sender<Result<JobStatus, EngineError>>,
    },
    Resume {
        job: String,
        reply: oneshot::Sender<Result<JobStatus, EngineError>>,
    },
}

/// One message waiting in a participant's queue.
struct Queued {
    job_id: String,
    /// `RoundStart` or a secure-aggregation request: meaningless once its round is over.
    round_scoped: bool,
    /// `RoundStart` or `JobEnd`: every earlier round of the job is over.
    supersedes: bool,
    /// `JobEnd`: stale once the job is resumed.
    ends_job: bool,
    msg: pb::ToParticipant,
}

impl Queued {
    fn new(m: fedsilo_task::job::ToParticipant) -> Self {
        use fedsilo_task::job::ToParticipant as T;
        let (job_id, round_scoped, supersedes) = match &m {
            T::RoundStart(s) => (s.config.ctx.job_id.clone(), true, true),
            T::SecAgg(m) => (m.ctx().job_id.clone(), true, false),
            T::RoundEnd { ctx, .. } => (ctx.job_id.clone(), false, false),
            T::JobEnd { job_id, .. } => (job_id.clone(), false, true),
        };
        Queued {
            job_id,
            round_scoped,
            supersedes,
            ends_job: matches!(m, T::JobEnd { .. }),
            msg: m.into(),
        }
    }
}

/// Messages waiting for each participant's next `Poll`.
#[derive(Default)]
struct Mailboxes {
    queues: Mutex<HashMap<ParticipantId, VecDeque<Queued>>>,
    notify: Mutex<HashMap<ParticipantId, Arc<Notify>>>,
}

impl Mailboxes {
    async fn notifier(&self, p: ParticipantId) -> Arc<Notify> {
        self.notify.lock().await.entry(p).or_default().clone()
    }
    async fn push(&self, p: ParticipantId, m: Queued) {
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
    async fn drop_job_ends(&self, job_id: &str) {
        let mut queues = self.queues.lock().await;
        for queue in queues.values_mut() {
            queue.retain(|q| !(q.ends_job && q.job_id == job_id));
        }
    }

    async fn has_mail(&self, p: ParticipantId) -> bool {
        self.queues
            .lock()
            .await
            .get(&p)
            .is_some_and(|q| !q.is_empty())
    }
    async fn take(&self, p: ParticipantId) -> Vec<pb::ToParticipant> {
        let mut q = self.queues.lock().await;
        let Some(queue) = q.get_mut(&p) else {
            return Vec::new();
        };
        let n = queue.len().min(MAX_POLL_MESSAGES);
        queue.drain(..n).map(|q| q.msg).collect()
    }
}

/// Admission of `Poll`s, per participant: a token bucket charged by polls that return no
/// message (capacity `poll_burst`, refilled at `poll_rate_per_sec`), and a cap on polls
/// waiting at once. A poll that finds messages waiting is always admitted.
struct PollGate {
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
struct PollTicket {
    gate: Arc<PollGate>,
    participant: ParticipantId,
}

impl PollGate {
    fn new(limits: &Limits) -> Self {
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

    fn enter(
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
    fn charge(&self, p: ParticipantId, now: Instant) {
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

/// The shared face of the actor used by both services.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    mail: Arc<Mailboxes>,
    roster: Arc<RosterFile>,
    polls: Arc<PollGate>,
    /// Longest a `Poll` waits: [`MAX_POLL_WAIT`], or half the request timeout if shorter.
    max_poll_wait: Duration,
}

fn engine_status(e: EngineError) -> Status {
    match e {
        EngineError::UnknownJob(_) | EngineError::NoSuchRound { .. } => {
            Status::not_found(e.to_string())
        }
        EngineError::UnknownParticipant(_) => Status::permission_denied(e.to_string()),
        EngineError::InvalidJob(_)
        | EngineError::Protocol(_)
        | EngineError::BadCheckpoint { .. } => Status::invalid_argument(e.to_string()),
        EngineError::DuplicateJob(_) => Status::already_exists(e.to_string()),
        EngineError::WrongState { .. } => Status::failed_precondition(e.to_string()),
    }
}

/// Refuses a job id no job can have, before it is echoed in errors and logs.
fn check_job_id(field: &str, id: &str) -> Result<(), Status> {
    if id.len() > MAX_JOB_ID_BYTES {
        return Err(Status::invalid_argument(format!(
            "{field}: {} bytes is not a job id (at most {MAX_JOB_ID_BYTES} bytes)",
            id.len()
        )));
    }
    Ok(())
}

fn status_pb(s: JobStatus) -> pb::JobStatus {
    // Until the engine's JobStatus carries `Plan::label_metrics()` itself: the same metrics,
    // read back from the engine's JSON.
    let metrics =
        match serde_json::from_str::<Vec<fedsilo_task::job::LabelMetrics>>(&s.metrics_json) {
            Ok(m) => m.iter().map(Into::into).collect(),
            Err(error) => {
                tracing::warn!(job = %s.job_id, %error, "job metrics unreadable");
                Vec::new()
            }
        };
    pb::JobStatus {
        job_id: s.job_id,
        state: pb::JobState::from(s.state.kind()) as i32,
        round: s.rounds_done,
        total_rounds: s.total_rounds,
        participants: s.participants,
        metrics,
        metrics_json: s.metrics_json,
        epsilon: s.epsilon,
        epsilon_budget: s.epsilon_budget,
        detail: s.detail,
    }
}

impl Handle {
    fn participant<T>(&self, req: &Request<T>) -> Result<ParticipantId, Status> {
        let name = peer_name(req)?;
        self.roster
            .by_cert_name(&name)
            .map(|(id, _)| id)
            .ok_or_else(|| {
                Status::permission_denied(format!("certificate '{name}' is not in the roster"))
            })
    }

    fn operator<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let name = peer_name(req)?;
        if self.roster.operators.iter().any(|o| o == &name) {
            Ok(name)
        } else {
            Err(Status::permission_denied(format!(
                "certificate '{name}' is not an operator of this coordinator"
            )))
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| Status::unavailable("coordinator is shutting down"))?;
        rx.await
            .map_err(|_| Status::internal("coordinator engine stopped"))
    }
}

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
        let mut msg = fedsilo_task::job::ToCoordinator::try_from(req.into_inner())
            .map_err(|e| Status::invalid_argument(format!("malformed message: {e}")))?;
        let ctx = match &mut msg {
            fedsilo_task::job::ToCoordinator::SecAgg(m) => m.ctx().clone(),
            fedsilo_task::job::ToCoordinator::Decline { ctx, reason } => {
                if reason.len() > MAX_DECLINE_REASON_BYTES {
                    let total = reason.len();
                    let mut cut = MAX_DECLINE_REASON_BYTES;
                    while !reason.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    reason.truncate(cut);
                    reason.push_str(&format!("… (cut from {total} bytes)"));
                }
                ctx.clone()
            }
        };
        check_job_id("ctx.job_id", &ctx.job_id)?;
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

#[tonic::async_trait]
impl Operator for Handle {
    async fn launch_job(&self, req: Request<pb::LaunchJobRequest>) -> RpcResult<pb::JobStatus> {
        let who = self.operator(&req)?;
        // Either arm: the typed `spec` or `spec_json`.
        let spec: JobSpec = fedsilo_proto::convert::launch_spec(req.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        spec.validate()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(operator = %who, dataset = %spec.dataset, "launching job");
        let status = self
            .ask(|reply| Command::Launch {
                spec: Box::new(spec),
                reply,
            })
            .await?
            .map_err(engine_status)?;
        Ok(Response::new(status_pb(status)))
    }

    async fn get_job(&self, req: Request<pb::JobRef>) -> RpcResult<pb::JobStatus> {
        self.operator(&req)?;
        let job = req.into_inner().job_id;
        check_job_id("job_id", &job)?;
        let mut list = self
            .ask(|reply| Command::Status {
                job: Some(job.clone()),
                reply,
            })
            .await?;
        list.pop()
            .map(|s| Response::new(status_pb(s)))
            .ok_or_else(|| Status::not_found(format!("unknown job '{job}'")))
    }

    async fn list_jobs(&self, req: Request<pb::ListJobsRequest>) -> RpcResult<pb::JobList> {
        self.operator(&req)?;
        let list = self
            .ask(|reply| Command::Status { job: None, reply })
            .await?;
        Ok(Response::new(pb::JobList {
            jobs: list.into_iter().map(status_pb).collect(),
        }))
    }

    async fn get_model(&self, req: Request<pb::JobRef>) -> RpcResult<pb::ModelReply> {
        self.operator(&req)?;
        let job = req.into_inner().job_id;
        check_job_id("job_id", &job)?;
        let model = self
            .ask(|reply| Command::Model {
                job: job.clone(),
                reply,
            })
            .await?
            .ok_or_else(|| Status::not_found(format!("job '{job}' has no model yet")))?;
        Ok(Response::new(pb::ModelReply { model_json: model }))
    }

    async fn cancel_job(&self, req: Request<pb::CancelJobRequest>) -> RpcResult<pb::JobStatus> {
        let who = self.operator(&req)?;
        let req = req.into_inner();
        check_job_id("job_id", &req.job_id)?;
        let mut reason = format!("cancelled by {who}");
        let note = req.reason.trim();
        if !note.is_empty() {
            let mut cut = note.len().min(MAX_DECLINE_REASON_BYTES);
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.push_str(": ");
            reason.push_str(&note[..cut]);
        }
        let status = self
            .ask(|reply| Command::Cancel {
                job: req.job_id,
                reason,
                reply,
            })
            .await?
            .map_err(engine_status)?;
        Ok(Response::new(status_pb(status)))
    }

    async fn resume_job(&self, req: Request<pb::JobRef>) -> RpcResult<pb::JobStatus> {
        let who = self.operator(&req)?;
        let job = req.into_inner().job_id;
        check_job_id("job_id", &job)?;
        tracing::info!(operator = %who, job = %job, "resuming job");
        let status = self
            .ask(|reply| Command::Resume { job, reply })
            .await?
            .map_err(engine_status)?;
        Ok(Response::new(status_pb(status)))
    }
}

/// The engine actor: owns the coordinator, the store and the audit log.
struct Actor {
    engine: Coordinator,
    store: Store,
    audit: AuditLog,
    /// The audit position the store holds (recorded with every checkpoint).
    recorded_audit: AuditHead,
    mail: Arc<Mailboxes>,
    last_round_hash: BTreeMap<String, String>,
    observer: Option<mpsc::UnboundedSender<crate::engine::RoundSummary>>,
}

impl Actor {
    /// Persists the engine's events (checkpoints, audit entries), then queues its messages:
    /// nothing of a step leaves before the step before it is on disk. Every checkpoint is
    /// committed with the audit log's position (the rounds before it are appended first); if
    /// entries were appended after the last checkpoint (a failed round), their position is
    /// recorded before any message leaves too.
    async fn drain(&mut self) -> Result<(), ServiceError> {
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                Event::Checkpoint {
                    job_id,
                    step,
                    state,
                } => {
                    // The round event that produced this state came first, so the hash is
                    // the one of the round whose aggregate the checkpointed plan absorbed.
                    let round_hash = self.last_round_hash.get(&job_id).map(String::as_str);
                    let audit = self.audit.position();
                    self.store
                        .commit_step_audited(&job_id, &state, step, &state, round_hash, &audit)?;
                    self.recorded_audit = audit;
                }
                Event::Round(r) => {
                    let r = *r;
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    tracing::info!(job = %r.job_id, round = r.secagg_round, purpose = %r.purpose,
                        survivors = r.survivors.len(), participants = r.participants.len(), outcome = %r.outcome, "round closed");
                    // Only a round whose aggregate was absorbed produced the current model.
                    if r.result.is_ok() && !r.aggregate_hash.is_empty() {
                        self.last_round_hash
                            .insert(r.job_id.clone(), r.aggregate_hash.clone());
                    }
                    if let Some(obs) = &self.observer {
                        let _ = obs.send(r.clone());
                    }
                    self.audit.append(AuditRecord::of_round(&r, now_ms))?;
                }
                Event::JobFinished { job_id, state } => {
                    tracing::info!(job = %job_id, state = %state.label(), "job ended");
                }
                Event::Refused { from, reason } => {
                    tracing::warn!(participant = from, %reason, "message refused");
                }
            }
        }
        let audit = self.audit.position();
        if audit != self.recorded_audit {
            self.store.record_audit_head(&audit)?;
            self.recorded_audit = audit;
        }
        while let Some((to, m)) = self.engine.poll_transmit() {
            self.mail.push(to, Queued::new(m)).await;
        }
        Ok(())
    }

    fn status_of(&self, job: &str) -> Result<JobStatus, EngineError> {
        self.engine
            .job_status(job)
            .ok_or_else(|| EngineError::UnknownJob(job.to_string()))
    }

    fn model_json(&self, job: &str) -> Option<String> {
        let plan = self.engine.plan(job)?;
        let model = plan.model()?;
        let artifact = fedsilo_task::ModelArtifact::new(
            plan,
            model,
            self.last_round_hash.get(job).cloned().unwrap_or_default(),
        );
        serde_json::to_string_pretty(&artifact).ok()
    }

    async fn handle(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Join { from, jobs, reply } => {
                let _ = reply.send(self.engine.handle_join(now, from, &jobs));
            }
            Command::Message { from, msg, reply } => {
                let _ = reply.send(self.engine.handle_message(now, from, msg));
            }
            Command::Launch { spec, reply } => {
                let features = spec.features.clone();
                let labels = spec.labels.clone();
                let r = self
                    .engine
                    .launch(now, *spec, features, labels)
                    .map(|id| self.engine.job_status(&id));
                let _ = reply.send(r.and_then(|s| {
                    s.ok_or_else(|| EngineError::UnknownJob("just launched".into()))
                }));
            }
            Command::Status { job, reply } => {
                // Brings the engine's clock (the ages in `detail`) up to now.
                self.engine.handle_timeout(now);
                let list = match job {
                    Some(j) => self.engine.job_status(&j).into_iter().collect(),
                    None => self.engine.list_jobs(),
                };
                let _ = reply.send(list);
            }
            Command::Model { job, reply } => {
                let _ = reply.send(self.model_json(&job));
            }
            Command::Seen { from } => self.engine.handle_seen(now, from),
            Command::Cancel { job, reason, reply } => {
                let r = self
                    .engine
                    .cancel(now, &job, reason)
                    .and_then(|()| self.status_of(&job));
                let _ = reply.send(r);
            }
            Command::Resume { job, reply } => {
                let r = self.engine.resume(now, &job);
                if r.is_ok() {
                    self.mail.drop_job_ends(&job).await;
                }
                let _ = reply.send(r.and_then(|()| self.status_of(&job)));
            }
        }
    }
}

fn load_roster(path: &Path) -> Result<RosterFile, ServiceError> {
    let r = RosterFile::load(path).map_err(|source| ServiceError::Roster {
        path: path.to_path_buf(),
        source,
    })?;
    r.validate().map_err(|source| ServiceError::Roster {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(r)
}

/// Opens the state directory (initialised by [`crate::state::init`]; refused if anything in it
/// was lost, see [`crate::state::open`]), restores every job from its last checkpoint and serves
/// until `shutdown` resolves. On shutdown the services stop taking requests, the engine actor
/// finishes the command and the writes in progress, and the store is closed before this returns.
pub async fn serve(
    cfg: ServiceConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    cfg.limits.validate()?;
    let roster = load_roster(&cfg.roster)?;
    let (store, audit) = crate::state::open(&cfg.state_dir)?;
    let recorded_audit = audit.position();
    let names: BTreeMap<ParticipantId, String> = roster
        .institutions
        .iter()
        .filter_map(|e| {
            roster
                .participant_id(&e.name)
                .map(|id| (id, e.name.clone()))
        })
        .collect();
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let mut engine = Coordinator::new(roster.to_crypto_roster(), names, seed);
    let now = Instant::now();
    let jobs = store.list_jobs()?;
    let mut last_round_hash = BTreeMap::new();
    for (job, _) in &jobs {
        if let Some((step, state)) = store.latest_checkpoint(job)? {
            if let Some(hash) = store.round_sha256(job, step)? {
                last_round_hash.insert(job.clone(), hash);
            }
            engine
                .restore(now, job, &state)
                .map_err(|e| ServiceError::Restore {
                    job: job.clone(),
                    message: e.to_string(),
                })?;
            let rec: Option<JobRecord> = serde_json::from_slice(&state).ok();
            tracing::info!(job = %job, step, state = ?rec.map(|r| r.state.label()), "restored job from checkpoint");
        }
    }
    let mail = Arc::new(Mailboxes::default());
    let (tx, mut rx) = mpsc::channel::<Command>(1024);
    let handle = Handle {
        tx,
        mail: mail.clone(),
        roster: Arc::new(roster),
        polls: Arc::new(PollGate::new(&cfg.limits)),
        max_poll_wait: MAX_POLL_WAIT.min(cfg.limits.request_timeout() / 2),
    };
    let mut actor = Actor {
        engine,
        store,
        audit,
        recorded_audit,
        mail,
        last_round_hash,
        observer: cfg.observer.clone(),
    };
    actor.drain().await?;
    let actor_task = tokio::spawn(async move {
        loop {
            let deadline = actor.engine.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => actor.handle(cmd).await,
                    None => break,
                },
                _ = sleep => actor.engine.handle_timeout(Instant::now()),
            }
            if let Err(e) = actor.drain().await {
                // A checkpoint or audit entry that cannot be written must not be lost
                // silently: stop serving rather than run on without durability.
                tracing::error!(error = %e, "cannot persist coordinator state; stopping");
                return Err(e);
            }
        }
        Ok(())
    });
    let tls = server_rustls_config(&cfg.tls).map_err(|e| ServiceError::Tls(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServiceError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let limits = &cfg.limits;
    let (incoming, connections) = crate::net::listen(listener, tls, limits);
    tracing::info!(listen = %cfg.listen, state = %cfg.state_dir.display(), ?limits, "coordinator serving");
    let max = fedsilo_proto::convert::MAX_MESSAGE_BYTES;
    let server = tonic::transport::Server::builder()
        .timeout(limits.request_timeout())
        .concurrency_limit_per_connection(limits.max_streams_per_connection as usize)
        .max_concurrent_streams(limits.max_streams_per_connection)
        .http2_keepalive_interval(Some(limits.keepalive_interval()))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout()))
        .layer(crate::net::ActivityLayer::new(connections))
        .add_service(
            FederationServer::new(handle.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(OperatorServer::new(handle.clone()))
        .serve_with_incoming_shutdown(incoming, shutdown);
    let mut actor_task = actor_task;
    tokio::select! {
        r = server => r.map_err(|e| ServiceError::Transport(e.to_string()))?,
        r = &mut actor_task => return match r {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Ok(()),
            Err(e) => Err(ServiceError::Transport(format!("engine task: {e}"))),
        },
    }
    // The services are gone, so is every command sender: the actor drains and stops, and
    // releases the store before `serve` returns.
    drop(handle);
    match actor_task.await {
        Ok(r) => {
            if r.is_ok() {
                tracing::info!(state = %cfg.state_dir.display(),
                    "coordinator stopped: every write finished, store and audit log closed");
            }
            r
        }
        Err(e) => Err(ServiceError::Transport(format!("engine task: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsilo_crypto::encoding::{FixedPoint, Modulus};
    use fedsilo_crypto::msg::{ConsistencyRequest, RoundConfig, RoundContext, ServerMsg};
    use fedsilo_task::job::{RoundStart, ToParticipant};

    fn ctx(job: &str, round: u64) -> RoundContext {
        RoundContext {
            job_id: job.into(),
            round,
        }
    }

    fn start(job: &str, round: u64) -> ToParticipant {
        ToParticipant::RoundStart(RoundStart {
            config: RoundConfig {
                ctx: ctx(job, round),
                participants: vec![0, 1, 2],
                neighbours: 2,
                threshold: 2,
                vector_len: 3,
                modulus: Modulus::Pow64,
                graph_seed: [0; 32],
            },
            encoding: FixedPoint::choose(10.0, 3).unwrap(),
            instruction: "{}".into(),
            phase_timeout_ms: 1000,
        })
    }

    fn request(job: &str, round: u64) -> ToParticipant {
        ToParticipant::SecAgg(ServerMsg::ConsistencyCheck(ConsistencyRequest {
            ctx: ctx(job, round),
            survivors: vec![0, 1],
        }))
    }

    fn end(job: &str, round: u64) -> ToParticipant {
        ToParticipant::RoundEnd {
            ctx: ctx(job, round),
            ok: true,
            detail: "ok".into(),
        }
    }

    /// (job, round, kind) of what a poll returns.
    fn seen(msgs: Vec<pb::ToParticipant>) -> Vec<(String, u64, &'static str)> {
        msgs.into_iter()
            .map(|m| match ToParticipant::try_from(m).unwrap() {
                ToParticipant::RoundStart(s) => (s.config.ctx.job_id, s.config.ctx.round, "start"),
                ToParticipant::SecAgg(m) => (m.ctx().job_id.clone(), m.ctx().round, "request"),
                ToParticipant::RoundEnd { ctx, .. } => (ctx.job_id, ctx.round, "end"),
                ToParticipant::JobEnd { job_id, .. } => (job_id, 0, "job end"),
            })
            .collect()
    }

    #[test]
    fn empty_polls_are_rate_limited_and_waiting_polls_capped() {
        let limits = Limits {
            poll_burst: 3,
            poll_rate_per_sec: 2.0,
            max_concurrent_polls: 2,
            ..Limits::default()
        };
        let gate = Arc::new(PollGate::new(&limits));
        let t0 = Instant::now();
        let exhausted = |r: Result<PollTicket, Status>| match r {
            Err(s) => s.code() == tonic::Code::ResourceExhausted,
            Ok(_) => false,
        };
        // A burst of three empty polls, then refused...
        for _ in 0..3 {
            let t = gate.enter(1, t0, false).unwrap_or_else(|s| panic!("{s:?}"));
            gate.charge(1, t0);
            drop(t);
        }
        assert!(exhausted(gate.enter(1, t0, false)));
        // ...unless messages are waiting for it.
        assert!(gate.enter(1, t0, true).is_ok());
        // Another participant has a bucket of its own.
        assert!(gate.enter(2, t0, false).is_ok());
        // Two polls per second come back.
        assert!(exhausted(gate.enter(
            1,
            t0 + Duration::from_millis(200),
            false
        )));
        assert!(gate
            .enter(1, t0 + Duration::from_millis(500), false)
            .is_ok());
        // At most two polls of one participant wait at once; a finished one frees a place.
        let a = gate.enter(3, t0, false).unwrap_or_else(|s| panic!("{s:?}"));
        let _b = gate.enter(3, t0, false).unwrap_or_else(|s| panic!("{s:?}"));
        assert!(exhausted(gate.enter(3, t0, true)));
        drop(a);
        assert!(gate.enter(3, t0, false).is_ok());
    }

    #[tokio::test]
    async fn a_queue_never_holds_two_rounds_of_one_job() {
        let mail = Mailboxes::default();
        for m in [
            start("j", 0),
            request("j", 0),
            start("k", 4),
            end("j", 0),
            start("j", 1),
            request("j", 1),
        ] {
            mail.push(7, Queued::new(m)).await;
        }
        // Round 0 of "j" is over: its start and request are gone; "k" is untouched.
        assert_eq!(
            seen(mail.take(7).await),
            [
                ("k".into(), 4, "start"),
                ("j".into(), 0, "end"),
                ("j".into(), 1, "start"),
                ("j".into(), 1, "request"),
            ]
        );
        mail.push(7, Queued::new(start("j", 2))).await;
        mail.push(7, Queued::new(request("j", 2))).await;
        mail.push(
            7,
            Queued::new(ToParticipant::JobEnd {
                job_id: "j".into(),
                state: fedsilo_task::job::JobState::Finished,
                detail: String::new(),
            }),
        )
        .await;
        assert_eq!(seen(mail.take(7).await), [("j".into(), 0, "job end")]);
        assert!(mail.take(8).await.is_empty());
    }

    #[tokio::test]
    async fn a_resumed_job_drops_its_undelivered_job_end() {
        let mail = Mailboxes::default();
        let job_end = |job: &str| {
            Queued::new(ToParticipant::JobEnd {
                job_id: job.into(),
                state: fedsilo_task::job::JobState::Cancelled,
                detail: String::new(),
            })
        };
        mail.push(7, job_end("j")).await;
        mail.push(7, job_end("k")).await;
        mail.push(8, job_end("j")).await;
        mail.drop_job_ends("j").await;
        assert_eq!(seen(mail.take(7).await), [("k".into(), 0, "job end")]);
        assert!(mail.take(8).await.is_empty());
    }
}
