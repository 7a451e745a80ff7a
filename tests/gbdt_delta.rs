//! Per-level model deltas on the GBDT wire (issue 12, "smaller wire"), end to end on the
//! production engines in memory: the sans-IO `Coordinator` and three `Worker`s, driven
//! here message by message so a test can kill, restart or rejoin a participant, or restore
//! the coordinator from its checkpoint, between rounds.
//!
//! With three participants every neighbourhood has k = 2 and t = 2, so no round completes
//! without all three: a participant that is away or refuses holds the job up instead of
//! being left out, and every run that finishes has summed every participant's rows in every
//! round — the same model as an uninterrupted run, bit for bit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsilo_coordinator::engine::{Coordinator, Event, RoundSummary};
use fedsilo_crypto::keys::IdentityKey;
use fedsilo_crypto::msg::{ParticipantId, Roster};
use fedsilo_ml::gbdt::{GbdtInstruction, GbdtModel, GbdtParams};
use fedsilo_ml::table::Table;
use fedsilo_participant::worker::{Worker, WorkerEvent};
use fedsilo_task::job::ToParticipant;
use fedsilo_task::{Instruction, JobSpec, Learning, LocalData, ModelParams, ModelSpec, Task};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N: usize = 3;
const DATASET: &str = "synth";
const FEATURES: usize = 4;
const TREES: usize = 5;

/// How a round's instruction reached a participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// A boosting level (or leaf step) carrying the whole model so far.
    Full,
    /// A boosting level as a model delta.
    Delta,
    /// Any other step.
    Other,
}

fn form(i: &Instruction) -> Form {
    match i {
        Instruction::Gbdt { step, .. } => match step {
            GbdtInstruction::Level { .. } | GbdtInstruction::Leaves { .. } => Form::Full,
            GbdtInstruction::LevelDelta { .. } | GbdtInstruction::LeavesDelta { .. } => Form::Delta,
            _ => Form::Other,
        },
        _ => Form::Other,
    }
}

fn table(rows: usize, seed: u64) -> Table {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Array2::<f32>::zeros((rows, FEATURES));
    let mut y = Array2::<f32>::zeros((rows, 1));
    for r in 0..rows {
        let v: Vec<f32> = (0..FEATURES).map(|_| rng.random_range(-2.0..2.0)).collect();
        let logit =
            1.5 * f64::from(v[0]) - f64::from(v[1] * v[1]) + f64::from(u8::from(v[2] > 0.5));
        for (j, a) in v.iter().enumerate() {
            x[[r, j]] = *a;
        }
        y[[r, 0]] = f32::from(u8::from(rng.random_bool(1.0 / (1.0 + (-logit).exp()))));
    }
    Table {
        feature_names: (0..FEATURES).map(|j| format!("x{j}")).collect(),
        x,
        label_names: vec!["y".into()],
        labels: y,
        ids: (0..rows).map(|r| r.to_string()).collect(),
    }
}

fn seed(label: &str, i: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&i.to_le_bytes());
    s[8..8 + label.len()].copy_from_slice(label.as_bytes());
    s
}

fn spec() -> JobSpec {
    JobSpec {
        job_id: "gbdt-delta".into(),
        dataset: DATASET.into(),
        task: Task::Risk,
        model: ModelSpec::Gbdt(GbdtParams {
            n_trees: TREES,
            max_depth: 3,
            max_leaves: 8,
            max_bins: 16,
            fine_bins: 256,
            ..GbdtParams::default()
        }),
        features: Vec::new(),
        labels: Vec::new(),
        rounds: 1,
        min_participants: N,
        threshold: None,
        neighbours: None,
        learning: Learning::default(),
        dp: None,
        eval_every: 1,
        hist_bins: 100,
        seed: 1,
        phase_timeout_ms: 5_000,
        max_participants: 1000,
        absence_patience_ms: fedsilo_task::DEFAULT_ABSENCE_PATIENCE_MS,
    }
}

enum Next {
    Round(Box<RoundSummary>),
    Finished,
}

/// Three participants and a coordinator in memory, on a virtual clock.
struct Fed {
    coordinator: Coordinator,
    workers: Vec<Worker>,
    keys: Vec<Arc<IdentityKey>>,
    roster: Roster,
    names: BTreeMap<ParticipantId, String>,
    locals: Vec<LocalData>,
    job: String,
    base: Instant,
    skipped: Duration,
    /// A participant whose process is down: it is not seen and messages to it are lost.
    dead: Option<ParticipantId>,
    /// Every `RoundStart` delivered: (SecAgg round, participant, form, encoded bytes).
    starts: Vec<(u64, ParticipantId, Form, usize)>,
    declined: Vec<(ParticipantId, String)>,
    checkpoint: Vec<u8>,
    /// Round summaries not yet returned by `next`, and whether the job has finished.
    pending: std::collections::VecDeque<Box<RoundSummary>>,
    finished: bool,
}

impl Fed {
    fn new() -> Self {
        let mut roster = Roster::new();
        let mut keys = Vec::new();
        let mut names = BTreeMap::new();
        for i in 0..N as u64 {
            let k = Arc::new(IdentityKey::from_seed(seed("identity", i)).unwrap());
            roster.insert(i as ParticipantId, k.public_key());
            names.insert(i as ParticipantId, format!("bank-{i}"));
            keys.push(k);
        }
        let locals: Vec<LocalData> = (0..N as u64)
            .map(|i| LocalData {
                train: table(300 + 50 * i as usize, 2 * i),
                holdout: table(100, 2 * i + 1),
            })
            .collect();
        let coordinator = Coordinator::new(roster.clone(), names.clone(), seed("coordinator", 0));
        let mut fed = Fed {
            coordinator,
            workers: Vec::new(),
            keys,
            roster,
            names,
            locals,
            job: String::new(),
            base: Instant::now(),
            skipped: Duration::ZERO,
            dead: None,
            starts: Vec::new(),
            declined: Vec::new(),
            checkpoint: Vec::new(),
            pending: std::collections::VecDeque::new(),
            finished: false,
        };
        fed.workers = (0..N as ParticipantId).map(|p| fed.worker(p, 0)).collect();
        let features = fed.locals[0].train.feature_names.clone();
        let labels = fed.locals[0].train.label_names.clone();
        let now = fed.now();
        fed.job = fed
            .coordinator
            .launch(now, spec(), features, labels)
            .unwrap();
        for p in 0..N as ParticipantId {
            fed.join(p);
        }
        fed
    }

    fn now(&self) -> Instant {
        self.base + self.base.elapsed() + self.skipped
    }

    /// A fresh worker process for participant `p` (its `incarnation` seeds its CSPRNG).
    fn worker(&self, p: ParticipantId, incarnation: u64) -> Worker {
        let datasets = BTreeMap::from([(DATASET.to_string(), self.locals[p as usize].clone())]);
        Worker::new(
            p,
            self.keys[p as usize].clone(),
            Arc::new(self.roster.clone()),
            datasets,
            seed("worker", incarnation << 8 | u64::from(p)),
        )
    }

    fn join(&mut self, p: ParticipantId) {
        let now = self.now();
        self.coordinator
            .handle_join(now, p, std::slice::from_ref(&self.job))
            .unwrap();
    }

    /// Participant `p`'s process is replaced by a fresh one (its boosting state lost).
    fn restart(&mut self, p: ParticipantId, incarnation: u64) {
        self.workers[p as usize] = self.worker(p, incarnation);
        self.dead = None;
    }

    /// The coordinator is killed and restored from its last checkpoint; everyone rejoins.
    fn restore_coordinator(&mut self) {
        let now = self.now();
        self.coordinator = Coordinator::new(
            self.roster.clone(),
            self.names.clone(),
            seed("coordinator", 1),
        );
        let checkpoint = self.checkpoint.clone();
        self.coordinator
            .restore(now, &self.job, &checkpoint)
            .unwrap();
        for p in 0..N as ParticipantId {
            self.join(p);
        }
    }

    /// Takes the coordinator's events: round summaries queue up, checkpoints are kept.
    fn drain_events(&mut self) {
        while let Some(ev) = self.coordinator.poll_event() {
            match ev {
                Event::Round(s) => self.pending.push_back(s),
                Event::Checkpoint { state, .. } => self.checkpoint = state,
                Event::JobFinished { .. } => self.finished = true,
                _ => {}
            }
        }
    }

    /// Runs until the next round summary or the end of the job. Delivery stops as soon as
    /// a round completes, so that a test can kill, restart or restore between rounds; what
    /// the coordinator queued for the next round stays queued until then.
    fn next(&mut self) -> Next {
        loop {
            if let Some(s) = self.pending.pop_front() {
                return Next::Round(s);
            }
            if self.finished {
                return Next::Finished;
            }
            let now = self.now();
            for p in 0..N as ParticipantId {
                if self.dead != Some(p) {
                    self.coordinator.handle_seen(now, p);
                }
            }
            let mut moved = false;
            while let Some((to, m)) = self.coordinator.poll_transmit() {
                if self.dead == Some(to) {
                    continue;
                }
                moved = true;
                if let ToParticipant::RoundStart(s) = &m {
                    let bytes = fedsilo_proto::convert::encoded_len(s);
                    self.starts
                        .push((s.config.ctx.round, to, form(&s.instruction), bytes));
                }
                let w = &mut self.workers[to as usize];
                let _ = w.handle_message(m);
                while let Some(ev) = w.poll_event() {
                    if let WorkerEvent::Declined { reason, .. } = ev {
                        self.declined.push((to, reason));
                    }
                }
                let outs: Vec<_> = std::iter::from_fn(|| w.poll_transmit()).collect();
                for out in outs {
                    let now = self.now();
                    let _ = self.coordinator.handle_message(now, to, out);
                }
                self.drain_events();
                if !self.pending.is_empty() || self.finished {
                    break;
                }
            }
            self.drain_events();
            if moved || !self.pending.is_empty() || self.finished {
                continue;
            }
            let deadline = self
                .coordinator
                .poll_timeout()
                .expect("the job is stalled: nothing to do and no timeout");
            let now = self.now();
            if deadline > now {
                self.skipped += deadline - now;
            }
            let now = self.now();
            self.coordinator.handle_timeout(now);
            self.drain_events();
        }
    }

    /// Runs the job to its end; the rounds it ran.
    fn finish(&mut self) -> Vec<RoundSummary> {
        let mut rounds = Vec::new();
        while let Next::Round(s) = self.next() {
            rounds.push(*s);
        }
        rounds
    }

    fn model(&self) -> GbdtModel {
        let plan = self.coordinator.plan(&self.job).unwrap();
        assert!(plan.is_done());
        match plan.model().map(|m| &m.params) {
            Some(ModelParams::Gbdt { model }) => model.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// Runs until `levels` boosting level rounds have completed.
    fn run_levels(&mut self, levels: usize) -> Vec<RoundSummary> {
        let mut rounds = Vec::new();
        while rounds
            .iter()
            .filter(|r: &&RoundSummary| {
                r.purpose == fedsilo_task::Purpose::TreeLevel && r.outcome == "ok"
            })
            .count()
            < levels
        {
            match self.next() {
                Next::Round(s) => rounds.push(*s),
                Next::Finished => panic!("the job finished early"),
            }
        }
        rounds
    }

    /// The forms of the round starts of SecAgg round `round`, by participant.
    fn forms(&self, round: u64) -> Vec<(ParticipantId, Form)> {
        self.starts
            .iter()
            .filter(|s| s.0 == round)
            .map(|s| (s.1, s.2))
            .collect()
    }
}

fn uninterrupted() -> (GbdtModel, Fed) {
    let mut fed = Fed::new();
    let rounds = fed.finish();
    assert!(rounds.iter().all(|r| r.outcome == "ok"), "{rounds:?}");
    (fed.model(), fed)
}

/// Uninterrupted: the job's first level goes whole, every later level as a delta, and a
/// delta round's instruction is a fraction of the full one's and does not grow with the
/// trees while the full form would.
#[test]
fn levels_after_the_first_go_as_deltas_and_do_not_grow_with_the_trees() {
    let (model, fed) = uninterrupted();
    assert_eq!(model.trees.len(), TREES);
    let levels: Vec<&(u64, ParticipantId, Form, usize)> =
        fed.starts.iter().filter(|s| s.2 != Form::Other).collect();
    assert_eq!(levels.iter().filter(|s| s.2 == Form::Full).count(), N);
    let first = levels.iter().map(|s| s.0).min().unwrap();
    assert!(levels.iter().all(|s| (s.2 == Form::Full) == (s.0 == first)));
    let full = levels[0].3;
    let deltas: Vec<usize> = levels.iter().skip(N).map(|s| s.3).collect();
    let largest = *deltas.iter().max().unwrap();
    // (With 4 features and 16 bins the first full instruction, bin mapper included, is
    // about as small as a delta with its two digests: what matters is that deltas do not
    // grow, while whole instructions grow by a tree's nodes per tree —
    // proto/tests/gbdt_wire.rs measures both forms on a realistic shape.)
    eprintln!("largest delta {largest} B, first full {full} B");
    // The last tree's deltas are no larger than the first tree's (a tree's worth of nodes).
    let per_tree = deltas.len() / TREES;
    let first_tree = deltas[..per_tree].iter().max().unwrap();
    let last_tree = deltas[deltas.len() - per_tree..].iter().max().unwrap();
    assert!(
        *last_tree <= first_tree + first_tree / 2,
        "last tree's deltas {last_tree} B, first tree's {first_tree} B"
    );
}

/// A participant killed after a level round (the next round's delta lost with it) and
/// restarted with no boosting state: the round without it fails for absence (it cannot
/// complete without all three), its join makes the retry go whole to everyone, the deltas
/// resume after it, and the job ends with exactly the uninterrupted model.
#[test]
fn a_participant_restarted_mid_job_rejoins_and_the_model_is_the_uninterrupted_one() {
    let (want, _) = uninterrupted();
    let mut fed = Fed::new();
    fed.run_levels(7);
    fed.dead = Some(1);
    // The round started for it in its absence fails.
    let failed = match fed.next() {
        Next::Round(s) => s,
        Next::Finished => panic!("finished without bank-1"),
    };
    assert_ne!(failed.outcome, "ok", "{failed:?}");
    assert!(fed
        .forms(failed.secagg_round)
        .iter()
        .all(|(_, f)| *f == Form::Delta));
    fed.restart(1, 1);
    fed.join(1);
    // The retry the coordinator queued before the rejoin is a delta: the fresh process
    // declines it (it holds no model state), and the retry after that goes whole.
    let mut tries = 0;
    let back = loop {
        match fed.next() {
            Next::Round(s) if s.outcome == "ok" => break s,
            Next::Round(s) => {
                tries += 1;
                assert!(tries < 3, "no round completed after the rejoin: {s:?}");
                assert!(
                    fed.declined.iter().any(|(p, _)| *p == 1),
                    "a failed round after the rejoin without bank-1 declining: {s:?}"
                );
            }
            Next::Finished => panic!("finished early"),
        }
    };
    assert_eq!(back.outcome, "ok", "{back:?}");
    assert_eq!(back.survivors.len(), N);
    assert_eq!(
        fed.forms(back.secagg_round),
        (0..N as ParticipantId)
            .map(|p| (p, Form::Full))
            .collect::<Vec<_>>(),
        "the round after the rejoin goes whole"
    );
    let rest = fed.finish();
    assert!(rest.iter().all(|r| r.outcome == "ok"), "{rest:?}");
    let after: Vec<Form> = fed
        .starts
        .iter()
        .filter(|s| s.0 > back.secagg_round && s.2 != Form::Other)
        .map(|s| s.2)
        .collect();
    assert!(!after.is_empty() && after.iter().all(|f| *f == Form::Delta));
    assert_eq!(fed.model(), want);
}

/// A participant restarted between two rounds faster than the coordinator notices (no join,
/// no absence): the delta queued for it reaches the fresh process, which refuses it by name
/// (it holds no model state) instead of computing on a wrong model; the round fails, its
/// retry goes whole, and the job still ends with the uninterrupted model.
#[test]
fn a_delta_reaching_a_participant_without_its_base_is_refused_by_name() {
    let (want, _) = uninterrupted();
    let mut fed = Fed::new();
    fed.run_levels(4);
    fed.restart(2, 1);
    let refused = match fed.next() {
        Next::Round(s) => s,
        Next::Finished => panic!("finished early"),
    };
    assert_ne!(refused.outcome, "ok", "{refused:?}");
    assert_eq!(fed.declined.len(), 1, "{:?}", fed.declined);
    let (who, why) = &fed.declined[0];
    assert_eq!(*who, 2);
    assert!(
        why.contains("model delta builds on state") && why.contains("holds no model state"),
        "{why}"
    );
    let retry = match fed.next() {
        Next::Round(s) => s,
        Next::Finished => panic!("finished early"),
    };
    assert_eq!(retry.outcome, "ok", "{retry:?}");
    assert_eq!(retry.step, refused.step, "the same step, retried");
    assert!(fed
        .forms(retry.secagg_round)
        .iter()
        .all(|(_, f)| *f == Form::Full));
    let rest = fed.finish();
    assert!(rest.iter().all(|r| r.outcome == "ok"), "{rest:?}");
    assert_eq!(fed.model(), want);
}

/// A coordinator killed mid-job and restored from its checkpoint does not know who holds
/// which state: its first level goes whole (participants' kept state is replaced by the same
/// one), then deltas again, and the job ends with the uninterrupted model.
#[test]
fn a_restored_coordinator_sends_its_first_level_whole() {
    let (want, _) = uninterrupted();
    let mut fed = Fed::new();
    fed.run_levels(6);
    fed.restore_coordinator();
    let first = match fed.next() {
        Next::Round(s) => s,
        Next::Finished => panic!("finished early"),
    };
    assert_eq!(first.outcome, "ok", "{first:?}");
    assert!(fed
        .forms(first.secagg_round)
        .iter()
        .all(|(_, f)| *f == Form::Full));
    let rest = fed.finish();
    assert!(rest.iter().all(|r| r.outcome == "ok"), "{rest:?}");
    assert!(fed
        .starts
        .iter()
        .any(|s| s.0 > first.secagg_round && s.2 == Form::Delta));
    assert_eq!(fed.model(), want);
}
