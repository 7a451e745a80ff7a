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
        }
    }

    /// Short name for logs.
    pub fn purpose(&self) -> &'static str {
        match self {
            GbdtInstruction::Stats { .. } => "stats",
            GbdtInstruction::FineHistogram { .. } => "bins",
            GbdtInstruction::Level { .. } => "level",
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
            model.validate()?;
            tree.validate(&model.bin_mapper, false)?;
            if model.bin_mapper.n_features() != f {
                return Err(BinningError::ShapeMismatch {
                    what: "feature columns",
                    expected: model.bin_mapper.n_features(),
                    got: f,
                }
                .into());
            }
            for &nd in nodes {
                if !matches!(tree.nodes.get(nd as usize), Some(Node::Open { .. })) {
                    return Err(GbdtError::BadInstruction(format!(
                        "node {nd} is not an open node of the tree"
                    )));
                }
            }
            let mapper = &model.bin_mapper;
            let missing = mapper.missing_bin();
            cache.binned(mapper, x)?;
            let margins = current_margins(cache, model)?;
            let mut grad = vec![0.0; n];
            let mut hess = vec![0.0; n];
            for (r, (&m, &yv)) in margins.iter().zip(y).enumerate() {
                let p = sigmoid(m);
                grad[r] = on_grid(p - f64::from(yv));
                hess[r] = on_grid(p * (1.0 - p));
            }
            let binned = match &cache.binned {
                Some((_, b)) => b.view(),
                None => return Err(GbdtError::BadInstruction("binning failed".into())),
            };
            let mut node_of_row = vec![u32::MAX; n];
            for_each_row(&mut node_of_row, |r, o| {
                let i = tree.route(missing, |j| binned[[r, j]]);
                if matches!(tree.nodes[i], Node::Open { .. }) {
                    *o = i as u32;
                }
            });
            level_histograms(binned, &grad, &hess, &node_of_row, nodes, mapper.n_bins())
        }
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
