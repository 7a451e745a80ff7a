//! Local scoring with an exported model: the ranked list a marketing or collections team acts
//! on. Runs entirely on the institution's premises.

use std::path::{Path, PathBuf};

use fedsilo_ml::table::Table;
use fedsilo_task::TrainedModel;

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("scoring: {0}")]
    Model(#[from] fedsilo_task::FedError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One scored customer.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    pub rank: usize,
    pub id: String,
    pub score: f64,
    /// 1 = the top 10 % by score.
    pub decile: usize,
    /// Scorecard points (higher = better credit); `None` for other models.
    pub points: Option<f64>,
}

/// Customers of `table` ranked by the model's probability for label `label` (highest first —
/// for a risk model or a scorecard, the most likely defaulters; ties by id, so the order is
/// deterministic).
pub fn rank(model: &TrainedModel, table: &Table, label: usize) -> Result<Vec<Ranked>, ScoreError> {
    let p = model.predict(table)?;
    let points = model.points(table)?;
    let mut rows: Vec<(f64, &str, Option<f64>)> = p
        .column(label)
        .iter()
        .zip(&table.ids)
        .enumerate()
        .map(|(r, (&s, id))| (s, id.as_str(), points.as_ref().map(|pts| pts[r])))
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let n = rows.len().max(1);
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, (score, id, points))| Ranked {
            rank: i + 1,
            id: id.to_string(),
            score,
            decile: i * 10 / n + 1,
            points,
        })
        .collect())
}

/// Writes one ranked CSV per model label (`out` itself for a single label, `<stem>-<label>.csv`
/// otherwise); returns (label, path, rows written).
pub fn write_rankings(
    model: &TrainedModel,
    table: &Table,
    out: &Path,
    top: Option<usize>,
) -> Result<Vec<(String, PathBuf, usize)>, ScoreError> {
    let mut written = Vec::new();
    for (l, label) in model.labels.iter().enumerate() {
        let path = if model.labels.len() == 1 {
            out.to_path_buf()
        } else {
            let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("ranked");
            let safe: String = label
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            out.with_file_name(format!("{stem}-{safe}.csv"))
        };
        let ranked = rank(model, table, l)?;
        let keep = top.unwrap_or(ranked.len()).min(ranked.len());
        let scorecard = ranked.first().is_some_and(|r| r.points.is_some());
        let mut text = String::from(if scorecard {
            "rank,id,score,decile,points\n"
        } else {
            "rank,id,score,decile\n"
        });
        for r in &ranked[..keep] {
            let id = if r.id.contains([',', '"', '\n']) {
                format!("\"{}\"", r.id.replace('"', "\"\""))
            } else {
                r.id.clone()
            };
            text.push_str(&format!("{},{},{:.6},{}", r.rank, id, r.score, r.decile));
            if let Some(p) = r.points {
                text.push_str(&format!(",{p:.1}"));
            }
            text.push('\n');
        }
        std::fs::write(&path, text).map_err(|source| ScoreError::Write {
            path: path.clone(),
            source,
        })?;
        written.push((label.clone(), path, keep));
    }
    Ok(written)
}
