//! PSI jobs (vertical federation, part 1): the job spec an operator launches with
//! `kind = "psi"`, and the job-level messages around the sealed exchange of
//! [`fedsilo_crypto::psi`].
//!
//! A PSI job names one **active** party (it holds the labels) and one or more **passive**
//! parties. The coordinator runs one exchange per passive party, in the spec's order; each
//! exchange is a *session* (numbered, never reused: a resumed job starts a fresh one). The
//! coordinator sends each of the two parties a [`PsiStart`], relays the opaque [`PsiMsg`]s
//! between them and records the sizes each party reports ([`PsiReport`]); both reports must
//! name the same alignment hash.

use fedsilo_crypto::psi::{Delivery, Duplicates, IdFormat, Role};
use serde::{Deserialize, Serialize};

/// The only value of a PSI spec's `kind`.
pub const PSI_KIND: &str = "psi";

/// Id format as the TOML spells it (see [`IdFormat`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdFormatName {
    #[default]
    Text,
    Exact,
    Digits,
}

impl From<IdFormatName> for IdFormat {
    fn from(f: IdFormatName) -> Self {
        match f {
            IdFormatName::Text => IdFormat::Text,
            IdFormatName::Exact => IdFormat::Exact,
            IdFormatName::Digits => IdFormat::Digits,
        }
    }
}

impl From<IdFormat> for IdFormatName {
    fn from(f: IdFormat) -> Self {
        match f {
            IdFormat::Text => IdFormatName::Text,
            IdFormat::Exact => IdFormatName::Exact,
            IdFormat::Digits => IdFormatName::Digits,
        }
    }
}

/// Result delivery as the TOML spells it (see [`Delivery`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryName {
    #[default]
    Both,
    ActiveOnly,
}

impl From<DeliveryName> for Delivery {
    fn from(d: DeliveryName) -> Self {
        match d {
            DeliveryName::Both => Delivery::Both,
            DeliveryName::ActiveOnly => Delivery::ActiveOnly,
        }
    }
}

impl From<Delivery> for DeliveryName {
    fn from(d: Delivery) -> Self {
        match d {
            Delivery::Both => DeliveryName::Both,
            Delivery::ActiveOnly => DeliveryName::ActiveOnly,
        }
    }
}

/// Duplicate-id rule as the TOML spells it (see [`Duplicates`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicatesName {
    #[default]
    Refuse,
    KeepFirst,
}

impl From<DuplicatesName> for Duplicates {
    fn from(d: DuplicatesName) -> Self {
        match d {
            DuplicatesName::Refuse => Duplicates::Refuse,
            DuplicatesName::KeepFirst => Duplicates::KeepFirst,
        }
    }
}

impl From<Duplicates> for DuplicatesName {
    fn from(d: Duplicates) -> Self {
        match d {
            Duplicates::Refuse => DuplicatesName::Refuse,
            Duplicates::KeepFirst => DuplicatesName::KeepFirst,
        }
    }
}

/// A PSI job as an operator writes it:
///
/// ```toml
/// kind = "psi"
/// job_id = "align-churn"          # optional
/// dataset = "customers"           # each party maps it to its own source
/// active = "bank"                 # the label holder (roster name)
/// passive = ["insurer"]           # one exchange each, in this order
/// id_column = "customer_id"       # optional: else each party's schema `id_column`
/// id_format = "text"              # text | exact | digits
/// delivery = "both"               # both | active_only
/// duplicates = "refuse"           # refuse | keep_first
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsiJobSpec {
    /// Always `"psi"` (what tells a PSI spec from a training one).
    pub kind: String,
    /// Assigned by the coordinator when empty.
    #[serde(default)]
    pub job_id: String,
    pub dataset: String,
    pub active: String,
    pub passive: Vec<String>,
    /// The column holding the customer id at every party; empty = each party's schema
    /// `id_column` (a schema without one is refused by that party).
    #[serde(default)]
    pub id_column: String,
    #[serde(default)]
    pub id_format: IdFormatName,
    #[serde(default)]
    pub delivery: DeliveryName,
    #[serde(default)]
    pub duplicates: DuplicatesName,
    /// Points per sealed chunk; 0 = [`fedsilo_crypto::psi::DEFAULT_CHUNK_LEN`].
    #[serde(default)]
    pub chunk_len: u32,
}

/// Why a PSI spec is refused, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PsiSpecError {
    #[error("kind: '{0}' is not \"psi\"")]
    Kind(String),
    #[error("dataset: empty")]
    NoDataset,
    #[error("active: empty")]
    NoActive,
    #[error("passive: name at least one passive party")]
    NoPassive,
    #[error("passive: '{0}' is named twice")]
    PassiveTwice(String),
    #[error("passive: '{0}' is the active party")]
    ActiveIsPassive(String),
    #[error("chunk_len: {len} is above {max}")]
    ChunkLen { len: u32, max: usize },
    #[error("{field}: '{name}' is not in the roster")]
    NotInRoster { field: &'static str, name: String },
}

impl PsiJobSpec {
    /// Checks what serde cannot (the roster is checked by the coordinator).
    pub fn validate(&self) -> Result<(), PsiSpecError> {
        if self.kind != PSI_KIND {
            return Err(PsiSpecError::Kind(self.kind.clone()));
        }
        if self.dataset.is_empty() {
            return Err(PsiSpecError::NoDataset);
        }
        if self.active.is_empty() {
            return Err(PsiSpecError::NoActive);
        }
        if self.passive.is_empty() {
            return Err(PsiSpecError::NoPassive);
        }
        for (i, p) in self.passive.iter().enumerate() {
            if *p == self.active {
                return Err(PsiSpecError::ActiveIsPassive(p.clone()));
            }
            if self.passive.iter().take(i).any(|q| q == p) {
                return Err(PsiSpecError::PassiveTwice(p.clone()));
            }
        }
        if self.chunk_len as usize > fedsilo_crypto::psi::MAX_CHUNK_LEN {
            return Err(PsiSpecError::ChunkLen {
                len: self.chunk_len,
                max: fedsilo_crypto::psi::MAX_CHUNK_LEN,
            });
        }
        Ok(())
    }

    /// Points per chunk in force.
    pub fn chunk_len(&self) -> usize {
        if self.chunk_len == 0 {
            fedsilo_crypto::psi::DEFAULT_CHUNK_LEN
        } else {
            self.chunk_len as usize
        }
    }
}

/// Coordinator → one party: open session `session` of `job_id` in `role` against `peer`
/// (a roster name; the party takes the peer's identity key from its own roster file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PsiStart {
    pub job_id: String,
    pub session: u64,
    pub role: Role,
    pub peer: String,
    pub dataset: String,
    /// Empty = the schema's `id_column`.
    pub id_column: String,
    pub id_format: IdFormat,
    pub delivery: Delivery,
    pub duplicates: Duplicates,
    pub chunk_len: u32,
}

/// Party → coordinator at the end of a session: the sizes it may reveal and the alignment
/// hash (the same at both parties), after it persisted its alignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsiReport {
    pub job_id: String,
    pub session: u64,
    pub own_set_size: u64,
    pub duplicates_dropped: u64,
    pub peer_set_size: u64,
    pub intersection_size: u64,
    /// 32 bytes.
    pub intersection_hash: [u8; 32],
}
