//! Vertical federated learning: parties that share customers (aligned by `fedsilo_crypto`'s
//! PSI) but hold different columns train one model without showing each other their data.
//!
//! * [`lr`] — vertical logistic regression with no arbiter: the label holder (active party)
//!   encrypts residuals under its own Paillier key, each feature holder (passive party)
//!   computes its encrypted gradient and masks it, the active party decrypts only masked
//!   values.
//! * [`boost`] — SecureBoost: the active party encrypts packed per-row (gradient, hessian),
//!   passive parties return encrypted packed histograms of their own bins, the active party
//!   picks splits with `fedsilo_ml::gbdt`'s own server ([`fedsilo_ml::gbdt::GbdtServer`]),
//!   so the trees are those of pooled boosting on the joined table; a passive split's
//!   threshold stays at its owner.
//! * [`he`] — the Paillier layer (`fast-paillier`, on num-bigint or GMP) and what the protocols build on it.
//!
//! Every protocol core is sans-IO: phases are types behind a `handle` method, messages are
//! plain serialisable types, randomness is passed in, nothing reads a clock or a socket.
//! Every message is checked (phase, round, sizes, ciphertext range, decrypted range) before
//! it touches the state, and a refused one leaves the state as it was.

#![forbid(unsafe_code)]

// fast-paillier takes num-bigint when both backends are on, which would silently drop GMP.
#[cfg(all(feature = "pure-rust", feature = "gmp"))]
compile_error!(
    "fedsilo-vertical: the `pure-rust` and `gmp` backends are both enabled; build with \
     `--no-default-features --features gmp` for GMP (or without `gmp` for pure Rust)"
);
#[cfg(not(any(feature = "pure-rust", feature = "gmp")))]
compile_error!("fedsilo-vertical: no Paillier backend; enable `pure-rust` (the default) or `gmp`");

pub mod boost;
pub mod error;
pub mod he;
pub mod lr;

pub use error::{PeerError, VerticalError};
pub use he::{Ciphertext, PublicKey, SecretKey, WireCiphertext, WirePublicKey};
