//! Integer noise: the Skellam and discrete Gaussian samplers and the share of the total noise
//! each participant adds.

use rand::Rng;
use rand_distr::{Distribution, Poisson};

use super::{at_least_one, check_nonnegative, invalid, DpError};

/// Largest `den` of the rational exponent `γ = num/den` the discrete Gaussian sampler works
/// with (see [`discrete_gaussian_noise`]): with `den ≤ 2^100` any candidate whose squared
/// distance overflows 128 bits has `γ ≥ 2^28`, acceptance probability `e^{-2^28}`.
const DG_MAX_DEN: u128 = 1 << 100;

/// Skellam variance each of `n_participants` adds so that the sum has variance `mu_total`:
/// `mu_total / n`.
pub fn skellam_share(mu_total: f64, n_participants: usize) -> Result<f64, DpError> {
    check_nonnegative("mu_total", mu_total)?;
    at_least_one("n_participants", n_participants)?;
    Ok(mu_total / n_participants as f64)
}

/// `len` independent draws of `Sk(mu) = Poisson(mu/2) − Poisson(mu/2)` (mean 0, variance
/// `mu`). `mu` is THIS participant's share (see [`skellam_share`]); `mu = 0` gives zeros.
pub fn skellam_noise<R: Rng + ?Sized>(
    mu: f64,
    len: usize,
    rng: &mut R,
) -> Result<Vec<i64>, DpError> {
    check_nonnegative("mu", mu)?;
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
    check_nonnegative("sigma_total", sigma_total)?;
    at_least_one("n_participants", n_participants)?;
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
    check_nonnegative("sigma", sigma)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

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
}
