//! The report's part of a vertical model (`models[].vertical`): who held which columns, the
//! rows it trained and was scored on, what crossed the relay, and how it compares with the
//! pooled reference and the active party alone.

use serde::{Deserialize, Serialize};

use super::{lenient, Metrics};

/// A vertical model's own figures, next to the `final_metrics` / `pooled_metrics` every
/// model entry has (the vertical model and the pooled reference on the same hold-out rows).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerticalModelReport {
    /// The `[[psi]]` job whose alignment the model trained on.
    pub psi_job: String,
    pub dataset: String,
    /// The label holder (the active party, the Paillier key's owner).
    pub active: String,
    pub parties: Vec<VerticalModelParty>,
    /// Customers every party holds, found by the PSI (the rows the model can use).
    pub aligned_rows: usize,
    pub train_rows: usize,
    pub holdout_rows: usize,
    /// `vertical_logistic`: full-batch iterations.
    #[serde(default)]
    pub iterations: Option<u32>,
    /// `vertical_gbdt`: trees grown.
    #[serde(default)]
    pub trees: Option<usize>,
    /// The active party's Paillier modulus.
    pub key_bits: u32,
    /// Messages the in-memory relay carried (training and scoring), each way.
    pub messages_active_to_passive: u64,
    pub messages_passive_to_active: u64,
    /// Payload bytes of those messages (ciphertexts, partial logits, row indices…), each way.
    pub bytes_active_to_passive: u64,
    pub bytes_passive_to_active: u64,
    /// Wall-clock seconds of the parties' training and of scoring the hold-out rows.
    #[serde(deserialize_with = "lenient::f64")]
    pub train_seconds: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub score_seconds: f64,
    /// The same model trained with the same parameters on the active party's columns only
    /// (same training rows), on the same hold-out rows.
    pub active_alone_metrics: Metrics,
    /// Largest |difference| of the hold-out scores (probabilities) from the pooled
    /// reference's.
    #[serde(deserialize_with = "lenient::f64")]
    pub max_score_diff_vs_pooled: f64,
    /// `vertical_logistic`: largest |difference| of a coefficient or the intercept from the
    /// pooled reference's.
    #[serde(default)]
    pub max_coef_diff_vs_pooled: Option<f64>,
    /// `vertical_gbdt`: every tree equals the pooled reference's (every split, gain and leaf;
    /// a passive split's column, bin and threshold at its owner).
    #[serde(default)]
    pub trees_match_pooled: Option<bool>,
    /// What each party and the relay learned.
    pub learned: Vec<String>,
}

/// One party of a vertical model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerticalModelParty {
    pub institution: String,
    /// `active` or `passive`.
    pub role: String,
    /// The schema features it contributed (raw names).
    pub columns: Vec<String>,
    /// Encoded columns (one-hot expanded).
    pub encoded_columns: usize,
}
