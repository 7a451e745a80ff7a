//! Standalone speed check of the compiled forest's forms on the scoring bench's depth-6 model
//! shape (100 trees, depth 6, ≤ 64 leaves, 50 columns uniform on [−1.7, 1.7), 5 % missing).
//! `cargo run --release -p fedsilo-ml --example forest_speed [rows] [depth] [leaves]`; run it
//! under `taskset -c 0` with `RAYON_NUM_THREADS=1` for a one-core figure.
//! `FOREST_SPEED_ONLY=1`: time only the form the forest compiles to (its margins still
//! checked against the level-word form's); `FOREST_SPEED_PASSES=n`: time each form n times.
//! Each pass also times every slice of 250,000 rows by wall clock and prints the fastest.

use fedsilo_ml::gbdt::{fit_pooled, CompiledForest, GbdtParams};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

mod common;
use common::cpu_seconds;

fn table(rows: usize, seed: u64) -> (Array2<f32>, Array1<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = Array2::from_shape_fn((rows, 50), |_| {
        if rng.random::<f32>() < 0.05 {
            f32::NAN
        } else {
            rng.random::<f32>() * 3.4 - 1.7
        }
    });
    let y = Array1::from_shape_fn(rows, |r| {
        let z: f32 = (0..5).map(|j| x[[r, j]]).filter(|v| !v.is_nan()).sum();
        if z + rng.random::<f32>() * 2.0 - 1.0 > 0.0 {
            1.0
        } else {
            0.0
        }
    });
    (x, y)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(1_000_000);
    let depth = args.get(1).copied().unwrap_or(6);
    let leaves = args.get(2).copied().unwrap_or(64);
    let (xt, yt) = table(20_000, 7);
    let params = GbdtParams {
        n_trees: 100,
        max_depth: depth,
        max_leaves: leaves,
        ..GbdtParams::default()
    };
    let model = fit_pooled(xt.view(), yt.view(), &params).expect("fit");
    let (x, _) = table(rows, 1);
    let compiled = model.compile().expect("compile");
    let only = std::env::var_os("FOREST_SPEED_ONLY").is_some();
    let passes: usize = std::env::var("FOREST_SPEED_PASSES")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let mut forms: Vec<(&str, CompiledForest)> = vec![("as compiled", compiled.clone())];
    if !only {
        if let Some(f) = compiled.level_word_form() {
            forms.push(("level words", f));
        }
        if let Some(f) = compiled.bit_vector_form() {
            forms.push(("bit vectors", f));
        }
    }
    let floats = x.as_slice().expect("row-major");
    let c0 = cpu_seconds();
    black_box(floats.iter().fold(0.0f32, |a, &v| a + v));
    let c = cpu_seconds() - c0;
    println!(
        "baseline read: {:.2} M rows per CPU-s",
        rows as f64 / c / 1e6
    );
    let want = if only {
        let check = rows.min(200_000);
        let lv = compiled
            .level_word_form()
            .unwrap_or_else(|| compiled.clone());
        let part = x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(..check));
        let m = compiled.predict_margin(part).expect("margins");
        assert_eq!(
            m,
            lv.predict_margin(part).expect("margins"),
            "vs level words"
        );
        Vec::new()
    } else {
        compiled.predict_margin(x.view()).expect("margins")
    };
    for (name, f) in &forms {
        for _ in 0..passes {
            let c0 = cpu_seconds();
            let m = f.predict_margin(x.view()).expect("margins");
            let c = cpu_seconds() - c0;
            if !only {
                assert_eq!(m, want, "{name}");
            }
            black_box(&m);
            // The fastest slice of 250,000 rows by wall time: the least disturbed figure on
            // a shared machine.
            let slice = 250_000.min(rows);
            let best = (0..rows / slice)
                .map(|i| {
                    let part = x.slice_axis(
                        ndarray::Axis(0),
                        ndarray::Slice::from(i * slice..(i + 1) * slice),
                    );
                    let t0 = std::time::Instant::now();
                    black_box(f.predict_margin(part).expect("margins"));
                    t0.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min);
            println!(
                "{name}: {:.2} M rows per CPU-s ({c:.2} s); fastest slice {:.2} M rows/s wall",
                rows as f64 / c / 1e6,
                slice as f64 / best / 1e6
            );
        }
    }
}
