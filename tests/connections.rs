//! Connection hygiene of the coordinator, through the real binary on loopback:
//!
//! - silent TCP connections, stalled TLS handshakes and authenticated connections that
//!   never send a request are closed by the coordinator after its (configured) timeouts,
//!   while `fedsilo job list` keeps answering — also with the coordinator held to 64 file
//!   descriptors, where the connection caps keep the flood from starving it;
//! - a participant certificate polling in a tight loop is rate-limited and receives
//!   nothing, while the other banks' job completes without it;
//! - an undecodable request is INVALID_ARGUMENT naming the field, an over-long id is
//!   refused without being echoed, and a JoinReply for participant 0 says so explicitly;
//! - `keygen` refuses to replace an existing federation without `--force`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fedsilo_proto::pb;
use fedsilo_proto::pb::federation_client::FederationClient;
use fedsilo_proto::pb::operator_client::OperatorClient;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

/// Appends a `[limits]` table to the federation's coordinator.toml.
fn set_limits(fed: &TestFed, limits: &str) {
    let path = fed.path("coordinator.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n[limits]\n");
    text.push_str(limits);
    std::fs::write(&path, text).unwrap();
}

/// Runs `fedsilo args…`; it must succeed within `timeout` (it is killed and the test
/// fails otherwise). Returns stdout.
fn run_ok_within(args: &[&str], timeout: Duration) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "fedsilo {args:?} still running after {timeout:?}; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        status.success(),
        "fedsilo {args:?} failed:\n{stdout}\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    stdout
}

fn job_list(fed: &TestFed) -> String {
    let cfg = fed.path("operator.toml");
    run_ok_within(
        &["job", "list", "--config", cfg.to_str().unwrap()],
        Duration::from_secs(20),
    )
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Idle {
    /// TCP connected, nothing sent.
    Silent,
    /// A TLS record header announcing a ClientHello that never comes.
    StalledHandshake,
    /// Mutual TLS completed with the operator's certificate, then not a byte more.
    Authenticated,
}

fn open(port: u16, kind: Idle, tls: &Arc<rustls::ClientConfig>) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    match kind {
        Idle::Silent => {}
        Idle::StalledHandshake => s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap(),
        Idle::Authenticated => {
            let name = ServerName::try_from("localhost").unwrap();
            let mut conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
            while conn.is_handshaking() {
                conn.complete_io(&mut s)
                    .unwrap_or_else(|e| panic!("TLS handshake with the coordinator: {e}"));
            }
            // The client's Finished is written; the session state is dropped, the socket
            // stays open and silent.
        }
    }
    s
}

/// Whether the server closes `s` (end of stream or reset) before `deadline`; bytes it
/// sends meanwhile (TLS records, HTTP/2 settings) are read and ignored.
fn closed_by_server(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// 200 silent TCP connections, 50 stalled handshakes, 50 silent authenticated ones.
fn flood(fed: &TestFed) -> Vec<(Idle, TcpStream)> {
    let tls = fed.rustls_client(Some("operator"), b"h2");
    let mut socks = Vec::new();
    for (kind, n) in [
        (Idle::Silent, 200),
        (Idle::StalledHandshake, 50),
        (Idle::Authenticated, 50),
    ] {
        for _ in 0..n {
            socks.push((kind, open(fed.port, kind, &tls)));
        }
    }
    socks
}

fn assert_all_closed(socks: &mut [(Idle, TcpStream)], within: Duration) {
    let deadline = Instant::now() + within;
    let open: Vec<Idle> = socks
        .iter_mut()
        .filter_map(|(kind, s)| (!closed_by_server(s, deadline)).then_some(*kind))
        .collect();
    assert!(
        open.is_empty(),
        "{} idle connections still open after {within:?}: {} silent, {} stalled handshakes, {} authenticated",
        open.len(),
        open.iter().filter(|k| **k == Idle::Silent).count(),
        open.iter().filter(|k| **k == Idle::StalledHandshake).count(),
        open.iter().filter(|k| **k == Idle::Authenticated).count(),
    );
}

fn credit_fed(names: &[&str]) -> TestFed {
    TestFed::new(names, "data", &repo().join("data/credit_data.schema.toml"))
}

#[test]
fn silent_connections_are_dropped_after_the_timeouts_while_job_list_answers() {
    let fed = credit_fed(&["bank-a", "bank-b"]);
    // Caps far above the flood: every connection is dropped by a timeout, not a cap.
    set_limits(
        &fed,
        "handshake_timeout_ms = 2000\nidle_timeout_ms = 2000\nmax_handshakes = 1000\nmax_connections = 1000\n",
    );
    let coordinator = fed.coordinator("coordinator.log");
    let mut socks = flood(&fed);
    // While the 300 connections are held, an operator is still served.
    assert!(job_list(&fed).contains("no jobs"));
    assert_all_closed(&mut socks, Duration::from_secs(30));
    assert!(job_list(&fed).contains("no jobs"));
    drop(coordinator);
}

#[test]
fn with_64_file_descriptors_the_caps_keep_job_list_answering() {
    let fed = credit_fed(&["bank-a", "bank-b"]);
    set_limits(
        &fed,
        "handshake_timeout_ms = 2000\nidle_timeout_ms = 2000\nmax_handshakes = 8\nmax_connections = 16\n",
    );
    let log = std::fs::File::create(fed.path("coordinator.log")).unwrap();
    let child = Command::new("sh")
        .args([
            "-c",
            "ulimit -n 64 && exec \"$0\" \"$@\"",
            bin(),
            "coordinator",
            "serve",
            "--config",
            fed.path("coordinator.toml").to_str().unwrap(),
        ])
        .env("FEDSILO_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let coordinator = Proc {
        child,
        log: fed.path("coordinator.log"),
    };
    fed.wait_listening();
    #[cfg(target_os = "linux")]
    {
        let limits =
            std::fs::read_to_string(format!("/proc/{}/limits", coordinator.child.id())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        assert_eq!(
            line.split_whitespace().nth(3),
            Some("64"),
            "descriptor limit not applied: {line}"
        );
    }
    let mut socks = flood(&fed);
    assert!(job_list(&fed).contains("no jobs"));
    assert_all_closed(&mut socks, Duration::from_secs(30));
    assert!(job_list(&fed).contains("no jobs"));
    let log = coordinator.log_text();
    assert!(!log.contains("panicked"), "coordinator log:\n{log}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

const SMALL_SPEC: &str = r#"
dataset = "data"
task = "risk"
rounds = 4
min_participants = 2
eval_every = 2
[learning]
local_epochs = 1
learning_rate = 0.05
batch_size = 64
"#;

#[derive(Debug, Default)]
struct PollTally {
    ok_empty: usize,
    messages: usize,
    exhausted: usize,
    other: Vec<String>,
}

#[test]
fn a_participant_polling_in_a_loop_is_rate_limited_and_takes_nothing_from_the_others() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b", "bank-c"]);
    let _coordinator = fed.coordinator("coordinator.log");
    let job = fed.launch(SMALL_SPEC);
    let _a = fed.participant("bank-a");
    let _b = fed.participant("bank-b");

    // bank-c's certificate never joins; it polls 2,000 times as fast as it can, and then
    // 12 polls at once.
    let (tally, concurrent) = runtime().block_on(async {
        let mut client = FederationClient::new(fed.channel("bank-c").await);
        let mut tally = PollTally::default();
        for _ in 0..2000 {
            match client.poll(pb::PollRequest { max_wait_ms: 0 }).await {
                Ok(r) if r.get_ref().messages.is_empty() => tally.ok_empty += 1,
                Ok(r) => tally.messages += r.into_inner().messages.len(),
                Err(s) if s.code() == tonic::Code::ResourceExhausted => tally.exhausted += 1,
                Err(s) => tally.other.push(format!("{:?}: {}", s.code(), s.message())),
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let mut c = client.clone();
            set.spawn(async move { c.poll(pb::PollRequest { max_wait_ms: 3000 }).await });
        }
        let mut concurrent = PollTally::default();
        while let Some(r) = set.join_next().await {
            match r.unwrap() {
                Ok(r) => concurrent.messages += r.into_inner().messages.len(),
                Err(s) if s.code() == tonic::Code::ResourceExhausted => concurrent.exhausted += 1,
                Err(s) => concurrent
                    .other
                    .push(format!("{:?}: {}", s.code(), s.message())),
            }
        }
        (tally, concurrent)
    });
    eprintln!("tight loop: {tally:?}; 12 at once: {concurrent:?}");
    assert_eq!(tally.messages, 0, "bank-c received messages: {tally:?}");
    assert!(tally.other.is_empty(), "{tally:?}");
    assert!(
        tally.exhausted > 0,
        "2,000 polls in a tight loop were never rate-limited: {tally:?}"
    );
    assert_eq!(concurrent.messages, 0, "{concurrent:?}");
    assert!(
        concurrent.exhausted >= 8,
        "at most 4 polls may wait at once: {concurrent:?}"
    );

    // bank-a and bank-b trained without bank-c and without losing a round to it.
    let status = fed.wait_finished(&job, Duration::from_secs(120));
    assert!(
        status.contains("participants [bank-a, bank-b]"),
        "status: {status}"
    );
    let rounds = fed.audit_rounds(&job);
    assert!(!rounds.is_empty());
    for r in &rounds {
        assert_eq!(r.outcome, "ok", "round {r:?}");
        assert_eq!(r.survivors.len(), 2, "round {r:?}");
    }
}

/// A `JobRef` whose `job_id` is raw bytes: lets the test send a string field that is not
/// UTF-8, which no generated client can.
#[derive(Clone, PartialEq, prost::Message)]
struct RawStringField {
    #[prost(bytes = "vec", tag = "1")]
    field_1: Vec<u8>,
}

async fn raw_unary<R: prost::Message + Default + Send + 'static>(
    channel: tonic::transport::Channel,
    path: &'static str,
    msg: RawStringField,
) -> Result<R, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<RawStringField, R>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(msg), path, codec)
        .await
        .map(tonic::Response::into_inner)
}

#[test]
fn undecodable_requests_are_invalid_argument_and_long_ids_are_not_echoed() {
    let fed = credit_fed(&["bank-a", "bank-b"]);
    let _coordinator = fed.coordinator("coordinator.log");
    runtime().block_on(async {
        let op = fed.channel("operator").await;
        // A job id that is not UTF-8.
        let s = raw_unary::<pb::JobStatus>(
            op.clone(),
            "/fedsilo.v1.Operator/GetJob",
            RawStringField {
                field_1: vec![0xff, 0xfe, 0xfd],
            },
        )
        .await
        .expect_err("undecodable GetJob accepted");
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains("job_id"), "{s:?}");
        // A participant message whose body is junk.
        let bank = fed.channel("bank-b").await;
        let s = raw_unary::<pb::SubmitReply>(
            bank.clone(),
            "/fedsilo.v1.Federation/Submit",
            RawStringField {
                field_1: vec![0xff, 0xff, 0xff],
            },
        )
        .await
        .expect_err("undecodable Submit accepted");
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");

        // Over-long ids are refused, and not echoed back.
        let long = "x".repeat(1 << 20);
        let mut client = OperatorClient::new(op.clone());
        let s = client
            .get_job(pb::JobRef {
                job_id: long.clone(),
            })
            .await
            .expect_err("a 1 MiB job id");
        let s2 = client
            .get_model(pb::JobRef {
                job_id: long.clone(),
            })
            .await
            .expect_err("a 1 MiB job id");
        for s in [s, s2] {
            assert_eq!(s.code(), tonic::Code::InvalidArgument, "{:?}", s.code());
            assert!(
                s.message().len() < 200 && !s.message().contains("xxxxxxxx"),
                "the id is echoed: {} bytes",
                s.message().len()
            );
        }
        let mut fedc = FederationClient::new(bank);
        let s = fedc
            .join(pb::JoinRequest {
                job_ids: vec![long.clone()],
            })
            .await
            .expect_err("a 1 MiB job id");
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
        assert!(s.message().len() < 200, "{} bytes", s.message().len());

        // bank-a is participant 0 (first in name order): the reply says so explicitly.
        let mut a = FederationClient::new(fed.channel("bank-a").await);
        let r = a
            .join(pb::JoinRequest { job_ids: vec![] })
            .await
            .expect("join")
            .into_inner();
        assert_eq!(r.participant_id, Some(0));
        let mut b = FederationClient::new(fed.channel("bank-b").await);
        let r = b
            .join(pb::JoinRequest { job_ids: vec![] })
            .await
            .expect("join")
            .into_inner();
        assert_eq!(r.participant_id, Some(1));
    });
}

#[test]
fn an_unreachable_coordinator_is_named_and_the_cli_gives_up() {
    let fed = credit_fed(&["bank-a"]);
    // Nothing listens on fed.port.
    let err = run_err_within(
        &[
            "job",
            "list",
            "--config",
            fed.path("operator.toml").to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(
        err.contains(&format!("localhost:{}", fed.port)),
        "the address is not named: {err}"
    );
    // A listener whose connections complete in the kernel but never answer TLS.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    let cfg = format!(
        "connect_timeout_ms = 1500\n{}",
        std::fs::read_to_string(fed.path("operator.toml"))
            .unwrap()
            .replace(
                &format!("localhost:{}", fed.port),
                &format!("localhost:{mute_port}"),
            )
    );
    let mute_cfg = fed.path("operator-mute.toml");
    std::fs::write(&mute_cfg, cfg).unwrap();
    let err = run_err_within(
        &["job", "list", "--config", mute_cfg.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(
        err.contains(&format!("localhost:{mute_port}")) && err.contains("1500 ms"),
        "{err}"
    );
    drop(mute);
}

fn keygen_args<'a>(out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "keygen",
        "--out",
        out.to_str().unwrap(),
        "--institutions",
        "bank-a,bank-b",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn keygen_refuses_to_replace_a_federation_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fed");
    run_ok(&keygen_args(&out, &[]));
    let ca = std::fs::read(out.join("ca.pem")).unwrap();
    let key = std::fs::read(out.join("bank-a.key")).unwrap();

    let err = run_err(&keygen_args(&out, &[]));
    assert!(
        err.contains(&out.display().to_string()) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("ca.pem")).unwrap(),
        ca,
        "CA replaced"
    );
    assert_eq!(std::fs::read(out.join("bank-a.key")).unwrap(), key);

    // The example configs are protected as well.
    let cfg_only = dir.path().join("configs");
    std::fs::create_dir(&cfg_only).unwrap();
    std::fs::write(cfg_only.join("participant-bank-b.toml"), "# edited\n").unwrap();
    let err = run_err(&keygen_args(&cfg_only, &[]));
    assert!(err.contains("participant-bank-b.toml"), "{err}");
    assert_eq!(
        std::fs::read_to_string(cfg_only.join("participant-bank-b.toml")).unwrap(),
        "# edited\n"
    );

    // A directory that holds no federation is fine.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "hello").unwrap();
    run_ok(&keygen_args(&other, &["--key-type", "ed25519"]));

    // --force replaces the federation.
    run_ok(&keygen_args(&out, &["--force"]));
    assert_ne!(std::fs::read(out.join("ca.pem")).unwrap(), ca);
    assert_ne!(std::fs::read(out.join("bank-a.key")).unwrap(), key);
}
