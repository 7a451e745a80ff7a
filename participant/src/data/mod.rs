//! An institution's customer data — a CSV or Parquet file, or a PostgreSQL query — read by
//! the schema the federation agreed on, into a [`Table`].
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
//! other = true                          # any other value → column Home=other (else an error)
//!
//! [[features]]
//! name = "Online"
//! type = "boolean"                      # one 0/1 column; true/false, yes/no, y/n, t/f, 1/0
//!
//! [[inputs]]                            # read for the expressions only, not a feature
//! name = "NextMonthAssets"
//! type = "numeric"
//!
//! [[labels]]                            # a label derived by a condition
//! column = "Churned"
//! derive = "NextMonthAssets < 0.5 * Assets"
//!
//! # cohort = "Assets > 200000 and Home != \"parents\""   # rows kept (top-level key)
//!
//! [derive]                              # derived numeric features, after the features
//! LoanToIncome = "Amount / Income"
//! ```
//!
//! `fedsilo schema infer` writes such a file from a CSV or Parquet file ([`infer`]).
//!
//! # Encoding rules
//!
//! - **Numeric** feature → one `f32` column. A missing cell (empty, or one of `missing`) → `NaN`.
//!   Anything else that does not parse as a finite number is an error.
//! - **Categorical** feature → one 0/1 column per *declared* category, named `column=category`,
//!   in the declared order. A missing cell → all zeros. A value outside the declared list is an
//!   error naming the allowed values: the column set must not depend on what one institution
//!   happens to have in its file. With `other = true` such a value sets one more column,
//!   `column=other`, instead: the way a wide categorical (thousands of job titles) keeps its
//!   frequent values and folds the rest, so it neither explodes the width nor leaves LR a
//!   thousand near-empty columns. A declared category may not have surrounding whitespace
//!   (cells are trimmed, so it could never match), nor be `other` when the bucket is on.
//! - **Boolean** feature → one column, 1.0 for true/yes/y/t/1 and 0.0 for false/no/n/f/0 (any
//!   case; Parquet booleans as they are), missing → `NaN`; anything else is an error.
//! - **Label** → 1.0 if the cell equals `positive` (or one of a list) exactly, else 0.0;
//!   boolean words (true/false, yes/no, y/n, t/f) match in any case. A missing label is an
//!   error, and so is a label with only one class in the file (nothing to learn from); that
//!   error lists the values the file holds.
//! - **Expressions** ([`expr`]: arithmetic, comparisons, and/or/not, `is_missing(x)`,
//!   `Home == "rent"`): a derived column reads the features and inputs (a value that is not
//!   finite, e.g. a division by zero or a missing operand, is missing); the cohort and derived
//!   labels also read the derived columns. A row is kept when the cohort is *true* (unknown —
//!   a comparison with a missing value — drops it); a derived label that is unknown on a kept
//!   row is an error naming the row. Every expression is type-checked against the schema when
//!   it is loaded, with the character position in errors. Ids without an id column stay the
//!   file's data-row numbers, cohort or not.
//! - Cells are trimmed of surrounding ASCII whitespace; a UTF-8 byte-order mark is ignored.
//! - Columns of the file that the schema does not mention are ignored; duplicate header names
//!   are an error (which one would be meant?).
//!
//! Every error names the source and where in it: the file and the 1-based line for CSV
//! (`file.csv:12`), the row group and row for Parquet (`file.parquet: row group 0, row 7`), the
//! row of a PostgreSQL query's result (`postgres … query '…': row 7`); and the column.
//!
//! # Sources
//!
//! [`Source`]: a CSV file ([`load_csv`]), a Parquet file ([`load_parquet`]: flat columns,
//! read row group by row group, only the schema's columns; a numeric feature must be a
//! numeric Parquet column) or a PostgreSQL query or table ([`load_postgres`]: streamed with
//! `COPY (query) TO STDOUT (FORMAT csv)` through the CSV reader, so the same rules apply to
//! the text PostgreSQL prints). All three go through one encoder (`encode`).
//!
//! # Cost
//!
//! The file is streamed with one reused [`csv::ByteRecord`]; cells are parsed in place from its
//! buffer and written straight into one row-major `Vec<f32>` (sized up front from the file size
//! when reading from a path). Only customer ids allocate per row.

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
    #[error("{source_name}{at}: header only, no data rows")]
    NoDataRows { source_name: String, at: At },
    #[error("{source_name}{at}: {role} column '{column}' is not in the header{similar}")]
    MissingColumn {
        source_name: String,
        at: At,
        role: &'static str,
        column: String,
        /// " (there is 'income': …)" when a header name differs only in case.
        similar: String,
        /// Set when the header looks separated by another character than the schema's.
        #[source]
        hint: Option<DelimiterHint>,
    },
    #[error("{source_name}{at}: column '{column}' appears twice in the header (fields {first} and {second})")]
    DuplicateColumn {
        source_name: String,
        at: At,
        column: String,
        first: usize,
        second: usize,
    },
    #[error("{source_name}{at}: row has {found} fields but the header has {expected}")]
    RaggedRow {
        source_name: String,
        at: At,
        expected: usize,
        found: usize,
    },
    #[error("{source_name}{at}: column '{column}': '{value}' is not a number (numeric feature; missing values are empty{missing_hint})")]
    NotNumeric {
        source_name: String,
        at: At,
        column: String,
        value: String,
        missing_hint: String,
    },
    #[error("{source_name}{at}: column '{column}': '{value}' is not a boolean (boolean feature: true/false, yes/no, y/n, t/f or 1/0 in any case; missing values are empty{missing_hint})")]
    NotBoolean {
        source_name: String,
        at: At,
        column: String,
        value: String,
        missing_hint: String,
    },
    #[error(
        "{source_name}{at}: column '{column}': unknown category '{value}'; allowed: {allowed} (or set `other = true` on the feature to bucket the rest)"
    )]
    UnknownCategory {
        source_name: String,
        at: At,
        column: String,
        value: String,
        allowed: String,
    },
    #[error("{source_name}{at}: column '{column}': label is missing")]
    MissingLabel {
        source_name: String,
        at: At,
        column: String,
    },
    #[error("{source_name}{at}: column '{column}': customer id is missing")]
    MissingId {
        source_name: String,
        at: At,
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
    #[error("{source_name}{at}: malformed CSV")]
    Csv {
        source_name: String,
        at: At,
        #[source]
        source: ::csv::Error,
    },
    #[error("{source_name}: column '{column}' holds {found} values, but the schema reads it as {expected}")]
    ColumnType {
        source_name: String,
        column: String,
        found: String,
        expected: &'static str,
    },
    #[error("{source_name}{at}: cannot read the Parquet file")]
    Parquet {
        source_name: String,
        at: At,
        #[source]
        source: ::parquet::errors::ParquetError,
    },
    #[error("{source_name}: {what}")]
    Postgres {
        source_name: String,
        what: &'static str,
        #[source]
        source: ::postgres::Error,
    },
    #[error("{source_name}: invalid expression")]
    Expr {
        source_name: String,
        #[source]
        source: self::expr::ExprError,
    },
    #[error("{source_name}{at}: label '{column}' is derived by a condition that is unknown on this row (a value it reads is missing); write the condition so that it decides, e.g. with is_missing(…)")]
    UnknownDerivedLabel {
        source_name: String,
        at: At,
        column: String,
    },
    #[error("{source_name}: the cohort ({cohort}) keeps none of the {rows} rows")]
    EmptyCohort {
        source_name: String,
        cohort: String,
        rows: usize,
    },
    #[error("{source_name}: invalid data source: {reason}")]
    InvalidSource { source_name: String, reason: String },
    #[error("{source_name}: internal error: {what}")]
    Internal {
        source_name: String,
        what: &'static str,
    },
}

/// Where in a source a row or a header is, as error messages show it after the source's
/// name: `file.csv:12` (a line), `file.parquet: row group 0, row 7`, `query: row 7`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// A 1-based line of a text file.
    Line(u64),
    /// A 1-based data row, within a Parquet row group (0-based, as Parquet tools count) or
    /// of a query's result.
    Row { group: Option<usize>, row: u64 },
    /// The source as a whole.
    Nowhere,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Line(l) => write!(f, ":{l}"),
            At::Row {
                group: Some(g),
                row,
            } => write!(f, ": row group {g}, row {row}"),
            At::Row { group: None, row } => write!(f, ": row {row}"),
            At::Nowhere => Ok(()),
        }
    }
}

mod csv;
#[cfg(test)]
mod csv_tests;
pub(crate) mod derive;
mod encode;
pub mod expr;
pub mod infer;
mod number;
mod parquet;
mod postgres;
mod schema;
mod source;
#[cfg(test)]
mod tests;

pub(crate) use self::csv::load_csv_chunk_ids;
pub use self::csv::{
    label_value_counts, load_csv, load_csv_chunks, load_csv_reader, DelimiterHint, Labels,
};
pub use self::derive::{derive_table, CohortCount};
pub(crate) use self::encode::Chunk;
pub(crate) use self::parquet::load_parquet_chunk_ids;
pub use self::parquet::{load_parquet, load_parquet_chunks};
pub use self::postgres::{load_postgres, load_postgres_chunks};
pub use self::schema::*;
pub use self::source::{is_parquet_path, load_file, Source};
