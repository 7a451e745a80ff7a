//! The participant's side of one SecAgg+ round, sans-IO.
//!
//! # Using a [`Client`]
//!
//! - Construction: [`Client::new`] makes the round's fresh key pairs and self-mask seed and
//!   queues the signed [`AdvertiseKeys`].
//! - Getters: [`Client::phase`], [`Client::is_done`], [`Client::ignored_peers`].
//! - Input: [`Client::handle_message`] with each [`ServerMsg`] addressed to this client.
//! - Output: [`Client::poll_transmit`] until it returns `None`, after construction and after
//!   every `handle_message`.
//!
//! A client never reads a clock: timeouts are the server's business, and a client that is
//! too slow is simply treated as dropped.
//!
//! # States
//!
//! One struct per state, named for the request it awaits; each transition consumes the
//! state and returns the next one, so a client that has answered an Unmask request is
//! [`Done`](State::Done) and cannot answer another.
//!
//! ```text
//! new ─▶ AwaitingShareKeysRequest ─▶ AwaitingMaskedInputRequest ─▶ AwaitingConsistencyRequest
//!                                                                        │
//!                                      Done ◀─ AwaitingUnmaskRequest ◀───┘
//! ```
//!
//! A request for another round, or for another phase, is refused and the state kept. Any
//! other refusal (the server misbehaved, or too few neighbours are left) ends the round for
//! this client: it reveals nothing more.
//!
//! # Derivations (shared with the server)
//!
//! - self-mask commitment = `SHA-256(transcript(AdvertiseKeys) || u || b_u)`;
//! - share AEAD key for owner `u` → holder `v` =
//!   `HKDF(KA(c_u, c_v), salt = transcript(ShareKeys), info = "share" || u || v)`,
//!   associated data `transcript(ShareKeys) || u || v`, plaintext
//!   `u || v || share(b_u) || share(s_u^SK)` (ids u32 LE, shares 32 bytes each);
//! - pairwise mask seed `s_uv = HKDF(KA(s_u, s_v), salt = transcript(MaskedInput),
//!   info = "mask" || min(u,v) || max(u,v))`;
//! - `y_u = x_u + PRG(b_u) + Σ_{v<u} PRG(s_uv) − Σ_{v>u} PRG(s_uv)` over the neighbours `v`
//!   whose shares the server routed to `u` (the server routes only mutual pairs).
//!
//! Every message the client sends is signed with its identity key over the round, the phase,
//! its id and the message's content (see [`crate::msg`]), so the server can refuse one
//! replayed from another round or altered on the way.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::encoding::RingVec;
use crate::error::{ClientError, ConfigError};
use crate::graph::NeighbourGraph;
use crate::keys::{self, AgreementSecret, IdentityKey};
use crate::msg::{
    advertise_signed_bytes, survivor_set_signed_bytes, AdvertiseKeys, ClientMsg,
    ConsistencyRequest, ConsistencySignature, EncryptedShare, MaskedInput, MaskedInputRequest,
    ParticipantId, Phase, RevealedShare, Roster, RoundConfig, RoundContext, ServerMsg, ShareKeys,
    ShareKeysRequest, ShareKind, UnmaskRequest, UnmaskShares, SECRET_LEN, SHARE_PLAINTEXT_LEN,
};
use crate::prg::{self, MaskSign, Seed};
use crate::shamir::{self, Share};

/// One participant's state machine for one round. See the module doc.
pub struct Client {
    round: Round,
    state: State,
    outbox: VecDeque<ClientMsg>,
    ignored: Vec<(ParticipantId, ClientError)>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("ctx", &self.round.ctx)
            .field("me", &self.round.me)
            .field("awaiting", &self.phase())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Validates the configuration and the input, makes fresh X25519 key pairs `c` and `s`
    /// and the self-mask seed `b_u`, signs `(transcript, me, c_pk, s_pk, commitment)` with
    /// the identity key and queues [`AdvertiseKeys`].
    ///
    /// `input` is taken by value: it is masked in place and becomes the masked vector.
    pub fn new(
        config: RoundConfig,
        me: ParticipantId,
        identity: Arc<IdentityKey>,
        roster: Arc<Roster>,
        input: RingVec,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Self, ClientError> {
        let graph = config.graph()?;
        let neighbours = graph
            .neighbours(me)
            .ok_or(ClientError::NotAParticipant { me })?
            .to_vec();
        match roster.get(me) {
            None => return Err(ConfigError::NotInRoster { id: me }.into()),
            Some(pk) if *pk != identity.public_key() => {
                return Err(ClientError::IdentityMismatch { me })
            }
            Some(_) => {}
        }
        if input.modulus() != config.modulus {
            return Err(ClientError::InputModulus {
                expected: config.modulus,
                got: input.modulus(),
            });
        }
        if input.len() != config.vector_len {
            return Err(ClientError::InputLength {
                expected: config.vector_len,
                got: input.len(),
            });
        }

        let c_sk = AgreementSecret::generate(rng);
        let s_sk = AgreementSecret::generate(rng);
        let mut b = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut b[..]);

        let ctx = config.ctx.clone();
        let (c_pk, s_pk) = (c_sk.public_key(), s_sk.public_key());
        let commitment = self_mask_commitment(&ctx, me, &b[..]);
        let signature = identity.sign(&advertise_signed_bytes(&ctx, me, &c_pk, &s_pk, &commitment));
        let mut outbox = VecDeque::new();
        outbox.push_back(ClientMsg::AdvertiseKeys(AdvertiseKeys {
            ctx: ctx.clone(),
            from: me,
            c_pk,
            s_pk,
            self_mask_commitment: commitment,
            signature,
        }));

        Ok(Client {
            round: Round {
                ctx,
                me,
                threshold: config.threshold,
                participants: config.participants,
                neighbours,
                graph,
                identity,
                roster,
            },
            state: State::AwaitingShareKeysRequest(AwaitingShareKeysRequest {
                c_sk,
                s_sk,
                b,
                input,
            }),
            outbox,
            ignored: Vec::new(),
        })
    }

    /// Handles one server request. See the module doc for which refusals keep the state.
    pub fn handle_message(
        &mut self,
        msg: ServerMsg,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<(), ClientError> {
        if *msg.ctx() != self.round.ctx {
            return Err(ClientError::WrongRound {
                expected: self.round.ctx.clone(),
                got: msg.ctx().clone(),
            });
        }
        let expected = self.phase();
        if expected != Some(msg.phase()) {
            return Err(ClientError::UnexpectedMessage {
                expected,
                got: msg.phase(),
            });
        }
        let mut out = Effects {
            outbox: &mut self.outbox,
            ignored: &mut self.ignored,
        };
        let round = &self.round;
        let next = match (std::mem::replace(&mut self.state, State::Done), msg) {
            (State::AwaitingShareKeysRequest(s), ServerMsg::ShareKeys(req)) => s
                .handle(round, req, &mut out, rng)
                .map(State::AwaitingMaskedInputRequest),
            (State::AwaitingMaskedInputRequest(s), ServerMsg::MaskedInput(req)) => s
                .handle(round, req, &mut out)
                .map(State::AwaitingConsistencyRequest),
            (State::AwaitingConsistencyRequest(s), ServerMsg::ConsistencyCheck(req)) => s
                .handle(round, req, &mut out)
                .map(State::AwaitingUnmaskRequest),
            (State::AwaitingUnmaskRequest(s), ServerMsg::Unmask(req)) => {
                s.handle(round, req, &mut out).map(|()| State::Done)
            }
            (state, msg) => {
                // Unreachable after the phase check above; refuse without losing the state.
                self.state = state;
                return Err(ClientError::UnexpectedMessage {
                    expected,
                    got: msg.phase(),
                });
            }
        };
        match next {
            Ok(state) => {
                self.state = state;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(ctx = %self.round.ctx, me = self.round.me, error = %e, "client leaves the round");
                Err(e)
            }
        }
    }

    /// The next message to send to the server.
    pub fn poll_transmit(&mut self) -> Option<ClientMsg> {
        self.outbox.pop_front()
    }

    /// The phase whose request this client awaits; `None` once it is done (finished or
    /// left the round).
    pub fn phase(&self) -> Option<Phase> {
        match self.state {
            State::AwaitingShareKeysRequest(_) => Some(Phase::ShareKeys),
            State::AwaitingMaskedInputRequest(_) => Some(Phase::MaskedInput),
            State::AwaitingConsistencyRequest(_) => Some(Phase::ConsistencyCheck),
            State::AwaitingUnmaskRequest(_) => Some(Phase::Unmask),
            State::Done => None,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// This participant's id.
    pub fn id(&self) -> ParticipantId {
        self.round.me
    }

    /// Neighbours this client ignored and why: keys that did not verify or could not be
    /// used ([`ClientError::BadNeighbourSignature`], [`ClientError::UnusableNeighbour`]) and
    /// shares it could not decrypt ([`ClientError::UndecryptableShare`]).
    pub fn ignored_peers(&self) -> &[(ParticipantId, ClientError)] {
        &self.ignored
    }
}

/// What the whole round shares, fixed at construction.
struct Round {
    ctx: RoundContext,
    me: ParticipantId,
    threshold: usize,
    participants: Vec<ParticipantId>,
    /// `N(me)`, ascending.
    neighbours: Vec<ParticipantId>,
    graph: NeighbourGraph,
    identity: Arc<IdentityKey>,
    roster: Arc<Roster>,
}

impl Round {
    /// The Shamir x-coordinate of `holder`'s share of `owner`'s secrets: 1 + the holder's
    /// position in the owner's sorted neighbour list.
    fn share_x(&self, owner: ParticipantId, holder: ParticipantId) -> Option<u8> {
        share_x(&self.graph, owner, holder)
    }

    /// `msg` with its signature by the identity key (see `msg`'s module doc).
    fn signed(&self, mut msg: ClientMsg) -> ClientMsg {
        msg.sign(&self.identity);
        msg
    }
}

/// Where a transition writes its output.
struct Effects<'a> {
    outbox: &'a mut VecDeque<ClientMsg>,
    ignored: &'a mut Vec<(ParticipantId, ClientError)>,
}

impl Effects<'_> {
    fn ignore(&mut self, peer: ParticipantId, why: ClientError) {
        tracing::warn!(peer, reason = %why, "ignoring neighbour");
        self.ignored.push((peer, why));
    }
}

enum State {
    AwaitingShareKeysRequest(AwaitingShareKeysRequest),
    AwaitingMaskedInputRequest(AwaitingMaskedInputRequest),
    AwaitingConsistencyRequest(AwaitingConsistencyRequest),
    AwaitingUnmaskRequest(AwaitingUnmaskRequest),
    /// Finished, or left the round after a refusal.
    Done,
}

/// After AdvertiseKeys: holds the round's secrets and the input.
struct AwaitingShareKeysRequest {
    c_sk: AgreementSecret,
    s_sk: AgreementSecret,
    b: Zeroizing<Seed>,
    input: RingVec,
}

/// What this client keeps about one neighbour whose keys it accepted.
struct Partner {
    /// AEAD key of the share this neighbour sends to us.
    open_key: Zeroizing<[u8; 32]>,
    /// The pairwise mask seed `s_uv`.
    mask_seed: Zeroizing<Seed>,
}

impl AwaitingShareKeysRequest {
    fn handle(
        self,
        round: &Round,
        req: ShareKeysRequest,
        out: &mut Effects<'_>,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<AwaitingMaskedInputRequest, ClientError> {
        let me = round.me;
        let share_transcript = round.ctx.transcript(Phase::ShareKeys);
        let mask_transcript = round.ctx.transcript(Phase::MaskedInput);

        // Verify every neighbour's keys; ignore (not abort on) bad ones.
        let mut partners: BTreeMap<ParticipantId, (Partner, Zeroizing<[u8; 32]>)> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut duplicated = BTreeSet::new();
        for k in req.keys {
            let peer = k.from;
            if round.neighbours.binary_search(&peer).is_err() {
                out.ignore(
                    peer,
                    ClientError::UnusableNeighbour {
                        peer,
                        reason: "not a neighbour in this round",
                    },
                );
                continue;
            }
            if !seen.insert(peer) {
                duplicated.insert(peer);
                continue;
            }
            let signed =
                advertise_signed_bytes(&round.ctx, peer, &k.c_pk, &k.s_pk, &k.self_mask_commitment);
            let verified = match round.roster.get(peer) {
                Some(pk) => keys::verify_signature(pk, &signed, &k.signature).is_ok(),
                None => false,
            };
            if k.ctx != round.ctx || !verified {
                out.ignore(peer, ClientError::BadNeighbourSignature { peer });
                continue;
            }
            let (Ok(c_shared), Ok(s_shared)) = (self.c_sk.agree(&k.c_pk), self.s_sk.agree(&k.s_pk))
            else {
                out.ignore(
                    peer,
                    ClientError::UnusableNeighbour {
                        peer,
                        reason: "key agreement failed (low-order public key)",
                    },
                );
                continue;
            };
            let c_shared = Zeroizing::new(c_shared);
            let s_shared = Zeroizing::new(s_shared);
            let seal_key = Zeroizing::new(share_key(&share_transcript, &c_shared, me, peer));
            let partner = Partner {
                open_key: Zeroizing::new(share_key(&share_transcript, &c_shared, peer, me)),
                mask_seed: Zeroizing::new(pair_seed(&mask_transcript, &s_shared, me, peer)),
            };
            partners.insert(peer, (partner, seal_key));
        }
        for peer in duplicated {
            if partners.remove(&peer).is_some() {
                out.ignore(
                    peer,
                    ClientError::UnusableNeighbour {
                        peer,
                        reason: "advertised two sets of keys",
                    },
                );
            }
        }
        let need = round.threshold;
        if partners.len() < need {
            return Err(ClientError::BelowThreshold {
                phase: Phase::ShareKeys,
                have: partners.len(),
                need,
            });
        }

        // Share b_u and s_u^SK t-of-k among them and encrypt each holder's pair.
        let holders: Vec<(ParticipantId, u8)> = partners
            .keys()
            .filter_map(|&v| round.share_x(me, v).map(|x| (v, x)))
            .collect();
        let xs: Vec<u8> = holders.iter().map(|(_, x)| *x).collect();
        let s_bytes = Zeroizing::new(self.s_sk.to_bytes());
        let b_shares = shamir::split(&self.b[..], need, &xs, rng)?;
        let s_shares = match shamir::split(&s_bytes[..], need, &xs, rng) {
            Ok(s) => s,
            Err(e) => {
                wipe_shares(b_shares);
                return Err(e.into());
            }
        };
        let mut shares = Vec::with_capacity(holders.len());
        for (v, x) in holders {
            let (Some(bs), Some(ss)) = (
                b_shares.iter().find(|s| s.x == x),
                s_shares.iter().find(|s| s.x == x),
            ) else {
                continue;
            };
            let mut pt = Zeroizing::new(Vec::with_capacity(SHARE_PLAINTEXT_LEN));
            pt.extend_from_slice(&me.to_le_bytes());
            pt.extend_from_slice(&v.to_le_bytes());
            pt.extend_from_slice(&bs.y);
            pt.extend_from_slice(&ss.y);
            let Some((_, seal_key)) = partners.get(&v) else {
                continue;
            };
            let ciphertext = keys::seal(seal_key, &share_aad(&share_transcript, me, v), &pt);
            shares.push(EncryptedShare {
                from: me,
                to: v,
                ciphertext,
            });
        }
        out.outbox
            .push_back(round.signed(ClientMsg::ShareKeys(ShareKeys {
                ctx: round.ctx.clone(),
                from: me,
                shares,
                signature: Vec::new(),
            })));

        let partners = partners.into_iter().map(|(v, (p, _))| (v, p)).collect();
        wipe_shares(b_shares);
        wipe_shares(s_shares);
        Ok(AwaitingMaskedInputRequest {
            b: self.b,
            input: self.input,
            partners,
        })
    }
}

/// After ShareKeys: the self-mask seed, the pairwise seeds, the input.
struct AwaitingMaskedInputRequest {
    b: Zeroizing<Seed>,
    input: RingVec,
    partners: BTreeMap<ParticipantId, Partner>,
}

/// One owner's pair of shares, held for the Unmask phase. Wiped when dropped.
struct HeldShares {
    self_mask: Share,
    mask_key: Share,
}

impl Drop for HeldShares {
    fn drop(&mut self) {
        self.self_mask.y.zeroize();
        self.mask_key.y.zeroize();
    }
}

impl HeldShares {
    /// Gives up one of the two shares; the other is wiped with `self`.
    fn reveal(mut self, kind: ShareKind) -> Share {
        let keep = match kind {
            ShareKind::SelfMask => &mut self.self_mask,
            ShareKind::MaskKey => &mut self.mask_key,
        };
        Share {
            x: keep.x,
            y: std::mem::take(&mut keep.y),
        }
    }
}

impl AwaitingMaskedInputRequest {
    fn handle(
        self,
        round: &Round,
        req: MaskedInputRequest,
        out: &mut Effects<'_>,
    ) -> Result<AwaitingConsistencyRequest, ClientError> {
        let me = round.me;
        let transcript = round.ctx.transcript(Phase::ShareKeys);
        let mut routed = BTreeSet::new();
        let mut held = BTreeMap::new();
        for s in req.shares {
            if s.to != me {
                return Err(ClientError::ShareNotForMe {
                    from: s.from,
                    to: s.to,
                });
            }
            let Some(partner) = self.partners.get(&s.from) else {
                return Err(ClientError::ShareFromUnknownPeer { from: s.from });
            };
            if !routed.insert(s.from) {
                return Err(ClientError::DuplicateShare { from: s.from });
            }
            let opened = keys::open(
                &partner.open_key,
                &share_aad(&transcript, s.from, me),
                &s.ciphertext,
            )
            .ok()
            .map(Zeroizing::new)
            .and_then(|pt| parse_share_plaintext(&pt, s.from, me));
            match (opened, round.share_x(s.from, me)) {
                (Some((b_y, s_y)), Some(x)) => {
                    held.insert(
                        s.from,
                        HeldShares {
                            self_mask: Share { x, y: b_y },
                            mask_key: Share { x, y: s_y },
                        },
                    );
                }
                _ => out.ignore(s.from, ClientError::UndecryptableShare { peer: s.from }),
            }
        }
        let need = round.threshold;
        if routed.len() < need {
            return Err(ClientError::BelowThreshold {
                phase: Phase::MaskedInput,
                have: routed.len(),
                need,
            });
        }

        // y = x + PRG(b) + Σ_{v<u} PRG(s_uv) − Σ_{v>u} PRG(s_uv), in one pass, in place.
        let mut masks: Vec<(Seed, MaskSign)> = Vec::with_capacity(routed.len() + 1);
        masks.push((*self.b, MaskSign::Add));
        for v in &routed {
            if let Some(p) = self.partners.get(v) {
                let sign = if *v < me {
                    MaskSign::Add
                } else {
                    MaskSign::Sub
                };
                masks.push((*p.mask_seed, sign));
            }
        }
        let mut masked = self.input;
        prg::apply_masks(&mut masked, &masks);
        masks.iter_mut().for_each(|(seed, _)| seed.zeroize());
        out.outbox
            .push_back(round.signed(ClientMsg::MaskedInput(MaskedInput {
                ctx: round.ctx.clone(),
                from: me,
                masked,
                signature: Vec::new(),
            })));
        Ok(AwaitingConsistencyRequest { held })
    }
}

/// `(share of b, share of s^SK)` from a decrypted plaintext, if it names `owner → holder`.
fn parse_share_plaintext(
    pt: &[u8],
    owner: ParticipantId,
    holder: ParticipantId,
) -> Option<(Vec<u8>, Vec<u8>)> {
    if pt.len() != SHARE_PLAINTEXT_LEN
        || pt[0..4] != owner.to_le_bytes()
        || pt[4..8] != holder.to_le_bytes()
    {
        return None;
    }
    Some((
        pt[8..8 + SECRET_LEN].to_vec(),
        pt[8 + SECRET_LEN..].to_vec(),
    ))
}

/// After MaskedInput: the shares held, by owner.
struct AwaitingConsistencyRequest {
    held: BTreeMap<ParticipantId, HeldShares>,
}

impl AwaitingConsistencyRequest {
    fn handle(
        self,
        round: &Round,
        req: ConsistencyRequest,
        out: &mut Effects<'_>,
    ) -> Result<AwaitingUnmaskRequest, ClientError> {
        let survivors = req.survivors;
        check_survivor_set(round, &survivors)?;
        let signature = round
            .identity
            .sign(&survivor_set_signed_bytes(&round.ctx, &survivors));
        out.outbox
            .push_back(ClientMsg::ConsistencySignature(ConsistencySignature {
                ctx: round.ctx.clone(),
                from: round.me,
                signature: signature.clone(),
            }));
        Ok(AwaitingUnmaskRequest {
            held: self.held,
            survivors,
            signature,
        })
    }
}

fn check_survivor_set(round: &Round, survivors: &[ParticipantId]) -> Result<(), ClientError> {
    let sorted = survivors.windows(2).all(|w| w[0] < w[1]);
    let known = survivors
        .iter()
        .all(|id| round.participants.binary_search(id).is_ok());
    if !sorted || !known {
        return Err(ClientError::MalformedSurvivorSet);
    }
    if survivors.binary_search(&round.me).is_err() {
        return Err(ClientError::MissingSelf);
    }
    if survivors.len() < round.threshold {
        return Err(ClientError::BelowThreshold {
            phase: Phase::ConsistencyCheck,
            have: survivors.len(),
            need: round.threshold,
        });
    }
    Ok(())
}

/// After signing the survivor set: the shares held, and what was signed.
struct AwaitingUnmaskRequest {
    held: BTreeMap<ParticipantId, HeldShares>,
    survivors: Vec<ParticipantId>,
    signature: Vec<u8>,
}

impl AwaitingUnmaskRequest {
    fn handle(
        self,
        round: &Round,
        req: UnmaskRequest,
        out: &mut Effects<'_>,
    ) -> Result<(), ClientError> {
        if req.survivors != self.survivors {
            return Err(ClientError::SurvivorSetChanged);
        }
        // At least t valid signatures on exactly this set, from distinct survivors. Stop
        // verifying once t are found: the rest cannot change the decision.
        let need = round.threshold;
        let signed = survivor_set_signed_bytes(&round.ctx, &self.survivors);
        let mut valid = BTreeSet::new();
        for (id, sig) in &req.signatures {
            if *id == round.me {
                if *sig != self.signature {
                    return Err(ClientError::OwnSignatureMismatch);
                }
                valid.insert(*id);
                continue;
            }
            if valid.len() >= need
                || valid.contains(id)
                || self.survivors.binary_search(id).is_err()
            {
                continue;
            }
            if let Some(pk) = round.roster.get(*id) {
                if keys::verify_signature(pk, &signed, sig).is_ok() {
                    valid.insert(*id);
                }
            }
        }
        if valid.len() < need {
            return Err(ClientError::SurvivorSetNotSigned {
                have: valid.len(),
                need,
            });
        }

        // For each neighbour whose shares we hold: b_v if it survived, s_v^SK if it dropped.
        // `reveal` consumes the pair, so one owner yields one share.
        let mut shares = Vec::with_capacity(self.held.len());
        let mut revealed = BTreeSet::new();
        for (owner, pair) in self.held {
            if !revealed.insert(owner) {
                return Err(ClientError::WouldRevealBothShares { peer: owner });
            }
            let kind = if self.survivors.binary_search(&owner).is_ok() {
                ShareKind::SelfMask
            } else {
                ShareKind::MaskKey
            };
            shares.push(RevealedShare {
                owner,
                kind,
                share: pair.reveal(kind),
            });
        }
        out.outbox
            .push_back(round.signed(ClientMsg::UnmaskShares(UnmaskShares {
                ctx: round.ctx.clone(),
                from: round.me,
                shares,
                signature: Vec::new(),
            })));
        Ok(())
    }
}

fn wipe_shares(mut shares: Vec<Share>) {
    shares.iter_mut().for_each(|s| s.y.zeroize());
}

// ---- Derivations shared with the server (see the module doc).

/// `SHA-256(transcript(AdvertiseKeys) || owner || b)`.
pub(crate) fn self_mask_commitment(ctx: &RoundContext, owner: ParticipantId, b: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ctx.transcript(Phase::AdvertiseKeys));
    h.update(owner.to_le_bytes());
    h.update(b);
    h.finalize().into()
}

/// The pairwise mask seed of `u` and `v` from their X25519 shared secret.
/// `transcript` is `transcript(MaskedInput)`.
pub(crate) fn pair_seed(
    transcript: &[u8],
    shared: &[u8; 32],
    u: ParticipantId,
    v: ParticipantId,
) -> Seed {
    let (lo, hi) = if u < v { (u, v) } else { (v, u) };
    keys::hkdf32(
        shared,
        transcript,
        &[b"mask", &lo.to_le_bytes(), &hi.to_le_bytes()],
    )
}

/// The AEAD key of the share `owner → holder`. `transcript` is `transcript(ShareKeys)`.
fn share_key(
    transcript: &[u8],
    shared: &[u8; 32],
    owner: ParticipantId,
    holder: ParticipantId,
) -> [u8; 32] {
    keys::hkdf32(
        shared,
        transcript,
        &[b"share", &owner.to_le_bytes(), &holder.to_le_bytes()],
    )
}

fn share_aad(transcript: &[u8], owner: ParticipantId, holder: ParticipantId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(transcript.len() + 8);
    aad.extend_from_slice(transcript);
    aad.extend_from_slice(&owner.to_le_bytes());
    aad.extend_from_slice(&holder.to_le_bytes());
    aad
}

/// 1 + `holder`'s position in `owner`'s sorted neighbour list.
pub(crate) fn share_x(
    graph: &NeighbourGraph,
    owner: ParticipantId,
    holder: ParticipantId,
) -> Option<u8> {
    let pos = graph.neighbours(owner)?.binary_search(&holder).ok()?;
    u8::try_from(pos + 1).ok()
}
