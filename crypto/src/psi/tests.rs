//! The PSI core driven end to end in memory, and refused against forged, garbled and
//! misplaced messages.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::msg::{self, Kind, PsiMsg, Role};
use super::*;
use crate::keys::IdentityKey;

struct Pair {
    a: PsiParty,
    p: PsiParty,
    rng: ChaCha20Rng,
}

fn config(job: &str, chunk_len: usize, delivery: Delivery) -> PsiConfig {
    PsiConfig {
        chunk_len,
        delivery,
        ..PsiConfig::new(job, 0)
    }
}

fn pair_with(cfg_a: PsiConfig, cfg_p: PsiConfig, seed: u64) -> Pair {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let ka = Arc::new(IdentityKey::generate(&mut rng));
    let kp = Arc::new(IdentityKey::generate(&mut rng));
    let (pa, pp) = (ka.public_key(), kp.public_key());
    let a = PsiParty::new(cfg_a, Role::Active, ka, pp, &mut rng).unwrap();
    let p = PsiParty::new(cfg_p, Role::Passive, kp, pa, &mut rng).unwrap();
    Pair { a, p, rng }
}

fn pair(cfg: PsiConfig, seed: u64) -> Pair {
    pair_with(cfg.clone(), cfg, seed)
}

/// Moves every queued message both ways until neither side has anything to send.
fn pump(pair: &mut Pair) -> Result<(), PsiError> {
    loop {
        let mut moved = false;
        while let Some(m) = pair.a.poll_transmit() {
            moved = true;
            pair.p.handle_message(m)?;
        }
        while let Some(m) = pair.p.poll_transmit() {
            moved = true;
            pair.a.handle_message(m)?;
        }
        if !moved {
            return Ok(());
        }
    }
}

fn push_all(party: &mut PsiParty, ids: &[String], rng: &mut ChaCha20Rng) -> Result<(), PsiError> {
    for chunk in ids.chunks(7) {
        party.push_ids(chunk)?;
    }
    party.finish_ids(rng)
}

fn run(
    cfg: PsiConfig,
    a_ids: &[String],
    p_ids: &[String],
    seed: u64,
) -> Result<(PsiOutput, PsiOutput), PsiError> {
    let mut pr = pair(cfg, seed);
    pump(&mut pr)?;
    assert!(pr.a.accepts_ids() && pr.p.accepts_ids());
    // The passive side first, so that its chunks wait for the active stream.
    push_all(&mut pr.p, p_ids, &mut pr.rng)?;
    pump(&mut pr)?;
    push_all(&mut pr.a, a_ids, &mut pr.rng)?;
    pump(&mut pr)?;
    assert!(pr.a.is_done() && pr.p.is_done(), "{:?} {:?}", pr.a, pr.p);
    Ok((
        pr.a.output().unwrap().clone(),
        pr.p.output().unwrap().clone(),
    ))
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The plain intersection of the normalised ids, keeping the first row of each id.
fn plain(format: IdFormat, a: &[String], p: &[String]) -> BTreeSet<String> {
    let norm = |v: &[String]| -> BTreeSet<String> {
        v.iter()
            .enumerate()
            .map(|(i, s)| format.normalise(i as u64, s).unwrap())
            .collect()
    };
    norm(a).intersection(&norm(p)).cloned().collect()
}

fn first_rows(format: IdFormat, v: &[String]) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for (i, s) in v.iter().enumerate() {
        m.entry(format.normalise(i as u64, s).unwrap())
            .or_insert(i as u32);
    }
    m
}

fn check(format: IdFormat, a: &[String], p: &[String], oa: &PsiOutput, op: &PsiOutput) {
    let want = plain(format, a, p);
    let ra = oa.rows.as_ref().unwrap();
    assert_eq!(oa.intersection_size, want.len() as u64);
    assert_eq!(op.intersection_size, want.len() as u64);
    assert_eq!(oa.intersection_hash, op.intersection_hash);
    let got: BTreeSet<String> = ra
        .iter()
        .map(|&r| format.normalise(0, &a[r as usize]).unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), ra.len(), "an id listed twice");
    // rows are the first row of each id (duplicates kept first)
    let fa = first_rows(format, a);
    for &r in ra {
        let id = format.normalise(0, &a[r as usize]).unwrap();
        assert_eq!(fa[&id], r);
    }
    if let Some(rp) = &op.rows {
        assert_eq!(rp.len(), ra.len());
        let fp = first_rows(format, p);
        for (&x, &y) in ra.iter().zip(rp) {
            let (ix, iy) = (
                format.normalise(0, &a[x as usize]).unwrap(),
                format.normalise(0, &p[y as usize]).unwrap(),
            );
            assert_eq!(ix, iy, "rows not aligned");
            assert_eq!(fp[&iy], y);
        }
    }
    assert_eq!(oa.own_set_size, op.peer_set_size);
    assert_eq!(op.own_set_size, oa.peer_set_size);
}

#[test]
fn small_exchange_both_and_active_only() {
    let a = ids(&["alice", " Bob", "carol", "dave", "eve@x.org"]);
    let p = ids(&[
        "EVE@x.org",
        "zed",
        "bob ",
        "yann",
        "alice",
        "xavier",
        "walt",
    ]);
    for delivery in [Delivery::Both, Delivery::ActiveOnly] {
        for chunk in [1, 2, 3, 100] {
            let (oa, op) = run(config("job-1", chunk, delivery), &a, &p, 1).unwrap();
            check(IdFormat::Text, &a, &p, &oa, &op);
            assert_eq!(oa.intersection_size, 3);
            assert_eq!((oa.own_set_size, oa.peer_set_size), (5, 7));
            assert_eq!(op.rows.is_some(), delivery == Delivery::Both);
        }
    }
}

#[test]
fn empty_disjoint_subset() {
    let e: Vec<String> = Vec::new();
    let a = ids(&["1", "2", "3"]);
    let b = ids(&["4", "5"]);
    let sup = ids(&["0", "3", "2", "1", "9"]);
    for (x, y) in [
        (&e, &e),
        (&a, &e),
        (&e, &a),
        (&a, &b),
        (&a, &sup),
        (&sup, &a),
    ] {
        for chunk in [1, 2, 8] {
            let (oa, op) = run(config("job", chunk, Delivery::Both), x, y, 2).unwrap();
            check(IdFormat::Text, x, y, &oa, &op);
        }
    }
}

#[test]
fn digits_format_strips_separators() {
    let a = ids(&["0012-3456", "99.88.77", "5"]);
    let p = ids(&["0012 3456", "998877", "05"]);
    let cfg = PsiConfig {
        format: IdFormat::Digits,
        ..config("digits", 4, Delivery::Both)
    };
    let (oa, op) = run(cfg, &a, &p, 3).unwrap();
    check(IdFormat::Digits, &a, &p, &oa, &op);
    assert_eq!(oa.intersection_size, 2, "leading zeros are kept: 5 != 05");
}

#[test]
fn duplicates_refused_by_default_named_by_rows() {
    let mut pr = pair(config("dup", 4, Delivery::Both), 4);
    pump(&mut pr).unwrap();
    let a = ids(&["x", "a", "b", "A ", "b", "c"]);
    pr.a.push_ids(&a).unwrap();
    let err = pr.a.finish_ids(&mut pr.rng).unwrap_err();
    assert_eq!(
        err,
        PsiError::DuplicateId {
            first_row: 1,
            duplicate_row: 3
        }
    );
    assert!(pr.a.has_failed());
    assert!(pr.a.poll_transmit().is_none());
}

#[test]
fn duplicates_kept_first() {
    let cfg = PsiConfig {
        duplicates: Duplicates::KeepFirst,
        ..config("dup", 2, Delivery::Both)
    };
    let a = ids(&["x", "a", "b", "A", "b", "c"]);
    let p = ids(&["b", "B", "a", "q"]);
    let (oa, op) = run(cfg, &a, &p, 5).unwrap();
    check(IdFormat::Text, &a, &p, &oa, &op);
    assert_eq!((oa.duplicates_dropped, op.duplicates_dropped), (2, 1));
    assert_eq!((oa.own_set_size, op.own_set_size), (4, 3));
}

#[test]
fn empty_and_bad_ids_name_the_lowest_row() {
    let mut pr = pair(config("bad", 4, Delivery::Both), 6);
    // before the handshake: refused, state kept
    let err = pr.a.push_ids(&["a"]).unwrap_err();
    assert!(matches!(err, PsiError::NotReady { .. }) && err.keeps_state());
    pump(&mut pr).unwrap();
    pr.a.push_ids(&["a", "b"]).unwrap();
    let err = pr.a.push_ids(&["c", "d", " ", "e", ""]).unwrap_err();
    assert_eq!(err, PsiError::Id(IdError::Empty { row: 4 }));
    assert!(pr.a.has_failed());

    let cfg = PsiConfig {
        format: IdFormat::Digits,
        ..config("bad", 4, Delivery::Both)
    };
    let mut pr = pair(cfg, 7);
    pump(&mut pr).unwrap();
    let many: Vec<String> = (0..200)
        .map(|i| {
            if i % 50 == 49 {
                format!("{i}x")
            } else {
                i.to_string()
            }
        })
        .collect();
    let err = pr.p.push_ids(&many).unwrap_err();
    assert!(
        matches!(err, PsiError::Id(IdError::NotDigits { row: 49, .. })),
        "{err}"
    );
}

#[test]
fn sent_points_are_not_plain_hashes_and_differ_between_jobs() {
    let a = ids(&["alice", "bob", "carol", "dave"]);
    let mut seen: Vec<BTreeSet<[u8; 32]>> = Vec::new();
    for (job, session, seed) in [
        ("job-1", 0, 8),
        ("job-2", 0, 8),
        ("job-1", 1, 8),
        ("job-1", 0, 9),
    ] {
        let mut pr = pair(PsiConfig::new(job, session), seed);
        pump(&mut pr).unwrap();
        let salt = pr.a.salt().unwrap();
        pr.a.push_ids(&a).unwrap();
        pr.a.finish_ids(&mut pr.rng).unwrap();
        let sent: BTreeSet<[u8; 32]> = pr.a.own_points().unwrap().into_iter().collect();
        assert_eq!(sent.len(), a.len());
        for id in &a {
            let h = hash_to_group(&salt, id).compress().to_bytes();
            assert!(!sent.contains(&h), "a sent point is the plain hash H(id)");
            // nor is it the hash without the salt
            let h0 = hash_to_group(&[0; 32], id).compress().to_bytes();
            assert!(!sent.contains(&h0));
        }
        // the relay sees only ciphertext: no sent point appears in the message bytes
        let m = pr.a.poll_transmit().unwrap();
        let PsiMsg::Sealed(s) = &m else {
            panic!("expected a sealed chunk")
        };
        for p in &sent {
            assert!(!s.ciphertext.windows(32).any(|w| w == p));
        }
        for other in &seen {
            assert!(
                other.is_disjoint(&sent),
                "encodings repeat across exchanges"
            );
        }
        seen.push(sent);
    }
}

#[test]
fn shuffled_order_does_not_follow_rows() {
    // 64 ids: the chance that the shuffle leaves the sorted-by-row order is nil, and two
    // runs with different randomness send in different orders.
    let a: Vec<String> = (0..64).map(|i| format!("id{i}")).collect();
    let mut orders = Vec::new();
    for seed in [10, 11] {
        let mut pr = pair(PsiConfig::new("order", 0), seed);
        pump(&mut pr).unwrap();
        pr.a.push_ids(&a).unwrap();
        pr.a.finish_ids(&mut pr.rng).unwrap();
        let pts = pr.a.own_points().unwrap();
        let rows = pr.a.own_rows().unwrap();
        assert_ne!(rows, (0..64).collect::<Vec<u32>>());
        let mut sorted = pts.clone();
        sorted.sort();
        assert_ne!(pts, sorted, "sent in sorted order");
        orders.push(rows);
    }
    assert_ne!(orders[0], orders[1]);
}

#[test]
fn tags_round_trip() {
    for r in [Role::Active, Role::Passive] {
        assert_eq!(Role::from_tag(r.tag()), Some(r));
        assert_eq!(r.peer().peer(), r);
    }
    for k in Kind::ALL {
        assert_eq!(Kind::from_tag(k.tag()), Some(k));
    }
    assert_eq!(Role::from_tag(0), None);
    assert_eq!(Kind::from_tag(9), None);
}

#[test]
fn batched_blinding_equals_one_by_one() {
    let mut rng = ChaCha20Rng::seed_from_u64(60);
    let b = Blinder::random(&mut rng);
    let salt = [7u8; 32];
    let ids: Vec<String> = (0..600).map(|i| format!("c{i}")).collect();
    let batch = b.encode_all(&salt, &ids);
    assert_eq!(batch.len(), ids.len());
    for (id, p) in ids.iter().zip(&batch) {
        assert_eq!(*p, b.encode(&salt, id));
    }
    let flat: Vec<u8> = batch.concat();
    let twice = b.reblind_all(&flat).unwrap();
    assert_eq!(twice.len(), batch.len());
    for (p, d) in batch.iter().zip(&twice) {
        assert_eq!(Some(*d), b.reblind(p));
    }
    // a non-point in the third batch is named by its index
    let mut bad = flat.clone();
    bad[530 * 32..531 * 32].fill(0xff);
    assert_eq!(b.reblind_all(&bad), Err(530));
    assert_eq!(b.reblind_all(&[]), Ok(Vec::new()));
}

// ---- Refusals.

/// A pair past the handshake with the active party's ids in and the passive party's too.
fn ready_pair(chunk: usize, seed: u64) -> Pair {
    let mut pr = pair(config("refuse", chunk, Delivery::Both), seed);
    pump(&mut pr).unwrap();
    let a: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    let p: Vec<String> = (5..12).map(|i| format!("a{i}")).collect();
    push_all(&mut pr.p, &p, &mut pr.rng).unwrap();
    push_all(&mut pr.a, &a, &mut pr.rng).unwrap();
    pr
}

#[test]
fn tampered_truncated_replayed_and_reordered_chunks_are_refused() {
    // flipped byte
    let mut pr = ready_pair(4, 20);
    let PsiMsg::Sealed(mut s) = pr.a.poll_transmit().unwrap() else {
        panic!()
    };
    s.ciphertext[3] ^= 1;
    let err = pr.p.handle_message(PsiMsg::Sealed(s)).unwrap_err();
    assert!(
        matches!(err, PsiError::Undecryptable { seq: 0, .. }),
        "{err}"
    );
    assert!(pr.p.has_failed());
    assert_eq!(
        pr.p.handle_message(pr.a.poll_transmit().unwrap()),
        Err(PsiError::Failed)
    );

    // truncated
    let mut pr = ready_pair(4, 21);
    let PsiMsg::Sealed(mut s) = pr.a.poll_transmit().unwrap() else {
        panic!()
    };
    s.ciphertext.truncate(s.ciphertext.len() - 33);
    assert!(matches!(
        pr.p.handle_message(PsiMsg::Sealed(s)),
        Err(PsiError::Undecryptable { .. })
    ));

    // kind relabelled: the kind is authenticated
    let mut pr = ready_pair(4, 22);
    let PsiMsg::Sealed(mut s) = pr.a.poll_transmit().unwrap() else {
        panic!()
    };
    s.kind = Kind::Result;
    assert!(matches!(
        pr.p.handle_message(PsiMsg::Sealed(s)),
        Err(PsiError::Undecryptable { .. })
    ));

    // dropped (the second arrives first) and replayed
    let mut pr = ready_pair(4, 23);
    let first = pr.a.poll_transmit().unwrap();
    let second = pr.a.poll_transmit().unwrap();
    assert_eq!(
        pr.p.handle_message(second),
        Err(PsiError::WrongSequence {
            expected: 0,
            got: 1
        })
    );
    let mut pr = ready_pair(4, 24);
    let first2 = pr.a.poll_transmit().unwrap();
    pr.p.handle_message(first2.clone()).unwrap();
    assert_eq!(
        pr.p.handle_message(first2),
        Err(PsiError::WrongSequence {
            expected: 1,
            got: 0
        })
    );
    let _ = first;

    // a message from another exchange: refused, state kept
    let mut pr = ready_pair(4, 25);
    let mut other = pair(config("other-job", 4, Delivery::Both), 25);
    pump(&mut other).unwrap();
    let m = other.a.poll_transmit();
    let hello_other = match m {
        Some(m) => m,
        None => {
            other.a.push_ids(&["z"]).unwrap();
            other.a.finish_ids(&mut other.rng).unwrap();
            other.a.poll_transmit().unwrap()
        }
    };
    let err = pr.p.handle_message(hello_other).unwrap_err();
    assert!(matches!(err, PsiError::WrongContext { .. }) && err.keeps_state());
    // the genuine exchange still completes
    pump(&mut pr).unwrap();
    assert!(pr.a.is_done() && pr.p.is_done());
}

#[test]
fn hello_refusals() {
    // a second Hello is refused, state kept
    let mut pr = pair(PsiConfig::new("h", 0), 30);
    let ha = pr.a.poll_transmit().unwrap();
    pr.p.handle_message(ha.clone()).unwrap();
    let err = pr.p.handle_message(ha).unwrap_err();
    assert!(matches!(err, PsiError::UnexpectedMessage { .. }) && err.keeps_state());

    // a Hello signed by someone else (the relay substituting its own key)
    let mut pr = pair(PsiConfig::new("h", 0), 31);
    let PsiMsg::Hello(mut h) = pr.a.poll_transmit().unwrap() else {
        panic!()
    };
    let relay = IdentityKey::generate(&mut pr.rng);
    h.ephemeral_pk = [9; 32];
    h.signature = relay.sign(&h.signed_bytes());
    assert_eq!(
        pr.p.handle_message(PsiMsg::Hello(h)),
        Err(PsiError::BadHelloSignature)
    );
    // a Hello with a short signature
    let mut pr = pair(PsiConfig::new("h", 0), 32);
    let PsiMsg::Hello(mut h) = pr.a.poll_transmit().unwrap() else {
        panic!()
    };
    h.signature.truncate(10);
    assert_eq!(
        pr.p.handle_message(PsiMsg::Hello(h)),
        Err(PsiError::BadHelloSignature)
    );
    // the own Hello reflected back
    let mut pr = pair(PsiConfig::new("h", 0), 33);
    let ha = pr.a.poll_transmit().unwrap();
    assert_eq!(
        pr.a.handle_message(ha),
        Err(PsiError::WrongSender { got: Role::Active })
    );
    // a sealed message before the handshake: refused, state kept
    let mut pr = ready_pair(4, 34);
    let sealed = pr.a.poll_transmit().unwrap();
    let mut fresh = pair(config("refuse", 4, Delivery::Both), 34);
    let err = fresh.p.handle_message(sealed).unwrap_err();
    assert!(err.keeps_state(), "{err}");

    // different id formats, delivery or chunk length
    for cfg_p in [
        PsiConfig {
            format: IdFormat::Digits,
            ..PsiConfig::new("h", 0)
        },
        PsiConfig {
            delivery: Delivery::ActiveOnly,
            ..PsiConfig::new("h", 0)
        },
        PsiConfig {
            chunk_len: 77,
            ..PsiConfig::new("h", 0)
        },
    ] {
        let mut pr = pair_with(PsiConfig::new("h", 0), cfg_p, 35);
        assert_eq!(pump(&mut pr), Err(PsiError::ConfigMismatch));
    }
    // a chunk length out of range
    let mut rng = ChaCha20Rng::seed_from_u64(36);
    let k = Arc::new(IdentityKey::generate(&mut rng));
    for len in [0, MAX_CHUNK_LEN + 1] {
        let cfg = PsiConfig {
            chunk_len: len,
            ..PsiConfig::new("h", 0)
        };
        assert!(matches!(
            PsiParty::new(cfg, Role::Active, k.clone(), [0; 32], &mut rng),
            Err(PsiError::ChunkLen { .. })
        ));
    }
}

#[test]
fn forged_contents_are_typed_errors() {
    let pt = |last: bool, pts: &[[u8; 32]]| msg::points_plaintext(last, pts.iter());
    // a point that does not decompress, in the active stream
    let mut pr = ready_pair(4, 40);
    let forged =
        pr.a.forge(Kind::Encodings, &pt(false, &[[0xff; 32]]))
            .unwrap();
    assert_eq!(
        pr.p.handle_message(forged),
        Err(PsiError::BadPoint {
            kind: Kind::Encodings,
            index: 0
        })
    );
    // a wrong-length chunk
    let mut pr = ready_pair(4, 41);
    let mut bytes = pt(false, &[[0; 32]]);
    bytes.pop();
    let forged = pr.a.forge(Kind::Encodings, &bytes).unwrap();
    assert!(matches!(
        pr.p.handle_message(forged),
        Err(PsiError::Malformed { .. })
    ));
    // a chunk over the chunk length
    let mut pr = ready_pair(4, 42);
    let forged =
        pr.a.forge(Kind::Encodings, &pt(false, &[[0; 32]; 5]))
            .unwrap();
    assert!(matches!(
        pr.p.handle_message(forged),
        Err(PsiError::ChunkTooLarge {
            count: 5,
            max: 4,
            ..
        })
    ));
    // a message in the wrong phase: a Result before any doubling
    let mut pr = ready_pair(4, 43);
    let forged = pr.a.forge(Kind::Result, &[0; 45]).unwrap();
    assert!(matches!(
        pr.p.handle_message(forged),
        Err(PsiError::OutOfOrder { .. })
    ));
    // the passive party sending its encodings before doubling the active ones
    let mut pr = ready_pair(4, 44);
    let forged = pr.p.forge(Kind::Encodings, &pt(true, &[])).unwrap();
    assert!(matches!(
        pr.a.handle_message(forged),
        Err(PsiError::OutOfOrder { .. })
    ));
}

#[test]
fn forged_doubled_and_result_are_typed_errors() {
    let g = curve25519_dalek::constants::RISTRETTO_BASEPOINT_COMPRESSED.to_bytes();
    let pt = |last: bool, pts: &[[u8; 32]]| msg::points_plaintext(last, pts.iter());
    // wrong count in the passive party's answer
    let mut pr = ready_pair(4, 50);
    let _chunk = pr.a.poll_transmit().unwrap();
    let forged = pr.p.forge(Kind::Doubled, &pt(false, &[g; 3])).unwrap();
    assert_eq!(
        pr.a.handle_message(forged),
        Err(PsiError::CountMismatch {
            kind: Kind::Doubled,
            expected: 4,
            got: 3
        })
    );
    // an answer to a chunk not sent yet
    let mut pr = ready_pair(4, 51);
    let forged = pr.p.forge(Kind::Doubled, &pt(false, &[g; 4])).unwrap();
    assert!(matches!(
        pr.a.handle_message(forged),
        Err(PsiError::OutOfOrder { .. })
    ));
    // a doubled "point" that does not decompress is compared, never decoded: it matches
    // nothing and the exchange completes with that id left out
    let mut pr = ready_pair(20, 52);
    let chunk = pr.a.poll_transmit().unwrap();
    pr.p.handle_message(chunk).unwrap();
    let _genuine = pr.p.poll_transmit().unwrap();
    // replace the genuine answer: the passive party seals a forged one as number 0 again
    let Some(l) = pr.p.link_for_tests() else {
        panic!()
    };
    l.sealing.sent = 0;
    let forged =
        pr.p.forge(Kind::Doubled, &pt(true, &[[0xee; 32]; 10]))
            .unwrap();
    pr.a.handle_message(forged).unwrap();
    pump(&mut pr).unwrap();
    assert_eq!(pr.a.output().unwrap().intersection_size, 0);
    // the last flag on a chunk that is not the last
    let mut pr = ready_pair(4, 53);
    let _chunk = pr.a.poll_transmit().unwrap();
    let forged = pr.p.forge(Kind::Doubled, &pt(true, &[g; 4])).unwrap();
    assert!(matches!(
        pr.a.handle_message(forged),
        Err(PsiError::Malformed { .. })
    ));

    // Results: run until the passive party awaits the result, then forge the active one's
    for (what, body) in bad_results() {
        let mut pr = ready_pair(4, 54);
        // deliver everything except the active party's Result chunks
        loop {
            let mut moved = false;
            while !pr.a.is_done() {
                let Some(m) = pr.a.poll_transmit() else { break };
                moved = true;
                pr.p.handle_message(m).unwrap();
            }
            while let Some(m) = pr.p.poll_transmit() {
                moved = true;
                pr.a.handle_message(m).unwrap();
            }
            if !moved {
                break;
            }
        }
        assert!(pr.a.is_done() && !pr.p.is_done());
        let forged = pr.a.forge(Kind::Result, &body).unwrap();
        let err = pr.p.handle_message(forged).unwrap_err();
        assert!(
            matches!(
                err,
                PsiError::BadResult { .. }
                    | PsiError::Malformed { .. }
                    | PsiError::ChunkTooLarge { .. }
            ),
            "{what}: {err}"
        );
        assert!(err.to_string().contains(what), "{what}: {err}");
        assert!(pr.p.has_failed(), "{what}");
    }
}

fn bad_results() -> Vec<(&'static str, Vec<u8>)> {
    let g = curve25519_dalek::constants::RISTRETTO_BASEPOINT_COMPRESSED.to_bytes();
    let mut g2 = g;
    g2[0] ^= 2;
    let h = [0u8; 32];
    let r = |last, total, entries: &[(u32, [u8; 32])]| {
        msg::result_plaintext(last, total, &h, entries.iter().map(|(p, x)| (*p, x)))
    };
    let mut short = r(true, 0, &[]);
    short.truncate(20);
    let mut flags = r(true, 0, &[]);
    flags[0] = 7;
    // g2 < g: (g2, g) is ascending, (g, g2) is not
    assert!(g2 < g);
    vec![
        ("the size exceeds a set size", r(true, 100, &[])),
        ("a position outside", r(true, 1, &[(99, g)])),
        ("a position named twice", r(true, 2, &[(0, g2), (0, g)])),
        ("not in the canonical", r(true, 2, &[(0, g), (1, g2)])),
        ("fewer entries than the size", r(true, 2, &[(0, g)])),
        ("more entries than the size", r(true, 1, &[(0, g2), (1, g)])),
        ("the hash does not match", r(true, 1, &[(0, g)])),
        ("shorter than its header", short),
        ("unknown flags", flags),
    ]
}

// ---- Properties.

fn id_set() -> impl Strategy<Value = Vec<String>> {
    // a small alphabet so that sets overlap and repeat; case and spaces vary
    proptest::collection::vec((0u8..40, any::<bool>(), any::<bool>()), 0..40).prop_map(|v| {
        v.into_iter()
            .map(|(n, upper, pad)| {
                let s = if upper {
                    format!("ID{n}")
                } else {
                    format!("id{n}")
                };
                if pad {
                    format!("  {s} ")
                } else {
                    s
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn result_is_the_plain_intersection(
        a in id_set(),
        p in id_set(),
        chunk in 1usize..9,
        both in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let delivery = if both { Delivery::Both } else { Delivery::ActiveOnly };
        let cfg = PsiConfig {
            duplicates: Duplicates::KeepFirst,
            ..config("prop", chunk, delivery)
        };
        let (oa, op) = run(cfg, &a, &p, seed).unwrap();
        check(IdFormat::Text, &a, &p, &oa, &op);
        prop_assert_eq!(op.rows.is_some(), both);
    }

    /// One set a subset of the other (either way), and disjoint sets.
    #[test]
    fn subsets_and_disjoint_sets(
        a in id_set(),
        keep in proptest::collection::vec(any::<bool>(), 40),
        shape in 0u8..3,
        seed in any::<u64>(),
    ) {
        // (a has at most 40 ids; the subset in reverse order)
        let mut sub: Vec<String> = a
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(s, _)| s.clone())
            .collect();
        sub.reverse();
        let other: Vec<String> = a.iter().map(|s| format!("x{}", s.trim())).collect();
        let (x, y) = match shape {
            0 => (&a, &sub),
            1 => (&sub, &a),
            _ => (&a, &other),
        };
        let cfg = PsiConfig {
            duplicates: Duplicates::KeepFirst,
            ..config("prop-subset", 3, Delivery::Both)
        };
        let (oa, op) = run(cfg, x, y, seed).unwrap();
        check(IdFormat::Text, x, y, &oa, &op);
        let (nx, ny) = (first_rows(IdFormat::Text, x).len(), first_rows(IdFormat::Text, y).len());
        let want = match shape {
            0 => ny,
            1 => nx,
            _ => 0,
        };
        prop_assert_eq!(oa.intersection_size as usize, want);
    }

    #[test]
    fn refuse_rule_matches_a_plain_scan(a in id_set(), seed in any::<u64>()) {
        let mut pr = pair(config("prop", 5, Delivery::Both), seed);
        pump(&mut pr).unwrap();
        pr.a.push_ids(&a).unwrap();
        let got = pr.a.finish_ids(&mut pr.rng);
        let mut first: BTreeMap<String, u64> = BTreeMap::new();
        let mut want = None;
        for (i, s) in a.iter().enumerate() {
            let n = IdFormat::Text.normalise(0, s).unwrap();
            if let Some(&f) = first.get(&n) {
                want = Some(PsiError::DuplicateId { first_row: f, duplicate_row: i as u64 });
                break;
            }
            first.insert(n, i as u64);
        }
        prop_assert_eq!(got.err(), want);
    }

    /// Whatever a peer with the channel key seals, and whatever bytes the relay delivers,
    /// the party answers with a value, never a panic.
    #[test]
    fn adversarial_messages_never_panic(
        steps in 0usize..6,
        kind in 0u8..3,
        body in proptest::collection::vec(any::<u8>(), 0..200),
        from_active in any::<bool>(),
        raw in any::<bool>(),
        seq in 0u64..4,
        seed in any::<u64>(),
    ) {
        let mut pr = ready_pair(3, seed);
        // advance a few genuine steps
        for _ in 0..steps {
            if let Some(m) = pr.a.poll_transmit() { let _ = pr.p.handle_message(m); }
            if let Some(m) = pr.p.poll_transmit() { let _ = pr.a.handle_message(m); }
        }
        let kind = Kind::ALL[kind as usize];
        let (sender, receiver) = if from_active { (&mut pr.a, &mut pr.p) } else { (&mut pr.p, &mut pr.a) };
        let m = if raw {
            Some(PsiMsg::Sealed(Sealed {
                ctx: sender.config().ctx.clone(),
                from: sender.role(),
                seq,
                kind,
                ciphertext: body.clone(),
            }))
        } else {
            sender.forge(kind, &body)
        };
        if let Some(m) = m {
            let _ = receiver.handle_message(m);
        }
        // and the receiver still answers calls
        let _ = receiver.poll_transmit();
        let _ = receiver.push_ids(&["x"]);
    }
}
