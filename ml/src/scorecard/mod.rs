//! Federated credit scorecard: quantile binning, weight of evidence (WOE), information value
//! (IV), and points from a logistic regression on the WOE features.
//!
//! Label convention: **1 = bad** (default, churn…), 0 = good; the logistic model predicts BAD;
//! the score is higher for better credit.
//!
//! Federated flow (every participant vector is summed under secure aggregation; the server
//! only sees sums):
//! 1. [`crate::binning::local_stats`] → sum → [`crate::binning::FeatureStats`] → ranges
//!    `mean ± k·sd` per feature.
//! 2. [`crate::binning::fine_histogram`] → sum → [`ScorecardBins::from_fine_histogram`]: up to
//!    [`DEFAULT_SCORECARD_BINS`] quantile bins per feature, plus a missing bin; the one-hot
//!    columns of a categorical variable then become one characteristic with a bin per
//!    category ([`ScorecardBins::with_categories_grouped`]).
//! 3. [`scorecard_counts`] (good/bad per feature and bin) → sum → [`woe_iv`] → [`WoeTable`].
//! 4. Participants transform their rows with [`woe_transform`]; the logistic regression on
//!    those columns is trained with the linear module (federated or pooled).
//! 5. [`Scorecard::from_logistic`] turns coefficients into points per bin.
//!
//! # WOE and IV
//! For feature `j` and bin `b` with `good_b`, `bad_b` rows (totals `G`, `B`, `k` occupied
//! bins): `%good_b = (good_b + ½)/(G + ½k)`, `%bad_b = (bad_b + ½)/(B + ½k)` (Laplace
//! smoothing ½), `WOE_b = ln(%good_b / %bad_b)`, `IV_j = Σ_b (%good_b − %bad_b)·WOE_b`. A bin
//! no training row falls in (typically "missing" for a complete feature) gets WOE 0 — neutral —
//! and no IV.
//!
//! **Feature selection rule:** a feature whose IV is below [`MIN_IV`] = 0.02 ("not useful for
//! prediction", Siddiqi 2006) is dropped: it gets no WOE column and no points. IV above 0.5 is
//! "suspiciously strong" and worth a look for leakage; it is kept.
//!
//! # Points
//! `factor = pdo / ln 2`, `offset = base_score − factor·ln(base_odds)`; with `m` selected
//! features and the model `logit P(bad) = intercept + Σ_j coef_j·WOE_j`,
//! `points_jb = −(coef_j·WOE_jb + intercept/m)·factor + offset/m`. The total is
//! `offset − factor·logit P(bad) = offset + factor·ln(odds good:bad)`: at good:bad odds
//! `base_odds` the score is `base_score`, and doubling the odds adds `pdo` points. Since a
//! higher WOE means relatively more goods, coefficients are normally negative and points rise
//! with WOE.
//!
//! Layout: `bins` holds the characteristics and their bins, `woe` the counts, WOE and IV,
//! `points` the scaling and the points table; the quantile binning itself is
//! [`crate::binning`], shared with the boosted trees.

use ndarray::{ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::binning::{invalid, BinningError};
use crate::linear::LinearError;

mod bins;
mod points;
mod woe;

pub use bins::{Characteristic, ScorecardBins};
pub use points::{Scorecard, ScorecardRow, ScorecardScaling};
pub use woe::{scorecard_counts, woe_iv, woe_transform, FeatureWoe, WoeTable};

/// Value bins per feature by default (plus one missing bin).
pub const DEFAULT_SCORECARD_BINS: usize = 10;
/// Features with an information value below this are dropped.
pub const MIN_IV: f64 = 0.02;
/// Laplace smoothing added to every occupied bin's good and bad counts.
const SMOOTHING: f64 = 0.5;

/// Errors of this module, by cause.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScorecardError {
    /// Shapes, aggregate lengths, non-finite values, labels, parameter domains and cut points:
    /// the faults the scorecard shares with the boosted trees.
    #[error(transparent)]
    Binning(#[from] BinningError),
    /// WOE needs both goods and bads.
    #[error("the counts hold {goods} goods and {bads} bads; both classes are needed")]
    OneClass { goods: f64, bads: f64 },
    /// The logistic regression on the WOE columns failed.
    #[error("logistic regression on the WOE columns: {0}")]
    Fit(#[source] LinearError),
    /// A characteristic reads a column the bins do not have.
    #[error("characteristic {index} reads column {column}, but there are {columns} columns")]
    ColumnOutOfRange {
        index: usize,
        column: usize,
        columns: usize,
    },
    /// Two characteristics (or one twice) read the same column.
    #[error("column {column} belongs to more than one characteristic")]
    ColumnReused { column: usize },
    /// A numeric characteristic's cut points are not finite and strictly increasing.
    #[error("cuts of characteristic {index} are not finite and strictly increasing")]
    BadCuts { index: usize },
    /// A characteristic has more bins than a scorecard allows.
    #[error("characteristic {index} has {bins} bins, more than the {max} allowed")]
    TooManyBins {
        index: usize,
        bins: usize,
        max: usize,
    },
    /// A categorical characteristic needs one category name per column, and at least one.
    #[error(
        "categorical characteristic {index} has {columns} columns and {categories} categories"
    )]
    Categories {
        index: usize,
        columns: usize,
        categories: usize,
    },
}

/// Most value bins one characteristic may have (bins that arrive from outside are checked
/// against it; a job asks for at most 64, a categorical variable has one per category).
pub const MAX_CHARACTERISTIC_BINS: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Job settings and the pooled reference
// ---------------------------------------------------------------------------------------------

/// Settings of a federated scorecard job (`model = { kind = "scorecard", ... }`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScorecardSpec {
    /// Value bins per feature (quantile bins from the summed fine histogram), plus missing.
    pub bins: usize,
    /// Information-value threshold below which a feature is dropped.
    pub min_iv: f64,
    /// Score at good:bad odds `base_odds`.
    pub base_score: f64,
    pub base_odds: f64,
    /// Points to double the odds.
    pub pdo: f64,
    /// Equal-width bins of the fine histogram the quantile bins are read from.
    pub fine_bins: usize,
    /// The fine histogram spans `mean ± range_sd·sd` (values beyond fall in the end bins).
    pub range_sd: f64,
    /// One characteristic per categorical variable (its one-hot columns `Name=category`
    /// merged, a bin per category) instead of one per one-hot column.
    pub group_categories: bool,
}

impl Default for ScorecardSpec {
    fn default() -> Self {
        let s = ScorecardScaling::default();
        ScorecardSpec {
            bins: DEFAULT_SCORECARD_BINS,
            min_iv: MIN_IV,
            base_score: s.base_score,
            base_odds: s.base_odds,
            pdo: s.pdo,
            fine_bins: 1024,
            range_sd: 4.0,
            group_categories: true,
        }
    }
}

impl ScorecardSpec {
    pub fn scaling(&self) -> ScorecardScaling {
        ScorecardScaling {
            base_score: self.base_score,
            base_odds: self.base_odds,
            pdo: self.pdo,
        }
    }

    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), ScorecardError> {
        let bad = |name, value: f64, reason| Err(invalid(name, value, reason));
        if !(2..=64).contains(&self.bins) {
            return bad("bins", self.bins as f64, "must be in 2..=64");
        }
        if !(self.min_iv.is_finite() && self.min_iv >= 0.0) {
            return bad("min_iv", self.min_iv, "must be finite and ≥ 0");
        }
        if !self.base_score.is_finite() {
            return bad("base_score", self.base_score, "must be finite");
        }
        if !(self.base_odds.is_finite() && self.base_odds > 0.0) {
            return bad("base_odds", self.base_odds, "must be finite and > 0");
        }
        if !(self.pdo.is_finite() && self.pdo > 0.0) {
            return bad("pdo", self.pdo, "must be finite and > 0");
        }
        if !(self.bins..=1 << 16).contains(&self.fine_bins) {
            return bad(
                "fine_bins",
                self.fine_bins as f64,
                "must be in bins..=65536",
            );
        }
        if !(self.range_sd.is_finite() && self.range_sd > 0.0) {
            return bad("range_sd", self.range_sd, "must be finite and > 0");
        }
        Ok(())
    }
}

/// Fine-histogram ranges `mean ± range_sd·sd` per feature (a zero spread counts as 1, the
/// convention of the federated standardiser, so federated and pooled fits bin alike).
pub fn histogram_ranges(mean: &[f64], sd: &[f64], range_sd: f64) -> Vec<(f32, f32)> {
    let sd: Vec<f64> = sd
        .iter()
        .map(|&s| if s > 1e-12 { s } else { 1.0 })
        .collect();
    crate::binning::spread_ranges(mean, &sd, range_sd)
}

/// The same scorecard on pooled data, in one place: binning from the pooled fine histogram,
/// WOE/IV from pooled counts, then the logistic regression on WOE columns fitted to its
/// optimum (Newton) with the ridge `l2` — the reference a federated scorecard is held to.
pub fn fit_pooled(
    feature_names: Vec<String>,
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    spec: &ScorecardSpec,
    l2: f64,
    pos_weight: f64,
) -> Result<Scorecard, ScorecardError> {
    spec.validate()?;
    let stats = crate::binning::local_stats(x, y)?;
    let st = crate::binning::FeatureStats::from_sum(&stats, x.ncols())?;
    let ranges = histogram_ranges(&st.mean, &st.sd, spec.range_sd);
    let fine = crate::binning::fine_histogram(x, &ranges, spec.fine_bins)?;
    let mut bins = ScorecardBins::from_fine_histogram(
        feature_names,
        &fine,
        &ranges,
        spec.fine_bins,
        spec.bins,
    )?;
    if spec.group_categories {
        bins = bins.with_categories_grouped();
    }
    let counts = scorecard_counts(x, y, &bins)?;
    let woe = woe_iv(&counts, &bins)?.with_min_iv(spec.min_iv);
    let xw = woe_transform(x, &woe)?;
    let lp =
        crate::linear::fit_pooled(xw.view(), y, l2, pos_weight).map_err(ScorecardError::Fit)?;
    Scorecard::from_logistic(woe, &lp.coef, lp.intercept, spec.scaling())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::binning::{fine_histogram, local_stats, FeatureStats};
    use crate::linear;
    use crate::metrics::auc;
    use ndarray::{Array1, Array2, Axis};

    pub(crate) fn one_feature_bins() -> ScorecardBins {
        ScorecardBins::from_cuts(vec!["age".into()], vec![vec![25.0, 40.0]]).unwrap()
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

    const NUMERIC: [&str; 9] = [
        "Seniority",
        "Time",
        "Age",
        "Expenses",
        "Income",
        "Assets",
        "Debt",
        "Amount",
        "Price",
    ];

    fn credit_table() -> crate::table::Table {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/credit_data.csv");
        let (header, rows) = read_csv(path);
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        let cols: Vec<usize> = NUMERIC.iter().map(|n| col(n)).collect();
        let c_status = col("Status");
        let n = rows.len();
        let mut x = Array2::<f32>::zeros((n, cols.len()));
        let mut labels = Array2::<f32>::zeros((n, 1));
        for (r, row) in rows.iter().enumerate() {
            for (j, &c) in cols.iter().enumerate() {
                x[[r, j]] = row[c].parse::<f32>().unwrap_or(f32::NAN);
            }
            labels[[r, 0]] = f32::from(u8::from(row[c_status] == "bad"));
        }
        crate::table::Table {
            feature_names: NUMERIC.iter().map(|s| s.to_string()).collect(),
            x,
            label_names: vec!["bad".into()],
            labels,
            ids: (0..n).map(|r| r.to_string()).collect(),
        }
    }

    /// The federated flow of the module docs with the SUMS over `parts`.
    fn federated_woe(parts: &[(Array2<f32>, Array1<f32>)]) -> (WoeTable, Vec<f64>) {
        let f = parts[0].0.ncols();
        let sum_of = |vs: Vec<Vec<f64>>| {
            let mut s = vec![0.0; vs[0].len()];
            for v in vs {
                s.iter_mut().zip(v).for_each(|(a, b)| *a += b);
            }
            s
        };
        let stats = sum_of(
            parts
                .iter()
                .map(|(x, y)| local_stats(x.view(), y.view()).unwrap())
                .collect(),
        );
        let ranges = FeatureStats::from_sum(&stats, f).unwrap().ranges(4.0);
        let fine = sum_of(
            parts
                .iter()
                .map(|(x, _)| fine_histogram(x.view(), &ranges, 1000).unwrap())
                .collect(),
        );
        let names = NUMERIC.iter().map(|s| s.to_string()).collect();
        let bins =
            ScorecardBins::from_fine_histogram(names, &fine, &ranges, 1000, DEFAULT_SCORECARD_BINS)
                .unwrap();
        let counts = sum_of(
            parts
                .iter()
                .map(|(x, y)| scorecard_counts(x.view(), y.view(), &bins).unwrap())
                .collect(),
        );
        (woe_iv(&counts, &bins).unwrap(), counts)
    }

    #[test]
    fn credit_data_scorecard() {
        let table = credit_table();
        let (train, test) = table.split_holdout(0.2, 0);
        // three institutions, non-IID: split by age band
        let age = train.x.column(2).to_vec();
        let band = |a: f32| {
            if a < 30.0 {
                0
            } else if a < 45.0 {
                1
            } else {
                2
            }
        };
        let parts: Vec<(Array2<f32>, Array1<f32>)> = (0..3)
            .map(|k| {
                let rows: Vec<usize> = (0..train.n_rows()).filter(|&r| band(age[r]) == k).collect();
                (
                    train.x.select(Axis(0), &rows),
                    train.label(0).select(Axis(0), &rows),
                )
            })
            .collect();
        let (woe, counts) = federated_woe(&parts);
        // federated counts equal pooled counts, exactly
        let pooled = scorecard_counts(train.x.view(), train.label(0), &woe.bins).unwrap();
        assert_eq!(counts, pooled);
        assert_eq!(woe_iv(&pooled, &woe.bins).unwrap(), woe);
        for j in 0..woe.bins.n_features() {
            assert!(woe.bins.value_bins(j) <= DEFAULT_SCORECARD_BINS);
        }
        let sel = woe.selected();
        assert!(
            sel.len() >= 4,
            "{:?}",
            woe.features.iter().map(|f| f.iv).collect::<Vec<_>>()
        );
        // logistic regression of BAD on the WOE columns, then points
        let xw = woe_transform(train.x.view(), &woe).unwrap();
        let lp = linear::fit_pooled(xw.view(), train.label(0), 1e-4, 1.0).unwrap();
        let sc = Scorecard::from_logistic(
            woe.clone(),
            &lp.coef,
            lp.intercept,
            ScorecardScaling::default(),
        )
        .unwrap();
        // points agree with the logistic model
        let pts = sc.score_points(test.x.view()).unwrap();
        let p_lin =
            linear::predict_proba(&lp, woe_transform(test.x.view(), &woe).unwrap().view()).unwrap();
        for (s, p) in pts.iter().zip(&p_lin) {
            assert!((sc.probability_of_bad(*s) - p).abs() < 1e-5);
        }
        // points move with WOE in the direction of −coef
        for (k, &j) in sel.iter().enumerate() {
            let w = &woe.features[j].woe;
            for a in 0..w.len() {
                for b in 0..w.len() {
                    let (dw, dp) = (w[b] - w[a], sc.points[k][b] - sc.points[k][a]);
                    assert!(dw * dp * -lp.coef[k] >= -1e-12);
                }
            }
        }
        let neg: Vec<f64> = pts.iter().map(|p| -p).collect();
        let a = auc(&neg, &test.label(0).to_vec());
        eprintln!("{}", sc.to_table());
        eprintln!("credit_data scorecard test AUC = {a:.4}");
        assert!(a > 0.75, "AUC {a}");
    }
}
