//! What operators see of a job: its lifecycle state and status line.

use fedsilo_task::job::JobState as WireJobState;
use fedsilo_task::job::LabelMetrics;
use fedsilo_task::DpLevel;
use serde::{Deserialize, Serialize};

use super::Coordinator;

/// Lifecycle of a job, as reported to operators (and checkpointed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Fewer than `min_participants` present to start the next round.
    Waiting,
    Running,
    Finished,
    Failed(String),
    /// Stopped by an operator (who and why); [`Coordinator::resume`] brings it back.
    Cancelled(String),
}

impl JobState {
    /// The state and its reason in one line, for logs.
    pub fn label(&self) -> String {
        match self.reason() {
            Some(why) => format!("{}: {why}", self.kind()),
            None => self.kind().to_string(),
        }
    }

    /// The state as the wire carries it (its reason goes in `detail`).
    pub fn kind(&self) -> WireJobState {
        match self {
            JobState::Waiting => WireJobState::Waiting,
            JobState::Running => WireJobState::Running,
            JobState::Finished => WireJobState::Finished,
            JobState::Failed(_) => WireJobState::Failed,
            JobState::Cancelled(_) => WireJobState::Cancelled,
        }
    }

    /// Why the job failed or was cancelled.
    pub fn reason(&self) -> Option<&str> {
        match self {
            JobState::Failed(why) | JobState::Cancelled(why) => Some(why),
            _ => None,
        }
    }

    /// Finished, failed or cancelled: no round starts unless the job is resumed.
    pub fn is_terminal(&self) -> bool {
        self.kind().is_terminal()
    }
}

/// What an operator sees of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job_id: String,
    pub state: JobState,
    pub step: u64,
    pub rounds_done: u64,
    pub total_rounds: u64,
    pub participants: Vec<String>,
    /// Latest hold-out metrics per label (AUC, KS, log-loss, lift).
    pub metrics: Vec<LabelMetrics>,
    /// Every evaluation so far, oldest first (the evaluation curve; from the persisted plan,
    /// so it survives a coordinator restart). Not on the wire: the dashboard reads it.
    pub evaluations: Vec<LabelMetrics>,
    /// The same, as JSON (`JobStatus.metrics_json`, kept on the wire for one version).
    pub metrics_json: String,
    /// ε spent at the level the job's DP protects (0 without DP).
    pub epsilon: f64,
    pub epsilon_budget: f64,
    /// With DP: whom it protects, and ε at each level (∞: nothing promised at that level).
    pub privacy: Option<Privacy>,
    pub detail: String,
}

/// A DP job's guarantee so far, at both levels, at the spec's δ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Privacy {
    pub level: DpLevel,
    pub epsilon_record: f64,
    pub epsilon_institution: f64,
    pub delta: f64,
    /// The noise multiplier in force (calibrated from the budget when the spec gave none).
    pub noise_multiplier: f64,
}

impl Coordinator {
    pub fn list_jobs(&self) -> Vec<JobStatus> {
        self.jobs
            .keys()
            .chain(self.psi_jobs.keys())
            .filter_map(|id| self.job_status(id))
            .collect()
    }

    /// Ages in `detail` ("last seen 2 min ago") are relative to the engine's clock.
    pub fn job_status(&self, job_id: &str) -> Option<JobStatus> {
        let Some(job) = self.jobs.get(job_id) else {
            return self.psi_status(job_id);
        };
        let plan = &job.record.plan;
        let now = self.clock;
        let metrics = plan.label_metrics();
        let metrics_json = serde_json::to_string(&metrics).unwrap_or_else(|_| "[]".into());
        Some(JobStatus {
            job_id: job_id.to_string(),
            state: job.record.state.clone(),
            step: plan.step_index(),
            rounds_done: plan.rounds_done(),
            total_rounds: plan.spec().rounds,
            participants: job.joined.iter().map(|&p| self.name(p)).collect(),
            metrics,
            evaluations: plan.label_curve(),
            metrics_json,
            epsilon: job.record.epsilon,
            epsilon_budget: plan
                .spec()
                .dp
                .as_ref()
                .and_then(|d| d.epsilon_budget)
                .unwrap_or(0.0),
            privacy: plan.privacy().map(|(dp, spent)| Privacy {
                level: dp.level,
                epsilon_record: spent.record,
                epsilon_institution: spent.institution,
                delta: dp.delta,
                noise_multiplier: dp.sigma(),
            }),
            detail: match (&job.record.state, now) {
                (JobState::Failed(why) | JobState::Cancelled(why), _) => why.clone(),
                (JobState::Waiting, Some(now)) => self.waiting_text(job, now, true),
                (JobState::Running, Some(now)) => {
                    let away = self.away(job, now);
                    if away.is_empty() {
                        String::new()
                    } else {
                        format!("running without {}", self.away_text(&away))
                    }
                }
                _ => plan.stopped_early().unwrap_or_default().to_string(),
            },
        })
    }
}

/// A round in progress and the phase its server is collecting: what the service's
/// per-round tracing spans follow (read-only; the engine keeps no clock for it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveRoundView {
    pub job_id: String,
    pub step: u64,
    pub secagg_round: u64,
    pub purpose: fedsilo_task::Purpose,
    /// `None` once the server has all it needs (the round closes in the same input).
    pub phase: Option<fedsilo_crypto::msg::Phase>,
}

impl Coordinator {
    /// Every job's round in progress, in job id order.
    pub fn active_rounds(&self) -> Vec<ActiveRoundView> {
        self.jobs
            .iter()
            .filter_map(|(id, job)| {
                let r = job.round.as_ref()?;
                Some(ActiveRoundView {
                    job_id: id.clone(),
                    step: r.step.index,
                    secagg_round: r.config.ctx.round,
                    purpose: r.step.instruction.purpose(),
                    phase: r.phase,
                })
            })
            .collect()
    }
}
