//! A throwaway real PostgreSQL server for one test: `initdb` into a temporary directory,
//! `postgres` on a free loopback port (and a Unix socket in that directory), trust
//! authentication for the superuser `postgres`, one database `fedsilo`; stopped (immediate
//! shutdown) and deleted when dropped.
//!
//! The binaries are looked up as `initdb` on `PATH` (its directory must also hold `postgres`
//! and `psql`), then in the newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
//! PostgreSQL refuses to run as root: when the tests run as root, the server runs as the
//! `postgres` system user (else `nobody`), with the directory handed to it.
//!
//! Without PostgreSQL, [`PgServer::start`] prints `SKIP: …` and returns `None`, unless
//! `FEDSILO_REQUIRE_POSTGRES=1` (CI sets it when PostgreSQL is installed), which makes it a
//! failure. Use it as
//! ```ignore
//! let Some(pg) = common::pg::PgServer::start("my_test") else { return };
//! pg.exec("create table t (a int)");
//! assert_eq!(pg.query("select count(*) from t"), [["0"]]);
//! ```
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The database every server creates.
pub const DATABASE: &str = "fedsilo";
/// The superuser (trust authentication on loopback and the socket).
pub const USER: &str = "postgres";

/// Field separator of [`PgServer::query`]'s `psql` output (unit separator: never in data).
const SEP: &str = "\u{1f}";

pub struct PgServer {
    /// Holds `data/` (the cluster), the Unix socket and `postgres.log`.
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

/// Where initdb, postgres and psql live, if anywhere.
fn find_bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| ["initdb", "postgres", "psql"].iter().all(|b| d.join(b).is_file());
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let initdb = d.join("initdb");
            if initdb.is_file() {
                // /usr/local/bin/initdb may be a link into /usr/lib/postgresql/N/bin.
                let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
                if let Some(dir) = real.parent().filter(|d| has_all(d)) {
                    return Some(dir.to_path_buf());
                }
                if has_all(&d) {
                    return Some(d);
                }
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_all(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

/// (uid, gid) of `name` from /etc/passwd.
fn passwd_ids(name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        if f.next()? != name {
            return None;
        }
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} to {uid}:{gid}: {e}", path.display()));
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

fn skip_or_fail(test: &str, why: &str) -> Option<PgServer> {
    assert!(
        std::env::var("FEDSILO_REQUIRE_POSTGRES").as_deref() != Ok("1"),
        "FEDSILO_REQUIRE_POSTGRES=1 but PostgreSQL is unavailable for {test}: {why}"
    );
    eprintln!(
        "\n*** SKIP: {test}: {why}.\n*** Install PostgreSQL (Debian: apt-get install postgresql; \
         .ci/run does) to run it.\n"
    );
    None
}

impl PgServer {
    /// Starts a server (see the module documentation); `None` (after a loud `SKIP:`) when
    /// PostgreSQL is not installed and `FEDSILO_REQUIRE_POSTGRES` is not `1`.
    pub fn start(test: &str) -> Option<PgServer> {
        let Some(bin) = find_bin_dir() else {
            return skip_or_fail(
                test,
                "no initdb/postgres/psql on PATH or in /usr/lib/postgresql/*/bin",
            );
        };
        let dir = tempfile::Builder::new()
            .prefix("fedsilo-pg-")
            .tempdir()
            .expect("temporary directory for PostgreSQL");
        let owner = if running_as_root() {
            let ids = passwd_ids("postgres")
                .or_else(|| passwd_ids("nobody"))
                .expect("running as root: need a 'postgres' or 'nobody' user to run PostgreSQL");
            chown_tree(dir.path(), ids.0, ids.1);
            Some(ids)
        } else {
            None
        };
        let as_owner = |cmd: &mut Command| {
            if let Some((uid, gid)) = owner {
                cmd.uid(uid).gid(gid);
            }
        };
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(dir.path())
            .env("LC_ALL", "C");
        as_owner(&mut initdb);
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let port = super::free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path().join("postgres.log"), Some(uid), Some(gid))
                .unwrap();
        }
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "shared_buffers=16MB",
                "-c",
                "max_connections=30",
            ])
            .current_dir(dir.path())
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        as_owner(&mut postgres);
        let child = postgres.spawn().expect("spawn postgres");
        let mut server = PgServer {
            dir,
            bin,
            port,
            child: Some(child),
        };
        server.wait_ready(Duration::from_secs(30));
        server.exec_in("postgres", &format!("create database {DATABASE}"));
        Some(server)
    }

    fn wait_ready(&mut self, deadline: Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "postgres exited during start-up ({status}); log:\n{}",
                    self.log_text()
                );
            }
            if self.psql_raw("postgres", "select 1").status.success() {
                return;
            }
            assert!(
                start.elapsed() < deadline,
                "postgres did not accept connections within {deadline:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// `postgresql://postgres@127.0.0.1:<port>/fedsilo`.
    pub fn url(&self) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The same database in key-value form (`host=127.0.0.1 port=… user=postgres dbname=…`).
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} dbname={DATABASE}",
            self.port
        )
    }

    /// The directory holding the Unix socket (for `host=<dir>` connections).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `psql` of the server's installation.
    pub fn psql_path(&self) -> PathBuf {
        self.bin.join("psql")
    }

    fn psql_raw(&self, database: &str, sql: &str) -> Output {
        Command::new(self.psql_path())
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", SEP])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", database, "-c", sql])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .expect("run psql")
    }

    fn exec_in(&self, database: &str, sql: &str) -> String {
        let out = self.psql_raw(database, sql);
        assert!(
            out.status.success(),
            "psql failed on {sql:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs SQL (one or more statements) in the `fedsilo` database; panics with psql's
    /// message on error. Returns psql's unaligned output.
    pub fn exec(&self, sql: &str) -> String {
        self.exec_in(DATABASE, sql)
    }

    /// Runs SQL expecting an error; returns psql's stderr.
    pub fn exec_err(&self, sql: &str) -> String {
        let out = self.psql_raw(DATABASE, sql);
        assert!(!out.status.success(), "{sql:?} unexpectedly succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The rows of a query, each a vector of its fields as text (NULL → empty).
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        self.exec(sql)
            .lines()
            .map(|l| l.split(SEP).map(str::to_string).collect())
            .collect()
    }

    /// Loads a CSV file with a header into an existing table (`\copy … csv header`,
    /// client-side, so the file need not be readable by the server's user).
    pub fn copy_csv(&self, table: &str, csv: &Path) {
        let sql = format!(
            "\\copy {table} from '{}' with (format csv, header true)",
            csv.display().to_string().replace('\'', "''")
        );
        let out = Command::new(self.psql_path())
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", DATABASE, "-c", &sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "\\copy into {table} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server now (immediate shutdown; also done on drop).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGQUIT: immediate shutdown, the postmaster takes its backends down with it.
        let _ = Command::new("kill")
            .args(["-QUIT", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
