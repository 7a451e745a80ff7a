//! The draft itself: each column's role decided from its [`Stats`], then the TOML with a
//! comment per column, checked by the strict loader.

use super::*;

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn quoted_counts(items: &[(String, u64)]) -> String {
    items
        .iter()
        .map(|(v, c)| format!("'{v}' {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The decided role of each column.
enum Decision {
    Id,
    Label(Vec<String>),
    Numeric,
    Boolean,
    Categorical {
        categories: Vec<String>,
        other: bool,
    },
    Skip(String),
}

pub(super) fn draft(
    source_name: &str,
    stats: Vec<Stats>,
    rows: u64,
    delimiter: char,
    opts: &InferOptions,
) -> Result<Inferred, InferError> {
    let src = || source_name.to_string();
    let columns = || {
        stats
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let find = |name: &str, what: &'static str| {
        stats
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| InferError::NoSuchColumn {
                source_name: src(),
                what,
                column: name.to_string(),
                columns: columns(),
            })
    };
    let label_at = opts
        .label
        .as_deref()
        .map(|l| find(l, "label"))
        .transpose()?;
    let given_id = opts
        .id_column
        .as_deref()
        .map(|c| find(c, "id-column"))
        .transpose()?;

    // Missing tokens: the defaults, plus placeholders in otherwise numeric columns.
    let mut missing: Vec<String> = DEFAULT_MISSING.iter().map(|s| s.to_string()).collect();
    let mut found_in: Vec<String> = Vec::new();
    for s in &stats {
        if s.numeric == 0 || s.non_numeric_overflow {
            continue;
        }
        let odd: Vec<&Vec<u8>> = s
            .non_numeric
            .keys()
            .filter(|k| !missing.iter().any(|m| m.as_bytes() == k.as_slice()))
            .collect();
        if odd.is_empty() || odd.len() > 3 {
            continue;
        }
        if odd
            .iter()
            .all(|k| PLACEHOLDERS.iter().any(|p| p.as_bytes() == k.as_slice()))
        {
            for k in odd {
                let t = String::from_utf8_lossy(k).into_owned();
                if !missing.contains(&t) {
                    found_in.push(format!("'{t}' in {}", s.name));
                    missing.push(t);
                }
            }
        }
    }
    let is_missing = |v: &[u8]| v.is_empty() || missing.iter().any(|m| m.as_bytes() == v);
    let missing_count = |s: &Stats| {
        s.empty
            + s.values
                .iter()
                .filter(|(k, _)| is_missing(k))
                .map(|(_, (c, _))| c)
                .sum::<u64>()
    };
    let numeric_type = |s: &Stats| {
        s.numeric > 0 && !s.non_numeric_overflow && s.non_numeric.keys().all(|k| is_missing(k))
    };
    let boolean_type = |s: &Stats| {
        !numeric_type(s)
            && s.booleans > 0
            && !s.high_cardinality()
            && s.values
                .keys()
                .all(|k| is_missing(k) || crate::data::encode::boolean_value(k).is_some())
    };

    // The id column.
    let id_at = given_id.or_else(|| {
        let candidate = |s: &&Stats| {
            Some(s.name.as_str()) != opts.label.as_deref()
                && s.unusable.is_none()
                && s.all_distinct()
        };
        stats
            .iter()
            .position(|s| candidate(&s) && id_like(&s.name))
            .or_else(|| stats.iter().position(|s| candidate(&s) && !numeric_type(s)))
    });

    let mut notes = Vec::new();
    let mut decisions = Vec::with_capacity(stats.len());
    for (i, s) in stats.iter().enumerate() {
        let d = if Some(i) == id_at {
            Decision::Id
        } else if Some(i) == label_at {
            let miss = missing_count(s);
            if miss > 0 {
                return Err(InferError::LabelMissing {
                    source_name: src(),
                    label: s.name.clone(),
                    missing: miss,
                });
            }
            let seen = s.by_count(&|_| false);
            let seen_text = quoted_counts(&seen.iter().take(20).cloned().collect::<Vec<_>>());
            let positive = if opts.positive.is_empty() {
                let truthy = seen
                    .iter()
                    .filter(|(v, _)| crate::data::encode::boolean_value(v.as_bytes()) == Some(true))
                    .map(|(v, _)| v.clone())
                    .collect::<Vec<_>>();
                let all_bool = seen
                    .iter()
                    .all(|(v, _)| crate::data::encode::boolean_value(v.as_bytes()).is_some());
                if !all_bool || truthy.is_empty() || s.high_cardinality() {
                    return Err(InferError::PositiveNeeded {
                        source_name: src(),
                        label: s.name.clone(),
                        seen: seen_text,
                    });
                }
                // Boolean words match in any case, so one spelling is enough; 1 is exact.
                truthy.into_iter().take(1).collect()
            } else {
                for p in &opts.positive {
                    if !s.values.contains_key(p.as_bytes()) && !s.high_cardinality() {
                        return Err(InferError::PositiveNotSeen {
                            source_name: src(),
                            label: s.name.clone(),
                            value: p.clone(),
                            seen: seen_text,
                        });
                    }
                }
                opts.positive.clone()
            };
            Decision::Label(positive)
        } else if let Some(why) = &s.unusable {
            Decision::Skip(format!("a {why} column is not a feature"))
        } else if missing_count(s) == s.rows() {
            Decision::Skip("every value is missing".into())
        } else if numeric_type(s) {
            if s.min == s.max {
                Decision::Skip(format!("constant ({})", fmt_num(s.min)))
            } else {
                Decision::Numeric
            }
        } else if boolean_type(s) {
            let distinct: Vec<bool> = s
                .values
                .keys()
                .filter_map(|k| crate::data::encode::boolean_value(k))
                .collect();
            if distinct.iter().all(|b| *b) || distinct.iter().all(|b| !*b) {
                Decision::Skip("constant boolean".into())
            } else {
                Decision::Boolean
            }
        } else if s.all_distinct() {
            Decision::Skip("every value distinct: an identifier or free text, not a feature".into())
        } else {
            let ranked = s.by_count(&|k| is_missing(k));
            if ranked.len() < 2 && !s.high_cardinality() {
                Decision::Skip("constant".into())
            } else {
                let fold = s.high_cardinality() || ranked.len() > opts.max_categories;
                let mut categories: Vec<String> = ranked
                    .iter()
                    .map(|(v, _)| v.clone())
                    .filter(|v| !(fold && v == OTHER))
                    .collect();
                categories.truncate(opts.max_categories);
                Decision::Categorical {
                    categories,
                    other: fold,
                }
            }
        };
        decisions.push(d);
    }
    if !decisions.iter().any(|d| {
        matches!(
            d,
            Decision::Numeric | Decision::Boolean | Decision::Categorical { .. }
        )
    }) {
        return Err(InferError::NoFeatures { source_name: src() });
    }

    // The TOML, with a comment per column.
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Drafted by `fedsilo schema infer` from {source_name}: {rows} rows, {} columns{}.",
        stats.len(),
        if delimiter == ',' {
            String::new()
        } else {
            format!(", delimiter {delimiter:?}")
        }
    );
    let _ = writeln!(
        t,
        "# Review it, then agree on it with the federation: every participant loads the same schema."
    );
    if let Some(i) = id_at {
        if let Some(s) = stats.get(i) {
            let _ = writeln!(
                t,
                "\n# {}: every value distinct ({} rows){}",
                s.name,
                s.rows(),
                if given_id.is_some() {
                    ", given by --id-column"
                } else {
                    ": taken as the customer id"
                }
            );
            let _ = writeln!(t, "id_column = {}", toml_str(&s.name));
        }
    }
    if !found_in.is_empty() {
        let _ = writeln!(
            t,
            "\n# Missing-value tokens: the defaults, plus {} (placeholders in numeric columns).",
            found_in.join(", ")
        );
    }
    let _ = writeln!(
        t,
        "{}missing = [{}]",
        if found_in.is_empty() { "\n" } else { "" },
        missing
            .iter()
            .map(|m| toml_str(m))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if delimiter != ',' {
        let _ = writeln!(t, "delimiter = {}", toml_str(&delimiter.to_string()));
    }
    let mut schema = Schema {
        id_column: id_at.and_then(|i| stats.get(i)).map(|s| s.name.clone()),
        labels: Vec::new(),
        features: Vec::new(),
        missing: missing.clone(),
        delimiter,
        cohort: None,
        inputs: Vec::new(),
        derive: Default::default(),
    };
    for (s, d) in stats.iter().zip(&decisions) {
        if let Decision::Label(positive) = d {
            let seen = s.by_count(&|_| false);
            let _ = writeln!(
                t,
                "\n# {}: label; values {}",
                s.name,
                quoted_counts(&seen.iter().take(20).cloned().collect::<Vec<_>>())
            );
            let _ = writeln!(t, "[[labels]]\ncolumn = {}", toml_str(&s.name));
            let pos = if positive.len() == 1 {
                positive.first().map(|p| toml_str(p)).unwrap_or_default()
            } else {
                format!(
                    "[{}]",
                    positive
                        .iter()
                        .map(|p| toml_str(p))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let _ = writeln!(t, "positive = {pos}");
            schema.labels.push(LabelSpec::positive(
                s.name.clone(),
                if positive.len() == 1 {
                    Positive::One(positive.first().cloned().unwrap_or_default())
                } else {
                    Positive::Any(positive.clone())
                },
            ));
        }
    }
    if opts.label.is_none() {
        let _ = writeln!(
            t,
            "\n# No --label given: a scoring schema. To train, add\n# [[labels]]\n# column = \"…\"\n# positive = \"…\""
        );
    }
    for (s, d) in stats.iter().zip(&decisions) {
        let miss = missing_count(s);
        match d {
            Decision::Id | Decision::Label(_) => {}
            Decision::Skip(why) => {
                let _ = writeln!(t, "\n# {}: left out: {why}", s.name);
            }
            Decision::Numeric => {
                let n = s.numeric.max(1) as f64;
                let _ = writeln!(
                    t,
                    "\n# {}: numeric{}, {miss} missing, min {}, max {}, mean {}",
                    s.name,
                    if s.integral { " (integers)" } else { "" },
                    fmt_num(s.min),
                    fmt_num(s.max),
                    fmt_num(s.sum / n)
                );
                let _ = writeln!(
                    t,
                    "[[features]]\nname = {}\ntype = \"numeric\"",
                    toml_str(&s.name)
                );
                schema.features.push(FeatureSpec::numeric(s.name.clone()));
            }
            Decision::Boolean => {
                let seen = s.by_count(&|k| is_missing(k));
                let _ = writeln!(
                    t,
                    "\n# {}: boolean, {miss} missing; {}",
                    s.name,
                    quoted_counts(&seen)
                );
                let _ = writeln!(
                    t,
                    "[[features]]\nname = {}\ntype = \"boolean\"",
                    toml_str(&s.name)
                );
                schema.features.push(FeatureSpec::boolean(s.name.clone()));
            }
            Decision::Categorical { categories, other } => {
                let ranked = s.by_count(&|k| is_missing(k));
                let shown: Vec<(String, u64)> = ranked.iter().take(10).cloned().collect();
                let listed: u64 = ranked
                    .iter()
                    .filter(|(v, _)| categories.contains(v))
                    .map(|(_, c)| c)
                    .sum();
                let non_missing = s.rows() - miss;
                let distinct = if s.high_cardinality() {
                    format!("over {TRACK_LIMIT} distinct (high-cardinality)")
                } else {
                    format!("{} distinct", ranked.len())
                };
                let _ = writeln!(
                    t,
                    "\n# {}: categorical, {distinct}, {miss} missing; top {}{}",
                    s.name,
                    quoted_counts(&shown),
                    if ranked.len() > shown.len() {
                        ", …"
                    } else {
                        ""
                    }
                );
                if *other {
                    let _ = writeln!(
                        t,
                        "# the {} most frequent are listed; the other {} row(s) go to {}={OTHER}",
                        categories.len(),
                        non_missing.saturating_sub(listed),
                        s.name
                    );
                } else {
                    let _ = writeln!(
                        t,
                        "# every value seen is listed; add `other = true` if other participants hold others"
                    );
                }
                let _ = writeln!(
                    t,
                    "[[features]]\nname = {}\ntype = \"categorical\"\ncategories = [{}]",
                    toml_str(&s.name),
                    categories
                        .iter()
                        .map(|c| toml_str(c))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if *other {
                    let _ = writeln!(t, "other = true");
                }
                schema.features.push(if *other {
                    FeatureSpec::categorical_with_other(s.name.clone(), categories.clone())
                } else {
                    FeatureSpec::categorical(s.name.clone(), categories.clone())
                });
                if s.high_cardinality() {
                    notes.push(format!(
                        "{}: over {TRACK_LIMIT} distinct values; the {} most frequent of the first {TRACK_LIMIT} seen are listed, the rest go to '{OTHER}'",
                        s.name,
                        categories.len()
                    ));
                }
            }
        }
    }
    if let Some(i) = id_at.filter(|_| given_id.is_none()) {
        if let Some(s) = stats.get(i) {
            notes.push(format!(
                "id column guessed: '{}' (every value distinct); pass --id-column to choose another",
                s.name
            ));
        }
    }
    // The draft must load as it will be loaded.
    let loaded = Schema::from_toml_str(&t).map_err(|source| InferError::Draft {
        source_name: src(),
        source: Box::new(source),
    })?;
    debug_assert_eq!(loaded, schema);
    Ok(Inferred {
        toml: t,
        schema: loaded,
        notes,
    })
}
