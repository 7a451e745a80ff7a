//! Section 3: what the run cost — rounds, time per phase, traffic, and the dropouts each
//! round survived (or not).

use std::fmt::Write as _;

use super::format::{bytes, duration_ms, humanise, ms_cell, plural};
use super::view::{RoundGroup, Traffic, View};
use super::Figures;
use crate::report::svg::{self, escape, Axis, BarChart, BarSeries, Format};

pub(super) fn section(h: &mut String, v: &View, figs: &mut Figures) {
    let r = v.r;
    h.push_str("<section id=\"cost\">\n<h2>3. Cost: rounds, time and traffic</h2>\n");
    let (drops, failed) = (v.rounds.drops, v.rounds.failed);
    let _ = write!(
        h,
        "<p>{} of secure aggregation; {} sent and {} received by the participants in total; {} of dropout; {}.</p>",
        plural(r.rounds.len(), "round", "rounds"),
        escape(&bytes(r.totals.bytes_sent)),
        escape(&bytes(r.totals.bytes_received)),
        plural(drops, "event", "events"),
        if failed == 0 {
            "every round completed".to_string()
        } else {
            format!("{} did not complete", plural(failed, "round", "rounds"))
        }
    );

    // One bar chart of bytes per round for each model, in order of first appearance.
    let groups = &v.rounds.groups;
    if !groups.is_empty() {
        h.push_str("<div class=\"charts\">");
        for g in groups {
            let (model, rounds) = (g.model, &g.rounds);
            let mut chart = BarChart::new(
                &format!("Bytes per round, {model}"),
                "secure-aggregation round",
                Axis::new("bytes (all participants)", Format::Bytes),
            );
            chart.categories = rounds.iter().map(|x| x.x.round.to_string()).collect();
            chart.tooltips = rounds
                .iter()
                .map(|x| format!("round {} ({})", x.x.round, x.x.purpose))
                .collect();
            chart.layers = vec![
                BarSeries {
                    label: "sent".into(),
                    colour: svg::BAR_SENT,
                    values: rounds.iter().map(|x| x.sent.total as f64).collect(),
                },
                BarSeries {
                    label: "received".into(),
                    colour: svg::BAR_RECEIVED,
                    values: rounds.iter().map(|x| x.received.total as f64).collect(),
                },
            ];
            figs.figure(
                h,
                &format!("Traffic per round, {model}."),
                "Bytes sent and received by all participants together.",
                chart.render(),
            );
        }
        h.push_str("</div>");
    }

    h.push_str("<h3>Rounds</h3>");
    if r.rounds.is_empty() {
        h.push_str("<p class=\"muted\">No aggregation round was recorded.</p>");
    } else {
        h.push_str(
            "<p class=\"note\">Times are wall-clock milliseconds per protocol phase. Bytes are per participant: \
             mean · maximum over the round's participants. Highlighted rows had a dropout.</p>",
        );
        for g in groups {
            let _ = write!(h, "<h4>{}</h4>", escape(g.model));
            rounds_table(h, g);
        }
    }

    h.push_str("<h3>Dropouts and how each round survived them</h3>");
    if drops == 0 {
        h.push_str("<p>No institution dropped out of any round.</p>");
    } else {
        h.push_str(
            "<table class=\"drops wide\"><thead><tr><th>Model</th><th class=\"num\">Round</th><th>Purpose</th>\
             <th>Institution</th><th>Phase</th><th>Reason</th><th>What happened to the round</th></tr></thead><tbody>",
        );
        for x in r.rounds.iter().filter(|x| !x.dropped.is_empty()) {
            let ok = x.succeeded();
            let verdict = if ok {
                format!(
                    "Completed: {} of {} institutions survived and at least t = {} were needed, so the sum of the survivors' \
                     contributions was unmasked.",
                    x.survivors.len(),
                    x.participants.len(),
                    r.privacy.threshold
                )
            } else {
                format!(
                    "Did not complete: {} of {} survived (t = {}). Error: {}. Nothing from this round was unmasked.",
                    x.survivors.len(),
                    x.participants.len(),
                    r.privacy.threshold,
                    x.outcome
                )
            };
            for (i, d) in x.dropped.iter().enumerate() {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                    escape(&x.model),
                    x.round,
                    escape(x.purpose.name()),
                    escape(&d.institution),
                    escape(&humanise(&d.phase)),
                    escape(&d.reason)
                );
                if i == 0 {
                    let _ = write!(
                        h,
                        "<td rowspan=\"{}\" class=\"{}\">{}</td>",
                        x.dropped.len(),
                        if ok { "verdict-ok" } else { "verdict-failed" },
                        escape(&verdict)
                    );
                }
                h.push_str("</tr>");
            }
        }
        h.push_str("</tbody></table>");
    }
    let failed_without_drop = &v.rounds.failed_without_drop;
    if !failed_without_drop.is_empty() {
        h.push_str("<p class=\"warn\">Rounds that failed without a recorded dropout: ");
        let items: Vec<String> = failed_without_drop
            .iter()
            .map(|x| {
                format!(
                    "{} round {} ({}): {}",
                    escape(&x.model),
                    x.round,
                    escape(x.purpose.name()),
                    escape(&x.outcome)
                )
            })
            .collect();
        h.push_str(&items.join("; "));
        h.push_str(".</p>");
    }
    h.push_str("</section>\n");
}

/// One model's rounds: a column per protocol phase when there are few distinct phases,
/// otherwise the phases listed in one cell.
fn rounds_table(h: &mut String, g: &RoundGroup) {
    let phases = &g.phases;
    let columns = !phases.is_empty() && phases.len() <= 7;
    h.push_str(
        "<table class=\"rounds wide\"><thead><tr><th class=\"num\" rowspan=\"2\">Round</th><th rowspan=\"2\">Purpose</th>\
         <th class=\"num\" rowspan=\"2\">Participants</th><th class=\"num\" rowspan=\"2\">Survivors</th><th rowspan=\"2\">Dropped</th>",
    );
    if columns {
        let _ = write!(
            h,
            "<th class=\"group\" colspan=\"{}\">Time per phase (ms)</th>",
            phases.len() + 1
        );
    } else {
        h.push_str("<th rowspan=\"2\">Time per phase</th>");
    }
    h.push_str(
        "<th class=\"num\" rowspan=\"2\">Sent / participant<br><span class=\"muted\">mean · max</span></th>\
         <th class=\"num\" rowspan=\"2\">Received / participant<br><span class=\"muted\">mean · max</span></th>\
         <th rowspan=\"2\">Outcome</th></tr><tr>",
    );
    if columns {
        for p in phases {
            let _ = write!(h, "<th class=\"num sub\">{}</th>", escape(&humanise(p)));
        }
        h.push_str("<th class=\"num sub\">total</th>");
    }
    h.push_str("</tr></thead><tbody>");
    for rv in &g.rounds {
        let x = rv.x;
        let ok = x.succeeded();
        let total_ms = rv.total_ms;
        let dropped = if x.dropped.is_empty() {
            "<span class=\"muted\">none</span>".to_string()
        } else {
            x.dropped
                .iter()
                .map(|d| {
                    format!(
                        "{} <span class=\"muted\">({})</span>",
                        escape(&d.institution),
                        escape(&humanise(&d.phase))
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let _ = write!(
            h,
            "<tr{}><td class=\"num\">{}</td><td>{}</td><td class=\"num\" title=\"{}\">{}</td><td class=\"num{}\">{} of {}</td><td>{}</td>",
            if x.dropped.is_empty() {
                ""
            } else {
                " class=\"had-drop\""
            },
            x.round,
            escape(x.purpose.name()),
            escape(&x.participants.join(", ")),
            x.participants.len(),
            if ok { "" } else { " failed" },
            x.survivors.len(),
            x.participants.len(),
            dropped
        );
        if columns {
            for ms in &rv.per_phase_ms {
                let cell = match ms {
                    None => "<span class=\"muted\">—</span>".to_string(),
                    Some(ms) => escape(&ms_cell(*ms)),
                };
                let _ = write!(h, "<td class=\"num\">{cell}</td>");
            }
            let _ = write!(
                h,
                "<td class=\"num\"><b>{}</b></td>",
                escape(&ms_cell(total_ms))
            );
        } else if x.phase_ms.is_empty() {
            h.push_str("<td><span class=\"muted\">—</span></td>");
        } else {
            let parts: Vec<String> = x
                .phase_ms
                .iter()
                .map(|(p, v)| {
                    format!(
                        "<span>{} {}</span>",
                        escape(&humanise(p)),
                        escape(&duration_ms(*v))
                    )
                })
                .collect();
            let _ = write!(
                h,
                "<td class=\"phases\">{} · <b>total {}</b></td>",
                parts.join(" · "),
                escape(&duration_ms(total_ms))
            );
        }
        let _ = write!(
            h,
            "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"{}\">{}</td></tr>",
            mean_max(&rv.sent),
            mean_max(&rv.received),
            if ok { "ok" } else { "failed" },
            escape(&x.outcome)
        );
    }
    h.push_str("</tbody></table>");
}

/// Bytes per participant of one round, `mean · max`.
fn mean_max(t: &Traffic) -> String {
    if !t.any {
        return "<span class=\"muted\">—</span>".into();
    }
    let (mean, max) = (t.mean, t.max);
    format!(
        "{} · {}",
        escape(&svg::bytes_label(mean.round())),
        escape(&svg::bytes_label(max as f64))
    )
}
