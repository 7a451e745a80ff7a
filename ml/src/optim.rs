//! Server-side optimisers applied to the averaged client update (FedOpt, Reddi et al.,
//! "Adaptive Federated Optimization", ICLR 2021, Algorithm 2).
//!
//! Each round the coordinator learns `Δ = Σ_k n_k·(w_k − w) / Σ_k n_k` (the sum under secure
//! aggregation divided by the summed row counts) and treats it as a pseudo-gradient step:
//!
//! * `FedAvg { lr }`:  `w ← w + lr·Δ` (`lr = 1` is plain FedAvg);
//! * `FedAdam`:        `m ← β₁m + (1−β₁)Δ`, `v ← β₂v + (1−β₂)Δ²`, `w ← w + lr·m/(√v + ε)`;
//! * `FedYogi`:        as FedAdam but `v ← v − (1−β₂)·Δ²·sign(v − Δ²)`.
//!
//! As in the paper there is no bias correction and `v` starts at `ε²` (the paper's `τ²`), so
//! `ε` (typically 1e-3) also sets the adaptivity scale.

use serde::{Deserialize, Serialize};

/// Errors of [`OptimizerState::try_step`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimError {
    /// Parameters, update and state disagree in length.
    #[error("{what}: expected length {expected}, got {got}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// The averaged update contains NaN or ±∞ (e.g. a diverged participant).
    #[error("averaged update has a non-finite value at index {index}")]
    NonFinite { index: usize },
}

/// The server optimiser of a training job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerOptimizer {
    FedAvg {
        lr: f64,
    },
    FedAdam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
    FedYogi {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
}

/// Moments carried across rounds; serialisable so a coordinator can checkpoint it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerState {
    /// First moment (unused by FedAvg).
    pub m: Vec<f64>,
    /// Second moment (unused by FedAvg).
    pub v: Vec<f64>,
    /// Steps taken.
    pub steps: u64,
}

impl OptimizerState {
    /// Fresh state for `dim` parameters: `m = 0`, `v = ε²` for the adaptive optimisers.
    pub fn new(opt: &ServerOptimizer, dim: usize) -> Self {
        let v0 = match opt {
            ServerOptimizer::FedAvg { .. } => 0.0,
            ServerOptimizer::FedAdam { eps, .. } | ServerOptimizer::FedYogi { eps, .. } => {
                eps * eps
            }
        };
        OptimizerState {
            m: vec![0.0; dim],
            v: vec![v0; dim],
            steps: 0,
        }
    }

    /// Number of parameters the state was created for.
    pub fn dim(&self) -> usize {
        self.m.len()
    }

    /// Applies one round's averaged update `avg_delta` to `params`.
    ///
    /// Non-finite updates propagate into `params` (callers check the parameters, or use
    /// [`OptimizerState::try_step`], which refuses them and leaves everything unchanged).
    ///
    /// # Panics
    /// If `params`, `avg_delta` and the state differ in length.
    pub fn step(&mut self, opt: &ServerOptimizer, params: &mut [f64], avg_delta: &[f64]) {
        if let Err(e) = self.check_lengths(params, avg_delta) {
            panic!("OptimizerState::step: {e}");
        }
        self.apply(opt, params, avg_delta);
    }

    /// [`OptimizerState::step`] that refuses mismatched lengths and non-finite updates
    /// without touching `params` or the state.
    pub fn try_step(
        &mut self,
        opt: &ServerOptimizer,
        params: &mut [f64],
        avg_delta: &[f64],
    ) -> Result<(), OptimError> {
        self.check_lengths(params, avg_delta)?;
        if let Some(index) = avg_delta.iter().position(|d| !d.is_finite()) {
            return Err(OptimError::NonFinite { index });
        }
        self.apply(opt, params, avg_delta);
        Ok(())
    }

    fn check_lengths(&self, params: &[f64], avg_delta: &[f64]) -> Result<(), OptimError> {
        if params.len() != self.m.len() {
            return Err(OptimError::LengthMismatch {
                what: "parameters vs optimiser state",
                expected: self.m.len(),
                got: params.len(),
            });
        }
        if avg_delta.len() != params.len() {
            return Err(OptimError::LengthMismatch {
                what: "averaged update vs parameters",
                expected: params.len(),
                got: avg_delta.len(),
            });
        }
        Ok(())
    }

    fn apply(&mut self, opt: &ServerOptimizer, params: &mut [f64], delta: &[f64]) {
        match *opt {
            ServerOptimizer::FedAvg { lr } => {
                for (w, d) in params.iter_mut().zip(delta) {
                    *w += lr * d;
                }
            }
            ServerOptimizer::FedAdam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                for (((w, &d), m), v) in params
                    .iter_mut()
                    .zip(delta)
                    .zip(&mut self.m)
                    .zip(&mut self.v)
                {
                    *m = beta1 * *m + (1.0 - beta1) * d;
                    *v = beta2 * *v + (1.0 - beta2) * d * d;
                    *w += lr * *m / (v.sqrt() + eps);
                }
            }
            ServerOptimizer::FedYogi {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                for (((w, &d), m), v) in params
                    .iter_mut()
                    .zip(delta)
                    .zip(&mut self.m)
                    .zip(&mut self.v)
                {
                    *m = beta1 * *m + (1.0 - beta1) * d;
                    let d2 = d * d;
                    // sign(0) = 0: v stays put when it already equals Δ².
                    let sign = if *v > d2 {
                        1.0
                    } else if *v < d2 {
                        -1.0
                    } else {
                        0.0
                    };
                    *v -= (1.0 - beta2) * d2 * sign;
                    *w += lr * *m / (v.max(0.0).sqrt() + eps);
                }
            }
        }
        self.steps += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const ADAM: ServerOptimizer = ServerOptimizer::FedAdam {
        lr: 0.05,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-3,
    };
    const YOGI: ServerOptimizer = ServerOptimizer::FedYogi {
        lr: 0.05,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-3,
    };

    #[test]
    fn fedavg_lr_one_is_weighted_averaging() {
        let w = vec![1.0, -2.0, 0.5];
        let clients = [(vec![2.0, -1.0, 0.0], 10.0), (vec![0.0, -4.0, 1.0], 30.0)];
        let n: f64 = clients.iter().map(|c| c.1).sum();
        let avg_delta: Vec<f64> = (0..3)
            .map(|j| {
                clients
                    .iter()
                    .map(|(wk, nk)| nk * (wk[j] - w[j]))
                    .sum::<f64>()
                    / n
            })
            .collect();
        let opt = ServerOptimizer::FedAvg { lr: 1.0 };
        let mut st = OptimizerState::new(&opt, 3);
        let mut p = w.clone();
        st.step(&opt, &mut p, &avg_delta);
        for j in 0..3 {
            let avg = clients.iter().map(|(wk, nk)| nk * wk[j]).sum::<f64>() / n;
            assert!((p[j] - avg).abs() < 1e-12, "{p:?}");
        }
        // A server learning rate scales the step.
        let mut q = w.clone();
        st.step(&ServerOptimizer::FedAvg { lr: 0.5 }, &mut q, &avg_delta);
        assert!((q[0] - (w[0] + 0.5 * avg_delta[0])).abs() < 1e-12);
        assert_eq!(st.steps, 2);
    }

    /// Clients whose local step is one gradient step on `f(w) = ½ Σ a_j (w_j − c_j)²`.
    fn quadratic_delta(w: &[f64], a: &[f64], c: &[f64]) -> Vec<f64> {
        w.iter()
            .zip(a)
            .zip(c)
            .map(|((w, a), c)| -0.1 * a * (w - c))
            .collect()
    }

    #[test]
    fn adaptive_optimisers_converge_on_an_ill_conditioned_quadratic() {
        let a = [100.0, 1.0, 0.01];
        let c = [1.0, -2.0, 3.0];
        for opt in [ADAM, YOGI] {
            let mut st = OptimizerState::new(&opt, 3);
            let mut w = vec![0.0; 3];
            for _ in 0..3000 {
                let d = quadratic_delta(&w, &a, &c);
                st.step(&opt, &mut w, &d);
            }
            for j in 0..3 {
                assert!((w[j] - c[j]).abs() < 1e-2, "{opt:?}: {w:?}");
            }
        }
        // Plain FedAvg with the same budget stalls on the flat direction.
        let opt = ServerOptimizer::FedAvg { lr: 1.0 };
        let mut st = OptimizerState::new(&opt, 3);
        let mut w = vec![0.0; 3];
        for _ in 0..3000 {
            let d = quadratic_delta(&w, &[1.0, 1.0, 0.01], &c);
            st.step(&opt, &mut w, &d);
        }
        assert!((w[2] - c[2]).abs() > 0.1, "{w:?}");
    }

    #[test]
    fn state_stays_finite_under_extreme_updates() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for opt in [ADAM, YOGI] {
            let mut st = OptimizerState::new(&opt, 4);
            let mut w = vec![0.0; 4];
            for t in 0..2000 {
                let d: Vec<f64> = (0..4)
                    .map(|j| match (t + j) % 4 {
                        0 => 0.0,
                        1 => 1e150 * (rng.random::<f64>() - 0.5),
                        2 => 1e-300,
                        _ => rng.random::<f64>() - 0.5,
                    })
                    .collect();
                st.try_step(&opt, &mut w, &d).unwrap();
                assert!(
                    st.m.iter().chain(&st.v).chain(&w).all(|v| v.is_finite()),
                    "{opt:?} at {t}"
                );
                assert!(st.v.iter().all(|&v| v >= 0.0));
            }
            // |m|/√v is bounded (≈ 10.5 for these betas), so each step moves a coordinate by
            // at most about lr·10.5 whatever the size of the update.
            assert!(w.iter().all(|v| v.abs() < 0.05 * 2000.0 * 11.0));
        }
    }

    #[test]
    fn try_step_refuses_bad_input_without_changes() {
        let mut st = OptimizerState::new(&ADAM, 2);
        let before = st.clone();
        let mut w = vec![1.0, 2.0];
        assert!(matches!(
            st.try_step(&ADAM, &mut w, &[0.1]),
            Err(OptimError::LengthMismatch { .. })
        ));
        assert!(matches!(
            st.try_step(&ADAM, &mut [0.0; 3], &[0.1; 3]),
            Err(OptimError::LengthMismatch { .. })
        ));
        assert_eq!(
            st.try_step(&ADAM, &mut w, &[0.1, f64::NAN]),
            Err(OptimError::NonFinite { index: 1 })
        );
        assert_eq!(st, before);
        assert_eq!(w, vec![1.0, 2.0]);
    }

    #[test]
    fn optimizer_serde_shape() {
        let json = serde_json::to_string(&ADAM).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"fed_adam","lr":0.05,"beta1":0.9,"beta2":0.99,"eps":0.001}"#
        );
        let back: ServerOptimizer = serde_json::from_str(r#"{"kind":"fed_avg","lr":1.0}"#).unwrap();
        assert_eq!(back, ServerOptimizer::FedAvg { lr: 1.0 });
    }
}
