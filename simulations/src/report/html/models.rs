//! Section 2: each model's quality — its figures, the pooled reference, the charts and the
//! per-institution comparison with local-only models.

use std::fmt::Write as _;

use super::format::{bytes, humanise, num, pct, plural, sci, seconds, signed, thousands};
use super::view::{ComparisonView, ModelView, View};
use super::Figures;
use crate::report::charts;
use crate::report::svg::{
    escape, Axis, Corner, Format, Line, LineChart, Reference, Series, PRIMARY, REFERENCE, SECONDARY,
};
use crate::report::{Metrics, ModelReport, ScorecardReport, VerticalModelReport};

pub(super) fn section(h: &mut String, v: &View, figs: &mut Figures) {
    let r = v.r;
    h.push_str("<section id=\"models\">\n<h2>2. Model quality</h2>\n");
    let vertical = r.models.iter().filter(|m| m.vertical.is_some()).count();
    if vertical < r.models.len() || r.models.is_empty() {
        h.push_str(
            "<p>Each model was trained by the federation under secure aggregation. The <em>pooled</em> model is a reference \
             that the simulator trains centrally on all institutions' training rows together, which no real federation could do; \
             <em>local-only</em> models are trained by each institution on its own rows alone.</p>",
        );
    }
    if vertical > 0 {
        h.push_str(
            "<p><strong>Vertical models</strong> are not trained under secure aggregation: their parties hold different columns of \
             the same customers (aligned by the private set intersection of section 7) and run the vertical protocols themselves — \
             logistic regression with the label holder's Paillier key and masked gradients, or SecureBoost on encrypted gradient \
             histograms. The label holder learns its partners' partial logits (logistic regression) or per-bin gradient sums and \
             every node's rows (SecureBoost), never a partner's column values; a partner sees only ciphertexts under the label \
             holder's key, its own masked gradient and, for SecureBoost, the rows of the nodes it is asked about. Every message, \
             partial logits included, crosses the coordinator's in-memory relay, as in the design (which seals them end to end \
             between the two parties). The <em>pooled</em> reference of a vertical model is the same model trained by the \
             simulator on the joined table; the label holder's model on its own columns alone is the comparison it must beat.</p>",
        );
    }
    if r.models.is_empty() {
        h.push_str("<p class=\"muted\">No model was trained in this run.</p>");
    }
    for (i, m) in v.models.iter().enumerate() {
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

fn model_section(h: &mut String, index: usize, mv: &ModelView, figs: &mut Figures) {
    if let Some(vm) = &mv.m.vertical {
        vertical_model_section(h, index, mv, vm, figs);
        return;
    }
    let m = mv.m;
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
                if let Some(d) = mv.auc_vs_pooled {
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
    metrics_table_head(
        h,
        ("Federated", f),
        ("Pooled (reference)", m.pooled_metrics.as_ref()),
    );
    h.push_str("</tbody></table>");

    h.push_str("<div class=\"charts\">");
    // Training curve: loss and hold-out AUC per round, as two small charts.
    // Both training charts span the same rounds.
    let rounds_axis = || {
        let axis = Axis::new("training round", Format::Integer);
        match mv.round_span {
            Some((a, b)) => axis.range(a, b),
            None => axis,
        }
    };
    let loss_chart = LineChart::new(
        &format!("Training loss per round, {}", m.name),
        rounds_axis(),
        Axis::new("training loss", Format::Auto),
    )
    .series(Series::new("training loss (federation)", PRIMARY, mv.loss.clone()).with_markers())
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
    .series(Series::new("federated AUC (hold-out)", SECONDARY, mv.auc.clone()).with_markers())
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
    let roc_chart = charts::roc(
        &m.name,
        &format!("federated model (AUC {})", num(f.auc, 3)),
        m.roc.clone(),
    );
    figs.figure(
        h,
        "ROC curve of the federated model.",
        "Combined hold-out set.",
        roc_chart.render(),
    );

    // KS: cumulative shares of positives and negatives, with the largest gap marked.
    let ks_chart = charts::ks(&m.name, &m.ks_curve, mv.ks_gap);
    let ks_detail = match mv.ks_gap {
        Some((p, a, b)) => format!(
            "The largest gap, {}, is at {} of the population.",
            escape(&num((a - b).abs(), 3)),
            escape(&pct(p, 0))
        ),
        None => String::new(),
    };
    figs.figure(
        h,
        "Kolmogorov–Smirnov chart.",
        &ks_detail,
        ks_chart.render(),
    );

    // Gains with the random baseline and the top decile marked.
    let gain_at_decile = mv.gain_at_decile;
    let gains_chart = charts::gains(
        &m.name,
        "federated model",
        m.gains.clone(),
        gain_at_decile.map(|g| (g, f.top_decile_lift)),
    );
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
    comparison_table(h, m, &mv.comparison);
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
fn scorecard_tables(h: &mut String, sc: &ScorecardReport) {
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

fn comparison_table(h: &mut String, m: &ModelReport, cv: &ComparisonView) {
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
    for (c, (d, verdict)) in m.comparison.iter().zip(&cv.rows) {
        let (d, class) = (*d, verdict.class());
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
    let class = cv.mean_verdict.class();
    let _ = write!(
        h,
        "</tbody><tfoot><tr><td>Average (unweighted)</td><td class=\"num\">{}</td><td class=\"num{class}\">{}</td><td class=\"num\">{}</td><td class=\"num{class}\">{}</td></tr></tfoot></table>",
        num(cv.mean_local, 3),
        num(cv.mean_federated, 3),
        num(cv.mean_pooled, 3),
        signed(cv.mean_delta, 3)
    );
    let (wins, comparable) = (cv.wins, cv.comparable);
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

/// A vertical model: its figures against the pooled reference and the active party alone,
/// the parties, the relay's traffic, what each party learned, and the hold-out charts.
fn vertical_model_section(
    h: &mut String,
    index: usize,
    mv: &ModelView,
    vm: &VerticalModelReport,
    figs: &mut Figures,
) {
    let m = mv.m;
    let size = match (vm.iterations, vm.trees) {
        (Some(i), _) => plural(i as usize, "iteration", "iterations"),
        (None, Some(t)) => plural(t, "tree", "trees"),
        _ => String::new(),
    };
    let _ = write!(
        h,
        "<section class=\"model\" id=\"model-{index}\">\n<h3>2.{} {}</h3>\n<p class=\"meta\">Task: {} · model: {} · {} · on the alignment of PSI job {} · Paillier key of {} bits</p>",
        index + 1,
        escape(&m.name),
        escape(&m.task),
        escape(&m.model_kind),
        escape(&size),
        escape(&vm.psi_job),
        vm.key_bits
    );
    let f = &m.final_metrics;
    let a = &vm.active_alone_metrics;
    let _ = write!(
        h,
        "<p class=\"summary\">Vertical model on the {} hold-out customers: AUC <strong>{}</strong>, KS <strong>{}</strong>, log-loss <strong>{}</strong>, \
         top-decile lift <strong>{}</strong>; {} alone: AUC {} ({} {}).",
        vm.holdout_rows,
        num(f.auc, 3),
        num(f.ks, 3),
        num(f.log_loss, 4),
        num(f.top_decile_lift, 2),
        escape(&vm.active),
        num(a.auc, 3),
        signed(f.auc - a.auc, 3),
        if f.auc > a.auc { "for the vertical model" } else { "— the partners' columns did not help" }
    );
    if let Some(p) = &m.pooled_metrics {
        let _ = write!(
            h,
            " Pooled reference (joined table): AUC {}; largest hold-out score difference {}{}{}.",
            num(p.auc, 3),
            sci(vm.max_score_diff_vs_pooled),
            match vm.max_coef_diff_vs_pooled {
                Some(d) => format!(", largest coefficient difference {}", sci(d)),
                None => String::new(),
            },
            match vm.trees_match_pooled {
                Some(true) => ", every tree identical to the pooled one",
                Some(false) => ", the trees differ from the pooled ones",
                None => "",
            }
        );
    }
    h.push_str("</p>");
    metrics_table_head(
        h,
        ("Vertical", f),
        (
            "Pooled (joined table, reference)",
            m.pooled_metrics.as_ref(),
        ),
    );
    metric_row(h, &format!("{} alone", escape(&vm.active)), a);
    h.push_str("</tbody></table>");

    h.push_str("<h4>Parties and traffic</h4><table class=\"vertical-parties\"><thead><tr><th>Institution</th><th>Role</th>\
                <th>Columns</th><th class=\"num\">Encoded columns</th></tr></thead><tbody>");
    for p in &vm.parties {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            escape(&p.institution),
            escape(&p.role),
            escape(&p.columns.join(", ")),
            p.encoded_columns
        );
    }
    h.push_str("</tbody></table>");
    let _ = write!(
        h,
        "<p>{} aligned customers ({} training, {} hold-out). The relay carried {} messages ({}) to the partners and {} ({}) to {}; \
         training took {}, scoring the hold-out {} (all parties in one process).</p>",
        thousands(vm.aligned_rows as u64),
        thousands(vm.train_rows as u64),
        thousands(vm.holdout_rows as u64),
        thousands(vm.messages_active_to_passive),
        bytes(vm.bytes_active_to_passive),
        thousands(vm.messages_passive_to_active),
        bytes(vm.bytes_passive_to_active),
        escape(&vm.active),
        seconds(vm.train_seconds),
        seconds(vm.score_seconds)
    );
    h.push_str("<h4>What each party learned</h4><ul class=\"note\">");
    for l in &vm.learned {
        let _ = write!(h, "<li>{}</li>", escape(l));
    }
    h.push_str("</ul>");

    h.push_str("<div class=\"charts\">");
    let roc_chart = charts::roc(
        &m.name,
        &format!("vertical model (AUC {})", num(f.auc, 3)),
        m.roc.clone(),
    );
    figs.figure(
        h,
        "ROC curve of the vertical model.",
        "Hold-out customers.",
        roc_chart.render(),
    );
    let ks_chart = charts::ks(&m.name, &m.ks_curve, mv.ks_gap);
    figs.figure(h, "Kolmogorov–Smirnov chart.", "", ks_chart.render());
    let gains_chart = charts::gains(
        &m.name,
        "vertical model",
        m.gains.clone(),
        mv.gain_at_decile.map(|g| (g, f.top_decile_lift)),
    );
    figs.figure(
        h,
        "Cumulative gains (lift) chart.",
        "",
        gains_chart.render(),
    );
    h.push_str("</div>");
    if !m.notes.is_empty() {
        h.push_str("<h4>Notes</h4><ul class=\"note\">");
        for n in &m.notes {
            let _ = write!(h, "<li>{}</li>", escape(n));
        }
        h.push_str("</ul>");
    }
    h.push_str("</section>\n");
}

/// Opens a metrics table with the model's row and, when there is a pooled reference, its
/// row and the difference (the caller adds any further rows and closes the table).
fn metrics_table_head(
    h: &mut String,
    (label, f): (&str, &Metrics),
    (pooled_label, pooled): (&str, Option<&Metrics>),
) {
    h.push_str(
        "<table class=\"metrics\"><thead><tr><th></th><th class=\"num\">AUC</th><th class=\"num\">KS</th>\
         <th class=\"num\">Log-loss</th><th class=\"num\">Top-decile lift</th></tr></thead><tbody>",
    );
    metric_row(h, label, f);
    if let Some(p) = pooled {
        metric_row(h, pooled_label, p);
        let _ = write!(
            h,
            "<tr><th>{label} − pooled</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            signed(f.auc - p.auc, 3),
            signed(f.ks - p.ks, 3),
            signed(f.log_loss - p.log_loss, 4),
            signed(f.top_decile_lift - p.top_decile_lift, 2)
        );
    }
}
