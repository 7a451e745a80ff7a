//! The coordinator's embedded durable store: job records, every step's checkpoint, metadata.
//!
//! One [redb](https://docs.rs/redb/2) file holds four tables:
//!
//! | table          | key               | value                                        |
//! |----------------|-------------------|----------------------------------------------|
//! | `jobs`         | job id            | the job's latest record                      |
//! | `checkpoints`  | (job id, step)    | the job state after `step`; **all are kept** |
//! | `round_sha256` | (job id, step)    | SHA-256 (hex) of the aggregate of the round that produced the state at `step` |
//! | `meta`         | free-form key     | free-form value                              |
//!
//! Every checkpoint is kept so that the model at any round can be produced later (a regulator may
//! ask for it); [`Store::latest_checkpoint`] is the highest step of a job, and
//! [`Store::round_sha256`] names the round whose aggregate produced the model at a step (the
//! model export carries it, so it must survive a restart like the model itself). A re-commit of an
//! existing step replaces that step's checkpoint (the engine re-checkpoints the same step when only
//! the job's state changes, e.g. when it finishes).
//!
//! # Durability
//!
//! **Every mutating call is one redb write transaction committed with
//! [`Durability::Immediate`]: when it returns `Ok`, the data is on disk.** A process killed at any
//! moment (SIGKILL, power loss) leaves the store exactly at its last committed transaction; the
//! next [`Store::open`] repairs it. Commits use redb's *quick repair* (the allocator state is saved
//! with each commit, with two-phase commit), so re-opening after a crash does not walk the whole
//! file, which only grows since checkpoints are never deleted. [`Store::commit_step`] writes the
//! job record and the step's checkpoint (and, with [`Store::commit_round_step`], the round hash) in
//! the same transaction: after a crash all or none are present.
//!
//! # Creating and opening
//!
//! [`Store::create`] makes a new store and refuses if the file exists; [`Store::open`] opens an
//! existing one and refuses, each with its own [`StoreError`] naming the file, a missing file
//! ([`StoreError::Missing`]), an empty one ([`StoreError::Empty`]), a file that is not a redb
//! database ([`StoreError::Corrupt`]) and one shorter than its header says
//! ([`StoreError::Truncated`]). So a lost store is never silently replaced by an empty one: only
//! `fedsilo coordinator init` calls [`Store::create`].
//!
//! redb itself asserts (panics) on some damaged files, e.g. a truncated one. [`Store::open`]
//! therefore checks the file *before* handing it to redb: the magic number, and the length the
//! header's region layout implies (redb file format 2/3; a unit test pins the computation against
//! what redb writes). As a backstop for damage those checks miss, the open itself runs under
//! `catch_unwind`, with the panic message kept out of stderr, and a panic becomes
//! [`StoreError::Corrupt`].
//!
//! # Audit head
//!
//! The store records the audit log's position ([`AuditHead`]: entries and head hash) in `meta`
//! under `audit_head`, in the same transaction as every step committed with
//! [`Store::commit_step_audited`]; see [`crate::audit`] for how it is checked.
//!
//! # Exclusivity
//!
//! redb holds an exclusive lock on the file while a [`Store`] is open; a second open, from this
//! process or another, fails with [`StoreError::AlreadyOpen`]. The lock is released when the
//! `Store` is dropped or its process dies.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, Durability, ReadableTable, TableDefinition};

use crate::audit::AuditHead;

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const CHECKPOINTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("checkpoints");
const ROUND_SHA256: TableDefinition<(&str, u64), &str> = TableDefinition::new("round_sha256");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// `meta` key of the audit log's position recorded with every audited commit (JSON).
const AUDIT_HEAD_KEY: &str = "audit_head";

/// The first bytes of every redb database file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
/// Bytes of the redb header read by [`expected_len`]: magic, god byte, padding, then five
/// little-endian u32s (page size, region header pages, region max data pages, full regions,
/// data pages of the trailing partial region).
const REDB_HEADER_PREFIX: usize = 32;

/// Errors of the durable store; each names the store's file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another [`Store`] (in this process or another) has the file open.
    #[error(
        "{}: store is already open by another Store or process; only one coordinator may use a state directory",
        .path.display()
    )]
    AlreadyOpen { path: PathBuf },
    /// The file could not be opened or created, or is not a redb database.
    #[error("{}: cannot open store", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: DatabaseError,
    },
    /// A transaction failed; `op` is the [`Store`] method.
    #[error("{}: {op}", .path.display())]
    Db {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    /// A newly created store file could not be made durable (its directory entry synced).
    #[error("{}: cannot sync the directory holding the new store", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// [`Store::open`]: there is no file.
    #[error("{}: the store is missing", .path.display())]
    Missing { path: PathBuf },
    /// [`Store::open`]: the file is empty (0 bytes); whatever it held is gone.
    #[error("{}: the store is empty (0 bytes): its content was lost", .path.display())]
    Empty { path: PathBuf },
    /// [`Store::open`]: the file is shorter than its header says: its end was cut off.
    #[error(
        "{}: the store is truncated: the file has {len} bytes but its header describes {expected}",
        .path.display()
    )]
    Truncated {
        path: PathBuf,
        len: u64,
        expected: u64,
    },
    /// [`Store::open`]: the file is not a redb database, or redb found it damaged.
    #[error("{}: the store is corrupt: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// [`Store::create`]: a file is already there.
    #[error("{}: a store already exists; refusing to create a new one over it", .path.display())]
    Exists { path: PathBuf },
    /// The file could not be inspected before opening it.
    #[error("{}: cannot read the store file", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A value in `meta` written by this module does not decode.
    #[error("{}: meta '{key}' does not decode", .path.display())]
    BadMeta {
        path: PathBuf,
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// The coordinator's durable store; see the [module documentation](self).
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Creates a new store at `path` (and its tables); refuses with [`StoreError::Exists`] if a
    /// file is there, whatever it holds.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AlreadyExists => StoreError::Exists {
                    path: path.to_path_buf(),
                },
                _ => StoreError::Read {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        let db = Database::builder()
            .create_file(file)
            .map_err(|e| open_error(path, e))?;
        sync_parent_dir(path).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::with_tables(db, path, true)
    }

    /// Opens the existing store at `path`, repairing it if the last process using it was
    /// killed. A missing, empty, truncated or damaged file is refused with the matching
    /// [`StoreError`]; this never panics on a damaged file (see the [module docs](self)).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        check_file(path)?;
        let repair_path = path.to_path_buf();
        let warned = Cell::new(false);
        let opened = quiet_catch_unwind(|| {
            Database::builder()
                .set_repair_callback(move |session| {
                    if !warned.replace(true) {
                        tracing::warn!(path = %repair_path.display(), progress = session.progress(),
                            "store was not closed cleanly; repairing");
                    }
                })
                .open(path)
        });
        let db = match opened {
            Ok(r) => r.map_err(|e| open_error(path, e))?,
            Err(panic) => {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!("the database library refused it ({panic})"),
                })
            }
        };
        Self::with_tables(db, path, false)
    }

    fn with_tables(db: Database, path: &Path, created: bool) -> Result<Self, StoreError> {
        let store = Store {
            db,
            path: path.to_path_buf(),
        };
        // Create the tables up front so that readers never meet a missing table.
        store.write("open", |tx| {
            tx.open_table(JOBS)?;
            tx.open_table(CHECKPOINTS)?;
            tx.open_table(ROUND_SHA256)?;
            tx.open_table(META)?;
            Ok(())
        })?;
        tracing::debug!(path = %path.display(), created, "store open");
        Ok(store)
    }

    /// The audit log's position recorded at the last audited commit, if any was recorded.
    pub fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        let Some(bytes) = self.get_meta(AUDIT_HEAD_KEY)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::BadMeta {
                path: self.path.clone(),
                key: AUDIT_HEAD_KEY,
                source,
            })
    }

    /// Records the audit log's position (durable on return), e.g. after entries were appended
    /// with no step to commit.
    pub fn record_audit_head(&self, head: &AuditHead) -> Result<(), StoreError> {
        let value = self.audit_head_bytes(head)?;
        self.write("record_audit_head", |tx| {
            tx.open_table(META)?
                .insert(AUDIT_HEAD_KEY, value.as_slice())?;
            Ok(())
        })
    }

    fn audit_head_bytes(&self, head: &AuditHead) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(head).map_err(|source| StoreError::BadMeta {
            path: self.path.clone(),
            key: AUDIT_HEAD_KEY,
            source,
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `record` as the job's record (durable on return).
    pub fn put_job(&self, job_id: &str, record: &[u8]) -> Result<(), StoreError> {
        self.write("put_job", |tx| {
            tx.open_table(JOBS)?.insert(job_id, record)?;
            Ok(())
        })
    }

    /// The job's record, if the job exists.
    pub fn get_job(&self, job_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read("get_job", |tx| {
            let table = tx.open_table(JOBS)?;
            let value = table.get(job_id)?.map(|v| v.value().to_vec());
            Ok(value)
        })
    }

    /// Every job with its record, sorted by job id (bytewise).
    pub fn list_jobs(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.read("list_jobs", |tx| {
            let table = tx.open_table(JOBS)?;
            let mut jobs = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                jobs.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(jobs)
        })
    }

    /// Atomically (one write transaction, durable on return) stores the job record AND the
    /// checkpoint for `step`.
    pub fn commit_step(
        &self,
        job_id: &str,
        record: &[u8],
        step: u64,
        checkpoint: &[u8],
    ) -> Result<(), StoreError> {
        self.commit_round_step(job_id, record, step, checkpoint, None)
    }

    /// [`Store::commit_step`], also recording (in the same transaction) `round_sha256`: the
    /// SHA-256 (hex) of the aggregate of the round that produced the state at `step`. `None`
    /// leaves the round hashes as they are (e.g. before the job's first round).
    pub fn commit_round_step(
        &self,
        job_id: &str,
        record: &[u8],
        step: u64,
        checkpoint: &[u8],
        round_sha256: Option<&str>,
    ) -> Result<(), StoreError> {
        self.commit(job_id, record, step, checkpoint, round_sha256, None)
    }

    fn commit(
        &self,
        job_id: &str,
        record: &[u8],
        step: u64,
        checkpoint: &[u8],
        round_sha256: Option<&str>,
        audit_head: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.write("commit_step", |tx| {
            tx.open_table(JOBS)?.insert(job_id, record)?;
            tx.open_table(CHECKPOINTS)?
                .insert((job_id, step), checkpoint)?;
            if let Some(hash) = round_sha256 {
                tx.open_table(ROUND_SHA256)?.insert((job_id, step), hash)?;
            }
            if let Some(head) = audit_head {
                tx.open_table(META)?.insert(AUDIT_HEAD_KEY, head)?;
            }
            Ok(())
        })?;
        tracing::debug!(
            job = job_id,
            step,
            bytes = checkpoint.len(),
            round_sha256 = round_sha256.unwrap_or(""),
            "step committed"
        );
        Ok(())
    }

    /// [`Store::commit_round_step`], also recording (in the same transaction) `audit`: the
    /// audit log's position once every entry of the rounds that led to this state is appended.
    /// After a crash the step and the position are both present or both absent, so the store
    /// never records a position the log has not reached.
    pub fn commit_step_audited(
        &self,
        job_id: &str,
        record: &[u8],
        step: u64,
        checkpoint: &[u8],
        round_sha256: Option<&str>,
        audit: &AuditHead,
    ) -> Result<(), StoreError> {
        let head = self.audit_head_bytes(audit)?;
        self.commit(job_id, record, step, checkpoint, round_sha256, Some(&head))
    }

    /// The round hash recorded with the job's latest commit at or before `step` (the round
    /// whose aggregate produced the job state at `step`), if any round hash was recorded.
    pub fn round_sha256(&self, job_id: &str, step: u64) -> Result<Option<String>, StoreError> {
        self.read("round_sha256", |tx| {
            let table = tx.open_table(ROUND_SHA256)?;
            let last = table.range((job_id, 0)..=(job_id, step))?.next_back();
            match last {
                None => Ok(None),
                Some(row) => {
                    let (_, v) = row?;
                    Ok(Some(v.value().to_string()))
                }
            }
        })
    }

    /// The job's checkpoint with the highest step, if it has any.
    pub fn latest_checkpoint(&self, job_id: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.read("latest_checkpoint", |tx| {
            let table = tx.open_table(CHECKPOINTS)?;
            let last = table.range((job_id, 0)..=(job_id, u64::MAX))?.next_back();
            match last {
                None => Ok(None),
                Some(row) => {
                    let (k, v) = row?;
                    Ok(Some((k.value().1, v.value().to_vec())))
                }
            }
        })
    }

    /// The job's checkpoint after `step`, if that step was committed.
    pub fn checkpoint(&self, job_id: &str, step: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.read("checkpoint", |tx| {
            let table = tx.open_table(CHECKPOINTS)?;
            let value = table.get((job_id, step))?.map(|v| v.value().to_vec());
            Ok(value)
        })
    }

    /// Stores a metadata value (durable on return).
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write("put_meta", |tx| {
            tx.open_table(META)?.insert(key, value)?;
            Ok(())
        })
    }

    /// A metadata value, if set.
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read("get_meta", |tx| {
            let table = tx.open_table(META)?;
            let value = table.get(key)?.map(|v| v.value().to_vec());
            Ok(value)
        })
    }

    /// Runs `f` in one write transaction and commits it durably; on error nothing is written.
    fn write(
        &self,
        op: &'static str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), DbError>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(|e| self.err(op, e))?;
        tx.set_durability(Durability::Immediate);
        tx.set_quick_repair(true);
        // Dropping `tx` without commit (the `?` below) aborts it.
        f(&tx).map_err(|e| self.err(op, e))?;
        tx.commit().map_err(|e| self.err(op, e))
    }

    /// Runs `f` in one read transaction (a consistent snapshot).
    fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, DbError>,
    ) -> Result<T, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(op, e))?;
        f(&tx).map_err(|e| self.err(op, e))
    }

    fn err(&self, op: &'static str, e: impl Into<DbError>) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            op,
            source: e.into().0,
        }
    }
}

/// Any redb error, boxed (redb's errors are large); lets the transaction bodies use `?`.
struct DbError(Box<redb::Error>);

impl<E: Into<redb::Error>> From<E> for DbError {
    fn from(e: E) -> Self {
        DbError(Box::new(e.into()))
    }
}

/// Maps redb's open errors; a held lock is [`StoreError::AlreadyOpen`].
fn open_error(path: &Path, e: DatabaseError) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen {
            path: path.to_path_buf(),
        },
        source => StoreError::Open {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// Checks, before redb sees it, that `path` is a whole redb file: present, not empty, the
/// magic number, and at least as long as its header's region layout.
fn check_file(path: &Path) -> Result<(), StoreError> {
    let read = |source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(read(e)),
    };
    let len = file.metadata().map_err(read)?.len();
    if len == 0 {
        return Err(StoreError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut header = Vec::with_capacity(REDB_HEADER_PREFIX);
    (&mut file)
        .take(REDB_HEADER_PREFIX as u64)
        .read_to_end(&mut header)
        .map_err(read)?;
    let corrupt = |reason: &str| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if !header.starts_with(&REDB_MAGIC) {
        return Err(corrupt("it is not a redb database (wrong magic number)"));
    }
    let Some(expected) = expected_len(&header) else {
        return Err(corrupt(&format!(
            "only {len} bytes, shorter than a redb header"
        )));
    };
    match expected {
        Ok(expected) if len < expected => Err(StoreError::Truncated {
            path: path.to_path_buf(),
            len,
            expected,
        }),
        Ok(_) => Ok(()),
        Err(reason) => Err(corrupt(reason)),
    }
}

/// The file length a redb header (file format 2/3) describes: one page of super-header, the
/// full regions, then the trailing partial region; each region is its header pages plus its data
/// pages. `None` if `header` is too short to tell.
fn expected_len(header: &[u8]) -> Option<Result<u64, &'static str>> {
    let u32_at = |offset: usize| -> Option<u64> {
        let bytes: [u8; 4] = header.get(offset..offset + 4)?.try_into().ok()?;
        Some(u64::from(u32::from_le_bytes(bytes)))
    };
    let page_size = u32_at(12)?;
    let region_header_pages = u32_at(16)?;
    let region_max_data_pages = u32_at(20)?;
    let full_regions = u32_at(24)?;
    let trailing_data_pages = u32_at(28)?;
    if page_size == 0 || !page_size.is_power_of_two() {
        return Some(Err("its header names an invalid page size"));
    }
    // Each factor is below 2^32, so every product and sum fits in u128.
    let full = u128::from(region_header_pages + region_max_data_pages) * u128::from(page_size);
    let trailing = if trailing_data_pages > 0 {
        u128::from(region_header_pages + trailing_data_pages) * u128::from(page_size)
    } else {
        0
    };
    let total = u128::from(page_size) + u128::from(full_regions) * full + trailing;
    Some(u64::try_from(total).map_err(|_| "its header describes an impossible length"))
}

/// Runs `f`, turning a panic into `Err(message)`. While `f` runs on this thread, a panic on this
/// thread is not reported by the panic hook (its message is returned instead); panics on other
/// threads still reach the previous hook. The previous hook is back in place on return.
fn quiet_catch_unwind<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    use std::sync::{Arc, Mutex};
    type Hook = dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static;
    let me = std::thread::current().id();
    let previous: Arc<Hook> = Arc::from(std::panic::take_hook());
    let caught: Arc<Mutex<Option<String>>> = Arc::default();
    {
        let previous = previous.clone();
        let caught = caught.clone();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() != me {
                return previous(info);
            }
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            if let Ok(mut c) = caught.lock() {
                *c = Some(format!("{what}{at}"));
            }
        }));
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    drop(std::panic::take_hook());
    std::panic::set_hook(Box::new(move |info| previous(info)));
    result.map_err(|_| {
        caught
            .lock()
            .ok()
            .and_then(|mut c| c.take())
            .unwrap_or_else(|| "panic".to_string())
    })
}

/// Makes a newly created file's directory entry durable.
pub(crate) fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_hashes_are_committed_with_their_step_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = Store::create(&path).unwrap();
            store.commit_step("j", b"r0", 0, b"c0").unwrap();
            assert_eq!(store.round_sha256("j", 0).unwrap(), None);
            store
                .commit_round_step("j", b"r1", 1, b"c1", Some("h1"))
                .unwrap();
            store
                .commit_round_step("j", b"r2", 2, b"c2", Some("h2"))
                .unwrap();
            // A re-commit of a step without a new round keeps the step's hash.
            store.commit_round_step("j", b"r2", 2, b"c2", None).unwrap();
            store
                .commit_round_step("other", b"o", 5, b"o5", Some("o5"))
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.round_sha256("j", 0).unwrap(), None);
        assert_eq!(store.round_sha256("j", 1).unwrap().as_deref(), Some("h1"));
        assert_eq!(store.round_sha256("j", 2).unwrap().as_deref(), Some("h2"));
        // A later step committed without a round hash is produced by the last hashed round.
        assert_eq!(store.round_sha256("j", 9).unwrap().as_deref(), Some("h2"));
        assert_eq!(store.round_sha256("other", 4).unwrap(), None);
        assert_eq!(store.round_sha256("nope", 9).unwrap(), None);
    }

    /// Pins [`expected_len`] (our reading of redb's header) against the files redb writes: if a
    /// redb upgrade changes the layout, this fails instead of `open` refusing good stores.
    #[test]
    fn the_header_length_check_matches_what_redb_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let len_and_expected = |path: &Path| {
            let bytes = std::fs::read(path).unwrap();
            let expected = expected_len(&bytes[..REDB_HEADER_PREFIX]).unwrap().unwrap();
            (bytes.len() as u64, expected)
        };
        drop(Store::create(&path).unwrap());
        let (len, expected) = len_and_expected(&path);
        assert_eq!(len, expected, "fresh store");
        // Grow it across several regions' worth of data.
        let mut lens = vec![len];
        for round in 0..6u64 {
            let store = Store::open(&path).unwrap();
            for step in 0..40u64 {
                let payload = vec![(step + round) as u8; 64 * 1024];
                store
                    .commit_step("j", b"r", round * 100 + step, &payload)
                    .unwrap();
            }
            drop(store);
            let (len, expected) = len_and_expected(&path);
            assert_eq!(len, expected, "after round {round}");
            lens.push(len);
        }
        assert!(
            lens.last() > lens.first(),
            "the store did not grow: {lens:?}"
        );
    }

    #[test]
    fn a_panic_inside_the_guard_is_returned_and_the_hook_restored() {
        let r: Result<(), String> = quiet_catch_unwind(|| panic!("boom {}", 7));
        let msg = r.unwrap_err();
        assert!(msg.starts_with("boom 7 at "), "{msg}");
        assert_eq!(quiet_catch_unwind(|| 5), Ok(5));
    }
}
