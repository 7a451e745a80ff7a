//! The attacks find membership where a model memorised its rows, and nothing where it never
//! saw them.

use fedsilo_ml::gbdt::GbdtParams;
use fedsilo_ml::table::Table;
use fedsilo_task::{fit_pooled, JobSpec, ModelSpec};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::attack::{loss_attack, Shadows};
use super::*;

/// Rows of pure noise: six uniform features and a coin-flip label, so whatever a model
/// learns about a row's label it learnt from that row.
fn noise(n: usize, seed: u64) -> Table {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Table {
        feature_names: (0..6).map(|i| format!("f{i}")).collect(),
        x: Array2::from_shape_fn((n, 6), |_| rng.random::<f32>()),
        label_names: vec!["y".into()],
        labels: Array2::from_shape_fn((n, 1), |_| f32::from(u8::from(rng.random_bool(0.5)))),
        ids: (0..n).map(|i| format!("{seed}-{i}")).collect(),
    }
}

/// Many deep trees with no regularisation: they memorise their training rows.
fn overfitting_gbdt() -> JobSpec {
    let mut spec = JobSpec::new("d", 1);
    spec.model = ModelSpec::Gbdt(GbdtParams {
        n_trees: 60,
        max_depth: 6,
        max_leaves: 64,
        learning_rate: 0.3,
        min_child_weight: 0.01,
        lambda: 0.0,
        ..GbdtParams::default()
    });
    spec
}

#[test]
fn the_loss_attack_finds_memorised_rows_and_not_unseen_ones() {
    let spec = overfitting_gbdt();
    let (members, non_members, other) = (noise(300, 1), noise(300, 2), noise(300, 3));
    let overfit = fit_pooled(&spec, &members).unwrap();
    let hit = loss_attack(&overfit, &members, &non_members, 0).unwrap();
    eprintln!("over-fitted GBDT: loss attack {hit:?}");
    assert!(
        hit.auc > 0.8,
        "loss attack on memorised rows: AUC {}",
        hit.auc
    );
    assert!(hit.tpr_at_1pct > 0.0, "{hit:?}");
    // A model that never saw either side: the attack is guessing.
    let blind = fit_pooled(&spec, &other).unwrap();
    let miss = loss_attack(&blind, &members, &non_members, 0).unwrap();
    eprintln!("model of other rows: loss attack {miss:?}");
    assert!((miss.auc - 0.5).abs() < 0.08, "AUC {}", miss.auc);
}

#[test]
fn lira_finds_memorised_rows_and_not_unseen_ones() {
    let spec = overfitting_gbdt();
    let (members, non_members) = (noise(300, 1), noise(300, 2));
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let pop = Population::of(&[&members], &[&non_members]).unwrap();
    let ctx = Population::sample(&pop.train, &pop.holdout, &mut rng);
    assert_eq!((ctx.members.len(), ctx.non_members.len()), (300, 300));
    let shadows = Shadows::train(&spec, &pop.table, 2, 1000, &mut rng);
    assert_eq!(shadows.trained(), 4);
    let overfit = fit_pooled(&spec, &members).unwrap();
    let hit = shadows
        .lira(&overfit, &pop.table, &ctx.members, &ctx.non_members, 0)
        .unwrap();
    eprintln!("over-fitted GBDT: LiRA {hit:?}");
    assert!(hit.auc > 0.8, "LiRA on memorised rows: AUC {}", hit.auc);
    let blind = fit_pooled(&spec, &noise(300, 3)).unwrap();
    let miss = shadows
        .lira(&blind, &pop.table, &ctx.members, &ctx.non_members, 0)
        .unwrap();
    eprintln!("model of other rows: LiRA {miss:?}");
    assert!((miss.auc - 0.5).abs() < 0.08, "AUC {}", miss.auc);
}

#[test]
fn members_and_non_members_are_balanced_by_a_seeded_subsample() {
    // Two institutions: 500 + 40 training rows, 120 + 10 hold-out rows.
    let (ta, tb, ha, hb) = (noise(500, 4), noise(40, 5), noise(120, 6), noise(10, 7));
    let pop = Population::of(&[&ta, &tb], &[&ha, &hb]).unwrap();
    assert_eq!(pop.train, vec![0..500, 500..540]);
    assert_eq!(pop.holdout, vec![540..660, 660..670]);
    let pick = |seed| {
        Population::sample(
            &pop.train,
            &pop.holdout,
            &mut ChaCha8Rng::seed_from_u64(seed),
        )
    };
    let a = pick(1);
    assert_eq!((a.members.len(), a.non_members.len()), (130, 130));
    assert!(a.members.iter().all(|&i| i < 540));
    assert_eq!(a.non_members, (540..670).collect::<Vec<_>>());
    assert_eq!(pick(1).members, a.members);
    assert_ne!(pick(2).members, a.members);
    // The second institution alone: its 10 hold-out rows against 10 of its 40 training rows.
    let b = Population::sample(
        &pop.train[1..],
        &pop.holdout[1..],
        &mut ChaCha8Rng::seed_from_u64(1),
    );
    assert_eq!(b.non_members, (660..670).collect::<Vec<_>>());
    assert_eq!(b.members.len(), 10);
    assert!(b.members.iter().all(|i| (500..540).contains(i)));
}
