//! Participants reading real sources besides CSV — PostgreSQL (a server the test starts,
//! `common::pg`) and Parquet files — and `fedsilo schema infer`, all through the real binary.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::pg::PgServer;
use common::*;
use fedsilo_ml::table::Table;
use fedsilo_participant::data::{load_csv, DataError, Labels, Schema, Source};
use fedsilo_simulations::baselines::{auc_on, stack};

/// The numeric columns of credit_data.csv (the others are text).
const CREDIT_NUMERIC: [&str; 9] = [
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

/// Writes a CSV (no quoted fields) as Parquet: `numeric` columns as optional DOUBLE, the
/// others as optional UTF8 strings, empty cells as NULL, `per_group` rows per row group,
/// snappy pages.
fn csv_to_parquet(csv: &Path, out: &Path, numeric: &[&str], per_group: usize) {
    use parquet::basic::{Compression, LogicalType, Repetition, Type as Physical};
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::types::Type;

    let (header, rows) = read_csv(csv);
    let names: Vec<&str> = header.split(',').collect();
    let rows: Vec<Vec<&str>> = rows.iter().map(|r| r.split(',').collect()).collect();
    let fields: Vec<Arc<Type>> = names
        .iter()
        .map(|n| {
            let t = if numeric.contains(n) {
                Type::primitive_type_builder(n, Physical::DOUBLE)
                    .with_repetition(Repetition::OPTIONAL)
                    .build()
            } else {
                Type::primitive_type_builder(n, Physical::BYTE_ARRAY)
                    .with_repetition(Repetition::OPTIONAL)
                    .with_logical_type(Some(LogicalType::String))
                    .build()
            };
            Arc::new(t.unwrap())
        })
        .collect();
    let schema = Arc::new(
        Type::group_type_builder("schema")
            .with_fields(fields)
            .build()
            .unwrap(),
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let file = std::fs::File::create(out).unwrap();
    let mut w = SerializedFileWriter::new(file, schema, props).unwrap();
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

/// `create table <table>` with the CSV's columns (quoted, so their case stays) and its rows.
fn csv_to_postgres(pg: &PgServer, table: &str, csv: &Path, numeric: &[&str]) {
    let (header, _) = read_csv(csv);
    let cols: Vec<String> = header
        .split(',')
        .map(|n| {
            let t = if numeric.contains(&n) {
                "double precision"
            } else {
                "text"
            };
            format!("\"{n}\" {t}")
        })
        .collect();
    pg.exec(&format!("create table {table} ({})", cols.join(", ")));
    pg.copy_csv(table, csv);
}

/// Replaces the `csv = "<name>.csv"` line of a participant's config with `source_line`.
fn set_source(fed: &TestFed, name: &str, source_line: &str) {
    let p = fed.path(&format!("participant-{name}.toml"));
    let text = std::fs::read_to_string(&p).unwrap();
    let from = format!("csv = \"{name}.csv\"");
    assert!(text.contains(&from), "{text}");
    std::fs::write(&p, text.replace(&from, source_line)).unwrap();
}

/// `participant join` for `name`, expected to fail on its own before connecting; stderr.
fn join_err(fed: &TestFed, name: &str) -> String {
    let cfg = fed.path(&format!("participant-{name}.toml"));
    run_err_within(
        &["participant", "join", "--config", cfg.to_str().unwrap()],
        Duration::from_secs(60),
    )
}

/// (train, hold-out) rows a participant's log says it loaded.
fn loaded_rows(log: &str) -> (usize, usize) {
    let line = log
        .lines()
        .find(|l| l.contains("dataset loaded"))
        .unwrap_or_else(|| panic!("no 'dataset loaded' in:\n{log}"));
    let field = |k: &str| -> usize {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line}"))
    };
    (field("train="), field("holdout="))
}

#[test]
fn pg_harness_starts_a_server_that_answers_queries() {
    let Some(pg) = PgServer::start("pg_harness_starts_a_server_that_answers_queries") else {
        return;
    };
    pg.exec(
        "create table t (id text, x double precision); insert into t values ('a', 1.5), ('b', null)",
    );
    assert_eq!(
        pg.query("select id, x from t order by id"),
        [
            vec!["a".to_string(), "1.5".to_string()],
            vec!["b".to_string(), String::new()]
        ]
    );
    assert!(pg.exec_err("select nope from t").contains("nope"));
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    std::fs::write(&csv, "id,x\nc,2\n").unwrap();
    pg.copy_csv("t", &csv);
    assert_eq!(pg.query("select count(*) from t"), [vec!["3".to_string()]]);
    assert!(pg.url().starts_with("postgresql://postgres@127.0.0.1:"));
}

const CREDIT_SPEC: &str = r#"
dataset = "data"
task = "risk"
rounds = 30
min_participants = 3
eval_every = 10
[learning]
local_epochs = 2
learning_rate = 0.05
batch_size = 32
l2 = 0.0003
"#;

#[test]
fn one_job_with_participants_reading_postgresql_parquet_and_csv() {
    let Some(pg) = PgServer::start("one_job_with_participants_reading_postgresql_parquet_and_csv")
    else {
        return;
    };
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b", "bank-c"]);
    let csvs = fed.csv_paths();
    // bank-b: Parquet (row groups of 300 rows); its CSV is removed so nothing else is read.
    csv_to_parquet(&csvs[1], &fed.path("bank-b.parquet"), &CREDIT_NUMERIC, 300);
    set_source(&fed, "bank-b", "parquet = \"bank-b.parquet\"");
    // bank-c: a PostgreSQL table, read by a query.
    csv_to_postgres(&pg, "customers", &csvs[2], &CREDIT_NUMERIC);
    set_source(
        &fed,
        "bank-c",
        &format!(
            "source = {{ postgres = \"{}\", query = \"select * from customers\" }}",
            pg.url()
        ),
    );
    let kept: Vec<usize> = csvs.iter().map(|p| read_csv(p).1.len()).collect();
    let locals: Vec<Table> = {
        let schema = Schema::from_toml_file(&fed.path("schema.toml")).unwrap();
        csvs.iter().map(|p| load_csv(p, &schema).unwrap()).collect()
    };
    std::fs::rename(&csvs[1], fed.path("bank-b.csv.moved")).unwrap();
    std::fs::rename(&csvs[2], fed.path("bank-c.csv.moved")).unwrap();

    let _coord = fed.coordinator("coordinator.log");
    let job = fed.launch(CREDIT_SPEC);
    let mut parts: Vec<Proc> = fed.names.iter().map(|n| fed.participant(n)).collect();
    fed.wait_finished(&job, Duration::from_secs(600));
    let artifact = fed.model(&job);
    for p in parts.iter_mut() {
        let s = p.wait_exit(Duration::from_secs(60));
        assert!(s.success(), "participant failed: {}", p.log_text());
    }
    // Every participant loaded all of its rows from its own source.
    for (i, p) in parts.iter().enumerate() {
        let (train, holdout) = loaded_rows(&p.log_text());
        assert_eq!(train + holdout, kept[i], "{}", fed.names[i]);
    }
    // The model is sensible on the union of the participants' hold-out rows.
    let holds: Vec<Table> = locals.iter().map(|t| t.split_holdout(0.2, 5).1).collect();
    let hold = stack(&holds.iter().collect::<Vec<_>>()).unwrap();
    let auc = auc_on(&artifact.model, &hold, 0);
    eprintln!("PostgreSQL + Parquet + CSV federation: hold-out AUC {auc:.4}");
    assert!(auc > 0.80, "AUC {auc}");
}

/// A one-institution federation with a two-column schema, for the refusal tests.
fn small_fed(dir_schema: &str) -> TestFed {
    let tmp = tempfile::tempdir().unwrap();
    let schema = tmp.path().join("small.schema.toml");
    std::fs::write(&schema, dir_schema).unwrap();
    TestFed::new(&["bank-a"], "data", &schema)
}

const SMALL_SCHEMA: &str = r#"
missing = []
[[labels]]
column = "y"
positive = "yes"
[[features]]
name = "Income"
type = "numeric"
[[features]]
name = "Home"
type = "categorical"
categories = ["own", "rent"]
"#;

#[test]
fn postgres_sources_refuse_bad_urls_failed_queries_and_bad_rows_by_name() {
    let fed = small_fed(SMALL_SCHEMA);
    let cfg = fed.path("participant-bank-a.toml");
    let original = std::fs::read_to_string(&cfg).unwrap();
    // Nothing listens on this port: a clear connection error, non-zero exit.
    let closed = free_port();
    set_source(
        &fed,
        "bank-a",
        &format!(
            "source = {{ postgres = \"postgresql://ana:s3cret@127.0.0.1:{closed}/bank\", query = \"select * from customers\" }}"
        ),
    );
    let e = join_err(&fed, "bank-a");
    assert!(
        e.contains(&format!(
            "dataset 'data': postgres ana@127.0.0.1:{closed}/bank query 'select * from customers': cannot connect"
        )),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "the password leaked: {e}");
    // Not a connection string at all.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let bad = text.replace(
        &format!("postgresql://ana:s3cret@127.0.0.1:{closed}/bank"),
        "postgresql://ana:s3cret@127.0.0.1:notaport/bank",
    );
    std::fs::write(&cfg, &bad).unwrap();
    let e = join_err(&fed, "bank-a");
    assert!(
        e.contains("postgres connection string 'postgresql://ana:***@127.0.0.1:notaport/bank': not a valid connection string"),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "the password leaked: {e}");
    // Both a query and a table: refused when the config loads.
    std::fs::write(
        &cfg,
        bad.replace(
            "query = \"select * from customers\"",
            "query = \"select 1\", table = \"customers\"",
        ),
    )
    .unwrap();
    let e = join_err(&fed, "bank-a");
    assert!(
        e.contains(
            "datasets 'data': source: give exactly one of query = \"select …\" or table = \"…\""
        ),
        "{e}"
    );

    let Some(pg) =
        PgServer::start("postgres_sources_refuse_bad_urls_failed_queries_and_bad_rows_by_name")
    else {
        return;
    };
    pg.exec(
        "create table customers (y text, \"Income\" text, \"Home\" text);
         insert into customers values ('yes', '10', 'own'), ('no', null, 'rent'), ('no', 'abc', 'own');
         create table homes (y text, \"Income\" double precision, \"Home\" text);
         insert into homes values ('yes', 1, 'own'), ('no', 2, 'boat');",
    );
    let with = |source: &str| {
        std::fs::write(&cfg, &original).unwrap();
        set_source(&fed, "bank-a", source);
        join_err(&fed, "bank-a")
    };
    let url = pg.url();
    let e = with(&format!(
        "source = {{ postgres = \"{url}\", query = \"select nope from customers\" }}"
    ));
    assert!(
        e.contains("query 'select nope from customers': the query failed"),
        "{e}"
    );
    assert!(e.contains("column \"nope\" does not exist"), "{e}");
    // A bad value names the row of the result and the column.
    let e = with(&format!(
        "source = {{ postgres = \"{url}\", table = \"customers\" }}"
    ));
    assert!(
        e.contains(&format!(
            "postgres postgres@127.0.0.1:{}/fedsilo query 'customers': row 3: column 'Income': 'abc' is not a number",
            pg.port
        )),
        "{e}"
    );
    let e = with(&format!(
        "source = {{ postgres = \"{url}\", query = \"select * from homes\" }}"
    ));
    assert!(
        e.contains("row 2: column 'Home': unknown category 'boat'"),
        "{e}"
    );
    // PostgreSQL folds unquoted names to lower case: the message says so.
    let e = with(&format!(
        "source = {{ postgres = \"{url}\", query = \"select y, \\\"Income\\\" as income, \\\"Home\\\" from homes\" }}"
    ));
    assert!(
        e.contains("feature column 'Income' is not in the header (there is 'income': names are case-sensitive)"),
        "{e}"
    );
}

#[test]
fn parquet_sources_refuse_wrong_column_types_and_bad_rows_by_row_group() {
    let fed = small_fed(SMALL_SCHEMA);
    let csv = fed.path("rows.csv");
    let mut text = String::from("y,Income,Home\n");
    for i in 0..250 {
        let home = if i == 104 {
            "boat"
        } else if i % 2 == 0 {
            "own"
        } else {
            "rent"
        };
        let y = if i % 3 == 0 { "yes" } else { "no" };
        text.push_str(&format!("{y},{},{home}\n", i * 10));
    }
    std::fs::write(&csv, &text).unwrap();
    // Income written as text: refused before any row is read, naming both types.
    csv_to_parquet(&csv, &fed.path("bank-a.parquet"), &[], 100);
    set_source(&fed, "bank-a", "parquet = \"bank-a.parquet\"");
    let e = join_err(&fed, "bank-a");
    assert!(
        e.contains("bank-a.parquet: column 'Income' holds BYTE_ARRAY (String) values, but the schema reads it as a numeric feature (Parquet INT32, INT64, FLOAT, DOUBLE or DECIMAL)"),
        "{e}"
    );
    // Income as numbers: the unknown category is named by row group and row.
    csv_to_parquet(&csv, &fed.path("bank-a.parquet"), &["Income"], 100);
    let e = join_err(&fed, "bank-a");
    assert!(
        e.contains("bank-a.parquet: row group 1, row 5: column 'Home': unknown category 'boat'; allowed: 'own', 'rent'"),
        "{e}"
    );
    // Not a Parquet file.
    std::fs::write(fed.path("bank-a.parquet"), "y,Income,Home\n").unwrap();
    let e = join_err(&fed, "bank-a");
    assert!(
        e.contains("bank-a.parquet: cannot read the Parquet file"),
        "{e}"
    );
    // Two sources for one dataset.
    let cfg = fed.path("participant-bank-a.toml");
    let t = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        t.replace(
            "parquet = \"bank-a.parquet\"",
            "parquet = \"bank-a.parquet\"\ncsv = \"rows.csv\"",
        ),
    )
    .unwrap();
    let e = join_err(&fed, "bank-a");
    assert!(
        e.contains("datasets 'data': give exactly one of csv = \"….csv\", parquet = \"….parquet\" or source = { postgres = \"postgresql://…\", query = \"select …\" } (2 given)"),
        "{e}"
    );
}

#[test]
fn schema_infer_drafts_a_schema_that_loads_and_trains_from_csv_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("data/credit_data.csv");
    let schema = dir.path().join("credit.schema.toml");
    run_ok(&[
        "schema",
        "infer",
        data.to_str().unwrap(),
        "--label",
        "Status",
        "--positive",
        "bad",
        "--out",
        schema.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&schema).unwrap();
    assert!(
        text.contains("# Income: numeric (integers), 381 missing, min 6, max 959"),
        "{text}"
    );
    assert!(
        text.contains("# Records: boolean, 0 missing; 'no' 3681, 'yes' 773"),
        "{text}"
    );
    let s = Schema::from_toml_file(&schema).unwrap();
    assert_eq!(s.features.len(), 13);
    // The same data as Parquet drafts the same schema (on stdout).
    let pq = dir.path().join("credit.parquet");
    csv_to_parquet(&data, &pq, &CREDIT_NUMERIC, 1000);
    let from_parquet = run_ok(&[
        "schema",
        "infer",
        pq.to_str().unwrap(),
        "--label",
        "Status",
        "--positive",
        "bad",
    ]);
    let s2 = Schema::from_toml_str(&from_parquet).unwrap();
    assert_eq!(s2, s, "Parquet draft:\n{from_parquet}");
    // A label that is not boolean needs --positive, and the message lists what it saw.
    let e = run_err(&[
        "schema",
        "infer",
        data.to_str().unwrap(),
        "--label",
        "Seniority",
    ]);
    assert!(
        e.contains("label 'Seniority' is not boolean or 0/1: say which values are positive with --positive (values seen: '0' 535, '1' 510"),
        "{e}"
    );
    let e = run_err(&["schema", "infer", data.to_str().unwrap(), "--label", "Home"]);
    assert!(
        e.contains(
            "label 'Home' has 6 missing value(s); a training file needs a label on every row"
        ),
        "{e}"
    );
    // The draft trains: a three-bank simulation by it.
    let scenario = dir.path().join("inferred.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"name = "inferred"
seed = 3
holdout_fraction = 0.2
[institutions]
count = 3
[[datasets]]
name = "credit"
csv = "{}"
schema = "{}"
partition = {{ kind = "sorted_bands", column = "Income" }}
[[jobs]]
name = "risk"
dataset = "credit"
task = "risk"
rounds = 20
eval_every = 10
[jobs.learning]
local_epochs = 2
learning_rate = 0.05
batch_size = 32
l2 = 0.0003
"#,
            data.display(),
            schema.display()
        ),
    )
    .unwrap();
    let report = simulate(&scenario, &dir.path().join("out"), &[]);
    let m = &report.models[0];
    eprintln!("inferred schema: federated AUC {:.4}", m.final_metrics.auc);
    assert!(m.final_metrics.auc > 0.8, "AUC {}", m.final_metrics.auc);
    // A scenario may name a Parquet file as its data: the same model comes out.
    let text = std::fs::read_to_string(&scenario).unwrap();
    let from_pq = dir.path().join("inferred-parquet.toml");
    std::fs::write(
        &from_pq,
        text.replace(&data.display().to_string(), &pq.display().to_string()),
    )
    .unwrap();
    let report_pq = simulate(&from_pq, &dir.path().join("out-pq"), &[]);
    assert_eq!(
        report_pq.models[0].final_metrics.auc, m.final_metrics.auc,
        "Parquet and CSV of the same rows train the same model"
    );
}

/// A scenario of three IID institutions training LR on `csv` by `schema`.
fn lr_scenario(dir: &Path, csv: &Path, schema: &Path) -> std::path::PathBuf {
    let p = dir.join("wide.toml");
    std::fs::write(
        &p,
        format!(
            r#"name = "wide"
seed = 5
holdout_fraction = 0.2
[institutions]
count = 3
[[datasets]]
name = "d"
csv = "{}"
schema = "{}"
partition = {{ kind = "iid" }}
[[jobs]]
name = "lr"
dataset = "d"
task = "propensity"
rounds = 20
eval_every = 10
[jobs.learning]
local_epochs = 2
learning_rate = 0.05
batch_size = 32
l2 = 0.001
"#,
            csv.display(),
            schema.display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn a_wide_categorical_is_folded_to_its_frequent_values_and_lr_still_learns() {
    // 4,000 rows; 'title' has three frequent values and ~2,000 rare ones; the label depends
    // on income and on being a 'clerk'.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("wide.csv");
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut text = String::from("customer_id,income,title,y\n");
    for i in 0..4000 {
        let income = 20.0 + 80.0 * next();
        let r = next();
        let title = if r < 0.25 {
            "clerk".to_string()
        } else if r < 0.4 {
            "nurse".to_string()
        } else if r < 0.5 {
            "teacher".to_string()
        } else {
            format!("title-{}", (next() * 2000.0) as u32)
        };
        let z = (income - 60.0) / 15.0 + if title == "clerk" { 1.0 } else { 0.0 } - 0.3;
        let y = u8::from(next() < 1.0 / (1.0 + (-z).exp()));
        text.push_str(&format!("K{i:05},{income:.2},{title},{y}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let schema = dir.path().join("wide.schema.toml");
    run_ok(&[
        "schema",
        "infer",
        csv.to_str().unwrap(),
        "--label",
        "y",
        "--max-categories",
        "5",
        "--out",
        schema.to_str().unwrap(),
    ]);
    let s = Schema::from_toml_file(&schema).unwrap();
    assert_eq!(s.id_column.as_deref(), Some("customer_id"));
    let cols = s.feature_columns();
    assert_eq!(
        cols.len(),
        1 + 5 + 1,
        "income, five titles and other: {cols:?}"
    );
    assert!(cols.contains(&"title=clerk".to_string()));
    assert!(cols.contains(&"title=other".to_string()));
    let report = simulate(
        &lr_scenario(dir.path(), &csv, &schema),
        &dir.path().join("out"),
        &[],
    );
    let m = &report.models[0];
    eprintln!(
        "wide categorical folded: federated AUC {:.4}",
        m.final_metrics.auc
    );
    assert!(m.final_metrics.auc > 0.75, "AUC {}", m.final_metrics.auc);
}

#[test]
fn parquet_typed_columns_read_as_the_schema_says() {
    use parquet::basic::{Repetition, Type as Physical};
    use parquet::data_type::{BoolType, Int32Type, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::types::Type;

    let col = |name: &str, t: Physical| {
        Arc::new(
            Type::primitive_type_builder(name, t)
                .with_repetition(Repetition::OPTIONAL)
                .build()
                .unwrap(),
        )
    };
    let schema = Arc::new(
        Type::group_type_builder("schema")
            .with_fields(vec![
                col("cust_id", Physical::INT64),
                col("churned", Physical::BOOLEAN),
                col("balance", Physical::INT64),
                col("grade", Physical::INT32),
                col("online", Physical::BOOLEAN),
            ])
            .build()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typed.parquet");
    let mut w = SerializedFileWriter::new(
        std::fs::File::create(&path).unwrap(),
        schema,
        Arc::new(WriterProperties::builder().build()),
    )
    .unwrap();
    let mut rg = w.next_row_group().unwrap();
    let all = [1i16, 1, 1, 1];
    let mut c = rg.next_column().unwrap().unwrap();
    c.typed::<Int64Type>()
        .write_batch(&[101, 102, 103, 104], Some(&all), None)
        .unwrap();
    c.close().unwrap();
    let mut c = rg.next_column().unwrap().unwrap();
    c.typed::<BoolType>()
        .write_batch(&[true, false, false, true], Some(&all), None)
        .unwrap();
    c.close().unwrap();
    let mut c = rg.next_column().unwrap().unwrap();
    c.typed::<Int64Type>()
        .write_batch(&[5000, 7000, 100], Some(&[1, 0, 1, 1]), None)
        .unwrap();
    c.close().unwrap();
    let mut c = rg.next_column().unwrap().unwrap();
    c.typed::<Int32Type>()
        .write_batch(&[1, 3, 2, 9], Some(&all), None)
        .unwrap();
    c.close().unwrap();
    let mut c = rg.next_column().unwrap().unwrap();
    c.typed::<BoolType>()
        .write_batch(&[false, true, true], Some(&[1, 1, 0, 1]), None)
        .unwrap();
    c.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();

    let s = Schema::from_toml_str(
        r#"
        id_column = "cust_id"
        [[labels]]
        column = "churned"
        positive = "true"
        [[features]]
        name = "balance"
        type = "numeric"
        [[features]]
        name = "grade"
        type = "categorical"
        categories = ["1", "2", "3"]
        other = true
        [[features]]
        name = "online"
        type = "boolean"
    "#,
    )
    .unwrap();
    let t = fedsilo_participant::data::load_parquet(&path, &s).unwrap();
    assert_eq!(t.ids, ["101", "102", "103", "104"]);
    assert_eq!(t.label(0).to_vec(), [1.0, 0.0, 0.0, 1.0]);
    assert_eq!(
        t.feature_names,
        [
            "balance",
            "grade=1",
            "grade=2",
            "grade=3",
            "grade=other",
            "online"
        ]
    );
    let row = |i: usize| t.x.row(i).to_vec();
    assert_eq!(row(0), [5000.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    assert!(row(1)[0].is_nan(), "NULL → missing");
    assert_eq!(row(1)[1..], [0.0, 0.0, 1.0, 0.0, 1.0]);
    assert!(row(2)[5].is_nan(), "NULL boolean → missing");
    assert_eq!(row(3)[..5], [100.0, 0.0, 0.0, 0.0, 1.0], "grade 9 → other");
    // schema infer reads the same file: types from the data, the id from its name (an all-distinct integer column is an id only by name).
    let drafted = run_ok(&[
        "schema",
        "infer",
        path.to_str().unwrap(),
        "--label",
        "churned",
    ]);
    let d = Schema::from_toml_str(&drafted).unwrap();
    assert_eq!(d.id_column.as_deref(), Some("cust_id"), "{drafted}");
    assert!(
        drafted.contains("[[labels]]\ncolumn = \"churned\"\npositive = \"true\""),
        "{drafted}"
    );
    assert!(
        drafted.contains("name = \"online\"\ntype = \"boolean\""),
        "{drafted}"
    );
    assert!(
        drafted.contains("name = \"balance\"\ntype = \"numeric\""),
        "{drafted}"
    );
}

/// Issue 11's derived columns and cohorts on the real path: each participant (its own CSV,
/// over gRPC) keeps the cohort `Age >= 25` and derives two columns; the job names raw,
/// one-hot and derived columns; `fedsilo score` applies the same cohort and columns; a typo
/// in an expression is refused at launch with its position.
#[test]
fn participants_apply_the_schemas_cohort_and_derived_columns() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b", "bank-c"]);
    let schema_path = fed.path("schema.toml");
    let base = std::fs::read_to_string(&schema_path).unwrap();
    let derived = format!(
        "cohort = \"Age >= 25 and not is_missing(Income)\"\n{base}\n[derive]\nloan_to_price = \"Amount / Price\"\ndebt_ratio = \"(Debt + Amount) / Income\"\n"
    );
    std::fs::write(&schema_path, &derived).unwrap();
    // Rows of each bank's file in the cohort, counted here from the CSV text.
    let in_cohort = |p: &Path| {
        let (header, rows) = read_csv(p);
        let cols: Vec<&str> = header.split(',').collect();
        let age = cols.iter().position(|c| *c == "Age").unwrap();
        let income = cols.iter().position(|c| *c == "Income").unwrap();
        rows.iter()
            .filter(|r| {
                let f: Vec<&str> = r.split(',').collect();
                f[age].parse::<f64>().unwrap() >= 25.0 && !f[income].is_empty()
            })
            .count()
    };
    let csvs = fed.csv_paths();
    let expected: Vec<usize> = csvs.iter().map(|p| in_cohort(p)).collect();
    let all: Vec<usize> = csvs.iter().map(|p| read_csv(p).1.len()).collect();
    assert!(
        expected.iter().zip(&all).all(|(e, a)| e < a && *e > 100),
        "{expected:?} of {all:?}"
    );

    // A typo in an expression: refused before launch, naming the expression and position.
    std::fs::write(
        &schema_path,
        derived.replace("Amount / Price", "Amount / Prce"),
    )
    .unwrap();
    let spec = fed.path("job.toml");
    std::fs::write(&spec, CREDIT_SPEC).unwrap();
    let e = run_err(&[
        "job",
        "launch",
        "--config",
        fed.path("operator.toml").to_str().unwrap(),
        "--spec",
        spec.to_str().unwrap(),
        "--schema",
        schema_path.to_str().unwrap(),
    ]);
    assert!(
        e.contains(
            "derive.loan_to_price \"Amount / Prce\", at character 10: unknown column 'Prce'"
        ),
        "{e}"
    );
    std::fs::write(&schema_path, &derived).unwrap();

    let _coord = fed.coordinator("coordinator.log");
    let job = fed.launch(&CREDIT_SPEC.replace(
        "task = \"risk\"",
        "task = \"risk\"\nfeatures = [\"Income\", \"Home\", \"Records\", \"Seniority\", \"loan_to_price\", \"debt_ratio\"]",
    ));
    let mut parts: Vec<Proc> = fed.names.iter().map(|n| fed.participant(n)).collect();
    fed.wait_finished(&job, Duration::from_secs(600));
    let artifact = fed.model(&job);
    for p in parts.iter_mut() {
        let s = p.wait_exit(Duration::from_secs(60));
        assert!(s.success(), "participant failed: {}", p.log_text());
    }
    for (i, p) in parts.iter().enumerate() {
        let (train, holdout) = loaded_rows(&p.log_text());
        assert_eq!(
            train + holdout,
            expected[i],
            "{}: rows in the cohort",
            fed.names[i]
        );
    }
    assert!(artifact
        .model
        .features
        .contains(&"loan_to_price".to_string()));
    assert!(artifact.model.features.contains(&"Home=owner".to_string()));
    assert_eq!(artifact.model.features.len(), 1 + 6 + 2 + 1 + 2);
    // The same cohort and columns, read on every participant's rows: a sensible model.
    let schema = Schema::from_toml_file(&schema_path).unwrap();
    let locals: Vec<Table> = csvs.iter().map(|p| load_csv(p, &schema).unwrap()).collect();
    let holds: Vec<Table> = locals.iter().map(|t| t.split_holdout(0.2, 5).1).collect();
    let hold = stack(&holds.iter().collect::<Vec<_>>()).unwrap();
    let auc = auc_on(&artifact.model, &hold, 0);
    eprintln!("cohort + derived columns federation: hold-out AUC {auc:.4}");
    assert!(auc > 0.75, "AUC {auc}");

    // Scoring applies the cohort: as many scored rows as bank-a has in it.
    let out = fed.path("ranked.csv");
    run_ok(&[
        "score",
        "--model",
        fed.path(&format!("{job}.model.json")).to_str().unwrap(),
        "--data",
        csvs[0].to_str().unwrap(),
        "--schema",
        schema_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let (_, ranked) = read_csv(&out);
    assert_eq!(ranked.len(), expected[0], "scored rows = bank-a's cohort");
    // SQL export keeps the cohort (a WHERE) and computes the derived columns; PMML does not
    // write them yet, and says so.
    let model = fed.path(&format!("{job}.model.json"));
    let export = |schema: &Path, format: &str| -> Vec<String> {
        let mut args: Vec<String> = [
            "model",
            "export",
            "--model",
            model.to_str().unwrap(),
            "--format",
            format,
            "--schema",
            schema.to_str().unwrap(),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if format == "sql" {
            args.extend(["--table".to_string(), "customers".to_string()]);
        }
        args
    };
    let args = export(&schema_path, "sql");
    let sql = run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(sql.contains("WHERE (("), "{sql}");
    assert!(sql.contains("/ NULLIF("), "{sql}");
    let args = export(&schema_path, "pmml");
    let e = run_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains("the schema keeps only the cohort \"Age >= 25 and not is_missing(Income)\""),
        "{e}"
    );
    let no_cohort = fed.path("no-cohort.schema.toml");
    std::fs::write(
        &no_cohort,
        derived.replace("cohort = \"Age >= 25 and not is_missing(Income)\"", ""),
    )
    .unwrap();
    let args = export(&no_cohort, "pmml");
    let e = run_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains(
            "model column 'loan_to_price' is a derived column, which export cannot write yet"
        ),
        "{e}"
    );
}

/// A PostgreSQL query's rows streamed in chunks (what a participant's PSI reads its ids
/// with, `Source::load_chunks`): every row once, in the server's order, chunks no larger
/// than asked, labels optional; an error from the consumer stops the stream and is the
/// result; a bad row is still named.
#[test]
fn postgres_results_stream_in_chunks_and_stop_when_the_consumer_fails() {
    let Some(pg) = PgServer::start("postgres_results_stream_in_chunks") else {
        return;
    };
    pg.exec(
        "create table c (cust_id text, balance double precision); \
         insert into c select 'C' || lpad(i::text, 5, '0'), i * 0.5 from generate_series(1, 2500) i",
    );
    let s = Schema::from_toml_str(
        r#"
        id_column = "cust_id"
        [[labels]]
        column = "churned"
        positive = "1"
        [[features]]
        name = "balance"
        type = "numeric"
    "#,
    )
    .unwrap();
    let source = Source::Postgres {
        url: pg.url(),
        query: "select * from c order by cust_id".into(),
    };
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    let mut balances = Vec::new();
    let n = source
        .load_chunks(&s, 1000, Labels::IfPresent, &mut |t: Table| {
            sizes.push(t.n_rows());
            ids.extend(t.ids.iter().cloned());
            balances.extend(t.x.column(0).iter().copied());
            Ok::<(), Box<DataError>>(())
        })
        .unwrap();
    assert_eq!(n, 2500);
    assert_eq!(sizes, [1000, 1000, 500]);
    let want: Vec<String> = (1..=2500).map(|i| format!("C{i:05}")).collect();
    assert_eq!(ids, want);
    assert_eq!(balances[1], 1.0);

    // The consumer refuses the second chunk: that error comes back, nothing after it is
    // handed over.
    let mut seen = 0;
    let e = source
        .load_chunks(&s, 1000, Labels::IfPresent, &mut |t: Table| {
            seen += 1;
            if seen == 2 {
                return Err(Box::new(DataError::EmptyFile {
                    source_name: format!("consumer stopped after {} rows", t.n_rows()),
                }));
            }
            Ok(())
        })
        .unwrap_err();
    assert_eq!(seen, 2);
    assert!(
        e.to_string().contains("consumer stopped after 1000 rows"),
        "{e}"
    );

    // A bad cell is still named by row and column.
    pg.exec("create table bad (cust_id text, balance text); insert into bad values ('a', '1'), ('b', 'x')");
    let bad = Source::Postgres {
        url: pg.url(),
        query: "bad".into(),
    };
    let e = bad
        .load_chunks(&s, 1, Labels::IfPresent, &mut |_: Table| {
            Ok::<(), Box<DataError>>(())
        })
        .unwrap_err();
    let msg = fedsilo_config::display_chain(&*e);
    assert!(msg.contains("balance") && msg.contains("row 2"), "{msg}");
}
