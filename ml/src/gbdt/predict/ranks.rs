//! The rank form of a forest whose trees are at most [`RANK_DEPTH`] deep (the fast path).
//!
//! Every threshold is a bin cut, so a value only matters through its **rank** among the
//! thresholds the forest's splits use on its feature: `r(v) = #{j : v > t_j}` over the
//! feature's sorted thresholds `t_0 ≤ … ≤ t_{K-1}`, and the split at `t_j` sends a present `v`
//! right iff `r(v) > j` (`v > t_j` is the flat walk's "not `v ≤ t`" for present values). A
//! block of rows is ranked once, every value against its feature's thresholds (a vectorised
//! compare-and-count over a transposed group of 32 rows: per threshold one compare and one
//! subtraction per 8 values, the 32 counts in four registers), into two byte columns per
//! feature: present values as `r + 1` in both, a missing value as `0` in the "missing low"
//! column (read by the splits that send it left) and as `K + 2` in the "missing high" column
//! (splits that send it right). A split is then one byte compare "goes left iff byte <
//! bound" on 32 lanes (an AVX2 register) instead of a float compare on 8:
//!
//! * threshold `t_j`: bound `j + 2` on the column of its default direction;
//! * `NaN` threshold (a cut of −∞: every present value goes right), default left: bound 1 on
//!   the missing-low column (only the missing `0` goes left); default right: bound 1 on the
//!   missing-high column (nothing goes left);
//! * a slot of the complete tree below a leaf: bound 255 (everything goes left; the leaf
//!   stands for its leftmost descendant).
//!
//! Bytes are stored offset by −128 (`i8`, so the compare is the signed byte compare).
//! Each tree is read as the complete tree of the forest's depth `D` (nodes `1..2^D`
//! breadth first, children `2n`, `2n + 1`) and evaluated bottom-up over 64 rows at a time:
//! the leaf number (left to right) under node `n` is `left(n) ? idx(2n) : idx(2n + 1)`, a node
//! of the last level choosing between its two leaves' numbers (constants), so one compare and
//! one byte blend per node, no data-dependent addressing, every intermediate in registers.
//! The leaf indices of all trees are kept for the block, then
//! each row adds its leaves in model order, as everywhere else, so margins are bit-identical.
//! A feature's thresholds are ended by +∞, where the count stops; at most 248 per feature and
//! 256 features, else the forest takes another form.

use super::{CompiledForest, FEATURE, MISSING_LEFT};

/// Rows ranked together and then routed through every tree together (their bytes, two
/// columns per feature: 100 × 128 B = 12.5 KiB for 50 features, within L1).
pub(super) const RANK_BLOCK: usize = 128;
/// Rows evaluated together: two AVX2 registers of `i8`.
const W: usize = 64;
/// Rows ranked together (eight AVX2 registers: the floats and their counts).
const RW: usize = 32;
/// Byte vectors per column of a block.
const CHUNKS: usize = RANK_BLOCK / W;
/// The most features the rank form takes.
const MAX_FEATURES: usize = 256;
/// The block's bytes are `CHUNKS` runs of `2 · MAX_FEATURES` byte vectors (one per column),
/// vector `q`'s run from `q · RUN`, so a node's column is one byte offset (`col · W`, below
/// 2^15) from its run's start.
const RUN: usize = 2 * MAX_FEATURES * W;
/// What a walk over run `q` sees: from the run's start, room for any `u16` offset and a
/// vector past it, so that reading a node's vector needs no bounds check.
const VIEW: usize = (u16::MAX as usize) + 1 + W;
const BYTES: usize = (CHUNKS - 1) * RUN + VIEW;
/// The deepest tree the rank form takes (63 split slots, leaf index in a byte).
pub(super) const RANK_DEPTH: usize = 6;
/// Most thresholds per feature: bytes run `0..=K + 2`, and must stay below the bound 255 that
/// means "always left".
const MAX_CUTS: usize = 248;
/// Split slots of a complete tree of depth [`RANK_DEPTH`].
const SLOTS: usize = (1 << RANK_DEPTH) - 1;

/// A byte `0..=255` as stored (offset by −128).
fn enc(u: i32) -> i8 {
    (u.clamp(0, 255) - 128) as i8
}

#[derive(Clone, Debug)]
pub(super) struct Ranks {
    /// Feature `f`'s sorted thresholds and a +∞ are `cuts[starts[f]..starts[f + 1]]`.
    cuts: Vec<f32>,
    starts: Vec<usize>,
    trees: Vec<RankTree>,
    /// Per tree, leaf values by leaf index (left to right in the complete tree; unused 0).
    /// 256 wide, so a leaf index byte needs no mask (only the first 64 are ever read).
    leaves: Vec<[f64; 256]>,
    /// `D`: the deepest tree's depth (≥ 1).
    depth: usize,
}

#[derive(Clone, Debug)]
struct RankTree {
    /// Slot `n − 1` holds node `n`'s byte column (`f` missing low, `d + f` missing high) as
    /// the byte offset `col · W` of its vector within a run of the block's bytes.
    cols: [u16; SLOTS],
    /// Slot `n − 1`: node `n` sends a row left iff its byte is below this (broadcast, as
    /// stored bytes, 32 copies).
    bounds: [[i8; 32]; SLOTS],
}

impl Ranks {
    /// The rank form of `f`'s trees; `None` when a tree is deeper than [`RANK_DEPTH`], there
    /// are more than [`MAX_FEATURES`] features or a feature has more than [`MAX_CUTS`]
    /// thresholds.
    pub(super) fn new(f: &CompiledForest) -> Option<Ranks> {
        let d = f.n_features;
        let depth = f.trees.iter().map(|t| t.depth).max().unwrap_or(0).max(1);
        if depth > RANK_DEPTH || d == 0 || d > MAX_FEATURES {
            return None;
        }
        // Every feature's distinct thresholds (NaN thresholds are decided by presence alone).
        let mut per: Vec<Vec<f32>> = vec![Vec::new(); d];
        for n in &f.nodes {
            if n.left != n.right && !n.threshold.is_nan() {
                per.get_mut((n.feature & FEATURE) as usize)?
                    .push(n.threshold);
            }
        }
        let mut cuts = Vec::new();
        let mut starts = vec![0];
        for p in &mut per {
            p.sort_by(f32::total_cmp);
            p.dedup_by(|a, b| a.to_bits() == b.to_bits());
            if p.len() > MAX_CUTS {
                return None;
            }
            // Ended by +∞ (no value is above it), where the count loop stops.
            cuts.extend_from_slice(p);
            cuts.push(f32::INFINITY);
            starts.push(cuts.len());
        }
        let mut rk = Ranks {
            cuts,
            starts,
            trees: Vec::with_capacity(f.trees.len()),
            leaves: Vec::with_capacity(f.trees.len()),
            depth,
        };
        // (flat node, number from 1, level)
        let mut stack: Vec<(usize, usize, usize)> = Vec::new();
        for t in &f.trees {
            let nodes = f.nodes.get(t.start..t.start + t.len)?;
            let values = f.values.get(t.start..t.start + t.len)?;
            let mut tree = RankTree {
                cols: [0; SLOTS],
                bounds: [[enc(255); 32]; SLOTS],
            };
            let mut leaves = [0.0f64; 256];
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
                let feature = (node.feature & FEATURE) as usize;
                let default_left = node.feature & MISSING_LEFT != 0;
                let col = if default_left { feature } else { d + feature };
                let bound = if node.threshold.is_nan() {
                    1
                } else {
                    let own = rk
                        .cuts
                        .get(*rk.starts.get(feature)?..*rk.starts.get(feature + 1)?)?;
                    let j = own
                        .iter()
                        .position(|c| c.to_bits() == node.threshold.to_bits())?;
                    j as i32 + 2
                };
                *tree.cols.get_mut(num - 1)? = u16::try_from(col * W).ok()?;
                *tree.bounds.get_mut(num - 1)? = [enc(bound); 32];
                stack.push((node.left as usize, 2 * num, level + 1));
                stack.push((node.right as usize, 2 * num + 1, level + 1));
            }
            rk.trees.push(tree);
            rk.leaves.push(leaves);
        }
        Some(rk)
    }

    pub(super) fn n_trees(&self) -> usize {
        self.trees.len()
    }
}

/// A tree's split slots over one byte vector of rows: node `n`'s "goes left" mask.
struct Walk<'a> {
    /// The run of the block's bytes of one vector of rows.
    view: &'a [i8; VIEW],
    tree: &'a RankTree,
}

type V = [i8; W];

impl Walk<'_> {
    #[inline(always)]
    fn left(&self, n: usize) -> V {
        let (Some(&col), Some(bound)) = (self.tree.cols.get(n - 1), self.tree.bounds.get(n - 1))
        else {
            return [-1; W];
        };
        let col = usize::from(col);
        let Some(c) = self.view.get(col..col + W) else {
            return [-1; W];
        };
        let mut m = [0i8; W];
        for (m, c) in m.chunks_exact_mut(32).zip(c.chunks_exact(32)) {
            for ((m, &c), &b) in m.iter_mut().zip(c).zip(bound) {
                *m = if c < b { -1 } else { 0 };
            }
        }
        m
    }
}

/// `l ? a : b` per byte (`l` all ones or zero): one byte blend.
#[inline(always)]
fn pick(l: V, a: V, b: V) -> V {
    let mut o = [0i8; W];
    for (((o, &l), &a), &b) in o.iter_mut().zip(&l).zip(&a).zip(&b) {
        *o = (a & l) | (b & !l);
    }
    o
}

/// The leaf number (of the complete tree, left to right) under node `n`, whose subtree of
/// height 1 holds leaves `k` and `k + 1`.
#[inline(always)]
fn h1(w: &Walk<'_>, n: usize, k: i8) -> V {
    pick(w.left(n), [k; W], [k + 1; W])
}
#[inline(always)]
fn h2(w: &Walk<'_>, n: usize, k: i8) -> V {
    pick(w.left(n), h1(w, 2 * n, k), h1(w, 2 * n + 1, k + 2))
}
#[inline(always)]
fn h3(w: &Walk<'_>, n: usize, k: i8) -> V {
    pick(w.left(n), h2(w, 2 * n, k), h2(w, 2 * n + 1, k + 4))
}
#[inline(always)]
fn h4(w: &Walk<'_>, n: usize, k: i8) -> V {
    pick(w.left(n), h3(w, 2 * n, k), h3(w, 2 * n + 1, k + 8))
}
#[inline(always)]
fn h5(w: &Walk<'_>, n: usize, k: i8) -> V {
    pick(w.left(n), h4(w, 2 * n, k), h4(w, 2 * n + 1, k + 16))
}
#[inline(always)]
fn h6(w: &Walk<'_>, n: usize, k: i8) -> V {
    pick(w.left(n), h5(w, 2 * n, k), h5(w, 2 * n + 1, k + 32))
}

/// Scratch of one rayon task.
pub(super) struct RankScratch {
    /// One transposed group of rows: `d` columns of [`RW`] floats.
    floats: Vec<f32>,
    /// The block's bytes: column `c`'s vector `q` at `q · RUN + c · W`.
    bytes: Box<[i8; BYTES]>,
    /// Per tree, the block's leaf indices.
    leaf: Vec<[u8; RANK_BLOCK]>,
}

impl RankScratch {
    pub(super) fn new(d: usize, trees: usize) -> RankScratch {
        RankScratch {
            floats: vec![f32::NAN; d * RW],
            bytes: vec![0i8; BYTES]
                .into_boxed_slice()
                .try_into()
                .unwrap_or_else(|_| Box::new([0; BYTES])),
            leaf: vec![[0; RANK_BLOCK]; trees],
        }
    }
}

impl CompiledForest {
    /// Adds every tree to one block of rows (at most [`RANK_BLOCK`]) in the rank form: the
    /// block's values are ranked into bytes, each tree gives every row its leaf index, then
    /// every row adds its leaves in tree order.
    pub(super) fn rank_block(
        &self,
        rk: &Ranks,
        rows: &[f32],
        s: &mut RankScratch,
        margins: &mut [f64],
    ) {
        let d = self.n_features.max(1);
        rank_bytes(rk, d, rows, margins.len().min(RANK_BLOCK), s);
        leaf_indices(rk, &s.bytes, &mut s.leaf);
        add_leaves(rk, &s.leaf, margins);
    }
}

/// Ranks the first `n` rows of `rows` (`d` values each) into `s.bytes`, [`RW`] rows at a
/// time: per feature, every threshold is compared with the transposed values and counted.
#[inline(never)]
fn rank_bytes(rk: &Ranks, d: usize, rows: &[f32], n: usize, s: &mut RankScratch) {
    for g in 0..RANK_BLOCK / RW {
        let r0 = g * RW;
        let k = n.saturating_sub(r0).min(RW);
        let part = rows.get(r0 * d..(r0 + k) * d).unwrap_or(&[]);
        transpose(part, d, k, &mut s.floats);
        // This group's lanes within its run's vectors.
        let at0 = (r0 / W) * RUN + r0 % W;
        for f in 0..d {
            let Some(x) = s.floats.get(f * RW..(f + 1) * RW) else {
                continue;
            };
            let Ok(x) = <&[f32; RW]>::try_from(x) else {
                continue;
            };
            let lo = rk.starts.get(f).copied().unwrap_or(0);
            let hi = rk.starts.get(f + 1).copied().unwrap_or(lo);
            let ts = rk.cuts.get(lo..hi).unwrap_or(&[]);
            // Present values count from 1.
            let cnt = count32(x, ts);
            // Above every bound (`K + 1` at most; `ts` is the `K` thresholds and the +∞).
            let high = ts.len() as i32 + 1;
            let mut low_b = [0i8; RW];
            let mut high_b = [0i8; RW];
            for (((l, h), &c), &v) in low_b.iter_mut().zip(&mut high_b).zip(&cnt).zip(x) {
                let nan = v.is_nan();
                *l = ((if nan { 0 } else { c }) as u8 ^ 0x80) as i8;
                *h = ((if nan { high } else { c }) as u8 ^ 0x80) as i8;
            }
            let at = at0 + f * W;
            if let Some(dst) = s.bytes.get_mut(at..at + RW) {
                dst.copy_from_slice(&low_b);
            }
            let at = at0 + (d + f) * W;
            if let Some(dst) = s.bytes.get_mut(at..at + RW) {
                dst.copy_from_slice(&high_b);
            }
        }
    }
}

/// Transposes the first `k` rows of `rows` (`d` values each) into `floats`: `d` columns of
/// [`RW`] lanes, lanes past `k` `NaN`. Row by row (sequential reads of the input), into the
/// columns as slices (no per-element address checks, which made the compiler's vectorised
/// form a chain of masked moves).
fn transpose(rows: &[f32], d: usize, k: usize, floats: &mut [f32]) {
    if k < RW {
        floats.fill(f32::NAN);
    }
    for (r, row) in rows.chunks_exact(d).take(k.min(RW)).enumerate() {
        for (&v, col) in row.iter().zip(floats.chunks_exact_mut(RW)) {
            if let Some(c) = col.get_mut(r) {
                *c = v;
            }
        }
    }
}

/// `1 + #{t ∈ ts : v > t}` for each of [`RW`] lanes, `ts` ascending and ending in +∞:
/// counted threshold by threshold, stopping at the first +∞ (no value is above it). The
/// early exit keeps the compiler from vectorising over the thresholds (which needs a
/// horizontal sum per value): the counts stay in four registers over the lanes. (64 lanes
/// in eight registers, the floats compared from memory, ran 25 % slower.)
#[inline(always)]
fn count32(x: &[f32; RW], ts: &[f32]) -> [i32; RW] {
    let mut c = [1i32; RW];
    for &t in ts {
        if t == f32::INFINITY {
            break;
        }
        for (c, &v) in c.iter_mut().zip(x) {
            *c += i32::from(v > t);
        }
    }
    c
}

/// Every tree's leaf index for every row of the block, bottom-up over the complete tree.
#[inline(never)]
fn leaf_indices(rk: &Ranks, bytes: &[i8; BYTES], leaf: &mut [[u8; RANK_BLOCK]]) {
    let mut views = [None; CHUNKS];
    for (q, v) in views.iter_mut().enumerate() {
        *v = bytes
            .get(q * RUN..q * RUN + VIEW)
            .and_then(|b| <&[i8; VIEW]>::try_from(b).ok());
    }
    for (tree, out) in rk.trees.iter().zip(leaf.iter_mut()) {
        for (view, out) in views.iter().zip(out.chunks_exact_mut(W)) {
            let Some(view) = *view else {
                continue;
            };
            let w = Walk { view, tree };
            let idx = match rk.depth {
                1 => h1(&w, 1, 0),
                2 => h2(&w, 1, 0),
                3 => h3(&w, 1, 0),
                4 => h4(&w, 1, 0),
                5 => h5(&w, 1, 0),
                _ => h6(&w, 1, 0),
            };
            for (o, &i) in out.iter_mut().zip(&idx) {
                *o = i as u8;
            }
        }
    }
}

/// Rows whose margins are summed together (independent chains of additions).
const LEAF_ROWS: usize = 16;

/// Adds every tree's leaf to the block's margins, in tree order, rows [`LEAF_ROWS`] at a
/// time (independent chains of additions).
#[inline(never)]
fn add_leaves(rk: &Ranks, leaf: &[[u8; RANK_BLOCK]], margins: &mut [f64]) {
    for (g, mg) in margins.chunks_mut(LEAF_ROWS).enumerate() {
        let r0 = g * LEAF_ROWS;
        let mut s = [0.0f64; LEAF_ROWS];
        for (s, &m) in s.iter_mut().zip(mg.iter()) {
            *s = m;
        }
        for (leaves, idx) in rk.leaves.iter().zip(leaf) {
            let Some(idx) = idx.get(r0..r0 + LEAF_ROWS) else {
                continue;
            };
            for (s, &i) in s.iter_mut().zip(idx) {
                *s += leaves[usize::from(i)];
            }
        }
        for (m, &s) in mg.iter_mut().zip(&s) {
            *m = s;
        }
    }
}
