//! The model-quality charts shared by the simulation report and `fedsilo evaluate`: ROC with
//! the diagonal, the KS chart with its gap marked, cumulative gains with the random baseline.

use super::svg::{
    Axis, Corner, Format, Line, LineChart, Reference, Series, PRIMARY, REFERENCE, SECONDARY,
    TERTIARY,
};

fn num(v: f64, d: usize) -> String {
    if v.is_finite() {
        format!("{v:.d$}")
    } else {
        "n/a".into()
    }
}

/// ROC curve of `points` (false positive rate, true positive rate), labelled `series`.
pub fn roc(name: &str, series: &str, points: Vec<(f64, f64)>) -> LineChart {
    LineChart::new(
        &format!("ROC curve, {name}"),
        Axis::new("false positive rate", Format::Auto).range(0.0, 1.0),
        Axis::new("true positive rate", Format::Auto).range(0.0, 1.0),
    )
    .series(Series::new(series, PRIMARY, points))
    .reference(
        Reference::new(Line::Segment((0.0, 0.0), (1.0, 1.0)), REFERENCE)
            .legend("random scoring (AUC 0.5)"),
    )
    .legend_at(Corner::BottomRight)
}

/// KS chart of `curve` (population share, cumulative positive share, cumulative negative
/// share), with the largest gap `gap` marked.
pub fn ks(name: &str, curve: &[(f64, f64, f64)], gap: Option<(f64, f64, f64)>) -> LineChart {
    let pos: Vec<(f64, f64)> = curve.iter().map(|&(p, a, _)| (p, a)).collect();
    let neg: Vec<(f64, f64)> = curve.iter().map(|&(p, _, b)| (p, b)).collect();
    let mut chart = LineChart::new(
        &format!("KS chart, {name}"),
        Axis::new("share of population, highest scores first", Format::Percent).range(0.0, 1.0),
        Axis::new("cumulative share", Format::Percent).range(0.0, 1.0),
    )
    .series(Series::new("positives (cumulative share)", PRIMARY, pos))
    .series(Series::new("negatives (cumulative share)", SECONDARY, neg))
    .legend_at(Corner::BottomRight);
    if let Some((p, a, b)) = gap {
        chart = chart.reference(
            Reference::new(Line::Segment((p, b), (p, a)), TERTIARY)
                .solid(2.0)
                .legend("KS gap (largest separation)")
                .note(&format!("KS = {}", num((a - b).abs(), 3))),
        );
    }
    chart
}

/// Cumulative gains of `points` (population share, share of positives), labelled `series`;
/// `top_decile` = (share of positives in the top 10 %, top-decile lift) marks the decile.
pub fn gains(
    name: &str,
    series: &str,
    points: Vec<(f64, f64)>,
    top_decile: Option<(f64, f64)>,
) -> LineChart {
    let mut chart = LineChart::new(
        &format!("Cumulative gains, {name}"),
        Axis::new(
            "share of population targeted, highest scores first",
            Format::Percent,
        )
        .range(0.0, 1.0),
        Axis::new("share of positives captured", Format::Percent).range(0.0, 1.0),
    )
    .series(Series::new(series, PRIMARY, points))
    .reference(
        Reference::new(Line::Segment((0.0, 0.0), (1.0, 1.0)), REFERENCE).legend("random targeting"),
    )
    .legend_at(Corner::BottomRight);
    if let Some((g, lift)) = top_decile {
        chart = chart.reference(
            Reference::new(Line::Segment((0.1, 0.0), (0.1, g)), TERTIARY)
                .note(&format!("top decile: lift {}", num(lift, 2))),
        );
    }
    chart
}
