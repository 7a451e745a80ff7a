//! The subcommands' bodies: [`local`] (what runs on this machine: simulate, coordinator
//! set-up, audit verification, keygen, scoring, model display) and [`operator`] (`fedsilo
//! job …`, the operator's gRPC client). Argument parsing and dispatch stay in `main.rs`.

pub mod evaluate;
pub mod local;
pub mod operator;
pub mod schema;
