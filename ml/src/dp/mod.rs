//! Distributed differential privacy under secure aggregation: integer noise, clipping,
//! the integer-domain sensitivity, and a Rényi-DP accountant.
//!
//! # How the pieces fit
//! Secure aggregation reveals only the SUM of the participants' integer vectors. Each of the
//! `n` participants therefore adds a *share* of the noise to its own encoded vector before
//! masking, chosen so that the sum of the `n` shares is a calibrated DP mechanism:
//!
//! * **Skellam** (Agarwal, Kairouz, Liu, "The Skellam Mechanism for Differentially Private
//!   Federated Learning", NeurIPS 2021). `Sk(μ)` here is `Poisson(μ/2) − Poisson(μ/2)`:
//!   mean 0, variance `μ`. Skellam is closed under addition, so participants each adding
//!   `Sk(μ/n)` ([`skellam_share`]) give a sum that is *exactly* `Sk(μ)`. Accounted with
//!   [`Mechanism::Skellam`].
//! * **Distributed discrete Gaussian** (Kairouz, Liu, Steinke, ICML 2021). Each participant
//!   adds `N_Z(0, σ²/n)` ([`discrete_gaussian_share`]), drawn with the exact sampler of
//!   Canonne, Kamath, Steinke ("The Discrete Gaussian for Differential Privacy", NeurIPS 2020).
//!   The sum of discrete Gaussians is *close to* but not exactly `N_Z(0, σ²)`; the exact
//!   accounting of the sum is [`Mechanism::DistributedDiscreteGaussian`]. When every share has
//!   a standard deviation of at least ~1 in the integer domain the extra term is negligible and
//!   [`Mechanism::Gaussian`] with the central noise multiplier is the usual approximation.
//!
//! A participant's float vector is first clipped ([`clip_and_scale`]), multiplied by the
//! fixed-point scale and randomly rounded to integers ([`randomized_round`]); the L1/L2
//! sensitivity of the resulting *integer* vector, which is what the accountant needs, is given
//! by [`integer_sensitivity`].
//!
//! Neighbouring datasets are "add or remove one participant's whole vector" (institution-level
//! privacy); for replace-one adjacency double the sensitivities.
//!
//! # Accounting
//! [`RdpAccountant`] composes per-step RDP curves over a fixed list of orders
//! ([`DEFAULT_ORDERS`]) — every participant takes part in every round, so there is no
//! subsampling amplification — and converts to (ε, δ) with the improved conversion of
//! Balle et al. 2020 / Canonne, Kamath, Steinke 2020:
//! `ε = min_α rdp(α) + ln((α−1)/α) − (ln δ + ln α)/(α−1)`.
//! [`RdpAccountant::would_exceed`] and [`RdpAccountant::steps_within_budget`] let a job stop
//! before it overspends.
//!
//! Layout: `noise` holds the samplers and the per-participant shares, `clipping` the clipping,
//! randomized rounding and integer sensitivity, `accountant` the mechanisms' RDP curves and
//! [`RdpAccountant`].

mod accountant;
mod clipping;
mod noise;

pub use accountant::{rdp_to_epsilon, Mechanism, RdpAccountant, DEFAULT_ORDERS};
pub use clipping::{clip_and_scale, integer_sensitivity, randomized_round, IntegerSensitivity};
pub use noise::{discrete_gaussian_noise, discrete_gaussian_share, skellam_noise, skellam_share};

/// Errors of this module, by cause.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DpError {
    /// A parameter is outside its domain (negative, zero where it must be positive, NaN…).
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },
    /// A noise scale is beyond what the sampler supports.
    #[error("{name} = {value} is too large for the sampler (at most {max})")]
    TooLarge {
        name: &'static str,
        value: f64,
        max: f64,
    },
    /// Input data contains NaN or ±∞.
    #[error("{what} contains a non-finite value")]
    NonFinite { what: &'static str },
    /// Conditional randomized rounding did not land inside the norm bound.
    #[error("randomized rounding stayed above the L2 bound {bound} in {tries} tries")]
    RoundingFailed { bound: f64, tries: u32 },
    /// The accountant's order list is unusable.
    #[error("RDP orders must be a non-empty list of finite values > 1")]
    InvalidOrders,
}

fn invalid(name: &'static str, value: f64, reason: &'static str) -> DpError {
    DpError::InvalidParameter {
        name,
        value,
        reason,
    }
}

fn check_positive(name: &'static str, v: f64) -> Result<(), DpError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(name, v, "must be finite and > 0"))
    }
}

fn check_nonnegative(name: &'static str, v: f64) -> Result<(), DpError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(invalid(name, v, "must be finite and ≥ 0"))
    }
}

/// `Err(InvalidParameter)` naming `name` when a count that must be positive is 0.
fn at_least_one(name: &'static str, n: usize) -> Result<(), DpError> {
    if n == 0 {
        return Err(invalid(name, 0.0, "must be ≥ 1"));
    }
    Ok(())
}
