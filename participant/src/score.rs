//! Local scoring with an exported model: the ranked list a marketing or collections team acts
//! on. Runs entirely on the institution's premises.
//!
//! The file is read in chunks ([`load_csv_chunks`]); each chunk is scored and its rows
//! (id, probability, points, the outcome when the file carries it) are kept in a compact
//! buffer. A buffer that outgrows [`ScoreOptions::memory`] is sorted and written to a
//! temporary run file, and the runs are merged at the end (an external merge sort), so memory
//! stays bounded whatever the file's size. Order: highest probability first; equal
//! probabilities by id (byte order), then by position in the file.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use fedsilo_ml::table::Table;
use fedsilo_task::TrainedModel;

use crate::data::{load_csv_chunks, DataError, Labels, Schema};

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
/// `<stem>-<label>.csv` otherwise.
pub fn output_path(out: &Path, labels: &[String], l: usize) -> PathBuf {
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
    out.with_file_name(format!("{stem}-{safe}.csv"))
}

/// Scores `data` (CSV read by `schema`; its labels are kept when the file has them) and
/// writes one ranked CSV per model label (see [`output_path`]):
/// `rank,<id column or "row">,score,decile[,points][,<label>…]`, best first. `decile` is 1
/// for the top 10 % of all scored rows, also when only the top is written.
pub fn score_csv(
    model: &TrainedModel,
    data: &Path,
    schema: &Schema,
    out: &Path,
    opts: &ScoreOptions,
) -> Result<Vec<Written>, ScoreError> {
    let n_labels = model.labels.len();
    let dir = opts.spill_dir.clone().unwrap_or_else(|| {
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    });
    let mut sorter = Sorter::new(n_labels, opts.memory, dir);
    let mut file_labels: Option<Vec<String>> = None;
    let scorecard = matches!(model.params, fedsilo_task::ModelParams::Scorecard { .. });
    let mut sink = |chunk: Table| -> Result<(), ScoreError> {
        let p = model.predict(&chunk)?;
        if p.ncols() != n_labels {
            return Err(ScoreError::Shape {
                expected: n_labels,
                got: p.ncols(),
            });
        }
        let points = model.points(&chunk)?;
        if file_labels.is_none() {
            file_labels = Some(chunk.label_names.clone());
        }
        for (r, id) in chunk.ids.iter().enumerate() {
            let pts = points.as_ref().and_then(|v| v.get(r).copied());
            let outcome = chunk.labels.row(r);
            sorter.push(
                p.row(r).iter().copied(),
                pts.unwrap_or(f64::NAN),
                outcome.iter().copied(),
                id.as_bytes(),
            )?;
        }
        Ok(())
    };
    let scored = load_csv_chunks(data, schema, opts.chunk_rows, Labels::IfPresent, &mut sink)?;
    let file_labels = file_labels.unwrap_or_default();
    let id_name = schema.id_column.clone().unwrap_or_else(|| "row".into());
    let keep = opts.keep.of(scored);
    let mut written = Vec::with_capacity(n_labels);
    let mut sorted = sorter.finish()?;
    for l in 0..n_labels {
        let path = output_path(out, &model.labels, l);
        let werr = |source| ScoreError::Write {
            path: path.clone(),
            source,
        };
        let file = File::create(&path).map_err(werr)?;
        let mut w = BufWriter::with_capacity(1 << 16, file);
        let mut header = format!("rank,{},score,decile", csv_field(&id_name));
        if scorecard {
            header.push_str(",points");
        }
        for name in &file_labels {
            header.push(',');
            header.push_str(&csv_field(name));
        }
        header.push('\n');
        w.write_all(header.as_bytes()).map_err(werr)?;
        let mut rows = sorted.ranking(l)?;
        let mut row = Row::default();
        let mut line = String::with_capacity(128);
        let mut i = 0usize;
        while i < keep && rows.next_into(&mut row)? {
            use std::fmt::Write as _;
            line.clear();
            let id = String::from_utf8_lossy(&row.id);
            let _ = write!(
                line,
                "{},{},{:.9},{}",
                i + 1,
                csv_field(&id),
                row.score,
                i * 10 / scored.max(1) + 1
            );
            if scorecard {
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
            w.write_all(line.as_bytes()).map_err(werr)?;
            i += 1;
        }
        w.flush().map_err(werr)?;
        written.push(Written {
            label: model.labels.get(l).cloned().unwrap_or_default(),
            path: path.clone(),
            rows: i,
            scored,
        });
    }
    Ok(written)
}

/// A CSV field, quoted when it holds a separator, a quote or a line break.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// One scored row as it is ranked and written.
#[derive(Clone, Debug, Default, PartialEq)]
struct Row {
    score: f64,
    points: f64,
    labels: Vec<f32>,
    seq: u64,
    id: Vec<u8>,
}

/// Ranking order: higher score first, then id, then file position.
fn order(a_score: f64, a_id: &[u8], a_seq: u64, b_score: f64, b_id: &[u8], b_seq: u64) -> Ordering {
    b_score
        .total_cmp(&a_score)
        .then_with(|| a_id.cmp(b_id))
        .then(a_seq.cmp(&b_seq))
}

/// Scored rows in columns: compact, sorted by index.
#[derive(Default)]
struct Buffer {
    scores: Vec<f64>,
    points: Vec<f64>,
    labels: Vec<f32>,
    seq: Vec<u64>,
    id_bytes: Vec<u8>,
    id_end: Vec<usize>,
}

impl Buffer {
    fn len(&self) -> usize {
        self.seq.len()
    }
    fn bytes(&self) -> usize {
        self.scores.len() * 8
            + self.points.len() * 8
            + self.labels.len() * 4
            + self.seq.len() * 16
            + self.id_bytes.len()
    }
    fn id(&self, r: usize) -> &[u8] {
        let start = if r == 0 { 0 } else { self.id_end[r - 1] };
        &self.id_bytes[start..self.id_end[r]]
    }
    /// Row indices in ranking order for model label `l`.
    fn sorted(&self, l: usize, n_scores: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.sort_unstable_by(|&a, &b| {
            order(
                self.scores[a * n_scores + l],
                self.id(a),
                self.seq[a],
                self.scores[b * n_scores + l],
                self.id(b),
                self.seq[b],
            )
        });
        idx
    }
    fn row_into(&self, r: usize, l: usize, n_scores: usize, n_out: usize, row: &mut Row) {
        row.score = self.scores[r * n_scores + l];
        row.points = self.points[r];
        row.labels.clear();
        row.labels
            .extend_from_slice(&self.labels[r * n_out..(r + 1) * n_out]);
        row.seq = self.seq[r];
        row.id.clear();
        row.id.extend_from_slice(self.id(r));
    }
}

/// Collects scored rows; spills sorted runs (one file per model label) past its budget.
struct Sorter {
    n_scores: usize,
    n_out: Option<usize>,
    budget: usize,
    dir: PathBuf,
    buf: Buffer,
    /// Per spill: one run file per model label.
    runs: Vec<Vec<File>>,
    next_seq: u64,
}

impl Sorter {
    fn new(n_scores: usize, budget: usize, dir: PathBuf) -> Self {
        Sorter {
            n_scores,
            n_out: None,
            budget,
            dir,
            buf: Buffer::default(),
            runs: Vec::new(),
            next_seq: 0,
        }
    }

    fn push(
        &mut self,
        scores: impl Iterator<Item = f64>,
        points: f64,
        labels: impl Iterator<Item = f32>,
        id: &[u8],
    ) -> Result<(), ScoreError> {
        self.buf.scores.extend(scores);
        self.buf.points.push(points);
        let before = self.buf.labels.len();
        self.buf.labels.extend(labels);
        self.n_out.get_or_insert(self.buf.labels.len() - before);
        self.buf.seq.push(self.next_seq);
        self.next_seq += 1;
        self.buf.id_bytes.extend_from_slice(id);
        self.buf.id_end.push(self.buf.id_bytes.len());
        if self.buf.bytes() >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn spill_err(&self, source: std::io::Error) -> ScoreError {
        ScoreError::Spill {
            dir: self.dir.clone(),
            source,
        }
    }

    fn spill(&mut self) -> Result<(), ScoreError> {
        if self.buf.len() == 0 {
            return Ok(());
        }
        let n_out = self.n_out.unwrap_or(0);
        let mut files = Vec::with_capacity(self.n_scores);
        let mut row = Row::default();
        for l in 0..self.n_scores {
            let file = tempfile::tempfile_in(&self.dir).map_err(|e| self.spill_err(e))?;
            let mut w = BufWriter::with_capacity(1 << 16, file);
            for r in self.buf.sorted(l, self.n_scores) {
                self.buf.row_into(r, l, self.n_scores, n_out, &mut row);
                write_row(&mut w, &row).map_err(|e| self.spill_err(e))?;
            }
            let mut file = w.into_inner().map_err(|e| self.spill_err(e.into_error()))?;
            use std::io::Seek as _;
            file.rewind().map_err(|e| self.spill_err(e))?;
            files.push(file);
        }
        tracing::debug!(
            rows = self.buf.len(),
            runs = self.runs.len() + 1,
            "scoring: sorted run written"
        );
        self.runs.push(files);
        self.buf = Buffer::default();
        Ok(())
    }

    fn finish(mut self) -> Result<Sorted, ScoreError> {
        if !self.runs.is_empty() {
            self.spill()?;
        }
        Ok(Sorted {
            n_out: self.n_out.unwrap_or(0),
            n_scores: self.n_scores,
            dir: self.dir,
            buf: self.buf,
            runs: self.runs,
        })
    }
}

fn write_row(w: &mut impl Write, row: &Row) -> std::io::Result<()> {
    w.write_all(&row.score.to_le_bytes())?;
    w.write_all(&row.points.to_le_bytes())?;
    for v in &row.labels {
        w.write_all(&v.to_le_bytes())?;
    }
    w.write_all(&row.seq.to_le_bytes())?;
    w.write_all(&(row.id.len() as u64).to_le_bytes())?;
    w.write_all(&row.id)
}

/// Reads one row written by [`write_row`]; `false` at the end of the run.
fn read_row(r: &mut impl Read, n_out: usize, row: &mut Row) -> std::io::Result<bool> {
    let mut b8 = [0u8; 8];
    match r.read_exact(&mut b8) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        other => other?,
    }
    row.score = f64::from_le_bytes(b8);
    r.read_exact(&mut b8)?;
    row.points = f64::from_le_bytes(b8);
    row.labels.clear();
    let mut b4 = [0u8; 4];
    for _ in 0..n_out {
        r.read_exact(&mut b4)?;
        row.labels.push(f32::from_le_bytes(b4));
    }
    r.read_exact(&mut b8)?;
    row.seq = u64::from_le_bytes(b8);
    r.read_exact(&mut b8)?;
    let len = u64::from_le_bytes(b8) as usize;
    row.id.resize(len, 0);
    r.read_exact(&mut row.id)?;
    Ok(true)
}

/// Every scored row, ready to be read in ranking order per model label.
struct Sorted {
    n_out: usize,
    n_scores: usize,
    dir: PathBuf,
    buf: Buffer,
    runs: Vec<Vec<File>>,
}

impl Sorted {
    fn ranking(&mut self, l: usize) -> Result<Ranking<'_>, ScoreError> {
        if self.runs.is_empty() {
            let order = self.buf.sorted(l, self.n_scores);
            return Ok(Ranking::Memory {
                sorted: self,
                order,
                next: 0,
                l,
            });
        }
        let mut readers = Vec::with_capacity(self.runs.len());
        let mut heap = BinaryHeap::with_capacity(self.runs.len());
        for (k, files) in self.runs.iter_mut().enumerate() {
            let Some(file) = files.get_mut(l) else {
                continue;
            };
            let mut r = BufReader::with_capacity(1 << 16, file);
            let mut row = Row::default();
            let more =
                read_row(&mut r, self.n_out, &mut row).map_err(|source| ScoreError::Spill {
                    dir: self.dir.clone(),
                    source,
                })?;
            readers.push(r);
            if more {
                heap.push(Head { row, run: k });
            }
        }
        Ok(Ranking::Merge {
            readers,
            heap,
            n_out: self.n_out,
            dir: self.dir.clone(),
        })
    }
}

/// The head row of one run in the merge heap (the max-heap's greatest is ranked first).
struct Head {
    row: Row,
    run: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (&self.row, &other.row);
        order(b.score, &b.id, b.seq, a.score, &a.id, a.seq)
    }
}

enum Ranking<'a> {
    Memory {
        sorted: &'a Sorted,
        order: Vec<usize>,
        next: usize,
        l: usize,
    },
    Merge {
        readers: Vec<BufReader<&'a mut File>>,
        heap: BinaryHeap<Head>,
        n_out: usize,
        dir: PathBuf,
    },
}

impl Ranking<'_> {
    /// The next row in ranking order into `row`; `false` when every row was read.
    fn next_into(&mut self, row: &mut Row) -> Result<bool, ScoreError> {
        match self {
            Ranking::Memory {
                sorted,
                order,
                next,
                l,
            } => {
                let Some(&r) = order.get(*next) else {
                    return Ok(false);
                };
                *next += 1;
                sorted
                    .buf
                    .row_into(r, *l, sorted.n_scores, sorted.n_out, row);
                Ok(true)
            }
            Ranking::Merge {
                readers,
                heap,
                n_out,
                dir,
            } => {
                let Some(mut head) = heap.pop() else {
                    return Ok(false);
                };
                std::mem::swap(row, &mut head.row);
                if let Some(r) = readers.get_mut(head.run) {
                    let more =
                        read_row(r, *n_out, &mut head.row).map_err(|source| ScoreError::Spill {
                            dir: dir.clone(),
                            source,
                        })?;
                    if more {
                        heap.push(head);
                    }
                }
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(sorter: Sorter, l: usize) -> Vec<(f64, String)> {
        let mut s = sorter.finish().unwrap();
        let mut r = s.ranking(l).unwrap();
        let mut row = Row::default();
        let mut out = Vec::new();
        while r.next_into(&mut row).unwrap() {
            out.push((row.score, String::from_utf8(row.id.clone()).unwrap()));
        }
        out
    }

    /// The external merge gives exactly the in-memory order, ties by id then position.
    #[test]
    fn spilled_runs_merge_into_the_in_memory_order() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<(f64, f64, String)> = (0..5000)
            .map(|i: u64| {
                let a = ((i * 7919) % 101) as f64 / 100.0;
                let b = ((i * 104729) % 37) as f64 / 36.0;
                (a, b, format!("c{:05}", (i * 31) % 5000))
            })
            .collect();
        let fill = |budget| {
            let mut s = Sorter::new(2, budget, dir.path().to_path_buf());
            for (a, b, id) in &data {
                s.push(
                    [*a, *b].into_iter(),
                    f64::NAN,
                    [1.0f32].into_iter(),
                    id.as_bytes(),
                )
                .unwrap();
            }
            s
        };
        let small = fill(4096);
        assert!(small.runs.len() > 10, "{} runs", small.runs.len());
        for l in 0..2 {
            let merged = rows(fill(4096), l);
            let memory = rows(fill(usize::MAX), l);
            assert_eq!(merged.len(), 5000);
            assert_eq!(merged, memory, "label {l}");
            assert!(merged
                .windows(2)
                .all(|w| w[0].0 > w[1].0 || (w[0].0 == w[1].0 && w[0].1 <= w[1].1)));
        }
    }

    #[test]
    fn keep_counts() {
        assert_eq!(Keep::All.of(10), 10);
        assert_eq!(Keep::Top(3).of(10), 3);
        assert_eq!(Keep::Top(30).of(10), 10);
        assert_eq!(Keep::Fraction(0.3).of(10), 3);
        assert_eq!(Keep::Fraction(0.3).of(11), 4);
        assert_eq!(Keep::Fraction(1.0).of(7), 7);
    }
}
