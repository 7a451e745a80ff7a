//! The job spec (`fedsilo_task::JobSpec`) and the operator's launch request.
//!
//! Rust → wire sets every field. Wire → Rust reads an absent field as TOML reads an absent
//! key: the field's default, or — for a key the TOML form requires (`dataset`, `rounds`, a
//! server optimiser's and a DP spec's parameters) — a refusal naming the field. Domains
//! (`rounds` in 1..=100000, `max_depth` in 1..=16, …) are not checked here:
//! `JobSpec::validate` checks a typed spec exactly as it checks a TOML one.

use fedsilo_ml::gbdt::GbdtParams;
use fedsilo_ml::optim::ServerOptimizer;
use fedsilo_ml::scorecard::ScorecardSpec;
use fedsilo_task::{DpLevel, DpSpec, JobSpec, Learning, ModelSpec, Task};

use super::{required, usize_of, Problem, WireError};
use crate::pb;

/// An optional count: absent = `default`, present = converted (it must fit a `usize`).
fn count_or(v: Option<u64>, field: &str, default: usize) -> Result<usize, WireError> {
    v.map_or(Ok(default), |v| usize_of(v, field))
}

/// An optional sub-message: absent = `default`, present = converted under `field`.
fn sub_or<P, R>(v: Option<P>, field: &str, default: impl FnOnce() -> R) -> Result<R, WireError>
where
    R: TryFrom<P, Error = WireError>,
{
    v.map_or_else(
        || Ok(default()),
        |p| R::try_from(p).map_err(|e| e.within(field)),
    )
}

fn task_to(t: Task) -> pb::Task {
    match t {
        Task::Risk => pb::Task::Risk,
        Task::Propensity => pb::Task::Propensity,
        Task::Churn => pb::Task::Churn,
    }
}

fn task_from(v: i32, field: &str) -> Result<Task, WireError> {
    match pb::Task::try_from(v) {
        Ok(pb::Task::Risk) => Ok(Task::Risk),
        Ok(pb::Task::Propensity) => Ok(Task::Propensity),
        Ok(pb::Task::Churn) => Ok(Task::Churn),
        Ok(pb::Task::Unspecified) => Err(WireError::at(field, Problem::Unspecified)),
        Err(_) => Err(WireError::at(field, Problem::UnknownEnum(v))),
    }
}

impl From<DpLevel> for pb::DpLevel {
    fn from(l: DpLevel) -> Self {
        match l {
            DpLevel::Institution => pb::DpLevel::Institution,
            DpLevel::Record => pb::DpLevel::Record,
        }
    }
}

/// UNSPECIFIED (the default of an absent field) is the default level, institution.
fn dp_level_from(v: i32, field: &str) -> Result<DpLevel, WireError> {
    match pb::DpLevel::try_from(v) {
        Ok(pb::DpLevel::Institution | pb::DpLevel::Unspecified) => Ok(DpLevel::Institution),
        Ok(pb::DpLevel::Record) => Ok(DpLevel::Record),
        Err(_) => Err(WireError::at(field, Problem::UnknownEnum(v))),
    }
}

// ---------------------------------------------------------------------------
// Rust → wire
// ---------------------------------------------------------------------------

impl From<&JobSpec> for pb::JobSpec {
    fn from(s: &JobSpec) -> Self {
        pb::JobSpec {
            job_id: s.job_id.clone(),
            dataset: Some(s.dataset.clone()),
            task: Some(task_to(s.task) as i32),
            model: Some((&s.model).into()),
            features: s.features.clone(),
            labels: s.labels.clone(),
            rounds: Some(s.rounds),
            min_participants: Some(s.min_participants as u64),
            threshold: s.threshold.map(|t| t as u64),
            neighbours: s.neighbours.map(|k| k as u64),
            learning: Some((&s.learning).into()),
            dp: s.dp.as_ref().map(Into::into),
            eval_every: Some(s.eval_every),
            hist_bins: Some(s.hist_bins as u64),
            seed: Some(s.seed),
            phase_timeout_ms: Some(s.phase_timeout_ms),
            max_participants: Some(s.max_participants),
            absence_patience_ms: Some(s.absence_patience_ms),
        }
    }
}

impl From<&ModelSpec> for pb::ModelSpec {
    fn from(m: &ModelSpec) -> Self {
        use pb::model_spec::Body;
        let body = match m {
            ModelSpec::LogisticRegression => Body::LogisticRegression(pb::LogisticRegression {}),
            ModelSpec::Mlp { hidden } => Body::Mlp(pb::Mlp {
                hidden: hidden.iter().map(|&h| h as u64).collect(),
            }),
            ModelSpec::Gbdt(p) => Body::Gbdt(p.into()),
            ModelSpec::Scorecard(s) => Body::Scorecard(s.into()),
        };
        pb::ModelSpec { body: Some(body) }
    }
}

impl From<&GbdtParams> for pb::GbdtParams {
    fn from(p: &GbdtParams) -> Self {
        pb::GbdtParams {
            n_trees: Some(p.n_trees as u64),
            max_depth: Some(p.max_depth as u64),
            max_leaves: Some(p.max_leaves as u64),
            learning_rate: Some(p.learning_rate),
            min_child_weight: Some(p.min_child_weight),
            lambda: Some(p.lambda),
            gamma: Some(p.gamma),
            max_bins: Some(p.max_bins as u64),
            fine_bins: Some(p.fine_bins as u64),
            range_sd: Some(p.range_sd),
        }
    }
}

impl From<&ScorecardSpec> for pb::ScorecardSpec {
    fn from(s: &ScorecardSpec) -> Self {
        pb::ScorecardSpec {
            bins: Some(s.bins as u64),
            min_iv: Some(s.min_iv),
            base_score: Some(s.base_score),
            base_odds: Some(s.base_odds),
            pdo: Some(s.pdo),
            fine_bins: Some(s.fine_bins as u64),
            range_sd: Some(s.range_sd),
            group_categories: Some(s.group_categories),
        }
    }
}

impl From<&Learning> for pb::Learning {
    fn from(l: &Learning) -> Self {
        pb::Learning {
            local_epochs: Some(l.local_epochs as u64),
            learning_rate: Some(l.learning_rate),
            batch_size: Some(l.batch_size as u64),
            l2: Some(l.l2),
            pos_weight: l.pos_weight,
            prox_mu: Some(l.prox_mu),
            server_optimizer: Some((&l.server_optimizer).into()),
        }
    }
}

impl From<&ServerOptimizer> for pb::ServerOptimizer {
    fn from(o: &ServerOptimizer) -> Self {
        use pb::server_optimizer::Body;
        let adaptive = |lr: f64, beta1: f64, beta2: f64, eps: f64| pb::AdaptiveOptimizer {
            lr: Some(lr),
            beta1: Some(beta1),
            beta2: Some(beta2),
            eps: Some(eps),
        };
        let body = match *o {
            ServerOptimizer::FedAvg { lr } => Body::FedAvg(pb::FedAvg { lr: Some(lr) }),
            ServerOptimizer::FedAdam {
                lr,
                beta1,
                beta2,
                eps,
            } => Body::FedAdam(adaptive(lr, beta1, beta2, eps)),
            ServerOptimizer::FedYogi {
                lr,
                beta1,
                beta2,
                eps,
            } => Body::FedYogi(adaptive(lr, beta1, beta2, eps)),
        };
        pb::ServerOptimizer { body: Some(body) }
    }
}

impl From<&DpSpec> for pb::DpSpec {
    fn from(d: &DpSpec) -> Self {
        pb::DpSpec {
            clip: Some(d.clip),
            noise_multiplier: d.noise_multiplier,
            delta: Some(d.delta),
            epsilon_budget: d.epsilon_budget,
            level: pb::DpLevel::from(d.level) as i32,
            sampling_rate: d.sampling_rate,
            count_noise_multiplier: d.count_noise_multiplier,
        }
    }
}

// ---------------------------------------------------------------------------
// Wire → Rust
// ---------------------------------------------------------------------------

/// Absent fields take the TOML defaults, from [`JobSpec::new`] (the spec TOML reads when only
/// the required keys are given).
impl TryFrom<pb::JobSpec> for JobSpec {
    type Error = WireError;
    fn try_from(s: pb::JobSpec) -> Result<Self, WireError> {
        let d = JobSpec::new(String::new(), 0);
        Ok(JobSpec {
            job_id: s.job_id,
            dataset: required(s.dataset, "dataset")?,
            task: s.task.map_or(Ok(d.task), |t| task_from(t, "task"))?,
            model: sub_or(s.model, "model", ModelSpec::default)?,
            features: s.features,
            labels: s.labels,
            rounds: required(s.rounds, "rounds")?,
            min_participants: count_or(s.min_participants, "min_participants", d.min_participants)?,
            threshold: s.threshold.map(|t| usize_of(t, "threshold")).transpose()?,
            neighbours: s
                .neighbours
                .map(|k| usize_of(k, "neighbours"))
                .transpose()?,
            learning: sub_or(s.learning, "learning", Learning::default)?,
            dp: s
                .dp
                .map(|p| DpSpec::try_from(p).map_err(|e| e.within("dp")))
                .transpose()?,
            eval_every: s.eval_every.unwrap_or(d.eval_every),
            hist_bins: count_or(s.hist_bins, "hist_bins", d.hist_bins)?,
            seed: s.seed.unwrap_or(d.seed),
            phase_timeout_ms: s.phase_timeout_ms.unwrap_or(d.phase_timeout_ms),
            max_participants: s.max_participants.unwrap_or(d.max_participants),
            absence_patience_ms: s.absence_patience_ms.unwrap_or(d.absence_patience_ms),
        })
    }
}

impl TryFrom<pb::ModelSpec> for ModelSpec {
    type Error = WireError;
    fn try_from(m: pb::ModelSpec) -> Result<Self, WireError> {
        use pb::model_spec::Body;
        match m.body {
            None => Err(WireError::new(Problem::MissingOneof)),
            Some(Body::LogisticRegression(pb::LogisticRegression {})) => {
                Ok(ModelSpec::LogisticRegression)
            }
            Some(Body::Mlp(p)) => Ok(ModelSpec::Mlp {
                hidden: p
                    .hidden
                    .into_iter()
                    .enumerate()
                    .map(|(i, h)| usize_of(h, &format!("mlp.hidden[{i}]")))
                    .collect::<Result<_, _>>()?,
            }),
            Some(Body::Gbdt(p)) => Ok(ModelSpec::Gbdt(
                p.try_into().map_err(|e: WireError| e.within("gbdt"))?,
            )),
            Some(Body::Scorecard(s)) => Ok(ModelSpec::Scorecard(
                s.try_into().map_err(|e: WireError| e.within("scorecard"))?,
            )),
        }
    }
}

impl TryFrom<pb::GbdtParams> for GbdtParams {
    type Error = WireError;
    fn try_from(p: pb::GbdtParams) -> Result<Self, WireError> {
        let d = GbdtParams::default();
        Ok(GbdtParams {
            n_trees: count_or(p.n_trees, "n_trees", d.n_trees)?,
            max_depth: count_or(p.max_depth, "max_depth", d.max_depth)?,
            max_leaves: count_or(p.max_leaves, "max_leaves", d.max_leaves)?,
            learning_rate: p.learning_rate.unwrap_or(d.learning_rate),
            min_child_weight: p.min_child_weight.unwrap_or(d.min_child_weight),
            lambda: p.lambda.unwrap_or(d.lambda),
            gamma: p.gamma.unwrap_or(d.gamma),
            max_bins: count_or(p.max_bins, "max_bins", d.max_bins)?,
            fine_bins: count_or(p.fine_bins, "fine_bins", d.fine_bins)?,
            range_sd: p.range_sd.unwrap_or(d.range_sd),
        })
    }
}

impl TryFrom<pb::ScorecardSpec> for ScorecardSpec {
    type Error = WireError;
    fn try_from(s: pb::ScorecardSpec) -> Result<Self, WireError> {
        let d = ScorecardSpec::default();
        Ok(ScorecardSpec {
            bins: count_or(s.bins, "bins", d.bins)?,
            min_iv: s.min_iv.unwrap_or(d.min_iv),
            base_score: s.base_score.unwrap_or(d.base_score),
            base_odds: s.base_odds.unwrap_or(d.base_odds),
            pdo: s.pdo.unwrap_or(d.pdo),
            fine_bins: count_or(s.fine_bins, "fine_bins", d.fine_bins)?,
            range_sd: s.range_sd.unwrap_or(d.range_sd),
            group_categories: s.group_categories.unwrap_or(d.group_categories),
        })
    }
}

impl TryFrom<pb::Learning> for Learning {
    type Error = WireError;
    fn try_from(l: pb::Learning) -> Result<Self, WireError> {
        let d = Learning::default();
        Ok(Learning {
            local_epochs: count_or(l.local_epochs, "local_epochs", d.local_epochs)?,
            learning_rate: l.learning_rate.unwrap_or(d.learning_rate),
            batch_size: count_or(l.batch_size, "batch_size", d.batch_size)?,
            l2: l.l2.unwrap_or(d.l2),
            pos_weight: l.pos_weight,
            prox_mu: l.prox_mu.unwrap_or(d.prox_mu),
            server_optimizer: sub_or(l.server_optimizer, "server_optimizer", || {
                d.server_optimizer
            })?,
        })
    }
}

impl TryFrom<pb::ServerOptimizer> for ServerOptimizer {
    type Error = WireError;
    fn try_from(o: pb::ServerOptimizer) -> Result<Self, WireError> {
        use pb::server_optimizer::Body;
        // (lr, beta1, beta2, eps) of FedAdam/FedYogi, each required, under `arm`.
        let adaptive = |a: pb::AdaptiveOptimizer, arm: &str| {
            let field = |v: Option<f64>, name: &str| {
                v.ok_or_else(|| WireError::at(&format!("{arm}.{name}"), Problem::Missing))
            };
            Ok::<_, WireError>((
                field(a.lr, "lr")?,
                field(a.beta1, "beta1")?,
                field(a.beta2, "beta2")?,
                field(a.eps, "eps")?,
            ))
        };
        match o.body {
            None => Err(WireError::new(Problem::MissingOneof)),
            Some(Body::FedAvg(a)) => Ok(ServerOptimizer::FedAvg {
                lr: required(a.lr, "fed_avg.lr")?,
            }),
            Some(Body::FedAdam(a)) => {
                let (lr, beta1, beta2, eps) = adaptive(a, "fed_adam")?;
                Ok(ServerOptimizer::FedAdam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                })
            }
            Some(Body::FedYogi(a)) => {
                let (lr, beta1, beta2, eps) = adaptive(a, "fed_yogi")?;
                Ok(ServerOptimizer::FedYogi {
                    lr,
                    beta1,
                    beta2,
                    eps,
                })
            }
        }
    }
}

impl TryFrom<pb::DpSpec> for DpSpec {
    type Error = WireError;
    fn try_from(d: pb::DpSpec) -> Result<Self, WireError> {
        Ok(DpSpec {
            level: dp_level_from(d.level, "level")?,
            clip: required(d.clip, "clip")?,
            noise_multiplier: d.noise_multiplier,
            delta: required(d.delta, "delta")?,
            epsilon_budget: d.epsilon_budget,
            sampling_rate: d.sampling_rate,
            count_noise_multiplier: d.count_noise_multiplier,
        })
    }
}

// ---------------------------------------------------------------------------
// The launch request
// ---------------------------------------------------------------------------

/// Why a launch request carries no spec the coordinator can read.
#[derive(Debug, thiserror::Error)]
pub enum LaunchSpecError {
    /// The typed spec (or the request itself) cannot be converted; the path starts at the
    /// request (`spec.model.gbdt.max_depth`).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The JSON arm does not parse as a job spec.
    #[error(transparent)]
    Json(#[from] fedsilo_config::ConfigError),
}

/// What a `LaunchJob` request launches.
#[derive(Clone, Debug, PartialEq)]
pub enum Launched {
    Training(Box<JobSpec>),
    Psi(fedsilo_task::psi::PsiJobSpec),
    Vertical(Box<fedsilo_task::vertical::VerticalJobSpec>),
}

/// The spec of a `LaunchJob` request, from whichever arm it uses: the typed `spec`
/// (converted; errors name `spec.…`), `spec_json` (parsed strictly, as before) or `psi`
/// (errors name `psi.…`). Neither arm is refused as `spec: missing`. The spec is not
/// validated here.
pub fn launch_request(req: pb::LaunchJobRequest) -> Result<Launched, LaunchSpecError> {
    use pb::launch_job_request::Body;
    match req.body {
        Some(Body::Spec(s)) => Ok(Launched::Training(Box::new(
            JobSpec::try_from(s).map_err(|e| e.within("spec"))?,
        ))),
        Some(Body::SpecJson(json)) => Ok(Launched::Training(Box::new(
            fedsilo_config::from_json_str(&json, "job spec")?,
        ))),
        Some(Body::Psi(s)) => Ok(Launched::Psi(
            fedsilo_task::psi::PsiJobSpec::try_from(s).map_err(|e| e.within("psi"))?,
        )),
        Some(Body::Vertical(s)) => Ok(Launched::Vertical(Box::new(
            fedsilo_task::vertical::VerticalJobSpec::try_from(s)
                .map_err(|e| e.within("vertical"))?,
        ))),
        None => Err(WireError::at("spec", Problem::Missing).into()),
    }
}

/// [`launch_request`] for a training job; a PSI request is refused as `spec: missing`.
pub fn launch_spec(req: pb::LaunchJobRequest) -> Result<JobSpec, LaunchSpecError> {
    match launch_request(req)? {
        Launched::Training(s) => Ok(*s),
        Launched::Psi(_) | Launched::Vertical(_) => {
            Err(WireError::at("spec", Problem::Missing).into())
        }
    }
}

impl From<&JobSpec> for pb::LaunchJobRequest {
    /// A request carrying the typed spec.
    fn from(s: &JobSpec) -> Self {
        pb::LaunchJobRequest {
            body: Some(pb::launch_job_request::Body::Spec(s.into())),
        }
    }
}
