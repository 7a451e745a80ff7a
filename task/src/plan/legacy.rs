//! Reading checkpoints written before the plan had one module per family (fedsilo ≤ 0.1 of
//! 2026-12-01, `ml::fed::Plan`): one flat struct with a `stage` tag and the model, optimiser
//! and boosting standardiser beside it. [`Plan`]'s `Deserialize` reads both forms (the
//! current one has a `job` key) and always writes the current one, so a coordinator
//! upgraded with jobs in flight resumes them; an old checkpoint that does not fit is refused
//! naming what is missing.

use serde::Deserialize;

use fedsilo_ml::gbdt::GbdtServer;
use fedsilo_ml::optim::OptimizerState;
use fedsilo_ml::scorecard::ScorecardBins;

use super::{
    gbdt, linear, prelude, scorecard, CurvePoint, Done, Evaluation, Job, Plan, Stage, Totals,
};
use crate::instruction::JobData;
use crate::model::{ModelParams, Standardizer, TrainedModel};
use crate::spec::{JobSpec, ModelSpec};

/// The old flat plan, field for field.
#[derive(Deserialize)]
pub(super) struct PlanV0 {
    spec: JobSpec,
    data: JobData,
    stage: StageV0,
    step: u64,
    total_rows: f64,
    positives: Vec<f64>,
    observed: Vec<f64>,
    model: Option<TrainedModel>,
    optimizer: Option<OptimizerState>,
    curve: Vec<CurvePoint>,
    last_eval: Option<Evaluation>,
    dp_rounds: u64,
    stopped_early: Option<String>,
    #[serde(default)]
    gbdt_standardizer: Option<Standardizer>,
    #[serde(default)]
    rounds_override: Option<u64>,
}

#[derive(Deserialize)]
enum StageV0 {
    Scale,
    Moments { scales: Vec<f64> },
    Train { round: u64 },
    Evaluate { after_round: u64 },
    Gbdt { server: Box<GbdtServer> },
    ScorecardHistogram { ranges: Vec<(f32, f32)> },
    ScorecardCounts { bins: ScorecardBins },
    Done,
}

/// What an old checkpoint lacks for its stage.
#[derive(Debug, thiserror::Error)]
#[error("old-format plan checkpoint in stage {stage} has no {missing}")]
pub struct LegacyError {
    stage: &'static str,
    missing: &'static str,
}

impl TryFrom<PlanV0> for Plan {
    type Error = LegacyError;

    fn try_from(old: PlanV0) -> Result<Self, LegacyError> {
        let need = |stage: &'static str, missing: &'static str| LegacyError { stage, missing };
        let scorecard_spec = match &old.spec.model {
            ModelSpec::Scorecard(sc) => Some(sc.clone()),
            _ => None,
        };
        let stage = match old.stage {
            StageV0::Scale => Stage::Prelude(prelude::Prelude::Scale),
            StageV0::Moments { scales } => Stage::Prelude(prelude::Prelude::Moments { scales }),
            StageV0::Train { round } => Stage::Linear(linear::Linear::restore(
                old.model.ok_or(need("train", "model"))?,
                old.optimizer.ok_or(need("train", "optimizer"))?,
                linear::Resume::Train { round },
            )),
            StageV0::Evaluate { after_round } => {
                let model = old.model.ok_or(need("evaluate", "model"))?;
                if matches!(model.params, ModelParams::Gbdt { .. }) {
                    Stage::Gbdt(gbdt::Boosting::Evaluate {
                        model,
                        trees: after_round,
                    })
                } else {
                    Stage::Linear(linear::Linear::restore(
                        model,
                        old.optimizer.ok_or(need("evaluate", "optimizer"))?,
                        linear::Resume::Evaluate { after_round },
                    ))
                }
            }
            StageV0::Gbdt { server } => Stage::Gbdt(gbdt::Boosting::Grow {
                server,
                standardizer: old
                    .gbdt_standardizer
                    .ok_or(need("gbdt", "gbdt_standardizer"))?,
            }),
            StageV0::ScorecardHistogram { ranges } => {
                Stage::Scorecard(scorecard::Binning::restore(
                    scorecard_spec.ok_or(need("scorecard_histogram", "scorecard model spec"))?,
                    old.gbdt_standardizer
                        .ok_or(need("scorecard_histogram", "gbdt_standardizer"))?,
                    scorecard::Resume::Histogram { ranges },
                ))
            }
            StageV0::ScorecardCounts { bins } => Stage::Scorecard(scorecard::Binning::restore(
                scorecard_spec.ok_or(need("scorecard_counts", "scorecard model spec"))?,
                old.gbdt_standardizer
                    .ok_or(need("scorecard_counts", "gbdt_standardizer"))?,
                scorecard::Resume::Counts { bins },
            )),
            StageV0::Done => Stage::Done(Done {
                model: old.model,
                rounds: old.rounds_override.unwrap_or(old.spec.rounds),
            }),
        };
        Ok(Plan {
            job: Job {
                spec: old.spec,
                data: old.data,
                step: old.step,
                totals: Totals {
                    rows: old.total_rows,
                    positives: old.positives,
                    observed: old.observed,
                },
                curve: old.curve,
                last_eval: old.last_eval,
                dp_rounds: old.dp_rounds,
                unused_count_releases: 0,
                stopped_early: old.stopped_early,
            },
            stage,
        })
    }
}
