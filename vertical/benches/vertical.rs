//! Costs of the vertical protocols: the Paillier operations at a 2048-bit modulus, one
//! vertical-LR iteration and one SecureBoost tree, both parties in one process (so the
//! figures are the sum of both parties' CPU on this machine's cores, without the network).
//!
//! `cargo bench -p fedsilo-vertical --bench vertical` (pure-Rust backend) or
//! `cargo bench -p fedsilo-vertical --no-default-features --features gmp --bench vertical`
//! (GMP; the group names carry the backend); sizes by `VERTICAL_BENCH_ROWS` (default 2,000),
//! `VERTICAL_BENCH_ACTIVE` (10) and `VERTICAL_BENCH_PASSIVE` (30) columns. The protocol
//! benches also print the process CPU seconds per iteration (both cores), as the figures
//! compare per core; with `VERTICAL_BENCH_ONCE=1` each protocol runs once, measured, instead
//! of criterion's ten samples (for large shapes; criterion's name filter does not apply to
//! these runs, `VERTICAL_BENCH_ONLY=secureboost` or `=lr` picks one).

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};
use fedsilo_ml::gbdt::GbdtParams;
use fedsilo_ml::optim::ServerOptimizer;
use fedsilo_vertical::boost::{ActiveBoost, PassiveBoost};
use fedsilo_vertical::he::BACKEND;
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

/// CPU seconds (user + system) of this process so far, from `/proc/self/stat` (Linux; 0
/// elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // the fields after the parenthesised command name; utime and stime are the 12th and 13th
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // clock ticks: 100 per second on Linux
    f.iter().sum::<f64>() / 100.0
}

/// Whether `VERTICAL_BENCH_ONLY` (a substring of a protocol bench's name, e.g.
/// `secureboost`) selects `name`; unset, every one runs. Criterion's name filter does not
/// reach the `VERTICAL_BENCH_ONCE` runs, this does.
fn selected(name: &str) -> bool {
    std::env::var("VERTICAL_BENCH_ONLY").map_or(true, |only| name.contains(only.as_str()))
}

/// Benchmarks `routine` on a fresh `setup()` per iteration (criterion: wall time), and prints
/// the mean wall and CPU seconds per iteration over all of criterion's iterations (CPU of
/// the whole process, so parallel work counts every core it used).
fn per_iteration<S, T>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    once: bool,
    name: &str,
    mut setup: impl FnMut() -> S,
    mut routine: impl FnMut(S) -> T,
) {
    let (mut cpu, mut wall, mut count) = (0.0, 0.0, 0u64);
    if once && !selected(name) {
        return;
    }
    if once {
        // one measured run instead of criterion's ≥ 10 (large shapes on a loaded machine)
        let s = setup();
        let c0 = cpu_seconds();
        let t0 = std::time::Instant::now();
        std::hint::black_box(routine(s));
        eprintln!(
            "{name}: 1 iteration (VERTICAL_BENCH_ONCE), {:.3} s wall, {:.3} s CPU",
            t0.elapsed().as_secs_f64(),
            cpu_seconds() - c0
        );
        return;
    }
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let s = setup();
                let c0 = cpu_seconds();
                let t0 = std::time::Instant::now();
                std::hint::black_box(routine(s));
                total += t0.elapsed();
                cpu += cpu_seconds() - c0;
                count += 1;
            }
            wall += total.as_secs_f64();
            total
        })
    });
    if count > 0 {
        let c = count as f64;
        eprintln!(
            "{name}: {count} iterations, mean {:.3} s wall, {:.3} s CPU per iteration",
            wall / c,
            cpu / c
        );
    }
}

/// Benchmarks `op` (criterion: wall time) and prints its mean wall and CPU time per call
/// over all of criterion's calls.
fn per_call<T>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, mut op: impl FnMut() -> T) {
    let (mut cpu, mut wall, mut count) = (0.0, 0.0, 0u64);
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let c0 = cpu_seconds();
            let t0 = std::time::Instant::now();
            for _ in 0..iters {
                std::hint::black_box(op());
            }
            let total = t0.elapsed();
            cpu += cpu_seconds() - c0;
            wall += total.as_secs_f64();
            count += iters;
            total
        })
    });
    if count > 0 {
        let c = count as f64;
        eprintln!(
            "{name}: {count} calls, mean {:.1} µs wall, {:.1} µs CPU per call",
            wall / c * 1e6,
            cpu / c * 1e6
        );
    }
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
    let mut g = c.benchmark_group(format!("paillier_2048_{BACKEND}"));
    g.sample_size(20);
    per_call(&mut g, "encrypt_public_key", || {
        pk.encrypt(&mut r, &x).unwrap()
    });
    // the key owner's first encryption builds its fixed-base table (once per key)
    g.sample_size(10);
    per_iteration(
        &mut g,
        false,
        "owner_table_first_encrypt",
        || SecretKey::generate(&mut ChaCha20Rng::seed_from_u64(6), 2048).unwrap(),
        |sk| {
            sk.encrypt_one(&mut ChaCha20Rng::seed_from_u64(7), &x)
                .unwrap()
        },
    );
    g.sample_size(20);
    per_call(&mut g, "encrypt_owner_short_exp", || {
        sk.encrypt_one(&mut r, &x).unwrap()
    });
    let xs = vec![x.clone(); 256];
    per_call(&mut g, "encrypt_owner_batch_256", || {
        sk.encrypt_batch(&mut r, &xs).unwrap()
    });
    per_call(&mut g, "decrypt_owner", || sk.decrypt_one(&ct).unwrap());
    per_call(&mut g, "add", || pk.add(&ct, &ct));
    let e = BigInt::from((1u64 << 32) - 5);
    per_call(&mut g, "scalar_mul_32bit", || pk.mul_pos(&ct, &e).unwrap());
    let cts = sk.encrypt_batch(&mut r, &xs).unwrap();
    let exps: Vec<u64> = (0..256u64)
        .map(|i| (i * 2_654_435_761) % (1 << 32))
        .collect();
    per_call(&mut g, "multi_exp_256x32bit", || {
        pk.multi_exp(&cts, &exps, 32)
    });
    // one packed histogram ciphertext of SecureBoost at 100k rows: 20 slots of 98 bits,
    // re-randomised — by a separate Enc(0) (before) and with ρⁿ on the packing's squarings
    let slots: Vec<Option<fedsilo_vertical::he::Ciphertext>> =
        cts.iter().take(20).cloned().map(Some).collect();
    let shift = BigInt::from(1) << 98u32;
    per_call(&mut g, "pack_20x98_then_enc0", || {
        let mut acc = pk.one();
        for c in slots.iter().rev().flatten() {
            acc = pk.add(&pk.mul_pos(&acc, &shift).unwrap(), c);
        }
        let z = pk.encrypt_zeros(&mut r, 1).unwrap();
        pk.add(&acc, &z[0])
    });
    per_call(&mut g, "pack_20x98_rerandomised", || {
        let rho = pk.nonces(&mut r, 1);
        pk.pack_rerandomised(&slots, 98, &rho[0]).unwrap()
    });
    g.finish();
}

fn protocols(c: &mut Criterion) {
    let n = env("VERTICAL_BENCH_ROWS", 2000);
    let da = env("VERTICAL_BENCH_ACTIVE", 10);
    let dp = env("VERTICAL_BENCH_PASSIVE", 30);
    let (xa, xp, y) = data(n, da, dp);
    let mut r = ChaCha20Rng::seed_from_u64(2);
    let mut g = c.benchmark_group(format!("vertical_{BACKEND}_{n}x{da}+{dp}"));
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    let cfg = LrConfig::new(1, ServerOptimizer::FedAvg { lr: 1.0 });
    // a key whose fixed-base table is built (once per key, outside the timing)
    let key = || {
        let sk = SecretKey::generate(&mut ChaCha20Rng::seed_from_u64(5), 2048).unwrap();
        sk.encrypt_one(&mut ChaCha20Rng::seed_from_u64(8), &BigInt::from(0))
            .unwrap();
        sk
    };
    // VERTICAL_BENCH_ONCE: one measured run each (criterion's filter is not applied to it)
    let once = std::env::var_os("VERTICAL_BENCH_ONCE").is_some();
    per_iteration(&mut g, once, "lr_iteration", key, |sk| {
        let (mut a, mut to_p) = ActiveLr::new(cfg.clone(), sk, xa.view(), y.view(), &[dp]).unwrap();
        let mut p = PassiveLr::new(cfg.clone(), xp.view()).unwrap();
        while let Some((_, m)) = to_p.pop() {
            if let Some(ans) = p.handle(&mut r, m).unwrap() {
                to_p.extend(a.handle(&mut r, 0, ans).unwrap());
            }
        }
        assert!(a.is_done());
    });
    let params = GbdtParams {
        n_trees: 1,
        ..GbdtParams::default()
    };
    let mut r = ChaCha20Rng::seed_from_u64(4);
    per_iteration(&mut g, once, "secureboost_tree", key, |sk| {
        let (mut a, to_p) =
            ActiveBoost::new(&mut r, params.clone(), sk, xa.view(), y.view(), &[dp]).unwrap();
        let mut p = PassiveBoost::new(params.clone(), xp.view()).unwrap();
        let mut queue: std::collections::VecDeque<_> = to_p.into_iter().collect();
        while let Some((_, m)) = queue.pop_front() {
            if let Some(ans) = p.handle(&mut r, m).unwrap() {
                queue.extend(a.handle(&mut r, 0, ans).unwrap());
            }
        }
        assert!(a.is_done());
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
    per_call(&mut g, "lr_gradient", || {
        fedsilo_ml::linear::loss_grad_sum(&p, x.view(), y.view(), 1.0).unwrap()
    });
    let params = GbdtParams {
        n_trees: 1,
        ..GbdtParams::default()
    };
    per_call(&mut g, "gbdt_tree", || {
        fedsilo_ml::gbdt::fit_pooled(x.view(), y.view(), &params).unwrap()
    });
    g.finish();
}

criterion_group!(benches, paillier, protocols, baselines);
criterion_main!(benches);
