//! fedsilo coordinator: runs training jobs as sequences of secure-aggregation rounds.
#![forbid(unsafe_code)]

pub mod audit;
pub mod store;
