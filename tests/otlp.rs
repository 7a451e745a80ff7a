//! OpenTelemetry spans per round, end to end: a tiny OTLP trace collector (the OpenTelemetry
//! protocol's own `TraceService`, from opentelemetry-proto, served by tonic) receives what
//! the real `fedsilo coordinator serve --otlp-endpoint` exports while two participants run a
//! real job. Every round in the audit log has exactly one span named for it (`<purpose>
//! round`) carrying its job, round, step, purpose, outcome and survivor count, with child
//! spans for the SecAgg phases in protocol order inside it; nothing else is exported.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

/// Every span received, with the `service.name` of the resource that sent it.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key)? {
        Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| text(&r.attributes, "service.name"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push((service.clone(), s));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

const SPEC: &str = r#"
dataset = "data"
task = "risk"
rounds = 4
min_participants = 2
eval_every = 2
[learning]
local_epochs = 1
learning_rate = 0.05
batch_size = 32
"#;

#[test]
fn the_coordinator_exports_a_span_per_round_with_its_phases() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let collector = Collector::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let fed = TestFed::credit_by_income(&["bank-a", "bank-b"]);
    let endpoint = format!("http://{addr}");
    let mut coordinator = spawn(
        &[
            "coordinator",
            "serve",
            "--config",
            fed.path("coordinator.toml").to_str().unwrap(),
            "--otlp-endpoint",
            &endpoint,
        ],
        fed.path("coordinator.log"),
    );
    fed.wait_listening();
    let job = fed.launch(SPEC);
    let mut parts: Vec<Proc> = fed.names.iter().map(|n| fed.participant(n)).collect();
    fed.wait_finished(&job, Duration::from_secs(300));
    for p in parts.iter_mut() {
        let s = p.wait_exit(Duration::from_secs(60));
        assert!(s.success(), "participant failed: {}", p.log_text());
    }
    // A clean stop flushes the last batch.
    let _ = Command::new("kill")
        .args(["-TERM", &coordinator.child.id().to_string()])
        .status();
    let s = coordinator.wait_exit(Duration::from_secs(60));
    assert!(s.success(), "coordinator: {}", coordinator.log_text());
    let audited = fed.audit_rounds(&job);
    assert!(audited.len() >= 6, "{audited:#?}");
    let spans = collector.spans.lock().unwrap().clone();
    drop(rt);

    assert!(
        spans
            .iter()
            .all(|(service, _)| service == "fedsilo-coordinator"),
        "{:?}",
        spans.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    let rounds: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name.ends_with(" round"))
        .collect();
    let by_id: BTreeMap<&[u8], &Span> = spans
        .iter()
        .map(|(_, s)| (s.span_id.as_slice(), s))
        .collect();
    // Nothing but rounds and their phases: every other span has a round as its parent.
    for (_, s) in &spans {
        if !s.name.ends_with(" round") {
            let parent = by_id.get(s.parent_span_id.as_slice());
            assert!(
                parent.is_some_and(|p| p.name.ends_with(" round")),
                "span {} is not a phase of a round",
                s.name
            );
        }
    }
    assert_eq!(
        rounds.len(),
        audited.len(),
        "one span per audited round: {:?}",
        rounds.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let order = [
        "advertise_keys",
        "share_keys",
        "masked_input",
        "consistency_check",
        "unmask",
    ];
    for r in &audited {
        let span = rounds
            .iter()
            .find(|s| {
                text(&s.attributes, "fedsilo.job").as_deref() == Some(job.as_str())
                    && int(&s.attributes, "fedsilo.round") == Some(r.round as i64)
            })
            .unwrap_or_else(|| {
                panic!(
                    "no span for round {} of {job}; round spans: {:#?}",
                    r.round,
                    rounds
                        .iter()
                        .map(|s| (&s.name, &s.attributes))
                        .collect::<Vec<_>>()
                )
            });
        assert_eq!(span.name, format!("{} round", r.purpose));
        assert!(
            span.parent_span_id.is_empty(),
            "a round span is a root span"
        );
        let a = &span.attributes;
        assert_eq!(text(a, "fedsilo.purpose"), Some(r.purpose.to_string()));
        assert_eq!(
            text(a, "fedsilo.outcome").as_deref(),
            Some(r.outcome.as_str())
        );
        assert_eq!(int(a, "fedsilo.survivors"), Some(r.survivors.len() as i64));
        assert_eq!(
            int(a, "fedsilo.participants"),
            Some(r.participants.len() as i64)
        );
        assert!(int(a, "fedsilo.step").is_some());
        let mut phases: Vec<&Span> = spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.parent_span_id == span.span_id)
            .collect();
        phases.sort_by_key(|s| s.start_time_unix_nano);
        let names: Vec<&str> = phases.iter().map(|s| s.name.as_str()).collect();
        // The phases in protocol order, each once, at least the four every round has.
        let positions: Vec<usize> = names
            .iter()
            .map(|n| {
                order
                    .iter()
                    .position(|o| o == n)
                    .unwrap_or_else(|| panic!("unknown phase {n}"))
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        for needed in ["advertise_keys", "share_keys", "masked_input", "unmask"] {
            assert!(names.contains(&needed), "round {}: {names:?}", r.round);
        }
        for p in &phases {
            assert_eq!(p.trace_id, span.trace_id);
            assert!(p.start_time_unix_nano >= span.start_time_unix_nano);
            assert!(p.end_time_unix_nano <= span.end_time_unix_nano);
            assert!(p.end_time_unix_nano >= p.start_time_unix_nano);
        }
        // Consecutive phases: one ends where (or before) the next begins.
        for w in phases.windows(2) {
            assert!(w[0].end_time_unix_nano <= w[1].start_time_unix_nano);
        }
    }
    eprintln!(
        "received {} spans: {} rounds of job {job} and their phases",
        spans.len(),
        rounds.len()
    );
}
