//! Splitting one shared table into `n` synthetic institutions, IID or deliberately not.
//!
//! | partitioner | what differs between institutions | uses the seed |
//! |---|---|---|
//! | `iid` | nothing: a seeded shuffle dealt into `n` near-equal parts | yes |
//! | `sorted_bands { column }` | the range of one feature: rows sorted by it (NaN last, ties in file order) and cut into `n` consecutive bands of near-equal size — institution 0 has the lowest values | no |
//! | `dirichlet { alpha }` | the class mix of label 0: for each class, the shares of its rows going to the `n` institutions are drawn from Dir(α, …, α) (Hsu et al. 2019); small α → each class concentrated in a few institutions, large α → close to IID | yes |
//! | `size_skew { weights }` | the number of rows: proportional to `weights` (largest-remainder rounding), rows chosen at random | yes |
//!
//! Guarantees: every row is assigned to exactly one institution; every institution gets at
//! least one row (`dirichlet` tops up institutions left with fewer than
//! `min(10, rows / (2n))` rows from the largest ones, and `size_skew` gives each at least one);
//! each institution's indices are in ascending (file) order; the result is a pure function of
//! (table, n, partitioner, seed).
//!
//! In a scenario file: `partition = { kind = "dirichlet", alpha = 0.5 }`.

use fedsilo_ml::table::Table;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};

/// How rows are dealt to institutions; see the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Partitioner {
    Iid,
    SortedBands { column: String },
    Dirichlet { alpha: f64 },
    SizeSkew { weights: Vec<f64> },
}

/// Why a table cannot be partitioned as asked (all are caller mistakes).
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("cannot partition into 0 institutions")]
    NoInstitutions,
    #[error("cannot partition {rows} rows into {n} institutions: every institution needs at least one row")]
    TooFewRows { rows: usize, n: usize },
    #[error("sorted_bands: column '{column}' is not a numeric feature of the table (numeric features: {available})")]
    UnknownColumn { column: String, available: String },
    #[error("sorted_bands: column '{column}' is categorical ({categories} one-hot columns); only numeric features can be sorted into bands (numeric features: {available})")]
    CategoricalColumn {
        column: String,
        categories: usize,
        available: String,
    },
    #[error("dirichlet: alpha must be a positive finite number, got {alpha}")]
    InvalidAlpha { alpha: f64 },
    #[error("dirichlet: the table has no label column to skew")]
    NoLabel,
    #[error("size_skew: {got} weights for {n} institutions")]
    WeightsLength { got: usize, n: usize },
    #[error("size_skew: weight {index} is {value}; weights must be positive finite numbers")]
    InvalidWeight { index: usize, value: f64 },
}

/// Row indices for each of `n` institutions; see the module documentation.
pub fn partition(
    table: &Table,
    n: usize,
    p: &Partitioner,
    seed: u64,
) -> Result<Vec<Vec<usize>>, PartitionError> {
    let rows = table.n_rows();
    if n == 0 {
        return Err(PartitionError::NoInstitutions);
    }
    if n > rows {
        return Err(PartitionError::TooFewRows { rows, n });
    }
    // A stream of its own, so that a partition and a later hold-out split with the same seed
    // do not shuffle in lockstep.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7061_7274_6974_696f);
    let mut parts = match p {
        Partitioner::Iid => {
            let mut idx: Vec<usize> = (0..rows).collect();
            idx.shuffle(&mut rng);
            cut(&idx, &equal_sizes(rows, n))
        }
        Partitioner::SortedBands { column } => {
            // One-hot columns are named `feature=category`; the numeric ones are the rest.
            let numeric = || {
                table
                    .feature_names
                    .iter()
                    .filter(|c| !c.contains('='))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let Some(j) = table.feature_names.iter().position(|c| c == column) else {
                let prefix = format!("{column}=");
                let categories = table
                    .feature_names
                    .iter()
                    .filter(|c| c.starts_with(&prefix))
                    .count();
                if categories > 0 {
                    return Err(PartitionError::CategoricalColumn {
                        column: column.clone(),
                        categories,
                        available: numeric(),
                    });
                }
                return Err(PartitionError::UnknownColumn {
                    column: column.clone(),
                    available: numeric(),
                });
            };
            let col = table.x.column(j);
            let mut idx: Vec<usize> = (0..rows).collect();
            // Stable: ties keep file order. NaN sorts after every number.
            idx.sort_by(|&a, &b| {
                let (va, vb) = (col[a], col[b]);
                match (va.is_nan(), vb.is_nan()) {
                    (false, false) => va.total_cmp(&vb),
                    (a_nan, b_nan) => a_nan.cmp(&b_nan),
                }
            });
            cut(&idx, &equal_sizes(rows, n))
        }
        Partitioner::Dirichlet { alpha } => {
            if !(alpha.is_finite() && *alpha > 0.0) {
                return Err(PartitionError::InvalidAlpha { alpha: *alpha });
            }
            if table.labels.ncols() == 0 {
                return Err(PartitionError::NoLabel);
            }
            dirichlet(table, n, *alpha, &mut rng)
        }
        Partitioner::SizeSkew { weights } => {
            if weights.len() != n {
                return Err(PartitionError::WeightsLength {
                    got: weights.len(),
                    n,
                });
            }
            if let Some((index, &value)) = weights
                .iter()
                .enumerate()
                .find(|(_, w)| !(w.is_finite() && **w > 0.0))
            {
                return Err(PartitionError::InvalidWeight { index, value });
            }
            let mut idx: Vec<usize> = (0..rows).collect();
            idx.shuffle(&mut rng);
            cut(&idx, &proportional_sizes(rows, weights))
        }
    };
    for part in &mut parts {
        part.sort_unstable();
    }
    Ok(parts)
}

/// `rows` split into `n` sizes differing by at most one (the larger ones first).
fn equal_sizes(rows: usize, n: usize) -> Vec<usize> {
    (0..n)
        .map(|i| rows / n + usize::from(i < rows % n))
        .collect()
}

/// Sizes proportional to `weights` summing to `rows`, each at least 1 (largest remainder).
fn proportional_sizes(rows: usize, weights: &[f64]) -> Vec<usize> {
    let n = weights.len();
    let total: f64 = weights.iter().sum();
    // One row each up front; the rest is shared by weight.
    let spare = rows - n;
    let exact: Vec<f64> = weights.iter().map(|w| w / total * spare as f64).collect();
    let mut sizes: Vec<usize> = exact.iter().map(|e| 1 + e.floor() as usize).collect();
    let mut left = rows - sizes.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        sizes[i] += 1;
        left -= 1;
    }
    sizes
}

fn cut(idx: &[usize], sizes: &[usize]) -> Vec<Vec<usize>> {
    let mut start = 0;
    sizes
        .iter()
        .map(|&s| {
            let part = idx[start..start + s].to_vec();
            start += s;
            part
        })
        .collect()
}

/// A draw from Dir(α, …, α) of dimension `n` (normalised Gamma(α, 1) variates). When every
/// variate underflows to zero (tiny α), all mass goes to one uniformly chosen institution —
/// the limit the distribution approaches.
fn dirichlet_draw(n: usize, alpha: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut g: Vec<f64> = match Gamma::new(alpha, 1.0) {
        Ok(gamma) => (0..n).map(|_| gamma.sample(rng)).collect(),
        Err(_) => vec![0.0; n],
    };
    let sum: f64 = g.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        g.iter_mut().for_each(|v| *v /= sum);
    } else {
        g.iter_mut().for_each(|v| *v = 0.0);
        g[rng.random_range(0..n)] = 1.0;
    }
    g
}

fn dirichlet(table: &Table, n: usize, alpha: f64, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let rows = table.n_rows();
    let y = table.label(0);
    let mut parts: Vec<Vec<usize>> = vec![Vec::new(); n];
    for class in [false, true] {
        let mut idx: Vec<usize> = (0..rows).filter(|&r| (y[r] > 0.5) == class).collect();
        if idx.is_empty() {
            continue;
        }
        idx.shuffle(rng);
        let q = dirichlet_draw(n, alpha, rng);
        // Cut points at the rounded cumulative shares; the last one is exactly the class size.
        let mut cum = 0.0;
        let mut start = 0;
        for (i, part) in parts.iter_mut().enumerate() {
            cum += q[i];
            let end = if i + 1 == n {
                idx.len()
            } else {
                ((cum * idx.len() as f64).round() as usize).clamp(start, idx.len())
            };
            part.extend_from_slice(&idx[start..end]);
            start = end;
        }
    }
    // Top up institutions that came out (nearly) empty from the largest one.
    let min_rows = (rows / (2 * n)).clamp(1, 10);
    for i in 0..n {
        while parts[i].len() < min_rows {
            let donor = (0..n)
                .filter(|&d| d != i)
                .max_by_key(|&d| (parts[d].len(), std::cmp::Reverse(d)))
                .unwrap_or(i);
            if donor == i || parts[donor].len() <= min_rows {
                break;
            }
            let k = rng.random_range(0..parts[donor].len());
            let row = parts[donor].swap_remove(k);
            parts[i].push(row);
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// `rows` rows, feature "v" = a scrambled value with a few NaN, label 0 positive for 20 %.
    fn table(rows: usize) -> Table {
        Table {
            feature_names: vec!["v".into(), "w".into()],
            x: Array2::from_shape_fn((rows, 2), |(r, c)| {
                if c == 1 {
                    1.0
                } else if r % 37 == 5 {
                    f32::NAN
                } else {
                    ((r * 7919) % 1000) as f32
                }
            }),
            label_names: vec!["y".into()],
            labels: Array2::from_shape_fn((rows, 1), |(r, _)| f32::from(r % 5 == 0)),
            ids: (0..rows).map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn sorted_bands_on_a_categorical_column_says_only_numeric_features_qualify() {
        let mut t = table(50);
        t.feature_names = vec!["v".into(), "state=AK".into()];
        let e = partition(
            &t,
            2,
            &Partitioner::SortedBands {
                column: "state".into(),
            },
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("'state' is categorical (1 one-hot columns)"),
            "{e}"
        );
        assert!(e.contains("only numeric features"), "{e}");
        assert!(e.contains("numeric features: v)"), "{e}");
        let e = partition(
            &t,
            2,
            &Partitioner::SortedBands {
                column: "nope".into(),
            },
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a numeric feature"), "{e}");
    }

    fn all() -> Vec<Partitioner> {
        vec![
            Partitioner::Iid,
            Partitioner::SortedBands { column: "v".into() },
            Partitioner::Dirichlet { alpha: 0.3 },
            Partitioner::Dirichlet { alpha: 100.0 },
            Partitioner::SizeSkew {
                weights: vec![1.0, 2.0, 3.0, 4.0, 10.0],
            },
        ]
    }

    #[test]
    fn every_row_exactly_once_every_institution_non_empty_and_deterministic() {
        let t = table(1003);
        for p in all() {
            let parts = partition(&t, 5, &p, 42).unwrap();
            assert_eq!(parts.len(), 5);
            let mut seen: Vec<usize> = parts.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..1003).collect::<Vec<_>>(), "{p:?}");
            assert!(parts.iter().all(|q| !q.is_empty()), "{p:?}");
            assert!(
                parts.iter().all(|q| q.windows(2).all(|w| w[0] < w[1])),
                "{p:?}"
            );
            assert_eq!(partition(&t, 5, &p, 42).unwrap(), parts, "{p:?}");
            if !matches!(p, Partitioner::SortedBands { .. }) {
                assert_ne!(partition(&t, 5, &p, 43).unwrap(), parts, "{p:?}");
            }
        }
    }

    #[test]
    fn iid_and_bands_have_equal_sizes() {
        let t = table(1003);
        for p in [
            Partitioner::Iid,
            Partitioner::SortedBands { column: "v".into() },
        ] {
            let sizes: Vec<usize> = partition(&t, 5, &p, 1)
                .unwrap()
                .iter()
                .map(Vec::len)
                .collect();
            assert_eq!(sizes, [201, 201, 201, 200, 200]);
        }
    }

    #[test]
    fn bands_are_sorted_with_nan_last() {
        let t = table(1003);
        let p = Partitioner::SortedBands { column: "v".into() };
        let parts = partition(&t, 4, &p, 0).unwrap();
        let col = t.x.column(0);
        let range = |part: &Vec<usize>| {
            let vals: Vec<f32> = part
                .iter()
                .map(|&r| col[r])
                .filter(|v| !v.is_nan())
                .collect();
            let lo = vals.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = vals.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            (lo, hi)
        };
        for w in parts.windows(2) {
            assert!(
                range(&w[0]).1 <= range(&w[1]).0,
                "{:?} then {:?}",
                range(&w[0]),
                range(&w[1])
            );
        }
        let nan_rows: Vec<usize> = (0..1003).filter(|&r| col[r].is_nan()).collect();
        assert!(nan_rows.iter().all(|r| parts[3].contains(r)));
        assert!(parts[..3].iter().flatten().all(|&r| !col[r].is_nan()));
    }

    #[test]
    fn size_skew_is_proportional() {
        let t = table(1000);
        let p = Partitioner::SizeSkew {
            weights: vec![1.0, 1.0, 2.0, 6.0],
        };
        let sizes: Vec<usize> = partition(&t, 4, &p, 3)
            .unwrap()
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 1000);
        for (s, want) in sizes.iter().zip([100, 100, 200, 600]) {
            assert!(s.abs_diff(want) <= 1, "{sizes:?}");
        }
        // Tiny weights still get a row.
        let p = Partitioner::SizeSkew {
            weights: vec![1e-9, 1.0],
        };
        let sizes: Vec<usize> = partition(&t, 2, &p, 3)
            .unwrap()
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [1, 999]);
    }

    /// Row-weighted mean absolute deviation of the institutions' positive rates from the
    /// overall rate, averaged over seeds.
    fn label_skew(t: &Table, alpha: f64) -> f64 {
        let y = t.label(0);
        let overall = y.sum() as f64 / y.len() as f64;
        let seeds = 20;
        let mut total = 0.0;
        for seed in 0..seeds {
            let parts = partition(t, 8, &Partitioner::Dirichlet { alpha }, seed).unwrap();
            for part in &parts {
                let rate = part.iter().map(|&r| y[r] as f64).sum::<f64>() / part.len() as f64;
                total += (rate - overall).abs() * part.len() as f64 / y.len() as f64;
            }
        }
        total / seeds as f64
    }

    #[test]
    fn small_alpha_skews_labels_more_than_large_alpha() {
        let t = table(4000);
        let skewed = label_skew(&t, 0.1);
        let mild = label_skew(&t, 1.0);
        let iid_like = label_skew(&t, 1000.0);
        assert!(
            skewed > mild && mild > iid_like,
            "{skewed} {mild} {iid_like}"
        );
        assert!(skewed > 0.1, "{skewed}");
        assert!(iid_like < 0.02, "{iid_like}");
    }

    #[test]
    fn errors_name_the_problem() {
        let t = table(10);
        let e = |n, p: Partitioner| partition(&t, n, &p, 0).unwrap_err().to_string();
        assert_eq!(
            e(0, Partitioner::Iid),
            "cannot partition into 0 institutions"
        );
        assert_eq!(
            e(11, Partitioner::Iid),
            "cannot partition 10 rows into 11 institutions: every institution needs at least one row"
        );
        assert_eq!(
            e(
                2,
                Partitioner::SortedBands {
                    column: "Income".into()
                }
            ),
            "sorted_bands: column 'Income' is not a numeric feature of the table (numeric features: v, w)"
        );
        assert_eq!(
            e(2, Partitioner::Dirichlet { alpha: 0.0 }),
            "dirichlet: alpha must be a positive finite number, got 0"
        );
        assert!(e(2, Partitioner::Dirichlet { alpha: f64::NAN }).contains("got NaN"));
        assert_eq!(
            e(
                3,
                Partitioner::SizeSkew {
                    weights: vec![1.0, 2.0]
                }
            ),
            "size_skew: 2 weights for 3 institutions"
        );
        assert_eq!(
            e(
                2,
                Partitioner::SizeSkew {
                    weights: vec![1.0, -2.0]
                }
            ),
            "size_skew: weight 1 is -2; weights must be positive finite numbers"
        );
        let mut unlabelled = t.clone();
        unlabelled.labels = Array2::zeros((10, 0));
        assert_eq!(
            partition(&unlabelled, 2, &Partitioner::Dirichlet { alpha: 1.0 }, 0)
                .unwrap_err()
                .to_string(),
            "dirichlet: the table has no label column to skew"
        );
    }

    #[test]
    fn scenario_toml_form() {
        #[derive(Deserialize)]
        struct S {
            partition: Partitioner,
        }
        let s: S =
            toml::from_str("partition = { kind = \"sorted_bands\", column = \"Income\" }").unwrap();
        assert_eq!(
            s.partition,
            Partitioner::SortedBands {
                column: "Income".into()
            }
        );
        let s: S =
            toml::from_str("partition = { kind = \"size_skew\", weights = [1.0, 3.0] }").unwrap();
        assert_eq!(
            s.partition,
            Partitioner::SizeSkew {
                weights: vec![1.0, 3.0]
            }
        );
    }
}
