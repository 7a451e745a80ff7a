//! A coordinator cannot crash a participant, end to end against the real binary.
//!
//! The test runs a hostile coordinator: a small tonic `Federation` server written here (it
//! is an adversary, not a copy of ours) that serves mutual TLS with the federation's
//! coordinator certificate from `fedsilo keygen`. It admits `fedsilo participant join` to a
//! job and then sends it one malformed round after another — a coefficient vector of the
//! wrong length, a standardiser too short, ±∞ ranges, a NaN coefficient, a characteristic
//! reading a column that does not exist, a tree splitting on an unknown feature, sizes that
//! would allocate without bound, an unknown column, a round whose length disagrees with its
//! instruction, a step with no op. Those the wire conversion refuses and those the
//! participant's check of the step refuses are declined alike. The participant must decline each one with a
//! reason naming the problem, keep polling, refuse secure-aggregation requests for rounds it
//! is not in, never panic, and exit cleanly when the job ends.
//!
//! A second test feeds `fedsilo score` model files with the same kinds of damage.

mod common;

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fedsilo_crypto::encoding::{FixedPoint, Modulus};
use fedsilo_crypto::msg::{
    ConsistencyRequest, RoundConfig, RoundContext, ServerMsg, ShareKeysRequest,
};
use fedsilo_ml::gbdt::{BinMapper, GbdtInstruction, GbdtModel, Node, Tree};
use fedsilo_ml::linear::{LinearParams, LocalTrainConfig};
use fedsilo_ml::mlp::{MlpParams, MlpSpec};
use fedsilo_ml::scorecard::ScorecardBins;
use fedsilo_participant::data::{load_csv, Schema};
use fedsilo_proto::pb;
use fedsilo_proto::pb::federation_server::{Federation, FederationServer};
use fedsilo_proto::roster::Roster;
use fedsilo_proto::tls::server_tls_config;
use fedsilo_task::job::{RoundStart, ToCoordinator, ToParticipant};
use fedsilo_task::{Instruction, JobData, ModelParams, Standardizer, TrainedModel};
use serde_json::json;
use tonic::{Request, Response, Status};

const JOB: &str = "hostile";

/// What the participant did with a round.
#[derive(Debug)]
enum Answer {
    Declined {
        round: u64,
        reason: String,
    },
    /// It took part (sent a secure-aggregation message): the step was not refused.
    Accepted {
        round: u64,
    },
}

struct State {
    /// Rounds not yet sent, in order.
    rounds: VecDeque<pb::ToParticipant>,
    /// A round was sent and its answer has not arrived.
    waiting: bool,
    job_end_sent: bool,
}

/// The hostile coordinator: one round at a time, the next once the previous is answered,
/// then the end of the job.
struct Hostile {
    me: u32,
    state: Arc<Mutex<State>>,
    answers: Mutex<mpsc::Sender<Answer>>,
}

#[tonic::async_trait]
impl Federation for Hostile {
    async fn join(&self, _: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        // Other fields may be added to the wire; the defaults are what an old coordinator sends.
        #[allow(clippy::needless_update)]
        Ok(Response::new(pb::JoinReply {
            participant_id: Some(self.me),
            job_ids: vec![JOB.into()],
            ..Default::default()
        }))
    }

    async fn heartbeat(
        &self,
        _: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        // As a coordinator that predates heartbeats: the node stops sending them.
        Err(Status::unimplemented("no heartbeats here"))
    }

    async fn poll(&self, _: Request<pb::PollRequest>) -> Result<Response<pb::PollReply>, Status> {
        let next: Vec<pb::ToParticipant> = {
            let mut s = self.state.lock().map_err(|_| Status::internal("lock"))?;
            if s.waiting {
                Vec::new()
            } else if let Some(m) = s.rounds.pop_front() {
                s.waiting = true;
                vec![m]
            } else if !s.job_end_sent {
                s.job_end_sent = true;
                // Secure-aggregation requests for a round the participant declined and for
                // a job it never joined, then the end of the job.
                let declined = RoundContext {
                    job_id: JOB.into(),
                    round: 0,
                };
                let stranger = RoundContext {
                    job_id: "never-joined".into(),
                    round: 3,
                };
                vec![
                    ToParticipant::SecAgg(ServerMsg::ConsistencyCheck(ConsistencyRequest {
                        ctx: declined,
                        survivors: vec![self.me],
                    }))
                    .into(),
                    ToParticipant::SecAgg(ServerMsg::ShareKeys(ShareKeysRequest {
                        ctx: stranger,
                        keys: Vec::new(),
                    }))
                    .into(),
                    ToParticipant::JobEnd {
                        job_id: JOB.into(),
                        state: fedsilo_task::job::JobState::Failed,
                        detail: "the hostile coordinator is done".into(),
                    }
                    .into(),
                ]
            } else {
                Vec::new()
            }
        };
        if next.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        #[allow(clippy::needless_update)]
        Ok(Response::new(pb::PollReply {
            messages: next.iter().map(pb::EncodedToParticipant::new).collect(),
            ..Default::default()
        }))
    }

    async fn submit(
        &self,
        req: Request<pb::ToCoordinator>,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        let m = ToCoordinator::try_from(req.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let answer = match m {
            ToCoordinator::Decline { ctx, reason } => Answer::Declined {
                round: ctx.round,
                reason,
            },
            ToCoordinator::SecAgg(c) => Answer::Accepted {
                round: c.ctx().round,
            },
            ToCoordinator::Psi(_)
            | ToCoordinator::VerticalRelay { .. }
            | ToCoordinator::PsiDone(_)
            | ToCoordinator::PsiFailed { .. }
            | ToCoordinator::PsiLost { .. }
            | ToCoordinator::VerticalProgress(_)
            | ToCoordinator::VerticalDone(_) => {
                return Err(Status::invalid_argument("no PSI job here"))
            }
        };
        self.state
            .lock()
            .map_err(|_| Status::internal("lock"))?
            .waiting = false;
        if let Ok(tx) = self.answers.lock() {
            let _ = tx.send(answer);
        }
        Ok(Response::new(pb::SubmitReply::default()))
    }
}

/// bank-a's columns, as its node loads them.
fn local_columns(fed: &TestFed) -> (Vec<String>, Vec<String>) {
    let schema = Schema::from_toml_file(&fed.path("schema.toml")).expect("schema");
    let t = load_csv(&fed.path("bank-a.csv"), &schema).expect("csv");
    (t.feature_names, t.label_names)
}

fn lr_model(features: &[String], labels: &[String]) -> TrainedModel {
    let f = features.len();
    TrainedModel {
        features: features.to_vec(),
        labels: labels.to_vec(),
        standardizer: Standardizer {
            mean: vec![0.0; f],
            std: vec![1.0; f],
            missing_rate: vec![0.0; f],
        },
        params: ModelParams::LogisticRegression {
            per_label: vec![LinearParams::zeros(f)],
        },
    }
}

fn train(data: &JobData, model: TrainedModel) -> Instruction {
    Instruction::Train {
        data: data.clone(),
        model,
        local: LocalTrainConfig {
            epochs: 1,
            learning_rate: 0.1,
            batch_size: 64,
            l2: 0.0,
            pos_weight: 1.0,
            prox_mu: 0.0,
        },
        seed: 1,
        noise: None,
    }
}

fn wire(i: &Instruction) -> pb::Instruction {
    pb::Instruction::from(i)
}

/// The model inside a wire train step.
fn wire_model(i: &mut pb::Instruction) -> &mut pb::TrainedModel {
    match i.body.as_mut() {
        Some(pb::instruction::Body::Train(t)) => t.model.as_mut().expect("model"),
        other => panic!("not a train step: {other:?}"),
    }
}

/// The hostile rounds: (typed instruction as the wire carries it, vector length the round
/// announces, what the decline must name). Some are refused by the wire conversion (the
/// decline then reads "unreadable instruction: <field path>: ..."), the others by the
/// participant's check of the step.
fn hostile_steps(features: &[String], labels: &[String]) -> Vec<(pb::Instruction, usize, String)> {
    let f = features.len();
    let data = JobData {
        dataset: "data".into(),
        features: features.to_vec(),
        labels: labels.to_vec(),
    };
    // An honest train step is f + 1 parameters, + n and the loss.
    let train_len = f + 3;
    let mut steps = Vec::new();
    let coef_path = "unreadable instruction: \
        round_start.step.train.model.params.logistic_regression.per_label[0].coef";

    // 1. A coefficient vector one short (refused on the wire).
    let mut m = lr_model(features, labels);
    if let ModelParams::LogisticRegression { per_label } = &mut m.params {
        per_label[0].coef.pop();
    }
    steps.push((
        wire(&train(&data, m)),
        train_len,
        format!("{coef_path}: expected {f} values, got {}", f - 1),
    ));

    // 2. A standardiser with one mean too few.
    let mut m = lr_model(features, labels);
    m.standardizer.mean.pop();
    steps.push((
        wire(&train(&data, m)),
        train_len,
        format!("standardizer mean: expected {f}, got {}", f - 1),
    ));

    // 3. An oversized coefficient vector (a million entries).
    let mut m = lr_model(features, labels);
    if let ModelParams::LogisticRegression { per_label } = &mut m.params {
        per_label[0].coef = vec![0.0; 1_000_000];
    }
    steps.push((
        wire(&train(&data, m)),
        train_len,
        format!("{coef_path}: expected {f} values, got 1000000"),
    ));

    // 4. A NaN coefficient.
    let mut v = wire(&train(&data, lr_model(features, labels)));
    if let Some(pb::model_params::Body::LogisticRegression(l)) = wire_model(&mut v)
        .params
        .as_mut()
        .and_then(|p| p.body.as_mut())
    {
        l.per_label[0].coef[0] = f64::NAN;
    }
    steps.push((v, train_len, "coef: value 0 is not finite".into()));

    // 5. Histogram ranges that are ±∞.
    let v = wire(&Instruction::ScorecardHistogram {
        data: data.clone(),
        ranges: vec![(f32::NEG_INFINITY, f32::INFINITY); f],
        fine_bins: 16,
        noise: None,
    });
    steps.push((v, f * 17, "histogram ranges: value 0 is not finite".into()));

    // 6. A scorecard characteristic reading column 99 (an index out of range).
    let bins = ScorecardBins::from_cuts(features.to_vec(), vec![vec![0.5]; f]).expect("bins");
    let mut v = wire(&Instruction::ScorecardCounts {
        data: data.clone(),
        bins,
        noise: None,
    });
    if let Some(pb::instruction::Body::ScorecardCounts(c)) = v.body.as_mut() {
        let chars = &mut c.bins.as_mut().expect("bins").characteristics;
        if let Some(pb::characteristic::Body::Numeric(n)) = chars[0].body.as_mut() {
            n.column = 99;
        }
    }
    steps.push((
        v,
        f * 6,
        format!("characteristic 0 reads column 99, but there are {f} columns"),
    ));

    // 7. A tree splitting on feature 99.
    let mapper = BinMapper::from_cuts(vec![vec![0.5]; f], 8).expect("mapper");
    let tree = Tree {
        nodes: vec![
            Node::Split {
                feature: 99,
                bin: 0,
                threshold: 0.5,
                default_left: true,
                left: 1,
                right: 2,
                gain: 1.0,
            },
            Node::Open {
                sum_grad: 0.0,
                sum_hess: 1.0,
                depth: 1,
            },
            Node::Open {
                sum_grad: 0.0,
                sum_hess: 1.0,
                depth: 1,
            },
        ],
    };
    let level = Instruction::Gbdt {
        data: data.clone(),
        step: GbdtInstruction::Level {
            model: GbdtModel {
                base_score: 0.0,
                bin_mapper: mapper,
                trees: Vec::new(),
            },
            tree,
            nodes: vec![1],
        },
        noise: None,
    };
    steps.push((
        wire(&level),
        f * 9 * 2,
        "node 0 splits on unknown feature 99".into(),
    ));

    // 8. An evaluation asking for 10^12 histogram bins (an allocation without bound).
    let eval = Instruction::Evaluate {
        data: data.clone(),
        model: lr_model(features, labels),
        bins: 1_000_000_000_000,
    };
    steps.push((
        wire(&eval),
        1000,
        "histogram bins: 1000000000000 is more than the 100000 a participant accepts".into(),
    ));

    // 9. An MLP with a hidden layer of a million units.
    let mut m = lr_model(features, labels);
    m.params = ModelParams::Mlp {
        per_label: vec![MlpParams {
            spec: MlpSpec {
                inputs: f,
                hidden: vec![1 << 20],
            },
            flat: vec![0.0; 8],
        }],
    };
    steps.push((
        wire(&train(&data, m)),
        10,
        "MLP hidden units = 1048576 is outside 1..=1024".into(),
    ));

    // 10. A column this bank does not have.
    let scale = Instruction::Scale {
        data: JobData {
            features: vec!["NoSuchColumn".into()],
            ..data.clone()
        },
        noise: None,
    };
    steps.push((
        wire(&scale),
        22,
        "feature column 'NoSuchColumn' is not in the local dataset".into(),
    ));

    // 11. A well-formed step in a round that announces another length.
    let scale = Instruction::Scale {
        data: data.clone(),
        noise: None,
    };
    let honest = 1 + labels.len() + f * 21;
    steps.push((
        wire(&scale),
        honest + 1,
        format!(
            "the round carries {} values but the instruction asks for {honest}",
            honest + 1
        ),
    ));

    // 12. A step with no op at all.
    steps.push((
        pb::Instruction { body: None },
        honest,
        "unreadable instruction: round_start.step: missing oneof body".into(),
    ));
    steps
}

fn round_start(
    round: u64,
    participants: Vec<u32>,
    instruction: pb::Instruction,
    len: usize,
) -> pb::ToParticipant {
    let start = RoundStart {
        config: RoundConfig {
            ctx: RoundContext {
                job_id: JOB.into(),
                round,
            },
            participants,
            neighbours: 1,
            threshold: 1,
            vector_len: len,
            modulus: Modulus::Pow64,
            graph_seed: [7; 32],
        },
        encoding: FixedPoint::new(Modulus::Pow64, 16, 1e6, 10).expect("encoding"),
        // Replaced by the hostile step below, on the wire.
        instruction: Instruction::Scale {
            data: JobData {
                dataset: "data".into(),
                features: Vec::new(),
                labels: Vec::new(),
            },
            noise: None,
        },
        phase_timeout_ms: 5_000,
    };
    let mut m: pb::ToParticipant = ToParticipant::RoundStart(std::sync::Arc::new(start)).into();
    if let Some(pb::to_participant::Body::RoundStart(rs)) = m.body.as_mut() {
        rs.step = Some(instruction);
    }
    m
}

#[test]
fn a_hostile_coordinator_gets_named_declines_and_no_panic() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b"]);
    let roster = Roster::load(&fed.path("roster.toml")).expect("roster");
    let me = roster.participant_id("bank-a").expect("bank-a");
    let other = roster.participant_id("bank-b").expect("bank-b");
    let mut ids = vec![me, other];
    ids.sort_unstable();
    let (features, labels) = local_columns(&fed);
    let steps = hostile_steps(&features, &labels);
    let rounds: VecDeque<pb::ToParticipant> = steps
        .iter()
        .enumerate()
        .map(|(r, (instr, len, _))| round_start(r as u64, ids.clone(), instr.clone(), *len))
        .collect();

    // The hostile coordinator, on its own runtime in a thread, with keygen's server files.
    let (tx, rx) = mpsc::channel();
    let tls = server_tls_config(&fedsilo_proto::tls::TlsFiles {
        ca_cert: fed.path("ca.pem"),
        cert: fed.path("coordinator.pem"),
        key: fed.path("coordinator.key"),
    })
    .expect("server tls");
    let service = Hostile {
        me,
        state: Arc::new(Mutex::new(State {
            rounds,
            waiting: false,
            job_end_sent: false,
        })),
        answers: Mutex::new(tx),
    };
    let port = fed.port;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            tonic::transport::Server::builder()
                .tls_config(tls)
                .expect("tls")
                .add_service(FederationServer::new(service))
                .serve_with_shutdown(std::net::SocketAddr::from(([127, 0, 0, 1], port)), async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("hostile server");
        });
    });
    fed.wait_listening();

    let mut bank = fed.participant("bank-a");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answers = Vec::new();
    while answers.len() < steps.len() {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(a) => answers.push(a),
            Err(_) => {
                let exited = bank.child.try_wait().ok().flatten();
                if exited.is_some() || Instant::now() > deadline {
                    panic!(
                        "only {} of {} rounds answered (participant exit: {exited:?}); log:\n{}",
                        answers.len(),
                        steps.len(),
                        bank.log_text()
                    );
                }
            }
        }
    }
    let status = bank.wait_exit(Duration::from_secs(30));
    let log = bank.log_text();
    let _ = stop_tx.send(());
    let _ = server.join();

    assert!(
        !log.contains("panicked"),
        "the participant panicked:\n{log}"
    );
    assert!(status.success(), "participant exit {status:?}:\n{log}");
    for (r, ((_, _, expected), answer)) in steps.iter().zip(&answers).enumerate() {
        match answer {
            Answer::Declined { round, reason } => {
                assert_eq!(*round, r as u64, "answers out of order: {answers:?}");
                assert!(
                    reason.contains(expected.as_str()),
                    "round {r}: the decline should name {expected:?}, it says {reason:?}"
                );
            }
            Answer::Accepted { round } => {
                panic!("round {round} (expected decline: {expected}) was accepted:\n{log}")
            }
        }
    }
    // The node logged every decline, refused the stray secure-aggregation requests, saw the
    // end of the job, and kept serving in between.
    assert_eq!(log.matches("declined a step").count(), steps.len(), "{log}");
    assert_eq!(log.matches("message refused").count(), 2, "{log}");
    assert!(log.contains("job ended"), "{log}");
}

/// `fedsilo score` refuses damaged model files, naming the file and the problem; no panic.
#[test]
fn score_refuses_damaged_model_files_by_name() {
    let fed = TestFed::credit_by_income(&["bank-a"]);
    let (features, labels) = local_columns(&fed);
    let f = features.len();
    let model = lr_model(&features, &labels);
    let artifact = json!({
        "format": "fedsilo-model/1",
        "job_id": "j",
        "task": "risk",
        "model_kind": "logistic_regression",
        "complete": true,
        "rounds": 1,
        "coefficients": [],
        "metrics": [],
        "round_sha256": "00",
        "model_sha256": "00",
        "model": model,
    });
    let score = |name: &str, text: &str| {
        let path = fed.path(name);
        std::fs::write(&path, text).expect("write model");
        let out = std::process::Command::new(bin())
            .args([
                "score",
                "--model",
                path.to_str().unwrap_or_default(),
                "--data",
                fed.path("bank-a.csv").to_str().unwrap_or_default(),
                "--schema",
                fed.path("schema.toml").to_str().unwrap_or_default(),
                "--out",
                fed.path(&format!("{name}.csv"))
                    .to_str()
                    .unwrap_or_default(),
            ])
            .output()
            .expect("run fedsilo score");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The intact file scores.
    let (ok, err) = score("good.json", &artifact.to_string());
    assert!(ok.success(), "{err}");

    let mut short = artifact.clone();
    short["model"]["params"]["per_label"][0]["coef"] = json!(vec![0.0; f - 1]);
    let mut per_label = artifact.clone();
    per_label["model"]["params"]["per_label"] = json!([]);
    let mut zero_std = artifact.clone();
    zero_std["model"]["standardizer"]["std"][0] = json!(0.0);
    let garbage: String = (0..300u32)
        .map(|i| char::from(b' ' + (i * 37 % 90) as u8))
        .collect();
    for (name, text, expected) in [
        (
            "short.json",
            short.to_string(),
            format!("coef: expected {f}, got {}", f - 1),
        ),
        (
            "labels.json",
            per_label.to_string(),
            "per-label models: expected 1, got 0".into(),
        ),
        (
            "std.json",
            zero_std.to_string(),
            "standardizer std = 0 is outside values > 0".into(),
        ),
        ("garbage.json", garbage, "not a fedsilo model".into()),
    ] {
        let (status, err) = score(name, &text);
        assert!(!status.success(), "{name} was scored");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(
            err.contains(name),
            "{name}: the error should name the file: {err}"
        );
        assert!(
            err.contains(&expected),
            "{name}: expected {expected:?} in {err}"
        );
    }
}
