//! The schema file: labels, features and how each is encoded (see the parent module's
//! documentation for the TOML form).

use std::collections::{HashMap, HashSet};
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
    /// One or more 0/1 targets (none for a scoring-only schema, see [`Schema::for_scoring`]).
    #[serde(default)]
    pub labels: Vec<LabelSpec>,
    pub features: Vec<FeatureSpec>,
    /// Tokens meaning "missing" besides the empty cell. Omitted: [`DEFAULT_MISSING`]
    /// ("NA", "NaN", "null", "N/A"); `missing = []` means only the empty cell.
    #[serde(default = "default_missing")]
    pub missing: Vec<String>,
    /// Field separator of the CSV files (one ASCII character; default `,`).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
}

/// Missing-value tokens of a schema that does not list its own.
pub const DEFAULT_MISSING: [&str; 4] = ["NA", "NaN", "null", "N/A"];

fn default_missing() -> Vec<String> {
    DEFAULT_MISSING.iter().map(|s| s.to_string()).collect()
}

fn default_delimiter() -> char {
    ','
}

/// A 0/1 target: `column` equals `positive` (or one of them) → 1, anything else → 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    pub column: String,
    pub positive: Positive,
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
            .chain(self.features.iter().map(|f| (f.name.as_str(), "feature")));
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
            if l.positive.values().is_empty() {
                return Err(invalid(format!(
                    "label '{}': `positive` lists no value",
                    l.column
                )));
            }
            if let Some(p) = l.positive.values().iter().find(|p| is_missing(p)) {
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
        for f in &self.features {
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
        for c in self.feature_columns() {
            if !out.insert(c.clone()) {
                return Err(invalid(format!(
                    "output column '{c}' would be produced twice (a numeric feature named like a one-hot column?)"
                )));
            }
        }
        Ok(())
    }

    /// Output column names, in order: numeric features as named, categorical features one-hot
    /// as `column=category` for every declared category.
    pub fn feature_columns(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.n_feature_columns());
        for f in &self.features {
            match &f.kind {
                FeatureKind::Numeric | FeatureKind::Boolean => out.push(f.name.clone()),
                FeatureKind::Categorical { categories, other } => {
                    out.extend(categories.iter().map(|c| format!("{}={c}", f.name)));
                    if *other {
                        out.push(format!("{}={OTHER}", f.name));
                    }
                }
            }
        }
        out
    }

    /// Number of output feature columns.
    pub fn n_feature_columns(&self) -> usize {
        self.features.iter().map(FeatureSpec::width).sum()
    }

    /// Names of the label columns, in order.
    pub fn label_columns(&self) -> Vec<String> {
        self.labels.iter().map(|l| l.column.clone()).collect()
    }

    /// The same schema keeping only the listed features (input feature names, not one-hot
    /// column names), in the listed order.
    pub fn select(&self, features: &[String]) -> Result<Schema, DataError> {
        let mut kept = Vec::with_capacity(features.len());
        let mut seen = HashSet::new();
        for name in features {
            let Some(f) = self.features.iter().find(|f| &f.name == name) else {
                return Err(DataError::UnknownFeature {
                    name: name.clone(),
                    available: self
                        .features
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            if seen.insert(name.as_str()) {
                kept.push(f.clone());
            }
        }
        Ok(Schema {
            features: kept,
            ..self.clone()
        })
    }

    /// The same schema without labels: for scoring files that may or may not carry them.
    pub fn for_scoring(&self) -> Schema {
        Schema {
            labels: Vec::new(),
            ..self.clone()
        }
    }
}
