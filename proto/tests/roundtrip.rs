//! Rust → pb → bytes → pb → Rust is the identity for every message variant, and ring
//! vectors travel as packed little-endian bytes.

mod common;

use fedsilo_crypto::msg::ClientMsg;
use fedsilo_proto::pb;
use fedsilo_task::job::{ToCoordinator, ToParticipant};
use prost::Message;

fn through_wire_p(m: &ToParticipant) -> ToParticipant {
    let wire: pb::ToParticipant = m.clone().into();
    let bytes = wire.encode_to_vec();
    let decoded =
        pb::ToParticipant::decode(bytes.as_slice()).expect("prost decodes its own output");
    assert_eq!(decoded, wire, "pb round trip");
    ToParticipant::try_from(decoded).expect("a message we encoded converts back")
}

fn through_wire_c(m: &ToCoordinator) -> ToCoordinator {
    let wire: pb::ToCoordinator = m.clone().into();
    let bytes = wire.encode_to_vec();
    let decoded =
        pb::ToCoordinator::decode(bytes.as_slice()).expect("prost decodes its own output");
    assert_eq!(decoded, wire, "pb round trip");
    ToCoordinator::try_from(decoded).expect("a message we encoded converts back")
}

#[test]
fn every_to_participant_variant_round_trips() {
    let all = common::to_participant_all();
    // RoundStart, 4 SecAgg requests, 2 RoundEnd, JobEnd.
    assert_eq!(all.len(), 8);
    for m in &all {
        assert_eq!(&through_wire_p(m), m);
    }
}

#[test]
fn every_to_coordinator_variant_round_trips() {
    let all = common::to_coordinator_all();
    assert_eq!(all.len(), 8);
    for m in &all {
        assert_eq!(&through_wire_c(m), m);
    }
}

#[test]
fn variants_stay_distinct_on_the_wire() {
    // A conversion that mapped two variants to the same oneof arm would still round-trip
    // one of them; check that each decodes to its own arm.
    let arms: Vec<String> = common::to_coordinator_all()
        .iter()
        .map(|m| {
            let wire: pb::ToCoordinator = m.clone().into();
            match wire.body {
                Some(pb::to_coordinator::Body::Secagg(c)) => match c.body {
                    Some(b) => format!("{b:?}").split('(').next().unwrap_or("").to_string(),
                    None => "empty".into(),
                },
                Some(pb::to_coordinator::Body::Decline(_)) => "Decline".into(),
                Some(pb::to_coordinator::Body::Psi(_)) => "Psi".into(),
                Some(pb::to_coordinator::Body::PsiDone(_)) => "PsiDone".into(),
                Some(pb::to_coordinator::Body::PsiFailed(_)) => "PsiFailed".into(),
                Some(pb::to_coordinator::Body::PsiLost(_)) => "PsiLost".into(),
                Some(pb::to_coordinator::Body::VerticalProgress(_)) => "VerticalProgress".into(),
                Some(pb::to_coordinator::Body::VerticalDone(_)) => "VerticalDone".into(),
                None => "none".into(),
            }
        })
        .collect();
    assert_eq!(
        arms,
        [
            "AdvertiseKeys",
            "ShareKeys",
            "MaskedInput",
            "MaskedInput",
            "MaskedInput",
            "ConsistencySignature",
            "UnmaskShares",
            "Decline"
        ]
    );
}

#[test]
fn million_element_masked_input_is_packed() {
    let m = ToCoordinator::SecAgg(ClientMsg::MaskedInput(common::masked_u32(1_000_000)));
    let wire: pb::ToCoordinator = m.clone().into();
    let len = wire.encoded_len();
    // The vector, the context and the 64-byte signature, a few bytes of framing each.
    assert!(
        len <= 4_000_200,
        "1M u32 elements encoded to {len} bytes, expected at most 4,000,200"
    );
    assert!(
        len >= 4_000_000,
        "the data cannot be smaller than 4 MB: {len}"
    );
    assert_eq!(through_wire_c(&m), m);
}

#[test]
fn ring_data_is_little_endian() {
    let m = ClientMsg::MaskedInput(fedsilo_crypto::msg::MaskedInput {
        ctx: common::ctx(),
        from: 0,
        masked: fedsilo_crypto::encoding::RingVec::U32(vec![0x0102_0304, 0xA0B0_C0D0]),
        signature: vec![0; 64],
    });
    let wire: pb::ClientMsg = m.into();
    let Some(pb::client_msg::Body::MaskedInput(mi)) = wire.body else {
        panic!("expected a masked input, got {wire:?}");
    };
    assert_eq!(mi.modulus, pb::Modulus::Pow32 as i32);
    assert_eq!(mi.data, [4, 3, 2, 1, 0xD0, 0xC0, 0xB0, 0xA0]);
}

/// A message signed by a real identity key still verifies after the wire: the signature
/// travels unchanged and the digest of the decoded content is the one signed.
#[test]
fn signatures_survive_the_wire_and_still_verify() {
    use fedsilo_crypto::keys::{verify_signature, IdentityKey};
    let key = IdentityKey::from_seed([7; 32]).expect("seed");
    let mut msgs = common::client_msgs();
    msgs.retain(|m| !matches!(m, ClientMsg::ConsistencySignature(_)));
    for mut m in msgs {
        m.sign(&key);
        let ToCoordinator::SecAgg(back) = through_wire_c(&ToCoordinator::SecAgg(m.clone())) else {
            panic!("not a secagg message");
        };
        assert_eq!(back, m);
        let (signed, sig) = match &back {
            ClientMsg::AdvertiseKeys(x) => (x.signed_bytes(), &x.signature),
            ClientMsg::ShareKeys(x) => (x.signed_bytes(), &x.signature),
            ClientMsg::MaskedInput(x) => (x.signed_bytes(), &x.signature),
            ClientMsg::UnmaskShares(x) => (x.signed_bytes(), &x.signature),
            ClientMsg::ConsistencySignature(_) => unreachable!(),
        };
        assert_eq!(sig.len(), 64);
        verify_signature(&key.public_key(), &signed, sig).expect("verifies after the wire");
    }
}

// ---------------------------------------------------------------------------
// Job spec
// ---------------------------------------------------------------------------

mod spec {
    use fedsilo_ml::gbdt::GbdtParams;
    use fedsilo_ml::optim::ServerOptimizer;
    use fedsilo_ml::scorecard::ScorecardSpec;
    use fedsilo_proto::pb;
    use fedsilo_task::{DpLevel, DpSpec, JobSpec, Learning, ModelSpec, Task};
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use prost::Message;

    /// Core → pb → bytes → pb → core.
    fn through_wire(s: &JobSpec) -> JobSpec {
        let wire = pb::LaunchJobRequest::from(s);
        let decoded = pb::LaunchJobRequest::decode(wire.encode_to_vec().as_slice())
            .expect("prost decodes its own output");
        assert_eq!(decoded, wire, "pb round trip");
        fedsilo_proto::convert::launch_spec(decoded).expect("a spec we encoded converts back")
    }

    /// Any double but NaN (which is not equal to itself; the wire carries its bits anyway).
    fn real() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(f64::INFINITY),
            -1e6..1e6f64,
            any::<f64>().prop_filter("not NaN", |v| !v.is_nan()),
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z_=é]{0,8}"
    }

    fn gbdt() -> impl Strategy<Value = GbdtParams> {
        (
            (any::<usize>(), any::<usize>(), any::<usize>()),
            (real(), real(), real(), real()),
            (any::<usize>(), any::<usize>(), real()),
        )
            .prop_map(
                |(
                    (n_trees, max_depth, max_leaves),
                    (learning_rate, min_child_weight, lambda, gamma),
                    (max_bins, fine_bins, range_sd),
                )| GbdtParams {
                    n_trees,
                    max_depth,
                    max_leaves,
                    learning_rate,
                    min_child_weight,
                    lambda,
                    gamma,
                    max_bins,
                    fine_bins,
                    range_sd,
                },
            )
    }

    fn scorecard() -> impl Strategy<Value = ScorecardSpec> {
        (
            any::<usize>(),
            (real(), real(), real(), real()),
            any::<usize>(),
            real(),
            any::<bool>(),
        )
            .prop_map(
                |(bins, (min_iv, base_score, base_odds, pdo), fine_bins, range_sd, group)| {
                    ScorecardSpec {
                        bins,
                        min_iv,
                        base_score,
                        base_odds,
                        pdo,
                        fine_bins,
                        range_sd,
                        group_categories: group,
                    }
                },
            )
    }

    fn model() -> impl Strategy<Value = ModelSpec> {
        prop_oneof![
            Just(ModelSpec::LogisticRegression),
            vec(any::<usize>(), 0..3).prop_map(|hidden| ModelSpec::Mlp { hidden }),
            gbdt().prop_map(ModelSpec::Gbdt),
            scorecard().prop_map(ModelSpec::Scorecard),
        ]
    }

    fn optimizer() -> impl Strategy<Value = ServerOptimizer> {
        prop_oneof![
            real().prop_map(|lr| ServerOptimizer::FedAvg { lr }),
            (real(), real(), real(), real()).prop_map(|(lr, beta1, beta2, eps)| {
                ServerOptimizer::FedAdam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                }
            }),
            (real(), real(), real(), real()).prop_map(|(lr, beta1, beta2, eps)| {
                ServerOptimizer::FedYogi {
                    lr,
                    beta1,
                    beta2,
                    eps,
                }
            }),
        ]
    }

    fn learning() -> impl Strategy<Value = Learning> {
        (
            any::<usize>(),
            real(),
            any::<usize>(),
            (real(), option::of(real()), real()),
            optimizer(),
        )
            .prop_map(
                |(local_epochs, learning_rate, batch_size, (l2, pos_weight, prox_mu), opt)| {
                    Learning {
                        local_epochs,
                        learning_rate,
                        batch_size,
                        l2,
                        pos_weight,
                        prox_mu,
                        server_optimizer: opt,
                    }
                },
            )
    }

    fn dp() -> impl Strategy<Value = DpSpec> {
        (
            any::<bool>(),
            real(),
            option::of(real()),
            real(),
            option::of(real()),
            option::of(real()),
            option::of(real()),
        )
            .prop_map(
                |(
                    record,
                    clip,
                    noise_multiplier,
                    delta,
                    epsilon_budget,
                    sampling_rate,
                    count_noise_multiplier,
                )| DpSpec {
                    count_noise_multiplier,
                    level: if record {
                        DpLevel::Record
                    } else {
                        DpLevel::Institution
                    },
                    clip,
                    noise_multiplier,
                    delta,
                    epsilon_budget,
                    sampling_rate,
                },
            )
    }

    fn task() -> impl Strategy<Value = Task> {
        prop_oneof![Just(Task::Risk), Just(Task::Propensity), Just(Task::Churn)]
    }

    prop_compose! {
        fn job_spec(model: BoxedStrategy<ModelSpec>)(
            (job_id, dataset, task, model) in (name(), name(), task(), model),
            (features, labels) in (vec(name(), 0..4), vec(name(), 0..3)),
            (rounds, min_participants, threshold, neighbours) in (
                any::<u64>(), any::<usize>(), option::of(any::<usize>()), option::of(any::<usize>())
            ),
            (learning, dp) in (learning(), option::of(dp())),
            (eval_every, hist_bins, seed) in (any::<u64>(), any::<usize>(), any::<u64>()),
            (phase_timeout_ms, max_participants, absence_patience_ms) in (
                any::<u64>(), any::<u32>(), any::<u64>()
            ),
        ) -> JobSpec {
            JobSpec {
                job_id, dataset, task, model, features, labels, rounds, min_participants,
                threshold, neighbours, learning, dp, eval_every, hist_bins, seed,
                phase_timeout_ms, max_participants, absence_patience_ms,
            }
        }
    }

    proptest! {
        #[test]
        fn any_spec_round_trips(s in job_spec(model().boxed())) {
            prop_assert_eq!(through_wire(&s), s);
        }

        // Each model kind on its own, so none is left to the luck of `prop_oneof`.
        #[test]
        fn mlp_specs_round_trip(s in job_spec(
            vec(any::<usize>(), 0..3).prop_map(|hidden| ModelSpec::Mlp { hidden }).boxed()
        )) {
            prop_assert_eq!(through_wire(&s), s);
        }

        #[test]
        fn gbdt_specs_round_trip(s in job_spec(gbdt().prop_map(ModelSpec::Gbdt).boxed())) {
            prop_assert_eq!(through_wire(&s), s);
        }

        #[test]
        fn scorecard_specs_round_trip(
            s in job_spec(scorecard().prop_map(ModelSpec::Scorecard).boxed())
        ) {
            prop_assert_eq!(through_wire(&s), s);
        }

        #[test]
        fn logistic_specs_round_trip(
            s in job_spec(Just(ModelSpec::LogisticRegression).boxed())
        ) {
            prop_assert_eq!(through_wire(&s), s);
        }
    }

    fn toml_spec(text: &str) -> JobSpec {
        toml::from_str(text).expect("a valid TOML spec")
    }

    fn typed(s: pb::JobSpec) -> JobSpec {
        let req = pb::LaunchJobRequest {
            body: Some(pb::launch_job_request::Body::Spec(s)),
        };
        fedsilo_proto::convert::launch_spec(req).expect("converts")
    }

    /// An absent wire field means what an absent TOML key means.
    #[test]
    fn absent_fields_take_the_toml_defaults() {
        let minimal = pb::JobSpec {
            dataset: Some("credit".into()),
            rounds: Some(7),
            ..Default::default()
        };
        let expected = toml_spec("dataset = 'credit'\nrounds = 7");
        assert_eq!(typed(minimal.clone()), expected);
        assert_eq!(JobSpec::new("credit", 7), expected);

        // Partly filled sub-messages: the rest of each takes its own defaults.
        let partial = pb::JobSpec {
            model: Some(pb::ModelSpec {
                body: Some(pb::model_spec::Body::Gbdt(pb::GbdtParams {
                    max_depth: Some(3),
                    ..Default::default()
                })),
            }),
            learning: Some(pb::Learning {
                batch_size: Some(32),
                ..Default::default()
            }),
            dp: Some(pb::DpSpec {
                clip: Some(1.0),
                noise_multiplier: Some(0.8),
                delta: Some(1e-5),
                epsilon_budget: None,
                ..Default::default()
            }),
            ..minimal.clone()
        };
        assert_eq!(
            typed(partial),
            toml_spec(
                "dataset = 'credit'\nrounds = 7\nmodel = { kind = 'gbdt', max_depth = 3 }\n\
                 dp = { clip = 1.0, noise_multiplier = 0.8, delta = 1e-5 }\n\
                 [learning]\nbatch_size = 32"
            )
        );

        let scorecard = pb::JobSpec {
            model: Some(pb::ModelSpec {
                body: Some(pb::model_spec::Body::Scorecard(pb::ScorecardSpec {
                    group_categories: Some(false),
                    ..Default::default()
                })),
            }),
            ..minimal
        };
        assert_eq!(
            typed(scorecard),
            toml_spec(
                "dataset = 'credit'\nrounds = 7\n\
                 model = { kind = 'scorecard', group_categories = false }"
            )
        );
    }

    /// The JSON arm still reads the serde form, as before.
    #[test]
    fn the_json_arm_is_still_accepted() {
        let s = toml_spec(
            "dataset = 'credit'\nrounds = 3\nmodel = { kind = 'mlp', hidden = [8] }\n\
             [learning]\nserver_optimizer = { kind = 'fed_adam', lr = 0.1, beta1 = 0.9, \
             beta2 = 0.99, eps = 1e-3 }",
        );
        let req = pb::LaunchJobRequest {
            body: Some(pb::launch_job_request::Body::SpecJson(
                r#"{"dataset":"credit","rounds":3,"model":{"kind":"mlp","hidden":[8]},
                "learning":{"server_optimizer":{"kind":"fed_adam","lr":0.1,"beta1":0.9,
                "beta2":0.99,"eps":1e-3}}}"#
                    .into(),
            )),
        };
        assert_eq!(fedsilo_proto::convert::launch_spec(req).expect("parses"), s);
        assert_eq!(through_wire(&s), s);
    }
}

// ---------------------------------------------------------------------------
// Step instruction
// ---------------------------------------------------------------------------

/// Generators of every `Instruction` op and of the models it carries, built so that the wire
/// accepts them (it refuses malformed trees, cut points and scorecard bins; see
/// `malformed.rs`): every value an honest coordinator can send.
pub mod instruction {
    use fedsilo_ml::gbdt::{
        BinMapper, GbdtInstruction, GbdtModel, Node, StateDelta, StateDigest, Tree,
    };
    use fedsilo_ml::linear::{LinearParams, LocalTrainConfig};
    use fedsilo_ml::mlp::{MlpParams, MlpSpec};
    use fedsilo_ml::scorecard::{FeatureWoe, Scorecard, ScorecardBins, ScorecardScaling, WoeTable};
    use fedsilo_proto::pb;
    use fedsilo_task::job::{RoundStart, ToParticipant};
    use fedsilo_task::{Instruction, JobData, ModelParams, NoiseSpec, Standardizer, TrainedModel};
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use prost::Message;

    /// Instruction → RoundStart → pb → bytes → pb → RoundStart → Instruction.
    fn through_wire(i: &Instruction) -> Instruction {
        let mut start = super::common::round_start();
        start.instruction = i.clone();
        let m = ToParticipant::RoundStart(start.into());
        let wire: pb::ToParticipant = m.clone().into();
        let bytes = wire.encode_to_vec();
        assert_eq!(
            bytes.len(),
            fedsilo_proto::convert::encoded_len(match &m {
                ToParticipant::RoundStart(s) => s,
                _ => unreachable!(),
            }),
            "encoded_len is the size on the wire"
        );
        let decoded = pb::ToParticipant::decode(bytes.as_slice()).expect("prost decodes");
        assert_eq!(decoded, wire, "pb round trip");
        match ToParticipant::try_from(decoded) {
            Ok(ToParticipant::RoundStart(s)) => {
                let s: RoundStart = std::sync::Arc::unwrap_or_clone(s);
                s.instruction
            }
            other => panic!("an instruction we encoded did not convert back: {other:?}"),
        }
    }

    /// Any double but NaN (not equal to itself; the wire carries its bits anyway).
    fn real() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(f64::INFINITY),
            -1e6..1e6f64,
            any::<f64>().prop_filter("not NaN", |v| !v.is_nan()),
        ]
    }

    fn finite() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            -1e6..1e6f64,
            any::<f64>().prop_filter("finite", |v| v.is_finite())
        ]
    }

    fn real32() -> impl Strategy<Value = f32> {
        any::<f32>().prop_filter("not NaN", |v| !v.is_nan())
    }

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z_=é]{0,8}"
    }

    fn data() -> impl Strategy<Value = JobData> {
        (name(), vec(name(), 0..4), vec(name(), 0..3)).prop_map(|(dataset, features, labels)| {
            JobData {
                dataset,
                features,
                labels,
            }
        })
    }

    fn ranges() -> impl Strategy<Value = Vec<(f32, f32)>> {
        vec((real32(), real32()), 0..5)
    }

    /// `n` strictly increasing finite cut points.
    fn cuts(n: usize) -> impl Strategy<Value = Vec<f32>> {
        (vec(0.01f32..10.0, n), -100.0f32..100.0).prop_map(|(steps, start)| {
            steps
                .iter()
                .scan(start, |acc, s| {
                    *acc += s;
                    Some(*acc)
                })
                .collect()
        })
    }

    fn bin_mapper() -> impl Strategy<Value = BinMapper> {
        (0usize..4, 2usize..=255).prop_flat_map(|(f, max_bins)| {
            vec((0usize..max_bins.min(8)).prop_flat_map(cuts), f).prop_map(move |c| {
                BinMapper::from_cuts(c, max_bins).expect("generated cuts are valid")
            })
        })
    }

    /// A tree grown by splitting leaves (children appended after their parent), on features
    /// and bins `mapper` has; open nodes only when not `complete`.
    fn tree(mapper: &BinMapper, complete: bool) -> BoxedStrategy<Tree> {
        let (f, max_bins) = (mapper.n_features() as u32, mapper.max_bins());
        let split = (
            any::<u32>(),
            0..max_bins,
            any::<f32>(),
            any::<bool>(),
            finite(),
        );
        let splits = if f == 0 { 0..1 } else { 0..5 };
        (
            vec((any::<prop::sample::Index>(), split), splits),
            vec((finite(), finite(), any::<u32>(), any::<bool>()), 11),
        )
            .prop_map(move |(splits, leaves)| {
                let mut nodes = vec![Node::Leaf { value: 0.0 }];
                for (at, (feature, bin, threshold, default_left, gain)) in splits {
                    let leaves: Vec<usize> = (0..nodes.len())
                        .filter(|&i| !matches!(nodes[i], Node::Split { .. }))
                        .collect();
                    let i = leaves[at.index(leaves.len())];
                    let n = nodes.len() as u32;
                    nodes[i] = Node::Split {
                        feature: feature % f,
                        bin: bin as u8,
                        threshold: if threshold.is_nan() { 0.5 } else { threshold },
                        default_left,
                        left: n,
                        right: n + 1,
                        gain,
                    };
                    nodes.push(Node::Leaf { value: 0.0 });
                    nodes.push(Node::Leaf { value: 0.0 });
                }
                for (node, &(a, b, depth, open)) in nodes.iter_mut().zip(&leaves) {
                    if let Node::Leaf { .. } = node {
                        *node = if open && !complete {
                            Node::Open {
                                sum_grad: a,
                                sum_hess: b,
                                depth,
                            }
                        } else {
                            Node::Leaf { value: a }
                        };
                    }
                }
                Tree { nodes }
            })
            .boxed()
    }

    fn gbdt_model() -> impl Strategy<Value = GbdtModel> {
        bin_mapper().prop_flat_map(|mapper| {
            (finite(), vec(tree(&mapper, true), 0..3)).prop_map(move |(base_score, trees)| {
                GbdtModel {
                    base_score,
                    bin_mapper: mapper.clone(),
                    trees,
                }
            })
        })
    }

    fn scorecard_bins() -> impl Strategy<Value = ScorecardBins> {
        (vec(("[ab](=[xyz])?", 0usize..4), 0..5), any::<bool>()).prop_flat_map(|(cols, grouped)| {
            let names: Vec<String> = cols.iter().map(|c| c.0.clone()).collect();
            let cut_lists: Vec<_> = cols.iter().map(|c| cuts(c.1)).collect();
            cut_lists.prop_map(move |cuts| {
                let bins = ScorecardBins::from_cuts(names.clone(), cuts).expect("valid cuts");
                if grouped {
                    bins.with_categories_grouped()
                } else {
                    bins
                }
            })
        })
    }

    fn scorecard() -> impl Strategy<Value = Scorecard> {
        let woe = (
            name(),
            vec(real(), 0..4),
            vec(real(), 0..4),
            vec(real(), 0..4),
            real(),
        )
            .prop_flat_map(|(name, good, bad, woe, iv)| {
                any::<bool>().prop_map(move |selected| FeatureWoe {
                    name: name.clone(),
                    good: good.clone(),
                    bad: bad.clone(),
                    woe: woe.clone(),
                    iv,
                    selected,
                })
            });
        (
            scorecard_bins(),
            vec(woe, 0..3),
            real(),
            vec(real(), 0..4),
            real(),
            (real(), real(), real()),
            vec(vec(real(), 0..4), 0..3),
        )
            .prop_map(
                |(
                    bins,
                    features,
                    min_iv,
                    coef,
                    intercept,
                    (base_score, base_odds, pdo),
                    points,
                )| {
                    Scorecard {
                        woe: WoeTable {
                            bins,
                            features,
                            min_iv,
                        },
                        coef,
                        intercept,
                        scaling: ScorecardScaling {
                            base_score,
                            base_odds,
                            pdo,
                        },
                        points,
                    }
                },
            )
    }

    fn params(features: usize) -> impl Strategy<Value = ModelParams> {
        let linear = (vec(real(), features), real())
            .prop_map(|(coef, intercept)| LinearParams { coef, intercept });
        let mlp = (any::<usize>(), vec(any::<usize>(), 0..3), vec(real(), 0..8)).prop_map(
            |(inputs, hidden, flat)| MlpParams {
                spec: MlpSpec { inputs, hidden },
                flat,
            },
        );
        prop_oneof![
            vec(linear, 0..3).prop_map(|per_label| ModelParams::LogisticRegression { per_label }),
            vec(mlp, 0..3).prop_map(|per_label| ModelParams::Mlp { per_label }),
            gbdt_model().prop_map(|model| ModelParams::Gbdt { model }),
            scorecard().prop_map(|card| ModelParams::Scorecard {
                card: Box::new(card)
            }),
        ]
    }

    fn model() -> impl Strategy<Value = TrainedModel> {
        (vec(name(), 0..4), vec(name(), 0..3)).prop_flat_map(|(features, labels)| {
            (
                vec(real(), 0..4),
                vec(real(), 0..4),
                vec(real(), 0..4),
                params(features.len()),
            )
                .prop_map(move |(mean, std, missing_rate, params)| TrainedModel {
                    features: features.clone(),
                    labels: labels.clone(),
                    standardizer: Standardizer {
                        mean,
                        std,
                        missing_rate,
                    },
                    params,
                })
        })
    }

    fn local() -> impl Strategy<Value = LocalTrainConfig> {
        (
            any::<usize>(),
            real(),
            any::<usize>(),
            real(),
            real(),
            real(),
        )
            .prop_map(
                |(epochs, learning_rate, batch_size, l2, pos_weight, prox_mu)| LocalTrainConfig {
                    epochs,
                    learning_rate,
                    batch_size,
                    l2,
                    pos_weight,
                    prox_mu,
                },
            )
    }

    fn noise() -> impl Strategy<Value = NoiseSpec> {
        (real(), real(), option::of(real())).prop_map(|(clip, stddev, sampling_rate)| NoiseSpec {
            clip,
            stddev,
            sampling_rate,
        })
    }

    fn gbdt_step() -> impl Strategy<Value = GbdtInstruction> {
        let level = gbdt_model().prop_flat_map(|model| {
            let grown = tree(&model.bin_mapper, false);
            (Just(model), grown).prop_flat_map(|(model, tree)| {
                let n = tree.nodes.len() as u32;
                vec(0..n, 0..4).prop_map(move |nodes| GbdtInstruction::Level {
                    model: model.clone(),
                    tree: tree.clone(),
                    nodes,
                })
            })
        });
        let leaves = gbdt_model().prop_flat_map(|model| {
            let grown = tree(&model.bin_mapper, true);
            (Just(model), grown).prop_map(|(model, tree)| GbdtInstruction::Leaves { model, tree })
        });
        // A delta: any digests and nodes (which nodes exist is the participant's check,
        // against the state it holds).
        let delta = gbdt_model()
            .prop_flat_map(|model| {
                let nodes = tree(&model.bin_mapper, false);
                (
                    any::<[u8; 32]>(),
                    any::<[u8; 32]>(),
                    nodes.clone(),
                    nodes,
                    vec(any::<u32>(), 0..4),
                    any::<bool>(),
                )
                    .prop_map(|(base, digest, a, b, ids, finish)| StateDelta {
                        base: StateDigest(base),
                        set: ids.into_iter().zip(a.nodes).collect(),
                        push: b.nodes,
                        finish,
                        digest: StateDigest(digest),
                    })
            })
            .boxed();
        let level_delta = (
            delta.clone(),
            any::<usize>(),
            any::<usize>(),
            vec(any::<u32>(), 0..4),
        )
            .prop_map(
                |(delta, n_features, n_bins, nodes)| GbdtInstruction::LevelDelta {
                    delta,
                    n_features,
                    n_bins,
                    nodes,
                },
            );
        let leaves_delta = (delta, any::<usize>())
            .prop_map(|(delta, leaves)| GbdtInstruction::LeavesDelta { delta, leaves });
        prop_oneof![
            any::<usize>().prop_map(|n_features| GbdtInstruction::Stats { n_features }),
            (ranges(), any::<usize>()).prop_map(|(ranges, fine_bins)| {
                GbdtInstruction::FineHistogram { ranges, fine_bins }
            }),
            level,
            leaves,
            level_delta,
            leaves_delta,
        ]
    }

    proptest! {
        #[test]
        fn scale_and_moments_round_trip(
            d in data(),
            scales in vec(real(), 0..5),
            n1 in option::of(noise()),
            n2 in option::of(noise()),
        ) {
            let i = Instruction::Scale { data: d.clone(), noise: n1 };
            prop_assert_eq!(through_wire(&i), i);
            let i = Instruction::Moments { data: d, scales, noise: n2 };
            prop_assert_eq!(through_wire(&i), i);
        }

        #[test]
        fn train_round_trips(
            data in data(),
            model in model(),
            local in local(),
            seed in any::<u64>(),
            noise in option::of(noise()),
        ) {
            let i = Instruction::Train { data, model, local, seed, noise };
            prop_assert_eq!(through_wire(&i), i);
        }

        #[test]
        fn evaluate_round_trips(data in data(), model in model(), bins in any::<usize>()) {
            let i = Instruction::Evaluate { data, model, bins };
            prop_assert_eq!(through_wire(&i), i);
        }

        #[test]
        fn gbdt_steps_round_trip(data in data(), step in gbdt_step(), noise in option::of(noise())) {
            let i = Instruction::Gbdt { data, step, noise };
            prop_assert_eq!(through_wire(&i), i);
        }

        #[test]
        fn scorecard_steps_round_trip(
            data in data(),
            ranges in ranges(),
            fine_bins in any::<usize>(),
            bins in scorecard_bins(),
            n1 in option::of(noise()),
            n2 in option::of(noise()),
        ) {
            let i = Instruction::ScorecardHistogram { data: data.clone(), ranges, fine_bins, noise: n1 };
            prop_assert_eq!(through_wire(&i), i);
            let i = Instruction::ScorecardCounts { data, bins, noise: n2 };
            prop_assert_eq!(through_wire(&i), i);
        }
    }
}
