//! The participant node: the [`Worker`] driven over gRPC with mutual TLS.
//!
//! The node joins its jobs, long-polls the coordinator for messages, feeds them to the worker
//! and submits what the worker produces. Local data never leaves this process: the only
//! things sent are masked vectors and the protocol's keys, shares and signatures.
//! If the coordinator goes away (restart, network), the node retries with back-off and joins
//! again, so it rejoins the job at its next round.
//!
//! While the loop is busy with a batch (a long PSI or vertical step does not poll for
//! minutes) a task of its own sends heartbeats (`heartbeat.rs`), so the coordinator
//! does not take a computing node for one that is gone.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fedsilo_proto::pb;
use fedsilo_proto::pb::federation_client::FederationClient;
use fedsilo_proto::roster::Roster as RosterFile;
use fedsilo_proto::tls::{client_tls_config, TlsFiles};
use fedsilo_task::LocalData;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::data::{Schema, Source};
use crate::heartbeat::Heartbeat;
use crate::psi::{read_ids, Alignment, AlignmentStore, PsiDriver, PsiEvent, PsiJobError};
use crate::vertical::{VerticalDriver, VerticalEvent, VerticalJobError};
use crate::worker::{Worker, WorkerEvent};
use fedsilo_task::psi::PsiStart;
use fedsilo_task::vertical::VerticalStart;

// Test hooks: environment variables read only by a node built with the crate's
// `test-hooks` feature, which the workspace's integration tests enable (the root package's
// dev-dependency on this crate); a release binary ignores them, and says so when one is set.

/// Test hook: with this variable set to a directory, the node writes every vertical-session
/// message it receives (sealed bytes as relayed, and the plaintext) to
/// `<dir>/<name>.jsonl`, so a test can check what crossed the wire.
pub const RECORD_VERTICAL_ENV: &str = "FEDSILO_TEST_RECORD_VERTICAL";

/// Test hook: with this variable set to a number of bytes, the node cuts its vertical
/// messages into parts of at most that many bytes (instead of one gRPC message's worth), so
/// a test sees messages in several parts through the relay.
pub const VERTICAL_PART_BYTES_ENV: &str = "FEDSILO_TEST_VERTICAL_PART_BYTES";

/// Test hook: with this variable set to a number of milliseconds, the node's loop sleeps
/// that long (blocking, as a long protocol step computes) before it handles the first
/// relayed message of each vertical session, so a test sees a step longer than the
/// coordinator's liveness window.
pub const VERTICAL_DELAY_MS_ENV: &str = "FEDSILO_TEST_VERTICAL_DELAY_MS";

/// Every test hook's variable.
pub const TEST_HOOK_ENVS: [&str; 3] = [
    RECORD_VERTICAL_ENV,
    VERTICAL_PART_BYTES_ENV,
    VERTICAL_DELAY_MS_ENV,
];

/// Whether this build reads the test hooks' variables.
pub const TEST_HOOKS: bool = cfg!(feature = "test-hooks");

/// The test hooks this node runs with (none without the `test-hooks` feature).
#[derive(Debug, Default)]
struct TestHooks {
    record: Option<PathBuf>,
    part_bytes: Option<usize>,
    step_delay: Option<Duration>,
    /// The vertical sessions whose first message was delayed (`step_delay`).
    delayed: BTreeSet<(String, u64)>,
}

impl TestHooks {
    fn from_env(cfg: &NodeConfig) -> Result<Self, NodeError> {
        if !TEST_HOOKS {
            for name in TEST_HOOK_ENVS {
                if std::env::var_os(name).is_some() {
                    tracing::warn!(
                        variable = name,
                        "ignored: this binary was built without test hooks"
                    );
                }
            }
            return Ok(TestHooks::default());
        }
        let number = |name: &str, what: &str| -> Result<Option<u64>, NodeError> {
            let Some(v) = std::env::var_os(name) else {
                return Ok(None);
            };
            v.to_str()
                .and_then(|t| t.parse::<u64>().ok())
                .map(Some)
                .ok_or_else(|| NodeError::Config {
                    path: cfg.base_dir.clone(),
                    message: format!("{name}={v:?} is not a number of {what}"),
                })
        };
        let hooks = TestHooks {
            record: std::env::var_os(RECORD_VERTICAL_ENV).map(PathBuf::from),
            part_bytes: number(VERTICAL_PART_BYTES_ENV, "bytes")?
                .map(|b| usize::try_from(b).unwrap_or(usize::MAX)),
            step_delay: number(VERTICAL_DELAY_MS_ENV, "milliseconds")?.map(Duration::from_millis),
            delayed: BTreeSet::new(),
        };
        if hooks.record.is_some() || hooks.part_bytes.is_some() || hooks.step_delay.is_some() {
            tracing::warn!(hooks = ?hooks, "test hooks on");
        }
        Ok(hooks)
    }

    /// With `step_delay`: sleeps (blocking, as a long step computes) before the first
    /// relayed message of each vertical session is handled.
    fn delay_first(&mut self, ctx: &fedsilo_crypto::psi::PsiContext) {
        if let Some(d) = self.step_delay {
            if self.delayed.insert((ctx.job_id.clone(), ctx.session)) {
                std::thread::sleep(d);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A value of `participant.toml` that cannot work.
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("cannot load the participant config")]
    ConfigFile(#[from] fedsilo_config::ConfigError),
    /// The roster the config names does not load.
    #[error("config {path}")]
    Roster {
        path: PathBuf,
        #[source]
        source: fedsilo_proto::roster::RosterError,
    },
    /// The identity key the config names does not load.
    #[error("config {path}")]
    Identity {
        path: PathBuf,
        #[source]
        source: fedsilo_proto::pki::PkiError,
    },
    /// `coordinator` is not an address a channel can be built for.
    #[error("config {path}: coordinator address '{address}'")]
    Address {
        path: PathBuf,
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A dataset's schema or CSV file does not load.
    #[error("dataset '{name}'")]
    Data {
        name: String,
        #[source]
        source: Box<crate::data::DataError>,
    },
    /// The TLS files do not make a client configuration.
    #[error("TLS")]
    Tls(#[source] fedsilo_proto::tls::TlsError),
    /// The channel refused the TLS configuration.
    #[error("TLS")]
    Channel(#[source] tonic::transport::Error),
    #[error("coordinator refused: {0}")]
    Refused(String),
}

/// `participant.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This institution's name in the roster.
    pub name: String,
    /// e.g. `https://localhost:50051`
    pub coordinator: String,
    /// Host name the coordinator's certificate is checked against.
    #[serde(default = "localhost")]
    pub tls_domain: String,
    pub identity: PathBuf,
    pub roster: PathBuf,
    pub tls: TlsPaths,
    pub datasets: Vec<DatasetConfig>,
    /// Jobs to take part in; empty = every job the coordinator runs.
    #[serde(default)]
    pub jobs: Vec<String>,
    #[serde(default = "default_holdout")]
    pub holdout_fraction: f64,
    #[serde(default)]
    pub holdout_seed: u64,
    /// Stop once every job this node took part in has ended (for batch runs and tests).
    #[serde(default)]
    pub exit_when_done: bool,
    /// Where this node keeps what it must remember between runs (the alignments of PSI
    /// jobs, `psi/`); default `state` next to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One `[[datasets]]` entry: a name the jobs use, the schema, and exactly one source —
/// `csv = "file.csv"`, `parquet = "file.parquet"` or
/// `source = { postgres = "postgresql://…", query = "select …" }` (or `table = "customers"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DatabaseSource>,
    pub schema: PathBuf,
}

/// `source = { postgres = "postgresql://user@host/db", query = "select …" }`: rows from a
/// PostgreSQL server (a password may be in the URL; the config file is then a secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSource {
    /// Connection string: `postgresql://…` URL or `host=… dbname=…` key-value form.
    pub postgres: String,
    /// The query whose result is the dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// …or a table (optionally `schema.table`), all its rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

impl DatasetConfig {
    /// The source, paths resolved against `cfg`'s directory; `Err` says what is wrong.
    fn source(&self, cfg: &NodeConfig) -> Result<Source, String> {
        let given = self.csv.is_some() as usize
            + self.parquet.is_some() as usize
            + self.source.is_some() as usize;
        if given != 1 {
            return Err(format!(
                "datasets '{}': give exactly one of csv = \"….csv\", parquet = \"….parquet\" or source = {{ postgres = \"postgresql://…\", query = \"select …\" }} ({given} given)",
                self.name
            ));
        }
        if let Some(p) = &self.csv {
            return Ok(Source::Csv(cfg.resolve(p)));
        }
        if let Some(p) = &self.parquet {
            return Ok(Source::Parquet(cfg.resolve(p)));
        }
        match &self.source {
            Some(DatabaseSource {
                postgres,
                query: Some(q),
                table: None,
            }) => Ok(Source::Postgres {
                url: postgres.clone(),
                query: q.clone(),
            }),
            Some(DatabaseSource {
                postgres,
                query: None,
                table: Some(t),
            }) => Ok(Source::Postgres {
                url: postgres.clone(),
                query: t.clone(),
            }),
            _ => Err(format!(
                "datasets '{}': source: give exactly one of query = \"select …\" or table = \"…\"",
                self.name
            )),
        }
    }
}

fn localhost() -> String {
    "localhost".into()
}
fn default_holdout() -> f64 {
    0.2
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let err = |message: String| NodeError::Config {
            path: path.to_path_buf(),
            message,
        };
        let mut cfg: NodeConfig = fedsilo_config::load_toml(path)?;
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if !(cfg.holdout_fraction > 0.0 && cfg.holdout_fraction < 1.0) {
            return Err(err(format!(
                "holdout_fraction: {} must be between 0 and 1",
                cfg.holdout_fraction
            )));
        }
        if cfg.datasets.is_empty() {
            return Err(err("datasets: the node has no data to train on".into()));
        }
        for d in &cfg.datasets {
            d.source(&cfg).map_err(err)?;
        }
        Ok(cfg)
    }

    /// A path from the config, relative to the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The state directory (see [`NodeConfig::state_dir`]).
    pub fn state_dir(&self) -> PathBuf {
        match &self.state_dir {
            Some(p) => self.resolve(p),
            None => self.base_dir.join("state"),
        }
    }

    /// The dataset named `name`: its source and schema.
    pub fn dataset(&self, name: &str) -> Option<(Source, &Path)> {
        let d = self.datasets.iter().find(|d| d.name == name)?;
        Some((d.source(self).ok()?, d.schema.as_path()))
    }

    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca_cert: self.resolve(&self.tls.ca),
            cert: self.resolve(&self.tls.cert),
            key: self.resolve(&self.tls.key),
        }
    }
}

/// Loads every dataset of the config and splits off the hold-out rows.
pub fn load_datasets(cfg: &NodeConfig) -> Result<BTreeMap<String, LocalData>, NodeError> {
    let mut out = BTreeMap::new();
    for d in &cfg.datasets {
        let err = |source| NodeError::Data {
            name: d.name.clone(),
            source: Box::new(source),
        };
        let schema = Schema::from_toml_file(&cfg.resolve(&d.schema)).map_err(err)?;
        let source = d.source(cfg).map_err(|message| NodeError::Config {
            path: cfg.base_dir.clone(),
            message,
        })?;
        let table = source.load(&schema).map_err(err)?;
        let (train, holdout) = table.split_holdout(cfg.holdout_fraction, cfg.holdout_seed);
        tracing::info!(dataset = %d.name, train = train.n_rows(), holdout = holdout.n_rows(), "dataset loaded");
        out.insert(d.name.clone(), LocalData { train, holdout });
    }
    Ok(out)
}

/// Builds the worker from the config: identity key, roster, data.
pub fn build_worker(cfg: &NodeConfig) -> Result<Worker, NodeError> {
    let roster_path = cfg.resolve(&cfg.roster);
    let roster = RosterFile::load(&roster_path).map_err(|source| NodeError::Roster {
        path: roster_path.clone(),
        source,
    })?;
    let me = roster
        .participant_id(&cfg.name)
        .ok_or_else(|| NodeError::Config {
            path: roster_path.clone(),
            message: format!("institution '{}' is not in the roster", cfg.name),
        })?;
    let identity_path = cfg.resolve(&cfg.identity);
    let identity = fedsilo_proto::pki::load_identity(&identity_path).map_err(|source| {
        NodeError::Identity {
            path: identity_path.clone(),
            source,
        }
    })?;
    let entry = roster
        .institutions
        .iter()
        .find(|e| e.name == cfg.name)
        .ok_or_else(|| NodeError::Config {
            path: roster_path.clone(),
            message: format!("institution '{}' is not in the roster", cfg.name),
        })?;
    if entry.identity_key != hex::encode(identity.public_key()) {
        return Err(NodeError::Config {
            path: identity_path,
            message: format!(
                "this identity key does not match the roster's key for '{}'",
                cfg.name
            ),
        });
    }
    let datasets = load_datasets(cfg)?;
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    Ok(Worker::new(
        me,
        Arc::new(identity),
        Arc::new(roster.to_crypto_roster()),
        datasets,
        seed,
    ))
}

/// The PSI driver from the config: the identity key and every institution's key from this
/// node's own roster (never from the coordinator).
pub fn build_psi(cfg: &NodeConfig) -> Result<PsiDriver, NodeError> {
    let roster_path = cfg.resolve(&cfg.roster);
    let roster = RosterFile::load(&roster_path).map_err(|source| NodeError::Roster {
        path: roster_path.clone(),
        source,
    })?;
    let identity_path = cfg.resolve(&cfg.identity);
    let identity = fedsilo_proto::pki::load_identity(&identity_path).map_err(|source| {
        NodeError::Identity {
            path: identity_path.clone(),
            source,
        }
    })?;
    let peers = roster
        .institutions
        .iter()
        .map(|e| (e.name.clone(), e.identity_key.clone()))
        .collect();
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    Ok(PsiDriver::new(Arc::new(identity), peers, seed))
}

/// The vertical driver from the config: keys from this node's own roster, as PSI's.
pub fn build_vertical(cfg: &NodeConfig) -> Result<VerticalDriver, NodeError> {
    let roster_path = cfg.resolve(&cfg.roster);
    let roster = RosterFile::load(&roster_path).map_err(|source| NodeError::Roster {
        path: roster_path.clone(),
        source,
    })?;
    let identity_path = cfg.resolve(&cfg.identity);
    let identity = fedsilo_proto::pki::load_identity(&identity_path).map_err(|source| {
        NodeError::Identity {
            path: identity_path.clone(),
            source,
        }
    })?;
    let peers = roster
        .institutions
        .iter()
        .map(|e| (e.name.clone(), e.identity_key.clone()))
        .collect();
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    Ok(VerticalDriver::new(Arc::new(identity), peers, seed))
}

/// Loads a vertical session's aligned rows into the driver, or aborts the session naming
/// why (no alignment, another PSI session, rows changed since the PSI, no label, …).
fn feed_vertical(cfg: &NodeConfig, v: &mut VerticalDriver, start: &VerticalStart) {
    let job = start.spec.job_id.clone();
    let result = (|| -> Result<crate::vertical::AlignedData, VerticalJobError> {
        let (source, schema_path) =
            cfg.dataset(&start.dataset)
                .ok_or_else(|| VerticalJobError::UnknownDataset {
                    job: job.clone(),
                    dataset: start.dataset.clone(),
                })?;
        let schema_path = cfg.resolve(schema_path);
        let schema = Schema::from_toml_file(&schema_path).map_err(|e| VerticalJobError::Data {
            dataset: start.dataset.clone(),
            source: Box::new(e),
        })?;
        crate::vertical::load_aligned(
            &cfg.state_dir(),
            &source,
            (schema_path.as_path(), &schema),
            start,
        )
    })();
    match result {
        Ok(data) if !start.spec.kind.trains() => {
            let state = cfg.state_dir();
            let path = crate::vertical::VerticalModelFile::path(&state, &start.spec.model_job);
            match crate::vertical::VerticalModelFile::load(&state, &start.spec.model_job) {
                Ok(model) => {
                    tracing::info!(job = %job, rows = data.x.nrows(), model = %path.display(), "vertical rows and model loaded for scoring");
                    v.provide_scoring(&job, data, (model, &path));
                }
                Err(e) => {
                    let e = VerticalJobError::from(e);
                    tracing::error!(job = %job, error = %fedsilo_config::display_chain(&e), "vertical model");
                    v.abort(&job, &e);
                }
            }
        }
        Ok(data) => {
            tracing::info!(job = %job, rows = data.x.nrows(), columns = data.x.ncols(), alignment = %data.alignment.display(), "vertical rows loaded");
            // What an earlier run of this node kept of the job (it continues from there).
            match crate::vertical::ResumeFile::load(&cfg.state_dir(), &job) {
                Ok(Some(file)) => v.provide_resume(&job, file),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(job = %job, error = %fedsilo_config::display_chain(&e), "the vertical resume file is unreadable; training starts from scratch")
                }
            }
            v.provide_data(&job, data);
        }
        Err(e) => {
            tracing::error!(job = %job, error = %fedsilo_config::display_chain(&e), "vertical rows");
            v.abort(&job, &e);
        }
    }
}

/// Writes a finished session's model part; the report to send, or the failure.
fn write_vertical_model(
    cfg: &NodeConfig,
    model: &crate::vertical::VerticalModelFile,
    report: fedsilo_task::vertical::VerticalReport,
) -> fedsilo_task::job::ToCoordinator {
    match model.save(&cfg.state_dir()) {
        Ok(path) => {
            tracing::info!(job = %model.job_id, role = %model.role, path = %path.display(),
                auc = ?model.holdout_auc, "vertical model written");
            let resume = crate::vertical::ResumeFile::path(&cfg.state_dir(), &model.job_id);
            if let Err(e) = std::fs::remove_file(&resume) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %resume.display(), error = %e, "cannot remove the vertical resume file");
                }
            }
            fedsilo_task::job::ToCoordinator::VerticalDone(report)
        }
        Err(e) => fedsilo_task::job::ToCoordinator::PsiFailed {
            job_id: report.job_id,
            session: report.session,
            reason: fedsilo_config::display_chain(&e),
        },
    }
}

/// Writes a scoring session's ranked list (the active party); the report to send, or the
/// failure.
fn write_vertical_scores(
    cfg: &NodeConfig,
    scored: Option<&crate::vertical::score::ScoredRows>,
    report: fedsilo_task::vertical::VerticalReport,
) -> fedsilo_task::job::ToCoordinator {
    let Some(rows) = scored else {
        tracing::info!(job = %report.job_id, rows = report.rows, "vertical scoring answered");
        return fedsilo_task::job::ToCoordinator::VerticalDone(report);
    };
    let path = crate::vertical::score::ScoredRows::path(&cfg.state_dir(), &report.job_id);
    match rows.write(&path) {
        Ok(()) => {
            tracing::info!(job = %report.job_id, rows = report.rows, auc = ?report.holdout_auc, path = %path.display(), "vertical scores written");
            fedsilo_task::job::ToCoordinator::VerticalDone(report)
        }
        Err(source) => {
            let e = VerticalJobError::Write { path, source };
            fedsilo_task::job::ToCoordinator::PsiFailed {
                job_id: report.job_id,
                session: report.session,
                reason: fedsilo_config::display_chain(&e),
            }
        }
    }
}

/// Appends what the vertical driver recorded (test hook) to `<dir>/<name>.jsonl`.
fn dump_received(cfg: &NodeConfig, hooks: &TestHooks, v: &mut VerticalDriver) {
    let Some(dir) = &hooks.record else {
        return;
    };
    let got = v.take_received();
    if got.is_empty() {
        return;
    }
    let path = dir.join(format!("{}.jsonl", cfg.name));
    let mut text = String::new();
    for r in &got {
        if let Ok(line) = serde_json::to_string(r) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    use std::io::Write;
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot record vertical messages");
    }
}

/// The session's dataset: its source, schema file and schema, checked to name an id column
/// (at `PsiStart`, so a party without one refuses before anything is exchanged).
fn psi_dataset(
    cfg: &NodeConfig,
    start: &PsiStart,
) -> Result<(Source, PathBuf, Schema), PsiJobError> {
    let (source, schema_path) =
        cfg.dataset(&start.dataset)
            .ok_or_else(|| PsiJobError::UnknownDataset {
                job: start.job_id.clone(),
                dataset: start.dataset.clone(),
            })?;
    let schema_path = cfg.resolve(schema_path);
    let schema = Schema::from_toml_file(&schema_path).map_err(|e| PsiJobError::Data {
        dataset: start.dataset.clone(),
        source: Box::new(e),
    })?;
    crate::psi::with_id_column(&start.dataset, &schema_path, &schema, &start.id_column)?;
    Ok((source, schema_path, schema))
}

/// Reads the session's ids into the driver (chunk by chunk) and finishes them; a failure
/// is the session's (the driver tells the coordinator).
fn feed_ids(cfg: &NodeConfig, psi: &mut PsiDriver, start: &PsiStart) {
    let job = start.job_id.clone();
    let result = (|| -> Result<(), PsiJobError> {
        let (source, schema_path, schema) = psi_dataset(cfg, start)?;
        let rows = read_ids(
            &start.dataset,
            &source,
            (schema_path.as_path(), &schema),
            &start.id_column,
            &mut |chunk| psi.push_ids(&job, chunk),
        )?;
        tracing::info!(job = %job, rows, "PSI ids read");
        psi.finish_ids(&job)
    })();
    if let Err(e) = result {
        // push/finish errors already failed the session; this covers reading errors.
        if psi.has_session(&job) {
            psi.abort(&job, &e);
        }
        tracing::error!(job = %job, error = %fedsilo_config::display_chain(&e), "PSI ids");
    }
}

/// Persists a finished session's alignment; the report to send, or the failure to send.
fn persist_alignment(
    cfg: &NodeConfig,
    start: &PsiStart,
    output: &fedsilo_crypto::psi::PsiOutput,
) -> fedsilo_task::job::ToCoordinator {
    let store = AlignmentStore::new(&cfg.state_dir());
    let mut alignment = Alignment::new(start, output);
    if let Some(rows) = &output.rows {
        match alignment_rows_digest(cfg, start, rows) {
            Ok(d) => alignment.rows_digest = Some(d),
            Err(e) => {
                return fedsilo_task::job::ToCoordinator::PsiFailed {
                    job_id: start.job_id.clone(),
                    session: start.session,
                    reason: fedsilo_config::display_chain(&e),
                }
            }
        }
    }
    match store.save(&alignment) {
        Ok(path) => {
            tracing::info!(job = %start.job_id, session = start.session, peer = %start.peer,
                intersection = output.intersection_size, path = %path.display(),
                hash = %alignment.intersection_hash, "PSI alignment persisted");
            crate::psi::report(start, output)
        }
        Err(e) => fedsilo_task::job::ToCoordinator::PsiFailed {
            job_id: start.job_id.clone(),
            session: start.session,
            reason: fedsilo_config::display_chain(&e),
        },
    }
}

/// The digest of the ids at a finished session's aligned rows (the ids read again).
fn alignment_rows_digest(
    cfg: &NodeConfig,
    start: &PsiStart,
    rows: &[u32],
) -> Result<String, VerticalJobError> {
    let (source, schema_path, schema) = psi_dataset(cfg, start)?;
    let mut ids: Vec<String> = Vec::new();
    read_ids(
        &start.dataset,
        &source,
        (schema_path.as_path(), &schema),
        &start.id_column,
        &mut |chunk| {
            ids.extend_from_slice(chunk);
            Ok(())
        },
    )?;
    crate::vertical::rows_digest(&ids, rows, start.id_format)
}

/// How long the node waits for a TCP connection to the coordinator.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the node waits for each answer of the coordinator (a `Poll` asks it to wait
/// at most [`POLL_WAIT`]); a call not answered by then fails and the node reconnects.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `Poll` asks the coordinator to wait for messages.
pub const POLL_WAIT: Duration = Duration::from_secs(2);

async fn connect(cfg: &NodeConfig) -> Result<FederationClient<Channel>, NodeError> {
    let tls = client_tls_config(&cfg.tls_files(), &cfg.tls_domain).map_err(NodeError::Tls)?;
    let endpoint = Endpoint::from_shared(cfg.coordinator.clone())
        .map_err(|source| NodeError::Address {
            path: cfg.base_dir.clone(),
            address: cfg.coordinator.clone(),
            source,
        })?
        .tls_config(tls)
        .map_err(NodeError::Channel)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    let channel = endpoint.connect_lazy();
    let max = fedsilo_proto::convert::MAX_MESSAGE_BYTES;
    Ok(FederationClient::new(channel)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}

/// Runs the node until every job it joined has ended (with `exit_when_done`) or forever.
pub async fn run(cfg: NodeConfig, worker: Worker) -> Result<(), NodeError> {
    run_until(cfg, worker, std::future::pending()).await
}

/// [`run`], stopping gracefully once `shutdown` resolves: a batch of messages being handled
/// and its answers being submitted is finished first; a wait (poll, back-off) is cut short.
pub async fn run_until(
    cfg: NodeConfig,
    mut worker: Worker,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    tokio::pin!(shutdown);
    let mut psi = build_psi(&cfg)?;
    let mut vertical = build_vertical(&cfg)?;
    let mut hooks = TestHooks::from_env(&cfg)?;
    if hooks.record.is_some() {
        vertical.record_received();
    }
    if let Some(bytes) = hooks.part_bytes {
        vertical.set_part_len(bytes);
    }
    // PSI sessions an earlier run of this node had open are lost: say so once joined, so
    // the coordinator restarts those pairs instead of the peers waiting forever.
    let sessions_store = AlignmentStore::new(&cfg.state_dir());
    let mut recorded = sessions_store.load_open_sessions().unwrap_or_else(|e| {
        tracing::warn!(error = %fedsilo_config::display_chain(&e), "cannot read the PSI sessions of the last run");
        Vec::new()
    });

    // The file holds PSI and vertical sessions alike; the coordinator routes a loss by job.
    psi.report_lost(&recorded);
    let mut sync_sessions = move |psi: &PsiDriver, v: &VerticalDriver| {
        let mut open = psi.open_sessions();
        open.extend(v.open_sessions());
        open.sort();
        if open != recorded {
            match sessions_store.save_open_sessions(&open) {
                Ok(()) => recorded = open,
                Err(e) => {
                    tracing::warn!(error = %fedsilo_config::display_chain(&e), "cannot record the open PSI sessions")
                }
            }
        }
    };
    let mut client = connect(&cfg).await?;
    // Sends heartbeats while `busy` guards are held; stopped when `run_until` returns.
    let heartbeat = Heartbeat::spawn(client.clone());
    let mut joined: BTreeSet<String> = BTreeSet::new();
    let mut ended: BTreeSet<String> = BTreeSet::new();
    let mut backoff = Duration::from_millis(200);
    let mut need_join = true;
    // PSI messages produced but not yet accepted by the relay (see `submit_psi`).
    let mut psi_pending: VecDeque<pb::ToCoordinator> = VecDeque::new();
    // Awaits `$fut` unless shutdown comes first, in which case the node stops.
    macro_rules! or_shutdown {
        ($fut:expr) => {
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    tracing::info!("participant stopped");
                    return Ok(());
                }
                r = $fut => r,
            }
        };
    }
    loop {
        if need_join {
            let joined_reply = or_shutdown!(client.join(pb::JoinRequest {
                job_ids: cfg.jobs.clone(),
            }));
            match joined_reply {
                Ok(r) => {
                    let r = r.into_inner();
                    heartbeat.joined(r.liveness_window_ms);
                    for j in r.job_ids {
                        if !ended.contains(&j) && joined.insert(j.clone()) {
                            tracing::info!(job = %j, participant = ?r.participant_id, "joined job");
                        }
                    }
                    need_join = false;
                    backoff = Duration::from_millis(200);
                }
                Err(status) if status.code() == tonic::Code::PermissionDenied => {
                    return Err(NodeError::Refused(status.message().to_string()));
                }
                Err(status) => {
                    tracing::warn!(coordinator = %cfg.coordinator, error = %status, "cannot join yet; retrying");
                    or_shutdown!(tokio::time::sleep(backoff));
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        if cfg.exit_when_done && !joined.is_empty() && joined.is_subset(&ended) {
            tracing::info!("every job this node took part in has ended");
            return Ok(());
        }
        let poll = pb::PollRequest {
            max_wait_ms: POLL_WAIT.as_millis() as u32,
        };
        let polled = or_shutdown!(client.poll(poll));
        let reply = match polled {
            Ok(r) => r.into_inner(),
            Err(status) => {
                if status.code() == tonic::Code::PermissionDenied {
                    return Err(NodeError::Refused(status.message().to_string()));
                }
                if status.code() == tonic::Code::ResourceExhausted {
                    // Rate-limited: the coordinator is there; slow down, stay joined.
                    tracing::warn!(coordinator = %cfg.coordinator, error = %status, "polling too fast; backing off");
                    or_shutdown!(tokio::time::sleep(Duration::from_secs(1)));
                    continue;
                }
                tracing::warn!(coordinator = %cfg.coordinator, error = %status, "lost the coordinator; reconnecting");
                or_shutdown!(tokio::time::sleep(backoff));
                backoff = (backoff * 2).min(Duration::from_secs(5));
                need_join = true;
                continue;
            }
        };
        if reply.messages.is_empty() {
            // Pick up jobs launched since we last joined.
            need_join = cfg.jobs.is_empty() || !cfg.jobs.iter().all(|j| joined.contains(j));
            if !psi.has_queued() && !vertical.has_queued() && psi_pending.is_empty() {
                continue;
            }
        }
        // Busy until the next poll: handling the batch, the PSI and vertical steps it starts
        // and submitting their answers can take longer than the coordinator's liveness
        // window; heartbeats say the node is still here meanwhile.
        let _busy = heartbeat.busy();
        let mut outgoing = Vec::new();
        tokio::task::block_in_place(|| {
            for m in reply.messages {
                // Cheap: the clone shares the encoded bytes.
                match fedsilo_task::job::ToParticipant::try_from(m.clone()) {
                    Ok(fedsilo_task::job::ToParticipant::PsiStart(s)) => {
                        match psi_dataset(&cfg, &s) {
                            Ok(_) => psi.handle_start(s),
                            Err(e) => psi.refuse_start(s, &e),
                        }
                    }
                    Ok(fedsilo_task::job::ToParticipant::Psi(m)) if vertical.claims(&m) => {
                        hooks.delay_first(m.ctx());
                        vertical.handle_message(m)
                    }
                    Ok(fedsilo_task::job::ToParticipant::Psi(m)) => psi.handle_message(m),
                    Ok(fedsilo_task::job::ToParticipant::VerticalRelay { passive, msg }) => {
                        hooks.delay_first(msg.ctx());
                        vertical.handle_relayed(passive, msg)
                    }
                    Ok(fedsilo_task::job::ToParticipant::VerticalStart(s)) => {
                        vertical.handle_start(*s)
                    }
                    Ok(m) => {
                        if let fedsilo_task::job::ToParticipant::JobEnd { job_id, .. } = &m {
                            psi.job_ended(job_id);
                            vertical.job_ended(job_id);
                        }
                        if let Err(e) = worker.handle_message(m) {
                            tracing::warn!(error = %e, "message refused");
                        }
                    }
                    Err(e) => match fedsilo_proto::convert::refused_round(&m) {
                        // A round whose step does not convert is declined, naming the field.
                        Some(ctx) => worker.decline_unreadable(ctx, e),
                        None => tracing::warn!(error = %e, "malformed message from coordinator"),
                    },
                }
            }
            while let Some(out) = worker.poll_transmit() {
                outgoing.push(out);
            }
        });
        sync_sessions(&psi, &vertical);
        while let Some(ev) = worker.poll_event() {
            match ev {
                WorkerEvent::JobEnded {
                    job_id,
                    state,
                    detail,
                } => {
                    tracing::info!(job = %job_id, %state, %detail, "job ended");
                    ended.insert(job_id.clone());
                    joined.insert(job_id);
                }
                WorkerEvent::RoundStarted {
                    job_id,
                    round,
                    purpose,
                } => {
                    tracing::info!(job = %job_id, round, %purpose, "round started");
                }
                WorkerEvent::RoundEnded {
                    job_id,
                    round,
                    ok,
                    detail,
                } => {
                    tracing::info!(job = %job_id, round, ok, %detail, "round ended");
                }
                WorkerEvent::Declined { job_id, reason } => {
                    tracing::warn!(job = %job_id, %reason, "declined a step");
                }
            }
        }
        for m in outgoing {
            let pbm: pb::ToCoordinator = m.into();
            if let Err(status) = client.submit(pbm).await {
                tracing::warn!(coordinator = %cfg.coordinator, error = %status, "submit refused");
            }
        }
        // PSI: ids when asked, alignments persisted before their report, and every message
        // submitted before the next is produced (chunks are made lazily: bounded memory).
        // A message the relay has no room for yet stays first in `psi_pending`: the node
        // polls (the other party's messages may be what it waits for), then submits it
        // again, before producing anything new.
        loop {
            if psi_pending.is_empty() {
                tokio::task::block_in_place(|| {
                    while let Some(ev) = psi.poll_event() {
                        match ev {
                            PsiEvent::NeedIds(start) => feed_ids(&cfg, &mut psi, &start),
                            PsiEvent::Done { start, output } => {
                                psi_pending
                                    .push_back(persist_alignment(&cfg, &start, &output).into());
                            }
                            PsiEvent::Failed {
                                job_id,
                                session,
                                reason,
                            } => {
                                tracing::error!(job = %job_id, session, %reason, "PSI session failed");
                            }
                        }
                    }
                    if let Some(m) = psi.poll_transmit() {
                        psi_pending.push_back(m.into());
                    }
                    while let Some(m) = vertical.poll_transmit() {
                        psi_pending.push_back(m.into());
                    }
                    while let Some(ev) = vertical.poll_event() {
                        match ev {
                            VerticalEvent::NeedData(start) => {
                                feed_vertical(&cfg, &mut vertical, &start)
                            }
                            VerticalEvent::Done { model, report } => {
                                psi_pending
                                    .push_back(write_vertical_model(&cfg, &model, report).into());
                            }
                            VerticalEvent::Checkpoint(file) => {
                                if let Err(e) = file.save(&cfg.state_dir()) {
                                    tracing::warn!(job = %file.job_id, error = %fedsilo_config::display_chain(&e), "cannot write the vertical resume file; a restart of this node would train from scratch");
                                }
                            }
                            VerticalEvent::Scored { scored, report } => {
                                psi_pending.push_back(
                                    write_vertical_scores(&cfg, scored.as_deref(), report).into(),
                                );
                            }
                            VerticalEvent::Failed {
                                job_id,
                                session,
                                reason,
                            } => {
                                tracing::error!(job = %job_id, session, %reason, "vertical session failed");
                            }
                        }
                    }
                    while let Some(m) = vertical.poll_transmit() {
                        psi_pending.push_back(m.into());
                    }
                    dump_received(&cfg, &hooks, &mut vertical);
                });
                if psi_pending.is_empty() {
                    break;
                }
            }
            if !submit_psi(&mut client, &cfg, &mut psi_pending).await {
                break;
            }
        }
        sync_sessions(&psi, &vertical);
    }
}

/// Submits `pending` in order; `false` (the rest kept) when the relay has no room yet for
/// one (`RESOURCE_EXHAUSTED`: the other party has not polled its earlier messages).
async fn submit_psi(
    client: &mut FederationClient<Channel>,
    cfg: &NodeConfig,
    pending: &mut VecDeque<pb::ToCoordinator>,
) -> bool {
    while let Some(m) = pending.pop_front() {
        match client.submit(m.clone()).await {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                tracing::debug!(coordinator = %cfg.coordinator, error = %status, "PSI relay full; polling first");
                pending.push_front(m);
                return false;
            }
            Err(status) => {
                tracing::warn!(coordinator = %cfg.coordinator, error = %status, "submit refused");
            }
        }
    }
    true
}
