//! Fast prediction: every tree flattened into one contiguous array of compact nodes and, when
//! every tree is at most 6 deep (the usual case), into the rank form ([`ranks`]: values ranked
//! once per block into bytes, trees evaluated as byte compares); otherwise, when every tree
//! has at most 64 leaves, into the level words (≤ 6 deep) or the bit-vector form of
//! QuickScorer (Lucchese et al., SIGIR 2015), evaluated over blocks of rows.
//!
//! Flat layout (the general path, any depth): a tree's nodes are renumbered breadth-first
//! (children after their parent, side by side); a leaf names itself as both children, so every
//! row takes exactly `depth` steps through a tree and the step is `i = if v ≤ threshold ∨ (v is
//! NaN ∧ default_left) { left } else { right }` (a conditional move, no branch). The raw split
//! "present `v` below `cut`" is `v ≤ threshold` with `threshold` the largest `f32` below `cut`
//! (exact for every non-NaN `v`); a split past a feature's last cut sends every present value
//! left (`threshold = +∞`).
//!
//! Bit-vector layout (the fast path): a tree's leaves are numbered left to right and every
//! split holds the mask of the leaves *not* in its left subtree. A row starts a tree with every
//! leaf possible; each split that sends the row right clears its left subtree's leaves; the
//! row's leaf is then the lowest leaf still set (the splits on its path clear every leaf to its
//! left, no split clears it). Every split is thus evaluated for every row, but with no data-
//! dependent addressing: a block of rows is transposed to columns once, and a split is one
//! compare and one masked AND over a column's lanes, which the compiler vectorises. The
//! compare is chosen per split when the forest is compiled so that `NaN` needs no extra test
//! (`v > t` is false for `NaN`: default left; `!(v ≤ t)` is true for `NaN`: default right), and
//! the splits of a tree are grouped by compare.
//!
//! Both layouts add margins tree by tree in model order, as
//! [`super::GbdtModel::predict_margin_binned`] adds them, so results are bit-identical.

use rayon::prelude::*;

use ndarray::ArrayView2;

mod ranks;

use ranks::{RankScratch, Ranks, RANK_BLOCK};

use super::tree::{Node, Tree};
use super::GbdtError;
use crate::binning::{BinMapper, BinningError};
use crate::linear::sigmoid;

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

/// A boosted model compiled once for prediction on raw rows ([`super::GbdtModel::compile`]):
/// build it once per model and reuse it for every batch of rows.
#[derive(Clone, Debug)]
pub struct CompiledForest {
    nodes: Vec<FlatNode>,
    /// Leaf values by flat node (0 at splits).
    values: Vec<f64>,
    trees: Vec<FlatTree>,
    n_features: usize,
    base_score: f64,
    /// The rank form, when every tree is at most [`ranks::RANK_DEPTH`] deep (the fast path).
    ranks: Option<Ranks>,
    /// The level-word form, when every tree is at most [`LEVEL_DEPTH`] deep (the fast path).
    levels: Option<Levels>,
    /// The bit-vector form, when a tree is deeper but every tree has at most 64 leaves.
    bits: Option<Bits>,
}

/// How a bit-vector split decides "right" (its left subtree's leaves are cleared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cmp {
    /// `v > t`: present values above `t`; `NaN` goes left.
    Gt,
    /// `!(v ≤ t)`: present values above `t`, and `NaN`.
    Nle,
    /// `v` is present (a `NaN` threshold, `NaN` left).
    Present,
    /// Every row (a `NaN` threshold, `NaN` right).
    Always,
}

#[derive(Clone, Copy, Debug)]
struct BitSplit {
    feature: u32,
    threshold: f32,
    /// Every leaf but those of the split's left subtree.
    keep: u64,
}

#[derive(Clone, Copy, Debug)]
struct BitTree {
    /// The tree's splits in `Bits::splits`, grouped by compare: `[start, +gt, +nle, +present,
    /// +always]` as offsets.
    bounds: [usize; 5],
    /// The tree's leaf values start here in `Bits::leaves` (left to right).
    leaves: usize,
    n_leaves: usize,
}

#[derive(Clone, Debug)]
struct Bits {
    splits: Vec<BitSplit>,
    leaves: Vec<f64>,
    trees: Vec<BitTree>,
    /// Every tree has at most 32 leaves (32-bit masks, twice the lanes per vector).
    narrow: bool,
}

/// Rows of one bit-vector block (transposed together; 128 × 50 columns of `f32` = 25 KiB,
/// within L1).
const BIT_BLOCK: usize = 128;

/// A leaf mask: `u32` or `u64`.
trait Mask: Copy + std::ops::BitAnd<Output = Self> {
    const ONES: Self;
    fn from_keep(keep: u64) -> Self;
    fn lowest(self) -> usize;
}

impl Mask for u32 {
    const ONES: u32 = u32::MAX;
    fn from_keep(keep: u64) -> u32 {
        keep as u32
    }
    fn lowest(self) -> usize {
        self.trailing_zeros() as usize
    }
}

impl Mask for u64 {
    const ONES: u64 = u64::MAX;
    fn from_keep(keep: u64) -> u64 {
        keep
    }
    fn lowest(self) -> usize {
        self.trailing_zeros() as usize
    }
}

/// The largest `f32` below `x` (`x` finite or +∞).
/// Transposes the first `n` rows of `rows` (`d` features each) into `cols`: `d` columns of
/// `block` lanes, feature `f` of row `r` at `f * block + r`; lanes past `n` are `NaN` (ignored
/// by the forms that read them).
fn transpose_block(rows: &[f32], d: usize, n: usize, block: usize, cols: &mut [f32]) {
    if n < block {
        cols.fill(f32::NAN);
    }
    for (r, row) in rows.chunks_exact(d).enumerate().take(n) {
        for (f, &v) in row.iter().enumerate() {
            if let Some(c) = cols.get_mut(f * block + r) {
                *c = v;
            }
        }
    }
}

fn next_down(x: f32) -> f32 {
    if x == 0.0 {
        -f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() - 1)
    } else {
        f32::from_bits(x.to_bits() + 1)
    }
}

impl CompiledForest {
    /// Compiles validated trees (children after their parent, features and bins in range).
    /// A node reached from two parents (a DAG, never a trained tree) is refused, so the
    /// flattened size stays the tree's own.
    pub(super) fn new(
        trees: &[Tree],
        mapper: &BinMapper,
        base_score: f64,
    ) -> Result<CompiledForest, GbdtError> {
        let mut f = CompiledForest {
            nodes: Vec::new(),
            values: Vec::new(),
            trees: Vec::with_capacity(trees.len()),
            n_features: mapper.n_features(),
            base_score,
            ranks: None,
            levels: None,
            bits: None,
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
        // The bit-vector form when every tree has ≤ 32 leaves (32-bit masks: measured faster
        // than the level words on depth-4 trees), the level words for trees ≤ 6 deep with
        // more leaves (where the masks would be 64-bit), BENCHMARKS.md "Scoring".
        f.ranks = Ranks::new(&f);
        if f.ranks.is_some() {
            return Ok(f);
        }
        f.bits = Bits::new(&f).filter(|b| b.narrow);
        if f.bits.is_none() {
            f.levels = Levels::new(&f);
        }
        if f.bits.is_none() && f.levels.is_none() {
            f.bits = Bits::new(&f);
        }
        Ok(f)
    }

    /// The same forest in the bit-vector (QuickScorer) form, which the level words replace
    /// for trees ≤ 6 deep with more than 32 leaves; `None` when a tree has more than 64
    /// leaves. Gives the same margins: for benchmarks, as the in-run baseline.
    pub fn bit_vector_form(&self) -> Option<CompiledForest> {
        let mut f = self.clone();
        f.ranks = None;
        f.levels = None;
        f.bits = Some(Bits::new(&f)?);
        Some(f)
    }

    /// The same forest in the level-word form, which the rank form replaces; `None` when a
    /// tree is deeper than 6. Gives the same margins: for benchmarks, as the in-run baseline.
    pub fn level_word_form(&self) -> Option<CompiledForest> {
        let mut f = self.clone();
        f.ranks = None;
        f.bits = None;
        f.levels = Some(Levels::new(&f)?);
        Some(f)
    }

    /// The number of feature columns a row must have.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Margins (log-odds) of raw rows (`NaN` = missing), exactly
    /// [`super::GbdtModel::predict_margin`]'s.
    pub fn predict_margin(&self, x: ArrayView2<f32>) -> Result<Vec<f64>, GbdtError> {
        if x.ncols() != self.n_features {
            return Err(BinningError::ShapeMismatch {
                what: "feature columns",
                expected: self.n_features,
                got: x.ncols(),
            }
            .into());
        }
        let x = x.as_standard_layout();
        let rows: std::borrow::Cow<'_, [f32]> = match x.as_slice() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(x.iter().copied().collect()),
        };
        let mut m = vec![self.base_score; x.nrows()];
        self.margins(&rows, &mut m);
        Ok(m)
    }

    /// Probabilities of the positive class.
    pub fn predict_proba(&self, x: ArrayView2<f32>) -> Result<Vec<f64>, GbdtError> {
        Ok(self.predict_margin(x)?.into_iter().map(sigmoid).collect())
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
                if let Some(rk) = &self.ranks {
                    let mut scratch = RankScratch::new(d, rk.n_trees());
                    for (b, mb) in m.chunks_mut(RANK_BLOCK).enumerate() {
                        let r0 = first + b * RANK_BLOCK;
                        let block = rows.get(r0 * d..(r0 + mb.len()) * d).unwrap_or(&[]);
                        self.rank_block(rk, block, &mut scratch, mb);
                    }
                    return;
                }
                if let Some(lv) = &self.levels {
                    let mut cols = vec![f32::NAN; d * LEVEL_BLOCK];
                    for (b, mb) in m.chunks_mut(LEVEL_BLOCK).enumerate() {
                        let r0 = first + b * LEVEL_BLOCK;
                        let block = rows.get(r0 * d..(r0 + mb.len()) * d).unwrap_or(&[]);
                        self.level_block(lv, block, &mut cols, mb);
                    }
                    return;
                }
                if let Some(bits) = &self.bits {
                    let mut cols = vec![f32::NAN; d * BIT_BLOCK];
                    for (b, mb) in m.chunks_mut(BIT_BLOCK).enumerate() {
                        let r0 = first + b * BIT_BLOCK;
                        let block = rows.get(r0 * d..(r0 + mb.len()) * d).unwrap_or(&[]);
                        if bits.narrow {
                            self.bit_block::<u32>(bits, block, &mut cols, mb);
                        } else {
                            self.bit_block::<u64>(bits, block, &mut cols, mb);
                        }
                    }
                    return;
                }
                for (b, mb) in m.chunks_mut(BLOCK).enumerate() {
                    let r0 = first + b * BLOCK;
                    let block = rows.get(r0 * d..(r0 + mb.len()) * d).unwrap_or(&[]);
                    self.block(block, mb);
                }
            });
    }

    /// Adds every tree to one block of rows (at most [`LEVEL_BLOCK`]) in the level-word form:
    /// the block is transposed into `cols` (`d` columns of [`LEVEL_BLOCK`] lanes; lanes past
    /// the block's rows are `NaN` and ignored); per tree every split ORs its bit into the
    /// words of the rows it sends right (one compare over a column's lanes, vectorised), then
    /// every row steps down the tree reading its own words (a variable shift per lane,
    /// vectorised) and adds its leaf.
    fn level_block(&self, lv: &Levels, rows: &[f32], cols: &mut [f32], margins: &mut [f64]) {
        let d = self.n_features.max(1);
        let n = margins.len().min(LEVEL_BLOCK);
        transpose_block(rows, d, n, LEVEL_BLOCK, cols);
        let cols = &*cols;
        let lanes = |s: &LevelSplit| -> Option<&[f32; LEVEL_BLOCK]> {
            cols.get(s.feature as usize * LEVEL_BLOCK..)?
                .get(..LEVEL_BLOCK)?
                .try_into()
                .ok()
        };
        // Split by split over the whole block, as in `bit_block`: loops the compiler
        // vectorises.
        let or_into = |words: &mut [u32; LEVEL_BLOCK], splits: &[LevelSplit], cmp: Cmp| {
            for s in splits {
                let Some(c) = lanes(s) else { continue };
                let (bit, t) = (1u32 << (s.bit & 31), s.threshold);
                match cmp {
                    Cmp::Gt => {
                        for (w, &v) in words.iter_mut().zip(c) {
                            *w |= if v > t { bit } else { 0 };
                        }
                    }
                    Cmp::Nle => {
                        for (w, &v) in words.iter_mut().zip(c) {
                            *w |= if v <= t { 0 } else { bit };
                        }
                    }
                    Cmp::Present => {
                        for (w, &v) in words.iter_mut().zip(c) {
                            *w |= if v.is_nan() { 0 } else { bit };
                        }
                    }
                    Cmp::Always => {}
                }
            }
        };
        let mut m = [0.0f64; LEVEL_BLOCK];
        for (mv, &b) in m.iter_mut().zip(margins.iter()) {
            *mv = b;
        }
        let (low_steps, high_step) = (lv.depth.min(5), lv.depth > 5);
        // Leaf `i` is slot `i − 2^D`: `i` has exactly the bit `2^D` above the slot's bits.
        let top = 1u32 << lv.depth;
        let mut idx = [0u32; LEVEL_BLOCK];
        for (t, leaves) in lv.trees.iter().zip(&lv.leaves) {
            let group = |k: usize| lv.splits.get(t.bounds[k]..t.bounds[k + 1]).unwrap_or(&[]);
            let mut lo = [t.always[0]; LEVEL_BLOCK];
            let mut hi = [t.always[1]; LEVEL_BLOCK];
            for (k, cmp) in [Cmp::Gt, Cmp::Nle, Cmp::Present].into_iter().enumerate() {
                or_into(&mut lo, group(k), cmp);
                or_into(&mut hi, group(3 + k), cmp);
            }
            // Node `i` (breadth first from 1) goes right iff bit `i` of its word is set;
            // nodes 1..32 are in `lo`, 32..64 in `hi`.
            for ((x, &l), &h) in idx.iter_mut().zip(&lo).zip(&hi) {
                let mut i = 1u32;
                for _ in 0..low_steps {
                    i = 2 * i + ((l >> (i & 31)) & 1);
                }
                if high_step {
                    i = 2 * i + ((h >> (i & 31)) & 1);
                }
                *x = i;
            }
            for (mv, &i) in m.iter_mut().zip(&idx) {
                *mv += leaves[((i ^ top) & 63) as usize];
            }
        }
        for (mv, &b) in margins.iter_mut().zip(m.iter()) {
            *mv = b;
        }
    }

    /// Adds every tree to one block of rows (at most [`BIT_BLOCK`]) in the bit-vector form:
    /// the block is transposed into `cols` (`d` columns of [`BIT_BLOCK`] lanes; lanes past
    /// the block's rows are `NaN` and ignored), then per tree every split ANDs its mask into
    /// the rows it sends right and each row adds its lowest remaining leaf.
    fn bit_block<M: Mask>(&self, bits: &Bits, rows: &[f32], cols: &mut [f32], margins: &mut [f64]) {
        let d = self.n_features.max(1);
        let n = margins.len();
        transpose_block(rows, d, n, BIT_BLOCK, cols);
        let cols = &*cols;
        let lanes = |s: &BitSplit| -> Option<&[f32; BIT_BLOCK]> {
            cols.get(s.feature as usize * BIT_BLOCK..)?
                .get(..BIT_BLOCK)?
                .try_into()
                .ok()
        };
        let mut m = [M::ONES; BIT_BLOCK];
        for t in &bits.trees {
            let leaves = bits
                .leaves
                .get(t.leaves..t.leaves + t.n_leaves)
                .unwrap_or(&[]);
            let group = |k: usize| bits.splits.get(t.bounds[k]..t.bounds[k + 1]).unwrap_or(&[]);
            let always = group(3)
                .iter()
                .fold(M::ONES, |m, s| m & M::from_keep(s.keep));
            m.fill(always);
            // Split by split over the whole block: loops of BIT_BLOCK lanes, which the
            // compiler vectorises at every optimisation level (short fixed loops it unrolls
            // into scalar code instead).
            for s in group(0) {
                if let Some(c) = lanes(s) {
                    let (keep, t) = (M::from_keep(s.keep), s.threshold);
                    for (mk, &v) in m.iter_mut().zip(c) {
                        *mk = *mk & if v > t { keep } else { M::ONES };
                    }
                }
            }
            for s in group(1) {
                if let Some(c) = lanes(s) {
                    let (keep, t) = (M::from_keep(s.keep), s.threshold);
                    for (mk, &v) in m.iter_mut().zip(c) {
                        *mk = *mk & if v <= t { M::ONES } else { keep };
                    }
                }
            }
            for s in group(2) {
                if let Some(c) = lanes(s) {
                    let keep = M::from_keep(s.keep);
                    for (mk, &v) in m.iter_mut().zip(c) {
                        *mk = *mk & if v.is_nan() { M::ONES } else { keep };
                    }
                }
            }
            for (mv, mk) in margins.iter_mut().zip(&m) {
                *mv += leaves.get(mk.lowest()).copied().unwrap_or(0.0);
            }
        }
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

/// Rows of one level-word block (transposed together: 64 × 50 columns of `f32` = 12.5 KiB).
const LEVEL_BLOCK: usize = 64;
/// The deepest tree the level-word form takes: its splits are nodes 1..64 breadth first, two
/// 32-bit words per row.
const LEVEL_DEPTH: usize = 6;

/// The level-word form of a forest whose trees are at most [`LEVEL_DEPTH`] deep (used when
/// some tree has more than 32 leaves; with fewer the 32-bit masks are faster). Every tree
/// is read as the complete tree of the forest's depth `D` numbered breadth first from 1 (node
/// `i` has children `2i`, `2i + 1`; the leaves are `2^D..2^(D+1)`); a leaf above depth `D`
/// stands for its leftmost descendant, since no split below it exists to send a row right.
/// A row's path is decided by one bit per split, "goes right"; the row steps `D` times
/// `i ← 2i + bit(i)` and adds leaf `i − 2^D`.
#[derive(Clone, Debug)]
struct Levels {
    splits: Vec<LevelSplit>,
    trees: Vec<LevelTree>,
    /// Leaf values by leaf slot `i − 2^D` (unused slots 0), one array per tree.
    leaves: Vec<[f64; 64]>,
    /// `D`: the deepest tree's depth.
    depth: usize,
}

#[derive(Clone, Copy, Debug)]
struct LevelSplit {
    feature: u32,
    threshold: f32,
    /// The node's number modulo 32 (its bit in its word).
    bit: u32,
}

#[derive(Clone, Copy, Debug)]
struct LevelTree {
    /// The tree's splits in `Levels::splits`, grouped: `[start, +low Gt, +low Nle, +low
    /// Present, +high Gt, +high Nle, +high Present]` as offsets ("low": nodes 1..32).
    bounds: [usize; 7],
    /// The bits of the splits that send every row right ([`Cmp::Always`]), low and high.
    always: [u32; 2],
}

impl Levels {
    /// The level-word form of `f`'s trees; `None` when a tree is deeper than
    /// [`LEVEL_DEPTH`].
    fn new(f: &CompiledForest) -> Option<Levels> {
        let depth = f.trees.iter().map(|t| t.depth).max().unwrap_or(0);
        if depth > LEVEL_DEPTH {
            return None;
        }
        let mut lv = Levels {
            splits: Vec::new(),
            trees: Vec::with_capacity(f.trees.len()),
            leaves: Vec::with_capacity(f.trees.len()),
            depth,
        };
        let mut groups: [Vec<LevelSplit>; 6] = Default::default();
        // (flat node, number from 1, level)
        let mut stack: Vec<(usize, usize, usize)> = Vec::new();
        for t in &f.trees {
            let nodes = f.nodes.get(t.start..t.start + t.len)?;
            let values = f.values.get(t.start..t.start + t.len)?;
            groups.iter_mut().for_each(Vec::clear);
            let mut always = [0u32; 2];
            let mut leaves = [0.0f64; 64];
            stack.clear();
            stack.push((0, 1, 0));
            while let Some((i, num, level)) = stack.pop() {
                let node = nodes.get(i)?;
                if node.left as usize == i {
                    let slot = (num << (depth - level)).checked_sub(1 << depth)?;
                    *leaves.get_mut(slot)? = values.get(i).copied().unwrap_or(0.0);
                    continue;
                }
                if level >= depth {
                    return None;
                }
                let word = usize::from(num >= 32);
                let bit = (num % 32) as u32;
                let default_left = node.feature & MISSING_LEFT != 0;
                let k = match (node.threshold.is_nan(), default_left) {
                    (true, true) => Some(2),
                    (true, false) => None,
                    (false, true) => Some(0),
                    (false, false) => Some(1),
                };
                match k {
                    Some(k) => groups.get_mut(3 * word + k)?.push(LevelSplit {
                        feature: node.feature & FEATURE,
                        threshold: node.threshold,
                        bit,
                    }),
                    None => *always.get_mut(word)? |= 1 << bit,
                }
                stack.push((node.left as usize, 2 * num, level + 1));
                stack.push((node.right as usize, 2 * num + 1, level + 1));
            }
            let start = lv.splits.len();
            let mut bounds = [start; 7];
            for (k, g) in groups.iter().enumerate() {
                bounds[k + 1] = bounds[k] + g.len();
                lv.splits.extend_from_slice(g);
            }
            lv.trees.push(LevelTree { bounds, always });
            lv.leaves.push(leaves);
        }
        Some(lv)
    }
}

impl Bits {
    /// The bit-vector form of `f`'s trees; `None` when a tree has more than 64 leaves.
    fn new(f: &CompiledForest) -> Option<Bits> {
        let mut b = Bits {
            splits: Vec::new(),
            leaves: Vec::new(),
            trees: Vec::with_capacity(f.trees.len()),
            narrow: true,
        };
        let mut tree_splits: Vec<(Cmp, BitSplit)> = Vec::new();
        for t in &f.trees {
            let nodes = f.nodes.get(t.start..t.start + t.len)?;
            let values = f.values.get(t.start..t.start + t.len)?;
            let first = b.leaves.len();
            tree_splits.clear();
            visit(nodes, values, 0, first, 0, &mut b.leaves, &mut tree_splits)?;
            let n_leaves = b.leaves.len() - first;
            b.narrow &= n_leaves <= 32;
            tree_splits.sort_by_key(|&(c, _)| c);
            let start = b.splits.len();
            let mut bounds = [start; 5];
            for (k, cmp) in [Cmp::Gt, Cmp::Nle, Cmp::Present, Cmp::Always]
                .into_iter()
                .enumerate()
            {
                let n = tree_splits.iter().filter(|&&(c, _)| c == cmp).count();
                bounds[k + 1] = bounds[k] + n;
            }
            b.splits.extend(tree_splits.iter().map(|&(_, s)| s));
            b.trees.push(BitTree {
                bounds,
                leaves: first,
                n_leaves,
            });
        }
        Some(b)
    }
}

/// Numbers the leaves under flat node `i` of one tree left to right (their values pushed onto
/// `leaves`, numbers counted from `first`) and records each split with the mask of the leaves
/// outside its left subtree; returns the leaf numbers under `i` as a range. `None` past 64
/// leaves (or a depth no validated tree has).
fn visit(
    nodes: &[FlatNode],
    values: &[f64],
    i: usize,
    first: usize,
    depth: usize,
    leaves: &mut Vec<f64>,
    splits: &mut Vec<(Cmp, BitSplit)>,
) -> Option<(usize, usize)> {
    let node = nodes.get(i)?;
    if node.left as usize == i || depth > super::MAX_DEPTH {
        let k = leaves.len() - first;
        if k >= 64 || depth > super::MAX_DEPTH {
            return None;
        }
        leaves.push(values.get(i).copied().unwrap_or(0.0));
        return Some((k, k + 1));
    }
    let (a, b) = visit(
        nodes,
        values,
        node.left as usize,
        first,
        depth + 1,
        leaves,
        splits,
    )?;
    let (_, c) = visit(
        nodes,
        values,
        node.right as usize,
        first,
        depth + 1,
        leaves,
        splits,
    )?;
    let width = u32::try_from(b - a).ok().filter(|&w| w < 64)?;
    let left = ((1u64 << width) - 1) << a;
    let default_left = node.feature & MISSING_LEFT != 0;
    let cmp = match (node.threshold.is_nan(), default_left) {
        (true, true) => Cmp::Present,
        (true, false) => Cmp::Always,
        (false, true) => Cmp::Gt,
        (false, false) => Cmp::Nle,
    };
    splits.push((
        cmp,
        BitSplit {
            feature: node.feature & FEATURE,
            threshold: node.threshold,
            keep: !left,
        },
    ));
    Some((a, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gbdt::{fit_pooled, GbdtParams};
    use ndarray::{Array1, Array2, ShapeBuilder};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The forest compiled in each form that can hold its trees: as compiled, then with the
    /// faster forms turned off (the bit-vector form when every tree has ≤ 64 leaves, and the
    /// flat walk always).
    fn every_form(f: &CompiledForest) -> Vec<(&'static str, CompiledForest)> {
        let mut forms = vec![("as compiled", f.clone())];
        let mut ranks = f.clone();
        ranks.levels = None;
        ranks.bits = None;
        ranks.ranks = Ranks::new(&ranks);
        if ranks.ranks.is_some() {
            forms.push(("ranks", ranks));
        }
        let mut levels = f.clone();
        levels.ranks = None;
        levels.bits = None;
        levels.levels = Levels::new(&levels);
        if levels.levels.is_some() {
            forms.push(("level words", levels));
        }
        let mut bits = f.clone();
        bits.ranks = None;
        bits.levels = None;
        bits.bits = Bits::new(&bits);
        if bits.bits.is_some() {
            forms.push(("bit vectors", bits));
        }
        let mut walk = f.clone();
        walk.ranks = None;
        walk.levels = None;
        walk.bits = None;
        forms.push(("flat walk", walk));
        forms
    }

    /// Blocks, rayon tasks and a ragged last block; a column-major input; values one ulp
    /// either side of every cut, infinities and NaN: the compiled forest gives exactly the
    /// margins of binning then routing, in each of its forms (level words for trees ≤ 6
    /// deep, bit vectors of 32 and of 64 leaves, and the flat walk).
    #[test]
    fn compiled_forest_equals_binned_routing_bit_for_bit() {
        for (max_depth, max_leaves) in [(5, 32), (6, 64), (8, 200), (8, 40), (1, 2), (3, 8)] {
            forest_equals_binned(max_depth, max_leaves);
        }
    }

    fn forest_equals_binned(max_depth: usize, max_leaves: usize) {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (n, d) = (6000, 7);
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
            max_depth,
            max_leaves,
            min_child_weight: 0.0,
            ..GbdtParams::default()
        };
        let model = fit_pooled(x.view(), y.view(), &params).unwrap();
        let forest = model.compile().unwrap();
        let deepest = forest.trees.iter().map(|t| t.depth).max().unwrap_or(0);
        let most_leaves = model.trees.iter().map(Tree::n_leaves).max().unwrap_or(0);
        // The form chosen: ranks up to depth 6 (7 features, at most 255 bins), else 32-bit
        // masks up to 32 leaves, else 64-bit masks up to 64 leaves, else the walk.
        assert_eq!(
            (
                forest.ranks.is_some(),
                forest.levels.is_some(),
                forest.bits.as_ref().map(|b| b.narrow)
            ),
            if deepest <= LEVEL_DEPTH {
                (true, false, None)
            } else if most_leaves <= 32 {
                (false, false, Some(true))
            } else if most_leaves <= 64 {
                (false, false, Some(false))
            } else {
                (false, false, None)
            },
            "depth {max_depth}, {max_leaves} leaves: deepest {deepest}, most leaves {most_leaves}"
        );
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
        let fb = model
            .predict_margin_binned(model.bin_mapper.bin(x.view()).unwrap().view())
            .unwrap();
        for (form, f) in every_form(&forest) {
            assert_eq!(f.predict_margin(edge_c.view()).unwrap(), want, "{form}");
            assert_eq!(f.predict_margin(edge_f.view()).unwrap(), want, "{form}");
            assert_eq!(f.predict_margin(x.view()).unwrap(), fb, "{form}");
        }
    }

    /// A random complete tree over `mapper` (children after their parent), at most `depth`
    /// deep: splits on any feature at any bin below `max_bins` (so past a feature's last cut
    /// too), either default direction.
    fn random_tree(rng: &mut ChaCha8Rng, mapper: &BinMapper, depth: usize) -> Tree {
        let mut nodes = vec![Node::Leaf { value: 0.0 }];
        // (node, its depth), breadth first
        let mut queue = std::collections::VecDeque::from([(0usize, 0usize)]);
        while let Some((i, d)) = queue.pop_front() {
            if d < depth && rng.random::<f32>() < 0.8 {
                let (left, right) = (nodes.len() as u32, nodes.len() as u32 + 1);
                nodes.push(Node::Leaf { value: 0.0 });
                nodes.push(Node::Leaf { value: 0.0 });
                nodes[i] = Node::Split {
                    feature: rng.random_range(0..mapper.n_features() as u32),
                    bin: rng.random_range(0..mapper.max_bins() as u8),
                    threshold: 0.0,
                    default_left: rng.random(),
                    left,
                    right,
                    gain: 0.0,
                };
                queue.push_back((left as usize, d + 1));
                queue.push_back((right as usize, d + 1));
            } else {
                nodes[i] = Node::Leaf {
                    value: f64::from(rng.random::<f32>() - 0.5) * 0.1,
                };
            }
        }
        Tree { nodes }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Random forests (depth 1–8, so every form) on random cut points, rows of NaN,
        /// infinities, cut points and their neighbours: every form of the compiled forest
        /// gives bit for bit the plain per-row walk over the binned rows (missing values take
        /// each split's default direction).
        #[test]
        fn compiled_forest_equals_the_per_row_walk(seed in proptest::prelude::any::<u64>()) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let d = rng.random_range(1..5usize);
            let max_bins = rng.random_range(2..9usize);
            let cuts: Vec<Vec<f32>> = (0..d)
                .map(|_| {
                    let k = rng.random_range(0..max_bins);
                    let mut c: Vec<f32> = (0..k).map(|_| rng.random_range(-8i32..8) as f32 * 0.25).collect();
                    c.sort_by(f32::total_cmp);
                    c.dedup();
                    c
                })
                .collect();
            let mapper = BinMapper::from_cuts(cuts, max_bins).unwrap();
            let depth = rng.random_range(1..9usize);
            let trees: Vec<Tree> = (0..rng.random_range(1..12usize))
                .map(|_| random_tree(&mut rng, &mapper, depth))
                .collect();
            let model = crate::gbdt::GbdtModel { base_score: 0.25, bin_mapper: mapper, trees };
            let pick = |rng: &mut ChaCha8Rng, j: usize| -> f32 {
                let c = model.bin_mapper.cuts(j);
                match rng.random_range(0..6) {
                    0 => f32::NAN,
                    1 => [f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0][rng.random_range(0..4)],
                    2 | 3 if !c.is_empty() => {
                        let v = c[rng.random_range(0..c.len())];
                        [v, next_down(v), -next_down(-v)][rng.random_range(0..3)]
                    }
                    _ => rng.random_range(-2.5f32..2.5),
                }
            };
            let rows = rng.random_range(1..3 * LEVEL_BLOCK + 5);
            let x = Array2::from_shape_fn((rows, d), |(_, j)| pick(&mut rng, j));
            let want = model
                .predict_margin_binned(model.bin_mapper.bin(x.view()).unwrap().view())
                .unwrap();
            for (form, f) in every_form(&model.compile().unwrap()) {
                proptest::prop_assert_eq!(&f.predict_margin(x.view()).unwrap(), &want, "{}", form);
            }
        }
    }

    /// A feature split at more distinct thresholds than the rank form's bytes hold (248)
    /// leaves the forest in another form (here 32-bit masks); at 248 it is ranked. Every form
    /// gives the per-row walk.
    #[test]
    fn too_many_thresholds_fall_back_to_another_form() {
        for (n_cuts, ranked) in [(254usize, false), (248, true)] {
            let cuts: Vec<f32> = (0..n_cuts).map(|k| k as f32 * 0.5 - 60.0).collect();
            let mapper = BinMapper::from_cuts(vec![cuts.clone(), vec![0.0]], 255).unwrap();
            // Depth-3 trees, 6 splits on feature 0 at consecutive bins (every bin used) and one
            // on feature 1, default directions alternating.
            let mut trees = Vec::new();
            let mut bin = 0usize;
            while bin < n_cuts {
                let mut nodes = Vec::new();
                for i in 0..7usize {
                    let b = (bin + i).min(n_cuts - 1) as u8;
                    let (feature, b) = if i == 6 { (1, 0) } else { (0, b) };
                    nodes.push(Node::Split {
                        feature,
                        bin: b,
                        threshold: 0.0,
                        default_left: (bin / 6 + i) % 2 == 0,
                        left: (2 * i + 1) as u32,
                        right: (2 * i + 2) as u32,
                        gain: 0.0,
                    });
                }
                for k in 0..8 {
                    nodes.push(Node::Leaf {
                        value: (bin + k) as f64 * 0.001,
                    });
                }
                trees.push(Tree { nodes });
                bin += 6;
            }
            let model = crate::gbdt::GbdtModel {
                base_score: -0.5,
                bin_mapper: mapper,
                trees,
            };
            let forest = model.compile().unwrap();
            assert_eq!(forest.ranks.is_some(), ranked, "{n_cuts} cuts");
            assert_eq!(forest.bits.is_some(), !ranked, "{n_cuts} cuts");
            let mut vals = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0];
            for &c in &cuts {
                vals.extend([c, next_down(c), -next_down(-c)]);
            }
            let rows = vals.len();
            let x = Array2::from_shape_fn((rows, 2), |(r, j)| {
                if j == 0 {
                    vals[r]
                } else {
                    vals[(r * 7) % rows]
                }
            });
            let want = model
                .predict_margin_binned(model.bin_mapper.bin(x.view()).unwrap().view())
                .unwrap();
            for (form, f) in every_form(&forest) {
                assert_eq!(
                    f.predict_margin(x.view()).unwrap(),
                    want,
                    "{n_cuts} cuts, {form}"
                );
            }
        }
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
