//! The participant half: this step's vector on local data.

use std::collections::BTreeMap;

use ndarray::{Array2, ArrayView1, Axis, ShapeBuilder};
use rand::SeedableRng;

use fedsilo_ml::gbdt::{
    gbdt_compute, gbdt_compute_sampled, GbdtCache, GbdtInstruction, LevelSample,
};
use fedsilo_ml::linear;
use fedsilo_ml::metrics::ScoreHistogram;
use fedsilo_ml::mlp;
use fedsilo_ml::scorecard::{scorecard_counts, woe_transform, WoeTable};
use fedsilo_ml::table::Table;

use fedsilo_ml::scorecard::ScorecardError;

use crate::error::FedError;
use crate::instruction::{Instruction, NoiseSpec, DELTA_CLIP, LOSS_CAP, MAG_BINS, MOMENT_CLIP};
use crate::model::{card_linear, ModelParams, Standardizer, TrainedModel};
use crate::validate::{check_instruction, InstructionError};

mod record_dp;

/// A participant's data for one job: its training rows and its hold-out rows.
#[derive(Clone, Debug)]
pub struct LocalData {
    pub train: Table,
    pub holdout: Table,
}

/// Columns, standardiser, and the standardised train and hold-out matrices.
type StandardizedCache = (Vec<String>, Standardizer, Array2<f32>, Array2<f32>);

/// Derived data a participant keeps between steps (pure cache: dropping it changes nothing).
#[derive(Debug, Default)]
pub struct LocalCache {
    /// Keyed by the columns and the standardiser.
    standardized: Option<StandardizedCache>,
    raw: Option<(Vec<String>, Array2<f32>, Array2<f32>)>,
    woe: Option<(WoeTable, Array2<f32>, Array2<f32>)>,
    gbdt: GbdtCache,
}

/// Columns `names` of `table`, in that order, or an error naming the first missing one.
pub fn select_columns(table: &Table, names: &[String]) -> Result<Array2<f32>, FedError> {
    let idx: BTreeMap<&str, usize> = table
        .feature_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let cols = names
        .iter()
        .map(|n| {
            idx.get(n.as_str())
                .copied()
                .ok_or_else(|| FedError::MissingColumn {
                    kind: "feature",
                    name: n.clone(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(gather_columns(table.x.view(), &cols))
}

/// Columns `cols` of `x` as a column-major copy (what `select(Axis(1), ..)` gives). A
/// row-major `x` is read once, in blocks of rows, instead of once per column.
fn gather_columns(x: ndarray::ArrayView2<f32>, cols: &[usize]) -> Array2<f32> {
    const BLOCK: usize = 256;
    let (n, width) = x.dim();
    let (Some(src), true) = (x.to_slice(), cols.iter().all(|&c| c < width)) else {
        return x.select(Axis(1), cols);
    };
    let mut out = Array2::<f32>::zeros((n, cols.len()).f());
    let Some(dst) = out.as_slice_memory_order_mut() else {
        return x.select(Axis(1), cols);
    };
    for (b, rows) in src.chunks(BLOCK * width.max(1)).enumerate() {
        let r0 = b * BLOCK;
        for (col, &c) in dst.chunks_mut(n.max(1)).zip(cols) {
            for (o, row) in col[r0..].iter_mut().zip(rows.chunks_exact(width)) {
                *o = row[c];
            }
        }
    }
    out
}

/// Label columns `names` of `table`, rows × labels.
pub fn select_labels(table: &Table, names: &[String]) -> Result<Array2<f32>, FedError> {
    let cols = names
        .iter()
        .map(|n| {
            table
                .label_names
                .iter()
                .position(|l| l == n)
                .ok_or_else(|| FedError::MissingColumn {
                    kind: "label",
                    name: n.clone(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(table.labels.select(Axis(1), &cols))
}

fn mag_bin(v: f64) -> usize {
    let a = v.abs();
    if a < 1e-6 {
        0
    } else {
        ((a.log10().floor() as i64 + 7).clamp(1, MAG_BINS as i64 - 1)) as usize
    }
}

fn clamp_loss(p: f64, y: f32) -> f64 {
    let p = p.clamp(1e-15, 1.0 - 1e-15);
    let l = if y > 0.5 { -p.ln() } else { -(1.0 - p).ln() };
    l.min(LOSS_CAP)
}

/// The participant half: compute this step's vector on local data.
///
/// The step is checked first ([`check_instruction`]): a step whose sizes do not fit the local
/// columns, with non-finite values or lengths above the caps is refused with
/// [`FedError::Instruction`] before any row is read. The sizes used below are those the check
/// guaranteed; where a size still comes from the step, the code iterates rather than indexes.
///
/// `private` is the participant's own secret randomness: record-level DP steps sample their
/// rows with it (the coordinator must not know which rows took part). Other steps do not
/// read it.
pub fn compute(
    instr: &Instruction,
    local: &LocalData,
    cache: &mut LocalCache,
    private: &mut impl rand::RngCore,
) -> Result<Vec<f64>, FedError> {
    check_instruction(instr, local)?;
    let data = instr.data();
    match instr {
        Instruction::Scale { .. } => {
            let x = select_columns(&local.train, &data.features)?;
            let y = select_labels(&local.train, &data.labels)?;
            if x.nrows() == 0 {
                return Err(FedError::NoLocalRows);
            }
            let mut out = Vec::with_capacity(1 + y.ncols() + x.ncols() * (1 + MAG_BINS));
            out.push(x.nrows() as f64);
            for col in y.axis_iter(Axis(1)) {
                out.push(col.iter().filter(|&&v| v > 0.5).count() as f64);
            }
            for col in x.axis_iter(Axis(1)) {
                // [observed, then MAG_BINS magnitude bins]; mag_bin < MAG_BINS.
                let mut block = [0.0; 1 + MAG_BINS];
                for &v in col {
                    if !v.is_nan() {
                        block[0] += 1.0;
                        block[1 + mag_bin(v as f64)] += 1.0;
                    }
                }
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Instruction::Moments { scales, noise, .. } => {
            let x = select_columns(&local.train, &data.features)?;
            // Record-level DP bounds each value's part in the noised sums more tightly.
            let clip = noise.as_ref().map_or(MOMENT_CLIP, |n| n.clip);
            // One scale per column (checked).
            let mut out = Vec::with_capacity(2 * x.ncols());
            for (col, &s) in x.axis_iter(Axis(1)).zip(scales) {
                let (mut s1, mut s2) = (0.0, 0.0);
                for &v in col {
                    if !v.is_nan() {
                        let z = (v as f64 / s).clamp(-clip, clip);
                        s1 += z;
                        s2 += z * z;
                    }
                }
                out.push(s1);
                out.push(s2);
            }
            Ok(out)
        }
        Instruction::Train {
            model,
            local: cfg,
            seed,
            noise,
            ..
        } => {
            let (xs, _) = prepared(cache, local, model)?;
            let y = select_labels(&local.train, &data.labels)?;
            if let Some(NoiseSpec {
                sampling_rate: Some(q),
                clip,
                ..
            }) = noise
            {
                return record_dp::clipped_gradient_sum(
                    &model.params,
                    xs.view(),
                    y.view(),
                    cfg.pos_weight,
                    *q,
                    *clip,
                    private,
                );
            }
            let n = xs.nrows() as f64;
            // Train loss of the global model before the local epochs, for the curve. `p0` has
            // one column per model label, which the check made the step's labels.
            let p0 = model.predict_standardized(xs.view())?;
            let loss: f64 = y
                .columns()
                .into_iter()
                .zip(p0.columns())
                .map(|(yc, pc)| {
                    yc.iter()
                        .zip(pc.iter())
                        .map(|(&yv, &p)| clamp_loss(p, yv))
                        .sum::<f64>()
                })
                .sum();
            let global = model.params.flat();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(*seed);
            let mut new_params = model.params.clone();
            let new_flat = match &mut new_params {
                ModelParams::LogisticRegression { per_label } => {
                    for (p, yc) in per_label.iter_mut().zip(y.columns()) {
                        *p = linear::local_train(p, xs.view(), yc, cfg, &mut rng)?;
                    }
                    new_params.flat()
                }
                ModelParams::Mlp { per_label } => {
                    for (p, yc) in per_label.iter_mut().zip(y.columns()) {
                        *p = mlp::mlp_local_train(p, xs.view(), yc, cfg, &mut rng)?;
                    }
                    new_params.flat()
                }
                ModelParams::Scorecard { card } => {
                    let yc = first_label(&y)?;
                    linear::local_train(&card_linear(card), xs.view(), yc, cfg, &mut rng)?.to_flat()
                }
                ModelParams::Gbdt { .. } => {
                    return Err(FedError::Instruction(InstructionError::ModelKind {
                        step: "train",
                        model: "gbdt",
                    }))
                }
            };
            let mut delta: Vec<f64> = new_flat.iter().zip(&global).map(|(a, b)| a - b).collect();
            if delta.iter().any(|d| !d.is_finite()) {
                return Err(FedError::LocalDiverged {
                    learning_rate: cfg.learning_rate,
                    epochs: cfg.epochs,
                });
            }
            match noise {
                None => {
                    let mut out: Vec<f64> = delta
                        .iter()
                        .map(|d| n * d.clamp(-DELTA_CLIP, DELTA_CLIP))
                        .collect();
                    out.push(n);
                    out.push(loss);
                    Ok(out)
                }
                Some(ns) => {
                    // Per-participant clipping; the update is unweighted so one
                    // institution's influence on the sum is bounded by `clip`.
                    let norm = delta.iter().map(|d| d * d).sum::<f64>().sqrt();
                    if norm > ns.clip {
                        let s = ns.clip / norm;
                        delta.iter_mut().for_each(|d| *d *= s);
                    }
                    delta.push(1.0);
                    Ok(delta)
                }
            }
        }
        Instruction::Gbdt { step, noise, .. } => {
            let y = select_labels(&local.train, &data.labels)?;
            let yc = first_label(&y)?;
            // The boosting cache holds binned rows of the cached columns: other columns
            // start it afresh.
            if cache
                .raw
                .as_ref()
                .is_none_or(|(f, _, _)| f != &data.features)
            {
                cache.gbdt = GbdtCache::default();
            }
            // Fill the column cache, then borrow it beside the boosting cache (no copy of
            // the participant's matrix per step).
            raw_columns(cache, local, &data.features)?;
            let LocalCache { raw, gbdt, .. } = cache;
            let (_, x, _) = raw
                .as_ref()
                .ok_or(FedError::Internal("column cache empty"))?;
            // Record level: a tree level takes a Poisson sample of the rows (the
            // participant's secret randomness) and clips their gradients.
            if let (
                Some(NoiseSpec {
                    sampling_rate: Some(q),
                    clip,
                    ..
                }),
                GbdtInstruction::Level { .. } | GbdtInstruction::LevelDelta { .. },
            ) = (noise, step)
            {
                let include = record_dp::poisson_sample(x.nrows(), *q, private);
                let sample = LevelSample {
                    include: &include,
                    grad_clip: *clip,
                };
                return Ok(gbdt_compute_sampled(
                    step,
                    x.view(),
                    yc,
                    gbdt,
                    Some(sample),
                )?);
            }
            Ok(gbdt_compute(step, x.view(), yc, gbdt)?)
        }
        Instruction::ScorecardHistogram {
            ranges, fine_bins, ..
        } => {
            let (x, _) = raw_columns(cache, local, &data.features)?;
            fedsilo_ml::gbdt::fine_histogram(x.view(), ranges, *fine_bins)
                .map_err(|e| FedError::from(ScorecardError::from(e)))
        }
        Instruction::ScorecardCounts { bins, .. } => {
            let y = select_labels(&local.train, &data.labels)?;
            let yc = first_label(&y)?;
            let (x, _) = raw_columns(cache, local, &data.features)?;
            scorecard_counts(x.view(), yc, bins).map_err(FedError::from)
        }
        Instruction::Evaluate { model, bins, .. } => {
            let y = select_labels(&local.holdout, &data.labels)?;
            let (_, xh) = prepared(cache, local, model)?;
            // One probability column per label (checked: the model's labels are the step's).
            let p = model.predict_standardized(xh.view())?;
            let mut out = Vec::with_capacity(y.ncols() * (2 * bins + 2));
            for (pc, yc) in p.columns().into_iter().zip(y.columns()) {
                let scores: Vec<f64> = pc.to_vec();
                let labels: Vec<f32> = yc.to_vec();
                let h = ScoreHistogram::from_scores(&scores, &labels, *bins);
                out.extend(h.to_flat());
                out.push(
                    scores
                        .iter()
                        .zip(&labels)
                        .map(|(&s, &yv)| clamp_loss(s, yv))
                        .sum(),
                );
                out.push(scores.len() as f64);
            }
            Ok(out)
        }
    }
}

/// The first (for these steps: the only) label column.
fn first_label(y: &Array2<f32>) -> Result<ArrayView1<'_, f32>, FedError> {
    y.columns()
        .into_iter()
        .next()
        .ok_or(FedError::Instruction(InstructionError::OneLabel {
            what: "this step",
            got: 0,
        }))
}

/// Raw train and hold-out matrices of `features`, cached by column list.
fn raw_columns<'c>(
    cache: &'c mut LocalCache,
    local: &LocalData,
    features: &[String],
) -> Result<(&'c Array2<f32>, &'c Array2<f32>), FedError> {
    let fresh = match &cache.raw {
        Some((f, _, _)) => f.as_slice() != features,
        None => true,
    };
    if fresh {
        cache.raw = Some((
            features.to_vec(),
            select_columns(&local.train, features)?,
            select_columns(&local.holdout, features)?,
        ));
    }
    match &cache.raw {
        Some((_, a, b)) => Ok((a, b)),
        None => Err(FedError::Internal("column cache empty")),
    }
}

/// Train and hold-out matrices in the form `model` reads: raw columns for trees, WOE columns
/// for a scorecard, standardised columns otherwise.
fn prepared<'c>(
    cache: &'c mut LocalCache,
    local: &LocalData,
    model: &TrainedModel,
) -> Result<(&'c Array2<f32>, &'c Array2<f32>), FedError> {
    match &model.params {
        ModelParams::Gbdt { .. } => raw_columns(cache, local, &model.features),
        ModelParams::Scorecard { card } => woe_columns(cache, local, &model.features, &card.woe),
        _ => standardized(cache, local, model),
    }
}

/// WOE columns of the selected features, cached by WOE table.
fn woe_columns<'c>(
    cache: &'c mut LocalCache,
    local: &LocalData,
    features: &[String],
    woe: &WoeTable,
) -> Result<(&'c Array2<f32>, &'c Array2<f32>), FedError> {
    let fresh = match &cache.woe {
        Some((w, _, _)) => w != woe,
        None => true,
    };
    if fresh {
        let t = |table: &Table| -> Result<Array2<f32>, FedError> {
            let x = select_columns(table, features)?;
            Ok(woe_transform(x.view(), woe)?)
        };
        cache.woe = Some((woe.clone(), t(&local.train)?, t(&local.holdout)?));
    }
    match &cache.woe {
        Some((_, a, b)) => Ok((a, b)),
        None => Err(FedError::Internal("WOE cache empty")),
    }
}

/// Standardised train and hold-out matrices for `model`'s columns, cached by standardiser.
fn standardized<'c>(
    cache: &'c mut LocalCache,
    local: &LocalData,
    model: &TrainedModel,
) -> Result<(&'c Array2<f32>, &'c Array2<f32>), FedError> {
    let fresh = match &cache.standardized {
        Some((f, s, _, _)) => f != &model.features || s != &model.standardizer,
        None => true,
    };
    if fresh {
        let xt = select_columns(&local.train, &model.features)?;
        let xh = select_columns(&local.holdout, &model.features)?;
        cache.standardized = Some((
            model.features.clone(),
            model.standardizer.clone(),
            model.standardizer.apply(xt.view())?,
            model.standardizer.apply(xh.view())?,
        ));
    }
    match &cache.standardized {
        Some((_, _, a, b)) => Ok((a, b)),
        None => Err(FedError::Internal("standardisation cache empty")),
    }
}

#[cfg(test)]
mod gather_tests {
    use super::*;

    /// The one-pass gather gives `select(Axis(1), ..)`'s values, column-major, from row-major
    /// and from column-major input alike (several row blocks, columns reordered and repeated).
    #[test]
    fn gather_columns_equals_select() {
        let (n, w) = (1000, 9);
        let x = Array2::from_shape_fn((n, w), |(r, c)| (r * 31 + c * 7) as f32 * 0.5);
        let cols = [8, 0, 3, 3, 5];
        let want = x.select(Axis(1), &cols);
        let got = gather_columns(x.view(), &cols);
        assert_eq!(got, want);
        assert!(got.t().as_slice().is_some(), "column-major");
        let mut xf = Array2::<f32>::zeros((n, w).f());
        xf.assign(&x);
        assert_eq!(gather_columns(xf.view(), &cols), want);
        assert_eq!(gather_columns(x.view(), &[]).dim(), (n, 0));
    }
}
