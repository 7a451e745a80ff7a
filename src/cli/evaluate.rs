//! `fedsilo evaluate`: a model on a labelled file — printed table, evaluation.json and a
//! self-contained evaluation.html (inline CSS and SVG: the simulation report's stylesheet and
//! its ROC/KS/gains charts, `simulations::report::charts`; no script, no network).

use std::fmt::Write as _;

use fedsilo_participant::evaluate::{evaluate as evaluate_model, Evaluation, LabelEvaluation};
use fedsilo_simulations::report::charts;
use fedsilo_simulations::report::svg::{
    escape, Axis, BarChart, BarSeries, Corner, Format, Line, LineChart, Reference, Series, PRIMARY,
    REFERENCE, SECONDARY,
};

use crate::*;

pub(crate) fn evaluate(model: &Path, data: &Path, schema: &Path, out: &Path) -> Result<()> {
    let artifact = read_model(model)?;
    let schema = Schema::from_toml_file(schema)?;
    for label in &artifact.model.labels {
        if !schema.labels.iter().any(|l| &l.column == label) {
            bail!(
                "the model predicts '{label}', but the schema declares no such label (labels: {}): evaluate needs labelled data",
                if schema.labels.is_empty() {
                    "none".to_string()
                } else {
                    schema.label_columns().join(", ")
                }
            );
        }
    }
    let table = load_csv(data, &schema)?;
    let e = evaluate_model(
        &artifact.model,
        &artifact.model_kind,
        &table,
        &data.display().to_string(),
    )?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = out.join("evaluation.json");
    std::fs::write(&json, serde_json::to_string_pretty(&e)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let html = out.join("evaluation.html");
    std::fs::write(&html, page(&e, &model.display().to_string()))
        .with_context(|| format!("writing {}", html.display()))?;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} model {} on {} ({} rows)",
        e.model_kind,
        model.display(),
        data.display(),
        e.rows
    );
    for l in &e.labels {
        let m = &l.metrics;
        let _ = writeln!(
            o,
            "\n{}: AUC {:.4}  KS {:.4}  log-loss {:.4}  top-decile lift {:.2}  ({} positives, {} negatives)",
            l.label, m.auc, m.ks, m.log_loss, m.top_decile_lift, m.positives, m.negatives
        );
        let _ = writeln!(
            o,
            "decile  rows  positives  observed  mean predicted  lift  cum. lift  cum. capture  score range"
        );
        for b in &l.deciles {
            let _ = writeln!(
                o,
                "{:>6} {:>5} {:>10} {:>9.4} {:>15.4} {:>5.2} {:>10.2} {:>12.1}%  [{:.4}, {:.4}]",
                b.band,
                b.rows,
                b.positives,
                b.observed_rate,
                b.mean_score,
                b.lift,
                b.cumulative_lift,
                100.0 * b.cumulative_capture,
                b.min_score,
                b.max_score
            );
        }
    }
    let _ = writeln!(o, "\nwritten: {} and {}", json.display(), html.display());
    print_all(&o)
}

fn num(v: f64, d: usize) -> String {
    if v.is_finite() {
        format!("{v:.d$}")
    } else {
        "n/a".into()
    }
}

fn figure(h: &mut String, caption: &str, svg: String) {
    let _ = write!(
        h,
        "<figure><figcaption>{}</figcaption>{svg}</figure>",
        escape(caption)
    );
}

fn label_section(h: &mut String, l: &LabelEvaluation) {
    let m = &l.metrics;
    let _ = write!(
        h,
        "<section><h2>{}</h2><p class=\"summary\">AUC <strong>{}</strong>, KS <strong>{}</strong>, log-loss <strong>{}</strong>, \
         top-decile lift <strong>{}</strong> on {} positives and {} negatives.</p><div class=\"charts\">",
        escape(&l.label),
        num(m.auc, 4),
        num(m.ks, 4),
        num(m.log_loss, 4),
        num(m.top_decile_lift, 2),
        m.positives,
        m.negatives
    );
    let roc = charts::roc(
        &l.label,
        &format!("model (AUC {})", num(m.auc, 3)),
        l.roc.clone(),
    );
    figure(h, "ROC curve.", roc.render());
    let (p, _, _) = l.ks_at;
    let ks = charts::ks(&l.label, &l.ks_curve, Some(l.ks_at));
    figure(
        h,
        &format!(
            "Kolmogorov–Smirnov chart: the largest gap is at {:.0}% of the population.",
            100.0 * p
        ),
        ks.render(),
    );
    let top_gain = l.deciles.first().map(|b| (b.cumulative_capture, b.lift));
    let gains = charts::gains(&l.label, "model", l.gains.clone(), top_gain);
    figure(h, "Cumulative gains chart.", gains.render());

    let mut lift = BarChart::new(
        &format!("Lift by decile, {}", l.label),
        "decile (1 = highest scores)",
        Axis::new("lift (observed rate / overall rate)", Format::Auto),
    );
    lift.categories = l.deciles.iter().map(|b| b.band.to_string()).collect();
    lift.tooltips = l
        .deciles
        .iter()
        .map(|b| format!("decile {}: lift {:.2}", b.band, b.lift))
        .collect();
    lift.layers = vec![BarSeries {
        label: "lift".into(),
        colour: PRIMARY,
        values: l.deciles.iter().map(|b| b.lift).collect(),
    }];
    figure(h, "Lift by decile.", lift.render());

    let top = l
        .deciles
        .iter()
        .map(|b| b.mean_score.max(b.observed_rate))
        .fold(0.0, f64::max)
        .max(1e-3);
    let calib = LineChart::new(
        &format!("Calibration by decile, {}", l.label),
        Axis::new("mean predicted probability", Format::Auto).range(0.0, top),
        Axis::new("observed rate", Format::Auto).range(0.0, top),
    )
    .series(
        Series::new(
            "deciles",
            SECONDARY,
            l.deciles
                .iter()
                .map(|b| (b.mean_score, b.observed_rate))
                .collect(),
        )
        .with_markers(),
    )
    .reference(
        Reference::new(Line::Segment((0.0, 0.0), (top, top)), REFERENCE)
            .legend("perfect calibration"),
    )
    .legend_at(Corner::BottomRight);
    figure(
        h,
        "Calibration by decile: mean predicted probability against the observed rate.",
        calib.render(),
    );
    h.push_str("</div><table><thead><tr><th>decile</th><th class=\"num\">rows</th><th class=\"num\">positives</th>\
        <th class=\"num\">observed rate</th><th class=\"num\">mean predicted</th><th class=\"num\">lift</th>\
        <th class=\"num\">cumulative lift</th><th class=\"num\">cumulative capture</th><th>score range</th></tr></thead><tbody>");
    for b in &l.deciles {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}%</td><td>[{}, {}]</td></tr>",
            b.band,
            b.rows,
            b.positives,
            num(b.observed_rate, 4),
            num(b.mean_score, 4),
            num(b.lift, 2),
            num(b.cumulative_lift, 2),
            100.0 * b.cumulative_capture,
            num(b.min_score, 4),
            num(b.max_score, 4)
        );
    }
    h.push_str("</tbody></table></section>");
}

/// The self-contained HTML page.
fn page(e: &Evaluation, model: &str) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"fedsilo {}\">\n<title>Evaluation of {} — fedsilo</title>\n<style>{}</style>\n</head>\n<body>\n<main>\n\
         <h1>Model evaluation</h1><p class=\"meta\">{} model <code>{}</code> on <code>{}</code>, {} rows. \
         Exact figures from every row's score; deciles are rows ranked by score, highest first.</p>",
        env!("CARGO_PKG_VERSION"),
        escape(model),
        fedsilo_simulations::report::STYLESHEET,
        escape(&e.model_kind),
        escape(model),
        escape(&e.data),
        e.rows
    );
    for l in &e.labels {
        label_section(&mut h, l);
    }
    let _ = write!(
        h,
        "<footer>Generated by fedsilo {}. Self-contained: no script, no external resources.</footer>\n</main>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    h
}
