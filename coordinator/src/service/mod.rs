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
//! every message (a round's one `RoundStart` is shared, `Arc`, by the messages addressed to
//! each participant, and encoded once into the bytes every queue holds), and `Poll` drains
//! only the caller's own queue. Polls are admitted per participant ([`PollGate`]): a
//! participant whose polls keep coming back empty is held to [`Limits::poll_rate_per_sec`]
//! (`RESOURCE_EXHAUSTED` beyond it) and may have at most [`Limits::max_concurrent_polls`]
//! waiting at once, so one certificate polling in a loop costs the coordinator little and
//! takes nothing from anyone else.
//!
//! The listener ([`crate::net`]) bounds TLS handshakes, connections and idle time; the
//! tonic server bounds each request's duration and the requests in flight per connection.
//!
//! [`Store`]: crate::store::Store
//! [`AuditLog`]: crate::audit::AuditLog

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsilo_crypto::msg::ParticipantId;
use fedsilo_proto::pb;
use fedsilo_proto::pb::federation_server::FederationServer;
use fedsilo_proto::pb::operator_server::OperatorServer;
use fedsilo_proto::roster::Roster as RosterFile;
use fedsilo_proto::tls::{peer_name, server_rustls_config, TlsFiles};
use rand::RngCore;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use crate::audit::AuditError;
use crate::engine::{Coordinator, EngineError, JobRecord, JobStatus};
use crate::net::{Limits, LimitsError};
use crate::state::StateError;
use crate::store::StoreError;

mod actor;
mod federation;
mod mailbox;
mod operator;
mod poll_gate;
pub mod spans;
#[cfg(test)]
mod tests;

use actor::{Actor, Command};
use mailbox::Mailboxes;
use poll_gate::{HeartbeatGate, PollGate};

type RpcResult<T> = Result<Response<T>, Status>;

/// Longest a `Poll` may wait.
const MAX_POLL_WAIT: Duration = Duration::from_secs(25);
/// Longest job id accepted in a request (the engine launches no longer ids).
const MAX_JOB_ID_BYTES: usize = 128;
/// A participant's reason for declining a step (or an operator's note on a cancel) is cut to
/// this many bytes before it is logged and reported.
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
    /// The coordinator's TLS files do not make a server configuration.
    #[error("TLS")]
    Tls(#[source] fedsilo_proto::tls::TlsError),
    /// A job's last checkpoint does not restore.
    #[error("restoring job '{job}'")]
    Restore {
        job: String,
        #[source]
        source: EngineError,
    },
    /// The gRPC server stopped with an error.
    #[error("gRPC server")]
    Transport(#[source] tonic::transport::Error),
    /// The engine actor's task panicked or was cancelled.
    #[error("engine task")]
    EngineTask(#[source] tokio::task::JoinError),
    #[error("coordinator.toml [limits]: {0}")]
    Limits(#[from] LimitsError),
    #[error("cannot listen on {addr}")]
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
    /// Engine seed (graph seeds, job ids); `None` = from the OS. Simulations pass theirs.
    pub seed: Option<[u8; 32]>,
    /// The operations listener (dashboard, `/metrics`, `/healthz`); `None`: not served.
    pub ops: Option<crate::ops::OpsConfig>,
}

/// The shared face of the actor used by both services.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    mail: Arc<Mailboxes>,
    roster: Arc<RosterFile>,
    polls: Arc<PollGate>,
    heartbeats: Arc<HeartbeatGate>,
    /// Longest a `Poll` waits: [`MAX_POLL_WAIT`], or half the request timeout if shorter.
    max_poll_wait: Duration,
    /// The engine's liveness window (`[limits] liveness_window_ms`), told to nodes.
    liveness_window: Duration,
}

/// The gRPC status of an engine error; its message is the error's whole chain.
fn engine_status(e: EngineError) -> Status {
    let message = fedsilo_config::display_chain(&e);
    match e {
        EngineError::UnknownJob(_) | EngineError::NoSuchRound { .. } => Status::not_found(message),
        EngineError::UnknownParticipant(_) => Status::permission_denied(message),
        EngineError::NotInSession { .. }
        | EngineError::WrongPsiRole { .. }
        | EngineError::WrongMessage { .. }
        | EngineError::PassiveAddressed { .. }
        | EngineError::NoSuchPassive { .. }
        | EngineError::NoRecipient { .. } => Status::permission_denied(message),
        EngineError::InvalidJobId
        | EngineError::InvalidPsiJob(_)
        | EngineError::InvalidVerticalJob(_)
        | EngineError::InvalidJob(_)
        | EngineError::Protocol(_)
        | EngineError::BadCheckpoint { .. } => Status::invalid_argument(message),
        EngineError::DuplicateJob(_) => Status::already_exists(message),
        EngineError::WrongState { .. } => Status::failed_precondition(message),
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
    pb::JobStatus {
        job_id: s.job_id,
        state: pb::JobState::from(s.state.kind()) as i32,
        round: s.rounds_done,
        total_rounds: s.total_rounds,
        participants: s.participants,
        metrics: s.metrics.iter().map(Into::into).collect(),
        metrics_json: s.metrics_json,
        epsilon: s.epsilon,
        epsilon_budget: s.epsilon_budget,
        privacy: s.privacy.map(|p| pb::JobPrivacy {
            level: pb::DpLevel::from(p.level) as i32,
            epsilon_record: p.epsilon_record,
            epsilon_institution: p.epsilon_institution,
            delta: p.delta,
            noise_multiplier: p.noise_multiplier,
        }),
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
    let (store, mut audit) = crate::state::open(&cfg.state_dir)?;
    let recorded_audit = audit.position();
    let recorded_audit_at_start = recorded_audit.clone();
    let metrics = Arc::new(crate::ops::metrics::Metrics::new());
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
    let seed = cfg.seed.unwrap_or(seed);
    let mut engine = Coordinator::new(roster.to_crypto_roster(), names, seed);
    engine.set_liveness_window(cfg.limits.liveness_window());
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
                .map_err(|source| ServiceError::Restore {
                    job: job.clone(),
                    source,
                })?;
            let rec: Option<JobRecord> = serde_json::from_slice(&state).ok();
            tracing::info!(job = %job, step, state = ?rec.map(|r| r.state.label()), "restored job from checkpoint");
        }
    }
    let mail = Arc::new(Mailboxes::default());
    let (tx, rx) = mpsc::channel::<Command>(1024);
    let handle = Handle {
        tx,
        mail: mail.clone(),
        roster: Arc::new(roster),
        polls: Arc::new(PollGate::new(&cfg.limits)),
        heartbeats: Arc::new(HeartbeatGate::new(cfg.limits.liveness_window())),
        max_poll_wait: MAX_POLL_WAIT.min(cfg.limits.request_timeout() / 2),
        liveness_window: cfg.limits.liveness_window(),
    };
    // The dashboard's round history starts from the audit log's tail.
    let history = crate::ops::History::seeded(&audit.take_recent());
    let mut actor = Actor {
        engine,
        store,
        audit,
        recorded_audit,
        mail,
        last_round_hash,
        observer: cfg.observer.clone(),
        metrics: metrics.clone(),
        history,
        started_audit: recorded_audit_at_start,
        spans: Default::default(),
    };
    actor.drain().await?;
    let actor_task = tokio::spawn(actor.run(rx));
    let tls = server_rustls_config(&cfg.tls).map_err(ServiceError::Tls)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServiceError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let ops_task = match &cfg.ops {
        Some(ops) => Some(start_ops(ops, &cfg.tls, &handle, metrics.clone()).await?),
        None => None,
    };
    // Aborted when `serve` returns, however it returns.
    let _ops_task = ops_task.map(AbortOnDrop);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<FederationServer<Handle>>().await;
    health.set_serving::<OperatorServer<Handle>>().await;
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
        .add_service(health_service)
        .serve_with_incoming_shutdown(incoming, shutdown);
    let mut actor_task = actor_task;
    tokio::select! {
        r = server => r.map_err(ServiceError::Transport)?,
        r = &mut actor_task => return match r {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Ok(()),
            Err(e) => Err(ServiceError::EngineTask(e)),
        },
    }
    // The services are gone, so is every command sender (the operations listener holds
    // only a weak one): the actor drains and stops, and releases the store before `serve`
    // returns.
    drop(handle);
    match actor_task.await {
        Ok(r) => {
            if r.is_ok() {
                tracing::info!(state = %cfg.state_dir.display(),
                    "coordinator stopped: every write finished, store and audit log closed");
            }
            r
        }
        Err(e) => Err(ServiceError::EngineTask(e)),
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds the operations listener and spawns its server.
async fn start_ops(
    ops: &crate::ops::OpsConfig,
    tls: &TlsFiles,
    handle: &Handle,
    metrics: Arc<crate::ops::metrics::Metrics>,
) -> Result<tokio::task::JoinHandle<()>, ServiceError> {
    let tls = fedsilo_proto::tls::ops_rustls_config(tls).map_err(ServiceError::Tls)?;
    let listener = tokio::net::TcpListener::bind(ops.listen)
        .await
        .map_err(|source| ServiceError::Bind {
            addr: ops.listen,
            source,
        })?;
    // A weak sender: the listener and its connection tasks must not keep the actor alive
    // once the gRPC services are gone, or shutting down waits for the last browser.
    let asker = handle.tx.downgrade();
    let overview: Arc<dyn Fn() -> crate::ops::OverviewFuture + Send + Sync> = Arc::new(move || {
        let tx = asker.upgrade();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            tx?.send(Command::Overview { reply }).await.ok()?;
            answer.await.ok()
        })
    });
    let ctx = crate::ops::OpsContext {
        overview,
        metrics,
        token: ops.token.as_deref().map(Arc::from),
        operators: Arc::new(handle.roster.operators.clone()),
    };
    tracing::info!(listen = %ops.listen, token = ops.token.is_some(), "operations listener (dashboard, /metrics, /healthz) serving");
    Ok(tokio::spawn(crate::ops::serve(listener, tls, ctx)))
}
