//! The attack's ROC over members (positives) and non-members (negatives), exactly.
//!
//! A threshold τ calls every example scoring ≥ τ a member. The curve has one point per
//! distinct score (ties move together), plus (0, 0); the AUC is its trapezoid area, which
//! counts a tied member/non-member pair as one half (the Mann–Whitney statistic). TPR at a
//! false-positive rate x is read off the points with FPR ≤ x, never interpolated: with `n`
//! non-members, FPR ≤ x allows ⌊x·n⌋ false positives.

/// The ROC of one attack on one model.
#[derive(Clone, Debug, PartialEq)]
pub struct Roc {
    /// `(false positives, true positives)` after each distinct threshold, descending.
    points: Vec<(usize, usize)>,
    members: usize,
    non_members: usize,
}

/// A score as the ROC orders it: NaN (a model that could not score the row) is the least
/// member-like value.
fn key(s: f64) -> f64 {
    if s.is_nan() {
        f64::NEG_INFINITY
    } else {
        s
    }
}

impl Roc {
    /// The ROC of scores where higher means "more likely a member".
    pub fn of(members: &[f64], non_members: &[f64]) -> Self {
        let mut all: Vec<(f64, bool)> = members
            .iter()
            .map(|&s| (key(s), true))
            .chain(non_members.iter().map(|&s| (key(s), false)))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut points = vec![(0, 0)];
        let (mut fp, mut tp) = (0usize, 0usize);
        let mut i = 0;
        while let Some(&(s, _)) = all.get(i) {
            while let Some(&(t, member)) = all.get(i) {
                if t.total_cmp(&s).is_ne() {
                    break;
                }
                if member {
                    tp += 1;
                } else {
                    fp += 1;
                }
                i += 1;
            }
            points.push((fp, tp));
        }
        Roc {
            points,
            members: members.len(),
            non_members: non_members.len(),
        }
    }

    /// Area under the curve; `NaN` without members or without non-members.
    pub fn auc(&self) -> f64 {
        if self.members == 0 || self.non_members == 0 {
            return f64::NAN;
        }
        let twice: f64 = self
            .points
            .windows(2)
            .map(|w| match w {
                [(f0, t0), (f1, t1)] => ((f1 - f0) * (t0 + t1)) as f64,
                _ => 0.0,
            })
            .sum();
        twice / (2.0 * self.members as f64 * self.non_members as f64)
    }

    /// The largest true-positive rate among the thresholds whose false-positive rate is at
    /// most `fpr`; `NaN` without members or without non-members.
    pub fn tpr_at(&self, fpr: f64) -> f64 {
        if self.members == 0 || self.non_members == 0 {
            return f64::NAN;
        }
        let allowed = Self::false_positives_allowed(fpr, self.non_members);
        let tp = self
            .points
            .iter()
            .filter(|(fp, _)| *fp <= allowed)
            .map(|(_, tp)| *tp)
            .max()
            .unwrap_or(0);
        tp as f64 / self.members as f64
    }

    /// How many of `non_members` may be called members at a false-positive rate ≤ `fpr`.
    pub fn false_positives_allowed(fpr: f64, non_members: usize) -> usize {
        // The small epsilon keeps 0.01 × 300 = 3 from rounding down to 2.
        (fpr * non_members as f64 + 1e-9).floor().max(0.0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_attack_a_useless_one_and_ties() {
        let r = Roc::of(&[3.0, 4.0], &[1.0, 2.0]);
        assert_eq!(r.auc(), 1.0);
        assert_eq!(r.tpr_at(0.0), 1.0);
        let r = Roc::of(&[1.0, 2.0], &[3.0, 4.0]);
        assert_eq!(r.auc(), 0.0);
        assert_eq!(r.tpr_at(0.49), 0.0);
        // Every score equal: one point (1, 1), AUC one half, nothing below FPR 1.
        let r = Roc::of(&[5.0; 3], &[5.0; 4]);
        assert_eq!(r.auc(), 0.5);
        assert_eq!(r.tpr_at(0.99), 0.0);
        assert_eq!(r.tpr_at(1.0), 1.0);
        assert!(Roc::of(&[], &[1.0]).auc().is_nan());
        assert!(Roc::of(&[1.0], &[]).tpr_at(0.1).is_nan());
    }

    #[test]
    fn tpr_at_low_fpr_is_read_exactly_from_a_hand_made_list() {
        // Descending: m 10, m 9, n 8, m 7, m 7 / n 7 (tie), n 5, m 4, n 3 … n.
        let members = [10.0, 9.0, 7.0, 7.0, 4.0];
        let mut non_members = vec![8.0, 7.0, 5.0];
        non_members.extend(std::iter::repeat_n(0.0, 97)); // 100 non-members in all
        let r = Roc::of(&members, &non_members);
        // FPR ≤ 0.1 % and ≤ 0.5 % allow no false positive: only 10 and 9 are called.
        assert_eq!(r.tpr_at(0.001), 0.4);
        assert_eq!(r.tpr_at(0.005), 0.4);
        // ≤ 1 % allows one (the 8): still 2 members; the tie at 7 costs a second one.
        assert_eq!(r.tpr_at(0.01), 0.4);
        // ≤ 2 %: threshold 7 calls 4 members with 2 false positives.
        assert_eq!(r.tpr_at(0.02), 0.8);
        // ≤ 3 %: threshold 4 calls all 5 members with 3 false positives.
        assert_eq!(r.tpr_at(0.03), 1.0);
        assert_eq!(Roc::false_positives_allowed(0.001, 1165), 1);
        assert_eq!(Roc::false_positives_allowed(0.01, 300), 3);
        assert_eq!(Roc::false_positives_allowed(0.001, 999), 0);
        // AUC by counting pairs: members beat 97 zeros each, plus the pairs above them.
        // 10, 9: beat all 100; 7, 7: beat 98 and tie one (97.5 + 0.5 … = 98.5 each);
        // 4: beats 97.
        let expected = (100.0 + 100.0 + 98.5 + 98.5 + 97.0) / 500.0;
        assert!((r.auc() - expected).abs() < 1e-12, "{}", r.auc());
    }

    #[test]
    fn nan_scores_count_as_least_member_like() {
        let r = Roc::of(&[f64::NAN, 2.0], &[1.0, 0.0]);
        assert_eq!(r.auc(), 0.5);
    }
}
