//! SecureBoost against `fedsilo_ml`'s pooled boosting on the joined table, refusals, and
//! what the passive parties receive.

mod common;

use common::{columns, credit, rng, Credit};
use fedsilo_ml::gbdt::{fit_pooled, GbdtParams};
use fedsilo_vertical::boost::{ActiveBoost, BoostToActive, BoostToPassive, PassiveBoost};
use fedsilo_vertical::{PeerError, SecretKey, WireCiphertext};
use ndarray::{Array1, Array2};

fn params() -> GbdtParams {
    GbdtParams {
        n_trees: 4,
        max_depth: 3,
        max_leaves: 8,
        max_bins: 16,
        ..GbdtParams::default()
    }
}

struct Run {
    active: ActiveBoost,
    passive: Vec<PassiveBoost>,
    received: Vec<Vec<BoostToPassive>>,
}

fn run(p: &GbdtParams, xa: &Array2<f32>, y: &Array1<f32>, xp: &[Array2<f32>]) -> Run {
    let mut r = rng(21);
    let sk = SecretKey::generate(&mut rng(4), 1024).unwrap();
    let dims: Vec<usize> = xp.iter().map(|x| x.ncols()).collect();
    let (mut active, mut to_passive) =
        ActiveBoost::new(&mut r, p.clone(), sk, xa.view(), y.view(), &dims).unwrap();
    let mut passive: Vec<PassiveBoost> = xp
        .iter()
        .map(|x| PassiveBoost::new(p.clone(), x.view()).unwrap())
        .collect();
    let mut received = vec![Vec::new(); xp.len()];
    let mut prng: Vec<_> = (0..xp.len()).map(|k| rng(200 + k as u64)).collect();
    while !to_passive.is_empty() {
        let mut to_active = Vec::new();
        for (k, msg) in to_passive.drain(..) {
            received[k].push(msg.clone());
            if let Some(a) = passive[k].handle(&mut prng[k], msg).unwrap() {
                to_active.push((k, a));
            }
        }
        for (k, msg) in to_active {
            to_passive.extend(active.handle(&mut r, k, msg).unwrap());
        }
    }
    assert!(active.is_done() && passive.iter().all(PassiveBoost::is_done));
    Run {
        active,
        passive,
        received,
    }
}

/// (joined columns, active columns, each passive party's columns, labels, active column count)
type Split = (
    Array2<f32>,
    Array2<f32>,
    Vec<Array2<f32>>,
    Array1<f32>,
    usize,
);

fn data(rows: usize) -> Split {
    let c = credit(rows);
    let (xa, xp) = Credit::split(&c.x, c.active);
    // an odd column count: the passive party sums its columns in pairs, and the last alone
    let parts = vec![columns(&xp, 0..3), columns(&xp, 3..xp.ncols())];
    (c.x.clone(), xa, parts, c.y, c.active)
}

#[test]
fn secureboost_grows_the_pooled_trees_on_the_joined_table() {
    let (x, xa, xp, y, d_active) = data(1200);
    let p = params();
    let pooled = fit_pooled(x.view(), y.view(), &p).unwrap();
    let run = run(&p, &xa, &y, &xp);
    let model = run.active.model().unwrap();
    assert_eq!(model.base_score, pooled.base_score);
    assert_eq!(model.trees.len(), pooled.trees.len());
    assert_eq!(model.trees.len(), p.n_trees);
    let offsets = [d_active, d_active + xp[0].ncols()];
    let counts = model
        .matches_pooled(&pooled, &offsets, |k, t, n| {
            run.passive
                .get(k)
                .and_then(|p| p.trees().splits.get(&(t, n)))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let (active_splits, passive_splits) = (counts.active, counts.passive);
    // both kinds of split occur, so the comparison covers both paths
    assert!(
        active_splits > 0 && passive_splits > 0,
        "{active_splits} / {passive_splits}"
    );
    // the passive parties hold exactly their splits
    let held: usize = run.passive.iter().map(|p| p.trees().splits.len()).sum();
    assert_eq!(held, passive_splits);
    // margins on the training rows are the pooled model's
    let want = pooled.predict_margin(x.view()).unwrap();
    for (i, (a, b)) in run.active.margins().iter().zip(&want).enumerate() {
        assert!((a - b).abs() < 1e-12, "row {i}: {a} vs {b}");
    }
}

#[test]
fn the_passive_party_receives_only_ciphertexts_rows_and_split_orders() {
    let (_, xa, xp, y, _) = data(300);
    let mut p = params();
    p.n_trees = 2;
    let run = run(&p, &xa, &y, &xp);
    let pk = SecretKey::generate(&mut rng(4), 1024)
        .unwrap()
        .public()
        .clone();
    let mut cts = 0;
    for msgs in &run.received {
        for m in msgs {
            match m {
                BoostToPassive::Setup { public_key, .. } => assert_eq!(public_key, &pk.to_wire()),
                BoostToPassive::Gradients { gh, .. } => {
                    let mut seen: Vec<&WireCiphertext> = gh.iter().collect();
                    for c in gh {
                        pk.ciphertext(c, "gh", 0).unwrap();
                        assert!(c.0.len() > 200);
                        cts += 1;
                    }
                    seen.sort_by(|a, b| a.0.cmp(&b.0));
                    seen.dedup();
                    assert_eq!(seen.len(), gh.len(), "ciphertexts repeat");
                }
                // row sets and split orders: indices, bins and directions, no values
                BoostToPassive::Histograms { .. }
                | BoostToPassive::Split { .. }
                | BoostToPassive::Finished => {}
            }
        }
    }
    assert_eq!(cts, 2 * 2 * 300);
}

#[test]
fn refused_messages_leave_the_state_unchanged() {
    let (_, xa, xp, y, _) = data(120);
    let p = params();
    let mut r = rng(9);
    let sk = SecretKey::generate(&mut rng(6), 1024).unwrap();
    let dims: Vec<usize> = xp.iter().map(|x| x.ncols()).collect();
    let (mut active, out) =
        ActiveBoost::new(&mut r, p.clone(), sk, xa.view(), y.view(), &dims).unwrap();
    let mut p0 = PassiveBoost::new(p.clone(), xp[0].view())
        .unwrap()
        .require_key_bits(1024);
    let mut p1 = PassiveBoost::new(p.clone(), xp[1].view()).unwrap();
    let to0: Vec<BoostToPassive> = out
        .iter()
        .filter(|(k, _)| *k == 0)
        .map(|(_, m)| m.clone())
        .collect();
    let to1: Vec<BoostToPassive> = out
        .iter()
        .filter(|(k, _)| *k == 1)
        .map(|(_, m)| m.clone())
        .collect();
    // wrong phase before setup
    assert!(matches!(
        p0.handle(&mut r, to0[1].clone()).unwrap_err().peer(),
        Some(PeerError::WrongPhase { .. })
    ));
    // a key of another size than the job's key_bits, then the same party takes the genuine
    // setup at the size it requires
    let mut strict = PassiveBoost::new(p.clone(), xp[0].view())
        .unwrap()
        .require_key_bits(2048);
    assert_eq!(
        strict.handle(&mut r, to0[0].clone()).unwrap_err().peer(),
        Some(&PeerError::KeyBitsMismatch {
            expected: 2048,
            got: 1024
        })
    );
    assert!(matches!(
        strict.handle(&mut r, to0[1].clone()).unwrap_err().peer(),
        Some(PeerError::WrongPhase { .. })
    ));
    assert!(p0.handle(&mut r, to0[0].clone()).unwrap().is_none());
    // gradients: wrong size, out of range
    let BoostToPassive::Gradients { tree, gh } = to0[1].clone() else {
        panic!()
    };
    let m = BoostToPassive::Gradients {
        tree,
        gh: gh[1..].to_vec(),
    };
    assert!(matches!(
        p0.handle(&mut r, m).unwrap_err().peer(),
        Some(PeerError::WrongSize { .. })
    ));
    let mut bad = gh.clone();
    bad[7] = WireCiphertext(vec![0xff; 256]);
    let m = BoostToPassive::Gradients { tree, gh: bad };
    assert!(matches!(
        p0.handle(&mut r, m).unwrap_err().peer(),
        Some(PeerError::CiphertextOutOfRange { index: 7, .. })
    ));
    assert!(p0.handle(&mut r, to0[1].clone()).unwrap().is_none());
    // a histogram request with a row out of range, or repeated
    let BoostToPassive::Histograms { tree, nodes } = to0[2].clone() else {
        panic!()
    };
    let mut n2 = nodes.clone();
    n2[0].rows.push(10_000);
    let m = BoostToPassive::Histograms { tree, nodes: n2 };
    assert!(matches!(
        p0.handle(&mut r, m).unwrap_err().peer(),
        Some(PeerError::BadRow { .. })
    ));
    let mut n3 = nodes.clone();
    n3[0].rows.push(0);
    let m = BoostToPassive::Histograms { tree, nodes: n3 };
    assert!(matches!(
        p0.handle(&mut r, m).unwrap_err().peer(),
        Some(PeerError::BadRow { row: 0, .. })
    ));
    let h0 = p0.handle(&mut r, to0[2].clone()).unwrap().unwrap();
    // the active party: wrong size, not a ciphertext, wrong tree, wrong phase
    let BoostToActive::Histograms { tree, packed } = h0.clone() else {
        panic!()
    };
    let m = BoostToActive::Histograms {
        tree,
        packed: packed[1..].to_vec(),
    };
    assert!(matches!(
        active.handle(&mut r, 0, m).unwrap_err().peer(),
        Some(PeerError::WrongSize { .. })
    ));
    let mut bad = packed.clone();
    bad[0] = WireCiphertext(vec![]);
    let m = BoostToActive::Histograms { tree, packed: bad };
    assert!(matches!(
        active.handle(&mut r, 0, m).unwrap_err().peer(),
        Some(PeerError::CiphertextOutOfRange { .. })
    ));
    let m = BoostToActive::Histograms {
        tree: tree + 1,
        packed: packed.clone(),
    };
    assert!(matches!(
        active.handle(&mut r, 0, m).unwrap_err().peer(),
        Some(PeerError::WrongRound { .. })
    ));
    let m = BoostToActive::Routing { tree, left: vec![] };
    assert!(matches!(
        active.handle(&mut r, 0, m).unwrap_err().peer(),
        Some(PeerError::WrongPhase { .. })
    ));
    // a ciphertext of a value that packs more digits than a histogram can hold
    let pk = SecretKey::generate(&mut rng(6), 1024)
        .unwrap()
        .public()
        .clone();
    let mut over = packed.clone();
    let big = pk
        .encrypt(&mut r, &(num_bigint::BigInt::from(1) << 1020u32))
        .unwrap();
    over[0] = fedsilo_vertical::PublicKey::to_wire_ct(&big);
    let m = BoostToActive::Histograms { tree, packed: over };
    assert!(matches!(
        active.handle(&mut r, 0, m).unwrap_err().peer(),
        Some(PeerError::PlaintextOutOfRange { .. })
    ));
    // the genuine ones still go through
    assert!(active.handle(&mut r, 0, h0).unwrap().is_empty());
    for m in to1 {
        if let Some(a) = p1.handle(&mut r, m).unwrap() {
            let next = active.handle(&mut r, 1, a).unwrap();
            assert!(!next.is_empty());
        }
    }
}
