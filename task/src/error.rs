//! Errors of the federated task layer.

use crate::validate::InstructionError;

/// Errors of the federated task layer, sorted by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum FedError {
    #[error("job spec: {0}")]
    Spec(String),
    #[error("local data: {0}")]
    Data(String),
    #[error("aggregate for step {step} has {got} values, expected {expected}")]
    SumLength {
        step: u64,
        expected: usize,
        got: usize,
    },
    #[error("the job is already done: no step is in progress")]
    Finished,
    #[error("no participant contributed to step {step}")]
    NoContributors { step: u64 },
    #[error("instruction refused: {0}")]
    Instruction(#[from] InstructionError),
    #[error("model: {0}")]
    Model(String),
    /// A model read from outside (a file) is malformed.
    #[error("model is malformed: {0}")]
    BadModel(#[source] InstructionError),
    #[error("logistic regression: {0}")]
    Linear(#[from] fedsilo_ml::linear::LinearError),
    #[error("MLP: {0}")]
    Mlp(#[from] fedsilo_ml::mlp::MlpError),
}
