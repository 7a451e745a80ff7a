//! Binary logistic regression on standardised `f32` features, trained federatedly.
//!
//! # Objective
//!
//! With class weights `c_i = 1 + (pos_weight − 1)·y_i` (so `pos_weight` for label 1 and 1 for
//! label 0) and the log-loss `ℓ_i = −y_i·ln σ(z_i) − (1 − y_i)·ln(1 − σ(z_i))`,
//! `z_i = x_i·coef + intercept`, every function here works with the same objective:
//!
//! * a participant's local SGD ([`local_train`]) minimises
//!   `(1/n_k)·Σ_i c_i·ℓ_i + (l2/2)·‖coef‖² + (prox_mu/2)·‖w − w_global‖²` over its own rows;
//! * the pooled reference ([`fit_pooled`]) minimises `Σ_i c_i·ℓ_i + (l2·n/2)·‖coef‖²`, which is
//!   `n` times the same objective on the union of the participants' rows (without the proximal
//!   term, which vanishes at a federated fixed point);
//! * [`loss_grad_sum`] returns the *sums* `Σ_i c_i·ℓ_i` and their gradient (no penalty),
//!   which is what secure aggregation adds up across participants.
//!
//! The intercept is never penalised by `l2`. Flat parameter vectors are `coef` then
//! `intercept` ([`LinearParams::to_flat`]).
//!
//! # Shapes
//!
//! Every function that takes parameters and data ([`predict_proba`], [`loss_grad_sum`],
//! [`local_train`], [`fit_pooled`]) refuses inconsistent sizes with a
//! [`LinearError`]: parameters can arrive from the network, so a mismatch is an error, never a
//! panic.
//!
//! Layout: this module holds the parameters, the per-row logistic terms and the participant
//! side (prediction, gradient sums, local SGD); `pooled` holds the centralised Newton fit
//! [`fit_pooled`].

use std::borrow::Cow;

use ndarray::{ArrayView1, ArrayView2};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

mod pooled;

pub use pooled::fit_pooled;

/// Rows per rayon task in the parallel passes. Results are reduced in block order, so they
/// are identical whatever the number of threads.
const PAR_ROWS: usize = 4096;

/// Errors of this module, by cause.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinearError {
    /// A vector or matrix dimension does not match the model or the other inputs.
    #[error("{what}: expected {expected}, got {got}")]
    ShapeMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A flat parameter vector must hold at least the intercept.
    #[error("a flat parameter vector needs at least the intercept (length ≥ 1)")]
    EmptyParams,
    /// There is nothing to fit.
    #[error("no rows to fit")]
    NoRows,
    /// Input data or parameters contain NaN or ±∞.
    #[error("{what} contains a non-finite value")]
    NonFinite { what: &'static str },
    /// A hyper-parameter is outside its domain.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },
    /// Newton's method did not reach the tolerance; typically separable classes with `l2 = 0`.
    #[error(
        "Newton's method did not converge in {iterations} iterations (gradient norm {grad_norm:e}); \
         the classes may be separable: use l2 > 0"
    )]
    NotConverged { iterations: usize, grad_norm: f64 },
    /// The Hessian is numerically singular at the solution, so there is no unique finite
    /// optimum: separable classes or collinear (e.g. constant) features with `l2 = 0`.
    #[error(
        "the Hessian is singular at the solution (separable classes or collinear features): \
         use l2 > 0"
    )]
    SingularHessian,
}

/// Coefficients (one per feature) and intercept of a logistic regression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearParams {
    pub coef: Vec<f64>,
    pub intercept: f64,
}

impl LinearParams {
    /// All-zero parameters for `d` features (predicts 0.5 everywhere).
    pub fn zeros(d: usize) -> Self {
        LinearParams {
            coef: vec![0.0; d],
            intercept: 0.0,
        }
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.coef.len()
    }

    /// `coef` followed by `intercept` (length `d + 1`).
    pub fn to_flat(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(self.coef.len() + 1);
        v.extend_from_slice(&self.coef);
        v.push(self.intercept);
        v
    }

    /// Inverse of [`LinearParams::to_flat`]; the last element is the intercept.
    pub fn from_flat(v: &[f64]) -> Result<Self, LinearError> {
        let (&intercept, coef) = v.split_last().ok_or(LinearError::EmptyParams)?;
        Ok(LinearParams {
            coef: coef.to_vec(),
            intercept,
        })
    }

    /// Checks that `x` has one column per coefficient and `y` one label per row of `x`.
    pub fn check_data(&self, x: ArrayView2<f32>, y: ArrayView1<f32>) -> Result<(), LinearError> {
        if x.ncols() != self.coef.len() {
            return Err(LinearError::ShapeMismatch {
                what: "feature columns",
                expected: self.coef.len(),
                got: x.ncols(),
            });
        }
        if y.len() != x.nrows() {
            return Err(LinearError::ShapeMismatch {
                what: "labels",
                expected: x.nrows(),
                got: y.len(),
            });
        }
        Ok(())
    }
}

/// Local training hyper-parameters, the same for every participant of a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalTrainConfig {
    /// Passes over the local rows per round.
    pub epochs: usize,
    /// SGD step size.
    pub learning_rate: f64,
    /// Rows per minibatch; 0 or ≥ the row count means full batch.
    pub batch_size: usize,
    /// Per-sample ridge weight: the objective is mean weighted log-loss + `l2/2·‖coef‖²`.
    pub l2: f64,
    /// Class weight of label 1 (rare positives); label 0 has weight 1.
    pub pos_weight: f64,
    /// FedProx proximal weight: adds `prox_mu/2·‖w − w_global‖²` (all parameters); 0 = FedAvg.
    pub prox_mu: f64,
}

impl LocalTrainConfig {
    /// Rows per minibatch over `n` rows (`batch_size` 0 or ≥ `n`: the full batch), or `None`
    /// when there is nothing to train (no rows or no epochs) and the global parameters stay.
    pub(crate) fn batch_rows(&self, n: usize) -> Option<usize> {
        if n == 0 || self.epochs == 0 {
            return None;
        }
        Some(if self.batch_size == 0 {
            n
        } else {
            self.batch_size.min(n)
        })
    }

    /// The minibatch schedule every local trainer follows: calls `step` with the row indices
    /// of each batch of `bs` rows over `epochs` passes through `n` rows, reshuffled with `rng`
    /// at the start of every epoch unless one batch holds all rows.
    pub(crate) fn for_each_batch(
        &self,
        n: usize,
        bs: usize,
        rng: &mut impl rand::Rng,
        mut step: impl FnMut(&[usize]),
    ) {
        let mut order: Vec<usize> = (0..n).collect();
        for _ in 0..self.epochs {
            if bs < n {
                order.shuffle(rng);
            }
            for batch in order.chunks(bs) {
                step(batch);
            }
        }
    }
}

/// Adds per-block `(loss, gradient)` pairs in block order: the reduction of the row-parallel
/// gradient passes, deterministic whatever the number of threads.
pub(crate) fn sum_blocks(parts: Vec<(f64, Vec<f64>)>, len: usize) -> (f64, Vec<f64>) {
    let mut loss = 0.0;
    let mut grad = vec![0.0; len];
    for (l, g) in parts {
        loss += l;
        for (a, b) in grad.iter_mut().zip(&g) {
            *a += b;
        }
    }
    (loss, grad)
}

/// The logistic function.
#[inline]
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Class weight `1 + (pos_weight − 1)·y` (exact for 0/1 labels, linear for soft ones).
#[inline]
fn class_weight(y: f64, pos_weight: f64) -> f64 {
    1.0 + (pos_weight - 1.0) * y
}

/// Per-row logistic quantities at logit `z` for label `y`, with one `exp` and one `ln_1p`,
/// accurate for any `z`:
///
/// * loss `ℓ = softplus(z) − y·z`, written `(max(z, 0) − y·z) + ln(1 + e^{−|z|})` so that for 0/1
///   labels the bracket is exact and the tiny loss of a confident right answer survives;
/// * residual `∂ℓ/∂z = σ(z) − y`, written `(1 − y)·σ(z) − y·σ(−z)` with both probabilities
///   computed directly (never as `1 − p`), so it does not round to 0 when `σ(z)` rounds to 1;
/// * curvature `∂²ℓ/∂z² = σ(z)·σ(−z)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Logistic {
    pub(crate) loss: f64,
    pub(crate) residual: f64,
    pub(crate) curvature: f64,
}

#[inline]
pub(crate) fn logistic(z: f64, y: f64) -> Logistic {
    let e = (-z.abs()).exp();
    let inv = 1.0 / (1.0 + e);
    let (p, q) = if z >= 0.0 {
        (inv, e * inv)
    } else {
        (e * inv, inv)
    };
    Logistic {
        loss: (z.max(0.0) - y * z) + e.ln_1p(),
        residual: (1.0 - y) * p - y * q,
        curvature: p * q,
    }
}

/// `Σ a_j·b_j` in f64 with four independent lanes.
#[inline]
fn dot_f64(a: &[f64], b: &[f32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f64; 4];
    let ca = a.chunks_exact(4);
    let cb = b.chunks_exact(4);
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&u, &v)| u * f64::from(v))
        .sum();
    for (u, v) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += u[k] * f64::from(v[k]);
        }
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail
}

/// The rows of `x` as one row-major slice (borrowed when `x` is already contiguous).
fn row_major(x: ArrayView2<'_, f32>) -> Cow<'_, [f32]> {
    match x.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(x.iter().copied().collect()),
    }
}

/// Adds `Σ c_i·ℓ_i` and its gradient over `rows` (row-major, `d = coef.len()` columns) into
/// `grad` (length `d + 1`, intercept last); returns the loss sum.
fn accumulate_f64(
    coef: &[f64],
    intercept: f64,
    rows: &[f32],
    y: &[f64],
    pos_weight: f64,
    grad: &mut [f64],
) -> f64 {
    let d = coef.len();
    debug_assert_eq!(grad.len(), d + 1);
    let mut loss = 0.0;
    for (i, &yi) in y.iter().enumerate() {
        let row = &rows[i * d..(i + 1) * d];
        let t = logistic(dot_f64(coef, row) + intercept, yi);
        let c = class_weight(yi, pos_weight);
        loss += c * t.loss;
        let g = c * t.residual;
        for (gj, &xj) in grad[..d].iter_mut().zip(row) {
            *gj += g * f64::from(xj);
        }
        grad[d] += g;
    }
    loss
}

/// Probabilities `σ(x·coef + intercept)`, one per row; rayon-parallel over blocks of rows
/// ([`dot_rows`]: the same sums as a row-by-row dot product, bit for bit).
///
/// Errors when `x.ncols() != p.coef.len()`.
pub fn predict_proba(p: &LinearParams, x: ArrayView2<f32>) -> Result<Vec<f64>, LinearError> {
    let d = p.coef.len();
    if x.ncols() != d {
        return Err(LinearError::ShapeMismatch {
            what: "feature columns",
            expected: d,
            got: x.ncols(),
        });
    }
    Ok(predict_blocks::<false>(p, x, &[], &[]))
}

/// `predict_proba(p, z)` for `z` the standardised `x` — `z = (v − mean)/std` in `f32`, a
/// missing (`NaN`) value → 0 — without the standardised copy: rows are standardised a block
/// at a time right before their dot products ([`dot_rows`]). Bit-identical to standardising
/// first.
///
/// Errors when `x.ncols()`, `mean.len()` or `std.len()` is not `p.coef.len()`.
pub fn predict_proba_standardizing(
    p: &LinearParams,
    x: ArrayView2<f32>,
    mean: &[f32],
    std: &[f32],
) -> Result<Vec<f64>, LinearError> {
    let d = p.coef.len();
    for (what, got) in [
        ("feature columns", x.ncols()),
        ("standardizer means", mean.len()),
        ("standardizer deviations", std.len()),
    ] {
        if got != d {
            return Err(LinearError::ShapeMismatch {
                what,
                expected: d,
                got,
            });
        }
    }
    Ok(predict_blocks::<true>(p, x, mean, std))
}

/// Rows whose dot products are computed together, one lane each ([`dot_rows`]); a loop this
/// long is vectorised at every optimisation level (the compiler unrolls a loop of 8 into
/// scalar code at opt-level 2).
const DOT_LANES: usize = 64;

/// `σ(row·coef + intercept)` for every row of `x` (standardised first when `STD`), rayon-
/// parallel over blocks of [`PAR_ROWS`] rows, [`DOT_LANES`] rows at a time. Sizes checked by
/// the caller.
fn predict_blocks<const STD: bool>(
    p: &LinearParams,
    x: ArrayView2<f32>,
    mean: &[f32],
    std: &[f32],
) -> Vec<f64> {
    let d = p.coef.len();
    let mut out = vec![0.0; x.nrows()];
    if d == 0 {
        out.fill(sigmoid(p.intercept));
        return out;
    }
    let data = row_major(x);
    out.par_chunks_mut(PAR_ROWS)
        .zip(data.par_chunks(PAR_ROWS * d))
        .for_each(|(o, rows)| {
            let mut cols = vec![0.0f32; d * DOT_LANES];
            for (ob, rb) in o.chunks_mut(DOT_LANES).zip(rows.chunks(DOT_LANES * d)) {
                dot_rows::<STD>(&p.coef, rb, mean, std, &mut cols, ob);
                for v in ob.iter_mut() {
                    *v = sigmoid(*v + p.intercept);
                }
            }
        });
    out
}

/// The dot products `coef · z` of up to [`DOT_LANES`] rows (`rows` row-major, `out` one per
/// row), `z` the row standardised when `STD` (`(v − mean)/std` in `f32`, `NaN` → 0) or the row
/// itself, computed across rows: the rows are transposed into `cols` (`d` columns of
/// [`DOT_LANES`] lanes) and each column is added into every row's sums at once, which the
/// compiler vectorises. Each row's sums are exactly [`dot_f64`]'s — four partial sums over
/// the columns `j ≡ k (mod 4)` in order, the tail summed from the same start, combined as
/// `(s0 + s2) + (s1 + s3) + tail` — so the result is the same bit for bit.
fn dot_rows<const STD: bool>(
    coef: &[f64],
    rows: &[f32],
    mean: &[f32],
    std: &[f32],
    cols: &mut [f32],
    out: &mut [f64],
) {
    let d = coef.len();
    for (r, row) in rows.chunks_exact(d.max(1)).enumerate().take(DOT_LANES) {
        for (j, &v) in row.iter().enumerate() {
            if let Some(c) = cols.get_mut(j * DOT_LANES + r) {
                *c = v;
            }
        }
    }
    let full = d / 4 * 4;
    // `Iterator::sum`'s own start (−0.0 or +0.0 by the standard library's version).
    let start: f64 = std::iter::empty::<f64>().sum();
    let mut acc = [[0.0f64; DOT_LANES]; 4];
    let mut tail = [start; DOT_LANES];
    for (j, (&u, c)) in coef.iter().zip(cols.chunks_exact(DOT_LANES)).enumerate() {
        let (m, s) = if STD {
            (
                mean.get(j).copied().unwrap_or(0.0),
                std.get(j).copied().unwrap_or(1.0),
            )
        } else {
            (0.0, 1.0)
        };
        let sums = if j < full { &mut acc[j % 4] } else { &mut tail };
        for (a, &v) in sums.iter_mut().zip(c) {
            let z = if !STD {
                v
            } else if v.is_nan() {
                0.0
            } else {
                (v - m) / s
            };
            *a += u * f64::from(z);
        }
    }
    for (r, o) in out.iter_mut().enumerate().take(DOT_LANES) {
        *o = (acc[0][r] + acc[2][r]) + (acc[1][r] + acc[3][r]) + tail[r];
    }
}

/// Sums over rows of the weighted log-loss `Σ c_i·ℓ_i` and of its gradient with respect to the
/// flat parameters (`coef` then `intercept`); no penalty term. Computed in f64, rayon-parallel
/// over row blocks, reduced in block order (deterministic).
///
/// Errors when the shapes of `x` and `y` do not match `p` (see [`LinearParams::check_data`]).
pub fn loss_grad_sum(
    p: &LinearParams,
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    pos_weight: f64,
) -> Result<(f64, Vec<f64>), LinearError> {
    p.check_data(x, y)?;
    let d = p.coef.len();
    let ys: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
    let data = row_major(x);
    let block_rows = PAR_ROWS;
    let parts: Vec<(f64, Vec<f64>)> = ys
        .par_chunks(block_rows)
        .enumerate()
        .map(|(b, yb)| {
            let start = b * block_rows * d;
            let rows = &data[start..start + yb.len() * d];
            let mut g = vec![0.0; d + 1];
            let l = accumulate_f64(&p.coef, p.intercept, rows, yb, pos_weight, &mut g);
            (l, g)
        })
        .collect();
    Ok(sum_blocks(parts, d + 1))
}

/// One row's gradient of the class-weighted log-loss with respect to the flat parameters
/// (`coef` then `intercept`), written into `out` (length `d + 1`); returns the row's loss. No
/// penalty term. For DP-SGD, which clips each example's gradient before summing.
///
/// Errors when `row` or `out` has the wrong length.
pub fn example_grad(
    p: &LinearParams,
    row: &[f32],
    y: f32,
    pos_weight: f64,
    out: &mut [f64],
) -> Result<f64, LinearError> {
    let d = p.coef.len();
    if row.len() != d {
        return Err(LinearError::ShapeMismatch {
            what: "feature columns",
            expected: d,
            got: row.len(),
        });
    }
    if out.len() != d + 1 {
        return Err(LinearError::ShapeMismatch {
            what: "gradient length",
            expected: d + 1,
            got: out.len(),
        });
    }
    let yi = f64::from(y);
    let t = logistic(dot_f64(&p.coef, row) + p.intercept, yi);
    let c = class_weight(yi, pos_weight);
    let g = c * t.residual;
    let (coef, b) = out.split_at_mut(d);
    for (gj, &xj) in coef.iter_mut().zip(row) {
        *gj = g * f64::from(xj);
    }
    b.fill(g);
    Ok(c * t.loss)
}

/// Local minibatch SGD from `global`: `cfg.epochs` passes over the rows, reshuffled each epoch
/// with `rng` (deterministic for a given `rng` state), minimising the local objective of the
/// module documentation. Returns the new local parameters; the caller sends `n_k·(w_k − w)`.
///
/// With no rows or no epochs the global parameters are returned unchanged. Errors when the
/// shapes of `x` and `y` do not match `global` (see [`LinearParams::check_data`]).
pub fn local_train(
    global: &LinearParams,
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    cfg: &LocalTrainConfig,
    rng: &mut impl rand::Rng,
) -> Result<LinearParams, LinearError> {
    global.check_data(x, y)?;
    let n = x.nrows();
    let d = global.coef.len();
    let Some(bs) = cfg.batch_rows(n) else {
        return Ok(global.clone());
    };
    let data = row_major(x);
    let ys: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
    let w0 = global.to_flat();
    let mut w = w0.clone();
    let mut grad = vec![0.0; d + 1];
    cfg.for_each_batch(n, bs, rng, |batch| {
        grad.fill(0.0);
        let (coef, b) = w.split_at(d);
        let b = b[0];
        for &i in batch {
            let row = &data[i * d..(i + 1) * d];
            let yi = ys[i];
            let t = logistic(dot_f64(coef, row) + b, yi);
            let g = class_weight(yi, cfg.pos_weight) * t.residual;
            for (gj, &xj) in grad[..d].iter_mut().zip(row) {
                *gj += g * f64::from(xj);
            }
            grad[d] += g;
        }
        let inv = 1.0 / batch.len() as f64;
        for j in 0..=d {
            let mut gj = grad[j] * inv + cfg.prox_mu * (w[j] - w0[j]);
            if j < d {
                gj += cfg.l2 * w[j];
            }
            w[j] -= cfg.learning_rate * gj;
        }
    });
    // `w` holds d coefficients and the intercept (built from `to_flat`), so `pop` succeeds.
    let intercept = w.pop().unwrap_or(0.0);
    Ok(LinearParams { coef: w, intercept })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::auc;
    use ndarray::{Array1, Array2};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `n` rows of `d` standard-normal-ish features; labels from a logistic model with
    /// coefficients `truth` and intercept `b`.
    /// Per-row gradients add up to the summed gradient `loss_grad_sum` computes.
    #[test]
    fn example_gradients_sum_to_the_batch_gradient() {
        let (x, y) = synthetic(300, &[1.0, -2.0, 0.5], 0.3, 4);
        let p = LinearParams {
            coef: vec![0.2, -0.1, 0.4],
            intercept: -0.2,
        };
        let (loss, grad) = loss_grad_sum(&p, x.view(), y.view(), 2.0).unwrap();
        let mut g = vec![0.0; 4];
        let mut sum = [0.0; 4];
        let mut l = 0.0;
        for (row, &yi) in x.outer_iter().zip(y.iter()) {
            let r: Vec<f32> = row.to_vec();
            l += example_grad(&p, &r, yi, 2.0, &mut g).unwrap();
            for (s, v) in sum.iter_mut().zip(&g) {
                *s += v;
            }
        }
        assert!((l - loss).abs() < 1e-9 * loss.abs());
        for (a, b) in sum.iter().zip(&grad) {
            assert!((a - b).abs() < 1e-9 * b.abs().max(1.0), "{a} vs {b}");
        }
        assert!(example_grad(&p, &[1.0], 1.0, 1.0, &mut g).is_err());
        assert!(example_grad(&p, &[1.0, 2.0, 3.0], 1.0, 1.0, &mut g[..2]).is_err());
    }

    /// The blocked, across-rows dot products give exactly the row-by-row ones (`dot_f64` on
    /// each row, standardised first or not), for widths around the 4-wide sums, ragged blocks
    /// and missing values, over more rows than one rayon task takes.
    #[test]
    fn blocked_predict_equals_row_by_row_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for d in [0usize, 1, 3, 4, 5, 8, 50] {
            let n = PAR_ROWS + 3 * DOT_LANES + 5;
            let x = Array2::from_shape_fn((n, d), |_| {
                if rng.random::<f32>() < 0.05 {
                    f32::NAN
                } else {
                    rng.random::<f32>() * 6.0 - 3.0
                }
            });
            let p = LinearParams {
                coef: (0..d).map(|_| rng.random::<f64>() - 0.5).collect(),
                intercept: 0.3,
            };
            let mean: Vec<f32> = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
            let std: Vec<f32> = (0..d).map(|_| rng.random::<f32>() + 0.5).collect();
            let mut plain = Vec::with_capacity(n);
            let mut standardised = Vec::with_capacity(n);
            for row in x.outer_iter() {
                let r: Vec<f32> = row.to_vec();
                plain.push(sigmoid(dot_f64(&p.coef, &r) + p.intercept));
                let z: Vec<f32> = r
                    .iter()
                    .zip(&mean)
                    .zip(&std)
                    .map(|((&v, &m), &s)| if v.is_nan() { 0.0 } else { (v - m) / s })
                    .collect();
                standardised.push(sigmoid(dot_f64(&p.coef, &z) + p.intercept));
            }
            let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let got = predict_proba(&p, x.view()).unwrap();
            assert_eq!(bits(&got), bits(&plain), "d = {d}");
            let got = predict_proba_standardizing(&p, x.view(), &mean, &std).unwrap();
            assert_eq!(bits(&got), bits(&standardised), "d = {d}, standardised");
            let xt = x.t().to_owned();
            let got = predict_proba(&p, xt.t()).unwrap();
            assert_eq!(bits(&got), bits(&plain), "d = {d}, column-major");
        }
    }

    pub(super) fn synthetic(
        n: usize,
        truth: &[f64],
        b: f64,
        seed: u64,
    ) -> (Array2<f32>, Array1<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = truth.len();
        let x = Array2::from_shape_fn((n, d), |_| {
            // Sum of three uniforms: roughly normal, unit variance.
            let s: f64 = (0..3).map(|_| rng.random::<f64>() - 0.5).sum();
            (s * 2.0) as f32
        });
        let y = Array1::from_shape_fn(n, |i| {
            let z: f64 = x
                .row(i)
                .iter()
                .zip(truth)
                .map(|(&a, &w)| f64::from(a) * w)
                .sum::<f64>()
                + b;
            if rng.random::<f64>() < sigmoid(z) {
                1.0
            } else {
                0.0
            }
        });
        (x, y)
    }

    #[test]
    fn flat_round_trip_and_empty_refused() {
        let p = LinearParams {
            coef: vec![1.0, -2.0],
            intercept: 0.5,
        };
        assert_eq!(p.to_flat(), vec![1.0, -2.0, 0.5]);
        assert_eq!(LinearParams::from_flat(&p.to_flat()).unwrap(), p);
        assert_eq!(LinearParams::from_flat(&[]), Err(LinearError::EmptyParams));
        assert_eq!(
            LinearParams::from_flat(&[3.0]).unwrap(),
            LinearParams {
                coef: vec![],
                intercept: 3.0
            }
        );
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (x, y) = synthetic(200, &[1.0, -0.5, 2.0], -0.3, 1);
        let p = LinearParams {
            coef: vec![0.3, -0.7, 0.2],
            intercept: 0.1,
        };
        for pw in [1.0, 4.0] {
            let (_, g) = loss_grad_sum(&p, x.view(), y.view(), pw).unwrap();
            let w = p.to_flat();
            for j in 0..w.len() {
                let h = 1e-6;
                let mut up = w.clone();
                up[j] += h;
                let mut dn = w.clone();
                dn[j] -= h;
                let lu = loss_grad_sum(
                    &LinearParams::from_flat(&up).unwrap(),
                    x.view(),
                    y.view(),
                    pw,
                )
                .unwrap()
                .0;
                let ld = loss_grad_sum(
                    &LinearParams::from_flat(&dn).unwrap(),
                    x.view(),
                    y.view(),
                    pw,
                )
                .unwrap()
                .0;
                let fd = (lu - ld) / (2.0 * h);
                assert!(
                    (fd - g[j]).abs() < 1e-5 * (1.0 + g[j].abs()),
                    "j={j} pw={pw}: fd {fd} vs {}",
                    g[j]
                );
            }
        }
    }

    #[test]
    fn logistic_terms_are_accurate_for_extreme_logits() {
        let t = logistic(800.0, 0.0);
        assert!((t.loss - 800.0).abs() < 1e-9 && t.residual == 1.0 && t.curvature == 0.0);
        let t = logistic(-800.0, 0.0);
        assert!(t.loss >= 0.0 && t.loss < 1e-300 && t.residual >= 0.0);
        // Confidently right: loss, residual and curvature are all ≈ e^{−40}, not rounded to 0.
        let e40 = (-40f64).exp();
        let t = logistic(40.0, 1.0);
        assert!((t.loss / e40 - 1.0).abs() < 1e-12, "{t:?}");
        assert!((t.residual / -e40 - 1.0).abs() < 1e-12, "{t:?}");
        assert!((t.curvature / e40 - 1.0).abs() < 1e-12, "{t:?}");
        let t = logistic(0.0, 1.0);
        assert!((t.loss - std::f64::consts::LN_2).abs() < 1e-15 && t.residual == -0.5);
        // Soft labels: the residual is σ(z) − y.
        let t = logistic(0.3, 0.25);
        assert!((t.residual - (sigmoid(0.3) - 0.25)).abs() < 1e-15);
    }

    fn cfg(epochs: usize, lr: f64, batch: usize, l2: f64, mu: f64) -> LocalTrainConfig {
        LocalTrainConfig {
            epochs,
            learning_rate: lr,
            batch_size: batch,
            l2,
            pos_weight: 1.0,
            prox_mu: mu,
        }
    }

    fn max_abs_diff(a: &LinearParams, b: &LinearParams) -> f64 {
        a.to_flat()
            .iter()
            .zip(b.to_flat())
            .fold(0.0, |m, (u, v)| m.max((u - v).abs()))
    }

    #[test]
    fn local_train_approaches_fit_pooled() {
        let (x, y) = synthetic(2000, &[2.0, -1.5, 1.0], 0.5, 3);
        let l2 = 1e-2;
        let opt = fit_pooled(x.view(), y.view(), l2, 1.0).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        // Full-batch gradient descent converges to the optimum itself.
        let gd = local_train(
            &LinearParams::zeros(3),
            x.view(),
            y.view(),
            &cfg(3000, 1.0, 0, l2, 0.0),
            &mut rng,
        )
        .unwrap();
        assert!(max_abs_diff(&gd, &opt) < 1e-4, "{gd:?} vs {opt:?}");
        // Minibatch SGD with a constant step ends in a small neighbourhood of it.
        let sgd = local_train(
            &LinearParams::zeros(3),
            x.view(),
            y.view(),
            &cfg(50, 0.02, 16, l2, 0.0),
            &mut rng,
        )
        .unwrap();
        assert!(max_abs_diff(&sgd, &opt) < 0.05, "{sgd:?} vs {opt:?}");
        // Deterministic for the RNG state; zero epochs is the identity.
        let a = local_train(
            &opt,
            x.view(),
            y.view(),
            &cfg(2, 0.1, 32, l2, 0.0),
            &mut ChaCha8Rng::seed_from_u64(1),
        )
        .unwrap();
        let b = local_train(
            &opt,
            x.view(),
            y.view(),
            &cfg(2, 0.1, 32, l2, 0.0),
            &mut ChaCha8Rng::seed_from_u64(1),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            local_train(
                &opt,
                x.view(),
                y.view(),
                &cfg(0, 0.1, 32, l2, 0.0),
                &mut rng
            )
            .unwrap(),
            opt
        );
    }

    #[test]
    fn local_train_accepts_strided_views() {
        let (x, y) = synthetic(300, &[1.0, -1.0], 0.0, 4);
        let xt = x.t().as_standard_layout().into_owned();
        let xv = xt.t(); // column-major view of the same matrix
        assert!(xv.as_slice().is_none());
        let c = cfg(3, 0.1, 16, 0.0, 0.0);
        let a = local_train(
            &LinearParams::zeros(2),
            x.view(),
            y.view(),
            &c,
            &mut ChaCha8Rng::seed_from_u64(5),
        )
        .unwrap();
        let b = local_train(
            &LinearParams::zeros(2),
            xv,
            y.view(),
            &c,
            &mut ChaCha8Rng::seed_from_u64(5),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            predict_proba(&a, x.view()).unwrap(),
            predict_proba(&a, xv).unwrap()
        );
    }

    /// Three participants with different feature distributions and base rates.
    fn non_iid_split(x: &Array2<f32>, y: &Array1<f32>) -> Vec<(Array2<f32>, Array1<f32>)> {
        // Sort rows by the first feature and cut in three: participant 0 holds the low values
        // (and therefore mostly one class), participant 2 the high ones.
        let mut idx: Vec<usize> = (0..x.nrows()).collect();
        idx.sort_by(|&a, &b| x[[a, 0]].total_cmp(&x[[b, 0]]));
        let cuts = [0, idx.len() / 5, idx.len() * 3 / 5, idx.len()];
        (0..3)
            .map(|k| {
                let rows = &idx[cuts[k]..cuts[k + 1]];
                (
                    x.select(ndarray::Axis(0), rows),
                    y.select(ndarray::Axis(0), rows),
                )
            })
            .collect()
    }

    fn fedavg(
        parts: &[(Array2<f32>, Array1<f32>)],
        d: usize,
        rounds: usize,
        c: &LocalTrainConfig,
        seed: u64,
    ) -> LinearParams {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut global = LinearParams::zeros(d);
        for _ in 0..rounds {
            let w = global.to_flat();
            let mut sum = vec![0.0; d + 1];
            let mut n_tot = 0.0;
            for (x, y) in parts {
                let local = local_train(&global, x.view(), y.view(), c, &mut rng).unwrap();
                let n = x.nrows() as f64;
                for ((s, a), b) in sum.iter_mut().zip(local.to_flat()).zip(&w) {
                    *s += n * (a - b);
                }
                n_tot += n;
            }
            let new: Vec<f64> = w.iter().zip(&sum).map(|(a, s)| a + s / n_tot).collect();
            global = LinearParams::from_flat(&new).unwrap();
        }
        global
    }

    #[test]
    fn fedavg_and_fedprox_match_pooled_auc_on_non_iid_split() {
        let (x, y) = synthetic(6000, &[1.2, -0.8, 0.6, 0.0, -1.5], -0.7, 5);
        let parts = non_iid_split(&x, &y);
        let rates: Vec<f64> = parts
            .iter()
            .map(|(_, y)| y.mean().unwrap() as f64)
            .collect();
        assert!(
            rates[2] - rates[0] > 0.2,
            "split should be non-IID: {rates:?}"
        );
        let l2 = 1e-3;
        let pooled = fit_pooled(x.view(), y.view(), l2, 1.0).unwrap();
        let auc_pooled = auc(
            &predict_proba(&pooled, x.view()).unwrap(),
            y.as_slice().unwrap(),
        );
        for mu in [0.0, 0.1] {
            let fed = fedavg(&parts, 5, 30, &cfg(2, 0.1, 32, l2, mu), 11);
            let auc_fed = auc(
                &predict_proba(&fed, x.view()).unwrap(),
                y.as_slice().unwrap(),
            );
            assert!(
                (auc_fed - auc_pooled).abs() < 0.01,
                "mu={mu}: fed {auc_fed} vs pooled {auc_pooled}"
            );
            // And the parameters themselves are close, not just the ranking.
            assert!(
                max_abs_diff(&fed, &pooled) < 0.08,
                "mu={mu}: {fed:?} vs {pooled:?}"
            );
        }
        // A single round of one epoch is visibly worse on the parameters: the test can fail.
        let early = fedavg(&parts, 5, 1, &cfg(1, 0.01, 32, l2, 0.0), 11);
        assert!(max_abs_diff(&early, &pooled) > 0.15);
    }
}
