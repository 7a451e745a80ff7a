//! PSI jobs in the engine: one exchange (session) per passive party, in the spec's order.
//!
//! The coordinator is a relay here. It opens a session by sending both parties a
//! [`PsiStart`], forwards each [`PsiMsg`] from one party to the other unread (it checks only
//! the job, the session and that the sender holds the role the message claims), counts
//! messages and bytes, and closes the session when both parties have reported
//! ([`PsiReport`]) the same alignment hash and consistent sizes. What it records (status,
//! audit, checkpoint) is the sizes and the hash: exactly what the sealed message lengths
//! reveal to it anyway.
//!
//! Phases (a job's runtime part, [`PsiPhase`]): `Idle` (waiting for the next pair to join)
//! → `Running` (a session in flight; the session number is checkpointed before its
//! `PsiStart` leaves, so a restarted coordinator never reuses it) → back to `Idle` for the
//! next pair, or the job ends. A restored or resumed job starts the pair it was on in a
//! fresh session: the parties discard the old one.
//!
//! A party that restarted mid-session says so ([`ToCoordinator::PsiLost`]: it holds no
//! state of the session). The pair then starts again in a fresh session — both parties
//! draw new scalars and ephemeral keys, and the salt, which comes from the new key
//! agreement, differs, so nothing sent in the old session links to the new one — at most
//! [`MAX_LOST_RESTARTS`] times per pair; once more and the job fails naming the party.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fedsilo_crypto::msg::ParticipantId;
use fedsilo_crypto::psi::{PsiMsg, Role};
use fedsilo_task::job::{ToCoordinator, ToParticipant};
use fedsilo_task::psi::{PsiJobSpec, PsiReport, PsiSpecError, PsiStart};
use serde::{Deserialize, Serialize};

use super::{Coordinator, EngineError, Event, JobState, JobStatus};

/// How many times one pair's session is restarted because a party lost its state, before
/// the job fails naming that party.
pub const MAX_LOST_RESTARTS: u32 = 3;

/// One pair's result as the coordinator records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairOutcome {
    pub active: String,
    pub passive: String,
    pub session: u64,
    /// Ids each party took part with (after its duplicates rule).
    pub active_set_size: u64,
    pub passive_set_size: u64,
    pub active_duplicates_dropped: u64,
    pub passive_duplicates_dropped: u64,
    pub intersection_size: u64,
    /// The alignment hash both parties reported (hex).
    pub intersection_hash: String,
}

/// The durable part of a PSI job: what its checkpoint holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsiRecord {
    pub spec: PsiJobSpec,
    pub state: JobState,
    /// The next session number (every session ever opened has a lower one).
    pub next_session: u64,
    /// Pairs done, in the spec's order of passive parties.
    pub pairs: Vec<PairOutcome>,
    /// A vertical model job relayed by the same engine ([`super::vertical`]): `spec` is then
    /// the PSI job's spec under the vertical job's id (the parties, dataset and ids), and
    /// `pairs` stays empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical: Option<super::vertical::VerticalRecord>,
}

/// How a PSI checkpoint serialises: one key, `psi`, which no training [`super::JobRecord`]
/// has, so a checkpoint says which kind of job it is.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PsiCheckpoint {
    pub(super) psi: PsiRecord,
}

/// What one closed (or failed) session reports, for the audit log and simulations.
#[derive(Clone, Debug, PartialEq)]
pub struct PsiSummary {
    pub job_id: String,
    pub session: u64,
    pub active: String,
    pub passive: String,
    /// `Ok` with the outcome, or why the session failed.
    pub result: Result<PairOutcome, String>,
    /// Messages and payload bytes relayed from the active to the passive party and back.
    pub messages: [u64; 2],
    pub bytes: [u64; 2],
    pub elapsed: Duration,
}

impl PsiSummary {
    /// The audit log's one-line outcome.
    pub fn outcome(&self) -> String {
        match &self.result {
            Ok(o) => format!(
                "ok: {} {} ids ({} duplicates dropped), {} {} ids ({} dropped), intersection {}",
                o.active,
                o.active_set_size,
                o.active_duplicates_dropped,
                o.passive,
                o.passive_set_size,
                o.passive_duplicates_dropped,
                o.intersection_size
            ),
            Err(why) => format!("failed: {why}"),
        }
    }
}

/// A session in flight.
#[derive(Debug)]
pub(super) struct Running {
    session: u64,
    active: ParticipantId,
    passive: ParticipantId,
    passive_name: String,
    /// A vertical session with several passive parties: passive parties 1.. of the spec
    /// (`passive` is the first); empty otherwise.
    more: Vec<(ParticipantId, String)>,
    started: Instant,
    messages: [u64; 2],
    bytes: [u64; 2],
    /// Kind of the last message relayed each way (what the relay can see: the stage).
    last_kind: [&'static str; 2],
    reports: Reports,
    /// Vertical sessions: what was relayed since the last completed step.
    pub(super) step: super::vertical::StepRelay,
    /// Vertical sessions: the reports in, by party slot (0 the active party, `1 + k`
    /// passive party `k`); the first of each party counts.
    pub(super) vreports: std::collections::BTreeMap<usize, fedsilo_task::vertical::VerticalReport>,
}

impl Running {
    /// Counts one relayed message (per direction: with several passive parties the
    /// passive → active figures are summed over them), and for a vertical session hashes
    /// it into the step's record (`passive`: the pair's index, with several passive parties).
    fn count(&mut self, role: Role, passive: Option<u32>, vertical: bool, m: &PsiMsg) {
        let i = role_index(role);
        if let (Some(n), Some(b)) = (self.messages.get_mut(i), self.bytes.get_mut(i)) {
            *n += 1;
            *b += m.wire_size() as u64;
        }
        if vertical {
            self.step.relayed(role, passive, m);
        }
        if let Some(k) = self.last_kind.get_mut(i) {
            *k = match m {
                PsiMsg::Hello(_) => "hello",
                PsiMsg::Sealed(s) => s.kind.name(),
            };
        }
    }

    pub(super) fn session(&self) -> u64 {
        self.session
    }
    /// The passive parties' names, joined with ", " (one name for a PSI session).
    pub(super) fn passive_names(&self) -> String {
        std::iter::once(self.passive_name.as_str())
            .chain(self.more.iter().map(|(_, n)| n.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
    /// Every party of the session: the active party, then the passive parties in order.
    pub(super) fn all_parties(&self) -> Vec<ParticipantId> {
        [self.active, self.passive]
            .into_iter()
            .chain(self.more.iter().map(|&(p, _)| p))
            .collect()
    }
    /// Passive party `index` (in the spec's order) and its name.
    pub(super) fn passive_at(&self, index: usize) -> Option<(ParticipantId, &str)> {
        if index == 0 {
            return Some((self.passive, self.passive_name.as_str()));
        }
        self.more.get(index - 1).map(|(p, n)| (*p, n.as_str()))
    }
    /// How many passive parties the session has.
    pub(super) fn passive_count(&self) -> usize {
        1 + self.more.len()
    }
    pub(super) fn started(&self) -> Instant {
        self.started
    }
    pub(super) fn totals(&self) -> ([u64; 2], [u64; 2]) {
        (self.messages, self.bytes)
    }
    pub(super) fn last_kind(&self) -> [&'static str; 2] {
        self.last_kind
    }
}

/// Which party has reported (each transition consumes the previous value).
#[derive(Debug)]
enum Reports {
    None,
    One(Role, PsiReport),
}

/// The runtime phase of a PSI job.
#[derive(Debug)]
pub(super) enum PsiPhase {
    Idle,
    Running(Box<Running>),
}

pub(super) struct PsiJob {
    pub(super) record: PsiRecord,
    pub(super) joined: BTreeSet<ParticipantId>,
    pub(super) phase: PsiPhase,
    /// Sessions of the current pair restarted because a party lost its state.
    pub(super) lost_restarts: u32,
}

pub(super) fn role_index(r: Role) -> usize {
    match r {
        Role::Active => 0,
        Role::Passive => 1,
    }
}

impl PsiRecord {
    fn checkpoint_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        #[derive(Serialize)]
        struct Ref<'a> {
            psi: &'a PsiRecord,
        }
        serde_json::to_vec(&Ref { psi: self })
    }

    /// The checkpoint's step: grows with every session opened and every pair done.
    fn step(&self) -> u64 {
        self.next_session
            + self.pairs.len() as u64
            + self.vertical.as_ref().map_or(0, |v| v.steps_all_sessions)
    }
}

impl Coordinator {
    pub(super) fn id_of(&self, name: &str) -> Option<ParticipantId> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(&id, _)| id)
    }

    /// Launches a PSI job (the spec validated here against the roster).
    pub fn launch_psi(
        &mut self,
        now: Instant,
        mut spec: PsiJobSpec,
    ) -> Result<String, EngineError> {
        self.tick(now);
        spec.validate().map_err(EngineError::InvalidPsiJob)?;
        for (field, name) in std::iter::once(("active", &spec.active))
            .chain(spec.passive.iter().map(|p| ("passive", p)))
        {
            if self.id_of(name).is_none() {
                return Err(EngineError::InvalidPsiJob(PsiSpecError::NotInRoster {
                    field,
                    name: name.clone(),
                }));
            }
        }
        if spec.job_id.is_empty() {
            spec.job_id = format!("psi-{:08x}", rand::Rng::random::<u32>(&mut self.rng));
        }
        if spec.job_id.len() > 128 || spec.job_id.chars().any(|c| c.is_control()) {
            return Err(EngineError::InvalidJobId);
        }
        if self.jobs.contains_key(&spec.job_id) || self.psi_jobs.contains_key(&spec.job_id) {
            return Err(EngineError::DuplicateJob(spec.job_id));
        }
        let id = spec.job_id.clone();
        tracing::info!(job = %id, active = %spec.active, passive = ?spec.passive, "PSI job launched");
        self.insert_psi(
            now,
            PsiRecord {
                spec,
                state: JobState::Waiting,
                next_session: 0,
                pairs: Vec::new(),
                vertical: None,
            },
        );
        self.psi_checkpoint(&id);
        self.maybe_start_psi(now, &id);
        Ok(id)
    }

    /// A PSI job's record from checkpoint bytes, if they are a PSI checkpoint (a training
    /// checkpoint's first key is refused at once, so this costs nothing for those).
    pub(super) fn psi_record_of(state: &[u8]) -> Option<PsiRecord> {
        serde_json::from_slice::<PsiCheckpoint>(state)
            .ok()
            .map(|c| c.psi)
    }

    pub(super) fn insert_psi(&mut self, now: Instant, mut record: PsiRecord) {
        if record.state == JobState::Running {
            record.state = JobState::Waiting;
        }
        let id = record.spec.job_id.clone();
        self.psi_jobs.insert(
            id.clone(),
            PsiJob {
                record,
                joined: BTreeSet::new(),
                phase: PsiPhase::Idle,
                lost_restarts: 0,
            },
        );
        self.maybe_start_psi(now, &id);
    }

    pub(super) fn psi_checkpoint(&mut self, job_id: &str) {
        if let Some(job) = self.psi_jobs.get(job_id) {
            match job.record.checkpoint_bytes() {
                Ok(state) => self.events.push_back(Event::Checkpoint {
                    job_id: job_id.to_string(),
                    step: job.record.step(),
                    state,
                }),
                Err(e) => {
                    tracing::error!(job = job_id, error = %e, "cannot serialise PSI checkpoint")
                }
            }
        }
    }

    /// Opens the next pair's session when the job waits and both parties have joined.
    pub(super) fn maybe_start_psi(&mut self, now: Instant, job_id: &str) {
        let Some(job) = self.psi_jobs.get(job_id) else {
            return;
        };
        if job.record.state.is_terminal() || !matches!(job.phase, PsiPhase::Idle) {
            return;
        }
        let spec = job.record.spec.clone();
        let Some(passive_name) = spec.passive.get(job.record.pairs.len()).cloned() else {
            return;
        };
        let (Some(active), Some(passive)) = (self.id_of(&spec.active), self.id_of(&passive_name))
        else {
            return;
        };
        if !(job.joined.contains(&active) && job.joined.contains(&passive)) {
            return;
        }
        // A vertical session with several passive parties involves them all.
        let mut more = Vec::new();
        if job.record.vertical.is_some() {
            for name in spec.passive.iter().skip(1) {
                match self.id_of(name) {
                    Some(id) if job.joined.contains(&id) => more.push((id, name.clone())),
                    _ => return,
                }
            }
        }
        // A vertical session needs every party alive (a party away pauses the job).
        if job.record.vertical.is_some()
            && !std::iter::once(passive)
                .chain(more.iter().map(|&(p, _)| p))
                .all(|p| self.both_alive(now, active, p))
        {
            return;
        }
        let Some(job) = self.psi_jobs.get_mut(job_id) else {
            return;
        };
        let session = job.record.next_session;
        job.record.next_session += 1;
        job.record.state = JobState::Running;
        job.phase = PsiPhase::Running(Box::new(Running {
            session,
            active,
            passive,
            passive_name: passive_name.clone(),
            more: more.clone(),
            started: now,
            messages: [0; 2],
            bytes: [0; 2],
            last_kind: ["nothing yet"; 2],
            reports: Reports::None,
            step: super::vertical::StepRelay::new(now),
            vreports: Default::default(),
        }));
        if let Some(v) = job.record.vertical.as_mut() {
            // A fresh session counts its steps anew; its first progress says from where it
            // continues (0, or where both parties held their state: `resumed_from`).
            v.steps_done = 0;
            v.resumed_from = 0;
        }
        // Durable before the session's first message leaves.
        self.psi_checkpoint(job_id);
        tracing::info!(job = job_id, session, active = %spec.active, passive = %passive_name, "relay session started");
        let passives: Vec<(ParticipantId, String)> =
            std::iter::once((passive, passive_name.clone()))
                .chain(more)
                .collect();
        if self.start_vertical(job_id, session, active, &passives) {
            return;
        }
        for (to, role, peer) in [
            (active, Role::Active, passive_name.clone()),
            (passive, Role::Passive, spec.active.clone()),
        ] {
            self.outbox.push_back((
                to,
                ToParticipant::PsiStart(PsiStart {
                    job_id: job_id.to_string(),
                    session,
                    role,
                    peer,
                    dataset: spec.dataset.clone(),
                    id_column: spec.id_column.clone(),
                    id_format: spec.id_format.into(),
                    delivery: spec.delivery.into(),
                    duplicates: spec.duplicates.into(),
                    chunk_len: spec.chunk_len() as u32,
                }),
            ));
        }
    }

    /// A PSI message, report or failure from an authenticated participant.
    pub(super) fn handle_psi(
        &mut self,
        now: Instant,
        from: ParticipantId,
        msg: ToCoordinator,
    ) -> Result<(), EngineError> {
        let (job_id, session) = match &msg {
            ToCoordinator::Psi(m) => (m.ctx().job_id.clone(), m.ctx().session),
            ToCoordinator::PsiDone(r) => (r.job_id.clone(), r.session),
            ToCoordinator::PsiFailed {
                job_id, session, ..
            }
            | ToCoordinator::PsiLost { job_id, session } => (job_id.clone(), *session),
            ToCoordinator::VerticalRelay { msg, .. } => {
                (msg.ctx().job_id.clone(), msg.ctx().session)
            }
            ToCoordinator::VerticalProgress(p) => (p.job_id.clone(), p.session),
            ToCoordinator::VerticalDone(r) => (r.job_id.clone(), r.session),
            _ => return Ok(()),
        };
        let job = self
            .psi_jobs
            .get_mut(&job_id)
            .ok_or_else(|| EngineError::UnknownJob(job_id.clone()))?;
        let run = match &mut job.phase {
            PsiPhase::Running(r) if r.session == session => r,
            _ => {
                return Err(EngineError::NoSuchRound {
                    job: job_id,
                    round: session,
                })
            }
        };
        // The sender's role and, for a passive party, its index in the spec's order.
        let (role, index) = if from == run.active {
            (Role::Active, 0)
        } else if from == run.passive {
            (Role::Passive, 0)
        } else if let Some(k) = run.more.iter().position(|&(p, _)| p == from) {
            (Role::Passive, k + 1)
        } else {
            return Err(EngineError::NotInSession {
                job: job_id,
                session,
                participant: from,
            });
        };
        let several = !run.more.is_empty();
        match msg {
            ToCoordinator::Psi(m) => {
                if m.from() != role {
                    return Err(EngineError::WrongPsiRole {
                        job: job_id,
                        claimed: m.from().name(),
                        holds: role.name(),
                    });
                }
                // With several passive parties the active party names the recipient.
                if role == Role::Active && several {
                    return Err(EngineError::NoRecipient {
                        job: job_id,
                        session,
                    });
                }
                let vertical = job.record.vertical.is_some();
                run.count(role, several.then_some(index as u32), vertical, &m);
                let (to, m) = match role {
                    Role::Active => (run.passive, ToParticipant::Psi(m)),
                    // The active party learns which passive party sent it.
                    Role::Passive if several => (
                        run.active,
                        ToParticipant::VerticalRelay {
                            passive: index as u32,
                            msg: m,
                        },
                    ),
                    Role::Passive => (run.active, ToParticipant::Psi(m)),
                };
                self.outbox.push_back((to, m));
                Ok(())
            }
            ToCoordinator::VerticalRelay {
                passive: to,
                msg: m,
            } => {
                if job.record.vertical.is_none() {
                    return Err(EngineError::WrongMessage {
                        job: job_id,
                        what: "message naming a passive party (PSI sessions have one)",
                    });
                }
                // Star: a passive party talks to the active party only.
                if role == Role::Passive {
                    let to = run
                        .passive_at(to as usize)
                        .map_or_else(|| format!("passive party {to}"), |(_, n)| n.to_string());
                    let from = self.name(from);
                    return Err(EngineError::PassiveAddressed {
                        job: job_id,
                        from,
                        to,
                    });
                }
                if m.from() != role {
                    return Err(EngineError::WrongPsiRole {
                        job: job_id,
                        claimed: m.from().name(),
                        holds: role.name(),
                    });
                }
                let Some((dest, _)) = run.passive_at(to as usize) else {
                    return Err(EngineError::NoSuchPassive {
                        job: job_id,
                        index: to,
                        count: run.passive_count(),
                    });
                };
                run.count(role, several.then_some(to), true, &m);
                self.outbox.push_back((dest, ToParticipant::Psi(m)));
                Ok(())
            }
            ToCoordinator::PsiFailed { reason, .. } => {
                let who = self.name(from);
                self.fail_psi(now, &job_id, format!("{who} ({}): {reason}", role.name()));
                Ok(())
            }
            ToCoordinator::PsiLost { .. } => {
                let who = self.name(from);
                self.restart_lost_psi(now, &job_id, format!("{who} ({})", role.name()));
                Ok(())
            }
            ToCoordinator::PsiDone(_) if job.record.vertical.is_some() => {
                Err(EngineError::WrongMessage {
                    job: job_id,
                    what: "a PSI report",
                })
            }
            ToCoordinator::VerticalProgress(p) => self.vertical_progress(now, &job_id, role, p),
            ToCoordinator::VerticalDone(r) => {
                let slot = match role {
                    Role::Active => 0,
                    Role::Passive => 1 + index,
                };
                self.vertical_done(now, &job_id, slot, r)
            }
            ToCoordinator::PsiDone(report) => {
                let reports = std::mem::replace(&mut run.reports, Reports::None);
                match reports {
                    Reports::None => {
                        run.reports = Reports::One(role, report);
                        Ok(())
                    }
                    Reports::One(r, first) if r == role => {
                        run.reports = Reports::One(r, first);
                        Ok(())
                    }
                    Reports::One(_, first) => {
                        let (a, p) = match role {
                            Role::Active => (report, first),
                            Role::Passive => (first, report),
                        };
                        self.close_psi_session(now, &job_id, a, p);
                        Ok(())
                    }
                }
            }
            _ => Ok(()),
        }
    }

    /// A party of the running session lost its state: the session is abandoned (audited as
    /// such) and the pair starts again in a fresh one, unless it already did
    /// [`MAX_LOST_RESTARTS`] times.
    fn restart_lost_psi(&mut self, now: Instant, job_id: &str, who: String) {
        let Some(job) = self.psi_jobs.get_mut(job_id) else {
            return;
        };
        if job.lost_restarts >= MAX_LOST_RESTARTS {
            let why = format!(
                "{who} lost its PSI session state {} times (it restarted mid-exchange); \
                 giving up on this pair: check that node, then `fedsilo job resume {job_id}`",
                job.lost_restarts + 1
            );
            self.fail_psi(now, job_id, why);
            return;
        }
        job.lost_restarts += 1;
        let attempt = job.lost_restarts;
        let PsiPhase::Running(run) = std::mem::replace(&mut job.phase, PsiPhase::Idle) else {
            return;
        };
        job.record.state = JobState::Waiting;
        let why = format!(
            "restarted: {who} lost its session state (restart {attempt} of at most {MAX_LOST_RESTARTS})"
        );
        tracing::warn!(job = job_id, session = run.session, reason = %why, "PSI session restarted");
        self.events.push_back(Event::Psi(Box::new(PsiSummary {
            job_id: job_id.to_string(),
            session: run.session,
            active: job.record.spec.active.clone(),
            passive: run.passive_names(),
            result: Err(why),
            messages: run.messages,
            bytes: run.bytes,
            elapsed: now.saturating_duration_since(run.started),
        })));
        self.psi_checkpoint(job_id);
        self.maybe_start_psi(now, job_id);
    }

    /// Both parties reported: check they agree, record the pair, go on or finish.
    fn close_psi_session(&mut self, now: Instant, job_id: &str, a: PsiReport, p: PsiReport) {
        let active_name = self
            .psi_jobs
            .get(job_id)
            .map(|j| j.record.spec.active.clone())
            .unwrap_or_default();
        let Some(job) = self.psi_jobs.get_mut(job_id) else {
            return;
        };
        let PsiPhase::Running(run) = std::mem::replace(&mut job.phase, PsiPhase::Idle) else {
            return;
        };
        let disagreement = if a.intersection_hash != p.intersection_hash {
            Some("the two parties report different alignment hashes".to_string())
        } else if a.intersection_size != p.intersection_size
            || a.own_set_size != p.peer_set_size
            || a.peer_set_size != p.own_set_size
        {
            Some(format!(
                "the two parties report different sizes (active: {} own, {} peer, {} shared; passive: {} own, {} peer, {} shared)",
                a.own_set_size, a.peer_set_size, a.intersection_size,
                p.own_set_size, p.peer_set_size, p.intersection_size
            ))
        } else {
            None
        };
        // The session's running state goes back in so fail_psi sees and closes it.
        if let Some(why) = disagreement {
            job.phase = PsiPhase::Running(run);
            self.fail_psi(now, job_id, why);
            return;
        }
        let outcome = PairOutcome {
            active: active_name.clone(),
            passive: run.passive_name.clone(),
            session: run.session,
            active_set_size: a.own_set_size,
            passive_set_size: p.own_set_size,
            active_duplicates_dropped: a.duplicates_dropped,
            passive_duplicates_dropped: p.duplicates_dropped,
            intersection_size: a.intersection_size,
            intersection_hash: hex::encode(a.intersection_hash),
        };
        tracing::info!(job = job_id, session = run.session, passive = %run.passive_name,
            active_ids = a.own_set_size, passive_ids = p.own_set_size,
            intersection = a.intersection_size, "PSI session done");
        self.events.push_back(Event::Psi(Box::new(PsiSummary {
            job_id: job_id.to_string(),
            session: run.session,
            active: active_name,
            passive: run.passive_name.clone(),
            result: Ok(outcome.clone()),
            messages: run.messages,
            bytes: run.bytes,
            elapsed: now.saturating_duration_since(run.started),
        })));
        job.record.pairs.push(outcome);
        job.lost_restarts = 0;
        let done = job.record.pairs.len() >= job.record.spec.passive.len();
        if done {
            job.record.state = JobState::Finished;
            self.end_psi(job_id, JobState::Finished, String::new(), Some(&run));
        } else {
            job.record.state = JobState::Waiting;
            self.psi_checkpoint(job_id);
            self.maybe_start_psi(now, job_id);
        }
    }

    /// Fails the session in flight and the job (resumable: a resumed job runs the pair again
    /// in a fresh session).
    pub(super) fn fail_psi(&mut self, now: Instant, job_id: &str, why: String) {
        tracing::error!(job = job_id, reason = %why, "PSI job failed");
        let Some(job) = self.psi_jobs.get_mut(job_id) else {
            return;
        };
        let phase = std::mem::replace(&mut job.phase, PsiPhase::Idle);
        let active = job.record.spec.active.clone();
        let run = match phase {
            PsiPhase::Running(run) => {
                self.events.push_back(Event::Psi(Box::new(PsiSummary {
                    job_id: job_id.to_string(),
                    session: run.session,
                    active,
                    passive: run.passive_names(),
                    result: Err(why.clone()),
                    messages: run.messages,
                    bytes: run.bytes,
                    elapsed: now.saturating_duration_since(run.started),
                })));
                Some(run)
            }
            PsiPhase::Idle => None,
        };
        self.end_psi(job_id, JobState::Failed(why.clone()), why, run.as_deref());
    }

    /// Terminal state, `JobEnd` to every joined party and the session's two, checkpoint.
    pub(super) fn end_psi(
        &mut self,
        job_id: &str,
        state: JobState,
        detail: String,
        run: Option<&Running>,
    ) {
        let Some(job) = self.psi_jobs.get_mut(job_id) else {
            return;
        };
        job.record.state = state.clone();
        job.phase = PsiPhase::Idle;
        let mut to = job.joined.clone();
        if let Some(r) = run {
            to.extend(r.all_parties());
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
        self.psi_checkpoint(job_id);
    }

    pub(super) fn cancel_psi(&mut self, now: Instant, job_id: &str, reason: String) -> bool {
        let Some(job) = self.psi_jobs.get_mut(job_id) else {
            return false;
        };
        let phase = std::mem::replace(&mut job.phase, PsiPhase::Idle);
        let active = job.record.spec.active.clone();
        let run = match phase {
            PsiPhase::Running(run) => {
                self.events.push_back(Event::Psi(Box::new(PsiSummary {
                    job_id: job_id.to_string(),
                    session: run.session,
                    active,
                    passive: run.passive_names(),
                    result: Err(format!("cancelled: {reason}")),
                    messages: run.messages,
                    bytes: run.bytes,
                    elapsed: now.saturating_duration_since(run.started),
                })));
                Some(run)
            }
            PsiPhase::Idle => None,
        };
        self.end_psi(
            job_id,
            JobState::Cancelled(reason.clone()),
            reason,
            run.as_deref(),
        );
        true
    }

    pub(super) fn psi_status(&self, job_id: &str) -> Option<JobStatus> {
        let job = self.psi_jobs.get(job_id)?;
        if job.record.vertical.is_some() {
            return self.vertical_status(job_id, job);
        }
        let r = &job.record;
        let pairs: Vec<String> = r
            .pairs
            .iter()
            .map(|o| {
                format!(
                    "{} ∩ {}: {} ∩ {} = {} (hash {})",
                    o.active,
                    o.passive,
                    o.active_set_size,
                    o.passive_set_size,
                    o.intersection_size,
                    o.intersection_hash
                        .get(..16)
                        .unwrap_or(&o.intersection_hash)
                )
            })
            .collect();
        let now_part = match (&r.state, &job.phase) {
            (JobState::Failed(why) | JobState::Cancelled(why), _) => why.clone(),
            (_, PsiPhase::Running(run)) => format!(
                "session {} with {}: {} + {} messages relayed ({} + {} bytes; last: {} from {}, {} from {}{}{})",
                run.session,
                run.passive_name,
                run.messages[0],
                run.messages[1],
                run.bytes[0],
                run.bytes[1],
                run.last_kind[0],
                r.spec.active,
                run.last_kind[1],
                run.passive_name,
                match &run.reports {
                    Reports::None => "",
                    Reports::One(Role::Active, _) => "; the active party has reported",
                    Reports::One(Role::Passive, _) => "; the passive party has reported",
                },
                if job.lost_restarts > 0 {
                    format!("; restarted {} time(s): a party lost its state", job.lost_restarts)
                } else {
                    String::new()
                },
            ),
            (JobState::Waiting, PsiPhase::Idle) => {
                let want: Vec<&String> = std::iter::once(&r.spec.active)
                    .chain(r.spec.passive.get(r.pairs.len()))
                    .filter(|n| self.id_of(n).is_none_or(|id| !job.joined.contains(&id)))
                    .collect();
                if want.is_empty() {
                    String::new()
                } else {
                    format!(
                        "waiting for {}",
                        want.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            }
            _ => String::new(),
        };
        let detail = pairs
            .into_iter()
            .chain((!now_part.is_empty()).then_some(now_part))
            .collect::<Vec<_>>()
            .join("; ");
        Some(JobStatus {
            job_id: job_id.to_string(),
            state: r.state.clone(),
            step: r.step(),
            rounds_done: r.pairs.len() as u64,
            total_rounds: r.spec.passive.len() as u64,
            participants: job.joined.iter().map(|&p| self.name(p)).collect(),
            metrics: Vec::new(),
            evaluations: Vec::new(),
            metrics_json: "[]".into(),
            epsilon: 0.0,
            epsilon_budget: 0.0,
            privacy: None,
            detail,
        })
    }

    /// The pairs a PSI job has completed (for simulations and tests).
    pub fn psi_record(&self, job_id: &str) -> Option<&PsiRecord> {
        self.psi_jobs.get(job_id).map(|j| &j.record)
    }
}

/// Whether a relayed message belongs to the PSI half of the engine.
pub(super) fn is_psi(msg: &ToCoordinator) -> bool {
    matches!(
        msg,
        ToCoordinator::Psi(_)
            | ToCoordinator::PsiDone(_)
            | ToCoordinator::PsiFailed { .. }
            | ToCoordinator::PsiLost { .. }
            | ToCoordinator::VerticalRelay { .. }
            | ToCoordinator::VerticalProgress(_)
            | ToCoordinator::VerticalDone(_)
    )
}
