//! The server half of a job: a serialisable state machine that turns sums into models.
//!
//! Every job starts with the [`prelude`] (federation-wide counts, feature scales, global
//! moments); its model family then runs its own stages — [`linear`] (logistic regression,
//! MLP, and a scorecard's regression), [`gbdt`] (boosting), [`scorecard`] (binning and WOE
//! before its regression) — each ending with the shared [`evaluate`] step, then `Done`.
//!
//! Each family is a type with the same four operations: `shape` (length and element bound
//! of its next step), `next` (the instruction), `absorb` (consumes the stage and a checked
//! sum, returns the next [`Stage`]; on error it hands itself back unchanged, so a refused
//! aggregate leaves the plan as it was) and `finish` (what the stage becomes when the job is
//! stopped early). [`Stage`] dispatches to them in one place: a new family is a new module
//! and one variant here.
//!
//! The plan only ever receives sums over participants; nothing here can address one.

// `absorb` hands the stage back by value with its error (`Err((stage, e))`), so a refused
// aggregate leaves the plan as it was without a clone; the large `Err` is built only when an
// aggregate is refused, at most a few times per job.
#![allow(clippy::result_large_err)]

mod evaluate;
mod gbdt;
mod legacy;
mod linear;
pub mod plausible;
mod prelude;
mod scorecard;

use serde::{Deserialize, Serialize};

use fedsilo_ml::metrics::{BinaryMetrics, ScoreHistogram};

use crate::error::FedError;
use crate::instruction::{Instruction, JobData, Step};
use crate::job::LabelMetrics;
use crate::model::{Standardizer, TrainedModel};
use crate::spec::{JobSpec, ModelSpec};

/// One point of the training curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub round: u64,
    pub train_loss: Option<f64>,
    pub holdout: Option<Vec<BinaryMetrics>>,
}

/// Evaluation result per label, from summed histograms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub round: u64,
    pub per_label: Vec<(BinaryMetrics, ScoreHistogram)>,
}

/// Federation-wide counts from the prelude's first step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Totals {
    /// Training rows.
    rows: f64,
    /// Positive rows per label.
    positives: Vec<f64>,
    /// Rows with the feature present, per feature.
    observed: Vec<f64>,
}

/// What every stage reads, and the records stages add to when they succeed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Job {
    spec: JobSpec,
    data: JobData,
    /// Index of the next step (also the secure-aggregation round number).
    step: u64,
    totals: Totals,
    curve: Vec<CurvePoint>,
    last_eval: Option<Evaluation>,
    /// Rounds of noisy training done (for the DP accountant), including noised training
    /// sums unmasked but not used ([`Plan::charge_unused_release`]).
    dp_rounds: u64,
    /// Noised count releases unmasked but not used, beyond the job's fixed ones.
    #[serde(default)]
    unused_count_releases: u64,
    stopped_early: Option<String>,
}

impl Job {
    /// Bound on any count a participant reports, from the federation's row count.
    fn rows_bound(&self) -> f64 {
        self.totals.rows.clamp(1.0, 1e12)
    }
}

/// Length and element bound of a step's vectors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Shape {
    len: usize,
    max_abs: f64,
}

impl Shape {
    fn new(len: usize, max_abs: f64) -> Self {
        Shape { len, max_abs }
    }
}

/// The job ended; its model, if one was built.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Done {
    model: Option<TrainedModel>,
    /// Training rounds (trees for boosting) done.
    rounds: u64,
}

/// Where a job is: the prelude, one family's own stage, or done.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Stage {
    Prelude(prelude::Prelude),
    Linear(linear::Linear),
    Gbdt(gbdt::Boosting),
    Scorecard(scorecard::Binning),
    Done(Done),
}

impl Stage {
    /// The family's first stage once the prelude has the global standardiser.
    fn after_prelude(job: &Job, standardizer: Standardizer) -> Result<Stage, FedError> {
        Ok(match &job.spec.model {
            ModelSpec::LogisticRegression | ModelSpec::Mlp { .. } => {
                Stage::Linear(linear::Linear::new(job, standardizer)?)
            }
            ModelSpec::Gbdt(params) => Stage::Gbdt(gbdt::Boosting::new(job, params, standardizer)?),
            ModelSpec::Scorecard(sc) => Stage::Scorecard(scorecard::Binning::new(sc, standardizer)),
        })
    }

    fn shape(&self, job: &Job) -> Option<Shape> {
        match self {
            Stage::Prelude(s) => Some(s.shape(job)),
            Stage::Linear(s) => Some(s.shape(job)),
            Stage::Gbdt(s) => s.shape(job),
            Stage::Scorecard(s) => Some(s.shape(job)),
            Stage::Done(_) => None,
        }
    }

    fn next(&self, job: &Job) -> Option<Instruction> {
        match self {
            Stage::Prelude(s) => Some(s.next(job)),
            Stage::Linear(s) => Some(s.next(job)),
            Stage::Gbdt(s) => s.next(job),
            Stage::Scorecard(s) => Some(s.next(job)),
            Stage::Done(_) => None,
        }
    }

    fn absorb(self, job: &mut Job, sum: &[f64]) -> Result<Stage, (Stage, FedError)> {
        match self {
            Stage::Prelude(s) => s.absorb(job, sum).map_err(|(s, e)| (Stage::Prelude(s), e)),
            Stage::Linear(s) => s.absorb(job, sum).map_err(|(s, e)| (Stage::Linear(s), e)),
            Stage::Gbdt(s) => s.absorb(job, sum).map_err(|(s, e)| (Stage::Gbdt(s), e)),
            Stage::Scorecard(s) => s
                .absorb(job, sum)
                .map_err(|(s, e)| (Stage::Scorecard(s), e)),
            Stage::Done(d) => Err((Stage::Done(d), FedError::Finished)),
        }
    }

    fn finish(self, job: &Job) -> Stage {
        match self {
            Stage::Prelude(_) => Stage::Done(Done {
                model: None,
                rounds: 0,
            }),
            Stage::Linear(s) => s.finish(),
            Stage::Gbdt(s) => s.finish(job),
            Stage::Scorecard(s) => s.finish(),
            Stage::Done(d) => Stage::Done(d),
        }
    }

    fn model(&self) -> Option<&TrainedModel> {
        match self {
            Stage::Linear(s) => Some(s.model()),
            Stage::Gbdt(s) => s.model(),
            Stage::Done(d) => d.model.as_ref(),
            Stage::Prelude(_) | Stage::Scorecard(_) => None,
        }
    }

    fn rounds_done(&self) -> u64 {
        match self {
            Stage::Linear(s) => s.rounds_done(),
            Stage::Gbdt(s) => s.rounds_done(),
            Stage::Done(d) => d.rounds,
            Stage::Prelude(_) | Stage::Scorecard(_) => 0,
        }
    }
}

/// The server half of a job: a serialisable state machine. Its serialisation is the job's
/// part of the coordinator's checkpoint (`JobRecord`, beside the engine's own counters).
/// It reads the old flat form too ([`legacy`]) and always writes this one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    job: Job,
    stage: Stage,
}

pub use legacy::LegacyError;

/// The current serialised form.
#[derive(Deserialize)]
struct PlanV1 {
    job: Job,
    stage: Stage,
}

impl<'de> Deserialize<'de> for Plan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        if v.get("job").is_some() {
            let p: PlanV1 = serde_json::from_value(v).map_err(D::Error::custom)?;
            Ok(Plan {
                job: p.job,
                stage: p.stage,
            })
        } else {
            let old: legacy::PlanV0 = serde_json::from_value(v).map_err(D::Error::custom)?;
            Plan::try_from(old).map_err(D::Error::custom)
        }
    }
}

impl Plan {
    /// A new plan. `features`/`labels` are the job's columns (the coordinator resolves an empty
    /// list in the spec against the dataset's schema before calling this).
    pub fn new(
        spec: JobSpec,
        features: Vec<String>,
        labels: Vec<String>,
    ) -> Result<Self, FedError> {
        let mut spec = spec;
        spec.validate()?;
        // A record-level job given a budget and no σ calibrates it now: the plan (and the
        // model file) carry the σ every round uses.
        if let Some(sigma) = crate::privacy::resolve_sigma(&spec) {
            let sigma = sigma.map_err(|source| FedError::Calibration {
                rounds: crate::privacy::training_releases(&spec),
                source,
            })?;
            if let Some(dp) = spec.dp.as_mut() {
                dp.noise_multiplier = Some(sigma);
            }
        }
        if features.is_empty() {
            return Err(FedError::Spec(
                "features: the job has no feature columns".into(),
            ));
        }
        if labels.is_empty() {
            return Err(FedError::Spec("labels: the job has no label column".into()));
        }
        let data = JobData {
            dataset: spec.dataset.clone(),
            features,
            labels,
        };
        Ok(Plan {
            job: Job {
                spec,
                data,
                step: 0,
                totals: Totals::default(),
                curve: Vec::new(),
                last_eval: None,
                dp_rounds: 0,
                unused_count_releases: 0,
                stopped_early: None,
            },
            stage: Stage::Prelude(prelude::Prelude::Scale),
        })
    }

    pub fn spec(&self) -> &JobSpec {
        &self.job.spec
    }

    /// The coordinator names a job whose spec left the id empty.
    pub fn set_job_id(&mut self, id: String) {
        self.job.spec.job_id = id;
    }

    pub fn data(&self) -> &JobData {
        &self.job.data
    }

    /// The training curve so far.
    pub fn curve(&self) -> &[CurvePoint] {
        &self.job.curve
    }

    /// The latest federated evaluation.
    pub fn last_eval(&self) -> Option<&Evaluation> {
        self.job.last_eval.as_ref()
    }

    /// The latest evaluation's metrics, one entry per label (empty before the first).
    pub fn label_metrics(&self) -> Vec<LabelMetrics> {
        let Some(e) = self.last_eval() else {
            return Vec::new();
        };
        self.data()
            .labels
            .iter()
            .zip(&e.per_label)
            .map(|(label, (metrics, _))| LabelMetrics {
                label: label.clone(),
                round: e.round,
                metrics: metrics.clone(),
            })
            .collect()
    }

    /// Every federated evaluation so far (the evaluation curve), oldest first, one entry per
    /// (evaluation, label). It is part of the persisted plan, so it survives a restart.
    pub fn label_curve(&self) -> Vec<LabelMetrics> {
        let labels = &self.data().labels;
        self.curve()
            .iter()
            .filter_map(|c| c.holdout.as_ref().map(|h| (c.round, h)))
            .flat_map(|(round, per_label)| {
                labels
                    .iter()
                    .zip(per_label)
                    .map(move |(label, m)| LabelMetrics {
                        label: label.clone(),
                        round,
                        metrics: m.clone(),
                    })
            })
            .collect()
    }

    /// Rounds of noisy training done (for the DP accountant).
    pub fn dp_rounds(&self) -> u64 {
        self.job.dp_rounds
    }

    /// A DP job's privacy spec and what its releases have spent so far; `None` without DP.
    /// What the engine, `job status`, the model file and the report read.
    pub fn privacy(&self) -> Option<(&crate::DpSpec, crate::privacy::Spent)> {
        let dp = self.job.spec.dp.as_ref()?;
        Some((
            dp,
            crate::privacy::spent_with_unused(
                &self.job.spec,
                self.job.dp_rounds,
                self.job.unused_count_releases,
            )?,
        ))
    }

    /// ε at the job's level after one more training release (the budget stop's question);
    /// `None` without DP.
    pub fn spent_after_next_training(&self) -> Option<f64> {
        let dp = self.job.spec.dp.as_ref()?;
        crate::privacy::spent_with_unused(
            &self.job.spec,
            self.job.dp_rounds + 1,
            self.job.unused_count_releases,
        )
        .map(|s| s.at(dp.level))
    }

    /// A noised sum of `step` that the coordinator unmasked but did not use (refused as
    /// implausible, undecodable or by the plan): the release happened all the same, and a
    /// retry releases again with fresh noise, so it is charged — a training release as one
    /// more training round, a count release as one more count release. No-op for a step
    /// without noise.
    pub fn charge_unused_release(&mut self, step: &Step) {
        if self.job.spec.dp.is_none() || step.instruction.noise().is_none() {
            return;
        }
        if step.instruction.purpose().is_training() {
            self.job.dp_rounds += 1;
        } else {
            self.job.unused_count_releases += 1;
        }
    }

    /// Why the job was stopped before its last round, if it was.
    pub fn stopped_early(&self) -> Option<&str> {
        self.job.stopped_early.as_deref()
    }

    /// Index of the next step (also the secure-aggregation round number).
    pub fn step_index(&self) -> u64 {
        self.job.step
    }

    /// Training rounds (trees for boosting) completed.
    pub fn rounds_done(&self) -> u64 {
        self.stage.rounds_done()
    }

    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done(_))
    }

    pub fn model(&self) -> Option<&TrainedModel> {
        self.stage.model()
    }

    /// Stops the job after the current state (e.g. the privacy budget is spent); a final
    /// evaluation still runs when a model exists.
    pub fn stop(&mut self, reason: String) {
        self.job.stopped_early = Some(reason);
        let stage = std::mem::replace(
            &mut self.stage,
            Stage::Done(Done {
                model: None,
                rounds: 0,
            }),
        );
        self.stage = stage.finish(&self.job);
    }

    /// Length and element bound of the next step, without building its instruction.
    fn shape(&self) -> Option<Shape> {
        self.stage.shape(&self.job)
    }

    /// The next step, or `None` when the job is done.
    pub fn next_step(&self) -> Option<Step> {
        let shape = self.shape()?;
        let instruction = self.stage.next(&self.job)?;
        let delta = match &self.stage {
            Stage::Gbdt(s) => s.next_delta(&self.job),
            _ => None,
        };
        Some(Step {
            index: self.job.step,
            instruction,
            delta,
            len: shape.len,
            max_abs: shape.max_abs,
        })
    }

    /// Absorbs the decoded SUM of the current step over `contributors` participants. On
    /// error the plan is exactly as it was (the round can be retried).
    pub fn absorb(&mut self, sum: &[f64], contributors: usize) -> Result<(), FedError> {
        let shape = self.shape().ok_or(FedError::Finished)?;
        if sum.len() != shape.len {
            return Err(FedError::SumLength {
                step: self.job.step,
                expected: shape.len,
                got: sum.len(),
            });
        }
        if contributors == 0 {
            return Err(FedError::NoContributors {
                step: self.job.step,
            });
        }
        let stage = std::mem::replace(
            &mut self.stage,
            Stage::Done(Done {
                model: None,
                rounds: 0,
            }),
        );
        match stage.absorb(&mut self.job, sum) {
            Ok(next) => {
                self.stage = next;
                self.job.step += 1;
                Ok(())
            }
            Err((stage, e)) => {
                self.stage = stage;
                Err(e)
            }
        }
    }
}
