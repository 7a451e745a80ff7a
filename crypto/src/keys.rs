//! Keys and primitives: Ed25519 identities, X25519 agreement, HKDF, one-shot AEAD.
//!
//! - [`IdentityKey`]: a participant's long-term Ed25519 key (ring), used to sign its
//!   advertised round keys so the coordinator cannot substitute its own.
//! - [`AgreementSecret`]: an X25519 secret (x25519-dalek `StaticSecret`). Unlike ring's
//!   ephemeral keys it can be exported, because the mask-key secret `s_u` must be
//!   Shamir-shared so that the masks of a dropped participant can be removed.
//! - [`hkdf32`]: HKDF-SHA256 to turn agreement outputs into PRG seeds and AEAD keys, with the
//!   round, the pair and the direction in `info`.
//! - [`seal`] / [`open`]: ChaCha20-Poly1305 with an all-zero nonce. Safe ONLY because every
//!   key is derived for a single message (per round, pair and direction).
//!
//! Secrets are wiped on drop and never printed: the `Debug` impls show public keys only.

use std::fmt;

use rand::CryptoRng;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hkdf;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// Reasons a key operation is refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KeyError {
    /// ring refused the Ed25519 seed.
    #[error("invalid Ed25519 seed")]
    BadSeed,
    /// The signature does not verify under the public key (wrong key, message or signature).
    #[error("signature verification failed")]
    BadSignature,
    /// X25519 with a low-order peer key: the output does not depend on our secret.
    #[error("non-contributory X25519 agreement (peer sent a low-order public key)")]
    NonContributory,
    /// Authentication failed: wrong key, wrong associated data or tampered ciphertext.
    #[error("decryption failed (wrong key or associated data, or tampered ciphertext)")]
    Decrypt,
}

fn hex8(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A long-term Ed25519 identity key.
pub struct IdentityKey {
    pair: Ed25519KeyPair,
    seed: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKey")
            .field(
                "public_key",
                &format_args!("{}..", hex8(&self.public_key())),
            )
            .finish_non_exhaustive()
    }
}

impl IdentityKey {
    /// The key pair for a 32-byte seed (RFC 8032 private key), e.g. read from a key file.
    pub fn from_seed(seed: [u8; 32]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| KeyError::BadSeed)?;
        Ok(IdentityKey {
            pair,
            seed: Zeroizing::new(seed),
        })
    }

    /// A fresh key from `rng`.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        loop {
            let mut seed = Zeroizing::new([0u8; 32]);
            rng.fill_bytes(seed.as_mut());
            // ring accepts every 32-byte seed; retrying keeps this total without a panic.
            if let Ok(key) = Self::from_seed(*seed) {
                return key;
            }
        }
    }

    /// The seed, for writing the key file. Treat it as the private key.
    pub fn seed(&self) -> [u8; 32] {
        *self.seed
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.pair.public_key().as_ref());
        pk
    }

    /// A 64-byte Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }
}

/// Verifies an Ed25519 signature (ring).
pub fn verify_signature(
    public_key: &[u8; 32],
    msg: &[u8],
    signature: &[u8],
) -> Result<(), KeyError> {
    signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(msg, signature)
        .map_err(|_| KeyError::BadSignature)
}

/// An exportable X25519 secret: its bytes are Shamir-shared in the protocol.
pub struct AgreementSecret {
    secret: StaticSecret,
}

impl fmt::Debug for AgreementSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgreementSecret")
            .field(
                "public_key",
                &format_args!("{}..", hex8(&self.public_key())),
            )
            .finish_non_exhaustive()
    }
}

impl AgreementSecret {
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self::from_bytes(*bytes)
    }

    /// Any 32 bytes are a valid secret (clamped when used, as RFC 7748 specifies).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        AgreementSecret {
            secret: StaticSecret::from(bytes),
        }
    }

    /// The bytes given to [`AgreementSecret::from_bytes`] (unclamped).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    pub fn public_key(&self) -> [u8; 32] {
        PublicKey::from(&self.secret).to_bytes()
    }

    /// X25519(self, peer). Refuses a non-contributory result (all-zero output from a
    /// low-order peer key), which would make the "shared" secret public.
    pub fn agree(&self, peer_public: &[u8; 32]) -> Result<[u8; 32], KeyError> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*peer_public));
        if !shared.was_contributory() {
            return Err(KeyError::NonContributory);
        }
        Ok(shared.to_bytes())
    }
}

/// Output length for ring's HKDF.
struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// HKDF-SHA256 (RFC 5869, ring): extract with `salt`, expand with the concatenation of the
/// `info` parts, 32 bytes out.
pub fn hkdf32(ikm: &[u8], salt: &[u8], info: &[&[u8]]) -> [u8; 32] {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let mut out = [0u8; 32];
    // Expanding to 32 bytes (<= 255 * 32) cannot fail; on the impossible error the output
    // would stay all-zero, which is why callers never use it unkeyed.
    if let Ok(okm) = prk.expand(info, Len32) {
        let _ = okm.fill(&mut out);
    }
    out
}

fn aead_key(key: &[u8; 32]) -> Option<LessSafeKey> {
    UnboundKey::new(&CHACHA20_POLY1305, key)
        .ok()
        .map(LessSafeKey::new)
}

/// ChaCha20-Poly1305 (ring) with an all-zero nonce; returns ciphertext || 16-byte tag.
///
/// ONLY for keys used for a single message (derived per round, pair and direction): reusing
/// a key with the fixed nonce would break confidentiality and integrity.
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut in_out = plaintext.to_vec();
    let sealed = aead_key(key).is_some_and(|k| {
        k.seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0u8; aead::NONCE_LEN]),
            Aad::from(aad),
            &mut in_out,
        )
        .is_ok()
    });
    if sealed {
        in_out
    } else {
        // Only for a plaintext beyond ChaCha20-Poly1305's 256 GiB limit: an empty
        // ciphertext, which every `open` refuses.
        Vec::new()
    }
}

/// Inverse of [`seal`]; refuses a wrong key, wrong `aad` or any modification.
pub fn open(key: &[u8; 32], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, KeyError> {
    let k = aead_key(key).ok_or(KeyError::Decrypt)?;
    let mut in_out = ciphertext.to_vec();
    let len = k
        .open_in_place(
            Nonce::assume_unique_for_key([0u8; aead::NONCE_LEN]),
            Aad::from(aad),
            &mut in_out,
        )
        .map_err(|_| KeyError::Decrypt)?
        .len();
    in_out.truncate(len);
    Ok(in_out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(77)
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn sign_and_verify() {
        let k = IdentityKey::generate(&mut rng());
        let sig = k.sign(b"round 7: keys");
        assert_eq!(sig.len(), 64);
        assert_eq!(
            verify_signature(&k.public_key(), b"round 7: keys", &sig),
            Ok(())
        );
        assert_eq!(
            verify_signature(&k.public_key(), b"round 8: keys", &sig),
            Err(KeyError::BadSignature)
        );
        let other = IdentityKey::generate(&mut rng_other());
        assert_eq!(
            verify_signature(&other.public_key(), b"round 7: keys", &sig),
            Err(KeyError::BadSignature)
        );
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert_eq!(
            verify_signature(&k.public_key(), b"round 7: keys", &bad),
            Err(KeyError::BadSignature)
        );
        assert_eq!(
            verify_signature(&k.public_key(), b"round 7: keys", &sig[..63]),
            Err(KeyError::BadSignature)
        );
        // The seed round-trips to the same key.
        let again = IdentityKey::from_seed(k.seed()).unwrap();
        assert_eq!(again.public_key(), k.public_key());
        // Debug shows no secret.
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&format!("{:?}", k.seed())));
        assert!(dbg.starts_with("IdentityKey"));
    }

    fn rng_other() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(78)
    }

    #[test]
    fn ed25519_rfc8032_test_vector_1() {
        let seed: [u8; 32] =
            hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .try_into()
                .unwrap();
        let k = IdentityKey::from_seed(seed).unwrap();
        assert_eq!(
            k.public_key().to_vec(),
            hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
        assert_eq!(
            k.sign(b""),
            hex(concat!(
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155",
                "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
            ))
        );
    }

    #[test]
    fn x25519_agreement_is_symmetric() {
        let mut r = rng();
        let a = AgreementSecret::generate(&mut r);
        let b = AgreementSecret::generate(&mut r);
        let ab = a.agree(&b.public_key()).unwrap();
        let ba = b.agree(&a.public_key()).unwrap();
        assert_eq!(ab, ba);
        let c = AgreementSecret::generate(&mut r);
        assert_ne!(a.agree(&c.public_key()).unwrap(), ab);
        // Export and re-import (the Shamir path) keeps the key.
        let a2 = AgreementSecret::from_bytes(a.to_bytes());
        assert_eq!(a2.public_key(), a.public_key());
        assert_eq!(a2.agree(&b.public_key()).unwrap(), ab);
        // Low-order points are refused.
        assert_eq!(a.agree(&[0u8; 32]), Err(KeyError::NonContributory));
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(a.agree(&one), Err(KeyError::NonContributory));
        assert!(!format!("{a:?}").contains(&format!("{:?}", a.to_bytes())));
    }

    #[test]
    fn x25519_rfc7748_vector() {
        let alice: [u8; 32] =
            hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .try_into()
                .unwrap();
        let bob_pk: [u8; 32] =
            hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
                .try_into()
                .unwrap();
        let a = AgreementSecret::from_bytes(alice);
        assert_eq!(
            a.public_key().to_vec(),
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            a.agree(&bob_pk).unwrap().to_vec(),
            hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        );
    }

    #[test]
    fn hkdf_rfc5869_case_1_prefix_and_info_concatenation() {
        let ikm = hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
        let salt = hex("000102030405060708090a0b0c");
        let info = hex("f0f1f2f3f4f5f6f7f8f9");
        let okm = hkdf32(&ikm, &salt, &[&info]);
        assert_eq!(
            okm.to_vec(),
            hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
        );
        assert_eq!(hkdf32(&ikm, &salt, &[&info[..3], &info[3..]]), okm);
        assert_ne!(hkdf32(&ikm, &salt, &[&info[..3]]), okm);
        assert_ne!(hkdf32(&ikm, b"other salt", &[&info]), okm);
    }

    #[test]
    fn seal_open_round_trip_and_refusals() {
        let key = hkdf32(b"shared", b"round-1", &[b"u->v"]);
        let ct = seal(&key, b"round 1, 3->5", b"two shares");
        assert_eq!(ct.len(), 10 + 16);
        assert_eq!(open(&key, b"round 1, 3->5", &ct).unwrap(), b"two shares");
        assert_eq!(open(&key, b"round 2, 3->5", &ct), Err(KeyError::Decrypt));
        let mut t = ct.clone();
        t[0] ^= 1;
        assert_eq!(open(&key, b"round 1, 3->5", &t), Err(KeyError::Decrypt));
        let mut t = ct.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert_eq!(open(&key, b"round 1, 3->5", &t), Err(KeyError::Decrypt));
        assert_eq!(
            open(&key, b"round 1, 3->5", &ct[..15]),
            Err(KeyError::Decrypt)
        );
        let other = hkdf32(b"shared", b"round-1", &[b"v->u"]);
        assert_eq!(open(&other, b"round 1, 3->5", &ct), Err(KeyError::Decrypt));
        // Empty plaintext works too.
        assert_eq!(open(&key, b"", &seal(&key, b"", b"")).unwrap(), b"");
    }
}
