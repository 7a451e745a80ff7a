//! fedsilo simulations: scenarios, synthetic bank data, in-memory federations, reports.
//!
//! - [`scenario`]: the scenario file.
//! - [`partition`], [`synth`]: data for the simulated institutions.
//! - [`memory`], [`grpc`]: the two transports, driving the production engines.
//! - [`run`]: scenario → federation → baselines → [`report`].
#![forbid(unsafe_code)]

pub mod grpc;
pub mod memory;
pub mod partition;
pub mod report;
pub mod run;
pub mod scenario;
pub mod synth;
