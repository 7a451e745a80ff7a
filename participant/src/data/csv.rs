//! Reading a CSV file by its schema into a [`Table`]: one pass, errors naming file, line
//! and column.

use std::collections::HashMap;
use std::path::Path;

use fedsilo_ml::table::Table;
use ndarray::Array2;

use super::schema::{FeatureKind, FeatureSpec, Schema};
use super::DataError;

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
    read_into(file, &source_name, schema, None, mode, sink)
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

/// One table for the whole file, or chunks of a given size.
#[derive(Clone, Copy)]
enum Mode {
    Whole,
    Chunks { rows: usize, labels: Labels },
}

fn read<R: std::io::Read>(
    reader: R,
    source_name: &str,
    schema: &Schema,
    size_hint: Option<u64>,
) -> Result<Table, DataError> {
    let mut table = None;
    read_into(
        reader,
        source_name,
        schema,
        size_hint,
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

fn read_into<R: std::io::Read, E: From<DataError>>(
    reader: R,
    source_name: &str,
    schema: &Schema,
    size_hint: Option<u64>,
    mode: Mode,
    sink: &mut dyn FnMut(Table) -> Result<(), E>,
) -> Result<usize, E> {
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
    let header = rdr.byte_headers().map_err(|e| csv_err(e, 1))?.clone();
    if header.is_empty() {
        return Err(DataError::EmptyFile { source_name: src() }.into());
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
            }
            .into());
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
    let lenient = matches!(
        mode,
        Mode::Chunks {
            labels: Labels::IfPresent,
            ..
        }
    );
    let mut kept_labels = Vec::with_capacity(schema.labels.len());
    let mut label_fields = Vec::with_capacity(schema.labels.len());
    for l in &schema.labels {
        match index.get(&l.column) {
            None if lenient => continue,
            Some(&field) => label_fields.push(field),
            None => label_fields.push(find(&l.column, "label")?),
        }
        kept_labels.push(l);
    }
    let label_names: Vec<String> = kept_labels.iter().map(|l| l.column.clone()).collect();
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
    let n_labels = kept_labels.len();
    let chunk_rows = match mode {
        Mode::Whole => None,
        Mode::Chunks { rows, .. } => Some(rows),
    };
    let feature_names = schema.feature_columns();
    let emit = |x: &mut Vec<f32>, y: &mut Vec<f32>, ids: &mut Vec<String>| {
        let rows = ids.len();
        let x = Array2::from_shape_vec((rows, width), std::mem::take(x))
            .expect("every row wrote exactly `width` values");
        let labels = Array2::from_shape_vec((rows, n_labels), std::mem::take(y))
            .expect("every row wrote exactly one value per label");
        Table {
            feature_names: feature_names.clone(),
            x,
            label_names: label_names.clone(),
            labels,
            ids: std::mem::take(ids),
        }
    };
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
        if x.is_empty() {
            // Size the buffers from the chunk size, or the file size and the first row's length.
            if let Some(est) = chunk_rows {
                x.reserve(est.saturating_mul(width));
                y.reserve(est.saturating_mul(n_labels));
                ids.reserve(est);
            } else if let Some(total) = size_hint {
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
            }
            .into());
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
                        }
                        .into());
                    };
                    row[out + k] = 1.0;
                }
            }
        }
        for (li, (l, &field)) in kept_labels.iter().zip(&label_fields).enumerate() {
            let cell = &rec[field];
            if is_missing(cell) && lenient {
                y.push(f32::NAN);
                continue;
            }
            if is_missing(cell) {
                return Err(DataError::MissingLabel {
                    source_name: src(),
                    line,
                    column: l.column.clone(),
                }
                .into());
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
                    }
                    .into());
                }
                String::from_utf8_lossy(cell).into_owned()
            }
            None => (rows + 1).to_string(),
        });
        rows += 1;
        if chunk_rows.is_some_and(|c| ids.len() >= c) {
            sink(emit(&mut x, &mut y, &mut ids))?;
        }
    }
    if rows == 0 {
        return Err(DataError::NoDataRows {
            source_name: src(),
            line: header_line,
        }
        .into());
    }
    let table = emit(&mut x, &mut y, &mut ids);
    if chunk_rows.is_some() {
        if table.n_rows() > 0 {
            sink(table)?;
        }
        tracing::debug!(source = source_name, rows, columns = width, "streamed CSV");
        return Ok(rows);
    }
    for ((l, (neg, pos)), seen) in kept_labels
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
            }
            .into());
        }
    }
    tracing::debug!(source = source_name, rows, columns = width, "loaded CSV");
    sink(table)?;
    Ok(rows)
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
