//! Fast prediction: every tree flattened into one contiguous array of compact nodes, rows
//! routed block by block through all trees (tree-major within a block, so a tree's nodes stay
//! in L1 while a few hundred rows pass through it), branch-free.
//!
//! Layout: a tree's nodes are renumbered breadth-first (children after their parent, side by
//! side); a leaf names itself as both children, so every row takes exactly `depth` steps
//! through a tree and the step is `i = if v ≤ threshold ∨ (v is NaN ∧ default_left) { left }
//! else { right }` (a conditional move, no branch). The raw split "present `v` below
//! `cut`" is `v ≤ threshold` with `threshold` the largest `f32` below `cut` (exact for every
//! non-NaN `v`); a split past a feature's last cut sends every present value left
//! (`threshold = +∞`). Margins are summed tree by tree in model order, as
//! [`super::GbdtModel::predict_margin_binned`] sums them, so results are bit-identical.

use rayon::prelude::*;

use super::tree::{Node, Tree};
use super::GbdtError;
use crate::binning::BinMapper;

/// Rows routed together through one tree.
const BLOCK: usize = 256;
/// Rows stepping down a tree together.
const LANES: usize = 8;
/// Rows per rayon task.
const PAR_ROWS: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct FlatNode {
    /// The feature ([`FEATURE`] bits) and [`MISSING_LEFT`].
    feature: u32,
    threshold: f32,
    /// The children; a leaf's own index twice.
    left: u32,
    right: u32,
}

/// The bits of [`FlatNode::feature`] that name the feature.
const FEATURE: u32 = 0x7fff_ffff;
/// Set in [`FlatNode::feature`]: a missing value goes left.
const MISSING_LEFT: u32 = 0x8000_0000;

/// A leaf at node 0 (stays where it is whatever the value).
const LEAF: FlatNode = FlatNode {
    feature: 0,
    threshold: f32::INFINITY,
    left: 0,
    right: 0,
};

#[derive(Clone, Copy, Debug)]
struct FlatTree {
    start: usize,
    len: usize,
    depth: usize,
}

/// A boosted model compiled for prediction on raw rows.
#[derive(Clone, Debug)]
pub(super) struct Forest {
    nodes: Vec<FlatNode>,
    /// Leaf values by flat node (0 at splits).
    values: Vec<f64>,
    trees: Vec<FlatTree>,
    n_features: usize,
    base_score: f64,
}

/// The largest `f32` below `x` (`x` finite or +∞).
fn next_down(x: f32) -> f32 {
    if x == 0.0 {
        -f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() - 1)
    } else {
        f32::from_bits(x.to_bits() + 1)
    }
}

impl Forest {
    /// Compiles validated trees (children after their parent, features and bins in range).
    /// A node reached from two parents (a DAG, never a trained tree) is refused, so the
    /// flattened size stays the tree's own.
    pub(super) fn new(
        trees: &[Tree],
        mapper: &BinMapper,
        base_score: f64,
    ) -> Result<Forest, GbdtError> {
        let mut f = Forest {
            nodes: Vec::new(),
            values: Vec::new(),
            trees: Vec::with_capacity(trees.len()),
            n_features: mapper.n_features(),
            base_score,
        };
        // (old node, new node, depth) of the breadth-first walk; `seen` per old node.
        let mut queue = std::collections::VecDeque::new();
        for (t, tree) in trees.iter().enumerate() {
            let start = f.nodes.len();
            let mut seen = vec![false; tree.nodes.len()];
            let mut len = 1usize;
            let mut depth = 0usize;
            f.nodes.push(LEAF);
            f.values.push(0.0);
            queue.clear();
            queue.push_back((0usize, 0usize, 0usize));
            while let Some((old, new, d)) = queue.pop_front() {
                let node = tree.nodes.get(old);
                let first = seen.get_mut(old).map(|s| !std::mem::replace(s, true));
                if first != Some(true) {
                    return Err(GbdtError::BadInstruction(format!(
                        "tree {t}: node {old} is missing or reached from two parents"
                    )));
                }
                depth = depth.max(d);
                let flat = match node {
                    Some(&Node::Split {
                        feature,
                        bin,
                        default_left,
                        left,
                        right,
                        ..
                    }) => {
                        let cut = mapper.cuts(feature as usize).get(usize::from(bin)).copied();
                        let threshold = match cut {
                            None => f32::INFINITY,
                            Some(c) if c == f32::NEG_INFINITY => f32::NAN,
                            Some(c) if c.is_nan() => f32::NAN,
                            Some(c) => next_down(c),
                        };
                        let l = len;
                        len += 2;
                        for _ in 0..2 {
                            f.nodes.push(LEAF);
                            f.values.push(0.0);
                        }
                        queue.push_back((left as usize, l, d + 1));
                        queue.push_back((right as usize, l + 1, d + 1));
                        let feature = feature.min(f.n_features.saturating_sub(1) as u32) & FEATURE;
                        FlatNode {
                            feature: if default_left {
                                feature | MISSING_LEFT
                            } else {
                                feature
                            },
                            threshold,
                            left: l as u32,
                            right: l as u32 + 1,
                        }
                    }
                    Some(&Node::Leaf { value }) => {
                        if let Some(v) = f.values.get_mut(start + new) {
                            *v = value;
                        }
                        FlatNode {
                            left: new as u32,
                            right: new as u32,
                            ..LEAF
                        }
                    }
                    _ => FlatNode {
                        left: new as u32,
                        right: new as u32,
                        ..LEAF
                    },
                };
                if let Some(slot) = f.nodes.get_mut(start + new) {
                    *slot = flat;
                }
            }
            f.trees.push(FlatTree { start, len, depth });
        }
        Ok(f)
    }

    /// Adds every tree to `margins` (one per row of `rows`, row-major with `n_features`
    /// columns), starting from the base score; rayon-parallel over blocks of rows.
    pub(super) fn margins(&self, rows: &[f32], margins: &mut [f64]) {
        let d = self.n_features;
        margins.fill(self.base_score);
        margins
            .par_chunks_mut(PAR_ROWS)
            .enumerate()
            .for_each(|(c, m)| {
                let first = c * PAR_ROWS;
                for (b, mb) in m.chunks_mut(BLOCK).enumerate() {
                    let r0 = first + b * BLOCK;
                    let block = rows.get(r0 * d..(r0 + mb.len()) * d).unwrap_or(&[]);
                    self.block(block, mb);
                }
            });
    }

    /// Routes one block of rows (at most [`BLOCK`]) through every tree, in order: per tree,
    /// groups of [`LANES`] rows step down together (independent chains the core overlaps).
    /// No arithmetic in the step: a row's slice is found once per block, a node names its
    /// two children.
    fn block(&self, rows: &[f32], margins: &mut [f64]) {
        let d = self.n_features;
        let mut lanes: [&[f32]; BLOCK] = [&[]; BLOCK];
        for (lane, row) in lanes.iter_mut().zip(rows.chunks_exact(d.max(1))) {
            *lane = row;
        }
        let lanes = lanes.get(..margins.len()).unwrap_or(&[]);
        for t in &self.trees {
            let nodes = self.nodes.get(t.start..t.start + t.len).unwrap_or(&[]);
            let values = self.values.get(t.start..t.start + t.len).unwrap_or(&[]);
            for (group, mg) in lanes.chunks(LANES).zip(margins.chunks_mut(LANES)) {
                let mut idx = [0u32; LANES];
                for _ in 0..t.depth {
                    for (i, row) in idx.iter_mut().zip(group) {
                        let node = nodes.get(*i as usize).copied().unwrap_or(LEAF);
                        let f = (node.feature & FEATURE) as usize;
                        let v = row.get(f).copied().unwrap_or(f32::NAN);
                        let go_left = (v <= node.threshold)
                            | (v.is_nan() & (node.feature & MISSING_LEFT != 0));
                        *i = if go_left { node.left } else { node.right };
                    }
                }
                for (m, &i) in mg.iter_mut().zip(&idx) {
                    *m += values.get(i as usize).copied().unwrap_or(0.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gbdt::{fit_pooled, GbdtParams};
    use ndarray::{Array1, Array2, ShapeBuilder};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Blocks, rayon tasks and a ragged last block; a column-major input; values one ulp
    /// either side of every cut, infinities and NaN: the compiled forest gives exactly the
    /// margins of binning then routing.
    #[test]
    fn compiled_forest_equals_binned_routing_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (n, d) = (3000, 7);
        let x = Array2::from_shape_fn((n, d), |_| {
            if rng.random::<f32>() < 0.1 {
                f32::NAN
            } else {
                rng.random::<f32>() * 4.0 - 2.0
            }
        });
        let y = Array1::from_shape_fn(n, |r| {
            let z =
                x[[r, 0]].max(0.0) - x[[r, 1]].abs() + if x[[r, 2]].is_nan() { 1.0 } else { 0.0 };
            if z + rng.random::<f32>() - 0.5 > 0.0 {
                1.0
            } else {
                0.0
            }
        });
        let params = GbdtParams {
            n_trees: 30,
            max_depth: 5,
            max_leaves: 32,
            ..GbdtParams::default()
        };
        let model = fit_pooled(x.view(), y.view(), &params).unwrap();
        let ulp = |c: f32, up: bool| {
            let b = c.to_bits();
            f32::from_bits(if (c >= 0.0) == up { b + 1 } else { b - 1 })
        };
        let mut cands: Vec<Vec<f32>> = (0..d)
            .map(|j| {
                let mut v = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
                for &c in model.bin_mapper.cuts(j) {
                    if c != 0.0 {
                        v.extend([c, ulp(c, true), ulp(c, false)]);
                    }
                }
                v
            })
            .collect();
        cands.iter_mut().for_each(|c| c.push(1.0));
        let rows = 2 * PAR_ROWS + BLOCK + 37;
        let edge_c = Array2::from_shape_fn((rows, d), |(r, j)| {
            cands[j][(r * (j + 3) + r / 7) % cands[j].len()]
        });
        let edge_f = {
            let mut f = Array2::zeros((rows, d).f());
            f.assign(&edge_c);
            f
        };
        let binned = model.bin_mapper.bin(edge_c.view()).unwrap();
        let want = model.predict_margin_binned(binned.view()).unwrap();
        assert_eq!(model.predict_margin(edge_c.view()).unwrap(), want);
        assert_eq!(model.predict_margin(edge_f.view()).unwrap(), want);
        let fx = model.predict_margin(x.view()).unwrap();
        let fb = model
            .predict_margin_binned(model.bin_mapper.bin(x.view()).unwrap().view())
            .unwrap();
        assert_eq!(fx, fb);
    }

    #[test]
    fn next_down_is_the_float_just_below() {
        for x in [
            1.0f32,
            -1.0,
            0.0,
            -0.0,
            1e-40,
            -1e-40,
            3.3e38,
            f32::INFINITY,
        ] {
            let y = next_down(x);
            assert!(y < x, "{x}");
            // Nothing in between: the next float up from y is x (or ±0 for 0).
            let up = if y < 0.0 {
                f32::from_bits(y.to_bits() - 1)
            } else {
                f32::from_bits(y.to_bits() + 1)
            };
            assert!(up == x || (x == 0.0 && up == 0.0), "{x} {y} {up}");
        }
    }
}
