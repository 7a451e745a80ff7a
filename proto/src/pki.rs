//! A complete test federation in one call: CA, TLS certificates, identity keys, roster.
//!
//! [`generate_federation`] writes into one directory:
//!
//! | file | what |
//! | --- | --- |
//! | `ca.pem`, `ca.key` | self-signed federation CA |
//! | `coordinator.pem`, `coordinator.key` | server certificate, CN=coordinator, the given hosts as SANs |
//! | `operator.pem`, `operator.key` | client certificate, CN=operator |
//! | `<name>.pem`, `<name>.key` | client certificate of each institution, CN=`<name>` |
//! | `<name>.identity` | hex Ed25519 identity seed of each institution (mode 0600) |
//! | `roster.toml` | every institution's cert name and public identity key; `operators = ["operator"]` |
//!
//! TLS keys and certificates are ECDSA P-256 by default ([`KeyType`]), which every TLS stack
//! accepts — BoringSSL-based clients (grpcio, grpc-go's BoringCrypto builds, Envoy) refuse
//! Ed25519 certificates during the handshake. The SecAgg+ identity keys are Ed25519 whatever
//! the TLS key type: they are protocol keys, separate from TLS.
//!
//! The identity keys are drawn from the `rng` passed in, so a seeded RNG gives the same
//! roster every time; so are Ed25519 TLS keys (and, Ed25519 signatures being deterministic,
//! the whole federation is then the same file for file). ECDSA TLS keys and signatures come
//! from ring's system RNG (ring generates ECDSA keys itself and signs with random nonces).
//! Private keys are written with mode 0600. An existing federation is never replaced
//! unless [`FederationOptions::overwrite`] says so. Certificates are valid from 1975 to 4096
//! (rcgen's defaults): this is a test PKI, not a production one.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use fedsilo_crypto::keys::IdentityKey;

use crate::roster::{Roster, RosterEntry, RosterError};
use crate::tls::TlsFiles;

/// Certificate name of the coordinator's server certificate.
pub const COORDINATOR_NAME: &str = "coordinator";
/// Certificate name of the operator's client certificate.
pub const OPERATOR_NAME: &str = "operator";

/// The key type of the federation's TLS certificates (CA, coordinator, operator,
/// institutions). The SecAgg+ identity keys are Ed25519 regardless.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256: accepted by every TLS stack (the default).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519: rustls and Go accept it; BoringSSL/OpenSSL-based gRPC clients do not.
    Ed25519,
}

impl KeyType {
    /// Every key type, in the order of [`KeyType::name`]'s documentation.
    pub const ALL: [KeyType; 3] = [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Ed25519];

    /// `ecdsa-p256`, `ecdsa-p384` or `ed25519` (the spelling `fedsilo keygen --key-type` takes).
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KeyType {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, PkiError> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| PkiError::UnknownKeyType(s.to_owned()))
    }
}

/// How [`generate_federation_with`] writes a federation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FederationOptions {
    pub key_type: KeyType,
    /// Replace the files of a federation already in the directory. Without it, any file
    /// the federation would write that exists already is refused
    /// ([`PkiError::WouldOverwrite`]) and nothing is written.
    pub overwrite: bool,
}

/// Paths of everything [`generate_federation`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Federation {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// The coordinator's server files (`ca.pem`, `coordinator.pem`, `coordinator.key`).
    pub coordinator: TlsFiles,
    /// The operator's client files (`ca.pem`, `operator.pem`, `operator.key`).
    pub operator: TlsFiles,
    /// One per institution, in the order given.
    pub institutions: Vec<InstitutionFiles>,
    pub roster: PathBuf,
}

/// One institution's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstitutionFiles {
    pub name: String,
    pub tls: TlsFiles,
    /// Hex Ed25519 identity seed (mode 0600).
    pub identity: PathBuf,
}

impl Federation {
    /// The files of institution `name`.
    pub fn institution(&self, name: &str) -> Option<&InstitutionFiles> {
        self.institutions.iter().find(|i| i.name == name)
    }
}

/// Why a federation could not be generated or an identity loaded.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("no institutions given")]
    NoInstitutions,
    #[error("no coordinator host given (e.g. \"localhost\")")]
    NoHosts,
    #[error(
        "institution name {0:?} is not usable: use 1-64 ASCII letters, digits, '-', '_' or '.', \
         not starting with '.', and not \"ca\", \"coordinator\", \"operator\" or \"roster\""
    )]
    BadName(String),
    #[error("institution name {0:?} is given twice")]
    DuplicateName(String),
    #[error("coordinator host {host:?} is neither a DNS name nor an IP address")]
    BadHost {
        host: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot create certificate for {who}")]
    Cert {
        who: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{}: cannot create", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity {}: cannot read", path.display())]
    ReadIdentity {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity {}: seed is {got} bytes, expected 32", path.display())]
    IdentityLength { path: PathBuf, got: usize },
    #[error("identity {}: not hex", path.display())]
    IdentityHex {
        path: PathBuf,
        #[source]
        source: hex::FromHexError,
    },
    #[error("identity {}: not an Ed25519 seed", path.display())]
    IdentitySeed {
        path: PathBuf,
        #[source]
        source: fedsilo_crypto::keys::KeyError,
    },
    #[error(transparent)]
    Roster(#[from] RosterError),
    #[error(
        "{} already holds a federation ({} exists): refusing to replace its CA and keys",
        dir.display(),
        file.display()
    )]
    WouldOverwrite { dir: PathBuf, file: PathBuf },
    #[error("unknown key type {0:?}: use ecdsa-p256, ecdsa-p384 or ed25519")]
    UnknownKeyType(String),
}

/// Writes a test federation into `dir` (created if missing) with the default
/// [`FederationOptions`]: ECDSA P-256 certificates, and an existing federation in `dir` is
/// refused, not replaced.
///
/// `institutions` become client certificates CN=`<name>`, identity keys and roster
/// entries; `coordinator_hosts` (e.g. `["localhost", "127.0.0.1"]`) become the SANs of the
/// coordinator's server certificate — a client's `domain` must be one of them.
pub fn generate_federation(
    dir: &Path,
    institutions: &[String],
    coordinator_hosts: &[String],
    rng: &mut impl rand::CryptoRng,
) -> Result<Federation, PkiError> {
    generate_federation_with(
        dir,
        institutions,
        coordinator_hosts,
        FederationOptions::default(),
        rng,
    )
}

/// Every file [`generate_federation`] writes into `dir` for `institutions`.
pub fn federation_files(dir: &Path, institutions: &[String]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["ca.pem", "ca.key", "roster.toml"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    for name in [COORDINATOR_NAME, OPERATOR_NAME] {
        files.push(dir.join(format!("{name}.pem")));
        files.push(dir.join(format!("{name}.key")));
    }
    for name in institutions {
        for ext in ["pem", "key", "identity"] {
            files.push(dir.join(format!("{name}.{ext}")));
        }
    }
    files
}

/// [`generate_federation`] with a chosen key type and overwrite policy.
pub fn generate_federation_with(
    dir: &Path,
    institutions: &[String],
    coordinator_hosts: &[String],
    options: FederationOptions,
    rng: &mut impl rand::CryptoRng,
) -> Result<Federation, PkiError> {
    let key_type = options.key_type;
    if institutions.is_empty() {
        return Err(PkiError::NoInstitutions);
    }
    if coordinator_hosts.is_empty() {
        return Err(PkiError::NoHosts);
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in institutions {
        if !usable_name(name) {
            return Err(PkiError::BadName(name.clone()));
        }
        if !seen.insert(name.as_str()) {
            return Err(PkiError::DuplicateName(name.clone()));
        }
    }
    // Check every host on its own, so the error names the bad one — before anything is
    // written.
    for host in coordinator_hosts {
        CertificateParams::new(vec![host.clone()]).map_err(|source| PkiError::BadHost {
            host: host.clone(),
            source,
        })?;
    }
    if !options.overwrite {
        // `symlink_metadata`: a dangling link is a file we would write through, too.
        if let Some(file) = federation_files(dir, institutions)
            .into_iter()
            .find(|f| f.symlink_metadata().is_ok())
        {
            return Err(PkiError::WouldOverwrite {
                dir: dir.to_owned(),
                file,
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })?;

    // CA
    let ca_key = tls_key(key_type, rng, "ca")?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn("fedsilo federation CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|source| PkiError::Cert {
            who: "ca".into(),
            source,
        })?;
    let ca_pem = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    write_file(&ca_pem, ca_cert.pem().as_bytes(), false)?;
    write_file(&ca_key_path, ca_key.serialize_pem().as_bytes(), true)?;

    let issue = |rng: &mut dyn rand::RngCore,
                 cn: &str,
                 sans: Vec<String>,
                 server: bool|
     -> Result<TlsFiles, PkiError> {
        let key = tls_key(key_type, rng, cn)?;
        let mut params = if server {
            CertificateParams::new(sans).map_err(|source| PkiError::BadHost {
                host: coordinator_hosts.join(", "),
                source,
            })?
        } else {
            CertificateParams::default()
        };
        params.distinguished_name = dn(cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .map_err(|source| PkiError::Cert {
                who: cn.to_owned(),
                source,
            })?;
        let files = TlsFiles {
            ca_cert: ca_pem.clone(),
            cert: dir.join(format!("{cn}.pem")),
            key: dir.join(format!("{cn}.key")),
        };
        write_file(&files.cert, cert.pem().as_bytes(), false)?;
        write_file(&files.key, key.serialize_pem().as_bytes(), true)?;
        Ok(files)
    };

    let coordinator = issue(rng, COORDINATOR_NAME, coordinator_hosts.to_vec(), true)?;
    let operator = issue(rng, OPERATOR_NAME, Vec::new(), false)?;

    let mut files = Vec::with_capacity(institutions.len());
    let mut entries = Vec::with_capacity(institutions.len());
    for name in institutions {
        let tls = issue(rng, name, Vec::new(), false)?;
        let identity = IdentityKey::generate(rng);
        let seed = identity.seed();
        let identity_path = dir.join(format!("{name}.identity"));
        let mut text = hex::encode(seed);
        text.push('\n');
        write_file(&identity_path, text.as_bytes(), true)?;
        entries.push(RosterEntry {
            name: name.clone(),
            cert_name: name.clone(),
            identity_key: hex::encode(identity.public_key()),
        });
        files.push(InstitutionFiles {
            name: name.clone(),
            tls,
            identity: identity_path,
        });
    }

    let roster = Roster {
        institutions: entries,
        operators: vec![OPERATOR_NAME.to_owned()],
    };
    roster.validate()?;
    let roster_path = dir.join("roster.toml");
    roster.save(&roster_path)?;

    Ok(Federation {
        dir: dir.to_owned(),
        ca_cert: ca_pem,
        ca_key: ca_key_path,
        coordinator,
        operator,
        institutions: files,
        roster: roster_path,
    })
}

/// Reads a `<name>.identity` file: 64 hex digits (surrounding whitespace ignored).
pub fn load_identity(path: &Path) -> Result<IdentityKey, PkiError> {
    let text = std::fs::read_to_string(path).map_err(|source| PkiError::ReadIdentity {
        path: path.to_owned(),
        source,
    })?;
    let bytes = hex::decode(text.trim()).map_err(|source| PkiError::IdentityHex {
        path: path.to_owned(),
        source,
    })?;
    let got = bytes.len();
    let seed = <[u8; 32]>::try_from(bytes).map_err(|_| PkiError::IdentityLength {
        path: path.to_owned(),
        got,
    })?;
    IdentityKey::from_seed(seed).map_err(|source| PkiError::IdentitySeed {
        path: path.to_owned(),
        source,
    })
}

fn usable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && ![COORDINATOR_NAME, OPERATOR_NAME, "ca", "roster"].contains(&name)
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A TLS key pair of `key_type`: Ed25519 from `rng`, ECDSA from ring's system RNG.
fn tls_key(key_type: KeyType, rng: &mut dyn rand::RngCore, who: &str) -> Result<KeyPair, PkiError> {
    let alg = match key_type {
        KeyType::Ed25519 => return ed25519_key(rng, who),
        KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
    };
    KeyPair::generate_for(alg).map_err(|source| PkiError::Cert {
        who: who.to_owned(),
        source,
    })
}

/// An Ed25519 key pair from 32 bytes of `rng`, as a PKCS#8 v1 document (RFC 8410).
fn ed25519_key(rng: &mut dyn rand::RngCore, who: &str) -> Result<KeyPair, PkiError> {
    const PKCS8_ED25519_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = Vec::with_capacity(48);
    der.extend_from_slice(&PKCS8_ED25519_PREFIX);
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    der.extend_from_slice(&seed);
    KeyPair::try_from(der).map_err(|source| PkiError::Cert {
        who: who.to_owned(),
        source,
    })
}

/// Writes `bytes` to `path`; `secret` files get mode 0600 on Unix (set at creation, so the
/// secret is never readable by others, even briefly).
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(path).map_err(io)?;
    // An existing file keeps its old mode through `open`: tighten it explicitly.
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}
