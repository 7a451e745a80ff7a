//! Good/bad counts per bin (participant half), weight of evidence and information value from
//! their sum (server half), and the WOE transform of the rows.

use ndarray::{Array2, ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use super::{ScorecardBins, ScorecardError, MIN_IV, SMOOTHING};
use crate::binning::{check_labels, check_sum, BinningError};

/// Participant half of step 3: per feature and bin, `[good, bad]` row counts (label 0 = good,
/// 1 = bad); layout `[feature][bin (missing last)][good, bad]`, length
/// [`ScorecardBins::counts_len`].
pub fn scorecard_counts(
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    bins: &ScorecardBins,
) -> Result<Vec<f64>, ScorecardError> {
    bins.check_x(x)?;
    check_labels(y, x.nrows())?;
    let offsets = bins.offsets();
    let mut out = vec![0.0; bins.counts_len()];
    for (row, &yv) in x.rows().into_iter().zip(y) {
        let bad = usize::from(yv == 1.0);
        for (c, &o) in offsets.iter().enumerate() {
            out[o + 2 * bins.bin_of(c, row) + bad] += 1.0;
        }
    }
    Ok(out)
}

/// WOE and IV of one feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureWoe {
    pub name: String,
    /// Per bin (missing last): summed good and bad counts.
    pub good: Vec<f64>,
    pub bad: Vec<f64>,
    /// Per bin: weight of evidence, `ln(%good/%bad)` (0 for an empty bin).
    pub woe: Vec<f64>,
    /// Information value.
    pub iv: f64,
    /// Kept by the IV rule.
    pub selected: bool,
}

/// WOE tables of all features, with the bins they refer to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WoeTable {
    pub bins: ScorecardBins,
    pub features: Vec<FeatureWoe>,
    /// IV threshold the selection used.
    pub min_iv: f64,
}

impl WoeTable {
    /// Indices of the selected features, in column order (the columns of [`woe_transform`]).
    pub fn selected(&self) -> Vec<usize> {
        (0..self.features.len())
            .filter(|&j| self.features[j].selected)
            .collect()
    }

    /// The same table with the selection redone at another IV threshold.
    pub fn with_min_iv(mut self, min_iv: f64) -> Self {
        for f in &mut self.features {
            f.selected = f.iv >= min_iv;
        }
        self.min_iv = min_iv;
        self
    }

    /// Checks a table that may come from outside: valid bins (see
    /// [`ScorecardBins::validate`]), one entry per characteristic, one good count, bad count
    /// and finite WOE per bin of it, and a finite IV.
    pub fn validate(&self) -> Result<(), ScorecardError> {
        self.bins.validate()?;
        if self.features.len() != self.bins.n_features() {
            return Err(BinningError::ShapeMismatch {
                what: "WOE features (one per characteristic)",
                expected: self.bins.n_features(),
                got: self.features.len(),
            }
            .into());
        }
        for (j, f) in self.features.iter().enumerate() {
            let slots = self.bins.slots(j);
            for (what, len) in [
                ("WOE values (one per bin)", f.woe.len()),
                ("good counts (one per bin)", f.good.len()),
                ("bad counts (one per bin)", f.bad.len()),
            ] {
                if len != slots {
                    return Err(BinningError::ShapeMismatch {
                        what,
                        expected: slots,
                        got: len,
                    }
                    .into());
                }
            }
            if !f.iv.is_finite() || f.woe.iter().any(|v| !v.is_finite()) {
                return Err(BinningError::NonFinite { what: "WOE table" }.into());
            }
        }
        if !self.min_iv.is_finite() {
            return Err(BinningError::NonFinite { what: "min_iv" }.into());
        }
        Ok(())
    }

    /// WOE of characteristic `c` for one row of the input columns.
    #[inline]
    pub fn woe(&self, c: usize, row: ArrayView1<f32>) -> f64 {
        self.features[c].woe[self.bins.bin_of(c, row)]
    }
}

/// Server half of step 3: WOE and IV per feature from the SUM of the participants'
/// [`scorecard_counts`], with the IV rule at [`MIN_IV`]. Negative counts (possible with DP
/// noise) are treated as 0.
pub fn woe_iv(sum: &[f64], bins: &ScorecardBins) -> Result<WoeTable, ScorecardError> {
    let expected = bins.counts_len();
    check_sum(sum, "scorecard_counts", expected, "counts")?;
    let offsets = bins.offsets();
    let mut features = Vec::with_capacity(bins.n_features());
    for j in 0..bins.n_features() {
        let s = &sum[offsets[j]..offsets[j] + 2 * bins.slots(j)];
        let good: Vec<f64> = s.iter().step_by(2).map(|v| v.max(0.0)).collect();
        let bad: Vec<f64> = s.iter().skip(1).step_by(2).map(|v| v.max(0.0)).collect();
        let (g, b): (f64, f64) = (good.iter().sum(), bad.iter().sum());
        if g <= 0.0 || b <= 0.0 {
            return Err(ScorecardError::OneClass { goods: g, bads: b });
        }
        let occupied: Vec<bool> = good.iter().zip(&bad).map(|(a, c)| a + c > 0.0).collect();
        let k = occupied.iter().filter(|&&o| o).count() as f64;
        let (gd, bd) = (g + SMOOTHING * k, b + SMOOTHING * k);
        let mut woe = vec![0.0; good.len()];
        let mut iv = 0.0;
        for i in 0..good.len() {
            if occupied[i] {
                let pg = (good[i] + SMOOTHING) / gd;
                let pb = (bad[i] + SMOOTHING) / bd;
                woe[i] = (pg / pb).ln();
                iv += (pg - pb) * woe[i];
            }
        }
        features.push(FeatureWoe {
            name: bins.name(j).to_string(),
            good,
            bad,
            woe,
            iv,
            selected: iv >= MIN_IV,
        });
    }
    Ok(WoeTable {
        bins: bins.clone(),
        features,
        min_iv: MIN_IV,
    })
}

/// Step 4 (participant side): the WOE columns of the selected features, rows × selected.
pub fn woe_transform(x: ArrayView2<f32>, table: &WoeTable) -> Result<Array2<f32>, ScorecardError> {
    table.validate()?;
    table.bins.check_x(x)?;
    let sel = table.selected();
    let mut out = Array2::<f32>::zeros((x.nrows(), sel.len()));
    for (mut o, row) in out.rows_mut().into_iter().zip(x.rows()) {
        for (k, &c) in sel.iter().enumerate() {
            o[k] = table.woe(c, row) as f32;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::one_feature_bins;
    use super::*;
    use ndarray::array;

    #[test]
    fn woe_iv_hand_computed() {
        // age bins (-inf,25), [25,40), [40,inf), missing; goods/bads:
        //   (-inf,25): 10 good 20 bad; [25,40): 40 good 20 bad; [40,inf): 50 good 10 bad;
        //   missing: none → WOE 0, not counted. G = 100, B = 50, k = 3 occupied bins.
        // %good = (g + ½)/101.5, %bad = (b + ½)/51.5:
        //   bin0: 10.5/101.5 = 0.103448, 20.5/51.5 = 0.398058 → WOE = ln(0.259880) = −1.347527
        //   bin1: 40.5/101.5 = 0.399015, 20.5/51.5 = 0.398058 → WOE = ln(1.002403) = 0.002400
        //   bin2: 50.5/101.5 = 0.497537, 10.5/51.5 = 0.203883 → WOE = ln(2.440301) = 0.892121
        //   IV = (0.103448−0.398058)(−1.347537) + (0.000957)(0.002400) + (0.293654)(0.892121)
        //      = 0.396995 + 0.000002 + 0.261975 = 0.658972
        let bins = one_feature_bins();
        let sum = [10.0, 20.0, 40.0, 20.0, 50.0, 10.0, 0.0, 0.0];
        let t = woe_iv(&sum, &bins).unwrap();
        let f = &t.features[0];
        let expect = [-1.347527, 0.002400, 0.892121, 0.0];
        for (w, e) in f.woe.iter().zip(expect) {
            assert!((w - e).abs() < 1e-5, "{:?}", f.woe);
        }
        assert!((f.iv - 0.658972).abs() < 1e-5, "{}", f.iv);
        assert!(f.selected);
        // a feature with no signal is dropped by the IV rule
        let flat = [30.0, 15.0, 40.0, 20.0, 30.0, 15.0, 0.0, 0.0];
        let t2 = woe_iv(&flat, &bins).unwrap();
        assert!(t2.features[0].iv < MIN_IV && !t2.features[0].selected);
        assert!(t2.selected().is_empty());
        // labels and transform
        assert_eq!(bins.label(0, 0), "(-inf, 25.0)");
        assert_eq!(bins.label(0, 1), "[25.0, 40.0)");
        assert_eq!(bins.label(0, 2), "[40.0, inf)");
        assert_eq!(bins.label(0, 3), "missing");
        let x = array![[20.0f32], [25.0], [99.0], [f32::NAN]];
        let w = woe_transform(x.view(), &t).unwrap();
        assert_eq!(
            w.column(0).to_vec(),
            vec![f.woe[0] as f32, f.woe[1] as f32, f.woe[2] as f32, 0.0]
        );
        // bad inputs
        assert!(matches!(
            woe_iv(&sum[..7], &bins),
            Err(ScorecardError::Binning(BinningError::SumLength {
                expected: 8,
                got: 7,
                ..
            }))
        ));
        assert!(matches!(
            woe_iv(&[10.0, 0.0, 40.0, 0.0, 50.0, 0.0, 0.0, 0.0], &bins),
            Err(ScorecardError::OneClass { .. })
        ));
        assert!(matches!(
            scorecard_counts(x.view(), array![0.0f32, 1.0, 2.0, 0.0].view(), &bins),
            Err(ScorecardError::Binning(BinningError::BadLabel {
                row: 2,
                ..
            }))
        ));
        assert!(ScorecardBins::from_cuts(vec!["a".into()], vec![vec![2.0, 1.0]]).is_err());
    }
}
