//! The gRPC transport for simulations: the real coordinator service and one real participant
//! node per institution, talking gRPC with mutual TLS over loopback, with a throw-away PKI.
//!
//! Everything above the socket is the production code path (`fedsilo coordinator serve`,
//! `fedsilo participant join`); only the data comes from the scenario instead of files.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fedsilo_coordinator::engine::{JobRecord, RoundSummary};
use fedsilo_coordinator::service::{serve, ServiceConfig, ServiceError};
use fedsilo_coordinator::state::StateError;
use fedsilo_coordinator::store::{Store, StoreError};
use fedsilo_crypto::msg::ParticipantId;
use fedsilo_participant::node::{self, NodeConfig, NodeError, TlsPaths};
use fedsilo_participant::worker::Worker;
use fedsilo_proto::pb;
use fedsilo_proto::pb::operator_client::OperatorClient;
use fedsilo_proto::pki::PkiError;
use fedsilo_proto::roster::{Roster as RosterFile, RosterError};
use fedsilo_proto::tls::{client_tls_config, TlsError, TlsFiles};
use rand::SeedableRng;
use tokio::sync::mpsc;

use crate::federation::{self, Federation, FederationError};
use crate::scenario::Scenario;

/// Why the gRPC run failed; each names the step and keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("setting up the run (runtime, temporary directory or port)")]
    Setup(#[source] std::io::Error),
    #[error("generating the throw-away PKI")]
    Pki(#[source] PkiError),
    #[error("reading the generated roster")]
    Roster(#[source] RosterError),
    #[error("initialising the coordinator state")]
    State(#[source] StateError),
    #[error("connecting the operator")]
    OperatorTls(#[source] TlsError),
    #[error("connecting the operator")]
    Channel(#[source] tonic::transport::Error),
    #[error("launching job '{job}'")]
    Launch {
        job: String,
        #[source]
        source: tonic::Status,
    },
    #[error("asking for the jobs' status")]
    Status(#[source] tonic::Status),
    #[error("'{name}' is missing from the generated roster")]
    NotInRoster { name: String },
    #[error("identity key of '{name}'")]
    Identity {
        name: String,
        #[source]
        source: PkiError,
    },
    #[error("participant node")]
    Node(#[source] NodeError),
    #[error("participant task")]
    Join(#[source] tokio::task::JoinError),
    #[error("a participant node did not stop")]
    NodeHung,
    #[error("coordinator service")]
    Service(#[source] ServiceError),
    #[error("reading the coordinator store")]
    Store(#[source] StoreError),
    #[error("the checkpoint of job '{job}' does not decode")]
    Checkpoint {
        job: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Federation(#[from] FederationError),
}

fn free_port() -> Result<SocketAddr, GrpcError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(GrpcError::Setup)?;
    l.local_addr().map_err(GrpcError::Setup)
}

/// Runs the scenario's jobs over real gRPC on loopback. The coordinator's engine is seeded
/// as the in-memory one is ([`federation::coordinator_seed`]) and every worker as its
/// in-memory twin, so no random choice of the run comes from the OS (the throw-away PKI is
/// drawn from the scenario seed too); only ports and timings differ.
pub fn run(
    s: &Scenario,
    fed: &Federation,
    progress: &mut dyn FnMut(&RoundSummary),
) -> Result<(BTreeMap<String, JobRecord>, Vec<RoundSummary>), GrpcError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(GrpcError::Setup)?;
    rt.block_on(run_async(s, fed, progress))
}

async fn run_async(
    s: &Scenario,
    fed: &Federation,
    progress: &mut dyn FnMut(&RoundSummary),
) -> Result<(BTreeMap<String, JobRecord>, Vec<RoundSummary>), GrpcError> {
    let dir = tempfile::tempdir().map_err(GrpcError::Setup)?;
    let pki = dir.path().join("pki");
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(s.seed);
    // Certificate and file names allow [A-Za-z0-9._-]: "Bank A" becomes "Bank-A".
    let names: Vec<String> = fed
        .names
        .iter()
        .map(|n| {
            n.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect()
        })
        .collect();
    fedsilo_proto::pki::generate_federation(
        &pki,
        &names,
        &["localhost".to_string(), "127.0.0.1".to_string()],
        &mut rng,
    )
    .map_err(GrpcError::Pki)?;
    let roster = RosterFile::load(&pki.join("roster.toml")).map_err(GrpcError::Roster)?;
    let addr = free_port()?;
    let state_dir = dir.path().join("state");
    fedsilo_coordinator::state::init(&state_dir).map_err(GrpcError::State)?;
    let (obs_tx, mut obs_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = ServiceConfig {
        listen: addr,
        state_dir: state_dir.clone(),
        roster: pki.join("roster.toml"),
        tls: TlsFiles {
            ca_cert: pki.join("ca.pem"),
            cert: pki.join("coordinator.pem"),
            key: pki.join("coordinator.key"),
        },
        limits: Default::default(),
        observer: Some(obs_tx),
        seed: Some(federation::coordinator_seed(s)),
        ops: None,
    };
    let server = tokio::spawn(serve(cfg, async {
        let _ = stop_rx.await;
    }));
    let url = format!("https://localhost:{}", addr.port());
    let crypto_roster = Arc::new(roster.to_crypto_roster());

    // Launch the jobs first so every node joins all of them at once.
    let mut op = operator(&pki, &url).await?;
    let n = fed.names.len();
    for job in &s.jobs {
        let (features, labels) = federation::job_columns(job, fed)?;
        let mut spec = federation::job_spec(s, job, n);
        spec.features = features;
        spec.labels = labels;
        let mut tries = 0;
        loop {
            match op.launch_job(pb::LaunchJobRequest::from(&spec)).await {
                Ok(_) => break,
                Err(e) if tries < 50 && e.code() == tonic::Code::Unavailable => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(source) => {
                    return Err(GrpcError::Launch {
                        job: job.name.clone(),
                        source,
                    })
                }
            }
        }
    }

    let mut nodes = Vec::new();
    for (i, (name, scenario_name)) in names.iter().zip(&fed.names).enumerate() {
        let id: ParticipantId = roster
            .participant_id(name)
            .ok_or_else(|| GrpcError::NotInRoster { name: name.clone() })?;
        let identity = fedsilo_proto::pki::load_identity(&pki.join(format!("{name}.identity")))
            .map_err(|source| GrpcError::Identity {
                name: name.clone(),
                source,
            })?;
        // The same worker seed as the in-memory run's (by the scenario's institution name).
        let seed = federation::seed_bytes(s.seed, &format!("worker/{scenario_name}"));
        let worker = Worker::new(
            id,
            Arc::new(identity),
            crypto_roster.clone(),
            fed.datasets_of(i),
            seed,
        );
        let cfg = NodeConfig {
            name: name.clone(),
            coordinator: url.clone(),
            tls_domain: "localhost".into(),
            identity: pki.join(format!("{name}.identity")),
            roster: pki.join("roster.toml"),
            tls: TlsPaths {
                ca: pki.join("ca.pem"),
                cert: pki.join(format!("{name}.pem")),
                key: pki.join(format!("{name}.key")),
            },
            datasets: Vec::new(),
            jobs: s.jobs.iter().map(|j| j.name.clone()).collect(),
            holdout_fraction: s.holdout_fraction,
            holdout_seed: s.seed,
            exit_when_done: true,
            state_dir: None,
            base_dir: dir.path().to_path_buf(),
        };
        nodes.push(tokio::spawn(node::run(cfg, worker)));
    }

    let mut rounds = Vec::new();
    let mut done = false;
    while !done {
        while let Ok(r) = obs_rx.try_recv() {
            progress(&r);
            rounds.push(r);
        }
        let list = op
            .list_jobs(pb::ListJobsRequest {})
            .await
            .map_err(GrpcError::Status)?
            .into_inner();
        done = list.jobs.iter().all(|j| {
            fedsilo_proto::convert::job_state_from(j.state, "state").is_ok_and(|s| s.is_terminal())
        });
        if !done {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for n in nodes {
        match tokio::time::timeout(Duration::from_secs(30), n).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(GrpcError::Node(e)),
            Ok(Err(e)) => return Err(GrpcError::Join(e)),
            Err(_) => return Err(GrpcError::NodeHung),
        }
    }
    let _ = stop_tx.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(GrpcError::Service(e)),
        Err(e) => return Err(GrpcError::Join(e)),
    }
    while let Ok(r) = obs_rx.try_recv() {
        progress(&r);
        rounds.push(r);
    }
    let store = Store::open(&state_dir.join("coordinator.redb")).map_err(GrpcError::Store)?;
    let mut records = BTreeMap::new();
    for job in &s.jobs {
        if let Some((_, bytes)) = store
            .latest_checkpoint(&job.name)
            .map_err(GrpcError::Store)?
        {
            let rec: JobRecord =
                serde_json::from_slice(&bytes).map_err(|source| GrpcError::Checkpoint {
                    job: job.name.clone(),
                    source,
                })?;
            records.insert(job.name.clone(), rec);
        }
    }
    Ok((records, rounds))
}

async fn operator(
    pki: &Path,
    url: &str,
) -> Result<OperatorClient<tonic::transport::Channel>, GrpcError> {
    let tls = client_tls_config(
        &TlsFiles {
            ca_cert: pki.join("ca.pem"),
            cert: pki.join("operator.pem"),
            key: pki.join("operator.key"),
        },
        "localhost",
    )
    .map_err(GrpcError::OperatorTls)?;
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(GrpcError::Channel)?
        .tls_config(tls)
        .map_err(GrpcError::Channel)?
        .connect_lazy();
    Ok(OperatorClient::new(channel))
}
