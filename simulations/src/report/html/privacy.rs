//! Section 4: privacy — what the coordinator saw, the secure-aggregation parameters and the
//! differential-privacy budget.

use std::fmt::Write as _;

use super::format::{num, sci};
use super::view::View;
use super::Figures;
use crate::report::svg::{
    escape, Axis, Corner, Format, Line, LineChart, Reference, Series, REFERENCE, SECONDARY,
};

pub(super) fn section(h: &mut String, v: &View, figs: &mut Figures) {
    let r = v.r;
    let p = &r.privacy;
    let n = r.scenario.institutions.len();
    h.push_str("<section id=\"privacy\">\n<h2>4. Privacy</h2>\n");
    h.push_str("<h3>What the coordinator saw</h3>");
    if p.coordinator_saw.is_empty() {
        h.push_str("<p class=\"muted\">The run did not record what the coordinator saw.</p>");
    } else {
        let vertical = r.models.iter().any(|m| m.vertical.is_some());
        h.push_str(if vertical {
            "<p>Vertical models do not use secure aggregation: the coordinator relays their parties' messages. \
             As recorded by this run, it saw:</p><ul>"
        } else {
            "<p>The coordinator saw only masked vectors and their sums, never an institution's data or update in the clear. \
             As recorded by this run, it saw:</p><ul>"
        });
        for s in &p.coordinator_saw {
            let _ = write!(h, "<li>{}</li>", escape(s));
        }
        h.push_str("</ul>");
    }
    h.push_str("<h3>Secure-aggregation parameters</h3>");
    if r.rounds.is_empty() && (!r.psi.is_empty() || r.models.iter().any(|m| m.vertical.is_some())) {
        h.push_str(
            "<p>No secure-aggregation round ran in this scenario: its PSI jobs and vertical models use their own protocols \
             (sections 2 and 7).</p>",
        );
    } else {
        secagg_parameters(h, p, n);
    }
    dp_section(h, v, figs);
}

fn secagg_parameters(h: &mut String, p: &crate::report::PrivacyReport, n: usize) {
    let _ = write!(
        h,
        "<p><strong>Threshold t = {t}.</strong> A sum is unmasked only when at least {t} institutions survive to the end \
         of a round; with fewer, the round stops and nothing is revealed.</p>\
         <p><strong>Neighbourhood k = {k}.</strong> Each institution agreed pairwise masks with {k} {others}{all}.</p>",
        t = p.threshold,
        k = p.neighbours,
        others = if p.neighbours == 1 { "other" } else { "others" },
        all = if n > 1 && p.neighbours + 1 >= n {
            " (that is, with every other institution)"
        } else {
            ""
        }
    );
    if p.threshold <= 1 {
        h.push_str(
            "<p class=\"warn\">A threshold below 2 means a sum over a single institution could be unmasked, which would reveal \
             that institution's contribution.</p>",
        );
    }
    let _ = write!(
        h,
        "<p><strong>Encoding.</strong> {}</p>",
        if p.encoding.trim().is_empty() {
            "<span class=\"muted\">(not recorded)</span>".to_string()
        } else {
            escape(&p.encoding)
        }
    );
}

fn dp_section(h: &mut String, v: &View, figs: &mut Figures) {
    let p = &v.r.privacy;
    h.push_str("<h3>Differential privacy</h3>");
    match &p.dp {
        None if v.r.rounds.is_empty() => h.push_str(
            "<p class=\"ok-box\">No differential-privacy noise was added in this run: the models carry no formal \
             (ε, δ) guarantee.</p>",
        ),
        None => h.push_str(
            "<p class=\"ok-box\">No differential-privacy noise was added in this run. Secure aggregation keeps each \
             institution's contribution hidden from the coordinator, but the aggregates and the final model carry no formal \
             (ε, δ) guarantee.</p>",
        ),
        Some(dp) => {
            let budget = match dp.budget {
                Some(b) if dp.epsilon.is_finite() && b.is_finite() => {
                    if dp.epsilon <= b {
                        format!(
                            " The budget was ε = {}; the run stayed within it.",
                            num(b, 2)
                        )
                    } else {
                        format!(
                            " The budget was ε = {}; the run <strong>exceeded</strong> it.",
                            num(b, 2)
                        )
                    }
                }
                Some(b) => format!(" The budget was ε = {}.", num(b, 2)),
                None => " No ε budget was set.".into(),
            };
            let _ = write!(
                h,
                "<p>Noise was added to the aggregates ({}). The privacy accountant reports a total of <strong>ε = {}</strong> \
                 at <strong>δ = {}</strong> for the whole run.{}</p>",
                escape(&dp.mechanism),
                escape(&num(dp.epsilon, 3)),
                escape(&sci(dp.delta)),
                budget
            );
            let _ = write!(
                h,
                "<table class=\"dp\"><tbody><tr><th>Mechanism</th><td>{}</td></tr><tr><th>Noise multiplier σ</th><td class=\"num\">{}</td></tr>\
                 <tr><th>Clipping norm C</th><td class=\"num\">{}</td></tr><tr><th>ε (total)</th><td class=\"num\">{}</td></tr>\
                 <tr><th>δ</th><td class=\"num\">{}</td></tr><tr><th>ε budget</th><td class=\"num\">{}</td></tr></tbody></table>",
                escape(&dp.mechanism),
                num(dp.noise_multiplier, 3),
                num(dp.clip, 3),
                num(dp.epsilon, 3),
                escape(&sci(dp.delta)),
                dp.budget
                    .map(|b| num(b, 2))
                    .unwrap_or_else(|| "none".into())
            );
            let level_eps = |e: f64| {
                if e.is_finite() {
                    format!("ε = {}", num(e, 3))
                } else {
                    "no guarantee".to_string()
                }
            };
            let _ = write!(
                h,
                "<p><strong>What it protects ({}-level DP).</strong> One customer's record: {}. One institution's \
                 whole contribution: {}.{}</p>",
                dp.level.name(),
                escape(&level_eps(dp.epsilon_record)),
                escape(&level_eps(dp.epsilon_institution)),
                match dp.sampling_rate {
                    Some(q) => format!(
                        " Each round every institution used each of its training rows with probability {} \
                         (Poisson sampling with its own secret randomness) and clipped each row's gradient to C.",
                        num(q, 4)
                    ),
                    None => String::new(),
                }
            );
            let eps = &dp.epsilon_per_round;
            let cumulative = v.dp_cumulative.unwrap_or(false);
            let (label, caption) = if cumulative {
                (
                    "ε spent so far",
                    "Privacy budget spent, cumulative after each round.",
                )
            } else {
                ("ε of the round", "Privacy cost (ε) of each round.")
            };
            let mut chart = LineChart::new(
                "ε per round",
                Axis::new("round with noise", Format::Integer),
                Axis::new("ε", Format::Auto).from(0.0),
            )
            .series(
                Series::new(
                    label,
                    SECONDARY,
                    eps.iter()
                        .enumerate()
                        .map(|(i, &e)| ((i + 1) as f64, e))
                        .collect(),
                )
                .with_markers(),
            )
            .legend_at(Corner::TopLeft);
            if let (true, Some(b)) = (cumulative, dp.budget) {
                chart = chart.reference(
                    Reference::new(Line::Horizontal(b), REFERENCE)
                        .legend(&format!("budget ε = {}", num(b, 2))),
                );
            }
            h.push_str("<div class=\"charts\">");
            figs.figure(h, caption, "", chart.render());
            h.push_str("</div>");
        }
    }
    h.push_str("</section>\n");
}
