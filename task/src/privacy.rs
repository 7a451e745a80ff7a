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
//!   multiplier `dp.count_noise_multiplier` ([`DEFAULT_COUNT_NOISE_MULTIPLIER`]) on their
//!   per-record sensitivity (a scorecard's
//!   binning adds two more such count releases: its fine histogram and good/bad counts); then `rounds`
//!   releases of the Poisson-subsampled Gaussian mechanism (each row of each participant in a
//!   round with probability `sampling_rate`, its gradient clipped to `clip`, noise σ·clip on
//!   the federation-wide sum). Boosted trees add their bin agreement's fine histogram (noised
//!   like the prelude) and make one training release per tree level and one per tree for its
//!   leaf sums, at most [`training_releases`]: every row in the step's sample with
//!   probability `sampling_rate`, its clipped (gradient, hessian) in one bin per feature (a
//!   level) or in its leaf. The evaluation's statistics are computed on the hold-out rows,
//!   which never train: they are released exactly, and the guarantee is about the training
//!   records.
//!
//! The noise is a distributed discrete Gaussian whose integer-domain share is ≥ 2^15 units in
//! every round (the engine chooses the fixed-point scale so); at that scale the extra terms of
//! Kairouz–Liu–Steinke 2021 (Thm 1) are below 1e-300 and the sum is accounted as the
//! continuous Gaussian it approximates.

use fedsilo_ml::dp::{calibrate_noise_multiplier, DpError, Mechanism, RdpAccountant};

use crate::instruction::NoiseSpec;
use crate::spec::{DpLevel, DpSpec, JobSpec, ModelSpec};

/// Noise multiplier of a record-level job's count releases (the prelude's counts and moments,
/// a scorecard's bin and good/bad counts, a GBDT's fine histogram) unless its
/// `dp.count_noise_multiplier` says otherwise: cheap in ε (α/(2·8²) of RDP each) and noise
/// far below the sums on a few thousand rows.
pub const DEFAULT_COUNT_NOISE_MULTIPLIER: f64 = 8.0;
/// Releases of the record-level prelude.
pub const PRELUDE_RELEASES: u64 = 2;
/// Releases of a record-level scorecard's binning (fine histogram, good/bad counts), noised
/// like the prelude's.
pub const SCORECARD_RELEASES: u64 = 2;
/// Releases of a record-level GBDT's bin agreement (its fine histogram; the statistics are
/// the prelude's), noised like the prelude's.
pub const GBDT_BIN_RELEASES: u64 = 1;
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

/// One count release of a record-level job.
fn count_release(dp: &DpSpec) -> Mechanism {
    Mechanism::Gaussian {
        noise_multiplier: dp.count_sigma(),
    }
}

/// The record-level accountant after the prelude and `rounds` training rounds at σ.
fn record_accountant(
    counts: &Mechanism,
    fixed: u64,
    q: f64,
    sigma: f64,
    rounds: u64,
) -> Result<RdpAccountant, DpError> {
    let mut acc = RdpAccountant::with_sampled_orders();
    acc.compose(counts, fixed)?;
    acc.compose(
        &Mechanism::SampledGaussian {
            sampling_rate: q,
            noise_multiplier: sigma,
        },
        rounds,
    )?;
    Ok(acc)
}

/// Count releases a record-level job makes besides its training rounds: the prelude's two
/// and, for a scorecard, its binning's two (fine histogram, good/bad counts); for boosted
/// trees the fine histogram of the bin agreement.
fn fixed_releases(spec: &JobSpec) -> u64 {
    PRELUDE_RELEASES
        + match spec.model {
            ModelSpec::Scorecard(_) => SCORECARD_RELEASES,
            ModelSpec::Gbdt(_) => GBDT_BIN_RELEASES,
            _ => 0,
        }
}

/// Training releases a DP job makes at most: `rounds` for gradient models (a scorecard's
/// regression included); for boosted trees one per tree level and one for each tree's leaf
/// sums, `n_trees × (max_depth + 1)` (a tree that stops early makes fewer).
pub fn training_releases(spec: &JobSpec) -> u64 {
    match &spec.model {
        ModelSpec::Gbdt(p) => (p.n_trees as u64).saturating_mul(p.max_depth as u64 + 1),
        _ => spec.rounds,
    }
}

/// The noise of a record-level tree's leaf sums: σ on one row's clipped (gradient,
/// hessian) pair (a row is in one leaf), sampled like a level. `None` for other jobs.
pub(crate) fn leaf_noise(spec: &JobSpec) -> Option<NoiseSpec> {
    let dp = record_level(spec)?;
    Some(NoiseSpec {
        clip: dp.clip,
        stddev: dp.sigma() * fedsilo_ml::gbdt::LevelSample::pair_bound(dp.clip),
        sampling_rate: Some(dp.q()),
    })
}

/// Per-record L2 sensitivity of a record-level tree level: one sampled row sits in one open
/// node and adds its clipped (gradient, hessian) pair to one bin of each feature.
pub fn level_sensitivity(features: usize, clip: f64) -> f64 {
    (features as f64).sqrt() * fedsilo_ml::gbdt::LevelSample::pair_bound(clip)
}

/// The noise of a record-level tree level: σ on [`level_sensitivity`], each row of each
/// participant in the level's sample with probability `q`. `None` for other jobs.
pub(crate) fn level_noise(spec: &JobSpec, features: usize) -> Option<NoiseSpec> {
    let dp = record_level(spec)?;
    Some(NoiseSpec {
        clip: dp.clip,
        stddev: dp.sigma() * level_sensitivity(features, dp.clip),
        sampling_rate: Some(dp.q()),
    })
}

/// A noised fine histogram (`width` slots per feature) read as counts, for choosing cut
/// points: negative counts are 0, and a count below `NOISE_FLOOR` standard deviations of its
/// noise is taken as empty (an empty bin would otherwise look occupied half the time, and
/// the cut points follow the noise) — unless that would drop most of a feature's mass (its
/// rows spread thinner than the noise over many fine bins), where the floor would leave
/// nothing to cut. Post-processing: it spends nothing.
pub(crate) fn floor_noised_counts(sum: &[f64], width: usize, stddev: f64) -> Vec<f64> {
    let floor = NOISE_FLOOR * stddev;
    let mut out: Vec<f64> = sum.iter().map(|&v| v.max(0.0)).collect();
    for feature in out.chunks_mut(width.max(1)) {
        let total: f64 = feature.iter().sum();
        let kept: f64 = feature.iter().filter(|&&v| v >= floor).sum();
        if kept >= 0.5 * total {
            feature
                .iter_mut()
                .filter(|v| **v < floor)
                .for_each(|v| *v = 0.0);
        }
    }
    out
}

/// See [`floor_noised_counts`].
pub const NOISE_FLOOR: f64 = 3.0;

/// The job's DP spec when it protects records (its count releases are then noised).
pub(crate) fn record_level(spec: &JobSpec) -> Option<&DpSpec> {
    spec.dp.as_ref().filter(|d| d.level == DpLevel::Record)
}

/// The noise of a record-level count release whose per-record L2 sensitivity is
/// `sensitivity` (`None` for other jobs: those releases are exact).
pub(crate) fn count_noise(spec: &JobSpec, clip: f64, sensitivity: f64) -> Option<NoiseSpec> {
    let dp = record_level(spec)?;
    Some(NoiseSpec {
        clip,
        stddev: dp.count_sigma() * sensitivity,
        sampling_rate: None,
    })
}

/// ε after `rounds` noisy training rounds (∞ where the parameters cannot be accounted);
/// `None` for a job without DP.
pub fn spent(spec: &JobSpec, rounds: u64) -> Option<Spent> {
    spent_with_unused(spec, rounds, 0)
}

/// [`spent`] with `unused_counts` noised count releases beyond the job's fixed ones (sums the
/// coordinator unmasked and refused, then asked for again).
pub fn spent_with_unused(spec: &JobSpec, rounds: u64, unused_counts: u64) -> Option<Spent> {
    let dp = spec.dp.as_ref()?;
    let eps = |acc: Result<RdpAccountant, DpError>| {
        acc.and_then(|a| a.epsilon(dp.delta))
            .map(|(e, _)| e)
            .unwrap_or(f64::INFINITY)
    };
    Some(match dp.level {
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
            record: eps(record_accountant(
                &count_release(dp),
                fixed_releases(spec).saturating_add(unused_counts),
                dp.q(),
                dp.sigma(),
                rounds,
            )),
            institution: f64::INFINITY,
        },
    })
}

/// Whether one more round would take the job past its budget (false without one).
pub fn next_round_exceeds(spec: &JobSpec, rounds_done: u64) -> bool {
    let (Some(dp), Some(spent)) = (spec.dp.as_ref(), spent(spec, rounds_done + 1)) else {
        return false;
    };
    match dp.epsilon_budget {
        Some(budget) => spent.at(dp.level) > budget,
        None => false,
    }
}

/// Record level without a noise multiplier: the smallest σ with which the count releases and
/// the job's [`training_releases`] stay within the budget (the search:
/// [`calibrate_noise_multiplier`]). Returns the configured σ when there is one, `None` for a
/// job without DP.
pub fn resolve_sigma(spec: &JobSpec) -> Option<Result<f64, DpError>> {
    let dp = spec.dp.as_ref()?;
    if let Some(s) = dp.noise_multiplier {
        return Some(Ok(s));
    }
    let budget = dp.epsilon_budget.unwrap_or(f64::INFINITY);
    Some(calibrate_noise_multiplier(
        dp.q(),
        training_releases(spec),
        budget,
        dp.delta,
        &[(count_release(dp), fixed_releases(spec))],
    ))
}
