//! fedsilo coordinator: runs training jobs as sequences of secure-aggregation rounds.
//!
//! - [`engine`]: the sans-IO job engine (`Coordinator`).
//! - [`service`]: the gRPC services around it (one actor task owning engine, store and log).
//! - [`net`]: the listener: TLS handshakes, connection caps and idle timeouts ([`net::Limits`]).
//! - [`ops`]: the operations listener: live dashboard, Prometheus `/metrics`, `/healthz`.
//! - [`store`]: durable job records and checkpoints (redb).
//! - [`audit`]: the append-only, hash-chained audit log.
//! - [`state`]: the state directory (store + log + marker): explicit init, checked open.
#![forbid(unsafe_code)]

pub mod audit;
pub mod engine;
pub mod net;
pub mod ops;
pub mod service;
pub mod state;
pub mod store;
