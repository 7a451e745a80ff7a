//! The server half: [`GbdtServer`], a state machine over sums only whose phases are the bin
//! agreement and then one level of one tree at a time, and [`fit_pooled`], the same halves
//! with a single participant.

use ndarray::{ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use super::delta::StateDelta;
use super::histogram::leaf_weight;
use super::participant::{fine_histogram_len, level_len, stats_len};
use super::{
    best_splits, gbdt_compute, GbdtCache, GbdtError, GbdtInstruction, GbdtModel, GbdtParams, Node,
    Tree,
};
use crate::binning::{check_sum, invalid, BinMapper, FeatureStats};

/// The kinds of [`GbdtInstruction`] the server asks for, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    Stats,
    FineHistogram,
    Level,
    /// Noised levels only ([`GbdtServer::with_noised_levels`]).
    Leaves,
}

/// A node whose histogram the server derives as `parent − sibling` instead of requesting it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Derived {
    node: u32,
    sibling: u32,
    parent_hist: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Phase {
    Stats,
    Bins {
        base_score: f64,
        ranges: Vec<(f32, f32)>,
    },
    Grow {
        model: GbdtModel,
        tree: Tree,
        /// Nodes whose histograms participants compute at this level, in vector order.
        request: Vec<u32>,
        /// Nodes derived from their parent and a requested sibling.
        derive: Vec<Derived>,
        /// How this state follows from the previous level's (`None` for a tree's first level
        /// after the bins are agreed: participants do not hold the bin mapper yet).
        #[serde(default)]
        delta: Option<StateDelta>,
    },
    /// Noised levels only: the grown tree's leaf sums are asked for on their own.
    Leaves {
        model: GbdtModel,
        tree: Tree,
        #[serde(default)]
        delta: Option<StateDelta>,
    },
    Done {
        model: GbdtModel,
    },
}

/// The server driver, a state machine over sums only. Serialisable: it is the job's
/// checkpoint.
///
/// Loop: while `next()` gives an instruction, have every participant run [`gbdt_compute`],
/// sum the vectors under secure aggregation and [`absorb`](GbdtServer::absorb) the sum; then
/// take [`model`](GbdtServer::model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GbdtServer {
    params: GbdtParams,
    n_features: usize,
    /// Federation-wide row count, known after the stats step.
    total_rows: Option<f64>,
    /// The level sums carry DP noise ([`GbdtServer::with_noised_levels`]).
    #[serde(default)]
    noised: bool,
    phase: Phase,
}

impl GbdtServer {
    pub fn new(params: GbdtParams, n_features: usize) -> Result<Self, GbdtError> {
        params.validate()?;
        if n_features == 0 {
            return Err(invalid("n_features", 0.0, "must be ≥ 1"));
        }
        Ok(GbdtServer {
            params,
            n_features,
            total_rows: None,
            noised: false,
            phase: Phase::Stats,
        })
    }

    /// A server whose bin agreement is already done: it starts at the first tree's root
    /// level with `bin_mapper` and `base_score` (the log-odds [`FeatureStats::base_score`]
    /// gives) over `n_rows` rows. For protocols that agree bins otherwise — vertical
    /// SecureBoost, where each party bins its own columns.
    pub fn with_bins(
        params: GbdtParams,
        n_rows: f64,
        base_score: f64,
        bin_mapper: BinMapper,
    ) -> Result<Self, GbdtError> {
        params.validate()?;
        bin_mapper.validate()?;
        if bin_mapper.n_features() == 0 {
            return Err(invalid("n_features", 0.0, "must be ≥ 1"));
        }
        if bin_mapper.max_bins() != params.max_bins {
            return Err(invalid(
                "max_bins",
                bin_mapper.max_bins() as f64,
                "the mapper's max_bins must be the parameters'",
            ));
        }
        if !(n_rows.is_finite() && n_rows >= 1.0 && base_score.is_finite()) {
            return Err(invalid(
                "n_rows",
                n_rows,
                "must be ≥ 1 with a finite base score",
            ));
        }
        Ok(GbdtServer {
            n_features: bin_mapper.n_features(),
            params,
            total_rows: Some(n_rows),
            noised: false,
            phase: new_tree_phase(GbdtModel {
                base_score,
                bin_mapper,
                trees: Vec::new(),
            }),
        })
    }

    /// A server whose level sums carry DP noise. Its reading of them is post-processing only:
    /// bins a feature cannot have (beyond its cut points) are set to zero, a root's gradient
    /// and hessian totals are the mean over features of its per-feature totals (one noise
    /// draw per feature instead of one feature's). A grown tree's leaf values then come from
    /// one more step, the leaves' own (gradient, hessian) sums ([`GbdtInstruction::Leaves`],
    /// a leaf's hessian read as ≥ 0): one row is in one leaf, so they carry far less noise
    /// than the sums of several noised bins a split's sides would give.
    pub fn with_noised_levels(mut self) -> Self {
        self.noised = true;
        self
    }

    /// Bound on |any element| of one participant's vector for the next instruction, for the
    /// fixed-point encoding: after the stats step every element is a count or a sum of
    /// per-row values in [−1, 1] over at most the federation's rows. `None` for the stats step
    /// itself (Σx and Σx² depend on the feature scales).
    pub fn max_abs(&self) -> Option<f64> {
        match self.phase {
            Phase::Stats | Phase::Done { .. } => None,
            _ => self.total_rows,
        }
    }

    pub fn params(&self) -> &GbdtParams {
        &self.params
    }

    /// What participants must compute next; `None` once the model is finished.
    pub fn next(&self) -> Option<GbdtInstruction> {
        match &self.phase {
            Phase::Stats => Some(GbdtInstruction::Stats {
                n_features: self.n_features,
            }),
            Phase::Bins { ranges, .. } => Some(GbdtInstruction::FineHistogram {
                ranges: ranges.clone(),
                fine_bins: self.params.fine_bins,
            }),
            Phase::Grow {
                model,
                tree,
                request,
                ..
            } => Some(GbdtInstruction::Level {
                model: model.clone(),
                tree: tree.clone(),
                nodes: request.clone(),
            }),
            Phase::Leaves { model, tree, .. } => Some(GbdtInstruction::Leaves {
                model: model.clone(),
                tree: tree.clone(),
            }),
            Phase::Done { .. } => None,
        }
    }

    /// [`next`](GbdtServer::next)'s level or leaves instruction as a delta on the state of
    /// the previous step ([`GbdtInstruction::LevelDelta`], [`GbdtInstruction::LeavesDelta`]):
    /// for participants that computed that step. `None` when the next step has no delta
    /// form (the bin agreement, the first level after it, or none at all).
    pub fn next_delta(&self) -> Option<GbdtInstruction> {
        match &self.phase {
            Phase::Grow {
                model,
                request,
                delta: Some(delta),
                ..
            } => Some(GbdtInstruction::LevelDelta {
                delta: delta.clone(),
                n_features: model.bin_mapper.n_features(),
                n_bins: model.bin_mapper.n_bins(),
                nodes: request.clone(),
            }),
            Phase::Leaves {
                tree,
                delta: Some(delta),
                ..
            } => Some(GbdtInstruction::LeavesDelta {
                delta: delta.clone(),
                leaves: tree.n_leaves(),
            }),
            _ => None,
        }
    }

    /// Which kind of step [`next`](GbdtServer::next) asks for, without building it.
    pub fn next_kind(&self) -> Option<StepKind> {
        match &self.phase {
            Phase::Stats => Some(StepKind::Stats),
            Phase::Bins { .. } => Some(StepKind::FineHistogram),
            Phase::Grow { .. } => Some(StepKind::Level),
            Phase::Leaves { .. } => Some(StepKind::Leaves),
            Phase::Done { .. } => None,
        }
    }

    /// Length of the vectors [`next`](GbdtServer::next)'s instruction asks for, without
    /// building it (a tree level's instruction carries the whole model so far).
    pub fn next_len(&self) -> Option<usize> {
        match &self.phase {
            Phase::Stats => Some(stats_len(self.n_features)),
            Phase::Bins { ranges, .. } => {
                Some(fine_histogram_len(ranges.len(), self.params.fine_bins))
            }
            Phase::Grow { model, request, .. } => Some(level_len(request.len(), model)),
            Phase::Leaves { tree, .. } => Some(2 * tree.n_leaves()),
            Phase::Done { .. } => None,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done { .. })
    }

    /// Finished trees so far.
    pub fn trees_done(&self) -> usize {
        match &self.phase {
            Phase::Grow { model, .. } | Phase::Leaves { model, .. } | Phase::Done { model } => {
                model.trees.len()
            }
            _ => 0,
        }
    }

    /// The finished model (`None` until done).
    pub fn model(&self) -> Option<&GbdtModel> {
        match &self.phase {
            Phase::Done { model } => Some(model),
            _ => None,
        }
    }

    /// The trees finished so far as a model (`None` before the bins are agreed or before the
    /// first tree is finished): what a job stopped early keeps.
    pub fn finished_trees(&self) -> Option<&GbdtModel> {
        match &self.phase {
            Phase::Grow { model, .. } | Phase::Leaves { model, .. } if !model.trees.is_empty() => {
                Some(model)
            }
            Phase::Done { model } => Some(model),
            _ => None,
        }
    }

    /// The finished model (`None` until done).
    pub fn into_model(self) -> Option<GbdtModel> {
        match self.phase {
            Phase::Done { model } => Some(model),
            _ => None,
        }
    }

    /// Takes the SUM over participants of the vectors for [`next`](GbdtServer::next)'s
    /// instruction and advances. On error the state is unchanged.
    pub fn absorb(&mut self, sum: &[f64]) -> Result<(), GbdtError> {
        let next = match &self.phase {
            Phase::Stats => {
                let next = self.absorb_stats(sum)?;
                self.total_rows = Some(sum[0]);
                next
            }
            Phase::Bins { base_score, ranges } => {
                let mapper = BinMapper::from_fine_histogram(
                    sum,
                    ranges,
                    self.params.fine_bins,
                    self.params.max_bins,
                )?;
                let model = GbdtModel {
                    base_score: *base_score,
                    bin_mapper: mapper,
                    trees: Vec::new(),
                };
                new_tree_phase(model)
            }
            Phase::Grow {
                model,
                tree,
                request,
                derive,
                ..
            } => self.absorb_level(sum, model, tree, request, derive)?,
            Phase::Leaves { model, tree, .. } => {
                check_sum(sum, "leaves", 2 * tree.n_leaves(), "leaf sums")?;
                let mut tree = tree.clone();
                let leaves = tree
                    .nodes
                    .iter_mut()
                    .filter(|n| matches!(n, Node::Leaf { .. }));
                for (node, gh) in leaves.zip(sum.chunks_exact(2)) {
                    *node = Node::Leaf {
                        value: leaf_weight(gh[0], gh[1].max(0.0), &self.params),
                    };
                }
                self.finish_tree(model.clone(), tree)?
            }
            Phase::Done { .. } => return Err(GbdtError::Finished),
        };
        self.phase = with_delta(&self.phase, next);
        Ok(())
    }

    fn absorb_stats(&self, sum: &[f64]) -> Result<Phase, GbdtError> {
        let st = FeatureStats::from_sum(sum, self.n_features)?;
        Ok(Phase::Bins {
            base_score: st.base_score(),
            ranges: st.ranges(self.params.range_sd),
        })
    }

    fn absorb_level(
        &self,
        sum: &[f64],
        model: &GbdtModel,
        tree: &Tree,
        request: &[u32],
        derive: &[Derived],
    ) -> Result<Phase, GbdtError> {
        let p = &self.params;
        let f = model.bin_mapper.n_features();
        let nb = model.bin_mapper.n_bins();
        let per_node = level_len(1, model);
        check_sum(
            sum,
            "level",
            level_len(request.len(), model),
            "level histograms",
        )?;
        // Full histograms of every open node: requested ones, then derived ones.
        let mut open: Vec<u32> = request.to_vec();
        let mut full = sum.to_vec();
        if self.noised {
            // Value bins beyond a feature's cut points hold no row: only noise.
            for node in full.chunks_exact_mut(per_node) {
                for (j, feature) in node.chunks_exact_mut(2 * nb).enumerate() {
                    let used = model.bin_mapper.feature_bins(j).min(nb - 1);
                    feature[2 * used..2 * (nb - 1)].fill(0.0);
                }
            }
        }
        let mut derived = Vec::with_capacity(derive.len() * per_node);
        for d in derive {
            let Some(si) = request.iter().position(|&r| r == d.sibling) else {
                return Err(GbdtError::BadInstruction(format!(
                    "derived node {} lost its sibling",
                    d.node
                )));
            };
            let sib = &full[si * per_node..(si + 1) * per_node];
            derived.extend(d.parent_hist.iter().zip(sib).map(|(a, b)| a - b));
            open.push(d.node);
        }
        full.extend_from_slice(&derived);
        let splits = best_splits(&full, &open, f, nb, p)?;

        let mut tree = tree.clone();
        // Node sums: from the histogram for the root, from the parent's split otherwise.
        if tree.nodes.len() == 1 {
            let total = |j: usize| {
                let o = j * 2 * nb;
                (0..nb).fold((0.0, 0.0), |(g, h), b| {
                    (g + full[o + 2 * b], h + full[o + 2 * b + 1])
                })
            };
            let (g, h) = if self.noised {
                let (g, h) = (0..f)
                    .map(total)
                    .fold((0.0, 0.0), |(g, h), (a, b)| (g + a, h + b));
                (g / f as f64, (h / f as f64).max(0.0))
            } else {
                total(0)
            };
            tree.nodes[0] = Node::Open {
                sum_grad: g,
                sum_hess: h,
                depth: 0,
            };
        }
        // Highest-gain splits first, within the leaf budget.
        let mut order: Vec<usize> = (0..open.len()).filter(|&s| splits[s].is_some()).collect();
        order.sort_by(|&a, &b| {
            let (ga, gb) = (
                splits[a].as_ref().map_or(0.0, |s| s.gain),
                splits[b].as_ref().map_or(0.0, |s| s.gain),
            );
            gb.total_cmp(&ga).then(open[a].cmp(&open[b]))
        });
        let mut leaves = tree.n_leaves();
        let mut accepted = vec![false; open.len()];
        for s in order {
            if leaves < p.max_leaves {
                accepted[s] = true;
                leaves += 1;
            }
        }
        let mut next_request = Vec::new();
        let mut next_derive = Vec::new();
        // Process in node-id order so child ids do not depend on the vector layout.
        let mut slots: Vec<usize> = (0..open.len()).collect();
        slots.sort_by_key(|&s| open[s]);
        for s in slots {
            let id = open[s] as usize;
            let Node::Open {
                sum_grad,
                sum_hess,
                depth,
            } = tree.nodes[id]
            else {
                return Err(GbdtError::BadInstruction(format!("node {id} is not open")));
            };
            match (&splits[s], accepted[s]) {
                (Some(sp), true) => {
                    let left = tree.nodes.len() as u32;
                    let right = left + 1;
                    let child_depth = depth + 1;
                    let child_open = (child_depth as usize) < p.max_depth;
                    let child = |g: f64, h: f64| {
                        if child_open {
                            Node::Open {
                                sum_grad: g,
                                sum_hess: h,
                                depth: child_depth,
                            }
                        } else {
                            Node::Leaf {
                                value: leaf_weight(g, h, p),
                            }
                        }
                    };
                    tree.nodes[id] = Node::Split {
                        feature: sp.feature,
                        bin: sp.bin,
                        threshold: model.bin_mapper.threshold(sp.feature as usize, sp.bin),
                        default_left: sp.default_left,
                        left,
                        right,
                        gain: sp.gain,
                    };
                    tree.nodes.push(child(sp.left_grad, sp.left_hess));
                    tree.nodes.push(child(sp.right_grad, sp.right_hess));
                    if child_open {
                        // Request the lighter child; derive the other by subtraction.
                        let (req, der) = if sp.left_hess <= sp.right_hess {
                            (left, right)
                        } else {
                            (right, left)
                        };
                        next_request.push(req);
                        next_derive.push(Derived {
                            node: der,
                            sibling: req,
                            parent_hist: full[s * per_node..(s + 1) * per_node].to_vec(),
                        });
                    }
                }
                _ => {
                    tree.nodes[id] = Node::Leaf {
                        value: leaf_weight(sum_grad, sum_hess, p),
                    };
                }
            }
        }
        if !next_request.is_empty() {
            return Ok(Phase::Grow {
                model: model.clone(),
                tree,
                request: next_request,
                derive: next_derive,
                delta: None,
            });
        }
        // The tree is grown. With noised levels its leaf sums are asked for on their own
        // (a stump ends training as it is).
        if self.noised && tree.nodes.len() > 1 {
            return Ok(Phase::Leaves {
                model: model.clone(),
                tree,
                delta: None,
            });
        }
        self.finish_tree(model.clone(), tree)
    }

    /// Adds a finished tree (not a stump: a tree that cannot split ends training).
    fn finish_tree(&self, mut model: GbdtModel, tree: Tree) -> Result<Phase, GbdtError> {
        let stump = tree.nodes.len() == 1;
        if !stump {
            model.trees.push(tree);
        }
        if stump || model.trees.len() >= self.params.n_trees {
            Ok(Phase::Done { model })
        } else {
            Ok(new_tree_phase(model))
        }
    }
}

fn new_tree_phase(model: GbdtModel) -> Phase {
    Phase::Grow {
        model,
        tree: Tree::root(),
        request: vec![0],
        derive: Vec::new(),
        delta: None,
    }
}

/// The boosting state (model so far, tree being grown) of a level or leaves phase.
fn state_of(phase: &Phase) -> Option<(&GbdtModel, &Tree)> {
    match phase {
        Phase::Grow { model, tree, .. } | Phase::Leaves { model, tree, .. } => Some((model, tree)),
        _ => None,
    }
}

/// `next` with the delta from `prev`'s state to its own, when both are level or leaves
/// phases (a new job's first level has none: participants hold no state yet).
fn with_delta(prev: &Phase, mut next: Phase) -> Phase {
    let delta = match (state_of(prev), state_of(&next)) {
        (Some((m0, t0)), Some((m1, t1))) => StateDelta::between(m0, t0, m1, t1),
        _ => None,
    };
    if let Phase::Grow { delta: d, .. } | Phase::Leaves { delta: d, .. } = &mut next {
        *d = delta;
    }
    next
}

/// The centralised reference: the same server and participant halves with ONE participant
/// holding all rows.
pub fn fit_pooled(
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    params: &GbdtParams,
) -> Result<GbdtModel, GbdtError> {
    let mut server = GbdtServer::new(params.clone(), x.ncols())?;
    let mut cache = GbdtCache::new();
    while let Some(instr) = server.next() {
        let v = gbdt_compute(&instr, x, y, &mut cache)?;
        server.absorb(&v)?;
    }
    server
        .into_model()
        .ok_or_else(|| GbdtError::BadInstruction("server stopped without a model".into()))
}
