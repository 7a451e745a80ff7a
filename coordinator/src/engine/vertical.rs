//! Vertical model jobs in the engine: the PSI relay ([`super::psi`]) running one session
//! among a PSI job's active party and one or more of its passive parties for a model instead
//! of an intersection.
//!
//! A vertical job is a [`PsiRecord`] whose `vertical` part is set: the same session
//! numbering (checkpointed before the session's first message leaves, never reused), the
//! same relay of sealed messages (job, session and the sender's role checked, nothing read),
//! the same restart of a session a party lost (`PsiLost`, at most
//! [`super::psi::MAX_LOST_RESTARTS`] times), cancel, resume and failure. What differs:
//!
//! - the parties get a [`VerticalStart`] naming the PSI job's alignment (session, hash): the
//!   active party every pair's, each passive party its own and its index;
//! - with several passive parties the relay is a star: every message of the active party
//!   names its passive party (`ToCoordinator::VerticalRelay`) and goes to it alone; each
//!   passive party's goes to the active party, which is told whose it is
//!   (`ToParticipant::VerticalRelay`); the active party naming no passive party or one the
//!   session lacks, and a passive party naming any, are refused by name;
//! - the active party reports each completed iteration or tree ([`VerticalProgress`]):
//!   the engine audits it with the number, bytes and SHA-256 of the sealed messages relayed
//!   for that step (each way: active → passive parties and back, summed over the passive
//!   parties) and checkpoints the count;
//! - the session closes when every party reports ([`VerticalReport`]) the active party's
//!   rows and the job's number of steps;
//! - every party must be alive (the liveness window; a heartbeat counts, so a party busy
//!   with a step longer than the window is not away): a party that goes away mid-session
//!   pauses the job (the session is abandoned, audited as such, and the job waits for it);
//!   when all are back, a fresh session starts.
//!
//! Resumption after a coordinator restart is PSI's: the job starts a fresh session. What
//! the session trains from is the parties' business (the coordinator holds no model
//! state): each party keeps its own state after its last two completed iterations or trees
//! (`participant::vertical`), so a fresh session of the same job continues from the last
//! step every party holds — its first [`VerticalProgress`] says so (`resumed_from`), which the
//! engine checks (the step must follow it), records and audits; a party that restarted
//! takes its state from the file its node wrote after each step.

use std::time::{Duration, Instant};

use fedsilo_crypto::msg::ParticipantId;
use fedsilo_crypto::psi::{PsiMsg, Role};
use fedsilo_task::job::ToParticipant;
use fedsilo_task::vertical::{
    VerticalJobSpec, VerticalPair, VerticalProgress, VerticalReport, VerticalSpecError,
    VerticalStart,
};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::liveness::{is_alive, Liveness};
use super::psi::{role_index, PsiJob, PsiPhase, PsiRecord};
use super::{Coordinator, EngineError, Event, JobState, JobStatus};

/// The vertical part of a relay job's checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerticalRecord {
    pub spec: VerticalJobSpec,
    /// The PSI session whose alignment the model trains on, and its hash (hex): the first
    /// passive party's pair.
    pub psi_session: u64,
    pub psi_hash: String,
    /// Several passive parties: the pairs of passive parties 1.. (the spec's order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_pairs: Vec<VerticalPairRecord>,
    /// Iterations or trees of the job completed by the current (or last) session,
    /// counted from the start of the job (a resumed session starts past 0).
    pub steps_done: u64,
    /// Steps completed over every session (the checkpoint's step grows with it).
    #[serde(default)]
    pub steps_all_sessions: u64,
    /// Sessions abandoned because a party was away.
    #[serde(default)]
    pub paused: u64,
    /// The current session continues an earlier one from this many steps (its first
    /// progress said so); `steps_done` counts from the start of the job.
    #[serde(default)]
    pub resumed_from: u64,
    /// The result, once both parties reported.
    #[serde(default)]
    pub outcome: Option<VerticalOutcome>,
}

/// One further (active, passive) pair a vertical job trains on: its PSI session and hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerticalPairRecord {
    pub passive: String,
    pub psi_session: u64,
    /// Hex.
    pub psi_hash: String,
}

/// What a finished vertical job records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerticalOutcome {
    pub session: u64,
    pub rows: u64,
    pub train_rows: u64,
    pub holdout_rows: u64,
    pub steps: u64,
    pub holdout_auc: Option<f64>,
}

/// One audited step (iteration or tree) of a vertical session, or its end.
#[derive(Clone, Debug, PartialEq)]
pub struct VerticalSummary {
    pub job_id: String,
    pub session: u64,
    pub active: String,
    /// The passive parties, joined with ", ".
    pub passive: String,
    /// The completed step (1-based); for the session's end, the steps done.
    pub step: u64,
    /// `Ok` with a one-line outcome, or why the session ended without a model.
    pub result: Result<String, String>,
    /// Messages and bytes relayed for this step, active → passive and back (with several
    /// passive parties: summed over them, each way).
    pub messages: [u64; 2],
    pub bytes: [u64; 2],
    /// SHA-256 over the relayed messages of the step, in relay order (hex); with several
    /// passive parties each message's pair index is hashed with it.
    pub relayed_hash: String,
    pub elapsed: Duration,
}

/// What the relay saw since the last completed step of a vertical session.
#[derive(Clone)]
pub(super) struct StepRelay {
    hasher: sha2::Sha256,
    messages: [u64; 2],
    bytes: [u64; 2],
    since: Instant,
}

impl std::fmt::Debug for StepRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepRelay")
            .field("messages", &self.messages)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl StepRelay {
    pub(super) fn new(now: Instant) -> Self {
        StepRelay {
            hasher: sha2::Sha256::new(),
            messages: [0; 2],
            bytes: [0; 2],
            since: now,
        }
    }

    /// Counts and hashes one relayed message (its header and sealed bytes as relayed; with
    /// several passive parties, `passive` is its pair's index and hashed too).
    pub(super) fn relayed(&mut self, from: Role, passive: Option<u32>, m: &PsiMsg) {
        let i = role_index(from);
        if let (Some(n), Some(b)) = (self.messages.get_mut(i), self.bytes.get_mut(i)) {
            *n += 1;
            *b += m.wire_size() as u64;
        }
        self.hasher.update([from.tag()]);
        if let Some(k) = passive {
            self.hasher.update(k.to_le_bytes());
        }
        match m {
            PsiMsg::Hello(h) => {
                self.hasher.update(b"hello");
                self.hasher.update(h.ephemeral_pk);
                self.hasher.update(h.nonce);
                self.hasher.update(h.config_digest);
                self.hasher.update(&h.signature);
            }
            PsiMsg::Sealed(s) => {
                self.hasher.update([s.kind.tag()]);
                self.hasher.update(s.seq.to_le_bytes());
                self.hasher
                    .update((s.ciphertext.len() as u64).to_le_bytes());
                self.hasher.update(&s.ciphertext);
            }
        }
    }

    /// The step's figures, and a fresh relay for the next step.
    fn take(&mut self, now: Instant) -> ([u64; 2], [u64; 2], String, Duration) {
        let done = std::mem::replace(self, StepRelay::new(now));
        (
            done.messages,
            done.bytes,
            hex::encode(done.hasher.finalize()),
            now.saturating_duration_since(done.since),
        )
    }
}

impl Coordinator {
    /// Both alive (polling or heartbeating within the window): a vertical session's need,
    /// for the active party and each passive party.
    pub(super) fn both_alive(&self, now: Instant, a: ParticipantId, b: ParticipantId) -> bool {
        is_alive(&self.liveness, self.liveness_window, a, now)
            && is_alive(&self.liveness, self.liveness_window, b, now)
    }

    /// Launches a vertical job on a finished PSI job's alignment (checked here against the
    /// roster and the PSI job).
    pub fn launch_vertical(
        &mut self,
        now: Instant,
        mut spec: VerticalJobSpec,
    ) -> Result<String, EngineError> {
        self.tick(now);
        let invalid = EngineError::InvalidVerticalJob;
        spec.validate().map_err(invalid)?;
        if !spec.kind.trains() {
            self.scoring_parties(&mut spec).map_err(invalid)?;
        }
        for (field, name) in std::iter::once(("active", &spec.active))
            .chain(spec.passive.iter().map(|p| ("passive", p)))
        {
            if self.id_of(name).is_none() {
                return Err(invalid(VerticalSpecError::NotInRoster {
                    field,
                    name: name.clone(),
                }));
            }
        }
        let psi = self
            .psi_jobs
            .get(&spec.psi_job)
            .filter(|j| j.record.vertical.is_none())
            .ok_or_else(|| invalid(VerticalSpecError::UnknownPsiJob(spec.psi_job.clone())))?;
        if psi.record.state != JobState::Finished {
            return Err(invalid(VerticalSpecError::PsiNotFinished {
                job: spec.psi_job.clone(),
                state: psi.record.state.label(),
            }));
        }
        let psi_spec = psi.record.spec.clone();
        if psi_spec.delivery != fedsilo_task::psi::DeliveryName::Both {
            return Err(invalid(VerticalSpecError::PsiActiveOnly(
                spec.psi_job.clone(),
            )));
        }
        if psi_spec.active != spec.active {
            return Err(invalid(VerticalSpecError::NotPsiParty {
                field: "active",
                name: spec.active.clone(),
                psi: psi_spec.active.clone(),
            }));
        }
        // Each named passive party must be a passive party of the PSI job (one pair each).
        let mut pairs = Vec::new();
        for passive in &spec.passive {
            let Some(pair) = psi.record.pairs.iter().find(|p| &p.passive == passive) else {
                return Err(invalid(VerticalSpecError::NotPsiParty {
                    field: "passive",
                    name: passive.clone(),
                    psi: psi_spec.passive.join(", "),
                }));
            };
            pairs.push(pair.clone());
        }
        let mut pairs = pairs.into_iter();
        let Some(pair) = pairs.next() else {
            return Err(invalid(VerticalSpecError::NoPassive));
        };
        let more_pairs: Vec<VerticalPairRecord> = pairs
            .map(|p| VerticalPairRecord {
                passive: p.passive,
                psi_session: p.session,
                psi_hash: p.intersection_hash,
            })
            .collect();
        if spec.job_id.is_empty() {
            spec.job_id = format!(
                "{}-{:08x}",
                spec.kind.name().replace('_', "-"),
                rand::Rng::random::<u32>(&mut self.rng)
            );
        }
        if spec.job_id.len() > 128 || spec.job_id.chars().any(|c| c.is_control()) {
            return Err(EngineError::InvalidJobId);
        }
        if self.jobs.contains_key(&spec.job_id) || self.psi_jobs.contains_key(&spec.job_id) {
            return Err(EngineError::DuplicateJob(spec.job_id));
        }
        let id = spec.job_id.clone();
        tracing::info!(job = %id, kind = spec.kind.name(), psi = %spec.psi_job, active = %spec.active, passive = ?spec.passive, "vertical job launched");
        let mut relay_spec = psi_spec;
        relay_spec.job_id = id.clone();
        relay_spec.passive = spec.passive.clone();
        self.insert_psi(
            now,
            PsiRecord {
                spec: relay_spec,
                state: JobState::Waiting,
                next_session: 0,
                pairs: Vec::new(),
                vertical: Some(VerticalRecord {
                    spec,
                    psi_session: pair.session,
                    psi_hash: pair.intersection_hash,
                    more_pairs,
                    steps_done: 0,
                    steps_all_sessions: 0,
                    paused: 0,
                    resumed_from: 0,
                    outcome: None,
                }),
            },
        );
        self.psi_checkpoint(&id);
        self.maybe_start_psi(now, &id);
        Ok(id)
    }

    /// A scoring spec's model job: a finished vertical training job; the spec's parties are
    /// its parties (filled in when the spec names none).
    fn scoring_parties(&self, spec: &mut VerticalJobSpec) -> Result<(), VerticalSpecError> {
        let model = self
            .psi_jobs
            .get(&spec.model_job)
            .and_then(|j| j.record.vertical.as_ref().map(|v| (j, v)))
            .filter(|(_, v)| v.spec.kind.trains())
            .ok_or_else(|| VerticalSpecError::UnknownModelJob(spec.model_job.clone()))?;
        let (job, v) = model;
        if job.record.state != JobState::Finished {
            return Err(VerticalSpecError::ModelNotFinished {
                job: spec.model_job.clone(),
                state: job.record.state.label(),
            });
        }
        if spec.active.is_empty() && spec.passive.is_empty() {
            spec.active = v.spec.active.clone();
            spec.passive = v.spec.passive.clone();
            return Ok(());
        }
        if spec.active != v.spec.active {
            return Err(VerticalSpecError::NotModelParty {
                field: "active",
                name: spec.active.clone(),
                model: v.spec.active.clone(),
            });
        }
        if spec.passive != v.spec.passive {
            return Err(VerticalSpecError::NotModelParty {
                field: "passive",
                name: spec.passive.join(", "),
                model: v.spec.passive.join(", "),
            });
        }
        Ok(())
    }

    /// Sends the `VerticalStart`s of a session just opened (the active party's, then each
    /// passive party's, in the spec's order); false for a PSI job.
    pub(super) fn start_vertical(
        &mut self,
        job_id: &str,
        session: u64,
        active: ParticipantId,
        passives: &[(ParticipantId, String)],
    ) -> bool {
        let Some(job) = self.psi_jobs.get(job_id) else {
            return false;
        };
        let Some(v) = &job.record.vertical else {
            return false;
        };
        let psi_spec = &job.record.spec;
        let hash_of = |hex_hash: &str| {
            let mut psi_hash = [0u8; 32];
            if hex::decode_to_slice(hex_hash, &mut psi_hash).is_err() {
                tracing::error!(
                    job = job_id,
                    "the recorded PSI alignment hash is not 32 bytes of hex"
                );
            }
            psi_hash
        };
        let pairs: Vec<VerticalPair> = std::iter::once(VerticalPair {
            passive: v.spec.passive.first().cloned().unwrap_or_default(),
            psi_session: v.psi_session,
            psi_hash: hash_of(&v.psi_hash),
        })
        .chain(v.more_pairs.iter().map(|p| VerticalPair {
            passive: p.passive.clone(),
            psi_session: p.psi_session,
            psi_hash: hash_of(&p.psi_hash),
        }))
        .collect();
        let start = |role: Role, peer: String, pair: &VerticalPair, index: usize| VerticalStart {
            spec: v.spec.clone(),
            session,
            role,
            peer,
            dataset: psi_spec.dataset.clone(),
            id_column: psi_spec.id_column.clone(),
            id_format: psi_spec.id_format.into(),
            delivery: psi_spec.delivery.into(),
            psi_session: pair.psi_session,
            psi_hash: pair.psi_hash,
            passive_index: index as u32,
            more_passive: Vec::new(),
        };
        let Some(first) = pairs.first() else {
            return false;
        };
        let mut to_active = start(Role::Active, first.passive.clone(), first, 0);
        to_active.more_passive = pairs.iter().skip(1).cloned().collect();
        let mut msgs = vec![(active, to_active)];
        for (k, ((id, name), pair)) in passives.iter().zip(&pairs).enumerate() {
            if *name != pair.passive {
                tracing::error!(job = job_id, passive = %name, "the session's passive parties are not the job's");
                return false;
            }
            msgs.push((*id, start(Role::Passive, psi_spec.active.clone(), pair, k)));
        }
        for (to, s) in msgs {
            self.outbox
                .push_back((to, ToParticipant::VerticalStart(Box::new(s))));
        }
        true
    }

    /// The active party completed a step: audit what was relayed for it, checkpoint.
    pub(super) fn vertical_progress(
        &mut self,
        now: Instant,
        job_id: &str,
        role: Role,
        p: VerticalProgress,
    ) -> Result<(), EngineError> {
        if role != Role::Active {
            return Err(EngineError::WrongPsiRole {
                job: job_id.to_string(),
                claimed: "active",
                holds: role.name(),
            });
        }
        let Some(job) = self.psi_jobs.get_mut(job_id) else {
            return Err(EngineError::UnknownJob(job_id.to_string()));
        };
        let PsiJob { record, phase, .. } = job;
        let (Some(v), PsiPhase::Running(run)) = (record.vertical.as_mut(), phase) else {
            return Err(EngineError::WrongMessage {
                job: job_id.to_string(),
                what: "vertical progress",
            });
        };
        // A session's first progress may continue an earlier session (the parties' own
        // state at a step boundary); after it, steps are consecutive.
        let first = v.steps_done == 0;
        let expected = if first {
            p.resumed_from + 1
        } else {
            v.steps_done + 1
        };
        if p.step != expected || p.step > v.spec.total_steps() {
            return Err(EngineError::WrongMessage {
                job: job_id.to_string(),
                what: "progress out of order",
            });
        }
        if first {
            v.resumed_from = p.resumed_from;
        }
        v.steps_done = p.step;
        v.steps_all_sessions += 1;
        let (messages, bytes, relayed_hash, elapsed) = run.step.take(now);
        let summary = VerticalSummary {
            job_id: job_id.to_string(),
            session: run.session(),
            active: record.spec.active.clone(),
            passive: run.passive_names(),
            step: p.step,
            result: Ok(format!(
                "{} {} of {} done{}",
                v.spec.kind.step_name(),
                p.step,
                v.spec.total_steps(),
                if v.resumed_from > 0 {
                    format!(
                        " (this session resumed after {} {}s of an earlier one)",
                        v.resumed_from,
                        v.spec.kind.step_name()
                    )
                } else {
                    String::new()
                }
            )),
            messages,
            bytes,
            relayed_hash,
            elapsed,
        };
        self.events.push_back(Event::Vertical(Box::new(summary)));
        self.psi_checkpoint(job_id);
        Ok(())
    }

    /// A party's end-of-session report (`slot`: 0 the active party, `1 + k` passive party
    /// `k`); with every party's in, close the session and the job.
    pub(super) fn vertical_done(
        &mut self,
        now: Instant,
        job_id: &str,
        slot: usize,
        r: VerticalReport,
    ) -> Result<(), EngineError> {
        let Some(job) = self.psi_jobs.get_mut(job_id) else {
            return Err(EngineError::UnknownJob(job_id.to_string()));
        };
        if job.record.vertical.is_none() {
            return Err(EngineError::WrongMessage {
                job: job_id.to_string(),
                what: "vertical report",
            });
        }
        let PsiPhase::Running(run) = &mut job.phase else {
            return Ok(());
        };
        // The first report of each party counts (a repeat is ignored).
        run.vreports.entry(slot).or_insert(r);
        if run.vreports.len() < 1 + run.passive_count() {
            return Ok(());
        }
        let mut reports = std::mem::take(&mut run.vreports);
        let names: Vec<String> = (0..run.passive_count())
            .map(|k| {
                run.passive_at(k)
                    .map_or_else(String::new, |(_, n)| n.to_string())
            })
            .collect();
        let Some(a) = reports.remove(&0) else {
            return Ok(());
        };
        let want = job
            .record
            .vertical
            .as_ref()
            .map_or(0, |v| v.spec.total_steps());
        let differs = reports.iter().find(|(_, p)| {
            (a.rows, a.train_rows, a.holdout_rows, a.steps)
                != (p.rows, p.train_rows, p.holdout_rows, p.steps)
        });
        let disagreement = if let Some((k, p)) = differs {
            let who = names.get(k.saturating_sub(1)).cloned().unwrap_or_default();
            Some(format!(
                "the parties report different sessions (active: {} rows, {} training, {} held out, {} steps; passive {who}: {} rows, {} training, {} held out, {} steps)",
                a.rows, a.train_rows, a.holdout_rows, a.steps,
                p.rows, p.train_rows, p.holdout_rows, p.steps
            ))
        } else if a.steps != want {
            Some(format!(
                "the parties report {} steps, the job has {want}",
                a.steps
            ))
        } else {
            None
        };
        if let Some(why) = disagreement {
            self.fail_psi(now, job_id, why);
            return Ok(());
        }
        let Some(job) = self.psi_jobs.get_mut(job_id) else {
            return Ok(());
        };
        let phase = std::mem::replace(&mut job.phase, PsiPhase::Idle);
        let PsiPhase::Running(mut run) = phase else {
            return Ok(());
        };
        let outcome = VerticalOutcome {
            session: run.session(),
            rows: a.rows,
            train_rows: a.train_rows,
            holdout_rows: a.holdout_rows,
            steps: a.steps,
            holdout_auc: a.holdout_auc,
        };
        let (messages, bytes) = run.totals();
        let (_, _, relayed_hash, _) = run.step.take(now);
        let line = format!(
            "ok: {} rows ({} training, {} held out), {} steps{}; {} + {} messages relayed ({} + {} bytes)",
            outcome.rows,
            outcome.train_rows,
            outcome.holdout_rows,
            outcome.steps,
            outcome
                .holdout_auc
                .map(|a| format!(", hold-out AUC {a:.4} at the active party"))
                .unwrap_or_default(),
            messages[0],
            messages[1],
            bytes[0],
            bytes[1]
        );
        tracing::info!(job = job_id, session = run.session(), %line, "vertical session done");
        self.events
            .push_back(Event::Vertical(Box::new(VerticalSummary {
                job_id: job_id.to_string(),
                session: run.session(),
                active: job.record.spec.active.clone(),
                passive: run.passive_names(),
                step: outcome.steps,
                result: Ok(line),
                messages,
                bytes,
                relayed_hash,
                elapsed: now.saturating_duration_since(run.started()),
            })));
        if let Some(v) = job.record.vertical.as_mut() {
            v.outcome = Some(outcome);
        }
        job.lost_restarts = 0;
        self.end_psi(job_id, JobState::Finished, String::new(), Some(&run));
        Ok(())
    }

    /// The earliest moment a running vertical session's party would count as away.
    pub(super) fn vertical_deadline(&self) -> Option<Instant> {
        self.psi_jobs
            .values()
            .filter(|j| j.record.vertical.is_some())
            .filter_map(|j| match &j.phase {
                PsiPhase::Running(run) => run
                    .all_parties()
                    .into_iter()
                    .filter_map(|x| self.liveness.get(&x).and_then(Liveness::last_alive))
                    .min()
                    .map(|t| t + self.liveness_window),
                PsiPhase::Idle => None,
            })
            .min()
    }

    /// Pauses every running vertical session one of whose parties is away: the session is
    /// abandoned (audited), the job waits; a fresh session starts when both are back.
    pub(super) fn pause_vertical_if_away(&mut self, now: Instant) {
        let away: Vec<(String, String)> = self
            .psi_jobs
            .iter()
            .filter(|(_, j)| j.record.vertical.is_some())
            .filter_map(|(id, j)| match &j.phase {
                PsiPhase::Running(run) => {
                    let gone: Vec<String> = run
                        .all_parties()
                        .into_iter()
                        .filter(|&x| !is_alive(&self.liveness, self.liveness_window, x, now))
                        .map(|x| self.name(x))
                        .collect();
                    (!gone.is_empty()).then(|| (id.clone(), gone.join(", ")))
                }
                PsiPhase::Idle => None,
            })
            .collect();
        for (id, who) in away {
            let Some(job) = self.psi_jobs.get_mut(&id) else {
                continue;
            };
            let PsiPhase::Running(run) = std::mem::replace(&mut job.phase, PsiPhase::Idle) else {
                continue;
            };
            job.record.state = JobState::Waiting;
            let steps = job.record.vertical.as_ref().map_or(0, |v| v.steps_done);
            if let Some(v) = job.record.vertical.as_mut() {
                v.paused += 1;
            }
            let why = format!(
                "paused: {who} away mid-training (after {steps} steps); a fresh session starts when every party is present"
            );
            tracing::warn!(job = %id, session = run.session(), reason = %why, "vertical session paused");
            let (messages, bytes) = run.totals();
            self.events
                .push_back(Event::Vertical(Box::new(VerticalSummary {
                    job_id: id.clone(),
                    session: run.session(),
                    active: job.record.spec.active.clone(),
                    passive: run.passive_names(),
                    step: steps,
                    result: Err(why),
                    messages,
                    bytes,
                    relayed_hash: String::new(),
                    elapsed: now.saturating_duration_since(run.started()),
                })));
            self.psi_checkpoint(&id);
        }
    }

    pub(super) fn vertical_status(&self, job_id: &str, job: &PsiJob) -> Option<JobStatus> {
        let r = &job.record;
        let v = r.vertical.as_ref()?;
        let total = v.spec.total_steps();
        let step = v.spec.kind.step_name();
        let mut parts = vec![format!(
            "{}{} on PSI job '{}' (session {}, hash {})",
            v.spec.kind.name(),
            if v.spec.kind.trains() {
                String::new()
            } else {
                format!(" with the model of '{}'", v.spec.model_job)
            },
            v.spec.psi_job,
            v.psi_session,
            v.psi_hash.get(..16).unwrap_or(&v.psi_hash)
        )];
        if let (Some(o), false) = (&v.outcome, v.spec.kind.trains()) {
            parts.push(format!(
                "{} customers scored{}",
                o.rows,
                o.holdout_auc
                    .map(|a| format!(", AUC {a:.4} on their labels at {}", r.spec.active))
                    .unwrap_or_default()
            ));
        } else if let Some(o) = &v.outcome {
            parts.push(format!(
                "{} rows ({} training, {} held out), {} {step}s{}",
                o.rows,
                o.train_rows,
                o.holdout_rows,
                o.steps,
                o.holdout_auc
                    .map(|a| format!(", hold-out AUC {a:.4} at {}", r.spec.active))
                    .unwrap_or_default()
            ));
        }
        match (&r.state, &job.phase) {
            (JobState::Failed(why) | JobState::Cancelled(why), _) => parts.push(why.clone()),
            (_, PsiPhase::Running(run)) => {
                let (m, b) = run.totals();
                let [k0, k1] = run.last_kind();
                parts.push(format!(
                    "session {} with {}: {step} {} of {total} done; {} + {} messages relayed ({} + {} bytes; last: {k0} from {}, {k1} from {}){}",
                    run.session(),
                    run.passive_names(),
                    v.steps_done,
                    m[0],
                    m[1],
                    b[0],
                    b[1],
                    r.spec.active,
                    run.passive_names(),
                    if job.lost_restarts > 0 {
                        format!("; restarted {} time(s): a party lost its state", job.lost_restarts)
                    } else {
                        String::new()
                    } + &if v.resumed_from > 0 {
                        format!("; resumed after {step} {} of an earlier session", v.resumed_from)
                    } else {
                        String::new()
                    }
                ));
            }
            (JobState::Waiting, PsiPhase::Idle) => {
                let clock = self.clock;
                let want: Vec<String> = std::iter::once(&r.spec.active)
                    .chain(r.spec.passive.iter())
                    .filter(|n| {
                        self.id_of(n).is_none_or(|id| {
                            !job.joined.contains(&id)
                                || clock.is_some_and(|now| {
                                    !is_alive(&self.liveness, self.liveness_window, id, now)
                                })
                        })
                    })
                    .cloned()
                    .collect();
                if !want.is_empty() {
                    parts.push(format!("waiting for {}", want.join(", ")));
                }
                if v.paused > 0 {
                    parts.push(format!(
                        "paused {} time(s) by a party away; the next session continues from the last {step} every party holds",
                        v.paused
                    ));
                }
            }
            _ => {}
        }
        Some(JobStatus {
            job_id: job_id.to_string(),
            state: r.state.clone(),
            step: r.next_session + v.steps_done,
            rounds_done: v.outcome.as_ref().map_or(v.steps_done, |o| o.steps),
            total_rounds: total,
            participants: job.joined.iter().map(|&p| self.name(p)).collect(),
            metrics: Vec::new(),
            evaluations: Vec::new(),
            metrics_json: "[]".into(),
            epsilon: 0.0,
            epsilon_budget: 0.0,
            privacy: None,
            detail: parts.join("; "),
        })
    }
}
