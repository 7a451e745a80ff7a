//! Vertical models of a scenario (`[[vertical_models]]`): the `fedsilo_vertical` parties —
//! vertical logistic regression ([`fedsilo_vertical::lr`]) or SecureBoost
//! ([`fedsilo_vertical::boost`]) — trained on the customers a `[[psi]]` job aligned, each
//! party on its own columns in its own row order, every message crossing an in-memory relay
//! (the coordinator's only role in the design: it relays, it computes nothing).
//!
//! The rows: the PSI job's alignments as the parties persisted them (the active party's rows
//! and each passive party's, pair by pair, so `delivery = "both"`); with several passive
//! parties the customers all of them share with the active party, in the active party's row
//! order (each passive party is told the positions of its alignment that are kept). A
//! seeded `holdout_fraction` of them is held out; each party standardises (LR) or bins
//! (GBDT) its own columns on the training rows, as `fedsilo_task::fit_pooled` would.
//!
//! The references, computed by the simulator outside the protocol (no real federation
//! could): the **pooled** model — the same model, same parameters, trained on the joined
//! table (every party's columns side by side on the same training rows) by the project's
//! own code ([`fedsilo_vertical::lr::fit_joined`], [`fedsilo_ml::gbdt::fit_pooled`]) — and
//! the **active party alone** (its columns only, same rows, same parameters). All three are
//! scored on the same hold-out rows; the vertical one jointly, as a deployment would: the
//! passive parties send partial logits (LR) or their split directions (GBDT).

use std::collections::BTreeMap;
use std::time::Instant;

use fedsilo_ml::gbdt::GbdtModel;
use fedsilo_ml::linear::{sigmoid, LinearParams};
use fedsilo_ml::metrics::{BinaryMetrics, ScoreHistogram};
use fedsilo_vertical::boost::{ActiveBoost, BoostToActive, BoostToPassive, PassiveBoost, Routes};
use fedsilo_vertical::lr::{self, ActiveLr, LrToActive, LrToPassive, PassiveLr};
use fedsilo_vertical::{SecretKey, VerticalError};
use ndarray::{concatenate, Array1, Array2, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::federation::{seed_bytes, Federation};
use crate::memory::PsiObserved;
use crate::report::{
    InstitutionComparison, Metrics, ModelReport, VerticalModelParty, VerticalModelReport,
};
use crate::scenario::{Scenario, VerticalModelEntry, VerticalModelKind};
use crate::vertical::VerticalPart;

/// Why a vertical model could not be trained or scored.
#[derive(Debug, thiserror::Error)]
pub enum VerticalModelError {
    #[error("vertical model '{model}': {what}")]
    Setup { model: String, what: String },
    #[error("vertical model '{model}': the protocol")]
    Protocol {
        model: String,
        #[source]
        source: VerticalError,
    },
    #[error("vertical model '{model}': the pooled reference")]
    Gbdt {
        model: String,
        #[source]
        source: fedsilo_ml::gbdt::GbdtError,
    },
    #[error("vertical model '{model}': the pooled reference")]
    Linear {
        model: String,
        #[source]
        source: fedsilo_ml::linear::LinearError,
    },
}

/// The aligned customers of a vertical model: per party (active first), its row of each.
#[derive(Clone, Debug)]
pub struct AlignedRows {
    pub institutions: Vec<String>,
    /// `rows[p][i]`: party `p`'s row of aligned customer `i`.
    pub rows: Vec<Vec<usize>>,
    /// For each passive party, the positions of its PSI alignment that are kept (what the
    /// active party tells it when there are several passive parties).
    pub kept_positions: Vec<Vec<u32>>,
}

/// One vertical model's run: the report entry and what the tests compare.
#[derive(Clone, Debug)]
pub struct VerticalRun {
    pub report: ModelReport,
    /// Hold-out scores (probabilities) of the vertical model, the pooled reference and the
    /// active party alone, and the hold-out labels.
    pub scores: [Vec<f64>; 3],
    pub labels: Vec<f32>,
    /// LR: the flat parameters (active coefficients, each passive party's, intercept) of the
    /// vertical model and of the pooled reference.
    pub lr_params: Option<(Vec<f64>, Vec<f64>)>,
}

/// Traffic through the relay, each way: messages and payload bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Traffic {
    to_passive: (u64, u64),
    to_active: (u64, u64),
}

impl Traffic {
    fn down(&mut self, bytes: usize) {
        self.to_passive.0 += 1;
        self.to_passive.1 += bytes as u64;
    }
    fn up(&mut self, bytes: usize) {
        self.to_active.0 += 1;
        self.to_active.1 += bytes as u64;
    }
}

/// The in-memory relay both protocols run through: every message to a passive party is
/// counted and handed to it, every answer counted and handed to the active party, whose
/// replies go round again until it sends none.
fn relay<D, U>(
    traffic: &mut Traffic,
    mut to_passive: Vec<(usize, D)>,
    down_bytes: fn(&D) -> usize,
    up_bytes: fn(&U) -> usize,
    mut passive: impl FnMut(usize, D) -> Result<Option<U>, VerticalModelError>,
    mut active: impl FnMut(usize, U) -> Result<Vec<(usize, D)>, VerticalModelError>,
) -> Result<(), VerticalModelError> {
    while !to_passive.is_empty() {
        let mut to_active = Vec::new();
        for (k, msg) in to_passive.drain(..) {
            traffic.down(down_bytes(&msg));
            if let Some(answer) = passive(k, msg)? {
                traffic.up(up_bytes(&answer));
                to_active.push((k, answer));
            }
        }
        for (k, msg) in to_active {
            to_passive.extend(active(k, msg)?);
        }
    }
    Ok(())
}

/// Trains and scores every vertical model of the scenario, in order.
pub fn run_all(
    s: &Scenario,
    fed: &Federation,
    obs: &PsiObserved,
) -> Result<Vec<VerticalRun>, VerticalModelError> {
    let total = s.vertical_models.len();
    s.vertical_models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            tracing::info!(model = %m.name, kind = m.kind.name(), "vertical model {}/{total}: training", i + 1);
            let started = Instant::now();
            let run = run_one(s, fed, obs, m)?;
            tracing::info!(
                model = %m.name,
                seconds = started.elapsed().as_secs_f64(),
                auc = run.report.final_metrics.auc,
                "vertical model {}/{total}: done",
                i + 1
            );
            Ok(run)
        })
        .collect()
}

fn setup(m: &VerticalModelEntry, what: impl Into<String>) -> VerticalModelError {
    VerticalModelError::Setup {
        model: m.name.clone(),
        what: what.into(),
    }
}

/// The customers every party of the model's PSI job holds, from the parties' alignments.
pub fn aligned_rows(
    s: &Scenario,
    obs: &PsiObserved,
    m: &VerticalModelEntry,
) -> Result<AlignedRows, VerticalModelError> {
    let entry = s
        .psi
        .iter()
        .find(|p| p.name == m.psi)
        .ok_or_else(|| setup(m, format!("no [[psi]] job '{}'", m.psi)))?;
    let spec = s.psi_spec(entry);
    // The latest alignment `who` reported with `peer` for the job.
    let alignment = |who: &str, peer: &str| {
        obs.alignments
            .iter()
            .filter(|(i, a)| i == who && a.job_id == entry.name && a.peer == peer)
            .max_by_key(|(_, a)| a.session)
            .map(|(_, a)| a)
    };
    let mut maps: Vec<BTreeMap<u32, (u32, u32)>> = Vec::new();
    for p in &spec.passive {
        let (Some(a), Some(b)) = (alignment(&spec.active, p), alignment(p, &spec.active)) else {
            return Err(setup(
                m,
                format!(
                    "PSI job '{}' has no alignment of {} with {p}",
                    entry.name, spec.active
                ),
            ));
        };
        let (Some(ra), Some(rb)) = (&a.rows, &b.rows) else {
            return Err(setup(
                m,
                format!(
                    "{p} did not receive its aligned rows (the PSI job needs delivery = \"both\")"
                ),
            ));
        };
        if ra.len() != rb.len() {
            return Err(setup(
                m,
                format!("the alignments with {p} differ in length"),
            ));
        }
        maps.push(
            ra.iter()
                .zip(rb)
                .enumerate()
                .map(|(pos, (&x, &y))| (x, (pos as u32, y)))
                .collect(),
        );
    }
    let first = maps
        .first()
        .ok_or_else(|| setup(m, "the PSI job has no passive party"))?;
    let mut rows = vec![Vec::new(); maps.len() + 1];
    let mut kept_positions = vec![Vec::new(); maps.len()];
    for &ra in first.keys() {
        let hits: Option<Vec<(u32, u32)>> = maps.iter().map(|mp| mp.get(&ra).copied()).collect();
        let Some(hits) = hits else { continue };
        rows[0].push(ra as usize);
        for (k, (pos, rb)) in hits.into_iter().enumerate() {
            rows[k + 1].push(rb as usize);
            kept_positions[k].push(pos);
        }
    }
    let mut institutions = vec![spec.active.clone()];
    institutions.extend(spec.passive.iter().cloned());
    Ok(AlignedRows {
        institutions,
        rows,
        kept_positions,
    })
}

/// A party's training and hold-out columns.
struct PartyData<'a> {
    part: &'a VerticalPart,
    train: Array2<f32>,
    holdout: Array2<f32>,
}

fn run_one(
    s: &Scenario,
    fed: &Federation,
    obs: &PsiObserved,
    m: &VerticalModelEntry,
) -> Result<VerticalRun, VerticalModelError> {
    let al = aligned_rows(s, obs, m)?;
    train_on(s, fed, m, &al)
}

/// A model's data: every party's training and hold-out columns, the labels.
struct Prepared<'a> {
    entry: &'a crate::scenario::PsiEntry,
    parties: Vec<PartyData<'a>>,
    train: Vec<usize>,
    hold: Vec<usize>,
    y_train: Array1<f32>,
    y_hold: Array1<f32>,
}

fn prepare<'a>(
    s: &'a Scenario,
    fed: &'a Federation,
    m: &VerticalModelEntry,
    al: &AlignedRows,
) -> Result<Prepared<'a>, VerticalModelError> {
    let entry = s
        .psi
        .iter()
        .find(|p| p.name == m.psi)
        .ok_or_else(|| setup(m, format!("no [[psi]] job '{}'", m.psi)))?;
    let v = fed
        .vertical
        .get(&entry.dataset)
        .ok_or_else(|| setup(m, format!("no vertical dataset '{}'", entry.dataset)))?;
    let n = al.rows.first().map_or(0, Vec::len);
    if n < 10 {
        return Err(setup(
            m,
            format!("{n} aligned customers: too few to train and hold out"),
        ));
    }
    // The seeded hold-out positions.
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::from_seed(seed_bytes(
        s.seed,
        &format!("vertical-holdout/{}", m.name),
    ));
    order.shuffle(&mut rng);
    let n_hold = ((n as f64) * s.holdout_fraction)
        .round()
        .clamp(1.0, (n - 1) as f64) as usize;
    let mut hold: Vec<usize> = order[..n_hold].to_vec();
    let mut train: Vec<usize> = order[n_hold..].to_vec();
    hold.sort_unstable();
    train.sort_unstable();
    let mut parties = Vec::with_capacity(al.institutions.len());
    for (who, rows) in al.institutions.iter().zip(&al.rows) {
        let part = v
            .part(who)
            .ok_or_else(|| setup(m, format!("'{who}' holds no part of '{}'", entry.dataset)))?;
        let pick = |pos: &[usize]| {
            let r: Vec<usize> = pos.iter().filter_map(|&i| rows.get(i).copied()).collect();
            part.table.x.select(Axis(0), &r)
        };
        parties.push(PartyData {
            part,
            train: pick(&train),
            holdout: pick(&hold),
        });
    }
    let active = parties.first().ok_or_else(|| setup(m, "no active party"))?;
    if active.part.table.labels.ncols() == 0 {
        return Err(setup(
            m,
            format!(
                "the active party {} holds no labels",
                active.part.institution
            ),
        ));
    }
    let active_rows = al.rows.first().ok_or_else(|| setup(m, "no active party"))?;
    let label = |pos: &[usize]| -> Array1<f32> {
        pos.iter()
            .filter_map(|&i| active_rows.get(i))
            .map(|&r| active.part.table.labels.get((r, 0)).copied().unwrap_or(0.0))
            .collect()
    };
    let y_train = label(&train);
    let y_hold = label(&hold);
    Ok(Prepared {
        entry,
        parties,
        train,
        hold,
        y_train,
        y_hold,
    })
}

/// The references alone, without the protocol: hold-out AUCs of model `m`'s parameters on
/// the joined table and on the active party's columns (for choosing parameters).
pub fn references(
    s: &Scenario,
    fed: &Federation,
    m: &VerticalModelEntry,
    al: &AlignedRows,
) -> Result<(f64, f64), VerticalModelError> {
    let d = prepare(s, fed, m, al)?;
    let [_, pooled, alone] = match m.kind {
        VerticalModelKind::VerticalLogistic => logistic(s, m, &d.parties, &d.y_train, false)?,
        VerticalModelKind::VerticalGbdt => boosting(s, m, &d.parties, &d.y_train, false)?,
    }
    .scores;
    let y: Vec<f32> = d.y_hold.to_vec();
    Ok((
        fedsilo_ml::metrics::auc(&pooled, &y),
        fedsilo_ml::metrics::auc(&alone, &y),
    ))
}

/// Trains and scores model `m` on the aligned customers `al` (from [`aligned_rows`]).
pub fn train_on(
    s: &Scenario,
    fed: &Federation,
    m: &VerticalModelEntry,
    al: &AlignedRows,
) -> Result<VerticalRun, VerticalModelError> {
    let Prepared {
        entry,
        parties,
        train,
        hold,
        y_train,
        y_hold,
    } = prepare(s, fed, m, al)?;
    let n = train.len() + hold.len();
    let active = parties.first().ok_or_else(|| setup(m, "no active party"))?;
    let mut out = match m.kind {
        VerticalModelKind::VerticalLogistic => logistic(s, m, &parties, &y_train, true)?,
        VerticalModelKind::VerticalGbdt => boosting(s, m, &parties, &y_train, true)?,
    };
    // With several partners, each is told which positions of its alignment are kept.
    if al.kept_positions.len() > 1 {
        for k in &al.kept_positions {
            out.traffic.down(4 + 4 * k.len());
        }
    }
    let y_hold_v: Vec<f32> = y_hold.to_vec();
    let metrics = |p: &[f64]| Metrics::from(&BinaryMetrics::from_scores(p, &y_hold_v));
    let [vert, pooled, alone] = &out.scores;
    let (fm, pm, am) = (metrics(vert), metrics(pooled), metrics(alone));
    let hist = ScoreHistogram::from_scores(vert, &y_hold_v, 100);
    let max_score_diff = vert
        .iter()
        .zip(pooled)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let active_name = active.part.institution.clone();
    let passive_names: Vec<&str> = al.institutions.iter().skip(1).map(String::as_str).collect();
    let model_kind = match m.kind {
        VerticalModelKind::VerticalLogistic => {
            let c = m.lr_config();
            format!(
                "vertical_logistic ({} iterations, {}, l2 {})",
                c.iterations,
                optimizer_name(&c.optimizer),
                c.l2
            )
        }
        VerticalModelKind::VerticalGbdt => {
            let p = m.gbdt_params();
            format!(
                "vertical_gbdt ({} trees, depth {}, {} bins)",
                p.n_trees, p.max_depth, p.max_bins
            )
        }
    };
    let mut notes = vec![
        format!(
            "Trained by the parties' own protocol code (fedsilo_vertical) on the {n} customers the PSI job '{}' found at {} — {} for training, {} held out (seeded) — each party on its own columns in its own row order; every message crossed an in-memory relay, as the coordinator relays in the design.",
            entry.name,
            if passive_names.len() > 1 { "every party" } else { "both parties" },
            train.len(),
            hold.len()
        ),
        format!(
            "Pooled reference: the same model with the same parameters trained by the simulator on the joined table (every party's columns side by side on the same training rows), which no real federation could do. {} alone: the same on its own columns only (same rows, same parameters). All three are scored on the same hold-out customers; the vertical model jointly, as a deployment would ({}).",
            active_name,
            match m.kind {
                VerticalModelKind::VerticalLogistic => "each partner sends its partial logits of the hold-out rows",
                VerticalModelKind::VerticalGbdt => "each partner sends the direction of every hold-out row at each of its splits",
            }
        ),
    ];
    if passive_names.len() > 1 {
        notes.push(format!(
            "With {} partners the model uses the customers all of them share with {active_name}; {active_name} tells each partner which positions of its alignment are kept, so each partner learns which of the customers it shares with {active_name} are also at the other partners.",
            passive_names.len()
        ));
    }
    let learned = learned(m.kind, &active_name, &passive_names);
    let report = ModelReport {
        name: m.name.clone(),
        task: format!("{:?}", m.task).to_lowercase(),
        model_kind,
        curve: Vec::new(),
        final_metrics: fm.clone(),
        pooled_metrics: Some(pm.clone()),
        roc: hist.roc_curve(),
        ks_curve: hist.ks_curve(),
        gains: hist.gains_curve(),
        comparison: vec![InstitutionComparison {
            institution: active_name.clone(),
            local_only_auc: am.auc,
            federated_auc: fm.auc,
            pooled_auc: pm.auc,
        }],
        notes,
        scorecard: None,
        vertical: Some(VerticalModelReport {
            psi_job: entry.name.clone(),
            dataset: entry.dataset.clone(),
            active: active_name,
            parties: parties
                .iter()
                .enumerate()
                .map(|(i, p)| VerticalModelParty {
                    institution: p.part.institution.clone(),
                    role: if i == 0 { "active" } else { "passive" }.into(),
                    columns: p.part.columns.clone(),
                    encoded_columns: p.part.table.n_features(),
                })
                .collect(),
            aligned_rows: n,
            train_rows: train.len(),
            holdout_rows: hold.len(),
            iterations: out.iterations,
            trees: out.trees,
            key_bits: m.key_bits,
            messages_active_to_passive: out.traffic.to_passive.0,
            messages_passive_to_active: out.traffic.to_active.0,
            bytes_active_to_passive: out.traffic.to_passive.1,
            bytes_passive_to_active: out.traffic.to_active.1,
            train_seconds: out.train_seconds,
            score_seconds: out.score_seconds,
            active_alone_metrics: am,
            max_score_diff_vs_pooled: max_score_diff,
            max_coef_diff_vs_pooled: out.lr_params.as_ref().map(|(a, b)| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f64::max)
            }),
            trees_match_pooled: out.trees_match,
            learned,
        }),
    };
    Ok(VerticalRun {
        report,
        scores: out.scores,
        labels: y_hold_v,
        lr_params: out.lr_params,
    })
}

fn optimizer_name(o: &fedsilo_ml::optim::ServerOptimizer) -> String {
    use fedsilo_ml::optim::ServerOptimizer::*;
    match o {
        FedAvg { lr } => format!("gradient descent, step {lr}"),
        FedAdam { lr, .. } => format!("Adam, step {lr}"),
        FedYogi { lr, .. } => format!("Yogi, step {lr}"),
    }
}

/// What each party and the relay learn, as ARCHITECTURE.md (`vertical`) states it.
fn learned(kind: VerticalModelKind, active: &str, passive: &[&str]) -> Vec<String> {
    let partners = passive.join(", ");
    let mut l = match kind {
        VerticalModelKind::VerticalLogistic => vec![
            format!("{active} (active, label holder, key owner): each partner's partial logits X_k·w_k of every training row at every iteration and of every hold-out row — it needs the exact logit for the exact sigmoid, and over many iterations these reveal the span of a partner's columns (not the columns); never a partner's feature, weight or gradient."),
            format!("{partners} (passive): ciphertexts of the residuals under {active}'s Paillier key, and its own gradient (returned masked by its own mask); never a label, residual, logit or score."),
        ],
        VerticalModelKind::VerticalGbdt => vec![
            format!("{active} (active, label holder, key owner): per requested node the per-bin gradient and hessian sums of each partner column (decrypted), the chosen partner column's index and bin (never its threshold or a value), and which rows go left at every node — training rows and hold-out rows."),
            format!("{partners} (passive): ciphertexts of the gradients and hessians under {active}'s key, and the rows of every node it is asked about (which customers the trees group together: SecureBoost's instance-space leak); its thresholds stay its own."),
        ],
    };
    l.push(
        "The relay (the coordinator's role): only the messages' number and length were it sealed end to end between the two parties, as the design requires; here the relay is in memory and unsealed, so what it carries — ciphertexts, masked values, row indices and (LR) the partial logits in the clear — is what the wiring must seal.".into(),
    );
    l
}

/// What one kind of model produced.
struct Trained {
    scores: [Vec<f64>; 3],
    lr_params: Option<(Vec<f64>, Vec<f64>)>,
    trees_match: Option<bool>,
    iterations: Option<u32>,
    trees: Option<usize>,
    traffic: Traffic,
    train_seconds: f64,
    score_seconds: f64,
}

fn key(
    s: &Scenario,
    m: &VerticalModelEntry,
) -> Result<(SecretKey, ChaCha20Rng), VerticalModelError> {
    let mut rng =
        ChaCha20Rng::from_seed(seed_bytes(s.seed, &format!("vertical/{}/active", m.name)));
    let sk = SecretKey::generate(&mut rng, m.key_bits).map_err(|source| {
        VerticalModelError::Protocol {
            model: m.name.clone(),
            source,
        }
    })?;
    Ok((sk, rng))
}

fn passive_rngs(s: &Scenario, m: &VerticalModelEntry, parties: &[PartyData]) -> Vec<ChaCha20Rng> {
    parties
        .iter()
        .skip(1)
        .map(|p| {
            ChaCha20Rng::from_seed(seed_bytes(
                s.seed,
                &format!("vertical/{}/{}", m.name, p.part.institution),
            ))
        })
        .collect()
}

fn columns_side_by_side(parts: &[ArrayView2<f32>]) -> Result<Array2<f32>, String> {
    concatenate(Axis(1), parts).map_err(|e| e.to_string())
}

fn ct_bytes(c: &[fedsilo_vertical::WireCiphertext]) -> usize {
    c.iter().map(|c| c.0.len()).sum()
}

fn lr_down_bytes(msg: &LrToPassive) -> usize {
    match msg {
        LrToPassive::Setup { public_key, .. } => public_key.0.len() + 8,
        LrToPassive::Residuals { residuals, .. } => 4 + ct_bytes(residuals),
        LrToPassive::Gradient { masked, .. } => {
            4 + masked.iter().map(|v| 1 + v.magnitude.len()).sum::<usize>()
        }
    }
}

fn lr_up_bytes(msg: &LrToActive) -> usize {
    match msg {
        LrToActive::Logits { logits, .. } => 4 + 8 * logits.len(),
        LrToActive::MaskedGradient { gradient, .. } => 4 + ct_bytes(gradient),
    }
}

fn logistic(
    s: &Scenario,
    m: &VerticalModelEntry,
    parties: &[PartyData],
    y: &Array1<f32>,
    run_protocol: bool,
) -> Result<Trained, VerticalModelError> {
    let cfg = m.lr_config();
    let protocol = |source| VerticalModelError::Protocol {
        model: m.name.clone(),
        source,
    };
    // Each party standardises its own columns on its training rows.
    let mut train = Vec::with_capacity(parties.len());
    let mut hold = Vec::with_capacity(parties.len());
    for p in parties {
        let st = fedsilo_task::pooled::standardizer_of(p.train.view());
        let err = |e: fedsilo_task::InstructionError| setup(m, e.to_string());
        train.push(st.apply(p.train.view()).map_err(err)?);
        hold.push(st.apply(p.holdout.view()).map_err(err)?);
    }
    let (xa, xp) = train.split_first().ok_or_else(|| setup(m, "no parties"))?;
    let (ha, hp) = hold.split_first().ok_or_else(|| setup(m, "no parties"))?;
    // The references, with the same configuration.
    let views: Vec<ArrayView2<f32>> = train.iter().map(|x| x.view()).collect();
    let joined = columns_side_by_side(&views).map_err(|e| setup(m, e))?;
    let views: Vec<ArrayView2<f32>> = hold.iter().map(|x| x.view()).collect();
    let joined_hold = columns_side_by_side(&views).map_err(|e| setup(m, e))?;
    let pooled = lr::fit_joined(&cfg, joined.view(), y.view()).map_err(protocol)?;
    let alone = lr::fit_joined(&cfg, xa.view(), y.view()).map_err(protocol)?;
    let linear = |source| VerticalModelError::Linear {
        model: m.name.clone(),
        source,
    };
    let score = |params: &[f64], x: ArrayView2<f32>| -> Result<Vec<f64>, VerticalModelError> {
        let p = LinearParams::from_flat(params).map_err(linear)?;
        fedsilo_ml::linear::predict_proba(&p, x).map_err(linear)
    };
    let pooled_scores = score(&pooled, joined_hold.view())?;
    let alone_scores = score(&alone, ha.view())?;
    if !run_protocol {
        return Ok(Trained {
            scores: [pooled_scores.clone(), pooled_scores, alone_scores],
            lr_params: None,
            trees_match: None,
            iterations: Some(cfg.iterations),
            trees: None,
            traffic: Traffic::default(),
            train_seconds: 0.0,
            score_seconds: 0.0,
        });
    }
    let dims: Vec<usize> = xp.iter().map(|x| x.ncols()).collect();
    let (sk, mut rng) = key(s, m)?;
    let mut prng = passive_rngs(s, m, parties);
    let mut traffic = Traffic::default();
    let started = Instant::now();
    let (mut active, to_passive) =
        ActiveLr::new(cfg.clone(), sk, xa.view(), y.view(), &dims).map_err(protocol)?;
    let mut passive: Vec<PassiveLr> = xp
        .iter()
        .map(|x| PassiveLr::new(cfg.clone(), x.view()).map(|p| p.require_key_bits(m.key_bits)))
        .collect::<Result<_, _>>()
        .map_err(protocol)?;
    relay(
        &mut traffic,
        to_passive,
        lr_down_bytes,
        lr_up_bytes,
        |k, msg| {
            let (Some(party), Some(r)) = (passive.get_mut(k), prng.get_mut(k)) else {
                return Err(setup(m, format!("a message to an unknown party {k}")));
            };
            party.handle(r, msg).map_err(protocol)
        },
        |k, msg| active.handle(&mut rng, k, msg).map_err(protocol),
    )?;
    if !active.is_done() || !passive.iter().all(PassiveLr::is_done) {
        return Err(setup(m, "the protocol stopped before every party finished"));
    }
    let train_seconds = started.elapsed().as_secs_f64();
    // Scoring the hold-out rows jointly: each partner's partial logits to the active party.
    let started = Instant::now();
    let mut partial = Vec::with_capacity(passive.len());
    for (p, x) in passive.iter().zip(hp) {
        let u = p.partial_logits(x.view()).map_err(protocol)?;
        traffic.up(4 + 8 * u.len());
        partial.push(u);
    }
    let model = active.model();
    let vertical: Vec<f64> = model
        .margins(ha.view(), &partial)
        .map_err(protocol)?
        .into_iter()
        .map(sigmoid)
        .collect();
    let score_seconds = started.elapsed().as_secs_f64();
    let mut flat = model.coef.clone();
    for p in &passive {
        flat.extend_from_slice(p.coef());
    }
    flat.push(model.intercept);
    Ok(Trained {
        scores: [vertical, pooled_scores, alone_scores],
        lr_params: Some((flat, pooled)),
        trees_match: None,
        iterations: Some(cfg.iterations),
        trees: None,
        traffic,
        train_seconds,
        score_seconds,
    })
}

fn boost_down_bytes(msg: &BoostToPassive) -> usize {
    match msg {
        BoostToPassive::Setup { public_key, .. } => public_key.0.len() + 12,
        BoostToPassive::Gradients { gh, .. } => 4 + ct_bytes(gh),
        BoostToPassive::Histograms { nodes, .. } => {
            4 + nodes.iter().map(|n| 4 + 4 * n.rows.len()).sum::<usize>()
        }
        BoostToPassive::Split { splits, .. } => {
            4 + splits.iter().map(|s| 10 + 4 * s.rows.len()).sum::<usize>()
        }
        BoostToPassive::Finished => 1,
    }
}

fn boost_up_bytes(msg: &BoostToActive) -> usize {
    match msg {
        BoostToActive::Histograms { packed, .. } => 4 + ct_bytes(packed),
        BoostToActive::Routing { left, .. } => {
            4 + left.iter().map(|l| 4 + l.len().div_ceil(8)).sum::<usize>()
        }
    }
}

fn boosting(
    s: &Scenario,
    m: &VerticalModelEntry,
    parties: &[PartyData],
    y: &Array1<f32>,
    run_protocol: bool,
) -> Result<Trained, VerticalModelError> {
    let params = m.gbdt_params();
    let protocol = |source| VerticalModelError::Protocol {
        model: m.name.clone(),
        source,
    };
    let gbdt = |source| VerticalModelError::Gbdt {
        model: m.name.clone(),
        source,
    };
    let (first, rest) = parties
        .split_first()
        .ok_or_else(|| setup(m, "no parties"))?;
    let dims: Vec<usize> = rest.iter().map(|p| p.train.ncols()).collect();
    // The references, with the same parameters, on raw columns as boosting takes them.
    let views: Vec<ArrayView2<f32>> = parties.iter().map(|p| p.train.view()).collect();
    let joined = columns_side_by_side(&views).map_err(|e| setup(m, e))?;
    let views: Vec<ArrayView2<f32>> = parties.iter().map(|p| p.holdout.view()).collect();
    let joined_hold = columns_side_by_side(&views).map_err(|e| setup(m, e))?;
    let pooled = fedsilo_ml::gbdt::fit_pooled(joined.view(), y.view(), &params).map_err(gbdt)?;
    let alone =
        fedsilo_ml::gbdt::fit_pooled(first.train.view(), y.view(), &params).map_err(gbdt)?;
    let pooled_scores = pooled.predict_proba(joined_hold.view()).map_err(gbdt)?;
    let alone_scores = alone.predict_proba(first.holdout.view()).map_err(gbdt)?;
    if !run_protocol {
        return Ok(Trained {
            scores: [pooled_scores.clone(), pooled_scores, alone_scores],
            lr_params: None,
            trees_match: None,
            iterations: None,
            trees: Some(pooled.trees.len()),
            traffic: Traffic::default(),
            train_seconds: 0.0,
            score_seconds: 0.0,
        });
    }
    let (sk, mut rng) = key(s, m)?;
    let mut prng = passive_rngs(s, m, parties);
    let mut traffic = Traffic::default();
    let started = Instant::now();
    let (mut active, to_passive) = ActiveBoost::new(
        &mut rng,
        params.clone(),
        sk,
        first.train.view(),
        y.view(),
        &dims,
    )
    .map_err(protocol)?;
    let mut passive: Vec<PassiveBoost> = rest
        .iter()
        .map(|p| {
            PassiveBoost::new(params.clone(), p.train.view())
                .map(|p| p.require_key_bits(m.key_bits))
        })
        .collect::<Result<_, _>>()
        .map_err(protocol)?;
    relay(
        &mut traffic,
        to_passive,
        boost_down_bytes,
        boost_up_bytes,
        |k, msg| {
            let (Some(party), Some(r)) = (passive.get_mut(k), prng.get_mut(k)) else {
                return Err(setup(m, format!("a message to an unknown party {k}")));
            };
            party.handle(r, msg).map_err(protocol)
        },
        |k, msg| active.handle(&mut rng, k, msg).map_err(protocol),
    )?;
    if !active.is_done() || !passive.iter().all(PassiveBoost::is_done) {
        return Err(setup(m, "the protocol stopped before every party finished"));
    }
    let train_seconds = started.elapsed().as_secs_f64();
    let model = active.model().map_err(protocol)?;
    // Scoring the hold-out rows jointly: each partner routes them at its own splits.
    let started = Instant::now();
    let mut routes: Vec<Routes> = Vec::with_capacity(passive.len());
    for (p, d) in passive.iter().zip(rest) {
        let r = p.route(d.holdout.view()).map_err(protocol)?;
        traffic.up(4 + r.values().map(|l| 8 + l.len().div_ceil(8)).sum::<usize>());
        routes.push(r);
    }
    let vertical: Vec<f64> = model
        .predict_margin(first.holdout.view(), &routes)
        .map_err(protocol)?
        .into_iter()
        .map(sigmoid)
        .collect();
    let score_seconds = started.elapsed().as_secs_f64();
    let offsets: Vec<usize> = std::iter::once(first.train.ncols())
        .chain(dims.iter().copied())
        .scan(0, |acc, d| {
            let start = *acc;
            *acc += d;
            Some(start)
        })
        .skip(1)
        .collect();
    let trees_match = trees_equal(&model, &passive, &offsets, &pooled);
    Ok(Trained {
        scores: [vertical, pooled_scores, alone_scores],
        lr_params: None,
        trees_match: Some(trees_match),
        iterations: None,
        trees: Some(model.trees.len()),
        traffic,
        train_seconds,
        score_seconds,
    })
}

/// Whether the vertical trees are the pooled ones node for node
/// ([`fedsilo_vertical::boost::VerticalGbdtModel::matches_pooled`]), the passive splits as
/// their owners hold them.
pub fn trees_equal(
    model: &fedsilo_vertical::boost::VerticalGbdtModel,
    passive: &[PassiveBoost],
    offsets: &[usize],
    pooled: &GbdtModel,
) -> bool {
    model
        .matches_pooled(pooled, offsets, |k, t, n| {
            passive.get(k).and_then(|p| p.trees().splits.get(&(t, n)))
        })
        .is_ok()
}
