//! A participant's part of one record-level DP-SGD step: Poisson-sample the local rows with
//! the participant's secret randomness, clip each sampled row's gradient (all of the job's
//! labels together: one customer, one clip) and send the sum. The noise is added after
//! encoding, like every DP step's; the federation-wide sum of one round is then one DP-SGD
//! step (Abadi et al. 2016) on the union of the institutions' rows.

use ndarray::ArrayView2;
use rand::Rng;

use fedsilo_ml::linear::{self, LinearParams};
use fedsilo_ml::mlp::MlpExampleGrad;

use crate::error::FedError;
use crate::model::{card_linear, ModelParams};
use crate::validate::InstructionError;

/// One row's flat gradient, all labels concatenated as [`ModelParams::flat`] lays them out.
enum RowGrad<'m> {
    Linear(Vec<(usize, std::borrow::Cow<'m, LinearParams>)>),
    Mlp(Vec<(usize, MlpExampleGrad)>),
}

impl<'m> RowGrad<'m> {
    fn new(params: &'m ModelParams) -> Result<Self, FedError> {
        Ok(match params {
            ModelParams::LogisticRegression { per_label } => RowGrad::Linear(
                per_label
                    .iter()
                    .map(|p| (p.coef.len() + 1, std::borrow::Cow::Borrowed(p)))
                    .collect(),
            ),
            ModelParams::Scorecard { card } => {
                let p = card_linear(card);
                RowGrad::Linear(vec![(p.coef.len() + 1, std::borrow::Cow::Owned(p))])
            }
            ModelParams::Mlp { per_label } => RowGrad::Mlp(
                per_label
                    .iter()
                    .map(|p| Ok((p.flat.len(), MlpExampleGrad::new(p)?)))
                    .collect::<Result<_, FedError>>()?,
            ),
            ModelParams::Gbdt { .. } => {
                return Err(FedError::Instruction(InstructionError::ModelKind {
                    step: "train",
                    model: "gbdt",
                }))
            }
        })
    }

    /// Row `i`'s gradient into `out` (the model's parameter count).
    fn grad(
        &mut self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        i: usize,
        row: &mut Vec<f32>,
        pos_weight: f64,
        out: &mut [f64],
    ) -> Result<(), FedError> {
        let mut off = 0;
        match self {
            RowGrad::Linear(per_label) => {
                row.clear();
                row.extend(x.row(i).iter().copied());
                for ((len, p), yv) in per_label.iter().zip(y.row(i)) {
                    let part = out
                        .get_mut(off..off + *len)
                        .ok_or(FedError::Internal("gradient layout"))?;
                    linear::example_grad(p, row, *yv, pos_weight, part)?;
                    off += *len;
                }
            }
            RowGrad::Mlp(per_label) => {
                for ((len, g), yv) in per_label.iter_mut().zip(y.row(i)) {
                    let part = out
                        .get_mut(off..off + *len)
                        .ok_or(FedError::Internal("gradient layout"))?;
                    g.grad(x, i, *yv, pos_weight, part)?;
                    off += *len;
                }
            }
        }
        Ok(())
    }
}

/// Σ over a Poisson sample (rate `q`) of the rows of `x` (standardised, rows × features) of
/// each row's log-loss gradient clipped to L2 norm `clip`. `y` is rows × labels.
pub(super) fn clipped_gradient_sum(
    params: &ModelParams,
    x: ArrayView2<f32>,
    y: ArrayView2<f32>,
    pos_weight: f64,
    q: f64,
    clip: f64,
    private: &mut impl rand::RngCore,
) -> Result<Vec<f64>, FedError> {
    if x.nrows() != y.nrows() {
        return Err(FedError::Internal(
            "features and labels of different row counts",
        ));
    }
    let dim = params.dim();
    let mut sum = vec![0.0; dim];
    let mut g = vec![0.0; dim];
    let mut row = Vec::with_capacity(x.ncols());
    let mut grads = RowGrad::new(params)?;
    for (i, take) in poisson_sample(x.nrows(), q, private)
        .into_iter()
        .enumerate()
    {
        if !take {
            continue;
        }
        grads.grad(x, y, i, &mut row, pos_weight, &mut g)?;
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let s = if norm > clip { clip / norm } else { 1.0 };
        for (a, b) in sum.iter_mut().zip(&g) {
            *a += s * b;
        }
    }
    Ok(sum)
}

/// Poisson sampling of `rows` rows at rate `q`: one Bernoulli(q) draw per row, in row order
/// (the sampling [`clipped_gradient_sum`] does inline, and the accountant assumes).
pub(super) fn poisson_sample(rows: usize, q: f64, private: &mut impl rand::RngCore) -> Vec<bool> {
    (0..rows).map(|_| private.random::<f64>() < q).collect()
}
