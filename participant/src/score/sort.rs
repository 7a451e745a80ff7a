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
/// the first row's, `first_seq` (rows are pushed in file order), so none is stored; points
/// are stored only from the first that is not `f64::NAN` on (`points_nan` until then: a
/// model without points keeps none), earlier rows' then filled in as NaN. A row of a model
/// without points or labels is then read back from its sort key alone (and its id when
/// that is longer than eight bytes).
struct Buffer {
    scores: Vec<f64>,
    points: Vec<f64>,
    points_nan: bool,
    labels: Vec<f32>,
    rows: usize,
    first_seq: u64,
    id_bytes: Vec<u8>,
    id_end: Vec<usize>,
    /// Some id is longer than eight bytes (its place needs more than its sort key).
    long_ids: bool,
}

/// A row's place in a sorted buffer, ordered as the ranking orders rows: the score's
/// [`descending_key`], the id's first eight bytes ([`id_word`]), then the id's length (9 for
/// any longer one) << 40 | the row's index in the buffer (its file position). For ids of at
/// most eight bytes the tuple order is the ranking order itself, and the key carries the
/// whole row a model without points or labels needs: a sorted buffer is read out in order
/// without touching the buffer again.
type SortKey = (u64, u64, u64);

/// The `len` field of a [`SortKey`] for an id longer than eight bytes.
const LONG_ID: u64 = 9;
const ROW_BITS: u64 = (1 << 40) - 1;
/// A [`SortKey`]'s size, counted in a buffer's budget.
const SORT_KEY_BYTES: usize = std::mem::size_of::<SortKey>();

/// The first (up to) eight bytes of `id` as a big-endian word, zero-padded: words compare
/// as the bytes do, and a shorter id whose word equals a longer one's is a prefix of it.
fn id_word(id: &[u8]) -> u64 {
    match id.first_chunk::<8>() {
        Some(w) => u64::from_be_bytes(*w),
        None => id
            .iter()
            .enumerate()
            .fold(0, |w, (i, &b)| w | u64::from(b) << (56 - 8 * i)),
    }
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer {
            scores: Vec::new(),
            points: Vec::new(),
            points_nan: true,
            labels: Vec::new(),
            rows: 0,
            first_seq: 0,
            id_bytes: Vec::new(),
            id_end: Vec::new(),
            long_ids: false,
        }
    }
}

impl Buffer {
    fn len(&self) -> usize {
        self.rows
    }
    /// What the rows take, with the sort keys a spill makes of them ([`SORT_KEY_BYTES`]).
    fn bytes(&self) -> usize {
        self.scores.len() * 8
            + self.points.len() * 8
            + self.labels.len() * 4
            + self.rows * (8 + SORT_KEY_BYTES)
            + self.id_bytes.len()
    }
    /// Room for the rows a buffer of `budget` bytes holds, estimated from one row (its
    /// `n_scores` scores and an id of `id_len` bytes), so that the columns do not grow by
    /// doubling past what the budget counts.
    fn reserve_for(&mut self, budget: usize, n_scores: usize, id_len: usize) {
        let per_row = n_scores * 8 + id_len + 8 + SORT_KEY_BYTES;
        let rows = (budget / per_row.max(1)).min(1 << 22) + 1;
        self.scores.reserve(rows * n_scores);
        self.id_end.reserve(rows);
        self.id_bytes.reserve(rows * id_len);
    }
    fn seq(&self, r: usize) -> u64 {
        self.first_seq + r as u64
    }
    fn point(&self, r: usize) -> f64 {
        if self.points_nan {
            f64::NAN
        } else {
            self.points.get(r).copied().unwrap_or(f64::NAN)
        }
    }
    fn id(&self, r: usize) -> &[u8] {
        let start = if r == 0 { 0 } else { self.id_end[r - 1] };
        &self.id_bytes[start..self.id_end[r]]
    }
    /// Row indices in ranking order for model label `l`.
    #[cfg(test)]
    fn sorted(&self, l: usize, n_scores: usize) -> Vec<usize> {
        self.sorted_keys(l, n_scores)
            .iter()
            .map(|&(_, _, m)| (m & ROW_BITS) as usize)
            .collect()
    }

    /// The rows' [`SortKey`]s for model label `l`, in ranking order: one sort of the keys
    /// (the id's first eight bytes in them, read in file order), then, among equal scores
    /// and words, ids longer than eight bytes by their whole bytes and position.
    fn sorted_keys(&self, l: usize, n_scores: usize) -> Vec<SortKey> {
        let mut keys: Vec<SortKey> = (0..self.len())
            .map(|r| {
                let score = self
                    .scores
                    .get(r * n_scores + l)
                    .copied()
                    .unwrap_or(f64::NAN);
                let id = self.id(r);
                let len = (id.len() as u64).min(LONG_ID);
                (descending_key(score), id_word(id), len << 40 | r as u64)
            })
            .collect();
        keys.sort_unstable();
        if !self.long_ids {
            return keys;
        }
        let mut start = 0;
        while start < keys.len() {
            let head = keys.get(start).map(|k| (k.0, k.1));
            let end = start
                + keys
                    .get(start..)
                    .unwrap_or(&[])
                    .iter()
                    .take_while(|k| Some((k.0, k.1)) == head)
                    .count();
            if end - start > 1 {
                if let Some(tie) = keys.get_mut(start..end) {
                    // Equal scores and first eight bytes: the long ids (last in the tie)
                    // by their whole bytes, then file position.
                    let long = tie.partition_point(|k| k.2 >> 40 < LONG_ID);
                    if let Some(long) = tie.get_mut(long..) {
                        long.sort_unstable_by(|a, b| {
                            let (a, b) = ((a.2 & ROW_BITS) as usize, (b.2 & ROW_BITS) as usize);
                            self.id(a).cmp(self.id(b)).then(a.cmp(&b))
                        });
                    }
                }
            }
            start = end.max(start + 1);
        }
        keys
    }

    /// The id of the row whose sort key is `k`: from the key itself when it is at most
    /// eight bytes long.
    fn key_id(&self, k: &SortKey, out: &mut Vec<u8>) {
        out.clear();
        let len = (k.2 >> 40) as usize;
        if len < LONG_ID as usize {
            out.extend_from_slice(k.1.to_be_bytes().get(..len).unwrap_or_default());
        } else {
            out.extend_from_slice(self.id((k.2 & ROW_BITS) as usize));
        }
    }

    /// The row whose sort key is `k` for model label `l`, as [`Row`].
    fn row_into(&self, k: &SortKey, n_out: usize, row: &mut Row) {
        let r = (k.2 & ROW_BITS) as usize;
        row.score = score_of_key(k.0);
        row.points = self.point(r);
        row.labels.clear();
        row.labels.extend_from_slice(
            self.labels
                .get(r * n_out..(r + 1) * n_out)
                .unwrap_or_default(),
        );
        row.seq = self.seq(r);
        self.key_id(k, &mut row.id);
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
        if self.buf.rows == 0 {
            self.buf.first_seq = self.next_seq;
            self.buf.reserve_for(self.budget, self.n_scores, id.len());
        }
        self.buf.scores.extend(scores);
        let nan = points.to_bits() == f64::NAN.to_bits();
        if self.buf.points_nan && !nan {
            // The first point: the rows before it had none.
            self.buf.points.resize(self.buf.rows, f64::NAN);
            self.buf.points_nan = false;
        }
        if !self.buf.points_nan {
            self.buf.points.push(points);
        }
        let before = self.buf.labels.len();
        self.buf.labels.extend(labels);
        self.n_out.get_or_insert(self.buf.labels.len() - before);
        self.buf.rows += 1;
        self.next_seq += 1;
        self.buf.id_bytes.extend_from_slice(id);
        self.buf.id_end.push(self.buf.id_bytes.len());
        self.buf.long_ids |= id.len() > 8;
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
        for l in 0..self.n_scores {
            let file = tempfile::tempfile_in(&self.dir).map_err(|e| self.spill_err(e))?;
            let mut w = BufWriter::with_capacity(1 << 16, file);
            for k in self.buf.sorted_keys(l, self.n_scores) {
                write_row(&mut w, &self.buf, &k, n_out).map_err(|e| self.spill_err(e))?;
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

/// Writes the row of sort key `k` of `buf` to a run: 40 bytes (score, points, sequence
/// number, id length, the id's first eight bytes as in [`id_word`]), the labels, then the
/// id's bytes past the eighth. Every write but the last has a fixed size, and an id of at
/// most eight bytes comes from the key, not from the buffer.
fn write_row(w: &mut impl Write, buf: &Buffer, k: &SortKey, n_out: usize) -> std::io::Result<()> {
    let r = (k.2 & ROW_BITS) as usize;
    let points = buf.point(r);
    let seq = buf.seq(r);
    let long = k.2 >> 40 >= LONG_ID;
    let len = if long {
        buf.id(r).len() as u64
    } else {
        k.2 >> 40
    };
    let mut head = [0u8; 40];
    let score = score_of_key(k.0).to_bits();
    for (at, v) in [score, points.to_bits(), seq, len, k.1]
        .into_iter()
        .enumerate()
    {
        if let Some(b) = head.get_mut(8 * at..8 * at + 8) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    }
    w.write_all(&head)?;
    for v in buf
        .labels
        .get(r * n_out..(r + 1) * n_out)
        .unwrap_or_default()
    {
        w.write_all(&v.to_le_bytes())?;
    }
    if long {
        w.write_all(buf.id(r).get(8..).unwrap_or_default())?;
    }
    Ok(())
}

/// Reads one row written by [`write_row`]; `false` at the end of the run.
fn read_row(r: &mut impl Read, n_out: usize, row: &mut Row) -> std::io::Result<bool> {
    let mut head = [0u8; 40];
    match r.read_exact(&mut head) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        other => other?,
    }
    let field = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(head.get(8 * at..8 * at + 8).unwrap_or(&[0; 8]));
        u64::from_le_bytes(b)
    };
    row.score = f64::from_bits(field(0));
    row.points = f64::from_bits(field(1));
    row.seq = field(2);
    let len = field(3) as usize;
    row.id.clear();
    row.id
        .extend_from_slice(field(4).to_be_bytes().get(..len.min(8)).unwrap_or_default());
    row.labels.clear();
    let mut b4 = [0u8; 4];
    for _ in 0..n_out {
        r.read_exact(&mut b4)?;
        row.labels.push(f32::from_le_bytes(b4));
    }
    if len > 8 {
        row.id.resize(len, 0);
        r.read_exact(row.id.get_mut(8..).unwrap_or_default())?;
    }
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
        order: Vec<SortKey>,
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
                sorted.buf.row_into(&k, sorted.n_out, row);
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

    /// Score, id, points' bits, labels and position of every row in ranking order.
    fn rows(sorter: Sorter, l: usize) -> Vec<(f64, String, u64, Vec<f32>, u64)> {
        let mut s = sorter.finish().unwrap();
        let mut r = s.ranking(l).unwrap();
        let mut row = Row::default();
        let mut out = Vec::new();
        while r.next_into(&mut row).unwrap() {
            out.push((
                row.score,
                String::from_utf8(row.id.clone()).unwrap(),
                row.points.to_bits(),
                row.labels.clone(),
                row.seq,
            ));
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
                let id = match i % 3 {
                    0 => format!("c{:05}", (i * 31) % 5000),
                    1 => format!("customer-{:05}", (i * 17) % 900),
                    _ => format!("c{}", i % 7),
                };
                (a, b, id)
            })
            .collect();
        // Points from the 700th row on only (the rows before have none), labels per row.
        let fill = |budget| {
            let mut s = Sorter::new(2, budget, dir.path().to_path_buf());
            for (i, (a, b, id)) in data.iter().enumerate() {
                let points = if i < 700 { f64::NAN } else { i as f64 };
                s.push(
                    [*a, *b].into_iter(),
                    points,
                    [i as f32, 1.0].into_iter(),
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
            let mut seen: Vec<u64> = merged.iter().map(|r| r.4).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..5000).collect::<Vec<u64>>());
            for (_, _, points, labels, seq) in &merged {
                assert_eq!(labels, &[*seq as f32, 1.0]);
                let want = if *seq < 700 { f64::NAN } else { *seq as f64 };
                assert_eq!(*points, want.to_bits(), "row {seq}");
            }
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
            b.rows += 1;
            // Short ids, ids that are prefixes of others (with and without zero bytes),
            // ids longer than eight bytes sharing their first eight.
            let id: Vec<u8> = match i % 6 {
                0 | 1 => format!("c{}", (i * 31) % 17).into_bytes(),
                2 => format!("customer-{}", (i * 13) % 23).into_bytes(),
                3 => format!("customer{}", (i * 7) % 5).into_bytes(),
                4 => [b"c1".as_slice(), &vec![0u8; (1 + (i % 9)) as usize]].concat(),
                _ => b"customer".to_vec(),
            };
            b.long_ids |= id.len() > 8;
            b.id_bytes.extend_from_slice(&id);
            b.id_end.push(b.id_bytes.len());
        }
        assert!(b.long_ids);
        let mut want: Vec<usize> = (0..b.len()).collect();
        want.sort_by(|&x, &y| {
            order(
                b.scores[x],
                b.id(x),
                b.seq(x),
                b.scores[y],
                b.id(y),
                b.seq(y),
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
