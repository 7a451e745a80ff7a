//! Line charts.

use std::fmt::Write as _;

use super::*;

/// A line chart with axes, grid, ticks, a legend and reference lines.
#[derive(Clone, Debug)]
pub struct LineChart {
    /// Short accessible description (the figure caption is written by the caller).
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    pub references: Vec<Reference>,
    pub legend: Corner,
    pub width: f64,
    pub height: f64,
}

impl LineChart {
    pub fn new(title: &str, x: Axis, y: Axis) -> Self {
        LineChart {
            title: title.to_string(),
            x,
            y,
            series: Vec::new(),
            references: Vec::new(),
            legend: Corner::BottomRight,
            width: 520.0,
            height: 320.0,
        }
    }

    pub fn series(mut self, s: Series) -> Self {
        self.series.push(s);
        self
    }

    pub fn reference(mut self, r: Reference) -> Self {
        self.references.push(r);
        self
    }

    pub fn legend_at(mut self, corner: Corner) -> Self {
        self.legend = corner;
        self
    }

    /// The SVG (one `<svg>` element). Each series with at least one finite point is one
    /// `<polyline class="series">` holding exactly its finite points.
    pub fn render(&self) -> String {
        let drawn: Vec<(&Series, Vec<(f64, f64)>)> = self
            .series
            .iter()
            .map(|s| (s, s.finite_points()))
            .filter(|(_, p)| !p.is_empty())
            .collect();
        if drawn.is_empty() {
            return no_data(&self.title, self.width, self.height);
        }
        let refs: Vec<&Reference> = self.references.iter().filter(|r| r.is_finite()).collect();
        let (mut xlo, mut xhi, mut ylo, mut yhi) = (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        );
        let mut take = |x: Option<f64>, y: f64| {
            if let Some(x) = x {
                xlo = xlo.min(x);
                xhi = xhi.max(x);
            }
            ylo = ylo.min(y);
            yhi = yhi.max(y);
        };
        for (_, pts) in &drawn {
            for &(x, y) in pts {
                take(Some(x), y);
            }
        }
        for r in &refs {
            match r.line {
                Line::Horizontal(y) => take(None, y),
                Line::Segment(a, b) => {
                    take(Some(a.0), a.1);
                    take(Some(b.0), b.1);
                }
            }
        }
        let (x0, x1, xt) = axis_ticks(&self.x, xlo, xhi, 6);
        let (y0, y1, yt) = axis_ticks(&self.y, ylo, yhi, 5);
        let f = Frame::new(self.width, self.height, (x0, x1), (y0, y1));
        let mut out = String::new();
        open_svg(&mut out, self.width, self.height, &self.title);
        draw_axes(&mut out, &f, &self.x, &xt, &self.y, &yt, None);
        let mut legend = Vec::new();
        for r in &refs {
            let ((ax, ay), (bx, by)) = match r.line {
                Line::Horizontal(y) => ((x0, y), (x1, y)),
                Line::Segment(a, b) => (a, b),
            };
            let _ = write!(
                out,
                "<line class=\"reference\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"{}\"{}/>",
                fmt_px(f.px(ax)),
                fmt_px(f.py(ay)),
                fmt_px(f.px(bx)),
                fmt_px(f.py(by)),
                r.colour,
                r.width,
                if r.dashed {
                    " stroke-dasharray=\"6 4\""
                } else {
                    ""
                }
            );
            if let Some(note) = &r.note {
                // Beside the middle of the line, kept inside the plot area.
                let mx = f.px((ax + bx) / 2.0);
                let my = f.py((ay + by) / 2.0);
                let est = note.chars().count() as f64 * 6.4;
                let (tx, anchor) = if mx + 6.0 + est < f.right() {
                    (mx + 6.0, "start")
                } else {
                    (mx - 6.0, "end")
                };
                let ty = if matches!(r.line, Line::Horizontal(_)) {
                    my - 5.0
                } else {
                    my + 4.0
                };
                let _ = write!(
                    out,
                    "<text class=\"note\" x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" fill=\"{}\" font-weight=\"bold\">{}</text>",
                    fmt_px(tx),
                    fmt_px(ty.max(f.top() + 10.0)),
                    r.colour,
                    escape(note)
                );
            }
            if let Some(label) = &r.legend {
                legend.push(LegendItem {
                    colour: r.colour,
                    dashed: r.dashed,
                    boxed: false,
                    label: label.clone(),
                });
            }
        }
        for (s, pts) in &drawn {
            let coords: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{},{}", fmt_px(f.px(x)), fmt_px(f.py(y))))
                .collect();
            let _ = write!(
                out,
                "<polyline class=\"series\" data-series=\"{}\" points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2.5\" stroke-linejoin=\"round\" stroke-linecap=\"round\"{}/>",
                escape(&s.label),
                coords.join(" "),
                s.colour,
                if s.dashed {
                    " stroke-dasharray=\"6 4\""
                } else {
                    ""
                }
            );
            if s.markers || pts.len() == 1 {
                out.push_str("<g class=\"markers\">");
                for &(x, y) in pts {
                    let _ = write!(
                        out,
                        "<circle cx=\"{}\" cy=\"{}\" r=\"3.5\" fill=\"{}\"/>",
                        fmt_px(f.px(x)),
                        fmt_px(f.py(y)),
                        s.colour
                    );
                }
                out.push_str("</g>");
            }
        }
        // Legend in series order first, references after.
        let mut items: Vec<LegendItem> = drawn
            .iter()
            .map(|(s, _)| LegendItem {
                colour: s.colour,
                dashed: s.dashed,
                boxed: false,
                label: s.label.clone(),
            })
            .collect();
        items.extend(legend);
        draw_legend(&mut out, &f, self.legend, &items);
        out.push_str("</svg>");
        out
    }
}
