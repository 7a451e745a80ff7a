//! fedsilo simulations: scenarios, synthetic bank data, in-memory federations, reports.
//!
//! - [`scenario`]: the scenario file.
//! - [`partition`], [`synth`]: data for the simulated institutions.
//! - [`federation`]: the prepared federation both transports run on (data, job specs, seeds).
//! - [`memory`], [`grpc`]: the two transports, driving the production engines.
//! - [`baselines`]: the pooled and local-only references, computed outside the federation.
//! - [`audit`]: membership inference against the released models, and the coordinator's view.
//! - [`vertical`]: vertical datasets, split by columns, and their true intersections.
//! - [`vertical_models`]: vertical LR and SecureBoost on a PSI job's alignment, through an
//!   in-memory relay, with their pooled and active-party-alone references.
//! - [`run`]: scenario → federation → baselines → [`report`].
#![forbid(unsafe_code)]

pub mod audit;
pub mod baselines;
pub mod federation;
pub mod grpc;
pub mod memory;
pub mod partition;
pub mod report;
pub mod run;
pub mod scenario;
pub mod synth;
pub mod vertical;
pub mod vertical_models;
