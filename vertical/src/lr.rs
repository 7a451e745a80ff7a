//! Vertical logistic regression without an arbiter: one active party (labels, its own
//! columns, the intercept, the Paillier key) and one or more passive parties (their own
//! columns); full-batch gradient steps through [`fedsilo_ml::optim`]'s optimiser, so the
//! model is the one the same optimiser gives on the joined table.
//!
//! One iteration `t` (the coordinator relays; `k` = one passive party):
//!
//! 1. `k → A` [`LrToActive::Logits`]: `u_k = X_k·w_k` (its partial logits, `n` floats).
//! 2. `A`: `z = X_A·w_A + b + Σ_k u_k`, `r_i = c_i·(σ(z_i) − y_i)`; updates its own `w_A`, `b`
//!    from `Σ_i r_i·x_i`; encodes `r̃_i = ⌊r_i·2^{Fr}⌉` and sends `A → k`
//!    [`LrToPassive::Residuals`]: `Enc_A(r̃_i)` for every row (fresh randomness, CRT).
//! 3. `k`: `Enc_A(G̃_j + m_j) = Π_i Enc_A(r̃_i)^{x̃_ij} · Enc_A(m_j)` for each of its columns `j`
//!    (`x̃ = ⌊x·2^{Fx}⌉`, Pippenger multi-exponentiation), `m_j` uniform on
//!    `[0, 2^{B+128})` where `2^B` bounds `|G̃_j|`; sends `k → A` [`LrToActive::MaskedGradient`].
//! 4. `A` decrypts and returns `A → k` [`LrToPassive::Gradient`]: `G̃_j + m_j` in the clear.
//! 5. `k`: `G̃_j = (G̃_j + m_j) − m_j`, gradient `G̃_j/2^{Fx+Fr}/n + l2·w_j`; optimiser step.
//!
//! What each party learns is in ARCHITECTURE.md ("`vertical`"): the active party sees the
//! passive parties' partial logits (it needs the exact logit for the exact sigmoid), never
//! their features, weights or gradients; a passive party sees only ciphertexts under the
//! active party's key and its own masked gradient.
//!
//! Sans-IO: messages in through `handle`, messages out as return values; randomness passed
//! in; no clock (a lost peer is the driver's business). Every message is checked (phase,
//! iteration, sizes, ciphertext range, plaintext bounds) before it touches the state; a
//! refused message leaves the state unchanged.

use fedsilo_ml::optim::{OptimizerState, ServerOptimizer};
use ndarray::{Array2, ArrayView1, ArrayView2};
use num_bigint::BigInt as Integer;
use num_traits::{One, Signed, ToPrimitive};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{expect_len, expect_round, PeerError, VerticalError};
use crate::he::{
    from_bytes, to_bytes, Ciphertext, PublicKey, SecretKey, WireCiphertext, WirePublicKey,
};

/// Largest |standardised feature| a passive party may encode (`2^10`).
pub const MAX_ABS_FEATURE: f64 = 1024.0;
const FEATURE_INT_BITS: u32 = 10;
/// Statistical hiding of a gradient by its mask: the mask is `2^128` times wider.
pub const MASK_SECURITY_BITS: u32 = 128;
/// Largest number of aligned rows.
pub const MAX_ROWS: usize = 1 << 26;

/// An [`LrConfig`] value out of its domain, by field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LrConfigError {
    #[error("iterations {0} must be in 1..=100000")]
    Iterations(u32),
    #[error("l2 {0} must be finite and ≥ 0")]
    L2(f64),
    #[error("pos_weight {0} must be in (0, 1e6]")]
    PosWeight(f64),
    #[error("feature_bits {0} must be in 8..=40")]
    FeatureBits(u32),
    #[error("residual_bits {0} must be in 16..=40")]
    ResidualBits(u32),
}

/// Hyper-parameters, the same at every party.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrConfig {
    /// Full-batch gradient iterations.
    pub iterations: u32,
    /// L2 penalty on the coefficients (not the intercept): objective
    /// `(1/n)·Σ c_i·ℓ_i + (l2/2)·‖coef‖²`, as `fedsilo_ml::linear`.
    pub l2: f64,
    /// Class weight of label 1 (`c_i = 1 + (pos_weight − 1)·y_i`).
    pub pos_weight: f64,
    /// The optimiser each party applies to its own coordinates (all are per-coordinate).
    pub optimizer: ServerOptimizer,
    /// Fractional bits of a passive party's fixed-point features.
    pub feature_bits: u32,
    /// Fractional bits of the encrypted residuals.
    pub residual_bits: u32,
}

impl LrConfig {
    pub fn new(iterations: u32, optimizer: ServerOptimizer) -> Self {
        LrConfig {
            iterations,
            l2: 0.0,
            pos_weight: 1.0,
            optimizer,
            feature_bits: 20,
            residual_bits: 40,
        }
    }

    pub fn validate(&self) -> Result<(), LrConfigError> {
        if self.iterations == 0 || self.iterations > 100_000 {
            return Err(LrConfigError::Iterations(self.iterations));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(LrConfigError::L2(self.l2));
        }
        if !(self.pos_weight.is_finite() && self.pos_weight > 0.0 && self.pos_weight <= 1e6) {
            return Err(LrConfigError::PosWeight(self.pos_weight));
        }
        if !(8..=40).contains(&self.feature_bits) {
            return Err(LrConfigError::FeatureBits(self.feature_bits));
        }
        if !(16..=40).contains(&self.residual_bits) {
            return Err(LrConfigError::ResidualBits(self.residual_bits));
        }
        Ok(())
    }

    /// `B` with `|G̃_j| < 2^B` for `n` rows.
    fn gradient_bits(&self, n: usize) -> u32 {
        let rows = usize::BITS - n.leading_zeros();
        let pw = (self.pos_weight.max(1.0).log2().ceil() as u32) + 1;
        rows + self.feature_bits + FEATURE_INT_BITS + 1 + pw + self.residual_bits
    }

    /// Fits in the plaintext space with room for the mask, for a key of `bits`.
    fn check_room(&self, n: usize, key_bits: u32) -> Result<(), VerticalError> {
        let need = self.gradient_bits(n) + MASK_SECURITY_BITS + 4;
        if need >= key_bits {
            return Err(VerticalError::Config(format!(
                "{n} rows need {need}-bit plaintexts; the key has {key_bits}"
            )));
        }
        Ok(())
    }
}

/// A signed integer as it travels (magnitude big-endian).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireInteger {
    pub negative: bool,
    pub magnitude: Vec<u8>,
}

impl WireInteger {
    fn from_int(v: &Integer) -> Self {
        WireInteger {
            negative: v.is_negative(),
            magnitude: to_bytes(v),
        }
    }

    fn to_int(
        &self,
        max_bytes: usize,
        what: &'static str,
        index: usize,
    ) -> Result<Integer, PeerError> {
        if self.magnitude.len() > max_bytes {
            return Err(PeerError::PlaintextOutOfRange { what, index });
        }
        let m = from_bytes(&self.magnitude);
        Ok(if self.negative { -m } else { m })
    }
}

/// Messages to a passive party. None carries a plaintext label, residual, score or another
/// party's gradient: `Residuals` are ciphertexts under the active party's key, `Gradient`
/// is the passive party's own gradient plus its own mask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LrToPassive {
    /// The active party's public key and the number of aligned rows.
    Setup {
        public_key: WirePublicKey,
        rows: u64,
    },
    /// `Enc(r̃_i)` for every row, iteration `iteration`.
    Residuals {
        iteration: u32,
        residuals: Vec<WireCiphertext>,
    },
    /// `G̃_j + m_j` for each of the passive party's columns.
    Gradient {
        iteration: u32,
        masked: Vec<WireInteger>,
    },
}

impl LrToPassive {
    fn name(&self) -> &'static str {
        match self {
            LrToPassive::Setup { .. } => "setup",
            LrToPassive::Residuals { .. } => "residuals",
            LrToPassive::Gradient { .. } => "gradient",
        }
    }
}

/// Messages to the active party.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LrToActive {
    /// The passive party's partial logits `X_k·w_k`, one per row.
    Logits { iteration: u32, logits: Vec<f64> },
    /// `Enc(G̃_j + m_j)` for each of the passive party's columns.
    MaskedGradient {
        iteration: u32,
        gradient: Vec<WireCiphertext>,
    },
}

impl LrToActive {
    fn name(&self) -> &'static str {
        match self {
            LrToActive::Logits { .. } => "logits",
            LrToActive::MaskedGradient { .. } => "masked gradient",
        }
    }
}

/// Row-major rows of `x` with a shape and finiteness check.
fn rows_of(x: ArrayView2<f32>, what: &str) -> Result<Array2<f32>, VerticalError> {
    if let Some((i, v)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(VerticalError::Data(format!(
            "{what}: element {i} is {v} (standardise and fill missing values first)"
        )));
    }
    if x.nrows() == 0 || x.nrows() > MAX_ROWS {
        return Err(VerticalError::Data(format!(
            "{what}: {} rows (must be 1..={MAX_ROWS})",
            x.nrows()
        )));
    }
    Ok(x.as_standard_layout().to_owned())
}

fn dot(w: &[f64], row: &[f32]) -> f64 {
    w.iter().zip(row).map(|(a, &b)| a * f64::from(b)).sum()
}

/// `c·(σ(z) − y)` written as `fedsilo_ml::linear` does: both probabilities computed directly.
fn residual(z: f64, y: f64, pos_weight: f64) -> f64 {
    let e = (-z.abs()).exp();
    let inv = 1.0 / (1.0 + e);
    let (p, q) = if z >= 0.0 {
        (inv, e * inv)
    } else {
        (e * inv, inv)
    };
    (1.0 + (pos_weight - 1.0) * y) * ((1.0 - y) * p - y * q)
}

// ---------------------------------------------------------------------------------------------
// Active party
// ---------------------------------------------------------------------------------------------

/// The active party's trained part of the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveLrModel {
    pub coef: Vec<f64>,
    pub intercept: f64,
}

impl ActiveLrModel {
    /// The model's margins (logits) on rows scored jointly: `x` the active party's
    /// standardised columns of the rows, `partial[k]` passive party `k`'s partial logits of
    /// the same rows ([`PassiveLr::partial_logits`]). `σ(margin)` is the score.
    pub fn margins(
        &self,
        x: ArrayView2<f32>,
        partial: &[Vec<f64>],
    ) -> Result<Vec<f64>, VerticalError> {
        if x.ncols() != self.coef.len() {
            return Err(VerticalError::Data(format!(
                "{} active columns for a model of {}",
                x.ncols(),
                self.coef.len()
            )));
        }
        if let Some(p) = partial.iter().find(|p| p.len() != x.nrows()) {
            return Err(PeerError::WrongSize {
                what: "partial logits",
                expected: x.nrows(),
                got: p.len(),
            }
            .into());
        }
        Ok(x.outer_iter()
            .enumerate()
            .map(|(i, row)| {
                let own: f64 = self
                    .coef
                    .iter()
                    .zip(row.iter())
                    .map(|(w, &v)| w * f64::from(v))
                    .sum();
                own + self.intercept + partial.iter().filter_map(|p| p.get(i)).sum::<f64>()
            })
            .collect())
    }
}

/// The pooled reference of vertical LR: the same full-batch steps of `cfg.optimizer` on the
/// joined table `x` (every party's standardised columns side by side, the active party's
/// first) with `fedsilo_ml::linear`'s gradient, the objective [`ActiveLr`] and [`PassiveLr`]
/// descend together. Returns the flat parameters (coefficients in `x`'s column order, then
/// the intercept); vertical LR equals them to its fixed-point precision.
pub fn fit_joined(
    cfg: &LrConfig,
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
) -> Result<Vec<f64>, VerticalError> {
    cfg.validate()?;
    let d = x.ncols();
    let n = x.nrows() as f64;
    let mut params = vec![0.0; d + 1];
    let mut st = OptimizerState::new(&cfg.optimizer, d + 1);
    for _ in 0..cfg.iterations {
        let p = fedsilo_ml::linear::LinearParams::from_flat(&params)?;
        let (_, g) = fedsilo_ml::linear::loss_grad_sum(&p, x, y, cfg.pos_weight)?;
        let delta: Vec<f64> = (0..=d)
            .map(|j| {
                let pen = if j < d {
                    cfg.l2 * params.get(j).copied().unwrap_or(0.0)
                } else {
                    0.0
                };
                -(g.get(j).copied().unwrap_or(0.0) / n + pen)
            })
            .collect();
        st.try_step(&cfg.optimizer, &mut params, &delta)?;
    }
    Ok(params)
}

/// Awaiting every passive party's partial logits of iteration `iteration`.
struct AwaitingLogits {
    got: Vec<Option<Vec<f64>>>,
}

/// Awaiting every passive party's masked gradient.
struct AwaitingMaskedGradients {
    got: Vec<Option<Vec<Integer>>>,
}

enum ActivePhase {
    Logits(AwaitingLogits),
    Gradients(AwaitingMaskedGradients),
    Done,
}

/// The active party of vertical LR. Inputs: [`ActiveLr::handle`] (a message from passive
/// party `k`, `0..passive_features.len()`); outputs: the messages it returns, each addressed
/// to a passive party. Getters: [`ActiveLr::is_done`], [`ActiveLr::model`],
/// [`ActiveLr::iteration`].
pub struct ActiveLr {
    cfg: LrConfig,
    sk: SecretKey,
    x: Array2<f32>,
    y: Vec<f64>,
    params: Vec<f64>,
    opt: OptimizerState,
    passive_features: Vec<usize>,
    iteration: u32,
    phase: ActivePhase,
}

impl ActiveLr {
    /// Starts a session: `x` the active party's standardised columns, `y` its 0/1 labels,
    /// `passive_features[k]` the number of columns of passive party `k`. Returns the Setup
    /// message for every passive party.
    pub fn new(
        cfg: LrConfig,
        sk: SecretKey,
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        passive_features: &[usize],
    ) -> Result<(Self, Vec<(usize, LrToPassive)>), VerticalError> {
        cfg.validate()?;
        let x = rows_of(x, "active features")?;
        let n = x.nrows();
        if y.len() != n {
            return Err(VerticalError::Data(format!(
                "{} labels for {n} rows",
                y.len()
            )));
        }
        if let Some(v) = y.iter().find(|&&v| v != 0.0 && v != 1.0) {
            return Err(VerticalError::Data(format!("label {v} is not 0 or 1")));
        }
        if passive_features.is_empty() || passive_features.contains(&0) {
            return Err(VerticalError::Config(
                "every passive party needs at least one column".into(),
            ));
        }
        cfg.check_room(n, sk.public().bits())?;
        let d = x.ncols();
        let opt = OptimizerState::new(&cfg.optimizer, d + 1);
        let setup = LrToPassive::Setup {
            public_key: sk.public().to_wire(),
            rows: n as u64,
        };
        let out = (0..passive_features.len())
            .map(|k| (k, setup.clone()))
            .collect();
        Ok((
            ActiveLr {
                y: y.iter().map(|&v| f64::from(v)).collect(),
                x,
                params: vec![0.0; d + 1],
                opt,
                passive_features: passive_features.to_vec(),
                iteration: 0,
                phase: ActivePhase::Logits(AwaitingLogits {
                    got: vec![None; passive_features.len()],
                }),
                cfg,
                sk,
            },
            out,
        ))
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, ActivePhase::Done)
    }

    /// The iteration in progress (= iterations done, once done).
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// The active party's coefficients and the intercept (current, or final once done).
    pub fn model(&self) -> ActiveLrModel {
        let d = self.x.ncols();
        ActiveLrModel {
            coef: self.params[..d].to_vec(),
            intercept: self.params[d],
        }
    }

    fn expected(&self) -> &'static str {
        match self.phase {
            ActivePhase::Logits(_) => "logits",
            ActivePhase::Gradients(_) => "masked gradient",
            ActivePhase::Done => "nothing (training is finished)",
        }
    }

    /// Takes a message from passive party `from`. Returns the messages to send (possibly
    /// none until every passive party has answered the phase).
    pub fn handle<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        from: usize,
        msg: LrToActive,
    ) -> Result<Vec<(usize, LrToPassive)>, VerticalError> {
        if from >= self.passive_features.len() {
            return Err(PeerError::UnknownParty { party: from }.into());
        }
        let n = self.x.nrows();
        match (&mut self.phase, msg) {
            (ActivePhase::Logits(st), LrToActive::Logits { iteration, logits }) => {
                expect_round("logits", self.iteration, iteration)?;
                expect_len("logits", n, logits.len())?;
                if let Some((index, &value)) =
                    logits.iter().enumerate().find(|(_, v)| !v.is_finite())
                {
                    return Err(PeerError::BadValue {
                        what: "logits",
                        index,
                        value,
                    }
                    .into());
                }
                let slot = st
                    .got
                    .get_mut(from)
                    .ok_or(PeerError::UnknownParty { party: from })?;
                if slot.is_some() {
                    return Err(PeerError::Duplicate { party: from }.into());
                }
                *slot = Some(logits);
                if st.got.iter().any(Option::is_none) {
                    return Ok(Vec::new());
                }
                let parts: Vec<Vec<f64>> = st.got.iter_mut().filter_map(Option::take).collect();
                self.residual_step(rng, &parts)
            }
            (
                ActivePhase::Gradients(st),
                LrToActive::MaskedGradient {
                    iteration,
                    gradient,
                },
            ) => {
                expect_round("masked gradient", self.iteration, iteration)?;
                let d = self.passive_features.get(from).copied().unwrap_or(0);
                expect_len("masked gradient", d, gradient.len())?;
                let cts = self.sk.public().ciphertexts(&gradient, "masked gradient")?;
                let slot = st
                    .got
                    .get_mut(from)
                    .ok_or(PeerError::UnknownParty { party: from })?;
                if slot.is_some() {
                    return Err(PeerError::Duplicate { party: from }.into());
                }
                // Decrypt and range-check before accepting.
                let plain = self.sk.decrypt_batch(&cts, "masked gradient")?;
                let limit = Integer::one() << (self.cfg.gradient_bits(n) + MASK_SECURITY_BITS + 1);
                if let Some(index) = plain.iter().position(|v| v.abs() >= limit) {
                    return Err(PeerError::PlaintextOutOfRange {
                        what: "masked gradient",
                        index,
                    }
                    .into());
                }
                *slot = Some(plain);
                if st.got.iter().any(Option::is_none) {
                    return Ok(Vec::new());
                }
                let out: Vec<(usize, LrToPassive)> = st
                    .got
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(k, g)| g.take().map(|g| (k, g)))
                    .map(|(k, g)| {
                        (
                            k,
                            LrToPassive::Gradient {
                                iteration: self.iteration,
                                masked: g.iter().map(WireInteger::from_int).collect(),
                            },
                        )
                    })
                    .collect();
                self.iteration += 1;
                self.phase = if self.iteration >= self.cfg.iterations {
                    ActivePhase::Done
                } else {
                    ActivePhase::Logits(AwaitingLogits {
                        got: vec![None; self.passive_features.len()],
                    })
                };
                Ok(out)
            }
            (_, msg) => Err(PeerError::wrong_phase(self.expected(), msg.name()).into()),
        }
    }

    /// Every partial logit is in: residuals, the active party's own step, encrypted residuals.
    fn residual_step<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        parts: &[Vec<f64>],
    ) -> Result<Vec<(usize, LrToPassive)>, VerticalError> {
        let (n, d) = self.x.dim();
        let x = self
            .x
            .as_slice()
            .ok_or(VerticalError::Internal("row-major rows"))?;
        let coef = &self.params[..d];
        let intercept = self.params[d];
        let pw = self.cfg.pos_weight;
        let r: Vec<f64> = (0..n)
            .into_par_iter()
            .map(|i| {
                let own = x.get(i * d..(i + 1) * d).map_or(0.0, |row| dot(coef, row));
                let z = own + intercept + parts.iter().filter_map(|p| p.get(i)).sum::<f64>();
                residual(z, self.y.get(i).copied().unwrap_or(0.0), pw)
            })
            .collect();
        // own gradient: Σ r_i·x_i and Σ r_i, then the penalty, as the pooled objective
        let mut grad = vec![0.0; d + 1];
        for (i, &ri) in r.iter().enumerate() {
            if let Some(row) = x.get(i * d..(i + 1) * d) {
                for (g, &v) in grad.iter_mut().zip(row) {
                    *g += ri * f64::from(v);
                }
            }
            grad[d] += ri;
        }
        let nf = n as f64;
        let delta: Vec<f64> = (0..=d)
            .map(|j| {
                let pen = if j < d {
                    self.cfg.l2 * self.params[j]
                } else {
                    0.0
                };
                -(grad[j] / nf + pen)
            })
            .collect();
        self.opt
            .try_step(&self.cfg.optimizer, &mut self.params, &delta)?;
        // encrypted fixed-point residuals
        let scale = (self.cfg.residual_bits as f64).exp2();
        let rq: Vec<Integer> = r
            .iter()
            .map(|&v| Integer::from((v * scale).round() as i64))
            .collect();
        let cts = self.sk.encrypt_batch(rng, &rq)?;
        let wire: Vec<WireCiphertext> = cts.iter().map(PublicKey::to_wire_ct).collect();
        let msg = LrToPassive::Residuals {
            iteration: self.iteration,
            residuals: wire,
        };
        self.phase = ActivePhase::Gradients(AwaitingMaskedGradients {
            got: vec![None; self.passive_features.len()],
        });
        Ok((0..self.passive_features.len())
            .map(|k| (k, msg.clone()))
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Passive party
// ---------------------------------------------------------------------------------------------

struct AwaitingSetup;

struct AwaitingResiduals {
    pk: PublicKey,
}

struct AwaitingGradient {
    pk: PublicKey,
    masks: Vec<Integer>,
}

enum PassivePhase {
    Setup(AwaitingSetup),
    Residuals(AwaitingResiduals),
    Gradient(AwaitingGradient),
    Done,
}

/// One passive column's exponents for `Xᵀ·Enc(r̃)`: the fixed-point values `x̃_ij` shifted by
/// the column's own largest magnitude `o_j` (so all are in `[0, 2·o_j]`), and their bit
/// length. A column of values within ±2 takes 23-bit exponents where the fixed bound
/// `2^{Fx+10}` took 32: Pippenger's method then needs two windows instead of three (a
/// third fewer multiplications mod n² per column, the passive party's whole cost). The
/// offset is this party's own; only `G̃_j` leaves it (masked), the same for any offset.
#[derive(Clone, Debug)]
struct ColumnExps {
    exps: Vec<u64>,
    offset: u64,
    bits: u32,
}

impl ColumnExps {
    /// `values` within ±[`MAX_ABS_FEATURE`] (checked by the caller), `scale = 2^{Fx}`.
    fn of(values: ndarray::ArrayView1<'_, f32>, scale: f64) -> Self {
        let fixed: Vec<i64> = values
            .iter()
            .map(|&v| (f64::from(v) * scale).round() as i64)
            .collect();
        let offset = fixed.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
        // in place: the collect reuses `fixed`'s buffer
        let exps: Vec<u64> = fixed
            .into_iter()
            .map(|v| v.saturating_add_unsigned(offset) as u64)
            .collect();
        let bits = (u64::BITS - (2 * offset).leading_zeros()).max(1);
        ColumnExps { exps, offset, bits }
    }
}

/// A passive party of vertical LR: its columns and weights stay here. Inputs:
/// [`PassiveLr::handle`]; output: at most one message to the active party per input.
pub struct PassiveLr {
    cfg: LrConfig,
    x: Array2<f32>,
    /// The exponents of the encrypted gradient, one column each: `x̃_ij + o_j`, with the
    /// column's offset `o_j = max_i |x̃_ij|`, so that they are non-negative and as short as
    /// the column allows (`bits` of them; at most `2^{Fx+11}`).
    exps: Vec<ColumnExps>,
    coef: Vec<f64>,
    opt: OptimizerState,
    iteration: u32,
    phase: PassivePhase,
    /// The modulus size the active party's key must have (the job's `key_bits`), if set.
    key_bits: Option<u32>,
}

impl PassiveLr {
    /// Refuses an active party's key whose modulus is not of `bits` bits (the job's
    /// `key_bits`; without this only the crate's bounds apply).
    pub fn require_key_bits(mut self, bits: u32) -> Self {
        self.key_bits = Some(bits);
        self
    }

    /// `x`: this party's standardised columns on the aligned rows (|x| ≤ 1024, finite).
    pub fn new(cfg: LrConfig, x: ArrayView2<f32>) -> Result<Self, VerticalError> {
        cfg.validate()?;
        let x = rows_of(x, "passive features")?;
        if let Some(v) = x.iter().find(|v| f64::from(v.abs()) > MAX_ABS_FEATURE) {
            return Err(VerticalError::Data(format!(
                "feature value {v} beyond ±{MAX_ABS_FEATURE} (standardise first)"
            )));
        }
        let d = x.ncols();
        if d == 0 {
            return Err(VerticalError::Data("a passive party needs a column".into()));
        }
        let scale = (cfg.feature_bits as f64).exp2();
        let exps = (0..d)
            .into_par_iter()
            .map(|j| ColumnExps::of(x.column(j), scale))
            .collect();
        Ok(PassiveLr {
            opt: OptimizerState::new(&cfg.optimizer, d),
            coef: vec![0.0; d],
            exps,
            x,
            iteration: 0,
            phase: PassivePhase::Setup(AwaitingSetup),
            cfg,
            key_bits: None,
        })
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, PassivePhase::Done)
    }

    /// This party's coefficients (they never leave it).
    pub fn coef(&self) -> &[f64] {
        &self.coef
    }

    /// This party's partial logits `x·w_k` of rows to score (`x` its own standardised
    /// columns of those rows, standardised as its training columns were): what it sends the
    /// active party to score them, as in training.
    pub fn partial_logits(&self, x: ArrayView2<f32>) -> Result<Vec<f64>, VerticalError> {
        if x.ncols() != self.coef.len() {
            return Err(VerticalError::Data(format!(
                "{} columns for a party of {}",
                x.ncols(),
                self.coef.len()
            )));
        }
        if let Some(v) = x.iter().find(|v| !v.is_finite()) {
            return Err(VerticalError::Data(format!(
                "feature value {v} (standardise and fill missing values first)"
            )));
        }
        Ok(x.outer_iter()
            .map(|row| {
                self.coef
                    .iter()
                    .zip(row.iter())
                    .map(|(w, &v)| w * f64::from(v))
                    .sum()
            })
            .collect())
    }

    fn expected(&self) -> &'static str {
        match self.phase {
            PassivePhase::Setup(_) => "setup",
            PassivePhase::Residuals(_) => "residuals",
            PassivePhase::Gradient(_) => "gradient",
            PassivePhase::Done => "nothing (training is finished)",
        }
    }

    fn logits(&self) -> LrToActive {
        let d = self.coef.len();
        let rows = self.x.as_slice().unwrap_or(&[]);
        let logits = rows.par_chunks(d).map(|row| dot(&self.coef, row)).collect();
        LrToActive::Logits {
            iteration: self.iteration,
            logits,
        }
    }

    /// Takes a message from the active party; returns the answer, if any.
    pub fn handle<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        msg: LrToPassive,
    ) -> Result<Option<LrToActive>, VerticalError> {
        let n = self.x.nrows();
        match (&self.phase, msg) {
            (PassivePhase::Setup(_), LrToPassive::Setup { public_key, rows }) => {
                if rows != n as u64 {
                    return Err(PeerError::WrongSize {
                        what: "aligned rows",
                        expected: n,
                        got: rows as usize,
                    }
                    .into());
                }
                let pk = PublicKey::from_wire(&public_key)?;
                pk.check_bits(self.key_bits)?;
                self.cfg.check_room(n, pk.bits())?;
                self.phase = PassivePhase::Residuals(AwaitingResiduals { pk });
                Ok(Some(self.logits()))
            }
            (
                PassivePhase::Residuals(st),
                LrToPassive::Residuals {
                    iteration,
                    residuals,
                },
            ) => {
                expect_round("residuals", self.iteration, iteration)?;
                expect_len("residuals", n, residuals.len())?;
                let cts = st.pk.ciphertexts(&residuals, "residuals")?;
                let (out, masks) = self.masked_gradient(rng, &st.pk, &cts)?;
                let pk = st.pk.clone();
                self.phase = PassivePhase::Gradient(AwaitingGradient { pk, masks });
                Ok(Some(LrToActive::MaskedGradient {
                    iteration: self.iteration,
                    gradient: out,
                }))
            }
            (PassivePhase::Gradient(st), LrToPassive::Gradient { iteration, masked }) => {
                expect_round("gradient", self.iteration, iteration)?;
                expect_len("gradient", self.coef.len(), masked.len())?;
                let max_bytes = (st.pk.bits() as usize).div_ceil(8);
                let bound = Integer::one() << self.cfg.gradient_bits(n);
                let scale = ((self.cfg.feature_bits + self.cfg.residual_bits) as f64).exp2();
                let mut grad = Vec::with_capacity(masked.len());
                for (index, (m, mask)) in masked.iter().zip(&st.masks).enumerate() {
                    let v = m.to_int(max_bytes, "gradient", index)?;
                    let g = v - mask;
                    if g.abs() >= bound {
                        return Err(PeerError::PlaintextOutOfRange {
                            what: "gradient",
                            index,
                        }
                        .into());
                    }
                    grad.push(g.to_f64().unwrap_or(f64::NAN) / scale);
                }
                let nf = n as f64;
                let delta: Vec<f64> = grad
                    .iter()
                    .zip(&self.coef)
                    .map(|(g, w)| -(g / nf + self.cfg.l2 * w))
                    .collect();
                self.opt
                    .try_step(&self.cfg.optimizer, &mut self.coef, &delta)?;
                self.iteration += 1;
                if self.iteration >= self.cfg.iterations {
                    self.phase = PassivePhase::Done;
                    return Ok(None);
                }
                let pk = st.pk.clone();
                self.phase = PassivePhase::Residuals(AwaitingResiduals { pk });
                Ok(Some(self.logits()))
            }
            (_, msg) => Err(PeerError::wrong_phase(self.expected(), msg.name()).into()),
        }
    }

    /// `Enc(G̃_j + m_j)` for every column, and the masks `m_j`.
    fn masked_gradient<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        pk: &PublicKey,
        cts: &[Ciphertext],
    ) -> Result<(Vec<WireCiphertext>, Vec<Integer>), VerticalError> {
        let n = cts.len();
        // Enc(Σ (x̃ + o_j)·r̃) − o_j·Enc(Σ r̃) per column, in parallel over columns
        let total = cts
            .par_iter()
            .cloned()
            .reduce(|| pk.one(), |a, b| pk.add(&a, &b));
        let sums: Vec<Ciphertext> = self
            .exps
            .par_iter()
            .map(|col| {
                let s = pk.multi_exp(cts, &col.exps, col.bits);
                let minus = pk.neg(&pk.mul_pos(&total, &Integer::from(col.offset))?)?;
                Ok(pk.add(&s, &minus))
            })
            .collect::<Result<_, VerticalError>>()?;
        let mask_bits = self.cfg.gradient_bits(n) + MASK_SECURITY_BITS;
        let mut masks = Vec::with_capacity(sums.len());
        let mut out = Vec::with_capacity(sums.len());
        for s in &sums {
            let mut bytes = vec![0u8; (mask_bits as usize).div_ceil(8)];
            rng.fill_bytes(&mut bytes);
            let m = from_bytes(&bytes) % (Integer::one() << mask_bits);
            let em = pk.encrypt(rng, &m)?;
            let c = pk.add(s, &em);
            out.push(PublicKey::to_wire_ct(&c));
            masks.push(m);
        }
        Ok((out, masks))
    }
}

// ---------------------------------------------------------------------------------------------
// Resuming a later session at an iteration boundary
// ---------------------------------------------------------------------------------------------

/// One party's LR state between iterations: its own parameters (the active party's
/// coefficients and intercept, or a passive party's coefficients) and optimiser moments
/// after `iteration` iterations. It stays with its party (it is never sent): a later
/// session of the same job, with a fresh key, continues from an iteration both parties
/// hold a checkpoint of, and trains the same model an uninterrupted session would.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrCheckpoint {
    pub iteration: u32,
    pub params: Vec<f64>,
    pub opt: OptimizerState,
}

fn check_resume(
    cp: &LrCheckpoint,
    cfg: &LrConfig,
    params: usize,
    iteration: u32,
) -> Result<(), VerticalError> {
    if iteration != 0 {
        return Err(VerticalError::Internal(
            "a party resumes only before its first message",
        ));
    }
    if cp.iteration == 0 || cp.iteration >= cfg.iterations || cp.params.len() != params {
        return Err(VerticalError::Config(format!(
            "a checkpoint of iteration {} with {} parameters does not fit a job of {} \
             iterations and {params} parameters",
            cp.iteration,
            cp.params.len(),
            cfg.iterations
        )));
    }
    Ok(())
}

impl ActiveLr {
    /// The state after the last completed iteration, when between iterations (awaiting
    /// logits; none before the first iteration or once done).
    pub fn checkpoint(&self) -> Option<LrCheckpoint> {
        (matches!(self.phase, ActivePhase::Logits(_)) && self.iteration > 0).then(|| LrCheckpoint {
            iteration: self.iteration,
            params: self.params.clone(),
            opt: self.opt.clone(),
        })
    }

    /// A party just made by [`ActiveLr::new`] continues from `cp` (its own checkpoint of an
    /// earlier session of the job): it awaits the logits of iteration `cp.iteration`.
    pub fn resume_at(&mut self, cp: LrCheckpoint) -> Result<(), VerticalError> {
        check_resume(&cp, &self.cfg, self.params.len(), self.iteration)?;
        self.iteration = cp.iteration;
        self.params = cp.params;
        self.opt = cp.opt;
        Ok(())
    }
}

impl PassiveLr {
    /// The state after the last completed iteration, when between iterations (awaiting
    /// residuals; none before the first iteration or once done).
    pub fn checkpoint(&self) -> Option<LrCheckpoint> {
        (matches!(self.phase, PassivePhase::Residuals(_)) && self.iteration > 0).then(|| {
            LrCheckpoint {
                iteration: self.iteration,
                params: self.coef.clone(),
                opt: self.opt.clone(),
            }
        })
    }

    /// A party just made by [`PassiveLr::new`] continues from `cp` (its own checkpoint of
    /// an earlier session of the job): after the Setup it sends the logits of iteration
    /// `cp.iteration`.
    pub fn resume_at(&mut self, cp: LrCheckpoint) -> Result<(), VerticalError> {
        if !matches!(self.phase, PassivePhase::Setup(_)) {
            return Err(VerticalError::Internal(
                "a party resumes only before its first message",
            ));
        }
        check_resume(&cp, &self.cfg, self.coef.len(), self.iteration)?;
        self.iteration = cp.iteration;
        self.coef = cp.params;
        self.opt = cp.opt;
        Ok(())
    }
}
