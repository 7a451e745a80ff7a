//! The job spec (`fedsilo_task::JobSpec`).
