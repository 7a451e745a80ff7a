//! The centralised reference: the pooled objective minimised by damped Newton (IRLS), with a
//! Cholesky solve that detects a singular Hessian.

use rayon::prelude::*;

use super::{class_weight, dot_f64, logistic, row_major, LinearError, LinearParams, PAR_ROWS};
use ndarray::{ArrayView1, ArrayView2};

/// Maximum Newton iterations of [`fit_pooled`].
const NEWTON_MAX_ITER: usize = 100;
/// Newton stops when every step component is below `NEWTON_TOL·(1 + max|w|)`.
const NEWTON_TOL: f64 = 1e-8;

/// Centralised reference on pooled data with the same objective as the federated training:
/// minimises `Σ_i c_i·ℓ_i + (l2·n/2)·‖coef‖²` by damped Newton (IRLS) until every step
/// component is below `1e-8·(1 + max|w|)`. Costs `O(n·d²)` per iteration, so it is meant for
/// `d` up to a few hundred.
///
/// Errors on inconsistent shapes, no rows, non-finite data, labels outside `[0, 1]`,
/// `l2 < 0`, `pos_weight ≤ 0`, and when the optimum is not reached in 100 iterations
/// (separable classes with `l2 = 0` have no finite optimum).
pub fn fit_pooled(
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    l2: f64,
    pos_weight: f64,
) -> Result<LinearParams, LinearError> {
    let n = x.nrows();
    let d = x.ncols();
    LinearParams::zeros(d).check_data(x, y)?;
    if n == 0 {
        return Err(LinearError::NoRows);
    }
    if !(l2.is_finite() && l2 >= 0.0) {
        return Err(LinearError::InvalidParameter {
            name: "l2",
            value: l2,
            reason: "must be finite and ≥ 0",
        });
    }
    if !(pos_weight.is_finite() && pos_weight > 0.0) {
        return Err(LinearError::InvalidParameter {
            name: "pos_weight",
            value: pos_weight,
            reason: "must be finite and > 0",
        });
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(LinearError::NonFinite { what: "x" });
    }
    if y.iter().any(|&v| !(0.0..=1.0).contains(&v)) {
        return Err(LinearError::NonFinite {
            what: "y (labels must lie in [0, 1])",
        });
    }
    let data = row_major(x);
    let ys: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
    let ridge = l2 * n as f64;
    let m = d + 1;

    let objective = |w: &[f64]| -> f64 {
        let loss: f64 = ys
            .par_chunks(PAR_ROWS)
            .enumerate()
            .map(|(b, yb)| {
                let rows = &data[b * PAR_ROWS * d..(b * PAR_ROWS + yb.len()) * d];
                yb.iter()
                    .enumerate()
                    .map(|(i, &yi)| {
                        let z = dot_f64(&w[..d], &rows[i * d..(i + 1) * d]) + w[d];
                        class_weight(yi, pos_weight) * logistic(z, yi).loss
                    })
                    .sum::<f64>()
            })
            .collect::<Vec<f64>>()
            .iter()
            .sum();
        loss + 0.5 * ridge * w[..d].iter().map(|v| v * v).sum::<f64>()
    };

    let mut w = vec![0.0; m];
    let mut f = objective(&w);
    let mut grad_norm = f64::INFINITY;
    for _ in 0..NEWTON_MAX_ITER {
        let (g, h) = grad_hessian(&w, &data, &ys, pos_weight, ridge);
        grad_norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let Some((step, regularised)) = solve_spd(h, &g, m) else {
            return Err(LinearError::SingularHessian);
        };
        // Backtracking (Armijo) on the objective; Newton's full step is almost always taken.
        let slope: f64 = -g.iter().zip(&step).map(|(a, b)| a * b).sum::<f64>();
        let mut t = 1.0;
        let mut trial: Vec<f64>;
        let mut f_new;
        loop {
            trial = w.iter().zip(&step).map(|(a, s)| a - t * s).collect();
            f_new = objective(&trial);
            // Near the optimum the decrease is below the rounding noise of the objective
            // (a sum over n rows); Newton's full step is safe there and is taken.
            if f_new <= f + 1e-4 * t * slope + 1e-12 * f.abs() || t < 1e-10 {
                break;
            }
            t *= 0.5;
        }
        let scale = 1.0 + w.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        // Judged on the full Newton step: a failed line search is not convergence.
        let max_step = step.iter().fold(0.0f64, |a, s| a.max(s.abs()));
        w = trial;
        f = f_new;
        if max_step <= NEWTON_TOL * scale {
            if regularised {
                return Err(LinearError::SingularHessian);
            }
            let intercept = w[d];
            w.truncate(d);
            return Ok(LinearParams { coef: w, intercept });
        }
    }
    Err(LinearError::NotConverged {
        iterations: NEWTON_MAX_ITER,
        grad_norm,
    })
}

/// Gradient and Hessian (dense, `m × m` row-major, `m = d + 1`) of the pooled objective.
fn grad_hessian(
    w: &[f64],
    data: &[f32],
    ys: &[f64],
    pos_weight: f64,
    ridge: f64,
) -> (Vec<f64>, Vec<f64>) {
    let m = w.len();
    let d = m - 1;
    let parts: Vec<(Vec<f64>, Vec<f64>)> = ys
        .par_chunks(PAR_ROWS)
        .enumerate()
        .map(|(b, yb)| {
            let rows = &data[b * PAR_ROWS * d..(b * PAR_ROWS + yb.len()) * d];
            let mut g = vec![0.0; m];
            let mut h = vec![0.0; m * m];
            let mut xt = vec![0.0; m];
            xt[d] = 1.0;
            for (i, &yi) in yb.iter().enumerate() {
                let row = &rows[i * d..(i + 1) * d];
                for (a, &v) in xt[..d].iter_mut().zip(row) {
                    *a = f64::from(v);
                }
                let z = dot_f64(&w[..d], row) + w[d];
                let t = logistic(z, yi);
                let c = class_weight(yi, pos_weight);
                let r = c * t.residual;
                let s = c * t.curvature;
                for j in 0..m {
                    g[j] += r * xt[j];
                    let sj = s * xt[j];
                    // Upper triangle only; mirrored below.
                    for (hk, &xk) in h[j * m + j..(j + 1) * m].iter_mut().zip(&xt[j..]) {
                        *hk += sj * xk;
                    }
                }
            }
            (g, h)
        })
        .collect();
    let mut g = vec![0.0; m];
    let mut h = vec![0.0; m * m];
    for (pg, ph) in parts {
        for (a, b) in g.iter_mut().zip(&pg) {
            *a += b;
        }
        for (a, b) in h.iter_mut().zip(&ph) {
            *a += b;
        }
    }
    for j in 0..m {
        for k in 0..j {
            h[j * m + k] = h[k * m + j];
        }
    }
    for j in 0..d {
        g[j] += ridge * w[j];
        h[j * m + j] += ridge;
    }
    (g, h)
}

/// Solves `H·s = g` for symmetric positive (semi-)definite `H` by Cholesky, adding a growing
/// diagonal jitter when `H` is numerically singular; the flag says whether jitter was needed.
/// `None` if no jitter helps.
fn solve_spd(h: Vec<f64>, g: &[f64], m: usize) -> Option<(Vec<f64>, bool)> {
    let trace = (0..m)
        .map(|j| h[j * m + j])
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    let mut jitter = 0.0;
    for _ in 0..12 {
        let mut l = h.clone();
        for j in 0..m {
            l[j * m + j] += jitter;
        }
        if cholesky_in_place(&mut l, m) {
            // Forward then backward substitution with L and Lᵀ.
            let mut s = g.to_vec();
            for i in 0..m {
                let mut v = s[i];
                for k in 0..i {
                    v -= l[i * m + k] * s[k];
                }
                s[i] = v / l[i * m + i];
            }
            for i in (0..m).rev() {
                let mut v = s[i];
                for k in i + 1..m {
                    v -= l[k * m + i] * s[k];
                }
                s[i] = v / l[i * m + i];
            }
            if s.iter().all(|v| v.is_finite()) {
                return Some((s, jitter > 0.0));
            }
        }
        jitter = if jitter == 0.0 {
            1e-12 * trace / m as f64
        } else {
            jitter * 100.0
        };
    }
    None
}

/// Lower Cholesky factor in place (lower triangle of `a`); false if not positive definite.
fn cholesky_in_place(a: &mut [f64], m: usize) -> bool {
    for j in 0..m {
        let mut djj = a[j * m + j];
        for k in 0..j {
            djj -= a[j * m + k] * a[j * m + k];
        }
        if !(djj > 0.0 && djj.is_finite()) {
            return false;
        }
        let ljj = djj.sqrt();
        a[j * m + j] = ljj;
        for i in j + 1..m {
            let mut v = a[i * m + j];
            for k in 0..j {
                v -= a[i * m + k] * a[j * m + k];
            }
            a[i * m + j] = v / ljj;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::tests::synthetic;
    use super::super::{loss_grad_sum, predict_proba};
    use super::*;
    use crate::metrics::auc;
    use ndarray::{Array1, Array2};

    fn objective_sum(
        p: &LinearParams,
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        l2: f64,
        pw: f64,
    ) -> f64 {
        let (l, _) = loss_grad_sum(p, x, y, pw).unwrap();
        l + 0.5 * l2 * x.nrows() as f64 * p.coef.iter().map(|v| v * v).sum::<f64>()
    }

    fn pooled_grad_norm(
        p: &LinearParams,
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        l2: f64,
        pw: f64,
    ) -> f64 {
        let (_, mut g) = loss_grad_sum(p, x, y, pw).unwrap();
        let n = x.nrows() as f64;
        for (gj, c) in g.iter_mut().zip(&p.coef) {
            *gj += l2 * n * c;
        }
        g.iter().map(|v| v * v).sum::<f64>().sqrt()
    }

    #[test]
    fn fit_pooled_hand_checked_case() {
        // One binary feature; group x=0 has 1 positive of 4, group x=1 has 3 of 4. Without
        // penalty the MLE reproduces the group rates: b = logit(1/4) = −ln 3,
        // b + w = logit(3/4) = ln 3, so w = 2·ln 3.
        let x = Array2::from_shape_vec((8, 1), vec![0., 0., 0., 0., 1., 1., 1., 1.]).unwrap();
        let y = Array1::from(vec![1., 0., 0., 0., 1., 1., 1., 0.]);
        let p = fit_pooled(x.view(), y.view(), 0.0, 1.0).unwrap();
        let ln3 = 3f64.ln();
        assert!((p.intercept + ln3).abs() < 1e-9, "{p:?}");
        assert!((p.coef[0] - 2.0 * ln3).abs() < 1e-9, "{p:?}");
        // pos_weight 3 makes each group's weighted positive share 3·k/(3·k + (4 − k)):
        // x=0 → 1/2 (b = 0), x=1 → 9/10 (w = ln 9).
        let p = fit_pooled(x.view(), y.view(), 0.0, 3.0).unwrap();
        assert!(p.intercept.abs() < 1e-9, "{p:?}");
        assert!((p.coef[0] - 9f64.ln()).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn fit_pooled_reaches_the_optimum() {
        let (x, y) = synthetic(3000, &[1.5, -1.0, 0.5, 0.0, 2.0], -1.0, 2);
        for (l2, pw) in [(0.0, 1.0), (1e-2, 1.0), (1e-3, 5.0)] {
            let p = fit_pooled(x.view(), y.view(), l2, pw).unwrap();
            let gn = pooled_grad_norm(&p, x.view(), y.view(), l2, pw);
            assert!(gn < 1e-6, "l2={l2} pw={pw}: gradient norm {gn}");
            // Any perturbation increases the objective.
            let f = objective_sum(&p, x.view(), y.view(), l2, pw);
            let mut q = p.clone();
            q.coef[0] += 1e-3;
            assert!(objective_sum(&q, x.view(), y.view(), l2, pw) > f);
        }
    }

    #[test]
    fn fit_pooled_refuses_bad_input() {
        let x = Array2::<f32>::zeros((4, 2));
        let y = Array1::<f32>::zeros(3);
        assert!(matches!(
            fit_pooled(x.view(), y.view(), 0.1, 1.0),
            Err(LinearError::ShapeMismatch { .. })
        ));
        let x0 = Array2::<f32>::zeros((0, 2));
        let y0 = Array1::<f32>::zeros(0);
        assert_eq!(
            fit_pooled(x0.view(), y0.view(), 0.1, 1.0),
            Err(LinearError::NoRows)
        );
        let y = Array1::<f32>::zeros(4);
        assert!(matches!(
            fit_pooled(x.view(), y.view(), -1.0, 1.0),
            Err(LinearError::InvalidParameter { .. })
        ));
        assert!(matches!(
            fit_pooled(x.view(), y.view(), 0.1, 0.0),
            Err(LinearError::InvalidParameter { .. })
        ));
        // Perfectly separable without a penalty: no finite optimum.
        let xs = Array2::from_shape_vec((4, 1), vec![-2., -1., 1., 2.]).unwrap();
        let ys = Array1::from(vec![0., 0., 1., 1.]);
        let r = fit_pooled(xs.view(), ys.view(), 0.0, 1.0);
        assert!(
            matches!(
                r,
                Err(LinearError::NotConverged { .. } | LinearError::SingularHessian)
            ),
            "{r:?}"
        );
        // So is a constant column (collinear with the intercept).
        let xc = Array2::from_shape_vec((4, 2), vec![1., 0.5, 1., -1., 1., 2., 1., 0.]).unwrap();
        let yc = Array1::from(vec![0., 1., 1., 0.]);
        assert_eq!(
            fit_pooled(xc.view(), yc.view(), 0.0, 1.0),
            Err(LinearError::SingularHessian)
        );
        assert!(fit_pooled(xc.view(), yc.view(), 0.1, 1.0).is_ok());
        assert!(fit_pooled(xs.view(), ys.view(), 0.01, 1.0).is_ok());
    }

    /// The ISLR `Default` data set: 10,000 customers, label `default`, features
    /// `student` (Yes/No), `balance`, `income`.
    /// Returns the standardised features, the labels and the columns' standard deviations.
    fn read_default_csv() -> (Array2<f32>, Array1<f32>, Vec<f64>) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/default.csv");
        let text =
            std::fs::read_to_string(path).expect("data/default.csv is shipped with the repository");
        let mut lines = text.lines();
        assert_eq!(
            lines.next().map(str::trim),
            Some("default,student,balance,income")
        );
        let yes = |s: &str| match s.trim().trim_matches('"') {
            "Yes" => 1.0f32,
            "No" => 0.0,
            other => panic!("expected Yes/No, got {other:?}"),
        };
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 4, "{line}");
            ys.push(yes(f[0]));
            xs.push(yes(f[1]));
            xs.push(f[2].trim().parse::<f32>().unwrap());
            xs.push(f[3].trim().parse::<f32>().unwrap());
        }
        let mut x = Array2::from_shape_vec((ys.len(), 3), xs).unwrap();
        let mut sds = Vec::new();
        for mut col in x.columns_mut() {
            let mean = col.mapv(f64::from).mean().unwrap();
            let sd = col.mapv(f64::from).std(0.0);
            col.mapv_inplace(|v| ((f64::from(v) - mean) / sd) as f32);
            sds.push(sd);
        }
        (x, Array1::from(ys), sds)
    }

    #[test]
    fn default_data_pooled_auc() {
        let (x, y, sds) = read_default_csv();
        assert_eq!(x.nrows(), 10_000);
        assert_eq!(y.sum(), 333.0);
        let p = fit_pooled(x.view(), y.view(), 0.0, 1.0).unwrap();
        let a = auc(&predict_proba(&p, x.view()).unwrap(), y.as_slice().unwrap());
        assert!(a > 0.94, "in-sample AUC {a}");
        // Unpenalised, this is R's `glm(default ~ student + balance + income, binomial)`;
        // ISLR (2nd ed., Table 4.3) prints student −0.6468, balance 0.005737 and income
        // 0.003033 per $1000 on the original scales.
        let raw: Vec<f64> = p.coef.iter().zip(&sds).map(|(c, sd)| c / sd).collect();
        assert!((raw[0] + 0.6468).abs() < 5e-4, "{raw:?}");
        assert!((raw[1] - 0.005737).abs() < 5e-6, "{raw:?}");
        assert!((raw[2] * 1000.0 - 0.003033).abs() < 5e-6, "{raw:?}");
        assert!(pooled_grad_norm(&p, x.view(), y.view(), 0.0, 1.0) < 1e-6);
    }
}
