//! Writing one ranking: CSV text, or a Parquet file through the crate's column writers
//! (no Arrow), streamed in row groups as the merge hands rows over.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{ByteArray, ByteArrayType, DataType, DoubleType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::types::Type;

use super::sort::Row;
use super::{OutputFormat, ScoreError};

/// Rows per Parquet row group (a few MB of buffered columns).
pub const GROUP_ROWS: usize = 1 << 17;

/// A ranking being written, row by row in rank order.
pub(super) struct RankingWriter {
    path: PathBuf,
    inner: Inner,
}

enum Inner {
    Csv {
        w: BufWriter<File>,
        scorecard: bool,
        line: Vec<u8>,
    },
    Parquet(Box<ParquetRanking>),
}

impl RankingWriter {
    /// Creates `path` and writes the header (CSV) or prepares the schema (Parquet):
    /// `rank, <id_name>, score, decile[, points][, <label>…]`.
    pub(super) fn create(
        format: OutputFormat,
        path: &Path,
        id_name: &str,
        scorecard: bool,
        labels: &[String],
    ) -> Result<RankingWriter, ScoreError> {
        let file = File::create(path).map_err(|source| ScoreError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        let w = BufWriter::with_capacity(1 << 16, file);
        let inner = match format {
            OutputFormat::Csv => {
                let mut header = format!("rank,{},score,decile", csv_field(id_name));
                if scorecard {
                    header.push_str(",points");
                }
                for name in labels {
                    header.push(',');
                    header.push_str(&csv_field(name));
                }
                header.push('\n');
                let mut w = w;
                w.write_all(header.as_bytes())
                    .map_err(|source| ScoreError::Write {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Inner::Csv {
                    w,
                    scorecard,
                    line: Vec::with_capacity(128),
                }
            }
            OutputFormat::Parquet => Inner::Parquet(Box::new(
                ParquetRanking::new(w, id_name, scorecard, labels).map_err(|source| {
                    ScoreError::Parquet {
                        path: path.to_path_buf(),
                        source,
                    }
                })?,
            )),
        };
        Ok(RankingWriter {
            path: path.to_path_buf(),
            inner,
        })
    }

    /// Writes the row of rank `rank` (1-based) in decile `decile`.
    pub(super) fn push(&mut self, rank: usize, row: &Row, decile: usize) -> Result<(), ScoreError> {
        match &mut self.inner {
            Inner::Csv { w, scorecard, line } => {
                line.clear();
                push_decimal(line, rank as u64);
                line.push(b',');
                match std::str::from_utf8(&row.id) {
                    Ok(id) if !needs_quotes(id) => line.extend_from_slice(id.as_bytes()),
                    _ => line
                        .extend_from_slice(csv_field(&String::from_utf8_lossy(&row.id)).as_bytes()),
                }
                line.push(b',');
                push_fixed9(line, row.score);
                line.push(b',');
                push_decimal(line, decile as u64);
                if *scorecard {
                    use std::io::Write as _;
                    let _ = write!(line, ",{:.1}", row.points);
                }
                for v in &row.labels {
                    line.push(b',');
                    if !v.is_nan() {
                        line.push(if *v > 0.5 { b'1' } else { b'0' });
                    }
                }
                line.push(b'\n');
                w.write_all(line).map_err(|source| ScoreError::Write {
                    path: self.path.clone(),
                    source,
                })
            }
            Inner::Parquet(p) => p
                .push(rank, row, decile)
                .map_err(|source| ScoreError::Parquet {
                    path: self.path.clone(),
                    source,
                }),
        }
    }

    /// Flushes the last rows (and the Parquet footer).
    pub(super) fn finish(self) -> Result<(), ScoreError> {
        let path = self.path;
        match self.inner {
            Inner::Csv { mut w, .. } => w
                .flush()
                .map_err(|source| ScoreError::Write { path, source }),
            Inner::Parquet(p) => p
                .finish()
                .map_err(|source| ScoreError::Parquet { path, source }),
        }
    }
}

/// Whether a CSV field must be quoted: it holds a separator, a quote or a line break.
fn needs_quotes(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
}

/// A CSV field, quoted when it holds a separator, a quote or a line break.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if needs_quotes(s) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// Appends `v` in decimal (what `{}` writes).
fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

/// Appends `x` with 9 decimals, exactly what `format!("{x:.9}")` writes: the exact binary
/// value times 10⁹ rounded to the nearest integer, ties to even. Computed in integers for
/// `0 ≤ x < 2³²` (every probability; `−0.0` excluded); any other value through `format!`.
fn push_fixed9(out: &mut Vec<u8>, x: f64) {
    const SCALE: u64 = 1_000_000_000;
    let bits = x.to_bits();
    let biased = (bits >> 52) as u32; // the sign bit is clear on the fast path
    if bits >> 63 != 0 || biased >= 1023 + 32 {
        use std::io::Write as _;
        let _ = write!(out, "{x:.9}");
        return;
    }
    let fraction = bits & ((1 << 52) - 1);
    // x = m · 2^-shift, shift ≥ 1075 − (1023 + 31) = 21.
    let (m, shift) = if biased == 0 {
        (fraction, 1074u32)
    } else {
        (fraction | 1 << 52, 1075 - biased)
    };
    let n = u128::from(m) * u128::from(SCALE); // < 2^83
    let q = if shift >= 100 {
        0 // x · 10⁹ < 2^83 / 2^100: below one half
    } else {
        let q = n >> shift;
        let rest = n & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        if rest > half || (rest == half && q & 1 == 1) {
            q + 1
        } else {
            q
        }
    };
    let q = q as u64; // < 2^32 · 10⁹ + 1
    push_decimal(out, q / SCALE);
    out.push(b'.');
    let mut frac = q % SCALE;
    let mut digits = [b'0'; 9];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.extend_from_slice(&digits);
}

/// The columns of one row group, buffered until [`GROUP_ROWS`] rows are in.
struct ParquetRanking {
    w: SerializedFileWriter<BufWriter<File>>,
    scorecard: bool,
    rank: Vec<i64>,
    id: Vec<ByteArray>,
    score: Vec<f64>,
    decile: Vec<i32>,
    points: Vec<f64>,
    /// Per label: the present values and every row's definition level (1 present, 0 NULL).
    labels: Vec<(Vec<f64>, Vec<i16>)>,
}

impl ParquetRanking {
    fn new(
        w: BufWriter<File>,
        id_name: &str,
        scorecard: bool,
        labels: &[String],
    ) -> Result<ParquetRanking, ParquetError> {
        let column = |name: &str, t: PhysicalType, logical: Option<LogicalType>, r: Repetition| {
            Type::primitive_type_builder(name, t)
                .with_repetition(r)
                .with_logical_type(logical)
                .build()
                .map(Arc::new)
        };
        let mut fields = vec![
            column("rank", PhysicalType::INT64, None, Repetition::REQUIRED)?,
            column(
                id_name,
                PhysicalType::BYTE_ARRAY,
                Some(LogicalType::String),
                Repetition::REQUIRED,
            )?,
            column("score", PhysicalType::DOUBLE, None, Repetition::REQUIRED)?,
            column("decile", PhysicalType::INT32, None, Repetition::REQUIRED)?,
        ];
        if scorecard {
            fields.push(column(
                "points",
                PhysicalType::DOUBLE,
                None,
                Repetition::REQUIRED,
            )?);
        }
        for name in labels {
            fields.push(column(
                name,
                PhysicalType::DOUBLE,
                None,
                Repetition::OPTIONAL,
            )?);
        }
        let schema = Type::group_type_builder("ranking")
            .with_fields(fields)
            .build()?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_size(GROUP_ROWS)
            .set_created_by(format!("fedsilo {}", env!("CARGO_PKG_VERSION")))
            .build();
        let w = SerializedFileWriter::new(w, Arc::new(schema), Arc::new(props))?;
        Ok(ParquetRanking {
            w,
            scorecard,
            rank: Vec::with_capacity(GROUP_ROWS),
            id: Vec::with_capacity(GROUP_ROWS),
            score: Vec::with_capacity(GROUP_ROWS),
            decile: Vec::with_capacity(GROUP_ROWS),
            points: Vec::new(),
            labels: vec![(Vec::new(), Vec::new()); labels.len()],
        })
    }

    fn push(&mut self, rank: usize, row: &Row, decile: usize) -> Result<(), ParquetError> {
        self.rank.push(rank as i64);
        self.id.push(ByteArray::from(row.id.clone()));
        self.score.push(row.score);
        self.decile.push(decile as i32);
        if self.scorecard {
            self.points.push(row.points);
        }
        for ((values, def), v) in self.labels.iter_mut().zip(&row.labels) {
            if v.is_nan() {
                def.push(0);
            } else {
                def.push(1);
                values.push(if *v > 0.5 { 1.0 } else { 0.0 });
            }
        }
        if self.rank.len() >= GROUP_ROWS {
            self.flush_group()?;
        }
        Ok(())
    }

    fn flush_group(&mut self) -> Result<(), ParquetError> {
        if self.rank.is_empty() {
            return Ok(());
        }
        let mut g = self.w.next_row_group()?;
        column::<Int64Type>(&mut g, &self.rank, None)?;
        column::<ByteArrayType>(&mut g, &self.id, None)?;
        column::<DoubleType>(&mut g, &self.score, None)?;
        column::<Int32Type>(&mut g, &self.decile, None)?;
        if self.scorecard {
            column::<DoubleType>(&mut g, &self.points, None)?;
        }
        for (values, def) in &self.labels {
            column::<DoubleType>(&mut g, values, Some(def))?;
        }
        g.close()?;
        self.rank.clear();
        self.id.clear();
        self.score.clear();
        self.decile.clear();
        self.points.clear();
        for (values, def) in &mut self.labels {
            values.clear();
            def.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), ParquetError> {
        self.flush_group()?;
        let mut w = self.w.into_inner()?;
        w.flush()?;
        Ok(())
    }
}

/// Writes the next column of row group `g`.
fn column<T: DataType>(
    g: &mut SerializedRowGroupWriter<'_, BufWriter<File>>,
    values: &[T::T],
    def: Option<&[i16]>,
) -> Result<(), ParquetError> {
    let mut c = g.next_column()?.ok_or_else(|| {
        ParquetError::General("the ranking has fewer columns than its schema".into())
    })?;
    c.typed::<T>().write_batch(values, def, None)?;
    c.close()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn fixed9(x: f64) -> String {
        let mut out = Vec::new();
        push_fixed9(&mut out, x);
        String::from_utf8(out).unwrap()
    }

    /// The integer formatter writes what `format!("{:.9}")` does, byte for byte: random
    /// probabilities, random bit patterns, values next to the rounding boundaries, exact ties
    /// (odd multiples of 2^-k), tiny and large values, and the values it leaves to `format!`.
    #[test]
    fn fixed9_is_format_byte_for_byte() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let check = |x: f64| assert_eq!(fixed9(x), format!("{x:.9}"), "{x:e}");
        for _ in 0..300_000 {
            check(rng.random::<f64>());
            check(f64::from_bits(rng.random::<u64>()));
            let k: u64 = rng.random_range(0..4_000_000_000_000_000);
            let b = k as f64 / 1e9 / 1e6; // near k / 10^15 …
            let near = (rng.random_range(0..2_000_000_000u64) as f64 + 0.5) / 1e9; // … and near ties
            for y in [b, near] {
                check(y);
                check(f64::from_bits(y.to_bits() + 1));
                check(f64::from_bits(y.to_bits().saturating_sub(1)));
            }
        }
        for k in 1..=60 {
            for odd in [1u64, 3, 5, 7, 1023, 4097, 999_999] {
                check(odd as f64 / 2f64.powi(k));
            }
        }
        for x in [
            0.0,
            -0.0,
            1.0,
            0.5,
            1e-9,
            5e-10,
            4.999_999_999_999_999e-10,
            1.5e-9,
            2.5e-9,
            0.999_999_999_5,
            0.999_999_999_499_999_9,
            f64::MIN_POSITIVE,
            5e-324,
            4_294_967_295.999_999,
            4_294_967_296.0,
            1e300,
            -0.25,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            check(x);
        }
    }

    #[test]
    fn decimal_is_display() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(10);
        for v in [0u64, 1, 9, 10, 99, 100, u64::MAX, u64::MAX - 1]
            .into_iter()
            .chain((0..10_000).map(|_| rng.random::<u64>() >> rng.random_range(0..64)))
        {
            let mut out = Vec::new();
            push_decimal(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }
}
