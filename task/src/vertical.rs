//! Vertical model jobs (vertical federation, part 2): the job spec an operator launches with
//! `kind = "vertical_logistic"` or `kind = "vertical_gbdt"` (training) or
//! `kind = "vertical_score"` (scoring customers with a trained vertical model), and the
//! job-level messages around the sealed exchange of [`fedsilo_vertical`].
//!
//! A scoring job names the finished training job (`model_job`) and a finished PSI job that
//! aligned the customers to score (`psi_job`, with the model job's parties). Each party
//! loads its own part of the model; each passive party sends its partial logits (LR) or the
//! direction of every row at each of its splits (GBDT) for every common customer, sealed;
//! only the active party combines them into scores, and writes the ranked list.
//!
//! A vertical job trains on the customers a finished PSI job aligned (`psi_job`, whose
//! `delivery` must be `both`): the active party (the label holder, the PSI job's active
//! party) and one or more passive parties (each a passive party of the PSI job; each pair
//! has its own alignment). The coordinator runs the training as one *session* among them
//! (numbered, never reused, as PSI's): it sends each a [`VerticalStart`], relays the sealed
//! messages between the active party and each passive party unread
//! (`fedsilo_crypto::psi::channel`: PSI's envelopes, kind `vertical`, one channel per
//! passive party; passive parties never talk to each other), records the active party's
//! per-iteration or per-tree progress ([`VerticalProgress`]) and closes the session when
//! every party has reported ([`VerticalReport`]) the same number of rows and steps.
//!
//! With several passive parties the model trains (and a scoring job scores) on the
//! customers aligned in *every* pair ([`common_rows`]): the active party computes them from
//! its alignments and sends each passive party, sealed, the positions of those rows in that
//! pair's alignment order ([`check_common_positions`]); the hold-out split is drawn over the
//! common rows, the same at every party.

use fedsilo_crypto::psi::{Delivery, IdFormat, Role};
use fedsilo_ml::gbdt::GbdtParams;
use fedsilo_ml::optim::ServerOptimizer;
use fedsilo_vertical::lr::LrConfig;
use serde::{Deserialize, Serialize};

/// The `kind`s of a vertical job spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerticalKind {
    /// Vertical logistic regression ([`fedsilo_vertical::lr`]).
    VerticalLogistic,
    /// SecureBoost ([`fedsilo_vertical::boost`]).
    VerticalGbdt,
    /// Scoring aligned customers with a trained vertical model (of either kind).
    VerticalScore,
}

impl VerticalKind {
    pub fn name(self) -> &'static str {
        match self {
            VerticalKind::VerticalLogistic => "vertical_logistic",
            VerticalKind::VerticalGbdt => "vertical_gbdt",
            VerticalKind::VerticalScore => "vertical_score",
        }
    }

    /// What one step of the job is called (status, audit).
    pub fn step_name(self) -> &'static str {
        match self {
            VerticalKind::VerticalLogistic => "iteration",
            VerticalKind::VerticalGbdt => "tree",
            VerticalKind::VerticalScore => "scoring pass",
        }
    }

    /// A training kind (not scoring).
    pub fn trains(self) -> bool {
        !matches!(self, VerticalKind::VerticalScore)
    }
}

/// The Paillier modulus a real job uses (the default).
pub const DEFAULT_KEY_BITS: u32 = 2048;
/// The smallest modulus at all: the `fedsilo_vertical` crate's floor, accepted only with
/// `test_key = true` (tests that need speed).
pub const TEST_KEY_BITS: u32 = 1024;

/// The hold-out fraction of a training job by default.
pub const DEFAULT_HOLDOUT: f64 = 0.2;

/// A vertical job as an operator writes it:
///
/// ```toml
/// kind = "vertical_logistic"      # or "vertical_gbdt"
/// job_id = "churn-vlr"            # optional
/// psi_job = "align-churn"         # a finished PSI job with delivery = "both"
/// active = "bank"                 # the PSI job's active party (it holds the labels)
/// passive = ["insurer"]           # passive parties of the PSI job (one or more, distinct)
/// key_bits = 2048                 # Paillier modulus; 2048..=4096
/// label = "churned"               # optional: else the active schema's first label
/// holdout_fraction = 0.2          # seeded by the job id; scored jointly at the end
/// # vertical_logistic (the simulator's [[vertical_models]] keys):
/// iterations = 50
/// l2 = 1e-4
/// pos_weight = 1.0
/// optimizer = { kind = "fed_adam", lr = 0.1, beta1 = 0.9, beta2 = 0.99, eps = 1e-3 }
/// # vertical_gbdt:
/// # [gbdt]
/// # n_trees = 20
/// # max_depth = 3
/// ```
///
/// and a scoring job:
///
/// ```toml
/// kind = "vertical_score"
/// model_job = "churn-vlr"         # a finished vertical_logistic or vertical_gbdt job
/// psi_job = "align-new-customers" # a finished PSI job (delivery = "both") with the same parties
/// # active, passive: optional, the model job's parties
/// # label = "churned"             # optional: the AUC on the scored customers, if labelled
/// ```
///
/// A scoring job takes none of the training keys (`key_bits`, `test_key`,
/// `holdout_fraction`, `iterations`, `l2`, `pos_weight`, `optimizer`, `gbdt`); a training
/// job takes no `model_job`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerticalJobSpec {
    pub kind: VerticalKind,
    /// Assigned by the coordinator when empty.
    #[serde(default)]
    pub job_id: String,
    pub psi_job: String,
    /// Scoring: the vertical training job whose model scores the customers.
    #[serde(default)]
    pub model_job: String,
    /// Empty (scoring only): the model job's.
    #[serde(default)]
    pub active: String,
    #[serde(default)]
    pub passive: Vec<String>,
    /// Training: the Paillier modulus; absent = [`DEFAULT_KEY_BITS`].
    #[serde(default)]
    pub key_bits: Option<u32>,
    /// Allows a 1,024-bit key (the crate's floor): for tests only, never for real data.
    #[serde(default)]
    pub test_key: bool,
    /// The active party's label column; empty = its schema's first label.
    #[serde(default)]
    pub label: String,
    /// Training: absent = [`DEFAULT_HOLDOUT`].
    #[serde(default)]
    pub holdout_fraction: Option<f64>,
    #[serde(default)]
    pub iterations: Option<u32>,
    #[serde(default)]
    pub l2: Option<f64>,
    #[serde(default)]
    pub pos_weight: Option<f64>,
    #[serde(default)]
    pub optimizer: Option<ServerOptimizer>,
    #[serde(default)]
    pub gbdt: Option<GbdtParams>,
}

/// Why a vertical spec is refused, naming the field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum VerticalSpecError {
    #[error("psi_job: empty (name the finished PSI job whose alignment the model trains on)")]
    NoPsiJob,
    #[error("active: empty")]
    NoActive,
    #[error("passive: empty (name one or more passive parties of the PSI job)")]
    NoPassive,
    #[error("passive: '{0}' is named twice")]
    DuplicatePassive(String),
    #[error("passive: '{0}' is the active party")]
    ActiveIsPassive(String),
    #[error(
        "key_bits: {bits} is not allowed; a job needs an even size in 2048..=4096 \
         ({TEST_KEY_BITS} only with test_key = true, for tests)"
    )]
    KeyBits { bits: u32 },
    #[error("holdout_fraction: {0} must be in (0, 0.5]")]
    Holdout(f64),
    #[error("model_job: empty (a vertical_score job names the finished vertical training job whose model scores)")]
    NoModelJob,
    #[error("model_job: applies to kind = \"vertical_score\" (a training job makes the model)")]
    ModelJobInTraining,
    #[error(
        "{field}: a vertical_score job does not train (remove it; the model job's settings apply)"
    )]
    NotForScoring { field: &'static str },
    #[error("model_job: '{0}' is not a vertical training job of this coordinator")]
    UnknownModelJob(String),
    #[error("model_job: '{job}' is {state}; scoring needs a finished vertical training job")]
    ModelNotFinished { job: String, state: String },
    #[error("{field}: '{name}' is not the model job's {field} party ('{model}')")]
    NotModelParty {
        field: &'static str,
        name: String,
        model: String,
    },
    #[error("{field}: applies to kind = \"{applies}\"")]
    WrongKind {
        field: &'static str,
        applies: &'static str,
    },
    /// The logistic-regression keys (`iterations`, `l2`, `pos_weight`, `optimizer`).
    #[error("vertical_logistic parameters")]
    LrParameters(#[source] fedsilo_vertical::lr::LrConfigError),
    /// The `[gbdt]` table.
    #[error("gbdt")]
    GbdtParameters(#[source] fedsilo_ml::gbdt::GbdtError),
    #[error("{field}: '{name}' is not in the roster")]
    NotInRoster { field: &'static str, name: String },
    #[error("psi_job: '{0}' is not a PSI job of this coordinator")]
    UnknownPsiJob(String),
    #[error("psi_job: '{job}' is {state}; a vertical job needs a finished PSI job")]
    PsiNotFinished { job: String, state: String },
    #[error("psi_job: '{0}' ran with delivery = \"active_only\"; the passive party needs its aligned rows (delivery = \"both\")")]
    PsiActiveOnly(String),
    #[error("{field}: '{name}' is not the PSI job's {field} party ('{psi}')")]
    NotPsiParty {
        field: &'static str,
        name: String,
        psi: String,
    },
}

impl VerticalJobSpec {
    /// Checks what serde cannot (the roster and the PSI job are checked by the coordinator).
    pub fn validate(&self) -> Result<(), VerticalSpecError> {
        if self.psi_job.is_empty() {
            return Err(VerticalSpecError::NoPsiJob);
        }
        if self.kind == VerticalKind::VerticalScore {
            return self.validate_scoring();
        }
        if !self.model_job.is_empty() {
            return Err(VerticalSpecError::ModelJobInTraining);
        }
        if self.active.is_empty() {
            return Err(VerticalSpecError::NoActive);
        }
        self.check_parties()?;
        let bits = self.key_bits();
        let bits_ok = bits % 2 == 0
            && ((2048..=4096).contains(&bits) || (self.test_key && bits == TEST_KEY_BITS));
        if !bits_ok {
            return Err(VerticalSpecError::KeyBits { bits });
        }
        let holdout = self.holdout_fraction();
        if !(holdout > 0.0 && holdout <= 0.5) {
            return Err(VerticalSpecError::Holdout(holdout));
        }
        match self.kind {
            VerticalKind::VerticalLogistic => {
                if self.gbdt.is_some() {
                    return Err(VerticalSpecError::WrongKind {
                        field: "gbdt",
                        applies: "vertical_gbdt",
                    });
                }
                self.lr_config()
                    .validate()
                    .map_err(VerticalSpecError::LrParameters)?;
            }
            VerticalKind::VerticalGbdt => {
                for (field, given) in [
                    ("iterations", self.iterations.is_some()),
                    ("l2", self.l2.is_some()),
                    ("pos_weight", self.pos_weight.is_some()),
                    ("optimizer", self.optimizer.is_some()),
                ] {
                    if given {
                        return Err(VerticalSpecError::WrongKind {
                            field,
                            applies: "vertical_logistic",
                        });
                    }
                }
                self.gbdt_params()
                    .validate()
                    .map_err(VerticalSpecError::GbdtParameters)?;
            }
            VerticalKind::VerticalScore => {}
        }
        Ok(())
    }

    /// One or more distinct passive parties, none the active one (parties may be empty in a
    /// scoring spec until the coordinator fills them in from the model job).
    fn check_parties(&self) -> Result<(), VerticalSpecError> {
        if self.passive.is_empty() {
            return Err(VerticalSpecError::NoPassive);
        }
        if let Some(p) = self.passive.iter().find(|p| **p == self.active) {
            return Err(VerticalSpecError::ActiveIsPassive(p.clone()));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(p) = self.passive.iter().find(|p| !seen.insert(p.as_str())) {
            return Err(VerticalSpecError::DuplicatePassive(p.clone()));
        }
        Ok(())
    }

    fn validate_scoring(&self) -> Result<(), VerticalSpecError> {
        if self.model_job.is_empty() {
            return Err(VerticalSpecError::NoModelJob);
        }
        for (field, given) in [
            ("key_bits", self.key_bits.is_some()),
            ("test_key", self.test_key),
            ("holdout_fraction", self.holdout_fraction.is_some()),
            ("iterations", self.iterations.is_some()),
            ("l2", self.l2.is_some()),
            ("pos_weight", self.pos_weight.is_some()),
            ("optimizer", self.optimizer.is_some()),
            ("gbdt", self.gbdt.is_some()),
        ] {
            if given {
                return Err(VerticalSpecError::NotForScoring { field });
            }
        }
        if !self.passive.is_empty() || !self.active.is_empty() {
            self.check_parties()?;
        }
        Ok(())
    }

    /// The Paillier modulus of a training job.
    pub fn key_bits(&self) -> u32 {
        self.key_bits.unwrap_or(DEFAULT_KEY_BITS)
    }

    /// The hold-out fraction of a training job (a scoring job holds nothing out).
    pub fn holdout_fraction(&self) -> f64 {
        self.holdout_fraction.unwrap_or(DEFAULT_HOLDOUT)
    }

    /// The LR configuration every party uses (the simulator's defaults filled in).
    pub fn lr_config(&self) -> LrConfig {
        let optimizer = self.optimizer.clone().unwrap_or(ServerOptimizer::FedAdam {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-3,
        });
        let mut cfg = LrConfig::new(self.iterations.unwrap_or(50), optimizer);
        cfg.l2 = self.l2.unwrap_or(1e-4);
        cfg.pos_weight = self.pos_weight.unwrap_or(1.0);
        cfg
    }

    /// The boosting parameters (the defaults when none given).
    pub fn gbdt_params(&self) -> GbdtParams {
        self.gbdt.clone().unwrap_or_default()
    }

    /// Iterations (LR) or trees (GBDT) the job runs.
    pub fn total_steps(&self) -> u64 {
        match self.kind {
            VerticalKind::VerticalLogistic => u64::from(self.lr_config().iterations),
            VerticalKind::VerticalGbdt => self.gbdt_params().n_trees as u64,
            VerticalKind::VerticalScore => 1,
        }
    }

    /// What both parties must agree on before the channel opens: SHA-256 of a domain tag
    /// and the spec (the parameters, the parties, the PSI job).
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"fedsilo-vertical-v1 session config");
        h.update(serde_json::to_vec(self).unwrap_or_default());
        h.finalize().into()
    }

    /// The configuration digest of the sealed channel between the active party and passive
    /// party `index` (its position in `passive`): with one passive party the spec's
    /// [`VerticalJobSpec::digest`] (as before several were run); with several, SHA-256 of a
    /// domain tag, that digest, the index and the party's name, so that each pair's channel
    /// is bound to its pair (a Hello of one channel is refused on another).
    pub fn channel_digest(&self, index: usize) -> [u8; 32] {
        use sha2::Digest;
        if self.passive.len() <= 1 {
            return self.digest();
        }
        let name = self.passive.get(index).map_or("", String::as_str);
        let mut h = sha2::Sha256::new();
        h.update(b"fedsilo-vertical-v1 pair channel");
        h.update(self.digest());
        h.update((index as u64).to_le_bytes());
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.finalize().into()
    }

    /// The aligned positions held out (sorted), seeded by the job id: both parties draw the
    /// same ones. At least one row on each side; none in a scoring job.
    pub fn holdout_positions(&self, n: usize) -> Vec<usize> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        use sha2::Digest;
        if n < 2 || !self.kind.trains() {
            return Vec::new();
        }
        let seed: [u8; 32] =
            sha2::Sha256::digest(format!("fedsilo vertical holdout/{}", self.job_id).as_bytes())
                .into();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::from_seed(seed));
        let k = ((n as f64) * self.holdout_fraction())
            .round()
            .clamp(1.0, (n - 1) as f64) as usize;
        let mut hold: Vec<usize> = order.into_iter().take(k).collect();
        hold.sort_unstable();
        hold
    }
}

/// Coordinator → one party: open session `session` of the vertical job in `role` against
/// `peer` (a roster name; the party takes the peer's identity key from its own roster file).
/// The PSI job's alignment to train on is named by its job, session and hash.
///
/// With several passive parties the active party's `peer`, `psi_session` and `psi_hash` are
/// those of the first passive party (`spec.passive[0]`) and `more_passive` names the others'
/// pairs in the spec's order; a passive party's are its own pair's, and `passive_index` is
/// its position in `spec.passive` (0 at the active party).
#[derive(Clone, Debug, PartialEq)]
pub struct VerticalStart {
    pub spec: VerticalJobSpec,
    pub session: u64,
    pub role: Role,
    pub peer: String,
    pub dataset: String,
    /// Empty = the schema's `id_column`.
    pub id_column: String,
    pub id_format: IdFormat,
    pub delivery: Delivery,
    pub psi_session: u64,
    /// The alignment hash the PSI job recorded (32 bytes).
    pub psi_hash: [u8; 32],
    /// A passive party: its index in `spec.passive`; the active party: 0.
    pub passive_index: u32,
    /// The active party, with several passive parties: the pairs of passive parties 1.. .
    pub more_passive: Vec<VerticalPair>,
}

/// One (active, passive) pair's PSI alignment, as a [`VerticalStart`] names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerticalPair {
    pub passive: String,
    pub psi_session: u64,
    pub psi_hash: [u8; 32],
}

impl VerticalStart {
    /// The pairs of this session's channels, one per peer: at the active party every
    /// passive party's, in the spec's order; at a passive party its own, whose `passive`
    /// is then the peer's name (the active party's), as `peer` is.
    pub fn pairs(&self) -> Vec<VerticalPair> {
        std::iter::once(VerticalPair {
            passive: self.peer.clone(),
            psi_session: self.psi_session,
            psi_hash: self.psi_hash,
        })
        .chain(self.more_passive.iter().cloned())
        .collect()
    }
}

/// Why a passive party refuses the list of common rows the active party sent
/// ([`check_common_positions`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommonRowsError {
    #[error(
        "the common-rows list names position {position}, beyond this party's {rows} aligned rows"
    )]
    OutOfRange { position: u32, rows: usize },
    #[error("the common-rows list names position {0} twice")]
    Duplicate(u32),
    #[error("the common-rows list is empty: no customer is aligned with every passive party")]
    Empty,
}

/// The rows every pair aligned, from the active party's alignments (its own dataset rows in
/// each pair's alignment order, the pairs in the spec's order). The common order is the first
/// pair's alignment order restricted to the rows aligned in every pair (with one pair: all
/// its rows, in its order). Returns the active party's dataset rows in the common order and,
/// per pair, the positions (in that pair's alignment order) of the common rows in the common
/// order — what passive party k keeps of its aligned rows.
pub fn common_rows(pairs: &[Vec<u32>]) -> (Vec<u32>, Vec<Vec<u32>>) {
    use std::collections::BTreeMap;
    let index: Vec<BTreeMap<u32, u32>> = pairs
        .iter()
        .map(|rows| {
            rows.iter()
                .enumerate()
                .map(|(pos, &row)| (row, pos as u32))
                .collect()
        })
        .collect();
    let first = pairs.first().cloned().unwrap_or_default();
    let common: Vec<u32> = first
        .into_iter()
        .filter(|row| index.iter().all(|m| m.contains_key(row)))
        .collect();
    let positions = index
        .iter()
        .map(|m| {
            common
                .iter()
                .filter_map(|row| m.get(row).copied())
                .collect()
        })
        .collect();
    (common, positions)
}

/// A passive party's check of the common-rows list against its `rows` aligned rows: every
/// position within them and none twice (the list is in the common order, so it need not
/// be sorted), and at least one.
pub fn check_common_positions(positions: &[u32], rows: usize) -> Result<(), CommonRowsError> {
    if positions.is_empty() {
        return Err(CommonRowsError::Empty);
    }
    let mut seen = std::collections::BTreeSet::new();
    for &p in positions {
        if p as usize >= rows {
            return Err(CommonRowsError::OutOfRange { position: p, rows });
        }
        if !seen.insert(p) {
            return Err(CommonRowsError::Duplicate(p));
        }
    }
    Ok(())
}

/// Active party → coordinator: `step` iterations (LR) or trees (GBDT) are complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerticalProgress {
    pub job_id: String,
    pub session: u64,
    pub step: u64,
    /// The session continues an earlier one from this many completed steps (both parties
    /// held their state there; 0 = trained from the start).
    #[serde(default)]
    pub resumed_from: u64,
}

/// Party → coordinator at the end of a session, after it wrote its part of the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerticalReport {
    pub job_id: String,
    pub session: u64,
    /// Aligned rows, training rows, hold-out rows.
    pub rows: u64,
    pub train_rows: u64,
    pub holdout_rows: u64,
    /// Iterations or trees done.
    pub steps: u64,
    /// The active party's hold-out AUC of the model scored jointly (the passive party: none).
    pub holdout_auc: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<VerticalJobSpec, String> {
        fedsilo_config::from_toml_str::<VerticalJobSpec>(text, "spec")
            .map_err(|e| fedsilo_config::display_chain(&e))
    }

    const TRAIN: &str = "kind = \"vertical_logistic\"\npsi_job = \"align\"\nactive = \"bank\"\npassive = [\"insurer\"]\n";
    const SCORE: &str =
        "kind = \"vertical_score\"\npsi_job = \"align-june\"\nmodel_job = \"churn-vlr\"\n";

    /// A model parameter out of its domain is refused with the field and the value.
    #[test]
    fn model_parameters_out_of_their_domain_are_refused_naming_the_field() {
        let s = parse(&format!("{TRAIN}iterations = 0\n")).unwrap();
        let e = s.validate().unwrap_err();
        assert_eq!(
            e,
            VerticalSpecError::LrParameters(fedsilo_vertical::lr::LrConfigError::Iterations(0))
        );
        let text = fedsilo_config::display_chain(&e);
        assert!(
            text.contains("iterations 0 must be in 1..=100000"),
            "{text}"
        );
        let s = parse(&format!("{TRAIN}l2 = -1.0\n")).unwrap();
        assert!(matches!(
            s.validate(),
            Err(VerticalSpecError::LrParameters(
                fedsilo_vertical::lr::LrConfigError::L2(_)
            ))
        ));
        let gbdt = TRAIN.replace("vertical_logistic", "vertical_gbdt");
        let s = parse(&format!("{gbdt}[gbdt]\nn_trees = 0\n")).unwrap();
        let e = s.validate().unwrap_err();
        assert!(matches!(e, VerticalSpecError::GbdtParameters(_)), "{e:?}");
        let text = fedsilo_config::display_chain(&e);
        assert!(
            text.starts_with("gbdt: ") && text.contains("n_trees"),
            "{text}"
        );
    }

    #[test]
    fn a_training_spec_takes_the_defaults_and_no_model_job() {
        let s = parse(TRAIN).unwrap();
        s.validate().unwrap();
        assert_eq!((s.key_bits(), s.holdout_fraction()), (2048, 0.2));
        assert_eq!(s.holdout_positions(100).len(), 20);
        let s = parse(&format!("{TRAIN}model_job = \"x\"\n")).unwrap();
        assert_eq!(s.validate(), Err(VerticalSpecError::ModelJobInTraining));
    }

    #[test]
    fn passive_parties_are_one_or_more_distinct_parties_other_than_the_active_one() {
        let two = parse(&TRAIN.replace("[\"insurer\"]", "[\"insurer\", \"telco\"]")).unwrap();
        two.validate().unwrap();
        for (list, want) in [
            ("[]", VerticalSpecError::NoPassive),
            (
                "[\"insurer\", \"insurer\"]",
                VerticalSpecError::DuplicatePassive("insurer".into()),
            ),
            (
                "[\"insurer\", \"bank\"]",
                VerticalSpecError::ActiveIsPassive("bank".into()),
            ),
        ] {
            let s = parse(&TRAIN.replace("[\"insurer\"]", list)).unwrap();
            assert_eq!(s.validate(), Err(want), "{list}");
        }
        // One passive party: the channel digest is the spec's; several: one per pair.
        let one = parse(TRAIN).unwrap();
        assert_eq!(one.channel_digest(0), one.digest());
        assert_ne!(two.channel_digest(0), two.channel_digest(1));
        assert_ne!(two.channel_digest(0), two.digest());
    }

    #[test]
    fn the_common_rows_are_those_aligned_in_every_pair_in_the_first_pairs_order() {
        // The bank's dataset rows in each pair's alignment order.
        let pairs = vec![vec![7, 3, 9, 1], vec![1, 5, 7, 9]];
        let (common, positions) = common_rows(&pairs);
        assert_eq!(common, vec![7, 9, 1]);
        assert_eq!(positions, vec![vec![0, 2, 3], vec![2, 3, 0]]);
        for (rows, pos) in pairs.iter().zip(&positions) {
            let picked: Vec<u32> = pos.iter().map(|&p| rows[p as usize]).collect();
            assert_eq!(picked, common);
            check_common_positions(pos, rows.len()).unwrap();
        }
        // One pair: every row, in its order.
        let (c, p) = common_rows(&pairs[..1]);
        assert_eq!((c, p), (pairs[0].clone(), vec![vec![0, 1, 2, 3]]));
        assert_eq!(
            check_common_positions(&[0, 4], 4),
            Err(CommonRowsError::OutOfRange {
                position: 4,
                rows: 4
            })
        );
        assert_eq!(
            check_common_positions(&[2, 0, 2], 4),
            Err(CommonRowsError::Duplicate(2))
        );
        assert_eq!(check_common_positions(&[], 4), Err(CommonRowsError::Empty));
    }

    #[test]
    fn a_scoring_spec_names_its_model_and_refuses_every_training_key() {
        let s = parse(SCORE).unwrap();
        s.validate().unwrap();
        assert!(!s.kind.trains());
        assert_eq!(s.total_steps(), 1);
        assert!(
            s.holdout_positions(100).is_empty(),
            "a scoring job holds nothing out"
        );
        let s = parse(&SCORE.replace("model_job = \"churn-vlr\"\n", "")).unwrap();
        assert_eq!(s.validate(), Err(VerticalSpecError::NoModelJob));
        for (key, line) in [
            ("key_bits", "key_bits = 2048"),
            ("test_key", "test_key = true"),
            ("holdout_fraction", "holdout_fraction = 0.2"),
            ("iterations", "iterations = 5"),
            ("l2", "l2 = 0.1"),
            ("pos_weight", "pos_weight = 2.0"),
            ("gbdt", "[gbdt]\nn_trees = 3"),
        ] {
            let s = parse(&format!("{SCORE}{line}\n")).unwrap();
            assert_eq!(
                s.validate(),
                Err(VerticalSpecError::NotForScoring { field: key }),
                "{line}"
            );
        }
        // Parties are optional, but checked when given.
        let s = parse(&format!("{SCORE}active = \"bank\"\npassive = [\"bank\"]\n")).unwrap();
        assert!(matches!(
            s.validate(),
            Err(VerticalSpecError::ActiveIsPassive(_))
        ));
        let e = parse(&format!("{SCORE}model_jbo = \"x\"\n")).unwrap_err();
        assert!(e.contains("model_jbo") && e.contains("model_job"), "{e}");
    }
}
