//! Prometheus metrics of the coordinator, in the OpenMetrics text format `/metrics` serves.
//!
//! Names and labels follow Prometheus' conventions (`_total` counters, `_seconds` and
//! `_bytes` units, low-cardinality labels). Counters and histograms move where things happen
//! (the engine actor: rounds, phases, bytes, store commits); gauges (jobs by state,
//! participants present, ε spent) are set from an [`Overview`] just before each scrape, so
//! they are never stale.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use super::Overview;
use crate::engine::RoundSummary;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoundLabels {
    /// What the round summed (`train`, `evaluate`, `stats`, …): a handful of values.
    purpose: String,
    /// `ok` or `failed`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    /// A SecAgg+ phase name: a handful of values.
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn phase_histogram() -> Histogram {
    // 1 ms … ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric the coordinator exports, registered once.
pub struct Metrics {
    registry: Registry,
    rounds: Family<RoundLabels, Counter>,
    phase_seconds: HistogramFamily<PhaseLabels>,
    received_bytes: Counter,
    sent_bytes: Counter,
    store_commit_seconds: Histogram,
    jobs: Family<StateLabels, Gauge>,
    participants_present: Gauge,
    participants_roster: Gauge,
    epsilon_spent: Family<JobLabels, Gauge<f64, AtomicU64>>,
    epsilon_budget: Family<JobLabels, Gauge<f64, AtomicU64>>,
    audit_entries: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fedsilo");
        let rounds = Family::<RoundLabels, Counter>::default();
        registry.register(
            "rounds",
            "Secure-aggregation rounds closed, by purpose and outcome",
            rounds.clone(),
        );
        let phase_seconds: HistogramFamily<PhaseLabels> =
            Family::new_with_constructor(phase_histogram);
        registry.register_with_unit(
            "round_phase",
            "Time each SecAgg+ phase of a closed round took",
            Unit::Seconds,
            phase_seconds.clone(),
        );
        let received_bytes = Counter::default();
        registry.register_with_unit(
            "round_received",
            "Bytes the coordinator received from participants in rounds",
            Unit::Bytes,
            received_bytes.clone(),
        );
        let sent_bytes = Counter::default();
        registry.register_with_unit(
            "round_sent",
            "Bytes the coordinator sent to participants in rounds",
            Unit::Bytes,
            sent_bytes.clone(),
        );
        let store_commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register_with_unit(
            "store_commit",
            "Time a checkpoint commit (store and audit head) took",
            Unit::Seconds,
            store_commit_seconds.clone(),
        );
        let jobs = Family::<StateLabels, Gauge>::default();
        registry.register("jobs", "Jobs the coordinator holds, by state", jobs.clone());
        let participants_present = Gauge::default();
        registry.register(
            "participants_present",
            "Roster participants seen within the liveness window",
            participants_present.clone(),
        );
        let participants_roster = Gauge::default();
        registry.register(
            "participants_roster",
            "Participants in the roster",
            participants_roster.clone(),
        );
        let epsilon_spent = Family::<JobLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "dp_epsilon_spent",
            "Differential-privacy epsilon spent by a job at the level its DP protects",
            epsilon_spent.clone(),
        );
        let epsilon_budget = Family::<JobLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "dp_epsilon_budget",
            "A job's differential-privacy epsilon budget",
            epsilon_budget.clone(),
        );
        let audit_entries = Gauge::default();
        registry.register(
            "audit_entries",
            "Entries in the audit hash chain",
            audit_entries.clone(),
        );
        Metrics {
            registry,
            rounds,
            phase_seconds,
            received_bytes,
            sent_bytes,
            store_commit_seconds,
            jobs,
            participants_present,
            participants_roster,
            epsilon_spent,
            epsilon_budget,
            audit_entries,
        }
    }

    /// A round closed: its outcome, phase times and bytes.
    pub fn round(&self, r: &RoundSummary) {
        let outcome = if r.result.is_ok() { "ok" } else { "failed" };
        self.rounds
            .get_or_create(&RoundLabels {
                purpose: r.purpose.to_string(),
                outcome,
            })
            .inc();
        for (phase, ms) in &r.phase_ms {
            self.phase_seconds
                .get_or_create(&PhaseLabels {
                    phase: phase.clone(),
                })
                .observe(ms / 1000.0);
        }
        self.received_bytes.inc_by(r.bytes_received.values().sum());
        self.sent_bytes.inc_by(r.bytes_sent.values().sum());
    }

    /// A checkpoint commit took `seconds`.
    pub fn store_commit(&self, seconds: f64) {
        self.store_commit_seconds.observe(seconds);
    }

    /// The text exposition, gauges first brought up to `now`.
    pub fn encode(&self, now: &Overview) -> Result<String, std::fmt::Error> {
        self.jobs.clear();
        self.epsilon_spent.clear();
        self.epsilon_budget.clear();
        for j in &now.jobs {
            self.jobs
                .get_or_create(&StateLabels {
                    state: j.state.clone(),
                })
                .inc();
            if j.epsilon_budget > 0.0 {
                let job = JobLabels { job: j.id.clone() };
                self.epsilon_spent.get_or_create(&job).set(j.epsilon);
                self.epsilon_budget
                    .get_or_create(&job)
                    .set(j.epsilon_budget);
            }
        }
        let present = now.participants.iter().filter(|p| p.present).count();
        self.participants_present.set(present as i64);
        self.participants_roster.set(now.participants.len() as i64);
        self.audit_entries
            .set(i64::try_from(now.audit.entries).unwrap_or(i64::MAX));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
