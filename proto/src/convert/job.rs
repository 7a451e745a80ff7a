//! Job-level envelopes (`fedsilo_task::job`): round start and end, job end, decline, and
//! the job state, a job's metrics.

use std::sync::Arc;

use fedsilo_crypto::msg::{RoundConfig, RoundContext};
use fedsilo_crypto::psi::PsiMsg;
use fedsilo_ml::metrics::BinaryMetrics;
use fedsilo_task::job::{JobState, LabelMetrics, RoundStart, ToCoordinator, ToParticipant};

use super::{sub, Problem, WireError};
use crate::pb;

// ---------------------------------------------------------------------------
// Job-level envelopes
// ---------------------------------------------------------------------------

impl From<RoundStart> for pb::RoundStart {
    fn from(m: RoundStart) -> Self {
        pb::RoundStart {
            config: Some(m.config.into()),
            encoding: Some(m.encoding.into()),
            phase_timeout_ms: m.phase_timeout_ms,
            step: Some((&m.instruction).into()),
        }
    }
}

/// A shared `RoundStart` (one per round, see [`ToParticipant::RoundStart`]) is copied once
/// into its wire form.
impl From<&RoundStart> for pb::RoundStart {
    fn from(m: &RoundStart) -> Self {
        pb::RoundStart {
            config: Some(m.config.clone().into()),
            encoding: Some(m.encoding.into()),
            phase_timeout_ms: m.phase_timeout_ms,
            step: Some((&m.instruction).into()),
        }
    }
}

/// Encoded size in bytes of the message that opens a round for one participant
/// (`ToParticipant.round_start`): what the coordinator sends each participant of the round
/// and counts as such in its byte accounting.
pub fn encoded_len(start: &RoundStart) -> usize {
    use prost::Message;
    pb::ToParticipant {
        body: Some(pb::to_participant::Body::RoundStart(start.into())),
    }
    .encoded_len()
}

/// The round a polled message would have started, when it is a `RoundStart` whose
/// configuration converts although the rest of it does not: a participant declines that
/// round (naming the conversion error) instead of leaving the coordinator waiting.
pub fn refused_round(m: &crate::poll::EncodedToParticipant) -> Option<RoundContext> {
    match m.decode().ok()?.body? {
        pb::to_participant::Body::RoundStart(rs) => {
            let config: RoundConfig = sub(rs.config, "config").ok()?;
            Some(config.ctx)
        }
        _ => None,
    }
}

impl TryFrom<pb::RoundStart> for RoundStart {
    type Error = WireError;
    fn try_from(m: pb::RoundStart) -> Result<Self, WireError> {
        Ok(RoundStart {
            config: sub(m.config, "config")?,
            encoding: sub(m.encoding, "encoding")?,
            instruction: sub(m.step, "step")?,
            phase_timeout_ms: m.phase_timeout_ms,
        })
    }
}

impl From<ToParticipant> for pb::ToParticipant {
    fn from(m: ToParticipant) -> Self {
        use pb::to_participant::Body;
        let body = match m {
            ToParticipant::RoundStart(m) => Body::RoundStart(Arc::unwrap_or_clone(m).into()),
            ToParticipant::SecAgg(m) => Body::Secagg(m.into()),
            ToParticipant::RoundEnd { ctx, ok, detail } => Body::RoundEnd(pb::RoundEnd {
                ctx: Some(ctx.into()),
                ok,
                detail,
            }),
            ToParticipant::JobEnd {
                job_id,
                state,
                detail,
            } => Body::JobEnd(pb::JobEnd {
                job_id,
                state: pb::JobState::from(state) as i32,
                detail,
            }),
            ToParticipant::PsiStart(s) => Body::PsiStart(s.into()),
            ToParticipant::Psi(m) => Body::Psi(m.into()),
            ToParticipant::VerticalRelay { passive, msg } => Body::Psi(pb::PsiMessage {
                passive: Some(passive),
                ..msg.into()
            }),
            ToParticipant::VerticalStart(s) => Body::VerticalStart((*s).into()),
        };
        pb::ToParticipant { body: Some(body) }
    }
}

/// Decodes a message polled with its bytes kept ([`crate::pb::PollReply`]) and converts it.
impl TryFrom<crate::poll::EncodedToParticipant> for ToParticipant {
    type Error = WireError;
    fn try_from(m: crate::poll::EncodedToParticipant) -> Result<Self, WireError> {
        let m = m
            .decode()
            .map_err(|e| WireError::new(Problem::Undecodable(e)))?;
        ToParticipant::try_from(m)
    }
}

impl TryFrom<pb::ToParticipant> for ToParticipant {
    type Error = WireError;
    fn try_from(m: pb::ToParticipant) -> Result<Self, WireError> {
        use pb::to_participant::Body;
        let body = m
            .body
            .ok_or_else(|| WireError::new(Problem::MissingOneof))?;
        Ok(match body {
            Body::RoundStart(m) => ToParticipant::RoundStart(Arc::new(
                m.try_into()
                    .map_err(|e: WireError| e.within("round_start"))?,
            )),
            Body::Secagg(m) => {
                ToParticipant::SecAgg(m.try_into().map_err(|e: WireError| e.within("secagg"))?)
            }
            Body::RoundEnd(m) => ToParticipant::RoundEnd {
                ctx: sub(m.ctx, "ctx").map_err(|e| e.within("round_end"))?,
                ok: m.ok,
                detail: m.detail,
            },
            Body::JobEnd(m) => ToParticipant::JobEnd {
                job_id: m.job_id,
                state: job_state_from(m.state, "job_end.state")?,
                detail: m.detail,
            },
            Body::PsiStart(m) => {
                ToParticipant::PsiStart(m.try_into().map_err(|e: WireError| e.within("psi_start"))?)
            }
            Body::Psi(mut m) => {
                let passive = m.passive.take();
                let msg: PsiMsg = m.try_into().map_err(|e: WireError| e.within("psi"))?;
                match passive {
                    None => ToParticipant::Psi(msg),
                    Some(passive) => ToParticipant::VerticalRelay { passive, msg },
                }
            }
            Body::VerticalStart(m) => ToParticipant::VerticalStart(Box::new(
                m.try_into()
                    .map_err(|e: WireError| e.within("vertical_start"))?,
            )),
        })
    }
}

impl From<JobState> for pb::JobState {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Waiting => pb::JobState::Waiting,
            JobState::Running => pb::JobState::Running,
            JobState::Finished => pb::JobState::Finished,
            JobState::Failed => pb::JobState::Failed,
            JobState::Cancelled => pb::JobState::Cancelled,
        }
    }
}

/// A wire job state (`JobStatus.state`, `JobEnd.state`); UNSPECIFIED and unknown values are
/// refused with `field` named.
pub fn job_state_from(v: i32, field: &str) -> Result<JobState, WireError> {
    match pb::JobState::try_from(v) {
        Ok(pb::JobState::Waiting) => Ok(JobState::Waiting),
        Ok(pb::JobState::Running) => Ok(JobState::Running),
        Ok(pb::JobState::Finished) => Ok(JobState::Finished),
        Ok(pb::JobState::Failed) => Ok(JobState::Failed),
        Ok(pb::JobState::Cancelled) => Ok(JobState::Cancelled),
        Ok(pb::JobState::Unspecified) => Err(WireError::at(field, Problem::Unspecified)),
        Err(_) => Err(WireError::at(field, Problem::UnknownEnum(v))),
    }
}

impl From<ToCoordinator> for pb::ToCoordinator {
    fn from(m: ToCoordinator) -> Self {
        use pb::to_coordinator::Body;
        let body = match m {
            ToCoordinator::SecAgg(m) => Body::Secagg(m.into()),
            ToCoordinator::Decline { ctx, reason } => Body::Decline(pb::Decline {
                ctx: Some(ctx.into()),
                reason,
            }),
            ToCoordinator::Psi(m) => Body::Psi(m.into()),
            ToCoordinator::VerticalRelay { passive, msg } => Body::Psi(pb::PsiMessage {
                passive: Some(passive),
                ..msg.into()
            }),
            ToCoordinator::PsiDone(r) => Body::PsiDone(r.into()),
            ToCoordinator::PsiFailed {
                job_id,
                session,
                reason,
            } => Body::PsiFailed(pb::PsiFailed {
                job_id,
                session,
                reason,
            }),
            ToCoordinator::PsiLost { job_id, session } => {
                Body::PsiLost(pb::PsiLost { job_id, session })
            }
            ToCoordinator::VerticalProgress(p) => Body::VerticalProgress(pb::VerticalProgress {
                job_id: p.job_id,
                session: p.session,
                step: p.step,
                resumed_from: p.resumed_from,
            }),
            ToCoordinator::VerticalDone(r) => Body::VerticalDone(pb::VerticalReport {
                job_id: r.job_id,
                session: r.session,
                rows: r.rows,
                train_rows: r.train_rows,
                holdout_rows: r.holdout_rows,
                steps: r.steps,
                holdout_auc: r.holdout_auc,
            }),
        };
        pb::ToCoordinator { body: Some(body) }
    }
}

impl TryFrom<pb::ToCoordinator> for ToCoordinator {
    type Error = WireError;
    fn try_from(m: pb::ToCoordinator) -> Result<Self, WireError> {
        use pb::to_coordinator::Body;
        let body = m
            .body
            .ok_or_else(|| WireError::new(Problem::MissingOneof))?;
        Ok(match body {
            Body::Secagg(m) => {
                ToCoordinator::SecAgg(m.try_into().map_err(|e: WireError| e.within("secagg"))?)
            }
            Body::Decline(m) => ToCoordinator::Decline {
                ctx: sub(m.ctx, "ctx").map_err(|e| e.within("decline"))?,
                reason: m.reason,
            },
            Body::Psi(mut m) => {
                let passive = m.passive.take();
                let msg: PsiMsg = m.try_into().map_err(|e: WireError| e.within("psi"))?;
                match passive {
                    None => ToCoordinator::Psi(msg),
                    Some(passive) => ToCoordinator::VerticalRelay { passive, msg },
                }
            }
            Body::PsiDone(m) => {
                ToCoordinator::PsiDone(m.try_into().map_err(|e: WireError| e.within("psi_done"))?)
            }
            Body::PsiFailed(m) => ToCoordinator::PsiFailed {
                job_id: m.job_id,
                session: m.session,
                reason: m.reason,
            },
            Body::PsiLost(m) => ToCoordinator::PsiLost {
                job_id: m.job_id,
                session: m.session,
            },
            Body::VerticalProgress(m) => {
                ToCoordinator::VerticalProgress(fedsilo_task::vertical::VerticalProgress {
                    job_id: m.job_id,
                    session: m.session,
                    step: m.step,
                    resumed_from: m.resumed_from,
                })
            }
            Body::VerticalDone(m) => {
                ToCoordinator::VerticalDone(fedsilo_task::vertical::VerticalReport {
                    job_id: m.job_id,
                    session: m.session,
                    rows: m.rows,
                    train_rows: m.train_rows,
                    holdout_rows: m.holdout_rows,
                    steps: m.steps,
                    holdout_auc: m.holdout_auc,
                })
            }
        })
    }
}

impl From<&LabelMetrics> for pb::LabelMetrics {
    fn from(m: &LabelMetrics) -> Self {
        pb::LabelMetrics {
            label: m.label.clone(),
            round: m.round,
            auc: m.metrics.auc,
            ks: m.metrics.ks,
            log_loss: m.metrics.log_loss,
            top_decile_lift: m.metrics.top_decile_lift,
            positives: m.metrics.positives,
            negatives: m.metrics.negatives,
        }
    }
}

/// Every field of the wire form is a plain number or string, so this cannot fail.
impl From<pb::LabelMetrics> for LabelMetrics {
    fn from(m: pb::LabelMetrics) -> Self {
        LabelMetrics {
            label: m.label,
            round: m.round,
            metrics: BinaryMetrics {
                auc: m.auc,
                ks: m.ks,
                log_loss: m.log_loss,
                top_decile_lift: m.top_decile_lift,
                positives: m.positives,
                negatives: m.negatives,
            },
        }
    }
}
