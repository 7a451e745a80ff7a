//! SecAgg+ messages (`fedsilo_crypto::msg`) and the values they carry: round context and
//! configuration, fixed-point encoding, Shamir shares, ring vectors.

use fedsilo_crypto::encoding::{FixedPoint, Modulus, RingVec};
use fedsilo_crypto::msg::{
    AdvertiseKeys, ClientMsg, ConsistencyRequest, ConsistencySignature, EncryptedShare,
    MaskedInput, MaskedInputRequest, RevealedShare, RoundConfig, RoundContext, ServerMsg,
    ShareKeys, ShareKeysRequest, ShareKind, UnmaskRequest, UnmaskShares, SIGNATURE_LEN,
};
use fedsilo_crypto::shamir::Share;

use super::{each, sub, usize_of, Problem, WireError};
use crate::pb;

fn array32(v: Vec<u8>, field: &str) -> Result<[u8; 32], WireError> {
    let got = v.len();
    <[u8; 32]>::try_from(v)
        .map_err(|_| WireError::at(field, Problem::WrongLength { expected: 32, got }))
}

/// An Ed25519 signature: exactly [`SIGNATURE_LEN`] bytes.
fn signature(v: Vec<u8>, field: &str) -> Result<Vec<u8>, WireError> {
    if v.len() != SIGNATURE_LEN {
        return Err(WireError::at(
            field,
            Problem::WrongLength {
                expected: SIGNATURE_LEN,
                got: v.len(),
            },
        ));
    }
    Ok(v)
}

fn modulus_from(v: i32, field: &str) -> Result<Modulus, WireError> {
    match pb::Modulus::try_from(v) {
        Ok(pb::Modulus::Pow32) => Ok(Modulus::Pow32),
        Ok(pb::Modulus::Pow64) => Ok(Modulus::Pow64),
        Ok(pb::Modulus::Unspecified) => Err(WireError::at(field, Problem::Unspecified)),
        Err(_) => Err(WireError::at(field, Problem::UnknownEnum(v))),
    }
}

fn modulus_to(m: Modulus) -> i32 {
    match m {
        Modulus::Pow32 => pb::Modulus::Pow32 as i32,
        Modulus::Pow64 => pb::Modulus::Pow64 as i32,
    }
}

fn share_kind_from(v: i32, field: &str) -> Result<ShareKind, WireError> {
    match pb::ShareKind::try_from(v) {
        Ok(pb::ShareKind::SelfMask) => Ok(ShareKind::SelfMask),
        Ok(pb::ShareKind::MaskKey) => Ok(ShareKind::MaskKey),
        Ok(pb::ShareKind::Unspecified) => Err(WireError::at(field, Problem::Unspecified)),
        Err(_) => Err(WireError::at(field, Problem::UnknownEnum(v))),
    }
}

fn share_kind_to(k: ShareKind) -> i32 {
    match k {
        ShareKind::SelfMask => pb::ShareKind::SelfMask as i32,
        ShareKind::MaskKey => pb::ShareKind::MaskKey as i32,
    }
}

/// Ring data: `data.len()` must be a whole number of `modulus` elements.
fn ring_from(modulus: i32, data: &[u8]) -> Result<RingVec, WireError> {
    let modulus = modulus_from(modulus, "modulus")?;
    let element_bytes = match modulus {
        Modulus::Pow32 => 4,
        Modulus::Pow64 => 8,
    };
    if data.len() % element_bytes != 0 {
        return Err(WireError::at(
            "data",
            Problem::RaggedRing {
                len: data.len(),
                element_bytes,
            },
        ));
    }
    RingVec::from_le_bytes(modulus, data).map_err(|e| WireError::at("data", Problem::Encoding(e)))
}

// ---------------------------------------------------------------------------
// Small shared types
// ---------------------------------------------------------------------------

impl From<RoundContext> for pb::RoundContext {
    fn from(c: RoundContext) -> Self {
        pb::RoundContext {
            job_id: c.job_id,
            round: c.round,
        }
    }
}

impl TryFrom<pb::RoundContext> for RoundContext {
    type Error = WireError;
    fn try_from(c: pb::RoundContext) -> Result<Self, WireError> {
        Ok(RoundContext {
            job_id: c.job_id,
            round: c.round,
        })
    }
}

impl From<RoundConfig> for pb::RoundConfig {
    fn from(c: RoundConfig) -> Self {
        pb::RoundConfig {
            ctx: Some(c.ctx.into()),
            participants: c.participants,
            neighbours: c.neighbours as u64,
            threshold: c.threshold as u64,
            vector_len: c.vector_len as u64,
            modulus: modulus_to(c.modulus),
            graph_seed: c.graph_seed.to_vec(),
        }
    }
}

impl TryFrom<pb::RoundConfig> for RoundConfig {
    type Error = WireError;
    fn try_from(c: pb::RoundConfig) -> Result<Self, WireError> {
        Ok(RoundConfig {
            ctx: sub(c.ctx, "ctx")?,
            participants: c.participants,
            neighbours: usize_of(c.neighbours, "neighbours")?,
            threshold: usize_of(c.threshold, "threshold")?,
            vector_len: usize_of(c.vector_len, "vector_len")?,
            modulus: modulus_from(c.modulus, "modulus")?,
            graph_seed: array32(c.graph_seed, "graph_seed")?,
        })
    }
}

impl From<FixedPoint> for pb::FixedPoint {
    fn from(f: FixedPoint) -> Self {
        pb::FixedPoint {
            modulus: modulus_to(f.modulus),
            frac_bits: f.frac_bits,
            max_abs: f.max_abs,
            max_participants: f.max_participants,
        }
    }
}

/// Checked by `FixedPoint::new`: a wire encoding whose sum could wrap is refused.
impl TryFrom<pb::FixedPoint> for FixedPoint {
    type Error = WireError;
    fn try_from(f: pb::FixedPoint) -> Result<Self, WireError> {
        let modulus = modulus_from(f.modulus, "modulus")?;
        FixedPoint::new(modulus, f.frac_bits, f.max_abs, f.max_participants)
            .map_err(|e| WireError::new(Problem::Encoding(e)))
    }
}

impl From<Share> for pb::Share {
    fn from(s: Share) -> Self {
        pb::Share {
            x: u32::from(s.x),
            y: s.y,
        }
    }
}

impl TryFrom<pb::Share> for Share {
    type Error = WireError;
    fn try_from(s: pb::Share) -> Result<Self, WireError> {
        let x = u8::try_from(s.x).map_err(|_| {
            WireError::at(
                "x",
                Problem::OutOfRange {
                    value: u64::from(s.x),
                    max: u64::from(u8::MAX),
                },
            )
        })?;
        Ok(Share { x, y: s.y })
    }
}

impl From<EncryptedShare> for pb::EncryptedShare {
    fn from(s: EncryptedShare) -> Self {
        pb::EncryptedShare {
            from: s.from,
            to: s.to,
            ciphertext: s.ciphertext,
        }
    }
}

impl TryFrom<pb::EncryptedShare> for EncryptedShare {
    type Error = WireError;
    fn try_from(s: pb::EncryptedShare) -> Result<Self, WireError> {
        Ok(EncryptedShare {
            from: s.from,
            to: s.to,
            ciphertext: s.ciphertext,
        })
    }
}

impl From<RevealedShare> for pb::RevealedShare {
    fn from(s: RevealedShare) -> Self {
        pb::RevealedShare {
            owner: s.owner,
            kind: share_kind_to(s.kind),
            share: Some(s.share.into()),
        }
    }
}

impl TryFrom<pb::RevealedShare> for RevealedShare {
    type Error = WireError;
    fn try_from(s: pb::RevealedShare) -> Result<Self, WireError> {
        Ok(RevealedShare {
            owner: s.owner,
            kind: share_kind_from(s.kind, "kind")?,
            share: sub(s.share, "share")?,
        })
    }
}

// ---------------------------------------------------------------------------
// Participant → coordinator (SecAgg+)
// ---------------------------------------------------------------------------

impl From<AdvertiseKeys> for pb::AdvertiseKeys {
    fn from(m: AdvertiseKeys) -> Self {
        pb::AdvertiseKeys {
            ctx: Some(m.ctx.into()),
            from: m.from,
            c_pk: m.c_pk.to_vec(),
            s_pk: m.s_pk.to_vec(),
            self_mask_commitment: m.self_mask_commitment.to_vec(),
            signature: m.signature,
        }
    }
}

impl TryFrom<pb::AdvertiseKeys> for AdvertiseKeys {
    type Error = WireError;
    fn try_from(m: pb::AdvertiseKeys) -> Result<Self, WireError> {
        Ok(AdvertiseKeys {
            ctx: sub(m.ctx, "ctx")?,
            from: m.from,
            c_pk: array32(m.c_pk, "c_pk")?,
            s_pk: array32(m.s_pk, "s_pk")?,
            self_mask_commitment: array32(m.self_mask_commitment, "self_mask_commitment")?,
            signature: signature(m.signature, "signature")?,
        })
    }
}

impl From<ShareKeys> for pb::ShareKeys {
    fn from(m: ShareKeys) -> Self {
        pb::ShareKeys {
            ctx: Some(m.ctx.into()),
            from: m.from,
            shares: m.shares.into_iter().map(Into::into).collect(),
            signature: m.signature,
        }
    }
}

impl TryFrom<pb::ShareKeys> for ShareKeys {
    type Error = WireError;
    fn try_from(m: pb::ShareKeys) -> Result<Self, WireError> {
        Ok(ShareKeys {
            ctx: sub(m.ctx, "ctx")?,
            from: m.from,
            shares: each(m.shares, "shares")?,
            signature: signature(m.signature, "signature")?,
        })
    }
}

impl From<MaskedInput> for pb::MaskedInput {
    fn from(m: MaskedInput) -> Self {
        pb::MaskedInput {
            ctx: Some(m.ctx.into()),
            from: m.from,
            modulus: modulus_to(m.masked.modulus()),
            data: m.masked.to_le_bytes(),
            signature: m.signature,
        }
    }
}

impl TryFrom<pb::MaskedInput> for MaskedInput {
    type Error = WireError;
    fn try_from(m: pb::MaskedInput) -> Result<Self, WireError> {
        Ok(MaskedInput {
            ctx: sub(m.ctx, "ctx")?,
            from: m.from,
            masked: ring_from(m.modulus, &m.data)?,
            signature: signature(m.signature, "signature")?,
        })
    }
}

impl From<ConsistencySignature> for pb::ConsistencySignature {
    fn from(m: ConsistencySignature) -> Self {
        pb::ConsistencySignature {
            ctx: Some(m.ctx.into()),
            from: m.from,
            signature: m.signature,
        }
    }
}

impl TryFrom<pb::ConsistencySignature> for ConsistencySignature {
    type Error = WireError;
    fn try_from(m: pb::ConsistencySignature) -> Result<Self, WireError> {
        Ok(ConsistencySignature {
            ctx: sub(m.ctx, "ctx")?,
            from: m.from,
            signature: signature(m.signature, "signature")?,
        })
    }
}

impl From<UnmaskShares> for pb::UnmaskShares {
    fn from(m: UnmaskShares) -> Self {
        pb::UnmaskShares {
            ctx: Some(m.ctx.into()),
            from: m.from,
            shares: m.shares.into_iter().map(Into::into).collect(),
            signature: m.signature,
        }
    }
}

impl TryFrom<pb::UnmaskShares> for UnmaskShares {
    type Error = WireError;
    fn try_from(m: pb::UnmaskShares) -> Result<Self, WireError> {
        Ok(UnmaskShares {
            ctx: sub(m.ctx, "ctx")?,
            from: m.from,
            shares: each(m.shares, "shares")?,
            signature: signature(m.signature, "signature")?,
        })
    }
}

impl From<ClientMsg> for pb::ClientMsg {
    fn from(m: ClientMsg) -> Self {
        use pb::client_msg::Body;
        let body = match m {
            ClientMsg::AdvertiseKeys(m) => Body::AdvertiseKeys(m.into()),
            ClientMsg::ShareKeys(m) => Body::ShareKeys(m.into()),
            ClientMsg::MaskedInput(m) => Body::MaskedInput(m.into()),
            ClientMsg::ConsistencySignature(m) => Body::ConsistencySignature(m.into()),
            ClientMsg::UnmaskShares(m) => Body::UnmaskShares(m.into()),
        };
        pb::ClientMsg { body: Some(body) }
    }
}

impl TryFrom<pb::ClientMsg> for ClientMsg {
    type Error = WireError;
    fn try_from(m: pb::ClientMsg) -> Result<Self, WireError> {
        use pb::client_msg::Body;
        let body = m
            .body
            .ok_or_else(|| WireError::new(Problem::MissingOneof))?;
        Ok(match body {
            Body::AdvertiseKeys(m) => ClientMsg::AdvertiseKeys(
                m.try_into()
                    .map_err(|e: WireError| e.within("advertise_keys"))?,
            ),
            Body::ShareKeys(m) => ClientMsg::ShareKeys(
                m.try_into()
                    .map_err(|e: WireError| e.within("share_keys"))?,
            ),
            Body::MaskedInput(m) => ClientMsg::MaskedInput(
                m.try_into()
                    .map_err(|e: WireError| e.within("masked_input"))?,
            ),
            Body::ConsistencySignature(m) => ClientMsg::ConsistencySignature(
                m.try_into()
                    .map_err(|e: WireError| e.within("consistency_signature"))?,
            ),
            Body::UnmaskShares(m) => ClientMsg::UnmaskShares(
                m.try_into()
                    .map_err(|e: WireError| e.within("unmask_shares"))?,
            ),
        })
    }
}

// ---------------------------------------------------------------------------
// Coordinator → participant (SecAgg+)
// ---------------------------------------------------------------------------

impl From<ShareKeysRequest> for pb::ShareKeysRequest {
    fn from(m: ShareKeysRequest) -> Self {
        pb::ShareKeysRequest {
            ctx: Some(m.ctx.into()),
            keys: m.keys.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::ShareKeysRequest> for ShareKeysRequest {
    type Error = WireError;
    fn try_from(m: pb::ShareKeysRequest) -> Result<Self, WireError> {
        Ok(ShareKeysRequest {
            ctx: sub(m.ctx, "ctx")?,
            keys: each(m.keys, "keys")?,
        })
    }
}

impl From<MaskedInputRequest> for pb::MaskedInputRequest {
    fn from(m: MaskedInputRequest) -> Self {
        pb::MaskedInputRequest {
            ctx: Some(m.ctx.into()),
            shares: m.shares.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::MaskedInputRequest> for MaskedInputRequest {
    type Error = WireError;
    fn try_from(m: pb::MaskedInputRequest) -> Result<Self, WireError> {
        Ok(MaskedInputRequest {
            ctx: sub(m.ctx, "ctx")?,
            shares: each(m.shares, "shares")?,
        })
    }
}

impl From<ConsistencyRequest> for pb::ConsistencyRequest {
    fn from(m: ConsistencyRequest) -> Self {
        pb::ConsistencyRequest {
            ctx: Some(m.ctx.into()),
            survivors: m.survivors,
        }
    }
}

impl TryFrom<pb::ConsistencyRequest> for ConsistencyRequest {
    type Error = WireError;
    fn try_from(m: pb::ConsistencyRequest) -> Result<Self, WireError> {
        Ok(ConsistencyRequest {
            ctx: sub(m.ctx, "ctx")?,
            survivors: m.survivors,
        })
    }
}

impl From<UnmaskRequest> for pb::UnmaskRequest {
    fn from(m: UnmaskRequest) -> Self {
        pb::UnmaskRequest {
            ctx: Some(m.ctx.into()),
            survivors: m.survivors,
            signatures: m
                .signatures
                .into_iter()
                .map(|(participant, signature)| pb::SignedBy {
                    participant,
                    signature,
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::UnmaskRequest> for UnmaskRequest {
    type Error = WireError;
    fn try_from(m: pb::UnmaskRequest) -> Result<Self, WireError> {
        Ok(UnmaskRequest {
            ctx: sub(m.ctx, "ctx")?,
            survivors: m.survivors,
            signatures: m
                .signatures
                .into_iter()
                .map(|s| (s.participant, s.signature))
                .collect(),
        })
    }
}

impl From<ServerMsg> for pb::ServerMsg {
    fn from(m: ServerMsg) -> Self {
        use pb::server_msg::Body;
        let body = match m {
            ServerMsg::ShareKeys(m) => Body::ShareKeys(m.into()),
            ServerMsg::MaskedInput(m) => Body::MaskedInput(m.into()),
            ServerMsg::ConsistencyCheck(m) => Body::ConsistencyCheck(m.into()),
            ServerMsg::Unmask(m) => Body::Unmask(m.into()),
        };
        pb::ServerMsg { body: Some(body) }
    }
}

impl TryFrom<pb::ServerMsg> for ServerMsg {
    type Error = WireError;
    fn try_from(m: pb::ServerMsg) -> Result<Self, WireError> {
        use pb::server_msg::Body;
        let body = m
            .body
            .ok_or_else(|| WireError::new(Problem::MissingOneof))?;
        Ok(match body {
            Body::ShareKeys(m) => ServerMsg::ShareKeys(
                m.try_into()
                    .map_err(|e: WireError| e.within("share_keys"))?,
            ),
            Body::MaskedInput(m) => ServerMsg::MaskedInput(
                m.try_into()
                    .map_err(|e: WireError| e.within("masked_input"))?,
            ),
            Body::ConsistencyCheck(m) => ServerMsg::ConsistencyCheck(
                m.try_into()
                    .map_err(|e: WireError| e.within("consistency_check"))?,
            ),
            Body::Unmask(m) => {
                ServerMsg::Unmask(m.try_into().map_err(|e: WireError| e.within("unmask"))?)
            }
        })
    }
}
