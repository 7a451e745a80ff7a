//! Additively homomorphic encryption for the vertical protocols: Paillier from the
//! `fast-paillier` crate (LFDT Lockness) on its pure-Rust `num-bigint` backend.
//!
//! The cipher — key generation, encryption, decryption — is the library's. This module adds
//! only what the protocols compose on top of it, all of it the textbook homomorphism
//! `Enc(a)·Enc(b) = Enc(a + b)` and `Enc(a)^k = Enc(k·a)` (mod n²):
//!
//! * [`WireCiphertext`], the serialisable form, checked on receipt (`0 < c < n²`);
//! * batched, rayon-parallel encryption (the key owner's with CRT) and decryption;
//! * [`multi_exp`], `Π c_i^{e_i} mod n²` for many small exponents (Pippenger's bucket method),
//!   which is `Enc(Σ e_i·m_i)`: the passive party's `Xᵀ·Enc(r)`;
//! * signed digit packing ([`decode_digits`]): several small signed integers in one plaintext
//!   as `Σ d_k·2^{w·k}`, decoded with balanced digits, so sums of packed plaintexts decode to
//!   the per-slot sums as long as every slot's sum stays below `2^{w−1}` in magnitude.
//!
//! Plaintexts are signed integers in `(−n/2, n/2]` (the library's convention).

use fast_paillier::backend::Integer as FpInteger;
use fast_paillier::{DecryptionKey, EncryptionKey};
use num_bigint::{BigInt as Integer, Sign};
use num_integer::Integer as _;
use num_traits::{One, Signed, ToPrimitive, Zero};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{PeerError, VerticalError};

/// Smallest modulus accepted from a peer or for a new key, in bits. 2048 is the default of
/// [`SecretKey::generate`]'s callers; 1024 is allowed for tests only.
pub const MIN_MODULUS_BITS: u32 = 1024;
/// Largest modulus accepted (bounds the work a peer's key can cause).
pub const MAX_MODULUS_BITS: u32 = 4096;

/// A Paillier ciphertext as it travels: big-endian bytes of an integer in `(0, n²)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCiphertext(pub Vec<u8>);

/// A public key as it travels: big-endian bytes of `n`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePublicKey(pub Vec<u8>);

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

fn fp(x: &Integer) -> FpInteger {
    FpInteger::from_num_bigint(x.clone())
}

/// Big-endian bytes of a non-negative integer.
pub(crate) fn to_bytes(x: &Integer) -> Vec<u8> {
    x.magnitude().to_bytes_be()
}

/// The non-negative integer of big-endian bytes.
pub(crate) fn from_bytes(b: &[u8]) -> Integer {
    Integer::from_bytes_be(Sign::Plus, b)
}

/// The public half: encrypts and operates on ciphertexts. Held by every party.
#[derive(Clone)]
pub struct PublicKey {
    ek: EncryptionKey,
    n: Integer,
    nn: Integer,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({} bits)", self.n.bits())
    }
}

impl PublicKey {
    fn from_n(n: Integer) -> Self {
        let nn = &n * &n;
        PublicKey {
            ek: EncryptionKey::from_n(FpInteger::from_num_bigint(n.clone())),
            n,
            nn,
        }
    }

    /// Reads a peer's key: an odd modulus of `MIN_MODULUS_BITS..=MAX_MODULUS_BITS` bits.
    pub fn from_wire(w: &WirePublicKey) -> Result<Self, PeerError> {
        let n = from_bytes(&w.0);
        let bits = n.bits() as u32;
        if !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&bits) || n.is_even() {
            return Err(PeerError::BadPublicKey { bits });
        }
        Ok(Self::from_n(n))
    }

    pub fn to_wire(&self) -> WirePublicKey {
        WirePublicKey(to_bytes(&self.n))
    }

    /// Bits of `n`.
    pub fn bits(&self) -> u32 {
        self.n.bits() as u32
    }

    /// Bytes of the largest ciphertext.
    pub fn ciphertext_bytes(&self) -> usize {
        (self.nn.bits() as usize).div_ceil(8)
    }

    /// Parses a received ciphertext; `what` and `index` name it in the error.
    pub fn ciphertext(
        &self,
        w: &WireCiphertext,
        what: &'static str,
        index: usize,
    ) -> Result<Integer, PeerError> {
        if w.0.len() > self.ciphertext_bytes() {
            return Err(PeerError::CiphertextOutOfRange { what, index });
        }
        let c = from_bytes(&w.0);
        if c.is_zero() || c >= self.nn {
            return Err(PeerError::CiphertextOutOfRange { what, index });
        }
        Ok(c)
    }

    /// Parses a batch of received ciphertexts, in parallel.
    pub fn ciphertexts(
        &self,
        w: &[WireCiphertext],
        what: &'static str,
    ) -> Result<Vec<Integer>, PeerError> {
        w.par_iter()
            .enumerate()
            .map(|(i, c)| self.ciphertext(c, what, i))
            .collect()
    }

    /// `Enc(x)` with fresh randomness (a full exponentiation by `n` mod n²).
    pub fn encrypt<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        x: &Integer,
    ) -> Result<Integer, VerticalError> {
        let (c, _) = self
            .ek
            .encrypt_with_random(&mut Rng06(rng), &fp(x))
            .map_err(|source| VerticalError::Paillier { source })?;
        Ok(c.to_num_bigint())
    }

    /// `a·b mod n²`: `Enc(x + y)` from `Enc(x)`, `Enc(y)`.
    pub(crate) fn add(&self, a: &Integer, b: &Integer) -> Integer {
        (a * b) % &self.nn
    }

    /// `c^e mod n²` for `e ≥ 0`: `Enc(e·x)`.
    pub(crate) fn mul_pos(&self, c: &Integer, e: &Integer) -> Result<Integer, VerticalError> {
        if e.is_negative() {
            return Err(VerticalError::Internal("negative exponent"));
        }
        Ok(c.modpow(e, &self.nn))
    }

    /// `Enc(−x)` from `Enc(x)`.
    pub(crate) fn neg(&self, c: &Integer) -> Result<Integer, VerticalError> {
        c.modinv(&self.nn)
            .ok_or(VerticalError::Internal("ciphertext not invertible mod n²"))
    }

    /// `Π c_i^{e_i} mod n²` (= `Enc(Σ e_i·x_i)`) for exponents below `2^exp_bits`.
    pub(crate) fn multi_exp(&self, bases: &[Integer], exps: &[u64], exp_bits: u32) -> Integer {
        multi_exp(bases, exps, exp_bits, &self.nn)
    }

    /// `Enc(a + b)` from `Enc(a)`, `Enc(b)` (public for the benches).
    pub fn add_ct(&self, a: &Integer, b: &Integer) -> Integer {
        self.add(a, b)
    }

    /// `Enc(e·a)` from `Enc(a)`, `e ≥ 0` (public for the benches).
    pub fn mul_ct(&self, c: &Integer, e: &Integer) -> Result<Integer, VerticalError> {
        self.mul_pos(c, e)
    }

    pub fn to_wire_ct(c: &Integer) -> WireCiphertext {
        WireCiphertext(to_bytes(c))
    }
}

/// The secret half, held by the active party only.
pub struct SecretKey {
    dk: DecryptionKey,
    public: PublicKey,
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
            let p = FpInteger::generate_prime(&mut Rng06(&mut *rng), bits / 2);
            let q = FpInteger::generate_prime(&mut Rng06(&mut *rng), bits / 2);
            if p == q {
                continue;
            }
            let n = p.clone().to_num_bigint() * q.clone().to_num_bigint();
            if n.bits() != u64::from(bits) {
                continue;
            }
            let dk = DecryptionKey::from_primes(p, q)
                .map_err(|source| VerticalError::Paillier { source })?;
            let public = PublicKey::from_n(dk.n().clone().to_num_bigint());
            return Ok(SecretKey { dk, public });
        }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// `Enc(x)` by the key owner (CRT).
    pub fn encrypt_one<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        x: &Integer,
    ) -> Result<Integer, VerticalError> {
        self.encrypt_batch(rng, std::slice::from_ref(x))?
            .pop()
            .ok_or(VerticalError::Internal("empty batch"))
    }

    /// Decrypts one ciphertext (signed plaintext).
    pub fn decrypt_one(&self, c: &Integer) -> Result<Integer, PeerError> {
        self.decrypt_batch(std::slice::from_ref(c), "ciphertext")?
            .pop()
            .ok_or(PeerError::WrongSize {
                what: "ciphertext",
                expected: 1,
                got: 0,
            })
    }

    /// Encrypts every plaintext with fresh randomness, using the factorisation (CRT), in
    /// parallel; the nonces are drawn from `rng` in order first.
    pub(crate) fn encrypt_batch<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        xs: &[Integer],
    ) -> Result<Vec<Integer>, VerticalError> {
        let n = self.dk.n();
        let nonces: Vec<FpInteger> = xs
            .iter()
            .map(|_| FpInteger::sample_in_mult_group_of(&mut Rng06(&mut *rng), n))
            .collect();
        xs.par_iter()
            .zip(nonces.par_iter())
            .map(|(x, r)| {
                self.dk
                    .encrypt_with(&fp(x), r)
                    .map(FpInteger::to_num_bigint)
                    .map_err(|source| VerticalError::Paillier { source })
            })
            .collect()
    }

    /// Decrypts every ciphertext (signed plaintexts), in parallel. A ciphertext outside the
    /// multiplicative group of n² is the peer's fault.
    pub(crate) fn decrypt_batch(
        &self,
        cs: &[Integer],
        what: &'static str,
    ) -> Result<Vec<Integer>, PeerError> {
        cs.par_iter()
            .enumerate()
            .map(|(index, c)| {
                self.dk
                    .decrypt(&fp(c))
                    .map(FpInteger::to_num_bigint)
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
pub(crate) fn multi_exp(bases: &[Integer], exps: &[u64], exp_bits: u32, m: &Integer) -> Integer {
    let bits = exp_bits.clamp(1, 64);
    let len = bases.len().min(exps.len());
    // window minimising windows·(len + 2^{c+1})
    let cost = |c: u32| u64::from(bits.div_ceil(c)) * (len as u64 + (1u64 << (c + 1)));
    let c = (1..=16u32).min_by_key(|&c| cost(c)).unwrap_or(8);
    let windows = bits.div_ceil(c);
    let mask = (1u64 << c) - 1;
    let mut acc: Option<Integer> = None;
    for w in (0..windows).rev() {
        if let Some(a) = acc.as_mut() {
            for _ in 0..c {
                *a = &*a * &*a % m;
            }
        }
        let shift = w * c;
        let mut buckets: Vec<Option<Integer>> = vec![None; 1usize << c];
        for (b, &e) in bases.iter().zip(exps).take(len) {
            let d = ((e >> shift) & mask) as usize;
            if d == 0 {
                continue;
            }
            if let Some(slot) = buckets.get_mut(d) {
                match slot {
                    Some(v) => *v = &*v * b % m,
                    None => *slot = Some(b.clone()),
                }
            }
        }
        // Σ_d d·B_d as running products: S = Π_{k≥d} B_k, T = Π_d S_d.
        let mut s: Option<Integer> = None;
        let mut t: Option<Integer> = None;
        for bucket in buckets.into_iter().skip(1).rev() {
            if let Some(bv) = bucket {
                s = Some(match s {
                    Some(v) => v * &bv % m,
                    None => bv,
                });
            }
            if let Some(sv) = &s {
                t = Some(match t {
                    Some(v) => v * sv % m,
                    None => sv.clone(),
                });
            }
        }
        if let Some(tv) = t {
            acc = Some(match acc {
                Some(a) => a * &tv % m,
                None => tv,
            });
        }
    }
    acc.unwrap_or_else(Integer::one)
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
}
