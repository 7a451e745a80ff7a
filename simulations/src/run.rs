//! Runs a scenario end to end and assembles the regulator's report.
//!
//! The federation itself runs on the real coordinator and participant code, in memory
//! ([`crate::memory`]) or over gRPC ([`crate::grpc`]), on the data [`crate::federation`]
//! prepared. The baselines no real coordinator could compute come from
//! [`crate::baselines`]. This module only puts the pieces together: the report, the audit
//! log and the model files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fedsilo_coordinator::audit::{AuditError, AuditLog, AuditRecord};
use fedsilo_coordinator::engine::{JobRecord, JobState, RoundSummary};
use fedsilo_ml::metrics::ScoreHistogram;
use fedsilo_task::{ModelParams, ModelSpec};

use crate::baselines::{auc_on, BaselineError, Baselines};
use crate::federation::{self, Federation, FederationError};
use crate::memory::SimError;
use crate::report::{
    CurvePoint, DpReport, DropEvent, InstitutionComparison, InstitutionSummary, JobOutcome,
    Metrics, ModelReport, PrivacyReport, Report, ReportError, RoundReport, ScenarioSummary, Totals,
};
use crate::scenario::Scenario;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Federation(#[from] FederationError),
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error("gRPC transport")]
    Grpc(#[from] crate::grpc::GrpcError),
    #[error(
        "the scenario has PSI jobs ({0}); the gRPC transport does not run them yet: use the \
         in-memory transport (tests/psi.rs runs PSI over gRPC with the real binary)"
    )]
    GrpcPsi(String),
    #[error("baselines of job '{job}'")]
    Baselines {
        job: String,
        #[source]
        source: BaselineError,
    },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model of job '{job}'")]
    Artifact {
        job: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("audit log")]
    Audit(#[from] AuditError),
    #[error(transparent)]
    VerticalModel(#[from] crate::vertical_models::VerticalModelError),
    #[error(transparent)]
    Report(#[from] ReportError),
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
            let d = first_ds.and_then(|v| v.get(i));
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
    let n = fed.names.len();
    let mut models = Vec::new();
    let mut dp_report = None;
    let mut audit = crate::audit::Audit::new(s);
    for job in &s.jobs {
        let Some(rec) = records.get(&job.name) else {
            continue;
        };
        let plan = &rec.plan;
        let labels = &plan.data().labels;
        let locals = fed
            .data
            .get(&job.spec.dataset)
            .ok_or_else(|| FederationError::NoData {
                dataset: job.spec.dataset.clone(),
            })?;
        // The baselines train the job's own spec on the columns the federation used.
        let mut spec = federation::job_spec(s, job, n);
        spec.features = plan.data().features.clone();
        spec.labels = labels.clone();
        let base =
            Baselines::fit(&spec, locals, s.baselines).map_err(|source| RunError::Baselines {
                job: job.name.clone(),
                source,
            })?;
        audit.job(job, rec, &spec, locals, &fed.names, &base);
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
                Some((m, h)) => (Metrics::from(m), h.clone()),
                None => (Metrics::not_computed(), ScoreHistogram::new(10)),
            };
            let pooled_metrics = base.pooled_metrics(li).as_ref().map(Metrics::from);
            let on_own_holdout =
                |m: Option<&fedsilo_task::TrainedModel>, i: usize| match (m, locals.get(i)) {
                    (Some(m), Some(l)) => auc_on(m, &l.holdout, li),
                    _ => f64::NAN,
                };
            let comparison = fed
                .names
                .iter()
                .enumerate()
                .take(locals.len())
                .map(|(i, institution)| InstitutionComparison {
                    institution: institution.clone(),
                    local_only_auc: on_own_holdout(base.local.get(i).and_then(Option::as_ref), i),
                    federated_auc: on_own_holdout(plan.model(), i),
                    pooled_auc: on_own_holdout(base.pooled.as_ref(), i),
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
                task: format!("{:?}", job.spec.task).to_lowercase(),
                model_kind: match &job.spec.model {
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
                vertical: None,
            });
        }
        // The plan's spec: it carries the σ the job calibrated when the scenario gave none.
        if let Some((dp, spent)) = rec.plan.privacy() {
            let per_round: Vec<f64> = rounds
                .iter()
                .filter(|r| r.job_id == job.name)
                .filter_map(|r| r.epsilon)
                .collect();
            dp_report = Some(DpReport {
                mechanism: match dp.level {
                    fedsilo_task::DpLevel::Institution => {
                        "distributed discrete Gaussian under secure aggregation (RDP accountant)"
                            .into()
                    }
                    fedsilo_task::DpLevel::Record => {
                        "DP-SGD: Poisson-sampled rows, per-row clipped gradients, distributed \
                         discrete Gaussian under secure aggregation (sampled-Gaussian RDP \
                         accountant; prelude counts and moments noised and accounted)"
                            .into()
                    }
                },
                level: dp.level,
                epsilon_record: spent.record,
                epsilon_institution: spent.institution,
                sampling_rate: dp.sampling_rate,
                noise_multiplier: dp.sigma(),
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
            datasets: fed.shaped.clone(),
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
        audit: audit.finish(rounds),
        psi: Vec::new(),
    })
}

/// Appends one audit entry per PSI session, then one per round, to `path`; returns the
/// chain head.
pub fn write_audit(
    path: &Path,
    psi: &[fedsilo_coordinator::engine::PsiSummary],
    rounds: &[RoundSummary],
) -> Result<String, RunError> {
    let mut log = AuditLog::open(path)?;
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for (i, p) in psi.iter().enumerate() {
        log.append(AuditRecord::of_psi(p, t0 + i as u64))?;
    }
    let t0 = t0 + psi.len() as u64;
    for (i, r) in rounds.iter().enumerate() {
        log.append(AuditRecord::of_round(r, t0 + i as u64))?;
    }
    Ok(log.head())
}

/// Writes each alignment a party reported as that party's node would keep it, under
/// `<out>/alignments/<institution>/psi/`.
fn write_alignments(
    out_dir: &Path,
    alignments: &[(String, fedsilo_participant::psi::Alignment)],
) -> Result<(), RunError> {
    for (institution, a) in alignments {
        let dir = out_dir
            .join("alignments")
            .join(institution.replace(['/', '\\'], "_"));
        fedsilo_participant::psi::AlignmentStore::new(&dir)
            .save(a)
            .map_err(|e| RunError::Io {
                path: dir.clone(),
                source: std::io::Error::other(fedsilo_config::display_chain(&e)),
            })?;
    }
    Ok(())
}

/// The whole `fedsilo simulate` job: data, federation, baselines, audit log, report files.
pub fn run_scenario(
    s: &Scenario,
    transport: Transport,
    out_dir: &Path,
    progress: &mut dyn FnMut(&RoundSummary),
) -> Result<(Report, PathBuf, PathBuf), RunError> {
    let started = Instant::now();
    let fed = federation::prepare_data(s)?;
    let (records, rounds, psi) = match transport {
        Transport::Memory => {
            let r = crate::memory::run_all(s, &fed, progress)?;
            (r.records, r.rounds, r.psi)
        }
        Transport::Grpc if !s.psi.is_empty() => {
            let names: Vec<&str> = s.psi.iter().map(|p| p.name.as_str()).collect();
            return Err(RunError::GrpcPsi(names.join(", ")));
        }
        Transport::Grpc => {
            let (records, rounds) = crate::grpc::run(s, &fed, progress)?;
            (records, rounds, Default::default())
        }
    };
    std::fs::create_dir_all(out_dir).map_err(|source| RunError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let audit_path = out_dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&audit_path);
    let head = write_audit(&audit_path, &psi.sessions, &rounds)?;
    write_alignments(out_dir, &psi.alignments)?;
    let mut report = build_report(
        s,
        &fed,
        transport,
        &records,
        &rounds,
        head,
        started.elapsed().as_secs_f64(),
    )?;
    report.psi = crate::vertical::psi_reports(s, &fed, &psi);
    if !report.psi.is_empty() {
        if rounds.is_empty() {
            report.privacy.coordinator_saw.clear();
        }
        report.privacy.coordinator_saw.push(
            "PSI: each party's set size, each intersection size and the alignment hash, and the number and length of the sealed messages it relayed; never a customer id or a point it could open (section 7).".into(),
        );
        for p in &report.psi {
            report.jobs.push(crate::report::JobOutcome {
                name: p.name.clone(),
                finished: p.finished,
                state: p.state.clone(),
            });
        }
    }
    // Vertical models train on the PSI jobs' alignments, the coordinator relaying only.
    if !s.vertical_models.is_empty() {
        for run in crate::vertical_models::run_all(s, &fed, &psi)? {
            report.jobs.push(crate::report::JobOutcome {
                name: run.report.name.clone(),
                finished: true,
                state: "finished".into(),
            });
            report.models.push(run.report);
        }
        report.privacy.coordinator_saw.push(
            "Vertical models: it relays the parties' messages (ciphertexts under the label holder's key, masked gradients, row indices, and for logistic regression the partners' partial logits); the design seals them end to end between the two parties, so it would see only their number and length — in this simulation the relay is in memory and unsealed (each model's 'What each party learned', section 2).".into(),
        );
    }
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
            std::fs::write(&path, text).map_err(|source| RunError::Io { path, source })
        };
        let json =
            serde_json::to_string_pretty(&artifact).map_err(|source| RunError::Artifact {
                job: job.clone(),
                source,
            })?;
        write(out_dir.join(format!("model-{job}.json")), json)?;
        if let ModelParams::Scorecard { card } = &model.params {
            write(
                out_dir.join(format!("scorecard-{job}.txt")),
                card.to_table(),
            )?;
        }
    }
    let (json, html) = report.write(out_dir)?;
    Ok((report, json, html))
}
