//! fedsilo's gRPC wire format.
//!
//! - [`pb`]: the protobuf types and tonic services generated from `proto/fedsilo.proto`
//!   (compiled by protox in `build.rs`; no system `protoc`).
//! - job-level messages the engines exchange are plain Rust in `fedsilo_task::job`.
//! - [`convert`]: `From` (Rust → wire) and `TryFrom` (wire → Rust, never panics) between the two.
//! - [`codec`]: the services' prost codec; an undecodable message is `INVALID_ARGUMENT`.
//! - [`poll`]: `PollReply` written by hand, its messages kept encoded (one `RoundStart`
//!   encoding shared by every participant).
//! - [`tls`]: mutual-TLS configuration and the caller's identity from its certificate.
//! - [`roster`]: `roster.toml`, the federation's list of institutions and operators.
//! - [`pki`]: a complete test federation (CA, certificates, identity keys, roster) in one call.
//!
//! **Architecture Invariant:** generated protobuf types never leave this crate's
//! `pb` module in the core's API: engines see `fedsilo_task::job` and `fedsilo_crypto::msg` types only.
#![forbid(unsafe_code)]

/// Generated protobuf messages and tonic clients/servers (package `fedsilo.v1`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("fedsilo.v1");
    pub use crate::poll::{EncodedToParticipant, PollReply};
}

pub mod codec;
pub mod convert;
pub mod pki;
pub mod poll;
pub mod roster;
pub mod tls;

pub use convert::{WireError, MAX_MESSAGE_BYTES};
