//! A credit scorecard: a masked fine histogram per feature → quantile bins; masked good/bad
//! counts per bin → WOE/IV and feature selection; then federated averaging of the
//! regression on the WOE columns ([`super::linear`]) and points scaling.

use serde::{Deserialize, Serialize};

use fedsilo_ml::scorecard::{histogram_ranges, woe_iv, Scorecard, ScorecardBins, ScorecardSpec};

use super::linear::Linear;
use super::{Done, Job, Shape, Stage};
use crate::error::FedError;
use crate::instruction::{Instruction, NoiseSpec};
use crate::model::{ModelParams, Standardizer};
use crate::privacy::{count_noise, floor_noised_counts};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Binning {
    spec: ScorecardSpec,
    /// The prelude's standardiser, kept for the model's description.
    standardizer: Standardizer,
    phase: Phase,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Phase {
    /// Counts over `fine_bins` equal-width bins of each feature's range (plus missing).
    Histogram { ranges: Vec<(f32, f32)> },
    /// Good/bad counts per feature and bin.
    Counts { bins: ScorecardBins },
}

/// Where a restored binning stage resumes.
pub(super) enum Resume {
    Histogram { ranges: Vec<(f32, f32)> },
    Counts { bins: ScorecardBins },
}

impl Binning {
    pub(crate) fn new(spec: &ScorecardSpec, standardizer: Standardizer) -> Self {
        let ranges = histogram_ranges(&standardizer.mean, &standardizer.std, spec.range_sd);
        Binning {
            spec: spec.clone(),
            standardizer,
            phase: Phase::Histogram { ranges },
        }
    }

    /// A binning stage from an old-format checkpoint ([`super::legacy`]).
    pub(super) fn restore(spec: ScorecardSpec, standardizer: Standardizer, at: Resume) -> Self {
        let phase = match at {
            Resume::Histogram { ranges } => Phase::Histogram { ranges },
            Resume::Counts { bins } => Phase::Counts { bins },
        };
        Binning {
            spec,
            standardizer,
            phase,
        }
    }

    /// Record-level DP jobs noise both count releases: one row adds 1 to one slot of each
    /// feature (its fine bin or missing; its bin's good or bad count).
    fn noise(job: &Job) -> Option<NoiseSpec> {
        count_noise(&job.spec, 1.0, (job.data.features.len() as f64).sqrt())
    }

    pub(crate) fn shape(&self, job: &Job) -> Shape {
        let f = job.data.features.len();
        // Noise is added after encoding: the range covers a 20σ tail of it.
        let tail = Self::noise(job).map_or(0.0, |n| 20.0 * n.stddev);
        let rows = job.rows_bound() + tail;
        match &self.phase {
            Phase::Histogram { .. } => Shape::new(f * (self.spec.fine_bins + 1), rows),
            Phase::Counts { bins } => Shape::new(bins.counts_len(), rows),
        }
    }

    pub(crate) fn next(&self, job: &Job) -> Instruction {
        let data = job.data.clone();
        let noise = Self::noise(job);
        match &self.phase {
            Phase::Histogram { ranges } => Instruction::ScorecardHistogram {
                data,
                ranges: ranges.clone(),
                fine_bins: self.spec.fine_bins,
                noise,
            },
            Phase::Counts { bins } => Instruction::ScorecardCounts {
                data,
                bins: bins.clone(),
                noise,
            },
        }
    }

    /// On error `self` and `job` are as they were.
    pub(crate) fn absorb(self, job: &mut Job, sum: &[f64]) -> Result<Stage, (Self, FedError)> {
        // Noised counts are read as counts: never below zero; the fine histogram's, which
        // only place cut points, above their noise floor.
        let clamped: Vec<f64>;
        let sum = match (Self::noise(job), &self.phase) {
            (Some(n), Phase::Histogram { .. }) => {
                clamped = floor_noised_counts(sum, self.spec.fine_bins + 1, n.stddev);
                &clamped[..]
            }
            (Some(_), Phase::Counts { .. }) => {
                clamped = sum.iter().map(|v| v.max(0.0)).collect();
                &clamped[..]
            }
            (None, _) => sum,
        };
        match &self.phase {
            Phase::Histogram { ranges } => {
                let bins = ScorecardBins::from_fine_histogram(
                    job.data.features.clone(),
                    sum,
                    ranges,
                    self.spec.fine_bins,
                    self.spec.bins,
                )
                .map_err(FedError::from);
                match bins {
                    Ok(bins) => {
                        let bins = if self.spec.group_categories {
                            bins.with_categories_grouped()
                        } else {
                            bins
                        };
                        Ok(Stage::Scorecard(Binning {
                            phase: Phase::Counts { bins },
                            ..self
                        }))
                    }
                    Err(e) => Err((self, e)),
                }
            }
            Phase::Counts { bins } => match self.card(bins, sum) {
                Ok(card) => {
                    let params = ModelParams::Scorecard {
                        card: Box::new(card),
                    };
                    Ok(Stage::Linear(Linear::with_params(
                        job,
                        self.standardizer,
                        params,
                    )))
                }
                Err(e) => Err((self, e)),
            },
        }
    }

    /// The scorecard with WOE/IV from the summed counts and a zero regression.
    fn card(&self, bins: &ScorecardBins, sum: &[f64]) -> Result<Scorecard, FedError> {
        let woe = woe_iv(sum, bins)?.with_min_iv(self.spec.min_iv);
        let m = woe.selected().len();
        Ok(Scorecard::from_logistic(
            woe,
            &vec![0.0; m],
            0.0,
            self.spec.scaling(),
        )?)
    }

    /// Stopped before a model exists: the job ends without one.
    pub(crate) fn finish(self) -> Stage {
        Stage::Done(Done {
            model: None,
            rounds: 0,
        })
    }
}
