//! One party of a PSI exchange, sans-IO.
//!
//! # Using a [`PsiParty`]
//!
//! 1. [`PsiParty::new`] draws the party's scalar and ephemeral key and queues its
//!    [`Hello`]. Send what [`PsiParty::poll_transmit`] returns, to the peer, in order.
//! 2. Hand every message from the peer to [`PsiParty::handle_message`], in the order the
//!    peer sent them, and drain `poll_transmit` after each call.
//! 3. Once the peer's Hello is in ([`PsiParty::accepts_ids`]), give the ids in any number of
//!    [`PsiParty::push_ids`] calls (rows are numbered from 0 in that order; a missing id is
//!    the empty string and is refused), then [`PsiParty::finish_ids`]. Keeping each call to
//!    about a chunk of ids keeps the caller's memory bounded too.
//! 4. [`PsiParty::output`] once [`PsiParty::is_done`].
//!
//! The party never reads a clock: a peer that goes silent is the driver's timeout.
//! `poll_transmit` produces chunks lazily, one per call, so memory stays bounded as long as
//! the driver sends each message before polling the next.
//!
//! # States
//!
//! ```text
//!          ┌▶ Active:  Collecting ─finish_ids─▶ Exchanging ─last Doubled─▶ Matching ─┐
//! Hello ──┤                                                                          ├▶ Done
//!          └▶ Passive: Running (own ids | A's chunks doubled) ─own last sent─▶ AwaitingResult ┘
//! ```
//!
//! Each transition consumes the state. A message for another job or session, a second
//! Hello, or a sealed message before the handshake is refused and the state kept
//! ([`PsiError::keeps_state`]); any other refusal ends the exchange for this party: it is
//! failed and sends nothing more.
//!
//! # What each side and the relay receive, and why non-shared ids stay unlinkable
//!
//! - The **relay** sees the two Hellos (ephemeral public keys, nonces, a configuration
//!   digest, signatures) and sealed messages: a number, a kind and a length each. The
//!   lengths give it both set sizes and the intersection size (exactly the sizes it may
//!   learn). It cannot read, alter, drop, replay or reorder a sealed message unnoticed, nor
//!   impersonate a party: the channel key comes from an X25519 agreement whose public keys
//!   are signed by the parties' roster Ed25519 keys.
//! - The **passive** party receives `H(x)·a` for the active party's ids in an order shuffled
//!   by the active party, and the final Result. Under DDH in Ristretto255 (prime order), the
//!   tuples `(H(x), H(x)·a)` for ids the passive party guesses are indistinguishable from
//!   random without `a`: it cannot test whether a given customer is in the active set, and
//!   the order leaks nothing about the active party's rows. With [`Delivery::ActiveOnly`]
//!   the Result holds only the size and the hash; with [`Delivery::Both`] it names which of
//!   the passive party's own positions are shared and their double encodings.
//! - The **active** party receives `H(x)·a·p` for its own ids (in its own order: it learns
//!   which of its rows match) and `H(y)·p` for the passive ids, shuffled by the passive
//!   party. It raises those to `a`; a value `H(y)·p·a` equal to no `H(x)·a·p` belongs to an id
//!   outside its set, and linking it to a candidate id `z` means telling `H(y)·p` from a
//!   random point given `H(z)`, i.e. breaking DDH without `p`.
//! - The salt is derived from the X25519 agreement, so even `H` is unknown outside the
//!   two parties, and the same id hashes differently in every job and session: encodings
//!   cannot be linked across exchanges.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rayon::prelude::*;
use zeroize::Zeroizing;

use super::msg::{
    self, hello_signed_bytes, sealed_aad, Hello, Kind, PsiContext, PsiMsg, Role, Sealed,
};
use super::{
    Blinder, Delivery, Duplicates, IntersectionHasher, PsiConfig, PsiError, PsiOutput,
    MAX_SET_SIZE, POINT_LEN,
};
use crate::keys::{self, AgreementSecret, IdentityKey};

/// Counters for progress bars; none of them secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Own ids hashed and blinded so far.
    pub own_ids: u64,
    /// Own encodings sent so far.
    pub own_sent: u64,
    /// Size of the own set once `finish_ids` ran (after the duplicates rule).
    pub own_set_size: Option<u64>,
    /// Entries of the peer's Encodings stream processed so far (for the passive party: the
    /// active party's chunks it doubled; for the active party: the passive chunks matched).
    pub peer_received: u64,
    /// The active party only: own encodings that came back doubled.
    pub doubled_back: u64,
    /// Size of the peer's set once its last chunk is in.
    pub peer_set_size: Option<u64>,
}

/// One side of a PSI exchange. See the module doc.
pub struct PsiParty {
    config: PsiConfig,
    role: Role,
    identity: Arc<IdentityKey>,
    peer_key: [u8; 32],
    state: State,
    outbox: VecDeque<PsiMsg>,
    progress: Progress,
}

impl fmt::Debug for PsiParty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PsiParty")
            .field("ctx", &self.config.ctx)
            .field("role", &self.role)
            .field("state", &self.state.name())
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

/// Own ids, hashed, blinded and numbered: a compressed point and its row.
#[derive(Clone, Copy)]
struct Entry {
    point: [u8; POINT_LEN],
    row: u32,
}

/// A directory over a table sorted by point: `starts[b]..starts[b + 1]` is the run of
/// entries whose first `32 - shift` bits are `b`. The double encodings are uniformly
/// spread, so a run holds a handful of entries, and a lookup reads one directory slot and
/// one short run instead of the ~log2(n) scattered entries of a binary search over the
/// whole table (at 10M entries that search is ~3 µs a lookup, nearly all cache misses;
/// with the directory ~0.25 µs). At most 2^22 + 1 slots (16 MiB).
struct PrefixIndex {
    shift: u32,
    starts: Vec<u32>,
}

impl PrefixIndex {
    const MAX_BITS: u32 = 22;

    fn new(table: &[Entry]) -> Self {
        // About one slot per entry (the encodings' lowest bit of byte 0 is always clear, so
        // half the slots stay empty and a run averages two entries).
        let bits = (usize::BITS - table.len().leading_zeros()).clamp(1, Self::MAX_BITS);
        let shift = 32 - bits;
        let mut starts = vec![0u32; (1usize << bits) + 1];
        for e in table {
            if let Some(s) = starts.get_mut(Self::slot(shift, &e.point) + 1) {
                *s += 1;
            }
        }
        let mut sum = 0u32;
        for s in &mut starts {
            sum += *s;
            *s = sum;
        }
        PrefixIndex { shift, starts }
    }

    fn slot(shift: u32, p: &[u8; POINT_LEN]) -> usize {
        (u32::from_be_bytes([p[0], p[1], p[2], p[3]]) >> shift) as usize
    }

    /// The entry of `table` (the one this index was built over) whose point is `p`.
    fn find<'t>(&self, table: &'t [Entry], p: &[u8; POINT_LEN]) -> Option<&'t Entry> {
        let b = Self::slot(self.shift, p);
        let from = *self.starts.get(b)? as usize;
        let to = *self.starts.get(b + 1)? as usize;
        let run = table.get(from..to)?;
        let k = run.binary_search_by(|e| e.point.cmp(p)).ok()?;
        run.get(k)
    }
}

/// The sealing of one handshake's messages, in both directions: the transcript, the channel
/// key and each direction's next number. A message's key is
/// `HKDF(key, salt = transcript, "msg" || from || seq || kind)` and its associated data the
/// transcript, sender, number and kind; the receiver takes exactly its next number. PSI's
/// [`Link`] and the vertical [`super::channel::Channel`] both seal through it.
pub(super) struct Sealing {
    transcript: Vec<u8>,
    key: Zeroizing<[u8; 32]>,
    pub(super) sent: u64,
    received: u64,
}

impl Sealing {
    pub(super) fn new(transcript: Vec<u8>, key: Zeroizing<[u8; 32]>) -> Self {
        Sealing {
            transcript,
            key,
            sent: 0,
            received: 0,
        }
    }

    pub(super) fn received(&self) -> u64 {
        self.received
    }

    fn message_key(&self, from: Role, seq: u64, kind: Kind) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(keys::hkdf32(
            &self.key[..],
            &self.transcript,
            &[b"msg", &[from.tag()], &seq.to_le_bytes(), &[kind.tag()]],
        ))
    }

    /// Seals `me`'s next message of `kind` in session `ctx`.
    pub(super) fn seal(
        &mut self,
        ctx: &PsiContext,
        me: Role,
        kind: Kind,
        plaintext: &[u8],
    ) -> PsiMsg {
        let seq = self.sent;
        self.sent += 1;
        let key = self.message_key(me, seq, kind);
        let aad = sealed_aad(&self.transcript, me, seq, kind);
        PsiMsg::Sealed(Sealed {
            ctx: ctx.clone(),
            from: me,
            seq,
            kind,
            ciphertext: keys::seal(&key, &aad, plaintext),
        })
    }

    /// Opens the peer's next sealed message (sender and context already checked).
    pub(super) fn open(&mut self, m: &Sealed) -> Result<Vec<u8>, PsiError> {
        if m.seq != self.received {
            return Err(PsiError::WrongSequence {
                expected: self.received,
                got: m.seq,
            });
        }
        let key = self.message_key(m.from, m.seq, m.kind);
        let aad = sealed_aad(&self.transcript, m.from, m.seq, m.kind);
        let plain = keys::open(&key, &aad, &m.ciphertext)
            .map_err(|source| PsiError::Undecryptable { seq: m.seq, source })?;
        self.received += 1;
        Ok(plain)
    }
}

/// After the handshake: the sealed channel, the scalar and the id salt.
pub(super) struct Link {
    pub(super) sealing: Sealing,
    salt: Zeroizing<[u8; 32]>,
    blinder: Blinder,
}

impl Link {
    fn seal(&mut self, config: &PsiConfig, me: Role, kind: Kind, plaintext: &[u8]) -> PsiMsg {
        self.sealing.seal(&config.ctx, me, kind, plaintext)
    }

    /// Opens the peer's next sealed message (sender and context already checked).
    fn open(&mut self, m: &Sealed) -> Result<Vec<u8>, PsiError> {
        self.sealing.open(m)
    }
}

/// Own ids being pushed.
struct Collecting {
    link: Link,
    entries: Vec<Entry>,
    pushed: u64,
}

/// Own encodings, shuffled, being sent chunk by chunk.
struct Outgoing {
    entries: Vec<Entry>,
    /// Entries sent so far.
    next: usize,
    /// The last chunk (possibly empty) has been produced.
    done: bool,
    duplicates_dropped: u64,
}

impl Outgoing {
    /// The next chunk's range and whether it is the last, or `None` once done.
    fn next_chunk(&mut self, chunk_len: usize) -> Option<(std::ops::Range<usize>, bool)> {
        if self.done {
            return None;
        }
        let end = self.next.saturating_add(chunk_len).min(self.entries.len());
        let range = self.next..end;
        self.next = end;
        self.done = end == self.entries.len();
        Some((range, self.done))
    }
}

// ---- Active states.

struct Exchanging {
    link: Link,
    own: Outgoing,
    /// Own entries whose points have been replaced by their double encodings.
    doubled: usize,
}

/// A shared id at the active party: (double encoding, own row, position in the passive
/// stream).
type Match = ([u8; POINT_LEN], u32, u32);

struct Matching {
    link: Link,
    /// Own entries with their double encodings, sorted by point.
    table: Vec<Entry>,
    /// Where each prefix's run of `table` starts.
    index: PrefixIndex,
    duplicates_dropped: u64,
    matches: Vec<Match>,
    received: u64,
}

// ---- Passive states.

enum PassiveOwn {
    Collecting(Vec<Entry>, u64),
    Ready(Outgoing),
}

struct Running {
    link: Link,
    own: PassiveOwn,
    /// Entries of the active stream doubled so far.
    received: u64,
    /// The active stream's last chunk is in.
    peer_done: bool,
}

struct AwaitingResult {
    link: Link,
    /// Own row at each position of the stream sent.
    rows_by_position: Vec<u32>,
    duplicates_dropped: u64,
    peer_set_size: u64,
    /// Positions already named in the Result.
    seen: Vec<u64>,
    rows: Vec<u32>,
    received: u64,
    last_point: Option<[u8; POINT_LEN]>,
    hasher: IntersectionHasher,
}

struct HelloSent {
    ephemeral: AgreementSecret,
    nonce: [u8; 32],
    blinder: Blinder,
}

enum State {
    Hello(HelloSent),
    Collecting(Collecting),
    Exchanging(Exchanging),
    Matching(Matching),
    Running(Running),
    AwaitingResult(Box<AwaitingResult>),
    /// The output and, for the active party, Result chunks still to send.
    Done(Box<PsiOutput>, Option<ResultSender>),
    Failed,
}

struct ResultSender {
    link: Link,
    entries: Vec<([u8; POINT_LEN], u32)>,
    total: u64,
    hash: [u8; 32],
    next: usize,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Hello(_) => "awaiting the peer's hello",
            State::Collecting(_) => "collecting own ids",
            State::Exchanging(_) => "exchanging own encodings",
            State::Matching(_) => "matching the passive party's encodings",
            State::Running(_) => "doubling the active party's encodings",
            State::AwaitingResult(_) => "awaiting the result",
            State::Done(..) => "done",
            State::Failed => "failed",
        }
    }
}

impl PsiParty {
    /// Validates the configuration, draws the party's blinding scalar and ephemeral X25519
    /// key from `rng`, and queues the signed [`Hello`]. `peer_public_key` is the peer's
    /// Ed25519 roster key.
    pub fn new(
        config: PsiConfig,
        role: Role,
        identity: Arc<IdentityKey>,
        peer_public_key: [u8; 32],
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Self, PsiError> {
        config.validate()?;
        let ephemeral = AgreementSecret::generate(rng);
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        let blinder = Blinder::random(rng);
        let ephemeral_pk = ephemeral.public_key();
        let config_digest = config.digest();
        let signature = identity.sign(&hello_signed_bytes(
            &config.ctx,
            role,
            &ephemeral_pk,
            &nonce,
            &config_digest,
        ));
        let hello = Hello {
            ctx: config.ctx.clone(),
            from: role,
            ephemeral_pk,
            nonce,
            config_digest,
            signature,
        };
        let mut outbox = VecDeque::new();
        outbox.push_back(PsiMsg::Hello(hello));
        Ok(PsiParty {
            config,
            role,
            identity,
            peer_key: peer_public_key,
            state: State::Hello(HelloSent {
                ephemeral,
                nonce,
                blinder,
            }),
            outbox,
            progress: Progress::default(),
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn config(&self) -> &PsiConfig {
        &self.config
    }

    /// The public key this party signs its Hello with.
    pub fn identity_public_key(&self) -> [u8; 32] {
        self.identity.public_key()
    }

    /// A short description of the current state, for logs.
    pub fn state_name(&self) -> &'static str {
        self.state.name()
    }

    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// True once the handshake is done and until `finish_ids`.
    pub fn accepts_ids(&self) -> bool {
        match &self.state {
            State::Collecting(_) => true,
            State::Running(r) => matches!(r.own, PassiveOwn::Collecting(..)),
            _ => false,
        }
    }

    /// True once this party has its output (the active party may still have Result chunks
    /// to send: keep polling).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done(..))
    }

    pub fn has_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    pub fn output(&self) -> Option<&PsiOutput> {
        match &self.state {
            State::Done(o, _) => Some(o),
            _ => None,
        }
    }

    /// Hashes, blinds and numbers the next ids (rows continue from the previous call), in
    /// parallel. An id the format refuses fails the party, naming the lowest bad row.
    pub fn push_ids<S: AsRef<str> + Sync>(&mut self, ids: &[S]) -> Result<(), PsiError> {
        let format = self.config.format;
        let (link, entries, pushed) = match &mut self.state {
            State::Collecting(c) => (&c.link, &mut c.entries, &mut c.pushed),
            State::Running(Running {
                link,
                own: PassiveOwn::Collecting(entries, pushed),
                ..
            }) => (&*link, entries, pushed),
            State::Failed => return Err(PsiError::Failed),
            other => {
                return Err(PsiError::NotReady {
                    op: "take ids",
                    state: other.name(),
                })
            }
        };
        let start = *pushed;
        if start + ids.len() as u64 > MAX_SET_SIZE {
            self.state = State::Failed;
            return Err(PsiError::TooManyIds { max: MAX_SET_SIZE });
        }
        let normalised: Result<Vec<String>, _> = ids
            .par_iter()
            .enumerate()
            .map(|(i, id)| format.normalise(start + i as u64, id.as_ref()))
            .collect();
        let normalised = match normalised {
            Ok(n) => n,
            Err(_) => {
                // rayon reports any failing row; name the lowest one.
                let first = ids
                    .iter()
                    .enumerate()
                    .find_map(|(i, id)| format.normalise(start + i as u64, id.as_ref()).err());
                self.state = State::Failed;
                return Err(match first {
                    Some(e) => e.into(),
                    None => PsiError::Failed,
                });
            }
        };
        let points = link.blinder.encode_all(&link.salt, &normalised);
        drop(normalised);
        entries.extend(points.into_iter().enumerate().map(|(i, point)| Entry {
            point,
            row: (start + i as u64) as u32,
        }));
        *pushed += ids.len() as u64;
        self.progress.own_ids = *pushed;
        Ok(())
    }

    /// Ends the ids: applies the duplicates rule, shuffles the encodings with `rng` and
    /// starts sending them (the passive party: once it has answered all the active party's
    /// chunks).
    pub fn finish_ids(&mut self, rng: &mut impl rand::CryptoRng) -> Result<(), PsiError> {
        if !self.accepts_ids() {
            if self.has_failed() {
                return Err(PsiError::Failed);
            }
            return Err(PsiError::NotReady {
                op: "finish the ids",
                state: self.state.name(),
            });
        }
        let rule = self.config.duplicates;
        let state = std::mem::replace(&mut self.state, State::Failed);
        let next = match state {
            State::Collecting(c) => {
                let own = prepare(c.entries, rule, rng)?;
                self.progress.own_set_size = Some(own.entries.len() as u64);
                State::Exchanging(Exchanging {
                    link: c.link,
                    own,
                    doubled: 0,
                })
            }
            State::Running(mut r) => {
                let PassiveOwn::Collecting(entries, _) =
                    std::mem::replace(&mut r.own, PassiveOwn::Collecting(Vec::new(), 0))
                else {
                    return Err(PsiError::Failed);
                };
                let own = prepare(entries, rule, rng)?;
                self.progress.own_set_size = Some(own.entries.len() as u64);
                r.own = PassiveOwn::Ready(own);
                State::Running(r)
            }
            _ => return Err(PsiError::Failed),
        };
        self.state = next;
        Ok(())
    }

    /// Takes one message from the peer (relayed). See the module doc for which refusals
    /// keep the state.
    pub fn handle_message(&mut self, msg: PsiMsg) -> Result<(), PsiError> {
        if matches!(self.state, State::Failed) {
            return Err(PsiError::Failed);
        }
        if *msg.ctx() != self.config.ctx {
            return Err(PsiError::WrongContext {
                expected: self.config.ctx.clone(),
                got: msg.ctx().clone(),
            });
        }
        let early_or_late = match (&self.state, &msg) {
            (State::Hello(_), PsiMsg::Sealed(_)) => true,
            (State::Hello(_), PsiMsg::Hello(_)) => false,
            (State::Done(..), _) | (_, PsiMsg::Hello(_)) => true,
            _ => false,
        };
        if early_or_late {
            return Err(PsiError::UnexpectedMessage {
                got: msg.name(),
                state: self.state.name(),
            });
        }
        if msg.from() == self.role {
            self.state = State::Failed;
            return Err(PsiError::WrongSender { got: msg.from() });
        }
        let state = std::mem::replace(&mut self.state, State::Failed);
        let next = match (state, msg) {
            (State::Hello(h), PsiMsg::Hello(peer)) => self.on_hello(h, &peer)?,
            (state, PsiMsg::Sealed(m)) => self.on_sealed(state, &m)?,
            _ => return Err(PsiError::Failed),
        };
        self.state = next;
        Ok(())
    }

    /// The next message to send to the peer, produced lazily (one chunk per call).
    pub fn poll_transmit(&mut self) -> Option<PsiMsg> {
        if let Some(m) = self.outbox.pop_front() {
            return Some(m);
        }
        let chunk_len = self.config.chunk_len;
        let (config, role) = (&self.config, self.role);
        match &mut self.state {
            State::Exchanging(x) => {
                let (range, last) = x.own.next_chunk(chunk_len)?;
                let points = x.own.entries.get(range.clone()).unwrap_or(&[]);
                let plain = msg::points_plaintext(last, points.iter().map(|e| &e.point));
                self.progress.own_sent = range.end as u64;
                Some(x.link.seal(config, role, Kind::Encodings, &plain))
            }
            State::Running(r) => {
                if !r.peer_done {
                    return None;
                }
                let PassiveOwn::Ready(own) = &mut r.own else {
                    return None;
                };
                let (range, last) = own.next_chunk(chunk_len)?;
                let points = own.entries.get(range.clone()).unwrap_or(&[]);
                let plain = msg::points_plaintext(last, points.iter().map(|e| &e.point));
                self.progress.own_sent = range.end as u64;
                let m = r.link.seal(config, role, Kind::Encodings, &plain);
                if last {
                    let state = std::mem::replace(&mut self.state, State::Failed);
                    if let State::Running(r) = state {
                        self.state = passive_await_result(r);
                    }
                }
                Some(m)
            }
            State::Done(_, sender) => {
                let s = sender.as_mut()?;
                let end = s.next.saturating_add(chunk_len).min(s.entries.len());
                let last = end == s.entries.len();
                let entries = s.entries.get(s.next..end).unwrap_or(&[]);
                let plain = msg::result_plaintext(
                    last,
                    s.total,
                    &s.hash,
                    entries.iter().map(|(p, pos)| (*pos, p)),
                );
                s.next = end;
                let m = s.link.seal(config, role, Kind::Result, &plain);
                if last {
                    *sender = None;
                }
                Some(m)
            }
            _ => None,
        }
    }

    fn on_hello(&mut self, h: HelloSent, peer: &Hello) -> Result<State, PsiError> {
        if peer.signature.len() != crate::msg::SIGNATURE_LEN
            || keys::verify_signature(&self.peer_key, &peer.signed_bytes(), &peer.signature)
                .is_err()
        {
            return Err(PsiError::BadHelloSignature);
        }
        if peer.config_digest != self.config.digest() {
            return Err(PsiError::ConfigMismatch);
        }
        let shared = Zeroizing::new(h.ephemeral.agree(&peer.ephemeral_pk)?);
        let mine = (h.ephemeral.public_key(), h.nonce);
        let theirs = (peer.ephemeral_pk, peer.nonce);
        let ((a_pk, a_nonce), (p_pk, p_nonce)) = match self.role {
            Role::Active => (mine, theirs),
            Role::Passive => (theirs, mine),
        };
        let transcript = self.config.ctx.transcript();
        let derive = |label: &[u8]| {
            Zeroizing::new(keys::hkdf32(
                &shared[..],
                &transcript,
                &[label, &peer.config_digest, &a_pk, &p_pk, &a_nonce, &p_nonce],
            ))
        };
        let link = Link {
            sealing: Sealing::new(transcript.clone(), derive(b"channel")),
            salt: derive(b"id-salt"),
            blinder: h.blinder,
        };
        Ok(match self.role {
            Role::Active => State::Collecting(Collecting {
                link,
                entries: Vec::new(),
                pushed: 0,
            }),
            Role::Passive => State::Running(Running {
                link,
                own: PassiveOwn::Collecting(Vec::new(), 0),
                received: 0,
                peer_done: false,
            }),
        })
    }

    fn on_sealed(&mut self, state: State, m: &Sealed) -> Result<State, PsiError> {
        let chunk_len = self.config.chunk_len;
        match state {
            State::Collecting(mut c) => {
                c.link.open(m)?;
                Err(PsiError::OutOfOrder {
                    kind: m.kind,
                    state: "collecting own ids",
                })
            }
            State::Exchanging(mut x) => {
                let plain = x.link.open(m)?;
                if m.kind != Kind::Doubled {
                    return Err(PsiError::OutOfOrder {
                        kind: m.kind,
                        state: "awaiting own encodings doubled",
                    });
                }
                let chunk = msg::parse_points(Kind::Doubled, &plain, chunk_len)?;
                let n = x.own.entries.len();
                let expected = chunk_len.min(n - x.doubled);
                if x.doubled + expected > x.own.next || (n == 0 && !x.own.done) {
                    // a chunk we have not sent yet
                    return Err(PsiError::OutOfOrder {
                        kind: Kind::Doubled,
                        state: "awaiting own encodings doubled",
                    });
                }
                if chunk.len() != expected {
                    return Err(PsiError::CountMismatch {
                        kind: Kind::Doubled,
                        expected: expected as u64,
                        got: chunk.len() as u64,
                    });
                }
                let end = x.doubled + expected;
                if chunk.last != (end == n) {
                    return Err(PsiError::Malformed {
                        kind: Kind::Doubled,
                        reason: "the last flag does not match the chunk sent",
                    });
                }
                // Not decompressed: they are only compared with canonical encodings, so a
                // non-point never matches (as a random point would not), and checking would
                // cost a square root per id.
                let slots = x.own.entries.get_mut(x.doubled..end).unwrap_or(&mut []);
                for (e, p) in slots.iter_mut().zip(chunk.iter()) {
                    e.point.copy_from_slice(p);
                }
                x.doubled = end;
                self.progress.doubled_back = end as u64;
                if !chunk.last {
                    return Ok(State::Exchanging(x));
                }
                let mut table = x.own.entries;
                table.par_sort_unstable_by(|a, b| a.point.cmp(&b.point));
                let index = PrefixIndex::new(&table);
                Ok(State::Matching(Matching {
                    link: x.link,
                    table,
                    index,
                    duplicates_dropped: x.own.duplicates_dropped,
                    matches: Vec::new(),
                    received: 0,
                }))
            }
            State::Matching(mut mt) => {
                let plain = mt.link.open(m)?;
                if m.kind != Kind::Encodings {
                    return Err(PsiError::OutOfOrder {
                        kind: m.kind,
                        state: "matching the passive party's encodings",
                    });
                }
                let chunk = msg::parse_points(Kind::Encodings, &plain, chunk_len)?;
                let base = mt.received;
                if base + chunk.len() as u64 > MAX_SET_SIZE {
                    return Err(PsiError::PeerTooLarge { max: MAX_SET_SIZE });
                }
                let doubled =
                    mt.link
                        .blinder
                        .reblind_all(chunk.points)
                        .map_err(|i| PsiError::BadPoint {
                            kind: Kind::Encodings,
                            index: base + i as u64,
                        })?;
                let (table, index) = (&mt.table, &mt.index);
                let found: Vec<Match> = doubled
                    .par_iter()
                    .enumerate()
                    .filter_map(|(i, d)| {
                        let e = index.find(table, d)?;
                        Some((*d, e.row, (base + i as u64) as u32))
                    })
                    .collect();
                mt.matches.extend(found);
                mt.received = base + chunk.len() as u64;
                self.progress.peer_received = mt.received;
                if !chunk.last {
                    return Ok(State::Matching(mt));
                }
                self.progress.peer_set_size = Some(mt.received);
                self.active_finish(mt)
            }
            State::Running(mut r) => {
                let plain = r.link.open(m)?;
                if m.kind != Kind::Encodings || r.peer_done {
                    return Err(PsiError::OutOfOrder {
                        kind: m.kind,
                        state: "doubling the active party's encodings",
                    });
                }
                let chunk = msg::parse_points(Kind::Encodings, &plain, chunk_len)?;
                let base = r.received;
                if base + chunk.len() as u64 > MAX_SET_SIZE {
                    return Err(PsiError::PeerTooLarge { max: MAX_SET_SIZE });
                }
                let out =
                    r.link
                        .blinder
                        .reblind_all(chunk.points)
                        .map_err(|i| PsiError::BadPoint {
                            kind: Kind::Encodings,
                            index: base + i as u64,
                        })?;
                r.received = base + out.len() as u64;
                r.peer_done = chunk.last;
                self.progress.peer_received = r.received;
                if chunk.last {
                    self.progress.peer_set_size = Some(r.received);
                }
                let plain = msg::points_plaintext(chunk.last, out.iter());
                let reply = r.link.seal(&self.config, self.role, Kind::Doubled, &plain);
                self.outbox.push_back(reply);
                Ok(State::Running(r))
            }
            State::AwaitingResult(mut w) => {
                let plain = w.link.open(m)?;
                if m.kind != Kind::Result {
                    return Err(PsiError::OutOfOrder {
                        kind: m.kind,
                        state: "awaiting the result",
                    });
                }
                let chunk = msg::parse_result(&plain, chunk_len)?;
                let bad = |reason| Err(PsiError::BadResult { reason });
                let own_size = w.rows_by_position.len() as u64;
                if chunk.total > own_size.min(w.peer_set_size) {
                    return bad("the size exceeds a set size");
                }
                match self.config.delivery {
                    Delivery::ActiveOnly => {
                        if chunk.len() != 0 || !chunk.last {
                            return bad("entries although only the active party learns them");
                        }
                        return Ok(self.passive_done(*w, chunk.total, chunk.hash, None));
                    }
                    Delivery::Both => {}
                }
                for (pos, point) in chunk.iter() {
                    let Some(&row) = w.rows_by_position.get(pos as usize) else {
                        return bad("a position outside the passive party's stream");
                    };
                    let (word, bit) = (pos as usize / 64, pos % 64);
                    match w.seen.get_mut(word) {
                        Some(wd) if *wd & (1 << bit) == 0 => *wd |= 1 << bit,
                        _ => return bad("a position named twice"),
                    }
                    let point: [u8; POINT_LEN] = super::to32(point);
                    if w.last_point.is_some_and(|last| last >= point) {
                        return bad("not in the canonical (ascending) order");
                    }
                    w.last_point = Some(point);
                    w.hasher.update(&point);
                    w.rows.push(row);
                }
                w.received += chunk.len() as u64;
                if w.received > chunk.total {
                    return bad("more entries than the size");
                }
                if !chunk.last {
                    return Ok(State::AwaitingResult(w));
                }
                if w.received != chunk.total {
                    return bad("fewer entries than the size");
                }
                let mut w = *w;
                let hasher = std::mem::replace(&mut w.hasher, IntersectionHasher::new(&[]));
                if hasher.finish() != chunk.hash {
                    return bad("the hash does not match the entries");
                }
                let rows = std::mem::take(&mut w.rows);
                Ok(self.passive_done(w, chunk.total, chunk.hash, Some(rows)))
            }
            State::Hello(_) | State::Done(..) | State::Failed => Err(PsiError::Failed),
        }
    }

    fn active_finish(&mut self, mt: Matching) -> Result<State, PsiError> {
        let Matching {
            link,
            table,
            index: _,
            duplicates_dropped,
            mut matches,
            received,
        } = mt;
        let own_set_size = table.len() as u64;
        drop(table);
        matches.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = matches
            .windows(2)
            .find(|w| w.first().map(|a| a.0) == w.get(1).map(|b| b.0))
        {
            let (first, second) = match w {
                [a, b] => (a.2.min(b.2), a.2.max(b.2)),
                _ => (0, 0),
            };
            return Err(PsiError::PeerDuplicate {
                first: u64::from(first),
                second: u64::from(second),
            });
        }
        let mut hasher = IntersectionHasher::new(&link.sealing.transcript);
        for (p, _, _) in &matches {
            hasher.update(p);
        }
        let hash = hasher.finish();
        let total = matches.len() as u64;
        let rows = matches.iter().map(|m| m.1).collect();
        let entries = match self.config.delivery {
            Delivery::Both => matches.into_iter().map(|(p, _, pos)| (p, pos)).collect(),
            Delivery::ActiveOnly => Vec::new(),
        };
        let output = PsiOutput {
            role: self.role,
            own_set_size,
            duplicates_dropped,
            peer_set_size: received,
            intersection_size: total,
            intersection_hash: hash,
            rows: Some(rows),
        };
        Ok(State::Done(
            Box::new(output),
            Some(ResultSender {
                link,
                entries,
                total,
                hash,
                next: 0,
            }),
        ))
    }

    fn passive_done(
        &self,
        w: AwaitingResult,
        total: u64,
        hash: [u8; 32],
        rows: Option<Vec<u32>>,
    ) -> State {
        State::Done(
            Box::new(PsiOutput {
                role: self.role,
                own_set_size: w.rows_by_position.len() as u64,
                duplicates_dropped: w.duplicates_dropped,
                peer_set_size: w.peer_set_size,
                intersection_size: total,
                intersection_hash: hash,
                rows,
            }),
            None,
        )
    }
}

/// The passive party has sent its last chunk: keep only the row of each position.
fn passive_await_result(r: Running) -> State {
    let PassiveOwn::Ready(own) = r.own else {
        return State::Failed;
    };
    let rows_by_position: Vec<u32> = own.entries.iter().map(|e| e.row).collect();
    let words = rows_by_position.len().div_ceil(64);
    let hasher = IntersectionHasher::new(&r.link.sealing.transcript);
    State::AwaitingResult(Box::new(AwaitingResult {
        link: r.link,
        rows_by_position,
        duplicates_dropped: own.duplicates_dropped,
        peer_set_size: r.received,
        seen: vec![0; words],
        rows: Vec::new(),
        received: 0,
        last_point: None,
        hasher,
    }))
}

/// Applies the duplicates rule and shuffles. Equal normalised ids have equal encodings
/// (and distinct ones distinct encodings, but for a negligible chance), so duplicates are
/// found by sorting the encodings.
fn prepare(
    mut entries: Vec<Entry>,
    rule: Duplicates,
    rng: &mut impl rand::CryptoRng,
) -> Result<Outgoing, PsiError> {
    entries.par_sort_unstable_by(|a, b| a.point.cmp(&b.point).then(a.row.cmp(&b.row)));
    let before = entries.len();
    match rule {
        Duplicates::Refuse => {
            // The lowest row whose id occurred at an earlier row, and that earlier row.
            let mut first: Option<(u32, u32)> = None;
            let mut i = 0;
            while let Some(e) = entries.get(i) {
                let mut j = i + 1;
                while entries.get(j).is_some_and(|f| f.point == e.point) {
                    j += 1;
                }
                if let Some(second) = entries.get(i + 1).filter(|_| j > i + 1) {
                    if first.is_none_or(|(_, d)| second.row < d) {
                        first = Some((e.row, second.row));
                    }
                }
                i = j;
            }
            if let Some((first_row, duplicate_row)) = first {
                return Err(PsiError::DuplicateId {
                    first_row: u64::from(first_row),
                    duplicate_row: u64::from(duplicate_row),
                });
            }
        }
        Duplicates::KeepFirst => entries.dedup_by(|later, kept| later.point == kept.point),
    }
    let duplicates_dropped = (before - entries.len()) as u64;
    entries.shuffle(rng);
    Ok(Outgoing {
        entries,
        next: 0,
        done: false,
        duplicates_dropped,
    })
}

#[cfg(test)]
impl PsiParty {
    fn link_mut(&mut self) -> Option<&mut Link> {
        match &mut self.state {
            State::Collecting(c) => Some(&mut c.link),
            State::Exchanging(x) => Some(&mut x.link),
            State::Matching(m) => Some(&mut m.link),
            State::Running(r) => Some(&mut r.link),
            State::AwaitingResult(w) => Some(&mut w.link),
            State::Done(_, Some(s)) => Some(&mut s.link),
            _ => None,
        }
    }

    pub(super) fn link_for_tests(&mut self) -> Option<&mut Link> {
        self.link_mut()
    }

    /// Seals `plaintext` as this party's next message of `kind` (what a malicious peer with
    /// the channel key could send).
    pub(super) fn forge(&mut self, kind: Kind, plaintext: &[u8]) -> Option<PsiMsg> {
        let (config, role) = (self.config.clone(), self.role);
        self.link_mut()
            .map(|l| l.seal(&config, role, kind, plaintext))
    }

    /// The id salt, once the handshake is done.
    pub(super) fn salt(&mut self) -> Option<[u8; 32]> {
        self.link_mut().map(|l| *l.salt)
    }

    /// The own encodings still held in sending order (after `finish_ids`).
    pub(super) fn own_points(&self) -> Option<Vec<[u8; POINT_LEN]>> {
        let own = match &self.state {
            State::Exchanging(x) => &x.own,
            State::Running(Running {
                own: PassiveOwn::Ready(o),
                ..
            }) => o,
            _ => return None,
        };
        Some(own.entries.iter().map(|e| e.point).collect())
    }

    /// The rows of the own encodings in sending order (after `finish_ids`).
    pub(super) fn own_rows(&self) -> Option<Vec<u32>> {
        match &self.state {
            State::Exchanging(x) => Some(x.own.entries.iter().map(|e| e.row).collect()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod prefix_index_tests {
    use super::{Entry, PrefixIndex, POINT_LEN};
    use proptest::prelude::*;

    fn table(points: Vec<[u8; POINT_LEN]>) -> Vec<Entry> {
        let mut t: Vec<Entry> = points
            .into_iter()
            .enumerate()
            .map(|(i, point)| Entry {
                point,
                row: i as u32,
            })
            .collect();
        t.sort_by_key(|a| a.point);
        t
    }

    proptest! {
        /// The directory finds exactly what a binary search over the whole table finds, for
        /// points in the table and others, whatever the bytes (the peer's doubled "points"
        /// are compared, never decoded), with shared prefixes and the empty table.
        #[test]
        fn the_prefix_index_finds_what_binary_search_finds(
            points in proptest::collection::vec(any::<[u8; POINT_LEN]>(), 0..300),
            probes in proptest::collection::vec(any::<[u8; POINT_LEN]>(), 0..50),
            prefix in any::<[u8; 4]>(),
            share in 0usize..300,
        ) {
            // Some points share their first four bytes (one slot holds a long run).
            let points: Vec<[u8; POINT_LEN]> = points
                .into_iter()
                .enumerate()
                .map(|(i, mut p)| {
                    if i < share {
                        p[..4].copy_from_slice(&prefix);
                    }
                    p
                })
                .collect();
            let t = table(points.clone());
            let index = PrefixIndex::new(&t);
            prop_assert_eq!(index.starts.last().copied(), Some(t.len() as u32));
            for p in points.iter().chain(probes.iter()) {
                let want = t.binary_search_by(|e| e.point.cmp(p)).ok().map(|k| t[k].row);
                let got = index.find(&t, p).map(|e| e.row);
                prop_assert_eq!(got.is_some(), want.is_some());
                if let Some(g) = got {
                    prop_assert_eq!(&points[g as usize], p);
                }
            }
        }
    }
}
