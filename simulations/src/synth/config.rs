//! Every coefficient of the generator ([`SynthConfig`]) and its check.

use serde::{Deserialize, Serialize};

use super::SynthError;

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
