//! Strict configuration loading, shared by every file fedsilo reads.
//!
//! Every TOML or JSON document the product reads (job specs, scenarios, coordinator,
//! participant and operator configs, schemas, rosters) goes through [`from_toml_str`],
//! [`load_toml`] or [`from_json_str`]. The types themselves carry
//! `#[serde(deny_unknown_fields)]`; this crate turns serde's refusal into an error that
//! names the file, the line and column, the dotted path of the table, the unknown key and
//! the nearest valid key:
//!
//! ```text
//! job.toml:7:1: unknown field `DP`, did you mean `dp`? (valid here: dataset, task, …)
//! ```
//!
//! Unknown enum variants (`kind = "gbm"`) get the same suggestion.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration document was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A key (or enum variant) the type does not know.
    #[error("{0}")]
    Unknown(Box<UnknownKey>),
    /// Any other syntax or type error. `message` is the parser's one-line text; `parser`
    /// keeps the parser's own error (not a `source()`: its text is `message`, and printing
    /// both would say it twice).
    #[error("{0}")]
    Invalid(Box<InvalidDoc>),
}

/// What [`ConfigError::Invalid`] knows.
#[derive(Debug, thiserror::Error)]
#[error("{place}: {}{message}", at_path(path).trim_start_matches(' ').to_string() + if path.is_empty() { "" } else { ": " })]
pub struct InvalidDoc {
    pub place: Place,
    pub path: String,
    pub message: String,
    pub parser: Box<dyn std::error::Error + Send + Sync + 'static>,
}

/// What [`ConfigError::Unknown`] knows about the unknown key.
#[derive(Debug, thiserror::Error)]
#[error("{place}: unknown {what} `{key}`{}{} (valid here: {})",
    at_path(path), suggestion.as_ref().map(|s| format!(", did you mean `{s}`?")).unwrap_or_default(),
    if expected.is_empty() { "none".to_string() } else { expected.join(", ") })]
pub struct UnknownKey {
    pub place: Place,
    /// `field` or `variant`.
    pub what: &'static str,
    pub key: String,
    /// Dotted path of the table the key is in (empty at the top level).
    pub path: String,
    pub suggestion: Option<String>,
    pub expected: Vec<String>,
}

fn at_path(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" in `{path}`")
    }
}

/// Where in which document: `file:line:column` (line and column 1-based, when known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        Ok(())
    }
}

impl ConfigError {
    /// The unknown key, when that is what was wrong.
    pub fn unknown_key(&self) -> Option<&str> {
        match self {
            ConfigError::Unknown(u) => Some(&u.key),
            _ => None,
        }
    }

    /// The suggested replacement for an unknown key, if one is close enough.
    pub fn suggestion(&self) -> Option<&str> {
        match self {
            ConfigError::Unknown(u) => u.suggestion.as_deref(),
            _ => None,
        }
    }
}

/// `error: cause: cause…` — an error and its whole `source()` chain on one line, for
/// places that hand an error to someone as text (a gRPC status, a declined step).
pub fn display_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let part = c.to_string();
        // Some errors already embed their source's text; do not print it twice.
        if !s.ends_with(&part) {
            s.push_str(": ");
            s.push_str(&part);
        }
        cur = c.source();
    }
    s
}

/// Reads and parses a TOML file strictly (see the crate doc).
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_toml_str(&text, &path.display().to_string())
}

/// Parses TOML text strictly; `file` names the document in errors.
pub fn from_toml_str<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = dotted(e.path());
        let inner = e.into_inner();
        let (line, column) = match inner.span() {
            Some(span) => {
                let (l, c) = line_col(text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        let place = Place {
            file: file.to_string(),
            line,
            column,
        };
        let message = inner.message().trim().to_string();
        classify(place, path, message, Box::new(inner))
    })
}

/// Parses JSON text strictly; `what` names the document in errors (a file name, or e.g.
/// "job spec").
pub fn from_json_str<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| (dotted(e.path()), e.into_inner()))
        .and_then(|v| de.end().map(|()| v).map_err(|e| (String::new(), e)));
    value.map_err(|(path, inner)| {
        let place = Place {
            file: what.to_string(),
            line: (inner.line() > 0).then_some(inner.line()),
            column: (inner.column() > 0).then_some(inner.column()),
        };
        // serde_json appends " at line L column C" to the message; the place says it.
        let full = inner.to_string();
        let message = match full.rfind(" at line ") {
            Some(i) => full[..i].to_string(),
            None => full,
        };
        classify(place, path, message, Box::new(inner))
    })
}

fn dotted(path: &serde_path_to_error::Path) -> String {
    let s = path.to_string();
    if s == "." {
        String::new()
    } else {
        s
    }
}

/// Turns serde's `unknown field `x`, expected one of `a`, `b`` (and the variant form) into
/// [`ConfigError::Unknown`] with a suggestion; anything else into [`ConfigError::Invalid`].
fn classify(
    place: Place,
    path: String,
    message: String,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
) -> ConfigError {
    for (prefix, what) in [
        ("unknown field `", "field"),
        ("unknown variant `", "variant"),
    ] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((key, tail)) = rest.split_once('`') {
                let expected = expected_names(tail);
                let names: Vec<&str> = expected.iter().map(String::as_str).collect();
                let suggestion = nearest(key, &names).map(str::to_string);
                // serde reports the path *into* the unknown key for fields; drop that last
                // segment so the path names the table the key is in.
                let table = match path.rsplit_once('.') {
                    Some((head, last)) if what == "field" && last == key => head.to_string(),
                    None if what == "field" && path == key => String::new(),
                    _ => path.clone(),
                };
                return ConfigError::Unknown(Box::new(UnknownKey {
                    place,
                    what,
                    key: key.to_string(),
                    path: table,
                    suggestion,
                    expected,
                }));
            }
        }
    }
    ConfigError::Invalid(Box::new(InvalidDoc {
        place,
        path,
        message,
        parser: source,
    }))
}

/// The names in serde's "expected one of `a`, `b`" / "expected `a` or `b`" tail.
fn expected_names(tail: &str) -> Vec<String> {
    tail.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo: the same
/// word in another case, or within an edit distance of about a third of its length.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_lowercase();
    if let Some(c) = candidates.iter().find(|c| c.to_lowercase() == lower) {
        return Some(c);
    }
    let mut best: Option<(&'a str, usize)> = None;
    for &c in candidates {
        let d = strsim::damerau_levenshtein(&lower, &c.to_lowercase());
        if best.is_none_or(|(_, bd)| d < bd) {
            best = Some((c, d));
        }
    }
    let (c, d) = best?;
    let limit = (word.chars().count().max(c.chars().count()) / 3).max(1);
    if d <= limit {
        return Some(c);
    }
    // A known key that the unknown one merely extends or shortens ("epsilon" for
    // "epsilon_budget", "n_trees" for "trees").
    candidates
        .iter()
        .filter(|c| c.len() >= 3 && lower.len() >= 3)
        .find(|c| {
            let cl = c.to_lowercase();
            cl.starts_with(&lower) || lower.starts_with(&cl)
        })
        .copied()
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit_once('\n')
        .map(|(_, l)| l.chars().count())
        .unwrap_or_else(|| before.chars().count())
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        learning_rate: f64,
        #[serde(default)]
        local_epochs: usize,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        dataset: String,
        #[serde(default)]
        dp: Option<Inner>,
        #[serde(default)]
        min_participants: usize,
        #[serde(default)]
        learning: Option<Inner>,
        #[serde(default)]
        model: Option<Kind>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
    #[allow(dead_code)]
    enum Kind {
        LogisticRegression {},
        Gbdt { n_trees: usize },
    }

    #[test]
    fn capitalised_key_is_refused_with_the_lowercase_suggestion_and_its_line() {
        let text = "dataset = \"credit\"\nDP = { learning_rate = 1.0 }\n";
        let e = from_toml_str::<Doc>(text, "job.toml").unwrap_err();
        assert_eq!(e.unknown_key(), Some("DP"));
        assert_eq!(e.suggestion(), Some("dp"));
        let msg = e.to_string();
        assert!(
            msg.starts_with("job.toml:2:1: unknown field `DP`, did you mean `dp`?"),
            "{msg}"
        );
    }

    #[test]
    fn nested_typo_names_its_table() {
        let text = "dataset = \"credit\"\n[learning]\nlearning_rte = 0.1\n";
        let e = from_toml_str::<Doc>(text, "job.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("job.toml:3:1"), "{msg}");
        assert!(msg.contains("in `learning`"), "{msg}");
        assert!(msg.contains("did you mean `learning_rate`?"), "{msg}");
    }

    #[test]
    fn misspelt_top_level_key_and_tagged_enum_fields() {
        let e = from_toml_str::<Doc>("dataset = \"x\"\nmin_particpants = 3\n", "j").unwrap_err();
        assert_eq!(e.suggestion(), Some("min_participants"));
        let e = from_toml_str::<Doc>(
            "dataset = \"x\"\nmodel = { kind = \"gbdt\", n_estimators = 200 }\n",
            "j",
        )
        .unwrap_err();
        assert_eq!(e.unknown_key(), Some("n_estimators"), "{e}");
        let e = from_toml_str::<Doc>(
            "dataset = \"x\"\nmodel = { kind = \"logistic_regression\", l1 = 2 }\n",
            "j",
        )
        .unwrap_err();
        assert_eq!(e.unknown_key(), Some("l1"), "{e}");
        let e = from_toml_str::<Doc>("dataset = \"x\"\nmodel = { kind = \"gbdtt\" }\n", "j")
            .unwrap_err();
        assert_eq!(e.suggestion(), Some("gbdt"), "{e}");
    }

    #[test]
    fn json_errors_name_line_column_and_path() {
        let e = from_json_str::<Doc>(
            "{\"dataset\":\"x\",\n \"learning\":{\"learning_rte\":1}}",
            "spec",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("spec:2:"), "{msg}");
        assert!(msg.contains("in `learning`"), "{msg}");
        assert_eq!(e.suggestion(), Some("learning_rate"));
        let e = from_json_str::<Doc>("{\"dataset\": 3}", "spec").unwrap_err();
        assert!(matches!(e, ConfigError::Invalid(_)), "{e}");
        assert!(e.to_string().contains("dataset"), "{e}");
    }

    #[test]
    fn nearest_is_not_made_up() {
        assert_eq!(nearest("zzzzzz", &["dataset", "rounds"]), None);
        assert_eq!(
            nearest("epsilon", &["clip", "epsilon_budget", "delta"]),
            Some("epsilon_budget")
        );
        assert_eq!(
            nearest("num_leaves", &["n_trees", "max_depth", "max_bins"]),
            None
        );
    }

    #[test]
    fn unreadable_file_is_named() {
        let e = load_toml::<Doc>(Path::new("/nonexistent/job.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/job.toml"), "{e}");
    }
}
