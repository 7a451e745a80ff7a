//! The subcommands' bodies: [`local`] (what runs on this machine: simulate, coordinator
//! set-up, audit verification, keygen, scoring, model display) and [`operator`] (`fedsilo
//! job …`, the operator's gRPC client; [`vertical`], `fedsilo score` of a vertical model as a
//! federated scoring job). Argument parsing and dispatch stay in `main.rs`.

pub mod evaluate;
pub mod local;
pub mod operator;
pub mod schema;
pub mod vertical;
