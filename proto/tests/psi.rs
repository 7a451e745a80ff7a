//! PSI messages on the wire: every one round-trips, and what the Rust types cannot hold is
//! refused naming the field.

use fedsilo_crypto::psi::{
    Delivery, Duplicates, Hello, IdFormat, Kind, PsiContext, PsiMsg, Role, Sealed,
};
use fedsilo_proto::convert::{launch_request, Launched, Problem};
use fedsilo_proto::pb;
use fedsilo_task::job::{ToCoordinator, ToParticipant};
use fedsilo_task::psi::{DeliveryName, PsiJobSpec, PsiReport, PsiStart};

fn ctx() -> PsiContext {
    PsiContext {
        job_id: "align".into(),
        session: 3,
    }
}

fn hello() -> PsiMsg {
    PsiMsg::Hello(Hello {
        ctx: ctx(),
        from: Role::Passive,
        ephemeral_pk: [1; 32],
        nonce: [2; 32],
        config_digest: [3; 32],
        signature: vec![4; 64],
    })
}

fn sealed() -> PsiMsg {
    PsiMsg::Sealed(Sealed {
        ctx: ctx(),
        from: Role::Active,
        seq: 7,
        kind: Kind::Doubled,
        ciphertext: vec![9; 100],
    })
}

#[test]
fn psi_messages_round_trip() {
    let start = PsiStart {
        job_id: "align".into(),
        session: 3,
        role: Role::Passive,
        peer: "bank".into(),
        dataset: "customers".into(),
        id_column: "customer_id".into(),
        id_format: IdFormat::Digits,
        delivery: Delivery::ActiveOnly,
        duplicates: Duplicates::KeepFirst,
        chunk_len: 512,
    };
    for m in [
        ToParticipant::PsiStart(start),
        ToParticipant::Psi(hello()),
        ToParticipant::Psi(sealed()),
    ] {
        let wire: pb::ToParticipant = m.clone().into();
        assert_eq!(ToParticipant::try_from(wire).unwrap(), m);
    }
    for m in [
        ToCoordinator::Psi(hello()),
        ToCoordinator::Psi(sealed()),
        ToCoordinator::PsiDone(PsiReport {
            job_id: "align".into(),
            session: 3,
            own_set_size: 10,
            duplicates_dropped: 1,
            peer_set_size: 12,
            intersection_size: 6,
            intersection_hash: [5; 32],
        }),
        ToCoordinator::PsiFailed {
            job_id: "align".into(),
            session: 3,
            reason: "no id column".into(),
        },
        ToCoordinator::PsiLost {
            job_id: "align".into(),
            session: 3,
        },
    ] {
        let wire: pb::ToCoordinator = m.clone().into();
        assert_eq!(ToCoordinator::try_from(wire).unwrap(), m);
    }
    let spec = PsiJobSpec {
        kind: "psi".into(),
        job_id: "align".into(),
        dataset: "customers".into(),
        active: "bank".into(),
        passive: vec!["insurer".into(), "telco".into()],
        id_column: String::new(),
        id_format: IdFormat::Exact.into(),
        delivery: DeliveryName::ActiveOnly,
        duplicates: Duplicates::KeepFirst.into(),
        chunk_len: 0,
    };
    match launch_request(pb::LaunchJobRequest::from(&spec)).unwrap() {
        Launched::Psi(s) => assert_eq!(s, spec),
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_psi_messages_are_refused_by_field() {
    let wire = |m: PsiMsg| -> pb::PsiMessage { m.into() };
    let mut short_sig = wire(hello());
    if let Some(pb::psi_message::Body::Hello(h)) = &mut short_sig.body {
        h.signature.pop();
    }
    let mut short_key = wire(hello());
    if let Some(pb::psi_message::Body::Hello(h)) = &mut short_key.body {
        h.ephemeral_pk.pop();
    }
    let mut bad_kind = wire(sealed());
    if let Some(pb::psi_message::Body::Sealed(s)) = &mut bad_kind.body {
        s.kind = 9;
    }
    let mut no_role = wire(sealed());
    no_role.from = 0;
    let mut no_body = wire(sealed());
    no_body.body = None;
    for (m, path, problem) in [
        (
            short_sig,
            "hello.signature",
            Problem::WrongLength {
                expected: 64,
                got: 63,
            },
        ),
        (
            short_key,
            "hello.ephemeral_pk",
            Problem::WrongLength {
                expected: 32,
                got: 31,
            },
        ),
        (bad_kind, "sealed.kind", Problem::UnknownEnum(9)),
        (no_role, "from", Problem::Unspecified),
        (no_body, "", Problem::MissingOneof),
    ] {
        let e = PsiMsg::try_from(m).unwrap_err();
        assert_eq!((e.path.as_str(), &e.problem), (path, &problem));
    }
    let mut report: pb::PsiReport = PsiReport {
        job_id: "j".into(),
        session: 0,
        own_set_size: 1,
        duplicates_dropped: 0,
        peer_set_size: 1,
        intersection_size: 1,
        intersection_hash: [0; 32],
    }
    .into();
    report.intersection_hash.truncate(5);
    let e = PsiReport::try_from(report).unwrap_err();
    assert_eq!(e.path, "intersection_hash");
    let spec = pb::PsiJobSpec {
        id_format: 0,
        ..Default::default()
    };
    let e = launch_request(pb::LaunchJobRequest {
        body: Some(pb::launch_job_request::Body::Psi(spec)),
    })
    .unwrap_err();
    assert!(e.to_string().contains("psi.id_format"), "{e}");
}

#[test]
fn vertical_specs_and_messages_round_trip() {
    use fedsilo_task::vertical::{
        VerticalJobSpec, VerticalKind, VerticalProgress, VerticalReport, VerticalStart,
    };
    let spec = VerticalJobSpec {
        kind: VerticalKind::VerticalGbdt,
        job_id: "v".into(),
        psi_job: "align".into(),
        model_job: String::new(),
        active: "bank".into(),
        passive: vec!["insurer".into()],
        key_bits: Some(2048),
        test_key: false,
        label: "churn".into(),
        holdout_fraction: Some(0.25),
        iterations: None,
        l2: None,
        pos_weight: None,
        optimizer: None,
        gbdt: Some(fedsilo_ml::gbdt::GbdtParams {
            n_trees: 7,
            ..Default::default()
        }),
    };
    match launch_request(pb::LaunchJobRequest::from(&spec)).unwrap() {
        Launched::Vertical(s) => assert_eq!(*s, spec),
        other => panic!("{other:?}"),
    }
    let start = ToParticipant::VerticalStart(Box::new(VerticalStart {
        spec: spec.clone(),
        session: 3,
        role: Role::Passive,
        peer: "bank".into(),
        dataset: "customers".into(),
        id_column: String::new(),
        id_format: IdFormat::Text,
        delivery: Delivery::Both,
        psi_session: 1,
        psi_hash: [5; 32],
        passive_index: 1,
        more_passive: vec![fedsilo_task::vertical::VerticalPair {
            passive: "telco".into(),
            psi_session: 2,
            psi_hash: [6; 32],
        }],
    }));
    let wire: pb::ToParticipant = start.clone().into();
    assert_eq!(ToParticipant::try_from(wire).unwrap(), start);
    // A message of a session with several passive parties names its passive party; one
    // without a name stays a plain relayed message (PSI's, or one passive party's).
    let sealed = fedsilo_crypto::psi::PsiMsg::Sealed(fedsilo_crypto::psi::Sealed {
        ctx: fedsilo_crypto::psi::PsiContext {
            job_id: "v".into(),
            session: 3,
        },
        from: Role::Active,
        seq: 4,
        kind: fedsilo_crypto::psi::Kind::Vertical,
        ciphertext: vec![1, 2, 3],
    });
    for m in [
        ToParticipant::VerticalRelay {
            passive: 1,
            msg: sealed.clone(),
        },
        ToParticipant::VerticalRelay {
            passive: 0,
            msg: sealed.clone(),
        },
        ToParticipant::Psi(sealed.clone()),
    ] {
        let wire: pb::ToParticipant = m.clone().into();
        assert_eq!(ToParticipant::try_from(wire).unwrap(), m);
    }
    for m in [
        ToCoordinator::VerticalRelay {
            passive: 1,
            msg: sealed.clone(),
        },
        ToCoordinator::Psi(sealed),
    ] {
        let wire: pb::ToCoordinator = m.clone().into();
        assert_eq!(ToCoordinator::try_from(wire).unwrap(), m);
    }
    for m in [
        ToCoordinator::VerticalProgress(VerticalProgress {
            job_id: "v".into(),
            session: 3,
            step: 2,
            resumed_from: 1,
        }),
        ToCoordinator::VerticalDone(VerticalReport {
            job_id: "v".into(),
            session: 3,
            rows: 10,
            train_rows: 8,
            holdout_rows: 2,
            steps: 7,
            holdout_auc: Some(0.5),
        }),
    ] {
        let wire: pb::ToCoordinator = m.clone().into();
        assert_eq!(ToCoordinator::try_from(wire).unwrap(), m);
    }
}
