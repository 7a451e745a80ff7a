use super::*;
use fedsilo_ml::table::Table;
use std::path::Path;

const SCHEMA: &str = r#"
    missing = ["NA", "?"]
    [[labels]]
    column = "default"
    positive = "Yes"
    [[features]]
    name = "income"
    type = "numeric"
    [[features]]
    name = "home"
    type = "categorical"
    categories = ["own", "rent"]
"#;

fn schema() -> Schema {
    Schema::from_toml_str(SCHEMA).unwrap()
}

fn load(text: &str) -> Result<Table, DataError> {
    load_csv_reader(text.as_bytes(), "bank-a.csv", &schema())
}

fn err(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

fn repo_data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .join(name)
}

#[test]
fn encodes_numeric_categorical_label_and_missing() {
    let t = load(
        "default,income,home,extra\nYes,10.5,own,x\nNo,NA,rent,y\nNo, 7 ,,z\nmaybe,?,rent,w\n",
    )
    .unwrap();
    assert_eq!(t.feature_names, ["income", "home=own", "home=rent"]);
    assert_eq!(t.label_names, ["default"]);
    assert_eq!(t.ids, ["1", "2", "3", "4"]);
    assert_eq!(t.x.row(0).to_vec(), [10.5, 1.0, 0.0]);
    assert!(t.x[[1, 0]].is_nan());
    assert_eq!((t.x[[1, 1]], t.x[[1, 2]]), (0.0, 1.0));
    assert_eq!(
        t.x.row(2).to_vec(),
        [7.0, 0.0, 0.0],
        "missing category → all zeros"
    );
    assert!(t.x[[3, 0]].is_nan());
    assert_eq!(t.label(0).to_vec(), [1.0, 0.0, 0.0, 0.0]);
    assert_eq!(label_value_counts(&t), [(3, 1)]);
}

#[test]
fn id_column_and_quoted_fields() {
    let mut s = schema();
    s.id_column = Some("cust".into());
    let t = load_csv_reader(
        "cust,default,income,home\n\"A,1\",Yes,1,own\nB2,No,2,\"rent\"\n".as_bytes(),
        "x.csv",
        &s,
    )
    .unwrap();
    assert_eq!(t.ids, ["A,1", "B2"]);
    let e = load_csv_reader(
        "cust,default,income,home\n,Yes,1,own\nB,No,2,own\n".as_bytes(),
        "x.csv",
        &s,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(e, "x.csv:2: column 'cust': customer id is missing");
}

#[test]
fn missing_column_names_file_line_role_and_column() {
    assert_eq!(
        err("default,income\nYes,1\nNo,2\n"),
        "bank-a.csv:1: feature column 'home' is not in the header"
    );
    assert_eq!(
        err("income,home\n1,own\n"),
        "bank-a.csv:1: label column 'default' is not in the header"
    );
}

#[test]
fn non_numeric_value_is_refused_with_line_and_column() {
    let e = err("default,income,home\nYes,1,own\nNo,12k,rent\n");
    assert_eq!(
        e,
        "bank-a.csv:3: column 'income': '12k' is not a number (numeric feature; missing values are empty or one of 'NA', '?'; list other tokens with `missing = [...]` in the schema)"
    );
    assert!(err("default,income,home\nYes,inf,own\nNo,1,own\n")
        .contains("bank-a.csv:2: column 'income': 'inf'"));
    assert!(err("default,income,home\nYes,1,own\nNo,NaN,own\n")
        .contains("bank-a.csv:3: column 'income': 'NaN'"));
}

#[test]
fn unknown_category_lists_the_allowed_ones() {
    assert_eq!(
        err("default,income,home\nYes,1,own\nNo,2,rent\nNo,3,boat\n"),
        "bank-a.csv:4: column 'home': unknown category 'boat'; allowed: 'own', 'rent' (or set `other = true` on the feature to bucket the rest)"
    );
}

#[test]
fn missing_label_is_an_error_but_other_values_are_negatives() {
    assert_eq!(
        err("default,income,home\nYes,1,own\n,2,own\n"),
        "bank-a.csv:3: column 'default': label is missing"
    );
    assert_eq!(
        err("default,income,home\nYes,1,own\nNA,2,own\n"),
        "bank-a.csv:3: column 'default': label is missing"
    );
    let t = load("default,income,home\nYes,1,own\nno idea,2,own\n").unwrap();
    assert_eq!(t.label(0).to_vec(), [1.0, 0.0]);
}

#[test]
fn empty_file_and_header_only() {
    assert_eq!(
        err(""),
        "bank-a.csv: empty file: no header and no data rows"
    );
    assert_eq!(
        err("default,income,home\n"),
        "bank-a.csv:1: header only, no data rows"
    );
}

#[test]
fn single_class_label_is_refused() {
    assert_eq!(
        err("default,income,home\nNo,1,own\nNo,2,rent\n"),
        "label 'default' has only negatives in bank-a.csv: a model cannot be trained (positive = 'Yes'; values seen: 'No')"
    );
    assert_eq!(
        err("default,income,home\nYes,1,own\n"),
        "label 'default' has only positives in bank-a.csv: a model cannot be trained (positive = 'Yes'; values seen: 'Yes')"
    );
    // Scoring files need no labels at all.
    let t = load_csv_reader(
        "income,home\n1,own\n".as_bytes(),
        "s.csv",
        &schema().for_scoring(),
    )
    .unwrap();
    assert_eq!(t.labels.ncols(), 0);
}

#[test]
fn duplicate_header_and_ragged_rows() {
    assert_eq!(
        err("default,income,home,income\nYes,1,own,2\n"),
        "bank-a.csv:1: column 'income' appears twice in the header (fields 2 and 4)"
    );
    assert_eq!(
        err("default,income,home\nYes,1,own\nNo,2\n"),
        "bank-a.csv:3: row has 2 fields but the header has 3"
    );
    assert_eq!(
        err("default,income,home\nYes,1,own\nNo,2,own,extra\n"),
        "bank-a.csv:3: row has 4 fields but the header has 3"
    );
}

#[test]
fn line_numbers_count_embedded_newlines() {
    let e = err("default,income,home\n\"Y\nes\",1,own\nNo,x,own\n");
    assert!(e.starts_with("bank-a.csv:4: column 'income'"), "{e}");
}

#[test]
fn io_errors_name_the_file() {
    let e = load_csv(Path::new("/nonexistent/bank-z.csv"), &schema())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/bank-z.csv: "), "{e}");

    struct Failing;
    impl std::io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
    let e = load_csv_reader(Failing, "bank-b.csv", &schema()).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }));
    assert!(e.to_string().contains("bank-b.csv") && e.to_string().contains("disk on fire"));
}

#[test]
fn non_utf8_bytes_do_not_panic() {
    let mut bytes = b"default,income,home\nYes,1,own\nNo,".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(b",own\n");
    let e = load_csv_reader(&bytes[..], "bin.csv", &schema())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("bin.csv:3: column 'income':"), "{e}");
}

#[test]
fn schema_validation_and_helpers() {
    let s = schema();
    assert_eq!(s.feature_columns(), ["income", "home=own", "home=rent"]);
    let only_home = s.select(&["home".into()]).unwrap();
    assert_eq!(only_home.feature_columns(), ["home=own", "home=rent"]);
    assert_eq!(only_home.labels, s.labels);
    let e = s.select(&["age".into()]).unwrap_err().to_string();
    assert_eq!(
        e,
        "feature 'age' is not in the schema (features: income, home)"
    );

    let round = Schema::from_toml_str(&toml::to_string(&s).unwrap()).unwrap();
    assert_eq!(round, s);

    let bad = |t: &str| Schema::from_toml_str(t).unwrap_err().to_string();
    assert!(bad(
        "features = [{ name = \"a\", type = \"numeric\" }, { name = \"a\", type = \"numeric\" }]"
    )
    .contains("column 'a' is declared twice"));
    assert!(
        bad("features = [{ name = \"a\", type = \"categorical\", categories = [] }]")
            .contains("declares no categories")
    );
    assert!(bad(
        "features = [{ name = \"a\", type = \"categorical\", categories = [\"x\", \"x\"] }]"
    )
    .contains("listed twice"));
    let e = Schema::from_toml_str("features = [{ name = \"a\", type = \"text\" }]").unwrap_err();
    assert!(e.to_string().starts_with("cannot parse the schema"), "{e}");
    let chain = fedsilo_config::display_chain(&e);
    assert!(chain.contains("<schema>:1:"), "{chain}");
    assert!(chain.contains("unknown variant `text`"), "{chain}");
    assert!(
        bad("labels = [{ column = \"y\", positive = \"\" }]\nfeatures = []")
            .contains("missing-value token")
    );
    let e = Schema::from_toml_file(Path::new("/nonexistent/s.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/s.toml: "));
}

fn check_dataset(name: &str, rows: usize, rate: f64) -> Table {
    let schema = Schema::from_toml_file(&repo_data(&format!("{name}.schema.toml"))).unwrap();
    let t = load_csv(&repo_data(&format!("{name}.csv")), &schema).unwrap();
    assert_eq!(t.n_rows(), rows, "{name}");
    assert_eq!(t.feature_names, schema.feature_columns());
    let (neg, pos) = label_value_counts(&t)[0];
    assert_eq!(neg + pos, rows);
    let r = 100.0 * pos as f64 / rows as f64;
    assert!(
        (r - rate).abs() <= 0.1,
        "{name}: positive rate {r:.2} %, documented {rate} %"
    );
    t
}

#[test]
fn shipped_datasets_load_with_documented_counts_and_rates() {
    let caravan = check_dataset("caravan", 5822, 6.0);
    assert_eq!(caravan.n_features(), 83 + 40 + 10);
    check_dataset("default", 10000, 3.3);
    let credit = check_dataset("credit_data", 4454, 28.2);
    let income = credit
        .feature_names
        .iter()
        .position(|n| n == "Income")
        .unwrap();
    let nan = credit
        .x
        .column(income)
        .iter()
        .filter(|v| v.is_nan())
        .count();
    assert_eq!(nan, 381);
    let churn = check_dataset("wa_churn", 7043, 26.5);
    let total = churn
        .feature_names
        .iter()
        .position(|n| n == "total_charges")
        .unwrap();
    assert_eq!(
        churn.x.column(total).iter().filter(|v| v.is_nan()).count(),
        11
    );
}

const BANK: &str = r#"
    [[labels]]
    column = "grade"
    positive = ["D", "E", "F", "G"]
    [[labels]]
    column = "active"
    positive = "true"
    [[features]]
    name = "income"
    type = "numeric"
"#;

#[test]
fn a_label_from_a_set_of_values_and_booleans_in_any_case() {
    let schema = Schema::from_toml_str(BANK).unwrap();
    let t = load_csv_reader(
        "grade,active,income\nA,True,1\nD,false,NA\nG,TRUE,NaN\nB,False,null\nE,true,N/A\n"
            .as_bytes(),
        "loans.csv",
        &schema,
    )
    .unwrap();
    assert_eq!(t.labels.column(0).to_vec(), vec![0.0, 1.0, 1.0, 0.0, 1.0]);
    assert_eq!(t.labels.column(1).to_vec(), vec![1.0, 0.0, 1.0, 0.0, 1.0]);
    // The default missing tokens apply when the schema lists none.
    assert_eq!(t.x.column(0).iter().filter(|v| v.is_nan()).count(), 4);
}

#[test]
fn one_class_says_which_values_were_seen() {
    let schema = Schema::from_toml_str(
        "[[labels]]\ncolumn = \"churn\"\npositive = \"Churned\"\n[[features]]\nname = \"x\"\ntype = \"numeric\"\n",
    )
    .unwrap();
    // Not a boolean word, so the case must match: nothing is positive, and the message
    // says what the file holds.
    let e = load_csv_reader(
        "churn,x\nchurned,1\nstayed,2\n".as_bytes(),
        "c.csv",
        &schema,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("has only negatives"), "{e}");
    assert!(e.contains("positive = 'Churned'"), "{e}");
    assert!(e.contains("values seen: 'churned', 'stayed'"), "{e}");
}

#[test]
fn not_a_number_mentions_the_missing_key() {
    let schema = Schema::from_toml_str(
        "missing = []\n[[labels]]\ncolumn = \"y\"\npositive = \"1\"\n[[features]]\nname = \"x\"\ntype = \"numeric\"\n",
    )
    .unwrap();
    let e = load_csv_reader("y,x\n1,NA\n0,2\n".as_bytes(), "c.csv", &schema)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c.csv:2: column 'x': 'NA' is not a number"),
        "{e}"
    );
    assert!(e.contains("`missing = [...]`"), "{e}");
}

#[test]
fn a_delimiter_is_declared_and_a_wrong_one_is_named() {
    let text = "y;x\n1;2.5\n0;3\n";
    let plain = "[[labels]]\ncolumn = \"y\"\npositive = \"1\"\n[[features]]\nname = \"x\"\ntype = \"numeric\"\n";
    let e = load_csv_reader(
        text.as_bytes(),
        "s.csv",
        &Schema::from_toml_str(plain).unwrap(),
    )
    .unwrap_err();
    let chain = fedsilo_config::display_chain(&e);
    assert!(chain.contains("set `delimiter = ';'`"), "{chain}");
    let semi = Schema::from_toml_str(&format!("delimiter = \";\"\n{plain}")).unwrap();
    let t = load_csv_reader(text.as_bytes(), "s.csv", &semi).unwrap();
    assert_eq!(t.x.column(0).to_vec(), vec![2.5, 3.0]);
    assert!(Schema::from_toml_str(&format!("delimiter = \"a\"\n{plain}")).is_err());
}

#[test]
fn feature_entries_are_strict_and_fit_their_type() {
    let e = Schema::from_toml_str(
        "[[features]]\nname = \"x\"\ntype = \"numeric\"\ncategories = [\"a\"]\n",
    )
    .unwrap_err();
    assert!(
        fedsilo_config::display_chain(&e).contains("only for type = \"categorical\""),
        "{e}"
    );
    let e = Schema::from_toml_str("[[features]]\nname = \"x\"\ntype = \"numerc\"\n").unwrap_err();
    assert!(
        fedsilo_config::display_chain(&e).contains("did you mean `numeric`?"),
        "{e}"
    );
}

#[test]
fn other_bucket_takes_undeclared_values() {
    let s = Schema::from_toml_str(
        r#"
        [[labels]]
        column = "y"
        positive = "1"
        [[features]]
        name = "job"
        type = "categorical"
        categories = ["clerk", "nurse"]
        other = true
    "#,
    )
    .unwrap();
    assert_eq!(s.feature_columns(), ["job=clerk", "job=nurse", "job=other"]);
    let t = load_csv_reader(
        "job,y\nclerk,1\npilot,0\n,0\nnurse,1\n".as_bytes(),
        "o.csv",
        &s,
    )
    .unwrap();
    assert_eq!(t.x.row(0).to_vec(), [1.0, 0.0, 0.0]);
    assert_eq!(t.x.row(1).to_vec(), [0.0, 0.0, 1.0], "pilot → other");
    assert_eq!(t.x.row(2).to_vec(), [0.0, 0.0, 0.0], "missing → all zeros");
    assert_eq!(t.x.row(3).to_vec(), [0.0, 1.0, 0.0]);
}

#[test]
fn schema_refuses_categories_that_could_never_match_or_clash_with_other() {
    let with = |cats: &str, other: &str| {
        Schema::from_toml_str(&format!(
            "[[features]]\nname = \"state\"\ntype = \"categorical\"\ncategories = {cats}\n{other}"
        ))
    };
    let e = with(r#"["CA", "NY "]"#, "").unwrap_err().to_string();
    assert_eq!(
        e,
        "<schema>: invalid schema: feature 'state': category \"NY \" has surrounding whitespace; cells are trimmed, so it could never match: write \"NY\""
    );
    let e = with(r#"["CA", "other"]"#, "other = true")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "category 'other' clashes with the `other = true` bucket (column 'state=other')"
        ),
        "{e}"
    );
    assert!(
        with(r#"["CA", "other"]"#, "").is_ok(),
        "without the bucket 'other' is a category"
    );
    let e = Schema::from_toml_str("[[features]]\nname = \"x\"\ntype = \"numeric\"\nother = true\n")
        .unwrap_err();
    let chain = format!("{:?}", e);
    assert!(
        chain.contains("`other` is only for type = \\\"categorical\\\""),
        "{chain}"
    );
}

#[test]
fn boolean_features_read_words_in_any_case() {
    let s = Schema::from_toml_str(
        "[[labels]]\ncolumn = \"y\"\npositive = \"yes\"\n[[features]]\nname = \"online\"\ntype = \"boolean\"\n",
    )
    .unwrap();
    let t = load_csv_reader(
        "online,y\nTrue,Yes\nfalse,no\nNA,No\nY,YES\n0,no\n".as_bytes(),
        "b.csv",
        &s,
    )
    .unwrap();
    assert_eq!(t.feature_names, ["online"]);
    let col: Vec<f32> = t.x.column(0).to_vec();
    assert_eq!(col[0], 1.0);
    assert_eq!(col[1], 0.0);
    assert!(col[2].is_nan());
    assert_eq!((col[3], col[4]), (1.0, 0.0));
    assert_eq!(t.label(0).to_vec(), [1.0, 0.0, 0.0, 1.0, 0.0]);
    let e = load_csv_reader("online,y\nmaybe,yes\nno,no\n".as_bytes(), "b.csv", &s)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("b.csv:2: column 'online': 'maybe' is not a boolean"),
        "{e}"
    );
}

#[test]
fn a_header_name_differing_in_case_is_pointed_out() {
    let e = err("Default,income,home\nYes,1,own\n");
    assert_eq!(
        e,
        "bank-a.csv:1: label column 'default' is not in the header (there is 'Default': names are case-sensitive)"
    );
}

/// The seed use case: high-value customers (a cohort on MAA), total assets derived from the
/// balances, and churn derived from next month's MAA, an input that is not a feature.
const DERIVED: &str = r#"
cohort = "maa > 200000 and segment != \"closed\""
[derive]
assets = "current + fixed_deposit + wealth"
half = "current / 2"

[[labels]]
column = "churn"
derive = "next_month_maa < 0.7 * maa"

[[features]]
name = "current"
type = "numeric"
[[features]]
name = "fixed_deposit"
type = "numeric"
[[features]]
name = "wealth"
type = "numeric"
[[features]]
name = "maa"
type = "numeric"
[[features]]
name = "segment"
type = "categorical"
categories = ["private", "affluent", "closed"]

[[inputs]]
name = "next_month_maa"
type = "numeric"
"#;

const DERIVED_CSV: &str = "current,fixed_deposit,wealth,maa,segment,next_month_maa
100000,50000,90000,250000,private,100000
1000,0,0,1500,affluent,1400
200000,10000,,300000,private,290000
150000,0,100000,260000,closed,0
90000,90000,90000,270000,affluent,260000
";

#[test]
fn derived_columns_cohort_and_derived_label_are_applied_row_by_row() {
    let s = Schema::from_toml_str(DERIVED).unwrap();
    assert_eq!(
        s.feature_columns(),
        [
            "current",
            "fixed_deposit",
            "wealth",
            "maa",
            "segment=private",
            "segment=affluent",
            "segment=closed",
            "assets",
            "half"
        ]
    );
    assert_eq!(s.n_feature_columns(), 9);
    let t = load_csv_reader(DERIVED_CSV.as_bytes(), "hv.csv", &s).unwrap();
    // Rows 2 (MAA 1,500) and 4 (closed) are outside the cohort; ids stay the file's rows.
    assert_eq!(t.ids, ["1", "3", "5"]);
    assert_eq!(t.feature_names, s.feature_columns());
    let assets: Vec<f32> = t.x.column(7).to_vec();
    assert_eq!(assets[0], 240000.0);
    assert!(
        assets[1].is_nan(),
        "a missing balance makes the sum missing"
    );
    assert_eq!(assets[2], 270000.0);
    assert_eq!(t.x.column(8).to_vec(), [50000.0, 100000.0, 45000.0]);
    // churn: 100k < 175k yes; 290k < 210k no; 260k < 189k no.
    assert_eq!(t.label_names, ["churn"]);
    assert_eq!(t.label(0).to_vec(), [1.0, 0.0, 0.0]);
}

#[test]
fn expressions_are_refused_at_schema_load_with_their_position() {
    fn chain(e: DataError) -> String {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(c) = src {
            s.push_str(&format!(": {c}"));
            src = c.source();
        }
        s
    }
    let with = |from: &str, to: &str| {
        assert!(DERIVED.contains(from), "{from}");
        chain(Schema::from_toml_str(&DERIVED.replace(from, to)).unwrap_err())
    };
    let e = chain(Schema::from_toml_str(&DERIVED.replace("+ wealth\"", "+ welth\"")).unwrap_err());
    assert!(
        e.contains("derive.assets \"current + fixed_deposit + welth\", at character 27: unknown column 'welth'"),
        "{e}"
    );
    assert!(
        e.contains("(columns: current, fixed_deposit, wealth, maa, segment, next_month_maa)"),
        "{e}"
    );
    let e = chain(
        Schema::from_toml_str(&DERIVED.replace("maa > 200000 and", "maa + segment and"))
            .unwrap_err(),
    );
    assert!(e.contains("'segment' is categorical"), "{e}");
    let e = chain(
        Schema::from_toml_str(&DERIVED.replace("next_month_maa < 0.7 * maa", "0.7 * maa"))
            .unwrap_err(),
    );
    assert!(
        e.contains("label 'churn' \"0.7 * maa\", at character 1: the expression is a number; a condition (cohort or label) needs a condition"),
        "{e}"
    );
    // A derived column may not read another derived column (only features and inputs).
    let e =
        chain(Schema::from_toml_str(&DERIVED.replace("current / 2", "assets / 2")).unwrap_err());
    assert!(e.contains("unknown column 'assets'"), "{e}");
    let e = with("half = ", "maa = ");
    assert!(
        e.contains("column 'maa' is declared twice (as feature and as derived column)"),
        "{e}"
    );
    let e = with(
        "derive = \"next_month_maa",
        "positive = \"1\"\nderive = \"next_month_maa",
    );
    assert!(
        e.contains("give either `positive` or `derive`, not both"),
        "{e}"
    );
    let e = with("derive = \"next_month_maa < 0.7 * maa\"", "");
    assert!(e.contains("label 'churn': give `positive = ...`"), "{e}");
    let e = with("derive = \"next_month_maa", "derve = \"next_month_maa");
    assert!(
        e.contains("did you mean `derive`"),
        "a typo is named with the nearest key: {e}"
    );
}

#[test]
fn rows_a_derived_label_cannot_decide_and_an_empty_cohort_are_errors() {
    let s = Schema::from_toml_str(DERIVED).unwrap();
    let e = load_csv_reader(
        "current,fixed_deposit,wealth,maa,segment,next_month_maa\n1,1,1,250000,private,\n"
            .as_bytes(),
        "hv.csv",
        &s,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with(
            "hv.csv:2: label 'churn' is derived by a condition that is unknown on this row"
        ),
        "{e}"
    );
    let e = load_csv_reader(
        "current,fixed_deposit,wealth,maa,segment,next_month_maa\n1,1,1,25,private,1\n1,1,1,2,private,2\n"
            .as_bytes(),
        "hv.csv",
        &s,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "hv.csv: the cohort (maa > 200000 and segment != \"closed\") keeps none of the 2 rows"
    );
    // A cell outside the cohort is still checked.
    let e = load_csv_reader(
        "current,fixed_deposit,wealth,maa,segment,next_month_maa\n1,1,1,25,nobody,1\n".as_bytes(),
        "hv.csv",
        &s,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown category 'nobody'"), "{e}");
}

#[test]
fn a_scoring_file_without_a_derived_labels_inputs_still_scores() {
    let s = Schema::from_toml_str(DERIVED).unwrap();
    let text = "current,fixed_deposit,wealth,maa,segment\n100000,50000,90000,250000,private\n1,1,1,1,private\n";
    let mut chunks = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("score.csv");
    std::fs::write(&path, text).unwrap();
    load_csv_chunks(&path, &s, 10, Labels::IfPresent, &mut |t: Table| {
        chunks.push(t);
        Ok::<(), DataError>(())
    })
    .unwrap();
    let t = &chunks[0];
    assert_eq!(t.ids, ["1"]);
    assert!(t.label_names.is_empty(), "{:?}", t.label_names);
    assert_eq!(t.x.row(0).to_vec()[7], 240000.0);
    // ...but an input the cohort or a derived column reads must be there.
    let s2 = Schema::from_toml_str(&DERIVED.replace("maa > 200000", "next_month_maa > 0")).unwrap();
    let e = load_csv_chunks(&path, &s2, 10, Labels::IfPresent, &mut |_: Table| {
        Ok::<(), DataError>(())
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("input column 'next_month_maa' is not in the header"),
        "{e}"
    );
}

#[test]
fn select_keeps_what_the_expressions_read_as_inputs() {
    let s = Schema::from_toml_str(DERIVED).unwrap();
    let only = s.select(&["segment".into(), "assets".into()]).unwrap();
    assert_eq!(
        only.feature_columns(),
        [
            "segment=private",
            "segment=affluent",
            "segment=closed",
            "assets"
        ]
    );
    let inputs: Vec<&str> = only.inputs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        inputs,
        [
            "next_month_maa",
            "current",
            "fixed_deposit",
            "wealth",
            "maa"
        ]
    );
    let t = load_csv_reader(DERIVED_CSV.as_bytes(), "hv.csv", &only).unwrap();
    assert_eq!(t.ids, ["1", "3", "5"]);
    assert_eq!(t.x.row(0).to_vec(), [1.0, 0.0, 0.0, 240000.0]);
}

#[test]
fn derive_table_applies_the_same_rules_to_a_table_in_memory() {
    let plain = Schema::from_toml_str(&DERIVED.replace(
        "derive = \"next_month_maa < 0.7 * maa\"",
        "positive = \"1\"",
    ))
    .unwrap();
    // A table with the read columns (features, then inputs) and a label column.
    let read = plain.without_expressions();
    assert!(plain.has_expressions() && !read.has_expressions());
    assert_eq!(
        read.features.last().map(|f| f.name.as_str()),
        Some("next_month_maa")
    );
    let csv = "current,fixed_deposit,wealth,maa,segment,next_month_maa,churn
100000,50000,90000,250000,private,100000,1
1000,0,0,1500,affluent,1400,0
200000,10000,,300000,private,290000,1
150000,0,100000,260000,closed,0,1
90000,90000,90000,270000,affluent,260000,0
";
    let t = load_csv_reader(csv.as_bytes(), "t.csv", &read).unwrap();
    let (d, count) = derive_table(&plain, t).unwrap();
    assert_eq!(count, CohortCount { read: 5, kept: 3 });
    assert_eq!(d.feature_names, plain.feature_columns());
    assert_eq!(d.x.column(7).to_vec()[0], 240000.0);
    assert_eq!(d.label_names, ["churn"]);
    assert_eq!(d.ids, ["1", "3", "5"]);
}
