//! A schema's expressions, compiled once: derived columns, the cohort and derived labels
//! (language: [`super::expr`]). Every source's encoder and the synthetic data generator apply
//! them the same way, row by row, on the participant (nothing of it leaves the participant).
//!
//! A row as read holds the features' encoded columns, then the inputs' (the *read row*,
//! [`Derivation::read_width`] wide). Derived columns are computed from the read row and
//! appended to it (the *full row*); the cohort and derived labels are evaluated on the full
//! row. The table keeps the features' columns and the derived ones, in that order
//! ([`Schema::feature_columns`]); inputs are dropped.

use std::collections::BTreeSet;

use fedsilo_ml::table::Table;
use ndarray::Array2;

use super::expr::{Column, Compiled, ExprError, Truth, Type};
use super::schema::{FeatureKind, FeatureSpec, LabelRule, Schema, OTHER};
use super::DataError;

/// The encoded columns of `specs` as expressions see them (`Home=rent` is `Home`'s category
/// `rent`), in table order.
pub(crate) fn columns_of(specs: &[FeatureSpec]) -> Vec<Column> {
    let mut out = Vec::new();
    for f in specs {
        match &f.kind {
            FeatureKind::Numeric | FeatureKind::Boolean => out.push(Column {
                name: f.name.clone(),
                feature: f.name.clone(),
                category: None,
            }),
            FeatureKind::Categorical { categories, other } => {
                let cats = categories
                    .iter()
                    .map(String::as_str)
                    .chain(other.then_some(OTHER));
                out.extend(cats.map(|c| Column {
                    name: format!("{}={c}", f.name),
                    feature: f.name.clone(),
                    category: Some(c.to_string()),
                }));
            }
        }
    }
    out
}

/// The read row's columns (features, then inputs).
pub(crate) fn read_columns(schema: &Schema) -> Vec<Column> {
    let mut cols = columns_of(&schema.features);
    cols.extend(columns_of(&schema.inputs));
    cols
}

/// The full row's columns (read row, then derived columns).
fn full_columns(schema: &Schema) -> Vec<Column> {
    let mut cols = read_columns(schema);
    cols.extend(schema.derive.keys().map(|name| Column {
        name: name.clone(),
        feature: name.clone(),
        category: None,
    }));
    cols
}

/// A schema's compiled expressions.
#[derive(Clone, Debug)]
pub(crate) struct Derivation {
    n_features: usize,
    read_width: usize,
    derived: Vec<Compiled>,
    cohort: Option<Compiled>,
    /// Per schema label, its condition when derived.
    labels: Vec<Option<Compiled>>,
    /// Feature names (of the full row) each label's condition reads, when derived.
    label_reads: Vec<Vec<String>>,
}

impl Derivation {
    /// Parses and type-checks every expression of `schema`.
    pub(crate) fn new(schema: &Schema) -> Result<Self, ExprError> {
        let read = read_columns(schema);
        let full = full_columns(schema);
        let derived = schema
            .derive
            .iter()
            .map(|(name, text)| Compiled::new(&format!("derive.{name}"), text, &read, Type::Number))
            .collect::<Result<Vec<_>, _>>()?;
        let cohort = schema
            .cohort
            .as_deref()
            .map(|text| Compiled::new("cohort", text, &full, Type::Condition))
            .transpose()?;
        let mut labels = Vec::with_capacity(schema.labels.len());
        let mut label_reads = Vec::with_capacity(schema.labels.len());
        for l in &schema.labels {
            match &l.rule {
                LabelRule::Positive(_) => {
                    labels.push(None);
                    label_reads.push(Vec::new());
                }
                LabelRule::Derive(text) => {
                    let c = Compiled::new(
                        &format!("label '{}'", l.column),
                        text,
                        &full,
                        Type::Condition,
                    )?;
                    label_reads.push(names_read(&c, &full));
                    labels.push(Some(c));
                }
            }
        }
        Ok(Derivation {
            n_features: columns_of(&schema.features).len(),
            read_width: read.len(),
            derived,
            cohort,
            labels,
            label_reads,
        })
    }

    /// Encoded width of the features and inputs: what a source writes per row.
    pub(crate) fn read_width(&self) -> usize {
        self.read_width
    }

    /// Width of the table's rows: features and derived columns.
    pub(crate) fn out_width(&self) -> usize {
        self.n_features + self.derived.len()
    }

    /// Appends the derived columns to a read row (a value that is not finite is missing).
    pub(crate) fn extend(&self, row: &mut Vec<f32>) {
        for d in &self.derived {
            let v = d.number(row.get(..self.read_width).unwrap_or(row)) as f32;
            row.push(if v.is_finite() { v } else { f32::NAN });
        }
    }

    /// Whether a full row is in the cohort (every row is, without one).
    pub(crate) fn in_cohort(&self, full: &[f32]) -> bool {
        self.cohort
            .as_ref()
            .is_none_or(|c| c.truth(full) == Truth::True)
    }

    /// The derived columns' expressions, in column order (they read the read row).
    pub(crate) fn derived(&self) -> &[Compiled] {
        &self.derived
    }

    /// The cohort's condition (it reads the full row).
    pub(crate) fn cohort(&self) -> Option<&Compiled> {
        self.cohort.as_ref()
    }

    pub(crate) fn has_cohort(&self) -> bool {
        self.cohort.is_some()
    }

    /// Schema label `li`'s condition on a full row, when the label is derived.
    pub(crate) fn label(&self, li: usize, full: &[f32]) -> Option<Truth> {
        self.labels.get(li)?.as_ref().map(|c| c.truth(full))
    }

    /// The feature, input or derived names schema label `li`'s condition reads.
    pub(crate) fn label_reads(&self, li: usize) -> &[String] {
        self.label_reads.get(li).map_or(&[], Vec::as_slice)
    }

    /// The table's part of a full row: the features' columns and the derived ones.
    pub(crate) fn output<'r>(&self, full: &'r [f32]) -> (&'r [f32], &'r [f32]) {
        let features = full.get(..self.n_features).unwrap_or(&[]);
        let derived = full.get(self.read_width..).unwrap_or(&[]);
        (features, derived)
    }
}

/// Distinct feature (or input, or derived column) names an expression reads.
fn names_read(c: &Compiled, columns: &[Column]) -> Vec<String> {
    let names: BTreeSet<&str> = c
        .reads()
        .iter()
        .filter_map(|&i| columns.get(i).map(|col| col.feature.as_str()))
        .collect();
    names.into_iter().map(str::to_string).collect()
}

/// The features, inputs and derived columns that the derived columns `kept`, the cohort and
/// (`with_labels`) the derived labels of `schema` read (by feature name).
pub(crate) fn names_needed(
    schema: &Schema,
    kept: &[&String],
    with_labels: bool,
) -> Result<BTreeSet<String>, ExprError> {
    let read = read_columns(schema);
    let full = full_columns(schema);
    let mut needed = BTreeSet::new();
    for name in kept {
        if let Some(text) = schema.derive.get(*name) {
            let c = Compiled::new(&format!("derive.{name}"), text, &read, Type::Number)?;
            needed.extend(names_read(&c, &read));
        }
    }
    let conditions = schema
        .cohort
        .iter()
        .map(|t| ("cohort".to_string(), t))
        .chain(schema.labels.iter().filter_map(|l| match &l.rule {
            LabelRule::Derive(t) if with_labels => Some((format!("label '{}'", l.column), t)),
            _ => None,
        }));
    for (what, text) in conditions {
        let c = Compiled::new(&what, text, &full, Type::Condition)?;
        needed.extend(names_read(&c, &full));
    }
    Ok(needed)
}

/// How many rows a cohort kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CohortCount {
    pub read: usize,
    pub kept: usize,
}

/// Applies `schema`'s derived columns, cohort and derived labels to a table whose feature
/// columns are the schema's features and inputs (`table.feature_names` must be exactly
/// those); for data made in memory (the synthetic generator). Labels read from a column are
/// kept as they are (by name); derived labels replace or join them.
pub fn derive_table(schema: &Schema, table: Table) -> Result<(Table, CohortCount), DataError> {
    let src = || "<table>".to_string();
    let d = Derivation::new(schema).map_err(|source| DataError::Expr {
        source_name: src(),
        source,
    })?;
    let read_names: Vec<String> = read_columns(schema).into_iter().map(|c| c.name).collect();
    if table.feature_names != read_names {
        return Err(DataError::InvalidSource {
            source_name: src(),
            reason: format!(
                "the table's columns ({}) are not the schema's features and inputs ({})",
                table.feature_names.join(", "),
                read_names.join(", ")
            ),
        });
    }
    let label_names = schema.label_columns();
    let label_source: Vec<Option<usize>> = schema
        .labels
        .iter()
        .map(|l| match l.rule {
            LabelRule::Derive(_) => Ok(None),
            LabelRule::Positive(_) => table
                .label_names
                .iter()
                .position(|n| n == &l.column)
                .map(Some)
                .ok_or_else(|| DataError::InvalidSource {
                    source_name: src(),
                    reason: format!("the table has no label '{}'", l.column),
                }),
        })
        .collect::<Result<_, _>>()?;
    let rows = table.n_rows();
    let mut x = Vec::with_capacity(rows.saturating_mul(d.out_width()));
    let mut y = Vec::with_capacity(rows.saturating_mul(label_names.len()));
    let mut ids = Vec::with_capacity(rows);
    let mut full = Vec::with_capacity(d.read_width + d.derived.len());
    for (r, (row, labels)) in table
        .x
        .outer_iter()
        .zip(table.labels.outer_iter())
        .enumerate()
    {
        full.clear();
        full.extend(row.iter().copied());
        d.extend(&mut full);
        if !d.in_cohort(&full) {
            continue;
        }
        let (features, derived) = d.output(&full);
        x.extend_from_slice(features);
        x.extend_from_slice(derived);
        for (li, source) in label_source.iter().enumerate() {
            let v = match (source, d.label(li, &full)) {
                (Some(j), _) => labels.get(*j).copied().unwrap_or(f32::NAN),
                (None, Some(Truth::True)) => 1.0,
                (None, Some(Truth::False)) => 0.0,
                (None, _) => {
                    return Err(DataError::UnknownDerivedLabel {
                        source_name: src(),
                        at: super::At::Row {
                            group: None,
                            row: r as u64 + 1,
                        },
                        column: label_names.get(li).cloned().unwrap_or_default(),
                    })
                }
            };
            y.push(v);
        }
        ids.push(
            table
                .ids
                .get(r)
                .cloned()
                .unwrap_or_else(|| (r + 1).to_string()),
        );
    }
    let kept = ids.len();
    let shape_err = |_| DataError::Internal {
        source_name: src(),
        what: "rows of unequal width",
    };
    let out = Table {
        feature_names: schema.feature_columns(),
        x: Array2::from_shape_vec((kept, d.out_width()), x).map_err(shape_err)?,
        label_names,
        labels: Array2::from_shape_vec((kept, schema.labels.len()), y).map_err(shape_err)?,
        ids,
    };
    Ok((out, CohortCount { read: rows, kept }))
}
