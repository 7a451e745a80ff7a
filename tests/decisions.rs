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
        self.model_on(name, model, &table)
    }

    /// [`Fixture::model`] fitted on `table`.
    fn model_on(
        &self,
        name: &str,
        model: &str,
        table: &fedsilo_ml::table::Table,
    ) -> (PathBuf, TrainedModel) {
        let spec: JobSpec = fedsilo_config::from_toml_str(
            &format!("dataset = \"credit\"\nrounds = 1\n{model}\n"),
            "spec",
        )
        .unwrap();
        let trained = fedsilo_task::fit_pooled(&spec, table).unwrap();
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
        repo()
            .join("data/credit_data.schema.toml")
            .to_str()
            .unwrap(),
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
    let out = score(
        &f,
        &model,
        &data,
        &schema,
        &f.s("top.csv"),
        &["--top", "25"],
    );
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
    score(
        &f,
        &model,
        &data,
        &schema,
        &f.s("big.csv"),
        &["--top", "100000"],
    );
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
        (
            &["--top-fraction", "1.5"][..],
            "--top-fraction",
            "not in (0, 1]",
        ),
        (
            &["--top-fraction", "0"][..],
            "--top-fraction",
            "not in (0, 1]",
        ),
        (
            &["--top-fraction=-0.2"][..],
            "--top-fraction",
            "not in (0, 1]",
        ),
        (
            &["--top-fraction", "NaN"][..],
            "--top-fraction",
            "not in (0, 1]",
        ),
        (
            &["--top-fraction", "thirty"][..],
            "--top-fraction",
            "not a number",
        ),
    ] {
        let e = err(extra);
        assert!(e.contains(flag) && e.contains(says), "{extra:?}: {e}");
    }
    let e = err(&["--top", "5", "--top-fraction", "0.3"]);
    assert!(
        e.contains("--top") && e.contains("cannot be used with"),
        "{e}"
    );
    assert!(!f.path("x.csv").exists());
}

/// Writes a CSV (no quoted fields) as Parquet: `numeric` columns as optional DOUBLE, the
/// others as optional UTF8 strings, empty cells as NULL, `per_group` rows per row group.
fn csv_to_parquet(csv: &Path, out: &Path, numeric: &[&str], per_group: usize) {
    use parquet::basic::{Compression, LogicalType, Repetition, Type as Physical};
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::types::Type;
    use std::sync::Arc;

    let text = std::fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|r| r.split(',').collect()).collect();
    let fields: Vec<Arc<Type>> = names
        .iter()
        .map(|n| {
            let t = if numeric.contains(n) {
                Type::primitive_type_builder(n, Physical::DOUBLE)
            } else {
                Type::primitive_type_builder(n, Physical::BYTE_ARRAY)
                    .with_logical_type(Some(LogicalType::String))
            };
            Arc::new(t.with_repetition(Repetition::OPTIONAL).build().unwrap())
        })
        .collect();
    let schema = Type::group_type_builder("schema")
        .with_fields(fields)
        .build()
        .unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let file = std::fs::File::create(out).unwrap();
    let mut w = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props)).unwrap();
    for chunk in rows.chunks(per_group) {
        let mut rg = w.next_row_group().unwrap();
        for (c, name) in names.iter().enumerate() {
            let mut col = rg.next_column().unwrap().unwrap();
            let cells: Vec<&str> = chunk.iter().map(|r| r[c]).collect();
            let defs: Vec<i16> = cells.iter().map(|v| i16::from(!v.is_empty())).collect();
            let present = cells.iter().filter(|v| !v.is_empty());
            if numeric.contains(name) {
                let vals: Vec<f64> = present.map(|v| v.parse().unwrap()).collect();
                col.typed::<DoubleType>()
                    .write_batch(&vals, Some(&defs), None)
                    .unwrap();
            } else {
                let vals: Vec<ByteArray> = present.map(|v| ByteArray::from(*v)).collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&vals, Some(&defs), None)
                    .unwrap();
            }
            col.close().unwrap();
        }
        rg.close().unwrap();
    }
    w.close().unwrap();
}

/// A ranking written as Parquet: column (name, physical type) and the rows, each field as
/// text the way the CSV ranking writes it, with the full-precision score and points beside.
#[allow(clippy::type_complexity)]
fn read_ranked_parquet(path: &Path) -> (Vec<(String, String)>, Vec<(Vec<String>, f64, f64)>) {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let columns = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), format!("{:?}", c.physical_type())))
        .collect();
    let mut rows = Vec::new();
    for row in reader.get_row_iter(None).unwrap() {
        let row = row.unwrap();
        let (mut text, mut score, mut points) = (Vec::new(), f64::NAN, f64::NAN);
        for (name, field) in row.get_column_iter() {
            text.push(match (name.as_str(), field) {
                ("score", Field::Double(v)) => {
                    score = *v;
                    format!("{v:.9}")
                }
                ("points", Field::Double(v)) => {
                    points = *v;
                    format!("{v:.1}")
                }
                (_, Field::Long(v)) => v.to_string(),
                (_, Field::Int(v)) => v.to_string(),
                (_, Field::Str(s)) => s.clone(),
                // a label: 0/1, NULL when the file has no outcome for the row
                (_, Field::Double(v)) => format!("{v}"),
                (_, Field::Null) => String::new(),
                (n, other) => panic!("column {n}: unexpected {other:?}"),
            });
        }
        rows.push((text, score, points));
    }
    (columns, rows)
}

#[test]
fn score_writes_parquet_row_for_row_like_csv_and_reads_parquet_input() {
    let f = Fixture::new();
    let (model, _) = f.model("sc", SCORECARD);
    // Some customers without an outcome yet: their label is empty in CSV, NULL in Parquet.
    let text = std::fs::read_to_string(f.path("credit.csv")).unwrap();
    let partly: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut fields: Vec<&str> = l.split(',').collect();
            if i % 9 == 5 {
                fields[1] = "";
            }
            fields.join(",") + "\n"
        })
        .collect();
    std::fs::write(f.path("partly.csv"), partly).unwrap();
    let (data, schema) = (f.s("partly.csv"), f.s("credit.schema.toml"));
    let top = ["--top-fraction", "0.3"];
    score(&f, &model, &data, &schema, &f.s("top.csv"), &top);
    let out = score(&f, &model, &data, &schema, &f.s("top.parquet"), &top);
    assert!(
        out.contains("top 1337 of 4454 customers ranked in"),
        "{out}"
    );
    // --format wins over the extension.
    let mut fmt = top.to_vec();
    fmt.extend(["--format", "parquet"]);
    score(&f, &model, &data, &schema, &f.s("top.list"), &fmt);

    let (header, csv_rows) = read_ranked(&f.path("top.csv"));
    assert_eq!(csv_rows.len(), 1337);
    assert!(csv_rows.iter().any(|r| r[5].is_empty()));
    for file in ["top.parquet", "top.list"] {
        let (columns, rows) = read_ranked_parquet(&f.path(file));
        let want: Vec<(String, String)> = header
            .iter()
            .zip(["INT64", "BYTE_ARRAY", "DOUBLE", "INT32", "DOUBLE", "DOUBLE"])
            .map(|(h, t)| (h.clone(), t.to_string()))
            .collect();
        assert_eq!(columns, want, "{file}");
        assert_eq!(rows.len(), csv_rows.len(), "{file}");
        for ((text, score, points), c) in rows.iter().zip(&csv_rows) {
            // The same row, field for field; the score at full precision within the CSV's
            // 9 decimals, the points within its one decimal.
            assert_eq!(text, c, "{file}");
            assert!((score - c[2].parse::<f64>().unwrap()).abs() <= 5e-10);
            assert!((points - c[4].parse::<f64>().unwrap()).abs() <= 0.05);
        }
    }

    // Parquet input (numbers as DOUBLE, categories and ids as strings, NULL for the empty
    // cells, several row groups): the same ranking as from the CSV.
    let numeric = [
        "Seniority",
        "Time",
        "Age",
        "Expenses",
        "Income",
        "Assets",
        "Debt",
        "Amount",
        "Price",
    ];
    csv_to_parquet(
        &f.path("partly.csv"),
        &f.path("partly.parquet"),
        &numeric,
        1000,
    );
    let out = score(
        &f,
        &model,
        &f.s("partly.parquet"),
        &schema,
        &f.s("from-parquet.csv"),
        &top,
    );
    assert!(out.contains("top 1337 of 4454"), "{out}");
    assert_eq!(read_ranked(&f.path("from-parquet.csv")), (header, csv_rows));
}

// ---------------------------------------------------------------------------------------
// model export
// ---------------------------------------------------------------------------------------

/// `fedsilo score`'s probabilities (and points) by customer id.
fn scored_by_id(path: &Path) -> HashMap<String, (f64, Option<f64>)> {
    let (header, rows) = read_ranked(path);
    let points = header.iter().position(|h| h == "points");
    rows.into_iter()
        .map(|r| {
            let p = points.map(|i| r[i].parse().unwrap());
            (r[1].clone(), (r[2].parse().unwrap(), p))
        })
        .collect()
}

/// The warehouse table `customers` from the fixture's credit.csv: the schema's numeric
/// features as DOUBLE PRECISION, categories and ids as text, the empty cells NULL (COPY's
/// CSV rule).
fn load_customers(pg: &common::pg::PgServer, f: &Fixture, schema: &Schema) {
    let header = std::fs::read_to_string(f.path("credit.csv")).unwrap();
    let header = header.lines().next().unwrap().to_string();
    let columns: Vec<String> = header
        .split(',')
        .map(|c| {
            let numeric = schema.features.iter().any(|s| {
                s.name == c && matches!(s.kind, fedsilo_participant::data::FeatureKind::Numeric)
            });
            format!(
                "\"{c}\" {}",
                if numeric { "double precision" } else { "text" }
            )
        })
        .collect();
    pg.exec(&format!("create table customers ({})", columns.join(", ")));
    pg.copy_csv("customers", &f.path("credit.csv"));
}

/// The exported query, run by a real PostgreSQL over the same rows, gives `fedsilo score`'s
/// probabilities to 1e-6 (and the scorecard's points to the 0.1 `score` rounds them to).
#[test]
fn exported_sql_scores_like_fedsilo_score_in_postgresql() {
    let f = Fixture::new();
    let Some(pg) = common::pg::PgServer::start("exported_sql") else {
        return;
    };
    let schema = f.schema();
    load_customers(&pg, &f, &schema);
    assert_eq!(pg.query("select count(*) from customers"), [["4454"]]);

    for (name, spec) in [("lr", LR), ("scorecard", SCORECARD), ("gbdt", GBDT)] {
        let (model, _) = f.model(name, spec);
        score(
            &f,
            &model,
            &f.s("credit.csv"),
            &f.s("credit.schema.toml"),
            &f.s(&format!("{name}-ranked.csv")),
            &[],
        );
        let expected = scored_by_id(&f.path(&format!("{name}-ranked.csv")));
        let sql_path = f.path(&format!("{name}.sql"));
        run_ok(&[
            "model",
            "export",
            "--model",
            model.to_str().unwrap(),
            "--format",
            "sql",
            "--schema",
            &f.s("credit.schema.toml"),
            "--table",
            "customers",
            "--out",
            sql_path.to_str().unwrap(),
        ]);
        let sql = std::fs::read_to_string(&sql_path).unwrap();
        let extra = if name == "scorecard" { ", points" } else { "" };
        let rows = pg.query(&format!(
            "select customer_id, score{extra} from ({sql}) as q order by customer_id"
        ));
        assert_eq!(rows.len(), 4454, "{name}");
        let mut worst = 0.0f64;
        for r in &rows {
            let (p, pts) = expected[&r[0]];
            let got: f64 = r[1].parse().unwrap();
            worst = worst.max((got - p).abs());
            if let Some(pts) = pts {
                let sql_pts: f64 = r[2].parse().unwrap();
                assert!(
                    (sql_pts - pts).abs() <= 0.05 + 1e-6,
                    "{name} {}: points {sql_pts} vs {pts}",
                    r[0]
                );
            }
        }
        eprintln!("{name}: largest |SQL − fedsilo score| = {worst:e}");
        assert!(
            worst <= 1e-6,
            "{name}: SQL differs from fedsilo score by {worst}"
        );
    }
}

#[test]
fn export_refuses_what_it_cannot_express_by_name() {
    let f = Fixture::new();
    let (mlp, _) = f.model("mlp", "model = { kind = \"mlp\", hidden = [4] }");
    let (gbdt, _) = f.model("gbdt", GBDT);
    let export = |model: &Path, format: &str, schema: &str| {
        run_err(&[
            "model",
            "export",
            "--model",
            model.to_str().unwrap(),
            "--format",
            format,
            "--schema",
            schema,
            "--table",
            "customers",
        ])
    };
    let schema = f.s("credit.schema.toml");
    let e = export(&mlp, "sql", &schema);
    assert!(e.contains("MLP models cannot be exported as SQL"), "{e}");
    let e = export(&mlp, "pmml", &schema);
    assert!(e.contains("MLP models cannot be exported as PMML"), "{e}");
    let e = export(&gbdt, "pmml", &schema);
    assert!(e.contains("GBDT") && e.contains("--format sql"), "{e}");
    // A schema that does not produce the model's columns: named, with the valid ones.
    std::fs::write(
        f.path("other.schema.toml"),
        "labels = [{ column = \"Status\", positive = \"bad\" }]\nfeatures = [{ name = \"Age\", type = \"numeric\" }]\n",
    )
    .unwrap();
    let (lr, _) = f.model("lr", LR);
    let e = export(&lr, "sql", &f.s("other.schema.toml"));
    assert!(
        e.contains("model column 'Seniority' is not produced by the schema (its columns: Age)"),
        "{e}"
    );
    // SQL needs the table.
    let e = run_err(&[
        "model",
        "export",
        "--model",
        lr.to_str().unwrap(),
        "--format",
        "sql",
        "--schema",
        &schema,
    ]);
    assert!(e.contains("--table"), "{e}");
}

/// PMML 4.4 for logistic regression and the scorecard, valid against the PMML 4.4 XSD
/// (tests/data/pmml/: see SOURCE.md for what it is) with xmllint.
#[test]
fn exported_pmml_is_valid_pmml_4_4() {
    let have = std::process::Command::new("xmllint")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var("FEDSILO_REQUIRE_XMLLINT").as_deref() != Ok("1"),
            "xmllint is required (FEDSILO_REQUIRE_XMLLINT=1) but missing"
        );
        eprintln!(
            "SKIP: exported_pmml_is_valid_pmml_4_4: xmllint not found (Debian: libxml2-utils)"
        );
        return;
    }
    let f = Fixture::new();
    let xsd = repo().join("tests/data/pmml/pmml-4-4.xsd");
    for (name, spec, root) in [
        ("lr", LR, "<RegressionModel"),
        ("scorecard", SCORECARD, "<Scorecard"),
    ] {
        let (model, _) = f.model(name, spec);
        let out = f.path(&format!("{name}.pmml"));
        run_ok(&[
            "model",
            "export",
            "--model",
            model.to_str().unwrap(),
            "--format",
            "pmml",
            "--schema",
            &f.s("credit.schema.toml"),
            "--out",
            out.to_str().unwrap(),
        ]);
        let doc = std::fs::read_to_string(&out).unwrap();
        assert!(doc.contains("<PMML xmlns=\"http://www.dmg.org/PMML-4_4\" version=\"4.4\">"));
        assert!(doc.contains(root), "{name}");
        assert!(!doc.contains(" x-"), "{name}: no vendor extension");
        let v = std::process::Command::new("xmllint")
            .args(["--noout", "--schema"])
            .arg(&xsd)
            .arg(&out)
            .output()
            .unwrap();
        let msg = String::from_utf8_lossy(&v.stderr);
        assert!(
            v.status.success() && msg.contains("validates"),
            "{name}: {msg}\n{doc}"
        );
        // And an invalid document is refused, so the check can fail.
        let broken = doc.replacen(root, &format!("{root} bogus=\"1\""), 1);
        std::fs::write(f.path("broken.pmml"), broken).unwrap();
        let v = std::process::Command::new("xmllint")
            .args(["--noout", "--schema"])
            .arg(&xsd)
            .arg(f.path("broken.pmml"))
            .output()
            .unwrap();
        assert!(
            !v.status.success(),
            "{name}: a bogus attribute must not validate"
        );
    }
    // The scorecard's characteristics: one per selected feature, isMissing bins, points.
    let sc = std::fs::read_to_string(f.path("scorecard.pmml")).unwrap();
    assert!(sc.contains("operator=\"isMissing\"") && sc.contains("partialScore="));
    assert!(sc.contains("<Characteristic name=\"Seniority\">"), "{sc}");
}

// ---------------------------------------------------------------------------------------
// evaluate
// ---------------------------------------------------------------------------------------

/// `fedsilo evaluate`'s figures are `ml::metrics` on the model's exact scores.
#[test]
fn evaluate_reports_ml_metrics_lift_and_calibration_with_charts() {
    let f = Fixture::new();
    let (model, trained) = f.model("gbdt", GBDT);
    let out = f.path("eval");
    let stdout = run_ok(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &f.s("credit.csv"),
        "--schema",
        &f.s("credit.schema.toml"),
        "--out",
        out.to_str().unwrap(),
    ]);
    let table = load_csv(&f.path("credit.csv"), &f.schema()).unwrap();
    let scores: Vec<f64> = trained.predict(&table).unwrap().column(0).to_vec();
    let y: Vec<f32> = table.label(0).to_vec();
    let m = fedsilo_ml::metrics::BinaryMetrics::from_scores(&scores, &y);
    let deciles = fedsilo_ml::metrics::band_table(&scores, &y, 10);
    assert!(
        stdout.contains(&format!(
            "Status: AUC {:.4}  KS {:.4}  log-loss {:.4}  top-decile lift {:.2}",
            m.auc, m.ks, m.log_loss, m.top_decile_lift
        )),
        "{stdout}"
    );
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("evaluation.json")).unwrap())
            .unwrap();
    let l = &e["labels"][0];
    assert_eq!(e["rows"], 4454);
    assert_eq!(l["label"], "Status");
    for (key, want) in [
        ("auc", m.auc),
        ("ks", m.ks),
        ("log_loss", m.log_loss),
        ("top_decile_lift", m.top_decile_lift),
        ("positives", m.positives),
    ] {
        assert_eq!(l["metrics"][key].as_f64().unwrap(), want, "{key}");
    }
    assert_eq!(l["deciles"].as_array().unwrap().len(), 10);
    for (got, want) in l["deciles"].as_array().unwrap().iter().zip(&deciles) {
        assert_eq!(got["rows"].as_u64().unwrap() as usize, want.rows);
        assert_eq!(got["positives"].as_u64().unwrap() as usize, want.positives);
        assert_eq!(got["mean_score"].as_f64().unwrap(), want.mean_score);
        assert_eq!(got["observed_rate"].as_f64().unwrap(), want.observed_rate);
        assert_eq!(got["lift"].as_f64().unwrap(), want.lift);
    }
    // A model that ranks: the top decile's lift is well above 1 and the table's deciles
    // hold every row.
    assert!(deciles[0].lift > 1.5, "{}", deciles[0].lift);
    assert_eq!(deciles.iter().map(|d| d.rows).sum::<usize>(), 4454);
    let roc = l["roc"].as_array().unwrap();
    assert!(roc.len() >= 2 && roc.len() <= 500);
    // The page: self-contained, one chart per figure.
    let html = std::fs::read_to_string(out.join("evaluation.html")).unwrap();
    for title in [
        "ROC curve, Status",
        "KS chart, Status",
        "Cumulative gains, Status",
        "Lift by decile, Status",
        "Calibration by decile, Status",
    ] {
        assert!(html.contains(&format!("<title>{title}</title>")), "{title}");
    }
    assert_eq!(html.matches("<svg").count(), 5);
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));
}

#[test]
fn evaluate_refuses_data_without_the_label() {
    let f = Fixture::new();
    let (model, _) = f.model("lr", LR);
    // A schema without labels: said before reading anything.
    let schema = std::fs::read_to_string(f.path("credit.schema.toml")).unwrap();
    let unlabelled = schema.replace(
        "labels = [\n  { column = \"Status\", positive = \"bad\" },\n]\n",
        "",
    );
    assert_ne!(schema, unlabelled);
    std::fs::write(f.path("nolabel.schema.toml"), unlabelled).unwrap();
    let e = run_err(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &f.s("credit.csv"),
        "--schema",
        &f.s("nolabel.schema.toml"),
        "--out",
        &f.s("e1"),
    ]);
    assert!(
        e.contains("the model predicts 'Status', but the schema declares no such label"),
        "{e}"
    );
    // A file without the label column: named with the file.
    let text = std::fs::read_to_string(f.path("credit.csv")).unwrap();
    let cut: String = text
        .lines()
        .map(|l| {
            let mut v: Vec<&str> = l.split(',').collect();
            v.remove(1);
            v.join(",") + "\n"
        })
        .collect();
    std::fs::write(f.path("new.csv"), cut).unwrap();
    let e = run_err(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &f.s("new.csv"),
        "--schema",
        &f.s("credit.schema.toml"),
        "--out",
        &f.s("e2"),
    ]);
    assert!(
        e.contains("new.csv:1: label column 'Status' is not in the header"),
        "{e}"
    );
    assert!(!f.path("e2").join("evaluation.json").exists());
}

/// Schemas with expressions export too: derived columns become SQL arithmetic (division by
/// zero NULL), the cohort a `WHERE`, boolean features and `other` buckets `CASE`s; the query
/// scores exactly the rows `fedsilo score` scores, to 1e-6, for LR, scorecard and GBDT.
#[test]
fn exported_sql_keeps_the_cohort_and_derived_columns_like_fedsilo_score() {
    let f = Fixture::new();
    let Some(pg) = common::pg::PgServer::start("exported_sql_expressions") else {
        return;
    };
    let base = std::fs::read_to_string(f.path("credit.schema.toml")).unwrap();
    let from_records =
        "{ name = \"Records\", type = \"categorical\", categories = [\"no\", \"yes\"] }";
    let from_home =
        "categories = [\"ignore\", \"other\", \"owner\", \"parents\", \"priv\", \"rent\"] }";
    assert!(base.contains(from_records) && base.contains(from_home));
    let schema_text = format!(
        "cohort = \"Age >= 25 or is_missing(Income) or burden > 2\"\n{}\n[derive]\nratio = \"Amount / Price\"\nburden = \"(Debt + Expenses) / Income\"\n",
        base.replace(from_records, "{ name = \"Records\", type = \"boolean\" }")
            .replace(from_home, "categories = [\"owner\", \"rent\"], other = true }")
    );
    std::fs::write(f.path("expr.schema.toml"), &schema_text).unwrap();
    let schema = Schema::from_toml_file(&f.path("expr.schema.toml")).unwrap();
    let table = load_csv(&f.path("credit.csv"), &schema).unwrap();
    let kept = table.n_rows();
    assert!(kept > 3000 && kept < 4454, "cohort keeps {kept}");
    // Income 0 makes burden a division by zero: missing in fedsilo, NULL in SQL.
    let burden = table
        .feature_names
        .iter()
        .position(|n| n == "burden")
        .unwrap();
    assert!(table.x.column(burden).iter().any(|v| v.is_nan()));

    load_customers(&pg, &f, &schema);

    for (name, spec) in [("lr", LR), ("scorecard", SCORECARD), ("gbdt", GBDT)] {
        let (model, trained) = f.model_on(&format!("{name}-expr"), spec, &table);
        assert!(trained.features.contains(&"burden".to_string()), "{name}");
        let ranked = f.s(&format!("{name}-expr-ranked.csv"));
        score(
            &f,
            &model,
            &f.s("credit.csv"),
            &f.s("expr.schema.toml"),
            &ranked,
            &[],
        );
        let expected = scored_by_id(Path::new(&ranked));
        assert_eq!(
            expected.len(),
            kept,
            "{name}: fedsilo score keeps the cohort"
        );
        let sql_path = f.path(&format!("{name}-expr.sql"));
        run_ok(&[
            "model",
            "export",
            "--model",
            model.to_str().unwrap(),
            "--format",
            "sql",
            "--schema",
            &f.s("expr.schema.toml"),
            "--table",
            "customers",
            "--out",
            sql_path.to_str().unwrap(),
        ]);
        let sql = std::fs::read_to_string(&sql_path).unwrap();
        assert!(sql.contains("WHERE"), "{name}: the cohort is a WHERE");
        let rows = pg.query(&format!("select customer_id, score from ({sql}) as q"));
        assert_eq!(rows.len(), kept, "{name}: SQL keeps the same cohort");
        let mut worst = 0.0f64;
        for r in &rows {
            let (p, _) = expected
                .get(&r[0])
                .unwrap_or_else(|| panic!("{name}: SQL scored {} outside the cohort", r[0]));
            let got: f64 = r[1].parse().unwrap();
            worst = worst.max((got - p).abs());
        }
        eprintln!("{name} with expressions: largest |SQL − fedsilo score| = {worst:e}");
        assert!(
            worst <= 1e-6,
            "{name}: SQL differs from fedsilo score by {worst}"
        );
    }
    // PMML does not write cohorts yet, and says so.
    let e = run_err(&[
        "model",
        "export",
        "--model",
        f.s("lr-expr.json").as_str(),
        "--format",
        "pmml",
        "--schema",
        &f.s("expr.schema.toml"),
    ]);
    assert!(e.contains("the schema keeps only the cohort"), "{e}");
}
