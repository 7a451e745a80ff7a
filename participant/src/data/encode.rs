//! The schema's encoding rules, shared by every source (CSV, Parquet, PostgreSQL): a source
//! names its columns once ([`Encoder::new`]) and hands over one row of cells at a time
//! ([`Encoder::push_row`]); the encoder writes them straight into the row-major feature
//! buffer and checks the labels at the end ([`Encoder::finish`]).

use std::collections::HashMap;

use fedsilo_ml::table::Table;
use ndarray::Array2;

use super::derive::Derivation;
use super::expr::Truth;
use super::schema::{FeatureKind, FeatureSpec, LabelRule, Schema};
use super::{At, DataError, DelimiterHint, Labels};

/// One cell as a source holds it. CSV cells are always text; Parquet cells are typed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cell<'a> {
    /// SQL/Parquet NULL (a CSV's empty cell is `Text(b"")`, also missing).
    Null,
    Text(&'a [u8]),
    Number(f64),
    /// An integer (formatted without a decimal point when read as a category or an id).
    Integer(i64),
    Bool(bool),
}

/// What a text row's field is to [`Encoder::push_numeric_line`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldUse {
    /// Not read.
    Skip,
    /// The id column.
    Id,
    /// A numeric feature, written to this column.
    Number(usize),
}

/// How one input column is written into the output row.
enum Slot {
    Numeric {
        out: usize,
    },
    Boolean {
        out: usize,
    },
    Categorical {
        out: usize,
        lookup: HashMap<Vec<u8>, usize>,
        /// The `other` bucket's offset, when the feature has one.
        other: Option<usize>,
    },
}

struct FeaturePlan<'s> {
    field: usize,
    spec: &'s FeatureSpec,
    slot: Slot,
}

/// Where a label's value comes from.
enum LabelSource {
    /// A source field, read by the label's `positive` rule.
    Field(usize),
    /// The label's condition on the full row.
    Derived,
}

struct LabelPlan {
    /// The schema label.
    li: usize,
    source: LabelSource,
}

/// A boolean word's truth: true/yes/y/t/1 → true, false/no/n/f/0 → false (any case).
pub(crate) fn boolean_value(cell: &[u8]) -> Option<bool> {
    const TRUE: [&str; 5] = ["true", "yes", "y", "t", "1"];
    const FALSE: [&str; 5] = ["false", "no", "n", "f", "0"];
    if TRUE.iter().any(|w| cell.eq_ignore_ascii_case(w.as_bytes())) {
        Some(true)
    } else if FALSE
        .iter()
        .any(|w| cell.eq_ignore_ascii_case(w.as_bytes()))
    {
        Some(false)
    } else {
        None
    }
}

/// The text of a typed cell, for category lookups, labels and ids (`None` for NULL).
fn cell_text<'a>(cell: &Cell<'a>, scratch: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    use std::io::Write;
    match *cell {
        Cell::Null => None,
        Cell::Text(t) => Some(t),
        Cell::Number(v) => {
            scratch.clear();
            let _ = write!(scratch, "{v}");
            Some(scratch.as_slice())
        }
        Cell::Integer(v) => {
            scratch.clear();
            let _ = write!(scratch, "{v}");
            Some(scratch.as_slice())
        }
        Cell::Bool(b) => Some(if b { b"true" } else { b"false" }),
    }
}

/// A row's id as the row path finds it.
enum IdText<'a> {
    Text(&'a [u8]),
    /// The data row's number (no id column).
    Number(usize),
}

/// The ids of a chunk's rows in one buffer: each id's UTF-8 text (invalid bytes replaced, as
/// `String::from_utf8_lossy` does) and where it ends.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Ids {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Ids {
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Id `r`'s text (empty past the end).
    pub(crate) fn get(&self, r: usize) -> &[u8] {
        let start = match r.checked_sub(1) {
            Some(p) => self.ends.get(p).copied().unwrap_or(usize::MAX),
            None => 0,
        };
        let end = self.ends.get(r).copied().unwrap_or(0);
        self.bytes.get(start..end).unwrap_or_default()
    }

    fn reserve(&mut self, rows: usize) {
        self.ends.reserve(rows);
        self.bytes.reserve(rows.saturating_mul(8));
    }

    fn push_text(&mut self, t: &[u8]) {
        match std::str::from_utf8(t) {
            Ok(_) => self.bytes.extend_from_slice(t),
            Err(_) => self
                .bytes
                .extend_from_slice(String::from_utf8_lossy(t).as_bytes()),
        }
        self.ends.push(self.bytes.len());
    }

    fn push_number(&mut self, n: usize) {
        use std::io::Write as _;
        let _ = write!(self.bytes, "{n}");
        self.ends.push(self.bytes.len());
    }

    fn truncate(&mut self, len: usize) {
        self.ends.truncate(len);
        self.bytes.truncate(self.ends.last().copied().unwrap_or(0));
    }

    /// One string per id.
    pub(crate) fn into_strings(self) -> Vec<String> {
        (0..self.len())
            .map(|r| String::from_utf8_lossy(self.get(r)).into_owned())
            .collect()
    }
}

/// A chunk of rows as the readers hand it on: the table, and its ids in one buffer when the
/// reader kept them so (then `table.ids` is empty).
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) table: Table,
    pub(crate) ids: Option<Ids>,
}

impl Chunk {
    /// A table with its ids in `table.ids`.
    pub(crate) fn from_table(table: Table) -> Chunk {
        Chunk { table, ids: None }
    }

    /// The table with every id in `ids`.
    pub(crate) fn into_table(self) -> Table {
        let mut table = self.table;
        if let Some(ids) = self.ids {
            table.ids = ids.into_strings();
        }
        table
    }

    pub(crate) fn n_rows(&self) -> usize {
        self.table.n_rows()
    }

    /// Row `r`'s id (empty past the end).
    pub(crate) fn id(&self, r: usize) -> &[u8] {
        match &self.ids {
            Some(ids) => ids.get(r),
            None => self.table.ids.get(r).map_or(&[][..], |s| s.as_bytes()),
        }
    }
}

pub(crate) struct Encoder<'s> {
    schema: &'s Schema,
    source_name: String,
    plans: Vec<FeaturePlan<'s>>,
    id_field: Option<usize>,
    /// The labels read, in the schema's order.
    labels: Vec<LabelPlan>,
    /// [`Labels::IfPresent`]: a missing label cell reads as `NaN`.
    lenient_labels: bool,
    /// The schema's expressions; `row` is the full row they are evaluated on.
    derivation: Derivation,
    row: Vec<f32>,
    /// Width of the table's rows.
    width: usize,
    missing: Vec<Vec<u8>>,
    /// Whether some token of `missing` starts with this byte.
    missing_first: [bool; 256],
    missing_hint: String,
    label_seen: Vec<Vec<Vec<u8>>>,
    x: Vec<f32>,
    y: Vec<f32>,
    ids: Ids,
    /// Rows kept (in the cohort) and data rows read.
    rows: usize,
    read: usize,
    scratch: Vec<u8>,
    /// Where each field of a line ends ([`Encoder::push_plain_line`]).
    line_ends: Vec<usize>,
}

/// Distinct label values remembered (a few), to say what the file holds when a label has
/// one class.
const MAX_SEEN: usize = 20;

impl<'s> Encoder<'s> {
    /// Maps the schema's columns onto the source's `header` (its column names in field
    /// order). `header_at` is where the header is (for errors); `hint` explains a missing
    /// column when the source can (a CSV read with the wrong delimiter).
    pub(crate) fn new(
        schema: &'s Schema,
        source_name: &str,
        header: &[String],
        header_at: At,
        hint: &dyn Fn() -> Option<DelimiterHint>,
    ) -> Result<Self, DataError> {
        Self::with_labels(
            schema,
            source_name,
            header,
            header_at,
            hint,
            Labels::Required,
        )
    }

    /// [`Encoder::new`] reading the schema's labels as `labels` says.
    pub(crate) fn with_labels(
        schema: &'s Schema,
        source_name: &str,
        header: &[String],
        header_at: At,
        hint: &dyn Fn() -> Option<DelimiterHint>,
        labels: Labels,
    ) -> Result<Self, DataError> {
        let lenient_labels = labels == Labels::IfPresent;
        let src = || source_name.to_string();
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(header.len());
        for (i, name) in header.iter().enumerate() {
            if let Some(&first) = index.get(name.as_str()) {
                return Err(DataError::DuplicateColumn {
                    source_name: src(),
                    at: header_at,
                    column: name.clone(),
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
                    at: header_at,
                    role,
                    column: column.to_string(),
                    similar: header
                        .iter()
                        .find(|h| h.eq_ignore_ascii_case(column))
                        .map(|h| format!(" (there is '{h}': names are case-sensitive)"))
                        .unwrap_or_default(),
                    hint: hint(),
                })
        };
        let id_field = schema
            .id_column
            .as_deref()
            .map(|c| find(c, "id"))
            .transpose()?;
        let derivation = Derivation::new(schema).map_err(|source| DataError::Expr {
            source_name: src(),
            source,
        })?;
        let mut plans = Vec::with_capacity(schema.features.len() + schema.inputs.len());
        let mut absent_inputs: Vec<&str> = Vec::new();
        let mut out = 0;
        let specs = schema
            .features
            .iter()
            .map(|f| (f, "feature"))
            .chain(schema.inputs.iter().map(|f| (f, "input")));
        for (spec, role) in specs {
            let at = out;
            out += spec.width();
            let field = match index.get(spec.name.as_str()) {
                Some(&field) => field,
                // A scoring file need not hold the inputs of labels it does not carry.
                None if lenient_labels && role == "input" => {
                    absent_inputs.push(&spec.name);
                    continue;
                }
                None => find(&spec.name, role)?,
            };
            let slot = match &spec.kind {
                FeatureKind::Numeric => Slot::Numeric { out: at },
                FeatureKind::Boolean => Slot::Boolean { out: at },
                FeatureKind::Categorical { categories, other } => Slot::Categorical {
                    out: at,
                    lookup: categories
                        .iter()
                        .enumerate()
                        .map(|(k, c)| (c.as_bytes().to_vec(), k))
                        .collect(),
                    other: other.then_some(categories.len()),
                },
            };
            plans.push(FeaturePlan { field, spec, slot });
        }
        let mut labels = Vec::with_capacity(schema.labels.len());
        for (li, l) in schema.labels.iter().enumerate() {
            let source = match &l.rule {
                LabelRule::Positive(_) => match index.get(l.column.as_str()) {
                    Some(&field) => LabelSource::Field(field),
                    None if lenient_labels => continue,
                    None => LabelSource::Field(find(&l.column, "label")?),
                },
                LabelRule::Derive(_) => {
                    let reads = derivation.label_reads(li);
                    if absent_inputs.iter().any(|a| reads.iter().any(|r| r == a)) {
                        continue;
                    }
                    LabelSource::Derived
                }
            };
            labels.push(LabelPlan { li, source });
        }
        // What the derived columns and the cohort read must be there.
        if !absent_inputs.is_empty() {
            let all: Vec<&String> = schema.derive.keys().collect();
            let needed = super::derive::names_needed(schema, &all, false).map_err(|source| {
                DataError::Expr {
                    source_name: src(),
                    source,
                }
            })?;
            if let Some(a) = absent_inputs.iter().find(|a| needed.contains(**a)) {
                find(a, "input")?;
            }
        }
        let missing_hint = if schema.missing.is_empty() {
            "; list other missing-value tokens with `missing = [...]` in the schema".to_string()
        } else {
            format!(
                " or one of {}; list other tokens with `missing = [...]` in the schema",
                quoted_list(&schema.missing)
            )
        };
        Ok(Encoder {
            schema,
            source_name: source_name.to_string(),
            plans,
            id_field,
            labels,
            lenient_labels,
            width: derivation.out_width(),
            row: Vec::with_capacity(derivation.out_width() + out),
            derivation,
            missing: schema
                .missing
                .iter()
                .map(|m| m.as_bytes().to_vec())
                .collect(),
            missing_first: {
                let mut first = [false; 256];
                for m in &schema.missing {
                    if let Some(f) = m
                        .as_bytes()
                        .first()
                        .and_then(|&b| first.get_mut(usize::from(b)))
                    {
                        *f = true;
                    }
                }
                first
            },
            missing_hint,
            label_seen: vec![Vec::new(); schema.labels.len()],
            x: Vec::new(),
            y: Vec::new(),
            ids: Ids::default(),
            rows: 0,
            read: 0,
            scratch: Vec::new(),
            line_ends: Vec::new(),
        })
    }

    /// Reserves room for `rows` more rows.
    pub(crate) fn reserve(&mut self, rows: usize) {
        self.x.reserve(rows.saturating_mul(self.width));
        self.y
            .reserve(rows.saturating_mul(self.schema.labels.len()));
        self.ids.reserve(rows);
    }

    fn is_missing(&self, cell: &Cell<'_>) -> bool {
        is_missing(&self.missing, cell)
    }

    /// The (source field, output column) of every feature when rows can be encoded column
    /// by column ([`Encoder::push_numeric_rows`]): every feature numeric, and no inputs,
    /// derived columns, cohort or labels read. `None` otherwise.
    pub(crate) fn numeric_columns(&self) -> Option<Vec<(usize, usize)>> {
        if !self.labels.is_empty()
            || !self.derivation.derived().is_empty()
            || self.derivation.cohort().is_some()
            || self.derivation.read_width() != self.width
        {
            return None;
        }
        self.plans
            .iter()
            .map(|p| match p.slot {
                Slot::Numeric { out } if out < self.width => Some((p.field, out)),
                _ => None,
            })
            .collect()
    }

    /// Encodes `n` rows at once, column by column, into the feature buffer: `cell(k, r)` is
    /// row `r`'s cell of `columns[k]` (as from [`Encoder::numeric_columns`]; each column is
    /// asked for its rows in order), `id(r)` its id cell. What [`Encoder::push_row`] would
    /// write for each row, without its per-row work. Returns `false`, with nothing pushed,
    /// when a cell is not a number or an id is missing: the caller then pushes those rows
    /// one by one, which reports the first bad cell as always.
    pub(crate) fn push_numeric_rows<'r>(
        &mut self,
        n: usize,
        columns: &[(usize, usize)],
        mut cell: impl FnMut(usize, usize) -> Cell<'r>,
        id: impl FnMut(usize) -> Cell<'r>,
    ) -> bool {
        let w = self.width;
        let start = self.x.len();
        self.x.resize(start + n * w, f32::NAN);
        let missing = &self.missing;
        let Some(rows) = self.x.get_mut(start..) else {
            return false;
        };
        let mut ok = true;
        'columns: for (k, &(_, out)) in columns.iter().enumerate() {
            for (r, row) in rows.chunks_exact_mut(w.max(1)).enumerate().take(n) {
                let c = cell(k, r);
                let v = if is_missing(missing, &c) {
                    f32::NAN
                } else if let Some(v) = numeric(c) {
                    v
                } else {
                    ok = false;
                    break 'columns;
                };
                if let Some(slot) = row.get_mut(out) {
                    *slot = v;
                }
            }
        }
        self.commit_rows(start, n, ok, id)
    }

    /// How each source field of a text row is used when rows can be encoded without the row
    /// path (as for [`Encoder::numeric_columns`]): `n_fields` uses, each field at most one
    /// use. `None` when the schema needs the row path, or a field is read twice.
    pub(crate) fn text_numeric_plan(&self, n_fields: usize) -> Option<Vec<FieldUse>> {
        let mut uses = vec![FieldUse::Skip; n_fields];
        for (field, out) in self.numeric_columns()? {
            let u = uses.get_mut(field)?;
            if *u != FieldUse::Skip {
                return None;
            }
            *u = FieldUse::Number(out);
        }
        if let Some(field) = self.id_field {
            let u = uses.get_mut(field)?;
            if *u != FieldUse::Skip {
                return None;
            }
            *u = FieldUse::Id;
        }
        Some(uses)
    }

    /// Encodes the delimited text line at the start of `text` by `uses`
    /// ([`Encoder::text_numeric_plan`]), parsing each plain decimal as it is scanned (one
    /// pass over the bytes, no split first; eight bytes at a time where the decimal is short,
    /// [`super::number::plain_decimal_prefix`]); any other cell is trimmed, checked for the
    /// missing tokens and parsed as [`Encoder::push_row`] does. Returns the bytes the line
    /// took (with its `\n`), or `None`, with nothing pushed, when the line is not one
    /// record of `uses.len()` fields of finite numbers with an id: the caller then splits it
    /// and pushes it by the row path, which reports what is wrong. `text` must not start
    /// with an empty line.
    pub(crate) fn push_numeric_line(
        &mut self,
        uses: &[FieldUse],
        text: &[u8],
        delimiter: u8,
    ) -> Option<usize> {
        self.push_plain_line(uses, text, delimiter)
            .or_else(|| self.push_scanned_line(uses, text, delimiter))
    }

    /// [`Encoder::push_numeric_line`] for the plainest lines, in two passes so that no cell
    /// waits for the one before it: the field ends are found first, eight bytes at a time
    /// (`number::byte_mask`), then every cell is read on its own: empty (missing), or a
    /// plain decimal that is the whole cell — one word for a cell of up to eight bytes
    /// (`number::short_decimal`), its prefix for a longer one (`number::plain_decimal_prefix`)
    /// —, not starting like a missing-value token; the id untrimmed-or-trimmed as the general path
    /// trims it. `None`, with nothing pushed, for any other line (a longer or odd cell, a
    /// `\r`, the end of the text within eight bytes, fewer or more fields): the general path
    /// reads it.
    fn push_plain_line(&mut self, uses: &[FieldUse], text: &[u8], delimiter: u8) -> Option<usize> {
        use super::number::{byte_mask, plain_decimal_prefix, short_decimal, word};
        let n = uses.len();
        // Pass 1: the end of each of the `n` fields, the last one's at the line's `\n`.
        let ends = &mut self.line_ends;
        ends.clear();
        ends.resize(n + 8, 0);
        let mut found = 0usize;
        let mut at = 0usize;
        let line_end = loop {
            let w = word(text, at)?;
            let nl = byte_mask(w, b'\n');
            let mut d = byte_mask(w, delimiter);
            if nl != 0 {
                d &= (nl & nl.wrapping_neg()) - 1; // the delimiters before the `\n`
            }
            let count = d.count_ones() as usize;
            if found + count >= n {
                return None; // more fields than the header
            }
            // Two ends written whether or not the word holds them (most hold one or two;
            // a slot past the word's count is written again later, or lies past the `n`
            // read), so the loop's exit is rarely a guess; more in the loop.
            let mut k = found;
            for _ in 0..2 {
                if let Some(e) = ends.get_mut(k) {
                    *e = at + (d.trailing_zeros() / 8) as usize;
                }
                k += 1;
                d &= d.wrapping_sub(1);
            }
            while d != 0 {
                *ends.get_mut(k)? = at + (d.trailing_zeros() / 8) as usize;
                k += 1;
                d &= d - 1;
            }
            found += count;
            if nl != 0 {
                break at + (nl.trailing_zeros() / 8) as usize;
            }
            at += 8;
        };
        if found + 1 != n {
            return None; // fewer fields than the header
        }
        *ends.get_mut(found)? = line_end;
        // Pass 2: the cells.
        let start = self.x.len();
        self.x.resize(start + self.width, f32::NAN);
        let row = self.x.get_mut(start..)?;
        let mut id = None;
        let mut from = 0usize;
        let mut plain = true;
        for (&u, &end) in uses.iter().zip(ends.iter()) {
            match u {
                FieldUse::Skip => {}
                FieldUse::Id => id = Some((from, end)),
                FieldUse::Number(out) => {
                    if end > from {
                        let first = text.get(from).copied().unwrap_or(b'\n');
                        let token = self
                            .missing_first
                            .get(usize::from(first))
                            .copied()
                            .unwrap_or(true);
                        // A cell of up to eight bytes from one word; a longer one (or one
                        // too near the end of the text for a word) from its prefix.
                        let len = end - from;
                        let value = match word(text, from) {
                            Some(w) if len <= 8 => short_decimal(w, len),
                            _ => text
                                .get(from..)
                                .and_then(plain_decimal_prefix)
                                .and_then(|(v, n)| (n == len).then_some(v)),
                        };
                        match value {
                            Some(v) if !token => {
                                if let Some(slot) = row.get_mut(out) {
                                    *slot = v;
                                }
                            }
                            _ => plain = false,
                        }
                    }
                }
            }
            from = end + 1;
        }
        let id_text = match (self.id_field, id) {
            (None, _) => None,
            (Some(_), Some((a, b))) => {
                let t = text.get(a..b).unwrap_or_default().trim_ascii();
                if t.is_empty() {
                    plain = false;
                }
                Some(t)
            }
            (Some(_), None) => {
                plain = false;
                None
            }
        };
        if !plain {
            self.x.truncate(start);
            return None;
        }
        match id_text {
            Some(t) => self.ids.push_text(t),
            None => self.ids.push_number(self.read + 1),
        }
        self.read += 1;
        self.rows += 1;
        Some(line_end + 1)
    }

    /// [`Encoder::push_numeric_line`] cell by cell, each scanned to its end: every line the
    /// two-pass [`Encoder::push_plain_line`] leaves.
    fn push_scanned_line(
        &mut self,
        uses: &[FieldUse],
        text: &[u8],
        delimiter: u8,
    ) -> Option<usize> {
        const POW10: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
        let start = self.x.len();
        self.x.resize(start + self.width, f32::NAN);
        let mut id: Option<(usize, usize)> = None;
        let mut pos = 0usize;
        let n = uses.len();
        let mut ok = self.x.len() == start + self.width;
        for (f, &u) in uses.iter().enumerate() {
            if !ok {
                break;
            }
            let last = f + 1 == n;
            if let FieldUse::Number(out) = u {
                // An empty cell (but the last): missing, as the general path finds it.
                if !last && text.get(pos) == Some(&delimiter) {
                    pos += 1;
                    continue;
                }
                // The common cell: a short plain decimal read eight bytes at a time
                // (`number::plain_decimal_prefix`), ended by the delimiter (or, in the last
                // field, the line's `\n`). Anything else takes the general path below.
                let token = text
                    .get(pos)
                    .and_then(|&b| self.missing_first.get(usize::from(b)))
                    .copied()
                    .unwrap_or(true);
                if !token {
                    if let Some((v, len)) = text
                        .get(pos..)
                        .and_then(super::number::plain_decimal_prefix)
                    {
                        let end = pos + len;
                        let ends = match text.get(end) {
                            Some(&b) if b == delimiter => !last,
                            Some(b'\n') => last,
                            _ => false,
                        };
                        if ends {
                            if let Some(slot) = self.x.get_mut(start + out) {
                                *slot = v;
                                pos = end + 1;
                                continue;
                            }
                        }
                    }
                }
            }
            let from = pos;
            let mut parsed = None;
            if let FieldUse::Number(_) = u {
                // A plain decimal ending at the field's end: Clinger's fast path, as
                // `number::parse_plain_decimal` (a cell that may be a missing token is not).
                let first = text.get(pos).copied().unwrap_or(b'\n');
                let token = self
                    .missing_first
                    .get(usize::from(first))
                    .copied()
                    .unwrap_or(true);
                if !token {
                    let mut i = pos;
                    let negative = match first {
                        b'-' => {
                            i += 1;
                            true
                        }
                        b'+' => {
                            i += 1;
                            false
                        }
                        _ => false,
                    };
                    let (mut mantissa, mut digits, mut frac, mut point) =
                        (0u32, 0u32, 0usize, false);
                    loop {
                        match text.get(i) {
                            Some(&d @ b'0'..=b'9') => {
                                mantissa = mantissa * 10 + u32::from(d - b'0');
                                if mantissa >= 1 << 24 {
                                    digits = 0;
                                    break;
                                }
                                digits += 1;
                                frac += usize::from(point);
                            }
                            Some(b'.') if !point => point = true,
                            _ => break,
                        }
                        i += 1;
                    }
                    let ends = match text.get(i) {
                        None | Some(b'\n') => true,
                        Some(b'\r') => text.get(i + 1).is_none_or(|&b| b == b'\n'),
                        Some(&b) => b == delimiter,
                    };
                    if digits > 0 && ends {
                        if let Some(&scale) = POW10.get(frac) {
                            let v = mantissa as f32 / scale;
                            parsed = Some(if negative { -v } else { v });
                            pos = i;
                        }
                    }
                }
            }
            if parsed.is_none() {
                while let Some(&b) = text.get(pos) {
                    if b == delimiter || b == b'\n' {
                        break;
                    }
                    pos += 1;
                }
            }
            let end = pos;
            // A number parsed up to a `\r\n` (or a final `\r`) ends the line there.
            if last
                && parsed.is_some()
                && text.get(pos) == Some(&b'\r')
                && text.get(pos + 1).is_none_or(|&b| b == b'\n')
            {
                pos += 1;
            }
            let mut end = end;
            match text.get(pos) {
                Some(&b) if b == delimiter && !last => pos += 1,
                Some(b'\n') if last => {
                    if end > from && text.get(end - 1) == Some(&b'\r') {
                        end -= 1;
                    }
                    pos += 1;
                }
                None if last => {
                    if end > from && text.get(end - 1) == Some(&b'\r') {
                        end -= 1;
                    }
                }
                _ => ok = false, // more or fewer fields than the header
            }
            if !ok {
                break;
            }
            let cell = || text.get(from..end).unwrap_or_default().trim_ascii();
            match u {
                FieldUse::Skip => {}
                FieldUse::Id => id = Some((from, end)),
                FieldUse::Number(out) => {
                    let v = match parsed {
                        Some(v) => v,
                        None => {
                            let t = cell();
                            if t.is_empty() || self.missing.iter().any(|m| m.as_slice() == t) {
                                continue;
                            }
                            match parse_finite(t) {
                                Some(v) => v,
                                None => {
                                    ok = false;
                                    break;
                                }
                            }
                        }
                    };
                    match self.x.get_mut(start + out) {
                        Some(slot) => *slot = v,
                        None => ok = false,
                    }
                }
            }
        }
        let pushed = match (ok, self.id_field, id) {
            (false, _, _) => false,
            (true, None, _) => {
                self.ids.push_number(self.read + 1);
                true
            }
            (true, Some(_), Some((a, b))) => {
                let t = text.get(a..b).unwrap_or_default().trim_ascii();
                !t.is_empty() && {
                    self.ids.push_text(t);
                    true
                }
            }
            (true, Some(_), None) => false,
        };
        if !pushed {
            self.x.truncate(start);
            return None;
        }
        self.read += 1;
        self.rows += 1;
        Some(pos)
    }

    /// Encodes `n` rows at once when every feature is numeric ([`Encoder::numeric_columns`]):
    /// `write(rows, width)` fills the `n` rows (row-major, `width` wide, every cell `NaN` to
    /// begin with: missing) and `id(r)` gives row `r`'s id cell. What [`Encoder::push_row`]
    /// would write for each row when `write` writes each present value as a finite `f32`.
    /// Returns `false`, with nothing pushed, when `write` does (a value it cannot write) or
    /// an id is missing: the caller then pushes those rows one by one.
    pub(crate) fn push_numeric_batch<'r>(
        &mut self,
        n: usize,
        write: impl FnOnce(&mut [f32], usize) -> bool,
        id: impl FnMut(usize) -> Cell<'r>,
    ) -> bool {
        let w = self.width;
        let start = self.x.len();
        self.x.resize(start + n * w, f32::NAN);
        let ok = self.x.get_mut(start..).is_some_and(|rows| write(rows, w));
        self.commit_rows(start, n, ok, id)
    }

    /// Ends a bulk push of `n` rows whose features start at `self.x[start]`: with `ok` and
    /// every id present they are counted; otherwise nothing of them is kept.
    fn commit_rows<'r>(
        &mut self,
        start: usize,
        n: usize,
        ok: bool,
        id: impl FnMut(usize) -> Cell<'r>,
    ) -> bool {
        if !ok || !self.push_ids(n, id) {
            self.x.truncate(start);
            return false;
        }
        self.read += n;
        self.rows += n;
        true
    }

    /// The ids of `n` rows about to be counted (`id(r)`, or row numbers without an id column);
    /// `false`, with none pushed, when one is missing.
    fn push_ids<'r>(&mut self, n: usize, mut id: impl FnMut(usize) -> Cell<'r>) -> bool {
        let ids_start = self.ids.len();
        for r in 0..n {
            match self.id_field {
                Some(_) => {
                    let c = id(r);
                    match cell_text(&c, &mut self.scratch) {
                        Some(t) if !t.is_empty() => self.ids.push_text(t),
                        _ => {
                            self.ids.truncate(ids_start);
                            return false;
                        }
                    }
                }
                None => self.ids.push_number(self.read + r + 1),
            }
        }
        true
    }

    /// The source field of the id column, when the schema has one.
    pub(crate) fn id_field(&self) -> Option<usize> {
        self.id_field
    }

    /// Encodes one row; `cell(field)` gives the cell of source field `field` (an index into
    /// the header given to [`Encoder::new`]). `at` is where the row is, for errors. A row
    /// outside the schema's cohort is skipped once its cells are checked.
    pub(crate) fn push_row<'r>(
        &mut self,
        cell: impl Fn(usize) -> Cell<'r>,
        at: At,
    ) -> Result<(), DataError> {
        self.read += 1;
        self.row.clear();
        self.row.resize(self.derivation.read_width(), 0.0);
        self.encode_features(&cell, at)?;
        self.derivation.extend(&mut self.row);
        if !self.derivation.in_cohort(&self.row) {
            return Ok(());
        }
        let y_base = self.y.len();
        for k in 0..self.labels.len() {
            let Some(plan) = self.labels.get(k) else {
                continue;
            };
            let li = plan.li;
            let Some(l) = self.schema.labels.get(li) else {
                continue;
            };
            let field = match plan.source {
                LabelSource::Field(field) => field,
                LabelSource::Derived => {
                    let v = match self.derivation.label(li, &self.row) {
                        Some(Truth::True) => 1.0,
                        Some(Truth::False) => 0.0,
                        _ if self.lenient_labels => f32::NAN,
                        _ => {
                            self.y.truncate(y_base);
                            return Err(DataError::UnknownDerivedLabel {
                                source_name: self.source_name.clone(),
                                at,
                                column: l.column.clone(),
                            });
                        }
                    };
                    self.y.push(v);
                    continue;
                }
            };
            let c = cell(field);
            if self.is_missing(&c) && self.lenient_labels {
                self.y.push(f32::NAN);
                continue;
            }
            if self.is_missing(&c) {
                self.y.truncate(y_base);
                return Err(DataError::MissingLabel {
                    source_name: self.source_name.clone(),
                    at,
                    column: l.column.clone(),
                });
            }
            let Some(rule) = l.positive_values() else {
                continue;
            };
            let positive = match c {
                Cell::Bool(b) => rule
                    .values()
                    .iter()
                    .any(|p| boolean_value(p.as_bytes()) == Some(b)),
                _ => {
                    let text = cell_text(&c, &mut self.scratch).unwrap_or_default();
                    rule.matches(text)
                }
            };
            self.y.push(if positive { 1.0 } else { 0.0 });
            let text = cell_text(&c, &mut self.scratch).unwrap_or_default();
            if let Some(seen) = self.label_seen.get_mut(li) {
                if seen.len() < MAX_SEEN && !seen.iter().any(|v| v.as_slice() == text) {
                    seen.push(text.to_vec());
                }
            }
        }
        let id = match self.id_field {
            Some(field) => {
                let c = cell(field);
                match cell_text(&c, &mut self.scratch) {
                    Some(t) if !t.is_empty() => IdText::Text(t),
                    _ => {
                        self.y.truncate(y_base);
                        return Err(DataError::MissingId {
                            source_name: self.source_name.clone(),
                            at,
                            column: self.schema.id_column.clone().unwrap_or_default(),
                        });
                    }
                }
            }
            None => IdText::Number(self.read),
        };
        match id {
            IdText::Text(t) => self.ids.push_text(t),
            IdText::Number(n) => self.ids.push_number(n),
        }
        let (features, derived) = self.derivation.output(&self.row);
        self.x.extend_from_slice(features);
        self.x.extend_from_slice(derived);
        self.rows += 1;
        Ok(())
    }

    /// Writes the features' and inputs' columns of one row into `self.row`.
    fn encode_features<'r>(
        &mut self,
        cell: &impl Fn(usize) -> Cell<'r>,
        at: At,
    ) -> Result<(), DataError> {
        for p in &self.plans {
            let c = cell(p.field);
            let missing = self.is_missing(&c);
            let row = &mut self.row;
            match &p.slot {
                Slot::Numeric { out } => {
                    let v = if missing {
                        f32::NAN
                    } else {
                        numeric(c).ok_or_else(|| DataError::NotNumeric {
                            source_name: self.source_name.clone(),
                            at,
                            column: p.spec.name.clone(),
                            value: shown(&c),
                            missing_hint: self.missing_hint.clone(),
                        })?
                    };
                    if let Some(slot) = row.get_mut(*out) {
                        *slot = v;
                    }
                }
                Slot::Boolean { out } => {
                    let v = if missing {
                        f32::NAN
                    } else {
                        let b = match c {
                            Cell::Bool(b) => Some(b),
                            Cell::Integer(0) => Some(false),
                            Cell::Integer(1) => Some(true),
                            Cell::Text(t) => boolean_value(t),
                            _ => None,
                        };
                        let b = b.ok_or_else(|| DataError::NotBoolean {
                            source_name: self.source_name.clone(),
                            at,
                            column: p.spec.name.clone(),
                            value: shown(&c),
                            missing_hint: self.missing_hint.clone(),
                        })?;
                        if b {
                            1.0
                        } else {
                            0.0
                        }
                    };
                    if let Some(slot) = row.get_mut(*out) {
                        *slot = v;
                    }
                }
                Slot::Categorical { out, lookup, other } => {
                    if missing {
                        continue;
                    }
                    let text = cell_text(&c, &mut self.scratch).unwrap_or_default();
                    let k = match (lookup.get(text), other) {
                        (Some(&k), _) => k,
                        (None, Some(o)) => *o,
                        (None, None) => {
                            let allowed = match &p.spec.kind {
                                FeatureKind::Categorical { categories, .. } => {
                                    quoted_list(categories)
                                }
                                _ => String::new(),
                            };
                            return Err(DataError::UnknownCategory {
                                source_name: self.source_name.clone(),
                                at,
                                column: p.spec.name.clone(),
                                value: String::from_utf8_lossy(text).into_owned(),
                                allowed,
                            });
                        }
                    };
                    if let Some(slot) = row.get_mut(out + k) {
                        *slot = 1.0;
                    }
                }
            }
        }
        Ok(())
    }

    /// The rows pushed since the last chunk (empty buffers after), without the one-class
    /// check a whole file gets: a chunk of a scoring file, its ids in one buffer
    /// ([`Chunk::ids`]; the table's `ids` empty, [`Chunk::into_table`] makes them strings).
    pub(crate) fn take_chunk_ids(&mut self) -> Result<Chunk, DataError> {
        let rows = self.ids.len();
        let shape_err = |_| DataError::Internal {
            source_name: self.source_name.clone(),
            what: "rows of unequal width",
        };
        let x = Array2::from_shape_vec((rows, self.width), std::mem::take(&mut self.x))
            .map_err(shape_err)?;
        let labels = Array2::from_shape_vec((rows, self.labels.len()), std::mem::take(&mut self.y))
            .map_err(shape_err)?;
        Ok(Chunk {
            table: Table {
                feature_names: self.schema.feature_columns(),
                x,
                label_names: self.label_names(),
                labels,
                ids: Vec::new(),
            },
            ids: Some(std::mem::take(&mut self.ids)),
        })
    }

    /// The schema's cohort expression, as written (empty without one).
    pub(crate) fn cohort_text(&self) -> String {
        self.schema.cohort.clone().unwrap_or_default()
    }

    /// Rows pushed so far (all chunks).
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    fn label_names(&self) -> Vec<String> {
        self.labels
            .iter()
            .filter_map(|p| self.schema.labels.get(p.li).map(|l| l.column.clone()))
            .collect()
    }

    /// Data rows read so far, in the cohort or not.
    pub(crate) fn read(&self) -> usize {
        self.read
    }

    /// The table, once every row is in; refuses no rows and a one-class label.
    pub(crate) fn finish(self, header_at: At) -> Result<Table, DataError> {
        let src = || self.source_name.clone();
        if self.read == 0 {
            return Err(DataError::NoDataRows {
                source_name: src(),
                at: header_at,
            });
        }
        if self.rows == 0 {
            return Err(DataError::EmptyCohort {
                source_name: src(),
                cohort: self.schema.cohort.clone().unwrap_or_default(),
                rows: self.read,
            });
        }
        if self.derivation.has_cohort() {
            tracing::info!(
                source = %self.source_name,
                cohort = self.schema.cohort.as_deref().unwrap_or_default(),
                read = self.read,
                kept = self.rows,
                "cohort"
            );
        }
        let shape_err = |_| DataError::Internal {
            source_name: src(),
            what: "rows of unequal width",
        };
        let x = Array2::from_shape_vec((self.rows, self.width), self.x).map_err(shape_err)?;
        let labels = Array2::from_shape_vec((self.rows, self.schema.labels.len()), self.y)
            .map_err(shape_err)?;
        let table = Table {
            feature_names: self.schema.feature_columns(),
            x,
            label_names: self.schema.label_columns(),
            labels,
            ids: self.ids.into_strings(),
        };
        for ((l, (neg, pos)), seen) in self
            .schema
            .labels
            .iter()
            .zip(super::label_value_counts(&table))
            .zip(&self.label_seen)
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
                    positive: match &l.rule {
                        LabelRule::Positive(p) => quoted_list(p.values()),
                        LabelRule::Derive(t) => format!("the condition \"{t}\""),
                    },
                    seen: quoted_list(&values) + if seen.len() == MAX_SEEN { ", …" } else { "" },
                });
            }
        }
        tracing::debug!(
            source = %self.source_name,
            rows = table.n_rows(),
            columns = table.n_features(),
            "loaded"
        );
        Ok(table)
    }
}

/// A cell as an error message shows it.
/// Whether `cell` is missing: NULL, empty, or one of the schema's `missing` tokens.
fn is_missing(tokens: &[Vec<u8>], cell: &Cell<'_>) -> bool {
    match cell {
        Cell::Null => true,
        Cell::Text(t) => t.is_empty() || tokens.iter().any(|m| m.as_slice() == *t),
        _ => false,
    }
}

/// A present cell's value as a numeric feature; `None` when it is not a finite number.
fn numeric(c: Cell<'_>) -> Option<f32> {
    match c {
        Cell::Number(v) => Some(v as f32).filter(|v| v.is_finite()),
        Cell::Integer(v) => Some(v as f32),
        Cell::Text(t) => parse_finite(t),
        Cell::Bool(_) | Cell::Null => None,
    }
}

fn shown(c: &Cell<'_>) -> String {
    match c {
        Cell::Null => "NULL".into(),
        Cell::Text(t) => String::from_utf8_lossy(t).into_owned(),
        Cell::Number(v) => v.to_string(),
        Cell::Integer(v) => v.to_string(),
        Cell::Bool(b) => b.to_string(),
    }
}

/// A finite number, or `None` (non-UTF-8, unparsable, NaN or infinite).
pub(crate) fn parse_finite(cell: &[u8]) -> Option<f32> {
    if let Some(v) = super::number::parse_plain_decimal(cell) {
        return Some(v);
    }
    std::str::from_utf8(cell)
        .ok()?
        .parse::<f32>()
        .ok()
        .filter(|v| v.is_finite())
}

pub(crate) fn quoted_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::Ids;

    /// Ids in one buffer read back as the strings they replace: invalid UTF-8 replaced as
    /// `String::from_utf8_lossy` does, row numbers in decimal, a truncation dropping the last.
    #[test]
    fn one_buffer_ids_are_the_strings() {
        let mut ids = Ids::default();
        let texts: [&[u8]; 4] = [b"C1", b"caf\xc3\xa9", b"bad\xff\xfe", b""];
        for t in texts {
            ids.push_text(t);
        }
        ids.push_number(12_345);
        ids.push_text(b"gone");
        ids.truncate(5);
        let want: Vec<String> = texts
            .iter()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .chain(["12345".to_string()])
            .collect();
        assert_eq!(ids.len(), 5);
        assert_eq!(ids.get(9), b"");
        for (r, w) in want.iter().enumerate() {
            assert_eq!(ids.get(r), w.as_bytes(), "{r}");
        }
        assert_eq!(ids.into_strings(), want);
    }
}
