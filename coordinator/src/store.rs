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
//! # Exclusivity
//!
//! redb holds an exclusive lock on the file while a [`Store`] is open; a second open, from this
//! process or another, fails with [`StoreError::AlreadyOpen`]. The lock is released when the
//! `Store` is dropped or its process dies.

use std::cell::Cell;
use std::fs::File;
use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, Durability, ReadableTable, TableDefinition};

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const CHECKPOINTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("checkpoints");
const ROUND_SHA256: TableDefinition<(&str, u64), &str> = TableDefinition::new("round_sha256");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

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
    #[error("{}: cannot open store: {source}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: DatabaseError,
    },
    /// A transaction failed; `op` is the [`Store`] method.
    #[error("{}: {op}: {source}", .path.display())]
    Db {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    /// A newly created store file could not be made durable (its directory entry synced).
    #[error("{}: cannot sync the directory holding the new store: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The coordinator's durable store; see the [module documentation](self).
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens the store at `path`, creating it (and its tables) if absent, repairing it if the
    /// last process using it was killed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let created = !path.exists();
        let repair_path = path.to_path_buf();
        let warned = Cell::new(false);
        let db = Database::builder()
            .set_repair_callback(move |session| {
                if !warned.replace(true) {
                    tracing::warn!(path = %repair_path.display(), progress = session.progress(),
                        "store was not closed cleanly; repairing");
                }
            })
            .create(path)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen {
                    path: path.to_path_buf(),
                },
                source => StoreError::Open {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        if created {
            sync_parent_dir(path).map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
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
        self.write("commit_step", |tx| {
            tx.open_table(JOBS)?.insert(job_id, record)?;
            tx.open_table(CHECKPOINTS)?
                .insert((job_id, step), checkpoint)?;
            if let Some(hash) = round_sha256 {
                tx.open_table(ROUND_SHA256)?.insert((job_id, step), hash)?;
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
            let store = Store::open(&path).unwrap();
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
}
