//! fedsilo participant node: holds an institution's data and trains on it locally.
#![forbid(unsafe_code)]

pub mod data;
