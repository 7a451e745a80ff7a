# benches/reference/lightgbm_predict.py: the LightGBM predict figure of BENCHMARKS.md "Scoring".
# ROWS=1000000 OMP_NUM_THREADS=1 python3 benches/reference/lightgbm_predict.py
# LightGBM predict throughput, one thread, a 100-tree depth-4 / 16-leaf model on 50 columns
# (5 % missing), the shape of benches/scoring.rs's GBDT.
import os, time, numpy as np, lightgbm as lgb
rng = np.random.default_rng(7)
d = 50
def gen(n):
    x = (rng.random((n, d), dtype=np.float32) * 3.4 - 1.7).astype(np.float32)
    x[rng.random((n, d)) < 0.05] = np.nan
    return x
x = gen(20_000)
z = np.nansum(x[:, :5], axis=1) + rng.random(20_000) * 2 - 1
y = (z > 0).astype(np.float64)
params = dict(objective="binary", num_leaves=16, max_depth=4, learning_rate=0.1,
              num_threads=1, verbose=-1, min_data_in_leaf=1, max_bin=64)
m = lgb.train(params, lgb.Dataset(x, y), num_boost_round=100)
n = int(os.environ.get("ROWS", "1000000"))
big = gen(n)
for rep in range(3):
    t, c = time.perf_counter(), time.process_time()
    p = m.predict(big, num_threads=1, raw_score=True)
    s, cs = time.perf_counter() - t, time.process_time() - c
    print(f"lightgbm {lgb.__version__} predict (raw score), {n} rows x {d}, {m.num_trees()} trees, one thread: "
          f"{n/s/1e6:.2f} M rows/s wall, {n/cs/1e6:.2f} M rows per CPU-second ({s:.2} s wall, {cs:.2} s CPU)")
