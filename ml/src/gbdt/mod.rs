//! Federated histogram gradient-boosted trees with logistic loss (XGBoost / LightGBM style,
//! level-wise growth), split into a participant half and a server half.
//!
//! Every quantity the server needs is a SUM over rows, hence a sum over participants, so it
//! can be computed under secure aggregation:
//!
//! 1. **Stats** — row count, positive count, and per feature (non-missing count, Σx, Σx²):
//!    the base score (global log-odds) and a range `mean ± range_sd·sd` per feature.
//! 2. **Fine histogram** — per feature, counts over `fine_bins` equal-width bins of that range
//!    (plus a missing slot): the server picks up to `max_bins` quantile cut points per feature
//!    ([`BinMapper::from_fine_histogram`]). Every participant then bins its rows identically.
//!    Steps 1 and 2 are the bin agreement of [`crate::binning`], shared with the scorecard.
//! 3. **Levels** — for each tree and each depth, gradient and hessian histograms
//!    `[node][feature][bin][grad, hess]` of the open nodes ([`level_histograms`]); the server
//!    finds the best split of each node ([`best_splits`]). Only one child of each split is
//!    requested at the next level: the server derives its sibling by subtracting from the
//!    parent's histogram (the "histogram subtraction" trick, on sums), halving the vector.
//!
//! The server driver is [`GbdtServer`] (`next()` → [`GbdtInstruction`], `absorb(sum)`); the
//! participant half is [`gbdt_compute`]. A level instruction comes in two forms: full
//! ([`GbdtInstruction::Level`]: the model so far and the partial tree, so a participant that
//! lost its [`GbdtCache`] computes the same vector) or as a delta on the state the
//! participant kept from the previous step ([`GbdtInstruction::LevelDelta`], [`StateDelta`]:
//! the new splits of the level, or the finished tree), bound by SHA-256 digests to the exact
//! state it builds on and the state it gives ([`StateDigest`]); a participant holding another
//! state refuses it ([`DeltaError`]) and needs the full form. [`fit_pooled`] runs the very same halves with a
//! single participant: the centralised reference.
//!
//! Per-row gradients and hessians are rounded to a 2^-30 grid and summed as integers, which
//! makes every histogram sum exact (and exact as the `f64` sent, below 2^23 rows per node):
//! summed in the clear, the participants' vectors give
//! bit-for-bit the trees of [`fit_pooled`] on the pooled rows, whatever the split of rows, and
//! the derived (subtracted) histograms are exact too. Under secure aggregation the sums also
//! pass through the job's fixed-point encoding, which the coordinator sizes to the round (the
//! narrowest ring holding n participants × the federation's row count: Z_2^32 with 6
//! fractional bits for a level of 5 × 1M rows, 16 for 3 × 2,000); that rounding can move a
//! near-tied split, so production trees match the pooled ones in quality (hold-out AUC equal
//! to 3–4 decimals in the tests and benchmarks), not always bit for bit.
//!
//! Conventions: labels are 0/1 (`f32`); missing values are `NaN`; margins are log-odds of the
//! positive class; node ids are indices into [`Tree::nodes`] (root = 0).
//!
//! The participant's engine (LightGBM's, on our exact sums): rows binned once to `u8`,
//! column-major, and cached; per-row (gradient, hessian) as packed `i32` grid units, computed
//! once per tree; rows kept by node in one index list that each level splits in place
//! (`partition`), so a level reads only the rows of the nodes it asks for; a node's
//! gradients gathered into its row order, then features in groups over blocks of rows, on
//! both cores (`histogram::node_histograms`); a finished tree's leaf values added to the
//! margins through the same partition.
//!
//! Layout: `tree` holds the model and prediction, `histogram` the level histograms and
//! split finding, `partition` the rows by node, `participant` the instructions and
//! [`gbdt_compute`], `server` the
//! [`GbdtServer`] state machine and [`fit_pooled`]; the binning lives in [`crate::binning`].

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::binning::{invalid, BinningError};

mod delta;
mod histogram;
mod participant;
mod partition;
mod predict;
mod server;
#[cfg(test)]
mod tests;
mod tree;

pub use crate::binning::{
    fine_histogram, local_stats, spread_ranges, BinMapper, FeatureStats, MAX_BINS, MAX_FINE_BINS,
};
pub use delta::{state_digest, BoostState, DeltaError, StateDelta, StateDigest};
pub use histogram::{best_splits, level_histograms, Split};
pub use participant::{
    gbdt_compute, gbdt_compute_sampled, gradient_units, GbdtCache, GbdtInstruction, LevelSample,
};
pub use predict::CompiledForest;
pub use server::{fit_pooled, GbdtServer, StepKind};
pub use tree::{GbdtModel, Node, Tree};

/// Largest node id a level may address (trees are at most `MAX_DEPTH` deep).
const MAX_DEPTH: usize = 16;
/// Rows per rayon task in row-parallel passes.
const PAR_ROWS: usize = 4096;
/// Per-row gradients and hessians are rounded to multiples of this (2^-30) and summed as
/// integers of this unit, so every histogram sum is EXACT: sums do not depend on how rows are
/// split among participants, on the order of addition or on the threads, and a histogram
/// derived by subtraction has exact zeros where the requested one has them. A sum of fewer
/// than 2^23 rows is also exact as the `f64` it is sent as, and so is any fixed-point
/// encoding of level vectors at this resolution or finer (a coarser one, to a power of two,
/// rounds every participant's vector the same way).
pub const GRADIENT_RESOLUTION: f64 = 1.0 / GRID;
const GRID: f64 = 1_073_741_824.0;

/// Runs `f(row, slot)` for every slot of the per-row vector `out`, rayon-parallel over blocks
/// of `PAR_ROWS` rows; each slot is written by one call, so the result does not depend on the
/// thread count.
fn for_each_row<T: Send>(out: &mut [T], f: impl Fn(usize, &mut T) + Sync) {
    out.par_chunks_mut(PAR_ROWS)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (k, o) in chunk.iter_mut().enumerate() {
                f(c * PAR_ROWS + k, o);
            }
        });
}

/// Errors of this module, by cause.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GbdtError {
    /// Shapes, aggregate lengths, non-finite values, labels, parameter domains and cut points:
    /// the faults the boosted trees share with the scorecard.
    #[error(transparent)]
    Binning(#[from] BinningError),
    /// A binned value is outside the histogram's bins.
    #[error("bin {bin} of feature {feature} is outside the {n_bins} histogram bins")]
    BinOutOfRange {
        feature: usize,
        bin: usize,
        n_bins: usize,
    },
    /// An instruction (or a model inside it) is malformed.
    #[error("malformed instruction: {0}")]
    BadInstruction(String),
    /// A level's model delta was refused (wrong base state, unknown node, digest mismatch).
    #[error(transparent)]
    Delta(#[from] DeltaError),
    /// `absorb` was called after the model was finished.
    #[error("training is finished; there is nothing to absorb")]
    Finished,
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

/// Boosting hyper-parameters (the same for every participant of a job).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GbdtParams {
    /// Number of boosting rounds (trees); training stops earlier when a tree cannot split.
    pub n_trees: usize,
    /// Depth of the deepest leaf (root = depth 0), 1..=16.
    pub max_depth: usize,
    /// Leaves per tree; when a level would exceed it, the highest-gain splits win.
    pub max_leaves: usize,
    /// Shrinkage applied to every leaf value.
    pub learning_rate: f64,
    /// Minimum hessian sum of each child of a split.
    pub min_child_weight: f64,
    /// L2 penalty λ on leaf values.
    pub lambda: f64,
    /// Minimum gain γ of a split.
    pub gamma: f64,
    /// Value bins per feature, 2..=255 (plus one missing bin).
    pub max_bins: usize,
    /// Equal-width bins of the fine histogram the quantile cut points are chosen from.
    pub fine_bins: usize,
    /// The fine histogram of a feature spans `mean ± range_sd·sd`; values beyond are clamped
    /// into the end bins.
    pub range_sd: f64,
}

impl Default for GbdtParams {
    fn default() -> Self {
        GbdtParams {
            n_trees: 100,
            max_depth: 4,
            max_leaves: 16,
            learning_rate: 0.1,
            min_child_weight: 1.0,
            lambda: 1.0,
            gamma: 0.0,
            max_bins: 64,
            fine_bins: 1024,
            range_sd: 4.0,
        }
    }
}

impl GbdtParams {
    /// Checks every field's domain; the error names the field.
    pub fn validate(&self) -> Result<(), GbdtError> {
        if self.n_trees == 0 || self.n_trees > 100_000 {
            return Err(invalid(
                "n_trees",
                self.n_trees as f64,
                "must be in 1..=100000",
            ));
        }
        if self.max_depth == 0 || self.max_depth > MAX_DEPTH {
            return Err(invalid(
                "max_depth",
                self.max_depth as f64,
                "must be in 1..=16",
            ));
        }
        if self.max_leaves < 2 {
            return Err(invalid("max_leaves", self.max_leaves as f64, "must be ≥ 2"));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return Err(invalid(
                "learning_rate",
                self.learning_rate,
                "must be in (0, 1]",
            ));
        }
        for (name, v) in [
            ("min_child_weight", self.min_child_weight),
            ("lambda", self.lambda),
            ("gamma", self.gamma),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(name, v, "must be finite and ≥ 0"));
            }
        }
        if self.lambda == 0.0 && self.min_child_weight == 0.0 {
            return Err(invalid(
                "lambda",
                0.0,
                "lambda and min_child_weight cannot both be 0 (leaf values would be unbounded)",
            ));
        }
        if self.max_bins < 2 || self.max_bins > MAX_BINS {
            return Err(invalid(
                "max_bins",
                self.max_bins as f64,
                "must be in 2..=255",
            ));
        }
        if self.fine_bins < 2 || self.fine_bins > 1 << 16 {
            return Err(invalid(
                "fine_bins",
                self.fine_bins as f64,
                "must be in 2..=65536",
            ));
        }
        if !(self.range_sd.is_finite() && self.range_sd > 0.0) {
            return Err(invalid("range_sd", self.range_sd, "must be finite and > 0"));
        }
        Ok(())
    }
}
