//! The operator's window: an HTTPS listener of its own (`[ops]` in `coordinator.toml`)
//! serving the live dashboard, Prometheus `/metrics`, a JSON overview and `/healthz`.
//!
//! - `GET /` — the dashboard: one HTML page with its CSS and JavaScript, served from the
//!   binary (no CDN). It holds no data; its script polls `/api/overview` every two seconds
//!   and draws jobs, rounds, participants, ε and the audit head, and each job's evaluation
//!   curve as SVG.
//! - `GET /api/overview` — [`Overview`] as JSON.
//! - `GET /metrics` — [`metrics::Metrics`] in the OpenMetrics text format.
//! - `GET /healthz` — `200 ok` while the engine actor answers within two seconds, else
//!   `503`; no authentication (load balancers).
//!
//! Authentication: a client certificate (verified against the federation's CA when
//! presented) whose name is one of the roster's operators, or `Authorization: Bearer
//! <token>` with the token `fedsilo keygen` wrote (compared in constant time). Everything is
//! read-only, and nothing shown is finer than what the coordinator already learns: job
//! states, sums' outcomes, survivor sets, phase times, byte counts, ε and the audit head.
//!
//! **Invariant:** the dashboard and `/metrics` read the engine only through the actor's
//! `Overview` command and the counters the actor moves; they never touch the store, the
//! mailboxes or a participant's messages.

pub mod metrics;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::engine::{JobStatus, ParticipantLiveness, RoundSummary};

/// Rounds of each job the dashboard keeps (the newest).
const ROUNDS_KEPT: usize = 200;
/// Connections the operations listener serves at once (more wait in the kernel's backlog).
const MAX_CONNECTIONS: usize = 64;
/// A TLS handshake on the operations listener must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `/healthz` and the API wait for the engine actor.
const ENGINE_ANSWER: Duration = Duration::from_secs(2);

/// `[ops]` of `coordinator.toml`.
#[derive(Clone, Debug)]
pub struct OpsConfig {
    pub listen: SocketAddr,
    /// The bearer token browsers and scrapers present; `None`: client certificates only.
    pub token: Option<String>,
}

/// One closed round as the dashboard shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RoundView {
    pub step: u64,
    pub round: u64,
    pub purpose: String,
    pub participants: usize,
    pub survivors: Vec<String>,
    /// Who dropped out and at which phase.
    pub dropped: Vec<(String, String)>,
    pub phase_ms: Vec<(String, f64)>,
    pub outcome: String,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub epsilon: Option<f64>,
    pub closed_unix_ms: u64,
    /// Read back from the audit log at start (a round an earlier coordinator process ran):
    /// survivors and outcome only, no phase times, bytes or dropout phases.
    pub from_audit: bool,
}

impl RoundView {
    fn of(r: &RoundSummary, now_ms: u64) -> Self {
        RoundView {
            step: r.step,
            round: r.secagg_round,
            purpose: r.purpose.to_string(),
            participants: r.participants.len(),
            survivors: r.survivors.clone(),
            dropped: r.dropped.clone(),
            phase_ms: r.phase_ms.clone(),
            outcome: r.outcome.clone(),
            bytes_received: r.bytes_received.values().sum(),
            bytes_sent: r.bytes_sent.values().sum(),
            epsilon: r.epsilon,
            closed_unix_ms: now_ms,
            from_audit: false,
        }
    }

    fn of_audit(r: &crate::audit::AuditRecord) -> Self {
        RoundView {
            step: 0,
            round: r.round,
            purpose: r.purpose.to_string(),
            participants: r.participants.len(),
            survivors: r.survivors.clone(),
            dropped: r
                .participants
                .iter()
                .filter(|p| !r.survivors.contains(p))
                .map(|p| (p.clone(), "phase not recorded".to_string()))
                .collect(),
            phase_ms: Vec::new(),
            outcome: r.outcome.clone(),
            bytes_received: 0,
            bytes_sent: 0,
            epsilon: None,
            closed_unix_ms: r.time_unix_ms,
            from_audit: true,
        }
    }
}

/// One hold-out evaluation of one label: a point of the job's evaluation curve.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalPoint {
    pub label: String,
    /// The training round the evaluation followed.
    pub round: u64,
    pub auc: f64,
    pub ks: f64,
}

/// A job on the dashboard.
#[derive(Clone, Debug, Serialize)]
pub struct JobView {
    pub id: String,
    /// `waiting`, `running`, `finished`, `failed` or `cancelled`.
    pub state: String,
    /// Why it failed or was cancelled, or what it waits for.
    pub detail: String,
    pub rounds_done: u64,
    pub total_rounds: u64,
    pub participants: Vec<String>,
    pub epsilon: f64,
    pub epsilon_budget: f64,
    /// The newest rounds closed while this coordinator process ran, oldest first.
    pub rounds: Vec<RoundView>,
    /// Evaluation curve: every hold-out evaluation of the job (from its persisted plan, so a
    /// restarted coordinator still shows it).
    pub evaluations: Vec<EvalPoint>,
}

/// The audit chain's head.
#[derive(Clone, Debug, Serialize)]
pub struct AuditView {
    pub entries: u64,
    pub head: String,
    /// How the chain was checked: at start against the head the store recorded, and every
    /// entry since appended by this process on that head.
    pub status: String,
}

/// Everything the dashboard shows, as of one moment.
#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    pub generated_unix_ms: u64,
    pub jobs: Vec<JobView>,
    pub participants: Vec<ParticipantLiveness>,
    pub audit: AuditView,
}

/// Per-job round history the actor keeps for the dashboard: the newest rounds closed, seeded
/// at start from the audit log's tail (survivors and outcome; phase times and bytes only for
/// rounds this process ran).
#[derive(Default)]
pub(crate) struct History {
    jobs: BTreeMap<String, JobHistory>,
}

#[derive(Default)]
struct JobHistory {
    rounds: VecDeque<RoundView>,
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl History {
    /// The history a (re)started coordinator begins with: the rounds of the audit log's tail
    /// (oldest first), the newest [`ROUNDS_KEPT`] per job.
    pub(crate) fn seeded(records: &[crate::audit::AuditRecord]) -> Self {
        let mut h = History::default();
        for r in records {
            h.push(&r.job_id, RoundView::of_audit(r));
        }
        h
    }

    /// A round closed.
    pub(crate) fn round(&mut self, r: &RoundSummary) {
        self.push(&r.job_id, RoundView::of(r, unix_ms()));
    }

    fn push(&mut self, job_id: &str, view: RoundView) {
        let h = self.jobs.entry(job_id.to_string()).or_default();
        if h.rounds.len() == ROUNDS_KEPT {
            h.rounds.pop_front();
        }
        h.rounds.push_back(view);
    }

    fn view(&mut self, s: &JobStatus) -> JobView {
        let h = self.jobs.entry(s.job_id.clone()).or_default();
        JobView {
            id: s.job_id.clone(),
            state: s.state.kind().to_string(),
            detail: s.detail.clone(),
            rounds_done: s.rounds_done,
            total_rounds: s.total_rounds,
            participants: s.participants.clone(),
            epsilon: s.epsilon,
            epsilon_budget: s.epsilon_budget,
            rounds: h.rounds.iter().cloned().collect(),
            evaluations: s
                .evaluations
                .iter()
                .map(|m| EvalPoint {
                    label: m.label.clone(),
                    round: m.round,
                    auc: m.metrics.auc,
                    ks: m.metrics.ks,
                })
                .collect(),
        }
    }

    /// Builds the overview from the engine's job statuses and participants.
    pub(crate) fn overview(
        &mut self,
        jobs: &[JobStatus],
        participants: Vec<ParticipantLiveness>,
        audit: AuditView,
    ) -> Overview {
        Overview {
            generated_unix_ms: unix_ms(),
            jobs: jobs.iter().map(|s| self.view(s)).collect(),
            participants,
            audit,
        }
    }
}

/// What the operations handlers need: the way to ask the actor, the metrics, who may look.
#[derive(Clone)]
pub(crate) struct OpsContext {
    pub(crate) overview: Arc<dyn Fn() -> OverviewFuture + Send + Sync>,
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) token: Option<Arc<str>>,
    pub(crate) operators: Arc<Vec<String>>,
}

pub(crate) type OverviewFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Overview>> + Send>>;

const DASHBOARD: &str = include_str!("dashboard.html");

/// Accepts on `listener` until the task is dropped or aborted; each connection is served
/// HTTP/1.1 over TLS.
pub(crate) async fn serve(listener: TcpListener, tls: Arc<ServerConfig>, ctx: OpsContext) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, remote) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "operations listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "operations listener: TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "operations listener: TLS handshake timed out");
                    return;
                }
            };
            let operator = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|leaf| fedsilo_proto::tls::cert_name(leaf))
                .filter(|name| ctx.operators.iter().any(|o| o == name));
            let service = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                let operator = operator.clone();
                async move { Ok::<_, std::convert::Infallible>(route(req, &ctx, operator).await) }
            });
            let io = hyper_util::rt::TokioIo::new(tls);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%remote, error = %e, "operations connection ended");
            }
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

/// The bearer token of a request, if it carries one.
fn bearer<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn authorised<B>(req: &Request<B>, ctx: &OpsContext, operator: Option<&str>) -> bool {
    if operator.is_some() {
        return true;
    }
    match (ctx.token.as_deref(), bearer(req)) {
        (Some(want), Some(got)) => {
            // Compare SHA-256 digests, every byte: the time taken says nothing about how
            // much of the token a guess got right, whatever the lengths.
            let a = ring::digest::digest(&ring::digest::SHA256, want.as_bytes());
            let b = ring::digest::digest(&ring::digest::SHA256, got.as_bytes());
            a.as_ref()
                .iter()
                .zip(b.as_ref())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
        }
        _ => false,
    }
}

async fn route<B>(
    req: Request<B>,
    ctx: &OpsContext,
    operator: Option<String>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "the operations listener is read-only: GET only\n",
        );
    }
    let path = req.uri().path();
    match path {
        "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD),
        "/healthz" => match tokio::time::timeout(ENGINE_ANSWER, (ctx.overview)()).await {
            Ok(Some(_)) => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
            _ => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                "the coordinator's engine does not answer\n",
            ),
        },
        "/metrics" | "/api/overview" => {
            if !authorised(&req, ctx, operator.as_deref()) {
                let mut r = reply(
                    StatusCode::UNAUTHORIZED,
                    "text/plain; charset=utf-8",
                    "present an operator's client certificate or the dashboard token \
                     (Authorization: Bearer <token>; keygen wrote it to dashboard.token)\n",
                );
                r.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    hyper::header::HeaderValue::from_static("Bearer realm=\"fedsilo\""),
                );
                return r;
            }
            let Ok(Some(overview)) = tokio::time::timeout(ENGINE_ANSWER, (ctx.overview)()).await
            else {
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "the coordinator's engine does not answer\n",
                );
            };
            if path == "/metrics" {
                match ctx.metrics.encode(&overview) {
                    Ok(text) => reply(
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    ),
                    Err(_) => reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain; charset=utf-8",
                        "metrics could not be encoded\n",
                    ),
                }
            } else {
                match serde_json::to_vec(&overview) {
                    Ok(json) => reply(StatusCode::OK, "application/json", json),
                    Err(_) => reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain; charset=utf-8",
                        "the overview could not be encoded\n",
                    ),
                }
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the operations listener serves /, /api/overview, /metrics and /healthz\n",
        ),
    }
}

#[cfg(test)]
mod tests;
