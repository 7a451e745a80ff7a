//! The report's PSI part: how each vertical dataset was split, and what each PSI session
//! found, next to the true intersection only the simulator knows.

use serde::{Deserialize, Serialize};

/// One PSI job of the scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PsiJobReport {
    pub name: String,
    pub dataset: String,
    /// `finished`, or why not.
    pub state: String,
    pub finished: bool,
    pub id_format: String,
    /// `both` or `active_only`: who learns which rows are shared.
    pub delivery: String,
    /// Customers in the dataset's file (the union the simulator split).
    pub customers: usize,
    pub parties: Vec<VerticalPartyReport>,
    /// Every session the coordinator closed or failed, in order.
    pub sessions: Vec<PsiSessionReport>,
    /// What the coordinator's record of the job holds: all it learned.
    pub coordinator_learned: Vec<String>,
}

/// One party's part of a vertical dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerticalPartyReport {
    pub institution: String,
    /// `active` (label holder), `passive`, or `not aligned` by this job.
    pub role: String,
    pub holds_labels: bool,
    /// The schema features it holds (raw names).
    pub columns: Vec<String>,
    /// Encoded columns of its table (one-hot expanded).
    pub encoded_columns: usize,
    /// Customers it holds (its set size before the PSI).
    pub rows: usize,
}

/// One PSI session (one active–passive pair).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PsiSessionReport {
    pub active: String,
    pub passive: String,
    pub session: u64,
    /// `ok` or why the session failed.
    pub outcome: String,
    /// What the parties reported (0 when the session failed before reporting).
    pub active_set_size: u64,
    pub passive_set_size: u64,
    pub intersection_size: u64,
    /// The plain intersection of the two parties' customers, computed by the simulator.
    pub true_intersection_size: u64,
    /// The reported size equals the true one, and every row pair of the two alignments is
    /// the same customer and together they are exactly the true intersection (the
    /// passive side is checked only when it received the rows: `delivery = "both"`).
    pub matches_truth: bool,
    /// Aligned row pairs checked customer by customer.
    pub rows_checked: u64,
    /// Hex alignment hash both parties reported (empty when the session failed).
    pub alignment_hash: String,
    /// Coordinator's clock from the session's start to its close.
    pub elapsed_ms: f64,
    /// Time each party spent in its PSI driver (hashing, blinding, matching).
    pub active_busy_ms: f64,
    pub passive_busy_ms: f64,
    /// Relayed by the coordinator: messages and payload bytes each way.
    pub messages_active_to_passive: u64,
    pub messages_passive_to_active: u64,
    pub bytes_active_to_passive: u64,
    pub bytes_passive_to_active: u64,
}
