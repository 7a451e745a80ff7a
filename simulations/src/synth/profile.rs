//! One institution's customer mix ([`InstitutionProfile`]) and the spread of `n` of them.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{stream_key, SynthError};

/// One institution's customer mix; see the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstitutionProfile {
    pub name: String,
    pub rows: usize,
    /// Years added to the mean age.
    #[serde(default)]
    pub age_shift: f64,
    /// Multiplies every income (> 0).
    #[serde(default = "one")]
    pub income_scale: f64,
    /// Added to log total assets.
    #[serde(default)]
    pub wealth_tilt: f64,
    /// Share of digital-first customers at age 45, in [0, 1].
    #[serde(default = "half")]
    pub digital_share: f64,
    /// Added to the logit of holding each credit product (card, mortgage, personal loan).
    #[serde(default)]
    pub credit_tilt: f64,
    /// Added to the mean of the latent rate sensitivity.
    #[serde(default)]
    pub rate_sensitivity_shift: f64,
}

fn one() -> f64 {
    1.0
}

fn half() -> f64 {
    0.5
}

impl InstitutionProfile {
    /// A typical institution: no shifts, half of the customers digital-first.
    pub fn new(name: impl Into<String>, rows: usize) -> Self {
        InstitutionProfile {
            name: name.into(),
            rows,
            age_shift: 0.0,
            income_scale: 1.0,
            wealth_tilt: 0.0,
            digital_share: 0.5,
            credit_tilt: 0.0,
            rate_sensitivity_shift: 0.0,
        }
    }

    /// Institution `index` of `n`, placed on a Latin hypercube: on each of the six axes the `n`
    /// institutions take the `n` evenly spaced positions `u ∈ (−1, 1)` in a seeded random order
    /// (one order per axis), so every axis is covered evenly and the axes are independent.
    /// With heterogeneity `h`: `age_shift = 10 h u₁` years, `income_scale = exp(0.4 h u₂)`,
    /// `wealth_tilt = 0.6 h u₃`, `digital_share = 0.5 + 0.35 h u₄` (clamped to [0.02, 0.98]),
    /// `credit_tilt = 0.5 h u₅`, `rate_sensitivity_shift = 0.5 h u₆`. `h = 0` gives `n`
    /// identical mixes (different customers).
    pub fn spread(
        name: impl Into<String>,
        index: usize,
        n: usize,
        rows: usize,
        heterogeneity: f64,
        seed: u64,
    ) -> Result<Self, SynthError> {
        let name = name.into();
        if index >= n {
            return Err(SynthError::InvalidProfile {
                name,
                reason: format!("index {index} is not below the institution count {n}"),
            });
        }
        if !(heterogeneity.is_finite() && heterogeneity >= 0.0) {
            return Err(SynthError::InvalidProfile {
                name,
                reason: format!("heterogeneity must be a non-negative number, got {heterogeneity}"),
            });
        }
        let h = heterogeneity;
        let u = |axis: u8| {
            let mut order: Vec<usize> = (0..n).collect();
            let mut rng = ChaCha8Rng::from_seed(stream_key(seed, &[b"profile-axis", &[axis]]));
            order.shuffle(&mut rng);
            (order[index] as f64 + 0.5) / n as f64 * 2.0 - 1.0
        };
        Ok(InstitutionProfile {
            name,
            rows,
            age_shift: 10.0 * h * u(1),
            income_scale: (0.4 * h * u(2)).exp(),
            wealth_tilt: 0.6 * h * u(3),
            digital_share: (0.5 + 0.35 * h * u(4)).clamp(0.02, 0.98),
            credit_tilt: 0.5 * h * u(5),
            rate_sensitivity_shift: 0.5 * h * u(6),
        })
    }

    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |reason: &str| {
            Err(SynthError::InvalidProfile {
                name: self.name.clone(),
                reason: reason.to_string(),
            })
        };
        let all = [
            self.age_shift,
            self.income_scale,
            self.wealth_tilt,
            self.digital_share,
            self.credit_tilt,
            self.rate_sensitivity_shift,
        ];
        if !all.iter().all(|v| v.is_finite()) {
            return bad("every shift must be a finite number");
        }
        if self.income_scale <= 0.0 {
            return bad("income_scale must be positive");
        }
        if !(0.0..=1.0).contains(&self.digital_share) {
            return bad("digital_share must be in [0, 1]");
        }
        Ok(())
    }
}
