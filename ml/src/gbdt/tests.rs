//! Tests of the whole boosting loop (server and participant halves together) and the helpers
//! the part modules' tests share.

use super::*;
use crate::binning::BinningError;
use crate::linear::sigmoid;
use crate::metrics::auc;
use ndarray::{Array1, Array2, ArrayView2, Axis, Slice};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Synthetic credit-like data with a nonlinear signal and 10% missing values in x4.
fn synthetic(n: usize, seed: u64) -> (Array2<f32>, Array1<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Array2::<f32>::zeros((n, 6));
    let mut y = Array1::<f32>::zeros(n);
    for r in 0..n {
        let x0: f64 = rng.random_range(-3.0..3.0);
        let x1: f64 = rng.sample(StandardNormal);
        let x2: f64 = rng.random_range(0.0..1.0);
        let x3: f64 = rng.sample(StandardNormal);
        let x4: f64 = rng.random_range(-1.0..1.0);
        let x4_missing = rng.random_bool(0.1);
        let x5: f64 = rng.sample(StandardNormal);
        let logit = 1.5 * (2.0 * x0).sin() + (x1 * x1 - 1.0) + 2.0 * f64::from(u8::from(x2 > 0.7))
            - f64::from(u8::from(x3 < -0.5))
            + if x4_missing { 1.0 } else { x4 }
            - 0.5;
        let row = [x0, x1, x2, x3, if x4_missing { f64::NAN } else { x4 }, x5];
        for (j, v) in row.iter().enumerate() {
            x[[r, j]] = *v as f32;
        }
        y[r] = f32::from(u8::from(rng.random_bool(sigmoid(logit))));
    }
    (x, y)
}

pub(super) fn params(n_trees: usize, depth: usize) -> GbdtParams {
    GbdtParams {
        n_trees,
        max_depth: depth,
        max_leaves: 1 << depth,
        learning_rate: 0.2,
        min_child_weight: 1.0,
        lambda: 1.0,
        gamma: 0.0,
        max_bins: 32,
        fine_bins: 512,
        range_sd: 4.0,
    }
}

/// Runs the server with several participants, summing their vectors.
fn federate(
    parts: &[(Array2<f32>, Array1<f32>)],
    params: &GbdtParams,
    mut on_level: impl FnMut(&GbdtInstruction, &mut [GbdtCache]),
) -> GbdtModel {
    let mut server = GbdtServer::new(params.clone(), parts[0].0.ncols()).unwrap();
    let mut caches: Vec<GbdtCache> = parts.iter().map(|_| GbdtCache::new()).collect();
    while let Some(instr) = server.next() {
        on_level(&instr, &mut caches);
        // The server knows the length without building the instruction.
        assert_eq!(server.next_len(), Some(instr.output_len()));
        let mut sum = vec![0.0; instr.output_len()];
        for ((x, y), c) in parts.iter().zip(caches.iter_mut()) {
            let v = gbdt_compute(&instr, x.view(), y.view(), c).unwrap();
            assert_eq!(v.len(), sum.len());
            sum.iter_mut().zip(&v).for_each(|(s, a)| *s += a);
        }
        // the server state is a checkpoint: it survives a serde round trip
        let json = serde_json::to_string(&server).unwrap();
        server = serde_json::from_str(&json).unwrap();
        server.absorb(&sum).unwrap();
    }
    server.into_model().unwrap()
}

/// Non-IID split: rows sorted by x1, cut into bands of 10/20/30/40%.
fn non_iid_split(x: &Array2<f32>, y: &Array1<f32>) -> Vec<(Array2<f32>, Array1<f32>)> {
    let n = x.nrows();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| x[[a, 1]].total_cmp(&x[[b, 1]]));
    let cuts = [0, n / 10, 3 * n / 10, 6 * n / 10, n];
    cuts.windows(2)
        .map(|w| {
            let rows = &idx[w[0]..w[1]];
            (x.select(Axis(0), rows), y.select(Axis(0), rows))
        })
        .collect()
}

fn assert_same_model(a: &GbdtModel, b: &GbdtModel) {
    assert_eq!(a.base_score, b.base_score);
    assert_eq!(a.bin_mapper, b.bin_mapper);
    assert_eq!(a.trees.len(), b.trees.len());
    for (t, (ta, tb)) in a.trees.iter().zip(&b.trees).enumerate() {
        assert_eq!(ta.nodes.len(), tb.nodes.len(), "tree {t}");
        for (i, (na, nb)) in ta.nodes.iter().zip(&tb.nodes).enumerate() {
            match (na, nb) {
                (
                    Node::Split {
                        feature: fa,
                        bin: ba,
                        threshold: ha,
                        default_left: da,
                        left: la,
                        right: ra,
                        gain: ga,
                    },
                    Node::Split {
                        feature: fb,
                        bin: bb,
                        threshold: hb,
                        default_left: db,
                        left: lb,
                        right: rb,
                        gain: gb,
                    },
                ) => {
                    assert_eq!(
                        (fa, ba, ha, da, la, ra),
                        (fb, bb, hb, db, lb, rb),
                        "tree {t} node {i}"
                    );
                    assert!((ga - gb).abs() <= 1e-9 * ga.abs().max(1.0));
                }
                (Node::Leaf { value: va }, Node::Leaf { value: vb }) => {
                    assert!((va - vb).abs() < 1e-9, "tree {t} leaf {i}: {va} vs {vb}");
                }
                _ => panic!("tree {t} node {i}: {na:?} vs {nb:?}"),
            }
        }
    }
}

#[test]
fn beats_logistic_regression_on_a_nonlinear_signal() {
    let (x, y) = synthetic(12_000, 1);
    let (xtr, xte) = (
        x.slice_axis(Axis(0), Slice::from(..8000)),
        x.slice_axis(Axis(0), Slice::from(8000..)),
    );
    let (ytr, yte) = (
        y.slice_axis(Axis(0), Slice::from(..8000)),
        y.slice_axis(Axis(0), Slice::from(8000..)),
    );
    let model = fit_pooled(xtr, ytr, &params(60, 3)).unwrap();
    let p = model.predict_proba(xte).unwrap();
    let yte_v = yte.to_vec();
    let gbdt_auc = auc(&p, &yte_v);
    // logistic baseline, missing imputed as 0
    let imp = |a: ArrayView2<f32>| a.mapv(|v| if v.is_nan() { 0.0 } else { v });
    let lin = crate::linear::fit_pooled(imp(xtr).view(), ytr, 1e-4, 1.0).unwrap();
    let lin_auc = auc(
        &crate::linear::predict_proba(&lin, imp(xte).view()).unwrap(),
        &yte_v,
    );
    assert!(
        gbdt_auc > lin_auc + 0.08,
        "gbdt {gbdt_auc} vs logistic {lin_auc}"
    );
    assert!(gbdt_auc > 0.78, "{gbdt_auc}");
    // margins from raw rows equal margins from binned rows; probabilities in (0, 1)
    let b = model.bin_mapper.bin(xte).unwrap();
    assert_eq!(
        model.predict_margin_binned(b.view()).unwrap(),
        model.predict_margin(xte).unwrap()
    );
    assert!(p.iter().all(|&v| v > 0.0 && v < 1.0));
    // the informative features carry the gain; x5 is noise
    let g = model.feature_gain();
    assert!(g[0] > g[5] && g[1] > g[5] && g[2] > g[5], "{g:?}");
}

#[test]
fn federated_trees_equal_pooled_trees() {
    let (x, y) = synthetic(6000, 2);
    let parts = non_iid_split(&x, &y);
    let p = params(25, 4);
    let fed = federate(&parts, &p, |_, _| {});
    let xs: Vec<_> = parts.iter().map(|(x, _)| x.view()).collect();
    let ys: Vec<_> = parts.iter().map(|(_, y)| y.view()).collect();
    let xc = ndarray::concatenate(Axis(0), &xs).unwrap();
    let yc = ndarray::concatenate(Axis(0), &ys).unwrap();
    let pooled = fit_pooled(xc.view(), yc.view(), &p).unwrap();
    assert_eq!(pooled.trees.len(), 25);
    assert!(pooled.trees.iter().any(|t| t.nodes.len() > 7));
    assert_same_model(&fed, &pooled);
    // also against the original row order (sums are order-independent up to rounding)
    let pooled_orig = fit_pooled(x.view(), y.view(), &p).unwrap();
    assert_same_model(&fed, &pooled_orig);
    // Stronger, thanks to the gradient grid: histogram sums are exact, so the models are
    // bit-for-bit equal (only the feature ranges come from inexact Σx sums, and their f32
    // rounding agrees here).
    assert_eq!(fed, pooled);
    assert_eq!(fed, pooled_orig);
}

/// A server reading its levels as noised, given noise-free sums, grows the same trees as
/// the plain one: zeroing bins beyond a feature's cut points and averaging the root totals
/// over features change nothing exact, and each tree's extra leaf-sum step gives the leaf
/// values the split sums gave (to rounding).
#[test]
fn noised_level_server_on_exact_sums_grows_the_same_trees() {
    let (x, y) = synthetic(4000, 5);
    let parts = non_iid_split(&x, &y);
    let p = params(6, 3);
    let plain = federate(&parts, &p, |_, _| {});
    let mut server = GbdtServer::new(p.clone(), x.ncols())
        .unwrap()
        .with_noised_levels();
    let mut caches: Vec<GbdtCache> = parts.iter().map(|_| GbdtCache::new()).collect();
    let mut leaf_steps = 0;
    while let Some(instr) = server.next() {
        if matches!(instr, GbdtInstruction::Leaves { .. }) {
            assert_eq!(server.next_kind(), Some(StepKind::Leaves));
            leaf_steps += 1;
        }
        assert_eq!(server.next_len(), Some(instr.output_len()));
        let mut sum = vec![0.0; instr.output_len()];
        for ((x, y), c) in parts.iter().zip(caches.iter_mut()) {
            let v = gbdt_compute(&instr, x.view(), y.view(), c).unwrap();
            sum.iter_mut().zip(&v).for_each(|(s, a)| *s += a);
        }
        let json = serde_json::to_string(&server).unwrap();
        server = serde_json::from_str(&json).unwrap();
        server.absorb(&sum).unwrap();
    }
    assert_eq!(leaf_steps, 6, "one leaf-sum step per tree");
    assert_same_model(&server.into_model().unwrap(), &plain);
}

/// A sampled level takes only the sampled rows, their gradients clipped: the whole sample is
/// the plain step; an empty one is all zeros; a half sample of the root level sums to the
/// gradients of exactly those rows; the leaf sums of a grown tree add up to the root's.
#[test]
fn sampled_levels_and_leaf_sums_take_exactly_the_sampled_rows() {
    let (x, y) = synthetic(3000, 6);
    let p = params(1, 2);
    let mut server = GbdtServer::new(p, x.ncols()).unwrap();
    let mut cache = GbdtCache::new();
    // Stats and bins, then the root level.
    for _ in 0..2 {
        let i = server.next().unwrap();
        let v = gbdt_compute(&i, x.view(), y.view(), &mut cache).unwrap();
        server.absorb(&v).unwrap();
    }
    let root = server.next().unwrap();
    let plain = gbdt_compute(&root, x.view(), y.view(), &mut cache).unwrap();
    let all = vec![true; x.nrows()];
    let sample = |include: &[bool], clip: f64, cache: &mut GbdtCache| {
        let s = LevelSample {
            include,
            grad_clip: clip,
        };
        gbdt_compute_sampled(&root, x.view(), y.view(), cache, Some(s)).unwrap()
    };
    assert_eq!(sample(&all, 1.0, &mut cache), plain);
    assert!(sample(&vec![false; x.nrows()], 1.0, &mut cache)
        .iter()
        .all(|&v| v == 0.0));
    let half: Vec<bool> = (0..x.nrows()).map(|r| r % 2 == 0).collect();
    let base = match &root {
        GbdtInstruction::Level { model, .. } => model.base_score,
        _ => unreachable!(),
    };
    let p0 = sigmoid(base);
    let expected: f64 = y
        .iter()
        .step_by(2)
        .map(|&v| (p0 - f64::from(v)).clamp(-0.3, 0.3))
        .sum();
    let got = sample(&half, 0.3, &mut cache);
    let nb = got.len() / x.ncols() / 2;
    let g: f64 = (0..nb).map(|b| got[2 * b]).sum();
    assert!((g - expected).abs() < 1e-6, "{g} vs {expected}");
    let h: f64 = (0..nb).map(|b| got[2 * b + 1]).sum();
    assert!(h <= 0.25 * 1500.0 + 1e-9 && h > 0.0);
    // A bad sample is refused, not indexed.
    let short = LevelSample {
        include: &all[1..],
        grad_clip: 1.0,
    };
    assert!(gbdt_compute_sampled(&root, x.view(), y.view(), &mut cache, Some(short)).is_err());

    // Grow the tree with the plain server: its leaf sums add up to the root totals.
    server.absorb(&plain).unwrap();
    while let Some(GbdtInstruction::Level { .. }) = server.next() {
        let i = server.next().unwrap();
        let v = gbdt_compute(&i, x.view(), y.view(), &mut cache).unwrap();
        server.absorb(&v).unwrap();
    }
    let model = server.into_model().unwrap();
    let mut trees = model.trees.clone();
    let tree = trees.pop().unwrap();
    let leaves = GbdtInstruction::Leaves {
        model: GbdtModel {
            trees,
            ..model.clone()
        },
        tree: tree.clone(),
    };
    let sums = gbdt_compute(&leaves, x.view(), y.view(), &mut cache).unwrap();
    assert_eq!(sums.len(), 2 * tree.n_leaves());
    let root_g: f64 = (0..nb).map(|b| plain[2 * b]).sum();
    let leaf_g: f64 = sums.iter().step_by(2).sum();
    assert!((root_g - leaf_g).abs() < 1e-6, "{root_g} vs {leaf_g}");
}

#[test]
fn restarted_participant_computes_the_identical_vector() {
    let (x, y) = synthetic(3000, 3);
    let parts = non_iid_split(&x, &y);
    let mut checked = 0;
    let _ = federate(&parts, &params(6, 3), |instr, caches| {
        if let GbdtInstruction::Level { model, tree, .. } = instr {
            if model.trees.len() >= 2 && tree.nodes.len() > 1 {
                // over the wire and with an empty cache
                let wire: GbdtInstruction =
                    serde_json::from_str(&serde_json::to_string(instr).unwrap()).unwrap();
                let (px, py) = &parts[2];
                let warm = gbdt_compute(instr, px.view(), py.view(), &mut caches[2]).unwrap();
                let cold =
                    gbdt_compute(&wire, px.view(), py.view(), &mut GbdtCache::new()).unwrap();
                assert_eq!(warm, cold);
                checked += 1;
            }
        }
    });
    assert!(checked >= 4, "{checked}");
}

#[test]
fn tree_shape_respects_depth_and_leaf_limits() {
    let (x, y) = synthetic(4000, 5);
    let mut p = params(5, 5);
    p.max_leaves = 7;
    let m = fit_pooled(x.view(), y.view(), &p).unwrap();
    for t in &m.trees {
        assert!(t.n_leaves() <= 7);
        t.validate(&m.bin_mapper, true).unwrap();
    }
    // depth: follow every path
    fn depth(t: &Tree, i: usize) -> usize {
        match t.nodes[i] {
            Node::Split { left, right, .. } => {
                1 + depth(t, left as usize).max(depth(t, right as usize))
            }
            _ => 0,
        }
    }
    let p2 = params(5, 2);
    let m2 = fit_pooled(x.view(), y.view(), &p2).unwrap();
    assert!(m2.trees.iter().all(|t| depth(t, 0) <= 2));
    assert!(m2.trees.iter().any(|t| depth(t, 0) == 2));
}

#[test]
fn bad_inputs_are_refused_with_typed_errors() {
    let (x, y) = synthetic(500, 6);
    let p = params(3, 2);
    let mut server = GbdtServer::new(p.clone(), 6).unwrap();
    assert!(matches!(
        server.absorb(&[1.0; 3]),
        Err(GbdtError::Binning(BinningError::SumLength {
            step: "stats",
            expected: 20,
            got: 3
        }))
    ));
    assert_eq!(server.next().unwrap().purpose(), "stats"); // unchanged
    assert!(matches!(
        server.absorb(&[0.0; 20]),
        Err(GbdtError::Binning(BinningError::NoRows))
    ));
    assert_eq!(server.max_abs(), None);
    // drive to the first level, then send a short sum
    let mut cache = GbdtCache::new();
    for _ in 0..2 {
        let i = server.next().unwrap();
        let v = gbdt_compute(&i, x.view(), y.view(), &mut cache).unwrap();
        server.absorb(&v).unwrap();
    }
    let level = server.next().unwrap();
    assert_eq!(level.purpose(), "level");
    assert_eq!(server.max_abs(), Some(500.0));
    assert!(matches!(
        server.absorb(&vec![0.0; level.output_len() - 1]),
        Err(GbdtError::Binning(BinningError::SumLength {
            step: "level",
            ..
        }))
    ));
    let mut bad = vec![0.0; level.output_len()];
    bad[0] = f64::NAN;
    assert!(matches!(
        server.absorb(&bad),
        Err(GbdtError::Binning(BinningError::NonFinite { .. }))
    ));
    // participant side
    let mut y2 = y.clone();
    y2[3] = 2.0;
    assert!(matches!(
        gbdt_compute(&level, x.view(), y2.view(), &mut cache),
        Err(GbdtError::Binning(BinningError::BadLabel { row: 3, .. }))
    ));
    assert!(matches!(
        gbdt_compute(
            &level,
            x.slice_axis(Axis(1), Slice::from(..5)),
            y.view(),
            &mut cache
        ),
        Err(GbdtError::Binning(BinningError::ShapeMismatch { .. }))
    ));
    assert!(matches!(
        gbdt_compute(
            &level,
            x.view(),
            y.slice_axis(Axis(0), Slice::from(..10)),
            &mut cache
        ),
        Err(GbdtError::Binning(BinningError::ShapeMismatch {
            what: "labels",
            ..
        }))
    ));
    // a malformed tree (a child pointing back at the root) is refused, not looped on
    if let GbdtInstruction::Level { model, .. } = &level {
        let evil = GbdtInstruction::Level {
            model: model.clone(),
            tree: Tree {
                nodes: vec![
                    Node::Split {
                        feature: 0,
                        bin: 0,
                        threshold: 0.0,
                        default_left: true,
                        left: 0,
                        right: 1,
                        gain: 1.0,
                    },
                    Node::Open {
                        sum_grad: 0.0,
                        sum_hess: 0.0,
                        depth: 1,
                    },
                ],
            },
            nodes: vec![1],
        };
        assert!(matches!(
            gbdt_compute(&evil, x.view(), y.view(), &mut cache),
            Err(GbdtError::BadInstruction(_))
        ));
    }
    // parameters
    let mut q = p.clone();
    q.max_bins = 300;
    assert!(matches!(
        GbdtServer::new(q, 6),
        Err(GbdtError::Binning(BinningError::InvalidParameter {
            name: "max_bins",
            ..
        }))
    ));
    assert!(GbdtServer::new(p.clone(), 0).is_err());
    // finishing, then absorbing again
    let m = fit_pooled(x.view(), y.view(), &p).unwrap();
    assert!(matches!(
        m.predict_proba(x.slice_axis(Axis(1), Slice::from(..4))),
        Err(GbdtError::Binning(BinningError::ShapeMismatch { .. }))
    ));
    let mut s = GbdtServer::new(p, 6).unwrap();
    let mut c = GbdtCache::new();
    while let Some(i) = s.next() {
        let v = gbdt_compute(&i, x.view(), y.view(), &mut c).unwrap();
        s.absorb(&v).unwrap();
    }
    assert!(s.is_done() && s.model().is_some());
    assert!(matches!(s.absorb(&[0.0]), Err(GbdtError::Finished)));
}

/// Minimal CSV reader for the shipped data (no quoted fields in these files).
fn read_csv(path: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(|s| s.trim().to_string()).collect())
        .collect();
    (header, rows)
}

#[test]
fn churn_data_test_auc() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/wa_churn.csv");
    let (header, rows) = read_csv(path);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let num = |v: &str| v.parse::<f32>().unwrap_or(f32::NAN);
    let is = |v: &str, w: &str| f32::from(u8::from(v == w));
    let (c_tenure, c_monthly, c_total) =
        (col("tenure"), col("monthly_charges"), col("total_charges"));
    let (c_contract, c_internet, c_pay) = (
        col("contract"),
        col("internet_service"),
        col("payment_method"),
    );
    let binary = [
        "senior_citizen",
        "partner",
        "dependents",
        "paperless_billing",
    ]
    .map(col);
    let (c_sec, c_tech, c_churn) = (col("online_security"), col("tech_support"), col("churn"));
    let n = rows.len();
    let d = 13;
    let mut x = Array2::<f32>::zeros((n, d));
    let mut labels = Array2::<f32>::zeros((n, 1));
    for (r, row) in rows.iter().enumerate() {
        let mut v = vec![
            num(&row[c_tenure]),
            num(&row[c_monthly]),
            num(&row[c_total]),
        ];
        v.extend(binary.iter().map(|&c| num(&row[c])));
        v.push(is(&row[c_contract], "Month-to-month"));
        v.push(is(&row[c_contract], "Two year"));
        v.push(is(&row[c_internet], "Fiber optic"));
        v.push(is(&row[c_internet], "No"));
        v.push(is(&row[c_pay], "Electronic check"));
        v.push(is(&row[c_sec], "Yes") + is(&row[c_tech], "Yes"));
        for (j, val) in v.into_iter().enumerate() {
            x[[r, j]] = val;
        }
        labels[[r, 0]] = is(&row[c_churn], "Yes");
    }
    assert_eq!(x.column(2).iter().filter(|v| v.is_nan()).count(), 11);
    let table = crate::table::Table {
        feature_names: (0..d).map(|j| format!("f{j}")).collect(),
        x,
        label_names: vec!["churn".into()],
        labels,
        ids: (0..n).map(|r| r.to_string()).collect(),
    };
    let (train, test) = table.split_holdout(0.2, 0);
    let p = GbdtParams {
        n_trees: 50,
        max_depth: 4,
        max_leaves: 16,
        learning_rate: 0.1,
        ..GbdtParams::default()
    };
    let model = fit_pooled(train.x.view(), train.label(0), &p).unwrap();
    let scores = model.predict_proba(test.x.view()).unwrap();
    let a = auc(&scores, &test.label(0).to_vec());
    assert!(a > 0.80, "test AUC {a}");
    eprintln!(
        "wa_churn GBDT test AUC = {a:.4} ({} trees)",
        model.trees.len()
    );
}

/// Routing raw values (`predict_margin`) equals binning then routing, also for values equal
/// to a cut point, just beside one, missing, and at the ends of the f32 range.
#[test]
fn raw_routing_equals_binned_routing_at_the_cuts() {
    let (x, y) = synthetic(3000, 9);
    let model = fit_pooled(x.view(), y.view(), &params(12, 4)).unwrap();
    let cands: Vec<Vec<f32>> = (0..x.ncols())
        .map(|j| {
            let mut v = vec![f32::NAN, f32::MAX, -f32::MAX, 0.0];
            for &c in model.bin_mapper.cuts(j) {
                v.extend([c, c - c.abs() * 1e-7 - 1e-30, c + c.abs() * 1e-7 + 1e-30]);
            }
            v
        })
        .collect();
    let n = cands.iter().map(Vec::len).max().unwrap() * 3;
    let edge = ndarray::Array2::from_shape_fn((n, x.ncols()), |(r, j)| {
        cands[j][(r * (j + 1)) % cands[j].len()]
    });
    let binned = model.bin_mapper.bin(edge.view()).unwrap();
    assert_eq!(
        model.predict_margin(edge.view()).unwrap(),
        model.predict_margin_binned(binned.view()).unwrap()
    );
    // A column count that does not fit is refused.
    assert!(model
        .predict_margin(edge.slice_axis(Axis(1), Slice::from(1..)))
        .is_err());
}

/// Time per tree of the participant half on one participant's rows (1,000,000 × 50 by
/// default, `FEDSILO_GBDT_TIMING_ROWS`), for development: `cargo test -p fedsilo-ml --release
/// -- --ignored --nocapture participant_time_per_tree`.
#[test]
#[ignore]
fn participant_time_per_tree() {
    let n: usize = std::env::var("FEDSILO_GBDT_TIMING_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let f = 50;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut x = Array2::<f32>::zeros((n, f));
    let mut y = Array1::<f32>::zeros(n);
    for r in 0..n {
        let mut z = -1.2;
        for j in 0..f {
            let v: f32 = rng.random_range(-2.0..2.0);
            x[[r, j]] = v;
            if j < 8 {
                z += 0.5 * f64::from(v) * if j % 2 == 0 { 1.0 } else { -1.0 };
            }
        }
        y[r] = f32::from(u8::from(rng.random_bool(sigmoid(z))));
    }
    let p = GbdtParams {
        n_trees: 5,
        max_depth: 6,
        max_leaves: 64,
        learning_rate: 0.1,
        max_bins: 255,
        ..GbdtParams::default()
    };
    let mut server = GbdtServer::new(p, f).unwrap();
    let mut cache = GbdtCache::new();
    // CPU time of this process (user + system, clock ticks of 10 ms): the machine may be shared.
    let cpu = || {
        let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let tail = s.rsplit(')').next().unwrap_or("").to_string();
        let v: Vec<f64> = tail
            .split_whitespace()
            .map(|t| t.parse().unwrap_or(0.0))
            .collect();
        (v.get(11).copied().unwrap_or(0.0) + v.get(12).copied().unwrap_or(0.0)) * 10.0
    };
    let mut cpu_ends = Vec::new();
    let start = std::time::Instant::now();
    let mut ends = Vec::new();
    let mut compute = std::time::Duration::ZERO;
    while let Some(instr) = server.next() {
        let t = std::time::Instant::now();
        let v = gbdt_compute(&instr, x.view(), y.view(), &mut cache).unwrap();
        if matches!(instr, GbdtInstruction::Level { .. }) && !ends.is_empty() {
            compute += t.elapsed();
        }
        let t = std::time::Instant::now();
        server.absorb(&v).unwrap();
        if server.trees_done() > ends.len() {
            ends.push(std::time::Instant::now());
            cpu_ends.push(cpu());
            println!(
                "tree {} at {:.0} ms (absorb {:.1} ms)",
                ends.len(),
                (ends[ends.len() - 1] - start).as_secs_f64() * 1e3,
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    let steady: Vec<f64> = ends
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
        .collect();
    let cpu_steady: Vec<f64> = cpu_ends.windows(2).map(|w| w[1] - w[0]).collect();
    println!(
        "{n} rows × {f}: trees 2..: {steady:.0?} ms wall, {cpu_steady:.0?} ms CPU; participant \
         compute {:.0} ms per tree",
        compute.as_secs_f64() * 1e3 / steady.len() as f64
    );
}

/// Steps of a server run, each with its full and (when it has one) delta instruction, the
/// sum over `parts` of the full one's vectors, and the server state before it.
fn steps_with_deltas(
    parts: &[(Array2<f32>, Array1<f32>)],
    p: &GbdtParams,
    noised: bool,
) -> Vec<(GbdtInstruction, Option<GbdtInstruction>)> {
    let mut server = GbdtServer::new(p.clone(), parts[0].0.ncols()).unwrap();
    if noised {
        server = server.with_noised_levels();
    }
    let mut caches: Vec<GbdtCache> = parts.iter().map(|_| GbdtCache::new()).collect();
    let mut out = Vec::new();
    while let Some(full) = server.next() {
        let mut sum = vec![0.0; full.output_len()];
        for ((x, y), c) in parts.iter().zip(caches.iter_mut()) {
            let v = gbdt_compute(&full, x.view(), y.view(), c).unwrap();
            sum.iter_mut().zip(&v).for_each(|(s, a)| *s += a);
        }
        out.push((full, server.next_delta()));
        let json = serde_json::to_string(&server).unwrap();
        server = serde_json::from_str(&json).unwrap();
        server.absorb(&sum).unwrap();
    }
    out
}

/// Participants sent deltas, each keeping its own state, compute exactly the vectors of
/// participants sent the whole model every time (plain and noised levels, whose leaf steps
/// are deltas too), and hold the state the full instruction describes; every level but the
/// job's first has a delta form.
#[test]
fn delta_instructions_give_the_vectors_of_full_ones() {
    for noised in [false, true] {
        let (x, y) = synthetic(3000, 7);
        let parts = non_iid_split(&x, &y);
        let steps = steps_with_deltas(&parts, &params(5, 3), noised);
        let mut caches: Vec<GbdtCache> = parts.iter().map(|_| GbdtCache::new()).collect();
        let (mut levels, mut deltas) = (0, 0);
        for (full, delta) in &steps {
            let sent = match (full, delta) {
                (GbdtInstruction::Level { .. } | GbdtInstruction::Leaves { .. }, d) => {
                    levels += 1;
                    d.as_ref().unwrap_or(full)
                }
                (_, None) => full,
                (_, Some(d)) => panic!("a delta for a binning step: {d:?}"),
            };
            if delta.is_some() {
                deltas += 1;
                assert_eq!(sent.output_len(), full.output_len());
            }
            for ((x, y), c) in parts.iter().zip(caches.iter_mut()) {
                let want = gbdt_compute(full, x.view(), y.view(), &mut GbdtCache::new()).unwrap();
                let got = gbdt_compute(sent, x.view(), y.view(), c).unwrap();
                assert_eq!(got, want, "{}", full.purpose());
                if let GbdtInstruction::Level { model, tree, .. }
                | GbdtInstruction::Leaves { model, tree } = full
                {
                    let held = c.state().unwrap();
                    assert_eq!((&held.model, &held.tree), (model, tree));
                    assert_eq!(held.digest, state_digest(model, tree));
                }
            }
        }
        assert!(levels > 10, "{levels} level steps");
        assert_eq!(deltas, levels - 1, "only the first level is sent whole");
    }
}

/// A delta applied to any state but its base is refused, by name: no state (restarted), a
/// state a step behind (missed a round), a state a step ahead (a replayed, stale
/// instruction); a retried step's delta is accepted again; a delta naming a node the tree
/// does not have, replacing a split, or whose result is not the coordinator's state is
/// refused too, the last dropping the state.
#[test]
fn a_delta_on_the_wrong_base_is_refused_by_name() {
    let (x, y) = synthetic(2000, 8);
    let steps = steps_with_deltas(&[(x.clone(), y.clone())], &params(4, 3), false);
    let deltas: Vec<(&GbdtInstruction, &GbdtInstruction)> = steps
        .iter()
        .filter_map(|(f, d)| d.as_ref().map(|d| (f, d)))
        .collect();
    let delta_of = |i: &GbdtInstruction| i.delta().unwrap().clone();
    let run = |i: &GbdtInstruction, c: &mut GbdtCache| gbdt_compute(i, x.view(), y.view(), c);
    // A participant that computed step k - 1 (full), then k and k + 1 as deltas.
    let k = 4;
    let (prev_full, _) = deltas[k - 1];
    let (_, dk) = deltas[k];
    let (_, dk1) = deltas[k + 1];
    let mut cache = GbdtCache::new();
    run(prev_full, &mut cache).unwrap();
    let behind = cache.state().unwrap().digest;
    let vk = run(dk, &mut cache).unwrap();
    // Retried step k: its result is what this participant holds; accepted, same vector.
    assert_eq!(run(dk, &mut cache).unwrap(), vk);

    // Restarted: no state.
    match run(dk1, &mut GbdtCache::new()) {
        Err(GbdtError::Delta(DeltaError::NoState { base })) => assert_eq!(base, delta_of(dk1).base),
        other => panic!("{other:?}"),
    }
    // Missed step k: holds the state before it.
    let mut missed = GbdtCache::new();
    run(prev_full, &mut missed).unwrap();
    match run(dk1, &mut missed) {
        Err(GbdtError::Delta(DeltaError::WrongBase { base, held })) => {
            assert_eq!((base, held), (delta_of(dk1).base, behind));
        }
        other => panic!("{other:?}"),
    }
    let e = run(dk1, &mut missed).unwrap_err().to_string();
    assert!(e.contains("missed, stale or replayed"), "{e}");

    // A delta naming a node the tree does not have, or replacing a split: refused before
    // anything changes (the genuine delta still applies after).
    let mut bad = delta_of(dk1);
    bad.set.push((999, Node::Leaf { value: 0.0 }));
    let unknown = GbdtInstruction::LevelDelta {
        delta: bad,
        n_features: x.ncols(),
        n_bins: 33,
        nodes: vec![],
    };
    match run(&unknown, &mut cache) {
        Err(GbdtError::Delta(DeltaError::UnknownNode { node: 999, len })) => {
            assert_eq!(len, cache.state().unwrap().tree.nodes.len());
        }
        other => panic!("{other:?}"),
    }
    let split_at = cache
        .state()
        .unwrap()
        .tree
        .nodes
        .iter()
        .position(|n| matches!(n, Node::Split { .. }));
    if let Some(s) = split_at {
        let mut bad = delta_of(dk1);
        bad.set = vec![(s as u32, Node::Leaf { value: 0.0 })];
        let GbdtInstruction::LevelDelta { nodes, .. } = dk1 else {
            panic!("{dk1:?}");
        };
        let replaces = GbdtInstruction::LevelDelta {
            delta: bad,
            n_features: x.ncols(),
            n_bins: 33,
            nodes: nodes.clone(),
        };
        match run(&replaces, &mut cache) {
            Err(GbdtError::Delta(DeltaError::ReplacesSplit { node })) => {
                assert_eq!(node as usize, s)
            }
            other => panic!("{other:?}"),
        }
    }
    // Declared shape other than the state's.
    let GbdtInstruction::LevelDelta { nodes, .. } = dk1 else {
        panic!("{dk1:?}");
    };
    let shape = GbdtInstruction::LevelDelta {
        delta: delta_of(dk1),
        n_features: x.ncols(),
        n_bins: 34,
        nodes: nodes.clone(),
    };
    assert!(matches!(
        run(&shape, &mut cache),
        Err(GbdtError::Delta(DeltaError::Shape {
            what: "histogram bins",
            expected: 34,
            got: 33
        }))
    ));
    // The state is not the one the shape check saw refused: it moved to step k + 1 and the
    // genuine delta is its retry.
    let vk1 = run(dk1, &mut cache).unwrap();
    assert_eq!(vk1, run(dk1, &mut cache).unwrap());
    // Replayed step k (stale): the participant is a step ahead of its base.
    match run(dk, &mut cache) {
        Err(GbdtError::Delta(DeltaError::WrongBase { base, .. })) => {
            assert_eq!(base, delta_of(dk).base)
        }
        other => panic!("{other:?}"),
    }

    // A result other than the coordinator's state: refused, and the state dropped.
    let (_, dk2) = deltas[k + 2];
    let mut wrong = delta_of(dk2);
    if let Some((_, Node::Split { gain, .. })) = wrong.set.first_mut() {
        *gain += 1.0;
    } else if let Some((_, Node::Leaf { value })) = wrong.set.first_mut() {
        *value += 1.0;
    } else {
        wrong.push.push(Node::Leaf { value: 0.0 });
    }
    let tampered = match dk2 {
        GbdtInstruction::LevelDelta {
            n_features,
            n_bins,
            nodes,
            ..
        } => GbdtInstruction::LevelDelta {
            delta: wrong,
            n_features: *n_features,
            n_bins: *n_bins,
            nodes: nodes.clone(),
        },
        other => panic!("{other:?}"),
    };
    match run(&tampered, &mut cache) {
        Err(GbdtError::Delta(DeltaError::Digest { expected, .. })) => {
            assert_eq!(expected, delta_of(dk2).digest)
        }
        Err(GbdtError::Delta(DeltaError::Invalid(_))) => {}
        other => panic!("{other:?}"),
    }
    assert!(cache.state().is_none());
    assert!(matches!(
        run(dk2, &mut cache),
        Err(GbdtError::Delta(DeltaError::NoState { .. }))
    ));
}

/// The instruction for tree N no longer grows with N: each tree's largest delta stays
/// within a bound set by one tree, while the full instruction carrying the model so far
/// grows with every tree.
#[test]
fn delta_instruction_size_does_not_grow_with_the_tree_number() {
    let (x, y) = synthetic(3000, 9);
    let n_trees = 16;
    let steps = steps_with_deltas(&[(x, y)], &params(n_trees, 3), false);
    let mut full_by_tree = vec![0usize; n_trees];
    let mut delta_by_tree = vec![0usize; n_trees];
    for (full, delta) in &steps {
        let GbdtInstruction::Level { model, .. } = full else {
            continue;
        };
        let t = model.trees.len();
        let len = |i: &GbdtInstruction| serde_json::to_vec(i).unwrap().len();
        full_by_tree[t] = full_by_tree[t].max(len(full));
        if let Some(d) = delta {
            delta_by_tree[t] = delta_by_tree[t].max(len(d));
        }
    }
    assert!(
        full_by_tree[n_trees - 1] > full_by_tree[1] + 8 * (full_by_tree[2] - full_by_tree[1]) / 2,
        "the full form grows with the model: {full_by_tree:?}"
    );
    // One tree's worth, bounded by the first trees' deltas.
    let bound = delta_by_tree[1..4].iter().max().copied().unwrap() * 3 / 2;
    for (t, &d) in delta_by_tree.iter().enumerate().skip(1) {
        assert!(
            d > 0 && d <= bound,
            "tree {t}: {d} B > {bound} B ({delta_by_tree:?})"
        );
    }
    assert!(delta_by_tree[n_trees - 1] * 4 < full_by_tree[n_trees - 1]);
}
