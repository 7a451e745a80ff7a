//! Models, metrics and differential privacy for fedsilo (the federated task language built on
//! them lives in `fedsilo-task`).
//!
//! Pure math on slices and `ndarray` views: no files, sockets, clocks or threads of its own
//! (rayon is used for data parallelism inside a call).
#![forbid(unsafe_code)]

pub mod binning;
pub mod dp;
pub mod gbdt;
pub mod linear;
pub mod metrics;
pub mod mlp;
pub mod optim;
pub mod scorecard;
pub mod table;
