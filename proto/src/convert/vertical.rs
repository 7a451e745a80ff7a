//! Vertical model jobs (`fedsilo_task::vertical`): the job spec and the session start. The
//! session's messages are PSI envelopes (`psi.rs`), its failures and losses PSI's too.

use fedsilo_ml::gbdt::GbdtParams;
use fedsilo_ml::optim::ServerOptimizer;
use fedsilo_task::vertical::{VerticalJobSpec, VerticalKind, VerticalPair, VerticalStart};

use super::psi::{array32, delivery_from, delivery_to, format_from, format_to, role_from, role_to};
use super::{Problem, WireError};
use crate::pb;

fn kind_to(k: VerticalKind) -> pb::VerticalKind {
    match k {
        VerticalKind::VerticalLogistic => pb::VerticalKind::Logistic,
        VerticalKind::VerticalGbdt => pb::VerticalKind::Gbdt,
        VerticalKind::VerticalScore => pb::VerticalKind::Score,
    }
}

fn kind_from(v: i32, field: &str) -> Result<VerticalKind, WireError> {
    match pb::VerticalKind::try_from(v) {
        Ok(pb::VerticalKind::Logistic) => Ok(VerticalKind::VerticalLogistic),
        Ok(pb::VerticalKind::Gbdt) => Ok(VerticalKind::VerticalGbdt),
        Ok(pb::VerticalKind::Score) => Ok(VerticalKind::VerticalScore),
        Ok(pb::VerticalKind::Unspecified) => Err(WireError::at(field, Problem::Unspecified)),
        Err(_) => Err(WireError::at(field, Problem::UnknownEnum(v))),
    }
}

impl From<&VerticalJobSpec> for pb::VerticalJobSpec {
    fn from(s: &VerticalJobSpec) -> Self {
        pb::VerticalJobSpec {
            job_id: s.job_id.clone(),
            kind: kind_to(s.kind) as i32,
            psi_job: s.psi_job.clone(),
            model_job: s.model_job.clone(),
            active: s.active.clone(),
            passive: s.passive.clone(),
            key_bits: s.key_bits,
            test_key: s.test_key,
            label: s.label.clone(),
            holdout_fraction: s.holdout_fraction,
            iterations: s.iterations,
            l2: s.l2,
            pos_weight: s.pos_weight,
            optimizer: s.optimizer.as_ref().map(Into::into),
            gbdt: s.gbdt.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<pb::VerticalJobSpec> for VerticalJobSpec {
    type Error = WireError;
    fn try_from(s: pb::VerticalJobSpec) -> Result<Self, WireError> {
        Ok(VerticalJobSpec {
            kind: kind_from(s.kind, "kind")?,
            job_id: s.job_id,
            psi_job: s.psi_job,
            model_job: s.model_job,
            active: s.active,
            passive: s.passive,
            key_bits: s.key_bits,
            test_key: s.test_key,
            label: s.label,
            holdout_fraction: s.holdout_fraction,
            iterations: s.iterations,
            l2: s.l2,
            pos_weight: s.pos_weight,
            optimizer: s
                .optimizer
                .map(|o| ServerOptimizer::try_from(o).map_err(|e| e.within("optimizer")))
                .transpose()?,
            gbdt: s
                .gbdt
                .map(|g| GbdtParams::try_from(g).map_err(|e| e.within("gbdt")))
                .transpose()?,
        })
    }
}

impl From<&VerticalJobSpec> for pb::LaunchJobRequest {
    /// A request launching a vertical job.
    fn from(s: &VerticalJobSpec) -> Self {
        pb::LaunchJobRequest {
            body: Some(pb::launch_job_request::Body::Vertical(s.into())),
        }
    }
}

impl From<VerticalStart> for pb::VerticalStart {
    fn from(s: VerticalStart) -> Self {
        pb::VerticalStart {
            spec: Some((&s.spec).into()),
            session: s.session,
            role: role_to(s.role) as i32,
            peer: s.peer,
            dataset: s.dataset,
            id_column: s.id_column,
            id_format: format_to(s.id_format) as i32,
            delivery: delivery_to(s.delivery) as i32,
            psi_session: s.psi_session,
            psi_hash: s.psi_hash.to_vec(),
            passive_index: s.passive_index,
            more_passive: s
                .more_passive
                .into_iter()
                .map(|p| pb::VerticalPair {
                    passive: p.passive,
                    psi_session: p.psi_session,
                    psi_hash: p.psi_hash.to_vec(),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::VerticalStart> for VerticalStart {
    type Error = WireError;
    fn try_from(s: pb::VerticalStart) -> Result<Self, WireError> {
        let spec = s
            .spec
            .ok_or_else(|| WireError::at("spec", Problem::Missing))?;
        Ok(VerticalStart {
            spec: VerticalJobSpec::try_from(spec).map_err(|e| e.within("spec"))?,
            session: s.session,
            role: role_from(s.role, "role")?,
            peer: s.peer,
            dataset: s.dataset,
            id_column: s.id_column,
            id_format: format_from(s.id_format, "id_format")?,
            delivery: delivery_from(s.delivery, "delivery")?,
            psi_session: s.psi_session,
            psi_hash: array32(s.psi_hash, "psi_hash")?,
            passive_index: s.passive_index,
            more_passive: s
                .more_passive
                .into_iter()
                .map(|p| {
                    Ok(VerticalPair {
                        passive: p.passive,
                        psi_session: p.psi_session,
                        psi_hash: array32(p.psi_hash, "more_passive.psi_hash")?,
                    })
                })
                .collect::<Result<_, WireError>>()?,
        })
    }
}
