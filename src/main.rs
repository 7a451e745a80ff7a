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

#[derive(Parser, Debug)]
#[command(name = "fedsilo", version, about = "Federated training of credit-risk and propensity models under secure aggregation", long_about = None)]
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
    },
    /// Score a CSV locally with an exported model; writes a ranked list (best first).
    Score {
        /// Model exported by `fedsilo job model` or a simulation.
        #[arg(long)]
        model: PathBuf,
        /// Customers to score.
        #[arg(long)]
        data: PathBuf,
        /// Schema of the CSV (labels in it are optional when scoring).
        #[arg(long)]
        schema: PathBuf,
        /// Output CSV (one file per product for multi-product models: <stem>-<label>.csv).
        #[arg(long, default_value = "ranked.csv")]
        out: PathBuf,
        /// Keep only the top N customers of each ranking (the whitelist).
        #[arg(long)]
        top: Option<usize>,
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
    /// Launch a training job described by a TOML job spec.
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
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<StdoutClosed>().is_some() => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
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
            command: CoordinatorCmd::Serve { config, init },
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
        } => keygen(&out, &institutions, &hosts, &listen, key_type.into(), force),
        Command::Score {
            model,
            data,
            schema,
            out,
            top,
        } => score(&model, &data, &schema, &out, top),
        Command::Model {
            command: ModelCmd::Show { model, csv },
        } => model_show(&model, csv.as_deref()),
        Command::Audit {
            command: AuditCmd::Verify { file, store },
        } => audit_verify(&file, store.as_deref()),
    }
}

fn coordinator_config(config: &Path) -> Result<ServiceConfig> {
    let cfg: CoordinatorConfig = read_toml(config)?;
    let base = config.parent().unwrap_or(Path::new("."));
    Ok(ServiceConfig {
        listen: cfg.listen,
        state_dir: resolve(base, &cfg.state_dir),
        roster: resolve(base, &cfg.roster),
        tls: tls_files(base, &cfg.tls),
        limits: cfg.limits,
        observer: None,
    })
}

fn coordinator_init(state_dir: &Path) -> Result<()> {
    use fedsilo_coordinator::state::{init, Initialised};
    match init(state_dir).context("coordinator init")? {
        Initialised::Created => eprintln!(
            "coordinator state created in {} (empty store, empty audit log)",
            state_dir.display()
        ),
        Initialised::Adopted { jobs, audit } => eprintln!(
            "coordinator state in {} adopted: {jobs} job(s), audit log {audit}",
            state_dir.display()
        ),
    }
    Ok(())
}

fn audit_verify(file: &Path, store: Option<&Path>) -> Result<()> {
    match store {
        None => {
            let s = fedsilo_coordinator::audit::verify(file)
                .with_context(|| format!("audit log {}", file.display()))?;
            outln!(
                "{}: {} entries, chain intact, head {} (tail not checked: pass --store to compare with the store's record)",
                file.display(),
                s.entries,
                s.head
            )
        }
        Some(store) => {
            let (s, recorded) = fedsilo_coordinator::state::verify_store_and_log(store, file)
                .with_context(|| {
                    format!("audit log {} against {}", file.display(), store.display())
                })?;
            outln!(
                "{}: {} entries, chain intact, head {}; the store {} recorded {recorded}: consistent",
                file.display(),
                s.entries,
                s.head,
                store.display()
            )
        }
    }
}

fn simulate(scenario: &Path, out: &Path, transport: TransportArg) -> Result<()> {
    let s = Scenario::load(scenario)?;
    let transport = match transport {
        TransportArg::Memory => Transport::Memory,
        TransportArg::Grpc => Transport::Grpc,
    };
    let expected: u64 = s
        .jobs
        .iter()
        .map(|j| 2 + j.rounds + j.rounds.div_ceil(j.eval_every.max(1)))
        .sum();
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let b = indicatif::ProgressBar::new(expected);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} rounds  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    eprintln!(
        "simulating '{}': {} institutions, {} job(s), transport {}",
        s.name,
        s.institutions.count,
        s.jobs.len(),
        transport.name()
    );
    let mut progress = |r: &RoundSummary| {
        let total_ms: f64 = r.phase_ms.iter().map(|(_, ms)| ms).sum();
        let line = format!(
            "{} round {} ({}): {}/{} survived, {:.0} ms, {}",
            r.job_id,
            r.secagg_round,
            r.purpose,
            r.survivors.len(),
            r.participants.len(),
            total_ms,
            r.outcome
        );
        match &bar {
            Some(b) => {
                b.inc(1);
                b.set_message(line);
            }
            None => eprintln!("{line}"),
        }
    };
    let (report, json, html) = run_scenario(&s, transport, out, &mut progress)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let failed: Vec<&fedsilo_simulations::report::JobOutcome> =
        report.jobs.iter().filter(|j| !j.finished).collect();
    for m in &report.models {
        // A model of a job that did not finish, or one never evaluated, has no result to show.
        let job_failed = failed
            .iter()
            .find(|j| m.name == j.name || m.name.starts_with(&format!("{}: ", j.name)));
        if let Some(j) = job_failed {
            outln!("{:<28} no result: job {}", m.name, j.state)?;
            continue;
        }
        if !m.final_metrics.auc.is_finite() {
            outln!("{:<28} no result: the model was never evaluated", m.name)?;
            continue;
        }
        let pooled = m
            .pooled_metrics
            .as_ref()
            .filter(|p| p.auc.is_finite())
            .map(|p| format!(" (pooled {:.3})", p.auc))
            .unwrap_or_default();
        outln!(
            "{:<28} AUC {:.3}{}  KS {:.3}  top-decile lift {:.2}",
            m.name,
            m.final_metrics.auc,
            pooled,
            m.final_metrics.ks,
            m.final_metrics.top_decile_lift
        )?;
    }
    outln!(
        "{} rounds in {:.1} s; report: {} and {}",
        report.totals.rounds,
        report.totals.wall_seconds,
        html.display(),
        json.display()
    )?;
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|j| format!("'{}' ({})", j.name, j.state))
            .collect();
        bail!(
            "{} of {} job(s) did not finish: {}",
            failed.len(),
            report.jobs.len(),
            list.join("; ")
        );
    }
    Ok(())
}

/// A connection to the coordinator whose transport failures (unreachable, reset, timed
/// out) name the coordinator's address.
#[derive(Clone, Debug)]
struct Coordinator {
    channel: tonic::transport::Channel,
    addr: std::sync::Arc<str>,
    request_timeout: Duration,
}

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for Coordinator {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = tonic::Status;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, tonic::Status>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), tonic::Status>> {
        let addr = self.addr.clone();
        let timeout = self.request_timeout;
        self.channel
            .poll_ready(cx)
            .map_err(|e| unreachable_status(&addr, timeout, &e))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        let addr = self.addr.clone();
        let timeout = self.request_timeout;
        let fut = self.channel.call(req);
        Box::pin(async move {
            fut.await
                .map_err(|e| unreachable_status(&addr, timeout, &e))
        })
    }
}

/// `UNAVAILABLE` naming the coordinator's address and the whole error chain.
fn unreachable_status(
    addr: &str,
    timeout: Duration,
    e: &(dyn std::error::Error + 'static),
) -> tonic::Status {
    let detail = fedsilo_config::display_chain(e);
    tonic::Status::unavailable(format!(
        "coordinator at {addr} (request timeout {} ms): {detail}",
        timeout.as_millis()
    ))
}

async fn operator_client(config: &Path) -> Result<OperatorClient<Coordinator>> {
    let cfg: OperatorConfig = read_toml(config)?;
    let base = config.parent().unwrap_or(Path::new("."));
    let tls = client_tls_config(&tls_files(base, &cfg.tls), &cfg.tls_domain)?;
    let connect_timeout = cfg
        .connect_timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(OPERATOR_CONNECT_TIMEOUT);
    let request_timeout = cfg
        .request_timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(OPERATOR_REQUEST_TIMEOUT);
    let endpoint = tonic::transport::Endpoint::from_shared(cfg.coordinator.clone())
        .with_context(|| format!("coordinator address '{}'", cfg.coordinator))?
        .tls_config(tls)?
        .connect_timeout(connect_timeout)
        .timeout(request_timeout);
    // `connect_timeout` bounds the TCP connection only: the TLS and HTTP/2 handshakes are
    // bounded here.
    let channel = match tokio::time::timeout(connect_timeout, endpoint.connect()).await {
        Ok(r) => {
            r.with_context(|| format!("cannot reach the coordinator at {}", cfg.coordinator))?
        }
        Err(_) => bail!(
            "cannot reach the coordinator at {}: not connected within {} ms (connect_timeout_ms)",
            cfg.coordinator,
            connect_timeout.as_millis()
        ),
    };
    Ok(OperatorClient::new(Coordinator {
        channel,
        addr: cfg.coordinator.as_str().into(),
        request_timeout,
    }))
}

/// The job state of a status reply, as `fedsilo job status` prints it.
fn state_name(s: &pb::JobStatus) -> String {
    match fedsilo_proto::convert::job_state_from(s.state, "state") {
        Ok(state) => state.to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

fn is_terminal(s: &pb::JobStatus) -> bool {
    fedsilo_proto::convert::job_state_from(s.state, "state").is_ok_and(|st| st.is_terminal())
}

fn print_status(s: &pb::JobStatus) -> Result<()> {
    outln!(
        "{}  {}  round {}/{}  participants [{}]{}{}",
        s.job_id,
        state_name(s),
        s.round,
        s.total_rounds,
        s.participants.join(", "),
        if s.epsilon > 0.0 {
            format!(
                "  ε = {:.3}{}",
                s.epsilon,
                if s.epsilon_budget > 0.0 {
                    format!(" / {}", s.epsilon_budget)
                } else {
                    String::new()
                }
            )
        } else {
            String::new()
        },
        if s.detail.is_empty() {
            String::new()
        } else {
            format!("  ({})", s.detail)
        }
    )?;
    for m in &s.metrics {
        outln!(
            "  {} (round {}): AUC {:.4}  KS {:.4}  log-loss {:.4}  top-decile lift {:.2}  ({:.0} positives, {:.0} negatives)",
            m.label,
            m.round,
            m.auc,
            m.ks,
            m.log_loss,
            m.top_decile_lift,
            m.positives,
            m.negatives
        )?;
    }
    Ok(())
}

async fn job(cmd: JobCmd) -> Result<()> {
    match cmd {
        JobCmd::Launch {
            config,
            spec,
            schema,
        } => {
            let mut spec: JobSpec = read_toml(&spec)?;
            if spec.features.is_empty() || spec.labels.is_empty() || schema.is_some() {
                let Some(schema_path) = schema else {
                    bail!("the job spec lists no features or labels: pass --schema so they can be taken from the dataset's schema");
                };
                let schema = Schema::from_toml_file(&schema_path)?;
                if spec.features.is_empty() {
                    spec.features = schema.feature_columns();
                } else {
                    // Raw names (`state`) become every encoded column (`state=AK`, …);
                    // names the schema does not have are refused here, before launch.
                    spec.features = fedsilo_ml::table::expand_feature_names(
                        &spec.features,
                        &schema.feature_columns(),
                    )
                    .with_context(|| {
                        format!(
                            "checking the job's features against {}",
                            schema_path.display()
                        )
                    })?;
                }
                if let Some(l) = spec
                    .labels
                    .iter()
                    .find(|l| !schema.label_columns().contains(l))
                {
                    bail!(
                        "labels: '{l}' is not a label of {} (labels: {})",
                        schema_path.display(),
                        schema.label_columns().join(", ")
                    );
                }
                if spec.labels.is_empty() {
                    spec.labels = schema
                        .labels
                        .iter()
                        .take(1)
                        .map(|l| l.column.clone())
                        .collect();
                }
            }
            spec.validate()?;
            let mut client = operator_client(&config).await?;
            let s = client
                .launch_job(pb::LaunchJobRequest::from(&spec))
                .await
                .map_err(|s| anyhow::anyhow!("coordinator refused the job: {}", s.message()))?
                .into_inner();
            print_status(&s)?;
            Ok(())
        }
        JobCmd::Status {
            config,
            job,
            follow,
        } => {
            let mut client = operator_client(&config).await?;
            loop {
                let s = client
                    .get_job(pb::JobRef {
                        job_id: job.clone(),
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                    .into_inner();
                print_status(&s)?;
                if !follow || is_terminal(&s) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        JobCmd::List { config } => {
            let mut client = operator_client(&config).await?;
            let list = client
                .list_jobs(pb::ListJobsRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            if list.jobs.is_empty() {
                outln!("no jobs")?;
            }
            for s in &list.jobs {
                print_status(s)?;
            }
            Ok(())
        }
        JobCmd::Cancel {
            config,
            job,
            reason,
        } => {
            let mut client = operator_client(&config).await?;
            let s = client
                .cancel_job(pb::CancelJobRequest {
                    job_id: job.clone(),
                    reason,
                })
                .await
                .map_err(|s| anyhow::anyhow!("cannot cancel job '{job}': {}", s.message()))?
                .into_inner();
            print_status(&s)?;
            Ok(())
        }
        JobCmd::Resume { config, job } => {
            let mut client = operator_client(&config).await?;
            let s = client
                .resume_job(pb::JobRef {
                    job_id: job.clone(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("cannot resume job '{job}': {}", s.message()))?
                .into_inner();
            print_status(&s)?;
            Ok(())
        }
        JobCmd::Model { config, job, out } => {
            let mut client = operator_client(&config).await?;
            let m = client
                .get_model(pb::JobRef { job_id: job })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            std::fs::write(&out, m.model_json)
                .with_context(|| format!("writing {}", out.display()))?;
            outln!("model written to {}", out.display())?;
            Ok(())
        }
    }
}

fn keygen(
    out: &Path,
    institutions: &[String],
    hosts: &[String],
    listen: &str,
    key_type: fedsilo_proto::pki::KeyType,
    force: bool,
) -> Result<()> {
    use rand::SeedableRng;
    let configs = ["coordinator.toml".to_string(), "operator.toml".to_string()]
        .into_iter()
        .chain(institutions.iter().map(|n| format!("participant-{n}.toml")))
        .map(|f| out.join(f));
    if !force {
        let mut files = fedsilo_proto::pki::federation_files(out, institutions);
        files.extend(configs);
        if let Some(f) = files.iter().find(|f| f.symlink_metadata().is_ok()) {
            bail!(
                "{} already holds a federation ({} exists): keygen would replace its CA, every key and the configs. \
                 Pass --force to overwrite it, or choose another --out",
                out.display(),
                f.display()
            );
        }
    }
    let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
    let options = fedsilo_proto::pki::FederationOptions {
        key_type,
        overwrite: force,
    };
    fedsilo_proto::pki::generate_federation_with(out, institutions, hosts, options, &mut rng)
        .with_context(|| format!("generating the federation in {}", out.display()))?;
    let coord = format!(
        "listen = \"{listen}\"\nstate_dir = \"coordinator-state\"\nroster = \"roster.toml\"\n\n[tls]\nca = \"ca.pem\"\ncert = \"coordinator.pem\"\nkey = \"coordinator.key\"\n"
    );
    std::fs::write(out.join("coordinator.toml"), coord)?;
    let url = format!(
        "https://localhost:{}",
        listen.rsplit(':').next().unwrap_or("50051")
    );
    let op = format!(
        "coordinator = \"{url}\"\ntls_domain = \"localhost\"\n\n[tls]\nca = \"ca.pem\"\ncert = \"operator.pem\"\nkey = \"operator.key\"\n"
    );
    std::fs::write(out.join("operator.toml"), op)?;
    for name in institutions {
        let p = format!(
            "name = \"{name}\"\ncoordinator = \"{url}\"\ntls_domain = \"localhost\"\nidentity = \"{name}.identity\"\nroster = \"roster.toml\"\nholdout_fraction = 0.2\n\n[tls]\nca = \"ca.pem\"\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\n\n# Local data: edit the paths (relative to this file).\n[[datasets]]\nname = \"credit\"\ncsv = \"credit.csv\"\nschema = \"credit_data.schema.toml\"\n"
        );
        std::fs::write(out.join(format!("participant-{name}.toml")), p)?;
    }
    outln!(
        "federation for {} institution(s) written to {} ({key_type} certificates): ca.pem, coordinator.*, operator.*, <name>.pem/.key/.identity, roster.toml and example configs\nnext: fedsilo coordinator init --config {}",
        institutions.len(),
        out.display(),
        out.join("coordinator.toml").display()
    )
}

fn score(model: &Path, data: &Path, schema: &Path, out: &Path, top: Option<usize>) -> Result<()> {
    let artifact = read_model(model)?;
    let schema = Schema::from_toml_file(schema)?;
    let schema = schema.for_scoring();
    let table = load_csv(data, &schema)?;
    let written = fedsilo_participant::score::write_rankings(&artifact.model, &table, out, top)?;
    for (label, path, n) in written {
        outln!("{label}: {n} customers ranked in {}", path.display())?;
    }
    Ok(())
}

/// An exported model file (`fedsilo job model` or a simulation), errors naming the file.
fn read_model(path: &Path) -> Result<ModelArtifact> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ModelArtifact::from_json(&text).with_context(|| format!("model {}", path.display()))
}

fn model_show(model: &Path, csv: Option<&Path>) -> Result<()> {
    use std::fmt::Write as _;
    let a = read_model(model)?;
    let mut o = String::new();
    let _ = writeln!(o, "model {} ({})", model.display(), a.format);
    let _ = writeln!(
        o,
        "job {}  task {:?}  kind {}  rounds {}  {}",
        a.job_id,
        a.task,
        a.model_kind,
        a.rounds,
        if a.complete {
            "complete"
        } else {
            "INCOMPLETE (snapshot)"
        }
    );
    let _ = writeln!(o, "round sha256 {}", a.round_sha256);
    let _ = writeln!(o, "model sha256 {}", a.model_sha256);
    let _ = writeln!(
        o,
        "features ({}): {}",
        a.model.features.len(),
        a.model.features.join(", ")
    );
    for (label, m) in a.model.labels.iter().zip(&a.metrics) {
        let _ = writeln!(
            o,
            "{label}: hold-out AUC {:.4}  KS {:.4}  log-loss {:.4}  top-decile lift {:.2}",
            m.auc, m.ks, m.log_loss, m.top_decile_lift
        );
    }
    match &a.model.params {
        fedsilo_task::ModelParams::Scorecard { card } => o.push_str(&card.to_table()),
        _ => {
            for (label, coefs) in a.model.labels.iter().zip(&a.coefficients) {
                let _ = writeln!(o, "coefficients for {label} (standardised features):");
                for (name, c) in coefs {
                    let _ = writeln!(o, "  {name:<32} {c:>10.5}");
                }
            }
        }
    }
    if let Some(path) = csv {
        if a.scorecard.is_empty() {
            bail!(
                "{}: --csv writes a scorecard table, but this is a {} model",
                model.display(),
                a.model_kind
            );
        }
        let mut out = String::from("feature,bin,woe,points\n");
        for r in &a.scorecard {
            out.push_str(&format!(
                "{},\"{}\",{:.6},{:.1}\n",
                r.feature, r.bin, r.woe, r.points
            ));
        }
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
        let _ = writeln!(o, "scorecard table written to {}", path.display());
    }
    print_all(&o)
}
