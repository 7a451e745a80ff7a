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
//! * [`loss_grad_sum`] and [`GradAccumulator`] return the *sums* `Σ_i c_i·ℓ_i` and their
//!   gradient (no penalty), which is what secure aggregation adds up across participants.
//!
//! The intercept is never penalised by `l2`. Flat parameter vectors are `coef` then
//! `intercept` ([`LinearParams::to_flat`]).
//!
//! # Shapes
//!
//! Every function that takes parameters and data ([`predict_proba`], [`loss_grad_sum`],
//! [`local_train`], [`fit_pooled`], [`GradAccumulator`]) refuses inconsistent sizes with a
//! [`LinearError`]: parameters can arrive from the network, so a mismatch is an error, never a
//! panic.

use std::borrow::Cow;

use ndarray::{ArrayView1, ArrayView2};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

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

/// Probabilities `σ(x·coef + intercept)`, one per row; rayon-parallel over blocks of rows.
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
    let mut out = vec![0.0; x.nrows()];
    if d == 0 {
        out.fill(sigmoid(p.intercept));
        return Ok(out);
    }
    let data = row_major(x);
    out.par_chunks_mut(PAR_ROWS)
        .zip(data.par_chunks(PAR_ROWS * d))
        .for_each(|(o, rows)| {
            for (oi, row) in o.iter_mut().zip(rows.chunks_exact(d)) {
                *oi = sigmoid(dot_f64(&p.coef, row) + p.intercept);
            }
        });
    Ok(out)
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
    let mut loss = 0.0;
    let mut grad = vec![0.0; d + 1];
    for (l, g) in parts {
        loss += l;
        for (a, b) in grad.iter_mut().zip(&g) {
            *a += b;
        }
    }
    Ok((loss, grad))
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
    if n == 0 || cfg.epochs == 0 {
        return Ok(global.clone());
    }
    let data = row_major(x);
    let ys: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
    let bs = if cfg.batch_size == 0 {
        n
    } else {
        cfg.batch_size.min(n)
    };
    let w0 = global.to_flat();
    let mut w = w0.clone();
    let mut grad = vec![0.0; d + 1];
    let mut order: Vec<usize> = (0..n).collect();
    for _ in 0..cfg.epochs {
        if bs < n {
            order.shuffle(rng);
        }
        for batch in order.chunks(bs) {
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
        }
    }
    // `w` holds d coefficients and the intercept (built from `to_flat`), so `pop` succeeds.
    let intercept = w.pop().unwrap_or(0.0);
    Ok(LinearParams { coef: w, intercept })
}

/// Maximum Newton iterations of [`fit_pooled`].
const NEWTON_MAX_ITER: usize = 100;
/// Newton stops when every step component is below `NEWTON_TOL·(1 + max|w|)`.
const NEWTON_TOL: f64 = 1e-8;

/// Centralised reference on pooled data with the same objective as the federated training:
/// minimises `Σ_i c_i·ℓ_i + (l2·n/2)·‖coef‖²` by damped Newton (IRLS) until every step
/// component is below `1e-8·(1 + max|w|)`. Costs `O(n·d²)` per iteration, so it is meant for
/// `d` up to a few hundred.
///
/// Errors on inconsistent shapes, no rows, non-finite data, labels outside `[0, 1]`,
/// `l2 < 0`, `pos_weight ≤ 0`, and when the optimum is not reached in 100 iterations
/// (separable classes with `l2 = 0` have no finite optimum).
pub fn fit_pooled(
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    l2: f64,
    pos_weight: f64,
) -> Result<LinearParams, LinearError> {
    let n = x.nrows();
    let d = x.ncols();
    LinearParams::zeros(d).check_data(x, y)?;
    if n == 0 {
        return Err(LinearError::NoRows);
    }
    if !(l2.is_finite() && l2 >= 0.0) {
        return Err(LinearError::InvalidParameter {
            name: "l2",
            value: l2,
            reason: "must be finite and ≥ 0",
        });
    }
    if !(pos_weight.is_finite() && pos_weight > 0.0) {
        return Err(LinearError::InvalidParameter {
            name: "pos_weight",
            value: pos_weight,
            reason: "must be finite and > 0",
        });
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(LinearError::NonFinite { what: "x" });
    }
    if y.iter().any(|&v| !(0.0..=1.0).contains(&v)) {
        return Err(LinearError::NonFinite {
            what: "y (labels must lie in [0, 1])",
        });
    }
    let data = row_major(x);
    let ys: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
    let ridge = l2 * n as f64;
    let m = d + 1;

    let objective = |w: &[f64]| -> f64 {
        let loss: f64 = ys
            .par_chunks(PAR_ROWS)
            .enumerate()
            .map(|(b, yb)| {
                let rows = &data[b * PAR_ROWS * d..(b * PAR_ROWS + yb.len()) * d];
                yb.iter()
                    .enumerate()
                    .map(|(i, &yi)| {
                        let z = dot_f64(&w[..d], &rows[i * d..(i + 1) * d]) + w[d];
                        class_weight(yi, pos_weight) * logistic(z, yi).loss
                    })
                    .sum::<f64>()
            })
            .collect::<Vec<f64>>()
            .iter()
            .sum();
        loss + 0.5 * ridge * w[..d].iter().map(|v| v * v).sum::<f64>()
    };

    let mut w = vec![0.0; m];
    let mut f = objective(&w);
    let mut grad_norm = f64::INFINITY;
    for _ in 0..NEWTON_MAX_ITER {
        let (g, h) = grad_hessian(&w, &data, &ys, pos_weight, ridge);
        grad_norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let Some((step, regularised)) = solve_spd(h, &g, m) else {
            return Err(LinearError::SingularHessian);
        };
        // Backtracking (Armijo) on the objective; Newton's full step is almost always taken.
        let slope: f64 = -g.iter().zip(&step).map(|(a, b)| a * b).sum::<f64>();
        let mut t = 1.0;
        let mut trial: Vec<f64>;
        let mut f_new;
        loop {
            trial = w.iter().zip(&step).map(|(a, s)| a - t * s).collect();
            f_new = objective(&trial);
            // Near the optimum the decrease is below the rounding noise of the objective
            // (a sum over n rows); Newton's full step is safe there and is taken.
            if f_new <= f + 1e-4 * t * slope + 1e-12 * f.abs() || t < 1e-10 {
                break;
            }
            t *= 0.5;
        }
        let scale = 1.0 + w.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        // Judged on the full Newton step: a failed line search is not convergence.
        let max_step = step.iter().fold(0.0f64, |a, s| a.max(s.abs()));
        w = trial;
        f = f_new;
        if max_step <= NEWTON_TOL * scale {
            if regularised {
                return Err(LinearError::SingularHessian);
            }
            let intercept = w[d];
            w.truncate(d);
            return Ok(LinearParams { coef: w, intercept });
        }
    }
    Err(LinearError::NotConverged {
        iterations: NEWTON_MAX_ITER,
        grad_norm,
    })
}

/// Gradient and Hessian (dense, `m × m` row-major, `m = d + 1`) of the pooled objective.
fn grad_hessian(
    w: &[f64],
    data: &[f32],
    ys: &[f64],
    pos_weight: f64,
    ridge: f64,
) -> (Vec<f64>, Vec<f64>) {
    let m = w.len();
    let d = m - 1;
    let parts: Vec<(Vec<f64>, Vec<f64>)> = ys
        .par_chunks(PAR_ROWS)
        .enumerate()
        .map(|(b, yb)| {
            let rows = &data[b * PAR_ROWS * d..(b * PAR_ROWS + yb.len()) * d];
            let mut g = vec![0.0; m];
            let mut h = vec![0.0; m * m];
            let mut xt = vec![0.0; m];
            xt[d] = 1.0;
            for (i, &yi) in yb.iter().enumerate() {
                let row = &rows[i * d..(i + 1) * d];
                for (a, &v) in xt[..d].iter_mut().zip(row) {
                    *a = f64::from(v);
                }
                let z = dot_f64(&w[..d], row) + w[d];
                let t = logistic(z, yi);
                let c = class_weight(yi, pos_weight);
                let r = c * t.residual;
                let s = c * t.curvature;
                for j in 0..m {
                    g[j] += r * xt[j];
                    let sj = s * xt[j];
                    // Upper triangle only; mirrored below.
                    for (hk, &xk) in h[j * m + j..(j + 1) * m].iter_mut().zip(&xt[j..]) {
                        *hk += sj * xk;
                    }
                }
            }
            (g, h)
        })
        .collect();
    let mut g = vec![0.0; m];
    let mut h = vec![0.0; m * m];
    for (pg, ph) in parts {
        for (a, b) in g.iter_mut().zip(&pg) {
            *a += b;
        }
        for (a, b) in h.iter_mut().zip(&ph) {
            *a += b;
        }
    }
    for j in 0..m {
        for k in 0..j {
            h[j * m + k] = h[k * m + j];
        }
    }
    for j in 0..d {
        g[j] += ridge * w[j];
        h[j * m + j] += ridge;
    }
    (g, h)
}

/// Solves `H·s = g` for symmetric positive (semi-)definite `H` by Cholesky, adding a growing
/// diagonal jitter when `H` is numerically singular; the flag says whether jitter was needed.
/// `None` if no jitter helps.
fn solve_spd(h: Vec<f64>, g: &[f64], m: usize) -> Option<(Vec<f64>, bool)> {
    let trace = (0..m)
        .map(|j| h[j * m + j])
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    let mut jitter = 0.0;
    for _ in 0..12 {
        let mut l = h.clone();
        for j in 0..m {
            l[j * m + j] += jitter;
        }
        if cholesky_in_place(&mut l, m) {
            // Forward then backward substitution with L and Lᵀ.
            let mut s = g.to_vec();
            for i in 0..m {
                let mut v = s[i];
                for k in 0..i {
                    v -= l[i * m + k] * s[k];
                }
                s[i] = v / l[i * m + i];
            }
            for i in (0..m).rev() {
                let mut v = s[i];
                for k in i + 1..m {
                    v -= l[k * m + i] * s[k];
                }
                s[i] = v / l[i * m + i];
            }
            if s.iter().all(|v| v.is_finite()) {
                return Some((s, jitter > 0.0));
            }
        }
        jitter = if jitter == 0.0 {
            1e-12 * trace / m as f64
        } else {
            jitter * 100.0
        };
    }
    None
}

/// Lower Cholesky factor in place (lower triangle of `a`); false if not positive definite.
fn cholesky_in_place(a: &mut [f64], m: usize) -> bool {
    for j in 0..m {
        let mut djj = a[j * m + j];
        for k in 0..j {
            djj -= a[j * m + k] * a[j * m + k];
        }
        if !(djj > 0.0 && djj.is_finite()) {
            return false;
        }
        let ljj = djj.sqrt();
        a[j * m + j] = ljj;
        for i in j + 1..m {
            let mut v = a[i * m + j];
            for k in 0..j {
                v -= a[i * m + k] * a[j * m + k];
            }
            a[i * m + j] = v / ljj;
        }
    }
    true
}

/// Rows per f32 partial gradient before it is added into the f64 totals of
/// [`GradAccumulator`]; bounds the f32 rounding error to sums of this many terms.
const FLUSH_ROWS: usize = 64;

/// Rows processed together by [`GradAccumulator`]: their dot products first, then the
/// logistic terms of all of them in one branch-free f32 loop (which vectorises), then their
/// gradient updates.
const GROUP: usize = 8;

/// Streaming gradient pass for data that does not fit in memory: add blocks of rows one after
/// the other, then [`finish`](GradAccumulator::finish) with the same sums as
/// [`loss_grad_sum`] over all rows.
///
/// The hot loop is f32 and works on groups of eight rows: one dot product per row (eight f32
/// lanes), then the logistic loss and residual of the eight rows together with vectorisable
/// polynomial `exp`/`log1p` (relative error ≈ 1e-7), then one pass over the columns adding
/// `Σ_r g_r·x_r` for the whole group, so the partial gradient is loaded and stored once per
/// group rather than once per row. The gradient is summed in f32 and flushed into f64 totals
/// every 64 rows; losses are summed in f64. Agreement with the f64 [`loss_grad_sum`] is about
/// 1e-6 relative. State is `O(d)`; nothing is allocated per row or per block (the f32 copy of
/// the coefficients is refreshed in place).
///
/// Three block layouts are accepted: [`add_block`](GradAccumulator::add_block) takes `d`
/// feature columns plus a separate label slice; [`add_labelled_block`](GradAccumulator::add_labelled_block)
/// takes `d + 1` columns per row with the label last; [`add_labelled_le_bytes`](GradAccumulator::add_labelled_le_bytes)
/// takes the same rows as little-endian bytes straight from a file buffer (the layout of
/// `benches/local_gradient.rs`).
#[derive(Clone, Debug)]
pub struct GradAccumulator {
    d: usize,
    loss: f64,
    grad: Vec<f64>,
    rows: usize,
    coef32: Vec<f32>,
    partial: Vec<f32>,
}

impl GradAccumulator {
    /// An empty accumulator for `d` features.
    pub fn new(d: usize) -> Self {
        GradAccumulator {
            d,
            loss: 0.0,
            grad: vec![0.0; d + 1],
            rows: 0,
            coef32: vec![0.0; d],
            partial: vec![0.0; d],
        }
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Rows added so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Adds `y.len()` rows: `rows` is row-major with `d` columns, `y` the labels.
    pub fn add_block(
        &mut self,
        p: &LinearParams,
        rows: &[f32],
        y: &[f32],
        pos_weight: f64,
    ) -> Result<(), LinearError> {
        self.check_params(p)?;
        if rows.len() != y.len() * self.d {
            return Err(LinearError::ShapeMismatch {
                what: "block values (labels × features)",
                expected: y.len() * self.d,
                got: rows.len(),
            });
        }
        self.accumulate(p, rows, self.d, Some(y), pos_weight);
        Ok(())
    }

    /// Adds `rows.len() / (d + 1)` rows stored row-major with `d` features followed by the label.
    pub fn add_labelled_block(
        &mut self,
        p: &LinearParams,
        rows: &[f32],
        pos_weight: f64,
    ) -> Result<(), LinearError> {
        self.check_params(p)?;
        let stride = self.d + 1;
        if rows.len() % stride != 0 {
            return Err(LinearError::ShapeMismatch {
                what: "block values (a multiple of features + 1)",
                expected: rows.len() - rows.len() % stride,
                got: rows.len(),
            });
        }
        self.accumulate(p, rows, stride, None, pos_weight);
        Ok(())
    }

    /// [`add_labelled_block`](GradAccumulator::add_labelled_block) on the raw bytes of a
    /// file of little-endian f32 rows (`d` features then the label, `4·(d + 1)` bytes per
    /// row), read in place without a decode pass. `bytes` must hold whole rows.
    pub fn add_labelled_le_bytes(
        &mut self,
        p: &LinearParams,
        bytes: &[u8],
        pos_weight: f64,
    ) -> Result<(), LinearError> {
        self.check_params(p)?;
        let row_bytes = 4 * (self.d + 1);
        if bytes.len() % row_bytes != 0 {
            return Err(LinearError::ShapeMismatch {
                what: "block bytes (a multiple of 4 × (features + 1))",
                expected: bytes.len() - bytes.len() % row_bytes,
                got: bytes.len(),
            });
        }
        self.accumulate(p, LeBytes(bytes), self.d + 1, None, pos_weight);
        Ok(())
    }

    /// Adds another accumulator's sums (e.g. from another thread).
    pub fn merge(&mut self, other: &GradAccumulator) -> Result<(), LinearError> {
        if other.d != self.d {
            return Err(LinearError::ShapeMismatch {
                what: "accumulator features",
                expected: self.d,
                got: other.d,
            });
        }
        self.loss += other.loss;
        for (a, b) in self.grad.iter_mut().zip(&other.grad) {
            *a += b;
        }
        self.rows += other.rows;
        Ok(())
    }

    /// `(Σ c_i·ℓ_i, gradient sum (coef then intercept), rows)`.
    pub fn finish(self) -> (f64, Vec<f64>, usize) {
        (self.loss, self.grad, self.rows)
    }

    fn check_params(&mut self, p: &LinearParams) -> Result<(), LinearError> {
        if p.coef.len() != self.d {
            return Err(LinearError::ShapeMismatch {
                what: "model features",
                expected: self.d,
                got: p.coef.len(),
            });
        }
        for (c32, &c) in self.coef32.iter_mut().zip(&p.coef) {
            *c32 = c as f32;
        }
        Ok(())
    }

    /// Row `i` starts at value `i·stride` of `rows`; its label is `labels[i]`, or the value
    /// right after its `d` features when `labels` is `None`. Shapes are checked by the callers.
    fn accumulate<C: Cells>(
        &mut self,
        p: &LinearParams,
        rows: C,
        stride: usize,
        labels: Option<&[f32]>,
        pos_weight: f64,
    ) {
        let d = self.d;
        let n = match labels {
            Some(y) => y.len(),
            None => rows.len() / stride,
        };
        let coef = &self.coef32[..d];
        let partial = &mut self.partial[..d];
        let (grad, g_intercept) = self.grad.split_at_mut(d);
        let intercept = p.intercept as f32;
        let pw = pos_weight as f32;
        let mut loss = 0.0f64;
        let mut g_int = 0.0f64;
        let mut since_flush = 0;
        let mut i = 0;
        let label = |row_start: usize, i: usize| match labels {
            Some(l) => l[i],
            None => rows.get(row_start + d),
        };
        // Full groups: dot products and gradient updates blocked over the group's rows, so
        // the coefficients and the partial gradient are loaded once per group, not per row.
        while i + GROUP <= n {
            let base = i * stride;
            let xs: [C; GROUP] =
                std::array::from_fn(|r| rows.range(base + r * stride, base + r * stride + d));
            let mut z = [0.0f32; GROUP];
            for (zr, &x) in z.iter_mut().zip(&xs) {
                *zr = x.dot(coef);
            }
            let mut y = [0.0f32; GROUP];
            for r in 0..GROUP {
                z[r] += intercept;
                y[r] = label(base + r * stride, i + r);
            }
            let mut l = [0.0f32; GROUP];
            let mut g = [0.0f32; GROUP];
            logistic_lanes(&z, &y, pw, &mut l, &mut g);
            for r in 0..GROUP {
                loss += f64::from(l[r]);
                g_int += f64::from(g[r]);
            }
            axpy_group(&g, &xs, partial);
            i += GROUP;
            since_flush += GROUP;
            if since_flush >= FLUSH_ROWS {
                flush(partial, grad);
                since_flush = 0;
            }
        }
        // The last `n mod GROUP` rows: padded with empty rows (z = 0, y = 0, g ignored).
        let k = n - i;
        let base = i * stride;
        let xs: [C; GROUP] = std::array::from_fn(|r| {
            if r < k {
                rows.range(base + r * stride, base + r * stride + d)
            } else {
                rows.range(0, 0)
            }
        });
        let mut z = [0.0f32; GROUP];
        let mut y = [0.0f32; GROUP];
        for r in 0..k {
            z[r] = xs[r].dot(coef) + intercept;
            y[r] = label(base + r * stride, i + r);
        }
        let mut l = [0.0f32; GROUP];
        let mut g = [0.0f32; GROUP];
        logistic_lanes(&z, &y, pw, &mut l, &mut g);
        for r in 0..k {
            loss += f64::from(l[r]);
            g_int += f64::from(g[r]);
            for (j, a) in partial.iter_mut().enumerate() {
                *a += g[r] * xs[r].get(j);
            }
        }
        flush(partial, grad);
        g_intercept[0] += g_int;
        self.loss += loss;
        self.rows += n;
    }
}

/// Read-only f32 cells of a block: an `f32` slice, or little-endian bytes read in place (on
/// little-endian machines `from_le_bytes` compiles to a plain load, so no decode pass).
trait Cells: Copy {
    /// Number of f32 values.
    fn len(self) -> usize;
    /// Value `i`.
    fn get(self, i: usize) -> f32;
    /// Values `a..b`.
    fn range(self, a: usize, b: usize) -> Self;
    /// `coef · self` (same length), eight f32 lanes over 8-value chunks.
    fn dot(self, coef: &[f32]) -> f32;
}

impl Cells for &[f32] {
    #[inline(always)]
    fn len(self) -> usize {
        <[f32]>::len(self)
    }
    #[inline(always)]
    fn get(self, i: usize) -> f32 {
        self[i]
    }
    #[inline(always)]
    fn range(self, a: usize, b: usize) -> Self {
        &self[a..b]
    }
    #[inline(always)]
    fn dot(self, coef: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let cc = coef.chunks_exact(8);
        let xc = self.chunks_exact(8);
        let tail: f32 = cc
            .remainder()
            .iter()
            .zip(xc.remainder())
            .map(|(a, b)| a * b)
            .sum();
        for (c, x) in cc.zip(xc) {
            for t in 0..8 {
                acc[t] += c[t] * x[t];
            }
        }
        // Summed in lane order: a pairwise tree here makes LLVM shuffle inside the loop.
        acc.iter().sum::<f32>() + tail
    }
}

/// Little-endian f32 values stored as bytes.
#[derive(Clone, Copy)]
struct LeBytes<'a>(&'a [u8]);

impl Cells for LeBytes<'_> {
    #[inline(always)]
    fn len(self) -> usize {
        self.0.len() / 4
    }
    #[inline(always)]
    fn get(self, i: usize) -> f32 {
        let b = &self.0[4 * i..4 * i + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    #[inline(always)]
    fn range(self, a: usize, b: usize) -> Self {
        LeBytes(&self.0[4 * a..4 * b])
    }
    #[inline(always)]
    fn dot(self, coef: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let cc = coef.chunks_exact(8);
        let xc = self.0.chunks_exact(32);
        let tail: f32 = cc
            .remainder()
            .iter()
            .zip(xc.remainder().chunks_exact(4))
            .map(|(a, b)| a * f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .sum();
        for (c, x) in cc.zip(xc) {
            for t in 0..8 {
                let i = 4 * t;
                acc[t] += c[t] * f32::from_le_bytes([x[i], x[i + 1], x[i + 2], x[i + 3]]);
            }
        }
        // Summed in lane order: a pairwise tree here makes LLVM shuffle inside the loop.
        acc.iter().sum::<f32>() + tail
    }
}

/// `partial += Σ_r g[r]·xs[r]` as one loop over the columns, which LLVM vectorises four
/// columns at a time with contiguous loads from each of the group's rows (the partial sums
/// are loaded and stored once per group, not once per row).
#[inline(always)]
fn axpy_group<C: Cells>(g: &[f32; GROUP], xs: &[C; GROUP], partial: &mut [f32]) {
    let d = partial.len();
    // Rows cut to exactly `d` values, so the bounds checks in the loop can be dropped.
    let rows: [C; GROUP] = std::array::from_fn(|r| xs[r].range(0, d));
    for (j, pj) in partial.iter_mut().enumerate() {
        let mut a = *pj;
        for (gr, x) in g.iter().zip(&rows) {
            a += gr * x.get(j);
        }
        *pj = a;
    }
}

/// Weighted loss `c·ℓ` and residual `c·(σ(z) − y)` for `GROUP` rows in f32, branch-free so
/// that the loop vectorises; the same formulas as [`logistic`].
#[inline(always)]
fn logistic_lanes(
    z: &[f32; GROUP],
    y: &[f32; GROUP],
    pos_weight: f32,
    loss: &mut [f32; GROUP],
    grad: &mut [f32; GROUP],
) {
    for t in 0..GROUP {
        let (zt, yt) = (z[t], y[t]);
        let e = exp_neg_f32(zt.abs());
        let inv = 1.0 / (1.0 + e);
        let ei = e * inv;
        let positive = zt >= 0.0;
        let p = if positive { inv } else { ei };
        let q = if positive { ei } else { inv };
        let c = 1.0 + (pos_weight - 1.0) * yt;
        let relu = if positive { zt } else { 0.0 };
        loss[t] = c * ((relu - yt * zt) + ln_1p_unit_f32(e));
        grad[t] = c * ((1.0 - yt) * p - yt * q);
    }
}

/// `e^{−a}` for `a ≥ 0` (NaN and `a > 87` give `e^{−87}`), relative error ≈ 1e-7: Cephes'
/// `expf` polynomial after reduction by a two-part ln 2; the power of two is built from its
/// bits. Branch-free and vectorisable.
#[inline(always)]
fn exp_neg_f32(a: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let a = a.min(87.0);
    let k = (a * LOG2E + 0.5) as i32; // round(a / ln 2) ∈ [0, 126]
    let kf = k as f32;
    let r = (kf * LN2_HI - a) + kf * LN2_LO; // −a + k·ln 2 ∈ [−ln2/2, ln2/2]
    let poly = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let er = poly * r * r + r + 1.0;
    er * f32::from_bits(((127 - k) as u32) << 23) // 2^{−k}, a normal number
}

/// `ln(1 + e)` for `e ∈ [0, 1]`, relative error ≈ 1e-7 also for tiny `e`:
/// `2·atanh(s)` with `s = e/(2 + e) ≤ 1/3`, series to `s¹³`.
#[inline(always)]
fn ln_1p_unit_f32(e: f32) -> f32 {
    let s = e / (2.0 + e);
    let w = s * s;
    let poly = 1.0
        + w * (1.0 / 3.0
            + w * (1.0 / 5.0
                + w * (1.0 / 7.0 + w * (1.0 / 9.0 + w * (1.0 / 11.0 + w * (1.0 / 13.0))))));
    2.0 * s * poly
}

/// Adds the f32 partial sums into the f64 totals and zeroes them.
#[inline]
fn flush(partial: &mut [f32], total: &mut [f64]) {
    for (t, p) in total.iter_mut().zip(partial.iter_mut()) {
        *t += f64::from(*p);
        *p = 0.0;
    }
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
    fn synthetic(n: usize, truth: &[f64], b: f64, seed: u64) -> (Array2<f32>, Array1<f32>) {
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

    fn objective_sum(
        p: &LinearParams,
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        l2: f64,
        pw: f64,
    ) -> f64 {
        let (l, _) = loss_grad_sum(p, x, y, pw).unwrap();
        l + 0.5 * l2 * x.nrows() as f64 * p.coef.iter().map(|v| v * v).sum::<f64>()
    }

    fn pooled_grad_norm(
        p: &LinearParams,
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        l2: f64,
        pw: f64,
    ) -> f64 {
        let (_, mut g) = loss_grad_sum(p, x, y, pw).unwrap();
        let n = x.nrows() as f64;
        for (gj, c) in g.iter_mut().zip(&p.coef) {
            *gj += l2 * n * c;
        }
        g.iter().map(|v| v * v).sum::<f64>().sqrt()
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

    #[test]
    fn fit_pooled_hand_checked_case() {
        // One binary feature; group x=0 has 1 positive of 4, group x=1 has 3 of 4. Without
        // penalty the MLE reproduces the group rates: b = logit(1/4) = −ln 3,
        // b + w = logit(3/4) = ln 3, so w = 2·ln 3.
        let x = Array2::from_shape_vec((8, 1), vec![0., 0., 0., 0., 1., 1., 1., 1.]).unwrap();
        let y = Array1::from(vec![1., 0., 0., 0., 1., 1., 1., 0.]);
        let p = fit_pooled(x.view(), y.view(), 0.0, 1.0).unwrap();
        let ln3 = 3f64.ln();
        assert!((p.intercept + ln3).abs() < 1e-9, "{p:?}");
        assert!((p.coef[0] - 2.0 * ln3).abs() < 1e-9, "{p:?}");
        // pos_weight 3 makes each group's weighted positive share 3·k/(3·k + (4 − k)):
        // x=0 → 1/2 (b = 0), x=1 → 9/10 (w = ln 9).
        let p = fit_pooled(x.view(), y.view(), 0.0, 3.0).unwrap();
        assert!(p.intercept.abs() < 1e-9, "{p:?}");
        assert!((p.coef[0] - 9f64.ln()).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn fit_pooled_reaches_the_optimum() {
        let (x, y) = synthetic(3000, &[1.5, -1.0, 0.5, 0.0, 2.0], -1.0, 2);
        for (l2, pw) in [(0.0, 1.0), (1e-2, 1.0), (1e-3, 5.0)] {
            let p = fit_pooled(x.view(), y.view(), l2, pw).unwrap();
            let gn = pooled_grad_norm(&p, x.view(), y.view(), l2, pw);
            assert!(gn < 1e-6, "l2={l2} pw={pw}: gradient norm {gn}");
            // Any perturbation increases the objective.
            let f = objective_sum(&p, x.view(), y.view(), l2, pw);
            let mut q = p.clone();
            q.coef[0] += 1e-3;
            assert!(objective_sum(&q, x.view(), y.view(), l2, pw) > f);
        }
    }

    #[test]
    fn fit_pooled_refuses_bad_input() {
        let x = Array2::<f32>::zeros((4, 2));
        let y = Array1::<f32>::zeros(3);
        assert!(matches!(
            fit_pooled(x.view(), y.view(), 0.1, 1.0),
            Err(LinearError::ShapeMismatch { .. })
        ));
        let x0 = Array2::<f32>::zeros((0, 2));
        let y0 = Array1::<f32>::zeros(0);
        assert_eq!(
            fit_pooled(x0.view(), y0.view(), 0.1, 1.0),
            Err(LinearError::NoRows)
        );
        let y = Array1::<f32>::zeros(4);
        assert!(matches!(
            fit_pooled(x.view(), y.view(), -1.0, 1.0),
            Err(LinearError::InvalidParameter { .. })
        ));
        assert!(matches!(
            fit_pooled(x.view(), y.view(), 0.1, 0.0),
            Err(LinearError::InvalidParameter { .. })
        ));
        // Perfectly separable without a penalty: no finite optimum.
        let xs = Array2::from_shape_vec((4, 1), vec![-2., -1., 1., 2.]).unwrap();
        let ys = Array1::from(vec![0., 0., 1., 1.]);
        let r = fit_pooled(xs.view(), ys.view(), 0.0, 1.0);
        assert!(
            matches!(
                r,
                Err(LinearError::NotConverged { .. } | LinearError::SingularHessian)
            ),
            "{r:?}"
        );
        // So is a constant column (collinear with the intercept).
        let xc = Array2::from_shape_vec((4, 2), vec![1., 0.5, 1., -1., 1., 2., 1., 0.]).unwrap();
        let yc = Array1::from(vec![0., 1., 1., 0.]);
        assert_eq!(
            fit_pooled(xc.view(), yc.view(), 0.0, 1.0),
            Err(LinearError::SingularHessian)
        );
        assert!(fit_pooled(xc.view(), yc.view(), 0.1, 1.0).is_ok());
        assert!(fit_pooled(xs.view(), ys.view(), 0.01, 1.0).is_ok());
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

    #[test]
    fn f32_exp_and_log1p_are_accurate() {
        let mut worst = (0.0f64, 0.0f64);
        for i in 0..=200_000 {
            let a = i as f32 * 87.0 / 200_000.0;
            let exact = (-f64::from(a)).exp();
            let rel = (f64::from(exp_neg_f32(a)) - exact).abs() / exact;
            worst.0 = worst.0.max(rel);
        }
        for i in 0..=200_000 {
            // Log-spaced down to 1e-30 plus the linear range up to 1.
            let e = if i % 2 == 0 {
                (i as f32 / 200_000.0).max(1e-30)
            } else {
                10f32.powf(-30.0 * i as f32 / 200_000.0)
            };
            let exact = f64::from(e).ln_1p();
            let rel = (f64::from(ln_1p_unit_f32(e)) - exact).abs() / exact.max(1e-300);
            worst.1 = worst.1.max(rel);
        }
        assert!(worst.0 < 5e-7 && worst.1 < 5e-7, "{worst:?}");
        assert_eq!(exp_neg_f32(0.0), 1.0);
        assert!(exp_neg_f32(f32::INFINITY) > 0.0 && exp_neg_f32(f32::NAN).is_finite());
    }

    #[test]
    fn grad_accumulator_equals_loss_grad_sum() {
        let (x, y) = synthetic(
            1000,
            &[0.5, -1.0, 0.25, 2.0, 0.0, 1.0, -0.5, 0.75, 1.5, -2.0, 0.3],
            0.2,
            6,
        );
        let d = x.ncols();
        let p = LinearParams {
            coef: (0..d).map(|j| 0.1 * j as f64 - 0.4).collect(),
            intercept: -0.3,
        };
        let (l_ref, g_ref) = loss_grad_sum(&p, x.view(), y.view(), 3.0).unwrap();
        let flat = x.as_slice().unwrap();
        let labels = y.as_slice().unwrap();
        // Separate labels, uneven blocks.
        let mut acc = GradAccumulator::new(d);
        let mut start = 0;
        for len in [1usize, 99, 300, 600] {
            acc.add_block(
                &p,
                &flat[start * d..(start + len) * d],
                &labels[start..start + len],
                3.0,
            )
            .unwrap();
            start += len;
        }
        // Interleaved labels, accumulated in two halves and merged.
        let mut inter = Vec::with_capacity(1000 * (d + 1));
        for i in 0..1000 {
            inter.extend_from_slice(&flat[i * d..(i + 1) * d]);
            inter.push(labels[i]);
        }
        let mut a = GradAccumulator::new(d);
        let mut b = GradAccumulator::new(d);
        a.add_labelled_block(&p, &inter[..400 * (d + 1)], 3.0)
            .unwrap();
        b.add_labelled_block(&p, &inter[400 * (d + 1)..], 3.0)
            .unwrap();
        a.merge(&b).unwrap();
        // The same rows as little-endian bytes, in blocks of 13 rows (not a multiple of 8).
        let bytes: Vec<u8> = inter.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut c = GradAccumulator::new(d);
        for chunk in bytes.chunks(13 * 4 * (d + 1)) {
            c.add_labelled_le_bytes(&p, chunk, 3.0).unwrap();
        }
        assert!(c.add_labelled_le_bytes(&p, &bytes[..4 * d], 3.0).is_err());
        for acc in [acc, a, c] {
            let (l, g, rows) = acc.finish();
            assert_eq!(rows, 1000);
            assert!((l - l_ref).abs() < 1e-5 * l_ref.abs(), "{l} vs {l_ref}");
            let scale = g_ref.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (u, v) in g.iter().zip(&g_ref) {
                assert!((u - v).abs() < 1e-5 * scale, "{u} vs {v}");
            }
        }
        // Shapes are checked.
        let mut acc = GradAccumulator::new(d);
        assert!(acc
            .add_block(&p, &flat[..d * 3], &labels[..2], 1.0)
            .is_err());
        assert!(acc.add_labelled_block(&p, &inter[..d], 1.0).is_err());
        assert!(acc
            .add_block(&LinearParams::zeros(d + 1), &flat[..d], &labels[..1], 1.0)
            .is_err());
        assert!(acc.merge(&GradAccumulator::new(d - 1)).is_err());
        assert_eq!(acc.rows(), 0);
        // No features: only the intercept (σ(0) = ½ for both rows).
        let mut acc = GradAccumulator::new(0);
        acc.add_block(&LinearParams::zeros(0), &[], &[1.0, 0.0], 1.0)
            .unwrap();
        acc.add_labelled_le_bytes(&LinearParams::zeros(0), &1f32.to_le_bytes(), 1.0)
            .unwrap();
        let (l, g, rows) = acc.finish();
        assert_eq!(rows, 3);
        assert!((l - 3.0 * std::f64::consts::LN_2).abs() < 1e-6, "{l}");
        assert!((g[0] + 0.5).abs() < 1e-6, "{g:?}");
    }

    /// The ISLR `Default` data set: 10,000 customers, label `default`, features
    /// `student` (Yes/No), `balance`, `income`.
    /// Returns the standardised features, the labels and the columns' standard deviations.
    fn read_default_csv() -> (Array2<f32>, Array1<f32>, Vec<f64>) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/default.csv");
        let text =
            std::fs::read_to_string(path).expect("data/default.csv is shipped with the repository");
        let mut lines = text.lines();
        assert_eq!(
            lines.next().map(str::trim),
            Some("default,student,balance,income")
        );
        let yes = |s: &str| match s.trim().trim_matches('"') {
            "Yes" => 1.0f32,
            "No" => 0.0,
            other => panic!("expected Yes/No, got {other:?}"),
        };
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 4, "{line}");
            ys.push(yes(f[0]));
            xs.push(yes(f[1]));
            xs.push(f[2].trim().parse::<f32>().unwrap());
            xs.push(f[3].trim().parse::<f32>().unwrap());
        }
        let mut x = Array2::from_shape_vec((ys.len(), 3), xs).unwrap();
        let mut sds = Vec::new();
        for mut col in x.columns_mut() {
            let mean = col.mapv(f64::from).mean().unwrap();
            let sd = col.mapv(f64::from).std(0.0);
            col.mapv_inplace(|v| ((f64::from(v) - mean) / sd) as f32);
            sds.push(sd);
        }
        (x, Array1::from(ys), sds)
    }

    #[test]
    fn default_data_pooled_auc() {
        let (x, y, sds) = read_default_csv();
        assert_eq!(x.nrows(), 10_000);
        assert_eq!(y.sum(), 333.0);
        let p = fit_pooled(x.view(), y.view(), 0.0, 1.0).unwrap();
        let a = auc(&predict_proba(&p, x.view()).unwrap(), y.as_slice().unwrap());
        assert!(a > 0.94, "in-sample AUC {a}");
        // Unpenalised, this is R's `glm(default ~ student + balance + income, binomial)`;
        // ISLR (2nd ed., Table 4.3) prints student −0.6468, balance 0.005737 and income
        // 0.003033 per $1000 on the original scales.
        let raw: Vec<f64> = p.coef.iter().zip(&sds).map(|(c, sd)| c / sd).collect();
        assert!((raw[0] + 0.6468).abs() < 5e-4, "{raw:?}");
        assert!((raw[1] - 0.005737).abs() < 5e-6, "{raw:?}");
        assert!((raw[2] * 1000.0 - 0.003033).abs() < 5e-6, "{raw:?}");
        assert!(pooled_grad_norm(&p, x.view(), y.view(), 0.0, 1.0) < 1e-6);
    }
}
