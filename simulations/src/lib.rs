//! fedsilo simulations: scenarios, synthetic bank data, in-memory federations, reports.
#![forbid(unsafe_code)]

pub mod partition;
pub mod report;
pub mod synth;
