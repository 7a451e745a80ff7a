//! Per-level model deltas: what a level instruction carries instead of the whole model so
//! far, and the digest that binds a delta to the exact state it builds on.
//!
//! The boosting state both halves share is the model so far (base score, bin mapper,
//! finished trees) and the tree being grown. Its [`StateDigest`] is SHA-256 over a canonical
//! encoding of all of it. A [`StateDelta`] names the state it applies to (`base`), the nodes
//! of the growing tree that change (an open node split or closed, a leaf given its value) and
//! the nodes appended, whether the tree is then finished (it joins the model and a new tree
//! starts at its root), and the digest of the state that results. A participant applies a
//! delta only to a state whose digest is `base`, and keeps the result only if its digest is
//! `digest`: any other case is a typed [`DeltaError`], never a silently different model.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{GbdtModel, Node, Tree};

/// SHA-256 of a boosting state (model so far and tree being grown), see [`state_digest`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateDigest(pub [u8; 32]);

impl std::fmt::Display for StateDigest {
    /// The first 8 bytes in hex (enough to tell states apart in a log line).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

impl std::fmt::Debug for StateDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateDigest({})", hex::encode(self.0))
    }
}

/// Why a delta was not applied. The participant's state is never left half changed: a
/// delta refused before it is applied leaves it as it was; one whose result has the wrong
/// digest drops it (the next full instruction restores it).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DeltaError {
    /// The participant holds no boosting state for this job (it restarted, or joined late):
    /// it needs a full instruction.
    #[error("model delta builds on state {base}, but this participant holds no model state (restarted or joined late)")]
    NoState { base: StateDigest },
    /// The participant holds a different state: it missed a step, or the instruction is stale
    /// or replayed.
    #[error("model delta builds on state {base}, but this participant holds state {held} (a missed, stale or replayed step)")]
    WrongBase {
        base: StateDigest,
        held: StateDigest,
    },
    /// The delta names a node the tree being grown does not have.
    #[error("model delta sets node {node}, but the tree being grown has {len} nodes")]
    UnknownNode { node: u32, len: usize },
    /// The delta would replace a split (only open nodes and leaves change as a tree grows).
    #[error("model delta replaces node {node}, which is already a split")]
    ReplacesSplit { node: u32 },
    /// The delta names a node twice.
    #[error("model delta sets node {node} twice")]
    Twice { node: u32 },
    /// Applied, the delta gives a state other than the one the coordinator holds.
    #[error("model delta gives state {got}, but the coordinator's state is {expected}")]
    Digest {
        expected: StateDigest,
        got: StateDigest,
    },
    /// The tree after the delta is malformed (checked against the model's bin mapper).
    #[error("model delta gives a malformed tree: {0}")]
    Invalid(#[source] Box<super::GbdtError>),
    /// The state after the delta does not have the shape the instruction declares.
    #[error("model delta: the instruction declares {expected} {what}, the state has {got}")]
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
}

/// The change from one boosting state to the next (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateDelta {
    /// Digest of the state this delta applies to.
    pub base: StateDigest,
    /// Nodes of the tree being grown replaced, by id (ascending).
    pub set: Vec<(u32, Node)>,
    /// Nodes appended to the tree being grown.
    pub push: Vec<Node>,
    /// The tree, so changed, is finished: it joins the model and a new tree starts (a root
    /// with zero sums, [`Tree::root`]).
    pub finish: bool,
    /// Digest of the state after the delta.
    pub digest: StateDigest,
}

/// A boosting state as a participant holds it, with its digest.
#[derive(Clone, Debug, PartialEq)]
pub struct BoostState {
    pub model: GbdtModel,
    pub tree: Tree,
    pub digest: StateDigest,
}

impl BoostState {
    pub fn new(model: GbdtModel, tree: Tree) -> Self {
        let digest = state_digest(&model, &tree);
        BoostState {
            model,
            tree,
            digest,
        }
    }
}

impl Tree {
    /// A new tree: one open root with zero sums (its sums are set at its first level).
    pub fn root() -> Tree {
        Tree {
            nodes: vec![Node::Open {
                sum_grad: 0.0,
                sum_hess: 0.0,
                depth: 0,
            }],
        }
    }
}

/// SHA-256 over the canonical encoding of `model` and `tree` (every field, floats by their
/// bits, lengths before contents, domain-separated).
pub fn state_digest(model: &GbdtModel, tree: &Tree) -> StateDigest {
    let mut h = Sha256::new();
    h.update(b"fedsilo/gbdt-state/v1");
    h.update(model.base_score.to_bits().to_le_bytes());
    let mapper = &model.bin_mapper;
    h.update((mapper.max_bins() as u64).to_le_bytes());
    h.update((mapper.n_features() as u64).to_le_bytes());
    for j in 0..mapper.n_features() {
        let cuts = mapper.cuts(j);
        h.update((cuts.len() as u64).to_le_bytes());
        for c in cuts {
            h.update(c.to_bits().to_le_bytes());
        }
    }
    h.update((model.trees.len() as u64).to_le_bytes());
    for t in &model.trees {
        hash_tree(&mut h, t);
    }
    hash_tree(&mut h, tree);
    StateDigest(h.finalize().into())
}

fn hash_tree(h: &mut Sha256, t: &Tree) {
    h.update((t.nodes.len() as u64).to_le_bytes());
    for n in &t.nodes {
        match *n {
            Node::Split {
                feature,
                bin,
                threshold,
                default_left,
                left,
                right,
                gain,
            } => {
                h.update([0u8, bin, u8::from(default_left)]);
                h.update(feature.to_le_bytes());
                h.update(threshold.to_bits().to_le_bytes());
                h.update(left.to_le_bytes());
                h.update(right.to_le_bytes());
                h.update(gain.to_bits().to_le_bytes());
            }
            Node::Leaf { value } => {
                h.update([1u8]);
                h.update(value.to_bits().to_le_bytes());
            }
            Node::Open {
                sum_grad,
                sum_hess,
                depth,
            } => {
                h.update([2u8]);
                h.update(sum_grad.to_bits().to_le_bytes());
                h.update(sum_hess.to_bits().to_le_bytes());
                h.update(depth.to_le_bytes());
            }
        }
    }
}

impl StateDelta {
    /// The delta from state `(m0, t0)` to `(m1, t1)`, when one step of boosting leads from the
    /// one to the other: the same finished trees and `t1` grown from `t0`, or `t0` grown into
    /// the one tree `m1` adds and `t1` a new root. `None` otherwise (the participant is then
    /// sent the full state).
    pub fn between(m0: &GbdtModel, t0: &Tree, m1: &GbdtModel, t1: &Tree) -> Option<StateDelta> {
        let (target, finish) = if m1.trees.len() == m0.trees.len() + 1 && *t1 == Tree::root() {
            (m1.trees.last()?, true)
        } else if m1.trees.len() == m0.trees.len() {
            (t1, false)
        } else {
            return None;
        };
        let (old, new) = (&t0.nodes, &target.nodes);
        if new.len() < old.len() {
            return None;
        }
        let set = old
            .iter()
            .zip(new)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (_, b))| (i as u32, b.clone()))
            .collect();
        Some(StateDelta {
            base: state_digest(m0, t0),
            set,
            push: new.get(old.len()..).unwrap_or(&[]).to_vec(),
            finish,
            digest: state_digest(m1, t1),
        })
    }

    /// Applies the delta to `state` in place. Refused before any change: no state, a state
    /// other than `base`, a node that does not exist, is a split or is named twice. A state
    /// already at `digest` (a retried step whose first attempt this participant computed) is
    /// kept as it is. A result that does not validate against the mapper or whose digest is
    /// not `digest` is an error and `state` is dropped (set to `None`): the participant then
    /// needs a full instruction, as after a restart.
    pub fn apply(&self, state: &mut Option<BoostState>) -> Result<(), DeltaError> {
        let held = match state.as_mut() {
            None => return Err(DeltaError::NoState { base: self.base }),
            Some(s) if s.digest == self.digest => return Ok(()),
            Some(s) if s.digest != self.base => {
                return Err(DeltaError::WrongBase {
                    base: self.base,
                    held: s.digest,
                })
            }
            Some(s) => s,
        };
        let len = held.tree.nodes.len();
        let mut seen = vec![false; len];
        for (id, _) in &self.set {
            match held.tree.nodes.get(*id as usize) {
                None => return Err(DeltaError::UnknownNode { node: *id, len }),
                Some(Node::Split { .. }) => return Err(DeltaError::ReplacesSplit { node: *id }),
                Some(_) => {}
            }
            if let Some(s) = seen.get_mut(*id as usize) {
                if std::mem::replace(s, true) {
                    return Err(DeltaError::Twice { node: *id });
                }
            }
        }
        for (id, node) in &self.set {
            if let Some(n) = held.tree.nodes.get_mut(*id as usize) {
                *n = node.clone();
            }
        }
        held.tree.nodes.extend(self.push.iter().cloned());
        if let Err(e) = held.tree.validate(&held.model.bin_mapper, self.finish) {
            *state = None;
            return Err(DeltaError::Invalid(Box::new(e)));
        }
        if self.finish {
            let tree = std::mem::replace(&mut held.tree, Tree::root());
            held.model.trees.push(tree);
        }
        let got = state_digest(&held.model, &held.tree);
        if got != self.digest {
            *state = None;
            return Err(DeltaError::Digest {
                expected: self.digest,
                got,
            });
        }
        held.digest = got;
        Ok(())
    }
}
