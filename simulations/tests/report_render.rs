//! The regulator's report: HTML structure, charts, escaping, no network references, JSON
//! round trip, odd data, and a headless-Chromium screenshot that shows the charts drawn.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fedsilo_simulations::report::audit::{AuditDp, AuditReport, CoordinatorView, ModelAudit};
use fedsilo_simulations::report::svg;
use fedsilo_simulations::report::{
    CurvePoint, DpReport, DropEvent, InstitutionComparison, InstitutionSummary, Metrics,
    ModelReport, PrivacyReport, Report, RoundReport, ScenarioSummary, Totals,
};
use fedsilo_task::Purpose;

const INSTITUTIONS: [&str; 5] = [
    "Northbank",
    "A&B <Bank>",
    "Coastal Credit Union",
    "Harbour Savings",
    "Meridian Finance",
];

/// ROC, KS table and gains.
type Curves = (Vec<(f64, f64)>, Vec<(f64, f64, f64)>, Vec<(f64, f64)>);

/// A concave ROC curve `tpr = 1 - (1 - fpr)^k` with AUC `k / (k + 1)`, and the KS and
/// gains tables it implies for a given positive rate; `n + 1` points each.
fn curves(auc: f64, positive_rate: f64, n: usize) -> Curves {
    let k = auc / (1.0 - auc);
    let mut roc = Vec::new();
    let mut ks = Vec::new();
    let mut gains = Vec::new();
    for i in 0..=n {
        let fpr = i as f64 / n as f64;
        let tpr = 1.0 - (1.0 - fpr).powf(k);
        let pop = positive_rate * tpr + (1.0 - positive_rate) * fpr;
        roc.push((fpr, tpr));
        ks.push((pop, tpr, fpr));
        gains.push((pop, tpr));
    }
    (roc, ks, gains)
}

fn metrics(auc: f64, ks: f64, log_loss: f64, lift: f64) -> Metrics {
    Metrics {
        auc,
        ks,
        log_loss,
        top_decile_lift: lift,
    }
}

fn model(
    name: &str,
    task: &str,
    kind: &str,
    auc: f64,
    positive_rate: f64,
    eval_every: u64,
) -> ModelReport {
    let (roc, ks_curve, gains) = curves(auc, positive_rate, 20);
    let ks = ks_curve.iter().map(|(_, a, b)| a - b).fold(0.0, f64::max);
    let curve = (1..=10u64)
        .map(|r| CurvePoint {
            round: r,
            train_loss: Some(0.45 + 0.24 * (-(r as f64) / 3.0).exp()),
            holdout_auc: (r % eval_every == 0).then(|| auc - 0.08 * (-(r as f64) / 2.5).exp()),
        })
        .collect();
    let comparison = INSTITUTIONS
        .iter()
        .enumerate()
        .map(|(i, name)| InstitutionComparison {
            institution: name.to_string(),
            // Institution 3 has enough data to do slightly better alone.
            local_only_auc: if i == 3 {
                auc + 0.004
            } else {
                auc - 0.05 + 0.01 * i as f64
            },
            federated_auc: auc - 0.002 * i as f64,
            pooled_auc: auc + 0.006,
        })
        .collect();
    ModelReport {
        name: name.to_string(),
        task: task.to_string(),
        model_kind: kind.to_string(),
        curve,
        final_metrics: metrics(auc, ks, 0.4931, 2.87),
        pooled_metrics: Some(metrics(auc + 0.006, ks + 0.01, 0.4902, 2.93)),
        roc,
        ks_curve,
        gains,
        comparison,
        notes: vec![
            "Metrics of the federated model come from score histograms summed under secure aggregation.".into(),
        ],
        scorecard: None,
        vertical: None,
    }
}

fn round(
    model: &str,
    round: u64,
    purpose: &str,
    dropped: &[(&str, &str)],
    outcome: &str,
) -> RoundReport {
    let participants: Vec<String> = INSTITUTIONS.iter().map(|s| s.to_string()).collect();
    let survivors: Vec<String> = participants
        .iter()
        .filter(|p| !dropped.iter().any(|(d, _)| d == p))
        .cloned()
        .collect();
    let payload = match purpose {
        "stats" => 1_600u64,
        "eval" => 3_300,
        _ => 2_450,
    };
    RoundReport {
        model: model.to_string(),
        round,
        purpose: purpose.parse().unwrap(),
        participants: participants.clone(),
        survivors: survivors.clone(),
        dropped: dropped
            .iter()
            .map(|(who, phase)| DropEvent {
                institution: who.to_string(),
                phase: phase.to_string(),
                reason: "scenario event: drop".into(),
            })
            .collect(),
        phase_ms: vec![
            ("advertise_keys".into(), 1.8 + round as f64 * 0.1),
            ("share_keys".into(), 3.2),
            ("masked_input".into(), 11.5 + (round % 3) as f64),
            ("unmasking".into(), 4.1),
        ],
        bytes_sent: survivors
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), payload + 17 * i as u64 + round))
            .collect(),
        bytes_received: survivors
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), payload * 2 + 5 * i as u64))
            .collect(),
        outcome: outcome.to_string(),
    }
}

/// One audited model: `(loss AUC, LiRA AUC)` and TPRs scaled from them.
fn audited(name: &str, kind: &str, dp: Option<f64>, n: usize, auc: (f64, f64)) -> ModelAudit {
    ModelAudit {
        name: name.into(),
        job: name.into(),
        kind: kind.into(),
        dp: dp.map(|epsilon| AuditDp {
            level: "institution".into(),
            epsilon,
            delta: 1e-5,
        }),
        members: n,
        non_members: n,
        loss_auc: auc.0,
        loss_tpr_at_0_1pct: (auc.0 - 0.5) / 10.0,
        loss_tpr_at_1pct: (auc.0 - 0.5) / 2.0,
        lira_auc: auc.1,
        lira_tpr_at_0_1pct: (auc.1 - 0.5) / 10.0,
        lira_tpr_at_1pct: (auc.1 - 0.5) / 2.0,
        shadows: 4,
        note: None,
    }
}

fn view(job: &str, purpose: Purpose, sums: usize, min: usize, noised: usize) -> CoordinatorView {
    CoordinatorView {
        job: job.into(),
        purpose,
        sums,
        failed: usize::from(purpose == Purpose::Train),
        min_institutions: min,
        max_institutions: 5,
        threshold: 3,
        noised,
        reveals: format!("what a <{}> sum reveals", purpose.name()),
    }
}

/// The credit model attacked as federated, pooled and one local model; the propensity model
/// with DP. The pooled model's LiRA is the only figure above chance.
fn sample_audit() -> AuditReport {
    AuditReport {
        method: vec!["Threat model: the attacker holds the <released> model.".into()],
        models: vec![
            audited("credit-risk", "federated", None, 1000, (0.512, 0.507)),
            audited("credit-risk", "pooled", None, 1000, (0.515, 0.562)),
            audited("credit-risk", "local:A&B <Bank>", None, 120, (0.55, 0.53)),
            audited(
                "marketing-propensity",
                "federated",
                Some(2.5),
                1000,
                (0.49, 0.501),
            ),
        ],
        coordinator_view: vec![
            view("credit-risk", Purpose::Stats, 2, 5, 0),
            view("credit-risk", Purpose::Train, 10, 4, 0),
            view("marketing-propensity", Purpose::Train, 9, 5, 9),
        ],
        seconds: 0.42,
    }
}

/// Two models, five institutions, ten training rounds each, one survived dropout, one
/// failed round, DP on (for the propensity model).
fn sample_report() -> Report {
    let institutions = INSTITUTIONS
        .iter()
        .enumerate()
        .map(|(i, name)| InstitutionSummary {
            name: name.to_string(),
            rows_train: 4_000 + 1_250 * i,
            rows_holdout: 1_000 + 312 * i,
            positive_rate: 0.061 + 0.007 * i as f64,
        })
        .collect();
    let mut rounds = Vec::new();
    for (m, first) in [("credit-risk", 1u64), ("marketing-propensity", 1)] {
        rounds.push(round(m, first, "stats", &[], "ok"));
        for r in 1..=10 {
            let (dropped, outcome): (Vec<(&str, &str)>, &str) = match (m, r) {
                ("credit-risk", 3) => (vec![("A&B <Bank>", "masked_input")], "ok"),
                ("marketing-propensity", 6) => (
                    vec![
                        ("Northbank", "share_keys"),
                        ("Harbour Savings", "share_keys"),
                        ("Meridian Finance", "masked_input"),
                    ],
                    "aborted: 2 survivors, below threshold 3",
                ),
                _ => (vec![], "ok"),
            };
            rounds.push(round(m, first + r, "train", &dropped, outcome));
        }
        rounds.push(round(m, first + 11, "eval", &[], "ok"));
    }
    let bytes_sent = rounds
        .iter()
        .flat_map(|r| r.bytes_sent.iter().map(|(_, b)| *b))
        .sum();
    let bytes_received = rounds
        .iter()
        .flat_map(|r| r.bytes_received.iter().map(|(_, b)| *b))
        .sum();
    Report {
        scenario: ScenarioSummary {
            name: "quickstart".into(),
            description: "Five lenders train a default model and a propensity model; Bank \"A&B\" drops once.".into(),
            seed: 7,
            transport: "memory".into(),
            institutions,
            datasets: vec![fedsilo_simulations::report::DatasetSummary {
                name: "customers".into(),
                cohort: Some("maa > 200000 & <script>".into()),
                derived: vec![fedsilo_simulations::report::DerivedColumn {
                    name: "assets".into(),
                    expr: "current + fixed".into(),
                }],
                derived_labels: vec![],
                rows_read: vec![1000, 3000],
                rows_kept: vec![100, 200],
            }],
        },
        models: vec![
            model("credit-risk", "risk", "logistic_regression", 0.781, 0.08, 2),
            model("marketing-propensity", "propensity", "gbdt", 0.702, 0.12, 1),
        ],
        rounds,
        privacy: PrivacyReport {
            threshold: 3,
            neighbours: 4,
            encoding: "fixed point, 2^-16 resolution, values clipped to ±32768, sums modulo 2^64".into(),
            coordinator_saw: vec![
                "Only masked vectors: each institution's contribution was hidden by pairwise masks.".into(),
                "Only sums of at least t institutions' vectors, never one institution's <update> alone.".into(),
            ],
            dp: Some(DpReport {
                mechanism: "distributed discrete Gaussian under secure aggregation (RDP accountant)".into(),
                level: fedsilo_task::DpLevel::Institution,
                epsilon_record: 2.5,
                epsilon_institution: 2.5,
                sampling_rate: None,
                noise_multiplier: 1.1,
                clip: 1.0,
                epsilon: 2.5,
                delta: 1e-5,
                budget: Some(3.0),
                epsilon_per_round: (1..=10).map(|i| 0.25 * i as f64).collect(),
            }),
        },
        audit_head: "9f2c4e0b7d51a3c8e6f0b2d4a6c8e0f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3".into(),
        totals: Totals {
            wall_seconds: 12.75,
            rounds: 24,
            bytes_sent,
            bytes_received,
            peak_memory_bytes: Some(187_432_960),
        },
        jobs: vec![],
        audit: Some(sample_audit()),
        psi: Vec::new(),
    }
}

/// `(data-series, number of points)` of every polyline, in document order.
fn polylines(html: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for chunk in html.split("<polyline").skip(1) {
        let tag = &chunk[..chunk.find('>').expect("unterminated polyline")];
        let attr = |name: &str| -> String {
            let key = format!("{name}=\"");
            let start = tag
                .find(&key)
                .unwrap_or_else(|| panic!("no {name} in {tag}"))
                + key.len();
            let end = start + tag[start..].find('"').unwrap();
            tag[start..end].to_string()
        };
        let points = attr("points");
        for p in points.split_whitespace() {
            let (x, y) = p.split_once(',').unwrap_or_else(|| panic!("bad point {p}"));
            assert!(
                x.parse::<f64>().unwrap().is_finite() && y.parse::<f64>().unwrap().is_finite(),
                "{p}"
            );
        }
        out.push((attr("data-series"), points.split_whitespace().count()));
    }
    out
}

/// Every non-void element is closed, in order; no stray `<` in text.
fn assert_balanced(html: &str) {
    const VOID: [&str; 6] = ["meta", "br", "link", "img", "hr", "input"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').expect("unterminated tag");
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        assert!(!name.is_empty(), "stray '<' before {tag:?}");
        if let Some(closing) = tag.strip_prefix('/') {
            let open = stack
                .pop()
                .unwrap_or_else(|| panic!("</{closing}> closes nothing"));
            assert_eq!(open, name, "<{open}> closed by </{name}>");
        } else if !(tag.ends_with('/') || VOID.contains(&name.as_str())) {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
}

#[test]
fn html_has_every_section_chart_and_escaped_name() {
    let report = sample_report();
    let html = report.render_html();
    assert!(html.starts_with("<!DOCTYPE html>"), "not HTML5");
    assert_balanced(&html);
    // The cohort and the derived column, escaped, with the rows each institution kept.
    assert!(
        html.contains("Cohort <code class=\"expr\">maa &gt; 200000 &amp; &lt;script&gt;</code>: <strong>300 of 4,000 customers</strong> (7.5%) kept."),
        "cohort line missing"
    );
    assert!(html.contains("<td class=\"num\">3,000</td><td class=\"num\">200</td>"));
    assert!(
        html.contains("<li><code>assets</code> = <code class=\"expr\">current + fixed</code></li>")
    );

    for heading in [
        "1. Scenario and institutions</h2>",
        "2. Model quality</h2>",
        "3. Cost: rounds, time and traffic</h2>",
        "4. Privacy</h2>",
        "5. What an attacker achieved</h2>",
        "6. Audit chain and totals</h2>",
        "What the coordinator's view allows</h3>",
        "2.1 credit-risk</h3>",
        "2.2 marketing-propensity</h3>",
        "Federated versus going it alone, per institution</h4>",
        "Dropouts and how each round survived them</h3>",
        "What the coordinator saw</h3>",
        "Differential privacy</h3>",
    ] {
        assert!(html.contains(heading), "missing heading {heading}");
    }

    // One SVG per chart: five per model, one traffic chart per model, one ε chart.
    assert_eq!(html.matches("<svg").count(), 2 * 5 + 2 + 1);
    assert_eq!(html.matches("</svg>").count(), 13);
    assert!(
        !html.contains("no data"),
        "a chart of the sample report is empty"
    );

    // Polylines with the expected number of points, in document order.
    let lines = polylines(&html);
    let counts: Vec<usize> = lines.iter().map(|(_, n)| *n).collect();
    assert_eq!(
        counts,
        vec![
            10, 5, 21, 21, 21,
            21, // credit-risk: loss, AUC every 2nd round, ROC, KS ×2, gains
            10, 10, 21, 21, 21, 21, // propensity: AUC every round
            10, // ε per round
        ],
        "{lines:?}"
    );
    assert_eq!(lines[0].0, "training loss (federation)");
    assert_eq!(lines[3].0, "positives (cumulative share)");
    assert_eq!(lines[4].0, "negatives (cumulative share)");
    // The diagonal, pooled reference, KS gap, decile marker and budget are reference lines.
    assert_eq!(html.matches("class=\"reference\"").count(), 2 * 5 + 1);
    assert!(html.contains("KS = 0.4"), "KS gap not labelled");
    assert!(html.contains("random scoring (AUC 0.5)") && html.contains("random targeting"));
    // One bar pair per round: 12 rounds per model, sent and received.
    assert_eq!(html.matches("<rect class=\"bar\"").count(), 2 * 12 * 2);

    // Escaping: the awkward institution name never appears raw.
    assert!(html.contains("A&amp;B &lt;Bank&gt;"));
    assert!(!html.contains("A&B <Bank>") && !html.contains("<Bank>"));
    assert!(html.contains("&lt;update&gt;"));
    assert!(html.contains("Bank &quot;A&amp;B&quot; drops once"));

    // No network: no external resources of any kind, no script.
    let lower = html.to_ascii_lowercase();
    for bad in [
        "http://", "https://", "src=", "<script", "<link", "@import", "url(", "<iframe", "<img",
    ] {
        assert!(!lower.contains(bad), "report.html contains {bad:?}");
    }
    for href in lower.split("href=\"").skip(1) {
        assert!(
            href.starts_with('#'),
            "non-local link: {}",
            &href[..href.len().min(60)]
        );
    }

    // The comparison table: federated beats local-only at 4 of 5 institutions per model,
    // each highlighted (federated and difference cells), plus the average row.
    assert_eq!(html.matches("class=\"num gain\"").count(), 2 * (4 * 2 + 2));
    assert_eq!(html.matches("class=\"num shortfall\"").count(), 2 * 2);
    assert_eq!(html.matches("Average (unweighted)").count(), 2);
    assert!(html.contains("beat the local-only model at <strong>4 of 5</strong>"));

    // Summary line against the pooled reference.
    assert!(html.contains("AUC <strong>0.781</strong>"));
    assert!(html.contains("is 0.006 below the pooled AUC"));

    // Cost: dropouts and how the rounds came out.
    assert!(html.contains("Completed: 4 of 5 institutions survived and at least t = 3 were needed"));
    assert!(html.contains(
        "Did not complete: 2 of 5 survived (t = 3). Error: aborted: 2 survivors, below threshold 3."
    ));
    // The three dropouts of the failed round share one verdict cell.
    assert!(html.contains("<td rowspan=\"3\" class=\"verdict-failed\">"));
    assert_eq!(html.matches("class=\"verdict-").count(), 2);
    // Rounds tables: one per model, a column per protocol phase.
    assert_eq!(html.matches("<table class=\"rounds wide\">").count(), 2);
    assert!(html.contains("Time per phase (ms)</th>") && html.contains(">advertise keys</th>"));
    assert!(html.contains("masked input"));
    assert!(html.contains("4 of 5</td>"));

    // Privacy and audit.
    assert!(html.contains("The coordinator saw only masked vectors and their sums"));
    assert!(html.contains("Threshold t = 3.") && html.contains("Neighbourhood k = 4."));
    assert!(html.contains("(that is, with every other institution)"));
    assert!(html.contains("fixed point, 2^-16 resolution"));
    assert!(html.contains("ε = 2.500") && html.contains("1.0×10⁻⁵"));
    assert!(html.contains("the run stayed within it"));
    assert!(html.contains("budget ε = 3.00"));
    assert!(html.contains(&report.audit_head));
    assert!(
        html.contains("178.75 MiB") || html.contains("179 MiB"),
        "peak memory"
    );

    // What an attacker achieved: one row per audited model; only the pooled model's LiRA
    // (0.562) is above its chance band (2·√(2001 / 12·10⁶) ≈ 0.026), highlighted.
    assert_eq!(html.matches("<table class=\"wide audit\">").count(), 1);
    assert_eq!(html.matches("class=\"num leak\"").count(), 1);
    assert!(html.contains("1 of 4 audited models were attacked above the chance band"));
    assert!(html.contains(
        "The strongest attack, LiRA against the pooled model of credit-risk, reached AUC 0.562"
    ));
    assert_eq!(
        html.matches("indistinguishable from guessing (0.5 ± 0.026)")
            .count(),
        2
    );
    // 120 per side: a band of 2·√(241 / 172 800) ≈ 0.075, and no false positive at 0.1 %.
    assert!(html.contains("indistinguishable from guessing (0.5 ± 0.075)"));
    assert!(html.contains("local-only (A&amp;B &lt;Bank&gt;)"));
    assert!(html.contains("FP allowed: 0 / 1<") && html.contains("FP allowed: 1 / 10<"));
    assert!(html.contains("institution-level, ε = 2.50"));
    assert!(html.contains("the attacker holds the &lt;released&gt; model"));
    // The coordinator's view: the smallest sum, per-sum ranges, the noised rounds.
    assert!(html.contains(
        "The smallest sum it unmasked covered <strong>4 institutions</strong> (credit-risk, train)"
    ));
    assert!(html.contains(">4–5</td>") && html.contains(">9 of 9</td>"));
    assert!(html.contains("what a &lt;train&gt; sum reveals"));
}

#[test]
fn without_an_audit_the_section_says_why() {
    let mut report = sample_report();
    report.audit = None;
    let html = report.render_html();
    assert!(html.contains("5. What an attacker achieved</h2>"));
    assert!(html.contains("No empirical privacy audit was run"));
    assert!(!html.contains("wide audit"));
    assert_balanced(&html);
    // No attack above chance: the reading says so.
    let mut report = sample_report();
    if let Some(a) = &mut report.audit {
        a.models.remove(1);
    }
    let html = report.render_html();
    assert!(
        html.contains("Here no attack did better than guessing"),
        "{html}"
    );
    assert!(html.contains("the strongest reached 0.550 (the loss-threshold attack, against the local-only (A&amp;B &lt;Bank&gt;) model of credit-risk)"));
    // A report written before the audit existed still reads.
    let mut json: serde_json::Value = serde_json::from_str(&sample_report().to_json()).unwrap();
    json.as_object_mut().unwrap().remove("audit");
    let old: Report = serde_json::from_value(json).unwrap();
    assert_eq!(old.audit, None);
}

#[test]
fn without_dp_the_report_says_so_in_plain_words() {
    let mut report = sample_report();
    report.privacy.dp = None;
    let html = report.render_html();
    assert!(html.contains("No differential-privacy noise was added in this run."));
    assert_eq!(html.matches("<svg").count(), 12);
    assert_balanced(&html);
}

#[test]
fn report_json_round_trips_to_an_equal_report() {
    let report = sample_report();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested/out");
    let (json_path, html_path) = report.write(&out).unwrap();
    assert_eq!(json_path, out.join("report.json"));
    assert_eq!(html_path, out.join("report.html"));
    let json = std::fs::read_to_string(&json_path).unwrap();
    assert_eq!(json, report.to_json());
    assert!(json.contains("\n  \"scenario\": {"), "not pretty-printed");
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    assert_eq!(
        std::fs::read_to_string(&html_path).unwrap(),
        report.render_html()
    );
}

#[test]
fn write_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let err = sample_report().write(&blocker.join("out")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("not-a-dir"), "{msg}");
}

#[test]
fn odd_data_renders_without_panicking() {
    // Nothing at all.
    let empty = Report {
        scenario: ScenarioSummary {
            name: String::new(),
            description: String::new(),
            seed: 0,
            transport: String::new(),
            institutions: vec![],
            datasets: vec![],
        },
        models: vec![],
        rounds: vec![],
        privacy: PrivacyReport {
            threshold: 0,
            neighbours: 0,
            encoding: String::new(),
            coordinator_saw: vec![],
            dp: None,
        },
        audit_head: String::new(),
        totals: Totals {
            wall_seconds: f64::NAN,
            rounds: 0,
            bytes_sent: 0,
            bytes_received: 0,
            peak_memory_bytes: None,
        },
        jobs: vec![],
        audit: None,
        psi: Vec::new(),
    };
    let html = empty.render_html();
    assert_balanced(&html);
    assert!(!html.contains("<svg"));
    assert!(
        html.contains("No model was trained") && html.contains("No aggregation round was recorded")
    );

    // A model whose figures are all missing or NaN, a round with no traffic, DP with
    // nothing per round.
    let mut odd = sample_report();
    let nan = f64::NAN;
    odd.models.truncate(1);
    let m = &mut odd.models[0];
    m.curve = vec![
        CurvePoint {
            round: 1,
            train_loss: Some(nan),
            holdout_auc: None,
        },
        CurvePoint {
            round: 2,
            train_loss: Some(0.6),
            holdout_auc: Some(f64::INFINITY),
        },
        CurvePoint {
            round: 3,
            train_loss: Some(0.5),
            holdout_auc: None,
        },
    ];
    m.final_metrics = metrics(nan, nan, nan, nan);
    m.pooled_metrics = None;
    m.roc = vec![];
    m.ks_curve = vec![(nan, nan, nan)];
    m.gains = vec![(0.0, 0.0), (nan, 0.5), (1.0, 1.0)];
    m.comparison = vec![InstitutionComparison {
        institution: "A&B <Bank>".into(),
        local_only_auc: nan,
        federated_auc: 0.7,
        pooled_auc: nan,
    }];
    odd.scenario.institutions[0].positive_rate = nan;
    odd.rounds.truncate(2);
    odd.rounds[1].bytes_sent.clear();
    odd.rounds[1].bytes_received.clear();
    odd.rounds[1].phase_ms = vec![("masked_input".into(), nan)];
    if let Some(dp) = &mut odd.privacy.dp {
        dp.epsilon = f64::INFINITY;
        dp.budget = None;
        dp.epsilon_per_round.clear();
    }
    if let Some(a) = &mut odd.audit {
        a.models[0].loss_auc = nan;
        a.models[0].lira_auc = nan;
        a.models[0].lira_tpr_at_0_1pct = f64::INFINITY;
        a.models[0].note = Some("the model could not score the audited <rows>".into());
        a.models[1].members = 0;
        a.models[1].non_members = 0;
        a.models[1].loss_tpr_at_1pct = nan;
        a.seconds = nan;
        a.models[2].dp = Some(AuditDp {
            level: "institution".into(),
            epsilon: nan,
            delta: nan,
        });
    }
    let html = odd.render_html();
    assert_balanced(&html);
    assert!(html.contains("the model could not score the audited &lt;rows&gt;"));
    assert!(html.contains("no rows to attack"));
    for raw in ["NaN", ">inf", ",inf", "\"inf", "inf<", "inf\""] {
        assert!(
            !html.contains(raw),
            "raw non-finite number in the HTML: {raw}"
        );
    }
    // Loss: 2 finite points; AUC: no finite point; ROC and KS: empty; gains: NaN skipped;
    // ε per round: empty.
    assert_eq!(html.matches("<svg").count(), 5 + 1 + 1);
    assert_eq!(html.matches("no data").count(), 4);
    let counts: Vec<usize> = polylines(&html).iter().map(|(_, n)| *n).collect();
    assert_eq!(counts, vec![2, 2]);
    assert!(html.contains("no pooled reference was trained"));
    assert!(html.contains("n/a"));

    // NaN and infinity are written as null and read back as NaN.
    let back: Report = serde_json::from_str(&odd.to_json()).unwrap();
    assert!(back.models[0].final_metrics.auc.is_nan());
    assert!(back.models[0].gains[1].0.is_nan());
    assert!(back.models[0].comparison[0].local_only_auc.is_nan());
    assert!(back.privacy.dp.as_ref().unwrap().epsilon.is_nan());
    assert!(back.scenario.institutions[0].positive_rate.is_nan());
    let (a, b) = (odd.audit.as_ref().unwrap(), back.audit.as_ref().unwrap());
    assert!(b.models[0].loss_auc.is_nan() && b.models[0].lira_tpr_at_0_1pct.is_nan());
    assert!(b.models[1].loss_tpr_at_1pct.is_nan() && b.seconds.is_nan());
    assert!(b.models[2].dp.as_ref().unwrap().epsilon.is_nan());
    assert_eq!(b.models[3], a.models[3]);
    assert_eq!(b.coordinator_view, a.coordinator_view);
    assert_eq!(back.models[0].curve[1].holdout_auc, None);
}

fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

fn hex_rgb(hex: &str) -> [u8; 3] {
    let h = hex.trim_start_matches('#');
    let byte = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).unwrap();
    [byte(0), byte(2), byte(4)]
}

/// Runs Chromium headless on the report; returns the screenshot path.
fn screenshot(chromium: &Path, dir: &Path, html: &Path) -> PathBuf {
    let shot = dir.join("shot.png");
    let profile = dir.join("profile");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--window-size=1280,4000")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match child.try_wait().unwrap() {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish its screenshot within 180 s");
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        shot.is_file(),
        "chromium wrote no screenshot (status {}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    shot
}

#[test]
fn headless_chromium_screenshot_shows_the_charts() {
    if std::env::var("FEDSILO_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("FEDSILO_SKIP_BROWSER=1: skipping the browser screenshot test");
        return;
    }
    // The suite needs only the Rust toolchain, so on a machine without a browser this check
    // says loudly that it did not run. CI (.ci/run) installs Debian's chromium and then sets
    // FEDSILO_REQUIRE_BROWSER=1, under which a missing browser is a failure.
    let Some(chromium) = find_on_path(&["chromium", "chromium-browser"]) else {
        if std::env::var("FEDSILO_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("chromium is not on PATH: install it with `apt-get install chromium`");
        }
        eprintln!(
            "NOTE: chromium is not on PATH, so the report screenshot check DID NOT RUN \
             (apt-get install chromium; .ci/run does)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, html) = sample_report().write(dir.path()).unwrap();
    let shot = screenshot(&chromium, dir.path(), &html);

    // Keep a copy for people to look at.
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report_render");
    let _ = std::fs::create_dir_all(&keep);
    let _ = std::fs::copy(&shot, keep.join("shot.png"));
    let _ = std::fs::copy(&html, keep.join("report.html"));
    eprintln!("screenshot kept at {}", keep.join("shot.png").display());

    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().expect("image too large")];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(
        info.bit_depth,
        png::BitDepth::Eight,
        "unexpected PNG bit depth"
    );
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    assert!(
        info.width >= 1000 && info.height >= 3000,
        "{}x{}",
        info.width,
        info.height
    );
    let pixels = &buf[..info.buffer_size()];

    let primary = hex_rgb(svg::PRIMARY);
    let secondary = hex_rgb(svg::SECONDARY);
    let (mut n_primary, mut n_secondary, mut non_white) = (0usize, 0usize, 0usize);
    for px in pixels.chunks_exact(channels) {
        let rgb = [px[0], px[1], px[2]];
        if rgb == primary {
            n_primary += 1;
        } else if rgb == secondary {
            n_secondary += 1;
        }
        if rgb != [255, 255, 255] {
            non_white += 1;
        }
    }
    let total = pixels.len() / channels;
    eprintln!(
        "{}x{}: {n_primary} pixels of {}, {n_secondary} of {}, {non_white} of {total} not white",
        info.width,
        info.height,
        svg::PRIMARY,
        svg::SECONDARY
    );
    // Measured with Debian's chromium on the sample: ~7000 and ~3000 pixels; with every
    // polyline and marker removed (legend swatches only) ~600 and ~80. The thresholds sit
    // between, so they pass only when the curves themselves were painted.
    assert!(
        n_primary >= 2500,
        "only {n_primary} pixels of the first series colour: charts not drawn?"
    );
    assert!(
        n_secondary >= 1200,
        "only {n_secondary} pixels of the second series colour: charts not drawn?"
    );
    assert!(
        non_white > total / 20,
        "the page is nearly blank ({non_white} of {total} pixels)"
    );
}
