//! Points from a logistic regression on the WOE columns: the score scaling, the points per
//! bin, scoring rows and the printable table.

use std::fmt::Write as _;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use super::{ScorecardError, WoeTable};
use crate::binning::{invalid, BinningError};

/// Score scaling: `base_score` points at good:bad odds `base_odds`, `pdo` points to double the
/// odds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScorecardScaling {
    pub base_score: f64,
    pub base_odds: f64,
    pub pdo: f64,
}

impl Default for ScorecardScaling {
    fn default() -> Self {
        ScorecardScaling {
            base_score: 600.0,
            base_odds: 50.0,
            pdo: 20.0,
        }
    }
}

impl ScorecardScaling {
    /// `base_odds` and `pdo` finite and > 0, `base_score` finite.
    pub fn validate(&self) -> Result<(), ScorecardError> {
        for (name, v) in [("base_odds", self.base_odds), ("pdo", self.pdo)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(name, v, "must be finite and > 0"));
            }
        }
        if !self.base_score.is_finite() {
            return Err(invalid("base_score", self.base_score, "must be finite"));
        }
        Ok(())
    }

    /// `pdo / ln 2`.
    pub fn factor(&self) -> f64 {
        self.pdo / std::f64::consts::LN_2
    }

    /// `base_score − factor·ln(base_odds)`.
    pub fn offset(&self) -> f64 {
        self.base_score - self.factor() * self.base_odds.ln()
    }
}

/// One printed row of a scorecard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScorecardRow {
    pub feature: String,
    pub bin: String,
    pub woe: f64,
    pub points: f64,
}

/// Points per (selected feature, bin).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scorecard {
    pub woe: WoeTable,
    /// Logistic coefficients (one per selected feature) and intercept; the model predicts BAD.
    pub coef: Vec<f64>,
    pub intercept: f64,
    pub scaling: ScorecardScaling,
    /// Per selected feature (in [`WoeTable::selected`] order), per bin (missing last).
    pub points: Vec<Vec<f64>>,
}

impl Scorecard {
    /// Points from a logistic regression of BAD on the [`woe_transform`](super::woe_transform)
    /// columns (see the module docs for the formula and the sign convention).
    pub fn from_logistic(
        woe: WoeTable,
        coef: &[f64],
        intercept: f64,
        scaling: ScorecardScaling,
    ) -> Result<Self, ScorecardError> {
        let sel = woe.selected();
        if coef.len() != sel.len() {
            return Err(BinningError::ShapeMismatch {
                what: "coefficients (one per selected feature)",
                expected: sel.len(),
                got: coef.len(),
            }
            .into());
        }
        if coef.iter().any(|c| !c.is_finite()) || !intercept.is_finite() {
            return Err(BinningError::NonFinite {
                what: "coefficients",
            }
            .into());
        }
        scaling.validate()?;
        let (factor, offset) = (scaling.factor(), scaling.offset());
        let m = sel.len().max(1) as f64;
        let points = sel
            .iter()
            .zip(coef)
            .map(|(&j, &c)| {
                woe.features[j]
                    .woe
                    .iter()
                    .map(|&w| -(c * w + intercept / m) * factor + offset / m)
                    .collect()
            })
            .collect();
        Ok(Scorecard {
            woe,
            coef: coef.to_vec(),
            intercept,
            scaling,
            points,
        })
    }

    /// Checks a scorecard that may come from outside (a model file, an instruction): a valid
    /// WOE table, one finite coefficient and one row of finite points per bin for each
    /// selected feature, a finite intercept and a valid scaling.
    pub fn validate(&self) -> Result<(), ScorecardError> {
        self.woe.validate()?;
        let sel = self.woe.selected();
        for (what, len) in [
            ("coefficients (one per selected feature)", self.coef.len()),
            ("points (one row per selected feature)", self.points.len()),
        ] {
            if len != sel.len() {
                return Err(BinningError::ShapeMismatch {
                    what,
                    expected: sel.len(),
                    got: len,
                }
                .into());
            }
        }
        if self.coef.iter().any(|c| !c.is_finite()) || !self.intercept.is_finite() {
            return Err(BinningError::NonFinite {
                what: "coefficients",
            }
            .into());
        }
        self.scaling.validate()?;
        for (&j, pts) in sel.iter().zip(&self.points) {
            if pts.len() != self.woe.bins.slots(j) {
                return Err(BinningError::ShapeMismatch {
                    what: "points (one per bin)",
                    expected: self.woe.bins.slots(j),
                    got: pts.len(),
                }
                .into());
            }
            if pts.iter().any(|p| !p.is_finite()) {
                return Err(BinningError::NonFinite { what: "points" }.into());
            }
        }
        Ok(())
    }

    /// Points of a row whose features are all neutral (every WOE 0); with no selected features
    /// this is the score of every row.
    fn constant_points(&self) -> f64 {
        if self.points.is_empty() {
            -self.intercept * self.scaling.factor() + self.scaling.offset()
        } else {
            0.0
        }
    }

    /// Total points per row of `x` (all original feature columns); higher = better credit.
    pub fn score_points(&self, x: ArrayView2<f32>) -> Result<Vec<f64>, ScorecardError> {
        self.validate()?;
        self.woe.bins.check_x(x)?;
        let sel = self.woe.selected();
        let base = self.constant_points();
        Ok(x.rows()
            .into_iter()
            .map(|row| {
                base + sel
                    .iter()
                    .zip(&self.points)
                    .map(|(&c, pts)| pts[self.woe.bins.bin_of(c, row)])
                    .sum::<f64>()
            })
            .collect())
    }

    /// The model's probability of BAD at a given score (inverse of the scaling).
    pub fn probability_of_bad(&self, score: f64) -> f64 {
        let logit = (self.scaling.offset() - score) / self.scaling.factor();
        1.0 / (1.0 + (-logit).exp())
    }

    /// One row per (selected feature, bin), in feature then bin order.
    pub fn rows(&self) -> Vec<ScorecardRow> {
        let mut out = Vec::new();
        for (&j, pts) in self.woe.selected().iter().zip(&self.points) {
            for (b, &p) in pts.iter().enumerate() {
                out.push(ScorecardRow {
                    feature: self.woe.features[j].name.clone(),
                    bin: self.woe.bins.label(j, b),
                    woe: self.woe.features[j].woe[b],
                    points: p,
                });
            }
        }
        out
    }

    /// A printable table: scaling, IV per feature (dropped ones marked), and the points.
    pub fn to_table(&self) -> String {
        let s = &self.scaling;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "Scorecard: {} points at odds {}:1 (good:bad), {} points to double the odds",
            s.base_score, s.base_odds, s.pdo
        );
        let _ = writeln!(
            t,
            "Information value (features with IV < {} dropped):",
            self.woe.min_iv
        );
        for f in &self.woe.features {
            let _ = writeln!(
                t,
                "  {:<24} {:>8.4}{}",
                f.name,
                f.iv,
                if f.selected { "" } else { "  (dropped)" }
            );
        }
        let rows = self.rows();
        let wf = rows
            .iter()
            .map(|r| r.feature.len())
            .max()
            .unwrap_or(7)
            .max(7);
        let wb = rows.iter().map(|r| r.bin.len()).max().unwrap_or(3).max(3);
        let _ = writeln!(
            t,
            "{:<wf$}  {:<wb$}  {:>8}  {:>8}",
            "feature", "bin", "WOE", "points"
        );
        for r in &rows {
            let _ = writeln!(
                t,
                "{:<wf$}  {:<wb$}  {:>8.4}  {:>8.1}",
                r.feature, r.bin, r.woe, r.points
            );
        }
        if self.points.is_empty() {
            let _ = writeln!(
                t,
                "(no feature selected: every row scores {:.1})",
                self.constant_points()
            );
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::one_feature_bins;
    use super::super::woe_iv;
    use super::*;
    use crate::binning::BinningError;
    use ndarray::array;

    #[test]
    fn points_follow_the_formula_and_woe_direction() {
        let bins = one_feature_bins();
        let t = woe_iv(&[10.0, 20.0, 40.0, 20.0, 50.0, 10.0, 0.0, 0.0], &bins).unwrap();
        let sc = Scorecard::from_logistic(t.clone(), &[-1.0], -0.7, ScorecardScaling::default())
            .unwrap();
        let (factor, offset) = (20.0 / 2f64.ln(), 600.0 - 20.0 / 2f64.ln() * 50f64.ln());
        for (b, &p) in sc.points[0].iter().enumerate() {
            let w = t.features[0].woe[b];
            // coef = −1, intercept = −0.7, m = 1
            let coef = -1.0;
            assert!((p - (-(coef * w - 0.7) * factor + offset)).abs() < 1e-9);
        }
        // monotone: more WOE (more goods) → more points
        let mut pairs: Vec<(f64, f64)> = t.features[0]
            .woe
            .iter()
            .copied()
            .zip(sc.points[0].iter().copied())
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(pairs.windows(2).all(|w| w[1].1 >= w[0].1));
        // the score inverts to the model's probability
        let x = array![[30.0f32], [f32::NAN]];
        let s = sc.score_points(x.view()).unwrap();
        let logit = -0.7 - t.features[0].woe[1];
        assert!((sc.probability_of_bad(s[0]) - 1.0 / (1.0 + (-logit).exp())).abs() < 1e-12);
        // odds 50:1 ⇔ 600 points
        assert!((sc.probability_of_bad(600.0) - 1.0 / 51.0).abs() < 1e-12);
        assert!(sc.to_table().contains("[25.0, 40.0)"));
        assert!(matches!(
            Scorecard::from_logistic(t, &[1.0, 2.0], 0.0, ScorecardScaling::default()),
            Err(ScorecardError::Binning(BinningError::ShapeMismatch { .. }))
        ));
    }
}
