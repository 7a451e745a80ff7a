//! Tracing spans per round, for OpenTelemetry (`coordinator serve --otlp-endpoint`): one
//! span per job round (`<purpose> round`, attributes `fedsilo.job`, `fedsilo.round`,
//! `fedsilo.step`, `fedsilo.purpose`, and when it closes `fedsilo.outcome`,
//! `fedsilo.participants`, `fedsilo.survivors`, `fedsilo.dropped`) with one child span per
//! SecAgg phase the server collected (`advertise_keys`, `share_keys`, `masked_input`,
//! `consistency_check`, `unmask`).
//!
//! The sans-IO engine knows no clock of its own and does no I/O: the actor asks it, after
//! every input, which round each job is in and which phase its server is collecting
//! ([`Coordinator::active_rounds`]); a new round opens a span, a new phase closes the
//! previous phase's span and opens the next, and the round's [`RoundSummary`] (when the
//! engine reports the round closed) records the outcome and closes them. A phase begins
//! only when a participant's message (one actor input) completes the one before, so every
//! phase is seen. The spans carry only what the round summary and the audit log already
//! hold (sizes, names of survivors, the outcome), nothing finer.
//!
//! [`Coordinator::active_rounds`]: crate::engine::Coordinator::active_rounds

use std::collections::BTreeMap;

use fedsilo_crypto::msg::Phase;
use tracing::field::Empty;
use tracing::Span;

use crate::engine::{ActiveRoundView, RoundSummary};

/// The target of every round and phase span: the one the OTLP layer listens to.
pub const TARGET: &str = "fedsilo::round";

/// A round's span and the span of the phase its server is collecting.
struct Open {
    round: u64,
    span: Span,
    phase: Option<(Phase, Span)>,
}

/// The open spans, one round per job.
#[derive(Default)]
pub(super) struct RoundSpans {
    open: BTreeMap<String, Open>,
}

/// A count or number as an OpenTelemetry integer attribute (tracing-opentelemetry records a
/// `u64` as text, an `i64` as an integer).
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn round_span(job: &str, round: u64, step: u64, purpose: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "round",
        otel.name = format!("{purpose} round"),
        otel.kind = "internal",
        fedsilo.job = job,
        fedsilo.round = int(round),
        fedsilo.step = int(step),
        fedsilo.purpose = purpose,
        fedsilo.outcome = Empty,
        fedsilo.participants = Empty,
        fedsilo.survivors = Empty,
        fedsilo.dropped = Empty,
        otel.status_code = Empty,
    )
}

fn phase_span(round: &Span, phase: Phase) -> Span {
    tracing::info_span!(
        target: TARGET,
        parent: round,
        "phase",
        otel.name = phase.name(),
        fedsilo.phase = phase.name(),
    )
}

impl RoundSpans {
    /// Whether anyone listens to round spans (no work otherwise).
    pub(super) fn enabled() -> bool {
        tracing::enabled!(target: TARGET, tracing::Level::INFO)
    }

    /// Brings the spans in line with the engine's rounds in progress: a round no longer in
    /// progress without a summary (its job was cancelled) is closed as such, a new round
    /// opens a span, a new phase a child span.
    pub(super) fn follow(&mut self, active: &[ActiveRoundView]) {
        self.open.retain(|job, open| {
            let still = active
                .iter()
                .any(|a| &a.job_id == job && a.secagg_round == open.round);
            if !still {
                open.span.record("fedsilo.outcome", "abandoned");
            }
            still
        });
        for a in active {
            let open = self.open.entry(a.job_id.clone()).or_insert_with(|| Open {
                round: a.secagg_round,
                span: round_span(&a.job_id, a.secagg_round, a.step, &a.purpose.to_string()),
                phase: None,
            });
            if open.phase.as_ref().map(|(p, _)| *p) != a.phase {
                // The previous phase's span ends (dropped) before the next one begins.
                open.phase = None;
                open.phase = a.phase.map(|p| (p, phase_span(&open.span, p)));
            }
        }
    }

    /// The engine reported `r` closed: its outcome goes on its span, which ends (with the
    /// span of the phase it ended in). A round never seen in progress gets a span now.
    pub(super) fn closed(&mut self, r: &RoundSummary) {
        let open = match self.open.remove(&r.job_id) {
            Some(o) if o.round == r.secagg_round => o,
            other => {
                if let Some(o) = other {
                    self.open.insert(r.job_id.clone(), o);
                }
                Open {
                    round: r.secagg_round,
                    span: round_span(&r.job_id, r.secagg_round, r.step, &r.purpose.to_string()),
                    phase: None,
                }
            }
        };
        let span = &open.span;
        span.record("fedsilo.outcome", r.outcome.as_str());
        span.record("fedsilo.participants", int(r.participants.len() as u64));
        span.record("fedsilo.survivors", int(r.survivors.len() as u64));
        span.record("fedsilo.dropped", int(r.dropped.len() as u64));
        span.record(
            "otel.status_code",
            if r.result.is_ok() { "ok" } else { "error" },
        );
        let Open { span, phase, .. } = open;
        drop(phase);
        drop(span);
    }
}
