//! A sealed two-party channel in PSI's envelopes, for the protocols that run after a PSI
//! between the same two parties through the same relay (vertical models).
//!
//! The handshake and the sealing are PSI's ([`super::msg`]): each party sends one signed
//! [`Hello`] (an ephemeral X25519 key and a nonce, signed with its Ed25519 roster key over
//! the transcript and a configuration digest the two must share), then every message is a
//! [`Sealed`] of kind [`Kind::Vertical`] under a key used for that one message,
//! `HKDF(channel key, salt = transcript, info = "msg" || from || seq || kind)`, with the
//! transcript, sender, number and kind as associated data; a receiver takes exactly the
//! next number, so a lost, replayed, reordered or altered message is refused. The channel
//! key is derived with the label `vertical-channel` (PSI's is `channel`), and the
//! configuration digest of a vertical session is not a PSI one, so a Hello of one protocol
//! is refused by the other. The relay sees the header (job, session, sender, number, kind)
//! and the length, nothing else.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::msg::{hello_signed_bytes, Hello, Kind, PsiContext, PsiMsg, Role, Sealed};
use super::party::Sealing;
use super::PsiError;
use crate::keys::{self, AgreementSecret, IdentityKey};

/// The handshake in flight: this party's Hello is out, the peer's awaited.
pub struct ChannelHello {
    ctx: PsiContext,
    role: Role,
    ephemeral: AgreementSecret,
    nonce: [u8; 32],
    config_digest: [u8; 32],
    peer_key: [u8; 32],
}

impl std::fmt::Debug for ChannelHello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelHello")
            .field("ctx", &self.ctx)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// An open channel: seals this party's messages, opens the peer's in order (PSI's
/// [`Sealing`]).
pub struct Channel {
    ctx: PsiContext,
    role: Role,
    sealing: Sealing,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("ctx", &self.ctx)
            .field("role", &self.role)
            .field("sent", &self.sealing.sent)
            .field("received", &self.sealing.received())
            .finish_non_exhaustive()
    }
}

impl ChannelHello {
    /// Draws the ephemeral key and nonce from `rng` and returns the signed Hello to send.
    /// `peer_public_key`: the peer's Ed25519 roster key; `config_digest`: what both parties
    /// must agree on (the session's parameters).
    pub fn new(
        ctx: PsiContext,
        role: Role,
        identity: &Arc<IdentityKey>,
        peer_public_key: [u8; 32],
        config_digest: [u8; 32],
        rng: &mut impl rand::CryptoRng,
    ) -> (Self, PsiMsg) {
        let ephemeral = AgreementSecret::generate(rng);
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        let ephemeral_pk = ephemeral.public_key();
        let signature = identity.sign(&hello_signed_bytes(
            &ctx,
            role,
            &ephemeral_pk,
            &nonce,
            &config_digest,
        ));
        let hello = Hello {
            ctx: ctx.clone(),
            from: role,
            ephemeral_pk,
            nonce,
            config_digest,
            signature,
        };
        (
            ChannelHello {
                ctx,
                role,
                ephemeral,
                nonce,
                config_digest,
                peer_key: peer_public_key,
            },
            PsiMsg::Hello(hello),
        )
    }

    /// Takes the peer's Hello: checks context, sender, signature and configuration, then
    /// derives the channel key.
    pub fn accept(self, peer: &Hello) -> Result<Channel, PsiError> {
        if peer.ctx != self.ctx {
            return Err(PsiError::WrongContext {
                expected: self.ctx.clone(),
                got: peer.ctx.clone(),
            });
        }
        if peer.from != self.role.peer() {
            return Err(PsiError::WrongSender { got: peer.from });
        }
        if peer.signature.len() != crate::msg::SIGNATURE_LEN
            || keys::verify_signature(&self.peer_key, &peer.signed_bytes(), &peer.signature)
                .is_err()
        {
            return Err(PsiError::BadHelloSignature);
        }
        if peer.config_digest != self.config_digest {
            return Err(PsiError::ConfigMismatch);
        }
        let shared = Zeroizing::new(self.ephemeral.agree(&peer.ephemeral_pk)?);
        let mine = (self.ephemeral.public_key(), self.nonce);
        let theirs = (peer.ephemeral_pk, peer.nonce);
        let ((a_pk, a_nonce), (p_pk, p_nonce)) = match self.role {
            Role::Active => (mine, theirs),
            Role::Passive => (theirs, mine),
        };
        let transcript = self.ctx.transcript();
        let key = Zeroizing::new(keys::hkdf32(
            &shared[..],
            &transcript,
            &[
                b"vertical-channel",
                &self.config_digest,
                &a_pk,
                &p_pk,
                &a_nonce,
                &p_nonce,
            ],
        ));
        Ok(Channel {
            ctx: self.ctx,
            role: self.role,
            sealing: Sealing::new(transcript, key),
        })
    }
}

impl Channel {
    /// Seals this party's next message.
    pub fn seal(&mut self, plaintext: &[u8]) -> PsiMsg {
        self.sealing
            .seal(&self.ctx, self.role, Kind::Vertical, plaintext)
    }

    /// Opens the peer's next message (context, sender, kind and number checked).
    pub fn open(&mut self, m: &Sealed) -> Result<Vec<u8>, PsiError> {
        if m.ctx != self.ctx {
            return Err(PsiError::WrongContext {
                expected: self.ctx.clone(),
                got: m.ctx.clone(),
            });
        }
        if m.from != self.role.peer() {
            return Err(PsiError::WrongSender { got: m.from });
        }
        if m.kind != Kind::Vertical {
            return Err(PsiError::OutOfOrder {
                kind: m.kind,
                state: "in a vertical session",
            });
        }
        self.sealing.open(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn pair() -> (Channel, Channel) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let a = Arc::new(IdentityKey::generate(&mut rng));
        let p = Arc::new(IdentityKey::generate(&mut rng));
        let ctx = PsiContext {
            job_id: "v".into(),
            session: 3,
        };
        let (ha, ma) = ChannelHello::new(
            ctx.clone(),
            Role::Active,
            &a,
            p.public_key(),
            [7; 32],
            &mut rng,
        );
        let (hp, mp) = ChannelHello::new(ctx, Role::Passive, &p, a.public_key(), [7; 32], &mut rng);
        let (PsiMsg::Hello(ma), PsiMsg::Hello(mp)) = (ma, mp) else {
            panic!("not hellos")
        };
        (ha.accept(&mp).unwrap(), hp.accept(&ma).unwrap())
    }

    #[test]
    fn messages_go_through_once_and_in_order() {
        let (mut a, mut p) = pair();
        let PsiMsg::Sealed(m0) = a.seal(b"zero") else {
            panic!()
        };
        let PsiMsg::Sealed(m1) = a.seal(b"one") else {
            panic!()
        };
        assert!(!m0.ciphertext.windows(4).any(|w| w == b"zero"));
        assert!(matches!(
            p.open(&m1),
            Err(PsiError::WrongSequence {
                expected: 0,
                got: 1
            })
        ));
        assert_eq!(p.open(&m0).unwrap(), b"zero");
        assert!(p.open(&m0).is_err(), "a replay is refused");
        let mut bad = m1.clone();
        if let Some(b) = bad.ciphertext.first_mut() {
            *b ^= 1;
        }
        assert!(matches!(p.open(&bad), Err(PsiError::Undecryptable { .. })));
        assert_eq!(p.open(&m1).unwrap(), b"one");
        let PsiMsg::Sealed(back) = p.seal(b"back") else {
            panic!()
        };
        assert_eq!(a.open(&back).unwrap(), b"back");
    }

    #[test]
    fn a_hello_with_another_configuration_is_refused() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let a = Arc::new(IdentityKey::generate(&mut rng));
        let p = Arc::new(IdentityKey::generate(&mut rng));
        let ctx = PsiContext {
            job_id: "v".into(),
            session: 0,
        };
        let (ha, _) = ChannelHello::new(
            ctx.clone(),
            Role::Active,
            &a,
            p.public_key(),
            [1; 32],
            &mut rng,
        );
        let (_, mp) = ChannelHello::new(ctx, Role::Passive, &p, a.public_key(), [2; 32], &mut rng);
        let PsiMsg::Hello(mp) = mp else { panic!() };
        assert!(matches!(ha.accept(&mp), Err(PsiError::ConfigMismatch)));
    }
}
