//! The models an instruction carries (`fedsilo_task::TrainedModel` and ml's parameter types)
//! and the scorecard bins.
//!
//! Wire → Rust refuses, besides what the types cannot hold, what ml would later index with
//! or loop on: a bin mapper whose cut points are not finite and strictly increasing or too
//! many for its bins (`BinMapper::from_cuts`), a boosted model whose trees split on a feature
//! or bin its mapper does not have, whose children are out of range or not after their
//! parent, with an open node or a non-finite leaf or base score (`GbdtModel::validate`),
//! scorecard bins reading a column out of range or twice (`ScorecardBins::validate`), and a
//! logistic regression whose coefficients are not one per feature of the model. Other sizes
//! and non-finite values are the participant's check (`TrainedModel::validate`).

use fedsilo_ml::gbdt::{BinMapper, GbdtModel, Node, Tree};
use fedsilo_ml::linear::LinearParams;
use fedsilo_ml::mlp::{MlpParams, MlpSpec};
use fedsilo_ml::scorecard::{
    Characteristic, FeatureWoe, Scorecard, ScorecardBins, ScorecardScaling, WoeTable,
};
use fedsilo_task::{ModelParams, Standardizer, TrainedModel};

use super::{each, required, sub, usize_of, Problem, WireError};
use crate::pb;

// ---------------------------------------------------------------------------
// Rust → wire
// ---------------------------------------------------------------------------

impl From<&TrainedModel> for pb::TrainedModel {
    fn from(m: &TrainedModel) -> Self {
        pb::TrainedModel {
            features: m.features.clone(),
            labels: m.labels.clone(),
            standardizer: Some(pb::Standardizer {
                mean: m.standardizer.mean.clone(),
                std: m.standardizer.std.clone(),
                missing_rate: m.standardizer.missing_rate.clone(),
            }),
            params: Some((&m.params).into()),
        }
    }
}

impl From<&ModelParams> for pb::ModelParams {
    fn from(p: &ModelParams) -> Self {
        use pb::model_params::Body;
        let body = match p {
            ModelParams::LogisticRegression { per_label } => {
                Body::LogisticRegression(pb::LinearModels {
                    per_label: per_label.iter().map(Into::into).collect(),
                })
            }
            ModelParams::Mlp { per_label } => Body::Mlp(pb::MlpModels {
                per_label: per_label
                    .iter()
                    .map(|p| pb::MlpParams {
                        inputs: p.spec.inputs as u64,
                        hidden: p.spec.hidden.iter().map(|&h| h as u64).collect(),
                        flat: p.flat.clone(),
                    })
                    .collect(),
            }),
            ModelParams::Gbdt { model } => Body::Gbdt(model.into()),
            ModelParams::Scorecard { card } => Body::Scorecard(card.as_ref().into()),
        };
        pb::ModelParams { body: Some(body) }
    }
}

impl From<&LinearParams> for pb::LinearParams {
    fn from(p: &LinearParams) -> Self {
        pb::LinearParams {
            coef: p.coef.clone(),
            intercept: p.intercept,
        }
    }
}

impl From<&GbdtModel> for pb::GbdtModel {
    fn from(m: &GbdtModel) -> Self {
        pb::GbdtModel {
            base_score: m.base_score,
            bin_mapper: Some((&m.bin_mapper).into()),
            trees: m.trees.iter().map(Into::into).collect(),
        }
    }
}

impl From<&BinMapper> for pb::BinMapper {
    fn from(m: &BinMapper) -> Self {
        pb::BinMapper {
            features: (0..m.n_features())
                .map(|j| pb::FeatureCuts {
                    cuts: m.cuts(j).to_vec(),
                })
                .collect(),
            max_bins: m.max_bins() as u64,
        }
    }
}

impl From<&Tree> for pb::Tree {
    fn from(t: &Tree) -> Self {
        pb::Tree {
            nodes: t.nodes.iter().map(node_to).collect(),
        }
    }
}

pub(super) fn node_to(n: &Node) -> pb::TreeNode {
    use pb::tree_node::Body;
    let body = match *n {
        Node::Split {
            feature,
            bin,
            threshold,
            default_left,
            left,
            right,
            gain,
        } => Body::Split(pb::SplitNode {
            feature,
            bin: u32::from(bin),
            threshold,
            default_left,
            left,
            right,
            gain,
        }),
        Node::Leaf { value } => Body::Leaf(pb::LeafNode { value }),
        Node::Open {
            sum_grad,
            sum_hess,
            depth,
        } => Body::Open(pb::OpenNode {
            sum_grad,
            sum_hess,
            depth,
        }),
    };
    pb::TreeNode { body: Some(body) }
}

impl From<&ScorecardBins> for pb::ScorecardBins {
    fn from(b: &ScorecardBins) -> Self {
        use pb::characteristic::Body;
        let ch = |c: &Characteristic| {
            let body = match c {
                Characteristic::Numeric { name, column, cuts } => {
                    Body::Numeric(pb::NumericCharacteristic {
                        name: name.clone(),
                        column: *column as u64,
                        cuts: cuts.clone(),
                    })
                }
                Characteristic::Categorical {
                    name,
                    columns,
                    categories,
                } => Body::Categorical(pb::CategoricalCharacteristic {
                    name: name.clone(),
                    columns: columns.iter().map(|&c| c as u64).collect(),
                    categories: categories.clone(),
                }),
            };
            pb::Characteristic { body: Some(body) }
        };
        pb::ScorecardBins {
            feature_names: b.feature_names.clone(),
            characteristics: b.characteristics().iter().map(ch).collect(),
        }
    }
}

impl From<&Scorecard> for pb::Scorecard {
    fn from(c: &Scorecard) -> Self {
        pb::Scorecard {
            woe: Some(pb::WoeTable {
                bins: Some((&c.woe.bins).into()),
                features: c
                    .woe
                    .features
                    .iter()
                    .map(|f| pb::FeatureWoe {
                        name: f.name.clone(),
                        good: f.good.clone(),
                        bad: f.bad.clone(),
                        woe: f.woe.clone(),
                        iv: f.iv,
                        selected: f.selected,
                    })
                    .collect(),
                min_iv: c.woe.min_iv,
            }),
            coef: c.coef.clone(),
            intercept: c.intercept,
            scaling: Some(pb::ScorecardScaling {
                base_score: c.scaling.base_score,
                base_odds: c.scaling.base_odds,
                pdo: c.scaling.pdo,
            }),
            points: c
                .points
                .iter()
                .map(|p| pb::ScorecardPoints { points: p.clone() })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// Wire → Rust
// ---------------------------------------------------------------------------

/// A logistic regression's coefficients must be one per feature of the model (the only
/// model-level size checked here; see the module docs).
impl TryFrom<pb::TrainedModel> for TrainedModel {
    type Error = WireError;
    fn try_from(m: pb::TrainedModel) -> Result<Self, WireError> {
        let standardizer = required(m.standardizer, "standardizer")?;
        let params: ModelParams = sub(m.params, "params")?;
        if let ModelParams::LogisticRegression { per_label } = &params {
            for (i, p) in per_label.iter().enumerate() {
                if p.coef.len() != m.features.len() {
                    return Err(WireError::at(
                        &format!("params.logistic_regression.per_label[{i}].coef"),
                        Problem::Count {
                            expected: m.features.len(),
                            got: p.coef.len(),
                        },
                    ));
                }
            }
        }
        Ok(TrainedModel {
            features: m.features,
            labels: m.labels,
            standardizer: Standardizer {
                mean: standardizer.mean,
                std: standardizer.std,
                missing_rate: standardizer.missing_rate,
            },
            params,
        })
    }
}

impl TryFrom<pb::ModelParams> for ModelParams {
    type Error = WireError;
    fn try_from(p: pb::ModelParams) -> Result<Self, WireError> {
        use pb::model_params::Body;
        match p
            .body
            .ok_or_else(|| WireError::new(Problem::MissingOneof))?
        {
            Body::LogisticRegression(l) => Ok(ModelParams::LogisticRegression {
                per_label: each(l.per_label, "per_label")
                    .map_err(|e| e.within("logistic_regression"))?,
            }),
            Body::Mlp(m) => Ok(ModelParams::Mlp {
                per_label: each(m.per_label, "per_label").map_err(|e| e.within("mlp"))?,
            }),
            Body::Gbdt(g) => Ok(ModelParams::Gbdt {
                model: gbdt_model_from(g).map_err(|e| e.within("gbdt"))?,
            }),
            Body::Scorecard(c) => Ok(ModelParams::Scorecard {
                card: Box::new(c.try_into().map_err(|e: WireError| e.within("scorecard"))?),
            }),
        }
    }
}

impl TryFrom<pb::LinearParams> for LinearParams {
    type Error = WireError;
    fn try_from(p: pb::LinearParams) -> Result<Self, WireError> {
        Ok(LinearParams {
            coef: p.coef,
            intercept: p.intercept,
        })
    }
}

impl TryFrom<pb::MlpParams> for MlpParams {
    type Error = WireError;
    fn try_from(p: pb::MlpParams) -> Result<Self, WireError> {
        Ok(MlpParams {
            spec: MlpSpec {
                inputs: usize_of(p.inputs, "inputs")?,
                hidden: p
                    .hidden
                    .into_iter()
                    .enumerate()
                    .map(|(i, h)| usize_of(h, &format!("hidden[{i}]")))
                    .collect::<Result<_, _>>()?,
            },
            flat: p.flat,
        })
    }
}

/// A boosted model, checked whole (`GbdtModel::validate`: its mapper, and complete trees
/// that fit it with finite leaves).
impl TryFrom<pb::GbdtModel> for GbdtModel {
    type Error = WireError;
    fn try_from(m: pb::GbdtModel) -> Result<Self, WireError> {
        gbdt_model_from(m)
    }
}

pub(super) fn gbdt_model_from(m: pb::GbdtModel) -> Result<GbdtModel, WireError> {
    let bin_mapper = bin_mapper_from(required(m.bin_mapper, "bin_mapper")?)
        .map_err(|e| e.within("bin_mapper"))?;
    let trees = m
        .trees
        .into_iter()
        .enumerate()
        .map(|(i, t)| tree_from(t).map_err(|e| e.within(&format!("trees[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    let model = GbdtModel {
        base_score: m.base_score,
        bin_mapper,
        trees,
    };
    model
        .validate()
        .map_err(|e| WireError::new(Problem::Gbdt(e)))?;
    Ok(model)
}

fn bin_mapper_from(m: pb::BinMapper) -> Result<BinMapper, WireError> {
    let max_bins = usize_of(m.max_bins, "max_bins")?;
    let cuts = m.features.into_iter().map(|f| f.cuts).collect();
    BinMapper::from_cuts(cuts, max_bins).map_err(|e| WireError::new(Problem::Binning(e)))
}

/// A tree's nodes, converted one by one (a split's bin must fit a byte); its structure is
/// checked by the caller, which knows the bin mapper.
pub(super) fn tree_from(t: pb::Tree) -> Result<Tree, WireError> {
    Ok(Tree {
        nodes: nodes_from(t.nodes)?,
    })
}

/// Nodes, an error naming `nodes[i]` for the first that does not convert.
pub(super) fn nodes_from(nodes: Vec<pb::TreeNode>) -> Result<Vec<Node>, WireError> {
    nodes
        .into_iter()
        .enumerate()
        .map(|(i, n)| node_from(n).map_err(|e| e.within(&format!("nodes[{i}]"))))
        .collect()
}

pub(super) fn node_from(n: pb::TreeNode) -> Result<Node, WireError> {
    use pb::tree_node::Body;
    match n
        .body
        .ok_or_else(|| WireError::new(Problem::MissingOneof))?
    {
        Body::Split(s) => Ok(Node::Split {
            feature: s.feature,
            bin: u8::try_from(s.bin).map_err(|_| {
                WireError::at(
                    "split.bin",
                    Problem::OutOfRange {
                        value: u64::from(s.bin),
                        max: u64::from(u8::MAX),
                    },
                )
            })?,
            threshold: s.threshold,
            default_left: s.default_left,
            left: s.left,
            right: s.right,
            gain: s.gain,
        }),
        Body::Leaf(l) => Ok(Node::Leaf { value: l.value }),
        Body::Open(o) => Ok(Node::Open {
            sum_grad: o.sum_grad,
            sum_hess: o.sum_hess,
            depth: o.depth,
        }),
    }
}

/// Checked as `ScorecardBins::validate` checks bins: columns in range and used once, cut
/// points finite and increasing, bounded bin counts, one category per categorical column.
impl TryFrom<pb::ScorecardBins> for ScorecardBins {
    type Error = WireError;
    fn try_from(b: pb::ScorecardBins) -> Result<Self, WireError> {
        use pb::characteristic::Body;
        let chars = b
            .characteristics
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let at = |e: WireError| e.within(&format!("characteristics[{i}]"));
                match c
                    .body
                    .ok_or_else(|| at(WireError::new(Problem::MissingOneof)))?
                {
                    Body::Numeric(n) => Ok(Characteristic::Numeric {
                        name: n.name,
                        column: usize_of(n.column, "numeric.column").map_err(at)?,
                        cuts: n.cuts,
                    }),
                    Body::Categorical(c) => Ok(Characteristic::Categorical {
                        name: c.name,
                        columns: c
                            .columns
                            .into_iter()
                            .enumerate()
                            .map(|(j, v)| usize_of(v, &format!("categorical.columns[{j}]")))
                            .collect::<Result<_, _>>()
                            .map_err(at)?,
                        categories: c.categories,
                    }),
                }
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        ScorecardBins::from_characteristics(b.feature_names, chars)
            .map_err(|e| WireError::new(Problem::Scorecard(e)))
    }
}

impl TryFrom<pb::Scorecard> for Scorecard {
    type Error = WireError;
    fn try_from(c: pb::Scorecard) -> Result<Self, WireError> {
        let woe = required(c.woe, "woe")?;
        let scaling = required(c.scaling, "scaling")?;
        Ok(Scorecard {
            woe: WoeTable {
                bins: sub(woe.bins, "bins").map_err(|e| e.within("woe"))?,
                features: woe
                    .features
                    .into_iter()
                    .map(|f| FeatureWoe {
                        name: f.name,
                        good: f.good,
                        bad: f.bad,
                        woe: f.woe,
                        iv: f.iv,
                        selected: f.selected,
                    })
                    .collect(),
                min_iv: woe.min_iv,
            },
            coef: c.coef,
            intercept: c.intercept,
            scaling: ScorecardScaling {
                base_score: scaling.base_score,
                base_odds: scaling.base_odds,
                pdo: scaling.pdo,
            },
            points: c.points.into_iter().map(|p| p.points).collect(),
        })
    }
}
