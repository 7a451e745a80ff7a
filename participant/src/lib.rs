//! fedsilo participant node: holds an institution's data and trains on it locally.
//!
//! - [`data`]: CSV + schema → `Table`, with errors naming file, line and column.
//! - [`worker`]: the sans-IO participant engine (`Worker`).
//! - [`node`]: the gRPC client loop that drives the worker (and the PSI driver).
//! - [`psi`]: PSI jobs at this party: the sans-IO driver, the id column, the alignment.
//! - [`vertical`]: vertical model jobs at this party: the sans-IO driver, the aligned rows,
//!   the model files.
//! - [`score`]: local scoring with an exported model (ranked lists).
//! - [`evaluate`]: AUC, KS, log-loss, lift and calibration of a model on labelled data.
//! - [`export`]: a model as SQL or PMML for the institution's own systems.
#![forbid(unsafe_code)]

pub mod data;
pub mod evaluate;
pub mod export;
mod heartbeat;
pub mod node;
pub mod psi;
pub mod score;
pub mod vertical;
pub mod worker;
