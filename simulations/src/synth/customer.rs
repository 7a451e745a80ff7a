//! One synthetic customer, its columns and the schema of the generator's output.

use fedsilo_participant::data::{FeatureSpec, LabelSpec, Schema};
use serde::{Deserialize, Serialize};

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
            .map(|l| LabelSpec::positive(*l, "1"))
            .collect(),
        features,
        missing: Vec::new(),
        delimiter: ',',
        cohort: None,
        inputs: Vec::new(),
        derive: Default::default(),
    }
}
