#!/usr/bin/env bash
# toy2d benchmark: every method on ring8 and grid25 over 5 seeds (one command, 2 processes of one thread each),
# then a markdown table with the published numbers beside ours (docs/toy2d.md, README).
# Usage: bash benchmarks/toy2d_bench.sh [OUT_DIR [toy2d flags, e.g. --setting tuned]]   (from the repository root)
set -euo pipefail
out=${1:-runs/toy2d_bench}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
mkdir -p "$out"
python toy2d.py --method all --dataset ring8 grid25 --seeds 1 2 3 4 5 --jobs 2 --out-dir "$out" "${@:2}" \
  > "$out/bench.log"
tail -n 1 "$out/bench.log" > "$out/summary.json"
python - "$out/summary.json" "$commit" <<'PY'
import json, sys
summary, commit = json.load(open(sys.argv[1])), sys.argv[2]
res = summary["results"]
cell = lambda r, k, f: f"{r[k]:{f}} ± {r[k + '_std']:{f}}"
print(f"`bash benchmarks/toy2d_bench.sh` (= `python toy2d.py --dataset ring8 grid25 --seeds 1 2 3 4 5`, "
      f"{summary['settings']['steps']} steps), commit {commit}, wall time {summary['wall_time'] / 60:.0f} min on 2 CPU cores "
      "(2 processes, one thread each); mean ± std over 5 seeds, 2,500 samples each; collapsed: how many seeds end "
      "with reverse KL >= log(modes) - 0.5 (the mass on about one or two modes).\n")
print("| method | ring8 modes (of 8) | ring8 HQ % | ring8 reverse KL | ring8 collapsed | grid25 modes (of 25) "
      "| grid25 HQ % | grid25 reverse KL | grid25 collapsed | CPU min / run |")
print("|---|---|---|---|---|---|---|---|---|---|")
for m in res["ring8"]:
    r, g = res["ring8"][m], res["grid25"][m]
    cpu = (r["wall_time"] + g["wall_time"]) / 10 / 60
    cols = [" | ".join([cell(x, k, f) for k, f in (("modes", ".1f"), ("hq", ".1f"), ("reverse_kl", ".3f"))]
                       + [f"{x['collapsed']} of {len(x['per_seed'])}"]) for x in (r, g)]
    print(f"| {m} | " + " | ".join(cols) + f" | {cpu:.1f} |")
PY
