//! The federated task language: what a job asks of participants, and how the server turns
//! the securely aggregated SUMS into a model.
//!
//! A job is a sequence of *steps*. For each step the server half ([`Plan`]) emits an
//! [`Instruction`]; every participant runs [`compute`] on its local data and returns a flat
//! `Vec<f64>` of a length the plan fixed in advance; the vectors are encoded, masked and summed
//! by secure aggregation; the plan [`Plan::absorb`]s the decoded sum and decides the next step.
//!
//! The plan never sees one participant's vector, only sums. Participants are stateless between
//! steps apart from a cache of derived data ([`LocalCache`]), so a participant that restarts
//! mid-job computes the same answer for the next step.
//!
//! Steps of a logistic-regression or MLP job:
//! 1. `Scale` — row and label counts, observed counts per feature, and a log-magnitude
//!    histogram per feature, from which the plan picks a scale per feature (so the next step's
//!    sums fit the fixed-point encoding without losing precision on small-valued features).
//! 2. `Moments` — Σx/s and Σ(x/s)² per feature: the global means and standard deviations
//!    every participant then standardises with. Nobody revealed their own.
//! 3. `Train` × rounds — FedAvg: each participant runs local epochs from the global model and
//!    returns n_k·(w_k − w) and n_k (or, with differential privacy, its clipped, unweighted
//!    update plus integer noise); the server optimiser (FedAvg / FedAdam / FedYogi) applies
//!    the average.
//! 4. `Evaluate` every `eval_every` rounds and at the end — per-class score histograms on each
//!    participant's hold-out set, so the coordinator computes AUC, KS, log-loss and lift of the
//!    federation without seeing any record or any one institution's metrics.

use std::collections::BTreeMap;

use ndarray::{Array2, ArrayView1, Axis};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::gbdt::{gbdt_compute, GbdtCache, GbdtInstruction, GbdtModel, GbdtParams, GbdtServer};
use crate::linear::{self, LinearParams, LocalTrainConfig};
use crate::metrics::{BinaryMetrics, ScoreHistogram};
use crate::mlp::{self, MlpParams, MlpSpec};
use crate::optim::{OptimizerState, ServerOptimizer};
use crate::scorecard::{
    histogram_ranges, scorecard_counts, woe_iv, woe_transform, Scorecard, ScorecardBins,
    ScorecardRow, ScorecardSpec, WoeTable,
};
use crate::table::Table;

pub mod validate;
pub use validate::{check_instruction, InstructionError};

/// Log-magnitude histogram: bin 0 holds |x| < 1e-6, bin i holds [10^(i-7), 10^(i-6)), the last
/// bin everything ≥ 1e12.
const MAG_BINS: usize = 20;
/// |x/scale| is clipped here in the moments step (robust to a few extreme outliers).
const MOMENT_CLIP: f64 = 1e3;
/// Each coordinate of a local update is clipped to ±DELTA_CLIP (non-DP jobs).
const DELTA_CLIP: f64 = 10.0;
/// Per-row log-loss is capped here (probabilities clamped to [1e-15, 1-1e-15]).
const LOSS_CAP: f64 = 35.0;

/// Errors of the federated task layer, sorted by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum FedError {
    #[error("job spec: {0}")]
    Spec(String),
    #[error("local data: {0}")]
    Data(String),
    #[error("aggregate for step {step} has {got} values, expected {expected}")]
    SumLength {
        step: u64,
        expected: usize,
        got: usize,
    },
    #[error("no participant contributed to step {step}")]
    NoContributors { step: u64 },
    #[error("instruction refused: {0}")]
    Instruction(#[from] InstructionError),
    #[error("model: {0}")]
    Model(String),
    /// A model read from outside (a file) is malformed.
    #[error("model is malformed: {0}")]
    BadModel(#[source] InstructionError),
    #[error("logistic regression: {0}")]
    Linear(#[from] crate::linear::LinearError),
    #[error("MLP: {0}")]
    Mlp(#[from] crate::mlp::MlpError),
}

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
                    .map_err(|e| FedError::Spec(format!("model: {e}")))?;
                if self.labels.len() > 1 {
                    return bad("labels: gbdt trains one label per job".into());
                }
                if self.dp.is_some() {
                    return bad("dp: differential privacy is available for logistic regression and MLP jobs".into());
                }
            }
            ModelSpec::Scorecard(sc) => {
                sc.validate()
                    .map_err(|e| FedError::Spec(format!("model: {e}")))?;
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

/// Global standardisation, computed under secure aggregation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Fraction of rows with the feature missing, federation-wide.
    pub missing_rate: Vec<f64>,
}

impl Standardizer {
    /// Standardised copy of `x`; missing values become 0 (= the global mean). Errors when the
    /// standardiser does not have one mean and one deviation per column of `x`.
    pub fn apply(&self, x: ndarray::ArrayView2<f32>) -> Result<Array2<f32>, InstructionError> {
        for (what, len) in [
            ("standardizer mean", self.mean.len()),
            ("standardizer std", self.std.len()),
        ] {
            if len != x.ncols() {
                return Err(InstructionError::ModelSize {
                    what,
                    expected: x.ncols(),
                    got: len,
                });
            }
        }
        let mut out = x.to_owned();
        for ((mut col, &m), &s) in out.axis_iter_mut(Axis(1)).zip(&self.mean).zip(&self.std) {
            let (m, s) = (m as f32, s as f32);
            col.mapv_inplace(|v| if v.is_nan() { 0.0 } else { (v - m) / s });
        }
        Ok(out)
    }
}

/// Trained parameters, one set per label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelParams {
    LogisticRegression {
        per_label: Vec<LinearParams>,
    },
    Mlp {
        per_label: Vec<MlpParams>,
    },
    Gbdt {
        model: GbdtModel,
    },
    /// One label; the trainable part is the logistic regression on the WOE columns.
    Scorecard {
        card: Box<Scorecard>,
    },
}

impl ModelParams {
    fn dim(&self) -> usize {
        match self {
            ModelParams::LogisticRegression { per_label } => {
                per_label.iter().map(|p| p.coef.len() + 1).sum()
            }
            ModelParams::Mlp { per_label } => per_label.iter().map(|p| p.flat.len()).sum(),
            ModelParams::Gbdt { .. } => 0,
            ModelParams::Scorecard { card } => card.coef.len() + 1,
        }
    }
    fn flat(&self) -> Vec<f64> {
        match self {
            ModelParams::LogisticRegression { per_label } => {
                per_label.iter().flat_map(|p| p.to_flat()).collect()
            }
            ModelParams::Mlp { per_label } => per_label
                .iter()
                .flat_map(|p| p.flat.iter().copied())
                .collect(),
            ModelParams::Gbdt { .. } => Vec::new(),
            ModelParams::Scorecard { card } => card_linear(card).to_flat(),
        }
    }
    fn set_flat(&mut self, v: &[f64]) -> Result<(), FedError> {
        let mut off = 0;
        match self {
            ModelParams::LogisticRegression { per_label } => {
                for p in per_label.iter_mut() {
                    let n = p.coef.len() + 1;
                    *p = LinearParams::from_flat(&v[off..off + n])
                        .map_err(|e| FedError::Model(e.to_string()))?;
                    off += n;
                }
            }
            ModelParams::Mlp { per_label } => {
                for p in per_label.iter_mut() {
                    let n = p.flat.len();
                    p.flat.copy_from_slice(&v[off..off + n]);
                    off += n;
                }
            }
            ModelParams::Gbdt { .. } => {
                return Err(FedError::Model(
                    "trees have no flat parameter vector".into(),
                ))
            }
            ModelParams::Scorecard { card } => {
                let n = card.coef.len() + 1;
                let lp =
                    LinearParams::from_flat(&v[..n]).map_err(|e| FedError::Model(e.to_string()))?;
                **card = Scorecard::from_logistic(
                    card.woe.clone(),
                    &lp.coef,
                    lp.intercept,
                    card.scaling,
                )
                .map_err(|e| FedError::Model(e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// The logistic regression inside a scorecard (coefficients on the WOE columns).
fn card_linear(card: &Scorecard) -> LinearParams {
    LinearParams {
        coef: card.coef.clone(),
        intercept: card.intercept,
    }
}

/// A model as participants and the scorer use it: column names, standardisation, parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainedModel {
    pub features: Vec<String>,
    pub labels: Vec<String>,
    pub standardizer: Standardizer,
    pub params: ModelParams,
}

impl TrainedModel {
    /// Probabilities, rows × labels. `table` must have the model's feature columns; a
    /// malformed model (e.g. read from a file) is refused ([`TrainedModel::validate`]).
    pub fn predict(&self, table: &Table) -> Result<Array2<f64>, FedError> {
        self.validate().map_err(FedError::BadModel)?;
        let x = select_columns(table, &self.features)?;
        match &self.params {
            ModelParams::Gbdt { model } => gbdt_proba(model, x.view()),
            ModelParams::Scorecard { card } => {
                let xw = woe_transform(x.view(), &card.woe)
                    .map_err(|e| FedError::Data(e.to_string()))?;
                self.predict_standardized(xw.view())
            }
            _ => {
                let xs = self
                    .standardizer
                    .apply(x.view())
                    .map_err(FedError::BadModel)?;
                self.predict_standardized(xs.view())
            }
        }
    }

    /// Scorecard points per row (higher = better credit); `None` for other models.
    pub fn points(&self, table: &Table) -> Result<Option<Vec<f64>>, FedError> {
        match &self.params {
            ModelParams::Scorecard { card } => {
                self.validate().map_err(FedError::BadModel)?;
                let x = select_columns(table, &self.features)?;
                card.score_points(x.view())
                    .map(Some)
                    .map_err(|e| FedError::Data(e.to_string()))
            }
            _ => Ok(None),
        }
    }

    /// Whether the model reads raw (unstandardised) features.
    pub fn uses_raw_features(&self) -> bool {
        matches!(self.params, ModelParams::Gbdt { .. })
    }

    /// Probabilities from already prepared features (standardised; raw for trees; WOE
    /// columns for a scorecard), rows × labels. Sizes that do not fit are errors; a model
    /// that passed [`TrainedModel::validate`] fits its own columns.
    fn predict_standardized(&self, xs: ndarray::ArrayView2<f32>) -> Result<Array2<f64>, FedError> {
        let per_label: Vec<Vec<f64>> = match &self.params {
            ModelParams::Gbdt { model } => return gbdt_proba(model, xs),
            ModelParams::LogisticRegression { per_label } => per_label
                .iter()
                .map(|p| linear::predict_proba(p, xs))
                .collect::<Result<_, _>>()?,
            ModelParams::Mlp { per_label } => per_label
                .iter()
                .map(|p| mlp::mlp_predict_proba(p, xs))
                .collect::<Result<_, _>>()?,
            ModelParams::Scorecard { card } => {
                vec![linear::predict_proba(&card_linear(card), xs)?]
            }
        };
        if per_label.len() != self.labels.len() {
            return Err(FedError::BadModel(InstructionError::ModelSize {
                what: "per-label models",
                expected: self.labels.len(),
                got: per_label.len(),
            }));
        }
        let mut out = Array2::zeros((xs.nrows(), per_label.len()));
        for (mut col, p) in out.columns_mut().into_iter().zip(&per_label) {
            if p.len() != col.len() {
                return Err(FedError::Model(format!(
                    "{} probabilities for {} rows",
                    p.len(),
                    col.len()
                )));
            }
            col.assign(&ArrayView1::from(p));
        }
        Ok(out)
    }
}

fn gbdt_proba(model: &GbdtModel, x: ndarray::ArrayView2<f32>) -> Result<Array2<f64>, FedError> {
    let p = model
        .predict_proba(x)
        .map_err(|e| FedError::Model(e.to_string()))?;
    let n = p.len();
    Array2::from_shape_vec((n, 1), p).map_err(|e| FedError::Model(e.to_string()))
}

/// Which columns and labels a step works on; carried by every instruction so a participant
/// needs no memory of earlier steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobData {
    pub dataset: String,
    pub features: Vec<String>,
    pub labels: Vec<String>,
}

/// Integer noise a participant adds to its encoded vector (distributed discrete Gaussian).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseSpec {
    /// L2 clip of the update (float domain).
    pub clip: f64,
    /// Standard deviation of the noise the SUM must carry, float domain (σ·clip). Each of
    /// the n participants of the round adds discrete Gaussian noise of σ·clip/√n
    /// ([`NoiseSpec::share`]); participants that drop out take their share with them, so a
    /// round with dropouts carries a little less noise than planned.
    pub stddev: f64,
}

impl NoiseSpec {
    /// This participant's share of the noise in a round of `n` participants.
    pub fn share(&self, n: usize) -> f64 {
        self.stddev / (n.max(1) as f64).sqrt()
    }
}

/// What one participant must compute for one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Instruction {
    Scale {
        data: JobData,
    },
    Moments {
        data: JobData,
        scales: Vec<f64>,
    },
    Train {
        data: JobData,
        model: TrainedModel,
        local: LocalTrainConfig,
        seed: u64,
        /// Present when the job runs with differential privacy.
        noise: Option<NoiseSpec>,
    },
    Evaluate {
        data: JobData,
        model: TrainedModel,
        bins: usize,
    },
    /// A step of federated gradient boosting on raw features.
    Gbdt {
        data: JobData,
        step: GbdtInstruction,
    },
    /// Scorecard binning: per feature, counts over `fine_bins` equal-width bins of its range
    /// (plus missing), from which the plan reads quantile cut points.
    ScorecardHistogram {
        data: JobData,
        ranges: Vec<(f32, f32)>,
        fine_bins: usize,
    },
    /// Scorecard WOE: good/bad row counts per feature and bin.
    ScorecardCounts {
        data: JobData,
        bins: ScorecardBins,
    },
}

impl Instruction {
    /// Short name for logs and reports.
    pub fn purpose(&self) -> &'static str {
        match self {
            Instruction::Scale { .. } => "stats",
            Instruction::Moments { .. } => "stats",
            Instruction::Train { .. } => "train",
            Instruction::Evaluate { .. } => "eval",
            Instruction::Gbdt { step, .. } => match step {
                GbdtInstruction::Level { .. } => "tree-level",
                _ => "bins",
            },
            Instruction::ScorecardHistogram { .. } => "bins",
            Instruction::ScorecardCounts { .. } => "woe-counts",
        }
    }

    /// Noise the participant must add after encoding (None for non-DP steps).
    pub fn noise(&self) -> Option<&NoiseSpec> {
        match self {
            Instruction::Train { noise, .. } => noise.as_ref(),
            _ => None,
        }
    }

    pub fn data(&self) -> &JobData {
        match self {
            Instruction::Scale { data }
            | Instruction::Moments { data, .. }
            | Instruction::Train { data, .. }
            | Instruction::Evaluate { data, .. }
            | Instruction::Gbdt { data, .. }
            | Instruction::ScorecardHistogram { data, .. }
            | Instruction::ScorecardCounts { data, .. } => data,
        }
    }
}

/// One step as the plan hands it to the round driver.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub index: u64,
    pub instruction: Instruction,
    /// Length of every participant's vector.
    pub len: usize,
    /// Largest magnitude of any element of one participant's vector (encoding bound).
    pub max_abs: f64,
}

/// A participant's data for one job: its training rows and its hold-out rows.
#[derive(Clone, Debug)]
pub struct LocalData {
    pub train: Table,
    pub holdout: Table,
}

/// Columns, standardiser, and the standardised train and hold-out matrices.
type StandardizedCache = (Vec<String>, Standardizer, Array2<f32>, Array2<f32>);

/// Derived data a participant keeps between steps (pure cache: dropping it changes nothing).
#[derive(Debug, Default)]
pub struct LocalCache {
    /// Keyed by the columns and the standardiser.
    standardized: Option<StandardizedCache>,
    raw: Option<(Vec<String>, Array2<f32>, Array2<f32>)>,
    woe: Option<(WoeTable, Array2<f32>, Array2<f32>)>,
    gbdt: GbdtCache,
}

/// Columns `names` of `table`, in that order, or an error naming the first missing one.
pub fn select_columns(table: &Table, names: &[String]) -> Result<Array2<f32>, FedError> {
    let idx: BTreeMap<&str, usize> = table
        .feature_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let cols = names
        .iter()
        .map(|n| {
            idx.get(n.as_str()).copied().ok_or_else(|| {
                FedError::Data(format!("feature column '{n}' is not in the local dataset"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(table.x.select(Axis(1), &cols))
}

/// Label columns `names` of `table`, rows × labels.
pub fn select_labels(table: &Table, names: &[String]) -> Result<Array2<f32>, FedError> {
    let cols = names
        .iter()
        .map(|n| {
            table
                .label_names
                .iter()
                .position(|l| l == n)
                .ok_or_else(|| {
                    FedError::Data(format!("label column '{n}' is not in the local dataset"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(table.labels.select(Axis(1), &cols))
}

fn mag_bin(v: f64) -> usize {
    let a = v.abs();
    if a < 1e-6 {
        0
    } else {
        ((a.log10().floor() as i64 + 7).clamp(1, MAG_BINS as i64 - 1)) as usize
    }
}

fn mag_upper(bin: usize) -> f64 {
    10f64.powi(bin as i32 - 6)
}

fn clamp_loss(p: f64, y: f32) -> f64 {
    let p = p.clamp(1e-15, 1.0 - 1e-15);
    let l = if y > 0.5 { -p.ln() } else { -(1.0 - p).ln() };
    l.min(LOSS_CAP)
}

/// The participant half: compute this step's vector on local data.
///
/// The step is checked first ([`check_instruction`]): a step whose sizes do not fit the local
/// columns, with non-finite values or lengths above the caps is refused with
/// [`FedError::Instruction`] before any row is read. The sizes used below are those the check
/// guaranteed; where a size still comes from the step, the code iterates rather than indexes.
pub fn compute(
    instr: &Instruction,
    local: &LocalData,
    cache: &mut LocalCache,
) -> Result<Vec<f64>, FedError> {
    check_instruction(instr, local)?;
    let data = instr.data();
    match instr {
        Instruction::Scale { .. } => {
            let x = select_columns(&local.train, &data.features)?;
            let y = select_labels(&local.train, &data.labels)?;
            if x.nrows() == 0 {
                return Err(FedError::Data("no training rows".into()));
            }
            let mut out = Vec::with_capacity(1 + y.ncols() + x.ncols() * (1 + MAG_BINS));
            out.push(x.nrows() as f64);
            for col in y.axis_iter(Axis(1)) {
                out.push(col.iter().filter(|&&v| v > 0.5).count() as f64);
            }
            for col in x.axis_iter(Axis(1)) {
                // [observed, then MAG_BINS magnitude bins]; mag_bin < MAG_BINS.
                let mut block = [0.0; 1 + MAG_BINS];
                for &v in col {
                    if !v.is_nan() {
                        block[0] += 1.0;
                        block[1 + mag_bin(v as f64)] += 1.0;
                    }
                }
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Instruction::Moments { scales, .. } => {
            let x = select_columns(&local.train, &data.features)?;
            // One scale per column (checked).
            let mut out = Vec::with_capacity(2 * x.ncols());
            for (col, &s) in x.axis_iter(Axis(1)).zip(scales) {
                let (mut s1, mut s2) = (0.0, 0.0);
                for &v in col {
                    if !v.is_nan() {
                        let z = (v as f64 / s).clamp(-MOMENT_CLIP, MOMENT_CLIP);
                        s1 += z;
                        s2 += z * z;
                    }
                }
                out.push(s1);
                out.push(s2);
            }
            Ok(out)
        }
        Instruction::Train {
            model,
            local: cfg,
            seed,
            noise,
            ..
        } => {
            let (xs, _) = prepared(cache, local, model)?;
            let y = select_labels(&local.train, &data.labels)?;
            let n = xs.nrows() as f64;
            // Train loss of the global model before the local epochs, for the curve. `p0` has
            // one column per model label, which the check made the step's labels.
            let p0 = model.predict_standardized(xs.view())?;
            let loss: f64 = y
                .columns()
                .into_iter()
                .zip(p0.columns())
                .map(|(yc, pc)| {
                    yc.iter()
                        .zip(pc.iter())
                        .map(|(&yv, &p)| clamp_loss(p, yv))
                        .sum::<f64>()
                })
                .sum();
            let global = model.params.flat();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(*seed);
            let mut new_params = model.params.clone();
            let new_flat = match &mut new_params {
                ModelParams::LogisticRegression { per_label } => {
                    for (p, yc) in per_label.iter_mut().zip(y.columns()) {
                        *p = linear::local_train(p, xs.view(), yc, cfg, &mut rng)?;
                    }
                    new_params.flat()
                }
                ModelParams::Mlp { per_label } => {
                    for (p, yc) in per_label.iter_mut().zip(y.columns()) {
                        *p = mlp::mlp_local_train(p, xs.view(), yc, cfg, &mut rng)?;
                    }
                    new_params.flat()
                }
                ModelParams::Scorecard { card } => {
                    let yc = first_label(&y)?;
                    linear::local_train(&card_linear(card), xs.view(), yc, cfg, &mut rng)?.to_flat()
                }
                ModelParams::Gbdt { .. } => {
                    return Err(FedError::Instruction(InstructionError::ModelKind {
                        step: "train",
                        model: "gbdt",
                    }))
                }
            };
            let mut delta: Vec<f64> = new_flat.iter().zip(&global).map(|(a, b)| a - b).collect();
            match noise {
                None => {
                    let mut out: Vec<f64> = delta
                        .iter()
                        .map(|d| n * d.clamp(-DELTA_CLIP, DELTA_CLIP))
                        .collect();
                    out.push(n);
                    out.push(loss);
                    Ok(out)
                }
                Some(ns) => {
                    // Per-participant clipping; the update is unweighted so one
                    // institution's influence on the sum is bounded by `clip`.
                    let norm = delta.iter().map(|d| d * d).sum::<f64>().sqrt();
                    if norm > ns.clip {
                        let s = ns.clip / norm;
                        delta.iter_mut().for_each(|d| *d *= s);
                    }
                    delta.push(1.0);
                    Ok(delta)
                }
            }
        }
        Instruction::Gbdt { step, .. } => {
            let y = select_labels(&local.train, &data.labels)?;
            let yc = first_label(&y)?;
            // The boosting cache holds binned rows of the cached columns: other columns
            // start it afresh.
            if cache
                .raw
                .as_ref()
                .is_none_or(|(f, _, _)| f != &data.features)
            {
                cache.gbdt = GbdtCache::default();
            }
            // Fill the column cache, then borrow it beside the boosting cache (no copy of
            // the participant's matrix per step).
            raw_columns(cache, local, &data.features)?;
            let LocalCache { raw, gbdt, .. } = cache;
            let (_, x, _) = raw
                .as_ref()
                .ok_or_else(|| FedError::Data("column cache empty".into()))?;
            gbdt_compute(step, x.view(), yc, gbdt).map_err(|e| FedError::Data(e.to_string()))
        }
        Instruction::ScorecardHistogram {
            ranges, fine_bins, ..
        } => {
            let (x, _) = raw_columns(cache, local, &data.features)?;
            crate::gbdt::fine_histogram(x.view(), ranges, *fine_bins)
                .map_err(|e| FedError::Data(format!("scorecard binning: {e}")))
        }
        Instruction::ScorecardCounts { bins, .. } => {
            let y = select_labels(&local.train, &data.labels)?;
            let yc = first_label(&y)?;
            let (x, _) = raw_columns(cache, local, &data.features)?;
            scorecard_counts(x.view(), yc, bins)
                .map_err(|e| FedError::Data(format!("scorecard counts: {e}")))
        }
        Instruction::Evaluate { model, bins, .. } => {
            let y = select_labels(&local.holdout, &data.labels)?;
            let (_, xh) = prepared(cache, local, model)?;
            // One probability column per label (checked: the model's labels are the step's).
            let p = model.predict_standardized(xh.view())?;
            let mut out = Vec::with_capacity(y.ncols() * (2 * bins + 2));
            for (pc, yc) in p.columns().into_iter().zip(y.columns()) {
                let scores: Vec<f64> = pc.to_vec();
                let labels: Vec<f32> = yc.to_vec();
                let h = ScoreHistogram::from_scores(&scores, &labels, *bins);
                out.extend(h.to_flat());
                out.push(
                    scores
                        .iter()
                        .zip(&labels)
                        .map(|(&s, &yv)| clamp_loss(s, yv))
                        .sum(),
                );
                out.push(scores.len() as f64);
            }
            Ok(out)
        }
    }
}

/// The first (for these steps: the only) label column.
fn first_label(y: &Array2<f32>) -> Result<ArrayView1<'_, f32>, FedError> {
    y.columns()
        .into_iter()
        .next()
        .ok_or(FedError::Instruction(InstructionError::OneLabel {
            what: "this step",
            got: 0,
        }))
}

/// Raw train and hold-out matrices of `features`, cached by column list.
fn raw_columns<'c>(
    cache: &'c mut LocalCache,
    local: &LocalData,
    features: &[String],
) -> Result<(&'c Array2<f32>, &'c Array2<f32>), FedError> {
    let fresh = match &cache.raw {
        Some((f, _, _)) => f.as_slice() != features,
        None => true,
    };
    if fresh {
        cache.raw = Some((
            features.to_vec(),
            select_columns(&local.train, features)?,
            select_columns(&local.holdout, features)?,
        ));
    }
    match &cache.raw {
        Some((_, a, b)) => Ok((a, b)),
        None => Err(FedError::Data("column cache empty".into())),
    }
}

/// Train and hold-out matrices in the form `model` reads: raw columns for trees, WOE columns
/// for a scorecard, standardised columns otherwise.
fn prepared<'c>(
    cache: &'c mut LocalCache,
    local: &LocalData,
    model: &TrainedModel,
) -> Result<(&'c Array2<f32>, &'c Array2<f32>), FedError> {
    match &model.params {
        ModelParams::Gbdt { .. } => raw_columns(cache, local, &model.features),
        ModelParams::Scorecard { card } => woe_columns(cache, local, &model.features, &card.woe),
        _ => standardized(cache, local, model),
    }
}

/// WOE columns of the selected features, cached by WOE table.
fn woe_columns<'c>(
    cache: &'c mut LocalCache,
    local: &LocalData,
    features: &[String],
    woe: &WoeTable,
) -> Result<(&'c Array2<f32>, &'c Array2<f32>), FedError> {
    let fresh = match &cache.woe {
        Some((w, _, _)) => w != woe,
        None => true,
    };
    if fresh {
        let t = |table: &Table| -> Result<Array2<f32>, FedError> {
            let x = select_columns(table, features)?;
            woe_transform(x.view(), woe).map_err(|e| FedError::Data(e.to_string()))
        };
        cache.woe = Some((woe.clone(), t(&local.train)?, t(&local.holdout)?));
    }
    match &cache.woe {
        Some((_, a, b)) => Ok((a, b)),
        None => Err(FedError::Data("WOE cache empty".into())),
    }
}

/// Standardised train and hold-out matrices for `model`'s columns, cached by standardiser.
fn standardized<'c>(
    cache: &'c mut LocalCache,
    local: &LocalData,
    model: &TrainedModel,
) -> Result<(&'c Array2<f32>, &'c Array2<f32>), FedError> {
    let fresh = match &cache.standardized {
        Some((f, s, _, _)) => f != &model.features || s != &model.standardizer,
        None => true,
    };
    if fresh {
        let xt = select_columns(&local.train, &model.features)?;
        let xh = select_columns(&local.holdout, &model.features)?;
        cache.standardized = Some((
            model.features.clone(),
            model.standardizer.clone(),
            model.standardizer.apply(xt.view())?,
            model.standardizer.apply(xh.view())?,
        ));
    }
    match &cache.standardized {
        Some((_, _, a, b)) => Ok((a, b)),
        None => Err(FedError::Data("standardisation cache empty".into())),
    }
}

/// One point of the training curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub round: u64,
    pub train_loss: Option<f64>,
    pub holdout: Option<Vec<BinaryMetrics>>,
}

/// Evaluation result per label, from summed histograms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub round: u64,
    pub per_label: Vec<(BinaryMetrics, ScoreHistogram)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Stage {
    Scale,
    Moments { scales: Vec<f64> },
    Train { round: u64 },
    Evaluate { after_round: u64 },
    Gbdt { server: Box<GbdtServer> },
    ScorecardHistogram { ranges: Vec<(f32, f32)> },
    ScorecardCounts { bins: ScorecardBins },
    Done,
}

/// The server half of a job: a serialisable state machine (it IS the checkpoint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub spec: JobSpec,
    data: JobData,
    stage: Stage,
    step: u64,
    total_rows: f64,
    positives: Vec<f64>,
    observed: Vec<f64>,
    model: Option<TrainedModel>,
    optimizer: Option<OptimizerState>,
    pub curve: Vec<CurvePoint>,
    pub last_eval: Option<Evaluation>,
    /// Rounds of noisy training done (for the DP accountant).
    pub dp_rounds: u64,
    /// Participants in each DP training round (noise calibration).
    pub stopped_early: Option<String>,
    #[serde(default)]
    gbdt_standardizer: Option<Standardizer>,
    /// Trees grown (gbdt), which replaces `spec.rounds`.
    #[serde(default)]
    rounds_override: Option<u64>,
}

fn unreachable_gbdt() -> Result<ModelParams, FedError> {
    Err(FedError::Model(
        "gbdt and scorecard jobs build their model in their own stages".into(),
    ))
}

impl Plan {
    fn scorecard_spec(&self) -> Option<&ScorecardSpec> {
        match &self.spec.model {
            ModelSpec::Scorecard(sc) => Some(sc),
            _ => None,
        }
    }

    /// A new plan. `features`/`labels` are the job's columns (the coordinator resolves an empty
    /// list in the spec against the dataset's schema before calling this).
    pub fn new(
        spec: JobSpec,
        features: Vec<String>,
        labels: Vec<String>,
    ) -> Result<Self, FedError> {
        spec.validate()?;
        if features.is_empty() {
            return Err(FedError::Spec(
                "features: the job has no feature columns".into(),
            ));
        }
        if labels.is_empty() {
            return Err(FedError::Spec("labels: the job has no label column".into()));
        }
        let data = JobData {
            dataset: spec.dataset.clone(),
            features,
            labels,
        };
        Ok(Plan {
            spec,
            data,
            stage: Stage::Scale,
            step: 0,
            total_rows: 0.0,
            positives: Vec::new(),
            observed: Vec::new(),
            model: None,
            optimizer: None,
            curve: Vec::new(),
            last_eval: None,
            dp_rounds: 0,
            stopped_early: None,
            gbdt_standardizer: None,
            rounds_override: None,
        })
    }

    pub fn data(&self) -> &JobData {
        &self.data
    }

    /// Index of the next step (also the secure-aggregation round number).
    pub fn step_index(&self) -> u64 {
        self.step
    }

    /// Training rounds completed.
    pub fn rounds_done(&self) -> u64 {
        match &self.stage {
            Stage::Train { round } => *round,
            Stage::Evaluate { after_round } => *after_round,
            Stage::Gbdt { server } => server.trees_done() as u64,
            Stage::Done => self.rounds_override.unwrap_or(self.spec.rounds),
            _ => 0,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    pub fn model(&self) -> Option<&TrainedModel> {
        self.model.as_ref()
    }

    /// Stops the job after the current state (e.g. the privacy budget is spent); a final
    /// evaluation still runs when a model exists.
    pub fn stop(&mut self, reason: String) {
        self.stopped_early = Some(reason);
        self.stage = match (&self.stage, &self.model) {
            (Stage::Train { round }, Some(_)) => Stage::Evaluate {
                after_round: *round,
            },
            (Stage::Evaluate { .. }, _) => self.stage.clone(),
            _ => Stage::Done,
        };
    }

    /// The next step, or `None` when the job is done.
    pub fn next_step(&self) -> Option<Step> {
        let f = self.data.features.len();
        let l = self.data.labels.len();
        let rows_bound = self.total_rows.clamp(1.0, 1e12);
        let (instruction, len, max_abs) = match &self.stage {
            Stage::Done => return None,
            Stage::Scale => (
                Instruction::Scale {
                    data: self.data.clone(),
                },
                1 + l + f * (1 + MAG_BINS),
                // Row counts of one institution: up to a billion.
                1e9,
            ),
            Stage::Moments { scales } => (
                Instruction::Moments {
                    data: self.data.clone(),
                    scales: scales.clone(),
                },
                2 * f,
                rows_bound * MOMENT_CLIP * MOMENT_CLIP,
            ),
            Stage::Train { round } => {
                let model = self.model.clone()?;
                let dim = model.params.dim();
                let lr = &self.spec.learning;
                let local = LocalTrainConfig {
                    epochs: lr.local_epochs,
                    learning_rate: lr.learning_rate,
                    batch_size: lr.batch_size,
                    l2: lr.l2,
                    pos_weight: lr.pos_weight.unwrap_or(1.0),
                    prox_mu: lr.prox_mu,
                };
                let (noise, len, max_abs) = match &self.spec.dp {
                    None => (None, dim + 2, rows_bound * DELTA_CLIP.max(LOSS_CAP)),
                    Some(dp) => {
                        let stddev = dp.noise_multiplier * dp.clip;
                        // Values are clipped to `clip`; the noise is added in the integer
                        // domain after encoding, so the bound covers value + a 20σ tail.
                        (
                            Some(NoiseSpec {
                                clip: dp.clip,
                                stddev,
                            }),
                            dim + 1,
                            dp.clip + 20.0 * dp.noise_multiplier * dp.clip,
                        )
                    }
                };
                (
                    Instruction::Train {
                        data: self.data.clone(),
                        model,
                        local,
                        seed: self.spec.seed ^ (round.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                        noise,
                    },
                    len,
                    max_abs,
                )
            }
            Stage::Gbdt { server } => {
                let step = server.next()?;
                let len = step.output_len();
                (
                    Instruction::Gbdt {
                        data: self.data.clone(),
                        step,
                    },
                    len,
                    // Counts and gradient/hessian sums: |g| ≤ 1, h ≤ 1/4 per row.
                    rows_bound,
                )
            }
            Stage::ScorecardHistogram { ranges } => {
                let fine_bins = self.scorecard_spec()?.fine_bins;
                (
                    Instruction::ScorecardHistogram {
                        data: self.data.clone(),
                        ranges: ranges.clone(),
                        fine_bins,
                    },
                    f * (fine_bins + 1),
                    rows_bound,
                )
            }
            Stage::ScorecardCounts { bins } => (
                Instruction::ScorecardCounts {
                    data: self.data.clone(),
                    bins: bins.clone(),
                },
                bins.counts_len(),
                rows_bound,
            ),
            Stage::Evaluate { .. } => (
                Instruction::Evaluate {
                    data: self.data.clone(),
                    model: self.model.clone()?,
                    bins: self.spec.hist_bins,
                },
                l * (2 * self.spec.hist_bins + 2),
                rows_bound * LOSS_CAP,
            ),
        };
        Some(Step {
            index: self.step,
            instruction,
            len,
            max_abs,
        })
    }

    /// Absorbs the decoded SUM of the current step over `contributors` participants.
    pub fn absorb(&mut self, sum: &[f64], contributors: usize) -> Result<(), FedError> {
        let step = self
            .next_step()
            .ok_or_else(|| FedError::Spec("the job is already done".into()))?;
        if sum.len() != step.len {
            return Err(FedError::SumLength {
                step: self.step,
                expected: step.len,
                got: sum.len(),
            });
        }
        if contributors == 0 {
            return Err(FedError::NoContributors { step: self.step });
        }
        let f = self.data.features.len();
        let l = self.data.labels.len();
        let next = match self.stage.clone() {
            Stage::Done => Stage::Done,
            Stage::Scale => {
                self.total_rows = sum[0].round();
                if self.total_rows < 1.0 {
                    return Err(FedError::Data("the federation has no training rows".into()));
                }
                self.positives = sum[1..1 + l].iter().map(|v| v.round()).collect();
                for (name, &pos) in self.data.labels.iter().zip(&self.positives) {
                    if pos < 1.0 || pos >= self.total_rows {
                        return Err(FedError::Data(format!(
                            "label '{name}' has only one class across the federation ({pos} positives of {} rows)",
                            self.total_rows
                        )));
                    }
                }
                let base = 1 + l;
                let mut scales = Vec::with_capacity(f);
                self.observed = Vec::with_capacity(f);
                for j in 0..f {
                    let o = base + j * (1 + MAG_BINS);
                    let obs = sum[o].round().max(0.0);
                    self.observed.push(obs);
                    // Scale = upper edge of the 99.9th-percentile magnitude bin.
                    let target = 0.999 * obs;
                    let mut acc = 0.0;
                    let mut scale = 1.0;
                    for b in 0..MAG_BINS {
                        acc += sum[o + 1 + b].max(0.0);
                        if acc >= target {
                            scale = mag_upper(b);
                            break;
                        }
                    }
                    scales.push(scale);
                }
                Stage::Moments { scales }
            }
            Stage::Moments { scales } => {
                let mut mean = Vec::with_capacity(f);
                let mut std = Vec::with_capacity(f);
                let mut missing = Vec::with_capacity(f);
                for j in 0..f {
                    let n = self.observed[j].max(1.0);
                    let s = scales[j];
                    let m = sum[2 * j] / n;
                    let var = (sum[2 * j + 1] / n - m * m).max(0.0);
                    mean.push(m * s);
                    let sd = var.sqrt() * s;
                    std.push(if sd > 1e-12 { sd } else { 1.0 });
                    missing.push(1.0 - self.observed[j] / self.total_rows);
                }
                let standardizer = Standardizer {
                    mean,
                    std,
                    missing_rate: missing,
                };
                if let ModelSpec::Gbdt(params) = &self.spec.model {
                    // The boosting server's own statistics step is answered from the masked
                    // moments already aggregated: [rows, positives, per feature c, Σx, Σx²].
                    let mut server = GbdtServer::new(params.clone(), f)
                        .map_err(|e| FedError::Spec(e.to_string()))?;
                    let mut stats = vec![self.total_rows, self.positives[0]];
                    for j in 0..f {
                        let c = self.observed[j];
                        let (m, sd) = (standardizer.mean[j], standardizer.std[j]);
                        stats.extend_from_slice(&[c, c * m, c * (sd * sd + m * m)]);
                    }
                    server
                        .absorb(&stats)
                        .map_err(|e| FedError::Model(e.to_string()))?;
                    self.gbdt_standardizer = Some(standardizer);
                    self.stage = Stage::Gbdt {
                        server: Box::new(server),
                    };
                    self.step += 1;
                    return Ok(());
                }
                if let ModelSpec::Scorecard(sc) = &self.spec.model {
                    let ranges =
                        histogram_ranges(&standardizer.mean, &standardizer.std, sc.range_sd);
                    self.gbdt_standardizer = Some(standardizer);
                    self.stage = Stage::ScorecardHistogram { ranges };
                    self.step += 1;
                    return Ok(());
                }
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.spec.seed);
                let params = match &self.spec.model {
                    ModelSpec::LogisticRegression => ModelParams::LogisticRegression {
                        per_label: (0..l).map(|_| LinearParams::zeros(f)).collect(),
                    },
                    ModelSpec::Gbdt(_) | ModelSpec::Scorecard(_) => unreachable_gbdt()?,
                    ModelSpec::Mlp { hidden } => ModelParams::Mlp {
                        per_label: (0..l)
                            .map(|_| {
                                MlpParams::init(
                                    MlpSpec {
                                        inputs: f,
                                        hidden: hidden.clone(),
                                    },
                                    &mut rng,
                                )
                            })
                            .collect(),
                    },
                };
                self.optimizer = Some(OptimizerState::new(
                    &self.spec.learning.server_optimizer,
                    params.dim(),
                ));
                self.model = Some(TrainedModel {
                    features: self.data.features.clone(),
                    labels: self.data.labels.clone(),
                    standardizer,
                    params,
                });
                Stage::Train { round: 0 }
            }
            Stage::Train { round } => {
                let model = self
                    .model
                    .as_mut()
                    .ok_or_else(|| FedError::Model("training before the model exists".into()))?;
                let dim = model.params.dim();
                let (avg, loss) = match &self.spec.dp {
                    None => {
                        let n = sum[dim];
                        if n < 1.0 {
                            return Err(FedError::NoContributors { step: self.step });
                        }
                        let avg: Vec<f64> = sum[..dim].iter().map(|v| v / n).collect();
                        (avg, Some(sum[dim + 1] / (n * l as f64)))
                    }
                    Some(_) => {
                        self.dp_rounds += 1;
                        let c = sum[dim].round().max(1.0);
                        (sum[..dim].iter().map(|v| v / c).collect(), None)
                    }
                };
                let mut flat = model.params.flat();
                let opt = self
                    .optimizer
                    .as_mut()
                    .ok_or_else(|| FedError::Model("optimizer state missing".into()))?;
                opt.step(&self.spec.learning.server_optimizer, &mut flat, &avg);
                if flat.iter().any(|v| !v.is_finite()) {
                    return Err(FedError::Model(format!(
                        "training diverged in round {round}: non-finite parameters (lower the learning rate)"
                    )));
                }
                model.params.set_flat(&flat)?;
                let done = round + 1;
                self.curve.push(CurvePoint {
                    round: done,
                    train_loss: loss,
                    holdout: None,
                });
                if done % self.spec.eval_every == 0 || done >= self.spec.rounds {
                    Stage::Evaluate { after_round: done }
                } else {
                    Stage::Train { round: done }
                }
            }
            Stage::Gbdt { mut server } => {
                let before = server.trees_done();
                server
                    .absorb(sum)
                    .map_err(|e| FedError::Model(e.to_string()))?;
                if server.trees_done() > before {
                    self.curve.push(CurvePoint {
                        round: server.trees_done() as u64,
                        train_loss: None,
                        holdout: None,
                    });
                }
                if server.is_done() {
                    let model = server.model().cloned().ok_or_else(|| {
                        FedError::Model("boosting finished without a model".into())
                    })?;
                    let trees = server.trees_done() as u64;
                    self.model = Some(TrainedModel {
                        features: self.data.features.clone(),
                        labels: self.data.labels.clone(),
                        standardizer: self
                            .gbdt_standardizer
                            .clone()
                            .ok_or_else(|| FedError::Model("standardiser missing".into()))?,
                        params: ModelParams::Gbdt { model },
                    });
                    self.rounds_override = Some(trees);
                    Stage::Evaluate { after_round: trees }
                } else {
                    Stage::Gbdt { server }
                }
            }
            Stage::ScorecardHistogram { ranges } => {
                let sc = self
                    .scorecard_spec()
                    .ok_or_else(|| {
                        FedError::Model("scorecard stage in a non-scorecard job".into())
                    })?
                    .clone();
                let bins = ScorecardBins::from_fine_histogram(
                    self.data.features.clone(),
                    sum,
                    &ranges,
                    sc.fine_bins,
                    sc.bins,
                )
                .map_err(|e| FedError::Model(format!("scorecard binning: {e}")))?;
                let bins = if sc.group_categories {
                    bins.with_categories_grouped()
                } else {
                    bins
                };
                Stage::ScorecardCounts { bins }
            }
            Stage::ScorecardCounts { bins } => {
                let sc = self
                    .scorecard_spec()
                    .ok_or_else(|| {
                        FedError::Model("scorecard stage in a non-scorecard job".into())
                    })?
                    .clone();
                let woe = woe_iv(sum, &bins)
                    .map_err(|e| FedError::Data(format!("scorecard WOE: {e}")))?
                    .with_min_iv(sc.min_iv);
                let m = woe.selected().len();
                let card = Scorecard::from_logistic(woe, &vec![0.0; m], 0.0, sc.scaling())
                    .map_err(|e| FedError::Model(e.to_string()))?;
                let params = ModelParams::Scorecard {
                    card: Box::new(card),
                };
                self.optimizer = Some(OptimizerState::new(
                    &self.spec.learning.server_optimizer,
                    params.dim(),
                ));
                self.model = Some(TrainedModel {
                    features: self.data.features.clone(),
                    labels: self.data.labels.clone(),
                    standardizer: self
                        .gbdt_standardizer
                        .clone()
                        .ok_or_else(|| FedError::Model("standardiser missing".into()))?,
                    params,
                });
                Stage::Train { round: 0 }
            }
            Stage::Evaluate { after_round } => {
                let bins = self.spec.hist_bins;
                let per = 2 * bins + 2;
                let mut per_label = Vec::with_capacity(l);
                for li in 0..l {
                    let chunk = &sum[li * per..(li + 1) * per];
                    let h = ScoreHistogram::from_flat(&chunk[..2 * bins], bins)
                        .map_err(|e| FedError::Model(e.to_string()))?;
                    let m = BinaryMetrics::from_histogram(&h, chunk[2 * bins], chunk[2 * bins + 1]);
                    per_label.push((m, h));
                }
                let metrics: Vec<BinaryMetrics> =
                    per_label.iter().map(|(m, _)| m.clone()).collect();
                match self.curve.last_mut() {
                    Some(c) if c.round == after_round => c.holdout = Some(metrics),
                    _ => self.curve.push(CurvePoint {
                        round: after_round,
                        train_loss: None,
                        holdout: Some(metrics),
                    }),
                }
                self.last_eval = Some(Evaluation {
                    round: after_round,
                    per_label,
                });
                if after_round >= self.spec.rounds
                    || self.stopped_early.is_some()
                    || self.rounds_override.is_some()
                {
                    Stage::Done
                } else {
                    Stage::Train { round: after_round }
                }
            }
        };
        self.stage = next;
        self.step += 1;
        Ok(())
    }
}

/// The exported model: what `fedsilo score` reads and what a model-validation team reviews.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelArtifact {
    /// Format tag, `fedsilo-model/1`.
    pub format: String,
    pub job_id: String,
    pub task: Task,
    pub model_kind: String,
    /// True when the job finished all its rounds (false for an intermediate snapshot).
    pub complete: bool,
    pub rounds: u64,
    /// Readable coefficients per label: feature → coefficient on the standardised feature
    /// (logistic regression only).
    pub coefficients: Vec<BTreeMap<String, f64>>,
    /// Latest federated hold-out metrics per label.
    pub metrics: Vec<BinaryMetrics>,
    /// SHA-256 (hex) of the decoded aggregate of the round that produced this model.
    pub round_sha256: String,
    /// SHA-256 (hex) of the JSON of `model`.
    pub model_sha256: String,
    /// Scorecards only: the readable table, one row per (feature, bin) with its points.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scorecard: Vec<ScorecardRow>,
    /// Features, standardisation and parameters.
    pub model: TrainedModel,
}

impl ModelArtifact {
    pub const FORMAT: &'static str = "fedsilo-model/1";

    pub fn new(plan: &Plan, model: &TrainedModel, round_sha256: String) -> Self {
        let coefficients = match &model.params {
            ModelParams::LogisticRegression { per_label } => per_label
                .iter()
                .map(|p| {
                    let mut m: BTreeMap<String, f64> = model
                        .features
                        .iter()
                        .cloned()
                        .zip(p.coef.iter().copied())
                        .collect();
                    m.insert("(intercept)".into(), p.intercept);
                    m
                })
                .collect(),
            ModelParams::Scorecard { card } => {
                let mut m: BTreeMap<String, f64> = card
                    .woe
                    .selected()
                    .iter()
                    .map(|&j| format!("WOE({})", card.woe.features[j].name))
                    .zip(card.coef.iter().copied())
                    .collect();
                m.insert("(intercept)".into(), card.intercept);
                vec![m]
            }
            ModelParams::Mlp { .. } | ModelParams::Gbdt { .. } => Vec::new(),
        };
        let scorecard = match &model.params {
            ModelParams::Scorecard { card } => card.rows(),
            _ => Vec::new(),
        };
        let model_sha256 = serde_json::to_vec(model)
            .map(|b| {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(&b))
            })
            .unwrap_or_default();
        ModelArtifact {
            format: Self::FORMAT.into(),
            job_id: plan.spec.job_id.clone(),
            task: plan.spec.task,
            model_kind: plan.spec.model.kind_name().into(),
            complete: plan.is_done(),
            rounds: plan.rounds_done(),
            coefficients,
            metrics: plan
                .last_eval
                .as_ref()
                .map(|e| e.per_label.iter().map(|(m, _)| m.clone()).collect())
                .unwrap_or_default(),
            round_sha256,
            model_sha256,
            scorecard,
            model: model.clone(),
        }
    }

    /// Reads an artifact, refusing other formats with a clear error.
    pub fn from_json(text: &str) -> Result<Self, FedError> {
        let a: ModelArtifact = serde_json::from_str(text)
            .map_err(|e| FedError::Model(format!("not a fedsilo model: {e}")))?;
        if a.format != Self::FORMAT {
            return Err(FedError::Model(format!(
                "model format '{}' is not supported (expected {})",
                a.format,
                Self::FORMAT
            )));
        }
        // A model file is outside input too: its sizes and values are checked once here, so
        // scoring and `model show` never index past what the file holds.
        a.model.validate().map_err(FedError::BadModel)?;
        Ok(a)
    }
}

pub mod plausible;

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};

    /// Synthetic participants: x0 informative, x1 large-scale noise, x2 tiny-scale informative,
    /// a few missing values.
    fn participant(seed: u64, n: usize, shift: f32) -> LocalData {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut x = Array2::<f32>::zeros((n, 3));
        let mut y = Array2::<f32>::zeros((n, 1));
        for r in 0..n {
            let a: f32 = rng.random_range(-2.0..2.0) + shift;
            let b: f32 = rng.random_range(0.0..1e5);
            let c: f32 = rng.random_range(0.0..1e-3);
            let z = 1.5 * a + 2000.0 * (c - 5e-4) - 0.5;
            let p = 1.0 / (1.0 + (-z).exp());
            x[[r, 0]] = a;
            x[[r, 1]] = if r % 50 == 0 { f32::NAN } else { b };
            x[[r, 2]] = c;
            y[[r, 0]] = if rng.random::<f32>() < p { 1.0 } else { 0.0 };
        }
        let t = Table {
            feature_names: vec!["a".into(), "b".into(), "c".into()],
            x,
            label_names: vec!["y".into()],
            labels: y,
            ids: (0..n).map(|i| i.to_string()).collect(),
        };
        let (train, holdout) = t.split_holdout(0.2, seed);
        LocalData { train, holdout }
    }

    /// Three non-IID participants (shifted x0) of different sizes.
    fn three_participants() -> Vec<LocalData> {
        vec![
            participant(1, 1500, -0.5),
            participant(2, 1200, 0.0),
            participant(3, 900, 0.7),
        ]
    }

    fn spec() -> JobSpec {
        JobSpec {
            job_id: "t".into(),
            dataset: "d".into(),
            task: Task::Risk,
            model: ModelSpec::LogisticRegression,
            features: vec![],
            labels: vec![],
            rounds: 12,
            min_participants: 2,
            threshold: None,
            neighbours: None,
            learning: Learning::default(),
            dp: None,
            eval_every: 4,
            hist_bins: 1000,
            seed: 1,
            phase_timeout_ms: 1000,
            max_participants: 100,
            absence_patience_ms: DEFAULT_ABSENCE_PATIENCE_MS,
        }
    }

    /// Runs a plan with plain (unmasked) sums: the arithmetic secure aggregation reproduces.
    fn run(plan: &mut Plan, parts: &[LocalData]) {
        let mut caches: Vec<LocalCache> = parts.iter().map(|_| LocalCache::default()).collect();
        while let Some(step) = plan.next_step() {
            let mut sum = vec![0.0; step.len];
            for (p, c) in parts.iter().zip(caches.iter_mut()) {
                let v = compute(&step.instruction, p, c).unwrap();
                assert_eq!(v.len(), step.len);
                for (s, x) in sum.iter_mut().zip(&v) {
                    assert!(
                        x.abs() <= step.max_abs,
                        "{x} exceeds the step's bound {}",
                        step.max_abs
                    );
                    *s += x;
                }
            }
            plan.absorb(&sum, parts.len()).unwrap();
        }
    }

    #[test]
    fn plan_standardises_with_global_moments_and_learns() {
        let parts = vec![
            participant(1, 2000, -0.5),
            participant(2, 1500, 0.0),
            participant(3, 1000, 0.7),
        ];
        let mut plan = Plan::new(
            spec(),
            vec!["a".into(), "b".into(), "c".into()],
            vec!["y".into()],
        )
        .unwrap();
        run(&mut plan, &parts);
        assert!(plan.is_done());
        let model = plan.model().unwrap();
        // Global moments equal the pooled ones (observed values only).
        for j in 0..3 {
            let vals: Vec<f64> = parts
                .iter()
                .flat_map(|p| p.train.x.column(j).to_vec())
                .filter(|v| !v.is_nan())
                .map(|v| v as f64)
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let sd = (vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / vals.len() as f64).sqrt();
            let (gm, gs) = (model.standardizer.mean[j], model.standardizer.std[j]);
            assert!(
                (gm - m).abs() <= 1e-6 * sd.max(1e-9) + 1e-9 * m.abs(),
                "mean {j}: {gm} vs {m}"
            );
            assert!((gs - sd).abs() <= 1e-4 * sd, "sd {j}: {gs} vs {sd}");
        }
        let eval = plan.last_eval.as_ref().unwrap();
        assert!(
            eval.per_label[0].0.auc > 0.75,
            "AUC {}",
            eval.per_label[0].0.auc
        );
        assert_eq!(plan.curve.iter().filter(|c| c.holdout.is_some()).count(), 3);
        // The checkpoint is the plan: a round trip changes nothing.
        let back: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
        assert_eq!(back, plan);
    }

    #[test]
    fn gbdt_plan_grows_trees_from_sums_and_matches_pooled_boosting() {
        let parts = three_participants();
        let params = GbdtParams {
            n_trees: 8,
            max_depth: 3,
            ..GbdtParams::default()
        };
        let mut s = spec();
        s.model = ModelSpec::Gbdt(params.clone());
        let mut plan = Plan::new(
            s,
            vec!["a".into(), "b".into(), "c".into()],
            vec!["y".into()],
        )
        .unwrap();
        run(&mut plan, &parts);
        assert!(plan.is_done());
        assert_eq!(plan.rounds_done(), 8);
        let auc = plan.last_eval.as_ref().unwrap().per_label[0].0.auc;
        assert!(auc > 0.8, "gbdt AUC {auc}");
        let model = plan.model().unwrap();
        assert!(model.uses_raw_features());
        // The trees predict the same on a participant's rows through the public API.
        let p = model.predict(&parts[0].holdout).unwrap();
        assert_eq!(p.nrows(), parts[0].holdout.n_rows());
        let back: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
        assert_eq!(back, plan);
    }

    #[test]
    fn scorecard_plan_bins_and_counts_from_sums_and_approaches_the_pooled_fit() {
        let parts = three_participants();
        // 8 bins over ~2,900 rows give a pure-noise feature an IV of about 0.03 by chance,
        // so this test drops below 0.05.
        let sc = ScorecardSpec {
            bins: 8,
            min_iv: 0.05,
            ..ScorecardSpec::default()
        };
        let mut s = spec();
        s.model = ModelSpec::Scorecard(sc.clone());
        s.rounds = 40;
        s.learning.learning_rate = 0.2;
        let names: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let mut plan = Plan::new(s.clone(), names.clone(), vec!["y".into()]).unwrap();
        run(&mut plan, &parts);
        assert!(plan.is_done());
        let model = plan.model().unwrap().clone();
        let ModelParams::Scorecard { card } = &model.params else {
            panic!("not a scorecard: {:?}", model.params)
        };
        // The WOE table is exactly the one the pooled rows give with the same bins: the
        // counts were summed, not estimated.
        let trains: Vec<&Table> = parts.iter().map(|p| &p.train).collect();
        let x = ndarray::concatenate(
            Axis(0),
            &trains.iter().map(|t| t.x.view()).collect::<Vec<_>>(),
        )
        .unwrap();
        let y = ndarray::concatenate(
            Axis(0),
            &trains.iter().map(|t| t.labels.view()).collect::<Vec<_>>(),
        )
        .unwrap();
        let pooled_counts = scorecard_counts(x.view(), y.column(0), &card.woe.bins).unwrap();
        let pooled_woe = woe_iv(&pooled_counts, &card.woe.bins)
            .unwrap()
            .with_min_iv(sc.min_iv);
        assert_eq!(card.woe, pooled_woe);
        // x0 and x2 carry the signal, x1 is noise: the IV rule keeps the first and last.
        let kept: Vec<&str> = card
            .woe
            .selected()
            .iter()
            .map(|&j| names[j].as_str())
            .collect();
        assert_eq!(kept, ["a", "c"], "IVs {:?}", card.woe.features);
        // The pooled reference (same pipeline, Newton fit) ranks the hold-out alike.
        let pooled = crate::scorecard::fit_pooled(
            names.clone(),
            x.view(),
            y.column(0),
            &sc,
            s.learning.l2,
            1.0,
        )
        .unwrap();
        let hold: Vec<&Table> = parts.iter().map(|p| &p.holdout).collect();
        let xh = ndarray::concatenate(
            Axis(0),
            &hold.iter().map(|t| t.x.view()).collect::<Vec<_>>(),
        )
        .unwrap();
        let yh: Vec<f32> = hold
            .iter()
            .flat_map(|t| t.labels.column(0).to_vec())
            .collect();
        let auc_of =
            |pts: Vec<f64>| crate::metrics::auc(&pts.iter().map(|p| -p).collect::<Vec<_>>(), &yh);
        let fed_auc = auc_of(card.score_points(xh.view()).unwrap());
        let pooled_auc = auc_of(pooled.score_points(xh.view()).unwrap());
        assert!(fed_auc > 0.75, "{fed_auc}");
        assert!(
            (fed_auc - pooled_auc).abs() < 0.005,
            "federated {fed_auc} vs pooled {pooled_auc}"
        );
        // Points and probability agree through the public API, and the export has the table.
        let p = model.predict(&parts[0].holdout).unwrap();
        let pts = model.points(&parts[0].holdout).unwrap().unwrap();
        for (pr, pt) in p.column(0).iter().zip(&pts) {
            assert!((card.probability_of_bad(*pt) - pr).abs() < 1e-6);
        }
        let artifact = ModelArtifact::new(&plan, &model, "00".repeat(32));
        assert_eq!(artifact.model_kind, "scorecard");
        assert_eq!(
            artifact.scorecard.len(),
            card.points.iter().map(Vec::len).sum::<usize>()
        );
        let back: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
        assert_eq!(back, plan);
        // Scorecards refuse what they cannot do.
        let mut bad = s.clone();
        bad.labels = vec!["y".into(), "z".into()];
        assert!(bad.validate().unwrap_err().to_string().contains("labels"));
        let mut bad = s;
        bad.model = ModelSpec::Scorecard(ScorecardSpec {
            bins: 1,
            ..ScorecardSpec::default()
        });
        assert!(bad.validate().unwrap_err().to_string().contains("bins"));
    }

    #[test]
    fn one_class_federation_and_bad_sums_are_refused() {
        let mut parts = vec![participant(1, 300, 0.0), participant(2, 300, 0.0)];
        for p in parts.iter_mut() {
            p.train.labels.fill(0.0);
        }
        let mut plan = Plan::new(spec(), vec!["a".into()], vec!["y".into()]).unwrap();
        let step = plan.next_step().unwrap();
        assert!(matches!(
            plan.absorb(&[0.0], 2),
            Err(FedError::SumLength { .. })
        ));
        let mut sum = vec![0.0; step.len];
        for p in &parts {
            let v = compute(&step.instruction, p, &mut LocalCache::default()).unwrap();
            sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
        }
        let err = plan.absorb(&sum, 2).unwrap_err().to_string();
        assert!(err.contains("only one class"), "{err}");
        let missing = Instruction::Scale {
            data: JobData {
                dataset: "d".into(),
                features: vec!["nope".into()],
                labels: vec!["y".into()],
            },
        };
        let e = compute(&missing, &parts[0], &mut LocalCache::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("'nope'"), "{e}");
    }

    #[test]
    fn spec_validation_names_the_field() {
        let mut s = spec();
        s.rounds = 0;
        assert!(s.validate().unwrap_err().to_string().contains("rounds"));
        let mut s = spec();
        s.min_participants = 1;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("min_participants"));
        let mut s = spec();
        s.learning.learning_rate = -1.0;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("learning_rate"));
    }
}
