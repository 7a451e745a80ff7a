//! Local scoring with an exported model: the ranked list a marketing or collections team acts
//! on. Runs entirely on the institution's premises.
//!
//! The file (CSV, or Parquet by its extension) is read in chunks ([`load_csv_chunks`],
//! [`load_parquet_chunks`]) on a reader thread that hands each chunk to the scoring thread
//! over a bounded channel, so parsing the next chunk overlaps scoring this one (the model
//! itself runs on rayon's pool). Each chunk is scored and its rows (id, probability, points,
//! the outcome when the file carries it) are kept in a compact buffer. A buffer that outgrows
//! [`ScoreOptions::memory`] is sorted and written to a temporary run file, and the runs are
//! merged at the end (an external merge sort), so memory stays bounded whatever the file's
//! size. Order: highest probability first; equal probabilities by id (byte order), then by
//! position in the file. The ranking is written as CSV or Parquet ([`OutputFormat`]).

mod sort;
mod write;

use std::path::{Path, PathBuf};

use fedsilo_task::TrainedModel;

use crate::data::{
    is_parquet_path, load_csv_chunk_ids, load_parquet_chunk_ids, Chunk, DataError, Labels, Schema,
};
use sort::{Row, Sorter};
use write::RankingWriter;

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("scoring: {0}")]
    Model(#[from] fedsilo_task::FedError),
    /// Boxed: a data error names where it happened and is large.
    #[error(transparent)]
    Data(Box<DataError>),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("scoring: the reader thread of {path} stopped without an answer (it panicked)")]
    Reader { path: PathBuf },
    #[error("temporary run file in {dir}: {source}")]
    Spill {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("the model has {got} probability column(s) for {expected} label(s)")]
    Shape { expected: usize, got: usize },
}

impl From<DataError> for ScoreError {
    fn from(e: DataError) -> Self {
        ScoreError::Data(Box::new(e))
    }
}

/// Which part of each ranking is written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Keep {
    /// Every scored row.
    All,
    /// The first N rows (fewer if the file has fewer).
    Top(usize),
    /// The first ⌈fraction · rows⌉ rows, `0 < fraction ≤ 1`.
    Fraction(f64),
}

impl Keep {
    /// Rows kept out of `n`.
    pub fn of(self, n: usize) -> usize {
        match self {
            Keep::All => n,
            Keep::Top(k) => k.min(n),
            Keep::Fraction(f) => ((f * n as f64).ceil() as usize).min(n),
        }
    }
}

/// How a file is scored.
#[derive(Clone, Debug)]
pub struct ScoreOptions {
    pub keep: Keep,
    /// Rows per chunk read from the file.
    pub chunk_rows: usize,
    /// Bytes of scored rows held in memory before a sorted run is written to disk.
    pub memory: usize,
    /// Where run files go (default: the output file's directory).
    pub spill_dir: Option<PathBuf>,
    /// The output's format; `None`: by the output file's extension ([`OutputFormat::of_path`]).
    pub format: Option<OutputFormat>,
}

/// The format of a written ranking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// `rank,<id>,score,decile[,points][,<label>…]`, scores with 9 decimals.
    Csv,
    /// The same columns, typed: `rank` INT64, the id a UTF8 string, `score` DOUBLE (full
    /// precision), `decile` INT32, `points` DOUBLE, each label an optional DOUBLE (0/1, NULL
    /// when missing); SNAPPY-compressed row groups of [`write::GROUP_ROWS`] rows.
    Parquet,
}

impl OutputFormat {
    /// Parquet for `.parquet` / `.parq` / `.pq` (any case), CSV otherwise.
    pub fn of_path(path: &Path) -> OutputFormat {
        if is_parquet_path(path) {
            OutputFormat::Parquet
        } else {
            OutputFormat::Csv
        }
    }

    fn extension(self) -> &'static str {
        match self {
            OutputFormat::Csv => "csv",
            OutputFormat::Parquet => "parquet",
        }
    }
}

impl ScoreOptions {
    /// Defaults for `width` feature columns: chunks of about 4 MiB of features, 64 MiB of
    /// scored rows in memory.
    pub fn new(keep: Keep, width: usize) -> Self {
        ScoreOptions {
            keep,
            chunk_rows: (4 << 20) / (4 * width.max(1)),
            memory: 64 << 20,
            spill_dir: None,
            format: None,
        }
        .clamped()
    }

    fn clamped(mut self) -> Self {
        self.chunk_rows = self.chunk_rows.clamp(256, 1 << 16);
        self
    }
}

/// One written ranking.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    /// The model label ranked.
    pub label: String,
    pub path: PathBuf,
    /// Rows written (the kept part) and rows scored.
    pub rows: usize,
    pub scored: usize,
}

/// The output file of label `l` of `labels`: `out` itself for a single label,
/// `<stem>-<label>.<out's extension, or the format's>` otherwise.
pub fn output_path(out: &Path, labels: &[String], l: usize, format: OutputFormat) -> PathBuf {
    if labels.len() <= 1 {
        return out.to_path_buf();
    }
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("ranked");
    let label = labels.get(l).map_or("", String::as_str);
    let safe: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or(format.extension());
    out.with_file_name(format!("{stem}-{safe}.{ext}"))
}

/// Scores `data` (CSV, or Parquet by its extension, read by `schema`; its labels are kept when
/// the file has them) and writes one ranking per model label (see [`output_path`]) as CSV or
/// Parquet ([`OutputFormat`]): `rank, <id column or "row">, score, decile[, points][,
/// <label>…]`, best first. `decile` is 1 for the top 10 % of all scored rows, also when only
/// the top is written.
pub fn score_file(
    model: &TrainedModel,
    data: &Path,
    schema: &Schema,
    out: &Path,
    opts: &ScoreOptions,
) -> Result<Vec<Written>, ScoreError> {
    let n_labels = model.labels.len();
    let format = opts.format.unwrap_or_else(|| OutputFormat::of_path(out));
    let dir = opts.spill_dir.clone().unwrap_or_else(|| {
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    });
    let mut sorter = Sorter::new(n_labels, opts.memory, dir);
    let mut file_labels: Option<Vec<String>> = None;
    let scorecard = matches!(model.params, fedsilo_task::ModelParams::Scorecard { .. });
    // Checked and (trees) compiled once for every chunk.
    let compiled = model.compile()?;
    let mut score_chunk = |whole: Chunk| -> Result<(), ScoreError> {
        let chunk = &whole.table;
        let p = compiled.predict(chunk)?;
        if p.ncols() != n_labels {
            return Err(ScoreError::Shape {
                expected: n_labels,
                got: p.ncols(),
            });
        }
        let points = model.points(chunk)?;
        if file_labels.is_none() {
            file_labels = Some(chunk.label_names.clone());
        }
        for r in 0..whole.n_rows() {
            let pts = points.as_ref().and_then(|v| v.get(r).copied());
            let outcome = chunk.labels.row(r);
            sorter.push(
                p.row(r).iter().copied(),
                pts.unwrap_or(f64::NAN),
                outcome.iter().copied(),
                whole.id(r),
            )?;
        }
        Ok(())
    };
    let scored = read_pipelined(data, schema, opts.chunk_rows, &mut score_chunk)?;
    let file_labels = file_labels.unwrap_or_default();
    let id_name = schema.id_column.clone().unwrap_or_else(|| "row".into());
    let keep = opts.keep.of(scored);
    let mut written = Vec::with_capacity(n_labels);
    let mut sorted = sorter.finish()?;
    for l in 0..n_labels {
        let path = output_path(out, &model.labels, l, format);
        let mut w = RankingWriter::create(format, &path, &id_name, scorecard, &file_labels)?;
        let mut rows = sorted.ranking(l)?;
        let mut row = Row::default();
        let mut i = 0usize;
        while i < keep && rows.next_into(&mut row)? {
            let decile = i * 10 / scored.max(1) + 1;
            w.push(i + 1, &row, decile)?;
            i += 1;
        }
        w.finish()?;
        written.push(Written {
            label: model.labels.get(l).cloned().unwrap_or_default(),
            path,
            rows: i,
            scored,
        });
    }
    Ok(written)
}

/// [`score_file`] under its first name (the input was CSV only then).
pub fn score_csv(
    model: &TrainedModel,
    data: &Path,
    schema: &Schema,
    out: &Path,
    opts: &ScoreOptions,
) -> Result<Vec<Written>, ScoreError> {
    score_file(model, data, schema, out, opts)
}

/// Why the reader thread stopped early.
#[derive(Debug)]
enum ReadStop {
    /// Boxed, as in [`ScoreError::Data`].
    Data(Box<DataError>),
    /// The scoring side hung up (it failed; its error is the one reported).
    Closed,
}

impl From<DataError> for ReadStop {
    fn from(e: DataError) -> Self {
        ReadStop::Data(Box::new(e))
    }
}

/// Reads `data` in chunks on a reader thread and calls `score` with each on this thread, in
/// file order; the channel holds one chunk, so at most three chunks are alive (being read,
/// waiting, being scored). Returns the number of rows read. A data error is reported as
/// such; a scoring error stops the reader at its next chunk.
fn read_pipelined(
    data: &Path,
    schema: &Schema,
    chunk_rows: usize,
    score: &mut dyn FnMut(Chunk) -> Result<(), ScoreError>,
) -> Result<usize, ScoreError> {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(1);
        let reader = s.spawn(move || {
            let mut send = |c: Chunk| tx.send(c).map_err(|_| ReadStop::Closed);
            if is_parquet_path(data) {
                load_parquet_chunk_ids(data, schema, chunk_rows, Labels::IfPresent, &mut send)
            } else {
                load_csv_chunk_ids(data, schema, chunk_rows, Labels::IfPresent, &mut send)
            }
        });
        let mut failed = None;
        for chunk in rx.iter() {
            if let Err(e) = score(chunk) {
                failed = Some(e);
                break;
            }
        }
        drop(rx);
        let read = reader.join();
        match (failed, read) {
            (Some(e), _) => Err(e),
            (None, Ok(Ok(rows))) => Ok(rows),
            (None, Ok(Err(ReadStop::Data(e)))) => Err(ScoreError::Data(e)),
            (None, Ok(Err(ReadStop::Closed)) | Err(_)) => Err(ScoreError::Reader {
                path: data.to_path_buf(),
            }),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_label_outputs_keep_the_extension_or_take_the_formats() {
        let labels = ["loan".to_string(), "card+gold".to_string()];
        let p = |out: &str, l, f| output_path(Path::new(out), &labels, l, f);
        assert_eq!(
            p("out/ranked.parquet", 1, OutputFormat::Parquet),
            Path::new("out/ranked-card_gold.parquet")
        );
        assert_eq!(
            p("ranked.csv", 0, OutputFormat::Csv),
            Path::new("ranked-loan.csv")
        );
        assert_eq!(
            p("ranked", 0, OutputFormat::Parquet),
            Path::new("ranked-loan.parquet")
        );
        assert_eq!(
            output_path(Path::new("x.pq"), &labels[..1], 0, OutputFormat::Parquet),
            Path::new("x.pq")
        );
        assert_eq!(
            OutputFormat::of_path(Path::new("a.PARQ")),
            OutputFormat::Parquet
        );
        assert_eq!(OutputFormat::of_path(Path::new("a.txt")), OutputFormat::Csv);
    }
}
