//! Errors of one PSI exchange, sorted by fault:
//!
//! - [`IdError`] and the input variants of [`PsiError`]: this party's own ids or calls (the
//!   caller's fault; the party has failed and sends nothing more).
//! - [`PsiError::WrongContext`], [`PsiError::UnexpectedMessage`], [`PsiError::NotReady`]:
//!   refused before touching the state ([`PsiError::keeps_state`]); the party goes on.
//! - Everything else: the peer or the relay broke the protocol (a bad signature, a garbled
//!   or replayed chunk, a point that does not decompress, counts that do not add up). The
//!   party has failed: it reveals nothing more.

use thiserror::Error;

use super::msg::{Kind, PsiContext, Role};
use crate::keys::KeyError;

/// Why one of this party's ids is refused. `row` is the 0-based position in the sequence of
/// ids given to `push_ids` (the caller maps it to a line of its file).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum IdError {
    #[error("row {row}: the id is missing or empty")]
    Empty { row: u64 },
    #[error(
        "row {row}: {character:?} at character {position} is not a digit or a separator \
         (space - . / _) of the `digits` id format"
    )]
    NotDigits {
        row: u64,
        character: char,
        position: usize,
    },
    #[error("row {row}: the id has {len} bytes after normalising, at most {max} are allowed")]
    TooLong { row: u64, len: usize, max: usize },
}

/// Why a PSI party refused a call or a message. See the module doc for who is at fault.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PsiError {
    // ---- The caller's fault.
    #[error("chunk length {len} is outside 1..={max}")]
    ChunkLen { len: usize, max: usize },
    #[error("id: {0}")]
    Id(#[from] IdError),
    #[error(
        "duplicate id: row {duplicate_row} has the same normalised id as row {first_row} \
         (refused by the `refuse` duplicates rule; `keep_first` keeps row {first_row})"
    )]
    DuplicateId { first_row: u64, duplicate_row: u64 },
    #[error("more than {max} ids")]
    TooManyIds { max: u64 },
    #[error("cannot {op} while {state}")]
    NotReady {
        op: &'static str,
        state: &'static str,
    },

    // ---- Stale, early or misrouted: refused, state kept.
    #[error("message for {got}, this exchange is {expected}")]
    WrongContext {
        expected: PsiContext,
        got: PsiContext,
    },
    #[error("unexpected {got} message while {state}")]
    UnexpectedMessage {
        got: &'static str,
        state: &'static str,
    },

    // ---- The peer or the relay broke the protocol: the party has failed.
    #[error("a message claims to come from the {got} party, which is this party's own role")]
    WrongSender { got: Role },
    #[error("the peer's Hello is not signed by its roster identity key for this exchange")]
    BadHelloSignature,
    #[error(
        "the peer's configuration differs (id format, result delivery or chunk length are \
         not the ones this party was given)"
    )]
    ConfigMismatch,
    #[error("key agreement with the peer: {0}")]
    Key(#[from] KeyError),
    #[error("message number {got} from the peer, expected number {expected} (lost, replayed or reordered)")]
    WrongSequence { expected: u64, got: u64 },
    #[error("message number {seq} from the peer does not authenticate (garbled, truncated or not from the peer): {source}")]
    Undecryptable {
        seq: u64,
        #[source]
        source: KeyError,
    },
    #[error("{kind} message out of order while {state}")]
    OutOfOrder { kind: Kind, state: &'static str },
    #[error("malformed {kind} message: {reason}")]
    Malformed { kind: Kind, reason: &'static str },
    #[error("{kind} chunk of {count} entries, at most {max} are allowed")]
    ChunkTooLarge {
        kind: Kind,
        count: usize,
        max: usize,
    },
    #[error("{kind} message with {got} entries where {expected} were due")]
    CountMismatch { kind: Kind, expected: u64, got: u64 },
    #[error("entry {index} of the peer's {kind} stream is not a valid Ristretto255 point")]
    BadPoint { kind: Kind, index: u64 },
    #[error(
        "the peer's set has the same encoding twice (entries {first} and {second} of its stream)"
    )]
    PeerDuplicate { first: u64, second: u64 },
    #[error("the intersection the active party sent is inconsistent: {reason}")]
    BadResult { reason: &'static str },
    #[error("more than {max} entries in the peer's stream")]
    PeerTooLarge { max: u64 },
    #[error("this party failed earlier and takes no more input")]
    Failed,
}

impl PsiError {
    /// True for refusals after which the party keeps its state and can go on.
    pub fn keeps_state(&self) -> bool {
        matches!(
            self,
            PsiError::WrongContext { .. }
                | PsiError::UnexpectedMessage { .. }
                | PsiError::NotReady { .. }
        )
    }
}
