//! Errors, sorted by fault: what a peer sent ([`PeerError`]), how the protocol was set up or
//! driven ([`VerticalError::Config`], [`VerticalError::Data`], [`VerticalError::Unexpected`]),
//! and faults of the libraries underneath.

use fedsilo_ml::gbdt::GbdtError;
use fedsilo_ml::optim::OptimError;

/// A message from a peer that an honest peer would not send. The state machine that
/// refused it is unchanged: the genuine message is still accepted after it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PeerError {
    /// A message for another phase (or another iteration / tree) than the one awaited.
    #[error("unexpected message: awaiting {expected}, got {got}")]
    WrongPhase {
        expected: &'static str,
        got: &'static str,
    },
    /// A message's iteration or tree number is not the current one.
    #[error("{what}: message for round {got}, this is round {expected}")]
    WrongRound {
        what: &'static str,
        expected: u32,
        got: u32,
    },
    /// A vector of the wrong length.
    #[error("{what}: expected {expected} elements, got {got}")]
    WrongSize {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A ciphertext that is not an integer in `(0, n²)`.
    #[error("{what}[{index}]: ciphertext out of range")]
    CiphertextOutOfRange { what: &'static str, index: usize },
    /// A ciphertext that is not in the multiplicative group of n² (cannot be decrypted).
    #[error("{what}[{index}]: not a valid ciphertext")]
    Undecryptable { what: &'static str, index: usize },
    /// A decrypted value outside what the protocol's fixed-point bounds allow.
    #[error("{what}[{index}]: decrypted value out of the protocol's range")]
    PlaintextOutOfRange { what: &'static str, index: usize },
    /// A plaintext value that is not finite or out of its declared range.
    #[error("{what}[{index}]: value {value} is not finite or out of range")]
    BadValue {
        what: &'static str,
        index: usize,
        value: f64,
    },
    /// A row index outside the aligned rows, or listed twice.
    #[error("{what}: row {row} is out of range or repeated")]
    BadRow { what: &'static str, row: u32 },
    /// A node or feature the receiver does not have.
    #[error("{what}: {detail}")]
    BadReference { what: &'static str, detail: String },
    /// A public key that is too small, too large or even.
    #[error("public key of {bits} bits is not acceptable")]
    BadPublicKey { bits: u32 },
    /// A public key whose modulus is not the size the job agreed on.
    #[error("public key of {got} bits: the job's key_bits is {expected}")]
    KeyBitsMismatch { expected: u32, got: u32 },
    /// A message from a party that is not part of this session.
    #[error("message from unknown party {party}")]
    UnknownParty { party: usize },
    /// A second message from the same party in one phase.
    #[error("party {party} already answered this phase")]
    Duplicate { party: usize },
}

/// Every error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum VerticalError {
    /// A peer's message was refused (the state is unchanged).
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The protocol's parameters are not acceptable.
    #[error("configuration: {0}")]
    Config(String),
    /// A logistic-regression hyper-parameter is out of its domain.
    #[error(transparent)]
    LrConfig(#[from] crate::lr::LrConfigError),
    /// The local data cannot enter the protocol (shape, non-finite value, value beyond the
    /// fixed-point range).
    #[error("data: {0}")]
    Data(String),
    /// The caller drove the state machine out of order (API misuse).
    #[error("api misuse: {0}")]
    Misuse(&'static str),
    /// The Paillier library refused an operation.
    #[error("paillier")]
    Paillier {
        #[source]
        source: fast_paillier::Error,
    },
    /// The boosted-trees math refused a value.
    #[error(transparent)]
    Gbdt(#[from] GbdtError),
    /// The optimiser refused an update.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// The pooled reference's logistic-regression math refused the data.
    #[error(transparent)]
    Linear(#[from] fedsilo_ml::linear::LinearError),
    /// An arithmetic invariant failed (a bug, not a peer fault).
    #[error("internal: {0}")]
    Internal(&'static str),
}

impl VerticalError {
    /// The peer fault inside, if this is one.
    pub fn peer(&self) -> Option<&PeerError> {
        match self {
            VerticalError::Peer(p) => Some(p),
            _ => None,
        }
    }
}

impl PeerError {
    /// A message `got` that the current phase, awaiting `expected`, does not take.
    pub(crate) fn wrong_phase(expected: &'static str, got: &'static str) -> Self {
        PeerError::WrongPhase { expected, got }
    }
}

/// `Ok` when a message's iteration or tree `got` is the awaited `expected`; else the
/// [`PeerError::WrongRound`] that names `what`.
pub(crate) fn expect_round(what: &'static str, expected: u32, got: u32) -> Result<(), PeerError> {
    if expected == got {
        Ok(())
    } else {
        Err(PeerError::WrongRound {
            what,
            expected,
            got,
        })
    }
}

/// `Ok` when `what` has the `expected` length; else the [`PeerError::WrongSize`] naming it.
pub(crate) fn expect_len(what: &'static str, expected: usize, got: usize) -> Result<(), PeerError> {
    if expected == got {
        Ok(())
    } else {
        Err(PeerError::WrongSize {
            what,
            expected,
            got,
        })
    }
}
