//! The participant's check of everything the coordinator sends, before any local data is
//! touched.
//!
//! An [`Instruction`] arrives typed from the coordinator (`fedsilo.v1.Instruction`, whose
//! conversion already refused what the types cannot hold or ml would index with), which a
//! participant does not have to trust: a step whose sizes do not fit the local columns, whose values are not finite, or
//! whose lengths would make the participant allocate or loop without bound is refused here
//! with an [`InstructionError`] naming what is wrong. [`check_instruction`] runs at the start
//! of [`compute`](super::compute), so no computation ever sees an unchecked step; the
//! participant's worker also calls it first to compare the step's length with the round's.
//!
//! [`TrainedModel::validate`] is the part that concerns a model on its own (its sizes against
//! its own columns and labels, finite values); model files read from disk go through it too
//! ([`ModelArtifact::from_json`](super::ModelArtifact::from_json)).
//!
//! The caps below mirror the bounds a job spec may ask for, so a step an honest coordinator
//! sends is never refused for its size.

use std::collections::BTreeSet;

use fedsilo_ml::gbdt::{GbdtError, GbdtInstruction, Node, StateDelta, MAX_BINS, MAX_FINE_BINS};
use fedsilo_ml::linear::LocalTrainConfig;
use fedsilo_ml::mlp::{MlpError, MlpParams};
use fedsilo_ml::scorecard::ScorecardError;
use fedsilo_ml::table::Table;

use crate::compute::LocalData;
use crate::instruction::{Instruction, JobData, NoiseSpec, MAG_BINS};
use crate::model::{ModelParams, TrainedModel};

/// Most values one step may ask of a participant (the vector it computes, encodes and masks:
/// 16 Mi values, 128 MiB as `f64`).
pub const MAX_STEP_VALUES: usize = 1 << 24;
/// Most local epochs a training step may ask for.
pub const MAX_LOCAL_EPOCHS: usize = 10_000;
/// Most score-histogram bins of an evaluation step (the bound of a job's `hist_bins`).
pub const MAX_HIST_BINS: usize = 100_000;
/// Most hidden layers of an MLP, and units per hidden layer (the bounds of a job's
/// `model.hidden`).
pub const MAX_HIDDEN_LAYERS: usize = 2;
pub const MAX_HIDDEN_UNITS: usize = 1024;
/// Most trees of a boosted model (the bound of `n_trees`).
pub const MAX_TREES: usize = 100_000;

/// Why a participant refuses a step (or a model): what is wrong, by name.
#[derive(Debug, thiserror::Error)]
pub enum InstructionError {
    /// A size of the model (or of the step's parameters) does not fit the columns.
    #[error("{what}: expected {expected}, got {got}")]
    ModelSize {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// NaN or ±∞ where only finite values make sense.
    #[error("{what}: value {index} is not finite")]
    NonFinite { what: &'static str, index: usize },
    /// A number outside its domain.
    #[error("{what} = {value} is outside {allowed}")]
    OutOfRange {
        what: &'static str,
        value: f64,
        allowed: &'static str,
    },
    /// A length above what a participant accepts (allocation or work without bound).
    #[error("{what}: {got} is more than the {max} a participant accepts")]
    TooLarge {
        what: &'static str,
        got: usize,
        max: usize,
    },
    /// A feature column the local schema does not have.
    #[error("feature column '{0}' is not in the local dataset")]
    UnknownFeature(String),
    /// A label column the local schema does not have.
    #[error("label column '{0}' is not in the local dataset")]
    UnknownLabel(String),
    /// A column named twice.
    #[error("{what} '{name}' is listed twice")]
    Duplicate { what: &'static str, name: String },
    /// A list that must not be empty.
    #[error("no {0}")]
    Empty(&'static str),
    /// The model inside the step is for other columns or labels than the step.
    #[error("the model's {0} differ from the step's")]
    Mismatch(&'static str),
    /// The step's kind and its model's kind do not go together.
    #[error("a {step} step cannot carry a {model} model")]
    ModelKind {
        step: &'static str,
        model: &'static str,
    },
    /// A step (or model) that works on exactly one label names another number of them.
    #[error("{what} needs exactly one label, got {got}")]
    OneLabel { what: &'static str, got: usize },
    /// A tree node the step asks about is not an open node of the tree.
    #[error("node {node} is not an open node of the tree being grown")]
    NotOpen { node: u32 },
    /// A multilayer perceptron's parameters do not fit its layers.
    #[error("MLP: {0}")]
    Mlp(#[from] MlpError),
    /// A boosted model, tree or bin mapper is malformed.
    #[error("boosted trees: {0}")]
    Gbdt(#[from] GbdtError),
    /// Scorecard bins, WOE table or points are malformed.
    #[error("scorecard: {0}")]
    Scorecard(#[from] ScorecardError),
}

type Result<T> = std::result::Result<T, InstructionError>;

/// Most nodes of one tree (depth ≤ 16).
const MAX_TREE_NODES: usize = 1 << 17;

/// A model delta's sizes: at most a tree's worth of nodes set and appended.
fn check_delta(delta: &StateDelta) -> Result<()> {
    at_most("model delta nodes set", delta.set.len(), MAX_TREE_NODES)?;
    at_most(
        "model delta nodes appended",
        delta.push.len(),
        MAX_TREE_NODES,
    )
}

/// `Err(NonFinite)` at the first non-finite value of `values`.
fn finite(what: &'static str, values: impl IntoIterator<Item = f64>) -> Result<()> {
    match values.into_iter().position(|v| !v.is_finite()) {
        Some(index) => Err(InstructionError::NonFinite { what, index }),
        None => Ok(()),
    }
}

fn size(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(InstructionError::ModelSize {
            what,
            expected,
            got,
        })
    }
}

fn at_most(what: &'static str, got: usize, max: usize) -> Result<()> {
    if got <= max {
        Ok(())
    } else {
        Err(InstructionError::TooLarge { what, got, max })
    }
}

/// `a·b + c`, refused above [`MAX_STEP_VALUES`] (never wraps).
fn step_len(parts: &[(usize, usize)], plus: usize) -> Result<usize> {
    let total = parts
        .iter()
        .try_fold(plus, |acc, &(a, b)| a.checked_mul(b)?.checked_add(acc));
    let got = total.unwrap_or(usize::MAX);
    at_most("values the step asks for", got, MAX_STEP_VALUES)?;
    Ok(got)
}

/// The step's columns: present, each once, and in the local schema. Returns (features,
/// labels) counts.
fn check_data(data: &JobData, table: &Table) -> Result<(usize, usize)> {
    if data.features.is_empty() {
        return Err(InstructionError::Empty("feature columns"));
    }
    if data.labels.is_empty() {
        return Err(InstructionError::Empty("label columns"));
    }
    let local: BTreeSet<&str> = table.feature_names.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    for f in &data.features {
        if !local.contains(f.as_str()) {
            return Err(InstructionError::UnknownFeature(f.clone()));
        }
        if !seen.insert(f.as_str()) {
            return Err(InstructionError::Duplicate {
                what: "feature column",
                name: f.clone(),
            });
        }
    }
    let mut seen = BTreeSet::new();
    for l in &data.labels {
        if !table.label_names.contains(l) {
            return Err(InstructionError::UnknownLabel(l.clone()));
        }
        if !seen.insert(l.as_str()) {
            return Err(InstructionError::Duplicate {
                what: "label column",
                name: l.clone(),
            });
        }
    }
    Ok((data.features.len(), data.labels.len()))
}

fn one_label(what: &'static str, labels: usize) -> Result<()> {
    if labels == 1 {
        Ok(())
    } else {
        Err(InstructionError::OneLabel { what, got: labels })
    }
}

fn check_local_config(c: &LocalTrainConfig) -> Result<()> {
    if c.epochs == 0 {
        return Err(InstructionError::OutOfRange {
            what: "local epochs",
            value: 0.0,
            allowed: "1..=10000",
        });
    }
    at_most("local epochs", c.epochs, MAX_LOCAL_EPOCHS)?;
    let checks: [(&'static str, f64, bool, &'static str); 4] = [
        (
            "learning rate",
            c.learning_rate,
            c.learning_rate > 0.0,
            "finite values > 0",
        ),
        ("l2", c.l2, c.l2 >= 0.0, "finite values ≥ 0"),
        (
            "pos_weight",
            c.pos_weight,
            c.pos_weight > 0.0,
            "finite values > 0",
        ),
        ("prox_mu", c.prox_mu, c.prox_mu >= 0.0, "finite values ≥ 0"),
    ];
    for (what, value, ok, allowed) in checks {
        if !(ok && value.is_finite()) {
            return Err(InstructionError::OutOfRange {
                what,
                value,
                allowed,
            });
        }
    }
    Ok(())
}

fn check_noise(n: &NoiseSpec) -> Result<()> {
    if !(n.clip.is_finite() && n.clip > 0.0) {
        return Err(InstructionError::OutOfRange {
            what: "noise clip",
            value: n.clip,
            allowed: "finite values > 0",
        });
    }
    if !(n.stddev.is_finite() && n.stddev >= 0.0) {
        return Err(InstructionError::OutOfRange {
            what: "noise stddev",
            value: n.stddev,
            allowed: "finite values ≥ 0",
        });
    }
    if let Some(q) = n.sampling_rate {
        if !(q > 0.0 && q <= 1.0) {
            return Err(InstructionError::OutOfRange {
                what: "noise sampling rate",
                value: q,
                allowed: "(0, 1]",
            });
        }
    }
    Ok(())
}

/// Fine-histogram ranges (one finite `lo ≤ hi` pair per feature) and bin count.
fn check_fine(ranges: &[(f32, f32)], fine_bins: usize, features: usize) -> Result<usize> {
    size("histogram ranges (one per feature)", features, ranges.len())?;
    if fine_bins == 0 {
        return Err(InstructionError::OutOfRange {
            what: "fine bins",
            value: 0.0,
            allowed: "1..=65536",
        });
    }
    at_most("fine bins", fine_bins, MAX_FINE_BINS)?;
    finite(
        "histogram ranges",
        ranges
            .iter()
            .flat_map(|&(lo, hi)| [f64::from(lo), f64::from(hi)]),
    )?;
    if let Some(&(lo, _)) = ranges.iter().find(|(lo, hi)| lo > hi) {
        return Err(InstructionError::OutOfRange {
            what: "histogram range lower end",
            value: f64::from(lo),
            allowed: "values ≤ the upper end",
        });
    }
    step_len(&[(features, fine_bins + 1)], 0)
}

fn check_mlp(p: &MlpParams, features: usize) -> Result<()> {
    size("MLP inputs", features, p.spec.inputs)?;
    at_most("MLP hidden layers", p.spec.hidden.len(), MAX_HIDDEN_LAYERS)?;
    for &h in &p.spec.hidden {
        if h == 0 || h > MAX_HIDDEN_UNITS {
            return Err(InstructionError::OutOfRange {
                what: "MLP hidden units",
                value: h as f64,
                allowed: "1..=1024",
            });
        }
    }
    p.check()?;
    finite("MLP parameters", p.flat.iter().copied())
}

impl TrainedModel {
    /// Checks a model that may come from outside (an instruction, a model file) against its
    /// own columns and labels: one standardisation entry per feature (finite, positive
    /// deviations), one parameter set per label whose sizes fit the features, finite values,
    /// bounded layers and trees. Prediction and training index freely once this passed.
    pub fn validate(&self) -> Result<()> {
        let (f, l) = (self.features.len(), self.labels.len());
        if f == 0 {
            return Err(InstructionError::Empty("model feature columns"));
        }
        if l == 0 {
            return Err(InstructionError::Empty("model labels"));
        }
        let s = &self.standardizer;
        size("standardizer mean", f, s.mean.len())?;
        size("standardizer std", f, s.std.len())?;
        size("standardizer missing rate", f, s.missing_rate.len())?;
        finite("standardizer mean", s.mean.iter().copied())?;
        finite("standardizer std", s.std.iter().copied())?;
        finite("standardizer missing rate", s.missing_rate.iter().copied())?;
        if let Some(&sd) = s.std.iter().find(|&&sd| sd <= 0.0) {
            return Err(InstructionError::OutOfRange {
                what: "standardizer std",
                value: sd,
                allowed: "values > 0",
            });
        }
        match &self.params {
            ModelParams::LogisticRegression { per_label } => {
                size("per-label models", l, per_label.len())?;
                for p in per_label {
                    size("coef", f, p.coef.len())?;
                    finite("coef", p.coef.iter().copied())?;
                    finite("intercept", [p.intercept])?;
                }
            }
            ModelParams::Mlp { per_label } => {
                size("per-label models", l, per_label.len())?;
                for p in per_label {
                    check_mlp(p, f)?;
                }
            }
            ModelParams::Gbdt { model } => {
                one_label("a boosted model", l)?;
                at_most("trees", model.trees.len(), MAX_TREES)?;
                model.validate()?;
                size("tree features", f, model.bin_mapper.n_features())?;
            }
            ModelParams::Scorecard { card } => {
                one_label("a scorecard", l)?;
                card.validate()?;
                if card.woe.bins.feature_names != self.features {
                    return Err(InstructionError::Mismatch("scorecard feature columns"));
                }
            }
        }
        Ok(())
    }
}

/// A model inside a step: valid on its own and for the step's columns and labels.
fn check_model(model: &TrainedModel, data: &JobData) -> Result<()> {
    model.validate()?;
    if model.features != data.features {
        return Err(InstructionError::Mismatch("feature columns"));
    }
    if model.labels != data.labels {
        return Err(InstructionError::Mismatch("labels"));
    }
    Ok(())
}

/// Checks `instr` against the participant's data `local` before anything is computed, and
/// returns the length of the vector the step produces (at most [`MAX_STEP_VALUES`]).
///
/// Every variant is checked in full: its columns against the local schema, every size of its
/// model or parameters against those columns, every float finite, every length and count
/// within its cap, and its kind against its model's kind.
pub fn check_instruction(instr: &Instruction, local: &LocalData) -> Result<usize> {
    let data = instr.data();
    let (f, l) = check_data(data, &local.train)?;
    match instr {
        Instruction::Scale { noise, .. } => {
            if let Some(n) = noise {
                check_noise(n)?;
            }
            step_len(&[(f, 1 + MAG_BINS)], 1 + l)
        }
        Instruction::Moments { scales, noise, .. } => {
            if let Some(n) = noise {
                check_noise(n)?;
            }
            size("scales (one per feature)", f, scales.len())?;
            finite("scales", scales.iter().copied())?;
            if let Some(&s) = scales.iter().find(|&&s| s <= 0.0) {
                return Err(InstructionError::OutOfRange {
                    what: "scale",
                    value: s,
                    allowed: "values > 0",
                });
            }
            step_len(&[(f, 2)], 0)
        }
        Instruction::Train {
            model,
            local: cfg,
            noise,
            ..
        } => {
            if let ModelParams::Gbdt { .. } = model.params {
                return Err(InstructionError::ModelKind {
                    step: "train",
                    model: "gbdt",
                });
            }
            check_local_config(cfg)?;
            if let Some(n) = noise {
                check_noise(n)?;
            }
            check_model(model, data)?;
            // [update…, rows, loss]; institution DP: [clipped update…, 1]; record DP: the
            // sampled rows' clipped gradient sum alone.
            let extra = match noise {
                None => 2,
                Some(NoiseSpec {
                    sampling_rate: Some(_),
                    ..
                }) => 0,
                Some(_) => 1,
            };
            step_len(&[(1, model.params.dim())], extra)
        }
        Instruction::Evaluate { model, bins, .. } => {
            if *bins == 0 {
                return Err(InstructionError::OutOfRange {
                    what: "histogram bins",
                    value: 0.0,
                    allowed: "1..=100000",
                });
            }
            at_most("histogram bins", *bins, MAX_HIST_BINS)?;
            check_model(model, data)?;
            step_len(&[(l, 2 * bins + 2)], 0)
        }
        Instruction::Gbdt { step, noise, .. } => {
            one_label("a boosting step", l)?;
            if let Some(n) = noise {
                check_noise(n)?;
            }
            match step {
                GbdtInstruction::Stats { n_features } => {
                    size("stats features", f, *n_features)?;
                }
                GbdtInstruction::FineHistogram { ranges, fine_bins } => {
                    check_fine(ranges, *fine_bins, f)?;
                }
                GbdtInstruction::Level { model, tree, nodes } => {
                    at_most("trees", model.trees.len(), MAX_TREES)?;
                    model.validate()?;
                    size("tree features", f, model.bin_mapper.n_features())?;
                    tree.validate(&model.bin_mapper, false)?;
                    if nodes.is_empty() {
                        return Err(InstructionError::Empty("tree nodes to grow"));
                    }
                    let mut seen = BTreeSet::new();
                    for &node in nodes {
                        if !matches!(tree.nodes.get(node as usize), Some(Node::Open { .. })) {
                            return Err(InstructionError::NotOpen { node });
                        }
                        if !seen.insert(node) {
                            return Err(InstructionError::Duplicate {
                                what: "tree node",
                                name: node.to_string(),
                            });
                        }
                    }
                }
                GbdtInstruction::Leaves { model, tree } => {
                    at_most("trees", model.trees.len(), MAX_TREES)?;
                    model.validate()?;
                    size("tree features", f, model.bin_mapper.n_features())?;
                    tree.validate(&model.bin_mapper, true)?;
                }
                // A delta is checked here for its sizes; the state it gives, against the one
                // this participant holds (`gbdt_compute`: base and result digests, nodes that
                // exist, a tree that validates against the mapper) before any row is read.
                GbdtInstruction::LevelDelta {
                    delta,
                    n_features,
                    n_bins,
                    nodes,
                } => {
                    size("tree features", f, *n_features)?;
                    if !(3..=MAX_BINS + 1).contains(n_bins) {
                        return Err(InstructionError::OutOfRange {
                            what: "histogram bins",
                            value: *n_bins as f64,
                            allowed: "3..=256",
                        });
                    }
                    check_delta(delta)?;
                    if nodes.is_empty() {
                        return Err(InstructionError::Empty("tree nodes to grow"));
                    }
                    let mut seen = BTreeSet::new();
                    for &node in nodes {
                        if !seen.insert(node) {
                            return Err(InstructionError::Duplicate {
                                what: "tree node",
                                name: node.to_string(),
                            });
                        }
                    }
                }
                GbdtInstruction::LeavesDelta { delta, leaves } => {
                    check_delta(delta)?;
                    if *leaves == 0 {
                        return Err(InstructionError::Empty("leaves"));
                    }
                    at_most("leaves", *leaves, MAX_TREE_NODES)?;
                }
            }
            let len = step.output_len();
            at_most("values the step asks for", len, MAX_STEP_VALUES)?;
            Ok(len)
        }
        Instruction::ScorecardHistogram {
            ranges,
            fine_bins,
            noise,
            ..
        } => {
            if let Some(n) = noise {
                check_noise(n)?;
            }
            check_fine(ranges, *fine_bins, f)
        }
        Instruction::ScorecardCounts { bins, noise, .. } => {
            if let Some(n) = noise {
                check_noise(n)?;
            }
            one_label("a scorecard counts step", l)?;
            bins.validate()?;
            if bins.feature_names != data.features {
                return Err(InstructionError::Mismatch("scorecard feature columns"));
            }
            // Bounded: every characteristic reads distinct columns among `f`, each with at
            // most MAX_CHARACTERISTIC_BINS + 1 slots.
            let len = bins.counts_len();
            at_most("values the step asks for", len, MAX_STEP_VALUES)?;
            Ok(len)
        }
    }
}
