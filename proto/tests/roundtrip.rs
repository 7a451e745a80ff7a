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
