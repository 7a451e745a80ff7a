//! The engine actor: one task owning the [`Coordinator`], the [`Store`] and the
//! [`AuditLog`]; handlers talk to it with [`Command`]s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use fedsilo_crypto::msg::ParticipantId;
use fedsilo_task::JobSpec;
use tokio::sync::{mpsc, oneshot};

use super::mailbox::{Encoder, Mailboxes};
use super::ServiceError;
use crate::audit::{AuditHead, AuditLog, AuditRecord};
use crate::engine::{Coordinator, EngineError, Event, JobStatus};
use crate::store::Store;

pub(super) enum Command {
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
    LaunchPsi {
        spec: fedsilo_task::psi::PsiJobSpec,
        reply: oneshot::Sender<Result<JobStatus, EngineError>>,
    },
    LaunchVertical {
        spec: Box<fedsilo_task::vertical::VerticalJobSpec>,
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
    /// A participant sent a heartbeat: alive, busy with a long step (no reply).
    Heartbeat { from: ParticipantId },
    Cancel {
        job: String,
        reason: String,
        reply: oneshot::Sender<Result<JobStatus, EngineError>>,
    },
    Resume {
        job: String,
        reply: oneshot::Sender<Result<JobStatus, EngineError>>,
    },
    /// What the operations dashboard and `/metrics` show.
    Overview {
        reply: oneshot::Sender<crate::ops::Overview>,
    },
}

/// The engine actor: owns the coordinator, the store and the audit log.
pub(super) struct Actor {
    pub(super) engine: Coordinator,
    pub(super) store: Store,
    pub(super) audit: AuditLog,
    /// The audit position the store holds (recorded with every checkpoint).
    pub(super) recorded_audit: AuditHead,
    pub(super) mail: Arc<Mailboxes>,
    pub(super) last_round_hash: BTreeMap<String, String>,
    pub(super) observer: Option<mpsc::UnboundedSender<crate::engine::RoundSummary>>,
    pub(super) metrics: Arc<crate::ops::metrics::Metrics>,
    pub(super) history: crate::ops::History,
    /// The audit head verified when the coordinator started.
    pub(super) started_audit: AuditHead,
    /// Tracing spans per round and phase (for OpenTelemetry), when anyone listens.
    pub(super) spans: super::spans::RoundSpans,
}

impl Actor {
    /// Serves commands and the engine's timer until every command sender is gone; stops
    /// early (with the error) when a drain cannot persist the engine's state.
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Command>) -> Result<(), ServiceError> {
        loop {
            let deadline = self.engine.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
                _ = sleep => self.engine.handle_timeout(Instant::now()),
            }
            if let Err(e) = self.drain().await {
                // A checkpoint or audit entry that cannot be written must not be lost
                // silently: stop serving rather than run on without durability.
                let error = fedsilo_config::display_chain(&e);
                tracing::error!(%error, "cannot persist coordinator state; stopping");
                return Err(e);
            }
        }
        Ok(())
    }

    /// Persists the engine's events (checkpoints, audit entries), then queues its messages:
    /// nothing of a step leaves before the step before it is on disk. Every checkpoint is
    /// committed with the audit log's position (the rounds before it are appended first); if
    /// entries were appended after the last checkpoint (a failed round), their position is
    /// recorded before any message leaves too.
    pub(super) async fn drain(&mut self) -> Result<(), ServiceError> {
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
                    let started = Instant::now();
                    self.store
                        .commit_step_audited(&job_id, &state, step, &state, round_hash, &audit)?;
                    self.metrics.store_commit(started.elapsed().as_secs_f64());
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
                    self.metrics.round(&r);
                    if super::spans::RoundSpans::enabled() {
                        self.spans.closed(&r);
                    }
                    self.history.round(&r);
                    self.audit.append(AuditRecord::of_round(&r, now_ms))?;
                }
                Event::Psi(summary) => {
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    tracing::info!(job = %summary.job_id, session = summary.session,
                        outcome = %summary.outcome(), "PSI session closed");
                    self.audit.append(AuditRecord::of_psi(&summary, now_ms))?;
                }
                Event::Vertical(summary) => {
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    tracing::info!(job = %summary.job_id, session = summary.session,
                        step = summary.step, "vertical step relayed");
                    self.audit
                        .append(AuditRecord::of_vertical(&summary, now_ms))?;
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
        if super::spans::RoundSpans::enabled() {
            self.spans.follow(&self.engine.active_rounds());
        }
        let mut encoder = Encoder::default();
        while let Some((to, m)) = self.engine.poll_transmit() {
            self.mail.push(to, encoder.queued(m)).await;
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

    pub(super) async fn handle(&mut self, cmd: Command) {
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
            Command::LaunchVertical { spec, reply } => {
                let r = self
                    .engine
                    .launch_vertical(now, *spec)
                    .map(|id| self.engine.job_status(&id));
                let _ = reply.send(r.and_then(|s| {
                    s.ok_or_else(|| EngineError::UnknownJob("just launched".into()))
                }));
            }
            Command::LaunchPsi { spec, reply } => {
                let r = self
                    .engine
                    .launch_psi(now, spec)
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
            Command::Heartbeat { from } => self.engine.handle_heartbeat(now, from),
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
            Command::Overview { reply } => {
                self.engine.handle_timeout(now);
                let jobs = self.engine.list_jobs();
                let participants = self.engine.participants_liveness(now);
                let head = self.audit.position();
                let audit = crate::ops::AuditView {
                    entries: head.entries,
                    status: format!(
                        "checked at start against the head the store recorded ({} entries); \
                         every entry since appended on it by this process",
                        self.started_audit.entries
                    ),
                    head: head.head,
                };
                let _ = reply.send(self.history.overview(&jobs, participants, audit));
            }
        }
    }
}
