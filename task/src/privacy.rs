//! What a job's differential privacy spends, at each level, and the σ a record-level job
//! calibrates for its budget. The coordinator, the model file and the report read ε from here
//! and nowhere else.
//!
//! Releases of a job with `dp`:
//! - **institution level**: `rounds` releases of the Gaussian mechanism on the sum of the
//!   participants' clipped updates (every participant every round; no sampling). The prelude's
//!   counts and moments and the evaluation's hold-out statistics are released exactly; the
//!   guarantee covers the training updates.
//! - **record level**: the prelude's two releases (counts, moments) carry Gaussian noise of
//!   multiplier [`PRELUDE_NOISE_MULTIPLIER`] on their per-record sensitivity; then `rounds`
//!   releases of the Poisson-subsampled Gaussian mechanism (each row of each participant in a
//!   round with probability `sampling_rate`, its gradient clipped to `clip`, noise σ·clip on
//!   the federation-wide sum). The evaluation's statistics are computed on the hold-out rows,
//!   which never train: they are released exactly, and the guarantee is about the training
//!   records.
//!
//! The noise is a distributed discrete Gaussian whose integer-domain share is ≥ 2^15 units in
//! every round (the engine chooses the fixed-point scale so); at that scale the extra terms of
//! Kairouz–Liu–Steinke 2021 (Thm 1) are below 1e-300 and the sum is accounted as the
//! continuous Gaussian it approximates.

use fedsilo_ml::dp::{calibrate_noise_multiplier, DpError, Mechanism, RdpAccountant};

use crate::spec::{DpLevel, DpSpec};

/// Noise multiplier of the record-level prelude's two releases (counts, moments): cheap in ε
/// (2 · α/(2·8²) of RDP) and noise far below the sums on a few thousand rows.
pub const PRELUDE_NOISE_MULTIPLIER: f64 = 8.0;
/// Releases of the record-level prelude.
pub const PRELUDE_RELEASES: u64 = 2;
/// Record-level moments: each standardised value `x/s` is clipped to ±this (its scale is the
/// upper edge of the magnitude bin holding the 99th percentile, so few values reach it).
pub const DP_MOMENT_CLIP: f64 = 1.0;

/// ε spent at δ, at both levels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spent {
    /// Can anyone tell whether one customer's record was used?
    pub record: f64,
    /// Can anyone tell whether one institution took part? `f64::INFINITY` when nothing is
    /// promised (record-level jobs: a participant's sum over its sampled rows is not bounded
    /// by the clip).
    pub institution: f64,
}

impl Spent {
    /// ε at the level the job's budget is for.
    pub fn at(&self, level: DpLevel) -> f64 {
        match level {
            DpLevel::Record => self.record,
            DpLevel::Institution => self.institution,
        }
    }
}

/// Per-record L2 sensitivity of the record-level `Scale` step: one row adds 1 to the row
/// count, at most 1 to each label's positives, and to each feature's observed count and one
/// of its magnitude bins.
pub fn scale_sensitivity(labels: usize, features: usize) -> f64 {
    ((1 + labels + 2 * features) as f64).sqrt()
}

/// Per-record L2 sensitivity of the record-level `Moments` step: `x/s` and `(x/s)²` of each
/// feature, `x/s` clipped to ±[`DP_MOMENT_CLIP`].
pub fn moments_sensitivity(features: usize) -> f64 {
    let b = DP_MOMENT_CLIP;
    (features as f64 * (b * b + b.powi(4))).sqrt()
}

fn prelude() -> Mechanism {
    Mechanism::Gaussian {
        noise_multiplier: PRELUDE_NOISE_MULTIPLIER,
    }
}

/// The record-level accountant after the prelude and `rounds` training rounds at σ.
fn record_accountant(q: f64, sigma: f64, rounds: u64) -> Result<RdpAccountant, DpError> {
    let mut acc = RdpAccountant::with_sampled_orders();
    acc.compose(&prelude(), PRELUDE_RELEASES)?;
    acc.compose(
        &Mechanism::SampledGaussian {
            sampling_rate: q,
            noise_multiplier: sigma,
        },
        rounds,
    )?;
    Ok(acc)
}

/// ε after `rounds` noisy training rounds (∞ where the parameters cannot be accounted).
pub fn spent(dp: &DpSpec, rounds: u64) -> Spent {
    let eps = |acc: Result<RdpAccountant, DpError>| {
        acc.and_then(|a| a.epsilon(dp.delta))
            .map(|(e, _)| e)
            .unwrap_or(f64::INFINITY)
    };
    match dp.level {
        DpLevel::Institution => {
            let mut acc = RdpAccountant::new();
            let e = eps(acc.compose_gaussian(dp.sigma(), rounds).map(|()| acc));
            // One record moves its institution's clipped update by at most the clip: the
            // institution-level bound holds for every record too.
            Spent {
                record: e,
                institution: e,
            }
        }
        DpLevel::Record => Spent {
            record: eps(record_accountant(dp.q(), dp.sigma(), rounds)),
            institution: f64::INFINITY,
        },
    }
}

/// Whether one more round would take the job past its budget (false without one).
pub fn next_round_exceeds(dp: &DpSpec, rounds_done: u64) -> bool {
    match dp.epsilon_budget {
        Some(budget) => spent(dp, rounds_done + 1).at(dp.level) > budget,
        None => false,
    }
}

/// Record level without a noise multiplier: the smallest σ with which the prelude and
/// `rounds` rounds stay within the budget (the search: [`calibrate_noise_multiplier`]).
/// Returns the configured σ when there is one.
pub fn resolve_sigma(dp: &DpSpec, rounds: u64) -> Result<f64, DpError> {
    if let Some(s) = dp.noise_multiplier {
        return Ok(s);
    }
    let budget = dp.epsilon_budget.unwrap_or(f64::INFINITY);
    calibrate_noise_multiplier(
        dp.q(),
        rounds,
        budget,
        dp.delta,
        &[(prelude(), PRELUDE_RELEASES)],
    )
}
