//! Federated credit scorecard: quantile binning, weight of evidence (WOE), information value
//! (IV), and points from a logistic regression on the WOE features.
//!
//! Label convention: **1 = bad** (default, churn…), 0 = good; the logistic model predicts BAD;
//! the score is higher for better credit.
//!
//! Federated flow (every participant vector is summed under secure aggregation; the server
//! only sees sums):
//! 1. [`crate::gbdt::local_stats`] → sum → [`crate::gbdt::FeatureStats`] → ranges
//!    `mean ± k·sd` per feature.
//! 2. [`crate::gbdt::fine_histogram`] → sum → [`ScorecardBins::from_fine_histogram`]: up to
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

use std::fmt::Write as _;

use ndarray::{Array2, ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::gbdt::{BinMapper, GbdtError};

/// Value bins per feature by default (plus one missing bin).
pub const DEFAULT_SCORECARD_BINS: usize = 10;
/// Features with an information value below this are dropped.
pub const MIN_IV: f64 = 0.02;
/// Laplace smoothing added to every occupied bin's good and bad counts.
const SMOOTHING: f64 = 0.5;

/// Errors of this module, by cause.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScorecardError {
    /// A vector or matrix dimension does not match the others.
    #[error("{what}: expected {expected}, got {got}")]
    ShapeMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// The aggregate has the wrong length for these bins.
    #[error("aggregate has {got} values, expected {expected}")]
    SumLength { expected: usize, got: usize },
    /// A parameter is outside its domain.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },
    /// Input data contains ±∞, or an aggregate a non-finite value.
    #[error("{what} contains a non-finite value")]
    NonFinite { what: &'static str },
    /// A label other than 0 or 1.
    #[error("label at row {row} is {value}; labels must be 0 (good) or 1 (bad)")]
    BadLabel { row: usize, value: f32 },
    /// WOE needs both goods and bads.
    #[error("the counts hold {goods} goods and {bads} bads; both classes are needed")]
    OneClass { goods: f64, bads: f64 },
    /// Cut points are invalid or came from an invalid histogram.
    #[error("binning: {0}")]
    Binning(String),
    /// The logistic regression on the WOE columns failed.
    #[error("logistic regression on the WOE columns: {0}")]
    Fit(String),
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

impl From<GbdtError> for ScorecardError {
    fn from(e: GbdtError) -> Self {
        match e {
            GbdtError::SumLength { expected, got, .. } => {
                ScorecardError::SumLength { expected, got }
            }
            other => ScorecardError::Binning(other.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bins
// ---------------------------------------------------------------------------------------------

/// One characteristic of a scorecard: a numeric column cut into bins, or a categorical
/// variable whose one-hot columns (`Name=category`, as the data loader names them) become one
/// characteristic with one bin per category.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Characteristic {
    /// Value `v` falls in bin `#{cuts ≤ v}`.
    Numeric {
        name: String,
        column: usize,
        cuts: Vec<f32>,
    },
    /// The bin is the first of `columns` holding 1.
    Categorical {
        name: String,
        columns: Vec<usize>,
        categories: Vec<String>,
    },
}

/// The characteristics of a scorecard over a row of `feature_names` columns. Every
/// characteristic has a missing bin, last: `NaN` for a numeric one, no category set (unknown
/// or missing) for a categorical one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScorecardBins {
    /// Input columns, in order.
    pub feature_names: Vec<String>,
    chars: Vec<Characteristic>,
}

impl ScorecardBins {
    /// One numeric characteristic per column, from explicit cut points (each list finite and
    /// strictly increasing).
    pub fn from_cuts(
        feature_names: Vec<String>,
        cuts: Vec<Vec<f32>>,
    ) -> Result<Self, ScorecardError> {
        if feature_names.len() != cuts.len() {
            return Err(ScorecardError::ShapeMismatch {
                what: "feature names (one per cut list)",
                expected: cuts.len(),
                got: feature_names.len(),
            });
        }
        for (j, c) in cuts.iter().enumerate() {
            if c.iter().any(|v| !v.is_finite()) || c.windows(2).any(|w| w[0] >= w[1]) {
                return Err(ScorecardError::Binning(format!(
                    "cuts of feature {j} are not finite and strictly increasing"
                )));
            }
        }
        let chars = feature_names
            .iter()
            .zip(cuts)
            .enumerate()
            .map(|(column, (name, cuts))| Characteristic::Numeric {
                name: name.clone(),
                column,
                cuts,
            })
            .collect();
        Ok(ScorecardBins {
            feature_names,
            chars,
        })
    }

    /// The cut points of a GBDT [`BinMapper`].
    pub fn from_bin_mapper(
        feature_names: Vec<String>,
        mapper: &BinMapper,
    ) -> Result<Self, ScorecardError> {
        let cuts = (0..mapper.n_features())
            .map(|j| mapper.cuts(j).to_vec())
            .collect();
        Self::from_cuts(feature_names, cuts)
    }

    /// Server side of step 2: up to `max_bins` quantile bins per feature from the SUM of the
    /// participants' [`crate::gbdt::fine_histogram`]s over `ranges`.
    pub fn from_fine_histogram(
        feature_names: Vec<String>,
        sum: &[f64],
        ranges: &[(f32, f32)],
        fine_bins: usize,
        max_bins: usize,
    ) -> Result<Self, ScorecardError> {
        let mapper = BinMapper::from_fine_histogram(sum, ranges, fine_bins, max_bins)?;
        Self::from_bin_mapper(feature_names, &mapper)
    }

    /// The same bins with the one-hot columns of each categorical variable (`Name=a`,
    /// `Name=b`, …) merged into one characteristic `Name` with a bin per category, placed
    /// where its first column was. Other columns keep their numeric bins.
    pub fn with_categories_grouped(self) -> Self {
        let mut chars: Vec<Characteristic> = Vec::with_capacity(self.chars.len());
        let mut group_at: std::collections::BTreeMap<String, usize> = Default::default();
        for ch in self.chars {
            let name = match &ch {
                Characteristic::Numeric { name, .. } => name.clone(),
                Characteristic::Categorical { .. } => {
                    chars.push(ch);
                    continue;
                }
            };
            let Characteristic::Numeric { column, .. } = ch else {
                continue;
            };
            match name.split_once('=') {
                Some((var, cat)) if !var.is_empty() => {
                    if let Some(&i) = group_at.get(var) {
                        if let Characteristic::Categorical {
                            columns,
                            categories,
                            ..
                        } = &mut chars[i]
                        {
                            columns.push(column);
                            categories.push(cat.to_string());
                        }
                    } else {
                        group_at.insert(var.to_string(), chars.len());
                        chars.push(Characteristic::Categorical {
                            name: var.to_string(),
                            columns: vec![column],
                            categories: vec![cat.to_string()],
                        });
                    }
                }
                _ => chars.push(ch),
            }
        }
        ScorecardBins {
            feature_names: self.feature_names,
            chars,
        }
    }

    /// Checks bins that may come from outside (an instruction, a model file): every column a
    /// characteristic reads exists and belongs to one characteristic only, cut points are
    /// finite and strictly increasing, bin counts are bounded, and a categorical
    /// characteristic has one category per column. Every other method may then index freely.
    pub fn validate(&self) -> Result<(), ScorecardError> {
        let columns = self.feature_names.len();
        let mut used = vec![false; columns];
        let mut take = |index: usize, column: usize| -> Result<(), ScorecardError> {
            match used.get_mut(column) {
                None => Err(ScorecardError::ColumnOutOfRange {
                    index,
                    column,
                    columns,
                }),
                Some(true) => Err(ScorecardError::ColumnReused { column }),
                Some(u) => {
                    *u = true;
                    Ok(())
                }
            }
        };
        for (index, ch) in self.chars.iter().enumerate() {
            match ch {
                Characteristic::Numeric { column, cuts, .. } => {
                    take(index, *column)?;
                    if cuts.len() >= MAX_CHARACTERISTIC_BINS {
                        return Err(ScorecardError::TooManyBins {
                            index,
                            bins: cuts.len().saturating_add(1),
                            max: MAX_CHARACTERISTIC_BINS,
                        });
                    }
                    if cuts.iter().any(|v| !v.is_finite()) || cuts.windows(2).any(|w| w[0] >= w[1])
                    {
                        return Err(ScorecardError::BadCuts { index });
                    }
                }
                Characteristic::Categorical {
                    columns: cols,
                    categories,
                    ..
                } => {
                    if cols.is_empty() || cols.len() != categories.len() {
                        return Err(ScorecardError::Categories {
                            index,
                            columns: cols.len(),
                            categories: categories.len(),
                        });
                    }
                    if cols.len() > MAX_CHARACTERISTIC_BINS {
                        return Err(ScorecardError::TooManyBins {
                            index,
                            bins: cols.len(),
                            max: MAX_CHARACTERISTIC_BINS,
                        });
                    }
                    for &c in cols {
                        take(index, c)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Number of characteristics (WOE columns before selection).
    pub fn n_features(&self) -> usize {
        self.chars.len()
    }

    pub fn characteristic(&self, c: usize) -> &Characteristic {
        &self.chars[c]
    }

    /// Name of characteristic `c`.
    pub fn name(&self, c: usize) -> &str {
        match &self.chars[c] {
            Characteristic::Numeric { name, .. } | Characteristic::Categorical { name, .. } => name,
        }
    }

    /// Cut points of a numeric characteristic (empty for a categorical one).
    pub fn cuts(&self, c: usize) -> &[f32] {
        match &self.chars[c] {
            Characteristic::Numeric { cuts, .. } => cuts,
            Characteristic::Categorical { .. } => &[],
        }
    }

    /// Value bins of characteristic `c` (categories of a categorical one).
    pub fn value_bins(&self, c: usize) -> usize {
        match &self.chars[c] {
            Characteristic::Numeric { cuts, .. } => cuts.len() + 1,
            Characteristic::Categorical { categories, .. } => categories.len(),
        }
    }

    /// Value bins + the missing bin.
    pub fn slots(&self, c: usize) -> usize {
        self.value_bins(c) + 1
    }

    /// Index of the missing bin of characteristic `c`.
    pub fn missing_bin(&self, c: usize) -> usize {
        self.value_bins(c)
    }

    /// Bin of characteristic `c` for one row of the input columns.
    #[inline]
    pub fn bin_of(&self, c: usize, row: ArrayView1<f32>) -> usize {
        match &self.chars[c] {
            Characteristic::Numeric { column, cuts, .. } => {
                let v = row[*column];
                if v.is_nan() {
                    cuts.len() + 1
                } else {
                    cuts.partition_point(|&k| k <= v)
                }
            }
            Characteristic::Categorical { columns, .. } => columns
                .iter()
                .position(|&j| row[j] > 0.5)
                .unwrap_or(columns.len()),
        }
    }

    /// Human-readable label of bin `b` of characteristic `c`: `(-inf, 25.0)`, `[25.0, 40.0)`,
    /// `[40.0, inf)`, a category name, or `missing`.
    pub fn label(&self, c: usize, b: usize) -> String {
        if b == self.missing_bin(c) {
            return "missing".into();
        }
        match &self.chars[c] {
            Characteristic::Categorical { categories, .. } => categories[b].clone(),
            Characteristic::Numeric { cuts, .. } => {
                let lo = if b == 0 {
                    "(-inf".to_string()
                } else {
                    format!("[{:?}", cuts[b - 1])
                };
                let hi = cuts
                    .get(b)
                    .map_or("inf)".to_string(), |v| format!("{v:?})"));
                format!("{lo}, {hi}")
            }
        }
    }

    /// Length of a [`scorecard_counts`] vector: `Σ_j slots(j) · 2`.
    pub fn counts_len(&self) -> usize {
        (0..self.n_features()).map(|j| 2 * self.slots(j)).sum()
    }

    fn offsets(&self) -> Vec<usize> {
        let mut o = Vec::with_capacity(self.n_features());
        let mut acc = 0;
        for j in 0..self.n_features() {
            o.push(acc);
            acc += 2 * self.slots(j);
        }
        o
    }

    /// Valid bins (see [`ScorecardBins::validate`]) over exactly `x`'s columns, no ±∞ in `x`.
    fn check_x(&self, x: ArrayView2<f32>) -> Result<(), ScorecardError> {
        self.validate()?;
        if x.ncols() != self.feature_names.len() {
            return Err(ScorecardError::ShapeMismatch {
                what: "feature columns",
                expected: self.feature_names.len(),
                got: x.ncols(),
            });
        }
        if x.iter().any(|v| v.is_infinite()) {
            return Err(ScorecardError::NonFinite { what: "features" });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Counts, WOE and IV
// ---------------------------------------------------------------------------------------------

/// Participant half of step 3: per feature and bin, `[good, bad]` row counts (label 0 = good,
/// 1 = bad); layout `[feature][bin (missing last)][good, bad]`, length
/// [`ScorecardBins::counts_len`].
pub fn scorecard_counts(
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    bins: &ScorecardBins,
) -> Result<Vec<f64>, ScorecardError> {
    bins.check_x(x)?;
    if y.len() != x.nrows() {
        return Err(ScorecardError::ShapeMismatch {
            what: "labels",
            expected: x.nrows(),
            got: y.len(),
        });
    }
    for (row, &v) in y.iter().enumerate() {
        if v != 0.0 && v != 1.0 {
            return Err(ScorecardError::BadLabel { row, value: v });
        }
    }
    let offsets = bins.offsets();
    let mut out = vec![0.0; bins.counts_len()];
    for (row, &yv) in x.rows().into_iter().zip(y) {
        let bad = usize::from(yv == 1.0);
        for (c, &o) in offsets.iter().enumerate() {
            out[o + 2 * bins.bin_of(c, row) + bad] += 1.0;
        }
    }
    Ok(out)
}

/// WOE and IV of one feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureWoe {
    pub name: String,
    /// Per bin (missing last): summed good and bad counts.
    pub good: Vec<f64>,
    pub bad: Vec<f64>,
    /// Per bin: weight of evidence, `ln(%good/%bad)` (0 for an empty bin).
    pub woe: Vec<f64>,
    /// Information value.
    pub iv: f64,
    /// Kept by the IV rule.
    pub selected: bool,
}

/// WOE tables of all features, with the bins they refer to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WoeTable {
    pub bins: ScorecardBins,
    pub features: Vec<FeatureWoe>,
    /// IV threshold the selection used.
    pub min_iv: f64,
}

impl WoeTable {
    /// Indices of the selected features, in column order (the columns of [`woe_transform`]).
    pub fn selected(&self) -> Vec<usize> {
        (0..self.features.len())
            .filter(|&j| self.features[j].selected)
            .collect()
    }

    /// The same table with the selection redone at another IV threshold.
    pub fn with_min_iv(mut self, min_iv: f64) -> Self {
        for f in &mut self.features {
            f.selected = f.iv >= min_iv;
        }
        self.min_iv = min_iv;
        self
    }

    /// Checks a table that may come from outside: valid bins (see
    /// [`ScorecardBins::validate`]), one entry per characteristic, one good count, bad count
    /// and finite WOE per bin of it, and a finite IV.
    pub fn validate(&self) -> Result<(), ScorecardError> {
        self.bins.validate()?;
        if self.features.len() != self.bins.n_features() {
            return Err(ScorecardError::ShapeMismatch {
                what: "WOE features (one per characteristic)",
                expected: self.bins.n_features(),
                got: self.features.len(),
            });
        }
        for (j, f) in self.features.iter().enumerate() {
            let slots = self.bins.slots(j);
            for (what, len) in [
                ("WOE values (one per bin)", f.woe.len()),
                ("good counts (one per bin)", f.good.len()),
                ("bad counts (one per bin)", f.bad.len()),
            ] {
                if len != slots {
                    return Err(ScorecardError::ShapeMismatch {
                        what,
                        expected: slots,
                        got: len,
                    });
                }
            }
            if !f.iv.is_finite() || f.woe.iter().any(|v| !v.is_finite()) {
                return Err(ScorecardError::NonFinite { what: "WOE table" });
            }
        }
        if !self.min_iv.is_finite() {
            return Err(ScorecardError::NonFinite { what: "min_iv" });
        }
        Ok(())
    }

    /// WOE of characteristic `c` for one row of the input columns.
    #[inline]
    pub fn woe(&self, c: usize, row: ArrayView1<f32>) -> f64 {
        self.features[c].woe[self.bins.bin_of(c, row)]
    }
}

/// Server half of step 3: WOE and IV per feature from the SUM of the participants'
/// [`scorecard_counts`], with the IV rule at [`MIN_IV`]. Negative counts (possible with DP
/// noise) are treated as 0.
pub fn woe_iv(sum: &[f64], bins: &ScorecardBins) -> Result<WoeTable, ScorecardError> {
    let expected = bins.counts_len();
    if sum.len() != expected {
        return Err(ScorecardError::SumLength {
            expected,
            got: sum.len(),
        });
    }
    if sum.iter().any(|v| !v.is_finite()) {
        return Err(ScorecardError::NonFinite { what: "counts" });
    }
    let offsets = bins.offsets();
    let mut features = Vec::with_capacity(bins.n_features());
    for j in 0..bins.n_features() {
        let s = &sum[offsets[j]..offsets[j] + 2 * bins.slots(j)];
        let good: Vec<f64> = s.iter().step_by(2).map(|v| v.max(0.0)).collect();
        let bad: Vec<f64> = s.iter().skip(1).step_by(2).map(|v| v.max(0.0)).collect();
        let (g, b): (f64, f64) = (good.iter().sum(), bad.iter().sum());
        if g <= 0.0 || b <= 0.0 {
            return Err(ScorecardError::OneClass { goods: g, bads: b });
        }
        let occupied: Vec<bool> = good.iter().zip(&bad).map(|(a, c)| a + c > 0.0).collect();
        let k = occupied.iter().filter(|&&o| o).count() as f64;
        let (gd, bd) = (g + SMOOTHING * k, b + SMOOTHING * k);
        let mut woe = vec![0.0; good.len()];
        let mut iv = 0.0;
        for i in 0..good.len() {
            if occupied[i] {
                let pg = (good[i] + SMOOTHING) / gd;
                let pb = (bad[i] + SMOOTHING) / bd;
                woe[i] = (pg / pb).ln();
                iv += (pg - pb) * woe[i];
            }
        }
        features.push(FeatureWoe {
            name: bins.name(j).to_string(),
            good,
            bad,
            woe,
            iv,
            selected: iv >= MIN_IV,
        });
    }
    Ok(WoeTable {
        bins: bins.clone(),
        features,
        min_iv: MIN_IV,
    })
}

/// Step 4 (participant side): the WOE columns of the selected features, rows × selected.
pub fn woe_transform(x: ArrayView2<f32>, table: &WoeTable) -> Result<Array2<f32>, ScorecardError> {
    table.validate()?;
    table.bins.check_x(x)?;
    let sel = table.selected();
    let mut out = Array2::<f32>::zeros((x.nrows(), sel.len()));
    for (mut o, row) in out.rows_mut().into_iter().zip(x.rows()) {
        for (k, &c) in sel.iter().enumerate() {
            o[k] = table.woe(c, row) as f32;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Scorecard
// ---------------------------------------------------------------------------------------------

/// Score scaling: `base_score` points at good:bad odds `base_odds`, `pdo` points to double the
/// odds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScorecardScaling {
    pub base_score: f64,
    pub base_odds: f64,
    pub pdo: f64,
}

impl Default for ScorecardScaling {
    fn default() -> Self {
        ScorecardScaling {
            base_score: 600.0,
            base_odds: 50.0,
            pdo: 20.0,
        }
    }
}

impl ScorecardScaling {
    /// `base_odds` and `pdo` finite and > 0, `base_score` finite.
    pub fn validate(&self) -> Result<(), ScorecardError> {
        for (name, v) in [("base_odds", self.base_odds), ("pdo", self.pdo)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ScorecardError::InvalidParameter {
                    name,
                    value: v,
                    reason: "must be finite and > 0",
                });
            }
        }
        if !self.base_score.is_finite() {
            return Err(ScorecardError::InvalidParameter {
                name: "base_score",
                value: self.base_score,
                reason: "must be finite",
            });
        }
        Ok(())
    }

    /// `pdo / ln 2`.
    pub fn factor(&self) -> f64 {
        self.pdo / std::f64::consts::LN_2
    }

    /// `base_score − factor·ln(base_odds)`.
    pub fn offset(&self) -> f64 {
        self.base_score - self.factor() * self.base_odds.ln()
    }
}

/// One printed row of a scorecard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScorecardRow {
    pub feature: String,
    pub bin: String,
    pub woe: f64,
    pub points: f64,
}

/// Points per (selected feature, bin).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scorecard {
    pub woe: WoeTable,
    /// Logistic coefficients (one per selected feature) and intercept; the model predicts BAD.
    pub coef: Vec<f64>,
    pub intercept: f64,
    pub scaling: ScorecardScaling,
    /// Per selected feature (in [`WoeTable::selected`] order), per bin (missing last).
    pub points: Vec<Vec<f64>>,
}

impl Scorecard {
    /// Points from a logistic regression of BAD on the [`woe_transform`] columns (see the
    /// module docs for the formula and the sign convention).
    pub fn from_logistic(
        woe: WoeTable,
        coef: &[f64],
        intercept: f64,
        scaling: ScorecardScaling,
    ) -> Result<Self, ScorecardError> {
        let sel = woe.selected();
        if coef.len() != sel.len() {
            return Err(ScorecardError::ShapeMismatch {
                what: "coefficients (one per selected feature)",
                expected: sel.len(),
                got: coef.len(),
            });
        }
        if coef.iter().any(|c| !c.is_finite()) || !intercept.is_finite() {
            return Err(ScorecardError::NonFinite {
                what: "coefficients",
            });
        }
        scaling.validate()?;
        let (factor, offset) = (scaling.factor(), scaling.offset());
        let m = sel.len().max(1) as f64;
        let points = sel
            .iter()
            .zip(coef)
            .map(|(&j, &c)| {
                woe.features[j]
                    .woe
                    .iter()
                    .map(|&w| -(c * w + intercept / m) * factor + offset / m)
                    .collect()
            })
            .collect();
        Ok(Scorecard {
            woe,
            coef: coef.to_vec(),
            intercept,
            scaling,
            points,
        })
    }

    /// Checks a scorecard that may come from outside (a model file, an instruction): a valid
    /// WOE table, one finite coefficient and one row of finite points per bin for each
    /// selected feature, a finite intercept and a valid scaling.
    pub fn validate(&self) -> Result<(), ScorecardError> {
        self.woe.validate()?;
        let sel = self.woe.selected();
        for (what, len) in [
            ("coefficients (one per selected feature)", self.coef.len()),
            ("points (one row per selected feature)", self.points.len()),
        ] {
            if len != sel.len() {
                return Err(ScorecardError::ShapeMismatch {
                    what,
                    expected: sel.len(),
                    got: len,
                });
            }
        }
        if self.coef.iter().any(|c| !c.is_finite()) || !self.intercept.is_finite() {
            return Err(ScorecardError::NonFinite {
                what: "coefficients",
            });
        }
        self.scaling.validate()?;
        for (&j, pts) in sel.iter().zip(&self.points) {
            if pts.len() != self.woe.bins.slots(j) {
                return Err(ScorecardError::ShapeMismatch {
                    what: "points (one per bin)",
                    expected: self.woe.bins.slots(j),
                    got: pts.len(),
                });
            }
            if pts.iter().any(|p| !p.is_finite()) {
                return Err(ScorecardError::NonFinite { what: "points" });
            }
        }
        Ok(())
    }

    /// Points of a row whose features are all neutral (every WOE 0); with no selected features
    /// this is the score of every row.
    fn constant_points(&self) -> f64 {
        if self.points.is_empty() {
            -self.intercept * self.scaling.factor() + self.scaling.offset()
        } else {
            0.0
        }
    }

    /// Total points per row of `x` (all original feature columns); higher = better credit.
    pub fn score_points(&self, x: ArrayView2<f32>) -> Result<Vec<f64>, ScorecardError> {
        self.validate()?;
        self.woe.bins.check_x(x)?;
        let sel = self.woe.selected();
        let base = self.constant_points();
        Ok(x.rows()
            .into_iter()
            .map(|row| {
                base + sel
                    .iter()
                    .zip(&self.points)
                    .map(|(&c, pts)| pts[self.woe.bins.bin_of(c, row)])
                    .sum::<f64>()
            })
            .collect())
    }

    /// The model's probability of BAD at a given score (inverse of the scaling).
    pub fn probability_of_bad(&self, score: f64) -> f64 {
        let logit = (self.scaling.offset() - score) / self.scaling.factor();
        1.0 / (1.0 + (-logit).exp())
    }

    /// One row per (selected feature, bin), in feature then bin order.
    pub fn rows(&self) -> Vec<ScorecardRow> {
        let mut out = Vec::new();
        for (&j, pts) in self.woe.selected().iter().zip(&self.points) {
            for (b, &p) in pts.iter().enumerate() {
                out.push(ScorecardRow {
                    feature: self.woe.features[j].name.clone(),
                    bin: self.woe.bins.label(j, b),
                    woe: self.woe.features[j].woe[b],
                    points: p,
                });
            }
        }
        out
    }

    /// A printable table: scaling, IV per feature (dropped ones marked), and the points.
    pub fn to_table(&self) -> String {
        let s = &self.scaling;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "Scorecard: {} points at odds {}:1 (good:bad), {} points to double the odds",
            s.base_score, s.base_odds, s.pdo
        );
        let _ = writeln!(
            t,
            "Information value (features with IV < {} dropped):",
            self.woe.min_iv
        );
        for f in &self.woe.features {
            let _ = writeln!(
                t,
                "  {:<24} {:>8.4}{}",
                f.name,
                f.iv,
                if f.selected { "" } else { "  (dropped)" }
            );
        }
        let rows = self.rows();
        let wf = rows
            .iter()
            .map(|r| r.feature.len())
            .max()
            .unwrap_or(7)
            .max(7);
        let wb = rows.iter().map(|r| r.bin.len()).max().unwrap_or(3).max(3);
        let _ = writeln!(
            t,
            "{:<wf$}  {:<wb$}  {:>8}  {:>8}",
            "feature", "bin", "WOE", "points"
        );
        for r in &rows {
            let _ = writeln!(
                t,
                "{:<wf$}  {:<wb$}  {:>8.4}  {:>8.1}",
                r.feature, r.bin, r.woe, r.points
            );
        }
        if self.points.is_empty() {
            let _ = writeln!(
                t,
                "(no feature selected: every row scores {:.1})",
                self.constant_points()
            );
        }
        t
    }
}

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
        let bad = |name, value: f64, reason| {
            Err(ScorecardError::InvalidParameter {
                name,
                value,
                reason,
            })
        };
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
    crate::gbdt::spread_ranges(mean, &sd, range_sd)
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
    let stats = crate::gbdt::local_stats(x, y)?;
    let st = crate::gbdt::FeatureStats::from_sum(&stats, x.ncols())?;
    let ranges = histogram_ranges(&st.mean, &st.sd, spec.range_sd);
    let fine = crate::gbdt::fine_histogram(x, &ranges, spec.fine_bins)?;
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
    let lp = crate::linear::fit_pooled(xw.view(), y, l2, pos_weight)
        .map_err(|e| ScorecardError::Fit(e.to_string()))?;
    Scorecard::from_logistic(woe, &lp.coef, lp.intercept, spec.scaling())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gbdt::{fine_histogram, local_stats, FeatureStats};
    use crate::linear;
    use crate::metrics::auc;
    use ndarray::{array, Array1, Axis};

    fn one_feature_bins() -> ScorecardBins {
        ScorecardBins::from_cuts(vec!["age".into()], vec![vec![25.0, 40.0]]).unwrap()
    }

    #[test]
    fn one_hot_columns_become_one_categorical_characteristic() {
        let names: Vec<String> = ["age", "home=own", "home=rent", "debt", "home=other"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cuts = vec![vec![30.0], vec![0.5], vec![0.5], vec![100.0], vec![0.5]];
        let bins = ScorecardBins::from_cuts(names, cuts)
            .unwrap()
            .with_categories_grouped();
        assert_eq!(bins.n_features(), 3);
        assert_eq!(
            (0..3).map(|c| bins.name(c)).collect::<Vec<_>>(),
            ["age", "home", "debt"]
        );
        assert_eq!(bins.value_bins(1), 3);
        assert_eq!(
            (0..4).map(|b| bins.label(1, b)).collect::<Vec<_>>(),
            ["own", "rent", "other", "missing"]
        );
        // rows: own, rent, other, none set (unknown category → missing bin)
        let x = array![
            [25.0f32, 1.0, 0.0, 10.0, 0.0],
            [35.0, 0.0, 1.0, 200.0, 0.0],
            [f32::NAN, 0.0, 0.0, 10.0, 1.0],
            [40.0, 0.0, 0.0, 10.0, 0.0],
        ];
        let got: Vec<usize> = x.rows().into_iter().map(|r| bins.bin_of(1, r)).collect();
        assert_eq!(got, [0, 1, 2, 3]);
        assert_eq!(bins.bin_of(0, x.row(2)), bins.missing_bin(0));
        // counts: [char][bin][good, bad]; y = bad, good, bad, good
        let y = array![1.0f32, 0.0, 1.0, 0.0];
        let counts = scorecard_counts(x.view(), y.view(), &bins).unwrap();
        assert_eq!(counts.len(), bins.counts_len());
        assert_eq!(counts.len(), 2 * (3 + 4 + 3));
        // home: own → bad, rent → good, other → bad, missing → good
        assert_eq!(&counts[6..14], &[0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
        let woe = woe_iv(&counts, &bins).unwrap();
        assert_eq!(woe.features[1].name, "home");
        let xw = woe_transform(x.view(), &woe.clone().with_min_iv(0.0)).unwrap();
        assert_eq!(xw.ncols(), 3);
        assert!(xw[[0, 1]] < 0.0 && xw[[1, 1]] > 0.0, "{xw:?}");
    }

    #[test]
    fn woe_iv_hand_computed() {
        // age bins (-inf,25), [25,40), [40,inf), missing; goods/bads:
        //   (-inf,25): 10 good 20 bad; [25,40): 40 good 20 bad; [40,inf): 50 good 10 bad;
        //   missing: none → WOE 0, not counted. G = 100, B = 50, k = 3 occupied bins.
        // %good = (g + ½)/101.5, %bad = (b + ½)/51.5:
        //   bin0: 10.5/101.5 = 0.103448, 20.5/51.5 = 0.398058 → WOE = ln(0.259880) = −1.347527
        //   bin1: 40.5/101.5 = 0.399015, 20.5/51.5 = 0.398058 → WOE = ln(1.002403) = 0.002400
        //   bin2: 50.5/101.5 = 0.497537, 10.5/51.5 = 0.203883 → WOE = ln(2.440301) = 0.892121
        //   IV = (0.103448−0.398058)(−1.347537) + (0.000957)(0.002400) + (0.293654)(0.892121)
        //      = 0.396995 + 0.000002 + 0.261975 = 0.658972
        let bins = one_feature_bins();
        let sum = [10.0, 20.0, 40.0, 20.0, 50.0, 10.0, 0.0, 0.0];
        let t = woe_iv(&sum, &bins).unwrap();
        let f = &t.features[0];
        let expect = [-1.347527, 0.002400, 0.892121, 0.0];
        for (w, e) in f.woe.iter().zip(expect) {
            assert!((w - e).abs() < 1e-5, "{:?}", f.woe);
        }
        assert!((f.iv - 0.658972).abs() < 1e-5, "{}", f.iv);
        assert!(f.selected);
        // a feature with no signal is dropped by the IV rule
        let flat = [30.0, 15.0, 40.0, 20.0, 30.0, 15.0, 0.0, 0.0];
        let t2 = woe_iv(&flat, &bins).unwrap();
        assert!(t2.features[0].iv < MIN_IV && !t2.features[0].selected);
        assert!(t2.selected().is_empty());
        // labels and transform
        assert_eq!(bins.label(0, 0), "(-inf, 25.0)");
        assert_eq!(bins.label(0, 1), "[25.0, 40.0)");
        assert_eq!(bins.label(0, 2), "[40.0, inf)");
        assert_eq!(bins.label(0, 3), "missing");
        let x = array![[20.0f32], [25.0], [99.0], [f32::NAN]];
        let w = woe_transform(x.view(), &t).unwrap();
        assert_eq!(
            w.column(0).to_vec(),
            vec![f.woe[0] as f32, f.woe[1] as f32, f.woe[2] as f32, 0.0]
        );
        // bad inputs
        assert!(matches!(
            woe_iv(&sum[..7], &bins),
            Err(ScorecardError::SumLength {
                expected: 8,
                got: 7
            })
        ));
        assert!(matches!(
            woe_iv(&[10.0, 0.0, 40.0, 0.0, 50.0, 0.0, 0.0, 0.0], &bins),
            Err(ScorecardError::OneClass { .. })
        ));
        assert!(matches!(
            scorecard_counts(x.view(), array![0.0f32, 1.0, 2.0, 0.0].view(), &bins),
            Err(ScorecardError::BadLabel { row: 2, .. })
        ));
        assert!(ScorecardBins::from_cuts(vec!["a".into()], vec![vec![2.0, 1.0]]).is_err());
    }

    #[test]
    fn points_follow_the_formula_and_woe_direction() {
        let bins = one_feature_bins();
        let t = woe_iv(&[10.0, 20.0, 40.0, 20.0, 50.0, 10.0, 0.0, 0.0], &bins).unwrap();
        let sc = Scorecard::from_logistic(t.clone(), &[-1.0], -0.7, ScorecardScaling::default())
            .unwrap();
        let (factor, offset) = (20.0 / 2f64.ln(), 600.0 - 20.0 / 2f64.ln() * 50f64.ln());
        for (b, &p) in sc.points[0].iter().enumerate() {
            let w = t.features[0].woe[b];
            // coef = −1, intercept = −0.7, m = 1
            let coef = -1.0;
            assert!((p - (-(coef * w - 0.7) * factor + offset)).abs() < 1e-9);
        }
        // monotone: more WOE (more goods) → more points
        let mut pairs: Vec<(f64, f64)> = t.features[0]
            .woe
            .iter()
            .copied()
            .zip(sc.points[0].iter().copied())
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(pairs.windows(2).all(|w| w[1].1 >= w[0].1));
        // the score inverts to the model's probability
        let x = array![[30.0f32], [f32::NAN]];
        let s = sc.score_points(x.view()).unwrap();
        let logit = -0.7 - t.features[0].woe[1];
        assert!((sc.probability_of_bad(s[0]) - 1.0 / (1.0 + (-logit).exp())).abs() < 1e-12);
        // odds 50:1 ⇔ 600 points
        assert!((sc.probability_of_bad(600.0) - 1.0 / 51.0).abs() < 1e-12);
        assert!(sc.to_table().contains("[25.0, 40.0)"));
        assert!(matches!(
            Scorecard::from_logistic(t, &[1.0, 2.0], 0.0, ScorecardScaling::default()),
            Err(ScorecardError::ShapeMismatch { .. })
        ));
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
