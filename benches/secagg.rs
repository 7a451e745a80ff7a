//! One full SecAgg+ round, every party in this process, against the targets in
//! BENCHMARKS.md ("SecAgg round").
//!
//! ```text
//! cargo bench --bench secagg
//! ```
//!
//! Setting: n = 100 participants, D = 1,000,000 elements in Z_2^32, k = recommended_degree(100)
//! = 14 neighbours, t = k/2 + 1 = 8. Ten participants (10 %) drop after sending their masked
//! input: they never answer ConsistencyCheck or Unmask, so that phase closes at its deadline
//! (a fake clock: the deadline is reached instantly, no real waiting) and their self masks
//! are rebuilt from their neighbours' shares.
//!
//! Measured:
//! - `secagg_round/whole_round`: wall time of a whole round (client construction, every
//!   phase, every message, the unmasking), clients of each phase run in parallel with rayon.
//!   Input generation is excluded.
//! - `secagg_round/server_only`: the time spent inside the `Server` (`new`,
//!   `handle_message`, `handle_timeout`, `poll_*`) during such rounds.
//! - `secagg_client/mask_1m`: one client handling its MaskedInputRequest — decrypting 14
//!   shares and adding 1 self mask + 14 pairwise masks to 1M u32 in one `apply_masks` pass —
//!   alone on the machine (the PRG uses both cores).
//! - `mask_expansion/*`: `prg::apply_masks` throughput with 1 and 15 masks over 1M u32, and
//!   a plain memcpy and a wrapping add of the same 4 MB, in the same run.
//!
//! Printed before the criterion output: bytes uploaded per participant (sum of
//! `ClientMsg::wire_size`), and a check that the round's unmasked sum equals the plain
//! wrapping sum of the survivors' inputs.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use fedsilo_crypto::client::Client;
use fedsilo_crypto::encoding::{Modulus, RingVec};
use fedsilo_crypto::graph::recommended_degree;
use fedsilo_crypto::keys::IdentityKey;
use fedsilo_crypto::msg::{
    ClientMsg, ParticipantId, Phase, Roster, RoundConfig, RoundContext, ServerMsg,
};
use fedsilo_crypto::prg::{self, MaskSign, Seed};
use fedsilo_crypto::server::{RoundOutput, Server, ServerEvent};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

const N: usize = 100;
const D: usize = 1_000_000;
const DROP_EVERY: usize = 10; // every 10th participant drops after MaskedInput
const TIMEOUT: Duration = Duration::from_secs(30);

struct Fixture {
    config: RoundConfig,
    roster: Arc<Roster>,
    identities: Vec<Arc<IdentityKey>>,
    /// Leave after MaskedInput.
    dropping: BTreeSet<ParticipantId>,
}

impl Fixture {
    fn new() -> Self {
        let k = recommended_degree(N);
        let participants: Vec<ParticipantId> = (1..=N as u32).collect();
        let identities: Vec<Arc<IdentityKey>> = participants
            .iter()
            .map(|&id| {
                let mut seed = [7u8; 32];
                seed[..4].copy_from_slice(&id.to_le_bytes());
                Arc::new(IdentityKey::from_seed(seed).expect("seed"))
            })
            .collect();
        let mut roster = Roster::new();
        for (&id, key) in participants.iter().zip(&identities) {
            roster.insert(id, key.public_key());
        }
        let dropping = participants.iter().copied().step_by(DROP_EVERY).collect();
        Fixture {
            config: RoundConfig {
                ctx: RoundContext {
                    job_id: "bench".into(),
                    round: 0,
                },
                participants,
                neighbours: k,
                threshold: k / 2 + 1,
                vector_len: D,
                modulus: Modulus::Pow32,
                graph_seed: [42; 32],
            },
            roster: Arc::new(roster),
            identities,
            dropping,
        }
    }

    /// Inputs with every page touched (as a real update would be), made in parallel.
    fn inputs(&self, round: u64) -> Vec<RingVec> {
        (0..N as u64)
            .into_par_iter()
            .map(|i| {
                let mut x = (round << 32 | i).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                RingVec::U32(
                    (0..D)
                        .map(|_| {
                            // xorshift64: cheap, not the thing being measured
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            x as u32
                        })
                        .collect(),
                )
            })
            .collect()
    }
}

struct Party {
    id: ParticipantId,
    client: Client,
    rng: ChaCha20Rng,
    uploaded: usize,
}

struct RoundRun {
    whole: Duration,
    server: Duration,
    /// Wall time of each step: "clients <phase>" (all clients handling the request that
    /// opens the phase, in parallel) or "server <phase>" (the server collecting it).
    steps: Vec<(String, Duration)>,
    output: RoundOutput,
    uploaded: Vec<(ParticipantId, usize)>,
}

/// Adds the time `f` takes to `acc`.
fn timed<T>(acc: &mut Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = f();
    *acc += start.elapsed();
    r
}

/// Creates the clients (in parallel) with their inputs.
fn make_parties(fx: &Fixture, inputs: Vec<RingVec>, seed: u64) -> Vec<Party> {
    fx.config
        .participants
        .par_iter()
        .zip(fx.identities.par_iter())
        .zip(inputs.into_par_iter())
        .map(|((&id, identity), input)| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed ^ (u64::from(id) << 40));
            let client = Client::new(
                fx.config.clone(),
                id,
                identity.clone(),
                fx.roster.clone(),
                input,
                &mut rng,
            )
            .expect("client");
            Party {
                id,
                client,
                rng,
                uploaded: 0,
            }
        })
        .collect()
}

/// Hands every party its request (in parallel); returns the parties' answers, minus those
/// of participants who have dropped.
fn client_phase(
    fx: &Fixture,
    parties: &mut [Party],
    requests: Vec<(ParticipantId, ServerMsg)>,
) -> Vec<(ParticipantId, ClientMsg)> {
    let mut by_party: Vec<Option<ServerMsg>> = (0..parties.len()).map(|_| None).collect();
    for (to, m) in requests {
        let i = parties.binary_search_by_key(&to, |p| p.id).expect("party");
        by_party[i] = Some(m);
    }
    parties
        .par_iter_mut()
        .zip(by_party.into_par_iter())
        .filter_map(|(p, req)| {
            if let Some(req) = req {
                p.client
                    .handle_message(req, &mut p.rng)
                    .expect("honest server");
            }
            let m = p.client.poll_transmit()?;
            if fx.dropping.contains(&p.id) && m.phase() > Phase::MaskedInput {
                return None;
            }
            p.uploaded += m.wire_size();
            Some((p.id, m))
        })
        .collect()
}

/// One whole round.
fn run_round(fx: &Fixture, inputs: Vec<RingVec>, seed: u64) -> RoundRun {
    let start = Instant::now();
    let mut server_time = Duration::ZERO;
    let mut now = start; // the server's clock: only moves to a deadline when a phase stalls
    let mut server = timed(&mut server_time, || {
        Server::new(now, fx.config.clone(), fx.roster.clone(), TIMEOUT).expect("config")
    });
    let mut parties = make_parties(fx, inputs, seed);
    let mut pending: Vec<(ParticipantId, ClientMsg)> = parties
        .iter_mut()
        .filter_map(|p| {
            let m = p.client.poll_transmit()?;
            p.uploaded += m.wire_size();
            Some((p.id, m))
        })
        .collect();
    let mut steps = vec![("clients new + AdvertiseKeys".to_string(), start.elapsed())];
    let output = loop {
        let phase = server.phase();
        let step_start = Instant::now();
        let (requests, finished) = timed(&mut server_time, || {
            for (from, m) in pending.drain(..) {
                server.handle_message(now, from, m).expect("honest client");
            }
            if server.phase() == phase && !server.is_finished() {
                // Some participants never answered: close the phase at its deadline.
                now = server.poll_timeout().expect("deadline");
                server.handle_timeout(now);
            }
            let requests: Vec<_> = std::iter::from_fn(|| server.poll_transmit()).collect();
            let finished = std::iter::from_fn(|| server.poll_event()).find_map(|e| match e {
                ServerEvent::Finished(out) => Some(out),
                ServerEvent::Failed(e) => panic!("round failed: {e}"),
                _ => None,
            });
            (requests, finished)
        });
        let name = phase.map_or("-", Phase::name);
        steps.push((format!("server {name}"), step_start.elapsed()));
        if let Some(out) = finished {
            break out;
        }
        let step_start = Instant::now();
        let next = server.phase().map_or("-", Phase::name);
        pending = client_phase(fx, &mut parties, requests);
        steps.push((format!("clients {next}"), step_start.elapsed()));
    };
    let whole = start.elapsed();
    let uploaded = parties.iter().map(|p| (p.id, p.uploaded)).collect();
    // Free the parties outside the measurement's concern (already measured `whole`).
    drop(parties);
    RoundRun {
        whole,
        server: server_time,
        steps,
        output,
        uploaded,
    }
}

fn check_and_report(fx: &Fixture) {
    let inputs = fx.inputs(0);
    let mut expected = RingVec::zeros(Modulus::Pow32, D);
    let kept: Vec<RingVec> = inputs.clone();
    let run = run_round(fx, inputs, 0);
    for (id, x) in fx.config.participants.iter().zip(&kept) {
        if run.output.survivors.contains(id) {
            expected.add_assign(x).expect("shape");
        }
    }
    assert!(
        run.output.sum == expected,
        "unmasked sum differs from the plain sum"
    );
    assert_eq!(run.output.survivors.len(), N, "all sent masked inputs");
    let late: Vec<_> = run
        .output
        .dropped
        .iter()
        .filter(|(_, p)| *p == Phase::ConsistencyCheck)
        .collect();
    assert_eq!(late.len(), fx.dropping.len());
    let full: Vec<usize> = run
        .uploaded
        .iter()
        .filter(|(id, _)| !fx.dropping.contains(id))
        .map(|(_, b)| *b)
        .collect();
    let max = full.iter().copied().max().unwrap_or(0);
    let mean = full.iter().sum::<usize>() as f64 / full.len() as f64;
    println!(
        "secagg round n={N} D={D} k={} t={}: unmasked sum == plain sum of {} survivors' inputs: ok",
        fx.config.neighbours,
        fx.config.threshold,
        run.output.survivors.len()
    );
    println!(
        "upload per participant (answering every phase): mean {mean:.0} B = {:.4} MB, max {max} B = {:.4} MB",
        mean / 1e6,
        max as f64 / 1e6
    );
    println!(
        "first run: whole round {:.1} ms, server {:.1} ms",
        run.whole.as_secs_f64() * 1e3,
        run.server.as_secs_f64() * 1e3
    );
    for (step, d) in &run.steps {
        println!("  {step:<32} {:>8.1} ms", d.as_secs_f64() * 1e3);
    }
}

fn round(c: &mut Criterion) {
    let fx = Fixture::new();
    check_and_report(&fx);

    let mut g = c.benchmark_group("secagg_round");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("whole_round", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|i| run_round(&fx, fx.inputs(i + 1), i + 1).whole)
                .sum()
        })
    });
    g.measurement_time(Duration::from_secs(1));
    g.bench_function("server_only", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|i| run_round(&fx, fx.inputs(i + 1), i + 1).server)
                .sum()
        })
    });
    g.finish();
}

/// Clients brought to the MaskedInput phase, each with its request, to be consumed one by
/// one by the masking benchmark.
fn masking_pool(fx: &Fixture, seed: u64) -> Vec<(Party, ServerMsg)> {
    let mut now = Instant::now();
    let mut server =
        Server::new(now, fx.config.clone(), fx.roster.clone(), TIMEOUT).expect("config");
    let mut parties = make_parties(fx, fx.inputs(seed), seed);
    let mut pending: Vec<_> = parties
        .iter_mut()
        .filter_map(|p| p.client.poll_transmit().map(|m| (p.id, m)))
        .collect();
    loop {
        for (from, m) in pending.drain(..) {
            server.handle_message(now, from, m).expect("honest");
        }
        if server.phase() == Some(Phase::MaskedInput) {
            break;
        }
        if server.phase() == Some(Phase::AdvertiseKeys) {
            now = server.poll_timeout().expect("deadline");
            server.handle_timeout(now);
        }
        let requests: Vec<_> = std::iter::from_fn(|| server.poll_transmit()).collect();
        pending = client_phase(fx, &mut parties, requests);
    }
    let mut requests: Vec<_> = std::iter::from_fn(|| server.poll_transmit()).collect();
    requests.sort_by_key(|(to, _)| *to);
    parties
        .into_iter()
        .zip(requests)
        .map(|(p, (to, m))| {
            assert_eq!(p.id, to);
            (p, m)
        })
        .collect()
}

fn client_masking(c: &mut Criterion) {
    let fx = Fixture::new();
    let mut pool: Vec<(Party, ServerMsg)> = Vec::new();
    let mut refills = 0u64;
    let mut g = c.benchmark_group("secagg_client");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(D as u64));
    g.bench_function("mask_1m", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (mut p, req) = match pool.pop() {
                    Some(x) => x,
                    None => {
                        refills += 1;
                        pool = masking_pool(&fx, 1000 + refills);
                        pool.pop().expect("non-empty pool")
                    }
                };
                let start = Instant::now();
                p.client.handle_message(req, &mut p.rng).expect("honest");
                let m = p.client.poll_transmit();
                total += start.elapsed();
                assert!(matches!(m, Some(ClientMsg::MaskedInput(_))));
                drop(m);
            }
            total
        })
    });
    g.finish();
}

fn mask_expansion(c: &mut Criterion) {
    let bytes = (D * 4) as u64;
    let seeds = |n: usize| -> Vec<(Seed, MaskSign)> {
        (0..n)
            .map(|i| {
                let mut s = [0u8; 32];
                s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                (
                    s,
                    if i % 2 == 0 {
                        MaskSign::Add
                    } else {
                        MaskSign::Sub
                    },
                )
            })
            .collect()
    };
    let one = seeds(1);
    let fifteen = seeds(15);
    let mut out = RingVec::zeros(Modulus::Pow32, D);
    // Touch every page first.
    prg::apply_masks(&mut out, &one);
    let src = vec![3u32; D];
    let mut dst = vec![0u32; D];
    let other = RingVec::U32(vec![5; D]);

    let mut g = c.benchmark_group("mask_expansion");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("memcpy_4MB", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        })
    });
    g.bench_function("wrapping_add_4MB", |b| {
        b.iter(|| {
            out.add_assign(black_box(&other)).expect("shape");
            black_box(&mut out);
        })
    });
    g.bench_function("apply_masks_1x4MB", |b| {
        b.iter(|| {
            prg::apply_masks(&mut out, black_box(&one));
            black_box(&mut out);
        })
    });
    g.throughput(Throughput::Bytes(bytes * 15));
    g.bench_function("apply_masks_15x4MB", |b| {
        b.iter(|| {
            prg::apply_masks(&mut out, black_box(&fifteen));
            black_box(&mut out);
        })
    });
    g.finish();
}

criterion_group!(benches, mask_expansion, client_masking, round);
criterion_main!(benches);
