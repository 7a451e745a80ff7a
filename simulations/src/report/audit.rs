//! The report's empirical privacy audit: what a membership-inference attacker achieved
//! against each released model, and what the coordinator's view of the rounds allowed.
//! Built by [`crate::audit`]; not to be confused with the audit *chain* (`audit.jsonl`,
//! [`super::Report::audit_head`]).

use fedsilo_task::Purpose;
use serde::{Deserialize, Serialize};

use super::lenient;

/// Measured leakage, next to the accountant's ε in the privacy section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// The threat model and how the attacks were run, one sentence each.
    pub method: Vec<String>,
    /// One row per audited model (and label), jobs in scenario order: the federated model,
    /// then the pooled model, then each institution's local-only model.
    pub models: Vec<ModelAudit>,
    /// Per job and purpose, what the coordinator's unmasked sums covered.
    pub coordinator_view: Vec<CoordinatorView>,
    /// Wall-clock seconds the audit took (shadow training included).
    #[serde(deserialize_with = "lenient::f64")]
    pub seconds: f64,
}

/// Two membership-inference attacks on one released model: members are rows it was trained
/// on, non-members hold-out rows of the same institutions, balanced in number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelAudit {
    /// The model's name as in the models section (`job` or `job: label`).
    pub name: String,
    pub job: String,
    /// `federated`, `pooled` or `local:<institution>`.
    pub kind: String,
    /// The model's differential privacy; `None` = trained without noise.
    pub dp: Option<AuditDp>,
    pub members: usize,
    pub non_members: usize,
    /// Loss-threshold attack (Yeom et al. 2018): score = −loss of the true label.
    #[serde(deserialize_with = "lenient::f64")]
    pub loss_auc: f64,
    /// True-positive rate at a false-positive rate ≤ 0.1 %.
    #[serde(deserialize_with = "lenient::f64")]
    pub loss_tpr_at_0_1pct: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub loss_tpr_at_1pct: f64,
    /// Offline LiRA (Carlini et al. 2022) with `shadows` shadow models.
    #[serde(deserialize_with = "lenient::f64")]
    pub lira_auc: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub lira_tpr_at_0_1pct: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub lira_tpr_at_1pct: f64,
    /// Shadow models that trained (each row is "out" of half of them).
    pub shadows: usize,
    /// Why a figure is missing, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A model's differential privacy as the audit table shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditDp {
    /// Whose participation the guarantee hides: `record` (one customer's row) or
    /// `institution` (each institution's whole clipped update).
    pub level: String,
    /// ε the accountant reported for the job.
    #[serde(deserialize_with = "lenient::f64")]
    pub epsilon: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub delta: f64,
}

/// The sums of one purpose of one job that the coordinator unmasked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorView {
    pub job: String,
    pub purpose: Purpose,
    /// Rounds whose sum was unmasked (successful rounds).
    pub sums: usize,
    /// Rounds that failed: nothing was unmasked.
    pub failed: usize,
    /// Fewest and most institutions in one unmasked sum (0 when there was none).
    pub min_institutions: usize,
    pub max_institutions: usize,
    /// The secure-aggregation threshold t of these rounds (the smallest, should it vary).
    pub threshold: usize,
    /// Unmasked sums that carried differential-privacy noise.
    pub noised: usize,
    /// What a sum of this purpose over ≥ t institutions reveals.
    pub reveals: String,
}
