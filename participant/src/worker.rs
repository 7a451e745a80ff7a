//! The participant's job worker, sans-IO.
//!
//! A [`Worker`] holds an institution's local datasets and, per job, the secure-aggregation
//! [`Client`] of the round in flight. It takes the coordinator's messages in
//! ([`Worker::handle_message`]) and gives messages out ([`Worker::poll_transmit`]) and events
//! ([`Worker::poll_event`]); the gRPC node and the in-memory simulator both drive it.
//!
//! For each `RoundStart` it checks the step against its local data ([`fedsilo_task::check_instruction`]:
//! sizes, finite values, known columns, bounded lengths), computes the step's vector on local
//! data ([`fedsilo_task::compute`]), encodes it in fixed point, adds its share of differential-privacy
//! noise when the step asks for it, and masks it: only masked vectors ever leave the worker.
//! A step that fails any of this is declined with the reason ([`StepError`]); the worker
//! keeps serving.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use fedsilo_crypto::client::Client;
use fedsilo_crypto::encoding::RingVec;
use fedsilo_crypto::keys::IdentityKey;
use fedsilo_crypto::msg::{ParticipantId, Roster, RoundContext};
use fedsilo_task::job::{RoundStart, ToCoordinator, ToParticipant};
use fedsilo_task::{self, InstructionError, LocalCache, LocalData, Purpose};
use rand::SeedableRng;

/// Errors handling one message; the worker keeps serving other jobs.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("message for job '{0}', which this participant has no round for")]
    UnknownJob(String),
    #[error("secure aggregation: {0}")]
    SecAgg(#[from] fedsilo_crypto::error::ClientError),
}

/// Why the worker declines a step; the reason the coordinator receives is its text.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The round's message did not convert from the wire (its instruction names the field).
    #[error("unreadable instruction: {0}")]
    Unreadable(#[source] fedsilo_proto::WireError),
    #[error("no local dataset named '{name}' (this node has: {available})")]
    UnknownDataset { name: String, available: String },
    #[error("instruction refused: {0}")]
    Invalid(#[from] InstructionError),
    #[error("the round carries {round} values but the instruction asks for {instruction}")]
    VectorLength { round: usize, instruction: usize },
    #[error("encoding and round disagree on the modulus")]
    Modulus,
    #[error("{0}")]
    Compute(#[source] fedsilo_task::FedError),
    #[error("encoding: {0}")]
    Encoding(#[from] fedsilo_crypto::encoding::EncodingError),
    #[error("differential-privacy noise: {0}")]
    Noise(#[from] fedsilo_ml::dp::DpError),
    #[error("secure aggregation refused the round: {0}")]
    SecAgg(#[source] fedsilo_crypto::error::ClientError),
}

impl From<fedsilo_task::FedError> for StepError {
    fn from(e: fedsilo_task::FedError) -> Self {
        match e {
            fedsilo_task::FedError::Instruction(i) => StepError::Invalid(i),
            other => StepError::Compute(other),
        }
    }
}

/// What happened, for logs, progress and tests.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkerEvent {
    RoundStarted {
        job_id: String,
        round: u64,
        purpose: Purpose,
    },
    /// The worker could not compute the step and told the coordinator so.
    Declined { job_id: String, reason: String },
    RoundEnded {
        job_id: String,
        round: u64,
        ok: bool,
        detail: String,
    },
    JobEnded {
        job_id: String,
        state: String,
        detail: String,
    },
}

struct JobWork {
    ctx: Option<RoundContext>,
    client: Option<Client>,
    cache: LocalCache,
}

/// The sans-IO participant.
pub struct Worker {
    me: ParticipantId,
    identity: Arc<IdentityKey>,
    roster: Arc<Roster>,
    datasets: BTreeMap<String, LocalData>,
    jobs: BTreeMap<String, JobWork>,
    outbox: VecDeque<ToCoordinator>,
    events: VecDeque<WorkerEvent>,
    rng: rand_chacha::ChaCha20Rng,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("me", &self.me)
            .field("datasets", &self.datasets.keys().collect::<Vec<_>>())
            .field("jobs", &self.jobs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Worker {
    /// `seed` seeds the worker's CSPRNG (from the OS in production; fixed in simulations).
    pub fn new(
        me: ParticipantId,
        identity: Arc<IdentityKey>,
        roster: Arc<Roster>,
        datasets: BTreeMap<String, LocalData>,
        seed: [u8; 32],
    ) -> Self {
        Worker {
            me,
            identity,
            roster,
            datasets,
            jobs: BTreeMap::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            rng: rand_chacha::ChaCha20Rng::from_seed(seed),
        }
    }

    pub fn id(&self) -> ParticipantId {
        self.me
    }

    pub fn datasets(&self) -> impl Iterator<Item = &str> {
        self.datasets.keys().map(|s| s.as_str())
    }

    pub fn poll_transmit(&mut self) -> Option<ToCoordinator> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<WorkerEvent> {
        self.events.pop_front()
    }

    pub fn handle_message(&mut self, msg: ToParticipant) -> Result<(), WorkerError> {
        match msg {
            ToParticipant::RoundStart(start) => {
                self.start_round(&start);
                Ok(())
            }
            ToParticipant::SecAgg(m) => {
                let job_id = m.ctx().job_id.clone();
                let work = self
                    .jobs
                    .get_mut(&job_id)
                    .filter(|w| w.ctx.as_ref() == Some(m.ctx()))
                    .ok_or_else(|| WorkerError::UnknownJob(job_id.clone()))?;
                let client = work
                    .client
                    .as_mut()
                    .ok_or_else(|| WorkerError::UnknownJob(job_id.clone()))?;
                client.handle_message(m, &mut self.rng)?;
                while let Some(out) = client.poll_transmit() {
                    self.outbox.push_back(ToCoordinator::SecAgg(out));
                }
                Ok(())
            }
            ToParticipant::RoundEnd { ctx, ok, detail } => {
                if let Some(w) = self.jobs.get_mut(&ctx.job_id) {
                    if w.ctx.as_ref() == Some(&ctx) {
                        w.client = None;
                        w.ctx = None;
                    }
                }
                self.events.push_back(WorkerEvent::RoundEnded {
                    job_id: ctx.job_id,
                    round: ctx.round,
                    ok,
                    detail,
                });
                Ok(())
            }
            ToParticipant::JobEnd {
                job_id,
                state,
                detail,
            } => {
                self.jobs.remove(&job_id);
                self.events.push_back(WorkerEvent::JobEnded {
                    job_id,
                    state: state.to_string(),
                    detail,
                });
                Ok(())
            }
        }
    }

    /// Declines the round `ctx` whose `RoundStart` did not convert from the wire (the node
    /// calls this with [`fedsilo_proto::convert::refused_round`]'s context): the job's earlier
    /// round is abandoned, as a new `RoundStart` would abandon it, and the coordinator is told
    /// why at once instead of waiting for the phase to time out.
    pub fn decline_unreadable(&mut self, ctx: RoundContext, error: fedsilo_proto::WireError) {
        let work = self
            .jobs
            .entry(ctx.job_id.clone())
            .or_insert_with(|| JobWork {
                ctx: None,
                client: None,
                cache: LocalCache::default(),
            });
        work.ctx = Some(ctx.clone());
        work.client = None;
        self.decline(ctx, &StepError::Unreadable(error));
    }

    /// Tells the coordinator this participant does not take part in round `ctx`, and why.
    fn decline(&mut self, ctx: RoundContext, err: &StepError) {
        let reason = err.to_string();
        tracing::warn!(job = %ctx.job_id, round = ctx.round, %reason, "declining step");
        self.outbox.push_back(ToCoordinator::Decline {
            ctx: ctx.clone(),
            reason: reason.clone(),
        });
        self.events.push_back(WorkerEvent::Declined {
            job_id: ctx.job_id,
            reason,
        });
    }

    fn start_round(&mut self, start: &RoundStart) {
        let ctx = start.config.ctx.clone();
        let work = self
            .jobs
            .entry(ctx.job_id.clone())
            .or_insert_with(|| JobWork {
                ctx: None,
                client: None,
                cache: LocalCache::default(),
            });
        work.ctx = Some(ctx.clone());
        work.client = None;
        let input = prepare_input(start, &self.datasets, &mut work.cache, &mut self.rng);
        let result = input.and_then(|(purpose, input)| {
            let client = Client::new(
                start.config.clone(),
                self.me,
                self.identity.clone(),
                self.roster.clone(),
                input,
                &mut self.rng,
            )
            .map_err(StepError::SecAgg)?;
            Ok((purpose, client))
        });
        match result {
            Ok((purpose, mut client)) => {
                while let Some(out) = client.poll_transmit() {
                    self.outbox.push_back(ToCoordinator::SecAgg(out));
                }
                work.client = Some(client);
                self.events.push_back(WorkerEvent::RoundStarted {
                    job_id: ctx.job_id.clone(),
                    round: ctx.round,
                    purpose,
                });
            }
            Err(err) => self.decline(ctx, &err),
        }
    }
}

/// Checks, computes, encodes and (for DP steps) noises this participant's vector.
///
/// Nothing from the coordinator is trusted: the instruction (typed since the wire, which
/// refused what its types cannot hold) is checked against
/// the local data before any row is read, and its length is compared with the round's before
/// anything is computed.
fn prepare_input(
    start: &RoundStart,
    datasets: &BTreeMap<String, LocalData>,
    cache: &mut LocalCache,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Result<(Purpose, RingVec), StepError> {
    let instr = &start.instruction;
    let data = datasets
        .get(&instr.data().dataset)
        .ok_or_else(|| StepError::UnknownDataset {
            name: instr.data().dataset.clone(),
            available: datasets.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
    let expected = fedsilo_task::check_instruction(instr, data)?;
    if expected != start.config.vector_len {
        return Err(StepError::VectorLength {
            round: start.config.vector_len,
            instruction: expected,
        });
    }
    if start.encoding.modulus != start.config.modulus {
        return Err(StepError::Modulus);
    }
    let values = fedsilo_task::compute(instr, data, cache)?;
    if values.len() != start.config.vector_len {
        return Err(StepError::VectorLength {
            round: start.config.vector_len,
            instruction: values.len(),
        });
    }
    // Every value is clipped to the declared range before encoding: the coordinator checks
    // the sum against survivors × that range, so an out-of-range value must never reach it.
    let (mut encoded, clipped) = start.encoding.encode_clipped(&values)?;
    if clipped.count > 0 {
        tracing::warn!(job = %start.config.ctx.job_id, round = start.config.ctx.round,
            clipped = clipped.count, largest = clipped.largest, first_index = ?clipped.first_index,
            max_abs = start.encoding.max_abs, "values outside the declared range were clipped before encoding");
    }
    if let Some(noise) = instr.noise() {
        let scale = (start.encoding.frac_bits as f64).exp2();
        let sigma_int = noise.share(start.config.participants.len()) * scale;
        let draws = fedsilo_ml::dp::discrete_gaussian_noise(sigma_int, values.len(), rng)?;
        add_signed(&mut encoded, &draws);
    }
    Ok((instr.purpose(), encoded))
}

/// Adds signed integers to ring elements (two's complement, wrapping).
fn add_signed(v: &mut RingVec, noise: &[i64]) {
    match v {
        RingVec::U32(xs) => {
            for (x, &n) in xs.iter_mut().zip(noise) {
                *x = x.wrapping_add(n as u32);
            }
        }
        RingVec::U64(xs) => {
            for (x, &n) in xs.iter_mut().zip(noise) {
                *x = x.wrapping_add(n as u64);
            }
        }
    }
}
