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
//! 3. **Levels** — for each tree and each depth, gradient and hessian histograms
//!    `[node][feature][bin][grad, hess]` of the open nodes ([`level_histograms`]); the server
//!    finds the best split of each node ([`best_splits`]). Only one child of each split is
//!    requested at the next level: the server derives its sibling by subtracting from the
//!    parent's histogram (the "histogram subtraction" trick, on sums), halving the vector.
//!
//! The server driver is [`GbdtServer`] (`next()` → [`GbdtInstruction`], `absorb(sum)`); the
//! participant half is [`gbdt_compute`]. An instruction carries everything a participant
//! needs (for a level: the model so far and the partial tree), so a participant that lost its
//! [`GbdtCache`] computes the same vector. [`fit_pooled`] runs the very same halves with a
//! single participant: the centralised reference.
//!
//! Per-row gradients and hessians are rounded to a 2^-32 grid, which makes every histogram sum
//! exact in f64 (below 2^21 rows per node): summed in the clear, the participants' vectors give
//! bit-for-bit the trees of [`fit_pooled`] on the pooled rows, whatever the split of rows, and
//! the derived (subtracted) histograms are exact too. Under secure aggregation the sums also
//! pass through the job's fixed-point encoding, which the coordinator sizes to the federation
//! (e.g. 30 fractional bits at 5M rows, fewer for small federations); that rounding can move a
//! near-tied split, so production trees match the pooled ones in quality (hold-out AUC equal
//! to 3–4 decimals in the tests and benchmarks), not always bit for bit.
//!
//! Conventions: labels are 0/1 (`f32`); missing values are `NaN`; margins are log-odds of the
//! positive class; node ids are indices into [`Tree::nodes`] (root = 0).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use ndarray::{Array2, ArrayView1, ArrayView2, ShapeBuilder};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::linear::sigmoid;

/// Largest number of value bins per feature (one more slot is the missing bin, so bins fit a
/// `u8`).
pub const MAX_BINS: usize = 255;
/// Largest node id a level may address (trees are at most `MAX_DEPTH` deep).
const MAX_DEPTH: usize = 16;
/// Most fine-histogram bins per feature ([`fine_histogram`]): the bound of
/// [`GbdtParams::fine_bins`], so an instruction from outside cannot size a larger histogram.
pub const MAX_FINE_BINS: usize = 1 << 16;
/// Rows per rayon task in row-parallel passes.
const PAR_ROWS: usize = 4096;
/// Per-row gradients and hessians are rounded to multiples of this (2^-32) before they are
/// summed, so that every histogram sum of fewer than 2^21 rows is EXACT in f64: sums do not
/// depend on how rows are split among participants or on the order of addition, and a
/// histogram derived by subtraction has exact zeros where the requested one has them. A
/// fixed-point encoding of level vectors at this resolution (or coarser, to a power of two)
/// keeps the property.
pub const GRADIENT_RESOLUTION: f64 = 1.0 / GRID;
const GRID: f64 = 4_294_967_296.0;

#[inline]
fn on_grid(v: f64) -> f64 {
    (v * GRID).round() / GRID
}

/// Errors of this module, by cause.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GbdtError {
    /// A vector or matrix dimension does not match the others or the model.
    #[error("{what}: expected {expected}, got {got}")]
    ShapeMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// The aggregate handed to [`GbdtServer::absorb`] has the wrong length for the step.
    #[error("aggregate for step '{step}' has {got} values, expected {expected}")]
    SumLength {
        step: &'static str,
        expected: usize,
        got: usize,
    },
    /// A hyper-parameter is outside its domain.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },
    /// Input data or an aggregate contains NaN or ±∞ where it must not.
    #[error("{what} contains a non-finite value")]
    NonFinite { what: &'static str },
    /// A label other than 0 or 1.
    #[error("label at row {row} is {value}; labels must be 0 or 1")]
    BadLabel { row: usize, value: f32 },
    /// The federation has no training rows.
    #[error("no training rows")]
    NoRows,
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
    /// `absorb` was called after the model was finished.
    #[error("training is finished; there is nothing to absorb")]
    Finished,
}

fn invalid(name: &'static str, value: f64, reason: &'static str) -> GbdtError {
    GbdtError::InvalidParameter {
        name,
        value,
        reason,
    }
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

// ---------------------------------------------------------------------------------------------
// Binning
// ---------------------------------------------------------------------------------------------

/// Participant half of the bin agreement: per feature, counts over `fine_bins` equal-width
/// bins of `ranges[j] = (lo, hi)` (values below `lo` / above `hi` are clamped into the end
/// bins; a constant range puts everything in bin 0), followed by one slot counting `NaN`s.
/// Layout `[feature][fine_bins + 1]`.
pub fn fine_histogram(
    x: ArrayView2<f32>,
    ranges: &[(f32, f32)],
    fine_bins: usize,
) -> Result<Vec<f64>, GbdtError> {
    let f = x.ncols();
    if ranges.len() != f {
        return Err(GbdtError::ShapeMismatch {
            what: "ranges (one per feature)",
            expected: f,
            got: ranges.len(),
        });
    }
    if fine_bins == 0 || fine_bins > MAX_FINE_BINS {
        return Err(invalid(
            "fine_bins",
            fine_bins as f64,
            "must be in 1..=65536",
        ));
    }
    check_ranges(ranges)?;
    let width = fine_bins + 1;
    let mut out = vec![0.0; f * width];
    out.par_chunks_mut(width).enumerate().for_each(|(j, hist)| {
        let (lo, hi) = (f64::from(ranges[j].0), f64::from(ranges[j].1));
        let scale = if hi > lo {
            fine_bins as f64 / (hi - lo)
        } else {
            0.0
        };
        for &v in x.column(j) {
            if v.is_nan() {
                hist[fine_bins] += 1.0;
            } else {
                let k = ((f64::from(v) - lo) * scale)
                    .floor()
                    .clamp(0.0, (fine_bins - 1) as f64);
                hist[k as usize] += 1.0;
            }
        }
    });
    Ok(out)
}

fn check_ranges(ranges: &[(f32, f32)]) -> Result<(), GbdtError> {
    for &(lo, hi) in ranges {
        if !(lo.is_finite() && hi.is_finite()) {
            return Err(GbdtError::NonFinite { what: "ranges" });
        }
        if lo > hi {
            return Err(invalid("range", f64::from(lo), "lower end above upper end"));
        }
    }
    Ok(())
}

/// The agreed binning: per feature, increasing cut points; a value `v` falls in value bin
/// `#{cuts ≤ v}` and `NaN` in the missing bin `max_bins`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BinMapper {
    cuts: Vec<Vec<f32>>,
    max_bins: usize,
}

impl BinMapper {
    /// Server half of the bin agreement: up to `max_bins` bins per feature from the SUM of the
    /// participants' [`fine_histogram`]s. A feature with at most `max_bins` occupied fine bins
    /// gets one bin per occupied fine bin (cuts in the middle of the gaps between them);
    /// otherwise cuts are placed where the cumulative count crosses `i·N/max_bins` (equal-count
    /// bins, a heavy fine bin possibly swallowing several quantiles). Negative counts (possible
    /// with DP noise) are treated as 0.
    pub fn from_fine_histogram(
        sum: &[f64],
        ranges: &[(f32, f32)],
        fine_bins: usize,
        max_bins: usize,
    ) -> Result<BinMapper, GbdtError> {
        if !(2..=MAX_BINS).contains(&max_bins) {
            return Err(invalid("max_bins", max_bins as f64, "must be in 2..=255"));
        }
        if fine_bins == 0 || fine_bins > MAX_FINE_BINS {
            return Err(invalid(
                "fine_bins",
                fine_bins as f64,
                "must be in 1..=65536",
            ));
        }
        check_ranges(ranges)?;
        let width = fine_bins + 1;
        let expected = ranges.len().saturating_mul(width);
        if sum.len() != expected {
            return Err(GbdtError::SumLength {
                step: "fine_histogram",
                expected,
                got: sum.len(),
            });
        }
        if sum.iter().any(|v| !v.is_finite()) {
            return Err(GbdtError::NonFinite {
                what: "fine histogram",
            });
        }
        let cuts = ranges
            .iter()
            .zip(sum.chunks_exact(width))
            .map(|(&(lo, hi), hist)| {
                feature_cuts(&hist[..fine_bins], f64::from(lo), f64::from(hi), max_bins)
            })
            .collect();
        Ok(BinMapper { cuts, max_bins })
    }

    /// A mapper from explicit cut points (each list strictly increasing, finite, at most
    /// `max_bins − 1` long).
    pub fn from_cuts(cuts: Vec<Vec<f32>>, max_bins: usize) -> Result<BinMapper, GbdtError> {
        let m = BinMapper { cuts, max_bins };
        m.validate()?;
        Ok(m)
    }

    /// Checks the invariants (a mapper may arrive deserialised from the network).
    pub fn validate(&self) -> Result<(), GbdtError> {
        if !(2..=MAX_BINS).contains(&self.max_bins) {
            return Err(GbdtError::BadInstruction(format!(
                "bin mapper: max_bins {} outside 2..=255",
                self.max_bins
            )));
        }
        for (j, c) in self.cuts.iter().enumerate() {
            if c.len() >= self.max_bins {
                return Err(GbdtError::BadInstruction(format!(
                    "bin mapper: feature {j} has {} cuts for {} bins",
                    c.len(),
                    self.max_bins
                )));
            }
            if c.iter().any(|v| !v.is_finite()) || c.windows(2).any(|w| w[0] >= w[1]) {
                return Err(GbdtError::BadInstruction(format!(
                    "bin mapper: cuts of feature {j} are not finite and strictly increasing"
                )));
            }
        }
        Ok(())
    }

    pub fn n_features(&self) -> usize {
        self.cuts.len()
    }

    /// Value bins per feature at most (`max_bins`); the missing bin is `max_bins`.
    pub fn max_bins(&self) -> usize {
        self.max_bins
    }

    /// Histogram slots per feature: `max_bins` value bins + 1 missing bin (saturating, for a
    /// mapper not yet validated).
    pub fn n_bins(&self) -> usize {
        self.max_bins.saturating_add(1)
    }

    /// The bin of `NaN`.
    pub fn missing_bin(&self) -> u8 {
        self.max_bins as u8
    }

    /// Cut points of feature `j` (empty slice for an unknown feature).
    pub fn cuts(&self, j: usize) -> &[f32] {
        self.cuts.get(j).map_or(&[], Vec::as_slice)
    }

    /// Value bins actually used by feature `j` (`cuts + 1`).
    pub fn feature_bins(&self, j: usize) -> usize {
        self.cuts(j).len() + 1
    }

    /// Bin of value `v` of feature `j` (`j` must be < `n_features`).
    #[inline]
    pub fn bin_value(&self, j: usize, v: f32) -> u8 {
        if v.is_nan() {
            self.max_bins as u8
        } else {
            self.cuts[j].partition_point(|&c| c <= v) as u8
        }
    }

    /// Bins every value of `x` (rows × features). The result is column-major (each feature
    /// contiguous), which is what [`level_histograms`] reads fastest.
    pub fn bin(&self, x: ArrayView2<f32>) -> Result<Array2<u8>, GbdtError> {
        let (n, f) = x.dim();
        if f != self.cuts.len() {
            return Err(GbdtError::ShapeMismatch {
                what: "feature columns",
                expected: self.cuts.len(),
                got: f,
            });
        }
        let mut data = vec![0u8; n * f];
        if n > 0 {
            data.par_chunks_mut(n).enumerate().for_each(|(j, col)| {
                for (o, &v) in col.iter_mut().zip(x.column(j)) {
                    *o = self.bin_value(j, v);
                }
            });
        }
        Array2::from_shape_vec((n, f).f(), data)
            .map_err(|e| GbdtError::BadInstruction(e.to_string()))
    }

    /// The real-valued threshold of "bin ≤ b": a non-missing `v` has `bin ≤ b` ⇔
    /// `v < threshold` (`f32::MAX` when `b` is the feature's last value bin).
    pub fn threshold(&self, j: usize, b: u8) -> f32 {
        self.cuts(j).get(b as usize).copied().unwrap_or(f32::MAX)
    }

    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.max_bins.hash(&mut h);
        for c in &self.cuts {
            c.len().hash(&mut h);
            for v in c {
                v.to_bits().hash(&mut h);
            }
        }
        h.finish()
    }
}

/// The "roundest" number in `[l, r]`: a multiple of the coarsest step 10^p or 5·10^p that fits,
/// the one nearest the middle; `l` when the interval is empty or a point.
fn round_in(l: f64, r: f64) -> f64 {
    if r.partial_cmp(&l) != Some(std::cmp::Ordering::Greater) {
        return l;
    }
    let mid = 0.5 * (l + r);
    let span = l.abs().max(r.abs());
    let mut p = 10f64.powi(span.log10().ceil() as i32 + 1);
    for _ in 0..40 {
        for step in [p, p / 2.0] {
            if (l / step).ceil() * step <= r {
                let c = (mid / step).round() * step;
                let c = if c < l {
                    c + step
                } else if c > r {
                    c - step
                } else {
                    c
                };
                return c + 0.0; // no negative zero
            }
        }
        p /= 10.0;
    }
    mid
}

/// Cut points of one feature from its fine-bin counts over `[lo, hi]`.
fn feature_cuts(counts: &[f64], lo: f64, hi: f64, max_bins: usize) -> Vec<f32> {
    let fine = counts.len();
    let w = if hi > lo {
        (hi - lo) / fine as f64
    } else {
        0.0
    };
    let c: Vec<f64> = counts.iter().map(|&v| v.max(0.0)).collect();
    let occupied: Vec<usize> = (0..fine).filter(|&k| c[k] > 0.0).collect();
    if occupied.len() < 2 || w == 0.0 {
        return Vec::new();
    }
    // A cut between fine bin a (occupied) and the next occupied fine bin b: the roundest
    // number in the empty gap between them (a readable threshold that moves no row), or the
    // shared boundary when they are adjacent.
    let cut_between = |a: usize, b: usize| round_in(lo + w * (a + 1) as f64, lo + w * b as f64);
    let mut raw = Vec::new();
    if occupied.len() <= max_bins {
        for p in occupied.windows(2) {
            raw.push(cut_between(p[0], p[1]));
        }
    } else {
        let total: f64 = c.iter().sum();
        let mut cum = 0.0;
        let mut i = 1usize; // next quantile index
        for (idx, &k) in occupied.iter().enumerate() {
            cum += c[k];
            if i >= max_bins {
                break;
            }
            let Some(&next) = occupied.get(idx + 1) else {
                break;
            };
            if cum * max_bins as f64 >= i as f64 * total {
                raw.push(cut_between(k, next));
                // Skip every quantile this fine bin already crossed.
                while i < max_bins && cum * max_bins as f64 >= i as f64 * total {
                    i += 1;
                }
            }
        }
    }
    let mut cuts: Vec<f32> = Vec::with_capacity(raw.len());
    for v in raw {
        let v = v as f32;
        if v.is_finite() && cuts.last().is_none_or(|&l| v > l) {
            cuts.push(v);
        }
    }
    cuts.truncate(max_bins - 1);
    cuts
}

// ---------------------------------------------------------------------------------------------
// Trees and model
// ---------------------------------------------------------------------------------------------

/// One node of a tree. `Open` only appears in a tree under construction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Node {
    /// Rows with `bin(feature) ≤ bin` (equivalently a non-missing value `< threshold`) go to
    /// `left`; missing values go left iff `default_left`.
    Split {
        feature: u32,
        bin: u8,
        threshold: f32,
        default_left: bool,
        left: u32,
        right: u32,
        /// Loss reduction of this split (for importances and reports).
        gain: f64,
    },
    /// Adds `value` to the margin (already multiplied by the learning rate).
    Leaf { value: f64 },
    /// A node waiting for its level's histograms, with its gradient and hessian sums.
    Open {
        sum_grad: f64,
        sum_hess: f64,
        depth: u32,
    },
}

/// A regression tree on binned features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Checks structure against a mapper: children after their parent (so routing ends),
    /// features and bins in range, a tree without `Open` nodes when `complete`.
    pub fn validate(&self, mapper: &BinMapper, complete: bool) -> Result<(), GbdtError> {
        let bad = |m: String| Err(GbdtError::BadInstruction(m));
        if self.nodes.is_empty() {
            return bad("tree has no nodes".into());
        }
        if self.nodes.len() > 1 << (MAX_DEPTH + 1) {
            return bad(format!("tree has {} nodes", self.nodes.len()));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            match *n {
                Node::Split {
                    feature,
                    bin,
                    left,
                    right,
                    ..
                } => {
                    if feature as usize >= mapper.n_features() {
                        return bad(format!("node {i} splits on unknown feature {feature}"));
                    }
                    if usize::from(bin) >= mapper.max_bins() {
                        return bad(format!("node {i} splits at bin {bin}"));
                    }
                    let n = self.nodes.len() as u32;
                    if left <= i as u32 || right <= i as u32 || left >= n || right >= n {
                        return bad(format!("node {i} has children {left}/{right}"));
                    }
                }
                Node::Leaf { value } => {
                    if !value.is_finite() {
                        return bad(format!("leaf {i} is not finite"));
                    }
                }
                Node::Open { .. } => {
                    if complete {
                        return bad(format!("node {i} of a finished tree is open"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The node a row ends in (a leaf or an open node); `bin_of(feature)` gives the row's bin.
    #[inline]
    fn route(&self, missing: u8, bin_of: impl Fn(usize) -> u8) -> usize {
        let mut i = 0usize;
        while let Node::Split {
            feature,
            bin,
            default_left,
            left,
            right,
            ..
        } = self.nodes[i]
        {
            let b = bin_of(feature as usize);
            let go_left = if b == missing { default_left } else { b <= bin };
            i = if go_left { left } else { right } as usize;
        }
        i
    }

    fn leaf_value(&self, i: usize) -> f64 {
        match self.nodes[i] {
            Node::Leaf { value } => value,
            _ => 0.0,
        }
    }

    pub fn n_leaves(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| !matches!(n, Node::Split { .. }))
            .count()
    }

    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for n in &self.nodes {
            match *n {
                Node::Split {
                    feature,
                    bin,
                    threshold,
                    default_left,
                    left,
                    right,
                    gain,
                } => {
                    (0u8, feature, bin, threshold.to_bits(), default_left).hash(&mut h);
                    (left, right, gain.to_bits()).hash(&mut h);
                }
                Node::Leaf { value } => (1u8, value.to_bits()).hash(&mut h),
                Node::Open {
                    sum_grad,
                    sum_hess,
                    depth,
                } => (2u8, sum_grad.to_bits(), sum_hess.to_bits(), depth).hash(&mut h),
            }
        }
        h.finish()
    }
}

/// A trained (or partly trained) boosted model: margin = `base_score + Σ trees`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GbdtModel {
    /// Initial margin: the federation's log-odds of the positive class.
    pub base_score: f64,
    pub bin_mapper: BinMapper,
    pub trees: Vec<Tree>,
}

impl GbdtModel {
    /// Checks the mapper and every tree (a model may arrive deserialised).
    pub fn validate(&self) -> Result<(), GbdtError> {
        if !self.base_score.is_finite() {
            return Err(GbdtError::BadInstruction("base score is not finite".into()));
        }
        self.bin_mapper.validate()?;
        for t in &self.trees {
            t.validate(&self.bin_mapper, true)?;
        }
        Ok(())
    }

    /// Margins (log-odds) of already binned rows (as from [`BinMapper::bin`]). The model is
    /// validated first, so a malformed deserialised model is an error, not a panic or a loop.
    pub fn predict_margin_binned(&self, binned: ArrayView2<u8>) -> Result<Vec<f64>, GbdtError> {
        self.validate()?;
        if binned.ncols() != self.bin_mapper.n_features() {
            return Err(GbdtError::ShapeMismatch {
                what: "binned feature columns",
                expected: self.bin_mapper.n_features(),
                got: binned.ncols(),
            });
        }
        let mut m = vec![self.base_score; binned.nrows()];
        add_trees(&self.trees, self.bin_mapper.missing_bin(), binned, &mut m);
        Ok(m)
    }

    /// Margins (log-odds) of raw rows (`NaN` = missing).
    pub fn predict_margin(&self, x: ArrayView2<f32>) -> Result<Vec<f64>, GbdtError> {
        let b = self.bin_mapper.bin(x)?;
        self.predict_margin_binned(b.view())
    }

    /// Probabilities of the positive class.
    pub fn predict_proba(&self, x: ArrayView2<f32>) -> Result<Vec<f64>, GbdtError> {
        Ok(self.predict_margin(x)?.into_iter().map(sigmoid).collect())
    }

    /// Total split gain per feature (an importance measure).
    pub fn feature_gain(&self) -> Vec<f64> {
        let mut g = vec![0.0; self.bin_mapper.n_features()];
        for t in &self.trees {
            for n in &t.nodes {
                if let Node::Split { feature, gain, .. } = *n {
                    if let Some(v) = g.get_mut(feature as usize) {
                        *v += gain;
                    }
                }
            }
        }
        g
    }
}

/// Adds each tree's leaf values, in tree order, to `margins` (row-parallel).
fn add_trees(trees: &[Tree], missing: u8, binned: ArrayView2<u8>, margins: &mut [f64]) {
    if trees.is_empty() {
        return;
    }
    margins
        .par_chunks_mut(PAR_ROWS)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (k, m) in chunk.iter_mut().enumerate() {
                let r = c * PAR_ROWS + k;
                for t in trees {
                    *m += t.leaf_value(t.route(missing, |j| binned[[r, j]]));
                }
            }
        });
}

// ---------------------------------------------------------------------------------------------
// Level histograms and split finding
// ---------------------------------------------------------------------------------------------

/// Participant half of one level: gradient/hessian histograms of the rows in `open_nodes`.
/// `node_of_row[r]` is the node row `r` currently sits in (`u32::MAX` = in no open node).
/// Layout `[open_nodes index][feature][bin][grad, hess]`, length
/// `open_nodes.len() · features · n_bins · 2`. Rayon-parallel over features; each feature's
/// sums run in row order, so the result does not depend on the thread count.
pub fn level_histograms(
    binned: ArrayView2<u8>,
    grad: &[f64],
    hess: &[f64],
    node_of_row: &[u32],
    open_nodes: &[u32],
    n_bins: usize,
) -> Result<Vec<f64>, GbdtError> {
    let (n, f) = binned.dim();
    for (what, len) in [
        ("gradients", grad.len()),
        ("hessians", hess.len()),
        ("node of row", node_of_row.len()),
    ] {
        if len != n {
            return Err(GbdtError::ShapeMismatch {
                what,
                expected: n,
                got: len,
            });
        }
    }
    if n_bins == 0 || n_bins > MAX_BINS + 1 {
        return Err(invalid("n_bins", n_bins as f64, "must be in 1..=256"));
    }
    // node id → slot in open_nodes
    let max_node = open_nodes.iter().copied().max().unwrap_or(0) as usize;
    if max_node >= 1 << (MAX_DEPTH + 1) {
        return Err(GbdtError::BadInstruction(format!(
            "open node id {max_node} is out of range"
        )));
    }
    let mut slot_of = vec![u32::MAX; max_node + 1];
    for (s, &nd) in open_nodes.iter().enumerate() {
        if slot_of[nd as usize] != u32::MAX {
            return Err(GbdtError::BadInstruction(format!(
                "open node {nd} listed twice"
            )));
        }
        slot_of[nd as usize] = s as u32;
    }
    let row_slot: Vec<u32> = node_of_row
        .iter()
        .map(|&nd| slot_of.get(nd as usize).copied().unwrap_or(u32::MAX))
        .collect();
    let per_node = n_bins * 2;
    let per_feature: Vec<Result<Vec<f64>, GbdtError>> = (0..f)
        .into_par_iter()
        .map(|j| {
            let mut buf = vec![0.0; open_nodes.len() * per_node];
            for ((&b, &s), (&g, &h)) in binned
                .column(j)
                .iter()
                .zip(&row_slot)
                .zip(grad.iter().zip(hess))
            {
                if s == u32::MAX {
                    continue;
                }
                let b = usize::from(b);
                if b >= n_bins {
                    return Err(GbdtError::BinOutOfRange {
                        feature: j,
                        bin: b,
                        n_bins,
                    });
                }
                let o = s as usize * per_node + 2 * b;
                buf[o] += g;
                buf[o + 1] += h;
            }
            Ok(buf)
        })
        .collect();
    let mut out = vec![0.0; open_nodes.len() * f * per_node];
    for (j, buf) in per_feature.into_iter().enumerate() {
        let buf = buf?;
        for s in 0..open_nodes.len() {
            let dst = (s * f + j) * per_node;
            out[dst..dst + per_node].copy_from_slice(&buf[s * per_node..(s + 1) * per_node]);
        }
    }
    Ok(out)
}

/// The best split of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub feature: u32,
    /// Rows with value bin ≤ `bin` go left.
    pub bin: u8,
    /// Where missing values go (learned: the side that gains more).
    pub default_left: bool,
    pub gain: f64,
    pub left_grad: f64,
    pub left_hess: f64,
    pub right_grad: f64,
    pub right_hess: f64,
}

/// Server half of one level: for each open node (slot of `sum`, laid out as in
/// [`level_histograms`], last bin = missing), the split maximising
/// `½[G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)] − γ` over features, thresholds and the two
/// directions for missing values, subject to `H_L, H_R ≥ min_child_weight` (and > 0); `None`
/// when no split has positive gain. Ties keep the first candidate (lowest feature, lowest bin,
/// missing-right before missing-left). Without missing values in a node the default direction
/// is the child with the larger hessian.
pub fn best_splits(
    sum: &[f64],
    open_nodes: &[u32],
    n_features: usize,
    n_bins: usize,
    params: &GbdtParams,
) -> Result<Vec<Option<Split>>, GbdtError> {
    if !(2..=MAX_BINS + 1).contains(&n_bins) {
        return Err(invalid("n_bins", n_bins as f64, "must be in 2..=256"));
    }
    let per_node = n_features * n_bins * 2;
    let expected = open_nodes.len() * per_node;
    if sum.len() != expected {
        return Err(GbdtError::SumLength {
            step: "level",
            expected,
            got: sum.len(),
        });
    }
    if sum.iter().any(|v| !v.is_finite()) {
        return Err(GbdtError::NonFinite {
            what: "level histograms",
        });
    }
    Ok((0..open_nodes.len())
        .map(|s| {
            let mut best: Option<Split> = None;
            for j in 0..n_features {
                let o = (s * n_features + j) * n_bins * 2;
                let h = &sum[o..o + n_bins * 2];
                if let Some(c) = best_split_feature(h, j as u32, n_bins, params) {
                    if best.as_ref().is_none_or(|b| c.gain > b.gain) {
                        best = Some(c);
                    }
                }
            }
            best
        })
        .collect())
}

fn best_split_feature(h: &[f64], feature: u32, n_bins: usize, p: &GbdtParams) -> Option<Split> {
    let miss = n_bins - 1;
    let (gm, hm) = (h[2 * miss], h[2 * miss + 1]);
    // Suffix sums over value bins: the right side of threshold b is bins b+1..miss, summed
    // directly (not as total − left) so an empty side is exactly 0.
    let mut suf_g = [0.0f64; MAX_BINS + 2];
    let mut suf_h = [0.0f64; MAX_BINS + 2];
    for b in (0..miss).rev() {
        suf_g[b] = suf_g[b + 1] + h[2 * b];
        suf_h[b] = suf_h[b + 1] + h[2 * b + 1];
    }
    let (g, hh) = (suf_g[0] + gm, suf_h[0] + hm);
    if hh <= 0.0 {
        return None;
    }
    let lambda = p.lambda;
    let score = |g: f64, h: f64| g * g / (h + lambda);
    let parent = score(g, hh);
    let has_missing = hm != 0.0 || gm != 0.0;
    let ok = |hl: f64, hr: f64| {
        hl > 0.0 && hr > 0.0 && hl >= p.min_child_weight && hr >= p.min_child_weight
    };
    let mut best: Option<Split> = None;
    let (mut gl, mut hl) = (0.0, 0.0);
    for b in 0..miss {
        gl += h[2 * b];
        hl += h[2 * b + 1];
        let (gr, hr) = (suf_g[b + 1], suf_h[b + 1]);
        let mut consider = |gl: f64, hl: f64, gr: f64, hr: f64, default_left: bool| {
            if !ok(hl, hr) {
                return;
            }
            let gain = 0.5 * (score(gl, hl) + score(gr, hr) - parent) - p.gamma;
            if gain > 0.0 && best.as_ref().is_none_or(|s| gain > s.gain) {
                best = Some(Split {
                    feature,
                    bin: b as u8,
                    default_left,
                    gain,
                    left_grad: gl,
                    left_hess: hl,
                    right_grad: gr,
                    right_hess: hr,
                });
            }
        };
        if has_missing {
            consider(gl, hl, gr + gm, hr + hm, false);
            consider(gl + gm, hl + hm, gr, hr, true);
        } else {
            consider(gl, hl, gr, hr, hl >= hr);
        }
    }
    best
}

fn leaf_weight(g: f64, h: f64, p: &GbdtParams) -> f64 {
    let v = -g / (h + p.lambda) * p.learning_rate;
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------------
// Stats step
// ---------------------------------------------------------------------------------------------

/// Participant half of the stats step: `[rows, positives, then per feature: non-missing
/// count, Σx, Σx²]` (length `2 + 3·features`). Also the first step of a federated scorecard.
pub fn local_stats(x: ArrayView2<f32>, y: ArrayView1<f32>) -> Result<Vec<f64>, GbdtError> {
    let (n, f) = x.dim();
    check_labels(y, n)?;
    let mut out = vec![0.0; 2 + 3 * f];
    out[0] = n as f64;
    out[1] = y.iter().filter(|&&v| v == 1.0).count() as f64;
    out[2..].par_chunks_mut(3).enumerate().for_each(|(j, o)| {
        for &v in x.column(j) {
            if !v.is_nan() {
                let v = f64::from(v);
                o[0] += 1.0;
                o[1] += v;
                o[2] += v * v;
            }
        }
    });
    if out.iter().any(|v| !v.is_finite()) {
        return Err(GbdtError::NonFinite { what: "features" });
    }
    Ok(out)
}

/// What the server learns from the SUM of [`local_stats`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    pub n_rows: f64,
    pub n_positive: f64,
    /// Non-missing values per feature.
    pub count: Vec<f64>,
    pub mean: Vec<f64>,
    pub sd: Vec<f64>,
}

impl FeatureStats {
    pub fn from_sum(sum: &[f64], n_features: usize) -> Result<Self, GbdtError> {
        let expected = 2 + 3 * n_features;
        if sum.len() != expected {
            return Err(GbdtError::SumLength {
                step: "stats",
                expected,
                got: sum.len(),
            });
        }
        if sum.iter().any(|v| !v.is_finite()) {
            return Err(GbdtError::NonFinite { what: "stats sum" });
        }
        if sum[0] < 0.5 {
            return Err(GbdtError::NoRows);
        }
        let mut st = FeatureStats {
            n_rows: sum[0],
            n_positive: sum[1],
            count: Vec::with_capacity(n_features),
            mean: Vec::with_capacity(n_features),
            sd: Vec::with_capacity(n_features),
        };
        for s in sum[2..].chunks_exact(3) {
            let (c, s1, s2) = (s[0], s[1], s[2]);
            let (mean, sd) = if c < 0.5 {
                (0.0, 0.0)
            } else {
                let m = s1 / c;
                (m, (s2 / c - m * m).max(0.0).sqrt())
            };
            st.count.push(c.max(0.0));
            st.mean.push(mean);
            st.sd.push(sd);
        }
        Ok(st)
    }

    /// The federation's log-odds of the positive class (rate clamped to [1e-6, 1 − 1e-6]).
    pub fn base_score(&self) -> f64 {
        let p = (self.n_positive / self.n_rows).clamp(1e-6, 1.0 - 1e-6);
        (p / (1.0 - p)).ln()
    }

    /// `mean ± range_sd·sd` per feature, as the [`fine_histogram`] ranges.
    pub fn ranges(&self, range_sd: f64) -> Vec<(f32, f32)> {
        spread_ranges(&self.mean, &self.sd, range_sd)
    }
}

/// `mean ± range_sd·sd` per feature, clamped to the f32 range.
pub fn spread_ranges(mean: &[f64], sd: &[f64], range_sd: f64) -> Vec<(f32, f32)> {
    let clampf = |v: f64| v.clamp(-f64::from(f32::MAX), f64::from(f32::MAX)) as f32;
    mean.iter()
        .zip(sd)
        .map(|(&m, &s)| (clampf(m - range_sd * s), clampf(m + range_sd * s)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Instructions, participant half
// ---------------------------------------------------------------------------------------------

/// What every participant must compute next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GbdtInstruction {
    /// `[rows, positives, then per feature: non-missing count, Σx, Σx²]`.
    Stats { n_features: usize },
    /// [`fine_histogram`] of the local rows.
    FineHistogram {
        ranges: Vec<(f32, f32)>,
        fine_bins: usize,
    },
    /// [`level_histograms`] of `nodes` in `tree` (the tree being grown), with gradients of the
    /// logistic loss at the margins of `model` (everything finished so far).
    Level {
        model: GbdtModel,
        tree: Tree,
        nodes: Vec<u32>,
    },
}

impl GbdtInstruction {
    /// Length of every participant's vector for this instruction. Saturates at `usize::MAX`
    /// (an instruction from outside may carry any sizes; a participant refuses a length above
    /// its cap before computing anything).
    pub fn output_len(&self) -> usize {
        match self {
            GbdtInstruction::Stats { n_features } => n_features.saturating_mul(3).saturating_add(2),
            GbdtInstruction::FineHistogram { ranges, fine_bins } => {
                ranges.len().saturating_mul(fine_bins.saturating_add(1))
            }
            GbdtInstruction::Level { model, nodes, .. } => nodes
                .len()
                .saturating_mul(model.bin_mapper.n_features())
                .saturating_mul(model.bin_mapper.n_bins())
                .saturating_mul(2),
        }
    }

    /// Short name for logs.
    pub fn purpose(&self) -> &'static str {
        match self {
            GbdtInstruction::Stats { .. } => "stats",
            GbdtInstruction::FineHistogram { .. } => "bins",
            GbdtInstruction::Level { .. } => "level",
        }
    }
}

/// Derived data a participant keeps between instructions: the binned matrix and the margins
/// of the model's finished trees. A pure cache — a fresh one gives the same results. One cache
/// belongs to one data set.
#[derive(Clone, Debug, Default)]
pub struct GbdtCache {
    binned: Option<(u64, Array2<u8>)>,
    margins: Option<MarginCache>,
}

#[derive(Clone, Debug)]
struct MarginCache {
    mapper_fp: u64,
    base_bits: u64,
    tree_fps: Vec<u64>,
    margins: Vec<f64>,
}

impl GbdtCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The binned matrix for `mapper`, computed once.
    fn binned(&mut self, mapper: &BinMapper, x: ArrayView2<f32>) -> Result<&Array2<u8>, GbdtError> {
        let fp = mapper.fingerprint();
        let stale = !matches!(&self.binned, Some((f, b)) if *f == fp && b.nrows() == x.nrows());
        if stale {
            self.margins = None;
            self.binned = Some((fp, mapper.bin(x)?));
        }
        match &self.binned {
            Some((_, b)) => Ok(b),
            None => Err(GbdtError::BadInstruction("binning failed".into())),
        }
    }
}

fn check_labels(y: ArrayView1<f32>, n: usize) -> Result<(), GbdtError> {
    if y.len() != n {
        return Err(GbdtError::ShapeMismatch {
            what: "labels",
            expected: n,
            got: y.len(),
        });
    }
    for (row, &v) in y.iter().enumerate() {
        if v != 0.0 && v != 1.0 {
            return Err(GbdtError::BadLabel { row, value: v });
        }
    }
    Ok(())
}

/// The participant half: this participant's vector for `instr` (length
/// [`GbdtInstruction::output_len`]) on its rows `x` (`NaN` = missing) and 0/1 labels `y`.
pub fn gbdt_compute(
    instr: &GbdtInstruction,
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    cache: &mut GbdtCache,
) -> Result<Vec<f64>, GbdtError> {
    let (n, f) = x.dim();
    check_labels(y, n)?;
    match instr {
        GbdtInstruction::Stats { n_features } => {
            if *n_features != f {
                return Err(GbdtError::ShapeMismatch {
                    what: "feature columns",
                    expected: *n_features,
                    got: f,
                });
            }
            local_stats(x, y)
        }
        GbdtInstruction::FineHistogram { ranges, fine_bins } => {
            fine_histogram(x, ranges, *fine_bins)
        }
        GbdtInstruction::Level { model, tree, nodes } => {
            model.validate()?;
            tree.validate(&model.bin_mapper, false)?;
            if model.bin_mapper.n_features() != f {
                return Err(GbdtError::ShapeMismatch {
                    what: "feature columns",
                    expected: model.bin_mapper.n_features(),
                    got: f,
                });
            }
            for &nd in nodes {
                if !matches!(tree.nodes.get(nd as usize), Some(Node::Open { .. })) {
                    return Err(GbdtError::BadInstruction(format!(
                        "node {nd} is not an open node of the tree"
                    )));
                }
            }
            let mapper = &model.bin_mapper;
            let missing = mapper.missing_bin();
            cache.binned(mapper, x)?;
            let margins = current_margins(cache, model)?;
            let mut grad = vec![0.0; n];
            let mut hess = vec![0.0; n];
            for (r, (&m, &yv)) in margins.iter().zip(y).enumerate() {
                let p = sigmoid(m);
                grad[r] = on_grid(p - f64::from(yv));
                hess[r] = on_grid(p * (1.0 - p));
            }
            let binned = match &cache.binned {
                Some((_, b)) => b.view(),
                None => return Err(GbdtError::BadInstruction("binning failed".into())),
            };
            let mut node_of_row = vec![u32::MAX; n];
            node_of_row
                .par_chunks_mut(PAR_ROWS)
                .enumerate()
                .for_each(|(c, chunk)| {
                    for (k, o) in chunk.iter_mut().enumerate() {
                        let r = c * PAR_ROWS + k;
                        let i = tree.route(missing, |j| binned[[r, j]]);
                        if matches!(tree.nodes[i], Node::Open { .. }) {
                            *o = i as u32;
                        }
                    }
                });
            level_histograms(binned, &grad, &hess, &node_of_row, nodes, mapper.n_bins())
        }
    }
}

/// Margins of `model` on the cached binned rows, reusing the cached margins of a prefix of
/// its trees. Always the same additions in the same order as a cold computation.
fn current_margins<'a>(
    cache: &'a mut GbdtCache,
    model: &GbdtModel,
) -> Result<&'a [f64], GbdtError> {
    let Some((mapper_fp, binned)) = &cache.binned else {
        return Err(GbdtError::BadInstruction("binning failed".into()));
    };
    let fps: Vec<u64> = model.trees.iter().map(Tree::fingerprint).collect();
    let base_bits = model.base_score.to_bits();
    let reusable = match &cache.margins {
        Some(mc) => {
            mc.mapper_fp == *mapper_fp
                && mc.base_bits == base_bits
                && mc.tree_fps.len() <= fps.len()
                && mc.tree_fps[..] == fps[..mc.tree_fps.len()]
                && mc.margins.len() == binned.nrows()
        }
        None => false,
    };
    if !reusable {
        cache.margins = Some(MarginCache {
            mapper_fp: *mapper_fp,
            base_bits,
            tree_fps: Vec::new(),
            margins: vec![model.base_score; binned.nrows()],
        });
    }
    let Some(mc) = cache.margins.as_mut() else {
        return Err(GbdtError::BadInstruction("margin cache".into()));
    };
    let done = mc.tree_fps.len();
    add_trees(
        &model.trees[done..],
        model.bin_mapper.missing_bin(),
        binned.view(),
        &mut mc.margins,
    );
    mc.tree_fps = fps;
    Ok(&mc.margins)
}

// ---------------------------------------------------------------------------------------------
// Server half
// ---------------------------------------------------------------------------------------------

/// A node whose histogram the server derives as `parent − sibling` instead of requesting it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Derived {
    node: u32,
    sibling: u32,
    parent_hist: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Phase {
    Stats,
    Bins {
        base_score: f64,
        ranges: Vec<(f32, f32)>,
    },
    Grow {
        model: GbdtModel,
        tree: Tree,
        /// Nodes whose histograms participants compute at this level, in vector order.
        request: Vec<u32>,
        /// Nodes derived from their parent and a requested sibling.
        derive: Vec<Derived>,
    },
    Done {
        model: GbdtModel,
    },
}

/// The server driver, a state machine over sums only. Serialisable: it is the job's
/// checkpoint.
///
/// Loop: while `next()` gives an instruction, have every participant run [`gbdt_compute`],
/// sum the vectors under secure aggregation and [`absorb`](GbdtServer::absorb) the sum; then
/// take [`model`](GbdtServer::model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GbdtServer {
    params: GbdtParams,
    n_features: usize,
    /// Federation-wide row count, known after the stats step.
    total_rows: Option<f64>,
    phase: Phase,
}

impl GbdtServer {
    pub fn new(params: GbdtParams, n_features: usize) -> Result<Self, GbdtError> {
        params.validate()?;
        if n_features == 0 {
            return Err(invalid("n_features", 0.0, "must be ≥ 1"));
        }
        Ok(GbdtServer {
            params,
            n_features,
            total_rows: None,
            phase: Phase::Stats,
        })
    }

    /// Bound on |any element| of one participant's vector for the next instruction, for the
    /// fixed-point encoding: after the stats step every element is a count or a sum of
    /// per-row values in [−1, 1] over at most the federation's rows. `None` for the stats step
    /// itself (Σx and Σx² depend on the feature scales).
    pub fn max_abs(&self) -> Option<f64> {
        match self.phase {
            Phase::Stats | Phase::Done { .. } => None,
            _ => self.total_rows,
        }
    }

    pub fn params(&self) -> &GbdtParams {
        &self.params
    }

    /// What participants must compute next; `None` once the model is finished.
    pub fn next(&self) -> Option<GbdtInstruction> {
        match &self.phase {
            Phase::Stats => Some(GbdtInstruction::Stats {
                n_features: self.n_features,
            }),
            Phase::Bins { ranges, .. } => Some(GbdtInstruction::FineHistogram {
                ranges: ranges.clone(),
                fine_bins: self.params.fine_bins,
            }),
            Phase::Grow {
                model,
                tree,
                request,
                ..
            } => Some(GbdtInstruction::Level {
                model: model.clone(),
                tree: tree.clone(),
                nodes: request.clone(),
            }),
            Phase::Done { .. } => None,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done { .. })
    }

    /// Finished trees so far.
    pub fn trees_done(&self) -> usize {
        match &self.phase {
            Phase::Grow { model, .. } | Phase::Done { model } => model.trees.len(),
            _ => 0,
        }
    }

    /// The finished model (`None` until done).
    pub fn model(&self) -> Option<&GbdtModel> {
        match &self.phase {
            Phase::Done { model } => Some(model),
            _ => None,
        }
    }

    /// The finished model (`None` until done).
    pub fn into_model(self) -> Option<GbdtModel> {
        match self.phase {
            Phase::Done { model } => Some(model),
            _ => None,
        }
    }

    /// Takes the SUM over participants of the vectors for [`next`](GbdtServer::next)'s
    /// instruction and advances. On error the state is unchanged.
    pub fn absorb(&mut self, sum: &[f64]) -> Result<(), GbdtError> {
        let next = match &self.phase {
            Phase::Stats => {
                let next = self.absorb_stats(sum)?;
                self.total_rows = Some(sum[0]);
                next
            }
            Phase::Bins { base_score, ranges } => {
                let mapper = BinMapper::from_fine_histogram(
                    sum,
                    ranges,
                    self.params.fine_bins,
                    self.params.max_bins,
                )?;
                let model = GbdtModel {
                    base_score: *base_score,
                    bin_mapper: mapper,
                    trees: Vec::new(),
                };
                new_tree_phase(model)
            }
            Phase::Grow {
                model,
                tree,
                request,
                derive,
            } => self.absorb_level(sum, model, tree, request, derive)?,
            Phase::Done { .. } => return Err(GbdtError::Finished),
        };
        self.phase = next;
        Ok(())
    }

    fn absorb_stats(&self, sum: &[f64]) -> Result<Phase, GbdtError> {
        let st = FeatureStats::from_sum(sum, self.n_features)?;
        Ok(Phase::Bins {
            base_score: st.base_score(),
            ranges: st.ranges(self.params.range_sd),
        })
    }

    fn absorb_level(
        &self,
        sum: &[f64],
        model: &GbdtModel,
        tree: &Tree,
        request: &[u32],
        derive: &[Derived],
    ) -> Result<Phase, GbdtError> {
        let p = &self.params;
        let f = model.bin_mapper.n_features();
        let nb = model.bin_mapper.n_bins();
        let per_node = f * nb * 2;
        let expected = request.len() * per_node;
        if sum.len() != expected {
            return Err(GbdtError::SumLength {
                step: "level",
                expected,
                got: sum.len(),
            });
        }
        if sum.iter().any(|v| !v.is_finite()) {
            return Err(GbdtError::NonFinite {
                what: "level histograms",
            });
        }
        // Full histograms of every open node: requested ones, then derived ones.
        let mut open: Vec<u32> = request.to_vec();
        let mut full = sum.to_vec();
        for d in derive {
            let Some(si) = request.iter().position(|&r| r == d.sibling) else {
                return Err(GbdtError::BadInstruction(format!(
                    "derived node {} lost its sibling",
                    d.node
                )));
            };
            let sib = &sum[si * per_node..(si + 1) * per_node];
            full.extend(d.parent_hist.iter().zip(sib).map(|(a, b)| a - b));
            open.push(d.node);
        }
        let splits = best_splits(&full, &open, f, nb, p)?;

        let mut tree = tree.clone();
        // Node sums: from the histogram for the root, from the parent's split otherwise.
        if tree.nodes.len() == 1 {
            let (g, h) = (0..nb).fold((0.0, 0.0), |(g, h), b| {
                (g + full[2 * b], h + full[2 * b + 1])
            });
            tree.nodes[0] = Node::Open {
                sum_grad: g,
                sum_hess: h,
                depth: 0,
            };
        }
        // Highest-gain splits first, within the leaf budget.
        let mut order: Vec<usize> = (0..open.len()).filter(|&s| splits[s].is_some()).collect();
        order.sort_by(|&a, &b| {
            let (ga, gb) = (
                splits[a].as_ref().map_or(0.0, |s| s.gain),
                splits[b].as_ref().map_or(0.0, |s| s.gain),
            );
            gb.total_cmp(&ga).then(open[a].cmp(&open[b]))
        });
        let mut leaves = tree.n_leaves();
        let mut accepted = vec![false; open.len()];
        for s in order {
            if leaves < p.max_leaves {
                accepted[s] = true;
                leaves += 1;
            }
        }
        let mut next_request = Vec::new();
        let mut next_derive = Vec::new();
        // Process in node-id order so child ids do not depend on the vector layout.
        let mut slots: Vec<usize> = (0..open.len()).collect();
        slots.sort_by_key(|&s| open[s]);
        for s in slots {
            let id = open[s] as usize;
            let Node::Open {
                sum_grad,
                sum_hess,
                depth,
            } = tree.nodes[id]
            else {
                return Err(GbdtError::BadInstruction(format!("node {id} is not open")));
            };
            match (&splits[s], accepted[s]) {
                (Some(sp), true) => {
                    let left = tree.nodes.len() as u32;
                    let right = left + 1;
                    let child_depth = depth + 1;
                    let child_open = (child_depth as usize) < p.max_depth;
                    let child = |g: f64, h: f64| {
                        if child_open {
                            Node::Open {
                                sum_grad: g,
                                sum_hess: h,
                                depth: child_depth,
                            }
                        } else {
                            Node::Leaf {
                                value: leaf_weight(g, h, p),
                            }
                        }
                    };
                    tree.nodes[id] = Node::Split {
                        feature: sp.feature,
                        bin: sp.bin,
                        threshold: model.bin_mapper.threshold(sp.feature as usize, sp.bin),
                        default_left: sp.default_left,
                        left,
                        right,
                        gain: sp.gain,
                    };
                    tree.nodes.push(child(sp.left_grad, sp.left_hess));
                    tree.nodes.push(child(sp.right_grad, sp.right_hess));
                    if child_open {
                        // Request the lighter child; derive the other by subtraction.
                        let (req, der) = if sp.left_hess <= sp.right_hess {
                            (left, right)
                        } else {
                            (right, left)
                        };
                        next_request.push(req);
                        next_derive.push(Derived {
                            node: der,
                            sibling: req,
                            parent_hist: full[s * per_node..(s + 1) * per_node].to_vec(),
                        });
                    }
                }
                _ => {
                    tree.nodes[id] = Node::Leaf {
                        value: leaf_weight(sum_grad, sum_hess, p),
                    };
                }
            }
        }
        if !next_request.is_empty() {
            return Ok(Phase::Grow {
                model: model.clone(),
                tree,
                request: next_request,
                derive: next_derive,
            });
        }
        // The tree is finished.
        let mut model = model.clone();
        let stump = tree.nodes.len() == 1;
        if !stump {
            model.trees.push(tree);
        }
        if stump || model.trees.len() >= p.n_trees {
            Ok(Phase::Done { model })
        } else {
            Ok(new_tree_phase(model))
        }
    }
}

fn new_tree_phase(model: GbdtModel) -> Phase {
    Phase::Grow {
        model,
        tree: Tree {
            nodes: vec![Node::Open {
                sum_grad: 0.0,
                sum_hess: 0.0,
                depth: 0,
            }],
        },
        request: vec![0],
        derive: Vec::new(),
    }
}

/// The centralised reference: the same server and participant halves with ONE participant
/// holding all rows.
pub fn fit_pooled(
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    params: &GbdtParams,
) -> Result<GbdtModel, GbdtError> {
    let mut server = GbdtServer::new(params.clone(), x.ncols())?;
    let mut cache = GbdtCache::new();
    while let Some(instr) = server.next() {
        let v = gbdt_compute(&instr, x, y, &mut cache)?;
        server.absorb(&v)?;
    }
    server
        .into_model()
        .ok_or_else(|| GbdtError::BadInstruction("server stopped without a model".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::auc;
    use ndarray::{Array1, Axis, Slice};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    /// Synthetic credit-like data with a nonlinear signal and 10% missing values in x4.
    fn synthetic(n: usize, seed: u64) -> (Array2<f32>, Array1<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Array2::<f32>::zeros((n, 6));
        let mut y = Array1::<f32>::zeros(n);
        for r in 0..n {
            let x0: f64 = rng.random_range(-3.0..3.0);
            let x1: f64 = rng.sample(StandardNormal);
            let x2: f64 = rng.random_range(0.0..1.0);
            let x3: f64 = rng.sample(StandardNormal);
            let x4: f64 = rng.random_range(-1.0..1.0);
            let x4_missing = rng.random_bool(0.1);
            let x5: f64 = rng.sample(StandardNormal);
            let logit =
                1.5 * (2.0 * x0).sin() + (x1 * x1 - 1.0) + 2.0 * f64::from(u8::from(x2 > 0.7))
                    - f64::from(u8::from(x3 < -0.5))
                    + if x4_missing { 1.0 } else { x4 }
                    - 0.5;
            let row = [x0, x1, x2, x3, if x4_missing { f64::NAN } else { x4 }, x5];
            for (j, v) in row.iter().enumerate() {
                x[[r, j]] = *v as f32;
            }
            y[r] = f32::from(u8::from(rng.random_bool(sigmoid(logit))));
        }
        (x, y)
    }

    fn params(n_trees: usize, depth: usize) -> GbdtParams {
        GbdtParams {
            n_trees,
            max_depth: depth,
            max_leaves: 1 << depth,
            learning_rate: 0.2,
            min_child_weight: 1.0,
            lambda: 1.0,
            gamma: 0.0,
            max_bins: 32,
            fine_bins: 512,
            range_sd: 4.0,
        }
    }

    /// Runs the server with several participants, summing their vectors.
    fn federate(
        parts: &[(Array2<f32>, Array1<f32>)],
        params: &GbdtParams,
        mut on_level: impl FnMut(&GbdtInstruction, &mut [GbdtCache]),
    ) -> GbdtModel {
        let mut server = GbdtServer::new(params.clone(), parts[0].0.ncols()).unwrap();
        let mut caches: Vec<GbdtCache> = parts.iter().map(|_| GbdtCache::new()).collect();
        while let Some(instr) = server.next() {
            on_level(&instr, &mut caches);
            let mut sum = vec![0.0; instr.output_len()];
            for ((x, y), c) in parts.iter().zip(caches.iter_mut()) {
                let v = gbdt_compute(&instr, x.view(), y.view(), c).unwrap();
                assert_eq!(v.len(), sum.len());
                sum.iter_mut().zip(&v).for_each(|(s, a)| *s += a);
            }
            // the server state is a checkpoint: it survives a serde round trip
            let json = serde_json::to_string(&server).unwrap();
            server = serde_json::from_str(&json).unwrap();
            server.absorb(&sum).unwrap();
        }
        server.into_model().unwrap()
    }

    /// Non-IID split: rows sorted by x1, cut into bands of 10/20/30/40%.
    fn non_iid_split(x: &Array2<f32>, y: &Array1<f32>) -> Vec<(Array2<f32>, Array1<f32>)> {
        let n = x.nrows();
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| x[[a, 1]].total_cmp(&x[[b, 1]]));
        let cuts = [0, n / 10, 3 * n / 10, 6 * n / 10, n];
        cuts.windows(2)
            .map(|w| {
                let rows = &idx[w[0]..w[1]];
                (x.select(Axis(0), rows), y.select(Axis(0), rows))
            })
            .collect()
    }

    fn assert_same_model(a: &GbdtModel, b: &GbdtModel) {
        assert_eq!(a.base_score, b.base_score);
        assert_eq!(a.bin_mapper, b.bin_mapper);
        assert_eq!(a.trees.len(), b.trees.len());
        for (t, (ta, tb)) in a.trees.iter().zip(&b.trees).enumerate() {
            assert_eq!(ta.nodes.len(), tb.nodes.len(), "tree {t}");
            for (i, (na, nb)) in ta.nodes.iter().zip(&tb.nodes).enumerate() {
                match (na, nb) {
                    (
                        Node::Split {
                            feature: fa,
                            bin: ba,
                            threshold: ha,
                            default_left: da,
                            left: la,
                            right: ra,
                            gain: ga,
                        },
                        Node::Split {
                            feature: fb,
                            bin: bb,
                            threshold: hb,
                            default_left: db,
                            left: lb,
                            right: rb,
                            gain: gb,
                        },
                    ) => {
                        assert_eq!(
                            (fa, ba, ha, da, la, ra),
                            (fb, bb, hb, db, lb, rb),
                            "tree {t} node {i}"
                        );
                        assert!((ga - gb).abs() <= 1e-9 * ga.abs().max(1.0));
                    }
                    (Node::Leaf { value: va }, Node::Leaf { value: vb }) => {
                        assert!((va - vb).abs() < 1e-9, "tree {t} leaf {i}: {va} vs {vb}");
                    }
                    _ => panic!("tree {t} node {i}: {na:?} vs {nb:?}"),
                }
            }
        }
    }

    #[test]
    fn beats_logistic_regression_on_a_nonlinear_signal() {
        let (x, y) = synthetic(12_000, 1);
        let (xtr, xte) = (
            x.slice_axis(Axis(0), Slice::from(..8000)),
            x.slice_axis(Axis(0), Slice::from(8000..)),
        );
        let (ytr, yte) = (
            y.slice_axis(Axis(0), Slice::from(..8000)),
            y.slice_axis(Axis(0), Slice::from(8000..)),
        );
        let model = fit_pooled(xtr, ytr, &params(60, 3)).unwrap();
        let p = model.predict_proba(xte).unwrap();
        let yte_v = yte.to_vec();
        let gbdt_auc = auc(&p, &yte_v);
        // logistic baseline, missing imputed as 0
        let imp = |a: ArrayView2<f32>| a.mapv(|v| if v.is_nan() { 0.0 } else { v });
        let lin = crate::linear::fit_pooled(imp(xtr).view(), ytr, 1e-4, 1.0).unwrap();
        let lin_auc = auc(
            &crate::linear::predict_proba(&lin, imp(xte).view()).unwrap(),
            &yte_v,
        );
        assert!(
            gbdt_auc > lin_auc + 0.08,
            "gbdt {gbdt_auc} vs logistic {lin_auc}"
        );
        assert!(gbdt_auc > 0.78, "{gbdt_auc}");
        // margins from raw rows equal margins from binned rows; probabilities in (0, 1)
        let b = model.bin_mapper.bin(xte).unwrap();
        assert_eq!(
            model.predict_margin_binned(b.view()).unwrap(),
            model.predict_margin(xte).unwrap()
        );
        assert!(p.iter().all(|&v| v > 0.0 && v < 1.0));
        // the informative features carry the gain; x5 is noise
        let g = model.feature_gain();
        assert!(g[0] > g[5] && g[1] > g[5] && g[2] > g[5], "{g:?}");
    }

    #[test]
    fn federated_trees_equal_pooled_trees() {
        let (x, y) = synthetic(6000, 2);
        let parts = non_iid_split(&x, &y);
        let p = params(25, 4);
        let fed = federate(&parts, &p, |_, _| {});
        let xs: Vec<_> = parts.iter().map(|(x, _)| x.view()).collect();
        let ys: Vec<_> = parts.iter().map(|(_, y)| y.view()).collect();
        let xc = ndarray::concatenate(Axis(0), &xs).unwrap();
        let yc = ndarray::concatenate(Axis(0), &ys).unwrap();
        let pooled = fit_pooled(xc.view(), yc.view(), &p).unwrap();
        assert_eq!(pooled.trees.len(), 25);
        assert!(pooled.trees.iter().any(|t| t.nodes.len() > 7));
        assert_same_model(&fed, &pooled);
        // also against the original row order (sums are order-independent up to rounding)
        let pooled_orig = fit_pooled(x.view(), y.view(), &p).unwrap();
        assert_same_model(&fed, &pooled_orig);
        // Stronger, thanks to the gradient grid: histogram sums are exact, so the models are
        // bit-for-bit equal (only the feature ranges come from inexact Σx sums, and their f32
        // rounding agrees here).
        assert_eq!(fed, pooled);
        assert_eq!(fed, pooled_orig);
    }

    #[test]
    fn restarted_participant_computes_the_identical_vector() {
        let (x, y) = synthetic(3000, 3);
        let parts = non_iid_split(&x, &y);
        let mut checked = 0;
        let _ = federate(&parts, &params(6, 3), |instr, caches| {
            if let GbdtInstruction::Level { model, tree, .. } = instr {
                if model.trees.len() >= 2 && tree.nodes.len() > 1 {
                    // over the wire and with an empty cache
                    let wire: GbdtInstruction =
                        serde_json::from_str(&serde_json::to_string(instr).unwrap()).unwrap();
                    let (px, py) = &parts[2];
                    let warm = gbdt_compute(instr, px.view(), py.view(), &mut caches[2]).unwrap();
                    let cold =
                        gbdt_compute(&wire, px.view(), py.view(), &mut GbdtCache::new()).unwrap();
                    assert_eq!(warm, cold);
                    checked += 1;
                }
            }
        });
        assert!(checked >= 4, "{checked}");
    }

    #[test]
    fn best_split_hand_example() {
        // one node, one feature, 3 value bins + missing; λ = 1, γ = 0.
        // bins: (g, h) = (−4, 2), (−2, 2), (4, 2); missing (3, 1); G = 1, H = 7.
        // threshold 1, missing right: L = (−6, 4), R = (7, 3):
        //   ½(36/5 + 49/4 − 1/8) = 9.6625 — the best of the six candidates.
        let h = [-4.0, 2.0, -2.0, 2.0, 4.0, 2.0, 3.0, 1.0];
        let mut p = params(1, 1);
        p.min_child_weight = 0.0;
        let s = best_splits(&h, &[0], 1, 4, &p).unwrap()[0].clone().unwrap();
        assert_eq!((s.feature, s.bin, s.default_left), (0, 1, false));
        assert!((s.gain - 9.6625).abs() < 1e-12);
        assert_eq!(
            (s.left_grad, s.left_hess, s.right_grad, s.right_hess),
            (-6.0, 4.0, 7.0, 3.0)
        );
        // missing rows with negative gradient: learned default goes left.
        // bins (−4, 2), (4, 2), (0, 0); missing (−3, 1): threshold 0, missing left:
        // ½(49/4 + 16/3 − 9/6) = 8.0417 > missing right ½(16/3 + 1/4 − 1.5) = 2.04.
        let h2 = [-4.0, 2.0, 4.0, 2.0, 0.0, 0.0, -3.0, 1.0];
        let s2 = best_splits(&h2, &[0], 1, 4, &p).unwrap()[0]
            .clone()
            .unwrap();
        assert_eq!((s2.bin, s2.default_left), (0, true));
        assert!((s2.gain - 0.5 * (49.0 / 4.0 + 16.0 / 3.0 - 1.5)).abs() < 1e-12);
        // min_child_weight 3.5: every candidate has a child below it
        p.min_child_weight = 3.5;
        assert_eq!(best_splits(&h, &[0], 1, 4, &p).unwrap()[0], None);
        // γ above the best gain: no split
        p.min_child_weight = 0.0;
        p.gamma = 10.0;
        assert_eq!(best_splits(&h, &[0], 1, 4, &p).unwrap()[0], None);
    }

    #[test]
    fn round_cut_points() {
        assert_eq!(round_in(0.19, 0.98), 0.5);
        assert_eq!(round_in(24.09, 24.99), 24.5);
        assert_eq!(round_in(-3.2, 7.9), 0.0);
        assert_eq!(round_in(1203.0, 1290.0), 1250.0);
        assert_eq!(round_in(0.0123, 0.0127), 0.0125);
        assert_eq!(round_in(5.0, 5.0), 5.0);
        assert_eq!(round_in(-24.99, -24.09), -24.5);
    }

    #[test]
    fn level_histograms_layout() {
        // 4 rows, 2 features, 3 bins; rows 0,1 in node 5, row 2 in node 3, row 3 closed
        let binned = ndarray::array![[0u8, 2], [1, 2], [1, 0], [2, 1]];
        let g = [1.0, 2.0, 3.0, 4.0];
        let h = [0.1, 0.2, 0.3, 0.4];
        let nodes = [5, 5, 3, u32::MAX];
        let out = level_histograms(binned.view(), &g, &h, &nodes, &[3, 5], 3).unwrap();
        assert_eq!(out.len(), 2 * 2 * 3 * 2);
        let at = |slot: usize, f: usize, b: usize| {
            let o = ((slot * 2 + f) * 3 + b) * 2;
            (out[o], out[o + 1])
        };
        assert_eq!(at(0, 0, 1), (3.0, 0.3)); // node 3, feature 0, bin 1: row 2
        assert_eq!(at(0, 1, 0), (3.0, 0.3));
        assert_eq!(at(1, 0, 0), (1.0, 0.1)); // node 5: rows 0, 1
        assert_eq!(at(1, 0, 1), (2.0, 0.2));
        assert_eq!(at(1, 1, 2), (3.0, 0.30000000000000004));
        assert_eq!(
            out.iter().sum::<f64>(),
            (1.0 + 2.0 + 3.0 + 0.1 + 0.2 + 0.3) * 2.0
        );
        // bad inputs
        assert!(matches!(
            level_histograms(binned.view(), &g[..3], &h, &nodes, &[3, 5], 3),
            Err(GbdtError::ShapeMismatch {
                what: "gradients",
                ..
            })
        ));
        assert!(matches!(
            level_histograms(binned.view(), &g, &h, &nodes, &[3, 5], 2),
            Err(GbdtError::BinOutOfRange { .. })
        ));
        assert!(matches!(
            level_histograms(binned.view(), &g, &h, &nodes, &[3, 3], 3),
            Err(GbdtError::BadInstruction(_))
        ));
    }

    #[test]
    fn bin_mapper_quantiles_few_values_and_thresholds() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let n = 20_000;
        let mut x = Array2::<f32>::zeros((n, 3));
        for r in 0..n {
            x[[r, 0]] = rng.sample::<f64, _>(StandardNormal) as f32; // continuous
            x[[r, 1]] = f32::from(u8::from(rng.random_bool(0.3))); // binary
            x[[r, 2]] = if r % 5 == 0 { f32::NAN } else { (r % 7) as f32 }; // 7 values + NaN
        }
        let ranges = [(-4.0, 4.0), (-1.0, 2.0), (-5.0, 20.0)];
        let hist = fine_histogram(x.view(), &ranges, 1000).unwrap();
        assert_eq!(hist.len(), 3 * 1001);
        assert_eq!(hist[2 * 1001 + 1000], (n / 5) as f64); // missing slot
        let m = BinMapper::from_fine_histogram(&hist, &ranges, 1000, 16).unwrap();
        assert_eq!(m.feature_bins(0), 16);
        assert_eq!(m.feature_bins(1), 2);
        assert_eq!(m.feature_bins(2), 7);
        let b = m.bin(x.view()).unwrap();
        // continuous feature: roughly equal counts per bin
        let mut counts = [0usize; 16];
        for &v in b.column(0) {
            counts[v as usize] += 1;
        }
        for c in counts {
            assert!(
                (c as f64 - n as f64 / 16.0).abs() < 0.15 * n as f64 / 16.0,
                "{counts:?}"
            );
        }
        // one bin per distinct value, NaN in the missing bin
        for r in 0..50 {
            let expect = if r % 5 == 0 {
                m.missing_bin()
            } else {
                (r % 7) as u8
            };
            assert_eq!(b[[r, 2]], expect);
        }
        // "bin ≤ b" ⇔ "v < threshold(b)" for finite v
        for j in 0..3 {
            for bb in 0..m.feature_bins(j) as u8 {
                let t = m.threshold(j, bb);
                for r in 0..2000 {
                    let v = x[[r, j]];
                    if !v.is_nan() {
                        assert_eq!(m.bin_value(j, v) <= bb, v < t);
                    }
                }
            }
        }
        // refusals
        assert!(matches!(
            BinMapper::from_fine_histogram(&hist[1..], &ranges, 1000, 16),
            Err(GbdtError::SumLength { .. })
        ));
        assert!(BinMapper::from_fine_histogram(&hist, &ranges, 1000, 256).is_err());
        assert!(m.bin(x.slice_axis(Axis(1), Slice::from(..2))).is_err());
        assert!(BinMapper::from_cuts(vec![vec![1.0, 0.5]], 4).is_err());
        assert!(fine_histogram(x.view(), &ranges[..2], 10).is_err());
    }

    #[test]
    fn tree_shape_respects_depth_and_leaf_limits() {
        let (x, y) = synthetic(4000, 5);
        let mut p = params(5, 5);
        p.max_leaves = 7;
        let m = fit_pooled(x.view(), y.view(), &p).unwrap();
        for t in &m.trees {
            assert!(t.n_leaves() <= 7);
            t.validate(&m.bin_mapper, true).unwrap();
        }
        // depth: follow every path
        fn depth(t: &Tree, i: usize) -> usize {
            match t.nodes[i] {
                Node::Split { left, right, .. } => {
                    1 + depth(t, left as usize).max(depth(t, right as usize))
                }
                _ => 0,
            }
        }
        let p2 = params(5, 2);
        let m2 = fit_pooled(x.view(), y.view(), &p2).unwrap();
        assert!(m2.trees.iter().all(|t| depth(t, 0) <= 2));
        assert!(m2.trees.iter().any(|t| depth(t, 0) == 2));
    }

    #[test]
    fn bad_inputs_are_refused_with_typed_errors() {
        let (x, y) = synthetic(500, 6);
        let p = params(3, 2);
        let mut server = GbdtServer::new(p.clone(), 6).unwrap();
        assert!(matches!(
            server.absorb(&[1.0; 3]),
            Err(GbdtError::SumLength {
                step: "stats",
                expected: 20,
                got: 3
            })
        ));
        assert_eq!(server.next().unwrap().purpose(), "stats"); // unchanged
        assert!(matches!(server.absorb(&[0.0; 20]), Err(GbdtError::NoRows)));
        assert_eq!(server.max_abs(), None);
        // drive to the first level, then send a short sum
        let mut cache = GbdtCache::new();
        for _ in 0..2 {
            let i = server.next().unwrap();
            let v = gbdt_compute(&i, x.view(), y.view(), &mut cache).unwrap();
            server.absorb(&v).unwrap();
        }
        let level = server.next().unwrap();
        assert_eq!(level.purpose(), "level");
        assert_eq!(server.max_abs(), Some(500.0));
        assert!(matches!(
            server.absorb(&vec![0.0; level.output_len() - 1]),
            Err(GbdtError::SumLength { step: "level", .. })
        ));
        let mut bad = vec![0.0; level.output_len()];
        bad[0] = f64::NAN;
        assert!(matches!(
            server.absorb(&bad),
            Err(GbdtError::NonFinite { .. })
        ));
        // participant side
        let mut y2 = y.clone();
        y2[3] = 2.0;
        assert!(matches!(
            gbdt_compute(&level, x.view(), y2.view(), &mut cache),
            Err(GbdtError::BadLabel { row: 3, .. })
        ));
        assert!(matches!(
            gbdt_compute(
                &level,
                x.slice_axis(Axis(1), Slice::from(..5)),
                y.view(),
                &mut cache
            ),
            Err(GbdtError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            gbdt_compute(
                &level,
                x.view(),
                y.slice_axis(Axis(0), Slice::from(..10)),
                &mut cache
            ),
            Err(GbdtError::ShapeMismatch { what: "labels", .. })
        ));
        // a malformed tree (a child pointing back at the root) is refused, not looped on
        if let GbdtInstruction::Level { model, .. } = &level {
            let evil = GbdtInstruction::Level {
                model: model.clone(),
                tree: Tree {
                    nodes: vec![
                        Node::Split {
                            feature: 0,
                            bin: 0,
                            threshold: 0.0,
                            default_left: true,
                            left: 0,
                            right: 1,
                            gain: 1.0,
                        },
                        Node::Open {
                            sum_grad: 0.0,
                            sum_hess: 0.0,
                            depth: 1,
                        },
                    ],
                },
                nodes: vec![1],
            };
            assert!(matches!(
                gbdt_compute(&evil, x.view(), y.view(), &mut cache),
                Err(GbdtError::BadInstruction(_))
            ));
        }
        // parameters
        let mut q = p.clone();
        q.max_bins = 300;
        assert!(matches!(
            GbdtServer::new(q, 6),
            Err(GbdtError::InvalidParameter {
                name: "max_bins",
                ..
            })
        ));
        assert!(GbdtServer::new(p.clone(), 0).is_err());
        // finishing, then absorbing again
        let m = fit_pooled(x.view(), y.view(), &p).unwrap();
        assert!(matches!(
            m.predict_proba(x.slice_axis(Axis(1), Slice::from(..4))),
            Err(GbdtError::ShapeMismatch { .. })
        ));
        let mut s = GbdtServer::new(p, 6).unwrap();
        let mut c = GbdtCache::new();
        while let Some(i) = s.next() {
            let v = gbdt_compute(&i, x.view(), y.view(), &mut c).unwrap();
            s.absorb(&v).unwrap();
        }
        assert!(s.is_done() && s.model().is_some());
        assert!(matches!(s.absorb(&[0.0]), Err(GbdtError::Finished)));
    }

    /// Minimal CSV reader for the shipped data (no quoted fields in these files).
    fn read_csv(path: &str) -> (Vec<String>, Vec<Vec<String>>) {
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines = text.lines();
        let header = lines
            .next()
            .unwrap()
            .split(',')
            .map(str::to_string)
            .collect();
        let rows = lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split(',').map(|s| s.trim().to_string()).collect())
            .collect();
        (header, rows)
    }

    #[test]
    fn churn_data_test_auc() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/wa_churn.csv");
        let (header, rows) = read_csv(path);
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        let num = |v: &str| v.parse::<f32>().unwrap_or(f32::NAN);
        let is = |v: &str, w: &str| f32::from(u8::from(v == w));
        let (c_tenure, c_monthly, c_total) =
            (col("tenure"), col("monthly_charges"), col("total_charges"));
        let (c_contract, c_internet, c_pay) = (
            col("contract"),
            col("internet_service"),
            col("payment_method"),
        );
        let binary = [
            "senior_citizen",
            "partner",
            "dependents",
            "paperless_billing",
        ]
        .map(col);
        let (c_sec, c_tech, c_churn) = (col("online_security"), col("tech_support"), col("churn"));
        let n = rows.len();
        let d = 13;
        let mut x = Array2::<f32>::zeros((n, d));
        let mut labels = Array2::<f32>::zeros((n, 1));
        for (r, row) in rows.iter().enumerate() {
            let mut v = vec![
                num(&row[c_tenure]),
                num(&row[c_monthly]),
                num(&row[c_total]),
            ];
            v.extend(binary.iter().map(|&c| num(&row[c])));
            v.push(is(&row[c_contract], "Month-to-month"));
            v.push(is(&row[c_contract], "Two year"));
            v.push(is(&row[c_internet], "Fiber optic"));
            v.push(is(&row[c_internet], "No"));
            v.push(is(&row[c_pay], "Electronic check"));
            v.push(is(&row[c_sec], "Yes") + is(&row[c_tech], "Yes"));
            for (j, val) in v.into_iter().enumerate() {
                x[[r, j]] = val;
            }
            labels[[r, 0]] = is(&row[c_churn], "Yes");
        }
        assert_eq!(x.column(2).iter().filter(|v| v.is_nan()).count(), 11);
        let table = crate::table::Table {
            feature_names: (0..d).map(|j| format!("f{j}")).collect(),
            x,
            label_names: vec!["churn".into()],
            labels,
            ids: (0..n).map(|r| r.to_string()).collect(),
        };
        let (train, test) = table.split_holdout(0.2, 0);
        let p = GbdtParams {
            n_trees: 50,
            max_depth: 4,
            max_leaves: 16,
            learning_rate: 0.1,
            ..GbdtParams::default()
        };
        let model = fit_pooled(train.x.view(), train.label(0), &p).unwrap();
        let scores = model.predict_proba(test.x.view()).unwrap();
        let a = auc(&scores, &test.label(0).to_vec());
        assert!(a > 0.80, "test AUC {a}");
        eprintln!(
            "wa_churn GBDT test AUC = {a:.4} ({} trees)",
            model.trees.len()
        );
    }
}
