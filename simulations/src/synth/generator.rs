//! The generator: the model of the module documentation, drawn one customer at a time.

use std::fmt::Write as _;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Poisson, StandardNormal};

use super::{stream_key, Customer, InstitutionProfile, Latent, Segment, SynthConfig, SynthError};

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
