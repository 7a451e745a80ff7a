//! The page's header (facts and contents), section 1 (scenario and institutions) and
//! section 6 (audit chain and totals).

use std::fmt::Write as _;

use super::format::{bytes, num, pct, plural, sci, seconds, thousands};
use super::view::View;
use crate::report::svg::{self, escape};
use crate::report::Report;

pub(super) fn header(h: &mut String, r: &Report) {
    let s = &r.scenario;
    let dp = match &r.privacy.dp {
        Some(dp) => format!("on (ε = {}, δ = {})", num(dp.epsilon, 2), sci(dp.delta)),
        None => "off".into(),
    };
    let _ = write!(
        h,
        "<header>\n<p class=\"kicker\">fedsilo · federated training simulation · report for supervisory review</p>\n\
         <h1>{}</h1>\n<p class=\"lead\">{}</p>\n<dl class=\"facts\">",
        escape(&s.name),
        if s.description.trim().is_empty() {
            "<span class=\"muted\">(no description given)</span>".to_string()
        } else {
            escape(&s.description)
        }
    );
    let facts = [
        ("Seed", s.seed.to_string()),
        ("Transport", s.transport.clone()),
        ("Institutions", s.institutions.len().to_string()),
        ("Models", r.models.len().to_string()),
        ("Aggregation rounds", r.rounds.len().to_string()),
        ("Wall-clock time", seconds(r.totals.wall_seconds)),
        (
            "Traffic (sent + received)",
            svg::bytes_label(r.totals.bytes_sent as f64 + r.totals.bytes_received as f64),
        ),
        ("Differential privacy", dp),
    ];
    for (k, v) in facts {
        let _ = write!(h, "<div><dt>{}</dt><dd>{}</dd></div>", k, escape(&v));
    }
    h.push_str("</dl>\n</header>\n<nav class=\"toc\" aria-label=\"Contents\"><ol>");
    for (id, title) in [
        ("scenario", "Scenario and institutions"),
        ("models", "Model quality"),
        ("cost", "Cost: rounds, time and traffic"),
        ("privacy", "Privacy"),
        ("attack", "What an attacker achieved"),
        ("audit", "Audit chain and totals"),
    ] {
        let _ = write!(h, "<li><a href=\"#{id}\">{title}</a></li>");
    }
    if !r.psi.is_empty() {
        h.push_str("<li><a href=\"#psi\">Vertical alignment (private set intersection)</a></li>");
    }
    h.push_str("</ol></nav>\n");
}

pub(super) fn scenario(h: &mut String, v: &View) {
    let inst = &v.r.scenario.institutions;
    h.push_str("<section id=\"scenario\">\n<h2>1. Scenario and institutions</h2>\n");
    let _ = write!(
        h,
        "<p>{} took part. Each kept its own rows; a stratified share was held out for evaluation and never used for training.</p>",
        plural(inst.len(), "institution", "institutions")
    );
    h.push_str(
        "<table class=\"institutions\"><thead><tr><th>Institution</th><th class=\"num\">Training rows</th>\
         <th class=\"num\">Hold-out rows</th><th class=\"num\">Positive rate (training)</th></tr></thead><tbody>",
    );
    if inst.is_empty() {
        h.push_str(
            "<tr><td colspan=\"4\" class=\"muted\">No institutions were recorded.</td></tr>",
        );
    }
    for i in inst {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&i.name),
            thousands(i.rows_train as u64),
            thousands(i.rows_holdout as u64),
            pct(i.positive_rate, 1)
        );
    }
    h.push_str("</tbody>");
    if let Some(t) = &v.institutions {
        let _ = write!(
            h,
            "<tfoot><tr><td>All institutions</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr></tfoot>",
            thousands(t.rows_train as u64),
            thousands(t.rows_holdout as u64),
            pct(t.positive_rate, 1)
        );
    }
    h.push_str("</table>\n");
    for d in &v.r.scenario.datasets {
        shaped(h, d, inst);
    }
    h.push_str("</section>\n");
}

/// A dataset's cohort and derived columns, as each institution applied them.
fn shaped(
    h: &mut String,
    d: &crate::report::DatasetSummary,
    inst: &[crate::report::InstitutionSummary],
) {
    let _ = write!(
        h,
        "<h3>Dataset <code>{}</code>: cohort and derived columns</h3>\
         <p>Each institution evaluated these expressions on its own rows before training; only the model's sums left it.</p>",
        escape(&d.name)
    );
    if let Some(c) = &d.cohort {
        let read: usize = d.rows_read.iter().sum();
        let kept: usize = d.rows_kept.iter().sum();
        let _ = write!(
            h,
            "<p>Cohort <code class=\"expr\">{}</code>: <strong>{} of {} customers</strong> ({}) kept.</p>",
            escape(c),
            thousands(kept as u64),
            thousands(read as u64),
            pct(kept as f64 / read.max(1) as f64, 1)
        );
        h.push_str(
            "<table class=\"cohort\"><thead><tr><th>Institution</th><th class=\"num\">Customers</th>\
             <th class=\"num\">In the cohort</th><th class=\"num\">Share</th></tr></thead><tbody>",
        );
        for (i, (r, k)) in d.rows_read.iter().zip(&d.rows_kept).enumerate() {
            let name = inst
                .get(i)
                .map_or_else(|| format!("#{}", i + 1), |x| x.name.clone());
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(&name),
                thousands(*r as u64),
                thousands(*k as u64),
                pct(*k as f64 / (*r).max(1) as f64, 1)
            );
        }
        h.push_str("</tbody></table>\n");
    }
    let lists = [
        ("Derived columns (features of the model)", &d.derived),
        ("Derived labels", &d.derived_labels),
    ];
    for (title, cols) in lists {
        if cols.is_empty() {
            continue;
        }
        let _ = write!(h, "<p>{title}:</p><ul class=\"derived\">");
        for c in cols {
            let _ = write!(
                h,
                "<li><code>{}</code> = <code class=\"expr\">{}</code></li>",
                escape(&c.name),
                escape(&c.expr)
            );
        }
        h.push_str("</ul>\n");
    }
}

pub(super) fn audit(h: &mut String, r: &Report) {
    let t = &r.totals;
    h.push_str("<section id=\"audit\">\n<h2>6. Audit chain and totals</h2>\n");
    if r.audit_head.trim().is_empty() {
        h.push_str("<p class=\"warn\">No audit-chain head was recorded for this run.</p>");
    } else {
        let _ = write!(
            h,
            "<p>Every aggregation round appended one record (participants, survivors, model and aggregate hashes, outcome) \
             to <code>audit.jsonl</code>, each record chained to the previous one by SHA-256. The head of the chain is:</p>\
             <p class=\"hash\">{}</p><p class=\"note\">To check it, run <code>fedsilo audit verify audit.jsonl</code>: it \
             recomputes the chain and must print this head.</p>",
            escape(&r.audit_head)
        );
    }
    let _ = write!(
        h,
        "<table class=\"totals\"><tbody>\
         <tr><th>Wall-clock time</th><td class=\"num\">{}</td></tr>\
         <tr><th>Aggregation rounds</th><td class=\"num\">{}</td></tr>\
         <tr><th>Bytes sent (all participants)</th><td class=\"num\">{}</td></tr>\
         <tr><th>Bytes received (all participants)</th><td class=\"num\">{}</td></tr>\
         <tr><th>Peak memory</th><td class=\"num\">{}</td></tr></tbody></table>\n</section>\n",
        escape(&seconds(t.wall_seconds)),
        t.rounds,
        escape(&bytes(t.bytes_sent)),
        escape(&bytes(t.bytes_received)),
        t.peak_memory_bytes
            .map(|b| escape(&bytes(b)))
            .unwrap_or_else(|| "not measured".into())
    );
}
