//! Messages are bound to their round: every client message is signed by the sender's roster
//! key over (job, round, phase, sender, content digest), and the server checks the signature
//! before the message touches the round's state. A message replayed from an earlier round
//! or another job and relabelled, one altered after signing, and one signed by someone else
//! are refused naming the sender; the sender's genuine message, arriving after, is accepted
//! and the sum stays exact.

mod common;

use std::collections::BTreeMap;

use common::{random_vec, Federation};
use fedsilo_crypto::encoding::Modulus;
use fedsilo_crypto::error::{Misbehaviour, ProtocolError};
use fedsilo_crypto::msg::{ClientMsg, ParticipantId, Phase, RoundConfig, RoundContext};
use fedsilo_crypto::server::ServerEvent;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const PHASES: [Phase; 5] = [
    Phase::AdvertiseKeys,
    Phase::ShareKeys,
    Phase::MaskedInput,
    Phase::ConsistencyCheck,
    Phase::Unmask,
];

/// 10 participants, complete graph (k = 9), t = 5, 24 elements: the same ids, identity keys
/// and graph whatever the context, fresh inputs from `seed`.
fn federation(ctx: RoundContext, seed: u64) -> Federation {
    let template = Federation::new(10, 9, 5, 24, Modulus::Pow32, 11);
    let config = RoundConfig {
        ctx,
        ..template.config.clone()
    };
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let inputs = config
        .participants
        .iter()
        .map(|&id| (id, random_vec(&mut rng, config.modulus, config.vector_len)))
        .collect();
    Federation::with_inputs(config, inputs, rng)
}

fn ctx(job: &str, round: u64) -> RoundContext {
    RoundContext {
        job_id: job.into(),
        round,
    }
}

fn relabel(m: &mut ClientMsg, to: &RoundContext) {
    let ctx = match m {
        ClientMsg::AdvertiseKeys(m) => &mut m.ctx,
        ClientMsg::ShareKeys(m) => &mut m.ctx,
        ClientMsg::MaskedInput(m) => &mut m.ctx,
        ClientMsg::ConsistencySignature(m) => &mut m.ctx,
        ClientMsg::UnmaskShares(m) => &mut m.ctx,
    };
    *ctx = to.clone();
}

/// What a forged message of `phase` is refused as: the two messages signed before this
/// change keep their `BadSignature`; the three newly signed ones name their phase.
fn bad_signature(phase: Phase) -> Misbehaviour {
    match phase {
        Phase::AdvertiseKeys | Phase::ConsistencyCheck => Misbehaviour::BadSignature,
        phase => Misbehaviour::BadMessageSignature { phase },
    }
}

fn refused_as(r: Result<(), ProtocolError>, from: ParticipantId) -> Misbehaviour {
    match r {
        Err(ProtocolError::PeerMisbehaved { from: f, kind }) if f == from => kind,
        other => panic!("expected a refusal naming {from}, got {other:?}"),
    }
}

/// Each participant's message of `phase` in round 3 of job "credit-risk".
fn round_3_messages(phase: Phase) -> BTreeMap<ParticipantId, ClientMsg> {
    let mut fed = federation(ctx("credit-risk", 3), 1);
    fed.start();
    fed.messages_at(phase).into_iter().collect()
}

/// A round-3 message relabelled as round 4 (or as the same round of another job) and sent
/// ahead of the genuine one is refused naming the sender, is reported, does not count as
/// the sender's answer, and the round ends with the exact sum.
#[test]
fn relabelled_replays_are_refused_and_the_genuine_message_is_accepted() {
    for phase in PHASES {
        let old = round_3_messages(phase);
        for target in [ctx("credit-risk", 4), ctx("other-job", 3)] {
            let mut fed = federation(target.clone(), 2);
            fed.start();
            let msgs = fed.messages_at(phase);
            // Every sender replays first: then no honest message of the phase has been
            // accepted when the replays arrive, and a replay counted as an answer would
            // close the phase early or make the genuine one a duplicate.
            for (from, _) in &msgs {
                let mut replay = old[from].clone();
                relabel(&mut replay, &target);
                let kind = refused_as(fed.deliver_to_server(*from, replay), *from);
                assert_eq!(kind, bad_signature(phase), "{phase} replayed into {target}");
            }
            assert_eq!(fed.refusals.len(), msgs.len(), "{phase}: one report each");
            assert!(fed.refusals.iter().zip(&msgs).all(|((f, e), (from, _))| f == from
                && matches!(e, ProtocolError::PeerMisbehaved { kind, .. } if *kind == bad_signature(phase))));
            assert_eq!(fed.server.phase(), Some(phase), "no replay closed {phase}");
            for (from, m) in msgs {
                fed.deliver_to_server(from, m)
                    .unwrap_or_else(|e| panic!("{phase}: genuine message of {from} refused: {e}"));
            }
            let out = fed.run().expect("the round goes on");
            fed.assert_exact(&out);
            assert_eq!(out.survivors.len(), 10);
        }
    }
}

/// The case of the report: one participant's round-3 masked input, relabelled as round 4,
/// is the only thing wrong. Without the signature it would be summed in place of the
/// genuine one (same length, same ring) and the sum would be garbage.
#[test]
fn relabelled_masked_input_ahead_of_the_genuine_one_does_not_change_the_sum() {
    let old = round_3_messages(Phase::MaskedInput);
    let mut fed = federation(ctx("credit-risk", 4), 2);
    fed.start();
    let msgs = fed.messages_at(Phase::MaskedInput);
    let (a, genuine) = msgs[0].clone();
    let mut replay = old[&a].clone();
    relabel(&mut replay, &fed.config.ctx.clone());
    assert_eq!(
        replay.wire_size(),
        genuine.wire_size(),
        "indistinguishable by shape"
    );
    let kind = refused_as(fed.deliver_to_server(a, replay), a);
    assert_eq!(
        kind,
        Misbehaviour::BadMessageSignature {
            phase: Phase::MaskedInput
        }
    );
    assert!(kind.to_string().contains("masked_input"), "{kind}");
    for (from, m) in msgs {
        fed.deliver_to_server(from, m).expect("genuine");
    }
    let out = fed.run().expect("the round goes on");
    fed.assert_exact(&out);
    let refusals: Vec<_> = fed
        .events
        .iter()
        .filter(|e| matches!(e, ServerEvent::Refused { .. }))
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
}

/// A message changed after it was signed (in transit, or by whoever holds only the TLS
/// certificate) and a message signed with another participant's key are refused in every
/// phase that signs its content; the genuine messages then go through.
#[test]
fn altered_or_misattributed_messages_are_refused() {
    let mut fed = federation(ctx("credit-risk", 4), 3);
    fed.start();
    let ids = fed.config.participants.clone();
    let (a, b) = (ids[0], ids[1]);
    for phase in [Phase::ShareKeys, Phase::MaskedInput, Phase::Unmask] {
        let msgs = fed.messages_at(phase);
        let genuine: BTreeMap<_, _> = msgs.iter().cloned().collect();
        let want = Misbehaviour::BadMessageSignature { phase };

        // One bit of the content flipped, signature kept.
        let mut altered = genuine[&a].clone();
        match &mut altered {
            ClientMsg::ShareKeys(m) => m.shares[0].ciphertext[3] ^= 1,
            ClientMsg::MaskedInput(m) => match &mut m.masked {
                fedsilo_crypto::encoding::RingVec::U32(v) => v[7] ^= 1,
                fedsilo_crypto::encoding::RingVec::U64(v) => v[7] ^= 1,
            },
            ClientMsg::UnmaskShares(m) => m.shares[0].share.y[0] ^= 1,
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(refused_as(fed.deliver_to_server(a, altered), a), want);

        // b's genuine message, presented as a's (a's id, b's signature).
        let mut stolen = genuine[&b].clone();
        match &mut stolen {
            ClientMsg::ShareKeys(m) => {
                m.from = a;
                m.shares.iter_mut().for_each(|s| s.from = a);
            }
            ClientMsg::MaskedInput(m) => m.from = a,
            ClientMsg::UnmaskShares(m) => m.from = a,
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            refused_as(fed.deliver_to_server(a, stolen.clone()), a),
            want
        );

        // a's content signed with b's key.
        stolen.sign(&fed.identities[&b]);
        assert_eq!(refused_as(fed.deliver_to_server(a, stolen), a), want);

        // No signature at all (an old client).
        let mut unsigned = genuine[&a].clone();
        match &mut unsigned {
            ClientMsg::ShareKeys(m) => m.signature.clear(),
            ClientMsg::MaskedInput(m) => m.signature.clear(),
            ClientMsg::UnmaskShares(m) => m.signature.clear(),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(refused_as(fed.deliver_to_server(a, unsigned), a), want);

        assert_eq!(fed.server.phase(), Some(phase));
        for (from, m) in msgs {
            fed.deliver_to_server(from, m)
                .unwrap_or_else(|e| panic!("{phase}: genuine message of {from} refused: {e}"));
        }
    }
    let out = fed.run().expect("the round goes on");
    fed.assert_exact(&out);
    assert_eq!(out.survivors, ids);
    assert_eq!(fed.refusals.len(), 12, "{:?}", fed.refusals);
    assert!(fed.refusals.iter().all(|(f, _)| *f == a));
}

/// In transit, with no re-signing: a tampered masked input is refused and its sender is
/// treated as dropped (its genuine message never arrives), so the sum is the exact sum of
/// the others — never a wrong one.
#[test]
fn tampering_in_transit_drops_the_sender_instead_of_spoiling_the_sum() {
    let mut fed = federation(ctx("credit-risk", 4), 4);
    let victim = fed.config.participants[3];
    fed.sign_tampered = false;
    fed.tamper_client = Some(Box::new(move |from, m| {
        if let (true, ClientMsg::MaskedInput(mi)) = (from == victim, m) {
            if let fedsilo_crypto::encoding::RingVec::U32(v) = &mut mi.masked {
                v[0] = v[0].wrapping_add(1);
            }
        }
    }));
    fed.start();
    let out = fed.run().expect("9 of 10 remain, t = 5");
    assert!(!out.survivors.contains(&victim));
    assert!(
        out.sum == fed.expected_sum(&out.survivors),
        "exact sum of the survivors"
    );
    assert_eq!(out.dropped, vec![(victim, Phase::MaskedInput)]);
    assert!(
        matches!(
            fed.refusals.as_slice(),
            [(f, ProtocolError::PeerMisbehaved { kind: Misbehaviour::BadMessageSignature { phase: Phase::MaskedInput }, .. })] if *f == victim
        ),
        "{:?}",
        fed.refusals
    );
}
