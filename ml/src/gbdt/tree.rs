//! Trees and the boosted model: the node types, structural validation, routing of binned rows
//! and prediction.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use super::predict::CompiledForest;
use super::{for_each_row, GbdtError, MAX_DEPTH};
use crate::binning::{BinMapper, BinningError};
use crate::linear::sigmoid;

/// One node of a tree. `Open` only appears in a tree under construction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Node {
    /// Rows with `bin(feature) ≤ bin` (equivalently a non-missing value `< threshold`) go to
    /// `left`; missing values go left iff `default_left`.
    Split {
        feature: u32,
        bin: u8,
        threshold: f32,
        default_left: bool,
        left: u32,
        right: u32,
        /// Loss reduction of this split (for importances and reports).
        gain: f64,
    },
    /// Adds `value` to the margin (already multiplied by the learning rate).
    Leaf { value: f64 },
    /// A node waiting for its level's histograms, with its gradient and hessian sums.
    Open {
        sum_grad: f64,
        sum_hess: f64,
        depth: u32,
    },
}

/// A regression tree on binned features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Checks structure against a mapper: children after their parent (so routing ends),
    /// features and bins in range, a tree without `Open` nodes when `complete`.
    pub fn validate(&self, mapper: &BinMapper, complete: bool) -> Result<(), GbdtError> {
        let bad = |m: String| Err(GbdtError::BadInstruction(m));
        if self.nodes.is_empty() {
            return bad("tree has no nodes".into());
        }
        if self.nodes.len() > 1 << (MAX_DEPTH + 1) {
            return bad(format!("tree has {} nodes", self.nodes.len()));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            match *n {
                Node::Split {
                    feature,
                    bin,
                    left,
                    right,
                    ..
                } => {
                    if feature as usize >= mapper.n_features() {
                        return bad(format!("node {i} splits on unknown feature {feature}"));
                    }
                    if usize::from(bin) >= mapper.max_bins() {
                        return bad(format!("node {i} splits at bin {bin}"));
                    }
                    let n = self.nodes.len() as u32;
                    if left <= i as u32 || right <= i as u32 || left >= n || right >= n {
                        return bad(format!("node {i} has children {left}/{right}"));
                    }
                }
                Node::Leaf { value } => {
                    if !value.is_finite() {
                        return bad(format!("leaf {i} is not finite"));
                    }
                }
                Node::Open { .. } => {
                    if complete {
                        return bad(format!("node {i} of a finished tree is open"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The node a row ends in (a leaf or an open node); `bin_of(feature)` gives the row's bin.
    #[inline]
    pub(super) fn route(&self, missing: u8, bin_of: impl Fn(usize) -> u8) -> usize {
        let mut i = 0usize;
        while let Node::Split {
            feature,
            bin,
            default_left,
            left,
            right,
            ..
        } = self.nodes[i]
        {
            let b = bin_of(feature as usize);
            let go_left = if b == missing { default_left } else { b <= bin };
            i = if go_left { left } else { right } as usize;
        }
        i
    }

    fn leaf_value(&self, i: usize) -> f64 {
        match self.nodes[i] {
            Node::Leaf { value } => value,
            _ => 0.0,
        }
    }

    pub fn n_leaves(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| !matches!(n, Node::Split { .. }))
            .count()
    }

    pub(super) fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for n in &self.nodes {
            match *n {
                Node::Split {
                    feature,
                    bin,
                    threshold,
                    default_left,
                    left,
                    right,
                    gain,
                } => {
                    (0u8, feature, bin, threshold.to_bits(), default_left).hash(&mut h);
                    (left, right, gain.to_bits()).hash(&mut h);
                }
                Node::Leaf { value } => (1u8, value.to_bits()).hash(&mut h),
                Node::Open {
                    sum_grad,
                    sum_hess,
                    depth,
                } => (2u8, sum_grad.to_bits(), sum_hess.to_bits(), depth).hash(&mut h),
            }
        }
        h.finish()
    }
}

/// A trained (or partly trained) boosted model: margin = `base_score + Σ trees`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GbdtModel {
    /// Initial margin: the federation's log-odds of the positive class.
    pub base_score: f64,
    pub bin_mapper: BinMapper,
    pub trees: Vec<Tree>,
}

impl GbdtModel {
    /// Checks the mapper and every tree (a model may arrive deserialised).
    pub fn validate(&self) -> Result<(), GbdtError> {
        if !self.base_score.is_finite() {
            return Err(GbdtError::BadInstruction("base score is not finite".into()));
        }
        self.bin_mapper.validate()?;
        for t in &self.trees {
            t.validate(&self.bin_mapper, true)?;
        }
        Ok(())
    }

    /// Margins (log-odds) of already binned rows (as from [`BinMapper::bin`]). The model is
    /// validated first, so a malformed deserialised model is an error, not a panic or a loop.
    pub fn predict_margin_binned(&self, binned: ArrayView2<u8>) -> Result<Vec<f64>, GbdtError> {
        self.validate()?;
        if binned.ncols() != self.bin_mapper.n_features() {
            return Err(BinningError::ShapeMismatch {
                what: "binned feature columns",
                expected: self.bin_mapper.n_features(),
                got: binned.ncols(),
            }
            .into());
        }
        let mut m = vec![self.base_score; binned.nrows()];
        add_trees(&self.trees, self.bin_mapper.missing_bin(), binned, &mut m);
        Ok(m)
    }

    /// Margins (log-odds) of raw rows (`NaN` = missing): exactly
    /// `predict_margin_binned(bin_mapper.bin(x))`, without the binned copy. A split "bin ≤ b"
    /// is decided on the value itself: a present `v` has bin ≤ b ⇔ `v < cuts[b]` (always,
    /// when `b` is past the feature's last cut), `NaN` takes the default direction. Rows are
    /// routed in blocks through the compiled trees ([`CompiledForest`], compiled per call)
    /// in parallel; the trees are added in order, as the binned path adds them.
    pub fn predict_margin(&self, x: ArrayView2<f32>) -> Result<Vec<f64>, GbdtError> {
        self.compile()?.predict_margin(x)
    }

    /// The model validated and compiled for prediction on raw rows, once: scoring many
    /// batches of rows with one [`CompiledForest`] compiles the trees once, where each
    /// [`GbdtModel::predict_margin`] call compiles them again.
    pub fn compile(&self) -> Result<CompiledForest, GbdtError> {
        self.validate()?;
        CompiledForest::new(&self.trees, &self.bin_mapper, self.base_score)
    }

    /// Probabilities of the positive class.
    pub fn predict_proba(&self, x: ArrayView2<f32>) -> Result<Vec<f64>, GbdtError> {
        Ok(self.predict_margin(x)?.into_iter().map(sigmoid).collect())
    }

    /// Total split gain per feature (an importance measure).
    pub fn feature_gain(&self) -> Vec<f64> {
        let mut g = vec![0.0; self.bin_mapper.n_features()];
        for t in &self.trees {
            for n in &t.nodes {
                if let Node::Split { feature, gain, .. } = *n {
                    if let Some(v) = g.get_mut(feature as usize) {
                        *v += gain;
                    }
                }
            }
        }
        g
    }
}

/// Adds each tree's leaf values, in tree order, to `margins` (row-parallel).
pub(super) fn add_trees(trees: &[Tree], missing: u8, binned: ArrayView2<u8>, margins: &mut [f64]) {
    if trees.is_empty() {
        return;
    }
    for_each_row(margins, |r, m| {
        for t in trees {
            *m += t.leaf_value(t.route(missing, |j| binned[[r, j]]));
        }
    });
}
