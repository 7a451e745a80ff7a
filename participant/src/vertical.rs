//! The participant's half of a vertical model job: [`VerticalDriver`] (sans-IO: one session
//! per job, the `fedsilo_vertical` party inside sealed channels — at the active party one per
//! passive party, at a passive party one to the active party), the aligned rows loaded and
//! checked against the PSI job's alignment ([`load_aligned`]), and the model files each party
//! writes ([`VerticalModelFile`]).
//!
//! With several passive parties the active party sends each `Hello` and sealed message to a
//! named passive party (`ToCoordinator::VerticalRelay`) and learns whose each relayed message
//! is; it loads every pair's alignment and keeps the rows aligned in every pair
//! ([`fedsilo_task::vertical::common_rows`]), and first tells each passive party its positions
//! of them ([`ToPassive::Rows`]); a passive party keeps its data until that list arrives and
//! then keeps exactly those rows. The active party starts once every passive party is
//! `Ready`, routes the `fedsilo_vertical` party's `(index, message)` outputs, and scores once
//! every passive party has answered.
//!
//! A session: both parties send a signed Hello (`fedsilo_crypto::psi::channel`; the peer's
//! identity key from this node's own roster, never from the coordinator); the node loads
//! the aligned rows ([`VerticalEvent::NeedData`], then [`VerticalDriver::provide_data`]);
//! the passive party tells the active one how many columns and rows it holds (`Ready`);
//! the active party draws its Paillier key and the protocol of `fedsilo_vertical` runs —
//! every message serialised, sealed to the peer and relayed by the coordinator unread. The
//! active party reports each completed iteration or tree. At the end the active party asks
//! for the hold-out rows' partial logits (LR) or routes (GBDT), scores them jointly and
//! computes the hold-out AUC; each party then writes its part of the model
//! ([`VerticalEvent::Done`]) and reports.
//!
//! The hold-out rows are a seeded fraction of the aligned positions
//! ([`fedsilo_task::vertical::VerticalJobSpec::holdout_positions`]), the same at both
//! parties. LR: each party standardises its own columns on its training rows
//! ([`fedsilo_task::pooled::standardizer_of`]), as the simulator and the pooled reference do.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fedsilo_crypto::keys::IdentityKey;
use fedsilo_crypto::psi::channel::{Channel, ChannelHello};
use fedsilo_crypto::psi::{IdFormat, PsiContext, PsiMsg, Role, Sealed};
use fedsilo_ml::linear::sigmoid;
use fedsilo_task::job::ToCoordinator;
use fedsilo_task::vertical::{
    VerticalJobSpec, VerticalKind, VerticalProgress, VerticalReport, VerticalStart,
};
use fedsilo_task::Standardizer;
use fedsilo_vertical::boost::{
    ActiveBoost, BoostCheckpoint, BoostToActive, BoostToPassive, PassiveBoost,
    PassiveBoostCheckpoint, PassiveSplit, VerticalGbdtModel,
};
use fedsilo_vertical::lr::{
    ActiveLr, ActiveLrModel, LrCheckpoint, LrToActive, LrToPassive, PassiveLr,
};
use fedsilo_vertical::{SecretKey, VerticalError};
use ndarray::{Array1, Array2, Axis};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::data::{Schema, Source};
use crate::psi::{Alignment, AlignmentStore, PsiJobError};

pub mod parts;
pub mod score;

use parts::{PartError, Reassembly};
use score::{ModelFileError, ScoredRows, ScoringAnswer, ScoringError};

/// Why this party cannot take part in, or go on with, a vertical session. Each names what
/// to fix.
#[derive(Debug, thiserror::Error)]
pub enum VerticalJobError {
    #[error("vertical job '{job}' uses dataset '{dataset}', which this node does not have")]
    UnknownDataset { job: String, dataset: String },
    #[error("the peer '{peer}' is not in this node's roster, or its identity key is not 32 hex-encoded bytes")]
    UnknownPeer { peer: String },
    #[error(
        "no alignment of PSI job '{psi_job}' with '{peer}' at {}: this node did not take part \
         in that PSI job (or its state directory changed); run the PSI job, then launch the \
         vertical job again", path.display()
    )]
    NoAlignment {
        psi_job: String,
        peer: String,
        path: PathBuf,
    },
    #[error(
        "alignment file {}: it is of PSI session {got_session} with hash {got_hash}, the \
         vertical job trains on session {want_session} with hash {want_hash}: the alignment \
         was replaced since that PSI; launch the vertical job on the PSI job's latest run",
        path.display()
    )]
    AlignmentMismatch {
        path: PathBuf,
        got_session: u64,
        got_hash: String,
        want_session: u64,
        want_hash: String,
    },
    #[error(
        "alignment file {}: this party did not receive its aligned rows (the PSI ran with \
         delivery = \"active_only\")", path.display()
    )]
    NoRows { path: PathBuf },
    #[error(
        "dataset '{dataset}': its aligned rows changed since PSI job '{psi_job}' (alignment hash \
         mismatch: the ids at the aligned rows hash to {now}, the PSI recorded {then} in {}); \
         the rows were edited, reordered or filtered: run the PSI job again on the current data",
        path.display()
    )]
    RowsChanged {
        dataset: String,
        psi_job: String,
        path: PathBuf,
        now: String,
        then: String,
    },
    #[error(
        "alignment file {}: it records no hash of its rows' ids (written before vertical \
         jobs); run the PSI job again", path.display()
    )]
    NoRowsDigest { path: PathBuf },
    #[error("dataset '{dataset}': row {row} of the alignment is beyond its {rows} rows")]
    RowOutOfRange {
        dataset: String,
        row: u32,
        rows: usize,
    },
    #[error("dataset '{dataset}': the label '{label}' is not one of its labels ({labels})")]
    NoLabel {
        dataset: String,
        label: String,
        labels: String,
    },
    #[error("dataset '{dataset}' has no feature columns")]
    NoFeatures { dataset: String },
    #[error("PSI alignment")]
    Psi(#[from] PsiJobError),
    #[error("dataset '{dataset}'")]
    Data {
        dataset: String,
        #[source]
        source: Box<crate::data::DataError>,
    },
    #[error("id of row {row}")]
    Id {
        row: u64,
        #[source]
        source: fedsilo_crypto::psi::IdError,
    },
    #[error("a vertical message could not be encoded")]
    Encode(#[source] serde_json::Error),
    #[error("a vertical message could not be sent")]
    Split(#[source] PartError),
    #[error("a message from '{peer}' did not reassemble")]
    Reassembly {
        peer: String,
        #[source]
        source: PartError,
    },
    #[error("the sealed channel with '{peer}'")]
    Channel {
        peer: String,
        #[source]
        source: fedsilo_crypto::psi::PsiError,
    },
    #[error("a message from '{peer}' is not a vertical message")]
    Undecodable {
        peer: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the protocol with '{peer}'")]
    Protocol {
        peer: String,
        #[source]
        source: VerticalError,
    },
    #[error("'{peer}' sent {what} out of turn")]
    OutOfTurn { peer: String, what: &'static str },
    #[error("standardising")]
    Standardize(#[source] fedsilo_task::InstructionError),
    #[error("this party's model")]
    Model(#[from] ModelFileError),
    #[error("the scoring or hold-out answer of the peer")]
    Scoring(#[source] ScoringError),
    #[error("the active party's list of common rows")]
    CommonRows(#[source] fedsilo_task::vertical::CommonRowsError),
    #[error("internal: {0}")]
    Internal(&'static str),
    #[error("cannot write the model file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One party's rows of the aligned customers, in the alignment's (shared) order.
#[derive(Clone, Debug)]
pub struct AlignedData {
    pub columns: Vec<String>,
    /// The id column's name and the ids of the aligned rows (as in the file).
    pub id_column: String,
    pub ids: Vec<String>,
    /// aligned rows × this party's feature columns (NaN = missing).
    pub x: Array2<f32>,
    /// The active party's labels of the aligned rows (the chosen label).
    pub y: Option<Array1<f32>>,
    pub label: Option<String>,
    /// The alignment file the rows came from (with several passive parties, the first
    /// pair's).
    pub alignment: PathBuf,
    /// The active party with several passive parties: per passive party (the spec's order),
    /// the positions in that pair's alignment order of the common rows, in the common order
    /// (the rows above): what [`ToPassive::Rows`] tells each. Empty otherwise.
    pub common: Vec<Vec<u32>>,
}

/// The digest of the ids at the aligned rows, in alignment order (what `Alignment::rows_digest`
/// records at PSI time and a vertical job checks): SHA-256 of a domain tag, then each
/// normalised id with its length.
pub fn rows_digest(
    ids: &[String],
    rows: &[u32],
    format: IdFormat,
) -> Result<String, VerticalJobError> {
    let mut h = sha2::Sha256::new();
    h.update(b"fedsilo alignment rows v1");
    for &r in rows {
        let raw = ids
            .get(r as usize)
            .ok_or_else(|| VerticalJobError::RowOutOfRange {
                dataset: String::new(),
                row: r,
                rows: ids.len(),
            })?;
        let id = format
            .normalise(u64::from(r), raw)
            .map_err(|source| VerticalJobError::Id {
                row: u64::from(r),
                source,
            })?;
        h.update((id.len() as u64).to_le_bytes());
        h.update(id.as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

/// Loads this party's aligned rows for `start`: the PSI alignment persisted in `state_dir`
/// (checked to be the PSI session and hash the job names), the dataset read through its
/// schema with the id column, the ids at the aligned rows checked against the digest the
/// PSI recorded (a party whose aligned rows changed is refused by name), then the rows
/// picked in alignment order.
pub fn load_aligned(
    state_dir: &Path,
    source: &Source,
    (schema_path, schema): (&Path, &Schema),
    start: &VerticalStart,
) -> Result<AlignedData, VerticalJobError> {
    let store = AlignmentStore::new(state_dir);
    // One alignment per pair (the active party with several passive parties: one each).
    let mut pairs = Vec::new();
    for pair in start.pairs() {
        let path = store.path(&start.spec.psi_job, &pair.passive);
        let a: Alignment = store
            .load(&start.spec.psi_job, &pair.passive)?
            .ok_or_else(|| VerticalJobError::NoAlignment {
                psi_job: start.spec.psi_job.clone(),
                peer: pair.passive.clone(),
                path: path.clone(),
            })?;
        let want_hash = hex::encode(pair.psi_hash);
        if a.session != pair.psi_session || a.intersection_hash != want_hash {
            return Err(VerticalJobError::AlignmentMismatch {
                path,
                got_session: a.session,
                got_hash: a.intersection_hash.clone(),
                want_session: pair.psi_session,
                want_hash,
            });
        }
        let rows = a
            .rows
            .ok_or_else(|| VerticalJobError::NoRows { path: path.clone() })?;
        let then = a
            .rows_digest
            .ok_or_else(|| VerticalJobError::NoRowsDigest { path: path.clone() })?;
        pairs.push((path, rows, then));
    }
    let schema = crate::psi::with_id_column(&start.dataset, schema_path, schema, &start.id_column)?;
    let table = source.load(&schema).map_err(|e| VerticalJobError::Data {
        dataset: start.dataset.clone(),
        source: Box::new(e),
    })?;
    for (path, rows, then) in &pairs {
        let now = rows_digest(&table.ids, rows, start.id_format).map_err(|e| match e {
            VerticalJobError::RowOutOfRange { row, rows, .. } => VerticalJobError::RowOutOfRange {
                dataset: start.dataset.clone(),
                row,
                rows,
            },
            other => other,
        })?;
        if now != *then {
            return Err(VerticalJobError::RowsChanged {
                dataset: start.dataset.clone(),
                psi_job: start.spec.psi_job.clone(),
                path: path.clone(),
                now,
                then: then.clone(),
            });
        }
    }
    let several = pairs.len() > 1;
    let mut pairs = pairs.into_iter();
    let Some((path, first_rows, _)) = pairs.next() else {
        return Err(VerticalJobError::Internal("a session without a pair"));
    };
    // With several passive parties: the rows aligned in every pair, in the first pair's
    // order, and each passive party's positions of them.
    let (rows, common) = if several {
        let all: Vec<Vec<u32>> = std::iter::once(first_rows)
            .chain(pairs.map(|(_, r, _)| r))
            .collect();
        fedsilo_task::vertical::common_rows(&all)
    } else {
        (first_rows, Vec::new())
    };
    if table.n_features() == 0 {
        return Err(VerticalJobError::NoFeatures {
            dataset: start.dataset.clone(),
        });
    }
    let idx: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
    let x = table.x.select(Axis(0), &idx);
    let scoring = !start.spec.kind.trains();
    let (y, label) = if start.role == Role::Active
        && !(scoring && start.spec.label.is_empty() && table.label_names.is_empty())
    {
        let label = if start.spec.label.is_empty() {
            table.label_names.first().cloned()
        } else {
            Some(start.spec.label.clone())
        };
        let col = label
            .as_ref()
            .and_then(|l| table.label_names.iter().position(|n| n == l))
            .ok_or_else(|| VerticalJobError::NoLabel {
                dataset: start.dataset.clone(),
                label: label.clone().unwrap_or_else(|| "(none)".into()),
                labels: table.label_names.join(", "),
            })?;
        let y: Array1<f32> = idx
            .iter()
            .map(|&r| table.labels.get((r, col)).copied().unwrap_or(0.0))
            .collect();
        (Some(y), label)
    } else {
        (None, None)
    };
    let ids = if start.role == Role::Active {
        idx.iter()
            .map(|&r| table.ids.get(r).cloned().unwrap_or_default())
            .collect()
    } else {
        Vec::new()
    };
    Ok(AlignedData {
        columns: table.feature_names.clone(),
        id_column: schema.id_column.clone().unwrap_or_default(),
        ids,
        x,
        y,
        label,
        alignment: path,
        common,
    })
}

/// What the active party sends inside the sealed channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToPassive {
    Lr(LrToPassive),
    Boost(BoostToPassive),
    /// Training is done: the partial logits (LR) or routes (GBDT) of the hold-out rows.
    Holdout,
    /// LR, before the Setup: continue from this party's own checkpoint after `iteration`
    /// iterations of an earlier session (one the passive party said it holds).
    Resume {
        iteration: u32,
    },
    /// Several passive parties, first in the channel: the positions (in this pair's
    /// alignment order) of the rows aligned in every pair, in the common order; the passive
    /// party keeps exactly those rows, in that order
    /// ([`fedsilo_task::vertical::check_common_positions`]).
    Rows {
        positions: Vec<u32>,
    },
}

/// What the passive party sends inside the sealed channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToActive {
    /// The passive party's data is loaded: its number of columns and aligned rows.
    Ready {
        columns: u64,
        rows: u64,
        /// LR: the iterations of an earlier session of the job this party holds its own
        /// checkpoint after (at most two; empty = start from scratch).
        #[serde(default)]
        resume: Vec<u32>,
    },
    Lr(LrToActive),
    Boost(BoostToActive),
    /// The hold-out rows' partial logits (8 bytes each, as a scoring answer's).
    HoldoutLogits(score::PackedF64),
    /// (tree, node, which hold-out rows go left: one bit per row) of every split the
    /// passive party owns.
    HoldoutRoutes(Vec<(u32, u32, score::PackedBits)>),
    /// A scoring session: the passive party's answer for every aligned customer.
    Scoring(ScoringAnswer),
}

/// A party's part of a vertical model, as written to `<state_dir>/vertical/<job>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerticalModelFile {
    pub job_id: String,
    pub kind: VerticalKind,
    /// "active" or "passive".
    pub role: String,
    pub peer: String,
    pub psi_job: String,
    pub psi_hash: String,
    /// This party's columns, in the model's order.
    pub columns: Vec<String>,
    /// The active party's label.
    pub label: Option<String>,
    /// LR: this party's standardisation (on its training rows).
    pub standardizer: Option<Standardizer>,
    /// LR, active party: its coefficients and the intercept.
    pub lr: Option<ActiveLrModel>,
    /// LR, passive party: its coefficients (its weights stay with it).
    pub lr_coef: Option<Vec<f64>>,
    /// GBDT, active party: the trees, passive splits naming only their owner.
    pub gbdt: Option<VerticalGbdtModel>,
    /// GBDT, passive party: its splits, (tree, node, split); thresholds stay with it.
    pub passive_splits: Option<Vec<(u32, u32, PassiveSplit)>>,
    pub rows: u64,
    pub train_rows: u64,
    pub holdout_rows: u64,
    /// Active party: the hold-out scores (probabilities, in aligned order) and their AUC.
    pub holdout_scores: Option<Vec<f64>>,
    pub holdout_auc: Option<f64>,
}

impl VerticalModelFile {
    /// `<state_dir>/vertical/<stem>.json`, where [`job_file_stem`] gives the stem.
    pub fn path(state_dir: &Path, job_id: &str) -> PathBuf {
        state_dir
            .join("vertical")
            .join(format!("{}.json", job_file_stem(job_id)))
    }

    /// Writes the file (temporary file, then rename).
    pub fn save(&self, state_dir: &Path) -> Result<PathBuf, VerticalJobError> {
        write_json(Self::path(state_dir, &self.job_id), self, true)
    }
}

/// The stem of a job's files under `<state_dir>/vertical/` (`<stem>.json` the model,
/// `<stem>.resume.json`, `<stem>.scores.csv`): one stem per job id and never the same for two
/// (so no job's file is another's). A job id of ASCII letters, digits, `_` and `-` is its own
/// stem; any other id is its letters, digits, `_` and `-` with every other character as `_`,
/// then `~` and 32 hex digits of the id's SHA-256 (`churn.v1` → `churn_v1~…`). A stem has no
/// `.`, so the suffix after the first `.` tells the files of one job apart.
pub fn job_file_stem(job_id: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-');
    if !job_id.is_empty() && job_id.chars().all(plain) {
        return job_id.to_string();
    }
    let mut stem: String = job_id
        .chars()
        .map(|c| if plain(c) { c } else { '_' })
        .collect();
    stem.push('~');
    let digest = sha2::Sha256::digest(job_id.as_bytes());
    stem.push_str(&hex::encode(digest.get(..16).unwrap_or_default()));
    stem
}

/// Writes `value` as JSON to `path` (its directory made if need be): a temporary file beside
/// it, then a rename, so a reader never sees half a file.
fn write_json(
    path: PathBuf,
    value: &impl Serialize,
    pretty: bool,
) -> Result<PathBuf, VerticalJobError> {
    let write = |source| VerticalJobError::Write {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write)?;
    }
    let bytes = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    }
    .map_err(|e| write(std::io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).map_err(write)?;
    std::fs::rename(&tmp, &path).map_err(write)?;
    Ok(path)
}

/// A party's own state of a job's last two completed steps, as written to
/// `<state_dir>/vertical/<job>.resume.json` after each step (and removed once the model is
/// written): a restarted node gives it to the next session of the same job, spec, alignment,
/// role and peer ([`VerticalDriver::provide_resume`]), which continues from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeFile {
    pub job_id: String,
    /// The job spec's digest, the PSI alignment hash (hex), this party's role and peer.
    pub spec_digest: String,
    pub psi_hash: String,
    pub role: String,
    pub peer: String,
    pub checkpoints: Vec<Checkpoint>,
}

impl ResumeFile {
    pub fn path(state_dir: &Path, job_id: &str) -> PathBuf {
        VerticalModelFile::path(state_dir, job_id).with_extension("resume.json")
    }

    fn of(start: &VerticalStart, checkpoints: &[Checkpoint]) -> Self {
        ResumeFile {
            job_id: start.spec.job_id.clone(),
            spec_digest: hex::encode(start.spec.digest()),
            psi_hash: hex::encode(start.psi_hash),
            role: start.role.name().to_string(),
            peer: start.peer.clone(),
            checkpoints: checkpoints.to_vec(),
        }
    }

    /// Whether the file is of `start`'s job, spec, alignment, role and peer.
    fn belongs_to(&self, start: &VerticalStart) -> bool {
        self.job_id == start.spec.job_id
            && self.spec_digest == hex::encode(start.spec.digest())
            && self.psi_hash == hex::encode(start.psi_hash)
            && self.role == start.role.name()
            && self.peer == start.peer
    }

    /// Writes the file (temporary file, then rename).
    pub fn save(&self, state_dir: &Path) -> Result<PathBuf, VerticalJobError> {
        write_json(Self::path(state_dir, &self.job_id), self, false)
    }

    /// The file of `job_id`, if this node wrote one.
    pub fn load(state_dir: &Path, job_id: &str) -> Result<Option<Self>, ModelFileError> {
        score::read_json(&Self::path(state_dir, job_id))
    }
}

/// One message a party received, as the driver recorded it (test mode): the sealed bytes
/// of each of its parts as relayed (each part's plaintext is a [`parts::HEADER_BYTES`]-byte
/// header and its piece of the message) and the message they joined to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Received {
    pub job_id: String,
    /// The channel number of its first part.
    pub seq: u64,
    pub sealed: Vec<Vec<u8>>,
    pub plaintext: String,
}

/// What the driver tells its caller.
#[derive(Debug)]
pub enum VerticalEvent {
    /// Load this party's aligned rows ([`load_aligned`]) and call
    /// [`VerticalDriver::provide_data`], or [`VerticalDriver::abort`].
    NeedData(Box<VerticalStart>),
    /// Training and scoring are done: write `model`, then send `report`.
    Done {
        model: Box<VerticalModelFile>,
        report: VerticalReport,
    },
    /// A step was completed: write `resume` ([`ResumeFile::save`]), so that a restart of
    /// this node can continue the job from it.
    Checkpoint(Box<ResumeFile>),
    /// A scoring session is done: the active party writes `scored`
    /// ([`ScoredRows::path`]), then each party sends `report`.
    Scored {
        scored: Option<Box<ScoredRows>>,
        report: VerticalReport,
    },
    Failed {
        job_id: String,
        session: u64,
        reason: String,
    },
}

enum Link {
    Hello(ChannelHello),
    Open(Box<Open>),
    Gone,
}

/// An open channel and the parts of messages in flight.
struct Open {
    ch: Channel,
    /// Bytes of a message per sealed part (after the part's header).
    part_len: usize,
    reassembly: Reassembly,
    /// Test mode: the sealed parts of the message being reassembled (number, bytes).
    parts_seen: Vec<(u64, Vec<u8>)>,
}

enum Party {
    /// Data not loaded yet (or, at the active party, waiting for the passive party's Ready).
    Waiting,
    ActiveLr(Box<ActiveLr>),
    PassiveLr(Box<PassiveLr>),
    ActiveBoost(Box<ActiveBoost>),
    PassiveBoost(Box<PassiveBoost>),
}

/// A party's prepared rows: training and hold-out, standardised for LR.
struct Prepared {
    data: AlignedData,
    train: Array2<f32>,
    hold: Array2<f32>,
    y_train: Option<Array1<f32>>,
    y_hold: Option<Array1<f32>>,
    standardizer: Option<Standardizer>,
    /// A scoring session: this party's part of the trained model.
    model: Option<Box<VerticalModelFile>>,
}

/// A party's own state between two steps of a job (never sent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Checkpoint {
    Lr(LrCheckpoint),
    ActiveBoost(Box<BoostCheckpoint>),
    PassiveBoost(PassiveBoostCheckpoint),
}

impl Checkpoint {
    /// The iterations or trees completed.
    fn steps(&self) -> u32 {
        match self {
            Checkpoint::Lr(c) => c.iteration,
            Checkpoint::ActiveBoost(c) => c.trees,
            Checkpoint::PassiveBoost(c) => c.trees,
        }
    }
}

/// The passive party's Ready: its column and row counts, the iterations it could resume at.
#[derive(Clone, Debug)]
struct Ready {
    columns: u64,
    rows: u64,
    resume: Vec<u32>,
}

/// A passive party of a session with several passive parties: its data (and, scoring, its
/// checked model), kept until the active party says which rows are common.
enum Stash {
    Train(AlignedData),
    Score(AlignedData, Box<VerticalModelFile>),
}

struct Session {
    start: VerticalStart,
    /// One channel per peer: at the active party one per passive party (the spec's
    /// order), at a passive party one to the active party.
    links: Vec<Link>,
    /// The peers' names, as `links`.
    peers: Vec<String>,
    party: Party,
    prepared: Option<Prepared>,
    /// Several passive parties, at a passive party: the data waiting for the common rows.
    stash: Option<Stash>,
    /// Sealed messages (with their channel) that arrived before the party could take them.
    inbox: VecDeque<(usize, Sealed)>,
    /// The active party: each passive party's Ready, if it came before the rest.
    peer_ready: Vec<Option<Ready>>,
    /// The active party with several passive parties: the common-rows list sent, per peer.
    rows_sent: Vec<bool>,
    /// The active party: each passive party's hold-out or scoring answer, until all are in.
    answers: Vec<Option<ToActive>>,
    steps: u64,
    /// This party's own state after the last two completed iterations or trees (carried
    /// into a later session of the job, which continues from one both parties hold).
    checkpoints: Vec<Checkpoint>,
    /// The completed steps this session continued from (0 = from the start).
    resumed_from: u64,
    /// A checkpoint was kept since the last [`VerticalEvent::Checkpoint`].
    checkpointed: bool,
    holdout_sent: bool,
    done: bool,
}

/// The participant's vertical engine, sans-IO: messages in, messages and events out.
pub struct VerticalDriver {
    identity: Arc<IdentityKey>,
    peers: BTreeMap<String, String>,
    sessions: BTreeMap<String, Session>,
    closed: BTreeSet<(String, u64)>,
    lost: BTreeSet<(String, u64)>,
    outbox: VecDeque<ToCoordinator>,
    events: VecDeque<VerticalEvent>,
    rng: rand_chacha::ChaCha20Rng,
    /// Test mode: every message received is kept here (see [`Received`]).
    record: Option<Vec<Received>>,
    /// Bytes of a message per sealed part ([`MAX_PART`] but in tests).
    part_len: usize,
}

impl std::fmt::Debug for VerticalDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerticalDriver")
            .field("sessions", &self.sessions.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn peer_key(peers: &BTreeMap<String, String>, peer: &str) -> Option<[u8; 32]> {
    peers
        .get(peer)
        .and_then(|k| hex::decode(k).ok())
        .and_then(|v| v.try_into().ok())
}

impl VerticalDriver {
    /// `peers`: roster name → hex Ed25519 identity key (this node's own roster).
    pub fn new(
        identity: Arc<IdentityKey>,
        peers: BTreeMap<String, String>,
        seed: [u8; 32],
    ) -> Self {
        VerticalDriver {
            identity,
            peers,
            sessions: BTreeMap::new(),
            closed: BTreeSet::new(),
            lost: BTreeSet::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            rng: rand_chacha::ChaCha20Rng::from_seed(seed),
            record: None,
            part_len: MAX_PART,
        }
    }

    /// Cuts messages into parts of at most `bytes` bytes (at least 1, at most [`MAX_PART`]):
    /// for tests, which split small messages; sessions opened after the call use it.
    pub fn set_part_len(&mut self, bytes: usize) {
        self.part_len = bytes.clamp(1, MAX_PART);
    }

    /// Test mode: keep every message received ([`VerticalDriver::take_received`]).
    pub fn record_received(&mut self) {
        self.record = Some(Vec::new());
    }

    pub fn take_received(&mut self) -> Vec<Received> {
        self.record.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub fn has_session(&self, job_id: &str) -> bool {
        self.sessions.contains_key(job_id)
    }

    /// Whether a relayed message belongs to a vertical session here (else it is PSI's).
    pub fn claims(&self, msg: &PsiMsg) -> bool {
        match msg {
            PsiMsg::Sealed(s) => s.kind == fedsilo_crypto::psi::Kind::Vertical,
            PsiMsg::Hello(h) => self.sessions.contains_key(&h.ctx.job_id),
        }
    }

    fn close(&mut self, job_id: &str) {
        if let Some(s) = self.sessions.remove(job_id) {
            self.closed.insert((job_id.to_string(), s.start.session));
        }
    }

    fn fail(&mut self, job_id: &str, session: u64, reason: String) {
        tracing::error!(job = job_id, session, %reason, "vertical session failed here");
        self.close(job_id);
        self.closed.insert((job_id.to_string(), session));
        self.outbox.push_back(ToCoordinator::PsiFailed {
            job_id: job_id.to_string(),
            session,
            reason: reason.clone(),
        });
        self.events.push_back(VerticalEvent::Failed {
            job_id: job_id.to_string(),
            session,
            reason,
        });
    }

    /// A new session (an earlier one of the job is dropped); a repeat is ignored.
    pub fn handle_start(&mut self, start: VerticalStart) {
        let job = start.spec.job_id.clone();
        let session = start.session;
        if self
            .sessions
            .get(&job)
            .is_some_and(|s| s.start.session == session)
            || self.closed.contains(&(job.clone(), session))
        {
            return;
        }
        // A later session of the same job, spec and alignment keeps this party's LR state.
        let checkpoints = self
            .sessions
            .get_mut(&job)
            .filter(|s| {
                s.start.spec == start.spec
                    && s.start.psi_hash == start.psi_hash
                    && s.start.role == start.role
                    && s.start.peer == start.peer
            })
            .map(|s| std::mem::take(&mut s.checkpoints))
            .unwrap_or_default();
        self.close(&job);
        // The coordinator's copy of the spec is checked here too (key size, parameters).
        if let Err(e) = start.spec.validate() {
            self.fail(&job, session, format!("the job spec: {e}"));
            return;
        }
        // The peers: every passive party at the active one; the active party at a passive one.
        let pairs = start.pairs();
        let peers: Vec<String> = pairs.iter().map(|p| p.passive.clone()).collect();
        let names = names_recipients(&start);
        if start.role == Role::Active && peers != start.spec.passive {
            self.fail(
                &job,
                session,
                "the session's passive parties are not the job spec's".into(),
            );
            return;
        }
        let mut links = Vec::new();
        for (k, peer) in peers.iter().enumerate() {
            let Some(key) = peer_key(&self.peers, peer) else {
                let e = VerticalJobError::UnknownPeer { peer: peer.clone() };
                self.fail(&job, session, fedsilo_config::display_chain(&e));
                return;
            };
            let ctx = PsiContext {
                job_id: job.clone(),
                session,
            };
            // Each pair's channel is bound to its pair (the digest names the passive party).
            let index = match start.role {
                Role::Active => k,
                Role::Passive => start.passive_index as usize,
            };
            let (hello, msg) = ChannelHello::new(
                ctx,
                start.role,
                &self.identity,
                key,
                start.spec.channel_digest(index),
                &mut self.rng,
            );
            self.outbox.push_back(outgoing(names, k, msg));
            links.push(Link::Hello(hello));
        }
        tracing::info!(job = %job, session, role = %start.role, peers = ?peers, kind = start.spec.kind.name(), "vertical session opened");
        self.events
            .push_back(VerticalEvent::NeedData(Box::new(start.clone())));
        self.sessions.insert(
            job,
            Session {
                peer_ready: vec![None; links.len()],
                rows_sent: vec![false; links.len()],
                answers: vec![None; links.len()],
                start,
                links,
                peers,
                party: Party::Waiting,
                prepared: None,
                stash: None,
                inbox: VecDeque::new(),
                steps: 0,
                checkpoints,
                resumed_from: 0,
                checkpointed: false,
                holdout_sent: false,
                done: false,
            },
        );
    }

    /// The session cannot go on at this party (its data did not load): the coordinator is
    /// told why.
    pub fn abort(&mut self, job_id: &str, error: &VerticalJobError) {
        if let Some(s) = self.sessions.get(job_id) {
            let session = s.start.session;
            self.fail(job_id, session, fedsilo_config::display_chain(error));
        }
    }

    /// The job ended (the coordinator said so): its session is dropped.
    pub fn job_ended(&mut self, job_id: &str) {
        self.close(job_id);
    }

    /// Sessions open here (job, session).
    pub fn open_sessions(&self) -> Vec<(String, u64)> {
        self.sessions
            .iter()
            .map(|(j, s)| (j.clone(), s.start.session))
            .collect()
    }

    /// Sessions an earlier run of this node had open: reported lost.
    pub fn report_lost(&mut self, sessions: &[(String, u64)]) {
        for (job, session) in sessions {
            if self.lost.insert((job.clone(), *session)) {
                self.outbox.push_back(ToCoordinator::PsiLost {
                    job_id: job.clone(),
                    session: *session,
                });
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<ToCoordinator> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<VerticalEvent> {
        self.events.pop_front()
    }

    pub fn has_queued(&self) -> bool {
        !self.outbox.is_empty() || !self.events.is_empty()
    }

    /// What a restarted node wrote of its own state ([`ResumeFile::load`]): taken before
    /// the data ([`VerticalDriver::provide_data`]) when it is of this session's job, spec,
    /// alignment, role and peer and the session holds no state of its own; else ignored
    /// (training starts from scratch), with a log line saying why.
    pub fn provide_resume(&mut self, job_id: &str, file: ResumeFile) {
        let Some(s) = self.sessions.get_mut(job_id) else {
            return;
        };
        if !file.belongs_to(&s.start) {
            tracing::warn!(job = job_id, "the resume file is of another spec, alignment or party; training starts from scratch");
            return;
        }
        if s.checkpoints.is_empty() && s.prepared.is_none() {
            tracing::info!(job = job_id, steps = ?file.checkpoints.iter().map(Checkpoint::steps).collect::<Vec<_>>(), "vertical state of an earlier run of this node taken");
            s.checkpoints = file.checkpoints;
        }
    }

    /// A scoring session's aligned rows and this party's part of the model
    /// ([`VerticalModelFile::load`], checked here against the session: role, peer, columns).
    pub fn provide_scoring(
        &mut self,
        job_id: &str,
        data: AlignedData,
        (model, path): (VerticalModelFile, &Path),
    ) {
        let Some(s) = self.sessions.get_mut(job_id) else {
            return;
        };
        let session = s.start.session;
        let start = &s.start;
        let checked = if start.spec.kind.trains() {
            Err(VerticalJobError::Internal(
                "a model given to a training session",
            ))
        } else {
            model
                .check_for(
                    path,
                    &start.spec.model_job,
                    start.role.name(),
                    &start.peer,
                    &start.dataset,
                    &data.columns,
                )
                .map_err(VerticalJobError::from)
        };
        if let Err(e) = checked {
            self.fail(job_id, session, fedsilo_config::display_chain(&e));
            return;
        }
        if waits_for_rows(&s.start) {
            s.stash = Some(Stash::Score(data, Box::new(model)));
        } else {
            s.prepared = Some(prepare_scoring(&s.start.spec, data, Box::new(model)));
        }
        self.advance(job_id);
    }

    /// This party's aligned rows for `job_id`: split into training and hold-out rows; the
    /// party starts when the channel is open (and, at the active party, the peer is ready).
    pub fn provide_data(&mut self, job_id: &str, data: AlignedData) {
        let Some(s) = self.sessions.get_mut(job_id) else {
            return;
        };
        let session = s.start.session;
        if waits_for_rows(&s.start) {
            s.stash = Some(Stash::Train(data));
            self.advance(job_id);
            return;
        }
        match prepare(&s.start.spec, data) {
            Ok(p) => s.prepared = Some(p),
            Err(e) => {
                self.fail(job_id, session, fedsilo_config::display_chain(&e));
                return;
            }
        }
        self.advance(job_id);
    }

    /// A relayed message of a vertical session (Hello or sealed) from the one peer: the
    /// active party (at a passive party), or the one passive party.
    pub fn handle_message(&mut self, msg: PsiMsg) {
        self.handle_from(None, msg)
    }

    /// A relayed message of a vertical session with several passive parties, at the active
    /// party: from passive party `passive` (its index in the spec's order).
    pub fn handle_relayed(&mut self, passive: u32, msg: PsiMsg) {
        self.handle_from(Some(passive), msg)
    }

    fn handle_from(&mut self, passive: Option<u32>, msg: PsiMsg) {
        let ctx = msg.ctx().clone();
        let key = (ctx.job_id.clone(), ctx.session);
        let current = self.sessions.get(&ctx.job_id).map(|s| s.start.session);
        if current != Some(ctx.session) {
            let newer = current.is_none_or(|c| ctx.session > c);
            if newer && !self.closed.contains(&key) && self.lost.insert(key) {
                tracing::warn!(job = %ctx.job_id, session = ctx.session, "vertical message of a session this node holds no state of; reporting it lost");
                self.outbox.push_back(ToCoordinator::PsiLost {
                    job_id: ctx.job_id,
                    session: ctx.session,
                });
            }
            return;
        }
        let Some(s) = self.sessions.get_mut(&ctx.job_id) else {
            return;
        };
        // The channel: named by the relay at an active party with several passive parties
        // (and only there).
        let k = match (names_recipients(&s.start), passive) {
            (true, Some(k)) if (k as usize) < s.links.len() => k as usize,
            (false, None) => 0,
            (true, _) | (false, Some(_)) => {
                let why = format!(
                    "a relayed message names passive party {passive:?}; this party has {} channel(s)",
                    s.links.len()
                );
                self.fail(&ctx.job_id, ctx.session, why);
                return;
            }
        };
        let peer = s.peers.get(k).cloned().unwrap_or_default();
        match msg {
            PsiMsg::Hello(h) => {
                let Some(slot) = s.links.get_mut(k) else {
                    return;
                };
                let link = std::mem::replace(slot, Link::Gone);
                let Link::Hello(hello) = link else {
                    *slot = link;
                    let e = VerticalJobError::OutOfTurn {
                        peer,
                        what: "a second Hello",
                    };
                    self.fail(&ctx.job_id, ctx.session, fedsilo_config::display_chain(&e));
                    return;
                };
                match hello.accept(&h) {
                    Ok(ch) => {
                        *slot = Link::Open(Box::new(Open {
                            ch,
                            part_len: self.part_len,
                            reassembly: Reassembly::new(parts::MAX_MESSAGE),
                            parts_seen: Vec::new(),
                        }))
                    }
                    Err(source) => {
                        let e = VerticalJobError::Channel { peer, source };
                        self.fail(&ctx.job_id, ctx.session, fedsilo_config::display_chain(&e));
                        return;
                    }
                }
            }
            PsiMsg::Sealed(m) => s.inbox.push_back((k, m)),
        }
        self.advance(&ctx.job_id);
    }

    /// Runs the session as far as its inputs allow; a failure fails it.
    fn advance(&mut self, job_id: &str) {
        let Some(s) = self.sessions.get_mut(job_id) else {
            return;
        };
        let session = s.start.session;
        let mut out = Vec::new();
        let mut progress = Vec::new();
        let r = step(
            s,
            &mut self.rng,
            &mut out,
            &mut progress,
            self.record.as_mut(),
        );
        let names = self
            .sessions
            .get(job_id)
            .is_some_and(|s| names_recipients(&s.start));
        for (k, m) in out {
            self.outbox.push_back(outgoing(names, k, m));
        }
        let resumed_from = self.sessions.get(job_id).map_or(0, |s| s.resumed_from);
        for p in progress {
            self.outbox
                .push_back(ToCoordinator::VerticalProgress(VerticalProgress {
                    job_id: job_id.to_string(),
                    session,
                    step: p,
                    resumed_from,
                }));
        }
        if let Some(s) = self.sessions.get_mut(job_id) {
            if std::mem::take(&mut s.checkpointed) {
                self.events
                    .push_back(VerticalEvent::Checkpoint(Box::new(ResumeFile::of(
                        &s.start,
                        &s.checkpoints,
                    ))));
            }
        }
        match r {
            Ok(Some(ended)) => {
                if let Some(s) = self.sessions.get_mut(job_id) {
                    s.done = true;
                }
                self.events.push_back(match ended {
                    Ended::Trained(model, report) => VerticalEvent::Done { model, report },
                    Ended::Scored(scored, report) => VerticalEvent::Scored { scored, report },
                });
            }
            Ok(None) => {}
            Err(e) => self.fail(job_id, session, fedsilo_config::display_chain(&e)),
        }
    }
}

/// A passive party of a session with several passive parties: it keeps its data until the
/// active party names the common rows ([`ToPassive::Rows`]).
fn waits_for_rows(start: &VerticalStart) -> bool {
    start.role == Role::Passive && start.spec.passive.len() > 1
}

/// The active party of a session with several passive parties: each message it sends names
/// its recipient, and each it receives is named by the relay with its sender.
fn names_recipients(start: &VerticalStart) -> bool {
    start.role == Role::Active && start.spec.passive.len() > 1
}

/// A message to the coordinator for passive party `k` (named when `names`, else the one
/// peer's).
fn outgoing(names: bool, k: usize, msg: PsiMsg) -> ToCoordinator {
    if names {
        ToCoordinator::VerticalRelay {
            passive: k as u32,
            msg,
        }
    } else {
        ToCoordinator::Psi(msg)
    }
}

/// A passive party's aligned rows cut to the common rows (`positions`, checked), in the
/// common order.
fn keep_common(data: AlignedData, positions: &[u32]) -> Result<AlignedData, VerticalJobError> {
    fedsilo_task::vertical::check_common_positions(positions, data.x.nrows())
        .map_err(VerticalJobError::CommonRows)?;
    let idx: Vec<usize> = positions.iter().map(|&p| p as usize).collect();
    // (an empty list, as the ids of a table without, stays empty)
    let pick =
        |v: &[String]| -> Vec<String> { idx.iter().filter_map(|&i| v.get(i).cloned()).collect() };
    Ok(AlignedData {
        x: data.x.select(Axis(0), &idx),
        y: data
            .y
            .as_ref()
            .map(|y| idx.iter().filter_map(|&i| y.get(i).copied()).collect()),
        ids: pick(&data.ids),
        ..data
    })
}

/// A scoring session's prepared rows: all of them scored, none trained on.
fn prepare_scoring(
    spec: &VerticalJobSpec,
    mut data: AlignedData,
    model: Box<VerticalModelFile>,
) -> Prepared {
    // The labels count only when they are the model's (else no AUC is reported).
    if spec.label.is_empty() && data.label != model.label {
        data.y = None;
        data.label = None;
    }
    let d = data.x.ncols();
    Prepared {
        train: Array2::zeros((0, d)),
        hold: data.x.clone(),
        y_train: None,
        y_hold: data.y.clone(),
        standardizer: None,
        model: Some(model),
        data,
    }
}

fn prepare(spec: &VerticalJobSpec, data: AlignedData) -> Result<Prepared, VerticalJobError> {
    let n = data.x.nrows();
    let hold = spec.holdout_positions(n);
    let held: BTreeSet<usize> = hold.iter().copied().collect();
    let train: Vec<usize> = (0..n).filter(|i| !held.contains(i)).collect();
    let mut x_train = data.x.select(Axis(0), &train);
    let mut x_hold = data.x.select(Axis(0), &hold);
    let mut standardizer = None;
    if spec.kind == VerticalKind::VerticalLogistic {
        let st = fedsilo_task::pooled::standardizer_of(x_train.view());
        x_train = st
            .apply(x_train.view())
            .map_err(VerticalJobError::Standardize)?;
        x_hold = st
            .apply(x_hold.view())
            .map_err(VerticalJobError::Standardize)?;
        standardizer = Some(st);
    }
    let pick = |y: &Array1<f32>, pos: &[usize]| -> Array1<f32> {
        pos.iter().filter_map(|&i| y.get(i).copied()).collect()
    };
    let y_train = data.y.as_ref().map(|y| pick(y, &train));
    let y_hold = data.y.as_ref().map(|y| pick(y, &hold));
    Ok(Prepared {
        data,
        train: x_train,
        hold: x_hold,
        y_train,
        y_hold,
        standardizer,
        model: None,
    })
}

/// The largest plaintext one sealed vertical message carries: the gRPC message limit
/// ([`fedsilo_proto::MAX_MESSAGE_BYTES`]) less room for the envelope (header, AEAD tag,
/// protobuf framing). A longer message goes in several sealed parts ([`parts`]), so no
/// sealed message is one the transport (or the relay's poll reply) would refuse.
pub const MAX_PLAINTEXT: usize = fedsilo_proto::MAX_MESSAGE_BYTES - (64 << 10);

/// Bytes of a message in one part: [`MAX_PLAINTEXT`] less the part's header.
pub const MAX_PART: usize = MAX_PLAINTEXT - parts::HEADER_BYTES;

/// Serialises `msg` and seals it to the peer, in as many parts as it needs (messages up to
/// [`parts::MAX_MESSAGE`] bytes; a longer one fails the session, saying so).
fn seal_to(
    links: &mut [Link],
    k: usize,
    out: &mut Vec<(usize, PsiMsg)>,
    msg: &impl Serialize,
) -> Result<(), VerticalJobError> {
    match links.get_mut(k) {
        Some(Link::Open(o)) => {
            let bytes = serde_json::to_vec(msg).map_err(VerticalJobError::Encode)?;
            let parts = parts::split(&bytes, o.part_len, parts::MAX_MESSAGE)
                .map_err(VerticalJobError::Split)?;
            for part in parts {
                out.push((k, o.ch.seal(&part)));
            }
            Ok(())
        }
        _ => Err(VerticalJobError::Internal(
            "a message for a channel that is not open",
        )),
    }
}

/// Seals `msg` to every peer (every passive party, at the active party).
fn seal_to_all(
    links: &mut [Link],
    out: &mut Vec<(usize, PsiMsg)>,
    msg: &impl Serialize,
) -> Result<(), VerticalJobError> {
    for k in 0..links.len() {
        seal_to(links, k, out, msg)?;
    }
    Ok(())
}

/// How a session ended at this party.
enum Ended {
    Trained(Box<VerticalModelFile>, VerticalReport),
    Scored(Option<Box<ScoredRows>>, VerticalReport),
}

type Finished = Option<Ended>;

/// One pass of a session: start the party when it can, take every message it can.
fn step(
    s: &mut Session,
    rng: &mut rand_chacha::ChaCha20Rng,
    out: &mut Vec<(usize, PsiMsg)>,
    progress: &mut Vec<u64>,
    mut record: Option<&mut Vec<Received>>,
) -> Result<Finished, VerticalJobError> {
    // Every channel open first (messages wait in the inbox until then).
    if s.done || !s.links.iter().all(|l| matches!(l, Link::Open(_))) {
        return Ok(None);
    }
    // The passive party, once its (common) rows are in: a scoring session answers and
    // ends; a training one builds its party and says it is ready.
    if let Some(done) = passive_ready(s, out)? {
        return Ok(Some(done));
    }
    // The active party with several passive parties: once its data is in, it tells each
    // passive party which of its aligned rows are common to every pair.
    if s.start.role == Role::Active && s.links.len() > 1 {
        if let Some(p) = &s.prepared {
            for k in 0..s.links.len() {
                if s.rows_sent.get(k).copied().unwrap_or(true) {
                    continue;
                }
                let positions = p
                    .data
                    .common
                    .get(k)
                    .cloned()
                    .ok_or(VerticalJobError::Internal(
                        "no common rows for a passive party",
                    ))?;
                seal_to(&mut s.links, k, out, &ToPassive::Rows { positions })?;
                if let Some(sent) = s.rows_sent.get_mut(k) {
                    *sent = true;
                }
            }
        }
    }
    while !s.inbox.is_empty() {
        // The active party takes nothing but Ready until its data is in.
        if s.start.role == Role::Active && s.prepared.is_none() {
            break;
        }
        // A passive party waiting for the common rows takes them once its data is in.
        if waits_for_rows(&s.start) && s.stash.is_none() && s.prepared.is_none() {
            break;
        }
        let Some((k, m)) = s.inbox.pop_front() else {
            break;
        };
        let peer = s.peers.get(k).cloned().unwrap_or_default();
        let Some(Link::Open(o)) = s.links.get_mut(k) else {
            return Err(VerticalJobError::Internal(
                "a message on a channel not open",
            ));
        };
        let part = o.ch.open(&m).map_err(|source| VerticalJobError::Channel {
            peer: peer.clone(),
            source,
        })?;
        if record.is_some() {
            o.parts_seen.push((m.seq, m.ciphertext.clone()));
        }
        let taken = o
            .reassembly
            .take(&part)
            .map_err(|source| VerticalJobError::Reassembly {
                peer: peer.clone(),
                source,
            })?;
        drop(part);
        // More parts of this message to come.
        let Some(plain) = taken else {
            continue;
        };
        if let Some(rec) = record.as_deref_mut() {
            let seen = std::mem::take(&mut o.parts_seen);
            rec.push(Received {
                job_id: s.start.spec.job_id.clone(),
                seq: seen.first().map_or(m.seq, |(seq, _)| *seq),
                sealed: seen.into_iter().map(|(_, c)| c).collect(),
                plaintext: String::from_utf8_lossy(&plain).into_owned(),
            });
        }
        let undecodable = |source| VerticalJobError::Undecodable {
            peer: peer.clone(),
            source,
        };
        match s.start.role {
            Role::Active => {
                let msg: ToActive = serde_json::from_slice(&plain).map_err(undecodable)?;
                if let Some(done) = active_take(s, rng, out, progress, k, msg)? {
                    return Ok(Some(done));
                }
            }
            Role::Passive => {
                let msg: ToPassive = serde_json::from_slice(&plain).map_err(undecodable)?;
                if let Some(done) = passive_take(s, rng, out, msg)? {
                    return Ok(Some(done));
                }
            }
        }
    }
    // The active party starts once its data is in and every passive party is ready.
    if s.start.role == Role::Active && matches!(s.party, Party::Waiting) && s.prepared.is_some() {
        if let Some(readies) = s.peer_ready.iter().cloned().collect::<Option<Vec<_>>>() {
            start_active(s, rng, out, readies)?;
        }
    }
    Ok(None)
}

/// The passive party, once its rows are prepared and its party not built yet: in a scoring
/// session it answers for every row and is done; in training it builds its party and sends
/// `Ready`.
fn passive_ready(
    s: &mut Session,
    out: &mut Vec<(usize, PsiMsg)>,
) -> Result<Finished, VerticalJobError> {
    if s.start.role != Role::Passive || !matches!(s.party, Party::Waiting) {
        return Ok(None);
    }
    let Some(p) = &s.prepared else {
        return Ok(None);
    };
    let peer = s.peers.first().cloned().unwrap_or_default();
    let protocol = |source| VerticalJobError::Protocol {
        peer: peer.clone(),
        source,
    };
    if !s.start.spec.kind.trains() {
        let model = p.model.as_ref().ok_or(VerticalJobError::Internal(
            "a scoring session without a model",
        ))?;
        let answer = score::passive_answer(model, p.hold.view())?;
        seal_to(&mut s.links, 0, out, &ToActive::Scoring(answer))?;
        s.steps = 1;
        if !s.inbox.is_empty() {
            return Err(VerticalJobError::OutOfTurn {
                peer,
                what: "a message in a scoring session (the passive party receives none)",
            });
        }
        return Ok(Some(scored(s, p.hold.nrows(), None)));
    }
    let ready = ToActive::Ready {
        columns: p.train.ncols() as u64,
        rows: p.data.x.nrows() as u64,
        resume: s.checkpoints.iter().map(Checkpoint::steps).collect(),
    };
    s.party = match s.start.spec.kind {
        // The bank's key must be of the job's size (not merely the crate's floor).
        VerticalKind::VerticalLogistic => Party::PassiveLr(Box::new(
            PassiveLr::new(s.start.spec.lr_config(), p.train.view())
                .map_err(protocol)?
                .require_key_bits(s.start.spec.key_bits()),
        )),
        VerticalKind::VerticalGbdt => Party::PassiveBoost(Box::new(
            PassiveBoost::new(s.start.spec.gbdt_params(), p.train.view())
                .map_err(protocol)?
                .require_key_bits(s.start.spec.key_bits()),
        )),
        VerticalKind::VerticalScore => {
            return Err(VerticalJobError::Internal(
                "a scoring session sends no Ready",
            ))
        }
    };
    seal_to(&mut s.links, 0, out, &ready)?;
    Ok(None)
}

fn start_active(
    s: &mut Session,
    rng: &mut rand_chacha::ChaCha20Rng,
    out: &mut Vec<(usize, PsiMsg)>,
    readies: Vec<Ready>,
) -> Result<(), VerticalJobError> {
    let peer = s.peers.join(", ");
    let protocol = |source| VerticalJobError::Protocol {
        peer: peer.clone(),
        source,
    };
    let Some(p) = &s.prepared else {
        return Ok(());
    };
    for (ready, name) in readies.iter().zip(&s.peers) {
        if ready.rows != p.data.x.nrows() as u64 {
            return Err(VerticalJobError::Protocol {
                peer: name.clone(),
                source: VerticalError::Data(format!(
                    "the peer holds {} aligned rows, this party {}",
                    ready.rows,
                    p.data.x.nrows()
                )),
            });
        }
    }
    let y = p
        .y_train
        .as_ref()
        .ok_or_else(|| protocol(VerticalError::Data("no labels at the active party".into())))?;
    if !s.start.spec.kind.trains() {
        return Err(VerticalJobError::Internal(
            "a scoring session trains nothing",
        ));
    }
    let dims: Vec<usize> = readies.iter().map(|r| r.columns as usize).collect();
    let sk = SecretKey::generate(rng, s.start.spec.key_bits()).map_err(protocol)?;
    tracing::info!(job = %s.start.spec.job_id, bits = s.start.spec.key_bits(), "Paillier key drawn; training starts");
    // Continue from the last step every party holds its state after (with the fresh key).
    let common = s
        .checkpoints
        .iter()
        .filter(|c| readies.iter().all(|r| r.resume.contains(&c.steps())))
        .max_by_key(|c| c.steps())
        .cloned();
    let resumed = common.as_ref().map(Checkpoint::steps);
    let wrong_kind = VerticalJobError::Internal("a checkpoint of another kind of party");
    let (party, msgs): (Party, Vec<(usize, ToPassive)>) = match s.start.spec.kind {
        VerticalKind::VerticalLogistic => {
            let (mut party, msgs) = ActiveLr::new(
                s.start.spec.lr_config(),
                sk,
                p.train.view(),
                y.view(),
                &dims,
            )
            .map_err(protocol)?;
            match common {
                Some(Checkpoint::Lr(cp)) => party.resume_at(cp).map_err(protocol)?,
                Some(_) => return Err(wrong_kind),
                None => {}
            }
            let msgs = msgs
                .into_iter()
                .map(|(k, m)| (k, ToPassive::Lr(m)))
                .collect();
            (Party::ActiveLr(Box::new(party)), msgs)
        }
        VerticalKind::VerticalGbdt => {
            let params = s.start.spec.gbdt_params();
            let (x, y) = (p.train.view(), y.view());
            let (party, msgs) = match common {
                Some(Checkpoint::ActiveBoost(cp)) => {
                    ActiveBoost::resume(rng, params, sk, x, y, &dims, *cp)
                }
                Some(_) => return Err(wrong_kind),
                None => ActiveBoost::new(rng, params, sk, x, y, &dims),
            }
            .map_err(protocol)?;
            let msgs = msgs
                .into_iter()
                .map(|(k, m)| (k, ToPassive::Boost(m)))
                .collect();
            (Party::ActiveBoost(Box::new(party)), msgs)
        }
        VerticalKind::VerticalScore => {
            return Err(VerticalJobError::Internal(
                "a scoring session trains nothing",
            ))
        }
    };
    if let Some(steps) = resumed {
        tracing::info!(job = %s.start.spec.job_id, steps, "vertical training continues from an earlier session's state");
        seal_to_all(&mut s.links, out, &ToPassive::Resume { iteration: steps })?;
        s.steps = u64::from(steps);
        s.resumed_from = u64::from(steps);
    }
    s.party = party;
    for (k, m) in msgs {
        seal_to(&mut s.links, k, out, &m)?;
    }
    Ok(())
}

fn active_take(
    s: &mut Session,
    rng: &mut rand_chacha::ChaCha20Rng,
    out: &mut Vec<(usize, PsiMsg)>,
    progress: &mut Vec<u64>,
    from: usize,
    msg: ToActive,
) -> Result<Finished, VerticalJobError> {
    let peer = s.peers.get(from).cloned().unwrap_or_default();
    let protocol = |source| VerticalJobError::Protocol {
        peer: peer.clone(),
        source,
    };
    let out_of_turn = |what| VerticalJobError::OutOfTurn {
        peer: peer.clone(),
        what,
    };
    // The answers (scoring, hold-out) are collected from every passive party first.
    let answer = matches!(
        (&s.party, &msg),
        (Party::Waiting, ToActive::Scoring(_))
            | (Party::ActiveLr(_), ToActive::HoldoutLogits(_))
            | (Party::ActiveBoost(_), ToActive::HoldoutRoutes(_))
    );
    let answer_turn = if s.start.spec.kind.trains() {
        s.holdout_sent
    } else {
        true
    };
    if answer && answer_turn {
        let slot = s
            .answers
            .get_mut(from)
            .ok_or(VerticalJobError::Internal("an answer from no channel"))?;
        if slot.is_some() {
            return Err(out_of_turn("a second answer"));
        }
        *slot = Some(msg);
        let Some(answers) = s.answers.iter().cloned().collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        return active_answers(s, progress, answers);
    }
    match (&mut s.party, msg) {
        (
            Party::Waiting,
            ToActive::Ready {
                columns,
                rows,
                resume,
            },
        ) if s.peer_ready.get(from).is_some_and(Option::is_none) => {
            if let Some(slot) = s.peer_ready.get_mut(from) {
                *slot = Some(Ready {
                    columns,
                    rows,
                    resume,
                });
            }
            if s.prepared.is_some() {
                if let Some(readies) = s.peer_ready.iter().cloned().collect::<Option<Vec<_>>>() {
                    start_active(s, rng, out, readies)?;
                }
            }
            Ok(None)
        }
        (Party::ActiveLr(a), ToActive::Lr(m)) => {
            let before = a.iteration();
            let replies = a.handle(rng, from, m).map_err(protocol)?;
            for (k, r) in replies {
                seal_to(&mut s.links, k, out, &ToPassive::Lr(r))?;
            }
            let after = a.iteration();
            for it in before..after {
                progress.push(u64::from(it) + 1);
            }
            s.steps = u64::from(after);
            if let Some(cp) = a.checkpoint() {
                s.checkpointed |= keep_checkpoint(&mut s.checkpoints, Checkpoint::Lr(cp));
            }
            if a.is_done() && !s.holdout_sent {
                s.holdout_sent = true;
                seal_to_all(&mut s.links, out, &ToPassive::Holdout)?;
            }
            Ok(None)
        }
        (Party::ActiveBoost(a), ToActive::Boost(m)) => {
            let replies = a.handle(rng, from, m).map_err(protocol)?;
            if let Some(cp) = a.checkpoint() {
                s.checkpointed |=
                    keep_checkpoint(&mut s.checkpoints, Checkpoint::ActiveBoost(Box::new(cp)));
            }
            for (k, r) in replies {
                // Every passive party gets the same Gradients and Finished: a step counts
                // once, at the first passive party's.
                match &r {
                    BoostToPassive::Gradients { tree, .. } if *tree > 0 && k == 0 => {
                        progress.push(u64::from(*tree));
                        s.steps = u64::from(*tree);
                    }
                    BoostToPassive::Finished if k == 0 => {
                        s.steps += 1;
                        progress.push(s.steps);
                    }
                    _ => {}
                }
                seal_to(&mut s.links, k, out, &ToPassive::Boost(r))?;
            }
            if a.is_done() && !s.holdout_sent {
                s.holdout_sent = true;
                seal_to_all(&mut s.links, out, &ToPassive::Holdout)?;
            }
            Ok(None)
        }
        (_, m) => Err(out_of_turn(match m {
            ToActive::Ready { .. } => "Ready",
            ToActive::Lr(_) => "an LR message",
            ToActive::Boost(_) => "a boosting message",
            ToActive::HoldoutLogits(_) => "hold-out logits",
            ToActive::HoldoutRoutes(_) => "hold-out routes",
            ToActive::Scoring(_) => "a scoring answer",
        })),
    }
}

/// Every passive party's answer is in (the spec's order): the scores of a scoring session,
/// or the hold-out scores and the model files of a training one.
fn active_answers(
    s: &mut Session,
    progress: &mut Vec<u64>,
    answers: Vec<ToActive>,
) -> Result<Finished, VerticalJobError> {
    let peer = s.peers.join(", ");
    let protocol = |source| VerticalJobError::Protocol {
        peer: peer.clone(),
        source,
    };
    let Some(p) = &s.prepared else {
        return Err(VerticalJobError::Internal("answers before the data"));
    };
    let n = p.hold.nrows();
    let wrong = VerticalJobError::Internal("answers of different kinds");
    match &s.party {
        Party::Waiting => {
            let model = p.model.as_ref().ok_or(VerticalJobError::Internal(
                "a scoring session without a model",
            ))?;
            let answers = answers
                .into_iter()
                .map(|a| match a {
                    ToActive::Scoring(a) => Ok(a),
                    _ => Err(VerticalJobError::Internal("answers of different kinds")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let scores = score::active_scores(model, p.hold.view(), &answers)?;
            progress.push(1);
            s.steps = 1;
            let rows = ScoredRows {
                id_column: p.data.id_column.clone(),
                ids: p.data.ids.clone(),
                scores,
                label: match (&p.data.label, &p.y_hold) {
                    (Some(l), Some(y)) => Some((l.clone(), y.clone())),
                    _ => None,
                },
            };
            Ok(Some(scored(s, n, Some(rows))))
        }
        Party::ActiveLr(a) => {
            let model = a.model();
            let mut us = Vec::with_capacity(answers.len());
            for answer in answers {
                let ToActive::HoldoutLogits(u) = answer else {
                    return Err(wrong);
                };
                us.push(u.unpack(n).map_err(VerticalJobError::Scoring)?);
            }
            let scores: Vec<f64> = model
                .margins(p.hold.view(), &us)
                .map_err(protocol)?
                .into_iter()
                .map(sigmoid)
                .collect();
            let mut file = model_file(s, p, &scores);
            file.lr = Some(model);
            Ok(Some(finish(s, file)))
        }
        Party::ActiveBoost(a) => {
            let model = a.model().map_err(protocol)?;
            let mut routes = Vec::with_capacity(answers.len());
            for answer in answers {
                let ToActive::HoldoutRoutes(r) = answer else {
                    return Err(wrong);
                };
                routes.push(score::unpack_routes(&r, n).map_err(VerticalJobError::Scoring)?);
            }
            let scores: Vec<f64> = model
                .predict_margin(p.hold.view(), &routes)
                .map_err(protocol)?
                .into_iter()
                .map(sigmoid)
                .collect();
            let mut file = model_file(s, p, &scores);
            file.gbdt = Some(model);
            Ok(Some(finish(s, file)))
        }
        Party::PassiveLr(_) | Party::PassiveBoost(_) => {
            Err(VerticalJobError::Internal("answers at a passive party"))
        }
    }
}

fn passive_take(
    s: &mut Session,
    rng: &mut rand_chacha::ChaCha20Rng,
    out: &mut Vec<(usize, PsiMsg)>,
    msg: ToPassive,
) -> Result<Finished, VerticalJobError> {
    let peer = s.peers.first().cloned().unwrap_or_default();
    let protocol = |source| VerticalJobError::Protocol {
        peer: peer.clone(),
        source,
    };
    let out_of_turn = |what| VerticalJobError::OutOfTurn {
        peer: peer.clone(),
        what,
    };
    match (&mut s.party, msg) {
        // Several passive parties: the common rows, before anything else.
        (Party::Waiting, ToPassive::Rows { positions }) if s.stash.is_some() => {
            let stash = s.stash.take();
            s.prepared = Some(match stash {
                Some(Stash::Train(data)) => prepare(&s.start.spec, keep_common(data, &positions)?)?,
                Some(Stash::Score(data, model)) => {
                    prepare_scoring(&s.start.spec, keep_common(data, &positions)?, model)
                }
                None => return Err(VerticalJobError::Internal("no data for the common rows")),
            });
            tracing::info!(job = %s.start.spec.job_id, rows = positions.len(), "the common rows of every pair kept");
            passive_ready(s, out)
        }
        (Party::PassiveLr(p), ToPassive::Lr(m)) => {
            let is_gradient = matches!(m, LrToPassive::Gradient { .. });
            if let Some(r) = p.handle(rng, m).map_err(protocol)? {
                seal_to(&mut s.links, 0, out, &ToActive::Lr(r))?;
            }
            if is_gradient {
                s.steps += 1;
                if let Some(cp) = p.checkpoint() {
                    s.checkpointed |= keep_checkpoint(&mut s.checkpoints, Checkpoint::Lr(cp));
                }
            }
            Ok(None)
        }
        (party, ToPassive::Resume { iteration }) if s.resumed_from == 0 => {
            let cp = s
                .checkpoints
                .iter()
                .find(|c| c.steps() == iteration)
                .cloned();
            match (party, cp) {
                (Party::PassiveLr(p), Some(Checkpoint::Lr(cp))) => {
                    p.resume_at(cp).map_err(protocol)?
                }
                (Party::PassiveBoost(p), Some(Checkpoint::PassiveBoost(cp))) => {
                    p.resume_at(cp).map_err(protocol)?
                }
                _ => {
                    return Err(out_of_turn(
                        "a resume at a step this party holds no state of",
                    ))
                }
            }
            tracing::info!(job = %s.start.spec.job_id, steps = iteration, "vertical training continues from an earlier session's state");
            s.steps = u64::from(iteration);
            s.resumed_from = u64::from(iteration);
            Ok(None)
        }
        (Party::PassiveBoost(p), ToPassive::Boost(m)) => {
            let gradients = matches!(m, BoostToPassive::Gradients { .. });
            if gradients {
                s.steps += 1;
            }
            if let Some(r) = p.handle(rng, m).map_err(protocol)? {
                seal_to(&mut s.links, 0, out, &ToActive::Boost(r))?;
            }
            if let Some(cp) = p.checkpoint().filter(|_| gradients) {
                s.checkpointed |= keep_checkpoint(&mut s.checkpoints, Checkpoint::PassiveBoost(cp));
            }
            Ok(None)
        }
        (Party::PassiveLr(p), ToPassive::Holdout) if p.is_done() => {
            let Some(prep) = &s.prepared else {
                return Ok(None);
            };
            let u = p.partial_logits(prep.hold.view()).map_err(protocol)?;
            let coef = p.coef().to_vec();
            seal_to(
                &mut s.links,
                0,
                out,
                &ToActive::HoldoutLogits(score::PackedF64::pack(&u)),
            )?;
            let mut file = model_file(s, prep, &[]);
            file.lr_coef = Some(coef);
            Ok(Some(finish(s, file)))
        }
        (Party::PassiveBoost(p), ToPassive::Holdout) if p.is_done() => {
            let Some(prep) = &s.prepared else {
                return Ok(None);
            };
            let routes = p.route(prep.hold.view()).map_err(protocol)?;
            let routes: Vec<(u32, u32, score::PackedBits)> = routes
                .into_iter()
                .map(|((t, n), left)| (t, n, score::PackedBits::pack(left.into_iter())))
                .collect();
            let splits: Vec<(u32, u32, PassiveSplit)> = p
                .trees()
                .splits
                .iter()
                .map(|(&(t, n), sp)| (t, n, sp.clone()))
                .collect();
            seal_to(&mut s.links, 0, out, &ToActive::HoldoutRoutes(routes))?;
            let mut file = model_file(s, prep, &[]);
            file.passive_splits = Some(splits);
            Ok(Some(finish(s, file)))
        }
        (_, m) => Err(out_of_turn(match m {
            ToPassive::Lr(_) => "an LR message",
            ToPassive::Boost(_) => "a boosting message",
            ToPassive::Holdout => "a hold-out request before training ended",
            ToPassive::Resume { .. } => "a resume after the session started",
            ToPassive::Rows { .. } => "a common-rows list (one passive party, or a second list)",
        })),
    }
}

/// Keeps `cp` and the checkpoint one step before it (a later session resumes at the last
/// step both parties completed, which may be one behind this party's last).
/// Whether it was kept (not a repeat of the last).
fn keep_checkpoint(kept: &mut Vec<Checkpoint>, cp: Checkpoint) -> bool {
    let step = cp.steps();
    if kept.last().is_some_and(|c| c.steps() == step) {
        return false;
    }
    kept.retain(|c| c.steps() + 1 == step);
    kept.push(cp);
    true
}

fn model_file(s: &Session, p: &Prepared, scores: &[f64]) -> VerticalModelFile {
    let active = s.start.role == Role::Active;
    let auc = p
        .y_hold
        .as_ref()
        .filter(|_| active && !scores.is_empty())
        .map(|y| fedsilo_ml::metrics::auc(scores, &y.to_vec()));
    VerticalModelFile {
        job_id: s.start.spec.job_id.clone(),
        kind: s.start.spec.kind,
        role: s.start.role.name().to_string(),
        peer: s.start.peer.clone(),
        psi_job: s.start.spec.psi_job.clone(),
        psi_hash: hex::encode(s.start.psi_hash),
        columns: p.data.columns.clone(),
        label: p.data.label.clone(),
        standardizer: p.standardizer.clone(),
        lr: None,
        lr_coef: None,
        gbdt: None,
        passive_splits: None,
        rows: p.data.x.nrows() as u64,
        train_rows: p.train.nrows() as u64,
        holdout_rows: p.hold.nrows() as u64,
        holdout_scores: active.then(|| scores.to_vec()),
        holdout_auc: auc,
    }
}

fn finish(s: &Session, file: VerticalModelFile) -> Ended {
    let report = VerticalReport {
        job_id: s.start.spec.job_id.clone(),
        session: s.start.session,
        rows: file.rows,
        train_rows: file.train_rows,
        holdout_rows: file.holdout_rows,
        steps: s.steps,
        holdout_auc: file.holdout_auc,
    };
    Ended::Trained(Box::new(file), report)
}

/// The end of a scoring session at this party: `n` customers scored (the active party's
/// scores, with their AUC when labelled).
fn scored(s: &Session, n: usize, rows: Option<ScoredRows>) -> Ended {
    let report = VerticalReport {
        job_id: s.start.spec.job_id.clone(),
        session: s.start.session,
        rows: n as u64,
        train_rows: 0,
        holdout_rows: 0,
        steps: 1,
        holdout_auc: rows.as_ref().and_then(ScoredRows::auc),
    };
    Ended::Scored(rows.map(Box::new), report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsilo_crypto::psi::Delivery;
    use rand::Rng;

    /// No two job ids share a file: ids that map to the same characters, and a job
    /// `x.resume` (whose model file was once job `x`'s resume file), get their own stems.
    #[test]
    fn each_job_id_has_its_own_files() {
        let dir = Path::new("/state");
        let ids = [
            "x", "x.resume", "x.scores", "a.b", "a_b", "a/b", "a b", "é", "_", "",
        ];
        let mut files = BTreeSet::new();
        for id in ids {
            for f in [
                VerticalModelFile::path(dir, id),
                ResumeFile::path(dir, id),
                score::ScoredRows::path(dir, id),
            ] {
                assert_eq!(f.parent(), Some(dir.join("vertical").as_path()), "{f:?}");
                assert!(
                    files.insert(f.clone()),
                    "{id:?}: {f:?} is another job's file"
                );
            }
        }
        assert_eq!(job_file_stem("churn-vlr_2"), "churn-vlr_2");
        let dotted = job_file_stem("churn.v1");
        assert!(
            dotted.starts_with("churn_v1~") && !dotted.contains('.'),
            "{dotted}"
        );
        assert_eq!(dotted.len(), "churn_v1~".len() + 32);
    }

    fn spec(extra: &str) -> VerticalJobSpec {
        let text = format!(
            "kind = \"vertical_logistic\"\njob_id = \"v\"\npsi_job = \"align\"\nactive = \"bank\"\n\
             passive = [\"partner\"]\nkey_bits = 1024\ntest_key = true\niterations = 2\n{extra}"
        );
        fedsilo_config::from_toml_str(&text, "spec").unwrap()
    }

    fn start(spec: &VerticalJobSpec, role: Role, peer: &str) -> VerticalStart {
        VerticalStart {
            spec: spec.clone(),
            session: 4,
            role,
            peer: peer.into(),
            dataset: "customers".into(),
            id_column: String::new(),
            id_format: IdFormat::Text,
            delivery: Delivery::Both,
            psi_session: 1,
            psi_hash: [9; 32],
            passive_index: 0,
            more_passive: Vec::new(),
        }
    }

    /// Two drivers, their messages relayed in memory (`tamper` may change a sealed one).
    struct Pair {
        bank: VerticalDriver,
        partner: VerticalDriver,
        data: [AlignedData; 2],
    }

    fn pair(rows: usize, part_len: usize) -> Pair {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let kb = Arc::new(IdentityKey::generate(&mut rng));
        let kp = Arc::new(IdentityKey::generate(&mut rng));
        let peers = |name: &str, k: &IdentityKey| {
            BTreeMap::from([(name.to_string(), hex::encode(k.public_key()))])
        };
        let mut bank = VerticalDriver::new(kb.clone(), peers("partner", &kp), [1; 32]);
        let mut partner = VerticalDriver::new(kp, peers("bank", &kb), [2; 32]);
        for d in [&mut bank, &mut partner] {
            d.set_part_len(part_len);
            d.record_received();
        }
        let x = Array2::from_shape_fn((rows, 2), |_| rng.random_range(-1.0f32..1.0));
        let z = Array2::from_shape_fn((rows, 3), |_| rng.random_range(-1.0f32..1.0));
        let y: Array1<f32> = (0..rows)
            .map(|i| f32::from(u8::from(x[(i, 0)] + z[(i, 1)] > 0.0)))
            .collect();
        let data = |cols: &[&str], x: Array2<f32>, y: Option<Array1<f32>>| AlignedData {
            columns: cols.iter().map(|c| c.to_string()).collect(),
            id_column: "customer".into(),
            ids: (0..rows).map(|i| format!("c{i:05}")).collect(),
            x,
            label: y.as_ref().map(|_| "churn".to_string()),
            y,
            alignment: PathBuf::from("align.json"),
            common: Vec::new(),
        };
        Pair {
            bank,
            partner,
            data: [
                data(&["x1", "x2"], x, Some(y)),
                data(&["z1", "z2", "z3"], z, None),
            ],
        }
    }

    /// Relays until both are quiet; returns each side's events (bank, partner).
    fn run(
        p: &mut Pair,
        tamper: impl FnMut(&mut Sealed) -> bool,
    ) -> (Vec<VerticalEvent>, Vec<VerticalEvent>) {
        run_spec(p, &spec(""), None, tamper)
    }

    /// [`run`] of any spec; a scoring spec is given each side's model file.
    fn run_spec(
        p: &mut Pair,
        spec: &VerticalJobSpec,
        models: Option<&[VerticalModelFile; 2]>,
        tamper: impl FnMut(&mut Sealed) -> bool,
    ) -> (Vec<VerticalEvent>, Vec<VerticalEvent>) {
        p.bank.handle_start(start(spec, Role::Active, "partner"));
        p.partner.handle_start(start(spec, Role::Passive, "bank"));
        relay(p, models, tamper, &mut Vec::new(), usize::MAX)
    }

    /// Relays until both are quiet, or until the bank has reported `stop_after` steps (then
    /// every message still queued is dropped, as by a relay that died); the bank's progress
    /// reports are collected in `progress`.
    fn relay(
        p: &mut Pair,
        models: Option<&[VerticalModelFile; 2]>,
        mut tamper: impl FnMut(&mut Sealed) -> bool,
        progress: &mut Vec<VerticalProgress>,
        stop_after: usize,
    ) -> (Vec<VerticalEvent>, Vec<VerticalEvent>) {
        let mut events = (Vec::new(), Vec::new());
        loop {
            let mut moved = false;
            for side in [0usize, 1] {
                let (from, to) = if side == 0 {
                    (&mut p.bank, &mut p.partner)
                } else {
                    (&mut p.partner, &mut p.bank)
                };
                while let Some(ev) = from.poll_event() {
                    moved = true;
                    match ev {
                        VerticalEvent::NeedData(st) => match models.and_then(|m| m.get(side)) {
                            Some(m) => from.provide_scoring(
                                &st.spec.job_id,
                                p.data[side].clone(),
                                (m.clone(), Path::new("model.json")),
                            ),
                            None => from.provide_data(&st.spec.job_id, p.data[side].clone()),
                        },
                        other => {
                            if side == 0 {
                                events.0.push(other);
                            } else {
                                events.1.push(other);
                            }
                        }
                    }
                }
                while let Some(m) = from.poll_transmit() {
                    moved = true;
                    match m {
                        ToCoordinator::Psi(mut m) => {
                            if let PsiMsg::Sealed(s) = &mut m {
                                if !tamper(s) {
                                    continue;
                                }
                            }
                            to.handle_message(m);
                        }
                        ToCoordinator::VerticalProgress(v) => {
                            progress.push(v);
                            if progress.len() >= stop_after {
                                while p.bank.poll_transmit().is_some() {}
                                while p.partner.poll_transmit().is_some() {}
                                return events;
                            }
                        }
                        _ => {}
                    }
                }
            }
            if !moved {
                return events;
            }
        }
    }

    /// A session cut off after 3 of 6 iterations (every message in flight lost, as when
    /// the coordinator is killed) is followed by a fresh session of the job: it continues
    /// from the last iteration both parties completed and trains the model an
    /// uninterrupted session trains.
    #[test]
    fn a_later_session_resumes_lr_at_the_last_iteration_both_hold() {
        let mut spec = spec("");
        spec.iterations = Some(6);
        resumes_at_the_last_step_both_hold(&spec, &[1, 3, 5]);
    }

    /// As for LR: SecureBoost cut after 1, 2 or 3 of 4 trees continues at a tree boundary
    /// and grows the trees an uninterrupted session grows.
    #[test]
    fn a_later_session_resumes_secureboost_at_the_last_tree_both_hold() {
        let gbdt: VerticalJobSpec = fedsilo_config::from_toml_str(
            "kind = \"vertical_gbdt\"\njob_id = \"g\"\npsi_job = \"align\"\nactive = \"bank\"\n\
             passive = [\"partner\"]\nkey_bits = 1024\ntest_key = true\n[gbdt]\nn_trees = 4\nmax_depth = 2\n",
            "spec",
        )
        .unwrap();
        resumes_at_the_last_step_both_hold(&gbdt, &[1, 2, 3]);
    }

    fn resumes_at_the_last_step_both_hold(spec: &VerticalJobSpec, cuts: &[usize]) {
        let spec = spec.clone();
        let total = spec.total_steps();
        let mut whole = pair(200, 1 << 20);
        let (b, q) = run_spec(&mut whole, &spec, None, |_| true);
        let (want_b, want_q) = (model(&b), model(&q));
        for &stop in cuts {
            let mut cut = pair(200, 1 << 20);
            cut.bank.handle_start(start(&spec, Role::Active, "partner"));
            cut.partner
                .handle_start(start(&spec, Role::Passive, "bank"));
            let mut progress = Vec::new();
            relay(&mut cut, None, |_| true, &mut progress, stop);
            assert_eq!(progress.len(), stop);
            let later = |role, peer| {
                let mut s = start(&spec, role, peer);
                s.session = 5;
                s
            };
            cut.bank.handle_start(later(Role::Active, "partner"));
            cut.partner.handle_start(later(Role::Passive, "bank"));
            let mut progress = Vec::new();
            let (b, q) = relay(&mut cut, None, |_| true, &mut progress, usize::MAX);
            let first = progress.first().unwrap();
            assert!(
                first.resumed_from + 1 >= stop as u64 && first.resumed_from <= stop as u64,
                "cut after {stop}: resumed from {}",
                first.resumed_from
            );
            assert!(first.resumed_from > 0 || stop == 1);
            assert_eq!(first.step, first.resumed_from + 1);
            assert_eq!(progress.last().unwrap().step, total);
            assert_eq!(done(&b).unwrap().steps, total);
            assert_eq!(done(&q).unwrap().steps, total);
            let (got_b, got_q) = (model(&b), model(&q));
            assert_eq!(got_b.lr, want_b.lr, "cut after {stop}");
            assert_eq!(got_q.lr_coef, want_q.lr_coef, "cut after {stop}");
            assert_eq!(got_b.gbdt, want_b.gbdt, "cut after {stop}");
            assert_eq!(
                got_q.passive_splits, want_q.passive_splits,
                "cut after {stop}"
            );
            assert_eq!(got_b.holdout_scores, want_b.holdout_scores);
        }
    }

    fn done(evs: &[VerticalEvent]) -> Option<&VerticalReport> {
        evs.iter().find_map(|e| match e {
            VerticalEvent::Done { report, .. } => Some(report),
            _ => None,
        })
    }

    fn model(evs: &[VerticalEvent]) -> VerticalModelFile {
        evs.iter()
            .find_map(|e| match e {
                VerticalEvent::Done { model, .. } => Some((**model).clone()),
                _ => None,
            })
            .unwrap()
    }

    fn scored(evs: &[VerticalEvent]) -> (Option<&ScoredRows>, &VerticalReport) {
        evs.iter()
            .find_map(|e| match e {
                VerticalEvent::Scored { scored, report } => Some((scored.as_deref(), report)),
                _ => None,
            })
            .unwrap()
    }

    fn score_spec(job: &str, model_job: &str) -> VerticalJobSpec {
        fedsilo_config::from_toml_str(
            &format!(
                "kind = \"vertical_score\"\njob_id = \"{job}\"\npsi_job = \"align-new\"\n\
                 model_job = \"{model_job}\"\nactive = \"bank\"\npassive = [\"partner\"]\n"
            ),
            "spec",
        )
        .unwrap()
    }

    /// Train, then score every aligned row in a scoring session: the hold-out rows get
    /// exactly the scores training gave them (the passive party's thresholds route as its
    /// bins did), only the bank gets scores, and the partner receives nothing.
    fn trained_then_scored(train: &VerticalJobSpec) {
        let mut p = pair(240, 1 << 20);
        let (b, q) = run_spec(&mut p, train, None, |_| true);
        let models = [model(&b), model(&q)];
        assert_eq!(models[0].job_id, train.job_id);
        p.bank.take_received();
        p.partner.take_received();
        let (b, q) = run_spec(
            &mut p,
            &score_spec("s", &train.job_id),
            Some(&models),
            |_| true,
        );
        assert_eq!(failure(&b), None);
        assert_eq!(failure(&q), None);
        let (rows, rb) = scored(&b);
        let (none, rp) = scored(&q);
        assert!(none.is_none(), "the partner holds no scores");
        assert_eq!((rb.rows, rb.steps), (240, 1));
        assert_eq!((rp.rows, rp.steps), (240, 1));
        let rows = rows.unwrap();
        assert_eq!(rows.scores.len(), 240);
        assert_eq!(rows.ids.first().map(String::as_str), Some("c00000"));
        let hold = train.holdout_positions(240);
        let want = models[0].holdout_scores.clone().unwrap();
        assert_eq!(hold.len(), want.len());
        for (&i, w) in hold.iter().zip(&want) {
            assert!(
                (rows.scores[i] - w).abs() < 1e-12,
                "row {i}: scored {} trained {w}",
                rows.scores[i]
            );
        }
        assert!(
            rb.holdout_auc.is_some_and(|a| a > 0.6),
            "{:?}",
            rb.holdout_auc
        );
        assert!(
            p.partner.take_received().is_empty(),
            "the partner received a message"
        );
        assert_eq!(p.bank.take_received().len(), 1);
    }

    #[test]
    fn a_scoring_session_scores_as_training_did_lr() {
        trained_then_scored(&spec(""));
    }

    #[test]
    fn a_scoring_session_scores_as_training_did_gbdt() {
        let gbdt: VerticalJobSpec = fedsilo_config::from_toml_str(
            "kind = \"vertical_gbdt\"\njob_id = \"g\"\npsi_job = \"align\"\nactive = \"bank\"\n\
             passive = [\"partner\"]\nkey_bits = 1024\ntest_key = true\n[gbdt]\nn_trees = 3\nmax_depth = 3\n",
            "spec",
        )
        .unwrap();
        trained_then_scored(&gbdt);
    }

    /// A model of other columns, or of the other role, is refused by name.
    #[test]
    fn a_scoring_session_refuses_a_model_of_other_columns_or_role() {
        let mut p = pair(120, 1 << 20);
        let (b, q) = run(&mut p, |_| true);
        let (mb, mut mq) = (model(&b), model(&q));
        mq.columns[0] = "z9".into();
        let (_, q2) = run_spec(
            &mut p,
            &score_spec("s1", "v"),
            Some(&[mb.clone(), mq]),
            |_| true,
        );
        let why = failure(&q2).unwrap();
        assert!(
            why.contains("not the columns the model of 'v' was trained on"),
            "{why}"
        );
        let (b3, _) = run_spec(
            &mut p,
            &score_spec("s2", "v"),
            Some(&[model(&q), mb]),
            |_| true,
        );
        let why = failure(&b3).unwrap();
        assert!(why.contains("was the passive party of that job"), "{why}");
    }

    fn failure(evs: &[VerticalEvent]) -> Option<&str> {
        evs.iter().find_map(|e| match e {
            VerticalEvent::Failed { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
    }

    /// With 2 KiB parts every vector of ciphertexts crosses in many sealed parts; the model
    /// is the one a single part per message gives.
    #[test]
    fn messages_in_parts_train_the_same_model() {
        let mut small = pair(300, 2048);
        let (b, p) = run(&mut small, |_| true);
        let (rb, rp) = (done(&b).unwrap(), done(&p).unwrap());
        assert_eq!((rb.rows, rb.steps), (rp.rows, rp.steps));
        assert_eq!(rb.steps, 2);
        let received = small.partner.take_received();
        let most = received.iter().map(|r| r.sealed.len()).max().unwrap();
        // 240 training rows × ≈ 347 base64 bytes per 1,024-bit ciphertext.
        assert!(most >= 40, "{most} parts at most");
        let residuals = received
            .iter()
            .find(|r| r.plaintext.contains("Residuals"))
            .unwrap();
        assert!(
            (residuals.plaintext.len() as f64) < 1.4 * 240.0 * 256.0 + 240.0 * 3.0 + 200.0,
            "{} bytes of residuals",
            residuals.plaintext.len()
        );
        let mut whole = pair(300, MAX_PART);
        let (b2, _) = run(&mut whole, |_| true);
        assert!(whole
            .partner
            .take_received()
            .iter()
            .all(|r| r.sealed.len() == 1));
        let model = |evs: &[VerticalEvent]| {
            evs.iter()
                .find_map(|e| match e {
                    VerticalEvent::Done { model, .. } => model.lr.clone(),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(model(&b), model(&b2));
    }

    /// The largest part, sealed, fits one gRPC message both ways: in the node's Submit and
    /// alone in a coordinator's poll reply (`POLL_REPLY_BYTES` always takes a reply's first
    /// message), with a long job id.
    #[test]
    fn a_full_part_fits_one_grpc_message_both_ways() {
        use fedsilo_proto::pb;
        use prost::Message as _;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(8);
        let a = Arc::new(IdentityKey::generate(&mut rng));
        let p = Arc::new(IdentityKey::generate(&mut rng));
        let ctx = PsiContext {
            job_id: "j".repeat(1000),
            session: u64::MAX,
        };
        let (ha, _) = ChannelHello::new(
            ctx.clone(),
            Role::Active,
            &a,
            p.public_key(),
            [1; 32],
            &mut rng,
        );
        let (_, mp) = ChannelHello::new(ctx, Role::Passive, &p, a.public_key(), [1; 32], &mut rng);
        let PsiMsg::Hello(mp) = mp else {
            panic!("not a hello")
        };
        let ch = ha.accept(&mp).unwrap();
        let mut links = [Link::Open(Box::new(Open {
            ch,
            part_len: MAX_PART,
            reassembly: Reassembly::new(parts::MAX_MESSAGE),
            parts_seen: Vec::new(),
        }))];
        // A message one byte longer than a part: a full part and a one-byte one.
        let msg = "x".repeat(MAX_PART - 1);
        let mut out = Vec::new();
        seal_to(&mut links, 0, &mut out, &msg).unwrap();
        assert_eq!(out.len(), 2);
        let (_, full) = out.swap_remove(0);
        let PsiMsg::Sealed(s) = &full else {
            panic!("not sealed")
        };
        assert_eq!(s.ciphertext.len(), MAX_PLAINTEXT + 16);
        let up = pb::ToCoordinator::from(ToCoordinator::Psi(full.clone()));
        assert!(
            up.encoded_len() < fedsilo_proto::MAX_MESSAGE_BYTES,
            "{}",
            up.encoded_len()
        );
        let down = pb::EncodedToParticipant::from(fedsilo_task::job::ToParticipant::Psi(full));
        let reply = pb::PollReply {
            messages: vec![down],
        };
        assert!(
            reply.encoded_len() < fedsilo_proto::MAX_MESSAGE_BYTES,
            "{}",
            reply.encoded_len()
        );
    }

    /// An altered or dropped part fails the session at the receiver, saying why.
    #[test]
    fn an_altered_or_dropped_part_fails_the_session_by_name() {
        let mut tampered = pair(300, 2048);
        let (_, p) = run(&mut tampered, |s| {
            if s.from == Role::Active && s.seq == 3 {
                if let Some(b) = s.ciphertext.get_mut(40) {
                    *b ^= 1;
                }
            }
            true
        });
        let reason = failure(&p).expect("the partner failed");
        assert!(
            reason.contains("'bank'")
                && reason.contains("number 3")
                && reason.contains("authenticate"),
            "{reason}"
        );
        let mut dropped = pair(300, 2048);
        let (_, p) = run(&mut dropped, |s| !(s.from == Role::Active && s.seq == 3));
        let reason = failure(&p).expect("the partner failed");
        assert!(
            reason.contains("message number 4 from the peer, expected number 3"),
            "{reason}"
        );
    }

    // -----------------------------------------------------------------------------------------
    // Several passive parties: the bank and two partners, relayed in memory as a star
    // -----------------------------------------------------------------------------------------

    const PASSIVES: [&str; 2] = ["insurer", "telco"];

    /// The bank (active) and two passive drivers, and each party's rows: the bank's in the
    /// common order (with each partner's positions of them), each partner's in its own pair's
    /// alignment order (more rows than are common).
    struct Star {
        bank: VerticalDriver,
        partners: Vec<VerticalDriver>,
        data: Vec<AlignedData>,
        /// The joined table on the common rows, in the common order: the bank's, the
        /// insurer's and the telco's columns, and the labels.
        joined: [Array2<f32>; 3],
        y: Array1<f32>,
        /// A restarted partner's driver (its own key, the bank's in its roster, no state).
        fresh: Vec<VerticalDriver>,
    }

    fn multi_spec(kind: &str, extra: &str) -> VerticalJobSpec {
        let text = format!(
            "kind = \"{kind}\"\njob_id = \"m\"\npsi_job = \"align\"\nactive = \"bank\"\n\
             passive = [\"insurer\", \"telco\"]\nkey_bits = 1024\ntest_key = true\n{extra}"
        );
        fedsilo_config::from_toml_str(&text, "spec").unwrap()
    }

    fn star_starts(spec: &VerticalJobSpec, session: u64) -> [VerticalStart; 3] {
        let mut a = start(spec, Role::Active, PASSIVES[0]);
        a.session = session;
        a.more_passive = vec![fedsilo_task::vertical::VerticalPair {
            passive: PASSIVES[1].into(),
            psi_session: 2,
            psi_hash: [8; 32],
        }];
        let mut p0 = start(spec, Role::Passive, "bank");
        p0.session = session;
        let mut p1 = p0.clone();
        p1.passive_index = 1;
        p1.psi_session = 2;
        p1.psi_hash = [8; 32];
        [a, p0, p1]
    }

    /// `universe` customers; the insurer aligned with the bank on customers 0..universe-20
    /// and the telco on 15..universe, each pair in its own shuffled order.
    fn star(universe: usize) -> Star {
        use rand::seq::SliceRandom;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        let kb = Arc::new(IdentityKey::generate(&mut rng));
        let kp: Vec<Arc<IdentityKey>> = (0..2)
            .map(|_| Arc::new(IdentityKey::generate(&mut rng)))
            .collect();
        let roster = |names: &[(&str, &IdentityKey)]| -> BTreeMap<String, String> {
            names
                .iter()
                .map(|(n, k)| (n.to_string(), hex::encode(k.public_key())))
                .collect()
        };
        let mut bank = VerticalDriver::new(
            kb.clone(),
            roster(&[(PASSIVES[0], &kp[0]), (PASSIVES[1], &kp[1])]),
            [1; 32],
        );
        let mut partners: Vec<VerticalDriver> = kp
            .iter()
            .enumerate()
            .map(|(i, k)| {
                VerticalDriver::new(k.clone(), roster(&[("bank", &kb)]), [2 + i as u8; 32])
            })
            .collect();
        for d in std::iter::once(&mut bank).chain(partners.iter_mut()) {
            d.record_received();
        }
        let fresh = kp
            .iter()
            .map(|k| VerticalDriver::new(k.clone(), roster(&[("bank", &kb)]), [9; 32]))
            .collect();
        let n = universe;
        let xb = Array2::from_shape_fn((n, 2), |_| rng.random_range(-1.0f32..1.0));
        let xi = Array2::from_shape_fn((n, 3), |_| rng.random_range(-1.0f32..1.0));
        let xt = Array2::from_shape_fn((n, 2), |_| rng.random_range(-1.0f32..1.0));
        let yb: Array1<f32> = (0..n)
            .map(|i| f32::from(u8::from(xb[(i, 0)] + xi[(i, 1)] - xt[(i, 0)] > 0.0)))
            .collect();
        let mut pair0: Vec<u32> = (0..(n - 20) as u32).collect();
        let mut pair1: Vec<u32> = (15..n as u32).collect();
        pair0.shuffle(&mut rng);
        pair1.shuffle(&mut rng);
        let (common, positions) =
            fedsilo_task::vertical::common_rows(&[pair0.clone(), pair1.clone()]);
        let idx = |rows: &[u32]| -> Vec<usize> { rows.iter().map(|&r| r as usize).collect() };
        let c = idx(&common);
        let data =
            |cols: &[&str], x: Array2<f32>, y: Option<Array1<f32>>, ids: Vec<String>| AlignedData {
                columns: cols.iter().map(|c| c.to_string()).collect(),
                id_column: "customer".into(),
                ids,
                x,
                label: y.as_ref().map(|_| "churn".to_string()),
                y,
                alignment: PathBuf::from("align.json"),
                common: Vec::new(),
            };
        let mut bank_data = data(
            &["x1", "x2"],
            xb.select(Axis(0), &c),
            Some(c.iter().map(|&i| yb[i]).collect()),
            c.iter().map(|i| format!("c{i:05}")).collect(),
        );
        bank_data.common = positions;
        Star {
            bank,
            partners,
            data: vec![
                bank_data,
                data(
                    &["i1", "i2", "i3"],
                    xi.select(Axis(0), &idx(&pair0)),
                    None,
                    Vec::new(),
                ),
                data(
                    &["t1", "t2"],
                    xt.select(Axis(0), &idx(&pair1)),
                    None,
                    Vec::new(),
                ),
            ],
            joined: [
                xb.select(Axis(0), &c),
                xi.select(Axis(0), &c),
                xt.select(Axis(0), &c),
            ],
            y: c.iter().map(|&i| yb[i]).collect(),
            fresh,
        }
    }

    /// Relays among the three until all are quiet; each party's events (bank, insurer,
    /// telco). A scoring spec gives each party its model file.
    fn run_star(
        st: &mut Star,
        spec: &VerticalJobSpec,
        models: Option<&[VerticalModelFile; 3]>,
    ) -> [Vec<VerticalEvent>; 3] {
        let [a, p0, p1] = star_starts(spec, 4);
        st.bank.handle_start(a);
        st.partners[0].handle_start(p0);
        st.partners[1].handle_start(p1);
        relay_star(st, models, &mut Vec::new(), usize::MAX)
    }

    /// Relays among the three until all are quiet, or until the bank has reported
    /// `stop_after` steps (then every message still queued is dropped); the bank's progress
    /// reports are collected in `progress`.
    fn relay_star(
        st: &mut Star,
        models: Option<&[VerticalModelFile; 3]>,
        progress: &mut Vec<VerticalProgress>,
        stop_after: usize,
    ) -> [Vec<VerticalEvent>; 3] {
        let mut events: [Vec<VerticalEvent>; 3] = Default::default();
        loop {
            let mut moved = false;
            for side in 0..3 {
                let d = if side == 0 {
                    &mut st.bank
                } else {
                    &mut st.partners[side - 1]
                };
                while let Some(ev) = d.poll_event() {
                    moved = true;
                    match ev {
                        VerticalEvent::NeedData(s) => match models.map(|m| &m[side]) {
                            Some(m) => d.provide_scoring(
                                &s.spec.job_id,
                                st.data[side].clone(),
                                (m.clone(), Path::new("model.json")),
                            ),
                            None => d.provide_data(&s.spec.job_id, st.data[side].clone()),
                        },
                        other => events[side].push(other),
                    }
                }
                let mut out = Vec::new();
                while let Some(m) = d.poll_transmit() {
                    out.push(m);
                }
                for m in out {
                    moved = true;
                    match (side, m) {
                        (0, ToCoordinator::VerticalRelay { passive, msg }) => {
                            st.partners[passive as usize].handle_message(msg)
                        }
                        (0, ToCoordinator::Psi(_)) => {
                            panic!("the bank sent a message naming no passive party")
                        }
                        (k, ToCoordinator::Psi(msg)) if k > 0 => {
                            st.bank.handle_relayed(k as u32 - 1, msg)
                        }
                        (k, ToCoordinator::VerticalRelay { .. }) if k > 0 => {
                            panic!("a passive party addressed a passive party")
                        }
                        (0, ToCoordinator::VerticalProgress(v)) => {
                            progress.push(v);
                            if progress.len() >= stop_after {
                                while st.bank.poll_transmit().is_some() {}
                                for p in &mut st.partners {
                                    while p.poll_transmit().is_some() {}
                                }
                                return events;
                            }
                        }
                        _ => {}
                    }
                }
            }
            if !moved {
                return events;
            }
        }
    }

    /// The joined table's training and hold-out positions (over the common rows).
    fn split(spec: &VerticalJobSpec, n: usize) -> (Vec<usize>, Vec<usize>) {
        let hold = spec.holdout_positions(n);
        let held: BTreeSet<usize> = hold.iter().copied().collect();
        ((0..n).filter(|i| !held.contains(i)).collect(), hold)
    }

    /// Vertical LR with two passive parties trains exactly the optimiser's steps on the
    /// joined table of the common rows (each party's columns standardised on the training
    /// rows), and the bank's hold-out scores are the pooled model's.
    #[test]
    fn two_passive_parties_train_the_lr_model_of_the_joined_table() {
        let mut st = star(230);
        let spec = multi_spec("vertical_logistic", "iterations = 3\n");
        let ev = run_star(&mut st, &spec, None);
        for (e, who) in ev.iter().zip(["bank", "insurer", "telco"]) {
            assert_eq!(failure(e), None, "{who}");
        }
        let n = st.y.len();
        assert!(n < 200 && n > 150, "{n} common rows");
        let reports: Vec<&VerticalReport> = ev.iter().map(|e| done(e).unwrap()).collect();
        for r in &reports {
            assert_eq!((r.rows, r.steps), (n as u64, 3));
            assert_eq!(r.holdout_rows, reports[0].holdout_rows);
        }
        let models: Vec<VerticalModelFile> = ev.iter().map(|e| model(e)).collect();
        let (train, hold) = split(&spec, n);
        let mut xs_train = Vec::new();
        let mut xs_hold = Vec::new();
        for (j, m) in st.joined.iter().zip(&models) {
            let t = j.select(Axis(0), &train);
            let sd = fedsilo_task::pooled::standardizer_of(t.view());
            assert_eq!(m.standardizer.as_ref(), Some(&sd));
            xs_train.push(sd.apply(t.view()).unwrap());
            xs_hold.push(sd.apply(j.select(Axis(0), &hold).view()).unwrap());
        }
        let cat = |v: &[Array2<f32>]| {
            ndarray::concatenate(Axis(1), &v.iter().map(|a| a.view()).collect::<Vec<_>>()).unwrap()
        };
        let y_train: Array1<f32> = train.iter().map(|&i| st.y[i]).collect();
        let pooled = fedsilo_vertical::lr::fit_joined(
            &spec.lr_config(),
            cat(&xs_train).view(),
            y_train.view(),
        )
        .unwrap();
        let lr = models[0].lr.as_ref().unwrap();
        let mut flat = lr.coef.clone();
        for m in &models[1..] {
            flat.extend_from_slice(m.lr_coef.as_ref().unwrap());
        }
        flat.push(lr.intercept);
        assert_eq!(flat.len(), pooled.len());
        let diff = flat
            .iter()
            .zip(&pooled)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(diff < 1e-6, "{flat:?} vs {pooled:?}");
        let p = fedsilo_ml::linear::LinearParams::from_flat(&pooled).unwrap();
        let want = fedsilo_ml::linear::predict_proba(&p, cat(&xs_hold).view()).unwrap();
        let got = models[0].holdout_scores.as_ref().unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6));
        assert!(models[1].holdout_scores.is_none() && models[2].holdout_scores.is_none());
        // Each partner's first message was the common-rows list, in its own channel.
        for p in &mut st.partners {
            let got = p.take_received();
            assert!(
                got[0].plaintext.starts_with("{\"Rows\""),
                "{}",
                got[0].plaintext
            );
            assert_eq!(
                got.iter()
                    .filter(|r| r.plaintext.starts_with("{\"Rows\""))
                    .count(),
                1
            );
        }
    }

    /// SecureBoost with two passive parties grows pooled boosting's trees on the joined
    /// table of the common rows, node for node, then scores every common customer in a
    /// scoring session as training scored its hold-out rows; only the bank holds scores.
    #[test]
    fn two_passive_parties_grow_the_pooled_trees_and_score_as_training_did() {
        let mut st = star(200);
        let spec = multi_spec("vertical_gbdt", "[gbdt]\nn_trees = 3\nmax_depth = 2\n");
        let ev = run_star(&mut st, &spec, None);
        for e in &ev {
            assert_eq!(failure(e), None);
        }
        let models: [VerticalModelFile; 3] = [model(&ev[0]), model(&ev[1]), model(&ev[2])];
        let n = st.y.len();
        let (train, hold) = split(&spec, n);
        let pick = |pos: &[usize]| {
            ndarray::concatenate(
                Axis(1),
                &st.joined
                    .iter()
                    .map(|j| j.select(Axis(0), pos))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(|a| a.view())
                    .collect::<Vec<_>>(),
            )
            .unwrap()
        };
        let y_train: Array1<f32> = train.iter().map(|&i| st.y[i]).collect();
        let pooled =
            fedsilo_ml::gbdt::fit_pooled(pick(&train).view(), y_train.view(), &spec.gbdt_params())
                .unwrap();
        let splits: Vec<BTreeMap<(u32, u32), PassiveSplit>> = models[1..]
            .iter()
            .map(|m| {
                m.passive_splits
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|(t, n, s)| ((*t, *n), s.clone()))
                    .collect()
            })
            .collect();
        let counts = models[0]
            .gbdt
            .as_ref()
            .unwrap()
            .matches_pooled(&pooled, &[2, 5], |k, t, n| {
                splits.get(k).and_then(|s| s.get(&(t, n)))
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            counts.passive,
            splits.iter().map(BTreeMap::len).sum::<usize>()
        );
        let want = pooled.predict_proba(pick(&hold).view()).unwrap();
        let got = models[0].holdout_scores.clone().unwrap();
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12));
        // Scoring the same customers: the hold-out rows get the scores training gave them.
        for p in &mut st.partners {
            p.take_received();
        }
        let mut score = multi_spec("vertical_score", "");
        score.job_id = "ms".into();
        score.model_job = "m".into();
        score.key_bits = None;
        score.test_key = false;
        score.validate().unwrap();
        let ev = run_star(&mut st, &score, Some(&models));
        for e in &ev {
            assert_eq!(failure(e), None);
        }
        let (rows, rb) = scored(&ev[0]);
        let rows = rows.unwrap();
        assert_eq!((rb.rows, rows.scores.len()), (n as u64, n));
        for (&i, w) in hold.iter().zip(&got) {
            assert!((rows.scores[i] - w).abs() < 1e-12, "row {i}");
        }
        for e in &ev[1..] {
            let (none, r) = scored(e);
            assert!(none.is_none(), "a partner holds no scores");
            assert_eq!(r.rows, n as u64);
        }
        // In a scoring session a partner receives the common-rows list and nothing else.
        for p in &mut st.partners {
            let got = p.take_received();
            assert_eq!(got.len(), 1);
            assert!(got[0].plaintext.starts_with("{\"Rows\""));
        }
    }

    /// A common-rows list out of range, or naming a row twice, fails the session at the
    /// passive party, saying so.
    #[test]
    fn a_bad_common_rows_list_is_refused_by_name() {
        type Spoil = fn(&mut Vec<u32>, u32);
        let out_of_range: Spoil = |p, rows| p[0] = rows;
        let twice: Spoil = |p, _| p[1] = p[0];
        for (bad, says) in [(out_of_range, "beyond this party's"), (twice, "twice")] {
            let mut st = star(120);
            let rows = st.data[2].x.nrows() as u32;
            bad(&mut st.data[0].common[1], rows);
            let spec = multi_spec("vertical_logistic", "iterations = 2\n");
            let ev = run_star(&mut st, &spec, None);
            let why = failure(&ev[2]).unwrap_or_else(|| panic!("telco took the list ({says})"));
            assert!(
                why.contains("the active party's list of common rows") && why.contains(says),
                "{why}"
            );
            assert_eq!(failure(&ev[1]), None, "the insurer's list was right");
            assert!(done(&ev[0]).is_none(), "the bank trained nothing");
        }
    }

    /// With two passive parties a session cut off mid-training (every message in flight
    /// lost) is followed by a fresh session that continues from the last step *every* party
    /// holds and trains the model an uninterrupted session trains; when the telco restarted
    /// (it holds no state) the next session trains from the start.
    #[test]
    fn two_passive_parties_resume_at_the_last_step_every_party_holds() {
        let spec = multi_spec("vertical_logistic", "iterations = 4\n");
        let mut whole = star(160);
        let ev = run_star(&mut whole, &spec, None);
        let want: Vec<VerticalModelFile> = ev.iter().map(|e| model(e)).collect();
        for (stop, telco_restarts) in [(1usize, false), (2, false), (3, false), (2, true)] {
            let mut cut = star(160);
            let [a, p0, p1] = star_starts(&spec, 4);
            cut.bank.handle_start(a);
            cut.partners[0].handle_start(p0);
            cut.partners[1].handle_start(p1);
            let mut progress = Vec::new();
            relay_star(&mut cut, None, &mut progress, stop);
            assert_eq!(progress.len(), stop);
            if telco_restarts {
                cut.partners[1] = cut.fresh.remove(1);
            }
            let [a, p0, p1] = star_starts(&spec, 5);
            cut.bank.handle_start(a);
            cut.partners[0].handle_start(p0);
            cut.partners[1].handle_start(p1);
            let mut progress = Vec::new();
            let ev = relay_star(&mut cut, None, &mut progress, usize::MAX);
            for e in &ev {
                assert_eq!(failure(e), None, "cut after {stop}");
            }
            let first = progress.first().unwrap();
            if telco_restarts {
                assert_eq!(first.resumed_from, 0, "the telco holds no step");
            } else {
                assert!(
                    first.resumed_from + 1 >= stop as u64 && first.resumed_from <= stop as u64,
                    "cut after {stop}: resumed from {}",
                    first.resumed_from
                );
            }
            assert_eq!(first.step, first.resumed_from + 1);
            let got: Vec<VerticalModelFile> = ev.iter().map(|e| model(e)).collect();
            assert_eq!(got[0].lr, want[0].lr, "cut after {stop}");
            for k in 1..3 {
                assert_eq!(got[k].lr_coef, want[k].lr_coef, "cut after {stop}");
            }
            assert_eq!(got[0].holdout_scores, want[0].holdout_scores);
        }
    }
}
