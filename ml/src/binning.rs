//! The bin agreement shared by the boosted trees ([`crate::gbdt`]) and the scorecard
//! ([`crate::scorecard`]): both learn from sums over quantile bins that every participant
//! computes identically, and both agree on those bins the same way, from sums only:
//!
//! 1. **Stats** ([`local_stats`] → sum → [`FeatureStats`]): row count, positive count, and per
//!    feature the non-missing count, Σx and Σx²; the server derives a range `mean ± k·sd` per
//!    feature ([`spread_ranges`]).
//! 2. **Fine histogram** ([`fine_histogram`] → sum): per feature, counts over equal-width bins
//!    of that range plus a missing slot.
//! 3. **Cut points** ([`BinMapper::from_fine_histogram`]): up to `max_bins` quantile bins per
//!    feature; a value `v` falls in value bin `#{cuts ≤ v}` ([`value_bin`]).
//!
//! [`BinningError`] holds the faults the two models share (shapes, aggregate lengths,
//! non-finite values, labels, parameter domains, cut points); [`crate::gbdt::GbdtError`] and
//! [`crate::scorecard::ScorecardError`] each wrap it in one variant.
//!
//! Conventions: labels are 0/1 (`f32`); missing values are `NaN`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use ndarray::{Array2, ArrayView1, ArrayView2, ShapeBuilder};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Largest number of value bins per feature (one more slot is the missing bin, so bins fit a
/// `u8`).
pub const MAX_BINS: usize = 255;
/// Most fine-histogram bins per feature ([`fine_histogram`]): the bound of
/// [`crate::gbdt::GbdtParams::fine_bins`], so an instruction from outside cannot size a larger
/// histogram.
pub const MAX_FINE_BINS: usize = 1 << 16;

/// Faults of binned data, of the sums over bins and of their parameters: the variants the
/// boosted trees and the scorecard share.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BinningError {
    /// A vector or matrix dimension does not match the others or the model.
    #[error("{what}: expected {expected}, got {got}")]
    ShapeMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// An aggregate (a sum over participants) has the wrong length for its step.
    #[error("aggregate for step '{step}' has {got} values, expected {expected}")]
    SumLength {
        step: &'static str,
        expected: usize,
        got: usize,
    },
    /// A parameter is outside its domain.
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
    /// A feature has more cut points than its bins allow.
    #[error("bin mapper: feature {feature} has {cuts} cuts for {max_bins} bins")]
    TooManyCuts {
        feature: usize,
        cuts: usize,
        max_bins: usize,
    },
    /// A feature's cut points are not finite and strictly increasing.
    #[error("cuts of feature {feature} are not finite and strictly increasing")]
    BadCuts { feature: usize },
    /// The binned matrix could not be laid out (rows × features does not fit).
    #[error("binned matrix: {0}")]
    Layout(#[source] ndarray::ShapeError),
}

/// `Err(InvalidParameter)` in any error type that wraps [`BinningError`].
pub(crate) fn invalid<E: From<BinningError>>(
    name: &'static str,
    value: f64,
    reason: &'static str,
) -> E {
    E::from(BinningError::InvalidParameter {
        name,
        value,
        reason,
    })
}

/// An aggregate of `expected` finite values: `SumLength` for `step`, then `NonFinite` naming
/// `what`.
pub(crate) fn check_sum(
    sum: &[f64],
    step: &'static str,
    expected: usize,
    what: &'static str,
) -> Result<(), BinningError> {
    if sum.len() != expected {
        return Err(BinningError::SumLength {
            step,
            expected,
            got: sum.len(),
        });
    }
    if sum.iter().any(|v| !v.is_finite()) {
        return Err(BinningError::NonFinite { what });
    }
    Ok(())
}

/// `n` labels, each 0 or 1.
pub(crate) fn check_labels(y: ArrayView1<f32>, n: usize) -> Result<(), BinningError> {
    if y.len() != n {
        return Err(BinningError::ShapeMismatch {
            what: "labels",
            expected: n,
            got: y.len(),
        });
    }
    // One pass without a branch per label (a 0/1 label column is a coin toss for the
    // predictor, and every level of a boosting job checks it), then the first bad one's row.
    let bad = y
        .iter()
        .fold(false, |bad, &v| bad | ((v != 0.0) & (v != 1.0)));
    if bad {
        if let Some((row, &v)) = y.iter().enumerate().find(|(_, &v)| v != 0.0 && v != 1.0) {
            return Err(BinningError::BadLabel { row, value: v });
        }
    }
    Ok(())
}

/// Whether `cuts` are finite and strictly increasing (what every list of cut points must be).
pub(crate) fn cuts_are_increasing(cuts: &[f32]) -> bool {
    !(cuts.iter().any(|v| !v.is_finite()) || cuts.windows(2).any(|w| w[0] >= w[1]))
}

/// `Err(BadCuts)` for feature `feature` unless its cuts are finite and strictly increasing.
pub(crate) fn check_cuts(feature: usize, cuts: &[f32]) -> Result<(), BinningError> {
    if cuts_are_increasing(cuts) {
        Ok(())
    } else {
        Err(BinningError::BadCuts { feature })
    }
}

/// The value bin of a non-missing `v` under increasing `cuts`: `#{cuts ≤ v}`.
#[inline]
pub fn value_bin(cuts: &[f32], v: f32) -> usize {
    cuts.partition_point(|&c| c <= v)
}

fn check_fine_bins(fine_bins: usize) -> Result<(), BinningError> {
    if fine_bins == 0 || fine_bins > MAX_FINE_BINS {
        return Err(invalid(
            "fine_bins",
            fine_bins as f64,
            "must be in 1..=65536",
        ));
    }
    Ok(())
}

fn check_max_bins(max_bins: usize) -> Result<(), BinningError> {
    if !(2..=MAX_BINS).contains(&max_bins) {
        return Err(invalid("max_bins", max_bins as f64, "must be in 2..=255"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fine histogram and cut points
// ---------------------------------------------------------------------------------------------

/// Participant half of the bin agreement: per feature, counts over `fine_bins` equal-width
/// bins of `ranges[j] = (lo, hi)` (values below `lo` / above `hi` are clamped into the end
/// bins; a constant range puts everything in bin 0), followed by one slot counting `NaN`s.
/// Layout `[feature][fine_bins + 1]`.
pub fn fine_histogram(
    x: ArrayView2<f32>,
    ranges: &[(f32, f32)],
    fine_bins: usize,
) -> Result<Vec<f64>, BinningError> {
    let f = x.ncols();
    if ranges.len() != f {
        return Err(BinningError::ShapeMismatch {
            what: "ranges (one per feature)",
            expected: f,
            got: ranges.len(),
        });
    }
    check_fine_bins(fine_bins)?;
    check_ranges(ranges)?;
    let width = fine_bins + 1;
    // Per feature: the left end and bins per unit (0 for a constant range: bin 0).
    let lo_scale: Vec<(f64, f64)> = ranges
        .iter()
        .map(|&(lo, hi)| {
            let (lo, hi) = (f64::from(lo), f64::from(hi));
            (
                lo,
                if hi > lo {
                    fine_bins as f64 / (hi - lo)
                } else {
                    0.0
                },
            )
        })
        .collect();
    let top = (fine_bins - 1) as f64;
    let fine_bin = |j: usize, v: f32| -> usize {
        if v.is_nan() {
            fine_bins
        } else {
            let (lo, scale) = lo_scale[j];
            ((f64::from(v) - lo) * scale).floor().clamp(0.0, top) as usize
        }
    };
    if let (Some(data), true) = (row_major(&x), f > 0) {
        // One pass over the rows as they lie in memory; counts are exact in any order.
        let zero = || vec![0.0; f * width];
        return Ok(data
            .par_chunks(ROW_BLOCK * f)
            .fold(zero, |mut out, block| {
                for row in block.chunks_exact(f) {
                    for (j, &v) in row.iter().enumerate() {
                        out[j * width + fine_bin(j, v)] += 1.0;
                    }
                }
                out
            })
            .reduce(zero, |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            }));
    }
    let mut out = vec![0.0; f * width];
    out.par_chunks_mut(width).enumerate().for_each(|(j, hist)| {
        for &v in x.column(j) {
            hist[fine_bin(j, v)] += 1.0;
        }
    });
    Ok(out)
}

/// Rows per task of the row-streaming passes over a row-major matrix.
const ROW_BLOCK: usize = 8192;

/// The values of a row-major (standard layout, contiguous) matrix, row after row.
fn row_major<'a>(x: &ArrayView2<'a, f32>) -> Option<&'a [f32]> {
    x.to_slice()
}

fn check_ranges(ranges: &[(f32, f32)]) -> Result<(), BinningError> {
    for &(lo, hi) in ranges {
        if !(lo.is_finite() && hi.is_finite()) {
            return Err(BinningError::NonFinite { what: "ranges" });
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
    ) -> Result<BinMapper, BinningError> {
        check_max_bins(max_bins)?;
        check_fine_bins(fine_bins)?;
        check_ranges(ranges)?;
        let width = fine_bins + 1;
        let expected = ranges.len().saturating_mul(width);
        check_sum(sum, "fine_histogram", expected, "fine histogram")?;
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
    pub fn from_cuts(cuts: Vec<Vec<f32>>, max_bins: usize) -> Result<BinMapper, BinningError> {
        let m = BinMapper { cuts, max_bins };
        m.validate()?;
        Ok(m)
    }

    /// Checks the invariants (a mapper may arrive deserialised from the network).
    pub fn validate(&self) -> Result<(), BinningError> {
        check_max_bins(self.max_bins)?;
        for (j, c) in self.cuts.iter().enumerate() {
            if c.len() >= self.max_bins {
                return Err(BinningError::TooManyCuts {
                    feature: j,
                    cuts: c.len(),
                    max_bins: self.max_bins,
                });
            }
            check_cuts(j, c)?;
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
            value_bin(&self.cuts[j], v) as u8
        }
    }

    /// Bins every value of `x` (rows × features). The result is column-major (each feature
    /// contiguous), which is what the level histograms of [`crate::gbdt`] read fastest.
    pub fn bin(&self, x: ArrayView2<f32>) -> Result<Array2<u8>, BinningError> {
        let (n, f) = x.dim();
        if f != self.cuts.len() {
            return Err(BinningError::ShapeMismatch {
                what: "feature columns",
                expected: self.cuts.len(),
                got: f,
            });
        }
        let mut data = vec![0u8; n * f];
        if let (Some(rows), true) = (row_major(&x), n > 0 && f > 0) {
            // One pass over the rows as they lie in memory into column-major tiles of
            // ROW_BLOCK rows, then each column assembled from its tiles.
            let tiles: Vec<Vec<u8>> = rows
                .par_chunks(ROW_BLOCK * f)
                .map(|block| {
                    let m = block.len() / f;
                    let mut tile = vec![0u8; m * f];
                    for (r, row) in block.chunks_exact(f).enumerate() {
                        for (j, &v) in row.iter().enumerate() {
                            tile[j * m + r] = self.bin_value(j, v);
                        }
                    }
                    tile
                })
                .collect();
            data.par_chunks_mut(n).enumerate().for_each(|(j, col)| {
                for (dst, tile) in col.chunks_mut(ROW_BLOCK).zip(&tiles) {
                    let m = dst.len();
                    dst.copy_from_slice(&tile[j * m..(j + 1) * m]);
                }
            });
        } else if n > 0 {
            data.par_chunks_mut(n).enumerate().for_each(|(j, col)| {
                for (o, &v) in col.iter_mut().zip(x.column(j)) {
                    *o = self.bin_value(j, v);
                }
            });
        }
        Array2::from_shape_vec((n, f).f(), data).map_err(BinningError::Layout)
    }

    /// The real-valued threshold of "bin ≤ b": a non-missing `v` has `bin ≤ b` ⇔
    /// `v < threshold` (`f32::MAX` when `b` is the feature's last value bin).
    pub fn threshold(&self, j: usize, b: u8) -> f32 {
        self.cuts(j).get(b as usize).copied().unwrap_or(f32::MAX)
    }

    pub(crate) fn fingerprint(&self) -> u64 {
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
// Stats step: the ranges of the fine histograms
// ---------------------------------------------------------------------------------------------

/// Participant half of the stats step: `[rows, positives, then per feature: non-missing
/// count, Σx, Σx²]` (length `2 + 3·features`). Also the first step of a federated scorecard.
pub fn local_stats(x: ArrayView2<f32>, y: ArrayView1<f32>) -> Result<Vec<f64>, BinningError> {
    let (n, f) = x.dim();
    check_labels(y, n)?;
    let mut out = vec![0.0; 2 + 3 * f];
    out[0] = n as f64;
    out[1] = y.iter().filter(|&&v| v == 1.0).count() as f64;
    let add = |o: &mut [f64], v: f32| {
        if !v.is_nan() {
            let v = f64::from(v);
            o[0] += 1.0;
            o[1] += v;
            o[2] += v * v;
        }
    };
    if let (Some(rows), true) = (row_major(&x), f > 0) {
        // One pass over the rows as they lie in memory; the blocks' partial sums are added
        // in block order, so the result does not depend on the threads.
        let partials: Vec<Vec<f64>> = rows
            .par_chunks(ROW_BLOCK * f)
            .map(|block| {
                let mut o = vec![0.0; 3 * f];
                for row in block.chunks_exact(f) {
                    for (o, &v) in o.chunks_exact_mut(3).zip(row) {
                        add(o, v);
                    }
                }
                o
            })
            .collect();
        for p in partials {
            out[2..].iter_mut().zip(&p).for_each(|(a, b)| *a += b);
        }
    } else {
        out[2..].par_chunks_mut(3).enumerate().for_each(|(j, o)| {
            for &v in x.column(j) {
                add(o, v);
            }
        });
    }
    if out.iter().any(|v| !v.is_finite()) {
        return Err(BinningError::NonFinite { what: "features" });
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
    pub fn from_sum(sum: &[f64], n_features: usize) -> Result<Self, BinningError> {
        let expected = 2 + 3 * n_features;
        check_sum(sum, "stats", expected, "stats sum")?;
        if sum[0] < 0.5 {
            return Err(BinningError::NoRows);
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Axis, Slice};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    /// The row-streaming passes over a row-major matrix give what the column passes give
    /// over the same values stored column-major: the same counts and bins exactly, the same
    /// moments to rounding.
    #[test]
    fn row_major_passes_equal_column_passes() {
        let (n, f) = (20_000, 7); // several row blocks, the last one short
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x = Array2::from_shape_fn((n, f), |(_, j)| {
            if j == 2 && rng.random_bool(0.1) {
                f32::NAN
            } else {
                rng.sample::<f64, _>(StandardNormal) as f32 * (j + 1) as f32
            }
        });
        let mut xf = Array2::<f32>::zeros((n, f).f());
        xf.assign(&x);
        assert!(x.as_slice().is_some() && xf.as_slice().is_none());
        let y = Array1::from_shape_fn(n, |r| (r % 3 == 0) as u8 as f32);
        let (a, b) = (
            local_stats(x.view(), y.view()).unwrap(),
            local_stats(xf.view(), y.view()).unwrap(),
        );
        assert_eq!(a.len(), b.len());
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() <= 1e-9 * v.abs().max(1.0), "{u} vs {v}");
        }
        let ranges: Vec<(f32, f32)> = (0..f)
            .map(|j| (-2.0 * (j + 1) as f32, 2.0 * (j + 1) as f32))
            .collect();
        let (fa, fb) = (
            fine_histogram(x.view(), &ranges, 300).unwrap(),
            fine_histogram(xf.view(), &ranges, 300).unwrap(),
        );
        assert_eq!(fa, fb);
        assert_eq!(fa.iter().sum::<f64>(), (n * f) as f64);
        let mapper = BinMapper::from_fine_histogram(&fa, &ranges, 300, 40).unwrap();
        let (ba, bb) = (
            mapper.bin(x.view()).unwrap(),
            mapper.bin(xf.view()).unwrap(),
        );
        assert_eq!(ba, bb);
        assert_eq!(ba[[17, 2]], mapper.bin_value(2, x[[17, 2]]));
        assert!(ba.t().as_slice().is_some(), "binned rows are column-major");
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
            Err(BinningError::SumLength { .. })
        ));
        assert!(BinMapper::from_fine_histogram(&hist, &ranges, 1000, 256).is_err());
        assert!(m.bin(x.slice_axis(Axis(1), Slice::from(..2))).is_err());
        assert!(BinMapper::from_cuts(vec![vec![1.0, 0.5]], 4).is_err());
        assert!(fine_histogram(x.view(), &ranges[..2], 10).is_err());
    }
}
