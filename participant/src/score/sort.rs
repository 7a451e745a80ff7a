//! The external merge sort of scored rows: a compact in-memory buffer, sorted runs spilled to
//! temporary files past a memory budget, and a k-way merge that reads them back in ranking
//! order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use super::ScoreError;

/// One scored row as it is ranked and written.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Row {
    pub(super) score: f64,
    pub(super) points: f64,
    pub(super) labels: Vec<f32>,
    seq: u64,
    pub(super) id: Vec<u8>,
}

/// Ranking order: higher score first, then id, then file position.
fn order(a_score: f64, a_id: &[u8], a_seq: u64, b_score: f64, b_id: &[u8], b_seq: u64) -> Ordering {
    b_score
        .total_cmp(&a_score)
        .then_with(|| a_id.cmp(b_id))
        .then(a_seq.cmp(&b_seq))
}

/// A `u64` whose ascending order is `score`'s descending [`f64::total_cmp`] order.
fn descending_key(score: f64) -> u64 {
    let bits = score.to_bits();
    // total_cmp's order as unsigned bits: negative values flipped, positive ones offset.
    let ascending = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    !ascending
}

/// The score whose [`descending_key`] is `key` (bit for bit, NaN payloads too).
fn score_of_key(key: u64) -> f64 {
    let ascending = !key;
    f64::from_bits(if ascending >> 63 == 1 {
        ascending & !(1 << 63)
    } else {
        !ascending
    })
}

/// Scored rows in columns: compact, sorted by index. Sequence numbers run up by one from
/// the first row's (rows are pushed in file order), and `points_nan` says every point is
/// `f64::NAN` (a model without points): a row is then read back from the sort key and its
/// id alone, two places in memory instead of five.
struct Buffer {
    scores: Vec<f64>,
    points: Vec<f64>,
    points_nan: bool,
    labels: Vec<f32>,
    seq: Vec<u64>,
    id_bytes: Vec<u8>,
    id_end: Vec<usize>,
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer {
            scores: Vec::new(),
            points: Vec::new(),
            points_nan: true,
            labels: Vec::new(),
            seq: Vec::new(),
            id_bytes: Vec::new(),
            id_end: Vec::new(),
        }
    }
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
    /// Row indices in ranking order for model label `l`: one sort of packed keys (the
    /// score made an order-preserving `u64`, [`descending_key`], then the row index, which is
    /// the file position within a buffer), then ids compared only within runs of equal
    /// scores.
    #[cfg(test)]
    fn sorted(&self, l: usize, n_scores: usize) -> Vec<usize> {
        self.sorted_keys(l, n_scores)
            .iter()
            .map(|&(_, r)| r as usize)
            .collect()
    }

    /// [`Buffer::sorted`] as the packed (key, row index) pairs themselves.
    fn sorted_keys(&self, l: usize, n_scores: usize) -> Vec<(u64, u64)> {
        let mut keys: Vec<(u64, u64)> = (0..self.len())
            .map(|r| {
                let score = self
                    .scores
                    .get(r * n_scores + l)
                    .copied()
                    .unwrap_or(f64::NAN);
                (descending_key(score), r as u64)
            })
            .collect();
        keys.sort_unstable();
        let mut start = 0;
        while start < keys.len() {
            let key = keys.get(start).map(|k| k.0);
            let end = start
                + keys
                    .get(start..)
                    .unwrap_or(&[])
                    .iter()
                    .take_while(|k| Some(k.0) == key)
                    .count();
            if end - start > 1 {
                if let Some(tie) = keys.get_mut(start..end) {
                    // Equal scores: by id, then file position (the sequence number).
                    tie.sort_unstable_by(|&(_, a), &(_, b)| {
                        let (a, b) = (a as usize, b as usize);
                        self.id(a)
                            .cmp(self.id(b))
                            .then(self.seq.get(a).cmp(&self.seq.get(b)))
                    });
                }
            }
            start = end.max(start + 1);
        }
        keys
    }

    /// Row `r` (whose sort key is `key`) for model label `l`, as [`Row`].
    fn row_into(&self, (key, r): (u64, u64), n_out: usize, row: &mut Row) {
        let r = r as usize;
        row.score = score_of_key(key);
        row.points = if self.points_nan {
            f64::NAN
        } else {
            self.points[r]
        };
        row.labels.clear();
        row.labels
            .extend_from_slice(&self.labels[r * n_out..(r + 1) * n_out]);
        row.seq = self.seq.first().map_or(0, |&s| s + r as u64);
        row.id.clear();
        row.id.extend_from_slice(self.id(r));
    }
}

/// Collects scored rows; spills sorted runs (one file per model label) past its budget.
pub(super) struct Sorter {
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
    pub(super) fn new(n_scores: usize, budget: usize, dir: PathBuf) -> Self {
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

    pub(super) fn push(
        &mut self,
        scores: impl Iterator<Item = f64>,
        points: f64,
        labels: impl Iterator<Item = f32>,
        id: &[u8],
    ) -> Result<(), ScoreError> {
        self.buf.scores.extend(scores);
        self.buf.points.push(points);
        self.buf.points_nan &= points.to_bits() == f64::NAN.to_bits();
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
            for k in self.buf.sorted_keys(l, self.n_scores) {
                self.buf.row_into(k, n_out, &mut row);
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

    pub(super) fn finish(mut self) -> Result<Sorted, ScoreError> {
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
pub(super) struct Sorted {
    n_out: usize,
    n_scores: usize,
    dir: PathBuf,
    buf: Buffer,
    runs: Vec<Vec<File>>,
}

impl Sorted {
    pub(super) fn ranking(&mut self, l: usize) -> Result<Ranking<'_>, ScoreError> {
        if self.runs.is_empty() {
            let order = self.buf.sorted_keys(l, self.n_scores);
            return Ok(Ranking::Memory {
                sorted: self,
                order,
                next: 0,
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
pub(super) struct Head {
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

pub(super) enum Ranking<'a> {
    Memory {
        sorted: &'a Sorted,
        order: Vec<(u64, u64)>,
        next: usize,
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
    pub(super) fn next_into(&mut self, row: &mut Row) -> Result<bool, ScoreError> {
        match self {
            Ranking::Memory {
                sorted,
                order,
                next,
            } => {
                let Some(&k) = order.get(*next) else {
                    return Ok(false);
                };
                *next += 1;
                sorted.buf.row_into(k, sorted.n_out, row);
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
    use crate::score::Keep;

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

    /// The packed-key sort gives exactly the comparator's order (score descending by
    /// `total_cmp`, then id, then position), with many ties, both zeros, infinities and NaN.
    #[test]
    fn packed_key_sort_is_the_ranking_order() {
        let specials = [
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
            1e-300,
            -1e-300,
            0.5,
            0.25,
        ];
        let mut b = Buffer::default();
        for i in 0..3000u64 {
            let score = specials[((i * 7) % 13 % 10) as usize];
            b.scores.push(score);
            b.points.push(f64::NAN);
            b.seq.push(i);
            b.id_bytes
                .extend_from_slice(format!("c{}", (i * 31) % 17).as_bytes());
            b.id_end.push(b.id_bytes.len());
        }
        let mut want: Vec<usize> = (0..b.len()).collect();
        want.sort_by(|&x, &y| {
            order(
                b.scores[x],
                b.id(x),
                b.seq[x],
                b.scores[y],
                b.id(y),
                b.seq[y],
            )
        });
        assert_eq!(b.sorted(0, 1), want);
        for x in specials {
            assert_eq!(
                score_of_key(descending_key(x)).to_bits(),
                x.to_bits(),
                "{x}"
            );
        }
        for (x, y) in specials.iter().zip(specials.iter().skip(1)) {
            assert_eq!(
                descending_key(*x).cmp(&descending_key(*y)),
                y.total_cmp(x),
                "{x} {y}"
            );
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
