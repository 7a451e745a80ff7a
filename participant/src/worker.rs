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
    /// Key of the per-round randomness of DP steps (row sampling, noise): drawn once from
    /// the worker's seed and never sent. A round's stream depends only on this key, the job
    /// and the SecAgg round, not on how many messages the transport delivered before it, so
    /// the same seed gives the same noise in memory and over gRPC.
    private_key: [u8; 32],
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
            private_key: private_key(&seed),
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
            // PSI sessions are the node's `PsiDriver`'s (they read the id column, not the
            // training table); the worker has no part in them.
            ToParticipant::PsiStart(_)
            | ToParticipant::Psi(_)
            | ToParticipant::VerticalRelay { .. }
            | ToParticipant::VerticalStart(_) => Ok(()),
        }
    }

    /// Declines the round `ctx` whose `RoundStart` did not convert from the wire (the node
    /// calls this with [`fedsilo_proto::convert::refused_round`]'s context): the job's earlier
    /// round is abandoned, as a new `RoundStart` would abandon it, and the coordinator is told
    /// why at once instead of waiting for the phase to time out.
    pub fn decline_unreadable(&mut self, ctx: RoundContext, error: fedsilo_proto::WireError) {
        Self::enter_round(&mut self.jobs, &ctx);
        self.decline(ctx, &StepError::Unreadable(error));
    }

    /// The job's work, now at round `ctx` with no SecAgg client yet (a new round drops the
    /// old one's).
    fn enter_round<'w>(
        jobs: &'w mut BTreeMap<String, JobWork>,
        ctx: &RoundContext,
    ) -> &'w mut JobWork {
        let work = jobs.entry(ctx.job_id.clone()).or_insert_with(|| JobWork {
            ctx: None,
            client: None,
            cache: LocalCache::default(),
        });
        work.ctx = Some(ctx.clone());
        work.client = None;
        work
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
        let work = Self::enter_round(&mut self.jobs, &ctx);
        let mut private = round_rng(&self.private_key, &ctx);
        let input = prepare_input(start, &self.datasets, &mut work.cache, &mut private);
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

/// The DP key from the worker's seed (domain-separated: the CSPRNG seeded with `seed` never
/// yields it).
fn private_key(seed: &[u8; 32]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"fedsilo/participant/dp-key/v1");
    h.update(seed);
    h.finalize().into()
}

/// This round's DP randomness: ChaCha20 keyed by SHA-256(key ‖ job id ‖ SecAgg round).
fn round_rng(key: &[u8; 32], ctx: &RoundContext) -> rand_chacha::ChaCha20Rng {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(key);
    h.update((ctx.job_id.len() as u64).to_le_bytes());
    h.update(ctx.job_id.as_bytes());
    h.update(ctx.round.to_le_bytes());
    rand_chacha::ChaCha20Rng::from_seed(h.finalize().into())
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
    let values = fedsilo_task::compute(instr, data, cache, rng)?;
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
        let n = start.config.participants.len();
        let draws = noise_share(noise, n, start.encoding.frac_bits, values.len(), rng)?;
        add_signed(&mut encoded, &draws);
    }
    Ok((instr.purpose(), encoded))
}

/// This participant's share of a DP step's noise, in the round's integer domain: discrete
/// Gaussian of standard deviation `stddev/√n` × the fixed-point scale, so that the `n`
/// shares of the round's participants sum to the noise the accountant assumed.
fn noise_share(
    noise: &fedsilo_task::NoiseSpec,
    n: usize,
    frac_bits: u32,
    len: usize,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Result<Vec<i64>, fedsilo_ml::dp::DpError> {
    let scale = (frac_bits as f64).exp2();
    let sigma_int = noise.share(n) * scale;
    fedsilo_ml::dp::discrete_gaussian_noise(sigma_int, len, rng)
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

#[cfg(test)]
mod noise_tests {
    use super::*;

    /// The noise a DP round's sum carries is the sum of the participants' shares, each drawn
    /// from its own per-round stream; recovered here share by share (what the noised sum minus
    /// the noise-free sum would give), its variance is the `stddev²` the accountant assumed
    /// (σ·C with σ = 1.1, C = 1), within sampling error; and the shares of two participants, or
    /// of two rounds, are not the same draws.
    #[test]
    fn summed_noise_shares_have_the_variance_the_accountant_assumed() {
        let noise = fedsilo_task::NoiseSpec {
            clip: 1.0,
            stddev: 1.1,
            sampling_rate: Some(0.05),
        };
        let n = 5;
        // The engine's rule: each share spans about 2^16 integer units.
        let frac_bits = (65536.0 / noise.share(n)).log2().floor() as u32;
        let scale = (frac_bits as f64).exp2();
        let keys: Vec<[u8; 32]> = (0..n as u8).map(|i| private_key(&[i; 32])).collect();
        let len = 200;
        let rounds = 50;
        let mut sums = Vec::with_capacity(len * rounds);
        let mut first_shares = Vec::new();
        for round in 0..rounds as u64 {
            let ctx = RoundContext {
                job_id: "job-1".into(),
                round,
            };
            let mut sum = vec![0i64; len];
            for (i, key) in keys.iter().enumerate() {
                let draws = noise_share(&noise, n, frac_bits, len, &mut round_rng(key, &ctx))
                    .expect("valid noise");
                if round == 0 {
                    first_shares.push(draws.clone());
                }
                if i == 0 && round == 1 {
                    assert_ne!(draws, first_shares[0], "a new round draws new noise");
                }
                for (s, d) in sum.iter_mut().zip(&draws) {
                    *s += d;
                }
            }
            sums.extend(sum.iter().map(|&v| v as f64 / scale));
        }
        assert_ne!(
            first_shares[0], first_shares[1],
            "participants draw their own noise"
        );
        let m = sums.len() as f64;
        let mean = sums.iter().sum::<f64>() / m;
        let var = sums.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m - 1.0);
        let want = noise.stddev * noise.stddev;
        // Standard error of a sample variance of m normal draws: want·√(2/(m−1)).
        let se = want * (2.0 / (m - 1.0)).sqrt();
        assert!(
            (var - want).abs() < 4.0 * se,
            "variance {var} of the summed noise, accountant assumed {want} (±{se})"
        );
        assert!(mean.abs() < 4.0 * noise.stddev / m.sqrt(), "mean {mean}");
    }

    #[test]
    fn the_dp_stream_depends_on_the_key_job_and_round_only() {
        let key = private_key(&[9; 32]);
        let ctx = RoundContext {
            job_id: "j".into(),
            round: 3,
        };
        let draw = |ctx: &RoundContext| {
            use rand::RngCore;
            round_rng(&key, ctx).next_u64()
        };
        assert_eq!(draw(&ctx), draw(&ctx));
        let other_round = RoundContext {
            round: 4,
            ..ctx.clone()
        };
        let other_job = RoundContext {
            job_id: "k".into(),
            ..ctx.clone()
        };
        assert_ne!(draw(&ctx), draw(&other_round));
        assert_ne!(draw(&ctx), draw(&other_job));
        assert_ne!(private_key(&[9; 32]), [9; 32]);
    }
}
