//! Rows by node for the tree being grown: one index list in which every node's rows are a
//! contiguous range, split in place when its node is split (the idea of LightGBM's
//! `DataPartition`), so a level reads only the rows of the nodes it asks for instead of
//! routing every row from the root again.

use ndarray::{ArrayView2, Axis};
use rayon::prelude::*;

use super::{GbdtError, Node, Tree};

/// The rows of one node for a histogram pass.
#[derive(Clone, Copy, Debug)]
pub(super) enum NodeRows<'a> {
    /// Every row, in order (the root before any split): read the columns straight through.
    All,
    /// These rows (increasing).
    Rows(&'a [u32]),
}

/// The partition of a set of rows by the nodes of a tree. It follows a tree as it grows: a
/// tree that extends the one it was made for (the same splits where that one had splits) is
/// reached by splitting the ranges of the newly split nodes only.
#[derive(Clone, Debug)]
pub(super) struct Partition {
    /// The tree the ranges are for (empty: the root only, nothing split yet).
    nodes: Vec<Node>,
    indices: Vec<u32>,
    /// `(start, end)` of each node's rows in `indices`; `None`: no row reaches the node.
    ranges: Vec<Option<Range>>,
    /// `indices` is `0..n` in order and the root holds them all.
    pristine: bool,
}

impl Partition {
    /// Every one of `n` rows in the root.
    pub(super) fn all(n: usize) -> Self {
        Partition {
            nodes: Vec::new(),
            // row ids fit u32: GbdtCache refuses more rows
            indices: (0..n as u32).collect(),
            ranges: vec![Some((0, n))],
            pristine: true,
        }
    }

    /// The given rows (increasing) in the root.
    pub(super) fn of_rows(rows: Vec<u32>) -> Self {
        let n = rows.len();
        Partition {
            nodes: Vec::new(),
            indices: rows,
            ranges: vec![Some((0, n))],
            pristine: false,
        }
    }

    /// Whether `tree` extends the tree this partition is for.
    pub(super) fn follows(&self, tree: &Tree) -> bool {
        tree.nodes.len() >= self.nodes.len()
            && self
                .nodes
                .iter()
                .zip(&tree.nodes)
                .all(|(old, new)| !matches!(old, Node::Split { .. }) || old == new)
    }

    /// Splits the rows of every node that is a split in `tree` and was not one in the tree
    /// this partition is for (call only when [`follows`](Partition::follows)). `binned` is
    /// column-major; `missing` is the missing bin. A row goes where [`Tree::route`] sends it.
    /// The nodes split at once have disjoint ranges and are split in parallel, in waves (a
    /// node whose parent is split in this call waits for the next wave).
    pub(super) fn advance(
        &mut self,
        tree: &Tree,
        binned: ArrayView2<u8>,
        missing: u8,
    ) -> Result<(), GbdtError> {
        self.ranges.resize(tree.nodes.len(), None);
        let mut todo: Vec<Cut> = Vec::new();
        for (i, node) in tree.nodes.iter().enumerate() {
            if matches!(self.nodes.get(i), Some(Node::Split { .. })) {
                continue;
            }
            if let Node::Split {
                feature,
                bin,
                default_left,
                left,
                right,
                ..
            } = *node
            {
                todo.push(Cut {
                    node: i,
                    feature: feature as usize,
                    bin,
                    default_left,
                    left: left as usize,
                    right: right as usize,
                });
            }
        }
        // Each child has one parent, and holds no rows yet.
        let mut pending = vec![false; tree.nodes.len()];
        for c in &todo {
            for child in [c.left, c.right] {
                let taken = pending.get_mut(child).map(|p| std::mem::replace(p, true));
                let holds = self.ranges.get(child).is_none_or(|r| r.is_some());
                if c.left == c.right || taken != Some(false) || holds {
                    return Err(GbdtError::BadInstruction(format!(
                        "node {}'s child {child} has another parent",
                        c.node
                    )));
                }
            }
        }
        while !todo.is_empty() {
            // This wave: the splits whose node's rows are known (its parent is split).
            let (wave, rest): (Vec<Cut>, Vec<Cut>) = todo
                .into_iter()
                .partition(|c| !pending.get(c.node).copied().unwrap_or(false));
            if wave.is_empty() {
                return Err(GbdtError::BadInstruction("tree splits form a cycle".into()));
            }
            todo = rest;
            for c in &wave {
                for child in [c.left, c.right] {
                    if let Some(p) = pending.get_mut(child) {
                        *p = false;
                    }
                }
            }
            // Disjoint ranges in increasing order, cut out of the index list.
            let mut jobs: Vec<(Range, Cut)> = wave
                .into_iter()
                .filter_map(|c| self.ranges.get(c.node).copied().flatten().map(|r| (r, c)))
                .collect();
            jobs.sort_by_key(|(r, _)| r.0);
            let mut segments: Vec<(&mut [u32], &Cut)> = Vec::with_capacity(jobs.len());
            let mut rest_slice: &mut [u32] = &mut self.indices;
            let mut offset = 0;
            for ((s, e), c) in &jobs {
                let (s, e) = (*s, *e);
                if s < offset || e < s || e - offset > rest_slice.len() {
                    return Err(GbdtError::BadInstruction("row partition".into()));
                }
                let (_, tail) = std::mem::take(&mut rest_slice).split_at_mut(s - offset);
                let (seg, tail) = tail.split_at_mut(e - s);
                rest_slice = tail;
                offset = e;
                segments.push((seg, c));
            }
            let lefts: Vec<Result<usize, GbdtError>> = segments
                .into_par_iter()
                .map(|(seg, c)| {
                    let col = column(binned, c.feature)?;
                    Ok(split_rows(seg, col, c.bin, c.default_left, missing))
                })
                .collect();
            for (((s, e), c), w) in jobs.into_iter().zip(lefts) {
                let w = w?;
                if let Some(l) = self.ranges.get_mut(c.left) {
                    *l = Some((s, s + w));
                }
                if let Some(r) = self.ranges.get_mut(c.right) {
                    *r = Some((s + w, e));
                }
                self.pristine = false;
            }
        }
        self.nodes.clone_from(&tree.nodes);
        Ok(())
    }

    /// Adds each leaf's value of `tree` (the tree this partition is now for) to the margins
    /// of its rows.
    pub(super) fn add_leaf_values(
        &self,
        tree: &Tree,
        margins: &mut [f64],
    ) -> Result<(), GbdtError> {
        for (i, node) in tree.nodes.iter().enumerate() {
            if let Node::Leaf { value } = *node {
                let rows: &[u32] = match self.rows(i) {
                    NodeRows::All => &self.indices,
                    NodeRows::Rows(r) => r,
                };
                for &r in rows {
                    let m = margins
                        .get_mut(r as usize)
                        .ok_or_else(|| GbdtError::BadInstruction("row partition".into()))?;
                    *m += value;
                }
            }
        }
        Ok(())
    }

    /// The rows of node `node` (none when no row reaches it or it is not in the tree).
    pub(super) fn rows(&self, node: usize) -> NodeRows<'_> {
        match self.ranges.get(node).copied().flatten() {
            Some(_) if node == 0 && self.pristine => NodeRows::All,
            Some((s, e)) => NodeRows::Rows(self.indices.get(s..e).unwrap_or(&[])),
            None => NodeRows::Rows(&[]),
        }
    }
}

/// A node's rows in the index list, `(start, end)`.
type Range = (usize, usize);

/// One split to apply to the rows of `node`.
#[derive(Clone, Copy, Debug)]
struct Cut {
    node: usize,
    feature: usize,
    bin: u8,
    default_left: bool,
    left: usize,
    right: usize,
}

/// Stable in-place partition of `seg` (row ids) into the rows that go left of a split of
/// column `col` at `bin` (missing: `default_left`) and those that go right; returns how many
/// go left. Without a branch on the direction (a split sends about half the rows each way,
/// so a branch would be mispredicted for about half of them): every row is written to both
/// sides and the side it goes to advances.
fn split_rows(seg: &mut [u32], col: &[u8], bin: u8, default_left: bool, missing: u8) -> usize {
    let mut right = vec![0u32; seg.len()];
    let (mut w, mut r) = (0usize, 0usize);
    for k in 0..seg.len() {
        let Some(&row) = seg.get(k) else { break };
        let b = col.get(row as usize).copied().unwrap_or(missing);
        let go_left = (b == missing) & default_left | (b != missing) & (b <= bin);
        // `w ≤ k`: the slot was read already; a right row's write there is overwritten by the
        // next left row or by the right rows copied in below.
        if let Some(slot) = seg.get_mut(w) {
            *slot = row;
        }
        if let Some(slot) = right.get_mut(r) {
            *slot = row;
        }
        w += usize::from(go_left);
        r += usize::from(!go_left);
    }
    if let (Some(dst), Some(src)) = (seg.get_mut(w..), right.get(..r)) {
        if dst.len() == src.len() {
            dst.copy_from_slice(src);
        }
    }
    w
}

/// Column `j` of a column-major binned matrix as a slice.
pub(super) fn column(binned: ArrayView2<'_, u8>, j: usize) -> Result<&[u8], GbdtError> {
    if j >= binned.ncols() {
        return Err(GbdtError::BadInstruction(format!(
            "feature {j} is not among the {} binned columns",
            binned.ncols()
        )));
    }
    binned
        .index_axis_move(Axis(1), j)
        .to_slice()
        .ok_or_else(|| GbdtError::BadInstruction("binned matrix is not column-major".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gbdt::histogram::{node_histograms, GradPair};
    use crate::gbdt::{level_histograms, GRADIENT_RESOLUTION};
    use ndarray::{Array2, ShapeBuilder};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn split(feature: u32, bin: u8, default_left: bool, left: u32, right: u32) -> Node {
        Node::Split {
            feature,
            bin,
            threshold: 0.0,
            default_left,
            left,
            right,
            gain: 1.0,
        }
    }

    fn open() -> Node {
        Node::Open {
            sum_grad: 0.0,
            sum_hess: 0.0,
            depth: 0,
        }
    }

    /// A partition advanced level by level holds, for every node, exactly the rows
    /// `Tree::route` sends there, and its histograms are `level_histograms` of those rows.
    #[test]
    fn partition_and_histograms_agree_with_routing_every_row() {
        let (n, f, nb) = (3000, 3, 5); // 4 value bins + missing (bin 4)
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let data: Vec<u8> = (0..n * f).map(|_| rng.random_range(0..nb as u8)).collect();
        let binned = Array2::from_shape_vec((n, f).f(), data).unwrap();
        let gh: Vec<GradPair> = (0..n)
            .map(|_| {
                [
                    rng.random_range(-(1 << 30)..=1 << 30),
                    rng.random_range(0..=1 << 28),
                ]
            })
            .collect();
        let level1 = Tree {
            nodes: vec![split(0, 1, true, 1, 2), open(), open()],
        };
        let level2 = Tree {
            nodes: vec![
                split(0, 1, true, 1, 2),
                split(2, 2, false, 3, 4),
                Node::Leaf { value: 0.0 },
                open(),
                split(1, 0, true, 5, 6),
                open(),
                open(),
            ],
        };
        let mut p = Partition::all(n);
        assert!(matches!(p.rows(0), NodeRows::All));
        for tree in [&level1, &level2] {
            assert!(p.follows(tree));
            p.advance(tree, binned.view(), 4).unwrap();
            let route: Vec<usize> = (0..n).map(|r| tree.route(4, |j| binned[[r, j]])).collect();
            let open_nodes: Vec<u32> = (0..tree.nodes.len() as u32)
                .filter(|&i| matches!(tree.nodes[i as usize], Node::Open { .. }))
                .collect();
            for &nd in &open_nodes {
                let NodeRows::Rows(rows) = p.rows(nd as usize) else {
                    panic!("a split root");
                };
                let want: Vec<u32> = (0..n as u32)
                    .filter(|&r| route[r as usize] == nd as usize)
                    .collect();
                assert_eq!(rows, &want[..], "node {nd}");
            }
            let of: Vec<NodeRows<'_>> = open_nodes.iter().map(|&i| p.rows(i as usize)).collect();
            let fast = node_histograms(binned.view(), &gh, &of, nb).unwrap();
            let node_of_row: Vec<u32> = route.iter().map(|&i| i as u32).collect();
            let g: Vec<f64> = gh
                .iter()
                .map(|v| f64::from(v[0]) * GRADIENT_RESOLUTION)
                .collect();
            let h: Vec<f64> = gh
                .iter()
                .map(|v| f64::from(v[1]) * GRADIENT_RESOLUTION)
                .collect();
            let slow =
                level_histograms(binned.view(), &g, &h, &node_of_row, &open_nodes, nb).unwrap();
            assert_eq!(fast, slow);
        }
        // A tree that does not extend this one (a new tree) is not followed; a child with two
        // parents is refused.
        assert!(!p.follows(&level1));
        let mut q = Partition::all(n);
        let twice = Tree {
            nodes: vec![
                split(0, 1, true, 1, 2),
                split(1, 1, true, 2, 3),
                open(),
                open(),
            ],
        };
        assert!(matches!(
            q.advance(&twice, binned.view(), 4),
            Err(GbdtError::BadInstruction(_))
        ));
    }
}
