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
