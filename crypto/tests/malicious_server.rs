//! Must-show 3: the coordinator cannot unmask one participant. An honest client never
//! reveals both kinds of share for one peer; it refuses an Unmask request whose survivor
//! set differs from the one it signed, or is signed by fewer than t survivors, and it
//! answers at most one Unmask request.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{identity, Federation};
use fedsilo_crypto::encoding::Modulus;
use fedsilo_crypto::error::ClientError;
use fedsilo_crypto::msg::{
    survivor_set_signed_bytes, ClientMsg, ConsistencyRequest, ParticipantId, Phase, ServerMsg,
    ShareKind, UnmaskRequest, UnmaskShares,
};

const N: usize = 10;
const K: usize = 9;
const T: usize = 5;

/// A round driven honestly up to the ConsistencyCheck requests; `dropped` left after
/// ShareKeys, so U3 = everyone else.
fn at_consistency_check(seed: u64, dropped: Option<usize>) -> (Federation, Vec<ParticipantId>) {
    let mut fed = Federation::new(N, K, T, 40, Modulus::Pow32, seed);
    if let Some(i) = dropped {
        let id = fed.config.participants[i];
        fed.drop_at.insert(id, Phase::MaskedInput);
    }
    fed.start();
    fed.run_until(Phase::ConsistencyCheck);
    let survivors = fed.expected_survivors();
    (fed, survivors)
}

/// Hands `msg` to client `id`; returns its answer (if any) or its refusal.
/// (The request comes first so that it can be built from `fed` before `fed` is lent out.)
fn ask(
    msg: ServerMsg,
    fed: &mut Federation,
    id: ParticipantId,
) -> Result<Option<ClientMsg>, ClientError> {
    let client = fed.clients.get_mut(&id).expect("client");
    client.handle_message(msg, &mut fed.rng)?;
    Ok(client.poll_transmit())
}

fn consistency(fed: &Federation, survivors: &[ParticipantId]) -> ServerMsg {
    ServerMsg::ConsistencyCheck(ConsistencyRequest {
        ctx: fed.config.ctx.clone(),
        survivors: survivors.to_vec(),
    })
}

fn unmask(
    fed: &Federation,
    survivors: &[ParticipantId],
    signatures: &[(ParticipantId, Vec<u8>)],
) -> ServerMsg {
    ServerMsg::Unmask(UnmaskRequest {
        ctx: fed.config.ctx.clone(),
        survivors: survivors.to_vec(),
        signatures: signatures.to_vec(),
    })
}

/// Every survivor signs `survivors`; returns the signatures.
fn sign_all(
    fed: &mut Federation,
    signers: &[ParticipantId],
    survivors: &[ParticipantId],
) -> Vec<(ParticipantId, Vec<u8>)> {
    let msg = consistency(fed, survivors);
    signers
        .iter()
        .map(|&id| match ask(msg.clone(), fed, id) {
            Ok(Some(ClientMsg::ConsistencySignature(s))) => (id, s.signature),
            other => panic!("{id} did not sign: {other:?}"),
        })
        .collect()
}

fn kinds_revealed(msgs: &[UnmaskShares]) -> BTreeMap<ParticipantId, BTreeSet<ShareKind>> {
    let mut kinds: BTreeMap<ParticipantId, BTreeSet<ShareKind>> = BTreeMap::new();
    for m in msgs {
        for s in &m.shares {
            kinds.entry(s.owner).or_default().insert(s.kind);
        }
    }
    kinds
}

#[test]
fn a_second_unmask_request_is_refused() {
    let (mut fed, u3) = at_consistency_check(1, None);
    let sigs = sign_all(&mut fed, &u3.clone(), &u3);
    let a = u3[0];
    let first = ask(unmask(&fed, &u3, &sigs), &mut fed, a).expect("valid request");
    let Some(ClientMsg::UnmaskShares(first)) = first else {
        panic!("no shares")
    };
    assert_eq!(first.shares.len(), K, "one share per neighbour");
    assert!(first.shares.iter().all(|s| s.kind == ShareKind::SelfMask));
    assert!(fed.clients[&a].is_done());

    // The server now claims peer v dropped and asks again: the client has nothing to say.
    let v = u3[1];
    let claimed: Vec<_> = u3.iter().copied().filter(|&x| x != v).collect();
    let err = ask(unmask(&fed, &claimed, &sigs), &mut fed, a).expect_err("second Unmask");
    assert!(
        matches!(
            err,
            ClientError::UnexpectedMessage {
                expected: None,
                got: Phase::Unmask
            }
        ),
        "{err}"
    );
    // Even the identical request again.
    let err = ask(unmask(&fed, &u3, &sigs), &mut fed, a).expect_err("second Unmask");
    assert!(
        matches!(err, ClientError::UnexpectedMessage { expected: None, .. }),
        "{err}"
    );
    assert!(fed
        .clients
        .get_mut(&a)
        .expect("client")
        .poll_transmit()
        .is_none());
}

#[test]
fn claiming_a_live_peer_dropped_is_refused() {
    let (mut fed, u3) = at_consistency_check(2, None);
    let sigs = sign_all(&mut fed, &u3.clone(), &u3);
    let (b, v) = (u3[2], u3[5]);
    let claimed: Vec<_> = u3.iter().copied().filter(|&x| x != v).collect();
    let err = ask(unmask(&fed, &claimed, &sigs), &mut fed, b).expect_err("changed set");
    assert!(matches!(err, ClientError::SurvivorSetChanged), "{err}");
    // The client left the round: it reveals nothing, not even for the signed set.
    assert!(fed.clients[&b].is_done());
    let err = ask(unmask(&fed, &u3, &sigs), &mut fed, b).expect_err("after refusal");
    assert!(
        matches!(err, ClientError::UnexpectedMessage { expected: None, .. }),
        "{err}"
    );

    // It also refuses to sign twice: once it signed U3 it cannot be asked to sign U3 \ {v}.
    let c = u3[3];
    let err = ask(consistency(&fed, &claimed), &mut fed, c).expect_err("second ConsistencyCheck");
    assert!(
        matches!(
            err,
            ClientError::UnexpectedMessage {
                expected: Some(Phase::Unmask),
                got: Phase::ConsistencyCheck
            }
        ),
        "{err}"
    );
}

#[test]
fn survivor_set_signed_by_fewer_than_t_is_refused() {
    // One participant dropped after ShareKeys: U3 has 9 members, `outsider` is not in it.
    let (mut fed, u3) = at_consistency_check(3, Some(4));
    let outsider = fed.config.participants[4];
    assert!(!u3.contains(&outsider));
    let signers: Vec<_> = u3[..T - 1].to_vec();
    let mut sigs = sign_all(&mut fed, &signers, &u3);
    // None of these may count:
    let ctx = fed.config.ctx.clone();
    let bytes = survivor_set_signed_bytes(&ctx, &u3);
    sigs.push(sigs[1].clone()); // the same signer twice
    sigs.push((outsider, identity(outsider).sign(&bytes))); // a non-survivor's signature
    sigs.push((u3[6], vec![0x55; 64])); // a forgery
    let other_set: Vec<_> = u3[1..].to_vec();
    sigs.push((
        u3[7],
        identity(u3[7]).sign(&survivor_set_signed_bytes(&ctx, &other_set)),
    )); // another set
    let mut other_round = ctx.clone();
    other_round.round += 1;
    sigs.push((
        u3[8],
        identity(u3[8]).sign(&survivor_set_signed_bytes(&other_round, &u3)),
    )); // another round
    sigs.push((4242, vec![1; 64])); // not even a participant

    let a = u3[0]; // signed, and its own signature is among the t - 1
    let err = ask(unmask(&fed, &u3, &sigs), &mut fed, a).expect_err("t - 1 signatures");
    assert!(
        matches!(err, ClientError::SurvivorSetNotSigned { have: 4, need: 5 }),
        "{err}"
    );
    assert!(fed.clients[&a].is_done());

    // One more genuine signature and a fresh client (that signed too) accepts.
    let extra = sign_all(&mut fed, &[u3[5]], &u3);
    sigs.extend(extra);
    let b = u3[5];
    let ok = ask(unmask(&fed, &u3, &sigs), &mut fed, b).expect("t signatures");
    let Some(ClientMsg::UnmaskShares(m)) = ok else {
        panic!("no shares")
    };
    // It reveals the mask key of the dropped outsider and self-mask seeds of the rest.
    for s in &m.shares {
        let want = if s.owner == outsider {
            ShareKind::MaskKey
        } else {
            ShareKind::SelfMask
        };
        assert_eq!(s.kind, want, "owner {}", s.owner);
    }
}

#[test]
fn consistency_requests_that_exclude_the_client_or_are_malformed_are_refused() {
    let (mut fed, u3) = at_consistency_check(4, None);
    let a = u3[0];
    let without_a: Vec<_> = u3[1..].to_vec();
    let err = ask(consistency(&fed, &without_a), &mut fed, a).expect_err("missing self");
    assert!(matches!(err, ClientError::MissingSelf), "{err}");

    let b = u3[1];
    let mut unsorted = u3.clone();
    unsorted.swap(0, 1);
    let err = ask(consistency(&fed, &unsorted), &mut fed, b).expect_err("unsorted");
    assert!(matches!(err, ClientError::MalformedSurvivorSet), "{err}");

    let c = u3[2];
    let mut with_stranger = u3.clone();
    with_stranger.push(9999);
    let err = ask(consistency(&fed, &with_stranger), &mut fed, c).expect_err("stranger");
    assert!(matches!(err, ClientError::MalformedSurvivorSet), "{err}");

    let d = u3[3];
    let tiny = vec![u3[0], d];
    let err = ask(consistency(&fed, &tiny), &mut fed, d).expect_err("below t");
    assert!(
        matches!(
            err,
            ClientError::BelowThreshold {
                phase: Phase::ConsistencyCheck,
                have: 2,
                need: 5
            }
        ),
        "{err}"
    );
}

#[test]
fn a_signature_the_client_did_not_make_is_refused() {
    let (mut fed, u3) = at_consistency_check(5, None);
    let mut sigs = sign_all(&mut fed, &u3.clone(), &u3);
    let a = u3[0];
    // Replace a's own signature with a (valid!) signature on another set.
    let other: Vec<_> = u3[1..].to_vec();
    sigs[0] = (
        a,
        identity(a).sign(&survivor_set_signed_bytes(&fed.config.ctx, &other)),
    );
    let err = ask(unmask(&fed, &u3, &sigs), &mut fed, a).expect_err("own signature forged");
    assert!(matches!(err, ClientError::OwnSignatureMismatch), "{err}");
}

/// An equivocating server shows one survivor set to one group and another (claiming v
/// dropped) to the rest. t > k/2, so at most one group reaches t signatures: the server
/// gets v's self-mask shares or v's mask-key shares, never both.
#[test]
fn an_equivocating_server_never_gets_both_shares_of_a_peer() {
    let (mut fed, u3) = at_consistency_check(6, None);
    let v = u3[9];
    let claimed: Vec<_> = u3.iter().copied().filter(|&x| x != v).collect();
    let g1: Vec<_> = u3[..T].to_vec(); // sees U3 (v alive)
    let g2: Vec<_> = u3[T..9].to_vec(); // sees U3 \ {v} (v "dropped")
    let sigs1 = sign_all(&mut fed, &g1, &u3);
    let sigs2 = sign_all(&mut fed, &g2, &claimed);
    let mut all_sigs = sigs1.clone();
    all_sigs.extend(sigs2.clone());

    let mut revealed = Vec::new();
    for &id in &g1 {
        match ask(unmask(&fed, &u3, &all_sigs), &mut fed, id) {
            Ok(Some(ClientMsg::UnmaskShares(m))) => revealed.push(m),
            other => panic!("{id}: {other:?}"),
        }
    }
    for &id in &g2 {
        let err =
            ask(unmask(&fed, &claimed, &all_sigs), &mut fed, id).expect_err("4 < t signatures");
        assert!(
            matches!(err, ClientError::SurvivorSetNotSigned { have: 4, need: 5 }),
            "{err}"
        );
    }
    let kinds = kinds_revealed(&revealed);
    assert_eq!(kinds[&v], BTreeSet::from([ShareKind::SelfMask]));
    for (owner, k) in &kinds {
        assert_eq!(k.len(), 1, "both kinds revealed for {owner}");
    }
}

/// Over complete honest rounds with dropouts, no owner ever has both kinds revealed.
#[test]
fn honest_rounds_never_reveal_both_kinds() {
    for seed in 0..4 {
        let mut fed = Federation::new(N, K, T, 16, Modulus::Pow64, 60 + seed);
        let ids = fed.config.participants.clone();
        fed.drop_at.insert(ids[seed as usize], Phase::MaskedInput);
        fed.drop_at.insert(ids[seed as usize + 3], Phase::Unmask);
        fed.start();
        let out = fed.run().expect("round succeeds");
        fed.assert_exact(&out);
        let msgs: Vec<UnmaskShares> = fed
            .delivered
            .iter()
            .filter_map(|(_, m)| match m {
                ClientMsg::UnmaskShares(u) => Some(u.clone()),
                _ => None,
            })
            .collect();
        assert!(!msgs.is_empty());
        let kinds = kinds_revealed(&msgs);
        assert_eq!(
            kinds[&ids[seed as usize]],
            BTreeSet::from([ShareKind::MaskKey])
        );
        for (owner, k) in kinds {
            assert_eq!(k.len(), 1, "owner {owner}");
        }
    }
}
