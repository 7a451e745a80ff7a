//! Scenario files: who takes part, with what data, training what, and what goes wrong.
//!
//! ```toml
//! name = "quickstart"
//! description = "Five lenders train a default model and a propensity model"
//! seed = 7
//! holdout_fraction = 0.2
//!
//! [institutions]
//! count = 5
//! names = ["Bank A", "Bank B", "Bank C", "Insurer D", "Bank E"]   # optional
//!
//! [[datasets]]
//! name = "credit"
//! csv = "../../data/credit_data.csv"          # relative to this file
//! schema = "../../data/credit_data.schema.toml"
//! partition = { kind = "sorted_bands", column = "Income" }
//!
//! [[jobs]]
//! name = "credit-risk"
//! dataset = "credit"
//! task = "risk"
//! rounds = 20
//!
//! [[events]]           # participant 'Bank C' drops in aggregation round 3 before masking
//! kind = "drop"
//! institution = "Bank C"
//! job = "credit-risk"
//! round = 3
//! phase = "masked_input"
//! ```

use std::path::{Path, PathBuf};

use fedsilo_task::{DpSpec, Learning, ModelSpec, Task};
use serde::{Deserialize, Serialize};

use crate::partition::Partitioner;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load the scenario")]
    Parse(#[from] fedsilo_config::ConfigError),
    #[error("scenario {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_holdout")]
    pub holdout_fraction: f64,
    pub institutions: Institutions,
    pub datasets: Vec<DatasetSpec>,
    pub jobs: Vec<JobEntry>,
    #[serde(default)]
    pub events: Vec<EventSpec>,
    /// Train the pooled (centralised) and local-only baselines for the report.
    #[serde(default = "yes")]
    pub baselines: bool,
    /// Directory the scenario was read from (paths resolve against it).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_holdout() -> f64 {
    0.2
}
fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Institutions {
    pub count: usize,
    #[serde(default)]
    pub names: Vec<String>,
}

/// Where an institution's rows come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub name: String,
    /// A shared CSV split among the institutions by `partition`...
    #[serde(default)]
    pub csv: Option<PathBuf>,
    /// ...or one CSV per institution, in institution order...
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// ...or synthetic retail-bank customers.
    #[serde(default)]
    pub synthetic: Option<SyntheticSpec>,
    /// Schema of the CSV(s); synthetic data brings its own.
    #[serde(default)]
    pub schema: Option<PathBuf>,
    #[serde(default = "iid")]
    pub partition: Partitioner,
}

fn iid() -> Partitioner {
    Partitioner::Iid
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSpec {
    pub rows_per_institution: usize,
    /// Multiplies rows for institution i by `size_skew[i]` (default all 1).
    #[serde(default)]
    pub size_skew: Vec<f64>,
    /// Per-institution differences in customer mix (0 = identical institutions).
    #[serde(default = "default_heterogeneity")]
    pub heterogeneity: f64,
}

fn default_heterogeneity() -> f64 {
    0.5
}

/// A training job of the scenario (a [`fedsilo_task::JobSpec`] without ids).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobEntry {
    pub name: String,
    pub dataset: String,
    #[serde(default)]
    pub task: Task,
    #[serde(default)]
    pub model: ModelSpec,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    pub rounds: u64,
    #[serde(default)]
    pub threshold: Option<usize>,
    #[serde(default)]
    pub neighbours: Option<usize>,
    #[serde(default)]
    pub min_participants: Option<usize>,
    #[serde(default)]
    pub learning: Learning,
    #[serde(default)]
    pub dp: Option<DpSpec>,
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    #[serde(default = "default_phase_timeout")]
    pub phase_timeout_ms: u64,
}

fn default_eval_every() -> u64 {
    5
}
fn default_phase_timeout() -> u64 {
    10_000
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The institution goes silent from `phase` of `round` on, for that round.
    Drop,
    /// The institution joins the job only once it reaches `round`.
    JoinLate,
    /// The institution's messages from `phase` of `round` arrive after the deadline.
    Straggle,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub kind: EventKind,
    pub institution: String,
    pub job: String,
    /// Aggregation round of the job (0-based, as numbered in the report).
    pub round: u64,
    #[serde(default = "default_phase")]
    pub phase: String,
}

fn default_phase() -> String {
    "advertise_keys".into()
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut s: Scenario = fedsilo_config::from_toml_str(&text, &path.display().to_string())?;
        s.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        s.validate().map_err(|message| ScenarioError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(s)
    }

    /// Institution names, generated when the file gives none.
    pub fn institution_names(&self) -> Vec<String> {
        if self.institutions.names.is_empty() {
            (0..self.institutions.count)
                .map(|i| format!("Institution {:02}", i + 1))
                .collect()
        } else {
            self.institutions.names.clone()
        }
    }

    /// Resolves a path in the scenario against the scenario's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn validate(&self) -> Result<(), String> {
        let n = self.institutions.count;
        if n < 2 {
            return Err(format!(
                "institutions.count: {n} — a federation needs at least 2"
            ));
        }
        if !self.institutions.names.is_empty() && self.institutions.names.len() != n {
            return Err(format!(
                "institutions.names: {} names for count = {n}",
                self.institutions.names.len()
            ));
        }
        let mut names = self.institution_names();
        names.sort();
        names.dedup();
        if names.len() != n {
            return Err("institutions.names: names must be distinct".into());
        }
        if !(self.holdout_fraction > 0.0 && self.holdout_fraction < 1.0) {
            return Err(format!(
                "holdout_fraction: {} must be between 0 and 1",
                self.holdout_fraction
            ));
        }
        for d in &self.datasets {
            let sources = d.csv.is_some() as usize
                + (!d.files.is_empty()) as usize
                + d.synthetic.is_some() as usize;
            if sources != 1 {
                return Err(format!(
                    "datasets '{}': give exactly one of csv, files or synthetic",
                    d.name
                ));
            }
            if !d.files.is_empty() && d.files.len() != n {
                return Err(format!(
                    "datasets '{}': {} files for {n} institutions",
                    d.name,
                    d.files.len()
                ));
            }
            if d.synthetic.is_none() && d.schema.is_none() {
                return Err(format!(
                    "datasets '{}': schema is required for CSV data",
                    d.name
                ));
            }
        }
        if self.jobs.is_empty() {
            return Err("jobs: the scenario trains nothing".into());
        }
        for j in &self.jobs {
            if !self.datasets.iter().any(|d| d.name == j.dataset) {
                return Err(format!(
                    "jobs '{}': dataset '{}' is not defined",
                    j.name, j.dataset
                ));
            }
        }
        for e in &self.events {
            if !self.institution_names().contains(&e.institution) {
                return Err(format!("events: unknown institution '{}'", e.institution));
            }
            if !self.jobs.iter().any(|j| j.name == e.job) {
                return Err(format!("events: unknown job '{}'", e.job));
            }
            if crate::memory::parse_phase(&e.phase).is_none() {
                return Err(format!(
                    "events: phase '{}' is not one of advertise_keys, share_keys, masked_input, consistency_check, unmask",
                    e.phase
                ));
            }
        }
        Ok(())
    }
}
