//! The engine relaying a PSI job between two real `PsiParty`s (sans-IO, in memory).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsilo_crypto::keys::IdentityKey;
use fedsilo_crypto::msg::Roster;
use fedsilo_crypto::psi::{PsiConfig, PsiContext, PsiParty};
use fedsilo_task::job::{JobState as WireJobState, ToCoordinator, ToParticipant};
use fedsilo_task::psi::{PsiJobSpec, PsiReport};
use rand::SeedableRng;

use super::{Coordinator, EngineError, Event, JobState};

struct Party {
    name: String,
    key: Arc<IdentityKey>,
    party: Option<PsiParty>,
    ids: Vec<String>,
    ended: Option<WireJobState>,
    rows: Option<Vec<u32>>,
    /// Sessions opened here.
    sessions: Vec<u64>,
}

struct Fed {
    coord: Coordinator,
    parties: Vec<Party>,
    now: Instant,
    rng: rand_chacha::ChaCha20Rng,
    events: Vec<Event>,
}

fn spec(job: &str) -> PsiJobSpec {
    PsiJobSpec {
        kind: "psi".into(),
        job_id: job.into(),
        dataset: "customers".into(),
        active: "bank".into(),
        passive: vec!["insurer".into()],
        id_column: String::new(),
        id_format: Default::default(),
        delivery: Default::default(),
        duplicates: Default::default(),
        chunk_len: 7,
    }
}

impl Fed {
    fn new(bank_ids: &[&str], insurer_ids: &[&str]) -> Fed {
        Fed::with(&[("bank", bank_ids), ("insurer", insurer_ids)])
    }

    /// Parties named and holding the ids given, participant ids 0, 1, … in that order.
    fn with(parties_ids: &[(&str, &[&str])]) -> Fed {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([9; 32]);
        let mut roster = Roster::new();
        let mut names = BTreeMap::new();
        let mut parties = Vec::new();
        for (i, &(name, ids)) in parties_ids.iter().enumerate() {
            let key = Arc::new(IdentityKey::generate(&mut rng));
            roster.insert(i as u32, key.public_key());
            names.insert(i as u32, name.to_string());
            parties.push(Party {
                name: name.to_string(),
                key,
                party: None,
                ids: ids.iter().map(|s| s.to_string()).collect(),
                ended: None,
                rows: None,
                sessions: Vec::new(),
            });
        }
        Fed {
            coord: Coordinator::new(roster, names, [3; 32]),
            parties,
            now: Instant::now(),
            rng,
            events: Vec::new(),
        }
    }

    /// The bank holding ids `C{bank}` and the insurer `C{insurer}`.
    fn of_ranges(bank: std::ops::Range<u32>, insurer: std::ops::Range<u32>) -> Fed {
        let (b, i) = (ids("C", bank), ids("C", insurer));
        let b: Vec<&str> = b.iter().map(String::as_str).collect();
        let i: Vec<&str> = i.iter().map(String::as_str).collect();
        Fed::new(&b, &i)
    }

    /// Launches `spec(job)` and joins both parties (nothing delivered yet).
    fn start_pair(&mut self, job: &str) -> String {
        let job = self.coord.launch_psi(self.now, spec(job)).unwrap();
        self.coord.handle_join(self.now, 0, &[]).unwrap();
        self.coord.handle_join(self.now, 1, &[]).unwrap();
        job
    }

    /// Delivers every queued message (and the parties' answers) until nothing moves.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            while let Some(ev) = self.coord.poll_event() {
                self.events.push(ev);
            }
            while let Some((to, m)) = self.coord.poll_transmit() {
                moved = true;
                self.deliver(to, m);
            }
            for i in 0..self.parties.len() {
                while let Some(out) = self.next_out(i) {
                    moved = true;
                    let r = self.coord.handle_message(self.now, i as u32, out);
                    assert!(
                        r.is_ok() || matches!(r, Err(EngineError::NoSuchRound { .. })),
                        "{r:?}"
                    );
                }
            }
            if !moved {
                while let Some(ev) = self.coord.poll_event() {
                    self.events.push(ev);
                }
                return;
            }
        }
    }

    fn deliver(&mut self, to: u32, m: ToParticipant) {
        let keys: BTreeMap<String, [u8; 32]> = self
            .parties
            .iter()
            .map(|p| (p.name.clone(), p.key.public_key()))
            .collect();
        let p = &mut self.parties[to as usize];
        match m {
            ToParticipant::PsiStart(s) => {
                let peer = keys[&s.peer];
                let mut config = PsiConfig::new(s.job_id.clone(), s.session);
                config.ctx = PsiContext {
                    job_id: s.job_id.clone(),
                    session: s.session,
                };
                config.chunk_len = s.chunk_len as usize;
                config.delivery = s.delivery;
                config.format = s.id_format;
                p.sessions.push(s.session);
                p.party = Some(
                    PsiParty::new(config, s.role, Arc::clone(&p.key), peer, &mut self.rng).unwrap(),
                );
            }
            ToParticipant::Psi(m) => {
                let party = p.party.as_mut().expect("a session is open");
                party.handle_message(m).unwrap();
                if party.accepts_ids() {
                    party.push_ids(&p.ids).unwrap();
                    party.finish_ids(&mut self.rng).unwrap();
                }
            }
            ToParticipant::JobEnd { state, .. } => p.ended = Some(state),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn next_out(&mut self, i: usize) -> Option<ToCoordinator> {
        let p = &mut self.parties[i];
        let party = p.party.as_mut()?;
        if let Some(m) = party.poll_transmit() {
            return Some(ToCoordinator::Psi(m));
        }
        if party.is_done() {
            let out = party.output().cloned()?;
            let job = party.config().ctx.clone();
            p.party = None;
            p.rows = out.rows.clone();
            return Some(ToCoordinator::PsiDone(PsiReport {
                job_id: job.job_id,
                session: job.session,
                own_set_size: out.own_set_size,
                duplicates_dropped: out.duplicates_dropped,
                peer_set_size: out.peer_set_size,
                intersection_size: out.intersection_size,
                intersection_hash: out.intersection_hash,
            }));
        }
        None
    }
}

fn ids(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn relays_a_psi_job_and_records_sizes_only() {
    let mut fed = Fed::of_ranges(0..40, 25..60);
    let (bank, insurer) = (fed.parties[0].ids.clone(), fed.parties[1].ids.clone());
    let job = fed.coord.launch_psi(fed.now, spec("j")).unwrap();
    fed.run();
    assert_eq!(fed.coord.job_status(&job).unwrap().state, JobState::Waiting);
    assert!(fed
        .coord
        .job_status(&job)
        .unwrap()
        .detail
        .contains("waiting for bank, insurer"));
    fed.coord.handle_join(fed.now, 0, &[]).unwrap();
    fed.coord.handle_join(fed.now, 1, &[]).unwrap();
    fed.run();
    let status = fed.coord.job_status(&job).unwrap();
    assert_eq!(status.state, JobState::Finished, "{status:?}");
    let rec = fed.coord.psi_record(&job).unwrap();
    assert_eq!(rec.pairs.len(), 1);
    assert_eq!(rec.pairs[0].intersection_size, 15);
    assert_eq!(rec.pairs[0].active_set_size, 40);
    assert_eq!(rec.pairs[0].passive_set_size, 35);
    // Aligned rows: bank row r holds C{r}, insurer row r holds C{r + 25}.
    let rb = fed.parties[0].rows.clone().unwrap();
    let ri = fed.parties[1].rows.clone().unwrap();
    for (x, y) in rb.iter().zip(&ri) {
        assert_eq!(bank[*x as usize], insurer[*y as usize]);
    }
    let psi: Vec<_> = fed
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Psi(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(psi.len(), 1);
    assert!(psi[0].result.is_ok());
    assert!(psi[0].messages[0] > 1 && psi[0].messages[1] > 1);
    assert!(fed
        .parties
        .iter()
        .all(|p| p.ended == Some(WireJobState::Finished)));
    // The checkpoint restores as a finished PSI job.
    let last = fed
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Checkpoint { state, .. } => Some(state.clone()),
            _ => None,
        })
        .unwrap();
    let mut again = Coordinator::new(Roster::new(), BTreeMap::new(), [4; 32]);
    again.restore(fed.now, &job, &last).unwrap();
    assert_eq!(again.job_status(&job).unwrap().state, JobState::Finished);
}

#[test]
fn a_restored_psi_job_runs_a_fresh_session() {
    let mut fed = Fed::of_ranges(0..30, 10..50);
    let job = fed.start_pair("j");
    // The coordinator "dies" after the session's start is checkpointed and sent.
    let mut checkpoint = None;
    while let Some(ev) = fed.coord.poll_event() {
        if let Event::Checkpoint { state, .. } = ev {
            checkpoint = Some(state);
        }
    }
    while let Some((to, m)) = fed.coord.poll_transmit() {
        fed.deliver(to, m);
    }
    let checkpoint = checkpoint.unwrap();
    let (roster, names) = {
        let mut r = Roster::new();
        let mut n = BTreeMap::new();
        for (k, p) in fed.parties.iter().enumerate() {
            r.insert(k as u32, p.key.public_key());
            n.insert(
                k as u32,
                if k == 0 { "bank" } else { "insurer" }.to_string(),
            );
        }
        (r, n)
    };
    fed.coord = Coordinator::new(roster, names, [5; 32]);
    fed.now += Duration::from_secs(1);
    fed.coord.restore(fed.now, &job, &checkpoint).unwrap();
    assert_eq!(fed.coord.job_status(&job).unwrap().state, JobState::Waiting);
    // A message of the dead session is refused; the parties rejoin and a new one runs.
    let stale = fed.next_out(0).unwrap();
    assert!(matches!(
        fed.coord.handle_message(fed.now, 0, stale),
        Err(EngineError::NoSuchRound { round: 0, .. })
    ));
    fed.coord.handle_join(fed.now, 0, &[]).unwrap();
    fed.coord.handle_join(fed.now, 1, &[]).unwrap();
    fed.run();
    assert_eq!(
        fed.coord.job_status(&job).unwrap().state,
        JobState::Finished
    );
    assert_eq!(fed.parties[0].sessions, vec![0, 1]);
    assert_eq!(fed.coord.psi_record(&job).unwrap().pairs[0].session, 1);
    assert_eq!(
        fed.coord.psi_record(&job).unwrap().pairs[0].intersection_size,
        20
    );
}

#[test]
fn a_party_failure_or_a_wrong_role_is_refused_by_name() {
    let mut fed = Fed::new(&["a", "b"], &["b", "c"]);
    let job = fed.start_pair("j");
    while fed.coord.poll_event().is_some() {}
    while let Some((to, m)) = fed.coord.poll_transmit() {
        fed.deliver(to, m);
    }
    // The insurer relays the bank's Hello as its own.
    let hello = fed.next_out(0).unwrap();
    assert!(matches!(
        fed.coord.handle_message(fed.now, 1, hello),
        Err(EngineError::WrongPsiRole { .. })
    ));
    fed.coord
        .handle_message(
            fed.now,
            1,
            ToCoordinator::PsiFailed {
                job_id: job.clone(),
                session: 0,
                reason: "dataset 'customers': no id column".into(),
            },
        )
        .unwrap();
    let s = fed.coord.job_status(&job).unwrap();
    assert!(
        matches!(&s.state, JobState::Failed(why) if why.contains("insurer (passive): dataset 'customers'")),
        "{s:?}"
    );
    // Resumed, it opens a fresh session with the parties still joined.
    fed.coord.resume(fed.now, &job).unwrap();
    assert_eq!(fed.coord.job_status(&job).unwrap().state, JobState::Running);
    // Spec errors are named.
    let mut bad = spec("k");
    bad.passive = vec!["nobody".into()];
    let e = fed.coord.launch_psi(fed.now, bad).unwrap_err();
    let e = fedsilo_config::display_chain(&e);
    assert!(e.contains("passive: 'nobody' is not in the roster"), "{e}");
}

#[test]
fn a_party_that_lost_its_session_gets_a_fresh_one_then_a_named_failure() {
    let mut fed = Fed::of_ranges(0..30, 10..50);
    let job = fed.start_pair("j");
    while let Some((to, m)) = fed.coord.poll_transmit() {
        fed.deliver(to, m);
    }
    // The insurer restarts: its session is gone; the bank's Hello still reached the relay.
    fed.parties[1].party = None;
    let hello = fed.next_out(0).unwrap();
    fed.coord.handle_message(fed.now, 0, hello).unwrap();
    let lost = |session| ToCoordinator::PsiLost {
        job_id: "j".into(),
        session,
    };
    fed.coord.handle_message(fed.now, 1, lost(0)).unwrap();
    let status = fed.coord.job_status(&job).unwrap();
    assert_eq!(status.state, JobState::Running, "{status:?}");
    assert!(status.detail.contains("session 1"), "{}", status.detail);
    // A late report of the old session is refused; the fresh one runs to the end.
    assert!(matches!(
        fed.coord.handle_message(fed.now, 1, lost(0)),
        Err(EngineError::NoSuchRound { round: 0, .. })
    ));
    // The Hello relayed before the restart reaches no session: a party drops it.
    let mut stale = 0;
    while let Some((to, m)) = fed.coord.poll_transmit() {
        match &m {
            ToParticipant::Psi(x) if x.ctx().session == 0 => stale += 1,
            _ => fed.deliver(to, m),
        }
    }
    assert_eq!(stale, 1);
    fed.run();
    assert_eq!(
        fed.coord.job_status(&job).unwrap().state,
        JobState::Finished
    );
    assert_eq!(fed.parties[0].sessions, vec![0, 1]);
    assert_eq!(fed.parties[1].sessions, vec![0, 1]);
    let rec = fed.coord.psi_record(&job).unwrap();
    assert_eq!(rec.pairs[0].session, 1);
    assert_eq!(rec.pairs[0].intersection_size, 20);
    let summaries: Vec<&Result<_, String>> = fed
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Psi(s) => Some(&s.result),
            _ => None,
        })
        .collect();
    assert_eq!(summaries.len(), 2);
    assert!(
        matches!(summaries[0], Err(why) if why.contains("insurer (passive) lost its session state")),
        "{summaries:?}"
    );
    assert!(summaries[1].is_ok());

    // A party that keeps losing its state fails the job by name.
    let mut fed = Fed::of_ranges(0..30, 10..50);
    let job = fed.start_pair("k");
    for session in 0..=super::psi::MAX_LOST_RESTARTS as u64 {
        fed.coord
            .handle_message(
                fed.now,
                0,
                ToCoordinator::PsiLost {
                    job_id: job.clone(),
                    session,
                },
            )
            .unwrap();
    }
    let s = fed.coord.job_status(&job).unwrap();
    assert!(
        matches!(&s.state, JobState::Failed(why) if why.contains("bank (active) lost its PSI session state 4 times")),
        "{s:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Vertical jobs on the same relay
// ---------------------------------------------------------------------------------------------

fn vspec(job: &str) -> fedsilo_task::vertical::VerticalJobSpec {
    fedsilo_task::vertical::VerticalJobSpec {
        kind: fedsilo_task::vertical::VerticalKind::VerticalLogistic,
        job_id: job.into(),
        psi_job: "align".into(),
        model_job: String::new(),
        active: "bank".into(),
        passive: vec!["insurer".into()],
        key_bits: Some(1024),
        test_key: true,
        label: String::new(),
        holdout_fraction: Some(0.2),
        iterations: Some(2),
        l2: None,
        pos_weight: None,
        optimizer: None,
        gbdt: None,
    }
}

/// A finished PSI job "align", then the vertical job `job` launched with both joined; the
/// session number of its `VerticalStart`s.
fn vertical_fed(job: &str) -> (Fed, u64) {
    let mut fed = Fed::of_ranges(0..40, 10..50);
    fed.start_pair("align");
    fed.run();
    assert_eq!(
        fed.coord.job_status("align").unwrap().state,
        JobState::Finished
    );
    let id = fed.coord.launch_vertical(fed.now, vspec(job)).unwrap();
    assert_eq!(id, job);
    fed.coord.handle_join(fed.now, 0, &[]).unwrap();
    fed.coord.handle_join(fed.now, 1, &[]).unwrap();
    let mut sessions = Vec::new();
    let hash = fed.coord.psi_record("align").unwrap().pairs[0]
        .intersection_hash
        .clone();
    while let Some((to, m)) = fed.coord.poll_transmit() {
        if let ToParticipant::VerticalStart(s) = m {
            assert_eq!(hex::encode(s.psi_hash), hash);
            assert_eq!(
                s.role,
                if to == 0 {
                    fedsilo_crypto::psi::Role::Active
                } else {
                    fedsilo_crypto::psi::Role::Passive
                }
            );
            sessions.push(s.session);
        }
    }
    assert_eq!(sessions.len(), 2, "a VerticalStart to each party");
    (fed, sessions[0])
}

fn sealed(job: &str, session: u64, from: fedsilo_crypto::psi::Role, seq: u64) -> ToCoordinator {
    ToCoordinator::Psi(fedsilo_crypto::psi::PsiMsg::Sealed(
        fedsilo_crypto::psi::Sealed {
            ctx: PsiContext {
                job_id: job.into(),
                session,
            },
            from,
            seq,
            kind: fedsilo_crypto::psi::Kind::Vertical,
            ciphertext: vec![seq as u8; 40],
        },
    ))
}

fn progress(job: &str, session: u64, step: u64) -> ToCoordinator {
    ToCoordinator::VerticalProgress(fedsilo_task::vertical::VerticalProgress {
        job_id: job.into(),
        session,
        step,
        resumed_from: 0,
    })
}

fn done(job: &str, session: u64, auc: Option<f64>) -> ToCoordinator {
    ToCoordinator::VerticalDone(fedsilo_task::vertical::VerticalReport {
        job_id: job.into(),
        session,
        rows: 30,
        train_rows: 24,
        holdout_rows: 6,
        steps: 2,
        holdout_auc: auc,
    })
}

#[test]
fn a_vertical_job_relays_sealed_messages_audits_each_step_and_finishes() {
    use fedsilo_crypto::psi::Role;
    use fedsilo_task::vertical::VerticalSpecError;
    let (mut fed, s) = vertical_fed("v");
    let now = fed.now;
    // The launch is checked against the PSI job and the key rule.
    let mut bad = vspec("w");
    bad.test_key = false;
    assert!(matches!(
        fed.coord.launch_vertical(now, bad),
        Err(EngineError::InvalidVerticalJob(
            VerticalSpecError::KeyBits { .. }
        ))
    ));
    let mut bad = vspec("w");
    bad.psi_job = "nope".into();
    assert!(matches!(
        fed.coord.launch_vertical(now, bad),
        Err(EngineError::InvalidVerticalJob(
            VerticalSpecError::UnknownPsiJob(_)
        ))
    ));
    let mut bad = vspec("w");
    bad.psi_job = "v".into();
    assert!(
        fed.coord.launch_vertical(now, bad).is_err(),
        "a vertical job is no PSI job"
    );
    // Relayed unread, to the other party; a wrong role is refused.
    fed.coord
        .handle_message(now, 1, sealed("v", s, Role::Passive, 0))
        .unwrap();
    let (to, m) = fed.coord.poll_transmit().unwrap();
    assert_eq!(to, 0);
    assert!(matches!(m, ToParticipant::Psi(_)));
    assert!(matches!(
        fed.coord
            .handle_message(now, 0, sealed("v", s, Role::Passive, 1)),
        Err(EngineError::WrongPsiRole { .. })
    ));
    fed.coord
        .handle_message(now, 0, sealed("v", s, Role::Active, 0))
        .unwrap();
    // Progress only from the active party, in order; each step audited with its hash.
    assert!(fed
        .coord
        .handle_message(now, 1, progress("v", s, 1))
        .is_err());
    assert!(fed
        .coord
        .handle_message(now, 0, progress("v", s, 2))
        .is_err());
    fed.coord
        .handle_message(now, 0, progress("v", s, 1))
        .unwrap();
    fed.coord
        .handle_message(now, 0, progress("v", s, 2))
        .unwrap();
    assert!(fed
        .coord
        .handle_message(now, 0, progress("v", s, 3))
        .is_err());
    let status = fed.coord.job_status("v").unwrap();
    assert_eq!(status.state, JobState::Running);
    assert_eq!((status.rounds_done, status.total_rounds), (2, 2));
    assert!(
        status.detail.contains("iteration 2 of 2"),
        "{}",
        status.detail
    );
    fed.coord
        .handle_message(now, 1, done("v", s, None))
        .unwrap();
    fed.coord
        .handle_message(now, 0, done("v", s, Some(0.75)))
        .unwrap();
    let status = fed.coord.job_status("v").unwrap();
    assert_eq!(status.state, JobState::Finished, "{status:?}");
    assert!(
        status.detail.contains("hold-out AUC 0.7500"),
        "{}",
        status.detail
    );
    let mut steps = Vec::new();
    let mut checkpoint = None;
    while let Some(ev) = fed.coord.poll_event() {
        match ev {
            Event::Vertical(v) => steps.push(*v),
            Event::Checkpoint { state, .. } => checkpoint = Some(state),
            _ => {}
        }
    }
    assert_eq!(steps.len(), 3, "{steps:#?}");
    assert_eq!(steps[0].step, 1);
    assert_eq!(
        steps[0].messages,
        [1, 1],
        "one sealed message each way in step 1"
    );
    assert_eq!(steps[0].relayed_hash.len(), 64);
    assert_eq!(steps[1].messages, [0, 0]);
    assert_ne!(steps[0].relayed_hash, steps[1].relayed_hash);
    assert!(steps[2].result.as_ref().is_ok_and(|l| l.starts_with("ok:")));
    // The checkpoint restores as the finished vertical job.
    let mut again = Coordinator::new(fedsilo_crypto::msg::Roster::new(), BTreeMap::new(), [1; 32]);
    again.restore(now, "v", &checkpoint.unwrap()).unwrap();
    let r = again.psi_record("v").unwrap();
    assert_eq!(r.state, JobState::Finished);
    assert_eq!(
        r.vertical.as_ref().unwrap().outcome.as_ref().unwrap().rows,
        30
    );
}

#[test]
fn a_party_away_pauses_a_vertical_job_until_it_is_back() {
    let (mut fed, s) = vertical_fed("v");
    // Only the bank is seen for longer than the liveness window.
    let later = fed.now + super::DEFAULT_LIVENESS_WINDOW + Duration::from_secs(1);
    fed.coord.handle_seen(later, 0);
    assert!(fed.coord.poll_timeout().is_some_and(|t| t <= later));
    fed.coord.handle_timeout(later);
    let status = fed.coord.job_status("v").unwrap();
    assert_eq!(status.state, JobState::Waiting, "{status:?}");
    assert!(
        status.detail.contains("waiting for insurer"),
        "{}",
        status.detail
    );
    let paused: Vec<_> = std::iter::from_fn(|| fed.coord.poll_event())
        .filter_map(|e| match e {
            Event::Vertical(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(paused.len(), 1);
    assert!(paused[0]
        .result
        .as_ref()
        .is_err_and(|w| w.contains("insurer away")));
    // The insurer is back: a fresh session starts.
    fed.coord.handle_seen(later, 1);
    let starts: Vec<u64> = std::iter::from_fn(|| fed.coord.poll_transmit())
        .filter_map(|(_, m)| match m {
            ToParticipant::VerticalStart(v) => Some(v.session),
            _ => None,
        })
        .collect();
    assert_eq!(starts, vec![s + 1, s + 1]);
    assert_eq!(fed.coord.job_status("v").unwrap().state, JobState::Running);
}

/// A scoring job names a finished vertical training job; its parties are the model job's.
#[test]
fn a_vertical_scoring_job_needs_a_finished_model_job_of_the_same_parties() {
    use fedsilo_task::vertical::{VerticalKind, VerticalSpecError};
    let (mut fed, s) = vertical_fed("v");
    let now = fed.now;
    let score = |model: &str| fedsilo_task::vertical::VerticalJobSpec {
        kind: VerticalKind::VerticalScore,
        job_id: "score".into(),
        model_job: model.into(),
        active: String::new(),
        passive: Vec::new(),
        key_bits: None,
        test_key: false,
        holdout_fraction: None,
        iterations: None,
        ..vspec("score")
    };
    let launch = |fed: &mut Fed, spec| fed.coord.launch_vertical(now, spec);
    assert!(matches!(
        launch(&mut fed, score("nope")),
        Err(EngineError::InvalidVerticalJob(
            VerticalSpecError::UnknownModelJob(_)
        ))
    ));
    assert!(matches!(
        launch(&mut fed, score("align")),
        Err(EngineError::InvalidVerticalJob(
            VerticalSpecError::UnknownModelJob(_)
        )),
    ));
    assert!(matches!(
        launch(&mut fed, score("v")),
        Err(EngineError::InvalidVerticalJob(
            VerticalSpecError::ModelNotFinished { .. }
        ))
    ));
    for step in 1..=2 {
        fed.coord
            .handle_message(now, 0, progress("v", s, step))
            .unwrap();
    }
    fed.coord
        .handle_message(now, 1, done("v", s, None))
        .unwrap();
    fed.coord
        .handle_message(now, 0, done("v", s, Some(0.75)))
        .unwrap();
    assert_eq!(fed.coord.job_status("v").unwrap().state, JobState::Finished);
    let mut swapped = score("v");
    swapped.active = "insurer".into();
    swapped.passive = vec!["bank".into()];
    assert!(matches!(
        launch(&mut fed, swapped),
        Err(EngineError::InvalidVerticalJob(
            VerticalSpecError::NotModelParty {
                field: "active",
                ..
            }
        ))
    ));
    let mut training_key = score("v");
    training_key.key_bits = Some(2048);
    assert!(matches!(
        launch(&mut fed, training_key),
        Err(EngineError::InvalidVerticalJob(
            VerticalSpecError::NotForScoring { field: "key_bits" }
        ))
    ));
    // The parties are filled in from the model job; both get a VerticalStart naming it.
    while fed.coord.poll_transmit().is_some() {}
    assert_eq!(launch(&mut fed, score("v")).unwrap(), "score");
    fed.coord.handle_join(now, 0, &[]).unwrap();
    fed.coord.handle_join(now, 1, &[]).unwrap();
    let starts: Vec<_> = std::iter::from_fn(|| fed.coord.poll_transmit())
        .filter_map(|(to, m)| match m {
            ToParticipant::VerticalStart(v) => Some((to, v.spec.model_job.clone(), v.role)),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(starts.iter().all(|(_, m, _)| m == "v"));
    let status = fed.coord.job_status("score").unwrap();
    assert!(
        status
            .detail
            .contains("vertical_score with the model of 'v'"),
        "{}",
        status.detail
    );
    assert_eq!(status.total_rounds, 1);
}

#[test]
fn a_heartbeating_party_stays_alive_for_its_vertical_session_but_not_present_for_rounds() {
    let (mut fed, s) = vertical_fed("v");
    let window = super::DEFAULT_LIVENESS_WINDOW;
    let third = window / 3;
    // The insurer polls; the bank only heartbeats (busy with a long step), past the window.
    let mut now = fed.now;
    for _ in 0..7 {
        now += third;
        fed.coord.handle_seen(now, 1);
        fed.coord.handle_heartbeat(now, 0);
        fed.coord.handle_timeout(now);
    }
    assert!(now > fed.now + 2 * window);
    let status = fed.coord.job_status("v").unwrap();
    assert_eq!(status.state, JobState::Running, "{status:?}");
    assert!(
        status.detail.contains(&format!("session {s} with insurer")),
        "{}",
        status.detail
    );
    assert!(!std::iter::from_fn(|| fed.coord.poll_event())
        .any(|e| matches!(&e, Event::Vertical(v) if v.result.is_err())));
    // Alive, not present: a round would not be started on the bank.
    let bank = fed
        .coord
        .participants_liveness(now)
        .into_iter()
        .find(|p| p.name == "bank")
        .unwrap();
    assert!(!bank.present && bank.busy, "{bank:?}");
    // Its heartbeats stop (the process died): away once the window passes.
    let gone = now + window + Duration::from_secs(1);
    fed.coord.handle_seen(gone, 1);
    assert!(fed.coord.poll_timeout().is_some_and(|t| t <= gone));
    fed.coord.handle_timeout(gone);
    let paused: Vec<_> = std::iter::from_fn(|| fed.coord.poll_event())
        .filter_map(|e| match e {
            Event::Vertical(v) => v.result.err(),
            _ => None,
        })
        .collect();
    assert_eq!(paused.len(), 1, "{paused:?}");
    assert!(paused[0].contains("bank away"), "{paused:?}");
    // A heartbeat alone brings it back for the session: a fresh one starts.
    fed.coord.handle_heartbeat(gone, 0);
    let starts: Vec<u64> = std::iter::from_fn(|| fed.coord.poll_transmit())
        .filter_map(|(_, m)| match m {
            ToParticipant::VerticalStart(v) => Some(v.session),
            _ => None,
        })
        .collect();
    assert_eq!(starts, vec![s + 1, s + 1]);
}

/// A finished PSI job "align" of the bank with the insurer and the telco, then the vertical
/// job `job` with both passive parties, launched with all three joined; the session number.
fn two_passive_fed(job: &str) -> (Fed, u64) {
    use fedsilo_crypto::psi::Role;
    let (b, i, t) = (ids("C", 0..40), ids("C", 10..50), ids("C", 5..35));
    let as_str = |v: &[String]| -> Vec<String> { v.to_vec() };
    let (b, i, t) = (as_str(&b), as_str(&i), as_str(&t));
    let (b, i, t): (Vec<&str>, Vec<&str>, Vec<&str>) = (
        b.iter().map(String::as_str).collect(),
        i.iter().map(String::as_str).collect(),
        t.iter().map(String::as_str).collect(),
    );
    let mut fed = Fed::with(&[("bank", &b), ("insurer", &i), ("telco", &t)]);
    let mut psi = spec("align");
    psi.passive = vec!["insurer".into(), "telco".into()];
    fed.coord.launch_psi(fed.now, psi).unwrap();
    for p in 0..3 {
        fed.coord.handle_join(fed.now, p, &[]).unwrap();
    }
    fed.run();
    assert_eq!(
        fed.coord.job_status("align").unwrap().state,
        JobState::Finished
    );
    let pairs = fed.coord.psi_record("align").unwrap().pairs.clone();
    assert_eq!(pairs.len(), 2);
    let mut v = vspec(job);
    v.passive = vec!["insurer".into(), "telco".into()];
    fed.coord.launch_vertical(fed.now, v).unwrap();
    for p in 0..3 {
        fed.coord.handle_join(fed.now, p, &[]).unwrap();
    }
    let mut starts = BTreeMap::new();
    while let Some((to, m)) = fed.coord.poll_transmit() {
        if let ToParticipant::VerticalStart(s) = m {
            starts.insert(to, *s);
        }
    }
    assert_eq!(
        starts.len(),
        3,
        "a VerticalStart to each of the three parties"
    );
    let (a, ins, tel) = (&starts[&0], &starts[&1], &starts[&2]);
    assert_eq!(
        (a.role, ins.role, tel.role),
        (Role::Active, Role::Passive, Role::Passive)
    );
    // The active party learns each pair's alignment; each passive party its own.
    assert_eq!(a.peer, "insurer");
    assert_eq!(hex::encode(a.psi_hash), pairs[0].intersection_hash);
    assert_eq!(a.more_passive.len(), 1);
    assert_eq!(a.more_passive[0].passive, "telco");
    assert_eq!(
        hex::encode(a.more_passive[0].psi_hash),
        pairs[1].intersection_hash
    );
    assert_eq!((ins.peer.as_str(), ins.passive_index), ("bank", 0));
    assert_eq!((tel.peer.as_str(), tel.passive_index), ("bank", 1));
    assert_eq!(hex::encode(tel.psi_hash), pairs[1].intersection_hash);
    assert!(ins.more_passive.is_empty() && tel.more_passive.is_empty());
    assert_eq!(a.session, tel.session);
    (fed, a.session)
}

fn to_passive(job: &str, session: u64, passive: u32, seq: u64) -> ToCoordinator {
    let ToCoordinator::Psi(msg) = sealed(job, session, fedsilo_crypto::psi::Role::Active, seq)
    else {
        unreachable!()
    };
    ToCoordinator::VerticalRelay { passive, msg }
}

/// With two passive parties the relay is a star: the active party names the recipient of each
/// message, the active party learns which passive party sent each; a passive party addressing
/// another one, a message of the active party naming none or a party the session lacks, and
/// a message of the wrong session are refused, by name; the session closes when all three
/// parties have reported.
#[test]
fn a_vertical_job_with_two_passive_parties_routes_each_message_to_its_pair() {
    use fedsilo_crypto::psi::Role;
    let (mut fed, s) = two_passive_fed("v");
    let now = fed.now;
    // Passive → active: the active party is told which passive party sent it.
    for (from, index) in [(1u32, 0u32), (2, 1)] {
        fed.coord
            .handle_message(now, from, sealed("v", s, Role::Passive, 0))
            .unwrap();
        let (to, m) = fed.coord.poll_transmit().unwrap();
        assert_eq!(to, 0);
        assert!(
            matches!(m, ToParticipant::VerticalRelay { passive, .. } if passive == index),
            "{m:?}"
        );
    }
    // Active → passive k: to that party alone, as a plain relayed message.
    for (index, want) in [(1u32, 2u32), (0, 1)] {
        fed.coord
            .handle_message(now, 0, to_passive("v", s, index, u64::from(index)))
            .unwrap();
        let (to, m) = fed.coord.poll_transmit().unwrap();
        assert_eq!(to, want);
        assert!(matches!(m, ToParticipant::Psi(_)), "{m:?}");
        assert!(fed.coord.poll_transmit().is_none());
    }
    // A passive party cannot address another passive party (nor the active one by index).
    let e = fed
        .coord
        .handle_message(now, 2, to_passive("v", s, 0, 1))
        .unwrap_err();
    assert!(matches!(e, EngineError::PassiveAddressed { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("telco") && text.contains("insurer"), "{text}");
    // The active party must name a passive party of the session.
    assert!(matches!(
        fed.coord
            .handle_message(now, 0, sealed("v", s, Role::Active, 2)),
        Err(EngineError::NoRecipient { .. })
    ));
    let e = fed
        .coord
        .handle_message(now, 0, to_passive("v", s, 2, 2))
        .unwrap_err();
    assert!(
        matches!(
            e,
            EngineError::NoSuchPassive {
                index: 2,
                count: 2,
                ..
            }
        ),
        "{e:?}"
    );
    // Another session, or a message claiming the active role from a passive party.
    assert!(matches!(
        fed.coord
            .handle_message(now, 0, to_passive("v", s + 1, 1, 2)),
        Err(EngineError::NoSuchRound { .. })
    ));
    assert!(matches!(
        fed.coord
            .handle_message(now, 1, sealed("v", s, Role::Active, 2)),
        Err(EngineError::WrongPsiRole { .. })
    ));
    assert!(
        fed.coord.poll_transmit().is_none(),
        "nothing refused was relayed"
    );
    fed.coord
        .handle_message(now, 0, progress("v", s, 1))
        .unwrap();
    fed.coord
        .handle_message(now, 0, progress("v", s, 2))
        .unwrap();
    // Every party's report closes the session; two are not enough.
    fed.coord
        .handle_message(now, 1, done("v", s, None))
        .unwrap();
    fed.coord
        .handle_message(now, 0, done("v", s, Some(0.75)))
        .unwrap();
    assert_eq!(fed.coord.job_status("v").unwrap().state, JobState::Running);
    fed.coord
        .handle_message(now, 2, done("v", s, None))
        .unwrap();
    let status = fed.coord.job_status("v").unwrap();
    assert_eq!(status.state, JobState::Finished, "{status:?}");
    let mut steps = Vec::new();
    let mut ended = BTreeMap::new();
    while let Some(ev) = fed.coord.poll_event() {
        if let Event::Vertical(v) = ev {
            steps.push(*v);
        }
    }
    while let Some((to, m)) = fed.coord.poll_transmit() {
        if let ToParticipant::JobEnd { state, .. } = m {
            ended.insert(to, state);
        }
    }
    assert_eq!(ended.len(), 3, "the job's end goes to all three parties");
    assert_eq!(steps.len(), 3, "{steps:#?}");
    assert_eq!(steps[0].passive, "insurer, telco");
    assert_eq!(
        steps[0].messages,
        [2, 2],
        "per direction, summed over the passive parties"
    );
}

/// The vertical job's passive parties must each be a passive party of the PSI job; one
/// reporting a different session fails the job naming it.
#[test]
fn a_two_passive_vertical_job_is_checked_against_the_psi_job_and_every_report() {
    use fedsilo_task::vertical::VerticalSpecError;
    let (mut fed, s) = two_passive_fed("v");
    let now = fed.now;
    let mut only_insurer = spec("align1");
    only_insurer.passive = vec!["insurer".into()];
    fed.coord.launch_psi(now, only_insurer).unwrap();
    fed.coord.handle_join(now, 0, &[]).unwrap();
    fed.coord.handle_join(now, 1, &[]).unwrap();
    fed.run();
    assert_eq!(
        fed.coord.job_status("align1").unwrap().state,
        JobState::Finished
    );
    let mut bad = vspec("w");
    bad.psi_job = "align1".into();
    bad.passive = vec!["insurer".into(), "telco".into()];
    match fed.coord.launch_vertical(now, bad) {
        Err(EngineError::InvalidVerticalJob(VerticalSpecError::NotPsiParty {
            field: "passive",
            name,
            ..
        })) => assert_eq!(name, "telco"),
        other => panic!("{other:?}"),
    }
    fed.coord
        .handle_message(now, 0, progress("v", s, 1))
        .unwrap();
    fed.coord
        .handle_message(now, 0, progress("v", s, 2))
        .unwrap();
    fed.coord
        .handle_message(now, 0, done("v", s, Some(0.7)))
        .unwrap();
    fed.coord
        .handle_message(now, 1, done("v", s, None))
        .unwrap();
    let ToCoordinator::VerticalDone(mut other) = done("v", s, None) else {
        unreachable!()
    };
    other.rows = 29;
    fed.coord
        .handle_message(now, 2, ToCoordinator::VerticalDone(other))
        .unwrap();
    let status = fed.coord.job_status("v").unwrap();
    match &status.state {
        JobState::Failed(why) => assert!(why.contains("passive telco: 29 rows"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// With two passive parties the second one away pauses the job (the first two parties
/// being seen is not enough); when it is back a fresh session starts among all three, and a
/// party's `PsiLost` restarts the session for all three.
#[test]
fn the_second_passive_party_away_or_lost_restarts_the_session_for_all() {
    let (mut fed, s) = two_passive_fed("v");
    let later = fed.now + super::DEFAULT_LIVENESS_WINDOW + Duration::from_secs(1);
    fed.coord.handle_seen(later, 0);
    fed.coord.handle_seen(later, 1);
    fed.coord.handle_timeout(later);
    let status = fed.coord.job_status("v").unwrap();
    assert_eq!(status.state, JobState::Waiting, "{status:?}");
    assert!(
        status.detail.contains("waiting for telco"),
        "{}",
        status.detail
    );
    let paused: Vec<_> = std::iter::from_fn(|| fed.coord.poll_event())
        .filter_map(|e| match e {
            Event::Vertical(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(paused.len(), 1);
    assert!(paused[0]
        .result
        .as_ref()
        .is_err_and(|w| w.contains("telco away")));
    fed.coord.handle_seen(later, 2);
    let starts = |fed: &mut Fed| -> Vec<(u32, u64)> {
        std::iter::from_fn(|| fed.coord.poll_transmit())
            .filter_map(|(to, m)| match m {
                ToParticipant::VerticalStart(v) => Some((to, v.session)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(starts(&mut fed), vec![(0, s + 1), (1, s + 1), (2, s + 1)]);
    fed.coord
        .handle_message(
            later,
            2,
            ToCoordinator::PsiLost {
                job_id: "v".into(),
                session: s + 1,
            },
        )
        .unwrap();
    assert_eq!(starts(&mut fed), vec![(0, s + 2), (1, s + 2), (2, s + 2)]);
}
