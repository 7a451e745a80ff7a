//! A Parquet file as a [`Table`]: only the schema's columns are read (a projection), row
//! group by row group, each row encoded as it is decoded. Columns must be flat (no groups or
//! lists); their Parquet types are checked against the schema before any row is read.

use std::path::Path;
use std::sync::Arc;

use fedsilo_ml::table::Table;
use parquet::basic::{ConvertedType, LogicalType, Repetition, Type as PhysicalType};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::ByteArray;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;

use super::encode::{Cell, Chunk, Encoder};
use super::schema::{FeatureKind, LabelRule, Schema};
use super::{At, DataError, Labels};

/// What the schema reads a column as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Number,
    /// Categories, booleans, labels and ids: text, integers or booleans.
    Value,
}

impl Role {
    fn expected(self) -> &'static str {
        match self {
            Role::Number => "a numeric feature (Parquet INT32, INT64, FLOAT, DOUBLE or DECIMAL)",
            Role::Value => {
                "text, integers or booleans (Parquet BYTE_ARRAY strings, INT32, INT64, BOOLEAN)"
            }
        }
    }
}

/// A Parquet column's type as messages show it: `BYTE_ARRAY (String)`, `INT32 (Date)`.
pub(crate) fn type_name(t: &Type) -> String {
    if t.is_group() {
        return "nested (group/list/map)".into();
    }
    let info = t.get_basic_info();
    match (info.logical_type_ref(), info.converted_type()) {
        (Some(l), _) => format!("{} ({l:?})", t.get_physical_type()),
        (None, ConvertedType::NONE) => t.get_physical_type().to_string(),
        (None, c) => format!("{} ({c})", t.get_physical_type()),
    }
}

fn is_decimal(t: &Type) -> bool {
    let info = t.get_basic_info();
    matches!(info.logical_type_ref(), Some(LogicalType::Decimal { .. }))
        || info.converted_type() == ConvertedType::DECIMAL
}

/// Whether a column of type `t` can be read as `role`.
fn compatible(t: &Type, role: Role) -> bool {
    if t.is_group() {
        return false;
    }
    let info = t.get_basic_info();
    // Dates, times and timestamps are integers underneath; none is a feature as such.
    let temporal = matches!(
        info.logical_type_ref(),
        Some(LogicalType::Date | LogicalType::Time { .. } | LogicalType::Timestamp { .. })
    ) || matches!(
        info.converted_type(),
        ConvertedType::DATE
            | ConvertedType::TIME_MILLIS
            | ConvertedType::TIME_MICROS
            | ConvertedType::TIMESTAMP_MILLIS
            | ConvertedType::TIMESTAMP_MICROS
            | ConvertedType::INTERVAL
    );
    if temporal {
        return false;
    }
    let float16 = matches!(info.logical_type_ref(), Some(LogicalType::Float16));
    match (t.get_physical_type(), role) {
        (PhysicalType::INT32 | PhysicalType::INT64, _) => true,
        (PhysicalType::FLOAT | PhysicalType::DOUBLE, _) => true,
        (PhysicalType::BYTE_ARRAY | PhysicalType::FIXED_LEN_BYTE_ARRAY, Role::Number) => {
            is_decimal(t) || float16
        }
        (PhysicalType::BYTE_ARRAY, Role::Value) => !is_decimal(t),
        (PhysicalType::BOOLEAN, Role::Value) => true,
        (PhysicalType::BOOLEAN, Role::Number) => false,
        (PhysicalType::FIXED_LEN_BYTE_ARRAY, Role::Value) => false,
        (PhysicalType::INT96, _) => false,
    }
}

/// The value of a decimal (big-endian two's complement, `scale` digits after the point).
fn decimal_value(d: &parquet::data_type::Decimal) -> Option<f64> {
    let bytes = d.data();
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut buf = if negative { [0xffu8; 16] } else { [0u8; 16] };
    let start = 16 - bytes.len();
    buf.get_mut(start..)?.copy_from_slice(bytes);
    let v = i128::from_be_bytes(buf) as f64;
    Some(v / 10f64.powi(d.scale()))
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// Whether a column can be read at all (as a number or as a value).
pub(crate) fn readable(t: &Type) -> bool {
    compatible(t, Role::Number) || compatible(t, Role::Value)
}

/// One decoded field as a cell; `None` for a kind the type check should have refused.
pub(crate) fn cell(f: &Field) -> Option<Cell<'_>> {
    Some(match f {
        Field::Null => Cell::Null,
        Field::Bool(b) => Cell::Bool(*b),
        Field::Byte(v) => Cell::Integer(i64::from(*v)),
        Field::Short(v) => Cell::Integer(i64::from(*v)),
        Field::Int(v) => Cell::Integer(i64::from(*v)),
        Field::Long(v) => Cell::Integer(*v),
        Field::UByte(v) => Cell::Integer(i64::from(*v)),
        Field::UShort(v) => Cell::Integer(i64::from(*v)),
        Field::UInt(v) => Cell::Integer(i64::from(*v)),
        Field::ULong(v) => match i64::try_from(*v) {
            Ok(v) => Cell::Integer(v),
            Err(_) => Cell::Number(*v as f64),
        },
        Field::Float16(v) => Cell::Number(f64::from(*v)),
        Field::Float(v) => Cell::Number(f64::from(*v)),
        Field::Double(v) => Cell::Number(*v),
        Field::Decimal(d) => Cell::Number(decimal_value(d)?),
        Field::Str(s) => Cell::Text(trim(s.as_bytes())),
        Field::Bytes(b) => Cell::Text(trim(b.data())),
        _ => return None,
    })
}

/// A flat column the column API decodes as the record API would convert it.
#[derive(Clone, Copy, Debug)]
enum Plain {
    Bool,
    I32,
    I64,
    F32,
    F64,
    /// BYTE_ARRAY without a logical type: bytes.
    Bytes,
    /// BYTE_ARRAY UTF8 strings: checked to be UTF-8, as the record API checks them.
    Utf8,
}

/// The plain kind of a column, or `None` for one the record API must convert (nested,
/// repeated, decimals, unsigned or narrow integers, dates, JSON, …).
fn plain(t: &Type) -> Option<Plain> {
    if t.is_group() {
        return None;
    }
    let info = t.get_basic_info();
    if info.has_repetition() && info.repetition() == Repetition::REPEATED {
        return None;
    }
    let bare = info.logical_type_ref().is_none() && info.converted_type() == ConvertedType::NONE;
    match t.get_physical_type() {
        PhysicalType::BOOLEAN if bare => Some(Plain::Bool),
        PhysicalType::INT32 if bare => Some(Plain::I32),
        PhysicalType::INT64 if bare => Some(Plain::I64),
        PhysicalType::FLOAT if bare => Some(Plain::F32),
        PhysicalType::DOUBLE if bare => Some(Plain::F64),
        PhysicalType::BYTE_ARRAY if bare => Some(Plain::Bytes),
        PhysicalType::BYTE_ARRAY => match (info.logical_type_ref(), info.converted_type()) {
            (Some(LogicalType::String), _) | (None, ConvertedType::UTF8) => Some(Plain::Utf8),
            _ => None,
        },
        _ => None,
    }
}

/// The decoded values of one batch of a plain column.
enum PlainValues {
    Bool(Vec<bool>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<ByteArray>),
}

/// One plain column of a row group, read a batch at a time.
struct PlainColumn {
    reader: ColumnReader,
    kind: Plain,
    optional: bool,
    defs: Vec<i16>,
    values: PlainValues,
}

impl PlainColumn {
    fn new(reader: ColumnReader, kind: Plain, optional: bool) -> PlainColumn {
        let values = match kind {
            Plain::Bool => PlainValues::Bool(Vec::new()),
            Plain::I32 => PlainValues::I32(Vec::new()),
            Plain::I64 => PlainValues::I64(Vec::new()),
            Plain::F32 => PlainValues::F32(Vec::new()),
            Plain::F64 => PlainValues::F64(Vec::new()),
            Plain::Bytes | Plain::Utf8 => PlainValues::Bytes(Vec::new()),
        };
        PlainColumn {
            reader,
            kind,
            optional,
            defs: Vec::new(),
            values,
        }
    }

    /// Decodes the next `rows` rows (fewer at the end of the group); returns how many.
    fn read(&mut self, rows: usize) -> Result<usize, parquet::errors::ParquetError> {
        fn batch<T: parquet::data_type::DataType>(
            r: &mut ColumnReaderImpl<T>,
            rows: usize,
            defs: Option<&mut Vec<i16>>,
            values: &mut Vec<T::T>,
        ) -> Result<usize, parquet::errors::ParquetError> {
            values.clear();
            let (records, _, _) = r.read_records(rows, defs, None, values)?;
            Ok(records)
        }
        self.defs.clear();
        let defs = if self.optional {
            Some(&mut self.defs)
        } else {
            None
        };
        let got = match (&mut self.reader, &mut self.values) {
            (ColumnReader::BoolColumnReader(r), PlainValues::Bool(v)) => batch(r, rows, defs, v)?,
            (ColumnReader::Int32ColumnReader(r), PlainValues::I32(v)) => batch(r, rows, defs, v)?,
            (ColumnReader::Int64ColumnReader(r), PlainValues::I64(v)) => batch(r, rows, defs, v)?,
            (ColumnReader::FloatColumnReader(r), PlainValues::F32(v)) => batch(r, rows, defs, v)?,
            (ColumnReader::DoubleColumnReader(r), PlainValues::F64(v)) => batch(r, rows, defs, v)?,
            (ColumnReader::ByteArrayColumnReader(r), PlainValues::Bytes(v)) => {
                batch(r, rows, defs, v)?
            }
            _ => {
                return Err(parquet::errors::ParquetError::General(
                    "column reader of another physical type than the column".into(),
                ))
            }
        };
        if let (Plain::Utf8, PlainValues::Bytes(v)) = (self.kind, &self.values) {
            if v.iter().any(|b| std::str::from_utf8(b.data()).is_err()) {
                return Err(parquet::errors::ParquetError::General(
                    "a UTF8 string column holds bytes that are not UTF-8".into(),
                ));
            }
        }
        Ok(got)
    }

    /// Whether the column holds numbers [`PlainColumn::write_numbers`] writes.
    fn holds_numbers(&self) -> bool {
        matches!(
            self.values,
            PlainValues::I32(_) | PlainValues::I64(_) | PlainValues::F32(_) | PlainValues::F64(_)
        )
    }

    /// Writes rows `r0 .. r0 + n` of the batch as column `col` of `rows` (row-major, `width`
    /// wide; a NULL left as it is, `NaN`), from value `*next` on (advanced past the present
    /// values): each as the encoder reads [`Cell::Number`] / [`Cell::Integer`]. `false` when
    /// a value is not finite (the row path then names it) or the batch is short.
    fn write_numbers(
        &self,
        r0: usize,
        n: usize,
        next: &mut usize,
        rows: &mut [f32],
        width: usize,
        col: usize,
    ) -> bool {
        fn scatter<T: Copy>(
            defs: Option<&[i16]>,
            values: &[T],
            (r0, n): (usize, usize),
            next: &mut usize,
            (rows, width, col): (&mut [f32], usize, usize),
            as_f32: impl Fn(T) -> f32,
        ) -> bool {
            let Some(mut values) = values.get(*next..) else {
                return false;
            };
            let defs = defs.map(|d| d.get(r0..r0 + n).unwrap_or_default());
            if defs.is_some_and(|d| d.len() != n) {
                return false;
            }
            for (r, row) in rows.chunks_exact_mut(width.max(1)).take(n).enumerate() {
                if defs.is_some_and(|d| d.get(r) != Some(&1)) {
                    continue;
                }
                let Some((&x, rest)) = values.split_first() else {
                    return false;
                };
                values = rest;
                *next += 1;
                let v = as_f32(x);
                if !v.is_finite() {
                    return false;
                }
                if let Some(slot) = row.get_mut(col) {
                    *slot = v;
                }
            }
            true
        }
        let defs = self.optional.then_some(self.defs.as_slice());
        let at = (r0, n);
        let out = (rows, width, col);
        match &self.values {
            // f64 → f32 as `Cell::Number`'s reading; integers as `Cell::Integer`'s.
            PlainValues::F64(v) => scatter(defs, v, at, next, out, |x| x as f32),
            PlainValues::F32(v) => scatter(defs, v, at, next, out, |x| x),
            PlainValues::I32(v) => scatter(defs, v, at, next, out, |x| i64::from(x) as f32),
            PlainValues::I64(v) => scatter(defs, v, at, next, out, |x| x as f32),
            PlainValues::Bool(_) | PlainValues::Bytes(_) => false,
        }
    }

    /// Row `r`'s cell of the batch; `next` is this column's next unread value (advanced
    /// past a present value).
    fn cell(&self, r: usize, next: &mut usize) -> Cell<'_> {
        if self.optional && self.defs.get(r) != Some(&1) {
            return Cell::Null;
        }
        let i = *next;
        *next += 1;
        let cell = match &self.values {
            PlainValues::Bool(v) => v.get(i).map(|&b| Cell::Bool(b)),
            PlainValues::I32(v) => v.get(i).map(|&x| Cell::Integer(i64::from(x))),
            PlainValues::I64(v) => v.get(i).map(|&x| Cell::Integer(x)),
            PlainValues::F32(v) => v.get(i).map(|&x| Cell::Number(f64::from(x))),
            PlainValues::F64(v) => v.get(i).map(|&x| Cell::Number(x)),
            PlainValues::Bytes(v) => v.get(i).map(|b| Cell::Text(trim(b.data()))),
        };
        cell.unwrap_or(Cell::Null)
    }
}

/// Loads a Parquet file by `schema`. Errors name the file, the row group and the row (1-based
/// within its group), and the column.
pub fn load_parquet(path: &Path, schema: &Schema) -> Result<Table, DataError> {
    let mut table = None;
    read_parquet(path, schema, None, Labels::Required, &mut |c: Chunk| {
        table = Some(c.into_table());
        Ok::<(), DataError>(())
    })?;
    table.ok_or_else(|| DataError::Internal {
        source_name: path.display().to_string(),
        what: "no table after reading",
    })
}

/// Streams a Parquet file by `schema` in chunks of at most `chunk_rows` rows (at least one),
/// as [`super::load_csv_chunks`] streams a CSV file: `sink` gets each chunk in file order, the
/// row count is returned, memory is one chunk (plus the reader's current page per column).
/// With [`Labels::IfPresent`] a label column absent from the file is left out and a NULL
/// label is `NaN`.
pub fn load_parquet_chunks<E: From<DataError>>(
    path: &Path,
    schema: &Schema,
    chunk_rows: usize,
    labels: Labels,
    sink: &mut dyn FnMut(Table) -> Result<(), E>,
) -> Result<usize, E> {
    load_parquet_chunk_ids(path, schema, chunk_rows, labels, &mut |c| {
        sink(c.into_table())
    })
}

/// [`load_parquet_chunks`] with each chunk's ids in one buffer ([`Chunk::ids`]): no string
/// per row.
pub(crate) fn load_parquet_chunk_ids<E: From<DataError>>(
    path: &Path,
    schema: &Schema,
    chunk_rows: usize,
    labels: Labels,
    sink: &mut dyn FnMut(Chunk) -> Result<(), E>,
) -> Result<usize, E> {
    let mut rows = 0;
    read_parquet(path, schema, Some(chunk_rows.max(1)), labels, &mut |c| {
        rows += c.n_rows();
        sink(c)
    })?;
    Ok(rows)
}

/// The reading loop of both: the whole table (`chunk_rows = None`, checked by
/// [`Encoder::finish`]) or chunks.
fn read_parquet<E: From<DataError>>(
    path: &Path,
    schema: &Schema,
    chunk_rows: Option<usize>,
    labels: Labels,
    sink: &mut dyn FnMut(Chunk) -> Result<(), E>,
) -> Result<(), E> {
    let source_name = path.display().to_string();
    let src = || source_name.clone();
    let pq = |at: At| {
        let s = src();
        move |source| DataError::Parquet {
            source_name: s,
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
    let root = meta.file_metadata().schema();
    let fields = root.get_fields();

    // The columns the schema reads, each once, in schema order (id, labels, features).
    let mut wanted: Vec<(&str, Role, &'static str)> = Vec::new();
    if let Some(id) = &schema.id_column {
        wanted.push((id, Role::Value, "id"));
    }
    for l in &schema.labels {
        if let LabelRule::Positive(_) = l.rule {
            if labels == Labels::IfPresent && !fields.iter().any(|t| t.name() == l.column) {
                continue;
            }
            wanted.push((&l.column, Role::Value, "label"));
        }
    }
    let specs = (schema.features.iter().map(|f| (f, "feature")))
        .chain(schema.inputs.iter().map(|f| (f, "input")));
    for (f, what) in specs {
        let role = match f.kind {
            FeatureKind::Numeric => Role::Number,
            FeatureKind::Categorical { .. } | FeatureKind::Boolean => Role::Value,
        };
        wanted.push((&f.name, role, what));
    }
    let mut projected: Vec<Arc<Type>> = Vec::with_capacity(wanted.len());
    let mut names: Vec<String> = Vec::with_capacity(wanted.len());
    for (name, role, what) in wanted {
        let Some(t) = fields.iter().find(|t| t.name() == name) else {
            return Err(DataError::MissingColumn {
                source_name: src(),
                at: At::Nowhere,
                role: what,
                column: name.to_string(),
                similar: fields
                    .iter()
                    .find(|t| t.name().eq_ignore_ascii_case(name))
                    .map(|t| format!(" (there is '{}': names are case-sensitive)", t.name()))
                    .unwrap_or_default(),
                hint: None,
            }
            .into());
        };
        if !compatible(t, role) {
            return Err(DataError::ColumnType {
                source_name: src(),
                column: name.to_string(),
                found: type_name(t),
                expected: role.expected(),
            }
            .into());
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
            projected.push(t.clone());
        }
    }
    let projection = Type::group_type_builder(root.name())
        .with_fields(projected.clone())
        .build()
        .map_err(pq(At::Nowhere))?;

    let mut enc = match labels {
        Labels::Required => Encoder::new(schema, &source_name, &names, At::Nowhere, &|| None)?,
        Labels::IfPresent => {
            Encoder::with_labels(schema, &source_name, &names, At::Nowhere, &|| None, labels)?
        }
    };
    let total = usize::try_from(meta.file_metadata().num_rows()).unwrap_or(0);
    enc.reserve(chunk_rows.unwrap_or(total).min(total));
    let mut pending = 0usize;
    // Plain flat columns (numbers, strings, booleans without a logical type that changes their
    // meaning) are decoded column by column in batches; anything else goes through the
    // record API below, which converts every type.
    let leaves = meta.file_metadata().schema_descr();
    let plain_columns: Option<Vec<(usize, Plain)>> = names
        .iter()
        .zip(&projected)
        .map(|(name, t)| {
            let leaf = leaves.columns().iter().position(|c| {
                c.path().parts().len() == 1 && c.path().parts().first() == Some(name)
            })?;
            Some((leaf, plain(t)?))
        })
        .collect();
    // An all-numeric schema without labels, inputs or expressions is encoded column by
    // column (the usual scoring file).
    let numeric = enc.numeric_columns();
    let id_field = enc.id_field();
    if let Some(plain_columns) = &plain_columns {
        let batch = chunk_rows.unwrap_or(1 << 16).clamp(1, 1 << 16);
        for g in 0..meta.num_row_groups() {
            let group_at = At::Row {
                group: Some(g),
                row: 0,
            };
            let rg = reader.get_row_group(g).map_err(pq(group_at))?;
            let group_rows = usize::try_from(rg.metadata().num_rows()).unwrap_or(0);
            let mut cols = Vec::with_capacity(plain_columns.len());
            for &(leaf, kind) in plain_columns {
                let reader = rg.get_column_reader(leaf).map_err(pq(group_at))?;
                let optional = leaves.column(leaf).max_def_level() > 0;
                cols.push(PlainColumn::new(reader, kind, optional));
            }
            let mut done = 0usize;
            while done < group_rows {
                let mut fast_from = 0usize;
                let want = batch.min(group_rows - done);
                let batch_at = At::Row {
                    group: Some(g),
                    row: done as u64 + 1,
                };
                for c in &mut cols {
                    let got = c.read(want).map_err(pq(batch_at))?;
                    if got != want {
                        return Err(DataError::Internal {
                            source_name: src(),
                            what: "a column of a row group has fewer rows than the group",
                        }
                        .into());
                    }
                }
                let mut next = vec![0usize; cols.len()];
                if let Some(numeric) = &numeric {
                    // Column by column, in pieces that end where a chunk does; a piece with a
                    // cell the fast path refuses is pushed row by row below (exact errors).
                    let mut r0 = 0;
                    while r0 < want {
                        let piece = match chunk_rows {
                            Some(c) if c > pending => (c - pending).min(want - r0),
                            _ => want - r0,
                        };
                        let saved = next.clone();
                        let fields = numeric.iter().map(|&(f, _)| f);
                        let mut field_next: Vec<(usize, usize)> = fields
                            .map(|f| (f, next.get(f).copied().unwrap_or(0)))
                            .collect();
                        let mut id_next = id_field.and_then(|f| next.get(f).copied()).unwrap_or(0);
                        let id_cell = |r: usize, id_next: &mut usize| match id_field
                            .and_then(|f| cols.get(f))
                        {
                            Some(c) => c.cell(r0 + r, id_next),
                            None => Cell::Null,
                        };
                        let all_numbers = field_next
                            .iter()
                            .all(|&(f, _)| cols.get(f).is_some_and(PlainColumn::holds_numbers));
                        let done_fast = if all_numbers {
                            // Each column's values written straight into the rows.
                            let cols = &cols;
                            let field_next = &mut field_next;
                            // In blocks of rows that stay in the cache while every
                            // column writes its cells into them (column after column over a
                            // whole chunk streamed the chunk through the cache once per
                            // column).
                            const BLOCK: usize = 256;
                            enc.push_numeric_batch(
                                piece,
                                |rows, width| {
                                    let mut b0 = 0;
                                    while b0 < piece {
                                        let bn = (piece - b0).min(BLOCK);
                                        let Some(block) =
                                            rows.get_mut(b0 * width..(b0 + bn) * width)
                                        else {
                                            return false;
                                        };
                                        let ok = field_next.iter_mut().zip(numeric).all(
                                            |((f, i), &(_, out))| {
                                                cols.get(*f).is_some_and(|c| {
                                                    c.write_numbers(
                                                        r0 + b0,
                                                        bn,
                                                        i,
                                                        block,
                                                        width,
                                                        out,
                                                    )
                                                })
                                            },
                                        );
                                        if !ok {
                                            return false;
                                        }
                                        b0 += bn;
                                    }
                                    true
                                },
                                |r| id_cell(r, &mut id_next),
                            )
                        } else {
                            enc.push_numeric_rows(
                                piece,
                                numeric,
                                |k, r| match field_next.get_mut(k) {
                                    Some((f, i)) => {
                                        cols.get(*f).map_or(Cell::Null, |c| c.cell(r0 + r, i))
                                    }
                                    None => Cell::Null,
                                },
                                |r| id_cell(r, &mut id_next),
                            )
                        };
                        if !done_fast {
                            next = saved;
                            break;
                        }
                        for (f, i) in field_next {
                            if let Some(n) = next.get_mut(f) {
                                *n = i;
                            }
                        }
                        if let Some(n) = id_field.and_then(|f| next.get_mut(f)) {
                            *n = id_next;
                        }
                        r0 += piece;
                        if let Some(c) = chunk_rows {
                            pending += piece;
                            if pending == c {
                                pending = 0;
                                sink(enc.take_chunk_ids()?)?;
                                enc.reserve(c);
                            }
                        }
                    }
                    if r0 == want {
                        done += want;
                        continue;
                    }
                    fast_from = r0;
                }
                let mut cells: Vec<Cell<'_>> = Vec::with_capacity(cols.len());
                for r in fast_from..want {
                    let at = At::Row {
                        group: Some(g),
                        row: (done + r) as u64 + 1,
                    };
                    cells.clear();
                    for (c, i) in cols.iter().zip(next.iter_mut()) {
                        cells.push(c.cell(r, i));
                    }
                    let cells = &cells;
                    enc.push_row(|f| cells.get(f).copied().unwrap_or(Cell::Null), at)?;
                    if let Some(c) = chunk_rows {
                        pending += 1;
                        if pending == c {
                            pending = 0;
                            sink(enc.take_chunk_ids()?)?;
                            enc.reserve(c);
                        }
                    }
                }
                done += want;
            }
        }
    }
    // Row position of each projected column (the reader may order them its own way).
    let mut order: Vec<usize> = (0..names.len()).collect();
    let record_groups = if plain_columns.is_some() {
        0
    } else {
        meta.num_row_groups()
    };
    for g in 0..record_groups {
        let group_at = At::Row {
            group: Some(g),
            row: 0,
        };
        let rg = reader.get_row_group(g).map_err(pq(group_at))?;
        let rows = rg
            .get_row_iter(Some(projection.clone()))
            .map_err(pq(group_at))?;
        for (r, row) in rows.enumerate() {
            let at = At::Row {
                group: Some(g),
                row: r as u64 + 1,
            };
            let row = row.map_err(pq(at))?;
            if r == 0 {
                let row_names: Vec<&String> = row.get_column_iter().map(|(n, _)| n).collect();
                for (k, name) in names.iter().enumerate() {
                    let pos = row_names.iter().position(|n| *n == name).ok_or_else(|| {
                        DataError::Internal {
                            source_name: src(),
                            what: "a projected column is missing from a decoded row",
                        }
                    })?;
                    if let Some(o) = order.get_mut(k) {
                        *o = pos;
                    }
                }
            }
            let mut cells: Vec<Cell<'_>> = Vec::with_capacity(names.len());
            for (k, (_, field)) in row.get_column_iter().enumerate() {
                let c = cell(field).ok_or_else(|| DataError::ColumnType {
                    source_name: src(),
                    column: names.get(k).cloned().unwrap_or_default(),
                    found: format!("{field:?}"),
                    expected: "a flat column",
                })?;
                cells.push(c);
            }
            let cells = &cells;
            let order = &order;
            enc.push_row(
                |f| {
                    order
                        .get(f)
                        .and_then(|&p| cells.get(p))
                        .copied()
                        .unwrap_or(Cell::Null)
                },
                at,
            )?;
            if let Some(c) = chunk_rows {
                pending += 1;
                if pending == c {
                    pending = 0;
                    sink(enc.take_chunk_ids()?)?;
                    enc.reserve(c);
                }
            }
        }
    }
    match chunk_rows {
        None => sink(Chunk::from_table(enc.finish(At::Nowhere)?)),
        Some(_) if enc.rows() == 0 => Err(DataError::NoDataRows {
            source_name: src(),
            at: At::Nowhere,
        }
        .into()),
        Some(_) if pending > 0 => sink(enc.take_chunk_ids()?),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `groups` as a Parquet file: `id` UTF8, `a` optional DOUBLE, `b` INT64, `c`
    /// optional UTF8 (numbers as text); `None` = NULL.
    #[allow(clippy::type_complexity)]
    fn numeric_file(path: &Path, groups: &[Vec<(String, Option<f64>, i64, Option<&str>)>]) {
        use parquet::basic::{LogicalType, Type as Physical};
        use parquet::data_type::{ByteArrayType, DoubleType, Int64Type};
        use parquet::file::writer::SerializedFileWriter;
        let col = |name: &str, t: Physical, rep: Repetition, utf8: bool| {
            let b = Type::primitive_type_builder(name, t).with_repetition(rep);
            let b = if utf8 {
                b.with_logical_type(Some(LogicalType::String))
            } else {
                b
            };
            Arc::new(b.build().unwrap())
        };
        let schema = Type::group_type_builder("rows")
            .with_fields(vec![
                col("id", Physical::BYTE_ARRAY, Repetition::REQUIRED, true),
                col("a", Physical::DOUBLE, Repetition::OPTIONAL, false),
                col("b", Physical::INT64, Repetition::REQUIRED, false),
                col("c", Physical::BYTE_ARRAY, Repetition::OPTIONAL, true),
            ])
            .build()
            .unwrap();
        let file = std::fs::File::create(path).unwrap();
        let mut w = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(Default::default()))
            .unwrap();
        for g in groups {
            let mut rg = w.next_row_group().unwrap();
            let ids: Vec<ByteArray> = g.iter().map(|r| r.0.as_str().into()).collect();
            let a: Vec<f64> = g.iter().filter_map(|r| r.1).collect();
            let a_defs: Vec<i16> = g.iter().map(|r| i16::from(r.1.is_some())).collect();
            let b: Vec<i64> = g.iter().map(|r| r.2).collect();
            let c: Vec<ByteArray> = g.iter().filter_map(|r| r.3).map(ByteArray::from).collect();
            let c_defs: Vec<i16> = g.iter().map(|r| i16::from(r.3.is_some())).collect();
            let mut cw = rg.next_column().unwrap().unwrap();
            cw.typed::<ByteArrayType>()
                .write_batch(&ids, None, None)
                .unwrap();
            cw.close().unwrap();
            let mut cw = rg.next_column().unwrap().unwrap();
            cw.typed::<DoubleType>()
                .write_batch(&a, Some(&a_defs), None)
                .unwrap();
            cw.close().unwrap();
            let mut cw = rg.next_column().unwrap().unwrap();
            cw.typed::<Int64Type>().write_batch(&b, None, None).unwrap();
            cw.close().unwrap();
            let mut cw = rg.next_column().unwrap().unwrap();
            cw.typed::<ByteArrayType>()
                .write_batch(&c, Some(&c_defs), None)
                .unwrap();
            cw.close().unwrap();
            rg.close().unwrap();
        }
        w.close().unwrap();
    }

    /// An all-numeric schema is encoded column by column (in pieces cut at chunk ends, over
    /// row groups of other sizes): the same ids and values, NULL and missing tokens as NaN,
    /// as the row-by-row encoder gives; a bad cell is still reported at its own row.
    #[test]
    fn numeric_columns_are_encoded_as_row_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        let mut groups = Vec::new();
        let mut want: Vec<(String, [f32; 2])> = Vec::new();
        let mut k = 0i64;
        for size in [5usize, 13, 1, 9] {
            let mut g = Vec::new();
            for _ in 0..size {
                let a = (k % 4 != 1).then_some(k as f64 / 4.0);
                let c = match k % 5 {
                    0 => None,
                    1 => Some("NA"),
                    2 => Some(" 2.5 "),
                    3 => Some("-7"),
                    _ => Some(""),
                };
                want.push((
                    format!("r{k}"),
                    [a.map_or(f32::NAN, |v| v as f32), (k * 3) as f32],
                ));
                g.push((format!("r{k}"), a, k * 3, c));
                k += 1;
            }
            groups.push(g);
        }
        numeric_file(&path, &groups);
        let schema = Schema::from_toml_str(
            "id_column = \"id\"\nmissing = [\"NA\"]\nfeatures = [\n  { name = \"a\", type = \"numeric\" },\n  { name = \"b\", type = \"numeric\" },\n]\n",
        )
        .unwrap();
        for chunk in [1usize, 4, 7, 100] {
            let mut got: Vec<(String, Vec<f32>)> = Vec::new();
            let mut sizes = Vec::new();
            let rows =
                load_parquet_chunks(&path, &schema, chunk, Labels::IfPresent, &mut |t: Table| {
                    sizes.push(t.ids.len());
                    for (id, row) in t.ids.iter().zip(t.x.rows()) {
                        got.push((id.clone(), row.to_vec()));
                    }
                    Ok::<(), DataError>(())
                })
                .unwrap();
            assert_eq!(rows, want.len());
            assert!(sizes.iter().rev().skip(1).all(|&s| s == chunk), "{sizes:?}");
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for ((gid, gv), (wid, wv)) in got.iter().zip(&want) {
                assert_eq!((gid, bits(gv)), (wid, bits(wv)), "chunk {chunk}");
            }
            assert_eq!(got.len(), want.len());
        }
        // A bad cell in the third group: named at its row, as the row-by-row path names it.
        if let Some(r) = groups.get_mut(2).and_then(|g| g.first_mut()) {
            r.1 = Some(f64::INFINITY);
        }
        numeric_file(&path, &groups);
        let e = load_parquet_chunks(&path, &schema, 4, Labels::IfPresent, &mut |_| {
            Ok::<(), DataError>(())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("row group 2, row 1") && e.contains("'a'"), "{e}");
    }

    #[test]
    fn decimals_read_with_their_scale() {
        let d = parquet::data_type::Decimal::from_i32(-12345, 9, 2);
        assert_eq!(decimal_value(&d), Some(-123.45));
        let d = parquet::data_type::Decimal::from_i64(700, 18, 0);
        assert_eq!(decimal_value(&d), Some(700.0));
    }
}
