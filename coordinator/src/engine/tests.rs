//! The engine against honest, mute, dead and lying banks (real SecAgg clients).

use super::round::{hash_hex, sum_hash};
use super::*;
use fedsilo_crypto::client::Client;
use fedsilo_crypto::encoding::RingVec;
use fedsilo_crypto::keys::IdentityKey;
use fedsilo_task::job::RoundStart;
use fedsilo_task::{Implausible, Instruction};

/// What a test bank does with a round.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Honest,
    /// Polls (is seen) but never answers.
    Mute,
    /// Neither polls nor answers.
    Dead,
    /// Encodes its first value 5 × the declared range (never clipped).
    Oversized,
    /// Adds one row to a magnitude bin without counting it (in range, inconsistent).
    Miscount,
}

struct Bank {
    key: Arc<IdentityKey>,
    mode: Mode,
    client: Option<Client>,
    ended: Vec<(WireJobState, String)>,
}

struct Fed {
    coord: Coordinator,
    banks: Vec<Bank>,
    roster: Arc<Roster>,
    now: Instant,
    rng: rand_chacha::ChaCha20Rng,
    rounds: Vec<RoundSummary>,
    checkpoints: Vec<Vec<u8>>,
}

/// An honest participant's vector for `instr` (10 rows, 3 positives per bank).
fn honest(instr: &Instruction, len: usize) -> Vec<f64> {
    let mut v = vec![0.0; len];
    match instr {
        Instruction::Scale { data, .. } => {
            let (f, l) = (data.features.len(), data.labels.len());
            let width = (len - 1 - l) / f;
            v[0] = 10.0;
            for i in 0..l {
                v[1 + i] = 3.0;
            }
            for j in 0..f {
                let o = 1 + l + j * width;
                v[o] = 10.0;
                v[o + 1 + 7] = 10.0;
            }
        }
        Instruction::Moments { .. } => {
            for (i, x) in v.iter_mut().enumerate() {
                *x = if i % 2 == 0 { 1.0 } else { 2.0 };
            }
        }
        Instruction::Train { .. } => {
            v[len - 2] = 10.0;
            v[len - 1] = 5.0;
        }
        Instruction::Evaluate { bins, .. } => {
            let per = 2 * bins + 2;
            for o in (0..len).step_by(per) {
                v[o] = 3.0;
                v[o + bins] = 7.0;
                v[o + 2 * bins] = 5.0;
                v[o + 2 * bins + 1] = 10.0;
            }
        }
        _ => {}
    }
    v
}

fn input(start: &RoundStart, mode: Mode) -> RingVec {
    let mut v = honest(&start.instruction, start.config.vector_len);
    if mode == Mode::Miscount {
        v[1 + 1 + 1 + 8] += 1.0;
    }
    let mut ring = start.encoding.encode(&v).unwrap();
    if mode == Mode::Oversized {
        let scaled = 5.0 * start.encoding.max_abs * f64::from(start.encoding.frac_bits).exp2();
        match &mut ring {
            RingVec::U64(xs) => xs[0] = scaled as i64 as u64,
            RingVec::U32(xs) => xs[0] = scaled as i64 as u32,
        }
    }
    ring
}

fn spec(min: usize, patience_ms: u64) -> JobSpec {
    serde_json::from_value(serde_json::json!({
        "job_id": "j",
        "dataset": "d",
        "rounds": 2,
        "eval_every": 1,
        "hist_bins": 10,
        "min_participants": min,
        "phase_timeout_ms": 1000,
        "absence_patience_ms": patience_ms,
    }))
    .unwrap()
}

impl Fed {
    fn new(modes: &[Mode]) -> Fed {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
        let mut roster = Roster::new();
        let mut names = BTreeMap::new();
        let mut banks = Vec::new();
        for (i, &mode) in modes.iter().enumerate() {
            let key = Arc::new(IdentityKey::generate(&mut rng));
            roster.insert(i as ParticipantId, key.public_key());
            names.insert(
                i as ParticipantId,
                format!("bank-{}", (b'a' + i as u8) as char),
            );
            banks.push(Bank {
                key,
                mode,
                client: None,
                ended: Vec::new(),
            });
        }
        Fed {
            coord: Coordinator::new(roster.clone(), names, [1; 32]),
            banks,
            roster: Arc::new(roster),
            now: Instant::now(),
            rng,
            rounds: Vec::new(),
            checkpoints: Vec::new(),
        }
    }

    fn launch(&mut self, spec: JobSpec) {
        self.coord
            .launch(self.now, spec, vec!["x".into()], vec!["y".into()])
            .unwrap();
        for p in 0..self.banks.len() as ParticipantId {
            self.coord.handle_join(self.now, p, &[]).unwrap();
        }
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(ev) = self.coord.poll_event() {
            match ev {
                Event::Round(r) => self.rounds.push(*r),
                Event::Checkpoint { state, .. } => self.checkpoints.push(state),
                _ => {}
            }
        }
    }

    /// Delivers messages until nothing moves; then lets the next deadline pass (living
    /// banks poll first). Returns false when nothing is left to do.
    fn step(&mut self) -> bool {
        self.deliver(usize::MAX);
        let Some(deadline) = self.coord.poll_timeout() else {
            return false;
        };
        self.now = self.now.max(deadline);
        for (p, bank) in self.banks.iter().enumerate() {
            if bank.mode != Mode::Dead {
                self.coord.handle_seen(self.now, p as ParticipantId);
            }
        }
        self.coord.handle_timeout(self.now);
        self.drain();
        true
    }

    /// Delivers messages until nothing moves or `rounds` rounds have closed.
    fn deliver(&mut self, rounds: usize) {
        loop {
            self.drain();
            if self.rounds.len() >= rounds {
                return;
            }
            let mut out = Vec::new();
            while let Some((to, m)) = self.coord.poll_transmit() {
                let bank = &mut self.banks[to as usize];
                if matches!(bank.mode, Mode::Mute | Mode::Dead) {
                    continue;
                }
                match m {
                    ToParticipant::RoundStart(start) => {
                        let c = Client::new(
                            start.config.clone(),
                            to,
                            bank.key.clone(),
                            self.roster.clone(),
                            input(&start, bank.mode),
                            &mut self.rng,
                        )
                        .unwrap();
                        bank.client = Some(c);
                    }
                    ToParticipant::SecAgg(m) => {
                        if let Some(c) = bank.client.as_mut() {
                            let _ = c.handle_message(m, &mut self.rng);
                        }
                    }
                    ToParticipant::RoundEnd { .. } => bank.client = None,
                    ToParticipant::JobEnd { state, detail, .. } => {
                        bank.client = None;
                        bank.ended.push((state, detail));
                    }
                    ToParticipant::PsiStart(_)
                    | ToParticipant::Psi(_)
                    | ToParticipant::VerticalRelay { .. }
                    | ToParticipant::VerticalStart(_) => {
                        panic!("no PSI job here")
                    }
                }
                if let Some(c) = bank.client.as_mut() {
                    while let Some(m) = c.poll_transmit() {
                        out.push((to, m));
                    }
                }
            }
            if out.is_empty() {
                break;
            }
            for (from, m) in out {
                let _ = self
                    .coord
                    .handle_message(self.now, from, ToCoordinator::SecAgg(m));
            }
        }
        self.drain();
    }

    fn state(&self) -> JobState {
        self.coord.job_status("j").unwrap().state
    }

    fn plan_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self.coord.plan("j").unwrap()).unwrap()
    }
}

#[test]
fn an_honest_federation_finishes() {
    let mut fed = Fed::new(&[Mode::Honest; 3]);
    fed.launch(spec(3, 60_000));
    while fed.step() {}
    assert_eq!(fed.state(), JobState::Finished, "{:#?}", fed.rounds);
    assert!(
        fed.rounds.iter().all(|r| r.result.is_ok()),
        "{:#?}",
        fed.rounds
    );
    assert!(fed.banks.iter().all(|b| b.ended.len() == 1));
}

#[test]
fn a_sum_outside_survivors_times_the_range_fails_the_round_and_leaves_the_plan() {
    let mut fed = Fed::new(&[Mode::Honest, Mode::Honest, Mode::Oversized]);
    fed.launch(spec(3, 60_000));
    let before = fed.plan_bytes();
    while fed.step() {}
    // Refused every time it is retried, never absorbed; the budget runs out.
    assert_eq!(fed.rounds.len(), MAX_ATTEMPTS as usize, "{:#?}", fed.rounds);
    for r in &fed.rounds {
        match &r.result {
            RoundOutcome::Implausible(Implausible::OutOfRange {
                index: 0,
                survivors: 3,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(r.outcome.contains("implausible aggregate"), "{}", r.outcome);
        assert_eq!(r.survivors.len(), 3);
    }
    assert_eq!(
        fed.plan_bytes(),
        before,
        "an implausible sum changed the plan"
    );
    assert_eq!(fed.coord.plan("j").unwrap().step_index(), 0);
    match fed.state() {
        JobState::Failed(why) => {
            assert!(
                why.contains("3 times") && why.contains("implausible"),
                "{why}"
            )
        }
        s => panic!("{s:?}"),
    }
}

/// A noised sum the coordinator unmasked and refused still released what it held: each
/// refused attempt of a record-level job's noised count step is charged, so the job's ε
/// grows with the retries (and stays what the accountant says for them).
#[test]
fn refused_noised_sums_are_charged_to_the_privacy_budget() {
    let mut fed = Fed::new(&[Mode::Honest, Mode::Honest, Mode::Oversized]);
    let mut s = spec(3, 60_000);
    s.dp = Some(
        serde_json::from_value(serde_json::json!({
            "level": "record", "clip": 1.0, "sampling_rate": 0.1,
            "noise_multiplier": 1.0, "delta": 1e-5,
        }))
        .unwrap(),
    );
    fed.launch(s.clone());
    let fresh = fedsilo_task::privacy::spent(&s, 0).unwrap().record;
    while fed.step() {}
    assert_eq!(fed.rounds.len(), MAX_ATTEMPTS as usize, "{:#?}", fed.rounds);
    assert!(fed
        .rounds
        .iter()
        .all(|r| matches!(r.result, RoundOutcome::Implausible(_))));
    let (_, spent) = fed.coord.plan("j").unwrap().privacy().unwrap();
    let charged = fedsilo_task::privacy::spent_with_unused(&s, 0, MAX_ATTEMPTS as u64)
        .unwrap()
        .record;
    assert_eq!(spent.record, charged);
    assert!(charged > fresh, "{charged} vs {fresh}");
    assert_eq!(fed.coord.plan("j").unwrap().dp_rounds(), 0);
}

#[test]
fn inconsistent_counts_in_range_are_named() {
    let mut fed = Fed::new(&[Mode::Honest, Mode::Miscount, Mode::Honest]);
    fed.launch(spec(3, 60_000));
    let before = fed.plan_bytes();
    fed.step();
    let r = fed.rounds.first().expect("a round");
    match &r.result {
        RoundOutcome::Implausible(Implausible::Inconsistent { what, .. }) => {
            assert!(what.contains("magnitude bins of 'x'"), "{what}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fed.plan_bytes(), before);
}

#[test]
fn rounds_failing_for_absence_use_no_attempts_and_the_job_goes_on() {
    // bank-c polls (so it is invited every time) but never answers: with three in the
    // round (k = 2, t = 2) no round can complete.
    let mut fed = Fed::new(&[Mode::Honest, Mode::Honest, Mode::Mute]);
    fed.launch(spec(3, 3_600_000));
    for _ in 0..(4 * MAX_ATTEMPTS) {
        fed.step();
    }
    assert!(
        fed.rounds.len() > MAX_ATTEMPTS as usize,
        "{:#?}",
        fed.rounds
    );
    for r in &fed.rounds {
        match &r.result {
            RoundOutcome::Absent { absent, .. } => assert_eq!(absent, &["bank-c"]),
            other => panic!("{other:?}"),
        }
    }
    assert!(!fed.state().is_terminal(), "{:?}", fed.state());
    // bank-c answers again: the job completes.
    fed.banks[2].mode = Mode::Honest;
    while fed.step() {}
    assert_eq!(fed.state(), JobState::Finished);
}

#[test]
fn two_present_of_three_run_valid_rounds_and_the_away_one_is_reported() {
    let mut fed = Fed::new(&[Mode::Honest; 3]);
    fed.launch(spec(2, 3_600_000));
    // The first round started as soon as two had joined; the second has all three.
    fed.deliver(1);
    fed.banks[2].mode = Mode::Dead;
    while fed.rounds.len() < 2 {
        assert!(fed.step(), "{:#?}", fed.rounds);
    }
    let failed = &fed.rounds[1];
    assert_eq!(failed.participants, ["bank-a", "bank-b", "bank-c"]);
    match &failed.result {
        RoundOutcome::Absent { absent, .. } => assert_eq!(absent, &["bank-c"]),
        other => panic!("{other:?}"),
    }
    let s = fed.coord.job_status("j").unwrap();
    assert_eq!(s.state, JobState::Running);
    assert!(
        s.detail.starts_with("running without bank-c (last seen"),
        "{}",
        s.detail
    );
    while fed.step() {}
    assert_eq!(fed.state(), JobState::Finished, "{:#?}", fed.rounds);
    // Every later round ran with the two present (k = 1, t = 1) and completed.
    for r in &fed.rounds[2..] {
        assert!(r.result.is_ok(), "{r:?}");
        assert_eq!(r.participants, ["bank-a", "bank-b"]);
        assert_eq!((r.neighbours, r.threshold), (1, 1));
    }
}

#[test]
fn an_away_participant_fills_min_participants_only_when_the_round_completes_without_it() {
    // Four with min_participants = 4 (k = 3, t = 2): three present can complete a round
    // of four, so bank-d is still invited and the job goes on with three survivors.
    let mut fed = Fed::new(&[Mode::Honest; 4]);
    fed.launch(spec(4, 3_600_000));
    fed.deliver(1);
    fed.banks[3].mode = Mode::Dead;
    while fed.step() {}
    assert_eq!(fed.state(), JobState::Finished, "{:#?}", fed.rounds);
    for r in &fed.rounds[1..] {
        assert!(r.result.is_ok(), "{r:?}");
        assert_eq!(r.participants.len(), 4);
        assert_eq!(r.survivors, ["bank-a", "bank-b", "bank-c"]);
    }
    // Three with min_participants = 3 (k = 2, t = 2): two present cannot, so the job
    // waits for bank-c instead of running rounds bound to fail.
    let mut fed = Fed::new(&[Mode::Honest; 3]);
    fed.launch(spec(3, 3_600_000));
    fed.deliver(1);
    fed.banks[2].mode = Mode::Dead;
    while fed.rounds.len() < 2 {
        assert!(fed.step());
    }
    assert!(fed.rounds[1].result.is_absence(), "{:?}", fed.rounds[1]);
    let s = fed.coord.job_status("j").unwrap();
    assert_eq!(s.state, JobState::Waiting);
    assert!(
        s.detail.starts_with("waiting for bank-c (last seen"),
        "{}",
        s.detail
    );
    assert!(
        s.detail.contains("2 of the 3 needed present"),
        "{}",
        s.detail
    );
    assert_eq!(
        fed.rounds.len(),
        2,
        "a round was started that could not complete"
    );
    // bank-c comes back: the job resumes with all three.
    fed.banks[2].mode = Mode::Honest;
    fed.coord.handle_seen(fed.now, 2);
    while fed.step() {}
    assert_eq!(fed.state(), JobState::Finished);
    assert!(fed.rounds[2..].iter().all(|r| r.survivors.len() == 3));
}

#[test]
fn patience_ends_the_wait_with_a_failed_state_and_its_reason() {
    let mut fed = Fed::new(&[Mode::Honest, Mode::Honest]);
    fed.launch(spec(2, 5_000));
    fed.deliver(1);
    assert!(fed.rounds[0].result.is_ok());
    fed.banks[1].mode = Mode::Dead;
    while fed.rounds.len() < 2 {
        assert!(fed.step());
    }
    // The round after it died failed for its absence; the job waits for it.
    assert!(fed.rounds[1].result.is_absence(), "{:?}", fed.rounds[1]);
    let s = fed.coord.job_status("j").unwrap();
    assert_eq!(s.state, JobState::Waiting);
    assert!(
        s.detail.contains("waiting for bank-b (last seen") && s.detail.contains("gives up in"),
        "{}",
        s.detail
    );
    while fed.step() {}
    let s = fed.coord.job_status("j").unwrap();
    assert_eq!(s.state.kind(), WireJobState::Failed);
    assert!(
        s.detail.contains("absence patience") && s.detail.contains("bank-b"),
        "{}",
        s.detail
    );
    assert_eq!(
        fed.banks[0].ended,
        [(WireJobState::Failed, s.detail.clone())]
    );
    // Absence never used an attempt.
    assert!(!s.detail.contains("times in a row"), "{}", s.detail);
}

#[test]
fn cancel_and_resume_are_checkpointed_and_the_resumed_job_finishes() {
    let mut fed = Fed::new(&[Mode::Honest; 2]);
    fed.launch(spec(2, 60_000));
    fed.deliver(2);
    // Cancel with a round in flight.
    assert!(fed.coord.job_status("j").unwrap().state == JobState::Running);
    fed.coord
        .cancel(fed.now, "j", "cancelled by op: test".into())
        .unwrap();
    fed.drain();
    assert_eq!(
        fed.state(),
        JobState::Cancelled("cancelled by op: test".into())
    );
    let abandoned = fed.rounds.last().unwrap();
    assert!(matches!(abandoned.result, RoundOutcome::Cancelled { .. }));
    let cancelled: JobRecord = serde_json::from_slice(fed.checkpoints.last().unwrap()).unwrap();
    assert!(matches!(cancelled.state, JobState::Cancelled(_)));
    let step = fed.coord.plan("j").unwrap().step_index();
    while fed.step() {}
    for b in &fed.banks {
        assert_eq!(b.ended[0].0, WireJobState::Cancelled);
    }
    assert!(matches!(
        fed.coord.cancel(fed.now, "j", "again".into()),
        Err(EngineError::WrongState { .. })
    ));
    // A restart keeps it cancelled.
    let mut restarted = Fed::new(&[Mode::Honest; 2]);
    restarted
        .coord
        .restore(restarted.now, "j", fed.checkpoints.last().unwrap())
        .unwrap();
    assert!(matches!(restarted.state(), JobState::Cancelled(_)));
    // Resume: waiting, checkpointed, then it runs on from where it was.
    fed.coord.resume(fed.now, "j").unwrap();
    fed.drain();
    let resumed: JobRecord = serde_json::from_slice(fed.checkpoints.last().unwrap()).unwrap();
    assert_eq!(resumed.state, JobState::Waiting);
    assert_eq!(fed.coord.plan("j").unwrap().step_index(), step);
    assert!(matches!(
        fed.coord.resume(fed.now, "j"),
        Err(EngineError::WrongState { .. })
    ));
    for p in 0..2 {
        fed.coord.handle_join(fed.now, p, &[]).unwrap();
    }
    while fed.step() {}
    assert_eq!(fed.state(), JobState::Finished, "{:#?}", fed.rounds);
}

#[test]
fn old_checkpoints_still_read() {
    let mut fed = Fed::new(&[Mode::Honest; 2]);
    fed.launch(spec(2, 60_000));
    let mut rec: serde_json::Value = serde_json::from_slice(&fed.checkpoints[0]).unwrap();
    rec["state"] = serde_json::json!({ "failed": "step failed 3 times in a row" });
    rec["plan"]["job"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("absence_patience_ms");
    let mut other = Fed::new(&[Mode::Honest; 2]);
    other
        .coord
        .restore(other.now, "j", &serde_json::to_vec(&rec).unwrap())
        .unwrap();
    assert_eq!(
        other.state(),
        JobState::Failed("step failed 3 times in a row".into())
    );
    assert_eq!(
        other.coord.plan("j").unwrap().spec().absence_patience_ms,
        fedsilo_task::DEFAULT_ABSENCE_PATIENCE_MS
    );
}

#[test]
fn a_round_serialises_its_plan_once_and_checkpoints_the_bytes_it_hashed() {
    let mut fed = Fed::new(&[Mode::Honest; 3]);
    fed.launch(spec(3, 60_000));
    fed.deliver(1);
    let r = fed.rounds.first().expect("a round");
    assert!(r.result.is_ok(), "{r:?}");
    let checkpoint = fed.checkpoints.last().expect("the round's checkpoint");
    let rec: JobRecord = serde_json::from_slice(checkpoint).unwrap();
    // The checkpoint is the record exactly as serde_json writes it, and the model hash is
    // over the bytes of the plan inside it.
    assert_eq!(checkpoint, &serde_json::to_vec(&rec).unwrap());
    assert_eq!(r.model_hash, hash_hex(&fed.plan_bytes()));
    let raw = serde_json::value::to_raw_value(&rec.plan).unwrap();
    assert_eq!(
        rec.to_checkpoint(Some(&raw)).unwrap(),
        rec.to_checkpoint(None).unwrap()
    );
}

#[test]
fn the_sum_hash_is_over_the_little_endian_bytes_of_the_sum() {
    let sum = [1.5, -2.0, 0.0, f64::MAX, 1e-300];
    let bytes: Vec<u8> = sum.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(sum_hash(&sum), hash_hex(&bytes));
    assert_eq!(sum_hash(&[]), hash_hex(&[]));
}
