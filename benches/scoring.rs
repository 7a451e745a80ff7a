//! Scoring throughput, on N rows × 50 feature columns (5 % missing), on ONE core (a
//! one-thread rayon pool), in rows per second per wall second and per CPU second:
//!
//! - `TrainedModel::predict` for a logistic regression (standardise inside the dot product,
//!   sigmoid) and two 100-tree GBDTs (depth 4 / 16 leaves and depth 6 / 64 leaves); per
//!   GBDT, its margins through the forest compiled once (`GbdtModel::compile`, as `fedsilo
//!   score` compiles it once per model), on one and on two threads, and as in-run baselines
//!   the same forest in the level-word and bit-vector forms (`CompiledForest::level_word_form`,
//!   `CompiledForest::bit_vector_form`: what the compiled forest ran before) and the plain
//!   tree walk over a binned copy (`bin` + `predict_margin_binned`); and one read of the same
//!   floats (a sum: the memory-bandwidth floor). `FEDSILO_BENCH_PASSES` sets the passes per
//!   figure (10; 1 with `FEDSILO_BENCH_ONCE`, which also skips criterion).
//! - with `FEDSILO_BENCH_LIGHTGBM_MODEL_DIR=<dir>`, each GBDT is written there in LightGBM's
//!   text format with 1,000 rows and their margins, for `benches/reference/lightgbm_predict.py`
//!   to time LightGBM's `predict` on the same trees (after checking its margins).
//! - when `FEDSILO_BENCH_RSS_ROWS` is set, the real `fedsilo score` end to end over a
//!   generated file of that many rows × 50 columns, as CSV and as Parquet (written to a temp
//!   dir at bench time, deleted after), under `/usr/bin/time -v` (wall, CPU, peak RSS): pinned
//!   to one core (`taskset -c 0`, `RAYON_NUM_THREADS=1`: rows/s per core end to end) and on
//!   every core, plus one run writing the ranking as Parquet. Baselines in the same run: one
//!   read of the CSV's bytes (newlines counted) and the plain CSV split with `str::parse` of
//!   every field (no schema, no encoder, nothing kept).
//!
//! ```text
//! cargo bench --bench scoring
//! FEDSILO_BENCH_ONCE=1 FEDSILO_BENCH_PASSES=2 FEDSILO_BENCH_PREDICT_ROWS=10000000 cargo bench --bench scoring
//! FEDSILO_BENCH_RSS_ROWS=10000000 cargo bench --bench scoring   # + end to end over 10M rows
//! ```

use std::io::Write as _;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use fedsilo_ml::gbdt::{self, GbdtParams};
use fedsilo_ml::linear::LinearParams;
use fedsilo_ml::table::Table;
use fedsilo_task::{ModelArtifact, ModelParams, Standardizer, TrainedModel};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

const FEATURES: usize = 50;
/// Rows of the in-process predict figures (`FEDSILO_BENCH_PREDICT_ROWS`).
const ROWS: usize = 200_000;

fn env_rows(key: &str) -> Option<usize> {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
}

fn names() -> Vec<String> {
    (0..FEATURES).map(|j| format!("x{j}")).collect()
}

/// Rows × 50 standard-normal-ish features (5 % missing) and a logistic label.
fn table(rows: usize, seed: u64) -> Table {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = Array2::from_shape_fn((rows, FEATURES), |_| {
        if rng.random::<f32>() < 0.05 {
            f32::NAN
        } else {
            rng.random::<f32>() * 3.4 - 1.7
        }
    });
    let labels = Array2::from_shape_fn((rows, 1), |(r, _)| {
        let z: f32 = (0..5).map(|j| x[[r, j]]).filter(|v| !v.is_nan()).sum();
        if z + rng.random::<f32>() * 2.0 - 1.0 > 0.0 {
            1.0
        } else {
            0.0
        }
    });
    Table {
        feature_names: names(),
        x,
        label_names: vec!["y".into()],
        labels,
        ids: (1..=rows).map(|r| r.to_string()).collect(),
    }
}

fn lr_model() -> TrainedModel {
    TrainedModel {
        features: names(),
        labels: vec!["y".into()],
        standardizer: Standardizer {
            mean: vec![0.01; FEATURES],
            std: vec![0.98; FEATURES],
            missing_rate: vec![0.05; FEATURES],
        },
        params: ModelParams::LogisticRegression {
            per_label: vec![LinearParams {
                coef: (0..FEATURES).map(|j| 0.3 - j as f64 * 0.01).collect(),
                intercept: -0.2,
            }],
        },
    }
}

/// A 100-tree GBDT fitted on 20,000 generated rows, trees at most `max_depth` deep with at
/// most `max_leaves` leaves.
fn gbdt_model(max_depth: usize, max_leaves: usize) -> TrainedModel {
    // Fewer training rows (`FEDSILO_BENCH_FIT_ROWS`) keep a run under callgrind short.
    let t = table(env_rows("FEDSILO_BENCH_FIT_ROWS").unwrap_or(20_000), 7);
    let params = GbdtParams {
        n_trees: 100,
        max_depth,
        max_leaves,
        ..GbdtParams::default()
    };
    let model = gbdt::fit_pooled(t.x.view(), t.label(0), &params).expect("fit");
    assert_eq!(model.trees.len(), 100, "a 100-tree model");
    TrainedModel {
        features: names(),
        labels: vec!["y".into()],
        standardizer: Standardizer {
            mean: vec![0.0; FEATURES],
            std: vec![1.0; FEATURES],
            missing_rate: vec![0.0; FEATURES],
        },
        params: ModelParams::Gbdt { model },
    }
}

/// `FEDSILO_BENCH_ONCE=1`: every in-process figure runs once, without criterion (for counting
/// instructions under callgrind, see BENCHMARKS.md).
fn once() -> bool {
    std::env::var_os("FEDSILO_BENCH_ONCE").is_some()
}

/// User + system CPU seconds of this process so far (`/proc/self/stat`, clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): state is field 3, utime 14.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap_or(f64::NAN))
        .collect();
    f.iter().sum::<f64>() / 100.0
}

fn one_core() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one-thread pool")
}

/// Passes per figure: `FEDSILO_BENCH_PASSES`, else 10 (1 with `FEDSILO_BENCH_ONCE`).
fn n_passes() -> usize {
    env_rows("FEDSILO_BENCH_PASSES")
        .unwrap_or(if once() { 1 } else { 10 })
        .max(1)
}

/// Runs `f` [`n_passes`] times on `pool`; prints rows/s per wall and per CPU second (the pool
/// threads work, the caller waits: on the one-thread pool the CPU figure is what one core
/// does when other work shares the machine).
fn passes(name: &str, rows: usize, pool: &rayon::ThreadPool, f: &(dyn Fn() + Sync)) {
    let n = n_passes();
    let (start, cpu0) = (Instant::now(), cpu_seconds());
    for _ in 0..n {
        pool.install(f);
    }
    let (secs, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let threads = pool.current_num_threads();
    println!(
        "{name}: {:.2} M rows/s wall on {threads} thread(s), {:.2} M rows per CPU-second ({rows} rows × {FEATURES} columns, {n} passes in {secs:.2} s wall, {cpu:.2} s CPU)",
        n as f64 * rows as f64 / secs / 1e6,
        n as f64 * rows as f64 / cpu / 1e6
    );
}

fn bench(c: &mut Criterion) {
    let rows = env_rows("FEDSILO_BENCH_PREDICT_ROWS")
        .unwrap_or(ROWS)
        .max(1);
    let data = table(rows, 1);
    let pool = one_core();
    let mut g = c.benchmark_group("scoring_one_core");
    g.throughput(Throughput::Elements(rows as u64));
    g.sample_size(10);
    let floats = data.x.as_slice().expect("row-major");
    let read = || {
        black_box(floats.iter().fold(0.0f32, |a, &v| a + v));
    };
    if !once() {
        g.bench_function("baseline_read_the_floats", |b| {
            b.iter(|| pool.install(read))
        });
    }
    passes("baseline: one read of the floats", rows, &pool, &read);
    let gbdt = gbdt_model(4, 16);
    let deep = gbdt_model(6, 64);
    for (name, model) in [
        ("lr_50", lr_model()),
        ("gbdt_100_trees_depth4_50", gbdt.clone()),
        ("gbdt_100_trees_depth6_64_leaves_50", deep.clone()),
    ] {
        let predict = || {
            black_box(model.predict(&data).expect("predict"));
        };
        if !once() {
            g.bench_function(name, |b| b.iter(|| pool.install(predict)));
        }
        passes(name, rows, &pool, &predict);
    }
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("two-thread pool");
    for (label, model) in [("depth4_16_leaves", &gbdt), ("depth6_64_leaves", &deep)] {
        let fedsilo_task::ModelParams::Gbdt { model } = &model.params else {
            unreachable!("a GBDT")
        };
        let (depth, leaves) = model.trees.iter().fold((0, 0), |(d, l), t| {
            (d.max(tree_depth(t)), l.max(t.n_leaves()))
        });
        println!("gbdt {label}: 100 trees, deepest {depth}, most leaves {leaves}");
        // Compiled once, as `fedsilo score` does.
        let compiled = model.compile().expect("compile");
        let forest = || {
            black_box(compiled.predict_margin(data.x.view()).expect("margins"));
        };
        let name = format!("gbdt_100_trees_{label}_forest_margins");
        if !once() {
            g.bench_function(&name, |b| b.iter(|| pool.install(forest)));
        }
        passes(&name, rows, &pool, &forest);
        passes(&format!("{name}, 2 threads"), rows, &two, &forest);
        if let Some(levels) = compiled.level_word_form() {
            let old = || {
                black_box(levels.predict_margin(data.x.view()).expect("margins"));
            };
            passes(
                &format!("baseline: gbdt {label}, level-word form (before the rank form)"),
                rows,
                &pool,
                &old,
            );
        }
        if let Some(bits) = compiled.bit_vector_form() {
            let old = || {
                black_box(bits.predict_margin(data.x.view()).expect("margins"));
            };
            passes(
                &format!(
                    "baseline: gbdt {label}, bit-vector form (before the level words and ranks)"
                ),
                rows,
                &pool,
                &old,
            );
        }
        let walk = || {
            let binned = model.bin_mapper.bin(data.x.view()).expect("bin");
            black_box(model.predict_margin_binned(binned.view()).expect("margins"));
        };
        if !once() {
            g.bench_function(
                format!("baseline_gbdt_100_trees_{label}_bin_and_walk"),
                |b| b.iter(|| pool.install(walk)),
            );
        }
        passes(
            &format!("baseline: gbdt {label}, bin + plain tree walk"),
            rows,
            &pool,
            &walk,
        );
        if let Some(path) = std::env::var_os("FEDSILO_BENCH_LIGHTGBM_MODEL_DIR") {
            let path = std::path::Path::new(&path).join(format!("fedsilo_{label}.txt"));
            std::fs::write(&path, lightgbm_text(model)).expect("write the LightGBM model");
            // 1,000 rows and their margins, for the script to check LightGBM's against.
            let k = rows.min(1000);
            let x = data
                .x
                .slice_axis(ndarray::Axis(0), ndarray::Slice::from(..k));
            let m = compiled.predict_margin(x).expect("margins");
            let mut bytes = Vec::with_capacity(k * (FEATURES * 4 + 8));
            x.iter()
                .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
            m.iter()
                .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
            std::fs::write(path.with_extension("check"), bytes).expect("write the check rows");
            println!("wrote {} and its check rows", path.display());
        }
    }
    g.finish();
    drop(data);
    if let Some(rows) = env_rows("FEDSILO_BENCH_RSS_ROWS") {
        peak_rss(rows);
    }
}

/// The in-run baselines of the end-to-end figures: one read of `csv`'s bytes, then the plain
/// split with `str::parse::<f32>` of every field after the first (empty = missing).
fn csv_baselines(csv: &std::path::Path, rows: usize) {
    use std::io::Read as _;
    let report = |what: &str, secs: f64, cpu: f64| {
        println!(
            "baseline, {what}: {secs:.1} s wall ({:.2} M rows/s), {cpu:.1} s CPU ({:.2} M rows per CPU-second)",
            rows as f64 / secs / 1e6,
            rows as f64 / cpu / 1e6
        );
    };
    let (start, cpu0) = (Instant::now(), cpu_seconds());
    let mut f = std::fs::File::open(csv).expect("open the CSV");
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0usize;
    loop {
        let n = f.read(&mut buf).expect("read the CSV");
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
    black_box(lines);
    report(
        "read the CSV's bytes",
        start.elapsed().as_secs_f64(),
        cpu_seconds() - cpu0,
    );
    let (start, cpu0) = (Instant::now(), cpu_seconds());
    let f = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(csv).expect("open"));
    let mut sum = 0.0f32;
    for line in std::io::BufRead::split(f, b'\n').skip(1) {
        let line = line.expect("read the CSV");
        for field in line.split(|&b| b == b',').skip(1) {
            let v = if field.is_empty() {
                f32::NAN
            } else {
                std::str::from_utf8(field)
                    .ok()
                    .and_then(|t| t.parse::<f32>().ok())
                    .unwrap_or(f32::NAN)
            };
            sum += v;
        }
    }
    black_box(sum);
    report(
        "plain split + str::parse of every field",
        start.elapsed().as_secs_f64(),
        cpu_seconds() - cpu0,
    );
}

/// Writes `rows` × 50 columns of CSV and of Parquet, scores them with the real binary under
/// `/usr/bin/time -v`, prints wall time, CPU time and peak RSS for LR and GBDT.
fn peak_rss(rows: usize) {
    // `FEDSILO_BENCH_TMP`: where the generated files go (a disk with room: 10 M rows take
    // 4.7 GB); deleted at the end, unless `FEDSILO_BENCH_KEEP=1`, which keeps them (and the
    // models and rankings) in `<FEDSILO_BENCH_TMP or the temp dir>/scoring-<rows>/` and
    // reuses the data files found there.
    let keep = std::env::var_os("FEDSILO_BENCH_KEEP").is_some();
    let dir = match std::env::var_os("FEDSILO_BENCH_TMP") {
        Some(d) => {
            std::fs::create_dir_all(&d).expect("FEDSILO_BENCH_TMP");
            tempfile::tempdir_in(d)
        }
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let dir = if keep {
        let kept = dir
            .path()
            .parent()
            .expect("a temp dir's parent")
            .join(format!("scoring-{rows}"));
        std::fs::create_dir_all(&kept).expect("the kept dir");
        println!("files kept in {}", kept.display());
        Dir::Kept(kept)
    } else {
        Dir::Temp(dir)
    };
    let csv = dir.path().join("customers.csv");
    let pq = dir.path().join("customers.parquet");
    let start = Instant::now();
    let reuse = keep && csv.exists() && pq.exists();
    if !reuse {
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&csv).unwrap());
        let mut pw = ParquetOut::new(&pq);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut line = String::with_capacity(512);
        line.push_str("id");
        for j in 0..FEATURES {
            line.push_str(&format!(",x{j}"));
        }
        line.push('\n');
        w.write_all(line.as_bytes()).unwrap();
        for r in 0..rows {
            use std::fmt::Write as _;
            line.clear();
            let _ = write!(line, "C{r}");
            pw.id(format!("C{r}"));
            for j in 0..FEATURES {
                let v: u32 = rng.random_range(0..20000);
                if v < 1000 {
                    line.push(',');
                    pw.value(j, None);
                } else {
                    let x = f64::from(v) / 5000.0 - 2.0;
                    let _ = write!(line, ",{x:.3}");
                    pw.value(j, Some(x));
                }
            }
            pw.end_row();
            line.push('\n');
            w.write_all(line.as_bytes()).unwrap();
        }
        w.flush().unwrap();
        pw.finish();
    }
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64;
    println!(
        "{} {rows} rows × {FEATURES} columns (CSV {:.2} GB, Parquet {:.2} GB) in {:.1} s",
        if reuse { "reused" } else { "generated" },
        size(&csv) / 1e9,
        size(&pq) / 1e9,
        start.elapsed().as_secs_f64()
    );
    let mut schema = String::from("id_column = \"id\"\nfeatures = [\n");
    for j in 0..FEATURES {
        schema.push_str(&format!("  {{ name = \"x{j}\", type = \"numeric\" }},\n"));
    }
    schema.push_str("]\n");
    std::fs::write(dir.path().join("schema.toml"), schema).unwrap();
    csv_baselines(&csv, rows);
    for (what, cmd) in [
        ("wc -l of the CSV", vec!["wc", "-l"]),
        ("cat of the CSV to /dev/null", vec!["cat"]),
    ] {
        timed_baseline(what, &cmd, &csv, rows);
    }
    timed_baseline("cat of the Parquet file to /dev/null", &["cat"], &pq, rows);
    // `FEDSILO_BENCH_E2E_MODELS=lr`: only these models end to end (default lr,gbdt).
    let models = std::env::var("FEDSILO_BENCH_E2E_MODELS").unwrap_or_else(|_| "lr,gbdt".into());
    let mut chosen = Vec::new();
    if models.split(',').any(|m| m.trim() == "lr") {
        chosen.push(("lr", lr_model()));
    }
    if models.split(',').any(|m| m.trim() == "gbdt") {
        chosen.push(("gbdt", gbdt_model(6, 64)));
    }
    // `FEDSILO_BENCH_BIN`: the `fedsilo` binary to run (default: this build's, e.g. a
    // release build's `target/release/fedsilo` from a `--profile test` bench);
    // `FEDSILO_BENCH_E2E_PINNED_ONLY=1`: only the one-core runs.
    let bin = std::env::var_os("FEDSILO_BENCH_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_fedsilo").into());
    let pinned_only = std::env::var_os("FEDSILO_BENCH_E2E_PINNED_ONLY").is_some();
    println!("fedsilo binary: {}", std::path::Path::new(&bin).display());
    for (name, model) in chosen {
        let artifact = ModelArtifact {
            format: ModelArtifact::FORMAT.into(),
            job_id: name.into(),
            task: fedsilo_task::Task::Risk,
            model_kind: name.into(),
            complete: true,
            rounds: 1,
            coefficients: Vec::new(),
            metrics: Vec::new(),
            round_sha256: "0".repeat(64),
            model_sha256: String::new(),
            privacy: None,
            scorecard: Vec::new(),
            model,
        };
        let model_path = dir.path().join(format!("{name}.json"));
        std::fs::write(&model_path, serde_json::to_string(&artifact).unwrap()).unwrap();
        let runs: [(&str, &std::path::Path, &str, bool); 5] = [
            ("CSV in, one core", &csv, "top.csv", true),
            ("CSV in, all cores", &csv, "top.csv", false),
            ("Parquet in, one core", &pq, "top.csv", true),
            ("Parquet in, all cores", &pq, "top.csv", false),
            (
                "Parquet in, Parquet out, all cores",
                &pq,
                "top.parquet",
                false,
            ),
        ];
        for (what, data, out, pinned) in runs {
            let out = dir.path().join(format!("{name}-{out}"));
            let mut cmd = if pinned {
                // `FEDSILO_BENCH_CORE`: the core of the one-core runs (default 0).
                let core = std::env::var("FEDSILO_BENCH_CORE").unwrap_or_else(|_| "0".into());
                let mut c = std::process::Command::new("taskset");
                c.args(["-c", &core, "/usr/bin/time", "-v"]);
                c.env("RAYON_NUM_THREADS", "1");
                c
            } else {
                let mut c = std::process::Command::new("/usr/bin/time");
                c.arg("-v");
                c
            };
            if pinned_only && !pinned {
                continue;
            }
            let load = load_average();
            let start = Instant::now();
            let run = cmd
                .arg(&bin)
                .args(["score", "--model"])
                .arg(&model_path)
                .arg("--data")
                .arg(data)
                .arg("--schema")
                .arg(dir.path().join("schema.toml"))
                .arg("--out")
                .arg(&out)
                .args(["--top-fraction", "0.3"])
                .output()
                .expect("run /usr/bin/time");
            let secs = start.elapsed().as_secs_f64();
            let err = String::from_utf8_lossy(&run.stderr);
            assert!(run.status.success(), "fedsilo score failed: {err}");
            let field = |key: &str| {
                err.lines()
                    .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
                    .unwrap_or_default()
            };
            let rss_kb: f64 = field("Maximum resident set size (kbytes):")
                .parse()
                .unwrap_or(f64::NAN);
            let cpu: f64 = field("User time (seconds):").parse().unwrap_or(f64::NAN)
                + field("System time (seconds):").parse().unwrap_or(f64::NAN);
            println!(
                "fedsilo score {name}, {rows} rows × {FEATURES}, {what}: {secs:.1} s wall ({:.2} M rows/s), {cpu:.1} s CPU ({:.2} M rows per CPU-second), peak RSS {:.0} MB, load average before {load}",
                rows as f64 / secs / 1e6,
                rows as f64 / cpu / 1e6,
                rss_kb / 1024.0
            );
        }
    }
}

/// Where [`peak_rss`] writes: a temporary directory, or one kept (`FEDSILO_BENCH_KEEP`).
enum Dir {
    Temp(tempfile::TempDir),
    Kept(std::path::PathBuf),
}

impl Dir {
    fn path(&self) -> &std::path::Path {
        match self {
            Dir::Temp(d) => d.path(),
            Dir::Kept(p) => p,
        }
    }
}

/// The 1-minute load average (`/proc/loadavg`).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

/// `cmd file` under `/usr/bin/time -v` (stdout discarded): a bound on what any reader of the
/// file can do, measured as the runs are.
fn timed_baseline(what: &str, cmd: &[&str], file: &std::path::Path, rows: usize) {
    let load = load_average();
    let start = Instant::now();
    let run = std::process::Command::new("/usr/bin/time")
        .arg("-v")
        .args(cmd)
        .arg(file)
        .stdout(std::process::Stdio::null())
        .output()
        .expect("run /usr/bin/time");
    let secs = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&run.stderr);
    let field = |key: &str| -> f64 {
        err.lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let cpu = field("User time (seconds):") + field("System time (seconds):");
    println!(
        "baseline, {what}: {secs:.1} s wall ({:.2} M rows/s), {cpu:.2} s CPU ({:.2} M rows per CPU-second), load average before {load}",
        rows as f64 / secs / 1e6,
        rows as f64 / cpu / 1e6
    );
}

/// The generated rows as Parquet: `id` UTF8, `x0…` optional DOUBLE, row groups of 100,000
/// rows, snappy (what a warehouse export looks like).
struct ParquetOut {
    w: parquet::file::writer::SerializedFileWriter<std::fs::File>,
    ids: Vec<parquet::data_type::ByteArray>,
    values: Vec<Vec<f64>>,
    defs: Vec<Vec<i16>>,
}

impl ParquetOut {
    const GROUP: usize = 100_000;

    fn new(path: &std::path::Path) -> ParquetOut {
        use parquet::basic::{Compression, LogicalType, Repetition, Type as Physical};
        use parquet::schema::types::Type;
        use std::sync::Arc;
        let mut fields = vec![Arc::new(
            Type::primitive_type_builder("id", Physical::BYTE_ARRAY)
                .with_repetition(Repetition::REQUIRED)
                .with_logical_type(Some(LogicalType::String))
                .build()
                .unwrap(),
        )];
        for j in 0..FEATURES {
            fields.push(Arc::new(
                Type::primitive_type_builder(&format!("x{j}"), Physical::DOUBLE)
                    .with_repetition(Repetition::OPTIONAL)
                    .build()
                    .unwrap(),
            ));
        }
        let schema = Type::group_type_builder("customers")
            .with_fields(fields)
            .build()
            .unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let file = std::fs::File::create(path).unwrap();
        ParquetOut {
            w: parquet::file::writer::SerializedFileWriter::new(
                file,
                Arc::new(schema),
                Arc::new(props),
            )
            .unwrap(),
            ids: Vec::new(),
            values: vec![Vec::new(); FEATURES],
            defs: vec![Vec::new(); FEATURES],
        }
    }

    fn id(&mut self, id: String) {
        self.ids.push(id.into_bytes().into());
    }

    fn value(&mut self, j: usize, v: Option<f64>) {
        self.defs[j].push(i16::from(v.is_some()));
        if let Some(v) = v {
            self.values[j].push(v);
        }
    }

    fn end_row(&mut self) {
        if self.ids.len() == Self::GROUP {
            self.flush();
        }
    }

    fn flush(&mut self) {
        use parquet::data_type::{ByteArrayType, DoubleType};
        if self.ids.is_empty() {
            return;
        }
        let mut g = self.w.next_row_group().unwrap();
        let mut c = g.next_column().unwrap().unwrap();
        c.typed::<ByteArrayType>()
            .write_batch(&self.ids, None, None)
            .unwrap();
        c.close().unwrap();
        for j in 0..FEATURES {
            let mut c = g.next_column().unwrap().unwrap();
            c.typed::<DoubleType>()
                .write_batch(&self.values[j], Some(&self.defs[j]), None)
                .unwrap();
            c.close().unwrap();
            self.values[j].clear();
            self.defs[j].clear();
        }
        g.close().unwrap();
        self.ids.clear();
    }

    fn finish(mut self) {
        self.flush();
        self.w.close().unwrap();
    }
}

/// Depth of a tree (a lone leaf: 0).
fn tree_depth(t: &gbdt::Tree) -> usize {
    fn at(t: &gbdt::Tree, i: usize) -> usize {
        match t.nodes.get(i) {
            Some(&gbdt::Node::Split { left, right, .. }) => {
                1 + at(t, left as usize).max(at(t, right as usize))
            }
            _ => 0,
        }
    }
    at(t, 0)
}

/// The model in LightGBM's text model format, the same trees: a split "bin ≤ b" is LightGBM's
/// `value ≤ threshold` with the threshold the largest `f32` below the cut (a split past the
/// last cut: +∞, written as 1e300), missing type NaN, the default direction as is; the base
/// score is added to the first tree's leaves (so margins agree to rounding, not bit for bit).
/// LightGBM reads it with `lgb.Booster(model_file=…)` (`benches/reference/lightgbm_predict.py`).
fn lightgbm_text(model: &gbdt::GbdtModel) -> String {
    use std::fmt::Write as _;
    let d = model.bin_mapper.n_features();
    let below = |c: f32| -> f64 {
        let b = c.to_bits();
        f64::from(if c == 0.0 {
            -f32::from_bits(1)
        } else if c > 0.0 {
            f32::from_bits(b - 1)
        } else {
            f32::from_bits(b + 1)
        })
    };
    let mut blocks = Vec::new();
    for (t, tree) in model.trees.iter().enumerate() {
        // LightGBM numbers splits and leaves separately; a child is a split index or !leaf.
        let mut split_of = vec![usize::MAX; tree.nodes.len()];
        let mut leaf_of = vec![usize::MAX; tree.nodes.len()];
        let (mut ns, mut nl) = (0, 0);
        for (i, n) in tree.nodes.iter().enumerate() {
            if matches!(n, gbdt::Node::Split { .. }) {
                split_of[i] = ns;
                ns += 1;
            } else {
                leaf_of[i] = nl;
                nl += 1;
            }
        }
        let child = |i: u32| -> i64 {
            let i = i as usize;
            if split_of[i] != usize::MAX {
                split_of[i] as i64
            } else {
                -(leaf_of[i] as i64) - 1
            }
        };
        let (mut feat, mut thr, mut dec, mut lc, mut rc) = (vec![], vec![], vec![], vec![], vec![]);
        let mut leaves = vec![0.0f64; nl];
        for (i, n) in tree.nodes.iter().enumerate() {
            match *n {
                gbdt::Node::Split {
                    feature,
                    bin,
                    default_left,
                    left,
                    right,
                    ..
                } => {
                    let cut = model
                        .bin_mapper
                        .cuts(feature as usize)
                        .get(usize::from(bin));
                    feat.push(feature.to_string());
                    thr.push(format!("{:e}", cut.map_or(1e300, |&c| below(c))));
                    // bit 1: default left; bits 2–3 = 2: missing type NaN
                    dec.push((8 + if default_left { 2 } else { 0 }).to_string());
                    lc.push(child(left).to_string());
                    rc.push(child(right).to_string());
                }
                gbdt::Node::Leaf { value } => {
                    leaves[leaf_of[i]] = value + if t == 0 { model.base_score } else { 0.0 };
                }
                gbdt::Node::Open { .. } => {}
            }
        }
        let join = |v: &[String]| v.join(" ");
        let mut b = String::new();
        let _ = writeln!(b, "Tree={t}\nnum_leaves={nl}\nnum_cat=0");
        if ns > 0 {
            let zeros = |n: usize| vec!["0".to_string(); n].join(" ");
            let _ = writeln!(b, "split_feature={}\nsplit_gain={}", join(&feat), zeros(ns));
            let _ = writeln!(b, "threshold={}\ndecision_type={}", join(&thr), join(&dec));
            let _ = writeln!(b, "left_child={}\nright_child={}", join(&lc), join(&rc));
            let lv: Vec<String> = leaves.iter().map(|v| format!("{v:e}")).collect();
            let _ = writeln!(b, "leaf_value={}\nleaf_weight={}", join(&lv), zeros(nl));
            let _ = writeln!(b, "leaf_count={}\ninternal_value={}", zeros(nl), zeros(ns));
            let _ = writeln!(
                b,
                "internal_weight={}\ninternal_count={}",
                zeros(ns),
                zeros(ns)
            );
        } else {
            let _ = writeln!(b, "leaf_value={:e}", leaves.first().copied().unwrap_or(0.0));
        }
        let _ = writeln!(b, "is_linear=0\nshrinkage=1\n\n");
        blocks.push(b);
    }
    let mut s = String::new();
    let names: Vec<String> = (0..d).map(|j| format!("x{j}")).collect();
    let infos = vec!["[-1e300:1e300]".to_string(); d];
    let _ = writeln!(s, "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1");
    let _ = writeln!(s, "label_index=0\nmax_feature_idx={}", d.saturating_sub(1));
    let _ = writeln!(
        s,
        "objective=binary sigmoid:1\nfeature_names={}",
        names.join(" ")
    );
    let _ = writeln!(s, "feature_infos={}", infos.join(" "));
    let sizes: Vec<String> = blocks.iter().map(|b| b.len().to_string()).collect();
    let _ = writeln!(s, "tree_sizes={}\n", sizes.join(" "));
    for b in &blocks {
        s.push_str(b);
    }
    s.push_str("end of trees\n\nparameters:\nend of parameters\n");
    s
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
