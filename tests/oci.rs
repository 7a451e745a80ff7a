//! The registry-free OCI image: `deploy/oci/build.sh` makes it (Debian minbase from
//! debootstrap, cached under the target directory, plus the test suite's own debug
//! `fedsilo`, stripped), and everything below runs *from inside the image*: `fedsilo
//! --version`, `keygen`, a coordinator, two participants and the operator commands of a
//! training job that must finish with a useful model.
//!
//! Where `podman run` can start a container it is used (host network, the federation's
//! directory bind-mounted); where it cannot (these machines: crun is refused setrlimit and
//! cgroups) the image is opened with `buildah mount` and each command runs as
//! `chroot --userspec 10001:10001 <root> /usr/local/bin/fedsilo …`, the image's own user.
//! The test prints which path ran. It needs root, debootstrap and buildah; without them it
//! says so loudly and skips — unless `FEDSILO_REQUIRE_OCI=1` (set by `.ci/run` where they
//! are installed and it runs as root), which makes that a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use fedsilo_participant::data::{load_csv, Schema};

/// The image's user (deploy/oci/build.sh and deploy/Dockerfile).
const UID: &str = "10001";
/// Where the federation's files live, seen from inside the image.
const FED: &str = "/var/lib/fedsilo/fed";

/// Root, debootstrap and buildah — or why the image cannot be built here.
fn can_build() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not root (debootstrap and buildah's storage need it)".into());
    }
    for tool in ["debootstrap", "buildah", "chroot"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!("no {tool} (apt-get install debootstrap buildah)"));
        }
    }
    Ok(())
}

fn buildah(args: &[&str]) -> String {
    let (ok, out) = output_text(Command::new("buildah").args(args));
    assert!(ok, "buildah {args:?}: {out}");
    out.trim().to_string()
}

/// The committed image; removed from buildah's storage when dropped.
struct Image {
    tag: String,
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("buildah")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

/// A working container of the image, mounted; unmounted and removed when dropped.
struct Mounted {
    ctr: String,
    root: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("buildah").args(["umount", &self.ctr]).output();
        let _ = Command::new("buildah").args(["rm", &self.ctr]).output();
    }
}

/// How a command runs inside the image.
enum Runner {
    /// `podman run` with the federation directory `host` mounted at [`FED`].
    Podman { tag: String, host: PathBuf },
    /// `chroot --userspec` into the mounted image; [`FED`] is under its root.
    Chroot { mounted: Mounted },
}

impl Runner {
    /// The federation directory as the host sees it.
    fn host_dir(&self) -> PathBuf {
        match self {
            Runner::Podman { host, .. } => host.clone(),
            Runner::Chroot { mounted } => mounted.root.join(FED.trim_start_matches('/')),
        }
    }

    /// `fedsilo args…` inside the image, named `name` (podman's container name).
    fn cmd(&self, name: &str, args: &[&str]) -> Command {
        match self {
            Runner::Podman { tag, host } => {
                let mut c = Command::new("podman");
                c.args(["run", "--rm", "--network", "host", "--name", name, "-v"])
                    .arg(format!("{}:{FED}", host.display()))
                    .args(["-w", FED, tag])
                    .args(args);
                c
            }
            Runner::Chroot { mounted } => {
                let mut c = Command::new("chroot");
                c.arg(format!("--userspec={UID}:{UID}"))
                    .arg(&mounted.root)
                    .arg("/usr/local/bin/fedsilo")
                    .args(args)
                    .env("HOME", "/var/lib/fedsilo")
                    .env_remove("FEDSILO_LOG");
                c
            }
        }
    }

    fn run(&self, name: &str, args: &[&str]) -> String {
        let (ok, out) = output_text(&mut self.cmd(name, args));
        assert!(ok, "fedsilo {args:?} in the image: {out}");
        out
    }

    fn describe(&self) -> &'static str {
        match self {
            Runner::Podman { .. } => "podman run",
            Runner::Chroot { .. } => "buildah mount + chroot --userspec 10001:10001",
        }
    }
}

/// A long-running process in the image; for podman its container is removed on drop too.
struct InImage {
    proc: Proc,
    podman_name: Option<String>,
}

impl Drop for InImage {
    fn drop(&mut self) {
        if let Some(n) = &self.podman_name {
            let _ = Command::new("podman").args(["rm", "-f", n]).output();
        }
    }
}

fn spawn_in(runner: &Runner, name: &str, args: &[&str], log: PathBuf) -> InImage {
    InImage {
        proc: spawn_logged(runner.cmd(name, args), log),
        podman_name: matches!(runner, Runner::Podman { .. }).then(|| name.to_string()),
    }
}

/// The debug binary without its debug sections (a tenth of the size: a faster commit).
fn stripped_binary(dir: &Path) -> PathBuf {
    let out = dir.join("fedsilo");
    let (ok, text) = output_text(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(bin())
            .arg(&out),
    );
    if !ok {
        eprintln!("objcopy --strip-debug failed ({text}); the image gets the debug binary");
        std::fs::copy(bin(), &out).unwrap();
    }
    out
}

const SPEC: &str = r#"
dataset = "data"
task = "risk"
rounds = 8
min_participants = 2
eval_every = 4
[learning]
local_epochs = 2
learning_rate = 0.05
batch_size = 32
"#;

#[test]
fn the_oci_image_runs_a_two_participant_job() {
    if let Err(why) = can_build() {
        assert!(
            std::env::var("FEDSILO_REQUIRE_OCI").as_deref() != Ok("1"),
            "FEDSILO_REQUIRE_OCI=1 but the OCI image cannot be built: {why}"
        );
        eprintln!(
            "\n*** NOTE: the OCI image test DID NOT RUN: {why}.\n*** It needs root, \
             debootstrap and buildah; .ci/run installs them and runs it as root.\n"
        );
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let binary = stripped_binary(tmp.path());
    let tag = format!("localhost/fedsilo-test:{}", std::process::id());
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oci-rootfs");
    let (ok, out) = output_text(
        Command::new(repo().join("deploy/oci/build.sh"))
            .arg("--binary")
            .arg(&binary)
            .args(["--tag", &tag])
            .arg("--rootfs-cache")
            .arg(&cache),
    );
    assert!(ok, "deploy/oci/build.sh failed:\n{out}");
    let image = Image { tag };
    let built = started.elapsed();

    // The image's configuration: the Dockerfile's contract.
    let config = buildah(&[
        "inspect",
        "--type",
        "image",
        "--format",
        "{{.OCIv1.Config.User}}|{{.OCIv1.Config.Entrypoint}}|{{.OCIv1.Config.WorkingDir}}",
        &image.tag,
    ]);
    assert_eq!(
        config, "10001:10001|[/usr/local/bin/fedsilo]|/var/lib/fedsilo",
        "image config"
    );

    // podman where it can start a container, the mounted image under chroot otherwise.
    let host = tmp.path().join("fed");
    std::fs::create_dir(&host).unwrap();
    let probe = Runner::Podman {
        tag: image.tag.clone(),
        host: host.clone(),
    };
    let podman = Command::new("sh")
        .args(["-c", "command -v podman"])
        .output()
        .is_ok_and(|o| o.status.success());
    let probe_name = format!("fedsilo-probe-{}", std::process::id());
    let podman_ok = podman && output_text(&mut probe.cmd(&probe_name, &["--version"])).0;
    let runner = if podman_ok {
        probe
    } else {
        let why = if podman {
            output_text(&mut probe.cmd(&probe_name, &["--version"])).1
        } else {
            "podman is not installed".into()
        };
        let _ = Command::new("podman")
            .args(["rm", "-f", &probe_name])
            .output();
        eprintln!(
            "podman run cannot start the image here ({}); using chroot",
            why.trim()
        );
        let ctr = buildah(&["from", "--quiet", "--pull-never", &image.tag]);
        let root = PathBuf::from(buildah(&["mount", &ctr]));
        let mounted = Mounted { ctr, root };
        let fed = mounted.root.join(FED.trim_start_matches('/'));
        std::fs::create_dir_all(&fed).unwrap();
        Runner::Chroot { mounted }
    };
    eprintln!(
        "OCI image {}: running it with {}",
        image.tag,
        runner.describe()
    );
    let dir = runner.host_dir();
    let (ok, _) = output_text(Command::new("chown").arg(format!("{UID}:{UID}")).arg(&dir));
    assert!(ok, "chown {}", dir.display());
    if let Runner::Chroot { mounted } = &runner {
        // The image's user is the one the Dockerfile names, and it is not root.
        let passwd = std::fs::read_to_string(mounted.root.join("etc/passwd")).unwrap();
        assert!(
            passwd
                .lines()
                .any(|l| l.starts_with("fedsilo:x:10001:10001:")),
            "{passwd}"
        );
    }

    // `fedsilo --version` from the image is the binary this suite built.
    let version = runner.run("fedsilo-version", &["--version"]);
    let host_version = run_ok(&["--version"]);
    assert_eq!(version.trim(), host_version.trim());
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");

    // A federation made by the image's keygen, run by the image's binary.
    let port = free_port();
    let names = ["bank-a", "bank-b"];
    runner.run(
        "fedsilo-keygen",
        &[
            "keygen",
            "--out",
            FED,
            "--institutions",
            &names.join(","),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let coordinator_toml = format!("{FED}/coordinator.toml");
    runner.run(
        "fedsilo-init",
        &["coordinator", "init", "--config", &coordinator_toml],
    );
    std::fs::copy(
        repo().join("data/credit_data.schema.toml"),
        dir.join("schema.toml"),
    )
    .unwrap();
    let csvs: Vec<PathBuf> = names.iter().map(|n| dir.join(format!("{n}.csv"))).collect();
    split_sorted(&repo().join("data/credit_data.csv"), "Income", 2, &csvs);
    for name in names {
        let cfg = format!(
            "name = \"{name}\"\ncoordinator = \"https://127.0.0.1:{port}\"\ntls_domain = \"localhost\"\nidentity = \"{name}.identity\"\nroster = \"roster.toml\"\nholdout_fraction = 0.2\nholdout_seed = 5\nexit_when_done = true\n\n[tls]\nca = \"ca.pem\"\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\n\n[[datasets]]\nname = \"data\"\ncsv = \"{name}.csv\"\nschema = \"schema.toml\"\n"
        );
        std::fs::write(dir.join(format!("participant-{name}.toml")), cfg).unwrap();
    }
    std::fs::write(dir.join("job.toml"), SPEC).unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let tag = std::process::id();
    let coordinator = spawn_in(
        &runner,
        &format!("fedsilo-coordinator-{tag}"),
        &["coordinator", "serve", "--config", &coordinator_toml],
        logs.join("coordinator.log"),
    );
    let operator = format!("{FED}/operator.toml");
    let op = |what: &str, extra: &[&str]| -> (bool, String) {
        let mut args = vec!["job", what, "--config", &operator];
        args.extend_from_slice(extra);
        output_text(&mut runner.cmd(&format!("fedsilo-op-{tag}"), &args))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !op("list", &[]).0 {
        assert!(
            Instant::now() < deadline,
            "the coordinator in the image did not start: {}",
            coordinator.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, out) = op(
        "launch",
        &[
            "--spec",
            &format!("{FED}/job.toml"),
            "--schema",
            &format!("{FED}/schema.toml"),
        ],
    );
    assert!(ok, "launch: {out}");
    let job = out.split_whitespace().next().unwrap().to_string();
    let mut parts: Vec<InImage> = names
        .iter()
        .map(|n| {
            spawn_in(
                &runner,
                &format!("fedsilo-{n}-{tag}"),
                &[
                    "participant",
                    "join",
                    "--config",
                    &format!("{FED}/participant-{n}.toml"),
                ],
                logs.join(format!("{n}.log")),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        let (_, s) = op("status", &["--job", &job]);
        if s.contains("finished") {
            break s;
        }
        assert!(!s.contains("failed"), "job failed: {s}");
        assert!(Instant::now() < deadline, "job did not finish: {s}");
        std::thread::sleep(Duration::from_millis(300));
    };
    eprintln!("{status}");
    assert!(status.contains("round 8/8"), "{status}");
    for (p, n) in parts.iter_mut().zip(names) {
        let s = p.proc.wait_exit(Duration::from_secs(120));
        assert!(s.success(), "{n} failed: {}", p.proc.log_text());
    }

    // The result: the model, fetched from inside the image, scores the whole dataset well;
    // the audit log the image's coordinator wrote verifies and every round had both banks.
    let (ok, out) = op(
        "model",
        &["--job", &job, "--out", &format!("{FED}/model.json")],
    );
    assert!(ok, "job model: {out}");
    let artifact = fedsilo_task::ModelArtifact::from_json(
        &std::fs::read_to_string(dir.join("model.json")).unwrap(),
    )
    .unwrap();
    assert!(artifact.complete);
    let schema = Schema::from_toml_file(&dir.join("schema.toml")).unwrap();
    let all = load_csv(&repo().join("data/credit_data.csv"), &schema).unwrap();
    let auc = fedsilo_simulations::baselines::auc_on(&artifact.model, &all, 0);
    assert!(
        auc > 0.8,
        "the image's federation trained a poor model: AUC {auc}"
    );
    let log = dir.join("coordinator-state/audit.jsonl");
    let summary = fedsilo_coordinator::audit::verify(&log).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<fedsilo_coordinator::audit::AuditEntry> = text
        .lines()
        .take(summary.entries as usize)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rounds: Vec<_> = records.iter().filter(|e| e.record.job_id == job).collect();
    assert!(rounds.len() >= 8, "{} audited rounds", rounds.len());
    for e in &rounds {
        assert_eq!(e.record.survivors.len(), 2, "{:?}", e.record);
    }
    // Everything the image's processes wrote belongs to its user, not to root.
    let (_, owners) = output_text(
        Command::new("find")
            .arg(&dir)
            .args(["-newer", &dir.join("job.toml").display().to_string()])
            .args(["-not", "-user", UID]),
    );
    assert!(
        owners.trim().is_empty(),
        "written by another user: {owners}"
    );
    eprintln!(
        "OCI image test ({}): built in {:.1} s, whole test {:.1} s, AUC {auc:.4}",
        runner.describe(),
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(parts);
    drop(runner);
    drop(image);
}
