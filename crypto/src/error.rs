//! Errors of one secure-aggregation round, sorted by fault (as in rustls):
//!
//! - [`ConfigError`]: the round's configuration cannot work (the caller's fault).
//! - [`ProtocolError`]: the server refused one client message. Either the peer misbehaved
//!   ([`ProtocolError::PeerMisbehaved`] with a [`Misbehaviour`]) or the message came at the
//!   wrong time ([`ProtocolError::UnexpectedMessage`]). The round goes on.
//! - [`RoundError`]: the round itself failed (too few participants left, a secret could not
//!   be rebuilt). No sum is output.
//! - [`ClientError`]: a client refused a server request, or could not start.

use thiserror::Error;

use crate::encoding::Modulus;
use crate::graph::GraphError;
use crate::keys::KeyError;
use crate::msg::{ParticipantId, Phase, RoundContext, ShareKind};
use crate::shamir::ShamirError;

/// A round configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("participants must be sorted and unique: {first} is followed by {second}")]
    ParticipantsNotSorted {
        first: ParticipantId,
        second: ParticipantId,
    },
    #[error("a round needs at least 2 participants, got {n}")]
    TooFewParticipants { n: usize },
    #[error("vector length {len} is outside 1..={max}")]
    VectorLength { len: usize, max: usize },
    #[error(
        "threshold {threshold} must be more than half of the neighbour degree {degree} and at \
         most {degree}"
    )]
    Threshold { threshold: usize, degree: usize },
    #[error("neighbour degree {degree} exceeds {max}: Shamir share indices are 1..=255")]
    DegreeTooLarge { degree: usize, max: usize },
    #[error("participant {id} has no identity key in the roster")]
    NotInRoster { id: ParticipantId },
    #[error("neighbour graph: {0}")]
    Graph(#[from] GraphError),
}

/// How a peer broke the protocol. Carried by [`ProtocolError::PeerMisbehaved`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Misbehaviour {
    #[error("the sender is not a participant of this round")]
    UnknownSender,
    #[error("the message claims to come from {claimed}")]
    SenderMismatch { claimed: ParticipantId },
    #[error("the message is for {got}, this round is {expected}")]
    WrongRound {
        expected: RoundContext,
        got: RoundContext,
    },
    #[error("the sender was not asked to take part in phase {phase}")]
    NotAsked { phase: Phase },
    #[error("second message in the same phase")]
    DuplicateMessage,
    #[error("signature does not verify against the roster key")]
    BadSignature,
    /// The signature of a ShareKeys, MaskedInput or UnmaskShares message does not verify
    /// against the sender's roster key over this job, round, phase, sender and content: the
    /// message was replayed from another round or job, relabelled, or altered after signing.
    #[error(
        "the {phase} message's signature does not verify against the sender's roster key \
         for this job, round and content (replayed, relabelled or altered)"
    )]
    BadMessageSignature { phase: Phase },
    #[error("wrong length: expected {expected}, got {got}")]
    WrongLength { expected: usize, got: usize },
    #[error("wrong modulus: expected {expected}, got {got}")]
    WrongModulus { expected: Modulus, got: Modulus },
    #[error("{peer} is not one of the sender's neighbours in this round")]
    NotANeighbour { peer: ParticipantId },
    #[error("two shares for peer {peer}")]
    DuplicateShare { peer: ParticipantId },
    #[error("the sender holds no share of {owner}'s secrets")]
    NotAHolder { owner: ParticipantId },
    #[error("share of {owner}'s {got} where the {expected} was asked for")]
    WrongShareKind {
        owner: ParticipantId,
        expected: ShareKind,
        got: ShareKind,
    },
    #[error("share of {owner} has x = {got}, the sender's index is {expected}")]
    WrongShareIndex {
        owner: ParticipantId,
        expected: u8,
        got: u8,
    },
    #[error("share of {owner}'s secret is inconsistent with the others")]
    InconsistentShare { owner: ParticipantId },
}

/// Why the server refused one client message. The round continues; the refusal is also
/// reported as `ServerEvent::Refused`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("participant {from} misbehaved: {kind}")]
    PeerMisbehaved {
        from: ParticipantId,
        kind: Misbehaviour,
    },
    #[error("unexpected {got} message (expecting {})", phase_or_none(*.expected))]
    UnexpectedMessage { expected: Option<Phase>, got: Phase },
}

impl ProtocolError {
    pub(crate) fn peer(from: ParticipantId, kind: Misbehaviour) -> Self {
        ProtocolError::PeerMisbehaved { from, kind }
    }
}

fn phase_or_none(p: Option<Phase>) -> String {
    match p {
        Some(p) => p.to_string(),
        None => "nothing: the round is over".to_string(),
    }
}

/// Why a round failed. The server outputs no sum.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RoundError {
    /// Fewer than `t` participants responded in `phase`.
    #[error("only {have} participants left after {phase}, the threshold is {need}")]
    BelowThreshold {
        phase: Phase,
        have: usize,
        need: usize,
    },
    /// Fewer than `t` shares of one secret that must be rebuilt arrived.
    #[error("only {have} shares of {owner}'s {kind} were revealed, {need} are needed")]
    ReconstructionBelowThreshold {
        owner: ParticipantId,
        kind: ShareKind,
        have: usize,
        need: usize,
    },
    /// The shares of one secret did not combine into a value matching the owner's
    /// commitment (self-mask seed) or public key (mask key).
    #[error("cannot rebuild {owner}'s {kind}: {source}")]
    Reconstruction {
        owner: ParticipantId,
        kind: ShareKind,
        source: ShamirError,
    },
    /// The shares combined into a secret of the wrong size.
    #[error("rebuilt {owner}'s {kind} has {len} bytes")]
    SecretLength {
        owner: ParticipantId,
        kind: ShareKind,
        len: usize,
    },
    /// A rebuilt mask key does not agree with a survivor's public mask key.
    #[error("key agreement between dropped {owner} and survivor {peer} failed: {source}")]
    KeyAgreement {
        owner: ParticipantId,
        peer: ParticipantId,
        source: KeyError,
    },
}

/// Why a client refused to start or refused a server request.
///
/// After [`ClientError::WrongRound`] and [`ClientError::UnexpectedMessage`] the client keeps
/// its state (a stale or early message). After any other refusal of a request the client
/// has left the round (`Client::is_done`) and reveals nothing more.
#[derive(Debug, Error)]
pub enum ClientError {
    // ---- The caller's fault: the client cannot start.
    #[error("round configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{me} is not a participant of this round")]
    NotAParticipant { me: ParticipantId },
    #[error("the identity key does not match the roster key of {me}")]
    IdentityMismatch { me: ParticipantId },
    #[error("input has {got} elements, the round needs {expected}")]
    InputLength { expected: usize, got: usize },
    #[error("input is in {got}, the round uses {expected}")]
    InputModulus { expected: Modulus, got: Modulus },

    // ---- Stale, early or misrouted: refused, state kept.
    #[error("request for {got}, this round is {expected}")]
    WrongRound {
        expected: RoundContext,
        got: RoundContext,
    },
    #[error("unexpected {got} request (awaiting {})", phase_or_none(*.expected))]
    UnexpectedMessage { expected: Option<Phase>, got: Phase },

    // ---- The server (or too many peers) misbehaved: the client leaves the round.
    /// Fewer than `t` neighbours are left to share with or to mask with.
    #[error("only {have} usable neighbours in {phase}, the threshold is {need}")]
    BelowThreshold {
        phase: Phase,
        have: usize,
        need: usize,
    },
    /// A neighbour's keys did not verify against the roster. Not returned as an error:
    /// the neighbour is ignored and listed by `Client::ignored_peers`.
    #[error("neighbour {peer}'s advertised keys are not validly signed")]
    BadNeighbourSignature { peer: ParticipantId },
    /// A neighbour's keys could not be used (listed by `Client::ignored_peers`).
    #[error("neighbour {peer}'s keys are unusable: {reason}")]
    UnusableNeighbour {
        peer: ParticipantId,
        reason: &'static str,
    },
    /// A neighbour's share could not be decrypted (listed by `Client::ignored_peers`; the
    /// client still masks with that neighbour, as the server expects, and simply holds no
    /// share of its secrets).
    #[error("share from {peer} cannot be decrypted")]
    UndecryptableShare { peer: ParticipantId },
    #[error("the server routed a share from {from} to {to} to this client")]
    ShareNotForMe {
        from: ParticipantId,
        to: ParticipantId,
    },
    #[error("the server routed a share from {from}, whose keys this client did not accept")]
    ShareFromUnknownPeer { from: ParticipantId },
    #[error("two shares from {from}")]
    DuplicateShare { from: ParticipantId },
    #[error("the survivor set is not sorted and unique, or names a non-participant")]
    MalformedSurvivorSet,
    #[error("this client is not in the survivor set")]
    MissingSelf,
    #[error("only {have} valid signatures on the survivor set, {need} are needed")]
    SurvivorSetNotSigned { have: usize, need: usize },
    #[error("the survivor set to unmask differs from the one this client signed")]
    SurvivorSetChanged,
    #[error("the server presents a signature for this client that it did not make")]
    OwnSignatureMismatch,
    /// Defensive: the client's state types already make this impossible (the shares held
    /// for a peer are consumed by revealing one of them, and a client that has answered an
    /// Unmask request is done), so this implementation never returns it.
    #[error("would reveal both the self-mask and the mask-key share of {peer}")]
    WouldRevealBothShares { peer: ParticipantId },

    // ---- Primitives.
    #[error("secret sharing: {0}")]
    Shamir(#[from] ShamirError),
    #[error("keys: {0}")]
    Key(#[from] KeyError),
}

impl ClientError {
    /// True for refusals after which the client keeps waiting in its current phase.
    pub fn keeps_state(&self) -> bool {
        matches!(
            self,
            ClientError::WrongRound { .. } | ClientError::UnexpectedMessage { .. }
        )
    }
}
