//! Stacked bar charts.

use std::fmt::Write as _;

use super::*;

/// One stack layer of a bar chart.
#[derive(Clone, Debug)]
pub struct BarSeries {
    pub label: String,
    pub colour: &'static str,
    pub values: Vec<f64>,
}

/// A stacked bar chart: one bar per category, one layer per series.
#[derive(Clone, Debug)]
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y: Axis,
    pub categories: Vec<String>,
    /// Hover text per category (e.g. the round's purpose and exact figures).
    pub tooltips: Vec<String>,
    pub layers: Vec<BarSeries>,
    pub legend: Corner,
    pub width: f64,
    pub height: f64,
}

impl BarChart {
    pub fn new(title: &str, x_label: &str, y: Axis) -> Self {
        BarChart {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y,
            categories: Vec::new(),
            tooltips: Vec::new(),
            layers: Vec::new(),
            legend: Corner::TopRight,
            width: 520.0,
            height: 320.0,
        }
    }

    fn value(&self, layer: usize, i: usize) -> f64 {
        self.layers[layer]
            .values
            .get(i)
            .copied()
            .filter(|v| v.is_finite() && *v > 0.0)
            .unwrap_or(0.0)
    }

    /// The SVG: one `<rect class="bar">` per non-zero layer of each category.
    pub fn render(&self) -> String {
        let n = self.categories.len();
        if n == 0 || self.layers.is_empty() {
            return no_data(&self.title, self.width, self.height);
        }
        let totals: Vec<f64> = (0..n)
            .map(|i| (0..self.layers.len()).map(|l| self.value(l, i)).sum())
            .collect();
        let ymax = totals.iter().copied().fold(0.0, f64::max);
        let y_axis = Axis {
            min: Some(self.y.min.unwrap_or(0.0)),
            ..self.y.clone()
        };
        // Headroom above the tallest bar keeps the legend clear of the bars.
        let (y0, y1, yt) = axis_ticks(&y_axis, 0.0, ymax * 1.3, 5);
        // Categories sit at x = 0..n-1, half a slot of padding each side.
        let f = Frame::new(self.width, self.height, (-0.5, n as f64 - 0.5), (y0, y1));
        let every = n.div_ceil(16).max(1);
        let x_labels: Vec<(f64, String)> = self
            .categories
            .iter()
            .enumerate()
            .filter(|(i, _)| i % every == 0)
            .map(|(i, c)| (i as f64, c.clone()))
            .collect();
        let x_axis = Axis::new(&self.x_label, Format::Auto);
        let mut out = String::new();
        open_svg(&mut out, self.width, self.height, &self.title);
        draw_axes(&mut out, &f, &x_axis, &[], &y_axis, &yt, Some(&x_labels));
        let slot = (f.right() - f.left()) / n as f64;
        let bw = (slot * 0.72).max(1.0);
        out.push_str("<g class=\"bars\">");
        for i in 0..n {
            let cx = f.px(i as f64);
            let mut base = 0.0;
            let tip = self.tooltips.get(i).cloned().unwrap_or_default();
            for l in 0..self.layers.len() {
                let v = self.value(l, i);
                if v <= 0.0 {
                    continue;
                }
                let top = f.py(base + v);
                let bottom = f.py(base);
                base += v;
                let _ = write!(
                    out,
                    "<rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}{}{}: {}</title></rect>",
                    fmt_px(cx - bw / 2.0),
                    fmt_px(top),
                    fmt_px(bw),
                    fmt_px((bottom - top).max(0.5)),
                    self.layers[l].colour,
                    escape(&tip),
                    if tip.is_empty() { "" } else { " — " },
                    escape(&self.layers[l].label),
                    escape(&bytes_or_value(v, self.y.format))
                );
            }
        }
        out.push_str("</g>");
        let items: Vec<LegendItem> = self
            .layers
            .iter()
            .map(|l| LegendItem {
                colour: l.colour,
                dashed: false,
                boxed: true,
                label: l.label.clone(),
            })
            .collect();
        draw_legend(&mut out, &f, self.legend, &items);
        out.push_str("</svg>");
        out
    }
}

fn bytes_or_value(v: f64, format: Format) -> String {
    match format {
        Format::Bytes => format!("{} ({} bytes)", bytes_label(v), v.round() as u64),
        Format::Percent => format!("{:.1}%", v * 100.0),
        _ => format!("{v}"),
    }
}
