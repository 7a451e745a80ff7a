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

/// How [`load_csv_chunks`] reads the schema's labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Labels {
    /// As [`load_csv`]: every label column must be in the header and no label cell may be
    /// missing (a chunk is not checked for having both classes).
    Required,
    /// For scoring files that may or may not carry the outcome: a label column absent from
    /// the header is left out of every chunk's `label_names`, and a missing label cell is
    /// `NaN`.
    IfPresent,
}

/// Streams `path` by `schema` in chunks of at most `chunk_rows` rows (at least one), calling
/// `sink` with each chunk as a [`Table`] in file order; returns the number of rows read.
/// Ids without an id column keep counting data rows across chunks. Memory is one chunk,
/// whatever the file's size. Errors name the file, line and column as [`load_csv`]'s.
pub fn load_csv_chunks<E: From<DataError>>(
    path: &Path,
    schema: &Schema,
    chunk_rows: usize,
    labels: Labels,
    sink: &mut dyn FnMut(Table) -> Result<(), E>,
) -> Result<usize, E> {
    let source_name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        source_name: source_name.clone(),
        source,
    })?;
    let mode = Mode::Chunks {
        rows: chunk_rows.max(1),
        labels,
    };
    let mut rows = 0;
    read_rows(
        file,
        &source_name,
        schema,
        None,
        Count::Lines,
        mode,
        &mut |t| {
            rows += t.n_rows();
            sink(t)
        },
    )?;
    Ok(rows)
}

/// One table for the whole input, or chunks of a given size.
#[derive(Clone, Copy)]
enum Mode {
    Whole,
    Chunks { rows: usize, labels: Labels },
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
    let mut table = None;
    read_rows(
        reader,
        source_name,
        schema,
        size_hint,
        count,
        Mode::Whole,
        &mut |t| {
            table = Some(t);
            Ok::<(), DataError>(())
        },
    )?;
    table.ok_or(DataError::EmptyFile {
        source_name: source_name.to_string(),
    })
}

/// The reading loop of every CSV input: the whole table (checked by [`Encoder::finish`]) or
/// chunks, each handed to `sink`.
fn read_rows<R: std::io::Read, E: From<DataError>>(
    reader: R,
    source_name: &str,
    schema: &Schema,
    size_hint: Option<u64>,
    count: Count,
    mode: Mode,
    sink: &mut dyn FnMut(Table) -> Result<(), E>,
) -> Result<(), E> {
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
        csv_error(e, source_name, at)
    };

    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(schema.delimiter as u8)
        .has_headers(true)
        .flexible(true)
        // Fields are trimmed as they are read (`trim_ascii`, what `Trim::All` does, without the
        // csv crate's per-record copy).
        .trim(csv::Trim::Headers)
        .from_reader(reader);
    let header = rdr
        .byte_headers()
        .map_err(|e| csv_err(e, header_line_of(1)))?
        .clone();
    if header.is_empty() {
        return Err(DataError::EmptyFile { source_name: src() }.into());
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
    let (chunk_rows, labels) = match mode {
        Mode::Whole => (None, Labels::Required),
        Mode::Chunks { rows, labels } => (Some(rows), labels),
    };
    let mut enc = Encoder::with_labels(schema, source_name, &names, header_at, &hint, labels)?;

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
        if let Some(c) = chunk_rows {
            if rows % c == 0 {
                enc.reserve(c);
            }
        } else if rows == 0 {
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
            }
            .into());
        }
        let rec = &rec;
        enc.push_row(
            |f| Cell::Text(rec.get(f).unwrap_or_default().trim_ascii()),
            at,
        )?;
        rows += 1;
        if chunk_rows.is_some_and(|c| rows % c == 0) {
            sink(enc.take_chunk()?)?;
        }
    }
    match chunk_rows {
        None => sink(enc.finish(header_at)?),
        Some(_) if enc.read() == 0 => Err(DataError::NoDataRows {
            source_name: src(),
            at: header_at,
        }
        .into()),
        Some(_) if enc.rows() == 0 => Err(DataError::EmptyCohort {
            source_name: src(),
            cohort: schema.cohort.clone().unwrap_or_default(),
            rows: enc.read(),
        }
        .into()),
        Some(c) if rows % c != 0 => sink(enc.take_chunk()?),
        Some(_) => Ok(()),
    }
}

/// A CSV reader's error as a [`DataError`] of `source_name` at `at`: an I/O failure as such,
/// anything else as malformed CSV there.
pub(crate) fn csv_error(e: csv::Error, source_name: &str, at: At) -> DataError {
    if e.is_io_error() {
        DataError::Io {
            source_name: source_name.to_string(),
            source: e.into(),
        }
    } else {
        DataError::Csv {
            source_name: source_name.to_string(),
            at,
            source: e,
        }
    }
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
