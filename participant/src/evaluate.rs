//! A model on a labelled file, as a model-validation team checks it: AUC, KS, log-loss, the
//! lift table by decile and calibration by decile (mean predicted probability against the
//! observed rate), per label. Every figure comes from `fedsilo_ml::metrics` on the exact
//! scores; nothing leaves the institution.

use fedsilo_ml::metrics::{self, Band, BinaryMetrics};
use fedsilo_ml::table::Table;
use fedsilo_task::TrainedModel;
use serde::{Deserialize, Serialize};

/// Most points kept of each curve (evenly spaced by position; first and last kept).
pub const CURVE_POINTS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error("the model predicts label '{label}' but the data has no such label column (labels read: {found}); add it to the schema's [[labels]] and the file")]
    MissingLabel { label: String, found: String },
    #[error("scoring")]
    Model(#[from] fedsilo_task::FedError),
}

/// The figures for one label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelEvaluation {
    pub label: String,
    /// AUC, KS, log-loss, top-decile lift, class counts (exact, `metrics::BinaryMetrics`).
    pub metrics: BinaryMetrics,
    /// Where the KS gap is: (population share, positive share, negative share).
    pub ks_at: (f64, f64, f64),
    /// Ten bands by score, highest first: the lift table and the calibration table.
    pub deciles: Vec<Band>,
    /// ROC points (false positive rate, true positive rate), at most [`CURVE_POINTS`].
    pub roc: Vec<(f64, f64)>,
    /// KS table (population share, cumulative positive share, cumulative negative share).
    pub ks_curve: Vec<(f64, f64, f64)>,
    /// Cumulative gains (population share, share of positives captured).
    pub gains: Vec<(f64, f64)>,
}

/// What `fedsilo evaluate` writes as evaluation.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub format: String,
    pub model_kind: String,
    pub data: String,
    pub rows: usize,
    pub labels: Vec<LabelEvaluation>,
}

impl Evaluation {
    pub const FORMAT: &'static str = "fedsilo-evaluation/1";
}

/// At most `max` points of `v`, evenly spaced by position, first and last kept.
fn thin<T: Copy>(v: Vec<T>, max: usize) -> Vec<T> {
    if v.len() <= max || max < 2 {
        return v;
    }
    let last = v.len() - 1;
    (0..max)
        .filter_map(|k| v.get(k * last / (max - 1)).copied())
        .collect()
}

/// Evaluates `model` on `table`, whose labels must include every model label.
pub fn evaluate(
    model: &TrainedModel,
    model_kind: &str,
    table: &Table,
    data_name: &str,
) -> Result<Evaluation, EvaluateError> {
    let mut columns = Vec::with_capacity(model.labels.len());
    for label in &model.labels {
        let Some(j) = table.label_names.iter().position(|l| l == label) else {
            return Err(EvaluateError::MissingLabel {
                label: label.clone(),
                found: if table.label_names.is_empty() {
                    "none".into()
                } else {
                    table.label_names.join(", ")
                },
            });
        };
        columns.push(j);
    }
    let p = model.predict(table)?;
    let mut labels = Vec::with_capacity(columns.len());
    for (l, (label, &j)) in model.labels.iter().zip(&columns).enumerate() {
        let scores: Vec<f64> = p.column(l).to_vec();
        let y: Vec<f32> = table.label(j).to_vec();
        let m = BinaryMetrics::from_scores(&scores, &y);
        let ks_curve = metrics::ks_curve(&scores, &y);
        let ks_at = ks_curve
            .iter()
            .copied()
            .max_by(|a, b| (a.1 - a.2).abs().total_cmp(&(b.1 - b.2).abs()))
            .unwrap_or((0.0, 0.0, 0.0));
        labels.push(LabelEvaluation {
            label: label.clone(),
            metrics: m,
            ks_at,
            deciles: metrics::band_table(&scores, &y, 10),
            roc: thin(metrics::roc_curve(&scores, &y), CURVE_POINTS),
            ks_curve: thin(ks_curve, CURVE_POINTS),
            gains: thin(metrics::gains_curve(&scores, &y), CURVE_POINTS),
        });
    }
    Ok(Evaluation {
        format: Evaluation::FORMAT.into(),
        model_kind: model_kind.into(),
        data: data_name.into(),
        rows: table.n_rows(),
        labels,
    })
}
