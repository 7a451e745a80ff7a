//! Section 7: vertical alignment — how each vertical dataset's columns were split, and what
//! each PSI session found against the true intersection only the simulator knows.

use std::fmt::Write as _;

use super::format::{bytes, duration_ms, pct, thousands};
use crate::report::svg::escape;
use crate::report::Report;

pub(super) fn section(h: &mut String, r: &Report) {
    if r.psi.is_empty() {
        return;
    }
    h.push_str("<section id=\"psi\">\n<h2>7. Vertical alignment (private set intersection)</h2>\n");
    h.push_str(
        "<p>In a vertical federation the institutions hold different <em>columns</em> about partly the same \
         customers. Before any model can be trained, each pair finds its shared customers by ECDH private set \
         intersection over Ristretto255: each party sends only its ids hashed to the group and blinded by a \
         scalar of its own, sealed to the other party; the coordinator relays the sealed chunks and learns the \
         sizes. The simulator, which knows who every row is, checks the result against the plain intersection.</p>",
    );
    for j in &r.psi {
        let _ = write!(
            h,
            "<h3>{}: dataset {}</h3><p>{} customers in the file; ids in format <code>{}</code>; rows delivered to {}. \
             State: <strong>{}</strong>.</p>",
            escape(&j.name),
            escape(&j.dataset),
            thousands(j.customers as u64),
            escape(&j.id_format),
            if j.delivery == "both" {
                "both parties"
            } else {
                "the label holder only (the partner learns the size)"
            },
            escape(&j.state)
        );
        h.push_str(
            "<table class=\"wide\"><thead><tr><th>Institution</th><th>Role</th><th class=\"num\">Customers</th>\
             <th class=\"num\">Share of file</th><th class=\"num\">Encoded columns</th><th>Columns held</th></tr></thead><tbody>",
        );
        for p in &j.parties {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                escape(&p.institution),
                escape(&p.role),
                if p.holds_labels { " (labels)" } else { "" },
                thousands(p.rows as u64),
                pct(p.rows as f64 / (j.customers.max(1)) as f64, 1),
                p.encoded_columns,
                escape(&p.columns.join(", "))
            );
        }
        h.push_str("</tbody></table>");
        h.push_str(
            "<table class=\"wide\"><thead><tr><th>Pair</th><th class=\"num\">Session</th><th class=\"num\">Set sizes</th>\
             <th class=\"num\">Intersection</th><th class=\"num\">True intersection</th><th>Check</th>\
             <th class=\"num\">Elapsed</th><th class=\"num\">Party time (active / passive)</th>\
             <th class=\"num\">Relayed (active → passive / back)</th><th>Outcome</th></tr></thead><tbody>",
        );
        if j.sessions.is_empty() {
            h.push_str("<tr><td colspan=\"10\" class=\"muted\">No session was closed.</td></tr>");
        }
        for s in &j.sessions {
            let _ = write!(
                h,
                "<tr><td>{} ∩ {}</td><td class=\"num\">{}</td><td class=\"num\">{} / {}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} / {}</td>\
                 <td class=\"num\">{} ({} msgs) / {} ({} msgs)</td><td>{}</td></tr>",
                escape(&s.active),
                escape(&s.passive),
                s.session,
                thousands(s.active_set_size),
                thousands(s.passive_set_size),
                thousands(s.intersection_size),
                thousands(s.true_intersection_size),
                if s.matches_truth { "gain" } else { "shortfall" },
                if s.matches_truth {
                    format!("exact: {} row pairs are the same customers", thousands(s.rows_checked))
                } else {
                    "differs from the true intersection".to_string()
                },
                duration_ms(s.elapsed_ms),
                duration_ms(s.active_busy_ms),
                duration_ms(s.passive_busy_ms),
                bytes(s.bytes_active_to_passive),
                s.messages_active_to_passive,
                bytes(s.bytes_passive_to_active),
                s.messages_passive_to_active,
                escape(&s.outcome)
            );
        }
        h.push_str("</tbody></table>");
        if !j.coordinator_learned.is_empty() {
            h.push_str("<p>What the coordinator learned (its record of the job):</p><ul>");
            for l in &j.coordinator_learned {
                let _ = write!(h, "<li>{}</li>", escape(l));
            }
            h.push_str("</ul>");
        }
    }
    h.push_str("</section>\n");
}
