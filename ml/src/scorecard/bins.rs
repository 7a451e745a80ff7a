//! The characteristics of a scorecard and their bins: numeric columns cut at quantile cut
//! points, categorical variables with a bin per category, a missing bin last.

use ndarray::{ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use super::{ScorecardError, MAX_CHARACTERISTIC_BINS};
use crate::binning::{check_cuts, cuts_are_increasing, value_bin, BinMapper, BinningError};

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
            return Err(BinningError::ShapeMismatch {
                what: "feature names (one per cut list)",
                expected: cuts.len(),
                got: feature_names.len(),
            }
            .into());
        }
        for (j, c) in cuts.iter().enumerate() {
            check_cuts(j, c)?;
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

    /// Bins from their parts (as a wire message carries them), checked as
    /// [`ScorecardBins::validate`] checks them: every method may index freely afterwards.
    pub fn from_characteristics(
        feature_names: Vec<String>,
        chars: Vec<Characteristic>,
    ) -> Result<Self, ScorecardError> {
        let bins = ScorecardBins {
            feature_names,
            chars,
        };
        bins.validate()?;
        Ok(bins)
    }

    /// The characteristics, in order.
    pub fn characteristics(&self) -> &[Characteristic] {
        &self.chars
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
    /// participants' [`crate::binning::fine_histogram`]s over `ranges`.
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
                    if !cuts_are_increasing(cuts) {
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
                    value_bin(cuts, v)
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

    /// Length of a [`scorecard_counts`](super::scorecard_counts) vector: `Σ_j slots(j) · 2`.
    pub fn counts_len(&self) -> usize {
        (0..self.n_features()).map(|j| 2 * self.slots(j)).sum()
    }

    pub(super) fn offsets(&self) -> Vec<usize> {
        let mut o = Vec::with_capacity(self.n_features());
        let mut acc = 0;
        for j in 0..self.n_features() {
            o.push(acc);
            acc += 2 * self.slots(j);
        }
        o
    }

    /// Valid bins (see [`ScorecardBins::validate`]) over exactly `x`'s columns, no ±∞ in `x`.
    pub(super) fn check_x(&self, x: ArrayView2<f32>) -> Result<(), ScorecardError> {
        self.validate()?;
        if x.ncols() != self.feature_names.len() {
            return Err(BinningError::ShapeMismatch {
                what: "feature columns",
                expected: self.feature_names.len(),
                got: x.ncols(),
            }
            .into());
        }
        if x.iter().any(|v| v.is_infinite()) {
            return Err(BinningError::NonFinite { what: "features" }.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{scorecard_counts, woe_iv, woe_transform};
    use super::*;
    use ndarray::array;

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
}
