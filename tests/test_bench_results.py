"""Tests of benchmarks/bench_results.py, the script behind docs/results.md: the verdict rule against hand-computed
values, the report built from kept run files alone (tables, verdicts, figures), keeping runs, and that it skips kept
runs and resumes interrupted ones."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_results  # noqa: E402


def fake_run(out, exp, seed, modes, kls, steps=2000):
    """A run directory as the scripts write it (stacked MNIST)."""
    run = out / f"stacked-mnist__{exp}__{seed}__100{seed}"
    (run / "samples").mkdir(parents=True)
    rows = [{"step": 100, "d_loss": 1.0}]
    rows += [{"step": 500 * (i + 1), "modes": m, "modes_kl": k} for i, (m, k) in enumerate(zip(modes, kls))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({"step": steps, "wall_time": 1.0}))
    (run / "args.json").write_text(json.dumps({"seed": seed}))
    Image.new("RGB", (40, 30), (seed * 50, 0, 0)).save(run / "samples" / "step_0002000.png")
    return run


def test_verdict_by_hand():
    # higher is better: d = 3, 1, 2 -> mean 2, sd 1, t(0.975, 2) = 4.302653 -> half 4.302653 / sqrt(3) = 2.48414
    v = bench_results.verdict({1: 10, 2: 10, 3: 10}, {1: 13, 2: 11, 3: 12}, higher_is_better=True)
    assert (v["k"], v["n"], v["mean"]) == (3, 3, 2.0)
    assert v["low"] == pytest.approx(2 - 2.484138, abs=1e-5) and v["high"] == pytest.approx(2 + 2.484138, abs=1e-5)
    assert v["verdict"] == "not established at this scale"  # better on 3 of 3, but the interval contains 0
    # lower is better (FD): d = baseline - method = 10, 12, 11, 9, 13 -> mean 11, sd 1.5811, t(0.975, 4) = 2.776445
    v = bench_results.verdict({s: 100 for s in range(1, 6)}, {1: 90, 2: 88, 3: 89, 4: 91, 5: 87, 6: 0}, False)
    assert v["seeds"] == [1, 2, 3, 4, 5] and v["k"] == 5  # seed 6 has no baseline: not paired, left out
    assert v["low"] == pytest.approx(11 - 2.776445 * 1.581139 / 5**0.5, abs=1e-5)
    assert v["verdict"] == "better"
    assert bench_results.verdict({1: 1, 2: 2, 3: 3}, {1: 5, 2: 7, 3: 8}, False)["verdict"] == "worse"  # d = -4, -5, -5
    assert bench_results.verdict({1: 1}, {1: 5}, True)["verdict"] == "too few seeds"


def test_report_from_kept_files_alone(tmp_path, capsys):
    out, kept, figures = tmp_path / "runs", tmp_path / "kept", tmp_path / "figures"
    figures.mkdir()
    fake_run(out, "unrolled-K0", 1, [100, 300, 200], [3.0, 2.0, 2.5])
    fake_run(out, "unrolled-K0", 2, [400, 500, 600], [1.5, 1.0, 0.5])
    fake_run(out, "unrolled-K5", 1, [700, 800, 900], [0.9, 0.8, 0.7])
    fake_run(out, "unrolled-K5", 2, [700, 800, 700], [0.9, 0.8, 0.7])
    fake_run(out, "unrolled-K10", 1, [5, 6], [6.0, 5.0], steps=1000)  # interrupted: not kept
    assert bench_results.keep(out, kept, ["unrolled"]) == 4
    assert sorted(p.name for p in (kept / "unrolled" / "K0" / "1").iterdir()) == [
        "args.json",
        "metrics.jsonl",
        "samples.png",
        "summary.json",
    ]  # seed 1 keeps its last grid
    assert not (kept / "unrolled" / "K0" / "2" / "samples.png").exists()
    (kept / "unrolled" / "K0" / "1" / "bench.json").write_text(json.dumps({"wall_s": 60}))
    (kept / "unrolled" / "K0" / "2" / "bench.json").write_text(json.dumps({"wall_s": 180}))
    bench_results.report(kept, ["unrolled"], figures)  # the runs folder is not read
    table = capsys.readouterr().out
    # K0: final 200, 600 -> 400 +- 282.8 (n - 1); best (max modes) 300, 600 -> 450 +- 212.1;
    # KL final 2.5, 0.5 -> 1.50 +- 1.41; best (min) 2.0, 0.5 -> 1.25 +- 1.06; wall 60 s, 180 s -> 2.0 min
    assert "| unrolled | K0 | 2 | 400 ± 283 | 450 ± 212 | 1.50 ± 1.41 | 1.25 ± 1.06 | 2.0 |" in table
    # K5 vs K0 on modes: d = 900 - 200 = 700, 700 - 600 = 100 -> mean 400, sd 424.26, t(0.975, 1) = 12.7062: half 3811.9
    assert "| unrolled | K5 vs K0 | 2 of 2 | 400.0 | [-3411.9, 4211.9] | not established at this scale |" in table
    assert "1: 200 → 900, 2: 600 → 700" in table
    assert "K10" not in table
    assert (figures / "results_stacked-mnist.png").stat().st_size > 0
    sheet = Image.open(figures / "results_stacked-mnist_samples.png")
    assert sheet.size == (2 * 40, 30 + 14)  # one row: the grid of seed 1 of each kept arm (K0, K5), under its label
    assert sheet.convert("RGB").getpixel((10, 20)) == (50, 0, 0)  # K0's grid is seed 1's


def test_kept_runs_are_skipped_interrupted_ones_resumed_finished_ones_kept(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(bench_results, "KEPT", tmp_path / "kept")
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0, "")
    )
    out = tmp_path / "runs"
    (out / "logs").mkdir(parents=True)
    flags = ["--dataset", "stacked-mnist", "--unroll-steps", "5"]
    run = fake_run(out, "unrolled-K5", 1, [1], [1.0])
    bench_results.keep(out, tmp_path / "kept", ["unrolled"])
    result = bench_results.train(str(out), "data", "unrolled", "K5", 1, "unrolled_gan.py", flags)
    assert result == "unrolled-K5 seed 1: kept before" and calls == []
    run = fake_run(out, "unrolled-K5", 2, [1], [1.0], steps=1500)  # stopped early: no summary of the last step
    (run / "checkpoint.pt").touch()
    assert "ended before its last step" in bench_results.train(
        str(out), "data", "unrolled", "K5", 2, "unrolled_gan.py", flags
    )
    bench_results.train(str(out), "data", "unrolled", "K5", 3, "unrolled_gan.py", flags)  # never started
    training = [c for c in calls if c[0] == sys.executable]
    assert training[0][-2:] == ["--resume", "auto"] and "--resume" not in training[1]
    assert training[1][training[1].index("--seed") + 1] == "3"
    assert training[1][training[1].index("--total-steps") + 1] == "2000"
    fake_run(out, "unrolled-K5", 4, [7], [1.0])  # finishes: its text files are kept, with the wall time and command
    monkeypatch.setattr(
        bench_results, "run_dir", lambda *a: ("unrolled-K5", out / "stacked-mnist__unrolled-K5__4__1004", True)
    )
    assert bench_results.train(str(out), "data", "unrolled", "K5", 4, "unrolled_gan.py", flags)[:2] == (
        "unrolled-K5",
        4,
    )
    bench = json.loads((tmp_path / "kept" / "unrolled" / "K5" / "4" / "bench.json").read_text())
    assert bench["command"].startswith("python unrolled_gan.py --dataset stacked-mnist") and bench["resumed"] is False
    assert bench_results.kept("unrolled", "K5", 4, tmp_path / "kept") is not None
