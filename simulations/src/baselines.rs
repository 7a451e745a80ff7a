//! Baselines no real federation could compute, because they need every institution's rows:
//! the **pooled** model (trained centrally on all institutions' training rows, the upper
//! bound) and each institution's **local-only** model (trained on its own rows alone).
//!
//! They are computed here, by the simulator, outside the federation and after it: nothing in
//! this module touches the coordinator, the workers or secure aggregation, and the report
//! labels every figure from here as a baseline. Each is [`fedsilo_task::fit_pooled`] of the
//! job's own spec on the rows in question.

use fedsilo_ml::metrics::{auc, BinaryMetrics};
use fedsilo_ml::table::Table;
use fedsilo_task::{fit_pooled, JobSpec, LocalData, TrainedModel};
use ndarray::{concatenate, Axis};

/// Why the baselines' tables could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("stacking tables: there are none")]
    NoTables,
    #[error("stacking tables")]
    Shape(#[from] ndarray::ShapeError),
}

/// Rows of several tables stacked (same columns), in the order given.
pub fn stack(tables: &[&Table]) -> Result<Table, BaselineError> {
    let first = tables.first().ok_or(BaselineError::NoTables)?;
    let xs: Vec<_> = tables.iter().map(|t| t.x.view()).collect();
    let ys: Vec<_> = tables.iter().map(|t| t.labels.view()).collect();
    Ok(Table {
        feature_names: first.feature_names.clone(),
        x: concatenate(Axis(0), &xs)?,
        label_names: first.label_names.clone(),
        labels: concatenate(Axis(0), &ys)?,
        ids: tables.iter().flat_map(|t| t.ids.iter().cloned()).collect(),
    })
}

/// AUC of `model` on `t` for label index `label` (NaN when `t` has one class only, or the
/// model cannot score it).
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

/// The baselines of one job: the pooled model and every institution's local-only model
/// (`None` where a fit failed, e.g. on an institution with one class, or when the scenario
/// turned baselines off), and the pooled hold-out rows they are compared on.
#[derive(Debug)]
pub struct Baselines {
    pub pooled: Option<TrainedModel>,
    /// In institution order.
    pub local: Vec<Option<TrainedModel>>,
    /// Every institution's hold-out rows, stacked in institution order.
    pub pooled_holdout: Table,
}

impl Baselines {
    /// Fits `spec` (its features and labels resolved) on the pooled training rows and on each
    /// institution's own, when `enabled`.
    pub fn fit(spec: &JobSpec, locals: &[LocalData], enabled: bool) -> Result<Self, BaselineError> {
        let trains: Vec<&Table> = locals.iter().map(|l| &l.train).collect();
        let holds: Vec<&Table> = locals.iter().map(|l| &l.holdout).collect();
        let pooled_train = stack(&trains)?;
        let pooled_holdout = stack(&holds)?;
        let (pooled, local) = if enabled {
            (
                fit_pooled(spec, &pooled_train).ok(),
                trains.iter().map(|t| fit_pooled(spec, t).ok()).collect(),
            )
        } else {
            (None, vec![None; trains.len()])
        };
        Ok(Baselines {
            pooled,
            local,
            pooled_holdout,
        })
    }

    /// The pooled model's figures on the pooled hold-out rows, for label index `label`.
    pub fn pooled_metrics(&self, label: usize) -> Option<BinaryMetrics> {
        let m = self.pooled.as_ref()?;
        let p = m.predict(&self.pooled_holdout).ok()?;
        let y = fedsilo_task::select_labels(&self.pooled_holdout, &m.labels).ok()?;
        let scores: Vec<f64> = p.column(label).to_vec();
        let ys: Vec<f32> = y.column(label).to_vec();
        Some(BinaryMetrics::from_scores(&scores, &ys))
    }
}
