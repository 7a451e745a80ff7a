//! Shared by the vertical tests: the credit_data table split by columns, and seeded RNGs.
#![allow(dead_code)]

use ndarray::{Array1, Array2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// credit_data.csv (data/ at the repository root): label `Status = bad`; the bank's columns
/// then the partner's, numeric, missing = NaN.
pub struct Credit {
    pub x: Array2<f32>,
    pub y: Array1<f32>,
    /// columns of the active party: `0..active`
    pub active: usize,
}

pub const ACTIVE_COLUMNS: [&str; 4] = ["Seniority", "Age", "Records", "Job"];
pub const PASSIVE_COLUMNS: [&str; 7] = [
    "Time", "Expenses", "Income", "Assets", "Debt", "Amount", "Price",
];

pub fn credit(rows: usize) -> Credit {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/credit_data.csv");
    let mut rd = csv::Reader::from_path(path).expect("data/credit_data.csv");
    let header: Vec<String> = rd
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name).expect("column");
    let cols: Vec<usize> = ACTIVE_COLUMNS
        .iter()
        .chain(&PASSIVE_COLUMNS)
        .map(|c| col(c))
        .collect();
    let status = col("Status");
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for rec in rd.records().take(rows) {
        let rec = rec.expect("record");
        ys.push(if &rec[status] == "bad" { 1.0 } else { 0.0 });
        for (k, &c) in cols.iter().enumerate() {
            let v = &rec[c];
            let name = if k < ACTIVE_COLUMNS.len() {
                ACTIVE_COLUMNS[k]
            } else {
                PASSIVE_COLUMNS[k - ACTIVE_COLUMNS.len()]
            };
            let x = match name {
                "Records" => {
                    if v == "yes" {
                        1.0
                    } else if v.is_empty() {
                        f32::NAN
                    } else {
                        0.0
                    }
                }
                "Job" => {
                    if v == "fixed" {
                        1.0
                    } else if v.is_empty() {
                        f32::NAN
                    } else {
                        0.0
                    }
                }
                _ => v.parse::<f32>().unwrap_or(f32::NAN),
            };
            xs.push(x);
        }
    }
    let n = ys.len();
    Credit {
        x: Array2::from_shape_vec((n, cols.len()), xs).expect("shape"),
        y: Array1::from(ys),
        active: ACTIVE_COLUMNS.len(),
    }
}

impl Credit {
    /// Standardised columns (mean 0, sd 1 over the rows), missing → 0: LR's input.
    pub fn standardised(&self) -> Array2<f32> {
        let mut x = self.x.clone();
        for mut c in x.columns_mut() {
            let vals: Vec<f64> = c
                .iter()
                .filter(|v| !v.is_nan())
                .map(|&v| f64::from(v))
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let sd = (vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / vals.len() as f64)
                .sqrt()
                .max(1e-12);
            c.mapv_inplace(|v| {
                if v.is_nan() {
                    0.0
                } else {
                    ((f64::from(v) - m) / sd) as f32
                }
            });
        }
        x
    }

    pub fn split(x: &Array2<f32>, active: usize) -> (Array2<f32>, Array2<f32>) {
        (columns(x, 0..active), columns(x, active..x.ncols()))
    }
}

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Columns `range` of `x`.
pub fn columns(x: &Array2<f32>, range: std::ops::Range<usize>) -> Array2<f32> {
    x.select(Axis(1), &range.collect::<Vec<_>>())
}
