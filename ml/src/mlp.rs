//! A small multilayer perceptron (ReLU hidden layers, sigmoid output) for the same binary tasks
//! as [`crate::linear`], trained with FedAvg on the same objective and [`LocalTrainConfig`].
//!
//! # Parameter layout
//!
//! Layer `l` maps `in_l` inputs to `out_l` outputs (`in_0 = inputs`, `out_l = hidden[l]`, and a
//! last layer with one output). [`MlpParams::flat`] stores, layer after layer, the weight matrix
//! `W_l` (`out_l × in_l`, row-major) followed by its bias `b_l` (`out_l`). The federated update
//! is this flat vector, so every participant must use the same [`MlpSpec`].
//!
//! # Objective
//!
//! Mean class-weighted log-loss (weights `1 + (pos_weight − 1)·y`) + `l2/2·‖W‖²` over the
//! weight matrices (not the biases) + `prox_mu/2·‖θ − θ_global‖²` over all parameters.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, Slice, Zip};
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::linear::{logistic, sigmoid, sum_blocks, LocalTrainConfig};

/// Rows per block in prediction and full-data gradients (bounds the activation memory).
const BLOCK_ROWS: usize = 4096;

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MlpError {
    /// The flat parameter vector does not fit the spec.
    #[error("MLP parameters: expected {expected} values for the spec, got {got}")]
    ParamCount { expected: usize, got: usize },
    /// The spec's layer sizes multiply past `usize` (only a spec from outside can do this).
    #[error("MLP spec: the layer sizes overflow the parameter count")]
    SpecOverflow,
    /// Data does not fit the network.
    #[error("{what}: expected {expected}, got {got}")]
    ShapeMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
}

/// Architecture: input width and hidden layer widths (1–2 hidden layers in practice).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlpSpec {
    pub inputs: usize,
    pub hidden: Vec<usize>,
}

impl MlpSpec {
    /// `(inputs, outputs)` of each layer, the output layer last.
    fn layers(&self) -> Vec<(usize, usize)> {
        let mut widths = Vec::with_capacity(self.hidden.len() + 2);
        widths.push(self.inputs);
        widths.extend_from_slice(&self.hidden);
        widths.push(1);
        widths.windows(2).map(|w| (w[0], w[1])).collect()
    }
}

/// An MLP's architecture and its flat parameters (layout in the module documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpParams {
    pub spec: MlpSpec,
    pub flat: Vec<f64>,
}

impl MlpParams {
    /// He-normal weights (`N(0, 2/in)`; `N(0, 1/in)` for the linear output layer) and zero
    /// biases, drawn in layout order from `rng` (deterministic for its state).
    pub fn init(spec: MlpSpec, rng: &mut impl rand::Rng) -> Self {
        let layers = spec.layers();
        let last = layers.len() - 1;
        let mut flat = Vec::with_capacity(Self::n_params(&spec));
        for (l, &(i, o)) in layers.iter().enumerate() {
            let gain = if l == last { 1.0 } else { 2.0 };
            let sd = (gain / i.max(1) as f64).sqrt();
            for _ in 0..i * o {
                let z: f64 = rng.sample(StandardNormal);
                flat.push(sd * z);
            }
            flat.extend(std::iter::repeat_n(0.0, o));
        }
        MlpParams { spec, flat }
    }

    /// Length of the flat parameter vector for `spec` (saturating: a spec from outside whose
    /// sizes overflow gives `usize::MAX`, which no parameter vector matches).
    pub fn n_params(spec: &MlpSpec) -> usize {
        Self::checked_n_params(spec).unwrap_or(usize::MAX)
    }

    /// Length of the flat parameter vector for `spec`, `None` when it overflows `usize`.
    pub fn checked_n_params(spec: &MlpSpec) -> Option<usize> {
        spec.layers().iter().try_fold(0usize, |acc, &(i, o)| {
            i.checked_mul(o)?.checked_add(o)?.checked_add(acc)
        })
    }

    /// Parameters from an external flat vector, checked against the spec.
    pub fn new(spec: MlpSpec, flat: Vec<f64>) -> Result<Self, MlpError> {
        let p = MlpParams { spec, flat };
        p.check()?;
        Ok(p)
    }

    /// Checks that the flat vector fits the spec.
    pub fn check(&self) -> Result<(), MlpError> {
        let expected = Self::checked_n_params(&self.spec).ok_or(MlpError::SpecOverflow)?;
        if self.flat.len() != expected {
            return Err(MlpError::ParamCount {
                expected,
                got: self.flat.len(),
            });
        }
        Ok(())
    }

    /// Checks the parameters and that `x` has `spec.inputs` columns and `y` one label per row.
    pub fn check_data(&self, x: ArrayView2<f32>, y: ArrayView1<f32>) -> Result<(), MlpError> {
        self.check()?;
        if x.ncols() != self.spec.inputs {
            return Err(MlpError::ShapeMismatch {
                what: "feature columns",
                expected: self.spec.inputs,
                got: x.ncols(),
            });
        }
        if y.len() != x.nrows() {
            return Err(MlpError::ShapeMismatch {
                what: "labels",
                expected: x.nrows(),
                got: y.len(),
            });
        }
        Ok(())
    }
}

/// The parameters as matrices, for the duration of one call.
struct Net {
    w: Vec<Array2<f64>>,
    b: Vec<Array1<f64>>,
}

impl Net {
    /// From a flat vector that [`MlpParams::check`] accepted for `spec`: every index below is
    /// within `flat` (the layer sizes sum to its length).
    fn from_flat(spec: &MlpSpec, flat: &[f64]) -> Net {
        let mut off = 0;
        let mut w = Vec::new();
        let mut b = Vec::new();
        for (i, o) in spec.layers() {
            w.push(Array2::from_shape_fn((o, i), |(r, c)| {
                flat[off + r * i + c]
            }));
            off += i * o;
            b.push(Array1::from_shape_fn(o, |r| flat[off + r]));
            off += o;
        }
        debug_assert_eq!(off, flat.len());
        Net { w, b }
    }

    fn to_flat(&self) -> Vec<f64> {
        let mut out = Vec::new();
        for (w, b) in self.w.iter().zip(&self.b) {
            out.extend(w.iter());
            out.extend(b.iter());
        }
        out
    }

    fn zeros_like(&self) -> Net {
        Net {
            w: self.w.iter().map(|w| Array2::zeros(w.raw_dim())).collect(),
            b: self.b.iter().map(|b| Array1::zeros(b.raw_dim())).collect(),
        }
    }
}

/// Preallocated activations and back-propagated errors for batches of up to `cap` rows.
struct Workspace {
    /// `acts[0]` is the input batch; `acts[l + 1]` the output of layer `l` (after ReLU for
    /// hidden layers, the logit for the last).
    acts: Vec<Array2<f64>>,
    /// `deltas[l]`: loss gradient with respect to layer `l`'s pre-activation.
    deltas: Vec<Array2<f64>>,
}

impl Workspace {
    fn new(spec: &MlpSpec, cap: usize) -> Workspace {
        let layers = spec.layers();
        let mut acts = vec![Array2::zeros((cap, spec.inputs))];
        acts.extend(layers.iter().map(|&(_, o)| Array2::zeros((cap, o))));
        let deltas = layers
            .iter()
            .map(|&(_, o)| Array2::zeros((cap, o)))
            .collect();
        Workspace { acts, deltas }
    }

    /// Copies rows `idx` of the row-major `x` (`inputs` columns) into the input batch.
    fn load_rows(&mut self, x: ArrayView2<f32>, idx: impl Iterator<Item = usize>) -> usize {
        let mut n = 0;
        for (mut dst, i) in self.acts[0].outer_iter_mut().zip(idx) {
            for (d, &v) in dst.iter_mut().zip(x.row(i)) {
                *d = f64::from(v);
            }
            n += 1;
        }
        n
    }

    /// Forward pass over the first `n` rows of the input batch.
    fn forward(&mut self, net: &Net, n: usize) {
        let last = net.w.len() - 1;
        for l in 0..net.w.len() {
            let (lo, hi) = self.acts.split_at_mut(l + 1);
            let input = lo[l].slice_axis(Axis(0), Slice::from(..n));
            let mut out = hi[0].slice_axis_mut(Axis(0), Slice::from(..n));
            general_mat_mul(1.0, &input, &net.w[l].t(), 0.0, &mut out);
            let relu = l < last;
            for mut row in out.outer_iter_mut() {
                Zip::from(&mut row).and(&net.b[l]).for_each(|v, &b| {
                    let z = *v + b;
                    *v = if relu { z.max(0.0) } else { z };
                });
            }
        }
    }

    /// Loss sum over the batch, and the output-layer delta `scale·c_i·(p_i − y_i)`.
    fn output_delta(&mut self, y: &[f64], pos_weight: f64, scale: f64) -> f64 {
        let n = y.len();
        let last = self.deltas.len() - 1;
        let logits = self.acts[last + 1]
            .slice_axis(Axis(0), Slice::from(..n))
            .index_axis_move(Axis(1), 0);
        let mut delta = self.deltas[last]
            .slice_axis_mut(Axis(0), Slice::from(..n))
            .index_axis_move(Axis(1), 0);
        let mut loss = 0.0;
        for ((d, &z), &yi) in delta.iter_mut().zip(logits.iter()).zip(y) {
            let c = 1.0 + (pos_weight - 1.0) * yi;
            let t = logistic(z, yi);
            loss += c * t.loss;
            *d = scale * c * t.residual;
        }
        loss
    }

    /// Back-propagates the output delta of the first `n` rows; writes parameter gradients.
    fn backward(&mut self, net: &Net, n: usize, grad: &mut Net) {
        for l in (0..net.w.len()).rev() {
            let delta = self.deltas[l].slice_axis(Axis(0), Slice::from(..n));
            let input = self.acts[l].slice_axis(Axis(0), Slice::from(..n));
            general_mat_mul(1.0, &delta.t(), &input, 0.0, &mut grad.w[l]);
            grad.b[l].assign(&delta.sum_axis(Axis(0)));
            if l > 0 {
                let (lo, hi) = self.deltas.split_at_mut(l);
                let src = hi[0].slice_axis(Axis(0), Slice::from(..n));
                let mut dst: ArrayViewMut2<f64> =
                    lo[l - 1].slice_axis_mut(Axis(0), Slice::from(..n));
                general_mat_mul(1.0, &src, &net.w[l], 0.0, &mut dst);
                // ReLU derivative: the layer's output was positive.
                Zip::from(&mut dst)
                    .and(self.acts[l].slice_axis(Axis(0), Slice::from(..n)))
                    .for_each(|d, &a| {
                        if a <= 0.0 {
                            *d = 0.0;
                        }
                    });
            }
        }
    }
}

/// Per-example gradients of an MLP (for DP-SGD, which clips each example's gradient): the
/// network and one row's workspace are unpacked once, then each [`grad`](Self::grad) call is a
/// forward and backward pass over one row with no allocation.
pub struct MlpExampleGrad {
    spec: MlpSpec,
    net: Net,
    grad: Net,
    ws: Workspace,
}

impl MlpExampleGrad {
    /// Errors when the parameters do not fit their spec.
    pub fn new(p: &MlpParams) -> Result<Self, MlpError> {
        p.check()?;
        let net = Net::from_flat(&p.spec, &p.flat);
        let grad = net.zeros_like();
        Ok(MlpExampleGrad {
            spec: p.spec.clone(),
            net,
            grad,
            ws: Workspace::new(&p.spec, 1),
        })
    }

    /// Row `row` of `x`'s gradient of the class-weighted log-loss with respect to the flat
    /// parameters, written into `out` (the parameter count); returns the row's loss.
    ///
    /// Errors when `x` has the wrong number of columns, `row` is out of range or `out` has
    /// the wrong length.
    pub fn grad(
        &mut self,
        x: ArrayView2<f32>,
        row: usize,
        y: f32,
        pos_weight: f64,
        out: &mut [f64],
    ) -> Result<f64, MlpError> {
        if x.ncols() != self.spec.inputs {
            return Err(MlpError::ShapeMismatch {
                what: "feature columns",
                expected: self.spec.inputs,
                got: x.ncols(),
            });
        }
        if row >= x.nrows() {
            return Err(MlpError::ShapeMismatch {
                what: "row index below the row count",
                expected: x.nrows(),
                got: row,
            });
        }
        let n = MlpParams::n_params(&self.spec);
        if out.len() != n {
            return Err(MlpError::ParamCount {
                expected: n,
                got: out.len(),
            });
        }
        let k = self.ws.load_rows(x, std::iter::once(row));
        self.ws.forward(&self.net, k);
        let loss = self.ws.output_delta(&[f64::from(y)], pos_weight, 1.0);
        self.ws.backward(&self.net, k, &mut self.grad);
        let mut off = 0;
        for (w, b) in self.grad.w.iter().zip(&self.grad.b) {
            for (o, &v) in out[off..].iter_mut().zip(w.iter().chain(b.iter())) {
                *o = v;
            }
            off += w.len() + b.len();
        }
        Ok(loss)
    }
}

/// Probabilities, one per row; rayon-parallel over blocks of rows. Errors when the
/// parameters do not fit the spec or `x` has the wrong number of columns.
pub fn mlp_predict_proba(p: &MlpParams, x: ArrayView2<f32>) -> Result<Vec<f64>, MlpError> {
    p.check()?;
    if x.ncols() != p.spec.inputs {
        return Err(MlpError::ShapeMismatch {
            what: "feature columns",
            expected: p.spec.inputs,
            got: x.ncols(),
        });
    }
    let net = Net::from_flat(&p.spec, &p.flat);
    let n = x.nrows();
    let mut out = vec![0.0; n];
    out.par_chunks_mut(BLOCK_ROWS)
        .enumerate()
        .for_each(|(b, o)| {
            let start = b * BLOCK_ROWS;
            let mut ws = Workspace::new(&p.spec, o.len());
            let k = ws.load_rows(x, start..start + o.len());
            ws.forward(&net, k);
            let logits = &ws.acts[net.w.len()];
            for (oi, &z) in o.iter_mut().zip(logits.column(0)) {
                *oi = sigmoid(z);
            }
        });
    Ok(out)
}

/// Sum over rows of the class-weighted log-loss and its gradient with respect to the flat
/// parameters (no penalty), in blocks of rows reduced in order (deterministic). Errors when
/// the shapes do not fit (see [`MlpParams::check_data`]).
pub fn mlp_loss_grad_sum(
    p: &MlpParams,
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    pos_weight: f64,
) -> Result<(f64, Vec<f64>), MlpError> {
    p.check_data(x, y)?;
    let net = Net::from_flat(&p.spec, &p.flat);
    let ys: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
    let parts: Vec<(f64, Vec<f64>)> = ys
        .par_chunks(BLOCK_ROWS)
        .enumerate()
        .map(|(b, yb)| {
            let start = b * BLOCK_ROWS;
            let mut ws = Workspace::new(&p.spec, yb.len());
            let mut grad = net.zeros_like();
            let k = ws.load_rows(x, start..start + yb.len());
            ws.forward(&net, k);
            let loss = ws.output_delta(yb, pos_weight, 1.0);
            ws.backward(&net, k, &mut grad);
            (loss, grad.to_flat())
        })
        .collect();
    Ok(sum_blocks(parts, p.flat.len()))
}

/// Local minibatch SGD from `global` (same configuration and objective as
/// [`crate::linear::local_train`]; `batch_size` 0 means full batch). Batches are gathered into
/// a preallocated buffer and pushed through `general_mat_mul`; nothing is allocated per row
/// or per batch. Deterministic for a given `rng` state. Errors when the shapes do not fit
/// (see [`MlpParams::check_data`]).
pub fn mlp_local_train(
    global: &MlpParams,
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    cfg: &LocalTrainConfig,
    rng: &mut impl rand::Rng,
) -> Result<MlpParams, MlpError> {
    global.check_data(x, y)?;
    let n = x.nrows();
    let Some(bs) = cfg.batch_rows(n) else {
        return Ok(global.clone());
    };
    let w0 = Net::from_flat(&global.spec, &global.flat);
    let mut net = Net::from_flat(&global.spec, &global.flat);
    let mut grad = net.zeros_like();
    let mut ws = Workspace::new(&global.spec, bs);
    let mut yb = vec![0.0; bs];
    cfg.for_each_batch(n, bs, rng, |batch| {
        let k = ws.load_rows(x, batch.iter().copied());
        for (t, &i) in yb.iter_mut().zip(batch) {
            *t = f64::from(y[i]);
        }
        ws.forward(&net, k);
        ws.output_delta(&yb[..k], cfg.pos_weight, 1.0 / k as f64);
        ws.backward(&net, k, &mut grad);
        let lr = cfg.learning_rate;
        for l in 0..net.w.len() {
            Zip::from(&mut net.w[l])
                .and(&grad.w[l])
                .and(&w0.w[l])
                .for_each(|w, &g, &w0| {
                    *w -= lr * (g + cfg.l2 * *w + cfg.prox_mu * (*w - w0));
                });
            Zip::from(&mut net.b[l])
                .and(&grad.b[l])
                .and(&w0.b[l])
                .for_each(|b, &g, &b0| {
                    *b -= lr * (g + cfg.prox_mu * (*b - b0));
                });
        }
    });
    Ok(MlpParams {
        spec: global.spec.clone(),
        flat: net.to_flat(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linear::{fit_pooled, predict_proba};
    use crate::metrics::auc;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Per-row gradients add up to the summed gradient `mlp_loss_grad_sum` computes.
    #[test]
    fn example_gradients_sum_to_the_batch_gradient() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let n = 200;
        let x = ndarray::Array2::from_shape_fn((n, 3), |_| rng.random_range(-1.0f32..1.0));
        let y = ndarray::Array1::from_shape_fn(n, |i| (i % 3 == 0) as u8 as f32);
        let p = MlpParams::init(spec(3, &[5, 4]), &mut rng);
        let (loss, grad) = mlp_loss_grad_sum(&p, x.view(), y.view(), 1.5).unwrap();
        let mut eg = MlpExampleGrad::new(&p).unwrap();
        let mut g = vec![0.0; p.flat.len()];
        let mut sum = vec![0.0; p.flat.len()];
        let mut l = 0.0;
        for i in 0..n {
            l += eg.grad(x.view(), i, y[i], 1.5, &mut g).unwrap();
            for (s, v) in sum.iter_mut().zip(&g) {
                *s += v;
            }
        }
        assert!((l - loss).abs() < 1e-9 * loss.abs());
        for (a, b) in sum.iter().zip(&grad) {
            assert!((a - b).abs() < 1e-9 * b.abs().max(1.0), "{a} vs {b}");
        }
        assert!(eg.grad(x.view(), n, 1.0, 1.0, &mut g).is_err());
        assert!(eg.grad(x.view(), 0, 1.0, 1.0, &mut g[..3]).is_err());
    }

    fn spec(inputs: usize, hidden: &[usize]) -> MlpSpec {
        MlpSpec {
            inputs,
            hidden: hidden.to_vec(),
        }
    }

    #[test]
    fn layout_and_init() {
        let s = spec(3, &[4, 2]);
        assert_eq!(MlpParams::n_params(&s), 3 * 4 + 4 + 4 * 2 + 2 + 2 + 1);
        let a = MlpParams::init(s.clone(), &mut ChaCha8Rng::seed_from_u64(1));
        let b = MlpParams::init(s.clone(), &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(a, b);
        assert_eq!(a.flat.len(), 29);
        // Biases start at zero, weights do not.
        assert!(a.flat[12..16].iter().all(|&v| v == 0.0));
        assert!(a.flat[..12].iter().all(|&v| v != 0.0));
        assert_eq!(Net::from_flat(&s, &a.flat).to_flat(), a.flat);
        assert!(matches!(
            MlpParams::new(s, vec![0.0; 30]),
            Err(MlpError::ParamCount {
                expected: 29,
                got: 30
            })
        ));
        // He scale: the first layer's weights have variance ≈ 2/inputs.
        let big = MlpParams::init(spec(50, &[400]), &mut ChaCha8Rng::seed_from_u64(2));
        let w = &big.flat[..50 * 400];
        let var = w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64;
        assert!((var - 2.0 / 50.0).abs() < 0.004, "{var}");
    }

    fn random_data(n: usize, d: usize, seed: u64) -> (Array2<f32>, Array1<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = Array2::from_shape_fn((n, d), |_| (rng.random::<f32>() - 0.5) * 4.0);
        let y = Array1::from_shape_fn(n, |_| if rng.random::<f64>() < 0.4 { 1.0 } else { 0.0 });
        (x, y)
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (x, y) = random_data(40, 3, 3);
        for hidden in [vec![5], vec![4, 3]] {
            let mut p = MlpParams::init(spec(3, &hidden), &mut ChaCha8Rng::seed_from_u64(4));
            // Non-zero biases so every parameter is exercised.
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            for v in p.flat.iter_mut() {
                *v += 0.1 * (rng.random::<f64>() - 0.5);
            }
            let (_, g) = mlp_loss_grad_sum(&p, x.view(), y.view(), 2.5).unwrap();
            let h = 1e-6;
            for (j, &gj) in g.iter().enumerate() {
                let mut up = p.clone();
                up.flat[j] += h;
                let mut dn = p.clone();
                dn.flat[j] -= h;
                let fd = (mlp_loss_grad_sum(&up, x.view(), y.view(), 2.5).unwrap().0
                    - mlp_loss_grad_sum(&dn, x.view(), y.view(), 2.5).unwrap().0)
                    / (2.0 * h);
                assert!(
                    (fd - gj).abs() < 1e-5 * (1.0 + gj.abs()),
                    "hidden {hidden:?} param {j}: fd {fd} vs backprop {gj}"
                );
            }
        }
    }

    #[test]
    fn no_hidden_layer_is_logistic_regression() {
        let (x, y) = random_data(100, 4, 6);
        let p = MlpParams::init(spec(4, &[]), &mut ChaCha8Rng::seed_from_u64(7));
        let lin = crate::linear::LinearParams::from_flat(&p.flat).unwrap();
        let a = mlp_predict_proba(&p, x.view()).unwrap();
        let b = predict_proba(&lin, x.view()).unwrap();
        assert!(a.iter().zip(&b).all(|(u, v)| (u - v).abs() < 1e-12));
        let (la, ga) = mlp_loss_grad_sum(&p, x.view(), y.view(), 3.0).unwrap();
        let (lb, gb) = crate::linear::loss_grad_sum(&lin, x.view(), y.view(), 3.0).unwrap();
        assert!((la - lb).abs() < 1e-9);
        assert!(ga.iter().zip(&gb).all(|(u, v)| (u - v).abs() < 1e-9));
    }

    #[test]
    fn learns_xor_where_logistic_regression_cannot() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let n = 2000;
        let x = Array2::from_shape_fn((n, 2), |_| rng.random::<f32>() * 2.0 - 1.0);
        let y = Array1::from_shape_fn(n, |i| {
            if x[[i, 0]] * x[[i, 1]] > 0.0 {
                1.0
            } else {
                0.0
            }
        });
        let labels = y.as_slice().unwrap();

        let lin = fit_pooled(x.view(), y.view(), 1e-4, 1.0).unwrap();
        let auc_lin = auc(&predict_proba(&lin, x.view()).unwrap(), labels);
        assert!(auc_lin < 0.6, "logistic regression AUC {auc_lin}");

        let cfg = LocalTrainConfig {
            epochs: 60,
            learning_rate: 0.1,
            batch_size: 32,
            l2: 0.0,
            pos_weight: 1.0,
            prox_mu: 0.0,
        };
        let init = MlpParams::init(spec(2, &[16, 8]), &mut rng);
        let auc_init = auc(&mlp_predict_proba(&init, x.view()).unwrap(), labels);
        let trained = mlp_local_train(&init, x.view(), y.view(), &cfg, &mut rng).unwrap();
        let auc_mlp = auc(&mlp_predict_proba(&trained, x.view()).unwrap(), labels);
        assert!(auc_mlp > 0.95, "MLP AUC {auc_mlp} (initial {auc_init})");

        // Deterministic for the RNG state; zero epochs is the identity.
        let c1 = LocalTrainConfig {
            epochs: 1,
            ..cfg.clone()
        };
        let a = mlp_local_train(
            &init,
            x.view(),
            y.view(),
            &c1,
            &mut ChaCha8Rng::seed_from_u64(1),
        )
        .unwrap();
        let b = mlp_local_train(
            &init,
            x.view(),
            y.view(),
            &c1,
            &mut ChaCha8Rng::seed_from_u64(1),
        )
        .unwrap();
        assert_eq!(a, b);
        let c0 = LocalTrainConfig { epochs: 0, ..cfg };
        assert_eq!(
            mlp_local_train(&init, x.view(), y.view(), &c0, &mut rng).unwrap(),
            init
        );
    }

    #[test]
    fn fedavg_of_mlps_converges_on_xor() {
        // Two participants each holding two opposite quadrants' worth of the XOR data.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let n = 2000;
        let x = Array2::from_shape_fn((n, 2), |_| rng.random::<f32>() * 2.0 - 1.0);
        let y = Array1::from_shape_fn(n, |i| {
            if x[[i, 0]] * x[[i, 1]] > 0.0 {
                1.0
            } else {
                0.0
            }
        });
        let split: Vec<Vec<usize>> = (0..2)
            .map(|k| (0..n).filter(|&i| (x[[i, 0]] > 0.0) == (k == 0)).collect())
            .collect();
        let parts: Vec<(Array2<f32>, Array1<f32>)> = split
            .iter()
            .map(|rows| (x.select(Axis(0), rows), y.select(Axis(0), rows)))
            .collect();
        let cfg = LocalTrainConfig {
            epochs: 2,
            learning_rate: 0.1,
            batch_size: 32,
            l2: 0.0,
            pos_weight: 1.0,
            prox_mu: 0.01,
        };
        let mut global = MlpParams::init(spec(2, &[16, 8]), &mut rng);
        for _ in 0..40 {
            let mut sum = vec![0.0; global.flat.len()];
            for (px, py) in &parts {
                let local = mlp_local_train(&global, px.view(), py.view(), &cfg, &mut rng).unwrap();
                let nk = px.nrows() as f64;
                for ((s, a), b) in sum.iter_mut().zip(&local.flat).zip(&global.flat) {
                    *s += nk * (a - b);
                }
            }
            for (w, s) in global.flat.iter_mut().zip(&sum) {
                *w += s / n as f64;
            }
        }
        let a = auc(
            &mlp_predict_proba(&global, x.view()).unwrap(),
            y.as_slice().unwrap(),
        );
        assert!(a > 0.95, "federated MLP AUC {a}");
    }
}
