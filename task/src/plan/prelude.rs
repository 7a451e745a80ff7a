//! The prelude every family starts with: federation-wide row and label counts, a scale per
//! feature from masked log-magnitude histograms, then the global moments every participant
//! standardises with (nobody reveals its own).
//!
//! `Scale` → `Moments` → the model family's first stage ([`Stage::after_prelude`]).

use serde::{Deserialize, Serialize};

use super::{Job, Shape, Stage, Totals};
use crate::error::FedError;
use crate::instruction::{mag_upper, Instruction, NoiseSpec, MAG_BINS, MOMENT_CLIP};
use crate::model::Standardizer;
use crate::privacy::{
    count_noise, moments_sensitivity, record_level, scale_sensitivity, DP_MOMENT_CLIP,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Prelude {
    /// Counts and magnitude histograms.
    Scale,
    /// Σx/s and Σ(x/s)² per feature, with the scales the first step chose.
    Moments { scales: Vec<f64> },
}

/// Record-level DP jobs noise the prelude: the noise each step's sum carries.
fn noise(job: &Job, prelude: &Prelude) -> Option<NoiseSpec> {
    let f = job.data.features.len();
    match prelude {
        Prelude::Scale => count_noise(&job.spec, 1.0, scale_sensitivity(job.data.labels.len(), f)),
        Prelude::Moments { .. } => count_noise(&job.spec, DP_MOMENT_CLIP, moments_sensitivity(f)),
    }
}

impl Prelude {
    pub(crate) fn shape(&self, job: &Job) -> Shape {
        let f = job.data.features.len();
        let l = job.data.labels.len();
        // Noise is added after encoding: the range covers a 20σ tail of it.
        let tail = noise(job, self).map_or(0.0, |n| 20.0 * n.stddev);
        match self {
            // Row counts of one institution: up to a billion.
            Prelude::Scale => Shape::new(1 + l + f * (1 + MAG_BINS), 1e9 + tail),
            Prelude::Moments { .. } => {
                let clip = if tail > 0.0 {
                    DP_MOMENT_CLIP
                } else {
                    MOMENT_CLIP
                };
                Shape::new(2 * f, job.rows_bound() * clip * clip + tail)
            }
        }
    }

    pub(crate) fn next(&self, job: &Job) -> Instruction {
        let data = job.data.clone();
        let noise = noise(job, self);
        match self {
            Prelude::Scale => Instruction::Scale { data, noise },
            Prelude::Moments { scales } => Instruction::Moments {
                data,
                scales: scales.clone(),
                noise,
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
    // Noised counts (record-level DP): a bin below 3σ of the noise counts as empty (an empty
    // bin's noise would otherwise look like a few rows of huge magnitude) and the scale is the
    // 99th percentile's bin; exact counts: the 99.9th.
    let (floor, quantile) = match noise(job, &Prelude::Scale) {
        Some(n) => (5.0 * n.stddev, 0.99),
        None => (0.0, 0.999),
    };
    let noisy = floor > 0.0;
    let kept = |v: f64| if v > floor { v } else { 0.0 };
    let mut scales = Vec::with_capacity(f);
    let mut observed = Vec::with_capacity(f);
    for j in 0..f {
        let o = base + j * (1 + MAG_BINS);
        let obs = sum[o].round().max(0.0);
        observed.push(obs);
        // Noised: a bin below 5σ of the noise is empty (an empty bin's noise would otherwise
        // read as rows of huge magnitude), and bin 0 (|x| < 1e-6: zeros) says nothing about
        // a feature's magnitude, so it is left out.
        let first = usize::from(noisy);
        let binned: f64 = (first..MAG_BINS).map(|b| kept(sum[o + 1 + b])).sum();
        if noisy && binned <= 0.0 {
            // No bin stands out of the noise: no magnitude to read; the unit scale.
            scales.push(1.0);
            continue;
        }
        let target = quantile * if noisy { binned } else { binned.min(obs) };
        let mut acc = 0.0;
        let mut scale = 1.0;
        for b in first..MAG_BINS {
            acc += kept(sum[o + 1 + b]);
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
    // Noised sums (record-level DP): the moments of values clipped to ±B are kept where
    // clipped values can have them (|mean| ≤ B, deviation in [B/10, B]: the floor keeps a
    // feature whose noise swamped its spread from being scaled up a million-fold), and the
    // missing rate in [0, 1].
    let noisy = record_level(&job.spec).is_some();
    let b = DP_MOMENT_CLIP;
    for (j, &s) in scales.iter().enumerate().take(f) {
        let observed = job.totals.observed.get(j).copied().unwrap_or(0.0);
        let n = observed.max(1.0);
        let mut m = sum[2 * j] / n;
        let mut var = (sum[2 * j + 1] / n - m * m).max(0.0);
        if noisy {
            m = m.clamp(-b, b);
            var = var.clamp((0.1 * b).powi(2), b * b);
        }
        mean.push(m * s);
        let sd = var.sqrt() * s;
        std.push(if sd > 1e-12 { sd } else { 1.0 });
        let miss = 1.0 - observed / job.totals.rows;
        missing.push(if noisy { miss.clamp(0.0, 1.0) } else { miss });
    }
    Standardizer {
        mean,
        std,
        missing_rate: missing,
    }
}
