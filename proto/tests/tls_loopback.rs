//! Real mutual TLS over loopback: a tonic `Operator` server whose `GetJob` answers with the
//! caller's certificate name, and clients with a good certificate, a certificate from
//! another CA, and none at all.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fedsilo_proto::pb;
use fedsilo_proto::pb::operator_client::OperatorClient;
use fedsilo_proto::pb::operator_server::{Operator, OperatorServer};
use fedsilo_proto::pki::{generate_federation, Federation};
use fedsilo_proto::tls::{client_tls_config, peer_name, server_tls_config, TlsError, TlsFiles};
use rand::SeedableRng;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Server};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct Stub {
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Operator for Stub {
    async fn launch_job(
        &self,
        _: Request<pb::LaunchJobRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn get_job(&self, req: Request<pb::JobRef>) -> Result<Response<pb::JobStatus>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let name = peer_name(&req)?;
        Ok(Response::new(pb::JobStatus {
            job_id: name,
            ..Default::default()
        }))
    }

    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::JobList>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn get_model(&self, _: Request<pb::JobRef>) -> Result<Response<pb::ModelReply>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn cancel_job(
        &self,
        _: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn resume_job(&self, _: Request<pb::JobRef>) -> Result<Response<pb::JobStatus>, Status> {
        Err(Status::unimplemented("stub"))
    }
}

fn federation(dir: &std::path::Path, seed: u64, names: &[&str]) -> Federation {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    generate_federation(
        dir,
        &names,
        &["localhost".to_string(), "127.0.0.1".to_string()],
        &mut rng,
    )
    .expect("generate federation")
}

async fn serve(
    fed: &Federation,
) -> (
    SocketAddr,
    Arc<AtomicUsize>,
    tokio::sync::oneshot::Sender<()>,
) {
    let stub = Stub::default();
    let calls = stub.calls.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tls = server_tls_config(&fed.coordinator).expect("server tls config");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .tls_config(tls)
        .expect("tls acceptor")
        .add_service(OperatorServer::new(stub))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = stopped.await;
            },
        );
    tokio::spawn(server);
    (addr, calls, stop)
}

/// The `job_id` GetJob answered with (the caller's name), or why the call failed.
async fn who_am_i(addr: SocketAddr, tls: ClientTlsConfig) -> Result<String, String> {
    let call = async {
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| format!("endpoint: {e}"))?
            .tls_config(tls)
            .map_err(|e| format!("tls config: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let mut client = OperatorClient::new(channel);
        client
            .get_job(pb::JobRef { job_id: "x".into() })
            .await
            .map(|r| r.into_inner().job_id)
            .map_err(|s| format!("rpc: {s:?}"))
    };
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

#[tokio::test]
async fn mutual_tls_identifies_the_caller_and_refuses_strangers() {
    let a_dir = tempfile::tempdir().expect("tempdir");
    let b_dir = tempfile::tempdir().expect("tempdir");
    let a = federation(a_dir.path(), 1, &["bank-a", "bank-b"]);
    let b = federation(b_dir.path(), 2, &["bank-a", "mallory"]);
    let (addr, calls, stop) = serve(&a).await;

    // Members of federation A get their own certificate name back.
    for (files, expected) in [
        (&a.institution("bank-a").expect("bank-a").tls, "bank-a"),
        (&a.institution("bank-b").expect("bank-b").tls, "bank-b"),
        (&a.operator, "operator"),
    ] {
        let tls = client_tls_config(files, "localhost").expect("client tls config");
        assert_eq!(who_am_i(addr, tls).await.as_deref(), Ok(expected));
    }
    // The coordinator certificate also names 127.0.0.1.
    let tls = client_tls_config(&a.institution("bank-a").expect("bank-a").tls, "127.0.0.1")
        .expect("client tls config");
    assert_eq!(who_am_i(addr, tls).await.as_deref(), Ok("bank-a"));
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // A certificate signed by another CA — even one called "bank-a" — is refused during
    // the handshake: the handler never runs. (The client trusts A's CA, so it is the
    // server that refuses.)
    for name in ["bank-a", "mallory"] {
        let foreign = TlsFiles {
            ca_cert: a.ca_cert.clone(),
            ..b.institution(name).expect("b member").tls.clone()
        };
        let tls = client_tls_config(&foreign, "localhost").expect("client tls config");
        let r = who_am_i(addr, tls).await;
        assert!(r.is_err(), "foreign certificate {name} accepted: {r:?}");
        eprintln!("foreign {name} refused: {r:?}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "a refused client reached the handler"
    );

    // No client certificate at all.
    let ca = std::fs::read(&a.ca_cert).expect("ca.pem");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let r = who_am_i(addr, tls).await;
    assert!(r.is_err(), "client without certificate accepted: {r:?}");
    eprintln!("no certificate refused: {r:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "a refused client reached the handler"
    );

    // And the client refuses a server outside its trust root.
    let distrustful = TlsFiles {
        ca_cert: b.ca_cert.clone(),
        ..a.institution("bank-a").expect("bank-a").tls.clone()
    };
    let tls = client_tls_config(&distrustful, "localhost").expect("client tls config");
    let r = who_am_i(addr, tls).await;
    assert!(r.is_err(), "client trusted a server from another CA: {r:?}");
    // Nor does a server name outside the certificate's SANs pass.
    let tls = client_tls_config(&a.operator, "coordinator.example").expect("client tls config");
    let r = who_am_i(addr, tls).await;
    assert!(
        r.is_err(),
        "client accepted a server certificate for another name: {r:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    let _ = stop.send(());
}

#[test]
fn peer_name_without_certificate_is_unauthenticated() {
    let s = peer_name(&Request::new(())).expect_err("no TLS, no name");
    assert_eq!(s.code(), tonic::Code::Unauthenticated);
}

#[test]
fn tls_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = federation(dir.path(), 3, &["bank-a"]);

    let missing = TlsFiles {
        key: dir.path().join("nope.key"),
        ..a.coordinator.clone()
    };
    let e = server_tls_config(&missing).expect_err("missing key");
    assert!(matches!(e, TlsError::Read { .. }), "{e:?}");
    assert!(e.to_string().contains("nope.key"), "{e}");

    let not_pem = dir.path().join("junk.pem");
    std::fs::write(&not_pem, "hello, I am not a certificate\n").expect("write");
    let bad_cert = TlsFiles {
        cert: not_pem.clone(),
        ..a.coordinator.clone()
    };
    let e = client_tls_config(&bad_cert, "localhost").expect_err("junk cert");
    assert!(matches!(e, TlsError::NotPem { .. }), "{e:?}");
    assert!(e.to_string().contains("junk.pem"), "{e}");

    // A key file handed in as the CA certificate.
    let swapped = TlsFiles {
        ca_cert: a.coordinator.key.clone(),
        ..a.coordinator.clone()
    };
    let e = server_tls_config(&swapped).expect_err("key as CA");
    assert!(matches!(e, TlsError::NotPem { .. }), "{e:?}");
    assert!(e.to_string().contains("coordinator.key"), "{e}");

    // A certificate as the key.
    let no_key = TlsFiles {
        key: a.coordinator.cert.clone(),
        ..a.coordinator.clone()
    };
    let e = server_tls_config(&no_key).expect_err("cert as key");
    assert!(e.to_string().contains("PRIVATE KEY"), "{e}");

    // Good files pass.
    server_tls_config(&a.coordinator).expect("server");
    client_tls_config(&a.operator, "localhost").expect("client");
}
