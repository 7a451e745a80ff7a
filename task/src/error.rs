//! Errors of the federated task layer, sorted by fault as `fedsilo_crypto::error` does:
//! the job spec (the operator), the step (the coordinator, checked by the participant), the
//! data (a participant's rows or the federation's sums), a model file (outside input), and
//! the math underneath (typed errors of `fedsilo_ml`, kept as sources).

use fedsilo_ml::gbdt::GbdtError;
use fedsilo_ml::linear::LinearError;
use fedsilo_ml::metrics::MetricsError;
use fedsilo_ml::mlp::MlpError;
use fedsilo_ml::scorecard::ScorecardError;

use crate::validate::InstructionError;

#[derive(Debug, thiserror::Error)]
pub enum FedError {
    // --- The operator: the job spec.
    /// A field of the spec is out of range; the text names the field.
    #[error("job spec: {0}")]
    Spec(String),
    /// The spec's model parameters are refused by the model itself.
    #[error("job spec: model: {0}")]
    SpecModel(#[source] ModelError),
    /// No noise multiplier meets the record-level budget over the job's training releases.
    #[error("job spec: dp: no noise multiplier keeps {rounds} training releases (rounds; tree levels for boosted trees) within the budget")]
    Calibration {
        rounds: u64,
        #[source]
        source: fedsilo_ml::dp::DpError,
    },

    // --- The coordinator: a step the participant refuses.
    #[error("instruction refused: {0}")]
    Instruction(#[from] InstructionError),

    // --- Data: a participant's rows, or the federation's sums.
    /// Local training from the global model left the finite numbers.
    #[error(
        "local training diverged (the update is not finite): learning.learning_rate \
         {learning_rate} over {epochs} local epochs is too large for this model"
    )]
    LocalDiverged { learning_rate: f64, epochs: usize },
    #[error("local data: {kind} column '{name}' is not in the local dataset")]
    MissingColumn { kind: &'static str, name: String },
    #[error("local data: no training rows")]
    NoLocalRows,
    #[error("the federation has no training rows")]
    NoRows,
    #[error("label '{label}' has only one class across the federation ({positives} positives of {rows} rows)")]
    OneClass {
        label: String,
        positives: f64,
        rows: f64,
    },
    #[error("aggregate for step {step} has {got} values, expected {expected}")]
    SumLength {
        step: u64,
        expected: usize,
        got: usize,
    },
    #[error("no participant contributed to step {step}")]
    NoContributors { step: u64 },
    #[error("training diverged in round {round}: non-finite parameters (lower the learning rate)")]
    Diverged { round: u64 },
    #[error("the job is already done: no step is in progress")]
    Finished,
    /// A state the code rules out (a cache just filled is empty, a finished stage has no
    /// model); reported rather than panicking.
    #[error("internal: {0}")]
    Internal(&'static str),

    // --- A model read from outside (a file).
    #[error("not a fedsilo model: {0}")]
    NotAModel(#[source] serde_json::Error),
    #[error("model format '{found}' is not supported (expected {expected})")]
    ModelFormat {
        found: String,
        expected: &'static str,
    },
    #[error("model is malformed: {0}")]
    BadModel(#[source] InstructionError),

    // --- The math underneath.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// An error of the model math a step ran (`fedsilo_ml`), kept typed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("logistic regression: {0}")]
    Linear(#[from] LinearError),
    #[error("MLP: {0}")]
    Mlp(#[from] MlpError),
    #[error("boosting: {0}")]
    Gbdt(#[from] GbdtError),
    #[error("scorecard: {0}")]
    Scorecard(#[from] ScorecardError),
    #[error("metrics: {0}")]
    Metrics(#[from] MetricsError),
    #[error("array shape: {0}")]
    Shape(#[from] ndarray::ShapeError),
    /// A model kind asked for an operation it does not have.
    #[error("{0}")]
    Unsupported(&'static str),
}

macro_rules! model_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for FedError {
            fn from(e: $t) -> Self {
                FedError::Model(ModelError::from(e))
            }
        }
    )*};
}
model_error_from!(
    LinearError,
    MlpError,
    GbdtError,
    ScorecardError,
    MetricsError,
    ndarray::ShapeError
);
