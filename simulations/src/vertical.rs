//! Vertical datasets, prepared: each party's table (its id column, its feature columns, the
//! labels for the label holder) over its own random share of the customers, in its own
//! random row order, and what the simulator alone knows — which customer each row is — to
//! check a PSI against the plain intersection.

use std::collections::{BTreeMap, BTreeSet};

use fedsilo_ml::table::Table;
use ndarray::{Array2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::federation::seed_bytes;
use crate::scenario::VerticalSpec;

/// One party's part of a vertical dataset.
#[derive(Clone, Debug)]
pub struct VerticalPart {
    pub institution: String,
    /// The raw schema features this party holds, as the scenario lists them.
    pub columns: Vec<String>,
    pub holds_labels: bool,
    /// Rows in this party's order: `table.ids[i]` is the customer of the dataset's data row
    /// `customers[i]` (0-based).
    pub table: Table,
    pub customers: Vec<usize>,
}

/// A vertical dataset: every party's part.
#[derive(Clone, Debug)]
pub struct VerticalData {
    pub id_column: String,
    /// Customers in the file.
    pub rows: usize,
    pub parties: Vec<VerticalPart>,
}

/// Why a vertical split cannot be made from the table.
#[derive(Debug, thiserror::Error)]
pub enum VerticalError {
    #[error("{0}")]
    Invalid(String),
    #[error("party '{institution}': columns")]
    Columns {
        institution: String,
        #[source]
        source: fedsilo_ml::table::UnknownFeatures,
    },
}

/// The id of the customer on 0-based data row `row`: the prefix and the 1-based row.
pub fn customer_id(prefix: &str, row: usize) -> String {
    format!("{prefix}{:06}", row + 1)
}

/// Splits `table` (the whole file, read through its schema) between the parties of `spec`.
/// Deterministic for `seed`; each party's share and order are drawn from its own stream.
pub fn split(
    dataset: &str,
    spec: &VerticalSpec,
    table: &Table,
    raw_features: &[String],
    institutions: &[String],
    seed: u64,
) -> Result<VerticalData, VerticalError> {
    spec.validate(dataset, institutions, raw_features)
        .map_err(VerticalError::Invalid)?;
    let n = table.n_rows();
    let mut parties = Vec::with_capacity(spec.parties.len());
    for p in &spec.parties {
        let mut rng = rand_chacha::ChaCha8Rng::from_seed(seed_bytes(
            seed,
            &format!("vertical/{dataset}/{}", p.institution),
        ));
        let mut customers: Vec<usize> = (0..n).collect();
        customers.shuffle(&mut rng);
        let keep = ((n as f64) * p.coverage).round() as usize;
        customers.truncate(keep.clamp(1, n.max(1)));
        let names = fedsilo_ml::table::expand_feature_names(&p.columns, &table.feature_names)
            .map_err(|source| VerticalError::Columns {
                institution: p.institution.clone(),
                source,
            })?;
        let cols: Vec<usize> = names
            .iter()
            .filter_map(|c| table.feature_names.iter().position(|f| f == c))
            .collect();
        let rows = table.x.select(Axis(0), &customers);
        let (label_names, labels) = if p.labels {
            (
                table.label_names.clone(),
                table.labels.select(Axis(0), &customers),
            )
        } else {
            (Vec::new(), Array2::zeros((customers.len(), 0)))
        };
        let part = Table {
            feature_names: names,
            x: rows.select(Axis(1), &cols),
            label_names,
            labels,
            ids: customers
                .iter()
                .map(|&r| customer_id(&spec.id_prefix, r))
                .collect(),
        };
        parties.push(VerticalPart {
            institution: p.institution.clone(),
            columns: p.columns.clone(),
            holds_labels: p.labels,
            table: part,
            customers,
        });
    }
    Ok(VerticalData {
        id_column: spec.id_column.clone(),
        rows: n,
        parties,
    })
}

impl VerticalData {
    pub fn part(&self, institution: &str) -> Option<&VerticalPart> {
        self.parties.iter().find(|p| p.institution == institution)
    }

    /// The plain intersection of two parties' customers (what a PSI must find), computed
    /// from the simulator's knowledge of who each row is.
    pub fn true_intersection(&self, a: &str, b: &str) -> Option<BTreeSet<usize>> {
        let a: BTreeSet<usize> = self.part(a)?.customers.iter().copied().collect();
        let b = &self.part(b)?.customers;
        Some(b.iter().copied().filter(|c| a.contains(c)).collect())
    }

    /// Rows per party, by institution.
    pub fn sizes(&self) -> BTreeMap<String, usize> {
        self.parties
            .iter()
            .map(|p| (p.institution.clone(), p.table.n_rows()))
            .collect()
    }
}

/// The report's PSI part: for every PSI job of the scenario, the split and each session's
/// figures, checked against the plain intersection the simulator knows.
pub fn psi_reports(
    s: &crate::scenario::Scenario,
    fed: &crate::federation::Federation,
    obs: &crate::memory::PsiObserved,
) -> Vec<crate::report::PsiJobReport> {
    use crate::report::{PsiJobReport, PsiSessionReport, VerticalPartyReport};
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    s.psi
        .iter()
        .map(|entry| {
            let spec = s.psi_spec(entry);
            let v = fed.vertical.get(&entry.dataset);
            let record = obs.records.get(&entry.name);
            let parties = v
                .map(|v| {
                    v.parties
                        .iter()
                        .map(|p| VerticalPartyReport {
                            institution: p.institution.clone(),
                            role: if p.institution == spec.active {
                                "active".into()
                            } else if spec.passive.contains(&p.institution) {
                                "passive".into()
                            } else {
                                "not aligned".into()
                            },
                            holds_labels: p.holds_labels,
                            columns: p.columns.clone(),
                            encoded_columns: p.table.n_features(),
                            rows: p.table.n_rows(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let sessions = obs
                .sessions
                .iter()
                .filter(|x| x.job_id == entry.name)
                .map(|x| {
                    let truth = v
                        .and_then(|v| v.true_intersection(&x.active, &x.passive))
                        .unwrap_or_default();
                    let alignment = |who: &str| {
                        obs.alignments
                            .iter()
                            .find(|(i, a)| {
                                i == who && a.job_id == x.job_id && a.session == x.session
                            })
                            .map(|(_, a)| a)
                    };
                    let (ok, rows_checked) = match (&x.result, v) {
                        (Ok(o), Some(v)) => check_alignment(
                            v,
                            &truth,
                            o.intersection_size,
                            (&x.active, alignment(&x.active)),
                            (&x.passive, alignment(&x.passive)),
                        ),
                        _ => (false, 0),
                    };
                    let busy = |who: &str| {
                        obs.busy
                            .get(&(x.job_id.clone(), x.session, who.to_string()))
                            .copied()
                            .map(ms)
                            .unwrap_or(f64::NAN)
                    };
                    let o = x.result.as_ref().ok();
                    PsiSessionReport {
                        active: x.active.clone(),
                        passive: x.passive.clone(),
                        session: x.session,
                        outcome: match &x.result {
                            Ok(_) => "ok".into(),
                            Err(e) => e.clone(),
                        },
                        active_set_size: o.map(|o| o.active_set_size).unwrap_or(0),
                        passive_set_size: o.map(|o| o.passive_set_size).unwrap_or(0),
                        intersection_size: o.map(|o| o.intersection_size).unwrap_or(0),
                        true_intersection_size: truth.len() as u64,
                        matches_truth: ok,
                        rows_checked,
                        alignment_hash: o.map(|o| o.intersection_hash.clone()).unwrap_or_default(),
                        elapsed_ms: ms(x.elapsed),
                        active_busy_ms: busy(&x.active),
                        passive_busy_ms: busy(&x.passive),
                        messages_active_to_passive: x.messages[0],
                        messages_passive_to_active: x.messages[1],
                        bytes_active_to_passive: x.bytes[0],
                        bytes_passive_to_active: x.bytes[1],
                    }
                })
                .collect();
            let (state, finished) = match record {
                Some(r) => (
                    r.state.label(),
                    matches!(r.state, fedsilo_coordinator::engine::JobState::Finished),
                ),
                None => ("never started (no record)".into(), false),
            };
            let coordinator_learned = record
                .map(|r| {
                    let mut l: Vec<String> = r
                        .pairs
                        .iter()
                        .map(|p| {
                            format!(
                                "{} ∩ {}: set sizes {} and {} (duplicates dropped: {} and {}), \
                                 intersection size {}, alignment hash {}",
                                p.active,
                                p.passive,
                                p.active_set_size,
                                p.passive_set_size,
                                p.active_duplicates_dropped,
                                p.passive_duplicates_dropped,
                                p.intersection_size,
                                p.intersection_hash
                            )
                        })
                        .collect();
                    l.push(
                        "The number and length of the sealed messages it relayed (which give the \
                         same sizes); never an id, a hash of one or a blinded point in the clear: \
                         every chunk is sealed between the two parties."
                            .into(),
                    );
                    l
                })
                .unwrap_or_default();
            PsiJobReport {
                name: entry.name.clone(),
                dataset: entry.dataset.clone(),
                state,
                finished,
                id_format: fedsilo_crypto::psi::IdFormat::from(spec.id_format)
                    .name()
                    .into(),
                delivery: match spec.delivery {
                    fedsilo_task::psi::DeliveryName::Both => "both".into(),
                    fedsilo_task::psi::DeliveryName::ActiveOnly => "active_only".into(),
                },
                customers: v.map(|v| v.rows).unwrap_or(0),
                parties,
                sessions,
                coordinator_learned,
            }
        })
        .collect()
}

/// Whether a session's reported intersection and the two alignments are the true
/// intersection, pair by pair; returns (all true, pairs checked).
fn check_alignment(
    v: &VerticalData,
    truth: &BTreeSet<usize>,
    reported: u64,
    (active, a): (&str, Option<&fedsilo_participant::psi::Alignment>),
    (passive, p): (&str, Option<&fedsilo_participant::psi::Alignment>),
) -> (bool, u64) {
    let (Some(pa), Some(pp), Some(a), Some(p)) = (v.part(active), v.part(passive), a, p) else {
        return (false, 0);
    };
    let customer = |part: &VerticalPart, row: u32| part.customers.get(row as usize).copied();
    let Some(a_rows) = &a.rows else {
        return (false, 0);
    };
    let Some(a_customers) = a_rows
        .iter()
        .map(|&r| customer(pa, r))
        .collect::<Option<Vec<usize>>>()
    else {
        return (false, 0);
    };
    let found: BTreeSet<usize> = a_customers.iter().copied().collect();
    let mut ok = reported == truth.len() as u64
        && a_customers.len() == truth.len()
        && found == *truth
        && a.intersection_hash == p.intersection_hash;
    // With `active_only` the passive party has the size and the hash only.
    if let Some(p_rows) = &p.rows {
        ok &= p_rows.len() == a_customers.len()
            && p_rows
                .iter()
                .zip(&a_customers)
                .all(|(&r, &c)| customer(pp, r) == Some(c));
    }
    (ok, a_customers.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::VerticalParty;

    fn table(n: usize) -> Table {
        Table {
            feature_names: vec!["a".into(), "b=x".into(), "b=y".into(), "c".into()],
            x: Array2::from_shape_fn((n, 4), |(r, c)| (r * 10 + c) as f32),
            label_names: vec!["y".into()],
            labels: Array2::from_shape_fn((n, 1), |(r, _)| (r % 2) as f32),
            ids: (0..n).map(|r| (r + 1).to_string()).collect(),
        }
    }

    #[test]
    fn each_party_holds_its_columns_for_its_share_of_customers_in_its_own_order() {
        let spec = VerticalSpec {
            id_column: "customer_id".into(),
            id_prefix: "C".into(),
            parties: vec![
                VerticalParty {
                    institution: "Bank".into(),
                    columns: vec!["a".into()],
                    labels: true,
                    coverage: 0.8,
                },
                VerticalParty {
                    institution: "Insurer".into(),
                    columns: vec!["b".into(), "c".into()],
                    labels: false,
                    coverage: 0.7,
                },
            ],
        };
        let t = table(500);
        let names = vec!["Bank".to_string(), "Insurer".to_string()];
        let raw = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let v = split("d", &spec, &t, &raw, &names, 7).unwrap();
        let bank = v.part("Bank").unwrap();
        let ins = v.part("Insurer").unwrap();
        assert_eq!(bank.table.n_rows(), 400);
        assert_eq!(ins.table.n_rows(), 350);
        assert_eq!(bank.table.feature_names, ["a"]);
        assert_eq!(ins.table.feature_names, ["b=x", "b=y", "c"]);
        assert_eq!(ins.table.labels.ncols(), 0);
        // Every row is its customer's row of the file.
        for (i, &c) in bank.customers.iter().enumerate() {
            assert_eq!(bank.table.ids[i], customer_id("C", c));
            assert_eq!(bank.table.x[[i, 0]], (c * 10) as f32);
            assert_eq!(bank.table.labels[[i, 0]], (c % 2) as f32);
        }
        for (i, &c) in ins.customers.iter().enumerate() {
            assert_eq!(ins.table.x[[i, 2]], (c * 10 + 3) as f32);
        }
        // Different orders, a partial overlap.
        assert_ne!(bank.customers[..20], ins.customers[..20]);
        let shared = v.true_intersection("Bank", "Insurer").unwrap().len();
        assert!(shared > 200 && shared < 350, "{shared}");
        // The same seed makes the same split.
        let w = split("d", &spec, &t, &raw, &names, 7).unwrap();
        assert_eq!(w.part("Insurer").unwrap().customers, ins.customers);
    }
}
