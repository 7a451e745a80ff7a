//! Synthetic retail-bank customers with churn, default and product-propensity labels.
//!
//! The generator is meant to be read: every quantity below is drawn exactly as written, every
//! coefficient is a field of [`SynthConfig`] (defaults in brackets), and institutions differ only
//! through the [`InstitutionProfile`] knobs. Nothing here is fitted to real customers.
//!
//! # Model, per customer
//!
//! Notation: `z` a fresh standard normal draw, `U(a, b)` uniform, `Bern(p)` a coin with
//! probability `p`, `Pois(λ)` Poisson, `σ(x) = 1 / (1 + e^-x)`, `ln` natural log.
//! `A/20k` is shorthand for `A / 20,000` and `I/35k` for `income / 35,000`.
//!
//! **Latent traits** (never written out; kept in [`Customer::latent`] for audit):
//! - engagement `e = z` — depth of the relationship;
//! - financial stress `s = z`;
//! - rate sensitivity `r = rate_sensitivity_shift + z` — how readily the customer moves money
//!   for a better rate;
//! - digital-first `d = Bern(σ(logit(digital_share) + digital_age_slope [-0.05] · (age − 45)))`.
//!
//! **Profile** (`population`):
//! - `age`: `N(age_mean [45] + age_shift, age_sd [15])`, redrawn (up to 32 times, then
//!   clamped) until in `[18, 90]`, whole years.
//! - `income` (annual): `income_median [35,000] · income_scale · exp(−income_age_curvature
//!   [0.0004] · (age − 50)² + income_sigma [0.5] · z)`.
//! - `tenure_months`: exponential with mean `tenure_mean_months [96]`, at most the months since
//!   the 18th birthday, at least 1.
//! - total assets `A = income · assets_to_income [0.4] · exp(wealth_tilt + assets_age_slope
//!   [0.02] · (age − 45) + assets_sigma [1.1] · z)`.
//!
//! **Products** (`products`; the current account is always held):
//! - fixed deposit: `Bern(σ(fd_intercept [-1.0] + fd_assets [0.6] · ln(A/20k) + fd_age [0.02] ·
//!   (age − 45)))`;
//! - wealth management: `Bern(σ(wealth_intercept [-1.6] + wealth_assets [0.9] · ln(A/20k)))`;
//! - credit card: `Bern(σ(card_intercept [0.2] + card_income [0.8] · ln(I/35k) + card_engagement
//!   [0.4] · e + credit_tilt))`;
//! - mortgage: `Bern(σ(mortgage_intercept [-0.5] + mortgage_income [0.8] · ln(I/35k) −
//!   mortgage_age_curvature [0.004] · (age − 42)² + credit_tilt))`;
//! - personal loan: `Bern(σ(loan_intercept [-2.0] + loan_stress [0.6] · s + credit_tilt))`;
//! - insurance: `Bern(σ(insurance_intercept [-0.8] + insurance_age [0.02] · (age − 45) +
//!   insurance_mortgage [1.0] · mortgage))`.
//! - `n_products` = 1 + the number of products above.
//!
//! **Balances**: `A` is split between the current account (weight 1), the fixed deposit (weight
//! `exp(0.7 + 0.5 z)` if held) and wealth management (weight `exp(1.0 + 0.5 z)` if held).
//! `maa` (monthly average assets) `= A · exp(maa_noise_sd [0.05] · z)` — balances are month-end
//! figures, MAA the month's average. `balance_trend_3m` (relative change of MAA over the last
//! three months) `= trend_mean [0] + trend_sd [0.08] · z`.
//!
//! **Debt** (`products`): mortgage balance `income · U(1.5, 4.0)`, personal loan `income ·
//! U(0.05, 0.4)`, card balance `income · card_balance_to_income [0.03] · exp(0.8 z + 0.3 max(s,
//! 0))`. `debt_to_income` = annual repayments / income, where repayments are 7 % of the
//! mortgage (a 25-year annuity at 5 %), a third of the loan and 60 % of the card balance (5 % a
//! month). `missed_payments_12m = Pois(missed_base [0.15] · exp(missed_stress [0.8] · s +
//! missed_dti [1.0] · debt_to_income))` for customers with a credit product, else 0.
//!
//! **Activity** (`activity`): `transactions_per_month = Pois(transactions_base [25] ·
//! exp(transactions_engagement [0.5] · e + transactions_income [0.2] · ln(I/35k)))`;
//! `mobile_logins_per_month = Pois((d ? mobile_digital [18] : mobile_other [1.5]) ·
//! exp(mobile_engagement [0.4] · e))`; `branch_visits_per_month = Pois((d ? branch_digital [0.2] :
//! branch_other [1.2]) · exp(branch_age [0.02] · (age − 45) + branch_engagement [0.3] · e))`;
//! `rate_enquiries_3m = Pois(enquiries_base [0.3] · exp(enquiries_rate [1.0] · r))` (rate-page
//! visits and rate-match requests); `fd_maturing_next_month = fixed deposit held and
//! Bern(1 / fd_term_months [12])`.
//!
//! **Segment** (`segments`) by MAA: `mass` below `mass_affluent_maa [10,000]`, `mass_affluent`
//! below `affluent_maa [50,000]`, `affluent` below `private_maa [250,000]`, else `private`.
//!
//! # Labels
//!
//! **Engagement index** (observable): `ln(1 + transactions) + ln(1 + mobile logins) + ln(1 +
//! branch visits) + 0.5 · (n_products − 1)`, standardised as `z_eng = (index −
//! engagement_center [6.4]) / engagement_scale [1.5]` (the default population's mean and
//! standard deviation).
//!
//! **`churn`** (`churn`): a high-value customer whose assets fall sharply next month. A customer
//! starts moving money out next month with probability (hazard) `h = σ(intercept [-1.05] + engagement [-0.8] · z_eng +
//! rate_sensitivity [0.6] · r + fd_maturing [1.0] · maturing + balance_trend [-0.5] ·
//! balance_trend_3m / 0.1 + tenure [-0.2] · ln(1 + tenure years))`: low engagement, rate
//! shopping, a maturing deposit, falling balances and short tenure all raise it. A leaver moves
//! `U(leaver_move_min [0.4], leaver_move_max [1.0])` of the assets elsewhere; anyone else's
//! next-month assets are `maa · exp(balance_trend_3m / 3 + stayer_noise_sd [0.06] · z)`.
//! `churn = 1` iff `maa ≥ high_value_maa [20,000]` and next-month assets are below
//! `(1 − drop_fraction [0.5]) · maa`.
//!
//! **`default`** (`default`), 12-month default: `Bern(σ(intercept [-3.8] + dti [4.0] ·
//! debt_to_income + missed_payments [0.5] · missed + tenure_years [-0.04] · tenure years +
//! age_per_decade [-0.15] · (age − 45) / 10 + stress [0.6] · s))`.
//!
//! **`propensity_wealth`** (`wealth`), takes up or tops up a wealth product next quarter:
//! `Bern(σ(intercept [-2.65] + maa [0.6] · ln(maa/20k) + age_per_decade [0.2] · (age − 45) /
//! 10 + mobile [0.3] · ln(1 + mobile logins) + holder [-0.8] · holds wealth management))`.
//!
//! **`propensity_insurance`** (`insurance`): `Bern(σ(intercept [-1.9] − age_curvature [0.3] ·
//! ((age − age_peak [40]) / 10)² + mortgage [0.9] · mortgage + branch [0.5] · ln(1 + branch
//! visits) + maa [0.15] · ln(maa/20k) + holder [-1.0] · holds insurance))`.
//!
//! **Target prevalences** with the defaults and a default profile (tested on 50,000 rows, ±3
//! points): churn ≈ 7 % (5–10 %), default ≈ 3.5 % (2–5 %), propensity_wealth ≈ 10 % and
//! propensity_insurance ≈ 10 % (5–15 %).
//!
//! # Institutions
//!
//! An [`InstitutionProfile`] shifts the customer mix: `age_shift` (years on the mean age),
//! `income_scale` (× every income), `wealth_tilt` (+ on log assets: +0.5 ≈ 65 % more),
//! `digital_share` (share of digital-first customers at age 45), `credit_tilt` (+ on the logit
//! of every credit product: lending appetite), `rate_sensitivity_shift` (+ on the mean rate
//! sensitivity: a savings-led bank attracts rate shoppers). [`InstitutionProfile::spread`] places
//! `n` institutions on a Latin hypercube scaled by a heterogeneity factor.
//!
//! # Determinism and streaming
//!
//! The row stream is a pure function of (config, profile, seed): the ChaCha8 generator is keyed
//! by SHA-256 of (seed, institution name), so two institutions never share a stream.
//! [`SynthGenerator`] is an iterator producing one [`Customer`] at a time; [`write_csv`] streams
//! to any writer, so millions of rows never sit in memory. [`to_table`] is for moderate sizes.

use std::fmt::Write as _;
use std::io::Write;

use fedsilo_ml::table::Table;
use fedsilo_participant::data::{FeatureSpec, LabelSpec, Schema};
use ndarray::Array2;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Poisson, StandardNormal};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("synthetic data config: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("institution '{name}': {reason}")]
    InvalidProfile { name: String, reason: String },
    #[error("writing synthetic CSV: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing synthetic CSV: {0}")]
    Csv(#[from] csv::Error),
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Every coefficient of the generator; see the module documentation for where each enters.
/// Deserialises from TOML with any subset of fields given (the rest default).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    pub population: Population,
    pub products: Products,
    pub activity: Activity,
    pub segments: Segments,
    pub churn: ChurnModel,
    pub default: DefaultModel,
    pub wealth: WealthPropensity,
    pub insurance: InsurancePropensity,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Population {
    pub age_mean: f64,
    pub age_sd: f64,
    pub income_median: f64,
    pub income_sigma: f64,
    pub income_age_peak: f64,
    pub income_age_curvature: f64,
    pub tenure_mean_months: f64,
    pub assets_to_income: f64,
    pub assets_sigma: f64,
    pub assets_age_slope: f64,
    pub maa_noise_sd: f64,
    pub digital_age_slope: f64,
}

impl Default for Population {
    fn default() -> Self {
        Population {
            age_mean: 45.0,
            age_sd: 15.0,
            income_median: 35_000.0,
            income_sigma: 0.5,
            income_age_peak: 50.0,
            income_age_curvature: 0.0004,
            tenure_mean_months: 96.0,
            assets_to_income: 0.4,
            assets_sigma: 1.1,
            assets_age_slope: 0.02,
            maa_noise_sd: 0.05,
            digital_age_slope: -0.05,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Products {
    pub fd_intercept: f64,
    pub fd_assets: f64,
    pub fd_age: f64,
    pub wealth_intercept: f64,
    pub wealth_assets: f64,
    pub card_intercept: f64,
    pub card_income: f64,
    pub card_engagement: f64,
    pub mortgage_intercept: f64,
    pub mortgage_income: f64,
    pub mortgage_age_curvature: f64,
    pub loan_intercept: f64,
    pub loan_stress: f64,
    pub insurance_intercept: f64,
    pub insurance_age: f64,
    pub insurance_mortgage: f64,
    pub card_balance_to_income: f64,
    pub missed_base: f64,
    pub missed_stress: f64,
    pub missed_dti: f64,
}

impl Default for Products {
    fn default() -> Self {
        Products {
            fd_intercept: -1.0,
            fd_assets: 0.6,
            fd_age: 0.02,
            wealth_intercept: -1.6,
            wealth_assets: 0.9,
            card_intercept: 0.2,
            card_income: 0.8,
            card_engagement: 0.4,
            mortgage_intercept: -0.5,
            mortgage_income: 0.8,
            mortgage_age_curvature: 0.004,
            loan_intercept: -2.0,
            loan_stress: 0.6,
            insurance_intercept: -0.8,
            insurance_age: 0.02,
            insurance_mortgage: 1.0,
            card_balance_to_income: 0.03,
            missed_base: 0.15,
            missed_stress: 0.8,
            missed_dti: 1.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Activity {
    pub transactions_base: f64,
    pub transactions_engagement: f64,
    pub transactions_income: f64,
    pub mobile_digital: f64,
    pub mobile_other: f64,
    pub mobile_engagement: f64,
    pub branch_digital: f64,
    pub branch_other: f64,
    pub branch_age: f64,
    pub branch_engagement: f64,
    pub trend_mean: f64,
    pub trend_sd: f64,
    pub enquiries_base: f64,
    pub enquiries_rate: f64,
    pub fd_term_months: f64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            transactions_base: 25.0,
            transactions_engagement: 0.5,
            transactions_income: 0.2,
            mobile_digital: 18.0,
            mobile_other: 1.5,
            mobile_engagement: 0.4,
            branch_digital: 0.2,
            branch_other: 1.2,
            branch_age: 0.02,
            branch_engagement: 0.3,
            trend_mean: 0.0,
            trend_sd: 0.08,
            enquiries_base: 0.3,
            enquiries_rate: 1.0,
            fd_term_months: 12.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Segments {
    pub mass_affluent_maa: f64,
    pub affluent_maa: f64,
    pub private_maa: f64,
}

impl Default for Segments {
    fn default() -> Self {
        Segments {
            mass_affluent_maa: 10_000.0,
            affluent_maa: 50_000.0,
            private_maa: 250_000.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChurnModel {
    pub high_value_maa: f64,
    pub drop_fraction: f64,
    pub intercept: f64,
    pub engagement: f64,
    pub rate_sensitivity: f64,
    pub fd_maturing: f64,
    pub balance_trend: f64,
    pub tenure: f64,
    pub engagement_center: f64,
    pub engagement_scale: f64,
    pub leaver_move_min: f64,
    pub leaver_move_max: f64,
    pub stayer_noise_sd: f64,
}

impl Default for ChurnModel {
    fn default() -> Self {
        ChurnModel {
            high_value_maa: 20_000.0,
            drop_fraction: 0.5,
            intercept: -1.05,
            engagement: -0.8,
            rate_sensitivity: 0.6,
            fd_maturing: 1.0,
            balance_trend: -0.5,
            tenure: -0.2,
            engagement_center: 6.4,
            engagement_scale: 1.5,
            leaver_move_min: 0.4,
            leaver_move_max: 1.0,
            stayer_noise_sd: 0.06,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultModel {
    pub intercept: f64,
    pub dti: f64,
    pub missed_payments: f64,
    pub tenure_years: f64,
    pub age_per_decade: f64,
    pub stress: f64,
}

impl Default for DefaultModel {
    fn default() -> Self {
        DefaultModel {
            intercept: -3.8,
            dti: 4.0,
            missed_payments: 0.5,
            tenure_years: -0.04,
            age_per_decade: -0.15,
            stress: 0.6,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WealthPropensity {
    pub intercept: f64,
    pub maa: f64,
    pub age_per_decade: f64,
    pub mobile: f64,
    pub holder: f64,
}

impl Default for WealthPropensity {
    fn default() -> Self {
        WealthPropensity {
            intercept: -2.65,
            maa: 0.6,
            age_per_decade: 0.2,
            mobile: 0.3,
            holder: -0.8,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InsurancePropensity {
    pub intercept: f64,
    pub age_peak: f64,
    pub age_curvature: f64,
    pub mortgage: f64,
    pub branch: f64,
    pub maa: f64,
    pub holder: f64,
}

impl Default for InsurancePropensity {
    fn default() -> Self {
        InsurancePropensity {
            intercept: -1.9,
            age_peak: 40.0,
            age_curvature: 0.3,
            mortgage: 0.9,
            branch: 0.5,
            maa: 0.15,
            holder: -1.0,
        }
    }
}

impl SynthConfig {
    /// Refuses values that would make the model meaningless (NaN, negative spreads,
    /// unordered thresholds). Coefficients may have any finite value.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |field: &'static str, reason: &str| {
            Err(SynthError::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        let toml = toml::Value::try_from(self).map_err(|e| SynthError::InvalidConfig {
            field: "config",
            reason: e.to_string(),
        })?;
        if !all_finite(&toml) {
            return bad("config", "every value must be a finite number");
        }
        let p = &self.population;
        for (field, v) in [
            ("population.age_sd", p.age_sd),
            ("population.income_sigma", p.income_sigma),
            ("population.assets_sigma", p.assets_sigma),
            ("population.maa_noise_sd", p.maa_noise_sd),
            ("activity.trend_sd", self.activity.trend_sd),
            ("churn.stayer_noise_sd", self.churn.stayer_noise_sd),
            (
                "products.card_balance_to_income",
                self.products.card_balance_to_income,
            ),
        ] {
            if v < 0.0 {
                return bad(field, "must not be negative");
            }
        }
        for (field, v) in [
            ("population.income_median", p.income_median),
            ("population.tenure_mean_months", p.tenure_mean_months),
            ("population.assets_to_income", p.assets_to_income),
            ("activity.fd_term_months", self.activity.fd_term_months),
            ("churn.engagement_scale", self.churn.engagement_scale),
        ] {
            if v <= 0.0 {
                return bad(field, "must be positive");
            }
        }
        let a = &self.activity;
        for (field, v) in [
            ("activity.transactions_base", a.transactions_base),
            ("activity.mobile_digital", a.mobile_digital),
            ("activity.mobile_other", a.mobile_other),
            ("activity.branch_digital", a.branch_digital),
            ("activity.branch_other", a.branch_other),
            ("activity.enquiries_base", a.enquiries_base),
            ("products.missed_base", self.products.missed_base),
        ] {
            if v < 0.0 {
                return bad(field, "a Poisson rate must not be negative");
            }
        }
        let c = &self.churn;
        if !(0.0 < c.drop_fraction && c.drop_fraction < 1.0) {
            return bad("churn.drop_fraction", "must be in (0, 1)");
        }
        if !(0.0 <= c.leaver_move_min
            && c.leaver_move_min <= c.leaver_move_max
            && c.leaver_move_max <= 1.0)
        {
            return bad("churn.leaver_move_min/max", "need 0 ≤ min ≤ max ≤ 1");
        }
        let s = &self.segments;
        if !(0.0 < s.mass_affluent_maa
            && s.mass_affluent_maa <= s.affluent_maa
            && s.affluent_maa <= s.private_maa)
        {
            return bad(
                "segments",
                "need 0 < mass_affluent_maa ≤ affluent_maa ≤ private_maa",
            );
        }
        Ok(())
    }
}

fn all_finite(v: &toml::Value) -> bool {
    match v {
        toml::Value::Float(f) => f.is_finite(),
        toml::Value::Table(t) => t.values().all(all_finite),
        toml::Value::Array(a) => a.iter().all(all_finite),
        _ => true,
    }
}

// ---------------------------------------------------------------------------------------------
// Institutions
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Customers
// ---------------------------------------------------------------------------------------------

/// Wealth segment, by monthly average assets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    Mass,
    MassAffluent,
    Affluent,
    Private,
}

impl Segment {
    pub const ALL: [Segment; 4] = [
        Segment::Mass,
        Segment::MassAffluent,
        Segment::Affluent,
        Segment::Private,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Segment::Mass => "mass",
            Segment::MassAffluent => "mass_affluent",
            Segment::Affluent => "affluent",
            Segment::Private => "private",
        }
    }
}

/// The numeric feature columns, in output order (then the one-hot `segment=…` columns).
pub const NUMERIC_FEATURES: [&str; 22] = [
    "age",
    "income",
    "tenure_months",
    "current_balance",
    "fixed_deposit_balance",
    "wealth_balance",
    "maa",
    "balance_trend_3m",
    "transactions_per_month",
    "mobile_logins_per_month",
    "branch_visits_per_month",
    "n_products",
    "has_credit_card",
    "has_mortgage",
    "has_personal_loan",
    "has_insurance",
    "has_fixed_deposit",
    "has_wealth",
    "debt_to_income",
    "missed_payments_12m",
    "rate_enquiries_3m",
    "fd_maturing_next_month",
];

/// The label columns, in output order.
pub const LABELS: [&str; 4] = [
    "churn",
    "default",
    "propensity_wealth",
    "propensity_insurance",
];

/// Column holding the customer id in CSV output.
pub const ID_COLUMN: &str = "customer_id";

/// One synthetic customer: what the bank sees, the labels, and the latent truth behind them.
#[derive(Clone, Debug, PartialEq)]
pub struct Customer {
    /// `<institution>-<row number, 7 digits>`.
    pub id: String,
    pub age: f32,
    pub income: f32,
    pub tenure_months: f32,
    pub current_balance: f32,
    pub fixed_deposit_balance: f32,
    pub wealth_balance: f32,
    pub maa: f32,
    pub balance_trend_3m: f32,
    pub transactions_per_month: f32,
    pub mobile_logins_per_month: f32,
    pub branch_visits_per_month: f32,
    pub n_products: f32,
    pub has_credit_card: bool,
    pub has_mortgage: bool,
    pub has_personal_loan: bool,
    pub has_insurance: bool,
    pub has_fixed_deposit: bool,
    pub has_wealth: bool,
    pub debt_to_income: f32,
    pub missed_payments_12m: f32,
    pub rate_enquiries_3m: f32,
    pub fd_maturing_next_month: bool,
    pub segment: Segment,
    pub churn: bool,
    pub default: bool,
    pub propensity_wealth: bool,
    pub propensity_insurance: bool,
    pub latent: Latent,
}

/// What the generator knew but the bank does not see.
#[derive(Clone, Debug, PartialEq)]
pub struct Latent {
    pub engagement: f64,
    pub stress: f64,
    pub rate_sensitivity: f64,
    pub digital_first: bool,
    /// The observable engagement index and its standardised form `z_eng`.
    pub engagement_index: f64,
    pub engagement_z: f64,
    pub churn_hazard: f64,
    pub next_month_assets: f64,
    pub default_probability: f64,
    pub wealth_probability: f64,
    pub insurance_probability: f64,
}

impl Customer {
    /// The numeric features in [`NUMERIC_FEATURES`] order.
    pub fn numeric(&self) -> [f32; 22] {
        let b = |v: bool| f32::from(u8::from(v));
        [
            self.age,
            self.income,
            self.tenure_months,
            self.current_balance,
            self.fixed_deposit_balance,
            self.wealth_balance,
            self.maa,
            self.balance_trend_3m,
            self.transactions_per_month,
            self.mobile_logins_per_month,
            self.branch_visits_per_month,
            self.n_products,
            b(self.has_credit_card),
            b(self.has_mortgage),
            b(self.has_personal_loan),
            b(self.has_insurance),
            b(self.has_fixed_deposit),
            b(self.has_wealth),
            self.debt_to_income,
            self.missed_payments_12m,
            self.rate_enquiries_3m,
            b(self.fd_maturing_next_month),
        ]
    }

    /// Labels in [`LABELS`] order.
    pub fn labels(&self) -> [bool; 4] {
        [
            self.churn,
            self.default,
            self.propensity_wealth,
            self.propensity_insurance,
        ]
    }

    /// Writes the `synth_schema().feature_columns()` row into `out` (numeric, then one-hot
    /// segment).
    pub fn write_features(&self, out: &mut [f32]) {
        let num = self.numeric();
        out[..num.len()].copy_from_slice(&num);
        for (k, s) in Segment::ALL.iter().enumerate() {
            out[num.len() + k] = f32::from(u8::from(*s == self.segment));
        }
    }
}

/// The schema of the generator's CSV output: id `customer_id`, the numeric features, the
/// categorical `segment`, and the 0/1 labels `churn`, `default`, `propensity_wealth`,
/// `propensity_insurance` (positive value "1").
pub fn synth_schema() -> Schema {
    let mut features: Vec<FeatureSpec> = NUMERIC_FEATURES
        .iter()
        .map(|n| FeatureSpec::numeric(*n))
        .collect();
    features.push(FeatureSpec::categorical(
        "segment",
        Segment::ALL.iter().map(|s| s.as_str()),
    ));
    Schema {
        id_column: Some(ID_COLUMN.to_string()),
        labels: LABELS
            .iter()
            .map(|l| LabelSpec {
                column: l.to_string(),
                positive: "1".into(),
            })
            .collect(),
        features,
        missing: Vec::new(),
        delimiter: ',',
    }
}

// ---------------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------------

/// SHA-256 of a domain tag, the seed and the given parts: the key of one random stream.
fn stream_key(seed: u64, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"fedsilo-synth-v1");
    h.update(seed.to_le_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    (p / (1.0 - p)).ln()
}

fn money(v: f64) -> f32 {
    ((v * 100.0).round() / 100.0) as f32
}

/// The random draws of the model, on one stream.
struct Draw<'a>(&'a mut ChaCha8Rng);

impl Draw<'_> {
    fn z(&mut self) -> f64 {
        self.0.sample(StandardNormal)
    }

    fn bern(&mut self, p: f64) -> bool {
        self.0.random::<f64>() < p
    }

    fn pois(&mut self, lambda: f64) -> f32 {
        let lambda = lambda.clamp(1e-9, 1e6);
        match Poisson::new(lambda) {
            Ok(d) => d.sample(self.0) as f32,
            Err(_) => 0.0,
        }
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.0.random::<f64>()
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        match Exp::new(1.0 / mean) {
            Ok(d) => d.sample(self.0),
            Err(_) => mean,
        }
    }
}

/// Customers of one institution, one at a time. `profile.rows` customers in all.
#[derive(Debug)]
pub struct SynthGenerator {
    cfg: SynthConfig,
    profile: InstitutionProfile,
    rng: ChaCha8Rng,
    next: usize,
}

impl SynthGenerator {
    pub fn new(
        cfg: SynthConfig,
        profile: InstitutionProfile,
        seed: u64,
    ) -> Result<Self, SynthError> {
        cfg.validate()?;
        profile.validate()?;
        let rng = ChaCha8Rng::from_seed(stream_key(seed, &[b"customers", profile.name.as_bytes()]));
        Ok(SynthGenerator {
            cfg,
            profile,
            rng,
            next: 0,
        })
    }

    pub fn profile(&self) -> &InstitutionProfile {
        &self.profile
    }

    fn customer(&mut self) -> Customer {
        let (cfg, prof) = (&self.cfg, &self.profile);
        let (pop, prod, act) = (&cfg.population, &cfg.products, &cfg.activity);
        let r = &mut Draw(&mut self.rng);

        // Latent traits.
        let engagement = r.z();
        let stress = r.z();
        let rate_sensitivity = prof.rate_sensitivity_shift + r.z();

        // Profile.
        let mut age = 0.0;
        for _ in 0..32 {
            age = (pop.age_mean + prof.age_shift + pop.age_sd * r.z()).round();
            if (18.0..=90.0).contains(&age) {
                break;
            }
        }
        let age = age.clamp(18.0, 90.0);
        let digital_first = {
            let p = sigmoid(logit(prof.digital_share) + pop.digital_age_slope * (age - 45.0));
            r.bern(p)
        };
        let income = pop.income_median
            * prof.income_scale
            * (-pop.income_age_curvature * (age - pop.income_age_peak).powi(2)
                + pop.income_sigma * r.z())
            .exp();
        let tenure_cap = (12.0 * (age - 18.0)).max(1.0);
        let tenure_draw = r.exponential(pop.tenure_mean_months);
        let tenure_months = tenure_draw.round().clamp(1.0, tenure_cap);
        let assets = income
            * pop.assets_to_income
            * (prof.wealth_tilt + pop.assets_age_slope * (age - 45.0) + pop.assets_sigma * r.z())
                .exp();
        let la = (assets / 20_000.0).ln();
        let li = (income / 35_000.0).ln();

        // Products.
        let has_fixed_deposit = r.bern(sigmoid(
            prod.fd_intercept + prod.fd_assets * la + prod.fd_age * (age - 45.0),
        ));
        let has_wealth = r.bern(sigmoid(prod.wealth_intercept + prod.wealth_assets * la));
        let has_credit_card = r.bern(sigmoid(
            prod.card_intercept
                + prod.card_income * li
                + prod.card_engagement * engagement
                + prof.credit_tilt,
        ));
        let has_mortgage = r.bern(sigmoid(
            prod.mortgage_intercept + prod.mortgage_income * li
                - prod.mortgage_age_curvature * (age - 42.0).powi(2)
                + prof.credit_tilt,
        ));
        let has_personal_loan = r.bern(sigmoid(
            prod.loan_intercept + prod.loan_stress * stress + prof.credit_tilt,
        ));
        let has_insurance = r.bern(sigmoid(
            prod.insurance_intercept
                + prod.insurance_age * (age - 45.0)
                + prod.insurance_mortgage * f64::from(u8::from(has_mortgage)),
        ));
        let n_products = 1 + [
            has_fixed_deposit,
            has_wealth,
            has_credit_card,
            has_mortgage,
            has_personal_loan,
            has_insurance,
        ]
        .iter()
        .filter(|&&b| b)
        .count();

        // Balances.
        let w_fd = if has_fixed_deposit {
            (0.7 + 0.5 * r.z()).exp()
        } else {
            0.0
        };
        let w_wm = if has_wealth {
            (1.0 + 0.5 * r.z()).exp()
        } else {
            0.0
        };
        let w_total = 1.0 + w_fd + w_wm;
        let current_balance = assets / w_total;
        let fixed_deposit_balance = assets * w_fd / w_total;
        let wealth_balance = assets * w_wm / w_total;
        let maa = assets * (pop.maa_noise_sd * r.z()).exp();
        let balance_trend_3m = act.trend_mean + act.trend_sd * r.z();

        // Debt.
        let mortgage_balance = if has_mortgage {
            income * r.uniform(1.5, 4.0)
        } else {
            0.0
        };
        let loan_balance = if has_personal_loan {
            income * r.uniform(0.05, 0.4)
        } else {
            0.0
        };
        let card_balance = if has_credit_card {
            income * prod.card_balance_to_income * (0.8 * r.z() + 0.3 * stress.max(0.0)).exp()
        } else {
            0.0
        };
        let debt_to_income =
            (0.07 * mortgage_balance + loan_balance / 3.0 + 0.6 * card_balance) / income;
        let borrower = has_credit_card || has_mortgage || has_personal_loan;
        let missed_payments_12m = if borrower {
            r.pois(
                prod.missed_base
                    * (prod.missed_stress * stress + prod.missed_dti * debt_to_income).exp(),
            )
        } else {
            0.0
        };

        // Activity.
        let transactions_per_month = r.pois(
            act.transactions_base
                * (act.transactions_engagement * engagement + act.transactions_income * li).exp(),
        );
        let mobile_base = if digital_first {
            act.mobile_digital
        } else {
            act.mobile_other
        };
        let mobile_logins_per_month =
            r.pois(mobile_base * (act.mobile_engagement * engagement).exp());
        let branch_base = if digital_first {
            act.branch_digital
        } else {
            act.branch_other
        };
        let branch_visits_per_month = r.pois(
            branch_base
                * (act.branch_age * (age - 45.0) + act.branch_engagement * engagement).exp(),
        );
        let rate_enquiries_3m =
            r.pois(act.enquiries_base * (act.enquiries_rate * rate_sensitivity).exp());
        let fd_maturing_next_month = has_fixed_deposit && r.bern(1.0 / act.fd_term_months);

        let seg = &cfg.segments;
        let segment = if maa < seg.mass_affluent_maa {
            Segment::Mass
        } else if maa < seg.affluent_maa {
            Segment::MassAffluent
        } else if maa < seg.private_maa {
            Segment::Affluent
        } else {
            Segment::Private
        };

        // Churn: hazard → next month's assets → label.
        let ch = &cfg.churn;
        let engagement_index = f64::from(transactions_per_month).ln_1p()
            + f64::from(mobile_logins_per_month).ln_1p()
            + f64::from(branch_visits_per_month).ln_1p()
            + 0.5 * (n_products as f64 - 1.0);
        let engagement_z = (engagement_index - ch.engagement_center) / ch.engagement_scale;
        let tenure_years = tenure_months / 12.0;
        let churn_hazard = sigmoid(
            ch.intercept
                + ch.engagement * engagement_z
                + ch.rate_sensitivity * rate_sensitivity
                + ch.fd_maturing * f64::from(u8::from(fd_maturing_next_month))
                + ch.balance_trend * balance_trend_3m / 0.1
                + ch.tenure * tenure_years.ln_1p(),
        );
        let leaves = r.bern(churn_hazard);
        let next_month_assets = if leaves {
            maa * (1.0 - r.uniform(ch.leaver_move_min, ch.leaver_move_max))
        } else {
            maa * (balance_trend_3m / 3.0 + ch.stayer_noise_sd * r.z()).exp()
        };
        let churn = maa >= ch.high_value_maa && next_month_assets < (1.0 - ch.drop_fraction) * maa;

        // Default.
        let d = &cfg.default;
        let default_probability = sigmoid(
            d.intercept
                + d.dti * debt_to_income
                + d.missed_payments * f64::from(missed_payments_12m)
                + d.tenure_years * tenure_years
                + d.age_per_decade * (age - 45.0) / 10.0
                + d.stress * stress,
        );
        let default = r.bern(default_probability);

        // Propensities.
        let lm = (maa / 20_000.0).ln();
        let w = &cfg.wealth;
        let wealth_probability = sigmoid(
            w.intercept
                + w.maa * lm
                + w.age_per_decade * (age - 45.0) / 10.0
                + w.mobile * f64::from(mobile_logins_per_month).ln_1p()
                + w.holder * f64::from(u8::from(has_wealth)),
        );
        let propensity_wealth = r.bern(wealth_probability);
        let ins = &cfg.insurance;
        let insurance_probability = sigmoid(
            ins.intercept - ins.age_curvature * ((age - ins.age_peak) / 10.0).powi(2)
                + ins.mortgage * f64::from(u8::from(has_mortgage))
                + ins.branch * f64::from(branch_visits_per_month).ln_1p()
                + ins.maa * lm
                + ins.holder * f64::from(u8::from(has_insurance)),
        );
        let propensity_insurance = r.bern(insurance_probability);

        self.next += 1;
        let mut id = String::with_capacity(prof.name.len() + 8);
        let _ = write!(id, "{}-{:07}", prof.name, self.next);
        Customer {
            id,
            age: age as f32,
            income: money(income),
            tenure_months: tenure_months as f32,
            current_balance: money(current_balance),
            fixed_deposit_balance: money(fixed_deposit_balance),
            wealth_balance: money(wealth_balance),
            maa: money(maa),
            balance_trend_3m: ((balance_trend_3m * 1e4).round() / 1e4) as f32,
            transactions_per_month,
            mobile_logins_per_month,
            branch_visits_per_month,
            n_products: n_products as f32,
            has_credit_card,
            has_mortgage,
            has_personal_loan,
            has_insurance,
            has_fixed_deposit,
            has_wealth,
            debt_to_income: ((debt_to_income * 1e4).round() / 1e4) as f32,
            missed_payments_12m,
            rate_enquiries_3m,
            fd_maturing_next_month,
            segment,
            churn,
            default,
            propensity_wealth,
            propensity_insurance,
            latent: Latent {
                engagement,
                stress,
                rate_sensitivity,
                digital_first,
                engagement_index,
                engagement_z,
                churn_hazard,
                next_month_assets,
                default_probability,
                wealth_probability,
                insurance_probability,
            },
        }
    }
}

impl Iterator for SynthGenerator {
    type Item = Customer;

    fn next(&mut self) -> Option<Customer> {
        (self.next < self.profile.rows).then(|| self.customer())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.profile.rows - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for SynthGenerator {}

/// Streams `profile.rows` customers as CSV (header first, columns of [`synth_schema`]) into
/// `writer`; returns the number of data rows written. Memory use does not grow with `rows`.
pub fn write_csv<W: Write>(
    writer: W,
    cfg: &SynthConfig,
    profile: &InstitutionProfile,
    seed: u64,
) -> Result<usize, SynthError> {
    let gen = SynthGenerator::new(cfg.clone(), profile.clone(), seed)?;
    let mut wtr = csv::Writer::from_writer(writer);
    wtr.write_field(ID_COLUMN)?;
    for name in NUMERIC_FEATURES {
        wtr.write_field(name)?;
    }
    wtr.write_field("segment")?;
    for name in LABELS {
        wtr.write_field(name)?;
    }
    wtr.write_record(None::<&[u8]>)?;
    let mut buf = String::with_capacity(32);
    let mut rows = 0;
    for c in gen {
        wtr.write_field(&c.id)?;
        for v in c.numeric() {
            buf.clear();
            // f32 Display is the shortest text that parses back to the same f32.
            let _ = write!(buf, "{v}");
            wtr.write_field(&buf)?;
        }
        wtr.write_field(c.segment.as_str())?;
        for l in c.labels() {
            wtr.write_field(if l { "1" } else { "0" })?;
        }
        wtr.write_record(None::<&[u8]>)?;
        rows += 1;
    }
    wtr.flush()?;
    Ok(rows)
}

/// All `profile.rows` customers as a [`Table`] with the columns of [`synth_schema`].
pub fn to_table(
    cfg: &SynthConfig,
    profile: &InstitutionProfile,
    seed: u64,
) -> Result<Table, SynthError> {
    let schema = synth_schema();
    let feature_names = schema.feature_columns();
    let width = feature_names.len();
    let rows = profile.rows;
    let mut x = Array2::<f32>::zeros((rows, width));
    let mut labels = Array2::<f32>::zeros((rows, LABELS.len()));
    let mut ids = Vec::with_capacity(rows);
    let gen = SynthGenerator::new(cfg.clone(), profile.clone(), seed)?;
    for (r, c) in gen.enumerate() {
        if let Some(row) = x.row_mut(r).as_slice_mut() {
            c.write_features(row);
        }
        for (j, l) in c.labels().into_iter().enumerate() {
            labels[[r, j]] = f32::from(u8::from(l));
        }
        ids.push(c.id);
    }
    Ok(Table {
        feature_names,
        x,
        label_names: schema.label_columns(),
        labels,
        ids,
    })
}

/// Institution `index` of `n` for a simulation: [`InstitutionProfile::spread`] with the given
/// heterogeneity, default [`SynthConfig`], `rows` customers.
pub fn institution_table(
    name: &str,
    index: usize,
    n: usize,
    rows: usize,
    heterogeneity: f64,
    seed: u64,
) -> Result<Table, SynthError> {
    let profile = InstitutionProfile::spread(name, index, n, rows, heterogeneity, seed)?;
    to_table(&SynthConfig::default(), &profile, seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsilo_participant::data::load_csv_reader;

    fn customers(profile: &InstitutionProfile, seed: u64) -> Vec<Customer> {
        SynthGenerator::new(SynthConfig::default(), profile.clone(), seed)
            .unwrap()
            .collect()
    }

    fn rate(cs: &[&Customer], f: impl Fn(&Customer) -> bool) -> f64 {
        cs.iter().filter(|c| f(c)).count() as f64 / cs.len().max(1) as f64
    }

    /// Customers split into quintiles of `key` (lowest first).
    fn quintiles(cs: &[Customer], key: impl Fn(&Customer) -> f64) -> Vec<Vec<&Customer>> {
        let mut sorted: Vec<&Customer> = cs.iter().collect();
        sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
        sorted
            .chunks(sorted.len().div_ceil(5))
            .map(<[_]>::to_vec)
            .collect()
    }

    #[test]
    #[ignore = "prints the population summary; run with --ignored --nocapture when retuning"]
    fn print_summary() {
        let cs = customers(&InstitutionProfile::new("Typical Bank", 200_000), 1);
        let all: Vec<&Customer> = cs.iter().collect();
        let n = cs.len() as f64;
        let mean = |f: &dyn Fn(&Customer) -> f64| cs.iter().map(f).sum::<f64>() / n;
        let ei = mean(&|c| c.latent.engagement_index);
        let sd = (mean(&|c| (c.latent.engagement_index - ei).powi(2))).sqrt();
        println!("engagement index mean {ei:.3} sd {sd:.3}");
        for (i, l) in LABELS.iter().enumerate() {
            println!("{l}: {:.2} %", 100.0 * rate(&all, |c| c.labels()[i]));
        }
        println!(
            "high value: {:.1} %",
            100.0 * rate(&all, |c| c.maa >= 20_000.0)
        );
        for s in Segment::ALL {
            println!(
                "{}: {:.1} %",
                s.as_str(),
                100.0 * rate(&all, |c| c.segment == s)
            );
        }
        for (k, name) in NUMERIC_FEATURES.iter().enumerate() {
            println!("{name}: mean {:.3}", mean(&|c| f64::from(c.numeric()[k])));
        }
    }

    #[test]
    fn prevalences_match_the_documented_targets() {
        let cs = customers(&InstitutionProfile::new("Typical Bank", 50_000), 7);
        let all: Vec<&Customer> = cs.iter().collect();
        let targets = [
            ("churn", 7.0, 5.0, 10.0),
            ("default", 3.5, 2.0, 5.0),
            ("propensity_wealth", 10.0, 5.0, 15.0),
            ("propensity_insurance", 10.0, 5.0, 15.0),
        ];
        for (i, (name, target, lo, hi)) in targets.into_iter().enumerate() {
            assert_eq!(LABELS[i], name);
            let r = 100.0 * rate(&all, |c| c.labels()[i]);
            assert!(
                (r - target).abs() <= 3.0 && (lo..=hi).contains(&r),
                "{name}: {r:.2} %, target {target} % ({lo}–{hi})"
            );
        }
        // The latent probabilities are what the labels are drawn from.
        let pd = cs.iter().map(|c| c.latent.default_probability).sum::<f64>() / cs.len() as f64;
        let dr = rate(&all, |c| c.default);
        assert!((pd - dr).abs() < 0.005, "{pd} vs {dr}");
    }

    #[test]
    fn documented_effects_have_the_documented_sign() {
        let cs = customers(&InstitutionProfile::new("Typical Bank", 50_000), 11);
        let high_value: Vec<Customer> = cs.iter().filter(|c| c.maa >= 20_000.0).cloned().collect();
        let all: Vec<&Customer> = cs.iter().collect();

        // Churn: low engagement, falling balances, rate shopping and maturing deposits raise it.
        let q = quintiles(&high_value, |c| c.latent.engagement_index);
        let (lo, hi) = (rate(&q[0], |c| c.churn), rate(&q[4], |c| c.churn));
        assert!(
            lo > 1.5 * hi,
            "churn by engagement quintile: lowest {lo:.3}, highest {hi:.3}"
        );
        let q = quintiles(&high_value, |c| f64::from(c.balance_trend_3m));
        assert!(
            rate(&q[0], |c| c.churn) > rate(&q[4], |c| c.churn),
            "falling balances"
        );
        let q = quintiles(&high_value, |c| {
            f64::from(c.rate_enquiries_3m) + 1e-3 * c.latent.rate_sensitivity
        });
        assert!(
            rate(&q[4], |c| c.churn) > rate(&q[0], |c| c.churn),
            "rate shopping"
        );
        let hv: Vec<&Customer> = high_value.iter().collect();
        let maturing: Vec<&Customer> = hv
            .iter()
            .copied()
            .filter(|c| c.fd_maturing_next_month)
            .collect();
        let not: Vec<&Customer> = hv
            .iter()
            .copied()
            .filter(|c| c.has_fixed_deposit && !c.fd_maturing_next_month)
            .collect();
        assert!(
            rate(&maturing, |c| c.churn) > rate(&not, |c| c.churn),
            "maturing deposit"
        );
        // Only high-value customers can churn.
        assert!(cs.iter().filter(|c| c.churn).all(|c| c.maa >= 20_000.0));

        // Default: debt-to-income and missed payments raise it, tenure lowers it.
        let q = quintiles(&cs, |c| f64::from(c.debt_to_income));
        assert!(
            rate(&q[4], |c| c.default) > 2.0 * rate(&q[0], |c| c.default),
            "default by dti quintile: lowest {:.4}, highest {:.4}",
            rate(&q[0], |c| c.default),
            rate(&q[4], |c| c.default)
        );
        let missed: Vec<&Customer> = all
            .iter()
            .copied()
            .filter(|c| c.missed_payments_12m > 0.0)
            .collect();
        let clean: Vec<&Customer> = all
            .iter()
            .copied()
            .filter(|c| c.missed_payments_12m == 0.0)
            .collect();
        assert!(
            rate(&missed, |c| c.default) > 2.0 * rate(&clean, |c| c.default),
            "missed payments"
        );
        let q = quintiles(&cs, |c| f64::from(c.tenure_months));
        assert!(
            rate(&q[0], |c| c.default) > rate(&q[4], |c| c.default),
            "tenure"
        );

        // Wealth propensity rises with MAA; insurance propensity is higher with a mortgage.
        let q = quintiles(&cs, |c| f64::from(c.maa));
        assert!(
            rate(&q[4], |c| c.propensity_wealth) > 2.0 * rate(&q[0], |c| c.propensity_wealth),
            "maa"
        );
        let mortgaged: Vec<&Customer> = all.iter().copied().filter(|c| c.has_mortgage).collect();
        let renters: Vec<&Customer> = all.iter().copied().filter(|c| !c.has_mortgage).collect();
        assert!(
            rate(&mortgaged, |c| c.propensity_insurance)
                > rate(&renters, |c| c.propensity_insurance)
        );
        // Digital-first customers log in more and visit branches less.
        let digital: Vec<&Customer> = all
            .iter()
            .copied()
            .filter(|c| c.latent.digital_first)
            .collect();
        let branch: Vec<&Customer> = all
            .iter()
            .copied()
            .filter(|c| !c.latent.digital_first)
            .collect();
        let mean = |v: &[&Customer], f: fn(&Customer) -> f32| {
            v.iter().map(|c| f64::from(f(c))).sum::<f64>() / v.len() as f64
        };
        assert!(
            mean(&digital, |c| c.mobile_logins_per_month)
                > 5.0 * mean(&branch, |c| c.mobile_logins_per_month)
        );
        assert!(
            mean(&digital, |c| c.branch_visits_per_month)
                < mean(&branch, |c| c.branch_visits_per_month)
        );
    }

    #[test]
    fn institutions_differ_in_the_direction_of_their_profile() {
        let mut old = InstitutionProfile::new("Old Town Savings", 20_000);
        old.age_shift = 10.0;
        old.wealth_tilt = 0.5;
        old.digital_share = 0.2;
        let mut young = InstitutionProfile::new("Neo Bank", 20_000);
        young.age_shift = -10.0;
        young.digital_share = 0.9;
        young.income_scale = 0.8;
        let (o, y) = (customers(&old, 3), customers(&young, 3));
        let mean = |v: &[Customer], f: fn(&Customer) -> f32| {
            v.iter().map(|c| f64::from(f(c))).sum::<f64>() / v.len() as f64
        };
        assert!(mean(&o, |c| c.age) > mean(&y, |c| c.age) + 15.0);
        assert!(mean(&o, |c| c.maa) > 1.5 * mean(&y, |c| c.maa));
        assert!(
            mean(&y, |c| c.mobile_logins_per_month) > 2.0 * mean(&o, |c| c.mobile_logins_per_month)
        );
        assert!(mean(&o, |c| c.income) > mean(&y, |c| c.income));
    }

    #[test]
    fn deterministic_for_seed_and_institution_name() {
        let cfg = SynthConfig::default();
        let a = InstitutionProfile::new("Bank A", 2_000);
        let bytes = |p: &InstitutionProfile, seed| {
            let mut out = Vec::new();
            assert_eq!(write_csv(&mut out, &cfg, p, seed).unwrap(), p.rows);
            out
        };
        let first = bytes(&a, 5);
        assert_eq!(first, bytes(&a, 5));
        assert_ne!(first, bytes(&a, 6));
        let mut b = a.clone();
        b.name = "Bank B".into();
        assert_ne!(first[200..], bytes(&b, 5)[200..]);
        // A longer run starts with the shorter one.
        let mut long = a.clone();
        long.rows = 3_000;
        let long = bytes(&long, 5);
        assert_eq!(long[..first.len()], first[..]);
    }

    #[test]
    fn csv_loads_back_into_the_same_table() {
        let cfg = SynthConfig::default();
        let p = InstitutionProfile::spread("Bank C", 2, 5, 3_000, 1.0, 9).unwrap();
        let mut out = Vec::new();
        write_csv(&mut out, &cfg, &p, 9).unwrap();
        let loaded = load_csv_reader(&out[..], "bank-c.csv", &synth_schema()).unwrap();
        let direct = to_table(&cfg, &p, 9).unwrap();
        assert_eq!(loaded, direct);
        assert_eq!(
            direct.feature_names.len(),
            NUMERIC_FEATURES.len() + Segment::ALL.len()
        );
        assert_eq!(direct.label_names, LABELS);
        assert_eq!(direct.ids[0], "Bank C-0000001");
    }

    #[test]
    fn streaming_write_of_200k_rows() {
        let mut file = tempfile::tempfile().unwrap();
        let p = InstitutionProfile::new("Big Bank", 200_000);
        let rows = write_csv(
            std::io::BufWriter::new(&mut file),
            &SynthConfig::default(),
            &p,
            1,
        )
        .unwrap();
        assert_eq!(rows, 200_000);
        use std::io::{BufRead, Seek};
        file.rewind().unwrap();
        assert_eq!(std::io::BufReader::new(file).lines().count(), 200_001);
    }

    #[test]
    fn spread_profiles_cover_each_axis_evenly() {
        let n = 7;
        let ps: Vec<InstitutionProfile> = (0..n)
            .map(|i| InstitutionProfile::spread(format!("B{i}"), i, n, 100, 1.0, 3).unwrap())
            .collect();
        let mut ages: Vec<f64> = ps.iter().map(|p| p.age_shift).collect();
        ages.sort_by(f64::total_cmp);
        for (k, a) in ages.iter().enumerate() {
            let want = 10.0 * ((k as f64 + 0.5) / n as f64 * 2.0 - 1.0);
            assert!((a - want).abs() < 1e-9, "{ages:?}");
        }
        assert_ne!(
            ps.iter().map(|p| p.age_shift).collect::<Vec<_>>(),
            ps.iter().map(|p| p.wealth_tilt / 0.06).collect::<Vec<_>>(),
            "axes use different orders"
        );
        let flat = InstitutionProfile::spread("B0", 0, n, 100, 0.0, 3).unwrap();
        assert_eq!(flat, InstitutionProfile::new("B0", 100));
        assert!(InstitutionProfile::spread("B9", 9, n, 100, 1.0, 3).is_err());
        assert!(InstitutionProfile::spread("B0", 0, n, 100, -1.0, 3).is_err());

        let t = institution_table("Bank A", 0, 3, 500, 0.5, 7).unwrap();
        assert_eq!(t.n_rows(), 500);
        assert_eq!(t, institution_table("Bank A", 0, 3, 500, 0.5, 7).unwrap());
    }

    #[test]
    fn config_is_tunable_from_toml_and_validated() {
        let cfg: SynthConfig = toml::from_str("[churn]\nhigh_value_maa = 50000.0\n").unwrap();
        assert_eq!(cfg.churn.high_value_maa, 50_000.0);
        assert_eq!(cfg.default, DefaultModel::default());
        let round: SynthConfig =
            toml::from_str(&toml::to_string(&SynthConfig::default()).unwrap()).unwrap();
        assert_eq!(round, SynthConfig::default());
        assert!(toml::from_str::<SynthConfig>("[churn]\nhigh_value = 1.0\n").is_err());

        let mut bad = SynthConfig::default();
        bad.churn.drop_fraction = 1.5;
        let e = SynthGenerator::new(bad, InstitutionProfile::new("X", 1), 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "synthetic data config: churn.drop_fraction: must be in (0, 1)"
        );
        let mut bad = SynthConfig::default();
        bad.population.age_sd = f64::NAN;
        assert!(SynthGenerator::new(bad, InstitutionProfile::new("X", 1), 0).is_err());
        let mut p = InstitutionProfile::new("X", 1);
        p.digital_share = 2.0;
        let e = SynthGenerator::new(SynthConfig::default(), p, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "institution 'X': digital_share must be in [0, 1]"
        );

        // Raising the high-value threshold lowers churn.
        let p = InstitutionProfile::new("T", 20_000);
        let churn = |cfg: SynthConfig| {
            SynthGenerator::new(cfg, p.clone(), 1)
                .unwrap()
                .filter(|c| c.churn)
                .count()
        };
        assert!(churn(cfg) < churn(SynthConfig::default()));
    }
}
