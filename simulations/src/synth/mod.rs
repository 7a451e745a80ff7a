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
use ndarray::Array2;
use sha2::{Digest, Sha256};

mod config;
mod customer;
mod generator;
mod profile;

pub use config::{
    Activity, ChurnModel, DefaultModel, InsurancePropensity, Population, Products, Segments,
    SynthConfig, WealthPropensity,
};
pub use customer::{synth_schema, Customer, Latent, Segment, ID_COLUMN, LABELS, NUMERIC_FEATURES};
pub use generator::SynthGenerator;
pub use profile::InstitutionProfile;

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
mod tests;
