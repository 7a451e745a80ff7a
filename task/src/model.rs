//! A trained model as participants and the scorer use it.

use ndarray::{Array2, ArrayView1, Axis, CowArray, Ix2};
use serde::{Deserialize, Serialize};

use fedsilo_ml::gbdt::{CompiledForest, GbdtModel};
use fedsilo_ml::linear::{self, LinearParams};
use fedsilo_ml::mlp::{self, MlpParams};
use fedsilo_ml::scorecard::{woe_transform, Scorecard};
use fedsilo_ml::table::Table;

use crate::compute::select_columns;
use crate::error::{FedError, ModelError};
use crate::validate::InstructionError;

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
    pub(crate) fn dim(&self) -> usize {
        match self {
            ModelParams::LogisticRegression { per_label } => {
                per_label.iter().map(|p| p.coef.len() + 1).sum()
            }
            ModelParams::Mlp { per_label } => per_label.iter().map(|p| p.flat.len()).sum(),
            ModelParams::Gbdt { .. } => 0,
            ModelParams::Scorecard { card } => card.coef.len() + 1,
        }
    }
    pub(crate) fn flat(&self) -> Vec<f64> {
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
    pub(crate) fn set_flat(&mut self, v: &[f64]) -> Result<(), FedError> {
        if v.len() != self.dim() {
            return Err(FedError::Internal(
                "flat parameter vector of the wrong length",
            ));
        }
        let mut off = 0;
        match self {
            ModelParams::LogisticRegression { per_label } => {
                for p in per_label.iter_mut() {
                    let n = p.coef.len() + 1;
                    *p = LinearParams::from_flat(&v[off..off + n])?;
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
                return Err(ModelError::Unsupported("trees have no flat parameter vector").into())
            }
            ModelParams::Scorecard { card } => {
                let n = card.coef.len() + 1;
                let lp = LinearParams::from_flat(&v[..n])?;
                **card = Scorecard::from_logistic(
                    card.woe.clone(),
                    &lp.coef,
                    lp.intercept,
                    card.scaling,
                )?;
            }
        }
        Ok(())
    }
}

/// The logistic regression inside a scorecard (coefficients on the WOE columns).
pub(crate) fn card_linear(card: &Scorecard) -> LinearParams {
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
    /// malformed model (e.g. read from a file) is refused ([`TrainedModel::validate`]). Each
    /// call checks (and, for trees, compiles) the model again: to score many tables, use
    /// [`TrainedModel::compile`] once.
    pub fn predict(&self, table: &Table) -> Result<Array2<f64>, FedError> {
        self.compile()?.predict(table)
    }

    /// The model checked once and prepared for scoring many tables: a GBDT's trees compiled
    /// into a [`CompiledForest`] (what `fedsilo score` does before its first chunk).
    pub fn compile(&self) -> Result<CompiledModel<'_>, FedError> {
        self.validate().map_err(FedError::BadModel)?;
        let forest = match &self.params {
            ModelParams::Gbdt { model } => Some(model.compile()?),
            _ => None,
        };
        Ok(CompiledModel {
            model: self,
            forest,
        })
    }

    /// Scorecard points per row (higher = better credit); `None` for other models.
    pub fn points(&self, table: &Table) -> Result<Option<Vec<f64>>, FedError> {
        match &self.params {
            ModelParams::Scorecard { card } => {
                self.validate().map_err(FedError::BadModel)?;
                let x = select_columns(table, &self.features)?;
                Ok(Some(card.score_points(x.view())?))
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
    pub(crate) fn predict_standardized(
        &self,
        xs: ndarray::ArrayView2<f32>,
    ) -> Result<Array2<f64>, FedError> {
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
        self.columns(xs.nrows(), &per_label)
    }

    /// Per-label probabilities as a rows × labels array.
    fn columns(&self, rows: usize, per_label: &[Vec<f64>]) -> Result<Array2<f64>, FedError> {
        if per_label.len() != self.labels.len() {
            return Err(FedError::BadModel(InstructionError::ModelSize {
                what: "per-label models",
                expected: self.labels.len(),
                got: per_label.len(),
            }));
        }
        let mut out = Array2::zeros((rows, per_label.len()));
        for (mut col, p) in out.columns_mut().into_iter().zip(per_label) {
            if p.len() != col.len() {
                return Err(FedError::Internal(
                    "a model gave probabilities for other rows",
                ));
            }
            col.assign(&ArrayView1::from(p.as_slice()));
        }
        Ok(out)
    }
}

/// A [`TrainedModel`] checked once and prepared for scoring ([`TrainedModel::compile`]).
#[derive(Debug)]
pub struct CompiledModel<'m> {
    model: &'m TrainedModel,
    /// The trees compiled, for a GBDT.
    forest: Option<CompiledForest>,
}

impl CompiledModel<'_> {
    /// The model compiled.
    pub fn model(&self) -> &TrainedModel {
        self.model
    }

    /// Probabilities, rows × labels, exactly [`TrainedModel::predict`]'s. `table` must have
    /// the model's feature columns.
    pub fn predict(&self, table: &Table) -> Result<Array2<f64>, FedError> {
        let m = self.model;
        let x = model_rows(table, &m.features)?;
        if let Some(forest) = &self.forest {
            let p = forest.predict_proba(x.view())?;
            let n = p.len();
            return Ok(Array2::from_shape_vec((n, 1), p)?);
        }
        match &m.params {
            ModelParams::Gbdt { model } => gbdt_proba(model, x.view()),
            ModelParams::LogisticRegression { per_label } => {
                // Standardised row by row inside the dot product (no standardised copy).
                let f32s = |v: &[f64]| v.iter().map(|&m| m as f32).collect::<Vec<f32>>();
                let (mean, std) = (f32s(&m.standardizer.mean), f32s(&m.standardizer.std));
                let per_label: Vec<Vec<f64>> = per_label
                    .iter()
                    .map(|p| linear::predict_proba_standardizing(p, x.view(), &mean, &std))
                    .collect::<Result<_, _>>()?;
                m.columns(x.nrows(), &per_label)
            }
            ModelParams::Scorecard { card } => {
                let xw = woe_transform(x.view(), &card.woe)?;
                m.predict_standardized(xw.view())
            }
            _ => {
                let xs = m.standardizer.apply(x.view()).map_err(FedError::BadModel)?;
                m.predict_standardized(xs.view())
            }
        }
    }
}

/// The columns `names` of `table`, row-major: the table's own array when it holds exactly
/// those columns in that order (the usual case when scoring), else one gathered copy.
fn model_rows<'t>(table: &'t Table, names: &[String]) -> Result<CowArray<'t, f32, Ix2>, FedError> {
    if table.feature_names.len() == names.len()
        && table.feature_names.iter().zip(names).all(|(a, b)| a == b)
        && table.x.ncols() == names.len()
        && table.x.is_standard_layout()
    {
        return Ok(CowArray::from(table.x.view()));
    }
    let idx: std::collections::HashMap<&str, usize> = table
        .feature_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let cols = names
        .iter()
        .map(|n| {
            idx.get(n.as_str())
                .copied()
                .ok_or_else(|| FedError::MissingColumn {
                    kind: "feature",
                    name: n.clone(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut data = Vec::with_capacity(table.x.nrows() * cols.len());
    for row in table.x.rows() {
        data.extend(
            cols.iter()
                .map(|&c| row.get(c).copied().unwrap_or(f32::NAN)),
        );
    }
    Ok(CowArray::from(Array2::from_shape_vec(
        (table.x.nrows(), cols.len()),
        data,
    )?))
}

fn gbdt_proba(model: &GbdtModel, x: ndarray::ArrayView2<f32>) -> Result<Array2<f64>, FedError> {
    let p = model.predict_proba(x)?;
    let n = p.len();
    Ok(Array2::from_shape_vec((n, 1), p)?)
}
