//! Tests of the SVG helper.

use super::*;

#[test]
fn ticks_are_nice_and_cover_the_data() {
    let (lo, hi, t) = axis_ticks(&Axis::new("", Format::Auto), 0.43, 0.71, 5);
    assert!(lo <= 0.43 && hi >= 0.71, "{lo} {hi}");
    assert!(t.len() >= 3 && t.len() <= 8, "{t:?}");
    let (_, _, t) = axis_ticks(&Axis::new("", Format::Integer), 1.0, 3.0, 6);
    assert!(t.iter().all(|v| v.fract() == 0.0), "{t:?}");
    let (lo, hi, t) = axis_ticks(&Axis::new("", Format::Auto).range(0.0, 1.0), 0.2, 0.3, 5);
    assert_eq!((lo, hi), (0.0, 1.0));
    assert_eq!(t.first(), Some(&0.0));
    // One value only: still a usable axis.
    let (lo, hi, t) = axis_ticks(&Axis::new("", Format::Auto), 5.0, 5.0, 5);
    assert!(lo < 5.0 && hi > 5.0 && !t.is_empty());
}

#[test]
fn labels() {
    assert_eq!(tick_label(0.5, 0.1, Format::Auto), "0.5");
    assert_eq!(tick_label(0.25, 0.25, Format::Percent), "25%");
    assert_eq!(bytes_label(2048.0), "2 KiB");
    assert_eq!(bytes_label(1536.0), "1.50 KiB");
    assert_eq!(
        escape("A&B <Bank> \"x\""),
        "A&amp;B &lt;Bank&gt; &quot;x&quot;"
    );
}

#[test]
fn nan_points_are_skipped_and_empty_says_no_data() {
    let c = LineChart::new(
        "t",
        Axis::new("x", Format::Auto),
        Axis::new("y", Format::Auto),
    )
    .series(Series::new(
        "s",
        PRIMARY,
        vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 3.0)],
    ));
    let svg = c.render();
    assert_eq!(svg.matches("<polyline").count(), 1);
    assert!(!svg.contains("NaN"), "{svg}");
    let empty = LineChart::new(
        "t",
        Axis::new("x", Format::Auto),
        Axis::new("y", Format::Auto),
    )
    .series(Series::new("s", PRIMARY, vec![(f64::NAN, 1.0)]))
    .render();
    assert!(empty.contains("no data") && empty.ends_with("</svg>"));
    let bars = BarChart::new("b", "x", Axis::new("y", Format::Bytes)).render();
    assert!(bars.contains("no data"));
}
