//! What the coordinator sends (instructions) and what a participant reads from disk (model
//! files) never panics a participant: property tests feed mutated JSON instructions, mutated
//! bytes, random-sized model parameters and random model files through decode → check →
//! compute on small tables. Every case ends in `Ok` or a typed error, and the check and the
//! computation agree: a step the check accepts computes exactly the length it announced, a
//! step it refuses is refused by `compute` too.

use std::sync::OnceLock;

use fedsilo_ml::linear::{LinearParams, LocalTrainConfig};
use fedsilo_ml::mlp::{MlpParams, MlpSpec};
use fedsilo_ml::table::Table;
use fedsilo_task::{
    check_instruction, compute, FedError, Instruction, JobData, JobSpec, LocalCache, LocalData,
    ModelArtifact, ModelParams, Plan, Standardizer, TrainedModel,
};
use ndarray::Array2;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const FEATURES: [&str; 5] = ["a", "b", "c", "k=u", "k=v"];
const LABELS: [&str; 2] = ["y", "z"];

/// A participant: numeric a, b (with missing values), c, a one-hot pair k=u/k=v, labels y
/// (driven by a and k) and z (driven by c).
fn participant(seed: u64, n: usize) -> LocalData {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut x = Array2::<f32>::zeros((n, FEATURES.len()));
    let mut y = Array2::<f32>::zeros((n, LABELS.len()));
    for r in 0..n {
        let a: f32 = rng.random_range(-2.0..2.0);
        let b: f32 = rng.random_range(0.0..1e4);
        let c: f32 = rng.random_range(-1.0..1.0);
        let u = rng.random::<f32>() < 0.5;
        x[[r, 0]] = a;
        x[[r, 1]] = if r % 17 == 0 { f32::NAN } else { b };
        x[[r, 2]] = c;
        x[[r, 3]] = if u { 1.0 } else { 0.0 };
        x[[r, 4]] = if u { 0.0 } else { 1.0 };
        let z1 = 1.5 * a + if u { 0.8 } else { -0.8 };
        y[[r, 0]] = if rng.random::<f32>() < 1.0 / (1.0 + (-z1).exp()) {
            1.0
        } else {
            0.0
        };
        y[[r, 1]] = if rng.random::<f32>() < 1.0 / (1.0 + (-2.0 * c).exp()) {
            1.0
        } else {
            0.0
        };
    }
    let t = Table {
        feature_names: FEATURES.iter().map(|s| s.to_string()).collect(),
        x,
        label_names: LABELS.iter().map(|s| s.to_string()).collect(),
        labels: y,
        ids: (0..n).map(|i| i.to_string()).collect(),
    };
    let (train, holdout) = t.split_holdout(0.25, seed);
    LocalData { train, holdout }
}

fn participants() -> &'static [LocalData] {
    static P: OnceLock<Vec<LocalData>> = OnceLock::new();
    P.get_or_init(|| vec![participant(1, 240), participant(2, 200)])
}

fn spec(model: Value, labels: &[&str], dp: bool) -> JobSpec {
    let mut s = json!({
        "job_id": "fuzz",
        "dataset": "d",
        "model": model,
        "labels": labels,
        "rounds": 3,
        "eval_every": 2,
        "hist_bins": 20,
        "seed": 7,
        "learning": { "local_epochs": 1, "batch_size": 32 },
    });
    if dp {
        s["dp"] = json!({ "clip": 1.0, "noise_multiplier": 0.5, "delta": 1e-5 });
    }
    serde_json::from_value(s).expect("job spec")
}

/// Every instruction of honest runs of each model kind (logistic regression with two labels
/// and with DP, MLP, GBDT, scorecard), as JSON, and the finished models as model files.
struct Seeds {
    instructions: Vec<String>,
    artifacts: Vec<String>,
}

fn seeds() -> &'static Seeds {
    static S: OnceLock<Seeds> = OnceLock::new();
    S.get_or_init(|| {
        let specs = [
            spec(json!({ "kind": "logistic_regression" }), &["y", "z"], false),
            spec(json!({ "kind": "logistic_regression" }), &["y"], true),
            spec(json!({ "kind": "mlp", "hidden": [4] }), &["y", "z"], false),
            spec(
                json!({ "kind": "gbdt", "n_trees": 2, "max_depth": 2, "max_bins": 8, "fine_bins": 64 }),
                &["y"],
                false,
            ),
            spec(
                json!({ "kind": "scorecard", "bins": 4, "min_iv": 0.0, "fine_bins": 64 }),
                &["y"],
                false,
            ),
        ];
        let parts = participants();
        let mut instructions = Vec::new();
        let mut artifacts = Vec::new();
        for s in specs {
            let labels = s.labels.clone();
            let features = FEATURES.iter().map(|f| f.to_string()).collect();
            let mut plan = Plan::new(s, features, labels).expect("plan");
            let mut caches: Vec<LocalCache> = parts.iter().map(|_| LocalCache::default()).collect();
            while let Some(step) = plan.next_step() {
                instructions.push(serde_json::to_string(&step.instruction).expect("json"));
                let mut sum = vec![0.0; step.len];
                for (p, c) in parts.iter().zip(caches.iter_mut()) {
                    let v = compute(&step.instruction, p, c, &mut private_rng()).expect("honest step");
                    assert_eq!(v.len(), step.len);
                    sum.iter_mut().zip(&v).for_each(|(s, x)| *s += x);
                }
                plan.absorb(&sum, parts.len()).expect("absorb");
            }
            let model = plan.model().expect("model").clone();
            let a = ModelArtifact::new(&plan, &model, "00".repeat(32));
            artifacts.push(serde_json::to_string(&a).expect("artifact json"));
        }
        Seeds {
            instructions,
            artifacts,
        }
    })
}

/// Check and compute agree on `instr`, for each participant, with a fresh cache and with one
/// warmed by `warm` (an honest step) first.
fn check_and_compute(instr: &Instruction, warm: Option<&Instruction>) {
    for local in participants() {
        let mut caches = vec![LocalCache::default()];
        if let Some(w) = warm {
            let mut c = LocalCache::default();
            let _ = compute(w, local, &mut c, &mut private_rng());
            caches.push(c);
        }
        for mut cache in caches {
            let checked = check_instruction(instr, local);
            let out = compute(instr, local, &mut cache, &mut private_rng());
            match (&checked, &out) {
                (Ok(len), Ok(v)) => assert_eq!(v.len(), *len, "announced vs computed length"),
                (Ok(_), Err(_)) => {} // e.g. labels that are not 0/1, diverging values
                (Err(_), Err(FedError::Instruction(_))) => {}
                (Err(e), other) => panic!("check refused ({e}) but compute gave {other:?}"),
            }
        }
    }
}

/// Numbers that probe every bound: zero, signs, powers of two around `u8`/`u16`/`u32`, the
/// caps, `f32` overflow (→ ±∞ in `f32` fields), tiny and huge `f64`.
const SPECIAL: [f64; 22] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    2.0,
    0.5,
    255.0,
    256.0,
    65536.0,
    65537.0,
    1e5,
    100_001.0,
    1e6,
    1e9,
    4294967295.0,
    4294967296.0,
    1e19,
    3.4e38,
    1e39,
    -1e39,
    1e300,
    1e-300,
];
/// The same for integer fields (counts, indices, sizes).
const SPECIAL_INT: [u64; 14] = [
    0,
    1,
    2,
    3,
    255,
    256,
    65536,
    65537,
    100_001,
    1 << 24,
    4294967295,
    4294967296,
    1 << 62,
    u64::MAX,
];
const NAMES: [&str; 16] = [
    "scale",
    "moments",
    "train",
    "evaluate",
    "gbdt",
    "scorecard_histogram",
    "scorecard_counts",
    "logistic_regression",
    "mlp",
    "scorecard",
    "level",
    "stats",
    "numeric",
    "categorical",
    "open",
    "nope",
];

/// The JSON paths of every node of `v` (as index lists into arrays / key positions), with
/// whether the node is a number.
fn nodes(v: &Value, path: &mut Vec<usize>, out: &mut Vec<(Vec<usize>, bool)>) {
    out.push((path.clone(), v.is_number()));
    match v {
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                path.push(i);
                nodes(c, path, out);
                path.pop();
            }
        }
        Value::Object(o) => {
            for (i, c) in o.values().enumerate() {
                path.push(i);
                nodes(c, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at<'v>(v: &'v mut Value, path: &[usize]) -> &'v mut Value {
    match path.split_first() {
        None => v,
        Some((&i, rest)) => match v {
            Value::Array(a) => at(&mut a[i], rest),
            Value::Object(o) => {
                let key = o.keys().nth(i).cloned().unwrap_or_default();
                at(&mut o[&key], rest)
            }
            _ => v,
        },
    }
}

/// One structural mutation of `v`, chosen by the genes `(node, op, arg)`: numbers replaced by
/// bound-probing values, arrays cut, grown or emptied, keys dropped, names replaced.
fn mutate(v: &mut Value, node: usize, op: u8, arg: u64) {
    let mut all = Vec::new();
    nodes(v, &mut Vec::new(), &mut all);
    // Ops 12 and above replace a number: the most telling mutation, so the most frequent.
    let op = if op < 12 { op } else { 0 };
    let numbers: Vec<&Vec<usize>> = all.iter().filter(|(_, num)| *num).map(|(p, _)| p).collect();
    let path = if op == 0 && !numbers.is_empty() {
        numbers[node % numbers.len()]
    } else {
        &all[node % all.len()].0
    };
    let n = at(v, path);
    let special = SPECIAL[(arg % SPECIAL.len() as u64) as usize];
    let special_int = SPECIAL_INT[(arg % SPECIAL_INT.len() as u64) as usize];
    match (op, &mut *n) {
        // Numbers mostly keep their kind, so the instruction still decodes and reaches the
        // check.
        (0, Value::Number(x)) if x.is_u64() && arg % 4 != 0 => *n = json!(special_int),
        (0, _) => *n = json!(special),
        (1, Value::Number(x)) => {
            let f = x.as_f64().unwrap_or(0.0);
            *n = json!(-f - 1.0);
        }
        (2, Value::Number(x)) => {
            let f = x.as_f64().unwrap_or(0.0);
            *n = json!(f * 1e6 + 1.0);
        }
        (3, _) => *n = Value::Null,
        (4, Value::Array(a)) => {
            let k = (arg as usize) % (a.len() + 1);
            a.truncate(k);
        }
        (5, Value::Array(a)) if !a.is_empty() => {
            let c = a[(arg as usize) % a.len()].clone();
            for _ in 0..(1 + arg % 3) {
                a.push(c.clone());
            }
        }
        (6, Value::Array(a)) => a.push(json!(special)),
        (7, Value::Array(a)) => a.clear(),
        (8, Value::Object(o)) if !o.is_empty() => {
            let key = o.keys().nth((arg as usize) % o.len()).cloned();
            if let Some(k) = key {
                o.remove(&k);
            }
        }
        (9, Value::String(_)) => *n = json!(NAMES[(arg % NAMES.len() as u64) as usize]),
        (10, Value::Number(_)) => *n = json!(u64::MAX - (arg % 3)),
        (11, Value::Bool(b)) => *b = !*b,
        (_, _) => *n = json!(special),
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Structurally mutated honest instructions (numbers replaced by bound-probing values,
    /// arrays cut, grown and emptied, keys dropped, kinds renamed): decoding, checking and
    /// computing never panic and agree with each other.
    #[test]
    fn mutated_json_instructions_never_panic(
        which in any::<usize>(),
        genes in prop::collection::vec((any::<usize>(), 0u8..24, any::<u64>()), 1..4),
    ) {
        let s = seeds();
        let text = &s.instructions[which % s.instructions.len()];
        let honest: Instruction = serde_json::from_str(text).expect("seed decodes");
        let mut v: Value = serde_json::from_str(text).expect("seed json");
        for &(node, op, arg) in &genes {
            mutate(&mut v, node, op, arg);
        }
        let mutated = serde_json::to_string(&v).expect("json");
        if let Ok(instr) = serde_json::from_str::<Instruction>(&mutated) {
            check_and_compute(&instr, Some(&honest));
        }
    }

    /// Byte-level damage to honest instructions (overwritten, deleted and inserted bytes).
    #[test]
    fn mutated_instruction_bytes_never_panic(
        which in any::<usize>(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let s = seeds();
        let mut bytes = s.instructions[which % s.instructions.len()].clone().into_bytes();
        for &(pos, b, kind) in &edits {
            if bytes.is_empty() {
                break;
            }
            let p = pos % bytes.len();
            match kind {
                0 => bytes[p] = b,
                1 => {
                    bytes.remove(p);
                }
                _ => bytes.insert(p, b"0123456789-e.,[]{}\""[(b as usize) % 19]),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(instr) = serde_json::from_str::<Instruction>(&text) {
            check_and_compute(&instr, None);
        }
    }

    /// Logistic-regression and MLP models of random sizes with random (also NaN and ±∞)
    /// values inside train and evaluation steps over random column lists: refused exactly
    /// when some size or value does not fit, never a panic.
    #[test]
    fn random_sized_models_are_refused_unless_they_fit(
        feats in prop::collection::vec(0usize..6, 0..6),
        labs in prop::collection::vec(0usize..3, 0..3),
        coef_lens in prop::collection::vec(0usize..7, 0..4),
        std_len in 0usize..7,
        values in prop::collection::vec(
            prop_oneof![30 => -3.0f64..3.0, 1 => Just(f64::NAN), 1 => Just(f64::INFINITY)],
            64,
        ),
        mlp in any::<bool>(),
        hidden in prop::collection::vec(prop_oneof![4 => 1usize..5, 1 => Just(0usize), 1 => Just(5000usize)], 0..4),
        flat_shift in -2i64..3,
        evaluate in any::<bool>(),
        bins in prop_oneof![4 => 1usize..50, 1 => Just(0usize), 1 => Just(usize::MAX)],
        coherent in any::<bool>(),
    ) {
        // Half the cases have known, distinct columns and every size right, so both answers
        // of the check are exercised.
        let (feats, labs, coef_lens, std_len, flat_shift, hidden, bins) = if coherent {
            let valid = |v: &[usize], n: usize| -> Vec<usize> {
                let mut out: Vec<usize> = Vec::new();
                for &i in v {
                    if i < n && !out.contains(&i) {
                        out.push(i);
                    }
                }
                if out.is_empty() {
                    out.push(0);
                }
                out
            };
            let (f, l) = (valid(&feats, FEATURES.len()), valid(&labs, LABELS.len()));
            let hidden: Vec<usize> = hidden.into_iter().take(2).map(|h| h.clamp(1, 4)).collect();
            (f.clone(), l.clone(), vec![f.len(); l.len()], f.len(), 0, hidden, bins.clamp(1, 50))
        } else {
            (feats, labs, coef_lens, std_len, flat_shift, hidden, bins)
        };
        let names = |idx: &[usize], all: &[&str]| -> Vec<String> {
            idx.iter().map(|&i| all.get(i).map_or("unknown".to_string(), |s| s.to_string())).collect()
        };
        let features = names(&feats, &FEATURES);
        let labels = names(&labs, &LABELS);
        let mut vals = values.iter().copied().cycle();
        let mut take = |n: usize| -> Vec<f64> { (0..n).map(|_| vals.next().unwrap_or(0.0)).collect() };
        let standardizer = Standardizer {
            mean: take(std_len),
            std: take(std_len).into_iter().map(|v| v.abs() + 0.1).collect(),
            missing_rate: vec![0.0; std_len],
        };
        let params = if mlp {
            ModelParams::Mlp {
                per_label: coef_lens
                    .iter()
                    .map(|&inputs| {
                        let spec = MlpSpec { inputs, hidden: hidden.clone() };
                        let n = (MlpParams::n_params(&spec).min(200) as i64 + flat_shift).max(0);
                        MlpParams { spec, flat: take(n as usize) }
                    })
                    .collect(),
            }
        } else {
            ModelParams::LogisticRegression {
                per_label: coef_lens
                    .iter()
                    .map(|&d| LinearParams { coef: take(d), intercept: take(1)[0] })
                    .collect(),
            }
        };
        let model = TrainedModel {
            features: features.clone(),
            labels: labels.clone(),
            standardizer,
            params,
        };
        let data = JobData { dataset: "d".into(), features, labels };
        let instr = if evaluate {
            Instruction::Evaluate { data, model: model.clone(), bins }
        } else {
            Instruction::Train {
                data,
                model: model.clone(),
                local: LocalTrainConfig {
                    epochs: 1,
                    learning_rate: 0.1,
                    batch_size: 16,
                    l2: 0.0,
                    pos_weight: 1.0,
                    prox_mu: 0.0,
                },
                seed: 1,
                noise: None,
            }
        };
        check_and_compute(&instr, None);
        // The check accepts exactly the well-formed models.
        let (f, l) = (model.features.len(), model.labels.len());
        let distinct = |v: &[usize]| {
            let mut s = v.to_vec();
            s.sort_unstable();
            s.dedup();
            s.len() == v.len()
        };
        let columns_ok = f > 0 && l > 0 && distinct(&feats) && distinct(&labs)
            && feats.iter().all(|&i| i < FEATURES.len())
            && labs.iter().all(|&i| i < LABELS.len());
        let std_ok = std_len == f
            && model.standardizer.mean.iter().chain(&model.standardizer.std).all(|v| v.is_finite());
        let params_ok = coef_lens.len() == l && match &model.params {
            ModelParams::LogisticRegression { per_label } => per_label.iter().all(|p| {
                p.coef.len() == f && p.coef.iter().all(|v| v.is_finite()) && p.intercept.is_finite()
            }),
            ModelParams::Mlp { per_label } => per_label.iter().all(|p| {
                p.spec.inputs == f
                    && p.spec.hidden.len() <= 2
                    && p.spec.hidden.iter().all(|&h| (1..=1024).contains(&h))
                    && p.flat.len() == MlpParams::n_params(&p.spec)
                    && p.flat.iter().all(|v| v.is_finite())
            }),
            _ => false,
        };
        let bins_ok = !evaluate || (1..=100_000).contains(&bins);
        let well_formed = columns_ok && std_ok && params_ok && bins_ok;
        let checked = check_instruction(&instr, &participants()[0]);
        prop_assert_eq!(checked.is_ok(), well_formed, "{:?}", checked);
        if well_formed {
            let out = compute(&instr, &participants()[0], &mut LocalCache::default(), &mut private_rng());
            prop_assert!(out.is_ok(), "{:?}", out);
        }
    }

    /// Random bytes are never a model file, and reading them never panics.
    #[test]
    fn random_bytes_are_not_a_model(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        prop_assert!(ModelArtifact::from_json(&text).is_err());
    }

    /// Mutated model files: reading either refuses them or gives a model that predicts and
    /// scores the local rows (or refuses them) without panicking.
    #[test]
    fn mutated_model_files_never_panic(
        which in any::<usize>(),
        genes in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u64>()), 1..5),
    ) {
        let s = seeds();
        let text = &s.artifacts[which % s.artifacts.len()];
        let mut v: Value = serde_json::from_str(text).expect("artifact json");
        for &(node, op, arg) in &genes {
            mutate(&mut v, node, op, arg);
        }
        let mutated = serde_json::to_string(&v).expect("json");
        if let Ok(a) = ModelArtifact::from_json(&mutated) {
            for local in participants() {
                let _ = a.model.predict(&local.holdout);
                let _ = a.model.points(&local.holdout);
            }
            if let ModelParams::Scorecard { card } = &a.model.params {
                let _ = card.to_table();
            }
        }
    }
}

/// The honest seeds themselves are accepted, and the named refusals name what is wrong.
#[test]
fn honest_steps_pass_and_refusals_name_the_problem() {
    let s = seeds();
    assert!(s.instructions.len() > 20, "{} seeds", s.instructions.len());
    for text in &s.instructions {
        let instr: Instruction = serde_json::from_str(text).expect("seed");
        for local in participants() {
            check_instruction(&instr, local).expect("an honest step is accepted");
        }
    }
    for text in &s.artifacts {
        ModelArtifact::from_json(text).expect("an honest model file is accepted");
    }
    // A coefficient vector one short names the coefficients and both sizes.
    let train = s
        .instructions
        .iter()
        .find(|t| t.contains("\"op\":\"train\"") && t.contains("logistic_regression"))
        .expect("a train step");
    let mut instr: Instruction = serde_json::from_str(train).expect("train");
    if let Instruction::Train { model, .. } = &mut instr {
        if let ModelParams::LogisticRegression { per_label } = &mut model.params {
            per_label[0].coef.pop();
        }
    }
    let e = check_instruction(&instr, &participants()[0]).expect_err("short coef");
    assert_eq!(e.to_string(), "coef: expected 5, got 4");
    let e = compute(
        &instr,
        &participants()[0],
        &mut LocalCache::default(),
        &mut private_rng(),
    )
    .expect_err("refused");
    assert!(matches!(e, FedError::Instruction(_)), "{e:?}");
}

/// The participant's private randomness (record-level DP steps read it; these do not).
fn private_rng() -> rand_chacha::ChaCha20Rng {
    use rand::SeedableRng;
    rand_chacha::ChaCha20Rng::seed_from_u64(7)
}
