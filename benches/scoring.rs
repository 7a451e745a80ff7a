//! Scoring throughput: `TrainedModel::predict` (what `fedsilo score` runs per chunk) on
//! N rows × 50 feature columns for a logistic regression (standardise + dot product +
//! sigmoid) and a 100-tree GBDT (bin + route), on ONE core (a one-thread rayon pool), in
//! rows per second; then, when `FEDSILO_BENCH_RSS_ROWS` is set, the peak RSS of the real
//! `fedsilo score` over a generated CSV of that many rows × 50 columns (written to a temp dir
//! at bench time, deleted after), measured with `/usr/bin/time -v`.
//!
//! ```text
//! cargo bench --bench scoring
//! FEDSILO_BENCH_RSS_ROWS=10000000 cargo bench --bench scoring   # + peak RSS over 10M rows
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
const ROWS: usize = 200_000;

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

fn gbdt_model() -> TrainedModel {
    let t = table(20_000, 7);
    let params = GbdtParams {
        n_trees: 100,
        max_depth: 4,
        max_leaves: 16,
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

fn one_core() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one-thread pool")
}

fn bench(c: &mut Criterion) {
    let data = table(ROWS, 1);
    let pool = one_core();
    let mut g = c.benchmark_group("scoring_one_core");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);
    for (name, model) in [("lr_50", lr_model()), ("gbdt_100_trees_50", gbdt_model())] {
        g.bench_function(name, |b| {
            b.iter(|| pool.install(|| black_box(model.predict(&data).expect("predict"))))
        });
        // A plain figure next to criterion's: rows/s over five passes.
        let start = Instant::now();
        for _ in 0..5 {
            pool.install(|| black_box(model.predict(&data).expect("predict")));
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{name}: {:.2} M rows/s on one core ({ROWS} rows × {FEATURES} columns, 5 passes in {secs:.2} s)",
            5.0 * ROWS as f64 / secs / 1e6
        );
    }
    g.finish();
    if let Some(rows) = std::env::var("FEDSILO_BENCH_RSS_ROWS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        peak_rss(rows);
    }
}

/// Writes `rows` × 50 columns of CSV, scores it with the real binary under
/// `/usr/bin/time -v`, prints wall time and peak RSS for LR and GBDT.
fn peak_rss(rows: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("customers.csv");
    let start = Instant::now();
    {
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&csv).unwrap());
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
            for _ in 0..FEATURES {
                let v: u32 = rng.random_range(0..20000);
                if v < 1000 {
                    line.push(',');
                } else {
                    let _ = write!(line, ",{:.3}", f64::from(v) / 5000.0 - 2.0);
                }
            }
            line.push('\n');
            w.write_all(line.as_bytes()).unwrap();
        }
        w.flush().unwrap();
    }
    let size = std::fs::metadata(&csv).map(|m| m.len()).unwrap_or(0);
    println!(
        "generated {rows} rows × {FEATURES} columns ({:.2} GB) in {:.1} s",
        size as f64 / 1e9,
        start.elapsed().as_secs_f64()
    );
    let mut schema = String::from("id_column = \"id\"\nfeatures = [\n");
    for j in 0..FEATURES {
        schema.push_str(&format!("  {{ name = \"x{j}\", type = \"numeric\" }},\n"));
    }
    schema.push_str("]\n");
    std::fs::write(dir.path().join("schema.toml"), schema).unwrap();
    for (name, model) in [("lr", lr_model()), ("gbdt", gbdt_model())] {
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
        let out = dir.path().join(format!("{name}-top.csv"));
        let start = Instant::now();
        let run = std::process::Command::new("/usr/bin/time")
            .arg("-v")
            .arg(env!("CARGO_BIN_EXE_fedsilo"))
            .args(["score", "--model"])
            .arg(&model_path)
            .arg("--data")
            .arg(&csv)
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
        println!(
            "fedsilo score {name}, {rows} rows × {FEATURES}: {secs:.1} s wall ({:.2} M rows/s end to end, user {} s, system {} s), peak RSS {:.0} MB",
            rows as f64 / secs / 1e6,
            field("User time (seconds):"),
            field("System time (seconds):"),
            rss_kb / 1024.0
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
