#!/usr/bin/env bash
# toy2d benchmark: every method on ring8 and grid25 over 5 seeds, then a markdown table (docs/toy2d.md, README).
# Usage: bash benchmarks/toy2d_bench.sh [STEPS] [OUT_DIR]   (from the repository root; STEPS default 1500)
# The two datasets run in parallel (one thread each). Cost: about STEPS x 0.15 s per seed and dataset on one
# core (unrolled's second-order steps and wgan-gp's 5 critic steps dominate): ~20-30 min at 1500 steps.
set -euo pipefail
steps=${1:-1500}
out=${2:-runs/toy2d_bench}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
start=$(date +%s)
mkdir -p "$out"
for dataset in ring8 grid25; do
    python toy2d.py --method all --dataset "$dataset" --seeds 1 2 3 4 5 --steps "$steps" --out-dir "$out/$dataset" \
        > "$out/$dataset.log" &
done
wait
for dataset in ring8 grid25; do tail -n 1 "$out/$dataset.log" > "$out/$dataset.json"; done
python - "$out" "$steps" "$commit" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
out, steps, commit, wall = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
runs = {d: json.load(open(f"{out}/{d}.json")) for d in ("ring8", "grid25")}
cell = lambda r, k, f: f"{r[k]:{f}} ± {r[k + '_std']:{f}}"
print(f"`bash benchmarks/toy2d_bench.sh {steps}` (= `python toy2d.py --method all --dataset DATASET --seeds 1 2 3 4 5 "
      f"--steps {steps}`), commit {commit}, wall time {wall / 60:.0f} min on 2 shared CPU cores; mean ± std over 5 seeds, "
      "2,500 samples each.\n")
print("| method | ring8 modes (of 8) | ring8 HQ % | ring8 reverse KL | grid25 modes (of 25) | grid25 HQ % | grid25 reverse KL |")
print("|---|---|---|---|---|---|---|")
for m in runs["ring8"]["results"]:
    r, g = runs["ring8"]["results"][m], runs["grid25"]["results"][m]
    print(f"| {m} | " + " | ".join(cell(x, k, f) for x in (r, g) for k, f in (("modes", ".1f"), ("hq", ".1f"), ("reverse_kl", ".2f"))) + " |")
PY
