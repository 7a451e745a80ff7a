//! Reading a CSV file by its schema into a [`Table`]: one pass, errors naming file, line
//! and column.

use std::path::Path;

use fedsilo_ml::table::Table;

use super::encode::{Cell, Chunk, Encoder};
use super::schema::Schema;
use super::{At, DataError};

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
    load_csv_chunk_ids(path, schema, chunk_rows, labels, &mut |c: Chunk| {
        sink(c.into_table())
    })
}

/// [`load_csv_chunks`] with each chunk's ids in one buffer ([`Chunk::ids`]): no string per
/// row.
pub(crate) fn load_csv_chunk_ids<E: From<DataError>>(
    path: &Path,
    schema: &Schema,
    chunk_rows: usize,
    labels: Labels,
    sink: &mut dyn FnMut(Chunk) -> Result<(), E>,
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
    let mut rows = 0;
    read_rows(
        file,
        &source_name,
        schema,
        None,
        Count::Lines,
        mode,
        &mut |c| {
            rows += c.n_rows();
            sink(c)
        },
    )?;
    Ok(rows)
}

/// One table for the whole input, or chunks of a given size.
#[derive(Clone, Copy)]
enum Mode {
    Whole,
    Chunks { rows: usize, labels: Labels },
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

/// How a reader counts positions: lines of a file, or rows of a query's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Count {
    Lines,
    /// Data rows (1-based), for CSV printed by a database (`COPY … TO STDOUT`).
    Rows,
}

fn read<R: std::io::Read>(
    reader: R,
    source_name: &str,
    schema: &Schema,
    size_hint: Option<u64>,
) -> Result<Table, DataError> {
    read_counted(reader, source_name, schema, size_hint, Count::Lines)
}

pub(crate) fn read_counted<R: std::io::Read>(
    reader: R,
    source_name: &str,
    schema: &Schema,
    size_hint: Option<u64>,
    count: Count,
) -> Result<Table, DataError> {
    let mut table = None;
    read_rows(
        reader,
        source_name,
        schema,
        size_hint,
        count,
        Mode::Whole,
        &mut |c| {
            table = Some(c.into_table());
            Ok::<(), DataError>(())
        },
    )?;
    table.ok_or(DataError::EmptyFile {
        source_name: source_name.to_string(),
    })
}

/// Streams CSV text from any reader in chunks, as [`load_csv_chunks`] streams a file:
/// `sink` gets each chunk in order; the number of rows is returned.
pub(crate) fn read_chunks_counted<R: std::io::Read, E: From<DataError>>(
    reader: R,
    source_name: &str,
    schema: &Schema,
    count: Count,
    chunk_rows: usize,
    labels: Labels,
    sink: &mut dyn FnMut(Table) -> Result<(), E>,
) -> Result<usize, E> {
    let mode = Mode::Chunks {
        rows: chunk_rows.max(1),
        labels,
    };
    let mut rows = 0;
    read_rows(reader, source_name, schema, None, count, mode, &mut |c| {
        rows += c.n_rows();
        sink(c.into_table())
    })?;
    Ok(rows)
}

/// The reading loop of every CSV input: the whole table (checked by [`Encoder::finish`]) or
/// chunks, each handed to `sink`.
///
/// Input is read ahead in blocks of whole lines ([`Input`]). While the text holds no quote
/// character and no carriage return other than before a line feed, a line is a record and
/// is split by hand ([`split_line`]) — and, when every feature is numeric, encoded straight
/// from its bytes ([`Encoder::push_numeric_line`]); from the first block that holds either,
/// the rest is read by the `csv` crate, which handles quoting. Both read the same records
/// (empty lines skipped, cells trimmed), so the result and every error are the same.
fn read_rows<R: std::io::Read, E: From<DataError>>(
    reader: R,
    source_name: &str,
    schema: &Schema,
    size_hint: Option<u64>,
    count: Count,
    mode: Mode,
    sink: &mut dyn FnMut(Chunk) -> Result<(), E>,
) -> Result<(), E> {
    let io = |source| DataError::Io {
        source_name: source_name.to_string(),
        source,
    };
    let delimiter = schema.delimiter as u8;
    let mut input = Input::new(reader);
    let header_line = input.first_line().map_err(io)?;
    let by_hand = !matches!(delimiter, b'"' | b'\r' | b'\n')
        && header_line.is_some_and(|len| {
            input
                .pending()
                .get(..len)
                .is_some_and(|l| plain_text(l) && !l.trim_ascii_end().is_empty())
        });
    let builder = || {
        let mut b = csv::ReaderBuilder::new();
        b.delimiter(delimiter)
            .has_headers(true)
            .flexible(true)
            // Fields are trimmed as they are read (`trim_ascii`, what `Trim::All` does, without
            // the csv crate's per-record copy).
            .trim(csv::Trim::Headers);
        b
    };
    let at_pos = |p: &csv::Position, lines: u64, records: u64| match count {
        Count::Lines => At::Line(p.line() + lines),
        Count::Rows => At::Row {
            group: None,
            row: p.record() + records,
        },
    };
    let header_line_of = |line: u64| match count {
        Count::Lines => At::Line(line),
        Count::Rows => At::Nowhere,
    };
    let header_err = |e: csv::Error| {
        let at = e.position().map_or(header_line_of(1), |p| at_pos(p, 0, 0));
        csv_error(e, source_name, at)
    };
    // The header, and the csv crate's reader when it reads the file from the start.
    let (header, body) = match header_line {
        Some(len) if by_hand => {
            let header = {
                let line = input.pending().get(..len).unwrap_or_default();
                let mut h = builder().from_reader(line);
                h.byte_headers().map_err(header_err)?.clone()
            };
            input.consume(len);
            (header, Body::ByHand(input))
        }
        _ => {
            let mut rdr = builder().from_reader(input.into_rest());
            let header = rdr.byte_headers().map_err(header_err)?.clone();
            (header, Body::Crate(rdr))
        }
    };
    if header.is_empty() {
        return Err(DataError::EmptyFile {
            source_name: source_name.to_string(),
        }
        .into());
    }
    let header_line = header.position().map_or(1, |p| p.line());
    let header_at = header_line_of(header_line);
    let n_fields = header.len();
    let names: Vec<String> = header
        .iter()
        .map(|raw| String::from_utf8_lossy(raw).into_owned())
        .collect();
    let hint = || delimiter_hint(&header, schema.delimiter);
    let (chunk_rows, labels) = match mode {
        Mode::Whole => (None, Labels::Required),
        Mode::Chunks { rows, labels } => (Some(rows), labels),
    };
    let enc = Encoder::with_labels(schema, source_name, &names, header_at, &hint, labels)?;
    let mut st = Rows {
        enc,
        source_name,
        count,
        n_fields,
        chunk_rows,
        size_hint,
        rows: 0,
        sink,
    };

    let mut input = match body {
        Body::Crate(mut rdr) => {
            st.csv_records(&mut rdr, 0, 0, header_line)?;
            return st.finish(header_at);
        }
        Body::ByHand(input) => input,
    };
    {
        let uses = st.enc.text_numeric_plan(n_fields);
        let mut ends: Vec<usize> = Vec::with_capacity(n_fields + 1);
        let mut line = header_line;
        loop {
            let block = input.block().map_err(io)?;
            if block.is_empty() {
                break;
            }
            let Some(text) = input.buf.get(block.clone()) else {
                break;
            };
            if !plain_text(text) {
                // Quoting (or a lone carriage return) from here on: the csv crate reads the
                // rest, from this block's first line (a record boundary).
                let mut b = builder();
                b.has_headers(false);
                let records = st.rows as u64 + 1;
                let mut rest = b.from_reader(input.into_rest());
                st.csv_records(&mut rest, line, records, header_line)?;
                return st.finish(header_at);
            }
            let mut pos = 0;
            while let Some(rest) = text.get(pos..).filter(|r| !r.is_empty()) {
                if let Some(u) = uses.as_deref() {
                    // One pass over the line's bytes, unless it is empty (skipped below).
                    if !matches!(rest, [b'\n', ..] | [b'\r', b'\n', ..]) {
                        st.begin_row_with(|| rest.iter().position(|&b| b == b'\n'));
                        if let Some(taken) = st.enc.push_numeric_line(u, rest, delimiter) {
                            pos += taken;
                            line += 1;
                            st.end_row()?;
                            continue;
                        }
                    }
                }
                let (record, next) = split_line(rest, delimiter, &mut ends);
                pos += next;
                line += 1;
                if record.is_empty() {
                    continue; // an empty line: no record, as the csv crate reads it
                }
                let at = st.row_at(line);
                st.begin_row(next as u64);
                if ends.len() != n_fields {
                    return Err(st.ragged(at, ends.len()).into());
                }
                let ends = &ends;
                st.enc
                    .push_row(|f| Cell::Text(field(record, ends, f).trim_ascii()), at)?;
                st.end_row()?;
            }
            input.consume(block.len());
        }
    }
    st.finish(header_at)
}

/// The data rows: split by hand, or read by the csv crate (from the start of the input).
enum Body<R> {
    ByHand(Input<R>),
    Crate(csv::Reader<std::io::Chain<std::io::Cursor<Vec<u8>>, R>>),
}

/// Field `f` of a record split by [`split_line`] (untrimmed; empty past the end).
fn field<'a>(record: &'a [u8], ends: &[usize], f: usize) -> &'a [u8] {
    let from = match f.checked_sub(1) {
        Some(p) => ends.get(p).map_or(usize::MAX, |e| e + 1),
        None => 0,
    };
    let to = ends.get(f).copied().unwrap_or(0);
    record.get(from..to).unwrap_or_default()
}

/// Splits the first line of `text`: returns the record (the line without its `\n` and a
/// `\r` before it) and the bytes the line took; `ends` gets the end of every field in the
/// record (the last one is the record's length).
fn split_line<'a>(text: &'a [u8], delimiter: u8, ends: &mut Vec<usize>) -> (&'a [u8], usize) {
    ends.clear();
    let mut len = text.len();
    for (i, &b) in text.iter().enumerate() {
        if b == delimiter {
            ends.push(i);
        } else if b == b'\n' {
            len = i;
            break;
        }
    }
    let taken = (len + 1).min(text.len());
    let mut end = len;
    if end > 0 && text.get(end - 1) == Some(&b'\r') {
        end -= 1;
    }
    // The delimiters are all before `end`: a `\r` is not a delimiter here.
    ends.push(end);
    (text.get(..end).unwrap_or_default(), taken)
}

/// Whether `text` can be split into records line by line: no quote character, and every
/// carriage return just before a line feed. One SIMD scan for both bytes (`memchr2`): most
/// blocks hold neither.
fn plain_text(text: &[u8]) -> bool {
    memchr::memchr2_iter(b'"', b'\r', text)
        .all(|i| text.get(i) == Some(&b'\r') && text.get(i + 1) == Some(&b'\n'))
}

/// Bytes read ahead of the parsers, in a buffer of whole lines.
struct Input<R> {
    inner: R,
    buf: Vec<u8>,
    /// The bytes read and not consumed: `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
}

/// The read-ahead buffer's size (it grows for a longer line).
const BLOCK: usize = 1 << 20;

impl<R: std::io::Read> Input<R> {
    fn new(inner: R) -> Self {
        Input {
            inner,
            buf: vec![0; BLOCK],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    fn pending(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Reads once more (moving the pending bytes to the front, growing a full buffer);
    /// sets `eof` at the end of the input.
    fn fill(&mut self) -> std::io::Result<()> {
        if self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len().max(BLOCK) * 2, 0);
        }
        loop {
            let Some(space) = self.buf.get_mut(self.end..) else {
                return Ok(());
            };
            match self.inner.read(space) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The length of the first line with its `\n`, once it is read; `None` when the input
    /// ends without one.
    fn first_line(&mut self) -> std::io::Result<Option<usize>> {
        loop {
            if let Some(p) = self.pending().iter().position(|&b| b == b'\n') {
                return Ok(Some(p + 1));
            }
            if self.eof {
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// The next block of whole lines (the pending bytes to the last `\n`, or to the end of
    /// the input), as a range of `buf`; empty at the end. Not consumed.
    fn block(&mut self) -> std::io::Result<std::ops::Range<usize>> {
        loop {
            if !self.eof && self.end - self.start < BLOCK / 2 {
                self.fill()?;
                continue;
            }
            match self.pending().iter().rposition(|&b| b == b'\n') {
                Some(p) => return Ok(self.start..self.start + p + 1),
                None if self.eof => return Ok(self.start..self.end),
                None => self.fill()?,
            }
        }
    }

    /// The pending bytes, then the rest of the input.
    fn into_rest(mut self) -> std::io::Chain<std::io::Cursor<Vec<u8>>, R> {
        self.buf.truncate(self.end);
        self.buf.drain(..self.start);
        std::io::Read::chain(std::io::Cursor::new(self.buf), self.inner)
    }
}

/// The rows of one CSV input as they are encoded: chunks cut and handed on, positions.
struct Rows<'a, 's, E> {
    enc: Encoder<'s>,
    source_name: &'a str,
    count: Count,
    n_fields: usize,
    chunk_rows: Option<usize>,
    size_hint: Option<u64>,
    /// Data rows read.
    rows: usize,
    sink: &'a mut dyn FnMut(Chunk) -> Result<(), E>,
}

impl<E: From<DataError>> Rows<'_, '_, E> {
    /// Where the data row starting on `line` is.
    fn row_at(&self, line: u64) -> At {
        match self.count {
            Count::Lines => At::Line(line),
            Count::Rows => At::Row {
                group: None,
                row: self.rows as u64 + 1,
            },
        }
    }

    fn ragged(&self, at: At, found: usize) -> DataError {
        DataError::RaggedRow {
            source_name: self.source_name.to_string(),
            at,
            expected: self.n_fields,
            found,
        }
    }

    /// Before a row is pushed: room for the chunk it starts, or, reading a whole file, for
    /// all the rows its size suggests (from the first row's length, `row_bytes`).
    fn begin_row(&mut self, row_bytes: u64) {
        match self.chunk_rows {
            Some(c) if self.rows % c == 0 => self.enc.reserve(c),
            None if self.rows == 0 => {
                if let Some(total) = self.size_hint {
                    let est = (total / row_bytes.max(1) + 1) as usize;
                    self.enc.reserve(est.saturating_add(est / 8));
                }
            }
            _ => {}
        }
    }

    /// [`Rows::begin_row`] with the row's length found only when it is needed.
    fn begin_row_with(&mut self, row_bytes: impl FnOnce() -> Option<usize>) {
        let needed = self.chunk_rows.is_none() && self.rows == 0;
        let bytes = if needed {
            row_bytes().unwrap_or(0) + 1
        } else {
            1
        };
        self.begin_row(bytes as u64);
    }

    /// After a row is pushed: a full chunk goes to the sink.
    fn end_row(&mut self) -> Result<(), E> {
        self.rows += 1;
        if self.chunk_rows.is_some_and(|c| self.rows % c == 0) {
            (self.sink)(self.enc.take_chunk_ids()?)?;
        }
        Ok(())
    }

    /// Reads the rest of the records with the csv crate; its positions are offset by `lines`
    /// lines and `records` records (what came before it).
    fn csv_records<R: std::io::Read>(
        &mut self,
        rdr: &mut csv::Reader<R>,
        lines: u64,
        records: u64,
        header_line: u64,
    ) -> Result<(), E> {
        let mut rec = csv::ByteRecord::new();
        let start = rdr.position().byte();
        loop {
            let fallback = self.row_at(header_line + self.rows as u64 + 1);
            let more = rdr.read_byte_record(&mut rec).map_err(|e| {
                let at = e.position().map_or(fallback, |p| match self.count {
                    Count::Lines => At::Line(p.line() + lines),
                    Count::Rows => At::Row {
                        group: None,
                        row: p.record() + records,
                    },
                });
                csv_error(e, self.source_name, at)
            })?;
            if !more {
                return Ok(());
            }
            let line = rec
                .position()
                .map_or(header_line + self.rows as u64 + 1, |p| p.line() + lines);
            let at = self.row_at(line);
            self.begin_row(rdr.position().byte().saturating_sub(start));
            if rec.len() != self.n_fields {
                return Err(self.ragged(at, rec.len()).into());
            }
            let rec = &rec;
            self.enc.push_row(
                |f| Cell::Text(rec.get(f).unwrap_or_default().trim_ascii()),
                at,
            )?;
            self.end_row()?;
        }
    }

    /// After the last row: the whole table, or the last chunk.
    fn finish(mut self, header_at: At) -> Result<(), E> {
        let src = || self.source_name.to_string();
        match self.chunk_rows {
            None => (self.sink)(Chunk::from_table(self.enc.finish(header_at)?)),
            Some(_) if self.enc.read() == 0 => Err(DataError::NoDataRows {
                source_name: src(),
                at: header_at,
            }
            .into()),
            Some(_) if self.enc.rows() == 0 => Err(DataError::EmptyCohort {
                source_name: src(),
                cohort: self.enc.cohort_text(),
                rows: self.enc.read(),
            }
            .into()),
            Some(c) if self.rows % c != 0 => (self.sink)(self.enc.take_chunk_ids()?),
            Some(_) => Ok(()),
        }
    }
}

/// A CSV reader's error as a [`DataError`] of `source_name` at `at`: an I/O failure as such,
/// anything else as malformed CSV there.
pub(crate) fn csv_error(e: csv::Error, source_name: &str, at: At) -> DataError {
    if e.is_io_error() {
        DataError::Io {
            source_name: source_name.to_string(),
            source: e.into(),
        }
    } else {
        DataError::Csv {
            source_name: source_name.to_string(),
            at,
            source: e,
        }
    }
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

#[cfg(test)]
mod plain_text_tests {
    use super::plain_text;

    /// The one-scan check against its definition, byte by byte, on texts dense in the bytes
    /// that matter.
    #[test]
    fn plain_text_is_no_quote_and_every_cr_before_a_lf() {
        use rand::{Rng, SeedableRng};
        let by_definition = |t: &[u8]| {
            !t.contains(&b'"')
                && t.iter()
                    .enumerate()
                    .all(|(i, &b)| b != b'\r' || t.get(i + 1) == Some(&b'\n'))
        };
        for t in [
            &b""[..],
            b"a,b\n",
            b"a\"b",
            b"a\r\nb\r\n",
            b"a\rb",
            b"a\r",
            b"\r\n\"",
            b"\n\r",
        ] {
            assert_eq!(plain_text(t), by_definition(t), "{t:?}");
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut plain = 0;
        for _ in 0..20_000 {
            let n = rng.random_range(0..200);
            let t: Vec<u8> = (0..n)
                .map(|_| match rng.random_range(0..100) {
                    0 => b'"',
                    1..=3 => b'\r',
                    4..=10 => b'\n',
                    _ => b'1',
                })
                .collect();
            let want = by_definition(&t);
            plain += usize::from(want);
            assert_eq!(plain_text(&t), want, "{t:?}");
        }
        assert!(
            plain > 1_000 && plain < 19_000,
            "both answers tried: {plain}"
        );
    }
}
