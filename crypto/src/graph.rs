//! The SecAgg+ neighbour graph: who masks with whom.
//!
//! Bell et al. (CCS 2020) replace the complete graph of the original protocol with a random
//! k-regular graph, k = O(log n), so each participant does O(log n) key agreements, share
//! encryptions and mask expansions instead of O(n).
//!
//! # Construction (every participant and the coordinator must derive the same graph)
//!
//! 1. Sort the participant ids ascending (duplicates are refused).
//! 2. Shuffle them with Fisher-Yates driven by `rand_chacha::ChaCha20Rng::from_seed(seed)`:
//!    for `i` from `n-1` down to `1`, draw `j` uniform in `0..=i` by rejection sampling —
//!    draw `r = next_u64()` until `r < zone` where `zone = (2^64 - 1) / (i+1) * (i+1)`
//!    (integer division), then `j = r % (i+1)` — and swap positions `i` and `j`. This is
//!    spelled out (rather than `SliceRandom::shuffle`) so that the permutation does not
//!    depend on the version of `rand`.
//! 3. Place the shuffled ids on a ring and connect each to its `k/2` predecessors and `k/2`
//!    successors ("random Harary graph"). `k` must be even, unless `k >= n-1`, in which case
//!    the graph is complete.
//!
//! **Invariant:** the relation is symmetric, irreflexive and every node has exactly
//! [`NeighbourGraph::degree`] neighbours.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use thiserror::Error;

/// Reasons a neighbour graph cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum GraphError {
    #[error("no participants")]
    Empty,
    #[error("participant {id} listed twice")]
    DuplicateParticipant { id: u32 },
    #[error("degree k = {k} must be even when smaller than n - 1 = {max}")]
    OddDegree { k: usize, max: usize },
    #[error("degree k = 0 leaves {n} participants without neighbours")]
    ZeroDegree { n: usize },
}

/// A k-regular neighbour graph over a sorted set of participant ids.
#[derive(Clone, Debug)]
pub struct NeighbourGraph {
    /// Sorted ascending.
    participants: Vec<u32>,
    degree: usize,
    /// Neighbours of `participants[i]` at `adjacency[i * degree .. (i + 1) * degree]`,
    /// each slice sorted ascending.
    adjacency: Vec<u32>,
}

/// Uniform index in `0..bound` (bound >= 1) by rejection sampling, as in the module doc.
fn uniform_below(rng: &mut ChaCha20Rng, bound: u64) -> u64 {
    let zone = u64::MAX / bound * bound;
    loop {
        let r = rng.next_u64();
        if r < zone {
            return r % bound;
        }
    }
}

impl NeighbourGraph {
    /// Builds the graph for `participants` (any order, no duplicates) with degree `k` from
    /// the round's `seed`; see the module doc for the exact construction.
    ///
    /// Errors: no participants, a duplicate id, `k == 0` with more than one participant,
    /// odd `k < n - 1`.
    pub fn new(participants: &[u32], k: usize, seed: &[u8; 32]) -> Result<Self, GraphError> {
        if participants.is_empty() {
            return Err(GraphError::Empty);
        }
        let mut sorted = participants.to_vec();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(GraphError::DuplicateParticipant { id: w[0] });
        }
        let n = sorted.len();
        if n > 1 && k == 0 {
            return Err(GraphError::ZeroDegree { n });
        }
        if k >= n - 1 {
            let degree = n - 1;
            let mut adjacency = Vec::with_capacity(n * degree);
            for &id in &sorted {
                adjacency.extend(sorted.iter().copied().filter(|&v| v != id));
            }
            return Ok(NeighbourGraph {
                participants: sorted,
                degree,
                adjacency,
            });
        }
        if k % 2 != 0 {
            return Err(GraphError::OddDegree { k, max: n - 1 });
        }

        let mut ring = sorted.clone();
        let mut rng = ChaCha20Rng::from_seed(*seed);
        for i in (1..n).rev() {
            let j = uniform_below(&mut rng, i as u64 + 1) as usize;
            ring.swap(i, j);
        }

        // position on the ring of sorted[idx]
        let mut position = vec![0usize; n];
        for (pos, id) in ring.iter().enumerate() {
            if let Ok(idx) = sorted.binary_search(id) {
                position[idx] = pos;
            }
        }
        let half = k / 2;
        let mut adjacency = Vec::with_capacity(n * k);
        for &pos in &position {
            let start = adjacency.len();
            for d in 1..=half {
                adjacency.push(ring[(pos + n - d) % n]);
                adjacency.push(ring[(pos + d) % n]);
            }
            adjacency[start..].sort_unstable();
        }
        Ok(NeighbourGraph {
            participants: sorted,
            degree: k,
            adjacency,
        })
    }

    /// The neighbours of `id`, sorted ascending and never containing `id`; `None` if `id`
    /// is not a participant.
    pub fn neighbours(&self, id: u32) -> Option<&[u32]> {
        let idx = self.participants.binary_search(&id).ok()?;
        self.adjacency
            .get(idx * self.degree..(idx + 1) * self.degree)
    }

    /// Whether `a` and `b` are neighbours.
    pub fn are_neighbours(&self, a: u32, b: u32) -> bool {
        self.neighbours(a)
            .is_some_and(|ns| ns.binary_search(&b).is_ok())
    }

    /// Number of neighbours of every node.
    pub fn degree(&self) -> usize {
        self.degree
    }

    /// All participants, sorted ascending.
    pub fn participants(&self) -> &[u32] {
        &self.participants
    }

    /// Whether every participant neighbours every other.
    pub fn is_complete(&self) -> bool {
        self.degree + 1 == self.participants.len()
    }
}

/// The SecAgg+ recommendation: k ≈ 2·log2(n), rounded up to an even number, capped at n-1.
pub fn recommended_degree(n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let k = (2.0 * (n as f64).log2()).ceil() as usize;
    let k = k + k % 2;
    k.min(n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u32) -> Vec<u32> {
        // Not contiguous and not sorted, to exercise the sorting.
        (0..n).rev().map(|i| i * 7 + 3).collect()
    }

    fn check_regular_symmetric(g: &NeighbourGraph, k: usize) {
        for &u in g.participants() {
            let ns = g.neighbours(u).unwrap();
            assert_eq!(ns.len(), k, "degree of {u}");
            assert!(ns.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
            assert!(!ns.contains(&u), "self loop at {u}");
            for &v in ns {
                assert!(
                    g.neighbours(v).unwrap().contains(&u),
                    "{u}-{v} not symmetric"
                );
            }
        }
    }

    #[test]
    fn regular_and_symmetric_for_many_sizes() {
        let seed = [9u8; 32];
        for n in [2u32, 3, 10, 100, 1000] {
            let k = recommended_degree(n as usize);
            let g = NeighbourGraph::new(&ids(n), k, &seed).unwrap();
            assert_eq!(g.degree(), k);
            assert_eq!(g.participants().len(), n as usize);
            assert!(g.participants().windows(2).all(|w| w[0] < w[1]));
            check_regular_symmetric(&g, k);
            for k in [2usize, 4, 6] {
                if k < n as usize - 1 {
                    let g = NeighbourGraph::new(&ids(n), k, &seed).unwrap();
                    assert!(!g.is_complete());
                    check_regular_symmetric(&g, k);
                }
            }
        }
        assert_eq!(recommended_degree(1000), 20);
        assert_eq!(recommended_degree(100), 14);
        assert_eq!(recommended_degree(10), 8);
        assert_eq!(recommended_degree(3), 2);
        assert_eq!(recommended_degree(2), 1);
        assert_eq!(recommended_degree(1), 0);
    }

    #[test]
    fn deterministic_per_seed_and_different_across_seeds() {
        let p = ids(100);
        let a = NeighbourGraph::new(&p, 6, &[1; 32]).unwrap();
        let mut shuffled = p.clone();
        shuffled.rotate_left(37);
        let a2 = NeighbourGraph::new(&shuffled, 6, &[1; 32]).unwrap();
        let b = NeighbourGraph::new(&p, 6, &[2; 32]).unwrap();
        assert_eq!(a.adjacency, a2.adjacency, "input order must not matter");
        assert_ne!(a.adjacency, b.adjacency);
        // Not just the identity ring: the first id's neighbours are not its sorted
        // neighbours.
        let sorted_ring_neighbours = |g: &NeighbourGraph| {
            let ps = g.participants();
            ps.iter()
                .enumerate()
                .all(|(i, &u)| g.are_neighbours(u, ps[(i + 1) % ps.len()]))
        };
        assert!(!sorted_ring_neighbours(&a) || !sorted_ring_neighbours(&b));
    }

    #[test]
    fn pinned_small_graph() {
        // Pins the construction (shuffle + ring) so that it cannot change silently: every
        // peer and the coordinator must agree on it.
        let g = NeighbourGraph::new(&[1, 2, 3, 4, 5, 6], 2, &[0; 32]).unwrap();
        let got: Vec<Vec<u32>> = (1..=6).map(|u| g.neighbours(u).unwrap().to_vec()).collect();
        assert_eq!(
            got,
            PINNED_6_2_ZERO_SEED
                .iter()
                .map(|v| v.to_vec())
                .collect::<Vec<_>>()
        );
    }
    // Ring order 1-3-6-5-2-4-(1).
    const PINNED_6_2_ZERO_SEED: [[u32; 2]; 6] = [[3, 4], [4, 5], [1, 6], [1, 2], [2, 6], [3, 5]];

    #[test]
    fn complete_when_k_at_least_n_minus_one() {
        for (n, k) in [(2u32, 1usize), (2, 5), (3, 2), (3, 3), (10, 9), (10, 100)] {
            let g = NeighbourGraph::new(&ids(n), k, &[0; 32]).unwrap();
            assert!(g.is_complete(), "n={n} k={k}");
            assert_eq!(g.degree(), n as usize - 1);
            check_regular_symmetric(&g, n as usize - 1);
        }
        let single = NeighbourGraph::new(&[42], 0, &[0; 32]).unwrap();
        assert!(single.is_complete());
        assert_eq!(single.neighbours(42), Some(&[][..]));
        assert_eq!(single.neighbours(7), None);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            NeighbourGraph::new(&[], 2, &[0; 32]).err(),
            Some(GraphError::Empty)
        );
        assert_eq!(
            NeighbourGraph::new(&[1, 2, 3, 2], 2, &[0; 32]).err(),
            Some(GraphError::DuplicateParticipant { id: 2 })
        );
        assert_eq!(
            NeighbourGraph::new(&ids(10), 3, &[0; 32]).err(),
            Some(GraphError::OddDegree { k: 3, max: 9 })
        );
        assert_eq!(
            NeighbourGraph::new(&ids(10), 0, &[0; 32]).err(),
            Some(GraphError::ZeroDegree { n: 10 })
        );
    }
}
