//! One boosting round (one tree) of federated GBDT under secure aggregation, against the same
//! boosting on the pooled rows, for BENCHMARKS.md ("GBDT boosting round").
//!
//! ```text
//! cargo bench --bench gbdt
//! ```
//!
//! Setting: 5 participants × 1,000,000 synthetic rows (`FEDSILO_BENCH_GBDT_ROWS` changes the
//! rows per participant), 50 f32 features with a known logistic signal, `max_bins` = 255
//! value bins + 1 missing bin = 256 histogram bins per feature, depth 6 with up to 64 leaves
//! (the trees come out complete), learning rate 0.1, `min_child_weight` 1, λ = 1. Each job
//! grows `FEDSILO_BENCH_GBDT_TREES` trees (default 12).
//!
//! What one sample is: the wall time of ONE boosting round (one tree) in the steady state,
//! taken with `Instant` and handed to criterion through `iter_custom`. A 12-tree job yields
//! 11 such samples (trees 2..12; tree 1 also carries the one-off binning of the rows), which
//! is what criterion's minimum of 10 flat samples plus its one warm-up call consume, so each
//! side runs ONE job, the one the checks below use (a further job only if criterion asked
//! for more; it says so on stderr). A federated job at this size takes about 1.5 minutes, so
//! sampling whole jobs would not fit the ~10-minute budget.
//!
//! - `gbdt_round/federated`: the production path. A fresh sans-IO `Coordinator` and five
//!   `Worker`s driven by `fedsilo_simulations::memory::MemoryFederation` (in memory, real
//!   SecAgg+ masking with k = 4 neighbours, t = 3; level sums in Z_2^32 with 6 fractional
//!   bits at this size, the narrowest ring that holds 5 participants × 5M rows). The time of
//!   a tree is taken at the end of its last (sixth) level round, from the `run`
//!   callback: it covers every round the tree needs (participants' gradients, routing,
//!   histograms and masking; the coordinator's unmasking, split finding and checkpoint), not
//!   the job's preamble (statistics, bin agreement) or final evaluation.
//! - `gbdt_round/pooled`: the baseline, the same boosting on the pooled 5,000,000 rows in one
//!   process, without federation or masking: `fit_pooled`'s own loop (`GbdtServer::next` →
//!   `gbdt_compute` on all rows → `absorb`) with the time taken when a tree is finished. The
//!   check below asserts that the loop's trees are bit-for-bit those of
//!   `fedsilo_ml::gbdt::fit_pooled` (called once, timed whole, for the record).
//!
//! Data generation, federation set-up and the copies of the rows into the workers are not
//! timed. Printed before the criterion output: every round of the federated job with its
//! time and bytes; bytes each participant sent to the coordinator per tree (Σ SecAgg
//! `wire_size`, as the coordinator counts them in its round summaries) next to the masked
//! vectors' own size (elements × 8 B); the bytes the coordinator sent to each participant
//! (round starts, whose level instructions are model deltas after the job's first level, and
//! SecAgg), beside the level instructions' protobuf bytes whole and as deltas over the pooled
//! job (the in-run baseline of the download); the same loop on ONE participant's 1,000,000 rows
//! (per-tree cost at the size each participant works on); and the hold-out AUC of the
//! federated and pooled models against the AUC of the true logit.
//!
//! With `FEDSILO_BENCH_GBDT_LIGHTGBM=<python>` (e.g. `python3`, with `lightgbm` installed)
//! the bench also times LightGBM in the same run: it writes the generated rows to
//! `<prefix>.*` (row-major f32; a temporary directory, or `FEDSILO_BENCH_GBDT_EXPORT=<prefix>`),
//! runs `benches/reference/lightgbm_gbdt.py <prefix>` on them (`num_threads` = 2, before its
//! own measurements, so the two never compete for the cores) and reads the script's
//! `<prefix>.lightgbm.json` back: the closing table then gives every figure as a ratio to
//! LightGBM's. `FEDSILO_BENCH_GBDT_EXPORT` alone only writes the rows. Per-tree process CPU
//! time (`/proc/self/stat`) is printed next to wall time, as the machine may be shared.
//! The bench refuses to
//! measure (panics) unless every job grows all its trees (no stump) and every model reaches
//! AUC > 0.6; it reports how many trees are complete (all of them at the default size).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use fedsilo_coordinator::engine::{Coordinator, RoundSummary};
use fedsilo_crypto::keys::IdentityKey;
use fedsilo_crypto::msg::{ParticipantId, Roster};
use fedsilo_ml::gbdt::{
    fit_pooled, gbdt_compute, GbdtCache, GbdtInstruction, GbdtModel, GbdtParams, GbdtServer, Node,
    Tree,
};
use fedsilo_ml::metrics::auc;
use fedsilo_ml::table::Table;
use fedsilo_participant::worker::Worker;
use fedsilo_proto::pb;
use fedsilo_simulations::memory::MemoryFederation;
use fedsilo_task::{JobSpec, Learning, LocalData, ModelParams, ModelSpec, Task};
use ndarray::{concatenate, Array2, ArrayView1, ArrayView2, Axis};
use prost::Message as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

const PARTICIPANTS: usize = 5;
const FEATURES: usize = 50;
const DEPTH: usize = 6;
const HOLDOUT_ROWS: usize = 20_000;
const DATASET: &str = "synth";
/// Rows per generator stream (generation is parallel and deterministic).
const GEN_CHUNK: usize = 65_536;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

fn rows() -> usize {
    env_usize("FEDSILO_BENCH_GBDT_ROWS", 1_000_000)
}

fn trees() -> usize {
    let t = env_usize("FEDSILO_BENCH_GBDT_TREES", 12);
    assert!(t >= 3, "FEDSILO_BENCH_GBDT_TREES must be ≥ 3");
    t
}

fn params(n_trees: usize) -> GbdtParams {
    GbdtParams {
        n_trees,
        max_depth: DEPTH,
        max_leaves: 1 << DEPTH,
        learning_rate: 0.1,
        max_bins: 255,
        ..GbdtParams::default()
    }
}

/// The known signal: log-odds of row `x` (features 0..12 matter, the other 38 are noise).
/// Feature 49 is missing for 5 % of rows; missing adds +0.5.
fn true_logit(x: &[f32]) -> f64 {
    const W: [f64; 8] = [0.9, -0.7, 0.6, -0.5, 0.4, 0.35, -0.3, 0.25];
    let v = |j: usize| f64::from(x[j]);
    let mut z = -1.2;
    for (j, w) in W.iter().enumerate() {
        z += w * v(j);
    }
    z += 1.2 * f64::from(u8::from(v(8) > 0.5)); // a step
    z -= 0.5 * v(9) * v(9); // a bowl
    z += 0.6 * v(10) * v(11).signum(); // an interaction
    z += if x[49].is_nan() { 0.5 } else { 0.2 * v(49) };
    z
}

/// `rows` synthetic customers of participant `who`: features uniform on [−2, 2) (feature 49
/// with 5 % missing), labels drawn from the logistic model `true_logit`. Returns the table
/// and the true logits (the best possible scores).
fn synth(rows: usize, who: u64) -> (Table, Vec<f64>) {
    let mut x = vec![0f32; rows * FEATURES];
    let mut y = vec![0f32; rows];
    let mut logit = vec![0f64; rows];
    x.par_chunks_mut(GEN_CHUNK * FEATURES)
        .zip(y.par_chunks_mut(GEN_CHUNK))
        .zip(logit.par_chunks_mut(GEN_CHUNK))
        .enumerate()
        .for_each(|(c, ((xc, yc), lc))| {
            let mut rng = ChaCha8Rng::seed_from_u64(who << 32 | c as u64);
            for ((row, yv), lv) in xc.chunks_exact_mut(FEATURES).zip(yc).zip(lc) {
                for v in row.iter_mut() {
                    *v = rng.random_range(-2.0f32..2.0);
                }
                if rng.random_bool(0.05) {
                    row[49] = f32::NAN;
                }
                *lv = true_logit(row);
                let p = 1.0 / (1.0 + (-*lv).exp());
                *yv = f32::from(u8::from(rng.random_bool(p)));
            }
        });
    let table = Table {
        feature_names: (0..FEATURES).map(|j| format!("x{j}")).collect(),
        x: Array2::from_shape_vec((rows, FEATURES), x).expect("shape"),
        label_names: vec!["y".into()],
        labels: Array2::from_shape_vec((rows, 1), y).expect("shape"),
        ids: (1..=rows).map(|r| r.to_string()).collect(),
    };
    (table, logit)
}

struct Data {
    locals: Vec<LocalData>,
    pooled_train: Table,
    pooled_holdout: Table,
    /// AUC of the true logit on the pooled hold-out (the ceiling).
    bayes_auc: f64,
    /// LightGBM's figures on the same rows (`FEDSILO_BENCH_GBDT_LIGHTGBM`).
    lightgbm: Option<serde_json::Value>,
}

fn data(rows: usize) -> Data {
    let started = Instant::now();
    let mut locals = Vec::new();
    let mut hold_logits = Vec::new();
    for p in 0..PARTICIPANTS as u64 {
        let (train, _) = synth(rows, 2 * p);
        let (holdout, l) = synth(HOLDOUT_ROWS, 2 * p + 1);
        hold_logits.extend(l);
        locals.push(LocalData { train, holdout });
    }
    let stack = |pick: fn(&LocalData) -> &Table| {
        let ts: Vec<&Table> = locals.iter().map(pick).collect();
        let xs: Vec<_> = ts.iter().map(|t| t.x.view()).collect();
        let ys: Vec<_> = ts.iter().map(|t| t.labels.view()).collect();
        Table {
            feature_names: ts[0].feature_names.clone(),
            x: concatenate(Axis(0), &xs).expect("same columns"),
            label_names: ts[0].label_names.clone(),
            labels: concatenate(Axis(0), &ys).expect("same columns"),
            ids: Vec::new(), // not used by the baseline
        }
    };
    let pooled_train = stack(|l| &l.train);
    let pooled_holdout = stack(|l| &l.holdout);
    let bayes_auc = auc(&hold_logits, &pooled_holdout.label(0).to_vec());
    let pos = pooled_train.label(0).iter().filter(|&&v| v == 1.0).count();
    println!(
        "data: {PARTICIPANTS} × {rows} training rows × {FEATURES} f32 features \
         ({:.2} GB pooled), {:.1} % positive, hold-out {PARTICIPANTS} × {HOLDOUT_ROWS} rows, \
         generated in {:.1} s; AUC of the true logit on the hold-out: {bayes_auc:.4}",
        (pooled_train.x.len() * 4) as f64 / 1e9,
        100.0 * pos as f64 / pooled_train.n_rows() as f64,
        started.elapsed().as_secs_f64()
    );
    let python = std::env::var("FEDSILO_BENCH_GBDT_LIGHTGBM").ok();
    let export_to = std::env::var("FEDSILO_BENCH_GBDT_EXPORT").ok();
    let mut lightgbm = None;
    if python.is_some() || export_to.is_some() {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let prefix = export_to.unwrap_or_else(|| {
            tmp.path()
                .join("gbdt-rows")
                .to_str()
                .expect("utf-8 path")
                .to_string()
        });
        export(&prefix, &pooled_train, &pooled_holdout, rows);
        if let Some(python) = python {
            lightgbm = Some(run_lightgbm(&python, &prefix));
        }
    }
    Data {
        locals,
        pooled_train,
        pooled_holdout,
        bayes_auc,
        lightgbm,
    }
}

/// Runs `benches/reference/lightgbm_gbdt.py <prefix>` with `python` and reads its figures.
fn run_lightgbm(python: &str, prefix: &str) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/reference/lightgbm_gbdt.py"
    );
    println!("running {python} {script} {prefix} (LightGBM, num_threads = 2) …");
    let status = std::process::Command::new(python)
        .arg(script)
        .arg(prefix)
        .status()
        .expect("run the LightGBM reference script");
    assert!(
        status.success(),
        "the LightGBM reference script failed: {status}"
    );
    let text =
        std::fs::read_to_string(format!("{prefix}.lightgbm.json")).expect("the script's figures");
    serde_json::from_str(&text).expect("the script's figures are JSON")
}

/// CPU time of this process so far (user + system, all threads), from `/proc/self/stat`
/// (clock ticks of 10 ms); 0 where that file does not exist.
fn cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Writes the pooled training and hold-out rows for `benches/reference/lightgbm_gbdt.py`:
/// `<prefix>.train.x` / `.holdout.x` (row-major little-endian f32, NaN = missing),
/// `.train.y` / `.holdout.y` (f32 0/1), and `<prefix>.json` (shapes, participants). Rows are
/// in participant order, so the first `rows` training rows are participant 0's. Not timed.
fn export(prefix: &str, train: &Table, holdout: &Table, rows: usize) {
    use std::io::Write;
    let write = |path: String, values: &mut dyn Iterator<Item = f32>| {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("export file"));
        for v in values {
            f.write_all(&v.to_le_bytes()).expect("export write");
        }
        f.flush().expect("export flush");
    };
    write(format!("{prefix}.train.x"), &mut train.x.iter().copied());
    write(
        format!("{prefix}.train.y"),
        &mut train.label(0).iter().copied(),
    );
    write(
        format!("{prefix}.holdout.x"),
        &mut holdout.x.iter().copied(),
    );
    write(
        format!("{prefix}.holdout.y"),
        &mut holdout.label(0).iter().copied(),
    );
    let meta = format!(
        "{{\"train_rows\": {}, \"holdout_rows\": {}, \"features\": {FEATURES}, \
         \"participants\": {PARTICIPANTS}, \"rows_per_participant\": {rows}, \"depth\": \
         {DEPTH}, \"max_bins\": 255, \"trees\": {}}}\n",
        train.n_rows(),
        holdout.n_rows(),
        trees()
    );
    std::fs::write(format!("{prefix}.json"), meta).expect("export meta");
    println!("exported the pooled rows to {prefix}.* for benches/reference/lightgbm_gbdt.py");
}

fn seed(label: &str, i: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&i.to_le_bytes());
    s[8..8 + label.len()].copy_from_slice(label.as_bytes());
    s
}

/// A fresh federation (coordinator and five workers, each with a copy of its rows).
fn federation(d: &Data, run: u64) -> MemoryFederation {
    let mut roster = Roster::new();
    let mut keys = Vec::new();
    let mut names = BTreeMap::new();
    for i in 0..PARTICIPANTS as u64 {
        let k = Arc::new(IdentityKey::from_seed(seed("identity", i)).expect("identity key"));
        roster.insert(i as ParticipantId, k.public_key());
        names.insert(i as ParticipantId, format!("bank-{i}"));
        keys.push(k);
    }
    let coordinator = Coordinator::new(roster.clone(), names, seed("coordinator", run));
    let roster = Arc::new(roster);
    let workers = (0..PARTICIPANTS)
        .into_par_iter()
        .map(|i| {
            let datasets = BTreeMap::from([(DATASET.to_string(), d.locals[i].clone())]);
            Worker::new(
                i as ParticipantId,
                keys[i].clone(),
                roster.clone(),
                datasets,
                seed("worker", run << 8 | i as u64),
            )
        })
        .collect();
    MemoryFederation::new(coordinator, workers, Vec::new())
}

fn job_spec(n_trees: usize, run: u64) -> JobSpec {
    JobSpec {
        job_id: format!("gbdt-{run}"),
        dataset: DATASET.into(),
        task: Task::Risk,
        model: ModelSpec::Gbdt(params(n_trees)),
        features: Vec::new(),
        labels: Vec::new(),
        rounds: 1,
        min_participants: PARTICIPANTS,
        threshold: None,
        neighbours: None,
        learning: Learning::default(),
        dp: None,
        eval_every: 1,
        hist_bins: 1000,
        seed: run,
        phase_timeout_ms: 30_000,
        // as the simulator sets it: the fixed-point encoding allows up to 1,000 participants
        max_participants: 1000,
        absence_patience_ms: fedsilo_task::DEFAULT_ABSENCE_PATIENCE_MS,
    }
}

struct FedRun {
    shape: String,
    /// Launch time and every round's summary with the time it finished.
    launched: Instant,
    rounds: Vec<(Instant, RoundSummary)>,
    /// End of each tree's last level round.
    tree_ends: Vec<Instant>,
    /// Process CPU time at each tree's end.
    tree_cpu: Vec<Duration>,
    /// End of the bin-agreement round (the last round before tree 1).
    bins_end: Instant,
    model: GbdtModel,
    /// Hold-out AUC computed by the coordinator from masked score histograms.
    holdout_auc: f64,
}

/// Steady-state tree times: trees 2.. (each from the end of the previous tree).
fn steady(tree_ends: &[Instant]) -> Vec<Duration> {
    tree_ends.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Steady-state CPU time per tree: trees 2.., from process CPU time at each tree's end.
fn steady_cpu(tree_cpu: &[Duration]) -> Vec<Duration> {
    tree_cpu
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect()
}

fn mean(ts: &[Duration]) -> Duration {
    ts.iter().sum::<Duration>() / ts.len() as u32
}

/// Runs one federated job of `n_trees` trees; set-up (copies of the rows) is not timed.
fn run_federated(d: &Data, n_trees: usize, run: u64) -> FedRun {
    let mut sim = federation(d, run);
    let features = d.locals[0].train.feature_names.clone();
    let labels = d.locals[0].train.label_names.clone();
    let mut rounds: Vec<(Instant, RoundSummary)> = Vec::new();
    let mut cpus: Vec<Duration> = Vec::new();
    let launched = Instant::now();
    let job = sim
        .launch(job_spec(n_trees, run), features, labels)
        .expect("launch");
    sim.run(&mut |s| {
        rounds.push((Instant::now(), s.clone()));
        cpus.push(cpu());
    })
    .expect("federation ran to the end");
    for (_, r) in &rounds {
        assert_eq!(
            r.outcome, "ok",
            "round {} ({}) failed",
            r.secagg_round, r.purpose
        );
        assert_eq!(r.survivors.len(), PARTICIPANTS);
    }
    let plan = sim.coordinator.plan(&job).expect("job");
    assert!(plan.is_done(), "job did not finish");
    let model = match plan.model().map(|m| &m.params) {
        Some(ModelParams::Gbdt { model }) => model.clone(),
        _ => panic!("the job produced no GBDT model"),
    };
    let holdout_auc = plan.last_eval().expect("final evaluation").per_label[0]
        .0
        .auc;
    let shape = check_trees(&model, n_trees);
    // The level rounds, tree after tree: a tree whose deepest split is at depth s took
    // min(s + 2, DEPTH) levels (a level without any split ends a tree early).
    let levels: Vec<(Instant, Duration)> = rounds
        .iter()
        .zip(&cpus)
        .filter(|((_, r), _)| r.purpose == fedsilo_task::Purpose::TreeLevel)
        .map(|((t, _), c)| (*t, *c))
        .collect();
    let per_tree: Vec<usize> = model
        .trees
        .iter()
        .map(|t| (deepest_split(t) + 2).min(DEPTH))
        .collect();
    assert_eq!(levels.len(), per_tree.iter().sum::<usize>(), "level rounds");
    let mut tree_ends = Vec::new();
    let mut tree_cpu = Vec::new();
    let mut done = 0;
    for n in per_tree {
        done += n;
        tree_ends.push(levels[done - 1].0);
        tree_cpu.push(levels[done - 1].1);
    }
    let first_level = rounds
        .iter()
        .position(|(_, r)| r.purpose == fedsilo_task::Purpose::TreeLevel)
        .expect("levels");
    let bins_end = rounds[first_level - 1].0;
    FedRun {
        shape,
        launched,
        rounds,
        tree_ends,
        tree_cpu,
        bins_end,
        model,
        holdout_auc,
    }
}

/// Depth of the deepest split node (root = 0); trees in a finished model have a split.
fn deepest_split(t: &Tree) -> usize {
    fn walk(t: &Tree, i: usize, d: usize) -> usize {
        match t.nodes[i] {
            Node::Split { left, right, .. } => {
                d.max(walk(t, left as usize, d + 1))
                    .max(walk(t, right as usize, d + 1))
            }
            _ => 0,
        }
    }
    walk(t, 0, 0)
}

fn leaves(t: &Tree) -> usize {
    t.nodes
        .iter()
        .filter(|n| matches!(n, Node::Leaf { .. }))
        .count()
}

/// All trees grown, none a stump; "complete trees: k of n" for the report (at the default
/// size every tree is complete: 2^DEPTH leaves).
fn check_trees(model: &GbdtModel, n_trees: usize) -> String {
    assert_eq!(model.trees.len(), n_trees, "trees grown");
    assert!(model.trees.iter().all(|t| leaves(t) >= 2), "a stump");
    let complete = model
        .trees
        .iter()
        .filter(|t| leaves(t) == 1 << DEPTH)
        .count();
    format!(
        "{complete} of {n_trees} trees complete ({} leaves)",
        1 << DEPTH
    )
}

/// `fit_pooled`'s loop (one participant holding every row), with the time each tree ends.
fn pooled_loop(x: ArrayView2<f32>, y: ArrayView1<f32>, n_trees: usize) -> PooledRun {
    let start = Instant::now();
    let mut server = GbdtServer::new(params(n_trees), x.ncols()).expect("params");
    let mut cache = GbdtCache::new();
    let mut tree_ends = Vec::with_capacity(n_trees);
    let mut tree_cpu = Vec::with_capacity(n_trees);
    // Protobuf bytes of the level instructions, whole and as deltas (what one participant
    // downloads for them, before the round's SecAgg configuration).
    let mut wire = (0usize, 0usize);
    while let Some(instr) = server.next() {
        if matches!(instr, GbdtInstruction::Level { .. }) {
            let len = |i: &GbdtInstruction| pb::GbdtInstruction::from(i).encoded_len();
            wire.0 += len(&instr);
            wire.1 += server.next_delta().as_ref().map_or(len(&instr), len);
        }
        let v = gbdt_compute(&instr, x, y, &mut cache).expect("compute");
        server.absorb(&v).expect("absorb");
        if server.trees_done() > tree_ends.len() {
            tree_ends.push(Instant::now());
            tree_cpu.push(cpu());
        }
    }
    let model = server.into_model().expect("finished");
    let shape = check_trees(&model, n_trees);
    PooledRun {
        shape,
        start,
        tree_ends,
        tree_cpu,
        model,
        wire,
    }
}

struct PooledRun {
    shape: String,
    start: Instant,
    tree_ends: Vec<Instant>,
    tree_cpu: Vec<Duration>,
    model: GbdtModel,
    /// Level instructions' protobuf bytes over the job: (whole, as sent: deltas after the
    /// job's first level).
    wire: (usize, usize),
}

fn holdout_auc(d: &Data, m: &GbdtModel) -> f64 {
    let p = m.predict_proba(d.pooled_holdout.x.view()).expect("predict");
    auc(&p, &d.pooled_holdout.label(0).to_vec())
}

fn ms(t: Duration) -> f64 {
    t.as_secs_f64() * 1e3
}

fn list_ms(ts: &[Duration]) -> String {
    ts.iter()
        .map(|t| format!("{:.0}", ms(*t)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first federated and pooled jobs, checked and described; returns their steady-state
/// tree times (the first samples criterion consumes).
fn check_and_report(d: &Data, n_trees: usize) -> (Vec<Duration>, Vec<Duration>) {
    println!("load average before the federated job: {}", load_average());
    let run = run_federated(d, n_trees, 0);
    let fed_auc = holdout_auc(d, &run.model);
    let fed_steady = steady(&run.tree_ends);
    let fed_cpu = steady_cpu(&run.tree_cpu);

    println!("federated job, round by round (ms since the previous round ended):");
    let mut prev = run.launched;
    for (t, r) in &run.rounds {
        let sent: u64 = r.bytes_sent.values().sum();
        println!(
            "  round {:>3} {:<10} {:>9.1} ms   participants→coordinator {:>10} B   ({})",
            r.secagg_round,
            r.purpose,
            ms(*t - prev),
            sent,
            r.encoding
        );
        prev = *t;
    }
    println!(
        "federated: preamble (stats, moments, bins) {:.0} ms; tree 1 {:.0} ms (includes the \
         participants' binning); trees 2..{n_trees}: {} ms, mean {:.0} ms (process CPU {:.0} \
         ms); whole job {:.0} ms; load average after: {}",
        ms(run.bins_end - run.launched),
        ms(run.tree_ends[0] - run.bins_end),
        list_ms(&fed_steady),
        ms(mean(&fed_steady)),
        ms(mean(&fed_cpu)),
        ms(run.rounds.last().expect("rounds").0 - run.launched),
        load_average()
    );
    println!("federated trees: {}", run.shape);

    // Bytes per participant per tree, over the level rounds.
    let mut up: BTreeMap<&str, u64> = BTreeMap::new();
    let mut down: BTreeMap<&str, u64> = BTreeMap::new();
    let mut encodings: Vec<&str> = Vec::new();
    for (_, r) in run
        .rounds
        .iter()
        .filter(|(_, r)| r.purpose == fedsilo_task::Purpose::TreeLevel)
    {
        for (who, b) in &r.bytes_sent {
            *up.entry(who).or_default() += b;
        }
        for (who, b) in &r.bytes_received {
            *down.entry(who).or_default() += b;
        }
        if !encodings.contains(&r.encoding.as_str()) {
            encodings.push(&r.encoding);
        }
    }
    assert_eq!(encodings.len(), 1, "one encoding for every level round");
    let elem_bytes = if encodings[0].starts_with("Z_2^64") {
        8
    } else {
        assert!(encodings[0].starts_with("Z_2^32"), "{}", encodings[0]);
        4
    };
    // Masked vector of a complete tree: one requested node at the root, then one child of
    // each split (the sibling is derived by subtraction): 1 + 1 + 2 + 4 + 8 + 16 = 2^(D−1)
    // node histograms of FEATURES × (max_bins + 1) × (grad, hess).
    let elements = (1usize << (DEPTH - 1)) * FEATURES * 256 * 2;
    let masked = (elements * elem_bytes) as f64;
    println!(
        "bytes per participant per tree (level rounds / {n_trees} trees), encoding {}: masked \
         vectors {elements} elements × {elem_bytes} B = {masked} B",
        encodings[0]
    );
    let mut up_down = (0.0f64, 0.0f64);
    for (who, b) in &up {
        let per_tree = *b as f64 / n_trees as f64;
        up_down.0 = up_down.0.max(per_tree);
        up_down.1 = up_down.1.max(down[who] as f64 / n_trees as f64);
        println!(
            "  {who}: sent {per_tree:.0} B per tree (all SecAgg messages: masked vectors + \
             {:.0} B of keys, shares, signatures), received {:.0} B per tree (round starts with \
             the level instructions as model deltas + SecAgg)",
            per_tree - masked,
            down[who] as f64 / n_trees as f64
        );
    }

    // Baseline: the same boosting on the pooled rows.
    let x = d.pooled_train.x.view();
    let y = d.pooled_train.label(0);
    let pooled = pooled_loop(x, y, n_trees);
    let pooled_steady = steady(&pooled.tree_ends);
    let pooled_cpu = steady_cpu(&pooled.tree_cpu);
    let pooled_auc = holdout_auc(d, &pooled.model);
    println!(
        "pooled ({} rows, {}): preamble + tree 1 {:.0} ms; trees 2..{n_trees}: {} ms, mean \
         {:.0} ms (process CPU {:.0} ms)",
        d.pooled_train.n_rows(),
        pooled.shape,
        ms(pooled.tree_ends[0] - pooled.start),
        list_ms(&pooled_steady),
        ms(mean(&pooled_steady)),
        ms(mean(&pooled_cpu))
    );
    println!(
        "level instructions per tree (protobuf, mean over {n_trees} trees of the pooled job): \
         {:.0} B whole (the model so far, as before), {:.0} B as model deltas (the job's first \
         level whole, then the new splits), {:.1}× smaller",
        pooled.wire.0 as f64 / n_trees as f64,
        pooled.wire.1 as f64 / n_trees as f64,
        pooled.wire.0 as f64 / pooled.wire.1.max(1) as f64
    );
    // The loop is fit_pooled's: same trees, and about the same time for the same trees.
    let k = 3;
    let started = Instant::now();
    let reference = fit_pooled(x, y, &params(k)).expect("fit_pooled");
    let t_fit = started.elapsed();
    assert_eq!(
        reference.trees[..],
        pooled.model.trees[..k],
        "the instrumented loop grows fit_pooled's trees"
    );
    println!(
        "fit_pooled itself, {k} trees: {:.0} ms (the loop reached tree {k} in {:.0} ms); same \
         trees as the loop: true",
        ms(t_fit),
        ms(pooled.tree_ends[k - 1] - pooled.start)
    );
    // The same loop at one participant's size, for the per-row cost at 1M vs 5M rows.
    let p0 = &d.locals[0].train;
    let one = pooled_loop(p0.x.view(), p0.label(0), 4);
    let one_steady = steady(&one.tree_ends);
    let one_cpu = steady_cpu(&one.tree_cpu);
    println!(
        "the same loop on ONE participant's {} rows: trees 2..4: {} ms, mean {:.0} ms (process \
         CPU {:.0} ms)",
        p0.n_rows(),
        list_ms(&one_steady),
        ms(mean(&one_steady)),
        ms(mean(&one_cpu))
    );

    let same = run.model.trees == pooled.model.trees;
    println!(
        "hold-out AUC after {n_trees} trees: federated {fed_auc:.4} (coordinator's, from masked \
         histograms: {:.4}), pooled {pooled_auc:.4}, true logit {:.4}; federated trees \
         bit-identical to the pooled trees: {same}",
        run.holdout_auc, d.bayes_auc
    );
    assert!(
        fed_auc > 0.6 && run.holdout_auc > 0.6 && pooled_auc > 0.6,
        "the trees learned nothing: federated {fed_auc}, pooled {pooled_auc}"
    );
    println!(
        "steady-state time per tree: federated {:.0} ms, pooled {:.0} ms, federated / pooled = \
         {:.2}",
        ms(mean(&fed_steady)),
        ms(mean(&pooled_steady)),
        mean(&fed_steady).as_secs_f64() / mean(&pooled_steady).as_secs_f64()
    );
    let table = Table1 {
        rows: d.locals[0].train.n_rows(),
        n_trees,
        fed: (mean(&fed_steady), mean(&fed_cpu)),
        pooled: (mean(&pooled_steady), mean(&pooled_cpu)),
        one: (mean(&one_steady), mean(&one_cpu)),
        preamble: run.bins_end - run.launched,
        tree1_extra: (run.tree_ends[0] - run.bins_end).saturating_sub(mean(&fed_steady)),
        up_down,
        encoding: encodings[0].to_string(),
        auc: (fed_auc, pooled_auc),
    };
    print_table(&table, d.lightgbm.as_ref());
    (fed_steady, pooled_steady)
}

/// The figures of the closing table (means over trees 2.., wall and process CPU time).
struct Table1 {
    rows: usize,
    n_trees: usize,
    fed: (Duration, Duration),
    pooled: (Duration, Duration),
    one: (Duration, Duration),
    preamble: Duration,
    /// Tree 1 beyond a steady tree: the participants' binning of their rows.
    tree1_extra: Duration,
    up_down: (f64, f64),
    encoding: String,
    auc: (f64, f64),
}

/// The one-run table of BENCHMARKS.md ("GBDT boosting round"), in Markdown, with ratios to
/// LightGBM's figures on the same rows when the reference script ran.
fn print_table(t: &Table1, lgb: Option<&serde_json::Value>) {
    let get = |side: &str, key: &str| -> Option<f64> { lgb?.get(side)?.get(key)?.as_f64() };
    let ratio = |ours: Duration, theirs: Option<f64>| match theirs {
        Some(v) if v > 0.0 => format!("**{:.2}×**", ms(ours) / v),
        _ => "—".to_string(),
    };
    let cell = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.0} ms"));
    let total = t.rows * PARTICIPANTS;
    println!(
        "\n| figure (means over trees 2..{}) | fedsilo: wall (process CPU) | LightGBM {} \
         num_threads = 2: wall (CPU) | fedsilo / LightGBM (wall) |",
        t.n_trees,
        lgb.and_then(|l| l.get("lightgbm")?.as_str())
            .unwrap_or("(not run)")
    );
    println!("|---|---|---|---|");
    let lp = (
        get("pooled", "tree_mean_ms"),
        get("pooled", "tree_cpu_mean_ms"),
    );
    let l1 = (
        get("participant0", "tree_mean_ms"),
        get("participant0", "tree_cpu_mean_ms"),
    );
    let pair = |(w, c): (Option<f64>, Option<f64>)| match (w, c) {
        (Some(w), Some(c)) => format!("{w:.0} ms ({c:.0} ms)"),
        _ => "—".to_string(),
    };
    println!(
        "| per tree, federated {PARTICIPANTS} × {} rows (all in one process) vs LightGBM pooled \
         {total} | {:.0} ms ({:.0} ms) | {} | {} |",
        t.rows,
        ms(t.fed.0),
        ms(t.fed.1),
        pair(lp),
        ratio(t.fed.0, lp.0)
    );
    println!(
        "| per tree, fedsilo pooled {total} rows vs LightGBM pooled | {:.0} ms ({:.0} ms) | {} | \
         {} |",
        ms(t.pooled.0),
        ms(t.pooled.1),
        pair(lp),
        ratio(t.pooled.0, lp.0)
    );
    println!(
        "| per tree, ONE participant's {} rows (fedsilo's loop) vs LightGBM on them | {:.0} ms \
         ({:.0} ms) | {} | {} |",
        t.rows,
        ms(t.one.0),
        ms(t.one.1),
        pair(l1),
        ratio(t.one.0, l1.0)
    );
    println!(
        "| preamble: federated stats + bin agreement rounds vs LightGBM Dataset construction \
         ({total} rows) | {:.0} ms | {} | {} |",
        ms(t.preamble),
        cell(get("pooled", "dataset_ms")),
        ratio(t.preamble, get("pooled", "dataset_ms"))
    );
    println!(
        "| preamble + participants' binning (tree 1 − a steady tree) vs Dataset construction \
         | {:.0} ms | {} | {} |",
        ms(t.preamble + t.tree1_extra),
        cell(get("pooled", "dataset_ms")),
        ratio(t.preamble + t.tree1_extra, get("pooled", "dataset_ms"))
    );
    println!(
        "| bytes per participant per tree: up / down (level rounds, {}) | {:.0} B / {:.0} B | \
         — | — |",
        t.encoding, t.up_down.0, t.up_down.1
    );
    println!(
        "| hold-out AUC after {} trees: federated / fedsilo pooled / LightGBM pooled | {:.4} / \
         {:.4} | {} | — |",
        t.n_trees,
        t.auc.0,
        t.auc.1,
        get("pooled", "holdout_auc").map_or("—".to_string(), |a| format!("{a:.4}"))
    );
    if let Some(l) = lgb {
        println!(
            "(LightGBM ran first, load average {} before / {} after it; fedsilo's load \
             averages are printed above)",
            l.get("load_before")
                .and_then(|v| v.as_f64())
                .unwrap_or(f64::NAN),
            l.get("load_after")
                .and_then(|v| v.as_f64())
                .unwrap_or(f64::NAN)
        );
    }
}

/// Hands out one sample per call from `pool`, refilling it with `refill` when empty.
fn take(pool: &mut Vec<Duration>, refill: impl FnOnce() -> Vec<Duration>) -> Duration {
    if pool.is_empty() {
        *pool = refill();
        pool.reverse();
    }
    pool.pop()
        .expect("a job yields at least one steady-state tree")
}

fn boosting_round(c: &mut Criterion) {
    let rows = rows();
    let n_trees = trees();
    let d = data(rows);
    let (mut fed_pool, mut pooled_pool) = check_and_report(&d, n_trees);
    fed_pool.reverse();
    pooled_pool.reverse();

    // One call = one sample = one tree taken from the pools. Criterion sizes its warm-up and
    // its iterations per sample from WALL time, and a call that pops a pooled figure is
    // instant, so both budgets are set to 1 ns: the warm-up makes exactly one call, and flat
    // sampling then asks for one iteration per sample (criterion warns that 10 samples do not
    // fit in 1 ns; that is expected). 1 + 10 calls use the 11 steady-state trees of one job.
    let mut g = c.benchmark_group("gbdt_round");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_nanos(1))
        .measurement_time(Duration::from_nanos(1));
    let mut run = 0u64;
    g.bench_function("federated", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    take(&mut fed_pool, || {
                        run += 1;
                        eprintln!("(sampling needs more trees: federated job {run})");
                        steady(&run_federated(&d, n_trees, run).tree_ends)
                    })
                })
                .sum()
        })
    });
    g.bench_function("pooled", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    take(&mut pooled_pool, || {
                        eprintln!("(sampling needs more trees: another pooled run)");
                        let x = d.pooled_train.x.view();
                        steady(&pooled_loop(x, d.pooled_train.label(0), n_trees).tree_ends)
                    })
                })
                .sum()
        })
    });
    g.finish();
}

criterion_group!(benches, boosting_round);
criterion_main!(benches);
