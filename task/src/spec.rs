//! What an operator launches: the job spec and its field-by-field validation.

use fedsilo_ml::gbdt::GbdtParams;
use fedsilo_ml::optim::ServerOptimizer;
use fedsilo_ml::scorecard::ScorecardSpec;
use serde::{Deserialize, Serialize};

use crate::error::{FedError, ModelError};

/// The business task a job trains for; it decides the report wording and the default
/// class weighting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    #[default]
    Risk,
    Propensity,
    Churn,
}

/// The model family a job trains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", from = "ModelSpecRepr")]
#[derive(Default)]
pub enum ModelSpec {
    #[default]
    LogisticRegression,
    Mlp {
        hidden: Vec<usize>,
    },
    /// Histogram gradient-boosted trees; the job's `rounds` is ignored (`n_trees` counts).
    Gbdt(GbdtParams),
    /// Credit scorecard: quantile bins, WOE/IV from masked good/bad counts, logistic
    /// regression on the WOE columns for `rounds` rounds, points scaling. Label 1 = bad.
    Scorecard(ScorecardSpec),
}

/// How a [`ModelSpec`] is read: the same tagged form, but every variant a struct so that an
/// unknown key is refused for every kind (serde ignores extra keys of an internally tagged
/// *unit* variant, so `{ kind = "logistic_regression", l1 = 2 }` would pass silently).
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ModelSpecRepr {
    LogisticRegression {},
    Mlp { hidden: Vec<usize> },
    Gbdt(GbdtParams),
    Scorecard(ScorecardSpec),
}

impl From<ModelSpecRepr> for ModelSpec {
    fn from(r: ModelSpecRepr) -> Self {
        match r {
            ModelSpecRepr::LogisticRegression {} => ModelSpec::LogisticRegression,
            ModelSpecRepr::Mlp { hidden } => ModelSpec::Mlp { hidden },
            ModelSpecRepr::Gbdt(p) => ModelSpec::Gbdt(p),
            ModelSpecRepr::Scorecard(p) => ModelSpec::Scorecard(p),
        }
    }
}

impl ModelSpec {
    /// Name used in exports and reports.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ModelSpec::LogisticRegression => "logistic_regression",
            ModelSpec::Mlp { .. } => "mlp",
            ModelSpec::Gbdt(_) => "gbdt",
            ModelSpec::Scorecard(_) => "scorecard",
        }
    }
}

/// Local and server learning settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Learning {
    pub local_epochs: usize,
    pub learning_rate: f64,
    pub batch_size: usize,
    /// L2 penalty per sample (objective: mean log-loss + l2/2·‖coef‖²).
    pub l2: f64,
    /// Weight of positive rows; `None` = 1 (no class weighting).
    pub pos_weight: Option<f64>,
    /// FedProx proximal coefficient μ (0 = FedAvg local objective).
    pub prox_mu: f64,
    pub server_optimizer: ServerOptimizer,
}

impl Default for Learning {
    fn default() -> Self {
        Learning {
            local_epochs: 2,
            learning_rate: 0.1,
            batch_size: 64,
            l2: 1e-4,
            pos_weight: None,
            prox_mu: 0.0,
            server_optimizer: ServerOptimizer::FedAvg { lr: 1.0 },
        }
    }
}

/// Differential privacy for the training updates (distributed discrete Gaussian under secure
/// aggregation): each participant clips its update to L2 norm `clip` and adds integer noise
/// so that the SUM carries noise of standard deviation `noise_multiplier · clip`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpSpec {
    pub clip: f64,
    pub noise_multiplier: f64,
    pub delta: f64,
    /// Stop cleanly before ε would exceed this.
    pub epsilon_budget: Option<f64>,
}

/// What an operator launches. Every key is checked: an unknown one (a typo such as `DP` or
/// `min_particpants`) is refused, never ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Assigned by the coordinator when empty.
    #[serde(default)]
    pub job_id: String,
    /// Name of the local dataset every participant maps to its own file.
    pub dataset: String,
    #[serde(default)]
    pub task: Task,
    #[serde(default)]
    pub model: ModelSpec,
    /// Feature columns (after one-hot expansion); empty = every feature of the dataset.
    #[serde(default)]
    pub features: Vec<String>,
    /// Label columns; one model output per label (multi-product propensity). Empty = the
    /// dataset's first label.
    #[serde(default)]
    pub labels: Vec<String>,
    pub rounds: u64,
    #[serde(default = "default_min_participants")]
    pub min_participants: usize,
    /// Secure-aggregation threshold t; default: more than half of each neighbourhood.
    #[serde(default)]
    pub threshold: Option<usize>,
    /// Neighbourhood size k; default 2·log2(n) (SecAgg+), complete graph for small n.
    #[serde(default)]
    pub neighbours: Option<usize>,
    #[serde(default)]
    pub learning: Learning,
    #[serde(default)]
    pub dp: Option<DpSpec>,
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    #[serde(default = "default_hist_bins")]
    pub hist_bins: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_phase_timeout_ms")]
    pub phase_timeout_ms: u64,
    /// Largest federation the fixed-point encoding must allow for.
    #[serde(default = "default_max_participants")]
    pub max_participants: u32,
    /// How long a job that has started may be held up by absent participants (too few
    /// present to start a round, or rounds failing because some did not answer) before it
    /// fails with the reason; every completed round resets the clock. Default 30 min.
    #[serde(default = "default_absence_patience_ms")]
    pub absence_patience_ms: u64,
}

/// Default of [`JobSpec::absence_patience_ms`]: 30 minutes.
pub const DEFAULT_ABSENCE_PATIENCE_MS: u64 = 30 * 60 * 1000;
/// Bounds of [`JobSpec::absence_patience_ms`]: one second to thirty days.
pub const ABSENCE_PATIENCE_MS_RANGE: std::ops::RangeInclusive<u64> = 1_000..=30 * 24 * 3600 * 1000;

fn default_min_participants() -> usize {
    2
}
fn default_eval_every() -> u64 {
    5
}
fn default_hist_bins() -> usize {
    1000
}
fn default_phase_timeout_ms() -> u64 {
    30_000
}
fn default_max_participants() -> u32 {
    1000
}
fn default_absence_patience_ms() -> u64 {
    DEFAULT_ABSENCE_PATIENCE_MS
}

impl JobSpec {
    /// A spec with every optional key at its default: what a TOML spec holding only
    /// `dataset` and `rounds` reads as (the wire form's absent fields take these values).
    pub fn new(dataset: impl Into<String>, rounds: u64) -> Self {
        JobSpec {
            job_id: String::new(),
            dataset: dataset.into(),
            task: Task::default(),
            model: ModelSpec::default(),
            features: Vec::new(),
            labels: Vec::new(),
            rounds,
            min_participants: default_min_participants(),
            threshold: None,
            neighbours: None,
            learning: Learning::default(),
            dp: None,
            eval_every: default_eval_every(),
            hist_bins: default_hist_bins(),
            seed: 0,
            phase_timeout_ms: default_phase_timeout_ms(),
            max_participants: default_max_participants(),
            absence_patience_ms: default_absence_patience_ms(),
        }
    }

    /// Checks everything that can be checked without data; the error says which field.
    pub fn validate(&self) -> Result<(), FedError> {
        let bad = |m: String| Err(FedError::Spec(m));
        if self.dataset.trim().is_empty() {
            return bad("dataset: must name the local dataset".into());
        }
        if self.rounds == 0 || self.rounds > 100_000 {
            return bad(format!("rounds: {} is outside 1..=100000", self.rounds));
        }
        if self.min_participants < 2 {
            return bad(format!(
                "min_participants: {} — secure aggregation needs at least 2",
                self.min_participants
            ));
        }
        if self.min_participants as u64 > self.max_participants as u64 {
            return bad("min_participants exceeds max_participants".into());
        }
        if self.hist_bins < 10 || self.hist_bins > 100_000 {
            return bad(format!(
                "hist_bins: {} is outside 10..=100000",
                self.hist_bins
            ));
        }
        if self.eval_every == 0 {
            return bad("eval_every: must be at least 1".into());
        }
        let l = &self.learning;
        if !(l.learning_rate > 0.0 && l.learning_rate.is_finite()) {
            return bad(format!(
                "learning.learning_rate: {} must be > 0",
                l.learning_rate
            ));
        }
        if l.batch_size == 0 || l.local_epochs == 0 {
            return bad("learning.batch_size and learning.local_epochs must be ≥ 1".into());
        }
        if !(l.l2 >= 0.0 && l.prox_mu >= 0.0) {
            return bad("learning.l2 and learning.prox_mu must be ≥ 0".into());
        }
        if let Some(w) = l.pos_weight {
            if !(w > 0.0 && w.is_finite()) {
                return bad(format!("learning.pos_weight: {w} must be > 0"));
            }
        }
        match &self.model {
            ModelSpec::Mlp { hidden } => {
                if hidden.is_empty()
                    || hidden.len() > 2
                    || hidden.iter().any(|&h| h == 0 || h > 1024)
                {
                    return bad("model.hidden: one or two layers of 1..=1024 units".into());
                }
            }
            ModelSpec::Gbdt(p) => {
                p.validate()
                    .map_err(|e| FedError::SpecModel(ModelError::Gbdt(e)))?;
                if self.labels.len() > 1 {
                    return bad("labels: gbdt trains one label per job".into());
                }
                if self.dp.is_some() {
                    return bad("dp: differential privacy is available for logistic regression and MLP jobs".into());
                }
            }
            ModelSpec::Scorecard(sc) => {
                sc.validate()
                    .map_err(|e| FedError::SpecModel(ModelError::Scorecard(e)))?;
                if self.labels.len() > 1 {
                    return bad("labels: a scorecard scores one label (1 = bad) per job".into());
                }
                if self.dp.is_some() {
                    return bad("dp: differential privacy is available for logistic regression and MLP jobs".into());
                }
            }
            ModelSpec::LogisticRegression => {}
        }
        if let Some(dp) = &self.dp {
            if !(dp.clip > 0.0 && dp.noise_multiplier > 0.0 && dp.delta > 0.0 && dp.delta < 1.0) {
                return bad("dp: clip > 0, noise_multiplier > 0 and 0 < delta < 1 required".into());
            }
        }
        if !ABSENCE_PATIENCE_MS_RANGE.contains(&self.absence_patience_ms) {
            return bad(format!(
                "absence_patience_ms: {} is outside {}..={} (1 s to 30 days)",
                self.absence_patience_ms,
                ABSENCE_PATIENCE_MS_RANGE.start(),
                ABSENCE_PATIENCE_MS_RANGE.end()
            ));
        }
        Ok(())
    }
}
