//! Job-level messages between the coordinator and participant engines, as plain Rust.
//!
//! They wrap the secure-aggregation messages of `fedsilo_crypto::msg` with what a training
//! job adds around them: the start of a round (its SecAgg+ configuration, fixed-point
//! encoding and training instruction), its end, the end of the job, and a participant
//! declining a round. [`crate::convert`] maps them to and from [`crate::pb`].

use fedsilo_crypto::encoding::FixedPoint;
use fedsilo_crypto::msg::{ClientMsg, RoundConfig, RoundContext, ServerMsg};

/// The coordinator opens a round.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundStart {
    /// SecAgg+ configuration of this round.
    pub config: RoundConfig,
    /// How participants encode their update into the ring.
    pub encoding: FixedPoint,
    /// JSON training instruction; opaque to the wire layer.
    pub instruction: String,
    /// How long the coordinator waits for each phase before dropping stragglers.
    pub phase_timeout_ms: u64,
}

/// Coordinator → participant.
#[derive(Clone, Debug, PartialEq)]
pub enum ToParticipant {
    RoundStart(RoundStart),
    SecAgg(ServerMsg),
    RoundEnd {
        ctx: RoundContext,
        ok: bool,
        detail: String,
    },
    JobEnd {
        job_id: String,
        state: String,
        detail: String,
    },
}

/// Participant → coordinator.
#[derive(Clone, Debug, PartialEq)]
pub enum ToCoordinator {
    SecAgg(ClientMsg),
    Decline { ctx: RoundContext, reason: String },
}
