use super::*;

#[test]
fn phase_names_read_back_and_a_typo_lists_the_valid_ones() {
    for p in Phase::ALL {
        assert_eq!(p.name().parse::<Phase>(), Ok(p));
    }
    let e = "masked-input".parse::<Phase>().unwrap_err();
    assert_eq!(e, UnknownPhase("masked-input".into()));
    assert_eq!(
        e.to_string(),
        "unknown phase `masked-input`: expected one of advertise_keys, share_keys, \
         masked_input, consistency_check, unmask"
    );
    assert!("Unmask".parse::<Phase>().is_err());
}

fn ctx() -> RoundContext {
    RoundContext {
        job_id: "job".into(),
        round: 7,
    }
}

#[test]
fn transcripts_separate_job_round_and_phase() {
    let a = ctx().transcript(Phase::ShareKeys);
    assert!(a.starts_with(PROTOCOL_LABEL));
    assert_ne!(a, ctx().transcript(Phase::MaskedInput));
    let other_round = RoundContext { round: 8, ..ctx() };
    assert_ne!(a, other_round.transcript(Phase::ShareKeys));
    // Length-prefixing: ("ab", round) and ("a", round') cannot collide.
    let x = RoundContext {
        job_id: "ab".into(),
        round: 0,
    };
    let y = RoundContext {
        job_id: "a".into(),
        round: u64::from(b'b') << 56,
    };
    assert_ne!(x.transcript(Phase::Unmask), y.transcript(Phase::Unmask));
}

#[test]
fn wire_size_of_masked_input_is_dominated_by_the_vector() {
    let m = ClientMsg::MaskedInput(MaskedInput {
        ctx: ctx(),
        from: 1,
        masked: RingVec::zeros(Modulus::Pow32, 1000),
        signature: vec![0; SIGNATURE_LEN],
    });
    assert_eq!(m.wire_size(), 3 + 8 + 4 + 4000 + 64);
    assert_eq!(m.phase(), Phase::MaskedInput);
    assert_eq!(m.from(), 1);
}

#[test]
fn survivor_set_bytes_depend_on_every_member() {
    let a = survivor_set_signed_bytes(&ctx(), &[1, 2, 3]);
    assert_ne!(a, survivor_set_signed_bytes(&ctx(), &[1, 2]));
    assert_ne!(a, survivor_set_signed_bytes(&ctx(), &[1, 2, 4]));
}

fn masked(v: RingVec) -> MaskedInput {
    MaskedInput {
        ctx: ctx(),
        from: 1,
        masked: v,
        signature: Vec::new(),
    }
}

#[test]
fn masked_input_digest_is_sha256_of_the_wire_bytes() {
    let v = RingVec::U32(
        (0..10_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect(),
    );
    let mut h = Sha256::new();
    h.update([32u8]);
    h.update(10_000u64.to_le_bytes());
    h.update(v.to_le_bytes());
    let want: [u8; 32] = h.finalize().into();
    assert_eq!(masked(v.clone()).payload_digest(), want);

    let w = RingVec::U64(
        (0..5_000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect(),
    );
    let mut h = Sha256::new();
    h.update([64u8]);
    h.update(5_000u64.to_le_bytes());
    h.update(w.to_le_bytes());
    let want: [u8; 32] = h.finalize().into();
    assert_eq!(masked(w).payload_digest(), want);

    // Same bytes, other ring: the modulus is part of the digest.
    let as64 = RingVec::from_le_bytes(Modulus::Pow64, &v.to_le_bytes()).expect("whole");
    assert_ne!(masked(as64).payload_digest(), masked(v).payload_digest());
}

#[test]
fn signed_bytes_bind_round_phase_sender_and_content() {
    let m = masked(RingVec::U32(vec![1, 2, 3]));
    let base = m.signed_bytes();
    let mut t = ctx().transcript(Phase::MaskedInput);
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&m.payload_digest());
    assert_eq!(base, t, "the documented byte string");

    let mut later = m.clone();
    later.ctx.round += 1;
    assert_ne!(later.signed_bytes(), base);
    let mut other = m.clone();
    other.from = 2;
    assert_ne!(other.signed_bytes(), base);
    let mut changed = m.clone();
    changed.masked = RingVec::U32(vec![1, 2, 4]);
    assert_ne!(changed.signed_bytes(), base);

    // Same sender, round and digest bytes, other phase: different strings.
    let d = m.payload_digest();
    let strings: Vec<Vec<u8>> = [Phase::ShareKeys, Phase::MaskedInput, Phase::Unmask]
        .into_iter()
        .map(|p| message_signed_bytes(&ctx(), p, 1, &d))
        .collect();
    assert_ne!(strings[0], strings[1]);
    assert_ne!(strings[1], strings[2]);
}

#[test]
fn share_and_unmask_digests_cover_every_field() {
    let sk = ShareKeys {
        ctx: ctx(),
        from: 1,
        shares: vec![EncryptedShare {
            from: 1,
            to: 2,
            ciphertext: vec![9; SHARE_CIPHERTEXT_LEN],
        }],
        signature: Vec::new(),
    };
    let d = sk.payload_digest();
    let mut x = sk.clone();
    x.shares[0].to = 3;
    assert_ne!(x.payload_digest(), d);
    let mut x = sk.clone();
    x.shares[0].ciphertext[5] ^= 1;
    assert_ne!(x.payload_digest(), d);
    let mut x = sk.clone();
    x.shares.clear();
    assert_ne!(x.payload_digest(), d);
    // The signature itself is not part of what it signs.
    let mut x = sk.clone();
    x.signature = vec![1; SIGNATURE_LEN];
    assert_eq!(x.payload_digest(), d);

    let us = UnmaskShares {
        ctx: ctx(),
        from: 1,
        shares: vec![RevealedShare {
            owner: 2,
            kind: ShareKind::SelfMask,
            share: Share {
                x: 1,
                y: vec![7; SECRET_LEN],
            },
        }],
        signature: Vec::new(),
    };
    let d = us.payload_digest();
    let mut x = us.clone();
    x.shares[0].kind = ShareKind::MaskKey;
    assert_ne!(x.payload_digest(), d);
    let mut x = us.clone();
    x.shares[0].share.x = 2;
    assert_ne!(x.payload_digest(), d);
    let mut x = us.clone();
    x.shares[0].owner = 3;
    assert_ne!(x.payload_digest(), d);
    let mut x = us.clone();
    x.shares[0].share.y[31] ^= 1;
    assert_ne!(x.payload_digest(), d);
}
