#!/bin/bash
# End-to-end `fedsilo score` from CSV (BENCHMARKS.md, "End to end from CSV, release build,
# 10 M rows, session 13"): in target/tmp, with fedsilo-base (the binary to compare against)
# and fedsilo-new copied there, times `wc -l`, `cat`, then each binary twice on one core,
# and compares the two rankings byte for byte. Writes the file, the model (the bench's
# `lr_model()` as a fedsilo-model/1 artifact) and the schema when they are missing.
set -e
cd "$(dirname "$0")/../../target/tmp"
[ -x gen ] || cc -O2 -o gen ../../benches/reference/gen_scoring_csv.c
[ -f s10m.csv ] || ./gen 10000000 > s10m.csv
[ -f lr.json ] || python3 - <<'PY'
import json
F = 50
names = [f"x{j}" for j in range(F)]
model = {"features": names, "labels": ["y"],
         "standardizer": {"mean": [0.01] * F, "std": [0.98] * F, "missing_rate": [0.05] * F},
         "params": {"kind": "logistic_regression",
                    "per_label": [{"coef": [0.3 - j * 0.01 for j in range(F)], "intercept": -0.2}]}}
art = {"format": "fedsilo-model/1", "job_id": "lr", "task": "risk", "model_kind": "lr",
       "complete": True, "rounds": 1, "coefficients": [], "metrics": [],
       "round_sha256": "0" * 64, "model_sha256": "", "model": model}
open("lr.json", "w").write(json.dumps(art))
open("schema.toml", "w").write('id_column = "id"\nfeatures = [\n' + "".join(
    f'  {{ name = "x{j}", type = "numeric" }},\n' for j in range(F)) + "]\n")
PY
t() { # label, command...
  local label=$1; shift
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -v "$@" > /dev/null 2> time.txt
  local u s w r
  u=$(grep "User time" time.txt | awk '{print $NF}')
  s=$(grep "System time" time.txt | awk '{print $NF}')
  w=$(grep "Elapsed" time.txt | awk '{print $NF}')
  r=$(grep "Maximum resident" time.txt | awk '{print $NF}')
  echo "$label | wall $w | user $u sys $s | cpu $(echo "$u + $s" | bc) | M rows/CPU-s $(echo "scale=3; 10 / ($u + $s)" | bc) | RSS $((r/1024)) MB | load $load"
}
date -u
t "wc -l" wc -l s10m.csv
t "cat" cat s10m.csv
for i in 1 2; do
  for b in base new; do
    t "$b #$i" taskset -c 0 env RAYON_NUM_THREADS=1 ./fedsilo-$b score --model lr.json \
      --data s10m.csv --schema schema.toml --out $b-10m.csv --top-fraction 0.3
  done
done
cmp base-10m.csv new-10m.csv && echo "cmp: identical"
wc -l base-10m.csv
date -u
