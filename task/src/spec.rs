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

/// Whom differential privacy protects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpLevel {
    /// One institution's whole contribution (every participant in every round, no sampling):
    /// each participant clips its whole update to `clip`. With a handful of institutions the
    /// noise this needs swamps the signal.
    #[default]
    Institution,
    /// One customer's record (DP-SGD): every round each participant samples its rows with
    /// probability `sampling_rate` (Poisson), clips each sampled row's gradient to `clip` and
    /// sends their sum; the federation-wide sum of one round is one DP-SGD step on the union
    /// of the institutions' rows. The prelude's counts and moments are noised too, so the
    /// whole job is accounted.
    Record,
}

impl DpLevel {
    pub fn name(self) -> &'static str {
        match self {
            DpLevel::Institution => "institution",
            DpLevel::Record => "record",
        }
    }
}

/// Differential privacy under secure aggregation (distributed discrete Gaussian): each
/// participant adds integer noise to its clipped vector so that only the SUM carries noise of
/// standard deviation `noise_multiplier · clip`; no participant ever sees a noise-free sum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpSpec {
    /// Whom the guarantee protects (default `institution`).
    #[serde(default)]
    pub level: DpLevel,
    /// L2 clip of a participant's update (institution level) or of one row's gradient
    /// (record level).
    pub clip: f64,
    /// σ/clip. Absent (record level only): calibrated at launch, the smallest σ with which
    /// `rounds` rounds stay within `epsilon_budget`.
    #[serde(default)]
    pub noise_multiplier: Option<f64>,
    pub delta: f64,
    /// Stop cleanly before ε would exceed this.
    pub epsilon_budget: Option<f64>,
    /// Record level: the probability with which each row takes part in a round (Poisson
    /// sampling; the privacy amplification the accountant counts). Required at record level,
    /// refused at institution level.
    #[serde(default)]
    pub sampling_rate: Option<f64>,
    /// Record level: the noise multiplier of the job's count releases — the prelude's
    /// counts and moments, a scorecard's bin and good/bad counts, a GBDT's fine histogram
    /// (absent: [`crate::privacy::DEFAULT_COUNT_NOISE_MULTIPLIER`]). Lower buys more exact
    /// counts with budget the training then lacks (a budget-only job calibrates its training
    /// σ for what is left). Refused at institution level, where those releases are exact.
    #[serde(default)]
    pub count_noise_multiplier: Option<f64>,
}

impl DpSpec {
    /// The noise multiplier in force: the configured one or, once a plan has calibrated it,
    /// the calibrated one (0 before either, which no noisy step is built with: validation
    /// and [`crate::Plan::new`] see to it).
    pub fn sigma(&self) -> f64 {
        self.noise_multiplier.unwrap_or(0.0)
    }

    /// Record level: the noise multiplier of the count releases.
    pub fn count_sigma(&self) -> f64 {
        self.count_noise_multiplier
            .unwrap_or(crate::privacy::DEFAULT_COUNT_NOISE_MULTIPLIER)
    }

    /// Record level: the sampling rate (1 otherwise: every row of every participant).
    pub fn q(&self) -> f64 {
        match self.level {
            DpLevel::Record => self.sampling_rate.unwrap_or(1.0),
            DpLevel::Institution => 1.0,
        }
    }
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
                if self.dp.as_ref().is_some_and(|d| d.level != DpLevel::Record) {
                    return bad("dp.level: boosted trees take record-level DP (level = \"record\"): their histograms are sums over rows, which cannot hide a whole institution".into());
                }
            }
            ModelSpec::Scorecard(sc) => {
                sc.validate()
                    .map_err(|e| FedError::SpecModel(ModelError::Scorecard(e)))?;
                if self.labels.len() > 1 {
                    return bad("labels: a scorecard scores one label (1 = bad) per job".into());
                }
                if self.dp.as_ref().is_some_and(|d| d.level != DpLevel::Record) {
                    return bad("dp.level: a scorecard takes record-level DP (level = \"record\"): its bin counts cannot hide a whole institution".into());
                }
            }
            ModelSpec::LogisticRegression => {}
        }
        if let Some(dp) = &self.dp {
            dp_checks(dp, self.rounds)?;
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

/// The `dp` table's own checks; the error names the key.
fn dp_checks(dp: &DpSpec, rounds: u64) -> Result<(), FedError> {
    let bad = |m: String| Err(FedError::Spec(m));
    let positive = |v: f64| v > 0.0 && v.is_finite();
    if !positive(dp.clip) {
        return bad(format!("dp.clip: {} must be > 0", dp.clip));
    }
    if !(dp.delta > 0.0 && dp.delta < 1.0) {
        return bad(format!("dp.delta: {} must be in (0, 1)", dp.delta));
    }
    if let Some(b) = dp.epsilon_budget {
        if !positive(b) {
            return bad(format!("dp.epsilon_budget: {b} must be > 0"));
        }
    }
    if let Some(s) = dp.noise_multiplier {
        if !positive(s) {
            return bad(format!("dp.noise_multiplier: {s} must be > 0"));
        }
    }
    if let Some(s) = dp.count_noise_multiplier {
        if !positive(s) {
            return bad(format!("dp.count_noise_multiplier: {s} must be > 0"));
        }
        if dp.level == DpLevel::Institution {
            return bad(format!("dp.count_noise_multiplier: {s} is a record-level setting (level = \"record\"); at institution level the counts are released exact"));
        }
    }
    match dp.level {
        DpLevel::Institution => {
            if dp.noise_multiplier.is_none() {
                return bad("dp.noise_multiplier: required at level \"institution\" (only record-level jobs calibrate it from the budget)".into());
            }
            if let Some(q) = dp.sampling_rate {
                return bad(format!("dp.sampling_rate: {q} is a record-level setting (level = \"record\"); institution-level DP takes every participant's whole update every round"));
            }
        }
        DpLevel::Record => {
            let Some(q) = dp.sampling_rate else {
                return bad("dp.sampling_rate: required at level \"record\" (the probability with which each row takes part in a round, e.g. 0.05)".into());
            };
            if !(q > 0.0 && q <= 1.0) {
                return bad(format!("dp.sampling_rate: {q} must be in (0, 1]"));
            }
            if dp.noise_multiplier.is_none() && dp.epsilon_budget.is_none() {
                return bad(format!("dp: give noise_multiplier or epsilon_budget (with the budget the job calibrates σ for its {rounds} rounds)"));
            }
        }
    }
    Ok(())
}
