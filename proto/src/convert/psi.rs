//! PSI jobs and messages (`fedsilo_task::psi`, `fedsilo_crypto::psi`): the job spec, the
//! session start, the relayed Hello and sealed messages, a party's report.
//!
//! Lengths are checked here (32-byte keys, nonces, digests and hashes, 64-byte signatures);
//! everything else (sequence numbers, chunk contents) is the state machine's business.

use fedsilo_crypto::msg::SIGNATURE_LEN;
use fedsilo_crypto::psi::{
    Delivery, Duplicates, Hello, IdFormat, Kind, PsiContext, PsiMsg, Role, Sealed,
};
use fedsilo_task::psi::{PsiJobSpec, PsiReport, PsiStart, PSI_KIND};

use super::{Problem, WireError};
use crate::pb;

pub(super) fn array32(v: Vec<u8>, field: &str) -> Result<[u8; 32], WireError> {
    let got = v.len();
    <[u8; 32]>::try_from(v)
        .map_err(|_| WireError::at(field, Problem::WrongLength { expected: 32, got }))
}

pub(super) fn format_to(f: IdFormat) -> pb::PsiIdFormat {
    match f {
        IdFormat::Text => pb::PsiIdFormat::Text,
        IdFormat::Exact => pb::PsiIdFormat::Exact,
        IdFormat::Digits => pb::PsiIdFormat::Digits,
    }
}

pub(super) fn format_from(v: i32, field: &str) -> Result<IdFormat, WireError> {
    match pb::PsiIdFormat::try_from(v) {
        Ok(pb::PsiIdFormat::Text) => Ok(IdFormat::Text),
        Ok(pb::PsiIdFormat::Exact) => Ok(IdFormat::Exact),
        Ok(pb::PsiIdFormat::Digits) => Ok(IdFormat::Digits),
        Ok(pb::PsiIdFormat::Unspecified) => Err(WireError::at(field, Problem::Unspecified)),
        Err(_) => Err(WireError::at(field, Problem::UnknownEnum(v))),
    }
}

pub(super) fn delivery_to(d: Delivery) -> pb::PsiDelivery {
    match d {
        Delivery::Both => pb::PsiDelivery::Both,
        Delivery::ActiveOnly => pb::PsiDelivery::ActiveOnly,
    }
}

pub(super) fn delivery_from(v: i32, field: &str) -> Result<Delivery, WireError> {
    match pb::PsiDelivery::try_from(v) {
        Ok(pb::PsiDelivery::Both) => Ok(Delivery::Both),
        Ok(pb::PsiDelivery::ActiveOnly) => Ok(Delivery::ActiveOnly),
        Ok(pb::PsiDelivery::Unspecified) => Err(WireError::at(field, Problem::Unspecified)),
        Err(_) => Err(WireError::at(field, Problem::UnknownEnum(v))),
    }
}

fn duplicates_to(d: Duplicates) -> pb::PsiDuplicates {
    match d {
        Duplicates::Refuse => pb::PsiDuplicates::Refuse,
        Duplicates::KeepFirst => pb::PsiDuplicates::KeepFirst,
    }
}

fn duplicates_from(v: i32, field: &str) -> Result<Duplicates, WireError> {
    match pb::PsiDuplicates::try_from(v) {
        Ok(pb::PsiDuplicates::Refuse) => Ok(Duplicates::Refuse),
        Ok(pb::PsiDuplicates::KeepFirst) => Ok(Duplicates::KeepFirst),
        Ok(pb::PsiDuplicates::Unspecified) => Err(WireError::at(field, Problem::Unspecified)),
        Err(_) => Err(WireError::at(field, Problem::UnknownEnum(v))),
    }
}

pub(super) fn role_to(r: Role) -> pb::PsiRole {
    match r {
        Role::Active => pb::PsiRole::Active,
        Role::Passive => pb::PsiRole::Passive,
    }
}

pub(super) fn role_from(v: i32, field: &str) -> Result<Role, WireError> {
    match pb::PsiRole::try_from(v) {
        Ok(pb::PsiRole::Active) => Ok(Role::Active),
        Ok(pb::PsiRole::Passive) => Ok(Role::Passive),
        Ok(pb::PsiRole::Unspecified) => Err(WireError::at(field, Problem::Unspecified)),
        Err(_) => Err(WireError::at(field, Problem::UnknownEnum(v))),
    }
}

impl From<&PsiJobSpec> for pb::PsiJobSpec {
    fn from(s: &PsiJobSpec) -> Self {
        pb::PsiJobSpec {
            job_id: s.job_id.clone(),
            dataset: s.dataset.clone(),
            active: s.active.clone(),
            passive: s.passive.clone(),
            id_column: s.id_column.clone(),
            id_format: format_to(s.id_format.into()) as i32,
            delivery: delivery_to(s.delivery.into()) as i32,
            duplicates: duplicates_to(s.duplicates.into()) as i32,
            chunk_len: s.chunk_len,
        }
    }
}

impl TryFrom<pb::PsiJobSpec> for PsiJobSpec {
    type Error = WireError;
    fn try_from(s: pb::PsiJobSpec) -> Result<Self, WireError> {
        Ok(PsiJobSpec {
            kind: PSI_KIND.to_string(),
            job_id: s.job_id,
            dataset: s.dataset,
            active: s.active,
            passive: s.passive,
            id_column: s.id_column,
            id_format: format_from(s.id_format, "id_format")?.into(),
            delivery: delivery_from(s.delivery, "delivery")?.into(),
            duplicates: duplicates_from(s.duplicates, "duplicates")?.into(),
            chunk_len: s.chunk_len,
        })
    }
}

impl From<&PsiJobSpec> for pb::LaunchJobRequest {
    /// A request launching a PSI job.
    fn from(s: &PsiJobSpec) -> Self {
        pb::LaunchJobRequest {
            body: Some(pb::launch_job_request::Body::Psi(s.into())),
        }
    }
}

impl From<PsiStart> for pb::PsiStart {
    fn from(s: PsiStart) -> Self {
        pb::PsiStart {
            job_id: s.job_id,
            session: s.session,
            role: role_to(s.role) as i32,
            peer: s.peer,
            dataset: s.dataset,
            id_column: s.id_column,
            id_format: format_to(s.id_format) as i32,
            delivery: delivery_to(s.delivery) as i32,
            duplicates: duplicates_to(s.duplicates) as i32,
            chunk_len: s.chunk_len,
        }
    }
}

impl TryFrom<pb::PsiStart> for PsiStart {
    type Error = WireError;
    fn try_from(s: pb::PsiStart) -> Result<Self, WireError> {
        Ok(PsiStart {
            job_id: s.job_id,
            session: s.session,
            role: role_from(s.role, "role")?,
            peer: s.peer,
            dataset: s.dataset,
            id_column: s.id_column,
            id_format: format_from(s.id_format, "id_format")?,
            delivery: delivery_from(s.delivery, "delivery")?,
            duplicates: duplicates_from(s.duplicates, "duplicates")?,
            chunk_len: s.chunk_len,
        })
    }
}

impl From<PsiMsg> for pb::PsiMessage {
    fn from(m: PsiMsg) -> Self {
        use pb::psi_message::Body;
        let from = role_to(m.from()) as i32;
        match m {
            PsiMsg::Hello(h) => pb::PsiMessage {
                job_id: h.ctx.job_id,
                session: h.ctx.session,
                from,
                body: Some(Body::Hello(pb::PsiHello {
                    ephemeral_pk: h.ephemeral_pk.to_vec(),
                    nonce: h.nonce.to_vec(),
                    config_digest: h.config_digest.to_vec(),
                    signature: h.signature,
                })),
                passive: None,
            },
            PsiMsg::Sealed(s) => pb::PsiMessage {
                job_id: s.ctx.job_id,
                session: s.ctx.session,
                from,
                body: Some(Body::Sealed(pb::PsiSealed {
                    seq: s.seq,
                    kind: u32::from(s.kind.tag()),
                    ciphertext: s.ciphertext,
                })),
                passive: None,
            },
        }
    }
}

impl TryFrom<pb::PsiMessage> for PsiMsg {
    type Error = WireError;
    fn try_from(m: pb::PsiMessage) -> Result<Self, WireError> {
        use pb::psi_message::Body;
        let ctx = PsiContext {
            job_id: m.job_id,
            session: m.session,
        };
        let from = role_from(m.from, "from")?;
        match m
            .body
            .ok_or_else(|| WireError::new(Problem::MissingOneof))?
        {
            Body::Hello(h) => {
                if h.signature.len() != SIGNATURE_LEN {
                    return Err(WireError::at(
                        "hello.signature",
                        Problem::WrongLength {
                            expected: SIGNATURE_LEN,
                            got: h.signature.len(),
                        },
                    ));
                }
                Ok(PsiMsg::Hello(Hello {
                    ctx,
                    from,
                    ephemeral_pk: array32(h.ephemeral_pk, "hello.ephemeral_pk")?,
                    nonce: array32(h.nonce, "hello.nonce")?,
                    config_digest: array32(h.config_digest, "hello.config_digest")?,
                    signature: h.signature,
                }))
            }
            Body::Sealed(s) => {
                let kind = u8::try_from(s.kind)
                    .ok()
                    .and_then(Kind::from_tag)
                    .ok_or_else(|| {
                        WireError::at("sealed.kind", Problem::UnknownEnum(s.kind as i32))
                    })?;
                Ok(PsiMsg::Sealed(Sealed {
                    ctx,
                    from,
                    seq: s.seq,
                    kind,
                    ciphertext: s.ciphertext,
                }))
            }
        }
    }
}

impl From<PsiReport> for pb::PsiReport {
    fn from(r: PsiReport) -> Self {
        pb::PsiReport {
            job_id: r.job_id,
            session: r.session,
            own_set_size: r.own_set_size,
            duplicates_dropped: r.duplicates_dropped,
            peer_set_size: r.peer_set_size,
            intersection_size: r.intersection_size,
            intersection_hash: r.intersection_hash.to_vec(),
        }
    }
}

impl TryFrom<pb::PsiReport> for PsiReport {
    type Error = WireError;
    fn try_from(r: pb::PsiReport) -> Result<Self, WireError> {
        Ok(PsiReport {
            job_id: r.job_id,
            session: r.session,
            own_set_size: r.own_set_size,
            duplicates_dropped: r.duplicates_dropped,
            peer_set_size: r.peer_set_size,
            intersection_size: r.intersection_size,
            intersection_hash: array32(r.intersection_hash, "intersection_hash")?,
        })
    }
}
