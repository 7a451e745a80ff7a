//! The prelude every family starts with: federation-wide row and label counts, a scale per
//! feature from masked log-magnitude histograms, then the global moments every participant
//! standardises with (nobody reveals its own).
//!
//! `Scale` → `Moments` → the model family's first stage ([`Stage::after_prelude`]).

use serde::{Deserialize, Serialize};

use super::{Job, Shape, Stage, Totals};
use crate::error::FedError;
use crate::instruction::{mag_upper, Instruction, MAG_BINS, MOMENT_CLIP};
use crate::model::Standardizer;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Prelude {
    /// Counts and magnitude histograms.
    Scale,
    /// Σx/s and Σ(x/s)² per feature, with the scales the first step chose.
    Moments { scales: Vec<f64> },
}

impl Prelude {
    pub(crate) fn shape(&self, job: &Job) -> Shape {
        let f = job.data.features.len();
        let l = job.data.labels.len();
        match self {
            // Row counts of one institution: up to a billion.
            Prelude::Scale => Shape::new(1 + l + f * (1 + MAG_BINS), 1e9),
            Prelude::Moments { .. } => {
                Shape::new(2 * f, job.rows_bound() * MOMENT_CLIP * MOMENT_CLIP)
            }
        }
    }

    pub(crate) fn next(&self, job: &Job) -> Instruction {
        let data = job.data.clone();
        match self {
            Prelude::Scale => Instruction::Scale { data },
            Prelude::Moments { scales } => Instruction::Moments {
                data,
                scales: scales.clone(),
            },
        }
    }

    /// On error `self` and `job` are as they were.
    pub(crate) fn absorb(self, job: &mut Job, sum: &[f64]) -> Result<Stage, (Self, FedError)> {
        match self {
            Prelude::Scale => match scales(job, sum) {
                Ok((totals, scales)) => {
                    job.totals = totals;
                    Ok(Stage::Prelude(Prelude::Moments { scales }))
                }
                Err(e) => Err((Prelude::Scale, e)),
            },
            Prelude::Moments { scales } => {
                let standardizer = moments(job, &scales, sum);
                Stage::after_prelude(job, standardizer)
                    .map_err(|e| (Prelude::Moments { scales }, e))
            }
        }
    }
}

/// The federation's counts and a scale per feature: the upper edge of the bin holding the
/// 99.9th percentile of its magnitudes.
fn scales(job: &Job, sum: &[f64]) -> Result<(Totals, Vec<f64>), FedError> {
    let f = job.data.features.len();
    let l = job.data.labels.len();
    let rows = sum[0].round();
    if rows < 1.0 {
        return Err(FedError::NoRows);
    }
    let positives: Vec<f64> = sum[1..1 + l].iter().map(|v| v.round()).collect();
    for (name, &pos) in job.data.labels.iter().zip(&positives) {
        if pos < 1.0 || pos >= rows {
            return Err(FedError::OneClass {
                label: name.clone(),
                positives: pos,
                rows,
            });
        }
    }
    let base = 1 + l;
    let mut scales = Vec::with_capacity(f);
    let mut observed = Vec::with_capacity(f);
    for j in 0..f {
        let o = base + j * (1 + MAG_BINS);
        let obs = sum[o].round().max(0.0);
        observed.push(obs);
        let target = 0.999 * obs;
        let mut acc = 0.0;
        let mut scale = 1.0;
        for b in 0..MAG_BINS {
            acc += sum[o + 1 + b].max(0.0);
            if acc >= target {
                scale = mag_upper(b);
                break;
            }
        }
        scales.push(scale);
    }
    Ok((
        Totals {
            rows,
            positives,
            observed,
        },
        scales,
    ))
}

/// Global means, deviations and missing rates from the summed moments.
fn moments(job: &Job, scales: &[f64], sum: &[f64]) -> Standardizer {
    let f = job.data.features.len();
    let mut mean = Vec::with_capacity(f);
    let mut std = Vec::with_capacity(f);
    let mut missing = Vec::with_capacity(f);
    for (j, &s) in scales.iter().enumerate().take(f) {
        let observed = job.totals.observed.get(j).copied().unwrap_or(0.0);
        let n = observed.max(1.0);
        let m = sum[2 * j] / n;
        let var = (sum[2 * j + 1] / n - m * m).max(0.0);
        mean.push(m * s);
        let sd = var.sqrt() * s;
        std.push(if sd > 1e-12 { sd } else { 1.0 });
        missing.push(1.0 - observed / job.totals.rows);
    }
    Standardizer {
        mean,
        std,
        missing_rate: missing,
    }
}
