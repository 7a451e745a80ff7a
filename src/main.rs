//! `fedsilo`: federated credit-risk and propensity modelling under secure aggregation.
//!
//! One binary, one subcommand per role: `simulate` (regulators), `coordinator serve` and
//! `job ...` (operators), `participant join` and `score` (institutions), `keygen` and
//! `audit verify`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use fedsilo_coordinator::engine::RoundSummary;
use fedsilo_coordinator::service::{serve, ServiceConfig};
use fedsilo_participant::data::{load_csv, Schema};
use fedsilo_participant::node::{self, NodeConfig};
use fedsilo_proto::pb;
use fedsilo_proto::pb::operator_client::OperatorClient;
use fedsilo_proto::tls::{client_tls_config, TlsFiles};
use fedsilo_simulations::run::{run_scenario, Transport};
use fedsilo_simulations::scenario::Scenario;
use fedsilo_task::{JobSpec, ModelArtifact};
use serde::Deserialize;

/// `fedsilo --version`: the version and the Paillier backend of vertical jobs this binary
/// was built with (`--no-default-features --features gmp` for GMP).
const VERSION: &str = if cfg!(feature = "gmp") {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (vertical jobs' Paillier on GMP)"
    )
} else {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (vertical jobs' Paillier on pure-Rust num-bigint; GMP: --no-default-features --features gmp)"
    )
};

#[derive(Parser, Debug)]
#[command(name = "fedsilo", version = VERSION, about = "Federated training of credit-risk and propensity models under secure aggregation", long_about = None)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `fedsilo_coordinator=debug`.
    #[arg(long, global = true, env = "FEDSILO_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a whole federation on this machine from a scenario file and write a report.
    Simulate {
        /// Scenario file (see simulations/scenarios/).
        scenario: PathBuf,
        /// Directory for report.json, report.html, audit.jsonl and the models.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// In-memory (fast, thousands of participants) or real gRPC with mutual TLS on loopback.
        #[arg(long, value_enum, default_value_t = TransportArg::Memory)]
        transport: TransportArg,
    },
    /// Coordinator commands.
    Coordinator {
        #[command(subcommand)]
        command: CoordinatorCmd,
    },
    /// Participant-node commands.
    Participant {
        #[command(subcommand)]
        command: ParticipantCmd,
    },
    /// Operator commands: launch and follow training jobs on a running coordinator.
    Job {
        #[command(subcommand)]
        command: JobCmd,
    },
    /// Create identity keys, a CA and certificates for a test federation, plus example configs.
    Keygen {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Comma-separated institution names.
        #[arg(long, value_delimiter = ',', required = true)]
        institutions: Vec<String>,
        /// Host names / IPs the coordinator's certificate is valid for.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        hosts: Vec<String>,
        /// Address the example configs point at.
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: String,
        /// Key type of the TLS certificates (the SecAgg+ identity keys are Ed25519 always).
        /// ECDSA P-256 works with every gRPC stack; BoringSSL-based clients (grpcio)
        /// refuse Ed25519 certificates.
        #[arg(long, value_enum, default_value_t = KeyTypeArg::EcdsaP256)]
        key_type: KeyTypeArg,
        /// Replace the federation already in --out (its CA, every key and the configs).
        #[arg(long)]
        force: bool,
        /// Address of the coordinator's operations listener (dashboard, /metrics,
        /// /healthz), written to coordinator.toml's [ops]; without it [ops] is written
        /// commented out. The dashboard token goes to dashboard.token either way.
        #[arg(long, value_name = "ADDR")]
        ops_listen: Option<std::net::SocketAddr>,
    },
    /// Score a CSV or Parquet file locally with an exported model; writes a ranked list (best
    /// first), as CSV or Parquet: rank, the schema's id column (`row` = data-row number
    /// without one), probability, decile, scorecard points, and the file's label columns (0/1,
    /// empty/NULL when missing) when it has them. Equal probabilities are ordered by id (byte
    /// order), then by position in the file, so a cut-off at N keeps exactly N rows and the
    /// same rows every time. The file is streamed; memory stays bounded for any file size.
    ///
    /// With a vertical model (the active party's `<state_dir>/vertical/<job>.json`) the
    /// scoring is a federated job instead: `--config` (the operator's config) and `--psi-job`
    /// (a finished PSI job that aligned the customers to score) launch a `vertical_score`
    /// job; each party scores its part of every aligned customer, only the active party
    /// learns the scores, and its node writes the ranked list, copied here to `--out`.
    Score {
        /// Model exported by `fedsilo job model` or a simulation, or a vertical job's model
        /// file at the active party.
        #[arg(long)]
        model: PathBuf,
        /// Customers to score: a CSV file, or Parquet (.parquet, .parq, .pq). Not with a
        /// vertical model (the parties' PSI-aligned rows are scored).
        #[arg(long, required_unless_present = "psi_job")]
        data: Option<PathBuf>,
        /// Schema of the data (labels in it are optional when scoring).
        #[arg(long, required_unless_present = "psi_job")]
        schema: Option<PathBuf>,
        /// Vertical model: the operator config (coordinator address, TLS) to launch with.
        #[arg(long, requires = "psi_job", conflicts_with_all = ["data", "schema"])]
        config: Option<PathBuf>,
        /// Vertical model: the finished PSI job (delivery = "both", the model's two parties)
        /// whose aligned customers are scored.
        #[arg(long, requires = "config")]
        psi_job: Option<String>,
        /// Output file (one file per product for multi-product models: <stem>-<label>.<ext>).
        #[arg(long, default_value = "ranked.csv")]
        out: PathBuf,
        /// Output format; by default by --out's extension (.parquet/.parq/.pq: Parquet, else
        /// CSV). Parquet columns: rank INT64, id UTF8, score DOUBLE, decile INT32, points
        /// DOUBLE (scorecards), labels nullable DOUBLE.
        #[arg(long, value_enum)]
        format: Option<ScoreFormat>,
        /// Keep only the top N customers of each ranking (the contact list); N ≥ 1.
        #[arg(long, value_parser = parse_top, conflicts_with = "top_fraction")]
        top: Option<usize>,
        /// Keep the top fraction of each ranking: ⌈fraction × rows⌉ customers, 0 < fraction ≤ 1
        /// (0.3 = the 30 % intent list).
        #[arg(long, value_parser = parse_fraction)]
        top_fraction: Option<f64>,
    },
    /// Evaluate a model on labelled data: AUC, KS, log-loss, the lift table and calibration
    /// by decile, per label; prints the table and writes evaluation.json and a
    /// self-contained evaluation.html (ROC, KS, gains, lift and calibration charts).
    Evaluate {
        /// Model exported by `fedsilo job model` or a simulation.
        #[arg(long)]
        model: PathBuf,
        /// Labelled customers (e.g. a fixed test set), CSV.
        #[arg(long)]
        data: PathBuf,
        /// Schema of the CSV; it must declare the model's labels.
        #[arg(long)]
        schema: PathBuf,
        /// Directory for evaluation.json and evaluation.html.
        #[arg(long, default_value = "evaluation")]
        out: PathBuf,
    },
    /// Audit-log commands.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Inspect an exported model file.
    Model {
        #[command(subcommand)]
        command: ModelCmd,
    },
    /// Schema commands: draft one from a data file.
    Schema {
        #[command(subcommand)]
        command: SchemaCmd,
    },
}

#[derive(Subcommand, Debug)]
enum SchemaCmd {
    /// Draft a schema from a CSV or Parquet file (one streaming pass): types, categories by
    /// frequency (the rest in an `other` bucket), missing tokens, the id column, the CSV
    /// delimiter, and a comment per column with what was seen. Review it before use.
    Infer {
        /// The data file (`.parquet` / `.pq` is read as Parquet, anything else as CSV).
        data: PathBuf,
        /// The label column (a training schema); without it, a scoring schema.
        #[arg(long)]
        label: Option<String>,
        /// The label's positive value(s), comma-separated; default: the true word of a
        /// boolean label, or 1 of a 0/1 label.
        #[arg(long, value_delimiter = ',')]
        positive: Vec<String>,
        /// Categories listed per feature; rarer values go to `<feature>=other`.
        #[arg(long, default_value_t = fedsilo_participant::data::infer::DEFAULT_MAX_CATEGORIES)]
        max_categories: usize,
        /// The customer-id column (default: guessed, e.g. an all-distinct `customer_id`).
        #[arg(long)]
        id_column: Option<String>,
        /// The CSV field separator (default: sniffed among , ; tab |).
        #[arg(long)]
        delimiter: Option<char>,
        /// Write the schema here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ModelCmd {
    /// Print what a model file holds: job, round hash, metrics, coefficients, and for a
    /// scorecard the points table (feature, bin, WOE, points).
    Show {
        /// Model exported by `fedsilo job model` or a simulation (model-<job>.json).
        #[arg(long)]
        model: PathBuf,
        /// Also write a scorecard's table as CSV (feature,bin,woe,points).
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Write a model for the bank's own systems: a SQL query over its customer table
    /// (logistic regression, scorecard, GBDT; the probabilities `fedsilo score` gives) or a
    /// PMML 4.4 document (logistic regression as RegressionModel, scorecard as Scorecard).
    /// MLPs are refused (score them with `fedsilo score`).
    Export {
        /// Model exported by `fedsilo job model` or a simulation.
        #[arg(long)]
        model: PathBuf,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Schema of the data (maps the model's columns to the table's raw columns).
        #[arg(long)]
        schema: PathBuf,
        /// SQL: the table (or view) holding the customers, as written in the query.
        #[arg(long, required_if_eq("format", "sql"))]
        table: Option<String>,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    Sql,
    Pmml,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum ScoreFormat {
    Csv,
    Parquet,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum KeyTypeArg {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl From<KeyTypeArg> for fedsilo_proto::pki::KeyType {
    fn from(k: KeyTypeArg) -> Self {
        use fedsilo_proto::pki::KeyType;
        match k {
            KeyTypeArg::EcdsaP256 => KeyType::EcdsaP256,
            KeyTypeArg::EcdsaP384 => KeyType::EcdsaP384,
            KeyTypeArg::Ed25519 => KeyType::Ed25519,
        }
    }
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum TransportArg {
    Memory,
    Grpc,
}

#[derive(Subcommand, Debug)]
enum CoordinatorCmd {
    /// Create a fresh, empty state (store, audit log, marker) in the config's state_dir.
    /// Refuses a directory that already holds state.
    Init {
        #[arg(long)]
        config: PathBuf,
    },
    /// Serve the Federation and Operator gRPC services (mutual TLS). Refuses to start on an
    /// uninitialised state directory, or one whose store or audit log was lost or damaged.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Create a fresh state first (as `coordinator init`); refused if state exists.
        #[arg(long)]
        init: bool,
        /// Export a span per job round, with a child span per SecAgg phase, over OTLP/gRPC
        /// to this OpenTelemetry collector (e.g. `http://otel-collector:4317`).
        #[arg(long, env = "FEDSILO_OTLP_ENDPOINT", value_name = "URL")]
        otlp_endpoint: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ParticipantCmd {
    /// Connect to the coordinator and take part in training jobs with local data.
    Join {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum JobCmd {
    /// Launch a job described by a TOML job spec: a training job, or with `kind = "psi"` a
    /// private set intersection job (active party, passive parties, id column and format).
    Launch {
        #[arg(long)]
        config: PathBuf,
        /// Job spec (TOML): dataset, model, rounds, participants, learning settings...
        #[arg(long)]
        spec: PathBuf,
        /// Schema of the dataset, to resolve an empty feature or label list.
        #[arg(long)]
        schema: Option<PathBuf>,
    },
    /// Show one job.
    Status {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        job: String,
        /// Keep printing until the job ends.
        #[arg(long)]
        follow: bool,
    },
    /// List every job.
    List {
        #[arg(long)]
        config: PathBuf,
    },
    /// Cancel a job: its round in flight is abandoned and participants are told; the job can
    /// be resumed later (`job resume`).
    Cancel {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        job: String,
        /// Why (recorded in the job's detail with the operator's name).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a failed or cancelled job from its last checkpoint, with its failure budget
    /// and absence patience reset; it waits until enough participants are present.
    Resume {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        job: String,
    },
    /// Download a job's model (JSON).
    Model {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        job: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Check the hash chain; names the first broken entry. With --store, also check the log
    /// against the head the coordinator's store recorded (a cut tail or a replaced log).
    Verify {
        /// The audit log (JSON Lines), e.g. coordinator-state/audit.jsonl.
        #[arg(value_name = "AUDIT_LOG")]
        file: PathBuf,
        /// The coordinator's store, e.g. coordinator-state/coordinator.redb (the coordinator
        /// must be stopped: the store is locked while it runs).
        #[arg(long, value_name = "STORE")]
        store: Option<PathBuf>,
    },
}

/// `coordinator.toml`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoordinatorConfig {
    listen: std::net::SocketAddr,
    state_dir: PathBuf,
    roster: PathBuf,
    tls: TlsSection,
    /// Connection, request and poll limits; every key optional.
    #[serde(default)]
    limits: fedsilo_coordinator::net::Limits,
    /// The operations listener (dashboard, /metrics, /healthz); not served when absent.
    #[serde(default)]
    ops: Option<OpsSection>,
}

/// `[ops]` of `coordinator.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpsSection {
    listen: std::net::SocketAddr,
    /// File holding the bearer token for browsers and scrapers (`fedsilo keygen` writes
    /// `dashboard.token`); without it only operators' client certificates are let in.
    #[serde(default)]
    token_file: Option<PathBuf>,
}

/// `operator.toml`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorConfig {
    coordinator: String,
    #[serde(default = "localhost")]
    tls_domain: String,
    tls: TlsSection,
    /// How long to wait for a connection to the coordinator (TCP, TLS and HTTP/2);
    /// default [`OPERATOR_CONNECT_TIMEOUT`].
    #[serde(default)]
    connect_timeout_ms: Option<u64>,
    /// How long to wait for each answer; default [`OPERATOR_REQUEST_TIMEOUT`].
    #[serde(default)]
    request_timeout_ms: Option<u64>,
}

/// How long an operator command waits to be connected to the coordinator.
const OPERATOR_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an operator command waits for each answer of the coordinator.
const OPERATOR_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// `--top`: a whole number of customers, at least 1.
fn parse_top(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (the number of customers to keep)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a whole number of customers")),
    }
}

/// `--top-fraction`: a share of the ranking in (0, 1].
fn parse_fraction(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        Ok(f) => Err(format!(
            "{f} is not in (0, 1]: give the share of customers to keep, e.g. 0.3 for 30 %"
        )),
        Err(_) => Err(format!("'{s}' is not a number (e.g. 0.3 for 30 %)")),
    }
}

fn localhost() -> String {
    "localhost".into()
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Every TOML file the binary reads goes through the strict loader: an unknown key is
/// refused with the file, line, column and the nearest valid key.
fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    Ok(fedsilo_config::load_toml(path)?)
}

fn tls_files(base: &Path, t: &TlsSection) -> TlsFiles {
    TlsFiles {
        ca_cert: resolve(base, &t.ca),
        cert: resolve(base, &t.cert),
        key: resolve(base, &t.key),
    }
}

/// Standard output closed by its reader (`fedsilo job list | head -1`): the command stops
/// printing and exits successfully, as `cat` would.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `text` to standard output; a closed pipe becomes [`StdoutClosed`].
fn print_all(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        r => r.context("writing to standard output"),
    }
}

/// `println!` that returns an error instead of panicking (see [`print_all`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        print_all(&format!("{}\n", format_args!($($arg)*)))
    };
}

mod cli;
mod otlp;
use cli::local::*;
use cli::operator::job;

/// Listens for Ctrl-C (SIGINT) and SIGTERM from now on (call it inside the runtime, before
/// the work starts, so a signal is never lost to the default action); the future resolves on the
/// first of them, logs which, and returns its name.
fn shutdown_signal() -> Result<impl std::future::Future<Output = &'static str>> {
    #[cfg(unix)]
    let wait = {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        async move {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        }
    };
    #[cfg(not(unix))]
    let wait = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        }
    };
    Ok(async move {
        let name = wait.await;
        tracing::info!(signal = name, "shutting down on {name}");
        eprintln!("shutting down on {name}: finishing the write in progress");
        name
    })
}

fn main() -> std::process::ExitCode {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        );
    // The round spans' OTLP exporter, for `coordinator serve --otlp-endpoint` only; it is
    // flushed and stopped after the command returns.
    let endpoint = match &cli.command {
        Command::Coordinator {
            command: CoordinatorCmd::Serve { otlp_endpoint, .. },
        } => otlp_endpoint.as_deref(),
        _ => None,
    };
    let (spans, exporter) = match endpoint.map(otlp::layer::<tracing_subscriber::Registry>) {
        None => (None, None),
        Some(Ok((layer, exporter))) => (Some(layer), Some(exporter)),
        Some(Err(e)) => {
            eprintln!("error: {}", fedsilo_config::display_chain(e.as_ref()));
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing_subscriber::registry().with(spans).with(logs).init();
    let code = match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<StdoutClosed>().is_some() => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // the chain, each cause once (many errors embed their source's text)
            eprintln!("error: {}", fedsilo_config::display_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    };
    drop(exporter);
    code
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Simulate {
            scenario,
            out,
            transport,
        } => simulate(&scenario, &out, transport),
        Command::Coordinator {
            command: CoordinatorCmd::Init { config },
        } => {
            let svc = coordinator_config(&config)?;
            coordinator_init(&svc.state_dir)
        }
        Command::Coordinator {
            command: CoordinatorCmd::Serve { config, init, .. },
        } => {
            let svc = coordinator_config(&config)?;
            if init {
                coordinator_init(&svc.state_dir)?;
            }
            runtime()?.block_on(async {
                let signal = shutdown_signal()?;
                eprintln!(
                    "coordinator starting on {} (state in {})",
                    svc.listen,
                    svc.state_dir.display()
                );
                serve(svc, async {
                    signal.await;
                })
                .await
                .context("coordinator")
            })?;
            eprintln!("coordinator stopped; state closed");
            Ok(())
        }
        Command::Participant {
            command: ParticipantCmd::Join { config },
        } => {
            let cfg = NodeConfig::load(&config)?;
            let worker = node::build_worker(&cfg)?;
            runtime()?.block_on(async {
                let signal = shutdown_signal()?;
                eprintln!("{} joining {}", cfg.name, cfg.coordinator);
                node::run_until(cfg, worker, async {
                    signal.await;
                })
                .await
                .context("participant")
            })
        }
        Command::Job { command } => runtime()?.block_on(job(command)),
        Command::Keygen {
            out,
            institutions,
            hosts,
            listen,
            key_type,
            force,
            ops_listen,
        } => keygen(
            &out,
            &institutions,
            &hosts,
            &listen,
            key_type.into(),
            force,
            ops_listen,
        ),
        Command::Score {
            model,
            data,
            schema,
            config,
            psi_job,
            out,
            top,
            top_fraction,
            format,
        } => match (data, schema, config, psi_job) {
            (None, None, Some(config), Some(psi_job)) => {
                runtime()?.block_on(cli::vertical::score(cli::vertical::ScoreRequest {
                    model: &model,
                    config: &config,
                    psi_job: &psi_job,
                    out: &out,
                    top,
                    top_fraction,
                    parquet: matches!(format, Some(ScoreFormat::Parquet)),
                }))
            }
            (Some(data), Some(schema), None, None) => {
                if cli::vertical::is_vertical_model(&model) {
                    bail!(
                        "{} is a vertical model: it scores as a federated job, with --config                          (the operator config) and --psi-job (the PSI job that aligned the                          customers), not from a local --data file",
                        model.display()
                    );
                }
                score(&model, &data, &schema, &out, top, top_fraction, format)
            }
            _ => bail!(
                "score: give --data and --schema (a model scored here), or --config and                  --psi-job (a vertical model, scored as a federated job)"
            ),
        },
        Command::Evaluate {
            model,
            data,
            schema,
            out,
        } => cli::evaluate::evaluate(&model, &data, &schema, &out),
        Command::Model {
            command: ModelCmd::Show { model, csv },
        } => model_show(&model, csv.as_deref()),
        Command::Model {
            command:
                ModelCmd::Export {
                    model,
                    format,
                    schema,
                    table,
                    out,
                },
        } => model_export(&model, format, &schema, table.as_deref(), out.as_deref()),
        Command::Audit {
            command: AuditCmd::Verify { file, store },
        } => audit_verify(&file, store.as_deref()),
        Command::Schema {
            command:
                SchemaCmd::Infer {
                    data,
                    label,
                    positive,
                    max_categories,
                    id_column,
                    delimiter,
                    out,
                },
        } => cli::schema::schema_infer(
            &data,
            &fedsilo_participant::data::infer::InferOptions {
                label,
                positive,
                max_categories,
                id_column,
                delimiter,
            },
            out.as_deref(),
        ),
    }
}
