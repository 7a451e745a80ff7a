//! A PostgreSQL query's result as a [`Table`]: `COPY (query) TO STDOUT (FORMAT csv, HEADER)`
//! streamed through the CSV reader (rows arrive as the server sends them; nothing holds the
//! result twice), so every schema rule reads the text PostgreSQL prints (NULL → an empty,
//! missing cell; booleans `t`/`f`). Errors name the server, the query and the row.
//!
//! The connection is plain TCP or a Unix socket (`host=/run/postgresql`); TLS is not built
//! in, so a URL asking for `sslmode=require` is refused by the driver when it connects.

use std::time::Duration;

use fedsilo_ml::table::Table;

use super::csv::{read_chunks_counted, read_counted, Count, Labels};
use super::{DataError, Schema};

/// How long a connection attempt may take unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `query` (a `SELECT …`, or a bare table name such as `customers` or
/// `bank.customers`) on the server at `url` and reads its result by `schema`.
pub fn load_postgres(url: &str, query: &str, schema: &Schema) -> Result<Table, DataError> {
    with_copy_reader(url, query, schema, |reader, source_name, schema| {
        read_counted(reader, source_name, schema, None, Count::Rows)
    })
}

/// Streams the result of `query` on the server at `url` by `schema` in chunks of at most
/// `chunk_rows` rows (at least one), as [`super::load_csv_chunks`] streams a file: `sink`
/// gets each chunk in the order the server sends the rows (on the caller's thread), the row
/// count is returned. Memory is the chunk being filled and at most one more waiting for
/// `sink`, whatever the result's size. An error from `sink` stops the query and is returned.
pub fn load_postgres_chunks<E: From<DataError>>(
    url: &str,
    query: &str,
    schema: &Schema,
    chunk_rows: usize,
    labels: Labels,
    sink: &mut dyn FnMut(Table) -> Result<(), E>,
) -> Result<usize, E> {
    /// Why the reading thread stopped early: the data, or the caller no longer listening.
    enum Stop {
        Data(Box<DataError>),
        Hung,
    }
    impl From<DataError> for Stop {
        fn from(e: DataError) -> Self {
            Stop::Data(Box::new(e))
        }
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Table>(1);
    let mut sink_error = None;
    let read = std::thread::scope(|s| {
        let reading = s.spawn(move || {
            with_copy_reader(url, query, schema, |reader, source_name, schema| {
                let r = read_chunks_counted(
                    reader,
                    source_name,
                    schema,
                    Count::Rows,
                    chunk_rows,
                    labels,
                    &mut |t| tx.send(t).map_err(|_| Stop::Hung),
                );
                match r {
                    Ok(n) => Ok(Ok(n)),
                    Err(Stop::Data(e)) => Err(*e),
                    Err(Stop::Hung) => Ok(Err(())),
                }
            })
        });
        for t in rx.iter() {
            if let Err(e) = sink(t) {
                sink_error = Some(e);
                break;
            }
        }
        drop(rx);
        reading.join()
    });
    if let Some(e) = sink_error {
        return Err(e);
    }
    let source_name = || describe_url(url, query);
    match read {
        Ok(Ok(Ok(n))) => Ok(n),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(Err(()))) => Err(DataError::Internal {
            source_name: source_name(),
            what: "the PostgreSQL chunk reader stopped without an error",
        }
        .into()),
        Err(_) => Err(DataError::Internal {
            source_name: source_name(),
            what: "the PostgreSQL reader thread panicked",
        }
        .into()),
    }
}

/// Connects to `url`, starts `COPY (query) TO STDOUT` and hands its CSV text to `read` (with
/// the name errors use and the schema as COPY prints it), on a thread of its own.
fn with_copy_reader<T: Send>(
    url: &str,
    query: &str,
    schema: &Schema,
    read: impl FnOnce(&mut dyn std::io::Read, &str, &Schema) -> Result<T, DataError> + Send,
) -> Result<T, DataError> {
    let config = parse_config(url)?;
    let sql = copy_statement(query);
    let source_name = describe(&config, query);
    // The sync driver runs its own runtime; a thread of its own keeps it out of any async
    // context the caller may be in.
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut client =
                config
                    .connect(postgres::NoTls)
                    .map_err(|source| DataError::Postgres {
                        source_name: source_name.clone(),
                        what: "cannot connect",
                        source,
                    })?;
            let mut reader =
                client
                    .copy_out(sql.as_str())
                    .map_err(|source| DataError::Postgres {
                        source_name: source_name.clone(),
                        what: "the query failed",
                        source,
                    })?;
            // COPY prints commas whatever the schema's file delimiter is.
            let schema = Schema {
                delimiter: ',',
                ..schema.clone()
            };
            read(&mut reader, &source_name, &schema)
        })
        .join()
        .map_err(|_| DataError::Internal {
            source_name: source_name.clone(),
            what: "the PostgreSQL reader thread panicked",
        })?
    })
}

fn parse_config(url: &str) -> Result<postgres::Config, DataError> {
    let mut config: postgres::Config = url.parse().map_err(|source| DataError::Postgres {
        source_name: format!("postgres connection string '{}'", redact(url)),
        what: "not a valid connection string",
        source,
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

/// [`describe`] from the connection string (its redacted form when it does not parse).
fn describe_url(url: &str, query: &str) -> String {
    match url.parse::<postgres::Config>() {
        Ok(c) => describe(&c, query),
        Err(_) => format!("postgres connection string '{}'", redact(url)),
    }
}

/// `COPY (<query>) TO STDOUT …`; a bare (possibly schema-qualified) table name is read whole.
fn copy_statement(query: &str) -> String {
    let q = query.trim().trim_end_matches(';').trim_end();
    let is_name = !q.is_empty()
        && q.split('.').all(|part| {
            let mut c = part.chars();
            c.next().is_some_and(|f| f.is_alphabetic() || f == '_')
                && c.all(|ch| ch.is_alphanumeric() || ch == '_')
        });
    let select = if is_name {
        let quoted: Vec<String> = q
            .split('.')
            .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
            .collect();
        format!("SELECT * FROM {}", quoted.join("."))
    } else {
        q.to_string()
    };
    format!("COPY ({select}) TO STDOUT WITH (FORMAT csv, HEADER true)")
}

/// `postgres user@host:port/db query 'select …'`, never the password.
fn describe(config: &postgres::Config, query: &str) -> String {
    use postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    let mut q: String = query.trim().chars().take(80).collect();
    if query.trim().chars().count() > 80 {
        q.push('…');
    }
    format!("postgres {user}@{host}:{port}/{db} query '{q}'")
}

/// A connection string without its password (for messages about the string itself).
fn redact(url: &str) -> String {
    // URL form: scheme://user:password@host…
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((cred, host)) = rest.split_once('@') {
            if let Some((user, _)) = cred.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
        return url.to_string();
    }
    // key=value form
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_statement_wraps_queries_and_quotes_table_names() {
        assert_eq!(
            copy_statement("select a from t;  "),
            "COPY (select a from t) TO STDOUT WITH (FORMAT csv, HEADER true)"
        );
        assert_eq!(
            copy_statement("bank.Customers"),
            "COPY (SELECT * FROM \"bank\".\"Customers\") TO STDOUT WITH (FORMAT csv, HEADER true)"
        );
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgresql://ana:s3cret@db:5432/x"),
            "postgresql://ana:***@db:5432/x"
        );
        assert_eq!(
            redact("host=db password=s3cret dbname=x"),
            "host=db password=*** dbname=x"
        );
        let c: postgres::Config = "postgresql://ana:s3cret@db:6000/bank".parse().unwrap();
        let d = describe(&c, "select 1");
        assert_eq!(d, "postgres ana@db:6000/bank query 'select 1'");
    }
}
