//! A participant's local data in memory: numeric feature matrix plus 0/1 labels.
//!
//! Categorical columns arrive here already one-hot expanded against the category list the
//! federation agreed on in its schema, so every participant has the same columns in the same
//! order. Missing values are `NaN`.

use ndarray::{Array2, ArrayView1, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Rows of one institution's customers: features (`NaN` = missing) and one or more 0/1 labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Column names of `x`, in order (one-hot columns are named `column=category`).
    pub feature_names: Vec<String>,
    /// rows × features.
    pub x: Array2<f32>,
    /// Names of the label columns (several for multi-product propensity).
    pub label_names: Vec<String>,
    /// rows × labels, each 0.0 or 1.0.
    pub labels: Array2<f32>,
    /// Customer identifiers (for scored output), one per row.
    pub ids: Vec<String>,
}

impl Table {
    pub fn n_rows(&self) -> usize {
        self.x.nrows()
    }

    pub fn n_features(&self) -> usize {
        self.x.ncols()
    }

    /// Label column `j` (0 for single-label tasks).
    pub fn label(&self, j: usize) -> ArrayView1<'_, f32> {
        self.labels.column(j)
    }

    /// A new table holding the given rows, in the given order.
    pub fn select_rows(&self, rows: &[usize]) -> Table {
        Table {
            feature_names: self.feature_names.clone(),
            x: self.x.select(Axis(0), rows),
            label_names: self.label_names.clone(),
            labels: self.labels.select(Axis(0), rows),
            ids: rows.iter().map(|&r| self.ids[r].clone()).collect(),
        }
    }

    /// Stratified (on label 0) split into (train, holdout) with `holdout_fraction` of each
    /// class in the hold-out set; deterministic for `seed`.
    pub fn split_holdout(&self, holdout_fraction: f64, seed: u64) -> (Table, Table) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut train = Vec::with_capacity(self.n_rows());
        let mut hold = Vec::new();
        for class in [0.0f32, 1.0] {
            let mut rows: Vec<usize> = (0..self.n_rows())
                .filter(|&r| self.labels.ncols() == 0 || self.labels[[r, 0]] == class)
                .collect();
            if self.labels.ncols() == 0 && class == 1.0 {
                break;
            }
            rows.shuffle(&mut rng);
            let n_hold = (rows.len() as f64 * holdout_fraction).round() as usize;
            hold.extend_from_slice(&rows[..n_hold]);
            train.extend_from_slice(&rows[n_hold..]);
        }
        train.sort_unstable();
        hold.sort_unstable();
        (self.select_rows(&train), self.select_rows(&hold))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn table(n: usize) -> Table {
        Table {
            feature_names: vec!["a".into()],
            x: Array2::from_shape_fn((n, 1), |(r, _)| r as f32),
            label_names: vec!["y".into()],
            labels: Array2::from_shape_fn((n, 1), |(r, _)| if r % 4 == 0 { 1.0 } else { 0.0 }),
            ids: (0..n).map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn holdout_is_stratified_disjoint_and_complete() {
        let t = table(1000);
        let (tr, ho) = t.split_holdout(0.2, 7);
        assert_eq!(tr.n_rows() + ho.n_rows(), 1000);
        assert_eq!(ho.n_rows(), 200);
        let pos = ho.label(0).iter().filter(|&&v| v == 1.0).count();
        assert_eq!(pos, 50);
        let mut all: Vec<String> = tr.ids.iter().chain(ho.ids.iter()).cloned().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 1000);
        assert_eq!(t.split_holdout(0.2, 7).1, ho);
        assert_ne!(t.split_holdout(0.2, 8).1.ids, ho.ids);
    }
}
