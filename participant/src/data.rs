//! An institution's customer CSV, read by the schema the federation agreed on, into a [`Table`].
//!
//! Every participant loads its own file with the *same* [`Schema`], so every participant ends
//! up with identical columns in identical order — the precondition for summing their vectors.
//!
//! # Schema file
//!
//! ```toml
//! # id_column = "customer_id"          # optional; without it ids are data-row numbers 1, 2, …
//! missing = ["NA", "?"]                 # tokens meaning "missing", besides the empty cell
//!                                       # (omitted: "NA", "NaN", "null", "N/A")
//! # delimiter = ";"                     # field separator, default ","
//!
//! [[labels]]                            # one or more 0/1 targets
//! column = "Status"
//! positive = "bad"                      # this value → 1, any other value → 0
//!                                       # (or a set: positive = ["D", "E", "F", "G"])
//!
//! [[features]]
//! name = "Income"
//! type = "numeric"
//!
//! [[features]]
//! name = "Home"
//! type = "categorical"
//! categories = ["owner", "rent", "parents"]
//! ```
//!
//! # Encoding rules
//!
//! - **Numeric** feature → one `f32` column. A missing cell (empty, or one of `missing`) → `NaN`.
//!   Anything else that does not parse as a finite number is an error.
//! - **Categorical** feature → one 0/1 column per *declared* category, named `column=category`,
//!   in the declared order. A missing cell → all zeros. A value outside the declared list is an
//!   error naming the allowed values: the column set must not depend on what one institution
//!   happens to have in its file.
//! - **Label** → 1.0 if the cell equals `positive` (or one of a list) exactly, else 0.0;
//!   boolean words (true/false, yes/no, y/n, t/f) match in any case. A missing label is an
//!   error, and so is a label with only one class in the file (nothing to learn from); that
//!   error lists the values the file holds.
//! - Cells are trimmed of surrounding ASCII whitespace; a UTF-8 byte-order mark is ignored.
//! - Columns of the file that the schema does not mention are ignored; duplicate header names
//!   are an error (which one would be meant?).
//!
//! Every error names the file, the 1-based line and the column.
//!
//! # Cost
//!
//! The file is streamed with one reused [`csv::ByteRecord`]; cells are parsed in place from its
//! buffer and written straight into one row-major `Vec<f32>` (sized up front from the file size
//! when reading from a path). Only customer ids allocate per row.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use fedsilo_ml::table::Table;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// Everything that can go wrong reading a schema or a data file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{source_name}: {source}")]
    Io {
        source_name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse the schema")]
    SchemaParse {
        source_name: String,
        #[source]
        source: fedsilo_config::ConfigError,
    },
    #[error("{source_name}: invalid schema: {reason}")]
    InvalidSchema { source_name: String, reason: String },
    #[error("feature '{name}' is not in the schema (features: {available})")]
    UnknownFeature { name: String, available: String },
    #[error("{source_name}: empty file: no header and no data rows")]
    EmptyFile { source_name: String },
    #[error("{source_name}:{line}: header only, no data rows")]
    NoDataRows { source_name: String, line: u64 },
    #[error("{source_name}:{line}: {role} column '{column}' is not in the header")]
    MissingColumn {
        source_name: String,
        line: u64,
        role: &'static str,
        column: String,
        /// Set when the header looks separated by another character than the schema's.
        #[source]
        hint: Option<DelimiterHint>,
    },
    #[error("{source_name}:{line}: column '{column}' appears twice in the header (fields {first} and {second})")]
    DuplicateColumn {
        source_name: String,
        line: u64,
        column: String,
        first: usize,
        second: usize,
    },
    #[error("{source_name}:{line}: row has {found} fields but the header has {expected}")]
    RaggedRow {
        source_name: String,
        line: u64,
        expected: usize,
        found: usize,
    },
    #[error("{source_name}:{line}: column '{column}': '{value}' is not a number (numeric feature; missing values are empty{missing_hint})")]
    NotNumeric {
        source_name: String,
        line: u64,
        column: String,
        value: String,
        missing_hint: String,
    },
    #[error(
        "{source_name}:{line}: column '{column}': unknown category '{value}'; allowed: {allowed}"
    )]
    UnknownCategory {
        source_name: String,
        line: u64,
        column: String,
        value: String,
        allowed: String,
    },
    #[error("{source_name}:{line}: column '{column}': label is missing")]
    MissingLabel {
        source_name: String,
        line: u64,
        column: String,
    },
    #[error("{source_name}:{line}: column '{column}': customer id is missing")]
    MissingId {
        source_name: String,
        line: u64,
        column: String,
    },
    #[error("label '{label}' has only {class} in {source_name}: a model cannot be trained (positive = {positive}; values seen: {seen})")]
    SingleClass {
        source_name: String,
        label: String,
        /// "negatives" or "positives".
        class: &'static str,
        /// The `positive` setting and the distinct values seen (at most 20), for the message.
        positive: String,
        seen: String,
    },
    #[error("{source_name}:{line}: malformed CSV: {message}")]
    Csv {
        source_name: String,
        line: u64,
        message: String,
    },
}

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
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FeatureType {
    Numeric,
    Categorical,
}

/// A `[[features]]` entry whose keys do not fit its `type`.
#[derive(Debug, thiserror::Error)]
pub enum FeatureSpecError {
    #[error("feature '{name}': `categories` is only for type = \"categorical\"")]
    CategoriesOnNumeric { name: String },
    #[error("feature '{name}': type = \"categorical\" needs `categories = [...]`")]
    MissingCategories { name: String },
}

impl TryFrom<FeatureSpecRepr> for FeatureSpec {
    type Error = FeatureSpecError;
    fn try_from(r: FeatureSpecRepr) -> Result<Self, Self::Error> {
        let kind = match (r.kind, r.categories) {
            (FeatureType::Numeric, None) => FeatureKind::Numeric,
            (FeatureType::Numeric, Some(_)) => {
                return Err(FeatureSpecError::CategoriesOnNumeric { name: r.name })
            }
            (FeatureType::Categorical, Some(categories)) => FeatureKind::Categorical { categories },
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
    /// One 0/1 column per declared category (`name=category`); missing → all zeros.
    Categorical { categories: Vec<String> },
}

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
            },
        }
    }

    /// Number of output columns this feature expands to.
    pub fn width(&self) -> usize {
        match &self.kind {
            FeatureKind::Numeric => 1,
            FeatureKind::Categorical { categories } => categories.len(),
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
            if let FeatureKind::Categorical { categories } = &f.kind {
                if categories.is_empty() {
                    return Err(invalid(format!(
                        "categorical feature '{}' declares no categories",
                        f.name
                    )));
                }
                let mut seen = HashSet::new();
                for c in categories {
                    if is_missing(c) {
                        return Err(invalid(format!(
                            "feature '{}': category '{c}' is a missing-value token",
                            f.name
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
                FeatureKind::Numeric => out.push(f.name.clone()),
                FeatureKind::Categorical { categories } => {
                    out.extend(categories.iter().map(|c| format!("{}={c}", f.name)))
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

/// Loads `path` by `schema`. Errors name the file, line and column.
pub fn load_csv(path: &Path, schema: &Schema) -> Result<Table, DataError> {
    let source_name = path.display().to_string();
    let io = |source| DataError::Io {
        source_name: source_name.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    read(file, &source_name, schema, Some(size))
}

/// Loads CSV text from any reader; `source_name` is what errors call it.
pub fn load_csv_reader<R: std::io::Read>(
    reader: R,
    source_name: &str,
    schema: &Schema,
) -> Result<Table, DataError> {
    read(reader, source_name, schema, None)
}

/// (negatives, positives) for every label column of `table`.
pub fn label_value_counts(table: &Table) -> Vec<(usize, usize)> {
    table
        .labels
        .columns()
        .into_iter()
        .map(|col| {
            let pos = col.iter().filter(|&&v| v > 0.5).count();
            (col.len() - pos, pos)
        })
        .collect()
}

/// How one input column is written into the output row.
enum Slot {
    Numeric {
        out: usize,
    },
    Categorical {
        out: usize,
        lookup: HashMap<Vec<u8>, usize>,
    },
}

struct FeaturePlan<'s> {
    field: usize,
    spec: &'s FeatureSpec,
    slot: Slot,
}

fn read<R: std::io::Read>(
    reader: R,
    source_name: &str,
    schema: &Schema,
    size_hint: Option<u64>,
) -> Result<Table, DataError> {
    let src = || source_name.to_string();
    let csv_err = |e: csv::Error, fallback_line: u64| {
        let line = e.position().map_or(fallback_line, |p| p.line());
        if e.is_io_error() {
            DataError::Io {
                source_name: src(),
                source: e.into(),
            }
        } else {
            DataError::Csv {
                source_name: src(),
                line,
                message: e.to_string(),
            }
        }
    };

    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(schema.delimiter as u8)
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let header = rdr.byte_headers().map_err(|e| csv_err(e, 1))?.clone();
    if header.is_empty() {
        return Err(DataError::EmptyFile { source_name: src() });
    }
    let header_line = header.position().map_or(1, |p| p.line());
    let header_end = rdr.position().byte();
    let n_fields = header.len();

    // Header names → field index, refusing duplicates.
    let mut index: HashMap<String, usize> = HashMap::with_capacity(n_fields);
    for (i, raw) in header.iter().enumerate() {
        let name = String::from_utf8_lossy(raw).into_owned();
        if let Some(&first) = index.get(&name) {
            return Err(DataError::DuplicateColumn {
                source_name: src(),
                line: header_line,
                column: name,
                first: first + 1,
                second: i + 1,
            });
        }
        index.insert(name, i);
    }
    let find = |column: &str, role: &'static str| {
        index
            .get(column)
            .copied()
            .ok_or_else(|| DataError::MissingColumn {
                source_name: src(),
                line: header_line,
                role,
                column: column.to_string(),
                hint: delimiter_hint(&header, schema.delimiter),
            })
    };

    let id_field = schema
        .id_column
        .as_deref()
        .map(|c| find(c, "id"))
        .transpose()?;
    let label_fields = schema
        .labels
        .iter()
        .map(|l| find(&l.column, "label"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut plans = Vec::with_capacity(schema.features.len());
    let mut out = 0;
    for spec in &schema.features {
        let field = find(&spec.name, "feature")?;
        let slot = match &spec.kind {
            FeatureKind::Numeric => Slot::Numeric { out },
            FeatureKind::Categorical { categories } => Slot::Categorical {
                out,
                lookup: categories
                    .iter()
                    .enumerate()
                    .map(|(k, c)| (c.as_bytes().to_vec(), k))
                    .collect(),
            },
        };
        out += spec.width();
        plans.push(FeaturePlan { field, spec, slot });
    }
    let width = out;
    let n_labels = schema.labels.len();
    let missing: Vec<&[u8]> = schema.missing.iter().map(|m| m.as_bytes()).collect();
    let is_missing = |v: &[u8]| v.is_empty() || missing.contains(&v);
    let missing_hint = if schema.missing.is_empty() {
        "; list other missing-value tokens with `missing = [...]` in the schema".to_string()
    } else {
        format!(
            " or one of {}; list other tokens with `missing = [...]` in the schema",
            quoted_list(&schema.missing)
        )
    };

    // Distinct label values seen (a few), to say what the file holds when a label has one class.
    const MAX_SEEN: usize = 20;
    let mut label_seen: Vec<Vec<Vec<u8>>> = vec![Vec::new(); n_labels];
    let mut x: Vec<f32> = Vec::new();
    let mut y: Vec<f32> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut rec = csv::ByteRecord::new();
    let mut rows = 0usize;
    loop {
        let more = rdr
            .read_byte_record(&mut rec)
            .map_err(|e| csv_err(e, header_line + rows as u64 + 1))?;
        if !more {
            break;
        }
        let line = rec
            .position()
            .map_or(header_line + rows as u64 + 1, |p| p.line());
        if rows == 0 {
            // Size the buffers from the file size and the first row's length.
            if let Some(total) = size_hint {
                let row_bytes = rdr.position().byte().saturating_sub(header_end).max(1);
                let est = (total.saturating_sub(header_end) / row_bytes + 1) as usize;
                let est = est.saturating_add(est / 8);
                x.reserve(est.saturating_mul(width));
                y.reserve(est.saturating_mul(n_labels));
                ids.reserve(est);
            }
        }
        if rec.len() != n_fields {
            return Err(DataError::RaggedRow {
                source_name: src(),
                line,
                expected: n_fields,
                found: rec.len(),
            });
        }

        let base = x.len();
        x.resize(base + width, 0.0);
        let row = &mut x[base..];
        for p in &plans {
            let cell = &rec[p.field];
            match &p.slot {
                Slot::Numeric { out } => {
                    row[*out] = if is_missing(cell) {
                        f32::NAN
                    } else {
                        parse_finite(cell).ok_or_else(|| DataError::NotNumeric {
                            source_name: src(),
                            line,
                            column: p.spec.name.clone(),
                            value: String::from_utf8_lossy(cell).into_owned(),
                            missing_hint: missing_hint.clone(),
                        })?
                    };
                }
                Slot::Categorical { out, lookup } => {
                    if is_missing(cell) {
                        continue;
                    }
                    let Some(&k) = lookup.get(cell) else {
                        let allowed = match &p.spec.kind {
                            FeatureKind::Categorical { categories } => quoted_list(categories),
                            FeatureKind::Numeric => String::new(),
                        };
                        return Err(DataError::UnknownCategory {
                            source_name: src(),
                            line,
                            column: p.spec.name.clone(),
                            value: String::from_utf8_lossy(cell).into_owned(),
                            allowed,
                        });
                    };
                    row[out + k] = 1.0;
                }
            }
        }
        for (li, (l, &field)) in schema.labels.iter().zip(&label_fields).enumerate() {
            let cell = &rec[field];
            if is_missing(cell) {
                return Err(DataError::MissingLabel {
                    source_name: src(),
                    line,
                    column: l.column.clone(),
                });
            }
            y.push(if l.positive.matches(cell) { 1.0 } else { 0.0 });
            if let Some(seen) = label_seen.get_mut(li) {
                if seen.len() < MAX_SEEN && !seen.iter().any(|v| v.as_slice() == cell) {
                    seen.push(cell.to_vec());
                }
            }
        }
        ids.push(match id_field {
            Some(field) => {
                let cell = &rec[field];
                if cell.is_empty() {
                    return Err(DataError::MissingId {
                        source_name: src(),
                        line,
                        column: schema.id_column.clone().unwrap_or_default(),
                    });
                }
                String::from_utf8_lossy(cell).into_owned()
            }
            None => (rows + 1).to_string(),
        });
        rows += 1;
    }
    if rows == 0 {
        return Err(DataError::NoDataRows {
            source_name: src(),
            line: header_line,
        });
    }

    let x =
        Array2::from_shape_vec((rows, width), x).expect("every row wrote exactly `width` values");
    let labels = Array2::from_shape_vec((rows, n_labels), y)
        .expect("every row wrote exactly one value per label");
    let table = Table {
        feature_names: schema.feature_columns(),
        x,
        label_names: schema.label_columns(),
        labels,
        ids,
    };
    for ((l, (neg, pos)), seen) in schema
        .labels
        .iter()
        .zip(label_value_counts(&table))
        .zip(&label_seen)
    {
        if pos == 0 || neg == 0 {
            let values: Vec<String> = seen
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            return Err(DataError::SingleClass {
                source_name: src(),
                label: l.column.clone(),
                class: if pos == 0 { "negatives" } else { "positives" },
                positive: quoted_list(l.positive.values()),
                seen: quoted_list(&values) + if seen.len() == MAX_SEEN { ", …" } else { "" },
            });
        }
    }
    tracing::debug!(source = source_name, rows, columns = width, "loaded CSV");
    Ok(table)
}

/// A finite number, or `None` (non-UTF-8, unparsable, NaN or infinite).
fn parse_finite(cell: &[u8]) -> Option<f32> {
    std::str::from_utf8(cell)
        .ok()?
        .parse::<f32>()
        .ok()
        .filter(|v| v.is_finite())
}

/// The header seems to use another separator than the schema's `delimiter`.
#[derive(Debug, thiserror::Error)]
#[error("the header is one field containing {found:?}: is the file separated by {found:?}? set `delimiter = {found:?}` in the schema (now {expected:?})")]
pub struct DelimiterHint {
    pub found: char,
    pub expected: char,
}

fn delimiter_hint(header: &csv::ByteRecord, expected: char) -> Option<DelimiterHint> {
    if header.len() != 1 {
        return None;
    }
    let field = header.get(0)?;
    [';', '\t', '|', ',']
        .into_iter()
        .filter(|&c| c != expected)
        .find(|&c| field.contains(&(c as u8)))
        .map(|found| DelimiterHint { found, expected })
}

fn quoted_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"
        missing = ["NA", "?"]
        [[labels]]
        column = "default"
        positive = "Yes"
        [[features]]
        name = "income"
        type = "numeric"
        [[features]]
        name = "home"
        type = "categorical"
        categories = ["own", "rent"]
    "#;

    fn schema() -> Schema {
        Schema::from_toml_str(SCHEMA).unwrap()
    }

    fn load(text: &str) -> Result<Table, DataError> {
        load_csv_reader(text.as_bytes(), "bank-a.csv", &schema())
    }

    fn err(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    fn repo_data(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../data")
            .join(name)
    }

    #[test]
    fn encodes_numeric_categorical_label_and_missing() {
        let t = load(
            "default,income,home,extra\nYes,10.5,own,x\nNo,NA,rent,y\nNo, 7 ,,z\nmaybe,?,rent,w\n",
        )
        .unwrap();
        assert_eq!(t.feature_names, ["income", "home=own", "home=rent"]);
        assert_eq!(t.label_names, ["default"]);
        assert_eq!(t.ids, ["1", "2", "3", "4"]);
        assert_eq!(t.x.row(0).to_vec(), [10.5, 1.0, 0.0]);
        assert!(t.x[[1, 0]].is_nan());
        assert_eq!((t.x[[1, 1]], t.x[[1, 2]]), (0.0, 1.0));
        assert_eq!(
            t.x.row(2).to_vec(),
            [7.0, 0.0, 0.0],
            "missing category → all zeros"
        );
        assert!(t.x[[3, 0]].is_nan());
        assert_eq!(t.label(0).to_vec(), [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(label_value_counts(&t), [(3, 1)]);
    }

    #[test]
    fn id_column_and_quoted_fields() {
        let mut s = schema();
        s.id_column = Some("cust".into());
        let t = load_csv_reader(
            "cust,default,income,home\n\"A,1\",Yes,1,own\nB2,No,2,\"rent\"\n".as_bytes(),
            "x.csv",
            &s,
        )
        .unwrap();
        assert_eq!(t.ids, ["A,1", "B2"]);
        let e = load_csv_reader(
            "cust,default,income,home\n,Yes,1,own\nB,No,2,own\n".as_bytes(),
            "x.csv",
            &s,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "x.csv:2: column 'cust': customer id is missing");
    }

    #[test]
    fn missing_column_names_file_line_role_and_column() {
        assert_eq!(
            err("default,income\nYes,1\nNo,2\n"),
            "bank-a.csv:1: feature column 'home' is not in the header"
        );
        assert_eq!(
            err("income,home\n1,own\n"),
            "bank-a.csv:1: label column 'default' is not in the header"
        );
    }

    #[test]
    fn non_numeric_value_is_refused_with_line_and_column() {
        let e = err("default,income,home\nYes,1,own\nNo,12k,rent\n");
        assert_eq!(
            e,
            "bank-a.csv:3: column 'income': '12k' is not a number (numeric feature; missing values are empty or one of 'NA', '?'; list other tokens with `missing = [...]` in the schema)"
        );
        assert!(err("default,income,home\nYes,inf,own\nNo,1,own\n")
            .contains("bank-a.csv:2: column 'income': 'inf'"));
        assert!(err("default,income,home\nYes,1,own\nNo,NaN,own\n")
            .contains("bank-a.csv:3: column 'income': 'NaN'"));
    }

    #[test]
    fn unknown_category_lists_the_allowed_ones() {
        assert_eq!(
            err("default,income,home\nYes,1,own\nNo,2,rent\nNo,3,boat\n"),
            "bank-a.csv:4: column 'home': unknown category 'boat'; allowed: 'own', 'rent'"
        );
    }

    #[test]
    fn missing_label_is_an_error_but_other_values_are_negatives() {
        assert_eq!(
            err("default,income,home\nYes,1,own\n,2,own\n"),
            "bank-a.csv:3: column 'default': label is missing"
        );
        assert_eq!(
            err("default,income,home\nYes,1,own\nNA,2,own\n"),
            "bank-a.csv:3: column 'default': label is missing"
        );
        let t = load("default,income,home\nYes,1,own\nno idea,2,own\n").unwrap();
        assert_eq!(t.label(0).to_vec(), [1.0, 0.0]);
    }

    #[test]
    fn empty_file_and_header_only() {
        assert_eq!(
            err(""),
            "bank-a.csv: empty file: no header and no data rows"
        );
        assert_eq!(
            err("default,income,home\n"),
            "bank-a.csv:1: header only, no data rows"
        );
    }

    #[test]
    fn single_class_label_is_refused() {
        assert_eq!(
            err("default,income,home\nNo,1,own\nNo,2,rent\n"),
            "label 'default' has only negatives in bank-a.csv: a model cannot be trained (positive = 'Yes'; values seen: 'No')"
        );
        assert_eq!(
            err("default,income,home\nYes,1,own\n"),
            "label 'default' has only positives in bank-a.csv: a model cannot be trained (positive = 'Yes'; values seen: 'Yes')"
        );
        // Scoring files need no labels at all.
        let t = load_csv_reader(
            "income,home\n1,own\n".as_bytes(),
            "s.csv",
            &schema().for_scoring(),
        )
        .unwrap();
        assert_eq!(t.labels.ncols(), 0);
    }

    #[test]
    fn duplicate_header_and_ragged_rows() {
        assert_eq!(
            err("default,income,home,income\nYes,1,own,2\n"),
            "bank-a.csv:1: column 'income' appears twice in the header (fields 2 and 4)"
        );
        assert_eq!(
            err("default,income,home\nYes,1,own\nNo,2\n"),
            "bank-a.csv:3: row has 2 fields but the header has 3"
        );
        assert_eq!(
            err("default,income,home\nYes,1,own\nNo,2,own,extra\n"),
            "bank-a.csv:3: row has 4 fields but the header has 3"
        );
    }

    #[test]
    fn line_numbers_count_embedded_newlines() {
        let e = err("default,income,home\n\"Y\nes\",1,own\nNo,x,own\n");
        assert!(e.starts_with("bank-a.csv:4: column 'income'"), "{e}");
    }

    #[test]
    fn io_errors_name_the_file() {
        let e = load_csv(Path::new("/nonexistent/bank-z.csv"), &schema())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/bank-z.csv: "), "{e}");

        struct Failing;
        impl std::io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let e = load_csv_reader(Failing, "bank-b.csv", &schema()).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }));
        assert!(e.to_string().contains("bank-b.csv") && e.to_string().contains("disk on fire"));
    }

    #[test]
    fn non_utf8_bytes_do_not_panic() {
        let mut bytes = b"default,income,home\nYes,1,own\nNo,".to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        bytes.extend_from_slice(b",own\n");
        let e = load_csv_reader(&bytes[..], "bin.csv", &schema())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bin.csv:3: column 'income':"), "{e}");
    }

    #[test]
    fn schema_validation_and_helpers() {
        let s = schema();
        assert_eq!(s.feature_columns(), ["income", "home=own", "home=rent"]);
        let only_home = s.select(&["home".into()]).unwrap();
        assert_eq!(only_home.feature_columns(), ["home=own", "home=rent"]);
        assert_eq!(only_home.labels, s.labels);
        let e = s.select(&["age".into()]).unwrap_err().to_string();
        assert_eq!(
            e,
            "feature 'age' is not in the schema (features: income, home)"
        );

        let round = Schema::from_toml_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(round, s);

        let bad = |t: &str| Schema::from_toml_str(t).unwrap_err().to_string();
        assert!(bad("features = [{ name = \"a\", type = \"numeric\" }, { name = \"a\", type = \"numeric\" }]")
            .contains("column 'a' is declared twice"));
        assert!(
            bad("features = [{ name = \"a\", type = \"categorical\", categories = [] }]")
                .contains("declares no categories")
        );
        assert!(bad(
            "features = [{ name = \"a\", type = \"categorical\", categories = [\"x\", \"x\"] }]"
        )
        .contains("listed twice"));
        let e =
            Schema::from_toml_str("features = [{ name = \"a\", type = \"text\" }]").unwrap_err();
        assert!(e.to_string().starts_with("cannot parse the schema"), "{e}");
        let chain = fedsilo_config::display_chain(&e);
        assert!(chain.contains("<schema>:1:"), "{chain}");
        assert!(chain.contains("unknown variant `text`"), "{chain}");
        assert!(
            bad("labels = [{ column = \"y\", positive = \"\" }]\nfeatures = []")
                .contains("missing-value token")
        );
        let e = Schema::from_toml_file(Path::new("/nonexistent/s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/s.toml: "));
    }

    fn check_dataset(name: &str, rows: usize, rate: f64) -> Table {
        let schema = Schema::from_toml_file(&repo_data(&format!("{name}.schema.toml"))).unwrap();
        let t = load_csv(&repo_data(&format!("{name}.csv")), &schema).unwrap();
        assert_eq!(t.n_rows(), rows, "{name}");
        assert_eq!(t.feature_names, schema.feature_columns());
        let (neg, pos) = label_value_counts(&t)[0];
        assert_eq!(neg + pos, rows);
        let r = 100.0 * pos as f64 / rows as f64;
        assert!(
            (r - rate).abs() <= 0.1,
            "{name}: positive rate {r:.2} %, documented {rate} %"
        );
        t
    }

    #[test]
    fn shipped_datasets_load_with_documented_counts_and_rates() {
        let caravan = check_dataset("caravan", 5822, 6.0);
        assert_eq!(caravan.n_features(), 83 + 40 + 10);
        check_dataset("default", 10000, 3.3);
        let credit = check_dataset("credit_data", 4454, 28.2);
        let income = credit
            .feature_names
            .iter()
            .position(|n| n == "Income")
            .unwrap();
        let nan = credit
            .x
            .column(income)
            .iter()
            .filter(|v| v.is_nan())
            .count();
        assert_eq!(nan, 381);
        let churn = check_dataset("wa_churn", 7043, 26.5);
        let total = churn
            .feature_names
            .iter()
            .position(|n| n == "total_charges")
            .unwrap();
        assert_eq!(
            churn.x.column(total).iter().filter(|v| v.is_nan()).count(),
            11
        );
    }

    const BANK: &str = r#"
        [[labels]]
        column = "grade"
        positive = ["D", "E", "F", "G"]
        [[labels]]
        column = "active"
        positive = "true"
        [[features]]
        name = "income"
        type = "numeric"
    "#;

    #[test]
    fn a_label_from_a_set_of_values_and_booleans_in_any_case() {
        let schema = Schema::from_toml_str(BANK).unwrap();
        let t = load_csv_reader(
            "grade,active,income\nA,True,1\nD,false,NA\nG,TRUE,NaN\nB,False,null\nE,true,N/A\n"
                .as_bytes(),
            "loans.csv",
            &schema,
        )
        .unwrap();
        assert_eq!(t.labels.column(0).to_vec(), vec![0.0, 1.0, 1.0, 0.0, 1.0]);
        assert_eq!(t.labels.column(1).to_vec(), vec![1.0, 0.0, 1.0, 0.0, 1.0]);
        // The default missing tokens apply when the schema lists none.
        assert_eq!(t.x.column(0).iter().filter(|v| v.is_nan()).count(), 4);
    }

    #[test]
    fn one_class_says_which_values_were_seen() {
        let schema = Schema::from_toml_str(
            "[[labels]]\ncolumn = \"churn\"\npositive = \"Churned\"\n[[features]]\nname = \"x\"\ntype = \"numeric\"\n",
        )
        .unwrap();
        // Not a boolean word, so the case must match: nothing is positive, and the message
        // says what the file holds.
        let e = load_csv_reader(
            "churn,x\nchurned,1\nstayed,2\n".as_bytes(),
            "c.csv",
            &schema,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("has only negatives"), "{e}");
        assert!(e.contains("positive = 'Churned'"), "{e}");
        assert!(e.contains("values seen: 'churned', 'stayed'"), "{e}");
    }

    #[test]
    fn not_a_number_mentions_the_missing_key() {
        let schema = Schema::from_toml_str(
            "missing = []\n[[labels]]\ncolumn = \"y\"\npositive = \"1\"\n[[features]]\nname = \"x\"\ntype = \"numeric\"\n",
        )
        .unwrap();
        let e = load_csv_reader("y,x\n1,NA\n0,2\n".as_bytes(), "c.csv", &schema)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.csv:2: column 'x': 'NA' is not a number"),
            "{e}"
        );
        assert!(e.contains("`missing = [...]`"), "{e}");
    }

    #[test]
    fn a_delimiter_is_declared_and_a_wrong_one_is_named() {
        let text = "y;x\n1;2.5\n0;3\n";
        let plain = "[[labels]]\ncolumn = \"y\"\npositive = \"1\"\n[[features]]\nname = \"x\"\ntype = \"numeric\"\n";
        let e = load_csv_reader(
            text.as_bytes(),
            "s.csv",
            &Schema::from_toml_str(plain).unwrap(),
        )
        .unwrap_err();
        let chain = fedsilo_config::display_chain(&e);
        assert!(chain.contains("set `delimiter = ';'`"), "{chain}");
        let semi = Schema::from_toml_str(&format!("delimiter = \";\"\n{plain}")).unwrap();
        let t = load_csv_reader(text.as_bytes(), "s.csv", &semi).unwrap();
        assert_eq!(t.x.column(0).to_vec(), vec![2.5, 3.0]);
        assert!(Schema::from_toml_str(&format!("delimiter = \"a\"\n{plain}")).is_err());
    }

    #[test]
    fn feature_entries_are_strict_and_fit_their_type() {
        let e = Schema::from_toml_str(
            "[[features]]\nname = \"x\"\ntype = \"numeric\"\ncategories = [\"a\"]\n",
        )
        .unwrap_err();
        assert!(
            fedsilo_config::display_chain(&e).contains("only for type = \"categorical\""),
            "{e}"
        );
        let e =
            Schema::from_toml_str("[[features]]\nname = \"x\"\ntype = \"numerc\"\n").unwrap_err();
        assert!(
            fedsilo_config::display_chain(&e).contains("did you mean `numeric`?"),
            "{e}"
        );
    }
}
