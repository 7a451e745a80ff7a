//! Vertical datasets and PSI jobs of a scenario.
//!
//! A vertical dataset splits one CSV's *columns* between institutions: each party holds the
//! customer id, its own feature columns and (one party, the label holder) the labels, for a
//! random share of the customers (`coverage`), in its own random row order. The simulator
//! gives every customer an id made from its line in the file (`C000001` for the first data
//! row), so it knows the true intersection of any two parties and can check the PSI's.
//!
//! ```toml
//! [[datasets]]
//! name = "churn"
//! csv = "../../data/wa_churn.csv"
//! schema = "../../data/wa_churn.schema.toml"
//! [datasets.vertical]
//! id_column = "customer_id"            # default
//! id_prefix = "C"                      # default
//! [[datasets.vertical.parties]]
//! institution = "Bank"
//! labels = true                        # the label holder: the PSI's active party
//! coverage = 0.85
//! columns = ["tenure", "contract", "payment_method", "monthly_charges"]
//! [[datasets.vertical.parties]]
//! institution = "Telecom partner"
//! coverage = 0.8
//! columns = ["internet_service", "streaming_tv"]
//!
//! [[psi]]                              # align the bank with every partner
//! name = "align-churn"
//! dataset = "churn"
//! ```
//!
//! The column lists are explicit (raw schema names, one-hot columns follow their feature), so
//! vertical models can later name which party holds which feature.

use serde::{Deserialize, Serialize};

use fedsilo_task::psi::{DeliveryName, DuplicatesName, IdFormatName};

fn default_id_column() -> String {
    "customer_id".into()
}

fn default_id_prefix() -> String {
    "C".into()
}

/// How a vertical dataset's columns and customers are split between institutions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerticalSpec {
    /// The id column every party's table gets (what the PSI reads).
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// Ids are this prefix and the customer's 1-based data row, six digits at least.
    #[serde(default = "default_id_prefix")]
    pub id_prefix: String,
    /// The parties, in order: exactly one with `labels = true`.
    pub parties: Vec<VerticalParty>,
}

/// One institution's share of a vertical dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerticalParty {
    pub institution: String,
    /// The schema features this party holds (raw names: a categorical feature brings all its
    /// one-hot columns). A feature is held by one party at most.
    pub columns: Vec<String>,
    /// Whether this party holds the labels (the active party of the PSI).
    #[serde(default)]
    pub labels: bool,
    /// The share of the dataset's customers this party holds, drawn at random for each
    /// party independently (so two parties of coverage a and b share about a·b of them).
    pub coverage: f64,
}

/// A PSI job of the scenario: which parties of a vertical dataset to align.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsiEntry {
    /// The job's name, also its job id.
    pub name: String,
    /// A vertical dataset.
    pub dataset: String,
    /// Default: the dataset's label holder.
    #[serde(default)]
    pub active: Option<String>,
    /// Default: every other party of the dataset, in its order.
    #[serde(default)]
    pub passive: Vec<String>,
    #[serde(default)]
    pub id_format: IdFormatName,
    #[serde(default)]
    pub delivery: DeliveryName,
    #[serde(default)]
    pub duplicates: DuplicatesName,
    /// Points per sealed chunk; 0 = the default.
    #[serde(default)]
    pub chunk_len: u32,
}

/// Which vertical model a `[[vertical_models]]` entry trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerticalModelKind {
    /// Vertical logistic regression (`fedsilo_vertical::lr`).
    VerticalLogistic,
    /// SecureBoost (`fedsilo_vertical::boost`).
    VerticalGbdt,
}

impl VerticalModelKind {
    pub fn name(self) -> &'static str {
        match self {
            VerticalModelKind::VerticalLogistic => "vertical_logistic",
            VerticalModelKind::VerticalGbdt => "vertical_gbdt",
        }
    }
}

fn default_key_bits() -> u32 {
    2048
}

/// A vertical model of the scenario, trained on the alignment of a `[[psi]]` job:
///
/// ```toml
/// [[vertical_models]]
/// name = "churn-vertical-lr"
/// kind = "vertical_logistic"          # or "vertical_gbdt"
/// psi = "align-churn"                 # its delivery must be "both"
/// task = "churn"                      # default "risk"
/// key_bits = 2048                     # the active party's Paillier modulus (default)
/// iterations = 60                     # vertical_logistic only (default 50)
/// l2 = 1e-4                           # default 1e-4
/// pos_weight = 1.0                    # default 1
/// optimizer = { kind = "fed_adam", lr = 0.1, beta1 = 0.9, beta2 = 0.99, eps = 1e-3 }
/// # vertical_gbdt only: the boosting parameters, as a gbdt job's model table
/// gbdt = { n_trees = 20, max_depth = 3, learning_rate = 0.3, max_bins = 32 }
/// ```
///
/// The pooled reference (the same model on the joined table) and the active party's
/// model on its own columns are trained with the same parameters.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerticalModelEntry {
    pub name: String,
    pub kind: VerticalModelKind,
    /// The `[[psi]]` job whose alignment the model trains on.
    pub psi: String,
    #[serde(default)]
    pub task: fedsilo_task::Task,
    #[serde(default = "default_key_bits")]
    pub key_bits: u32,
    #[serde(default)]
    pub iterations: Option<u32>,
    #[serde(default)]
    pub l2: Option<f64>,
    #[serde(default)]
    pub pos_weight: Option<f64>,
    #[serde(default)]
    pub optimizer: Option<fedsilo_ml::optim::ServerOptimizer>,
    #[serde(default)]
    pub gbdt: Option<fedsilo_ml::gbdt::GbdtParams>,
}

impl VerticalModelEntry {
    /// The LR configuration (defaults filled in) every party of a `vertical_logistic` model
    /// and its references use.
    pub fn lr_config(&self) -> fedsilo_vertical::lr::LrConfig {
        let optimizer =
            self.optimizer
                .clone()
                .unwrap_or(fedsilo_ml::optim::ServerOptimizer::FedAdam {
                    lr: 0.1,
                    beta1: 0.9,
                    beta2: 0.99,
                    eps: 1e-3,
                });
        let mut cfg = fedsilo_vertical::lr::LrConfig::new(self.iterations.unwrap_or(50), optimizer);
        cfg.l2 = self.l2.unwrap_or(1e-4);
        cfg.pos_weight = self.pos_weight.unwrap_or(1.0);
        cfg
    }

    /// The boosting parameters of a `vertical_gbdt` model (the defaults when none given).
    pub fn gbdt_params(&self) -> fedsilo_ml::gbdt::GbdtParams {
        self.gbdt.clone().unwrap_or_default()
    }

    /// Checks what serde cannot: the keys of the other kind, the parameters' domains.
    pub fn validate(&self) -> Result<(), String> {
        let at = |what: String| format!("vertical_models '{}': {what}", self.name);
        if self.key_bits % 2 != 0 || !(1024..=4096).contains(&self.key_bits) {
            return Err(at(format!(
                "key_bits: {} must be even and in 1024..=4096",
                self.key_bits
            )));
        }
        match self.kind {
            VerticalModelKind::VerticalLogistic => {
                if self.gbdt.is_some() {
                    return Err(at(
                        "gbdt: boosting parameters apply to kind = \"vertical_gbdt\"".into(),
                    ));
                }
                self.lr_config().validate().map_err(|e| at(e.to_string()))?;
            }
            VerticalModelKind::VerticalGbdt => {
                for (key, given) in [
                    ("iterations", self.iterations.is_some()),
                    ("l2", self.l2.is_some()),
                    ("pos_weight", self.pos_weight.is_some()),
                    ("optimizer", self.optimizer.is_some()),
                ] {
                    if given {
                        return Err(at(format!(
                            "{key}: applies to kind = \"vertical_logistic\" (boosting takes a gbdt table)"
                        )));
                    }
                }
                self.gbdt_params()
                    .validate()
                    .map_err(|e| at(e.to_string()))?;
            }
        }
        Ok(())
    }
}

impl VerticalSpec {
    /// The label holder.
    pub fn label_holder(&self) -> Option<&VerticalParty> {
        self.parties.iter().find(|p| p.labels)
    }

    /// Checks what serde cannot; `institutions` are the scenario's names, `features` the
    /// schema's raw feature names.
    pub fn validate(
        &self,
        dataset: &str,
        institutions: &[String],
        features: &[String],
    ) -> Result<(), String> {
        let at = |what: String| format!("datasets '{dataset}'.vertical: {what}");
        if self.parties.len() < 2 {
            return Err(at(format!(
                "parties: {} given, a vertical split needs at least 2",
                self.parties.len()
            )));
        }
        let holders = self.parties.iter().filter(|p| p.labels).count();
        if holders != 1 {
            return Err(at(format!(
                "parties: {holders} parties have labels = true, exactly one must (the label holder)"
            )));
        }
        if self.id_column.trim().is_empty() {
            return Err(at("id_column: empty".into()));
        }
        for (i, p) in self.parties.iter().enumerate() {
            let at = |what: String| at(format!("parties[{i}] ('{}'): {what}", p.institution));
            if !institutions.contains(&p.institution) {
                return Err(at(format!(
                    "institution is not one of the scenario's ({})",
                    institutions.join(", ")
                )));
            }
            if self.parties[..i]
                .iter()
                .any(|q| q.institution == p.institution)
            {
                return Err(at("the institution is named twice".into()));
            }
            if !(p.coverage > 0.0 && p.coverage <= 1.0) {
                return Err(at(format!("coverage: {} is not in (0, 1]", p.coverage)));
            }
            if p.columns.is_empty() && !p.labels {
                return Err(at(
                    "columns: a partner without columns brings nothing".into()
                ));
            }
            for c in &p.columns {
                if !features.contains(c) {
                    return Err(at(format!(
                        "columns: '{c}' is not a feature of the schema ({})",
                        features.join(", ")
                    )));
                }
                if self.parties[..i].iter().any(|q| q.columns.contains(c)) {
                    return Err(at(format!("columns: '{c}' is held by an earlier party")));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::scenario::Scenario;

    fn scenario(vertical: &str, psi: &str) -> Result<Scenario, fedsilo_config::ConfigError> {
        let text = format!(
            "name = \"t\"\n[institutions]\ncount = 2\nnames = [\"Bank\", \"Insurer\"]\n\
             [[datasets]]\nname = \"d\"\ncsv = \"x.csv\"\nschema = \"x.toml\"\n{vertical}\n{psi}"
        );
        fedsilo_config::from_toml_str(&text, "s.toml")
    }

    const SPLIT: &str = "[datasets.vertical]\n\
        [[datasets.vertical.parties]]\ninstitution = \"Bank\"\nlabels = true\ncoverage = 0.8\ncolumns = [\"a\"]\n\
        [[datasets.vertical.parties]]\ninstitution = \"Insurer\"\ncoverage = 0.7\ncolumns = [\"b\"]\n";

    #[test]
    fn a_vertical_split_and_a_psi_job_are_read_with_their_defaults() {
        let s = scenario(SPLIT, "[[psi]]\nname = \"align\"\ndataset = \"d\"\n").unwrap();
        let v = s.datasets[0].vertical.as_ref().unwrap();
        assert_eq!(v.id_column, "customer_id");
        assert_eq!(v.id_prefix, "C");
        assert_eq!(v.label_holder().unwrap().institution, "Bank");
        assert_eq!(v.parties[1].columns, ["b"]);
        assert_eq!(s.psi[0].name, "align");
        assert_eq!(s.psi[0].active, None);
        assert!(s.psi[0].passive.is_empty());
    }

    #[test]
    fn a_typo_in_the_split_or_the_psi_table_is_refused_with_the_nearest_key() {
        let e = scenario(
            &SPLIT.replace("coverage = 0.7", "coverag = 0.7"),
            "[[psi]]\nname = \"a\"\ndataset = \"d\"\n",
        )
        .unwrap_err();
        assert_eq!(e.unknown_key(), Some("coverag"), "{e}");
        assert_eq!(e.suggestion(), Some("coverage"), "{e}");
        assert!(
            e.to_string().contains("datasets[0].vertical.parties[1]"),
            "{e}"
        );
        let e = scenario(
            SPLIT,
            "[[psi]]\nname = \"a\"\ndataset = \"d\"\nid_fromat = \"text\"\n",
        )
        .unwrap_err();
        assert_eq!(e.suggestion(), Some("id_format"), "{e}");
        let e = scenario(
            &SPLIT.replace(
                "[datasets.vertical]\n",
                "[datasets.vertical]\nidcolumn = \"x\"\n",
            ),
            "",
        )
        .unwrap_err();
        assert_eq!(e.suggestion(), Some("id_column"), "{e}");
    }

    const PSI: &str = "[[psi]]\nname = \"align\"\ndataset = \"d\"\ndelivery = \"both\"\n";

    fn model(body: &str) -> Result<Scenario, String> {
        // A scenario whose data files do not exist: `load` would fail on them, so the
        // checks `load` runs are called directly.
        let s = scenario(SPLIT, &format!("{PSI}[[vertical_models]]\n{body}"))
            .map_err(|e| fedsilo_config::display_chain(&e))?;
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn vertical_models_are_read_strictly_and_checked() {
        let s =
            model("name = \"lr\"\nkind = \"vertical_logistic\"\npsi = \"align\"\niterations = 7\n")
                .unwrap();
        let m = &s.vertical_models[0];
        assert_eq!(m.kind, super::VerticalModelKind::VerticalLogistic);
        assert_eq!(m.key_bits, 2048);
        assert_eq!(m.lr_config().iterations, 7);
        let s = model(
            "name = \"gb\"\nkind = \"vertical_gbdt\"\npsi = \"align\"\ngbdt = { n_trees = 5, max_depth = 2 }\n",
        )
        .unwrap();
        assert_eq!(s.vertical_models[0].gbdt_params().n_trees, 5);
        // a typo in the table or in its gbdt table: refused with the nearest key
        let e = scenario(
            SPLIT,
            &format!("{PSI}[[vertical_models]]\nname = \"lr\"\nkind = \"vertical_logistic\"\npsi = \"align\"\niteratons = 7\n"),
        )
        .unwrap_err();
        assert_eq!(e.unknown_key(), Some("iteratons"), "{e}");
        assert_eq!(e.suggestion(), Some("iterations"), "{e}");
        assert!(e.to_string().contains("vertical_models[0]"), "{e}");
        let e = scenario(
            SPLIT,
            &format!("{PSI}[[vertical_models]]\nname = \"gb\"\nkind = \"vertical_gbdt\"\npsi = \"align\"\ngbdt = {{ n_tree = 5 }}\n"),
        )
        .unwrap_err();
        assert_eq!(e.suggestion(), Some("n_trees"), "{e}");
        let e = scenario(
            SPLIT,
            &format!(
                "{PSI}[[vertical_models]]\nname = \"x\"\nkind = \"vertical_lr\"\npsi = \"align\"\n"
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("vertical_logistic"), "{e}");
        // the other kind's keys, an unknown PSI job, an alignment the passive party lacks
        let e = model("name = \"gb\"\nkind = \"vertical_gbdt\"\npsi = \"align\"\niterations = 3\n")
            .unwrap_err();
        assert!(
            e.contains("iterations: applies to kind = \"vertical_logistic\""),
            "{e}"
        );
        let e = model(
            "name = \"lr\"\nkind = \"vertical_logistic\"\npsi = \"align\"\ngbdt = { n_trees = 5 }\n",
        )
        .unwrap_err();
        assert!(e.contains("gbdt: boosting parameters"), "{e}");
        let e = model("name = \"lr\"\nkind = \"vertical_logistic\"\npsi = \"nope\"\n").unwrap_err();
        assert!(e.contains("psi: 'nope' is not a [[psi]] job"), "{e}");
        let e =
            model("name = \"lr\"\nkind = \"vertical_logistic\"\npsi = \"align\"\nkey_bits = 512\n")
                .unwrap_err();
        assert!(e.contains("key_bits: 512"), "{e}");
        let e =
            model("name = \"align\"\nkind = \"vertical_logistic\"\npsi = \"align\"\n").unwrap_err();
        assert!(e.contains("the name is used"), "{e}");
        let text = format!(
            "name = \"t\"\n[institutions]\ncount = 2\nnames = [\"Bank\", \"Insurer\"]\n\
             [[datasets]]\nname = \"d\"\ncsv = \"x.csv\"\nschema = \"x.toml\"\n{SPLIT}\n\
             [[psi]]\nname = \"align\"\ndataset = \"d\"\ndelivery = \"active_only\"\n\
             [[vertical_models]]\nname = \"lr\"\nkind = \"vertical_logistic\"\npsi = \"align\"\n"
        );
        let s: Scenario = fedsilo_config::from_toml_str(&text, "s.toml").unwrap();
        let e = s.validate().unwrap_err();
        assert!(e.contains("set delivery = \"both\""), "{e}");
    }

    #[test]
    fn a_split_is_checked_against_the_institutions_and_the_schema() {
        let s = scenario(SPLIT, "").unwrap();
        let v = s.datasets[0].vertical.as_ref().unwrap();
        let inst = vec!["Bank".to_string(), "Insurer".to_string()];
        let feats = vec!["a".to_string(), "b".to_string()];
        assert_eq!(v.validate("d", &inst, &feats), Ok(()));
        let e = v.validate("d", &inst, &["a".into()]).unwrap_err();
        assert!(e.contains("'b' is not a feature"), "{e}");
        let e = v.validate("d", &["Bank".into()], &feats).unwrap_err();
        assert!(e.contains("parties[1] ('Insurer'): institution"), "{e}");
        let mut w = v.clone();
        w.parties[1].labels = true;
        assert!(w
            .validate("d", &inst, &feats)
            .unwrap_err()
            .contains("2 parties have labels"));
        let mut w = v.clone();
        w.parties[1].columns = vec!["a".into()];
        assert!(w
            .validate("d", &inst, &feats)
            .unwrap_err()
            .contains("held by an earlier party"));
        let mut w = v.clone();
        w.parties[0].coverage = 1.5;
        assert!(w
            .validate("d", &inst, &feats)
            .unwrap_err()
            .contains("coverage: 1.5"));
    }
}
