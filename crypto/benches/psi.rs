//! ECDH-PSI throughput: the whole exchange of `fedsilo_crypto::psi` between an active and a
//! passive party, both driven in this process on the global rayon pool (both cores), with
//! a baseline measured in the same run so that the figure is a ratio.
//!
//! 1. Criterion: the whole exchange at 10,000 × 10,000 ids, and the baseline (one
//!    variable-base Ristretto255 scalar multiplication + compression per point, on all
//!    cores), both in elements per second.
//! 2. A timed run at N × N ids (default 1,000,000 per side; 70 % shared; different row
//!    orders), ids generated chunk by chunk so only the parties' own state is held: wall
//!    time, CPU time, peak RSS of this process (both parties together), bytes each way, and
//!    the baseline of 4·N scalar multiplications (what ECDH-PSI costs at the least: two
//!    per id per side) timed just before.
//!
//! ```text
//! cargo bench -p fedsilo-crypto --bench psi
//! FEDSILO_BENCH_PSI_IDS=10000000 cargo bench -p fedsilo-crypto --bench psi   # 10M × 10M
//! FEDSILO_BENCH_PSI_IDS=0 cargo bench -p fedsilo-crypto --bench psi          # criterion part only
//! cargo bench -p fedsilo-crypto --bench psi -- none    # the N × N run only (filter matches nothing)
//! FEDSILO_BENCH_PSI_BASELINE=0 ...                    # without the 4·N baseline
//! ```

use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use fedsilo_crypto::keys::IdentityKey;
use fedsilo_crypto::psi::{PsiConfig, PsiOutput, PsiParty, Role};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use std::hint::black_box;

/// Ids pushed per `push_ids` call (generated on the fly).
const PUSH: usize = 1 << 16;

/// Customer number of row `r` of a party with `n` rows starting at customer `start`: a
/// permutation of `start..start + n` (multiplication by a unit mod n), so the parties'
/// row orders differ.
fn customer(r: u64, n: u64, start: u64, mult: u64) -> u64 {
    start + (r as u128 * mult as u128 % n as u128) as u64
}

fn unit(n: u64, mut m: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    while n > 1 && gcd(m, n) != 1 {
        m += 1;
    }
    m
}

struct Stats {
    a_to_p: u64,
    p_to_a: u64,
    a_msgs: u64,
    p_msgs: u64,
}

/// The whole exchange: `n` ids per side, the passive party's set shifted by 30 %.
fn exchange(n: u64, seed: u64, verbose: bool) -> (PsiOutput, PsiOutput, Stats) {
    let t0 = Instant::now();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let ka = Arc::new(IdentityKey::generate(&mut rng));
    let kp = Arc::new(IdentityKey::generate(&mut rng));
    let (pa, pp) = (ka.public_key(), kp.public_key());
    let cfg = PsiConfig::new("bench", 0);
    let mut a = PsiParty::new(cfg.clone(), Role::Active, ka, pp, &mut rng).expect("config");
    let mut p = PsiParty::new(cfg, Role::Passive, kp, pa, &mut rng).expect("config");
    let mut st = Stats {
        a_to_p: 0,
        p_to_a: 0,
        a_msgs: 0,
        p_msgs: 0,
    };
    // One message each way per step, so neither side's queue grows (what a relay that
    // forwards promptly gives).
    let mut next_report = 0u64;
    let mut pump = |a: &mut PsiParty, p: &mut PsiParty| loop {
        if verbose && st.a_msgs + st.p_msgs >= next_report {
            next_report += 60;
            let (x, y) = (a.progress(), p.progress());
            eprintln!(
                "  [{:.0} s] active: sent {}, doubled back {}, matched {}; passive: doubled {}, \
                 sent {}; RSS {} MiB",
                t0.elapsed().as_secs_f64(),
                x.own_sent,
                x.doubled_back,
                x.peer_received,
                y.peer_received,
                y.own_sent,
                rss_kib("VmRSS:").map_or("?".into(), |k| (k / 1024).to_string()),
            );
        }
        let mut moved = false;
        if let Some(m) = a.poll_transmit() {
            moved = true;
            st.a_to_p += m.wire_size() as u64;
            st.a_msgs += 1;
            p.handle_message(m).expect("passive");
        }
        if let Some(m) = p.poll_transmit() {
            moved = true;
            st.p_to_a += m.wire_size() as u64;
            st.p_msgs += 1;
            a.handle_message(m).expect("active");
        }
        if !moved {
            break;
        }
    };
    pump(&mut a, &mut p);
    let shift = n * 3 / 10;
    let (ma, mp) = (unit(n, 7_919), unit(n, 104_729));
    let push = |party: &mut PsiParty, start: u64, mult: u64| {
        let mut r = 0;
        while r < n {
            let end = (r + PUSH as u64).min(n);
            let ids: Vec<String> = (r..end)
                .map(|i| format!("CUST-{:010}", customer(i, n, start, mult)))
                .collect();
            party.push_ids(&ids).expect("ids");
            r = end;
        }
    };
    // The passive party's ids first (its chunks wait for the active stream), then the
    // active party's, streamed: each pushed chunk's encodings are sent and doubled at once.
    push(&mut p, shift, mp);
    p.finish_ids(&mut rng).expect("passive ids");
    if verbose {
        eprintln!(
            "  [{:.0} s] passive ids encoded",
            t0.elapsed().as_secs_f64()
        );
    }
    push(&mut a, 0, ma);
    a.finish_ids(&mut rng).expect("active ids");
    if verbose {
        eprintln!("  [{:.0} s] active ids encoded", t0.elapsed().as_secs_f64());
    }
    pump(&mut a, &mut p);
    let (oa, op) = (
        a.output().expect("active done").clone(),
        p.output().expect("passive done").clone(),
    );
    (oa, op, st)
}

/// `count` variable-base scalar multiplications + compressions, on all cores.
fn baseline(count: usize, seed: u64) -> usize {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut wide = [0u8; 64];
    rng.fill_bytes(&mut wide);
    let k = Scalar::from_bytes_mod_order_wide(&wide);
    rng.fill_bytes(&mut wide);
    let base = RistrettoPoint::from_uniform_bytes(&wide);
    // distinct points: base · (i + 1) via repeated addition is cheap next to the products
    let points: Vec<RistrettoPoint> = (0..count.min(4096))
        .scan(base, |acc, _| {
            *acc += base;
            Some(*acc)
        })
        .collect();
    (0..count)
        .into_par_iter()
        .map(|i| {
            let p = points.get(i % points.len()).copied().unwrap_or(base);
            (p * k).compress().as_bytes()[0] as usize
        })
        .sum()
}

/// CPU time (user + system) of this process in seconds, from `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// A `/proc/self/status` memory line (`VmHWM:` peak resident set, `VmRSS:` current) in KiB.
fn rss_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn peak_rss_kib() -> Option<u64> {
    rss_kib("VmHWM:")
}

fn large_run(n: u64) {
    let threads = rayon::current_num_threads();
    let with_baseline = std::env::var("FEDSILO_BENCH_PSI_BASELINE").map_or(true, |v| v != "0");
    let (b0, t) = (cpu_seconds(), Instant::now());
    if with_baseline {
        black_box(baseline(4 * n as usize, 1));
    }
    let base_wall = t.elapsed().as_secs_f64();
    let base_cpu = cpu_seconds().zip(b0).map(|(c1, c0)| c1 - c0);

    let (c0, t) = (cpu_seconds(), Instant::now());
    let (oa, op, st) = exchange(n, 2, true);
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(c0).map(|(c1, c0)| c1 - c0);
    assert_eq!(oa.intersection_size, n - n * 3 / 10);
    assert_eq!(oa.intersection_hash, op.intersection_hash);
    assert_eq!(
        oa.rows.as_ref().map(Vec::len),
        op.rows.as_ref().map(Vec::len)
    );

    println!("psi/exchange {n} x {n} ids ({threads} rayon threads), 70 % shared:");
    println!(
        "  wall {wall:.1} s, CPU {} s, {:.0} ids/s (both sets' ids / wall), peak RSS {} MiB \
         (both parties in one process)",
        cpu.map_or("?".into(), |c| format!("{c:.1}")),
        2.0 * n as f64 / wall,
        peak_rss_kib().map_or("?".into(), |k| (k / 1024).to_string()),
    );
    println!(
        "  bytes active→passive {:.1} MiB in {} messages, passive→active {:.1} MiB in {} messages",
        st.a_to_p as f64 / 1048576.0,
        st.a_msgs,
        st.p_to_a as f64 / 1048576.0,
        st.p_msgs,
    );
    if with_baseline {
        println!(
            "  baseline: {} scalar mults + compressions in {base_wall:.1} s wall, CPU {} s; \
             exchange / baseline = {:.2} (wall), {} (CPU)",
            4 * n,
            base_cpu.map_or("?".into(), |c| format!("{c:.1}")),
            wall / base_wall,
            cpu.zip(base_cpu)
                .map_or("?".into(), |(c, b)| format!("{:.2}", c / b)),
        );
    }
    if let Some(c) = cpu {
        // FATE 2.0: 10M ∩ 10M in 7 min 10 s on two hosts of 16 cores = 430 s × 32 cores
        let fate_core_s_per_id = 430.0 * 32.0 / 1e7;
        let ours = c / n as f64;
        println!(
            "  CPU per id pair {:.1} µs; FATE 2.0 {:.0} µs per core → {:.1}× FATE per core",
            ours * 1e6,
            fate_core_s_per_id * 1e6,
            fate_core_s_per_id / ours
        );
    }
}

fn main() {
    let n: u64 = std::env::var("FEDSILO_BENCH_PSI_IDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .measurement_time(std::time::Duration::from_secs(10));
    let small = 10_000u64;
    let mut g = c.benchmark_group("psi");
    g.throughput(Throughput::Elements(2 * small));
    g.bench_function("exchange_10k_x_10k", |b| {
        b.iter(|| black_box(exchange(small, 3, false).0.intersection_size))
    });
    g.throughput(Throughput::Elements(4 * small));
    g.bench_function("baseline_4x10k_scalar_mults", |b| {
        b.iter(|| black_box(baseline(4 * small as usize, 4)))
    });
    g.finish();
    c.final_summary();

    if n > 0 {
        large_run(n);
    }
}
