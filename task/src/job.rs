//! Job-level messages between the coordinator and participant engines, as plain Rust.
//!
//! They wrap the secure-aggregation messages of `fedsilo_crypto::msg` with what a training
//! job adds around them: the start of a round (its SecAgg+ configuration, fixed-point
//! encoding and training instruction), its end, the end of the job, and a participant
//! declining a round. [`crate::convert`] maps them to and from [`crate::pb`].

use std::sync::Arc;

use fedsilo_crypto::encoding::FixedPoint;
use fedsilo_crypto::msg::{ClientMsg, RoundConfig, RoundContext, ServerMsg};
use fedsilo_ml::metrics::BinaryMetrics;
use serde::{Deserialize, Serialize};

use crate::psi::{PsiReport, PsiStart};
use crate::vertical::{VerticalProgress, VerticalReport, VerticalStart};
use crate::Instruction;
use fedsilo_crypto::psi::PsiMsg;

/// The coordinator opens a round.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundStart {
    /// SecAgg+ configuration of this round.
    pub config: RoundConfig,
    /// How participants encode their update into the ring.
    pub encoding: FixedPoint,
    /// What every participant computes this round (typed; `pb::Instruction` on the wire).
    pub instruction: Instruction,
    /// How long the coordinator waits for each phase before dropping stragglers.
    pub phase_timeout_ms: u64,
}

/// Lifecycle of a job as the wire carries it (`pb::JobState`): the reason that goes with a
/// state travels beside it, in a `detail` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Not enough participants present to start the next round.
    Waiting,
    Running,
    Finished,
    Failed,
    /// Stopped by an operator; can be resumed.
    Cancelled,
}

impl JobState {
    /// Lower-case name, as `fedsilo job status` prints it.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Finished, failed or cancelled: no round will start unless the job is resumed.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Failed | JobState::Cancelled
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Coordinator → participant.
#[derive(Clone, Debug, PartialEq)]
pub enum ToParticipant {
    /// One `RoundStart` is built per round and shared by every participant's message.
    RoundStart(Arc<RoundStart>),
    SecAgg(ServerMsg),
    RoundEnd {
        ctx: RoundContext,
        ok: bool,
        detail: String,
    },
    JobEnd {
        job_id: String,
        state: JobState,
        detail: String,
    },
    /// Opens a PSI session at one party.
    PsiStart(PsiStart),
    /// A PSI message from the session's other party, relayed as it came; a vertical
    /// session's sealed messages travel the same way (kind `vertical`).
    Psi(PsiMsg),
    /// Opens a vertical model's session at one party.
    VerticalStart(Box<VerticalStart>),
    /// To the active party of a vertical session with several passive parties: a message
    /// from passive party `passive` (its index in the job's `passive` list), relayed as it
    /// came.
    VerticalRelay {
        passive: u32,
        msg: PsiMsg,
    },
}

/// Participant → coordinator.
#[derive(Clone, Debug, PartialEq)]
pub enum ToCoordinator {
    SecAgg(ClientMsg),
    Decline {
        ctx: RoundContext,
        reason: String,
    },
    /// A PSI message for the session's other party (the coordinator relays it).
    Psi(PsiMsg),
    /// A party finished its side of a PSI session and persisted its alignment.
    PsiDone(PsiReport),
    /// A party could not take part in, or go on with, a PSI session.
    PsiFailed {
        job_id: String,
        session: u64,
        reason: String,
    },
    /// A party holds no state of this PSI session (it restarted mid-exchange): the
    /// coordinator restarts the pair in a fresh session, or fails the job naming the party.
    PsiLost {
        job_id: String,
        session: u64,
    },
    /// The active party of a vertical session with several passive parties: a message for
    /// passive party `passive` (its index in the job's `passive` list). The coordinator
    /// relays it to that party alone; a passive party sends none (it talks to the active
    /// party only, with [`ToCoordinator::Psi`]).
    VerticalRelay {
        passive: u32,
        msg: PsiMsg,
    },
    /// The active party of a vertical session completed an iteration or a tree.
    VerticalProgress(VerticalProgress),
    /// A party finished its side of a vertical session and wrote its part of the model.
    VerticalDone(VerticalReport),
}

/// One label's latest hold-out metrics, as an operator sees them in a job's status
/// (`pb::LabelMetrics`); [`crate::Plan::label_metrics`] lists them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelMetrics {
    pub label: String,
    /// The training round the evaluation followed.
    pub round: u64,
    pub metrics: BinaryMetrics,
}
