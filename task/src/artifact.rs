//! The exported model: what `fedsilo score` reads and what a model-validation team reviews.

use std::collections::BTreeMap;

use fedsilo_ml::metrics::BinaryMetrics;
use fedsilo_ml::scorecard::ScorecardRow;
use serde::{Deserialize, Serialize};

use crate::error::FedError;
use crate::model::{ModelParams, TrainedModel};
use crate::plan::Plan;
use crate::spec::{DpLevel, Task};

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
    /// Jobs with differential privacy: what the model's release promises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<ArtifactPrivacy>,
    /// Scorecards only: the readable table, one row per (feature, bin) with its points.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scorecard: Vec<ScorecardRow>,
    /// Features, standardisation and parameters.
    pub model: TrainedModel,
}

/// The differential privacy a model was trained under, as of the rounds it holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactPrivacy {
    /// Whom the job's budget protects: `record` or `institution`.
    pub level: DpLevel,
    /// ε for one customer's record; `None`: no guarantee at that level.
    pub epsilon_record: Option<f64>,
    /// ε for one institution's whole contribution; `None`: no guarantee at that level.
    pub epsilon_institution: Option<f64>,
    pub delta: f64,
    /// The noise multiplier every round used (calibrated when the spec gave none).
    pub noise_multiplier: f64,
    pub clip: f64,
    /// Record level: each row's probability of taking part in a round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_rate: Option<f64>,
    /// Noisy training rounds the ε covers.
    pub dp_rounds: u64,
}

impl ArtifactPrivacy {
    fn of(plan: &Plan) -> Option<Self> {
        let (dp, spent) = plan.privacy()?;
        let finite = |e: f64| e.is_finite().then_some(e);
        Some(ArtifactPrivacy {
            level: dp.level,
            epsilon_record: finite(spent.record),
            epsilon_institution: finite(spent.institution),
            delta: dp.delta,
            noise_multiplier: dp.sigma(),
            clip: dp.clip,
            sampling_rate: dp.sampling_rate,
            dp_rounds: plan.dp_rounds(),
        })
    }
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
            job_id: plan.spec().job_id.clone(),
            task: plan.spec().task,
            model_kind: plan.spec().model.kind_name().into(),
            complete: plan.is_done(),
            rounds: plan.rounds_done(),
            coefficients,
            metrics: plan
                .last_eval()
                .map(|e| e.per_label.iter().map(|(m, _)| m.clone()).collect())
                .unwrap_or_default(),
            round_sha256,
            model_sha256,
            privacy: ArtifactPrivacy::of(plan),
            scorecard,
            model: model.clone(),
        }
    }

    /// Reads an artifact, refusing other formats with a clear error.
    pub fn from_json(text: &str) -> Result<Self, FedError> {
        let a: ModelArtifact = serde_json::from_str(text).map_err(FedError::NotAModel)?;
        if a.format != Self::FORMAT {
            return Err(FedError::ModelFormat {
                found: a.format,
                expected: Self::FORMAT,
            });
        }
        // A model file is outside input too: its sizes and values are checked once here, so
        // scoring and `model show` never index past what the file holds.
        a.model.validate().map_err(FedError::BadModel)?;
        Ok(a)
    }
}
