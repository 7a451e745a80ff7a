//! `report.html`: one self-contained HTML5 page (inline CSS and SVG, no script, no network).

use std::fmt::Write as _;

use super::svg::{
    self, escape, Axis, BarChart, BarSeries, Corner, Format, Line, LineChart, Reference, Series,
    PRIMARY, REFERENCE, SECONDARY, TERTIARY,
};
use super::{Metrics, ModelReport, Report, RoundReport};

const CSS: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1d1f24; font: 14px/1.5 "Helvetica Neue", Helvetica, Arial, sans-serif; }
main { max-width: 1160px; margin: 0 auto; padding: 24px 32px 48px; background: #ffffff; }
h1 { font-size: 26px; margin: 4px 0 6px; color: #13243d; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #13243d; color: #13243d; }
h3 { font-size: 17px; margin: 26px 0 6px; color: #13243d; }
h4 { font-size: 14px; margin: 18px 0 6px; color: #333; text-transform: uppercase; letter-spacing: 0.03em; }
p { margin: 6px 0 10px; }
.kicker { margin: 0; color: #5a6270; font-size: 12px; text-transform: uppercase; letter-spacing: 0.08em; }
.lead { font-size: 15px; color: #333; max-width: 900px; }
.meta { color: #5a6270; margin-top: 0; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 8px 16px; margin: 14px 0; padding: 12px 14px; background: #f2f4f7; border: 1px solid #dde1e7; }
dl.facts div { min-width: 0; }
dl.facts dt { font-size: 11px; text-transform: uppercase; letter-spacing: 0.05em; color: #5a6270; }
dl.facts dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
nav.toc ol { margin: 6px 0; padding-left: 22px; columns: 2; }
nav.toc a { color: #1f4f8a; text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13px; }
table.wide { width: 100%; }
th, td { border: 1px solid #d5d9e0; padding: 4px 8px; text-align: left; vertical-align: top; }
thead th { background: #e9edf2; font-weight: 600; }
tfoot td, tfoot th { background: #f4f6f8; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.gain { background: #e3f3e6; color: #14532d; font-weight: 600; }
td.shortfall { background: #fdeceb; color: #7f1d1d; }
td.ok { color: #14532d; font-weight: 600; }
td.failed { color: #9b1c1c; font-weight: 600; }
tr.had-drop td { background: #fff8e6; }
td.verdict-ok { color: #14532d; vertical-align: middle; }
td.verdict-failed { color: #9b1c1c; vertical-align: middle; }
th.group { text-align: center; border-bottom-color: #b9c0cb; }
th.sub { font-weight: 500; font-size: 12px; }
table.rounds td { padding: 3px 8px; }
.panel { min-width: 0; overflow-x: auto; }
.panel table { font-size: 12.5px; }
.panel th, .panel td { padding: 3px 6px; }
.panel h4 { margin-top: 6px; }
.summary { padding: 8px 12px; background: #f2f6fb; border-left: 4px solid #13243d; }
.summary strong { font-variant-numeric: tabular-nums; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 10px 18px; margin: 10px 0; }
figure { margin: 0; padding: 8px; border: 1px solid #e1e4e9; background: #ffffff; break-inside: avoid; }
figcaption { font-size: 13px; color: #333; margin-bottom: 4px; }
figcaption b { color: #13243d; }
svg.chart { display: block; max-width: 100%; height: auto; }
.phases { font-size: 12px; color: #333; }
.phases span { white-space: nowrap; }
.muted { color: #5a6270; }
.note { font-size: 13px; color: #444; }
.warn { padding: 8px 12px; background: #fdeceb; border-left: 4px solid #9b1c1c; }
.ok-box { padding: 8px 12px; background: #eef6f0; border-left: 4px solid #2e7d4f; }
.hash { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; padding: 8px 10px; background: #f2f4f7; border: 1px solid #dde1e7; overflow-wrap: anywhere; }
table.dp td.num { text-align: left; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
footer { margin-top: 40px; padding-top: 8px; border-top: 1px solid #d5d9e0; color: #5a6270; font-size: 12px; }
@media print { body { background: #ffffff; } main { max-width: none; padding: 0; } section.model { break-before: page; } }
"#;

/// Numbers as shown: fixed decimals, "n/a" for NaN, ∞ for infinities, no "-0.000".
fn num(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        return "n/a".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "∞".into()
        } else {
            "−∞".into()
        };
    }
    let s = format!("{:.*}", decimals, v);
    let s = if s.starts_with('-') && s.trim_start_matches(['-', '0', '.']).is_empty() {
        s[1..].to_string()
    } else {
        s
    };
    s.replacen('-', "−", 1)
}

/// A difference with its sign always shown.
fn signed(v: f64, decimals: usize) -> String {
    let s = num(v, decimals);
    if v.is_finite()
        && !s.starts_with('−')
        && v != 0.0
        && !s.trim_start_matches(['0', '.']).is_empty()
    {
        format!("+{s}")
    } else {
        s
    }
}

fn pct(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{}%", num(v * 100.0, decimals))
    } else {
        num(v, decimals)
    }
}

/// 1234567 → "1,234,567".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n} B")
    } else {
        format!("{} ({} B)", svg::bytes_label(n as f64), thousands(n))
    }
}

fn duration_ms(ms: f64) -> String {
    if !ms.is_finite() {
        num(ms, 0)
    } else if ms.abs() >= 1000.0 {
        format!("{} s", num(ms / 1000.0, 2))
    } else if ms.abs() >= 100.0 {
        format!("{} ms", num(ms, 0))
    } else {
        format!("{} ms", num(ms, 1))
    }
}

fn seconds(s: f64) -> String {
    if !s.is_finite() {
        num(s, 0)
    } else if s >= 120.0 {
        format!("{} min ({} s)", num(s / 60.0, 1), num(s, 0))
    } else {
        format!("{} s", num(s, 2))
    }
}

fn mean_finite(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values.filter(|v| v.is_finite()) {
        sum += v;
        n += 1;
    }
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// "logistic_regression" → "logistic regression".
fn humanise(s: &str) -> String {
    s.replace('_', " ")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Figure numbering and markup.
struct Figures {
    next: usize,
}

impl Figures {
    fn figure(&mut self, out: &mut String, caption: &str, detail: &str, svg: String) {
        self.next += 1;
        let _ = write!(
            out,
            "<figure><figcaption><b>Figure {}.</b> {}{}{}</figcaption>{}</figure>",
            self.next,
            escape(caption),
            if detail.is_empty() { "" } else { " " },
            detail,
            svg
        );
    }
}

pub(super) fn render(r: &Report) -> String {
    let mut h = String::with_capacity(128 * 1024);
    let mut figs = Figures { next: 0 };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"fedsilo {}\">\n\
         <title>{} — fedsilo simulation report</title>\n<style>{}</style>\n</head>\n<body>\n<main>\n",
        env!("CARGO_PKG_VERSION"),
        escape(&r.scenario.name),
        CSS
    );
    header(&mut h, r);
    scenario_section(&mut h, r);
    models_section(&mut h, r, &mut figs);
    cost_section(&mut h, r, &mut figs);
    privacy_section(&mut h, r, &mut figs);
    audit_section(&mut h, r);
    let _ = write!(
        h,
        "<footer>Generated by fedsilo {} from the same data as report.json. This page is self-contained: \
         no script, no external resources; every chart is drawn from the figures above.</footer>\n\
         </main>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    h
}

fn header(h: &mut String, r: &Report) {
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
        ("audit", "Audit chain and totals"),
    ] {
        let _ = write!(h, "<li><a href=\"#{id}\">{title}</a></li>");
    }
    h.push_str("</ol></nav>\n");
}

/// Small probabilities such as δ: 1e-5 → "1.0×10⁻⁵"; ordinary numbers as usual.
fn sci(v: f64) -> String {
    if !(v.is_finite() && v != 0.0 && v.abs() < 1e-3) {
        return num(v, 4);
    }
    let s = format!("{v:.1e}");
    let Some((mantissa, exp)) = s.split_once('e') else {
        return s;
    };
    let sup: String = exp
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            '9' => '⁹',
            c => c,
        })
        .collect();
    format!("{}×10{sup}", mantissa.replacen('-', "−", 1))
}

fn scenario_section(h: &mut String, r: &Report) {
    let inst = &r.scenario.institutions;
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
    if inst.len() > 1 {
        let train: usize = inst.iter().map(|i| i.rows_train).sum();
        let hold: usize = inst.iter().map(|i| i.rows_holdout).sum();
        let weighted = inst
            .iter()
            .filter(|i| i.positive_rate.is_finite())
            .map(|i| i.positive_rate * i.rows_train as f64)
            .sum::<f64>()
            / train as f64;
        let _ = write!(
            h,
            "<tfoot><tr><td>All institutions</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr></tfoot>",
            thousands(train as u64),
            thousands(hold as u64),
            pct(if train == 0 { f64::NAN } else { weighted }, 1)
        );
    }
    h.push_str("</table>\n</section>\n");
}

fn models_section(h: &mut String, r: &Report, figs: &mut Figures) {
    h.push_str("<section id=\"models\">\n<h2>2. Model quality</h2>\n");
    h.push_str(
        "<p>Each model was trained by the federation under secure aggregation. The <em>pooled</em> model is a reference \
         that the simulator trains centrally on all institutions' training rows together, which no real federation could do; \
         <em>local-only</em> models are trained by each institution on its own rows alone.</p>",
    );
    if r.models.is_empty() {
        h.push_str("<p class=\"muted\">No model was trained in this run.</p>");
    }
    for (i, m) in r.models.iter().enumerate() {
        model_section(h, i, m, figs);
    }
    h.push_str("</section>\n");
}

fn metric_row(h: &mut String, label: &str, m: &Metrics) {
    let _ = write!(
        h,
        "<tr><th>{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
        label,
        num(m.auc, 3),
        num(m.ks, 3),
        num(m.log_loss, 4),
        num(m.top_decile_lift, 2)
    );
}

fn model_section(h: &mut String, index: usize, m: &ModelReport, figs: &mut Figures) {
    let rounds_trained = m.curve.len();
    let _ = write!(
        h,
        "<section class=\"model\" id=\"model-{index}\">\n<h3>2.{} {}</h3>\n<p class=\"meta\">Task: {} · model: {} · {}</p>",
        index + 1,
        escape(&m.name),
        escape(&m.task),
        escape(&humanise(&m.model_kind)),
        plural(rounds_trained, "training round", "training rounds")
    );
    let f = &m.final_metrics;
    let _ = write!(
        h,
        "<p class=\"summary\">Federated model on the combined hold-out set: AUC <strong>{}</strong>, KS <strong>{}</strong>, \
         log-loss <strong>{}</strong>, top-decile lift <strong>{}</strong>",
        num(f.auc, 3),
        num(f.ks, 3),
        num(f.log_loss, 4),
        num(f.top_decile_lift, 2)
    );
    match &m.pooled_metrics {
        Some(p) => {
            let _ = write!(
                h,
                " — pooled reference: AUC {}, KS {}, log-loss {}, lift {} (federated AUC {} the pooled AUC).</p>",
                num(p.auc, 3),
                num(p.ks, 3),
                num(p.log_loss, 4),
                num(p.top_decile_lift, 2),
                if f.auc.is_finite() && p.auc.is_finite() {
                    let d = f.auc - p.auc;
                    if d.abs() < 0.0005 {
                        "matches".to_string()
                    } else {
                        format!(
                            "is {} {}",
                            num(d.abs(), 3),
                            if d < 0.0 { "below" } else { "above" }
                        )
                    }
                } else {
                    "cannot be compared with".into()
                }
            );
        }
        None => h.push_str(" — no pooled reference was trained for this model.</p>"),
    }
    h.push_str(
        "<table class=\"metrics\"><thead><tr><th></th><th class=\"num\">AUC</th><th class=\"num\">KS</th>\
         <th class=\"num\">Log-loss</th><th class=\"num\">Top-decile lift</th></tr></thead><tbody>",
    );
    metric_row(h, "Federated", f);
    if let Some(p) = &m.pooled_metrics {
        metric_row(h, "Pooled (reference)", p);
        let _ = write!(
            h,
            "<tr><th>Federated − pooled</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            signed(f.auc - p.auc, 3),
            signed(f.ks - p.ks, 3),
            signed(f.log_loss - p.log_loss, 4),
            signed(f.top_decile_lift - p.top_decile_lift, 2)
        );
    }
    h.push_str("</tbody></table>");

    h.push_str("<div class=\"charts\">");
    // Training curve: loss and hold-out AUC per round, as two small charts.
    let loss: Vec<(f64, f64)> = m
        .curve
        .iter()
        .filter_map(|c| c.train_loss.map(|l| (c.round as f64, l)))
        .collect();
    let auc: Vec<(f64, f64)> = m
        .curve
        .iter()
        .filter_map(|c| c.holdout_auc.map(|a| (c.round as f64, a)))
        .collect();
    // Both training charts span the same rounds.
    let rounds_axis = || {
        let axis = Axis::new("training round", Format::Integer);
        let first = m.curve.iter().map(|c| c.round).min();
        let last = m.curve.iter().map(|c| c.round).max();
        match (first, last) {
            (Some(a), Some(b)) if b > a => axis.range(a as f64, b as f64),
            _ => axis,
        }
    };
    let loss_chart = LineChart::new(
        &format!("Training loss per round, {}", m.name),
        rounds_axis(),
        Axis::new("training loss", Format::Auto),
    )
    .series(Series::new("training loss (federation)", PRIMARY, loss).with_markers())
    .legend_at(Corner::TopRight);
    figs.figure(
        h,
        "Training loss per round.",
        "Mean loss over all institutions' training rows, as aggregated.",
        loss_chart.render(),
    );
    let mut auc_chart = LineChart::new(
        &format!("Hold-out AUC per round, {}", m.name),
        rounds_axis(),
        Axis::new("AUC (hold-out)", Format::Auto),
    )
    .series(Series::new("federated AUC (hold-out)", SECONDARY, auc).with_markers())
    .legend_at(Corner::BottomRight);
    if let Some(p) = &m.pooled_metrics {
        auc_chart = auc_chart.reference(
            Reference::new(Line::Horizontal(p.auc), REFERENCE)
                .legend(&format!("pooled reference ({})", num(p.auc, 3))),
        );
    }
    figs.figure(
        h,
        "Hold-out AUC per evaluation round.",
        "Measured on the combined hold-out sets.",
        auc_chart.render(),
    );

    // ROC with the diagonal.
    let roc_chart = LineChart::new(
        &format!("ROC curve, {}", m.name),
        Axis::new("false positive rate", Format::Auto).range(0.0, 1.0),
        Axis::new("true positive rate", Format::Auto).range(0.0, 1.0),
    )
    .series(Series::new(
        &format!("federated model (AUC {})", num(f.auc, 3)),
        PRIMARY,
        m.roc.clone(),
    ))
    .reference(
        Reference::new(Line::Segment((0.0, 0.0), (1.0, 1.0)), REFERENCE)
            .legend("random scoring (AUC 0.5)"),
    )
    .legend_at(Corner::BottomRight);
    figs.figure(
        h,
        "ROC curve of the federated model.",
        "Combined hold-out set.",
        roc_chart.render(),
    );

    // KS: cumulative shares of positives and negatives, with the largest gap marked.
    let pos: Vec<(f64, f64)> = m.ks_curve.iter().map(|&(p, a, _)| (p, a)).collect();
    let neg: Vec<(f64, f64)> = m.ks_curve.iter().map(|&(p, _, b)| (p, b)).collect();
    let gap = m
        .ks_curve
        .iter()
        .copied()
        .filter(|(p, a, b)| p.is_finite() && a.is_finite() && b.is_finite())
        .max_by(|x, y| (x.1 - x.2).abs().total_cmp(&(y.1 - y.2).abs()));
    let mut ks_chart = LineChart::new(
        &format!("KS chart, {}", m.name),
        Axis::new("share of population, highest scores first", Format::Percent).range(0.0, 1.0),
        Axis::new("cumulative share", Format::Percent).range(0.0, 1.0),
    )
    .series(Series::new("positives (cumulative share)", PRIMARY, pos))
    .series(Series::new("negatives (cumulative share)", SECONDARY, neg))
    .legend_at(Corner::BottomRight);
    let mut ks_detail = String::new();
    if let Some((p, a, b)) = gap {
        ks_chart = ks_chart.reference(
            Reference::new(Line::Segment((p, b), (p, a)), TERTIARY)
                .solid(2.0)
                .legend("KS gap (largest separation)")
                .note(&format!("KS = {}", num((a - b).abs(), 3))),
        );
        ks_detail = format!(
            "The largest gap, {}, is at {} of the population.",
            escape(&num((a - b).abs(), 3)),
            escape(&pct(p, 0))
        );
    }
    figs.figure(
        h,
        "Kolmogorov–Smirnov chart.",
        &ks_detail,
        ks_chart.render(),
    );

    // Gains with the random baseline and the top decile marked.
    let gain_at_decile = interpolate(&m.gains, 0.1);
    let mut gains_chart = LineChart::new(
        &format!("Cumulative gains, {}", m.name),
        Axis::new(
            "share of population targeted, highest scores first",
            Format::Percent,
        )
        .range(0.0, 1.0),
        Axis::new("share of positives captured", Format::Percent).range(0.0, 1.0),
    )
    .series(Series::new("federated model", PRIMARY, m.gains.clone()))
    .reference(
        Reference::new(Line::Segment((0.0, 0.0), (1.0, 1.0)), REFERENCE).legend("random targeting"),
    )
    .legend_at(Corner::BottomRight);
    if let Some(g) = gain_at_decile {
        gains_chart = gains_chart.reference(
            Reference::new(Line::Segment((0.1, 0.0), (0.1, g)), TERTIARY)
                .note(&format!("top decile: lift {}", num(f.top_decile_lift, 2))),
        );
    }
    figs.figure(
        h,
        "Cumulative gains (lift) chart.",
        &match gain_at_decile {
            Some(g) => format!(
                "The top-scoring 10% of the population holds {} of the positives (random: 10%).",
                escape(&pct(g, 0))
            ),
            None => String::new(),
        },
        gains_chart.render(),
    );
    // The per-institution comparison fills the grid cell beside the gains chart.
    h.push_str("<div class=\"panel\">");
    comparison_table(h, m);
    h.push_str("</div></div>");

    if let Some(sc) = &m.scorecard {
        scorecard_tables(h, sc);
    }
    if !m.notes.is_empty() {
        h.push_str("<h4>Notes</h4><ul class=\"note\">");
        for n in &m.notes {
            let _ = write!(h, "<li>{}</li>", escape(n));
        }
        h.push_str("</ul>");
    }
    h.push_str("</section>\n");
}

/// A scorecard's information values and points, as a model-validation team reads them.
fn scorecard_tables(h: &mut String, sc: &super::ScorecardReport) {
    let _ = write!(
        h,
        "<h4>Scorecard</h4><p class=\"meta\">{}. Bins, WOE and IV come from good/bad counts summed under secure aggregation.</p>",
        escape(&sc.scaling)
    );
    h.push_str("<table class=\"scorecard-iv\"><thead><tr><th>feature</th><th>information value</th><th></th></tr></thead><tbody>");
    for (name, iv, kept) in &sc.iv {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{iv:.4}</td><td>{}</td></tr>",
            escape(name),
            if *kept {
                "kept"
            } else {
                "dropped (IV below threshold)"
            }
        );
    }
    h.push_str("</tbody></table>");
    h.push_str("<table class=\"scorecard\"><thead><tr><th>feature</th><th>bin</th><th>WOE</th><th>points</th></tr></thead><tbody>");
    for r in &sc.rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.1}</td></tr>",
            escape(&r.feature),
            escape(&r.bin),
            r.woe,
            r.points
        );
    }
    h.push_str("</tbody></table>");
}

/// Linear interpolation of a curve at `x` (points sorted by x); None when out of range.
fn interpolate(points: &[(f64, f64)], x: f64) -> Option<f64> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .collect();
    pts.windows(2).find_map(|w| {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x0 <= x && x <= x1 {
            Some(if x1 > x0 {
                y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            } else {
                y1
            })
        } else {
            None
        }
    })
}

fn comparison_table(h: &mut String, m: &ModelReport) {
    h.push_str("<h4>Federated versus going it alone, per institution</h4>");
    if m.comparison.is_empty() {
        h.push_str(
            "<p class=\"muted\">No per-institution comparison was computed for this model.</p>",
        );
        return;
    }
    h.push_str(
        "<p class=\"note\">AUC of each model on that institution's own hold-out set. Green: the federated model beats the \
         institution's local-only model; red: it does not.</p>\
         <table class=\"comparison\"><thead><tr><th>Institution</th><th class=\"num\">Local-only<br>AUC</th>\
         <th class=\"num\">Federated<br>AUC</th><th class=\"num\">Pooled<br>AUC</th><th class=\"num\">Federated<br>− local-only</th></tr></thead><tbody>",
    );
    let mut wins = 0usize;
    let mut comparable = 0usize;
    for c in &m.comparison {
        let d = c.federated_auc - c.local_only_auc;
        let class = if !d.is_finite() {
            ""
        } else if d > 0.0 {
            wins += 1;
            comparable += 1;
            " gain"
        } else {
            comparable += 1;
            " shortfall"
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num{class}\">{}</td><td class=\"num\">{}</td><td class=\"num{class}\">{}</td></tr>",
            escape(&c.institution),
            num(c.local_only_auc, 3),
            num(c.federated_auc, 3),
            num(c.pooled_auc, 3),
            signed(d, 3)
        );
    }
    let local = mean_finite(m.comparison.iter().map(|c| c.local_only_auc));
    let fed = mean_finite(m.comparison.iter().map(|c| c.federated_auc));
    let pooled = mean_finite(m.comparison.iter().map(|c| c.pooled_auc));
    let delta = mean_finite(
        m.comparison
            .iter()
            .map(|c| c.federated_auc - c.local_only_auc),
    );
    let class = if delta.is_finite() && delta > 0.0 {
        " gain"
    } else if delta.is_finite() {
        " shortfall"
    } else {
        ""
    };
    let _ = write!(
        h,
        "</tbody><tfoot><tr><td>Average (unweighted)</td><td class=\"num\">{}</td><td class=\"num{class}\">{}</td><td class=\"num\">{}</td><td class=\"num{class}\">{}</td></tr></tfoot></table>",
        num(local, 3),
        num(fed, 3),
        num(pooled, 3),
        signed(delta, 3)
    );
    if comparable > 0 {
        let _ = write!(
            h,
            "<p>The federated model beat the local-only model at <strong>{wins} of {comparable}</strong> institutions{}.</p>",
            if comparable < m.comparison.len() {
                format!(
                    " ({} could not be compared)",
                    m.comparison.len() - comparable
                )
            } else {
                String::new()
            }
        );
    } else {
        h.push_str("<p class=\"muted\">No institution had both a local-only and a federated AUC to compare.</p>");
    }
}

fn per_participant(v: &[(String, u64)]) -> (f64, u64, u64) {
    if v.is_empty() {
        return (f64::NAN, 0, 0);
    }
    let total: u64 = v.iter().map(|(_, b)| *b).sum();
    let max = v.iter().map(|(_, b)| *b).max().unwrap_or(0);
    (total as f64 / v.len() as f64, max, total)
}

fn mean_max(v: &[(String, u64)]) -> String {
    if v.is_empty() {
        return "<span class=\"muted\">—</span>".into();
    }
    let (mean, max, _) = per_participant(v);
    format!(
        "{} · {}",
        escape(&svg::bytes_label(mean.round())),
        escape(&svg::bytes_label(max as f64))
    )
}

fn cost_section(h: &mut String, r: &Report, figs: &mut Figures) {
    h.push_str("<section id=\"cost\">\n<h2>3. Cost: rounds, time and traffic</h2>\n");
    let drops: usize = r.rounds.iter().map(|x| x.dropped.len()).sum();
    let failed = r.rounds.iter().filter(|x| x.outcome != "ok").count();
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
    let mut groups: Vec<(&str, Vec<&RoundReport>)> = Vec::new();
    for round in &r.rounds {
        match groups.iter_mut().find(|(m, _)| *m == round.model) {
            Some((_, v)) => v.push(round),
            None => groups.push((&round.model, vec![round])),
        }
    }
    if !groups.is_empty() {
        h.push_str("<div class=\"charts\">");
        for (model, rounds) in &groups {
            let mut chart = BarChart::new(
                &format!("Bytes per round, {model}"),
                "secure-aggregation round",
                Axis::new("bytes (all participants)", Format::Bytes),
            );
            chart.categories = rounds.iter().map(|x| x.round.to_string()).collect();
            chart.tooltips = rounds
                .iter()
                .map(|x| format!("round {} ({})", x.round, x.purpose))
                .collect();
            chart.layers = vec![
                BarSeries {
                    label: "sent".into(),
                    colour: svg::BAR_SENT,
                    values: rounds
                        .iter()
                        .map(|x| per_participant(&x.bytes_sent).2 as f64)
                        .collect(),
                },
                BarSeries {
                    label: "received".into(),
                    colour: svg::BAR_RECEIVED,
                    values: rounds
                        .iter()
                        .map(|x| per_participant(&x.bytes_received).2 as f64)
                        .collect(),
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
        for (model, rounds) in &groups {
            let _ = write!(h, "<h4>{}</h4>", escape(model));
            rounds_table(h, rounds);
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
    let failed_without_drop: Vec<&RoundReport> = r
        .rounds
        .iter()
        .filter(|x| x.outcome != "ok" && x.dropped.is_empty())
        .collect();
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

/// Phase names of these rounds in order of first appearance.
fn phase_names(rounds: &[&RoundReport]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for x in rounds {
        for (p, _) in &x.phase_ms {
            if !names.contains(p) {
                names.push(p.clone());
            }
        }
    }
    names
}

/// One model's rounds: a column per protocol phase when there are few distinct phases,
/// otherwise the phases listed in one cell.
fn rounds_table(h: &mut String, rounds: &[&RoundReport]) {
    let phases = phase_names(rounds);
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
        for p in &phases {
            let _ = write!(h, "<th class=\"num sub\">{}</th>", escape(&humanise(p)));
        }
        h.push_str("<th class=\"num sub\">total</th>");
    }
    h.push_str("</tr></thead><tbody>");
    for x in rounds {
        let ok = x.succeeded();
        let total_ms: f64 = x
            .phase_ms
            .iter()
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite())
            .sum();
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
            for p in &phases {
                let v: Vec<f64> = x
                    .phase_ms
                    .iter()
                    .filter(|(q, _)| q == p)
                    .map(|(_, v)| *v)
                    .collect();
                let cell = if v.is_empty() {
                    "<span class=\"muted\">—</span>".to_string()
                } else {
                    escape(&ms_cell(v.iter().sum()))
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
            mean_max(&x.bytes_sent),
            mean_max(&x.bytes_received),
            if ok { "ok" } else { "failed" },
            escape(&x.outcome)
        );
    }
    h.push_str("</tbody></table>");
}

/// Milliseconds in a table column: one decimal below 100 ms.
fn ms_cell(ms: f64) -> String {
    if ms.is_finite() && ms.abs() < 100.0 {
        num(ms, 1)
    } else {
        num(ms, 0)
    }
}

fn privacy_section(h: &mut String, r: &Report, figs: &mut Figures) {
    let p = &r.privacy;
    let n = r.scenario.institutions.len();
    h.push_str("<section id=\"privacy\">\n<h2>4. Privacy</h2>\n");
    h.push_str("<h3>What the coordinator saw</h3>");
    if p.coordinator_saw.is_empty() {
        h.push_str("<p class=\"muted\">The run did not record what the coordinator saw.</p>");
    } else {
        h.push_str(
            "<p>The coordinator saw only masked vectors and their sums, never an institution's data or update in the clear. \
             As recorded by this run, it saw:</p><ul>",
        );
        for s in &p.coordinator_saw {
            let _ = write!(h, "<li>{}</li>", escape(s));
        }
        h.push_str("</ul>");
    }
    h.push_str("<h3>Secure-aggregation parameters</h3>");
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
    h.push_str("<h3>Differential privacy</h3>");
    match &p.dp {
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
            let eps = &dp.epsilon_per_round;
            let finite: Vec<f64> = eps.iter().copied().filter(|v| v.is_finite()).collect();
            let cumulative = finite.len() >= 2
                && finite.windows(2).all(|w| w[1] >= w[0] - 1e-12)
                && (!dp.epsilon.is_finite()
                    || finite
                        .last()
                        .is_some_and(|l| (l - dp.epsilon).abs() <= 0.01 * dp.epsilon.abs().max(1e-9)));
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

fn audit_section(h: &mut String, r: &Report) {
    let t = &r.totals;
    h.push_str("<section id=\"audit\">\n<h2>5. Audit chain and totals</h2>\n");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(num(f64::NAN, 3), "n/a");
        assert_eq!(num(-0.0001, 3), "0.000");
        assert_eq!(num(-0.5, 1), "−0.5");
        assert_eq!(signed(0.012, 3), "+0.012");
        assert_eq!(signed(-0.012, 3), "−0.012");
        assert_eq!(signed(0.0, 3), "0.000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(sci(1e-5), "1.0×10⁻⁵");
        assert_eq!(sci(0.5), "0.5000");
        assert!((interpolate(&[(0.0, 0.0), (0.2, 0.4)], 0.1).unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(interpolate(&[], 0.1), None);
    }
}
