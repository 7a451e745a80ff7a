//! The empirical privacy audit in the report: membership inference against every released
//! model, and what the coordinator's unmasked sums covered — "what an attacker achieved"
//! next to the accountant's "what the math promises".
//!
//! **Threat model.** The attacker holds the released model (query access to its
//! probabilities) and rows from the same distribution as the institutions' customers, and
//! asks of one customer's row: "was it in the training set?". Members are training rows,
//! non-members the same institutions' hold-out rows (never trained on); the two sides are
//! balanced by subsampling the larger one with a seeded RNG, so an AUC of 0.5 is guessing.
//! Each model is attacked twice: the loss threshold and offline LiRA ([`attack`]). The
//! shadow models are trained by [`fedsilo_task::fit_pooled`] with the job's own spec on
//! complementary random halves of the population the audited rows are drawn from (all
//! training and hold-out rows in question), i.e. without the federation's noise.
//!
//! Audited per job and label: the federated model, the pooled baseline (same members and
//! non-members), and each institution's local-only model (its own training vs hold-out
//! rows). The audit is computed by the simulator after the run, like the baselines; it
//! touches neither the coordinator nor the workers.

use std::collections::BTreeSet;
use std::ops::Range;
use std::time::{Duration, Instant};

use fedsilo_coordinator::engine::{JobRecord, RoundOutcome, RoundSummary};
use fedsilo_ml::table::Table;
use fedsilo_task::{JobSpec, LocalData, ModelSpec, Purpose, TrainedModel};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::baselines::{stack, Baselines};
use crate::report::audit::{AuditDp, AuditReport, CoordinatorView, ModelAudit};
use crate::scenario::{JobEntry, Scenario};

pub mod attack;
pub mod roc;

use attack::{loss_attack, Figures, Shadows};

/// At most this many members (and as many non-members) per audited model.
pub const MAX_ROWS_PER_SIDE: usize = 10_000;
/// Local-only models audited per job: the first institutions, in institution order.
pub const MAX_LOCAL_MODELS: usize = 16;

/// Shadow-model pairs per job and the rows of each shadow, by model kind: logistic
/// regression and scorecards (a Newton fit) get 2 pairs on halves of up to 1 000 rows, MLPs
/// and GBDTs (many epochs or trees per fit) 2 pairs on halves of up to 500 rows. Small on
/// purpose: the audit must not cost more than the baselines do.
pub fn shadow_budget(model: &ModelSpec) -> (usize, usize) {
    match model {
        ModelSpec::LogisticRegression | ModelSpec::Scorecard(_) => (2, 1_000),
        ModelSpec::Mlp { .. } | ModelSpec::Gbdt(_) => (2, 500),
    }
}

/// The audit of one run, filled job by job while the report is built.
pub struct Audit {
    enabled: bool,
    /// Whether the pooled and local-only baselines were trained (and so can be attacked).
    baselines: bool,
    seed: u64,
    /// Time spent auditing so far (the baselines between jobs not counted).
    spent: Duration,
    models: Vec<ModelAudit>,
}

/// A job's audited rows: every institution's training rows, then every institution's
/// hold-out rows, stacked in institution order. The shadow models train on halves of it.
struct Population {
    table: Table,
    /// Institution i's training rows are `train[i]`, its hold-out rows `holdout[i]`.
    train: Vec<Range<usize>>,
    holdout: Vec<Range<usize>>,
}

/// Members and non-members of one audited model, as rows of the population, balanced.
struct Sample {
    members: Vec<usize>,
    non_members: Vec<usize>,
}

impl Population {
    fn of(trains: &[&Table], holds: &[&Table]) -> Option<Self> {
        let tables: Vec<&Table> = trains.iter().chain(holds).copied().collect();
        let table = stack(&tables).ok()?;
        let mut at = 0;
        let mut ranges = |ts: &[&Table]| -> Vec<Range<usize>> {
            ts.iter()
                .map(|t| {
                    let r = at..at + t.n_rows();
                    at = r.end;
                    r
                })
                .collect()
        };
        let train = ranges(trains);
        let holdout = ranges(holds);
        Some(Population {
            table,
            train,
            holdout,
        })
    }

    /// Members from the `train` ranges, non-members from the `holdout` ranges: the larger
    /// side subsampled to the smaller (and both to [`MAX_ROWS_PER_SIDE`]) with `rng`.
    fn sample(train: &[Range<usize>], holdout: &[Range<usize>], rng: &mut ChaCha8Rng) -> Sample {
        let rows = |rs: &[Range<usize>]| rs.iter().flat_map(Range::clone).collect::<Vec<_>>();
        let (m, h) = (rows(train), rows(holdout));
        let n = m.len().min(h.len()).min(MAX_ROWS_PER_SIDE);
        let mut pick = |from: Vec<usize>| {
            let mut v: Vec<usize> = rand::seq::index::sample(rng, from.len(), n)
                .into_iter()
                .filter_map(|i| from.get(i).copied())
                .collect();
            v.sort_unstable();
            v
        };
        Sample {
            members: pick(m),
            non_members: pick(h),
        }
    }
}

/// FNV-1a of a name, to give each job its own random stream.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Audit {
    /// An audit of scenario `s` (a no-op when the scenario turned it off).
    pub fn new(s: &Scenario) -> Self {
        Audit {
            enabled: s.audit,
            baselines: s.baselines,
            seed: s.seed,
            spent: Duration::ZERO,
            models: Vec::new(),
        }
    }

    /// Audits one finished job's models: `spec` is the job's spec with its columns resolved
    /// (as the baselines were trained), `locals` the institutions' rows, `names` theirs.
    pub fn job(
        &mut self,
        job: &JobEntry,
        rec: &JobRecord,
        spec: &JobSpec,
        locals: &[LocalData],
        names: &[String],
        base: &Baselines,
    ) {
        if !self.enabled {
            return;
        }
        let started = Instant::now();
        self.audit_job(job, rec, spec, locals, names, base);
        self.spent += started.elapsed();
    }

    fn audit_job(
        &mut self,
        job: &JobEntry,
        rec: &JobRecord,
        spec: &JobSpec,
        locals: &[LocalData],
        names: &[String],
        base: &Baselines,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ fnv(&job.name));
        let labels = &rec.plan.data().labels;
        let name_of = |label: &str| {
            if labels.len() > 1 {
                format!("{}: {}", job.name, label)
            } else {
                job.name.clone()
            }
        };
        let (pairs, half_cap) = shadow_budget(&spec.model);
        let dp = spec.dp.as_ref().map(|d| AuditDp {
            level: d.level.name().into(),
            epsilon: rec.epsilon,
            delta: d.delta,
        });
        let trains: Vec<&Table> = locals.iter().map(|l| &l.train).collect();
        let holds: Vec<&Table> = locals.iter().map(|l| &l.holdout).collect();
        let Some(pop) = Population::of(&trains, &holds) else {
            return;
        };
        let shadows = Shadows::train(spec, &pop.table, pairs, half_cap, &mut rng);
        // The federated and the pooled model: every institution's rows.
        let all = Population::sample(&pop.train, &pop.holdout, &mut rng);
        let mut targets = vec![(
            Target {
                kind: "federated".into(),
                dp: dp.clone(),
                model: rec.plan.model(),
                missing: "the job produced no model",
            },
            &all,
        )];
        let mut own = Vec::new();
        if self.baselines {
            targets.push((
                Target {
                    kind: "pooled".into(),
                    dp: None,
                    model: base.pooled.as_ref(),
                    missing: "the pooled baseline could not be fitted",
                },
                &all,
            ));
            // Each local-only model: its institution's own rows.
            for (i, (t, h)) in pop.train.iter().zip(&pop.holdout).enumerate() {
                if i >= MAX_LOCAL_MODELS {
                    break;
                }
                let sample =
                    Population::sample(std::slice::from_ref(t), std::slice::from_ref(h), &mut rng);
                own.push((i, sample));
            }
        }
        for (i, sample) in &own {
            targets.push((
                Target {
                    kind: format!("local:{}", names.get(*i).map(String::as_str).unwrap_or("?")),
                    dp: None,
                    model: base.local.get(*i).and_then(Option::as_ref),
                    missing: "the local-only baseline could not be fitted (e.g. one class only)",
                },
                sample,
            ));
        }
        for (target, sample) in &targets {
            for (li, label) in labels.iter().enumerate() {
                let row = target.audit(name_of(label), &job.name, &pop.table, sample, &shadows, li);
                self.models.push(row);
            }
        }
    }

    /// The audit for the report, with the coordinator's view of `rounds`; `None` when the
    /// scenario turned the audit off.
    pub fn finish(self, rounds: &[RoundSummary]) -> Option<AuditReport> {
        if !self.enabled {
            return None;
        }
        let started = Instant::now();
        let coordinator_view = coordinator_view(rounds);
        Some(AuditReport {
            method: method(),
            models: self.models,
            coordinator_view,
            seconds: (self.spent + started.elapsed()).as_secs_f64(),
        })
    }
}

/// One released model to attack.
struct Target<'a> {
    kind: String,
    dp: Option<AuditDp>,
    model: Option<&'a TrainedModel>,
    /// The note when `model` is `None`.
    missing: &'static str,
}

impl Target<'_> {
    fn audit(
        &self,
        name: String,
        job: &str,
        population: &Table,
        ctx: &Sample,
        shadows: &Shadows,
        label: usize,
    ) -> ModelAudit {
        let (loss, lira, note) = match self.model {
            None => (Figures::NONE, Figures::NONE, Some(self.missing.to_string())),
            Some(m) => {
                let loss = loss_attack(
                    m,
                    &population.select_rows(&ctx.members),
                    &population.select_rows(&ctx.non_members),
                    label,
                );
                let lira = shadows.lira(m, population, &ctx.members, &ctx.non_members, label);
                let note = match (&loss, &lira) {
                    (None, _) => Some("the model could not score the audited rows".to_string()),
                    (_, None) => Some("no shadow model could be trained".to_string()),
                    _ => None,
                };
                (
                    loss.unwrap_or(Figures::NONE),
                    lira.unwrap_or(Figures::NONE),
                    note,
                )
            }
        };
        ModelAudit {
            name,
            job: job.to_string(),
            kind: self.kind.clone(),
            dp: self.dp.clone(),
            members: ctx.members.len(),
            non_members: ctx.non_members.len(),
            loss_auc: loss.auc,
            loss_tpr_at_0_1pct: loss.tpr_at_0_1pct,
            loss_tpr_at_1pct: loss.tpr_at_1pct,
            lira_auc: lira.auc,
            lira_tpr_at_0_1pct: lira.tpr_at_0_1pct,
            lira_tpr_at_1pct: lira.tpr_at_1pct,
            shadows: shadows.trained(),
            note,
        }
    }
}

/// The threat model and the method, as the report states them.
fn method() -> Vec<String> {
    vec![
        "Threat model: the attacker holds the released model (its probabilities for any row) and customer rows from the same distribution, and asks of one customer's row whether it was in the training set.".into(),
        format!("Members are training rows, non-members the same institutions' hold-out rows; the larger side is subsampled to the size of the smaller with a seeded random generator (at most {MAX_ROWS_PER_SIDE} rows per side), so an attack AUC of 0.5 is guessing."),
        "Loss-threshold attack (Yeom et al. 2018): a row scoring a lower loss on its true label is called a member.".into(),
        "Offline LiRA (Carlini et al. 2022): shadow models are trained with the job's own model kind and settings, without differential-privacy noise, on random halves of the job's rows (all institutions' training and hold-out rows); each row's logit-scaled confidence under the shadows that did not see it is fitted by a Gaussian (per-row mean, one shared variance) and the released model's confidence is scored by a one-sided test.".into(),
        "Shadow models, kept few and small so the audit costs less than the baselines: 2 complementary pairs (each row is unseen by at least 2 shadows) on halves of up to 1,000 rows for logistic regression and scorecards, of up to 500 rows for MLPs and GBDTs. Every model of a job is scored against the same shadows, so for a local-only model (trained on one institution's rows) LiRA is calibrated on models of other data and is a weaker attack than the loss threshold may be.".into(),
        format!("TPR at a false-positive rate ≤ x is read exactly from the ROC (no interpolation): with n non-members it allows ⌊x·n⌋ false positives, so at 0.1 % a table of fewer than 1,000 non-members allows none. Local-only models: the first {MAX_LOCAL_MODELS} institutions, each on its own training vs hold-out rows."),
    ]
}

/// What a sum over ≥ t institutions of `purpose` reveals to the coordinator.
pub fn reveals(purpose: Purpose, noised: bool) -> String {
    match purpose {
        Purpose::Stats => "Federation-wide row and label counts, per-feature magnitude histograms and the sums of x and x² (global means, deviations, missing rates): aggregate statistics, no row.",
        Purpose::Bins => "Per-feature statistics and fine histograms of feature values summed over the institutions (the quantile cut points): how many customers fall in each narrow value range, federation-wide.",
        Purpose::WoeCounts => "Good and bad counts per bin summed over the institutions (WOE and IV): a federation-wide two-way table of bin × outcome.",
        Purpose::TreeLevel if noised => "Gradient and hessian sums per tree node and bin over a Poisson sample of each institution's rows (each row's gradient clipped), plus discrete Gaussian noise: enough to choose splits, with each customer's part hidden by the noise the accountant charges ε for.",
        Purpose::TreeLevel => "Gradient and hessian sums per tree node and bin, summed over the institutions: enough to choose splits, and for small nodes close to the labels of the few customers in them.",
        Purpose::Train if noised => "The sum of the institutions' clipped model updates plus discrete Gaussian noise: the averaged update, with each institution's contribution hidden both by the sum and by the noise the accountant charges ε for.",
        Purpose::Train => "The sum of the institutions' row-weighted model updates, row counts and training losses: the averaged update, without noise (a model update can encode its training rows).",
        Purpose::Psi => "No sum: the sizes of both parties' id sets and of their intersection (from the sealed messages it relays and the parties' reports), never an id or a point it could test an id against.",
        Purpose::Vertical => "No sum: the number, size and SHA-256 of the sealed vertical-model messages it relayed per iteration or tree, and the parties' row counts and hold-out AUC.",
        Purpose::Eval => "Score histograms per class summed over the institutions' hold-out rows and the summed log-loss: federation-wide AUC, KS and lift.",
    }
    .into()
}

/// Per job and purpose (in order of first appearance): the sums the coordinator unmasked.
/// A round whose secure aggregation completed counts as unmasked even when its sum was
/// then refused (implausible, undecodable): the coordinator saw it all the same.
pub fn coordinator_view(rounds: &[RoundSummary]) -> Vec<CoordinatorView> {
    let mut keys: Vec<(&str, Purpose)> = Vec::new();
    for r in rounds {
        if !keys.contains(&(r.job_id.as_str(), r.purpose)) {
            keys.push((&r.job_id, r.purpose));
        }
    }
    keys.into_iter()
        .map(|(job, purpose)| {
            let of: Vec<&RoundSummary> = rounds
                .iter()
                .filter(|r| r.job_id == job && r.purpose == purpose)
                .collect();
            let unmasked: Vec<&&RoundSummary> = of
                .iter()
                .filter(|r| {
                    !matches!(
                        r.result,
                        RoundOutcome::Absent { .. }
                            | RoundOutcome::SecAgg { .. }
                            | RoundOutcome::Cancelled { .. }
                    )
                })
                .collect();
            let sizes: BTreeSet<usize> = unmasked.iter().map(|r| r.survivors.len()).collect();
            let noised = unmasked.iter().filter(|r| r.epsilon.is_some()).count();
            CoordinatorView {
                job: job.to_string(),
                purpose,
                sums: unmasked.len(),
                failed: of.len() - unmasked.len(),
                min_institutions: sizes.first().copied().unwrap_or(0),
                max_institutions: sizes.last().copied().unwrap_or(0),
                threshold: of.iter().map(|r| r.threshold).min().unwrap_or(0),
                noised,
                reveals: reveals(purpose, noised > 0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
