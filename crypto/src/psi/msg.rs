//! The messages of one PSI exchange and the plaintext layout inside the sealed ones.
//!
//! Plain data: no wire (protobuf) types. The relay forwards [`PsiMsg`]s between the two
//! parties unchanged; what it can read is the public header (context, sender, number,
//! kind) and the length. Everything else is sealed end to end.
//!
//! # Envelopes
//!
//! - [`Hello`] (plaintext, one per party, first): an ephemeral X25519 public key, a 32-byte
//!   nonce and the configuration digest, signed with the sender's Ed25519 roster key over
//!   `transcript || "hello" || role || ephemeral_pk || nonce || config_digest`.
//! - [`Sealed`]: ChaCha20-Poly1305 under a key used for this one message,
//!   `HKDF(channel key, salt = transcript, info = "msg" || from || seq (u64 LE) || kind)`,
//!   associated data `transcript || from || seq || kind`. `seq` counts the sender's sealed
//!   messages from 0; a receiver takes exactly the next number, so a lost, replayed,
//!   reordered, truncated or garbled message is refused.
//!
//! The transcript is `b"fedsilo-psi-v1" || len(job_id) (u32 LE) || job_id || session
//! (u64 LE)` ([`PsiContext::transcript`]).
//!
//! # Plaintexts (integers little-endian)
//!
//! - [`Kind::Encodings`] and [`Kind::Doubled`]: `flags (u8, bit 0 = last chunk) || count
//!   (u32) || count × 32-byte compressed Ristretto255 points`.
//! - [`Kind::Result`]: `flags (u8, bit 0 = last) || intersection size (u64) || intersection
//!   hash (32) || count (u32) || count × (position in the passive party's stream (u32) ||
//!   double encoding (32))`. With delivery to the active party only there is one chunk with
//!   count 0.

use std::fmt;

/// Bytes of a compressed Ristretto255 point.
pub const POINT_LEN: usize = 32;

/// Bytes of one entry of a [`Kind::Result`] chunk.
pub const RESULT_ENTRY_LEN: usize = 4 + POINT_LEN;

/// Bytes before the points of an Encodings or Doubled plaintext.
pub(crate) const POINTS_HEADER_LEN: usize = 1 + 4;

/// Bytes before the entries of a Result plaintext.
pub(crate) const RESULT_HEADER_LEN: usize = 1 + 8 + 32 + 4;

/// Domain-separation prefix of every PSI transcript.
pub const PSI_LABEL: &[u8] = b"fedsilo-psi-v1";

/// Which job and which attempt of its PSI a message belongs to (a resumed job runs a new
/// session with fresh keys).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PsiContext {
    pub job_id: String,
    pub session: u64,
}

impl PsiContext {
    /// The prefix of every signed, derived or authenticated byte string of this exchange.
    pub fn transcript(&self) -> Vec<u8> {
        let job = self.job_id.as_bytes();
        let mut t = Vec::with_capacity(PSI_LABEL.len() + 4 + job.len() + 8);
        t.extend_from_slice(PSI_LABEL);
        t.extend_from_slice(&(job.len() as u32).to_le_bytes());
        t.extend_from_slice(job);
        t.extend_from_slice(&self.session.to_le_bytes());
        t
    }
}

impl fmt::Display for PsiContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {:?} PSI session {}", self.job_id, self.session)
    }
}

/// The two parties. The active party (the label holder) computes the intersection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Active,
    Passive,
}

impl Role {
    pub fn tag(self) -> u8 {
        match self {
            Role::Active => 1,
            Role::Passive => 2,
        }
    }

    /// The role a [`Role::tag`] stands for (for wire decoding).
    pub fn from_tag(tag: u8) -> Option<Role> {
        [Role::Active, Role::Passive]
            .into_iter()
            .find(|r| r.tag() == tag)
    }

    pub fn peer(self) -> Role {
        match self {
            Role::Active => Role::Passive,
            Role::Passive => Role::Active,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Passive => "passive",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a [`Sealed`] message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A chunk of the sender's own ids, hashed to the group and blinded with its scalar.
    Encodings,
    /// The passive party's answer to one Encodings chunk of the active party: the same
    /// points, in the same order, blinded again with the passive party's scalar.
    Doubled,
    /// The active party's result for the passive one.
    Result,
    /// A message of a vertical model's session ([`super::channel`]): the same two parties,
    /// the same relay, another protocol. A PSI party refuses it as out of order.
    Vertical,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Encodings, Kind::Doubled, Kind::Result, Kind::Vertical];

    pub fn tag(self) -> u8 {
        match self {
            Kind::Encodings => 1,
            Kind::Doubled => 2,
            Kind::Result => 3,
            Kind::Vertical => 4,
        }
    }

    /// The kind a [`Kind::tag`] stands for (for wire decoding).
    pub fn from_tag(tag: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.tag() == tag)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Encodings => "encodings",
            Kind::Doubled => "doubled",
            Kind::Result => "result",
            Kind::Vertical => "vertical",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A party's first message (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub ctx: PsiContext,
    pub from: Role,
    pub ephemeral_pk: [u8; 32],
    pub nonce: [u8; 32],
    pub config_digest: [u8; 32],
    /// Ed25519 by the sender's roster key over [`Hello::signed_bytes`] (64 bytes; any other
    /// length is refused as a bad signature).
    pub signature: Vec<u8>,
}

impl Hello {
    pub fn signed_bytes(&self) -> Vec<u8> {
        hello_signed_bytes(
            &self.ctx,
            self.from,
            &self.ephemeral_pk,
            &self.nonce,
            &self.config_digest,
        )
    }
}

pub(crate) fn hello_signed_bytes(
    ctx: &PsiContext,
    from: Role,
    ephemeral_pk: &[u8; 32],
    nonce: &[u8; 32],
    config_digest: &[u8; 32],
) -> Vec<u8> {
    let mut m = ctx.transcript();
    m.extend_from_slice(b"hello");
    m.push(from.tag());
    m.extend_from_slice(ephemeral_pk);
    m.extend_from_slice(nonce);
    m.extend_from_slice(config_digest);
    m
}

/// An end-to-end sealed message (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub ctx: PsiContext,
    pub from: Role,
    pub seq: u64,
    pub kind: Kind,
    pub ciphertext: Vec<u8>,
}

/// Associated data of a sealed message.
pub(crate) fn sealed_aad(transcript: &[u8], from: Role, seq: u64, kind: Kind) -> Vec<u8> {
    let mut a = Vec::with_capacity(transcript.len() + 10);
    a.extend_from_slice(transcript);
    a.push(from.tag());
    a.extend_from_slice(&seq.to_le_bytes());
    a.push(kind.tag());
    a
}

/// One message between the two parties, relayed as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PsiMsg {
    Hello(Hello),
    Sealed(Sealed),
}

impl PsiMsg {
    pub fn ctx(&self) -> &PsiContext {
        match self {
            PsiMsg::Hello(h) => &h.ctx,
            PsiMsg::Sealed(s) => &s.ctx,
        }
    }

    pub fn from(&self) -> Role {
        match self {
            PsiMsg::Hello(h) => h.from,
            PsiMsg::Sealed(s) => s.from,
        }
    }

    /// Payload bytes (the context and the fields; what a relay's byte counters show).
    pub fn wire_size(&self) -> usize {
        let ctx = self.ctx().job_id.len() + 8 + 1;
        ctx + match self {
            PsiMsg::Hello(h) => 32 * 3 + h.signature.len(),
            PsiMsg::Sealed(s) => 8 + 1 + s.ciphertext.len(),
        }
    }

    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            PsiMsg::Hello(_) => "hello",
            PsiMsg::Sealed(s) => s.kind.name(),
        }
    }
}

// ---- Plaintext layouts.

pub(crate) const FLAG_LAST: u8 = 1;

/// Encodings / Doubled plaintext.
pub(crate) fn points_plaintext<'a>(
    last: bool,
    points: impl ExactSizeIterator<Item = &'a [u8; POINT_LEN]>,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(POINTS_HEADER_LEN + points.len() * POINT_LEN);
    p.push(if last { FLAG_LAST } else { 0 });
    p.extend_from_slice(&(points.len() as u32).to_le_bytes());
    for pt in points {
        p.extend_from_slice(pt);
    }
    p
}

/// A parsed Encodings / Doubled plaintext: the last flag and the points' bytes.
pub(crate) struct Points<'a> {
    pub last: bool,
    pub points: &'a [u8],
}

impl Points<'_> {
    pub fn len(&self) -> usize {
        self.points.len() / POINT_LEN
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.points.chunks_exact(POINT_LEN)
    }
}

fn read_flags(kind: Kind, b: u8) -> Result<bool, super::PsiError> {
    match b {
        0 => Ok(false),
        FLAG_LAST => Ok(true),
        _ => Err(super::PsiError::Malformed {
            kind,
            reason: "unknown flags",
        }),
    }
}

fn read_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
}

fn read_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?))
}

pub(crate) fn parse_points(
    kind: Kind,
    plaintext: &[u8],
    max: usize,
) -> Result<Points<'_>, super::PsiError> {
    use super::PsiError;
    let malformed = |reason| PsiError::Malformed { kind, reason };
    let (header, rest) = plaintext
        .split_at_checked(POINTS_HEADER_LEN)
        .ok_or(malformed("shorter than its header"))?;
    let last = read_flags(kind, header.first().copied().unwrap_or(0xff))?;
    let count = read_u32(header.get(1..).unwrap_or(&[])).ok_or(malformed("no count"))? as usize;
    if count > max {
        return Err(PsiError::ChunkTooLarge { kind, count, max });
    }
    if rest.len() != count * POINT_LEN {
        return Err(malformed("length does not match the point count"));
    }
    Ok(Points { last, points: rest })
}

/// A parsed Result plaintext.
pub(crate) struct ResultChunk<'a> {
    pub last: bool,
    pub total: u64,
    pub hash: [u8; 32],
    pub entries: &'a [u8],
}

impl ResultChunk<'_> {
    pub fn len(&self) -> usize {
        self.entries.len() / RESULT_ENTRY_LEN
    }

    /// (position, point) of each entry.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        self.entries
            .chunks_exact(RESULT_ENTRY_LEN)
            .map(|e| (read_u32(e).unwrap_or(u32::MAX), e.get(4..).unwrap_or(&[])))
    }
}

pub(crate) fn result_plaintext<'a>(
    last: bool,
    total: u64,
    hash: &[u8; 32],
    entries: impl ExactSizeIterator<Item = (u32, &'a [u8; POINT_LEN])>,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(RESULT_HEADER_LEN + entries.len() * RESULT_ENTRY_LEN);
    p.push(if last { FLAG_LAST } else { 0 });
    p.extend_from_slice(&total.to_le_bytes());
    p.extend_from_slice(hash);
    p.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (pos, pt) in entries {
        p.extend_from_slice(&pos.to_le_bytes());
        p.extend_from_slice(pt);
    }
    p
}

pub(crate) fn parse_result(
    plaintext: &[u8],
    max: usize,
) -> Result<ResultChunk<'_>, super::PsiError> {
    use super::PsiError;
    let kind = Kind::Result;
    let malformed = |reason| PsiError::Malformed { kind, reason };
    let (header, rest) = plaintext
        .split_at_checked(RESULT_HEADER_LEN)
        .ok_or(malformed("shorter than its header"))?;
    let last = read_flags(kind, header.first().copied().unwrap_or(0xff))?;
    let total = read_u64(header.get(1..).unwrap_or(&[])).ok_or(malformed("no size"))?;
    let hash: [u8; 32] = header
        .get(9..41)
        .and_then(|h| h.try_into().ok())
        .ok_or(malformed("no hash"))?;
    let count = read_u32(header.get(41..).unwrap_or(&[])).ok_or(malformed("no count"))? as usize;
    if count > max {
        return Err(PsiError::ChunkTooLarge { kind, count, max });
    }
    if rest.len() != count * RESULT_ENTRY_LEN {
        return Err(malformed("length does not match the entry count"));
    }
    Ok(ResultChunk {
        last,
        total,
        hash,
        entries: rest,
    })
}
