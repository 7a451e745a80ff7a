//! The messages of one SecAgg+ round, its configuration and the roster of identity keys.
//!
//! Plain data only: no wire (protobuf) types, no behaviour beyond validation, sizes and the
//! exact byte strings that are signed. The conversion to and from the wire lives in
//! `fedsilo-proto`.
//!
//! # Message flow
//!
//! ```text
//!  client u                                   server
//!  Client::new ──── ClientMsg::AdvertiseKeys ───▶ AwaitingKeys
//!              ◀── ServerMsg::ShareKeys ───────── (u's neighbours' signed keys)
//!              ──── ClientMsg::ShareKeys ───────▶ AwaitingShares
//!              ◀── ServerMsg::MaskedInput ─────── (shares addressed to u)
//!              ──── ClientMsg::MaskedInput ─────▶ AwaitingMaskedInputs
//!              ◀── ServerMsg::ConsistencyCheck ── (survivor set U3)
//!              ──── ClientMsg::ConsistencySignature ▶ AwaitingSignatures
//!              ◀── ServerMsg::Unmask ──────────── (U3 + signatures)
//!              ──── ClientMsg::UnmaskShares ────▶ AwaitingUnmaskShares ─▶ Finished
//! ```
//!
//! # Transcripts
//!
//! Every signed, hashed or AEAD-authenticated byte string starts with
//! [`RoundContext::transcript`]: `b"fedsilo-secagg-v1" || len(job_id) as u32 LE || job_id ||
//! round as u64 LE || phase tag`. A message made for another job, round or phase therefore
//! fails verification instead of being mixed in.
//!
//! # Every client message is signed
//!
//! Each client → server message carries an Ed25519 signature by the sender's long-term
//! identity key (the roster key), and the server checks it before the message can touch
//! the round's state. The signed byte strings (ids u32 LE):
//!
//! - [`AdvertiseKeys`] (tag 1): `transcript(AdvertiseKeys) || from || c_pk || s_pk ||
//!   self_mask_commitment` ([`AdvertiseKeys::signed_bytes`]);
//! - [`ShareKeys`] (tag 2): `transcript(ShareKeys) || from || payload digest`;
//! - [`MaskedInput`] (tag 3): `transcript(MaskedInput) || from || payload digest`;
//! - [`ConsistencySignature`] (tag 4): `transcript(ConsistencyCheck) || count (u32 LE) ||
//!   each survivor, ascending` ([`survivor_set_signed_bytes`]);
//! - [`UnmaskShares`] (tag 5): `transcript(Unmask) || from || payload digest`
//!   ([`message_signed_bytes`]).
//!
//! The payload digest is SHA-256 over the message's content in a fixed, length-prefixed
//! encoding (counts and lengths u64 LE):
//!
//! - ShareKeys: `count || for each share, in order: from (u32) || to (u32) || len ||
//!   ciphertext` ([`ShareKeys::payload_digest`]);
//! - MaskedInput: `bits (u8: 32 or 64) || element count || every element, little-endian`
//!   — the very bytes of the wire's `data` field ([`MaskedInput::payload_digest`]);
//! - UnmaskShares: `count || for each share, in order: owner (u32) || kind (u8: 1 self-mask
//!   seed, 2 mask key) || x (u8) || len || y` ([`UnmaskShares::payload_digest`]).
//!
//! The transcript binds job, round and phase, `from` binds the sender, the digest binds the
//! content: a message replayed from another round or job, relabelled, attributed to another
//! sender or altered after signing does not verify. The five phase tags differ, so no
//! signed string of one message kind is a signed string of another.

use std::collections::BTreeMap;
use std::fmt;

use crate::encoding::{Modulus, RingVec};
use sha2::{Digest, Sha256};

use crate::error::ConfigError;
use crate::graph::NeighbourGraph;
use crate::keys::IdentityKey;
use crate::shamir::Share;

/// A participant's number in the round (from the roster; unique within a federation).
pub type ParticipantId = u32;

/// Largest vector a round accepts: 2^28 elements (1 GiB in Z_2^32, 2 GiB in Z_2^64).
pub const MAX_VECTOR_LEN: usize = 1 << 28;

/// Largest effective neighbour degree: a holder's Shamir index is `1 + its position` in
/// the owner's sorted neighbour list, and indices are bytes in 1..=255.
pub const MAX_DEGREE: usize = 255;

/// Domain-separation prefix of every transcript.
pub const PROTOCOL_LABEL: &[u8] = b"fedsilo-secagg-v1";

/// Bytes of one secret that is Shamir-shared (the self-mask seed `b_u` and the mask
/// secret key `s_u^SK`).
pub const SECRET_LEN: usize = 32;

/// Bytes of an [`EncryptedShare`]'s plaintext: owner id, holder id (u32 LE each), the
/// share of `b_u`, the share of `s_u^SK`.
pub const SHARE_PLAINTEXT_LEN: usize = 4 + 4 + SECRET_LEN + SECRET_LEN;

/// Bytes the AEAD adds (Poly1305 tag).
pub const AEAD_TAG_LEN: usize = 16;

/// Bytes of an [`EncryptedShare`]'s ciphertext.
pub const SHARE_CIPHERTEXT_LEN: usize = SHARE_PLAINTEXT_LEN + AEAD_TAG_LEN;

/// Bytes of an Ed25519 signature, the only kind a client message carries.
pub const SIGNATURE_LEN: usize = 64;

/// Which job and which secure-aggregation round of it a message belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RoundContext {
    pub job_id: String,
    pub round: u64,
}

impl RoundContext {
    /// The domain-separated prefix of every byte string signed, hashed or authenticated in
    /// `phase` of this round (see the module doc).
    pub fn transcript(&self, phase: Phase) -> Vec<u8> {
        let job = self.job_id.as_bytes();
        let mut t = Vec::with_capacity(PROTOCOL_LABEL.len() + 4 + job.len() + 8 + 1);
        t.extend_from_slice(PROTOCOL_LABEL);
        t.extend_from_slice(&(job.len() as u32).to_le_bytes());
        t.extend_from_slice(job);
        t.extend_from_slice(&self.round.to_le_bytes());
        t.push(phase.tag());
        t
    }

    /// Payload bytes of the context on the wire (for [`ClientMsg::wire_size`]).
    fn wire_size(&self) -> usize {
        self.job_id.len() + 8
    }
}

impl fmt::Display for RoundContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {:?} round {}", self.job_id, self.round)
    }
}

/// The phases of a round, in order. A server collects phase `p`'s client messages; a
/// client awaits phase `p`'s server request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    AdvertiseKeys,
    ShareKeys,
    MaskedInput,
    ConsistencyCheck,
    Unmask,
}

impl Phase {
    /// Every phase, in protocol order.
    pub const ALL: [Phase; 5] = [
        Phase::AdvertiseKeys,
        Phase::ShareKeys,
        Phase::MaskedInput,
        Phase::ConsistencyCheck,
        Phase::Unmask,
    ];

    /// The byte that ends a transcript of this phase.
    pub fn tag(self) -> u8 {
        match self {
            Phase::AdvertiseKeys => 1,
            Phase::ShareKeys => 2,
            Phase::MaskedInput => 3,
            Phase::ConsistencyCheck => 4,
            Phase::Unmask => 5,
        }
    }

    /// A short lowercase name ("advertise_keys", ...), for logs, scenarios and reports; the
    /// inverse of [`Phase::from_str`](std::str::FromStr).
    pub fn name(self) -> &'static str {
        match self {
            Phase::AdvertiseKeys => "advertise_keys",
            Phase::ShareKeys => "share_keys",
            Phase::MaskedInput => "masked_input",
            Phase::ConsistencyCheck => "consistency_check",
            Phase::Unmask => "unmask",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A phase name that is not one of [`Phase::ALL`]'s [`Phase::name`]s.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown phase `{0}`: expected one of {valid}", valid = Phase::ALL.map(Phase::name).join(", "))]
pub struct UnknownPhase(pub String);

impl std::str::FromStr for Phase {
    type Err = UnknownPhase;

    /// Reads a [`Phase::name`] back (exact, lowercase).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPhase(s.to_string()))
    }
}

/// Everything both sides must agree on before a round starts. The coordinator chooses it
/// and sends it to every participant with the round's instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundConfig {
    pub ctx: RoundContext,
    /// Sorted, unique; at least 2.
    pub participants: Vec<ParticipantId>,
    /// Requested degree `k` of the neighbour graph (the graph may use fewer, e.g. `n - 1`
    /// for a complete graph; see [`NeighbourGraph::degree`]).
    pub neighbours: usize,
    /// Shamir threshold `t`: more than half of the effective degree, at most all of it.
    pub threshold: usize,
    /// Elements per input vector, 1..=[`MAX_VECTOR_LEN`].
    pub vector_len: usize,
    pub modulus: Modulus,
    /// Seed of the neighbour graph (public; chosen by the coordinator).
    pub graph_seed: [u8; 32],
}

impl RoundConfig {
    /// Checks, in this order: participants sorted and unique, at least 2 of them;
    /// `0 < vector_len <= MAX_VECTOR_LEN`; the graph can be built; its effective degree `k`
    /// is at most [`MAX_DEGREE`]; `k/2 < t <= k` (strictly more than half of every neighbourhood, so two
    /// disjoint groups can never both reach the threshold).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.graph().map(|_| ())
    }

    /// Validates (see [`RoundConfig::validate`]) and returns the round's neighbour graph.
    pub fn graph(&self) -> Result<NeighbourGraph, ConfigError> {
        if let Some(w) = self.participants.windows(2).find(|w| w[0] >= w[1]) {
            return Err(ConfigError::ParticipantsNotSorted {
                first: w[0],
                second: w[1],
            });
        }
        let n = self.participants.len();
        if n < 2 {
            return Err(ConfigError::TooFewParticipants { n });
        }
        if self.vector_len == 0 || self.vector_len > MAX_VECTOR_LEN {
            return Err(ConfigError::VectorLength {
                len: self.vector_len,
                max: MAX_VECTOR_LEN,
            });
        }
        let graph = NeighbourGraph::new(&self.participants, self.neighbours, &self.graph_seed)?;
        let k = graph.degree();
        if k > MAX_DEGREE {
            return Err(ConfigError::DegreeTooLarge {
                degree: k,
                max: MAX_DEGREE,
            });
        }
        let t = self.threshold;
        if 2 * t <= k || t > k {
            return Err(ConfigError::Threshold {
                threshold: t,
                degree: k,
            });
        }
        Ok(graph)
    }
}

/// The long-term Ed25519 public keys of the federation's participants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roster {
    keys: BTreeMap<ParticipantId, [u8; 32]>,
}

impl Roster {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `id`'s key; returns the previous one.
    pub fn insert(&mut self, id: ParticipantId, public_key: [u8; 32]) -> Option<[u8; 32]> {
        self.keys.insert(id, public_key)
    }

    pub fn get(&self, id: ParticipantId) -> Option<&[u8; 32]> {
        self.keys.get(&id)
    }

    pub fn contains(&self, id: ParticipantId) -> bool {
        self.keys.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// In increasing id order.
    pub fn iter(&self) -> impl Iterator<Item = (ParticipantId, &[u8; 32])> {
        self.keys.iter().map(|(id, pk)| (*id, pk))
    }
}

/// Phase 1, client → server: the two fresh X25519 public keys and the commitment to the
/// self-mask seed, signed with the long-term identity key (see [`AdvertiseKeys::signed_bytes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertiseKeys {
    pub ctx: RoundContext,
    pub from: ParticipantId,
    /// Public key of `c_u`, used to derive the AEAD keys of the shares.
    pub c_pk: [u8; 32],
    /// Public key of `s_u`, used to derive the pairwise mask seeds.
    pub s_pk: [u8; 32],
    /// `SHA-256(transcript(AdvertiseKeys) || from || b_u)`: lets the server check a
    /// reconstructed self-mask seed.
    pub self_mask_commitment: [u8; 32],
    /// Ed25519 over [`AdvertiseKeys::signed_bytes`].
    pub signature: Vec<u8>,
}

impl AdvertiseKeys {
    /// `transcript(AdvertiseKeys) || from (u32 LE) || c_pk || s_pk || self_mask_commitment`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        advertise_signed_bytes(
            &self.ctx,
            self.from,
            &self.c_pk,
            &self.s_pk,
            &self.self_mask_commitment,
        )
    }

    fn wire_size(&self) -> usize {
        self.ctx.wire_size() + 4 + 3 * 32 + self.signature.len()
    }
}

/// The bytes an [`AdvertiseKeys`] signature covers.
pub fn advertise_signed_bytes(
    ctx: &RoundContext,
    from: ParticipantId,
    c_pk: &[u8; 32],
    s_pk: &[u8; 32],
    commitment: &[u8; 32],
) -> Vec<u8> {
    let mut m = ctx.transcript(Phase::AdvertiseKeys);
    m.extend_from_slice(&from.to_le_bytes());
    m.extend_from_slice(c_pk);
    m.extend_from_slice(s_pk);
    m.extend_from_slice(commitment);
    m
}

/// The bytes a [`ConsistencySignature`] covers:
/// `transcript(ConsistencyCheck) || count (u32 LE) || each survivor (u32 LE), ascending`.
pub fn survivor_set_signed_bytes(ctx: &RoundContext, survivors: &[ParticipantId]) -> Vec<u8> {
    let mut m = ctx.transcript(Phase::ConsistencyCheck);
    m.extend_from_slice(&(survivors.len() as u32).to_le_bytes());
    for id in survivors {
        m.extend_from_slice(&id.to_le_bytes());
    }
    m
}

/// The bytes the signature of a [`ShareKeys`], [`MaskedInput`] or [`UnmaskShares`] covers:
/// `transcript(phase) || from (u32 LE) || payload_digest` (see the module doc).
pub fn message_signed_bytes(
    ctx: &RoundContext,
    phase: Phase,
    from: ParticipantId,
    payload_digest: &[u8; 32],
) -> Vec<u8> {
    let mut m = ctx.transcript(phase);
    m.reserve(4 + 32);
    m.extend_from_slice(&from.to_le_bytes());
    m.extend_from_slice(payload_digest);
    m
}

/// A count or length in a payload digest: u64 LE, so no value is ever truncated.
fn len_le(n: usize) -> [u8; 8] {
    (n as u64).to_le_bytes()
}

/// Feeds the little-endian bytes of every element to `h` in one pass, through a small
/// stack buffer (no copy of the vector; on little-endian machines the conversion is a
/// plain, vectorised copy).
fn hash_ring(h: &mut Sha256, v: &RingVec) {
    match v {
        RingVec::U32(xs) => hash_elements(h, xs, u32::to_le_bytes),
        RingVec::U64(xs) => hash_elements(h, xs, u64::to_le_bytes),
    }
}

fn hash_elements<T: Copy, const W: usize>(h: &mut Sha256, xs: &[T], le: impl Fn(T) -> [u8; W]) {
    const CHUNK: usize = 4096;
    let mut buf = [[0u8; W]; CHUNK];
    for chunk in xs.chunks(CHUNK) {
        for (out, &x) in buf.iter_mut().zip(chunk) {
            *out = le(x);
        }
        h.update(buf.get(..chunk.len()).unwrap_or_default().as_flattened());
    }
}

fn share_kind_byte(kind: ShareKind) -> u8 {
    match kind {
        ShareKind::SelfMask => 1,
        ShareKind::MaskKey => 2,
    }
}

/// One owner's pair of shares (of `b_from` and `s_from^SK`) for one holder, AEAD-encrypted
/// so that only the holder can read them; the server only routes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedShare {
    /// The owner of the shared secrets.
    pub from: ParticipantId,
    /// The holder, one of the owner's neighbours.
    pub to: ParticipantId,
    /// [`SHARE_CIPHERTEXT_LEN`] bytes.
    pub ciphertext: Vec<u8>,
}

impl EncryptedShare {
    fn wire_size(&self) -> usize {
        4 + 4 + self.ciphertext.len()
    }
}

/// Phase 2, client → server: one encrypted share pair for each neighbour whose keys the
/// client accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareKeys {
    pub ctx: RoundContext,
    pub from: ParticipantId,
    pub shares: Vec<EncryptedShare>,
    /// Ed25519 over [`ShareKeys::signed_bytes`].
    pub signature: Vec<u8>,
}

impl ShareKeys {
    /// `SHA-256(count || for each share: from || to || len || ciphertext)`.
    pub fn payload_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(len_le(self.shares.len()));
        for s in &self.shares {
            h.update(s.from.to_le_bytes());
            h.update(s.to.to_le_bytes());
            h.update(len_le(s.ciphertext.len()));
            h.update(&s.ciphertext);
        }
        h.finalize().into()
    }

    /// `transcript(ShareKeys) || from || payload_digest`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        message_signed_bytes(
            &self.ctx,
            Phase::ShareKeys,
            self.from,
            &self.payload_digest(),
        )
    }
}

/// Phase 3, client → server: `y_u = x_u + PRG(b_u) ± Σ PRG(s_uv)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskedInput {
    pub ctx: RoundContext,
    pub from: ParticipantId,
    pub masked: RingVec,
    /// Ed25519 over [`MaskedInput::signed_bytes`].
    pub signature: Vec<u8>,
}

impl MaskedInput {
    /// `SHA-256(bits (u8) || element count (u64 LE) || elements, little-endian)`: one pass
    /// over the vector, no copy of it.
    pub fn payload_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([self.masked.modulus().bits() as u8]);
        h.update(len_le(self.masked.len()));
        hash_ring(&mut h, &self.masked);
        h.finalize().into()
    }

    /// `transcript(MaskedInput) || from || payload_digest`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        message_signed_bytes(
            &self.ctx,
            Phase::MaskedInput,
            self.from,
            &self.payload_digest(),
        )
    }
}

/// Phase 4, client → server: the client's signature on the survivor set
/// ([`survivor_set_signed_bytes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencySignature {
    pub ctx: RoundContext,
    pub from: ParticipantId,
    pub signature: Vec<u8>,
}

/// Which of an owner's two secrets a revealed share belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShareKind {
    /// A share of the self-mask seed `b_u` (revealed for survivors).
    SelfMask,
    /// A share of the mask secret key `s_u^SK` (revealed for the dropped).
    MaskKey,
}

impl fmt::Display for ShareKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShareKind::SelfMask => "self-mask seed",
            ShareKind::MaskKey => "mask key",
        })
    }
}

/// One share the holder reveals in phase 5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevealedShare {
    pub owner: ParticipantId,
    pub kind: ShareKind,
    pub share: Share,
}

/// Phase 5, client → server: for each neighbour whose shares the client holds, exactly one
/// share: of `b_v` if `v` survived, of `s_v^SK` if it dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmaskShares {
    pub ctx: RoundContext,
    pub from: ParticipantId,
    pub shares: Vec<RevealedShare>,
    /// Ed25519 over [`UnmaskShares::signed_bytes`].
    pub signature: Vec<u8>,
}

impl UnmaskShares {
    /// `SHA-256(count || for each share: owner || kind (u8) || x (u8) || len || y)`.
    pub fn payload_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(len_le(self.shares.len()));
        for s in &self.shares {
            h.update(s.owner.to_le_bytes());
            h.update([share_kind_byte(s.kind), s.share.x]);
            h.update(len_le(s.share.y.len()));
            h.update(&s.share.y);
        }
        h.finalize().into()
    }

    /// `transcript(Unmask) || from || payload_digest`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        message_signed_bytes(&self.ctx, Phase::Unmask, self.from, &self.payload_digest())
    }
}

/// Every message a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMsg {
    AdvertiseKeys(AdvertiseKeys),
    ShareKeys(ShareKeys),
    MaskedInput(MaskedInput),
    ConsistencySignature(ConsistencySignature),
    UnmaskShares(UnmaskShares),
}

impl ClientMsg {
    /// The phase this message answers.
    pub fn phase(&self) -> Phase {
        match self {
            ClientMsg::AdvertiseKeys(_) => Phase::AdvertiseKeys,
            ClientMsg::ShareKeys(_) => Phase::ShareKeys,
            ClientMsg::MaskedInput(_) => Phase::MaskedInput,
            ClientMsg::ConsistencySignature(_) => Phase::ConsistencyCheck,
            ClientMsg::UnmaskShares(_) => Phase::Unmask,
        }
    }

    pub fn ctx(&self) -> &RoundContext {
        match self {
            ClientMsg::AdvertiseKeys(m) => &m.ctx,
            ClientMsg::ShareKeys(m) => &m.ctx,
            ClientMsg::MaskedInput(m) => &m.ctx,
            ClientMsg::ConsistencySignature(m) => &m.ctx,
            ClientMsg::UnmaskShares(m) => &m.ctx,
        }
    }

    /// The participant the message claims to come from (checked against the transport's
    /// authenticated identity by the server).
    pub fn from(&self) -> ParticipantId {
        match self {
            ClientMsg::AdvertiseKeys(m) => m.from,
            ClientMsg::ShareKeys(m) => m.from,
            ClientMsg::MaskedInput(m) => m.from,
            ClientMsg::ConsistencySignature(m) => m.from,
            ClientMsg::UnmaskShares(m) => m.from,
        }
    }

    /// Signs (or re-signs) the message with `identity`, as the [`Client`](crate::client::Client)
    /// does for its own messages: AdvertiseKeys, ShareKeys, MaskedInput and UnmaskShares
    /// sign their own content. A [`ConsistencySignature`] is left as it is: its signature
    /// covers the server's survivor set, which the message does not carry. For tools and
    /// tests that build messages by hand.
    pub fn sign(&mut self, identity: &IdentityKey) {
        match self {
            ClientMsg::AdvertiseKeys(m) => m.signature = identity.sign(&m.signed_bytes()),
            ClientMsg::ShareKeys(m) => m.signature = identity.sign(&m.signed_bytes()),
            ClientMsg::MaskedInput(m) => m.signature = identity.sign(&m.signed_bytes()),
            ClientMsg::UnmaskShares(m) => m.signature = identity.sign(&m.signed_bytes()),
            ClientMsg::ConsistencySignature(_) => {}
        }
    }

    /// Payload bytes: every field at its natural width (ids 4, round 8, keys 32, vector
    /// elements 4 or 8, byte strings — signatures included — their length), without
    /// framing. For reports.
    pub fn wire_size(&self) -> usize {
        match self {
            ClientMsg::AdvertiseKeys(m) => m.wire_size(),
            ClientMsg::ShareKeys(m) => {
                m.ctx.wire_size()
                    + 4
                    + m.shares
                        .iter()
                        .map(EncryptedShare::wire_size)
                        .sum::<usize>()
                    + m.signature.len()
            }
            ClientMsg::MaskedInput(m) => {
                m.ctx.wire_size()
                    + 4
                    + m.masked.len() * m.masked.modulus().bytes_per_element()
                    + m.signature.len()
            }
            ClientMsg::ConsistencySignature(m) => m.ctx.wire_size() + 4 + m.signature.len(),
            ClientMsg::UnmaskShares(m) => {
                m.ctx.wire_size()
                    + 4
                    + m.shares
                        .iter()
                        .map(|s| 4 + 1 + 1 + s.share.y.len())
                        .sum::<usize>()
                    + m.signature.len()
            }
        }
    }
}

/// Phase 2 request: the signed keys of the client's neighbours who advertised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareKeysRequest {
    pub ctx: RoundContext,
    pub keys: Vec<AdvertiseKeys>,
}

/// Phase 3 request: the encrypted shares addressed to this client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskedInputRequest {
    pub ctx: RoundContext,
    pub shares: Vec<EncryptedShare>,
}

/// Phase 4 request: the survivor set U3 (who sent a masked input), ascending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyRequest {
    pub ctx: RoundContext,
    pub survivors: Vec<ParticipantId>,
}

/// Phase 5 request: U3 again, with the signatures the server collected on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmaskRequest {
    pub ctx: RoundContext,
    pub survivors: Vec<ParticipantId>,
    pub signatures: Vec<(ParticipantId, Vec<u8>)>,
}

/// Every message the server sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMsg {
    ShareKeys(ShareKeysRequest),
    MaskedInput(MaskedInputRequest),
    ConsistencyCheck(ConsistencyRequest),
    Unmask(UnmaskRequest),
}

impl ServerMsg {
    /// The phase this request opens.
    pub fn phase(&self) -> Phase {
        match self {
            ServerMsg::ShareKeys(_) => Phase::ShareKeys,
            ServerMsg::MaskedInput(_) => Phase::MaskedInput,
            ServerMsg::ConsistencyCheck(_) => Phase::ConsistencyCheck,
            ServerMsg::Unmask(_) => Phase::Unmask,
        }
    }

    pub fn ctx(&self) -> &RoundContext {
        match self {
            ServerMsg::ShareKeys(m) => &m.ctx,
            ServerMsg::MaskedInput(m) => &m.ctx,
            ServerMsg::ConsistencyCheck(m) => &m.ctx,
            ServerMsg::Unmask(m) => &m.ctx,
        }
    }

    /// Payload bytes, counted as in [`ClientMsg::wire_size`].
    pub fn wire_size(&self) -> usize {
        match self {
            ServerMsg::ShareKeys(m) => {
                m.ctx.wire_size() + m.keys.iter().map(AdvertiseKeys::wire_size).sum::<usize>()
            }
            ServerMsg::MaskedInput(m) => {
                m.ctx.wire_size()
                    + m.shares
                        .iter()
                        .map(EncryptedShare::wire_size)
                        .sum::<usize>()
            }
            ServerMsg::ConsistencyCheck(m) => m.ctx.wire_size() + 4 * m.survivors.len(),
            ServerMsg::Unmask(m) => {
                m.ctx.wire_size()
                    + 4 * m.survivors.len()
                    + m.signatures.iter().map(|(_, s)| 4 + s.len()).sum::<usize>()
            }
        }
    }
}

#[cfg(test)]
mod tests;
