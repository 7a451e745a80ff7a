//! Vertical LR against the project's own LR on the joined table, refusals, and what the
//! passive parties receive.

mod common;

use common::{columns, credit, rng, Credit};
use fedsilo_ml::linear::{loss_grad_sum, LinearParams};
use fedsilo_ml::optim::{OptimizerState, ServerOptimizer};
use fedsilo_vertical::lr::{ActiveLr, LrConfig, LrToActive, LrToPassive, PassiveLr};
use fedsilo_vertical::{PeerError, SecretKey, WireCiphertext};
use ndarray::{Array2, ArrayView1};

/// Full-batch steps of `opt` on the pooled objective, with `fedsilo_ml::linear`'s gradient
/// (the crate's pooled reference, checked here against the loop written out).
fn pooled(cfg: &LrConfig, x: &Array2<f32>, y: ArrayView1<f32>) -> Vec<f64> {
    let d = x.ncols();
    let n = x.nrows() as f64;
    let mut params = vec![0.0; d + 1];
    let mut st = OptimizerState::new(&cfg.optimizer, d + 1);
    for _ in 0..cfg.iterations {
        let p = LinearParams::from_flat(&params).unwrap();
        let (_, g) = loss_grad_sum(&p, x.view(), y, cfg.pos_weight).unwrap();
        let delta: Vec<f64> = (0..=d)
            .map(|j| -(g[j] / n + if j < d { cfg.l2 * params[j] } else { 0.0 }))
            .collect();
        st.try_step(&cfg.optimizer, &mut params, &delta).unwrap();
    }
    assert_eq!(
        fedsilo_vertical::lr::fit_joined(cfg, x.view(), y).unwrap(),
        params
    );
    params
}

struct Run {
    active: ActiveLr,
    passive: Vec<PassiveLr>,
    /// every message each passive party received
    received: Vec<Vec<LrToPassive>>,
}

/// The in-process relay: delivers every message until both sides are done.
fn run(
    cfg: &LrConfig,
    key: SecretKey,
    xa: &Array2<f32>,
    y: ArrayView1<f32>,
    xp: &[Array2<f32>],
) -> Run {
    let mut r = rng(11);
    let dims: Vec<usize> = xp.iter().map(|x| x.ncols()).collect();
    let (mut active, mut to_passive) =
        ActiveLr::new(cfg.clone(), key, xa.view(), y, &dims).unwrap();
    let mut passive: Vec<PassiveLr> = xp
        .iter()
        .map(|x| PassiveLr::new(cfg.clone(), x.view()).unwrap())
        .collect();
    let mut received = vec![Vec::new(); xp.len()];
    let mut prng: Vec<_> = (0..xp.len()).map(|k| rng(100 + k as u64)).collect();
    while !to_passive.is_empty() {
        let mut to_active = Vec::new();
        for (k, msg) in to_passive.drain(..) {
            received[k].push(msg.clone());
            if let Some(answer) = passive[k].handle(&mut prng[k], msg).unwrap() {
                to_active.push((k, answer));
            }
        }
        for (k, msg) in to_active {
            to_passive.extend(active.handle(&mut r, k, msg).unwrap());
        }
    }
    assert!(active.is_done() && passive.iter().all(PassiveLr::is_done));
    Run {
        active,
        passive,
        received,
    }
}

fn setup(
    rows: usize,
) -> (
    Array2<f32>,
    Array2<f32>,
    Vec<Array2<f32>>,
    ndarray::Array1<f32>,
) {
    let c = credit(rows);
    let x = c.standardised();
    let (xa, xp) = Credit::split(&x, c.active);
    let xp1 = columns(&xp, 0..3);
    let xp2 = columns(&xp, 3..xp.ncols());
    (x, xa, vec![xp1, xp2], c.y)
}

fn key(seed: u64) -> SecretKey {
    SecretKey::generate(&mut rng(seed), 1024).unwrap()
}

#[test]
fn vertical_lr_equals_pooled_lr_on_the_joined_table() {
    let (x, xa, xp, y) = setup(300);
    for optimizer in [
        ServerOptimizer::FedAvg { lr: 1.0 },
        ServerOptimizer::FedAdam {
            lr: 0.05,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-3,
        },
    ] {
        let mut cfg = LrConfig::new(8, optimizer);
        cfg.l2 = 0.01;
        cfg.pos_weight = 1.7;
        let want = pooled(&cfg, &x, y.view());
        let got = run(&cfg, key(1), &xa, y.view(), &xp);
        let m = got.active.model();
        let mut flat = m.coef.clone();
        for p in &got.passive {
            flat.extend_from_slice(p.coef());
        }
        flat.push(m.intercept);
        assert_eq!(flat.len(), want.len());
        for (j, (a, b)) in flat.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() < 1e-6,
                "parameter {j}: vertical {a} vs pooled {b}"
            );
        }
        // and the model moved: not a trivial agreement at zero
        assert!(want.iter().any(|w| w.abs() > 0.05));
    }
}

/// The passive party's exponents are shifted by each column's own largest magnitude: a
/// column of zeros, one with a single outlier near the largest value it may encode (±1024,
/// 31-bit exponents) and a tiny one give the pooled model as the others do.
#[test]
fn columns_of_any_magnitude_give_the_pooled_model() {
    let (mut x, xa, mut xp, y) = setup(200);
    let da = xa.ncols();
    for i in 0..x.nrows() {
        let old = [xp[0][(i, 0)], xp[0][(i, 1)], xp[0][(i, 2)]];
        let new = [0.0, if i == 7 { -1000.0 } else { old[1] }, old[2] * 1e-5];
        for (j, v) in new.into_iter().enumerate() {
            xp[0][(i, j)] = v;
            x[(i, da + j)] = v;
        }
    }
    let cfg = LrConfig::new(4, ServerOptimizer::FedAvg { lr: 1.0 });
    let want = pooled(&cfg, &x, y.view());
    let got = run(&cfg, key(2), &xa, y.view(), &xp);
    let m = got.active.model();
    let mut flat = m.coef.clone();
    for p in &got.passive {
        flat.extend_from_slice(p.coef());
    }
    flat.push(m.intercept);
    for (j, (a, b)) in flat.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() < 1e-6,
            "parameter {j}: vertical {a} vs pooled {b}"
        );
    }
    assert_eq!(
        got.passive[0].coef()[0],
        0.0,
        "a column of zeros gets no weight"
    );
    assert!(got.passive[0].coef()[1] != 0.0);
}

#[test]
fn the_passive_party_receives_only_ciphertexts_and_masked_values() {
    let (_, xa, xp, y) = setup(200);
    let cfg = LrConfig::new(3, ServerOptimizer::FedAvg { lr: 1.0 });
    let sk = key(2);
    // the same key, kept aside to look inside the ciphertexts the passive party received
    let spy = key(2);
    let run = run(&cfg, sk, &xa, y.view(), &xp);
    let pk = spy.public().clone();
    let mut residuals = 0;
    let mut gradients = 0;
    for msgs in &run.received {
        for m in msgs {
            match m {
                LrToPassive::Setup { public_key, .. } => assert_eq!(public_key, &pk.to_wire()),
                LrToPassive::Residuals { residuals: cs, .. } => {
                    for c in cs {
                        // a ciphertext under the active party's key, ~2·1024 bits: not a
                        // residual, label or score in any fixed-point encoding
                        pk.ciphertext(c, "residual", 0).unwrap();
                        assert!(
                            c.0.len() > 200,
                            "a {}-byte value is not a ciphertext",
                            c.0.len()
                        );
                        residuals += 1;
                    }
                }
                LrToPassive::Gradient { masked, .. } => {
                    for v in masked {
                        // |G̃| < 2^B with B ≈ 100 here; the mask adds 128 bits on top
                        assert!(v.magnitude.len() * 8 > 150, "gradient not masked");
                        gradients += 1;
                    }
                }
            }
        }
    }
    assert_eq!(residuals, 2 * 3 * 200);
    assert_eq!(gradients, 3 * (3 + 4));
    // residual ciphertexts are fresh: no two equal (a deterministic encoding of equal
    // labels would repeat)
    let LrToPassive::Residuals {
        residuals: first, ..
    } = &run.received[0][1]
    else {
        panic!()
    };
    let mut seen: Vec<&WireCiphertext> = first.iter().collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    seen.dedup();
    assert_eq!(seen.len(), first.len());
}

#[test]
fn refused_messages_leave_the_state_unchanged() {
    let (_, xa, xp, y) = setup(60);
    let cfg = LrConfig::new(2, ServerOptimizer::FedAvg { lr: 1.0 });
    let mut r = rng(5);
    let dims: Vec<usize> = xp.iter().map(|x| x.ncols()).collect();
    let (mut active, setup) =
        ActiveLr::new(cfg.clone(), key(3), xa.view(), y.view(), &dims).unwrap();
    let mut p0 = PassiveLr::new(cfg.clone(), xp[0].view())
        .unwrap()
        .require_key_bits(1024);
    let mut p1 = PassiveLr::new(cfg.clone(), xp[1].view()).unwrap();

    // a passive party: a message for the wrong phase before the setup
    let err = p0
        .handle(
            &mut r,
            LrToPassive::Gradient {
                iteration: 0,
                masked: vec![],
            },
        )
        .unwrap_err();
    assert!(
        matches!(err.peer(), Some(PeerError::WrongPhase { .. })),
        "{err}"
    );
    // a key of another size than the job's key_bits is refused, and the party still awaits
    // the setup
    let mut strict = PassiveLr::new(cfg.clone(), xp[0].view())
        .unwrap()
        .require_key_bits(2048);
    assert_eq!(
        strict
            .handle(&mut r, setup[0].1.clone())
            .unwrap_err()
            .peer(),
        Some(&PeerError::KeyBitsMismatch {
            expected: 2048,
            got: 1024
        })
    );
    assert!(matches!(
        strict
            .handle(
                &mut r,
                LrToPassive::Gradient {
                    iteration: 0,
                    masked: vec![],
                },
            )
            .unwrap_err()
            .peer(),
        Some(PeerError::WrongPhase { .. })
    ));
    let logits0 = p0.handle(&mut r, setup[0].1.clone()).unwrap().unwrap();
    let logits1 = p1.handle(&mut r, setup[1].1.clone()).unwrap().unwrap();

    // the active party: wrong size, wrong iteration, unknown party, wrong phase
    let LrToActive::Logits { logits, .. } = logits0.clone() else {
        panic!()
    };
    let short = LrToActive::Logits {
        iteration: 0,
        logits: logits[1..].to_vec(),
    };
    assert!(matches!(
        active.handle(&mut r, 0, short).unwrap_err().peer(),
        Some(PeerError::WrongSize { .. })
    ));
    let late = LrToActive::Logits {
        iteration: 1,
        logits: logits.clone(),
    };
    assert!(matches!(
        active.handle(&mut r, 0, late).unwrap_err().peer(),
        Some(PeerError::WrongRound { .. })
    ));
    let mut nan = logits.clone();
    nan[3] = f64::NAN;
    let bad = LrToActive::Logits {
        iteration: 0,
        logits: nan,
    };
    assert!(matches!(
        active.handle(&mut r, 0, bad).unwrap_err().peer(),
        Some(PeerError::BadValue { index: 3, .. })
    ));
    assert!(matches!(
        active
            .handle(&mut r, 7, logits0.clone())
            .unwrap_err()
            .peer(),
        Some(PeerError::UnknownParty { .. })
    ));
    let early = LrToActive::MaskedGradient {
        iteration: 0,
        gradient: vec![],
    };
    assert!(matches!(
        active.handle(&mut r, 0, early).unwrap_err().peer(),
        Some(PeerError::WrongPhase { .. })
    ));
    // the genuine messages are still accepted; a duplicate is not
    assert!(active
        .handle(&mut r, 0, logits0.clone())
        .unwrap()
        .is_empty());
    assert!(matches!(
        active.handle(&mut r, 0, logits0).unwrap_err().peer(),
        Some(PeerError::Duplicate { .. })
    ));
    let res = active.handle(&mut r, 1, logits1).unwrap();
    assert_eq!(res.len(), 2);

    // a passive party: ciphertext out of range, wrong size
    let LrToPassive::Residuals { residuals, .. } = res[0].1.clone() else {
        panic!()
    };
    let mut huge = residuals.clone();
    huge[5] = WireCiphertext(vec![0xff; 300]);
    let m = LrToPassive::Residuals {
        iteration: 0,
        residuals: huge,
    };
    assert!(matches!(
        p0.handle(&mut r, m).unwrap_err().peer(),
        Some(PeerError::CiphertextOutOfRange { index: 5, .. })
    ));
    let mut zero = residuals.clone();
    zero[2] = WireCiphertext(vec![0]);
    let m = LrToPassive::Residuals {
        iteration: 0,
        residuals: zero,
    };
    assert!(matches!(
        p0.handle(&mut r, m).unwrap_err().peer(),
        Some(PeerError::CiphertextOutOfRange { index: 2, .. })
    ));
    let m = LrToPassive::Residuals {
        iteration: 0,
        residuals: residuals[..10].to_vec(),
    };
    assert!(matches!(
        p0.handle(&mut r, m).unwrap_err().peer(),
        Some(PeerError::WrongSize { .. })
    ));
    let g0 = p0.handle(&mut r, res[0].1.clone()).unwrap().unwrap();
    let g1 = p1.handle(&mut r, res[1].1.clone()).unwrap().unwrap();

    // the active party: a masked gradient that is not a ciphertext, or of the wrong size
    let LrToActive::MaskedGradient { gradient, .. } = g0.clone() else {
        panic!()
    };
    let mut bad = gradient.clone();
    bad[0] = WireCiphertext(vec![0xff; 400]);
    let m = LrToActive::MaskedGradient {
        iteration: 0,
        gradient: bad,
    };
    assert!(matches!(
        active.handle(&mut r, 0, m).unwrap_err().peer(),
        Some(PeerError::CiphertextOutOfRange { .. })
    ));
    let m = LrToActive::MaskedGradient {
        iteration: 0,
        gradient: gradient[..1].to_vec(),
    };
    assert!(matches!(
        active.handle(&mut r, 0, m).unwrap_err().peer(),
        Some(PeerError::WrongSize { .. })
    ));
    assert!(active.handle(&mut r, 0, g0).unwrap().is_empty());
    let back = active.handle(&mut r, 1, g1).unwrap();
    assert_eq!(back.len(), 2);
    // a passive party: a gradient whose unmasked value is out of range (the active party lied)
    let LrToPassive::Gradient {
        iteration,
        mut masked,
    } = back[0].1.clone()
    else {
        panic!()
    };
    let genuine = masked.clone();
    masked[0].magnitude = vec![0x7f; 120];
    let m = LrToPassive::Gradient { iteration, masked };
    assert!(matches!(
        p0.handle(&mut r, m).unwrap_err().peer(),
        Some(PeerError::PlaintextOutOfRange { .. })
    ));
    let next = p0
        .handle(
            &mut r,
            LrToPassive::Gradient {
                iteration,
                masked: genuine,
            },
        )
        .unwrap();
    assert!(matches!(
        next,
        Some(LrToActive::Logits { iteration: 1, .. })
    ));
}
