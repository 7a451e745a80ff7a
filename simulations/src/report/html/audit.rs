//! Section 5: what an attacker achieved — membership inference against every released
//! model, beside the privacy section's ε, and what the coordinator's unmasked sums covered.

use std::fmt::Write as _;

use super::format::{num, pct, thousands};
use super::view::{AuditRowView, AuditView, View};
use crate::report::svg::escape;

pub(super) fn section(h: &mut String, v: &View) {
    h.push_str("<section id=\"attack\">\n<h2>5. What an attacker achieved</h2>\n");
    let Some(a) = &v.audit else {
        h.push_str(
            "<p class=\"muted\">No empirical privacy audit was run (the scenario set <code>audit = false</code>, or the \
             report predates the audit).</p>\n</section>\n",
        );
        return;
    };
    h.push_str(
        "<p>Section 4 states what the mathematics promises; this section measures what an attacker achieved. Each released \
         model was attacked by membership inference: given one customer's row, was it in the model's training set? \
         Members are training rows, non-members the same institutions' hold-out rows, equal in number.</p>",
    );
    let _ = write!(h, "<p class=\"summary\">{}</p>", reading(a));
    models_table(h, a);
    h.push_str("<h3>How the attacks were run</h3><ul>");
    for s in &a.a.method {
        let _ = write!(h, "<li>{}</li>", escape(s));
    }
    let _ = write!(
        h,
        "</ul><p class=\"note\">The audit took {} s of the run.</p>",
        num(a.a.seconds, 2)
    );
    coordinator_view(h, a, v.r.privacy.threshold);
    h.push_str("</section>\n");
}

/// The sentence a regulator reads the table by.
fn reading(a: &AuditView) -> String {
    let mut s = String::from(
        "An attack AUC of 0.5 is guessing and 1.0 is certain membership; the TPR columns give the share of members an \
         attacker identifies while wrongly accusing at most 0.1 % (or 1 %) of non-members. ",
    );
    match a.strongest.and_then(|i| a.rows.get(i)) {
        None => s.push_str("No attack produced a figure."),
        Some(row) if a.above_chance == 0 => {
            let _ = write!(
                s,
                "Here no attack did better than guessing: every AUC lies within the range a coin flip gives on this many \
                 rows (0.5 ± two standard errors); the strongest reached {} ({}, against the {} model of {}), and at most \
                 {} of members were identified at ≤ 0.1 % false positives.",
                num(row.best.map_or(f64::NAN, |b| b.1), 3),
                escape(row.best.map_or("", |b| b.0.name())),
                escape(&kind(&row.m.kind)),
                escape(&row.m.name),
                pct(a.max_tpr_at_0_1pct, 1),
            );
        }
        Some(row) => {
            let _ = write!(
                s,
                "{} of {} audited models were attacked above the chance band (0.5 + two standard errors; an attack that \
                 only guesses crosses it about once in 40 models). The strongest attack, {} against the {} model of {}, \
                 reached AUC {} (chance band ±{}): rows it was trained on are to that degree distinguishable from rows it \
                 was not. Compare the rows with and without differential privacy (the DP column) and the accountant's ε in \
                 section 4.",
                a.above_chance,
                a.rows.len(),
                escape(row.best.map_or("", |b| b.0.name())),
                escape(&kind(&row.m.kind)),
                escape(&row.m.name),
                num(row.best.map_or(f64::NAN, |b| b.1), 3),
                num(row.chance_band, 3),
            );
        }
    }
    s
}

/// `local:Bank A` → "local-only (Bank A)".
fn kind(k: &str) -> String {
    match k.split_once(':') {
        Some(("local", who)) => format!("local-only ({who})"),
        _ => k.to_string(),
    }
}

fn models_table(h: &mut String, a: &AuditView) {
    h.push_str(
        "<table class=\"wide audit\"><thead><tr><th rowspan=\"2\">Model</th><th rowspan=\"2\">Audited model</th>\
         <th rowspan=\"2\">DP (level, ε)</th><th rowspan=\"2\" class=\"num\">Members</th>\
         <th rowspan=\"2\" class=\"num\">Non-members</th><th colspan=\"3\" class=\"group\">Loss threshold</th>\
         <th colspan=\"3\" class=\"group\">LiRA (offline)</th><th rowspan=\"2\">Reading</th></tr><tr>\
         <th class=\"num sub\">AUC</th><th class=\"num sub\">TPR @ 0.1 % FPR</th><th class=\"num sub\">TPR @ 1 % FPR</th>\
         <th class=\"num sub\">AUC</th><th class=\"num sub\">TPR @ 0.1 % FPR</th><th class=\"num sub\">TPR @ 1 % FPR</th>\
         </tr></thead><tbody>",
    );
    if a.rows.is_empty() {
        h.push_str("<tr><td colspan=\"12\" class=\"muted\">No model was audited.</td></tr>");
    }
    for row in &a.rows {
        row_html(h, row);
    }
    h.push_str(
        "</tbody></table><p class=\"note\">TPR at a false-positive rate is read from the attack's ROC without \
         interpolation: under each non-member count, the number of non-members that may be called members at 0.1 % and \
         1 % (with fewer than 1,000 non-members, 0.1 % allows none). The chance band is two standard errors of the AUC of \
         an attack that only guesses.</p>",
    );
}

fn row_html(h: &mut String, row: &AuditRowView) {
    let m = row.m;
    let dp = match &m.dp {
        None => "none".to_string(),
        Some(d) => format!("{}-level, ε = {}", d.level, num(d.epsilon, 2)),
    };
    let reading = match (row.best, row.above_chance) {
        _ if !row.chance_band.is_finite() => {
            "<span class=\"muted\">no rows to attack</span>".to_string()
        }
        (None, _) => format!(
            "<span class=\"muted\">{}</span>",
            escape(m.note.as_deref().unwrap_or("no figure"))
        ),
        (Some(_), true) => format!(
            "above chance: membership leaks (AUC > 0.5 + {})",
            escape(&num(row.chance_band, 3))
        ),
        (Some(_), false) => format!(
            "indistinguishable from guessing (0.5 ± {})",
            escape(&num(row.chance_band, 3))
        ),
    };
    let cell = |v: f64, above: bool| {
        format!(
            "<td class=\"num{}\">{}</td>",
            if above { " leak" } else { "" },
            num(v, 3)
        )
    };
    let above = |auc: f64| auc.is_finite() && auc > 0.5 + row.chance_band;
    let _ = write!(
        h,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}<br><span class=\"muted\">FP allowed: {} / {}</span></td>{}<td class=\"num\">{}</td>\
         <td class=\"num\">{}</td>{}<td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
        escape(&m.name),
        escape(&kind(&m.kind)),
        escape(&dp),
        thousands(m.members as u64),
        thousands(m.non_members as u64),
        row.false_positives_allowed.0,
        row.false_positives_allowed.1,
        cell(m.loss_auc, above(m.loss_auc)),
        pct(m.loss_tpr_at_0_1pct, 1),
        pct(m.loss_tpr_at_1pct, 1),
        cell(m.lira_auc, above(m.lira_auc)),
        pct(m.lira_tpr_at_0_1pct, 1),
        pct(m.lira_tpr_at_1pct, 1),
        reading
    );
}

fn coordinator_view(h: &mut String, a: &AuditView, threshold: usize) {
    h.push_str("<h3>What the coordinator's view allows</h3>");
    let view = &a.a.coordinator_view;
    if view.is_empty() {
        h.push_str("<p class=\"muted\">No round was recorded.</p>");
        return;
    }
    h.push_str(
        "<p>The coordinator never saw one institution's vector: it saw the sums below, each over at least t institutions \
         (rounds whose secure aggregation did not complete revealed nothing).</p>",
    );
    if let Some(c) = a.smallest_sum {
        let _ = write!(
            h,
            "<p>The smallest sum it unmasked covered <strong>{} institutions</strong> ({}, {}), against a threshold of t = {}.</p>",
            c.min_institutions,
            escape(&c.job),
            escape(c.purpose.name()),
            threshold
        );
    }
    h.push_str(
        "<table class=\"wide coordinator-view\"><thead><tr><th>Job</th><th>Purpose</th><th class=\"num\">Sums unmasked</th>\
         <th class=\"num\">Rounds with nothing unmasked</th><th class=\"num\">Institutions per sum</th><th class=\"num\">t</th>\
         <th class=\"num\">Noised sums</th><th>What one sum reveals</th></tr></thead><tbody>",
    );
    for c in view {
        let per_sum = if c.sums == 0 {
            "—".to_string()
        } else if c.min_institutions == c.max_institutions {
            c.min_institutions.to_string()
        } else {
            format!("{}–{}", c.min_institutions, c.max_institutions)
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&c.job),
            escape(c.purpose.name()),
            c.sums,
            c.failed,
            per_sum,
            c.threshold,
            if c.noised == 0 {
                "none".to_string()
            } else {
                format!("{} of {}", c.noised, c.sums)
            },
            escape(&c.reveals)
        );
    }
    h.push_str("</tbody></table>");
}
