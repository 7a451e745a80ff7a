//! Wire values the Rust types cannot hold are refused, naming the field — never a panic.

mod common;

use fedsilo_crypto::msg::ClientMsg;
use fedsilo_proto::convert::{Problem, WireError};
use fedsilo_proto::pb;
use fedsilo_task::job::{ToCoordinator, ToParticipant};
use prost::Message;

fn wire_c(m: ClientMsg) -> pb::ToCoordinator {
    ToCoordinator::SecAgg(m).into()
}

fn client_body(m: &mut pb::ToCoordinator) -> &mut pb::client_msg::Body {
    match m.body.as_mut() {
        Some(pb::to_coordinator::Body::Secagg(c)) => c.body.as_mut().expect("body"),
        other => panic!("not a secagg message: {other:?}"),
    }
}

fn refuse_c(m: pb::ToCoordinator) -> WireError {
    // Also through bytes: what the server really receives.
    let m = pb::ToCoordinator::decode(m.encode_to_vec().as_slice()).expect("valid protobuf");
    match ToCoordinator::try_from(m) {
        Ok(v) => panic!("accepted malformed message: {v:?}"),
        Err(e) => e,
    }
}

fn refuse_p(m: pb::ToParticipant) -> WireError {
    let m = pb::ToParticipant::decode(m.encode_to_vec().as_slice()).expect("valid protobuf");
    match ToParticipant::try_from(m) {
        Ok(v) => panic!("accepted malformed message: {v:?}"),
        Err(e) => e,
    }
}

#[test]
fn wrong_key_length_names_the_key() {
    let mut m = wire_c(ClientMsg::AdvertiseKeys(common::advertise(1)));
    let pb::client_msg::Body::AdvertiseKeys(a) = client_body(&mut m) else {
        unreachable!()
    };
    a.c_pk.pop();
    let e = refuse_c(m);
    assert_eq!(e.path, "secagg.advertise_keys.c_pk");
    assert_eq!(
        e.problem,
        Problem::WrongLength {
            expected: 32,
            got: 31
        }
    );
    assert_eq!(
        e.to_string(),
        "secagg.advertise_keys.c_pk: expected 32 bytes, got 31"
    );

    let mut m = wire_c(ClientMsg::AdvertiseKeys(common::advertise(1)));
    let pb::client_msg::Body::AdvertiseKeys(a) = client_body(&mut m) else {
        unreachable!()
    };
    a.self_mask_commitment.extend_from_slice(&[0; 8]);
    assert_eq!(
        refuse_c(m).to_string(),
        "secagg.advertise_keys.self_mask_commitment: expected 32 bytes, got 40"
    );
}

#[test]
fn key_in_a_repeated_field_names_the_index() {
    let mut m: pb::ToParticipant = ToParticipant::SecAgg(common::server_msgs().remove(0)).into();
    let Some(pb::to_participant::Body::Secagg(pb::ServerMsg {
        body: Some(pb::server_msg::Body::ShareKeys(req)),
    })) = m.body.as_mut()
    else {
        panic!("expected a share-keys request")
    };
    req.keys[2].s_pk.clear();
    assert_eq!(
        refuse_p(m).to_string(),
        "secagg.share_keys.keys[2].s_pk: expected 32 bytes, got 0"
    );
}

#[test]
fn ragged_ring_data_is_refused() {
    let mut m = wire_c(ClientMsg::MaskedInput(common::masked_u32(1_000_000)));
    let pb::client_msg::Body::MaskedInput(mi) = client_body(&mut m) else {
        unreachable!()
    };
    mi.data.push(0);
    let e = refuse_c(m);
    assert_eq!(
        e.to_string(),
        "secagg.masked_input.data: 4000001 bytes is not a multiple of 4"
    );

    // 12 bytes is 3 u32 elements but not a whole number of u64 elements.
    let mut m = wire_c(ClientMsg::MaskedInput(common::masked_u64(2)));
    let pb::client_msg::Body::MaskedInput(mi) = client_body(&mut m) else {
        unreachable!()
    };
    mi.data.truncate(12);
    assert_eq!(
        refuse_c(m).problem,
        Problem::RaggedRing {
            len: 12,
            element_bytes: 8
        }
    );
}

#[test]
fn missing_oneof_is_refused() {
    let e = refuse_c(pb::ToCoordinator { body: None });
    assert_eq!(e.to_string(), "missing oneof body");
    assert_eq!(e.problem, Problem::MissingOneof);

    let e = refuse_c(pb::ToCoordinator {
        body: Some(pb::to_coordinator::Body::Secagg(pb::ClientMsg {
            body: None,
        })),
    });
    assert_eq!(e.to_string(), "secagg: missing oneof body");

    let e = refuse_p(pb::ToParticipant {
        body: Some(pb::to_participant::Body::Secagg(pb::ServerMsg {
            body: None,
        })),
    });
    assert_eq!(e.to_string(), "secagg: missing oneof body");
    assert_eq!(
        refuse_p(pb::ToParticipant { body: None }).to_string(),
        "missing oneof body"
    );
}

#[test]
fn missing_sub_message_is_refused() {
    let e = refuse_c(pb::ToCoordinator {
        body: Some(pb::to_coordinator::Body::Decline(pb::Decline {
            ctx: None,
            reason: "no data".into(),
        })),
    });
    assert_eq!(e.to_string(), "decline.ctx: missing");

    let mut m: pb::ToParticipant = ToParticipant::RoundStart(common::round_start().into()).into();
    let Some(pb::to_participant::Body::RoundStart(rs)) = m.body.as_mut() else {
        unreachable!()
    };
    rs.encoding = None;
    assert_eq!(refuse_p(m).to_string(), "round_start.encoding: missing");
}

#[test]
fn unknown_and_unspecified_enum_values_are_refused() {
    let mut m = wire_c(ClientMsg::MaskedInput(common::masked_u32(4)));
    let pb::client_msg::Body::MaskedInput(mi) = client_body(&mut m) else {
        unreachable!()
    };
    mi.modulus = 7;
    let e = refuse_c(m);
    assert_eq!(e.path, "secagg.masked_input.modulus");
    assert_eq!(e.problem, Problem::UnknownEnum(7));
    assert_eq!(
        e.to_string(),
        "secagg.masked_input.modulus: unknown enum value 7"
    );

    let mut m = wire_c(ClientMsg::MaskedInput(common::masked_u32(4)));
    let pb::client_msg::Body::MaskedInput(mi) = client_body(&mut m) else {
        unreachable!()
    };
    mi.modulus = pb::Modulus::Unspecified as i32;
    assert_eq!(refuse_c(m).problem, Problem::Unspecified);

    let mut m = wire_c(ClientMsg::UnmaskShares(common::unmask_shares()));
    let pb::client_msg::Body::UnmaskShares(u) = client_body(&mut m) else {
        unreachable!()
    };
    u.shares[1].kind = 9;
    assert_eq!(
        refuse_c(m).to_string(),
        "secagg.unmask_shares.shares[1].kind: unknown enum value 9"
    );

    let mut m: pb::ToParticipant = ToParticipant::RoundStart(common::round_start().into()).into();
    let Some(pb::to_participant::Body::RoundStart(rs)) = m.body.as_mut() else {
        unreachable!()
    };
    rs.config.as_mut().expect("config").modulus = -1;
    assert_eq!(
        refuse_p(m).to_string(),
        "round_start.config.modulus: unknown enum value -1"
    );
}

#[test]
fn out_of_range_and_invalid_values_are_refused() {
    let mut m = wire_c(ClientMsg::UnmaskShares(common::unmask_shares()));
    let pb::client_msg::Body::UnmaskShares(u) = client_body(&mut m) else {
        unreachable!()
    };
    u.shares[0].share.as_mut().expect("share").x = 256;
    assert_eq!(
        refuse_c(m).to_string(),
        "secagg.unmask_shares.shares[0].share.x: 256 is out of range (max 255)"
    );

    let mut m: pb::ToParticipant = ToParticipant::RoundStart(common::round_start().into()).into();
    let Some(pb::to_participant::Body::RoundStart(rs)) = m.body.as_mut() else {
        unreachable!()
    };
    rs.config.as_mut().expect("config").graph_seed.truncate(16);
    assert_eq!(
        refuse_p(m).to_string(),
        "round_start.config.graph_seed: expected 32 bytes, got 16"
    );

    // An encoding whose sum could wrap the ring is refused, with FixedPoint's reason.
    let mut m: pb::ToParticipant = ToParticipant::RoundStart(common::round_start().into()).into();
    let Some(pb::to_participant::Body::RoundStart(rs)) = m.body.as_mut() else {
        unreachable!()
    };
    let enc = rs.encoding.as_mut().expect("encoding");
    enc.modulus = pb::Modulus::Pow32 as i32;
    enc.frac_bits = 40;
    let e = refuse_p(m);
    assert_eq!(e.path, "round_start.encoding");
    assert!(
        matches!(e.problem, Problem::Encoding(ref s) if s.to_string().contains("wrap")),
        "{e}"
    );
}

#[test]
fn garbage_bytes_never_panic() {
    // Arbitrary byte strings either fail to decode or convert to Ok/Err: no panic.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let good = pb::ToCoordinator::from(ToCoordinator::SecAgg(ClientMsg::UnmaskShares(
        common::unmask_shares(),
    )))
    .encode_to_vec();
    for _ in 0..5_000 {
        let mut bytes = good.clone();
        let flips = 1 + (next() % 4) as usize;
        for _ in 0..flips {
            let i = (next() as usize) % bytes.len();
            bytes[i] = next() as u8;
        }
        bytes.truncate((next() as usize) % (bytes.len() + 1));
        if let Ok(m) = pb::ToCoordinator::decode(bytes.as_slice()) {
            let _ = ToCoordinator::try_from(m);
        }
        if let Ok(m) = pb::ToParticipant::decode(bytes.as_slice()) {
            let _ = ToParticipant::try_from(m);
        }
    }
}

#[test]
fn client_message_signatures_must_be_64_bytes() {
    // Every client message: the signature field, by path, empty (an old client) or long.
    let cases: Vec<(ClientMsg, &str)> = vec![
        (
            ClientMsg::AdvertiseKeys(common::advertise(1)),
            "secagg.advertise_keys.signature",
        ),
        (
            common::client_msgs().remove(1),
            "secagg.share_keys.signature",
        ),
        (
            ClientMsg::MaskedInput(common::masked_u32(8)),
            "secagg.masked_input.signature",
        ),
        (
            common::client_msgs().remove(5),
            "secagg.consistency_signature.signature",
        ),
        (
            ClientMsg::UnmaskShares(common::unmask_shares()),
            "secagg.unmask_shares.signature",
        ),
    ];
    for (msg, path) in cases {
        for len in [0usize, 63, 65, 4096] {
            let mut m = wire_c(msg.clone());
            let sig = match client_body(&mut m) {
                pb::client_msg::Body::AdvertiseKeys(x) => &mut x.signature,
                pb::client_msg::Body::ShareKeys(x) => &mut x.signature,
                pb::client_msg::Body::MaskedInput(x) => &mut x.signature,
                pb::client_msg::Body::ConsistencySignature(x) => &mut x.signature,
                pb::client_msg::Body::UnmaskShares(x) => &mut x.signature,
            };
            sig.resize(len, 0xAB);
            let e = refuse_c(m);
            assert_eq!(e.path, path, "{e}");
            assert_eq!(
                e.problem,
                Problem::WrongLength {
                    expected: 64,
                    got: len
                }
            );
            assert_eq!(
                e.to_string(),
                format!("{path}: expected 64 bytes, got {len}")
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Job spec (LaunchJobRequest)
// ---------------------------------------------------------------------------

mod spec {
    use fedsilo_proto::convert::{launch_spec, LaunchSpecError, Problem};
    use fedsilo_proto::pb;
    use fedsilo_task::JobSpec;
    use prost::Message;

    /// A valid typed spec (logistic regression, everything else default).
    fn valid() -> pb::JobSpec {
        pb::JobSpec::from(&JobSpec::new("credit", 5))
    }

    fn refuse(s: pb::JobSpec) -> (String, Problem) {
        let req = pb::LaunchJobRequest {
            body: Some(pb::launch_job_request::Body::Spec(s)),
        };
        // Through bytes, as the coordinator receives it.
        let req = pb::LaunchJobRequest::decode(req.encode_to_vec().as_slice()).expect("decodes");
        match launch_spec(req) {
            Ok(v) => panic!("accepted a malformed spec: {v:?}"),
            Err(LaunchSpecError::Wire(e)) => {
                assert_eq!(e.to_string(), format!("{}: {}", e.path, e.problem));
                (e.path, e.problem)
            }
            Err(e) => panic!("not a wire error: {e}"),
        }
    }

    fn gbdt(p: pb::GbdtParams) -> Option<pb::ModelSpec> {
        Some(pb::ModelSpec {
            body: Some(pb::model_spec::Body::Gbdt(p)),
        })
    }

    #[test]
    fn the_valid_spec_is_accepted() {
        let req = pb::LaunchJobRequest {
            body: Some(pb::launch_job_request::Body::Spec(valid())),
        };
        assert_eq!(launch_spec(req).expect("valid"), JobSpec::new("credit", 5));
    }

    #[test]
    fn a_request_without_either_arm_names_spec() {
        let e = launch_spec(pb::LaunchJobRequest { body: None }).unwrap_err();
        assert_eq!(e.to_string(), "spec: missing");
    }

    /// A change to a valid spec.
    type Edit = fn(&mut pb::JobSpec);

    #[test]
    fn required_fields_absent_are_named() {
        let cases: Vec<(Edit, &str)> = vec![
            (|s| s.dataset = None, "spec.dataset"),
            (|s| s.rounds = None, "spec.rounds"),
            (
                |s| {
                    s.dp = Some(pb::DpSpec {
                        clip: Some(1.0),
                        noise_multiplier: Some(1.0),
                        ..Default::default()
                    })
                },
                "spec.dp.delta",
            ),
            (
                |s| {
                    s.learning = Some(pb::Learning {
                        server_optimizer: Some(pb::ServerOptimizer {
                            body: Some(pb::server_optimizer::Body::FedAvg(pb::FedAvg { lr: None })),
                        }),
                        ..Default::default()
                    })
                },
                "spec.learning.server_optimizer.fed_avg.lr",
            ),
            (
                |s| {
                    s.learning = Some(pb::Learning {
                        server_optimizer: Some(pb::ServerOptimizer {
                            body: Some(pb::server_optimizer::Body::FedYogi(
                                pb::AdaptiveOptimizer {
                                    lr: Some(0.1),
                                    beta1: Some(0.9),
                                    beta2: None,
                                    eps: Some(1e-3),
                                },
                            )),
                        }),
                        ..Default::default()
                    })
                },
                "spec.learning.server_optimizer.fed_yogi.beta2",
            ),
        ];
        for (edit, path) in cases {
            let mut s = valid();
            edit(&mut s);
            assert_eq!(refuse(s), (path.to_string(), Problem::Missing));
        }
    }

    #[test]
    fn empty_oneofs_are_named() {
        let mut s = valid();
        s.model = Some(pb::ModelSpec { body: None });
        assert_eq!(refuse(s), ("spec.model".to_string(), Problem::MissingOneof));

        let mut s = valid();
        s.learning = Some(pb::Learning {
            server_optimizer: Some(pb::ServerOptimizer { body: None }),
            ..Default::default()
        });
        assert_eq!(
            refuse(s),
            (
                "spec.learning.server_optimizer".to_string(),
                Problem::MissingOneof
            )
        );
    }

    #[test]
    fn bad_task_values_are_named() {
        let mut s = valid();
        s.task = Some(pb::Task::Unspecified as i32);
        assert_eq!(refuse(s), ("spec.task".to_string(), Problem::Unspecified));

        let mut s = valid();
        s.task = Some(9);
        assert_eq!(
            refuse(s),
            ("spec.task".to_string(), Problem::UnknownEnum(9))
        );
    }

    /// Counts that no `usize` can hold (only on a 32-bit target) are refused naming the
    /// field; on 64-bit they convert, and `JobSpec::validate` refuses the domain, naming it.
    #[test]
    fn out_of_domain_counts_are_refused_by_validate_naming_the_field() {
        let mut s = valid();
        s.model = gbdt(pb::GbdtParams {
            max_depth: Some(u64::MAX),
            ..Default::default()
        });
        let req = pb::LaunchJobRequest {
            body: Some(pb::launch_job_request::Body::Spec(s)),
        };
        match launch_spec(req) {
            Err(LaunchSpecError::Wire(e)) => {
                assert_eq!(e.path, "spec.model.gbdt.max_depth");
                assert!(matches!(e.problem, Problem::OutOfRange { .. }), "{e}");
            }
            Ok(spec) => {
                let e = spec.validate().expect_err("max_depth out of 1..=16");
                assert!(e.to_string().contains("max_depth"), "{e}");
            }
            Err(e) => panic!("not a wire error: {e}"),
        }
    }

    /// The JSON arm keeps its strict errors (unknown keys refused with a suggestion).
    #[test]
    fn the_json_arm_keeps_its_errors() {
        let req = pb::LaunchJobRequest {
            body: Some(pb::launch_job_request::Body::SpecJson(
                r#"{"dataset":"d","rounds":3,"dp":{"clip":1.0,"noise_multiplier":1.0,
                "delta":1e-5,"epsilon":2.0}}"#
                    .into(),
            )),
        };
        let e = launch_spec(req).unwrap_err();
        assert!(matches!(e, LaunchSpecError::Json(_)), "{e}");
        assert!(e.to_string().contains("unknown field `epsilon`"), "{e}");
    }
}

// ---------------------------------------------------------------------------
// Step instruction
// ---------------------------------------------------------------------------

mod instruction {
    use super::{common, refuse_p};
    use fedsilo_ml::gbdt::{
        BinMapper, GbdtInstruction, GbdtModel, Node, StateDelta, StateDigest, Tree,
    };
    use fedsilo_ml::scorecard::ScorecardBins;
    use fedsilo_proto::convert::Problem;
    use fedsilo_proto::pb;
    use fedsilo_task::job::ToParticipant;
    use fedsilo_task::{Instruction, JobData};

    /// The wire form of a RoundStart carrying `i`.
    fn wire(i: Instruction) -> pb::ToParticipant {
        let mut start = common::round_start();
        start.instruction = i;
        ToParticipant::RoundStart(start.into()).into()
    }

    fn step(m: &mut pb::ToParticipant) -> &mut pb::instruction::Body {
        match m.body.as_mut() {
            Some(pb::to_participant::Body::RoundStart(rs)) => rs
                .step
                .as_mut()
                .and_then(|s| s.body.as_mut())
                .expect("a step"),
            other => panic!("not a round start: {other:?}"),
        }
    }

    /// The model of the common train step.
    fn train_model(m: &mut pb::ToParticipant) -> &mut pb::TrainedModel {
        match step(m) {
            pb::instruction::Body::Train(t) => t.model.as_mut().expect("model"),
            other => panic!("not a train step: {other:?}"),
        }
    }

    fn data() -> JobData {
        JobData {
            dataset: "credit".into(),
            features: vec!["income".into(), "age".into()],
            labels: vec!["default".into()],
        }
    }

    /// A level step: a model with one finished stump on 2 features, a tree with one split
    /// and two open children, growing node 1.
    fn level() -> Instruction {
        let mapper = BinMapper::from_cuts(vec![vec![0.5], vec![1.0, 2.0]], 8).expect("mapper");
        let split = |left, right| Node::Split {
            feature: 1,
            bin: 1,
            threshold: 2.0,
            default_left: true,
            left,
            right,
            gain: 0.5,
        };
        let open = Node::Open {
            sum_grad: 1.0,
            sum_hess: 2.0,
            depth: 1,
        };
        Instruction::Gbdt {
            data: data(),
            step: GbdtInstruction::Level {
                model: GbdtModel {
                    base_score: -1.0,
                    bin_mapper: mapper,
                    trees: vec![Tree {
                        nodes: vec![
                            split(1, 2),
                            Node::Leaf { value: 0.1 },
                            Node::Leaf { value: -0.1 },
                        ],
                    }],
                },
                tree: Tree {
                    nodes: vec![split(1, 2), open.clone(), open],
                },
                nodes: vec![1, 2],
            },
            noise: None,
        }
    }

    fn level_body(m: &mut pb::ToParticipant) -> &mut pb::GbdtLevel {
        match step(m) {
            pb::instruction::Body::Gbdt(g) => match g.step.as_mut().and_then(|s| s.body.as_mut()) {
                Some(pb::gbdt_instruction::Body::Level(l)) => l,
                other => panic!("not a level: {other:?}"),
            },
            other => panic!("not a gbdt step: {other:?}"),
        }
    }

    fn split_of(n: &mut pb::TreeNode) -> &mut pb::SplitNode {
        match n.body.as_mut() {
            Some(pb::tree_node::Body::Split(s)) => s,
            other => panic!("not a split: {other:?}"),
        }
    }

    #[test]
    fn the_valid_samples_convert() {
        for i in [common::train_instruction(), level()] {
            let m = wire(i.clone());
            match ToParticipant::try_from(m) {
                Ok(ToParticipant::RoundStart(s)) => assert_eq!(s.instruction, i),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn missing_step_and_sub_messages_are_named() {
        let mut m = wire(common::train_instruction());
        let Some(pb::to_participant::Body::RoundStart(rs)) = m.body.as_mut() else {
            unreachable!()
        };
        rs.step = None;
        assert_eq!(refuse_p(m).to_string(), "round_start.step: missing");

        let mut m = wire(common::train_instruction());
        let Some(pb::to_participant::Body::RoundStart(rs)) = m.body.as_mut() else {
            unreachable!()
        };
        rs.step = Some(pb::Instruction { body: None });
        assert_eq!(
            refuse_p(m).to_string(),
            "round_start.step: missing oneof body"
        );

        let mut m = wire(common::train_instruction());
        if let pb::instruction::Body::Train(t) = step(&mut m) {
            t.local = None;
        }
        assert_eq!(
            refuse_p(m).to_string(),
            "round_start.step.train.local: missing"
        );

        let mut m = wire(common::train_instruction());
        train_model(&mut m).params = Some(pb::ModelParams { body: None });
        assert_eq!(
            refuse_p(m).to_string(),
            "round_start.step.train.model.params: missing oneof body"
        );

        let mut m = wire(common::train_instruction());
        train_model(&mut m).standardizer = None;
        assert_eq!(
            refuse_p(m).to_string(),
            "round_start.step.train.model.standardizer: missing"
        );

        let mut m = wire(level());
        level_body(&mut m).tree = None;
        assert_eq!(
            refuse_p(m).to_string(),
            "round_start.step.gbdt.step.level.tree: missing"
        );

        let mut m = wire(level());
        level_body(&mut m).tree.as_mut().expect("tree").nodes[2].body = None;
        assert_eq!(
            refuse_p(m).to_string(),
            "round_start.step.gbdt.step.level.tree.nodes[2]: missing oneof body"
        );
    }

    #[test]
    fn counts_that_disagree_are_refused() {
        // Logistic weights: one per feature of the model.
        let mut m = wire(common::train_instruction());
        let Some(pb::model_params::Body::LogisticRegression(l)) = train_model(&mut m)
            .params
            .as_mut()
            .and_then(|p| p.body.as_mut())
        else {
            unreachable!()
        };
        l.per_label[0].coef.pop();
        let e = refuse_p(m);
        assert_eq!(
            e.path,
            "round_start.step.train.model.params.logistic_regression.per_label[0].coef"
        );
        assert_eq!(
            e.problem,
            Problem::Count {
                expected: 2,
                got: 1
            }
        );

        // Range bounds: one lo and one hi per feature.
        let mut m = wire(Instruction::ScorecardHistogram {
            data: data(),
            ranges: vec![(0.0, 1.0), (2.0, 3.0)],
            fine_bins: 16,
            noise: None,
        });
        if let pb::instruction::Body::ScorecardHistogram(h) = step(&mut m) {
            h.ranges.as_mut().expect("ranges").hi.pop();
        }
        assert_eq!(
            refuse_p(m).to_string(),
            "round_start.step.scorecard_histogram.ranges.hi: expected 2 values, got 1"
        );
    }

    #[test]
    fn tree_indices_out_of_range_are_refused() {
        // A child beyond the tree (routing would index past it).
        let mut m = wire(level());
        split_of(&mut level_body(&mut m).tree.as_mut().expect("tree").nodes[0]).right = 7;
        let e = refuse_p(m);
        assert_eq!(e.path, "round_start.step.gbdt.step.level.tree");
        assert!(matches!(e.problem, Problem::Gbdt(_)), "{e}");
        assert!(e.to_string().contains("node 0 has children 1/7"), "{e}");

        // A child before its parent (routing would loop).
        let mut m = wire(level());
        let model = level_body(&mut m).model.as_mut().expect("model");
        split_of(&mut model.trees[0].nodes[0]).left = 0;
        let e = refuse_p(m);
        assert_eq!(e.path, "round_start.step.gbdt.step.level.model");
        assert!(e.to_string().contains("node 0 has children 0/2"), "{e}");

        // A split on a feature the model's bin mapper does not have.
        let mut m = wire(level());
        split_of(&mut level_body(&mut m).tree.as_mut().expect("tree").nodes[0]).feature = 99;
        assert!(refuse_p(m)
            .to_string()
            .ends_with("level.tree: malformed instruction: node 0 splits on unknown feature 99"));

        // A node to grow outside the tree.
        let mut m = wire(level());
        level_body(&mut m).nodes[1] = 3;
        assert_eq!(
            refuse_p(m).to_string(),
            "round_start.step.gbdt.step.level.nodes[1]: index 3 is out of range (3 items)"
        );

        // A bin that does not fit a byte.
        let mut m = wire(level());
        let model = level_body(&mut m).model.as_mut().expect("model");
        split_of(&mut model.trees[0].nodes[0]).bin = 256;
        assert_eq!(
            refuse_p(m).to_string(),
            "round_start.step.gbdt.step.level.model.trees[0].nodes[0].split.bin: \
             256 is out of range (max 255)"
        );
    }

    #[test]
    fn non_finite_values_the_trees_need_finite_are_refused() {
        let mut m = wire(level());
        let model = level_body(&mut m).model.as_mut().expect("model");
        model.bin_mapper.as_mut().expect("mapper").features[1].cuts[0] = f32::NAN;
        let e = refuse_p(m);
        assert_eq!(e.path, "round_start.step.gbdt.step.level.model.bin_mapper");
        assert!(matches!(e.problem, Problem::Binning(_)), "{e}");
        assert!(e.to_string().contains("cuts of feature 1"), "{e}");

        let mut m = wire(level());
        let model = level_body(&mut m).model.as_mut().expect("model");
        model.trees[0].nodes[2].body = Some(pb::tree_node::Body::Leaf(pb::LeafNode {
            value: f64::INFINITY,
        }));
        assert!(refuse_p(m)
            .to_string()
            .ends_with("level.model: malformed instruction: leaf 2 is not finite"));

        let mut m = wire(level());
        level_body(&mut m).model.as_mut().expect("model").base_score = f64::NAN;
        assert!(refuse_p(m).to_string().contains("base score is not finite"));

        // Values the participant's own check declines pass the wire: a NaN coefficient.
        let mut m = wire(common::train_instruction());
        let Some(pb::model_params::Body::LogisticRegression(l)) = train_model(&mut m)
            .params
            .as_mut()
            .and_then(|p| p.body.as_mut())
        else {
            unreachable!()
        };
        l.per_label[0].coef[0] = f64::NAN;
        assert!(ToParticipant::try_from(m).is_ok());
    }

    #[test]
    fn scorecard_bins_reading_a_missing_column_are_refused() {
        let bins = ScorecardBins::from_cuts(
            vec!["income".into(), "age".into()],
            vec![vec![1.0], vec![2.0, 3.0]],
        )
        .expect("bins");
        let mut m = wire(Instruction::ScorecardCounts {
            data: data(),
            bins,
            noise: None,
        });
        let pb::instruction::Body::ScorecardCounts(c) = step(&mut m) else {
            unreachable!()
        };
        let chars = &mut c.bins.as_mut().expect("bins").characteristics;
        if let Some(pb::characteristic::Body::Numeric(n)) = chars[1].body.as_mut() {
            n.column = 99;
        }
        let e = refuse_p(m.clone());
        assert_eq!(e.path, "round_start.step.scorecard_counts.bins");
        assert!(matches!(e.problem, Problem::Scorecard(_)), "{e}");
        assert!(e.to_string().contains("column 99"), "{e}");

        let pb::instruction::Body::ScorecardCounts(c) = step(&mut m) else {
            unreachable!()
        };
        c.bins.as_mut().expect("bins").characteristics[0].body = None;
        assert_eq!(
            refuse_p(m).to_string(),
            "round_start.step.scorecard_counts.bins.characteristics[0]: missing oneof body"
        );
    }

    /// A level delta whose digests are not 32 bytes, or whose node edit has no node, is
    /// refused at the field; one naming a node the tree does not have converts (that is the
    /// participant's check, against the state it holds: `DeltaError::UnknownNode`).
    #[test]
    fn a_level_delta_with_a_short_digest_or_a_missing_node_is_refused_at_the_field() {
        let delta = |set: Vec<(u32, Node)>| Instruction::Gbdt {
            data: data(),
            step: GbdtInstruction::LevelDelta {
                delta: StateDelta {
                    base: StateDigest([1; 32]),
                    set,
                    push: vec![Node::Leaf { value: 0.5 }],
                    finish: false,
                    digest: StateDigest([2; 32]),
                },
                n_features: 2,
                n_bins: 9,
                nodes: vec![1],
            },
            noise: None,
        };
        let valid = delta(vec![(999, Node::Leaf { value: 0.1 })]);
        match ToParticipant::try_from(wire(valid.clone())) {
            Ok(ToParticipant::RoundStart(s)) => assert_eq!(s.instruction, valid),
            other => panic!("{other:?}"),
        }
        let body = |m: &mut pb::ToParticipant| -> pb::GbdtStateDelta {
            match step(m) {
                pb::instruction::Body::Gbdt(g) => {
                    match g.step.as_mut().and_then(|s| s.body.as_mut()) {
                        Some(pb::gbdt_instruction::Body::LevelDelta(l)) => {
                            l.delta.take().expect("delta")
                        }
                        other => panic!("not a level delta: {other:?}"),
                    }
                }
                other => panic!("not a gbdt step: {other:?}"),
            }
        };
        let put = |m: &mut pb::ToParticipant, d: pb::GbdtStateDelta| {
            if let pb::instruction::Body::Gbdt(g) = step(m) {
                if let Some(pb::gbdt_instruction::Body::LevelDelta(l)) =
                    g.step.as_mut().and_then(|s| s.body.as_mut())
                {
                    l.delta = Some(d);
                }
            }
        };
        let mut m = wire(valid.clone());
        let mut d = body(&mut m);
        d.base.truncate(16);
        put(&mut m, d);
        let e = refuse_p(m);
        assert_eq!(e.path, "round_start.step.gbdt.step.level_delta.delta.base");
        assert!(
            matches!(
                e.problem,
                Problem::WrongLength {
                    expected: 32,
                    got: 16
                }
            ),
            "{e}"
        );

        let mut m = wire(valid.clone());
        let mut d = body(&mut m);
        d.digest.clear();
        put(&mut m, d);
        assert_eq!(
            refuse_p(m).path,
            "round_start.step.gbdt.step.level_delta.delta.digest"
        );

        let mut m = wire(valid);
        let mut d = body(&mut m);
        d.set[0].value = None;
        put(&mut m, d);
        assert_eq!(
            refuse_p(m).to_string(),
            "round_start.step.gbdt.step.level_delta.delta.set[0].value: missing"
        );
    }
}
