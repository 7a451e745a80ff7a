//! Decisions out, through the real binary: `fedsilo score` (the contact list), `fedsilo
//! evaluate` and `fedsilo model export` (SQL, PMML).
//!
//! The models are fitted centrally on credit_data.csv (`fit_pooled`, the same fits the
//! federated plans converge to) and written as model files, so each test runs in seconds.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{repo, run_err, run_ok};
use fedsilo_participant::data::{load_csv, Schema};
use fedsilo_task::{JobSpec, ModelArtifact, TrainedModel};

/// credit_data.csv with a `customer_id` column (C00001, … in file order) and its schema.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(repo().join("data/credit_data.csv")).unwrap();
        let mut out = String::with_capacity(text.len() + 8 * 4500);
        for (i, line) in text.lines().enumerate() {
            if i == 0 {
                out.push_str("customer_id,");
            } else {
                out.push_str(&format!("C{i:05},"));
            }
            out.push_str(line);
            out.push('\n');
        }
        std::fs::write(dir.path().join("credit.csv"), out).unwrap();
        let schema = std::fs::read_to_string(repo().join("data/credit_data.schema.toml")).unwrap();
        std::fs::write(
            dir.path().join("credit.schema.toml"),
            format!("id_column = \"customer_id\"\n{schema}"),
        )
        .unwrap();
        Fixture { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn s(&self, p: &str) -> String {
        self.path(p).to_str().unwrap().to_string()
    }

    fn schema(&self) -> Schema {
        Schema::from_toml_file(&self.path("credit.schema.toml")).unwrap()
    }

    /// Fits `model` (a job spec's `model = …` line) centrally and writes `<name>.json`.
    fn model(&self, name: &str, model: &str) -> (PathBuf, TrainedModel) {
        let table = load_csv(&self.path("credit.csv"), &self.schema()).unwrap();
        let spec: JobSpec = fedsilo_config::from_toml_str(
            &format!("dataset = \"credit\"\nrounds = 1\n{model}\n"),
            "spec",
        )
        .unwrap();
        let trained = fedsilo_task::fit_pooled(&spec, &table).unwrap();
        let artifact = ModelArtifact {
            format: ModelArtifact::FORMAT.into(),
            job_id: name.into(),
            task: fedsilo_task::Task::Risk,
            model_kind: spec.model.kind_name().into(),
            complete: true,
            rounds: 1,
            coefficients: Vec::new(),
            metrics: Vec::new(),
            round_sha256: "0".repeat(64),
            model_sha256: String::new(),
            privacy: None,
            scorecard: Vec::new(),
            model: trained.clone(),
        };
        let path = self.path(&format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string(&artifact).unwrap()).unwrap();
        (path, trained)
    }
}

const LR: &str = "model = { kind = \"logistic_regression\" }";
const SCORECARD: &str = "model = { kind = \"scorecard\", bins = 8 }";
const GBDT: &str = "model = { kind = \"gbdt\", n_trees = 25, max_depth = 3, max_bins = 32 }";

/// The rows of a CSV written by `fedsilo score`: header fields and rows of fields.
fn read_ranked(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    (header, rows)
}

fn score(f: &Fixture, model: &Path, data: &str, schema: &str, out: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "score",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data,
        "--schema",
        schema,
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    let _ = f;
    run_ok(&args)
}

#[test]
fn score_keeps_the_id_column_and_the_label_and_ranks_best_first() {
    let f = Fixture::new();
    let (model, trained) = f.model("lr", LR);
    let stdout = score(
        &f,
        &model,
        &f.s("credit.csv"),
        &f.s("credit.schema.toml"),
        &f.s("ranked.csv"),
        &[],
    );
    assert!(stdout.contains("4454 customers ranked"), "{stdout}");
    let (header, rows) = read_ranked(&f.path("ranked.csv"));
    assert_eq!(header, ["rank", "customer_id", "score", "decile", "Status"]);
    assert_eq!(rows.len(), 4454);
    // Every customer once, by id; the label is the file's Status (bad → 1).
    let text = std::fs::read_to_string(f.path("credit.csv")).unwrap();
    let status: HashMap<String, &str> = text
        .lines()
        .skip(1)
        .map(|l| {
            let mut it = l.split(',');
            let id = it.next().unwrap().to_string();
            (id, if it.next() == Some("bad") { "1" } else { "0" })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for r in &rows {
        assert!(seen.insert(r[1].clone()), "id {} twice", r[1]);
        assert_eq!(status[&r[1]], r[4], "label of {}", r[1]);
    }
    // Best first, ranks 1.., deciles 1..=10 by position among all rows.
    let scores: Vec<f64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0], (i + 1).to_string());
        assert_eq!(r[3], (i * 10 / 4454 + 1).to_string());
    }
    // The scores are the model's probabilities for those customers.
    let table = load_csv(&f.path("credit.csv"), &f.schema()).unwrap();
    let p = trained.predict(&table).unwrap();
    let by_id: HashMap<&str, f64> = table
        .ids
        .iter()
        .map(String::as_str)
        .zip(p.column(0).iter().copied())
        .collect();
    for r in rows.iter().step_by(37) {
        let s: f64 = r[2].parse().unwrap();
        assert!((s - by_id[r[1].as_str()]).abs() < 1e-9, "{r:?}");
    }
}

#[test]
fn score_without_id_column_writes_row_numbers_and_without_label_omits_it() {
    let f = Fixture::new();
    let (model, _) = f.model("lr", LR);
    // The shipped schema has no id column: data-row numbers, named `row`.
    score(
        &f,
        &model,
        repo().join("data/credit_data.csv").to_str().unwrap(),
        repo().join("data/credit_data.schema.toml").to_str().unwrap(),
        &f.s("rows.csv"),
        &[],
    );
    let (header, rows) = read_ranked(&f.path("rows.csv"));
    assert_eq!(header, ["rank", "row", "score", "decile", "Status"]);
    let mut ids: Vec<usize> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=4454).collect::<Vec<_>>());

    // New customers have no outcome yet: the label column is simply not written.
    let text = std::fs::read_to_string(f.path("credit.csv")).unwrap();
    let unlabelled: String = text
        .lines()
        .map(|l| {
            let mut fields: Vec<&str> = l.split(',').collect();
            fields.remove(1); // Status
            fields.join(",") + "\n"
        })
        .collect();
    std::fs::write(f.path("new.csv"), unlabelled).unwrap();
    score(
        &f,
        &model,
        &f.s("new.csv"),
        &f.s("credit.schema.toml"),
        &f.s("new-ranked.csv"),
        &[],
    );
    let (header, rows) = read_ranked(&f.path("new-ranked.csv"));
    assert_eq!(header, ["rank", "customer_id", "score", "decile"]);
    assert_eq!(rows.len(), 4454);
    // Same model, same customers: the same ranking as with the label present.
    score(
        &f,
        &model,
        &f.s("credit.csv"),
        &f.s("credit.schema.toml"),
        &f.s("with-label.csv"),
        &[],
    );
    let (_, labelled) = read_ranked(&f.path("with-label.csv"));
    let ids = |rows: &[Vec<String>]| rows.iter().map(|r| r[1].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&rows), ids(&labelled));
}

#[test]
fn score_top_n_and_top_fraction_give_the_head_of_the_ranking() {
    let f = Fixture::new();
    let (model, _) = f.model("sc", SCORECARD);
    let (data, schema) = (f.s("credit.csv"), f.s("credit.schema.toml"));
    score(&f, &model, &data, &schema, &f.s("all.csv"), &[]);
    let (header, all) = read_ranked(&f.path("all.csv"));
    assert_eq!(
        header,
        ["rank", "customer_id", "score", "decile", "points", "Status"]
    );
    let out = score(&f, &model, &data, &schema, &f.s("top.csv"), &["--top", "25"]);
    assert!(out.contains("top 25 of 4454"), "{out}");
    let (_, top) = read_ranked(&f.path("top.csv"));
    assert_eq!(top, all[..25]);
    score(
        &f,
        &model,
        &data,
        &schema,
        &f.s("frac.csv"),
        &["--top-fraction", "0.3"],
    );
    let (_, frac) = read_ranked(&f.path("frac.csv"));
    // ⌈0.3 × 4454⌉ = 1337, deciles still over all 4454 rows.
    assert_eq!(frac.len(), 1337);
    assert_eq!(frac, all[..1337]);
    assert_eq!(frac.last().unwrap()[3], "3"); // row 1337 of 4454: decile ⌊1336·10/4454⌋ + 1
    // More than the file holds: every row.
    score(&f, &model, &data, &schema, &f.s("big.csv"), &["--top", "100000"]);
    assert_eq!(read_ranked(&f.path("big.csv")).1.len(), 4454);
}

#[test]
fn score_refuses_bad_cut_offs_by_name() {
    let f = Fixture::new();
    let (model, _) = f.model("lr", LR);
    let base = [
        "score",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &f.s("credit.csv"),
        "--schema",
        &f.s("credit.schema.toml"),
        "--out",
        &f.s("x.csv"),
    ]
    .map(str::to_string);
    let err = |extra: &[&str]| {
        let mut a: Vec<&str> = base.iter().map(String::as_str).collect();
        a.extend_from_slice(extra);
        run_err(&a)
    };
    for (extra, flag, says) in [
        (&["--top", "0"][..], "--top", "at least 1"),
        (&["--top", "ten"][..], "--top", "not a whole number"),
        (&["--top-fraction", "1.5"][..], "--top-fraction", "not in (0, 1]"),
        (&["--top-fraction", "0"][..], "--top-fraction", "not in (0, 1]"),
        (&["--top-fraction=-0.2"][..], "--top-fraction", "not in (0, 1]"),
        (&["--top-fraction", "NaN"][..], "--top-fraction", "not in (0, 1]"),
        (&["--top-fraction", "thirty"][..], "--top-fraction", "not a number"),
    ] {
        let e = err(extra);
        assert!(e.contains(flag) && e.contains(says), "{extra:?}: {e}");
    }
    let e = err(&["--top", "5", "--top-fraction", "0.3"]);
    assert!(e.contains("--top") && e.contains("cannot be used with"), "{e}");
    assert!(!f.path("x.csv").exists());
}
