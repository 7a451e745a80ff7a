//! The federated task language: what a job asks of participants, and how the server turns
//! the securely aggregated SUMS into a model.
//!
//! A job is a sequence of *steps*. For each step the server half ([`Plan`]) emits an
//! [`Instruction`]; every participant runs [`compute`] on its local data and returns a flat
//! `Vec<f64>` of a length the plan fixed in advance; the vectors are encoded, masked and summed
//! by secure aggregation; the plan [`Plan::absorb`]s the decoded sum and decides the next step.
//!
//! The plan never sees one participant's vector, only sums. Participants are stateless between
//! steps apart from a cache of derived data ([`LocalCache`]), so a participant that restarts
//! mid-job computes the same answer for the next step.
//!
//! Steps of a logistic-regression or MLP job:
//! 1. `Scale` — row and label counts, observed counts per feature, and a log-magnitude
//!    histogram per feature, from which the plan picks a scale per feature (so the next step's
//!    sums fit the fixed-point encoding without losing precision on small-valued features).
//! 2. `Moments` — Σx/s and Σ(x/s)² per feature: the global means and standard deviations
//!    every participant then standardises with. Nobody revealed their own.
//! 3. `Train` × rounds — FedAvg: each participant runs local epochs from the global model and
//!    returns n_k·(w_k − w) and n_k (or, with differential privacy, its clipped, unweighted
//!    update plus integer noise); the server optimiser (FedAvg / FedAdam / FedYogi) applies
//!    the average.
//! 4. `Evaluate` every `eval_every` rounds and at the end — per-class score histograms on each
//!    participant's hold-out set, so the coordinator computes AUC, KS, log-loss and lift of the
//!    federation without seeing any record or any one institution's metrics.

//!
//! Layout: [`spec`] (what an operator launches, checked field by field), [`instruction`]
//! (what one step asks of a participant), [`compute`] (the participant half), [`validate`]
//! (the participant's check of a step before it touches data), [`model`] and [`artifact`]
//! (trained models and the exported file), [`plan`] (the server half: one module per model
//! family behind [`plan::Family`]), [`job`] (the round-level messages the engines exchange).
//!
//! The math lives in `fedsilo_ml`; this crate only says *what* is computed in which step.
#![forbid(unsafe_code)]

pub mod artifact;
pub mod compute;
pub mod error;
pub mod instruction;
pub mod job;
pub mod model;
pub mod plan;
pub mod pooled;
pub mod privacy;
pub mod psi;
pub mod spec;
pub mod validate;
pub mod vertical;

pub use artifact::ModelArtifact;
pub use compute::{compute, select_columns, select_labels, LocalCache, LocalData};
pub use error::FedError;
pub use instruction::{Instruction, JobData, NoiseSpec, Purpose, Step, UnknownPurpose};
pub use model::{CompiledModel, ModelParams, Standardizer, TrainedModel};
pub use plan::plausible::Implausible;
pub use plan::{CurvePoint, Evaluation, Plan};
pub use pooled::{fit_pooled, PooledError};
pub use spec::{
    DpLevel, DpSpec, JobSpec, Learning, ModelSpec, Task, ABSENCE_PATIENCE_MS_RANGE,
    DEFAULT_ABSENCE_PATIENCE_MS,
};
pub use validate::{check_instruction, InstructionError};

#[cfg(test)]
mod tests;
