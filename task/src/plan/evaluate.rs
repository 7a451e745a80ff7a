//! Federated evaluation, shared by every family: per-class score histograms on each
//! participant's hold-out set, summed, from which AUC, KS, log-loss and lift of the whole
//! federation are computed without any record or any one institution's figures.

use fedsilo_ml::metrics::{BinaryMetrics, ScoreHistogram};

use super::{CurvePoint, Evaluation, Job, Shape};
use crate::error::FedError;
use crate::instruction::{Instruction, LOSS_CAP};
use crate::model::TrainedModel;

/// Per label: 2·bins histogram counts, the summed log-loss and the row count.
pub(crate) fn shape(job: &Job) -> Shape {
    let l = job.data.labels.len();
    Shape::new(
        l * (2 * job.spec.hist_bins + 2),
        job.rows_bound() * LOSS_CAP,
    )
}

pub(crate) fn next(job: &Job, model: &TrainedModel) -> Instruction {
    Instruction::Evaluate {
        data: job.data.clone(),
        model: model.clone(),
        bins: job.spec.hist_bins,
    }
}

/// The evaluation in `sum` (of [`shape`]'s length), without recording it.
pub(crate) fn absorb(job: &Job, sum: &[f64], after_round: u64) -> Result<Evaluation, FedError> {
    let bins = job.spec.hist_bins;
    let per = 2 * bins + 2;
    let mut per_label = Vec::with_capacity(job.data.labels.len());
    for chunk in sum.chunks_exact(per) {
        let h = ScoreHistogram::from_flat(&chunk[..2 * bins], bins)?;
        let m = BinaryMetrics::from_histogram(&h, chunk[2 * bins], chunk[2 * bins + 1]);
        per_label.push((m, h));
    }
    Ok(Evaluation {
        round: after_round,
        per_label,
    })
}

/// Records an evaluation on the curve (beside the round's training loss) and as the latest.
pub(crate) fn record(job: &mut Job, evaluation: Evaluation) {
    let metrics: Vec<BinaryMetrics> = evaluation
        .per_label
        .iter()
        .map(|(m, _)| m.clone())
        .collect();
    match job.curve.last_mut() {
        Some(c) if c.round == evaluation.round => c.holdout = Some(metrics),
        _ => job.curve.push(CurvePoint {
            round: evaluation.round,
            train_loss: None,
            holdout: Some(metrics),
        }),
    }
    job.last_eval = Some(evaluation);
}
