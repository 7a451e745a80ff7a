# benches/reference/lightgbm_predict.py: the LightGBM predict figures of BENCHMARKS.md "Scoring".
#
#   ROWS=10000000 THREADS=1 python3 benches/reference/lightgbm_predict.py
#   ROWS=10000000 THREADS=1 MODEL=/tmp/m/fedsilo_depth6_64_leaves.txt python3 benches/reference/lightgbm_predict.py
#
# LightGBM predict(raw_score=True) throughput on ROWS rows x 50 columns (uniform on [-1.7, 1.7),
# 5 % missing: the rows of benches/scoring.rs), THREADS threads (1 = per core), wall and CPU
# seconds. Without MODEL: LightGBM's own 100-tree model of the same size (DEPTH, LEAVES; default
# 6 / 64), trained on 20,000 rows. With MODEL: fedsilo's own trees, written by
#   FEDSILO_BENCH_LIGHTGBM_MODEL_DIR=/tmp/m cargo bench --bench scoring
# in LightGBM's text format, checked first against fedsilo's margins of the 1,000 rows written
# beside it (MODEL with the extension .check).
import os, time, numpy as np, lightgbm as lgb
rng = np.random.default_rng(7)
d = 50
threads = int(os.environ.get("THREADS", "1"))
def gen(n):
    x = (rng.random((n, d), dtype=np.float32) * 3.4 - 1.7).astype(np.float32)
    x[rng.random((n, d)) < 0.05] = np.nan
    return x
model = os.environ.get("MODEL")
if model:
    m = lgb.Booster(model_file=model)
    check = os.path.splitext(model)[0] + ".check"
    raw = np.fromfile(check, dtype=np.uint8)
    k = len(raw) // (d * 4 + 8)
    xs = raw[: k * d * 4].view(np.float32).reshape(k, d)
    want = raw[k * d * 4 :].view(np.float64)
    got = m.predict(xs, raw_score=True, num_threads=1)
    print(f"fedsilo's trees in LightGBM: {m.num_trees()} trees; margins of {k} rows differ from "
          f"fedsilo's by at most {np.max(np.abs(got - want)):.3g}")
    what = f"fedsilo's {m.num_trees()} trees"
else:
    depth, leaves = int(os.environ.get("DEPTH", "6")), int(os.environ.get("LEAVES", "64"))
    x = gen(20_000)
    z = np.nansum(x[:, :5], axis=1) + rng.random(20_000) * 2 - 1
    y = (z > 0).astype(np.float64)
    params = dict(objective="binary", num_leaves=leaves, max_depth=depth, learning_rate=0.1,
                  num_threads=1, verbose=-1, min_data_in_leaf=1, max_bin=255)
    m = lgb.train(params, lgb.Dataset(x, y), num_boost_round=100)
    what = f"its own {m.num_trees()}-tree depth-{depth} / {leaves}-leaf model"
n = int(os.environ.get("ROWS", "1000000"))
big = gen(n)
for rep in range(int(os.environ.get("REPS", "2"))):
    t, c = time.perf_counter(), time.process_time()
    p = m.predict(big, num_threads=threads, raw_score=True)
    s, cs = time.perf_counter() - t, time.process_time() - c
    print(f"lightgbm {lgb.__version__} predict (raw score), {n} rows x {d}, {what}, {threads} thread(s): "
          f"{n/s/1e6:.2f} M rows/s wall, {n/cs/1e6:.2f} M rows per CPU-second ({s:.2} s wall, {cs:.2} s CPU)")
