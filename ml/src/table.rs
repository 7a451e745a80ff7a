//! A participant's local data in memory: numeric feature matrix plus 0/1 labels.
//!
//! Categorical columns arrive here already one-hot expanded against the category list the
//! federation agreed on in its schema, so every participant has the same columns in the same
//! order. Missing values are `NaN`.

use ndarray::{Array2, ArrayView1, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// A requested feature name that is neither an encoded column nor a raw feature.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("features: {} not in the data (valid names: {valid})", unknown.iter().map(|u| format!("'{u}'")).collect::<Vec<_>>().join(", "))]
pub struct UnknownFeatures {
    pub unknown: Vec<String>,
    /// Raw feature names (a categorical one stands for all its `name=category` columns).
    pub valid: String,
}

/// Expands the feature names a job spec lists into encoded columns, in the order listed:
/// an encoded column name (`Income`, `state=AK`) stands for itself, a raw categorical
/// feature name (`state`) for all its one-hot columns `state=…` in their encoded order.
/// Duplicates are dropped; names matching nothing are refused together, listing the valid
/// raw names.
pub fn expand_feature_names(
    requested: &[String],
    encoded: &[String],
) -> Result<Vec<String>, UnknownFeatures> {
    let mut out: Vec<String> = Vec::with_capacity(encoded.len());
    let mut unknown = Vec::new();
    let push = |c: &String, out: &mut Vec<String>| {
        if !out.contains(c) {
            out.push(c.clone());
        }
    };
    for r in requested {
        if let Some(c) = encoded.iter().find(|c| *c == r) {
            push(c, &mut out);
            continue;
        }
        let prefix = format!("{r}=");
        let mut any = false;
        for c in encoded.iter().filter(|c| c.starts_with(&prefix)) {
            push(c, &mut out);
            any = true;
        }
        if !any {
            unknown.push(r.clone());
        }
    }
    if unknown.is_empty() {
        return Ok(out);
    }
    let mut raw: Vec<&str> = Vec::new();
    for c in encoded {
        let name = c.split_once('=').map_or(c.as_str(), |(n, _)| n);
        if !raw.contains(&name) {
            raw.push(name);
        }
    }
    Err(UnknownFeatures {
        unknown,
        valid: raw.join(", "),
    })
}

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

#[cfg(test)]
mod feature_name_tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn raw_names_expand_to_their_one_hot_columns() {
        let enc = names(&["annual_income", "state=AK", "state=AL", "home=own"]);
        let got =
            expand_feature_names(&names(&["state", "annual_income", "state=AK"]), &enc).unwrap();
        assert_eq!(got, names(&["state=AK", "state=AL", "annual_income"]));
        let e = expand_feature_names(&names(&["income", "stat"]), &enc).unwrap_err();
        assert_eq!(e.unknown, names(&["income", "stat"]));
        assert_eq!(e.valid, "annual_income, state, home");
        assert!(
            e.to_string().contains("'income', 'stat' not in the data"),
            "{e}"
        );
    }
}
