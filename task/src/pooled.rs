//! The pooled reference: the model a job's spec describes, trained centrally on one table.
//!
//! No real federation can do this (it needs every institution's rows in one place); the
//! simulator and the tests use it as the reference a federated model is compared with — on
//! the pooled rows as the upper bound, on one institution's rows as its local-only model.
//! It fits with its own standardisation (the table's means and deviations), and for every
//! model kind calls the same `fedsilo_ml` fit the federated plan converges to.

use fedsilo_ml::table::{expand_feature_names, Table, UnknownFeatures};
use fedsilo_ml::{gbdt, linear, mlp, scorecard};
use ndarray::Axis;
use rand::SeedableRng;

use crate::error::FedError;
use crate::model::{ModelParams, Standardizer, TrainedModel};
use crate::spec::{JobSpec, ModelSpec};
use crate::validate::InstructionError;

/// Why the pooled reference could not be fitted.
#[derive(Debug, thiserror::Error)]
pub enum PooledError {
    #[error("the table has no label column")]
    NoLabel,
    #[error("selecting the job's columns")]
    Features(#[from] UnknownFeatures),
    #[error("selecting the job's columns")]
    Columns(#[source] FedError),
    #[error("standardising the table")]
    Standardize(#[source] InstructionError),
    #[error("logistic regression")]
    Linear(#[from] linear::LinearError),
    #[error("MLP")]
    Mlp(#[from] mlp::MlpError),
    #[error("gradient-boosted trees")]
    Gbdt(#[from] gbdt::GbdtError),
    #[error("scorecard")]
    Scorecard(#[from] scorecard::ScorecardError),
}

/// Trains the model `spec` describes centrally on `table`: `spec.features` resolved against
/// the table's columns as a launch resolves them (empty = every feature, a raw categorical
/// name = all its one-hot columns), `spec.labels` likewise (empty = the first label).
/// MLPs train `learning.local_epochs × rounds` epochs from an initialisation seeded by
/// `spec.seed`; the other kinds are deterministic.
pub fn fit_pooled(spec: &JobSpec, table: &Table) -> Result<TrainedModel, PooledError> {
    let features = if spec.features.is_empty() {
        table.feature_names.clone()
    } else {
        expand_feature_names(&spec.features, &table.feature_names)?
    };
    let labels = if spec.labels.is_empty() {
        vec![table
            .label_names
            .first()
            .cloned()
            .ok_or(PooledError::NoLabel)?]
    } else {
        spec.labels.clone()
    };
    let x = crate::select_columns(table, &features).map_err(PooledError::Columns)?;
    let y = crate::select_labels(table, &labels).map_err(PooledError::Columns)?;
    let standardizer = standardizer_of(x.view());
    let xs = standardizer
        .apply(x.view())
        .map_err(PooledError::Standardize)?;
    let learning = &spec.learning;
    let pos_weight = learning.pos_weight.unwrap_or(1.0);
    let params = match &spec.model {
        ModelSpec::Gbdt(p) => ModelParams::Gbdt {
            model: gbdt::fit_pooled(x.view(), y.column(0), p)?,
        },
        ModelSpec::Scorecard(sc) => ModelParams::Scorecard {
            card: Box::new(scorecard::fit_pooled(
                features.clone(),
                x.view(),
                y.column(0),
                sc,
                learning.l2,
                pos_weight,
            )?),
        },
        ModelSpec::LogisticRegression => ModelParams::LogisticRegression {
            per_label: y
                .axis_iter(Axis(1))
                .map(|yl| linear::fit_pooled(xs.view(), yl, learning.l2, pos_weight))
                .collect::<Result<_, _>>()?,
        },
        ModelSpec::Mlp { hidden } => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
            let cfg = linear::LocalTrainConfig {
                epochs: learning.local_epochs * spec.rounds as usize,
                learning_rate: learning.learning_rate,
                batch_size: learning.batch_size,
                l2: learning.l2,
                pos_weight,
                prox_mu: 0.0,
            };
            ModelParams::Mlp {
                per_label: y
                    .axis_iter(Axis(1))
                    .map(|yl| {
                        let init = mlp::MlpParams::init(
                            mlp::MlpSpec {
                                inputs: features.len(),
                                hidden: hidden.clone(),
                            },
                            &mut rng,
                        );
                        mlp::mlp_local_train(&init, xs.view(), yl, &cfg, &mut rng)
                    })
                    .collect::<Result<_, _>>()?,
            }
        }
    };
    Ok(TrainedModel {
        features,
        labels,
        standardizer,
        params,
    })
}

/// Means, deviations (1 for a constant column) and missing rates of `x`'s columns, over the
/// values present: the standardisation [`fit_pooled`] fits with (also the one each party of
/// a vertical model applies to its own columns, so the joined table is standardised alike).
pub fn standardizer_of(x: ndarray::ArrayView2<f32>) -> Standardizer {
    let mut mean = Vec::new();
    let mut std = Vec::new();
    let mut missing_rate = Vec::new();
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
        missing_rate.push(1.0 - vals.len() as f64 / x.nrows().max(1) as f64);
    }
    Standardizer {
        mean,
        std,
        missing_rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsilo_ml::gbdt::GbdtParams;
    use fedsilo_ml::scorecard::ScorecardSpec;
    use ndarray::Array2;

    /// 400 rows: `x` predicts the label, `c=a`/`c=b` is a one-hot pair, `noise` is noise.
    fn table() -> Table {
        let n = 400;
        let mut x = Array2::<f32>::zeros((n, 4));
        let mut y = Array2::<f32>::zeros((n, 1));
        for i in 0..n {
            let v = (i as f32 * 0.37).sin() * 3.0;
            x[[i, 0]] = v;
            x[[i, 1]] = f32::from(u8::from(i % 3 == 0));
            x[[i, 2]] = 1.0 - x[[i, 1]];
            x[[i, 3]] = ((i * 7919) % 13) as f32;
            y[[i, 0]] = f32::from(u8::from(v + 0.5 * x[[i, 1]] > 0.2));
        }
        Table {
            feature_names: vec!["x".into(), "c=a".into(), "c=b".into(), "noise".into()],
            x,
            label_names: vec!["bad".into()],
            labels: y,
            ids: (0..n).map(|i| i.to_string()).collect(),
        }
    }

    fn spec(model: ModelSpec, features: &[&str]) -> JobSpec {
        let mut spec: JobSpec = serde_json::from_str(r#"{"dataset": "d", "rounds": 5}"#).unwrap();
        spec.model = model;
        spec.features = features.iter().map(|f| f.to_string()).collect();
        spec
    }

    fn auc(m: &TrainedModel, t: &Table) -> f64 {
        let p = m.predict(t).unwrap();
        let s: Vec<f64> = p.column(0).to_vec();
        let y: Vec<f32> = t.labels.column(0).to_vec();
        fedsilo_ml::metrics::auc(&s, &y)
    }

    #[test]
    fn every_model_kind_fits_the_columns_a_launch_would_resolve() {
        let t = table();
        for model in [
            ModelSpec::LogisticRegression,
            ModelSpec::Mlp { hidden: vec![4] },
            ModelSpec::Gbdt(GbdtParams {
                n_trees: 10,
                ..GbdtParams::default()
            }),
            ModelSpec::Scorecard(ScorecardSpec::default()),
        ] {
            let kind = model.kind_name();
            // A raw categorical name stands for its one-hot columns; empty labels = the first.
            let m = fit_pooled(&spec(model, &["x", "c"]), &t).unwrap();
            assert_eq!(m.features, ["x", "c=a", "c=b"], "{kind}");
            assert_eq!(m.labels, ["bad"], "{kind}");
            let fitted = match &m.params {
                ModelParams::LogisticRegression { .. } => "logistic_regression",
                ModelParams::Mlp { .. } => "mlp",
                ModelParams::Gbdt { .. } => "gbdt",
                ModelParams::Scorecard { .. } => "scorecard",
            };
            assert_eq!(fitted, kind);
            let a = auc(&m, &t);
            assert!(a > 0.9, "{kind}: AUC {a}");
        }
        let m = fit_pooled(&spec(ModelSpec::LogisticRegression, &[]), &t).unwrap();
        assert_eq!(m.features.len(), 4, "empty features = every feature");
    }

    #[test]
    fn logistic_regression_is_the_pooled_newton_fit_on_standardised_columns() {
        let t = table();
        let m = fit_pooled(&spec(ModelSpec::LogisticRegression, &["x"]), &t).unwrap();
        let x = crate::select_columns(&t, &m.features).unwrap();
        let xs = m.standardizer.apply(x.view()).unwrap();
        let direct = linear::fit_pooled(xs.view(), t.labels.column(0), 1e-4, 1.0).unwrap();
        assert_eq!(
            m.params,
            ModelParams::LogisticRegression {
                per_label: vec![direct]
            }
        );
    }

    #[test]
    fn refusals_are_typed() {
        let t = table();
        let e = fit_pooled(&spec(ModelSpec::LogisticRegression, &["nope"]), &t).unwrap_err();
        assert!(matches!(e, PooledError::Features(_)), "{e}");
        let mut no_label = table();
        no_label.label_names.clear();
        no_label.labels = Array2::zeros((400, 0));
        let e = fit_pooled(&spec(ModelSpec::LogisticRegression, &[]), &no_label).unwrap_err();
        assert!(matches!(e, PooledError::NoLabel), "{e}");
    }
}
