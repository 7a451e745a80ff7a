use std::collections::BTreeMap;

use fedsilo_ml::metrics::BinaryMetrics;
use fedsilo_task::instruction::Purpose;
use fedsilo_task::job::LabelMetrics;

use super::metrics::Metrics;
use super::*;
use crate::engine::{JobState, RoundOutcome};

fn round(job: &str, n: u64, ok: bool) -> RoundSummary {
    RoundSummary {
        job_id: job.into(),
        step: n,
        secagg_round: n,
        purpose: Purpose::Train,
        participants: vec!["a".into(), "b".into(), "c".into()],
        survivors: if ok {
            vec!["a".into(), "b".into(), "c".into()]
        } else {
            vec!["a".into()]
        },
        dropped: if ok {
            vec![]
        } else {
            vec![("b".into(), "share keys".into())]
        },
        phase_ms: vec![("advertise".into(), 3.0), ("masked input".into(), 40.0)],
        bytes_sent: BTreeMap::from([("a".into(), 100), ("b".into(), 50)]),
        bytes_received: BTreeMap::from([("a".into(), 1000), ("b".into(), 500)]),
        outcome: if ok {
            "ok".into()
        } else {
            "secagg: too few".into()
        },
        result: if ok {
            RoundOutcome::Ok
        } else {
            RoundOutcome::SecAgg {
                error: "too few".into(),
            }
        },
        aggregate_hash: String::new(),
        model_hash: String::new(),
        encoding: String::new(),
        neighbours: 2,
        threshold: 2,
        epsilon: None,
    }
}

fn status(job: &str, rounds_done: u64, evals: &[(u64, f64)]) -> JobStatus {
    let evaluations: Vec<LabelMetrics> = evals
        .iter()
        .map(|&(round, auc)| LabelMetrics {
            label: "default".into(),
            round,
            metrics: BinaryMetrics {
                auc,
                ks: auc / 2.0,
                log_loss: 0.5,
                top_decile_lift: 2.0,
                positives: 10.0,
                negatives: 90.0,
            },
        })
        .collect();
    JobStatus {
        job_id: job.into(),
        state: JobState::Running,
        step: rounds_done,
        rounds_done,
        total_rounds: 10,
        participants: vec!["a".into(), "b".into(), "c".into()],
        metrics: evaluations.last().cloned().into_iter().collect(),
        evaluations,
        metrics_json: String::new(),
        epsilon: 0.5,
        epsilon_budget: 2.0,
        privacy: None,
        detail: String::new(),
    }
}

fn audit() -> AuditView {
    AuditView {
        entries: 7,
        head: "ab".repeat(32),
        status: "checked".into(),
    }
}

#[test]
fn history_keeps_rounds_and_the_status_gives_the_curve() {
    let mut h = History::default();
    h.round(&round("j", 1, true));
    h.round(&round("j", 2, false));
    h.round(&round("j", 3, true));
    let o = h.overview(&[status("j", 3, &[(1, 0.70), (3, 0.75)])], vec![], audit());
    let j = &o.jobs[0];
    assert_eq!(j.rounds.len(), 3);
    assert_eq!(j.rounds[1].dropped, vec![("b".into(), "share keys".into())]);
    assert_eq!(j.rounds[0].bytes_received, 1500);
    let curve: Vec<(u64, f64)> = j.evaluations.iter().map(|e| (e.round, e.auc)).collect();
    assert_eq!(curve, vec![(1, 0.70), (3, 0.75)]);
    assert_eq!(j.state, "running");
}

#[test]
fn history_keeps_only_the_newest_rounds() {
    let mut h = History::default();
    for n in 0..(ROUNDS_KEPT as u64 + 5) {
        h.round(&round("j", n, true));
    }
    let o = h.overview(&[status("j", 0, &[])], vec![], audit());
    assert_eq!(o.jobs[0].rounds.len(), ROUNDS_KEPT);
    assert_eq!(o.jobs[0].rounds[0].round, 5);
}

#[test]
fn metrics_count_rounds_phases_bytes_and_set_gauges_at_scrape() {
    let m = Metrics::new();
    m.round(&round("j", 1, true));
    m.round(&round("j", 2, true));
    m.round(&round("j", 3, false));
    m.store_commit(0.002);
    let participants = vec![
        ParticipantLiveness {
            name: "a".into(),
            present: true,
            busy: false,
            last_seen_s: Some(1.0),
            awaited_by: vec![],
        },
        ParticipantLiveness {
            name: "b".into(),
            present: false,
            busy: false,
            last_seen_s: None,
            awaited_by: vec!["j".into()],
        },
    ];
    let o = History::default().overview(&[status("j", 3, &[])], participants, audit());
    let text = m.encode(&o).unwrap();
    for want in [
        "fedsilo_rounds_total{purpose=\"train\",outcome=\"ok\"} 2",
        "fedsilo_rounds_total{purpose=\"train\",outcome=\"failed\"} 1",
        "fedsilo_round_phase_seconds_count{phase=\"masked input\"} 3",
        "fedsilo_round_phase_seconds_bucket{le=\"0.064\",phase=\"masked input\"} 3",
        "fedsilo_round_received_bytes_total 4500",
        "fedsilo_round_sent_bytes_total 450",
        "fedsilo_store_commit_seconds_count 1",
        "fedsilo_jobs{state=\"running\"} 1",
        "fedsilo_participants_present 1",
        "fedsilo_participants_roster 2",
        "fedsilo_dp_epsilon_spent{job=\"j\"} 0.5",
        "fedsilo_audit_entries 7",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // A job gone from the overview leaves no stale gauge behind.
    let empty = History::default().overview(&[], vec![], audit());
    let text = m.encode(&empty).unwrap();
    assert!(!text.contains("fedsilo_jobs{"), "{text}");
    assert!(!text.contains("fedsilo_dp_epsilon_spent{"), "{text}");
}

fn ctx(token: Option<&str>) -> OpsContext {
    OpsContext {
        overview: Arc::new(|| Box::pin(async { None })),
        metrics: Arc::new(Metrics::new()),
        token: token.map(Arc::from),
        operators: Arc::new(vec!["operator".into()]),
    }
}

fn req(auth: Option<&str>) -> Request<()> {
    let mut b = Request::builder().uri("/metrics");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(()).unwrap()
}

#[test]
fn only_an_operator_certificate_or_the_exact_token_is_let_in() {
    let c = ctx(Some("s3cret-token-of-enough-length-000"));
    assert!(authorised(&req(None), &c, Some("operator")));
    assert!(authorised(
        &req(Some("Bearer s3cret-token-of-enough-length-000")),
        &c,
        None
    ));
    assert!(!authorised(&req(None), &c, None));
    assert!(!authorised(&req(Some("Bearer s3cret")), &c, None));
    assert!(!authorised(
        &req(Some("Basic s3cret-token-of-enough-length-000")),
        &c,
        None
    ));
    assert!(!authorised(
        &req(Some("Bearer s3cret-token-of-enough-length-0001")),
        &c,
        None
    ));
    // Without a configured token, no bearer token opens anything.
    assert!(!authorised(&req(Some("Bearer ")), &ctx(None), None));
}

#[tokio::test]
async fn routes_refuse_writes_unknown_paths_and_the_unauthenticated() {
    let c = ctx(Some("s3cret-token-of-enough-length-000"));
    let r = route(req(None), &c, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let post = Request::builder()
        .method("POST")
        .uri("/api/overview")
        .body(())
        .unwrap();
    assert_eq!(
        route(post, &c, None).await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    let other = Request::builder().uri("/etc/passwd").body(()).unwrap();
    assert_eq!(route(other, &c, None).await.status(), StatusCode::NOT_FOUND);
    let page = Request::builder().uri("/").body(()).unwrap();
    assert_eq!(route(page, &c, None).await.status(), StatusCode::OK);
    // The engine does not answer (this context's overview is None): not healthy.
    let health = Request::builder().uri("/healthz").body(()).unwrap();
    assert_eq!(
        route(health, &c, None).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[test]
fn a_restarted_history_starts_from_the_audit_log_tail() {
    let rec = |job: &str, round: u64, survivors: &[&str]| crate::audit::AuditRecord {
        job_id: job.into(),
        round,
        purpose: Purpose::Train,
        participants: vec!["a".into(), "b".into(), "c".into()],
        survivors: survivors.iter().map(|s| s.to_string()).collect(),
        model_hash: String::new(),
        aggregate_hash: String::new(),
        time_unix_ms: 1000 + round,
        outcome: "ok".into(),
    };
    let mut records: Vec<_> = (0..(ROUNDS_KEPT as u64 + 3))
        .map(|n| rec("j", n, &["a", "b", "c"]))
        .collect();
    records.push(rec("k", 0, &["a", "c"]));
    let mut h = History::seeded(&records);
    h.round(&round("k", 1, true));
    let o = h.overview(&[status("j", 0, &[]), status("k", 1, &[])], vec![], audit());
    let j = &o.jobs[0];
    assert_eq!(j.rounds.len(), ROUNDS_KEPT);
    assert_eq!(j.rounds[0].round, 3, "the newest rounds are kept");
    assert!(j
        .rounds
        .iter()
        .all(|r| r.from_audit && r.phase_ms.is_empty()));
    let k = &o.jobs[1];
    assert_eq!(k.rounds.len(), 2);
    assert!(k.rounds[0].from_audit);
    assert_eq!(
        k.rounds[0].dropped,
        vec![("b".into(), "phase not recorded".into())]
    );
    assert_eq!(k.rounds[0].closed_unix_ms, 1000);
    assert!(!k.rounds[1].from_audit, "a round this process ran");
}
