//! Federated gradient boosting: the prelude's moments answer the boosting server's own
//! statistics step, then fine histograms for the bin cut points and, per tree level,
//! gradient/hessian histograms per node — all sums — until `n_trees` are grown; then one
//! evaluation.

use serde::{Deserialize, Serialize};

use fedsilo_ml::gbdt::{GbdtParams, GbdtServer, StepKind};

use super::{evaluate, CurvePoint, Done, Job, Shape, Stage};
use crate::error::{FedError, ModelError};
use crate::instruction::{Instruction, NoiseSpec};
use crate::model::{ModelParams, Standardizer, TrainedModel};
use crate::privacy::{count_noise, floor_noised_counts, leaf_noise, level_noise, record_level};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Boosting {
    /// Growing trees.
    Grow {
        server: Box<GbdtServer>,
        /// The prelude's standardiser, kept for the model's description.
        standardizer: Standardizer,
    },
    /// The final evaluation of the grown model.
    Evaluate { model: TrainedModel, trees: u64 },
}

impl Boosting {
    /// The boosting server with its statistics step answered from the masked moments already
    /// aggregated: `[rows, positives, per feature c, Σx, Σx²]`.
    pub(crate) fn new(
        job: &Job,
        params: &GbdtParams,
        standardizer: Standardizer,
    ) -> Result<Self, FedError> {
        let f = job.data.features.len();
        let mut server = GbdtServer::new(params.clone(), f)
            .map_err(|e| FedError::SpecModel(ModelError::Gbdt(e)))?;
        if record_level(&job.spec).is_some() {
            server = server.with_noised_levels();
        }
        let positives = job.totals.positives.first().copied().unwrap_or(0.0);
        let mut stats = vec![job.totals.rows, positives];
        for ((&c, &m), &sd) in job
            .totals
            .observed
            .iter()
            .zip(&standardizer.mean)
            .zip(&standardizer.std)
        {
            stats.extend_from_slice(&[c, c * m, c * (sd * sd + m * m)]);
        }
        server.absorb(&stats)?;
        Ok(Boosting::Grow {
            server: Box::new(server),
            standardizer,
        })
    }

    pub(crate) fn model(&self) -> Option<&TrainedModel> {
        match self {
            Boosting::Evaluate { model, .. } => Some(model),
            Boosting::Grow { .. } => None,
        }
    }

    pub(crate) fn rounds_done(&self) -> u64 {
        match self {
            Boosting::Grow { server, .. } => server.trees_done() as u64,
            Boosting::Evaluate { trees, .. } => *trees,
        }
    }

    /// The noise of the server's next step: record-level jobs noise the fine histogram as a
    /// count release (one row in one fine bin or the missing slot per feature) and each tree
    /// level and each tree's leaf sums as sampled releases ([`level_noise`], [`leaf_noise`]);
    /// the statistics step is answered from the prelude and never asked.
    fn noise(server: &GbdtServer, job: &Job) -> Option<NoiseSpec> {
        let f = job.data.features.len();
        match server.next_kind()? {
            StepKind::Stats => None,
            StepKind::FineHistogram => count_noise(&job.spec, 1.0, (f as f64).sqrt()),
            StepKind::Level => level_noise(&job.spec, f),
            StepKind::Leaves => leaf_noise(&job.spec),
        }
    }

    /// `None` when the server has nothing to ask (it is done; [`Boosting::absorb`] moves on
    /// to the evaluation in the same transition, so this does not happen in a live plan).
    pub(crate) fn shape(&self, job: &Job) -> Option<Shape> {
        match self {
            // Counts and gradient/hessian sums: |g| ≤ 1, h ≤ 1/4 per row. Noise is added
            // after encoding: the range covers a 20σ tail of it.
            Boosting::Grow { server, .. } => {
                let tail = Self::noise(server, job).map_or(0.0, |n| 20.0 * n.stddev);
                server
                    .next_len()
                    .map(|len| Shape::new(len, job.rows_bound() + tail))
            }
            Boosting::Evaluate { .. } => Some(evaluate::shape(job)),
        }
    }

    pub(crate) fn next(&self, job: &Job) -> Option<Instruction> {
        match self {
            Boosting::Grow { server, .. } => server.next().map(|step| Instruction::Gbdt {
                data: job.data.clone(),
                step,
                noise: Self::noise(server, job),
            }),
            Boosting::Evaluate { model, .. } => Some(evaluate::next(job, model)),
        }
    }

    /// [`next`](Boosting::next) as a model delta on the previous level's state
    /// ([`GbdtServer::next_delta`]), for participants that computed that level.
    pub(crate) fn next_delta(&self, job: &Job) -> Option<Instruction> {
        match self {
            Boosting::Grow { server, .. } => server.next_delta().map(|step| Instruction::Gbdt {
                data: job.data.clone(),
                step,
                noise: Self::noise(server, job),
            }),
            Boosting::Evaluate { .. } => None,
        }
    }

    /// On error `self` and `job` are as they were (the boosting server's own absorb leaves
    /// it unchanged on error).
    pub(crate) fn absorb(self, job: &mut Job, sum: &[f64]) -> Result<Stage, (Self, FedError)> {
        match self {
            Boosting::Grow {
                mut server,
                standardizer,
            } => {
                let before = server.trees_done();
                let kind = server.next_kind();
                let noise = Self::noise(&server, job);
                // A noised fine histogram is read as counts above its noise floor.
                let floored;
                let sum = match (kind, &noise) {
                    (Some(StepKind::FineHistogram), Some(n)) => {
                        let width = server.params().fine_bins + 1;
                        floored = floor_noised_counts(sum, width, n.stddev);
                        &floored[..]
                    }
                    _ => sum,
                };
                if let Err(e) = server.absorb(sum) {
                    let e = FedError::from(e);
                    return Err((
                        Boosting::Grow {
                            server,
                            standardizer,
                        },
                        e,
                    ));
                }
                if matches!(kind, Some(StepKind::Level | StepKind::Leaves)) && noise.is_some() {
                    job.dp_rounds += 1;
                }
                if server.trees_done() > before {
                    job.curve.push(CurvePoint {
                        round: server.trees_done() as u64,
                        train_loss: None,
                        holdout: None,
                    });
                }
                if !server.is_done() {
                    return Ok(Stage::Gbdt(Boosting::Grow {
                        server,
                        standardizer,
                    }));
                }
                let trees = server.trees_done() as u64;
                // A finished server holds its model (cloned once per job, at the end).
                let Some(model) = server.model().cloned() else {
                    return Err((
                        Boosting::Grow {
                            server,
                            standardizer,
                        },
                        FedError::Internal("boosting finished without a model"),
                    ));
                };
                Ok(Stage::Gbdt(Boosting::Evaluate {
                    model: TrainedModel {
                        features: job.data.features.clone(),
                        labels: job.data.labels.clone(),
                        standardizer,
                        params: ModelParams::Gbdt { model },
                    },
                    trees,
                }))
            }
            Boosting::Evaluate { model, trees } => match evaluate::absorb(job, sum, trees) {
                Ok(evaluation) => {
                    evaluate::record(job, evaluation);
                    Ok(Stage::Done(Done {
                        model: Some(model),
                        rounds: trees,
                    }))
                }
                Err(e) => Err((Boosting::Evaluate { model, trees }, e)),
            },
        }
    }

    /// Stopped early (e.g. the privacy budget is spent): the trees finished so far are
    /// still evaluated as the model; a tree half grown is dropped.
    pub(crate) fn finish(self, job: &Job) -> Stage {
        match self {
            Boosting::Evaluate { .. } => Stage::Gbdt(self),
            Boosting::Grow {
                server,
                standardizer,
            } => match server.finished_trees() {
                Some(model) => Stage::Gbdt(Boosting::Evaluate {
                    trees: model.trees.len() as u64,
                    model: TrainedModel {
                        features: job.data.features.clone(),
                        labels: job.data.labels.clone(),
                        standardizer,
                        params: ModelParams::Gbdt {
                            model: model.clone(),
                        },
                    },
                }),
                None => Stage::Done(Done {
                    model: None,
                    rounds: 0,
                }),
            },
        }
    }
}
