//! A Parquet file as a [`Table`]: only the schema's columns are read (a projection), row
//! group by row group, each row encoded as it is decoded. Columns must be flat (no groups or
//! lists); their Parquet types are checked against the schema before any row is read.

use std::path::Path;
use std::sync::Arc;

use fedsilo_ml::table::Table;
use parquet::basic::{ConvertedType, LogicalType, Type as PhysicalType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;

use super::encode::{Cell, Encoder};
use super::schema::{FeatureKind, LabelRule, Schema};
use super::{At, DataError};

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

/// Loads a Parquet file by `schema`. Errors name the file, the row group and the row (1-based
/// within its group), and the column.
pub fn load_parquet(path: &Path, schema: &Schema) -> Result<Table, DataError> {
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
            });
        };
        if !compatible(t, role) {
            return Err(DataError::ColumnType {
                source_name: src(),
                column: name.to_string(),
                found: type_name(t),
                expected: role.expected(),
            });
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
            projected.push(t.clone());
        }
    }
    let projection = Type::group_type_builder(root.name())
        .with_fields(projected)
        .build()
        .map_err(pq(At::Nowhere))?;

    let mut enc = Encoder::new(schema, &source_name, &names, At::Nowhere, &|| None)?;
    let total = usize::try_from(meta.file_metadata().num_rows()).unwrap_or(0);
    enc.reserve(total);
    // Row position of each projected column (the reader may order them its own way).
    let mut order: Vec<usize> = (0..names.len()).collect();
    for g in 0..meta.num_row_groups() {
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
        }
    }
    enc.finish(At::Nowhere)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_read_with_their_scale() {
        let d = parquet::data_type::Decimal::from_i32(-12345, 9, 2);
        assert_eq!(decimal_value(&d), Some(-123.45));
        let d = parquet::data_type::Decimal::from_i64(700, 18, 0);
        assert_eq!(decimal_value(&d), Some(700.0));
    }
}
