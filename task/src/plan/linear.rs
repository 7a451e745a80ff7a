//! Federated averaging of a parametric model: logistic regression, an MLP, or the
//! regression on a scorecard's WOE columns.
//!
//! `Train` × rounds (each participant returns n_k·(w_k − w) and n_k, or with differential
//! privacy its clipped, unweighted update plus integer noise; the server optimiser applies
//! the average), with an `Evaluate` every `eval_every` rounds and at the end.

use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use fedsilo_ml::linear::{LinearParams, LocalTrainConfig};
use fedsilo_ml::mlp::{MlpParams, MlpSpec};
use fedsilo_ml::optim::OptimizerState;

use super::{evaluate, CurvePoint, Done, Job, Shape, Stage};
use crate::error::FedError;
use crate::instruction::{Instruction, NoiseSpec, DELTA_CLIP, LOSS_CAP};
use crate::model::{ModelParams, Standardizer, TrainedModel};
use crate::spec::{DpLevel, ModelSpec};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Linear {
    model: TrainedModel,
    optimizer: OptimizerState,
    phase: Phase,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
enum Phase {
    /// The next step trains round `round + 1`.
    Train { round: u64 },
    /// The next step evaluates the model after `after_round` rounds.
    Evaluate { after_round: u64 },
}

/// Where a restored linear stage resumes.
pub(super) enum Resume {
    Train { round: u64 },
    Evaluate { after_round: u64 },
}

impl Linear {
    /// A logistic regression or MLP, initialised from the job's seed.
    pub(crate) fn new(job: &Job, standardizer: Standardizer) -> Result<Self, FedError> {
        let f = job.data.features.len();
        let l = job.data.labels.len();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(job.spec.seed);
        let params = match &job.spec.model {
            ModelSpec::LogisticRegression => ModelParams::LogisticRegression {
                per_label: (0..l).map(|_| LinearParams::zeros(f)).collect(),
            },
            ModelSpec::Mlp { hidden } => ModelParams::Mlp {
                per_label: (0..l)
                    .map(|_| {
                        MlpParams::init(
                            MlpSpec {
                                inputs: f,
                                hidden: hidden.clone(),
                            },
                            &mut rng,
                        )
                    })
                    .collect(),
            },
            other => {
                return Err(FedError::Spec(format!(
                    "model: a {} job is not trained by federated averaging from scratch",
                    other.kind_name()
                )))
            }
        };
        Ok(Self::with_params(job, standardizer, params))
    }

    /// Federated averaging from given parameters (a scorecard's regression starts at zero
    /// on its WOE columns).
    pub(crate) fn with_params(job: &Job, standardizer: Standardizer, params: ModelParams) -> Self {
        let optimizer = OptimizerState::new(&job.spec.learning.server_optimizer, params.dim());
        Linear {
            model: TrainedModel {
                features: job.data.features.clone(),
                labels: job.data.labels.clone(),
                standardizer,
                params,
            },
            optimizer,
            phase: Phase::Train { round: 0 },
        }
    }

    /// A linear stage from an old-format checkpoint ([`super::legacy`]).
    pub(super) fn restore(model: TrainedModel, optimizer: OptimizerState, at: Resume) -> Self {
        let phase = match at {
            Resume::Train { round } => Phase::Train { round },
            Resume::Evaluate { after_round } => Phase::Evaluate { after_round },
        };
        Linear {
            model,
            optimizer,
            phase,
        }
    }

    pub(crate) fn model(&self) -> &TrainedModel {
        &self.model
    }

    pub(crate) fn rounds_done(&self) -> u64 {
        match self.phase {
            Phase::Train { round } => round,
            Phase::Evaluate { after_round } => after_round,
        }
    }

    pub(crate) fn shape(&self, job: &Job) -> Shape {
        match self.phase {
            Phase::Train { .. } => {
                let dim = self.model.params.dim();
                match &job.spec.dp {
                    None => Shape::new(dim + 2, job.rows_bound() * DELTA_CLIP.max(LOSS_CAP)),
                    // Values are clipped to `clip`; the noise is added in the integer domain
                    // after encoding, so the bound covers value + a 20σ tail.
                    Some(dp) if dp.level == DpLevel::Institution => {
                        Shape::new(dim + 1, dp.clip + 20.0 * dp.sigma() * dp.clip)
                    }
                    // A sum of at most all of a participant's rows' clipped gradients.
                    Some(dp) => Shape::new(
                        dim,
                        job.rows_bound() * dp.clip + 20.0 * dp.sigma() * dp.clip,
                    ),
                }
            }
            Phase::Evaluate { .. } => evaluate::shape(job),
        }
    }

    pub(crate) fn next(&self, job: &Job) -> Instruction {
        match self.phase {
            Phase::Train { round } => {
                let lr = &job.spec.learning;
                let local = LocalTrainConfig {
                    epochs: lr.local_epochs,
                    learning_rate: lr.learning_rate,
                    batch_size: lr.batch_size,
                    l2: lr.l2,
                    pos_weight: lr.pos_weight.unwrap_or(1.0),
                    prox_mu: lr.prox_mu,
                };
                let noise = job.spec.dp.as_ref().map(|dp| NoiseSpec {
                    clip: dp.clip,
                    stddev: dp.sigma() * dp.clip,
                    sampling_rate: match dp.level {
                        DpLevel::Record => Some(dp.q()),
                        DpLevel::Institution => None,
                    },
                });
                Instruction::Train {
                    data: job.data.clone(),
                    model: self.model.clone(),
                    local,
                    seed: job.spec.seed ^ (round.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    noise,
                }
            }
            Phase::Evaluate { .. } => evaluate::next(job, &self.model),
        }
    }

    /// On error `self` and `job` are as they were.
    pub(crate) fn absorb(mut self, job: &mut Job, sum: &[f64]) -> Result<Stage, (Self, FedError)> {
        match self.phase {
            Phase::Train { round } => match self.train(job, round, sum) {
                Ok((params, optimizer, loss)) => {
                    self.model.params = params;
                    self.optimizer = optimizer;
                    if job.spec.dp.is_some() {
                        job.dp_rounds += 1;
                    }
                    let done = round + 1;
                    job.curve.push(CurvePoint {
                        round: done,
                        train_loss: loss,
                        holdout: None,
                    });
                    self.phase = if done % job.spec.eval_every == 0 || done >= job.spec.rounds {
                        Phase::Evaluate { after_round: done }
                    } else {
                        Phase::Train { round: done }
                    };
                    Ok(Stage::Linear(self))
                }
                Err(e) => Err((self, e)),
            },
            Phase::Evaluate { after_round } => match evaluate::absorb(job, sum, after_round) {
                Ok(evaluation) => {
                    evaluate::record(job, evaluation);
                    if after_round >= job.spec.rounds || job.stopped_early.is_some() {
                        Ok(Stage::Done(Done {
                            model: Some(self.model),
                            rounds: after_round,
                        }))
                    } else {
                        self.phase = Phase::Train { round: after_round };
                        Ok(Stage::Linear(self))
                    }
                }
                Err(e) => Err((self, e)),
            },
        }
    }

    /// The averaged update applied by the server optimiser, without touching `self`.
    fn train(
        &self,
        job: &Job,
        round: u64,
        sum: &[f64],
    ) -> Result<(ModelParams, OptimizerState, Option<f64>), FedError> {
        let dim = self.model.params.dim();
        let l = job.data.labels.len();
        let (avg, loss) = match &job.spec.dp {
            None => {
                let n = sum[dim];
                if n < 1.0 {
                    return Err(FedError::NoContributors { step: job.step });
                }
                let avg: Vec<f64> = sum[..dim].iter().map(|v| v / n).collect();
                (avg, Some(sum[dim + 1] / (n * l as f64)))
            }
            Some(dp) if dp.level == DpLevel::Institution => {
                let c = sum[dim].round().max(1.0);
                (sum[..dim].iter().map(|v| v / c).collect(), None)
            }
            Some(dp) => {
                // One DP-SGD step: the noised sum of clipped gradients over the expected
                // batch (q × the prelude's noised row count), plus the ridge term, as a
                // model delta for the server optimiser.
                let batch = (dp.q() * job.totals.rows).max(1.0);
                let lr = &job.spec.learning;
                let w = self.model.params.flat();
                let delta = sum[..dim]
                    .iter()
                    .zip(&w)
                    .map(|(g, w)| -lr.learning_rate * (g / batch + lr.l2 * w))
                    .collect();
                (delta, None)
            }
        };
        let mut flat = self.model.params.flat();
        let mut optimizer = self.optimizer.clone();
        optimizer.step(&job.spec.learning.server_optimizer, &mut flat, &avg);
        if flat.iter().any(|v| !v.is_finite()) {
            return Err(FedError::Diverged { round });
        }
        let mut params = self.model.params.clone();
        params.set_flat(&flat)?;
        Ok((params, optimizer, loss))
    }

    /// Stopped early: evaluate what was trained, then end.
    pub(crate) fn finish(mut self) -> Stage {
        if let Phase::Train { round } = self.phase {
            self.phase = Phase::Evaluate { after_round: round };
        }
        Stage::Linear(self)
    }
}
