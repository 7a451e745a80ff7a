//! The participant's half of a PSI job: [`PsiDriver`] (sans-IO: one
//! [`fedsilo_crypto::psi::PsiParty`] per job, driven by the coordinator's relayed messages),
//! the id column read through the dataset's source ([`read_ids`]), and the persisted
//! alignment ([`Alignment`], [`AlignmentStore`]).
//!
//! Rows are numbered 0, 1, … in the order the dataset's source yields them through the
//! schema (after its cohort, before any hold-out split): the rows of the `Table` that
//! `Source::load` gives. The alignment lists this party's rows of the intersection in the
//! canonical order both parties share (row `i` here and row `i` at the peer are the same
//! customer), tied to the job id, the session and the alignment hash both parties report.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fedsilo_crypto::keys::IdentityKey;
use fedsilo_crypto::psi::{PsiConfig, PsiContext, PsiError, PsiMsg, PsiOutput, PsiParty, Role};
use fedsilo_task::job::ToCoordinator;
use fedsilo_task::psi::{PsiReport, PsiStart};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::{DataError, Labels, Schema, Source};

/// Ids handed to the PSI party per call (bounded memory while reading).
pub const ID_CHUNK_ROWS: usize = 65_536;

/// A progress line is logged each time a session's counters move by this many entries.
pub const PROGRESS_EVERY: u64 = 1 << 20;

/// Why this party cannot take part in, or go on with, a PSI session. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum PsiJobError {
    #[error("PSI job '{job}' uses dataset '{dataset}', which this node does not have")]
    UnknownDataset { job: String, dataset: String },
    #[error(
        "dataset '{dataset}': its schema {} declares no `id_column` and the PSI job names \
         none; a PSI or vertical job needs each party's customer ids: add `id_column = \"…\"` \
         to that schema, or `id_column` to the job spec", schema.display()
    )]
    NoIdColumn { dataset: String, schema: PathBuf },
    #[error("the peer '{peer}' is not in this node's roster")]
    UnknownPeer { peer: String },
    #[error("the roster's identity key of '{peer}' is not 32 hex-encoded bytes")]
    BadPeerKey { peer: String },
    #[error("dataset '{dataset}'")]
    Data {
        dataset: String,
        #[source]
        source: Box<DataError>,
    },
    #[error(
        "dataset '{dataset}', id column '{column}': data rows {first} and {duplicate} hold the same id \
         after normalising; remove the duplicate or launch the job with duplicates = \"keep_first\""
    )]
    DuplicateId {
        dataset: String,
        column: String,
        first: u64,
        duplicate: u64,
    },
    #[error("dataset '{dataset}', id column '{column}', data row {row}: {source}")]
    Id {
        dataset: String,
        column: String,
        row: u64,
        #[source]
        source: fedsilo_crypto::psi::IdError,
    },
    #[error(
        "the intersection is empty: {own} ids here, {peer} at '{peer_name}'. Check that both \
         parties read the same kind of id (column '{column}' here) in the same id_format \
         (this job: '{format}'): e.g. a prefix or leading zeros on one side only, or card \
         numbers against account numbers; `digits` drops separators, `text` folds case"
    )]
    EmptyIntersection {
        own: u64,
        peer: u64,
        peer_name: String,
        column: String,
        format: &'static str,
    },
    #[error("PSI exchange")]
    Protocol(#[source] PsiError),
    #[error("cannot persist the alignment in {}", path.display())]
    Persist {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("alignment file {}", path.display())]
    BadAlignment {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("alignment file {}: {reason}", path.display())]
    InconsistentAlignment { path: PathBuf, reason: String },
}

/// One session in progress at this party.
struct Session {
    start: PsiStart,
    party: PsiParty,
    ids_given: bool,
    /// `Done` was emitted (the active party may still have Result chunks to send).
    done: bool,
    /// Sum of the progress counters when the last progress line was logged.
    logged: u64,
}

/// What the driver tells its caller.
#[derive(Debug)]
pub enum PsiEvent {
    /// The party is ready for its ids: call [`PsiDriver::push_ids`] (in chunks) and
    /// [`PsiDriver::finish_ids`].
    NeedIds(PsiStart),
    /// The exchange is done: persist the alignment, then send [`report`] of it.
    Done { start: PsiStart, output: PsiOutput },
    /// The session failed at this party; the coordinator has been told (`PsiFailed` queued).
    Failed {
        job_id: String,
        session: u64,
        reason: String,
    },
}

/// The participant's PSI engine, sans-IO: messages in, messages and events out; the
/// randomness comes from the seed given.
pub struct PsiDriver {
    identity: Arc<IdentityKey>,
    /// Roster name → Ed25519 identity key (from this node's own roster file).
    peers: BTreeMap<String, String>,
    sessions: BTreeMap<String, Session>,
    /// Sessions that ended here (done, failed, superseded, job ended): a late message of one
    /// is dropped quietly. A message of any other session means this party lost it.
    closed: BTreeSet<(String, u64)>,
    /// Sessions already reported lost.
    lost: BTreeSet<(String, u64)>,
    outbox: VecDeque<ToCoordinator>,
    events: VecDeque<PsiEvent>,
    rng: rand_chacha::ChaCha20Rng,
}

impl std::fmt::Debug for PsiDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PsiDriver")
            .field("sessions", &self.sessions.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The report a party sends once its alignment is persisted.
pub fn report(start: &PsiStart, output: &PsiOutput) -> ToCoordinator {
    ToCoordinator::PsiDone(PsiReport {
        job_id: start.job_id.clone(),
        session: start.session,
        own_set_size: output.own_set_size,
        duplicates_dropped: output.duplicates_dropped,
        peer_set_size: output.peer_set_size,
        intersection_size: output.intersection_size,
        intersection_hash: output.intersection_hash,
    })
}

impl PsiDriver {
    /// `peers`: roster name → hex Ed25519 identity key.
    pub fn new(
        identity: Arc<IdentityKey>,
        peers: BTreeMap<String, String>,
        seed: [u8; 32],
    ) -> Self {
        PsiDriver {
            identity,
            peers,
            sessions: BTreeMap::new(),
            closed: BTreeSet::new(),
            lost: BTreeSet::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            rng: rand_chacha::ChaCha20Rng::from_seed(seed),
        }
    }

    fn close(&mut self, job_id: &str) {
        if let Some(s) = self.sessions.remove(job_id) {
            self.closed.insert((job_id.to_string(), s.start.session));
        }
    }

    fn fail(&mut self, job_id: &str, session: u64, reason: String) {
        tracing::error!(job = job_id, session, %reason, "PSI session failed here");
        self.close(job_id);
        self.closed.insert((job_id.to_string(), session));
        self.outbox.push_back(ToCoordinator::PsiFailed {
            job_id: job_id.to_string(),
            session,
            reason: reason.clone(),
        });
        self.events.push_back(PsiEvent::Failed {
            job_id: job_id.to_string(),
            session,
            reason,
        });
    }

    /// A new session: any earlier session of the job is dropped (its scalar with it: a
    /// session's party draws its own). A second `PsiStart` of the session in progress is
    /// ignored.
    pub fn handle_start(&mut self, start: PsiStart) {
        if self
            .sessions
            .get(&start.job_id)
            .is_some_and(|s| s.start.session == start.session)
            || self.closed.contains(&(start.job_id.clone(), start.session))
        {
            tracing::debug!(job = %start.job_id, session = start.session, "PsiStart of a session already opened here; ignored");
            return;
        }
        self.close(&start.job_id);
        let job = start.job_id.clone();
        let session = start.session;
        match self.open(start) {
            Ok(s) => {
                self.sessions.insert(job.clone(), s);
                self.pump(&job);
            }
            Err(e) => self.fail(&job, session, fedsilo_config::display_chain(&e)),
        }
    }

    fn open(&mut self, start: PsiStart) -> Result<Session, PsiJobError> {
        let key_hex = self
            .peers
            .get(&start.peer)
            .ok_or_else(|| PsiJobError::UnknownPeer {
                peer: start.peer.clone(),
            })?;
        let key: [u8; 32] = hex::decode(key_hex)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| PsiJobError::BadPeerKey {
                peer: start.peer.clone(),
            })?;
        let config = PsiConfig {
            ctx: PsiContext {
                job_id: start.job_id.clone(),
                session: start.session,
            },
            format: start.id_format,
            delivery: start.delivery,
            chunk_len: start.chunk_len as usize,
            duplicates: start.duplicates,
        };
        let party = PsiParty::new(
            config,
            start.role,
            Arc::clone(&self.identity),
            key,
            &mut self.rng,
        )
        .map_err(PsiJobError::Protocol)?;
        tracing::info!(job = %start.job_id, session = start.session, role = %start.role, peer = %start.peer, "PSI session opened");
        Ok(Session {
            start,
            party,
            ids_given: false,
            done: false,
            logged: 0,
        })
    }

    /// A session this node cannot take part in (its dataset, schema or id column is
    /// missing): refused before anything is sent, the coordinator told why (`PsiFailed`).
    /// A repeated `PsiStart` of a session already opened or closed here is ignored.
    pub fn refuse_start(&mut self, start: PsiStart, error: &PsiJobError) {
        if self
            .sessions
            .get(&start.job_id)
            .is_some_and(|s| s.start.session == start.session)
            || self.closed.contains(&(start.job_id.clone(), start.session))
        {
            return;
        }
        self.close(&start.job_id);
        self.fail(
            &start.job_id,
            start.session,
            fedsilo_config::display_chain(error),
        );
    }

    /// A message from the peer, relayed by the coordinator.
    pub fn handle_message(&mut self, msg: PsiMsg) {
        let ctx = msg.ctx().clone();
        let key = (ctx.job_id.clone(), ctx.session);
        let current = self.sessions.get(&ctx.job_id).map(|s| s.start.session);
        if current != Some(ctx.session) {
            let newer = current.is_none_or(|c| ctx.session > c);
            if newer && !self.closed.contains(&key) && self.lost.insert(key) {
                // Never opened here, or opened by an earlier run of this node: say so, so the
                // coordinator restarts the pair instead of both sides waiting forever.
                tracing::warn!(job = %ctx.job_id, session = ctx.session, "PSI message of a session this node holds no state of; reporting it lost");
                self.outbox.push_back(ToCoordinator::PsiLost {
                    job_id: ctx.job_id,
                    session: ctx.session,
                });
            } else {
                tracing::debug!(job = %ctx.job_id, session = ctx.session, "PSI message of another session; dropped");
            }
            return;
        }
        let Some(s) = self.sessions.get_mut(&ctx.job_id) else {
            return;
        };
        match s.party.handle_message(msg) {
            Ok(()) => self.pump(&ctx.job_id),
            Err(e) if e.keeps_state() => {
                tracing::warn!(job = %ctx.job_id, error = %e, "PSI message refused");
            }
            Err(e) => {
                let reason = format!("the exchange with '{}' broke: {e}", s.start.peer);
                self.fail(&ctx.job_id, ctx.session, reason);
            }
        }
    }

    /// After any input: asks for ids once the peer's Hello is in, reports completion, logs
    /// progress every [`PROGRESS_EVERY`] entries.
    fn pump(&mut self, job_id: &str) {
        let Some(s) = self.sessions.get_mut(job_id) else {
            return;
        };
        let p = s.party.progress();
        let moved = p.own_ids + p.own_sent + p.peer_received + p.doubled_back;
        if moved >= s.logged + PROGRESS_EVERY {
            s.logged = moved;
            tracing::info!(
                job = job_id,
                session = s.start.session,
                state = s.party.state_name(),
                own_ids_hashed = p.own_ids,
                own_sent = p.own_sent,
                own_set = p.own_set_size.unwrap_or(0),
                peer_received = p.peer_received,
                doubled_back = p.doubled_back,
                peer_set = ?p.peer_set_size,
                "PSI progress"
            );
        }
        if s.party.accepts_ids() && !s.ids_given {
            s.ids_given = true;
            self.events.push_back(PsiEvent::NeedIds(s.start.clone()));
        }
        if s.party.is_done() && !s.done {
            s.done = true;
            if let Some(output) = s.party.output().cloned() {
                let start = s.start.clone();
                if output.intersection_size == 0 && output.own_set_size > 0 {
                    let e = PsiJobError::EmptyIntersection {
                        own: output.own_set_size,
                        peer: output.peer_set_size,
                        peer_name: start.peer.clone(),
                        column: if start.id_column.is_empty() {
                            "the schema's id_column".into()
                        } else {
                            start.id_column.clone()
                        },
                        format: start.id_format.name(),
                    };
                    self.fail(job_id, start.session, e.to_string());
                    return;
                }
                self.events.push_back(PsiEvent::Done { start, output });
            }
        }
    }

    /// One chunk of this party's ids (rows numbered from 0 across calls). On error the
    /// session is failed and the coordinator told.
    pub fn push_ids(&mut self, job_id: &str, ids: &[String]) -> Result<(), PsiJobError> {
        let Some(s) = self.sessions.get_mut(job_id) else {
            return Ok(());
        };
        let r = s.party.push_ids(ids);
        self.after_ids(job_id, r)
    }

    pub fn finish_ids(&mut self, job_id: &str) -> Result<(), PsiJobError> {
        let Some(s) = self.sessions.get_mut(job_id) else {
            return Ok(());
        };
        let r = s.party.finish_ids(&mut self.rng);
        let r = self.after_ids(job_id, r);
        if r.is_ok() {
            self.pump(job_id);
        }
        r
    }

    fn after_ids(&mut self, job_id: &str, r: Result<(), PsiError>) -> Result<(), PsiJobError> {
        let Err(e) = r else { return Ok(()) };
        let (session, dataset, column) = self
            .sessions
            .get(job_id)
            .map(|s| {
                (
                    s.start.session,
                    s.start.dataset.clone(),
                    s.start.id_column.clone(),
                )
            })
            .unwrap_or_default();
        let err = match e {
            PsiError::DuplicateId {
                first_row,
                duplicate_row,
            } => PsiJobError::DuplicateId {
                dataset,
                column,
                first: first_row + 1,
                duplicate: duplicate_row + 1,
            },
            PsiError::Id(source) => {
                let row = match &source {
                    fedsilo_crypto::psi::IdError::Empty { row }
                    | fedsilo_crypto::psi::IdError::NotDigits { row, .. }
                    | fedsilo_crypto::psi::IdError::TooLong { row, .. } => row + 1,
                };
                PsiJobError::Id {
                    dataset,
                    column,
                    row,
                    source,
                }
            }
            e => PsiJobError::Protocol(e),
        };
        let reason = fedsilo_config::display_chain(&err);
        self.fail(job_id, session, reason);
        Err(err)
    }

    /// A local failure (reading the ids, persisting): the session ends, the coordinator is told.
    pub fn abort(&mut self, job_id: &str, error: &PsiJobError) {
        let session = self.sessions.get(job_id).map(|s| s.start.session);
        if let Some(session) = session {
            self.fail(job_id, session, fedsilo_config::display_chain(error));
        }
    }

    /// The job ended at the coordinator: drop its session.
    pub fn job_ended(&mut self, job_id: &str) {
        self.close(job_id);
    }

    /// Sessions open here, `(job, session)`: what a node records (job ids and numbers only)
    /// so that, restarted, it can report them lost ([`PsiDriver::report_lost`]).
    pub fn open_sessions(&self) -> Vec<(String, u64)> {
        self.sessions
            .iter()
            .map(|(job, s)| (job.clone(), s.start.session))
            .collect()
    }

    /// A restarted node: it holds no state of these sessions, which an earlier run had
    /// open. Queues a `PsiLost` for each; the coordinator restarts the pair.
    pub fn report_lost(&mut self, sessions: &[(String, u64)]) {
        for (job, session) in sessions {
            if self.sessions.contains_key(job) || !self.lost.insert((job.clone(), *session)) {
                continue;
            }
            tracing::warn!(job = %job, session, "PSI session of an earlier run of this node: reporting it lost");
            self.outbox.push_back(ToCoordinator::PsiLost {
                job_id: job.clone(),
                session: *session,
            });
        }
    }

    /// The next message for the coordinator. Chunks are produced lazily: send each before
    /// polling the next to keep memory bounded.
    pub fn poll_transmit(&mut self) -> Option<ToCoordinator> {
        if let Some(m) = self.outbox.pop_front() {
            return Some(m);
        }
        let job = self
            .sessions
            .iter_mut()
            .find_map(|(job, s)| s.party.poll_transmit().map(|m| (job.clone(), m)));
        match job {
            Some((job, m)) => {
                self.pump(&job);
                Some(ToCoordinator::Psi(m))
            }
            None => {
                // Nothing left to send: a finished session is over.
                let over: Vec<String> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.done)
                    .map(|(job, _)| job.clone())
                    .collect();
                for job in over {
                    self.close(&job);
                }
                None
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<PsiEvent> {
        self.events.pop_front()
    }

    /// Whether messages for the coordinator are queued (not counting lazily made chunks).
    pub fn has_queued(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Whether `job_id` has a session here.
    pub fn has_session(&self, job_id: &str) -> bool {
        self.sessions.contains_key(job_id)
    }
}

/// Reads the id column of `source` through `schema` (the PSI job's `id_column` when not
/// empty, else the schema's), handing ids to `sink` in chunks of at most
/// [`ID_CHUNK_ROWS`], streamed from every source kind (CSV, Parquet, PostgreSQL:
/// [`Source::load_chunks`]), so memory is one chunk whatever the set's size. Returns the
/// number of rows.
pub fn read_ids(
    dataset: &str,
    source: &Source,
    (schema_path, schema): (&Path, &Schema),
    id_column: &str,
    sink: &mut dyn FnMut(&[String]) -> Result<(), PsiJobError>,
) -> Result<u64, PsiJobError> {
    let schema = with_id_column(dataset, schema_path, schema, id_column)?;
    let data = |source| PsiJobError::Data {
        dataset: dataset.to_string(),
        source: Box::new(source),
    };
    let mut sink_table = |t: fedsilo_ml::table::Table| -> Result<(), ChunkError> {
        sink(&t.ids).map_err(ChunkError::Psi)
    };
    let n = source
        .load_chunks(&schema, ID_CHUNK_ROWS, Labels::IfPresent, &mut sink_table)
        .map_err(|e| match e {
            ChunkError::Data(d) => data(*d),
            ChunkError::Psi(p) => p,
        })?;
    Ok(n as u64)
}

/// `schema` with the PSI job's `id_column` when it names one; refused, naming the schema
/// file, when neither the job nor the schema names an id column.
pub fn with_id_column(
    dataset: &str,
    schema_path: &Path,
    schema: &Schema,
    id_column: &str,
) -> Result<Schema, PsiJobError> {
    let mut schema = schema.clone();
    if !id_column.is_empty() {
        schema.id_column = Some(id_column.to_string());
    }
    if schema.id_column.is_none() {
        return Err(PsiJobError::NoIdColumn {
            dataset: dataset.to_string(),
            schema: schema_path.to_path_buf(),
        });
    }
    Ok(schema)
}

/// An error while streaming a CSV's ids: the reader's or the sink's.
enum ChunkError {
    Data(Box<DataError>),
    Psi(PsiJobError),
}

impl From<DataError> for ChunkError {
    fn from(e: DataError) -> Self {
        ChunkError::Data(Box::new(e))
    }
}

/// A party's persisted alignment for one PSI session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alignment {
    pub job_id: String,
    pub session: u64,
    /// "active" or "passive".
    pub role: String,
    pub peer: String,
    pub dataset: String,
    /// Empty = the schema's `id_column`.
    pub id_column: String,
    pub id_format: String,
    pub own_set_size: u64,
    pub duplicates_dropped: u64,
    pub peer_set_size: u64,
    pub intersection_size: u64,
    /// The alignment hash (hex), the same at both parties and in the coordinator's audit log.
    pub intersection_hash: String,
    /// This party's 0-based rows of the intersection in the shared order; `None` for a
    /// passive party of an `active_only` job.
    pub rows: Option<Vec<u32>>,
    /// SHA-256 of the normalised ids at `rows`, in order
    /// ([`crate::vertical::rows_digest`]): what a vertical job checks its rows against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_digest: Option<String>,
}

impl Alignment {
    pub fn new(start: &PsiStart, output: &PsiOutput) -> Self {
        Alignment {
            job_id: start.job_id.clone(),
            session: start.session,
            role: output.role.name().to_string(),
            peer: start.peer.clone(),
            dataset: start.dataset.clone(),
            id_column: start.id_column.clone(),
            id_format: start.id_format.name().to_string(),
            own_set_size: output.own_set_size,
            duplicates_dropped: output.duplicates_dropped,
            peer_set_size: output.peer_set_size,
            intersection_size: output.intersection_size,
            intersection_hash: hex::encode(output.intersection_hash),
            rows: output.rows.clone(),
            rows_digest: None,
        }
    }

    pub fn role(&self) -> Option<Role> {
        match self.role.as_str() {
            "active" => Some(Role::Active),
            "passive" => Some(Role::Passive),
            _ => None,
        }
    }
}

/// Where a participant keeps its alignments: `<state_dir>/psi/<job>--<peer>.json`, written
/// whole to a temporary file and renamed, so a file is either the old or the new alignment.
#[derive(Clone, Debug)]
pub struct AlignmentStore {
    dir: PathBuf,
}

/// A file-name-safe form of a job or institution name: `[A-Za-z0-9._-]` kept, anything else
/// `_`, and when anything was replaced, 8 hex digits of its SHA-256 appended.
fn file_part(s: &str) -> String {
    let safe: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe == s && !s.starts_with('.') {
        safe
    } else {
        use sha2::Digest;
        let h = sha2::Sha256::digest(s.as_bytes());
        format!("{safe}-{}", hex::encode(h.get(..4).unwrap_or_default()))
    }
}

impl AlignmentStore {
    pub fn new(state_dir: &Path) -> Self {
        AlignmentStore {
            dir: state_dir.join("psi"),
        }
    }

    pub fn path(&self, job_id: &str, peer: &str) -> PathBuf {
        self.dir
            .join(format!("{}--{}.json", file_part(job_id), file_part(peer)))
    }

    /// Writes `a` (replacing an earlier session's alignment of the same job and peer).
    pub fn save(&self, a: &Alignment) -> Result<PathBuf, PsiJobError> {
        let path = self.path(&a.job_id, &a.peer);
        let persist = |source| PsiJobError::Persist {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(persist)?;
        let bytes = serde_json::to_vec(a).map_err(|e| persist(std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(persist)?;
            f.write_all(&bytes).map_err(persist)?;
            f.sync_all().map_err(persist)?;
        }
        std::fs::rename(&tmp, &path).map_err(persist)?;
        Ok(path)
    }

    fn open_sessions_path(&self) -> PathBuf {
        self.dir.join("open-sessions.json")
    }

    /// Records the sessions open at this node (job ids and session numbers, nothing else),
    /// so that a restarted node can report them lost. Written whole, then renamed.
    pub fn save_open_sessions(&self, sessions: &[(String, u64)]) -> Result<(), PsiJobError> {
        let path = self.open_sessions_path();
        let persist = |source| PsiJobError::Persist {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(persist)?;
        let bytes = serde_json::to_vec(sessions).map_err(|e| persist(std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).map_err(persist)?;
        std::fs::rename(&tmp, &path).map_err(persist)
    }

    /// The sessions an earlier run of this node had open (none when it never recorded any).
    pub fn load_open_sessions(&self) -> Result<Vec<(String, u64)>, PsiJobError> {
        let path = self.open_sessions_path();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|source| PsiJobError::BadAlignment { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(PsiJobError::Persist { path, source }),
        }
    }

    /// The alignment of `job_id` with `peer`, checked for consistency (rows count and range).
    pub fn load(&self, job_id: &str, peer: &str) -> Result<Option<Alignment>, PsiJobError> {
        let path = self.path(job_id, peer);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PsiJobError::Persist { path, source }),
        };
        let a: Alignment =
            serde_json::from_slice(&bytes).map_err(|source| PsiJobError::BadAlignment {
                path: path.clone(),
                source,
            })?;
        let bad = |reason: String| PsiJobError::InconsistentAlignment {
            path: path.clone(),
            reason,
        };
        if a.job_id != job_id || a.peer != peer {
            return Err(bad(format!(
                "it is the alignment of job '{}' with '{}'",
                a.job_id, a.peer
            )));
        }
        if a.role().is_none() {
            return Err(bad(format!("role '{}'", a.role)));
        }
        if a.intersection_hash.len() != 64 || hex::decode(&a.intersection_hash).is_err() {
            return Err(bad("the alignment hash is not 32 hex bytes".into()));
        }
        if let Some(rows) = &a.rows {
            if rows.len() as u64 != a.intersection_size {
                return Err(bad(format!(
                    "{} rows for an intersection of {}",
                    rows.len(),
                    a.intersection_size
                )));
            }
            if let Some(r) = rows
                .iter()
                .find(|&&r| u64::from(r) >= a.own_set_size + a.duplicates_dropped)
            {
                return Err(bad(format!(
                    "row {r} is beyond the {} rows read",
                    a.own_set_size + a.duplicates_dropped
                )));
            }
        }
        Ok(Some(a))
    }
}
