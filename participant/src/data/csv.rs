//! Reading a CSV file by its schema into a [`Table`]: one pass, errors naming file, line
//! and column.

use std::path::Path;

use fedsilo_ml::table::Table;

use super::encode::{Cell, Encoder};
use super::schema::Schema;
use super::{At, DataError};

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

/// How a reader counts positions: lines of a file, or rows of a query's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Count {
    Lines,
    /// Data rows (1-based), for CSV printed by a database (`COPY … TO STDOUT`).
    Rows,
}

fn read<R: std::io::Read>(
    reader: R,
    source_name: &str,
    schema: &Schema,
    size_hint: Option<u64>,
) -> Result<Table, DataError> {
    read_counted(reader, source_name, schema, size_hint, Count::Lines)
}

pub(crate) fn read_counted<R: std::io::Read>(
    reader: R,
    source_name: &str,
    schema: &Schema,
    size_hint: Option<u64>,
    count: Count,
) -> Result<Table, DataError> {
    let src = || source_name.to_string();
    let header_line_of = |line: u64| match count {
        Count::Lines => At::Line(line),
        Count::Rows => At::Nowhere,
    };
    let row_at = |line: u64, row: usize| match count {
        Count::Lines => At::Line(line),
        Count::Rows => At::Row {
            group: None,
            row: row as u64 + 1,
        },
    };
    let csv_err = |e: csv::Error, fallback: At| {
        let at = e.position().map_or(fallback, |p| match count {
            Count::Lines => At::Line(p.line()),
            Count::Rows => At::Row {
                group: None,
                row: p.record(),
            },
        });
        if e.is_io_error() {
            DataError::Io {
                source_name: src(),
                source: e.into(),
            }
        } else {
            DataError::Csv {
                source_name: src(),
                at,
                source: e,
            }
        }
    };

    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(schema.delimiter as u8)
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let header = rdr
        .byte_headers()
        .map_err(|e| csv_err(e, header_line_of(1)))?
        .clone();
    if header.is_empty() {
        return Err(DataError::EmptyFile { source_name: src() });
    }
    let header_line = header.position().map_or(1, |p| p.line());
    let header_at = header_line_of(header_line);
    let header_end = rdr.position().byte();
    let n_fields = header.len();
    let names: Vec<String> = header
        .iter()
        .map(|raw| String::from_utf8_lossy(raw).into_owned())
        .collect();
    let hint = || delimiter_hint(&header, schema.delimiter);
    let mut enc = Encoder::new(schema, source_name, &names, header_at, &hint)?;

    let mut rec = csv::ByteRecord::new();
    let mut rows = 0usize;
    loop {
        let more = rdr
            .read_byte_record(&mut rec)
            .map_err(|e| csv_err(e, row_at(header_line + rows as u64 + 1, rows)))?;
        if !more {
            break;
        }
        let line = rec
            .position()
            .map_or(header_line + rows as u64 + 1, |p| p.line());
        let at = row_at(line, rows);
        if rows == 0 {
            // Size the buffers from the file size and the first row's length.
            if let Some(total) = size_hint {
                let row_bytes = rdr.position().byte().saturating_sub(header_end).max(1);
                let est = (total.saturating_sub(header_end) / row_bytes + 1) as usize;
                enc.reserve(est.saturating_add(est / 8));
            }
        }
        if rec.len() != n_fields {
            return Err(DataError::RaggedRow {
                source_name: src(),
                at,
                expected: n_fields,
                found: rec.len(),
            });
        }
        let rec = &rec;
        enc.push_row(|f| Cell::Text(rec.get(f).unwrap_or_default()), at)?;
        rows += 1;
    }
    enc.finish(header_at)
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
