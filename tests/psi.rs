//! PSI jobs end to end: three real processes (coordinator, bank, partner) over gRPC with
//! mutual TLS on loopback, the bank and the partner each holding part of wa_churn under
//! customer ids, 60–80 % of customers shared, in different row orders.
//!
//! Each party's persisted alignment must list, row for row, the same customers, and exactly
//! the plain intersection of the two CSVs' ids; bad input (duplicate ids, ids in another
//! format) must fail the job with a message that says what to fix.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::pair::{alignment, wait_state};
use common::*;
use fedsilo_participant::psi::{Alignment, AlignmentStore};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const BANK_SCHEMA: &str = r#"
id_column = "customer_id"
missing = []
labels = [{ column = "churn", positive = "Yes" }]
features = [
  { name = "tenure", type = "numeric" },
  { name = "monthly_charges", type = "numeric" },
]
"#;

const PARTNER_SCHEMA: &str = r#"
id_column = "customer_id"
missing = []
features = [
  { name = "female", type = "numeric" },
  { name = "senior_citizen", type = "numeric" },
]
"#;

/// How the partner writes the ids it shares with the bank.
#[derive(Clone, Copy)]
enum PartnerIds {
    /// `wa-00042` against the bank's `WA-00042` (the `text` format folds case).
    LowerCase,
    /// `CUST-WA-00042`: another id scheme, nothing in common.
    Prefixed,
}

struct Split {
    /// customer id (bank's spelling) of each bank data row, in file order.
    bank_ids: Vec<String>,
    /// The same for the partner, in the bank's spelling.
    partner_ids: Vec<String>,
}

/// Writes bank.csv and partner.csv from wa_churn: ids `WA-00000`…, the bank keeps ~75 %
/// of the customers (churn, tenure, monthly_charges), the partner ~70 % (female,
/// senior_citizen), each in its own shuffled order. `duplicate_at_bank` repeats one bank
/// row's id on another row.
fn write_split(dir: &Path, seed: u64, partner_ids: PartnerIds, duplicate_at_bank: bool) -> Split {
    let (header, rows) = read_csv(&repo().join("data/wa_churn.csv"));
    let cols: Vec<&str> = header.split(',').collect();
    let at = |name: &str| cols.iter().position(|c| *c == name).unwrap();
    let (churn, tenure, monthly, female, senior) = (
        at("churn"),
        at("tenure"),
        at("monthly_charges"),
        at("female"),
        at("senior_citizen"),
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut bank: Vec<(String, String)> = Vec::new();
    let mut partner: Vec<(String, String)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let f: Vec<&str> = r.split(',').collect();
        let id = format!("WA-{i:05}");
        if rng.random_bool(0.75) {
            bank.push((
                id.clone(),
                format!("{},{},{}", f[churn], f[tenure], f[monthly]),
            ));
        }
        if rng.random_bool(0.70) {
            partner.push((id, format!("{},{}", f[female], f[senior])));
        }
    }
    bank.shuffle(&mut rng);
    partner.shuffle(&mut rng);
    if duplicate_at_bank {
        let id = bank[3].0.clone();
        bank[10].0 = id;
    }
    let mut text = String::from("customer_id,churn,tenure,monthly_charges\n");
    for (id, rest) in &bank {
        text.push_str(&format!("{id},{rest}\n"));
    }
    std::fs::write(dir.join("bank.csv"), text).unwrap();
    let mut text = String::from("female,customer_id,senior_citizen\n");
    for (id, rest) in &partner {
        let (a, b) = rest.split_once(',').unwrap();
        let written = match partner_ids {
            PartnerIds::LowerCase => id.to_lowercase(),
            PartnerIds::Prefixed => format!("CUST-{id}"),
        };
        text.push_str(&format!("{a}, {written} ,{b}\n"));
    }
    std::fs::write(dir.join("partner.csv"), text).unwrap();
    Split {
        bank_ids: bank.into_iter().map(|(id, _)| id).collect(),
        partner_ids: partner.into_iter().map(|(id, _)| id).collect(),
    }
}

fn federation() -> TestFed {
    pair::pair_federation(BANK_SCHEMA, PARTNER_SCHEMA)
}

fn launch_psi(fed: &TestFed, job: &str, extra: &str) -> String {
    let spec = format!(
        "kind = \"psi\"\njob_id = \"{job}\"\ndataset = \"customers\"\nactive = \"bank\"\npassive = [\"partner\"]\nid_format = \"text\"\n{extra}"
    );
    pair::launch_spec(fed, job, &spec)
}

/// Launches `job` and starts the bank and the partner, their stderr in `bank-{run}.log` and
/// `partner-{run}.log`.
fn start_pair(fed: &TestFed, job: &str, extra: &str, run: u32) -> (String, Proc, Proc) {
    let job = launch_psi(fed, job, extra);
    let bank = fed.participant_logged("bank", &format!("bank-{run}.log"));
    let partner = fed.participant_logged("partner", &format!("partner-{run}.log"));
    (job, bank, partner)
}

/// Both alignments hold the plain intersection, row for row the same customers.
fn check_alignment(split: &Split, bank: &Alignment, partner: &Alignment) {
    let plain: BTreeSet<&String> = split
        .bank_ids
        .iter()
        .collect::<BTreeSet<_>>()
        .intersection(&split.partner_ids.iter().collect())
        .copied()
        .collect();
    assert!(!plain.is_empty());
    assert_eq!(bank.intersection_size, plain.len() as u64);
    assert_eq!(partner.intersection_size, plain.len() as u64);
    assert_eq!(bank.intersection_hash, partner.intersection_hash);
    assert_eq!(bank.own_set_size, split.bank_ids.len() as u64);
    assert_eq!(bank.peer_set_size, split.partner_ids.len() as u64);
    assert_eq!(partner.own_set_size, split.partner_ids.len() as u64);
    let b = bank.rows.as_ref().expect("the bank gets its rows");
    let p = partner
        .rows
        .as_ref()
        .expect("delivery = both: the partner gets its rows");
    assert_eq!(b.len(), p.len());
    let mut seen = BTreeSet::new();
    for (&rb, &rp) in b.iter().zip(p) {
        let idb = &split.bank_ids[rb as usize];
        let idp = &split.partner_ids[rp as usize];
        assert_eq!(
            idb, idp,
            "aligned rows {rb} (bank) and {rp} (partner) differ"
        );
        assert!(seen.insert(idb.clone()), "{idb} aligned twice");
    }
    assert_eq!(seen.iter().collect::<BTreeSet<_>>(), plain);
}

#[test]
fn psi_job_aligns_bank_and_partner_over_mtls() {
    let fed = federation();
    let split = write_split(fed.dir.path(), 7, PartnerIds::LowerCase, false);
    let shared = split
        .bank_ids
        .iter()
        .collect::<BTreeSet<_>>()
        .intersection(&split.partner_ids.iter().collect())
        .count();
    let share = shared as f64 / split.bank_ids.len().max(split.partner_ids.len()) as f64;
    assert!((0.6..=0.8).contains(&share), "shared fraction {share}");

    let _coordinator = fed.coordinator("coordinator.log");
    let (job, mut bank, mut partner) = start_pair(
        &fed,
        "align-churn",
        "delivery = \"both\"\nchunk_len = 1000\n",
        1,
    );
    let status = wait_state(&fed, &job, "finished", Duration::from_secs(240));
    assert!(
        status.contains(&format!("= {shared}")),
        "status names the intersection size: {status}"
    );
    assert!(bank.wait_exit(Duration::from_secs(60)).success());
    assert!(partner.wait_exit(Duration::from_secs(60)).success());

    let a_bank = alignment(&fed, "bank", &job, "partner");
    let a_partner = alignment(&fed, "partner", &job, "bank");
    assert_eq!(a_bank.role, "active");
    assert_eq!(a_partner.role, "passive");
    check_alignment(&split, &a_bank, &a_partner);

    // The audit log records the sizes and the hash, nothing else.
    let psi: Vec<_> = fed
        .audit_rounds(&job)
        .into_iter()
        .filter(|r| r.purpose == fedsilo_task::Purpose::Psi)
        .collect();
    assert_eq!(psi.len(), 1, "one PSI session in the audit log: {psi:#?}");
    assert_eq!(psi[0].aggregate_hash, a_bank.intersection_hash);
    assert_eq!(psi[0].participants, vec!["bank", "partner"]);
    assert!(
        psi[0].outcome.contains(&format!("intersection {shared}")),
        "{}",
        psi[0].outcome
    );
    assert!(psi[0]
        .outcome
        .contains(&format!("bank {} ids", split.bank_ids.len())));
    // The coordinator's state holds no id of either party.
    let store = std::fs::read(fed.path("coordinator-state/audit.jsonl")).unwrap();
    let text = String::from_utf8_lossy(&store);
    assert!(!text.contains("WA-0") && !text.contains("wa-0"));
}

#[test]
fn psi_active_only_gives_the_partner_only_the_size() {
    let fed = federation();
    let split = write_split(fed.dir.path(), 11, PartnerIds::LowerCase, false);
    let _coordinator = fed.coordinator("coordinator.log");
    let (job, mut bank, mut partner) =
        start_pair(&fed, "align-active-only", "delivery = \"active_only\"\n", 1);
    wait_state(&fed, &job, "finished", Duration::from_secs(240));
    assert!(bank.wait_exit(Duration::from_secs(60)).success());
    assert!(partner.wait_exit(Duration::from_secs(60)).success());
    let a_bank = alignment(&fed, "bank", &job, "partner");
    let a_partner = alignment(&fed, "partner", &job, "bank");
    assert!(
        a_partner.rows.is_none(),
        "the partner must not learn its rows"
    );
    assert_eq!(a_partner.intersection_size, a_bank.intersection_size);
    assert_eq!(a_partner.intersection_hash, a_bank.intersection_hash);
    let plain: BTreeMap<&String, usize> = split
        .bank_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id, i))
        .collect();
    let partner_set: BTreeSet<&String> = split.partner_ids.iter().collect();
    let expected: BTreeSet<usize> = plain
        .iter()
        .filter(|(id, _)| partner_set.contains(*id))
        .map(|(_, &i)| i)
        .collect();
    let got: BTreeSet<usize> = a_bank
        .rows
        .as_ref()
        .unwrap()
        .iter()
        .map(|&r| r as usize)
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn psi_bad_input_fails_with_what_to_fix() {
    let fed = federation();
    let _coordinator = fed.coordinator("coordinator.log");

    // Duplicate ids at the bank: refused, naming the rows and the rule that would keep one.
    write_split(fed.dir.path(), 3, PartnerIds::LowerCase, true);
    let (job, mut bank, mut partner) = start_pair(&fed, "dup-ids", "", 1);
    let status = wait_state(&fed, &job, "failed", Duration::from_secs(240));
    assert!(
        status.contains("data rows 4 and 11") && status.contains("keep_first"),
        "duplicate ids named: {status}"
    );
    bank.wait_exit(Duration::from_secs(60));
    partner.wait_exit(Duration::from_secs(60));
    assert!(
        alignment_missing(&fed, "bank", &job, "partner"),
        "no alignment stored for a failed PSI"
    );

    // Another id scheme at the partner: an empty intersection, with a hint on id formats.
    write_split(fed.dir.path(), 3, PartnerIds::Prefixed, false);
    let (job, mut bank, mut partner) = start_pair(&fed, "other-ids", "", 2);
    let status = wait_state(&fed, &job, "failed", Duration::from_secs(240));
    assert!(
        status.contains("intersection is empty") && status.contains("id_format"),
        "empty intersection explained: {status}"
    );
    bank.wait_exit(Duration::from_secs(60));
    partner.wait_exit(Duration::from_secs(60));
    assert!(alignment_missing(&fed, "bank", &job, "partner"));
    assert!(alignment_missing(&fed, "partner", &job, "bank"));

    // The partner's schema declares no id column (and the job names none): refused at the
    // session's start, naming the party and the schema file to fix.
    write_split(fed.dir.path(), 3, PartnerIds::LowerCase, false);
    std::fs::write(
        fed.path("partner.schema.toml"),
        PARTNER_SCHEMA.replace("id_column = \"customer_id\"\n", ""),
    )
    .unwrap();
    let (job, mut bank, mut partner) = start_pair(&fed, "no-id-column", "", 3);
    let status = wait_state(&fed, &job, "failed", Duration::from_secs(240));
    assert!(
        status.contains("partner (passive)")
            && status.contains("partner.schema.toml")
            && status.contains("declares no `id_column`"),
        "missing id column named: {status}"
    );
    bank.wait_exit(Duration::from_secs(60));
    partner.wait_exit(Duration::from_secs(60));
    assert!(alignment_missing(&fed, "bank", &job, "partner"));
    assert!(alignment_missing(&fed, "partner", &job, "bank"));
}

fn alignment_missing(fed: &TestFed, who: &str, job: &str, peer: &str) -> bool {
    AlignmentStore::new(&fed.path(&format!("state-{who}")))
        .load(job, peer)
        .unwrap()
        .is_none()
}

/// Synthetic bank.csv / partner.csv of `n` customers each, 70 % shared, shuffled.
fn write_synthetic(dir: &Path, n: usize, seed: u64) -> Split {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let shared = n * 7 / 10;
    let mut bank: Vec<String> = (0..n).map(|i| format!("C{i:07}")).collect();
    let mut partner: Vec<String> = (0..shared)
        .map(|i| format!("C{i:07}"))
        .chain((n..2 * n - shared).map(|i| format!("C{i:07}")))
        .collect();
    bank.shuffle(&mut rng);
    partner.shuffle(&mut rng);
    let mut text = String::from("customer_id,churn,tenure,monthly_charges\n");
    for (k, id) in bank.iter().enumerate() {
        let churn = if k % 4 == 0 { "Yes" } else { "No" };
        text.push_str(&format!("{id},{churn},{},{}.5\n", k % 72, 20 + k % 80));
    }
    std::fs::write(dir.join("bank.csv"), text).unwrap();
    let mut text = String::from("female,customer_id,senior_citizen\n");
    for (k, id) in partner.iter().enumerate() {
        text.push_str(&format!("{},{id},{}\n", k % 2, (k / 3) % 2));
    }
    std::fs::write(dir.join("partner.csv"), text).unwrap();
    Split {
        bank_ids: bank,
        partner_ids: partner,
    }
}

/// Relayed messages so far, from `job status` ("… N + M messages relayed").
fn relayed(status: &str) -> u64 {
    let words: Vec<&str> = status.split_whitespace().collect();
    words
        .windows(4)
        .find(|w| w[3].starts_with("messages"))
        .and_then(|w| Some(w[0].parse::<u64>().ok()? + w[2].parse::<u64>().ok()?))
        .unwrap_or(0)
}

/// Waits until chunks are flowing (≥ 20 messages relayed), failing if the job ends first.
fn wait_relaying(fed: &TestFed, job: &str) {
    let start = std::time::Instant::now();
    loop {
        let s = fed.status(job);
        assert!(
            !s.contains("finished") && !s.contains("failed"),
            "the exchange ended before it could be interrupted: {s}"
        );
        if relayed(&s) >= 20 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no chunks relayed: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn psi_resumes_after_the_coordinator_is_killed_mid_exchange() {
    let fed = federation();
    let split = write_synthetic(fed.dir.path(), 60_000, 5);
    let mut coordinator = fed.coordinator("coordinator-1.log");
    let (job, mut bank, mut partner) = start_pair(&fed, "align-kill", "chunk_len = 256\n", 1);
    // Wait until chunks are flowing in session 0, then SIGKILL the coordinator.
    wait_relaying(&fed, &job);
    coordinator.kill9();
    let _coordinator = fed.coordinator("coordinator-2.log");
    let status = wait_state(&fed, &job, "finished", Duration::from_secs(600));
    assert!(bank.wait_exit(Duration::from_secs(60)).success());
    assert!(partner.wait_exit(Duration::from_secs(60)).success());
    let a_bank = alignment(&fed, "bank", &job, "partner");
    let a_partner = alignment(&fed, "partner", &job, "bank");
    assert!(
        a_bank.session >= 1,
        "a fresh session after the restart: {status}"
    );
    assert_eq!(a_bank.session, a_partner.session);
    check_alignment(&split, &a_bank, &a_partner);
    let psi: Vec<_> = fed
        .audit_rounds(&job)
        .into_iter()
        .filter(|r| r.purpose == fedsilo_task::Purpose::Psi)
        .collect();
    assert_eq!(psi.len(), 1, "{psi:#?}");
    assert_eq!(psi[0].round, a_bank.session);
    assert_eq!(psi[0].aggregate_hash, a_bank.intersection_hash);
}

#[test]
fn psi_restarts_the_session_when_a_participant_is_killed_mid_exchange() {
    let fed = federation();
    let split = write_synthetic(fed.dir.path(), 60_000, 9);
    let _coordinator = fed.coordinator("coordinator.log");
    let (job, mut bank, mut partner) = start_pair(&fed, "align-lost", "chunk_len = 256\n", 1);
    // Wait until chunks are flowing in session 0, then SIGKILL the bank (the active party).
    wait_relaying(&fed, &job);
    bank.kill9();
    // The restarted bank holds no state of session 0: it says so, and the pair runs again.
    let mut bank = fed.participant_logged("bank", "bank-2.log");
    let status = wait_state(&fed, &job, "finished", Duration::from_secs(600));
    assert!(bank.wait_exit(Duration::from_secs(60)).success());
    assert!(partner.wait_exit(Duration::from_secs(60)).success());
    let a_bank = alignment(&fed, "bank", &job, "partner");
    let a_partner = alignment(&fed, "partner", &job, "bank");
    assert!(a_bank.session >= 1, "a fresh session: {status}");
    assert_eq!(a_bank.session, a_partner.session);
    check_alignment(&split, &a_bank, &a_partner);
    let log = std::fs::read_to_string(fed.path("bank-2.log")).unwrap();
    assert!(log.contains("reporting it lost"), "{log}");
    // The audit log shows the abandoned session, naming who lost it, then the good one.
    let psi: Vec<_> = fed
        .audit_rounds(&job)
        .into_iter()
        .filter(|r| r.purpose == fedsilo_task::Purpose::Psi)
        .collect();
    assert_eq!(psi.len(), 2, "{psi:#?}");
    assert_eq!(psi[0].round, 0);
    assert!(
        psi[0]
            .outcome
            .contains("bank (active) lost its session state"),
        "{}",
        psi[0].outcome
    );
    assert_eq!(psi[1].round, a_bank.session);
    assert_eq!(psi[1].aggregate_hash, a_bank.intersection_hash);
}
