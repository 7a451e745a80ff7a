//! Standalone per-tree timing of the pooled boosting loop (`fit_pooled`'s loop: the same
//! work as one participant's in a federation) on generated rows: 50 f32 columns uniform on
//! [−2, 2), 5 % of column 49 missing, a logistic label over a few columns; depth 6, 64
//! leaves, 255 bins. `cargo run --release -p fedsilo-ml --example boost_speed [rows] [trees]`.
//! Prints each tree's wall and process CPU time (`/proc/self/stat`), so that the share of a
//! tree that runs on one core shows (CPU / wall below the thread count).

use fedsilo_ml::gbdt::{gbdt_compute, GbdtCache, GbdtParams, GbdtServer};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

mod common;
use common::cpu_seconds;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(1_000_000);
    let trees = args.get(1).copied().unwrap_or(6);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = Array2::from_shape_fn((rows, 50), |(_, j)| {
        if j == 49 && rng.random::<f32>() < 0.05 {
            f32::NAN
        } else {
            rng.random::<f32>() * 4.0 - 2.0
        }
    });
    let y = Array1::from_shape_fn(rows, |r| {
        let z = x[[r, 0]] - 0.5 * x[[r, 1]] + x[[r, 2]] * x[[r, 3]] + f32::from(x[[r, 4]] > 0.5);
        f32::from(z + rng.random::<f32>() * 2.0 - 1.0 > 0.0)
    });
    let params = GbdtParams {
        n_trees: trees,
        max_depth: 6,
        max_leaves: 64,
        max_bins: 255,
        ..GbdtParams::default()
    };
    let Ok(mut server) = GbdtServer::new(params, x.ncols()) else {
        eprintln!("bad parameters");
        return;
    };
    let mut cache = GbdtCache::new();
    let (mut t0, mut c0) = (Instant::now(), cpu_seconds());
    let mut done = 0;
    // `BOOST_SPEED_STEPS=1`: every step's compute and absorb, wall and CPU.
    let steps = std::env::var_os("BOOST_SPEED_STEPS").is_some();
    let mut step = 0;
    while let Some(instr) = server.next() {
        let (s0, sc0) = (Instant::now(), cpu_seconds());
        let Ok(v) = gbdt_compute(&instr, x.view(), y.view(), &mut cache) else {
            eprintln!("compute failed");
            return;
        };
        let (s1, sc1) = (Instant::now(), cpu_seconds());
        if server.absorb(&v).is_err() {
            eprintln!("absorb failed");
            return;
        }
        if steps {
            println!(
                "  step {step}: compute {:.1} ms wall, {:.0} ms CPU; absorb {:.1} ms wall ({} values)",
                (s1 - s0).as_secs_f64() * 1e3,
                (sc1 - sc0) * 1e3,
                s1.elapsed().as_secs_f64() * 1e3,
                v.len()
            );
        }
        step += 1;
        let n = server.trees_done();
        if n > done {
            done = n;
            step = 0;
            let (w, c) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
            println!("tree {n}: {:.0} ms wall, {:.0} ms CPU", w * 1e3, c * 1e3);
            (t0, c0) = (Instant::now(), cpu_seconds());
        }
    }
}
