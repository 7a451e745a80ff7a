//! Costs of the vertical protocols: the Paillier operations at a 2048-bit modulus, one
//! vertical-LR iteration and one SecureBoost tree, both parties in one process (so the
//! figures are the sum of both parties' CPU on this machine's cores, without the network).
//!
//! `cargo bench -p fedsilo-vertical --bench vertical`; sizes by `VERTICAL_BENCH_ROWS`
//! (default 2,000), `VERTICAL_BENCH_ACTIVE` (10) and `VERTICAL_BENCH_PASSIVE` (30) columns.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use fedsilo_ml::gbdt::GbdtParams;
use fedsilo_ml::optim::ServerOptimizer;
use fedsilo_vertical::boost::{ActiveBoost, PassiveBoost};
use fedsilo_vertical::lr::{ActiveLr, LrConfig, PassiveLr};
use fedsilo_vertical::SecretKey;
use ndarray::{Array1, Array2};
use num_bigint::BigInt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn data(n: usize, da: usize, dp: usize) -> (Array2<f32>, Array2<f32>, Array1<f32>) {
    let mut r = ChaCha20Rng::seed_from_u64(3);
    let xa = Array2::from_shape_fn((n, da), |_| r.random_range(-2.0f32..2.0));
    let xp = Array2::from_shape_fn((n, dp), |_| r.random_range(-2.0f32..2.0));
    let y = Array1::from_shape_fn(n, |i| {
        let z: f32 = xa.row(i).sum() * 0.3 + xp.row(i).iter().take(5).sum::<f32>() * 0.3;
        if r.random::<f32>() < 1.0 / (1.0 + (-z).exp()) {
            1.0
        } else {
            0.0
        }
    });
    (xa, xp, y)
}

fn paillier(c: &mut Criterion) {
    let mut r = ChaCha20Rng::seed_from_u64(1);
    let sk = SecretKey::generate(&mut r, 2048).unwrap();
    let pk = sk.public().clone();
    let x = BigInt::from(123_456_789_i64);
    let ct = pk.encrypt(&mut r, &x).unwrap();
    let mut g = c.benchmark_group("paillier_2048");
    g.sample_size(20);
    g.bench_function("encrypt_public_key", |b| {
        b.iter(|| pk.encrypt(&mut r, &x).unwrap())
    });
    g.bench_function("encrypt_owner_crt", |b| {
        b.iter(|| sk.encrypt_one(&mut r, &x).unwrap())
    });
    g.bench_function("decrypt_owner_crt", |b| {
        b.iter(|| sk.decrypt_one(&ct).unwrap())
    });
    g.bench_function("add", |b| b.iter(|| pk.add_ct(&ct, &ct)));
    let e = BigInt::from((1u64 << 32) - 5);
    g.bench_function("scalar_mul_32bit", |b| {
        b.iter(|| pk.mul_ct(&ct, &e).unwrap())
    });
    g.finish();
}

fn protocols(c: &mut Criterion) {
    let n = env("VERTICAL_BENCH_ROWS", 2000);
    let da = env("VERTICAL_BENCH_ACTIVE", 10);
    let dp = env("VERTICAL_BENCH_PASSIVE", 30);
    let (xa, xp, y) = data(n, da, dp);
    let mut r = ChaCha20Rng::seed_from_u64(2);
    let mut g = c.benchmark_group(format!("vertical_{n}x{da}+{dp}"));
    g.sample_size(10);
    let cfg = LrConfig::new(1, ServerOptimizer::FedAvg { lr: 1.0 });
    g.bench_function("lr_iteration", |b| {
        b.iter_batched(
            || SecretKey::generate(&mut ChaCha20Rng::seed_from_u64(5), 2048).unwrap(),
            |sk| {
                let (mut a, mut to_p) =
                    ActiveLr::new(cfg.clone(), sk, xa.view(), y.view(), &[dp]).unwrap();
                let mut p = PassiveLr::new(cfg.clone(), xp.view()).unwrap();
                while let Some((_, m)) = to_p.pop() {
                    if let Some(ans) = p.handle(&mut r, m).unwrap() {
                        to_p.extend(a.handle(&mut r, 0, ans).unwrap());
                    }
                }
                assert!(a.is_done());
            },
            BatchSize::PerIteration,
        )
    });
    let params = GbdtParams {
        n_trees: 1,
        ..GbdtParams::default()
    };
    g.bench_function("secureboost_tree", |b| {
        b.iter_batched(
            || SecretKey::generate(&mut ChaCha20Rng::seed_from_u64(5), 2048).unwrap(),
            |sk| {
                let (mut a, to_p) =
                    ActiveBoost::new(&mut r, params.clone(), sk, xa.view(), y.view(), &[dp])
                        .unwrap();
                let mut p = PassiveBoost::new(params.clone(), xp.view()).unwrap();
                let mut queue: std::collections::VecDeque<_> = to_p.into_iter().collect();
                while let Some((_, m)) = queue.pop_front() {
                    if let Some(ans) = p.handle(&mut r, m).unwrap() {
                        queue.extend(a.handle(&mut r, 0, ans).unwrap());
                    }
                }
                assert!(a.is_done());
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// The same work in the clear on the joined table, in the same run: the baselines of the
/// ratios (one full-batch gradient of `fedsilo_ml::linear`, one pooled tree of
/// `fedsilo_ml::gbdt`).
fn baselines(c: &mut Criterion) {
    let n = env("VERTICAL_BENCH_ROWS", 2000);
    let da = env("VERTICAL_BENCH_ACTIVE", 10);
    let dp = env("VERTICAL_BENCH_PASSIVE", 30);
    let (xa, xp, y) = data(n, da, dp);
    let x = ndarray::concatenate(ndarray::Axis(1), &[xa.view(), xp.view()]).unwrap();
    let mut g = c.benchmark_group(format!("pooled_{n}x{da}+{dp}"));
    g.sample_size(10);
    let p = fedsilo_ml::linear::LinearParams::zeros(da + dp);
    g.bench_function("lr_gradient", |b| {
        b.iter(|| fedsilo_ml::linear::loss_grad_sum(&p, x.view(), y.view(), 1.0).unwrap())
    });
    let params = GbdtParams {
        n_trees: 1,
        ..GbdtParams::default()
    };
    g.bench_function("gbdt_tree", |b| {
        b.iter(|| fedsilo_ml::gbdt::fit_pooled(x.view(), y.view(), &params).unwrap())
    });
    g.finish();
}

criterion_group!(benches, paillier, protocols, baselines);
criterion_main!(benches);
