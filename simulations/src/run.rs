//! Runs a scenario end to end and assembles the regulator's report.
//!
//! The federation itself runs on the real coordinator and participant code (in memory or over
//! gRPC). Because a simulation holds every institution's data, it can also compute what no
//! real coordinator could: the pooled (centralised) model as the upper bound, each
//! institution's local-only model, and the federated model's quality on each institution's own
//! hold-out set. Those baselines are computed here, outside the federation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use fedsilo_coordinator::audit::{AuditLog, AuditRecord};
use fedsilo_coordinator::engine::{Coordinator, JobRecord, JobState, RoundSummary};
use fedsilo_crypto::keys::IdentityKey;
use fedsilo_crypto::msg::{ParticipantId, Roster};
use fedsilo_ml::linear;
use fedsilo_ml::metrics::{auc, BinaryMetrics, ScoreHistogram};
use fedsilo_ml::table::Table;
use fedsilo_participant::data::{load_csv, Schema};
use fedsilo_participant::worker::Worker;
use fedsilo_task::{JobSpec, LocalData, ModelParams, ModelSpec, Standardizer, TrainedModel};
use ndarray::{concatenate, Axis};
use sha2::{Digest, Sha256};

use crate::memory::{parse_phase, Fault, MemoryFederation};
use crate::report::{
    CurvePoint, DpReport, DropEvent, InstitutionComparison, InstitutionSummary, JobOutcome,
    Metrics, ModelReport, PrivacyReport, Report, RoundReport, ScenarioSummary, Totals,
};
use crate::scenario::{EventKind, JobEntry, Scenario};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("dataset '{dataset}': {message}")]
    Data { dataset: String, message: String },
    #[error("job on dataset '{dataset}'")]
    Features {
        dataset: String,
        #[source]
        source: fedsilo_ml::table::UnknownFeatures,
    },
    #[error(transparent)]
    Sim(#[from] crate::memory::SimError),
    #[error("report: {0}")]
    Report(String),
    #[error("audit log: {0}")]
    Audit(String),
}

/// How the federation's messages travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Memory,
    Grpc,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Memory => "memory",
            Transport::Grpc => "grpc",
        }
    }
}

/// Every institution's data for every dataset of the scenario.
#[derive(Debug)]
pub struct Federation {
    pub names: Vec<String>,
    /// dataset name → per institution (train, hold-out)
    pub data: BTreeMap<String, Vec<LocalData>>,
}

pub fn seed_bytes(seed: u64, label: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"fedsilo-sim-seed");
    h.update(seed.to_le_bytes());
    h.update(label.as_bytes());
    h.finalize().into()
}

/// Loads or generates every dataset and splits it into institutions and hold-out sets.
pub fn prepare_data(s: &Scenario) -> Result<Federation, RunError> {
    let names = s.institution_names();
    let n = names.len();
    let mut data = BTreeMap::new();
    for d in &s.datasets {
        let err = |message: String| RunError::Data {
            dataset: d.name.clone(),
            message,
        };
        let tables: Vec<Table> = if let Some(syn) = &d.synthetic {
            (0..n)
                .map(|i| {
                    let skew = syn.size_skew.get(i).copied().unwrap_or(1.0);
                    let rows =
                        ((syn.rows_per_institution as f64) * skew).round().max(10.0) as usize;
                    crate::synth::institution_table(
                        &names[i],
                        i,
                        n,
                        rows,
                        syn.heterogeneity,
                        s.seed,
                    )
                    .map_err(|e| err(e.to_string()))
                })
                .collect::<Result<_, _>>()?
        } else {
            let schema_path = d
                .schema
                .as_ref()
                .ok_or_else(|| err("schema missing".into()))?;
            let schema =
                Schema::from_toml_file(&s.resolve(schema_path)).map_err(|e| err(e.to_string()))?;
            if let Some(csv) = &d.csv {
                let table = load_csv(&s.resolve(csv), &schema).map_err(|e| err(e.to_string()))?;
                let parts = crate::partition::partition(&table, n, &d.partition, s.seed)
                    .map_err(|e| err(e.to_string()))?;
                parts.iter().map(|rows| table.select_rows(rows)).collect()
            } else {
                d.files
                    .iter()
                    .map(|f| load_csv(&s.resolve(f), &schema).map_err(|e| err(e.to_string())))
                    .collect::<Result<_, _>>()?
            }
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
    Ok(Federation { names, data })
}

/// Resolved columns of a job: (features, labels).
pub fn job_columns(
    job: &JobEntry,
    fed: &Federation,
) -> Result<(Vec<String>, Vec<String>), RunError> {
    let first = fed
        .data
        .get(&job.dataset)
        .and_then(|v| v.first())
        .ok_or_else(|| RunError::Data {
            dataset: job.dataset.clone(),
            message: "no data".into(),
        })?;
    let features = if job.features.is_empty() {
        first.train.feature_names.clone()
    } else {
        // Raw names (`Home`) stand for all their one-hot columns (`Home=owner`, …).
        fedsilo_ml::table::expand_feature_names(&job.features, &first.train.feature_names).map_err(
            |source| RunError::Features {
                dataset: job.dataset.clone(),
                source,
            },
        )?
    };
    let labels = if job.labels.is_empty() {
        first.train.label_names.iter().take(1).cloned().collect()
    } else {
        job.labels.clone()
    };
    Ok((features, labels))
}

/// The job spec the scenario launches.
pub fn job_spec(s: &Scenario, job: &JobEntry, n: usize) -> JobSpec {
    let late = s
        .events
        .iter()
        .filter(|e| e.kind == EventKind::JoinLate && e.job == job.name)
        .count();
    JobSpec {
        job_id: job.name.clone(),
        dataset: job.dataset.clone(),
        task: job.task,
        model: job.model.clone(),
        features: job.features.clone(),
        labels: job.labels.clone(),
        rounds: job.rounds,
        min_participants: job
            .min_participants
            .unwrap_or(n.saturating_sub(late).max(2)),
        threshold: job.threshold,
        neighbours: job.neighbours,
        learning: job.learning.clone(),
        dp: job.dp.clone(),
        eval_every: job.eval_every,
        hist_bins: 1000,
        seed: s.seed,
        phase_timeout_ms: job.phase_timeout_ms,
        max_participants: (n as u32).max(1000),
        absence_patience_ms: fedsilo_task::DEFAULT_ABSENCE_PATIENCE_MS,
    }
}

/// Identity keys of the simulated institutions (deterministic for the seed).
pub fn identities(
    s: &Scenario,
    names: &[String],
) -> Result<(Vec<Arc<IdentityKey>>, Roster), RunError> {
    let mut roster = Roster::new();
    let mut keys = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let k = IdentityKey::from_seed(seed_bytes(s.seed, &format!("identity/{name}"))).map_err(
            |e| RunError::Data {
                dataset: "-".into(),
                message: format!("identity key: {e}"),
            },
        )?;
        roster.insert(i as ParticipantId, k.public_key());
        keys.push(Arc::new(k));
    }
    Ok((keys, roster))
}

/// Runs the federation in memory; returns the final job records and what was observed.
pub fn run_memory(
    s: &Scenario,
    fed: &Federation,
    progress: &mut dyn FnMut(&RoundSummary),
) -> Result<(BTreeMap<String, JobRecord>, Vec<RoundSummary>), RunError> {
    let n = fed.names.len();
    let (keys, roster) = identities(s, &fed.names)?;
    let names: BTreeMap<ParticipantId, String> = fed
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| (i as ParticipantId, n.clone()))
        .collect();
    let coordinator = Coordinator::new(roster.clone(), names, seed_bytes(s.seed, "coordinator"));
    let roster = Arc::new(roster);
    let workers: Vec<Worker> = (0..n)
        .map(|i| {
            let datasets = fed
                .data
                .iter()
                .map(|(name, v)| (name.clone(), v[i].clone()))
                .collect();
            Worker::new(
                i as ParticipantId,
                keys[i].clone(),
                roster.clone(),
                datasets,
                seed_bytes(s.seed, &format!("worker/{}", fed.names[i])),
            )
        })
        .collect();
    let faults = s
        .events
        .iter()
        .filter_map(|e| {
            Some(Fault {
                kind: e.kind,
                participant: fed.names.iter().position(|n| n == &e.institution)? as ParticipantId,
                job_id: e.job.clone(),
                round: e.round,
                phase: parse_phase(&e.phase)?,
            })
        })
        .collect();
    let mut sim = MemoryFederation::new(coordinator, workers, faults);
    for job in &s.jobs {
        let (features, labels) = job_columns(job, fed)?;
        sim.launch(job_spec(s, job, n), features, labels)?;
    }
    sim.run(progress)?;
    let mut records = BTreeMap::new();
    for (job, bytes) in &sim.observed.last_checkpoint {
        let rec: JobRecord =
            serde_json::from_slice(bytes).map_err(|e| RunError::Report(e.to_string()))?;
        records.insert(job.clone(), rec);
    }
    Ok((records, std::mem::take(&mut sim.observed.rounds)))
}

fn metrics_of(m: &BinaryMetrics) -> Metrics {
    Metrics {
        auc: m.auc,
        ks: m.ks,
        log_loss: m.log_loss,
        top_decile_lift: m.top_decile_lift,
    }
}

/// Rows of several tables stacked (same columns).
pub fn stack(tables: &[&Table]) -> Result<Table, RunError> {
    let xs: Vec<_> = tables.iter().map(|t| t.x.view()).collect();
    let ys: Vec<_> = tables.iter().map(|t| t.labels.view()).collect();
    let err = |e: ndarray::ShapeError| RunError::Report(format!("stacking tables: {e}"));
    Ok(Table {
        feature_names: tables[0].feature_names.clone(),
        x: concatenate(Axis(0), &xs).map_err(err)?,
        label_names: tables[0].label_names.clone(),
        labels: concatenate(Axis(0), &ys).map_err(err)?,
        ids: tables.iter().flat_map(|t| t.ids.iter().cloned()).collect(),
    })
}

/// Centrally trained model of the same family on `train` (pooled or one institution's), with
/// its own standardisation: the reference a federated model is compared with.
pub fn train_central(
    train: &Table,
    features: &[String],
    labels: &[String],
    model: &ModelSpec,
    learning: &fedsilo_task::Learning,
    rounds: u64,
    seed: u64,
) -> Result<TrainedModel, String> {
    let x = fedsilo_task::select_columns(train, features).map_err(|e| e.to_string())?;
    let y = fedsilo_task::select_labels(train, labels).map_err(|e| e.to_string())?;
    let mut mean = Vec::new();
    let mut std = Vec::new();
    let mut missing = Vec::new();
    for col in x.axis_iter(Axis(1)) {
        let vals: Vec<f64> = col
            .iter()
            .filter(|v| !v.is_nan())
            .map(|&v| v as f64)
            .collect();
        let n = vals.len().max(1) as f64;
        let m = vals.iter().sum::<f64>() / n;
        let var = vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
        mean.push(m);
        std.push(if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 });
        missing.push(1.0 - vals.len() as f64 / x.nrows().max(1) as f64);
    }
    let standardizer = Standardizer {
        mean,
        std,
        missing_rate: missing,
    };
    let xs = standardizer.apply(x.view()).map_err(|e| e.to_string())?;
    let pos_weight = learning.pos_weight.unwrap_or(1.0);
    let params = match model {
        ModelSpec::Gbdt(p) => ModelParams::Gbdt {
            model: fedsilo_ml::gbdt::fit_pooled(x.view(), y.column(0), p)
                .map_err(|e| e.to_string())?,
        },
        ModelSpec::Scorecard(sc) => ModelParams::Scorecard {
            card: Box::new(
                fedsilo_ml::scorecard::fit_pooled(
                    features.to_vec(),
                    x.view(),
                    y.column(0),
                    sc,
                    learning.l2,
                    pos_weight,
                )
                .map_err(|e| e.to_string())?,
            ),
        },
        ModelSpec::LogisticRegression => ModelParams::LogisticRegression {
            per_label: (0..labels.len())
                .map(|l| {
                    linear::fit_pooled(xs.view(), y.column(l), learning.l2, pos_weight)
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?,
        },
        ModelSpec::Mlp { hidden } => {
            use rand::SeedableRng;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let cfg = linear::LocalTrainConfig {
                epochs: learning.local_epochs * rounds as usize,
                learning_rate: learning.learning_rate,
                batch_size: learning.batch_size,
                l2: learning.l2,
                pos_weight,
                prox_mu: 0.0,
            };
            ModelParams::Mlp {
                per_label: (0..labels.len())
                    .map(|l| {
                        let init = fedsilo_ml::mlp::MlpParams::init(
                            fedsilo_ml::mlp::MlpSpec {
                                inputs: features.len(),
                                hidden: hidden.clone(),
                            },
                            &mut rng,
                        );
                        fedsilo_ml::mlp::mlp_local_train(
                            &init,
                            xs.view(),
                            y.column(l),
                            &cfg,
                            &mut rng,
                        )
                        .map_err(|e| e.to_string())
                    })
                    .collect::<Result<_, _>>()?,
            }
        }
    };
    Ok(TrainedModel {
        features: features.to_vec(),
        labels: labels.to_vec(),
        standardizer,
        params,
    })
}

/// AUC of `model` on `t` for label index `label` (NaN when `t` has one class only).
pub fn auc_on(model: &TrainedModel, t: &Table, label: usize) -> f64 {
    let Ok(p) = model.predict(t) else {
        return f64::NAN;
    };
    let Ok(y) = fedsilo_task::select_labels(t, &model.labels) else {
        return f64::NAN;
    };
    let scores: Vec<f64> = p.column(label).to_vec();
    let labels: Vec<f32> = y.column(label).to_vec();
    let pos = labels.iter().filter(|&&v| v > 0.5).count();
    if pos == 0 || pos == labels.len() {
        return f64::NAN;
    }
    auc(&scores, &labels)
}

/// Reads the process's peak resident memory (Linux), for the report.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Assembles the report from the finished jobs, the round summaries and the baselines.
pub fn build_report(
    s: &Scenario,
    fed: &Federation,
    transport: Transport,
    records: &BTreeMap<String, JobRecord>,
    rounds: &[RoundSummary],
    audit_head: String,
    wall_seconds: f64,
) -> Result<Report, RunError> {
    let first_ds = fed.data.values().next();
    let institutions = fed
        .names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let d = first_ds.map(|v| &v[i]);
            InstitutionSummary {
                name: name.clone(),
                rows_train: d.map(|d| d.train.n_rows()).unwrap_or(0),
                rows_holdout: d.map(|d| d.holdout.n_rows()).unwrap_or(0),
                positive_rate: d
                    .map(|d| {
                        let l = d.train.label(0);
                        l.iter().filter(|&&v| v > 0.5).count() as f64 / l.len().max(1) as f64
                    })
                    .unwrap_or(0.0),
            }
        })
        .collect();
    let mut models = Vec::new();
    let mut dp_report = None;
    for job in &s.jobs {
        let Some(rec) = records.get(&job.name) else {
            continue;
        };
        let plan = &rec.plan;
        let (features, labels) = (plan.data().features.clone(), plan.data().labels.clone());
        let locals = fed.data.get(&job.dataset).ok_or_else(|| RunError::Data {
            dataset: job.dataset.clone(),
            message: "missing".into(),
        })?;
        let trains: Vec<&Table> = locals.iter().map(|l| &l.train).collect();
        let holds: Vec<&Table> = locals.iter().map(|l| &l.holdout).collect();
        let pooled_train = stack(&trains)?;
        let pooled_hold = stack(&holds)?;
        let pooled = if s.baselines {
            train_central(
                &pooled_train,
                &features,
                &labels,
                &job.model,
                &job.learning,
                job.rounds,
                s.seed,
            )
            .ok()
        } else {
            None
        };
        let local_models: Vec<Option<TrainedModel>> = if s.baselines {
            trains
                .iter()
                .map(|t| {
                    train_central(
                        t,
                        &features,
                        &labels,
                        &job.model,
                        &job.learning,
                        job.rounds,
                        s.seed,
                    )
                    .ok()
                })
                .collect()
        } else {
            vec![None; trains.len()]
        };
        for (li, label) in labels.iter().enumerate() {
            let name = if labels.len() > 1 {
                format!("{}: {}", job.name, label)
            } else {
                job.name.clone()
            };
            let curve = plan
                .curve()
                .iter()
                .map(|c| CurvePoint {
                    round: c.round,
                    train_loss: c.train_loss,
                    holdout_auc: c.holdout.as_ref().and_then(|m| m.get(li)).map(|m| m.auc),
                })
                .collect();
            let (final_metrics, hist) = match plan.last_eval().and_then(|e| e.per_label.get(li)) {
                Some((m, h)) => (metrics_of(m), h.clone()),
                None => (
                    Metrics {
                        auc: f64::NAN,
                        ks: f64::NAN,
                        log_loss: f64::NAN,
                        top_decile_lift: f64::NAN,
                    },
                    ScoreHistogram::new(10),
                ),
            };
            let pooled_metrics = pooled.as_ref().and_then(|m| {
                let p = m.predict(&pooled_hold).ok()?;
                let y = fedsilo_task::select_labels(&pooled_hold, &labels).ok()?;
                let scores: Vec<f64> = p.column(li).to_vec();
                let ys: Vec<f32> = y.column(li).to_vec();
                Some(metrics_of(&BinaryMetrics::from_scores(&scores, &ys)))
            });
            let comparison = (0..locals.len())
                .map(|i| InstitutionComparison {
                    institution: fed.names[i].clone(),
                    local_only_auc: local_models[i]
                        .as_ref()
                        .map(|m| auc_on(m, &locals[i].holdout, li))
                        .unwrap_or(f64::NAN),
                    federated_auc: plan
                        .model()
                        .map(|m| auc_on(m, &locals[i].holdout, li))
                        .unwrap_or(f64::NAN),
                    pooled_auc: pooled
                        .as_ref()
                        .map(|m| auc_on(m, &locals[i].holdout, li))
                        .unwrap_or(f64::NAN),
                })
                .collect();
            let mut notes = Vec::new();
            if !matches!(rec.state, JobState::Finished) {
                notes.push(format!(
                    "The job did not finish ({}): the figures below are not a result.",
                    rec.state.label()
                ));
            }
            if let Some(why) = &plan.stopped_early() {
                notes.push(format!("Stopped early: {why}"));
            }
            notes.push(format!(
                "Metrics of the federated model come from score histograms ({} bins per class) summed under secure aggregation; the pooled model is trained centrally on all institutions' training rows by the simulator (a real coordinator could not).",
                plan.spec().hist_bins
            ));
            models.push(ModelReport {
                name,
                task: format!("{:?}", job.task).to_lowercase(),
                model_kind: match &job.model {
                    ModelSpec::LogisticRegression => "logistic_regression".into(),
                    ModelSpec::Mlp { hidden } => format!("mlp {hidden:?}"),
                    ModelSpec::Gbdt(p) => format!(
                        "gbdt ({} trees, depth {}, {} bins)",
                        p.n_trees, p.max_depth, p.max_bins
                    ),
                    ModelSpec::Scorecard(sc) => format!(
                        "scorecard ({} bins, IV ≥ {}, {} points at {}:1, PDO {})",
                        sc.bins, sc.min_iv, sc.base_score, sc.base_odds, sc.pdo
                    ),
                },
                curve,
                final_metrics,
                pooled_metrics,
                roc: hist.roc_curve(),
                ks_curve: hist.ks_curve(),
                gains: hist.gains_curve(),
                comparison,
                notes,
                scorecard: match plan.model().map(|m| &m.params) {
                    Some(ModelParams::Scorecard { card }) => {
                        Some(crate::report::ScorecardReport::from_card(card))
                    }
                    _ => None,
                },
            });
        }
        if let Some(dp) = &job.dp {
            let per_round: Vec<f64> = rounds
                .iter()
                .filter(|r| r.job_id == job.name)
                .filter_map(|r| r.epsilon)
                .collect();
            dp_report = Some(DpReport {
                mechanism:
                    "distributed discrete Gaussian under secure aggregation (RDP accountant)".into(),
                noise_multiplier: dp.noise_multiplier,
                clip: dp.clip,
                epsilon: rec.epsilon,
                delta: dp.delta,
                budget: dp.epsilon_budget,
                epsilon_per_round: per_round,
            });
        }
    }
    let round_reports: Vec<RoundReport> = rounds
        .iter()
        .map(|r| RoundReport {
            model: r.job_id.clone(),
            round: r.secagg_round,
            purpose: r.purpose,
            participants: r.participants.clone(),
            survivors: r.survivors.clone(),
            dropped: r
                .dropped
                .iter()
                .map(|(who, phase)| DropEvent {
                    institution: who.clone(),
                    phase: phase.clone(),
                    reason: s
                        .events
                        .iter()
                        .find(|e| {
                            &e.institution == who && e.job == r.job_id && e.round == r.secagg_round
                        })
                        .map(|e| format!("scenario event: {:?}", e.kind).to_lowercase())
                        .unwrap_or_else(|| "no answer before the phase deadline".into()),
                })
                .collect(),
            phase_ms: r.phase_ms.clone(),
            bytes_sent: r.bytes_sent.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            bytes_received: r
                .bytes_received
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            outcome: r.outcome.clone(),
        })
        .collect();
    let first = rounds.first();
    let privacy = PrivacyReport {
        threshold: first.map(|r| r.threshold).unwrap_or(0),
        neighbours: first.map(|r| r.neighbours).unwrap_or(0),
        encoding: first.map(|r| r.encoding.clone()).unwrap_or_default(),
        coordinator_saw: vec![
            "Only masked vectors: each institution's contribution was hidden by pairwise masks agreed with its neighbours and by a self-mask; a masked vector is statistically indistinguishable from uniform noise.".into(),
            "Only sums: the masks cancel or are removed only in the aggregate of at least t institutions; no single institution's counts, gradients, model update or metrics were ever revealed to it.".into(),
            "Aggregate statistics it needed: federation-wide row and label counts, feature means and standard deviations, averaged model updates, and score histograms summed over every institution's hold-out set.".into(),
            "Who took part and who dropped out of each round (the survivor sets), and message sizes and timings.".into(),
        ],
        dp: dp_report,
    };
    let jobs = s
        .jobs
        .iter()
        .map(|job| match records.get(&job.name) {
            Some(rec) => JobOutcome {
                name: job.name.clone(),
                finished: matches!(rec.state, JobState::Finished),
                state: rec.state.label(),
            },
            None => JobOutcome {
                name: job.name.clone(),
                finished: false,
                state: "never started (no checkpoint)".into(),
            },
        })
        .collect();
    let bytes_sent = rounds.iter().flat_map(|r| r.bytes_sent.values()).sum();
    let bytes_received = rounds.iter().flat_map(|r| r.bytes_received.values()).sum();
    Ok(Report {
        scenario: ScenarioSummary {
            name: s.name.clone(),
            description: s.description.clone(),
            seed: s.seed,
            transport: transport.name().into(),
            institutions,
        },
        models,
        rounds: round_reports,
        privacy,
        audit_head,
        totals: Totals {
            wall_seconds,
            rounds: rounds.len(),
            bytes_sent,
            bytes_received,
            peak_memory_bytes: peak_memory_bytes(),
        },
        jobs,
    })
}

/// Appends one audit entry per round to `path`; returns the chain head.
pub fn write_audit(path: &Path, rounds: &[RoundSummary]) -> Result<String, RunError> {
    let mut log = AuditLog::open(path).map_err(|e| RunError::Audit(e.to_string()))?;
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for (i, r) in rounds.iter().enumerate() {
        log.append(AuditRecord::of_round(r, t0 + i as u64))
            .map_err(|e| RunError::Audit(e.to_string()))?;
    }
    Ok(log.head())
}

/// The whole `fedsilo simulate` job: data, federation, baselines, audit log, report files.
pub fn run_scenario(
    s: &Scenario,
    transport: Transport,
    out_dir: &Path,
    progress: &mut dyn FnMut(&RoundSummary),
) -> Result<(Report, PathBuf, PathBuf), RunError> {
    let started = Instant::now();
    let fed = prepare_data(s)?;
    let (records, rounds) = match transport {
        Transport::Memory => run_memory(s, &fed, progress)?,
        Transport::Grpc => crate::grpc::run_grpc(s, &fed, progress)?,
    };
    std::fs::create_dir_all(out_dir)
        .map_err(|e| RunError::Report(format!("{}: {e}", out_dir.display())))?;
    let audit_path = out_dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&audit_path);
    let head = write_audit(&audit_path, &rounds)?;
    let report = build_report(
        s,
        &fed,
        transport,
        &records,
        &rounds,
        head,
        started.elapsed().as_secs_f64(),
    )?;
    // Each model as `fedsilo score` reads it (the same artifact a coordinator exports), named
    // by the round that produced it; scorecards also as a readable table.
    for (job, rec) in &records {
        let Some(model) = rec.plan.model() else {
            continue;
        };
        let round_sha256 = rounds
            .iter()
            .rev()
            .find(|r| r.job_id == rec.plan.spec().job_id && r.result.is_ok())
            .map(|r| r.aggregate_hash.clone())
            .unwrap_or_default();
        let artifact = fedsilo_task::ModelArtifact::new(&rec.plan, model, round_sha256);
        let write = |path: PathBuf, text: String| {
            std::fs::write(&path, text)
                .map_err(|e| RunError::Report(format!("{}: {e}", path.display())))
        };
        let json =
            serde_json::to_string_pretty(&artifact).map_err(|e| RunError::Report(e.to_string()))?;
        write(out_dir.join(format!("model-{job}.json")), json)?;
        if let ModelParams::Scorecard { card } = &model.params {
            write(
                out_dir.join(format!("scorecard-{job}.txt")),
                card.to_table(),
            )?;
        }
    }
    let (json, html) = report
        .write(out_dir)
        .map_err(|e| RunError::Report(e.to_string()))?;
    Ok((report, json, html))
}
