//! The operator's window against the real binary: the coordinator's operations listener
//! (HTTPS, `[ops]` in coordinator.toml) serving `/healthz`, `/metrics` and the dashboard
//! during a real three-bank job over gRPC, the dashboard read by headless Chromium
//! (screenshots mid-job and at the end, the rendered DOM checked), and grpc.health.v1 on the
//! gRPC port.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

const SPEC: &str = r#"
dataset = "data"
task = "risk"
rounds = 24
min_participants = 3
eval_every = 4
dp = { level = "record", clip = 1.0, sampling_rate = 0.1, delta = 1e-5, epsilon_budget = 3.0 }
[learning]
learning_rate = 0.5
"#;

/// `GET path` over HTTPS (HTTP/1.1, `Connection: close`); the status code and the body.
fn get(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
    let mut s = rustls::Stream::new(&mut conn, &mut tcp);
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    // The server closes after the response; a missing close_notify is not our concern here.
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    (code, body.to_string())
}

/// The value of the sample line `name` (exact label set) in an OpenMetrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

/// Chromium headless on the dashboard (token in the fragment, the federation's private CA
/// not in Chromium's trust store, hence --ignore-certificate-errors); `mode` is
/// `--dump-dom` (the DOM is returned) or `--screenshot=<file>`.
fn chromium(browser: &Path, profile: &Path, url: &str, mode: &str) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--ignore-certificate-errors",
            "--force-device-scale-factor=1",
            "--window-size=1280,1800",
            // Polls every 2 s: let the page fetch and render a few times.
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dashboard_metrics_and_health_follow_a_real_job() {
    let fed = TestFed::credit_by_income(&["bank-a", "bank-b", "bank-c"]);
    let ops_port = free_port();
    let mut cfg = std::fs::read_to_string(fed.path("coordinator.toml")).unwrap();
    assert!(
        cfg.contains("# [ops]"),
        "keygen writes a commented [ops] section: {cfg}"
    );
    cfg.push_str(&format!(
        "\n[ops]\nlisten = \"127.0.0.1:{ops_port}\"\ntoken_file = \"dashboard.token\"\n"
    ));
    std::fs::write(fed.path("coordinator.toml"), cfg).unwrap();
    let token = std::fs::read_to_string(fed.path("dashboard.token"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(token.len(), 64, "keygen's token is 32 random bytes in hex");

    let mut coord = fed.coordinator("coordinator.log");
    let anonymous = fed.rustls_client(None, b"http/1.1");
    let operator = fed.rustls_client(Some("operator"), b"http/1.1");
    let participant = fed.rustls_client(Some("bank-a"), b"http/1.1");

    // /healthz: no credentials needed.
    let (code, body) = get(ops_port, &anonymous, "/healthz", None);
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    // /metrics and the overview: an operator certificate or the token, nothing less.
    assert_eq!(get(ops_port, &anonymous, "/metrics", None).0, 401);
    assert_eq!(
        get(ops_port, &anonymous, "/metrics", Some("not-the-token")).0,
        401
    );
    assert_eq!(
        get(ops_port, &participant, "/api/overview", None).0,
        401,
        "a participant's certificate is not an operator's"
    );
    assert_eq!(get(ops_port, &operator, "/api/overview", None).0, 200);
    let (code, before) = get(ops_port, &anonymous, "/metrics", Some(&token));
    assert_eq!(code, 200, "{before}");
    assert!(
        before.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF: {before}"
    );
    assert_eq!(
        sample(&before, "fedsilo_participants_roster"),
        Some(3.0),
        "{before}"
    );

    // grpc.health.v1 on the gRPC port (mutual TLS, like every gRPC call here).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let serving = rt.block_on(async {
        let channel = fed.channel("operator").await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let mut out = Vec::new();
        for service in ["", "fedsilo.v1.Federation", "fedsilo.v1.Operator"] {
            let r = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("health check of {service:?}: {e}"));
            out.push(r.into_inner().status);
        }
        out
    });
    let ok = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(serving, vec![ok, ok, ok]);

    let job = fed.launch(SPEC);
    let mut parts: Vec<Proc> = fed.names.iter().map(|n| fed.participant(n)).collect();

    let browser = find_on_path(&["chromium", "chromium-browser"]);
    if browser.is_none() {
        if std::env::var("FEDSILO_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("chromium is not on PATH: install it with `apt-get install chromium`");
        }
        eprintln!(
            "NOTE: chromium is not on PATH, so the dashboard's browser checks DID NOT RUN \
             (apt-get install chromium; .ci/run does)"
        );
    }
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let _ = std::fs::create_dir_all(&keep);
    let url = format!("https://localhost:{ops_port}/#token={token}");

    // Mid-job: once some rounds have run and before the job ends.
    let start = Instant::now();
    let mid_metrics = loop {
        let (_, m) = get(ops_port, &operator, "/metrics", None);
        let ok_rounds = sample(&m, "fedsilo_rounds_total{purpose=\"train\",outcome=\"ok\"}");
        if ok_rounds.is_some_and(|n| n >= 5.0) {
            break m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no rounds after 300 s: {m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("/metrics during the job:\n{mid_metrics}");
    if let Some(b) = &browser {
        // A round takes milliseconds here: hold the participants (SIGSTOP) so that the
        // browser sees the job in the middle, then let them go on.
        let signal = |sig: &str| {
            for p in &parts {
                let _ = Command::new("kill")
                    .args([sig, &p.child.id().to_string()])
                    .status();
            }
        };
        signal("-STOP");
        let shot = keep.join("dashboard-mid-job.png");
        let _ = std::fs::remove_file(&shot);
        chromium(
            b,
            &fed.path("profile-mid"),
            &url,
            &format!("--screenshot={}", shot.display()),
        );
        let dom = chromium(b, &fed.path("profile-mid-dom"), &url, "--dump-dom");
        signal("-CONT");
        assert!(shot.is_file(), "no mid-job screenshot");
        eprintln!("mid-job dashboard screenshot: {}", shot.display());
        std::fs::write(keep.join("dashboard-mid-job.html"), &dom).unwrap();
        assert!(
            dom.contains("class=\"state running\"") || dom.contains("class=\"state waiting\""),
            "mid-job, the job is running or waiting: {dom}"
        );
        assert!(!dom.contains("24 / 24 rounds"), "{dom}");
        assert!(
            dom.contains("class=\"auc-point\""),
            "an evaluation after round 4: {dom}"
        );
    }
    let status = fed.wait_finished(&job, Duration::from_secs(600));
    for p in parts.iter_mut() {
        let s = p.wait_exit(Duration::from_secs(60));
        assert!(s.success(), "participant failed: {}", p.log_text());
    }

    // The counters moved, the histograms have their buckets.
    let (_, end) = get(ops_port, &operator, "/metrics", None);
    eprintln!("/metrics at the end of the job:\n{end}");
    let train = "fedsilo_rounds_total{purpose=\"train\",outcome=\"ok\"}";
    let (mid_n, end_n) = (
        sample(&mid_metrics, train).unwrap(),
        sample(&end, train).unwrap(),
    );
    assert!(
        end_n > mid_n && end_n >= 24.0,
        "train rounds {mid_n} then {end_n}"
    );
    assert!(
        sample(&end, "fedsilo_round_received_bytes_total").unwrap()
            > sample(&mid_metrics, "fedsilo_round_received_bytes_total").unwrap()
    );
    assert!(
        end.contains("# TYPE fedsilo_round_phase_seconds histogram"),
        "{end}"
    );
    assert!(
        end.contains("fedsilo_round_phase_seconds_bucket{le=\"+Inf\",phase="),
        "{end}"
    );
    assert!(
        sample(&end, "fedsilo_store_commit_seconds_count").unwrap() >= 24.0,
        "{end}"
    );
    assert_eq!(
        sample(&end, "fedsilo_jobs{state=\"finished\"}"),
        Some(1.0),
        "{end}"
    );
    let audit = fed.audit_entries().len() as f64;
    assert_eq!(sample(&end, "fedsilo_audit_entries"), Some(audit), "{end}");

    // The overview agrees with the operator's status.
    let (_, json) = get(ops_port, &anonymous, "/api/overview", Some(&token));
    let o: serde_json::Value = serde_json::from_str(&json).unwrap();
    let j = &o["jobs"][0];
    assert_eq!(j["id"], job.as_str());
    assert_eq!(j["state"], "finished");
    assert_eq!(j["rounds_done"], 24);
    // ε spent against the budget (record-level DP): spent, and within the limit.
    let (spent, budget) = (
        j["epsilon"].as_f64().unwrap(),
        j["epsilon_budget"].as_f64().unwrap(),
    );
    assert!(spent > 0.0 && spent <= budget && budget == 3.0, "{json}");
    assert!(
        end.lines()
            .any(|l| l.starts_with("fedsilo_dp_epsilon_spent{") && !l.ends_with(" 0.0")),
        "{end}"
    );
    let evals = j["evaluations"].as_array().unwrap();
    assert!(evals.len() >= 5, "an evaluation every 4 rounds: {evals:?}");
    assert!(status.contains("AUC 0."), "{status}");
    assert_eq!(o["audit"]["entries"].as_f64(), Some(audit));

    if let Some(b) = &browser {
        let shot = keep.join("dashboard-finished.png");
        let _ = std::fs::remove_file(&shot);
        chromium(
            b,
            &fed.path("profile-end"),
            &url,
            &format!("--screenshot={}", shot.display()),
        );
        assert!(shot.is_file(), "no end-of-job screenshot");
        eprintln!("finished-job dashboard screenshot: {}", shot.display());
        let dom = chromium(b, &fed.path("profile-dom"), &url, "--dump-dom");
        std::fs::write(keep.join("dashboard.html"), &dom).unwrap();
        assert!(
            dom.contains("data-loaded=\"1\""),
            "the page never rendered an overview:\n{dom}"
        );
        assert!(dom.contains(&format!("data-job=\"{job}\"")), "{dom}");
        assert!(dom.contains("class=\"state finished\""), "{dom}");
        assert!(dom.contains("24 / 24 rounds"), "{dom}");
        assert!(
            dom.contains(&format!("{spent:.3} of 3")),
            "ε against its budget: {dom}"
        );
        for name in &fed.names {
            assert!(
                dom.contains(&format!("data-name=\"{name}\"")),
                "{name} missing"
            );
        }
        let points = dom.matches("class=\"auc-point\"").count();
        assert_eq!(points, evals.len(), "one AUC point per evaluation");
        assert!(
            dom.contains(&format!("<b id=\"audit-entries\">{audit}</b>")),
            "{dom}"
        );
        assert!(
            dom.contains("id=\"problem\" class=\"error\" hidden=\"\""),
            "the page shows an error: {dom}"
        );
    }

    // SIGTERM stops the coordinator cleanly with the operations listener open (it used to
    // hold the engine's command channel, so the shutdown waited forever).
    let _ = Command::new("kill")
        .args(["-TERM", &coord.child.id().to_string()])
        .status();
    let s = coord.wait_exit(Duration::from_secs(60));
    assert!(
        s.success(),
        "coordinator after SIGTERM: {s:?}\n{}",
        coord.log_text()
    );
    assert!(
        coord
            .log_text()
            .contains("coordinator stopped; state closed"),
        "{}",
        coord.log_text()
    );

    // A restarted coordinator still shows the job: its evaluation curve comes from the
    // persisted plan, its rounds from the audit log's tail (without phase times or bytes).
    let mut again = fed.coordinator("coordinator-restarted.log");
    let (code, json) = get(ops_port, &anonymous, "/api/overview", Some(&token));
    assert_eq!(code, 200, "{json}");
    let o: serde_json::Value = serde_json::from_str(&json).unwrap();
    let j = &o["jobs"][0];
    assert_eq!(j["id"], job.as_str());
    assert_eq!(j["state"], "finished");
    assert_eq!(j["evaluations"].as_array().unwrap(), evals, "{json}");
    let rounds = j["rounds"].as_array().unwrap();
    let job_entries = fed
        .audit_entries()
        .iter()
        .filter(|e| e.record.job_id == job)
        .count();
    assert_eq!(rounds.len(), job_entries.min(200), "{json}");
    assert!(
        rounds
            .iter()
            .all(|r| r["from_audit"] == true && r["phase_ms"].as_array().unwrap().is_empty()),
        "{json}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &again.child.id().to_string()])
        .status();
    assert!(again.wait_exit(Duration::from_secs(60)).success());
}
