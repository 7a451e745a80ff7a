#!/usr/bin/env python3
"""LightGBM timing reference for `cargo bench --bench gbdt` (BENCHMARKS.md, "GBDT boosting round").

Times LightGBM with num_threads = 2 on the very rows the Rust bench generated. The bench
drives it itself, in the same run, before its own measurements, and reads its figures back
(`<prefix>.lightgbm.json`) into its table of ratios:

    FEDSILO_BENCH_GBDT_LIGHTGBM=python3 cargo bench --bench gbdt

(the bench exports its rows to `<prefix>.*` in a temporary directory, or to
`FEDSILO_BENCH_GBDT_EXPORT=<prefix>` if set, and runs `python3 <this script> <prefix>`).
By hand, on rows exported earlier: `python3 benches/reference/lightgbm_gbdt.py <prefix>`.
`FEDSILO_BENCH_GBDT_ROWS` sets the rows per participant on the Rust side; the script reads
the sizes from `<prefix>.json`. Requirements: pip install lightgbm numpy

Settings matched to the bench's GbdtParams (depth 6, 64 leaves, learning rate 0.1, 255 value
bins + missing, min_child_weight 1, lambda 1, gamma 0):

    LightGBM                         fedsilo
    max_depth=6, num_leaves=64       max_depth, max_leaves (complete depth-6 trees)
    learning_rate=0.1                learning_rate
    max_bin=255                      max_bins = 255 value bins (+1 missing bin in both)
    min_sum_hessian_in_leaf=1        min_child_weight
    lambda_l2=1                      lambda
    min_gain_to_split=0              gamma
    min_data_in_leaf=1, min_data_in_bin=1 (fedsilo has no row-count limits)
    objective=binary, boost_from_average (default) = fedsilo's base score
    no bagging, no feature sampling, missing values learned per split (NaN)

Measured, each on the pooled rows (all participants) and on participant 0's rows alone:
  - Dataset construction (binning: LightGBM's preamble), wall and process CPU time;
  - per-tree time: wall (and process CPU) time between successive boosting iterations (a
    callback), the mean over trees 2..T (tree 1 is left out, as in the Rust bench);
  - the hold-out AUC after T trees, and predict throughput on the hold-out.

LightGBM picks its histogram layout itself (row-wise or column-wise, printed in its log at
verbosity 1); the script leaves it to choose, as a user would.
"""

import json
import os
import sys
import time

import lightgbm as lgb
import numpy as np


def auc(score, y):
    order = np.argsort(score, kind="mergesort")
    s, yy = score[order], y[order]
    ranks = np.empty(len(s))
    # average ranks for ties
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2 + 1
        i = j + 1
    pos = yy == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def load(prefix, part, rows, features):
    x = np.fromfile(f"{prefix}.{part}.x", dtype="<f4").reshape(rows, features)
    y = np.fromfile(f"{prefix}.{part}.y", dtype="<f4")
    return x, y


def run(name, x, y, xh, yh, trees, depth):
    params = {
        "objective": "binary",
        "num_threads": 2,
        "max_depth": depth,
        "num_leaves": 1 << depth,
        "learning_rate": 0.1,
        "max_bin": 255,
        "min_sum_hessian_in_leaf": 1.0,
        "lambda_l2": 1.0,
        "min_gain_to_split": 0.0,
        "min_data_in_leaf": 1,
        "min_data_in_bin": 1,
        "bagging_fraction": 1.0,
        "feature_fraction": 1.0,
        "verbosity": -1,
        "seed": 0,
        "deterministic": True,
    }
    t0, c0 = time.perf_counter(), time.process_time()
    ds = lgb.Dataset(x, label=y, params=params)
    ds.construct()
    t_data, c_data = time.perf_counter() - t0, time.process_time() - c0
    stamps, cpu = [], []

    def stamp(env):
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())

    t1 = time.perf_counter()
    booster = lgb.train(params, ds, num_boost_round=trees, callbacks=[stamp])
    t_train = time.perf_counter() - t1
    steady = np.diff(np.array(stamps)) * 1e3  # trees 2..T
    steady_cpu = np.diff(np.array(cpu)) * 1e3
    t2 = time.perf_counter()
    p = booster.predict(xh)
    t_pred = time.perf_counter() - t2
    holdout_auc = auc(p, yh)
    leaves = [t["num_leaves"] for t in booster.dump_model()["tree_info"]]
    print(
        f"{name}: {x.shape[0]} rows x {x.shape[1]}: Dataset construction {t_data * 1e3:.0f} ms; "
        f"train {trees} trees {t_train * 1e3:.0f} ms (tree 1 {(stamps[0] - t1) * 1e3:.0f} ms); "
        f"trees 2..{trees}: {' '.join(f'{v:.0f}' for v in steady)} ms, mean {steady.mean():.0f} ms "
        f"(CPU {steady_cpu.mean():.0f} ms); leaves per tree {min(leaves)}..{max(leaves)}; "
        f"hold-out AUC {holdout_auc:.4f}; "
        f"predict {len(xh) / t_pred / 1e6:.2f} M rows/s ({trees} trees, 2 threads)"
    )
    return {
        "rows": int(x.shape[0]),
        "dataset_ms": t_data * 1e3,
        "dataset_cpu_ms": c_data * 1e3,
        "tree1_ms": (stamps[0] - t1) * 1e3,
        "tree_ms": [float(v) for v in steady],
        "tree_mean_ms": float(steady.mean()),
        "tree_cpu_mean_ms": float(steady_cpu.mean()),
        "min_leaves": int(min(leaves)),
        "max_leaves": int(max(leaves)),
        "holdout_auc": float(holdout_auc),
        "predict_rows_per_s": len(xh) / t_pred,
    }


def main():
    prefix = sys.argv[1] if len(sys.argv) > 1 else "/tmp/gbdt-rows"
    meta = json.load(open(f"{prefix}.json"))
    f, depth, trees = meta["features"], meta["depth"], meta["trees"]
    x, y = load(prefix, "train", meta["train_rows"], f)
    xh, yh = load(prefix, "holdout", meta["holdout_rows"], f)
    load_before = os.getloadavg()[0]
    print(
        f"lightgbm {lgb.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
        f"load average {load_before:.2f}"
    )
    pooled = run("pooled", x, y, xh, yh, trees, depth)
    r = meta["rows_per_participant"]
    one = run("participant 0", np.ascontiguousarray(x[:r]), y[:r].copy(), xh, yh, trees, depth)
    print(
        f"per-tree mean: pooled {pooled['tree_mean_ms']:.0f} ms, "
        f"one participant {one['tree_mean_ms']:.0f} ms"
    )
    out = {
        "lightgbm": lgb.__version__,
        "num_threads": 2,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "pooled": pooled,
        "participant0": one,
    }
    with open(f"{prefix}.lightgbm.json", "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {prefix}.lightgbm.json")


if __name__ == "__main__":
    main()
