//! The streaming gradient pass this bench measures: [`GradAccumulator`], an f32 kernel over
//! blocks of rows (in memory or as little-endian bytes read in place) with f64 totals.
//!
//! It lived in `fedsilo_ml::linear` until no participant path used it: participants compute
//! their gradient sums with `fedsilo_ml::linear::loss_grad_sum` on the rows they hold in
//! memory, so only this bench streams a file. [`self_check`] runs the tests it had there
//! (agreement with `loss_grad_sum`, accuracy of the f32 `exp`/`log1p`) before every
//! measurement.

use fedsilo_ml::linear::{loss_grad_sum, sigmoid, LinearError, LinearParams};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Rows per f32 partial gradient before it is added into the f64 totals of
/// [`GradAccumulator`]; bounds the f32 rounding error to sums of this many terms.
const FLUSH_ROWS: usize = 64;

/// Rows processed together by [`GradAccumulator`]: their dot products first, then the
/// logistic terms of all of them in one branch-free f32 loop (which vectorises), then their
/// gradient updates.
const GROUP: usize = 8;

/// Streaming gradient pass for data that does not fit in memory: add blocks of rows one after
/// the other, then [`finish`](GradAccumulator::finish) with the same sums as
/// [`loss_grad_sum`](fedsilo_ml::linear::loss_grad_sum) over all rows.
///
/// The hot loop is f32 and works on groups of eight rows: one dot product per row (eight f32
/// lanes), then the logistic loss and residual of the eight rows together with vectorisable
/// polynomial `exp`/`log1p` (relative error ≈ 1e-7), then one pass over the columns adding
/// `Σ_r g_r·x_r` for the whole group, so the partial gradient is loaded and stored once per
/// group rather than once per row. The gradient is summed in f32 and flushed into f64 totals
/// every 64 rows; losses are summed in f64. Agreement with the f64 `loss_grad_sum` is about
/// 1e-6 relative. State is `O(d)`; nothing is allocated per row or per block (the f32 copy of
/// the coefficients is refreshed in place).
///
/// Three block layouts are accepted: [`add_block`](GradAccumulator::add_block) takes `d`
/// feature columns plus a separate label slice; [`add_labelled_block`](GradAccumulator::add_labelled_block)
/// takes `d + 1` columns per row with the label last; [`add_labelled_le_bytes`](GradAccumulator::add_labelled_le_bytes)
/// takes the same rows as little-endian bytes straight from a file buffer (the layout of
/// this bench's matrix file).
#[derive(Clone, Debug)]
pub struct GradAccumulator {
    d: usize,
    loss: f64,
    grad: Vec<f64>,
    rows: usize,
    coef32: Vec<f32>,
    partial: Vec<f32>,
}

impl GradAccumulator {
    /// An empty accumulator for `d` features.
    pub fn new(d: usize) -> Self {
        GradAccumulator {
            d,
            loss: 0.0,
            grad: vec![0.0; d + 1],
            rows: 0,
            coef32: vec![0.0; d],
            partial: vec![0.0; d],
        }
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Rows added so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Adds `y.len()` rows: `rows` is row-major with `d` columns, `y` the labels.
    pub fn add_block(
        &mut self,
        p: &LinearParams,
        rows: &[f32],
        y: &[f32],
        pos_weight: f64,
    ) -> Result<(), LinearError> {
        self.check_params(p)?;
        if rows.len() != y.len() * self.d {
            return Err(LinearError::ShapeMismatch {
                what: "block values (labels × features)",
                expected: y.len() * self.d,
                got: rows.len(),
            });
        }
        self.accumulate(p, rows, self.d, Some(y), pos_weight);
        Ok(())
    }

    /// Adds `rows.len() / (d + 1)` rows stored row-major with `d` features followed by the label.
    pub fn add_labelled_block(
        &mut self,
        p: &LinearParams,
        rows: &[f32],
        pos_weight: f64,
    ) -> Result<(), LinearError> {
        self.check_params(p)?;
        let stride = self.d + 1;
        if rows.len() % stride != 0 {
            return Err(LinearError::ShapeMismatch {
                what: "block values (a multiple of features + 1)",
                expected: rows.len() - rows.len() % stride,
                got: rows.len(),
            });
        }
        self.accumulate(p, rows, stride, None, pos_weight);
        Ok(())
    }

    /// [`add_labelled_block`](GradAccumulator::add_labelled_block) on the raw bytes of a
    /// file of little-endian f32 rows (`d` features then the label, `4·(d + 1)` bytes per
    /// row), read in place without a decode pass. `bytes` must hold whole rows.
    pub fn add_labelled_le_bytes(
        &mut self,
        p: &LinearParams,
        bytes: &[u8],
        pos_weight: f64,
    ) -> Result<(), LinearError> {
        self.check_params(p)?;
        let row_bytes = 4 * (self.d + 1);
        if bytes.len() % row_bytes != 0 {
            return Err(LinearError::ShapeMismatch {
                what: "block bytes (a multiple of 4 × (features + 1))",
                expected: bytes.len() - bytes.len() % row_bytes,
                got: bytes.len(),
            });
        }
        self.accumulate(p, LeBytes(bytes), self.d + 1, None, pos_weight);
        Ok(())
    }

    /// Adds another accumulator's sums (e.g. from another thread).
    pub fn merge(&mut self, other: &GradAccumulator) -> Result<(), LinearError> {
        if other.d != self.d {
            return Err(LinearError::ShapeMismatch {
                what: "accumulator features",
                expected: self.d,
                got: other.d,
            });
        }
        self.loss += other.loss;
        for (a, b) in self.grad.iter_mut().zip(&other.grad) {
            *a += b;
        }
        self.rows += other.rows;
        Ok(())
    }

    /// `(Σ c_i·ℓ_i, gradient sum (coef then intercept), rows)`.
    pub fn finish(self) -> (f64, Vec<f64>, usize) {
        (self.loss, self.grad, self.rows)
    }

    fn check_params(&mut self, p: &LinearParams) -> Result<(), LinearError> {
        if p.coef.len() != self.d {
            return Err(LinearError::ShapeMismatch {
                what: "model features",
                expected: self.d,
                got: p.coef.len(),
            });
        }
        for (c32, &c) in self.coef32.iter_mut().zip(&p.coef) {
            *c32 = c as f32;
        }
        Ok(())
    }

    /// Row `i` starts at value `i·stride` of `rows`; its label is `labels[i]`, or the value
    /// right after its `d` features when `labels` is `None`. Shapes are checked by the callers.
    fn accumulate<C: Cells>(
        &mut self,
        p: &LinearParams,
        rows: C,
        stride: usize,
        labels: Option<&[f32]>,
        pos_weight: f64,
    ) {
        let d = self.d;
        let n = match labels {
            Some(y) => y.len(),
            None => rows.len() / stride,
        };
        let coef = &self.coef32[..d];
        let partial = &mut self.partial[..d];
        let (grad, g_intercept) = self.grad.split_at_mut(d);
        let intercept = p.intercept as f32;
        let pw = pos_weight as f32;
        let mut loss = 0.0f64;
        let mut g_int = 0.0f64;
        let mut since_flush = 0;
        let mut i = 0;
        let label = |row_start: usize, i: usize| match labels {
            Some(l) => l[i],
            None => rows.get(row_start + d),
        };
        // Full groups: dot products and gradient updates blocked over the group's rows, so
        // the coefficients and the partial gradient are loaded once per group, not per row.
        while i + GROUP <= n {
            let base = i * stride;
            let xs: [C; GROUP] =
                std::array::from_fn(|r| rows.range(base + r * stride, base + r * stride + d));
            let mut z = [0.0f32; GROUP];
            for (zr, &x) in z.iter_mut().zip(&xs) {
                *zr = x.dot(coef);
            }
            let mut y = [0.0f32; GROUP];
            for r in 0..GROUP {
                z[r] += intercept;
                y[r] = label(base + r * stride, i + r);
            }
            let mut l = [0.0f32; GROUP];
            let mut g = [0.0f32; GROUP];
            logistic_lanes(&z, &y, pw, &mut l, &mut g);
            for r in 0..GROUP {
                loss += f64::from(l[r]);
                g_int += f64::from(g[r]);
            }
            axpy_group(&g, &xs, partial);
            i += GROUP;
            since_flush += GROUP;
            if since_flush >= FLUSH_ROWS {
                flush(partial, grad);
                since_flush = 0;
            }
        }
        // The last `n mod GROUP` rows: padded with empty rows (z = 0, y = 0, g ignored).
        let k = n - i;
        let base = i * stride;
        let xs: [C; GROUP] = std::array::from_fn(|r| {
            if r < k {
                rows.range(base + r * stride, base + r * stride + d)
            } else {
                rows.range(0, 0)
            }
        });
        let mut z = [0.0f32; GROUP];
        let mut y = [0.0f32; GROUP];
        for r in 0..k {
            z[r] = xs[r].dot(coef) + intercept;
            y[r] = label(base + r * stride, i + r);
        }
        let mut l = [0.0f32; GROUP];
        let mut g = [0.0f32; GROUP];
        logistic_lanes(&z, &y, pw, &mut l, &mut g);
        for r in 0..k {
            loss += f64::from(l[r]);
            g_int += f64::from(g[r]);
            for (j, a) in partial.iter_mut().enumerate() {
                *a += g[r] * xs[r].get(j);
            }
        }
        flush(partial, grad);
        g_intercept[0] += g_int;
        self.loss += loss;
        self.rows += n;
    }
}

/// Read-only f32 cells of a block: an `f32` slice, or little-endian bytes read in place (on
/// little-endian machines `from_le_bytes` compiles to a plain load, so no decode pass).
trait Cells: Copy {
    /// Number of f32 values.
    fn len(self) -> usize;
    /// Value `i`.
    fn get(self, i: usize) -> f32;
    /// Values `a..b`.
    fn range(self, a: usize, b: usize) -> Self;
    /// `coef · self` (same length), eight f32 lanes over 8-value chunks.
    fn dot(self, coef: &[f32]) -> f32;
}

impl Cells for &[f32] {
    #[inline(always)]
    fn len(self) -> usize {
        <[f32]>::len(self)
    }
    #[inline(always)]
    fn get(self, i: usize) -> f32 {
        self[i]
    }
    #[inline(always)]
    fn range(self, a: usize, b: usize) -> Self {
        &self[a..b]
    }
    #[inline(always)]
    fn dot(self, coef: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let cc = coef.chunks_exact(8);
        let xc = self.chunks_exact(8);
        let tail: f32 = cc
            .remainder()
            .iter()
            .zip(xc.remainder())
            .map(|(a, b)| a * b)
            .sum();
        for (c, x) in cc.zip(xc) {
            for t in 0..8 {
                acc[t] += c[t] * x[t];
            }
        }
        // Summed in lane order: a pairwise tree here makes LLVM shuffle inside the loop.
        acc.iter().sum::<f32>() + tail
    }
}

/// Little-endian f32 values stored as bytes.
#[derive(Clone, Copy)]
struct LeBytes<'a>(&'a [u8]);

impl Cells for LeBytes<'_> {
    #[inline(always)]
    fn len(self) -> usize {
        self.0.len() / 4
    }
    #[inline(always)]
    fn get(self, i: usize) -> f32 {
        let b = &self.0[4 * i..4 * i + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    #[inline(always)]
    fn range(self, a: usize, b: usize) -> Self {
        LeBytes(&self.0[4 * a..4 * b])
    }
    #[inline(always)]
    fn dot(self, coef: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let cc = coef.chunks_exact(8);
        let xc = self.0.chunks_exact(32);
        let tail: f32 = cc
            .remainder()
            .iter()
            .zip(xc.remainder().chunks_exact(4))
            .map(|(a, b)| a * f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .sum();
        for (c, x) in cc.zip(xc) {
            for t in 0..8 {
                let i = 4 * t;
                acc[t] += c[t] * f32::from_le_bytes([x[i], x[i + 1], x[i + 2], x[i + 3]]);
            }
        }
        // Summed in lane order: a pairwise tree here makes LLVM shuffle inside the loop.
        acc.iter().sum::<f32>() + tail
    }
}

/// `partial += Σ_r g[r]·xs[r]` as one loop over the columns, which LLVM vectorises four
/// columns at a time with contiguous loads from each of the group's rows (the partial sums
/// are loaded and stored once per group, not once per row).
#[inline(always)]
fn axpy_group<C: Cells>(g: &[f32; GROUP], xs: &[C; GROUP], partial: &mut [f32]) {
    let d = partial.len();
    // Rows cut to exactly `d` values, so the bounds checks in the loop can be dropped.
    let rows: [C; GROUP] = std::array::from_fn(|r| xs[r].range(0, d));
    for (j, pj) in partial.iter_mut().enumerate() {
        let mut a = *pj;
        for (gr, x) in g.iter().zip(&rows) {
            a += gr * x.get(j);
        }
        *pj = a;
    }
}

/// Weighted loss `c·ℓ` and residual `c·(σ(z) − y)` for `GROUP` rows in f32, branch-free so
/// that the loop vectorises; the same formulas as the f64 per-row terms of
/// `fedsilo_ml::linear` (`logistic`).
#[inline(always)]
fn logistic_lanes(
    z: &[f32; GROUP],
    y: &[f32; GROUP],
    pos_weight: f32,
    loss: &mut [f32; GROUP],
    grad: &mut [f32; GROUP],
) {
    for t in 0..GROUP {
        let (zt, yt) = (z[t], y[t]);
        let e = exp_neg_f32(zt.abs());
        let inv = 1.0 / (1.0 + e);
        let ei = e * inv;
        let positive = zt >= 0.0;
        let p = if positive { inv } else { ei };
        let q = if positive { ei } else { inv };
        let c = 1.0 + (pos_weight - 1.0) * yt;
        let relu = if positive { zt } else { 0.0 };
        loss[t] = c * ((relu - yt * zt) + ln_1p_unit_f32(e));
        grad[t] = c * ((1.0 - yt) * p - yt * q);
    }
}

/// `e^{−a}` for `a ≥ 0` (NaN and `a > 87` give `e^{−87}`), relative error ≈ 1e-7: Cephes'
/// `expf` polynomial after reduction by a two-part ln 2; the power of two is built from its
/// bits. Branch-free and vectorisable.
#[inline(always)]
fn exp_neg_f32(a: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let a = a.min(87.0);
    let k = (a * LOG2E + 0.5) as i32; // round(a / ln 2) ∈ [0, 126]
    let kf = k as f32;
    let r = (kf * LN2_HI - a) + kf * LN2_LO; // −a + k·ln 2 ∈ [−ln2/2, ln2/2]
    let poly = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let er = poly * r * r + r + 1.0;
    er * f32::from_bits(((127 - k) as u32) << 23) // 2^{−k}, a normal number
}

/// `ln(1 + e)` for `e ∈ [0, 1]`, relative error ≈ 1e-7 also for tiny `e`:
/// `2·atanh(s)` with `s = e/(2 + e) ≤ 1/3`, series to `s¹³`.
#[inline(always)]
fn ln_1p_unit_f32(e: f32) -> f32 {
    let s = e / (2.0 + e);
    let w = s * s;
    let poly = 1.0
        + w * (1.0 / 3.0
            + w * (1.0 / 5.0
                + w * (1.0 / 7.0 + w * (1.0 / 9.0 + w * (1.0 / 11.0 + w * (1.0 / 13.0))))));
    2.0 * s * poly
}

/// Adds the f32 partial sums into the f64 totals and zeroes them.
#[inline]
fn flush(partial: &mut [f32], total: &mut [f64]) {
    for (t, p) in total.iter_mut().zip(partial.iter_mut()) {
        *t += f64::from(*p);
        *p = 0.0;
    }
}

/// The accumulator's tests, run by the bench before it measures anything: the f32 `exp` and
/// `log1p` are accurate to 5e-7, and every block layout gives the sums of `loss_grad_sum`.
/// Panics on a mismatch.
pub fn self_check() {
    f32_exp_and_log1p_are_accurate();
    grad_accumulator_equals_loss_grad_sum();
    eprintln!(
        "self-check passed: GradAccumulator gives the sums of loss_grad_sum in every block \
         layout; f32 exp/log1p within 5e-7"
    );
}

/// `n` rows of `d` standard-normal-ish features; labels from a logistic model with
/// coefficients `truth` and intercept `b`.
fn synthetic(n: usize, truth: &[f64], b: f64, seed: u64) -> (Array2<f32>, Array1<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = truth.len();
    let x = Array2::from_shape_fn((n, d), |_| {
        // Sum of three uniforms: roughly normal, unit variance.
        let s: f64 = (0..3).map(|_| rng.random::<f64>() - 0.5).sum();
        (s * 2.0) as f32
    });
    let y = Array1::from_shape_fn(n, |i| {
        let z: f64 = x
            .row(i)
            .iter()
            .zip(truth)
            .map(|(&a, &w)| f64::from(a) * w)
            .sum::<f64>()
            + b;
        if rng.random::<f64>() < sigmoid(z) {
            1.0
        } else {
            0.0
        }
    });
    (x, y)
}

fn f32_exp_and_log1p_are_accurate() {
    let mut worst = (0.0f64, 0.0f64);
    for i in 0..=200_000 {
        let a = i as f32 * 87.0 / 200_000.0;
        let exact = (-f64::from(a)).exp();
        let rel = (f64::from(exp_neg_f32(a)) - exact).abs() / exact;
        worst.0 = worst.0.max(rel);
    }
    for i in 0..=200_000 {
        // Log-spaced down to 1e-30 plus the linear range up to 1.
        let e = if i % 2 == 0 {
            (i as f32 / 200_000.0).max(1e-30)
        } else {
            10f32.powf(-30.0 * i as f32 / 200_000.0)
        };
        let exact = f64::from(e).ln_1p();
        let rel = (f64::from(ln_1p_unit_f32(e)) - exact).abs() / exact.max(1e-300);
        worst.1 = worst.1.max(rel);
    }
    assert!(worst.0 < 5e-7 && worst.1 < 5e-7, "{worst:?}");
    assert_eq!(exp_neg_f32(0.0), 1.0);
    assert!(exp_neg_f32(f32::INFINITY) > 0.0 && exp_neg_f32(f32::NAN).is_finite());
}

fn grad_accumulator_equals_loss_grad_sum() {
    let (x, y) = synthetic(
        1000,
        &[0.5, -1.0, 0.25, 2.0, 0.0, 1.0, -0.5, 0.75, 1.5, -2.0, 0.3],
        0.2,
        6,
    );
    let d = x.ncols();
    let p = LinearParams {
        coef: (0..d).map(|j| 0.1 * j as f64 - 0.4).collect(),
        intercept: -0.3,
    };
    let (l_ref, g_ref) = loss_grad_sum(&p, x.view(), y.view(), 3.0).unwrap();
    let flat = x.as_slice().unwrap();
    let labels = y.as_slice().unwrap();
    // Separate labels, uneven blocks.
    let mut acc = GradAccumulator::new(d);
    let mut start = 0;
    for len in [1usize, 99, 300, 600] {
        acc.add_block(
            &p,
            &flat[start * d..(start + len) * d],
            &labels[start..start + len],
            3.0,
        )
        .unwrap();
        start += len;
    }
    // Interleaved labels, accumulated in two halves and merged.
    let mut inter = Vec::with_capacity(1000 * (d + 1));
    for i in 0..1000 {
        inter.extend_from_slice(&flat[i * d..(i + 1) * d]);
        inter.push(labels[i]);
    }
    let mut a = GradAccumulator::new(d);
    let mut b = GradAccumulator::new(d);
    a.add_labelled_block(&p, &inter[..400 * (d + 1)], 3.0)
        .unwrap();
    b.add_labelled_block(&p, &inter[400 * (d + 1)..], 3.0)
        .unwrap();
    a.merge(&b).unwrap();
    // The same rows as little-endian bytes, in blocks of 13 rows (not a multiple of 8).
    let bytes: Vec<u8> = inter.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut c = GradAccumulator::new(d);
    for chunk in bytes.chunks(13 * 4 * (d + 1)) {
        c.add_labelled_le_bytes(&p, chunk, 3.0).unwrap();
    }
    assert!(c.add_labelled_le_bytes(&p, &bytes[..4 * d], 3.0).is_err());
    for acc in [acc, a, c] {
        let (l, g, rows) = acc.finish();
        assert_eq!(rows, 1000);
        assert!((l - l_ref).abs() < 1e-5 * l_ref.abs(), "{l} vs {l_ref}");
        let scale = g_ref.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (u, v) in g.iter().zip(&g_ref) {
            assert!((u - v).abs() < 1e-5 * scale, "{u} vs {v}");
        }
    }
    // Shapes are checked.
    let mut acc = GradAccumulator::new(d);
    assert_eq!(acc.dim(), d);
    assert!(acc
        .add_block(&p, &flat[..d * 3], &labels[..2], 1.0)
        .is_err());
    assert!(acc.add_labelled_block(&p, &inter[..d], 1.0).is_err());
    assert!(acc
        .add_block(&LinearParams::zeros(d + 1), &flat[..d], &labels[..1], 1.0)
        .is_err());
    assert!(acc.merge(&GradAccumulator::new(d - 1)).is_err());
    assert_eq!(acc.rows(), 0);
    // No features: only the intercept (σ(0) = ½ for both rows).
    let mut acc = GradAccumulator::new(0);
    acc.add_block(&LinearParams::zeros(0), &[], &[1.0, 0.0], 1.0)
        .unwrap();
    acc.add_labelled_le_bytes(&LinearParams::zeros(0), &1f32.to_le_bytes(), 1.0)
        .unwrap();
    let (l, g, rows) = acc.finish();
    assert_eq!(rows, 3);
    assert!((l - 3.0 * std::f64::consts::LN_2).abs() < 1e-6, "{l}");
    assert!((g[0] + 0.5).abs() < 1e-6, "{g:?}");
}
