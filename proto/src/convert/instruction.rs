//! The step instruction (`fedsilo_task::Instruction`, `fedsilo.v1.Instruction`) and the
//! settings it carries; the models inside it are in [`super::model`].
//!
//! Wire → Rust refuses what the Rust types cannot hold (an absent required sub-message, an
//! empty `oneof`, a count beyond `usize`, range bounds whose counts disagree) and, through
//! [`super::model`], what the math would index with or loop on. Domains and sizes against a
//! participant's columns are `fedsilo_task::check_instruction`'s.

use fedsilo_ml::gbdt::{GbdtInstruction, StateDelta, StateDigest};
use fedsilo_ml::linear::LocalTrainConfig;
use fedsilo_task::{Instruction, JobData, NoiseSpec};

use super::model::{gbdt_model_from, node_from, node_to, nodes_from, tree_from};
use super::{required, sub, usize_of, Problem, WireError};
use crate::pb;

// ---------------------------------------------------------------------------
// Local training and differential-privacy settings (one place, so a new field is one line
// each way)
// ---------------------------------------------------------------------------

impl From<&LocalTrainConfig> for pb::LocalTrainConfig {
    fn from(c: &LocalTrainConfig) -> Self {
        pb::LocalTrainConfig {
            epochs: c.epochs as u64,
            learning_rate: c.learning_rate,
            batch_size: c.batch_size as u64,
            l2: c.l2,
            pos_weight: c.pos_weight,
            prox_mu: c.prox_mu,
        }
    }
}

impl TryFrom<pb::LocalTrainConfig> for LocalTrainConfig {
    type Error = WireError;
    fn try_from(c: pb::LocalTrainConfig) -> Result<Self, WireError> {
        Ok(LocalTrainConfig {
            epochs: usize_of(c.epochs, "epochs")?,
            learning_rate: c.learning_rate,
            batch_size: usize_of(c.batch_size, "batch_size")?,
            l2: c.l2,
            pos_weight: c.pos_weight,
            prox_mu: c.prox_mu,
        })
    }
}

impl From<&NoiseSpec> for pb::NoiseSpec {
    fn from(n: &NoiseSpec) -> Self {
        pb::NoiseSpec {
            clip: n.clip,
            stddev: n.stddev,
            sampling_rate: n.sampling_rate,
        }
    }
}

impl TryFrom<pb::NoiseSpec> for NoiseSpec {
    type Error = WireError;
    fn try_from(n: pb::NoiseSpec) -> Result<Self, WireError> {
        Ok(NoiseSpec {
            clip: n.clip,
            stddev: n.stddev,
            sampling_rate: n.sampling_rate,
        })
    }
}

// ---------------------------------------------------------------------------
// Rust → wire
// ---------------------------------------------------------------------------

impl From<&JobData> for pb::JobData {
    fn from(d: &JobData) -> Self {
        pb::JobData {
            dataset: d.dataset.clone(),
            features: d.features.clone(),
            labels: d.labels.clone(),
        }
    }
}

pub(super) fn ranges_to(ranges: &[(f32, f32)]) -> pb::FeatureRanges {
    pb::FeatureRanges {
        lo: ranges.iter().map(|r| r.0).collect(),
        hi: ranges.iter().map(|r| r.1).collect(),
    }
}

impl From<&Instruction> for pb::Instruction {
    fn from(i: &Instruction) -> Self {
        use pb::instruction::Body;
        let body = match i {
            Instruction::Scale { data, noise } => Body::Scale(pb::ScaleStep {
                data: Some(data.into()),
                noise: noise.as_ref().map(Into::into),
            }),
            Instruction::Moments {
                data,
                scales,
                noise,
            } => Body::Moments(pb::MomentsStep {
                data: Some(data.into()),
                scales: scales.clone(),
                noise: noise.as_ref().map(Into::into),
            }),
            Instruction::Train {
                data,
                model,
                local,
                seed,
                noise,
            } => Body::Train(pb::TrainStep {
                data: Some(data.into()),
                model: Some(model.into()),
                local: Some(local.into()),
                seed: *seed,
                noise: noise.as_ref().map(Into::into),
            }),
            Instruction::Evaluate { data, model, bins } => Body::Evaluate(pb::EvaluateStep {
                data: Some(data.into()),
                model: Some(model.into()),
                bins: *bins as u64,
            }),
            Instruction::Gbdt { data, step, noise } => Body::Gbdt(pb::GbdtStep {
                data: Some(data.into()),
                step: Some(step.into()),
                noise: noise.as_ref().map(Into::into),
            }),
            Instruction::ScorecardHistogram {
                data,
                ranges,
                fine_bins,
                noise,
            } => Body::ScorecardHistogram(pb::ScorecardHistogramStep {
                noise: noise.as_ref().map(Into::into),
                data: Some(data.into()),
                ranges: Some(ranges_to(ranges)),
                fine_bins: *fine_bins as u64,
            }),
            Instruction::ScorecardCounts { data, bins, noise } => {
                Body::ScorecardCounts(pb::ScorecardCountsStep {
                    noise: noise.as_ref().map(Into::into),
                    data: Some(data.into()),
                    bins: Some(bins.into()),
                })
            }
        };
        pb::Instruction { body: Some(body) }
    }
}

impl From<&GbdtInstruction> for pb::GbdtInstruction {
    fn from(g: &GbdtInstruction) -> Self {
        use pb::gbdt_instruction::Body;
        let body = match g {
            GbdtInstruction::Stats { n_features } => Body::Stats(pb::GbdtStats {
                n_features: *n_features as u64,
            }),
            GbdtInstruction::FineHistogram { ranges, fine_bins } => {
                Body::FineHistogram(pb::GbdtFineHistogram {
                    ranges: Some(ranges_to(ranges)),
                    fine_bins: *fine_bins as u64,
                })
            }
            GbdtInstruction::Level { model, tree, nodes } => Body::Level(pb::GbdtLevel {
                model: Some(model.into()),
                tree: Some(tree.into()),
                nodes: nodes.clone(),
            }),
            GbdtInstruction::Leaves { model, tree } => Body::Leaves(pb::GbdtLeaves {
                model: Some(model.into()),
                tree: Some(tree.into()),
            }),
            GbdtInstruction::LevelDelta {
                delta,
                n_features,
                n_bins,
                nodes,
            } => Body::LevelDelta(pb::GbdtLevelDelta {
                delta: Some(delta.into()),
                n_features: *n_features as u64,
                n_bins: *n_bins as u64,
                nodes: nodes.clone(),
            }),
            GbdtInstruction::LeavesDelta { delta, leaves } => {
                Body::LeavesDelta(pb::GbdtLeavesDelta {
                    delta: Some(delta.into()),
                    leaves: *leaves as u64,
                })
            }
        };
        pb::GbdtInstruction { body: Some(body) }
    }
}

impl From<&StateDelta> for pb::GbdtStateDelta {
    fn from(d: &StateDelta) -> Self {
        pb::GbdtStateDelta {
            base: d.base.0.to_vec(),
            set: d
                .set
                .iter()
                .map(|(node, value)| pb::GbdtNodeEdit {
                    node: *node,
                    value: Some(node_to(value)),
                })
                .collect(),
            push: d.push.iter().map(node_to).collect(),
            finish: d.finish,
            digest: d.digest.0.to_vec(),
        }
    }
}

// ---------------------------------------------------------------------------
// Wire → Rust
// ---------------------------------------------------------------------------

impl TryFrom<pb::JobData> for JobData {
    type Error = WireError;
    fn try_from(d: pb::JobData) -> Result<Self, WireError> {
        Ok(JobData {
            dataset: d.dataset,
            features: d.features,
            labels: d.labels,
        })
    }
}

/// One `(lo, hi)` per feature; `lo` and `hi` of different lengths are refused at `hi`.
pub(super) fn ranges_from(r: pb::FeatureRanges) -> Result<Vec<(f32, f32)>, WireError> {
    if r.lo.len() != r.hi.len() {
        return Err(WireError::at(
            "hi",
            Problem::Count {
                expected: r.lo.len(),
                got: r.hi.len(),
            },
        ));
    }
    Ok(r.lo.into_iter().zip(r.hi).collect())
}

/// A required `FeatureRanges` sub-message, converted under `field`.
fn ranges_sub(r: Option<pb::FeatureRanges>, field: &str) -> Result<Vec<(f32, f32)>, WireError> {
    let r = r.ok_or_else(|| WireError::at(field, Problem::Missing))?;
    ranges_from(r).map_err(|e| e.within(field))
}

impl TryFrom<pb::Instruction> for Instruction {
    type Error = WireError;
    fn try_from(i: pb::Instruction) -> Result<Self, WireError> {
        use pb::instruction::Body;
        let body = i
            .body
            .ok_or_else(|| WireError::new(Problem::MissingOneof))?;
        match body {
            Body::Scale(s) => Ok(Instruction::Scale {
                data: sub(s.data, "data").map_err(|e| e.within("scale"))?,
                noise: s
                    .noise
                    .map(NoiseSpec::try_from)
                    .transpose()
                    .map_err(|e| e.within("scale.noise"))?,
            }),
            Body::Moments(s) => Ok(Instruction::Moments {
                data: sub(s.data, "data").map_err(|e| e.within("moments"))?,
                scales: s.scales,
                noise: s
                    .noise
                    .map(NoiseSpec::try_from)
                    .transpose()
                    .map_err(|e| e.within("moments.noise"))?,
            }),
            Body::Train(s) => train_from(s).map_err(|e| e.within("train")),
            Body::Evaluate(s) => evaluate_from(s).map_err(|e| e.within("evaluate")),
            Body::Gbdt(s) => Ok(Instruction::Gbdt {
                data: sub(s.data, "data").map_err(|e| e.within("gbdt"))?,
                step: sub(s.step, "step").map_err(|e| e.within("gbdt"))?,
                noise: s
                    .noise
                    .map(NoiseSpec::try_from)
                    .transpose()
                    .map_err(|e| e.within("gbdt.noise"))?,
            }),
            Body::ScorecardHistogram(s) => {
                histogram_from(s).map_err(|e| e.within("scorecard_histogram"))
            }
            Body::ScorecardCounts(s) => Ok(Instruction::ScorecardCounts {
                noise: s
                    .noise
                    .map(NoiseSpec::try_from)
                    .transpose()
                    .map_err(|e| e.within("scorecard_counts.noise"))?,
                data: sub(s.data, "data").map_err(|e| e.within("scorecard_counts"))?,
                bins: sub(s.bins, "bins").map_err(|e| e.within("scorecard_counts"))?,
            }),
        }
    }
}

fn train_from(s: pb::TrainStep) -> Result<Instruction, WireError> {
    Ok(Instruction::Train {
        data: sub(s.data, "data")?,
        model: sub(s.model, "model")?,
        local: sub(s.local, "local")?,
        seed: s.seed,
        noise: s
            .noise
            .map(|n| NoiseSpec::try_from(n).map_err(|e| e.within("noise")))
            .transpose()?,
    })
}

fn evaluate_from(s: pb::EvaluateStep) -> Result<Instruction, WireError> {
    Ok(Instruction::Evaluate {
        data: sub(s.data, "data")?,
        model: sub(s.model, "model")?,
        bins: usize_of(s.bins, "bins")?,
    })
}

fn histogram_from(s: pb::ScorecardHistogramStep) -> Result<Instruction, WireError> {
    Ok(Instruction::ScorecardHistogram {
        data: sub(s.data, "data")?,
        ranges: ranges_sub(s.ranges, "ranges")?,
        fine_bins: usize_of(s.fine_bins, "fine_bins")?,
        noise: s
            .noise
            .map(NoiseSpec::try_from)
            .transpose()
            .map_err(|e| e.within("noise"))?,
    })
}

/// A level's tree is checked against its model's bin mapper (splits on features and bins the
/// mapper has, children after their parent and inside the tree; open nodes allowed), and
/// every node it asks about must lie inside the tree.
impl TryFrom<pb::GbdtInstruction> for GbdtInstruction {
    type Error = WireError;
    fn try_from(g: pb::GbdtInstruction) -> Result<Self, WireError> {
        use pb::gbdt_instruction::Body;
        let body = g
            .body
            .ok_or_else(|| WireError::new(Problem::MissingOneof))?;
        match body {
            Body::Stats(s) => Ok(GbdtInstruction::Stats {
                n_features: usize_of(s.n_features, "stats.n_features")?,
            }),
            Body::FineHistogram(f) => Ok(GbdtInstruction::FineHistogram {
                ranges: ranges_sub(f.ranges, "fine_histogram.ranges")?,
                fine_bins: usize_of(f.fine_bins, "fine_histogram.fine_bins")?,
            }),
            Body::Level(l) => level_from(l).map_err(|e| e.within("level")),
            Body::Leaves(l) => leaves_from(l).map_err(|e| e.within("leaves")),
            Body::LevelDelta(l) => Ok(GbdtInstruction::LevelDelta {
                delta: delta_sub(l.delta).map_err(|e| e.within("level_delta"))?,
                n_features: usize_of(l.n_features, "level_delta.n_features")?,
                n_bins: usize_of(l.n_bins, "level_delta.n_bins")?,
                nodes: l.nodes,
            }),
            Body::LeavesDelta(l) => Ok(GbdtInstruction::LeavesDelta {
                delta: delta_sub(l.delta).map_err(|e| e.within("leaves_delta"))?,
                leaves: usize_of(l.leaves, "leaves_delta.leaves")?,
            }),
        }
    }
}

/// A required model delta: digests of exactly 32 bytes, every node converted (whether the
/// nodes it names exist is for the participant, against the state it holds).
fn delta_sub(d: Option<pb::GbdtStateDelta>) -> Result<StateDelta, WireError> {
    let d = required(d, "delta")?;
    let digest = |bytes: Vec<u8>, field: &str| {
        let got = bytes.len();
        <[u8; 32]>::try_from(bytes).map(StateDigest).map_err(|_| {
            WireError::at(field, Problem::WrongLength { expected: 32, got }).within("delta")
        })
    };
    let set = d
        .set
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let at = format!("delta.set[{i}]");
            let value = required(e.value, "value").map_err(|err| err.within(&at))?;
            let value = node_from(value).map_err(|err| err.within(&format!("{at}.value")))?;
            Ok((e.node, value))
        })
        .collect::<Result<_, WireError>>()?;
    Ok(StateDelta {
        base: digest(d.base, "base")?,
        set,
        push: nodes_from(d.push).map_err(|e| e.within("delta.push"))?,
        finish: d.finish,
        digest: digest(d.digest, "digest")?,
    })
}

fn leaves_from(l: pb::GbdtLeaves) -> Result<GbdtInstruction, WireError> {
    let model = gbdt_model_from(required(l.model, "model")?).map_err(|e| e.within("model"))?;
    let tree = tree_from(required(l.tree, "tree")?).map_err(|e| e.within("tree"))?;
    tree.validate(&model.bin_mapper, true)
        .map_err(|e| WireError::at("tree", Problem::Gbdt(e)))?;
    Ok(GbdtInstruction::Leaves { model, tree })
}

fn level_from(l: pb::GbdtLevel) -> Result<GbdtInstruction, WireError> {
    let model = gbdt_model_from(required(l.model, "model")?).map_err(|e| e.within("model"))?;
    let tree = tree_from(required(l.tree, "tree")?).map_err(|e| e.within("tree"))?;
    tree.validate(&model.bin_mapper, false)
        .map_err(|e| WireError::at("tree", Problem::Gbdt(e)))?;
    for (i, &node) in l.nodes.iter().enumerate() {
        if node as usize >= tree.nodes.len() {
            return Err(WireError::at(
                &format!("nodes[{i}]"),
                Problem::Index {
                    index: u64::from(node),
                    len: tree.nodes.len(),
                },
            ));
        }
    }
    Ok(GbdtInstruction::Level {
        model,
        tree,
        nodes: l.nodes,
    })
}
