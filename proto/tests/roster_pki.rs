//! `generate_federation` writes a complete, consistent test federation; rosters validate.

use std::path::Path;

use fedsilo_config::display_chain;
use fedsilo_proto::pki::{
    generate_federation, generate_federation_with, load_identity, FederationOptions, KeyType,
    PkiError,
};
use fedsilo_proto::roster::{Roster, RosterEntry, RosterError};
use rand::SeedableRng;

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn hosts() -> Vec<String> {
    names(&["localhost", "127.0.0.1"])
}

fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}

fn entry(name: &str, key_byte: u8) -> RosterEntry {
    RosterEntry {
        name: name.into(),
        cert_name: name.into(),
        identity_key: hex::encode([key_byte; 32]),
    }
}

fn roster(entries: Vec<RosterEntry>) -> Roster {
    Roster {
        institutions: entries,
        operators: vec!["operator".into()],
    }
}

#[test]
fn generate_federation_writes_every_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("pki");
    let inst = names(&["zeta-bank", "alpha-bank", "mid_bank"]);
    let fed = generate_federation(&out, &inst, &hosts(), &mut rng(7)).expect("generate");

    let mut expected = vec![
        "ca.pem",
        "ca.key",
        "coordinator.pem",
        "coordinator.key",
        "operator.pem",
        "operator.key",
        "roster.toml",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    for n in &inst {
        for ext in ["pem", "key", "identity"] {
            expected.push(format!("{n}.{ext}"));
        }
    }
    for f in &expected {
        let p = out.join(f);
        let meta = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(meta.len() > 0, "{} is empty", p.display());
    }
    let mut listed: Vec<String> = std::fs::read_dir(&out)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected, "exactly these files");

    assert_eq!(fed.dir, out);
    assert_eq!(fed.roster, out.join("roster.toml"));
    assert_eq!(fed.coordinator.cert, out.join("coordinator.pem"));
    assert_eq!(fed.institutions.len(), 3);
    assert_eq!(fed.institutions[0].name, "zeta-bank");
    assert_eq!(fed.institutions[0].identity, out.join("zeta-bank.identity"));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [
            "ca.key",
            "coordinator.key",
            "alpha-bank.key",
            "alpha-bank.identity",
        ] {
            let mode = std::fs::metadata(out.join(f))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f} has mode {:o}", mode & 0o777);
        }
    }
    for f in ["ca.pem", "coordinator.pem", "zeta-bank.pem"] {
        let text = std::fs::read_to_string(out.join(f)).expect("read");
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{f}");
    }
}

#[test]
fn certificates_carry_the_expected_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = generate_federation(dir.path(), &names(&["bank-a"]), &hosts(), &mut rng(1))
        .expect("generate");
    let der = |p: &Path| {
        let pem = std::fs::read_to_string(p).expect("read");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64_decode(&body)
    };
    let name = |p: &Path| fedsilo_proto::tls::cert_name(&der(p));
    assert_eq!(name(&fed.coordinator.cert).as_deref(), Some("coordinator"));
    assert_eq!(name(&fed.operator.cert).as_deref(), Some("operator"));
    assert_eq!(
        name(&fed.institution("bank-a").expect("bank-a").tls.cert).as_deref(),
        Some("bank-a")
    );
}

/// Minimal standard base64 decoder, enough for PEM bodies.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= u32::from(val(c)) << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    out
}

#[test]
fn roster_round_trips_and_matches_identities() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inst = names(&["zeta-bank", "alpha-bank", "mid_bank"]);
    let fed = generate_federation(dir.path(), &inst, &hosts(), &mut rng(11)).expect("generate");
    let r = Roster::load(&fed.roster).expect("roster loads");
    assert_eq!(r.operators, ["operator"]);
    assert_eq!(r.institutions.len(), 3);

    // Ids are the name-sorted order, whatever order the institutions were given in.
    assert_eq!(r.participant_id("alpha-bank"), Some(0));
    assert_eq!(r.participant_id("mid_bank"), Some(1));
    assert_eq!(r.participant_id("zeta-bank"), Some(2));
    assert_eq!(r.participant_id("nobody"), None);
    let (id, e) = r.by_cert_name("zeta-bank").expect("by cert name");
    assert_eq!((id, e.name.as_str()), (2, "zeta-bank"));
    assert!(r.by_cert_name("operator").is_none());
    assert!(r.is_operator("operator"));
    assert!(!r.is_operator("zeta-bank"));

    // Every identity file loads to the public key the roster lists for it.
    let crypto = r.to_crypto_roster();
    assert_eq!(crypto.len(), 3);
    for name in &inst {
        let key = load_identity(&dir.path().join(format!("{name}.identity"))).expect("identity");
        let id = r.participant_id(name).expect("id");
        let listed = r
            .institutions
            .iter()
            .find(|e| &e.name == name)
            .expect("entry");
        assert_eq!(hex::encode(key.public_key()), listed.identity_key);
        assert_eq!(crypto.get(id), Some(&key.public_key()));
    }

    // save → load is the identity (up to institution order, which save normalises).
    let copy = dir.path().join("copy.toml");
    r.save(&copy).expect("save");
    assert_eq!(Roster::load(&copy).expect("load copy"), r);
    let mut shuffled = r.clone();
    shuffled.institutions.reverse();
    shuffled.save(&copy).expect("save");
    let back = Roster::load(&copy).expect("load");
    assert_eq!(back.participant_id("alpha-bank"), Some(0));
}

#[test]
fn same_seed_same_federation() {
    let d1 = tempfile::tempdir().expect("tempdir");
    let d2 = tempfile::tempdir().expect("tempdir");
    let d3 = tempfile::tempdir().expect("tempdir");
    let inst = names(&["a", "b"]);
    let ed25519 = FederationOptions {
        key_type: KeyType::Ed25519,
        ..Default::default()
    };
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).expect("read");
    // Ed25519 TLS keys come from the rng and Ed25519 signatures are deterministic: the
    // whole federation is the same file for file.
    generate_federation_with(d1.path(), &inst, &hosts(), ed25519, &mut rng(5)).expect("1");
    generate_federation_with(d2.path(), &inst, &hosts(), ed25519, &mut rng(5)).expect("2");
    generate_federation_with(d3.path(), &inst, &hosts(), ed25519, &mut rng(6)).expect("3");
    for f in ["roster.toml", "ca.pem", "a.key", "b.identity"] {
        assert_eq!(
            read(d1.path(), f),
            read(d2.path(), f),
            "{f} differs with the same seed"
        );
        assert_ne!(
            read(d1.path(), f),
            read(d3.path(), f),
            "{f} equal with another seed"
        );
    }
    // ECDSA (the default): the identity keys, hence the roster, still follow the seed; the
    // TLS keys are ring's own.
    let e1 = tempfile::tempdir().expect("tempdir");
    let e2 = tempfile::tempdir().expect("tempdir");
    generate_federation(e1.path(), &inst, &hosts(), &mut rng(5)).expect("1");
    generate_federation(e2.path(), &inst, &hosts(), &mut rng(5)).expect("2");
    for f in ["roster.toml", "a.identity", "b.identity"] {
        assert_eq!(read(e1.path(), f), read(e2.path(), f), "{f}");
    }
    assert_ne!(read(e1.path(), "a.key"), read(e2.path(), "a.key"));
}

/// The DER certificate of a PEM file.
fn cert_der(p: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(p).expect("read");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64_decode(&body)
}

/// (public key algorithm, its parameter — the curve for EC keys —, signature algorithm) OIDs.
fn key_algorithms(p: &Path) -> (String, Option<String>, String) {
    let der = cert_der(p);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("X.509");
    let spki = &cert.tbs_certificate.subject_pki.algorithm;
    (
        spki.algorithm.to_id_string(),
        spki.parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string()),
        cert.signature_algorithm.algorithm.to_id_string(),
    )
}

const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";
const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const ED25519: &str = "1.3.101.112";

#[test]
fn certificates_are_ecdsa_p256_by_default_and_the_key_type_is_a_choice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = generate_federation(
        &dir.path().join("p256"),
        &names(&["bank-a"]),
        &hosts(),
        &mut rng(2),
    )
    .expect("generate");
    for cert in [
        &fed.ca_cert,
        &fed.coordinator.cert,
        &fed.operator.cert,
        &fed.institution("bank-a").expect("bank-a").tls.cert,
    ] {
        assert_eq!(
            key_algorithms(cert),
            (EC_PUBLIC_KEY.into(), Some(P256.into()), ECDSA_SHA256.into()),
            "{}",
            cert.display()
        );
    }
    for (key_type, expected) in [
        (
            KeyType::EcdsaP384,
            (
                EC_PUBLIC_KEY.to_string(),
                Some(P384.to_string()),
                ECDSA_SHA384.to_string(),
            ),
        ),
        (
            KeyType::Ed25519,
            (ED25519.to_string(), None, ED25519.to_string()),
        ),
    ] {
        let out = dir.path().join(key_type.name());
        let options = FederationOptions {
            key_type,
            ..Default::default()
        };
        let fed =
            generate_federation_with(&out, &names(&["bank-a"]), &hosts(), options, &mut rng(2))
                .expect("generate");
        assert_eq!(
            key_algorithms(&fed.coordinator.cert),
            expected,
            "{key_type}"
        );
        assert_eq!(
            key_algorithms(&fed.institution("bank-a").expect("a").tls.cert),
            expected
        );
        // The identity keys stay Ed25519 seeds whatever the TLS key type.
        load_identity(&fed.institution("bank-a").expect("a").identity).expect("identity");
    }
    for k in KeyType::ALL {
        assert_eq!(k.name().parse::<KeyType>().expect("parse"), k);
    }
    let e = "rsa".parse::<KeyType>().expect_err("rsa");
    assert!(e.to_string().contains("ecdsa-p256"), "{e}");
}

#[test]
fn an_existing_federation_is_not_replaced_unless_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inst = names(&["bank-a", "bank-b"]);
    let fed = generate_federation(dir.path(), &inst, &hosts(), &mut rng(3)).expect("first");
    let ca = std::fs::read(&fed.ca_cert).expect("ca");
    let e = generate_federation(dir.path(), &inst, &hosts(), &mut rng(4)).expect_err("second");
    assert!(
        matches!(e, PkiError::WouldOverwrite { ref file, .. } if file.ends_with("ca.pem")),
        "{e:?}"
    );
    assert!(
        e.to_string().contains(&dir.path().display().to_string()),
        "{e}"
    );
    assert_eq!(
        std::fs::read(&fed.ca_cert).expect("ca"),
        ca,
        "replaced anyway"
    );
    // One leftover file of the federation is enough to refuse.
    let other = tempfile::tempdir().expect("tempdir");
    std::fs::write(other.path().join("bank-b.identity"), "keep me").expect("write");
    let e = generate_federation(other.path(), &inst, &hosts(), &mut rng(4)).expect_err("leftover");
    assert!(
        matches!(e, PkiError::WouldOverwrite { ref file, .. } if file.ends_with("bank-b.identity")),
        "{e:?}"
    );
    assert!(
        !other.path().join("ca.pem").exists(),
        "something was written"
    );
    // Asked to, it replaces the federation.
    let options = FederationOptions {
        overwrite: true,
        ..Default::default()
    };
    generate_federation_with(dir.path(), &inst, &hosts(), options, &mut rng(4)).expect("overwrite");
    assert_ne!(std::fs::read(&fed.ca_cert).expect("ca"), ca);
    // A bad host is refused before anything is written.
    let third = tempfile::tempdir().expect("tempdir");
    let bad = names(&["localhost", "bänk.example"]);
    assert!(matches!(
        generate_federation(third.path(), &inst, &bad, &mut rng(4)),
        Err(PkiError::BadHost { ref host, .. }) if host == "bänk.example"
    ));
    assert_eq!(std::fs::read_dir(third.path()).expect("dir").count(), 0);
}

#[test]
fn generate_federation_refuses_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    assert!(matches!(
        generate_federation(p, &[], &hosts(), &mut rng(0)),
        Err(PkiError::NoInstitutions)
    ));
    assert!(matches!(
        generate_federation(p, &names(&["a"]), &[], &mut rng(0)),
        Err(PkiError::NoHosts)
    ));
    for bad in [
        "",
        "../evil",
        "a/b",
        ".hidden",
        "coordinator",
        "operator",
        "ca",
        "bank a",
    ] {
        let r = generate_federation(p, &names(&[bad]), &hosts(), &mut rng(0));
        assert!(
            matches!(r, Err(PkiError::BadName(ref n)) if n == bad),
            "{bad:?}: {r:?}"
        );
    }
    assert!(matches!(
        generate_federation(p, &names(&["a", "b", "a"]), &hosts(), &mut rng(0)),
        Err(PkiError::DuplicateName(ref n)) if n == "a"
    ));
}

/// `IdentityKey` holds a secret and need not be `Debug`, so no `expect_err`.
fn identity_err(p: &Path) -> PkiError {
    match load_identity(p) {
        Ok(_) => panic!("{} accepted", p.display()),
        Err(e) => e,
    }
}

#[test]
fn load_identity_refuses_bad_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("x.identity");
    assert!(matches!(
        load_identity(&p),
        Err(PkiError::ReadIdentity { .. })
    ));
    std::fs::write(&p, "zz").expect("write");
    let e = identity_err(&p);
    assert!(
        e.to_string().contains("x.identity") && e.to_string().contains("not hex"),
        "{e}"
    );
    std::fs::write(&p, hex::encode([1u8; 31])).expect("write");
    let e = identity_err(&p);
    assert!(e.to_string().contains("31 bytes"), "{e}");
    std::fs::write(&p, format!("  {}\n", hex::encode([1u8; 32]))).expect("write");
    load_identity(&p).expect("whitespace around the hex is fine");
}

#[test]
fn roster_validation_errors() {
    assert!(roster(vec![entry("a", 1), entry("b", 2)])
        .validate()
        .is_ok());

    let e = roster(vec![]).validate().expect_err("empty");
    assert!(matches!(e, RosterError::NoInstitutions), "{e:?}");

    let e = roster(vec![entry("a", 1), entry("a", 2)])
        .validate()
        .expect_err("dup name");
    assert!(
        matches!(e, RosterError::DuplicateName(ref n) if n == "a"),
        "{e:?}"
    );

    let mut b = entry("b", 2);
    b.cert_name = "a".into();
    let e = roster(vec![entry("a", 1), b])
        .validate()
        .expect_err("dup cert");
    assert!(
        matches!(e, RosterError::DuplicateCertName(ref n) if n == "a"),
        "{e:?}"
    );

    let e = roster(vec![entry("a", 1), entry("b", 1)])
        .validate()
        .expect_err("dup key");
    assert!(matches!(e, RosterError::DuplicateKey { .. }), "{e:?}");

    let mut short = entry("a", 1);
    short.identity_key = hex::encode([1u8; 31]);
    let e = roster(vec![short]).validate().expect_err("short key");
    assert!(
        matches!(e, RosterError::BadKey { ref name, .. } if name == "a"),
        "{e:?}"
    );
    let chain = display_chain(&e); // the reason is in the chain the CLI prints
    assert!(chain.contains("31 bytes"), "{chain}");

    let mut not_hex = entry("a", 1);
    not_hex.identity_key = "g".repeat(64);
    let e = roster(vec![not_hex]).validate().expect_err("not hex");
    let chain = display_chain(&e);
    assert!(chain.contains("not hex"), "{chain}");

    let mut empty = entry("a", 1);
    empty.cert_name = " ".into();
    let e = roster(vec![empty]).validate().expect_err("empty cert name");
    assert!(
        matches!(
            e,
            RosterError::Empty {
                index: 0,
                field: "cert_name"
            }
        ),
        "{e:?}"
    );

    let mut ops = roster(vec![entry("a", 1)]);
    ops.operators.push(String::new());
    assert!(matches!(
        ops.validate(),
        Err(RosterError::EmptyOperator { index: 1 })
    ));
}

#[test]
fn roster_load_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("roster.toml");
    let e = Roster::load(&p).expect_err("missing");
    assert!(matches!(e, RosterError::Read { .. }) && e.to_string().contains("roster.toml"));

    std::fs::write(&p, "institutions = 3\n").expect("write");
    let e = Roster::load(&p).expect_err("bad toml");
    assert!(matches!(e, RosterError::Parse { .. }), "{e:?}");

    // Parses, but does not validate: the file is named and the reason kept.
    let bad = roster(vec![entry("a", 1), entry("a", 2)]);
    std::fs::write(&p, toml::to_string(&bad).expect("toml")).expect("write");
    let e = Roster::load(&p).expect_err("invalid");
    assert!(e.to_string().contains("roster.toml"), "{e}");
    let chain = display_chain(&e);
    assert!(chain.contains("more than once"), "{chain}");

    // `operators` may be omitted.
    std::fs::write(
        &p,
        format!(
            "[[institutions]]\nname = \"a\"\ncert_name = \"a\"\nidentity_key = \"{}\"\n",
            hex::encode([3u8; 32])
        ),
    )
    .expect("write");
    let r = Roster::load(&p).expect("no operators");
    assert!(r.operators.is_empty());
}
