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
//! [`RdpAccountant`] composes per-step RDP curves over a fixed list of orders and converts to
//! (ε, δ) with the improved conversion of Balle et al. 2020 / Canonne, Kamath, Steinke 2020:
//! `ε = min_α rdp(α) + ln((α−1)/α) − (ln δ + ln α)/(α−1)`.
//! [`RdpAccountant::would_exceed`] and [`RdpAccountant::steps_within_budget`] let a job stop
//! before it overspends.
//!
//! Subsampling amplification is claimed exactly where sampling happens, at two levels:
//!
//! * **Institution level (unsampled).** Every participant takes part in every round, so a
//!   round's release of the noisy sum is accounted without any amplification
//!   ([`Mechanism::Gaussian`], [`Mechanism::Skellam`],
//!   [`Mechanism::DistributedDiscreteGaussian`]) over [`DEFAULT_ORDERS`].
//! * **Record level (Poisson-sampled).** Within each participant, each record joins a local
//!   step's batch independently with probability `q`; every local step of every round is one
//!   release of the subsampled mechanism, accounted with the sampled-Gaussian RDP of Mironov,
//!   Talwar, Zhang 2019 ([`Mechanism::SampledGaussian`], computed as TF Privacy /
//!   `dp-accounting` / Opacus do, and checked against `dp-accounting` in
//!   `ml/tests/accountant_reference.rs`), over the finer [`SAMPLED_ORDERS`]. For the distributed
//!   discrete Gaussian actually added, [`Mechanism::SampledDistributedDiscreteGaussian`] adds
//!   the KLS τ-terms to the sampled-Gaussian RDP at the central noise multiplier; that
//!   combination is exact only at `q = 1` and otherwise an approximation (see its doc).
//!
//! [`calibrate_noise_multiplier`] inverts the record-level accounting: given the budget, the
//! sampling rate, the number of steps and any other releases composed in, it finds the smallest
//! noise multiplier that meets the budget (bisection on σ in log space over
//! [`CALIBRATION_SIGMA_RANGE`], to 0.1 %).
//!
//! Layout: `noise` holds the samplers and the per-participant shares, `clipping` the clipping,
//! randomized rounding and integer sensitivity, `accountant` the mechanisms' RDP curves and
//! [`RdpAccountant`], `sampled` the sampled-Gaussian RDP (log-space series, log-erfc).

mod accountant;
mod clipping;
mod noise;
mod sampled;

pub use accountant::{
    calibrate_noise_multiplier, rdp_to_epsilon, Mechanism, RdpAccountant, CALIBRATION_SIGMA_RANGE,
    DEFAULT_ORDERS, SAMPLED_ORDERS,
};
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
    /// Noise calibration cannot meet the (ε, δ) target: even the largest noise multiplier
    /// searched leaves ε at `best` (typically the fixed releases alone spend more).
    #[error(
        "no noise multiplier up to {max_noise_multiplier} meets ε ≤ {epsilon} at δ = {delta} \
         (it gives ε = {best})"
    )]
    BudgetUnreachable {
        epsilon: f64,
        delta: f64,
        best: f64,
        max_noise_multiplier: f64,
    },
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

/// A probability: finite and in `[0, 1]`.
fn check_rate(name: &'static str, v: f64) -> Result<(), DpError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(invalid(name, v, "must be in [0, 1]"))
    }
}

/// `Err(InvalidParameter)` naming `name` when a count that must be positive is 0.
fn at_least_one(name: &'static str, n: usize) -> Result<(), DpError> {
    if n == 0 {
        return Err(invalid(name, 0.0, "must be ≥ 1"));
    }
    Ok(())
}
