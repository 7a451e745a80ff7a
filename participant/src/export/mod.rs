//! A trained model in the formats a bank's own systems run: a SQL query ([`sql`]) and PMML 4.4
//! ([`pmml`]).
//!
//! Both read the institution's raw columns, as the schema names them: a numeric feature is
//! its column, a one-hot column `name=category` is "the (trimmed) cell of `name` equals
//! `category`". Missing values follow fedsilo's scoring exactly: a missing numeric value
//! standardises to 0 for logistic regression, falls in the missing bin of a scorecard
//! characteristic and takes a tree's default direction; a missing categorical value sets no
//! one-hot column. SQL also writes what PMML export refuses for now: boolean features (the
//! words fedsilo reads, in any case; any other text is NULL), `other` buckets (a present cell
//! that is neither a declared category nor a missing token), derived columns (the
//! expression's arithmetic, division by zero NULL) and the cohort (a `WHERE`).

use fedsilo_task::TrainedModel;

use crate::data::{FeatureKind, Schema};

pub mod pmml;
pub mod sql;

/// Why a model cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("model column '{feature}' is not produced by the schema (its columns: {available})")]
    UnknownColumn { feature: String, available: String },
    #[error("{kind} models cannot be exported as {format}: {hint}")]
    Unsupported {
        kind: &'static str,
        format: &'static str,
        hint: &'static str,
    },
    /// A model column whose encoding PMML export does not write yet (boolean features, a
    /// categorical feature's `other` bucket, derived columns).
    #[error("model column '{feature}' is {what}, which export cannot write yet: score it with `fedsilo score`")]
    UnsupportedColumn { feature: String, what: &'static str },
    /// The schema keeps a cohort, which PMML export does not write: a document scoring every
    /// row would not score what `fedsilo score` scores.
    #[error("the schema keeps only the cohort \"{cohort}\", which PMML export cannot write yet: export SQL (its WHERE keeps the cohort), or score with `fedsilo score`")]
    Cohort { cohort: String },
    #[error("the schema's expressions")]
    Schema {
        #[source]
        source: Box<crate::data::expr::ExprError>,
    },
    #[error("the model is not valid")]
    BadModel(#[from] fedsilo_task::InstructionError),
    #[error("{what} is not a finite number")]
    NonFinite { what: String },
}

/// Where one model column comes from in the raw data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<'s> {
    /// A numeric column, read as a number; missing = SQL NULL.
    Numeric { column: &'s str },
    /// 1 when the trimmed cell of `column` is `category`, else 0 (also when missing).
    OneHot { column: &'s str, category: &'s str },
}

impl Input<'_> {
    /// The raw column read.
    pub fn column(&self) -> &str {
        match self {
            Input::Numeric { column } | Input::OneHot { column, .. } => column,
        }
    }
}

/// The raw source of every model column, in the model's order.
pub fn inputs<'s>(model: &TrainedModel, schema: &'s Schema) -> Result<Vec<Input<'s>>, ExportError> {
    let mut all: Vec<(String, Input<'s>)> = Vec::with_capacity(schema.n_feature_columns());
    let mut unsupported: Vec<(String, &'static str)> = schema
        .derive
        .keys()
        .map(|d| (d.clone(), "a derived column"))
        .collect();
    for f in &schema.features {
        match &f.kind {
            FeatureKind::Numeric => all.push((f.name.clone(), Input::Numeric { column: &f.name })),
            FeatureKind::Boolean => unsupported.push((f.name.clone(), "a boolean feature")),
            FeatureKind::Categorical { categories, other } => {
                if *other {
                    unsupported.push((
                        format!("{}={}", f.name, crate::data::OTHER),
                        "a categorical feature's other bucket",
                    ));
                }
                for c in categories {
                    all.push((
                        format!("{}={c}", f.name),
                        Input::OneHot {
                            column: &f.name,
                            category: c,
                        },
                    ));
                }
            }
        }
    }
    model
        .features
        .iter()
        .map(|name| {
            if let Some((_, what)) = unsupported.iter().find(|(n, _)| n == name) {
                return Err(ExportError::UnsupportedColumn {
                    feature: name.clone(),
                    what,
                });
            }
            all.iter()
                .find(|(n, _)| n == name)
                .map(|(_, i)| i.clone())
                .ok_or_else(|| ExportError::UnknownColumn {
                    feature: name.clone(),
                    available: schema.feature_columns().join(", "),
                })
        })
        .collect()
}

/// The model's kind, as errors name it.
pub(crate) fn kind_name(model: &TrainedModel) -> &'static str {
    match model.params {
        fedsilo_task::ModelParams::LogisticRegression { .. } => "logistic regression",
        fedsilo_task::ModelParams::Mlp { .. } => "MLP",
        fedsilo_task::ModelParams::Gbdt { .. } => "GBDT",
        fedsilo_task::ModelParams::Scorecard { .. } => "scorecard",
    }
}

/// A number as a literal that reads back as exactly the same `f64` (shortest round trip).
pub(crate) fn lit(v: f64) -> String {
    let s = format!("{v:?}");
    // `1e-7` is valid SQL and XML Schema double; Rust writes `1e-7`, never `inf`/`NaN` here.
    s
}

/// An `f32` as the decimal of its exact value, so it reads back as the same `f32` whether a
/// consumer parses it as single or double precision.
pub(crate) fn lit32(v: f32) -> String {
    lit(f64::from(v))
}

/// Every number a model holds is finite (a model file passed `validate`, but say so by name).
pub(crate) fn check_finite(what: &str, v: f64) -> Result<(), ExportError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(ExportError::NonFinite { what: what.into() })
    }
}
