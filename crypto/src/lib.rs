//! Sans-IO secure aggregation (SecAgg+) and private set intersection (ECDH-PSI, [`psi`])
//! for fedsilo.
//!
//! Nothing in this crate performs I/O, reads a clock or spawns a thread on its own
//! initiative: time (`now`) and randomness (`rng`) are passed in, messages go in through
//! `handle_*` and come out through `poll_*`. The gRPC services and the in-memory
//! simulator drive the very same state machines.
#![forbid(unsafe_code)]

pub mod encoding;
pub mod error;
pub mod graph;
pub mod keys;
pub mod msg;
pub mod prg;
pub mod psi;
pub mod shamir;

pub mod client;
pub mod server;
