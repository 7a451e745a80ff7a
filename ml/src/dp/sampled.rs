//! RDP of the Poisson-subsampled Gaussian mechanism (Mironov, Talwar, Zhang 2019, "Rényi
//! Differential Privacy of the Sampled Gaussian Mechanism"), computed as TF Privacy's /
//! `dp-accounting`'s / Opacus's `_compute_rdp`: the integer-order binomial sum
//! (`_compute_log_a_int`) and the fractional-order two-series form (`_compute_log_a_frac`),
//! both in log space.
//!
//! Neighbouring datasets differ by adding or removing one record; each record is included in a
//! step's batch independently with probability `q`, and the batch's clipped sum (L2 sensitivity
//! 1 in units of the noise multiplier) gets `N(0, σ²)` per coordinate.

/// Terms of the fractional-order series before it is declared not to converge (as the
/// reference implementations).
const MAX_FRAC_TERMS: u32 = 1000;

/// Integer orders above this use the unsampled bound `α/(2σ²)` instead of the `α+1`-term sum.
pub(super) const MAX_INT_ORDER: f64 = 4096.0;

/// `ln(eˣ + eʸ)`.
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// `ln |C(n, k)|` for real `n`, `k` (through `ln |Γ|`, as `scipy.special.gammaln`).
fn log_comb(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// `ln erfc(x)`, accurate to a few ulps over the whole line: fdlibm's `erfc` (libm crate) where
/// it is a normal number (`x < 20`: erfc(20) ≈ 5e-176), and beyond, where it would underflow,
/// Laplace's continued fraction `erfc(x) = e^{−x²}/√π · 1/(x + ½/(x + 1/(x + (3/2)/(x + …))))`,
/// 60 levels deep (its truncation error at `x ≥ 20` is far below the f64 ulp).
pub(super) fn log_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 20.0 {
        return libm::erfc(x).ln();
    }
    if x == f64::INFINITY {
        return f64::NEG_INFINITY;
    }
    let mut t = x;
    for k in (1..=60u32).rev() {
        t = x + f64::from(k) / 2.0 / t;
    }
    -x * x - 0.5 * std::f64::consts::PI.ln() - t.ln()
}

/// `ln A_α` for integer `α ≥ 2`, `0 < q < 1`: `A_α = Σ_{i=0}^{α} C(α,i) q^i (1−q)^{α−i}
/// e^{(i²−i)/(2σ²)}`.
fn log_a_int(q: f64, sigma: f64, alpha: u32) -> f64 {
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let a = f64::from(alpha);
    let mut log_a = f64::NEG_INFINITY;
    for i in 0..=alpha {
        let i = f64::from(i);
        let coef = log_comb(a, i) + i * lq + (a - i) * l1q;
        log_a = log_add(log_a, coef + (i * i - i) / (2.0 * sigma * sigma));
    }
    log_a
}

/// `ln A_α` for fractional `α > 1`, `0 < q < 1` (MTZ 2019 §3.3): the integrals over
/// `(−∞, z₀]` and `[z₀, ∞)` as two series, `z₀ = σ² ln(1/q − 1) + ½`. `None` when the terms are
/// still not negligible after [`MAX_FRAC_TERMS`] (where the reference reports ∞).
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> Option<f64> {
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let s2 = sigma * sigma;
    let z0 = s2 * (1.0 / q - 1.0).ln() + 0.5;
    let half = 0.5f64.ln();
    let root2s = std::f64::consts::SQRT_2 * sigma;
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (mut last0, mut last1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for i in 0..MAX_FRAC_TERMS {
        let i = f64::from(i);
        let coef = log_comb(alpha, i);
        let j = alpha - i;
        let t0 = coef + i * lq + j * l1q;
        let t1 = coef + j * lq + i * l1q;
        let e0 = half + log_erfc((i - z0) / root2s);
        let e1 = half + log_erfc((z0 - j) / root2s);
        let s0 = t0 + (i * i - i) / (2.0 * s2) + e0;
        let s1 = t1 + (j * j - j) / (2.0 * s2) + e1;
        log_a0 = log_add(log_a0, s0);
        log_a1 = log_add(log_a1, s1);
        let total = log_add(log_a0, log_a1);
        if s0 < last0 && s1 < last1 && s0.max(s1) < total - 30.0 {
            return Some(total);
        }
        last0 = s0;
        last1 = s1;
    }
    None
}

/// `ln A_α / (α−1)` by the integer sum, `None` above [`MAX_INT_ORDER`].
fn int_order_rdp(q: f64, sigma: f64, alpha: f64) -> Option<f64> {
    (alpha <= MAX_INT_ORDER).then(|| log_a_int(q, sigma, alpha as u32) / (alpha - 1.0))
}

/// RDP at order `alpha > 1` of one step of the Poisson-subsampled Gaussian with sampling rate
/// `0 ≤ q ≤ 1` and noise multiplier `sigma > 0` (parameters assumed valid).
///
/// As the reference implementations: `q = 0` → 0, `q = 1` → `α/(2σ²)`, integer `α` → the
/// binomial sum, fractional `α` → the two series. Where they give up, this stays finite and
/// sound: a fractional order whose series does not converge takes the value at `⌈α⌉` (RDP is
/// non-decreasing in α), and an integer order above [`MAX_INT_ORDER`] the unsampled
/// `α/(2σ²)`. Every value is clamped into `[0, α/(2σ²)]` (subsampling never increases the Rényi
/// divergence, by its joint quasi-convexity; the clamp only removes rounding noise).
pub(super) fn sampled_gaussian_rdp(q: f64, sigma: f64, alpha: f64) -> f64 {
    let full = alpha / (2.0 * sigma * sigma);
    if q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return full;
    }
    let r = if alpha.fract() == 0.0 {
        int_order_rdp(q, sigma, alpha)
    } else {
        log_a_frac(q, sigma, alpha)
            .map(|l| l / (alpha - 1.0))
            .or_else(|| int_order_rdp(q, sigma, alpha.ceil()))
    };
    match r {
        Some(r) if r.is_finite() => r.clamp(0.0, full),
        _ => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_erfc_is_accurate_across_the_switch_and_in_the_far_tail() {
        // both branches agree where both are representable
        for &x in &[5.0, 8.0, 12.0, 19.9, 20.0, 24.0, 26.0] {
            let direct = libm::erfc(x).ln();
            let mut t = x;
            for k in (1..=60u32).rev() {
                t = x + f64::from(k) / 2.0 / t;
            }
            let cf = -x * x - 0.5 * std::f64::consts::PI.ln() - t.ln();
            assert!(
                (direct - cf).abs() <= 1e-13 * direct.abs(),
                "{x}: {direct} vs {cf}"
            );
        }
        // values from scipy: log(2) + special.log_ndtr(-x * sqrt(2))
        for &(x, want) in &[
            (0.0, 0.0),
            (1.0, -1.849605509933249),
            (-2.0, 0.6908055736465877),
            (30.0, -903.9741171106442),
            (1e3, -1000007.4801207221),
        ] {
            let got = log_erfc(x);
            assert!(
                (got - want).abs() <= 1e-14 * want.abs().max(1.0),
                "{x}: {got} vs {want}"
            );
        }
        assert_eq!(log_erfc(f64::INFINITY), f64::NEG_INFINITY);
        assert!(log_erfc(f64::NAN).is_nan());
    }

    #[test]
    fn edge_rates_and_orders() {
        assert_eq!(sampled_gaussian_rdp(0.0, 1.0, 2.0), 0.0);
        assert_eq!(sampled_gaussian_rdp(1.0, 2.0, 3.0), 3.0 / 8.0);
        // α = 2 closed form: ln(1 + q²(e^{1/σ²} − 1))
        let (q, s) = (0.01f64, 1.3f64);
        let want = (q * q * ((1.0 / (s * s)).exp() - 1.0)).ln_1p();
        let got = sampled_gaussian_rdp(q, s, 2.0);
        assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
        // the fractional series and the integer sum meet continuously
        let (a, b, c) = (
            sampled_gaussian_rdp(q, s, 2.999_999),
            sampled_gaussian_rdp(q, s, 3.0),
            sampled_gaussian_rdp(q, s, 3.000_001),
        );
        assert!(
            a <= b * (1.0 + 1e-5) && b <= c * (1.0 + 1e-5),
            "{a} {b} {c}"
        );
        assert!((a - c).abs() < 1e-4 * b);
        // huge integer order: the unsampled bound, finite
        let big = sampled_gaussian_rdp(0.1, 1.0, 1e6);
        assert_eq!(big, 1e6 / 2.0);
    }

    #[test]
    fn a_non_converging_fractional_order_takes_the_next_integer_order() {
        // dp-accounting reports ∞ here (its series does not converge in 1000 terms, see the
        // reference table's left-out cells); the accountant uses the sound value at ⌈α⌉ = 2.
        assert!(log_a_frac(0.05, 0.6, 1.1).is_none());
        let at2 = sampled_gaussian_rdp(0.05, 0.6, 2.0);
        assert_eq!(sampled_gaussian_rdp(0.05, 0.6, 1.1), at2);
        assert!(at2.is_finite() && at2 < 2.0 / (2.0 * 0.36));
        // where it converges, the fractional order is below the next integer one
        let r = sampled_gaussian_rdp(0.05, 0.6, 2.5);
        assert!(
            log_a_frac(0.05, 0.6, 2.5).is_some()
                && at2 <= r
                && r <= sampled_gaussian_rdp(0.05, 0.6, 3.0)
        );
    }
}
