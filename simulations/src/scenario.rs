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

use fedsilo_crypto::msg::Phase;
use fedsilo_task::JobSpec;
use serde::{Deserialize, Deserializer, Serialize};

use crate::partition::Partitioner;

mod job;
mod vertical;

pub use vertical::{PsiEntry, VerticalModelEntry, VerticalModelKind, VerticalParty, VerticalSpec};

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

#[derive(Clone, Debug, PartialEq, Deserialize)]
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
    #[serde(default)]
    pub jobs: Vec<JobEntry>,
    /// PSI jobs aligning the parties of vertical datasets (module `vertical`).
    #[serde(default)]
    pub psi: Vec<PsiEntry>,
    /// Vertical models trained on a PSI job's alignment (module `vertical`).
    #[serde(default)]
    pub vertical_models: Vec<VerticalModelEntry>,
    #[serde(default)]
    pub events: Vec<EventSpec>,
    /// Train the pooled (centralised) and local-only baselines for the report.
    #[serde(default = "yes")]
    pub baselines: bool,
    /// Attack the released models (membership inference) for the report's privacy audit.
    #[serde(default = "yes")]
    pub audit: bool,
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
    /// ...or one CSV per institution, in institution order (here and in `csv`, a file named
    /// `*.parquet` is read as Parquet)...
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
    /// Split the CSV's columns (not its rows) between institutions: vertical federation.
    #[serde(default)]
    pub vertical: Option<VerticalSpec>,
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
    /// Derived columns over the generator's columns, as a schema's `derive`
    /// (`{ assets = "current_balance + fixed_deposit_balance + wealth_balance" }`).
    #[serde(default)]
    pub derive: std::collections::BTreeMap<String, String>,
    /// The rows each institution keeps, as a schema's `cohort` (`"maa > 200000"`).
    #[serde(default)]
    pub cohort: Option<String>,
}

fn default_heterogeneity() -> f64 {
    0.5
}

/// A training job of the scenario: a [`JobSpec`] under a name.
///
/// Its table holds the name and the keys of a job spec, with the scenario's defaults where
/// they differ: `phase_timeout_ms` defaults to 10 s, and `min_participants`, when not given,
/// to every institution that is not a late joiner of the job (at least 2). The keys the
/// scenario decides itself are refused: `job_id` (it is `name`), `seed` (the scenario's),
/// `max_participants` (the institution count, at least 1000). Every other key is refused
/// by name with the nearest valid one, as `deny_unknown_fields` would (module `job`).
#[derive(Clone, Debug, PartialEq)]
pub struct JobEntry {
    /// The job's name, also its job id.
    pub name: String,
    /// The spec as written (`job_id` = `name`, `phase_timeout_ms` with the scenario's
    /// default); [`crate::federation::job_spec`] completes it for a launch.
    pub spec: JobSpec,
    /// `min_participants` as written; `None` = every institution that does not join late.
    pub min_participants: Option<usize>,
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

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub kind: EventKind,
    pub institution: String,
    pub job: String,
    /// Aggregation round of the job (0-based, as numbered in the report).
    pub round: u64,
    /// The phase from which the fault applies ([`Phase::name`]; default `advertise_keys`).
    #[serde(default = "default_phase", deserialize_with = "phase")]
    pub phase: Phase,
}

fn default_phase() -> Phase {
    Phase::AdvertiseKeys
}

/// A phase by its name; a typo is refused naming the valid ones.
fn phase<'de, D: Deserializer<'de>>(d: D) -> Result<Phase, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
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

    /// The PSI job spec the scenario launches for `p` (active: the label holder unless
    /// named; passive: every other party unless named).
    pub fn psi_spec(&self, p: &PsiEntry) -> fedsilo_task::psi::PsiJobSpec {
        let v = self
            .datasets
            .iter()
            .find(|d| d.name == p.dataset)
            .and_then(|d| d.vertical.as_ref());
        let active = p
            .active
            .clone()
            .or_else(|| {
                v.and_then(|v| v.label_holder())
                    .map(|h| h.institution.clone())
            })
            .unwrap_or_default();
        let passive = if p.passive.is_empty() {
            v.map(|v| {
                v.parties
                    .iter()
                    .map(|q| q.institution.clone())
                    .filter(|n| *n != active)
                    .collect()
            })
            .unwrap_or_default()
        } else {
            p.passive.clone()
        };
        fedsilo_task::psi::PsiJobSpec {
            kind: fedsilo_task::psi::PSI_KIND.into(),
            job_id: p.name.clone(),
            dataset: p.dataset.clone(),
            active,
            passive,
            id_column: v.map(|v| v.id_column.clone()).unwrap_or_default(),
            id_format: p.id_format,
            delivery: p.delivery,
            duplicates: p.duplicates,
            chunk_len: p.chunk_len,
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
        for d in &self.datasets {
            if d.vertical.is_some() && (d.csv.is_none() || d.partition != Partitioner::Iid) {
                return Err(format!(
                    "datasets '{}': a vertical split reads one csv and takes no partition",
                    d.name
                ));
            }
        }
        if self.jobs.is_empty() && self.psi.is_empty() {
            return Err(
                "jobs: the scenario trains nothing (and aligns nothing: no [[psi]])".into(),
            );
        }
        for j in &self.jobs {
            let Some(d) = self.datasets.iter().find(|d| d.name == j.spec.dataset) else {
                return Err(format!(
                    "jobs '{}': dataset '{}' is not defined",
                    j.name, j.spec.dataset
                ));
            };
            if d.vertical.is_some() {
                return Err(format!(
                    "jobs '{}': dataset '{}' is split vertically; its parties are aligned by \
                     [[psi]] jobs (training on vertical data is not available yet)",
                    j.name, j.spec.dataset
                ));
            }
        }
        for (i, p) in self.psi.iter().enumerate() {
            let at = |what: String| format!("psi '{}': {what}", p.name);
            if self.jobs.iter().any(|j| j.name == p.name)
                || self.psi[..i].iter().any(|q| q.name == p.name)
            {
                return Err(at("the name is used by another job".into()));
            }
            let Some(v) = self
                .datasets
                .iter()
                .find(|d| d.name == p.dataset)
                .and_then(|d| d.vertical.as_ref())
            else {
                return Err(at(format!(
                    "dataset '{}' is not a vertical dataset of the scenario",
                    p.dataset
                )));
            };
            for name in p.active.iter().chain(&p.passive) {
                if !v.parties.iter().any(|q| &q.institution == name) {
                    return Err(at(format!(
                        "'{name}' holds no part of dataset '{}'",
                        p.dataset
                    )));
                }
            }
            self.psi_spec(p).validate().map_err(|e| at(e.to_string()))?;
        }
        for (i, m) in self.vertical_models.iter().enumerate() {
            let at = |what: String| format!("vertical_models '{}': {what}", m.name);
            if self.jobs.iter().any(|j| j.name == m.name)
                || self.psi.iter().any(|p| p.name == m.name)
                || self.vertical_models[..i].iter().any(|q| q.name == m.name)
            {
                return Err(at("the name is used by another job or model".into()));
            }
            let Some(p) = self.psi.iter().find(|p| p.name == m.psi) else {
                let names: Vec<&str> = self.psi.iter().map(|p| p.name.as_str()).collect();
                return Err(at(format!(
                    "psi: '{}' is not a [[psi]] job of the scenario ({})",
                    m.psi,
                    names.join(", ")
                )));
            };
            if p.delivery != fedsilo_task::psi::DeliveryName::Both {
                return Err(at(format!(
                    "psi: job '{}' delivers the alignment to the active party only; a passive \
                     party needs its aligned rows to train, so set delivery = \"both\"",
                    p.name
                )));
            }
            m.validate()?;
        }
        for e in &self.events {
            if !self.institution_names().contains(&e.institution) {
                return Err(format!("events: unknown institution '{}'", e.institution));
            }
            if !self.jobs.iter().any(|j| j.name == e.job) {
                return Err(format!("events: unknown job '{}'", e.job));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_phase_is_read_by_name_and_a_typo_lists_the_valid_ones() {
        let text = |phase: &str| {
            format!(
                "name = \"t\"\n[institutions]\ncount = 3\n[[datasets]]\nname = \"d\"\n\
                 synthetic = {{ rows_per_institution = 50 }}\n[[jobs]]\nname = \"j\"\n\
                 dataset = \"d\"\nrounds = 2\n[[events]]\nkind = \"drop\"\n\
                 institution = \"Institution 01\"\njob = \"j\"\nround = 1\n{phase}"
            )
        };
        let s: Scenario = fedsilo_config::from_toml_str(&text(""), "s.toml").unwrap();
        assert_eq!(s.events[0].phase, Phase::AdvertiseKeys);
        let s: Scenario =
            fedsilo_config::from_toml_str(&text("phase = \"unmask\"\n"), "s.toml").unwrap();
        assert_eq!(s.events[0].phase, Phase::Unmask);
        let e = fedsilo_config::from_toml_str::<Scenario>(&text("phase = \"masked\"\n"), "s.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("s.toml:16:"), "{e}");
        assert!(e.contains("events[0].phase"), "{e}");
        assert!(
            e.contains("unknown phase `masked`: expected one of advertise_keys, share_keys"),
            "{e}"
        );
    }
}
