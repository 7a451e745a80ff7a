//! Models, metrics, differential privacy and federated task definitions for fedsilo.
//!
//! Pure math on slices and `ndarray` views: no files, sockets, clocks or threads of its own
//! (rayon is used for data parallelism inside a call).
#![forbid(unsafe_code)]

pub mod binning;
pub mod dp;
pub mod fed;
pub mod gbdt;
pub mod linear;
pub mod metrics;
pub mod mlp;
pub mod optim;
pub mod scorecard;
pub mod table;
