//! The page's stylesheet (inline: the report needs no network).

pub const CSS: &str = r#"
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
td.leak { background: #fdeceb; color: #7f1d1d; font-weight: 600; }
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
