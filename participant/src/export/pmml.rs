//! A model as a PMML 4.4 document: logistic regression as a `RegressionModel`
//! (classification, logit), a scorecard as a `Scorecard`.
//!
//! - Logistic regression: each model column is a `DerivedField` (a numeric column as it is, a
//!   one-hot column a `NormDiscrete` of its categorical field), standardised by a
//!   `NormContinuous` with fedsilo's mean and deviation (`mapMissingTo="0"`: a missing value
//!   is the mean, as fedsilo scores it); one `RegressionTable` for target category `1`
//!   (the label's positive values) and an empty one for `0`. One label per document.
//! - Scorecard: one `Characteristic` per selected characteristic, one `Attribute` per bin
//!   with its points as `partialScore` — numeric bins as `lessThan`/`greaterOrEqual` of the
//!   cut points, the missing bin as `isMissing`; categorical bins as `equal`, with the missing
//!   bin last as `True` (missing or an unknown category, as fedsilo bins it). Outputs: the
//!   points, and the probability of the positive ("bad") class from the scaling.
//! - GBDT and MLP: refused (export GBDT as SQL).

use std::fmt::Write as _;

use fedsilo_ml::scorecard::{Characteristic, Scorecard};
use fedsilo_task::{ModelParams, TrainedModel};

use super::{inputs, kind_name, lit, lit32, ExportError, Input};
use crate::data::{FeatureKind, Schema};

/// XML text and attribute escaping.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// The PMML document of `model` for `schema`'s columns.
pub fn export(model: &TrainedModel, schema: &Schema) -> Result<String, ExportError> {
    model.validate()?;
    if let Some(cohort) = &schema.cohort {
        return Err(ExportError::Cohort {
            cohort: cohort.clone(),
        });
    }
    let ins = inputs(model, schema)?;
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<PMML xmlns=\"http://www.dmg.org/PMML-4_4\" version=\"4.4\">\n");
    let _ = writeln!(
        x,
        "  <Header description=\"fedsilo {} model (features: {})\">\n    <Application name=\"fedsilo\" version=\"{}\"/>\n  </Header>",
        kind_name(model),
        esc(&model.features.join(", ")),
        env!("CARGO_PKG_VERSION")
    );
    match &model.params {
        ModelParams::LogisticRegression { per_label } => {
            let [p] = per_label.as_slice() else {
                return Err(ExportError::Unsupported {
                    kind: "multi-label logistic regression",
                    format: "PMML",
                    hint: "a PMML document holds one label's model here; export it as SQL (one score column per label)",
                });
            };
            let label = model.labels.first().map_or("label", String::as_str);
            data_dictionary(&mut x, schema, &ins, Some(label));
            let _ = writeln!(
                x,
                "  <RegressionModel modelName=\"{}\" functionName=\"classification\" normalizationMethod=\"logit\">",
                esc(label)
            );
            mining_schema(&mut x, &ins, Some(label));
            x.push_str(
                "    <Output>\n      <OutputField name=\"probability\" optype=\"continuous\" dataType=\"double\" feature=\"probability\" value=\"1\"/>\n    </Output>\n",
            );
            x.push_str("    <LocalTransformations>\n");
            for (j, (input, name)) in ins.iter().zip(&model.features).enumerate() {
                let source = match input {
                    Input::Numeric { column } => column.to_string(),
                    Input::OneHot { column, category } => {
                        let derived = format!("x({name})");
                        let _ = writeln!(
                            x,
                            "      <DerivedField name=\"{}\" optype=\"continuous\" dataType=\"double\">\n        <NormDiscrete field=\"{}\" value=\"{}\" mapMissingTo=\"0\"/>\n      </DerivedField>",
                            esc(&derived),
                            esc(column),
                            esc(category)
                        );
                        derived
                    }
                };
                let m = model.standardizer.mean.get(j).copied().unwrap_or(0.0) as f32;
                let s = model.standardizer.std.get(j).copied().unwrap_or(1.0) as f32;
                let _ = writeln!(
                    x,
                    "      <DerivedField name=\"{}\" optype=\"continuous\" dataType=\"double\">\n        <NormContinuous field=\"{}\" mapMissingTo=\"0\" outliers=\"asIs\">\n          <LinearNorm orig=\"{}\" norm=\"0\"/>\n          <LinearNorm orig=\"{}\" norm=\"1\"/>\n        </NormContinuous>\n      </DerivedField>",
                    esc(&format!("z({name})")),
                    esc(&source),
                    lit32(m),
                    lit(f64::from(m) + f64::from(s))
                );
            }
            x.push_str("    </LocalTransformations>\n");
            let _ = writeln!(
                x,
                "    <RegressionTable intercept=\"{}\" targetCategory=\"1\">",
                lit(p.intercept)
            );
            for (name, c) in model.features.iter().zip(&p.coef) {
                let _ = writeln!(
                    x,
                    "      <NumericPredictor name=\"{}\" coefficient=\"{}\"/>",
                    esc(&format!("z({name})")),
                    lit(*c)
                );
            }
            x.push_str("    </RegressionTable>\n    <RegressionTable intercept=\"0\" targetCategory=\"0\"/>\n  </RegressionModel>\n");
        }
        ModelParams::Scorecard { card } => scorecard(&mut x, schema, card, &ins)?,
        ModelParams::Gbdt { .. } | ModelParams::Mlp { .. } => {
            return Err(ExportError::Unsupported {
                kind: kind_name(model),
                format: "PMML",
                hint: "PMML export covers logistic regression and scorecards; export GBDT with --format sql",
            })
        }
    }
    x.push_str("</PMML>\n");
    Ok(x)
}

/// The raw fields the inputs read, in first-use order.
fn fields<'a>(ins: &'a [Input<'_>]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for i in ins {
        if !out.contains(&i.column()) {
            out.push(i.column());
        }
    }
    out
}

fn data_dictionary(x: &mut String, schema: &Schema, ins: &[Input<'_>], target: Option<&str>) {
    let used = fields(ins);
    let _ = writeln!(
        x,
        "  <DataDictionary numberOfFields=\"{}\">",
        used.len() + usize::from(target.is_some())
    );
    for name in used {
        let categories = schema.features.iter().find_map(|f| match &f.kind {
            FeatureKind::Categorical { categories, .. } if f.name == name => Some(categories),
            _ => None,
        });
        match categories {
            Some(cats) => {
                let _ = writeln!(
                    x,
                    "    <DataField name=\"{}\" optype=\"categorical\" dataType=\"string\">",
                    esc(name)
                );
                for c in cats {
                    let _ = writeln!(x, "      <Value value=\"{}\"/>", esc(c));
                }
                x.push_str("    </DataField>\n");
            }
            None => {
                let _ = writeln!(
                    x,
                    "    <DataField name=\"{}\" optype=\"continuous\" dataType=\"double\"/>",
                    esc(name)
                );
            }
        }
    }
    if let Some(t) = target {
        let positive = schema
            .labels
            .iter()
            .find(|l| l.column == t)
            .map(|l| match &l.rule {
                crate::data::LabelRule::Positive(p) => p.values().join(", "),
                crate::data::LabelRule::Derive(t) => format!("derived: {t}"),
            })
            .unwrap_or_default();
        let _ = writeln!(
            x,
            "    <DataField name=\"{}\" optype=\"categorical\" dataType=\"string\" displayName=\"{}\">\n      <Value value=\"0\"/>\n      <Value value=\"1\"/>\n    </DataField>",
            esc(t),
            esc(&format!("1 = {t} in [{positive}]"))
        );
    }
    x.push_str("  </DataDictionary>\n");
}

fn mining_schema(x: &mut String, ins: &[Input<'_>], target: Option<&str>) {
    x.push_str("    <MiningSchema>\n");
    for name in fields(ins) {
        let _ = writeln!(
            x,
            "      <MiningField name=\"{}\" usageType=\"active\" invalidValueTreatment=\"asIs\"/>",
            esc(name)
        );
    }
    if let Some(t) = target {
        let _ = writeln!(
            x,
            "      <MiningField name=\"{}\" usageType=\"target\"/>",
            esc(t)
        );
    }
    x.push_str("    </MiningSchema>\n");
}

fn scorecard(
    x: &mut String,
    schema: &Schema,
    card: &Scorecard,
    all: &[Input<'_>],
) -> Result<(), ExportError> {
    card.validate()
        .map_err(|e| ExportError::BadModel(fedsilo_task::InstructionError::from(e)))?;
    let sel = card.woe.selected();
    let bins = &card.woe.bins;
    // Only the columns the selected characteristics read.
    let mut used: Vec<Input<'_>> = Vec::new();
    for &c in &sel {
        let cols: Vec<usize> = match bins.characteristic(c) {
            Characteristic::Numeric { column, .. } => vec![*column],
            Characteristic::Categorical { columns, .. } => columns.clone(),
        };
        for j in cols {
            let input = all.get(j).ok_or(ExportError::UnknownColumn {
                feature: format!("scorecard column {j}"),
                available: format!("{} model columns", all.len()),
            })?;
            if !used.contains(input) {
                used.push(input.clone());
            }
        }
    }
    data_dictionary(x, schema, &used, None);
    let initial = if sel.is_empty() {
        -card.intercept * card.scaling.factor() + card.scaling.offset()
    } else {
        0.0
    };
    let _ = writeln!(
        x,
        "  <Scorecard modelName=\"scorecard\" functionName=\"regression\" useReasonCodes=\"false\" initialScore=\"{}\">",
        lit(initial)
    );
    mining_schema(x, &used, None);
    let _ = writeln!(
        x,
        "    <Output>\n      <OutputField name=\"points\" optype=\"continuous\" dataType=\"double\" feature=\"predictedValue\"/>\n      <OutputField name=\"probability\" displayName=\"probability of the positive (bad) class\" optype=\"continuous\" dataType=\"double\" feature=\"transformedValue\">\n        <Apply function=\"/\">\n          <Constant dataType=\"double\">1</Constant>\n          <Apply function=\"+\">\n            <Constant dataType=\"double\">1</Constant>\n            <Apply function=\"exp\">\n              <Apply function=\"/\">\n                <Apply function=\"-\">\n                  <FieldRef field=\"points\"/>\n                  <Constant dataType=\"double\">{}</Constant>\n                </Apply>\n                <Constant dataType=\"double\">{}</Constant>\n              </Apply>\n            </Apply>\n          </Apply>\n        </Apply>\n      </OutputField>\n    </Output>",
        lit(card.scaling.offset()),
        lit(card.scaling.factor())
    );
    x.push_str("    <Characteristics>\n");
    for (k, &c) in sel.iter().enumerate() {
        let pts = card.points.get(k).map_or(&[][..], Vec::as_slice);
        let point = |b: usize| lit(pts.get(b).copied().unwrap_or(0.0));
        let _ = writeln!(x, "      <Characteristic name=\"{}\">", esc(bins.name(c)));
        let missing = bins.missing_bin(c);
        match bins.characteristic(c) {
            Characteristic::Numeric { column, cuts, .. } => {
                let f = all.get(*column).map_or("", |i| i.column());
                let f = esc(f);
                let _ = writeln!(
                    x,
                    "        <Attribute partialScore=\"{}\"><SimplePredicate field=\"{f}\" operator=\"isMissing\"/></Attribute>",
                    point(missing)
                );
                for b in 0..=cuts.len() {
                    let lo = b.checked_sub(1).and_then(|i| cuts.get(i));
                    let hi = cuts.get(b);
                    let pred = match (lo, hi) {
                        (None, Some(h)) => format!(
                            "<SimplePredicate field=\"{f}\" operator=\"lessThan\" value=\"{}\"/>",
                            lit32(*h)
                        ),
                        (Some(l), None) => format!(
                            "<SimplePredicate field=\"{f}\" operator=\"greaterOrEqual\" value=\"{}\"/>",
                            lit32(*l)
                        ),
                        (Some(l), Some(h)) => format!(
                            "<CompoundPredicate booleanOperator=\"and\"><SimplePredicate field=\"{f}\" operator=\"greaterOrEqual\" value=\"{}\"/><SimplePredicate field=\"{f}\" operator=\"lessThan\" value=\"{}\"/></CompoundPredicate>",
                            lit32(*l),
                            lit32(*h)
                        ),
                        (None, None) => "<True/>".to_string(),
                    };
                    let _ = writeln!(
                        x,
                        "        <Attribute partialScore=\"{}\">{pred}</Attribute>",
                        point(b)
                    );
                }
            }
            Characteristic::Categorical { columns, .. } => {
                for (b, j) in columns.iter().enumerate() {
                    if let Some(Input::OneHot { column, category }) = all.get(*j) {
                        let _ = writeln!(
                            x,
                            "        <Attribute partialScore=\"{}\"><SimplePredicate field=\"{}\" operator=\"equal\" value=\"{}\"/></Attribute>",
                            point(b),
                            esc(column),
                            esc(category)
                        );
                    }
                }
                let _ = writeln!(
                    x,
                    "        <Attribute partialScore=\"{}\"><True/></Attribute>",
                    point(missing)
                );
            }
        }
        x.push_str("      </Characteristic>\n");
    }
    x.push_str("    </Characteristics>\n  </Scorecard>\n");
    Ok(())
}
