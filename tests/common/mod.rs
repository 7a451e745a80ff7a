//! Helpers for end-to-end tests: a test federation on loopback driven through the real
//! `fedsilo` binary (keygen, coordinator, participants, operator commands).
#![allow(dead_code)]

pub mod pair;
pub mod pg;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `fedsilo` binary under test: this build's, or (for a measurement against another
/// build, e.g. `vertical_grpc`'s ignored scale run) the one `FEDSILO_TEST_BIN` names.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("FEDSILO_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_fedsilo").to_string())
    })
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `fedsilo args…` to completion; returns stdout, panics with stderr on failure.
pub fn run_ok(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run fedsilo");
    assert!(
        out.status.success(),
        "fedsilo {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `fedsilo args…` expecting failure; returns stderr.
pub fn run_err(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run fedsilo");
    assert!(
        !out.status.success(),
        "fedsilo {args:?} unexpectedly succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `fedsilo args…` expecting it to fail by itself within `timeout` (killed and reported
/// otherwise); returns stderr.
pub fn run_err_within(args: &[&str], timeout: Duration) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(args, dir.path().join("stderr.log"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > timeout {
            let log = p.log_text();
            p.kill9();
            panic!("fedsilo {args:?} still running after {timeout:?}; stderr:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = p.log_text();
    assert!(
        !status.success(),
        "fedsilo {args:?} unexpectedly succeeded; stderr:\n{err}"
    );
    err
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that is killed when dropped; its stderr goes to a file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// SIGKILL, no clean-up.
    pub fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > timeout {
                panic!(
                    "process did not exit in {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn(args: &[&str], log: PathBuf) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    spawn_logged(cmd, log)
}

/// Starts `cmd` (a fedsilo process, perhaps behind a wrapper such as `ip netns exec`) with
/// info logs to `log` and stdout discarded.
pub fn spawn_logged(mut cmd: Command, log: PathBuf) -> Proc {
    let file = std::fs::File::create(&log).unwrap();
    let child = cmd
        .env("FEDSILO_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    Proc { child, log }
}

/// Runs `cmd` to its end: whether it succeeded, and its stdout then stderr.
pub fn output_text(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Reads a CSV as (header, rows) — the shipped datasets contain no quoted fields.
pub fn read_csv(path: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_string();
    (header, lines.map(str::to_string).collect())
}

/// Splits a CSV into `n` files sorted by a numeric column (missing values last): non-IID bands.
pub fn split_sorted(src: &Path, column: &str, n: usize, out: &[PathBuf]) {
    let (header, mut rows) = read_csv(src);
    let col = header.split(',').position(|c| c == column).unwrap();
    let key = |r: &String| -> f64 {
        r.split(',')
            .nth(col)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::INFINITY)
    };
    rows.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let per = rows.len().div_ceil(n);
    for (i, chunk) in rows.chunks(per).enumerate() {
        let mut text = header.clone();
        text.push('\n');
        for r in chunk {
            text.push_str(r);
            text.push('\n');
        }
        std::fs::write(&out[i], text).unwrap();
    }
}

/// A test federation: PKI and configs from `fedsilo keygen`, one CSV per institution.
pub struct TestFed {
    pub dir: tempfile::TempDir,
    pub names: Vec<String>,
    pub port: u16,
}

impl TestFed {
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The usual end-to-end set-up: institutions `names` holding credit_data.csv sorted by
    /// Income into as many bands (non-IID), dataset name "data".
    pub fn credit_by_income(names: &[&str]) -> TestFed {
        let fed = TestFed::new(names, "data", &repo().join("data/credit_data.schema.toml"));
        split_sorted(
            &repo().join("data/credit_data.csv"),
            "Income",
            names.len(),
            &fed.csv_paths(),
        );
        fed
    }

    /// Keygen + participant configs with dataset `dataset` = `<name>.csv` and `schema`.
    pub fn new(names: &[&str], dataset: &str, schema: &Path) -> TestFed {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        run_ok(&[
            "keygen",
            "--out",
            dir.path().to_str().unwrap(),
            "--institutions",
            &names.join(","),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ]);
        // A fresh coordinator state is an explicit act: `serve` refuses an uninitialised one.
        run_ok(&[
            "coordinator",
            "init",
            "--config",
            dir.path().join("coordinator.toml").to_str().unwrap(),
        ]);
        std::fs::copy(schema, dir.path().join("schema.toml")).unwrap();
        for name in &names {
            let cfg = format!(
                "name = \"{name}\"\ncoordinator = \"https://localhost:{port}\"\ntls_domain = \"localhost\"\nidentity = \"{name}.identity\"\nroster = \"roster.toml\"\nholdout_fraction = 0.2\nholdout_seed = 5\nexit_when_done = true\n\n[tls]\nca = \"ca.pem\"\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\n\n[[datasets]]\nname = \"{dataset}\"\ncsv = \"{name}.csv\"\nschema = \"schema.toml\"\n"
            );
            std::fs::write(dir.path().join(format!("participant-{name}.toml")), cfg).unwrap();
        }
        TestFed { dir, names, port }
    }

    pub fn csv_paths(&self) -> Vec<PathBuf> {
        self.names
            .iter()
            .map(|n| self.path(&format!("{n}.csv")))
            .collect()
    }

    pub fn coordinator(&self, log: &str) -> Proc {
        let p = spawn(
            &[
                "coordinator",
                "serve",
                "--config",
                self.path("coordinator.toml").to_str().unwrap(),
            ],
            self.path(log),
        );
        self.wait_listening();
        p
    }

    pub fn wait_listening(&self) {
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "coordinator did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn participant(&self, name: &str) -> Proc {
        self.participant_logged(name, &format!("{name}.log"))
    }

    /// `participant join` for `name`, its stderr in `log` (e.g. a second run's own file).
    pub fn participant_logged(&self, name: &str, log: &str) -> Proc {
        spawn(
            &[
                "participant",
                "join",
                "--config",
                self.path(&format!("participant-{name}.toml"))
                    .to_str()
                    .unwrap(),
            ],
            self.path(log),
        )
    }

    pub fn op(&self, args: &[&str]) -> String {
        let cfg = self.path("operator.toml");
        let mut all: Vec<&str> = vec!["job", args[0], "--config", cfg.to_str().unwrap()];
        all.extend_from_slice(&args[1..]);
        run_ok(&all)
    }

    /// Launches the job spec (TOML text); returns the job id.
    pub fn launch(&self, spec: &str) -> String {
        let p = self.path("job.toml");
        std::fs::write(&p, spec).unwrap();
        let out = self.op(&[
            "launch",
            "--spec",
            p.to_str().unwrap(),
            "--schema",
            self.path("schema.toml").to_str().unwrap(),
        ]);
        out.split_whitespace().next().unwrap().to_string()
    }

    pub fn status(&self, job: &str) -> String {
        self.op(&["status", "--job", job])
    }

    /// Rounds completed, parsed from `job status`.
    pub fn rounds_done(&self, job: &str) -> u64 {
        let s = self.status(job);
        s.split_whitespace()
            .skip_while(|w| *w != "round")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    }

    pub fn wait_finished(&self, job: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let s = self.status(job);
            if s.contains("finished") {
                return s;
            }
            assert!(!s.contains("failed"), "job failed: {s}");
            assert!(
                start.elapsed() < timeout,
                "job did not finish in {timeout:?}: {s}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The coordinator's audit log, verified (the chain must be intact), entry by entry.
    pub fn audit_entries(&self) -> Vec<fedsilo_coordinator::audit::AuditEntry> {
        let path = self.path("coordinator-state/audit.jsonl");
        let summary = fedsilo_coordinator::audit::verify(&path)
            .unwrap_or_else(|e| panic!("audit log does not verify: {e}"));
        let text = std::fs::read_to_string(&path).unwrap();
        let entries: Vec<fedsilo_coordinator::audit::AuditEntry> = text
            .lines()
            .take(summary.entries as usize)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(entries.len() as u64, summary.entries);
        entries
    }

    /// The audit records of one job, in order.
    pub fn audit_rounds(&self, job: &str) -> Vec<fedsilo_coordinator::audit::AuditRecord> {
        self.audit_entries()
            .into_iter()
            .map(|e| e.record)
            .filter(|r| r.job_id == job)
            .collect()
    }

    /// Polls until `pred` holds for the job's audit records (or panics after `timeout`).
    pub fn wait_audit(
        &self,
        job: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[fedsilo_coordinator::audit::AuditRecord]) -> bool,
    ) -> Vec<fedsilo_coordinator::audit::AuditRecord> {
        let start = Instant::now();
        loop {
            let rounds = self.audit_rounds(job);
            if pred(&rounds) {
                return rounds;
            }
            assert!(
                start.elapsed() < timeout,
                "{what}: not seen in {timeout:?}; audit rounds: {rounds:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn model(&self, job: &str) -> fedsilo_task::ModelArtifact {
        let p = self.path(&format!("{job}.model.json"));
        self.op(&["model", "--job", job, "--out", p.to_str().unwrap()]);
        fedsilo_task::ModelArtifact::from_json(&std::fs::read_to_string(p).unwrap()).unwrap()
    }
}

/// Runs `fedsilo simulate <scenario> --out <out> [extra…]` (the real binary) and reads the
/// `report.json` it wrote.
pub fn simulate(
    scenario: &Path,
    out: &Path,
    extra: &[&str],
) -> fedsilo_simulations::report::Report {
    let mut args = vec![
        "simulate",
        scenario.to_str().expect("utf-8 path"),
        "--out",
        out.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    run_ok(&args);
    let json = std::fs::read_to_string(out.join("report.json")).expect("report.json written");
    serde_json::from_str(&json).expect("report.json parses")
}

/// A copy of shipped scenario `name` in `dir` (its data paths made absolute), with each
/// `(from, to)` text replacement applied; every `from` must occur.
pub fn scenario_copy(dir: &Path, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let src = repo().join("simulations/scenarios").join(name);
    let mut text = std::fs::read_to_string(&src).expect("shipped scenario");
    text = text.replace(
        "../../data/",
        &format!("{}/", repo().join("data").display()),
    );
    for (from, to) in edits {
        assert!(text.contains(from), "{name} has no '{from}'");
        text = text.replace(from, to);
    }
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write scenario copy");
    p
}

/// A virtualenv under the target directory (built once, reused) with `packages` installed
/// from PyPI; its python once `check` (Python source) runs in it, or why there is none.
pub fn python_venv(name: &str, packages: &[&str], check: &str) -> Result<PathBuf, String> {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = venv.join("bin").join("python");
    let importable = |py: &Path| {
        Command::new(py)
            .args(["-c", check])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    // One builder at a time in this process: two tests asking for the same venv at once
    // would otherwise build in the same directory (its name carries only the process id).
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if importable(&python) {
        return Ok(python);
    }
    let system = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    // Built beside the final place and renamed, so an interrupted install is never reused.
    let building = venv.with_extension(format!("building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    run(
        Command::new(&system).args(["-m", "venv"]).arg(&building),
        &format!("{system} -m venv (Debian: apt-get install python3-venv)"),
    )?;
    run(
        Command::new(building.join("bin").join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(packages),
        &format!("pip install {}", packages.join(" ")),
    )?;
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::rename(&building, &venv).map_err(|e| format!("moving the venv into place: {e}"))?;
    if importable(&python) {
        Ok(python)
    } else {
        Err(format!(
            "{} installed but `{check}` fails",
            packages.join(" ")
        ))
    }
}

impl TestFed {
    /// The federation's TLS files for `who` (an institution, `operator` or `coordinator`).
    pub fn tls_files(&self, who: &str) -> fedsilo_proto::tls::TlsFiles {
        fedsilo_proto::tls::TlsFiles {
            ca_cert: self.path("ca.pem"),
            cert: self.path(&format!("{who}.pem")),
            key: self.path(&format!("{who}.key")),
        }
    }

    /// A gRPC channel to the coordinator over mutual TLS with `who`'s certificate.
    pub async fn channel(&self, who: &str) -> tonic::transport::Channel {
        let tls = fedsilo_proto::tls::client_tls_config(&self.tls_files(who), "localhost").unwrap();
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", self.port))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .connect()
            .await
            .unwrap()
    }

    /// A rustls client trusting the federation CA, presenting `who`'s certificate when
    /// given, offering the ALPN protocol `alpn` (`h2` for gRPC, `http/1.1` for the
    /// operations listener).
    pub fn rustls_client(
        &self,
        who: Option<&str>,
        alpn: &[u8],
    ) -> std::sync::Arc<tokio_rustls::rustls::ClientConfig> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject as _;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut cfg = match who {
            Some(who) => {
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_file_iter(self.path(&format!("{who}.pem")))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{who}.key"))).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![alpn.to_vec()];
        std::sync::Arc::new(cfg)
    }
}
