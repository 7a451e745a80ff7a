//! One secure-aggregation round of a job: starting it (participants, encoding, SecAgg
//! configuration), driving its server's phases, and closing it into a [`RoundSummary`] with a
//! typed [`RoundOutcome`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsilo_crypto::encoding::FixedPoint;
use fedsilo_crypto::error::RoundError;
use fedsilo_crypto::graph::recommended_degree;
use fedsilo_crypto::msg::{ParticipantId, Phase, RoundConfig, RoundContext};
use fedsilo_crypto::server::{Server, ServerEvent};
use fedsilo_task::job::{RoundStart, ToParticipant};
use fedsilo_task::{Implausible, Purpose, Step};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::liveness::{ago, is_present, patience_deadline, wait_for_participants};

use super::{Coordinator, Event, JobState, MAX_ATTEMPTS};

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

pub(super) struct ActiveRound {
    pub(super) server: Server,
    pub(super) step: Step,
    pub(super) encoding: FixedPoint,
    pub(super) config: RoundConfig,
    pub(super) phase: Option<Phase>,
    pub(super) phase_started: Instant,
    pub(super) phase_ms: Vec<(String, f64)>,
    pub(super) bytes_sent: BTreeMap<ParticipantId, u64>,
    pub(super) bytes_received: BTreeMap<ParticipantId, u64>,
    pub(super) declined: BTreeMap<ParticipantId, String>,
    /// Every (sender, phase) of a message received in this round, accepted or not.
    pub(super) answered: BTreeSet<(ParticipantId, Phase)>,
    /// Senders of messages the server refused (misbehaviour, not absence).
    pub(super) refused: BTreeSet<ParticipantId>,
    /// Asked and never answered (not declined, not refused), with the phase.
    pub(super) absent: BTreeMap<ParticipantId, Phase>,
    /// The first phase in which anyone was dropped.
    pub(super) first_drop: Option<Phase>,
}

/// The text a typed error is recorded with wherever the engine keeps it as a string (a
/// [`RoundOutcome`]'s `error`, a failed job's reason, a refusal): the whole chain of causes,
/// each once. Those strings are serialised (audit log, checkpoint, reports); the typed error
/// they come from is not.
fn error_text(e: &dyn std::error::Error) -> String {
    fedsilo_config::display_chain(e)
}

pub(super) fn hash_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 (hex) of a decoded sum's little-endian bytes, fed to the hash value by value
/// (no copy of the sum as bytes).
pub(super) fn sum_hash(sum: &[f64]) -> String {
    let mut h = Sha256::new();
    for v in sum {
        h.update(v.to_le_bytes());
    }
    hex::encode(h.finalize())
}

impl Coordinator {
    /// Starts the job's next step if it is idle and enough participants are present.
    pub(super) fn maybe_start(&mut self, now: Instant, job_id: &str) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        if job.round.is_some() || job.record.state.is_terminal() {
            return;
        }
        let mut next_step = job.record.plan.next_step();
        // Differential privacy: stop cleanly before the budget would be exceeded.
        if let (Some(dp), Some(step)) = (&job.record.plan.spec().dp, &next_step) {
            if let Some(budget) = dp.epsilon_budget {
                if step.instruction.purpose().is_training() {
                    let next = job.record.plan.spent_after_next_training().unwrap_or(0.0);
                    if next > budget {
                        job.record.plan.stop(format!(
                            "privacy budget: another round would spend {}-level ε = {next:.3} > budget {budget}",
                            dp.level.name()
                        ));
                        next_step = job.record.plan.next_step();
                    }
                }
            }
        }
        let Some(step) = next_step else {
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
        // With DP noise, keep the integer noise scale moderate (each share ≈ 2^16 units):
        // finer resolution buys nothing under the noise and the exact sampler needs σ ≤ 2^24;
        // coarser than 2^15 units and the accountant's continuous approximation would not hold,
        // so the ring grows to Z_2^64 before the resolution drops below that.
        let noise_share = step
            .instruction
            .noise()
            .map(|ns| ns.share(n))
            .filter(|&s| s > 0.0);
        // Without noise, the sum of this round is over at most its `n` invited participants,
        // each clipped to ±max_abs: the narrowest ring that holds n × max_abs (refusing one
        // that could wrap), with the most fractional bits it leaves. Its quantum is about
        // n × max_abs / 2^31 in Z_2^32, never coarser than what a job sized for
        // `max_participants` got in Z_2^32 at the same max_abs. (A tree level of 5 × 1M rows
        // fits Z_2^32 with 6 fractional bits, half the bytes of Z_2^64.) With noise, the job's
        // `max_participants` stays the bound: the noise is unbounded and that headroom is what
        // keeps a noised sum from wrapping.
        let invited = u32::try_from(n)
            .unwrap_or(u32::MAX)
            .min(spec.max_participants);
        let encoding = match noise_share {
            None => FixedPoint::choose(step.max_abs, invited),
            Some(share) => {
                let target = (65536.0 / share).log2().floor().clamp(0.0, 52.0) as u32;
                let least = (32768.0 / share).log2().ceil().clamp(0.0, 52.0) as u32;
                FixedPoint::choose_with_resolution(step.max_abs, spec.max_participants, least)
                    .and_then(|e| {
                        FixedPoint::new(
                            e.modulus,
                            target.min(e.frac_bits),
                            e.max_abs,
                            e.max_participants,
                        )
                    })
            }
        };
        // The accountant treats the distributed discrete Gaussian as the continuous one it
        // approximates, which holds when each share spans ≥ 2^15 integer units.
        let encoding = encoding.map(|e| {
            let coarse = step
                .instruction
                .noise()
                .map(|ns| ns.share(n) * (e.frac_bits as f64).exp2())
                .filter(|&units| units > 0.0 && units < 32768.0);
            (e, coarse)
        });
        let encoding = match encoding {
            Ok((e, None)) => e,
            Ok((e, Some(units))) => {
                let why = format!(
                    "step {}: the encoding of values up to ±{} for {} participants leaves each \
                     one's DP noise share only {units:.0} integer units (2^-{} resolution), \
                     below the 2^15 the privacy accounting assumes",
                    step.index, e.max_abs, n, e.frac_bits
                );
                self.fail(job_id, why);
                return;
            }
            Err(e) => {
                let why = format!(
                    "step {} cannot be encoded without wrapping: {}",
                    step.index,
                    error_text(&e)
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
                let why = format!("round configuration refused: {}", error_text(&e));
                self.fail(job_id, why);
                return;
            }
        };
        // One `RoundStart` for the round, shared by every participant's message (the service
        // encodes it once too); its encoded size is what each participant is sent.
        // A boosting level goes as its delta when every participant invited holds the state
        // it builds on; whole otherwise (a participant that restarted, missed the last round
        // or joined late, or the job's first round since launch, restore or resume).
        let instruction = match &step.delta {
            Some(delta) if participants.iter().all(|p| job.in_sync.contains(p)) => delta.clone(),
            _ => step.instruction.clone(),
        };
        let start = Arc::new(RoundStart {
            config: config.clone(),
            encoding,
            instruction,
            phase_timeout_ms: timeout.as_millis() as u64,
        });
        let start_bytes = fedsilo_proto::convert::encoded_len(&start) as u64;
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
            *round.bytes_received.entry(p).or_default() += start_bytes;
            self.outbox
                .push_back((p, ToParticipant::RoundStart(Arc::clone(&start))));
        }
        job.record.state = JobState::Running;
        job.started = true;
        job.round = Some(round);
        self.pump(now, job_id);
    }

    /// The summary of `round` of `job_id` before its result is known (and before the model
    /// hash is: the caller sets it).
    pub(super) fn summary_of(&self, job_id: &str, round: &ActiveRound) -> RoundSummary {
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
            model_hash: String::new(),
            encoding: round.encoding.describe(),
            neighbours: round.config.neighbours,
            threshold: round.config.threshold,
            epsilon: None,
        }
    }

    /// Moves the round's server output into the outbox and reacts to its events.
    pub(super) fn pump(&mut self, now: Instant, job_id: &str) {
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
                        reason: error_text(&error),
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
        let noised = round.step.instruction.noise().is_some();
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
        let mut survivors = BTreeSet::new();
        let outcome = match result {
            Err(err) => {
                let absent: Vec<String> = round.absent.keys().map(name).collect();
                let for_absence = matches!(
                    err,
                    RoundError::BelowThreshold { .. }
                        | RoundError::ReconstructionBelowThreshold { .. }
                ) && !absent.is_empty();
                let error = error_text(&err);
                if for_absence {
                    RoundOutcome::Absent { absent, error }
                } else {
                    RoundOutcome::SecAgg { error }
                }
            }
            Ok(out) => {
                survivors = out.survivors.iter().copied().collect();
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
                let outcome = match round.encoding.decode_sum(&out.sum, n) {
                    Err(e) => RoundOutcome::Decode {
                        error: error_text(&e),
                    },
                    Ok(sum) => {
                        summary.aggregate_hash = sum_hash(&sum);
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
                                    error: error_text(&e),
                                },
                            },
                        }
                    }
                };
                // The coordinator saw this noised sum whether or not it was used: a refused
                // one is charged (a retry releases it again with fresh noise).
                if noised && !matches!(outcome, RoundOutcome::Ok) {
                    job.record.plan.charge_unused_release(&round.step);
                    job.record.epsilon = job
                        .record
                        .plan
                        .privacy()
                        .map_or(0.0, |(dp, spent)| spent.at(dp.level));
                    tracing::warn!(
                        job = job_id,
                        round = round.config.ctx.round,
                        epsilon = job.record.epsilon,
                        "a noised sum was unmasked but not used; its release is charged"
                    );
                }
                outcome
            }
        };
        // Who holds the state the plan's next delta builds on: the survivors of a round the
        // plan absorbed (each computed the step); after a failed round, the same as before
        // less those that declined (a participant that computed the failed attempt holds its
        // result, which its retry's delta accepts).
        if matches!(outcome, RoundOutcome::Ok) {
            job.in_sync = survivors;
        } else {
            job.in_sync.retain(|p| !round.declined.contains_key(p));
        }
        match &outcome {
            RoundOutcome::Ok => {
                job.attempts = 0;
                job.held_up_since = None;
                if job.record.plan.spec().dp.is_some() {
                    // ε so far: every noised release counts (a record-level job's prelude
                    // spends before its first training round); the round's own ε is
                    // reported for training rounds.
                    if noised || summary.purpose.is_training() {
                        job.record.epsilon = job
                            .record
                            .plan
                            .privacy()
                            .map_or(0.0, |(dp, spent)| spent.at(dp.level));
                    }
                    if summary.purpose.is_training() {
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
        // The plan is serialised once per round: its bytes are hashed here and, when the
        // round succeeded, are the plan inside the checkpoint below.
        let plan_json = serde_json::value::to_raw_value(&job.record.plan).ok();
        summary.model_hash = plan_json
            .as_deref()
            .map(|p| hash_hex(p.get().as_bytes()))
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
        // A participant's own reason for declining is the likelier cause than the SecAgg
        // failure it led to: the job's failure names them.
        let declined: Vec<String> = round
            .declined
            .iter()
            .map(|(p, why)| format!("{} declined: {why}", name(p)))
            .collect();
        self.events.push_back(Event::Round(Box::new(summary)));
        if ok {
            self.checkpoint_with(job_id, plan_json.as_deref());
        } else if attempts >= MAX_ATTEMPTS {
            let declined = if declined.is_empty() {
                String::new()
            } else {
                format!("; {}", declined.join("; "))
            };
            self.fail(
                job_id,
                format!("step failed {attempts} times in a row; last: {outcome}{declined}"),
            );
            return;
        }
        self.maybe_start(now, job_id);
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
