//! Additively homomorphic encryption for the vertical protocols: Paillier from the
//! `fast-paillier` crate (LFDT Lockness), on its pure-Rust `num-bigint` backend by default or
//! on GMP (`rug`) with the crate's `gmp` feature (see [`BACKEND`]).
//!
//! The cipher — key generation, public-key encryption, decryption — is the library's. This module adds
//! only what the protocols compose on top of it, all of it the textbook homomorphism
//! `Enc(a)·Enc(b) = Enc(a + b)` and `Enc(a)^k = Enc(k·a)` (mod n²), computed with the
//! library's big integers (so on GMP when that backend is on):
//!
//! * [`Ciphertext`], and [`WireCiphertext`], its serialisable form, checked on receipt
//!   (`0 < c < n²`);
//! * the key owner's batch encryption with fixed-base short-exponent randomness
//!   (Damgård–Jurik–Nielsen, see [`SecretKey::encrypt_batch`]; tables mod `p²` and `q²`)
//!   and rayon-parallel decryption (the library's CRT, [`SecretKey::decrypt_batch`]);
//! * [`PublicKey::pack_rerandomised`]: slots packed by Horner's rule with the fresh
//!   `Enc(0) = ρⁿ` of a uniform `ρ ∈ Z*_n` computed on the same squarings;
//! * [`multi_exp`], `Π c_i^{e_i} mod n²` for many small exponents (Pippenger's bucket method),
//!   which is `Enc(Σ e_i·m_i)`: the passive party's `Xᵀ·Enc(r)`;
//! * signed digit packing ([`decode_digits`]): several small signed integers in one plaintext
//!   as `Σ d_k·2^{w·k}`, decoded with balanced digits, so sums of packed plaintexts decode to
//!   the per-slot sums as long as every slot's sum stays below `2^{w−1}` in magnitude.
//!
//! Plaintexts are signed `num_bigint` integers in `(−n/2, n/2]` (the library's convention).

use std::sync::OnceLock;

use fast_paillier::backend::{Integer as Big, Sign as BigSign};
use fast_paillier::{DecryptionKey, EncryptionKey};
use num_bigint::{BigInt as Integer, BigUint, Sign};
use num_integer::Integer as _;
use num_traits::{One, ToPrimitive, Zero};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{PeerError, VerticalError};

/// The big-integer backend the Paillier layer was built with: `"num-bigint"` (the default,
/// pure Rust) or `"gmp"` (`--no-default-features --features gmp`).
pub const BACKEND: &str = if cfg!(feature = "pure-rust") {
    "num-bigint"
} else {
    "gmp"
};

/// Smallest modulus accepted from a peer or for a new key, in bits. 2048 is the default of
/// [`SecretKey::generate`]'s callers; 1024 is allowed for tests only.
pub const MIN_MODULUS_BITS: u32 = 1024;
/// Largest modulus accepted (bounds the work a peer's key can cause).
pub const MAX_MODULUS_BITS: u32 = 4096;

/// A Paillier ciphertext as it travels: big-endian bytes of an integer in `(0, n²)`.
/// Serialised as one base64 string (standard alphabet, padded, canonical: ≈ 1.34 characters
/// per byte in JSON, where a byte array took ≈ 3.6), at most [`MAX_CIPHERTEXT_BYTES`] bytes;
/// anything else is refused while decoding ([`WireFormatError`]). The range check
/// `0 < c < n²` is [`PublicKey::ciphertext`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireCiphertext(pub Vec<u8>);

/// A public key as it travels: big-endian bytes of `n`, serialised as [`WireCiphertext`] is
/// (base64, at most [`MAX_PUBLIC_KEY_BYTES`] bytes). Its size and parity are checked by
/// [`PublicKey::from_wire`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WirePublicKey(pub Vec<u8>);

/// Bytes of the largest ciphertext accepted on the wire (`n²` of [`MAX_MODULUS_BITS`]).
pub const MAX_CIPHERTEXT_BYTES: usize = 2 * MAX_MODULUS_BITS as usize / 8;
/// Bytes of the largest public key accepted on the wire (`n` of [`MAX_MODULUS_BITS`]).
pub const MAX_PUBLIC_KEY_BYTES: usize = MAX_MODULUS_BITS as usize / 8;

/// Why a wire ciphertext or key did not decode (reported through the serde error of the
/// message that carried it).
#[derive(Debug, thiserror::Error)]
pub enum WireFormatError {
    #[error("{what}: {len} base64 characters, more than the {max} bytes one may hold")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what}: not canonical padded base64")]
    Base64 {
        what: &'static str,
        #[source]
        source: base64::DecodeError,
    },
}

/// base64 characters of `bytes` bytes (padded).
const fn base64_len(bytes: usize) -> usize {
    bytes.div_ceil(3) * 4
}

fn serialize_b64<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine as _;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Decodes one base64 string of at most `max` bytes, or says what was wrong.
struct B64Visitor {
    what: &'static str,
    max: usize,
}

impl serde::de::Visitor<'_> for B64Visitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: a base64 string of at most {} bytes",
            self.what, self.max
        )
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        use base64::Engine as _;
        if v.len() > base64_len(self.max) {
            return Err(E::custom(WireFormatError::TooLong {
                what: self.what,
                len: v.len(),
                max: self.max,
            }));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v)
            .map_err(|source| {
                E::custom(display_chain(&WireFormatError::Base64 {
                    what: self.what,
                    source,
                }))
            })?;
        if bytes.len() > self.max {
            return Err(E::custom(WireFormatError::TooLong {
                what: self.what,
                len: v.len(),
                max: self.max,
            }));
        }
        Ok(bytes)
    }
}

/// An error and its sources on one line (serde's errors carry a message only).
fn display_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Serialize for WireCiphertext {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_b64(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for WireCiphertext {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(B64Visitor {
            what: "ciphertext",
            max: MAX_CIPHERTEXT_BYTES,
        })
        .map(WireCiphertext)
    }
}

impl Serialize for WirePublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_b64(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for WirePublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(B64Visitor {
            what: "public key",
            max: MAX_PUBLIC_KEY_BYTES,
        })
        .map(WirePublicKey)
    }
}

/// A ciphertext in the backend's representation (an integer in `(0, n²)`), as checked by
/// [`PublicKey::ciphertext`] or made by this module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ciphertext(Big);

/// Adapts a `rand` 0.9 cryptographic RNG to the `rand_core` 0.6 traits `fast-paillier` uses.
pub(crate) struct Rng06<'a, R: ?Sized>(pub(crate) &'a mut R);

impl<R: rand::RngCore + ?Sized> rand_core_06::RngCore for Rng06<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core_06::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}
impl<R: rand::CryptoRng + ?Sized> rand_core_06::CryptoRng for Rng06<'_, R> {}

/// A `num_bigint` integer in the backend's representation.
fn big(x: &Integer) -> Big {
    let (sign, bytes) = x.to_bytes_be();
    let sign = if sign == Sign::Minus {
        BigSign::Negative
    } else {
        BigSign::NonNegative
    };
    Big::from_bytes_msf_signed(&bytes, sign)
}

/// A backend integer as `num_bigint`.
fn unbig(x: &Big) -> Integer {
    let (bytes, sign) = x.to_bytes_msf_signed();
    let sign = if sign == BigSign::Negative {
        Sign::Minus
    } else {
        Sign::Plus
    };
    Integer::from_biguint(sign, BigUint::from_bytes_be(&bytes))
}

/// Big-endian bytes of a non-negative integer.
pub(crate) fn to_bytes(x: &Integer) -> Vec<u8> {
    x.magnitude().to_bytes_be()
}

/// The non-negative integer of big-endian bytes.
pub(crate) fn from_bytes(b: &[u8]) -> Integer {
    Integer::from_bytes_be(Sign::Plus, b)
}

/// `a·b mod m`.
fn mulmod(a: &Big, b: &Big, m: &Big) -> Big {
    (a * b).modulo(m)
}

/// The public half: encrypts and operates on ciphertexts. Held by every party.
#[derive(Clone)]
pub struct PublicKey {
    ek: EncryptionKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({} bits)", self.bits())
    }
}

impl PublicKey {
    fn nn(&self) -> &Big {
        self.ek.nn()
    }

    /// Reads a peer's key: an odd modulus of `MIN_MODULUS_BITS..=MAX_MODULUS_BITS` bits.
    pub fn from_wire(w: &WirePublicKey) -> Result<Self, PeerError> {
        let n = Big::from_bytes_msf(&w.0);
        let bits = u32::try_from(n.significant_bits()).unwrap_or(u32::MAX);
        if !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&bits) || n.is_even() {
            return Err(PeerError::BadPublicKey { bits });
        }
        Ok(PublicKey {
            ek: EncryptionKey::from_n(n),
        })
    }

    pub fn to_wire(&self) -> WirePublicKey {
        WirePublicKey(self.ek.n().to_bytes_msf())
    }

    /// Bits of `n`.
    pub fn bits(&self) -> u32 {
        u32::try_from(self.ek.n().significant_bits()).unwrap_or(u32::MAX)
    }

    /// The modulus has the size the job agreed on, when one is required (`want`; without it
    /// only [`PublicKey::from_wire`]'s bounds apply).
    pub fn check_bits(&self, want: Option<u32>) -> Result<(), PeerError> {
        match want {
            Some(expected) if self.bits() != expected => Err(PeerError::KeyBitsMismatch {
                expected,
                got: self.bits(),
            }),
            _ => Ok(()),
        }
    }

    /// Bytes of the largest ciphertext.
    pub fn ciphertext_bytes(&self) -> usize {
        usize::try_from(self.nn().significant_bits())
            .unwrap_or(usize::MAX)
            .div_ceil(8)
    }

    /// Parses a received ciphertext; `what` and `index` name it in the error.
    pub fn ciphertext(
        &self,
        w: &WireCiphertext,
        what: &'static str,
        index: usize,
    ) -> Result<Ciphertext, PeerError> {
        if w.0.len() > self.ciphertext_bytes() {
            return Err(PeerError::CiphertextOutOfRange { what, index });
        }
        let c = Big::from_bytes_msf(&w.0);
        if !c.cmp0().is_gt() || &c >= self.nn() {
            return Err(PeerError::CiphertextOutOfRange { what, index });
        }
        Ok(Ciphertext(c))
    }

    /// Parses a batch of received ciphertexts, in parallel.
    pub fn ciphertexts(
        &self,
        w: &[WireCiphertext],
        what: &'static str,
    ) -> Result<Vec<Ciphertext>, PeerError> {
        w.par_iter()
            .enumerate()
            .map(|(i, c)| self.ciphertext(c, what, i))
            .collect()
    }

    /// `Enc(x)` with fresh uniform randomness `r ∈ Z*_n` (the library's public-key
    /// encryption: a full exponentiation `rⁿ mod n²`).
    pub fn encrypt<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        x: &Integer,
    ) -> Result<Ciphertext, VerticalError> {
        let (c, _) = self
            .ek
            .encrypt_with_random(&mut Rng06(rng), &big(x))
            .map_err(|source| VerticalError::Paillier { source })?;
        Ok(Ciphertext(c))
    }

    /// `count` fresh encryptions of zero with uniform randomness (the nonces drawn from
    /// `rng` in order, the exponentiations in parallel): what a party that does not own the
    /// key re-randomises with.
    pub fn encrypt_zeros<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        count: usize,
    ) -> Result<Vec<Ciphertext>, VerticalError> {
        let n = self.ek.n();
        let nonces: Vec<Big> = (0..count)
            .map(|_| Big::sample_in_mult_group_of(&mut Rng06(&mut *rng), n))
            .collect();
        let zero = Big::zero();
        nonces
            .par_iter()
            .map(|r| {
                self.ek
                    .encrypt_with(&zero, r)
                    .map(Ciphertext)
                    .map_err(|source| VerticalError::Paillier { source })
            })
            .collect()
    }

    /// `count` nonces `ρ` uniform in `Z*_n`, drawn from `rng` in order, for
    /// [`PublicKey::pack_rerandomised`].
    pub fn nonces<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        count: usize,
    ) -> Vec<Nonce> {
        let n = self.ek.n();
        (0..count)
            .map(|_| Nonce(Big::sample_in_mult_group_of(&mut Rng06(&mut *rng), n)))
            .collect()
    }

    /// `Π_b slots_b^{2^{shift·b}} · ρⁿ mod n²`: the slots packed into one ciphertext,
    /// `Enc(Σ_b x_b·2^{shift·b})` (an empty slot is 0), re-randomised by the fresh `Enc(0)`
    /// of nonce `ρ` — the same value as packing by Horner's rule and multiplying by the
    /// library's `Enc(0; ρ)`, for less work: `ρⁿ` rides on the packing's squarings. With
    /// `n = Σ_b d_b·2^{shift·b}` (digits of `shift` bits), Horner's step `b` multiplies
    /// by `slots_b·ρ^{d_b}`, so the squarings that shift the slots raise each `ρ^{d_b}` to
    /// its place too; the `ρ^{d_b}` come from one table of `ρ^{v·2^{4k}}` (`v < 16`).
    /// About `shift + 15·⌈shift/4⌉ + ⌈bits(n)/shift⌉·⌈shift/4⌉` multiplications for the
    /// nonce instead of an exponentiation by the 2,048-bit `n` (≈ 2,400). `shift` is at most
    /// 128.
    pub fn pack_rerandomised(
        &self,
        slots: &[Option<Ciphertext>],
        shift: u32,
        rho: &Nonce,
    ) -> Result<Ciphertext, VerticalError> {
        if !(1..=128).contains(&shift) {
            return Err(VerticalError::Internal(
                "packing shift outside 1..=128 bits",
            ));
        }
        let nn = self.nn();
        let digits = digits_u128(&unbig(self.ek.n()), shift);
        // table[k][v − 1] = ρ^{v·2^{4k}}
        let windows = shift.div_ceil(4) as usize;
        let mut table: Vec<Vec<Big>> = Vec::with_capacity(windows);
        let mut g = rho.0.clone();
        for _ in 0..windows {
            let mut row = Vec::with_capacity(15);
            let mut acc = g.clone();
            row.push(acc.clone());
            for _ in 1..15 {
                acc = mulmod(&acc, &g, nn);
                row.push(acc.clone());
            }
            g = mulmod(&acc, &g, nn);
            table.push(row);
        }
        let rho_to = |d: u128| -> Option<Big> {
            let mut out: Option<Big> = None;
            for (k, row) in table.iter().enumerate() {
                let v = ((d >> (4 * k)) & 15) as usize;
                if let Some(t) = v.checked_sub(1).and_then(|i| row.get(i)) {
                    out = Some(match out {
                        Some(o) => mulmod(&o, t, nn),
                        None => t.clone(),
                    });
                }
            }
            out
        };
        let two_to_shift = Big::one() << shift;
        let top = slots.len().max(digits.len());
        let mut acc: Option<Big> = None;
        for b in (0..top).rev() {
            if let Some(a) = acc.take() {
                acc = Some(
                    a.pow_mod_ref(&two_to_shift, nn)
                        .ok_or(VerticalError::Internal("modular exponentiation undefined"))?,
                );
            }
            let factors = [
                slots.get(b).and_then(|s| s.as_ref()).map(|c| c.0.clone()),
                digits.get(b).and_then(|&d| rho_to(d)),
            ];
            for f in factors.into_iter().flatten() {
                acc = Some(match acc.take() {
                    Some(a) => mulmod(&a, &f, nn),
                    None => f,
                });
            }
        }
        Ok(Ciphertext(acc.unwrap_or_else(Big::one)))
    }

    /// `Enc(0)` with `r = 1`: the neutral element of [`PublicKey::add`].
    pub fn one(&self) -> Ciphertext {
        Ciphertext(Big::one())
    }

    /// `a·b mod n²`: `Enc(x + y)` from `Enc(x)`, `Enc(y)`.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Ciphertext {
        Ciphertext(mulmod(&a.0, &b.0, self.nn()))
    }

    /// `c^e mod n²` for `e ≥ 0`: `Enc(e·x)`.
    pub fn mul_pos(&self, c: &Ciphertext, e: &Integer) -> Result<Ciphertext, VerticalError> {
        if e.sign() == Sign::Minus {
            return Err(VerticalError::Internal("negative exponent"));
        }
        c.0.pow_mod_ref(&big(e), self.nn())
            .map(Ciphertext)
            .ok_or(VerticalError::Internal("modular exponentiation undefined"))
    }

    /// `Enc(−x)` from `Enc(x)`.
    pub fn neg(&self, c: &Ciphertext) -> Result<Ciphertext, VerticalError> {
        c.0.invert_ref(self.nn())
            .map(Ciphertext)
            .ok_or(VerticalError::Internal("ciphertext not invertible mod n²"))
    }

    /// `Π c_i^{e_i} mod n²` (= `Enc(Σ e_i·x_i)`) for exponents below `2^exp_bits`.
    pub fn multi_exp(&self, bases: &[Ciphertext], exps: &[u64], exp_bits: u32) -> Ciphertext {
        Ciphertext(multi_exp(bases, exps, exp_bits, self.nn()))
    }

    pub fn to_wire_ct(c: &Ciphertext) -> WireCiphertext {
        WireCiphertext(c.0.to_bytes_msf())
    }
}

/// A nonce `ρ ∈ Z*_n` of a party's re-randomising `Enc(0) = ρⁿ mod n²`
/// ([`PublicKey::nonces`]).
pub struct Nonce(Big);

/// Digits of `width ≤ 128` bits of a non-negative `x`, lowest first.
fn digits_u128(x: &Integer, width: u32) -> Vec<u128> {
    let bytes = x.magnitude().to_bytes_le();
    let bits = bytes.len() * 8;
    let width = width.clamp(1, 128) as usize;
    (0..bits.div_ceil(width))
        .map(|d| {
            let mut v = 0u128;
            for i in (0..width).rev() {
                let bit = d * width + i;
                let set = bytes
                    .get(bit / 8)
                    .is_some_and(|byte| (byte >> (bit % 8)) & 1 == 1);
                v = (v << 1) | u128::from(set);
            }
            v
        })
        .collect()
}

/// Bits of the short exponents of the key owner's encryption randomness: half the modulus,
/// as Damgård, Jurik and Nielsen propose.
fn short_exponent_bits(modulus_bits: u32) -> u32 {
    modulus_bits / 2
}

/// `g^e mod m` for a fixed `g` and exponents of `exp_bits` bits by a table of
/// `g^{d·2^{8i}}` (`d = 1..=255`, one row per exponent byte): one multiplication per
/// non-zero byte of the exponent, no squarings (the fixed-base windowing of Brickell et al.;
/// HAC 14.109). 255·⌈bits/8⌉ entries: 16 MiB for 1,024-bit exponents mod a 4,096-bit n².
struct FixedBase {
    rows: Vec<Vec<Big>>,
    m: Big,
}

impl FixedBase {
    fn new(g: &Big, m: &Big, exp_bits: u32) -> Self {
        let n_rows = exp_bits.div_ceil(8) as usize;
        // g^{2^{8i}} by squarings, then each row's 255 powers in parallel
        let mut heads = Vec::with_capacity(n_rows);
        let mut h = g.clone();
        for _ in 0..n_rows {
            heads.push(h.clone());
            for _ in 0..8 {
                h = mulmod(&h, &h, m);
            }
        }
        let rows = heads
            .par_iter()
            .map(|h| {
                let mut row = Vec::with_capacity(255);
                let mut acc = h.clone();
                row.push(acc.clone());
                for _ in 1..255 {
                    acc = mulmod(&acc, h, m);
                    row.push(acc.clone());
                }
                row
            })
            .collect();
        FixedBase { rows, m: m.clone() }
    }

    /// `g^e` for `e` given as little-endian bytes (at most one per row).
    fn pow(&self, e_le: &[u8]) -> Big {
        let mut acc: Option<Big> = None;
        for (row, &d) in self.rows.iter().zip(e_le) {
            let Some(t) = d.checked_sub(1).and_then(|i| row.get(usize::from(i))) else {
                continue;
            };
            acc = Some(match acc {
                Some(a) => mulmod(&a, t, &self.m),
                None => t.clone(),
            });
        }
        acc.unwrap_or_else(Big::one)
    }
}

/// The key owner's encryption randomness: `h_s = hⁿ mod n²` for `h = −x² mod n` with a
/// random `x ∈ Z*_n`, and its fixed-base tables mod `p²` and mod `q²` (the two halves of
/// `h_s` by the Chinese remainder theorem, so each product is of half the size); a nonce is
/// `h_s^α`, `α` uniform of [`short_exponent_bits`] bits.
struct OwnerRandomness {
    table_p: FixedBase,
    table_q: FixedBase,
    exp_bytes: usize,
}

/// What the key owner's CRT arithmetic for its encryption randomness needs: `p²`, `q²`
/// and `(q²)⁻¹ mod p²` (to join the halves mod `n²`). Decryption is the library's.
struct Crt {
    /// For the tests' non-unit ciphertext.
    #[cfg(test)]
    p: Big,
    pp: Big,
    qq: Big,
    qq_inv_pp: Big,
}

impl Crt {
    fn new(p: &Big, q: &Big) -> Option<Self> {
        let pp = p * p;
        let qq = q * q;
        Some(Crt {
            qq_inv_pp: qq.invert_ref(&pp)?,
            #[cfg(test)]
            p: p.clone(),
            pp,
            qq,
        })
    }

    /// The `x` mod `n²` with `x ≡ a (mod p²)`, `x ≡ b (mod q²)` (Garner).
    fn join_squares(&self, a: &Big, b: &Big) -> Big {
        let t = ((a - b) * &self.qq_inv_pp).modulo(&self.pp);
        t * &self.qq + b
    }
}

/// The secret half, held by the active party only.
pub struct SecretKey {
    dk: DecryptionKey,
    public: PublicKey,
    crt: Crt,
    randomness: OnceLock<OwnerRandomness>,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({} bits)", self.public.bits())
    }
}

impl SecretKey {
    /// A fresh key with an `n` of `bits` bits (two random primes of `bits/2`; Paillier needs
    /// no safe primes).
    pub fn generate<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        rng: &mut R,
        bits: u32,
    ) -> Result<Self, VerticalError> {
        if !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&bits) || bits % 2 != 0 {
            return Err(VerticalError::Config(format!(
                "Paillier modulus of {bits} bits: must be even and in {MIN_MODULUS_BITS}..={MAX_MODULUS_BITS}"
            )));
        }
        loop {
            let p = Big::generate_prime(&mut Rng06(&mut *rng), bits / 2);
            let q = Big::generate_prime(&mut Rng06(&mut *rng), bits / 2);
            if p == q {
                continue;
            }
            if (&p * &q).significant_bits() != u64::from(bits) {
                continue;
            }
            let Some(crt) = Crt::new(&p, &q) else {
                continue;
            };
            let dk = DecryptionKey::from_primes(p, q)
                .map_err(|source| VerticalError::Paillier { source })?;
            let public = PublicKey {
                ek: dk.encryption_key().clone(),
            };
            return Ok(SecretKey {
                dk,
                public,
                crt,
                randomness: OnceLock::new(),
            });
        }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// `Enc(x)` by the key owner (see [`SecretKey::encrypt_batch`]).
    pub fn encrypt_one<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        x: &Integer,
    ) -> Result<Ciphertext, VerticalError> {
        self.encrypt_batch(rng, std::slice::from_ref(x))?
            .pop()
            .ok_or(VerticalError::Internal("empty batch"))
    }

    /// Decrypts one ciphertext (signed plaintext).
    pub fn decrypt_one(&self, c: &Ciphertext) -> Result<Integer, PeerError> {
        self.decrypt_batch(std::slice::from_ref(c), "ciphertext")?
            .pop()
            .ok_or(PeerError::WrongSize {
                what: "ciphertext",
                expected: 1,
                got: 0,
            })
    }

    /// The fixed base and its table, made on first use from `rng`.
    fn randomness<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> Result<&OwnerRandomness, VerticalError> {
        if let Some(r) = self.randomness.get() {
            return Ok(r);
        }
        let n = self.dk.n();
        let x = Big::sample_in_mult_group_of(&mut Rng06(&mut *rng), n);
        let h = n - x.square_ref().modulo(n);
        // hⁿ mod n² by the library's CRT (the encryption of 0 with nonce h)
        let hs = self
            .dk
            .encrypt_with(&Big::zero(), &h)
            .map_err(|source| VerticalError::Paillier { source })?;
        let bits = short_exponent_bits(self.public.bits());
        let crt = &self.crt;
        let (table_p, table_q) = rayon::join(
            || FixedBase::new(&hs.modulo_ref(&crt.pp), &crt.pp, bits),
            || FixedBase::new(&hs.modulo_ref(&crt.qq), &crt.qq, bits),
        );
        let made = OwnerRandomness {
            table_p,
            table_q,
            exp_bytes: bits.div_ceil(8) as usize,
        };
        // a concurrent first use may have set it meanwhile; either table is as good
        let _ = self.randomness.set(made);
        self.randomness
            .get()
            .ok_or(VerticalError::Internal("owner randomness not set"))
    }

    /// Encrypts every plaintext, in parallel: `(1 + x·n)·h_s^α mod n²` with a fresh uniform
    /// `α` of `bits(n)/2` bits per plaintext (drawn from `rng` in order first) and the
    /// key's fixed base `h_s = hⁿ` — the short-exponent randomness of Damgård, Jurik and
    /// Nielsen (2010): `h_s^α = (h^α)ⁿ` is an n-th residue, so these are ordinary
    /// Paillier ciphertexts (the library decrypts them), made with ≈ bits(n)/16
    /// multiplications by a precomputed table instead of one exponentiation by n. The
    /// first call builds the table (255·bits(n)/16 multiplications).
    pub fn encrypt_batch<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        xs: &[Integer],
    ) -> Result<Vec<Ciphertext>, VerticalError> {
        let rand = self.randomness(rng)?;
        let exps: Vec<Vec<u8>> = xs
            .iter()
            .map(|_| {
                let mut e = vec![0u8; rand.exp_bytes];
                rng.fill_bytes(&mut e);
                e
            })
            .collect();
        let ek = &self.public.ek;
        let n = ek.n();
        let nn = ek.nn();
        xs.par_iter()
            .zip(exps.par_iter())
            .enumerate()
            .map(|(index, (x, e))| {
                let x = big(x);
                if !ek.in_signed_group(&x) {
                    return Err(VerticalError::Config(format!(
                        "plaintext {index} outside (−n/2, n/2]"
                    )));
                }
                let x = if x.cmp0().is_lt() { x + n } else { x };
                // (1 + n)^x = 1 + x·n mod n²
                let a = (Big::one() + &x * n).modulo(nn);
                // h_s^α mod p² and mod q², joined mod n²
                let hs = self
                    .crt
                    .join_squares(&rand.table_p.pow(e), &rand.table_q.pow(e));
                Ok(Ciphertext(mulmod(&a, &hs, nn)))
            })
            .collect()
    }

    /// Decrypts every ciphertext (signed plaintexts), in parallel, with the library's CRT
    /// decryption. A ciphertext outside `(0, n²)` or the multiplicative group of n² is the
    /// peer's fault.
    pub fn decrypt_batch(
        &self,
        cs: &[Ciphertext],
        what: &'static str,
    ) -> Result<Vec<Integer>, PeerError> {
        cs.par_iter()
            .enumerate()
            .map(|(index, c)| {
                if !c.0.cmp0().is_gt() || &c.0 >= self.public.nn() {
                    return Err(PeerError::Undecryptable { what, index });
                }
                self.dk
                    .decrypt(&c.0)
                    .map(|m| unbig(&m))
                    .map_err(|_| PeerError::Undecryptable { what, index })
            })
            .collect()
    }
}

/// `Π bases_i^{exps_i} mod m` by Pippenger's bucket method: the exponents are cut into
/// windows of `c` bits; per window each base is multiplied into the bucket of its digit
/// (one multiplication per base), the buckets are combined with `2·2^c` multiplications, and
/// the windows by Horner's rule (`c` squarings each). About `⌈bits/c⌉·(len + 2^{c+1})`
/// multiplications instead of `len·bits·1.5` for one exponentiation per base.
fn multi_exp(bases: &[Ciphertext], exps: &[u64], exp_bits: u32, m: &Big) -> Big {
    let bits = exp_bits.clamp(1, 64);
    let len = bases.len().min(exps.len());
    // window minimising windows·(len + 2^{c+1})
    let cost = |c: u32| u64::from(bits.div_ceil(c)) * (len as u64 + (1u64 << (c + 1)));
    let c = (1..=16u32).min_by_key(|&c| cost(c)).unwrap_or(8);
    let windows = bits.div_ceil(c);
    let mask = (1u64 << c) - 1;
    let mut acc: Option<Big> = None;
    for w in (0..windows).rev() {
        if let Some(a) = acc.as_mut() {
            for _ in 0..c {
                *a = mulmod(a, a, m);
            }
        }
        let shift = w * c;
        let mut buckets: Vec<Option<Big>> = vec![None; 1usize << c];
        for (b, &e) in bases.iter().zip(exps).take(len) {
            let d = ((e >> shift) & mask) as usize;
            if d == 0 {
                continue;
            }
            if let Some(slot) = buckets.get_mut(d) {
                match slot {
                    Some(v) => *v = mulmod(v, &b.0, m),
                    None => *slot = Some(b.0.clone()),
                }
            }
        }
        // Σ_d d·B_d as running products: S = Π_{k≥d} B_k, T = Π_d S_d.
        let mut s: Option<Big> = None;
        let mut t: Option<Big> = None;
        for bucket in buckets.into_iter().skip(1).rev() {
            if let Some(bv) = bucket {
                s = Some(match s {
                    Some(v) => mulmod(&v, &bv, m),
                    None => bv,
                });
            }
            if let Some(sv) = &s {
                t = Some(match t {
                    Some(v) => mulmod(&v, sv, m),
                    None => sv.clone(),
                });
            }
        }
        if let Some(tv) = t {
            acc = Some(match acc {
                Some(a) => mulmod(&a, &tv, m),
                None => tv,
            });
        }
    }
    acc.unwrap_or_else(Big::one)
}

/// Decodes `count` balanced signed digits of `width` bits from `v` (lowest first): the
/// inverse of `Σ d_k·2^{width·k}` for `|d_k| < 2^{width−1}`. Digits outside `i64` are
/// saturated, so `width` must be at most 64. Returns `None` when `v` holds more than `count`
/// digits (a value a correct peer cannot produce).
pub(crate) fn decode_digits(v: &Integer, width: u32, count: usize) -> Option<Vec<i64>> {
    let modulus = Integer::one() << width;
    let half = Integer::one() << (width - 1);
    let mut rest = v.clone();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        // the low `width` bits of the two's complement, in [0, 2^width)
        let mut d = rest.mod_floor(&modulus);
        if d >= half {
            d -= &modulus;
        }
        rest -= &d;
        rest >>= width;
        out.push(d.to_i64()?);
    }
    if !rest.is_zero() {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A vector of full-size ciphertexts costs at most 1.4 × its raw bytes (+ 3 characters
    /// each: quotes and comma) in JSON; the byte-array form took ≈ 3.6 ×.
    #[test]
    fn ciphertexts_are_compact_in_json_and_round_trip() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let sk = SecretKey::generate(&mut rng, 1024).unwrap();
        let pk = sk.public().clone();
        let xs: Vec<Integer> = (0..64i64).map(Integer::from).collect();
        let wire: Vec<WireCiphertext> = sk
            .encrypt_batch(&mut rng, &xs)
            .unwrap()
            .iter()
            .map(PublicKey::to_wire_ct)
            .collect();
        let raw: usize = wire.iter().map(|c| c.0.len()).sum();
        assert!(raw >= 64 * 250, "{raw}");
        let json = serde_json::to_string(&wire).unwrap();
        assert!(
            json.len() as f64 <= 1.4 * raw as f64 + 3.0 * 64.0 + 2.0,
            "{} JSON bytes for {raw} ciphertext bytes",
            json.len()
        );
        let back: Vec<WireCiphertext> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, wire);
        let cts = pk.ciphertexts(&back, "t").unwrap();
        assert_eq!(sk.decrypt_batch(&cts, "t").unwrap(), xs);
        let key = serde_json::to_string(&pk.to_wire()).unwrap();
        assert!(key.len() <= 128 * 4 / 3 + 4, "{key}");
        let key: WirePublicKey = serde_json::from_str(&key).unwrap();
        assert_eq!(PublicKey::from_wire(&key).unwrap().bits(), 1024);
    }

    #[test]
    fn a_malformed_wire_ciphertext_or_key_is_refused_by_name() {
        let err = |json: &str| {
            serde_json::from_str::<WireCiphertext>(json)
                .unwrap_err()
                .to_string()
        };
        // The old byte-array form, a non-base64 character, bad padding, non-zero trailing
        // bits, a string longer than the largest ciphertext.
        for (json, want) in [
            ("[1,2,3]", "ciphertext: a base64 string"),
            ("\"AAA*\"", "ciphertext: not canonical padded base64"),
            ("\"AAA\"", "ciphertext: not canonical padded base64"),
            ("\"AB==\"", "ciphertext: not canonical padded base64"),
        ] {
            let e = err(json);
            assert!(e.contains(want), "{json}: {e}");
        }
        let long = format!("\"{}\"", "A".repeat(base64_len(MAX_CIPHERTEXT_BYTES) + 4));
        assert!(
            err(&long).contains("more than the 1024 bytes"),
            "{}",
            err(&long)
        );
        let key = format!("\"{}\"", "A".repeat(base64_len(MAX_PUBLIC_KEY_BYTES) + 4));
        let e = serde_json::from_str::<WirePublicKey>(&key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("public key") && e.contains("512 bytes"), "{e}");
        // Well-formed base64 of an out-of-range integer still meets the range check.
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
        let pk = SecretKey::generate(&mut rng, 1024)
            .unwrap()
            .public()
            .clone();
        let zero: WireCiphertext = serde_json::from_str("\"AA==\"").unwrap();
        assert_eq!(
            pk.ciphertext(&zero, "t", 0),
            Err(PeerError::CiphertextOutOfRange {
                what: "t",
                index: 0
            })
        );
    }

    #[test]
    fn digits_round_trip_and_add() {
        let ds = [5i64, -7, 0, i64::from(i32::MAX), -(1 << 40)];
        let enc = |ds: &[i64]| {
            ds.iter()
                .rev()
                .fold(Integer::zero(), |acc, &d| (acc << 64u32) + Integer::from(d))
        };
        let v = enc(&ds);
        assert_eq!(decode_digits(&v, 64, ds.len()).unwrap(), ds);
        let sum = &v + &v;
        let twice: Vec<i64> = ds.iter().map(|d| 2 * d).collect();
        assert_eq!(decode_digits(&sum, 64, ds.len()).unwrap(), twice);
        assert!(decode_digits(&v, 64, ds.len() - 1).is_none());
    }

    #[test]
    fn multi_exp_is_sum_of_products() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let sk = SecretKey::generate(&mut rng, 1024).unwrap();
        let pk = sk.public().clone();
        let xs: Vec<Integer> = (0..40i64).map(|i| Integer::from(i * 37 - 500)).collect();
        let cs = sk.encrypt_batch(&mut rng, &xs).unwrap();
        let es: Vec<u64> = (0..40u64).map(|i| (i * 7919 + 13) % (1 << 20)).collect();
        let c = pk.multi_exp(&cs, &es, 20);
        let got = sk.decrypt_batch(&[c], "t").unwrap().remove(0);
        let want: i64 = xs
            .iter()
            .zip(&es)
            .map(|(x, &e)| x.to_i64().unwrap() * e as i64)
            .sum();
        assert_eq!(got, Integer::from(want));
    }

    #[test]
    fn fixed_base_table_is_exponentiation() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let m = big(&Integer::from(1_000_003u64 * 999_983));
        let g = big(&Integer::from(123_457u64));
        let fb = FixedBase::new(&g, &m, 40);
        for _ in 0..20 {
            let e: Vec<u8> = (0..5).map(|_| rand::Rng::random(&mut rng)).collect();
            let mut e_be = e.clone();
            e_be.reverse();
            let want = g.pow_mod_ref(&Big::from_bytes_msf(&e_be), &m).unwrap();
            assert_eq!(fb.pow(&e), want);
        }
        assert_eq!(fb.pow(&[0; 5]), Big::one());
    }

    /// The packing with its nonce riding on the squarings is Horner's packing times the
    /// library's `Enc(0; ρ)`, value for value.
    #[test]
    fn packing_with_its_nonce_is_packing_times_enc_zero() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(13);
        let sk = SecretKey::generate(&mut rng, 1024).unwrap();
        let pk = sk.public().clone();
        let xs: Vec<Integer> = (0..9i64)
            .map(|i| Integer::from(i * 12_345 - 40_000))
            .collect();
        let cs = sk.encrypt_batch(&mut rng, &xs).unwrap();
        let shift = 98u32;
        for len in [1usize, 4, 9] {
            let mut slots: Vec<Option<Ciphertext>> =
                cs.iter().take(len).cloned().map(Some).collect();
            if len > 2 {
                slots[1] = None;
            }
            let rho = pk.nonces(&mut rng, 1).pop().unwrap();
            let got = pk.pack_rerandomised(&slots, shift, &rho).unwrap();
            let mut want = Big::one();
            let two = Integer::one() << shift;
            for s in slots.iter().rev() {
                want = pk.mul_pos(&Ciphertext(want), &two).unwrap().0;
                if let Some(c) = s {
                    want = mulmod(&want, &c.0, pk.nn());
                }
            }
            let z = pk.ek.encrypt_with(&Big::zero(), &rho.0).unwrap();
            assert_eq!(got.0, mulmod(&want, &z, pk.nn()), "{len}");
            let plain = sk.decrypt_one(&got).unwrap();
            let sum = slots
                .iter()
                .zip(&xs)
                .enumerate()
                .filter(|(_, (s, _))| s.is_some())
                .fold(Integer::zero(), |a, (b, (_, x))| {
                    a + (x << (shift as usize * b))
                });
            assert_eq!(plain, sum, "{len}");
        }
        assert!(pk
            .pack_rerandomised(&[], 129, &pk.nonces(&mut rng, 1)[0])
            .is_err());
    }

    /// Decryption (the library's) gives the plaintexts of both kinds of encryption, and a
    /// ciphertext sharing a factor with n, or 0, is refused.
    #[test]
    fn decryption_refuses_non_units() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(12);
        let sk = SecretKey::generate(&mut rng, 1024).unwrap();
        let pk = sk.public().clone();
        let xs: Vec<Integer> = (0..16i64)
            .map(|i| Integer::from(i * 1_000_003 - 7))
            .collect();
        let mut cs = pk.encrypt_zeros(&mut rng, 4).unwrap();
        cs.extend(sk.encrypt_batch(&mut rng, &xs).unwrap());
        let ours = sk.decrypt_batch(&cs, "t").unwrap();
        assert!(ours[..4].iter().all(|m| *m == Integer::zero()));
        assert_eq!(&ours[4..], &xs[..]);
        let bad = [Ciphertext(sk.crt.p.clone()), Ciphertext(Big::zero())];
        for (i, c) in bad.iter().enumerate() {
            assert_eq!(
                sk.decrypt_batch(std::slice::from_ref(c), "t"),
                Err(PeerError::Undecryptable {
                    what: "t",
                    index: 0
                }),
                "{i}"
            );
        }
    }

    #[test]
    fn owner_encryptions_decrypt_and_differ() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        let sk = SecretKey::generate(&mut rng, 1024).unwrap();
        let half = sk.public().ek.half_n().clone();
        let xs: Vec<Integer> = vec![
            Integer::from(0),
            Integer::from(-1),
            Integer::from(i64::MAX),
            Integer::from(-(1i64 << 62)),
            unbig(&half),
            -unbig(&half) + 1,
            Integer::from(0),
        ];
        let cs = sk.encrypt_batch(&mut rng, &xs).unwrap();
        assert_eq!(sk.decrypt_batch(&cs, "t").unwrap(), xs);
        // fresh randomness: the two encryptions of 0 differ
        assert_ne!(cs[0], cs[6]);
        // a second batch uses the same table and other exponents
        let again = sk.encrypt_batch(&mut rng, &xs[..1]).unwrap();
        assert_ne!(again[0], cs[0]);
        // out of range is refused
        let over = unbig(&half) + 1;
        assert!(sk.encrypt_batch(&mut rng, &[over]).is_err());
        // and the public-key encryptions decrypt too
        let z = sk.public().encrypt_zeros(&mut rng, 3).unwrap();
        assert_eq!(
            sk.decrypt_batch(&z, "z").unwrap(),
            vec![Integer::from(0); 3]
        );
    }
}
