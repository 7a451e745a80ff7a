//! The federation a scenario describes, prepared once for either transport: every
//! institution's data (train and hold-out), the job specs it launches with their resolved
//! columns, and the seeds every random choice of the run derives from.
//!
//! Both transports ([`crate::memory`], [`crate::grpc`]) and the baselines
//! ([`crate::baselines`]) read what is prepared here, so they run on the same rows and the
//! same specs.

use std::collections::BTreeMap;
use std::sync::Arc;

use fedsilo_crypto::keys::{IdentityKey, KeyError};
use fedsilo_crypto::msg::{ParticipantId, Roster};
use fedsilo_ml::table::{Table, UnknownFeatures};
use fedsilo_participant::data::{derive_table, load_file, DataError, LabelRule, Schema};
use fedsilo_task::{JobSpec, LocalData};
use sha2::{Digest, Sha256};

use crate::partition::PartitionError;
use crate::report::{DatasetSummary, DerivedColumn};
use crate::scenario::{EventKind, JobEntry, Scenario};
use crate::synth::SynthError;
use crate::vertical::{VerticalData, VerticalError};

/// Why the scenario's federation could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("dataset '{dataset}': synthetic data")]
    Synth {
        dataset: String,
        #[source]
        source: SynthError,
    },
    #[error("dataset '{dataset}': schema missing")]
    SchemaMissing { dataset: String },
    #[error("dataset '{dataset}'")]
    Data {
        dataset: String,
        #[source]
        source: Box<DataError>,
    },
    #[error("dataset '{dataset}': partition")]
    Partition {
        dataset: String,
        #[source]
        source: PartitionError,
    },
    #[error("dataset '{dataset}': no data")]
    NoData { dataset: String },
    #[error("job on dataset '{dataset}'")]
    Features {
        dataset: String,
        #[source]
        source: UnknownFeatures,
    },
    #[error("dataset '{dataset}': vertical split")]
    Vertical {
        dataset: String,
        #[source]
        source: VerticalError,
    },
    #[error("identity key of '{institution}'")]
    Identity {
        institution: String,
        #[source]
        source: KeyError,
    },
}

/// Every institution's data for every dataset of the scenario.
#[derive(Debug)]
pub struct Federation {
    pub names: Vec<String>,
    /// dataset name → per institution (train, hold-out)
    pub data: BTreeMap<String, Vec<LocalData>>,
    /// The datasets with a cohort, derived columns or derived labels: what each institution
    /// kept and computed.
    pub shaped: Vec<DatasetSummary>,
    /// Vertical datasets: every party's columns over its share of the customers.
    pub vertical: BTreeMap<String, VerticalData>,
}

impl Federation {
    /// Institution `i`'s (train, hold-out) for every dataset, as its worker holds them.
    pub fn datasets_of(&self, i: usize) -> BTreeMap<String, LocalData> {
        self.data
            .iter()
            .filter_map(|(name, v)| Some((name.clone(), v.get(i)?.clone())))
            .collect()
    }
}

/// The 32-byte seed of one random choice of the run: SHA-256 of the scenario seed and a
/// label naming the choice (`coordinator`, `worker/<name>`, `identity/<name>`, …).
pub fn seed_bytes(seed: u64, label: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"fedsilo-sim-seed");
    h.update(seed.to_le_bytes());
    h.update(label.as_bytes());
    h.finalize().into()
}

/// The coordinator's engine seed (graph seeds, assigned job ids), the same for both
/// transports.
pub fn coordinator_seed(s: &Scenario) -> [u8; 32] {
    seed_bytes(s.seed, "coordinator")
}

/// Loads or generates every dataset and splits it into institutions and hold-out sets.
pub fn prepare_data(s: &Scenario) -> Result<Federation, FederationError> {
    let names = s.institution_names();
    let n = names.len();
    let mut data = BTreeMap::new();
    let mut shaped = Vec::new();
    let mut vertical = BTreeMap::new();
    for d in &s.datasets {
        let dataset = || d.name.clone();
        let data_err = |source| FederationError::Data {
            dataset: dataset(),
            source: Box::new(source),
        };
        if let (Some(v), Some(csv)) = (&d.vertical, &d.csv) {
            let schema_path = d
                .schema
                .as_ref()
                .ok_or_else(|| FederationError::SchemaMissing { dataset: dataset() })?;
            let schema = Schema::from_toml_file(&s.resolve(schema_path)).map_err(data_err)?;
            if schema.has_expressions() {
                return Err(FederationError::Vertical {
                    dataset: dataset(),
                    source: VerticalError::Invalid(
                        "a vertical dataset's schema may not have a cohort or derived columns \
                         or labels yet"
                            .into(),
                    ),
                });
            }
            let table = load_file(&s.resolve(csv), &schema).map_err(data_err)?;
            let raw: Vec<String> = schema.features.iter().map(|f| f.name.clone()).collect();
            let split = crate::vertical::split(&d.name, v, &table, &raw, &names, s.seed).map_err(
                |source| FederationError::Vertical {
                    dataset: dataset(),
                    source,
                },
            )?;
            vertical.insert(d.name.clone(), split);
            continue;
        }
        // The dataset's schema, and the tables as read (before its expressions).
        let (schema, tables): (Schema, Vec<Table>) = if let Some(syn) = &d.synthetic {
            let schema = Schema {
                derive: syn.derive.clone(),
                cohort: syn.cohort.clone(),
                ..crate::synth::synth_schema()
            };
            schema
                .validate(&format!("datasets '{}'.synthetic", d.name))
                .map_err(data_err)?;
            let tables = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let skew = syn.size_skew.get(i).copied().unwrap_or(1.0);
                    let rows =
                        ((syn.rows_per_institution as f64) * skew).round().max(10.0) as usize;
                    crate::synth::institution_table(name, i, n, rows, syn.heterogeneity, s.seed)
                        .map_err(|source| FederationError::Synth {
                            dataset: dataset(),
                            source,
                        })
                })
                .collect::<Result<_, _>>()?;
            (schema, tables)
        } else {
            let schema_path = d
                .schema
                .as_ref()
                .ok_or_else(|| FederationError::SchemaMissing { dataset: dataset() })?;
            let schema = Schema::from_toml_file(&s.resolve(schema_path)).map_err(data_err)?;
            let read = schema.without_expressions();
            let tables = if let Some(csv) = &d.csv {
                let table = load_file(&s.resolve(csv), &read).map_err(data_err)?;
                let parts = crate::partition::partition(&table, n, &d.partition, s.seed).map_err(
                    |source| FederationError::Partition {
                        dataset: dataset(),
                        source,
                    },
                )?;
                parts.iter().map(|rows| table.select_rows(rows)).collect()
            } else {
                d.files
                    .iter()
                    .map(|f| load_file(&s.resolve(f), &read).map_err(data_err))
                    .collect::<Result<_, _>>()?
            };
            (schema, tables)
        };
        // Each institution applies the schema's cohort and derived columns to its own rows.
        let tables = if schema.has_expressions() {
            let mut summary = DatasetSummary {
                name: d.name.clone(),
                cohort: schema.cohort.clone(),
                derived: schema
                    .derive
                    .iter()
                    .map(|(name, expr)| DerivedColumn {
                        name: name.clone(),
                        expr: expr.clone(),
                    })
                    .collect(),
                derived_labels: schema
                    .labels
                    .iter()
                    .filter_map(|l| match &l.rule {
                        LabelRule::Derive(expr) => Some(DerivedColumn {
                            name: l.column.clone(),
                            expr: expr.clone(),
                        }),
                        LabelRule::Positive(_) => None,
                    })
                    .collect(),
                rows_read: Vec::with_capacity(n),
                rows_kept: Vec::with_capacity(n),
            };
            let mut out = Vec::with_capacity(tables.len());
            for (t, name) in tables.into_iter().zip(&names) {
                let (t, count) = derive_table(&schema, t).map_err(data_err)?;
                if count.kept == 0 {
                    return Err(data_err(DataError::EmptyCohort {
                        source_name: name.clone(),
                        cohort: schema.cohort.clone().unwrap_or_default(),
                        rows: count.read,
                    }));
                }
                tracing::info!(dataset = %d.name, institution = %name, read = count.read, kept = count.kept, "cohort and derived columns");
                summary.rows_read.push(count.read);
                summary.rows_kept.push(count.kept);
                out.push(t);
            }
            shaped.push(summary);
            out
        } else {
            tables
        };
        let locals = tables
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let (train, holdout) =
                    t.split_holdout(s.holdout_fraction, s.seed.wrapping_add(i as u64));
                LocalData { train, holdout }
            })
            .collect();
        data.insert(d.name.clone(), locals);
    }
    Ok(Federation {
        names,
        data,
        shaped,
        vertical,
    })
}

/// Resolved columns of a job: (features, labels).
pub fn job_columns(
    job: &JobEntry,
    fed: &Federation,
) -> Result<(Vec<String>, Vec<String>), FederationError> {
    let dataset = &job.spec.dataset;
    let first = fed
        .data
        .get(dataset)
        .and_then(|v| v.first())
        .ok_or_else(|| FederationError::NoData {
            dataset: dataset.clone(),
        })?;
    let features = if job.spec.features.is_empty() {
        first.train.feature_names.clone()
    } else {
        // Raw names (`Home`) stand for all their one-hot columns (`Home=owner`, …).
        fedsilo_ml::table::expand_feature_names(&job.spec.features, &first.train.feature_names)
            .map_err(|source| FederationError::Features {
                dataset: dataset.clone(),
                source,
            })?
    };
    let labels = if job.spec.labels.is_empty() {
        first.train.label_names.iter().take(1).cloned().collect()
    } else {
        job.spec.labels.clone()
    };
    Ok((features, labels))
}

/// The job spec the scenario launches for `job` in a federation of `n`: the entry's spec
/// with the scenario's seed, `min_participants` (default: every institution that does not
/// join late, at least 2) and `max_participants` (`n`, at least 1000).
pub fn job_spec(s: &Scenario, job: &JobEntry, n: usize) -> JobSpec {
    let late = s
        .events
        .iter()
        .filter(|e| e.kind == EventKind::JoinLate && e.job == job.name)
        .count();
    let mut spec = job.spec.clone();
    spec.job_id = job.name.clone();
    spec.seed = s.seed;
    spec.min_participants = job
        .min_participants
        .unwrap_or(n.saturating_sub(late).max(2));
    spec.max_participants = (n as u32).max(1000);
    spec
}

/// Identity keys of the simulated institutions (deterministic for the seed).
pub fn identities(
    s: &Scenario,
    names: &[String],
) -> Result<(Vec<Arc<IdentityKey>>, Roster), FederationError> {
    let mut roster = Roster::new();
    let mut keys = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let k = IdentityKey::from_seed(seed_bytes(s.seed, &format!("identity/{name}"))).map_err(
            |source| FederationError::Identity {
                institution: name.clone(),
                source,
            },
        )?;
        roster.insert(i as ParticipantId, k.public_key());
        keys.push(Arc::new(k));
    }
    Ok((keys, roster))
}
