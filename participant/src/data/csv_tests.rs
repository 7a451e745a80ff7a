//! The hand split of quote-free CSV text ([`super::csv`]) against the csv crate's reading of
//! the same text: same tables, same errors (file, line, column), wherever the text switches
//! from one to the other. A quoted header (`"id"`) sends the whole file through the csv
//! crate, so each case is read both ways.

use super::*;
use fedsilo_ml::table::Table;
use rand::{Rng, SeedableRng};

const NUMERIC: &str = r#"
    id_column = "id"
    missing = ["NA", "-999"]
    [[features]]
    name = "a"
    type = "numeric"
    [[features]]
    name = "b"
    type = "numeric"
    [[features]]
    name = "c"
    type = "numeric"
"#;

/// [`NUMERIC`] without missing-value tokens: every cell, negative ones too, can take the
/// word-at-a-time decimal reader.
const NUMERIC_PLAIN: &str = r#"
    id_column = "id"
    [[features]]
    name = "a"
    type = "numeric"
    [[features]]
    name = "b"
    type = "numeric"
    [[features]]
    name = "c"
    type = "numeric"
"#;

/// Not all numeric: read by the row path, split by hand all the same.
const MIXED: &str = r#"
    [[features]]
    name = "a"
    type = "numeric"
    [[features]]
    name = "home"
    type = "categorical"
    categories = ["own", "rent"]
    [[features]]
    name = "c"
    type = "numeric"
"#;

/// Feature names, floats by their bits, ids.
type Read = (Vec<String>, Vec<u32>, Vec<String>);

/// What a read gave, comparable: the table or the error's message.
fn outcome(r: Result<Table, DataError>) -> Result<Read, String> {
    r.map(|t| {
        (
            t.feature_names.clone(),
            t.x.iter().map(|v| v.to_bits()).collect(),
            t.ids.clone(),
        )
    })
    .map_err(|e| e.to_string())
}

/// `text` read as it is and with its header quoted (all through the csv crate).
fn both(text: &str, schema: &Schema) -> (Result<Table, DataError>, Result<Table, DataError>) {
    let (header, body) = text.split_once('\n').unwrap_or((text, ""));
    let quoted: Vec<String> = header.split(',').map(|h| format!("\"{h}\"")).collect();
    let by_crate = format!("{}\n{body}", quoted.join(","));
    (
        load_csv_reader(text.as_bytes(), "f.csv", schema),
        load_csv_reader(by_crate.as_bytes(), "f.csv", schema),
    )
}

fn load(text: &str, schema: &Schema) -> Result<Table, DataError> {
    load_csv_reader(text.as_bytes(), "f.csv", schema)
}

fn same(text: &str, schema: &Schema) -> Result<Table, DataError> {
    let (hand, by_crate) = both(text, schema);
    let (h, c) = (outcome(hand), outcome(by_crate));
    assert_eq!(h, c, "{text:?}");
    load_csv_reader(text.as_bytes(), "f.csv", schema)
}

#[test]
fn hand_split_reads_what_the_csv_crate_reads() {
    let numeric = Schema::from_toml_str(NUMERIC).unwrap();
    let t = same(
        "id,a,b,c,extra\r\nC1, 1.5 ,NA,-2,x\r\n\r\nC2,,-999,1e3,y\nC3,7,8,9\n",
        &numeric,
    );
    assert_eq!(
        t.unwrap_err().to_string(),
        "f.csv:5: row has 4 fields but the header has 5"
    );
    let t = same("id,a,b,c\r\nC1, 1.5 ,NA,-2\r\n\r\nC2,,-999,1e3", &numeric).unwrap();
    let e = load("id,a,b,c\nC1,1,2,3\r\nC2,1,2,x\r\n", &numeric).unwrap_err();
    assert!(e.to_string().starts_with("f.csv:3: column 'c'"), "{e}");
    assert_eq!(t.ids, ["C1", "C2"]);
    assert_eq!(t.x.row(0)[0], 1.5);
    assert!(t.x.row(0)[1].is_nan() && t.x.row(1)[0].is_nan() && t.x.row(1)[1].is_nan());
    assert_eq!(t.x.row(1)[2], 1000.0);
    // Bad cells: the same message, naming line and column.
    let e = same("id,a,b,c\nC1,1,2,3\nC2,1,2k,3\n", &numeric).unwrap_err();
    assert_eq!(
        e.to_string(),
        "f.csv:3: column 'b': '2k' is not a number (numeric feature; missing values are empty or one of 'NA', '-999'; list other tokens with `missing = [...]` in the schema)"
    );
    // After an empty line the hand split names the line the row is on; the csv crate's
    // positions do not count the empty line.
    let text = "id,a,b,c\nC1,1,2,3\n\nC2,1,2k,3\n";
    let (hand, by_crate) = both(text, &numeric);
    assert!(hand
        .unwrap_err()
        .to_string()
        .starts_with("f.csv:4: column 'b'"));
    assert!(by_crate
        .unwrap_err()
        .to_string()
        .starts_with("f.csv:3: column 'b'"));
    let e = same("id,a,b,c\nC1,1,2,3\n ,1,2,3\n", &numeric).unwrap_err();
    assert_eq!(
        e.to_string(),
        "f.csv:3: column 'id': customer id is missing"
    );
    // A quote after hand-split lines: the csv crate takes over with the right line numbers.
    let e = same("id,a,b,c\nC1,1,2,3\n\"C\n2\",1,2,3\nC3,x,2,3\n", &numeric).unwrap_err();
    assert!(e.to_string().starts_with("f.csv:5: column 'a': 'x'"), "{e}");
    let t = same("id,a,b,c\nC1,1,2,3\n\"C,2\",1,\"2.5\",3\n", &numeric).unwrap();
    assert_eq!(t.ids, ["C1", "C,2"]);
    assert_eq!(t.x.row(1)[1], 2.5);
    // A lone carriage return ends a record for the csv crate: not split by hand.
    let e = same("id,a,b,c\nC1,1,2\r3,4\n", &numeric).unwrap_err();
    assert_eq!(
        e.to_string(),
        "f.csv:2: row has 3 fields but the header has 4"
    );
    // Another delimiter.
    let semi = Schema::from_toml_str(&format!("delimiter = \";\"\n{NUMERIC}")).unwrap();
    let t = load_csv_reader("id;a;b;c\nC1;1,5;2;3\n".as_bytes(), "f.csv", &semi);
    assert!(t.unwrap_err().to_string().contains("'1,5' is not a number"));
    let t = load_csv_reader("id;a;b;c\nC1;1.5;2;3\n".as_bytes(), "f.csv", &semi).unwrap();
    assert_eq!(t.x.row(0).to_vec(), [1.5, 2.0, 3.0]);
    // The row path (a categorical feature).
    let mixed = Schema::from_toml_str(MIXED).unwrap();
    let t = same("a,home,c\n1,own,2\n\n,rent, 3\r\n", &mixed).unwrap();
    assert_eq!(t.ids, ["1", "2"]);
    let e = same("a,home,c\n1,own,2\n2,boat,3\n", &mixed).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("f.csv:3: column 'home': unknown category 'boat'"));
}

/// Random files of both schemas, with every irregularity above mixed in, past the read-ahead
/// block (so blocks end mid-file and a quote can turn up in a later one).
#[test]
fn random_files_read_the_same_either_way() {
    let numeric = Schema::from_toml_str(NUMERIC).unwrap();
    let mixed = Schema::from_toml_str(MIXED).unwrap();
    let plain = Schema::from_toml_str(NUMERIC_PLAIN).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for case in 0..60 {
        let rows = if case % 10 == 0 { 60_000 } else { 40 };
        let rare = |rng: &mut rand_chacha::ChaCha8Rng| rng.random_range(0..rows.max(1) * 4) == 0;
        let (schema, header) = if case % 4 == 2 {
            (&plain, "id,a,b,c")
        } else if case % 2 == 0 {
            (&numeric, "id,a,b,c")
        } else {
            (&mixed, "a,home,c")
        };
        let mut text = format!("{header}\n");
        for r in 0..rows {
            let eol = if case % 3 == 0 { "\r\n" } else { "\n" };
            if case % 5 == 4 && rare(&mut rng) {
                text.push_str(eol); // an empty line: the same rows (line numbers differ)
            }
            let number = |rng: &mut rand_chacha::ChaCha8Rng| -> String {
                match rng.random_range(0..40) {
                    0 => String::new(),
                    1 => "NA".into(),
                    2 => " 4.25 ".into(),
                    3 => "1e2".into(),
                    4 => "-999".into(),
                    // Plain decimals the word-at-a-time reader declines or must get right.
                    5 => ["+1.5", ".5", "5.", "-.25", "-0.000", "1677721.5"]
                        [rng.random_range(0..6)]
                    .into(),
                    6 => ["123456789.25", "0.12345678", "16777216", "12345678"]
                        [rng.random_range(0..4)]
                    .into(),
                    7 => format!("{}", rng.random_range(-99_999_999i64..99_999_999)),
                    8 => format!("{:.7}", rng.random::<f64>() * 2.0 - 1.0),
                    _ => format!("{:.3}", rng.random::<f32>() * 20.0 - 10.0),
                }
            };
            let mut cells: Vec<String> = if case % 2 == 0 {
                vec![
                    format!("C{r}"),
                    number(&mut rng),
                    number(&mut rng),
                    number(&mut rng),
                ]
            } else {
                let home = ["own", "rent", ""][rng.random_range(0..3)];
                vec![number(&mut rng), home.into(), number(&mut rng)]
            };
            if rare(&mut rng) {
                cells[1] = "oops".into();
            }
            if rare(&mut rng) {
                cells[0] = format!("\"{}\"", cells[0]);
            }
            if rare(&mut rng) {
                cells.pop();
            }
            text.push_str(&cells.join(","));
            if r + 1 < rows || rng.random_bool(0.5) {
                text.push_str(eol);
            }
        }
        let (hand, by_crate) = both(&text, schema);
        let (hand, by_crate) = (outcome(hand), outcome(by_crate));
        // The same table, or the same error; its line may differ: the csv crate's positions
        // do not count an empty line, nor, past a header ended by `\n`, the first `\r\n`
        // (the hand split names the physical line, as the fixed cases above check).
        let unlined = |r: Result<_, String>| {
            r.map_err(|e| e.split_once(": ").map_or(e.clone(), |(_, m)| m.to_string()))
        };
        assert_eq!(unlined(hand), unlined(by_crate), "case {case}");
    }
}

/// Chunks of a file split by hand are the whole table's rows, in order, ids counted on.
#[test]
fn chunks_of_a_hand_split_file_are_the_whole_table() {
    let mixed = Schema::from_toml_str(MIXED).unwrap();
    let mut text = String::from("a,home,c\n");
    for r in 0..5_000 {
        text.push_str(&format!("{r}.5,{},{}\n", ["own", "rent"][r % 2], r % 7));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.csv");
    std::fs::write(&path, &text).unwrap();
    let whole = load_csv(&path, &mixed).unwrap();
    let mut chunks = Vec::new();
    let n = load_csv_chunks(&path, &mixed, 777, Labels::IfPresent, &mut |t: Table| {
        chunks.push(t);
        Ok::<(), DataError>(())
    })
    .unwrap();
    assert_eq!(n, 5_000);
    assert_eq!(chunks.len(), 5_000usize.div_ceil(777));
    let ids: Vec<String> = chunks.iter().flat_map(|t| t.ids.clone()).collect();
    assert_eq!(ids, whole.ids);
    let x: Vec<f32> = chunks.iter().flat_map(|t| t.x.iter().copied()).collect();
    assert_eq!(x, whole.x.iter().copied().collect::<Vec<_>>());
}
