//! The participant half: the instructions a participant receives, its cache of derived data,
//! and [`gbdt_compute`], its vector for one instruction.

use std::borrow::Cow;

use ndarray::{Array2, ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use super::delta::{BoostState, DeltaError, StateDelta};
use super::histogram::{node_histograms, node_sums, GradPair};
use super::partition::{NodeRows, Partition};
use super::tree::add_trees;
use super::{for_each_row, GbdtError, GbdtModel, Node, Tree, GRID};
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
    /// [`level_histograms`](super::level_histograms) of `nodes` in `tree` (the tree being grown), with gradients of the
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
    /// [`GbdtInstruction::Level`] as a delta: the model and the tree are those `delta` gives
    /// when applied to the state this participant kept from the previous step (refused with
    /// a [`DeltaError`] when it holds another). `n_features` and `n_bins` are the shape of
    /// the model's bin mapper, declared so the vector's length is known before the delta is
    /// applied (and checked against the state after).
    LevelDelta {
        delta: StateDelta,
        n_features: usize,
        n_bins: usize,
        nodes: Vec<u32>,
    },
    /// [`GbdtInstruction::Leaves`] as a delta; `leaves` is the grown tree's leaf count,
    /// declared as `n_bins` is for a level.
    LeavesDelta { delta: StateDelta, leaves: usize },
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
            GbdtInstruction::LevelDelta {
                n_features,
                n_bins,
                nodes,
                ..
            } => nodes
                .len()
                .saturating_mul(*n_features)
                .saturating_mul(*n_bins)
                .saturating_mul(2),
            GbdtInstruction::LeavesDelta { leaves, .. } => leaves.saturating_mul(2),
        }
    }

    /// The model delta this instruction carries, if it is a delta.
    pub fn delta(&self) -> Option<&StateDelta> {
        match self {
            GbdtInstruction::LevelDelta { delta, .. }
            | GbdtInstruction::LeavesDelta { delta, .. } => Some(delta),
            _ => None,
        }
    }

    /// Short name for logs.
    pub fn purpose(&self) -> &'static str {
        match self {
            GbdtInstruction::Stats { .. } => "stats",
            GbdtInstruction::FineHistogram { .. } => "bins",
            GbdtInstruction::Level { .. } | GbdtInstruction::LevelDelta { .. } => "level",
            GbdtInstruction::Leaves { .. } | GbdtInstruction::LeavesDelta { .. } => "leaves",
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

/// What a participant keeps between instructions: the binned matrix and the margins of the
/// model's finished trees (a pure cache), and the boosting state of the last level (the model
/// so far and the tree being grown, with its digest), which delta instructions build on. A
/// fresh cache gives the same results for full instructions and refuses deltas
/// ([`DeltaError::NoState`]). One cache belongs to one data set.
#[derive(Clone, Debug, Default)]
pub struct GbdtCache {
    /// The state the last level or leaves step computed on.
    state: Option<BoostState>,
    binned: Option<(u64, Array2<u8>)>,
    margins: Option<MarginCache>,
    /// Rows by node of the tree being grown (unsampled levels).
    partition: Option<Partition>,
}

#[derive(Clone, Debug)]
struct MarginCache {
    mapper_fp: u64,
    base_bits: u64,
    tree_fps: Vec<u64>,
    margins: Vec<f64>,
    /// Per-row (gradient, hessian) at `margins`, keyed by the bounds they were clipped to.
    grads: Option<((u64, u64), Vec<GradPair>)>,
}

impl GbdtCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The boosting state kept from the last level or leaves step, if any.
    pub fn state(&self) -> Option<&BoostState> {
        self.state.as_ref()
    }

    /// `delta` applied to the kept state ([`StateDelta::apply`]), taken out of the cache (the
    /// caller puts it back), with the shape the instruction declared checked against it.
    fn take_applied(
        &mut self,
        delta: &StateDelta,
        shape: impl Fn(&BoostState) -> Result<(), DeltaError>,
    ) -> Result<BoostState, GbdtError> {
        delta.apply(&mut self.state)?;
        let state = self
            .state
            .take()
            .ok_or(DeltaError::NoState { base: delta.base })?;
        if let Err(e) = shape(&state) {
            self.state = Some(state);
            return Err(e.into());
        }
        Ok(state)
    }

    /// The binned matrix for `mapper`, computed once.
    fn binned(&mut self, mapper: &BinMapper, x: ArrayView2<f32>) -> Result<&Array2<u8>, GbdtError> {
        let fp = mapper.fingerprint();
        let stale = !matches!(&self.binned, Some((f, b)) if *f == fp && b.nrows() == x.nrows());
        if stale {
            self.margins = None;
            self.partition = None;
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
            let v = level(model, tree, nodes, x, y, cache, sample.as_ref())?;
            cache.state = Some(BoostState::new(model.clone(), tree.clone()));
            Ok(v)
        }
        GbdtInstruction::Leaves { model, tree } => {
            let v = leaves(model, tree, x, y, cache, sample.as_ref())?;
            cache.state = Some(BoostState::new(model.clone(), tree.clone()));
            Ok(v)
        }
        GbdtInstruction::LevelDelta {
            delta,
            n_features,
            n_bins,
            nodes,
        } => {
            let state = cache.take_applied(delta, |s| {
                let mapper = &s.model.bin_mapper;
                declared("mapper features", *n_features, mapper.n_features())?;
                declared("histogram bins", *n_bins, mapper.n_bins())
            })?;
            let v = level(
                &state.model,
                &state.tree,
                nodes,
                x,
                y,
                cache,
                sample.as_ref(),
            );
            cache.state = Some(state);
            v
        }
        GbdtInstruction::LeavesDelta {
            delta,
            leaves: n_leaves,
        } => {
            let state =
                cache.take_applied(delta, |s| declared("leaves", *n_leaves, s.tree.n_leaves()))?;
            let v = leaves(&state.model, &state.tree, x, y, cache, sample.as_ref());
            cache.state = Some(state);
            v
        }
    }
}

fn declared(what: &'static str, expected: usize, got: usize) -> Result<(), DeltaError> {
    if expected == got {
        Ok(())
    } else {
        Err(DeltaError::Shape {
            what,
            expected,
            got,
        })
    }
}

/// The histograms of `nodes` (open nodes of `tree`, each once).
fn level(
    model: &GbdtModel,
    tree: &Tree,
    nodes: &[u32],
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    cache: &mut GbdtCache,
    sample: Option<&LevelSample<'_>>,
) -> Result<Vec<f64>, GbdtError> {
    let mut seen = vec![false; tree.nodes.len()];
    for &nd in nodes {
        if !matches!(tree.nodes.get(nd as usize), Some(Node::Open { .. })) {
            return Err(GbdtError::BadInstruction(format!(
                "node {nd} is not an open node of the tree"
            )));
        }
        if seen
            .get_mut(nd as usize)
            .is_some_and(|s| std::mem::replace(s, true))
        {
            return Err(GbdtError::BadInstruction(format!(
                "open node {nd} listed twice"
            )));
        }
    }
    let rows = RowGradients::new(model, tree, false, x, y, cache, sample)?;
    let of_nodes: Vec<NodeRows<'_>> = nodes
        .iter()
        .map(|&nd| rows.partition.rows(nd as usize))
        .collect();
    node_histograms(rows.binned, rows.gh, &of_nodes, model.bin_mapper.n_bins())
}

/// The (gradient, hessian) sums of each leaf of the grown `tree`, in node-id order.
fn leaves(
    model: &GbdtModel,
    tree: &Tree,
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    cache: &mut GbdtCache,
    sample: Option<&LevelSample<'_>>,
) -> Result<Vec<f64>, GbdtError> {
    let rows = RowGradients::new(model, tree, true, x, y, cache, sample)?;
    let mut out = Vec::with_capacity(2 * tree.n_leaves());
    for (i, node) in tree.nodes.iter().enumerate() {
        if matches!(node, Node::Leaf { .. }) {
            let (g, h) = node_sums(rows.gh, rows.partition.rows(i));
            out.push(g);
            out.push(h);
        }
    }
    Ok(out)
}

/// Each row's logistic-loss gradient and hessian at the margins of a model (in grid units,
/// cached per model and clip), its binned values, and the rows of each node of the tree
/// being grown: what a level's histograms and a tree's leaf sums are made of.
struct RowGradients<'c> {
    binned: ArrayView2<'c, u8>,
    gh: &'c [GradPair],
    partition: Cow<'c, Partition>,
}

impl<'c> RowGradients<'c> {
    /// Checks `model`, `tree` (finished when `complete`) and `sample` against `x`, then
    /// computes (or takes from the cache) the gradients, clipped to the sample's bound when
    /// sampled, and the rows of every node of `tree`.
    fn new(
        model: &GbdtModel,
        tree: &Tree,
        complete: bool,
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        cache: &'c mut GbdtCache,
        sample: Option<&LevelSample<'_>>,
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
        if u32::try_from(n).is_err() {
            return Err(GbdtError::BadInstruction(format!(
                "{n} rows: at most {} rows per participant",
                u32::MAX
            )));
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
        current_margins(cache, model)?;
        // Logistic loss: g = p − y ∈ [−1, 1], h = p(1 − p) ∈ [0, ¼]; a DP step clips them
        // further to its bound.
        let bounds = sample.map_or((1.0, 0.25), |s| {
            let c = s.grad_clip.min(1.0);
            (c, c.min(0.25))
        });
        let GbdtCache {
            binned,
            margins,
            partition,
            ..
        } = cache;
        let (Some((_, binned)), Some(mc)) = (binned.as_ref(), margins.as_mut()) else {
            return Err(GbdtError::BadInstruction("binning failed".into()));
        };
        let key = (bounds.0.to_bits(), bounds.1.to_bits());
        if !matches!(&mc.grads, Some((k, gh)) if *k == key && gh.len() == n) {
            let mut gh = vec![[0i32; 2]; n];
            let (g_max, h_max) = bounds;
            let m = &mc.margins;
            for_each_row(&mut gh, |r, o| {
                *o = clipped_gradient_units(m[r], y[r], g_max, h_max);
            });
            mc.grads = Some((key, gh));
        }
        let gh = match &mc.grads {
            Some((_, gh)) => gh.as_slice(),
            None => return Err(GbdtError::BadInstruction("gradient cache".into())),
        };
        let binned = binned.view();
        let missing = mapper.missing_bin();
        let partition = match sample {
            Some(s) => {
                // A row outside the sample is in no node: it adds nothing.
                let rows = (0..n as u32).filter(|&r| s.include[r as usize]).collect();
                let mut p = Partition::of_rows(rows);
                p.advance(tree, binned, missing)?;
                Cow::Owned(p)
            }
            None => {
                if !partition.as_ref().is_some_and(|p| p.follows(tree)) {
                    *partition = Some(Partition::all(n));
                }
                let Some(p) = partition.as_mut() else {
                    return Err(GbdtError::BadInstruction("row partition".into()));
                };
                if let Err(e) = p.advance(tree, binned, missing) {
                    *partition = None;
                    return Err(e);
                }
                match partition.as_ref() {
                    Some(p) => Cow::Borrowed(p),
                    None => return Err(GbdtError::BadInstruction("row partition".into())),
                }
            }
        };
        Ok(RowGradients {
            binned,
            gh,
            partition,
        })
    }
}

/// `v` (|v| ≤ 1) in units of [`GRADIENT_RESOLUTION`](super::GRADIENT_RESOLUTION), rounded.
#[inline]
fn grid_units(v: f64) -> i32 {
    (v * GRID).round() as i32
}

/// One row's logistic-loss (gradient, hessian) at `margin` for label `y`, clipped to
/// `(g_max, h_max)`, in units of [`GRADIENT_RESOLUTION`](super::GRADIENT_RESOLUTION).
fn clipped_gradient_units(margin: f64, y: f32, g_max: f64, h_max: f64) -> GradPair {
    let p = sigmoid(margin);
    let yv = f64::from(y);
    [
        grid_units((p - yv).clamp(-g_max, g_max)),
        grid_units((p * (1.0 - p)).min(h_max)),
    ]
}

/// One row's logistic-loss gradient `p − y` and hessian `p(1 − p)` at `margin`, in units of
/// [`GRADIENT_RESOLUTION`](super::GRADIENT_RESOLUTION): exactly the per-row values every
/// level histogram of [`gbdt_compute`] sums (unsampled). For protocols that compute the
/// histograms elsewhere (vertical SecureBoost) and must sum the same integers.
pub fn gradient_units(margin: f64, y: f32) -> [i32; 2] {
    clipped_gradient_units(margin, y, 1.0, 0.25)
}

/// Margins of `model` on the cached binned rows, reusing the cached margins of a prefix of
/// its trees. Always the same additions in the same order as a cold computation.
fn current_margins(cache: &mut GbdtCache, model: &GbdtModel) -> Result<(), GbdtError> {
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
            grads: None,
        });
    }
    let Some(mc) = cache.margins.as_mut() else {
        return Err(GbdtError::BadInstruction("margin cache".into()));
    };
    let done = mc.tree_fps.len();
    let new_trees = model.trees.get(done..).unwrap_or(&[]);
    if !new_trees.is_empty() {
        mc.grads = None;
    }
    let missing = model.bin_mapper.missing_bin();
    // The tree just finished is the one the cached partition followed as it grew: its last
    // splits partition the rows into its leaves, and each row adds its leaf's value (the
    // same one addition per row and tree as routing every row).
    match (new_trees, cache.partition.as_mut()) {
        ([tree], Some(part)) if part.follows(tree) => {
            let added = part
                .advance(tree, binned.view(), missing)
                .and_then(|()| part.add_leaf_values(tree, &mut mc.margins));
            if let Err(e) = added {
                cache.margins = None;
                cache.partition = None;
                return Err(e);
            }
            mc.tree_fps = fps;
            return Ok(());
        }
        _ => add_trees(new_trees, missing, binned.view(), &mut mc.margins),
    }
    mc.tree_fps = fps;
    Ok(())
}
