//! Sans-IO ECDH private set intersection over Ristretto255, for vertical federation.
//!
//! Two parties hold ids of customers; the **active** party (the label holder) learns which
//! of its rows are shared, the **passive** party learns either the same (in the same order)
//! or only the size ([`Delivery`]). The relay between them (the coordinator) forwards
//! [`PsiMsg`]s and learns only sizes.
//!
//! # Protocol (Meadows 1986; Huberman, Franklin, Hogg 1999)
//!
//! ```text
//!  active A (scalar a, ids X)                                   passive P (scalar p, ids Y)
//!  Hello(eph_A, nonce_A) ────────────────────────────────────▶ ◀──── Hello(eph_P, nonce_P)
//!        both: channel key and id salt from X25519(eph_A, eph_P); everything below sealed
//!  push_ids / finish_ids: H(x)·a, deduplicated, shuffled        push_ids / finish_ids: H(y)·p
//!  Encodings chunks  H(x)·a  ───────────────────────────────▶  ·p, same order
//!                    ◀─────────────────────────────────────────  Doubled chunks H(x)·a·p
//!        (P sends its own chunks only after answering A's last one)
//!                    ◀─────────────────────────────────────────  Encodings chunks H(y)·p
//!  ·a, look up among H(x)·a·p ─▶ matches
//!  Result chunks ────────────────────────────────────────────▶ rows (or only the size)
//! ```
//!
//! - `H(id) = RistrettoPoint::from_uniform_bytes(SHA-512("fedsilo-psi-v1 hash-to-group" ||
//!   salt || normalised id))`, the salt secret to the two parties and fresh per session.
//! - Each scalar is drawn from the RNG passed in and wiped on drop.
//! - Ids are normalised by the declared [`IdFormat`]; empty ids are refused with their row,
//!   duplicates by the [`Duplicates`] rule.
//! - Sent points are shuffled with a permutation from the RNG passed in; only the sender
//!   knows which row sits at which position.
//!
//! # Output
//!
//! Both parties list their rows of the intersection in one canonical order: ascending by
//! the double encoding `H(id)·a·p` (compressed bytes). Row `i` of the active party's list and
//! row `i` of the passive party's hold the same (normalised) id. The intersection hash is
//! `SHA-256(transcript || "intersection" || each double encoding in that order || size (u64
//! LE))`; both parties get the same hash, and part 2 checks alignments against it.
//!
//! # Memory
//!
//! A party holds its own set's encodings (36 bytes per id: a point and a row number) and at
//! most one chunk of the other's: the active party overwrites its encodings in place with
//! the double encodings that come back, then keeps 40 bytes per shared id it finds (36 in
//! the Result it streams out); the passive party keeps 4 bytes per id (the row behind
//! each position it sent) plus a bit per id once its own chunks are out. Chunks are sealed
//! lazily, one per `poll_transmit`. Hashing, blinding and double-encoding run as rayon
//! parallel loops over one chunk on the global pool; compressions are batched (one field
//! inversion per 256 points).
//!
//! # What each side sees
//!
//! See [`party`]'s module doc for the unlinkability argument.

pub mod channel;
mod error;
mod ids;
pub mod msg;
pub mod party;

#[cfg(test)]
mod tests;

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use ring::digest;
use zeroize::Zeroize;

pub use error::{IdError, PsiError};
pub use ids::{Duplicates, IdFormat, UnknownIdFormat, MAX_ID_LEN};
pub use msg::{Hello, Kind, PsiContext, PsiMsg, Role, Sealed, POINT_LEN};
pub use party::{Progress, PsiParty};

/// Default points per chunk: 32,768 (1 MiB of points per message).
pub const DEFAULT_CHUNK_LEN: usize = 1 << 15;

/// Largest chunk a party accepts: 2^18 entries (9 MiB for Result chunks).
pub const MAX_CHUNK_LEN: usize = 1 << 18;

/// Largest set (rows and stream positions are u32).
pub const MAX_SET_SIZE: u64 = u32::MAX as u64;

/// Domain tag of the hash to the group.
pub const HASH_TO_GROUP_TAG: &[u8] = b"fedsilo-psi-v1 hash-to-group";

/// Who learns the intersection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Delivery {
    /// Both parties learn their rows of the intersection, aligned.
    #[default]
    Both,
    /// Only the active party learns its rows; the passive party learns the size and hash.
    ActiveOnly,
}

impl Delivery {
    pub fn tag(self) -> u8 {
        match self {
            Delivery::Both => 1,
            Delivery::ActiveOnly => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Delivery::Both => "both",
            Delivery::ActiveOnly => "active_only",
        }
    }
}

/// One PSI exchange's configuration. `ctx`, `format`, `delivery` and `chunk_len` must be
/// the same at both parties (their digest is signed in each Hello); `duplicates` is each
/// party's own rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PsiConfig {
    pub ctx: PsiContext,
    pub format: IdFormat,
    pub delivery: Delivery,
    /// Points per Encodings/Doubled chunk and entries per Result chunk, in
    /// 1..=[`MAX_CHUNK_LEN`].
    pub chunk_len: usize,
    pub duplicates: Duplicates,
}

impl PsiConfig {
    /// A configuration with the default format, delivery, chunk length and duplicates rule.
    pub fn new(job_id: impl Into<String>, session: u64) -> Self {
        PsiConfig {
            ctx: PsiContext {
                job_id: job_id.into(),
                session,
            },
            format: IdFormat::default(),
            delivery: Delivery::default(),
            chunk_len: DEFAULT_CHUNK_LEN,
            duplicates: Duplicates::default(),
        }
    }

    pub fn validate(&self) -> Result<(), PsiError> {
        if self.chunk_len == 0 || self.chunk_len > MAX_CHUNK_LEN {
            return Err(PsiError::ChunkLen {
                len: self.chunk_len,
                max: MAX_CHUNK_LEN,
            });
        }
        Ok(())
    }

    /// SHA-256 of `transcript || "config" || format tag || delivery tag || chunk_len (u64
    /// LE)`: what both parties must agree on.
    pub fn digest(&self) -> [u8; 32] {
        let mut c = digest::Context::new(&digest::SHA256);
        c.update(&self.ctx.transcript());
        c.update(b"config");
        c.update(&[self.format.tag(), self.delivery.tag()]);
        c.update(&(self.chunk_len as u64).to_le_bytes());
        to32(c.finish().as_ref())
    }
}

/// What one party knows at the end of an exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PsiOutput {
    pub role: Role,
    /// Ids this party took part with (after the duplicates rule).
    pub own_set_size: u64,
    /// Rows left out by [`Duplicates::KeepFirst`].
    pub duplicates_dropped: u64,
    pub peer_set_size: u64,
    pub intersection_size: u64,
    /// The alignment hash (see the module doc); the same at both parties.
    pub intersection_hash: [u8; 32],
    /// This party's 0-based rows of the intersection in the canonical order; `None` for the
    /// passive party under [`Delivery::ActiveOnly`].
    pub rows: Option<Vec<u32>>,
}

fn to32(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, i) in out.iter_mut().zip(b) {
        *o = *i;
    }
    out
}

/// `H(id)`: the normalised id hashed to Ristretto255 (see the module doc).
pub(crate) fn hash_to_group(salt: &[u8; 32], id: &str) -> RistrettoPoint {
    let mut c = digest::Context::new(&digest::SHA512);
    c.update(HASH_TO_GROUP_TAG);
    c.update(salt);
    c.update(id.as_bytes());
    let d = c.finish();
    let mut wide = [0u8; 64];
    for (o, i) in wide.iter_mut().zip(d.as_ref()) {
        *o = *i;
    }
    RistrettoPoint::from_uniform_bytes(&wide)
}

/// Points per batch compression (one field inversion shared by the batch).
const BATCH: usize = 256;

/// A party's secret scalar `k`, wiped on drop. It also keeps `k / 2`: the Ristretto
/// encoding of `P·k` is computed as the batched double-and-compress of `P·(k/2)`, which
/// shares one field inversion over a batch instead of an inverse square root per point.
pub(crate) struct Blinder {
    half: Scalar,
}

impl Drop for Blinder {
    fn drop(&mut self) {
        self.half.zeroize();
    }
}

impl Blinder {
    pub(crate) fn random(rng: &mut impl rand::CryptoRng) -> Self {
        let mut wide = zeroize::Zeroizing::new([0u8; 64]);
        loop {
            rng.fill_bytes(&mut wide[..]);
            let mut scalar = Scalar::from_bytes_mod_order_wide(&wide);
            if scalar != Scalar::ZERO {
                let half = scalar * Scalar::from(2u8).invert();
                scalar.zeroize();
                return Blinder { half };
            }
        }
    }

    /// `H(id)·k`, compressed, for each normalised id, in order; in parallel.
    pub(crate) fn encode_all(&self, salt: &[u8; 32], ids: &[String]) -> Vec<[u8; POINT_LEN]> {
        use rayon::prelude::*;
        ids.par_chunks(BATCH)
            .flat_map_iter(|c| {
                let pts: Vec<RistrettoPoint> = c
                    .iter()
                    .map(|id| hash_to_group(salt, id) * self.half)
                    .collect();
                RistrettoPoint::double_and_compress_batch(&pts)
                    .into_iter()
                    .map(|p| p.to_bytes())
            })
            .collect()
    }

    /// `P·k`, compressed, for each of the peer's compressed points `P` (concatenated), in
    /// order; in parallel. Refuses with the index of the first bytes that are not the
    /// canonical encoding of a Ristretto255 point.
    pub(crate) fn reblind_all(&self, points: &[u8]) -> Result<Vec<[u8; POINT_LEN]>, usize> {
        use rayon::prelude::*;
        let batches: Vec<Result<Vec<[u8; POINT_LEN]>, usize>> = points
            .par_chunks(BATCH * POINT_LEN)
            .enumerate()
            .map(|(b, c)| {
                let mut pts = Vec::with_capacity(c.len() / POINT_LEN);
                for (i, p) in c.chunks_exact(POINT_LEN).enumerate() {
                    let q = CompressedRistretto::from_slice(p)
                        .ok()
                        .and_then(|c| c.decompress())
                        .ok_or(b * BATCH + i)?;
                    pts.push(q * self.half);
                }
                Ok(RistrettoPoint::double_and_compress_batch(&pts)
                    .into_iter()
                    .map(|p| p.to_bytes())
                    .collect())
            })
            .collect();
        let mut out = Vec::with_capacity(points.len() / POINT_LEN);
        for b in batches {
            out.extend(b?);
        }
        Ok(out)
    }

    /// `H(id)·k` of one id (tests).
    #[cfg(test)]
    pub(crate) fn encode(&self, salt: &[u8; 32], id: &str) -> [u8; POINT_LEN] {
        (hash_to_group(salt, id) * (self.half + self.half))
            .compress()
            .to_bytes()
    }

    /// `P·k` of one point (tests).
    #[cfg(test)]
    pub(crate) fn reblind(&self, point: &[u8; POINT_LEN]) -> Option<[u8; POINT_LEN]> {
        let p = CompressedRistretto(*point).decompress()?;
        Some((p * (self.half + self.half)).compress().to_bytes())
    }
}

/// The streaming intersection hash (see the module doc).
pub(crate) struct IntersectionHasher {
    ctx: digest::Context,
    count: u64,
}

impl IntersectionHasher {
    pub(crate) fn new(transcript: &[u8]) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(transcript);
        ctx.update(b"intersection");
        IntersectionHasher { ctx, count: 0 }
    }

    pub(crate) fn update(&mut self, point: &[u8]) {
        self.ctx.update(point);
        self.count += 1;
    }

    pub(crate) fn finish(self) -> [u8; 32] {
        let mut ctx = self.ctx;
        ctx.update(&self.count.to_le_bytes());
        to32(ctx.finish().as_ref())
    }
}
