//! A small SVG plotting helper for the report: line charts and (stacked) bar charts with
//! axes, ticks, labels and a legend. Output is inline SVG for an HTML5 document (no
//! `xmlns`, no external reference, no script). Non-finite values are skipped; a chart with
//! nothing to draw says "no data" instead of drawing empty axes.

use std::fmt::Write as _;

mod bar;
mod line;

pub use bar::{BarChart, BarSeries};
pub use line::LineChart;

/// First series colour (deep blue). Exact colours matter: the screenshot test counts them.
pub const PRIMARY: &str = "#1f5fa8";
/// Second series colour (burnt orange).
pub const SECONDARY: &str = "#c8502a";
/// Third series colour (green).
pub const TERTIARY: &str = "#2e7d4f";
/// Reference lines (random baseline, pooled reference, budget).
pub const REFERENCE: &str = "#6b6b6b";
/// Bars: bytes sent.
pub const BAR_SENT: &str = "#5b7fa6";
/// Bars: bytes received.
pub const BAR_RECEIVED: &str = "#b9c8da";

const TEXT: &str = "#222222";
const MUTED: &str = "#555555";
const GRID: &str = "#e3e3e3";
const AXIS: &str = "#444444";
const FONT: &str = "font-family=\"Helvetica Neue,Helvetica,Arial,sans-serif\"";

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How tick labels are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Decimals chosen from the tick step.
    Auto,
    /// Whole numbers only (rounds); ticks are never fractional.
    Integer,
    /// Fractions shown as percentages (0.25 → 25%).
    Percent,
    /// Byte counts in binary units (KiB, MiB, ...).
    Bytes,
}

/// One axis: its label, an optional fixed range, and the tick format.
#[derive(Clone, Debug)]
pub struct Axis {
    pub label: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub format: Format,
}

impl Axis {
    pub fn new(label: &str, format: Format) -> Self {
        Axis {
            label: label.to_string(),
            min: None,
            max: None,
            format,
        }
    }

    /// Fixes the axis to `[min, max]`.
    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.min = Some(min);
        self.max = Some(max);
        self
    }

    /// Fixes only the lower end (e.g. bytes start at zero).
    pub fn from(mut self, min: f64) -> Self {
        self.min = Some(min);
        self
    }
}

/// One line on a chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub colour: &'static str,
    pub dashed: bool,
    /// Draw a dot at every point (sparse series such as periodic evaluations).
    pub markers: bool,
}

impl Series {
    pub fn new(label: &str, colour: &'static str, points: Vec<(f64, f64)>) -> Self {
        Series {
            label: label.to_string(),
            points,
            colour,
            dashed: false,
            markers: false,
        }
    }

    pub fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }

    /// The points that can be drawn (both coordinates finite).
    pub fn finite_points(&self) -> Vec<(f64, f64)> {
        self.points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect()
    }
}

/// Where a reference line runs.
#[derive(Clone, Copy, Debug)]
pub enum Line {
    /// Across the whole x range at this y.
    Horizontal(f64),
    /// From one data point to another.
    Segment((f64, f64), (f64, f64)),
}

/// A reference line (random baseline, pooled reference, KS gap, budget), optionally named
/// in the legend and labelled next to the line.
#[derive(Clone, Debug)]
pub struct Reference {
    pub line: Line,
    pub colour: &'static str,
    pub dashed: bool,
    pub width: f64,
    pub legend: Option<String>,
    pub note: Option<String>,
}

impl Reference {
    pub fn new(line: Line, colour: &'static str) -> Self {
        Reference {
            line,
            colour,
            dashed: true,
            width: 1.3,
            legend: None,
            note: None,
        }
    }

    pub fn legend(mut self, label: &str) -> Self {
        self.legend = Some(label.to_string());
        self
    }

    pub fn note(mut self, text: &str) -> Self {
        self.note = Some(text.to_string());
        self
    }

    pub fn solid(mut self, width: f64) -> Self {
        self.dashed = false;
        self.width = width;
        self
    }

    fn is_finite(&self) -> bool {
        match self.line {
            Line::Horizontal(y) => y.is_finite(),
            Line::Segment(a, b) => [a.0, a.1, b.0, b.1].iter().all(|v| v.is_finite()),
        }
    }
}

/// Corner of the plot area that holds the legend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corner {
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

const MARGIN_LEFT: f64 = 62.0;
const MARGIN_RIGHT: f64 = 18.0;
const MARGIN_TOP: f64 = 14.0;
const MARGIN_BOTTOM: f64 = 48.0;

/// Pixel geometry shared by both chart kinds.
struct Frame {
    w: f64,
    h: f64,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn new(w: f64, h: f64, x: (f64, f64), y: (f64, f64)) -> Self {
        Frame {
            w,
            h,
            x0: x.0,
            x1: x.1,
            y0: y.0,
            y1: y.1,
        }
    }
    fn left(&self) -> f64 {
        MARGIN_LEFT
    }
    fn right(&self) -> f64 {
        self.w - MARGIN_RIGHT
    }
    fn top(&self) -> f64 {
        MARGIN_TOP
    }
    fn bottom(&self) -> f64 {
        self.h - MARGIN_BOTTOM
    }
    fn px(&self, x: f64) -> f64 {
        let t = (x - self.x0) / (self.x1 - self.x0);
        (self.left() + t * (self.right() - self.left()))
            .clamp(self.left() - 4.0, self.right() + 4.0)
    }
    fn py(&self, y: f64) -> f64 {
        let t = (y - self.y0) / (self.y1 - self.y0);
        (self.bottom() - t * (self.bottom() - self.top()))
            .clamp(self.top() - 4.0, self.bottom() + 4.0)
    }
}

fn open_svg(out: &mut String, w: f64, h: f64, title: &str) {
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{t}\" {FONT} font-size=\"12\"><title>{t}</title>",
        t = escape(title)
    );
    let _ = write!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>"
    );
}

/// An SVG of the usual size saying there is nothing to plot.
pub fn no_data(title: &str, width: f64, height: f64) -> String {
    let mut out = String::new();
    open_svg(&mut out, width, height, title);
    let _ = write!(
        out,
        "<rect x=\"{l}\" y=\"{t}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fafafa\" stroke=\"{GRID}\"/>\
         <text class=\"no-data\" x=\"{cx}\" y=\"{cy}\" text-anchor=\"middle\" fill=\"{MUTED}\" font-size=\"14\">no data</text></svg>",
        l = MARGIN_LEFT,
        t = MARGIN_TOP,
        pw = width - MARGIN_LEFT - MARGIN_RIGHT,
        ph = height - MARGIN_TOP - MARGIN_BOTTOM,
        cx = (MARGIN_LEFT + width - MARGIN_RIGHT) / 2.0,
        cy = (MARGIN_TOP + height - MARGIN_BOTTOM) / 2.0,
    );
    out
}

/// A "nice" tick step (1, 2, 2.5 or 5 times a power of ten) giving about `target` ticks.
fn nice_step(span: f64, target: usize, integer: bool) -> f64 {
    let raw = span / target.max(1) as f64;
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 2.5 && !integer {
        2.5
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    let step = nice * mag;
    if integer {
        step.max(1.0).round()
    } else {
        step
    }
}

/// Binary-unit nice step for byte axes (powers of two times 1, 2 or 5 of a unit).
fn byte_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mut unit = 1.0;
    while raw / unit >= 1024.0 {
        unit *= 1024.0;
    }
    nice_step(raw / unit * target as f64, target, true) * unit
}

/// The axis range and ticks: fixed ends are kept, free ends are rounded out to a tick.
fn axis_ticks(axis: &Axis, lo: f64, hi: f64, target: usize) -> (f64, f64, Vec<f64>) {
    let (mut lo, mut hi) = (axis.min.unwrap_or(lo), axis.max.unwrap_or(hi));
    if !(lo.is_finite() && hi.is_finite()) {
        lo = 0.0;
        hi = 1.0;
    }
    if hi < lo {
        std::mem::swap(&mut lo, &mut hi);
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        // A single value: open the range around it (on the free ends).
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        match (axis.min, axis.max) {
            (None, None) => {
                lo -= pad;
                hi += pad;
            }
            (Some(_), None) => hi += pad,
            (None, Some(_)) => lo -= pad,
            (Some(_), Some(_)) => hi = lo + 1.0,
        }
    }
    let integer = axis.format == Format::Integer;
    let step = match axis.format {
        Format::Bytes => byte_step(hi - lo, target),
        _ => nice_step(hi - lo, target, integer),
    };
    if axis.min.is_none() {
        lo = (lo / step).floor() * step;
    }
    if axis.max.is_none() {
        hi = (hi / step).ceil() * step;
        if hi <= lo {
            hi = lo + step;
        }
    }
    let mut ticks = Vec::new();
    let first = (lo / step - 1e-9).ceil();
    let mut i = 0.0;
    while ticks.len() < 50 {
        let v = (first + i) * step;
        if v > hi + step * 1e-9 {
            break;
        }
        ticks.push(v + 0.0);
        i += 1.0;
    }
    (lo, hi, ticks)
}

/// Formats a tick label given the tick step.
fn tick_label(v: f64, step: f64, format: Format) -> String {
    let v = if v.abs() < step.abs() * 1e-9 { 0.0 } else { v };
    match format {
        Format::Integer => format!("{}", v.round() as i64),
        Format::Percent => {
            let d = decimals(step * 100.0);
            format!("{:.*}%", d, v * 100.0)
        }
        Format::Bytes => bytes_label(v),
        Format::Auto => {
            if v.abs() >= 1e6 {
                let d = decimals(step / 1e6);
                format!("{:.*}M", d, v / 1e6)
            } else if v.abs() >= 1e4 && step >= 1e3 {
                let d = decimals(step / 1e3);
                format!("{:.*}k", d, v / 1e3)
            } else {
                format!("{:.*}", decimals(step), v)
            }
        }
    }
}

fn decimals(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) {
        return 0;
    }
    let mut d = 0usize;
    let mut s = step;
    while d < 6 && (s - s.round()).abs() > 1e-6 * s.max(1.0) {
        s *= 10.0;
        d += 1;
    }
    d
}

/// Bytes in binary units, compact (for ticks and bar labels).
pub fn bytes_label(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = v;
    let mut u = 0;
    while x.abs() >= 1024.0 && u < UNITS.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 || (x - x.round()).abs() < 1e-9 {
        format!("{} {}", x.round() as i64, UNITS[u])
    } else if x.abs() < 10.0 {
        format!("{:.2} {}", x, UNITS[u])
    } else if x.abs() < 100.0 {
        format!("{:.1} {}", x, UNITS[u])
    } else {
        format!("{:.0} {}", x, UNITS[u])
    }
}

fn fmt_px(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    format!("{}", r + 0.0)
}

/// Axes, grid lines, tick labels and axis labels.
fn draw_axes(
    out: &mut String,
    f: &Frame,
    x: &Axis,
    xt: &[f64],
    y: &Axis,
    yt: &[f64],
    x_labels: Option<&[(f64, String)]>,
) {
    let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
    out.push_str("<g class=\"grid\">");
    for &t in yt {
        let py = fmt_px(f.py(t));
        let _ = write!(
            out,
            "<line x1=\"{l}\" y1=\"{py}\" x2=\"{r}\" y2=\"{py}\" stroke=\"{GRID}\" stroke-width=\"1\"/>",
            l = fmt_px(f.left()),
            r = fmt_px(f.right())
        );
    }
    out.push_str("</g><g class=\"axes\">");
    let _ = write!(
        out,
        "<line x1=\"{l}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"{AXIS}\" stroke-width=\"1\"/>\
         <line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{b}\" stroke=\"{AXIS}\" stroke-width=\"1\"/>",
        l = fmt_px(f.left()),
        r = fmt_px(f.right()),
        t = fmt_px(f.top()),
        b = fmt_px(f.bottom())
    );
    for &t in yt {
        let py = f.py(t);
        let _ = write!(
            out,
            "<line x1=\"{a}\" y1=\"{p}\" x2=\"{l}\" y2=\"{p}\" stroke=\"{AXIS}\"/>\
             <text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\" fill=\"{TEXT}\">{label}</text>",
            a = fmt_px(f.left() - 4.0),
            l = fmt_px(f.left()),
            p = fmt_px(py),
            tx = fmt_px(f.left() - 7.0),
            ty = fmt_px(py + 4.0),
            label = escape(&tick_label(t, ystep, y.format))
        );
    }
    let owned: Vec<(f64, String)>;
    let xl: &[(f64, String)] = match x_labels {
        Some(l) => l,
        None => {
            let xstep = if xt.len() > 1 { xt[1] - xt[0] } else { 1.0 };
            owned = xt
                .iter()
                .map(|&t| (t, tick_label(t, xstep, x.format)))
                .collect();
            &owned
        }
    };
    for (t, label) in xl {
        let px = f.px(*t);
        let _ = write!(
            out,
            "<line x1=\"{p}\" y1=\"{b}\" x2=\"{p}\" y2=\"{b4}\" stroke=\"{AXIS}\"/>\
             <text x=\"{p}\" y=\"{ty}\" text-anchor=\"middle\" fill=\"{TEXT}\">{label}</text>",
            p = fmt_px(px),
            b = fmt_px(f.bottom()),
            b4 = fmt_px(f.bottom() + 4.0),
            ty = fmt_px(f.bottom() + 17.0),
            label = escape(label)
        );
    }
    let _ = write!(
        out,
        "<text class=\"axis-label\" x=\"{cx}\" y=\"{by}\" text-anchor=\"middle\" fill=\"{MUTED}\">{xl}</text>\
         <text class=\"axis-label\" transform=\"translate(15 {cy}) rotate(-90)\" text-anchor=\"middle\" fill=\"{MUTED}\">{yl}</text></g>",
        cx = fmt_px((f.left() + f.right()) / 2.0),
        by = fmt_px(f.h - 10.0),
        cy = fmt_px((f.top() + f.bottom()) / 2.0),
        xl = escape(&x.label),
        yl = escape(&y.label)
    );
}

/// A legend entry: colour, line style or box, label.
struct LegendItem {
    colour: &'static str,
    dashed: bool,
    boxed: bool,
    label: String,
}

fn draw_legend(out: &mut String, f: &Frame, corner: Corner, items: &[LegendItem]) {
    if items.is_empty() {
        return;
    }
    // Approximate text width for 12px sans-serif.
    let text_w = items
        .iter()
        .map(|i| i.label.chars().count() as f64 * 6.1)
        .fold(0.0, f64::max);
    let w = (text_w + 40.0).min(f.right() - f.left() - 8.0);
    let row = 17.0;
    let h = items.len() as f64 * row + 8.0;
    let x = match corner {
        Corner::TopLeft | Corner::BottomLeft => f.left() + 8.0,
        Corner::TopRight | Corner::BottomRight => f.right() - 8.0 - w,
    };
    let y = match corner {
        Corner::TopLeft | Corner::TopRight => f.top() + 8.0,
        Corner::BottomLeft | Corner::BottomRight => f.bottom() - 8.0 - h,
    };
    let _ = write!(
        out,
        "<g class=\"legend\"><rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"#ffffff\" fill-opacity=\"0.9\" stroke=\"#cccccc\"/>",
        x = fmt_px(x),
        y = fmt_px(y),
        w = fmt_px(w),
        h = fmt_px(h)
    );
    for (i, item) in items.iter().enumerate() {
        let cy = y + 4.0 + row * (i as f64 + 0.5);
        if item.boxed {
            let _ = write!(
                out,
                "<rect x=\"{x}\" y=\"{y}\" width=\"18\" height=\"10\" fill=\"{c}\"/>",
                x = fmt_px(x + 7.0),
                y = fmt_px(cy - 5.0),
                c = item.colour
            );
        } else {
            let _ = write!(
                out,
                "<line x1=\"{a}\" y1=\"{cy}\" x2=\"{b}\" y2=\"{cy}\" stroke=\"{c}\" stroke-width=\"2.5\"{d}/>",
                a = fmt_px(x + 6.0),
                b = fmt_px(x + 26.0),
                cy = fmt_px(cy),
                c = item.colour,
                d = if item.dashed {
                    " stroke-dasharray=\"5 3\""
                } else {
                    ""
                }
            );
        }
        let _ = write!(
            out,
            "<text x=\"{tx}\" y=\"{ty}\" fill=\"{TEXT}\">{label}</text>",
            tx = fmt_px(x + 32.0),
            ty = fmt_px(cy + 4.0),
            label = escape(&item.label)
        );
    }
    out.push_str("</g>");
}

#[cfg(test)]
mod tests;
