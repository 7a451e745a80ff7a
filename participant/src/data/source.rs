//! Where a dataset's rows come from: a CSV or Parquet file, or a PostgreSQL query.

use std::path::{Path, PathBuf};

use fedsilo_ml::table::Table;

use super::{
    load_csv, load_csv_chunks, load_parquet, load_parquet_chunks, load_postgres,
    load_postgres_chunks, DataError, Labels, Schema,
};

/// A dataset's rows: read by [`Source::load`] with the federation's schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A CSV file (the schema's `delimiter`).
    Csv(PathBuf),
    /// A Parquet file (flat columns; any row-group layout).
    Parquet(PathBuf),
    /// The result of a query (or `select * from` a table) on a PostgreSQL server.
    Postgres {
        /// `postgresql://user[:password]@host[:port]/database[?…]` or `host=… dbname=…`.
        url: String,
        query: String,
    },
}

impl Source {
    /// A file by its extension: `.parquet` / `.parq` / `.pq` is Parquet, anything else CSV.
    pub fn file(path: impl Into<PathBuf>) -> Source {
        let path = path.into();
        if is_parquet_path(&path) {
            Source::Parquet(path)
        } else {
            Source::Csv(path)
        }
    }

    /// Reads the rows into a [`Table`] by `schema`.
    pub fn load(&self, schema: &Schema) -> Result<Table, DataError> {
        match self {
            Source::Csv(p) => load_csv(p, schema),
            Source::Parquet(p) => load_parquet(p, schema),
            Source::Postgres { url, query } => load_postgres(url, query, schema),
        }
    }

    /// Streams the rows by `schema` in chunks of at most `chunk_rows` rows (at least one),
    /// `sink` getting each chunk in order; returns the number of rows. Memory is about one
    /// chunk whatever the source's size (CSV and Parquet: [`load_csv_chunks`],
    /// [`load_parquet_chunks`]; PostgreSQL: [`load_postgres_chunks`], the query's rows as
    /// the server sends them).
    pub fn load_chunks<E: From<DataError>>(
        &self,
        schema: &Schema,
        chunk_rows: usize,
        labels: Labels,
        sink: &mut dyn FnMut(Table) -> Result<(), E>,
    ) -> Result<usize, E> {
        match self {
            Source::Csv(p) => load_csv_chunks(p, schema, chunk_rows, labels, sink),
            Source::Parquet(p) => load_parquet_chunks(p, schema, chunk_rows, labels, sink),
            Source::Postgres { url, query } => {
                load_postgres_chunks(url, query, schema, chunk_rows, labels, sink)
            }
        }
    }
}

/// Whether a file name says Parquet (`.parquet`, `.parq`, `.pq`, any case).
pub fn is_parquet_path(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["parquet", "parq", "pq"]
            .iter()
            .any(|p| e.eq_ignore_ascii_case(p))
    })
}

/// Loads a CSV or Parquet file (by its extension, [`Source::file`]) by `schema`.
pub fn load_file(path: &Path, schema: &Schema) -> Result<Table, DataError> {
    Source::file(path).load(schema)
}
