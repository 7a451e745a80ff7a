//! An in-memory federation for the round tests: one real [`Server`], real [`Client`]s, a
//! fake clock (one `Instant::now()` as base, then offsets), a seeded RNG, scripted dropouts
//! and hooks to tamper with messages in flight.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsilo_crypto::client::Client;
use fedsilo_crypto::encoding::{Modulus, RingVec};
use fedsilo_crypto::error::{ClientError, ProtocolError, RoundError};
use fedsilo_crypto::keys::IdentityKey;
use fedsilo_crypto::msg::{
    ClientMsg, ParticipantId, Phase, Roster, RoundConfig, RoundContext, ServerMsg,
};
use fedsilo_crypto::server::{RoundOutput, Server, ServerEvent};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub type ServerHook = Box<dyn FnMut(ParticipantId, &mut ServerMsg)>;
pub type ClientHook = Box<dyn FnMut(ParticipantId, &mut ClientMsg)>;

/// Participant ids with gaps, so nothing silently relies on ids being 0..n.
pub fn ids(n: usize) -> Vec<ParticipantId> {
    (0..n as u32).map(|i| 3 * i + 7).collect()
}

pub fn identity(id: ParticipantId) -> IdentityKey {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&id.to_le_bytes());
    seed[31] = 0xA5;
    IdentityKey::from_seed(seed).expect("any 32-byte seed is an Ed25519 seed")
}

pub fn random_vec(rng: &mut ChaCha20Rng, modulus: Modulus, len: usize) -> RingVec {
    match modulus {
        Modulus::Pow32 => RingVec::U32((0..len).map(|_| rng.next_u32()).collect()),
        Modulus::Pow64 => RingVec::U64((0..len).map(|_| rng.next_u64()).collect()),
    }
}

/// The plain wrapping sum of `inputs` over `who`.
pub fn plain_sum<'a>(
    modulus: Modulus,
    len: usize,
    inputs: impl IntoIterator<Item = &'a RingVec>,
) -> RingVec {
    let mut s = RingVec::zeros(modulus, len);
    for x in inputs {
        s.add_assign(x).expect("same shape");
    }
    s
}

pub struct Federation {
    pub config: RoundConfig,
    pub roster: Arc<Roster>,
    pub identities: BTreeMap<ParticipantId, Arc<IdentityKey>>,
    /// A copy of every client's input (the clients own the originals).
    pub inputs: BTreeMap<ParticipantId, RingVec>,
    pub server: Server,
    pub clients: BTreeMap<ParticipantId, Client>,
    pub rng: ChaCha20Rng,
    pub base: Instant,
    pub now: Instant,
    /// Client `id` goes offline instead of sending its message for this phase.
    pub drop_at: BTreeMap<ParticipantId, Phase>,
    pub offline: BTreeSet<ParticipantId>,
    pub events: Vec<ServerEvent>,
    pub client_errors: BTreeMap<ParticipantId, ClientError>,
    /// Every server refusal, in order.
    pub refusals: Vec<(ParticipantId, ProtocolError)>,
    /// Every client message delivered to the server.
    pub delivered: Vec<(ParticipantId, ClientMsg)>,
    /// Whether to keep a copy of each delivered message (off for big vectors).
    pub log_messages: bool,
    pub tamper_server: Option<ServerHook>,
    /// Changes a client's message before it is sent. The hook stands for the sender itself
    /// sending something else, so the harness signs the result with the sender's identity
    /// key (unless `sign_tampered` is off: then it is an alteration in transit).
    pub tamper_client: Option<ClientHook>,
    pub sign_tampered: bool,
    to_server: VecDeque<(ParticipantId, ClientMsg)>,
}

impl Federation {
    /// `n` participants, degree `k`, threshold `t`, random inputs of `len` elements.
    pub fn new(n: usize, k: usize, t: usize, len: usize, modulus: Modulus, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let participants = ids(n);
        let mut graph_seed = [0u8; 32];
        rng.fill_bytes(&mut graph_seed);
        let config = RoundConfig {
            ctx: RoundContext {
                job_id: "credit-risk".into(),
                round: 3,
            },
            participants: participants.clone(),
            neighbours: k,
            threshold: t,
            vector_len: len,
            modulus,
            graph_seed,
        };
        let inputs = participants
            .iter()
            .map(|&id| (id, random_vec(&mut rng, modulus, len)))
            .collect();
        Self::with_inputs(config, inputs, rng)
    }

    pub fn with_inputs(
        config: RoundConfig,
        inputs: BTreeMap<ParticipantId, RingVec>,
        rng: ChaCha20Rng,
    ) -> Self {
        let identities: BTreeMap<_, _> = config
            .participants
            .iter()
            .map(|&id| (id, Arc::new(identity(id))))
            .collect();
        let mut roster = Roster::new();
        for (&id, key) in &identities {
            roster.insert(id, key.public_key());
        }
        let roster = Arc::new(roster);
        let base = Instant::now();
        let server =
            Server::new(base, config.clone(), roster.clone(), TIMEOUT).expect("valid config");
        Federation {
            config,
            roster,
            identities,
            inputs,
            server,
            clients: BTreeMap::new(),
            rng,
            base,
            now: base,
            drop_at: BTreeMap::new(),
            offline: BTreeSet::new(),
            events: Vec::new(),
            client_errors: BTreeMap::new(),
            refusals: Vec::new(),
            delivered: Vec::new(),
            log_messages: true,
            tamper_server: None,
            tamper_client: None,
            sign_tampered: true,
            to_server: VecDeque::new(),
        }
    }

    /// Creates every client (queuing its AdvertiseKeys).
    pub fn start(&mut self) {
        for &id in &self.config.participants {
            let client = Client::new(
                self.config.clone(),
                id,
                self.identities[&id].clone(),
                self.roster.clone(),
                self.inputs[&id].clone(),
                &mut self.rng,
            )
            .expect("client starts");
            self.clients.insert(id, client);
        }
        self.collect_client_output();
    }

    fn collect_client_output(&mut self) {
        for (&id, client) in self.clients.iter_mut() {
            while let Some(mut m) = client.poll_transmit() {
                if self.offline.contains(&id) {
                    continue;
                }
                if self.drop_at.get(&id).is_some_and(|p| m.phase() >= *p) {
                    self.offline.insert(id);
                    continue;
                }
                if let Some(hook) = self.tamper_client.as_mut() {
                    hook(id, &mut m);
                    if self.sign_tampered {
                        m.sign(&self.identities[&id]);
                    }
                }
                self.to_server.push_back((id, m));
            }
        }
    }

    fn drain_server_events(&mut self) {
        while let Some(ev) = self.server.poll_event() {
            if let ServerEvent::Refused { from, error } = &ev {
                self.refusals.push((*from, error.clone()));
            }
            self.events.push(ev);
        }
    }

    /// Delivers one client message to the server now.
    pub fn deliver_to_server(
        &mut self,
        from: ParticipantId,
        msg: ClientMsg,
    ) -> Result<(), ProtocolError> {
        if self.log_messages {
            self.delivered.push((from, msg.clone()));
        }
        let r = self.server.handle_message(self.now, from, msg);
        self.drain_server_events();
        r
    }

    /// Delivers one request to a client, recording a refusal.
    pub fn deliver_to_client(&mut self, to: ParticipantId, msg: ServerMsg) {
        if self.offline.contains(&to) {
            return;
        }
        let Some(client) = self.clients.get_mut(&to) else {
            return;
        };
        if let Err(e) = client.handle_message(msg, &mut self.rng) {
            self.client_errors.insert(to, e);
        }
    }

    /// Moves every pending message once in each direction. Returns whether anything moved.
    pub fn pump(&mut self) -> bool {
        self.collect_client_output();
        let mut moved = false;
        while let Some((from, m)) = self.to_server.pop_front() {
            moved = true;
            let _ = self.deliver_to_server(from, m);
        }
        let mut requests = Vec::new();
        while let Some(r) = self.server.poll_transmit() {
            requests.push(r);
        }
        for (to, mut m) in requests {
            moved = true;
            if let Some(hook) = self.tamper_server.as_mut() {
                hook(to, &mut m);
            }
            self.deliver_to_client(to, m);
        }
        self.collect_client_output();
        moved
    }

    /// Runs until the server finishes: pumps messages, and when nothing moves advances the
    /// fake clock to the server's deadline.
    pub fn run(&mut self) -> Result<RoundOutput, RoundError> {
        loop {
            while self.pump() {}
            if self.server.is_finished() {
                break;
            }
            let deadline = self
                .server
                .poll_timeout()
                .expect("running server has a deadline");
            self.now = self.now.max(deadline);
            self.server.handle_timeout(self.now);
            self.drain_server_events();
        }
        self.result().expect("a finished server reports its result")
    }

    /// Runs until the server collects `phase`, with that phase's requests still queued
    /// in the server (not yet delivered).
    pub fn run_until(&mut self, phase: Phase) {
        loop {
            while let Some((from, m)) = self.to_server.pop_front() {
                let _ = self.deliver_to_server(from, m);
            }
            if self.server.phase() == Some(phase) {
                return;
            }
            assert!(!self.server.is_finished(), "server finished before {phase}");
            if !self.pump() {
                let deadline = self.server.poll_timeout().expect("deadline");
                self.now = self.now.max(deadline);
                self.server.handle_timeout(self.now);
                self.drain_server_events();
            }
        }
    }

    /// Brings the round to `phase` and returns the clients' answers to its requests, not
    /// yet delivered to the server.
    pub fn messages_at(&mut self, phase: Phase) -> Vec<(ParticipantId, ClientMsg)> {
        if phase == Phase::AdvertiseKeys {
            return self.take_client_messages();
        }
        self.run_until(phase);
        for (to, m) in self.take_requests() {
            self.deliver_to_client(to, m);
        }
        self.take_client_messages()
    }

    /// The server's queued requests.
    pub fn take_requests(&mut self) -> Vec<(ParticipantId, ServerMsg)> {
        let mut v = Vec::new();
        while let Some(r) = self.server.poll_transmit() {
            v.push(r);
        }
        v
    }

    /// The client messages produced so far and not yet delivered.
    pub fn take_client_messages(&mut self) -> Vec<(ParticipantId, ClientMsg)> {
        self.collect_client_output();
        self.to_server.drain(..).collect()
    }

    pub fn result(&self) -> Option<Result<RoundOutput, RoundError>> {
        self.events.iter().find_map(|e| match e {
            ServerEvent::Finished(out) => Some(Ok(out.clone())),
            ServerEvent::Failed(err) => Some(Err(err.clone())),
            _ => None,
        })
    }

    pub fn expected_sum(&self, survivors: &[ParticipantId]) -> RingVec {
        plain_sum(
            self.config.modulus,
            self.config.vector_len,
            survivors.iter().map(|id| &self.inputs[id]),
        )
    }

    /// Who should be in the sum: everyone not dropped before sending a masked input.
    pub fn expected_survivors(&self) -> Vec<ParticipantId> {
        self.config
            .participants
            .iter()
            .copied()
            .filter(|id| self.drop_at.get(id).is_none_or(|p| *p > Phase::MaskedInput))
            .collect()
    }

    /// Asserts an exact, complete result: survivors as scripted and the plain sum.
    pub fn assert_exact(&self, out: &RoundOutput) {
        assert_eq!(out.survivors, self.expected_survivors(), "survivor set");
        assert!(
            out.sum == self.expected_sum(&out.survivors),
            "the unmasked sum differs from the plain sum of the survivors' inputs"
        );
    }
}
