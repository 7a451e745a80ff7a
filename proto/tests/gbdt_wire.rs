//! The protobuf size of a boosting level's instruction, whole and as a model delta, tree
//! after tree, on the bench's shape (50 features, 255 bins + missing, depth 6, 64 leaves):
//! the whole form carries the model so far and grows with every tree; the delta carries
//! one level's new nodes (or the finished tree) and does not.

use fedsilo_ml::gbdt::{gbdt_compute, GbdtCache, GbdtInstruction, GbdtParams, GbdtServer};
use fedsilo_proto::pb;
use ndarray::{Array1, Array2};
use prost::Message;
use rand::{Rng, SeedableRng};

#[test]
fn a_level_delta_does_not_grow_with_the_tree_number() {
    let (rows, features, n_trees) = (4000, 50, 12);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut x = Array2::<f32>::zeros((rows, features));
    let mut y = Array1::<f32>::zeros(rows);
    for r in 0..rows {
        for j in 0..features {
            x[[r, j]] = rng.random_range(-2.0..2.0);
        }
        let logit = 1.5 * f64::from(x[[r, 0]]) - f64::from(x[[r, 1]] * x[[r, 2]])
            + f64::from(u8::from(x[[r, 3]] > 0.5));
        y[r] = f32::from(u8::from(rng.random_bool(1.0 / (1.0 + (-logit).exp()))));
    }
    let params = GbdtParams {
        n_trees,
        max_depth: 6,
        max_leaves: 64,
        max_bins: 255,
        min_child_weight: 1.0,
        lambda: 1.0,
        ..GbdtParams::default()
    };
    let mut server = GbdtServer::new(params, features).unwrap();
    let mut cache = GbdtCache::new();
    // Per tree: (whole, delta) protobuf bytes summed over its levels.
    let mut per_tree = vec![(0usize, 0usize); n_trees];
    while let Some(instr) = server.next() {
        if matches!(instr, GbdtInstruction::Level { .. }) {
            let t = server.trees_done();
            let len = |i: &GbdtInstruction| pb::GbdtInstruction::from(i).encoded_len();
            per_tree[t].0 += len(&instr);
            per_tree[t].1 += server.next_delta().as_ref().map_or(len(&instr), len);
        }
        let v = gbdt_compute(&instr, x.view(), y.view(), &mut cache).unwrap();
        server.absorb(&v).unwrap();
    }
    assert_eq!(server.trees_done(), n_trees);
    let whole: usize = per_tree.iter().map(|t| t.0).sum();
    let delta: usize = per_tree.iter().map(|t| t.1).sum();
    println!(
        "level instructions, protobuf bytes per tree (whole, delta): {per_tree:?}; mean over \
         {n_trees} trees: whole {} B, delta {} B ({:.1}× smaller)",
        whole / n_trees,
        delta / n_trees,
        whole as f64 / delta as f64
    );
    // Tree 1 starts whole (the bin mapper); every later tree's deltas are a tree's worth of
    // nodes, no larger for the last tree than for the second.
    let (second, last) = (per_tree[1].1, per_tree[n_trees - 1].1);
    assert!(
        last <= second + second / 2,
        "tree 2: {second} B, tree {n_trees}: {last} B"
    );
    // The whole form grows by about a tree per tree.
    assert!(
        per_tree[n_trees - 1].0 > per_tree[1].0 + (n_trees - 2) * second,
        "{per_tree:?}"
    );
    assert!(10 * last < per_tree[n_trees - 1].0, "{per_tree:?}");
}
