//! fedsilo participant node: holds an institution's data and trains on it locally.
//!
//! - [`data`]: CSV + schema → `Table`, with errors naming file, line and column.
//! - [`worker`]: the sans-IO participant engine (`Worker`).
//! - [`node`]: the gRPC client loop that drives the worker.
//! - [`score`]: local scoring with an exported model (ranked lists).
#![forbid(unsafe_code)]

pub mod data;
pub mod node;
pub mod score;
pub mod worker;
