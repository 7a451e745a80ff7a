use super::*;
use crate::data::{load_csv_reader, FeatureKind};

fn infer(text: &str, opts: &InferOptions) -> Inferred {
    infer_csv_reader(text.as_bytes(), "bank.csv", opts).unwrap()
}

fn label(l: &str) -> InferOptions {
    InferOptions {
        label: Some(l.into()),
        ..InferOptions::default()
    }
}

const BANK: &str = "CustomerID;age;income;online;state;churn;note\n\
    C1;34;1200.5;Yes;CA;No;a\n\
    C2;45;?;no;NY;Yes;b\n\
    C3;?;800;YES;CA;No;c\n\
    C4;29;2500;No;TX;No;d\n\
    C5;61;NA;yes;;Yes;e\n\
    C6;38;990;no;CA;No;f\n";

#[test]
fn sniffs_delimiter_types_id_missing_tokens_and_the_label() {
    let got = infer(BANK, &label("churn"));
    let s = &got.schema;
    assert_eq!(s.delimiter, ';');
    assert_eq!(s.id_column.as_deref(), Some("CustomerID"));
    assert!(s.missing.contains(&"?".to_string()), "{:?}", s.missing);
    assert!(s.missing.contains(&"NA".to_string()));
    assert_eq!(s.labels.len(), 1);
    assert_eq!(
        s.labels[0].positive_values().cloned(),
        Some(Positive::One("Yes".into()))
    );
    let kinds: Vec<(&str, &FeatureKind)> = s
        .features
        .iter()
        .map(|f| (f.name.as_str(), &f.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("age", &FeatureKind::Numeric),
            ("income", &FeatureKind::Numeric),
            ("online", &FeatureKind::Boolean),
            (
                "state",
                &FeatureKind::Categorical {
                    categories: vec!["CA".into(), "NY".into(), "TX".into()],
                    other: false
                }
            ),
        ],
        "note (all distinct text) is left out"
    );
    // A comment per column with what was seen.
    assert!(
        got.toml
            .contains("# income: numeric, 2 missing, min 800, max 2500"),
        "{}",
        got.toml
    );
    assert!(
        got.toml
            .contains("# state: categorical, 3 distinct, 1 missing; top 'CA' 3, 'NY' 1, 'TX' 1"),
        "{}",
        got.toml
    );
    assert!(
        got.toml.contains("# note: left out: every value distinct"),
        "{}",
        got.toml
    );
    assert!(got.toml.contains("plus '?' in age"), "{}", got.toml);
    // And the file loads by it.
    let t = load_csv_reader(BANK.as_bytes(), "bank.csv", s).unwrap();
    assert_eq!(
        t.feature_names,
        ["age", "income", "online", "state=CA", "state=NY", "state=TX"]
    );
    assert_eq!(t.ids[0], "C1");
    assert_eq!(t.x[[0, 2]], 1.0);
    assert_eq!(t.x[[1, 2]], 0.0);
    assert!(t.x[[1, 1]].is_nan());
    assert_eq!(t.label(0).to_vec(), [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn rare_categories_fold_into_other_above_max_categories() {
    let mut text = String::from("job,x,y\n");
    for i in 0..200 {
        let job = match i % 10 {
            0..=3 => "clerk".to_string(),
            4..=6 => "nurse".to_string(),
            _ => format!("title{i}"),
        };
        text.push_str(&format!("{job},{},{}\n", i % 7, i % 2));
    }
    let got = infer(
        &text,
        &InferOptions {
            label: Some("y".into()),
            max_categories: 2,
            ..InferOptions::default()
        },
    );
    let f = &got.schema.features[0];
    assert_eq!(
        f.kind,
        FeatureKind::Categorical {
            categories: vec!["clerk".into(), "nurse".into()],
            other: true
        }
    );
    assert!(
        got.toml.contains("the other 60 row(s) go to job=other"),
        "{}",
        got.toml
    );
    assert_eq!(
        got.schema.labels[0].positive_values(),
        Some(&Positive::One("1".into())),
        "0/1 label: 1"
    );
    let t = load_csv_reader(text.as_bytes(), "x.csv", &got.schema).unwrap();
    assert_eq!(
        t.feature_names,
        ["job=clerk", "job=nurse", "job=other", "x"]
    );
    let other: f32 = t.x.column(2).sum();
    assert_eq!(other, 60.0);
}

#[test]
fn high_cardinality_is_bounded_and_still_folds() {
    let mut text = String::from("code,flag\n");
    for i in 0..3 * (TRACK_LIMIT + 100) {
        // A few frequent codes, then thousands of rare ones.
        let code = if i % 3 == 0 {
            "A".to_string()
        } else {
            format!("Z{i}")
        };
        text.push_str(&format!("{code},{}\n", if i % 2 == 0 { "t" } else { "f" }));
    }
    let got = infer(&text, &label("flag"));
    match &got.schema.features[0].kind {
        FeatureKind::Categorical { categories, other } => {
            assert!(*other);
            assert_eq!(categories.len(), DEFAULT_MAX_CATEGORIES);
            assert_eq!(categories[0], "A");
        }
        k => panic!("{k:?}"),
    }
    assert!(got.toml.contains("high-cardinality"), "{}", got.toml);
    assert!(got.notes.iter().any(|n| n.contains("over 4096 distinct")));
}

#[test]
fn label_errors_say_what_was_seen() {
    let text = "grade,x\nA,1\nB,2\nD,3\nA,4\n";
    let e = infer_csv_reader(text.as_bytes(), "l.csv", &label("grade"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "l.csv: label 'grade' is not boolean or 0/1: say which values are positive with --positive (values seen: 'A' 2, 'B' 1, 'D' 1)"
    );
    let e = infer_csv_reader(
        text.as_bytes(),
        "l.csv",
        &InferOptions {
            label: Some("grade".into()),
            positive: vec!["D".into(), "E".into()],
            ..InferOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--positive 'E' never occurs"), "{e}");
    let e = infer_csv_reader(text.as_bytes(), "l.csv", &label("Grade"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "l.csv: --label column 'Grade' is not in the file (columns: grade, x)"
    );
    let ok = infer(
        text,
        &InferOptions {
            label: Some("grade".into()),
            positive: vec!["D".into(), "B".into()],
            ..InferOptions::default()
        },
    );
    assert_eq!(
        ok.schema.labels[0].positive_values(),
        Some(&Positive::Any(vec!["D".into(), "B".into()]))
    );
    assert!(ok.toml.contains("positive = [\"D\", \"B\"]"), "{}", ok.toml);
}

#[test]
fn id_names_and_delimiters() {
    assert!(id_like("id"));
    assert!(id_like("customer_id"));
    assert!(id_like("CustomerID"));
    assert!(id_like("clientId"));
    assert!(!id_like("paid"));
    assert!(!id_like("idle_days"));
    assert_eq!(sniff_delimiter(b"a,b,c\n1,2,3\n"), ',');
    assert_eq!(sniff_delimiter(b"a;b;c\n1,5;2;3\n"), ';');
    assert_eq!(sniff_delimiter(b"a\tb\n1\t2\n"), '\t');
    assert_eq!(sniff_delimiter(b"a|b\n1|2\n"), '|');
}

#[test]
fn a_numeric_unique_column_without_an_id_name_is_a_feature() {
    let text = "balance,y\n10.5,1\n11.25,0\n12,1\n13,0\n";
    let got = infer(text, &label("y"));
    assert_eq!(got.schema.id_column, None);
    assert_eq!(got.schema.features, [FeatureSpec::numeric("balance")]);
}
