//! Level histograms (participant half of a level) and split finding (server half): the
//! gradient and hessian sums per node, feature and bin, and the best split of each node.

use ndarray::ArrayView2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::partition::{column, NodeRows};
use super::{GbdtError, GbdtParams, MAX_DEPTH};
use crate::binning::{check_sum, invalid, BinningError, MAX_BINS};

/// Gradient/hessian histograms of the rows in `open_nodes`, from per-row `f64` values: the
/// plain reference of what a participant's level computes ([`gbdt_compute`](super::gbdt_compute)
/// runs the faster `node_histograms` on its cached partition and grid gradients).
/// `node_of_row[r]` is the node row `r` currently sits in (`u32::MAX` = in no open node).
/// Layout `[open_nodes index][feature][bin][grad, hess]`, length
/// `open_nodes.len() · features · n_bins · 2`. Rayon-parallel over features; each feature's
/// sums run in row order, so the result does not depend on the thread count.
pub fn level_histograms(
    binned: ArrayView2<u8>,
    grad: &[f64],
    hess: &[f64],
    node_of_row: &[u32],
    open_nodes: &[u32],
    n_bins: usize,
) -> Result<Vec<f64>, GbdtError> {
    let (n, f) = binned.dim();
    for (what, len) in [
        ("gradients", grad.len()),
        ("hessians", hess.len()),
        ("node of row", node_of_row.len()),
    ] {
        if len != n {
            return Err(BinningError::ShapeMismatch {
                what,
                expected: n,
                got: len,
            }
            .into());
        }
    }
    if n_bins == 0 || n_bins > MAX_BINS + 1 {
        return Err(invalid("n_bins", n_bins as f64, "must be in 1..=256"));
    }
    // node id → slot in open_nodes
    let max_node = open_nodes.iter().copied().max().unwrap_or(0) as usize;
    if max_node >= 1 << (MAX_DEPTH + 1) {
        return Err(GbdtError::BadInstruction(format!(
            "open node id {max_node} is out of range"
        )));
    }
    let mut slot_of = vec![u32::MAX; max_node + 1];
    for (s, &nd) in open_nodes.iter().enumerate() {
        if slot_of[nd as usize] != u32::MAX {
            return Err(GbdtError::BadInstruction(format!(
                "open node {nd} listed twice"
            )));
        }
        slot_of[nd as usize] = s as u32;
    }
    let row_slot: Vec<u32> = node_of_row
        .iter()
        .map(|&nd| slot_of.get(nd as usize).copied().unwrap_or(u32::MAX))
        .collect();
    let per_node = n_bins * 2;
    let per_feature: Vec<Result<Vec<f64>, GbdtError>> = (0..f)
        .into_par_iter()
        .map(|j| {
            let mut buf = vec![0.0; open_nodes.len() * per_node];
            for ((&b, &s), (&g, &h)) in binned
                .column(j)
                .iter()
                .zip(&row_slot)
                .zip(grad.iter().zip(hess))
            {
                if s == u32::MAX {
                    continue;
                }
                let b = usize::from(b);
                if b >= n_bins {
                    return Err(GbdtError::BinOutOfRange {
                        feature: j,
                        bin: b,
                        n_bins,
                    });
                }
                let o = s as usize * per_node + 2 * b;
                buf[o] += g;
                buf[o + 1] += h;
            }
            Ok(buf)
        })
        .collect();
    let mut out = vec![0.0; open_nodes.len() * f * per_node];
    for (j, buf) in per_feature.into_iter().enumerate() {
        let buf = buf?;
        for s in 0..open_nodes.len() {
            let dst = (s * f + j) * per_node;
            out[dst..dst + per_node].copy_from_slice(&buf[s * per_node..(s + 1) * per_node]);
        }
    }
    Ok(out)
}

/// One row's (gradient, hessian) in units of [`GRADIENT_RESOLUTION`](super::GRADIENT_RESOLUTION):
/// |gradient| ≤ 2^30, 0 ≤ hessian ≤ 2^28. Eight bytes a row, summed in `i64`, so every
/// histogram sum is exact whatever the order of the additions (and so whatever the threads).
pub(super) type GradPair = [i32; 2];

/// The participant's level histograms: for each of `nodes` (its rows), per feature and bin of
/// the column-major `binned` matrix, the sums of `gh`, in the layout of [`level_histograms`]
/// (`[node][feature][bin][grad, hess]`). Rayon-parallel over features; a node's gradients are
/// gathered once into row order of the node (LightGBM's "ordered gradients"), then every
/// feature reads its column at the node's rows. The sums are integers, converted to `f64` at
/// the end (exactly, below 2^23 rows per node).
pub(super) fn node_histograms(
    binned: ArrayView2<u8>,
    gh: &[GradPair],
    nodes: &[NodeRows<'_>],
    n_bins: usize,
) -> Result<Vec<f64>, GbdtError> {
    let (n, f) = binned.dim();
    if gh.len() != n {
        return Err(BinningError::ShapeMismatch {
            what: "gradients",
            expected: n,
            got: gh.len(),
        }
        .into());
    }
    if n_bins == 0 || n_bins > MAX_BINS + 1 {
        return Err(invalid("n_bins", n_bins as f64, "must be in 1..=256"));
    }
    let ordered: Vec<Vec<GradPair>> = nodes
        .par_iter()
        .map(|nr| match nr {
            NodeRows::All => Vec::new(),
            // In parallel within the node too (a level's first nodes hold most rows).
            NodeRows::Rows(rows) => rows
                .par_iter()
                .with_min_len(1 << 14)
                .map(|&r| gh.get(r as usize).copied().unwrap_or([0, 0]))
                .collect(),
        })
        .collect();
    let per_node = n_bins * 2;
    let scale = super::GRADIENT_RESOLUTION;
    // Features in groups, rows in blocks: a block's gradients are read from L1 by every
    // feature of the group instead of from memory by each feature.
    let groups: Vec<Result<Vec<f64>, GbdtError>> = (0..f)
        .collect::<Vec<_>>()
        .par_chunks(FEATURE_GROUP)
        .map(|group| {
            let cols = group
                .iter()
                .map(|&j| column(binned, j))
                .collect::<Result<Vec<_>, _>>()?;
            let mut buf = vec![0.0; nodes.len() * group.len() * per_node];
            let mut acc = vec![[[0i64; 2]; 256]; group.len()];
            for (s, (nr, ord)) in nodes.iter().zip(&ordered).enumerate() {
                acc.iter_mut().for_each(|a| *a = [[0; 2]; 256]);
                match nr {
                    NodeRows::All => {
                        for (k, g) in gh.chunks(ROW_BLOCK).enumerate() {
                            let lo = k * ROW_BLOCK;
                            for (a, col) in acc.iter_mut().zip(&cols) {
                                let bins = col.get(lo..lo + g.len()).unwrap_or(&[]);
                                for (&b, g) in bins.iter().zip(g) {
                                    let a = &mut a[usize::from(b)];
                                    a[0] += i64::from(g[0]);
                                    a[1] += i64::from(g[1]);
                                }
                            }
                        }
                    }
                    NodeRows::Rows(rows) => {
                        for (rows, g) in rows.chunks(ROW_BLOCK).zip(ord.chunks(ROW_BLOCK)) {
                            for (a, col) in acc.iter_mut().zip(&cols) {
                                for (&r, g) in rows.iter().zip(g) {
                                    let b = col.get(r as usize).copied().unwrap_or(u8::MAX);
                                    let a = &mut a[usize::from(b)];
                                    a[0] += i64::from(g[0]);
                                    a[1] += i64::from(g[1]);
                                }
                            }
                        }
                    }
                }
                for (jj, a) in acc.iter().enumerate() {
                    if let Some(b) = (n_bins..256).find(|&b| a[b] != [0, 0]) {
                        return Err(GbdtError::BinOutOfRange {
                            feature: group[jj],
                            bin: b,
                            n_bins,
                        });
                    }
                    let o = (s * group.len() + jj) * per_node;
                    for (o, a) in buf[o..o + per_node].chunks_exact_mut(2).zip(a) {
                        o[0] = a[0] as f64 * scale;
                        o[1] = a[1] as f64 * scale;
                    }
                }
            }
            Ok(buf)
        })
        .collect();
    let mut out = vec![0.0; nodes.len() * f * per_node];
    for (gi, buf) in groups.into_iter().enumerate() {
        let buf = buf?;
        let j0 = gi * FEATURE_GROUP;
        let width = buf.len() / nodes.len().max(1);
        for s in 0..nodes.len() {
            let dst = (s * f + j0) * per_node;
            out[dst..dst + width].copy_from_slice(&buf[s * width..(s + 1) * width]);
        }
    }
    Ok(out)
}

/// Features per histogram task, rows per block of [`node_histograms`].
const FEATURE_GROUP: usize = 5;
const ROW_BLOCK: usize = 2048;

/// The (gradient, hessian) sums of one node's rows, exact.
pub(super) fn node_sums(gh: &[GradPair], rows: NodeRows<'_>) -> (f64, f64) {
    let add = |(g, h): (i64, i64), p: &GradPair| (g + i64::from(p[0]), h + i64::from(p[1]));
    let (g, h) = match rows {
        NodeRows::All => gh.iter().fold((0, 0), add),
        NodeRows::Rows(rows) => rows
            .iter()
            .filter_map(|&r| gh.get(r as usize))
            .fold((0, 0), add),
    };
    let scale = super::GRADIENT_RESOLUTION;
    (g as f64 * scale, h as f64 * scale)
}

/// The best split of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub feature: u32,
    /// Rows with value bin ≤ `bin` go left.
    pub bin: u8,
    /// Where missing values go (learned: the side that gains more).
    pub default_left: bool,
    pub gain: f64,
    pub left_grad: f64,
    pub left_hess: f64,
    pub right_grad: f64,
    pub right_hess: f64,
}

/// Server half of one level: for each open node (slot of `sum`, laid out as in
/// [`level_histograms`], last bin = missing), the split maximising
/// `½[G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)] − γ` over features, thresholds and the two
/// directions for missing values, subject to `H_L, H_R ≥ min_child_weight` (and > 0); `None`
/// when no split has positive gain. Ties keep the first candidate (lowest feature, lowest bin,
/// missing-right before missing-left). Without missing values in a node the default direction
/// is the child with the larger hessian.
pub fn best_splits(
    sum: &[f64],
    open_nodes: &[u32],
    n_features: usize,
    n_bins: usize,
    params: &GbdtParams,
) -> Result<Vec<Option<Split>>, GbdtError> {
    if !(2..=MAX_BINS + 1).contains(&n_bins) {
        return Err(invalid("n_bins", n_bins as f64, "must be in 2..=256"));
    }
    let per_node = n_features * n_bins * 2;
    let expected = open_nodes.len() * per_node;
    check_sum(sum, "level", expected, "level histograms")?;
    // Nodes in parallel (each node's search is on its own, so the result does not depend on
    // the threads): at the deepest levels of a 1M-row tree this was 5 – 10 % of the tree,
    // on one core.
    Ok((0..open_nodes.len())
        .into_par_iter()
        .map(|s| {
            let mut best: Option<Split> = None;
            for j in 0..n_features {
                let o = (s * n_features + j) * n_bins * 2;
                let h = &sum[o..o + n_bins * 2];
                if let Some(c) = best_split_feature(h, j as u32, n_bins, params) {
                    if best.as_ref().is_none_or(|b| c.gain > b.gain) {
                        best = Some(c);
                    }
                }
            }
            best
        })
        .collect())
}

fn best_split_feature(h: &[f64], feature: u32, n_bins: usize, p: &GbdtParams) -> Option<Split> {
    let miss = n_bins - 1;
    let (gm, hm) = (h[2 * miss], h[2 * miss + 1]);
    // Suffix sums over value bins: the right side of threshold b is bins b+1..miss, summed
    // directly (not as total − left) so an empty side is exactly 0.
    let mut suf_g = [0.0f64; MAX_BINS + 2];
    let mut suf_h = [0.0f64; MAX_BINS + 2];
    for b in (0..miss).rev() {
        suf_g[b] = suf_g[b + 1] + h[2 * b];
        suf_h[b] = suf_h[b + 1] + h[2 * b + 1];
    }
    let (g, hh) = (suf_g[0] + gm, suf_h[0] + hm);
    if hh <= 0.0 {
        return None;
    }
    let lambda = p.lambda;
    let score = |g: f64, h: f64| g * g / (h + lambda);
    let parent = score(g, hh);
    let has_missing = hm != 0.0 || gm != 0.0;
    let ok = |hl: f64, hr: f64| {
        hl > 0.0 && hr > 0.0 && hl >= p.min_child_weight && hr >= p.min_child_weight
    };
    let mut best: Option<Split> = None;
    let (mut gl, mut hl) = (0.0, 0.0);
    for b in 0..miss {
        gl += h[2 * b];
        hl += h[2 * b + 1];
        let (gr, hr) = (suf_g[b + 1], suf_h[b + 1]);
        let mut consider = |gl: f64, hl: f64, gr: f64, hr: f64, default_left: bool| {
            if !ok(hl, hr) {
                return;
            }
            let gain = 0.5 * (score(gl, hl) + score(gr, hr) - parent) - p.gamma;
            if gain > 0.0 && best.as_ref().is_none_or(|s| gain > s.gain) {
                best = Some(Split {
                    feature,
                    bin: b as u8,
                    default_left,
                    gain,
                    left_grad: gl,
                    left_hess: hl,
                    right_grad: gr,
                    right_hess: hr,
                });
            }
        };
        if has_missing {
            consider(gl, hl, gr + gm, hr + hm, false);
            consider(gl + gm, hl + hm, gr, hr, true);
        } else {
            consider(gl, hl, gr, hr, hl >= hr);
        }
    }
    best
}

pub(super) fn leaf_weight(g: f64, h: f64, p: &GbdtParams) -> f64 {
    let v = -g / (h + p.lambda) * p.learning_rate;
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gbdt::tests::params;

    #[test]
    fn best_split_hand_example() {
        // one node, one feature, 3 value bins + missing; λ = 1, γ = 0.
        // bins: (g, h) = (−4, 2), (−2, 2), (4, 2); missing (3, 1); G = 1, H = 7.
        // threshold 1, missing right: L = (−6, 4), R = (7, 3):
        //   ½(36/5 + 49/4 − 1/8) = 9.6625 — the best of the six candidates.
        let h = [-4.0, 2.0, -2.0, 2.0, 4.0, 2.0, 3.0, 1.0];
        let mut p = params(1, 1);
        p.min_child_weight = 0.0;
        let s = best_splits(&h, &[0], 1, 4, &p).unwrap()[0].clone().unwrap();
        assert_eq!((s.feature, s.bin, s.default_left), (0, 1, false));
        assert!((s.gain - 9.6625).abs() < 1e-12);
        assert_eq!(
            (s.left_grad, s.left_hess, s.right_grad, s.right_hess),
            (-6.0, 4.0, 7.0, 3.0)
        );
        // missing rows with negative gradient: learned default goes left.
        // bins (−4, 2), (4, 2), (0, 0); missing (−3, 1): threshold 0, missing left:
        // ½(49/4 + 16/3 − 9/6) = 8.0417 > missing right ½(16/3 + 1/4 − 1.5) = 2.04.
        let h2 = [-4.0, 2.0, 4.0, 2.0, 0.0, 0.0, -3.0, 1.0];
        let s2 = best_splits(&h2, &[0], 1, 4, &p).unwrap()[0]
            .clone()
            .unwrap();
        assert_eq!((s2.bin, s2.default_left), (0, true));
        assert!((s2.gain - 0.5 * (49.0 / 4.0 + 16.0 / 3.0 - 1.5)).abs() < 1e-12);
        // min_child_weight 3.5: every candidate has a child below it
        p.min_child_weight = 3.5;
        assert_eq!(best_splits(&h, &[0], 1, 4, &p).unwrap()[0], None);
        // γ above the best gain: no split
        p.min_child_weight = 0.0;
        p.gamma = 10.0;
        assert_eq!(best_splits(&h, &[0], 1, 4, &p).unwrap()[0], None);
    }

    #[test]
    fn level_histograms_layout() {
        // 4 rows, 2 features, 3 bins; rows 0,1 in node 5, row 2 in node 3, row 3 closed
        let binned = ndarray::array![[0u8, 2], [1, 2], [1, 0], [2, 1]];
        let g = [1.0, 2.0, 3.0, 4.0];
        let h = [0.1, 0.2, 0.3, 0.4];
        let nodes = [5, 5, 3, u32::MAX];
        let out = level_histograms(binned.view(), &g, &h, &nodes, &[3, 5], 3).unwrap();
        assert_eq!(out.len(), 2 * 2 * 3 * 2);
        let at = |slot: usize, f: usize, b: usize| {
            let o = ((slot * 2 + f) * 3 + b) * 2;
            (out[o], out[o + 1])
        };
        assert_eq!(at(0, 0, 1), (3.0, 0.3)); // node 3, feature 0, bin 1: row 2
        assert_eq!(at(0, 1, 0), (3.0, 0.3));
        assert_eq!(at(1, 0, 0), (1.0, 0.1)); // node 5: rows 0, 1
        assert_eq!(at(1, 0, 1), (2.0, 0.2));
        assert_eq!(at(1, 1, 2), (3.0, 0.30000000000000004));
        assert_eq!(
            out.iter().sum::<f64>(),
            (1.0 + 2.0 + 3.0 + 0.1 + 0.2 + 0.3) * 2.0
        );
        // bad inputs
        assert!(matches!(
            level_histograms(binned.view(), &g[..3], &h, &nodes, &[3, 5], 3),
            Err(GbdtError::Binning(BinningError::ShapeMismatch {
                what: "gradients",
                ..
            }))
        ));
        assert!(matches!(
            level_histograms(binned.view(), &g, &h, &nodes, &[3, 5], 2),
            Err(GbdtError::BinOutOfRange { .. })
        ));
        assert!(matches!(
            level_histograms(binned.view(), &g, &h, &nodes, &[3, 3], 3),
            Err(GbdtError::BadInstruction(_))
        ));
    }
}
