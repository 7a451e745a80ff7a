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

use rand::Rng;
use rand_distr::{Distribution, Poisson};
use serde::{Deserialize, Serialize};

/// RDP orders the accountant tracks by default.
pub const DEFAULT_ORDERS: [f64; 20] = [
    1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 24.0, 32.0, 48.0,
    64.0, 128.0, 256.0,
];

/// Largest `den` of the rational exponent `γ = num/den` the discrete Gaussian sampler works
/// with (see [`discrete_gaussian_noise`]): with `den ≤ 2^100` any candidate whose squared
/// distance overflows 128 bits has `γ ≥ 2^28`, acceptance probability `e^{-2^28}`.
const DG_MAX_DEN: u128 = 1 << 100;

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

// ---------------------------------------------------------------------------------------------
// Noise
// ---------------------------------------------------------------------------------------------

/// Skellam variance each of `n_participants` adds so that the sum has variance `mu_total`:
/// `mu_total / n`.
pub fn skellam_share(mu_total: f64, n_participants: usize) -> Result<f64, DpError> {
    if !(mu_total.is_finite() && mu_total >= 0.0) {
        return Err(invalid("mu_total", mu_total, "must be finite and ≥ 0"));
    }
    if n_participants == 0 {
        return Err(invalid("n_participants", 0.0, "must be ≥ 1"));
    }
    Ok(mu_total / n_participants as f64)
}

/// `len` independent draws of `Sk(mu) = Poisson(mu/2) − Poisson(mu/2)` (mean 0, variance
/// `mu`). `mu` is THIS participant's share (see [`skellam_share`]); `mu = 0` gives zeros.
pub fn skellam_noise<R: Rng + ?Sized>(
    mu: f64,
    len: usize,
    rng: &mut R,
) -> Result<Vec<i64>, DpError> {
    if !(mu.is_finite() && mu >= 0.0) {
        return Err(invalid("mu", mu, "must be finite and ≥ 0"));
    }
    if mu == 0.0 {
        return Ok(vec![0; len]);
    }
    // Each Poisson draw must fit an i64 with room for the difference.
    const MAX_HALF_MU: f64 = 1e15;
    if mu / 2.0 > MAX_HALF_MU {
        return Err(DpError::TooLarge {
            name: "mu",
            value: mu,
            max: 2.0 * MAX_HALF_MU,
        });
    }
    let pois = Poisson::new(mu / 2.0).map_err(|_| invalid("mu", mu, "Poisson rate rejected"))?;
    Ok((0..len)
        .map(|_| {
            let a: f64 = pois.sample(rng);
            let b: f64 = pois.sample(rng);
            a as i64 - b as i64
        })
        .collect())
}

/// Standard deviation of the discrete Gaussian each of `n_participants` adds so that the sum
/// has variance `sigma_total²`: `sigma_total / √n`.
pub fn discrete_gaussian_share(sigma_total: f64, n_participants: usize) -> Result<f64, DpError> {
    if !(sigma_total.is_finite() && sigma_total >= 0.0) {
        return Err(invalid(
            "sigma_total",
            sigma_total,
            "must be finite and ≥ 0",
        ));
    }
    if n_participants == 0 {
        return Err(invalid("n_participants", 0.0, "must be ≥ 1"));
    }
    Ok(sigma_total / (n_participants as f64).sqrt())
}

/// `len` independent draws of the discrete Gaussian `N_Z(0, sigma²)` (P[x] ∝ e^{−x²/(2σ²)} on
/// the integers), with the exact rejection sampler of Canonne, Kamath, Steinke 2020
/// (Algorithms 1–3): discrete-Laplace proposals and Bernoulli(e^{−γ}) acceptance, all in
/// integer arithmetic on a rational `γ`. `sigma` is THIS participant's standard deviation (see
/// [`discrete_gaussian_share`]); `sigma = 0` gives zeros.
///
/// The only float step is turning `sigma²` into the rational `n/d` (`d` a power of two as large
/// as the 128-bit arithmetic allows, so the relative error of `σ²` is below `2^-40` for
/// `σ ≤ 2^20`); the sampler is then exact for `N_Z(0, n/d)`. Supported: `sigma ≤ 2^24`.
pub fn discrete_gaussian_noise<R: Rng + ?Sized>(
    sigma: f64,
    len: usize,
    rng: &mut R,
) -> Result<Vec<i64>, DpError> {
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(invalid("sigma", sigma, "must be finite and ≥ 0"));
    }
    if sigma == 0.0 {
        return Ok(vec![0; len]);
    }
    let dg = DiscreteGaussian::new(sigma)?;
    Ok((0..len).map(|_| dg.sample(rng)).collect())
}

/// `N_Z(0, n/d)` with precomputed `t = ⌊σ⌋ + 1`.
#[derive(Clone, Copy, Debug)]
struct DiscreteGaussian {
    /// σ² = n / d.
    n: u128,
    d: u128,
    /// Scale of the discrete Laplace proposal.
    t: u128,
    /// 2·n·d·t², the denominator of every acceptance exponent.
    den: u128,
}

impl DiscreteGaussian {
    fn new(sigma: f64) -> Result<Self, DpError> {
        const MAX_SIGMA: f64 = (1u64 << 24) as f64;
        if sigma > MAX_SIGMA {
            return Err(DpError::TooLarge {
                name: "sigma",
                value: sigma,
                max: MAX_SIGMA,
            });
        }
        let var = sigma * sigma;
        // Largest d = 2^k whose exponent denominator stays ≤ DG_MAX_DEN.
        for k in (0..=60u32).rev() {
            let d = 1u128 << k;
            let nf = (var * d as f64).round();
            if !(1.0..1e30).contains(&nf) {
                continue;
            }
            let n = nf as u128;
            let t = isqrt_ratio(n, d) + 1;
            let den = 2u128
                .checked_mul(n)
                .and_then(|v| v.checked_mul(d))
                .and_then(|v| v.checked_mul(t))
                .and_then(|v| v.checked_mul(t));
            if let Some(den) = den {
                if den <= DG_MAX_DEN {
                    return Ok(DiscreteGaussian { n, d, t, den });
                }
            }
        }
        Err(invalid(
            "sigma",
            sigma,
            "no rational representation of sigma² fits the sampler",
        ))
    }

    /// Algorithm 3 of Canonne–Kamath–Steinke.
    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> i64 {
        loop {
            let y = discrete_laplace(self.t, rng);
            let abs_y = y.unsigned_abs() as u128;
            // γ = (|y| − σ²/t)² / (2σ²) = (|y|·t·d − n)² / (2·n·d·t²)
            let Some(ytd) = abs_y
                .checked_mul(self.t)
                .and_then(|v| v.checked_mul(self.d))
            else {
                continue; // |y| ≥ 2^128/(t·d): γ ≥ 2^28, accepted with probability < e^{-2^28}
            };
            let diff = ytd.abs_diff(self.n);
            let Some(num) = diff.checked_mul(diff) else {
                continue; // diff ≥ 2^64 and den ≤ 2^100: γ ≥ 2^28 as above
            };
            if bernoulli_exp_neg(num, self.den, rng) {
                return y;
            }
        }
    }
}

/// ⌊√(n/d)⌋ exactly.
fn isqrt_ratio(n: u128, d: u128) -> u128 {
    let mut s = ((n as f64) / (d as f64)).sqrt().floor() as u128;
    // Correct the float estimate: want s²·d ≤ n < (s+1)²·d.
    let sq_le = |s: u128| {
        s.checked_mul(s)
            .and_then(|v| v.checked_mul(d))
            .is_some_and(|v| v <= n)
    };
    while s > 0 && !sq_le(s) {
        s -= 1;
    }
    while sq_le(s + 1) {
        s += 1;
    }
    s
}

/// Bernoulli(num/den), `num ≤ den`, `den > 0`.
fn bernoulli_ratio<R: Rng + ?Sized>(num: u128, den: u128, rng: &mut R) -> bool {
    rng.random_range(0..den) < num
}

/// Bernoulli(e^{−num/den}) for `0 ≤ num/den ≤ 1` (CKS Algorithm 1, first part).
fn bernoulli_exp_neg_le1<R: Rng + ?Sized>(num: u128, den: u128, rng: &mut R) -> bool {
    let mut k: u128 = 1;
    // A ~ Bernoulli(γ/k). If den·k overflows, k > 2^128/den ≥ 2^28 and γ/k < 2^-27: treating
    // A as 0 there changes the outcome only after a run of ≥ 2^28 successes (prob. ~ 1/k!).
    while let Some(dk) = den.checked_mul(k) {
        if !bernoulli_ratio(num, dk, rng) {
            break;
        }
        k += 1;
    }
    k % 2 == 1
}

/// Bernoulli(e^{−num/den}) for any `num/den ≥ 0` (CKS Algorithm 1).
fn bernoulli_exp_neg<R: Rng + ?Sized>(num: u128, den: u128, rng: &mut R) -> bool {
    let whole = num / den;
    let rem = num % den;
    let mut i: u128 = 0;
    while i < whole {
        if !bernoulli_exp_neg_le1(1, 1, rng) {
            return false;
        }
        i += 1;
    }
    bernoulli_exp_neg_le1(rem, den, rng)
}

/// Discrete Laplace with scale `t ≥ 1`: P[x] ∝ e^{−|x|/t} (CKS Algorithm 2).
fn discrete_laplace<R: Rng + ?Sized>(t: u128, rng: &mut R) -> i64 {
    loop {
        let u = rng.random_range(0..t);
        if !bernoulli_exp_neg(u, t, rng) {
            continue;
        }
        let mut v: u128 = 0;
        while bernoulli_exp_neg_le1(1, 1, rng) {
            v += 1;
        }
        let Some(x) = t.checked_mul(v).and_then(|tv| tv.checked_add(u)) else {
            continue;
        };
        let Ok(x) = i64::try_from(x) else {
            continue; // beyond i64: probability e^{-2^63/t}, below any representable number
        };
        let negative = rng.random::<bool>();
        if negative && x == 0 {
            continue;
        }
        return if negative { -x } else { x };
    }
}

// ---------------------------------------------------------------------------------------------
// Clipping, rounding, sensitivity
// ---------------------------------------------------------------------------------------------

/// Scales `update` down (in place) so that its L2 norm is at most `l2_clip`; returns the norm
/// it had before. Vectors already within the bound are left unchanged.
pub fn clip_and_scale(update: &mut [f64], l2_clip: f64) -> Result<f64, DpError> {
    if !(l2_clip.is_finite() && l2_clip > 0.0) {
        return Err(invalid("l2_clip", l2_clip, "must be finite and > 0"));
    }
    if update.iter().any(|v| !v.is_finite()) {
        return Err(DpError::NonFinite { what: "update" });
    }
    let norm = update.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm > l2_clip {
        let s = l2_clip / norm;
        update.iter_mut().for_each(|v| *v *= s);
    }
    Ok(norm)
}

/// L1 and L2 sensitivity of one participant's INTEGER vector (add/remove one participant).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntegerSensitivity {
    pub l1: f64,
    pub l2: f64,
}

/// Sensitivity of a vector that was clipped to L2 norm `l2_clip`, multiplied by the
/// fixed-point `scale`, and randomly rounded to integers (Kairouz, Liu, Steinke 2021, §4.1):
///
/// * plain randomized rounding (`beta = 0`): every coordinate moves by less than 1, so
///   `Δ₂ ≤ c + √d` with `c = l2_clip·scale`;
/// * conditional randomized rounding (`0 < beta < 1`: re-round until the norm is within the
///   bound, see [`randomized_round`]): `Δ₂ = min(c + √d, √(c² + d/4 + √(2 ln(1/β))·(c + √d/2)))`,
///   a bound a single rounding meets with probability ≥ 1 − β.
///
/// For integer vectors `‖x‖₁ ≤ min(√d·‖x‖₂, ‖x‖₂²)`, hence `Δ₁ = Δ₂·min(√d, Δ₂)`.
pub fn integer_sensitivity(
    l2_clip: f64,
    scale: f64,
    dim: usize,
    beta: f64,
) -> Result<IntegerSensitivity, DpError> {
    if !(l2_clip.is_finite() && l2_clip > 0.0) {
        return Err(invalid("l2_clip", l2_clip, "must be finite and > 0"));
    }
    if !(scale.is_finite() && scale > 0.0) {
        return Err(invalid("scale", scale, "must be finite and > 0"));
    }
    if dim == 0 {
        return Err(invalid("dim", 0.0, "must be ≥ 1"));
    }
    if !(0.0..1.0).contains(&beta) {
        return Err(invalid("beta", beta, "must be in [0, 1)"));
    }
    let c = l2_clip * scale;
    let d = dim as f64;
    let mut l2 = c + d.sqrt();
    if beta > 0.0 {
        let sq = c * c + d / 4.0 + (2.0 * (1.0 / beta).ln()).sqrt() * (c + d.sqrt() / 2.0);
        l2 = l2.min(sq.sqrt());
    }
    Ok(IntegerSensitivity {
        l1: l2 * d.sqrt().min(l2),
        l2,
    })
}

/// Randomized rounding of an already-scaled vector: each `x` becomes `⌊x⌋ + Bernoulli(x − ⌊x⌋)`
/// (unbiased). With `l2_bound = Some(b)` this is *conditional* randomized rounding: the whole
/// vector is re-rounded until its L2 norm is ≤ `b`, at most `max_tries` times (use the `Δ₂`
/// of [`integer_sensitivity`] with a small `beta`, which one rounding meets with probability
/// ≥ 1 − β).
pub fn randomized_round<R: Rng + ?Sized>(
    scaled: &[f64],
    l2_bound: Option<f64>,
    max_tries: u32,
    rng: &mut R,
) -> Result<Vec<i64>, DpError> {
    const LIMIT: f64 = 9.0e18;
    if scaled.iter().any(|v| !v.is_finite() || v.abs() >= LIMIT) {
        return Err(DpError::NonFinite {
            what: "scaled vector",
        });
    }
    if let Some(b) = l2_bound {
        if !(b.is_finite() && b >= 0.0) {
            return Err(invalid("l2_bound", b, "must be finite and ≥ 0"));
        }
    }
    let tries = max_tries.max(1);
    let mut out = vec![0i64; scaled.len()];
    for _ in 0..tries {
        let mut sq = 0.0;
        for (o, &x) in out.iter_mut().zip(scaled) {
            let f = x.floor();
            let up = rng.random::<f64>() < x - f;
            *o = f as i64 + i64::from(up);
            sq += (*o as f64) * (*o as f64);
        }
        match l2_bound {
            Some(b) if sq.sqrt() > b => continue,
            _ => return Ok(out),
        }
    }
    Err(DpError::RoundingFailed {
        bound: l2_bound.unwrap_or(f64::INFINITY),
        tries,
    })
}

// ---------------------------------------------------------------------------------------------
// Accounting
// ---------------------------------------------------------------------------------------------

/// One step of a noise mechanism applied to the aggregated sum, with everything needed for its
/// RDP curve. Sensitivities and noise are in the same (integer) domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mechanism {
    /// Gaussian noise of standard deviation `noise_multiplier · Δ₂` on the sum:
    /// `ε(α) = α / (2·noise_multiplier²)` (Mironov 2017).
    Gaussian { noise_multiplier: f64 },
    /// The sum carries `Sk(mu)` (variance `mu`). Agarwal et al. 2021 (Thm 3.5 / Cor 3.6), valid
    /// for integer `α > 1`:
    /// `ε(α) ≤ α·Δ₂²/(2μ) + min(((2α−1)·Δ₂² + 6Δ₁)/(4μ²), 3Δ₁/(2μ))`.
    /// For a fractional order the bound at `⌈α⌉` is used (RDP is non-decreasing in α).
    Skellam {
        mu: f64,
        l1_sensitivity: f64,
        l2_sensitivity: f64,
    },
    /// Each of `n_participants` adds `N_Z(0, local_sigma²)`; Kairouz, Liu, Steinke 2021
    /// (Thm 1): with `σ_c = √n·local_sigma`, `τ = 10·Σ_{k=1}^{n−1} e^{−2π²·local_sigma²·k/(k+1)}`,
    /// `ε(α) = min(α/2·(Δ₂/σ_c)² + τ·d, α/2·((Δ₂/σ_c)² + 2τΔ₁/σ_c + τ²d), α/2·(Δ₂/σ_c + τ√d)²)`.
    DistributedDiscreteGaussian {
        local_sigma: f64,
        n_participants: usize,
        l1_sensitivity: f64,
        l2_sensitivity: f64,
        dim: usize,
    },
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

impl Mechanism {
    /// Checks the parameters' domains.
    pub fn validate(&self) -> Result<(), DpError> {
        match *self {
            Mechanism::Gaussian { noise_multiplier } => {
                check_positive("noise_multiplier", noise_multiplier)
            }
            Mechanism::Skellam {
                mu,
                l1_sensitivity,
                l2_sensitivity,
            } => {
                check_positive("mu", mu)?;
                check_nonnegative("l1_sensitivity", l1_sensitivity)?;
                check_nonnegative("l2_sensitivity", l2_sensitivity)
            }
            Mechanism::DistributedDiscreteGaussian {
                local_sigma,
                n_participants,
                l1_sensitivity,
                l2_sensitivity,
                dim,
            } => {
                check_positive("local_sigma", local_sigma)?;
                check_nonnegative("l1_sensitivity", l1_sensitivity)?;
                check_nonnegative("l2_sensitivity", l2_sensitivity)?;
                if n_participants == 0 {
                    return Err(invalid("n_participants", 0.0, "must be ≥ 1"));
                }
                if dim == 0 {
                    return Err(invalid("dim", 0.0, "must be ≥ 1"));
                }
                Ok(())
            }
        }
    }

    /// RDP of ONE step at order `alpha > 1` (parameters assumed valid).
    fn rdp_unchecked(&self, alpha: f64) -> f64 {
        match *self {
            Mechanism::Gaussian { noise_multiplier } => {
                alpha / (2.0 * noise_multiplier * noise_multiplier)
            }
            Mechanism::Skellam {
                mu,
                l1_sensitivity: d1,
                l2_sensitivity: d2,
            } => {
                let a = alpha.ceil();
                let d2sq = d2 * d2;
                a * d2sq / (2.0 * mu)
                    + (((2.0 * a - 1.0) * d2sq + 6.0 * d1) / (4.0 * mu * mu))
                        .min(3.0 * d1 / (2.0 * mu))
            }
            Mechanism::DistributedDiscreteGaussian {
                local_sigma,
                n_participants,
                l1_sensitivity: d1,
                l2_sensitivity: d2,
                dim,
            } => {
                let n = n_participants as f64;
                let d = dim as f64;
                let sc = n.sqrt() * local_sigma;
                let s2 = local_sigma * local_sigma;
                let tau = 10.0
                    * (1..n_participants)
                        .map(|k| {
                            let k = k as f64;
                            (-2.0 * std::f64::consts::PI.powi(2) * s2 * k / (k + 1.0)).exp()
                        })
                        .sum::<f64>();
                let (l1, l2) = (d1 / sc, d2 / sc);
                let t1 = alpha / 2.0 * l2 * l2 + tau * d;
                let t2 = alpha / 2.0 * (l2 * l2 + 2.0 * l1 * tau + tau * tau * d);
                let t3 = alpha / 2.0 * (l2 + d.sqrt() * tau).powi(2);
                t1.min(t2).min(t3)
            }
        }
    }

    /// RDP of ONE step at order `alpha > 1`.
    pub fn rdp(&self, alpha: f64) -> Result<f64, DpError> {
        self.validate()?;
        if !(alpha.is_finite() && alpha > 1.0) {
            return Err(invalid("alpha", alpha, "must be finite and > 1"));
        }
        Ok(self.rdp_unchecked(alpha))
    }
}

/// `(ε, best order)` from an RDP curve, with the conversion of Balle et al. 2020 (Thm 21) /
/// Canonne, Kamath, Steinke 2020 (Prop. 12): `ε = rdp(α) + ln((α−1)/α) − (ln δ + ln α)/(α−1)`,
/// minimised over the orders and floored at 0. An all-zero curve (nothing spent) gives ε = 0.
pub fn rdp_to_epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> Result<(f64, f64), DpError> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(invalid("delta", delta, "must be in (0, 1)"));
    }
    if orders.is_empty() || orders.iter().any(|&a| !(a.is_finite() && a > 1.0)) {
        return Err(DpError::InvalidOrders);
    }
    if rdp.len() != orders.len() {
        return Err(DpError::InvalidOrders);
    }
    if rdp.iter().any(|r| r.is_nan() || *r < 0.0) {
        return Err(DpError::NonFinite { what: "rdp curve" });
    }
    if rdp.iter().all(|&r| r == 0.0) {
        return Ok((0.0, orders[0]));
    }
    let mut best = (f64::INFINITY, orders[0]);
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = r + ((a - 1.0) / a).ln() - (delta.ln() + a.ln()) / (a - 1.0);
        if eps < best.0 {
            best = (eps, a);
        }
    }
    Ok((best.0.max(0.0), best.1))
}

/// Rényi-DP accountant: the running RDP curve of everything released so far.
///
/// Serialisable so that it is part of a job's checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
    steps: u64,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An accountant over [`DEFAULT_ORDERS`] with nothing spent.
    pub fn new() -> Self {
        RdpAccountant {
            orders: DEFAULT_ORDERS.to_vec(),
            rdp: vec![0.0; DEFAULT_ORDERS.len()],
            steps: 0,
        }
    }

    /// An accountant over custom orders (each finite and > 1).
    pub fn with_orders(orders: Vec<f64>) -> Result<Self, DpError> {
        if orders.is_empty() || orders.iter().any(|&a| !(a.is_finite() && a > 1.0)) {
            return Err(DpError::InvalidOrders);
        }
        let n = orders.len();
        Ok(RdpAccountant {
            orders,
            rdp: vec![0.0; n],
            steps: 0,
        })
    }

    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The accumulated RDP at each order.
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// Steps composed so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    fn curve_after(&self, mech: &Mechanism, steps: u64) -> Vec<f64> {
        self.orders
            .iter()
            .zip(&self.rdp)
            .map(|(&a, &r)| r + steps as f64 * mech.rdp_unchecked(a))
            .collect()
    }

    /// Adds `steps` releases of `mech` (RDP composes additively).
    pub fn compose(&mut self, mech: &Mechanism, steps: u64) -> Result<(), DpError> {
        mech.validate()?;
        self.rdp = self.curve_after(mech, steps);
        self.steps += steps;
        Ok(())
    }

    /// `steps` rounds of the Gaussian mechanism with this noise multiplier (σ/Δ₂).
    pub fn compose_gaussian(&mut self, noise_multiplier: f64, steps: u64) -> Result<(), DpError> {
        self.compose(&Mechanism::Gaussian { noise_multiplier }, steps)
    }

    /// `steps` rounds of the Skellam mechanism `Sk(mu)` on the sum, with the integer-domain
    /// sensitivities of one participant's vector.
    pub fn compose_skellam(
        &mut self,
        mu: f64,
        l1_sensitivity: f64,
        l2_sensitivity: f64,
        steps: u64,
    ) -> Result<(), DpError> {
        self.compose(
            &Mechanism::Skellam {
                mu,
                l1_sensitivity,
                l2_sensitivity,
            },
            steps,
        )
    }

    /// `(ε, best order)` spent so far at this δ.
    pub fn epsilon(&self, delta: f64) -> Result<(f64, f64), DpError> {
        rdp_to_epsilon(&self.orders, &self.rdp, delta)
    }

    /// `(ε, best order)` there would be after `next_steps` more releases of `mech`.
    pub fn epsilon_after(
        &self,
        mech: &Mechanism,
        next_steps: u64,
        delta: f64,
    ) -> Result<(f64, f64), DpError> {
        mech.validate()?;
        rdp_to_epsilon(&self.orders, &self.curve_after(mech, next_steps), delta)
    }

    /// Whether `next_steps` more releases of `mech` would take ε above `eps_budget`. Ask before
    /// each round and stop when it says yes: the budget is then never overspent.
    pub fn would_exceed(
        &self,
        eps_budget: f64,
        delta: f64,
        mech: &Mechanism,
        next_steps: u64,
    ) -> Result<bool, DpError> {
        check_nonnegative("eps_budget", eps_budget)?;
        Ok(self.epsilon_after(mech, next_steps, delta)?.0 > eps_budget)
    }

    /// The largest number of further releases of `mech` that keep ε ≤ `eps_budget` (0 when
    /// the budget is already spent); capped at 2^40.
    pub fn steps_within_budget(
        &self,
        eps_budget: f64,
        delta: f64,
        mech: &Mechanism,
    ) -> Result<u64, DpError> {
        const CAP: u64 = 1 << 40;
        if self.would_exceed(eps_budget, delta, mech, 0)?
            || self.would_exceed(eps_budget, delta, mech, 1)?
        {
            return Ok(0);
        }
        // Invariant: lo fits, hi does not (or hi = CAP + 1).
        let mut lo = 1u64;
        let mut hi = 2u64;
        while hi <= CAP && !self.would_exceed(eps_budget, delta, mech, hi)? {
            lo = hi;
            hi *= 2;
        }
        if hi > CAP {
            return Ok(CAP);
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.would_exceed(eps_budget, delta, mech, mid)? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    // ---- accountant -------------------------------------------------------------------------

    /// The same conversion, written out independently, minimised over a fine grid of real α.
    fn gaussian_eps_fine_grid(sigma: f64, steps: f64, delta: f64) -> (f64, f64) {
        let mut best = (f64::INFINITY, 0.0);
        let mut a = 1.0005;
        while a < 1024.0 {
            let rdp = steps * a / (2.0 * sigma * sigma);
            let eps = rdp + (1.0 - 1.0 / a).ln() + ((1.0 / delta).ln() - a.ln()) / (a - 1.0);
            if eps < best.0 {
                best = (eps, a);
            }
            a += if a < 4.0 { 0.0005 } else { 0.01 };
        }
        best
    }

    /// erfc with fractional error < 1.2e-7 (Numerical Recipes `erfcc`, Chebyshev fit).
    fn erfc(x: f64) -> f64 {
        let z = x.abs();
        let t = 1.0 / (1.0 + 0.5 * z);
        let ans = t
            * (-z * z - 1.26551223
                + t * (1.00002368
                    + t * (0.37409196
                        + t * (0.09678418
                            + t * (-0.18628806
                                + t * (0.27886807
                                    + t * (-1.13520398
                                        + t * (1.48851587
                                            + t * (-0.82215223 + t * 0.17087277)))))))))
                .exp();
        if x >= 0.0 {
            ans
        } else {
            2.0 - ans
        }
    }

    fn phi(x: f64) -> f64 {
        0.5 * erfc(-x / std::f64::consts::SQRT_2)
    }

    /// The exact (optimal) ε of the Gaussian mechanism with sensitivity 1 and noise `s`
    /// (Balle & Wang 2018): δ(ε) = Φ(1/(2s) − εs) − e^ε·Φ(−1/(2s) − εs), solved for ε.
    fn gaussian_exact_eps(s: f64, delta: f64) -> f64 {
        let dlt = |e: f64| phi(0.5 / s - e * s) - e.exp() * phi(-0.5 / s - e * s);
        let (mut lo, mut hi) = (0.0, 200.0);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if dlt(mid) > delta {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }

    #[test]
    fn gaussian_rdp_matches_the_closed_form_used_by_opacus_and_tf_privacy() {
        // Opacus / TF-Privacy `compute_rdp(q=1, noise_multiplier=σ, steps=T, orders)` is
        // T·α/(2σ²) at every order.
        let mut acc = RdpAccountant::new();
        acc.compose_gaussian(1.3, 250).unwrap();
        for (&a, &r) in acc.orders().iter().zip(acc.rdp()) {
            assert!((r - 250.0 * a / (2.0 * 1.3 * 1.3)).abs() < 1e-9 * r);
        }
        assert_eq!(acc.steps(), 250);
    }

    #[test]
    fn gaussian_epsilon_published_values() {
        // σ = 1, T = 1, δ = 1e-5, over the standard orders. rdp(α) = α/2.
        // Classical conversion ε = rdp + ln(1/δ)/(α−1): α = 5 → 2.5 + 11.5129/4 = 5.3782;
        // α = 6 → 3 + 11.5129/5 = 5.3026 (the minimum, the value TF-Privacy's old
        // `get_privacy_spent` reports for these orders).
        let ln_inv_delta = (1e5f64).ln();
        let classical = DEFAULT_ORDERS
            .iter()
            .map(|&a| (a / 2.0 + ln_inv_delta / (a - 1.0), a))
            .fold((f64::INFINITY, 0.0), |b, x| if x.0 < b.0 { x } else { b });
        assert_eq!(classical.1, 6.0);
        assert!((classical.0 - 5.3026).abs() < 1e-3, "{classical:?}");
        // Improved conversion (what the accountant uses, as Opacus ≥ 1.0):
        // α = 5: 2.5 + ln(4/5) + (ln 1e5 − ln 5)/4 = 2.5 − 0.22314 + 2.47587 = 4.75273;
        // α = 6: 3 + ln(5/6) + (ln 1e5 − ln 6)/5 = 3 − 0.18232 + 1.94423 = 4.76191.
        let mut acc = RdpAccountant::new();
        acc.compose_gaussian(1.0, 1).unwrap();
        let (eps, order) = acc.epsilon(1e-5).unwrap();
        assert_eq!(order, 5.0);
        assert!((eps - 4.75273).abs() < 0.01 * 4.75273, "{eps}");
        // Sound: never below the exact ε of the Gaussian mechanism (Balle & Wang 2018),
        // ≈ 4.377 here, and not much above it.
        let exact = gaussian_exact_eps(1.0, 1e-5);
        assert!((exact - 4.377).abs() < 0.01, "exact {exact}");
        assert!(eps >= exact && eps < 1.2 * exact);
    }

    #[test]
    fn gaussian_epsilon_matches_fine_grid_optimum_within_one_percent() {
        // (σ, T, δ): the optimal real α of these lies inside the order list's span.
        for &(sigma, steps, delta) in &[
            (1.0, 1u64, 1e-5),
            (2.0, 10, 1e-5),
            (10.0, 1000, 1e-5),
            (4.0, 50, 1e-6),
            (0.7, 3, 1e-3),
        ] {
            let mut acc = RdpAccountant::new();
            acc.compose_gaussian(sigma, steps).unwrap();
            let (eps, _) = acc.epsilon(delta).unwrap();
            let (grid, a_star) = gaussian_eps_fine_grid(sigma, steps as f64, delta);
            assert!(
                eps >= grid - 1e-9,
                "σ={sigma} T={steps}: {eps} < grid {grid}"
            );
            assert!(
                eps <= 1.01 * grid,
                "σ={sigma} T={steps}: {eps} vs grid {grid} (α*={a_star})"
            );
            // Composition of T Gaussians is a Gaussian with noise σ/√T: never below exact.
            let exact = gaussian_exact_eps(sigma / (steps as f64).sqrt(), delta);
            assert!(eps >= exact, "σ={sigma} T={steps}: {eps} < exact {exact}");
        }
        // σ = 1, T = 1000: ε ≈ 649 with the optimum at α ≈ 1.15, below the smallest tracked
        // order 1.25, so the accountant is a few percent conservative — never optimistic.
        let mut acc = RdpAccountant::new();
        acc.compose_gaussian(1.0, 1000).unwrap();
        let (eps, order) = acc.epsilon(1e-5).unwrap();
        let (grid, a_star) = gaussian_eps_fine_grid(1.0, 1000.0, 1e-5);
        assert_eq!(order, 1.25);
        assert!(
            a_star < 1.25 && (grid - 649.0).abs() < 2.0,
            "{grid} {a_star}"
        );
        assert!(eps >= grid && eps <= 1.04 * grid, "{eps} vs {grid}");
    }

    #[test]
    fn skellam_rdp_bound_and_gaussian_limit() {
        let m = Mechanism::Skellam {
            mu: 100.0,
            l1_sensitivity: 4.0,
            l2_sensitivity: 2.0,
        };
        // α = 3: 3·4/200 + min((5·4 + 24)/(4·10⁴), 6/100) = 0.06 + 0.0011 = 0.0611
        assert!((m.rdp(3.0).unwrap() - 0.0611).abs() < 1e-12);
        // fractional order uses ⌈α⌉
        assert_eq!(m.rdp(2.5).unwrap(), m.rdp(3.0).unwrap());
        // large μ: Skellam ≈ Gaussian with σ² = μ (noise multiplier √μ/Δ₂), at integer orders
        let orders: Vec<f64> = vec![2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 16.0, 32.0, 64.0];
        let mut sk = RdpAccountant::with_orders(orders.clone()).unwrap();
        sk.compose_skellam(1e6, 1000.0, 1000.0, 100).unwrap();
        let mut g = RdpAccountant::with_orders(orders).unwrap();
        g.compose_gaussian(1.0, 100).unwrap();
        let (es, _) = sk.epsilon(1e-5).unwrap();
        let (eg, _) = g.epsilon(1e-5).unwrap();
        assert!(es >= eg && es < 1.02 * eg, "{es} vs {eg}");
        // at fractional orders the bound of ⌈α⌉ is used, so the default-order accountant is
        // never below the integer-order one
        let mut sk_default = RdpAccountant::new();
        sk_default
            .compose_skellam(1e6, 1000.0, 1000.0, 100)
            .unwrap();
        assert!(sk_default.epsilon(1e-5).unwrap().0 >= eg);
        // invalid parameters are refused
        assert!(matches!(
            sk.compose_skellam(0.0, 1.0, 1.0, 1),
            Err(DpError::InvalidParameter { name: "mu", .. })
        ));
        assert!(matches!(
            sk.epsilon(0.0),
            Err(DpError::InvalidParameter { name: "delta", .. })
        ));
        assert!(RdpAccountant::with_orders(vec![1.0, 2.0]).is_err());
    }

    #[test]
    fn distributed_discrete_gaussian_approaches_gaussian_with_enough_local_noise() {
        // 10 participants, local σ = 5 (integer domain): τ ≈ 10·9·e^{−2π²·25/2} ≈ 0.
        let ddg = Mechanism::DistributedDiscreteGaussian {
            local_sigma: 5.0,
            n_participants: 10,
            l1_sensitivity: 100.0,
            l2_sensitivity: 15.0,
            dim: 100,
        };
        let g = Mechanism::Gaussian {
            noise_multiplier: 10f64.sqrt() * 5.0 / 15.0,
        };
        for &a in &DEFAULT_ORDERS {
            let (x, y) = (ddg.rdp(a).unwrap(), g.rdp(a).unwrap());
            assert!((x - y).abs() <= 1e-12 * y, "{x} vs {y}");
        }
        // tiny local noise: τ is large and the bound much worse than the Gaussian's
        let weak = Mechanism::DistributedDiscreteGaussian {
            local_sigma: 0.1,
            n_participants: 10,
            l1_sensitivity: 100.0,
            l2_sensitivity: 15.0,
            dim: 100,
        };
        let g = Mechanism::Gaussian {
            noise_multiplier: 10f64.sqrt() * 0.1 / 15.0,
        };
        assert!(weak.rdp(2.0).unwrap() > g.rdp(2.0).unwrap());
    }

    #[test]
    fn would_exceed_stops_before_the_budget() {
        let mech = Mechanism::Gaussian {
            noise_multiplier: 5.0,
        };
        let (budget, delta) = (3.0, 1e-5);
        let mut acc = RdpAccountant::new();
        let allowed = acc.steps_within_budget(budget, delta, &mech).unwrap();
        assert!(allowed > 10, "{allowed}");
        let mut rounds = 0u64;
        while !acc.would_exceed(budget, delta, &mech, 1).unwrap() {
            acc.compose(&mech, 1).unwrap();
            rounds += 1;
            assert!(rounds < 100_000);
        }
        assert_eq!(rounds, allowed);
        assert!(acc.epsilon(delta).unwrap().0 <= budget);
        let mut over = acc.clone();
        over.compose(&mech, 1).unwrap();
        assert!(over.epsilon(delta).unwrap().0 > budget);
        assert_eq!(acc.steps_within_budget(budget, delta, &mech).unwrap(), 0);
        // nothing spent → ε = 0
        assert_eq!(RdpAccountant::new().epsilon(delta).unwrap().0, 0.0);
        // the accountant round-trips through serde (it is part of a checkpoint)
        let s = serde_json::to_string(&acc).unwrap();
        let back: RdpAccountant = serde_json::from_str(&s).unwrap();
        assert_eq!(back, acc);
    }

    // ---- samplers ---------------------------------------------------------------------------

    /// (mean, variance) of integer samples.
    fn moments(v: &[i64]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var)
    }

    /// Sample mean within 3 standard errors of 0 and variance within 3 standard errors of
    /// `var` (the SE of a sample variance is √((2σ⁴ + κ₄)/N), κ₄ the fourth cumulant).
    fn assert_moments(v: &[i64], var: f64, kappa4: f64) {
        let n = v.len() as f64;
        let (m, s2) = moments(v);
        let se_mean = (var / n).sqrt();
        let se_var = ((2.0 * var * var + kappa4) / n).sqrt();
        assert!(m.abs() < 3.0 * se_mean, "mean {m}, se {se_mean}");
        assert!(
            (s2 - var).abs() < 3.0 * se_var,
            "variance {s2} vs {var}, se {se_var}"
        );
    }

    #[test]
    fn skellam_sampler_moments() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for &mu in &[0.7, 10.0, 2500.0] {
            let v = skellam_noise(mu, 200_000, &mut rng).unwrap();
            // Skellam cumulants: odd 0, even μ (sum of two Poisson(μ/2)).
            assert_moments(&v, mu, mu);
        }
        assert_eq!(skellam_noise(0.0, 3, &mut rng).unwrap(), vec![0, 0, 0]);
        assert!(skellam_noise(-1.0, 3, &mut rng).is_err());
        assert!(skellam_noise(f64::NAN, 3, &mut rng).is_err());
    }

    #[test]
    fn discrete_gaussian_sampler_moments() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        // For σ ≥ 1 the variance of N_Z(0, σ²) equals σ² up to ~1e-7 and κ₄ ≈ 0.
        for &sigma in &[1.5, 4.0, 37.3] {
            let v = discrete_gaussian_noise(sigma, 200_000, &mut rng).unwrap();
            assert_moments(&v, sigma * sigma, 0.0);
        }
        // A large σ exercises the d = 1 path.
        let v = discrete_gaussian_noise(3.0e6, 20_000, &mut rng).unwrap();
        let (_, s2) = moments(&v);
        assert!((s2.sqrt() / 3.0e6 - 1.0).abs() < 0.03);
        // Small σ: P[0] = 1/Σ_k e^{−k²/(2σ²)}; σ = 0.5 → 1/(1 + 2e^{-2} + 2e^{-8} + …).
        let v = discrete_gaussian_noise(0.5, 200_000, &mut rng).unwrap();
        let p0 = v.iter().filter(|&&x| x == 0).count() as f64 / v.len() as f64;
        let z: f64 = (-20i64..=20).map(|k| (-(k * k) as f64 / 0.5).exp()).sum();
        let expect = 1.0 / z;
        let se = (expect * (1.0 - expect) / v.len() as f64).sqrt();
        assert!((p0 - expect).abs() < 3.0 * se, "{p0} vs {expect}");
        assert!(discrete_gaussian_noise(-1.0, 3, &mut rng).is_err());
        assert!(matches!(
            discrete_gaussian_noise(1e9, 3, &mut rng),
            Err(DpError::TooLarge { .. })
        ));
    }

    #[test]
    fn sum_of_participant_shares_has_the_target_variance() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let (n, len) = (5usize, 200_000usize);
        // Skellam: shares Sk(μ/n) sum to exactly Sk(μ).
        let mu = 40.0;
        let share = skellam_share(mu, n).unwrap();
        let mut total = vec![0i64; len];
        for _ in 0..n {
            let v = skellam_noise(share, len, &mut rng).unwrap();
            total.iter_mut().zip(v).for_each(|(t, x)| *t += x);
        }
        assert_moments(&total, mu, mu);
        // Distributed discrete Gaussian: shares N_Z(0, σ²/n), each with σ/√n ≥ 1.
        let sigma = 12.0;
        let share = discrete_gaussian_share(sigma, n).unwrap();
        assert!((share - 12.0 / 5f64.sqrt()).abs() < 1e-12);
        let mut total = vec![0i64; len];
        for _ in 0..n {
            let v = discrete_gaussian_noise(share, len, &mut rng).unwrap();
            total.iter_mut().zip(v).for_each(|(t, x)| *t += x);
        }
        assert_moments(&total, sigma * sigma, 0.0);
        assert!(skellam_share(1.0, 0).is_err());
    }

    #[test]
    fn sampler_is_deterministic_for_a_seed() {
        let a = discrete_gaussian_noise(3.0, 100, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
        let b = discrete_gaussian_noise(3.0, 100, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
        assert_eq!(a, b);
    }

    // ---- clipping, rounding, sensitivity ----------------------------------------------------

    #[test]
    fn clipping_bounds_the_norm() {
        let mut v = vec![3.0, 4.0];
        assert_eq!(clip_and_scale(&mut v, 1.0).unwrap(), 5.0);
        assert!((v[0] - 0.6).abs() < 1e-15 && (v[1] - 0.8).abs() < 1e-15);
        let mut w = vec![0.3, 0.4];
        clip_and_scale(&mut w, 1.0).unwrap();
        assert_eq!(w, vec![0.3, 0.4]);
        assert!(clip_and_scale(&mut w, 0.0).is_err());
        assert!(clip_and_scale(&mut [f64::NAN], 1.0).is_err());
    }

    #[test]
    fn integer_sensitivity_and_conditional_rounding() {
        // c = 1·100 = 100, d = 16: unconditional Δ₂ = 104; conditional with β = e^{-0.5}
        // (√(2 ln 1/β) = 1): √(10⁴ + 4 + 102) = √10106.
        let s = integer_sensitivity(1.0, 100.0, 16, 0.0).unwrap();
        assert!((s.l2 - 104.0).abs() < 1e-12);
        assert!((s.l1 - 104.0 * 4.0).abs() < 1e-9);
        let s = integer_sensitivity(1.0, 100.0, 16, (-0.5f64).exp()).unwrap();
        assert!((s.l2 - 10106f64.sqrt()).abs() < 1e-9);
        // tiny clip, conditional rounding: Δ₂ ≈ 51.5 < √d = 100, so Δ₁ = Δ₂²
        let s = integer_sensitivity(0.01, 1.0, 10_000, 0.01).unwrap();
        assert!(s.l2 < 100.0);
        assert!((s.l1 - s.l2 * s.l2).abs() < 1e-9);
        assert!(integer_sensitivity(1.0, 1.0, 0, 0.0).is_err());
        assert!(integer_sensitivity(1.0, 1.0, 3, 1.0).is_err());

        // Rounding is unbiased and the conditional version respects its bound.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut x = vec![0.6, -0.6, 2.0, 0.5];
        clip_and_scale(&mut x, 1.0).unwrap();
        let scaled: Vec<f64> = x.iter().map(|v| v * 100.0).collect();
        let bound = integer_sensitivity(1.0, 100.0, 4, 1e-3).unwrap().l2;
        let mut mean = [0.0; 4];
        let reps = 20_000;
        for _ in 0..reps {
            let r = randomized_round(&scaled, Some(bound), 100, &mut rng).unwrap();
            let nrm = r.iter().map(|&v| (v * v) as f64).sum::<f64>().sqrt();
            assert!(nrm <= bound);
            for (m, v) in mean.iter_mut().zip(&r) {
                *m += *v as f64 / reps as f64;
            }
        }
        for (m, s) in mean.iter().zip(&scaled) {
            assert!((m - s).abs() < 0.02, "{m} vs {s}");
        }
        assert!(matches!(
            randomized_round(&[10.5], Some(1.0), 5, &mut rng),
            Err(DpError::RoundingFailed { tries: 5, .. })
        ));
    }
}
