//! Append-only audit log: one JSON object per line (JSON Lines), chained by SHA-256.
//!
//! Every secure-aggregation round the coordinator closes is appended as an [`AuditEntry`]: the
//! [`AuditRecord`] (who took part, who survived, which model and aggregate) plus `seq` (0, 1, 2,
//! … in file order), `prev` (the previous entry's `hash`; 64 `0`s for the first) and `hash`.
//! Changing, deleting, inserting or reordering any entry breaks the chain at that entry, and
//! [`verify`] names the first broken line.
//!
//! # File format
//!
//! UTF-8, one entry per line, each line terminated by `\n`. A line is a JSON object with exactly
//! these keys (any order; written in this order): `seq`, `prev`, `job_id`, `round`, `purpose`,
//! `participants`, `survivors`, `model_hash`, `aggregate_hash`, `time_unix_ms`, `outcome`,
//! `hash`. `seq`, `round` and `time_unix_ms` are non-negative integers below 2^64;
//! `participants` and `survivors` are arrays of strings; the rest are strings. `prev` and `hash`
//! are 64 lowercase hex digits.
//!
//! # Hash: the exact bytes
//!
//! `hash` is the lowercase hex SHA-256 of the following byte string, the fields concatenated in
//! this order. It does not depend on JSON key order, whitespace or number formatting.
//!
//! ```text
//! u64(x)   = x as 8 bytes, big-endian
//! str(s)   = u64(number of UTF-8 bytes of s) || UTF-8 bytes of s
//! list(v)  = u64(number of elements of v) || str(v[0]) || str(v[1]) || ...
//!
//! message  = str("fedsilo-audit-v1")          domain tag, fixed
//!         || u64(seq)
//!         || str(prev)                        the 64 ASCII hex digits, not the 32 bytes
//!         || str(job_id)
//!         || u64(round)
//!         || str(purpose)
//!         || list(participants)
//!         || list(survivors)
//!         || str(model_hash)
//!         || str(aggregate_hash)
//!         || u64(time_unix_ms)
//!         || str(outcome)
//! hash     = lowercase_hex(SHA-256(message))
//! ```
//!
//! Test vector: `seq` 0, `prev` 64 zeros, `job_id` `"j"`, `round` 1, `purpose` `"train"`,
//! `participants` `["a","b"]`, `survivors` `["a"]`, `model_hash` `"m"`, `aggregate_hash` `"g"`,
//! `time_unix_ms` 1700000000000, `outcome` `"ok"` has hash
//! `3e8edbd7bf65b95da39a6116f51d26706083fc01024f6f86e96aedf5af4fabe5`.
//!
//! # Verifying
//!
//! Line `n` (1-based) must hold `seq` = `n - 1`, `prev` = the `hash` of line `n - 1` (64 zeros on
//! line 1), and a `hash` equal to the recomputed one. An independent verifier, in Python:
//!
//! ```text
//! import hashlib, json, struct
//! u64 = lambda x: struct.pack(">Q", x)
//! s = lambda x: u64(len(x.encode())) + x.encode()
//! l = lambda xs: u64(len(xs)) + b"".join(s(x) for x in xs)
//! prev = "0" * 64
//! for n, line in enumerate(open("audit.jsonl", "rb").read().split(b"\n")[:-1], 1):
//!     e = json.loads(line)
//!     m = (s("fedsilo-audit-v1") + u64(e["seq"]) + s(e["prev"]) + s(e["job_id"])
//!          + u64(e["round"]) + s(e["purpose"]) + l(e["participants"]) + l(e["survivors"])
//!          + s(e["model_hash"]) + s(e["aggregate_hash"]) + u64(e["time_unix_ms"])
//!          + s(e["outcome"]))
//!     assert e["seq"] == n - 1 and e["prev"] == prev, n
//!     assert hashlib.sha256(m).hexdigest() == e["hash"], n
//!     prev = e["hash"]
//! print(n, prev)
//! ```
//!
//! ([`verify`] is stricter: it also refuses unknown or duplicated keys.)
//!
//! **What the chain alone cannot show:** removal of entries from the *end* of the log, or the
//! whole log replaced by a shorter valid one. The coordinator's [`Store`](crate::store::Store)
//! therefore records the log's [`AuditHead`] (entry count and head hash) in the same transaction
//! as every checkpoint; [`AuditLog::open_checked`] (at every coordinator start) and
//! [`verify_against`] (`fedsilo audit verify LOG --store STORE`) refuse a log that is missing
//! ([`AuditError::Missing`]), shorter than the recorded head ([`AuditError::Truncated`]) or whose
//! entry at the recorded position has another hash ([`AuditError::HeadMismatch`]). The log may be
//! *ahead* of the store (entries appended after the last commit, e.g. a round that failed); the
//! coordinator records the newer head on start. Record the head (printed by `fedsilo audit
//! verify`) outside the coordinator too, e.g. in each round's report, against a loss of both.
//!
//! # Crashes
//!
//! [`AuditLog::append`] writes the whole line, `\n` last, in one write and `fsync`s
//! (`sync_data`) before returning, so an acknowledged entry is complete and durable. A crash
//! mid-append can leave an unterminated last line; that entry was never acknowledged.
//! [`AuditLog::open`] truncates it (with a warning) and [`verify`] ignores it (reporting it in
//! [`VerifySummary::torn_tail_bytes`]). Any other damage, including a complete last line that
//! does not verify, is [`AuditError::Broken`] and `open` refuses to append to such a log.
//!
//! Only one [`AuditLog`] may append to a file at a time; the coordinator guarantees this by
//! holding its [`Store`](crate::store::Store) (exclusively locked) in the same state directory.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use fedsilo_task::Purpose;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::RoundSummary;

/// `prev` of the first entry: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The domain tag hashed first in every entry; changes only with the encoding.
const DOMAIN: &str = "fedsilo-audit-v1";

/// What happened in one round, as the coordinator reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub job_id: String,
    /// The secure-aggregation round number.
    pub round: u64,
    /// What the round was for (written as `"stats"`, `"train"`, `"eval"`, …).
    pub purpose: Purpose,
    pub participants: Vec<String>,
    pub survivors: Vec<String>,
    pub model_hash: String,
    pub aggregate_hash: String,
    pub time_unix_ms: u64,
    pub outcome: String,
}

impl AuditRecord {
    /// The audit record of a closed round: the one mapping from [`RoundSummary`] the
    /// coordinator service and the simulator both use.
    pub fn of_round(r: &RoundSummary, time_unix_ms: u64) -> Self {
        AuditRecord {
            job_id: r.job_id.clone(),
            round: r.secagg_round,
            purpose: r.purpose,
            participants: r.participants.clone(),
            survivors: r.survivors.clone(),
            model_hash: r.model_hash.clone(),
            aggregate_hash: r.aggregate_hash.clone(),
            time_unix_ms,
            outcome: r.outcome.clone(),
        }
    }
}

impl AuditRecord {
    /// The audit record of a closed or failed PSI session: `round` is the session,
    /// `participants` the active then the passive party, `survivors` both when they agreed,
    /// `aggregate_hash` the alignment hash, `outcome` the set and intersection sizes.
    pub fn of_psi(s: &crate::engine::PsiSummary, time_unix_ms: u64) -> Self {
        let parties = vec![s.active.clone(), s.passive.clone()];
        AuditRecord {
            job_id: s.job_id.clone(),
            round: s.session,
            purpose: Purpose::Psi,
            participants: parties.clone(),
            survivors: if s.result.is_ok() {
                parties
            } else {
                Vec::new()
            },
            model_hash: String::new(),
            aggregate_hash: s
                .result
                .as_ref()
                .map(|o| o.intersection_hash.clone())
                .unwrap_or_default(),
            time_unix_ms,
            outcome: s.outcome(),
        }
    }
}

impl AuditRecord {
    /// A vertical session's step (`round` = the step; `aggregate_hash` = SHA-256 of the
    /// sealed messages relayed for it) or its end.
    pub fn of_vertical(s: &crate::engine::VerticalSummary, time_unix_ms: u64) -> Self {
        let parties = vec![s.active.clone(), s.passive.clone()];
        AuditRecord {
            job_id: s.job_id.clone(),
            round: s.step,
            purpose: Purpose::Vertical,
            participants: parties.clone(),
            survivors: if s.result.is_ok() {
                parties
            } else {
                Vec::new()
            },
            model_hash: String::new(),
            aggregate_hash: s.relayed_hash.clone(),
            time_unix_ms,
            outcome: match &s.result {
                Ok(line) => format!(
                    "session {}: {line}; relayed {} + {} messages, {} + {} bytes",
                    s.session, s.messages[0], s.messages[1], s.bytes[0], s.bytes[1]
                ),
                Err(why) => format!("session {}: {why}", s.session),
            },
        }
    }
}

/// One line of the log: a record and its place in the chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 0 for the first entry, then +1 per line.
    pub seq: u64,
    /// `hash` of the previous entry; [`GENESIS`] for the first.
    pub prev: String,
    #[serde(flatten)]
    pub record: AuditRecord,
    /// [`entry_hash`] of (`seq`, `prev`, `record`).
    pub hash: String,
}

/// The strict on-disk form read back by [`verify`]: every key required, no others, no duplicates.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEntry {
    seq: u64,
    prev: String,
    job_id: String,
    round: u64,
    purpose: Purpose,
    participants: Vec<String>,
    survivors: Vec<String>,
    model_hash: String,
    aggregate_hash: String,
    time_unix_ms: u64,
    outcome: String,
    hash: String,
}

impl From<WireEntry> for AuditEntry {
    fn from(w: WireEntry) -> Self {
        AuditEntry {
            seq: w.seq,
            prev: w.prev,
            record: AuditRecord {
                job_id: w.job_id,
                round: w.round,
                purpose: w.purpose,
                participants: w.participants,
                survivors: w.survivors,
                model_hash: w.model_hash,
                aggregate_hash: w.aggregate_hash,
                time_unix_ms: w.time_unix_ms,
                outcome: w.outcome,
            },
            hash: w.hash,
        }
    }
}

/// Errors of the audit log; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be read, written or synced.
    #[error("{}: {op}", .path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The chain does not verify; `line` (1-based) is the first broken entry and `seq` the
    /// sequence number it claims, if it could be read.
    #[error("{}: audit chain broken at line {line}{}", .path.display(), fmt_seq(*.seq))]
    Broken {
        path: PathBuf,
        line: usize,
        seq: Option<u64>,
        #[source]
        reason: ChainBreak,
    },
    /// An earlier append failed part-way; re-open the log (which verifies it) to go on.
    #[error("{}: an earlier append failed; re-open the audit log", .path.display())]
    Poisoned { path: PathBuf },
    /// The entry could not be encoded as JSON.
    #[error("{}: cannot encode entry", .path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The log is missing although the store recorded a position in it.
    #[error(
        "{}: the audit log is missing, but the store recorded {recorded} at its last commit; \
         restore the log from a backup (refusing to start a new, empty chain)",
        .path.display()
    )]
    Missing { path: PathBuf, recorded: AuditHead },
    /// The log holds fewer entries than the store recorded: its tail was cut.
    #[error(
        "{}: the audit log is truncated: it holds {} but the store recorded {recorded} at its \
         last commit ({} entries missing at the end)",
        .path.display(), position(*.log_entries, .log_head),
        .recorded.entries.saturating_sub(*.log_entries)
    )]
    Truncated {
        path: PathBuf,
        log_entries: u64,
        log_head: String,
        recorded: AuditHead,
    },
    /// The log's entry at the store's recorded position has another hash: the log was
    /// replaced or rewritten (or belongs to another store).
    #[error(
        "{}: the audit log does not match the store: after {} entries its head is {log_hash}, \
         but the store recorded {recorded}",
        .path.display(), .recorded.entries
    )]
    HeadMismatch {
        path: PathBuf,
        log_hash: String,
        recorded: AuditHead,
    },
    /// [`AuditLog::create`] found a file already there.
    #[error("{}: an audit log already exists; refusing to start a new chain over it", .path.display())]
    Exists { path: PathBuf },
}

fn position(entries: u64, head: &str) -> AuditHead {
    AuditHead {
        entries,
        head: head.to_string(),
    }
}

/// Why one line of the log does not continue the chain ([`AuditError::Broken`]).
#[derive(Debug, thiserror::Error)]
pub enum ChainBreak {
    #[error("not a valid audit entry")]
    NotAnEntry(#[source] serde_json::Error),
    #[error(
        "seq gap: expected seq {expected}, found {found} (entries missing, inserted or reordered)"
    )]
    SeqGap { expected: u64, found: u64 },
    #[error("prev {found} does not match the previous entry's hash {expected}")]
    PrevMismatch { expected: String, found: String },
    #[error("hash mismatch (content edited): stored {stored}, computed {computed}")]
    HashMismatch { stored: String, computed: String },
}

fn fmt_seq(seq: Option<u64>) -> String {
    seq.map(|s| format!(" (seq {s})")).unwrap_or_default()
}

/// A position in the log: how many entries it holds and the `hash` of the last one. The
/// coordinator's store records it with every commit (see the [module documentation](self)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditHead {
    /// Number of entries (the next entry's `seq`).
    pub entries: u64,
    /// `hash` of the last entry; [`GENESIS`] when `entries` is 0.
    pub head: String,
}

impl AuditHead {
    /// The position of an empty log.
    pub fn genesis() -> Self {
        AuditHead {
            entries: 0,
            head: GENESIS.to_string(),
        }
    }
}

impl std::fmt::Display for AuditHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.entries.checked_sub(1) {
            None => write!(f, "0 entries"),
            Some(last) => write!(
                f,
                "{} entries (last seq {last}, head {})",
                self.entries, self.head
            ),
        }
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifySummary {
    /// Number of entries, all verified.
    pub entries: u64,
    /// `hash` of the last entry; [`GENESIS`] if the log is empty.
    pub head: String,
    /// Bytes of an unterminated last line (an interrupted append) that were ignored; 0 normally.
    pub torn_tail_bytes: u64,
}

/// The hash of an entry, over the exact bytes given in the [module documentation](self).
pub fn entry_hash(seq: u64, prev: &str, record: &AuditRecord) -> String {
    fn u64_(h: &mut Sha256, x: u64) {
        h.update(x.to_be_bytes());
    }
    fn str_(h: &mut Sha256, s: &str) {
        u64_(h, s.len() as u64);
        h.update(s.as_bytes());
    }
    fn list(h: &mut Sha256, v: &[String]) {
        u64_(h, v.len() as u64);
        for s in v {
            str_(h, s);
        }
    }
    let mut h = Sha256::new();
    str_(&mut h, DOMAIN);
    u64_(&mut h, seq);
    str_(&mut h, prev);
    str_(&mut h, &record.job_id);
    u64_(&mut h, record.round);
    str_(&mut h, record.purpose.name());
    list(&mut h, &record.participants);
    list(&mut h, &record.survivors);
    str_(&mut h, &record.model_hash);
    str_(&mut h, &record.aggregate_hash);
    u64_(&mut h, record.time_unix_ms);
    str_(&mut h, &record.outcome);
    hex::encode(h.finalize())
}

/// An open audit log, verified and ready to append; see the [module documentation](self).
pub struct AuditLog {
    path: PathBuf,
    file: File,
    head: String,
    next_seq: u64,
    /// Length in bytes of the verified entries: where the next line starts.
    end: u64,
    poisoned: bool,
    /// The newest records read when the log was opened (at most [`RECENT_KEPT`]), for the
    /// dashboard's round history; taken once by [`AuditLog::take_recent`].
    recent: Vec<AuditRecord>,
}

/// Records [`AuditLog::take_recent`] keeps from the log's tail.
pub const RECENT_KEPT: usize = 4096;

impl AuditLog {
    /// Opens the log at `path`, creating it if absent. An existing log is verified first: a
    /// broken chain is [`AuditError::Broken`] (nothing is appended to it); an unterminated last
    /// line left by a crash mid-append is truncated with a warning.
    ///
    /// For a throw-away log (simulations). The coordinator uses [`AuditLog::create`] once, at
    /// `coordinator init`, and [`AuditLog::open_checked`] at every start.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Self::open_with(path, Mode::OpenOrCreate, None)
    }

    /// Creates a new, empty log at `path`; refuses ([`AuditError::Exists`]) if a file is there.
    pub fn create(path: &Path) -> Result<Self, AuditError> {
        Self::open_with(path, Mode::Create, None)
    }

    /// Opens the existing log at `path` (verified as by [`AuditLog::open`]) and checks it
    /// against `recorded`, the position the store recorded at its last commit: a missing log is
    /// [`AuditError::Missing`], a shorter one [`AuditError::Truncated`], one whose entry at that
    /// position has another hash [`AuditError::HeadMismatch`]. A log *ahead* of `recorded` is
    /// accepted (entries appended after the store's last commit).
    pub fn open_checked(path: &Path, recorded: &AuditHead) -> Result<Self, AuditError> {
        Self::open_with(path, Mode::Existing, Some(recorded))
    }

    fn open_with(
        path: &Path,
        mode: Mode,
        recorded: Option<&AuditHead>,
    ) -> Result<Self, AuditError> {
        let io = |op| {
            move |source| AuditError::Io {
                path: path.to_path_buf(),
                op,
                source,
            }
        };
        let mut options = OpenOptions::new();
        options.read(true).append(true);
        match mode {
            Mode::OpenOrCreate => {
                options.create(true);
            }
            Mode::Create => {
                options.create_new(true);
            }
            Mode::Existing => {}
        }
        let created = !path.exists();
        let file = options.open(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => AuditError::Exists {
                path: path.to_path_buf(),
            },
            std::io::ErrorKind::NotFound if mode == Mode::Existing => AuditError::Missing {
                path: path.to_path_buf(),
                recorded: recorded.cloned().unwrap_or_else(AuditHead::genesis),
            },
            _ => io("open")(source),
        })?;
        if created {
            crate::store::sync_parent_dir(path).map_err(io("sync directory"))?;
        }
        let scan = scan(
            path,
            BufReader::new(&file),
            recorded.map(|r| r.entries),
            RECENT_KEPT,
        )?;
        if let Some(recorded) = recorded {
            check_position(path, &scan, recorded)?;
        }
        if scan.torn_tail_bytes > 0 {
            tracing::warn!(path = %path.display(), bytes = scan.torn_tail_bytes, entries = scan.entries,
                "dropping the unterminated last line of the audit log, left by an interrupted append");
            file.set_len(scan.end)
                .map_err(io("truncate torn last line"))?;
            file.sync_all().map_err(io("sync"))?;
        }
        tracing::debug!(path = %path.display(), entries = scan.entries, head = %scan.head, "audit log open");
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
            head: scan.head,
            next_seq: scan.entries,
            end: scan.end,
            poisoned: false,
            recent: scan.recent.into(),
        })
    }

    /// Appends `record` as the next entry; the line is written and synced (`sync_data`) before
    /// this returns. After an I/O error the log refuses further appends
    /// ([`AuditError::Poisoned`]) until re-opened.
    pub fn append(&mut self, record: AuditRecord) -> Result<AuditEntry, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned {
                path: self.path.clone(),
            });
        }
        let hash = entry_hash(self.next_seq, &self.head, &record);
        let entry = AuditEntry {
            seq: self.next_seq,
            prev: self.head.clone(),
            record,
            hash,
        };
        let mut line = serde_json::to_vec(&entry).map_err(|source| AuditError::Encode {
            path: self.path.clone(),
            source,
        })?;
        line.push(b'\n');
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            self.poisoned = true;
            // Best effort: remove a partial line now rather than at the next open.
            let truncated = self.file.set_len(self.end);
            tracing::error!(path = %self.path.display(), seq = entry.seq, error = %source,
                truncated = truncated.is_ok(), "audit append failed");
            return Err(AuditError::Io {
                path: self.path.clone(),
                op: "append",
                source,
            });
        }
        self.end += line.len() as u64;
        self.next_seq += 1;
        self.head.clone_from(&entry.hash);
        Ok(entry)
    }

    /// `hash` of the last entry; [`GENESIS`] if the log is empty.
    pub fn head(&self) -> String {
        self.head.clone()
    }

    /// The log's current position (entries and head), as the store records it.
    pub fn position(&self) -> AuditHead {
        AuditHead {
            entries: self.next_seq,
            head: self.head.clone(),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.next_seq
    }

    /// Whether the log has no entries.
    pub fn is_empty(&self) -> bool {
        self.next_seq == 0
    }

    /// The file this log lives in.
    /// The newest verified records the log held when it was opened (at most
    /// [`RECENT_KEPT`], oldest first); empty on a second call.
    pub fn take_recent(&mut self) -> Vec<AuditRecord> {
        std::mem::take(&mut self.recent)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Verifies the whole chain of the log at `path` without modifying it. An unterminated last line
/// (an interrupted append) is ignored with a warning and reported in
/// [`VerifySummary::torn_tail_bytes`]; anything else wrong is [`AuditError::Broken`] naming the
/// first broken line.
///
/// The chain alone cannot show a cut tail; [`verify_against`] can, given the store's record.
pub fn verify(path: &Path) -> Result<VerifySummary, AuditError> {
    verify_with(path, None)
}

/// [`verify`], then the check of [`AuditLog::open_checked`] against `recorded` (the position the
/// store recorded at its last commit): a missing log is [`AuditError::Missing`], a shorter one
/// [`AuditError::Truncated`], one whose entry at that position has another hash
/// [`AuditError::HeadMismatch`]. Modifies nothing.
pub fn verify_against(path: &Path, recorded: &AuditHead) -> Result<VerifySummary, AuditError> {
    verify_with(path, Some(recorded))
}

fn verify_with(path: &Path, recorded: Option<&AuditHead>) -> Result<VerifySummary, AuditError> {
    let file = File::open(path).map_err(|source| match (source.kind(), recorded) {
        (std::io::ErrorKind::NotFound, Some(recorded)) => AuditError::Missing {
            path: path.to_path_buf(),
            recorded: recorded.clone(),
        },
        _ => AuditError::Io {
            path: path.to_path_buf(),
            op: "open",
            source,
        },
    })?;
    let scan = scan(path, BufReader::new(file), recorded.map(|r| r.entries), 0)?;
    if let Some(recorded) = recorded {
        check_position(path, &scan, recorded)?;
    }
    if scan.torn_tail_bytes > 0 {
        tracing::warn!(path = %path.display(), bytes = scan.torn_tail_bytes,
            "ignoring the unterminated last line of the audit log (an interrupted append)");
    }
    Ok(VerifySummary {
        entries: scan.entries,
        head: scan.head,
        torn_tail_bytes: scan.torn_tail_bytes,
    })
}

/// Mode of [`AuditLog::open_with`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    OpenOrCreate,
    Create,
    Existing,
}

struct Scan {
    entries: u64,
    head: String,
    /// Bytes of the verified, `\n`-terminated lines.
    end: u64,
    torn_tail_bytes: u64,
    /// The head after the number of entries asked for, if the log holds that many.
    head_at: Option<String>,
    /// The newest records, at most the number asked for.
    recent: std::collections::VecDeque<AuditRecord>,
}

/// The scanned log against the store's `recorded` position.
fn check_position(path: &Path, scan: &Scan, recorded: &AuditHead) -> Result<(), AuditError> {
    if scan.entries < recorded.entries {
        return Err(AuditError::Truncated {
            path: path.to_path_buf(),
            log_entries: scan.entries,
            log_head: scan.head.clone(),
            recorded: recorded.clone(),
        });
    }
    match &scan.head_at {
        Some(h) if *h == recorded.head => Ok(()),
        other => Err(AuditError::HeadMismatch {
            path: path.to_path_buf(),
            log_hash: other.clone().unwrap_or_default(),
            recorded: recorded.clone(),
        }),
    }
}

/// Reads and verifies every line; stops at the first broken one. With `at = Some(n)`, also
/// returns the head after the first `n` entries (if there are that many).
fn scan(
    path: &Path,
    mut reader: impl BufRead,
    at: Option<u64>,
    keep: usize,
) -> Result<Scan, AuditError> {
    let mut recent = std::collections::VecDeque::with_capacity(keep.min(1024));
    let mut head = GENESIS.to_string();
    let mut entries = 0u64;
    let mut end = 0u64;
    let mut line = Vec::new();
    let mut head_at = (at == Some(0)).then(|| head.clone());
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| AuditError::Io {
                path: path.to_path_buf(),
                op: "read",
                source,
            })?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(Scan {
                entries,
                head,
                end,
                torn_tail_bytes: n as u64,
                head_at,
                recent,
            });
        }
        let line_no = entries as usize + 1;
        let entry = check_line(&line[..n - 1], entries, &head).map_err(|(seq, reason)| {
            AuditError::Broken {
                path: path.to_path_buf(),
                line: line_no,
                seq,
                reason,
            }
        })?;
        head = entry.hash;
        if keep > 0 {
            if recent.len() == keep {
                recent.pop_front();
            }
            recent.push_back(entry.record);
        }
        entries += 1;
        end += n as u64;
        if at == Some(entries) {
            head_at = Some(head.clone());
        }
    }
}

/// Checks one line (without its `\n`) as entry number `expected_seq` following `prev`; on
/// failure returns the seq the line claims (if readable) and why it is broken.
fn check_line(
    bytes: &[u8],
    expected_seq: u64,
    prev: &str,
) -> Result<AuditEntry, (Option<u64>, ChainBreak)> {
    let entry: AuditEntry = match serde_json::from_slice::<WireEntry>(bytes) {
        Ok(w) => w.into(),
        Err(e) => {
            let seq = serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64));
            return Err((seq, ChainBreak::NotAnEntry(e)));
        }
    };
    let seq = Some(entry.seq);
    if entry.seq != expected_seq {
        return Err((
            seq,
            ChainBreak::SeqGap {
                expected: expected_seq,
                found: entry.seq,
            },
        ));
    }
    if entry.prev != prev {
        return Err((
            seq,
            ChainBreak::PrevMismatch {
                expected: prev.to_string(),
                found: entry.prev,
            },
        ));
    }
    let computed = entry_hash(entry.seq, &entry.prev, &entry.record);
    if entry.hash != computed {
        return Err((
            seq,
            ChainBreak::HashMismatch {
                stored: entry.hash,
                computed,
            },
        ));
    }
    Ok(entry)
}
