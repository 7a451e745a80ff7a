//! Must-show 2: dropouts in every phase, up to what the threshold tolerates, give exactly
//! the survivors' sum; one more gives `BelowThreshold` / `ReconstructionBelowThreshold`,
//! never a wrong sum.
//!
//! Phases are named by the message the participant fails to send: dropping "at ShareKeys"
//! means it advertised keys but never sent its shares (so before ShareKeys completed),
//! "at MaskedInput" means after ShareKeys with no masked input, "at ConsistencyCheck"
//! means after its masked input, "at Unmask" means it signed the survivor set and then
//! vanished during Unmask.

mod common;

use common::Federation;
use fedsilo_crypto::encoding::Modulus;
use fedsilo_crypto::error::{ClientError, RoundError};
use fedsilo_crypto::graph::recommended_degree;
use fedsilo_crypto::msg::{ParticipantId, Phase, RoundConfig, ShareKind};

const PHASES: [Phase; 5] = [
    Phase::AdvertiseKeys,
    Phase::ShareKeys,
    Phase::MaskedInput,
    Phase::ConsistencyCheck,
    Phase::Unmask,
];

/// Complete graph, n = 10: k = 9, t = 5. A holder never holds its own share, so every
/// secret has 9 holders and tolerates 9 - 5 = 4 missing ones.
const N: usize = 10;
const K: usize = 9;
const T: usize = 5;

fn complete_round(
    phase: Phase,
    drops: usize,
    seed: u64,
) -> (
    Federation,
    Result<fedsilo_crypto::server::RoundOutput, RoundError>,
) {
    let mut fed = Federation::new(N, K, T, 100, Modulus::Pow32, seed);
    // Drop from the end, so the remaining ids are contiguous in the list.
    let ids = fed.config.participants.clone();
    for &id in ids.iter().rev().take(drops) {
        fed.drop_at.insert(id, phase);
    }
    fed.start();
    let r = fed.run();
    (fed, r)
}

#[test]
fn up_to_n_minus_t_minus_1_dropouts_in_any_phase_give_the_exact_sum() {
    for (i, phase) in PHASES.into_iter().enumerate() {
        for drops in 0..=N - T - 1 {
            let (fed, r) = complete_round(phase, drops, 100 + i as u64);
            let out = r.unwrap_or_else(|e| panic!("{drops} dropped at {phase}: {e}"));
            fed.assert_exact(&out);
            assert_eq!(out.dropped.len(), drops, "{phase}");
            assert!(
                out.dropped.iter().all(|(_, p)| *p == phase),
                "{phase}: {:?}",
                out.dropped
            );
            let masks_rebuilt = if phase == Phase::MaskedInput {
                drops
            } else {
                0
            };
            assert_eq!(out.reconstructed_mask_keys, masks_rebuilt, "{phase}");
            assert_eq!(out.reconstructed_self_masks, out.survivors.len());
        }
    }
}

#[test]
fn one_more_dropout_fails_the_round_with_a_typed_error() {
    for (i, phase) in PHASES.into_iter().enumerate() {
        let (fed, r) = complete_round(phase, N - T, 200 + i as u64);
        let err = r.expect_err("one dropout too many must not produce a sum");
        match phase {
            Phase::AdvertiseKeys => {
                // Each remaining client has only 4 neighbours' keys and refuses to share.
                assert_eq!(
                    err,
                    RoundError::BelowThreshold {
                        phase: Phase::ShareKeys,
                        have: 0,
                        need: T
                    }
                );
                assert_eq!(fed.client_errors.len(), N - (N - T));
                for e in fed.client_errors.values() {
                    assert!(
                        matches!(
                            e,
                            ClientError::BelowThreshold {
                                phase: Phase::ShareKeys,
                                have: 4,
                                need: T
                            }
                        ),
                        "{e}"
                    );
                }
            }
            // Nobody has t partners left who shared: the server excludes them all.
            Phase::ShareKeys => {
                assert_eq!(
                    err,
                    RoundError::BelowThreshold {
                        phase: Phase::ShareKeys,
                        have: 0,
                        need: T
                    }
                )
            }
            // U3 (or the signers, or the responders) still number t, but a survivor's
            // self-mask seed has only 4 holders left.
            _ => assert!(
                matches!(
                    err,
                    RoundError::ReconstructionBelowThreshold {
                        kind: ShareKind::SelfMask,
                        have: 4,
                        need: T,
                        ..
                    }
                ),
                "{phase}: {err}"
            ),
        }
    }
}

#[test]
fn fewer_than_t_left_in_a_phase_is_below_threshold_for_that_phase() {
    for (i, phase) in PHASES.into_iter().enumerate() {
        let (_, r) = complete_round(phase, N - T + 1, 300 + i as u64);
        let err = r.expect_err("fewer than t left");
        // The 4 who shared have only 3 partners each, so the server excludes all of them
        // before counting; in the other phases the 4 who answered are counted.
        let have = if phase == Phase::ShareKeys { 0 } else { T - 1 };
        assert_eq!(
            err,
            RoundError::BelowThreshold {
                phase,
                have,
                need: T
            },
            "{phase}"
        );
    }
}

/// SecAgg+ graph (n = 40, k = 12, t = 7): drop k - t = 5 of one participant's neighbours
/// (every participant then keeps at least t of its k neighbours) → exact; drop 6 → after
/// MaskedInput the round fails with ReconstructionBelowThreshold, before it the
/// participant left with too few partners is excluded and the sum is exact without it.
#[test]
fn sparse_graph_neighbourhood_thresholds() {
    let n = 40;
    let k = recommended_degree(n);
    assert_eq!(k, 12);
    let t = k / 2 + 1;
    let victim_neighbours = |fed: &Federation, victim: ParticipantId| -> Vec<ParticipantId> {
        let graph = RoundConfig::graph(&fed.config).expect("valid");
        graph.neighbours(victim).expect("participant").to_vec()
    };
    for (i, phase) in PHASES.into_iter().enumerate() {
        // k - t dropped among the victim's neighbours: exact.
        let mut fed = Federation::new(n, k, t, 64, Modulus::Pow64, 400 + i as u64);
        let victim = fed.config.participants[17];
        for v in victim_neighbours(&fed, victim).into_iter().take(k - t) {
            fed.drop_at.insert(v, phase);
        }
        fed.start();
        let out = fed.run().unwrap_or_else(|e| panic!("{phase}: {e}"));
        fed.assert_exact(&out);

        // One more.
        let mut fed = Federation::new(n, k, t, 64, Modulus::Pow64, 500 + i as u64);
        let victim = fed.config.participants[17];
        for v in victim_neighbours(&fed, victim).into_iter().take(k - t + 1) {
            fed.drop_at.insert(v, phase);
        }
        fed.start();
        match (phase, fed.run()) {
            (Phase::AdvertiseKeys | Phase::ShareKeys, Ok(out)) => {
                assert!(
                    !out.survivors.contains(&victim),
                    "{phase}: victim cannot be unmasked"
                );
                assert!(out.dropped.iter().any(|(id, _)| *id == victim));
                assert!(
                    out.sum == fed.expected_sum(&out.survivors),
                    "{phase}: exact without the victim"
                );
            }
            (Phase::AdvertiseKeys | Phase::ShareKeys, Err(e)) => {
                assert!(
                    matches!(e, RoundError::BelowThreshold { .. }),
                    "{phase}: {e}"
                )
            }
            (_, Err(e)) => assert!(
                matches!(
                    e,
                    RoundError::ReconstructionBelowThreshold {
                        have: 6,
                        need: 7,
                        ..
                    }
                ),
                "{phase}: {e}"
            ),
            (_, Ok(_)) => panic!("{phase}: a sum with a secret below threshold"),
        }
    }
}

/// Dropping in several phases at once (within the tolerance) is still exact, and the
/// output says who dropped when.
#[test]
fn mixed_dropouts_are_reported_with_their_phase() {
    let mut fed = Federation::new(N, K, T, 33, Modulus::Pow64, 77);
    let ids = fed.config.participants.clone();
    fed.drop_at.insert(ids[0], Phase::ShareKeys);
    fed.drop_at.insert(ids[3], Phase::MaskedInput);
    fed.drop_at.insert(ids[5], Phase::ConsistencyCheck);
    fed.drop_at.insert(ids[9], Phase::Unmask);
    fed.start();
    let out = fed.run().expect("4 dropouts of 10 with t = 5");
    fed.assert_exact(&out);
    assert_eq!(
        out.dropped,
        vec![
            (ids[0], Phase::ShareKeys),
            (ids[3], Phase::MaskedInput),
            (ids[5], Phase::ConsistencyCheck),
            (ids[9], Phase::Unmask),
        ]
    );
    assert_eq!(out.reconstructed_mask_keys, 1);
    assert!(out.survivors.contains(&ids[5]) && out.survivors.contains(&ids[9]));
}
