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
        line: String,
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
                    line: String::with_capacity(128),
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
                use std::fmt::Write as _;
                line.clear();
                let id = String::from_utf8_lossy(&row.id);
                let _ = write!(
                    line,
                    "{},{},{:.9},{}",
                    rank,
                    csv_field(&id),
                    row.score,
                    decile
                );
                if *scorecard {
                    let _ = write!(line, ",{:.1}", row.points);
                }
                for v in &row.labels {
                    if v.is_nan() {
                        line.push(',');
                    } else {
                        let _ = write!(line, ",{}", if *v > 0.5 { 1 } else { 0 });
                    }
                }
                line.push('\n');
                w.write_all(line.as_bytes())
                    .map_err(|source| ScoreError::Write {
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

/// A CSV field, quoted when it holds a separator, a quote or a line break.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
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
