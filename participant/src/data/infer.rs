//! `fedsilo schema infer`: a schema drafted from one CSV or Parquet file, in one streaming
//! pass with bounded memory.
//!
//! What it decides, column by column:
//! - the **delimiter** of a CSV (`,` `;` tab `|`), sniffed from the first lines: the one that
//!   splits them into the same number (> 1) of fields, the most fields winning;
//! - **missing tokens**: the defaults ("NA", "NaN", "null", "N/A") plus short placeholder
//!   tokens ("?", "-", ".", "none", "unknown", …) found in otherwise numeric columns;
//! - the **type**: numeric when every other value parses as a number, boolean when every
//!   value is a boolean word (true/false, yes/no, y/n, t/f), categorical otherwise;
//! - the **categories** by frequency: at most `max_categories`, the rest folded into the
//!   `other` bucket (`other = true`);
//! - the **id column** (unless given): the first column whose values are all distinct and
//!   whose name looks like an identifier (`id`, `customer_id`, `CustomerID`), else the first
//!   all-distinct text column; other all-distinct text columns are left out (identifiers or
//!   free text, never features), and so are constant and empty columns;
//! - the **label**'s positive value(s) when `--label` is given without `--positive`: the true
//!   word of a boolean column, or `1` of a 0/1 column.
//!
//! Memory: per column a few counters and at most [`TRACK_LIMIT`] distinct values with their
//! counts; a column with more is *high-cardinality*: the values first seen are the ones
//! counted (frequent values appear early), the rest only counted as "more".
//!
//! The TOML it writes carries a comment per column with what it saw (type, missing count,
//! range or top categories with counts), and is checked by the strict schema loader before
//! it is returned.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use super::encode::Cell;
use super::schema::{FeatureSpec, LabelSpec, Positive, Schema, DEFAULT_MISSING, OTHER};
use super::{At, DataError};

/// Distinct values tracked per column; beyond it a column is high-cardinality.
pub const TRACK_LIMIT: usize = 4096;
/// Default `--max-categories`.
pub const DEFAULT_MAX_CATEGORIES: usize = 20;
/// Placeholder tokens that mean "missing" when they appear in an otherwise numeric column.
const PLACEHOLDERS: [&str; 12] = [
    "?", "-", "--", ".", "*", "#N/A", "none", "None", "NONE", "unknown", "missing", "nil",
];

/// What `schema infer` is told.
#[derive(Clone, Debug)]
pub struct InferOptions {
    /// The label column, if the schema is for training.
    pub label: Option<String>,
    /// The label's positive value(s); empty = decided from the data (boolean true word, `1`).
    pub positive: Vec<String>,
    /// Categories listed per feature; rarer values go to `other`.
    pub max_categories: usize,
    /// The id column, instead of guessing it.
    pub id_column: Option<String>,
    /// The CSV delimiter, instead of sniffing it.
    pub delimiter: Option<char>,
}

impl Default for InferOptions {
    fn default() -> Self {
        InferOptions {
            label: None,
            positive: Vec::new(),
            max_categories: DEFAULT_MAX_CATEGORIES,
            id_column: None,
            delimiter: None,
        }
    }
}

/// A drafted schema: the TOML text (with its comments) and the schema it loads as.
#[derive(Clone, Debug)]
pub struct Inferred {
    pub toml: String,
    pub schema: Schema,
    /// Things the user should know (printed on stderr by the CLI).
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Data(Box<DataError>),
    #[error("{source_name}: --{what} column '{column}' is not in the file (columns: {columns})")]
    NoSuchColumn {
        source_name: String,
        what: &'static str,
        column: String,
        columns: String,
    },
    #[error("{source_name}: label '{label}' is not boolean or 0/1: say which values are positive with --positive (values seen: {seen})")]
    PositiveNeeded {
        source_name: String,
        label: String,
        seen: String,
    },
    #[error(
        "{source_name}: label '{label}': --positive '{value}' never occurs (values seen: {seen})"
    )]
    PositiveNotSeen {
        source_name: String,
        label: String,
        value: String,
        seen: String,
    },
    #[error("{source_name}: label '{label}' has {missing} missing value(s); a training file needs a label on every row")]
    LabelMissing {
        source_name: String,
        label: String,
        missing: u64,
    },
    #[error("--max-categories must be at least 1")]
    MaxCategories,
    #[error("{source_name}: no column could be a feature")]
    NoFeatures { source_name: String },
    #[error("{source_name}: the drafted schema does not load (a bug in schema infer)")]
    Draft {
        source_name: String,
        #[source]
        source: Box<DataError>,
    },
}

impl From<DataError> for InferError {
    fn from(e: DataError) -> Self {
        InferError::Data(Box::new(e))
    }
}

/// Everything one pass learns about one column, in bounded memory.
#[derive(Default)]
struct Stats {
    name: String,
    /// Empty cells and NULLs.
    empty: u64,
    /// Cells that parse as finite numbers (or are typed numbers).
    numeric: u64,
    min: f64,
    max: f64,
    sum: f64,
    integral: bool,
    /// Typed booleans (Parquet) and boolean words.
    booleans: u64,
    /// Text cells that do not parse as numbers, with counts (a few, for missing tokens).
    non_numeric: HashMap<Vec<u8>, u64>,
    non_numeric_overflow: bool,
    /// Distinct values (as text) with counts, in first-seen order; at most TRACK_LIMIT.
    values: HashMap<Vec<u8>, (u64, usize)>,
    /// Occurrences of values not tracked (seen after the limit).
    untracked: u64,
    /// A column of a type no feature can be (Parquet dates, nested): why.
    unusable: Option<String>,
}

const NON_NUMERIC_LIMIT: usize = 16;

impl Stats {
    fn new(name: String) -> Stats {
        Stats {
            name,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            integral: true,
            ..Stats::default()
        }
    }

    fn track(&mut self, text: &[u8]) {
        let next = self.values.len();
        if let Some(e) = self.values.get_mut(text) {
            e.0 += 1;
        } else if next < TRACK_LIMIT {
            self.values.insert(text.to_vec(), (1, next));
        } else {
            self.untracked += 1;
        }
    }

    fn number(&mut self, v: f64) {
        self.numeric += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        if v.fract() != 0.0 {
            self.integral = false;
        }
    }

    fn observe(&mut self, cell: Cell<'_>, scratch: &mut Vec<u8>) {
        use std::io::Write;
        match cell {
            Cell::Null => self.empty += 1,
            Cell::Text([]) => self.empty += 1,
            Cell::Text(t) => {
                match std::str::from_utf8(t)
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|v| v.is_finite())
                {
                    Some(v) => self.number(v),
                    None => {
                        if super::encode::boolean_value(t).is_some() {
                            self.booleans += 1;
                        }
                        let n = self.non_numeric.len();
                        if let Some(c) = self.non_numeric.get_mut(t) {
                            *c += 1;
                        } else if n < NON_NUMERIC_LIMIT {
                            self.non_numeric.insert(t.to_vec(), 1);
                        } else {
                            self.non_numeric_overflow = true;
                        }
                    }
                }
                self.track(t);
            }
            Cell::Number(v) if !v.is_finite() => self.empty += 1,
            Cell::Number(v) => {
                self.number(v);
                scratch.clear();
                let _ = write!(scratch, "{v}");
                let s = std::mem::take(scratch);
                self.track(&s);
                *scratch = s;
            }
            Cell::Integer(v) => {
                self.number(v as f64);
                scratch.clear();
                let _ = write!(scratch, "{v}");
                let s = std::mem::take(scratch);
                self.track(&s);
                *scratch = s;
            }
            Cell::Bool(b) => {
                self.booleans += 1;
                self.track(if b { b"true" } else { b"false" });
            }
        }
    }

    fn rows(&self) -> u64 {
        self.empty + self.values.values().map(|(c, _)| c).sum::<u64>() + self.untracked
    }

    fn high_cardinality(&self) -> bool {
        self.untracked > 0
    }

    /// Every value distinct (as far as tracked: a high-cardinality column whose tracked
    /// values each occurred once counts), none missing, at least two rows.
    fn all_distinct(&self) -> bool {
        self.empty == 0 && self.values.len() >= 2 && self.values.values().all(|(c, _)| *c == 1)
    }

    /// Tracked values, most frequent first (first seen breaks ties), without `skip` ones.
    fn by_count(&self, skip: &dyn Fn(&[u8]) -> bool) -> Vec<(String, u64)> {
        let mut v: Vec<(&Vec<u8>, u64, usize)> = self
            .values
            .iter()
            .filter(|(k, _)| !skip(k))
            .map(|(k, (c, first))| (k, *c, *first))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        v.into_iter()
            .map(|(k, c, _)| (String::from_utf8_lossy(k).into_owned(), c))
            .collect()
    }
}

/// Looks like an identifier's name: `id`, `customer_id`, `CustomerID`, `client-id`, `id_no`.
fn id_like(name: &str) -> bool {
    // Split on non-alphanumerics and lower→upper case changes.
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for ch in name.chars() {
        if !ch.is_alphanumeric() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if ch.is_uppercase() && prev_lower && !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
        prev_lower = ch.is_lowercase() || ch.is_ascii_digit();
        cur.push(ch);
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words.iter().any(|w| {
        ["id", "uuid", "guid"]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k))
    })
}

/// The delimiter that splits the sample's lines into the same number (> 1) of fields.
fn sniff_delimiter(sample: &[u8]) -> char {
    // Drop a last line cut off by the sample's end.
    let sample = match sample.iter().rposition(|&b| b == b'\n') {
        Some(end) if sample.len() >= 64 * 1024 => sample.get(..end).unwrap_or(sample),
        _ => sample,
    };
    let mut best = (',', 0usize);
    for d in [',', ';', '\t', '|'] {
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(d as u8)
            .has_headers(false)
            .flexible(true)
            .from_reader(sample);
        let mut widths = Vec::new();
        for rec in rdr.byte_records().take(50) {
            match rec {
                Ok(r) => widths.push(r.len()),
                Err(_) => break,
            }
        }
        let Some(&first) = widths.first() else {
            continue;
        };
        if first > 1 && widths.iter().all(|&w| w == first) && first > best.1 {
            best = (d, first);
        }
    }
    best.0
}

/// Drafts a schema from a CSV or Parquet file (by extension, as [`super::Source::file`]).
pub fn infer_file(path: &Path, opts: &InferOptions) -> Result<Inferred, InferError> {
    if opts.max_categories == 0 {
        return Err(InferError::MaxCategories);
    }
    let source_name = path.display().to_string();
    let (stats, rows, delimiter) = if super::source::is_parquet_path(path) {
        let (s, r) = scan_parquet(path, &source_name)?;
        (s, r, ',')
    } else {
        scan_csv(path, &source_name, opts.delimiter)?
    };
    draft(&source_name, stats, rows, delimiter, opts)
}

/// Drafts a schema from CSV text (for tests and pipes); `source_name` names it in messages.
pub fn infer_csv_reader<R: Read>(
    mut reader: R,
    source_name: &str,
    opts: &InferOptions,
) -> Result<Inferred, InferError> {
    let mut sample = vec![0u8; 64 * 1024];
    let mut filled = 0;
    let io = |source| DataError::Io {
        source_name: source_name.to_string(),
        source,
    };
    while filled < sample.len() {
        let n = reader
            .read(sample.get_mut(filled..).unwrap_or_default())
            .map_err(io)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    sample.truncate(filled);
    let delimiter = opts.delimiter.unwrap_or_else(|| sniff_delimiter(&sample));
    let chained = std::io::Cursor::new(sample).chain(reader);
    let (stats, rows) = scan_csv_reader(chained, source_name, delimiter)?;
    draft(source_name, stats, rows, delimiter, opts)
}

fn scan_csv(
    path: &Path,
    source_name: &str,
    delimiter: Option<char>,
) -> Result<(Vec<Stats>, u64, char), InferError> {
    let io = |source| DataError::Io {
        source_name: source_name.to_string(),
        source,
    };
    let delimiter = match delimiter {
        Some(d) => d,
        None => {
            let mut sample = Vec::with_capacity(64 * 1024);
            std::fs::File::open(path)
                .map_err(io)?
                .take(64 * 1024)
                .read_to_end(&mut sample)
                .map_err(io)?;
            sniff_delimiter(&sample)
        }
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let (stats, rows) = scan_csv_reader(std::io::BufReader::new(file), source_name, delimiter)?;
    Ok((stats, rows, delimiter))
}

fn scan_csv_reader<R: Read>(
    reader: R,
    source_name: &str,
    delimiter: char,
) -> Result<(Vec<Stats>, u64), InferError> {
    let src = || source_name.to_string();
    let csv_err = |e: csv::Error, line: u64| -> DataError {
        let at = At::Line(e.position().map_or(line, |p| p.line()));
        super::csv::csv_error(e, source_name, at)
    };
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter as u8)
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let header = rdr.byte_headers().map_err(|e| csv_err(e, 1))?.clone();
    if header.is_empty() {
        return Err(DataError::EmptyFile { source_name: src() }.into());
    }
    let mut stats: Vec<Stats> = Vec::with_capacity(header.len());
    for (i, raw) in header.iter().enumerate() {
        let name = String::from_utf8_lossy(raw).into_owned();
        if let Some(first) = stats.iter().position(|s| s.name == name) {
            return Err(DataError::DuplicateColumn {
                source_name: src(),
                at: At::Line(1),
                column: name,
                first: first + 1,
                second: i + 1,
            }
            .into());
        }
        stats.push(Stats::new(name));
    }
    let mut rec = csv::ByteRecord::new();
    let mut rows = 0u64;
    let mut scratch = Vec::new();
    while rdr
        .read_byte_record(&mut rec)
        .map_err(|e| csv_err(e, rows + 2))?
    {
        if rec.len() != stats.len() {
            return Err(DataError::RaggedRow {
                source_name: src(),
                at: At::Line(rec.position().map_or(rows + 2, |p| p.line())),
                expected: stats.len(),
                found: rec.len(),
            }
            .into());
        }
        for (s, cell) in stats.iter_mut().zip(rec.iter()) {
            s.observe(Cell::Text(cell), &mut scratch);
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(DataError::NoDataRows {
            source_name: src(),
            at: At::Line(1),
        }
        .into());
    }
    Ok((stats, rows))
}

fn scan_parquet(path: &Path, source_name: &str) -> Result<(Vec<Stats>, u64), InferError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let src = || source_name.to_string();
    let pq = |at: At| {
        move |source| DataError::Parquet {
            source_name: src(),
            at,
            source,
        }
    };
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        source_name: src(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(pq(At::Nowhere))?;
    let meta = reader.metadata();
    let fields = meta.file_metadata().schema().get_fields();
    let mut stats: Vec<Stats> = fields
        .iter()
        .map(|t| {
            let mut s = Stats::new(t.name().to_string());
            if !super::parquet::readable(t) {
                s.unusable = Some(super::parquet::type_name(t));
            }
            s
        })
        .collect();
    let mut rows = 0u64;
    let mut scratch = Vec::new();
    for g in 0..meta.num_row_groups() {
        let group_at = At::Row {
            group: Some(g),
            row: 0,
        };
        let rg = reader.get_row_group(g).map_err(pq(group_at))?;
        let iter = rg.get_row_iter(None).map_err(pq(group_at))?;
        for (r, row) in iter.enumerate() {
            let row = row.map_err(pq(At::Row {
                group: Some(g),
                row: r as u64 + 1,
            }))?;
            for (s, (_, field)) in stats.iter_mut().zip(row.get_column_iter()) {
                if s.unusable.is_some() {
                    continue;
                }
                match super::parquet::cell(field) {
                    Some(c) => s.observe(c, &mut scratch),
                    None => s.unusable = Some(format!("{field:?}")),
                }
            }
            rows += 1;
        }
    }
    if rows == 0 {
        return Err(DataError::NoDataRows {
            source_name: src(),
            at: At::Nowhere,
        }
        .into());
    }
    Ok((stats, rows))
}

mod draft;
use draft::draft;

#[cfg(test)]
mod tests;
