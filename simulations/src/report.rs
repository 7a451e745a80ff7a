//! The regulator's report: `report.json` (every figure) and a self-contained `report.html`.
//!
//! The HTML needs no network: CSS is inline, every chart is an inline SVG drawn by
//! [`svg`], there is no script and no external font. Every piece of text taken from the
//! report is HTML-escaped.
//!
//! Non-finite numbers (a metric that could not be computed is `NaN`) are written to JSON as
//! `null`, as `serde_json` does, and read back as `NaN`, so a report with gaps still
//! round-trips through its own JSON.

use std::path::{Path, PathBuf};

use fedsilo_task::Purpose;
use serde::{Deserialize, Serialize};

pub mod audit;
pub mod charts;
mod html;
pub mod psi;
pub mod svg;
pub mod vertical;

pub use audit::AuditReport;
/// The report's stylesheet, for other self-contained pages (`fedsilo evaluate`).
pub use html::style::CSS as STYLESHEET;
pub use psi::{PsiJobReport, PsiSessionReport, VerticalPartyReport};
pub use vertical::{VerticalModelParty, VerticalModelReport};

/// Everything a simulation run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: ScenarioSummary,
    pub models: Vec<ModelReport>,
    pub rounds: Vec<RoundReport>,
    pub privacy: PrivacyReport,
    /// Hex SHA-256 head of the audit chain.
    pub audit_head: String,
    pub totals: Totals,
    /// How each of the scenario's jobs ended, in scenario order.
    #[serde(default)]
    pub jobs: Vec<JobOutcome>,
    /// The empirical privacy audit (membership inference); `None` when the scenario turned
    /// it off or the report predates it.
    #[serde(default)]
    pub audit: Option<AuditReport>,
    /// The scenario's PSI jobs (vertical datasets); empty when it has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub psi: Vec<PsiJobReport>,
}

/// How one job of the scenario ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobOutcome {
    pub name: String,
    /// `true` only for a job that ran to its end; its models' metrics are results.
    pub finished: bool,
    /// The job's final state: `finished`, or why not (`failed: <reason>`, …).
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioSummary {
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub transport: String,
    pub institutions: Vec<InstitutionSummary>,
    /// Datasets each institution narrowed to a cohort or extended with derived columns or
    /// labels (evaluated on its own rows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<DatasetSummary>,
}

/// What a dataset's expressions did at every institution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetSummary {
    pub name: String,
    /// The cohort condition, if any.
    #[serde(default)]
    pub cohort: Option<String>,
    #[serde(default)]
    pub derived: Vec<DerivedColumn>,
    #[serde(default)]
    pub derived_labels: Vec<DerivedColumn>,
    /// Rows each institution read and kept (in institution order), before the hold-out split.
    pub rows_read: Vec<usize>,
    pub rows_kept: Vec<usize>,
}

/// A derived column or label: its name and expression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DerivedColumn {
    pub name: String,
    pub expr: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstitutionSummary {
    pub name: String,
    pub rows_train: usize,
    pub rows_holdout: usize,
    #[serde(deserialize_with = "lenient::f64")]
    pub positive_rate: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    pub name: String,
    /// "risk" | "propensity" | "churn"
    pub task: String,
    /// "logistic_regression", "gbdt", ...
    pub model_kind: String,
    /// One point per training round.
    pub curve: Vec<CurvePoint>,
    pub final_metrics: Metrics,
    pub pooled_metrics: Option<Metrics>,
    /// `(false positive rate, true positive rate)`.
    #[serde(deserialize_with = "lenient::pairs")]
    pub roc: Vec<(f64, f64)>,
    /// `(population fraction, cumulative share of positives, cumulative share of negatives)`.
    #[serde(deserialize_with = "lenient::triples")]
    pub ks_curve: Vec<(f64, f64, f64)>,
    /// `(population fraction, cumulative share of positives)`.
    #[serde(deserialize_with = "lenient::pairs")]
    pub gains: Vec<(f64, f64)>,
    pub comparison: Vec<InstitutionComparison>,
    pub notes: Vec<String>,
    /// Scorecard jobs: information value per feature and the points table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorecard: Option<ScorecardReport>,
    /// Vertical models: the parties, the relay's traffic, the active party alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical: Option<VerticalModelReport>,
}

/// A scorecard as a model-validation team reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScorecardReport {
    /// e.g. "600 points at 50:1 good:bad odds, 20 points to double the odds".
    pub scaling: String,
    /// `(feature, information value, kept by the IV rule)`.
    pub iv: Vec<(String, f64, bool)>,
    pub rows: Vec<fedsilo_ml::scorecard::ScorecardRow>,
}

impl ScorecardReport {
    pub fn from_card(card: &fedsilo_ml::scorecard::Scorecard) -> Self {
        let s = &card.scaling;
        ScorecardReport {
            scaling: format!(
                "{} points at {}:1 good:bad odds, {} points to double the odds",
                s.base_score, s.base_odds, s.pdo
            ),
            iv: card
                .woe
                .features
                .iter()
                .map(|f| (f.name.clone(), f.iv, f.selected))
                .collect(),
            rows: card.rows(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub round: u64,
    pub train_loss: Option<f64>,
    pub holdout_auc: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(deserialize_with = "lenient::f64")]
    pub auc: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub ks: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub log_loss: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub top_decile_lift: f64,
}

impl Metrics {
    /// Every figure `NaN`: a model that was never evaluated.
    pub fn not_computed() -> Self {
        Metrics {
            auc: f64::NAN,
            ks: f64::NAN,
            log_loss: f64::NAN,
            top_decile_lift: f64::NAN,
        }
    }
}

impl From<&fedsilo_ml::metrics::BinaryMetrics> for Metrics {
    fn from(m: &fedsilo_ml::metrics::BinaryMetrics) -> Self {
        Metrics {
            auc: m.auc,
            ks: m.ks,
            log_loss: m.log_loss,
            top_decile_lift: m.top_decile_lift,
        }
    }
}

/// Each AUC is evaluated on that institution's own hold-out set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstitutionComparison {
    pub institution: String,
    #[serde(deserialize_with = "lenient::f64")]
    pub local_only_auc: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub federated_auc: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub pooled_auc: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    pub model: String,
    pub round: u64,
    /// What the round was for ("stats", "train", "eval", ...).
    pub purpose: Purpose,
    pub participants: Vec<String>,
    pub survivors: Vec<String>,
    pub dropped: Vec<DropEvent>,
    #[serde(deserialize_with = "lenient::named")]
    pub phase_ms: Vec<(String, f64)>,
    /// Per participant.
    pub bytes_sent: Vec<(String, u64)>,
    /// Per participant.
    pub bytes_received: Vec<(String, u64)>,
    /// "ok" or the error.
    pub outcome: String,
}

impl RoundReport {
    /// The text of a successful round's outcome (`RoundOutcome::Ok` in the engine).
    pub const OK: &'static str = "ok";

    /// Whether the round's aggregate was absorbed.
    pub fn succeeded(&self) -> bool {
        self.outcome == Self::OK
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DropEvent {
    pub institution: String,
    pub phase: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacyReport {
    pub threshold: usize,
    pub neighbours: usize,
    /// `FixedPoint::describe()`.
    pub encoding: String,
    pub coordinator_saw: Vec<String>,
    pub dp: Option<DpReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpReport {
    pub mechanism: String,
    /// Whom the guarantee protects: `record` (one customer) or `institution`.
    #[serde(default)]
    pub level: fedsilo_task::DpLevel,
    /// ε for one customer's record and for one institution's whole contribution (∞ when
    /// nothing is promised at that level, written `null` and read back as not finite);
    /// `epsilon` is the one at `level`.
    #[serde(default, deserialize_with = "lenient::f64")]
    pub epsilon_record: f64,
    #[serde(default, deserialize_with = "lenient::f64")]
    pub epsilon_institution: f64,
    /// Record level: each row's probability of taking part in a round.
    #[serde(default)]
    pub sampling_rate: Option<f64>,
    #[serde(deserialize_with = "lenient::f64")]
    pub noise_multiplier: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub clip: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub epsilon: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub delta: f64,
    pub budget: Option<f64>,
    #[serde(deserialize_with = "lenient::floats")]
    pub epsilon_per_round: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    #[serde(deserialize_with = "lenient::f64")]
    pub wall_seconds: f64,
    pub rounds: usize,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub peak_memory_bytes: Option<u64>,
}

/// Writing the report files failed; the message names the path.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot create report directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialise the report for {}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Report {
    /// Pretty-printed JSON; non-finite numbers become `null`.
    pub fn to_json(&self) -> String {
        // Serialising plain structs with string keys cannot fail; keep a non-panicking path
        // all the same.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    }

    /// The self-contained HTML report (no network, no script).
    pub fn render_html(&self) -> String {
        html::render(self)
    }

    /// Creates `out_dir` if needed and writes `report.json` and `report.html` into it.
    /// Returns their paths, JSON first.
    pub fn write(&self, out_dir: &Path) -> Result<(PathBuf, PathBuf), ReportError> {
        std::fs::create_dir_all(out_dir).map_err(|source| ReportError::CreateDir {
            path: out_dir.to_path_buf(),
            source,
        })?;
        let json_path = out_dir.join("report.json");
        let html_path = out_dir.join("report.html");
        let json = serde_json::to_string_pretty(self).map_err(|source| ReportError::Json {
            path: json_path.clone(),
            source,
        })?;
        write_file(&json_path, json.as_bytes())?;
        write_file(&html_path, self.render_html().as_bytes())?;
        Ok((json_path, html_path))
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a report.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// Deserialisers that read `null` (how JSON spells NaN and the infinities) back as `NaN`.
mod lenient {
    use serde::{Deserialize, Deserializer};

    /// An `f64` that may be `null` in JSON.
    struct F(f64);

    impl<'de> Deserialize<'de> for F {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Ok(F(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN)))
        }
    }

    pub fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(F::deserialize(d)?.0)
    }

    pub fn floats<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<F>::deserialize(d)?.into_iter().map(|v| v.0).collect())
    }

    pub fn pairs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(f64, f64)>, D::Error> {
        Ok(Vec::<(F, F)>::deserialize(d)?
            .into_iter()
            .map(|(a, b)| (a.0, b.0))
            .collect())
    }

    pub fn triples<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(f64, f64, f64)>, D::Error> {
        Ok(Vec::<(F, F, F)>::deserialize(d)?
            .into_iter()
            .map(|(a, b, c)| (a.0, b.0, c.0))
            .collect())
    }

    pub fn named<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
        Ok(Vec::<(String, F)>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect())
    }
}
