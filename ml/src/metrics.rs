//! Binary classification metrics, exactly from scores and approximately from per-class score
//! histograms.
//!
//! The coordinator never sees scores: participants send [`ScoreHistogram`] counts (and their
//! log-loss sums), which are summed under secure aggregation and possibly noised for
//! differential privacy. Both paths share one implementation: the exact functions group the
//! scores into runs of equal score, the histogram functions use the bins; everything else works
//! on the resulting list of `(positives, negatives)` groups ordered by **descending score**.
//! A histogram therefore gives exactly the exact metric when all scores within each bin are
//! equal, and otherwise treats the scores within a bin as tied (AUC) or spread uniformly (lift).
//!
//! Conventions: a label counts as positive when it is > 0.5. Degenerate inputs (no positives
//! or no negatives) give the neutral values AUC 0.5, KS 0 and lift 1 rather than NaN, so that
//! metrics always serialise. NaN scores sort above every number.

use serde::{Deserialize, Serialize};

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// A histogram needs at least one bin.
    #[error("a score histogram needs at least one bin")]
    ZeroBins,
    /// A flat histogram has the wrong length for the bin count.
    #[error("flat histogram: expected {expected} values (2 × bins), got {got}")]
    LengthMismatch { expected: usize, got: usize },
    /// A flat histogram contains NaN or ±∞.
    #[error("flat histogram contains a non-finite count at index {index}")]
    NonFinite { index: usize },
}

/// Fraction of the population in the "top decile".
const TOP_FRACTION: f64 = 0.1;

#[inline]
fn is_pos(label: f32) -> bool {
    label > 0.5
}

/// Runs of equal score as `(positives, negatives)`, highest score first.
fn exact_groups(scores: &[f64], labels: &[f32]) -> Vec<(f64, f64)> {
    assert_eq!(
        scores.len(),
        labels.len(),
        "metrics: one label per score is required"
    );
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut groups: Vec<(f64, f64)> = Vec::new();
    let mut prev: Option<f64> = None;
    for i in idx {
        let s = scores[i];
        // `==` also merges −0.0 with +0.0, which total_cmp keeps adjacent.
        if prev != Some(s) || groups.is_empty() {
            groups.push((0.0, 0.0));
        }
        prev = Some(s);
        let g = groups.last_mut().expect("pushed above");
        if is_pos(labels[i]) {
            g.0 += 1.0;
        } else {
            g.1 += 1.0;
        }
    }
    groups
}

fn totals(groups: &[(f64, f64)]) -> (f64, f64) {
    groups
        .iter()
        .fold((0.0, 0.0), |(p, n), g| (p + g.0, n + g.1))
}

/// Probability that a random positive outscores a random negative, ties counting 1/2.
fn groups_auc(groups: &[(f64, f64)]) -> f64 {
    let (p, n) = totals(groups);
    if p <= 0.0 || n <= 0.0 {
        return 0.5;
    }
    let mut pos_above = 0.0;
    let mut wins = 0.0;
    for &(gp, gn) in groups {
        wins += gn * (pos_above + 0.5 * gp);
        pos_above += gp;
    }
    (wins / (p * n)).clamp(0.0, 1.0)
}

/// Largest |cumulative positive share − cumulative negative share| over score cut-offs.
fn groups_ks(groups: &[(f64, f64)]) -> f64 {
    let (p, n) = totals(groups);
    if p <= 0.0 || n <= 0.0 {
        return 0.0;
    }
    let (mut cp, mut cn, mut best) = (0.0, 0.0, 0.0f64);
    for &(gp, gn) in groups {
        cp += gp;
        cn += gn;
        best = best.max((cp / p - cn / n).abs());
    }
    best.min(1.0)
}

/// Positive rate among the top 10 % by score over the overall positive rate; a group that
/// straddles the cut-off contributes in proportion to the part of it inside.
fn groups_lift(groups: &[(f64, f64)]) -> f64 {
    let (p, n) = totals(groups);
    if p <= 0.0 || p + n <= 0.0 {
        return 1.0;
    }
    let target = TOP_FRACTION * (p + n);
    let (mut taken, mut captured) = (0.0, 0.0);
    for &(gp, gn) in groups {
        let size = gp + gn;
        if size <= 0.0 {
            continue;
        }
        if taken + size >= target {
            captured += gp * (target - taken) / size;
            break;
        }
        taken += size;
        captured += gp;
    }
    captured / (TOP_FRACTION * p)
}

/// Points after each group, starting at 0: `(population share, positive share, negative share)`.
fn groups_curve(groups: &[(f64, f64)]) -> Vec<(f64, f64, f64)> {
    let (p, n) = totals(groups);
    let share = |v: f64, t: f64| if t > 0.0 { v / t } else { 0.0 };
    let mut out = Vec::with_capacity(groups.len() + 1);
    out.push((0.0, 0.0, 0.0));
    let (mut cp, mut cn) = (0.0, 0.0);
    for &(gp, gn) in groups {
        cp += gp;
        cn += gn;
        out.push((share(cp + cn, p + n), share(cp, p), share(cn, n)));
    }
    out
}

/// Exact ROC AUC (Mann–Whitney: ties count 1/2). 0.5 when a class is absent.
///
/// # Panics
/// If `scores` and `labels` differ in length (also for the other exact metrics).
pub fn auc(scores: &[f64], labels: &[f32]) -> f64 {
    groups_auc(&exact_groups(scores, labels))
}

/// Kolmogorov–Smirnov statistic: the largest gap between the score distributions of the two
/// classes, as a fraction in `[0, 1]` (multiply by 100 for the banking convention).
pub fn ks(scores: &[f64], labels: &[f32]) -> f64 {
    groups_ks(&exact_groups(scores, labels))
}

/// Mean log-loss with probabilities clamped to `[1e-15, 1 − 1e-15]`; 0 for no rows.
pub fn log_loss(scores: &[f64], labels: &[f32]) -> f64 {
    assert_eq!(
        scores.len(),
        labels.len(),
        "metrics: one label per score is required"
    );
    if scores.is_empty() {
        return 0.0;
    }
    log_loss_sum(scores, labels) / scores.len() as f64
}

/// Sum of the clamped log-losses (what participants send next to their histograms).
pub fn log_loss_sum(scores: &[f64], labels: &[f32]) -> f64 {
    scores
        .iter()
        .zip(labels)
        .map(|(&s, &y)| {
            let p = s.clamp(1e-15, 1.0 - 1e-15);
            let y = f64::from(y);
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum()
}

/// Positive rate among the 10 % highest scores divided by the overall positive rate (ties at
/// the cut-off are shared proportionally). 1 when there are no positives.
pub fn top_decile_lift(scores: &[f64], labels: &[f32]) -> f64 {
    groups_lift(&exact_groups(scores, labels))
}

/// Exact ROC points `(false positive rate, true positive rate)` from (0, 0) to (1, 1), one per
/// distinct score, thresholds decreasing (ties are one step).
pub fn roc_curve(scores: &[f64], labels: &[f32]) -> Vec<(f64, f64)> {
    groups_curve(&exact_groups(scores, labels))
        .into_iter()
        .map(|(_, tp, fp)| (fp, tp))
        .collect()
}

/// Exact KS table: `(population fraction, cumulative positive share, cumulative negative
/// share)` from the highest scores down, starting at (0, 0, 0), one point per distinct score.
pub fn ks_curve(scores: &[f64], labels: &[f32]) -> Vec<(f64, f64, f64)> {
    groups_curve(&exact_groups(scores, labels))
}

/// Exact cumulative gains: `(population fraction, cumulative positive share)`.
pub fn gains_curve(scores: &[f64], labels: &[f32]) -> Vec<(f64, f64)> {
    groups_curve(&exact_groups(scores, labels))
        .into_iter()
        .map(|(pop, tp, _)| (pop, tp))
        .collect()
}

/// One band of a lift / calibration table (see [`band_table`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Band {
    /// 1 = the highest scores.
    pub band: usize,
    pub rows: usize,
    pub positives: usize,
    pub min_score: f64,
    pub max_score: f64,
    /// Mean predicted probability in the band (calibration: compare with `observed_rate`).
    pub mean_score: f64,
    /// Share of positives in the band.
    pub observed_rate: f64,
    /// `observed_rate` over the overall positive rate (1 when there are no positives).
    pub lift: f64,
    /// Positive rate of bands 1..=this over the overall rate.
    pub cumulative_lift: f64,
    /// Share of all positives in bands 1..=this.
    pub cumulative_capture: f64,
}

/// Rows ranked by score (highest first; equal scores keep their input order) and cut into
/// `bands` bands by position, row `i` of `n` in band `⌊i·bands/n⌋ + 1` (deciles for 10, as
/// `fedsilo score` numbers them): rows, positives, score range, mean score, observed rate,
/// lift, cumulative lift and capture per band. Empty bands (fewer rows than bands) are left
/// out.
///
/// # Panics
/// If `scores` and `labels` differ in length.
pub fn band_table(scores: &[f64], labels: &[f32], bands: usize) -> Vec<Band> {
    assert_eq!(
        scores.len(),
        labels.len(),
        "metrics: one label per score is required"
    );
    let n = scores.len();
    let bands = bands.max(1);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let total_pos = labels.iter().filter(|&&y| is_pos(y)).count();
    let base = if n > 0 {
        total_pos as f64 / n as f64
    } else {
        0.0
    };
    let ratio = |rate: f64| if base > 0.0 { rate / base } else { 1.0 };
    let mut out: Vec<Band> = Vec::with_capacity(bands);
    let (mut cum_rows, mut cum_pos) = (0usize, 0usize);
    let mut start = 0usize;
    for b in 0..bands {
        // Rows i with ⌊i·bands/n⌋ = b: i in [⌈b·n/bands⌉, ⌈(b+1)·n/bands⌉).
        let end = ((b + 1) * n).div_ceil(bands).min(n);
        if end <= start {
            continue;
        }
        let rows = &idx[start..end];
        let pos = rows.iter().filter(|&&r| is_pos(labels[r])).count();
        let sum: f64 = rows.iter().map(|&r| scores[r]).sum();
        cum_rows += rows.len();
        cum_pos += pos;
        let rate = pos as f64 / rows.len() as f64;
        out.push(Band {
            band: b + 1,
            rows: rows.len(),
            positives: pos,
            min_score: scores[rows[rows.len() - 1]],
            max_score: scores[rows[0]],
            mean_score: sum / rows.len() as f64,
            observed_rate: rate,
            lift: ratio(rate),
            cumulative_lift: ratio(cum_pos as f64 / cum_rows as f64),
            cumulative_capture: if total_pos > 0 {
                cum_pos as f64 / total_pos as f64
            } else {
                0.0
            },
        });
        start = end;
    }
    out
}

/// Per-class counts of scores in equal-width bins over `[0, 1]`; bin `b` holds scores in
/// `[b/bins, (b+1)/bins)`, the last bin also 1.0, and out-of-range scores go to the nearest end
/// bin. Counts are `f64` because the coordinator receives sums that may carry DP noise;
/// negative counts are treated as 0 by every computation (but kept by `to_flat`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreHistogram {
    pub pos: Vec<f64>,
    pub neg: Vec<f64>,
}

impl ScoreHistogram {
    /// An empty histogram; `bins = 0` is treated as 1 (use [`ScoreHistogram::from_flat`] to
    /// validate an external bin count).
    pub fn new(bins: usize) -> Self {
        let bins = bins.max(1);
        ScoreHistogram {
            pos: vec![0.0; bins],
            neg: vec![0.0; bins],
        }
    }

    /// Number of bins.
    pub fn bins(&self) -> usize {
        self.pos.len()
    }

    /// Counts one score.
    pub fn add(&mut self, score: f64, label: f32) {
        let bins = self.pos.len();
        if bins == 0 {
            return;
        }
        // Saturating casts: negatives and NaN → 0, large → usize::MAX.
        let b = ((score * bins as f64) as usize).min(bins - 1);
        if is_pos(label) {
            self.pos[b] += 1.0;
        } else {
            self.neg[b] += 1.0;
        }
    }

    /// Histogram of `scores` with `bins` bins.
    ///
    /// # Panics
    /// If `scores` and `labels` differ in length.
    pub fn from_scores(scores: &[f64], labels: &[f32], bins: usize) -> Self {
        assert_eq!(
            scores.len(),
            labels.len(),
            "metrics: one label per score is required"
        );
        let mut h = ScoreHistogram::new(bins);
        for (&s, &y) in scores.iter().zip(labels) {
            h.add(s, y);
        }
        h
    }

    /// Positive counts then negative counts (length `2·bins`), the secure-aggregation payload.
    pub fn to_flat(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(2 * self.pos.len());
        v.extend_from_slice(&self.pos);
        v.extend_from_slice(&self.neg);
        v
    }

    /// Inverse of [`ScoreHistogram::to_flat`]; refuses zero bins, a wrong length and
    /// non-finite values (negative counts are accepted).
    pub fn from_flat(v: &[f64], bins: usize) -> Result<Self, MetricsError> {
        if bins == 0 {
            return Err(MetricsError::ZeroBins);
        }
        if v.len() != 2 * bins {
            return Err(MetricsError::LengthMismatch {
                expected: 2 * bins,
                got: v.len(),
            });
        }
        if let Some(index) = v.iter().position(|c| !c.is_finite()) {
            return Err(MetricsError::NonFinite { index });
        }
        Ok(ScoreHistogram {
            pos: v[..bins].to_vec(),
            neg: v[bins..].to_vec(),
        })
    }

    /// Bins as `(positives, negatives)` with negatives clamped to 0, highest scores first.
    fn groups(&self) -> Vec<(f64, f64)> {
        self.pos
            .iter()
            .zip(&self.neg)
            .rev()
            .map(|(&p, &n)| (p.max(0.0), n.max(0.0)))
            .collect()
    }

    /// Positive count (negative noisy counts clamped to 0).
    pub fn positives(&self) -> f64 {
        self.pos.iter().map(|c| c.max(0.0)).sum()
    }

    /// Negative count (negative noisy counts clamped to 0).
    pub fn negatives(&self) -> f64 {
        self.neg.iter().map(|c| c.max(0.0)).sum()
    }

    /// AUC by the trapezoid rule over bin boundaries (= scores within a bin counted as tied).
    /// Differs from the exact AUC by at most the share of positive–negative pairs that fall in
    /// the same bin, halved.
    pub fn auc(&self) -> f64 {
        groups_auc(&self.groups())
    }

    /// KS evaluated at the bin boundaries (a lower bound of the exact KS).
    pub fn ks(&self) -> f64 {
        groups_ks(&self.groups())
    }

    /// Top-decile lift, interpolating linearly within the bin that straddles the 10 % cut-off.
    pub fn top_decile_lift(&self) -> f64 {
        groups_lift(&self.groups())
    }

    /// ROC points `(false positive rate, true positive rate)` from (0, 0) to (1, 1), one per
    /// bin boundary, thresholds decreasing.
    pub fn roc_curve(&self) -> Vec<(f64, f64)> {
        groups_curve(&self.groups())
            .into_iter()
            .map(|(_, tp, fp)| (fp, tp))
            .collect()
    }

    /// KS table: `(population fraction, cumulative positive share, cumulative negative share)`
    /// from the highest scores down, starting at (0, 0, 0).
    pub fn ks_curve(&self) -> Vec<(f64, f64, f64)> {
        groups_curve(&self.groups())
    }

    /// Cumulative gains: `(population fraction, cumulative positive share)` from the highest
    /// scores down, starting at (0, 0).
    pub fn gains_curve(&self) -> Vec<(f64, f64)> {
        groups_curve(&self.groups())
            .into_iter()
            .map(|(pop, tp, _)| (pop, tp))
            .collect()
    }
}

/// The metric set reported for a binary task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    pub auc: f64,
    pub ks: f64,
    pub log_loss: f64,
    pub top_decile_lift: f64,
    pub positives: f64,
    pub negatives: f64,
}

impl BinaryMetrics {
    /// Exact metrics from scores.
    ///
    /// # Panics
    /// If `scores` and `labels` differ in length.
    pub fn from_scores(scores: &[f64], labels: &[f32]) -> Self {
        let groups = exact_groups(scores, labels);
        let (positives, negatives) = totals(&groups);
        BinaryMetrics {
            auc: groups_auc(&groups),
            ks: groups_ks(&groups),
            log_loss: log_loss(scores, labels),
            top_decile_lift: groups_lift(&groups),
            positives,
            negatives,
        }
    }

    /// Metrics from an aggregated histogram plus the aggregated log-loss sum over `n` rows
    /// (log-loss 0 when `n ≤ 0`).
    pub fn from_histogram(h: &ScoreHistogram, log_loss_sum: f64, n: f64) -> Self {
        let groups = h.groups();
        let (positives, negatives) = totals(&groups);
        BinaryMetrics {
            auc: groups_auc(&groups),
            ks: groups_ks(&groups),
            log_loss: if n > 0.0 { log_loss_sum / n } else { 0.0 },
            top_decile_lift: groups_lift(&groups),
            positives,
            negatives,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn brute_auc(scores: &[f64], labels: &[f32]) -> f64 {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for (i, &si) in scores.iter().enumerate() {
            for (j, &sj) in scores.iter().enumerate() {
                if is_pos(labels[i]) && !is_pos(labels[j]) {
                    pairs += 1.0;
                    if si > sj {
                        wins += 1.0;
                    } else if si == sj {
                        wins += 0.5;
                    }
                }
            }
        }
        if pairs == 0.0 {
            0.5
        } else {
            wins / pairs
        }
    }

    #[test]
    fn band_table_by_hand() {
        // 10 rows, 4 positives; two bands of five.
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05];
        let labels = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        let t = band_table(&scores, &labels, 2);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].rows, t[0].positives), (5, 3));
        assert!((t[0].mean_score - 0.7).abs() < 1e-12);
        assert!((t[0].observed_rate - 0.6).abs() < 1e-12);
        assert!((t[0].lift - 1.5).abs() < 1e-12);
        assert_eq!((t[0].min_score, t[0].max_score), (0.5, 0.9));
        assert!((t[1].lift - 0.5).abs() < 1e-12);
        assert!((t[1].cumulative_lift - 1.0).abs() < 1e-12);
        assert!((t[1].cumulative_capture - 1.0).abs() < 1e-12);
        // Deciles of 4454 rows as `fedsilo score` numbers them: 446 then 445s.
        let s: Vec<f64> = (0..4454).map(|i| f64::from(i) / 4454.0).collect();
        let y: Vec<f32> = (0..4454).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let d = band_table(&s, &y, 10);
        assert_eq!(d.iter().map(|b| b.rows).sum::<usize>(), 4454);
        for b in &d {
            let first = (0..4454usize)
                .find(|i| i * 10 / 4454 + 1 == b.band)
                .unwrap();
            let count = (0..4454usize)
                .filter(|i| i * 10 / 4454 + 1 == b.band)
                .count();
            assert_eq!(b.rows, count, "band {}", b.band);
            assert_eq!(b.max_score, s[4453 - first]);
        }
        // Exact curves end at (1, 1).
        let roc = roc_curve(&scores, &labels);
        assert_eq!(roc.first(), Some(&(0.0, 0.0)));
        assert_eq!(roc.last(), Some(&(1.0, 1.0)));
        let ks_max = ks_curve(&scores, &labels)
            .iter()
            .map(|&(_, a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!((ks_max - ks(&scores, &labels)).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn exact_auc_equals_pair_counting(
            data in prop::collection::vec((0u8..20, prop::bool::ANY), 0..120)
        ) {
            // Few distinct scores, so ties are common.
            let scores: Vec<f64> = data.iter().map(|(s, _)| f64::from(*s) / 19.0).collect();
            let labels: Vec<f32> = data.iter().map(|(_, y)| if *y { 1.0 } else { 0.0 }).collect();
            let a = auc(&scores, &labels);
            prop_assert!((a - brute_auc(&scores, &labels)).abs() < 1e-12);
            // A histogram whose bins hold one distinct score each is exact.
            let h = ScoreHistogram::from_scores(&scores, &labels, 40);
            prop_assert!((h.auc() - a).abs() < 1e-12);
            prop_assert!((h.ks() - ks(&scores, &labels)).abs() < 1e-12);
        }
    }

    #[test]
    fn histogram_auc_close_to_exact_with_1000_bins() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 20_000;
        let labels: Vec<f32> = (0..n)
            .map(|_| if rng.random::<f64>() < 0.2 { 1.0 } else { 0.0 })
            .collect();
        let scores: Vec<f64> = labels
            .iter()
            .map(|&y| {
                let z = 2.0 * (rng.random::<f64>() - 0.5) * 3.0 + if y > 0.5 { 1.5 } else { 0.0 };
                1.0 / (1.0 + (-z).exp())
            })
            .collect();
        let exact = auc(&scores, &labels);
        assert!(exact > 0.6 && exact < 0.9, "{exact}");
        for bins in [1000, 100, 10] {
            let h = ScoreHistogram::from_scores(&scores, &labels, bins);
            let err = (h.auc() - exact).abs();
            assert!(err <= 1.0 / bins as f64, "bins={bins}: {err}");
            assert!((h.ks() - ks(&scores, &labels)).abs() <= 2.0 / bins as f64);
            let lift_err = (h.top_decile_lift() - top_decile_lift(&scores, &labels)).abs();
            // Lift interpolates within the straddling bin, so it needs bins much narrower
            // than the decile (with 10 bins the top bin holds far more than 10 %).
            if bins >= 100 {
                assert!(lift_err <= 0.05, "bins={bins}: lift error {lift_err}");
            }
            assert_eq!(h.positives() + h.negatives(), n as f64);
        }
        assert!(ScoreHistogram::from_scores(&scores, &labels, 1000).auc() - exact < 1e-3);
        // One bin has no information at all.
        assert_eq!(ScoreHistogram::from_scores(&scores, &labels, 1).auc(), 0.5);
    }

    #[test]
    fn ks_and_lift_hand_computed() {
        // Descending: P P N P N N N N N N (scores 1.0 … 0.1), 3 positives, 7 negatives.
        let scores: Vec<f64> = (0..10).map(|i| 1.0 - 0.1 * i as f64).collect();
        let labels = [1., 1., 0., 1., 0., 0., 0., 0., 0., 0.];
        // After 4 rows: 3/3 positives, 1/7 negatives → KS = 6/7.
        assert!((ks(&scores, &labels) - 6.0 / 7.0).abs() < 1e-12);
        // Top 10 % = 1 row, positive: rate 1 over overall 0.3.
        assert!((top_decile_lift(&scores, &labels) - 1.0 / 0.3).abs() < 1e-12);
        // AUC: negative at rank 3 loses to 2 positives, the other 6 to all 3 → (2 + 18)/21.
        assert!((auc(&scores, &labels) - 20.0 / 21.0).abs() < 1e-12);

        // 20 rows, top 2 rows have scores tied with a third row: the 3-row group holds
        // 1 positive, so the top 10 % captures 2/3 of a positive; overall 4 positives of 20.
        let mut s = vec![0.9, 0.9, 0.9];
        s.extend((0..17).map(|i| 0.5 - 0.01 * i as f64));
        let mut y = vec![1.0f32, 0.0, 0.0];
        y.extend((0..17).map(|i| if i < 3 { 1.0f32 } else { 0.0 }));
        let expected = (2.0 / 3.0 / 2.0) / (4.0 / 20.0);
        assert!((top_decile_lift(&s, &y) - expected).abs() < 1e-12);
        // Same through a histogram whose bin holds exactly the tied group.
        let h = ScoreHistogram::from_scores(&s, &y, 10);
        assert_eq!(h.pos[9] + h.neg[9], 3.0);
        assert!((h.top_decile_lift() - expected).abs() < 1e-12);

        // KS of a reversed model is still the gap; a random one is 0 here.
        let rev: Vec<f64> = scores.iter().map(|v| 1.0 - v).collect();
        assert!((ks(&rev, &labels) - 6.0 / 7.0).abs() < 1e-12);
        assert_eq!(ks(&[0.5; 4], &[1., 0., 1., 0.]), 0.0);
    }

    #[test]
    fn log_loss_and_degenerate_cases() {
        let l = log_loss(&[0.5, 1.0, 0.0], &[1.0, 1.0, 1.0]);
        let expected = (std::f64::consts::LN_2 + 1e-15f64 + -(1e-15f64).ln()) / 3.0;
        assert!((l - expected).abs() < 1e-9, "{l} vs {expected}");
        assert_eq!(log_loss(&[], &[]), 0.0);
        assert_eq!(auc(&[0.1, 0.9], &[1.0, 1.0]), 0.5);
        assert_eq!(ks(&[0.1, 0.9], &[0.0, 0.0]), 0.0);
        assert_eq!(top_decile_lift(&[0.1, 0.9], &[0.0, 0.0]), 1.0);
        let m = BinaryMetrics::from_scores(&[], &[]);
        assert!(serde_json::to_string(&m).is_ok());
        assert_eq!(m.auc, 0.5);
    }

    #[test]
    fn flat_round_trip_and_refusals() {
        let h = ScoreHistogram::from_scores(
            &[0.05, 0.95, 1.0, -3.0, 7.0, f64::NAN],
            &[1., 0., 1., 0., 1., 0.],
            4,
        );
        assert_eq!(h.pos, vec![1.0, 0.0, 0.0, 2.0]);
        assert_eq!(h.neg, vec![2.0, 0.0, 0.0, 1.0]);
        let v = h.to_flat();
        assert_eq!(ScoreHistogram::from_flat(&v, 4).unwrap(), h);
        assert_eq!(
            ScoreHistogram::from_flat(&v, 3),
            Err(MetricsError::LengthMismatch {
                expected: 6,
                got: 8
            })
        );
        assert_eq!(
            ScoreHistogram::from_flat(&v[..7], 4),
            Err(MetricsError::LengthMismatch {
                expected: 8,
                got: 7
            })
        );
        assert_eq!(
            ScoreHistogram::from_flat(&[], 0),
            Err(MetricsError::ZeroBins)
        );
        let mut bad = v.clone();
        bad[5] = f64::NAN;
        assert_eq!(
            ScoreHistogram::from_flat(&bad, 4),
            Err(MetricsError::NonFinite { index: 5 })
        );
    }

    #[test]
    fn noisy_histogram_clamps_negative_counts() {
        let mut h = ScoreHistogram::new(4);
        h.pos = vec![-2.0, 0.0, 1.0, 3.0];
        h.neg = vec![5.0, 2.0, -1.0, 0.0];
        assert_eq!(h.positives(), 4.0);
        assert_eq!(h.negatives(), 7.0);
        let a = h.auc();
        assert!((0.0..=1.0).contains(&a));
        // Equivalent clean histogram.
        let clean = ScoreHistogram {
            pos: vec![0.0, 0.0, 1.0, 3.0],
            neg: vec![5.0, 2.0, 0.0, 0.0],
        };
        assert_eq!(a, clean.auc());
        assert_eq!(a, 1.0);
        let m = BinaryMetrics::from_histogram(&h, 5.5, 11.0);
        assert_eq!(m.log_loss, 0.5);
        assert_eq!((m.positives, m.negatives), (4.0, 7.0));
        assert_eq!(BinaryMetrics::from_histogram(&h, 5.5, 0.0).log_loss, 0.0);
    }

    #[test]
    fn curves_are_monotone_and_end_at_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let scores: Vec<f64> = (0..500).map(|_| rng.random::<f64>()).collect();
        let labels: Vec<f32> = scores
            .iter()
            .map(|&s| if rng.random::<f64>() < s { 1.0 } else { 0.0 })
            .collect();
        let h = ScoreHistogram::from_scores(&scores, &labels, 20);
        let roc = h.roc_curve();
        let ksc = h.ks_curve();
        let gains = h.gains_curve();
        assert_eq!(roc.len(), 21);
        assert_eq!(roc[0], (0.0, 0.0));
        assert!((roc[20].0 - 1.0).abs() < 1e-12 && (roc[20].1 - 1.0).abs() < 1e-12);
        assert!(roc.windows(2).all(|w| w[1].0 >= w[0].0 && w[1].1 >= w[0].1));
        assert!(gains
            .windows(2)
            .all(|w| w[1].0 >= w[0].0 && w[1].1 >= w[0].1));
        // The curves agree with the scalar metrics.
        let ks_from_curve = ksc
            .iter()
            .fold(0.0f64, |m, &(_, p, n)| m.max((p - n).abs()));
        assert!((ks_from_curve - h.ks()).abs() < 1e-12);
        let trapezoid: f64 = roc
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
            .sum();
        assert!((trapezoid - h.auc()).abs() < 1e-12);
        assert!(h.auc() > 0.7);
    }
}
