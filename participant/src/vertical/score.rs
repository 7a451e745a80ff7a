//! Scoring customers with a trained vertical model (`kind = "vertical_score"`): what each
//! party computes from its own part of the model, the passive party's answer as it crosses
//! the sealed channel, and the active party's ranked list.
//!
//! The passive party answers once, for every aligned customer: LR its partial logits
//! `X_k·w_k` (standardised as in training), GBDT the direction of every customer at each
//! split it owns (`value < threshold` → left, missing → the split's default, thresholds
//! staying with it). Both are what the active party already learns of the hold-out rows in
//! training. Only the active party combines them with its own part into scores; the passive
//! party learns nothing of them (it receives no message in a scoring session).
//!
//! On the wire the answer is compact: 8 bytes per logit, one bit per customer and split,
//! each vector one base64 string ([`PackedF64`], [`PackedBits`]) whose length is checked
//! against the customers this party aligned.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use fedsilo_ml::linear::sigmoid;
use fedsilo_task::vertical::VerticalKind;
use fedsilo_vertical::boost::Routes;
use ndarray::{Array1, ArrayView2};
use serde::{Deserialize, Serialize};

use super::VerticalModelFile;

/// Why a scoring answer from the peer cannot be used, naming what is wrong.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ScoringError {
    #[error("{what}: not canonical padded base64")]
    Base64 { what: &'static str },
    #[error("{what}: {got} bytes for {rows} customers (expected {expected})")]
    Length {
        what: &'static str,
        rows: usize,
        expected: usize,
        got: usize,
    },
    #[error("routes: bits set beyond the last of {rows} customers")]
    Padding { rows: usize },
    #[error("the answer is {got}, this model needs {want}")]
    WrongKind {
        want: &'static str,
        got: &'static str,
    },
    #[error("routes: tree {tree} node {node} given twice")]
    Duplicate { tree: u32, node: u32 },
    #[error("partial logit of customer {row} is {value} (not finite)")]
    NotFinite { row: usize, value: f64 },
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Decodes strict padded base64 (re-encoding must give the same string).
fn decode(what: &'static str, s: &str) -> Result<Vec<u8>, ScoringError> {
    let bytes = b64().decode(s).map_err(|_| ScoringError::Base64 { what })?;
    if b64().encode(&bytes) != s {
        return Err(ScoringError::Base64 { what });
    }
    Ok(bytes)
}

/// A vector of `f64`, little-endian, as one base64 string.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PackedF64(String);

impl PackedF64 {
    pub fn pack(values: &[f64]) -> Self {
        let mut bytes = Vec::with_capacity(values.len() * 8);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        PackedF64(b64().encode(bytes))
    }

    /// Exactly `rows` finite values, or why not.
    pub fn unpack(&self, rows: usize) -> Result<Vec<f64>, ScoringError> {
        const WHAT: &str = "partial logits";
        let bytes = decode(WHAT, &self.0)?;
        if bytes.len() != rows * 8 {
            return Err(ScoringError::Length {
                what: WHAT,
                rows,
                expected: rows * 8,
                got: bytes.len(),
            });
        }
        bytes
            .chunks_exact(8)
            .enumerate()
            .map(|(row, c)| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                let value = f64::from_le_bytes(a);
                if value.is_finite() {
                    Ok(value)
                } else {
                    Err(ScoringError::NotFinite { row, value })
                }
            })
            .collect()
    }
}

/// A vector of bits (bit `i % 8` of byte `i / 8` is customer `i`), as one base64 string.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PackedBits(String);

impl PackedBits {
    pub fn pack(bits: impl ExactSizeIterator<Item = bool>) -> Self {
        let mut bytes = vec![0u8; bits.len().div_ceil(8)];
        for (i, b) in bits.enumerate() {
            if let Some(byte) = bytes.get_mut(i / 8) {
                *byte |= u8::from(b) << (i % 8);
            }
        }
        PackedBits(b64().encode(bytes))
    }

    /// Exactly `rows` bits (no stray bit in the last byte's padding), or why not.
    pub fn unpack(&self, rows: usize) -> Result<Vec<bool>, ScoringError> {
        const WHAT: &str = "routes";
        let bytes = decode(WHAT, &self.0)?;
        let expected = rows.div_ceil(8);
        if bytes.len() != expected {
            return Err(ScoringError::Length {
                what: WHAT,
                rows,
                expected,
                got: bytes.len(),
            });
        }
        if rows % 8 != 0 && bytes.last().is_some_and(|&b| b >> (rows % 8) != 0) {
            return Err(ScoringError::Padding { rows });
        }
        Ok((0..rows)
            .map(|i| bytes.get(i / 8).is_some_and(|&b| (b >> (i % 8)) & 1 == 1))
            .collect())
    }
}

/// The passive party's answer in a scoring session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ScoringAnswer {
    /// LR: the partial logit of every aligned customer.
    Logits(PackedF64),
    /// GBDT: (tree, node, which customers go left) of every split this party owns.
    Routes(Vec<(u32, u32, PackedBits)>),
}

impl ScoringAnswer {
    fn name(&self) -> &'static str {
        match self {
            ScoringAnswer::Logits(_) => "partial logits",
            ScoringAnswer::Routes(_) => "routes",
        }
    }
}

/// Why a party's own model file cannot score this job's customers.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error(
        "no model of vertical job '{job}' at {}: this node did not take part in that job (or \
         its state directory changed)", path.display()
    )]
    Missing { job: String, path: PathBuf },
    #[error("cannot read the model file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the model file {} is not a vertical model file", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the model file {}: {what}", path.display())]
    Mismatch { path: PathBuf, what: String },
    #[error(
        "dataset '{dataset}': its feature columns ({now}) are not the columns the model of \
         '{job}' was trained on ({then}); score a table of the training schema"
    )]
    Columns {
        dataset: String,
        job: String,
        now: String,
        then: String,
    },
}

/// The JSON file at `path` this node wrote, or `None` when there is none.
pub(super) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, ModelFileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ModelFileError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| ModelFileError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

/// The routes of a scoring or hold-out answer, each exactly `rows` bits, no split twice.
pub(super) fn unpack_routes(
    routes: &[(u32, u32, PackedBits)],
    rows: usize,
) -> Result<Routes, ScoringError> {
    let mut out = Routes::new();
    for (tree, node, bits) in routes {
        if out.insert((*tree, *node), bits.unpack(rows)?).is_some() {
            return Err(ScoringError::Duplicate {
                tree: *tree,
                node: *node,
            });
        }
    }
    Ok(out)
}

impl VerticalModelFile {
    /// Reads this node's part of vertical job `job_id`'s model.
    pub fn load(state_dir: &Path, job_id: &str) -> Result<Self, ModelFileError> {
        let path = Self::path(state_dir, job_id);
        read_json(&path)?.ok_or_else(|| ModelFileError::Missing {
            job: job_id.to_string(),
            path,
        })
    }

    /// Checks the file (read from `path`) is this party's part of a trained model of
    /// `job_id` against `peer`, over the same columns as `columns` (names and order).
    pub fn check_for(
        &self,
        path: &Path,
        job_id: &str,
        role: &str,
        peer: &str,
        dataset: &str,
        columns: &[String],
    ) -> Result<(), ModelFileError> {
        let mismatch = |what: String| ModelFileError::Mismatch {
            path: path.to_path_buf(),
            what,
        };
        if self.job_id != job_id {
            return Err(mismatch(format!("it is of job '{}'", self.job_id)));
        }
        if !self.kind.trains() {
            return Err(mismatch(format!("it is of a {} job", self.kind.name())));
        }
        if self.role != role {
            return Err(mismatch(format!(
                "this party was the {} party of that job, not the {role} one",
                self.role
            )));
        }
        if self.peer != peer {
            return Err(mismatch(format!(
                "the model was trained with '{}', this job scores with '{peer}'",
                self.peer
            )));
        }
        let complete = match (self.kind, role) {
            (VerticalKind::VerticalLogistic, "active") => {
                self.lr.is_some() && self.standardizer.is_some()
            }
            (VerticalKind::VerticalLogistic, _) => {
                self.lr_coef.is_some() && self.standardizer.is_some()
            }
            (VerticalKind::VerticalGbdt, "active") => self.gbdt.is_some(),
            (VerticalKind::VerticalGbdt, _) => self.passive_splits.is_some(),
            (VerticalKind::VerticalScore, _) => false,
        };
        if !complete {
            return Err(mismatch(format!(
                "it lacks this party's part of a {} model",
                self.kind.name()
            )));
        }
        if self.columns != columns {
            return Err(ModelFileError::Columns {
                dataset: dataset.to_string(),
                job: job_id.to_string(),
                now: columns.join(", "),
                then: self.columns.join(", "),
            });
        }
        Ok(())
    }
}

/// The passive party's answer for rows `x` (its own columns, raw: NaN = missing), from its
/// model file (checked by [`VerticalModelFile::check_for`]).
pub fn passive_answer(
    model: &VerticalModelFile,
    x: ArrayView2<f32>,
) -> Result<ScoringAnswer, super::VerticalJobError> {
    let incomplete = || super::VerticalJobError::Internal("the model file is incomplete");
    match model.kind {
        VerticalKind::VerticalLogistic => {
            let st = model.standardizer.as_ref().ok_or_else(incomplete)?;
            let coef = model.lr_coef.as_ref().ok_or_else(incomplete)?;
            let xs = st.apply(x).map_err(super::VerticalJobError::Standardize)?;
            let u: Vec<f64> = xs
                .outer_iter()
                .map(|row| {
                    coef.iter()
                        .zip(row.iter())
                        .map(|(w, &v)| w * f64::from(v))
                        .sum()
                })
                .collect();
            Ok(ScoringAnswer::Logits(PackedF64::pack(&u)))
        }
        VerticalKind::VerticalGbdt => {
            let splits = model.passive_splits.as_ref().ok_or_else(incomplete)?;
            let mut out = Vec::with_capacity(splits.len());
            for (tree, node, sp) in splits {
                if sp.feature as usize >= x.ncols() {
                    return Err(incomplete());
                }
                let col = x.column(sp.feature as usize);
                let bits = col.iter().map(|&v| {
                    if v.is_nan() {
                        sp.default_left
                    } else {
                        v < sp.threshold
                    }
                });
                out.push((*tree, *node, PackedBits::pack(bits)));
            }
            Ok(ScoringAnswer::Routes(out))
        }
        VerticalKind::VerticalScore => Err(incomplete()),
    }
}

/// The active party's scores (probabilities) of its rows `x` (its own columns, raw), from
/// its model file and every passive party's answer for the same rows (the spec's order).
pub fn active_scores(
    model: &VerticalModelFile,
    x: ArrayView2<f32>,
    answers: &[ScoringAnswer],
) -> Result<Vec<f64>, super::VerticalJobError> {
    let incomplete = || super::VerticalJobError::Internal("the model file is incomplete");
    let n = x.nrows();
    let bad = super::VerticalJobError::Scoring;
    let protocol = |source| super::VerticalJobError::Protocol {
        peer: model.peer.clone(),
        source,
    };
    let wrong_kind = |a: &ScoringAnswer| {
        bad(ScoringError::WrongKind {
            want: if model.kind == VerticalKind::VerticalGbdt {
                "routes"
            } else {
                "partial logits"
            },
            got: a.name(),
        })
    };
    let margins = match model.kind {
        VerticalKind::VerticalLogistic => {
            let st = model.standardizer.as_ref().ok_or_else(incomplete)?;
            let lr = model.lr.as_ref().ok_or_else(incomplete)?;
            let mut us = Vec::with_capacity(answers.len());
            for a in answers {
                let ScoringAnswer::Logits(u) = a else {
                    return Err(wrong_kind(a));
                };
                us.push(u.unpack(n).map_err(bad)?);
            }
            let xs = st.apply(x).map_err(super::VerticalJobError::Standardize)?;
            lr.margins(xs.view(), &us).map_err(protocol)?
        }
        VerticalKind::VerticalGbdt => {
            let gbdt = model.gbdt.as_ref().ok_or_else(incomplete)?;
            let mut routes = Vec::with_capacity(answers.len());
            for a in answers {
                let ScoringAnswer::Routes(r) = a else {
                    return Err(wrong_kind(a));
                };
                routes.push(unpack_routes(r, n).map_err(bad)?);
            }
            gbdt.predict_margin(x, &routes).map_err(protocol)?
        }
        VerticalKind::VerticalScore => return Err(incomplete()),
    };
    Ok(margins.into_iter().map(sigmoid).collect())
}

/// The active party's scored customers, as written to `<state_dir>/vertical/<job>.scores.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredRows {
    /// The id column's name (the header), and each customer's id.
    pub id_column: String,
    pub ids: Vec<String>,
    pub scores: Vec<f64>,
    /// The label, when the scored table has the model's: its name and values.
    pub label: Option<(String, Array1<f32>)>,
}

impl ScoredRows {
    /// `<state_dir>/vertical/<job>.scores.csv`.
    pub fn path(state_dir: &Path, job_id: &str) -> PathBuf {
        VerticalModelFile::path(state_dir, job_id).with_extension("scores.csv")
    }

    /// The AUC on the label, when there is one (and both classes occur).
    pub fn auc(&self) -> Option<f64> {
        let (_, y) = self.label.as_ref()?;
        let pos = y.iter().filter(|&&v| v > 0.5).count();
        if pos == 0 || pos == y.len() {
            return None;
        }
        Some(fedsilo_ml::metrics::auc(&self.scores, &y.to_vec()))
    }

    /// The ranked list, best first (ties by id, bytewise): `rank,<id>,score,decile[,label]`.
    /// Written to a temporary file, then renamed.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut order: Vec<usize> = (0..self.scores.len()).collect();
        let score = |i: usize| self.scores.get(i).copied().unwrap_or(f64::NAN);
        let id = |i: usize| self.ids.get(i).map_or("", String::as_str);
        order.sort_by(|&a, &b| {
            score(b)
                .total_cmp(&score(a))
                .then_with(|| id(a).as_bytes().cmp(id(b).as_bytes()))
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("csv.tmp");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let mut head = format!("rank,{},score,decile", csv_cell(&self.id_column));
        if let Some((name, _)) = &self.label {
            head.push(',');
            head.push_str(&csv_cell(name));
        }
        writeln!(w, "{head}")?;
        let n = order.len().max(1);
        for (rank, &i) in order.iter().enumerate() {
            let decile = rank * 10 / n + 1;
            write!(
                w,
                "{},{},{:.9},{decile}",
                rank + 1,
                csv_cell(id(i)),
                score(i)
            )?;
            if let Some((_, y)) = &self.label {
                write!(w, ",{}", y.get(i).copied().unwrap_or(f32::NAN))?;
            }
            writeln!(w)?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

/// A CSV cell: quoted when it holds a comma, quote or line break.
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_bits_round_trip_and_refuse_wrong_lengths_and_padding() {
        for n in [0usize, 1, 7, 8, 9, 63, 64, 65, 1000] {
            let bits: Vec<bool> = (0..n).map(|i| (i * 7 + i / 3) % 5 < 2).collect();
            let p = PackedBits::pack(bits.iter().copied());
            assert_eq!(p.unpack(n).unwrap(), bits, "n = {n}");
            if n > 0 {
                assert!(matches!(p.unpack(n + 8), Err(ScoringError::Length { .. })));
            }
        }
        // 3 customers, a bit set for a fourth
        let p = PackedBits(b64().encode([0b0000_1001u8]));
        assert_eq!(p.unpack(3), Err(ScoringError::Padding { rows: 3 }));
        assert_eq!(p.unpack(4).unwrap(), vec![true, false, false, true]);
        // unpadded or non-canonical base64
        assert!(matches!(
            PackedBits("CQ".into()).unpack(3),
            Err(ScoringError::Base64 { .. })
        ));
        assert!(matches!(
            PackedBits("CR==".into()).unpack(3),
            Err(ScoringError::Base64 { .. })
        ));
    }

    #[test]
    fn routes_unpack_each_split_once_at_the_customers_length() {
        let bits = PackedBits::pack([true, false, true].into_iter());
        let routes = unpack_routes(&[(0, 1, bits.clone()), (1, 2, bits.clone())], 3).unwrap();
        assert_eq!(routes[&(1, 2)], vec![true, false, true]);
        assert_eq!(
            unpack_routes(&[(0, 1, bits.clone()), (0, 1, bits.clone())], 3),
            Err(ScoringError::Duplicate { tree: 0, node: 1 })
        );
        assert!(matches!(
            unpack_routes(&[(0, 1, bits)], 9),
            Err(ScoringError::Length { .. })
        ));
    }

    #[test]
    fn packed_logits_round_trip_exactly_and_refuse_non_finite() {
        let v = vec![0.1, -3.5e-300, 1e300, 0.0, -0.0, 12345.678];
        let p = PackedF64::pack(&v);
        let back = p.unpack(v.len()).unwrap();
        assert!(v.iter().zip(&back).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(matches!(p.unpack(5), Err(ScoringError::Length { .. })));
        let p = PackedF64::pack(&[1.0, f64::NAN]);
        assert!(matches!(
            p.unpack(2),
            Err(ScoringError::NotFinite { row: 1, .. })
        ));
    }

    #[test]
    fn the_ranked_list_is_best_first_with_ties_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let rows = ScoredRows {
            id_column: "customer".into(),
            ids: vec!["b".into(), "a,1".into(), "c".into(), "a".into()],
            scores: vec![0.5, 0.9, 0.1, 0.5],
            label: Some(("churned".into(), Array1::from(vec![1.0, 1.0, 0.0, 0.0]))),
        };
        let path = dir.path().join("s.csv");
        rows.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "rank,customer,score,decile,churned\n1,\"a,1\",0.900000000,1,1\n2,a,0.500000000,3,0\n3,b,0.500000000,6,1\n4,c,0.100000000,8,0\n"
        );
        assert_eq!(rows.auc(), Some(0.875));
    }
}
