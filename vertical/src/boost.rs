//! SecureBoost (Cheng et al. 2019): vertical gradient-boosted trees, lossless.
//!
//! The active party (labels, its own columns, the Paillier key) runs `fedsilo_ml`'s own
//! [`GbdtServer`] — the same split finding, leaf budget, smaller-child requests and
//! histogram subtraction as pooled boosting — on level histograms it assembles from its own
//! columns (in the clear) and the passive parties' columns (decrypted sums only). Per-row
//! gradients and hessians are `fedsilo_ml`'s integer grid units ([`gradient_units`]), and
//! Paillier sums of integers are exact, so the histograms are bit for bit those of
//! [`fedsilo_ml::gbdt::fit_pooled`] on the joined table, and so are the trees.
//!
//! Per tree:
//! 1. `A → k` [`BoostToPassive::Gradients`]: `Enc_A(g_i + h_i·2^w)` per row (`g`, `h` packed
//!    in one plaintext as signed digits of `w` bits).
//! 2. Per level, `A → k` [`BoostToPassive::Histograms`]: the rows of each node the server
//!    requests (the lighter child of each split; the sibling is derived by subtraction).
//!    `k` sums the row ciphertexts into `Enc(Σg + Σh·2^w)` per (node, own feature, bin),
//!    packs `K` consecutive bins into one ciphertext (`Π c_b^{2^{2w·b}}`), re-randomises
//!    each with a fresh `Enc(0)` and returns them, [`BoostToActive::Histograms`].
//! 3. `A` decrypts, decodes, places them after its own columns and lets the server absorb
//!    the level. A split on a passive column goes back to its owner,
//!    [`BoostToPassive::Split`] (node, feature, bin, default direction, the node's rows);
//!    the owner records (feature, bin, threshold) in its own table ([`PassiveTrees`]) and
//!    answers which rows go left, [`BoostToActive::Routing`].
//!
//! The active party's model ([`VerticalGbdtModel`]) records for a passive split only its
//! owner; threshold and feature stay at the owner. Sans-IO as [`crate::lr`].

use std::collections::BTreeMap;

use fedsilo_ml::binning::{fine_histogram, local_stats, BinMapper, FeatureStats};
use fedsilo_ml::gbdt::{
    gradient_units, level_histograms, GbdtInstruction, GbdtParams, GbdtServer, Node, Tree,
    GRADIENT_RESOLUTION,
};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use num_bigint::BigInt as Integer;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{expect_len, expect_round, PeerError, VerticalError};
use crate::he::{decode_digits, Ciphertext, PublicKey, SecretKey, WireCiphertext, WirePublicKey};
use crate::lr::MAX_ROWS;

/// Highest node id a tree may have (`fedsilo_ml`'s depth cap of 16).
const MAX_NODE: u32 = 1 << 17;

/// Width `w` of one packed value: `|Σg| ≤ rows·2^30 < 2^{w−1}`, `Σh ≤ rows·2^28`.
fn slot_bits(rows: usize) -> u32 {
    32 + (usize::BITS - rows.leading_zeros())
}

/// (g, h) pairs per ciphertext for a modulus of `key_bits`.
fn pairs_per_ciphertext(rows: usize, key_bits: u32) -> usize {
    ((key_bits.saturating_sub(2)) / (2 * slot_bits(rows))) as usize
}

/// Rows of one node, as sent to a passive party.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRows {
    pub node: u32,
    pub rows: Vec<u32>,
}

/// A split the active party chose on a passive party's column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitOrder {
    pub node: u32,
    /// The column, among the passive party's own.
    pub feature: u32,
    pub bin: u8,
    pub default_left: bool,
    pub rows: Vec<u32>,
}

/// Messages to a passive party: ciphertexts under the active party's key, row sets and
/// split orders. None carries a plaintext label, gradient, hessian or score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BoostToPassive {
    Setup {
        public_key: WirePublicKey,
        rows: u64,
        max_bins: u32,
    },
    Gradients {
        tree: u32,
        gh: Vec<WireCiphertext>,
    },
    Histograms {
        tree: u32,
        nodes: Vec<NodeRows>,
    },
    Split {
        tree: u32,
        splits: Vec<SplitOrder>,
    },
    Finished,
}

impl BoostToPassive {
    fn name(&self) -> &'static str {
        match self {
            BoostToPassive::Setup { .. } => "setup",
            BoostToPassive::Gradients { .. } => "gradients",
            BoostToPassive::Histograms { .. } => "histogram request",
            BoostToPassive::Split { .. } => "split order",
            BoostToPassive::Finished => "finished",
        }
    }
}

/// Messages to the active party.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BoostToActive {
    /// Packed encrypted histograms of the requested nodes: `[node][feature][bin]` (g, h)
    /// pairs, `K` to a ciphertext.
    Histograms {
        tree: u32,
        packed: Vec<WireCiphertext>,
    },
    /// For each split order, which of its rows go left.
    Routing { tree: u32, left: Vec<Vec<bool>> },
}

impl BoostToActive {
    fn name(&self) -> &'static str {
        match self {
            BoostToActive::Histograms { .. } => "histograms",
            BoostToActive::Routing { .. } => "routing",
        }
    }
}

/// Who holds a split's feature and threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SplitOwner {
    /// The active party: its own column, bin and threshold.
    Active {
        feature: u32,
        bin: u8,
        threshold: f32,
    },
    /// Passive party `party`: everything else is in that party's [`PassiveTrees`].
    Passive { party: u32 },
}

/// A node of the active party's model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum VerticalNode {
    Split {
        owner: SplitOwner,
        default_left: bool,
        left: u32,
        right: u32,
        gain: f64,
    },
    Leaf {
        value: f64,
    },
}

/// The active party's model: trees whose passive splits name only their owner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerticalGbdtModel {
    pub base_score: f64,
    pub trees: Vec<Vec<VerticalNode>>,
}

/// Where a vertical forest first differs from the pooled one ([`VerticalGbdtModel::matches_pooled`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TreeMismatch {
    #[error("base scores differ")]
    BaseScore,
    #[error("{vertical} trees against {pooled} pooled")]
    TreeCount { vertical: usize, pooled: usize },
    #[error("tree {tree}: {vertical} nodes against {pooled} pooled")]
    NodeCount {
        tree: usize,
        vertical: usize,
        pooled: usize,
    },
    #[error("tree {tree} node {node}: {what}")]
    Node {
        tree: usize,
        node: usize,
        what: &'static str,
    },
}

/// How many splits of each kind a matching forest has ([`VerticalGbdtModel::matches_pooled`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitCounts {
    pub active: usize,
    pub passive: usize,
}

impl VerticalGbdtModel {
    /// Whether these trees are `pooled`'s (the same boosting on the joined table, columns
    /// the active party's then each passive party's) node for node: base score, every
    /// leaf value, every split's missing-value direction, children and gain; an active
    /// split's column, bin and threshold; a passive split's column (plus `offsets[k]`, where
    /// party `k`'s columns start in the joined table), bin, threshold and default direction
    /// as its owner holds them, `split(k, tree, node)`. The simulator's report and the tests
    /// (in memory and over gRPC) use this one check.
    pub fn matches_pooled<'a>(
        &self,
        pooled: &fedsilo_ml::gbdt::GbdtModel,
        offsets: &[usize],
        split: impl Fn(usize, u32, u32) -> Option<&'a PassiveSplit>,
    ) -> Result<SplitCounts, TreeMismatch> {
        if self.base_score != pooled.base_score {
            return Err(TreeMismatch::BaseScore);
        }
        if self.trees.len() != pooled.trees.len() {
            return Err(TreeMismatch::TreeCount {
                vertical: self.trees.len(),
                pooled: pooled.trees.len(),
            });
        }
        let mut counts = SplitCounts::default();
        for (tree, (vt, pt)) in self.trees.iter().zip(&pooled.trees).enumerate() {
            if vt.len() != pt.nodes.len() {
                return Err(TreeMismatch::NodeCount {
                    tree,
                    vertical: vt.len(),
                    pooled: pt.nodes.len(),
                });
            }
            for (node, (v, n)) in vt.iter().zip(&pt.nodes).enumerate() {
                let bad = |what| TreeMismatch::Node { tree, node, what };
                match (v, n) {
                    (VerticalNode::Leaf { value: a }, Node::Leaf { value: b }) => {
                        if a != b {
                            return Err(bad("leaf values differ"));
                        }
                    }
                    (
                        VerticalNode::Split {
                            owner,
                            default_left,
                            left,
                            right,
                            gain,
                        },
                        Node::Split {
                            feature,
                            bin,
                            threshold,
                            default_left: dl,
                            left: l,
                            right: r,
                            gain: g,
                        },
                    ) => {
                        if (default_left, left, right, gain) != (dl, l, r, g) {
                            return Err(bad("missing direction, children or gain differ"));
                        }
                        match owner {
                            SplitOwner::Active {
                                feature: f,
                                bin: b,
                                threshold: th,
                            } => {
                                if (f, b, th) != (feature, bin, threshold) {
                                    return Err(bad("active split's column, bin or threshold"));
                                }
                                counts.active += 1;
                            }
                            SplitOwner::Passive { party } => {
                                let k = *party as usize;
                                let (Some(s), Some(&off)) =
                                    (split(k, tree as u32, node as u32), offsets.get(k))
                                else {
                                    return Err(bad("a passive split its owner does not hold"));
                                };
                                if s.feature as usize + off != *feature as usize
                                    || (s.bin, s.threshold, s.default_left)
                                        != (*bin, *threshold, *dl)
                                {
                                    return Err(bad("passive split's column, bin or threshold"));
                                }
                                counts.passive += 1;
                            }
                        }
                    }
                    _ => return Err(bad("a leaf against a split")),
                }
            }
        }
        Ok(counts)
    }
}

/// Which rows go left at each split a passive party owns, keyed by (tree, node): its answer
/// to a scoring request ([`PassiveBoost::route`]).
pub type Routes = BTreeMap<(u32, u32), Vec<bool>>;

impl VerticalGbdtModel {
    /// Margins of rows scored jointly: `x` the active party's columns of the rows (NaN =
    /// missing; its own splits compare `value < threshold`, missing takes the default
    /// direction), `routes[k]` passive party `k`'s [`PassiveBoost::route`] of the same rows.
    /// `σ(margin)` is the score; the margins equal the pooled model's on the joined rows.
    pub fn predict_margin(
        &self,
        x: ArrayView2<f32>,
        routes: &[Routes],
    ) -> Result<Vec<f64>, VerticalError> {
        let n = x.nrows();
        let mut out = vec![self.base_score; n];
        for (t, tree) in self.trees.iter().enumerate() {
            for (i, m) in out.iter_mut().enumerate() {
                let mut id = 0usize;
                // a tree is acyclic with children after parents; the bound guards a bad model
                for _ in 0..=tree.len() {
                    match tree.get(id) {
                        Some(VerticalNode::Leaf { value }) => {
                            *m += value;
                            break;
                        }
                        Some(VerticalNode::Split {
                            owner,
                            default_left,
                            left,
                            right,
                            ..
                        }) => {
                            let go_left = match owner {
                                SplitOwner::Active {
                                    feature, threshold, ..
                                } => {
                                    let v = x.get((i, *feature as usize)).copied().ok_or_else(
                                        || {
                                            VerticalError::Data(format!(
                                                "active column {feature} missing from the rows"
                                            ))
                                        },
                                    )?;
                                    if v.is_nan() {
                                        *default_left
                                    } else {
                                        v < *threshold
                                    }
                                }
                                SplitOwner::Passive { party } => routes
                                    .get(*party as usize)
                                    .and_then(|r| r.get(&(t as u32, id as u32)))
                                    .and_then(|r| r.get(i))
                                    .copied()
                                    .ok_or_else(|| PeerError::BadReference {
                                        what: "routes",
                                        detail: format!(
                                            "party {party} did not route row {i} at tree {t} node {id}"
                                        ),
                                    })?,
                            };
                            id = (if go_left { *left } else { *right }) as usize;
                        }
                        None => {
                            return Err(VerticalError::Data(format!(
                                "tree {t}: node {id} does not exist"
                            )))
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A passive party's split: its own column, bin and threshold (`value < threshold` → left).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassiveSplit {
    pub feature: u32,
    pub bin: u8,
    pub threshold: f32,
    pub default_left: bool,
}

/// A passive party's part of the model: its splits by (tree, node).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PassiveTrees {
    pub splits: BTreeMap<(u32, u32), PassiveSplit>,
}

/// A party's own bin agreement, exactly the pooled one restricted to its columns: stats →
/// `mean ± range_sd·sd` → fine histogram → quantile cuts, all per column.
fn own_bins(
    x: ArrayView2<f32>,
    params: &GbdtParams,
) -> Result<(BinMapper, Array2<u8>), VerticalError> {
    let zeros = Array1::<f32>::zeros(x.nrows());
    let st = FeatureStats::from_sum(
        &local_stats(x, zeros.view()).map_err(fedsilo_ml::gbdt::GbdtError::from)?,
        x.ncols(),
    )
    .map_err(fedsilo_ml::gbdt::GbdtError::from)?;
    let ranges = st.ranges(params.range_sd);
    let fine =
        fine_histogram(x, &ranges, params.fine_bins).map_err(fedsilo_ml::gbdt::GbdtError::from)?;
    let mapper = BinMapper::from_fine_histogram(&fine, &ranges, params.fine_bins, params.max_bins)
        .map_err(fedsilo_ml::gbdt::GbdtError::from)?;
    let binned = mapper.bin(x).map_err(fedsilo_ml::gbdt::GbdtError::from)?;
    Ok((mapper, binned))
}

fn goes_left(bin: u8, split_bin: u8, missing: u8, default_left: bool) -> bool {
    if bin == missing {
        default_left
    } else {
        bin <= split_bin
    }
}

// ---------------------------------------------------------------------------------------------
// Active party
// ---------------------------------------------------------------------------------------------

/// Awaiting every passive party's histograms of the level `request`.
struct AwaitingHistograms {
    request: Vec<u32>,
    tree: Tree,
    got: Vec<Option<Vec<Integer>>>,
}

/// Awaiting the routing of the passive splits of a level just absorbed.
struct AwaitingRouting {
    /// (party, node, rows) of each order sent, per party in order.
    orders: Vec<Vec<(u32, Vec<u32>)>>,
    got: Vec<Option<Vec<Vec<bool>>>>,
    /// The tree as it stands after the level (finished or still growing).
    tree: Tree,
}

enum ActivePhase {
    Histograms(AwaitingHistograms),
    Routing(AwaitingRouting),
    Done,
}

/// The active party of SecureBoost. Inputs: [`ActiveBoost::handle`]; outputs: the messages it
/// returns, each addressed to a passive party. Getters: [`ActiveBoost::is_done`],
/// [`ActiveBoost::model`], [`ActiveBoost::margins`].
pub struct ActiveBoost {
    sk: SecretKey,
    server: GbdtServer,
    base_score: f64,
    params: GbdtParams,
    y: Vec<f32>,
    binned: Array2<u8>,
    own_features: usize,
    /// (first joint feature, columns) of each passive party
    passive: Vec<(usize, usize)>,
    margins: Vec<f64>,
    /// per-row (g, h) grid units of the current tree
    gh: Vec<[i32; 2]>,
    node_of_row: Vec<u32>,
    tree_index: u32,
    finished: Vec<Tree>,
    thresholds: Vec<Vec<f32>>,
    phase: ActivePhase,
}

impl ActiveBoost {
    /// `x` the active party's columns (NaN = missing), `y` 0/1 labels, `passive_features[k]`
    /// the column count of passive party `k`. Returns the setup and first tree's messages.
    pub fn new<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        rng: &mut R,
        params: GbdtParams,
        sk: SecretKey,
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        passive_features: &[usize],
    ) -> Result<(Self, Vec<(usize, BoostToPassive)>), VerticalError> {
        Self::new_at(rng, params, sk, x, y, passive_features, None)
    }

    /// [`ActiveBoost::new`] continuing from `cp`, this party's own checkpoint of an earlier
    /// session of the job (the same rows and parameters; a fresh key): the setup and the
    /// messages of tree `cp.trees`.
    pub fn resume<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        rng: &mut R,
        params: GbdtParams,
        sk: SecretKey,
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        passive_features: &[usize],
        cp: BoostCheckpoint,
    ) -> Result<(Self, Vec<(usize, BoostToPassive)>), VerticalError> {
        Self::new_at(rng, params, sk, x, y, passive_features, Some(cp))
    }

    fn new_at<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        rng: &mut R,
        params: GbdtParams,
        sk: SecretKey,
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        passive_features: &[usize],
        resume: Option<BoostCheckpoint>,
    ) -> Result<(Self, Vec<(usize, BoostToPassive)>), VerticalError> {
        params.validate()?;
        let n = x.nrows();
        if n == 0 || n > MAX_ROWS || y.len() != n {
            return Err(VerticalError::Data(format!("{n} rows, {} labels", y.len())));
        }
        if passive_features.is_empty() || passive_features.contains(&0) {
            return Err(VerticalError::Config(
                "every passive party needs a column".into(),
            ));
        }
        if pairs_per_ciphertext(n, sk.public().bits()) == 0 {
            return Err(VerticalError::Config(
                "key too small for the packing".into(),
            ));
        }
        let stats = local_stats(x, y).map_err(fedsilo_ml::gbdt::GbdtError::from)?;
        let base_score = FeatureStats::from_sum(&stats, x.ncols())
            .map_err(fedsilo_ml::gbdt::GbdtError::from)?
            .base_score();
        let (mapper, binned) = own_bins(x, &params)?;
        let d = x.ncols();
        let mut cuts: Vec<Vec<f32>> = (0..d).map(|j| mapper.cuts(j).to_vec()).collect();
        let mut passive = Vec::new();
        let mut first = d;
        for &k in passive_features {
            passive.push((first, k));
            first += k;
            cuts.extend(std::iter::repeat_n(Vec::new(), k));
        }
        let thresholds = (0..d)
            .map(|j| {
                (0..params.max_bins)
                    .map(|b| mapper.threshold(j, b as u8))
                    .collect()
            })
            .collect();
        let joint = BinMapper::from_cuts(cuts, params.max_bins)
            .map_err(fedsilo_ml::gbdt::GbdtError::from)?;
        let server = GbdtServer::with_bins(params.clone(), n as f64, base_score, joint)?;
        let mut me = ActiveBoost {
            sk,
            server,
            base_score,
            y: y.to_vec(),
            binned,
            own_features: d,
            passive,
            margins: vec![base_score; n],
            gh: Vec::new(),
            node_of_row: vec![0; n],
            tree_index: 0,
            finished: Vec::new(),
            thresholds,
            params,
            phase: ActivePhase::Done,
        };
        let setup = BoostToPassive::Setup {
            public_key: me.sk.public().to_wire(),
            rows: n as u64,
            max_bins: me.params.max_bins as u32,
        };
        let mut out: Vec<(usize, BoostToPassive)> = (0..passive_features.len())
            .map(|k| (k, setup.clone()))
            .collect();
        if let Some(cp) = resume {
            me.restore(cp)?;
        }
        out.extend(me.start_tree(rng)?);
        Ok((me, out))
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, ActivePhase::Done)
    }

    /// The training rows' margins under the trees finished so far.
    pub fn margins(&self) -> &[f64] {
        &self.margins
    }

    fn parties(&self) -> usize {
        self.passive.len()
    }

    /// Per-row gradients of the current margins, encrypted; the root's request.
    fn start_tree<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Result<Vec<(usize, BoostToPassive)>, VerticalError> {
        let Some(GbdtInstruction::Level { tree, nodes, .. }) = self.server.next() else {
            self.phase = ActivePhase::Done;
            return Ok((0..self.parties())
                .map(|k| (k, BoostToPassive::Finished))
                .collect());
        };
        self.gh = self
            .margins
            .par_iter()
            .zip(self.y.par_iter())
            .map(|(&m, &y)| gradient_units(m, y))
            .collect();
        self.node_of_row.iter_mut().for_each(|v| *v = 0);
        let w = slot_bits(self.y.len());
        let plain: Vec<Integer> = self
            .gh
            .iter()
            .map(|&[g, h]| Integer::from(g) + (Integer::from(h) << w))
            .collect();
        let cts = self.sk.encrypt_batch(rng, &plain)?;
        let wire: Vec<WireCiphertext> = cts.iter().map(PublicKey::to_wire_ct).collect();
        let mut out: Vec<(usize, BoostToPassive)> = (0..self.parties())
            .map(|k| {
                (
                    k,
                    BoostToPassive::Gradients {
                        tree: self.tree_index,
                        gh: wire.clone(),
                    },
                )
            })
            .collect();
        out.extend(self.request_level(tree, nodes));
        Ok(out)
    }

    fn request_level(&mut self, tree: Tree, request: Vec<u32>) -> Vec<(usize, BoostToPassive)> {
        let nodes: Vec<NodeRows> = request
            .iter()
            .map(|&nd| NodeRows {
                node: nd,
                rows: self.rows_of(nd),
            })
            .collect();
        let msg = BoostToPassive::Histograms {
            tree: self.tree_index,
            nodes,
        };
        self.phase = ActivePhase::Histograms(AwaitingHistograms {
            request,
            tree,
            got: vec![None; self.parties()],
        });
        (0..self.parties()).map(|k| (k, msg.clone())).collect()
    }

    fn rows_of(&self, node: u32) -> Vec<u32> {
        self.node_of_row
            .iter()
            .enumerate()
            .filter(|(_, &nd)| nd == node)
            .map(|(r, _)| r as u32)
            .collect()
    }

    fn expected(&self) -> &'static str {
        match self.phase {
            ActivePhase::Histograms(_) => "histograms",
            ActivePhase::Routing(_) => "routing",
            ActivePhase::Done => "nothing (training is finished)",
        }
    }

    /// Takes a message from passive party `from`; returns the messages to send.
    pub fn handle<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        from: usize,
        msg: BoostToActive,
    ) -> Result<Vec<(usize, BoostToPassive)>, VerticalError> {
        if from >= self.parties() {
            return Err(PeerError::UnknownParty { party: from }.into());
        }
        let n = self.y.len();
        let tree_index = self.tree_index;
        let check_tree = |t: u32| expect_round("tree", tree_index, t);
        match (&mut self.phase, msg) {
            (ActivePhase::Histograms(st), BoostToActive::Histograms { tree, packed }) => {
                check_tree(tree)?;
                let (_, cols) = self.passive[from];
                let k = pairs_per_ciphertext(n, self.sk.public().bits());
                let entries = st.request.len() * cols * self.params.max_bins.saturating_add(1);
                let expected = entries.div_ceil(k);
                expect_len("packed histograms", expected, packed.len())?;
                if st.got[from].is_some() {
                    return Err(PeerError::Duplicate { party: from }.into());
                }
                let cts = self.sk.public().ciphertexts(&packed, "packed histograms")?;
                let plain = self.sk.decrypt_batch(&cts, "packed histograms")?;
                // decode now, so a bad value is refused before it is accepted
                let w = slot_bits(n);
                let mut pairs: Vec<Integer> = Vec::new();
                for (index, v) in plain.iter().enumerate() {
                    let count = if index + 1 == expected {
                        entries - k * index
                    } else {
                        k
                    };
                    let digits =
                        decode_digits(v, w, 2 * count).ok_or(PeerError::PlaintextOutOfRange {
                            what: "packed histograms",
                            index,
                        })?;
                    // |Σg| ≤ rows·2^30 and 0 ≤ Σh ≤ rows·2^28: anything else is no histogram
                    let g_max = (n as i64) << 30;
                    let h_max = (n as i64) << 28;
                    let plausible = digits.chunks(2).all(|p| match *p {
                        [g, h] => g.abs() <= g_max && (0..=h_max).contains(&h),
                        _ => false,
                    });
                    if !plausible {
                        return Err(PeerError::PlaintextOutOfRange {
                            what: "packed histograms",
                            index,
                        }
                        .into());
                    }
                    pairs.extend(digits.into_iter().map(Integer::from));
                }
                st.got[from] = Some(pairs);
                if st.got.iter().any(Option::is_none) {
                    return Ok(Vec::new());
                }
                let got: Vec<Vec<Integer>> = st.got.iter_mut().filter_map(Option::take).collect();
                let request = std::mem::take(&mut st.request);
                let tree = std::mem::replace(&mut st.tree, Tree { nodes: Vec::new() });
                self.absorb_level(rng, &request, &tree, &got)
            }
            (ActivePhase::Routing(st), BoostToActive::Routing { tree, left }) => {
                check_tree(tree)?;
                let orders = &st.orders[from];
                expect_len("routing", orders.len(), left.len())?;
                for ((_, rows), l) in orders.iter().zip(&left) {
                    expect_len("routing of a node", rows.len(), l.len())?;
                }
                if st.got[from].is_some() {
                    return Err(PeerError::Duplicate { party: from }.into());
                }
                st.got[from] = Some(left);
                if st.got.iter().any(Option::is_none) {
                    return Ok(Vec::new());
                }
                let orders = std::mem::take(&mut st.orders);
                let got: Vec<Vec<Vec<bool>>> = st.got.iter_mut().filter_map(Option::take).collect();
                let tree = std::mem::replace(&mut st.tree, Tree { nodes: Vec::new() });
                for (party_orders, lefts) in orders.iter().zip(&got) {
                    for ((node, rows), l) in party_orders.iter().zip(lefts) {
                        if let Some(Node::Split { left, right, .. }) =
                            tree.nodes.get(*node as usize)
                        {
                            for (&r, &go_left) in rows.iter().zip(l) {
                                if let Some(slot) = self.node_of_row.get_mut(r as usize) {
                                    *slot = if go_left { *left } else { *right };
                                }
                            }
                        }
                    }
                }
                self.after_routing(rng, tree)
            }
            (_, msg) => Err(PeerError::wrong_phase(self.expected(), msg.name()).into()),
        }
    }

    /// Every passive party's histograms are in: assemble the level, let the server absorb
    /// it, route the new splits.
    fn absorb_level<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        request: &[u32],
        before: &Tree,
        passive: &[Vec<Integer>],
    ) -> Result<Vec<(usize, BoostToPassive)>, VerticalError> {
        let nb = self.params.max_bins + 1;
        let d = self.own_features;
        let grad: Vec<f64> = self
            .gh
            .iter()
            .map(|p| f64::from(p[0]) * GRADIENT_RESOLUTION)
            .collect();
        let hess: Vec<f64> = self
            .gh
            .iter()
            .map(|p| f64::from(p[1]) * GRADIENT_RESOLUTION)
            .collect();
        let own = level_histograms(
            self.binned.view(),
            &grad,
            &hess,
            &self.node_of_row,
            request,
            nb,
        )?;
        let total: usize = d + self.passive.iter().map(|p| p.1).sum::<usize>();
        let mut full = Vec::with_capacity(request.len() * total * nb * 2);
        let to_f64 = |v: &Integer| {
            use num_traits::ToPrimitive;
            v.to_f64().unwrap_or(f64::NAN) * GRADIENT_RESOLUTION
        };
        for s in 0..request.len() {
            full.extend_from_slice(own.get(s * d * nb * 2..(s + 1) * d * nb * 2).unwrap_or(&[]));
            for (k, &(_, cols)) in self.passive.iter().enumerate() {
                let per = cols * nb * 2;
                if let Some(part) = passive.get(k).and_then(|p| p.get(s * per..(s + 1) * per)) {
                    full.extend(part.iter().map(to_f64));
                }
            }
        }
        let trees_before = self.server.trees_done();
        self.server.absorb(&full)?;
        // the tree after this level: still growing, finished, or a stump that ends training
        let after = if self.server.trees_done() > trees_before {
            self.server
                .finished_trees()
                .and_then(|m| m.trees.last().cloned())
                .ok_or(VerticalError::Internal("finished tree"))?
        } else if let Some(GbdtInstruction::Level { tree, .. }) = self.server.next() {
            tree
        } else {
            before.clone()
        };
        // route the new splits: own ones here, passive ones by their owners
        let missing = self.params.max_bins as u8;
        let mut orders: Vec<Vec<(u32, Vec<u32>)>> = vec![Vec::new(); self.parties()];
        let mut messages: Vec<Vec<SplitOrder>> = vec![Vec::new(); self.parties()];
        for (id, node) in after.nodes.iter().enumerate() {
            let was_open = matches!(before.nodes.get(id), Some(Node::Open { .. }));
            let Node::Split {
                feature,
                bin,
                default_left,
                left,
                right,
                ..
            } = *node
            else {
                continue;
            };
            if !was_open {
                continue;
            }
            let rows = self.rows_of(id as u32);
            let f = feature as usize;
            if f < d {
                let col = self.binned.column(f);
                for &r in &rows {
                    let b = col.get(r as usize).copied().unwrap_or(missing);
                    if let Some(slot) = self.node_of_row.get_mut(r as usize) {
                        *slot = if goes_left(b, bin, missing, default_left) {
                            left
                        } else {
                            right
                        };
                    }
                }
            } else {
                let (k, &(first, _)) = self
                    .passive
                    .iter()
                    .enumerate()
                    .rfind(|(_, p)| p.0 <= f)
                    .ok_or(VerticalError::Internal("split feature owner"))?;
                messages[k].push(SplitOrder {
                    node: id as u32,
                    feature: (f - first) as u32,
                    bin,
                    default_left,
                    rows: rows.clone(),
                });
                orders[k].push((id as u32, rows));
            }
        }
        if orders.iter().any(|o| !o.is_empty()) {
            let got = orders
                .iter()
                .map(|o| if o.is_empty() { Some(Vec::new()) } else { None })
                .collect();
            let out = messages
                .into_iter()
                .enumerate()
                .filter(|(_, m)| !m.is_empty())
                .map(|(k, splits)| {
                    (
                        k,
                        BoostToPassive::Split {
                            tree: self.tree_index,
                            splits,
                        },
                    )
                })
                .collect();
            self.phase = ActivePhase::Routing(AwaitingRouting {
                orders,
                got,
                tree: after,
            });
            return Ok(out);
        }
        self.after_routing(rng, after)
    }

    /// Every row of the level is routed: the next level, the next tree, or the end.
    fn after_routing<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        tree: Tree,
    ) -> Result<Vec<(usize, BoostToPassive)>, VerticalError> {
        if let Some(GbdtInstruction::Level { tree: t, nodes, .. }) = self.server.next() {
            if t.nodes.len() > 1 {
                return Ok(self.request_level(t, nodes));
            }
        }
        // the tree is finished (or a stump that ended training)
        if tree.nodes.len() > 1 {
            for (m, &nd) in self.margins.iter_mut().zip(&self.node_of_row) {
                if let Some(Node::Leaf { value }) = tree.nodes.get(nd as usize) {
                    *m += value;
                }
            }
            self.finished.push(tree);
            self.tree_index += 1;
        }
        self.start_tree(rng)
    }

    /// The model: trees whose passive splits name only their owner.
    pub fn model(&self) -> Result<VerticalGbdtModel, VerticalError> {
        let base_score = self.base_score;
        let d = self.own_features;
        let trees = self
            .finished
            .iter()
            .map(|t| {
                t.nodes
                    .iter()
                    .map(|n| match *n {
                        Node::Split {
                            feature,
                            bin,
                            default_left,
                            left,
                            right,
                            gain,
                            ..
                        } => {
                            let f = feature as usize;
                            let owner = if f < d {
                                SplitOwner::Active {
                                    feature,
                                    bin,
                                    threshold: self
                                        .thresholds
                                        .get(f)
                                        .and_then(|t| t.get(usize::from(bin)))
                                        .copied()
                                        .unwrap_or(f32::MAX),
                                }
                            } else {
                                let party =
                                    self.passive.iter().rposition(|p| p.0 <= f).unwrap_or(0) as u32;
                                SplitOwner::Passive { party }
                            };
                            VerticalNode::Split {
                                owner,
                                default_left,
                                left,
                                right,
                                gain,
                            }
                        }
                        Node::Leaf { value } => VerticalNode::Leaf { value },
                        Node::Open { .. } => VerticalNode::Leaf { value: 0.0 },
                    })
                    .collect()
            })
            .collect();
        Ok(VerticalGbdtModel { base_score, trees })
    }
}

// ---------------------------------------------------------------------------------------------
// Passive party
// ---------------------------------------------------------------------------------------------

struct AwaitingSetup;

struct Training {
    pk: PublicKey,
    max_bins: usize,
    tree: u32,
    /// this tree's row ciphertexts (empty before its gradients arrive)
    gh: Vec<Ciphertext>,
}

enum PassivePhase {
    Setup(AwaitingSetup),
    Training(Box<Training>),
    Done,
}

/// A passive party of SecureBoost: its columns, bins and split thresholds stay here.
pub struct PassiveBoost {
    params: GbdtParams,
    mapper: BinMapper,
    binned: Array2<u8>,
    trees: PassiveTrees,
    phase: PassivePhase,
    /// The modulus size the active party's key must have (the job's `key_bits`), if set.
    key_bits: Option<u32>,
    /// The first tree of this session (0, or where it continues an earlier one).
    first_tree: u32,
}

impl PassiveBoost {
    /// Refuses an active party's key whose modulus is not of `bits` bits (the job's
    /// `key_bits`; without this only the crate's bounds apply).
    pub fn require_key_bits(mut self, bits: u32) -> Self {
        self.key_bits = Some(bits);
        self
    }

    /// `x`: this party's columns on the aligned rows (NaN = missing).
    pub fn new(params: GbdtParams, x: ArrayView2<f32>) -> Result<Self, VerticalError> {
        params.validate()?;
        if x.nrows() == 0 || x.nrows() > MAX_ROWS || x.ncols() == 0 {
            return Err(VerticalError::Data(format!(
                "{}×{} columns",
                x.nrows(),
                x.ncols()
            )));
        }
        let (mapper, binned) = own_bins(x, &params)?;
        Ok(PassiveBoost {
            params,
            mapper,
            binned,
            trees: PassiveTrees::default(),
            phase: PassivePhase::Setup(AwaitingSetup),
            key_bits: None,
            first_tree: 0,
        })
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, PassivePhase::Done)
    }

    /// This party's splits.
    pub fn trees(&self) -> &PassiveTrees {
        &self.trees
    }

    /// Rows to score, routed at every split this party owns: `x` its own columns of the rows
    /// (NaN = missing), binned with its own bins as in training. The active party learns
    /// each row's direction at each of this party's splits (as it learns the training rows'
    /// in training); the thresholds stay here.
    pub fn route(&self, x: ArrayView2<f32>) -> Result<Routes, VerticalError> {
        let binned = self
            .mapper
            .bin(x)
            .map_err(fedsilo_ml::gbdt::GbdtError::from)?;
        let missing = self.mapper.missing_bin();
        self.trees
            .splits
            .iter()
            .map(|(&key, sp)| {
                if sp.feature as usize >= binned.ncols() {
                    return Err(VerticalError::Internal(
                        "a split on a column this party lacks",
                    ));
                }
                let col = binned.column(sp.feature as usize);
                let left = col
                    .iter()
                    .map(|&b| goes_left(b, sp.bin, missing, sp.default_left))
                    .collect();
                Ok((key, left))
            })
            .collect()
    }

    fn expected(&self) -> &'static str {
        match self.phase {
            PassivePhase::Setup(_) => "setup",
            PassivePhase::Training(_) => "gradients, histogram request, split order or finished",
            PassivePhase::Done => "nothing (training is finished)",
        }
    }

    fn check_rows(what: &'static str, rows: &[u32], seen: &mut [bool]) -> Result<(), PeerError> {
        for &r in rows {
            match seen.get_mut(r as usize) {
                Some(s) if !*s => *s = true,
                _ => return Err(PeerError::BadRow { what, row: r }),
            }
        }
        Ok(())
    }

    /// Takes a message from the active party; returns the answer, if any.
    pub fn handle<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        msg: BoostToPassive,
    ) -> Result<Option<BoostToActive>, VerticalError> {
        let n = self.binned.nrows();
        match (&mut self.phase, msg) {
            (
                PassivePhase::Setup(_),
                BoostToPassive::Setup {
                    public_key,
                    rows,
                    max_bins,
                },
            ) => {
                if rows != n as u64 {
                    return Err(PeerError::WrongSize {
                        what: "aligned rows",
                        expected: n,
                        got: rows as usize,
                    }
                    .into());
                }
                if max_bins as usize != self.params.max_bins {
                    return Err(PeerError::BadReference {
                        what: "max_bins",
                        detail: format!("{max_bins}, this party's is {}", self.params.max_bins),
                    }
                    .into());
                }
                let pk = PublicKey::from_wire(&public_key)?;
                pk.check_bits(self.key_bits)?;
                if pairs_per_ciphertext(n, pk.bits()) == 0 {
                    return Err(PeerError::BadPublicKey { bits: pk.bits() }.into());
                }
                self.phase = PassivePhase::Training(Box::new(Training {
                    pk,
                    max_bins: self.params.max_bins,
                    tree: self.first_tree,
                    gh: Vec::new(),
                }));
                Ok(None)
            }
            (PassivePhase::Training(st), BoostToPassive::Gradients { tree, gh }) => {
                // a new tree: the current one, or the one after it
                if tree != st.tree && tree != st.tree + 1 {
                    return Err(PeerError::WrongRound {
                        what: "gradients",
                        expected: st.tree,
                        got: tree,
                    }
                    .into());
                }
                expect_len("gradients", n, gh.len())?;
                let cts = st.pk.ciphertexts(&gh, "gradients")?;
                st.tree = tree;
                st.gh = cts;
                Ok(None)
            }
            (PassivePhase::Training(st), BoostToPassive::Histograms { tree, nodes }) => {
                if tree != st.tree || st.gh.is_empty() {
                    return Err(PeerError::WrongRound {
                        what: "histogram request",
                        expected: st.tree,
                        got: tree,
                    }
                    .into());
                }
                let mut seen = vec![false; n];
                for nr in &nodes {
                    if nr.node >= MAX_NODE {
                        return Err(PeerError::BadReference {
                            what: "histogram request",
                            detail: format!("node {}", nr.node),
                        }
                        .into());
                    }
                    Self::check_rows("histogram request", &nr.rows, &mut seen)?;
                }
                if nodes.is_empty() {
                    return Err(PeerError::WrongSize {
                        what: "histogram request nodes",
                        expected: 1,
                        got: 0,
                    }
                    .into());
                }
                let packed = histograms(
                    &st.pk,
                    &st.gh,
                    self.binned.view(),
                    &nodes,
                    st.max_bins + 1,
                    n,
                    rng,
                )?;
                Ok(Some(BoostToActive::Histograms { tree, packed }))
            }
            (PassivePhase::Training(st), BoostToPassive::Split { tree, splits }) => {
                expect_round("split order", st.tree, tree)?;
                let mut seen = vec![false; n];
                for sp in &splits {
                    if sp.feature as usize >= self.mapper.n_features()
                        || usize::from(sp.bin) >= self.params.max_bins
                        || sp.node >= MAX_NODE
                    {
                        return Err(PeerError::BadReference {
                            what: "split order",
                            detail: format!(
                                "node {} feature {} bin {}",
                                sp.node, sp.feature, sp.bin
                            ),
                        }
                        .into());
                    }
                    Self::check_rows("split order", &sp.rows, &mut seen)?;
                }
                let missing = self.mapper.missing_bin();
                let mut left = Vec::with_capacity(splits.len());
                for sp in splits {
                    let col = self.binned.column(sp.feature as usize);
                    left.push(
                        sp.rows
                            .iter()
                            .map(|&r| {
                                goes_left(
                                    col.get(r as usize).copied().unwrap_or(missing),
                                    sp.bin,
                                    missing,
                                    sp.default_left,
                                )
                            })
                            .collect(),
                    );
                    self.trees.splits.insert(
                        (tree, sp.node),
                        PassiveSplit {
                            feature: sp.feature,
                            bin: sp.bin,
                            threshold: self.mapper.threshold(sp.feature as usize, sp.bin),
                            default_left: sp.default_left,
                        },
                    );
                }
                Ok(Some(BoostToActive::Routing { tree, left }))
            }
            (PassivePhase::Training(_), BoostToPassive::Finished) => {
                self.phase = PassivePhase::Done;
                Ok(None)
            }
            (_, msg) => Err(PeerError::wrong_phase(self.expected(), msg.name()).into()),
        }
    }
}

/// `slot ← slot·c` (`Enc(a + x)`), or `c` into an empty slot.
fn multiply_into(pk: &PublicKey, slot: &mut Option<Ciphertext>, c: &Ciphertext) {
    *slot = Some(match slot.take() {
        Some(a) => pk.add(&a, c),
        None => c.clone(),
    });
}

/// Encrypted, packed, re-randomised histograms `[node][feature][bin]` of this party's
/// columns over the rows of each node.
fn histograms<R: rand::RngCore + rand::CryptoRng + ?Sized>(
    pk: &PublicKey,
    gh: &[Ciphertext],
    binned: ArrayView2<u8>,
    nodes: &[NodeRows],
    nb: usize,
    rows: usize,
    rng: &mut R,
) -> Result<Vec<WireCiphertext>, VerticalError> {
    let f = binned.ncols();
    // Work items: (node, first feature, features in the group), the features in pairs. A
    // pair's rows are first multiplied into the nb × nb cells of their two bins, then each
    // feature's bin is the product of its row or column of cells: m + ≤ 2·nb² products
    // for the two features instead of 2m — about half at a node of many rows (m ≫ nb²).
    // Every bin is the product of the same row ciphertexts either way, so the same
    // ciphertext mod n².
    let groups: Vec<(usize, usize, usize)> = (0..nodes.len())
        .flat_map(|s| (0..f).step_by(2).map(move |j| (s, j, (f - j).min(2))))
        .collect();
    let sums: Vec<Vec<Option<Ciphertext>>> = groups
        .par_iter()
        .map(|&(s, j, width)| {
            let rows = nodes.get(s).map_or(&[][..], |nr| &nr.rows[..]);
            let first = binned.column(j);
            if width == 1 {
                let mut acc: Vec<Option<Ciphertext>> = vec![None; nb];
                for &r in rows {
                    let (Some(&b), Some(c)) = (first.get(r as usize), gh.get(r as usize)) else {
                        continue;
                    };
                    if let Some(slot) = acc.get_mut(usize::from(b)) {
                        multiply_into(pk, slot, c);
                    }
                }
                return acc;
            }
            let second = binned.column(j + 1);
            let mut cells: Vec<Option<Ciphertext>> = vec![None; nb * nb];
            for &r in rows {
                let (Some(&b1), Some(&b2), Some(c)) = (
                    first.get(r as usize),
                    second.get(r as usize),
                    gh.get(r as usize),
                ) else {
                    continue;
                };
                let (b1, b2) = (usize::from(b1), usize::from(b2));
                if b1 < nb && b2 < nb {
                    if let Some(slot) = cells.get_mut(b1 * nb + b2) {
                        multiply_into(pk, slot, c);
                    }
                }
            }
            // first feature's nb bins, then the second's
            let mut acc: Vec<Option<Ciphertext>> = vec![None; 2 * nb];
            for (i, cell) in cells.iter().enumerate() {
                let Some(c) = cell else { continue };
                let (b1, b2) = (i / nb, i % nb);
                if let Some(slot) = acc.get_mut(b1) {
                    multiply_into(pk, slot, c);
                }
                if let Some(slot) = acc.get_mut(nb + b2) {
                    multiply_into(pk, slot, c);
                }
            }
            acc
        })
        .collect();
    let flat: Vec<Option<Ciphertext>> = sums.into_iter().flatten().collect();
    let k = pairs_per_ciphertext(rows, pk.bits()).max(1);
    let chunks: Vec<&[Option<Ciphertext>]> = flat.chunks(k).collect();
    // a fresh uniform nonce ρ ∈ Z*_n per packed ciphertext, its Enc(0) = ρⁿ multiplied in
    // while packing: the sums hide which of A's ciphertexts they hold (A knows the nonces
    // of its own)
    let nonces = pk.nonces(rng, chunks.len());
    let shift = 2 * slot_bits(rows);
    chunks
        .par_iter()
        .zip(nonces.par_iter())
        .map(|(chunk, rho)| {
            let c = pk.pack_rerandomised(chunk, shift, rho)?;
            Ok(PublicKey::to_wire_ct(&c))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Resuming a later session at a tree boundary
// ---------------------------------------------------------------------------------------------

/// The active party's state after `trees` finished trees: the boosting server (its model
/// so far and the next tree's pending root level), the training rows' margins and the
/// finished trees. It stays with the active party; a later session of the same job (same
/// rows and parameters, a fresh key) continues from it and grows the trees an
/// uninterrupted session grows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoostCheckpoint {
    pub trees: u32,
    pub server: GbdtServer,
    pub margins: Vec<f64>,
    pub finished: Vec<Tree>,
}

/// A passive party's state after `trees` finished trees: its splits in them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassiveBoostCheckpoint {
    pub trees: u32,
    pub splits: PassiveTrees,
}

impl ActiveBoost {
    /// The state at the start of the current tree, once at least one tree is finished and
    /// the current one has not grown past its root (none otherwise).
    pub fn checkpoint(&self) -> Option<BoostCheckpoint> {
        let at_root = match &self.phase {
            ActivePhase::Histograms(h) => h.tree.nodes.len() <= 1,
            _ => false,
        };
        (at_root && self.tree_index > 0).then(|| BoostCheckpoint {
            trees: self.tree_index,
            server: self.server.clone(),
            margins: self.margins.clone(),
            finished: self.finished.clone(),
        })
    }

    fn restore(&mut self, cp: BoostCheckpoint) -> Result<(), VerticalError> {
        let fits = cp.margins.len() == self.margins.len()
            && cp.finished.len() == cp.trees as usize
            && cp.trees > 0
            && (cp.trees as usize) < self.params.n_trees
            && cp.server.params() == self.server.params();
        if !fits {
            return Err(VerticalError::Config(format!(
                "a checkpoint after {} trees of {} rows does not fit this job ({} trees, {} rows)",
                cp.trees,
                cp.margins.len(),
                self.params.n_trees,
                self.margins.len()
            )));
        }
        self.tree_index = cp.trees;
        self.server = cp.server;
        self.margins = cp.margins;
        self.finished = cp.finished;
        Ok(())
    }
}

impl PassiveBoost {
    /// The state at the start of the current tree, once at least one tree is finished and
    /// its gradients are in (none otherwise).
    pub fn checkpoint(&self) -> Option<PassiveBoostCheckpoint> {
        let PassivePhase::Training(st) = &self.phase else {
            return None;
        };
        (st.tree > 0 && !st.gh.is_empty()).then(|| PassiveBoostCheckpoint {
            trees: st.tree,
            splits: PassiveTrees {
                splits: self
                    .trees
                    .splits
                    .iter()
                    .filter(|((t, _), _)| *t < st.tree)
                    .map(|(k, v)| (*k, v.clone()))
                    .collect(),
            },
        })
    }

    /// A party just made by [`PassiveBoost::new`] continues from `cp` (its own checkpoint
    /// of an earlier session): after the Setup it expects the gradients of tree `cp.trees`.
    pub fn resume_at(&mut self, cp: PassiveBoostCheckpoint) -> Result<(), VerticalError> {
        if !matches!(self.phase, PassivePhase::Setup(_)) || !self.trees.splits.is_empty() {
            return Err(VerticalError::Internal(
                "a party resumes only before its first message",
            ));
        }
        if cp.trees == 0
            || cp.trees as usize >= self.params.n_trees
            || cp.splits.splits.keys().any(|(t, _)| *t >= cp.trees)
        {
            return Err(VerticalError::Config(format!(
                "a checkpoint after {} trees does not fit a job of {} trees",
                cp.trees, self.params.n_trees
            )));
        }
        self.first_tree = cp.trees;
        self.trees = cp.splits;
        Ok(())
    }
}
