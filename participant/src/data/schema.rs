//! The schema file: labels, features and how each is encoded (see the parent module's
//! documentation for the TOML form).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::DataError;
/// The column layout the federation agreed on: which columns are labels, which are features
/// and how each feature is encoded. See the module documentation for the TOML form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Column holding customer identifiers; `None` → ids are data-row numbers ("1", "2", …).
    #[serde(default)]
    pub id_column: Option<String>,
    /// Rows kept: a condition over the features, inputs and derived columns
    /// (`cohort = "maa > 200000"`); the other rows are skipped as they are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,
    /// One or more 0/1 targets (none for a scoring-only schema, see [`Schema::for_scoring`]).
    #[serde(default)]
    pub labels: Vec<LabelSpec>,
    pub features: Vec<FeatureSpec>,
    /// Columns read only for the expressions (`derive`, `cohort`, derived labels), not
    /// features of the model: `[[inputs]]` entries of the `[[features]]` form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<FeatureSpec>,
    /// Tokens meaning "missing" besides the empty cell. Omitted: [`DEFAULT_MISSING`]
    /// ("NA", "NaN", "null", "N/A"); `missing = []` means only the empty cell.
    #[serde(default = "default_missing")]
    pub missing: Vec<String>,
    /// Field separator of the CSV files (one ASCII character; default `,`).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Derived numeric feature columns, computed from the features and inputs of each row
    /// (`derive = { assets = "current + fixed_deposit + wealth" }`); they follow the
    /// features' columns, in name order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub derive: BTreeMap<String, String>,
}

/// Missing-value tokens of a schema that does not list its own.
pub const DEFAULT_MISSING: [&str; 4] = ["NA", "NaN", "null", "N/A"];

fn default_missing() -> Vec<String> {
    DEFAULT_MISSING.iter().map(|s| s.to_string()).collect()
}

fn default_delimiter() -> char {
    ','
}

/// A 0/1 target: read from a column (`column` equals `positive`, or one of them → 1, anything
/// else → 0) or derived from each row by a condition (`derive = "next_maa < 0.7 * maa"`:
/// true → 1, false → 0), named `column`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LabelSpecRepr", into = "LabelSpecRepr")]
pub struct LabelSpec {
    pub column: String,
    pub rule: LabelRule,
}

/// How a label's value is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelRule {
    /// The label column's value(s) that mean 1.
    Positive(Positive),
    /// A condition over the row's features, inputs and derived columns.
    Derive(String),
}

impl LabelSpec {
    /// A label read from `column`, 1 where it equals `positive`.
    pub fn positive(column: impl Into<String>, positive: impl Into<Positive>) -> Self {
        LabelSpec {
            column: column.into(),
            rule: LabelRule::Positive(positive.into()),
        }
    }

    /// A label named `column`, derived by the condition `expr`.
    pub fn derived(column: impl Into<String>, expr: impl Into<String>) -> Self {
        LabelSpec {
            column: column.into(),
            rule: LabelRule::Derive(expr.into()),
        }
    }

    /// The positive value(s) of a label read from a column (`None` for a derived one).
    pub fn positive_values(&self) -> Option<&Positive> {
        match &self.rule {
            LabelRule::Positive(p) => Some(p),
            LabelRule::Derive(_) => None,
        }
    }
}

/// A `[[labels]]` entry as written: `column` with exactly one of `positive` and `derive`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelSpecRepr {
    column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    positive: Option<Positive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    derive: Option<String>,
}

/// A `[[labels]]` entry with neither or both of `positive` and `derive`.
#[derive(Debug, thiserror::Error)]
pub enum LabelSpecError {
    #[error("label '{column}': give `positive = ...` (a column's value) or `derive = \"...\"` (a condition)")]
    NoRule { column: String },
    #[error("label '{column}': give either `positive` or `derive`, not both")]
    BothRules { column: String },
}

impl TryFrom<LabelSpecRepr> for LabelSpec {
    type Error = LabelSpecError;
    fn try_from(r: LabelSpecRepr) -> Result<Self, Self::Error> {
        let rule = match (r.positive, r.derive) {
            (Some(p), None) => LabelRule::Positive(p),
            (None, Some(d)) => LabelRule::Derive(d),
            (None, None) => return Err(LabelSpecError::NoRule { column: r.column }),
            (Some(_), Some(_)) => return Err(LabelSpecError::BothRules { column: r.column }),
        };
        Ok(LabelSpec {
            column: r.column,
            rule,
        })
    }
}

impl From<LabelSpec> for LabelSpecRepr {
    fn from(l: LabelSpec) -> Self {
        let (positive, derive) = match l.rule {
            LabelRule::Positive(p) => (Some(p), None),
            LabelRule::Derive(d) => (None, Some(d)),
        };
        LabelSpecRepr {
            column: l.column,
            positive,
            derive,
        }
    }
}

/// The value(s) of a label column that mean 1: `positive = "bad"` or
/// `positive = ["D", "E", "F", "G"]`. Boolean words (true/false, yes/no, y/n, t/f) match
/// whatever their case, so `positive = "true"` also matches `True` and `TRUE`; every other
/// value matches exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Positive {
    One(String),
    Any(Vec<String>),
}

impl From<&str> for Positive {
    fn from(s: &str) -> Self {
        Positive::One(s.to_string())
    }
}

fn is_boolean_word(v: &str) -> bool {
    ["true", "false", "yes", "no", "y", "n", "t", "f"]
        .iter()
        .any(|w| w.eq_ignore_ascii_case(v))
}

impl Positive {
    /// The values, in the order written.
    pub fn values(&self) -> &[String] {
        match self {
            Positive::One(v) => std::slice::from_ref(v),
            Positive::Any(v) => v,
        }
    }

    /// Whether a (trimmed) cell means 1.
    pub fn matches(&self, cell: &[u8]) -> bool {
        self.values().iter().any(|p| {
            cell == p.as_bytes() || (is_boolean_word(p) && cell.eq_ignore_ascii_case(p.as_bytes()))
        })
    }
}

/// One input column and its encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FeatureSpecRepr")]
pub struct FeatureSpec {
    pub name: String,
    #[serde(flatten)]
    pub kind: FeatureKind,
}

/// How a `[[features]]` entry is read: flat and strict. (`#[serde(flatten)]` cannot be
/// combined with `deny_unknown_fields`, so a typo such as `categorie = [...]` would pass
/// silently through the flattened form.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureSpecRepr {
    name: String,
    #[serde(rename = "type")]
    kind: FeatureType,
    #[serde(default)]
    categories: Option<Vec<String>>,
    #[serde(default)]
    other: Option<bool>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FeatureType {
    Numeric,
    Categorical,
    Boolean,
}

/// A `[[features]]` entry whose keys do not fit its `type`.
#[derive(Debug, thiserror::Error)]
pub enum FeatureSpecError {
    #[error("feature '{name}': `categories` is only for type = \"categorical\" (this one is numeric or boolean)")]
    CategoriesOnNumeric { name: String },
    #[error("feature '{name}': type = \"categorical\" needs `categories = [...]`")]
    MissingCategories { name: String },
    #[error("feature '{name}': `other` is only for type = \"categorical\"")]
    OtherOnNonCategorical { name: String },
}

impl TryFrom<FeatureSpecRepr> for FeatureSpec {
    type Error = FeatureSpecError;
    fn try_from(r: FeatureSpecRepr) -> Result<Self, Self::Error> {
        if r.other.is_some() && !matches!(r.kind, FeatureType::Categorical) {
            return Err(FeatureSpecError::OtherOnNonCategorical { name: r.name });
        }
        let kind = match (r.kind, r.categories) {
            (FeatureType::Numeric, None) => FeatureKind::Numeric,
            (FeatureType::Boolean, None) => FeatureKind::Boolean,
            (FeatureType::Numeric | FeatureType::Boolean, Some(_)) => {
                return Err(FeatureSpecError::CategoriesOnNumeric { name: r.name })
            }
            (FeatureType::Categorical, Some(categories)) => FeatureKind::Categorical {
                categories,
                other: r.other.unwrap_or(false),
            },
            (FeatureType::Categorical, None) => {
                return Err(FeatureSpecError::MissingCategories { name: r.name })
            }
        };
        Ok(FeatureSpec { name: r.name, kind })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeatureKind {
    /// One `f32` column; missing → `NaN`.
    Numeric,
    /// One 0/1 column per declared category (`name=category`), then `name=other` when
    /// `other` is set (any undeclared value; otherwise such a value is an error); missing →
    /// all zeros.
    Categorical {
        categories: Vec<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        other: bool,
    },
    /// One column: 1.0 true, 0.0 false (boolean words in any case, or 1/0); missing → `NaN`.
    Boolean,
}

/// Above this many declared categories a schema load warns (see [`FeatureKind::Categorical`]).
pub const WIDE_CATEGORICAL: usize = 100;

/// The name of the bucket column a categorical feature with `other = true` adds.
pub const OTHER: &str = "other";

impl FeatureSpec {
    pub fn numeric(name: impl Into<String>) -> Self {
        FeatureSpec {
            name: name.into(),
            kind: FeatureKind::Numeric,
        }
    }

    pub fn categorical<S: Into<String>>(
        name: impl Into<String>,
        categories: impl IntoIterator<Item = S>,
    ) -> Self {
        FeatureSpec {
            name: name.into(),
            kind: FeatureKind::Categorical {
                categories: categories.into_iter().map(Into::into).collect(),
                other: false,
            },
        }
    }

    /// A categorical feature whose undeclared values go to `name=other`.
    pub fn categorical_with_other<S: Into<String>>(
        name: impl Into<String>,
        categories: impl IntoIterator<Item = S>,
    ) -> Self {
        FeatureSpec {
            name: name.into(),
            kind: FeatureKind::Categorical {
                categories: categories.into_iter().map(Into::into).collect(),
                other: true,
            },
        }
    }

    pub fn boolean(name: impl Into<String>) -> Self {
        FeatureSpec {
            name: name.into(),
            kind: FeatureKind::Boolean,
        }
    }

    /// Number of output columns this feature expands to.
    pub fn width(&self) -> usize {
        match &self.kind {
            FeatureKind::Numeric | FeatureKind::Boolean => 1,
            FeatureKind::Categorical { categories, other } => categories.len() + *other as usize,
        }
    }
}

impl Schema {
    /// Reads and validates a schema file.
    pub fn from_toml_file(path: &Path) -> Result<Self, DataError> {
        let source_name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
            source_name: source_name.clone(),
            source,
        })?;
        Self::parse(&text, &source_name)
    }

    /// Parses and validates a schema from TOML text.
    pub fn from_toml_str(s: &str) -> Result<Self, DataError> {
        Self::parse(s, "<schema>")
    }

    fn parse(text: &str, source_name: &str) -> Result<Self, DataError> {
        let schema: Schema =
            fedsilo_config::from_toml_str(text, source_name).map_err(|source| {
                DataError::SchemaParse {
                    source_name: source_name.to_string(),
                    source,
                }
            })?;
        schema.validate(source_name)?;
        Ok(schema)
    }

    /// Checks what serde cannot: unique names, non-empty category lists, no overlap between
    /// categories or positive label values and the missing tokens.
    pub fn validate(&self, source_name: &str) -> Result<(), DataError> {
        let invalid = |reason: String| DataError::InvalidSchema {
            source_name: source_name.to_string(),
            reason,
        };
        let mut roles: HashMap<&str, &str> = HashMap::new();
        let columns = self
            .id_column
            .iter()
            .map(|c| (c.as_str(), "id"))
            .chain(self.labels.iter().map(|l| (l.column.as_str(), "label")))
            .chain(self.features.iter().map(|f| (f.name.as_str(), "feature")))
            .chain(self.inputs.iter().map(|f| (f.name.as_str(), "input")))
            .chain(self.derive.keys().map(|n| (n.as_str(), "derived column")));
        for (name, role) in columns {
            if name.is_empty() {
                return Err(invalid(format!("a {role} column has an empty name")));
            }
            if let Some(prev) = roles.insert(name, role) {
                return Err(invalid(format!(
                    "column '{name}' is declared twice (as {prev} and as {role})"
                )));
            }
        }
        let is_missing = |v: &str| v.is_empty() || self.missing.iter().any(|m| m == v);
        for l in &self.labels {
            let Some(positive) = l.positive_values() else {
                continue;
            };
            if positive.values().is_empty() {
                return Err(invalid(format!(
                    "label '{}': `positive` lists no value",
                    l.column
                )));
            }
            if let Some(p) = positive.values().iter().find(|p| is_missing(p)) {
                return Err(invalid(format!(
                    "label '{}': positive value '{p}' is a missing-value token",
                    l.column
                )));
            }
        }
        if !self.delimiter.is_ascii()
            || self.delimiter == '"'
            || self.delimiter.is_ascii_alphanumeric()
        {
            return Err(invalid(format!(
                "delimiter: {:?} must be one ASCII punctuation or whitespace character (',', ';', '\\t', '|')",
                self.delimiter
            )));
        }
        for f in self.features.iter().chain(&self.inputs) {
            if let FeatureKind::Categorical { categories, other } = &f.kind {
                if categories.is_empty() {
                    return Err(invalid(format!(
                        "categorical feature '{}' declares no categories",
                        f.name
                    )));
                }
                if categories.len() > WIDE_CATEGORICAL {
                    tracing::warn!(
                        feature = %f.name,
                        categories = categories.len(),
                        "a wide categorical: one column per category, most nearly empty (slow, and hard on logistic regression); consider the most frequent few with other = true (fedsilo schema infer --max-categories N)"
                    );
                }
                let mut seen = HashSet::new();
                for c in categories {
                    if is_missing(c) {
                        return Err(invalid(format!(
                            "feature '{}': category '{c}' is a missing-value token",
                            f.name
                        )));
                    }
                    if c.trim_matches(|ch: char| ch.is_ascii_whitespace()) != c {
                        return Err(invalid(format!(
                            "feature '{}': category {c:?} has surrounding whitespace; cells are trimmed, so it could never match: write {:?}",
                            f.name,
                            c.trim_matches(|ch: char| ch.is_ascii_whitespace())
                        )));
                    }
                    if *other && c == OTHER {
                        return Err(invalid(format!(
                            "feature '{}': category '{OTHER}' clashes with the `other = true` bucket (column '{}={OTHER}'); rename the category or drop `other`",
                            f.name, f.name
                        )));
                    }
                    if !seen.insert(c.as_str()) {
                        return Err(invalid(format!(
                            "feature '{}': category '{c}' is listed twice",
                            f.name
                        )));
                    }
                }
            }
        }
        let mut out = HashSet::new();
        let inputs = super::derive::columns_of(&self.inputs);
        for c in self
            .feature_columns()
            .into_iter()
            .chain(inputs.into_iter().map(|c| c.name))
        {
            if !out.insert(c.clone()) {
                return Err(invalid(format!(
                    "output column '{c}' would be produced twice (a numeric feature named like a one-hot column?)"
                )));
            }
        }
        super::derive::Derivation::new(self).map_err(|source| DataError::Expr {
            source_name: source_name.to_string(),
            source,
        })?;
        Ok(())
    }

    /// Output column names, in order: numeric and boolean features as named, categorical
    /// features one-hot as `column=category` for every declared category (then
    /// `column=other` with the bucket), then the derived columns in name order.
    pub fn feature_columns(&self) -> Vec<String> {
        let mut out: Vec<String> = super::derive::columns_of(&self.features)
            .into_iter()
            .map(|c| c.name)
            .collect();
        out.extend(self.derive.keys().cloned());
        out
    }

    /// Number of output feature columns (derived ones included).
    pub fn n_feature_columns(&self) -> usize {
        self.features.iter().map(FeatureSpec::width).sum::<usize>() + self.derive.len()
    }

    /// Names of the label columns, in order.
    pub fn label_columns(&self) -> Vec<String> {
        self.labels.iter().map(|l| l.column.clone()).collect()
    }

    /// The same schema keeping only the listed features and derived columns (input feature
    /// names, not one-hot column names), in the listed order. A feature that is not listed
    /// but that a kept derived column, the cohort or a derived label reads becomes an input.
    pub fn select(&self, features: &[String]) -> Result<Schema, DataError> {
        let mut kept = Vec::with_capacity(features.len());
        let mut kept_derived = Vec::new();
        let mut seen = HashSet::new();
        for name in features {
            if !seen.insert(name.as_str()) {
                continue;
            }
            if let Some(f) = self.features.iter().find(|f| &f.name == name) {
                kept.push(f.clone());
            } else if self.derive.contains_key(name) {
                kept_derived.push(name);
            } else {
                return Err(DataError::UnknownFeature {
                    name: name.clone(),
                    available: self
                        .features
                        .iter()
                        .map(|f| f.name.as_str())
                        .chain(self.derive.keys().map(String::as_str))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        let needed = super::derive::names_needed(self, &kept_derived, true).map_err(|source| {
            DataError::Expr {
                source_name: "<schema>".to_string(),
                source,
            }
        })?;
        if let Some(d) = needed
            .iter()
            .find(|n| self.derive.contains_key(*n) && !kept_derived.contains(n))
        {
            return Err(DataError::UnknownFeature {
                name: d.clone(),
                available: format!(
                    "the cohort or a derived label reads the derived column '{d}': select it too"
                ),
            });
        }
        let mut inputs = self.inputs.clone();
        inputs.extend(
            self.features
                .iter()
                .filter(|f| needed.contains(&f.name) && !seen.contains(f.name.as_str()))
                .cloned(),
        );
        Ok(Schema {
            features: kept,
            inputs,
            derive: self
                .derive
                .iter()
                .filter(|(n, _)| kept_derived.contains(n))
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect(),
            ..self.clone()
        })
    }

    /// Whether the schema has inputs, derived columns, a cohort or derived labels.
    pub fn has_expressions(&self) -> bool {
        !self.inputs.is_empty()
            || !self.derive.is_empty()
            || self.cohort.is_some()
            || self
                .labels
                .iter()
                .any(|l| matches!(l.rule, LabelRule::Derive(_)))
    }

    /// The schema that reads the same source columns with no expressions: the features, then
    /// the inputs as features, and the labels read from a column. A table it loads becomes
    /// this schema's table through [`super::derive_table`].
    pub fn without_expressions(&self) -> Schema {
        let mut features = self.features.clone();
        features.extend(self.inputs.iter().cloned());
        Schema {
            cohort: None,
            labels: self
                .labels
                .iter()
                .filter(|l| matches!(l.rule, LabelRule::Positive(_)))
                .cloned()
                .collect(),
            features,
            inputs: Vec::new(),
            derive: BTreeMap::new(),
            ..self.clone()
        }
    }

    /// The same schema without labels: for scoring files that may or may not carry them.
    pub fn for_scoring(&self) -> Schema {
        Schema {
            labels: Vec::new(),
            ..self.clone()
        }
    }
}
