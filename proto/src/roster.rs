//! `roster.toml`: who is in the federation.
//!
//! Every institution has a name, the CN of its TLS client certificate (`cert_name`) and the
//! hex Ed25519 public key it signs SecAgg+ messages with. Participant ids are the indices
//! of the institutions in name-sorted order, so every party derives the same ids from the
//! same file, whatever order it lists them in. `operators` lists the certificate names
//! allowed to use the `Operator` service.
//!
//! ```toml
//! operators = ["operator"]
//!
//! [[institutions]]
//! name = "bank-a"
//! cert_name = "bank-a"
//! identity_key = "3b6a27bc…"   # 64 hex digits
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use fedsilo_crypto::msg::ParticipantId;

/// The federation's members and operators.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roster {
    pub institutions: Vec<RosterEntry>,
    /// Certificate names allowed to use the `Operator` service.
    #[serde(default)]
    pub operators: Vec<String>,
}

/// One institution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterEntry {
    /// The institution's name (also its participant node's `name`).
    pub name: String,
    /// The CN (or first DNS SAN) of its TLS client certificate.
    pub cert_name: String,
    /// Hex of its 32-byte Ed25519 public identity key.
    pub identity_key: String,
}

/// Why a roster could not be loaded, saved or accepted.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error("roster {}: cannot read", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("roster {}: cannot write", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse the roster")]
    Parse {
        path: PathBuf,
        #[source]
        source: fedsilo_config::ConfigError,
    },
    #[error("roster cannot be written as TOML")]
    Serialize(#[from] toml::ser::Error),
    #[error("roster {}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: Box<RosterError>,
    },
    #[error("roster lists no institutions")]
    NoInstitutions,
    #[error("institution #{index} has an empty {field}")]
    Empty { index: usize, field: &'static str },
    #[error("institution name {0:?} appears more than once")]
    DuplicateName(String),
    #[error("certificate name {0:?} is given to more than one institution")]
    DuplicateCertName(String),
    #[error("institutions {first:?} and {second:?} have the same identity key")]
    DuplicateKey { first: String, second: String },
    #[error("institution {name:?}: identity_key")]
    BadKey {
        name: String,
        #[source]
        problem: KeyProblem,
    },
    #[error("operator #{index} has an empty certificate name")]
    EmptyOperator { index: usize },
    #[error("more than {} institutions", u32::MAX)]
    TooMany,
}

/// Why a roster's `identity_key` is not an Ed25519 public key.
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    #[error("is not hex")]
    NotHex(#[source] hex::FromHexError),
    #[error("is {got} bytes, expected 32")]
    Length { got: usize },
}

impl Roster {
    /// Reads and [validates](Self::validate) a roster file.
    pub fn load(path: &Path) -> Result<Self, RosterError> {
        let text = std::fs::read_to_string(path).map_err(|source| RosterError::Read {
            path: path.to_owned(),
            source,
        })?;
        let roster: Roster = fedsilo_config::from_toml_str(&text, &path.display().to_string())
            .map_err(|source| RosterError::Parse {
                path: path.to_owned(),
                source,
            })?;
        roster.validate().map_err(|e| RosterError::Invalid {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        Ok(roster)
    }

    /// Writes the roster as TOML (institutions in name order).
    pub fn save(&self, path: &Path) -> Result<(), RosterError> {
        let mut sorted = self.clone();
        sorted.institutions.sort_by(|a, b| a.name.cmp(&b.name));
        let text = toml::to_string_pretty(&sorted)?;
        std::fs::write(path, text).map_err(|source| RosterError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// At least one institution; non-empty, unique names and certificate names; every
    /// identity key 64 hex digits (32 bytes), none shared; non-empty operator names.
    pub fn validate(&self) -> Result<(), RosterError> {
        if self.institutions.is_empty() {
            return Err(RosterError::NoInstitutions);
        }
        if u32::try_from(self.institutions.len()).is_err() {
            return Err(RosterError::TooMany);
        }
        let mut names = BTreeSet::new();
        let mut cert_names = BTreeSet::new();
        let mut keys = std::collections::BTreeMap::new();
        for (index, e) in self.institutions.iter().enumerate() {
            for (field, value) in [
                ("name", &e.name),
                ("cert_name", &e.cert_name),
                ("identity_key", &e.identity_key),
            ] {
                if value.trim().is_empty() {
                    return Err(RosterError::Empty { index, field });
                }
            }
            if !names.insert(e.name.as_str()) {
                return Err(RosterError::DuplicateName(e.name.clone()));
            }
            if !cert_names.insert(e.cert_name.as_str()) {
                return Err(RosterError::DuplicateCertName(e.cert_name.clone()));
            }
            let key = parse_key(&e.identity_key).map_err(|problem| RosterError::BadKey {
                name: e.name.clone(),
                problem,
            })?;
            if let Some(first) = keys.insert(key, e.name.as_str()) {
                return Err(RosterError::DuplicateKey {
                    first: first.to_owned(),
                    second: e.name.clone(),
                });
            }
        }
        if let Some(index) = self.operators.iter().position(|o| o.trim().is_empty()) {
            return Err(RosterError::EmptyOperator { index });
        }
        Ok(())
    }

    /// Institutions sorted by name, paired with their participant ids.
    pub fn sorted(&self) -> Vec<(ParticipantId, &RosterEntry)> {
        let mut v: Vec<&RosterEntry> = self.institutions.iter().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v.into_iter()
            .enumerate()
            .map(|(i, e)| (i as ParticipantId, e))
            .collect()
    }

    /// The participant id of the institution `name`: its index in name-sorted order.
    pub fn participant_id(&self, name: &str) -> Option<ParticipantId> {
        self.sorted()
            .into_iter()
            .find(|(_, e)| e.name == name)
            .map(|(id, _)| id)
    }

    /// The institution whose TLS certificate is named `cert_name`, with its participant id.
    pub fn by_cert_name(&self, cert_name: &str) -> Option<(ParticipantId, &RosterEntry)> {
        self.sorted()
            .into_iter()
            .find(|(_, e)| e.cert_name == cert_name)
    }

    /// The institution with participant id `id`.
    pub fn by_id(&self, id: ParticipantId) -> Option<&RosterEntry> {
        self.sorted().get(id as usize).map(|(_, e)| *e)
    }

    /// Whether `cert_name` may use the `Operator` service.
    pub fn is_operator(&self, cert_name: &str) -> bool {
        self.operators.iter().any(|o| o == cert_name)
    }

    /// Participant id → public identity key, for the secure-aggregation engines.
    ///
    /// Entries whose key does not parse are left out: call [`Self::validate`] first
    /// ([`Self::load`] does).
    pub fn to_crypto_roster(&self) -> fedsilo_crypto::msg::Roster {
        let mut roster = fedsilo_crypto::msg::Roster::new();
        for (id, e) in self.sorted() {
            if let Ok(key) = parse_key(&e.identity_key) {
                roster.insert(id, key);
            }
        }
        roster
    }
}

/// 64 hex digits → 32 bytes.
fn parse_key(hex_key: &str) -> Result<[u8; 32], KeyProblem> {
    let bytes = hex::decode(hex_key.trim()).map_err(KeyProblem::NotHex)?;
    let got = bytes.len();
    <[u8; 32]>::try_from(bytes).map_err(|_| KeyProblem::Length { got })
}
