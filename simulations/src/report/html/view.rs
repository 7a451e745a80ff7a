//! Every figure the page shows that the report does not hold itself (totals, averages,
//! per-round sums, chart points, the KS gap, the top-decile gain, which rounds lost whom),
//! derived once from the [`Report`] before anything is rendered. The sections only format
//! what is here and in the report; none of them computes a statistic.

use crate::report::audit::{AuditReport, CoordinatorView, ModelAudit};
use crate::report::{ModelReport, Report, RoundReport};

/// The report and what is derived from it, as the sections read it.
pub(super) struct View<'a> {
    pub r: &'a Report,
    /// Sums over the institutions; `None` for a federation of one (nothing to add up).
    pub institutions: Option<InstitutionTotals>,
    pub models: Vec<ModelView<'a>>,
    pub rounds: RoundsView<'a>,
    /// Whether the ε series is cumulative (`None` without differential privacy).
    pub dp_cumulative: Option<bool>,
    /// The membership-inference audit's derived figures (`None` when it was not run).
    pub audit: Option<AuditView<'a>>,
}

/// The attacks an audit row reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Attack {
    Loss,
    Lira,
}

impl Attack {
    pub fn name(self) -> &'static str {
        match self {
            Attack::Loss => "the loss-threshold attack",
            Attack::Lira => "LiRA",
        }
    }
}

/// One audited model's derived figures.
pub(super) struct AuditRowView<'a> {
    pub m: &'a ModelAudit,
    /// Two standard errors of an attack AUC that only guesses, on these many members and
    /// non-members (Hanley–McNeil under no signal: √((m + n + 1) / (12 m n))); `NaN` without
    /// rows.
    pub chance_band: f64,
    /// Non-members an attack may call members at FPR ≤ 0.1 % and ≤ 1 %.
    pub false_positives_allowed: (usize, usize),
    /// The better of the two attacks by AUC, and its AUC (`None` when neither has one).
    pub best: Option<(Attack, f64)>,
    /// Whether the better attack's AUC is above 0.5 + the chance band.
    pub above_chance: bool,
}

/// The audit section's derived figures.
pub(super) struct AuditView<'a> {
    pub a: &'a AuditReport,
    pub rows: Vec<AuditRowView<'a>>,
    /// The row whose better attack reached the highest AUC.
    pub strongest: Option<usize>,
    /// Rows whose better attack is above chance.
    pub above_chance: usize,
    /// Highest TPR at FPR ≤ 0.1 % over every row and attack (`NaN` without one).
    pub max_tpr_at_0_1pct: f64,
    /// The coordinator-view row with the fewest institutions in one unmasked sum.
    pub smallest_sum: Option<&'a CoordinatorView>,
}

impl<'a> AuditView<'a> {
    fn of(a: &'a AuditReport) -> Self {
        let rows: Vec<AuditRowView<'a>> = a
            .models
            .iter()
            .map(|m| {
                let (mm, nn) = (m.members as f64, m.non_members as f64);
                let chance_band = if m.members > 0 && m.non_members > 0 {
                    2.0 * ((mm + nn + 1.0) / (12.0 * mm * nn)).sqrt()
                } else {
                    f64::NAN
                };
                let best = [(Attack::Loss, m.loss_auc), (Attack::Lira, m.lira_auc)]
                    .into_iter()
                    .filter(|(_, auc)| auc.is_finite())
                    .max_by(|x, y| x.1.total_cmp(&y.1));
                AuditRowView {
                    m,
                    chance_band,
                    false_positives_allowed: (
                        allowed(0.001, m.non_members),
                        allowed(0.01, m.non_members),
                    ),
                    best,
                    above_chance: best
                        .is_some_and(|(_, auc)| chance_band.is_finite() && auc > 0.5 + chance_band),
                }
            })
            .collect();
        let strongest = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.best.map(|(_, auc)| (i, auc)))
            .max_by(|x, y| x.1.total_cmp(&y.1))
            .map(|(i, _)| i);
        let max_tpr = a
            .models
            .iter()
            .flat_map(|m| [m.loss_tpr_at_0_1pct, m.lira_tpr_at_0_1pct])
            .filter(|v| v.is_finite())
            .max_by(f64::total_cmp)
            .unwrap_or(f64::NAN);
        AuditView {
            a,
            above_chance: rows.iter().filter(|r| r.above_chance).count(),
            rows,
            strongest,
            max_tpr_at_0_1pct: max_tpr,
            smallest_sum: a
                .coordinator_view
                .iter()
                .filter(|c| c.sums > 0)
                .min_by_key(|c| c.min_institutions),
        }
    }
}

/// Non-members an attack may call members at a false-positive rate ≤ `fpr`, as the audit
/// reads its ROC.
fn allowed(fpr: f64, non_members: usize) -> usize {
    crate::audit::roc::Roc::false_positives_allowed(fpr, non_members)
}

/// The institutions table's footer.
pub(super) struct InstitutionTotals {
    pub rows_train: usize,
    pub rows_holdout: usize,
    /// Positive rate over all training rows (`NaN` without any).
    pub positive_rate: f64,
}

/// One model's derived figures.
pub(super) struct ModelView<'a> {
    pub m: &'a ModelReport,
    /// `(round, training loss)` of the rounds that have one.
    pub loss: Vec<(f64, f64)>,
    /// `(round, hold-out AUC)` of the rounds that were evaluated.
    pub auc: Vec<(f64, f64)>,
    /// First and last training round when they differ (both training charts span them).
    pub round_span: Option<(f64, f64)>,
    /// `(population share, positives share, negatives share)` where the KS curves are
    /// furthest apart.
    pub ks_gap: Option<(f64, f64, f64)>,
    /// Share of positives captured by the top-scoring 10 %.
    pub gain_at_decile: Option<f64>,
    /// Federated − pooled AUC, when both are known.
    pub auc_vs_pooled: Option<f64>,
    pub comparison: ComparisonView,
}

/// Whether the federated model beat an institution's local-only model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Gain,
    Shortfall,
    /// One of the two AUCs is missing.
    Unknown,
}

impl Verdict {
    fn of(delta: f64) -> Self {
        if !delta.is_finite() {
            Verdict::Unknown
        } else if delta > 0.0 {
            Verdict::Gain
        } else {
            Verdict::Shortfall
        }
    }

    /// The CSS class suffix of a cell with this verdict.
    pub fn class(self) -> &'static str {
        match self {
            Verdict::Gain => " gain",
            Verdict::Shortfall => " shortfall",
            Verdict::Unknown => "",
        }
    }
}

/// The per-institution comparison table's derived figures.
pub(super) struct ComparisonView {
    /// Per row of `ModelReport::comparison`: federated − local-only AUC and its verdict.
    pub rows: Vec<(f64, Verdict)>,
    pub wins: usize,
    pub comparable: usize,
    /// Unweighted means over the institutions with a finite value.
    pub mean_local: f64,
    pub mean_federated: f64,
    pub mean_pooled: f64,
    pub mean_delta: f64,
    /// Verdict of `mean_delta`.
    pub mean_verdict: Verdict,
}

/// Bytes of one direction of one round, over its participants.
pub(super) struct Traffic {
    /// Mean per participant (`NaN` without participants).
    pub mean: f64,
    pub max: u64,
    pub total: u64,
    /// Whether any participant was counted.
    pub any: bool,
}

impl Traffic {
    fn of(v: &[(String, u64)]) -> Self {
        if v.is_empty() {
            return Traffic {
                mean: f64::NAN,
                max: 0,
                total: 0,
                any: false,
            };
        }
        let total: u64 = v.iter().map(|(_, b)| *b).sum();
        let max = v.iter().map(|(_, b)| *b).max().unwrap_or(0);
        Traffic {
            mean: total as f64 / v.len() as f64,
            max,
            total,
            any: true,
        }
    }
}

/// One round's derived figures.
pub(super) struct RoundView<'a> {
    pub x: &'a RoundReport,
    /// Sum of the finite phase times.
    pub total_ms: f64,
    /// Per phase of the round's group ([`RoundGroup::phases`]): the time spent in it, `None`
    /// when the round never reached it.
    pub per_phase_ms: Vec<Option<f64>>,
    pub sent: Traffic,
    pub received: Traffic,
}

/// The rounds of one model, in order.
pub(super) struct RoundGroup<'a> {
    pub model: &'a str,
    pub rounds: Vec<RoundView<'a>>,
    /// Phase names of these rounds in order of first appearance.
    pub phases: Vec<String>,
}

/// The cost section's derived figures.
pub(super) struct RoundsView<'a> {
    /// Dropout events over all rounds.
    pub drops: usize,
    /// Rounds that did not complete.
    pub failed: usize,
    /// One group per model, in order of first appearance.
    pub groups: Vec<RoundGroup<'a>>,
    pub failed_without_drop: Vec<&'a RoundReport>,
}

impl<'a> View<'a> {
    pub fn of(r: &'a Report) -> Self {
        View {
            r,
            institutions: institution_totals(r),
            models: r.models.iter().map(ModelView::of).collect(),
            rounds: RoundsView::of(&r.rounds),
            dp_cumulative: r.privacy.dp.as_ref().map(|dp| {
                let finite: Vec<f64> = dp
                    .epsilon_per_round
                    .iter()
                    .copied()
                    .filter(|v| v.is_finite())
                    .collect();
                finite.len() >= 2
                    && finite.windows(2).all(|w| match w {
                        [a, b] => *b >= *a - 1e-12,
                        _ => true,
                    })
                    && (!dp.epsilon.is_finite()
                        || finite.last().is_some_and(|l| {
                            (l - dp.epsilon).abs() <= 0.01 * dp.epsilon.abs().max(1e-9)
                        }))
            }),
            audit: r.audit.as_ref().map(AuditView::of),
        }
    }
}

fn institution_totals(r: &Report) -> Option<InstitutionTotals> {
    let inst = &r.scenario.institutions;
    if inst.len() <= 1 {
        return None;
    }
    let train: usize = inst.iter().map(|i| i.rows_train).sum();
    let hold: usize = inst.iter().map(|i| i.rows_holdout).sum();
    let weighted = inst
        .iter()
        .filter(|i| i.positive_rate.is_finite())
        .map(|i| i.positive_rate * i.rows_train as f64)
        .sum::<f64>()
        / train as f64;
    Some(InstitutionTotals {
        rows_train: train,
        rows_holdout: hold,
        positive_rate: if train == 0 { f64::NAN } else { weighted },
    })
}

impl<'a> ModelView<'a> {
    fn of(m: &'a ModelReport) -> Self {
        let first = m.curve.iter().map(|c| c.round).min();
        let last = m.curve.iter().map(|c| c.round).max();
        ModelView {
            m,
            loss: m
                .curve
                .iter()
                .filter_map(|c| c.train_loss.map(|l| (c.round as f64, l)))
                .collect(),
            auc: m
                .curve
                .iter()
                .filter_map(|c| c.holdout_auc.map(|a| (c.round as f64, a)))
                .collect(),
            round_span: match (first, last) {
                (Some(a), Some(b)) if b > a => Some((a as f64, b as f64)),
                _ => None,
            },
            ks_gap: m
                .ks_curve
                .iter()
                .copied()
                .filter(|(p, a, b)| p.is_finite() && a.is_finite() && b.is_finite())
                .max_by(|x, y| (x.1 - x.2).abs().total_cmp(&(y.1 - y.2).abs())),
            gain_at_decile: interpolate(&m.gains, 0.1),
            auc_vs_pooled: m.pooled_metrics.as_ref().and_then(|p| {
                let f = &m.final_metrics;
                (f.auc.is_finite() && p.auc.is_finite()).then_some(f.auc - p.auc)
            }),
            comparison: ComparisonView::of(m),
        }
    }
}

impl ComparisonView {
    fn of(m: &ModelReport) -> Self {
        let rows: Vec<(f64, Verdict)> = m
            .comparison
            .iter()
            .map(|c| {
                let d = c.federated_auc - c.local_only_auc;
                (d, Verdict::of(d))
            })
            .collect();
        let wins = rows.iter().filter(|(_, v)| *v == Verdict::Gain).count();
        let comparable = rows.iter().filter(|(_, v)| *v != Verdict::Unknown).count();
        let mean_delta = mean_finite(
            m.comparison
                .iter()
                .map(|c| c.federated_auc - c.local_only_auc),
        );
        ComparisonView {
            rows,
            wins,
            comparable,
            mean_local: mean_finite(m.comparison.iter().map(|c| c.local_only_auc)),
            mean_federated: mean_finite(m.comparison.iter().map(|c| c.federated_auc)),
            mean_pooled: mean_finite(m.comparison.iter().map(|c| c.pooled_auc)),
            mean_delta,
            mean_verdict: Verdict::of(mean_delta),
        }
    }
}

impl<'a> RoundsView<'a> {
    fn of(rounds: &'a [RoundReport]) -> Self {
        let mut by_model: Vec<(&'a str, Vec<&'a RoundReport>)> = Vec::new();
        for round in rounds {
            match by_model.iter_mut().find(|(m, _)| *m == round.model) {
                Some((_, v)) => v.push(round),
                None => by_model.push((&round.model, vec![round])),
            }
        }
        let groups = by_model
            .into_iter()
            .map(|(model, rounds)| {
                let phases = phase_names(&rounds);
                let rounds = rounds
                    .into_iter()
                    .map(|x| RoundView {
                        x,
                        total_ms: x
                            .phase_ms
                            .iter()
                            .map(|(_, v)| *v)
                            .filter(|v| v.is_finite())
                            .sum(),
                        per_phase_ms: phases
                            .iter()
                            .map(|p| {
                                let v: Vec<f64> = x
                                    .phase_ms
                                    .iter()
                                    .filter(|(q, _)| q == p)
                                    .map(|(_, v)| *v)
                                    .collect();
                                (!v.is_empty()).then(|| v.iter().sum())
                            })
                            .collect(),
                        sent: Traffic::of(&x.bytes_sent),
                        received: Traffic::of(&x.bytes_received),
                    })
                    .collect();
                RoundGroup {
                    model,
                    rounds,
                    phases,
                }
            })
            .collect();
        RoundsView {
            drops: rounds.iter().map(|x| x.dropped.len()).sum(),
            failed: rounds.iter().filter(|x| !x.succeeded()).count(),
            groups,
            failed_without_drop: rounds
                .iter()
                .filter(|x| !x.succeeded() && x.dropped.is_empty())
                .collect(),
        }
    }
}

/// Phase names of these rounds in order of first appearance.
fn phase_names(rounds: &[&RoundReport]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for x in rounds {
        for (p, _) in &x.phase_ms {
            if !names.contains(p) {
                names.push(p.clone());
            }
        }
    }
    names
}

fn mean_finite(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values.filter(|v| v.is_finite()) {
        sum += v;
        n += 1;
    }
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// Linear interpolation of a curve at `x` (points sorted by x); None when out of range.
fn interpolate(points: &[(f64, f64)], x: f64) -> Option<f64> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .collect();
    pts.windows(2).find_map(|w| {
        let [(x0, y0), (x1, y1)] = *w else {
            return None;
        };
        if x0 <= x && x <= x1 {
            Some(if x1 > x0 {
                y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            } else {
                y1
            })
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation() {
        assert!((interpolate(&[(0.0, 0.0), (0.2, 0.4)], 0.1).unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(interpolate(&[], 0.1), None);
    }
}
