//! The coordinator's state directory: creating it is an explicit act, opening it checks that
//! nothing was lost.
//!
//! A state directory holds three files:
//!
//! | file              | what                                                          |
//! |-------------------|---------------------------------------------------------------|
//! | `FEDSILO-STATE`   | marker written by [`init`]: "state was created here"          |
//! | `coordinator.redb`| the [`Store`]: jobs, checkpoints, the audit log's head        |
//! | `audit.jsonl`     | the [`AuditLog`]                                              |
//!
//! [`init`] (`fedsilo coordinator init`, or `coordinator serve --init`) creates all three and
//! records the empty log's head in the store; it refuses a directory that already holds state.
//! [`open`] (every `coordinator serve`) refuses, with an error naming the file:
//!
//! - a directory without the marker (never initialised: run init; or left by an older fedsilo or
//!   an interrupted init: init adopts it after checking it);
//! - a marked directory whose store is missing, empty, truncated or corrupt — the jobs existed,
//!   so starting with none would lose them silently;
//! - a store that records no audit head (not made by [`init`]);
//! - an audit log missing, broken, cut short of the head the store recorded, or with another
//!   hash at that position (see [`crate::audit`]).
//!
//! **Invariant:** after [`open`] returns, the store's recorded audit head is a prefix of the log
//! (the log may be ahead: entries appended after the store's last commit), and [`open`] records
//! the log's current head before returning.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::audit::{AuditError, AuditHead, AuditLog};
use crate::store::{sync_parent_dir, Store, StoreError};

/// Name of the marker file [`init`] writes.
pub const MARKER_FILE: &str = "FEDSILO-STATE";
/// Name of the store in the state directory.
pub const STORE_FILE: &str = "coordinator.redb";
/// Name of the audit log in the state directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// The only `format` a marker may name.
const MARKER_FORMAT: &str = "fedsilo-coordinator-state-v1";

/// Errors opening or creating a state directory; each names the directory or file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// [`open`]: nothing was ever created here.
    #[error(
        "{}: not an initialised coordinator state directory (no {MARKER_FILE}); create a fresh \
         state with `fedsilo coordinator init --config <coordinator.toml>` (or `coordinator serve --init`)",
        .dir.display()
    )]
    NotInitialised { dir: PathBuf },
    /// [`open`]: a store or audit log without the marker.
    #[error(
        "{}: holds {} but no {MARKER_FILE} marker (written by an older fedsilo, or an init was \
         interrupted); `fedsilo coordinator init --config <coordinator.toml>` checks and adopts it",
        .dir.display(), names(.found)
    )]
    Unmarked { dir: PathBuf, found: Vec<PathBuf> },
    /// The store is missing although state existed (the marker, or audit entries, say so).
    #[error(
        "{}: the store is missing, but {}: starting would silently drop whatever jobs it held; \
         restore it from a backup (to start afresh on purpose, move the state directory away \
         and run `fedsilo coordinator init`)",
        .path.display(), .evidence
    )]
    StoreMissing { path: PathBuf, evidence: String },
    /// The store holds no audit head: it was not created by [`init`] (replaced?).
    #[error(
        "{}: the store records no audit-log head, so it was not created by `fedsilo coordinator init` \
         for this directory (was it replaced?)",
        .path.display()
    )]
    NoAuditHead { path: PathBuf },
    /// [`init`]: state is already here.
    #[error(
        "{}: already initialised ({} exists); refusing to create a fresh state over it",
        .dir.display(), .existing.display()
    )]
    AlreadyInitialised { dir: PathBuf, existing: PathBuf },
    /// [`init`]: an audit log with entries but no store: jobs existed.
    #[error(
        "{}: the audit log holds {entries} entries but the store {} is missing: jobs existed; \
         restore the store, or move the log away to start afresh",
        .audit.display(), .store.display()
    )]
    OrphanLog {
        audit: PathBuf,
        store: PathBuf,
        entries: u64,
    },
    /// The marker does not parse.
    #[error("{}: not a fedsilo state marker", .path.display())]
    BadMarker {
        path: PathBuf,
        #[source]
        source: fedsilo_config::ConfigError,
    },
    /// The marker names a format this fedsilo does not know.
    #[error("{}: state format '{format}', this fedsilo knows '{MARKER_FORMAT}'", .path.display())]
    MarkerFormat { path: PathBuf, format: String },
    /// A file or directory operation failed.
    #[error("{}: {op}", .path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

fn names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The marker's content (TOML).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Marker {
    format: String,
    created_unix_ms: u64,
}

/// The paths of a state directory.
#[derive(Clone, Debug)]
pub struct StatePaths {
    pub dir: PathBuf,
    pub marker: PathBuf,
    pub store: PathBuf,
    pub audit: PathBuf,
}

impl StatePaths {
    pub fn new(dir: &Path) -> Self {
        StatePaths {
            dir: dir.to_path_buf(),
            marker: dir.join(MARKER_FILE),
            store: dir.join(STORE_FILE),
            audit: dir.join(AUDIT_FILE),
        }
    }
}

/// What [`init`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Initialised {
    /// A fresh, empty state.
    Created,
    /// An existing store and log without a marker were checked and adopted.
    Adopted { jobs: usize, audit: AuditHead },
}

/// Creates a fresh state in `dir` (created if absent): an empty store recording the empty log's
/// head, an empty audit log, then the marker. Refuses a directory that already has the marker
/// ([`StateError::AlreadyInitialised`]). A directory with a store (and log) but no marker is
/// adopted after the same checks as [`open`] (a store from an older fedsilo, recording no head,
/// is adopted with the log's current head); an audit log with entries but no store is refused.
pub fn init(dir: &Path) -> Result<Initialised, StateError> {
    let p = StatePaths::new(dir);
    std::fs::create_dir_all(&p.dir).map_err(|source| StateError::Io {
        path: p.dir.clone(),
        op: "create the state directory",
        source,
    })?;
    if p.marker.exists() {
        return Err(StateError::AlreadyInitialised {
            dir: p.dir.clone(),
            existing: p.marker.clone(),
        });
    }
    let outcome = if p.store.exists() {
        let store = Store::open(&p.store)?;
        let audit = match store.audit_head()? {
            Some(recorded) => AuditLog::open_checked(&p.audit, &recorded)?,
            None if p.audit.exists() => AuditLog::open(&p.audit)?,
            None => {
                let jobs = store.list_jobs()?.len();
                if jobs > 0 {
                    // An older store whose log is gone: adopting it would start a new chain
                    // over rounds that were audited.
                    return Err(AuditError::Missing {
                        path: p.audit.clone(),
                        recorded: AuditHead::genesis(),
                    }
                    .into());
                }
                AuditLog::create(&p.audit)?
            }
        };
        let head = audit.position();
        store.record_audit_head(&head)?;
        let jobs = store.list_jobs()?.len();
        tracing::warn!(dir = %p.dir.display(), jobs, audit = %head,
            "adopting an existing store and audit log that had no state marker");
        Initialised::Adopted { jobs, audit: head }
    } else {
        if p.audit.exists() {
            let entries = crate::audit::verify(&p.audit)?.entries;
            if entries > 0 {
                return Err(StateError::OrphanLog {
                    audit: p.audit.clone(),
                    store: p.store.clone(),
                    entries,
                });
            }
            std::fs::remove_file(&p.audit).map_err(|source| StateError::Io {
                path: p.audit.clone(),
                op: "remove the empty audit log",
                source,
            })?;
        }
        let store = Store::create(&p.store)?;
        let audit = AuditLog::create(&p.audit)?;
        store.record_audit_head(&audit.position())?;
        Initialised::Created
    };
    write_marker(&p.marker)?;
    tracing::info!(dir = %p.dir.display(), "coordinator state initialised");
    Ok(outcome)
}

/// Opens the initialised state in `dir` for a coordinator: the store and the audit log, checked
/// against each other as the [module documentation](self) lists; records the log's head in the
/// store when the log is ahead.
pub fn open(dir: &Path) -> Result<(Store, AuditLog), StateError> {
    let p = StatePaths::new(dir);
    if !p.marker.exists() {
        let log_entries = if p.audit.exists() {
            Some(crate::audit::verify(&p.audit)?.entries)
        } else {
            None
        };
        if !p.store.exists() {
            if let Some(entries) = log_entries.filter(|&n| n > 0) {
                return Err(StateError::StoreMissing {
                    path: p.store.clone(),
                    evidence: format!(
                        "the audit log {} holds {entries} entries",
                        p.audit.display()
                    ),
                });
            }
        }
        let found: Vec<PathBuf> = [&p.store, &p.audit]
            .into_iter()
            .filter(|f| f.exists())
            .cloned()
            .collect();
        if found.is_empty() {
            return Err(StateError::NotInitialised { dir: p.dir.clone() });
        }
        return Err(StateError::Unmarked {
            dir: p.dir.clone(),
            found,
        });
    }
    read_marker(&p.marker)?;
    let store = match Store::open(&p.store) {
        Ok(s) => s,
        Err(StoreError::Missing { path }) => {
            let log = match crate::audit::verify(&p.audit) {
                Ok(s) => format!(" (its audit log holds {} entries)", s.entries),
                Err(_) => String::new(),
            };
            return Err(StateError::StoreMissing {
                path,
                evidence: format!(
                    "{} says this state directory was initialised{log}",
                    p.marker.display()
                ),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let recorded = store.audit_head()?.ok_or_else(|| StateError::NoAuditHead {
        path: p.store.clone(),
    })?;
    let audit = AuditLog::open_checked(&p.audit, &recorded)?;
    let now = audit.position();
    if now != recorded {
        tracing::info!(store = %recorded, log = %now,
            "audit log is ahead of the store's last commit; recording its head");
        store.record_audit_head(&now)?;
    }
    Ok((store, audit))
}

/// Checks the store and the audit log of a state directory against each other without serving
/// (`fedsilo audit verify --store`): the store's recorded head must be a prefix of the log.
/// Returns the log's summary and the store's recorded head.
pub fn verify_store_and_log(
    store: &Path,
    audit: &Path,
) -> Result<(crate::audit::VerifySummary, AuditHead), StateError> {
    let s = Store::open(store)?;
    let recorded = s.audit_head()?.ok_or_else(|| StateError::NoAuditHead {
        path: store.to_path_buf(),
    })?;
    drop(s);
    let summary = crate::audit::verify_against(audit, &recorded)?;
    Ok((summary, recorded))
}

fn write_marker(path: &Path) -> Result<(), StateError> {
    let io = |op| {
        move |source| StateError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    let created_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let text = format!(
        "# Written by `fedsilo coordinator init`: this directory holds coordinator state.\n\
         # While this file exists, the coordinator refuses to start without its store and log.\n\
         format = \"{MARKER_FORMAT}\"\ncreated_unix_ms = {created_unix_ms}\n"
    );
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp).map_err(io("create marker"))?;
        f.write_all(text.as_bytes()).map_err(io("write marker"))?;
        f.sync_all().map_err(io("sync marker"))?;
    }
    std::fs::rename(&tmp, path).map_err(io("rename marker"))?;
    sync_parent_dir(path).map_err(io("sync the state directory"))
}

fn read_marker(path: &Path) -> Result<(), StateError> {
    let text = std::fs::read_to_string(path).map_err(|source| StateError::Io {
        path: path.to_path_buf(),
        op: "read marker",
        source,
    })?;
    let m: Marker =
        fedsilo_config::from_toml_str(&text, &path.display().to_string()).map_err(|source| {
            StateError::BadMarker {
                path: path.to_path_buf(),
                source,
            }
        })?;
    if m.format != MARKER_FORMAT {
        return Err(StateError::MarkerFormat {
            path: path.to_path_buf(),
            format: m.format,
        });
    }
    tracing::debug!(path = %path.display(), created_unix_ms = m.created_unix_ms, "state marker");
    Ok(())
}
