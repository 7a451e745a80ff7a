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
//! All keys — TLS (Ed25519) and identity — are drawn from the `rng` passed in, so a seeded
//! RNG gives the same federation every time. Private keys are written with mode 0600.
//! Certificates are valid from 1975 to 4096 (rcgen's defaults): this is a test PKI, not a
//! production one.

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
    #[error("coordinator host {host:?} is neither a DNS name nor an IP address: {source}")]
    BadHost {
        host: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot create certificate for {who}: {source}")]
    Cert {
        who: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{}: cannot create: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity {}: cannot read: {source}", path.display())]
    ReadIdentity {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity {}: {detail}", path.display())]
    BadIdentity { path: PathBuf, detail: String },
    #[error(transparent)]
    Roster(#[from] RosterError),
}

/// Writes a test federation into `dir` (created if missing; existing files are replaced).
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
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })?;

    // CA
    let ca_key = ed25519_key(rng, "ca")?;
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
        let key = ed25519_key(rng, cn)?;
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

    // Check every host on its own, so the error names the bad one.
    for host in coordinator_hosts {
        CertificateParams::new(vec![host.clone()]).map_err(|source| PkiError::BadHost {
            host: host.clone(),
            source,
        })?;
    }
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
    let bad = |detail: String| PkiError::BadIdentity {
        path: path.to_owned(),
        detail,
    };
    let bytes = hex::decode(text.trim()).map_err(|e| bad(format!("not hex: {e}")))?;
    let got = bytes.len();
    let seed = <[u8; 32]>::try_from(bytes)
        .map_err(|_| bad(format!("seed is {got} bytes, expected 32")))?;
    IdentityKey::from_seed(seed).map_err(|e| bad(e.to_string()))
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
