//! Mask-expansion throughput: the product's headline cost.
//!
//! Run: `cargo bench -p fedsilo-crypto --bench prg -- --warm-up-time 1 --measurement-time 3`
//!
//! Groups (all report bytes of keystream or copied memory per second):
//! - `cipher`: raw keystream of the candidate stream ciphers over 4 MiB, one core —
//!   ChaCha20 (`chacha20` 0.9, runtime AVX2 detection) against AES-256-CTR (`aes` 0.8 +
//!   `ctr` 0.9, runtime AES-NI detection) — and a plain memcpy of the same bytes as the
//!   memory-bandwidth baseline.
//! - `expand`: [`prg::expand`], one mask of 1M u32, allocating (the reference path).
//! - `apply_masks`: [`prg::apply_masks`] with 1 and 15 masks over 1M u32 (the client's
//!   masking step) and 230 masks (the server's unmasking step), rayon over both cores.
//!
//! The numbers measured when the PRG was chosen are in the module doc of `prg.rs`.

use std::hint::black_box;

use chacha20::cipher::{KeyIvInit, StreamCipher};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fedsilo_crypto::encoding::{Modulus, RingVec};
use fedsilo_crypto::prg::{self, MaskSign, Seed};

const ELEMS: usize = 1_000_000;

fn seeds(n: usize) -> Vec<(Seed, MaskSign)> {
    (0..n)
        .map(|i| {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            let sign = if i % 2 == 0 {
                MaskSign::Add
            } else {
                MaskSign::Sub
            };
            (s, sign)
        })
        .collect()
}

fn cipher(c: &mut Criterion) {
    let bytes = 4 << 20;
    let key = [7u8; 32];
    let mut g = c.benchmark_group("cipher");
    g.throughput(Throughput::Bytes(bytes as u64));
    let src = vec![1u8; bytes];
    let mut buf = vec![0u8; bytes];
    g.bench_function("memcpy_4MiB", |b| {
        b.iter(|| {
            buf.copy_from_slice(black_box(&src));
            black_box(&mut buf);
        })
    });
    g.bench_function("chacha20_4MiB", |b| {
        b.iter(|| {
            let mut c = chacha20::ChaCha20::new(&key.into(), &[0u8; 12].into());
            c.apply_keystream(&mut buf);
            black_box(&mut buf);
        })
    });
    g.bench_function("aes256ctr_4MiB", |b| {
        b.iter(|| {
            let mut c = ctr::Ctr128BE::<aes::Aes256>::new(&key.into(), &[0u8; 16].into());
            c.apply_keystream(&mut buf);
            black_box(&mut buf);
        })
    });
    g.finish();
}

fn masks(c: &mut Criterion) {
    let bytes = (ELEMS * 4) as u64;

    let mut g = c.benchmark_group("expand");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("1x1M_u32", |b| {
        b.iter(|| black_box(prg::expand(&[3; 32], Modulus::Pow32, ELEMS)))
    });
    g.finish();

    let mut g = c.benchmark_group("apply_masks");
    g.sample_size(10);
    let mut out = RingVec::zeros(Modulus::Pow32, ELEMS);
    for n in [1usize, 15, 230] {
        let m = seeds(n);
        g.throughput(Throughput::Bytes(bytes * n as u64));
        g.bench_with_input(BenchmarkId::new("1M_u32", n), &m, |b, m| {
            b.iter(|| prg::apply_masks(black_box(&mut out), m))
        });
    }
    g.finish();
}

criterion_group!(benches, cipher, masks);
criterion_main!(benches);
