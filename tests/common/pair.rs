//! A bank and a partner holding different columns of the same customers (PSI and vertical
//! models): the federation with one schema and state directory each, job state waits and
//! the persisted alignments.

use std::path::Path;
use std::time::Duration;

use fedsilo_participant::psi::{Alignment, AlignmentStore};

use super::{repo, TestFed};

/// keygen for bank and partner, each with its own schema (`bank_schema`, `partner_schema`)
/// and state directory (`state-<name>`), dataset "customers".
pub fn pair_federation(bank_schema: &str, partner_schema: &str) -> TestFed {
    party_federation(&[("bank", bank_schema), ("partner", partner_schema)])
}

/// keygen for each `(name, schema)`, each party with its own schema (`<name>.schema.toml`)
/// and state directory (`state-<name>`), dataset "customers".
#[allow(dead_code)]
pub fn party_federation(parties: &[(&str, &str)]) -> TestFed {
    let names: Vec<&str> = parties.iter().map(|(n, _)| *n).collect();
    let fed = TestFed::new(
        &names,
        "customers",
        &repo().join("data/wa_churn.schema.toml"),
    );
    for (name, schema) in parties {
        std::fs::write(fed.path(&format!("{name}.schema.toml")), schema).unwrap();
    }
    for name in names {
        let p = fed.path(&format!("participant-{name}.toml"));
        let cfg = std::fs::read_to_string(&p).unwrap().replace(
            "schema = \"schema.toml\"",
            &format!("schema = \"{name}.schema.toml\""),
        );
        std::fs::write(&p, format!("state_dir = \"state-{name}\"\n{cfg}")).unwrap();
    }
    fed
}

/// Writes `spec` to `<dir>/<job>.toml` and launches it; the job id.
pub fn launch_spec(fed: &TestFed, job: &str, spec: &str) -> String {
    let p = fed.path(&format!("{job}.toml"));
    std::fs::write(&p, spec).unwrap();
    let out = fed.op(&["launch", "--spec", p.to_str().unwrap()]);
    assert!(out.starts_with(job), "launch printed: {out}");
    job.to_string()
}

/// Writes `spec` to `<dir>/refused.toml`, launches it, and returns the error the launch
/// must fail with.
pub fn launch_refused(fed: &TestFed, spec: &str) -> String {
    let p = fed.path("refused.toml");
    std::fs::write(&p, spec).unwrap();
    let cfg = fed.path("operator.toml");
    super::run_err(&[
        "job",
        "launch",
        "--config",
        cfg.to_str().unwrap(),
        "--spec",
        p.to_str().unwrap(),
    ])
}

/// Polls `job status` until it contains `state`.
pub fn wait_state(fed: &TestFed, job: &str, state: &str, timeout: Duration) -> String {
    let start = std::time::Instant::now();
    loop {
        let s = fed.status(job);
        if s.contains(state) {
            return s;
        }
        assert!(
            start.elapsed() < timeout,
            "job {job} not {state} in {timeout:?}: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `who`'s persisted alignment of `job` with `peer`.
pub fn alignment(fed: &TestFed, who: &str, job: &str, peer: &str) -> Alignment {
    alignment_in(&fed.path(&format!("state-{who}")), who, job, peer)
}

pub fn alignment_in(state: &Path, who: &str, job: &str, peer: &str) -> Alignment {
    AlignmentStore::new(state)
        .load(job, peer)
        .unwrap_or_else(|e| panic!("{who}'s alignment: {e}"))
        .unwrap_or_else(|| panic!("{who} persisted no alignment for {job}"))
}
