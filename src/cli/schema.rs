//! `fedsilo schema infer`: a schema drafted from a CSV or Parquet file.

use crate::*;
use fedsilo_participant::data::infer::{infer_file, InferOptions};

pub(crate) fn schema_infer(data: &Path, opts: &InferOptions, out: Option<&Path>) -> Result<()> {
    let drafted = infer_file(data, opts).context("schema infer")?;
    for note in &drafted.notes {
        eprintln!("note: {note}");
    }
    match out {
        Some(path) => {
            std::fs::write(path, &drafted.toml)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "schema for {} written to {}: {} feature(s) ({} encoded columns), {} label(s)",
                data.display(),
                path.display(),
                drafted.schema.features.len(),
                drafted.schema.n_feature_columns(),
                drafted.schema.labels.len()
            );
            Ok(())
        }
        None => print_all(&drafted.toml),
    }
}
