//! From a float update to an integer vector: clipping, randomized rounding (plain or
//! conditional on a norm bound) and the integer-domain sensitivity the accountant needs.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{at_least_one, check_nonnegative, check_positive, invalid, DpError};

/// Scales `update` down (in place) so that its L2 norm is at most `l2_clip`; returns the norm
/// it had before. Vectors already within the bound are left unchanged.
pub fn clip_and_scale(update: &mut [f64], l2_clip: f64) -> Result<f64, DpError> {
    check_positive("l2_clip", l2_clip)?;
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
    check_positive("l2_clip", l2_clip)?;
    check_positive("scale", scale)?;
    at_least_one("dim", dim)?;
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
        check_nonnegative("l2_bound", b)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

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
