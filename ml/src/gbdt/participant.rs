//! The participant half: the instructions a participant receives, its cache of derived data,
//! and [`gbdt_compute`], its vector for one instruction.

use ndarray::{Array2, ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use super::tree::add_trees;
use super::{for_each_row, level_histograms, on_grid, GbdtError, GbdtModel, Node, Tree};
use crate::binning::{check_labels, fine_histogram, local_stats, BinMapper, BinningError};
use crate::linear::sigmoid;

/// What every participant must compute next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GbdtInstruction {
    /// `[rows, positives, then per feature: non-missing count, Σx, Σx²]`.
    Stats { n_features: usize },
    /// [`fine_histogram`] of the local rows.
    FineHistogram {
        ranges: Vec<(f32, f32)>,
        fine_bins: usize,
    },
    /// [`level_histograms`] of `nodes` in `tree` (the tree being grown), with gradients of the
    /// logistic loss at the margins of `model` (everything finished so far).
    Level {
        model: GbdtModel,
        tree: Tree,
        nodes: Vec<u32>,
    },
    /// Record-level DP only: the (gradient, hessian) sums of each leaf of `tree` (grown, its
    /// leaf values not yet set), leaves in node-id order, at the margins of `model`. One row
    /// is in one leaf, so these sums cost far less noise than the level histograms they would
    /// otherwise be read from.
    Leaves { model: GbdtModel, tree: Tree },
}

impl GbdtInstruction {
    /// Length of every participant's vector for this instruction. Saturates at `usize::MAX`
    /// (an instruction from outside may carry any sizes; a participant refuses a length above
    /// its cap before computing anything).
    pub fn output_len(&self) -> usize {
        match self {
            GbdtInstruction::Stats { n_features } => stats_len(*n_features),
            GbdtInstruction::FineHistogram { ranges, fine_bins } => {
                fine_histogram_len(ranges.len(), *fine_bins)
            }
            GbdtInstruction::Level { model, nodes, .. } => level_len(nodes.len(), model),
            GbdtInstruction::Leaves { tree, .. } => tree.n_leaves().saturating_mul(2),
        }
    }

    /// Short name for logs.
    pub fn purpose(&self) -> &'static str {
        match self {
            GbdtInstruction::Stats { .. } => "stats",
            GbdtInstruction::FineHistogram { .. } => "bins",
            GbdtInstruction::Level { .. } => "level",
            GbdtInstruction::Leaves { .. } => "leaves",
        }
    }
}

/// Length of a `Stats` vector: rows, positives, then (count, Σx, Σx²) per feature.
pub(crate) fn stats_len(n_features: usize) -> usize {
    n_features.saturating_mul(3).saturating_add(2)
}

/// Length of a `FineHistogram` vector: `fine_bins` + missing per feature.
pub(crate) fn fine_histogram_len(n_features: usize, fine_bins: usize) -> usize {
    n_features.saturating_mul(fine_bins.saturating_add(1))
}

/// Length of a `Level` vector: (gradient, hessian) per node, feature and bin.
pub(crate) fn level_len(nodes: usize, model: &GbdtModel) -> usize {
    nodes
        .saturating_mul(model.bin_mapper.n_features())
        .saturating_mul(model.bin_mapper.n_bins())
        .saturating_mul(2)
}

/// Derived data a participant keeps between instructions: the binned matrix and the margins
/// of the model's finished trees. A pure cache — a fresh one gives the same results. One cache
/// belongs to one data set.
#[derive(Clone, Debug, Default)]
pub struct GbdtCache {
    binned: Option<(u64, Array2<u8>)>,
    margins: Option<MarginCache>,
}

#[derive(Clone, Debug)]
struct MarginCache {
    mapper_fp: u64,
    base_bits: u64,
    tree_fps: Vec<u64>,
    margins: Vec<f64>,
}

impl GbdtCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The binned matrix for `mapper`, computed once.
    fn binned(&mut self, mapper: &BinMapper, x: ArrayView2<f32>) -> Result<&Array2<u8>, GbdtError> {
        let fp = mapper.fingerprint();
        let stale = !matches!(&self.binned, Some((f, b)) if *f == fp && b.nrows() == x.nrows());
        if stale {
            self.margins = None;
            self.binned = Some((fp, mapper.bin(x)?));
        }
        match &self.binned {
            Some((_, b)) => Ok(b),
            None => Err(GbdtError::BadInstruction("binning failed".into())),
        }
    }
}

/// The participant half: this participant's vector for `instr` (length
/// [`GbdtInstruction::output_len`]) on its rows `x` (`NaN` = missing) and 0/1 labels `y`.
pub fn gbdt_compute(
    instr: &GbdtInstruction,
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    cache: &mut GbdtCache,
) -> Result<Vec<f64>, GbdtError> {
    gbdt_compute_sampled(instr, x, y, cache, None)
}

/// A record-level DP level step's part in a participant: which rows take part (Poisson
/// sampled by the caller with its secret randomness) and the bound on each row's gradient.
#[derive(Clone, Copy, Debug)]
pub struct LevelSample<'a> {
    /// `include[r]`: row `r` is in this level's sample (one entry per row).
    pub include: &'a [bool],
    /// Each sampled row's gradient is clipped to `±grad_clip` and its hessian to
    /// `[0, min(grad_clip, ¼)]`, so one row moves each (gradient, hessian) pair of the level's
    /// histograms by at most [`LevelSample::pair_bound`], in one bin per feature.
    pub grad_clip: f64,
}

impl LevelSample<'_> {
    /// L2 bound on one row's (gradient, hessian) pair after clipping.
    pub fn pair_bound(grad_clip: f64) -> f64 {
        let c = grad_clip.min(1.0);
        let h = c.min(0.25);
        (c * c + h * h).sqrt()
    }
}

/// [`gbdt_compute`] with, for a level or a tree's leaves, only the rows of `sample` (and
/// their gradients clipped): a record-level DP step. Other instructions ignore `sample`.
pub fn gbdt_compute_sampled(
    instr: &GbdtInstruction,
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    cache: &mut GbdtCache,
    sample: Option<LevelSample<'_>>,
) -> Result<Vec<f64>, GbdtError> {
    let (n, f) = x.dim();
    check_labels(y, n)?;
    match instr {
        GbdtInstruction::Stats { n_features } => {
            if *n_features != f {
                return Err(BinningError::ShapeMismatch {
                    what: "feature columns",
                    expected: *n_features,
                    got: f,
                }
                .into());
            }
            Ok(local_stats(x, y)?)
        }
        GbdtInstruction::FineHistogram { ranges, fine_bins } => {
            Ok(fine_histogram(x, ranges, *fine_bins)?)
        }
        GbdtInstruction::Level { model, tree, nodes } => {
            for &nd in nodes {
                if !matches!(tree.nodes.get(nd as usize), Some(Node::Open { .. })) {
                    return Err(GbdtError::BadInstruction(format!(
                        "node {nd} is not an open node of the tree"
                    )));
                }
            }
            let rows = RowGradients::new(model, tree, false, x, y, cache, sample.as_ref())?;
            // Rows in open nodes (and in the sample) add to the histograms.
            let node_of_row = rows.nodes(|node| matches!(node, Node::Open { .. }));
            level_histograms(
                rows.binned,
                &rows.grad,
                &rows.hess,
                &node_of_row,
                nodes,
                model.bin_mapper.n_bins(),
            )
        }
        GbdtInstruction::Leaves { model, tree } => {
            let rows = RowGradients::new(model, tree, true, x, y, cache, sample.as_ref())?;
            // Slot of each leaf, in node-id order.
            let mut slot = vec![u32::MAX; tree.nodes.len()];
            let mut leaves = 0u32;
            for (i, node) in tree.nodes.iter().enumerate() {
                if matches!(node, Node::Leaf { .. }) {
                    slot[i] = leaves;
                    leaves += 1;
                }
            }
            let node_of_row = rows.nodes(|node| matches!(node, Node::Leaf { .. }));
            let mut out = vec![0.0; 2 * leaves as usize];
            for ((&nd, &g), &h) in node_of_row.iter().zip(&rows.grad).zip(&rows.hess) {
                // `nd` is a node of the tree (routed) or u32::MAX (not taking part).
                let Some(&s) = slot.get(nd as usize) else {
                    continue;
                };
                let o = 2 * s as usize;
                out[o] += g;
                out[o + 1] += h;
            }
            Ok(out)
        }
    }
}

/// Each row's logistic-loss gradient and hessian at the margins of a model, and its binned
/// values: what a level's histograms and a tree's leaf sums are made of.
struct RowGradients<'c, 't> {
    binned: ArrayView2<'c, u8>,
    grad: Vec<f64>,
    hess: Vec<f64>,
    tree: &'t Tree,
    missing: u8,
    include: Option<&'t [bool]>,
}

impl<'c, 't> RowGradients<'c, 't> {
    /// Checks `model`, `tree` (finished when `complete`) and `sample` against `x`, then
    /// computes the gradients (clipped to the sample's bound when sampled).
    fn new(
        model: &GbdtModel,
        tree: &'t Tree,
        complete: bool,
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        cache: &'c mut GbdtCache,
        sample: Option<&LevelSample<'t>>,
    ) -> Result<Self, GbdtError> {
        let (n, f) = x.dim();
        model.validate()?;
        tree.validate(&model.bin_mapper, complete)?;
        if model.bin_mapper.n_features() != f {
            return Err(BinningError::ShapeMismatch {
                what: "feature columns",
                expected: model.bin_mapper.n_features(),
                got: f,
            }
            .into());
        }
        if let Some(s) = sample {
            if s.include.len() != n {
                return Err(BinningError::ShapeMismatch {
                    what: "sampled rows",
                    expected: n,
                    got: s.include.len(),
                }
                .into());
            }
            if !(s.grad_clip.is_finite() && s.grad_clip > 0.0) {
                return Err(GbdtError::BadInstruction(format!(
                    "gradient clip {} must be finite and > 0",
                    s.grad_clip
                )));
            }
        }
        let mapper = &model.bin_mapper;
        cache.binned(mapper, x)?;
        let margins = current_margins(cache, model)?;
        // Logistic loss: g = p − y ∈ [−1, 1], h = p(1 − p) ∈ [0, ¼]; a DP step clips them
        // further to its bound.
        let (g_max, h_max) = sample.map_or((1.0, 0.25), |s| {
            let c = s.grad_clip.min(1.0);
            (c, c.min(0.25))
        });
        let mut grad = vec![0.0; n];
        let mut hess = vec![0.0; n];
        for (r, (&m, &yv)) in margins.iter().zip(y).enumerate() {
            let p = sigmoid(m);
            grad[r] = on_grid((p - f64::from(yv)).clamp(-g_max, g_max));
            hess[r] = on_grid((p * (1.0 - p)).min(h_max));
        }
        let binned = match &cache.binned {
            Some((_, b)) => b.view(),
            None => return Err(GbdtError::BadInstruction("binning failed".into())),
        };
        Ok(RowGradients {
            binned,
            grad,
            hess,
            tree,
            missing: mapper.missing_bin(),
            include: sample.map(|s| s.include),
        })
    }

    /// The node each row ends in when `takes_part(node)` and the row is in the sample,
    /// `u32::MAX` otherwise.
    fn nodes(&self, takes_part: impl Fn(&Node) -> bool + Sync) -> Vec<u32> {
        let mut node_of_row = vec![u32::MAX; self.grad.len()];
        let (binned, tree, missing, include) = (self.binned, self.tree, self.missing, self.include);
        for_each_row(&mut node_of_row, |r, o| {
            // A row outside the sample is in no node: it adds nothing.
            if include.is_some_and(|inc| !inc[r]) {
                return;
            }
            let i = tree.route(missing, |j| binned[[r, j]]);
            if takes_part(&tree.nodes[i]) {
                *o = i as u32;
            }
        });
        node_of_row
    }
}

/// Margins of `model` on the cached binned rows, reusing the cached margins of a prefix of
/// its trees. Always the same additions in the same order as a cold computation.
fn current_margins<'a>(
    cache: &'a mut GbdtCache,
    model: &GbdtModel,
) -> Result<&'a [f64], GbdtError> {
    let Some((mapper_fp, binned)) = &cache.binned else {
        return Err(GbdtError::BadInstruction("binning failed".into()));
    };
    let fps: Vec<u64> = model.trees.iter().map(Tree::fingerprint).collect();
    let base_bits = model.base_score.to_bits();
    let reusable = match &cache.margins {
        Some(mc) => {
            mc.mapper_fp == *mapper_fp
                && mc.base_bits == base_bits
                && mc.tree_fps.len() <= fps.len()
                && mc.tree_fps[..] == fps[..mc.tree_fps.len()]
                && mc.margins.len() == binned.nrows()
        }
        None => false,
    };
    if !reusable {
        cache.margins = Some(MarginCache {
            mapper_fp: *mapper_fp,
            base_bits,
            tree_fps: Vec::new(),
            margins: vec![model.base_score; binned.nrows()],
        });
    }
    let Some(mc) = cache.margins.as_mut() else {
        return Err(GbdtError::BadInstruction("margin cache".into()));
    };
    let done = mc.tree_fps.len();
    add_trees(
        &model.trees[done..],
        model.bin_mapper.missing_bin(),
        binned.view(),
        &mut mc.margins,
    );
    mc.tree_fps = fps;
    Ok(&mc.margins)
}
