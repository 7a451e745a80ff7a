//! Local gradient pass over a synthetic rows × 50-feature f32 matrix streamed from a file,
//! against a memory-bandwidth baseline (reading and summing the same bytes) measured in the
//! same run.
//!
//! ```text
//! cargo bench --bench local_gradient                       # 10,000,000 rows (≈ 2.04 GB file)
//! FEDSILO_BENCH_ROWS=1000000 cargo bench --bench local_gradient
//! FEDSILO_BENCH_DIR=/somewhere/else cargo bench --bench local_gradient   # default: temp dir
//! ```
//!
//! File format: row-major little-endian f32, each row 50 features then the 0/1 label
//! (51 × 4 = 204 bytes per row). It is generated once per run, chunk by chunk, from a seeded
//! ChaCha8 stream (features uniform with unit variance, labels drawn from a logistic model),
//! and deleted at the end.
//!
//! Every pass reads the file front to back through a `BufReader` into fixed 8 MiB block
//! buffers (41,120 whole rows). Memory is bounded by the block size: at most two 8 MiB blocks
//! plus O(features) accumulator state per thread, independent of the row count; the run
//! prints its peak RSS to show it.
//!
//! Variants:
//! * `baseline_sum`: one thread reads each block and sums its f32 values (16 f32 lanes), the
//!   cost of getting the bytes into the CPU at all;
//! * `baseline_sum_pipelined`: the same with a reader thread filling the next block while the
//!   main thread sums the current one (the bound for a two-core streaming pass);
//! * `gradient_1t`: one thread reads and runs [`GradAccumulator::add_labelled_le_bytes`] on
//!   the block's bytes in place (weighted log-loss and gradient sums: f32 kernel, f64 totals);
//! * `gradient_2t_join`: one thread reads, then the two halves of the block are accumulated in
//!   parallel with `rayon::join` (one accumulator per half, merged at the end);
//! * `gradient_2t_pipelined`: a reader thread fills the next block while the main thread
//!   accumulates the current one.
//!
//! Before writing the file the bench runs [`accumulator::self_check`]: the accumulator
//! (`benches/local_gradient/accumulator.rs`, used by nothing else) must give the sums of
//! `fedsilo_ml::linear::loss_grad_sum` in every block layout.
//!
//! After criterion's measurements the bench runs all variants interleaved five more times and
//! prints wall time, rows/s, GB/s, the ratios to both baselines and the process CPU time as a
//! Markdown table.
//!
//! Note: the file has just been written, so on a machine with enough RAM the reads are served
//! from the kernel page cache, not the disk; the baseline measures exactly that path, so the
//! ratio compares like with like.

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use fedsilo_ml::linear::LinearParams;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

#[path = "local_gradient/accumulator.rs"]
mod accumulator;
use accumulator::GradAccumulator;

const FEATURES: usize = 50;
const STRIDE: usize = FEATURES + 1;
const ROW_BYTES: usize = STRIDE * 4;
/// Rows per read: 41,120 × 204 B = 8,388,480 B, just under 8 MiB.
const BLOCK_ROWS: usize = 41_120;
const BLOCK_BYTES: usize = BLOCK_ROWS * ROW_BYTES;
const DEFAULT_ROWS: usize = 10_000_000;
/// Block buffers in flight in the pipelined variants (memory: 2 × 8 MiB).
const PIPE_BUFFERS: usize = 2;

fn rows_from_env() -> usize {
    match std::env::var("FEDSILO_BENCH_ROWS") {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("FEDSILO_BENCH_ROWS must be a row count, got {v:?}")),
        Err(_) => DEFAULT_ROWS,
    }
}

/// The logistic model behind the synthetic labels.
fn truth() -> LinearParams {
    LinearParams {
        coef: (0..FEATURES)
            .map(|j| 0.4 * ((j as f64) * 0.7).sin())
            .collect(),
        intercept: -1.5,
    }
}

/// Writes `rows` rows chunk by chunk (one block buffer, reused).
fn write_matrix(path: &Path, rows: usize) -> std::io::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5EED_F00D);
    let t = truth();
    let coef32: Vec<f32> = t.coef.iter().map(|&c| c as f32).collect();
    // Uniform on [−√3, √3): unit variance.
    let scale = 2.0 * 3f32.sqrt() / (1u32 << 24) as f32;
    let mut out = BufWriter::with_capacity(BLOCK_BYTES, File::create(path)?);
    let mut block = vec![0u8; BLOCK_BYTES];
    let mut left = rows;
    while left > 0 {
        let n = left.min(BLOCK_ROWS);
        for row in block[..n * ROW_BYTES].chunks_exact_mut(ROW_BYTES) {
            let mut z = t.intercept as f32;
            for (j, cell) in row[..FEATURES * 4].chunks_exact_mut(4).enumerate() {
                let v = (rng.random::<u32>() >> 8) as f32 * scale - 3f32.sqrt();
                z += coef32[j] * v;
                cell.copy_from_slice(&v.to_le_bytes());
            }
            let p = 1.0 / (1.0 + (-z).exp());
            let y: f32 = if rng.random::<f32>() < p { 1.0 } else { 0.0 };
            row[FEATURES * 4..].copy_from_slice(&y.to_le_bytes());
        }
        out.write_all(&block[..n * ROW_BYTES])?;
        left -= n;
    }
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Fills `buf` from `r` unless the end of the file comes first; returns the bytes read.
fn read_block(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Streams the file block by block, handing each block of whole rows to `f`.
fn stream(path: &Path, mut f: impl FnMut(&[u8])) -> usize {
    let file = File::open(path).expect("open bench matrix");
    let mut reader = BufReader::with_capacity(BLOCK_BYTES, file);
    let mut block = vec![0u8; BLOCK_BYTES];
    let mut rows = 0;
    loop {
        let n = read_block(&mut reader, &mut block).expect("read bench matrix");
        if n == 0 {
            break;
        }
        assert_eq!(n % ROW_BYTES, 0, "file holds whole rows");
        rows += n / ROW_BYTES;
        f(&block[..n]);
    }
    rows
}

/// Like [`stream`], but a reader thread fills the blocks: two 8 MiB buffers circulate
/// between it and the caller, so reading block k + 1 overlaps processing block k.
fn stream_pipelined(path: &Path, mut f: impl FnMut(&[u8])) -> usize {
    let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(PIPE_BUFFERS);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(PIPE_BUFFERS);
    for _ in 0..PIPE_BUFFERS {
        free_tx
            .send(vec![0u8; BLOCK_BYTES])
            .expect("channel has room");
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let file = File::open(path).expect("open bench matrix");
            let mut reader = BufReader::with_capacity(BLOCK_BYTES, file);
            while let Ok(mut buf) = free_rx.recv() {
                let n = read_block(&mut reader, &mut buf).expect("read bench matrix");
                if n == 0 || full_tx.send((buf, n)).is_err() {
                    break;
                }
            }
        });
        let mut rows = 0;
        for (buf, n) in full_rx.iter() {
            assert_eq!(n % ROW_BYTES, 0, "file holds whole rows");
            rows += n / ROW_BYTES;
            f(&buf[..n]);
            // The reader may already have finished; then the buffer is simply dropped.
            let _ = free_tx.send(buf);
        }
        rows
    })
}

/// Sum of the little-endian f32 values in `bytes`, 16 lanes (vectorises to SSE/AVX adds).
fn sum_le_f32(bytes: &[u8]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = bytes.chunks_exact(64);
    let tail: f32 = chunks
        .remainder()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .sum();
    for c in chunks {
        for (k, a) in acc.iter_mut().enumerate() {
            let i = 4 * k;
            *a += f32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn baseline_pass(path: &Path, pipelined: bool) -> (f32, usize) {
    let mut total = 0.0f32;
    let add = |block: &[u8]| total += sum_le_f32(block);
    let rows = if pipelined {
        stream_pipelined(path, add)
    } else {
        stream(path, add)
    };
    (total, rows)
}

/// How a gradient pass uses the two cores.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Read and compute on one thread.
    Serial,
    /// Read on one thread, then both halves of the block in parallel (`rayon::join`).
    JoinHalves,
    /// A reader thread fills the next block while this thread computes the current one.
    Pipelined,
}

fn gradient_pass(path: &Path, p: &LinearParams, mode: Mode) -> (f64, Vec<f64>, usize) {
    let mut acc = [
        GradAccumulator::new(FEATURES),
        GradAccumulator::new(FEATURES),
    ];
    let mut one_block = |block: &[u8]| {
        let [a0, a1] = &mut acc;
        let r = if mode == Mode::JoinHalves {
            let mid = (block.len() / ROW_BYTES / 2) * ROW_BYTES;
            let (lo, hi) = block.split_at(mid);
            let (r0, r1) = rayon::join(
                || a0.add_labelled_le_bytes(p, lo, 1.0),
                || a1.add_labelled_le_bytes(p, hi, 1.0),
            );
            r0.and(r1)
        } else {
            a0.add_labelled_le_bytes(p, block, 1.0)
        };
        r.expect("blocks hold whole rows of the model's width");
    };
    let rows = if mode == Mode::Pipelined {
        stream_pipelined(path, &mut one_block)
    } else {
        stream(path, &mut one_block)
    };
    let [mut a0, a1] = acc;
    a0.merge(&a1).expect("same width");
    let (loss, grad, n) = a0.finish();
    assert_eq!(n, rows);
    (loss, grad, rows)
}

/// CPU time (user + system, all threads including finished ones) of this process in seconds,
/// from `/proc/self/stat` (clock ticks, assumed 100 per second), if available.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// `VmHWM` (peak resident set) of this process in KiB, if the platform reports it.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    accumulator::self_check();
    let rows = rows_from_env();
    let dir = std::env::var_os("FEDSILO_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let file = tempfile::Builder::new()
        .prefix("fedsilo-local-gradient-")
        .suffix(".f32")
        .tempfile_in(&dir)
        .expect("create temp file");
    let path = file.path().to_path_buf();
    let bytes = (rows * ROW_BYTES) as u64;
    let t0 = Instant::now();
    write_matrix(&path, rows).expect("write bench matrix");
    eprintln!(
        "wrote {rows} rows × {FEATURES} features + label ({:.2} GB) to {} in {:.1} s; peak RSS {} KiB",
        bytes as f64 / 1e9,
        path.display(),
        t0.elapsed().as_secs_f64(),
        peak_rss_kib().unwrap_or(0)
    );

    // A model that is not the truth, so the gradient is far from zero.
    let p = LinearParams {
        coef: (0..FEATURES).map(|j| 0.01 * j as f64 - 0.2).collect(),
        intercept: -1.0,
    };
    // Every variant computes the same sums (the halves are merged in a different order).
    let (l1, g1, n1) = gradient_pass(&path, &p, Mode::Serial);
    let gmax = g1.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for mode in [Mode::JoinHalves, Mode::Pipelined] {
        let (l2, g2, n2) = gradient_pass(&path, &p, mode);
        assert_eq!((n1, n2), (rows, rows));
        assert!((l1 - l2).abs() <= 1e-9 * l1.abs(), "{mode:?}: {l1} vs {l2}");
        assert!(g1
            .iter()
            .zip(&g2)
            .all(|(a, b)| (a - b).abs() <= 1e-6 * gmax));
    }
    eprintln!(
        "mean loss {:.6}, |mean gradient|∞ {:.6}",
        l1 / rows as f64,
        gmax / rows as f64
    );

    type Pass<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let passes: Vec<Pass> = vec![
        (
            "baseline_sum",
            Box::new(|| {
                black_box(baseline_pass(&path, false));
            }),
        ),
        (
            "baseline_sum_pipelined",
            Box::new(|| {
                black_box(baseline_pass(&path, true));
            }),
        ),
        (
            "gradient_1t",
            Box::new(|| {
                black_box(gradient_pass(&path, &p, Mode::Serial));
            }),
        ),
        (
            "gradient_2t_join",
            Box::new(|| {
                black_box(gradient_pass(&path, &p, Mode::JoinHalves));
            }),
        ),
        (
            "gradient_2t_pipelined",
            Box::new(|| {
                black_box(gradient_pass(&path, &p, Mode::Pipelined));
            }),
        ),
    ];

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    {
        let mut g = c.benchmark_group("local_gradient");
        g.sampling_mode(SamplingMode::Flat);
        g.throughput(Throughput::Bytes(bytes));
        for (name, pass) in &passes {
            g.bench_function(*name, |b| b.iter(pass));
        }
        g.finish();
    }
    c.final_summary();

    // Interleaved re-runs for the summary table (criterion keeps its numbers to itself), with
    // the process CPU time of each pass: on a shared machine the wall time depends on the
    // neighbours, the CPU time much less.
    let is_bench = std::env::args().any(|a| a == "--bench");
    let reps = if is_bench { 5 } else { 1 };
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); passes.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); passes.len()];
    for _ in 0..reps {
        for (k, (_, pass)) in passes.iter().enumerate() {
            let c0 = cpu_seconds();
            let t = Instant::now();
            pass();
            wall[k].push(t.elapsed().as_secs_f64());
            if let (Some(a), Some(b)) = (c0, cpu_seconds()) {
                cpu[k].push(b - a);
            }
        }
    }
    let med: Vec<f64> = wall.into_iter().map(median).collect();
    let med_cpu: Vec<Option<f64>> = cpu
        .into_iter()
        .map(|v| (!v.is_empty()).then(|| median(v)))
        .collect();
    println!();
    println!(
        "rows = {rows}, features = {FEATURES}, file = {:.3} GB, block = {BLOCK_BYTES} B, \
         median of {reps} interleaved passes",
        bytes as f64 / 1e9
    );
    println!();
    println!("| pass | wall (s) | rows/s | GB/s | vs baseline_sum | vs baseline_sum_pipelined | CPU (s) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (k, (name, _)) in passes.iter().enumerate() {
        let t = med[k];
        println!(
            "| {name} | {t:.3} | {:.1} M | {:.2} | {:.0} % | {:.0} % | {} |",
            rows as f64 / t / 1e6,
            bytes as f64 / t / 1e9,
            100.0 * med[0] / t,
            100.0 * med[1] / t,
            med_cpu[k].map_or_else(|| "n/a".to_string(), |c| format!("{c:.2}")),
        );
    }
    println!();
    println!(
        "peak RSS of the whole bench process: {} KiB",
        peak_rss_kib().map_or_else(|| "n/a".to_string(), |k| k.to_string())
    );
    drop(passes);
    drop(file);
}
