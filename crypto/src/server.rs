//! The coordinator's side of one SecAgg+ round, sans-IO.
//!
//! # Using a [`Server`]
//!
//! - Construction: [`Server::new`] validates the configuration against the roster and
//!   starts collecting AdvertiseKeys, with a deadline `now + phase_timeout`.
//! - Getters: [`Server::phase`], [`Server::is_finished`].
//! - Inputs: [`Server::handle_message`] with each client message and the transport's
//!   authenticated sender; [`Server::handle_timeout`] once [`Server::poll_timeout`] has
//!   passed.
//! - Outputs, after every input: [`Server::poll_transmit`] until `None` (requests to send),
//!   then [`Server::poll_event`] until `None` (phase closures, refusals, the result).
//!
//! Every client message is signed by the sender's roster key over (job, round, phase,
//! sender, content digest) — see [`crate::msg`]. `handle_message` checks the signature
//! before the message can touch the state (before duplicate detection), so a message
//! replayed from another round, relabelled or altered is refused
//! ([`Misbehaviour::BadMessageSignature`], naming the sender) and the sender's genuine
//! message is still accepted when it arrives.
//!
//! Time only comes in as `now`. A refused message is returned as `Err` *and* reported as
//! [`ServerEvent::Refused`]; the round goes on. A participant that stops answering is not
//! an error: it shows up in [`ServerEvent::PhaseClosed::dropped`] and the round continues
//! without it as long as the threshold allows.
//!
//! # States
//!
//! ```text
//! AwaitingKeys ─▶ AwaitingShares ─▶ AwaitingMaskedInputs ─▶ AwaitingSignatures
//!                                                                 │
//!                         Finished / Failed ◀─ AwaitingUnmaskShares ◀┘
//! ```
//!
//! A phase closes as soon as everyone asked has answered, otherwise at its deadline. Each
//! closing consumes the phase's state and returns the next one (or the round's error).
//!
//! # Who is asked what
//!
//! - U1: who advertised validly signed keys. Each gets its neighbours' keys in U1.
//! - U2: who sent well-formed shares. The server routes a share `v → u` only if `u → v`
//!   also exists (so every pair masks symmetrically), then repeatedly drops anyone left
//!   with fewer than `t` such partners (its own secrets could never be rebuilt).
//! - U3: who sent a masked input; it is added to the running sum at once.
//! - S4: who signed U3. Each gets U3 and all collected signatures.
//! - At the end: `b_u` is rebuilt for every `u ∈ U3` (checked against its commitment) and
//!   `s_u^SK` for every `u ∈ U2 \ U3` that some survivor masked with (checked against its
//!   advertised public key); all self masks and dangling pairwise masks are removed in one
//!   [`prg::apply_masks`] pass. The result is exactly `Σ_{u∈U3} x_u`, or a [`RoundError`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use zeroize::Zeroize;

use crate::client::{pair_seed, self_mask_commitment, share_x};
use crate::encoding::RingVec;
use crate::error::{ConfigError, Misbehaviour, ProtocolError, RoundError};
use crate::graph::NeighbourGraph;
use crate::keys::{self, AgreementSecret};
use crate::msg::{
    survivor_set_signed_bytes, AdvertiseKeys, ClientMsg, ConsistencyRequest, ConsistencySignature,
    EncryptedShare, MaskedInput, MaskedInputRequest, ParticipantId, Phase, Roster, RoundConfig,
    RoundContext, ServerMsg, ShareKeys, ShareKeysRequest, ShareKind, UnmaskRequest, UnmaskShares,
    SECRET_LEN, SHARE_CIPHERTEXT_LEN,
};
use crate::prg::{self, MaskSign, Seed};
use crate::shamir::{self, Share};

/// What the server reports besides its requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// `phase` is over. `responded`: who answered and goes on to the next phase;
    /// `dropped`: who was asked and did not answer in time, or was excluded because too
    /// few of its neighbours answered.
    PhaseClosed {
        phase: Phase,
        responded: Vec<ParticipantId>,
        dropped: Vec<ParticipantId>,
    },
    /// A message was refused (also returned by `handle_message`), or a revealed share was
    /// found inconsistent during reconstruction and left out.
    Refused {
        from: ParticipantId,
        error: ProtocolError,
    },
    /// The round's result; the server is finished.
    Finished(RoundOutput),
    /// The round failed; no sum is output.
    Failed(RoundError),
}

/// The result of a successful round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundOutput {
    /// `Σ_{u ∈ survivors} x_u`, exactly (mod 2^bits).
    pub sum: RingVec,
    /// Whose inputs are in the sum (U3), ascending.
    pub survivors: Vec<ParticipantId>,
    /// Everyone who stopped taking part, with the first phase they missed, ascending by id.
    /// Participants who dropped in ConsistencyCheck or Unmask are still in `survivors`:
    /// their masked input was received and their self mask rebuilt from shares.
    pub dropped: Vec<(ParticipantId, Phase)>,
    /// Self-mask seeds rebuilt (one per survivor).
    pub reconstructed_self_masks: usize,
    /// Mask keys of dropped participants rebuilt to remove their pairwise masks.
    pub reconstructed_mask_keys: usize,
}

/// The coordinator's state machine for one round. See the module doc.
pub struct Server {
    round: Round,
    state: State,
    deadline: Instant,
    out: Outbox,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("ctx", &self.round.ctx)
            .field("phase", &self.phase())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Validates `config` (see [`RoundConfig::validate`]), requires every participant to be
    /// in the roster, and starts collecting AdvertiseKeys until `now + phase_timeout`.
    pub fn new(
        now: Instant,
        config: RoundConfig,
        roster: Arc<Roster>,
        phase_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let graph = config.graph()?;
        if let Some(&id) = config.participants.iter().find(|id| !roster.contains(**id)) {
            return Err(ConfigError::NotInRoster { id });
        }
        Ok(Server {
            round: Round {
                ctx: config.ctx.clone(),
                threshold: config.threshold,
                graph,
                roster,
                timeout: phase_timeout,
                config,
            },
            state: State::AwaitingKeys(AwaitingKeys::default()),
            deadline: now + phase_timeout,
            out: Outbox::default(),
        })
    }

    /// Handles one client message; `from` is the sender as authenticated by the transport.
    ///
    /// A refused message returns `Err` and is also reported as [`ServerEvent::Refused`];
    /// the round goes on. Closes the phase early when everyone asked has answered.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: ParticipantId,
        msg: ClientMsg,
    ) -> Result<(), ProtocolError> {
        let result = self.accept(from, msg);
        match &result {
            Ok(()) => {
                if self.state.everyone_answered() {
                    self.close_phase(now);
                }
            }
            Err(error) => {
                tracing::warn!(ctx = %self.round.ctx, from, %error, "message refused");
                self.out.events.push_back(ServerEvent::Refused {
                    from,
                    error: error.clone(),
                });
            }
        }
        result
    }

    /// Closes the current phase with whoever answered, if its deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_finished() || now < self.deadline {
            return;
        }
        self.close_phase(now);
    }

    /// When [`Server::handle_timeout`] should next be called; `None` once finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.is_finished()).then_some(self.deadline)
    }

    /// The next request to send, and to whom.
    pub fn poll_transmit(&mut self) -> Option<(ParticipantId, ServerMsg)> {
        self.out.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.out.events.pop_front()
    }

    /// The phase whose client messages the server is collecting; `None` once finished.
    pub fn phase(&self) -> Option<Phase> {
        self.state.phase()
    }

    /// Finished or failed.
    pub fn is_finished(&self) -> bool {
        self.state.phase().is_none()
    }

    pub fn config(&self) -> &RoundConfig {
        &self.round.config
    }

    fn accept(&mut self, from: ParticipantId, msg: ClientMsg) -> Result<(), ProtocolError> {
        let round = &self.round;
        if round.config.participants.binary_search(&from).is_err() || !round.roster.contains(from) {
            return Err(ProtocolError::peer(from, Misbehaviour::UnknownSender));
        }
        if *msg.ctx() != round.ctx {
            return Err(ProtocolError::peer(
                from,
                Misbehaviour::WrongRound {
                    expected: round.ctx.clone(),
                    got: msg.ctx().clone(),
                },
            ));
        }
        if msg.from() != from {
            return Err(ProtocolError::peer(
                from,
                Misbehaviour::SenderMismatch {
                    claimed: msg.from(),
                },
            ));
        }
        // A message for another phase is refused before its signature is checked (which
        // would cost a pass over a masked vector for nothing); neither touches the state.
        let expected = self.state.phase();
        if expected != Some(msg.phase()) {
            return Err(ProtocolError::UnexpectedMessage {
                expected,
                got: msg.phase(),
            });
        }
        // The signature, before anything looks at the state: a replayed, relabelled or
        // altered message is refused here and cannot count as the sender's answer.
        authenticate(round, &self.state, from, &msg).map_err(|kind| refuse(from, kind))?;
        match (&mut self.state, msg) {
            (State::AwaitingKeys(s), ClientMsg::AdvertiseKeys(m)) => s.handle(round, m),
            (State::AwaitingShares(s), ClientMsg::ShareKeys(m)) => s.handle(round, m),
            (State::AwaitingMaskedInputs(s), ClientMsg::MaskedInput(m)) => s.handle(round, m),
            (State::AwaitingSignatures(s), ClientMsg::ConsistencySignature(m)) => s.handle(m),
            (State::AwaitingUnmaskShares(s), ClientMsg::UnmaskShares(m)) => s.handle(round, m),
            // Unreachable after the phase check above.
            (state, msg) => Err(ProtocolError::UnexpectedMessage {
                expected: state.phase(),
                got: msg.phase(),
            }),
        }
    }

    fn close_phase(&mut self, now: Instant) {
        let round = &self.round;
        let out = &mut self.out;
        let next = match std::mem::replace(&mut self.state, State::Finished) {
            State::AwaitingKeys(s) => s.close(round, out).map(State::AwaitingShares),
            State::AwaitingShares(s) => s.close(round, out).map(State::AwaitingMaskedInputs),
            State::AwaitingMaskedInputs(s) => s.close(round, out).map(State::AwaitingSignatures),
            State::AwaitingSignatures(s) => s.close(round, out).map(State::AwaitingUnmaskShares),
            State::AwaitingUnmaskShares(s) => s.close(round, out).map(|output| {
                tracing::info!(ctx = %round.ctx, survivors = output.survivors.len(),
                    dropped = output.dropped.len(), "round finished");
                out.events.push_back(ServerEvent::Finished(output));
                State::Finished
            }),
            done @ (State::Finished | State::Failed) => Ok(done),
        };
        self.state = match next {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(ctx = %round.ctx, error = %e, "round failed");
                out.events.push_back(ServerEvent::Failed(e));
                State::Failed
            }
        };
        self.deadline = now + round.timeout;
    }
}

/// What the whole round shares.
struct Round {
    ctx: RoundContext,
    config: RoundConfig,
    threshold: usize,
    graph: NeighbourGraph,
    roster: Arc<Roster>,
    timeout: Duration,
}

impl Round {
    fn neighbours(&self, id: ParticipantId) -> &[ParticipantId] {
        self.graph.neighbours(id).unwrap_or(&[])
    }

    fn is_neighbour(&self, u: ParticipantId, v: ParticipantId) -> bool {
        self.neighbours(u).binary_search(&v).is_ok()
    }
}

#[derive(Default)]
struct Outbox {
    transmits: VecDeque<(ParticipantId, ServerMsg)>,
    events: VecDeque<ServerEvent>,
    /// Everyone who stopped taking part so far, with the phase they missed.
    dropped: Vec<(ParticipantId, Phase)>,
}

impl Outbox {
    /// Reports the end of `phase` and checks the threshold: `asked` were asked, `going_on`
    /// answered and continue.
    fn phase_closed(
        &mut self,
        round: &Round,
        phase: Phase,
        asked: impl IntoIterator<Item = ParticipantId>,
        going_on: &BTreeSet<ParticipantId>,
    ) -> Result<(), RoundError> {
        let dropped: Vec<ParticipantId> = asked
            .into_iter()
            .filter(|id| !going_on.contains(id))
            .collect();
        self.dropped.extend(dropped.iter().map(|&id| (id, phase)));
        tracing::debug!(ctx = %round.ctx, %phase, responded = going_on.len(),
            dropped = dropped.len(), "phase closed");
        self.events.push_back(ServerEvent::PhaseClosed {
            phase,
            responded: going_on.iter().copied().collect(),
            dropped,
        });
        if going_on.len() < round.threshold {
            return Err(RoundError::BelowThreshold {
                phase,
                have: going_on.len(),
                need: round.threshold,
            });
        }
        Ok(())
    }
}

enum State {
    AwaitingKeys(AwaitingKeys),
    AwaitingShares(AwaitingShares),
    AwaitingMaskedInputs(AwaitingMaskedInputs),
    AwaitingSignatures(AwaitingSignatures),
    AwaitingUnmaskShares(AwaitingUnmaskShares),
    Finished,
    Failed,
}

impl State {
    fn phase(&self) -> Option<Phase> {
        match self {
            State::AwaitingKeys(_) => Some(Phase::AdvertiseKeys),
            State::AwaitingShares(_) => Some(Phase::ShareKeys),
            State::AwaitingMaskedInputs(_) => Some(Phase::MaskedInput),
            State::AwaitingSignatures(_) => Some(Phase::ConsistencyCheck),
            State::AwaitingUnmaskShares(_) => Some(Phase::Unmask),
            State::Finished | State::Failed => None,
        }
    }

    /// True when every participant asked in this phase has answered.
    fn everyone_answered(&self) -> bool {
        match self {
            State::AwaitingKeys(s) => s.all_answered,
            State::AwaitingShares(s) => s.shares.len() == s.keys.len(),
            State::AwaitingMaskedInputs(s) => s.received.len() == s.partners.len(),
            State::AwaitingSignatures(s) => s.signatures.len() == s.survivors.len(),
            State::AwaitingUnmaskShares(s) => s.responded.len() == s.signers.len(),
            State::Finished | State::Failed => false,
        }
    }
}

fn refuse(from: ParticipantId, kind: Misbehaviour) -> ProtocolError {
    ProtocolError::peer(from, kind)
}

/// Verifies `msg`'s Ed25519 signature against `from`'s roster key (see `msg`'s module doc
/// for the signed bytes). Reads the state only for the survivor set a ConsistencySignature
/// signs; changes nothing.
fn authenticate(
    round: &Round,
    state: &State,
    from: ParticipantId,
    msg: &ClientMsg,
) -> Result<(), Misbehaviour> {
    let Some(pk) = round.roster.get(from) else {
        return Err(Misbehaviour::UnknownSender);
    };
    let ok =
        |signed: &[u8], signature: &[u8]| keys::verify_signature(pk, signed, signature).is_ok();
    let bad_message = Misbehaviour::BadMessageSignature { phase: msg.phase() };
    let (verified, refusal) = match msg {
        // Signed before every message was: keeps its old refusal.
        ClientMsg::AdvertiseKeys(m) => (
            ok(&m.signed_bytes(), &m.signature),
            Misbehaviour::BadSignature,
        ),
        ClientMsg::ShareKeys(m) => (ok(&m.signed_bytes(), &m.signature), bad_message),
        ClientMsg::MaskedInput(m) => (ok(&m.signed_bytes(), &m.signature), bad_message),
        ClientMsg::UnmaskShares(m) => (ok(&m.signed_bytes(), &m.signature), bad_message),
        // Signs the survivor set the server holds, not its own content.
        ClientMsg::ConsistencySignature(m) => (
            matches!(state, State::AwaitingSignatures(s) if ok(&s.signed_bytes, &m.signature)),
            Misbehaviour::BadSignature,
        ),
    };
    if verified {
        Ok(())
    } else {
        Err(refusal)
    }
}

// ---- Phase 1: AdvertiseKeys.

#[derive(Default)]
struct AwaitingKeys {
    keys: BTreeMap<ParticipantId, AdvertiseKeys>,
    all_answered: bool,
}

impl AwaitingKeys {
    fn handle(&mut self, round: &Round, m: AdvertiseKeys) -> Result<(), ProtocolError> {
        let from = m.from;
        // The signature was verified by `authenticate`.
        if self.keys.contains_key(&from) {
            return Err(refuse(from, Misbehaviour::DuplicateMessage));
        }
        self.keys.insert(from, m);
        self.all_answered = self.keys.len() == round.config.participants.len();
        Ok(())
    }

    fn close(self, round: &Round, out: &mut Outbox) -> Result<AwaitingShares, RoundError> {
        let u1: BTreeSet<ParticipantId> = self.keys.keys().copied().collect();
        out.phase_closed(
            round,
            Phase::AdvertiseKeys,
            round.config.participants.iter().copied(),
            &u1,
        )?;
        for &u in &u1 {
            let keys = round
                .neighbours(u)
                .iter()
                .filter_map(|v| self.keys.get(v).cloned())
                .collect();
            out.transmits.push_back((
                u,
                ServerMsg::ShareKeys(ShareKeysRequest {
                    ctx: round.ctx.clone(),
                    keys,
                }),
            ));
        }
        Ok(AwaitingShares {
            keys: self.keys,
            shares: BTreeMap::new(),
        })
    }
}

// ---- Phase 2: ShareKeys.

struct AwaitingShares {
    /// U1's keys.
    keys: BTreeMap<ParticipantId, AdvertiseKeys>,
    /// owner → holder → ciphertext.
    shares: BTreeMap<ParticipantId, BTreeMap<ParticipantId, Vec<u8>>>,
}

impl AwaitingShares {
    fn handle(&mut self, round: &Round, m: ShareKeys) -> Result<(), ProtocolError> {
        let from = m.from;
        if !self.keys.contains_key(&from) {
            return Err(refuse(
                from,
                Misbehaviour::NotAsked {
                    phase: Phase::ShareKeys,
                },
            ));
        }
        if self.shares.contains_key(&from) {
            return Err(refuse(from, Misbehaviour::DuplicateMessage));
        }
        let mut by_holder = BTreeMap::new();
        for s in m.shares {
            if s.from != from {
                return Err(refuse(
                    from,
                    Misbehaviour::SenderMismatch { claimed: s.from },
                ));
            }
            if !round.is_neighbour(from, s.to) || !self.keys.contains_key(&s.to) {
                return Err(refuse(from, Misbehaviour::NotANeighbour { peer: s.to }));
            }
            if s.ciphertext.len() != SHARE_CIPHERTEXT_LEN {
                return Err(refuse(
                    from,
                    Misbehaviour::WrongLength {
                        expected: SHARE_CIPHERTEXT_LEN,
                        got: s.ciphertext.len(),
                    },
                ));
            }
            if by_holder.insert(s.to, s.ciphertext).is_some() {
                return Err(refuse(from, Misbehaviour::DuplicateShare { peer: s.to }));
            }
        }
        self.shares.insert(from, by_holder);
        Ok(())
    }

    fn close(
        mut self,
        round: &Round,
        out: &mut Outbox,
    ) -> Result<AwaitingMaskedInputs, RoundError> {
        // Mutual pairs among those who answered; then drop anyone left with fewer than t
        // partners, until nobody else falls below.
        let mut partners: BTreeMap<ParticipantId, BTreeSet<ParticipantId>> = self
            .shares
            .iter()
            .map(|(&u, holders)| {
                let mutual = holders
                    .keys()
                    .copied()
                    .filter(|v| self.shares.get(v).is_some_and(|h| h.contains_key(&u)))
                    .collect();
                (u, mutual)
            })
            .collect();
        loop {
            let weak: Vec<ParticipantId> = partners
                .iter()
                .filter(|(_, p)| p.len() < round.threshold)
                .map(|(&u, _)| u)
                .collect();
            if weak.is_empty() {
                break;
            }
            for u in &weak {
                partners.remove(u);
            }
            for p in partners.values_mut() {
                for u in &weak {
                    p.remove(u);
                }
            }
        }
        let u2: BTreeSet<ParticipantId> = partners.keys().copied().collect();
        out.phase_closed(round, Phase::ShareKeys, self.keys.keys().copied(), &u2)?;

        for (&u, ps) in &partners {
            let shares = ps
                .iter()
                .filter_map(|&v| {
                    let ciphertext = self.shares.get_mut(&v)?.remove(&u)?;
                    Some(EncryptedShare {
                        from: v,
                        to: u,
                        ciphertext,
                    })
                })
                .collect();
            out.transmits.push_back((
                u,
                ServerMsg::MaskedInput(MaskedInputRequest {
                    ctx: round.ctx.clone(),
                    shares,
                }),
            ));
        }
        let keys = self
            .keys
            .into_iter()
            .filter(|(u, _)| u2.contains(u))
            .map(|(u, k)| {
                (
                    u,
                    PeerKeys {
                        s_pk: k.s_pk,
                        commitment: k.self_mask_commitment,
                    },
                )
            })
            .collect();
        Ok(AwaitingMaskedInputs {
            keys,
            partners,
            sum: None,
            received: BTreeSet::new(),
        })
    }
}

/// What the server keeps of a U2 member's advertised keys.
struct PeerKeys {
    s_pk: [u8; 32],
    commitment: [u8; 32],
}

// ---- Phase 3: MaskedInput.

struct AwaitingMaskedInputs {
    keys: BTreeMap<ParticipantId, PeerKeys>,
    /// U2, each with the partners it masks with (symmetric).
    partners: BTreeMap<ParticipantId, BTreeSet<ParticipantId>>,
    /// Running sum of the masked inputs received so far.
    sum: Option<RingVec>,
    received: BTreeSet<ParticipantId>,
}

impl AwaitingMaskedInputs {
    fn handle(&mut self, round: &Round, m: MaskedInput) -> Result<(), ProtocolError> {
        let from = m.from;
        if !self.partners.contains_key(&from) {
            return Err(refuse(
                from,
                Misbehaviour::NotAsked {
                    phase: Phase::MaskedInput,
                },
            ));
        }
        if self.received.contains(&from) {
            return Err(refuse(from, Misbehaviour::DuplicateMessage));
        }
        if m.masked.modulus() != round.config.modulus {
            return Err(refuse(
                from,
                Misbehaviour::WrongModulus {
                    expected: round.config.modulus,
                    got: m.masked.modulus(),
                },
            ));
        }
        if m.masked.len() != round.config.vector_len {
            return Err(refuse(
                from,
                Misbehaviour::WrongLength {
                    expected: round.config.vector_len,
                    got: m.masked.len(),
                },
            ));
        }
        match &mut self.sum {
            None => self.sum = Some(m.masked),
            Some(sum) => add_into(sum, &m.masked),
        }
        self.received.insert(from);
        Ok(())
    }

    fn close(self, round: &Round, out: &mut Outbox) -> Result<AwaitingSignatures, RoundError> {
        let u3 = self.received;
        out.phase_closed(
            round,
            Phase::MaskedInput,
            self.partners.keys().copied(),
            &u3,
        )?;
        let Some(sum) = self.sum else {
            // Unreachable: t >= 1 inputs were received.
            return Err(RoundError::BelowThreshold {
                phase: Phase::MaskedInput,
                have: 0,
                need: round.threshold,
            });
        };
        let survivors: Vec<ParticipantId> = u3.iter().copied().collect();
        for &u in &survivors {
            out.transmits.push_back((
                u,
                ServerMsg::ConsistencyCheck(ConsistencyRequest {
                    ctx: round.ctx.clone(),
                    survivors: survivors.clone(),
                }),
            ));
        }
        Ok(AwaitingSignatures {
            signed_bytes: survivor_set_signed_bytes(&round.ctx, &survivors),
            unmask: Unmasking {
                keys: self.keys,
                partners: self.partners,
                sum,
                survivors: u3,
            },
            signatures: BTreeMap::new(),
            survivors,
        })
    }
}

/// `sum += x` (same modulus and length, checked by the caller), over both cores for large
/// vectors.
fn add_into(sum: &mut RingVec, x: &RingVec) {
    const CHUNK: usize = 1 << 16;
    match (sum, x) {
        (RingVec::U32(s), RingVec::U32(x)) => s
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(s, x)| {
                s.iter_mut()
                    .zip(x)
                    .for_each(|(a, b)| *a = a.wrapping_add(*b))
            }),
        (RingVec::U64(s), RingVec::U64(x)) => s
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(s, x)| {
                s.iter_mut()
                    .zip(x)
                    .for_each(|(a, b)| *a = a.wrapping_add(*b))
            }),
        // Refused before we get here.
        _ => {}
    }
}

/// What the last two phases carry to the unmasking.
struct Unmasking {
    keys: BTreeMap<ParticipantId, PeerKeys>,
    partners: BTreeMap<ParticipantId, BTreeSet<ParticipantId>>,
    sum: RingVec,
    /// U3.
    survivors: BTreeSet<ParticipantId>,
}

// ---- Phase 4: ConsistencyCheck.

struct AwaitingSignatures {
    unmask: Unmasking,
    survivors: Vec<ParticipantId>,
    signed_bytes: Vec<u8>,
    signatures: BTreeMap<ParticipantId, Vec<u8>>,
}

impl AwaitingSignatures {
    fn handle(&mut self, m: ConsistencySignature) -> Result<(), ProtocolError> {
        let from = m.from;
        if !self.unmask.survivors.contains(&from) {
            return Err(refuse(
                from,
                Misbehaviour::NotAsked {
                    phase: Phase::ConsistencyCheck,
                },
            ));
        }
        if self.signatures.contains_key(&from) {
            return Err(refuse(from, Misbehaviour::DuplicateMessage));
        }
        // The signature on `signed_bytes` was verified by `authenticate`.
        self.signatures.insert(from, m.signature);
        Ok(())
    }

    fn close(self, round: &Round, out: &mut Outbox) -> Result<AwaitingUnmaskShares, RoundError> {
        let signers: BTreeSet<ParticipantId> = self.signatures.keys().copied().collect();
        out.phase_closed(
            round,
            Phase::ConsistencyCheck,
            self.survivors.iter().copied(),
            &signers,
        )?;
        let signatures: Vec<(ParticipantId, Vec<u8>)> = self.signatures.into_iter().collect();
        for &u in &signers {
            out.transmits.push_back((
                u,
                ServerMsg::Unmask(UnmaskRequest {
                    ctx: round.ctx.clone(),
                    survivors: self.survivors.clone(),
                    signatures: signatures.clone(),
                }),
            ));
        }
        Ok(AwaitingUnmaskShares {
            unmask: self.unmask,
            signers,
            responded: BTreeSet::new(),
            revealed: BTreeMap::new(),
        })
    }
}

// ---- Phase 5: Unmask.

struct AwaitingUnmaskShares {
    unmask: Unmasking,
    signers: BTreeSet<ParticipantId>,
    responded: BTreeSet<ParticipantId>,
    /// owner → the shares revealed of its self-mask seed (owner ∈ U3) or mask key.
    revealed: BTreeMap<ParticipantId, Vec<Share>>,
}

impl AwaitingUnmaskShares {
    fn handle(&mut self, round: &Round, m: UnmaskShares) -> Result<(), ProtocolError> {
        let from = m.from;
        if !self.signers.contains(&from) {
            return Err(refuse(
                from,
                Misbehaviour::NotAsked {
                    phase: Phase::Unmask,
                },
            ));
        }
        if self.responded.contains(&from) {
            return Err(refuse(from, Misbehaviour::DuplicateMessage));
        }
        // `from` holds a share of `owner` iff the server routed `owner → from`.
        let holds = self.unmask.partners.get(&from);
        let mut seen = BTreeSet::new();
        for r in &m.shares {
            let owner = r.owner;
            if !holds.is_some_and(|p| p.contains(&owner)) {
                return Err(refuse(from, Misbehaviour::NotAHolder { owner }));
            }
            if !seen.insert(owner) {
                return Err(refuse(from, Misbehaviour::DuplicateShare { peer: owner }));
            }
            let expected = if self.unmask.survivors.contains(&owner) {
                ShareKind::SelfMask
            } else {
                ShareKind::MaskKey
            };
            if r.kind != expected {
                return Err(refuse(
                    from,
                    Misbehaviour::WrongShareKind {
                        owner,
                        expected,
                        got: r.kind,
                    },
                ));
            }
            let x = share_x(&round.graph, owner, from).unwrap_or(0);
            if r.share.x != x {
                return Err(refuse(
                    from,
                    Misbehaviour::WrongShareIndex {
                        owner,
                        expected: x,
                        got: r.share.x,
                    },
                ));
            }
            if r.share.y.len() != SECRET_LEN {
                return Err(refuse(
                    from,
                    Misbehaviour::WrongLength {
                        expected: SECRET_LEN,
                        got: r.share.y.len(),
                    },
                ));
            }
        }
        for r in m.shares {
            self.revealed.entry(r.owner).or_default().push(r.share);
        }
        self.responded.insert(from);
        Ok(())
    }

    fn close(mut self, round: &Round, out: &mut Outbox) -> Result<RoundOutput, RoundError> {
        out.phase_closed(
            round,
            Phase::Unmask,
            self.signers.iter().copied(),
            &self.responded,
        )?;
        let result = self.unmask_sum(round, out);
        for shares in self.revealed.values_mut() {
            shares.iter_mut().for_each(|s| s.y.zeroize());
        }
        result
    }

    fn unmask_sum(&mut self, round: &Round, out: &mut Outbox) -> Result<RoundOutput, RoundError> {
        let mut masks: Vec<(Seed, MaskSign)> = Vec::new();
        let result = self
            .collect_masks(round, out, &mut masks)
            .map(|(self_masks, mask_keys)| {
                let mut sum = std::mem::replace(&mut self.unmask.sum, RingVec::U32(Vec::new()));
                // One pass over the sum for every self mask and dangling pairwise mask.
                prg::apply_masks(&mut sum, &masks);
                let mut dropped = std::mem::take(&mut out.dropped);
                dropped.sort_unstable();
                RoundOutput {
                    sum,
                    survivors: self.unmask.survivors.iter().copied().collect(),
                    dropped,
                    reconstructed_self_masks: self_masks,
                    reconstructed_mask_keys: mask_keys,
                }
            });
        masks.iter_mut().for_each(|(s, _)| s.zeroize());
        result
    }

    /// Rebuilds every secret needed and lists the masks to remove from the sum.
    fn collect_masks(
        &mut self,
        round: &Round,
        out: &mut Outbox,
        masks: &mut Vec<(Seed, MaskSign)>,
    ) -> Result<(usize, usize), RoundError> {
        let u = &self.unmask;
        let t = round.threshold;
        let mask_transcript = round.ctx.transcript(Phase::MaskedInput);
        let empty = Vec::new();

        // Self masks of the survivors: y_v contains +PRG(b_v).
        for &owner in &u.survivors {
            let shares = self.revealed.get(&owner).unwrap_or(&empty);
            let commitment = u.keys.get(&owner).map(|k| k.commitment);
            let b = rebuild(round, out, owner, ShareKind::SelfMask, shares, t, |b| {
                commitment == Some(self_mask_commitment(&round.ctx, owner, b))
            })?;
            masks.push((b, MaskSign::Sub));
        }

        // Dangling pairwise masks of the dropped (U2 \ U3) that some survivor masked with.
        let mut mask_keys = 0;
        for (&owner, ps) in &u.partners {
            if u.survivors.contains(&owner) {
                continue;
            }
            let live: Vec<ParticipantId> = ps
                .iter()
                .copied()
                .filter(|v| u.survivors.contains(v))
                .collect();
            if live.is_empty() {
                continue;
            }
            let shares = self.revealed.get(&owner).unwrap_or(&empty);
            let s_pk = u.keys.get(&owner).map(|k| k.s_pk);
            let mut sk_bytes = rebuild(round, out, owner, ShareKind::MaskKey, shares, t, |sk| {
                <[u8; 32]>::try_from(sk)
                    .is_ok_and(|sk| Some(AgreementSecret::from_bytes(sk).public_key()) == s_pk)
            })?;
            let sk = AgreementSecret::from_bytes(sk_bytes);
            sk_bytes.zeroize();
            mask_keys += 1;
            for v in live {
                let Some(v_pk) = u.keys.get(&v).map(|k| k.s_pk) else {
                    continue;
                };
                let mut shared = sk.agree(&v_pk).map_err(|source| RoundError::KeyAgreement {
                    owner,
                    peer: v,
                    source,
                })?;
                let seed = pair_seed(&mask_transcript, &shared, owner, v);
                shared.zeroize();
                // v added +PRG(s_uv) if owner < v, −PRG(s_uv) if owner > v: undo it.
                let sign = if owner < v {
                    MaskSign::Sub
                } else {
                    MaskSign::Add
                };
                masks.push((seed, sign));
            }
        }
        Ok((u.survivors.len(), mask_keys))
    }
}

/// Rebuilds one 32-byte secret from its revealed shares, leaving out (and reporting)
/// inconsistent ones.
fn rebuild(
    round: &Round,
    out: &mut Outbox,
    owner: ParticipantId,
    kind: ShareKind,
    shares: &[Share],
    t: usize,
    verify: impl Fn(&[u8]) -> bool,
) -> Result<Seed, RoundError> {
    if shares.len() < t {
        return Err(RoundError::ReconstructionBelowThreshold {
            owner,
            kind,
            have: shares.len(),
            need: t,
        });
    }
    let (mut secret, bad) = shamir::combine_verified(shares, t, verify).map_err(|source| {
        RoundError::Reconstruction {
            owner,
            kind,
            source,
        }
    })?;
    for x in bad {
        let holder = round
            .neighbours(owner)
            .get(usize::from(x).wrapping_sub(1))
            .copied();
        if let Some(holder) = holder {
            tracing::warn!(ctx = %round.ctx, owner, holder, %kind, "inconsistent share left out");
            out.events.push_back(ServerEvent::Refused {
                from: holder,
                error: ProtocolError::peer(holder, Misbehaviour::InconsistentShare { owner }),
            });
        }
    }
    let seed = <[u8; 32]>::try_from(secret.as_slice()).map_err(|_| RoundError::SecretLength {
        owner,
        kind,
        len: secret.len(),
    });
    secret.zeroize();
    seed
}
