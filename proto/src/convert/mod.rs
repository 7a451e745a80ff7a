//! Conversions between the wire types ([`crate::pb`]) and the core's Rust types.
//!
//! Rust → wire is `From` and cannot fail. Wire → Rust is `TryFrom` and refuses, with a
//! [`WireError`] naming the field path, anything the Rust type cannot hold: a fixed-size key
//! or a client message's signature of the wrong length, ring data that is not a whole
//! number of elements, an absent sub-message or `oneof` body, an unknown or UNSPECIFIED enum
//! value, an integer out of range, an invalid fixed-point encoding. It never panics on wire
//! input.
//!
//! Protocol rules (who may send what, when, lengths against the round configuration) are
//! the state machines' business, not this module's; a job spec's domains are
//! `JobSpec::validate`'s.
//!
//! - `secagg`: SecAgg+ messages and the values they carry.
//! - `job`: job-level envelopes, the job state, a job's metrics.
//! - `spec`: the job spec and the launch request ([`launch_spec`]).
//! - `instruction`: the step instruction and its settings; `model`: the models it carries
//!   (checked structurally where ml would index with them; see each module).

use std::fmt;

use fedsilo_crypto::encoding::EncodingError;
use fedsilo_ml::binning::BinningError;
use fedsilo_ml::gbdt::GbdtError;
use fedsilo_ml::scorecard::ScorecardError;

mod instruction;
mod job;
mod model;
mod psi;
mod secagg;
mod spec;
mod vertical;

pub use job::{encoded_len, job_state_from, refused_round};
pub use spec::{launch_request, launch_spec, LaunchSpecError, Launched};

/// Largest gRPC message a fedsilo server or client accepts (`max_decoding_message_size`,
/// `max_encoding_message_size`): 64 MiB, room for a 8M-element Z_2^64 masked input.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A wire value the Rust types cannot hold, with the path of the offending field
/// (e.g. `secagg.advertise_keys.c_pk`).
#[derive(Clone, Debug, PartialEq)]
pub struct WireError {
    /// Dotted field path from the converted message; `shares[2]` for a repeated element.
    /// Empty when the converted message itself is at fault (e.g. its oneof is empty).
    pub path: String,
    pub problem: Problem,
}

/// What is wrong with a wire field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("missing")]
    Missing,
    #[error("missing oneof body")]
    MissingOneof,
    #[error("expected {expected} bytes, got {got}")]
    WrongLength { expected: usize, got: usize },
    #[error("{len} bytes is not a multiple of {element_bytes}")]
    RaggedRing { len: usize, element_bytes: usize },
    #[error("unknown enum value {0}")]
    UnknownEnum(i32),
    #[error("enum value is UNSPECIFIED")]
    Unspecified,
    #[error("{value} is out of range (max {max})")]
    OutOfRange { value: u64, max: u64 },
    /// The values cannot make a ring vector or a fixed-point encoding (e.g. one whose sum
    /// could wrap).
    #[error("{0}")]
    Encoding(EncodingError),
    /// Two repeated fields that must have one entry each per item disagree (this field has
    /// `got` entries where `expected` were due).
    #[error("expected {expected} values, got {got}")]
    Count { expected: usize, got: usize },
    /// An index into a list of `len` items is not below `len`.
    #[error("index {index} is out of range ({len} items)")]
    Index { index: u64, len: usize },
    /// A boosted model or tree the math would index out of range or loop on.
    #[error("{0}")]
    Gbdt(GbdtError),
    /// A bin mapper whose cut points are not finite and increasing, or too many.
    #[error("{0}")]
    Binning(BinningError),
    /// Scorecard bins reading a column out of range or twice, or with bad cuts.
    #[error("{0}")]
    Scorecard(ScorecardError),
    /// The bytes of a message kept encoded ([`crate::poll::EncodedToParticipant`]) are not
    /// protobuf.
    #[error("undecodable: {0}")]
    Undecodable(prost::DecodeError),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.path, self.problem)
        }
    }
}

impl std::error::Error for WireError {}

impl WireError {
    fn new(problem: Problem) -> Self {
        WireError {
            path: String::new(),
            problem,
        }
    }

    fn at(field: &str, problem: Problem) -> Self {
        WireError {
            path: field.to_owned(),
            problem,
        }
    }

    /// Prefixes the path with the enclosing field.
    fn within(mut self, field: &str) -> Self {
        self.path = if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{field}.{}", self.path)
        };
        self
    }
}

// ---------------------------------------------------------------------------
// Field helpers (wire → Rust)
// ---------------------------------------------------------------------------

fn required<T>(v: Option<T>, field: &str) -> Result<T, WireError> {
    v.ok_or_else(|| WireError::at(field, Problem::Missing))
}

/// A required sub-message, converted, with errors placed under `field`.
fn sub<P, R>(v: Option<P>, field: &str) -> Result<R, WireError>
where
    R: TryFrom<P, Error = WireError>,
{
    R::try_from(required(v, field)?).map_err(|e| e.within(field))
}

/// A repeated sub-message, converted, with errors placed under `field[i]`.
fn each<P, R>(v: Vec<P>, field: &str) -> Result<Vec<R>, WireError>
where
    R: TryFrom<P, Error = WireError>,
{
    v.into_iter()
        .enumerate()
        .map(|(i, p)| R::try_from(p).map_err(|e| e.within(&format!("{field}[{i}]"))))
        .collect()
}

fn usize_of(v: u64, field: &str) -> Result<usize, WireError> {
    usize::try_from(v).map_err(|_| {
        WireError::at(
            field,
            Problem::OutOfRange {
                value: v,
                max: usize::MAX as u64,
            },
        )
    })
}
