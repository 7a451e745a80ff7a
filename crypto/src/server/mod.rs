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

mod phases;
use phases::*;
