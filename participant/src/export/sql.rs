//! A model as one SQL query over the institution's table: `SELECT <id>, <score> … FROM
//! <table>`, the probabilities `fedsilo score` gives, computed by the database.
//!
//! The query is PostgreSQL and also plain SQL-92 apart from `EXP` (SQL:2003, present in every
//! major database): `CAST(… AS REAL)`, `CAST(… AS DOUBLE PRECISION)`, `CASE`, `TRIM`,
//! `IS NULL`, a derived table. Numeric columns must be numeric (NULL = missing); categorical
//! columns are compared as trimmed text.
//!
//! Exactness: fedsilo reads features as `f32` and standardises in `f32`; the query does the
//! same in `REAL` and writes every `f32` constant as the decimal of its exact value, so
//! standardised values, bin and split comparisons are bit for bit fedsilo's. Sums run in
//! `DOUBLE PRECISION` like fedsilo's (trees in the same order), so probabilities agree to
//! rounding (≈1e-15). `EXP` is clamped to ±700 (a probability within 1e-300 of 0 or 1) so no
//! database raises an underflow.
//!
//! - Logistic regression: `z = b + Σ c_j·s_j`, `s_j = (x_j − mean_j)/sd_j`, or 0 when `x_j` is
//!   NULL (fedsilo's rule: a missing value is the federation's mean).
//! - Scorecard: per selected characteristic, a `CASE` from its bin to the WOE (`f32`, as
//!   fedsilo's WOE columns) — numeric bins by cut points, missing first; categorical bins by
//!   category, no match or missing → the missing bin — then the regression on those WOE
//!   values; the query also returns the points (`CASE` bin → points, summed).
//! - GBDT: one nested `CASE` per tree (`x < cut` goes left; NULL takes the split's default
//!   direction), summed after the base score, then the sigmoid.
//! - MLP: refused.

use std::fmt::Write as _;

use fedsilo_ml::gbdt::{GbdtModel, Node};
use fedsilo_ml::scorecard::{Characteristic, Scorecard};
use fedsilo_task::{ModelParams, TrainedModel};

use super::{check_finite, kind_name, lit, lit32, ExportError};
use crate::data::derive::Derivation;
use crate::data::{FeatureKind, Schema, OTHER};

/// What the query reads and returns.
#[derive(Clone, Debug)]
pub struct SqlOptions {
    /// The table (or view, or `schema.table`) holding the customers; written as given.
    pub table: String,
    /// Column returned next to the scores (the schema's id column by default).
    pub id_column: Option<String>,
}

/// A quoted SQL identifier (`"name"`, inner quotes doubled).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal.
pub fn string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// One model column as the query computes it.
#[derive(Clone, Debug)]
struct Col {
    /// Its value as fedsilo reads it, `REAL` (NULL = missing).
    value: String,
    /// Whether it can be missing (one-hot and `other` columns cannot).
    nullable: bool,
}

fn value(c: &Col) -> String {
    c.value.clone()
}

/// `NULL`-aware "is missing" of a model column.
fn is_null(c: &Col) -> Option<String> {
    c.nullable.then(|| format!("({}) IS NULL", c.value))
}

fn trimmed(column: &str) -> String {
    format!("TRIM(CAST({} AS VARCHAR(1000)))", ident(column))
}

fn string_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items.into_iter().map(string).collect::<Vec<_>>().join(", ")
}

/// The read columns of `schema` (features, then inputs) as the query computes them, by
/// encoded name.
fn read_columns(schema: &Schema) -> Vec<(String, Col)> {
    let mut out = Vec::new();
    for f in schema.features.iter().chain(&schema.inputs) {
        match &f.kind {
            FeatureKind::Numeric => out.push((
                f.name.clone(),
                Col {
                    value: format!("CAST({} AS REAL)", ident(&f.name)),
                    nullable: true,
                },
            )),
            FeatureKind::Boolean => out.push((
                f.name.clone(),
                Col {
                    value: format!(
                        "CAST(CASE WHEN LOWER({t}) IN ('true', 'yes', 'y', 't', '1') THEN 1 WHEN LOWER({t}) IN ('false', 'no', 'n', 'f', '0') THEN 0 END AS REAL)",
                        t = trimmed(&f.name)
                    ),
                    nullable: true,
                },
            )),
            FeatureKind::Categorical { categories, other } => {
                for c in categories {
                    out.push((
                        format!("{}={c}", f.name),
                        Col {
                            value: format!(
                                "CAST(CASE WHEN {} = {} THEN 1 ELSE 0 END AS REAL)",
                                trimmed(&f.name),
                                string(c)
                            ),
                            nullable: false,
                        },
                    ));
                }
                if *other {
                    let known = string_list(
                        std::iter::once("")
                            .chain(schema.missing.iter().map(String::as_str))
                            .chain(categories.iter().map(String::as_str)),
                    );
                    out.push((
                        format!("{}={OTHER}", f.name),
                        Col {
                            value: format!(
                                "CAST(CASE WHEN {t} NOT IN ({known}) THEN 1 ELSE 0 END AS REAL)",
                                t = trimmed(&f.name)
                            ),
                            nullable: false,
                        },
                    ));
                }
            }
        }
    }
    out
}

/// Every model column as the query computes it, and the cohort's `WHERE` condition.
fn model_columns(
    model: &TrainedModel,
    schema: &Schema,
) -> Result<(Vec<Col>, Option<String>), ExportError> {
    let derivation = Derivation::new(schema).map_err(|source| ExportError::Schema {
        source: Box::new(source),
    })?;
    let read = read_columns(schema);
    let double_of = |c: &Col| format!("CAST({} AS DOUBLE PRECISION)", c.value);
    let mut derived: Vec<(String, Col)> = Vec::with_capacity(schema.derive.len());
    for (name, d) in schema.derive.keys().zip(derivation.derived()) {
        let e = d.to_sql(&|c| read.get(c).map_or("NULL".into(), |(_, col)| double_of(col)));
        derived.push((
            name.clone(),
            Col {
                value: format!("CAST({e} AS REAL)"),
                nullable: true,
            },
        ));
    }
    let cohort = derivation.cohort().map(|c| {
        c.to_sql(&|i| {
            read.iter()
                .chain(&derived)
                .nth(i)
                .map_or("NULL".into(), |(_, col)| double_of(col))
        })
    });
    let features: Vec<(String, Col)> = read
        .iter()
        .take(schema.n_feature_columns() - schema.derive.len())
        .chain(&derived)
        .cloned()
        .collect();
    let cols = model
        .features
        .iter()
        .map(|name| {
            features
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, c)| c.clone())
                .ok_or_else(|| ExportError::UnknownColumn {
                    feature: name.clone(),
                    available: schema.feature_columns().join(", "),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((cols, cohort))
}

fn real(v: f32) -> String {
    format!("CAST({} AS REAL)", lit32(v))
}

fn double(v: f64) -> String {
    format!("CAST({} AS DOUBLE PRECISION)", lit(v))
}

/// The scoring query of `model` for `schema`'s columns.
pub fn export(
    model: &TrainedModel,
    schema: &Schema,
    opts: &SqlOptions,
) -> Result<String, ExportError> {
    model.validate()?;
    let (ins, cohort) = model_columns(model, schema)?;
    // (output column, margin expression) per score; extra plain columns (points).
    let mut margins: Vec<(String, String)> = Vec::new();
    let mut extra: Vec<(String, String)> = Vec::new();
    match &model.params {
        ModelParams::LogisticRegression { per_label } => {
            for (l, p) in per_label.iter().enumerate() {
                let mut z = double(p.intercept);
                check_finite("intercept", p.intercept)?;
                for (j, (&c, input)) in p.coef.iter().zip(&ins).enumerate() {
                    let (m, s) = (
                        model.standardizer.mean.get(j).copied().unwrap_or(0.0),
                        model.standardizer.std.get(j).copied().unwrap_or(1.0),
                    );
                    check_finite("coefficient", c)?;
                    let standardised = format!(
                        "({} - {}) / {}",
                        value(input),
                        real(m as f32),
                        real(s as f32)
                    );
                    let sj = match is_null(input) {
                        Some(null) => {
                            format!("CASE WHEN {null} THEN CAST(0 AS REAL) ELSE {standardised} END")
                        }
                        None => standardised,
                    };
                    let _ = write!(z, "\n    + {} * CAST({sj} AS DOUBLE PRECISION)", double(c));
                }
                margins.push((score_column(model, l), z));
            }
        }
        ModelParams::Scorecard { card } => {
            let (z, points) = scorecard(card, &ins)?;
            margins.push((score_column(model, 0), z));
            extra.push(("points".into(), points));
        }
        ModelParams::Gbdt { model: g } => margins.push((score_column(model, 0), gbdt(g, &ins)?)),
        ModelParams::Mlp { .. } => {
            return Err(ExportError::Unsupported {
                kind: kind_name(model),
                format: "SQL",
                hint: "only logistic regression, scorecards and GBDT are; score an MLP with `fedsilo score`",
            })
        }
    }
    let id = opts.id_column.as_ref().or(schema.id_column.as_ref());
    let mut q = String::new();
    let _ = writeln!(
        q,
        "-- fedsilo {} model: probabilities as `fedsilo score` computes them.",
        kind_name(model)
    );
    let _ = writeln!(q, "-- Features: {}", model.features.join(", "));
    q.push_str("SELECT");
    let mut cols: Vec<String> = Vec::new();
    if let Some(id) = id {
        cols.push(format!("\n  {}", ident(id)));
    }
    for (k, (name, _)) in margins.iter().enumerate() {
        let z = format!("fedsilo_z{k}");
        cols.push(format!(
            "\n  CASE WHEN {z} >= 0\n    THEN 1 / (1 + EXP(-(CASE WHEN {z} > 700 THEN 700 ELSE {z} END)))\n    ELSE EXP(CASE WHEN {z} < -700 THEN -700 ELSE {z} END) / (1 + EXP(CASE WHEN {z} < -700 THEN -700 ELSE {z} END))\n  END AS {}",
            ident(name)
        ));
    }
    for (name, _) in &extra {
        cols.push(format!("\n  {}", ident(name)));
    }
    q.push_str(&cols.join(","));
    q.push_str("\nFROM (\n  SELECT");
    let mut inner: Vec<String> = Vec::new();
    if let Some(id) = id {
        inner.push(format!("\n    {}", ident(id)));
    }
    for (k, (_, m)) in margins.iter().enumerate() {
        inner.push(format!("\n    {m}\n    AS fedsilo_z{k}"));
    }
    for (name, e) in &extra {
        inner.push(format!("\n    {e}\n    AS {}", ident(name)));
    }
    q.push_str(&inner.join(","));
    let _ = write!(q, "\n  FROM {}", opts.table);
    if let Some(c) = &cohort {
        let _ = write!(q, "\n  WHERE {c}");
    }
    q.push_str("\n) AS fedsilo_margins");
    q.push('\n');
    Ok(q)
}

/// `score` for one label, `score_<label>` for several (as `fedsilo score` names files).
fn score_column(model: &TrainedModel, l: usize) -> String {
    if model.labels.len() <= 1 {
        "score".into()
    } else {
        format!("score_{}", model.labels.get(l).map_or("", String::as_str))
    }
}

/// A `CASE` from characteristic `c`'s bin to `value(bin)`.
fn bin_case(
    card: &Scorecard,
    c: usize,
    ins: &[Col],
    value: impl Fn(usize) -> String,
) -> Result<String, ExportError> {
    let bins = &card.woe.bins;
    let missing = bins.missing_bin(c);
    let col = |j: usize| {
        ins.get(j).ok_or(ExportError::UnknownColumn {
            feature: format!("scorecard column {j}"),
            available: format!("{} model columns", ins.len()),
        })
    };
    let mut e = String::from("CASE");
    match bins.characteristic(c) {
        Characteristic::Numeric { column, cuts, .. } => {
            let input = col(*column)?;
            if let Some(null) = is_null(input) {
                let _ = write!(e, " WHEN {null} THEN {}", value(missing));
            }
            let v = self::value(input);
            for (b, &cut) in cuts.iter().enumerate() {
                let _ = write!(e, " WHEN {v} < {} THEN {}", lit32(cut), value(b));
            }
            let _ = write!(e, " ELSE {} END", value(cuts.len()));
        }
        Characteristic::Categorical { columns, .. } => {
            for (b, &j) in columns.iter().enumerate() {
                let _ = write!(e, " WHEN {} > 0.5 THEN {}", self::value(col(j)?), value(b));
            }
            let _ = write!(e, " ELSE {} END", value(missing));
        }
    }
    Ok(e)
}

/// (margin, points) expressions of a scorecard.
fn scorecard(card: &Scorecard, ins: &[Col]) -> Result<(String, String), ExportError> {
    card.validate()
        .map_err(|e| ExportError::BadModel(fedsilo_task::InstructionError::from(e)))?;
    let sel = card.woe.selected();
    let mut z = double(card.intercept);
    let constant = if sel.is_empty() {
        -card.intercept * card.scaling.factor() + card.scaling.offset()
    } else {
        0.0
    };
    let mut points = double(constant);
    for (k, &c) in sel.iter().enumerate() {
        let woe = &card.woe.features[c].woe;
        let coef = card.coef.get(k).copied().unwrap_or(0.0);
        let w = bin_case(card, c, ins, |b| {
            double(f64::from(woe.get(b).copied().unwrap_or(0.0) as f32))
        })?;
        let _ = write!(z, "\n    + {} * ({w})", double(coef));
        let pts = card.points.get(k);
        let p = bin_case(card, c, ins, |b| {
            double(pts.and_then(|p| p.get(b)).copied().unwrap_or(0.0))
        })?;
        let _ = write!(points, "\n    + ({p})");
    }
    Ok((z, points))
}

/// The margin of a boosted model: base score, then each tree in order.
fn gbdt(g: &GbdtModel, ins: &[Col]) -> Result<String, ExportError> {
    let mut m = double(g.base_score);
    for t in &g.trees {
        let _ = write!(m, "\n    + ({})", tree(g, &t.nodes, 0, ins, 0)?);
    }
    Ok(m)
}

fn tree(
    g: &GbdtModel,
    nodes: &[Node],
    i: usize,
    ins: &[Col],
    depth: usize,
) -> Result<String, ExportError> {
    let bad = || {
        ExportError::BadModel(fedsilo_task::InstructionError::from(
            fedsilo_ml::gbdt::GbdtError::BadInstruction(format!("tree node {i} out of range")),
        ))
    };
    if depth > 64 {
        return Err(bad());
    }
    match nodes.get(i).ok_or_else(bad)? {
        Node::Leaf { value } => Ok(double(*value)),
        Node::Open { .. } => Ok(double(0.0)),
        Node::Split {
            feature,
            bin,
            default_left,
            left,
            right,
            ..
        } => {
            let input = ins.get(*feature as usize).ok_or_else(bad)?;
            let l = tree(g, nodes, *left as usize, ins, depth + 1)?;
            let r = tree(g, nodes, *right as usize, ins, depth + 1)?;
            let cuts = g.bin_mapper.cuts(*feature as usize);
            // bin(x) ≤ bin ⇔ x < cuts[bin]; past the last cut every present value goes left.
            let present_left = match cuts.get(usize::from(*bin)) {
                Some(&cut) => format!("{} < {}", value(input), lit32(cut)),
                None => "1 = 1".into(),
            };
            let cond = match (is_null(input), default_left) {
                (Some(null), true) => format!("{null} OR {present_left}"),
                (Some(null), false) => format!("NOT ({null}) AND {present_left}"),
                (None, _) => present_left,
            };
            Ok(format!("CASE WHEN {cond} THEN {l} ELSE {r} END"))
        }
    }
}
