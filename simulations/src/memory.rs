//! The in-memory transport: a whole federation in one process.
//!
//! It drives the very same sans-IO [`Coordinator`] and [`Worker`]s as the gRPC services, on a
//! virtual clock: real elapsed time plus the phase timeouts it skips over when every
//! participant that is still talking has answered. Participants run in parallel (rayon);
//! the coordinator is fed sequentially, as a single server would be.
//!
//! Faults from the scenario are applied at the transport: a participant that *drops* stops
//! sending from the given phase of the given round; a *straggler*'s messages are held until the
//! phase deadline has passed (the coordinator then refuses them as late); a *late joiner*
//! joins the job only when it reaches the given round.
//!
//! Liveness: every participant is seen by the coordinator on every pass of the loop (as a
//! gRPC node is on every poll), so one that dropped out of a round is present again for the
//! round after the next pass.
//!
//! PSI jobs (vertical datasets): each institution also runs the participant's own
//! [`PsiDriver`] (one [`fedsilo_crypto::psi::PsiParty`] per session), fed the id column of its
//! part of the dataset in chunks as `participant join` reads a file, and the coordinator
//! relays their messages exactly as the gRPC service does. The transport only moves
//! messages, hands over ids when a driver asks, keeps each alignment a party reports (the
//! node would write it to its state directory) and times each party's PSI work.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsilo_coordinator::engine::{
    Coordinator, EngineError, Event, JobRecord, JobState, PsiRecord, PsiSummary, RoundSummary,
};
use fedsilo_crypto::msg::{ParticipantId, Phase};
use fedsilo_participant::psi::{
    report as psi_report, Alignment, PsiDriver, PsiEvent, PsiJobError, ID_CHUNK_ROWS,
};
use fedsilo_participant::worker::Worker;
use fedsilo_task::job::{ToCoordinator, ToParticipant};
use fedsilo_task::psi::PsiJobSpec;
use fedsilo_task::JobSpec;
use rayon::prelude::*;

use crate::federation::{self, Federation, FederationError};
use crate::scenario::{EventKind, Scenario};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("launching job")]
    Launch(#[source] EngineError),
    #[error("launching PSI job")]
    LaunchPsi(#[source] EngineError),
    #[error("the federation made no progress: {0}")]
    Stalled(String),
    #[error("the checkpoint of job '{job}' does not decode")]
    Checkpoint {
        job: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Federation(#[from] FederationError),
}

/// Runs the scenario's federation in memory; returns every job's last checkpointed record
/// and the round summaries observed, in order.
pub fn run(
    s: &Scenario,
    fed: &Federation,
    progress: &mut dyn FnMut(&RoundSummary),
) -> Result<(BTreeMap<String, JobRecord>, Vec<RoundSummary>), SimError> {
    let r = run_all(s, fed, progress)?;
    Ok((r.records, r.rounds))
}

/// What one in-memory run produced: the training jobs' records and rounds, and the PSI.
#[derive(Debug)]
pub struct MemoryRun {
    pub records: BTreeMap<String, JobRecord>,
    pub rounds: Vec<RoundSummary>,
    pub psi: PsiObserved,
}

/// What the PSI jobs did, as the transport saw it.
#[derive(Debug, Default)]
pub struct PsiObserved {
    /// Every session the coordinator closed or failed, in order.
    pub sessions: Vec<PsiSummary>,
    /// Each PSI job's final record (what the coordinator checkpointed).
    pub records: BTreeMap<String, PsiRecord>,
    /// Every alignment a party reported: (institution, alignment).
    pub alignments: Vec<(String, Alignment)>,
    /// Time each party spent in its PSI driver for a session: (job, session, institution).
    pub busy: BTreeMap<(String, u64, String), Duration>,
}

/// One institution's PSI side: the participant's driver and the id columns it holds.
pub struct PsiNode {
    pub name: String,
    pub driver: PsiDriver,
    /// Dataset → ids in the party's row order.
    pub ids: BTreeMap<String, Arc<[String]>>,
    busy: Duration,
}

impl PsiNode {
    pub fn new(name: String, driver: PsiDriver, ids: BTreeMap<String, Arc<[String]>>) -> Self {
        PsiNode {
            name,
            driver,
            ids,
            busy: Duration::ZERO,
        }
    }

    /// Hands the driver what the coordinator sent, then does what a node does after a poll:
    /// gives ids when asked (chunks of [`ID_CHUNK_ROWS`]), keeps each alignment before its
    /// report, and collects every message to submit.
    fn step(&mut self, msgs: Vec<ToParticipant>) -> (Vec<ToCoordinator>, Vec<Alignment>) {
        let started = Instant::now();
        let mut out = Vec::new();
        let mut alignments = Vec::new();
        for m in msgs {
            match m {
                ToParticipant::PsiStart(start) => self.driver.handle_start(start),
                ToParticipant::Psi(m) => self.driver.handle_message(m),
                ToParticipant::JobEnd { job_id, .. } => self.driver.job_ended(&job_id),
                _ => {}
            }
        }
        loop {
            let mut moved = false;
            while let Some(ev) = self.driver.poll_event() {
                moved = true;
                match ev {
                    PsiEvent::NeedIds(start) => self.feed(&start.job_id, &start.dataset),
                    PsiEvent::Done { start, output } => {
                        alignments.push(Alignment::new(&start, &output));
                        out.push(psi_report(&start, &output));
                    }
                    PsiEvent::Failed { .. } => {}
                }
            }
            match self.driver.poll_transmit() {
                Some(m) => out.push(m),
                None if !moved => break,
                None => {}
            }
        }
        self.busy += started.elapsed();
        (out, alignments)
    }

    fn feed(&mut self, job_id: &str, dataset: &str) {
        let Some(ids) = self.ids.get(dataset).cloned() else {
            self.driver.abort(
                job_id,
                &PsiJobError::UnknownDataset {
                    job: job_id.to_string(),
                    dataset: dataset.to_string(),
                },
            );
            return;
        };
        for chunk in ids.chunks(ID_CHUNK_ROWS) {
            if self.driver.push_ids(job_id, chunk).is_err() {
                return;
            }
        }
        let _ = self.driver.finish_ids(job_id);
    }
}

/// Every institution's PSI node for the scenario's vertical datasets.
fn psi_nodes(
    s: &Scenario,
    fed: &Federation,
    keys: &[Arc<fedsilo_crypto::keys::IdentityKey>],
) -> Vec<PsiNode> {
    let peers: BTreeMap<String, String> = fed
        .names
        .iter()
        .zip(keys)
        .map(|(n, k)| (n.clone(), hex::encode(k.public_key())))
        .collect();
    fed.names
        .iter()
        .zip(keys)
        .map(|(name, key)| {
            let ids = fed
                .vertical
                .iter()
                .filter_map(|(d, v)| {
                    let part = v.part(name)?;
                    Some((
                        d.clone(),
                        Arc::from(part.table.ids.clone().into_boxed_slice()),
                    ))
                })
                .collect();
            let driver = PsiDriver::new(
                Arc::clone(key),
                peers.clone(),
                federation::seed_bytes(s.seed, &format!("psi/{name}")),
            );
            PsiNode::new(name.clone(), driver, ids)
        })
        .collect()
}

/// [`run`], with the PSI jobs' results.
pub fn run_all(
    s: &Scenario,
    fed: &Federation,
    progress: &mut dyn FnMut(&RoundSummary),
) -> Result<MemoryRun, SimError> {
    let n = fed.names.len();
    let (keys, roster) = federation::identities(s, &fed.names)?;
    let psi = if s.psi.is_empty() {
        Vec::new()
    } else {
        psi_nodes(s, fed, &keys)
    };
    let names: BTreeMap<ParticipantId, String> = fed
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| (i as ParticipantId, n.clone()))
        .collect();
    let coordinator = Coordinator::new(roster.clone(), names, federation::coordinator_seed(s));
    let roster = Arc::new(roster);
    let workers: Vec<Worker> = keys
        .into_iter()
        .zip(&fed.names)
        .enumerate()
        .map(|(i, (key, name))| {
            Worker::new(
                i as ParticipantId,
                key,
                roster.clone(),
                fed.datasets_of(i),
                federation::seed_bytes(s.seed, &format!("worker/{name}")),
            )
        })
        .collect();
    let faults = s
        .events
        .iter()
        .filter_map(|e| {
            Some(Fault {
                kind: e.kind,
                participant: fed.names.iter().position(|n| n == &e.institution)? as ParticipantId,
                job_id: e.job.clone(),
                round: e.round,
                phase: e.phase,
            })
        })
        .collect();
    let mut sim = MemoryFederation::new(coordinator, workers, faults);
    sim.psi = psi;
    for p in &s.psi {
        sim.launch_psi(s.psi_spec(p))?;
    }
    for job in &s.jobs {
        let (features, labels) = federation::job_columns(job, fed)?;
        sim.launch(federation::job_spec(s, job, n), features, labels)?;
    }
    sim.run(progress)?;
    let mut records = BTreeMap::new();
    for (job, bytes) in &sim.observed.last_checkpoint {
        if !s.jobs.iter().any(|j| &j.name == job) {
            continue;
        }
        let rec: JobRecord =
            serde_json::from_slice(bytes).map_err(|source| SimError::Checkpoint {
                job: job.clone(),
                source,
            })?;
        records.insert(job.clone(), rec);
    }
    let mut psi = std::mem::take(&mut sim.observed.psi);
    for p in &s.psi {
        if let Some(r) = sim.coordinator.psi_record(&p.name) {
            psi.records.insert(p.name.clone(), r.clone());
        }
    }
    Ok(MemoryRun {
        records,
        rounds: std::mem::take(&mut sim.observed.rounds),
        psi,
    })
}

/// A fault applied by the transport.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub kind: EventKind,
    pub participant: ParticipantId,
    pub job_id: String,
    pub round: u64,
    pub phase: Phase,
}

/// What the driver saw, for reports.
#[derive(Debug, Default)]
pub struct Observations {
    pub rounds: Vec<RoundSummary>,
    pub checkpoints: usize,
    pub refused: Vec<(ParticipantId, String)>,
    pub finished: BTreeMap<String, JobState>,
    pub last_checkpoint: BTreeMap<String, Vec<u8>>,
    pub psi: PsiObserved,
}

/// A federation in one process.
pub struct MemoryFederation {
    pub coordinator: Coordinator,
    workers: Vec<Worker>,
    faults: Vec<Fault>,
    base: Instant,
    skipped: Duration,
    held: Vec<(ParticipantId, ToCoordinator)>,
    pending_joins: BTreeSet<(String, ParticipantId)>,
    /// PSI nodes, `psi[i]` of participant `i` (empty: the federation runs no PSI job).
    pub psi: Vec<PsiNode>,
    /// Each party's PSI busy time when the coordinator opened a session with it.
    psi_busy_at_start: BTreeMap<(String, u64, ParticipantId), Duration>,
    pub observed: Observations,
}

impl std::fmt::Debug for MemoryFederation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryFederation")
            .field("workers", &self.workers.len())
            .field("faults", &self.faults)
            .finish()
    }
}

impl MemoryFederation {
    /// `workers[i]` must have participant id `i`.
    pub fn new(coordinator: Coordinator, workers: Vec<Worker>, faults: Vec<Fault>) -> Self {
        MemoryFederation {
            coordinator,
            workers,
            faults,
            base: Instant::now(),
            skipped: Duration::ZERO,
            held: Vec::new(),
            pending_joins: BTreeSet::new(),
            psi: Vec::new(),
            psi_busy_at_start: BTreeMap::new(),
            observed: Observations::default(),
        }
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.base + self.base.elapsed() + self.skipped
    }

    /// Launches a job and lets every participant join it (late joiners when due).
    pub fn launch(
        &mut self,
        spec: JobSpec,
        features: Vec<String>,
        labels: Vec<String>,
    ) -> Result<String, SimError> {
        let now = self.now();
        let id = self
            .coordinator
            .launch(now, spec, features, labels)
            .map_err(SimError::Launch)?;
        for w in 0..self.workers.len() as ParticipantId {
            self.pending_joins.insert((id.clone(), w));
        }
        self.join_due();
        Ok(id)
    }

    /// Launches a PSI job and lets every participant join it.
    pub fn launch_psi(&mut self, spec: PsiJobSpec) -> Result<String, SimError> {
        let now = self.now();
        let id = self
            .coordinator
            .launch_psi(now, spec)
            .map_err(SimError::LaunchPsi)?;
        for w in 0..self.workers.len() as ParticipantId {
            self.pending_joins.insert((id.clone(), w));
        }
        self.join_due();
        Ok(id)
    }

    /// Lets every participant join an existing (e.g. restored) job now.
    pub fn join_all(&mut self, job_id: &str) {
        for w in 0..self.workers.len() as ParticipantId {
            self.pending_joins.insert((job_id.to_string(), w));
        }
        self.join_due();
    }

    fn join_due(&mut self) {
        let now = self.now();
        let due: Vec<(String, ParticipantId)> = self
            .pending_joins
            .iter()
            .filter(|(job, p)| {
                let step = self
                    .coordinator
                    .plan(job)
                    .map(|pl| pl.step_index())
                    .unwrap_or(0);
                !self.faults.iter().any(|f| {
                    f.kind == EventKind::JoinLate
                        && f.participant == *p
                        && &f.job_id == job
                        && step < f.round
                })
            })
            .cloned()
            .collect();
        for (job, p) in due {
            self.pending_joins.remove(&(job.clone(), p));
            if let Err(e) = self.coordinator.handle_join(now, p, &[job]) {
                tracing::warn!(participant = p, error = %e, "join refused");
            }
        }
    }

    fn fault_for(&self, from: ParticipantId, msg: &ToCoordinator) -> Option<EventKind> {
        let ToCoordinator::SecAgg(m) = msg else {
            return None;
        };
        let ctx = m.ctx();
        self.faults
            .iter()
            .find(|f| {
                f.kind != EventKind::JoinLate
                    && f.participant == from
                    && f.job_id == ctx.job_id
                    && f.round == ctx.round
                    && m.phase() >= f.phase
            })
            .map(|f| f.kind)
    }

    fn drain_events(&mut self, on_round: &mut dyn FnMut(&RoundSummary)) {
        while let Some(ev) = self.coordinator.poll_event() {
            match ev {
                Event::Round(s) => {
                    on_round(&s);
                    self.observed.rounds.push(*s);
                }
                Event::Checkpoint { job_id, state, .. } => {
                    self.observed.checkpoints += 1;
                    self.observed.last_checkpoint.insert(job_id, state);
                }
                Event::JobFinished { job_id, state } => {
                    self.observed.finished.insert(job_id, state);
                }
                Event::Refused { from, reason } => self.observed.refused.push((from, reason)),
                // Vertical models run in memory through `vertical_models`, not as jobs.
                Event::Vertical(_) => {}
                Event::Psi(summary) => {
                    for name in [&summary.active, &summary.passive] {
                        let Some(p) = self.psi.iter().position(|n| &n.name == name) else {
                            continue;
                        };
                        let key = (summary.job_id.clone(), summary.session, p as ParticipantId);
                        let at_start = self.psi_busy_at_start.remove(&key).unwrap_or_default();
                        let busy = self.psi.get(p).map(|n| n.busy).unwrap_or_default();
                        self.observed.psi.busy.insert(
                            (summary.job_id.clone(), summary.session, name.clone()),
                            busy.saturating_sub(at_start),
                        );
                    }
                    self.observed.psi.sessions.push(*summary);
                }
            }
        }
    }

    /// Every participant polls: the coordinator sees it alive now.
    fn poll_all(&mut self) {
        let now = self.now();
        for p in 0..self.workers.len() as ParticipantId {
            self.coordinator.handle_seen(now, p);
        }
    }

    /// Runs until every launched job has finished, failed or been cancelled.
    pub fn run(&mut self, on_round: &mut dyn FnMut(&RoundSummary)) -> Result<(), SimError> {
        let n = self.workers.len();
        loop {
            self.poll_all();
            self.join_due();
            let mut moved = false;
            let mut inbox: Vec<Vec<ToParticipant>> = vec![Vec::new(); n];
            let mut psi_inbox: Vec<Vec<ToParticipant>> = vec![Vec::new(); self.psi.len()];
            while let Some((to, m)) = self.coordinator.poll_transmit() {
                moved = true;
                let to_psi = psi_inbox.get_mut(to as usize);
                match (m, to_psi) {
                    (ToParticipant::PsiStart(start), Some(q)) => {
                        let busy = self.psi.get(to as usize).map(|n| n.busy);
                        self.psi_busy_at_start.insert(
                            (start.job_id.clone(), start.session, to),
                            busy.unwrap_or_default(),
                        );
                        q.push(ToParticipant::PsiStart(start));
                    }
                    (m @ ToParticipant::Psi(_), Some(q)) => q.push(m),
                    (m @ ToParticipant::JobEnd { .. }, Some(q)) => {
                        q.push(m.clone());
                        if let Some(w) = inbox.get_mut(to as usize) {
                            w.push(m);
                        }
                    }
                    (m, _) => {
                        if let Some(q) = inbox.get_mut(to as usize) {
                            q.push(m);
                        }
                    }
                }
            }
            if !self.psi.is_empty() {
                let psi_out: Vec<(Vec<ToCoordinator>, Vec<Alignment>)> = self
                    .psi
                    .par_iter_mut()
                    .zip(psi_inbox)
                    .map(|(node, msgs)| node.step(msgs))
                    .collect();
                for (p, (msgs, alignments)) in psi_out.into_iter().enumerate() {
                    let name = self.psi.get(p).map(|n| n.name.clone()).unwrap_or_default();
                    for a in alignments {
                        self.observed.psi.alignments.push((name.clone(), a));
                    }
                    for m in msgs {
                        moved = true;
                        let now = self.now();
                        if let Err(e) = self.coordinator.handle_message(now, p as ParticipantId, m)
                        {
                            tracing::debug!(participant = p, error = %e, "coordinator refused a PSI message");
                        }
                    }
                }
                self.drain_events(on_round);
            }
            let outs: Vec<Vec<ToCoordinator>> = self
                .workers
                .par_iter_mut()
                .zip(inbox)
                .map(|(w, msgs)| {
                    for m in msgs {
                        if let Err(e) = w.handle_message(m) {
                            tracing::debug!(participant = w.id(), error = %e, "worker refused a message");
                        }
                    }
                    while w.poll_event().is_some() {}
                    std::iter::from_fn(|| w.poll_transmit()).collect()
                })
                .collect();
            for (p, msgs) in outs.into_iter().enumerate() {
                let p = p as ParticipantId;
                for m in msgs {
                    moved = true;
                    match self.fault_for(p, &m) {
                        Some(EventKind::Drop) => {}
                        Some(EventKind::Straggle) => self.held.push((p, m)),
                        _ => {
                            let now = self.now();
                            if let Err(e) = self.coordinator.handle_message(now, p, m) {
                                tracing::debug!(participant = p, error = %e, "coordinator refused a message");
                            }
                        }
                    }
                }
            }
            self.drain_events(on_round);
            if moved {
                continue;
            }
            let all_done = self
                .coordinator
                .list_jobs()
                .iter()
                .all(|j| j.state.is_terminal());
            if all_done && self.pending_joins.is_empty() {
                return Ok(());
            }
            match self.coordinator.poll_timeout() {
                Some(deadline) => {
                    let now = self.now();
                    if deadline > now {
                        self.skipped += deadline - now;
                    }
                    // Everyone still polls while the clock jumps to the deadline.
                    self.poll_all();
                    let now = self.now();
                    self.coordinator.handle_timeout(now);
                    // Stragglers' messages arrive just after the deadline.
                    for (p, m) in std::mem::take(&mut self.held) {
                        if let Err(e) = self.coordinator.handle_message(now, p, m) {
                            tracing::info!(participant = p, error = %e, "late message refused");
                        }
                    }
                    self.drain_events(on_round);
                }
                None => {
                    let waiting: Vec<String> = self
                        .coordinator
                        .list_jobs()
                        .into_iter()
                        .filter(|j| !j.state.is_terminal())
                        .map(|j| format!("{} ({})", j.job_id, j.state.label()))
                        .collect();
                    return Err(SimError::Stalled(format!(
                        "jobs still open with nothing in flight: {}",
                        waiting.join(", ")
                    )));
                }
            }
        }
    }
}
