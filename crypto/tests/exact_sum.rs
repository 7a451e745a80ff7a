//! Must-show 1: the unmasked sum is bit-exact — equal to the plain wrapping sum of the
//! survivors' encoded inputs — for n ∈ {2, 3, 10, 100}, both moduli, random inputs, with
//! the SecAgg+ degree and with complete graphs.

mod common;

use common::Federation;
use fedsilo_crypto::encoding::{FixedPoint, Modulus};
use fedsilo_crypto::graph::recommended_degree;
use fedsilo_crypto::msg::Phase;
use proptest::prelude::*;

/// `(k, t)` for `n` participants: the SecAgg+ degree or the complete graph, t = k/2 + 1.
fn degree(n: usize, complete: bool) -> (usize, usize) {
    let k = if complete {
        n - 1
    } else {
        recommended_degree(n)
    };
    (k, k / 2 + 1)
}

fn modulus() -> impl Strategy<Value = Modulus> {
    prop_oneof![Just(Modulus::Pow32), Just(Modulus::Pow64)]
}

fn exact_round(n: usize, complete: bool, modulus: Modulus, len: usize, seed: u64) {
    let (k, t) = degree(n, complete);
    let mut fed = Federation::new(n, k, t, len, modulus, seed);
    fed.start();
    let out = fed.run().expect("round without dropouts succeeds");
    fed.assert_exact(&out);
    assert_eq!(out.survivors.len(), n);
    assert!(out.dropped.is_empty());
    assert_eq!(out.reconstructed_self_masks, n);
    assert_eq!(out.reconstructed_mask_keys, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn small_federations_sum_exactly(
        n in prop_oneof![Just(2usize), Just(3), Just(10)],
        complete in any::<bool>(),
        modulus in modulus(),
        len in 1usize..300,
        seed in any::<u64>(),
    ) {
        exact_round(n, complete, modulus, len, seed);
    }
}

proptest! {
    // n = 100: a few cases only (each is a full round with 100 clients).
    #![proptest_config(ProptestConfig { cases: 2, ..ProptestConfig::default() })]

    #[test]
    fn hundred_participants_sum_exactly(
        complete in any::<bool>(),
        modulus in modulus(),
        len in 1usize..2000,
        seed in any::<u64>(),
    ) {
        exact_round(100, complete, modulus, len, seed);
    }
}

/// Every combination named in the requirement at least once, deterministically (the
/// proptests above sample them).
#[test]
fn every_size_modulus_and_graph_once() {
    for n in [2, 3, 10, 100] {
        for complete in [false, true] {
            for modulus in [Modulus::Pow32, Modulus::Pow64] {
                exact_round(n, complete, modulus, 257, n as u64 * 31 + complete as u64);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// With dropouts too: the sum is exactly the survivors' (with the pairwise masks of the
    /// dropped removed) for random dropout patterns that keep every neighbourhood above t.
    #[test]
    fn sum_is_exact_with_random_dropouts(
        modulus in modulus(),
        seed in any::<u64>(),
        drops in proptest::collection::btree_map(0usize..30, 0usize..5, 0..4),
    ) {
        let n = 30;
        let (k, t) = degree(n, false);
        prop_assume!(drops.len() < k - t);
        let mut fed = Federation::new(n, k, t, 64, modulus, seed);
        let phases = [Phase::AdvertiseKeys, Phase::ShareKeys, Phase::MaskedInput,
                      Phase::ConsistencyCheck, Phase::Unmask];
        for (i, p) in drops {
            let id = fed.config.participants[i];
            fed.drop_at.insert(id, phases[p]);
        }
        fed.start();
        let out = fed.run().expect("at most k - t - 1 dropouts in all keep every neighbourhood above t");
        fed.assert_exact(&out);
    }
}

/// The encoded float inputs of a real use: the decoded sum matches the float sum.
#[test]
fn fixed_point_inputs_decode_to_the_float_sum() {
    let n = 10;
    let (k, t) = degree(n, false);
    let fp = FixedPoint::choose(1.0, n as u32).expect("fits");
    let mut fed = Federation::new(n, k, t, 50, fp.modulus, 9);
    let floats: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..50)
                .map(|j| ((i * 50 + j) as f64 * 0.37).sin())
                .collect()
        })
        .collect();
    for (id, f) in fed.config.participants.clone().iter().zip(&floats) {
        fed.inputs.insert(*id, fp.encode(f).expect("in range"));
    }
    fed.start();
    let out = fed.run().expect("round succeeds");
    fed.assert_exact(&out);
    let decoded = fp.decode_sum(&out.sum, n).expect("decodes");
    for (j, d) in decoded.iter().enumerate() {
        let want: f64 = floats.iter().map(|f| f[j]).sum();
        assert!((d - want).abs() <= n as f64 * 2f64.powi(-(fp.frac_bits as i32)));
    }
}
