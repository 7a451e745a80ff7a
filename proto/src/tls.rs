//! Mutual TLS as configuration, and the caller's identity from its certificate.
//!
//! Both sides present a certificate signed by the federation CA (`ca.pem`): the coordinator
//! requires a client certificate on every connection, so a handler can trust
//! [`peer_name`] — the CN (or first DNS SAN) of the verified client leaf certificate.
//! Identity is never a request field.
//!
//! The files are read and checked here, so a missing, unreadable or non-PEM file is
//! reported by name before any socket is opened.
//!
//! Both sides use rustls with ring's provider, which verifies ECDSA (P-256, P-384),
//! Ed25519 and RSA (PKCS#1 v1.5 and PSS) certificate signatures: certificates of any of
//! these key types are accepted, from clients and from the coordinator.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

/// The three PEM files of one TLS endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The federation CA certificate: the trust root for the other side.
    pub ca_cert: PathBuf,
    /// This endpoint's certificate (chain), signed by the CA.
    pub cert: PathBuf,
    /// This endpoint's private key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub key: PathBuf,
}

/// Why a TLS configuration could not be built. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {}: cannot read", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {}: not PEM", path.display())]
    NotPem {
        what: &'static str,
        path: PathBuf,
        #[source]
        problem: PemProblem,
    },
    #[error("TLS refused the configuration ({})", files.join(", "))]
    Rejected {
        files: Vec<String>,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What is wrong with a PEM file ([`TlsError::NotPem`]).
#[derive(Debug, thiserror::Error)]
pub enum PemProblem {
    #[error("unreadable PEM")]
    Unreadable(#[source] x509_parser::error::PEMError),
    #[error("no PEM block found")]
    NoBlock,
    #[error("block {block}: expected CERTIFICATE, found {label}")]
    NotACertificate { block: usize, label: String },
    #[error("block {block}: not an X.509 certificate")]
    NotX509 {
        block: usize,
        #[source]
        source: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
    #[error("no PRIVATE KEY block")]
    NoPrivateKey,
}

/// Server side: this endpoint's identity, and client certificates REQUIRED and verified
/// against `f.ca_cert`.
pub fn server_tls_config(f: &TlsFiles) -> Result<ServerTlsConfig, TlsError> {
    let ca = read_certs("CA certificate", &f.ca_cert)?;
    let cert = read_certs("certificate", &f.cert)?;
    let key = read_key("private key", &f.key)?;
    let cfg = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca))
        .client_auth_optional(false);
    // Build the acceptor once now, so a key that does not parse or match fails here,
    // naming the files, rather than when the server starts.
    tonic::transport::Server::builder()
        .tls_config(cfg.clone())
        .map_err(|e| rejected(f, e))?;
    Ok(cfg)
}

/// ALPN protocol id of HTTP/2, the transport of gRPC.
const ALPN_H2: &[u8] = b"h2";

/// Server side as a rustls configuration, for a server that terminates TLS itself (the
/// coordinator does, to bound handshakes and connections): the same policy as
/// [`server_tls_config`] — client certificates REQUIRED and verified against `f.ca_cert` —
/// with ring's provider, TLS 1.2 and 1.3, and ALPN `h2`.
pub fn server_rustls_config(f: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    rustls_server(f, ClientCerts::Required, ALPN_H2)
}

/// ALPN protocol id of HTTP/1.1, the transport of the coordinator's operations listener.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Server side of the coordinator's operations listener (dashboard, `/metrics`,
/// `/healthz`): the coordinator's certificate, client certificates verified against
/// `f.ca_cert` when presented but not required (a browser or a load balancer authenticates
/// with a token, or not at all for `/healthz`), ALPN `http/1.1`.
pub fn ops_rustls_config(f: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    rustls_server(f, ClientCerts::Optional, ALPN_HTTP1)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientCerts {
    Required,
    Optional,
}

fn rustls_server(
    f: &TlsFiles,
    client_certs: ClientCerts,
    alpn: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let ca = read_certs("CA certificate", &f.ca_cert)?;
    let cert = read_certs("certificate", &f.cert)?;
    let key = read_key("private key", &f.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(&ca) {
        roots
            .add(der.map_err(|e| rejected(f, e))?)
            .map_err(|e| rejected(f, e))?;
    }
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| rejected(f, e))?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| rejected(f, e))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    let verifier = match client_certs {
        ClientCerts::Required => verifier,
        ClientCerts::Optional => verifier.allow_unauthenticated(),
    }
    .build()
    .map_err(|e| rejected(f, e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| rejected(f, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| rejected(f, e))?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(cfg))
}

/// Client side: trust only `f.ca_cert`, present this endpoint's certificate, and expect the
/// server certificate to be valid for `domain` (a DNS name or IP address in its SANs).
pub fn client_tls_config(f: &TlsFiles, domain: &str) -> Result<ClientTlsConfig, TlsError> {
    let ca = read_certs("CA certificate", &f.ca_cert)?;
    let cert = read_certs("certificate", &f.cert)?;
    let key = read_key("private key", &f.key)?;
    let cfg = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(domain);
    tonic::transport::Endpoint::from_static("https://fedsilo.invalid")
        .tls_config(cfg.clone())
        .map_err(|e| rejected(f, e))?;
    Ok(cfg)
}

/// The name of the verified peer: CN of the leaf certificate, else its first DNS SAN.
///
/// `Unauthenticated` when the connection carried no client certificate (no TLS, or a
/// server built without [`server_tls_config`]) or the certificate names nobody.
pub fn peer_name<T>(req: &tonic::Request<T>) -> Result<String, tonic::Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| tonic::Status::unauthenticated("no client certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| tonic::Status::unauthenticated("no client certificate"))?;
    cert_name(leaf).ok_or_else(|| {
        tonic::Status::unauthenticated("client certificate has neither a CN nor a DNS name")
    })
}

/// CN of a DER certificate, else its first DNS SAN; `None` if it has neither or does not
/// parse.
pub fn cert_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
    {
        return Some(cn.to_owned());
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::DNSName(d) if !d.is_empty() => Some((*d).to_owned()),
        _ => None,
    })
}

fn rejected(f: &TlsFiles, e: impl std::error::Error + Send + Sync + 'static) -> TlsError {
    TlsError::Rejected {
        files: [&f.ca_cert, &f.cert, &f.key]
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        source: Box::new(e),
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn pem_blocks(what: &'static str, path: &Path, bytes: &[u8]) -> Result<Vec<Pem>, TlsError> {
    let not_pem = |problem| TlsError::NotPem {
        what,
        path: path.to_owned(),
        problem,
    };
    let blocks = Pem::iter_from_buffer(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(PemProblem::Unreadable(e)))?;
    if blocks.is_empty() {
        return Err(not_pem(PemProblem::NoBlock));
    }
    Ok(blocks)
}

/// Reads a PEM file of one or more certificates, each of which must parse as X.509.
fn read_certs(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = read(what, path)?;
    for (i, pem) in pem_blocks(what, path, &bytes)?.iter().enumerate() {
        let not_cert = |problem| TlsError::NotPem {
            what,
            path: path.to_owned(),
            problem,
        };
        if pem.label != "CERTIFICATE" {
            return Err(not_cert(PemProblem::NotACertificate {
                block: i,
                label: pem.label.clone(),
            }));
        }
        x509_parser::parse_x509_certificate(&pem.contents)
            .map_err(|source| not_cert(PemProblem::NotX509 { block: i, source }))?;
    }
    Ok(bytes)
}

/// Reads a PEM file whose first block is a private key.
fn read_key(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = read(what, path)?;
    let blocks = pem_blocks(what, path, &bytes)?;
    if !blocks.iter().any(|b| b.label.ends_with("PRIVATE KEY")) {
        return Err(TlsError::NotPem {
            what,
            path: path.to_owned(),
            problem: PemProblem::NoPrivateKey,
        });
    }
    Ok(bytes)
}
