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
    #[error("{source_name}:{line}: malformed CSV")]
    Csv {
        source_name: String,
        line: u64,
        #[source]
        source: ::csv::Error,
    },
}

mod csv;
mod schema;
#[cfg(test)]
mod tests;

pub use self::csv::{
    label_value_counts, load_csv, load_csv_chunks, load_csv_reader, DelimiterHint, Labels,
};
pub use self::schema::*;
