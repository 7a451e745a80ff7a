//! Real mutual TLS over loopback: a tonic `Operator` server whose `GetJob` answers with the
//! caller's certificate name, and clients with a good certificate, a certificate from
//! another CA, and none at all; federations of every key type, served both by tonic's TLS
//! and by the rustls configuration the coordinator terminates TLS with, and client
//! certificates with ECDSA, Ed25519 and RSA keys.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fedsilo_proto::pb;
use fedsilo_proto::pb::operator_client::OperatorClient;
use fedsilo_proto::pb::operator_server::{Operator, OperatorServer};
use fedsilo_proto::pki::{
    generate_federation, generate_federation_with, Federation, FederationOptions, KeyType,
};
use fedsilo_proto::tls::{
    client_tls_config, peer_name, server_rustls_config, server_tls_config, TlsError, TlsFiles,
};
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

/// Like [`serve`], but TLS is terminated with [`server_rustls_config`] by a tokio-rustls
/// accept loop, as the coordinator does, and tonic serves the decrypted streams.
async fn serve_rustls(
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
    let acceptor = tokio_rustls::TlsAcceptor::from(
        server_rustls_config(&fed.coordinator).expect("rustls config"),
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<_, std::io::Error>>(8);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok(tls)).await;
                }
            });
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(OperatorServer::new(stub))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), async {
            let _ = stopped.await;
        });
    tokio::spawn(server);
    (addr, calls, stop)
}

/// A test-only RSA-2048 key (`openssl genpkey -algorithm RSA`): ring signs with RSA keys
/// but cannot generate them. Not a secret of anything.
const RSA_TEST_KEY: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCmBCljkA5uY+Lz
7wtAW+b236yTlxJs3RJDzkvNC+u+XKR58/kvieYsN83wZXWfwxfevyU6/cKwhR+q
Mzm/lk6yuIJIlBkqGu3P+Jvkiks41SRiorurdrn08oLI2fJBElK634J+azRyZ39A
vMYatlWlNdTghpeZOar3DA7cOiwlaRKEAGE7BoyTwWP5/mW8n0AhJ0g/lcV+zvTb
CDvk2OhPVpCD1lwZndjliFDM0WmPtNs2xX0eurLKl3Tj33s3NGuiuAuPNHIxLLui
0pjQcmoScSEwFYREG/LLZAnPL3z3Pr37e50jBkp5zd+25jqfrh1LHuhJ5EmaeQQv
s8W6m1unAgMBAAECggEAOmReVmmV2dgCPIBIudNZUl3r6mGJlobPZNALs0xNF8Co
DUj1zXW4YrciFTrqe034eF1M8AnPT50TPR8VYcCxX4UsNfD5ROkB2lN8KY9G0++M
A7FvRujUkUY3IAQghCi4tofk8ygr401p4dBD8aNOTnS3sl1Etx0keA5ir606V9Gi
XKbK50DJ4kZLJjkSLporQcdAbCmMCiOc8ll91mLBdpGq/iyLwNjpBK2gzbAk/fQ0
oQAxDkYeQb0WFw52B1QYIFHYN6b7l+pkLrSpCREFqD7Qlu++cfwwcxk7OTHIfbeF
vG01hCou8K5rxJD3r+UoHqr6nONw3c/rpgqsrRgX0QKBgQDlSlERmzxCKwVVBNwc
2CIPNwnYQuP6ITWKy9yTyauA1Wk88MAkyJ85wbrLbu+NEvrg8f3GkfQrpydNBgbl
4VB/K0dM5j7ZKO2DZoeB9GrwM7NlO8HhyIbW6zwuQBW+dc4SJKCZeCQMj9J5NbGH
yDokK2Cx7Md7zcLIVWenvHkmLwKBgQC5WvHq4gR+o5fqWNm8sklwh3exL0gkgRvA
SQE1S7EqSm/p1oEQ3Rv29UMl+bVdJZw9quOQ2gO0Mj/bxJuFzQKGuL4t+qbG8duZ
dz6kfrICQe7YjfujnlkCsg8cPt9DtAE1VGsc4ni/Ia9MZST4T1pim+H1dn0a54u8
5DvC7Xo8CQKBgHXi+sFhnd6rPceTgxP1b7WA57ff1FTDBENDQzpcwqevkbb6VN/U
okDQwRhdBh7zNje3U3HnkrFq9ILeaWeBq6BmgPchngiKyWr4qQ0AvIaZHlAbJDjQ
n7saIMvquQM+kF+1ozikk2w9+cnF+GvGX1Y/UyzHf1zA0reraWrNNUCTAoGAPQxA
G11fn5ogAdZLuIN7/q0PdfMdrrA7RKSG2lfYvRYRMBIvJi+88ySqfgp1en1VrVXo
Z5/2klXuhGKH2pTAHUEhmiEw5ttnuW712dXEqUuv7/ErjSMtK98bbPEkNbdGoprw
QG4y2LiudNnnSEVSfqHa1S62W7MhahA9wqDWnokCgYBZXGwZysiNCBFkiyx4jfmy
1rfv72R2aaNeihjIlsFVvBMXC5OPgYbSVt3kXA6Sp0tB4P0abr2JKLXHAxU7gWkD
chf/yrnjWBA1pf3hz374anV722TRXJvHNB6LucUnrQzEuXdl6OcPvgdKEAmsNiXe
W9QgRNmlck5BQPXfI/uMGA==
-----END PRIVATE KEY-----
";

fn dn(cn: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    dn
}

/// A client certificate CN=`cn` for `key`, signed by the federation's CA (re-made from
/// `ca.key` with the CA's name: what it signs chains to `ca.pem`).
fn issue_client(fed: &Federation, cn: &str, key: &rcgen::KeyPair) -> TlsFiles {
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&fed.ca_key).expect("ca.key"))
        .expect("CA key");
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.distinguished_name = dn("fedsilo federation CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = dn(cn);
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(key, &ca, &ca_key).expect("sign");
    let files = TlsFiles {
        ca_cert: fed.ca_cert.clone(),
        cert: fed.dir.join(format!("{cn}.pem")),
        key: fed.dir.join(format!("{cn}.key")),
    };
    std::fs::write(&files.cert, cert.pem()).expect("write cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    files
}

#[tokio::test]
async fn every_key_type_is_served_and_every_client_key_type_accepted() {
    let rsa = rcgen::KeyPair::from_pem(RSA_TEST_KEY).expect("RSA key");
    for key_type in KeyType::ALL {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let options = FederationOptions {
            key_type,
            ..Default::default()
        };
        let fed = generate_federation_with(
            dir.path(),
            &["bank-a".to_string()],
            &["localhost".to_string()],
            options,
            &mut rng,
        )
        .expect("generate");
        // Client certificates of every kind, all from this federation's CA.
        let ecdsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
        let clients = [
            (fed.operator.clone(), "operator".to_string()),
            (
                fed.institution("bank-a").expect("a").tls.clone(),
                "bank-a".into(),
            ),
            (
                issue_client(&fed, "ecdsa-p256-client", &ecdsa),
                "ecdsa-p256-client".into(),
            ),
            (
                issue_client(&fed, "ecdsa-p384-client", &p384),
                "ecdsa-p384-client".into(),
            ),
            (
                issue_client(&fed, "ed25519-client", &ed),
                "ed25519-client".into(),
            ),
            (issue_client(&fed, "rsa-client", &rsa), "rsa-client".into()),
        ];
        for (server, (addr, calls, stop)) in [
            ("tonic TLS", serve(&fed).await),
            ("rustls acceptor", serve_rustls(&fed).await),
        ] {
            for (files, name) in &clients {
                let tls = client_tls_config(files, "localhost").expect("client tls config");
                assert_eq!(
                    who_am_i(addr, tls).await.as_deref(),
                    Ok(name.as_str()),
                    "{key_type} federation, {server}, client {name}"
                );
            }
            assert_eq!(
                calls.load(Ordering::SeqCst),
                clients.len(),
                "{key_type}, {server}"
            );
            // A stranger's certificate is still refused by this server.
            let other_dir = tempfile::tempdir().expect("tempdir");
            let other = federation(other_dir.path(), 4, &["bank-a"]);
            let foreign = TlsFiles {
                ca_cert: fed.ca_cert.clone(),
                ..other.operator.clone()
            };
            let r = who_am_i(addr, client_tls_config(&foreign, "localhost").expect("tls")).await;
            assert!(
                r.is_err(),
                "{key_type}, {server}: foreign certificate accepted: {r:?}"
            );
            assert_eq!(calls.load(Ordering::SeqCst), clients.len());
            let _ = stop.send(());
        }
    }
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
    let chain = fedsilo_config::display_chain(&e); // the reason is in the chain
    assert!(chain.contains("PRIVATE KEY"), "{chain}");

    // Good files pass.
    server_tls_config(&a.coordinator).expect("server");
    client_tls_config(&a.operator, "localhost").expect("client");
}
