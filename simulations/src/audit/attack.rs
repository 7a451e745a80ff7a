//! The two membership-inference attacks on one model, over one set of audited rows.
//!
//! - **Loss threshold** (Yeom et al. 2018): score = −loss of the true label, i.e.
//!   `ln p(y | x)`; members of an over-fitted model have lower loss.
//! - **Offline LiRA** (Carlini et al. 2022, "Membership inference attacks from first
//!   principles", §VI offline variant): the attacker trains shadow models on halves of data
//!   from the same distribution. For each audited row it fits a Gaussian to the row's
//!   logit-scaled confidence `φ = ln(p_y / (1 − p_y))` under the shadow models that did not
//!   see it (per-row mean, one global variance: with a few shadows a per-row variance is
//!   too noisy, as the paper advises), and scores the target model's `φ` by the one-sided
//!   test statistic `z = (φ − μ_out) / σ_out` — larger = less plausible as a non-member.
//!   The likelihood ratio of the offline test is monotone in `z`, so the ROC is the same.

use fedsilo_ml::table::Table;
use fedsilo_task::{fit_pooled, JobSpec, TrainedModel};
use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::roc::Roc;

/// Probabilities are kept this far from 0 and 1 so every score is finite.
const P_CLAMP: f64 = 1e-15;

/// The probability `model` gives each row's true label `label`; `None` when the model
/// cannot score the table.
pub fn true_label_probability(model: &TrainedModel, t: &Table, label: usize) -> Option<Vec<f64>> {
    let p = model.predict(t).ok()?;
    let y = fedsilo_task::select_labels(t, &model.labels).ok()?;
    let (p, y) = (
        p.columns().into_iter().nth(label)?,
        y.columns().into_iter().nth(label)?,
    );
    Some(
        p.iter()
            .zip(y.iter())
            .map(|(&p, &y)| {
                let p = if y > 0.5 { p } else { 1.0 - p };
                if p.is_nan() {
                    p
                } else {
                    p.clamp(P_CLAMP, 1.0 - P_CLAMP)
                }
            })
            .collect(),
    )
}

/// −loss of the true label: `ln p_y`.
pub fn loss_score(p_true: f64) -> f64 {
    p_true.ln()
}

/// Logit-scaled confidence `ln(p_y / (1 − p_y))`.
pub fn logit_confidence(p_true: f64) -> f64 {
    p_true.ln() - (1.0 - p_true).ln()
}

/// An attack's figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figures {
    pub auc: f64,
    pub tpr_at_0_1pct: f64,
    pub tpr_at_1pct: f64,
}

impl Figures {
    pub const NONE: Figures = Figures {
        auc: f64::NAN,
        tpr_at_0_1pct: f64::NAN,
        tpr_at_1pct: f64::NAN,
    };

    pub fn of(members: &[f64], non_members: &[f64]) -> Self {
        let roc = Roc::of(members, non_members);
        Figures {
            auc: roc.auc(),
            tpr_at_0_1pct: roc.tpr_at(0.001),
            tpr_at_1pct: roc.tpr_at(0.01),
        }
    }
}

/// The loss-threshold attack's figures; `None` when the model cannot score the rows.
pub fn loss_attack(
    model: &TrainedModel,
    members: &Table,
    non_members: &Table,
    label: usize,
) -> Option<Figures> {
    let m = true_label_probability(model, members, label)?;
    let n = true_label_probability(model, non_members, label)?;
    let score = |v: Vec<f64>| v.into_iter().map(loss_score).collect::<Vec<_>>();
    Some(Figures::of(&score(m), &score(n)))
}

/// Shadow models trained in complementary pairs on halves of a population, and for each row
/// of the population which shadows saw it.
pub struct Shadows {
    /// `(model, rows of the population it was trained on, sorted)`.
    models: Vec<(TrainedModel, Vec<usize>)>,
}

impl Shadows {
    /// Trains `pairs` × 2 shadows of `spec` on `population` (rows `0..n`): each pair splits
    /// a random sample of at most `2 × half_cap` rows into two halves, so every row is "out"
    /// of at least one model of each pair. Shadows whose fit fails are left out.
    pub fn train(
        spec: &JobSpec,
        population: &Table,
        pairs: usize,
        half_cap: usize,
        rng: &mut impl rand::Rng,
    ) -> Self {
        let n = population.n_rows();
        let halves: Vec<Vec<usize>> = (0..pairs)
            .flat_map(|_| {
                let mut rows: Vec<usize> = (0..n).collect();
                rows.shuffle(rng);
                let half = (n / 2).min(half_cap);
                let mut a = rows.get(..half).map(<[usize]>::to_vec).unwrap_or_default();
                let mut b = rows
                    .get(half..2 * half)
                    .map(<[usize]>::to_vec)
                    .unwrap_or_default();
                a.sort_unstable();
                b.sort_unstable();
                [a, b]
            })
            .collect();
        let models = halves
            .into_par_iter()
            .filter_map(|rows| {
                let m = fit_pooled(spec, &population.select_rows(&rows)).ok()?;
                Some((m, rows))
            })
            .collect();
        Shadows { models }
    }

    /// How many shadows trained.
    pub fn trained(&self) -> usize {
        self.models.len()
    }

    /// Offline LiRA's figures for `target` on the population rows `members` and
    /// `non_members`; `None` when the target cannot score them or no shadow trained.
    pub fn lira(
        &self,
        target: &TrainedModel,
        population: &Table,
        members: &[usize],
        non_members: &[usize],
        label: usize,
    ) -> Option<Figures> {
        if self.models.is_empty() {
            return None;
        }
        let rows: Vec<usize> = members.iter().chain(non_members).copied().collect();
        let audited = population.select_rows(&rows);
        let target_phi: Vec<f64> = true_label_probability(target, &audited, label)?
            .into_iter()
            .map(logit_confidence)
            .collect();
        // Per shadow: φ of every audited row, and whether the shadow saw it.
        let per_shadow: Vec<(Vec<f64>, Vec<bool>)> = self
            .models
            .par_iter()
            .filter_map(|(m, seen)| {
                let phi = true_label_probability(m, &audited, label)?
                    .into_iter()
                    .map(logit_confidence)
                    .collect();
                let saw = rows.iter().map(|r| seen.binary_search(r).is_ok()).collect();
                Some((phi, saw))
            })
            .collect();
        let mut mean_out = Vec::with_capacity(rows.len());
        let (mut sq, mut dof) = (0.0f64, 0usize);
        for i in 0..rows.len() {
            let outs: Vec<f64> = per_shadow
                .iter()
                .filter(|(_, saw)| saw.get(i) == Some(&false))
                .filter_map(|(phi, _)| phi.get(i).copied())
                .filter(|v| v.is_finite())
                .collect();
            if outs.is_empty() {
                mean_out.push(f64::NAN);
                continue;
            }
            let mu = outs.iter().sum::<f64>() / outs.len() as f64;
            sq += outs.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>();
            dof += outs.len() - 1;
            mean_out.push(mu);
        }
        let sigma = if dof > 0 && sq > 0.0 {
            (sq / dof as f64).sqrt()
        } else {
            1.0
        };
        let z: Vec<f64> = target_phi
            .iter()
            .zip(&mean_out)
            .map(|(phi, mu)| (phi - mu) / sigma)
            .collect();
        let (zm, zn) = z.split_at(members.len().min(z.len()));
        Some(Figures::of(zm, zn))
    }
}
